"""jaxfgcm.fit on synthetic data generated through the fit's own model (known truth).

The physics-level end-to-end test (simulator -> stars -> fit) is tests/test_fit_e2e.py.
"""

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfgcm.config import Config
from jaxfgcm.fit import FitParams, FitState, chi2, free_mask, minimize, run_fit_cycles
from jaxfgcm.fit.cycle import _residual_vector
from jaxfgcm.fit.driver import zpt_ab_no_throughput
from jaxfgcm.fit.loss import degrees_of_freedom
from jaxfgcm.fit.model import (
    pair_instrument,
    pair_terms,
    standard_magnitudes,
    star_flat_at_centre,
)
from jaxfgcm.fit.params import clip_to_bounds
from jaxfgcm.fit.synthetic import make_synthetic
from jaxfgcm.fit.uncertainty import _fisher_from_jacobian, _fisher_structured, parameter_covariance

CFG = Config().with_overrides({
    "instrument.bands": ["g", "r", "i"], "fit.fit_bands": ["g", "r", "i"],
    "fit.min_star_per_exp": 50, "fit.max_fit_cycles": 3, "fit.max_iter": 20,
})


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(CFG, n_stars=800, n_nights=3, visits_per_night=16, n_det=6, seed=11)


def _truth_state(data, truth, sigma_fgcm=0.0):
    use = data.obs_valid & jnp.asarray(truth["photometric"])[data.obs_exp]
    return FitState(sed_slope=truth["sed_slope"], obs_use=use,
                    sigma_fgcm=jnp.full(data.n_bands, sigma_fgcm), sigma0=CFG.fit.sigma0_phot)


def _true_zeropoints(data, lut, truth):
    p = truth["params"]
    t = pair_terms(p, data, lut)
    shape = (data.n_exp, data.n_det)
    return (np.asarray(t.mag_i0).reshape(shape) + np.asarray(pair_instrument(p, data)).reshape(shape)
            + np.asarray(star_flat_at_centre(p, data)).reshape(shape)
            + truth["pair_gray"].reshape(shape))


def test_chi2_at_truth_is_noise(synth):
    data, lut, truth = synth
    st = _truth_state(data, truth)
    red = float(chi2(truth["params"], data, lut, st)) / float(degrees_of_freedom(data, st))
    assert 0.9 < red < 1.1


def test_fit_recovers_instrument_and_chi2(synth):
    """From the standard atmosphere, with the truth's photometric set, SEDs and star flat: the
    fit reaches the noise level and recovers the filter offsets."""
    data, lut, truth = synth
    st = _truth_state(data, truth)
    tp = truth["params"]
    p0 = eqx.tree_at(lambda p: p.star_flat, FitParams.standard(data, CFG.standard_atmosphere, CFG.fit.sed_slope_scale),
                     tp.star_flat)
    proj = partial(clip_to_bounds, atm_bounds=data.atm_bounds)
    p, info = minimize(chi2, p0, free_mask(data), (data, lut, st), max_iter=30,
                       method="gauss_newton", residual_fn=_residual_vector, project=proj)
    assert info.converged and info.iterations <= 20
    dof = float(degrees_of_freedom(data, st))
    assert info.loss_end / dof < 1.05
    free = np.asarray(free_mask(data).filter_offset)
    d = np.asarray(p.filter_offset - tp.filter_offset)[free]
    assert np.all(np.abs(d) < 1e-3)
    # per-exposure 2.5 log10 I0 (what the zeropoints need) to sub-mmag
    a = np.asarray(pair_terms(p, data, lut).mag_i0) - np.asarray(pair_terms(tp, data, lut).mag_i0)
    ph = np.repeat(truth["photometric"], data.n_det)
    band = np.repeat(np.asarray(data.exp_band), data.n_det)
    for b in range(data.n_bands):
        x = a[ph & (band == b)]
        assert np.sqrt(np.mean((x - x.mean()) ** 2)) < 1e-3
    # L-BFGS reaches the same minimum (within 0.5 %)
    _p2, info2 = minimize(chi2, p0, free_mask(data), (data, lut, st), max_iter=200,
                         method="lbfgs")
    assert info2.loss_end < 1.005 * info.loss_end


