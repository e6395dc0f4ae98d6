"""Tests of jaxfgcm.stars against synthetic repositories with known truth (tests/_stars_fixtures)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _stars_fixtures import TRACT, make_synthetic_repo

from jaxfgcm.config import load_config
from jaxfgcm.repo import Repository, RepositoryError
from jaxfgcm.stars import (
    OBSERVATION_CUTS,
    SOURCE_CUTS,
    StarCatalog,
    StarCatalogError,
    StarsWarning,
    build_stars,
    load_or_build_stars,
)
from jaxfgcm.stars.match import gnomonic, inverse_gnomonic, match_observations

CONFIG = load_config()
RADIUS = CONFIG.stars.match_radius_arcsec
ISO = CONFIG.stars.isolation_radius_arcsec


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("stars_repo")
    truth = make_synthetic_repo(path)
    with pytest.warns(StarsWarning) as record:
        cat = build_stars(path, CONFIG, TRACT, workers=2, progress=False)
    return path, truth, cat, [str(w.message) for w in record]


def _sep_arcsec(ra1, dec1, ra2, dec2):
    x1, y1 = gnomonic(ra1, dec1, 150.0, 2.0)
    x2, y2 = gnomonic(ra2, dec2, 150.0, 2.0)
    return np.hypot(x1 - x2, y1 - y2)


def _obs_truth(truth, cat):
    """Truth rows of the catalog's observations (joined on source_id)."""
    order = np.argsort(truth.source_id)
    pos = order[np.searchsorted(truth.source_id, cat.observations["source_id"], sorter=order)]
    assert np.array_equal(truth.source_id[pos], cat.observations["source_id"])
    return pos


# --------------------------------------------------------------------------------------------
# Cut accounting against the injected defects
# --------------------------------------------------------------------------------------------


def test_every_source_is_accounted_for(built):
    _path, truth, cat, _ = built
    s = cat.summary["sources"]
    selected_visits = set(cat.visits["visit"].tolist())
    read = np.isin(truth.visit, list(selected_visits))
    assert s["read"] == int(read.sum())
    assert s["read"] == s["selected"] + sum(s["removed"].values())
    o = cat.summary["observations"]
    assert o["selected"] == o["kept"] + sum(o["removed"].values())
    assert o["kept"] == cat.n_observations
    assert set(s["removed"]) == set(SOURCE_CUTS) | {"outside_tract_region"}
    assert set(o["removed"]) == set(OBSERVATION_CUTS)


def test_each_cut_removes_exactly_the_injected_defects(built):
    _path, truth, cat, _ = built
    read = np.isin(truth.visit, cat.visits["visit"])
    kind = truth.kind[read]
    removed = cat.summary["sources"]["removed"]
    expected = {
        "detector_not_science": (kind == "nondetector").sum(),
        "bad_flag": (kind == "flagged").sum(),
        "sky_source": (kind == "sky").sum(),
        "deblended": (kind == "deblended").sum(),
        "not_point_source": np.isin(kind, ["galaxy", "ext_nan"]).sum(),
        "bad_flux": np.isin(kind, ["nan_flux", "neg_flux"]).sum(),
        "snr_out_of_range": np.isin(kind, ["faint", "bright"]).sum(),
        "nonfinite_position": 0,
    }
    for name, n in expected.items():
        assert n > 0 or name == "nonfinite_position"
        assert removed[name] == n, name
    # Good sources beyond the tract (plus its 3" margin) are the only other removals.
    reach = 0.06 * 3600 + RADIUS + ISO
    good = kind == "good"
    sep = _sep_arcsec(truth.ra[read], truth.dec[read], 150.0, 2.0)
    assert removed["outside_tract_region"] == int((good & (sep > reach)).sum())
    # No defect survives into the observations.
    pos = _obs_truth(truth, cat)
    assert set(np.unique(truth.kind[pos])) == {"good"}


