"""The tract driver: repository -> stars -> fit cycles -> products (``run_tract``), and the
self-contained demo (``run_demo``: simulate a small tract with known truth, calibrate it, compare).

Stages and what they log (logger ``jaxfgcm``): the device, the inputs found (visits per band,
LUT), star building (stars, observations; cached in ``OUTPUT/cache/``), each fit cycle
(repeatability per band, photometric exposures, cuts: logged by jaxfgcm.fit), the products and a
final summary table. Every problem with the inputs or the output directory is raised as one of
:func:`expected_errors` with a message naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("jaxfgcm.pipeline")

#: Where the star tables are cached inside the output directory (reused by ``--resume``).
CACHE_DIR = "cache"
STARS_CACHE = "stars"
CACHE_KEY_FILE = "stars_key.json"
#: Snapshot of the fit after its last completed cycle (reused by ``--resume``).
FIT_CHECKPOINT = "fit_checkpoint.pkl"


class CalibrateError(ValueError):
    """The run cannot proceed with these inputs or this output directory (message says why)."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input/output rather than a bug."""
    from jaxfgcm.atmosphere import AtmosphereTableError
    from jaxfgcm.camera import CameraError
    from jaxfgcm.config import ConfigError
    from jaxfgcm.fit import FitDataError
    from jaxfgcm.lut import LutFormatError, LutMismatchError
    from jaxfgcm.output.photocalib import PhotoCalibError
    from jaxfgcm.repo import RepositoryError
    from jaxfgcm.stars import StarCatalogError
    from jaxfgcm.throughput import ThroughputError

    return (CalibrateError, OSError, ConfigError, RepositoryError, CameraError,
            AtmosphereTableError, LutMismatchError, LutFormatError, ThroughputError,
            StarCatalogError, FitDataError, PhotoCalibError)


@dataclass
class RunResult:
    """What a run produced: the output directory and the summary written to summary.json."""

    out_dir: Path
    summary: dict
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        from jaxfgcm.output.summary import format_summary_table

        s = self.summary
        total = s.get("timings_s", {}).get("total", float("nan"))
        head = f"tract {s.get('tract')}: {s.get('status')} in {total:.1f} s on {s.get('device')}"
        lines = [head, format_summary_table(s)]
        truth = s.get("truth")
        if truth:
            lines.append(format_truth_lines(truth))
        lines.extend(self.notes)
        if self.out_dir.exists():  # the demo's temporary products are gone by now
            lines.append(f"products: {self.out_dir}")
        return "\n".join(lines)


def format_truth_lines(truth: dict) -> str:
    def mmag(v):
        return "-" if v is None or not np.isfinite(v) else f"{1000 * v:.2f}"

    out = ["recovered vs truth (RMS in mmag after removing one constant per band):"]
    for band, t in truth.get("bands", {}).items():
        out.append(
            f"  {band}: zeropoints {mmag(t.get('zeropoint_rms'))} "
            f"({t.get('n_zeropoints', 0)} photometric visit/detectors), "
            f"non-photometric {mmag(t.get('zeropoint_rms_nonphotometric'))} "
            f"({t.get('n_zeropoints_nonphotometric', 0)}), "
            f"bright-star magnitudes {mmag(t.get('star_mag_rms'))} ({t.get('n_stars', 0)} stars)")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# Configuration and directories
# ------------------------------------------------------------------------------------------------


def load_run_config(config_path=None, overrides=None):
    from jaxfgcm.config import load_config

    return load_config(config_path, overrides=list(overrides or []))


def restrict_bands(config, bands):
    """``config`` calibrating only ``bands`` (kept in the configuration's wavelength order)."""
    inst = config.instrument
    unknown = [b for b in bands if b not in inst.bands]
    if unknown:
        raise CalibrateError(
            f"unknown band(s) {unknown}: the configuration's bands are {list(inst.bands)}")
    keep = [b for b in inst.bands if b in bands]
    primary = [b for b in config.stars.primary_bands if b in keep] or keep
    return config.with_overrides({
        "instrument.bands": keep,
        "instrument.physical_filters": {f: b for f, b in inst.physical_filters.items()
                                        if b in keep},
        "instrument.std_physical_filters": {b: f for b, f in inst.std_physical_filters.items()
                                            if b in keep},
        "stars.primary_bands": primary,
        "stars.required_bands": [b for b in config.stars.required_bands if b in keep],
        "fit.fit_bands": [b for b in config.fit.fit_bands if b in keep],
    })


def default_output_dir(repo_path: Path, tract_id: int) -> Path:
    return Path(repo_path) / "jaxfgcm" / f"tract-{int(tract_id)}"