def test_a_throughput_drift_is_fitted_not_absorbed_by_the_atmosphere():
    """Six nights over 30 days and a throughput decline of 0.5 mmag/day in every band (the
    simulator's mirror dust), data generated through the fit's model: with the slope free (the
    default) the fit recovers it and the photometric zeropoints; frozen, the nightly
    atmosphere absorbs the drift night by night and the zeropoints are worse."""
    data, lut, truth = make_synthetic(CFG, n_stars=500, n_nights=6, visits_per_night=10,
                                      n_det=4, seed=5, night_step_days=6.0,
                                      throughput_slope=0.0005)
    st = _truth_state(data, truth)
    tp = truth["params"]
    p0 = eqx.tree_at(lambda p: p.star_flat, FitParams.standard(data, CFG.standard_atmosphere,
                                                               CFG.fit.sed_slope_scale),
                     tp.star_flat)
    proj = partial(clip_to_bounds, atm_bounds=data.atm_bounds)
    fc = CFG.fit
    assert fc.fit_throughput_slope and fc.throughput_slope_min_days <= 30.0
    # a band whose exposures span less than the minimum (here ~30.3 days) keeps it frozen
    short = free_mask(data, fit_throughput_slope=True, throughput_slope_min_days=31.0)
    assert not np.asarray(short.throughput_slope).any()
    true_zp = _true_zeropoints(data, lut, truth)
    ph = np.asarray(truth["photometric"])
    band = np.asarray(data.exp_band)

    def fit(free_slope):
        mask = free_mask(data, fit_throughput_slope=free_slope,
                         throughput_slope_min_days=fc.throughput_slope_min_days)
        assert bool(np.asarray(mask.throughput_slope).all()) == free_slope
        p, _ = minimize(chi2, p0, mask, (data, lut, st), max_iter=40, method="gauss_newton",
                        residual_fn=_residual_vector, project=proj)
        zp = _true_zeropoints(data, lut, {"params": p, "pair_gray": truth["pair_gray"]})
        d = (zp - true_zp)[ph]
        rms = [float(np.std(d[band[ph] == b])) for b in range(data.n_bands)]
        return p, np.asarray(rms)

    p, rms = fit(True)
    slope = np.asarray(p.throughput_slope)[:, 0]
    # measured: 0.55, 0.70, 0.32 mmag/day (g r i; each band's slope trades with its nightly
    # extinction), mean 0.52; zeropoints 0.27, 0.24, 0.39 mmag RMS
    assert abs(slope.mean() - 0.0005) < 0.05e-3 and np.all(np.abs(slope - 0.0005) < 0.25e-3), slope
    assert np.all(rms < 0.5e-3), rms
    _, rms_frozen = fit(False)
    # measured: 1.05, 0.33, 0.43 mmag
    assert rms_frozen.max() > 2 * rms.max() and rms_frozen.max() > 0.8e-3, rms_frozen


def test_grad_matches_finite_differences(synth):
    data, lut, truth = synth
    st = _truth_state(data, truth, sigma_fgcm=0.002)
    p = truth["params"]
    f = jax.jit(chi2)
    g = jax.grad(chi2)(p, data, lut, st)
    for name, idx, h in [("o3", 0, 1e-3), ("ln_tau", 1, 1e-5), ("alpha", 0, 1e-5),
                         ("ln_pwv_slope", 1, 1e-5), ("filter_offset", 1, 1e-6),
                         ("star_flat", (3, 1), 1e-6)]:
        def shifted(d, name=name, idx=idx):
            return eqx.tree_at(lambda q, name=name: getattr(q, name), p,
                               getattr(p, name).at[idx].add(d))
        fd = (float(f(shifted(h), data, lut, st)) - float(f(shifted(-h), data, lut, st))) / (2 * h)
        an = float(getattr(g, name)[idx])
        assert an == pytest.approx(fd, rel=1e-4, abs=1e-2), name


def test_freezing(synth):
    data, lut, truth = synth
    st = _truth_state(data, truth)
    p0 = FitParams.standard(data, CFG.standard_atmosphere, CFG.fit.sed_slope_scale)
    mask = free_mask(data, fit_atmosphere=False)
    p, _ = minimize(chi2, p0, mask, (data, lut, st), max_iter=5, method="gauss_newton",
                    residual_fn=_residual_vector)
    for name in ("o3", "ln_tau", "alpha", "ln_pwv", "ln_pwv_slope", "star_flat"):
        np.testing.assert_array_equal(np.asarray(getattr(p, name)), np.asarray(getattr(p0, name)))
    assert np.any(np.asarray(p.filter_offset) != 0.0)
    # element-level: first wash interval and standard filters never move
    assert not np.any(np.asarray(mask.throughput)[:, 0])
    assert not np.any(np.asarray(mask.filter_offset)[np.asarray(data.filter_is_std)])
    # the same with L-BFGS (full vector, zero steps on frozen elements)
    p, _ = minimize(chi2, p0, mask, (data, lut, st), max_iter=5, method="lbfgs")
    np.testing.assert_array_equal(np.asarray(p.alpha), np.asarray(p0.alpha))


def test_float32_matches_float64(synth):
    data, lut, truth = synth
    st = _truth_state(data, truth)
    d32 = data.with_obs_dtype(jnp.float32)
    p = truth["params"]
    m64 = np.asarray(standard_magnitudes(p, data, lut, st.sed_slope))
    m32 = np.asarray(standard_magnitudes(p, d32, lut, st.sed_slope))
    assert m32.dtype == np.float32
    assert np.max(np.abs(m64 - m32)[np.asarray(data.obs_valid)]) < 1e-5  # 0.01 mmag
    c64, c32 = float(chi2(p, data, lut, st)), float(chi2(p, d32, lut, st))
    assert c32 == pytest.approx(c64, rel=1e-3)


