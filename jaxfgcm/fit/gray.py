"""Exposure and detector gray from star residuals (fgcm-reference §5.1 step 8), and the
exposure flags / cut updates that follow from them.

Per observation EGray = <m_std>_star - m_std (negative = extra extinction, e.g. clouds), with
variance sigma_E^2 = sigma^2 - sigma_<m>^2 when the observation is part of its star's mean (else
sigma^2 + sigma_<m>^2). Detector gray = weighted mean of EGray over the (exposure, detector)
pair's stars; exposure gray = weighted mean over its good detectors, with the weighted RMS of
the detector grays as the spatial variance (VAR_GRAY). Reductions are float64 segment sums.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .data import FitData
from .loss import star_means

jax.config.update("jax_enable_x64", True)

# Exposure flag bits (fgcm's expFlag values, fgcm-reference Appendix B).
EXP_TOO_FEW_STARS = 1
EXP_GRAY_TOO_NEGATIVE = 2
EXP_VAR_GRAY_TOO_LARGE = 4
EXP_TOO_FEW_EXP_ON_NIGHT = 8
EXP_NO_STARS = 16
EXP_GRAY_TOO_POSITIVE = 128

#: Stars whose EGray variance exceeds this (mag^2) do not enter the gray (fgcm compares the
#: variance with 0.10, a quirk; we use an error of 0.1 mag, i.e. variance 0.01).
MAX_STAR_GRAY_VAR = 0.01


class Gray(NamedTuple):
    """Gray terms. Pair arrays are dense (n_exp * n_det), exposure arrays (n_exp,)."""

    pair_gray: jax.Array
    pair_gray_err: jax.Array
    pair_n_star: jax.Array
    exp_gray: jax.Array
    exp_gray_err: jax.Array
    exp_gray_rms: jax.Array
    exp_n_star: jax.Array  # stars in the exposure gray
    exp_n_good_ccd: jax.Array
    exp_n_obs: jax.Array  # valid observations of stars that have a mean (NO_STARS if 0)


class Residuals(NamedTuple):
    """Per observation EGray and its variance; per segment the star mean and its error."""

    egray: jax.Array
    var_e: jax.Array
    sb_mean: jax.Array
    sb_err: jax.Array
    sb_weight: jax.Array


@jax.jit
def star_residuals(m_std, var, mean_use, data: FitData) -> Residuals:
    """EGray of every observation against the weighted mean of the ``mean_use`` observations."""
    w = jnp.where(mean_use, 1.0 / var, 0.0)
    mean, err, sw = star_means(m_std, w, data)
    e = mean[data.obs_sb] - m_std.astype(jnp.float64)
    em2 = jnp.where(sw > 0, err * err, jnp.inf)[data.obs_sb]
    var_e = jnp.where(mean_use, var - em2, var + em2)
    # An observation that is its star's only one in the mean has EGray = 0 and var_e = 0 up to
    # rounding (a huge weight for no information): mark it invalid.
    n_in = jax.ops.segment_sum(mean_use.astype(jnp.int32), data.obs_sb, data.n_sb,
                               indices_are_sorted=True)
    var_e = jnp.where(mean_use & (n_in[data.obs_sb] < 2), -1.0, var_e)
    return Residuals(e, var_e, mean, err, sw)


@partial(jax.jit, static_argnames=("min_star_per_ccd",))
def compute_gray(res: Residuals, gray_use, data: FitData, min_star_per_ccd: int) -> Gray:
    """Detector and exposure gray from the EGray of the ``gray_use`` observations."""
    ok = gray_use & (res.var_e > 0) & (res.var_e < MAX_STAR_GRAY_VAR) & (res.sb_weight[data.obs_sb] > 0)
    w = jnp.where(ok, 1.0 / jnp.where(ok, res.var_e, 1.0), 0.0)
    pair = data.obs_pair
    npair = data.n_pairs
    sw = jax.ops.segment_sum(w, pair, npair)
    swe = jax.ops.segment_sum(w * res.egray, pair, npair)
    n = jax.ops.segment_sum(ok.astype(jnp.int32), pair, npair)
    has = sw > 0
    pg = jnp.where(has, swe / jnp.where(has, sw, 1.0), 0.0)
    pe = jnp.where(has, 1.0 / jnp.sqrt(jnp.where(has, sw, 1.0)), jnp.inf)
    good = (n >= min_star_per_ccd) & has
    wc = jnp.where(good, sw, 0.0).reshape(data.n_exp, data.n_det)
    g2 = pg.reshape(data.n_exp, data.n_det)
    sw_e = wc.sum(1)
    hase = sw_e > 0
    eg = jnp.where(hase, (wc * g2).sum(1) / jnp.where(hase, sw_e, 1.0), 0.0)
    rms = jnp.sqrt(jnp.where(hase, (wc * (g2 - eg[:, None]) ** 2).sum(1)
                             / jnp.where(hase, sw_e, 1.0), 0.0))
    ee = jnp.where(hase, 1.0 / jnp.sqrt(jnp.where(hase, sw_e, 1.0)), jnp.inf)
    return Gray(
        pair_gray=pg, pair_gray_err=pe, pair_n_star=n,
        exp_gray=eg, exp_gray_err=ee, exp_gray_rms=rms,
        exp_n_star=n.reshape(data.n_exp, data.n_det).sum(1),
        exp_n_good_ccd=good.reshape(data.n_exp, data.n_det).sum(1),
        exp_n_obs=jax.ops.segment_sum(
            (gray_use & (res.sb_weight[data.obs_sb] > 0)).astype(jnp.int32), data.obs_exp,
            data.n_exp),
    )


def focal_plane_gray(pair_gray: np.ndarray, pair_gray_err: np.ndarray, ccd_ok: np.ndarray,
                     det_xy: np.ndarray, order: int):
    """Per exposure, a polynomial of total degree ``order`` in the focal-plane position fitted
    to the detector grays (weights 1/err^2, ``ccd_ok`` detectors), evaluated at every detector
    centre (fgcm's ccdGrayFocalPlane, fitted to the detector means instead of the stars: the
    zeropoint is quoted at the centre, where the field's value is what it needs).

    Returns (gray, err, fitted): (n_exp, n_det) field values and their errors (from the fit's
    covariance, scaled up by the reduced chi^2 where it exceeds 1, so structure the
    polynomial misses widens them), and (n_exp,) whether the exposure has a fit (at least 3
    detectors per coefficient; a lone or clustered set of detectors falls back to the means).
    A detector's own mean carries the noise of its ~20 stars (2-5 mmag on the simulator's
    tract preset), the field that of all of them.
    """
    pg = np.asarray(pair_gray, np.float64)
    pe = np.asarray(pair_gray_err, np.float64)
    ok = np.asarray(ccd_ok, bool) & np.isfinite(pg) & np.isfinite(pe) & (pe > 0)
    xy = np.asarray(det_xy, np.float64)
    n_exp, n_det = pg.shape
    gray = np.full((n_exp, n_det), np.nan)
    err = np.full((n_exp, n_det), np.nan)
    fitted = np.zeros(n_exp, bool)
    scale = np.max(np.abs(xy)) if xy.size else 0.0
    if scale <= 0 or order < 0:
        return gray, err, fitted
    u, v = xy[:, 0] / scale, xy[:, 1] / scale
    basis = np.stack([u ** i * v ** (k - i) for k in range(order + 1) for i in range(k + 1)],
                     axis=1)
    n_par = basis.shape[1]
    for e in range(n_exp):
        sel = ok[e]
        if sel.sum() < 3 * n_par:
            continue
        w = 1.0 / pe[e, sel] ** 2
        a = basis[sel]
        normal = (a * w[:, None]).T @ a
        try:
            cov = np.linalg.inv(normal)
        except np.linalg.LinAlgError:
            continue
        if not np.all(np.isfinite(cov)) or np.linalg.cond(normal) > 1e10:
            continue
        coef = cov @ ((a * w[:, None]).T @ pg[e, sel])
        chi2 = float(np.sum(w * (pg[e, sel] - a @ coef) ** 2)) / max(sel.sum() - n_par, 1)
        cov = cov * max(chi2, 1.0)
        gray[e] = basis @ coef
        err[e] = np.sqrt(np.einsum("dp,pq,dq->d", basis, cov, basis))
        fitted[e] = True
    return gray, err, fitted


def exposure_flags(gray: Gray, data: FitData, low_cut, high_cut, var_cut: float,
                   min_star_per_exp: int, min_exp_per_night: int,
                   reference: np.ndarray | None = None) -> np.ndarray:
    """fgcm's expFlag bits from the gray terms; ``low_cut``/``high_cut`` are per band and
    apply to the exposure gray minus ``reference`` (per exposure; default 0).

    TOO_FEW_EXP_ON_NIGHT is set on every exposure of a night with fewer than
    ``min_exp_per_night`` otherwise-photometric exposures (its atmosphere is not fitted).
    """
    band = np.asarray(data.exp_band)
    eg = np.asarray(gray.exp_gray)
    if reference is not None:
        eg = eg - np.asarray(reference)
    n = np.asarray(gray.exp_n_obs)
    flags = np.zeros(data.n_exp, dtype=np.int64)
    flags |= np.where(n == 0, EXP_NO_STARS, 0)
    flags |= np.where((n > 0) & (n < min_star_per_exp), EXP_TOO_FEW_STARS, 0)
    flags |= np.where(eg < np.asarray(low_cut)[band], EXP_GRAY_TOO_NEGATIVE, 0)
    flags |= np.where(eg > np.asarray(high_cut)[band], EXP_GRAY_TOO_POSITIVE, 0)
    flags |= np.where(np.asarray(gray.exp_gray_rms) ** 2 > var_cut, EXP_VAR_GRAY_TOO_LARGE, 0)
    return flags | night_flags(flags, data, min_exp_per_night)


def lost_night_bands(flags: np.ndarray, gray: Gray, data: FitData) -> np.ndarray:
    """Per exposure: its (night, band) has no photometric exposure left but at least two
    exposures with stars."""
    n_ok = _night_band_count(flags == 0, data)
    n_star = _night_band_count(np.asarray(gray.exp_n_obs) > 0, data)
    return (n_ok == 0) & (n_star >= 2)


def too_positive_night_bands(flags: np.ndarray, data: FitData) -> np.ndarray:
    """Per exposure: its (night, band) has at least two exposures flagged for nothing but a
    gray above the high cut. Clouds never make an exposure brighter than the model, so such
    exposures say that the band's fitted atmosphere is wrong that night (typically it absorbed
    a run of clouds, which then look photometric). Two, because one exposure alone may be
    corrupt (a wrong exposure time) rather than the atmosphere wrong: as the clear-sky
    reference it would flag its (night, band)'s good exposures."""
    pos = (np.asarray(flags) & ~EXP_TOO_FEW_EXP_ON_NIGHT) == EXP_GRAY_TOO_POSITIVE
    return _night_band_count(pos, data) >= 2


