"""FitParams: the parameter pytree of the FGCM model, and which of its elements are free.

Every group is a float64 array (parameters are few; float64 keeps sub-mmag steps exact).
Freezing works per element: :func:`free_mask` returns a FitParams-shaped pytree of booleans, and
the optimizer only moves elements marked True (``jnp.where(mask, new, old)``); a whole group is
frozen with ``eqx.tree_at`` on the mask, or with ``eqx.partition`` on the parameters.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .data import FitData

jax.config.update("jax_enable_x64", True)

#: Angstrom exponent bounds (fgcm: hard-coded [0.25, 1.75], narrower than the LUT grid).
ALPHA_RANGE = (0.25, 1.75)


class FitParams(eqx.Module):
    """Per night: ozone (DU), ln(tau) intercept (at local midnight) and slope (per day),
    Angstrom exponent alpha, ln(PWV/mm) intercept, slope and quadratic term. Per band and wash
    interval: throughput intercept and slope (mag, mag/day). Per filter: offset (mag). Per
    (epoch, filter, detector): star-flat Chebyshev coefficients (mag). Per band: the aperture
    correction, linear and quadratic in (PSF FWHM of the (exposure, detector) - band median), shared by all bands
    unless ``fit.aperture_correction_per_band`` (fgcm's aperture correction, §5.1 step 14,
    fitted here jointly since it is linear in its parameters)."""

    o3: jax.Array
    ln_tau: jax.Array
    ln_tau_slope: jax.Array
    alpha: jax.Array
    ln_pwv: jax.Array
    ln_pwv_slope: jax.Array
    ln_pwv_quad: jax.Array
    throughput: jax.Array  # (n_bands, n_wash)
    throughput_slope: jax.Array  # (n_bands, n_wash)
    filter_offset: jax.Array  # (n_filters,)
    aper_slope: jax.Array  # (n_aper,) aperture correction, mag per arcsec of seeing
    aper_quad: jax.Array  # (n_aper,) mag per arcsec^2
    star_flat: jax.Array  # (n_epochs * n_filters * n_det, n_coef)
    # (n_bands,) factor on the colour-based SED slope F' in the chromatic term
    # (config fit.sed_slope_scale; frozen unless free_mask(fit_sed_scale=True)).
    sed_scale: jax.Array

    @classmethod
    def standard(cls, data: FitData, std, sed_slope_scale=None) -> FitParams:
        """Parameters at the standard atmosphere (``config.standard_atmosphere``), zero
        instrument terms; SED-slope scale from ``sed_slope_scale`` (band -> factor, e.g.
        ``config.fit.sed_slope_scale``; bands not named: 1; bands not in ``data``: ignored)."""
        n = data.n_nights
        scale = dict(sed_slope_scale or {})

        # NumPy, then one transfer: jnp.full/zeros run eagerly are programs compiled on first
        # use, one per shape
        def full(v):
            return jnp.asarray(np.full(n, float(v)))

        def zeros(*shape):
            return jnp.asarray(np.zeros(shape))

        return cls(
            o3=full(std.o3),
            ln_tau=full(np.log(std.tau)),
            ln_tau_slope=full(0.0),
            alpha=full(std.alpha),
            ln_pwv=full(np.log(std.pwv)),
            ln_pwv_slope=full(0.0),
            ln_pwv_quad=full(0.0),
            throughput=zeros(data.n_bands, data.n_wash),
            throughput_slope=zeros(data.n_bands, data.n_wash),
            filter_offset=zeros(data.n_filters),
            aper_slope=zeros(data.n_aper),
            aper_quad=zeros(data.n_aper),
            star_flat=zeros(data.n_epochs * data.n_filters * data.n_det, data.n_coef),
            sed_scale=jnp.asarray([float(scale.get(b, 1.0)) for b in data.bands]),
        )

    def with_standard_atmosphere(self, std) -> FitParams:
        """A copy with every night's atmosphere reset to the standard (instrument kept)."""
        n = self.o3.shape[0]
        f = lambda v: jnp.asarray(np.full(n, float(v)))
        return eqx.tree_at(
            _atmosphere_groups, self,
            (f(std.o3), f(np.log(std.tau)), f(0.0), f(std.alpha), f(np.log(std.pwv)), f(0.0),
             f(0.0)),
        )


