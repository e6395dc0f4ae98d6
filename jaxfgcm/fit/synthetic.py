"""Synthetic fit problems with known truth, generated *through the fit's own model*.

For unit tests of the fit machinery (recovery of parameters the model can express) and for
benchmarks. The physics-level truth test is the simulator's (jaxfgcm.simulate), which never uses
this model. :class:`AnalyticLut` is a smooth stand-in for :class:`jaxfgcm.lut.LutInterpolator`
with the same ``interp`` signature: extinction grows with airmass, Rayleigh scales with pressure,
ozone, water (sqrt PWV) and an Angstrom-law aerosol, and I10 shifts with the same quantities.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .data import FitData
from .loss import FitState
from .model import MAG_PER_LN, standard_magnitudes
from .params import FitParams

jax.config.update("jax_enable_x64", True)

# Per band g, r, i, z, y: effective wavelength (A), Rayleigh, ozone and water extinction (per
# airmass, in ln flux) and I10 sensitivities (A per unit of each term) -- rough HSC-like values.
_LAMBDA = np.array([4750.0, 6170.0, 7680.0, 8910.0, 9780.0])
_K_RAY = np.array([0.12, 0.06, 0.03, 0.02, 0.015])
_K_O3 = np.array([0.015, 0.04, 0.008, 0.0, 0.0])
_K_PWV = np.array([0.0, 0.004, 0.015, 0.03, 0.06])
_A_RAY = np.array([60.0, 25.0, 10.0, 6.0, 3.0])
_A_PWV = np.array([0.0, -2.0, -8.0, -20.0, -30.0])
_A_TAU = np.array([80.0, 50.0, 30.0, 20.0, 15.0])


class AnalyticLut(eqx.Module):
    """Smooth analytic I0, I10 per physical filter and detector (see module docstring)."""

    base: jax.Array  # (n_filter, n_det) I0 outside the atmosphere
    i10_0: jax.Array  # (n_filter, n_det) I10 outside the atmosphere (A)
    lam: jax.Array
    k_ray: jax.Array
    k_o3: jax.Array
    k_pwv: jax.Array
    a_ray: jax.Array
    a_pwv: jax.Array
    a_tau: jax.Array
    i0_std: jax.Array  # per filter, focal-plane mean at the standard atmosphere
    i10_std: jax.Array
    lambda_std: jax.Array
    physical_filters: tuple[str, ...] = eqx.field(static=True)

    def interp(self, filter_index, detector_index, pressure, pwv, o3, tau, alpha, secz):
        f, d = filter_index, detector_index
        aer = tau * (self.lam[f] / 7750.0) ** (-alpha)
        ext = (self.k_ray[f] * pressure / 616.0 + self.k_o3[f] * o3 / 263.0
               + self.k_pwv[f] * jnp.sqrt(pwv) + aer)
        i0 = self.base[f, d] * jnp.exp(-secz * ext)
        i10 = self.i10_0[f, d] + secz * (self.a_ray[f] * pressure / 616.0
                                         + self.a_pwv[f] * jnp.sqrt(pwv) + self.a_tau[f] * aer)
        return i0, i10

    @classmethod
    def make(cls, filter_bands, n_det, std, seed=0, filter_names=None):
        """``filter_bands``: band index (0=g .. 4=y) of each physical filter."""
        rng = np.random.default_rng(seed)
        fb = np.asarray(filter_bands)
        nf = len(fb)
        base = 0.08 * (1 + 0.02 * rng.standard_normal((nf, n_det)))
        i10_0 = -40.0 + 5.0 * rng.standard_normal((nf, n_det))
        kw = {"lam": _LAMBDA[fb], "k_ray": _K_RAY[fb], "k_o3": _K_O3[fb], "k_pwv": _K_PWV[fb],
                  "a_ray": _A_RAY[fb], "a_pwv": _A_PWV[fb], "a_tau": _A_TAU[fb]}
        tmp = cls(base=jnp.asarray(base), i10_0=jnp.asarray(i10_0),
                  **{k: jnp.asarray(v) for k, v in kw.items()},
                  physical_filters=tuple(filter_names or [f"F{i}" for i in range(nf)]),
                  i0_std=jnp.zeros(nf), i10_std=jnp.zeros(nf),
                  lambda_std=jnp.asarray(_LAMBDA[fb]))
        f = jnp.repeat(jnp.arange(nf), n_det)
        d = jnp.tile(jnp.arange(n_det), nf)
        i0, i10 = tmp.interp(f, d, std.pressure, std.pwv, std.o3, std.tau, std.alpha, std.airmass)
        i0_std = np.asarray(i0).reshape(nf, n_det).mean(1)
        i10_std = np.asarray(i10).reshape(nf, n_det).mean(1)
        return dataclasses.replace(tmp, i0_std=jnp.asarray(i0_std), i10_std=jnp.asarray(i10_std))


def sed_slope_from_mags(mags: np.ndarray, lambda_std: np.ndarray) -> np.ndarray:
    """F' (1/A) per star and band from per-band magnitudes (NaN = missing), fgcm-reference
    §1.5 with the simplest terms: the mean of the slopes to the neighbouring bands."""
    s = -(mags[:, 1:] - mags[:, :-1]) / MAG_PER_LN / (lambda_std[1:] - lambda_std[:-1])
    nb = mags.shape[1]
    out = np.full(mags.shape, np.nan)
    for b in range(nb):
        parts = [s[:, t] for t in (b - 1, b) if 0 <= t < nb - 1]
        out[:, b] = np.nanmean(np.stack(parts), axis=0) if parts else np.nan
    return out


def make_synthetic(
    config,
    *,
    n_stars=2000,
    n_nights=3,
    visits_per_night=12,
    n_det=8,
    cloudy_fraction=0.2,
    seed=1,
    obs_per_visit=None,
    night_step_days=1.0,
    throughput_slope=0.0,
):
    """A synthetic tract: returns (data, lut, truth).

    ``truth`` holds ``params`` (FitParams), ``star_mags`` (n_stars, n_bands) standard mags,
    ``exp_gray`` (n_exp, truth convention: fgcm's, negative = clouds), ``pair_gray`` (dense),
    ``photometric`` (bool per exposure), ``sed_slope`` and ``fprime`` (the true F'), and
    ``noise`` (the magnitude noise added to each observation; 0 for padding).
    Nights are ``night_step_days`` apart; ``throughput_slope`` (mag/day, every band) is a
    throughput drift in time such as mirror dust.
    """
    rng = np.random.default_rng(seed)
    bands = tuple(config.instrument.bands)
    nb = len(bands)
    pf = config.instrument.physical_filters
    filters = tuple(f for f in pf if pf[f] in bands)
    filter_band = [bands.index(pf[f]) for f in filters]
    std_f = config.instrument.std_physical_filters
    filter_is_std = [std_f.get(pf[f]) == f for f in filters]
    lut = AnalyticLut.make(filter_band, n_det, config.standard_atmosphere, seed=seed,
                           filter_names=filters)
    band_std_filter = [filters.index(std_f[b]) for b in bands]
    band_i10_std = np.asarray(lut.i10_std)[band_std_filter]
    band_lambda = np.asarray(lut.lambda_std)[band_std_filter]

    # stars: r in 16.5..21.5, colours of ordinary stars
    ra0, dec0, radius = 150.0, 2.0, 0.75
    rr = radius * np.sqrt(rng.random(n_stars))
    th = 2 * np.pi * rng.random(n_stars)
    star_ra = ra0 + rr * np.cos(th) / np.cos(np.radians(dec0))
    star_dec = dec0 + rr * np.sin(th)
    gr = rng.uniform(0.2, 1.4, n_stars)
    base = rng.uniform(16.5, 21.5, n_stars)
    colour = np.array([1.0, 0.0, -0.45, -0.65, -0.75])[:nb]
    star_mags = base[:, None] + gr[:, None] * colour[None, :]

    # visits: cycle bands through the night; the last filter of a band alternates if two exist
    visits = {k: [] for k in ("visit", "filter_index", "mjd", "exptime", "telra", "teldec",
                              "telha", "pressure")}
    lon = config.site.longitude_deg
    v = 1000
    for n in range(n_nights):
        night_mid = 60000.0 + n * night_step_days - lon / 360.0  # local midnight in UT MJD
        for k in range(visits_per_night):
            hours = -4.0 + 8.0 * k / max(visits_per_night - 1, 1)
            b = k % nb
            cands = [i for i, fb in enumerate(filter_band) if fb == b]
            fi = cands[(k // nb + n) % len(cands)]
            visits["visit"].append(v)
            visits["filter_index"].append(fi)
            visits["mjd"].append(night_mid + hours / 24.0)
            visits["exptime"].append(30.0)
            visits["telra"].append(ra0 + 0.1 * rng.standard_normal())
            visits["teldec"].append(dec0 + 0.1 * rng.standard_normal())
            visits["telha"].append(12.0 * hours + rng.uniform(-10, 10))  # secz <~ 2
            visits["pressure"].append(616.0 + rng.normal(0, 3))
            v += 1
    visits = {k: np.asarray(a) for k, a in visits.items()}
    n_exp = len(visits["visit"])

    # observations: each visit sees every star with probability 0.8 on a random detector
    rows = []
    for e in range(n_exp):
        seen = np.nonzero(rng.random(n_stars) < 0.8)[0]
        if obs_per_visit is not None:
            seen = seen[:obs_per_visit]
        rows.append((np.full(len(seen), e), seen))
    exp_idx = np.concatenate([r[0] for r in rows])
    star_idx = np.concatenate([r[1] for r in rows])
    order = np.lexsort((exp_idx, star_idx))
    exp_idx, star_idx = exp_idx[order], star_idx[order]
    n_obs = len(star_idx)
    det = rng.integers(0, n_det, n_obs)
    shape = np.tile([2048.0, 4176.0], (n_det, 1))
    x = rng.uniform(0, 2048.0, n_obs)
    y = rng.uniform(0, 4176.0, n_obs)
    band_of_obs = np.asarray(filter_band)[visits["filter_index"][exp_idx]]
    true_std = star_mags[star_idx, band_of_obs]
    err = 0.001 + 0.02 * 10 ** (0.4 * (true_std - 21.5))

    data = FitData.from_arrays(
        star_index=star_idx, visit=visits["visit"][exp_idx], detector_index=det,
        mag=np.zeros(n_obs), mag_err=err, x=x, y=y, star_ra=star_ra, star_dec=star_dec,
        visits=visits, bands=bands, filters=filters, filter_band=filter_band,
        filter_is_std=filter_is_std, band_i10_std=band_i10_std, band_lambda_std=band_lambda,
        n_det=n_det, detector_shape=shape, config=config,
    )

    # truth parameters
    std = config.standard_atmosphere
    p = FitParams.standard(data, std, config.fit.sed_slope_scale)
    nn = data.n_nights
    p = eqx.tree_at(
        lambda q: (q.o3, q.ln_tau, q.ln_tau_slope, q.alpha, q.ln_pwv, q.ln_pwv_slope),
        p,
        (jnp.asarray(rng.uniform(240, 300, nn)), jnp.asarray(np.log(rng.uniform(0.02, 0.08, nn))),
         jnp.asarray(rng.normal(0, 0.4, nn)), jnp.asarray(rng.uniform(0.6, 1.4, nn)),
         jnp.asarray(np.log(rng.uniform(1.0, 4.0, nn))), jnp.asarray(rng.normal(0, 0.5, nn))),
    )
    fo = np.where(filter_is_std, 0.0, rng.normal(0, 0.02, len(filters)))
    sf = np.zeros(p.star_flat.shape)
    sf[:, 0] = rng.normal(0, 0.01, sf.shape[0])
    if sf.shape[1] > 1:
        sf[:, 1:] = rng.normal(0, 0.004, (sf.shape[0], sf.shape[1] - 1))
    p = eqx.tree_at(lambda q: (q.filter_offset, q.star_flat), p, (jnp.asarray(fo), jnp.asarray(sf)))
    p = eqx.tree_at(lambda q: q.throughput_slope, p,
                    jnp.full(p.throughput_slope.shape, float(throughput_slope)))

    # gray (fgcm sign: negative = extra extinction), 1 mmag detector jitter on cloudy ones
    cloudy = rng.random(n_exp) < cloudy_fraction
    cloudy[0] = False
    exp_gray = np.where(cloudy, -rng.uniform(0.02, 0.3, n_exp), 0.0)
    pair_gray = np.repeat(exp_gray, n_det) + np.where(
        np.repeat(cloudy, n_det), rng.normal(0, 0.003, n_exp * n_det), 0.0)

    # true F' per star-band from the true standard magnitudes
    fprime = sed_slope_from_mags(star_mags, band_lambda)
    sb_star, sb_band = np.asarray(data.sb_star), np.asarray(data.sb_band)
    state = FitState(sed_slope=jnp.asarray(fprime[sb_star, sb_band]),
                     obs_use=data.obs_valid, sigma_fgcm=jnp.zeros(nb))
    offset = np.asarray(standard_magnitudes(p, data, lut, state.sed_slope))
    obs_star = np.asarray(data.obs_star)
    obs_band = np.asarray(data.obs_band)
    pg = pair_gray[np.asarray(data.obs_pair)]
    sig = np.asarray(data.obs_err)
    noise = rng.standard_normal(len(sig)) * np.sqrt(sig ** 2 + config.fit.sigma0_phot ** 2)
    # m_std = m_inst + offset + gray_correction  ->  m_inst = m_true - offset + gray (gray < 0
    # makes stars fainter in fgcm's sign convention: m_inst grows by -gray)
    m_inst = star_mags[obs_star, obs_band] - offset - pg + noise
    m_inst = np.where(np.asarray(data.obs_valid), m_inst, 0.0)
    data = eqx.tree_at(lambda d: d.obs_mag, data, jnp.asarray(m_inst))
    truth = {"params": p, "star_mags": star_mags, "exp_gray": exp_gray, "pair_gray": pair_gray,
                 "photometric": ~cloudy, "sed_slope": state.sed_slope, "fprime": fprime,
                 "noise": np.where(np.asarray(data.obs_valid), noise, 0.0)}
    return data, lut, truth


__all__ = ["AnalyticLut", "make_synthetic", "sed_slope_from_mags"]
