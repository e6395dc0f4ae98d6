"""Instrument passbands: optics x detector QE x filter(wavelength, radius on the filter).

No atmosphere is included. A passband for a detector is evaluated at the focal-plane radius of
the detector centre (as fgcmcal's FgcmMakeLutTask does); ``passband_at_radius`` evaluates any
radius (e.g. per source in the simulator). Every component is a table on its own wavelength
grid (Angstrom), linearly interpolated and zero outside its table; filter tables are also
linearly interpolated in radius (and held constant beyond their first/last radius).

``hsc_like_throughput`` is an analytic, documented approximation of Hyper Suprime-Cam (see
docs/throughput.md for the equations, numbers and their sources). ``read_throughput`` /
``write_throughput`` handle a repository's ``throughput/`` directory (ECSV files, format 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml
from astropy.table import Table
from scipy.interpolate import PchipInterpolator

from jaxfgcm.atomic import atomic_write
from jaxfgcm.camera import Camera, hsc_like_camera

#: Version of the throughput/ directory format (the ``format_version`` meta of every file).
THROUGHPUT_FORMAT_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


class ThroughputError(ValueError):
    """A throughput file or curve is invalid (the message names the file and the problem)."""


# -------------------------------------------------------------------------------------------
# Interpolation helpers
# -------------------------------------------------------------------------------------------


def _interp_rows(x_new: np.ndarray, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Linear interpolation of every row of ``rows`` (..., n) from x to x_new; 0 outside."""
    x_new = np.asarray(x_new, dtype=np.float64)
    j = np.clip(np.searchsorted(x, x_new, side="right"), 1, x.size - 1)
    x0, x1 = x[j - 1], x[j]
    t = (x_new - x0) / (x1 - x0)
    out = rows[..., j - 1] * (1.0 - t) + rows[..., j] * t
    inside = (x_new >= x[0]) & (x_new <= x[-1])
    return np.where(inside, out, 0.0)