def test_linearised_airmass_matches_direct_evaluation(synth):
    """The per-pair LUT evaluation plus first-order airmass correction agrees with evaluating
    the LUT at every observation's own airmass."""
    data, lut, truth = synth
    p = truth["params"]
    t = pair_terms(p, data, lut)
    pair = data.obs_pair
    lin = t.mag_i0[pair] + t.dmag_i0[pair] * data.obs_dsecz
    from jaxfgcm.fit.model import exposure_atmosphere

    atm = exposure_atmosphere(p, data)
    e = data.obs_exp
    i0, _ = lut.interp(data.exp_filter[e], data.obs_det, atm.pressure[e], atm.pwv[e], atm.o3[e],
                       atm.tau[e], atm.alpha[e], data.pair_secz[pair] + data.obs_dsecz)
    direct = 2.5 * jnp.log10(i0)
    v = np.asarray(data.obs_valid)
    assert np.max(np.abs(np.asarray(lin - direct))[v]) < 2e-5


def test_uncertainties_cover_the_truth(synth):
    data, lut, truth = synth
    st = _truth_state(data, truth)
    tp = truth["params"]
    mask = eqx.tree_at(lambda m: m.star_flat, free_mask(data, fit_atmosphere=False),
                       jnp.zeros_like(free_mask(data).star_flat))
    p0 = eqx.tree_at(lambda p: p.star_flat, tp, tp.star_flat)
    p0 = eqx.tree_at(lambda p: p.filter_offset, p0, jnp.zeros_like(tp.filter_offset))
    p, _ = minimize(chi2, p0, mask, (data, lut, st), max_iter=10, method="gauss_newton",
                    residual_fn=_residual_vector)
    _, err = parameter_covariance(p, mask, data, lut, st)
    free = np.asarray(mask.filter_offset)
    e = np.asarray(err.filter_offset)[free]
    pull = (np.asarray(p.filter_offset) - np.asarray(tp.filter_offset))[free] / e
    assert np.all(e > 0) and np.all(e < 1e-3)
    assert np.all(np.abs(pull) < 4)
    assert np.all(np.isnan(np.asarray(err.o3)))  # frozen -> no error


def test_structured_fisher_matrix_matches_the_jacobian(synth):
    """parameter_covariance's default Fisher matrix (fit.normal, no Jacobian) against J^T J
    from the full Jacobian: atmosphere, instrument and star flat free."""
    data, lut, truth = synth
    st = _truth_state(data, truth)
    mask = free_mask(data, fit_star_flat=True)
    f_s, chi2_s = _fisher_structured(truth["params"], mask, data, lut, st)
    f_j, chi2_j = _fisher_from_jacobian(truth["params"], mask, data, lut, st)
    d = float(jnp.max(jnp.abs(f_s - f_j)) / jnp.max(jnp.abs(f_j)))
    assert d < 1e-12, d  # measured 2e-16
    assert chi2_s == pytest.approx(chi2_j, rel=1e-12)
    _, err_s = parameter_covariance(truth["params"], mask, data, lut, st)
    _, err_j = parameter_covariance(truth["params"], mask, data, lut, st, method="jacobian")
    a, b = np.asarray(err_s.o3), np.asarray(err_j.o3)
    # the pseudo-inverse of the nearly singular F (star flat and throughput free) amplifies
    # the 1e-16 difference: measured 2e-6 in the errors
    assert np.all(np.isfinite(a)) and np.allclose(a, b, rtol=1e-4)
    with pytest.raises(ValueError, match="SED-slope scale"):
        parameter_covariance(truth["params"], free_mask(data, fit_sed_scale=True), data, lut, st,
                             method="structured")


def test_run_fit_cycles_recovers_truth(synth):
    data, lut, truth = synth
    lines = []
    res = run_fit_cycles(data, lut, CFG, log=lines.append)
    assert len(lines) == res.repeatability.shape[0] and "repeatability" in lines[0]
    # photometric flags: every cloud thicker than 10 mmag (measured: all), no clear exposure
    # (measured: none) -- the cuts follow the photometric exposures' gray spread.
    flagged = res.exp_flags != 0
    assert np.all(flagged[truth["exp_gray"] < -0.1])
    assert np.mean(flagged[truth["exp_gray"] < -0.010]) >= 0.95
    assert np.mean(flagged[truth["photometric"]]) <= 0.05
    # zeropoints vs truth after one constant per band: photometric (flag 1) and gray-corrected
    # non-photometric (flag 4) rows
    d = res.zeropoint - _true_zeropoints(data, lut, truth)
    band = np.asarray(data.exp_band)[:, None] * np.ones((1, data.n_det), int)
    for b in range(data.n_bands):
        one = (res.zeropoint_flag == 1) & (band == b)
        c = np.median(d[one])
        # the constant is the AB term (the synthetic truth has none) to a few mmag
        assert abs(c - zpt_ab_no_throughput(CFG.instrument)) < 0.01
        # measured 0.3 mmag (flag 1) and 0.5-0.7 mmag (flag 4)
        assert np.sqrt(np.mean((d[one] - c) ** 2)) < 0.001
        four = (res.zeropoint_flag == 4) & (band == b)
        if four.any():
            assert np.sqrt(np.mean((d[four] - c) ** 2)) < 0.002
        print("zeropoint rms (mmag) band", b, 1e3 * np.sqrt(np.mean((d[one] - c) ** 2)))
    # bright reserved stars: standard magnitudes vs truth (one constant per band)
    dm = res.star_mag - truth["star_mags"]
    for b in range(data.n_bands):
        ok = res.star_reserved & np.isfinite(dm[:, b]) & (res.star_mag_err[:, b] < 0.01)
        assert ok.sum() >= 20
        x = dm[ok, b] - np.median(dm[ok, b])
        assert np.sqrt(np.mean(x ** 2)) < 0.005
        print("star rms (mmag) band", b, ok.sum(), 1e3 * np.sqrt(np.mean(x ** 2)))
    assert np.all(np.isfinite(res.zeropoint_err[res.zeropoint_flag < 16]))
    assert set(res.atmosphere) >= {"visit", "pressure", "pwv", "o3", "tau", "alpha", "secz"}


