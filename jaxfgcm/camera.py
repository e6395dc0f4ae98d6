"""Camera geometry: detectors on the focal plane, pixels <-> focal plane <-> sky.

Conventions (docs/throughput.md, "Camera"):

* Pixel coordinates are 0-based with integer values at pixel centres (LSST convention); a
  detector covers ``-0.5 <= x < nx - 0.5`` and ``-0.5 <= y < ny - 0.5``.
* A detector's pixel centre ``((nx-1)/2, (ny-1)/2)`` sits at its focal-plane centre
  ``(x_mm, y_mm)``; its pixel +x axis points along the focal-plane direction ``yaw_deg``
  (counter-clockwise from focal-plane +x).
* Focal plane -> sky is a gnomonic (TAN) projection about the boresight with a constant plate
  scale (no optical distortion). ``rot_deg`` is the position angle of focal-plane +y, measured
  from north through east; focal-plane +x then points to position angle ``rot_deg - 90``
  (west when rot_deg = 0), i.e. the parity of a sky image seen with north up and east left.

``hsc_like_camera()`` is an *approximate*, procedurally built Hyper Suprime-Cam layout
(Miyazaki et al. 2018, PASJ 70, S1; Komiyama et al. 2018, PASJ 70, S2): 104 science CCDs of
2048 x 4176 15-um pixels at 11.2 arcsec/mm (0.168 arcsec/pixel). It is good for
radius-dependent throughput and simulations, not for astrometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.wcs import WCS

from jaxfgcm.atomic import atomic_write

#: Version of the camera.parquet layout written by write_camera (schema metadata key).
CAMERA_FORMAT_VERSION = 1

_COLUMNS = {
    # column: (kind, description) -- kind drives validation on read.
    "id": ("int", "detector id"),
    "name": ("str", "detector name"),
    "is_science": ("bool", "science detector flag"),
    "nx": ("int", "pixels along detector x"),
    "ny": ("int", "pixels along detector y"),
    "pixel_size_mm": ("float", "pixel size (mm)"),
    "x_mm": ("float", "focal-plane x of the detector centre (mm)"),
    "y_mm": ("float", "focal-plane y of the detector centre (mm)"),
    "yaw_deg": ("float", "rotation of detector +x from focal-plane +x (deg, CCW)"),
    "plate_scale_arcsec_per_mm": ("float", "plate scale (arcsec/mm)"),
}


class CameraError(ValueError):
    """A camera file or camera description is invalid (the message names file and column)."""


@dataclass(frozen=True, eq=False)
class Camera:
    """Science detectors of a camera; every per-detector array has length ``n_detectors``.

    Positions are float64: 1e-6 pixel round trips over a 260 mm focal plane (17,000 pixels)
    need ~1e-11 relative precision, far below float32's 6e-8.
    """

    ids: np.ndarray  # int64
    names: np.ndarray  # str
    x_mm: np.ndarray  # float64, focal-plane centre
    y_mm: np.ndarray
    yaw_deg: np.ndarray
    nx: np.ndarray  # int64 pixels
    ny: np.ndarray
    pixel_size_mm: np.ndarray  # float64
    plate_scale_arcsec_per_mm: float

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids, dtype=np.int64)
        n = ids.size
        arrays = {
            "ids": ids,
            "names": np.asarray(self.names, dtype=str),
            "x_mm": np.asarray(self.x_mm, dtype=np.float64),
            "y_mm": np.asarray(self.y_mm, dtype=np.float64),
            "yaw_deg": np.asarray(self.yaw_deg, dtype=np.float64),
            "nx": np.asarray(self.nx, dtype=np.int64),
            "ny": np.asarray(self.ny, dtype=np.int64),
            "pixel_size_mm": np.asarray(self.pixel_size_mm, dtype=np.float64),
        }
        for key, arr in arrays.items():
            if arr.shape != (n,):
                raise CameraError(f"Camera.{key}: shape {arr.shape}, expected ({n},)")
            object.__setattr__(self, key, arr)
        if n == 0:
            raise CameraError("Camera: no detectors")
        if ids.min() < 0 or np.unique(ids).size != n:
            raise CameraError("Camera.ids: detector ids must be unique and >= 0")
        for key in ("x_mm", "y_mm", "yaw_deg", "pixel_size_mm"):
            if not np.all(np.isfinite(arrays[key])):
                raise CameraError(f"Camera.{key}: non-finite values")
        if np.any(arrays["nx"] <= 0) or np.any(arrays["ny"] <= 0):
            raise CameraError("Camera.nx/ny: pixel counts must be positive")
        if np.any(arrays["pixel_size_mm"] <= 0):
            raise CameraError("Camera.pixel_size_mm: must be positive")
        scale = float(self.plate_scale_arcsec_per_mm)
        if not np.isfinite(scale) or scale <= 0:
            raise CameraError("Camera.plate_scale_arcsec_per_mm: must be positive")
        object.__setattr__(self, "plate_scale_arcsec_per_mm", scale)
        # id -> index lookup (ids are small non-negative integers).
        lookup = np.full(ids.max() + 1, -1, dtype=np.int64)
        lookup[ids] = np.arange(n)
        object.__setattr__(self, "_index_of_id", lookup)
        object.__setattr__(self, "_cos_yaw", np.cos(np.deg2rad(arrays["yaw_deg"])))
        object.__setattr__(self, "_sin_yaw", np.sin(np.deg2rad(arrays["yaw_deg"])))
        object.__setattr__(self, "_grid", None)

    # ---------------------------------------------------------------------------------------
    # Basic properties
    # ---------------------------------------------------------------------------------------

    @property
    def n_detectors(self) -> int:
        return int(self.ids.size)

    @property
    def pixel_scale_arcsec(self) -> np.ndarray:
        """Per-detector pixel scale (arcsec/pixel) at the boresight."""
        return self.pixel_size_mm * self.plate_scale_arcsec_per_mm

    @property
    def centre_radius_mm(self) -> np.ndarray:
        """Focal-plane radius of each detector centre (the radius its passband uses)."""
        return np.hypot(self.x_mm, self.y_mm)

    def index(self, detector) -> np.ndarray:
        """Row index of each detector id (raises CameraError for unknown ids)."""
        det = np.asarray(detector, dtype=np.int64)
        ok = (det >= 0) & (det < self._index_of_id.size)
        idx = np.where(ok, self._index_of_id[np.clip(det, 0, self._index_of_id.size - 1)], -1)
        if np.any(idx < 0):
            bad = np.unique(det[idx < 0] if det.ndim else det)[:5]
            raise CameraError(f"unknown detector id(s) {bad.tolist()}")
        return idx

    def corners_mm(self) -> np.ndarray:
        """Focal-plane corners of every detector, shape (n_det, 4, 2) (mm)."""
        hx = 0.5 * self.nx * self.pixel_size_mm
        hy = 0.5 * self.ny * self.pixel_size_mm
        sx = np.array([-1.0, 1.0, 1.0, -1.0])
        sy = np.array([-1.0, -1.0, 1.0, 1.0])
        lx = sx[None, :] * hx[:, None]
        ly = sy[None, :] * hy[:, None]
        c, s = self._cos_yaw[:, None], self._sin_yaw[:, None]
        fx = self.x_mm[:, None] + c * lx - s * ly
        fy = self.y_mm[:, None] + s * lx + c * ly
        return np.stack([fx, fy], axis=-1)

    # ---------------------------------------------------------------------------------------
    # Pixel <-> focal plane
    # ---------------------------------------------------------------------------------------

    def focal_plane(self, detector, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (x, y) on ``detector`` (ids; broadcast with x, y) -> focal plane (mm)."""
        idx = self.index(detector)
        return self._pixel_to_fp(idx, np.asarray(x, np.float64), np.asarray(y, np.float64))

    def pixel(self, detector, fx_mm, fy_mm) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of focal_plane: focal plane (mm) -> pixel (x, y) in ``detector``'s frame."""
        idx = self.index(detector)
        return self._fp_to_pixel(idx, np.asarray(fx_mm, np.float64), np.asarray(fy_mm, np.float64))

    def radius_mm(self, detector, x, y) -> np.ndarray:
        """Focal-plane radius (mm) of pixel (x, y) on ``detector``."""
        fx, fy = self.focal_plane(detector, x, y)
        return np.hypot(fx, fy)

    def _pixel_to_fp(self, idx, x, y):
        p = self.pixel_size_mm[idx]
        lx = (x - 0.5 * (self.nx[idx] - 1)) * p
        ly = (y - 0.5 * (self.ny[idx] - 1)) * p
        c, s = self._cos_yaw[idx], self._sin_yaw[idx]
        return self.x_mm[idx] + c * lx - s * ly, self.y_mm[idx] + s * lx + c * ly

    def _fp_to_pixel(self, idx, fx, fy):
        dx = fx - self.x_mm[idx]
        dy = fy - self.y_mm[idx]
        c, s = self._cos_yaw[idx], self._sin_yaw[idx]
        p = self.pixel_size_mm[idx]
        x = (c * dx + s * dy) / p + 0.5 * (self.nx[idx] - 1)
        y = (-s * dx + c * dy) / p + 0.5 * (self.ny[idx] - 1)
        return x, y

    # ---------------------------------------------------------------------------------------
    # Focal plane <-> sky
    # ---------------------------------------------------------------------------------------

    def _wcs(self, ra0: float, dec0: float, rot_deg: float) -> WCS:
        """TAN WCS whose "pixel" coordinates are focal-plane mm (1-based origin, crpix 0).

        astropy.wcs (wcslib, C) measured ~0.25 s per 10^6 points each way on this machine,
        fast enough for the hot path (scripts/bench_camera.py), so no hand-written projection.
        """
        scale = self.plate_scale_arcsec_per_mm / 3600.0  # deg per mm
        r = np.deg2rad(rot_deg)
        # Columns: sky (xi east, eta north) direction of focal-plane +x (PA rot-90) and +y (PA
        # rot). The RA axis of a TAN WCS increases to the east, so xi enters with a + sign.
        cd = scale * np.array([[-np.cos(r), np.sin(r)], [np.sin(r), np.cos(r)]])
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [float(ra0), float(dec0)]
        w.wcs.crpix = [0.0, 0.0]
        w.wcs.cd = cd
        w.wcs.set()
        return w

    def focal_plane_to_sky(self, fx_mm, fy_mm, ra0, dec0, rot_deg):
        """Focal plane (mm) -> (ra, dec) in degrees, ra in [0, 360)."""
        fx, fy = np.broadcast_arrays(np.asarray(fx_mm, np.float64), np.asarray(fy_mm, np.float64))
        ra, dec = self._wcs(ra0, dec0, rot_deg).wcs_pix2world(fx.ravel(), fy.ravel(), 1)
        return np.mod(ra, 360.0).reshape(fx.shape), dec.reshape(fx.shape)

    def sky_to_focal_plane(self, ra, dec, ra0, dec0, rot_deg):
        """(ra, dec) degrees -> focal plane (mm); NaN for points >= 90 deg from the boresight."""
        ra, dec = np.broadcast_arrays(np.asarray(ra, np.float64), np.asarray(dec, np.float64))
        fx, fy = self._wcs(ra0, dec0, rot_deg).wcs_world2pix(ra.ravel(), dec.ravel(), 1)
        # wcslib projects the far hemisphere too; those points are not in the field.
        d0, a0 = np.deg2rad(dec0), np.deg2rad(ra0)
        rr, dd = np.deg2rad(ra.ravel()), np.deg2rad(dec.ravel())
        cos_c = np.sin(d0) * np.sin(dd) + np.cos(d0) * np.cos(dd) * np.cos(rr - a0)
        fx = np.where(cos_c > 0, fx, np.nan)
        fy = np.where(cos_c > 0, fy, np.nan)
        return fx.reshape(ra.shape), fy.reshape(ra.shape)

    def pixel_to_sky(self, detector, x, y, ra0, dec0, rot_deg):
        """Pixel (x, y) on ``detector`` -> (ra, dec) degrees for the given boresight/rotation."""
        fx, fy = self.focal_plane(detector, x, y)
        return self.focal_plane_to_sky(fx, fy, ra0, dec0, rot_deg)

    def sky_to_pixel(self, ra, dec, ra0, dec0, rot_deg):
        """(ra, dec) degrees -> (detector, x, y); detector -1 (x, y NaN) off every detector."""
        fx, fy = self.sky_to_focal_plane(ra, dec, ra0, dec0, rot_deg)
        return self.detector_at(fx, fy)

    # ---------------------------------------------------------------------------------------
    # Which detector is at a focal-plane position
    # ---------------------------------------------------------------------------------------

    _CELL_MM = 8.0  # lookup-grid cell; a few candidate detectors per cell

    def _lookup_grid(self):
        if self._grid is not None:
            return self._grid
        corners = self.corners_mm()
        lo = corners.reshape(-1, 2).min(axis=0) - self._CELL_MM
        hi = corners.reshape(-1, 2).max(axis=0) + self._CELL_MM
        shape = np.ceil((hi - lo) / self._CELL_MM).astype(int)
        cx = lo[0] + (np.arange(shape[0]) + 0.5) * self._CELL_MM
        cy = lo[1] + (np.arange(shape[1]) + 0.5) * self._CELL_MM
        gx, gy = np.meshgrid(cx, cy, indexing="ij")
        # A detector is a candidate for a cell if the cell centre lies inside the detector
        # rectangle grown by the cell's half-diagonal: a superset of the true overlaps.
        pad = self._CELL_MM / np.sqrt(2.0)
        hits = []
        for i in range(self.n_detectors):  # 104 vector operations over the small grid
            dx, dy = gx - self.x_mm[i], gy - self.y_mm[i]
            lx = self._cos_yaw[i] * dx + self._sin_yaw[i] * dy
            ly = -self._sin_yaw[i] * dx + self._cos_yaw[i] * dy
            hx = 0.5 * self.nx[i] * self.pixel_size_mm[i] + pad
            hy = 0.5 * self.ny[i] * self.pixel_size_mm[i] + pad
            hits.append((np.abs(lx) <= hx) & (np.abs(ly) <= hy))
        hits = np.stack(hits, axis=-1).reshape(-1, self.n_detectors)
        kmax = max(int(hits.sum(axis=1).max()), 1)
        cand = np.full((hits.shape[0], kmax), -1, dtype=np.int64)
        order = np.argsort(~hits, axis=1, kind="stable")[:, :kmax]
        take = np.take_along_axis(hits, order, axis=1)
        cand[take] = order[take]
        grid = (lo, shape, cand)
        object.__setattr__(self, "_grid", grid)
        return grid

    def detector_at(self, fx_mm, fy_mm):
        """Focal plane (mm) -> (detector id, x, y); -1 and NaN where no detector is hit."""
        fx, fy = np.broadcast_arrays(np.asarray(fx_mm, np.float64), np.asarray(fy_mm, np.float64))
        shape = fx.shape
        fx, fy = fx.ravel(), fy.ravel()
        lo, gshape, cand = self._lookup_grid()
        finite = np.isfinite(fx) & np.isfinite(fy)
        ix = np.floor((np.where(finite, fx, lo[0]) - lo[0]) / self._CELL_MM).astype(np.int64)
        iy = np.floor((np.where(finite, fy, lo[1]) - lo[1]) / self._CELL_MM).astype(np.int64)
        inside_grid = finite & (ix >= 0) & (ix < gshape[0]) & (iy >= 0) & (iy < gshape[1])
        cell = np.where(inside_grid, ix * gshape[1] + iy, 0)
        det_index = np.full(fx.size, -1, dtype=np.int64)
        px = np.full(fx.size, np.nan)
        py = np.full(fx.size, np.nan)
        for k in range(cand.shape[1]):  # a few passes (max candidates per cell)
            idx = cand[cell, k]
            todo = inside_grid & (det_index < 0) & (idx >= 0)
            if not np.any(todo):
                continue
            sel = np.flatnonzero(todo)
            di = idx[sel]
            x, y = self._fp_to_pixel(di, fx[sel], fy[sel])
            on = (x >= -0.5) & (x < self.nx[di] - 0.5) & (y >= -0.5) & (y < self.ny[di] - 0.5)
            hit = sel[on]
            det_index[hit] = di[on]
            px[hit] = x[on]
            py[hit] = y[on]
        detector = np.where(det_index >= 0, self.ids[np.maximum(det_index, 0)], -1)
        return detector.reshape(shape), px.reshape(shape), py.reshape(shape)


