"""The solver loop: minimise a loss over the free elements of a parameter pytree.

The optimizer works on z, the free elements divided by their typical scale
(:data:`jaxfgcm.fit.params.PARAM_SCALES`), so all directions have comparable curvature.

Methods (measured in scripts/bench_fit.py, passes = full evaluations over the observations):

- ``"lbfgs"``: optax L-BFGS with a zoom line search (fgcm uses scipy L-BFGS-B). One pass per
  evaluation (value and gradient together).
- ``"gauss_newton"``: Levenberg-Marquardt-damped Gauss-Newton on the weighted residual vector.
  The Jacobian of the free parameters is built by forward-mode JVPs in blocks of ``GN_BLOCK``
  parameters (one pass per block; all in one vmapped JVP when the Jacobian has at most
  ``GN_ONE_BLOCK_MAX`` values), so an iteration costs ceil(n_free / GN_BLOCK) + 1 passes
  and holds the n_free x n_obs Jacobian in memory (fine for a tract, not for a survey). The fit
  cycles pass ``normal_fn`` (:mod:`jaxfgcm.fit.normal`), which builds the same normal equations
  from the model's per-pair structure without J.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .params import FitParams, n_free, scales_like

jax.config.update("jax_enable_x64", True)

#: Parameters per forward-mode Jacobian block of the Gauss-Newton method.
GN_BLOCK = 32
#: Largest Jacobian (n_free x n_residuals elements, float64) built in one vmapped JVP instead
#: of blocks of GN_BLOCK: one pass then replaces a loop that zero-filled the whole Jacobian and
#: copied every block into it (~40% of the Gauss-Newton time on the tract preset,
#: docs/performance.md). 2**25 elements = 256 MB.
GN_ONE_BLOCK_MAX = 2**25
#: Absolute chi2 decrease below which an iteration counts as converged.
CHI2_ABS_TOL = 0.1


@dataclass
class SolveInfo:
    method: str
    iterations: int
    passes: int  # full passes over the observations (value+gradient or Jacobian block)
    loss_start: float
    loss_end: float
    converged: bool


def minimize(
    loss: Callable[..., jax.Array],
    params: FitParams,
    mask: FitParams,
    args: tuple = (),
    *,
    max_iter: int = 50,
    tol: float = 1e-5,
    method: str = "lbfgs",
    residual_fn: Callable[..., jax.Array] | None = None,
    project: Callable[[FitParams], FitParams] | None = None,
    superset: FitParams | None = None,
    normal_fn: Callable | None = None,
    value_fn: Callable | None = None,
) -> tuple[FitParams, SolveInfo]:
    """Minimise ``loss(params, *args)`` over the elements of ``params`` where ``mask`` is True.

    ``loss`` (and ``residual_fn``) should be module-level functions: the compiled solver step
    is cached per function and argument shapes, so cycles with a different set of frozen
    parameters reuse it (L-BFGS works on the full vector, frozen elements have zero gradient).
    Stops after ``max_iter`` iterations or when an iteration lowers the loss by less than
    ``tol`` (relative). ``gauss_newton`` needs ``residual_fn(params, *args) -> r`` with
    loss = sum(r^2). ``project(params) -> params`` (e.g. clipping to bounds) is applied after
    every step. ``superset`` (``gauss_newton``): a mask that contains ``mask`` and fixes the
    size of the compiled programs; its elements outside ``mask`` take no step, so fits with
    different frozen sets (cycle 0 without the atmosphere, nights without enough exposures)
    share one compiled Gauss-Newton program instead of compiling one each. ``normal_fn``
    (``gauss_newton``): ``normal_fn(unravel, z, x0, idx, scale, args) -> (J^T J, J^T r, r.r)``
    (compiled inside, ``unravel`` hashable and static) replaces the generic builder with one
    that knows the residual's structure (:func:`jaxfgcm.fit.normal.structured_normal_equations`
    for ``loss.weighted_residuals``); same arguments as ``_gn_normal_equations`` after
    ``residual_fn``. ``value_fn`` (``gauss_newton``): ``value_fn(unravel, z, x0, idx, scale,
    args) -> r.r`` for the trial steps, in place of ``residual_fn`` compiled
    (:func:`jaxfgcm.fit.normal.structured_value`, which shares the LUT's compiled program).
    """
    if n_free(mask) == 0 or max_iter <= 0:
        val = float(_value(loss, params, args))
        return params, SolveInfo(method, 0, 1, val, val, True)
    if method == "lbfgs":
        return _lbfgs(loss, params, mask, args, max_iter, tol, project)
    if method == "gauss_newton":
        if residual_fn is None:
            raise ValueError("gauss_newton needs residual_fn")
        return _gauss_newton(residual_fn, params, mask, args, max_iter, tol, project, superset,
                             normal_fn, value_fn)
    raise ValueError(f"unknown method {method!r} (lbfgs, gauss_newton)")


@partial(jax.jit, static_argnums=0)
def _value(loss, params, args):
    return loss(params, *args)


_OPT = optax.lbfgs(memory_size=20)


def _scaled(loss, x0, unravel, step, args):
    def f(z):
        return loss(unravel(x0 + step * z), *args)

    return f


@partial(jax.jit, static_argnums=(0, 1))
def _lbfgs_step(loss, unravel, z, state, x0, step, args):
    f = _scaled(loss, x0, unravel, step, args)
    value, grad = optax.value_and_grad_from_state(f)(z, state=state)
    updates, state = _OPT.update(grad, state, z, value=value, grad=grad, value_fn=f)
    return optax.apply_updates(z, updates), state, value


def _lbfgs(loss, params, mask, args, max_iter, tol, project):
    x0, unravel, m, sc = _ravel(params, mask)
    step = m * sc  # frozen elements do not move
    z = jnp.zeros_like(x0)
    state = _OPT.init(z)
    first = prev = None
    passes = n_small = 0
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        z, state, value = _lbfgs_step(loss, unravel, z, state, x0, step, args)
        ls = optax.tree_utils.tree_get(state, "info")
        passes += int(getattr(ls, "num_linesearch_steps", 1)) + (1 if it == 1 else 0)
        value = float(value)
        first = value if first is None else first
        # L-BFGS can make a short step now and then: stop after 3 small decreases in a row
        small = prev is not None and 0 <= prev - value <= max(tol * abs(value), CHI2_ABS_TOL)
        n_small = n_small + 1 if small else 0
        if n_small >= 3:
            converged = True
            break
        prev = value
    out = unravel(x0 + step * z)
    if project is not None:
        out = project(out)
    end = float(_value(loss, out, args))
    return out, SolveInfo("lbfgs", it, passes + 1, first, end, converged)


class _Unravel:
    """Hashable wrapper of ravel_pytree's unravel (same structure -> same compiled step).

    ``live`` (one bool per leaf, static): leaves without a free element are taken from the
    reference vector by :meth:`mixed`, so they are constants of the Jacobian and their tangents
    symbolically zero instead of dense zeros carried through the model (the frozen star flat:
    4 of the 8 per-pair columns gathered for every tangent, docs/performance.md).
    """

    def __init__(self, fn, key, sizes=(), live=None):
        self.fn, self.key, self.sizes, self.live = fn, key, sizes, live

    def __call__(self, x):
        return self.fn(x)

    def with_live(self, rows: np.ndarray) -> _Unravel:
        """The same unravel, with the leaves that hold an element of ``rows`` (bool, flat) live."""
        bounds = np.cumsum((0,) + self.sizes)
        live = tuple(bool(rows[a:b].any()) for a, b in pairwise(bounds))
        return _Unravel(self.fn, (self.key, live), self.sizes, live)

    def mixed(self, x, x_ref):
        """Parameters from ``x`` in the live leaves and from ``x_ref`` in the others."""
        if self.live is None:
            return self.fn(x)
        cur, treedef = jax.tree_util.tree_flatten(self.fn(x))
        ref = jax.tree_util.tree_leaves(self.fn(x_ref))
        return jax.tree_util.tree_unflatten(
            treedef, [c if keep else r for c, r, keep in zip(cur, ref, self.live)])

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Unravel) and other.key == self.key


def _flat_host(tree) -> np.ndarray:
    """A parameter pytree as one float64 NumPy vector in ravel_pytree's order (leaves in
    order, each C-ravelled). On the host: as JAX operations run eagerly these were
    single-operation programs, each compiled on first use."""
    return np.concatenate([np.ravel(np.asarray(a, np.float64))
                           for a in jax.tree_util.tree_leaves(tree)])


def _flat_mask(mask):
    """A boolean parameter pytree as one float64 vector in ravel_pytree's order."""
    return jnp.asarray(_flat_host(mask))