def _atmosphere_groups(p: FitParams):
    return (p.o3, p.ln_tau, p.ln_tau_slope, p.alpha, p.ln_pwv, p.ln_pwv_slope, p.ln_pwv_quad)


#: Typical size of a parameter change, per group: the optimizer works in these units so that
#: every direction has a comparable curvature (fgcm's "step units" play the same role).
PARAM_SCALES = {
    "o3": 30.0, "ln_tau": 0.3, "ln_tau_slope": 0.3, "alpha": 0.3, "ln_pwv": 0.3,
    "ln_pwv_slope": 0.3, "ln_pwv_quad": 0.3, "throughput": 0.01, "throughput_slope": 1e-4,
    "filter_offset": 0.01, "aper_slope": 0.1, "aper_quad": 0.1, "star_flat": 0.01,
    "sed_scale": 0.1,
}


def scales_like(p: FitParams) -> FitParams:
    return jax.tree_util.tree_map(
        lambda a, s: np.full(np.shape(a), float(s)), p, FitParams(**PARAM_SCALES)
    )


def free_mask(
    data: FitData,
    *,
    fit_atmosphere: bool = True,
    fitted_nights=None,
    use_quadratic_pwv: bool = False,
    fit_throughput_slope: bool = False,
    throughput_slope_min_days: float = 0.0,
    fit_star_flat: bool = False,
    fit_aperture_correction: bool = True,
    fit_sed_scale: bool = False,
) -> FitParams:
    """Boolean pytree: True where the optimizer may move a parameter.

    - atmosphere: all nights if ``fit_atmosphere``, restricted to ``fitted_nights`` (bool per
      night: enough photometric exposures) when given;
    - throughput: every wash interval but the first of each band (the absolute level per band
      is not constrained by relative calibration), bands that have exposures; its slope in
      time, if ``fit_throughput_slope``, where the band's exposures in the interval span at
      least ``throughput_slope_min_days`` (fgcm's instrumentSlopeMinDeltaT);
    - filter offsets: non-standard filters of a band (e.g. HSC-R when HSC-R2 is standard);
    - aperture correction: fit bands whose visits have a seeing spread, if
      ``fit_aperture_correction``;
    - star flat: only if ``fit_star_flat`` (by default it is computed from residuals);
    - SED-slope scale: fit bands with exposures, if ``fit_sed_scale``.
    """
    nn = data.n_nights
    night = np.ones(nn, bool) if fitted_nights is None else np.asarray(fitted_nights, bool)
    atm = night & fit_atmosphere
    exp_band = np.asarray(data.exp_band)
    exp_wash = np.asarray(data.exp_wash)
    exp_filter = np.asarray(data.exp_filter)
    has = np.zeros((data.n_bands, data.n_wash), bool)
    has[exp_band, exp_wash] = True
    thr = has.copy()
    thr[:, 0] = False
    fit_band = np.asarray(data.fit_bands)
    thr &= fit_band[:, None]
    dt = np.asarray(data.exp_dt_wash)
    span = np.zeros((data.n_bands, data.n_wash))
    for b, w in zip(*np.nonzero(has)):
        sel = (exp_band == b) & (exp_wash == w)
        span[b, w] = np.ptp(dt[sel])
    slope = has & fit_throughput_slope & fit_band[:, None] & (span >= throughput_slope_min_days)
    used_filter = np.zeros(data.n_filters, bool)
    used_filter[exp_filter] = True
    fo = used_filter & ~np.asarray(data.filter_is_std) & fit_band[np.asarray(data.filter_band)]
    n_sf = data.n_epochs * data.n_filters * data.n_det
    da = np.asarray(data.pair_seeing)
    group = np.repeat(np.asarray(data.exp_aper_group), data.n_det)
    use_e = np.repeat(fit_band[exp_band], data.n_det)
    spread = np.array([np.ptp(da[(group == k) & use_e]) if np.any((group == k) & use_e) else 0.0
                       for k in range(data.n_aper)])
    aper = (spread > 1e-3) & fit_aperture_correction
    return FitParams(
        o3=jnp.asarray(atm),
        ln_tau=jnp.asarray(atm),
        ln_tau_slope=jnp.asarray(atm),
        alpha=jnp.asarray(atm),
        ln_pwv=jnp.asarray(atm),
        ln_pwv_slope=jnp.asarray(atm),
        ln_pwv_quad=jnp.asarray(atm & use_quadratic_pwv),
        throughput=jnp.asarray(thr),
        throughput_slope=jnp.asarray(slope),
        filter_offset=jnp.asarray(fo),
        aper_slope=jnp.asarray(aper),
        aper_quad=jnp.asarray(aper),
        star_flat=jnp.asarray(np.full((n_sf, data.n_coef), bool(fit_star_flat))),
        sed_scale=jnp.asarray(fit_sed_scale & fit_band & has.any(axis=1)),
    )


