"""The product writers and apply_calibration, on small hand-made inputs with known answers."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from numpy.polynomial import chebyshev

from jaxfgcm.config import Config
from jaxfgcm.output import (
    PRODUCT_FILES,
    ProductInputs,
    apply_calibration,
    load_fit_state,
    read_photocalib,
    write_product_files,
)
from jaxfgcm.output.photocalib import AB_NJY_ZEROPOINT, PhotoCalibError, photocalib_table

BANDS = ("g", "r")
NX, NY = 2048, 4176


def make_inputs(seed=1) -> ProductInputs:
    """3 visits (2 g, 1 r) x 2 detectors, 4 stars, an order-1 star flat."""
    rng = np.random.default_rng(seed)
    visit = np.array([100, 101, 200])
    pair_visit = np.repeat(visit, 2)
    pair_det = np.tile([0, 1], 3)
    n_pair = pair_visit.size
    coeffs = np.zeros((n_pair, 2, 2))
    coeffs[:, 0, 1] = 0.004  # x gradient (mag)
    coeffs[:, 1, 0] = -0.002  # y gradient
    coeffs[:, 0, 0] = rng.normal(0, 0.003, n_pair)
    return ProductInputs(
        bands=BANDS,
        star_id=np.arange(1, 5),
        star_ra=np.array([10.0, 10.1, 10.2, 10.3]),
        star_dec=np.array([-1.0, -1.1, -1.2, -1.3]),
        star_mag=np.array([[20.0, 19.5], [21.0, 99.0], [18.0, 17.6], [19.0, np.nan]]),
        star_mag_err=np.full((4, 2), 0.01),
        star_n_good=np.array([[3, 2], [2, 0], [4, 3], [2, 0]]),
        star_reserved=np.array([False, True, False, False]),
        pair_visit=pair_visit,
        pair_detector=pair_det,
        pair_zeropoint=27.0 + rng.normal(0, 0.02, n_pair),
        pair_zeropoint_err=np.full(n_pair, 0.002),
        pair_flag=np.array([1, 1, 4, 32, 1, 1]),
        pair_starflat=coeffs,
        pair_bbox=np.tile([0.0, 0.0, NX, NY], (n_pair, 1)),
        pair_i0=np.full(n_pair, 0.2),
        pair_i10=np.array([-20.0, -21.0, -25.0, -24.0, 5.0, 6.0]),
        pair_gray=np.zeros(n_pair),
        pair_n_stars=np.full(n_pair, 50),
        visit=visit,
        visit_band=np.array(["g", "g", "r"]),
        visit_filter=np.array(["HSC-G", "HSC-G", "HSC-R2"]),
        visit_mjd=np.array([57000.3, 57000.35, 57000.4]),
        visit_exptime=np.array([30.0, 30.0, 60.0]),
        visit_atmosphere={"pressure": np.array([615.0, 616.0, 617.0]),
                          "pwv": np.array([1.0, 2.0, 3.0]),
                          "o3": np.array([250.0, 260.0, 270.0]),
                          "tau": np.array([0.02, 0.03, 0.05]),
                          "alpha": np.array([1.0, 1.2, 1.4]),
                          "airmass": np.array([1.0, 1.3, 1.8])},
        visit_gray=np.array([0.0, -0.08, 0.001]),
        visit_flag=np.array([0, 2, 0]),
        band_i10_std=np.array([-22.0, 4.0]),
        repeatability=np.array([[0.012, 0.010], [0.006, 0.005]]),
        n_cycles=2,
        converged=True,
        fit_state={"o3": np.array([250.0]), "star_flat": coeffs.reshape(n_pair, 4)},
    )


def table_of(pi):
    return photocalib_table(
        visit=pi.pair_visit, detector=pi.pair_detector, physical_filter=pi.pair_filter(),
        band=pi.pair_band(), mjd=pi.pair_mjd(), exptime=pi.pair_exptime(),
        zeropoint=pi.pair_zeropoint, zeropoint_err=pi.pair_zeropoint_err, flag=pi.pair_flag,
        starflat_coeffs=pi.pair_starflat, bbox=pi.pair_bbox, i0=pi.pair_i0, i10=pi.pair_i10,
        i10_std=pi.pair_i10_std(), gray=pi.pair_gray)


def test_photocalib_formula_and_apply_recover_true_magnitudes():
    pi = make_inputs()
    table = table_of(pi)
    rng = np.random.default_rng(5)
    n = 400
    row = rng.integers(0, len(pi.pair_visit), n)
    x, y = rng.uniform(0, NX, n), rng.uniform(0, NY, n)
    true_mag = rng.uniform(17, 23, n)
    fprime = rng.normal(0, 2e-4, n)  # SED slopes of ordinary stars, 1/Angstrom
    # The star flat evaluated independently with numpy's 2-d Chebyshev (coefficients [y, x]).
    xt, yt = 2 * x / NX - 1, 2 * y / NY - 1
    flat = np.array([chebyshev.chebval2d(yt[k], xt[k], pi.pair_starflat[row[k]])
                     for k in range(n)])
    i10, i10_std = pi.pair_i10[row], pi.pair_i10_std()[row]
    chrom = 2.5 * np.log10((1 + fprime * i10) / (1 + fprime * i10_std))
    net = 10 ** (-0.4 * (true_mag - pi.pair_zeropoint[row] - flat - chrom))
    background = rng.uniform(0, 3, n)  # counts/pixel, subtracted over the 12 px aperture
    sources = {
        "visit": pi.pair_visit[row], "detector": pi.pair_detector[row], "x": x, "y": y,
        "apFlux_12_0_instFlux": net + np.pi * 144 * background,
        "apFlux_12_0_instFluxErr": 0.01 * net,
        "localBackground_instFlux": background,
    }
    out = apply_calibration(sources, table, sed_slope=fprime)
    usable = pi.pair_flag[row] < 16
    assert usable.sum() > 250 and (~usable).sum() > 30
    np.testing.assert_allclose(out["mag"][usable], true_mag[usable], atol=1e-9)
    assert np.all(np.isnan(out["mag"][~usable]))
    np.testing.assert_allclose(out["flux_nJy"][usable],
                               10 ** (-0.4 * (true_mag[usable] - AB_NJY_ZEROPOINT)), rtol=1e-9)
    # magErr: the instrumental error and the zeropoint error in quadrature
    np.testing.assert_allclose(out["magErr"][usable], np.hypot(2.5 / np.log(10) * 0.01, 0.002),
                               rtol=1e-6)
    # Without the SED slope the result is off by exactly the chromatic term.
    plain = apply_calibration(sources, table)
    np.testing.assert_allclose(plain["mag"][usable], (true_mag - chrom)[usable], atol=1e-9)
    # calibration_mean is nJy per count at the bbox centre.
    centre = np.array([chebyshev.chebval2d(0.0, 0.0, c) for c in pi.pair_starflat])
    np.testing.assert_allclose(table.column("calibration_mean").to_numpy(),
                               10 ** (-0.4 * (pi.pair_zeropoint + centre - 31.4)), rtol=1e-12)
    np.testing.assert_allclose(
        table.column("calibration_err").to_numpy(),
        np.log(10) / 2.5 * table.column("calibration_mean").to_numpy() * 0.002, rtol=1e-12)
    # AB sanity: 3631 Jy is magnitude 0.
    assert abs(-2.5 * np.log10(3631e9) + AB_NJY_ZEROPOINT) < 1e-3


def test_apply_calibration_unknown_visit_and_missing_column():
    pi = make_inputs()
    table = table_of(pi)
    src = {"visit": np.array([999, 100]), "detector": np.array([0, 0]),
           "x": np.array([5.0, 5.0]), "y": np.array([5.0, 5.0]),
           "apFlux_12_0_instFlux": np.array([100.0, 100.0])}
    out = apply_calibration(src, table)
    assert np.isnan(out["mag"][0]) and out["flag"][0] == 0
    assert np.isfinite(out["mag"][1]) and out["flag"][1] == 1
    del src["x"]
    with pytest.raises(PhotoCalibError, match="'x'"):
        apply_calibration(src, table)


def test_write_products_all_files_and_contents(tmp_path):
    pi = make_inputs()
    _, notes = write_product_files(pi, Config(), tmp_path, plots=True)
    for name in PRODUCT_FILES + ("summary.json",):
        assert (tmp_path / name).is_file(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    stars = pq.read_table(tmp_path / "fgcm_stars.parquet").to_pydict()
    assert stars["star_id"] == [1, 2, 3, 4]
    assert stars["mag_g"] == [20.0, 21.0, 18.0, 19.0]
    # 99 (fgcm's no-measurement) and NaN become NaN with nGood 0
    assert np.isnan(stars["mag_r"][1]) and np.isnan(stars["mag_r"][3])
    assert stars["nGood_r"] == [2, 0, 3, 0]
    pc = read_photocalib(tmp_path / "fgcm_photoCalib_tract.parquet")
    assert pc.num_rows == 6 and b"jaxfgcm.formula" in pc.schema.metadata
    assert pc.column("band").to_pylist() == ["g", "g", "g", "g", "r", "r"]
    np.testing.assert_allclose(pc.column("i10_std").to_numpy(), [-22] * 4 + [4] * 2)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["status"] == "complete"
    assert saved["bands"]["g"]["n_visits"] == 2 and saved["bands"]["g"]["n_photometric_visits"] == 1
    assert saved["bands"]["r"]["repeatability"] == pytest.approx(0.005)
    assert saved["counts"]["zeropoint_flags"] == {"1": 4, "4": 1, "32": 1}
    assert "cpu" in saved["device"] or saved["device"]
    state = load_fit_state(tmp_path / "fit_state.npz")
    np.testing.assert_array_equal(state["params/o3"], [250.0])
    np.testing.assert_array_equal(state["visit"], pi.visit)
    # QA plots: those that need no per-observation data or camera are made; the rest noted.
    qa = sorted(p.name for p in (tmp_path / "qa").iterdir())
    assert {"exposure_gray.png", "zeropoints_vs_time.png", "atmosphere_vs_time.png"} <= set(qa)
    assert any("residual_map.png" in n for n in notes)


def test_transmission_matches_the_atmosphere_model(tmp_path):
    from jaxfgcm.atmosphere import BuiltinAtmosphere
    from jaxfgcm.output.transmission import read_transmission

    pi = make_inputs()
    write_product_files(pi, Config(), tmp_path, plots=False)
    wl, curves = read_transmission(tmp_path / "transmission_atmosphere_fgcm_tract.parquet")
    assert wl[0] == 3000.0 and wl[-1] == 11000.0 and wl.size == 1601
    atm = BuiltinAtmosphere(wavelength=wl)
    a = pi.visit_atmosphere
    for k, v in enumerate(pi.visit):
        direct = atm.transmission(a["pressure"][k], a["pwv"][k], a["o3"][k], a["tau"][k],
                                  a["alpha"][k], a["airmass"][k])
        np.testing.assert_allclose(curves[int(v)], direct, atol=1e-7)
    # higher airmass, more water and aerosol -> less light at 9500 A
    i = np.searchsorted(wl, 9500.0)
    assert curves[200][i] < curves[100][i]
    t = pq.read_table(tmp_path / "transmission_atmosphere_fgcm_tract.parquet")
    assert t.column("airmass").to_pylist() == [1.0, 1.3, 1.8]


def test_failed_write_leaves_no_complete_looking_products(tmp_path, monkeypatch):
    """An earlier complete run, then a run that fails while writing: no summary.json remains
    that could describe a mix, and no staging directory is left behind."""
    pi = make_inputs()
    write_product_files(pi, Config(), tmp_path, plots=False)
    assert (tmp_path / "summary.json").is_file()

    from jaxfgcm import output

    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst):
        if os.path.dirname(os.fspath(dst)) == os.fspath(tmp_path):
            calls["n"] += 1
            if calls["n"] == 2:  # fail in the middle of moving products into place
                raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(output.os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        write_product_files(make_inputs(seed=2), Config(), tmp_path, plots=False)
    assert calls["n"] == 2
    assert not (tmp_path / "summary.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]
    # A failure before the move (while staging) keeps the earlier complete set intact.
    write_product_files(pi, Config(), tmp_path, plots=False)
    calls["n"] = -100
    monkeypatch.setattr(output, "_write_fit_state", _raise_keyboard_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_product_files(make_inputs(seed=2), Config(), tmp_path, plots=False)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["status"] == "complete"
    np.testing.assert_allclose(
        pq.read_table(tmp_path / "fgcm_photoCalib_tract.parquet").column("zeropoint").to_numpy(),
        pi.pair_zeropoint)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]


def _raise_keyboard_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_photocalib_rejects_bad_shapes_and_foreign_files(tmp_path):
    with pytest.raises(PhotoCalibError, match="starflat_coeffs"):
        photocalib_table(visit=[1], detector=[0], physical_filter=["a"], band=["g"], mjd=[0],
                         exptime=[1], zeropoint=[27], zeropoint_err=[0], flag=[1],
                         starflat_coeffs=np.zeros((1, 2, 3)), bbox=[[0, 0, 1, 1]], i0=[1],
                         i10=[0], i10_std=[0], gray=[0])
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(PhotoCalibError, match="x.parquet"):
        read_photocalib(bad)
