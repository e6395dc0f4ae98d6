"""The products of a tract calibration (docs/products.md), written atomically.

``write_products(result, catalog, lut, config, out_dir)`` writes:

* ``fgcm_stars.parquet`` - standard stars (:mod:`jaxfgcm.output.stars`);
* ``fgcm_photoCalib_tract.parquet`` - per (visit, detector) calibration
  (:mod:`jaxfgcm.output.photocalib`; apply it with :func:`apply_calibration`);
* ``transmission_atmosphere_fgcm_tract.parquet`` - per-visit atmosphere transmission
  (:mod:`jaxfgcm.output.transmission`);
* ``fit_state.npz`` - the fitted parameters and per-exposure quantities;
* ``config.yaml`` - the exact configuration used;
* ``qa/*.png`` - QA plots (with matplotlib, the ``plot`` extra);
* ``summary.json`` - the run record, written **last**: it is the completion marker.

Atomicity: every file is first written into a staging directory ``OUT/.staging-*`` (each file by
temporary name + rename). When all are written, the previous ``summary.json`` is removed, the
files are renamed into ``OUT`` and the new ``summary.json`` is written. A run that fails or is
interrupted therefore never leaves a directory whose summary.json describes products it did not
finish; the staging directory is removed on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxfgcm.output._io import write_yaml
from jaxfgcm.output.inputs import ProductInputs, collect
from jaxfgcm.output.photocalib import (
    apply_calibration,
    photocalib_table,
    read_photocalib,
    write_photocalib,
)
from jaxfgcm.output.stars import stars_table, write_stars
from jaxfgcm.output.summary import device_description, versions, write_summary
from jaxfgcm.output.transmission import transmission_table, write_transmission

__all__ = [
    "PRODUCT_FILES",
    "ProductInputs",
    "apply_calibration",
    "collect",
    "read_photocalib",
    "write_product_files",
    "write_products",
]

log = logging.getLogger("jaxfgcm.output")

FIT_STATE_FILE = "fit_state.npz"
CONFIG_FILE = "config.yaml"
QA_DIR = "qa"
#: The product files, in the order they are moved into place (summary.json comes last).
PRODUCT_FILES = (
    "fgcm_stars.parquet",
    "fgcm_photoCalib_tract.parquet",
    "transmission_atmosphere_fgcm_tract.parquet",
    FIT_STATE_FILE,
    CONFIG_FILE,
)


def write_products(result, catalog, lut, config, out_dir, *, data=None, camera=None,
                   run_info=None, truth=None, plots=True):
    """Write every product of a fit into ``out_dir``; returns (summary dict, notes).

    ``data``: the FitData the fit ran on (rebuilt from the catalog, LUT and ``camera`` if
    omitted). ``run_info``: tract, repository and stage timings for summary.json; ``truth``: the
    recovered-vs-truth figures (simulations) for summary.json.
    """
    if data is None:
        if camera is None:
            raise ValueError("write_products needs data= (the FitData) or camera=")
        from jaxfgcm.fit import FitData

        data = FitData.build(catalog, lut, camera, config)
    inputs = collect(result, catalog, lut, config, data=data, camera=camera, qa=plots)
    return write_product_files(inputs, config, out_dir, lut=lut, camera=camera,
                               run_info=run_info, truth=truth, plots=plots)


def write_product_files(inputs: ProductInputs, config, out_dir, *, lut=None, camera=None,
                        run_info=None, truth=None, plots=True):
    """Write the products from :class:`ProductInputs` (see the module docstring)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_info = dict(run_info or {})
    notes: list[str] = []
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        log.info("products: writing stars, photoCalib, transmission curves and fit state")
        counts = _write_tables(inputs, config, staging, lut)
        _write_fit_state(inputs, staging)
        write_yaml(config.to_dict(), staging / CONFIG_FILE,
                   header="# The exact configuration of this run (jaxfgcm.config).\n")
        qa_files: list[str] = []
        if plots:
            from jaxfgcm.output.plots import make_qa_plots

            log.info("products: QA plots")
            qa_files, note = make_qa_plots(inputs, staging / QA_DIR, camera=camera)
            if note:
                notes.append(note)
                log.info("%s", note)
        run_info.setdefault("timings_s", {})["write_products"] = time.perf_counter() - t0
        summary = build_summary(inputs, config, run_info, counts, truth, qa_files)
        _commit(staging, out_dir, qa=bool(plots))
        if "t_start" in run_info:
            summary["timings_s"]["total"] = time.perf_counter() - run_info["t_start"]
        summary["finished_utc"] = _utc_now()
        write_summary(summary, out_dir)  # last: the completion marker
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("products written to %s (%.1f s)", out_dir, time.perf_counter() - t0)
    return summary, notes


