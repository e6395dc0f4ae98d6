"""``fgcm_photoCalib_tract.parquet``: the calibration of every (visit, detector), and applying it.

One row per (visit, detector). The calibration turns a source's instrumental flux (counts, the
``apFlux_12_0_instFlux`` the fit used, local background subtracted) into an AB magnitude in the
band's standard system (docs/products.md):

    m_AB(x, y) = -2.5 log10(instFlux) + zeropoint + starflat(x, y)   [+ delta_chrom]
    starflat(x, y) = sum_ij starflat_coeffs[i, j] T_i(y~) T_j(x~)                (mag)
    x~ = (2 x - (bbox_min_x + bbox_max_x)) / (bbox_max_x - bbox_min_x)    (y~ likewise)
    flux_nJy = instFlux * 10**(-0.4 (zeropoint + starflat(x, y) - 31.4))
    delta_chrom = 2.5 log10((1 + F' i10) / (1 + F' i10_std))    (F': the source's SED slope, 1/A)

``zeropoint`` includes 2.5 log10(exptime), the fitted atmosphere (2.5 log10 I0), throughput,
filter offset and gray; ``calibration_mean`` is the nJy-per-count factor at the bbox centre, as
in LSST's PhotoCalib, and ``calibration_err = (ln 10 / 2.5) calibration_mean zeropoint_err``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.polynomial import chebyshev

from jaxfgcm.output._io import table_metadata, write_parquet

FILENAME = "fgcm_photoCalib_tract.parquet"

#: AB magnitude of 1 nJy: m_AB = -2.5 log10(f / 3631 Jy) = -2.5 log10(f / nJy) + 31.4.
AB_NJY_ZEROPOINT = 31.4

#: Zeropoint flags (fgcm's zpFlagDict, Burke et al. 2018 / fgcm fgcmUtilities): rows with a flag
#: of BAD_FLAG_MIN or more carry no usable calibration.
ZP_FLAGS = {
    1: "PHOTOMETRIC_FIT_EXPOSURE",
    2: "PHOTOMETRIC_NOTFIT_EXPOSURE",
    4: "NONPHOTOMETRIC_FIT_NIGHT",
    8: "NOFIT_NIGHT",
    16: "CANNOT_COMPUTE_ZEROPOINT",
    32: "TOO_FEW_STARS_ON_CCD",
}
BAD_FLAG_MIN = 16

FORMULA = (
    "m_AB = -2.5*log10(instFlux) + zeropoint + starflat(x,y) [+ 2.5*log10((1+F'*i10)/"
    "(1+F'*i10_std))]; starflat = sum_ij starflat_coeffs[i,j] T_i(y~) T_j(x~) (mag, "
    "coefficients row-major (order+1)x(order+1)); x~ = (2x-(bbox_min_x+bbox_max_x))/"
    "(bbox_max_x-bbox_min_x), y~ likewise; flux_nJy = instFlux*10**(-0.4*(zeropoint+"
    "starflat(x,y)-31.4)); instFlux: counts, local background subtracted; rows with "
    "flag >= 16 have no usable calibration"
)


class PhotoCalibError(ValueError):
    """A photoCalib table or a source table cannot be used (the message says why)."""


def photocalib_table(
    *,
    visit,
    detector,
    physical_filter,
    band,
    mjd,
    exptime,
    zeropoint,
    zeropoint_err,
    flag,
    starflat_coeffs,
    bbox,
    i0,
    i10,
    i10_std,
    gray,
    n_stars=None,
) -> pa.Table:
    """Assemble the product table from per-row arrays (n rows).

    ``starflat_coeffs``: (n, k, k) Chebyshev coefficients in mag, [y-order, x-order];
    ``bbox``: (n, 4) ``min_x, min_y, max_x, max_y`` in pixels (the Chebyshev domain).
    """
    n = len(visit)
    coeffs = np.asarray(starflat_coeffs, dtype=np.float64)
    if coeffs.ndim != 3 or coeffs.shape[0] != n or coeffs.shape[1] != coeffs.shape[2]:
        raise PhotoCalibError(f"starflat_coeffs must be (n, k, k), got {coeffs.shape}")
    bbox = np.asarray(bbox, dtype=np.float64).reshape(n, 4)
    zp = np.asarray(zeropoint, dtype=np.float64)
    zp_err = np.asarray(zeropoint_err, dtype=np.float64)
    centre = _starflat_at(coeffs, bbox, (bbox[:, 0] + bbox[:, 2]) / 2, (bbox[:, 1] + bbox[:, 3]) / 2)
    mean = 10.0 ** (-0.4 * (zp + centre - AB_NJY_ZEROPOINT))
    order = coeffs.shape[1] - 1
    # float64 for zeropoints and calibration factors: they are used at sub-mmag precision on
    # magnitudes near 30; float32 would round them at the 2e-6 mag level, needlessly.
    cols = {
        "visit": pa.array(np.asarray(visit, dtype=np.int64)),
        "detector": pa.array(np.asarray(detector, dtype=np.int32)),
        "physical_filter": pa.array([str(f) for f in physical_filter], pa.string()),
        "band": pa.array([str(b) for b in band], pa.string()),
        "mjd": pa.array(np.asarray(mjd, dtype=np.float64)),
        "exptime": pa.array(np.asarray(exptime, dtype=np.float64)),
        "flag": pa.array(np.asarray(flag, dtype=np.int32)),
        "zeropoint": pa.array(zp),
        "zeropoint_err": pa.array(zp_err),
        "zeropoint_center": pa.array(zp + centre),
        "calibration_mean": pa.array(mean),
        "calibration_err": pa.array(np.log(10.0) / 2.5 * mean * zp_err),
        "starflat_order": pa.array(np.full(n, order, dtype=np.int32)),
        "starflat_coeffs": pa.array(list(coeffs.reshape(n, -1)), pa.list_(pa.float64())),
        "bbox_min_x": pa.array(bbox[:, 0]),
        "bbox_min_y": pa.array(bbox[:, 1]),
        "bbox_max_x": pa.array(bbox[:, 2]),
        "bbox_max_y": pa.array(bbox[:, 3]),
        "i0": pa.array(np.asarray(i0, dtype=np.float64)),
        "i10": pa.array(np.asarray(i10, dtype=np.float64)),
        "i10_std": pa.array(np.asarray(i10_std, dtype=np.float64)),
        "gray": pa.array(np.asarray(gray, dtype=np.float64)),
    }
    if n_stars is not None:
        cols["n_stars"] = pa.array(np.asarray(n_stars, dtype=np.int32))
    table = pa.table(cols)
    flags = "; ".join(f"{k} {v}" for k, v in ZP_FLAGS.items())
    return table_metadata(table, {"formula": FORMULA, "flags": flags, "product": "photoCalib"})


def write_photocalib(table: pa.Table, out_dir: str | Path) -> Path:
    return write_parquet(table, Path(out_dir) / FILENAME)


def read_photocalib(path: str | Path) -> pa.Table:
    """Read a photoCalib product, checking that the columns ``apply_calibration`` needs exist."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise PhotoCalibError(f"{path}: cannot read photoCalib parquet ({exc})") from exc
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise PhotoCalibError(f"{path}: not a jaxfgcm photoCalib table (missing {missing})")
    return table