def _night_band_count(mask: np.ndarray, data: FitData) -> np.ndarray:
    """Per exposure: how many exposures of its (night, band) have ``mask`` set."""
    key = np.asarray(data.exp_night) * data.n_bands + np.asarray(data.exp_band)
    n = np.bincount(key, weights=np.asarray(mask, float), minlength=data.n_nights * data.n_bands)
    return n[key]


def night_flags(flags: np.ndarray, data: FitData, min_exp_per_night: int) -> np.ndarray:
    night = np.asarray(data.exp_night)
    fit_band = np.asarray(data.fit_bands)[np.asarray(data.exp_band)]
    n_ok = np.bincount(night, weights=((flags == 0) & fit_band).astype(float),
                       minlength=data.n_nights)
    return np.where(n_ok[night] < min_exp_per_night, EXP_TOO_FEW_EXP_ON_NIGHT, 0)


def updated_cuts(repeatability, low_limit, high_limit, nsig_low: float, nsig_high: float):
    """New exposure-gray cuts per band from the reserved-star repeatability (fgcm tract mode,
    ``computeExpGrayCutsFromRepeatability``: sigma = repeatability, mean 0), quantised to
    2.5 mmag.

    Deviation from fgcm (which lets a cut grow to twice the previous one each cycle): the cuts
    never get looser than the configured ones (``low_limit``, ``high_limit``). Measured on
    synthetic tracts: with loosening, a cloud that survives cycle 0 is absorbed by the freed
    atmosphere of cycle 1 and is never flagged again.
    """
    step = 0.0025
    out_low, out_high = [], []
    for s, lo, hi in zip(repeatability, low_limit, high_limit):
        if not np.isfinite(s) or s <= 0:
            out_low.append(lo)
            out_high.append(hi)
            continue
        out_low.append(max(lo, min(-math.ceil(nsig_low * s / step) * step, -0.005)))
        out_high.append(min(hi, max(math.ceil(nsig_high * s / step) * step, 0.005)))
    return np.asarray(out_low), np.asarray(out_high)