def _write_tables(inputs: ProductInputs, config, staging: Path, lut) -> dict:
    pi = inputs
    write_stars(stars_table(pi.star_id, pi.star_ra, pi.star_dec, pi.bands, pi.star_mag,
                            pi.star_mag_err, pi.star_n_good, pi.star_reserved,
                            lambda_std=pi.band_lambda_std,
                            sed_slope_scale=pi.band_sed_slope_scale), staging)
    write_photocalib(photocalib_table(
        visit=pi.pair_visit, detector=pi.pair_detector, physical_filter=pi.pair_filter(),
        band=pi.pair_band(), mjd=pi.pair_mjd(), exptime=pi.pair_exptime(),
        zeropoint=pi.pair_zeropoint, zeropoint_err=pi.pair_zeropoint_err, flag=pi.pair_flag,
        starflat_coeffs=pi.pair_starflat, bbox=pi.pair_bbox, i0=pi.pair_i0, i10=pi.pair_i10,
        i10_std=pi.pair_i10_std(), gray=pi.pair_gray, n_stars=pi.pair_n_stars), staging)
    wavelength = (np.asarray(lut.wavelength) if lut is not None and hasattr(lut, "wavelength")
                  else _config_wavelength(config))
    lambda_norm = float(getattr(lut, "aerosol_lambda_norm", config.lut.aerosol_lambda_norm))
    write_transmission(transmission_table(
        visit=pi.visit, band=pi.visit_band, physical_filter=pi.visit_filter, mjd=pi.visit_mjd,
        params=pi.visit_atmosphere, wavelength=wavelength, lambda_norm=lambda_norm), staging)
    flags = np.asarray(pi.pair_flag)
    return {
        "n_stars": len(pi.star_id),
        "n_visits": len(pi.visit),
        "n_visit_detectors": int(flags.size),
        "zeropoint_flags": {str(int(f)): int(n) for f, n in
                            zip(*np.unique(flags, return_counts=True))},
    }


def _config_wavelength(config) -> np.ndarray:
    lc = config.lut
    n = round((lc.wavelength_max - lc.wavelength_min) / lc.wavelength_step) + 1
    return lc.wavelength_min + lc.wavelength_step * np.arange(n)


def _write_fit_state(inputs: ProductInputs, staging: Path) -> None:
    from jaxfgcm.repo import atomic_write

    arrays = {f"params/{k}": np.asarray(v) for k, v in inputs.fit_state.items()}
    arrays.update({
        "visit": inputs.visit, "visit_gray": inputs.visit_gray, "visit_flag": inputs.visit_flag,
        "pair_visit": inputs.pair_visit, "pair_detector": inputs.pair_detector,
        "pair_gray": inputs.pair_gray, "pair_zeropoint": inputs.pair_zeropoint,
        "pair_flag": inputs.pair_flag, "repeatability": inputs.repeatability,
        "bands": np.asarray(inputs.bands, dtype=str),
    })
    arrays.update({f"visit_{k}": np.asarray(v) for k, v in inputs.visit_atmosphere.items()})
    # A file handle: np.savez would append .npz to the bare temporary name.
    with atomic_write(staging / FIT_STATE_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_fit_state(path) -> dict[str, np.ndarray]:
    """The arrays of a ``fit_state.npz`` (``params/<name>`` are the FitParams groups)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _commit(staging: Path, out_dir: Path, qa: bool) -> None:
    """Move the staged products into ``out_dir``; the old summary.json goes first."""
    from jaxfgcm.output.summary import FILENAME as SUMMARY

    with contextlib.suppress(FileNotFoundError):
        os.unlink(out_dir / SUMMARY)
    for name in PRODUCT_FILES:
        os.replace(staging / name, out_dir / name)
    if qa:
        new_qa, old_qa = staging / QA_DIR, out_dir / QA_DIR
        if old_qa.exists():
            shutil.rmtree(old_qa)
        if new_qa.exists():
            os.replace(new_qa, old_qa)


def _utc_now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_summary(inputs: ProductInputs, config, run_info: dict, counts: dict, truth,
                  qa_files) -> dict:
    """The summary.json document (docs/products.md lists its keys)."""
    pi = inputs
    rep = np.asarray(pi.repeatability, dtype=np.float64).reshape(-1, len(pi.bands))
    bands = {}
    flag = np.asarray(pi.visit_flag)
    for k, band in enumerate(pi.bands):
        in_band = np.asarray(pi.visit_band) == band
        n_good = np.asarray(pi.star_n_good)[:, k] if len(pi.star_id) else np.zeros(0)
        bands[band] = {
            "n_stars": int(np.sum(n_good > 0)),
            "n_visits": int(np.sum(in_band)),
            "n_photometric_visits": int(np.sum(in_band & (flag == 0))),
            "repeatability": float(rep[-1, k]) if rep.shape[0] else None,
            "repeatability_per_cycle": [float(v) for v in rep[:, k]],
        }
    info = {k: v for k, v in run_info.items() if k != "t_start"}
    return {
        "status": "complete",
        **{k: info.pop(k) for k in ("tract", "repo", "output", "instrument") if k in info},
        "bands": bands,
        "cycles": {"n_cycles": int(pi.n_cycles), "converged": pi.converged,
                   "log": pi.cycle_log},
        "counts": counts,
        "timings_s": {**info.pop("timings_s", {}), **{f"fit.{k}": v for k, v in
                                                     pi.fit_timings.items()}},
        "truth": truth,
        "device": device_description(),
        "versions": versions(),
        "products": list(PRODUCT_FILES) + [f"{QA_DIR}/{f}" for f in qa_files],
        "config_file": CONFIG_FILE,
        **info,
    }
