"""Gauss-Newton normal equations of the profiled chi2, built from the model's per-pair structure.

The generic builder (:mod:`jaxfgcm.fit.optimize`) pushes every free parameter's tangent through
the whole model to a Jacobian J (n_free x n_obs) and forms J J^T. But the parameters reach an
observation only through the 4 + n_coef per-pair columns of :func:`~jaxfgcm.fit.model.pair_rows`
(11,648 pairs against 274k observations on the tract preset), so with

    r_o = sqrt(w_o) (m_o - <m>_s),   D_o = dm_o/dtheta = sum_c a_oc T_c[pair_o],
    a_oc = dm_o / d(column c of its pair),   T_c = d(column c) / dtheta   (per pair)

and the weighted star mean differentiated as well (W_s = sum_{o in s} w_o):

    J^T J = sum_p T_p^T M_p T_p - sum_s H_s H_s^T / W_s,   M_p = sum_{o in p} w_o a_o a_o^T,
                                                            H_s = sum_{o in s} w_o D_o
    J^T r = sum_p T_p^T g_p,   g_p = sum_{o in p} w_o (m_o - <m>_s) a_o

(the mean's term drops out of J^T r: a star's weighted residuals sum to zero). a comes from one
forward-mode pass per live column through :func:`~jaxfgcm.fit.model.magnitudes_from_rows`, so the
model's formulas stay in one place. Only H needs the tangents at every observation; J and the
274k-long products of J J^T are never formed.

It holds for the fit's residual (``loss.weighted_residuals``) while the SED-slope scale is frozen:
a free scale enters through the segments, not the pairs, and the caller uses the generic builder.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .loss import obs_variance, star_means, weighted_residuals
from .model import magnitudes_from_rows, pair_rows, pair_terms_compiled, segment_chromatic
from .optimize import params_at, params_from

jax.config.update("jax_enable_x64", True)

#: The first pair columns (2.5 log10 I0 + instrument, its d/d secz, I10, dI10/dsecz) depend on
#: the atmosphere and instrument; the rest are the star-flat coefficients.
N_LUT_COLUMNS = 4


def _live_leaves(unravel, x0):
    """A FitParams of bools: which leaves the solver moves (all of them without ``live``)."""
    treedef = jax.tree_util.tree_structure(unravel(x0))
    live = unravel.live or (True,) * treedef.num_leaves
    return jax.tree_util.tree_unflatten(treedef, list(live))


def structured_normal_equations(unravel, z, x0, idx, scale, args):
    """J^T J, J^T r and r.r of ``loss.weighted_residuals`` at ``z`` (the arguments of the generic
    builder in :mod:`jaxfgcm.fit.optimize`: flat reference vector x0, free indices idx and their
    scales; ``args`` = (data, lut, fit state)).

    Three compiled programs, not one: as one program the same operations took 110-130 ms on
    the tract preset (2-core CPU), as three 60-70 ms (17 + 22 + 22; docs/performance.md)."""
    data = args[0]
    t, a, w, res, sw = _sensitivities(unravel, z, x0, idx, scale, args)
    jtj, jtr, rr = _pair_terms(t, a, w, res, data)
    return _minus_star_means(jtj, t, a, w, sw, data), jtr, rr


def structured_value(unravel, z, x0, idx, scale, args):
    """r.r of ``loss.weighted_residuals`` at ``z`` (the Gauss-Newton trial value; arguments as
    :func:`structured_normal_equations`), with the LUT terms from the program the cycles'
    magnitudes use (:func:`~jaxfgcm.fit.model.pair_terms_compiled`) instead of compiling the
    LUT contraction once more (docs/performance.md, "Compile time of a fresh fit")."""
    data, lut, _ = args
    params = params_at(unravel, z, x0, idx, scale)
    return _value_given_terms(params, pair_terms_compiled(params, data, lut), args)


@jax.jit
def _value_given_terms(params, terms, args):
    r = weighted_residuals(params, *args, terms=terms)
    return r @ r


@partial(jax.jit, static_argnums=0)
def _sensitivities(unravel, z, x0, idx, scale, args):
    """T_c (n_pairs, n) of the live columns, a (per observation, per live column), the weights,
    the residuals about the star means and the segments' summed weights."""
    data, lut, state = args
    live = _live_leaves(unravel, x0)
    if live.sed_scale:
        raise ValueError("structured normal equations need the SED-slope scale frozen")

    def columns(zz):
        return pair_rows(params_from(unravel, zz, x0, idx, scale), data, lut)

    cols, col_jvp = jax.linearize(columns, z)
    keep = list(range(N_LUT_COLUMNS)) + (
        list(range(N_LUT_COLUMNS, len(cols))) if live.star_flat else [])
    # T_c in (n_pairs, n) layout: the observations gather whole rows of it, ~4x faster on
    # XLA's CPU backend than n separate 1-D gathers and segment sums
    tangents = jax.vmap(col_jvp, out_axes=-1)(jnp.eye(z.shape[0]))
    t = [tangents[c].astype(jnp.float64) for c in keep]

    params = params_from(unravel, z, x0, idx, scale)
    chrom = segment_chromatic(state.sed_slope, params.sed_scale, data)
    m, obs_jvp = jax.linearize(lambda cs: magnitudes_from_rows(cs, *chrom, data), cols)
    zeros = tuple(jnp.zeros_like(c) for c in cols)

    def sensitivity(c):
        e = list(zeros)
        e[c] = jnp.ones_like(cols[c])
        return obs_jvp(tuple(e)).astype(jnp.float64)

    a = [sensitivity(c) for c in keep]  # dm_o / d column c
    w = jnp.where(state.obs_use, 1.0 / obs_variance(data, state.sigma_fgcm, state.sigma0), 0.0)
    mean, _, sw = star_means(m, w, data)
    return t, a, w, m.astype(jnp.float64) - mean[data.obs_sb], sw


@jax.jit
def _pair_terms(t, a, w, res, data):
    """sum_p T_p^T M_p T_p, sum_p T_p^T g_p and r.r."""
    nc, n = len(t), t[0].shape[1]
    wa = [w * ac for ac in a]

    def per_pair(values):  # k arrays (n_obs,) -> (k, n_pairs)
        return jax.ops.segment_sum(jnp.stack(values).T, data.obs_pair,
                                   num_segments=data.n_pairs).T

    mm = per_pair([wa[c] * a[d] for c in range(nc) for d in range(nc)])
    g = per_pair([wc * res for wc in wa])
    # n x n products per column pair (an einsum batched over the pairs is 3x slower on the CPU)
    jtj = jnp.zeros((n, n))
    jtr = jnp.zeros(n)
    for d in range(nc):
        tm = sum(t[c] * mm[c * nc + d][:, None] for c in range(nc))
        jtj = jtj + tm.T @ t[d]
        jtr = jtr + t[d].T @ g[d]
    return jtj, jtr, jnp.sum(w * res * res)


@jax.jit
def _minus_star_means(jtj, t, a, w, sw, data):
    """J^T J less sum_s H_s H_s^T / W_s: the tangents gathered to every observation (rows of
    T), weighted, summed per star-band segment."""
    u = sum((w * ac)[:, None] * tc[data.obs_pair] for ac, tc in zip(a, t))  # w_o D_o
    h = jax.ops.segment_sum(u, data.obs_sb, num_segments=data.n_sb, indices_are_sorted=True)
    h = h * jnp.where(sw > 0, 1.0 / jnp.sqrt(jnp.where(sw > 0, sw, 1.0)), 0.0)[:, None]
    return jtj - h.T @ h