def _check_curve(where: str, wavelength, values, allow_2d: bool = False):
    wl = np.asarray(wavelength, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if wl.ndim != 1 or wl.size < 2:
        raise ThroughputError(f"{where}: wavelength must be 1-D with >= 2 points")
    if not np.all(np.isfinite(wl)) or np.any(np.diff(wl) <= 0):
        raise ThroughputError(f"{where}: wavelength must be finite and strictly increasing")
    if v.shape[-1:] != wl.shape or (v.ndim != 1 and not (allow_2d and v.ndim == 2)):
        raise ThroughputError(
            f"{where}: transmission shape {v.shape} does not match wavelength ({wl.size},)"
        )
    if not np.all(np.isfinite(v)):
        raise ThroughputError(f"{where}: transmission has non-finite values")
    if np.any(v < 0) or np.any(v > 1):
        raise ThroughputError(
            f"{where}: transmission outside [0, 1] (min {v.min():.4g}, max {v.max():.4g})"
        )
    return wl, v


# -------------------------------------------------------------------------------------------
# Curves
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FilterCurve:
    """A filter's transmission tabulated at radii on the filter: ``transmission[r, lambda]``."""

    wavelength: np.ndarray  # (n_l,) Angstrom, float64
    radius_mm: np.ndarray  # (n_r,) mm, increasing, float64
    transmission: np.ndarray  # (n_r, n_l) in [0, 1], float64

    def __post_init__(self) -> None:
        wl, t = _check_curve("filter", self.wavelength, self.transmission, allow_2d=True)
        t = np.atleast_2d(t)
        r = np.atleast_1d(np.asarray(self.radius_mm, dtype=np.float64))
        if r.ndim != 1 or r.size != t.shape[0]:
            raise ThroughputError(f"filter: {r.size} radii for {t.shape[0]} transmission rows")
        if not np.all(np.isfinite(r)) or np.any(r < 0) or np.any(np.diff(r) <= 0):
            raise ThroughputError("filter: radii must be finite, >= 0 and strictly increasing")
        object.__setattr__(self, "wavelength", wl)
        object.__setattr__(self, "radius_mm", r)
        object.__setattr__(self, "transmission", t)

    def __call__(self, wavelength, radius_mm) -> np.ndarray:
        """Transmission at ``radius_mm`` (any shape S): array of shape S + (n_wavelength,)."""
        rows = _interp_rows(wavelength, self.wavelength, self.transmission)  # (n_r, n_l)
        r = np.asarray(radius_mm, dtype=np.float64)
        if self.radius_mm.size == 1:
            return np.broadcast_to(rows[0], r.shape + rows.shape[-1:]).copy()
        k = np.clip(
            np.searchsorted(self.radius_mm, r, side="right") - 1, 0, self.radius_mm.size - 2
        )
        r0, r1 = self.radius_mm[k], self.radius_mm[k + 1]
        t = np.clip((r - r0) / (r1 - r0), 0.0, 1.0)[..., None]
        return rows[k] * (1.0 - t) + rows[k + 1] * t


class Throughput:
    """Instrument response per physical filter and detector (no atmosphere).

    Parameters
    ----------
    camera: the detectors (passbands use each detector's centre radius).
    optics_wavelength, optics: total optics transmission (mirror x corrector x window).
    qe_wavelength, qe: detector QE, shape (n_l,) for all detectors or (n_det, n_l) in the
        order of ``camera.ids``.
    filters: physical filter name -> FilterCurve.
    optics_components: optional named factors of ``optics`` on the same grid (informative).
    """

    def __init__(
        self,
        camera: Camera,
        optics_wavelength,
        optics,
        qe_wavelength,
        qe,
        filters: dict[str, FilterCurve],
        optics_components: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.camera = camera
        self.optics_wavelength, self.optics_transmission = _check_curve(
            "optics", optics_wavelength, optics
        )
        self.qe_wavelength, self.qe_values = _check_curve("qe", qe_wavelength, qe, allow_2d=True)
        if self.qe_values.ndim == 2 and self.qe_values.shape[0] != camera.n_detectors:
            raise ThroughputError(
                f"qe: {self.qe_values.shape[0]} per-detector curves for "
                f"{camera.n_detectors} detectors"
            )
        if not filters:
            raise ThroughputError("no filters")
        for name, curve in filters.items():
            if not _NAME_RE.match(name):
                raise ThroughputError(f"filter name {name!r}: use letters, digits, _ . + -")
            if not isinstance(curve, FilterCurve):
                raise ThroughputError(f"filter {name!r}: expected a FilterCurve")
        self.filters = dict(filters)
        comps = {}
        for name, values in (optics_components or {}).items():
            comps[name] = _check_curve(
                f"optics component {name!r}", self.optics_wavelength, values
            )[1]
        self.optics_components = comps

    # --- components -------------------------------------------------------------------------

    @property
    def physical_filters(self) -> tuple[str, ...]:
        return tuple(self.filters)

    def _filter(self, physical_filter: str) -> FilterCurve:
        try:
            return self.filters[physical_filter]
        except KeyError:
            raise KeyError(
                f"unknown physical filter {physical_filter!r}; known: {self.physical_filters}"
            ) from None

    def optics(self, wavelength) -> np.ndarray:
        """Optics transmission on ``wavelength`` (Angstrom)."""
        return _interp_rows(wavelength, self.optics_wavelength, self.optics_transmission)

    def qe(self, wavelength, detectors=None) -> np.ndarray:
        """QE on ``wavelength`` for ``detectors`` (ids; default all): shape (n_det, n_l)."""
        idx = self._detector_index(detectors)
        q = _interp_rows(wavelength, self.qe_wavelength, self.qe_values)
        return np.broadcast_to(q, (self.camera.n_detectors, q.shape[-1]))[idx]

    def filter_transmission(self, physical_filter: str, wavelength, radius_mm) -> np.ndarray:
        """Filter transmission at radius (shape S): S + (n_l,)."""
        return self._filter(physical_filter)(wavelength, radius_mm)

    def _detector_index(self, detectors) -> np.ndarray:
        if detectors is None:
            return np.arange(self.camera.n_detectors)
        return np.atleast_1d(self.camera.index(detectors))

    # --- passbands --------------------------------------------------------------------------

    def passbands(self, physical_filter: str, wavelength, detectors=None) -> np.ndarray:
        """Total response per detector, (n_det, n_l), filter at each detector's centre radius."""
        idx = self._detector_index(detectors)
        radius = self.camera.centre_radius_mm[idx]
        total = (
            self.optics(wavelength)[None, :]
            * self.qe(wavelength)[idx]
            * self._filter(physical_filter)(wavelength, radius)
        )
        return np.clip(total, 0.0, 1.0)

    def passband(self, physical_filter: str, detector: int, wavelength) -> np.ndarray:
        """Total response of one detector (id), (n_l,)."""
        return self.passbands(physical_filter, wavelength, detectors=[int(detector)])[0]

    def mean_passband(self, physical_filter: str, wavelength) -> np.ndarray:
        """Focal-plane average: the mean of all detectors' passbands (equal-area detectors)."""
        return self.passbands(physical_filter, wavelength).mean(axis=0)

    def passband_at_radius(self, physical_filter: str, wavelength, radius_mm, detector):
        """Total response with the filter at ``radius_mm`` and the QE of ``detector`` (ids).

        ``radius_mm`` and ``detector`` broadcast to a shape S; returns S + (n_l,).
        """
        r, det = np.broadcast_arrays(np.asarray(radius_mm, np.float64), np.asarray(detector))
        idx = self.camera.index(det)
        q = self.qe(wavelength)[idx]
        total = self.optics(wavelength) * q * self._filter(physical_filter)(wavelength, r)
        return np.clip(total, 0.0, 1.0)


# -------------------------------------------------------------------------------------------
# The analytic HSC-like model (docs/throughput.md lists every number and its source)
# -------------------------------------------------------------------------------------------

# Anchor points (Angstrom, value) of the smooth optics and QE curves, joined by monotone
# cubic (PCHIP) interpolation. Published values (physical-inputs.md §1.2, from the NAOJ HSC
# component curves): QE 0.285 at 3600, 0.954 at 6000, 0.609 at 9600 Å, 0.047 at 10600 Å;
# M1 range 0.852-0.976 with the aluminium dip near 8300 Å; corrector 0.715-0.912 (0.755 at
# 3700 Å); window 0.90 at 3300 Å rising to 0.979. Other anchors give a plausible shape.
_M1 = (
    [3000, 4000, 5000, 6000, 7000, 7800, 8300, 8800, 9500, 10500, 12000],
    [0.905, 0.915, 0.91, 0.90, 0.885, 0.862, 0.852, 0.868, 0.905, 0.94, 0.96],
)
_CORRECTOR = (
    [3000, 3700, 4000, 4500, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 12000],
    [0.70, 0.755, 0.82, 0.87, 0.89, 0.905, 0.912, 0.905, 0.89, 0.86, 0.80, 0.715],
)
_WINDOW = (
    [3000, 3300, 4000, 5000, 7000, 9000, 10000, 11500, 12000],
    [0.88, 0.90, 0.95, 0.975, 0.979, 0.978, 0.97, 0.96, 0.955],
)
_QE = (
    [
        3000,
        3600,
        3800,
        4000,
        4500,
        5000,
        6000,
        7000,
        8000,
        8600,
        9000,
        9600,
        10000,
        10300,
        10600,
        11000,
        12000,
    ],
    [
        0.10,
        0.285,
        0.36,
        0.48,
        0.75,
        0.88,
        0.954,
        0.955,
        0.92,
        0.88,
        0.82,
        0.609,
        0.40,
        0.20,
        0.047,
        0.005,
        0.0,
    ],
)


class FilterEdges(NamedTuple):
    """Analytic filter: half-power edges (Angstrom) at r=0, their shift at 280 mm, plateau."""

    blue: float
    red: float
    blue_shift: float
    red_shift: float
    peak: float


#: Filter model per physical filter: 50 %-power edges (Angstrom) at the filter centre, their
#: shift at radius 280 mm (edges move as (r/280)^2), and the plateau transmission. HSC-R at
#: r=0 and 280 mm is Kawanomoto et al. (2018) as quoted in physical-inputs.md §1.2; the other
#: edges are approximate (near the published passbands, adjusted by <= ~70 Å so that the
#: focal-plane-averaged instrument reproduces the published effective wavelengths), and the
#: plateaus set the averaged instrument peaks. See docs/throughput.md.
HSC_FILTER_MODEL: dict[str, FilterEdges] = {
    # name:        blue     red     blue_shift red_shift peak
    "HSC-G": FilterEdges(3960.0, 5430.0, 30.0, 30.0, 0.96),
    "HSC-R": FilterEdges(5416.0, 6971.0, 72.0, 17.0, 0.895),
    "HSC-R2": FilterEdges(5430.0, 6980.0, 15.0, 15.0, 0.97),
    "HSC-I": FilterEdges(6880.0, 8460.0, 60.0, 30.0, 0.893),
    "HSC-I2": FilterEdges(6950.0, 8430.0, 15.0, 15.0, 0.866),
    "HSC-Z": FilterEdges(8520.0, 9320.0, 20.0, 20.0, 0.911),
    "HSC-Y": FilterEdges(9300.0, 10500.0, 20.0, 20.0, 0.97),
}
#: 10-90 % width of each filter edge as a fraction of the edge wavelength (steep interference
#: edges, ~1.2 %).
HSC_EDGE_WIDTH_FRACTION = 0.012
_SHIFT_REFERENCE_RADIUS_MM = 280.0
_LOGISTIC_10_90 = 2.0 * np.log(9.0)  # 10-90 % rise of a logistic, in units of its scale


def _logistic(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free 1 / (1 + exp(-x))


def hsc_filter_transmission(physical_filter: str, wavelength, radius_mm) -> np.ndarray:
    """The analytic HSC-like filter: smooth top hat with radius-dependent edges, S + (n_l,)."""
    p = HSC_FILTER_MODEL[physical_filter]
    lam = np.asarray(wavelength, dtype=np.float64)
    s = (np.asarray(radius_mm, dtype=np.float64)[..., None] / _SHIFT_REFERENCE_RADIUS_MM) ** 2
    blue = p.blue + p.blue_shift * s
    red = p.red + p.red_shift * s
    wb = HSC_EDGE_WIDTH_FRACTION * blue / _LOGISTIC_10_90
    wr = HSC_EDGE_WIDTH_FRACTION * red / _LOGISTIC_10_90
    return p.peak * _logistic((lam - blue) / wb) * _logistic((red - lam) / wr)


def _smooth(anchors, wavelength) -> np.ndarray:
    # PCHIP: smooth, and monotone between anchors (no overshoot); constant beyond the ends.
    x, y = anchors
    lam = np.clip(np.asarray(wavelength, np.float64), x[0], x[-1])
    return np.clip(PchipInterpolator(x, y)(lam), 0.0, 1.0)  # clip round-off (-1e-19)


def hsc_optics_components(wavelength) -> dict[str, np.ndarray]:
    """M1 reflectivity, corrector and dewar-window transmission on ``wavelength``."""
    return {
        name: _smooth(anchors, wavelength)
        for name, anchors in (("m1", _M1), ("corrector", _CORRECTOR), ("window", _WINDOW))
    }


def hsc_qe(wavelength) -> np.ndarray:
    """The HSC-like CCD QE (all detectors alike) on ``wavelength``."""
    return _smooth(_QE, wavelength)


def hsc_like_throughput(
    camera: Camera | None = None,
    radius_step_mm: float = 10.0,
    filter_step: float = 2.0,
) -> Throughput:
    """The analytic HSC-like instrument, tabulated: optics and QE 3000-12000 Å every 10 Å;
    filters every ``filter_step`` Å where any radius exceeds 1e-6, at radii 0..300 mm."""
    camera = hsc_like_camera() if camera is None else camera
    lam = np.arange(3000.0, 12000.0 + 1e-9, 10.0)
    comps = hsc_optics_components(lam)
    optics = comps["m1"] * comps["corrector"] * comps["window"]
    r_max = max(300.0, float(np.hypot(*camera.corners_mm().reshape(-1, 2).T).max()))
    radii = np.arange(0.0, r_max + radius_step_mm - 1e-9, radius_step_mm)
    filters = {}
    fine = np.arange(3000.0, 12000.0 + 1e-9, filter_step)
    for name in HSC_FILTER_MODEL:
        t = hsc_filter_transmission(name, fine, radii)
        keep = np.flatnonzero(t.max(axis=0) > 1e-6)
        sl = slice(max(keep[0] - 1, 0), min(keep[-1] + 2, fine.size))
        filters[name] = FilterCurve(fine[sl], radii, t[:, sl])
    return Throughput(camera, lam, optics, lam, hsc_qe(lam), filters, optics_components=comps)


# -------------------------------------------------------------------------------------------
# throughput/ directory (ECSV)
# -------------------------------------------------------------------------------------------

OPTICS_FILE = "optics.ecsv"
QE_FILE = "qe.ecsv"
FILTER_PREFIX = "filter_"


def _atomic_write_table(table: Table, path: Path) -> None:
    with atomic_write(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)


def _meta(kind: str, **extra) -> dict:
    return {
        "jaxfgcm_dataset": f"throughput/{kind}",
        "format_version": THROUGHPUT_FORMAT_VERSION,
        "wavelength_unit": "Angstrom",
        **extra,
    }


def _radius_column(r: float) -> str:
    return f"r_{r!r}"


def write_throughput(tp: Throughput, directory: str | Path) -> None:
    """Write ``tp`` as ``directory/{optics,qe,filter_<NAME>}.ecsv`` (each file atomically).

    Stale ``filter_*.ecsv`` files for filters not in ``tp`` are removed.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for order, (name, curve) in enumerate(tp.filters.items()):
        cols = {"wavelength": curve.wavelength}
        for k, r in enumerate(curve.radius_mm):
            cols[_radius_column(float(r))] = curve.transmission[k]
        _atomic_write_table(
            Table(
                cols,
                meta=_meta(
                    "filter",
                    physical_filter=name,
                    order=order,
                    radius_mm=[float(r) for r in curve.radius_mm],
                ),
            ),
            d / f"{FILTER_PREFIX}{name}.ecsv",
        )
    qe_cols = {"wavelength": tp.qe_wavelength}
    if tp.qe_values.ndim == 1:
        qe_cols["qe"] = tp.qe_values
    else:
        for det, row in zip(tp.camera.ids, tp.qe_values):
            qe_cols[f"det_{int(det)}"] = row
    _atomic_write_table(Table(qe_cols, meta=_meta("qe")), d / QE_FILE)
    optics_cols = {"wavelength": tp.optics_wavelength, "transmission": tp.optics_transmission}
    optics_cols.update(tp.optics_components)
    _atomic_write_table(Table(optics_cols, meta=_meta("optics")), d / OPTICS_FILE)
    keep = {f"{FILTER_PREFIX}{n}.ecsv" for n in tp.filters}
    for stale in d.glob(f"{FILTER_PREFIX}*.ecsv"):
        if stale.name not in keep:
            stale.unlink()


def _read_table(path: Path, kind: str) -> Table:
    if not path.is_file():
        raise ThroughputError(f"{path}: {kind} file not found")
    try:
        table = Table.read(path, format="ascii.ecsv")
    except (ValueError, TypeError, KeyError, OSError, yaml.YAMLError) as exc:
        # astropy raises all of these for malformed ECSV headers or bodies.
        raise ThroughputError(f"{path}: not a readable ECSV table ({exc})") from None
    version = table.meta.get("format_version")
    if version != THROUGHPUT_FORMAT_VERSION:
        raise ThroughputError(
            f"{path}: format_version {version!r} is not supported "
            f"(expected {THROUGHPUT_FORMAT_VERSION})"
        )
    if "wavelength" not in table.colnames:
        raise ThroughputError(f"{path}: missing column 'wavelength'")
    for name in table.colnames:
        if table[name].dtype.kind not in "fiu" or table[name].ndim != 1:
            raise ThroughputError(f"{path}: column '{name}' is not a numeric column")
        if getattr(table[name], "mask", None) is not None and np.any(table[name].mask):
            raise ThroughputError(f"{path}: column '{name}' has missing values")
    return table


def _column(table: Table, name: str) -> np.ndarray:
    return np.asarray(table[name], dtype=np.float64)


def read_throughput(directory: str | Path, camera: Camera) -> Throughput:
    """Read and validate a ``throughput/`` directory for ``camera``.

    Raises ThroughputError naming the file and the problem.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ThroughputError(f"{d}: throughput directory not found")

    path = d / OPTICS_FILE
    t = _read_table(path, "optics")
    if "transmission" not in t.colnames:
        raise ThroughputError(f"{path}: missing column 'transmission'")
    wl, optics = _check_curve(str(path), _column(t, "wavelength"), _column(t, "transmission"))
    comps = {}
    for name in t.colnames:
        if name not in ("wavelength", "transmission"):
            comps[name] = _check_curve(str(path), wl, _column(t, name))[1]

    path = d / QE_FILE
    t = _read_table(path, "qe")
    qe_wl = _column(t, "wavelength")
    det_cols = [c for c in t.colnames if c.startswith("det_")]
    if "qe" in t.colnames and not det_cols:
        qe = _column(t, "qe")
    elif det_cols and "qe" not in t.colnames:
        expected = {f"det_{int(i)}" for i in camera.ids}
        missing = sorted(expected - set(det_cols))
        extra = sorted(set(det_cols) - expected)
        if missing or extra:
            raise ThroughputError(
                f"{path}: per-detector QE columns do not match the camera "
                f"(missing {missing[:5]}, unknown {extra[:5]})"
            )
        qe = np.stack([_column(t, f"det_{int(i)}") for i in camera.ids])
    else:
        raise ThroughputError(
            f"{path}: needs either one column 'qe' or one 'det_<id>' column per detector"
        )
    qe_wl, qe = _check_curve(str(path), qe_wl, qe, allow_2d=True)

    found = []
    files = sorted(d.glob(f"{FILTER_PREFIX}*.ecsv"))
    if not files:
        raise ThroughputError(f"{d}: no {FILTER_PREFIX}<NAME>.ecsv files")
    for path in files:
        name = path.name[len(FILTER_PREFIX) : -len(".ecsv")]
        t = _read_table(path, "filter")
        if t.meta.get("physical_filter") != name:
            raise ThroughputError(
                f"{path}: meta physical_filter {t.meta.get('physical_filter')!r} does not match "
                f"the file name ({name!r})"
            )
        rcols = [c for c in t.colnames if c != "wavelength"]
        radii = []
        for c in rcols:
            try:
                if not c.startswith("r_"):
                    raise ValueError
                radii.append(float(c[2:]))
            except ValueError:
                raise ThroughputError(
                    f"{path}: column '{c}' is not a radius column 'r_<mm>'"
                ) from None
        if not rcols:
            raise ThroughputError(f"{path}: no radius columns 'r_<mm>'")
        radii = np.array(radii)
        if np.any(np.diff(radii) <= 0) or np.any(radii < 0):
            raise ThroughputError(f"{path}: radius columns must be >= 0 and increasing")
        fw, ft = _check_curve(
            str(path),
            _column(t, "wavelength"),
            np.stack([_column(t, c) for c in rcols]),
            allow_2d=True,
        )
        order = t.meta.get("order", len(files))
        if not isinstance(order, int):
            raise ThroughputError(f"{path}: meta 'order' must be an integer, got {order!r}")
        found.append((order, name, FilterCurve(fw, radii, ft)))
    # Filters keep the order they were written in ('order' meta), then by name.
    filters = {name: curve for _, name, curve in sorted(found, key=lambda f: f[:2])}

    return Throughput(camera, wl, optics, qe_wl, qe, filters, optics_components=comps)