def night_band_reference(exp_gray: np.ndarray, ok: np.ndarray, data: FitData,
                         low_cut=None) -> np.ndarray:
    """Per exposure: the clear-sky exposure gray expected from its (night, band) when the
    atmosphere is the standard one (cycle 0): secz_e x max over the (night, band)'s ``ok``
    exposures of EGray / secz (0 where the (night, band) has fewer than 2).

    With the standard atmosphere a night whose extinction differs from the standard has every
    exposure offset in proportion to its airmass (measured on the simulator's tract preset:
    -94 to -177 mmag on a clear night with tau 0.10, EGray / secz constant to 2 %); clouds only
    make exposures fainter, so the upper envelope of EGray / secz is the clear-sky level, also
    when most of the night's exposures in the band are cloudy.

    With ``low_cut`` (per band) the level must be confirmed: a second ``ok`` exposure must pass
    the cut relative to it, else the (night, band) gets 0. Where every exposure is cloudy the
    envelope is the thinnest cloud, and as the reference it would pass and pull the night's
    atmosphere; a wrong atmosphere on clear exposures scales with airmass for all of them.
    """
    night, band = np.asarray(data.exp_night), np.asarray(data.exp_band)
    secz = np.asarray(data.exp_secz)
    eg = np.asarray(exp_gray)
    ratio = eg / secz
    cut = None if low_cut is None else np.asarray(low_cut)
    out = np.zeros(data.n_exp)
    for n in np.unique(night):
        for b in np.unique(band[night == n]):
            group = (night == n) & (band == b)
            sel = group & ok
            if sel.sum() < 2:
                continue
            top = float(np.max(ratio[sel]))
            if cut is not None:
                near = sel & (eg - top * secz >= cut[b])
                if near.sum() < 2:
                    continue
            out[group] = secz[group] * top
    return out


