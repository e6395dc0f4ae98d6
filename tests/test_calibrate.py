"""``python -m jaxfgcm.calibrate``: options, exit codes, error messages, and the end-to-end run on
the simulated ``tiny`` tract (products, apply_calibration against the simulation's truth)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import jaxfgcm
from jaxfgcm.calibrate import (
    EXIT_INPUT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    build_parser,
    main,
)
from jaxfgcm.repo import Repository, TractInfo, write_repo_yaml, write_skymap

SITE = {"name": "Maunakea", "latitude_deg": 19.8256, "longitude_deg": -155.4761,
        "elevation_m": 4139.0}


#: In-process runs must not turn on the persistent compilation cache: the setting is
#: process-wide and would make every later test of the session write to ~/.cache.
NO_CACHE = "--no-compile-cache"


def run_main(capsys, *args):
    code = main([str(a) for a in args] + [NO_CACHE])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one-line error of an expected failure (log lines come before it)."""
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_help_documents_every_option():
    text = build_parser().format_help()
    for opt in ("--repo", "--tract", "--output", "--config", "--set", "--bands", "--resume",
                "--demo", "--preset", "--no-plots", "--compile-cache", "--no-compile-cache",
                "--nondeterministic", "--quiet", "--verbose", "exit codes"):
        assert opt in text, opt


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "jaxfgcm.calibrate", "--help"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and "--tract" in out.stdout


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--tract", "1"])
    assert exc.value.code == EXIT_USAGE
    assert "--repo and --tract are required" in capsys.readouterr().err


def test_missing_repository(tmp_path, capsys):
    code, _, err = run_main(capsys, "--repo", tmp_path / "nope", "--tract", 9615)
    assert code == EXIT_INPUT_ERROR
    assert "nope: repository directory not found" in error_line(err)


def test_directory_without_repo_yaml(tmp_path, capsys):
    code, _, err = run_main(capsys, "--repo", tmp_path, "--tract", 9615)
    assert code == EXIT_INPUT_ERROR
    assert "repo.yaml" in error_line(err)
    assert not (tmp_path / "jaxfgcm").exists()


def test_unknown_tract(tmp_path, capsys):
    write_repo_yaml(tmp_path, instrument="HSC", site=SITE,
                    physical_filters={"HSC-G": "g", "HSC-R2": "r"})
    write_skymap(tmp_path, [TractInfo(9615, 216.3, 0.74, 0.25)])
    code, _, err = run_main(capsys, "--repo", tmp_path, "--tract", 1234)
    line = error_line(err)
    assert code == EXIT_INPUT_ERROR
    assert "unknown tract 1234" in line and "9615" in line


def test_bad_override_is_an_input_error(tmp_path, capsys):
    code, _, err = run_main(capsys, "--repo", tmp_path, "--tract", 1, "--set", "fit.nope=3")
    assert code == EXIT_INPUT_ERROR
    assert "fit.nope" in error_line(err)


# ------------------------------------------------------------------------------------------------
# On the simulated tiny tract
# ------------------------------------------------------------------------------------------------

TRACT = 9615
#: A shorter fit keeps the test fast; the products and their consistency do not depend on it.
FAST = ["--set", "fit.max_fit_cycles=3", "--no-plots"]


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    from jaxfgcm.simulate import simulate

    repo = tmp_path_factory.mktemp("tiny") / "repo"
    simulate(repo, tract_id=TRACT, preset="tiny", seed=1, build_lut=True)
    return repo


@pytest.fixture(scope="module")
def tiny_run(tiny_repo, tmp_path_factory):
    """One end-to-end run of the command (with QA plots) shared by the tests below."""
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["--repo", str(tiny_repo), "--tract", str(TRACT), "--output", str(out),
                 "--set", "fit.max_fit_cycles=3", NO_CACHE])
    assert code == 0
    return out