def _ravel(params, mask):
    x0, unravel = ravel_pytree(params)
    m = _flat_mask(mask)
    sc = jnp.asarray(_flat_host(scales_like(params)))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    unravel = _Unravel(unravel, (treedef, tuple((a.shape, str(a.dtype)) for a in leaves)),
                       tuple(int(np.size(a)) for a in leaves))
    return x0, unravel, m, sc


def params_from(unravel, z, x0, idx, scale):
    """The parameters at Gauss-Newton coordinates ``z``: ``x0`` moved by ``scale * z`` at the
    solved indices. Leaves that are not live hold no solved element, so taking them from
    ``x0`` is the full unravel."""
    return unravel.mixed(x0.at[idx].add(scale * z), x0)


#: :func:`params_from` compiled, for callers outside a traced function (eagerly, ~10
#: single-operation programs compiled on first use).
params_at = partial(jax.jit, static_argnums=0)(params_from)


def _gn_residual(residual_fn, unravel, z, x0, idx, scale, args):
    return residual_fn(params_from(unravel, z, x0, idx, scale), *args)


@partial(jax.jit, static_argnums=(0, 1))
def _gn_normal_equations(residual_fn, unravel, z, x0, idx, scale, args):
    n = z.shape[0]
    nblock = math.ceil(n / GN_BLOCK)
    r, jvp = jax.linearize(
        lambda zz: _gn_residual(residual_fn, unravel, zz, x0, idx, scale, args), z)
    if n * r.shape[0] <= GN_ONE_BLOCK_MAX:
        jac = jax.vmap(jvp)(jnp.eye(n))
        return jac @ jac.T, jac @ r, r @ r
    basis = jnp.eye(nblock * GN_BLOCK, n)

    def block(k):
        e = jax.lax.dynamic_slice_in_dim(basis, k * GN_BLOCK, GN_BLOCK)
        return jax.vmap(jvp)(e)  # (GN_BLOCK, n_obs)

    jac = jax.lax.map(block, jnp.arange(nblock)).reshape(nblock * GN_BLOCK, -1)[:n]
    return jac @ jac.T, jac @ r, r @ r


