"""Parameter uncertainties from the Gauss-Newton (Fisher) matrix of the chi2.

With weighted residuals r(theta) (chi2 = |r|^2), the Fisher matrix of the free parameters is
F = J^T J, J = dr/dtheta (exact Jacobian by forward-mode autodiff, profiled star means
included), and the covariance is F^-1, scaled by chi2/dof when ``scale_by_chi2`` (the usual
correction when the error model is imperfect). Errors of derived quantities (zeropoints,
per-visit atmosphere) follow by linear propagation: var = g^T C g with g their gradient.

F comes from the model's per-pair structure (:mod:`jaxfgcm.fit.normal`, as in the fit's
Gauss-Newton solver) unless the SED-slope scale is free, which needs the full Jacobian
(``method="jacobian"`` forces it). Memory: n_free x n_obs values either way (J, or the
tangents at every observation that the star means' term needs).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .data import FitData
from .loss import FitState, degrees_of_freedom, weighted_residuals
from .normal import structured_normal_equations
from .optimize import _free_coordinates, _gn_normal_equations
from .params import FitParams, flatten_free, n_free, unflatten_free

jax.config.update("jax_enable_x64", True)


def parameter_covariance(params: FitParams, mask: FitParams, data: FitData, lut,
                         state: FitState, scale_by_chi2: bool = True, method: str = "auto"):
    """(covariance of the free parameters, errors as a FitParams pytree: NaN where frozen).

    ``method``: "auto" (the structured Fisher matrix where it applies, else the Jacobian),
    "structured" or "jacobian". Their Fisher matrices agree to 1e-12 relative; the
    pseudo-inverse of a nearly singular one amplifies that (2e-6 in the errors of the unit
    test's synthetic tract with the star flat free, tests/test_fit.py)."""
    if method not in ("auto", "structured", "jacobian"):
        raise ValueError(f"method {method!r}: auto, structured or jacobian")
    sed_free = bool(np.any(np.asarray(mask.sed_scale)))
    if method == "structured" and sed_free:
        raise ValueError("the structured Fisher matrix needs the SED-slope scale frozen")
    if method == "jacobian" or (method == "auto" and sed_free):
        fisher, chi2 = _fisher_from_jacobian(params, mask, data, lut, state)
    else:
        fisher, chi2 = _fisher_structured(params, mask, data, lut, state)
    cov = jnp.linalg.pinv(fisher, hermitian=True)
    if scale_by_chi2:
        dof = float(degrees_of_freedom(data, state)) - n_free(mask)
        cov = cov * max(chi2 / max(dof, 1.0), 1.0)
    err = jnp.sqrt(jnp.clip(jnp.diag(cov), 0.0))
    nan = jax.tree_util.tree_map(lambda a: jnp.full_like(a, jnp.nan), params)
    return cov, unflatten_free(err, nan, mask)


def _fisher_from_jacobian(params, mask, data, lut, state):
    """J^T J from the full Jacobian: the solver's generic builder, compiled once per parameter
    structure (a closure jitted here compiled again on every call)."""
    return _fisher(partial(_gn_normal_equations, weighted_residuals), params, mask, data, lut,
                   state)


def _fisher_structured(params, mask, data, lut, state):
    """J^T J from the model's per-pair structure (:mod:`jaxfgcm.fit.normal`)."""
    return _fisher(structured_normal_equations, params, mask, data, lut, state)


def _fisher(normal_equations, params, mask, data, lut, state):
    """J^T J and r.r at ``params`` from a Gauss-Newton builder, in the free elements' own units
    (the builders work in units of their scales)."""
    x0, unravel, idx, scale = _free_coordinates(params, mask)
    jtj, _, rr = normal_equations(unravel, jnp.zeros(idx.shape[0]), x0, idx, scale,
                                  (data, lut, state))
    return jtj / scale[:, None] / scale[None, :], float(rr)


def propagate(fn: Callable[[FitParams], jax.Array], params: FitParams, mask: FitParams,
              cov: jax.Array) -> np.ndarray:
    """Standard error of every element of ``fn(params)`` given the free-parameter covariance
    (e.g. ``fn`` = 2.5 log10 I0 per (exposure, detector) pair)."""
    x0 = flatten_free(params, mask)
    g = jax.jacfwd(lambda x: fn(unflatten_free(x, params, mask)))(x0)  # (..., n_free)
    g2 = g.reshape(-1, x0.shape[0])
    var = jnp.einsum("ij,jk,ik->i", g2, cov, g2)
    return np.sqrt(np.clip(np.asarray(var), 0.0, None)).reshape(g.shape[:-1])