def test_median_outliers_flag_corrupted_observations_only():
    """One corrupted observation per affected star (x0.6-1.6 flux, the simulator's unflagged
    corruption) is found even when it is the brightest, and good observations are kept."""
    from jaxfgcm.fit.gray import median_outliers

    rng = np.random.default_rng(3)
    n_sb, per = 400, 8
    sb = np.repeat(np.arange(n_sb), per)
    sigma = np.full(sb.size, 0.005)
    m = 20.0 + 0.01 * sb + rng.normal(0.0, 0.005, sb.size)
    bad = np.zeros(sb.size, bool)
    bad[rng.choice(sb.size, 60, replace=False)] = True
    m[bad] += rng.choice([-1, 1], bad.sum()) * rng.uniform(0.1, 0.5, bad.sum())
    use = np.ones(sb.size, bool)
    out = median_outliers(m, sigma, use, sb, n_sb, 5.0)
    assert np.array_equal(out, bad)
    # star-bands with fewer than 3 used observations are left to the mean-based test
    use[sb < 10] = False
    assert not median_outliers(m, sigma, use, sb, n_sb, 5.0)[sb < 10].any()


def test_focal_plane_gray_recovers_a_linear_cloud_and_falls_back_where_it_cannot():
    """A cloud's gray linear across the focal plane, measured per detector with 3 mmag noise:
    the order-1 field at the detector centres is off by ~0.4 mmag where each detector's own
    mean is off by 3 (the noise of its stars), with errors that say so. An exposure with fewer
    than 3 detectors per coefficient, or a camera without positions, gets no fit."""
    from jaxfgcm.fit.gray import focal_plane_gray

    rng = np.random.default_rng(3)
    n_det = 104
    xy = rng.uniform(-220.0, 220.0, (n_det, 2))
    truth = np.stack([-0.08 + 2e-4 * xy[:, 0] - 1e-4 * xy[:, 1],
                      np.full(n_det, -0.02), np.zeros(n_det)])
    err = np.full((3, n_det), 0.003)
    measured = truth + rng.normal(0.0, 0.003, (3, n_det))
    ok = np.ones((3, n_det), bool)
    ok[2, 8:] = False  # 8 detectors: fewer than 3 x 3 coefficients
    gray, gerr, fitted = focal_plane_gray(measured, err, ok, xy, 1)
    assert fitted.tolist() == [True, True, False]
    assert np.all(np.isnan(gray[2]))
    for e in (0, 1):
        rms = np.sqrt(np.mean((gray[e] - truth[e]) ** 2))
        assert rms < 0.0008
        assert np.sqrt(np.mean((measured[e] - truth[e]) ** 2)) > 0.0025
        assert 0.3 < rms / np.sqrt(np.mean(gerr[e] ** 2)) < 2.0  # honest errors
    # Structure a plane cannot follow widens the errors (reduced chi^2 > 1).
    bumpy = measured[1] + 0.02 * np.sin(xy[:, 0] / 30.0)
    _, berr, _ = focal_plane_gray(bumpy[None], err[1:2], ok[1:2], xy, 1)
    assert np.mean(berr) > 3 * np.mean(gerr[1])
    _, _, none = focal_plane_gray(measured, err, ok, np.zeros((n_det, 2)), 1)
    assert not none.any()


def test_cuts_from_exposure_gray_follow_the_photometric_spread():
    """Cuts at -3 sigma of the photometric exposures' gray (2.5 mmag here): every exposure
    with a 10 mmag cloud falls below, no clear one does."""
    from types import SimpleNamespace

    from jaxfgcm.fit.gray import cuts_from_exposure_gray

    rng = np.random.default_rng(4)
    band = np.repeat([0, 1], 60)
    gray = rng.normal(0.0, 0.0025, band.size).clip(-0.0075, 0.0075)
    cloud = rng.random(band.size) < 0.2
    gray[cloud] -= rng.uniform(0.010, 0.040, cloud.sum())
    data = SimpleNamespace(exp_band=band)
    low, high = cuts_from_exposure_gray(gray, ~cloud, data, [-0.05, -0.05], [0.05, 0.05],
                                        3.0, 4.0)
    assert np.all((low > -0.0095) & (low < -0.005)) and np.all(high == 0.05)
    flagged = gray < low[band]
    assert flagged[cloud].all() and not flagged[~cloud].any()