@partial(jax.jit, static_argnums=(0, 1))
def _gn_value(residual_fn, unravel, z, x0, idx, scale, args):
    r = _gn_residual(residual_fn, unravel, z, x0, idx, scale, args)
    return r @ r


def _blocked(project, unravel, x0, idx, scale, z, grad):
    """Free parameters sitting at a bound of ``project`` with the gradient pushing outwards."""
    x = x0.at[idx].add(scale * z)
    d = 1e-6 * scale
    lo = x.at[idx].add(-d)
    hi = x.at[idx].add(d)
    lo_p, _ = ravel_pytree(project(unravel(lo)))
    hi_p, _ = ravel_pytree(project(unravel(hi)))
    at_lo = lo_p[idx] > lo[idx] + 0.5 * d
    at_hi = hi_p[idx] < hi[idx] - 0.5 * d
    return (at_lo & (grad > 0)) | (at_hi & (grad < 0))


# The small linear algebra of an iteration, compiled: run eagerly it was ~70 single-operation
# programs, each compiled on first use (~1.5 s of a tract run on the 2-core CPU), and on a GPU
# each a separate launch. ``project`` is a jax.tree_util.Partial (a pytree), so one compiled
# program serves every cycle's bounds.
@partial(jax.jit, static_argnums=1)
def _gn_active_set(project, unravel, jtj, jtr, z, x0, idx, scale):
    """Normal equations with the parameters held at their bounds removed, and the diagonal
    that scales the damping."""
    if project is not None:
        # Active set: a parameter at a bound that the gradient pushes outwards is held
        # there, so the step of the others stays a descent direction (a projected full
        # step is not one, and LM would crawl).
        fix = _blocked(project, unravel, x0, idx, scale, z, jtr)
        keep = ~fix
        jtj = jnp.where(keep[:, None] & keep[None, :], jtj, 0.0) + jnp.diag(fix * 1.0)
        jtr = jnp.where(keep, jtr, 0.0)
    return jtj, jtr, jnp.maximum(jnp.diag(jtj), 1e-12)