def test_visits_selected_skipped_and_warned(built):
    _path, truth, cat, warnings_seen = built
    v = cat.summary["visits"]
    assert v["in_visit_summary"] == len(truth.visits)
    assert v["outside_tract"] == 1 and truth.far_visit not in cat.visits["visit"]
    assert v["filter_not_configured"] == 1 and truth.nb_visit not in cat.visits["visit"]
    assert v["empty"] == 1 and truth.empty_visit not in cat.visits["visit"]
    assert v["read"] == cat.n_visits == len(truth.visits) - 3
    assert any("empty source table" in w and str(truth.empty_visit) in w for w in warnings_seen)
    assert any("filter_not_configured" in w for w in warnings_seen)


# --------------------------------------------------------------------------------------------
# Star identity against truth
# --------------------------------------------------------------------------------------------


def _star_truth(truth, cat):
    pos = _obs_truth(truth, cat)
    true_star = truth.star[pos]
    si = cat.observations["star_index"]
    # Each catalog star's truth: the majority true id of its observations.
    key = si.astype(np.int64) * (truth.star_ra.size + 1) + true_star
    uniq, counts = np.unique(key, return_counts=True)
    star_of_key = uniq // (truth.star_ra.size + 1)
    best = np.zeros(cat.n_stars, dtype=np.int64)
    best_n = np.zeros(cat.n_stars, dtype=np.int64)
    for k, n, s in zip(uniq, counts, star_of_key):
        if n > best_n[s]:
            best_n[s], best[s] = n, k % (truth.star_ra.size + 1)
    return pos, true_star, best


def test_star_identity_recovered(built):
    _path, truth, cat, _ = built
    _pos, true_star, best = _star_truth(truth, cat)
    si = cat.observations["star_index"]
    wrong = true_star != best[si]
    assert wrong.mean() < 1e-3, f"{wrong.sum()} wrong matches"
    assert np.unique(best).size == cat.n_stars  # no true star split into two catalog stars

    # Eligible truth stars: inside the tract (0.3" from the edge), no other star within 2.3",
    # not moving, and >= 2 good observations in a primary band among the read visits.
    read = np.isin(truth.visit, cat.visits["visit"])
    good = read & (truth.kind == "good") & (truth.star >= 0)
    n_true = truth.star_ra.size
    band_of_visit = {v: CONFIG.instrument.bands.index(t["band"])
                     for v, t in truth.visits.items() if t["band"] in CONFIG.instrument.bands}
    band = np.array([band_of_visit.get(v, -1) for v in truth.visit])
    counts = np.zeros((n_true, 5), dtype=int)
    np.add.at(counts, (truth.star[good], band[good]), 1)
    primary = [CONFIG.instrument.bands.index(b) for b in CONFIG.stars.primary_bands]
    defined = (counts[:, primary] >= 2).any(axis=1)
    sep_centre = _sep_arcsec(truth.star_ra, truth.star_dec, 150.0, 2.0)
    inside = sep_centre < 0.06 * 3600 - 0.3
    outside = sep_centre > 0.06 * 3600 + 0.3
    sx, sy = gnomonic(truth.star_ra, truth.star_dec, 150.0, 2.0)
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([sx, sy]))
    nn, _ = tree.query(np.column_stack([sx, sy]), k=2)
    # Neighbours that define stars themselves (isolation is among stars, not all sources).
    tree_def = cKDTree(np.column_stack([sx[defined], sy[defined]]))
    nn_def, _ = tree_def.query(np.column_stack([sx, sy]), k=2)
    eligible = defined & inside & (nn[:, 1] > ISO + 0.3) & ~truth.star_moving
    recovered = np.zeros(n_true, dtype=bool)
    recovered[best] = True
    assert eligible.sum() > 150
    assert recovered[eligible].mean() >= 0.99
    # Stars that must be absent: outside the tract, with a defining neighbour within 1.7",
    # or moving 0.5"/visit (its positions scatter beyond the radius; never merged wrongly).
    crowded = defined & (nn_def[:, 1] < ISO - 0.3)
    assert crowded.sum() >= 4  # the designed 0.6" and 1.5" pairs at least
    assert not recovered[outside].any()
    assert not recovered[crowded].any()
    assert truth.star_moving.any() and not recovered[truth.star_moving].any()
    moving_ids = np.flatnonzero(truth.star_moving)
    assert not np.isin(true_star, moving_ids).any()

    # Completeness of the observations of recovered eligible stars, in bands with >= 2.
    want = good & np.isin(truth.star, np.flatnonzero(eligible & recovered))
    want &= counts[truth.star.clip(0), band.clip(0)] >= CONFIG.stars.min_obs_per_band
    got = np.isin(truth.source_id[want], cat.observations["source_id"])
    assert got.mean() >= 0.999

    # Positions: the mean of ~3 jittered (0.05") primary-band observations.
    d = _sep_arcsec(cat.stars["ra"], cat.stars["dec"], truth.star_ra[best], truth.star_dec[best])
    assert np.median(d) < 0.05 and d.max() < 0.4