def _one_band_nights(secz, eg, n_first):
    """Exposures of one band on two nights (the first ``n_first`` on night 0), 500 stars
    each: the FitData and Gray fields that exposure flagging reads."""
    from types import SimpleNamespace

    n = len(secz)
    data = SimpleNamespace(exp_night=np.r_[np.zeros(n_first, int), np.ones(n - n_first, int)],
                           exp_band=np.zeros(n, int), n_bands=1, n_nights=2, n_exp=n,
                           exp_secz=np.asarray(secz), fit_bands=(True,))
    gray = SimpleNamespace(exp_gray=np.asarray(eg), exp_n_obs=np.full(n, 500),
                           exp_gray_rms=np.full(n, 0.002))
    return data, gray


def test_a_lost_night_band_is_cut_relative_to_its_airmass_law():
    """(night 0, g): clear, but the fitted atmosphere misses its extinction: gray -43 mmag per
    airmass, all below the -5 mmag cut. (night 1, g): clouds of 20-80 mmag. Only the first
    is lost to an atmosphere law: relative to it, every exposure is photometric. The cloudy
    (night, band) has no clear-sky level that a second exposure confirms (its thinnest cloud
    per airmass would be the envelope, and nothing else passes the cut relative to it), so it
    stays flagged whole (simulator, tract preset seed 106: a 37 mmag r cloud, the thinnest of
    six, had become the reference and pulled the night's atmosphere)."""
    from jaxfgcm.fit import gray as G

    secz = np.array([1.22, 1.23, 1.33, 1.37, 1.63, 1.1, 1.2, 1.3, 1.4])
    eg = np.r_[-0.0430 * secz[:5] + np.array([0.3, -0.4, 0.2, 0.0, -0.2]) * 1e-3,
               -np.array([0.020, 0.080, 0.045, 0.060])]
    data, gray = _one_band_nights(secz, eg, 5)
    cut = {"low_cut": [-0.005], "high_cut": [0.05], "var_cut": 0.0005,
           "min_star_per_exp": 100, "min_exp_per_night": 1}
    flags = G.exposure_flags(gray, data, **cut)
    assert np.all(flags & G.EXP_GRAY_TOO_NEGATIVE)
    lost = G.lost_night_bands(flags, gray, data)
    assert lost.all()
    ref = G.night_band_reference(eg, np.ones(9, bool), data, cut["low_cut"])
    assert np.all(ref[5:] == 0.0)
    again = G.exposure_flags(gray, data, **cut, reference=np.where(lost, ref, 0.0))
    assert np.all(again[:5] == 0)
    assert np.all(again[5:] & G.EXP_GRAY_TOO_NEGATIVE)
    # Unconfirmed, the thinnest cloud per airmass (20 mmag at sec z 1.1) is the envelope
    # and passes: what the confirmation is for.
    bare = G.night_band_reference(eg, np.ones(9, bool), data)
    assert G.exposure_flags(gray, data, **cut, reference=bare)[5] == 0


def test_a_night_band_brighter_than_the_high_cut_is_cut_relative_to_its_airmass_law():
    """Seed 11 of the tract preset, night 4, y (one aperture pivot): four cloudy exposures
    (95, 84, 76, 29 mmag) at the start of a run were absorbed by the night's water vapour, and
    the run's one clear exposure came out 83 mmag *brighter* than the model (the thinnest
    cloud +54), so the high cut flagged them and kept the thicker clouds. Two exposures above
    the high cut mark the (night, band)'s atmosphere as wrong: relative to its upper envelope
    of EGray / secz only the clear exposure is photometric. (night 1, y): clear exposures and
    one corrupt one (+120 mmag, e.g. a wrong exposure time): a single exposure above the high
    cut is not taken as the clear-sky level, the others stay photometric."""
    from jaxfgcm.fit import gray as G

    secz = np.array([1.14, 1.25, 1.46, 1.70, 1.93, 1.1, 1.2, 1.3, 1.4])
    eg = np.array([-16.8, -5.0, 4.0, 54.1, 82.9, 0.8, -0.6, 0.2, 120.0]) * 1e-3
    clear = np.array([False, False, False, False, True, True, True, True, False])
    data, gray = _one_band_nights(secz, eg, 5)
    cut = {"low_cut": [-0.0064], "high_cut": [0.05], "var_cut": 0.0005,
           "min_star_per_exp": 100, "min_exp_per_night": 1}
    flags = G.exposure_flags(gray, data, **cut)
    assert np.all(flags[[3, 4, 8]] == G.EXP_GRAY_TOO_POSITIVE) and np.all(flags[[1, 2]] == 0)
    assert not G.lost_night_bands(flags, gray, data).any()
    wrong = G.too_positive_night_bands(flags, data)
    assert wrong.tolist() == [True] * 5 + [False] * 4
    ref = G.night_band_reference(eg, np.ones(9, bool), data)
    again = G.exposure_flags(gray, data, **cut, reference=np.where(wrong, ref, 0.0))
    assert np.array_equal(again == 0, clear)


