"""jaxfgcm.simulate: schema, determinism, fluxes recomputed by direct integration, truth."""

import filecmp

import numpy as np
import pyarrow.parquet as pq
import pytest

from jaxfgcm.atmosphere import BuiltinAtmosphere
from jaxfgcm.config import Config
from jaxfgcm.repo import SOURCE_COLUMNS, Repository
from jaxfgcm.simulate import instrument as inst
from jaxfgcm.simulate import simulate
from jaxfgcm.simulate.__main__ import main
from jaxfgcm.simulate.observing import hour_angle_deg, secz
from jaxfgcm.simulate.photometry import DEFECT


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim") / "repo"
    summary = simulate(d, preset="tiny", seed=3)
    return Repository(d), summary


def _moffat12(fwhm_px, beta=3.0):
    alpha = fwhm_px / (2 * np.sqrt(2 ** (1 / beta) - 1))
    return 1 - (1 + (12.0 / alpha) ** 2) ** (1 - beta)


def test_schema_and_reader(tiny):
    repo, summary = tiny
    repo.validate()  # every dataset, dtypes, unique sourceIds, visit summary coverage
    vs = repo.visit_summary()
    assert len(np.unique(vs["visit"])) == summary["visits"]
    assert len(vs["visit"]) == summary["visits"] * summary["detectors"]
    assert repo.tract(9615).radius_deg == pytest.approx(0.25)
    assert repo.lut_path.is_file()
    n = 0
    for v in repo.source_visits():
        t = repo.read_source_table(v, list(SOURCE_COLUMNS))
        n += len(t["sourceId"])
    assert n == summary["source_rows"]
    cam = repo.camera()
    assert cam.n_detectors == 12
    # Air pressure in Pa (VisitInfo convention), near the Maunakea standard 616 mbar.
    assert np.all(np.abs(vs["air_pressure"] / 100 - 616) < 10)


def test_determinism(tiny, tmp_path):
    repo, _ = tiny
    again = tmp_path / "again"
    assert main(["--repo", str(again), "--preset", "tiny", "--seed", "3", "--no-lut",
                 "--quiet"]) == 0
    # repo.yaml differs only in recording that this run skipped the LUT.
    for rel in ["visitSummary.parquet", "truth/observations.parquet", "truth/zeropoints.parquet",
                "truth/objects.parquet", "truth/visits.parquet", "truth/instrument.parquet",
                "camera.parquet", "skymap.yaml", "throughput/qe.ecsv"]:
        assert filecmp.cmp(repo.path / rel, again / rel, shallow=False), rel
    for v in repo.source_visits():
        assert filecmp.cmp(repo.source_table_path(v), again / "sourceTable_visit" /
                           f"{v}.parquet", shallow=False)
    other = tmp_path / "other"
    simulate(other, preset="tiny", seed=4, build_lut=False)
    assert not filecmp.cmp(repo.path / "truth/observations.parquet",
                           other / "truth/observations.parquet", shallow=False)


def _observations(repo):
    obs = repo.read_truth("observations")
    src = {}
    for v in repo.source_visits():
        t = repo.read_source_table(v, list(SOURCE_COLUMNS))
        for k, val in t.items():
            src.setdefault(k, []).append(val)
    src = {k: np.concatenate(v) for k, v in src.items()}
    order = np.argsort(src["sourceId"])
    src = {k: v[order] for k, v in src.items()}
    idx = np.searchsorted(src["sourceId"], obs["sourceId"])
    assert np.array_equal(src["sourceId"][idx], obs["sourceId"])
    return obs, {k: v[idx] for k, v in src.items()}