# -------------------------------------------------------------------------------------------
# The approximate HSC layout
# -------------------------------------------------------------------------------------------

# Published HSC facts (Miyazaki et al. 2018; Komiyama et al. 2018): Hamamatsu 2048 x 4176
# pixel CCDs, 15 um pixels, 11.2 arcsec/mm at prime focus. The gaps and row/column pitches
# below are chosen so that the CCD centres span x within +-223 mm, y -230..+236 mm and
# radius ~29..263 mm, as the real camera's do; they are not the real per-CCD positions.
HSC_NX, HSC_NY = 2048, 4176
HSC_PIXEL_MM = 0.015
HSC_PLATE_SCALE = 11.2
_HSC_GAP_X_MM = 1.13  # between CCDs side by side (short sides)
_HSC_GAP_Y_MM = 4.02  # between CCD rows (long sides meet end to end)
_HSC_ROW0_Y_MM = -230.3  # centre of the lowest CCD row
_HSC_N_COLS, _HSC_N_ROWS = 15, 8
_HSC_N_UPRIGHT = 100


def hsc_like_camera() -> Camera:
    """An approximate HSC focal plane: 100 upright CCDs filling a circle + 4 rotated ones.

    Ids 0..99: upright CCDs (long axis along focal-plane y) ordered by row (y) then x; yaw 0
    for x <= 0 and 180 for x > 0 (as HSC's two readout orientations). Ids 100..103: CCDs
    rotated by 90 deg in the four corners left free by the circular layout.
    """
    w = HSC_NX * HSC_PIXEL_MM
    h = HSC_NY * HSC_PIXEL_MM
    pitch_x = w + _HSC_GAP_X_MM
    pitch_y = h + _HSC_GAP_Y_MM
    cols = np.arange(_HSC_N_COLS) - _HSC_N_COLS // 2
    rows = np.arange(_HSC_N_ROWS)
    gx, gy = np.meshgrid(cols * pitch_x, _HSC_ROW0_Y_MM + rows * pitch_y)
    gx, gy = gx.ravel(), gy.ravel()  # row-major: y then x order
    r = np.hypot(gx, gy)
    # The 100 grid cells closest to the optical axis form the (round) science array.
    keep = np.sort(np.argsort(r, kind="stable")[:_HSC_N_UPRIGHT])
    x, y = gx[keep], gy[keep]
    yaw = np.where(x > 1e-9, 180.0, 0.0)
    rows_kept = np.round((y - _HSC_ROW0_Y_MM) / pitch_y).astype(int)
    cols_kept = np.round(x / pitch_x).astype(int) + _HSC_N_COLS // 2
    names = [f"R{j}C{k:02d}" for j, k in zip(rows_kept, cols_kept)]

    # Four rotated CCDs (long axis along focal-plane x) below/above the second and last-but-one
    # rows, beside the outermost row, as in the real camera (e.g. its CCD 100 at ~(144, -214)).
    half_w, half_h = 0.5 * w, 0.5 * h
    bottom_row = x[rows_kept == 0]
    x_rot = bottom_row.max() + half_w + _HSC_GAP_X_MM + half_h  # clear of the outer row
    y_low = _HSC_ROW0_Y_MM + pitch_y - half_h - _HSC_GAP_Y_MM - half_w
    y_high = _HSC_ROW0_Y_MM + (_HSC_N_ROWS - 2) * pitch_y + half_h + _HSC_GAP_Y_MM + half_w
    rot = [
        (x_rot, y_low, 270.0),
        (-x_rot, y_low, 270.0),
        (-x_rot, y_high, 90.0),
        (x_rot, y_high, 90.0),
    ]
    x = np.concatenate([x, [p[0] for p in rot]])
    y = np.concatenate([y, [p[1] for p in rot]])
    yaw = np.concatenate([yaw, [p[2] for p in rot]])
    names += [f"E{k}" for k in range(len(rot))]
    n = x.size
    return Camera(
        ids=np.arange(n),
        names=np.array(names),
        x_mm=x,
        y_mm=y,
        yaw_deg=yaw,
        nx=np.full(n, HSC_NX),
        ny=np.full(n, HSC_NY),
        pixel_size_mm=np.full(n, HSC_PIXEL_MM),
        plate_scale_arcsec_per_mm=HSC_PLATE_SCALE,
    )