def prepare_output_dir(out_dir: Path, repo_path: Path) -> Path:
    """Create ``out_dir`` and check that it is writable and not one of the inputs."""
    out = Path(out_dir).absolute()
    repo = Path(repo_path).absolute()
    inputs = [repo] + [repo / n for n in ("sourceTable_visit", "source", "throughput", "truth")]
    if any(_same_or_inside(out, p) for p in inputs[1:]) or _samefile(out, repo):
        raise CalibrateError(
            f"{out}: output directory would overwrite repository inputs; choose another "
            f"--output (default {default_output_dir(repo, 0).parent}/tract-<id>)")
    if (out / "repo.yaml").exists():
        raise CalibrateError(f"{out}: output directory is a data repository (has repo.yaml)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise CalibrateError(
            f"{out}: output directory is not writable ({exc.strerror or exc})") from None
    return out


def _same_or_inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _samefile(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


# ------------------------------------------------------------------------------------------------
# The tract driver
# ------------------------------------------------------------------------------------------------


def run_tract(
    repo_path,
    tract_id: int,
    *,
    output=None,
    config=None,
    config_path=None,
    overrides=None,
    bands=None,
    resume: bool = False,
    plots: bool = True,
    truth: bool = True,
) -> RunResult:
    """Calibrate one tract of a repository and write the products (docs/products.md).

    ``config`` (a Config) or ``config_path`` + ``overrides``; ``bands`` restricts the bands
    (each must have visits); by default the configured bands that have visits are calibrated.
    ``resume`` reuses cached star tables when their inputs are unchanged. ``truth``: compare to
    ``REPO/truth/`` when the repository has one (simulations). Returns a :class:`RunResult`.
    """
    from jaxfgcm.repo import Repository

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    started_utc = _utc_now()
    if config is None:
        config = load_run_config(config_path, overrides)
    elif overrides:
        config = config.with_overrides(list(overrides))
    repo_path = Path(repo_path)
    if not repo_path.exists():
        raise CalibrateError(f"{repo_path}: repository directory not found")
    repo = Repository(repo_path)
    tract = repo.tract(tract_id)
    _log_device()
    log.info("repository %s (%s), tract %d: centre (%.4f, %.4f) deg, radius %.3f deg",
             repo.path, repo.instrument, tract.tract_id, tract.ra, tract.dec, tract.radius_deg)

    # ---- inputs: visits per band, bands to calibrate ----
    t0 = time.perf_counter()
    full_config = config  # the LUT is checked against every configured filter, not a subset
    config = _choose_bands(repo, config, bands)
    out_dir = prepare_output_dir(Path(output) if output else
                                 default_output_dir(repo.path, tract_id), repo.path)
    log.info("output directory %s", out_dir)
    camera = repo.camera()
    lut = _load_lut(repo, full_config, camera)
    timings["inputs"] = time.perf_counter() - t0

    # ---- stars ----
    t0 = time.perf_counter()
    catalog = _stars(repo, config, tract, out_dir, resume)
    timings["build_stars"] = time.perf_counter() - t0
    _check_bands_have_observations(catalog, config, tract_id)

    # ---- fit ----
    from jaxfgcm.fit import FitData, run_fit_cycles

    t0 = time.perf_counter()
    log.info("fit: building device arrays")
    data = FitData.build(catalog, lut, camera, config)
    log.info("fit: %d observations, %d stars, %d exposures, %d detectors, %d nights, bands %s",
             data.n_obs, data.n_stars, data.n_exp, data.n_det, data.n_nights,
             ",".join(data.bands))
    checkpoint, resume_from = _fit_checkpoint(out_dir, repo, config, tract, data, resume)
    result = run_fit_cycles(data, lut, config, log=logging.getLogger("jaxfgcm.fit").info,
                            checkpoint=checkpoint, resume_from=resume_from)
    timings["fit"] = time.perf_counter() - t0

    # ---- truth (simulated repositories) ----
    truth_summary = None
    if truth and (repo.path / "truth").is_dir():
        from jaxfgcm.output.truth import compare_to_truth

        t0 = time.perf_counter()
        try:
            truth_summary = compare_to_truth(repo, result, catalog, data, config)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("truth comparison skipped: %s", exc)
        timings["truth"] = time.perf_counter() - t0

    # ---- products ----
    from jaxfgcm.output import write_products

    run_info = {
        "tract": int(tract_id),
        "repo": str(repo.path.absolute()),
        "output": str(out_dir),
        "instrument": repo.instrument,
        "started_utc": started_utc,
        "resumed": bool(resume),
        "timings_s": timings,
        "t_start": t_start,
    }
    summary, notes = write_products(result, catalog, lut, config, out_dir, data=data,
                                    camera=camera, run_info=run_info, truth=truth_summary,
                                    plots=plots)
    return RunResult(out_dir=out_dir, summary=summary, notes=notes)


def _utc_now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_device() -> None:
    import jax

    devices = jax.devices()
    log.info("JAX device(s): %s (JAX_PLATFORMS=%s)",
             ", ".join(f"{d.platform}:{d.id} {d.device_kind}" for d in devices),
             os.environ.get("JAX_PLATFORMS", "<unset>"))


def _choose_bands(repo, config, bands):
    """Restrict the configuration to the bands to calibrate; check each has visits."""
    vs = repo.visit_summary(columns=["physical_filter", "band"])
    visits_per_band = {}
    for b in np.unique(vs["band"]):
        visits_per_band[str(b)] = int(np.unique(vs["visit"][vs["band"] == b]).size)
    if bands is not None:
        config = restrict_bands(config, bands)
        empty = [b for b in config.instrument.bands if visits_per_band.get(b, 0) == 0]
        if empty:
            raise CalibrateError(
                f"{repo.visit_summary_path}: no visits in band(s) {empty} "
                f"(bands with visits: {sorted(visits_per_band)})")
    else:
        have = [b for b in config.instrument.bands if visits_per_band.get(b, 0) > 0]
        if not have:
            raise CalibrateError(
                f"{repo.visit_summary_path}: no visits in any configured band "
                f"{list(config.instrument.bands)} (file has bands {sorted(visits_per_band)})")
        skipped = [b for b in config.instrument.bands if b not in have]
        if skipped:
            log.info("bands without visits, not calibrated: %s", ",".join(skipped))
            config = restrict_bands(config, have)
    for b in config.instrument.bands:
        log.info("band %s: %d visits", b, visits_per_band.get(b, 0))
    return config


def _load_lut(repo, config, camera):
    path = repo.lut_path
    if not path.is_file():
        raise CalibrateError(
            f"{path}: look-up table not found (build it with "
            f"`python -m jaxfgcm.make_lut --repo {repo.path}`)")
    from jaxfgcm.lut import load_lut

    t0 = time.perf_counter()
    lut = load_lut(path, config=config, camera=camera)
    log.info("look-up table %s: filters %s, %d detectors (%.1f s)", path,
             ",".join(lut.physical_filters), len(lut.detector_ids), time.perf_counter() - t0)
    return lut


def _stars_cache_key(repo, config, tract) -> dict:
    """What the star tables depend on: inputs (names, sizes, times) and the configuration."""
    files = []
    for visit in repo.source_visits():
        p = repo.source_table_path(visit)
        st = p.stat()
        files.append([p.name, st.st_size, st.st_mtime_ns])
    vs = repo.visit_summary_path.stat()
    cfg = {"stars": config.to_dict()["stars"], "instrument": config.to_dict()["instrument"],
           "site": config.to_dict()["site"]}
    digest = hashlib.sha256(json.dumps([files, [vs.st_size, vs.st_mtime_ns], cfg],
                                       sort_keys=True).encode()).hexdigest()
    return {"repo": str(repo.path.absolute()), "tract": int(tract.tract_id), "digest": digest}


def _stars(repo, config, tract, out_dir: Path, resume: bool):
    from jaxfgcm.stars import StarCatalog, build_stars

    cache = out_dir / CACHE_DIR / STARS_CACHE
    key_path = out_dir / CACHE_DIR / CACHE_KEY_FILE
    key = _stars_cache_key(repo, config, tract)
    if resume:
        old = None
        if key_path.is_file():
            try:
                old = json.loads(key_path.read_text())
            except (OSError, ValueError):
                old = None
        if old == key:
            from jaxfgcm.stars import StarCatalogError

            t0 = time.perf_counter()
            try:
                catalog = StarCatalog.load(cache, config=config, tract=tract.tract_id)
            except StarCatalogError as exc:
                log.info("stars: cached tables not usable (%s); building", exc)
            else:
                log.info("stars: reused cached tables %s (%.1f s)", cache,
                         time.perf_counter() - t0)
                _log_catalog(catalog)
                return catalog
        else:
            log.info("stars: no usable cache in %s (%s); building", cache,
                     "inputs or configuration changed" if old else "none found")
    log.info("stars: selecting sources and matching across visits")
    catalog = build_stars(repo, config, tract.tract_id, progress=sys.stderr.isatty())
    _log_catalog(catalog)
    # The key is removed first and written last: a cache without its key is never reused.
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.unlink(missing_ok=True)
    catalog.save(cache)
    from jaxfgcm.output._io import write_json

    write_json(key, key_path)
    return catalog


def _fit_checkpoint(out_dir: Path, repo, config, tract, data, resume: bool):
    """(checkpoint writer, snapshot to resume from or None) for the fit cycles.

    The snapshot is reused only with ``--resume`` and when its key (star-table inputs, the whole
    configuration, the data's size and the device count) matches; it is our own pickle file in
    the output's cache directory, written atomically after every completed cycle.
    """
    import pickle

    import jax

    from jaxfgcm.atomic import atomic_write

    path = out_dir / CACHE_DIR / FIT_CHECKPOINT
    key = {"stars": _stars_cache_key(repo, config, tract)["digest"],
           "config": hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True)
                                    .encode()).hexdigest(),
           "n_obs": int(data.n_obs), "n_exp": int(data.n_exp),
           "devices": jax.device_count()}

    def write(snapshot: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            tmp.write_bytes(pickle.dumps({"key": key, "snapshot": snapshot}))

    snapshot = None
    if resume and path.is_file():
        try:
            saved = pickle.loads(path.read_bytes())
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError,
                TypeError, ValueError) as exc:  # a damaged cache is refitted, never fatal
            log.info("fit: checkpoint %s not readable (%s); fitting from cycle 0", path, exc)
        else:
            if saved.get("key") == key:
                snapshot = saved["snapshot"]
                log.info("fit: resuming after completed cycle %d (%s)", snapshot["cycle"], path)
            else:
                log.info("fit: checkpoint %s is for other inputs; fitting from cycle 0", path)
    return write, snapshot


