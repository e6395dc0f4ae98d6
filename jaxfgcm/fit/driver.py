"""run_fit_cycles: the tract driver (fgcm-reference §6) and the final products of the fit.

Cycles run until no band's reserved-star repeatability improves by ``convergence_tolerance``
(fgcm's test, without an absolute value: a worsening also stops) or ``max_fit_cycles`` have run;
then a clean-up cycle without fit computes the final gray, "crunched" star magnitudes and the
zeropoints per (exposure, detector).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import gray as G
from .cycle import CycleState, run_cycle
from .data import FitData
from .loss import obs_variance, star_means
from .model import (
    MAG_PER_LN,
    PairTerms,
    exposure_atmosphere,
    pair_instrument,
    pair_terms_compiled,
    standard_magnitudes_compiled,
    star_flat_at_centre,
)
from .params import FitParams
from .sharding import obs_mesh, replicate, shard_fit_data
from .starflat import MIN_STARS_PER_COEF, star_flat_centre_variance

jax.config.update("jax_enable_x64", True)

# Zeropoint flags (fgcm zpFlagDict, fgcm-reference §5.2).
ZP_PHOTOMETRIC_FIT = 1
ZP_PHOTOMETRIC_NOTFIT = 2
ZP_NONPHOTOMETRIC = 4
ZP_NOFIT_NIGHT = 8
ZP_CANNOT_COMPUTE = 16
ZP_TOO_FEW_STARS_ON_CCD = 32

#: A detector gray needs an error below this (mag) to be used (fgcm maxCcdGrayErr).
MAX_CCD_GRAY_ERR = 0.05
#: The exposure gray may stand in for a detector's if its error is below this and it is above
#: EXP_GRAY_RECOVER_CUT (fgcm expGrayErrRecoverCut, expGrayRecoverCut).
EXP_GRAY_ERR_RECOVER_CUT = 0.05
EXP_GRAY_RECOVER_CUT = -1.0


@dataclass
class FitResult:
    """Everything the output stage needs. Per (exposure, detector) arrays are (n_exp, n_det)
    with exposures in ``visit`` order of FitData and detectors in camera order."""

    params: FitParams
    visit: np.ndarray
    # stars (n_stars, n_bands); NaN where a star has no good observation in a band
    star_mag: np.ndarray
    star_mag_err: np.ndarray
    star_n_good: np.ndarray
    star_reserved: np.ndarray
    # exposures
    exp_flags: np.ndarray
    exp_gray: np.ndarray
    exp_gray_err: np.ndarray
    exp_gray_rms: np.ndarray
    # (exposure, detector)
    zeropoint: np.ndarray  # mag: m_std = m_inst + zeropoint + delta_chrom (m_inst count rate)
    zeropoint_err: np.ndarray
    zeropoint_flag: np.ndarray
    ccd_gray: np.ndarray  # each detector's own mean EGray (NaN: too few stars)
    ccd_gray_err: np.ndarray
    i0: np.ndarray  # LUT I0 at the detector centre airmass (without instrument terms)
    i10: np.ndarray
    star_flat_centre: np.ndarray  # mag
    # per visit atmosphere (boresight airmass)
    atmosphere: dict
    sigma_fgcm: np.ndarray  # per band
    repeatability: np.ndarray  # (n_cycles + 1, n_bands): per cycle, then the clean-up cycle
    photometric_cuts: np.ndarray  # (n_cycles + 1, n_bands) low cut used per cycle
    high_cuts: np.ndarray
    cycles: list = field(default_factory=list)  # per cycle log records
    timings: dict = field(default_factory=dict)
    # What the final repeatability was computed from (clean-up cycle; cycle.repeatability):
    # the observations in its star means (padded observation order) and the sigma_FGCM of its
    # error model. With noise-only magnitudes they give the statistic's noise floor.
    repeatability_mean_use: np.ndarray | None = None
    repeatability_sigma_fgcm: np.ndarray | None = None
    #: The gray included in ``zeropoint`` (exposure gray, detector mean or focal-plane field;
    #: NaN where no zeropoint).
    zeropoint_gray: np.ndarray | None = None


def run_fit_cycles(data: FitData, lut, config, log: Callable[[str], None] | None = print,
                   params: FitParams | None = None, method: str | None = None,
                   checkpoint: Callable[[dict], None] | None = None,
                   resume_from: dict | None = None) -> FitResult:
    """Fit cycles until convergence, then the clean-up cycle and the products.

    ``lut`` is a :class:`jaxfgcm.lut.LutInterpolator` (or a LookupTable, converted here).
    ``log`` receives one line per cycle (None: silent). ``checkpoint`` receives, after every
    completed cycle, a picklable snapshot (NumPy only) of everything the next cycle needs;
    ``resume_from`` = such a snapshot continues after that cycle, giving the same result as an
    uninterrupted run (tests/test_fit.py).

    The clean-up starts from the fit cycle with the best reserved repeatability (fewest fit bands
    without one, then the lowest mean over the fit bands), normally the last one: a cycle that
    re-admits a cloud can leave the repeatability worse than the cycle before (tract preset,
    seed 3, fit.random_seed 2: i, z, y 4.4, 5.0, 5.7 -> 6.2, 7.4, 8.1 mmag in the fifth cycle,
    docs/fit.md), and ending there would throw the better calibration away.
    """
    _check_fit_config(config)
    lut = _interpolator(lut)
    if jax.device_count() > 1:
        # One code path for 1..N devices: observations split over all devices, the rest
        # replicated (jaxfgcm.fit.sharding; identical results to one device, tests/test_sharding).
        mesh = obs_mesh()
        data = shard_fit_data(data, mesh)
        lut = replicate(lut, mesh)
    fc = config.fit
    t_start = time.perf_counter()
    state = CycleState(params=params if params is not None else
                       FitParams.standard(data, config.standard_atmosphere,
                                          config.fit.sed_slope_scale))
    prev = np.full(data.n_bands, np.inf)
    reps, lows, highs, records = [], [], [], []
    fit_bands = np.asarray(data.fit_bands)
    first, converged = 0, False
    best = None  # (score, cycle, state after it) of the best fit cycle so far
    if resume_from is not None:
        (first, converged, state, prev, reps, lows, highs, records,
         best) = _restore(resume_from, data)
        if log is not None:
            log(f"fit: resumed after cycle {first - 1}")
    for cycle in range(first, fc.max_fit_cycles):
        if converged and cycle > 1:
            break
        low_used = state.low_cut if state.low_cut is not None else np.full(
            data.n_bands, fc.exp_gray_photometric_cut)
        high_used = state.high_cut if state.high_cut is not None else np.full(
            data.n_bands, fc.exp_gray_high_cut)
        out = run_cycle(data, lut, config, state, cycle=cycle, method=method)
        rec = _record(cycle, out, data, low_used, high_used)
        records.append(rec)
        reps.append(out.repeatability)
        lows.append(low_used)
        highs.append(high_used)
        if log is not None:
            log(_format(rec, data))
        state = out.state
        score = _repeatability_score(out.repeatability, fit_bands)
        if best is None or score < best[0]:
            best = (score, cycle, state)
        have = np.isfinite(out.repeatability) & fit_bands
        # Not converged while the photometric set still changes (the next fit differs).
        converged = (bool(np.all((prev - out.repeatability)[have] < fc.convergence_tolerance))
                     and np.array_equal(out.state.exp_flags == 0, out.exp_flags == 0))
        prev = np.where(np.isfinite(out.repeatability), out.repeatability, prev)
        if checkpoint is not None:
            checkpoint(_snapshot(cycle, converged, state, prev, reps, lows, highs, records,
                                 best))
        if converged and cycle > 0:
            break
    from_cycle = records[-1]["cycle"]
    if best is not None and best[1] != from_cycle:
        if log is not None:
            n_last, last = _repeatability_score(reps[-1], fit_bands)
            n_best, mean_best = best[0]
            log(f"fit: cycle {from_cycle} left the reserved repeatability worse than cycle "
                f"{best[1]} (mean over the fit bands {1e3 * last:.2f} vs {1e3 * mean_best:.2f} "
                f"mmag, bands without one {n_last} vs {n_best}); the clean-up starts from cycle "
                f"{best[1]}")
        from_cycle, state = best[1], best[2]
    low_used, high_used = state.low_cut, state.high_cut
    final = run_cycle(data, lut, config, state, cycle=len(records), final=True)
    rec = _record(len(records), final, data, low_used, high_used, cleanup=True)
    rec["from_cycle"] = int(from_cycle)
    records.append(rec)
    reps.append(final.repeatability)
    lows.append(low_used)
    highs.append(high_used)
    if log is not None:
        log(_format(rec, data))
    result = _products(data, lut, config, final, state)
    result.repeatability = np.asarray(reps)
    result.photometric_cuts = np.asarray(lows)
    result.high_cuts = np.asarray(highs)
    result.cycles = records
    result.timings = {"total": time.perf_counter() - t_start,
                          "fit": sum(r["fit_seconds"] for r in records),
                          "cycles": [r["seconds"] for r in records]}
    return result


def _check_fit_config(config) -> None:
    """Fit settings the config loader cannot check alone (they need the instrument's bands)."""
    from jaxfgcm.config import ConfigError

    known = set(config.instrument.physical_filters.values())
    unknown = sorted(set(config.fit.sed_slope_scale) - known)
    if unknown:
        raise ConfigError(f"'fit.sed_slope_scale': {unknown} are not bands of any physical "
                          f"filter (bands: {sorted(known)})")
    if config.fit.max_fit_cycles < 1:
        raise ConfigError(f"'fit.max_fit_cycles' must be at least 1 (the clean-up needs a fit "
                          f"cycle's cuts), got {config.fit.max_fit_cycles}")


def _repeatability_score(repeatability, fit_bands) -> tuple[int, float]:
    """How the driver ranks its cycles (lower is better): first the number of fit bands
    without a reserved repeatability (a cycle that lost all photometric exposures of a band must
    not win by leaving it out; the demo's cycles 1 and 2 have no y), then the mean over those
    with one."""
    r = np.asarray(repeatability, dtype=np.float64)[np.asarray(fit_bands, dtype=bool)]
    ok = np.isfinite(r)
    return int((~ok).sum()), (float(r[ok].mean()) if ok.any() else float("inf"))


def _state_arrays_to(state, to):
    """``state`` with its arrays converted by ``to`` (np.asarray: host copy for a checkpoint;
    jnp.asarray: back on the device)."""
    def conv(x):
        return None if x is None else to(x)

    return dataclasses.replace(
        state, params=jax.tree_util.tree_map(to, state.params),
        sed_slope=conv(state.sed_slope), outlier=conv(state.outlier))


def _host_state(state):
    return _state_arrays_to(state, np.asarray)


def _device_state(state):
    return _state_arrays_to(state, jnp.asarray)


def _snapshot(cycle, converged, state, prev, reps, lows, highs, records, best=None) -> dict:
    """Host (NumPy) copy of the loop state after ``cycle``: picklable, device independent."""
    return {"cycle": cycle, "converged": bool(converged), "state": _host_state(state),
            "prev": np.asarray(prev), "reps": list(reps), "lows": list(lows),
            "highs": list(highs), "records": list(records),
            "best": None if best is None else (best[0], best[1], _host_state(best[2]))}


def _restore(snap: dict, data: FitData):
    state = snap["state"]
    n_obs_rows = data.obs_mag.shape[0]
    if state.outlier is not None and len(state.outlier) != n_obs_rows:
        raise ValueError(f"fit checkpoint has {len(state.outlier)} observation rows, the data "
                         f"{n_obs_rows}: it belongs to other data or another device count")

    best = snap.get("best")  # snapshots written before 2026-12-03 lack it
    if best is not None:
        best = (best[0], best[1], _device_state(best[2]))
    return (snap["cycle"] + 1, snap["converged"], _device_state(state), snap["prev"],
            list(snap["reps"]), list(snap["lows"]), list(snap["highs"]),
            list(snap["records"]), best)


def _interpolator(lut):
    if hasattr(lut, "interp"):
        return lut
    from jaxfgcm.lut import LutInterpolator  # the NumPy LookupTable -> JAX interpolator

    return LutInterpolator.from_lut(lut)


def _record(cycle, out, data, low, high, cleanup=False):
    s = out.solve
    return {
        "cycle": cycle, "cleanup": cleanup,
        "repeatability": dict(zip(data.bands, map(float, out.repeatability))),
        "n_photometric": out.n_photometric, "n_exposures": data.n_exp,
        "photometric_cut": dict(zip(data.bands, map(float, low))),
        "high_cut": dict(zip(data.bands, map(float, high))),
        "sigma_fgcm": dict(zip(data.bands, map(float, out.state.sigma_fgcm))),
        "solver": None if s is None else {"method": s.method, "iterations": s.iterations,
                                           "passes": s.passes, "loss_start": s.loss_start,
                                           "loss_end": s.loss_end, "converged": s.converged},
        "fit_seconds": out.seconds["fit"], "seconds": out.seconds["total"],
    }


def _format(rec, data):
    rep = " ".join(f"{b}={1000 * v:.2f}" for b, v in rec["repeatability"].items()
                   if np.isfinite(v))
    cuts = " ".join(f"{b}=[{1000 * rec['photometric_cut'][b]:.1f},{1000 * rec['high_cut'][b]:.1f}]"
                    for b in rec["repeatability"] if np.isfinite(rec["repeatability"][b]))
    s = rec["solver"]
    solver = "no fit" if s is None else (f"{s['method']} {s['iterations']} it {s['passes']} passes"
                                         f" chi2 {s['loss_start']:.4g}->{s['loss_end']:.4g}")
    name = "clean-up" if rec["cleanup"] else f"cycle {rec['cycle']}"
    return (f"fit {name}: repeatability (mmag) {rep}; photometric {rec['n_photometric']}/"
            f"{rec['n_exposures']}; cuts (mmag) {cuts}; {solver}; {rec['seconds']:.1f} s")


def _stars_per_flat_group(data: FitData, use: np.ndarray) -> np.ndarray:
    """Distinct stars with a used observation in each star-flat group (epoch, filter, det)."""
    n_groups = data.n_epochs * data.n_filters * data.n_det
    grp = np.asarray(data.obs_flat_group)[use].astype(np.int64)
    star = np.asarray(data.obs_star)[use].astype(np.int64)
    pairs = np.unique(grp * data.n_stars + star)
    return np.bincount(pairs // data.n_stars, minlength=n_groups)


@jax.jit
def _zeropoint_terms(params: FitParams, data: FitData, terms: PairTerms):
    """Per (exposure, detector) pair, from the LUT terms at the pair's own airmass
    (:func:`pair_terms_compiled`): the LUT term at the detector centre's airmass (first order,
    as for the observations), the LUT term at the pair's own airmass, I10, the instrument
    terms and the star flat at the centre. One compiled program: run eagerly these were ~170
    single-operation programs, each compiled on first use (~4 s on the 2-core CPU)."""
    mag_i0 = terms.mag_i0 + terms.dmag_i0 * (data.pair_secz_centre - data.pair_secz)
    return (mag_i0, terms.mag_i0, terms.i10, pair_instrument(params, data),
            star_flat_at_centre(params, data))


@jax.jit
def _crunched_means(m, exp_flags, outlier, sigma_fgcm, sigma0, data: FitData):
    """The observations the crunched star means use (photometric exposures, not outliers) and
    per star-band the weighted mean, its error, the summed weight and the count. Compiled:
    eagerly, ~20 single-operation programs compiled on first use."""
    var = obs_variance(data, sigma_fgcm, sigma0)
    use = data.obs_valid & (exp_flags == 0)[data.obs_exp] & ~outlier
    mean, err, sw = star_means(m, jnp.where(use, 1.0 / var, 0.0), data)
    return use, mean, err, sw, jax.ops.segment_sum(use.astype(jnp.int32), data.obs_sb, data.n_sb)


# Compiled: run eagerly these were ~40 single-operation programs, each compiled on first use.
_pair_flat_group = jax.jit(lambda data: data.pair_flat_group)
_exposure_atmosphere = jax.jit(exposure_atmosphere)


#: Planck constant (erg s), for the AB normalisation.
PLANCK_ERG_S = 6.62607015e-27


def zpt_ab_no_throughput(instrument) -> float:
    """fgcm's zptABNoThroughput (fgcm-reference §1.2): 2.5 log10(A / (h g)) - 48.6 with A the
    collecting area pi (D/2)^2 in cm^2, h in erg s and g the gain (e-/ADU). With the LUT's
    I0 = int S dlambda/lambda, m_AB = -2.5 log10(ADU/s) + this + 2.5 log10 I0 for a flat-f_nu
    source, so adding it makes the zeropoints and star magnitudes AB (HSC: 30.07 mag)."""
    area_cm2 = math.pi * (50.0 * float(instrument.mirror_diameter_m)) ** 2
    return 2.5 * math.log10(area_cm2 / (PLANCK_ERG_S * float(instrument.gain))) - 48.6


def _products(data: FitData, lut, config, final, state: CycleState) -> FitResult:
    fc = config.fit
    params = state.params
    gray = final.gray
    nE, nD = data.n_exp, data.n_det
    exp_flags = final.state.exp_flags
    sig = np.asarray(final.state.sigma_fgcm)

    # gray used per pair: detector gray where good, else a recoverable exposure gray
    pg = np.asarray(gray.pair_gray).reshape(nE, nD)
    pe = np.asarray(gray.pair_gray_err).reshape(nE, nD)
    pn = np.asarray(gray.pair_n_star).reshape(nE, nD)
    eg, ee, er = (np.asarray(gray.exp_gray), np.asarray(gray.exp_gray_err),
                  np.asarray(gray.exp_gray_rms))
    ccd_ok = (pn >= fc.min_star_per_ccd) & (pe < MAX_CCD_GRAY_ERR)
    n_good_ccd = ccd_ok.sum(1)
    recover = ((n_good_ccd >= min(fc.min_ccd_per_exp, nD)) & (ee <= EXP_GRAY_ERR_RECOVER_CUT)
               & (er ** 2 <= fc.exp_var_gray_photometric_cut) & (eg >= EXP_GRAY_RECOVER_CUT))
    # Photometric exposures take the exposure gray on every detector: their per-detector
    # structure is the star flat's (fitted on all exposures), and a detector gray only adds
    # the noise of its ~20 stars (measured on the simulator's tract preset: zeropoint RMS
    # 2.0-4.2 mmag per band instead of 2.5-4.6). fgcm uses the detector gray everywhere.
    phot_exp = (exp_flags == 0) & recover
    use_ccd = ccd_ok & ~phot_exp[:, None]
    use_exp = ~use_ccd & (recover | phot_exp)[:, None]
    gray_used = np.where(use_ccd, pg, np.where(use_exp, eg[:, None], 0.0))
    gray_var = np.where(use_ccd, pe ** 2, np.where(use_exp, ee[:, None] ** 2 + er[:, None] ** 2,
                                                   np.nan))
    if fc.ccd_gray_focal_plane:
        # Non-photometric exposures: the focal-plane field where it could be fitted, on every
        # detector that has a gray either way (its own or the exposure's).
        fp, fp_err, fp_ok = G.focal_plane_gray(pg, pe, ccd_ok, np.asarray(data.det_fp_xy),
                                               fc.ccd_gray_focal_plane_order)
        take = (fp_ok & ~phot_exp)[:, None] & (use_ccd | use_exp)
        gray_used = np.where(take, fp, gray_used)
        gray_var = np.where(take, fp_err ** 2, gray_var)

    # crunched star magnitudes over photometric exposures (reserved stars included)
    sed = final.state.sed_slope
    m = standard_magnitudes_compiled(params, data, lut, sed,
                                     pair_gray=jnp.asarray(gray_used.ravel()))
    use, mean, err, sw, n_good = _crunched_means(m, jnp.asarray(exp_flags), final.state.outlier,
                                                 jnp.asarray(sig), fc.sigma0_phot, data)
    sb_star, sb_band = np.asarray(data.sb_star), np.asarray(data.sb_band)
    star_mag = np.full((data.n_stars, data.n_bands), np.nan)
    star_err = np.full((data.n_stars, data.n_bands), np.nan)
    star_n = np.zeros((data.n_stars, data.n_bands), np.int64)
    has = np.asarray(sw) > 0
    zpt_ab = zpt_ab_no_throughput(config.instrument)
    star_mag[sb_star[has], sb_band[has]] = np.asarray(mean)[has] + zpt_ab
    star_err[sb_star[has], sb_band[has]] = np.asarray(err)[has]
    star_n[sb_star, sb_band] = np.asarray(n_good)

    # zeropoints: 2.5 log10 I0 (detector centre) + throughput + filter offset + flat + gray
    terms = pair_terms_compiled(params, data, lut)
    mag_i0, i0_mag, i10, inst, flat_c = (np.asarray(x).reshape(nE, nD)
                                         for x in _zeropoint_terms(params, data, terms))
    zpt = zpt_ab + mag_i0 + inst + flat_c + gray_used
    # zeropoint error: gray error and sigma_FGCM over the mean number of observations per star
    nobs_sb = np.bincount(np.asarray(data.obs_sb), weights=np.asarray(use, float),
                          minlength=data.n_sb)
    pair = np.asarray(data.obs_pair)
    valid = np.asarray(data.obs_valid)
    til = (np.bincount(pair[valid], weights=nobs_sb[np.asarray(data.obs_sb)][valid],
                       minlength=nE * nD)
           / np.maximum(np.bincount(pair[valid], minlength=nE * nD), 1)).reshape(nE, nD)
    band = np.asarray(data.exp_band)
    # + the star flat's error at the detector centre (not in fgcm's formula; ~0.5 mmag for a
    # typical detector of the tract preset, several mmag for sparse tract-edge ones)
    pair_group = np.asarray(_pair_flat_group(data))
    var_flat = np.asarray(star_flat_centre_variance(final.residuals.var_e, jnp.asarray(use),
                                                    data))[pair_group]
    zerr = np.sqrt(gray_var + sig[band][:, None] ** 2 / np.maximum(til - 1, 1)
                   + var_flat.reshape(nE, nD))

    # flags
    fit_band = np.asarray(data.fit_bands)[band]
    night_bad = (exp_flags & G.EXP_TOO_FEW_EXP_ON_NIGHT) != 0
    no_stars = (exp_flags & G.EXP_NO_STARS) != 0
    have_gray = use_ccd | use_exp
    flag = np.zeros((nE, nD), np.int64)
    phot_e = exp_flags == 0
    flag[:] = np.where(phot_e & fit_band, ZP_PHOTOMETRIC_FIT,
                       np.where(phot_e, ZP_PHOTOMETRIC_NOTFIT, ZP_NONPHOTOMETRIC))[:, None]
    flag = np.where(night_bad[:, None], np.where(ccd_ok, ZP_NOFIT_NIGHT, ZP_CANNOT_COMPUTE), flag)
    flag = np.where(~have_gray & (flag < ZP_CANNOT_COMPUTE), ZP_TOO_FEW_STARS_ON_CCD, flag)
    # A detector whose star flat (per epoch, filter) rests on too few stars has an unknown
    # offset (the simulator's detector offsets alone scatter by 8 mmag; on the tiny preset
    # detectors at the tract edge with 0-5 stars were off by up to 56 mmag).
    n_flat = _stars_per_flat_group(data, np.asarray(use))
    few = (n_flat[pair_group] < MIN_STARS_PER_COEF).reshape(nE, nD)
    flag = np.where(few & (flag < ZP_CANNOT_COMPUTE), ZP_TOO_FEW_STARS_ON_CCD, flag)
    flag = np.where(no_stars[:, None], ZP_CANNOT_COMPUTE, flag)
    bad = flag >= ZP_CANNOT_COMPUTE
    zpt = np.where(bad, np.nan, zpt)
    zerr = np.where(bad, np.nan, zerr)

    # per visit atmosphere at the boresight airmass
    atm = _exposure_atmosphere(params, data)
    atmosphere = {"visit": np.asarray(data.exp_visit), "pressure": np.asarray(atm.pressure),
                      "pwv": np.asarray(atm.pwv), "o3": np.asarray(atm.o3), "tau": np.asarray(atm.tau),
                      "alpha": np.asarray(atm.alpha), "secz": np.asarray(data.exp_secz)}

    return FitResult(
        params=params, visit=np.asarray(data.exp_visit),
        star_mag=star_mag, star_mag_err=star_err, star_n_good=star_n,
        star_reserved=np.asarray(data.star_reserved),
        exp_flags=exp_flags, exp_gray=eg, exp_gray_err=ee, exp_gray_rms=er,
        zeropoint=zpt, zeropoint_err=zerr, zeropoint_flag=flag,
        ccd_gray=np.where(ccd_ok, pg, np.nan), ccd_gray_err=np.where(ccd_ok, pe, np.nan),
        i0=np.exp(i0_mag / MAG_PER_LN),
        i10=i10,
        star_flat_centre=flat_c, atmosphere=atmosphere, sigma_fgcm=sig,
        repeatability=np.zeros(0), photometric_cuts=np.zeros(0), high_cuts=np.zeros(0),
        repeatability_mean_use=np.asarray(final.mean_use),
        repeatability_sigma_fgcm=(np.zeros(data.n_bands) if state.sigma_fgcm is None
                                  else np.asarray(state.sigma_fgcm)),
        zeropoint_gray=np.where(bad, np.nan, gray_used),
    )
