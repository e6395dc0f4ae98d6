"""Write a simulation as a repository (docs/repository.md) plus ``truth/`` (docs/simulation.md).

Source tables and the per-observation truth are streamed visit by visit, so memory stays at one
visit's rows plus the per-(visit, detector) tables. ``repo.yaml`` is written last: an
interrupted run leaves a directory the reader refuses, never one that looks complete.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxfgcm import repo as R
from jaxfgcm.simulate import instrument as inst
from jaxfgcm.simulate.photometry import DEFECT, simulate_visit

SIMULATOR_VERSION = 1


def _prepare(repo_dir: Path, overwrite: bool) -> None:
    if repo_dir.exists() and any(repo_dir.iterdir()):
        if not (repo_dir / R.REPO_YAML).is_file():
            raise FileExistsError(f"{repo_dir}: exists, is not empty and is not a repository; "
                                  "refusing to write into it")
        if not overwrite:
            raise FileExistsError(f"{repo_dir}: a repository already exists (use overwrite)")
        # Remove what a previous simulation wrote (repo.yaml first: the directory stops
        # looking like a repository while it is rewritten).
        (repo_dir / R.REPO_YAML).unlink()
        for name in (*R.SOURCE_DIRS, R.TRUTH_DIR, R.THROUGHPUT_DIR):
            if (repo_dir / name).is_dir():
                shutil.rmtree(repo_dir / name)
        for name in (*R.VISIT_SUMMARY_FILES, R.CAMERA_FILE, R.SKYMAP_FILE, R.LUT_FILE):
            (repo_dir / name).unlink(missing_ok=True)
    repo_dir.mkdir(parents=True, exist_ok=True)


def _concat(parts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def write_simulation(ctx, repo_dir: Path, build_lut: bool | None = None,
                     overwrite: bool = False, progress: bool = False) -> dict:
    from jaxfgcm.camera import write_camera
    from jaxfgcm.throughput import write_throughput

    log = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    t0 = time.perf_counter()
    _prepare(repo_dir, overwrite)
    cfg = ctx.config
    write_camera(ctx.camera, repo_dir / R.CAMERA_FILE)
    write_throughput(ctx.throughput, repo_dir / R.THROUGHPUT_DIR)
    R.write_skymap(repo_dir, [R.TractInfo(ctx.tract_id, ctx.tract_ra, ctx.tract_dec,
                                          ctx.preset.tract_radius_deg)])

    summaries, zeropoints = [], []
    n_rows = 0
    n_obs_objects = 0
    truth_path = repo_dir / R.TRUTH_DIR / "observations.parquet"
    t_visits = time.perf_counter()
    with R.atomic_write(truth_path) as tmp:
        writer = None
        try:
            for iv in range(ctx.schedule.n):
                out = simulate_visit(ctx, iv)
                R.write_source_table(repo_dir, int(ctx.schedule.visit[iv]), out.sources)
                table = pa.table(out.truth_obs)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                summaries.append(out.summary)
                zeropoints.append(out.zeropoints)
                n_rows += table.num_rows
                n_obs_objects += int((out.truth_obs["object_id"] >= 0).sum())
                if progress and (iv + 1) % max(1, ctx.schedule.n // 10) == 0:
                    log(f"simulate: visit {iv + 1}/{ctx.schedule.n}, {n_rows} sources so far")
        finally:
            if writer is not None:
                writer.close()
    t_visits = time.perf_counter() - t_visits

    R.write_visit_summary(repo_dir, _concat(summaries))
    R.write_truth(repo_dir, "zeropoints", _concat(zeropoints))
    _write_truth_tables(ctx, repo_dir)

    lut_status = "skipped"
    t_lut = 0.0
    if build_lut if build_lut is not None else ctx.preset.build_lut:
        t1 = time.perf_counter()
        lut_status = _build_lut(ctx, repo_dir, progress)
        t_lut = time.perf_counter() - t1

    site = cfg.site
    R.write_repo_yaml(
        repo_dir, instrument=cfg.instrument.name,
        site={"name": site.name, "latitude_deg": site.latitude_deg,
              "longitude_deg": site.longitude_deg, "elevation_m": site.elevation_m},
        physical_filters=cfg.instrument.physical_filters, config="hsc",
        extra={"simulation": {"simulator_version": SIMULATOR_VERSION,
                              "preset": ctx.preset.name, "seed": ctx.seed,
                              "tract": ctx.tract_id, "lut": lut_status}})
    summary = {
        "repo": str(repo_dir), "preset": ctx.preset.name, "seed": ctx.seed,
        "visits": int(ctx.schedule.n), "detectors": int(ctx.camera.n_detectors),
        "nights": int(ctx.nights.n), "objects": int(ctx.sky.n),
        "stars": int(ctx.sky.is_star.sum()), "source_rows": int(n_rows),
        "object_observations": int(n_obs_objects),
        "nonphotometric_visits": int((~ctx.clouds.photometric).sum()),
        "seconds_visits": round(t_visits, 2), "seconds_lut": round(t_lut, 2),
        "seconds_total": round(time.perf_counter() - t0, 2), "lut": lut_status,
        "bytes": int(sum(p.stat().st_size for p in repo_dir.rglob("*") if p.is_file())),
    }
    log(f"simulate: {summary}")
    return summary


def _build_lut(ctx, repo_dir: Path, progress: bool) -> str:
    """Build fgcmLookupTable.fits with jaxfgcm.lut (the same atmosphere model and passbands)."""
    try:
        from jaxfgcm.lut import build_lut, save_lut
    except ImportError as exc:  # pragma: no cover - the lut package is part of jaxfgcm
        return f"not built ({exc})"
    # The LUT covers every physical filter of the config; the throughput model has them all.
    lut = build_lut(ctx.config, ctx.throughput, ctx.camera, progress=progress)
    save_lut(lut, repo_dir / R.LUT_FILE)
    return "built"


def _write_truth_tables(ctx, repo_dir: Path) -> None:
    sch, nights, clouds, sky, lib = ctx.schedule, ctx.nights, ctx.clouds, ctx.sky, ctx.library
    atm = nights.atmosphere(sch.night, sch.mjd)
    R.write_truth(repo_dir, "visits", {
        "visit": sch.visit, "night": sch.night, "mjd": sch.mjd,
        "physical_filter": sch.physical_filter, "band": sch.band, "exptime": sch.exptime,
        "pressure": atm["pressure"], "pwv": atm["pwv"], "o3": atm["o3"], "tau": atm["tau"],
        "alpha": atm["alpha"], "secz": sch.secz, "photometric": clouds.photometric,
        "gray": clouds.gray, "gray_grad_x_per_mm": clouds.grad_x,
        "gray_grad_y_per_mm": clouds.grad_y, "seeing_fwhm_arcsec": sch.seeing_fwhm,
        "mirror": ctx.instrument.mirror(sch.mjd),
    })
    R.write_truth(repo_dir, "nights", {
        "night": np.arange(nights.n, dtype=np.int32), "mjd_midnight": nights.mjd_mid,
        "o3": nights.o3, "alpha": nights.alpha, "ln_pwv0": nights.ln_pwv0,
        "ln_pwv_slope_per_day": nights.ln_pwv_slope, "pwv_quad_per_day2": nights.pwv_quad,
        "ln_tau0": nights.ln_tau0, "ln_tau_slope_per_day": nights.ln_tau_slope,
        "pressure0": nights.pressure0, "pressure_slope_per_day": nights.pressure_slope,
    })
    bands = list(ctx.template_std_mag)
    objects = {
        "object_id": sky.object_id, "ra": sky.ra, "dec": sky.dec, "is_star": sky.is_star,
        "sed_index": sky.sed_index, "teff": lib.teff[sky.sed_index], "ref_mag": sky.ref_mag,
        "size_arcsec": sky.size_arcsec, "extendedness": sky.extendedness,
        "blend_partner_id": np.where(sky.blend_partner >= 0,
                                     sky.object_id[np.maximum(sky.blend_partner, 0)], -1),
    }
    for b in bands:
        objects[f"mag_std_{b}"] = sky.ref_mag + ctx.template_std_mag[b][sky.sed_index]
    R.write_truth(repo_dir, "objects", objects)
    im = ctx.instrument
    cam = ctx.camera
    n_f, n_d = len(im.physical_filters), cam.n_detectors
    R.write_truth(repo_dir, "instrument", {
        "physical_filter": np.repeat(np.array(im.physical_filters), n_d),
        "detector": np.tile(cam.ids, n_f).astype(np.int16),
        "detector_offset": im.detector_offset.ravel(),
        "star_flat_c_r2": np.repeat(im.star_flat_coeffs[:, 0], n_d),
        "star_flat_c_x": np.repeat(im.star_flat_coeffs[:, 1], n_d),
        "star_flat_c_y": np.repeat(im.star_flat_coeffs[:, 2], n_d),
        "star_flat_c_xy": np.repeat(im.star_flat_coeffs[:, 3], n_d),
    }, metadata={"mirror_mjd0": repr(im.mirror_mjd0),
                 "mirror_decline_mag_per_day": repr(im.decline_mag_per_day),
                 "zpt_ab_no_throughput": repr(inst.zpt_ab_no_throughput()),
                 "collecting_area_cm2": repr(inst.COLLECTING_AREA_CM2),
                 "gain_e_per_adu": repr(inst.GAIN_E_PER_ADU),
                 "defect_codes": repr(DEFECT)})
    seds = {"wavelength": ctx.wavelength}
    for k in range(lib.n):
        seds[f"fnu_{k:03d}"] = lib.fnu[k]
    R.write_truth(repo_dir, "seds", seds)
    std = {"wavelength": ctx.wavelength}
    for b, s in ctx.std_passbands.items():
        std[f"std_{b}"] = s
    R.write_truth(repo_dir, "standard_passbands", std,
                  metadata={f"lambda_ref_{b}": repr(v) for b, v in ctx.lambda_ref.items()})