# -------------------------------------------------------------------------------------------
# camera.parquet
# -------------------------------------------------------------------------------------------


def write_camera(camera: Camera, path: str | Path) -> None:
    """Write ``camera`` to a parquet file atomically (one row per detector)."""
    path = Path(path)
    n = camera.n_detectors
    table = pa.table(
        {
            "id": pa.array(camera.ids, pa.int64()),
            "name": pa.array(camera.names.tolist(), pa.string()),
            "is_science": pa.array(np.ones(n, bool)),
            "nx": pa.array(camera.nx, pa.int64()),
            "ny": pa.array(camera.ny, pa.int64()),
            "pixel_size_mm": pa.array(camera.pixel_size_mm, pa.float64()),
            "x_mm": pa.array(camera.x_mm, pa.float64()),
            "y_mm": pa.array(camera.y_mm, pa.float64()),
            "yaw_deg": pa.array(camera.yaw_deg, pa.float64()),
            "plate_scale_arcsec_per_mm": pa.array(
                np.full(n, camera.plate_scale_arcsec_per_mm), pa.float64()
            ),
        }
    ).replace_schema_metadata(
        {"jaxfgcm_dataset": "camera", "format_version": str(CAMERA_FORMAT_VERSION)}
    )
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)


def read_camera(path: str | Path) -> Camera:
    """Read and validate camera.parquet; only rows with ``is_science`` true are kept.

    Raises CameraError naming the file and the column for any problem.
    """
    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise CameraError(f"{path}: camera file not found") from None
    except (OSError, pa.ArrowException) as exc:
        raise CameraError(f"{path}: not a readable parquet file ({exc})") from None
    meta = table.schema.metadata or {}
    version = meta.get(b"format_version")
    if version is not None and version.decode() != str(CAMERA_FORMAT_VERSION):
        raise CameraError(
            f"{path}: unsupported camera format_version {version.decode()!r} "
            f"(this jaxfgcm reads {CAMERA_FORMAT_VERSION})"
        )
    cols = {}
    for name, (kind, what) in _COLUMNS.items():
        if name not in table.column_names:
            raise CameraError(f"{path}: missing column '{name}' ({what})")
        col = table.column(name)
        if col.null_count:
            raise CameraError(f"{path}: column '{name}' has {col.null_count} null value(s)")
        t = col.type
        ok = {
            "int": pa.types.is_integer(t),
            "str": pa.types.is_string(t) or pa.types.is_large_string(t),
            "bool": pa.types.is_boolean(t),
            "float": pa.types.is_floating(t) or pa.types.is_integer(t),
        }[kind]
        if not ok:
            raise CameraError(f"{path}: column '{name}' has type {t}, expected {kind}")
        cols[name] = col.to_numpy(zero_copy_only=False)
    science = cols["is_science"].astype(bool)
    if not np.any(science):
        raise CameraError(f"{path}: column 'is_science': no science detectors")
    cols = {k: v[science] for k, v in cols.items()}
    for name, (kind, _) in _COLUMNS.items():
        if kind == "float" and not np.all(np.isfinite(cols[name].astype(np.float64))):
            raise CameraError(f"{path}: column '{name}' has non-finite values")
    for name in ("nx", "ny", "pixel_size_mm", "plate_scale_arcsec_per_mm"):
        if np.any(cols[name] <= 0):
            raise CameraError(f"{path}: column '{name}' must be positive")
    if np.any(cols["id"] < 0):
        raise CameraError(f"{path}: column 'id' has negative ids")
    if np.unique(cols["id"]).size != cols["id"].size:
        raise CameraError(f"{path}: column 'id' has duplicate detector ids")
    scale = np.unique(cols["plate_scale_arcsec_per_mm"])
    if scale.size != 1:
        raise CameraError(
            f"{path}: column 'plate_scale_arcsec_per_mm' must be the same for all detectors"
        )
    return Camera(
        ids=cols["id"],
        names=cols["name"].astype(str),
        x_mm=cols["x_mm"],
        y_mm=cols["y_mm"],
        yaw_deg=cols["yaw_deg"],
        nx=cols["nx"],
        ny=cols["ny"],
        pixel_size_mm=cols["pixel_size_mm"],
        plate_scale_arcsec_per_mm=float(scale[0]),
    )
