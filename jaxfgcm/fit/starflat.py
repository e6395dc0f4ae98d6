"""Star flat: per (epoch, physical filter, detector) Chebyshev polynomial in x, y, fitted to the
residuals of photometric observations between optimizer runs (fgcm's superstar flat,
fgcm-reference §5.1 step 14), by weighted linear least squares.

All groups are solved at once: the normal equations are segment sums over observations of
w a a^T (a = Chebyshev basis at the observation) and are solved as one batched linear system.
A group with fewer than ``MIN_STARS_PER_COEF`` stars per coefficient (counted by weight, see
update_star_flat) only gets a constant, and a coefficient it may no longer fit goes to 0; a
group with fewer than ``MIN_STARS_PER_COEF`` stars keeps its coefficients (a handful of stars,
one of them an unflagged blend, gave 0.13 mag flats on the simulator's tiny preset). The
flat's mean over each (epoch, filter) is forced to zero, so it cannot trade a constant with the
star magnitudes.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .data import FitData, chebyshev_centre

jax.config.update("jax_enable_x64", True)

#: Stars per Chebyshev coefficient needed for a full fit (fgcm: 10), counted by weight.
MIN_STARS_PER_COEF = 10
#: Prior width of the star-flat gradient coefficients (mag): the simulator's and HSC's flats
#: change by a few mmag across one detector.
GRADIENT_PRIOR_MAG = 0.01
#: Coverage needed for more than a constant: variance of the scaled x and y positions of the
#: group's observations (uniform coverage: 1/3) and offset of their mean from the centre.
MIN_FLAT_SPREAD_VAR = 0.09
MAX_FLAT_MEAN_OFFSET = 0.5


@partial(jax.jit, static_argnames=())
def update_star_flat(star_flat, egray, var_e, use, data: FitData):
    """New star-flat coefficients given the EGray residuals of the ``use`` observations, which
    were computed *with* ``star_flat`` applied (EGray = <m> - m_std, so a too-small flat shows
    as a positive EGray)."""
    ngroup, ncoef = star_flat.shape
    group = data.obs_flat_group
    a, w, ata = _normal_matrix(var_e, use, data)
    atb = jax.ops.segment_sum((w * egray)[:, None] * a, group, ngroup)
    n = jax.ops.segment_sum((w > 0).astype(jnp.int32), group, ngroup)
    # A full polynomial also needs the stars to span the detector: extrapolated to the centre
    # (where the zeropoint is quoted) from stars in one corner, a gradient fitted to noise gave
    # -54 mmag on the tiny preset (truth -1 mmag).
    order = data.star_flat_order
    sw = jnp.maximum(ata[:, 0, 0], 1e-300)  # sum of w (T0 = 1)
    spread = jnp.ones(ngroup, dtype=bool)
    for k in {1, order + 1} if order > 0 else set():  # T1(y) and T1(x) columns
        mean = ata[:, 0, k] / sw
        var = ata[:, k, k] / sw - mean * mean
        spread &= (var >= MIN_FLAT_SPREAD_VAR) & (jnp.abs(mean) <= MAX_FLAT_MEAN_OFFSET)
    # Stars per coefficient counted by their information (Kish's effective number, (sum w)^2 /
    # sum w^2): a y detector at the tract edge had 99 stars but the weight of 20, and a full
    # fit to them put its centre 21 mmag off (simulator, tract preset seed 77).
    n_eff = sw * sw / jnp.maximum(jax.ops.segment_sum(w * w, group, ngroup), 1e-300)
    full = (n_eff >= MIN_STARS_PER_COEF * ncoef) & spread
    keep = jnp.where(full[:, None], 1.0, (jnp.arange(ncoef) == 0)[None, :].astype(jnp.float64))
    eye = jnp.eye(ncoef)
    mat = ata * keep[:, :, None] * keep[:, None, :] + eye * (1.0 - keep[:, :, None])
    mat = mat + 1e-12 * eye * jnp.trace(ata, axis1=1, axis2=2)[:, None, None]
    # Gaussian prior N(0, GRADIENT_PRIOR_MAG^2) on the non-constant coefficients: a detector
    # whose few stars cover part of it would otherwise extrapolate a noisy gradient to its
    # centre (a tract-edge detector on the simulator: -12.5 mmag vs truth +2.2); detectors
    # with hundreds of stars are barely affected.
    prior = (1.0 / GRADIENT_PRIOR_MAG**2) * keep * (jnp.arange(ncoef) > 0)[None, :]
    mat = mat + prior[:, :, None] * eye
    # Solved for the new coefficients (the current flat plus the residuals at each observation),
    # not for a change: coefficients a group may no longer fit go to 0 instead of keeping
    # values fitted when it had more photometric stars (simulator, tract preset seed 77: a
    # tract-edge y detector kept 38-66 mmag gradients from cycle 0, whose cloudy exposures
    # were flagged later; its zeropoint was off by -21 mmag at the detector centre).
    rhs = (jnp.einsum("gij,gj->gi", ata, star_flat) + atb) * keep
    new = jnp.linalg.solve(mat, rhs[..., None])[..., 0]
    new = jnp.where((n >= MIN_STARS_PER_COEF)[:, None] & jnp.isfinite(new), new, star_flat)
    # zero mean (over the observations) per (epoch, filter)
    ef = group // data.n_det
    nef = ngroup // data.n_det
    val = jnp.sum(a * new[group], axis=1)
    sw = jax.ops.segment_sum(w, ef, nef)
    mean = jnp.where(sw > 0, jax.ops.segment_sum(w * val, ef, nef) / jnp.where(sw > 0, sw, 1.0), 0.0)
    return new.at[:, 0].add(-jnp.repeat(mean, data.n_det))


@jax.jit
def star_flat_centre_variance(var_e, use, data: FitData):
    """Variance (mag^2) of each star-flat group's value at the detector centre, from the
    weighted normal matrix of its ``use`` observations and the gradient prior (groups without
    observations: inf). For the zeropoint errors: the flat enters every zeropoint at the
    centre, and fgcm's zeropoint error leaves it out."""
    _, _, ata = _normal_matrix(var_e, use, data)
    ngroup, ncoef = ata.shape[:2]
    prior = (1.0 / GRADIENT_PRIOR_MAG**2) * (jnp.arange(ncoef) > 0)
    mat = ata + jnp.eye(ncoef) * prior[None, None, :]
    b = chebyshev_centre(data.star_flat_order)
    has = ata[:, 0, 0] > 0
    safe = jnp.where(has[:, None, None], mat, jnp.eye(ncoef)[None])
    x = jnp.linalg.solve(safe, jnp.broadcast_to(b, (ngroup, ncoef))[..., None])[..., 0]
    return jnp.where(has, x @ b, jnp.inf)


def _normal_matrix(var_e, use, data: FitData):
    """Chebyshev basis a, weights 1/var_e of the ``use`` observations, and per star-flat group
    the weighted normal matrix sum w a a^T."""
    ngroup = data.n_epochs * data.n_filters * data.n_det
    a = data.obs_cheb.astype(jnp.float64)
    w = jnp.where(use & (var_e > 0), 1.0 / jnp.where(var_e > 0, var_e, 1.0), 0.0)
    ata = jax.ops.segment_sum(w[:, None, None] * a[:, :, None] * a[:, None, :],
                              data.obs_flat_group, ngroup)
    return a, w, ata