def n_free(mask: FitParams) -> int:
    return int(sum(int(np.sum(np.asarray(m))) for m in jax.tree_util.tree_leaves(mask)))


def flatten_free(p: FitParams, mask: FitParams) -> jax.Array:
    """The free elements of ``p`` as one vector (order: pytree leaves, C order)."""
    return jnp.concatenate([a[np.asarray(m)] for a, m in zip(jax.tree_util.tree_leaves(p),
                                                             jax.tree_util.tree_leaves(mask))])


def unflatten_free(vec: jax.Array, p: FitParams, mask: FitParams) -> FitParams:
    """Inverse of :func:`flatten_free`: ``p`` with its free elements replaced by ``vec``."""
    leaves, treedef = jax.tree_util.tree_flatten(p)
    out, i = [], 0
    for a, m in zip(leaves, jax.tree_util.tree_leaves(mask)):
        m = np.asarray(m)
        k = int(m.sum())
        out.append(a.at[m].set(vec[i:i + k]) if k else a)
        i += k
    return jax.tree_util.tree_unflatten(treedef, out)


#: Range of a fitted SED-slope scale (fgcm's constants are 0.25-1.6).
SED_SCALE_RANGE = (0.0, 3.0)

#: Bounds of the time slopes of ln tau and ln PWV (per day) and of the PWV quadratic term
#: (per day^2), as fgcm's.
SLOPE_BOUND = 4.0


def clip_to_bounds(p: FitParams, atm_bounds) -> FitParams:
    """Project the atmosphere onto the LUT ranges (``FitData.atm_bounds``) and the slope bounds
    (fgcm's box bounds, fgcm-reference §3.1); the model clips anyway, but a parameter beyond
    its bound has zero gradient and would be stuck there."""
    (pw0, pw1), (o0, o1), (t0, t1), (a0, a1) = atm_bounds
    s = SLOPE_BOUND
    p = eqx.tree_at(lambda q: q.sed_scale, p, jnp.clip(p.sed_scale, *SED_SCALE_RANGE))
    return eqx.tree_at(
        _atmosphere_groups, p,
        (jnp.clip(p.o3, o0, o1), jnp.clip(p.ln_tau, jnp.log(t0), jnp.log(t1)),
         jnp.clip(p.ln_tau_slope, -s, s), jnp.clip(p.alpha, a0, a1),
         jnp.clip(p.ln_pwv, jnp.log(pw0), jnp.log(pw1)), jnp.clip(p.ln_pwv_slope, -s, s),
         jnp.clip(p.ln_pwv_quad, -s, s)),
    )
