"""One fit cycle (fgcm-reference §5.1): select photometric data, fit, gray, flags, star flat,
error model and repeatability.

Cycle 0 starts from fgcm's bright-observation selection: with the standard atmosphere, each
star-band keeps its observations within ``bright_obs_gray_max`` of its brightest one; their mean
is the first star magnitude, and exposures whose stars are on average fainter than that by more
than ``exp_gray_initial_cut`` are non-photometric.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import gray as G
from .data import FitData
from .loss import (
    FitState,
    chi2,
    obs_variance,
    obs_variance_compiled,
    star_means,
    weighted_residuals,
)
from .model import sed_slopes, standard_magnitudes_compiled
from .normal import structured_normal_equations, structured_value
from .optimize import SolveInfo, minimize
from .params import FitParams, clip_to_bounds, free_mask, n_free
from .starflat import update_star_flat

jax.config.update("jax_enable_x64", True)

#: Observations further than this many sigma from their star mean (after gray) are clipped.
OUTLIER_NSIG = 5.0
#: Stars and observations entering sigma_FGCM and repeatability: |EGray| and sigma_E bounds
#: (fgcm's sigFgcmMaxEGray 0.05 and sigFgcmMaxErr 0.01).
SIGFGCM_MAX_EGRAY = 0.05
SIGFGCM_MAX_ERR = 0.01
#: Gauss-Newton holds n_free x n_obs values (the Jacobian, or with the structured normal
#: equations the tangents at every observation); above this many use L-BFGS.
GN_MAX_JACOBIAN_ELEMENTS = 3e8


@dataclass
class CycleState:
    """What one cycle hands to the next."""

    params: FitParams
    exp_flags: np.ndarray | None = None  # None: cycle 0 makes the initial selection
    low_cut: np.ndarray | None = None  # per band (mag)
    high_cut: np.ndarray | None = None
    sigma_fgcm: np.ndarray | None = None  # per band (mag)
    sed_slope: jax.Array | None = None  # per star-band segment
    outlier: jax.Array | None = None  # per observation
    #: the flags ``params`` were fitted with (exp_flags are the next fit's); None before a fit
    fitted_flags: np.ndarray | None = None


@dataclass
class CycleResult:
    state: CycleState  # input of the next cycle
    repeatability: np.ndarray  # per band, reserved stars, photometric, un-crunched (mag)
    n_photometric: int
    exp_flags: np.ndarray  # flags used by this cycle's fit
    gray: G.Gray
    residuals: G.Residuals
    mean_use: jax.Array
    solve: SolveInfo | None
    seconds: dict = field(default_factory=dict)


#: The fit's Gauss-Newton residual (a module-level function: the solver's compiled programs
#: are cached per residual function).
_residual_vector = weighted_residuals


def initial_selection(data: FitData, lut, params: FitParams, cfg):
    """fgcm's bright-observation start: exposure flags, SED slopes and the bright observations
    (within ``bright_obs_gray_max`` of each star's brightest) for cycle 0."""
    fc = cfg.fit
    m = standard_magnitudes_compiled(params, data, lut, jnp.zeros(data.n_sb))
    bright, mean, has = _bright_means(m, data, fc.bright_obs_gray_max, fc.sigma0_phot)
    sed = sed_slopes(mean, has, data)
    m = standard_magnitudes_compiled(params, data, lut, sed)
    e, use = (np.asarray(x) for x in _initial_residuals(m, bright, data, fc.sigma0_phot))
    exp = np.asarray(data.obs_exp)
    n = np.bincount(exp, weights=np.asarray(use, float), minlength=data.n_exp)
    eg = np.bincount(exp, weights=e, minlength=data.n_exp) / np.maximum(n, 1)
    flags = np.zeros(data.n_exp, np.int64)
    flags |= np.where(n == 0, G.EXP_NO_STARS, 0)
    flags |= np.where((n > 0) & (n < fc.min_star_per_exp), G.EXP_TOO_FEW_STARS, 0)
    flags |= np.where(eg < fc.exp_gray_initial_cut, G.EXP_GRAY_TOO_NEGATIVE, 0)
    flags |= G.night_flags(flags, data, fc.min_exp_per_night)
    return flags, sed, bright


# The array steps of the cycle outside the solver, compiled: run eagerly they were ~60
# single-operation programs, each compiled on first use (~1.5 s of a fresh fit on the 2-core
# CPU, docs/performance.md).
@jax.jit
def _bright_means(m, data: FitData, gray_max, sigma0):
    """Cycle 0's bright observations (within ``gray_max`` of their star's brightest), the star
    means over them and which star-bands have one."""
    var = obs_variance(data, jnp.zeros(data.n_bands), sigma0)
    big = jnp.where(data.obs_valid, m.astype(jnp.float64), jnp.inf)
    mmin = jax.ops.segment_min(big, data.obs_sb, num_segments=data.n_sb, indices_are_sorted=True)
    bright = data.obs_valid & (big - mmin[data.obs_sb] <= gray_max)
    mean, _, sw = star_means(m, jnp.where(bright, 1.0 / var, 0.0), data)
    return bright, mean, sw > 0


@jax.jit
def _initial_residuals(m, bright, data: FitData, sigma0):
    """Residuals about the bright observations' star means and the observations they count
    for (not reserved, star-band with a mean)."""
    var = obs_variance(data, jnp.zeros(data.n_bands), sigma0)
    mean, _, sw = star_means(m, jnp.where(bright, 1.0 / var, 0.0), data)
    use = data.obs_valid & ~data.star_reserved[data.obs_star] & (sw[data.obs_sb] > 0)
    return jnp.where(use, mean[data.obs_sb] - m, 0.0), use


@jax.jit
def _observations_used(exp_flags, outlier, data: FitData):
    """Observations on photometric exposures (not outliers), of those the fit's (fit band,
    star not reserved), and those the gray is computed from (not outliers, star not
    reserved)."""
    photometric = exp_flags == 0
    obs_phot = data.obs_valid & photometric[data.obs_exp] & ~outlier
    fit_band = jnp.asarray(np.asarray(data.fit_bands))
    not_reserved = ~data.star_reserved[data.obs_star]
    return (obs_phot, obs_phot & not_reserved & fit_band[data.obs_band],
            data.obs_valid & ~outlier & not_reserved)


@jax.jit
def _star_flat_inputs(res: G.Residuals, gray: G.Gray, fit_use, data: FitData):
    """The star flat's observations (fit observations within 5 sigma of their detector gray)
    and their residuals less the exposure gray."""
    flat_use = fit_use & (jnp.abs(res.egray - gray.pair_gray[data.obs_pair])
                          < OUTLIER_NSIG * jnp.sqrt(jnp.maximum(res.var_e, 0)))
    return flat_use, res.egray - gray.exp_gray[data.obs_exp]


@jax.jit
def _outlier_inputs(m_std, res: G.Residuals, gray: G.Gray, var, sigma_fgcm, exp_flags,
                    data: FitData):
    """Per observation: the magnitude with its detector gray and its error (for the median
    test), the photometric ones, and the mean-based test (residual against the detector gray
    beyond 5 sigma)."""
    pg = gray.pair_gray[data.obs_pair]
    sig2 = sigma_fgcm[data.obs_band] ** 2
    phot_all = data.obs_valid & (exp_flags == 0)[data.obs_exp]
    by_mean = data.obs_valid & (jnp.abs(res.egray - pg) > OUTLIER_NSIG * jnp.sqrt(
        jnp.maximum(res.var_e, 0) + sig2))
    return m_std + pg, jnp.sqrt(var + sig2), phot_all, by_mean


def run_cycle(data: FitData, lut, cfg, state: CycleState, *, cycle: int, final: bool = False,
              method: str | None = None) -> CycleResult:
    """One cycle: fit (unless ``final``), gray, sigma_FGCM, repeatability, flags, star flat."""
    fc = cfg.fit
    t0 = time.perf_counter()
    params = state.params
    nb = data.n_bands
    keep_fitted_set = final and state.fitted_flags is not None
    sig_fgcm = state.sigma_fgcm if state.sigma_fgcm is not None else np.zeros(nb)
    bright = None
    if state.exp_flags is None:
        exp_flags, sed, bright = initial_selection(data, lut, params, cfg)
    else:
        exp_flags, sed = state.exp_flags, state.sed_slope
        if keep_fitted_set:
            # The clean-up fits nothing: its star means, gray and repeatability use the
            # exposures the parameters were fitted with. After a last cycle that changed the
            # photometric set (max_fit_cycles reached, or a rollback to the best cycle) the next
            # cycle's set also held exposures no fit had used (simulator, tract preset seed 105,
            # reserve draw 1: 5 g exposures let back in, g repeatability 4.33 -> 11.23 mmag).
            exp_flags = state.fitted_flags
    outlier = (state.outlier if state.outlier is not None
               else jnp.asarray(np.zeros(data.obs_valid.shape, bool)))
    obs_phot, fit_use, gray_use = _observations_used(jnp.asarray(exp_flags), outlier, data)
    fstate = FitState(sed_slope=sed, obs_use=fit_use, sigma_fgcm=jnp.asarray(sig_fgcm),
                      sigma0=fc.sigma0_phot)

    # ---- fit ----
    solve = None
    t_fit = time.perf_counter()
    if not final:
        fitted_nights = _fitted_nights(exp_flags, data, fc.min_exp_per_night)
        freeze = cycle == 0 and fc.freeze_std_atmosphere_cycle0
        mask = free_mask(data, fit_atmosphere=not freeze, fitted_nights=fitted_nights,
                         **_instrument_mask_options(fc))
        # fgcm resets the atmosphere to the standard before each fit (resetParameters): a bad
        # previous cycle (e.g. clouds not yet flagged) cannot trap the next one at a bound.
        params = params.with_standard_atmosphere(cfg.standard_atmosphere)
        m = method or fc.optimizer
        if m == "auto":
            big = n_free(mask) * int(data.obs_mag.shape[0]) > GN_MAX_JACOBIAN_ELEMENTS
            m = "lbfgs" if big else "gauss_newton"
        # Every cycle's free set lies within the all-nights one: one compiled Gauss-Newton
        # program for all cycles (cycle 0 otherwise compiled its own, ~12 s on an H100).
        superset = free_mask(data, **_instrument_mask_options(fc))
        params, solve = minimize(chi2, params, mask, (data, lut, fstate), max_iter=fc.max_iter,
                                 method=m, residual_fn=_residual_vector,
                                 project=jax.tree_util.Partial(clip_to_bounds,
                                                                 atm_bounds=data.atm_bounds),
                                 superset=superset, **_normal_fns(fc))
    t_fit = time.perf_counter() - t_fit

    # ---- residuals and gray (un-crunched) ----
    var = obs_variance_compiled(data, jnp.asarray(sig_fgcm), fc.sigma0_phot)
    m_std = standard_magnitudes_compiled(params, data, lut, sed)
    # Star means: photometric observations; in cycle 0 only the bright ones, so that clouds
    # the initial cut let through do not drag the means (and hide in the gray).
    mean_use = obs_phot if bright is None else obs_phot & bright
    res = G.star_residuals(m_std, var, mean_use, data)
    gray = G.compute_gray(res, gray_use, data, min_star_per_ccd=fc.min_star_per_ccd)

    # ---- repeatability (reserved) and sigma_FGCM (fit stars), per band ----
    e, base_var, sel = _statistic_selection(res, mean_use, sig_fgcm, data)
    band = np.asarray(data.obs_band)
    reserved = np.asarray(data.star_reserved)[np.asarray(data.obs_star)]
    rep = _reserved_repeatability(e, sel, data)
    new_sig = np.array([_sigma_fgcm(e[sel & ~reserved & (band == b)],
                                    base_var[sel & ~reserved & (band == b)]) for b in range(nb)])

    # ---- star flat from residuals of photometric fit observations ----
    if not final:
        for _ in range(2):
            flat_use, e_flat = _star_flat_inputs(res, gray, fit_use, data)
            sf = update_star_flat(params.star_flat, e_flat, res.var_e, flat_use, data)
            params = _set_star_flat(params, sf)
            m_std = standard_magnitudes_compiled(params, data, lut, sed)
            res = G.star_residuals(m_std, var, mean_use, data)
            gray = G.compute_gray(res, gray_use, data, min_star_per_ccd=fc.min_star_per_ccd)

    # ---- outliers (against the detector gray) and exposure flags ----
    # Against the median of the star's photometric observations (previous outliers included,
    # so that a wrong outlier set cannot perpetuate itself); the mean-based test only for
    # star-bands with fewer than 3 photometric observations.
    m_gray, sigma, phot_all, by_mean = _outlier_inputs(
        m_std, res, gray, var, jnp.asarray(new_sig), jnp.asarray(exp_flags), data)
    by_median = G.median_outliers(m_gray, sigma, phot_all, data.obs_sb, data.n_sb, OUTLIER_NSIG)
    n_phot = np.bincount(np.asarray(data.obs_sb), weights=np.asarray(phot_all, float),
                         minlength=data.n_sb)[np.asarray(data.obs_sb)]
    by_mean = np.asarray(by_mean)
    new_outlier = jnp.asarray(np.asarray(data.obs_valid)
                              & np.where(n_phot >= 3, by_median, by_mean))
    eg_now = np.asarray(gray.exp_gray)
    lim_low = np.full(nb, fc.exp_gray_photometric_cut)
    lim_high = np.full(nb, fc.exp_gray_high_cut)
    if cycle == 0 and fc.freeze_std_atmosphere_cycle0:
        # Standard atmosphere: the configured cuts on the gray itself; but a night whose
        # extinction differs much from the standard would lose every exposure and never get
        # its atmosphere fitted (flags are recomputed each cycle, so only a whole lost night
        # is unrecoverable): such nights are cut on the gray relative to their clear-sky level.
        new_low, new_high = lim_low, lim_high
        trial = G.exposure_flags(gray, data, new_low, new_high,
                                 fc.exp_var_gray_photometric_cut, fc.min_star_per_exp,
                                 fc.min_exp_per_night)
        lost = (trial & G.EXP_TOO_FEW_EXP_ON_NIGHT) != 0
        has = (np.asarray(gray.exp_n_obs) > 0) & (eg_now > fc.exp_gray_initial_cut)
        reference = np.where(lost, G.night_band_reference(eg_now, has, data, new_low), 0.0)
    else:
        reference = None
        if final and state.low_cut is not None:
            # The clean-up flags with the cuts of the last fit cycle (those its record reports).
            # Re-derived from a photometric set those cuts had just changed, a 2.5 % shift of
            # the robust sigma let a 23 mmag cloud at -5.4 mmag back in (-5.05 -> -5.5 mmag;
            # simulator, tract preset seed 3).
            new_low, new_high = np.asarray(state.low_cut), np.asarray(state.high_cut)
        else:
            fit_exp = (exp_flags == 0) & np.asarray(data.fit_bands)[np.asarray(data.exp_band)]
            new_low, new_high = G.cuts_from_exposure_gray(
                eg_now, fit_exp, data, lim_low, lim_high, fc.auto_photometric_cut_nsig,
                fc.auto_high_cut_nsig)
    new_flags = G.exposure_flags(gray, data, new_low, new_high, fc.exp_var_gray_photometric_cut,
                                 fc.min_star_per_exp, fc.min_exp_per_night, reference=reference)
    if reference is None:
        # A (night, band) that lost every exposure may be a wrong atmosphere, not clouds: a
        # night fitted on its other bands can miss one band's extinction (simulator, tract
        # preset seed 3: all five clear g exposures of a night at -53 to -70 mmag, EGray/secz
        # -43 +- 0.5 mmag). Out of the fit it would stay wrong, so such (night, band)s are cut
        # relative to their clearest exposure's EGray/secz, as lost nights are in cycle 0;
        # clouds, which do not scale with airmass, still fail the cut, and an envelope that no
        # second exposure confirms is no reference (all exposures cloudy: it is the thinnest
        # cloud; seed 106: a 37.5 mmag r cloud that passed and pulled the night's atmosphere).
        # So are (night, band)s with two or more exposures above the high cut, unconfirmed:
        # brighter than the model, so the band's atmosphere is wrong that night (seed 11 with
        # one aperture pivot: four y clouds of 29-95 mmag absorbed by the night's water
        # vapour, the one clear y exposure +83 mmag and the thinnest cloud +54).
        lost = G.lost_night_bands(new_flags, gray, data)
        brighter = G.too_positive_night_bands(new_flags, data)
        if (lost | brighter).any():
            has = (np.asarray(gray.exp_n_obs) > 0) & (eg_now > fc.exp_gray_initial_cut)
            reference = np.where(brighter, G.night_band_reference(eg_now, has, data), 0.0)
            reference = np.where(lost & ~brighter,
                                 G.night_band_reference(eg_now, has, data, new_low), reference)
            new_flags = G.exposure_flags(
                gray, data, new_low, new_high, fc.exp_var_gray_photometric_cut,
                fc.min_star_per_exp, fc.min_exp_per_night, reference=reference)

    if keep_fitted_set:
        # ... and none of those comes back as photometric: an exposure the fit did not use
        # keeps its flags (it still gets a gray-corrected zeropoint)
        new_flags = np.where(exp_flags != 0, exp_flags, new_flags)

    # ---- next cycle's inputs ----
    new_sed = sed_slopes(res.sb_mean, res.sb_weight > 0, data)
    nxt = CycleState(params=params, exp_flags=new_flags, low_cut=new_low, high_cut=new_high,
                     sigma_fgcm=new_sig, sed_slope=new_sed, outlier=new_outlier,
                     fitted_flags=state.fitted_flags if final else exp_flags)
    return CycleResult(
        state=nxt, repeatability=rep, n_photometric=int(np.sum(exp_flags == 0)),
        exp_flags=exp_flags, gray=gray, residuals=res, mean_use=mean_use, solve=solve,
        seconds={"fit": t_fit, "total": time.perf_counter() - t0},
    )


def _normal_fns(fc):
    """The Gauss-Newton normal-equation builder of ``fit.gauss_newton_normal`` and its trial
    value, as ``minimize`` arguments. The structured one needs the SED-slope scale frozen,
    which the cycles' masks always keep."""
    if fc.gauss_newton_normal == "structured":
        return {"normal_fn": structured_normal_equations, "value_fn": structured_value}
    if fc.gauss_newton_normal == "generic":
        return {}
    raise ValueError(f"fit.gauss_newton_normal: {fc.gauss_newton_normal!r} (structured, generic)")


def _instrument_mask_options(fc) -> dict:
    """The configured parameter groups of :func:`free_mask` other than the nights."""
    return {"use_quadratic_pwv": fc.use_quadratic_pwv,
            "fit_aperture_correction": fc.fit_aperture_correction,
            "fit_throughput_slope": fc.fit_throughput_slope,
            "throughput_slope_min_days": fc.throughput_slope_min_days}


def _fitted_nights(exp_flags, data: FitData, min_exp_per_night: int) -> np.ndarray:
    night = np.asarray(data.exp_night)
    fit_band = np.asarray(data.fit_bands)[np.asarray(data.exp_band)]
    n_ok = np.bincount(night, weights=((exp_flags == 0) & fit_band).astype(float),
                       minlength=data.n_nights)
    return n_ok >= max(min_exp_per_night, 1)


def _statistic_selection(res: G.Residuals, mean_use, sig_fgcm, data: FitData):
    """EGray, the measurement part of its variance, and the observations that enter
    sigma_FGCM and the repeatability: in the star means, |EGray| < 50 mmag, sigma_E < 10 mmag."""
    e = np.asarray(res.egray)
    band = np.asarray(data.obs_band)
    base_var = np.asarray(res.var_e) - np.asarray(sig_fgcm)[band] ** 2
    sel = (np.asarray(mean_use) & (np.abs(e) < SIGFGCM_MAX_EGRAY) & (base_var > 0)
           & (base_var < SIGFGCM_MAX_ERR ** 2))
    return e, base_var, sel


def repeatability(m_std, var, mean_use, sig_fgcm, data: FitData) -> np.ndarray:
    """The fit's repeatability per band (mag): robust sigma of the reserved stars' EGray
    (star mean of the ``mean_use`` observations minus the observation) over the observations
    :func:`_statistic_selection` keeps. ``var``: the observations' variances in the fit's
    error model. Given noise-only magnitudes it is the statistic's noise floor
    (scripts/bench_fit.py)."""
    res = G.star_residuals(jnp.asarray(m_std), var, mean_use, data)
    e, _, sel = _statistic_selection(res, mean_use, sig_fgcm, data)
    return _reserved_repeatability(e, sel, data)


def _reserved_repeatability(e, sel, data: FitData) -> np.ndarray:
    """Robust sigma of the selected reserved stars' EGray, per band."""
    band = np.asarray(data.obs_band)
    reserved = np.asarray(data.star_reserved)[np.asarray(data.obs_star)]
    return np.array([G.robust_sigma(e[sel & reserved & (band == b)])
                     for b in range(data.n_bands)])


def _sigma_fgcm(e: np.ndarray, var0: np.ndarray) -> float:
    """Extra per-observation scatter s making sum e^2 / (var0 + s^2) equal the number of
    observations (chi2/dof = 1), after a 5-sigma robust clip; 0 when the errors already
    explain the scatter."""
    if len(e) < 10:
        return 0.0
    s = G.robust_sigma(e)
    if not np.isfinite(s) or s <= 0:
        return 0.0
    keep = np.abs(e - np.median(e)) < 5 * s
    e, var0 = e[keep], np.maximum(var0[keep], 1e-12)
    if np.mean(e * e / var0) <= 1.0:
        return 0.0
    lo, hi = 0.0, float(np.sqrt(np.mean(e * e)))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.mean(e * e / (var0 + mid * mid)) > 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _set_star_flat(params: FitParams, sf) -> FitParams:
    import equinox as eqx

    return eqx.tree_at(lambda p: p.star_flat, params, sf)