def test_tables_follow_the_contract(built):
    _path, _truth, cat, _ = built
    obs, stars = cat.observations, cat.stars
    for c in ("star_index", "visit", "detector", "band_index", "filter_index", "mag", "mag_err",
              "x", "y", "delta_aper", "mjd", "source_id"):
        assert obs[c].shape == (cat.n_observations,)
    assert np.all(np.diff(obs["star_index"]) >= 0)  # sorted by star
    assert np.array_equal(stars["star_id"], np.arange(1, cat.n_stars + 1))
    assert stars["n_obs"].shape == (cat.n_stars, len(cat.bands))
    assert stars["n_obs"].sum() == cat.n_observations
    nz = stars["n_obs"][stars["n_obs"] > 0]
    assert nz.min() >= CONFIG.stars.min_obs_per_band
    offsets = cat.obs_offsets()
    assert offsets[-1] == cat.n_observations and np.all(np.diff(offsets) > 0)
    assert set(obs["detector"].tolist()) <= {0, 1, 2, 3}
    # Band / filter indices agree with the visit table.
    vrow = np.searchsorted(cat.visits["visit"], obs["visit"])
    assert np.array_equal(np.array(cat.bands)[obs["band_index"]], cat.visits["band"][vrow])
    assert np.array_equal(np.array(cat.physical_filters)[obs["filter_index"]],
                          cat.visits["physical_filter"][vrow])
    assert np.array_equal(obs["mjd"], cat.visits["mjd"][vrow])
    assert np.array_equal(np.bincount(vrow, minlength=cat.n_visits), cat.visits["n_obs"])


# --------------------------------------------------------------------------------------------
# Photometry and the visit table against truth
# --------------------------------------------------------------------------------------------


def test_magnitudes_match_truth(built):
    path, truth, cat, _ = built
    pos = _obs_truth(truth, cat)
    obs = cat.observations
    pull = (obs["mag"] - truth.true_mag[pos]) / obs["mag_err"]
    # Local background subtracted: unbiased, unit-variance pulls (without the correction the
    # 0.5 counts/px residual background would give pulls of order 1 in faint stars).
    assert abs(np.mean(pull)) < 0.1
    assert 0.9 < np.std(pull) < 1.1
    # Exact error definition: 1.0857 sigma_F / F on the raw aperture flux.
    table = Repository(path).read_source_table(
        int(obs["visit"][0]), ["sourceId", "apFlux_12_0_instFlux", "apFlux_12_0_instFluxErr"])
    i = int(np.flatnonzero(table["sourceId"] == obs["source_id"][0])[0])
    expect = 2.5 / np.log(10) * table["apFlux_12_0_instFluxErr"][i] / table[
        "apFlux_12_0_instFlux"][i]
    assert obs["mag_err"][0] == pytest.approx(expect, rel=1e-6)


