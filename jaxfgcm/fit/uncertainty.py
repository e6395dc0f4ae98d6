"""Parameter uncertainties from the Gauss-Newton (Fisher) matrix of the chi2.

With weighted residuals r(theta) (chi2 = |r|^2), the Fisher matrix of the free parameters is
F = J^T J, J = dr/dtheta (exact Jacobian by forward-mode autodiff, profiled star means
included), and the covariance is F^-1, scaled by chi2/dof when ``scale_by_chi2`` (the usual
correction when the error model is imperfect). Errors of derived quantities (zeropoints,
per-visit atmosphere) follow by linear propagation: var = g^T C g with g their gradient.

Memory: J holds n_free x n_obs values (as the Gauss-Newton solver).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .data import FitData
from .loss import FitState, degrees_of_freedom, residuals
from .params import FitParams, flatten_free, n_free, unflatten_free

jax.config.update("jax_enable_x64", True)


def parameter_covariance(params: FitParams, mask: FitParams, data: FitData, lut,
                         state: FitState, scale_by_chi2: bool = True):
    """(covariance of the free parameters, errors as a FitParams pytree: NaN where frozen)."""
    x0 = flatten_free(params, mask)

    def r(x):
        rr, w = residuals(unflatten_free(x, params, mask), data, lut, state)
        return rr * jnp.sqrt(w)

    jac = jax.jit(jax.jacfwd(r))(x0)
    fisher = jac.T @ jac
    cov = jnp.linalg.pinv(fisher, hermitian=True)
    if scale_by_chi2:
        res = r(x0)
        dof = float(degrees_of_freedom(data, state)) - n_free(mask)
        cov = cov * max(float(res @ res) / max(dof, 1.0), 1.0)
    err = jnp.sqrt(jnp.clip(jnp.diag(cov), 0.0))
    nan = jax.tree_util.tree_map(lambda a: jnp.full_like(a, jnp.nan), params)
    return cov, unflatten_free(err, nan, mask)


def propagate(fn: Callable[[FitParams], jax.Array], params: FitParams, mask: FitParams,
              cov: jax.Array) -> np.ndarray:
    """Standard error of every element of ``fn(params)`` given the free-parameter covariance
    (e.g. ``fn`` = 2.5 log10 I0 per (exposure, detector) pair)."""
    x0 = flatten_free(params, mask)
    g = jax.jacfwd(lambda x: fn(unflatten_free(x, params, mask)))(x0)  # (..., n_free)
    g2 = g.reshape(-1, x0.shape[0])
    var = jnp.einsum("ij,jk,ik->i", g2, cov, g2)
    return np.sqrt(np.clip(np.asarray(var), 0.0, None)).reshape(g.shape[:-1])
