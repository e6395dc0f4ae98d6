"""Build stars: from sourceTable_visit parquet files to matched star and observation tables.

``build_stars(repo, config, tract) -> StarCatalog`` (contract: docs/architecture.md; rules and
measured figures: docs/stars.md):

1. visits whose field of view overlaps the tract (`visits.select_visits`);
2. per visit, in a thread pool (pyarrow and NumPy release the GIL): read only the needed
   columns, apply the source cuts (`select.select_sources`) and compute instrumental
   magnitudes (`photometry.instrumental_magnitudes`);
3. match across visits (`match.match_observations`) and apply the star-level cuts;
4. assemble the tables, sorted by star, and the summary of every cut.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from jaxfgcm.config import Config, ConfigError
from jaxfgcm.repo import Repository
from jaxfgcm.stars.catalog import (
    OBSERVATION_DTYPES,
    StarCatalog,
    StarCatalogError,
    Table,
    catalog_config,
)
from jaxfgcm.stars.match import gnomonic, inverse_gnomonic, match_observations
from jaxfgcm.stars.photometry import instrumental_magnitudes
from jaxfgcm.stars.select import SOURCE_CUTS, select_sources, source_columns
from jaxfgcm.stars.visits import (
    detector_psf_fwhm,
    select_visits,
    visit_detector_table,
    visit_table,
)

__all__ = [
    "OBSERVATION_CUTS",
    "SOURCE_CUTS",
    "STAR_CUTS",
    "StarCatalog",
    "StarCatalogError",
    "StarsWarning",
    "Table",
    "build_stars",
    "load_or_build_stars",
]

log = logging.getLogger(__name__)

#: Cuts of selected observations during matching, in order (first failing cut counts).
OBSERVATION_CUTS = (
    "no_star_within_radius",  # no candidate star within match_radius
    "duplicate_in_visit",  # a nearer observation of the same visit took the star
    "star_not_isolated",  # the star has another star within isolation_radius
    "star_outside_tract",  # the star's position is outside the tract
    "below_min_obs_in_band",  # the star has < min_obs_per_band observations in this band
    "star_missing_required_band",  # the star lacks a required band
)
#: Cuts of candidate stars, in order.
STAR_CUTS = ("not_isolated", "outside_tract", "missing_required_band", "no_observations_left")


class StarsWarning(UserWarning):
    """A visit was skipped (empty source table, no visit summary row, ...)."""


def _warn(message: str) -> None:
    # A Python warning (shown once on the console, testable); the log keeps a record.
    log.info(message)
    warnings.warn(message, StarsWarning, stacklevel=3)


class _Progress:
    """A one-line stderr progress indicator, refreshed at most twice a second."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.last = total, enabled, 0.0
        self.start = time.perf_counter()

    def update(self, done: int, sources: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.last < 0.5):
            return
        self.last = now
        rate = sources / max(now - self.start, 1e-9)
        sys.stderr.write(f"\rstars: {done}/{self.total} visits read, {sources:,} sources "
                         f"({rate:,.0f}/s)" + ("\n" if final else ""))
        sys.stderr.flush()