def repo_copy(src, dst):
    """A copy of the repository without truth/ (what the calibration reads)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("truth"))
    return dst


def no_complete_products(out) -> bool:
    return not (out / "summary.json").exists()


def test_end_to_end_products(tiny_run, tiny_repo):
    out = tiny_run
    for name in ("fgcm_stars.parquet", "fgcm_photoCalib_tract.parquet",
                 "transmission_atmosphere_fgcm_tract.parquet", "fit_state.npz", "config.yaml",
                 "summary.json"):
        assert (out / name).is_file(), name
    qa = {p.name for p in (out / "qa").iterdir()}
    assert {"exposure_gray.png", "zeropoints_vs_time.png", "atmosphere_vs_time.png",
            "starflat_focal_plane.png", "repeatability_vs_mag.png", "residual_map.png"} <= qa
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["tract"] == TRACT
    assert set(summary["bands"]) == {"g", "r", "i", "z", "y"}
    assert summary["cycles"]["n_cycles"] >= 1
    assert "cpu" in summary["device"]
    assert {"build_stars", "fit", "write_products", "total"} <= set(summary["timings_s"])
    # truth comparison present (simulated repository) and sane in the best-measured band
    g = summary["truth"]["bands"]["g"]
    assert g["n_zeropoints"] > 50 and g["zeropoint_rms"] < 0.010
    vs = Repository(tiny_repo).visit_summary(["band"])
    n_visits = np.unique(vs["visit"]).size
    assert pq.read_table(out / "transmission_atmosphere_fgcm_tract.parquet").num_rows == n_visits
    pc = pq.read_table(out / "fgcm_photoCalib_tract.parquet")
    assert pc.num_rows == n_visits * Repository(tiny_repo).camera().n_detectors
    assert yaml.safe_load((out / "config.yaml").read_text())["fit"]["max_fit_cycles"] == 3


def test_apply_calibration_reproduces_the_fit_and_the_truth(tiny_run, tiny_repo):
    """Calibrate the fit's own source rows with the photoCalib product (chromatic correction
    from the standard stars' colours). Against the fit's standard magnitudes the median
    difference must vanish (fgcmcal's round-trip test allows 2 mmag; we require 1); against the
    simulation's true standard magnitudes (one constant per band removed) the scatter must stay
    within the fit's own accuracy: its zeropoint error vs truth and the single-observation
    scatter, combined."""
    from jaxfgcm.output.stars import sed_slopes
    from jaxfgcm.stars import StarCatalog

    out, repo = tiny_run, Repository(tiny_repo)
    cat = StarCatalog.load(out / "cache" / "stars")
    obs = cat.observations
    visits = np.unique(obs["visit"])
    cols = ["sourceId", "visit", "detector", "x", "y", "apFlux_12_0_instFlux",
            "apFlux_12_0_instFluxErr", "localBackground_instFlux"]
    tables = [repo.read_source_table(int(v), cols) for v in visits]
    src = {c: np.concatenate([t[c] for t in tables]) for c in cols}
    order = np.argsort(src["sourceId"])
    row = order[np.searchsorted(src["sourceId"], obs["source_id"], sorter=order)]
    sources = {c: v[row] for c, v in src.items()}
    assert np.array_equal(sources["sourceId"], obs["source_id"])

    stars = pq.read_table(out / "fgcm_stars.parquet")
    slopes = sed_slopes(stars)
    star, band_index = np.asarray(obs["star_index"]), np.asarray(obs["band_index"])
    fprime = np.stack([slopes[b] for b in cat.bands], axis=1)[star, band_index]
    cal = jaxfgcm.apply_calibration(sources, out / "fgcm_photoCalib_tract.parquet",
                                    sed_slope=fprime)

    truth_obs = repo.read_truth("observations")
    tid = np.asarray(truth_obs["sourceId"])
    t_order = np.argsort(tid)
    obj = np.asarray(truth_obs["object_id"])[t_order[np.searchsorted(tid, obs["source_id"],
                                                                      sorter=t_order)]]
    objects = repo.read_truth("objects")
    ids = np.asarray(objects["object_id"])
    o_order = np.argsort(ids)
    orow = o_order[np.searchsorted(ids, obj, sorter=o_order)]
    summary = json.loads((out / "summary.json").read_text())

    def robust(x):
        return 1.4826 * np.median(np.abs(x - np.median(x)))

    checked = 0
    for k, band in enumerate(cat.bands):
        std = stars.column(f"mag_{band}").to_numpy()[star]
        sel = ((band_index == k) & (cal["flag"] == 1) & np.isfinite(std)
               & (np.asarray(obs["mag_err"]) < 0.005))
        if sel.sum() < 30:
            continue
        checked += 1
        d_fit = cal["mag"][sel] - std[sel]
        assert abs(np.median(d_fit)) < 0.001, band
        d_true = cal["mag"][sel] - np.asarray(objects[f"mag_std_{band}"])[orow[sel]]
        zp_rms = summary["truth"]["bands"][band]["zeropoint_rms"]
        bar = 1.5 * np.hypot(zp_rms, robust(d_fit)) + 0.001
        assert robust(d_true) < bar, (band, robust(d_true), bar)
    assert checked >= 3


def test_resume_reuses_the_star_cache_and_interrupt_exits_130(tiny_run, tiny_repo, capsys,
                                                              monkeypatch):
    import jaxfgcm.fit

    out = tiny_run
    before = (out / "summary.json").read_text()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jaxfgcm.fit, "run_fit_cycles", interrupted)
    code, _, err = run_main(capsys, "--repo", tiny_repo, "--tract", TRACT, "--output", out,
                            "--resume", *FAST)
    assert code == EXIT_INTERRUPTED
    assert "reused cached tables" in err
    assert "interrupted" in err.splitlines()[-1] and "Traceback" not in err
    # interrupted before the products: the earlier complete set is untouched, nothing staged
    assert (out / "summary.json").read_text() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]


def test_resume_continues_after_the_last_completed_cycle(tiny_run, tiny_repo, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(tiny_run, out)
    assert (out / "cache" / "fit_checkpoint.pkl").is_file()
    first = json.loads((out / "summary.json").read_text())
    code, _, err = run_main(capsys, "--repo", tiny_repo, "--tract", TRACT, "--output", out,
                            "--resume", *FAST)
    assert code == 0, err
    assert "reused cached tables" in err and "resuming after completed cycle" in err
    again = json.loads((out / "summary.json").read_text())
    for band, fig in first["truth"]["bands"].items():
        assert again["truth"]["bands"][band]["zeropoint_rms"] == pytest.approx(
            fig["zeropoint_rms"], abs=1e-9, nan_ok=True), band


def test_no_visits_in_a_requested_band(tiny_repo, tmp_path, capsys):
    from jaxfgcm.repo import write_visit_summary

    repo = repo_copy(tiny_repo, tmp_path / "repo")
    vs = Repository(repo).visit_summary()
    keep = vs["band"] != "y"
    write_visit_summary(repo, {c: v[keep] for c, v in vs.items()})
    for p in (repo / "sourceTable_visit").iterdir():
        if int(p.stem) not in set(vs["visit"][keep].tolist()):
            p.unlink()
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "--repo", repo, "--tract", TRACT, "--output", out,
                            "--bands", "g,y", *FAST)
    assert code == EXIT_INPUT_ERROR
    line = error_line(err)
    assert "no visits in band(s) ['y']" in line and "visitSummary.parquet" in line
    assert no_complete_products(out)


def test_missing_and_mismatched_lut(tiny_repo, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "--repo", tiny_repo, "--tract", TRACT, "--output", out,
                            "--set", "lut.pwv.n=5", *FAST)
    assert code == EXIT_INPUT_ERROR
    line = error_line(err)
    assert "fgcmLookupTable.fits" in line and "lut.pwv" in line
    repo = repo_copy(tiny_repo, tmp_path / "repo")
    (repo / "fgcmLookupTable.fits").unlink()
    code, _, err = run_main(capsys, "--repo", repo, "--tract", TRACT, "--output", out, *FAST)
    assert code == EXIT_INPUT_ERROR
    assert "look-up table not found" in error_line(err)
    assert no_complete_products(out)


def test_corrupt_source_file(tiny_repo, tmp_path, capsys):
    repo = repo_copy(tiny_repo, tmp_path / "repo")
    victim = sorted((repo / "sourceTable_visit").iterdir())[3]
    victim.write_bytes(b"PAR1 this is not a parquet file")
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "--repo", repo, "--tract", TRACT, "--output", out, *FAST)
    assert code == EXIT_INPUT_ERROR
    assert victim.name in error_line(err)
    assert no_complete_products(out)


def test_unwritable_output_and_output_over_inputs(tiny_repo, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_main(capsys, "--repo", tiny_repo, "--tract", TRACT,
                            "--output", blocker / "out", *FAST)
    assert code == EXIT_INPUT_ERROR
    assert "not writable" in error_line(err)
    code, _, err = run_main(capsys, "--repo", tiny_repo, "--tract", TRACT,
                            "--output", tiny_repo / "sourceTable_visit", *FAST)
    assert code == EXIT_INPUT_ERROR
    assert "overwrite repository inputs" in error_line(err)
    assert not (tiny_repo / "sourceTable_visit" / "summary.json").exists()


def test_compile_cache_is_reused_and_changes_no_result(tiny_repo, tmp_path):
    """Two runs of the command with one --compile-cache: the first fills it, the second finds
    every program there (no entry added) and writes bit-identical products."""
    cache = tmp_path / "xla"

    def run(name):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "jaxfgcm.calibrate", "--repo", str(tiny_repo), "--tract",
             str(TRACT), "--output", str(out), "--compile-cache", str(cache), *FAST],
            capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"compiled programs cached in {cache}" in proc.stderr
        return out, {p.name for p in cache.iterdir()}

    first, entries_first = run("first")
    assert len(entries_first) > 50  # the fit's programs, large and small
    second, entries_second = run("second")
    assert entries_second == entries_first
    for product in ("fgcm_photoCalib_tract.parquet", "fgcm_stars.parquet"):
        a, b = pq.read_table(first / product), pq.read_table(second / product)
        assert a.column_names == b.column_names
        for name in a.column_names:
            x, y = a.column(name), b.column(name)
            if pa.types.is_floating(x.type):  # NaN rows (no calibration) compare equal
                np.testing.assert_array_equal(x.to_numpy(), y.to_numpy(), err_msg=name)
            else:
                assert x.to_pylist() == y.to_pylist(), (product, name)
