"""``fgcm_stars.parquet``: the calibrated standard stars of the tract.

One row per star: ``star_id, ra, dec`` and, per band b, ``mag_<b>`` (standard AB magnitude:
the error-weighted mean of the star's photometric observations brought to the band's standard
passband), ``magErr_<b>`` and ``nGood_<b>`` (observations used). A band without a measurement
has NaN magnitude and error and nGood 0 (fgcm writes 99; NaN cannot be mistaken for a star).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from jaxfgcm.output._io import table_metadata, write_parquet

FILENAME = "fgcm_stars.parquet"


def stars_table(star_id, ra, dec, bands, mag, mag_err, n_good, reserved=None,
                lambda_std=None, sed_slope_scale=None) -> pa.Table:
    """``mag``, ``mag_err``, ``n_good``: (n_star, n_band) arrays in ``bands`` order;
    ``lambda_std`` and ``sed_slope_scale`` (per band) go to the metadata for :func:`sed_slopes`."""
    mag = np.asarray(mag, dtype=np.float64)
    mag_err = np.asarray(mag_err, dtype=np.float64)
    n_good = np.asarray(n_good)
    n = len(star_id)
    if mag.shape != (n, len(bands)) or mag_err.shape != mag.shape or n_good.shape != mag.shape:
        raise ValueError(
            f"stars: mag/mag_err/n_good must be (n_star={n}, n_band={len(bands)}), got "
            f"{mag.shape}, {mag_err.shape}, {n_good.shape}")
    # No measurement (fgcm's 99 sentinel, non-finite, or no good observation) -> NaN.
    missing = ~np.isfinite(mag) | (mag >= 90.0) | (n_good <= 0)
    cols = {
        "star_id": pa.array(np.asarray(star_id, dtype=np.int64)),
        "ra": pa.array(np.asarray(ra, dtype=np.float64)),
        "dec": pa.array(np.asarray(dec, dtype=np.float64)),
    }
    for k, band in enumerate(bands):
        cols[f"mag_{band}"] = pa.array(np.where(missing[:, k], np.nan, mag[:, k]))
        cols[f"magErr_{band}"] = pa.array(np.where(missing[:, k], np.nan, mag_err[:, k]))
        cols[f"nGood_{band}"] = pa.array(np.where(missing[:, k], 0, n_good[:, k]).astype(np.int32))
    if reserved is not None:
        cols["reserved"] = pa.array(np.asarray(reserved, dtype=bool))
    table = pa.table(cols)
    meta = {
        "product": "standard stars",
        "bands": ",".join(bands),
        "units": "mag_<band>: standard magnitude (absolute level: docs/products.md); NaN where "
                 "not measured",
    }
    if lambda_std is not None:
        meta["lambda_std"] = ",".join(f"{float(v):.3f}" for v in lambda_std)
    if sed_slope_scale is not None:
        meta["sed_slope_scale"] = ",".join(f"{float(v):.6g}" for v in sed_slope_scale)
    return table_metadata(table, meta)


def write_stars(table: pa.Table, out_dir: str | Path) -> Path:
    return write_parquet(table, Path(out_dir) / FILENAME)


def sed_slopes(stars) -> dict[str, np.ndarray]:
    """SED slope F' (1/Angstrom) per star and band from the standard magnitudes of a
    ``fgcm_stars`` table (or its path), with the fit's own formula
    (:func:`jaxfgcm.fit.model.sed_slopes`: mean of the slopes to the neighbouring bands; stars
    without colours get the band's median), times the fit's per-band SED-slope scale (config
    ``fit.sed_slope_scale``, stored in the table). Feed it to
    ``apply_calibration(sed_slope=...)``.
    """
    import jax.numpy as jnp

    from jaxfgcm.fit.model import sed_slopes as model_sed_slopes

    if not isinstance(stars, pa.Table):
        import pyarrow.parquet as pq

        stars = pq.read_table(stars)
    meta = {k.decode(): v.decode() for k, v in (stars.schema.metadata or {}).items()}
    if "jaxfgcm.lambda_std" not in meta:
        raise ValueError("stars table has no 'jaxfgcm.lambda_std' metadata (not a jaxfgcm "
                         "fgcm_stars product)")
    bands = meta["jaxfgcm.bands"].split(",")
    lam = np.array([float(v) for v in meta["jaxfgcm.lambda_std"].split(",")])
    mags = np.column_stack([stars.column(f"mag_{b}").to_numpy() for b in bands])
    n, nb = mags.shape
    # The model works on (star, band) segments; here every (star, band) is one.
    seg = _Segments(band_lambda_std=jnp.asarray(lam), sb_star=jnp.repeat(jnp.arange(n), nb),
                    sb_band=jnp.tile(jnp.arange(nb), n), n_stars=n, n_bands=nb)
    has = np.isfinite(mags).ravel()
    fp = np.asarray(model_sed_slopes(jnp.asarray(np.nan_to_num(mags).ravel()),
                                     jnp.asarray(has), seg)).reshape(n, nb)
    if "jaxfgcm.sed_slope_scale" in meta:  # products before 2026-11-25 lack it (scale 1)
        fp = fp * np.array([float(v) for v in meta["jaxfgcm.sed_slope_scale"].split(",")])
    return {b: fp[:, k] for k, b in enumerate(bands)}


def _segments_class():
    import equinox as eqx
    import jax

    class Segments(eqx.Module):
        """The few FitData fields :func:`jaxfgcm.fit.model.sed_slopes` reads."""

        band_lambda_std: jax.Array
        sb_star: jax.Array
        sb_band: jax.Array
        n_stars: int = eqx.field(static=True)
        n_bands: int = eqx.field(static=True)

    return Segments


def _Segments(**kwargs):  # built lazily: importing this module needs no JAX
    global _SEGMENTS
    if _SEGMENTS is None:
        _SEGMENTS = _segments_class()
    return _SEGMENTS(**kwargs)


_SEGMENTS = None
