"""The loss: chi-square of observations about their profiled star means, and the error model.

    sigma^2 = sigma_inst^2 + sigma0_phot^2 + sigma_FGCM(band)^2
    chi2    = sum_obs w (m_std - <m_std>_star,band)^2,  w = [used] / sigma^2

Star magnitudes are *profiled*: <m_std> is the weighted mean of the star's used observations
given the other parameters (as fgcm, fgcm-reference §1.6). Autodiff through the mean gives the
exact gradient (fgcm's inner "sumNumerator" term). Reductions accumulate in float64.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .data import FitData
from .model import standard_magnitudes
from .params import FitParams

jax.config.update("jax_enable_x64", True)


class FitState(eqx.Module):
    """What a fit cycle holds fixed while the optimizer runs."""

    sed_slope: jax.Array  # F' per star-band segment (1/Angstrom)
    obs_use: jax.Array  # bool per observation: enters the chi2 and the star means
    sigma_fgcm: jax.Array  # per band (mag)
    sigma0: float = eqx.field(static=True, default=0.003)


def obs_variance(data: FitData, sigma_fgcm: jax.Array, sigma0: float) -> jax.Array:
    """sigma^2 per observation (float64)."""
    err = data.obs_err.astype(jnp.float64)
    return err * err + sigma0 * sigma0 + sigma_fgcm[data.obs_band] ** 2


#: :func:`obs_variance` compiled, for callers outside a traced function (eagerly, ~10
#: single-operation programs compiled on first use).
obs_variance_compiled = jax.jit(obs_variance)


def segment_sum(values: jax.Array, data: FitData) -> jax.Array:
    """Sum over each star-band segment (observations are sorted by segment)."""
    return jax.ops.segment_sum(values, data.obs_sb, num_segments=data.n_sb,
                               indices_are_sorted=True)


def star_means(m_std: jax.Array, weight: jax.Array, data: FitData):
    """Weighted mean per star-band segment, its error and the summed weight.

    Segments without weight get mean 0 and error inf. ``m_std`` is promoted to float64.
    """
    sw = segment_sum(weight, data)
    swm = segment_sum(weight * m_std.astype(jnp.float64), data)
    ok = sw > 0
    mean = jnp.where(ok, swm / jnp.where(ok, sw, 1.0), 0.0)
    err = jnp.where(ok, 1.0 / jnp.sqrt(jnp.where(ok, sw, 1.0)), jnp.inf)
    return mean, err, sw


def residuals(params: FitParams, data: FitData, lut, state: FitState, terms=None):
    """(m_std - <m_std>) per observation and the weights of the chi2. ``terms``: the LUT's
    :class:`~jaxfgcm.fit.model.PairTerms` at ``params`` where already evaluated."""
    w = jnp.where(state.obs_use, 1.0 / obs_variance(data, state.sigma_fgcm, state.sigma0), 0.0)
    m = standard_magnitudes(params, data, lut, state.sed_slope, terms=terms)
    mean, _, _ = star_means(m, w, data)
    return m.astype(jnp.float64) - mean[data.obs_sb], w


def weighted_residuals(params: FitParams, data: FitData, lut, state: FitState, terms=None):
    """sqrt(w) (m_std - <m_std>) per observation: chi2 is its squared norm (the Gauss-Newton
    residual of the fit cycles and of the Fisher matrix)."""
    r, w = residuals(params, data, lut, state, terms=terms)
    return r * jnp.sqrt(w)


def chi2(params: FitParams, data: FitData, lut, state: FitState) -> jax.Array:
    """The loss: a pure, differentiable function of ``params`` (add priors freely)."""
    r, w = residuals(params, data, lut, state)
    return jnp.sum(w * r * r)


def degrees_of_freedom(data: FitData, state: FitState) -> jax.Array:
    """Used observations minus used star-band means."""
    n_obs = jnp.sum(state.obs_use)
    n_sb = jnp.sum(segment_sum(state.obs_use.astype(jnp.int32), data) > 0)
    return n_obs - n_sb
