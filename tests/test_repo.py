"""jaxfgcm.repo: the repository format, its validation and the legacy-name normalisation."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jaxfgcm import repo as R
from jaxfgcm.repo import Repository, RepositoryError, TractInfo, atomic_write

SITE = {"name": "Maunakea", "latitude_deg": 19.8256, "longitude_deg": -155.4761,
        "elevation_m": 4139.0}
FILTERS = {"HSC-G": "g", "HSC-R2": "r"}


def _visit_summary(visits=(10, 12), detectors=(0, 1, 2)):
    rows = [(v, d) for v in visits for d in detectors]
    n = len(rows)
    vs = {c: np.ones(n) for c in R.VISIT_SUMMARY_COLUMNS}
    vs["visit"] = np.array([r[0] for r in rows])
    vs["detector"] = np.array([r[1] for r in rows])
    vs["physical_filter"] = np.array(["HSC-G" if r[0] == 10 else "HSC-R2" for r in rows])
    vs["band"] = np.array([FILTERS[f] for f in vs["physical_filter"]])
    vs["mjd"] = 61150.0 + vs["visit"] / 1000.0
    vs["air_pressure"] = np.full(n, 61600.0)
    return vs


def _sources(visit, n=6):
    rng = np.random.default_rng(visit)
    t = {c: np.zeros(n, dtype=dt) for c, dt in R.SOURCE_COLUMNS.items()}
    t["sourceId"] = visit * 1000 + np.arange(n)
    t["visit"][:] = visit
    t["detector"] = np.arange(n) % 3
    t["ra"] = 216.3 + rng.normal(0, 0.1, n)
    t["dec"] = 0.74 + rng.normal(0, 0.1, n)
    t["x"], t["y"] = rng.uniform(0, 2000, n), rng.uniform(0, 4000, n)
    t["apFlux_12_0_instFlux"] = rng.uniform(1e3, 1e5, n)
    t["apFlux_12_0_instFluxErr"] = np.sqrt(t["apFlux_12_0_instFlux"])
    t["pixelFlags_edge"] = np.arange(n) == 1
    t["extendedness"] = np.where(np.arange(n) == 2, 1.0, 0.0)
    return t


@pytest.fixture
def repo_dir(tmp_path):
    d = tmp_path / "repo"
    R.write_repo_yaml(d, instrument="HSC", site=SITE, physical_filters=FILTERS)
    R.write_skymap(d, [TractInfo(9615, 216.2963, 0.7438, 0.85)])
    R.write_visit_summary(d, _visit_summary())
    for v in (10, 12):
        R.write_source_table(d, v, _sources(v))
    return d


def _rewrite_source(path, mutate):
    table = pq.read_table(path)
    pq.write_table(mutate(table), path)


def test_round_trip(repo_dir):
    repo = Repository(repo_dir)
    assert repo.format_version == R.FORMAT_VERSION
    assert repo.physical_filters == FILTERS and repo.site["latitude_deg"] == 19.8256
    assert repo.lut_path == repo_dir / "fgcmLookupTable.fits"
    vs = repo.visit_summary()
    assert set(R.VISIT_SUMMARY_COLUMNS) <= set(vs)
    assert vs["detector"].dtype == np.int16 and vs["visit"].dtype == np.int64
    assert list(vs["visit"]) == [10, 10, 10, 12, 12, 12]
    assert repo.source_visits() == [10, 12]
    t = repo.read_source_table(12, ["sourceId", "detector", "pixelFlags_edge", "dec"])
    assert list(t) == ["sourceId", "detector", "pixelFlags_edge", "dec"]
    expected = _sources(12)
    for c in t:
        assert t[c].dtype == np.dtype(R.SOURCE_COLUMNS[c])
        np.testing.assert_array_equal(t[c], expected[c])
    repo.validate()


def test_tract(repo_dir):
    repo = Repository(repo_dir)
    tract = repo.tract(9615)
    assert repo.tracts() == [9615]
    inside = tract.contains([216.2963, 216.2963, 217.2], [0.7438, 0.7438 + 0.84, 0.7438])
    assert inside.tolist() == [True, True, False]
    # 1 degree of RA at dec 60 is half a degree on the sky.
    assert TractInfo(1, 10.0, 60.0, 0.6).contains(11.0, 60.0)
    with pytest.raises(RepositoryError, match=r"skymap.yaml.*unknown tract 1"):
        repo.tract(1)


def test_repo_yaml_errors(repo_dir):
    (repo_dir / "repo.yaml").unlink()
    with pytest.raises(RepositoryError, match=r"repo.yaml.*missing"):
        Repository(repo_dir)
    R.write_repo_yaml(repo_dir, instrument="HSC", site=SITE, physical_filters=FILTERS,
                      extra={"format_version": 99})
    with pytest.raises(RepositoryError, match=r"repo.yaml.*unsupported format_version 99"):
        Repository(repo_dir)
    meta = {"format_version": 1, "instrument": "HSC", "site": SITE}
    (repo_dir / "repo.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(RepositoryError, match=r"repo.yaml.*missing key 'physical_filters'"):
        Repository(repo_dir)
    (repo_dir / "repo.yaml").write_text("format_version: [1\n")
    with pytest.raises(RepositoryError, match=r"repo.yaml.*not valid YAML"):
        Repository(repo_dir)
    with pytest.raises(RepositoryError, match="repository directory not found"):
        Repository(repo_dir / "nowhere")


def test_visit_summary_errors(repo_dir):
    path = repo_dir / "visitSummary.parquet"
    vs = _visit_summary()
    vs["detector"][1] = 0  # (10, 0) twice
    R.write_visit_summary(repo_dir, vs)
    with pytest.raises(RepositoryError, match=r"visitSummary.parquet.*duplicate.*\(10, 0\)"):
        Repository(repo_dir).visit_summary()
    vs = _visit_summary()
    del vs["air_pressure"]
    R.write_parquet(path, vs)
    with pytest.raises(RepositoryError, match=r"visitSummary.parquet.*missing column 'air_pre"):
        Repository(repo_dir).visit_summary()
    vs = _visit_summary()
    vs["exptime"] = np.array(["30"] * len(vs["visit"]))
    R.write_parquet(path, vs)
    with pytest.raises(RepositoryError, match=r"column 'exptime': dtype string, expected float"):
        Repository(repo_dir).visit_summary()
    vs = _visit_summary()
    vs["physical_filter"][0] = "HSC-Q"
    R.write_visit_summary(repo_dir, vs)
    with pytest.raises(RepositoryError, match=r"filters \['HSC-Q'\] not listed"):
        Repository(repo_dir).visit_summary()
    vs = _visit_summary()
    vs["mjd"][1] += 0.1
    R.write_visit_summary(repo_dir, vs)
    with pytest.raises(RepositoryError, match=r"'mjd' differs between the detectors of visit 10"):
        Repository(repo_dir).visit_summary()


def test_source_table_errors(repo_dir):
    repo = Repository(repo_dir)
    path = repo.source_table_path(10)
    with pytest.raises(RepositoryError, match=r"10.parquet: missing column\(s\) 'nonsense'"):
        repo.read_source_table(10, ["ra", "nonsense"])
    _rewrite_source(path, lambda t: t.set_column(
        t.schema.get_field_index("pixelFlags_edge"), "pixelFlags_edge",
        pa.array(np.zeros(t.num_rows, np.float32))))
    with pytest.raises(RepositoryError, match=r"10.parquet: column 'pixelFlags_edge': dtype "
                                              r"float, expected bool"):
        repo.read_source_table(10, ["pixelFlags_edge"])
    _rewrite_source(path, lambda t: t.set_column(
        t.schema.get_field_index("detector"), "detector",
        pa.array(np.full(t.num_rows, 70000, np.int64))))
    with pytest.raises(RepositoryError, match=r"column 'detector': values outside .*int16"):
        repo.read_source_table(10, ["detector"])
    _rewrite_source(path, lambda t: t.set_column(
        t.schema.get_field_index("ra"), "ra", pa.array(np.full(t.num_rows, np.nan))))
    with pytest.raises(RepositoryError, match=r"column 'ra' has 6 non-finite"):
        repo.read_source_table(10, ["ra"])
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(RepositoryError, match=r"10.parquet: not a readable parquet file"):
        repo.read_source_table(10, ["ra"])
    # Truncated file: header and footer damaged.
    good = repo.source_table_path(12).read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(RepositoryError, match=r"10.parquet"):
        repo.read_source_table(10, ["ra"])
    with pytest.raises(RepositoryError, match=r"99.parquet: file not found"):
        repo.read_source_table(99, ["ra"])
    (repo.source_dir / "notes.parquet").write_bytes(b"")
    with pytest.raises(RepositoryError, match=r"notes.parquet: unexpected file"):
        repo.source_visits()


def test_wrong_visit_and_duplicate_ids(repo_dir):
    repo = Repository(repo_dir)
    t = _sources(10)
    t["visit"][:] = 12
    R.write_source_table(repo_dir, 10, t)
    with pytest.raises(RepositoryError, match=r"10.parquet: column 'visit' has values other"):
        repo.read_source_table(10, ["visit"])
    t = _sources(10)
    t["sourceId"] = _sources(12)["sourceId"]
    R.write_source_table(repo_dir, 10, t)
    with pytest.raises(RepositoryError, match="duplicate sourceId"):
        repo.validate()
    t = _sources(10)
    t["detector"][:] = 7
    R.write_source_table(repo_dir, 10, t)
    with pytest.raises(RepositoryError, match=r"detectors \[7\] have no visit summary row"):
        repo.validate()


def test_legacy_column_names(repo_dir):
    """Pre-2021 capitalised names, 2021-2023 `decl`, ccdVisitId without detector, no visit,
    float32 fluxes: all read as the current names and dtypes."""
    repo = Repository(repo_dir)
    t = _sources(10)
    legacy = {}
    for c, v in t.items():
        if c == "dec":
            legacy["decl"] = v
        elif c == "detector":
            legacy["ccdVisitId"] = 10 * 200 + v.astype(np.int64)
        elif c == "visit":
            continue
        elif c.startswith(("apFlux", "pixelFlags", "centroid", "localBackground", "deblend",
                           "calib")):
            legacy[c[0].upper() + c[1:]] = v.astype(np.float32) if "instFlux" in c else v
        else:
            legacy[c] = v
    pq.write_table(pa.table(legacy), repo.source_table_path(10))
    cols = ["visit", "detector", "dec", "apFlux_12_0_instFlux", "pixelFlags_edge",
            "deblend_nChild", "calib_psf_candidate"]
    got = repo.read_source_table(10, cols)
    np.testing.assert_array_equal(got["visit"], 10)
    np.testing.assert_array_equal(got["detector"], t["detector"])
    np.testing.assert_array_equal(got["dec"], t["dec"])
    assert got["apFlux_12_0_instFlux"].dtype == np.float64
    np.testing.assert_allclose(got["apFlux_12_0_instFlux"], t["apFlux_12_0_instFlux"],
                               rtol=1e-7)
    np.testing.assert_array_equal(got["pixelFlags_edge"], t["pixelFlags_edge"])
    assert "decl" not in repo.source_table_columns(10)


def test_newer_dataset_names(repo_dir):
    (repo_dir / "visitSummary.parquet").rename(repo_dir / "visit_summary.parquet")
    (repo_dir / "sourceTable_visit").rename(repo_dir / "source")
    repo = Repository(repo_dir)
    assert repo.source_visits() == [10, 12]
    assert len(repo.visit_summary()["visit"]) == 6
    repo.validate()


def test_atomic_write(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "done"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_writer_rejects_incomplete_tables(tmp_path):
    t = _sources(10)
    del t["extendedness"]
    with pytest.raises(RepositoryError, match=r"missing columns \['extendedness'\]"):
        R.write_source_table(tmp_path, 10, t)
    assert not (tmp_path / "sourceTable_visit" / "10.parquet").exists()