def test_star_flat_centre_variance_is_the_mean_error_for_spread_stars(synth):
    """Order-1 flat, stars spread over the detector: the centre value's variance is that of a
    weighted mean, sigma^2 / n (the gradient terms vanish at the centre); empty groups: inf."""
    from jaxfgcm.fit.starflat import star_flat_centre_variance

    data, _, _ = synth
    sigma = 0.02
    use = data.obs_valid & (data.obs_flat_group != 0)  # group 0 left empty
    var = star_flat_centre_variance(jnp.full(data.obs_mag.shape, sigma ** 2), use, data)
    n = np.bincount(np.asarray(data.obs_flat_group)[np.asarray(use)], minlength=var.shape[0])
    has = n > 0
    assert not has[0] and has.sum() >= 20
    ratio = np.asarray(var)[has] / (sigma ** 2 / n[has])
    # measured 1.000-1.009 (> 1: the stars' spread about the centre is not perfectly even)
    assert np.all((ratio > 0.999) & (ratio < 1.05))
    assert np.all(np.isinf(np.asarray(var)[~has]))


def test_ab_normalisation_is_fgcms_term():
    """zptABNoThroughput from the config equals the simulator's 2.5 log10(A/(h g)) - 48.6 and
    scales with the mirror area and the gain."""
    from jaxfgcm.simulate.instrument import zpt_ab_no_throughput as sim_zpt

    inst = Config().instrument
    assert zpt_ab_no_throughput(inst) == pytest.approx(sim_zpt(), abs=1e-9)
    big = Config().with_overrides({"instrument.mirror_diameter_m": 16.4,
                                   "instrument.gain": 1.5}).instrument
    assert zpt_ab_no_throughput(big) - zpt_ab_no_throughput(inst) == pytest.approx(
        5 * np.log10(2.0) + 2.5 * np.log10(2.0), abs=1e-12)


def test_resume_from_a_checkpoint_gives_the_uninterrupted_result(synth):
    import pickle

    data, lut, _ = synth
    snaps = []
    full = run_fit_cycles(data, lut, CFG, log=None,
                          checkpoint=lambda s: snaps.append(pickle.dumps(s)))
    assert len(snaps) >= 2  # one snapshot per completed cycle (before the clean-up)
    resumed = run_fit_cycles(data, lut, CFG, log=None, resume_from=pickle.loads(snaps[0]))
    np.testing.assert_array_equal(resumed.zeropoint_flag, full.zeropoint_flag)
    ok = np.isfinite(full.zeropoint)
    assert np.max(np.abs(resumed.zeropoint[ok] - full.zeropoint[ok])) < 1e-9
    assert resumed.repeatability.shape == full.repeatability.shape


def test_observation_dtype_is_checked():
    from jaxfgcm.config import ConfigError
    from jaxfgcm.fit import FitData

    cfg = Config().with_overrides(["fit.observation_dtype=float16"])
    with pytest.raises(ConfigError, match="observation_dtype"):
        FitData.build(None, None, None, cfg)


def test_star_flat_gradient_needs_enough_weighted_stars(synth):
    """A group whose observations are many but nearly all low-weight gets only a constant
    (stars counted by weight, Kish's effective number), and its old gradient goes to 0; groups
    with enough weighted stars keep a gradient the residuals support."""
    from jaxfgcm.fit.starflat import MIN_STARS_PER_COEF, update_star_flat

    data, _, _ = synth
    group = np.asarray(data.obs_flat_group)
    use = np.asarray(data.obs_valid)
    n = np.bincount(group[use], minlength=data.n_epochs * data.n_filters * data.n_det)
    g0 = int(np.argmax(n))
    assert n[g0] >= 4 * MIN_STARS_PER_COEF * data.n_coef
    var = np.full(use.shape, 0.01 ** 2)
    idx = np.flatnonzero(use & (group == g0))
    var[idx[10:]] = 1.0  # all but 10 observations 100x noisier: effective number ~10
    old = jnp.full((n.size, data.n_coef), 0.005)  # 5 mmag gradients everywhere
    # residuals 0: the data agree with the current flat
    new = np.asarray(update_star_flat(old, jnp.zeros(use.shape), jnp.asarray(var),
                                      data.obs_valid, data))
    assert np.all(new[g0, 1:] == 0.0)
    full = (n >= 4 * MIN_STARS_PER_COEF * data.n_coef) & (np.arange(n.size) != g0)
    assert full.sum() >= 5
    # kept, shrunk by the 10 mmag prior by < 10 %
    assert np.all((new[full, 1:] > 0.0045) & (new[full, 1:] <= 0.005))