def cuts_from_exposure_gray(exp_gray: np.ndarray, photometric: np.ndarray, data: FitData,
                            low_limit, high_limit, nsig_low: float, nsig_high: float,
                            floor: float = 0.005):
    """Exposure-gray cuts per band from the spread of the photometric exposures' gray (fgcm's
    automatic cuts from the Gaussian width of the exposure-gray distribution, §5.1).

    sigma = robust sigma of the band's photometric exposure gray (pooled over all bands where
    a band has fewer than 5 photometric exposures). Low cut: -nsig_low sigma, never tighter
    than ``floor`` nor looser than the configured one. High cut: the configured one, or
    nsig_high sigma if larger. Deviation from fgcm (which tightens the high cut too): clouds
    never make an exposure brighter, a positive gray is a model failure, and on the tiny
    preset a tight high cut excluded the only clear exposure of a (night, band), whose gray
    is then unconstrained by the night's fit and never came back (4 of 40 clear exposures
    flagged). Using the
    exposure-gray spread rather than the star repeatability matters: on the simulator's tract
    preset the photometric exposures' gray scatters by ~2.5 mmag while the repeatability is
    5-8 mmag, so repeatability-based cuts (20-30 mmag) let 10-40 mmag clouds through.
    """
    band = np.asarray(data.exp_band)
    eg = np.asarray(exp_gray)
    ok = np.asarray(photometric) & np.isfinite(eg)
    pooled = robust_sigma(eg[ok])
    lows, highs = [], []
    for b, (lo, hi) in enumerate(zip(low_limit, high_limit)):
        s = robust_sigma(eg[ok & (band == b)])
        if not np.isfinite(s):
            s = pooled
        if not np.isfinite(s) or s <= 0:
            lows.append(float(lo))
            highs.append(float(hi))
            continue
        lows.append(max(float(lo), min(-nsig_low * s, -floor)))
        highs.append(max(float(hi), nsig_high * s))
    return np.asarray(lows), np.asarray(highs)


def median_outliers(m_crunched, sigma, use, sb, n_sb: int, nsig: float) -> np.ndarray:
    """Observations further than ``nsig`` sigma from the median of their star-band's ``use``
    observations (star-bands with at least 3 of them; others: all False).

    The median, not the weighted mean: one unflagged corrupted observation (the simulator's
    x0.6-1.6 fluxes) pulls a 14-observation mean by ~30 mmag, and in cycle 0 a corrupted
    *brighter* observation becomes the star's only "bright" one, so that a mean-based test
    flags every good observation instead, for good (measured: a star off by 51 mmag).
    """
    m = np.asarray(m_crunched, np.float64)
    use = np.asarray(use, bool)
    sb = np.asarray(sb)
    idx = np.flatnonzero(use)
    order = idx[np.lexsort((m[idx], sb[idx]))]
    seg = sb[order]
    n = np.bincount(seg, minlength=n_sb)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    lo = order[np.minimum(start + (n - 1) // 2, max(len(order) - 1, 0))] if len(order) else None
    hi = order[np.minimum(start + n // 2, max(len(order) - 1, 0))] if len(order) else None
    med = np.full(n_sb, np.nan)
    if len(order):
        med = np.where(n > 0, 0.5 * (m[lo] + m[hi]), np.nan)
    ok = n[sb] >= 3
    dev = np.abs(m - med[sb])
    return ok & np.isfinite(dev) & (dev > nsig * np.asarray(sigma))


def robust_sigma(x: np.ndarray) -> float:
    """1.4826 x median absolute deviation (NaN for fewer than 5 values)."""
    x = np.asarray(x)
    if len(x) < 5:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))