def build_stars(
    repo: Repository | str | os.PathLike,
    config: Config,
    tract: int,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> StarCatalog:
    """Read, select and match the sources of every visit overlapping ``tract``.

    ``workers``: reader threads (default: the CPU count, at most 8). Errors reading a file
    (missing column, corrupt file) propagate as `jaxfgcm.repo.RepositoryError` naming the file.
    Skipped visits raise a `StarsWarning`. The returned catalog's ``summary`` accounts for every
    source read (`summary["sources"]`, `summary["observations"]`, `summary["stars"]`).
    """
    t_start = time.perf_counter()
    if not isinstance(repo, Repository):
        repo = Repository(repo)
    scfg = config.stars
    bands = tuple(config.instrument.bands)
    _check_config(config)
    physical_filters = tuple(config.instrument.physical_filters)
    radius = scfg.match_radius_arcsec
    tract_info = repo.tract(tract)
    camera = repo.camera()
    science_detectors = np.asarray(camera.ids)

    # ---- 1. visits ---------------------------------------------------------------------------
    vs = repo.visit_summary()
    # Sources this far outside the tract can neither be tract stars nor their neighbours.
    margin_deg = (radius + scfg.isolation_radius_arcsec) / 3600.0
    visits, visit_counts, skipped = select_visits(
        vs, repo.source_visits(), tract_info, camera, config, margin_deg)
    for reason in ("filter_not_configured", "source_table_without_summary"):
        if skipped[reason]:
            _warn(f"stars: {len(skipped[reason])} visit(s) skipped ({reason}): "
                  f"{skipped[reason][:10]}")
    vtab = visit_table(vs, visits, config)

    # ---- 2. read + select + photometry, per visit ---------------------------------------------
    columns = source_columns(scfg)
    reach = tract_info.radius_deg + margin_deg

    def process(k: int) -> dict | None:
        visit = int(vtab["visit"][k])
        table = repo.read_source_table(visit, columns)
        n_read = table["ra"].size
        if n_read == 0:
            return None
        keep, removed = select_sources(table, scfg, science_detectors)
        sub = {c: v[keep] for c, v in table.items()}
        mag, mag_err, delta_aper = instrumental_magnitudes(sub, vtab["exptime"][k], scfg)
        # The visit's delta-aper: median over all its selected sources, as fgcmcal (not only
        # those near the tract).
        finite = np.isfinite(delta_aper)
        visit_delta_aper = float(np.median(delta_aper[finite])) if finite.any() else np.nan
        # Region cut last among the source cuts: cheap, and only on the survivors.
        near = tract_info.separation_deg(sub["ra"], sub["dec"]) <= reach
        removed["outside_tract_region"] = int((~near).sum())
        sub = {c: v[near] for c, v in sub.items()}
        mag, mag_err, delta_aper = mag[near], mag_err[near], delta_aper[near]
        return {
            "n_read": n_read, "removed": removed, "visit_delta_aper": visit_delta_aper,
            "source_id": sub["sourceId"],
            "detector": sub["detector"].astype(np.int32), "ra": sub["ra"], "dec": sub["dec"],
            "x": sub["x"].astype(np.float32), "y": sub["y"].astype(np.float32),
            "mag": mag, "mag_err": mag_err, "delta_aper": delta_aper,
        }

    n_visits = vtab["visit"].size
    results: list[dict | None] = [None] * n_visits
    bar = _Progress(n_visits, progress)
    n_workers = workers or min(8, os.cpu_count() or 1)
    done = sources = 0
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        futures = {pool.submit(process, k): k for k in range(n_visits)}
        try:
            for fut in as_completed(futures):
                res = fut.result()
                results[futures[fut]] = res
                done += 1
                sources += 0 if res is None else res["n_read"]
                bar.update(done, sources)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    bar.update(done, sources, final=True)
    t_read = time.perf_counter()

    empty = [int(vtab["visit"][k]) for k in range(n_visits) if results[k] is None]
    if empty:
        _warn(f"stars: {len(empty)} visit(s) with an empty source table skipped: {empty[:10]}")
    used = np.array([r is not None for r in results], dtype=bool)
    vtab = {c: v[used] for c, v in vtab.items()}
    results = [r for r in results if r is not None]
    visit_counts["empty"] = len(empty)
    visit_counts["read"] = len(results)

    source_cut_names = (*SOURCE_CUTS, "outside_tract_region")
    n_read = int(sum(r["n_read"] for r in results))
    source_removed = {c: int(sum(r["removed"][c] for r in results)) for c in source_cut_names}
    per_visit_n = np.array([r["mag"].size for r in results], dtype=np.int64)
    obs = {c: _concat([r[c] for r in results], OBSERVATION_DTYPES.get(c))
           for c in ("source_id", "detector", "ra", "dec", "x", "y", "mag", "mag_err",
                     "delta_aper")}
    obs_visit_row = np.repeat(np.arange(len(results)), per_visit_n)
    n_selected = obs["mag"].size

    band_of_visit = np.array([bands.index(b) for b in vtab["band"]], dtype=np.int32)
    filter_of_visit = np.array([physical_filters.index(f) for f in vtab["physical_filter"]],
                               dtype=np.int32)
    vtab["delta_aper"] = np.array([r["visit_delta_aper"] for r in results], dtype=np.float64)
    vtab["n_sources"] = np.array([r["n_read"] for r in results], dtype=np.int64)
    del results

    # ---- 3. match ----------------------------------------------------------------------------
    xi, eta = gnomonic(obs["ra"], obs["dec"], tract_info.ra, tract_info.dec)
    obs_visit = vtab["visit"][obs_visit_row]
    obs_band = band_of_visit[obs_visit_row]
    primary = [bands.index(b) for b in scfg.primary_bands]
    m = match_observations(xi, eta, obs_band, obs_visit, primary, radius,
                           scfg.isolation_radius_arcsec, scfg.min_obs_per_band)
    star_ra, star_dec = inverse_gnomonic(m.star_xi, m.star_eta, tract_info.ra, tract_info.dec)
    n_cand = star_ra.size
    in_tract = tract_info.contains(star_ra, star_dec) if n_cand else np.zeros(0, bool)

    obs_removed: dict[str, int] = {}
    keep = np.ones(n_selected, dtype=bool)

    def cut(name: str, passes: np.ndarray) -> None:
        nonlocal keep
        obs_removed[name] = int((keep & ~passes).sum())
        keep &= passes

    star = m.obs_star
    has_star = star >= 0
    safe = np.where(has_star, star, 0)
    cut("no_star_within_radius", has_star)
    cut("duplicate_in_visit", ~m.obs_duplicate)
    cut("star_not_isolated", m.star_isolated[safe] if n_cand else has_star)
    cut("star_outside_tract", in_tract[safe] if n_cand else has_star)
    n_bands = len(bands)
    flat = safe.astype(np.int64) * n_bands + obs_band
    count = np.bincount(flat[keep], minlength=n_cand * n_bands).reshape(n_cand, n_bands)
    cut("below_min_obs_in_band",
        count.ravel()[flat] >= scfg.min_obs_per_band if n_cand else has_star)
    enough = count >= scfg.min_obs_per_band
    req = [bands.index(b) for b in scfg.required_bands]
    has_required = enough[:, req].all(axis=1) if req else np.ones(n_cand, dtype=bool)
    cut("star_missing_required_band", has_required[safe] if n_cand else has_star)

    n_obs_star = np.bincount(safe[keep], minlength=n_cand)
    star_removed = {}
    alive = np.ones(n_cand, dtype=bool)
    for name, passes in (("not_isolated", m.star_isolated), ("outside_tract", in_tract),
                         ("missing_required_band", has_required),
                         ("no_observations_left", n_obs_star > 0)):
        star_removed[name] = int((alive & ~passes).sum())
        alive &= passes

    # ---- 4. tables ---------------------------------------------------------------------------
    # Stars ordered by declination, then RA: deterministic, and spatially coherent.
    kept_stars = np.flatnonzero(alive)
    kept_stars = kept_stars[np.lexsort((star_ra[kept_stars], star_dec[kept_stars]))]
    new_index = np.full(n_cand, -1, dtype=np.int64)
    new_index[kept_stars] = np.arange(kept_stars.size)
    o = np.flatnonzero(keep)
    star_index = new_index[star[o]]
    mjd_of_obs = vtab["mjd"][obs_visit_row[o]]
    order = np.lexsort((mjd_of_obs, obs_band[o], star_index))
    o = o[order]
    observations = Table({
        "star_index": star_index[order].astype(np.int32),
        "visit": obs_visit[o].astype(np.int64),
        "detector": obs["detector"][o],
        "band_index": obs_band[o].astype(np.int32),
        "filter_index": filter_of_visit[obs_visit_row[o]],
        "mag": obs["mag"][o],
        "mag_err": obs["mag_err"][o],
        "x": obs["x"][o],
        "y": obs["y"][o],
        "delta_aper": obs["delta_aper"][o],
        "psf_fwhm": detector_psf_fwhm(vs, obs_visit[o], obs["detector"][o], config).astype(
            OBSERVATION_DTYPES["psf_fwhm"]),
        "mjd": vtab["mjd"][obs_visit_row[o]],
        "source_id": obs["source_id"][o],
    })
    n_star = kept_stars.size
    n_obs = np.bincount(observations["star_index"].astype(np.int64) * n_bands
                        + observations["band_index"], minlength=n_star * n_bands)
    stars = Table({
        "star_id": np.arange(1, n_star + 1, dtype=np.int64),
        "ra": star_ra[kept_stars],
        "dec": star_dec[kept_stars],
        "n_obs": n_obs.reshape(n_star, n_bands).astype(np.int32),
    })
    vtab["n_obs"] = np.bincount(obs_visit_row[o], minlength=vtab["visit"].size).astype(np.int64)
    t_end = time.perf_counter()

    summary = {
        "tract": int(tract),
        "repository": str(repo.path),
        "visits": visit_counts,
        "sources": {"read": n_read, "removed": source_removed, "selected": n_selected},
        "observations": {"selected": n_selected, "removed": obs_removed,
                         "kept": int(observations.n_rows)},
        "stars": {"candidates": n_cand, "removed": star_removed, "kept": int(n_star),
                  **m.counts},
        "per_band": {b: {"observations": int((observations["band_index"] == i).sum()),
                         "stars": int((stars["n_obs"][:, i] > 0).sum())}
                     for i, b in enumerate(bands)},
        "timing_s": {"read_select": round(t_read - t_start, 3),
                     "match_assemble": round(t_end - t_read, 3),
                     "total": round(t_end - t_start, 3)},
    }
    _check_accounting(summary)
    log.info("stars: cut summary %s", json.dumps(summary))
    log.info("stars: tract %d: %d visits, %d sources read, %d selected, %d observations of "
             "%d stars kept (%.1f s)", tract, len(vtab["visit"]), n_read, n_selected,
             observations.n_rows, n_star, t_end - t_start)
    visit_detectors = Table(visit_detector_table(vs, vtab["visit"], science_detectors, config))
    return StarCatalog(stars=stars, observations=observations, visits=Table(vtab), bands=bands,
                       physical_filters=physical_filters, tract=int(tract), summary=summary,
                       config=catalog_config(config), visit_detectors=visit_detectors)


def load_or_build_stars(
    repo: Repository | str | os.PathLike, config: Config, tract: int,
    cache_dir: str | os.PathLike, **kwargs,
) -> StarCatalog:
    """The cached catalog in ``cache_dir`` if it was built from the same repository, tract and
    settings; otherwise build it (`build_stars`) and save it there."""
    repo = repo if isinstance(repo, Repository) else Repository(repo)
    try:
        cat = StarCatalog.load(cache_dir, config=config, tract=tract)
        if Path(cat.summary.get("repository", "")).resolve() == Path(repo.path).resolve():
            log.info("stars: using cached catalog %s", cache_dir)
            return cat
        log.info("stars: cache %s is from another repository; rebuilding", cache_dir)
    except StarCatalogError as exc:
        log.info("stars: no usable cache (%s); building", exc)
    cat = build_stars(repo, config, tract, **kwargs)
    cat.save(cache_dir)
    return cat


def _check_config(config: Config) -> None:
    scfg, bands = config.stars, config.instrument.bands
    for key in ("primary_bands", "required_bands"):
        unknown = [b for b in getattr(scfg, key) if b not in bands]
        if unknown:
            raise ConfigError(f"'stars.{key}': bands {unknown} are not in instrument.bands")
    if not scfg.primary_bands:
        raise ConfigError("'stars.primary_bands' must name at least one band")
    if scfg.match_radius_arcsec <= 0 or scfg.isolation_radius_arcsec < 0:
        raise ConfigError("'stars.match_radius_arcsec' must be > 0 and "
                          "'stars.isolation_radius_arcsec' >= 0")
    if scfg.min_obs_per_band < 1:
        raise ConfigError("'stars.min_obs_per_band' must be >= 1")


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype=dtype or np.float64)
    return np.concatenate(parts).astype(dtype, copy=False) if dtype else np.concatenate(parts)


def _check_accounting(summary: dict) -> None:
    """Every source read is either kept or counted by exactly one cut."""
    s, o = summary["sources"], summary["observations"]
    if s["read"] != s["selected"] + sum(s["removed"].values()):
        raise RuntimeError(f"stars: source accounting does not add up: {s}")
    if o["selected"] != o["kept"] + sum(o["removed"].values()):
        raise RuntimeError(f"stars: observation accounting does not add up: {o}")