def test_visit_table_matches_truth(built):
    _path, truth, cat, _ = built
    v = cat.visits
    for k, visit in enumerate(v["visit"]):
        t = truth.visits[int(visit)]
        assert v["band"][k] == t["band"] and v["physical_filter"][k] == t["physical_filter"]
        assert v["exptime"][k] == t["exptime"] and v["mjd"][k] == t["mjd"]
        assert v["telra"][k] == pytest.approx(t["telra"], abs=1e-12)
        assert v["telrot"][k] == pytest.approx(t["rot"], abs=1e-12)
        if np.isnan(t["pressure_mbar"]):
            assert np.isnan(v["pressure"][k])  # never replaced by a standard value
        else:
            assert v["pressure"][k] == pytest.approx(t["pressure_mbar"], rel=1e-12)
        assert v["psf_fwhm"][k] == pytest.approx(t["psf_fwhm"], rel=1e-12)
        # Median inner-minus-outer magnitude: -2.5 log10(1 / (1 + ratio)), to ~1 mmag.
        expect = 2.5 * np.log10(1 + t["ap_ratio"])
        assert v["delta_aper"][k] == pytest.approx(expect, abs=2e-3)
    assert np.isnan(v["pressure"]).sum() == 1
    # Every science detector of every visit has its own seeing, with or without stars on it.
    vd = cat.visit_detectors
    want = sorted((int(visit), d) for visit in v["visit"]
                  for d in truth.visits[int(visit)]["detector_fwhm"])
    assert list(zip(vd["visit"].tolist(), vd["detector"].tolist())) == want
    for visit, det, fwhm in zip(vd["visit"], vd["detector"], vd["psf_fwhm"]):
        assert fwhm == pytest.approx(truth.visits[int(visit)]["detector_fwhm"][int(det)],
                                     rel=1e-6)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def test_cache_round_trip_and_checks(built, tmp_path):
    path, _truth, cat, _ = built
    out = tmp_path / "stars"
    cat.save(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "catalog.json", "observations.parquet", "stars.parquet", "visit_detectors.parquet",
        "visits.parquet"]
    back = StarCatalog.load(out, config=CONFIG, tract=TRACT)
    for name in ("stars", "observations", "visits", "visit_detectors"):
        a, b = getattr(cat, name), getattr(back, name)
        assert set(a) == set(b)
        for c in a:
            same = a[c].dtype.kind == "U" == b[c].dtype.kind or a[c].dtype == b[c].dtype
            assert same, (name, c)
            assert np.array_equal(a[c], b[c], equal_nan=a[c].dtype.kind == "f"), (name, c)
    assert back.summary == json.loads(json.dumps(cat.summary))
    assert back.bands == cat.bands and back.physical_filters == cat.physical_filters

    with pytest.raises(StarCatalogError, match="stars.match_radius_arcsec"):
        StarCatalog.load(out, config=CONFIG.with_overrides(["stars.match_radius_arcsec=2.0"]))
    with pytest.raises(StarCatalogError, match="tract"):
        StarCatalog.load(out, tract=TRACT + 1)
    # A manifest that disagrees with a table (e.g. a half-replaced cache) is refused.
    pq.write_table(pa.table({"star_id": np.arange(3)}), out / "stars.parquet")
    with pytest.raises(StarCatalogError, match="stars.parquet"):
        StarCatalog.load(out)
    (out / "catalog.json").unlink()
    with pytest.raises(StarCatalogError, match="catalog.json"):
        StarCatalog.load(out)

    # load_or_build_stars: builds and saves, then reuses.
    cache = tmp_path / "cache"
    with pytest.warns(StarsWarning):
        first = load_or_build_stars(path, CONFIG, TRACT, cache, progress=False)
    second = load_or_build_stars(path, CONFIG, TRACT, cache, progress=False)
    assert np.array_equal(first.observations["mag"], second.observations["mag"])


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _small_repo(tmp_path):
    return tmp_path, make_synthetic_repo(tmp_path, n_stars=80, n_galaxies=10, visits_per_band=2,
                                         defects=False)


def test_missing_column_names_file_and_column(tmp_path):
    path, _truth = _small_repo(tmp_path)
    repo = Repository(path)
    visit = repo.source_visits()[2]
    f = repo.source_table_path(visit)
    pq.write_table(pq.read_table(f).drop(["extendedness"]), f)
    with pytest.raises(RepositoryError) as exc:
        build_stars(repo, CONFIG, TRACT, progress=False)
    assert str(f) in str(exc.value) and "extendedness" in str(exc.value)


def test_corrupt_file_names_file(tmp_path):
    path, _truth = _small_repo(tmp_path)
    repo = Repository(path)
    f = repo.source_table_path(repo.source_visits()[1])
    f.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(RepositoryError, match=str(f)):
        build_stars(repo, CONFIG, TRACT, progress=False)