@partial(jax.jit, static_argnums=1)
def _gn_step(project, unravel, jtj, jtr, diag, lam, z, x0, idx, scale):
    """The damped step, or with bounds the step to the projection of z + dz onto them."""
    dz = -jnp.linalg.solve(jtj + lam * jnp.diag(diag), jtr)
    if project is not None:
        xp, _ = ravel_pytree(project(unravel(x0.at[idx].add(scale * (z + dz)))))
        moving = scale > 0  # frozen elements of a superset (scale 0) stay at z = 0
        dz = jnp.where(moving, (xp[idx] - x0[idx]) / jnp.where(moving, scale, 1.0) - z, 0.0)
    return dz


def _free_coordinates(params, mask, superset=None):
    """The Gauss-Newton coordinates: the flat parameter vector x0, an unravel whose leaves
    without a free element are constants, the indices of the solved elements (``superset``'s,
    else ``mask``'s) and their scales (0 for superset elements frozen by ``mask``: no step)."""
    x0, unravel, m, sc = _ravel(params, mask)
    m, sc = np.asarray(m), np.asarray(sc)
    rows = m > 0
    if superset is not None:
        sup = _flat_host(superset) > 0
        if np.any(rows & ~sup):
            raise ValueError("superset must contain every free element of mask")
        rows = sup
    idx = np.nonzero(rows)[0]
    return x0, unravel.with_live(rows), jnp.asarray(idx), jnp.asarray((sc * m)[idx])


def _gauss_newton(residual_fn, params, mask, args, max_iter, tol, project, superset=None,
                  normal_fn=None, value_fn=None):
    x0, unravel, idx, scale = _free_coordinates(params, mask, superset)
    n = int(idx.shape[0])
    nblock = math.ceil(n / GN_BLOCK)
    common = (x0, idx, scale, args)
    z = jnp.zeros(n)
    lam = 1e-2  # start damped: full GN steps from the standard jump to spurious minima at bounds
    passes = 0
    first = None
    converged = False
    it = 0
    if project is not None and not isinstance(project, jax.tree_util.Partial):
        project = jax.tree_util.Partial(project)  # a plain function: static, compiled per object
    for it in range(1, max_iter + 1):
        if normal_fn is None:
            jtj, jtr, v = _gn_normal_equations(residual_fn, unravel, z, *common)
        else:
            jtj, jtr, v = normal_fn(unravel, z, *common)
        passes += nblock + 1  # counted as the generic builder's, to compare iterations
        v = float(v)
        first = v if first is None else first
        jtj, jtr, diag = _gn_active_set(project, unravel, jtj, jtr, z, x0, idx, scale)
        while True:
            dz = _gn_step(project, unravel, jtj, jtr, diag, lam, z, x0, idx, scale)
            if value_fn is None:
                v_new = float(_gn_value(residual_fn, unravel, z + dz, *common))
            else:
                v_new = float(value_fn(unravel, z + dz, *common))
            passes += 1
            if v_new <= v:  # False for NaN
                lam = max(lam / 10, 1e-12)
                break
            lam *= 10
            if lam > 1e8:
                dz, v_new = jnp.zeros_like(z), v
                break
        z = z + dz
        # a chi2 change below 0.1 is statistically meaningless whatever the data size
        if v - v_new <= max(tol * v_new, CHI2_ABS_TOL):
            converged = True
            break
    out = params_at(unravel, z, x0, idx, scale)
    return out, SolveInfo("gauss_newton", it, passes, first, v_new, converged)


__all__ = ["SolveInfo", "minimize"]