def test_a_cycle_that_worsens_the_repeatability_is_not_kept(synth, monkeypatch):
    """A last fit cycle whose reserved repeatability is worse than an earlier cycle's (here
    made so, 3x, as a cycle that re-admits a cloud does) is dropped: the clean-up starts from
    the best cycle, so the products are those of a run that stopped there."""
    import pickle

    import jaxfgcm.fit.driver as D

    data, lut, _ = synth
    two = run_fit_cycles(data, lut, CFG.with_overrides({"fit.max_fit_cycles": 2}), log=None)
    real = D.run_cycle

    def worse_third_cycle(*args, cycle, final=False, **kw):
        out = real(*args, cycle=cycle, final=final, **kw)
        if cycle == 2 and not final:
            out.repeatability = 3.0 * np.asarray(out.repeatability)
        return out

    monkeypatch.setattr(D, "run_cycle", worse_third_cycle)
    lines, snaps = [], []
    three = run_fit_cycles(data, lut, CFG, log=lines.append,
                           checkpoint=lambda s: snaps.append(pickle.dumps(s)))
    fitted = [r for r in three.cycles if not r["cleanup"]]
    assert len(fitted) == 3  # the third cycle ran (no early convergence to hide the test)
    assert three.cycles[-1]["from_cycle"] == 1 and two.cycles[-1]["from_cycle"] == 1
    assert any("the clean-up starts from cycle 1" in line for line in lines)
    np.testing.assert_array_equal(three.zeropoint_flag, two.zeropoint_flag)
    ok = np.isfinite(two.zeropoint)
    assert np.max(np.abs(three.zeropoint[ok] - two.zeropoint[ok])) < 1e-9
    np.testing.assert_allclose(three.repeatability[-1], two.repeatability[-1], rtol=1e-9)
    # the best cycle travels with the checkpoints: resumed after the bad cycle, same result
    resumed = run_fit_cycles(data, lut, CFG, log=None, resume_from=pickle.loads(snaps[-1]))
    assert resumed.cycles[-1]["from_cycle"] == 1
    assert np.max(np.abs(resumed.zeropoint[ok] - two.zeropoint[ok])) < 1e-9


def test_cycles_are_ranked_by_missing_bands_then_mean_repeatability():
    from jaxfgcm.fit.driver import _repeatability_score

    fit = np.array([True, True, True, False])
    all_bands = _repeatability_score([0.005, 0.005, 0.005, np.nan], fit)  # last: not a fit band
    lost_one = _repeatability_score([0.004, 0.004, np.nan, 0.001], fit)
    assert all_bands == (0, pytest.approx(0.005)) and lost_one == (1, pytest.approx(0.004))
    assert all_bands < lost_one  # a lower mean does not win by leaving a band out
    assert _repeatability_score([0.004, 0.004, 0.005, 0.0], fit) < all_bands  # 4th: no fit band
    assert _repeatability_score([np.nan] * 4, fit) == (3, np.inf)


def test_max_fit_cycles_must_be_at_least_one():
    from jaxfgcm.config import ConfigError

    with pytest.raises(ConfigError, match="max_fit_cycles"):
        run_fit_cycles(None, object(), CFG.with_overrides({"fit.max_fit_cycles": 0}), log=None)


def test_clean_up_cycle_applies_the_last_cycles_cuts(synth):
    """The clean-up (final) cycle flags with the cuts its input state carries (the last fit
    cycle's, which the record reports), not with cuts re-derived from the photometric set
    those cuts produced."""
    import dataclasses

    from jaxfgcm.fit import gray as G
    from jaxfgcm.fit.cycle import CycleState, run_cycle

    data, lut, _ = synth
    state = CycleState(params=FitParams.standard(data, CFG.standard_atmosphere,
                                                 CFG.fit.sed_slope_scale))
    for cycle in range(2):
        state = run_cycle(data, lut, CFG, state, cycle=cycle).state
    nb = data.n_bands
    tight = run_cycle(data, lut, CFG, dataclasses.replace(state, low_cut=np.full(nb, -1e-4)),
                      cycle=2, final=True)
    loose = run_cycle(data, lut, CFG, dataclasses.replace(state, low_cut=np.full(nb, -10.0)),
                      cycle=2, final=True)
    # among the exposures the parameters were fitted with (the others keep their flags in
    # the clean-up: test_clean_up_uses_the_exposures_the_parameters_were_fitted_with)
    fitted = state.fitted_flags == 0
    neg_tight = ((tight.state.exp_flags & G.EXP_GRAY_TOO_NEGATIVE) != 0) & fitted
    neg_loose = ((loose.state.exp_flags & G.EXP_GRAY_TOO_NEGATIVE) != 0) & fitted
    # loose: nothing is cut for negative gray, though the synthetic clouds reach -0.1 mag and
    # more (re-derived cuts, ~-5 mmag, would flag them); tight: many more
    assert not neg_loose.any()
    assert neg_tight.sum() >= 10