def test_flux_equals_direct_integration(tiny):
    """Noise-free aperture fluxes recomputed from the truth by direct integration of the SED
    through atmosphere x passband (no interpolation in airmass) agree to << 0.1 mmag."""
    repo, _ = tiny
    obs, _ = _observations(repo)
    objects = repo.read_truth("objects")
    visits = repo.read_truth("visits")
    instr = repo.read_truth("instrument")
    seds = repo.read_truth("seds")
    vs = repo.visit_summary()
    cam, tp = repo.camera(), repo.throughput()
    lam = seds["wavelength"]
    atm = BuiltinAtmosphere(wavelength=lam)
    lat = repo.site["latitude_deg"]
    meta = pq.read_schema(repo.path / "truth/instrument.parquet").metadata
    mjd0 = float(meta[b"mirror_mjd0"])
    decline = float(meta[b"mirror_decline_mag_per_day"])
    k_counts = float(meta[b"collecting_area_cm2"]) / (6.62607015e-27
                                                      * float(meta[b"gain_e_per_adu"]))
    rng = np.random.default_rng(0)
    real = np.flatnonzero(obs["object_id"] > 0)
    sample = rng.choice(real, 150, replace=False)
    dm = []
    for j in sample:
        v, d = obs["visit"][j], obs["detector"][j]
        o = np.flatnonzero(objects["object_id"] == obs["object_id"][j])[0]
        iv = np.flatnonzero(visits["visit"] == v)[0]
        row = np.flatnonzero((vs["visit"] == v) & (vs["detector"] == d))[0]
        f = vs["physical_filter"][row]
        # fgcm's per-star airmass from the boresight hour angle (fgcmStars.prepStars).
        ha = vs["boresight_hour_angle"][row] + vs["boresight_ra"][row] - objects["ra"][o]
        sz = secz(ha, objects["dec"][o], lat)
        t_atm = atm.transmission(visits["pressure"][iv], visits["pwv"][iv], visits["o3"][iv],
                                 visits["tau"][iv], visits["alpha"][iv], sz)
        s = tp.passband(f, d, lam)
        fnu = seds[f"fnu_{objects['sed_index'][o]:03d}"]
        integral = np.trapezoid(fnu * t_atm * s / lam, lam)
        amp = 10 ** (-0.4 * (objects["ref_mag"][o] + 48.6))
        det_, x, y = cam.sky_to_pixel(objects["ra"][o], objects["dec"][o],
                                      vs["boresight_ra"][row], vs["boresight_dec"][row],
                                      vs["boresight_rot_angle"][row])
        assert det_ == d
        fx, fy = cam.focal_plane(d, x, y)
        ir = np.flatnonzero((instr["physical_filter"] == f) & (instr["detector"] == d))[0]
        u, w = fx / 250.0, fy / 250.0
        star_flat = (instr["star_flat_c_r2"][ir] * (u * u + w * w) + instr["star_flat_c_x"][ir]
                     * u + instr["star_flat_c_y"][ir] * w + instr["star_flat_c_xy"][ir] * u * w)
        loss = instr["detector_offset"][ir] + star_flat + decline * (vs["mjd"][row] - mjd0)
        gray = (visits["gray"][iv] + visits["gray_grad_x_per_mm"][iv] * fx
                + visits["gray_grad_y_per_mm"][iv] * fy)
        fwhm = np.hypot(vs["psfSigma"][row] * 2.3548,
                        2.3548 * objects["size_arcsec"][o] / vs["pixelScale"][row])
        expect = (vs["exptime"][row] * k_counts * amp * integral * 10 ** (-0.4 * (loss + gray))
                  * _moffat12(fwhm))
        dm.append(2.5 * np.log10(obs["flux12_true"][j] / expect))
        assert obs["secz"][j] == pytest.approx(sz, abs=1e-9)
    dm = np.abs(np.array(dm))
    # Trapezoid vs the simulator's weights are the same rule; what remains is the linear
    # interpolation in airmass across a detector (docs/simulation.md quotes the figure).
    assert dm.max() < 1e-5, dm.max()


def test_noise_and_flags(tiny):
    repo, _ = tiny
    obs, src = _observations(repo)
    clean = obs["defects"] == 0
    assert clean.mean() > 0.8  # sky sources 5 %, blends 5 %, saturated 3 %, edges 2 %
    bg = np.pi * 12**2 * obs["local_background_true"]
    pull = (src["apFlux_12_0_instFlux"] - obs["flux12_true"] - bg) / src[
        "apFlux_12_0_instFluxErr"]
    pull = pull[clean]
    assert abs(np.mean(pull)) < 0.05 and 0.95 < np.std(pull) < 1.05
    # Flagged defects carry their flags; unflagged corruption carries none.
    sat = (obs["defects"] & DEFECT["saturated"]) > 0
    assert sat.any() and np.all(src["pixelFlags_saturatedCenter"][sat])
    edge = (obs["defects"] & DEFECT["edge"]) > 0
    assert edge.any() and np.all(src["pixelFlags_edge"][edge])
    cr = (obs["defects"] & DEFECT["cosmic_ray"]) > 0
    assert np.all(src["pixelFlags_interpolated"][cr])
    corrupt = obs["defects"] == DEFECT["corrupt_unflagged"]
    flag_cols = [c for c in SOURCE_COLUMNS if c.startswith("pixelFlags") or c.endswith("_flag")]
    assert not np.any([src[c][corrupt] for c in flag_cols])
    # Blends: parents have two children that point to them.
    parents = src["deblend_nChild"] == 2
    assert parents.any()
    children = src["parentSourceId"][src["parentSourceId"] > 0]
    assert np.all(np.isin(children, src["sourceId"][parents]))
    assert np.all(np.unique(children, return_counts=True)[1] == 2)
    assert np.all(~src["detect_isPrimary"][parents])
    # Galaxies are extended apart from a few compact ones.
    objects = repo.read_truth("objects")
    assert 0.9 < np.mean(objects["extendedness"][~objects["is_star"]]) < 1.0
    # Delta-aper (m12 - m17) of bright clean point sources follows each visit's seeing.
    visits = repo.read_truth("visits")
    bright = clean & (src["extendedness"] < 0.5) & (
        src["apFlux_12_0_instFlux"] > 200 * src["apFlux_12_0_instFluxErr"])
    lb = src["localBackground_instFlux"][bright]
    dap = -2.5 * np.log10((src["apFlux_12_0_instFlux"][bright] - np.pi * 12**2 * lb)
                          / (src["apFlux_17_0_instFlux"][bright] - np.pi * 17**2 * lb))
    med = [np.median(dap[obs["visit"][bright] == v]) for v in visits["visit"]]
    assert np.corrcoef(med, visits["seeing_fwhm_arcsec"])[0, 1] > 0.9