_REQUIRED = (
    "visit", "detector", "flag", "zeropoint", "zeropoint_err", "starflat_coeffs",
    "bbox_min_x", "bbox_min_y", "bbox_max_x", "bbox_max_y", "i10", "i10_std",
)


def starflat(photocalib, row_index, x, y) -> np.ndarray:
    """The star-flat term (mag) of photoCalib rows ``row_index`` at pixel positions x, y."""
    pc = _as_columns(photocalib)
    coeffs, bbox = _coeffs_and_bbox(pc)
    idx = np.asarray(row_index)
    return _starflat_at(coeffs[idx], bbox[idx], np.asarray(x, float), np.asarray(y, float))


def apply_calibration(
    table,
    photocalib,
    *,
    flux_field: str = "apFlux_12_0",
    sed_slope=None,
    local_background_radius_px: float | None = 12.0,
    max_flag: int = BAD_FLAG_MIN - 1,
) -> dict[str, np.ndarray]:
    """Calibrate a source table (LSST ``sourceTable_visit`` columns) with a photoCalib product.

    ``table``: anything indexable by column name (pyarrow Table, dict of arrays, DataFrame)
    holding ``visit, detector, x, y, <flux_field>_instFlux`` and optionally
    ``<flux_field>_instFluxErr`` and ``localBackground_instFlux``. ``photocalib``: the product
    (pyarrow Table or path). The local background times pi r^2 is subtracted first, as the fit
    did (HSC: r = 12 px; ``None`` to skip). ``sed_slope`` (F', 1/Angstrom, per source) adds the
    chromatic correction to the band's standard passband; without it the result is exact for
    sources whose SED slope is zero and off by delta_chrom for others.

    Returns ``mag``, ``magErr`` (AB), ``flux_nJy``, ``fluxErr_nJy`` and ``flag`` (the row's
    zeropoint flag, 0 where the table has no row). Sources without a usable calibration (no row
    or ``flag > max_flag``) get NaN. Errors add the zeropoint error in quadrature.
    """
    if isinstance(photocalib, (str, Path)):
        photocalib = read_photocalib(photocalib)
    pc = _as_columns(photocalib)
    missing = [c for c in _REQUIRED if c not in pc]
    if missing:
        raise PhotoCalibError(f"photocalib table lacks columns {missing}")
    visit = _column(table, "visit").astype(np.int64)
    detector = _column(table, "detector").astype(np.int64)
    flux = _column(table, f"{flux_field}_instFlux").astype(np.float64)
    x = _column(table, "x").astype(np.float64)
    y = _column(table, "y").astype(np.float64)
    if local_background_radius_px is not None and _has(table, "localBackground_instFlux"):
        background = _column(table, "localBackground_instFlux").astype(np.float64)
        flux = flux - np.pi * local_background_radius_px**2 * background

    row, found = _match_rows(pc, visit, detector)
    safe = np.where(found, row, 0)
    flag = np.where(found, np.asarray(pc["flag"])[safe], 0).astype(np.int32)
    usable = found & (flag <= max_flag) & (flag > 0)

    coeffs, bbox = _coeffs_and_bbox(pc)
    zp = np.asarray(pc["zeropoint"], dtype=np.float64)[safe]
    zp_err = np.asarray(pc["zeropoint_err"], dtype=np.float64)[safe]
    total = zp + _starflat_at(coeffs[safe], bbox[safe], x, y)
    if sed_slope is not None:
        fp = np.broadcast_to(np.asarray(sed_slope, dtype=np.float64), flux.shape)
        i10 = np.asarray(pc["i10"], dtype=np.float64)[safe]
        i10_std = np.asarray(pc["i10_std"], dtype=np.float64)[safe]
        total = total + 2.5 * np.log10((1.0 + fp * i10) / (1.0 + fp * i10_std))
    total = np.where(usable, total, np.nan)

    with np.errstate(invalid="ignore", divide="ignore"):
        mag = -2.5 * np.log10(flux) + total
        flux_njy = flux * 10.0 ** (-0.4 * (total - AB_NJY_ZEROPOINT))
        out = {"mag": mag, "flux_nJy": flux_njy, "flag": flag}
        if _has(table, f"{flux_field}_instFluxErr"):
            flux_err = _column(table, f"{flux_field}_instFluxErr").astype(np.float64)
            rel = flux_err / flux
            out["magErr"] = np.hypot(2.5 / np.log(10.0) * rel, np.where(usable, zp_err, np.nan))
            out["fluxErr_nJy"] = np.abs(flux_njy) * np.hypot(rel, np.log(10.0) / 2.5 * zp_err)
    return out


