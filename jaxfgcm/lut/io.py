"""The look-up table file: one versioned FITS file (astropy), written atomically.

Layout (format ``jaxfgcm-lut``, version :data:`FORMAT_VERSION`; docs/lut.md, "File format"):

- PRIMARY: header only: ``JFGCMLUT='jaxfgcm-lut'``, ``FMTVER``, ``ATMMODEL``, ``BUILDSEC``,
  ``LAMNORM`` (aerosol lambda_norm, A), ``LAMSTEP`` (A), standard atmosphere ``STD*``.
- ``I0``, ``I10``: float32 images of shape (n_filter, n_detector + 1, *grid) in NumPy order
  (the FITS NAXIS order is reversed); I10 in Angstrom.
- ``FILTERS``: physical_filter, band, std_filter, i0_std, i10_std, i2_std, lambda_std,
  lambda_std_filter, lambda_b (one row per filter, in table order).
- ``DETECTORS``: detector_id (slot order; the focal-plane-mean slot is the last, implicit).
- ``AXES``: name, coordinate, cubic, n, min, max, nodes (NaN padded), in table axis order.
- ``STDATM``: wavelength (A) and the standard atmosphere transmission.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from jaxfgcm.atomic import atomic_write
from jaxfgcm.lut.build import (
    FORMAT_VERSION,
    LookupTable,
    config_wavelength,
    standard_parameters,
)
from jaxfgcm.lut.grid import AXIS_NAMES, Axis, axes_from_config

FORMAT_NAME = "jaxfgcm-lut"
_STD_KEYS = {"pressure": "STDPRES", "pwv": "STDPWV", "o3": "STDO3", "tau": "STDTAU",
             "alpha": "STDALPHA", "secz": "STDSECZ"}


class LutFormatError(ValueError):
    """A LUT file is unreadable, foreign, of another format version, or inconsistent."""


class LutMismatchError(ValueError):
    """A LUT file does not match the configuration or camera it is used with."""


def save_lut(lut: LookupTable, path) -> None:
    """Write ``lut`` to ``path`` (FITS), atomically: a temporary file, then os.replace."""
    path = Path(path)
    primary = fits.PrimaryHDU()
    h = primary.header
    h["JFGCMLUT"] = (FORMAT_NAME, "jaxfgcm look-up table of passband integrals")
    h["FMTVER"] = (FORMAT_VERSION, "format version")
    h["ATMMODEL"] = (lut.atmosphere_model, "atmosphere model class")
    h["BUILDSEC"] = (float(lut.build_seconds) if math.isfinite(lut.build_seconds) else -1.0,
                     "build time (s)")
    h["LAMNORM"] = (lut.aerosol_lambda_norm, "aerosol normalisation wavelength (A)")
    h["LAMSTEP"] = (lut.wavelength_step, "wavelength step (A)")
    for name, key in _STD_KEYS.items():
        h[key] = (float(lut.std_atmosphere[name]), f"standard atmosphere {name}")

    filters = Table(
        {
            "physical_filter": list(lut.physical_filters),
            "band": list(lut.bands),
            "std_filter": list(lut.std_filters),
            "i0_std": lut.i0_std,
            "i10_std": lut.i10_std,
            "i2_std": lut.i2_std,
            "lambda_std": lut.lambda_std,
            "lambda_std_filter": lut.lambda_std_filter,
            "lambda_b": lut.lambda_b,
        }
    )
    n_max = max(a.n for a in lut.axes)
    nodes = np.full((len(lut.axes), n_max), np.nan)
    for i, a in enumerate(lut.axes):
        nodes[i, : a.n] = a.nodes
    axes = Table(
        {
            "name": [a.name for a in lut.axes],
            "coordinate": [a.coordinate for a in lut.axes],
            "cubic": [bool(a.cubic) for a in lut.axes],
            "n": [a.n for a in lut.axes],
            "min": [float(a.nodes[0]) for a in lut.axes],
            "max": [float(a.nodes[-1]) for a in lut.axes],
            "nodes": nodes,
        }
    )
    hdus = fits.HDUList(
        [
            primary,
            fits.ImageHDU(np.asarray(lut.i0, np.float32), name="I0"),
            fits.ImageHDU(np.asarray(lut.i10, np.float32), name="I10"),
            _table_hdu(filters, "FILTERS"),
            _table_hdu(Table({"detector_id": np.asarray(lut.detector_ids, np.int64)}),
                       "DETECTORS"),
            _table_hdu(axes, "AXES"),
            _table_hdu(
                Table({"wavelength": lut.wavelength, "transmission": lut.std_transmission}),
                "STDATM",
            ),
        ]
    )
    with atomic_write(path) as tmp:
        hdus.writeto(tmp, overwrite=True)


def _table_hdu(table: Table, name: str) -> fits.BinTableHDU:
    hdu = fits.table_to_hdu(table)
    hdu.name = name
    return hdu


def load_lut(path, config=None, camera=None) -> LookupTable:
    """Read a LUT file; with ``config``/``camera``, check that it was built for them.

    Raises LutFormatError (unreadable, foreign or inconsistent file) or LutMismatchError
    (physical filters, grid, wavelengths or standard atmosphere differ from ``config``, or the
    detector ids from ``camera``); both messages name the file and what is wrong.
    """
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdus:
            lut = _read(hdus, path)
    except (LutFormatError, LutMismatchError):
        raise
    except FileNotFoundError:
        raise LutFormatError(f"{path}: LUT file not found") from None
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError on corrupt input
        raise LutFormatError(f"{path}: not a readable LUT FITS file ({exc})") from exc
    problems = []
    if config is not None:
        problems += _config_differences(lut, config)
    if camera is not None:
        ids = np.asarray(camera.ids, dtype=np.int64)
        if ids.shape != lut.detector_ids.shape or np.any(np.sort(ids) != np.sort(lut.detector_ids)):
            extra = np.setdiff1d(lut.detector_ids, ids)
            missing = np.setdiff1d(ids, lut.detector_ids)
            problems.append(
                f"detector ids: camera has {ids.size}, LUT has {lut.detector_ids.size} "
                f"(missing from LUT: {missing[:10].tolist()}, not in camera: {extra[:10].tolist()})"
            )
    if problems:
        raise LutMismatchError(f"{path}: LUT does not match: " + "; ".join(problems))
    return lut


def _read(hdus, path: Path) -> LookupTable:
    h = hdus[0].header
    if h.get("JFGCMLUT") != FORMAT_NAME:
        raise LutFormatError(f"{path}: not a jaxfgcm look-up table (no JFGCMLUT='{FORMAT_NAME}')")
    version = h.get("FMTVER")
    if version != FORMAT_VERSION:
        raise LutFormatError(
            f"{path}: LUT format version {version}, this jaxfgcm reads version {FORMAT_VERSION}; "
            "rebuild it with python -m jaxfgcm.make_lut"
        )
    names = {hdu.name for hdu in hdus}
    missing = [n for n in ("I0", "I10", "FILTERS", "DETECTORS", "AXES", "STDATM") if n not in names]
    if missing:
        raise LutFormatError(f"{path}: missing HDU(s) {missing}")
    filters = Table.read(hdus["FILTERS"])
    dets = Table.read(hdus["DETECTORS"])
    axes_t = Table.read(hdus["AXES"])
    std = Table.read(hdus["STDATM"])
    i0 = np.asarray(hdus["I0"].data, dtype=np.float32)
    i10 = np.asarray(hdus["I10"].data, dtype=np.float32)

    if [str(n) for n in axes_t["name"]] != list(AXIS_NAMES):
        raise LutFormatError(f"{path}: AXES names {list(axes_t['name'])} != {list(AXIS_NAMES)}")
    axes = []
    for row in axes_t:
        n = int(row["n"])
        axes.append(Axis(str(row["name"]), str(row["coordinate"]),
                         np.asarray(row["nodes"][:n], np.float64), cubic=bool(row["cubic"])))
    n_f, n_d = len(filters), len(dets)
    shape = (n_f, n_d + 1) + tuple(a.n for a in axes)
    for name, arr in (("I0", i0), ("I10", i10)):
        if arr.shape != shape:
            raise LutFormatError(f"{path}: {name} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(i0)) or np.any(i0 <= 0) or not np.all(np.isfinite(i10)):
        raise LutFormatError(f"{path}: I0/I10 contain non-finite or non-positive I0 values")
    for a in axes:
        if a.n < 1 or not np.all(np.isfinite(a.nodes)) or np.any(np.diff(a.nodes) <= 0):
            raise LutFormatError(f"{path}: axis {a.name} nodes are not finite and increasing")

    def col(name):
        return np.asarray(filters[name], dtype=np.float64)

    wavelength = np.asarray(std["wavelength"], np.float64)
    return LookupTable(
        physical_filters=tuple(str(f) for f in filters["physical_filter"]),
        bands=tuple(str(b) for b in filters["band"]),
        std_filters=tuple(str(f) for f in filters["std_filter"]),
        detector_ids=np.asarray(dets["detector_id"], np.int64),
        axes=tuple(axes),
        wavelength=wavelength,
        i0=i0,
        i10=i10,
        i0_std=col("i0_std"),
        i10_std=col("i10_std"),
        i2_std=col("i2_std"),
        lambda_std=col("lambda_std"),
        lambda_std_filter=col("lambda_std_filter"),
        lambda_b=col("lambda_b"),
        std_atmosphere={name: float(h[key]) for name, key in _STD_KEYS.items()},
        std_transmission=np.asarray(std["transmission"], np.float64),
        aerosol_lambda_norm=float(h["LAMNORM"]),
        wavelength_step=float(h["LAMSTEP"]),
        atmosphere_model=str(h.get("ATMMODEL", "")),
        build_seconds=float(h.get("BUILDSEC", float("nan"))),
        format_version=int(version),
    )


def _close(a, b) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _config_differences(lut: LookupTable, config) -> list[str]:
    """Human-readable differences between a LUT and what ``config`` would build."""
    out = []
    want = dict(config.instrument.physical_filters)
    have = dict(zip(lut.physical_filters, lut.bands))
    if want != have:
        out.append(f"physical filters -> bands: config {want}, LUT {have}")
    else:
        std_want = {f: config.instrument.std_physical_filters.get(b) for f, b in want.items()}
        std_have = dict(zip(lut.physical_filters, lut.std_filters))
        if std_want != std_have:
            out.append(f"standard filters: config {std_want}, LUT {std_have}")
    try:
        axes = axes_from_config(config.lut)
    except ValueError as exc:
        out.append(str(exc))
        axes = ()
    for want_ax, have_ax in zip(axes, lut.axes):
        same = (
            want_ax.n == have_ax.n
            and want_ax.coordinate == have_ax.coordinate
            and want_ax.cubic == have_ax.cubic
            and np.allclose(want_ax.nodes, have_ax.nodes, rtol=1e-9, atol=0)
        )
        if not same:
            out.append(
                f"lut.{want_ax.name}: config ({want_ax.nodes[0]:g}..{want_ax.nodes[-1]:g}, "
                f"n={want_ax.n}, {want_ax.coordinate}) vs LUT ({have_ax.nodes[0]:g}.."
                f"{have_ax.nodes[-1]:g}, n={have_ax.n}, {have_ax.coordinate})"
            )
    try:
        lam = config_wavelength(config.lut)
    except ValueError as exc:
        out.append(str(exc))
        lam = None
    if lam is not None and (lam.shape != lut.wavelength.shape
                            or not np.allclose(lam, lut.wavelength, rtol=0, atol=1e-6)):
        out.append(
            f"wavelength grid: config {lam[0]:g}..{lam[-1]:g} ({lam.size}), LUT "
            f"{lut.wavelength[0]:g}..{lut.wavelength[-1]:g} ({lut.wavelength.size})"
        )
    if not _close(config.lut.aerosol_lambda_norm, lut.aerosol_lambda_norm):
        out.append(f"lut.aerosol_lambda_norm: config {config.lut.aerosol_lambda_norm:g}, "
                   f"LUT {lut.aerosol_lambda_norm:g}")
    for name, value in standard_parameters(config).items():
        if not _close(value, lut.std_atmosphere[name]):
            key = "airmass" if name == "secz" else name
            out.append(f"standard_atmosphere.{key}: config {value:g}, "
                       f"LUT {lut.std_atmosphere[name]:g}")
    return out