def test_truth_consistency(tiny):
    repo, _ = tiny
    z = repo.read_truth("zeropoints")
    total = (z["zpt_ab_no_throughput"] + z["atmosphere_instrument"] - z["detector_offset"]
             - z["star_flat_centre"] - z["mirror"] - z["gray"] + z["aperture_correction"])
    np.testing.assert_allclose(z["zeropoint"], total, atol=1e-9)
    assert z["zpt_ab_no_throughput"][0] == pytest.approx(inst.zpt_ab_no_throughput())
    visits = repo.read_truth("visits")
    nonphot = ~visits["photometric"]
    assert 0.1 < nonphot.mean() < 0.3
    assert np.all(visits["gray"][~visits["photometric"]] >= 0.02 * 0.999)
    assert np.all(visits["gray"][visits["photometric"]] == 0)
    assert np.all(z["gray"][z["photometric"]] == 0)
    # The zeropoint's throughput term: I0 of atmosphere x passband at the detector centre.
    vs = repo.visit_summary()
    tp = repo.throughput()
    atm_table = repo.read_truth("visits")
    lam = repo.read_truth("seds")["wavelength"]
    atm = BuiltinAtmosphere(wavelength=lam)
    for r in range(0, len(z["visit"]), 37):
        iv = np.flatnonzero(atm_table["visit"] == z["visit"][r])[0]
        t_atm = atm.transmission(*(atm_table[k][iv] for k in ("pressure", "pwv", "o3", "tau",
                                                               "alpha")), z["secz_centre"][r])
        s = tp.passband(z["physical_filter"][r], z["detector"][r], lam)
        assert z["i0"][r] == pytest.approx(np.trapezoid(t_atm * s / lam, lam), rel=1e-12)
        assert vs["physical_filter"][r] == z["physical_filter"][r]
    std = repo.read_truth("standard_passbands")
    c = Config().standard_atmosphere
    sa = {"pressure": c.pressure, "pwv": c.pwv, "o3": c.o3, "tau": c.tau, "alpha": c.alpha,
          "secz": c.airmass}
    for band, f in (("g", "HSC-G"), ("i", "HSC-I2")):
        expect = tp.mean_passband(f, lam) * atm.transmission(**sa)
        np.testing.assert_allclose(std[f"std_{band}"], expect, rtol=1e-12)
    # Standard magnitudes: AB magnitude through the standard passband, recomputed.
    objects = repo.read_truth("objects")
    seds = repo.read_truth("seds")
    for o in range(0, len(objects["object_id"]), 97):
        fnu = seds[f"fnu_{objects['sed_index'][o]:03d}"] * 10 ** (
            -0.4 * (objects["ref_mag"][o] + 48.6))
        for band in "gi":
            s = std[f"std_{band}"]
            m = -2.5 * np.log10(np.trapezoid(fnu * s / lam, lam) / np.trapezoid(s / lam, lam))
            assert objects[f"mag_std_{band}"][o] == pytest.approx(m - 48.6, abs=1e-9)


def test_stellar_locus(tiny):
    repo, _ = tiny
    o = repo.read_truth("objects")
    s = o["is_star"]
    gr = (o["mag_std_g"] - o["mag_std_r"])[s]
    ri = (o["mag_std_r"] - o["mag_std_i"])[s]
    assert gr.min() < -0.1 and gr.max() > 1.4
    assert ri.min() < -0.1 and ri.max() > 1.2
    # Along the locus r-i grows with g-r.
    assert np.corrcoef(gr, ri)[0, 1] > 0.8


def test_cli_refuses_to_overwrite(tiny, capsys):
    repo, _ = tiny
    assert main(["--repo", str(repo.path), "--preset", "tiny", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_observing_geometry():
    # Transit: HA = 0 when LST = RA; airmass there is sec(dec - lat).
    mjd = np.linspace(61150.0, 61151.0, 2001)
    ha = hour_angle_deg(mjd, 216.3, -155.4761)
    i = np.argmin(np.abs(ha))
    assert abs(ha[i]) < 0.5
    assert secz(0.0, 0.74, 19.8256) == pytest.approx(1 / np.cos(np.radians(19.8256 - 0.74)))