def test_repeatability_statistic_and_its_noise_floor(synth):
    """cycle.repeatability is the cycles' own statistic (same figure from the same inputs), and
    given the simulation's noise alone it is the floor the fit's repeatability is judged
    against (scripts/bench_fit.py): the synthetic problem is generated by the fit's own model,
    so the fit reaches that floor."""
    from jaxfgcm.fit.cycle import CycleState, repeatability, run_cycle
    from jaxfgcm.fit.loss import obs_variance, obs_variance_compiled
    from jaxfgcm.fit.model import standard_magnitudes_compiled

    data, lut, truth = synth
    state = CycleState(params=FitParams.standard(data, CFG.standard_atmosphere,
                                                 CFG.fit.sed_slope_scale))
    for cycle in range(2):
        state = run_cycle(data, lut, CFG, state, cycle=cycle).state
    out = run_cycle(data, lut, CFG, state, cycle=2, final=True)
    # the cycle's variances (compiled: XLA may fuse a multiply-add, so eager ones can differ
    # in the last bit)
    var = obs_variance_compiled(data, jnp.asarray(state.sigma_fgcm), CFG.fit.sigma0_phot)
    m = standard_magnitudes_compiled(state.params, data, lut, state.sed_slope)
    again = repeatability(m, var, out.mean_use, state.sigma_fgcm, data)
    np.testing.assert_array_equal(again, out.repeatability)

    res = run_fit_cycles(data, lut, CFG, log=None)
    var = obs_variance(data, jnp.asarray(res.repeatability_sigma_fgcm), CFG.fit.sigma0_phot)
    floor = repeatability(truth["noise"], var, jnp.asarray(res.repeatability_mean_use),
                          res.repeatability_sigma_fgcm, data)
    ratio = res.repeatability[-1] / floor
    print("repeatability / noise floor per band:", ratio)
    assert np.all(np.isfinite(ratio)) and np.all(ratio > 0.9) and np.all(ratio < 1.1)


def test_gauss_newton_in_a_superset_moves_only_the_free_elements(synth):
    """With a superset mask (one compiled program for every cycle's free set) the solve is the
    one without it: same end point, frozen elements untouched."""
    data, lut, truth = synth
    st = _truth_state(data, truth)
    p0 = FitParams.standard(data, CFG.standard_atmosphere, CFG.fit.sed_slope_scale)
    proj = jax.tree_util.Partial(clip_to_bounds, atm_bounds=data.atm_bounds)
    nights = np.ones(data.n_nights, bool)
    nights[1] = False  # a night without enough exposures: its atmosphere frozen
    mask = free_mask(data, fitted_nights=nights)
    kw = {"max_iter": 6, "method": "gauss_newton", "residual_fn": _residual_vector,
          "project": proj}
    a, ia = minimize(chi2, p0, mask, (data, lut, st), **kw)
    b, ib = minimize(chi2, p0, mask, (data, lut, st), superset=free_mask(data), **kw)
    assert ia.iterations == ib.iterations
    np.testing.assert_allclose(ib.loss_end, ia.loss_end, rtol=1e-12)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-10)
    assert float(b.ln_tau[1]) == float(p0.ln_tau[1])  # frozen night: exactly where it was
    with pytest.raises(ValueError, match="superset"):
        minimize(chi2, p0, free_mask(data), (data, lut, st), superset=mask, **kw)


def test_clean_up_uses_the_exposures_the_parameters_were_fitted_with(synth):
    """The clean-up fits nothing, so an exposure the last fit did not use (here a cloud that
    the next cycle's flags would have let in) stays out of its star means and repeatability
    and is not flagged photometric (without the guard its band's figure changes)."""
    import dataclasses

    from jaxfgcm.fit.cycle import CycleState, run_cycle

    data, lut, _ = synth
    state = CycleState(params=FitParams.standard(data, CFG.standard_atmosphere,
                                                 CFG.fit.sed_slope_scale))
    for cycle in range(2):
        out = run_cycle(data, lut, CFG, state, cycle=cycle)
        state = out.state
    np.testing.assert_array_equal(state.fitted_flags, out.exp_flags)
    # the cloudiest exposure the cycle-1 fit left out, let back into the next set
    eg = np.asarray(out.gray.exp_gray)
    left_out = np.nonzero(state.fitted_flags != 0)[0]
    cloud = left_out[np.argmin(eg[left_out])]
    assert eg[cloud] < -0.05
    readmitted = state.exp_flags.copy()
    readmitted[cloud] = 0
    guarded = run_cycle(data, lut, CFG, dataclasses.replace(state, exp_flags=readmitted),
                        cycle=2, final=True)
    reference = run_cycle(data, lut, CFG, dataclasses.replace(state, exp_flags=state.fitted_flags),
                          cycle=2, final=True)
    unguarded = run_cycle(data, lut, CFG, dataclasses.replace(state, exp_flags=readmitted,
                                                              fitted_flags=None),
                          cycle=2, final=True)
    assert guarded.state.exp_flags[cloud] != 0
    np.testing.assert_array_equal(guarded.repeatability, reference.repeatability)
    b = int(np.asarray(data.exp_band)[cloud])
    assert abs(unguarded.repeatability[b] - reference.repeatability[b]) > 1e-4