def test_cuts_can_be_switched_off(tmp_path):
    path, truth = _small_repo(tmp_path)
    cfg = CONFIG.with_overrides({"stars.max_extendedness": float("inf"),
                                 "stars.isolation_radius_arcsec": 0.0})
    cat = build_stars(path, cfg, TRACT, progress=False)
    assert cat.summary["sources"]["removed"]["not_point_source"] == 0
    assert cat.summary["stars"]["removed"]["not_isolated"] == 0
    pos = _obs_truth(truth, cat)
    assert (truth.kind[pos] == "galaxy").any()  # galaxies now kept (as their own "stars")
    # Required bands: with HSC-Y visits not configured, no star has y, and none is kept.
    filters = {f: b for f, b in CONFIG.instrument.physical_filters.items() if f != "HSC-Y"}
    cfg = CONFIG.with_overrides({"stars.required_bands": ["y"],
                                 "instrument.physical_filters": filters})
    with pytest.warns(StarsWarning, match="filter_not_configured"):
        cat = build_stars(path, cfg, TRACT, progress=False)
    assert cat.n_stars == 0 and cat.n_observations == 0
    assert cat.summary["stars"]["removed"]["missing_required_band"] > 0


# --------------------------------------------------------------------------------------------
# Matching, array level
# --------------------------------------------------------------------------------------------


def test_gnomonic_round_trip_and_astropy():
    from astropy.wcs import WCS

    rng = np.random.default_rng(3)
    ra = rng.uniform(-2, 2, 1000) + 359.5
    dec = rng.uniform(-2, 2, 1000) + 60.0
    xi, eta = gnomonic(ra % 360, dec, 359.5, 60.0)
    ra2, dec2 = inverse_gnomonic(xi, eta, 359.5, 60.0)
    assert np.allclose(((ra2 - ra % 360) + 180) % 360 - 180, 0, atol=1e-10)
    assert np.allclose(dec2, dec, atol=1e-10)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [359.5, 60.0]
    w.wcs.cdelt = [-1 / 3600, 1 / 3600]  # 1 "pixel" = 1 arcsec, x towards the west
    w.wcs.crpix = [1, 1]  # FITS 1-based: pixel 0 (origin 0) is the tangent point
    px, py = w.wcs_world2pix(ra % 360, dec, 0)
    assert np.allclose(-px, xi, atol=1e-6) and np.allclose(py, eta, atol=1e-6)


def _simulate_positions(n_star, n_visit, rng, jitter=0.05, spacing=None):
    if spacing is None:
        sx, sy = rng.uniform(-1800, 1800, (2, n_star))
    else:
        sx, sy = spacing
    star = np.tile(np.arange(sx.size), n_visit)
    visit = np.repeat(np.arange(n_visit), sx.size)
    x = sx[star] + rng.normal(0, jitter, star.size)
    y = sy[star] + rng.normal(0, jitter, star.size)
    return x, y, star, visit


def test_match_nearest_star_and_duplicates():
    rng = np.random.default_rng(5)
    # Two stars 3" apart, 4 visits each; an extra source 0.8" from star 0 in visit 2.
    x, y, star, visit = _simulate_positions(2, 4, rng, spacing=(np.array([0.0, 3.0]),
                                                                np.array([0.0, 0.0])))
    x = np.append(x, 0.8)
    y = np.append(y, 0.0)
    visit = np.append(visit, 2)
    band = np.zeros(x.size, dtype=np.int32)
    m = match_observations(x, y, band, visit, [0], RADIUS, ISO, 2)
    assert m.star_xi.size == 2 and m.star_isolated.all()
    # The real observations go to their own star; the extra one loses to the visit-2 one.
    s0 = m.obs_star[:-1]
    assert np.array_equal(s0[star == 0], np.full(4, s0[0])) and s0[0] != s0[1]
    assert m.obs_duplicate[-1] and m.obs_duplicate.sum() == 1
    # An observation between two stars (1.4" from one, 1.6" from the other): the nearer wins,
    # but with isolation 2" both stars are flagged non-isolated.
    x2 = np.append(x[:-1], 1.4)
    y2 = np.append(y[:-1], 0.0)
    v2 = np.append(visit[:-1], 9)
    m2 = match_observations(x2, y2, band, v2, [0], 1.6, 0.0, 2)
    near = np.argmin(np.hypot(m2.star_xi - 1.4, m2.star_eta))
    assert m2.obs_star[-1] == near


