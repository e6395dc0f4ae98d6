"""THE magnitude model (fgcm-reference §1.4): one function used by the fit, the gray terms and
the zeropoints.

    m_std = m_inst + 2.5 log10 I0(atmosphere of the exposure, secz, detector)
            + throughput(band, wash interval, time) + filter offset + star flat(x, y)
            [+ gray(exposure, detector) when crunching] + delta_chrom
    delta_chrom = 2.5 log10[(1 + k F' I10) / (1 + k F' I10_std)]

with F' the star's SED slope from its colours and k the fitted per-band SED-slope scale
(FitParams.sed_scale).

The LUT is evaluated once per (exposure, detector) pair at the pair's mean airmass, together with
its airmass derivative (one forward-mode JVP); each observation then gets the first-order
correction d(2.5 log10 I0)/d secz * (secz_obs - secz_pair) (and the same for I10), so the
per-observation pass is gathers and sums. Within a detector secz varies by < 0.005, where the
neglected second-order term is < 1e-5 mag (tests/test_fit_model.py checks it against a direct
per-observation evaluation).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from .data import FitData, chebyshev_centre, chebyshev_columns
from .params import FitParams

jax.config.update("jax_enable_x64", True)

#: 2.5 / ln 10: converts d ln(flux) into d mag.
MAG_PER_LN = 2.5 / math.log(10.0)


class ExposureAtmosphere(NamedTuple):
    pressure: jax.Array
    pwv: jax.Array
    o3: jax.Array
    tau: jax.Array
    alpha: jax.Array


class PairTerms(NamedTuple):
    """LUT terms per (exposure, detector) pair (dense, pair = exp * n_det + det)."""

    mag_i0: jax.Array  # 2.5 log10 I0
    dmag_i0: jax.Array  # d(2.5 log10 I0) / d secz
    i10: jax.Array
    di10: jax.Array  # d I10 / d secz


def exposure_atmosphere(params: FitParams, data: FitData) -> ExposureAtmosphere:
    """Per-exposure atmosphere from the nightly parameters, clipped to the LUT ranges."""
    n, t = data.exp_night, data.exp_dt_night
    (pw0, pw1), (o0, o1), (t0, t1), (a0, a1) = data.atm_bounds
    ln_pwv = params.ln_pwv[n] + params.ln_pwv_slope[n] * t + params.ln_pwv_quad[n] * t * t
    ln_tau = params.ln_tau[n] + params.ln_tau_slope[n] * t
    return ExposureAtmosphere(
        pressure=data.exp_pressure,
        pwv=jnp.exp(jnp.clip(ln_pwv, math.log(pw0), math.log(pw1))),
        o3=jnp.clip(params.o3[n], o0, o1),
        tau=jnp.exp(jnp.clip(ln_tau, math.log(t0), math.log(t1))),
        alpha=jnp.clip(params.alpha[n], a0, a1),
    )


def pair_terms(params: FitParams, data: FitData, lut, secz=None) -> PairTerms:
    """LUT I0, I10 and their airmass derivatives for every (exposure, detector) pair."""
    atm = exposure_atmosphere(params, data)
    nd = data.n_det
    secz = data.pair_secz if secz is None else secz

    if hasattr(lut, "exposure_pair_terms"):
        # The atmosphere part once per exposure; detectors are added by the LUT's low-rank
        # detector basis, and the sec z derivative by differentiated stencil weights, all in
        # one custom JVP (docs/performance.md). Equal to the per-pair path to 1.2e-7 mag.
        out = lut.exposure_pair_terms(data.filter_lut_index[data.exp_filter], data.det_lut_slot,
                                      *atm, secz.reshape(data.n_exp, nd))
        ln_i0, dln_i0, i10, di10 = (x.reshape(-1) for x in out)
        return PairTerms(MAG_PER_LN * ln_i0, MAG_PER_LN * dln_i0, i10, di10)

    # any interpolator with the plain interp(filter, detector, atmosphere..., secz): per pair
    def rep(a):
        return jnp.repeat(a, nd, total_repeat_length=data.n_pairs)

    filt = rep(data.filter_lut_index[data.exp_filter])
    det = jnp.tile(data.det_lut_slot, data.n_exp)
    args = [rep(a) for a in atm]

    def f(s):
        i0, i10 = lut.interp(filt, det, *args, s)
        return jnp.log(i0), i10

    (ln_i0, i10), (dln_i0, di10) = jax.jvp(f, (secz,), (jnp.ones_like(secz),))
    return PairTerms(MAG_PER_LN * ln_i0, MAG_PER_LN * dln_i0, i10, di10)


def exposure_instrument(params: FitParams, data: FitData) -> jax.Array:
    """Throughput (per band, wash interval, with slope in time) and filter offset, in mag, per
    exposure."""
    b, w = data.exp_band, data.exp_wash
    return (params.throughput[b, w] + params.throughput_slope[b, w] * data.exp_dt_wash
            + params.filter_offset[data.exp_filter])


def pair_instrument(params: FitParams, data: FitData) -> jax.Array:
    """:func:`exposure_instrument` plus the aperture correction (linear and quadratic in the
    (exposure, detector) PSF FWHM), dense per pair, in mag."""
    a = jnp.repeat(data.exp_aper_group, data.n_det, total_repeat_length=data.n_pairs)
    s = data.pair_seeing
    return (jnp.repeat(exposure_instrument(params, data), data.n_det,
                       total_repeat_length=data.n_pairs)
            + (params.aper_slope[a] + params.aper_quad[a] * s) * s)


def pair_rows(params: FitParams, data: FitData, lut, pair_gray: jax.Array | None = None,
              terms: PairTerms | None = None) -> tuple[jax.Array, ...]:
    """Everything an observation needs from its (exposure, detector) pair, as 4 + n_coef
    dense per-pair columns: 2.5 log10 I0 + instrument (+ gray), its d/d secz, I10,
    d I10/d secz, then the star-flat coefficients of the pair's (epoch, filter, detector) group.

    Separate 1-D columns, not one (n_pairs, k) table: on XLA's CPU backend slicing the columns
    of a gathered (n_obs, k) array, and the transposes of those slices in reverse mode, cost
    ~0.6 ms each, where a 1-D gather costs ~0.1 ms and its transpose (a 1-D scatter-add)
    ~0.2 ms (docs/performance.md). Folding the star flat into the pair columns replaces the
    per-observation group gather by per-pair ones (11,648 pairs vs 274k observations).
    """
    t = pair_terms(params, data, lut) if terms is None else terms
    base = t.mag_i0 + pair_instrument(params, data)
    if pair_gray is not None:
        base = base + pair_gray
    group = data.pair_flat_group
    flat = tuple(params.star_flat[:, k][group] for k in range(data.n_coef))
    return (base, t.dmag_i0, t.i10, t.di10) + flat


def standard_magnitudes(
    params: FitParams,
    data: FitData,
    lut,
    sed_slope: jax.Array,
    pair_gray: jax.Array | None = None,
    terms: PairTerms | None = None,
) -> jax.Array:
    """m_std of every observation (padded length; see FitData).

    ``sed_slope`` is F' per star-band segment (1/Angstrom), held fixed during a fit.
    ``pair_gray`` (dense per pair, mag) is added when "crunching" (fgcm: ccdGray).
    Computed in the dtype of ``data.obs_mag``.
    """
    cols = pair_rows(params, data, lut, pair_gray, terms)
    return magnitudes_from_rows(cols, *segment_chromatic(sed_slope, params.sed_scale, data),
                                data)


_standard_magnitudes_jit = jax.jit(standard_magnitudes)
_pair_terms_jit = jax.jit(pair_terms)


def pair_terms_compiled(params: FitParams, data: FitData, lut) -> PairTerms:
    """:func:`pair_terms` at the pairs' own airmass as one compiled program, shared by the
    programs that need the LUT's value (the cycles' magnitudes, the Gauss-Newton trial value,
    the zeropoints): each compiled the LUT contraction again, ~1 s apiece on the 2-core CPU
    (docs/performance.md, "Compile time of a fresh fit")."""
    return _pair_terms_jit(params, data, lut)


def standard_magnitudes_compiled(params: FitParams, data: FitData, lut, sed_slope: jax.Array,
                                 pair_gray: jax.Array | None = None) -> jax.Array:
    """:func:`standard_magnitudes` compiled, for callers outside a traced function (the cycles,
    the products, the QA residuals): called eagerly it runs as ~210 single-operation programs,
    each compiled on first use (4.8 s on the 2-core CPU, docs/performance.md). The LUT terms
    come from :func:`pair_terms_compiled`. Without a gray it adds zeros (exact), so the cycles
    and the crunched final magnitudes share one program instead of compiling two (1.5-1.7 s
    each on the tract preset)."""
    if pair_gray is None:
        pair_gray = jnp.zeros(data.n_pairs, jnp.float64)
    return _standard_magnitudes_jit(params, data, lut, sed_slope, pair_gray,
                                    pair_terms_compiled(params, data, lut))


def segment_chromatic(sed_slope: jax.Array, sed_scale: jax.Array, data: FitData):
    """Per star-band segment: the scaled SED slope k F' and ln(1 + k F' I10_std), the standard
    passband's part of the chromatic term. Computed per segment (~20x fewer than observations)
    and materialised, so that each observation gathers them by its (sorted) segment id instead
    of three gathers (F', k and I10_std by band) and a division; the fit pass did not get
    measurably faster from it alone (within the machine's noise, docs/performance.md)."""
    dt = data.obs_mag.dtype
    band = data.sb_band
    fp = sed_slope.astype(dt) * gather(sed_scale.astype(dt), band)
    std = jnp.log1p(fp * gather(data.band_i10_std.astype(dt), band))
    return materialized_columns(fp, std)


def magnitudes_from_rows(cols, sed_slope_sb: jax.Array, chrom_std_sb: jax.Array,
                         data: FitData) -> jax.Array:
    """The per-observation part of :func:`standard_magnitudes`: 1-D gathers of the
    :func:`pair_rows` columns, the star-flat Chebyshev basis from x, y on the fly, the
    chromatic term from the per-segment values of :func:`segment_chromatic`."""
    dt = data.obs_mag.dtype
    pair = data.obs_pair
    table = materialized_columns(*(c.astype(dt) for c in cols))
    base, dmag, i10_p, di10, *flat_c = (gather(c, pair) for c in table)
    ds = data.obs_dsecz
    mag_i0 = base + dmag * ds
    i10 = i10_p + di10 * ds
    cheb = chebyshev_columns(data.obs_xn, data.obs_yn, data.star_flat_order)
    flat = cheb[0] * flat_c[0]
    for k in range(1, len(cheb)):
        flat = flat + cheb[k] * flat_c[k]
    sb = data.obs_sb
    # 2.5 log10[(1 + k F' I10) / (1 + k F' I10_std)], the second log per segment
    chrom = MAG_PER_LN * (jnp.log1p(gather(sed_slope_sb, sb) * i10) - gather(chrom_std_sb, sb))
    return data.obs_mag + mag_i0 + flat + chrom


def materialized(table: jax.Array) -> jax.Array:
    """``table`` (k, n), computed once before it is gathered from.

    Without this, XLA's CPU backend fuses the producers of a small table (the per-pair
    instrument terms, the star-flat group lookup, ...) into the per-observation gather loop and
    recomputes them for every observation: the fit pass was 3x slower (docs/performance.md).
    ``optimization_barrier`` does not prevent it (the CPU pipeline removes barriers before
    fusion); a product with the identity does, since XLA does not fuse a dot into a loop and
    does not simplify it away. Exact: x * 1 + y * 0 = x for finite values.
    """
    return jnp.matmul(jnp.eye(table.shape[0], dtype=table.dtype), table,
                      precision=jax.lax.Precision.HIGHEST)


@jax.custom_jvp
def materialized_columns(*cols: jax.Array) -> tuple[jax.Array, ...]:
    """The 1-D arrays ``cols`` (same length and dtype) through :func:`materialized` as one
    stacked table, returned as columns.

    Its derivative keeps the columns whose tangent is symbolically zero out of the stacked
    tangent table: differentiating the stack would fill them with zeros and every per-observation
    gather and product after it would run on them. In the Gauss-Newton Jacobian (44 tangents,
    the star flat frozen) that was 4 of the 8 pair columns (docs/performance.md).
    """
    table = materialized(jnp.stack(cols))
    return tuple(table[k] for k in range(len(cols)))


@partial(materialized_columns.defjvp, symbolic_zeros=True)
def _materialized_columns_jvp(primals, tangents):
    out = materialized_columns(*primals)
    live = [k for k, t in enumerate(tangents) if type(t) is not SymbolicZero]
    dots = list(tangents)
    if live:
        for k, d in zip(live, materialized_columns(*(tangents[k] for k in live))):
            dots[k] = d
    return out, tuple(dots)


def gather(table: jax.Array, index: jax.Array) -> jax.Array:
    """``table[index]`` for indices known to be in range (built by FitData): skips the bounds
    handling of default indexing, measurably faster on CPU (scripts/bench_fit.py)."""
    return table.at[index].get(mode="promise_in_bounds")


def star_flat_at_centre(params: FitParams, data: FitData) -> jax.Array:
    """Star flat (mag) at each detector centre, dense per pair."""
    return params.star_flat[data.pair_flat_group] @ chebyshev_centre(data.star_flat_order)


@jax.jit
def sed_slopes(sb_mean: jax.Array, sb_has: jax.Array, data: FitData) -> jax.Array:
    """F' per star-band segment from the star's mean magnitudes (fgcm-reference §1.5).

    Slope between adjacent bands p < s: S = -(m_p - m_s) / (2.5/ln10) / (lambda_p - lambda_s)
    (d ln F_nu / d lambda); a band's F' is the mean of the slopes to its neighbours that exist
    (one-sided at the ends of the band list); stars without one get the band's median.
    """
    nb = data.n_bands
    mags = jnp.full((data.n_stars, nb), jnp.nan).at[data.sb_star, data.sb_band].set(
        jnp.where(sb_has, sb_mean, jnp.nan))
    lam = data.band_lambda_std
    s = -(mags[:, 1:] - mags[:, :-1]) / MAG_PER_LN / (lam[1:] - lam[:-1])
    pad = jnp.full((data.n_stars, 1), jnp.nan)
    left = jnp.concatenate([pad, s], axis=1)  # slope to the bluer neighbour
    right = jnp.concatenate([s, pad], axis=1)  # slope to the redder neighbour
    both = jnp.stack([left, right])
    n = jnp.sum(jnp.isfinite(both), axis=0)
    fp = jnp.where(n > 0, jnp.nansum(both, axis=0) / jnp.maximum(n, 1), jnp.nan)
    med = jnp.nan_to_num(jnp.nanmedian(fp, axis=0))
    fp = jnp.where(jnp.isfinite(fp), fp, med[None, :])
    return fp[data.sb_star, data.sb_band]