# --------------------------------------------------------------------------------------------


def _starflat_at(coeffs, bbox, x, y) -> np.ndarray:
    """Per-row Chebyshev series c[i, j] T_i(y~) T_j(x~) for rows of (coeffs, bbox) and points."""
    order = coeffs.shape[-1] - 1
    # Positions outside the domain are clipped to its edge, as the fit does (jaxfgcm.fit.data).
    xt = np.clip((2.0 * x - (bbox[..., 0] + bbox[..., 2])) / (bbox[..., 2] - bbox[..., 0]), -1, 1)
    yt = np.clip((2.0 * y - (bbox[..., 1] + bbox[..., 3])) / (bbox[..., 3] - bbox[..., 1]), -1, 1)
    vx = chebyshev.chebvander(xt, order)
    vy = chebyshev.chebvander(yt, order)
    return np.einsum("...i,...ij,...j->...", vy, coeffs, vx)


def _coeffs_and_bbox(pc) -> tuple[np.ndarray, np.ndarray]:
    flat = [np.asarray(c, dtype=np.float64) for c in pc["starflat_coeffs"]]
    kmax = max((round(np.sqrt(c.size)) for c in flat), default=1)
    coeffs = np.zeros((len(flat), kmax, kmax))
    for i, c in enumerate(flat):  # rows of lower order are zero-padded (same series)
        k = round(np.sqrt(c.size))
        if k * k != c.size:
            raise PhotoCalibError(f"photocalib row {i}: starflat_coeffs size {c.size} not square")
        coeffs[i, :k, :k] = c.reshape(k, k)
    bbox = np.stack(
        [np.asarray(pc[k], dtype=np.float64) for k in
         ("bbox_min_x", "bbox_min_y", "bbox_max_x", "bbox_max_y")], axis=-1)
    return coeffs, bbox


def _match_rows(pc, visit, detector) -> tuple[np.ndarray, np.ndarray]:
    """Row of (visit, detector) in the photoCalib table, and whether it exists."""
    pv = np.asarray(pc["visit"], dtype=np.int64)
    pd = np.asarray(pc["detector"], dtype=np.int64)
    # Packed keys: detector ids are small (HSC < 112), visits fit in 40 bits.
    key = pv * 4096 + pd
    order = np.argsort(key, kind="stable")
    skey = key[order]
    want = visit * 4096 + detector
    pos = np.clip(np.searchsorted(skey, want), 0, max(skey.size - 1, 0))
    if skey.size == 0:
        return np.zeros(want.shape, np.int64), np.zeros(want.shape, bool)
    found = skey[pos] == want
    return order[pos], found


def _as_columns(photocalib) -> dict:
    if isinstance(photocalib, pa.Table):
        cols = {}
        for name in photocalib.column_names:
            col = photocalib.column(name)
            cols[name] = col.to_pylist() if pa.types.is_list(col.type) else col.to_numpy()
        return cols
    return dict(photocalib)


def _has(table, name: str) -> bool:
    if isinstance(table, pa.Table):
        return name in table.column_names
    try:
        return name in table
    except TypeError:
        return False


def _column(table, name: str) -> np.ndarray:
    if not _has(table, name):
        raise PhotoCalibError(f"source table lacks column '{name}'")
    col = table.column(name) if isinstance(table, pa.Table) else table[name]
    if isinstance(col, pa.ChunkedArray):
        col = col.to_numpy()
    return np.asarray(col)