def test_match_close_pairs_and_movers_are_not_merged():
    rng = np.random.default_rng(9)
    # A 0.5" pair (both seen in every visit) must give two candidates (never one merged star),
    # and isolation removes both; a star moving 0.3"/visit over 10 visits spreads 3".
    sx = np.array([0.0, 0.5, 100.0])
    sy = np.array([0.0, 0.0, 0.0])
    x, y, star, visit = _simulate_positions(3, 10, rng, spacing=(sx, sy), jitter=0.03)
    mover = star == 2
    x[mover] += 0.3 * visit[mover]
    band = np.zeros(x.size, dtype=np.int32)
    m = match_observations(x, y, band, visit, [0], RADIUS, ISO, 2)
    pair = star < 2
    assert m.counts["groups_split"] >= 1
    # The pair: each observation goes to a candidate holding only its own true star.
    for s in (0, 1):
        assert np.unique(m.obs_star[star == s]).size == 1
    assert m.obs_star[star == 0][0] != m.obs_star[star == 1][0]
    assert not m.star_isolated[m.obs_star[pair]].any()
    # The mover: no candidate star takes observations of another star, and none is isolated.
    ms = np.unique(m.obs_star[mover & (m.obs_star >= 0)])
    assert not np.isin(ms, m.obs_star[pair]).any()
    assert not m.star_isolated[ms].any()


def test_match_identity_at_scale():
    rng = np.random.default_rng(11)
    x, y, star, visit = _simulate_positions(20000, 10, rng)
    keep = rng.random(star.size) < 0.9
    x, y, star, visit = x[keep], y[keep], star[keep], visit[keep]
    band = (visit % 5).astype(np.int32)
    m = match_observations(x, y, band, visit, [2, 3, 1, 0], RADIUS, ISO, 2)
    ok = (m.obs_star >= 0) & m.star_isolated[np.maximum(m.obs_star, 0)] & ~m.obs_duplicate
    # Truth of each candidate: its first observation's star.
    first = np.full(m.star_xi.size, -1)
    first[m.obs_star[ok][::-1]] = star[ok][::-1]
    assert (star[ok] != first[m.obs_star[ok]]).mean() < 1e-3
    # Isolated true stars (no neighbour within 2.5") are all recovered.
    from scipy.spatial import cKDTree

    sx, sy = np.zeros(20000), np.zeros(20000)
    np.add.at(sx, star, x)
    np.add.at(sy, star, y)
    n = np.bincount(star, minlength=20000)
    sx, sy = sx / n, sy / n
    nn, _ = cKDTree(np.column_stack([sx, sy])).query(np.column_stack([sx, sy]), k=2)
    # ... among those with >= 2 observations in some primary band (2 visits per band here).
    per_band = np.zeros((20000, 5), int)
    np.add.at(per_band, (star, band), 1)
    isolated = (nn[:, 1] > ISO + 0.5) & (per_band[:, [2, 3, 1, 0]] >= 2).any(axis=1)
    recovered = np.zeros(20000, bool)
    recovered[first[first >= 0]] = True
    assert recovered[isolated].mean() >= 0.999


# --------------------------------------------------------------------------------------------
# The simulator's tiny preset (independent truth: truth/objects, truth/observations)
# --------------------------------------------------------------------------------------------