def _log_catalog(catalog) -> None:
    n_obs = len(_column(catalog.observations, "star_index"))
    n_stars = len(_column(catalog.stars, "ra"))
    n_visits = len(_column(catalog.visits, "visit"))
    log.info("stars: %d stars, %d observations, %d visits", n_stars, n_obs, n_visits)


def _column(table, name):
    try:
        return table[name]
    except (KeyError, TypeError, IndexError):
        return getattr(table, name)


def _check_bands_have_observations(catalog, config, tract_id) -> None:
    band_index = np.asarray(_column(catalog.observations, "band_index"))
    counts = np.bincount(band_index, minlength=len(config.instrument.bands))
    empty = [b for b, n in zip(config.instrument.bands, counts) if n == 0]
    if empty:
        raise CalibrateError(
            f"no star observations in band(s) {empty} in tract {tract_id} (their visits do not "
            f"overlap the tract or no source passes the cuts); choose bands with --bands")


# ------------------------------------------------------------------------------------------------
# The demo
# ------------------------------------------------------------------------------------------------

DEMO_TRACT = 9615


def run_demo(
    *,
    repo=None,
    tract_id=None,
    output=None,
    preset: str = "tiny",
    config_path=None,
    overrides=None,
    bands=None,
    resume: bool = False,
    plots: bool = True,
) -> RunResult:
    """Simulate a small tract with known truth, calibrate it, and report recovered vs truth.

    ``repo``: where the simulated repository is written (kept); default a temporary directory,
    removed at the end together with the products unless ``output`` is given.
    """
    tract_id = DEMO_TRACT if tract_id is None else int(tract_id)
    tmp = None
    if repo is None:
        tmp = Path(tempfile.mkdtemp(prefix="jaxfgcm-demo-"))
        repo = tmp / "repo"
    repo = Path(repo)
    try:
        if (repo / "repo.yaml").is_file():
            log.info("demo: reusing the simulated repository %s", repo)
        else:
            _simulate(repo, tract_id, preset)
        _ensure_lut(repo, load_run_config(config_path, overrides))
        result = run_tract(repo, tract_id, output=output, config_path=config_path,
                           overrides=overrides, bands=bands, resume=resume, plots=plots)
        if tmp is not None and output is None:
            result.notes.append("demo: products were written to a temporary directory and "
                                "removed; pass --output DIR (and --repo DIR) to keep them")
        return result
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _simulate(repo: Path, tract_id: int, preset: str) -> None:
    from jaxfgcm.simulate import simulate

    t0 = time.perf_counter()
    log.info("demo: simulating the '%s' tract %d into %s", preset, tract_id, repo)
    try:
        simulate(repo, tract_id=tract_id, preset=preset, build_lut=True)
    except ValueError as exc:  # unknown preset or tract: a usage problem, not a bug
        raise CalibrateError(f"demo: {exc}") from None
    log.info("demo: simulation done (%.1f s)", time.perf_counter() - t0)


def _ensure_lut(repo_path: Path, config) -> None:
    """Build the repository's look-up table if it has none (presets that skip it)."""
    from jaxfgcm.repo import Repository

    repo = Repository(repo_path)
    if repo.lut_path.is_file():
        return
    from jaxfgcm.lut import build_lut, save_lut

    t0 = time.perf_counter()
    log.info("demo: building the look-up table %s", repo.lut_path)
    lut = build_lut(config, repo.throughput(), repo.camera(), progress=False)
    save_lut(lut, repo.lut_path)
    log.info("demo: look-up table built (%.1f s)", time.perf_counter() - t0)