def test_simulated_tiny_tract_star_identity(tmp_path):
    simulate = pytest.importorskip("jaxfgcm.simulate").simulate
    repo_dir = tmp_path / "tiny"
    simulate(repo_dir, tract_id=9615, preset="tiny", seed=1, build_lut=False)
    repo = Repository(repo_dir)
    cat = build_stars(repo, CONFIG, 9615, progress=False)
    obj = repo.read_truth("objects")
    tobs = repo.read_truth("observations")
    tract = repo.tract(9615)

    # Every kept observation: a star or an unresolved (truth extendedness 0, 0.15") galaxy,
    # which no point-source cut can reject; no blend parent/child, no sky source.
    order = np.argsort(tobs["sourceId"])
    row = order[np.searchsorted(tobs["sourceId"], cat.observations["source_id"], sorter=order)]
    assert np.array_equal(tobs["sourceId"][row], cat.observations["source_id"])
    oid = tobs["object_id"][row]
    obj_row = np.searchsorted(obj["object_id"], oid)
    assert np.array_equal(obj["object_id"][obj_row], oid)
    assert (obj["is_star"] | (obj["extendedness"] < 0.5))[obj_row].all()
    assert obj["is_star"][obj_row].mean() > 0.99
    assert not np.any(tobs["defects"][row] & (32 | 64 | 256))

    # Identity: one true object per catalog star, one catalog star per object.
    si = cat.observations["star_index"]
    first = np.full(cat.n_stars, -1, dtype=np.int64)
    first[si[::-1]] = oid[::-1]
    assert (oid != first[si]).mean() < 1e-3
    assert np.unique(first).size == cat.n_stars
    truth_row = np.searchsorted(obj["object_id"], first)
    d = _sep_arcsec(cat.stars["ra"], cat.stars["dec"], obj["ra"][truth_row],
                    obj["dec"][truth_row])
    assert np.median(d) < 0.05 and d.max() < 0.5

    # Recovery: isolated true stars well inside the tract with >= 2 clean measurements
    # (no defect, S/N safely inside the window, measured point-like) in a primary band.
    cols = ["sourceId", "apFlux_12_0_instFlux", "apFlux_12_0_instFluxErr", "extendedness"]
    src = [repo.read_source_table(v, cols) for v in repo.source_visits()]
    src = {c: np.concatenate([s[c] for s in src]) for c in cols}
    srow = np.searchsorted(src["sourceId"], tobs["sourceId"], sorter=np.argsort(src["sourceId"]))
    srow = np.argsort(src["sourceId"])[srow]
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = src["apFlux_12_0_instFlux"][srow] / src["apFlux_12_0_instFluxErr"][srow]
    clean = ((tobs["defects"] == 0) & (snr > 12) & (snr < 900)
             & (src["extendedness"][srow] < 0.4) & (tobs["object_id"] >= 0))
    vs = repo.visit_summary(["band"])
    band_of_visit = dict(zip(vs["visit"].tolist(), vs["band"].tolist()))
    primary = np.array([band_of_visit[v] in CONFIG.stars.primary_bands for v in tobs["visit"]])
    keyed = tobs["object_id"][clean & primary] * 10 + np.array(
        [CONFIG.instrument.bands.index(band_of_visit[v]) for v in tobs["visit"][clean & primary]])
    k, n = np.unique(keyed, return_counts=True)
    defined_ids = np.unique(k[n >= 2] // 10)
    sx, sy = gnomonic(obj["ra"], obj["dec"], tract.ra, tract.dec)
    from scipy.spatial import cKDTree

    nn, _ = cKDTree(np.column_stack([sx, sy])).query(np.column_stack([sx, sy]), k=2)
    inside = tract.separation_deg(obj["ra"], obj["dec"]) < tract.radius_deg - 1 / 3600
    eligible = (obj["is_star"] & inside & (nn[:, 1] > ISO + 0.5) & (obj["blend_partner_id"] < 0)
                & np.isin(obj["object_id"], defined_ids))
    assert eligible.sum() > 100
    recovered = np.isin(obj["object_id"][eligible], first)
    assert recovered.mean() >= 0.99


def test_tract_without_visits_gives_an_empty_catalog(tmp_path):
    path, _ = _small_repo(tmp_path / "repo")
    cat = build_stars(path, CONFIG, 2, progress=False)  # tract 2 is far from every visit
    assert cat.n_stars == cat.n_observations == cat.n_visits == 0
    assert cat.summary["visits"]["outside_tract"] == cat.summary["visits"]["in_visit_summary"]
    cat.save(tmp_path / "cache")
    back = StarCatalog.load(tmp_path / "cache", config=CONFIG, tract=2)
    assert back.stars["n_obs"].shape == (0, len(CONFIG.instrument.bands))


def test_bad_stars_config_names_the_key(tmp_path):
    from jaxfgcm.config import ConfigError

    path, _ = _small_repo(tmp_path)
    with pytest.raises(ConfigError, match="stars.required_bands"):
        build_stars(path, CONFIG.with_overrides({"stars.required_bands": ["u"]}), TRACT)
