"""The fit's fast per-observation pass (model.pair_rows / magnitudes_from_rows: per-pair columns,
Chebyshev basis from x, y on the fly) and the one-block Gauss-Newton normal equations, against
straightforward reference implementations written here from the model's equations (fit/model.py
docstring): m_std, chi2, its gradient, and J^T J, J^T r of the weighted residuals.

The data: a synthetic tract with a second-order star flat (9 Chebyshev coefficients, so the
recurrence T_2 = 2x^2 - 1 is exercised), random star-flat coefficients, instrument terms,
SED slopes and a crunching gray, so that every term of the model is non-zero.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfgcm.config import Config
from jaxfgcm.fit import FitState, chi2
from jaxfgcm.fit import optimize as O
from jaxfgcm.fit.cycle import _residual_vector
from jaxfgcm.fit.loss import obs_variance, star_means
from jaxfgcm.fit.model import MAG_PER_LN, pair_instrument, pair_terms, standard_magnitudes
from jaxfgcm.fit.normal import structured_normal_equations, structured_value
from jaxfgcm.fit.params import free_mask
from jaxfgcm.fit.synthetic import make_synthetic

CFG = Config().with_overrides({
    "instrument.bands": ["g", "r", "i"], "fit.fit_bands": ["g", "r", "i"],
    "fit.star_flat_order": 2,
})


@pytest.fixture(scope="module")
def problem():
    data, lut, truth = make_synthetic(CFG, n_stars=300, n_nights=2, visits_per_night=6, n_det=5,
                                      seed=3)
    rng = np.random.default_rng(4)
    p = truth["params"]
    p = eqx.tree_at(lambda q: (q.star_flat, q.throughput, q.aper_slope, q.sed_scale), p,
                    (jnp.asarray(rng.normal(0, 0.01, p.star_flat.shape)),
                     jnp.asarray(rng.normal(0, 0.01, p.throughput.shape)),
                     jnp.asarray(rng.normal(0, 0.01, p.aper_slope.shape)),
                     jnp.asarray(rng.uniform(0.5, 1.5, p.sed_scale.shape))))
    state = FitState(sed_slope=jnp.asarray(rng.normal(0, 3e-4, data.n_sb)),
                     obs_use=data.obs_valid & (jnp.asarray(rng.random(data.obs_valid.shape))
                                               > 0.1),
                     sigma_fgcm=jnp.asarray([0.004, 0.003, 0.005]), sigma0=0.003)
    gray = jnp.asarray(rng.normal(0, 0.01, data.n_pairs))
    return data, lut, p, state, gray


def _numpy_basis(data):
    """T_i(x) T_j(y) from numpy's Chebyshev module at the stored positions."""
    xn, yn = np.asarray(data.obs_xn), np.asarray(data.obs_yn)
    tx = np.polynomial.chebyshev.chebvander(xn, data.star_flat_order)
    ty = np.polynomial.chebyshev.chebvander(yn, data.star_flat_order)
    return jnp.asarray((tx[:, :, None] * ty[:, None, :]).reshape(len(xn), -1))


def _reference_magnitudes(params, data, lut, sed_slope, pair_gray=None, cheb=None):
    """m_std straight from the model's equations: numpy's Chebyshev basis (``cheb``, computed
    outside any trace), plain indexing of every per-pair, per-group and per-band table."""
    t = pair_terms(params, data, lut)
    pair, ds, band = data.obs_pair, data.obs_dsecz, data.obs_band
    base = t.mag_i0 + pair_instrument(params, data)
    if pair_gray is not None:
        base = base + pair_gray
    cheb = _numpy_basis(data) if cheb is None else cheb
    flat = jnp.sum(cheb * params.star_flat[data.obs_flat_group], axis=1)
    i10 = t.i10[pair] + t.di10[pair] * ds
    fp = sed_slope[data.obs_sb] * params.sed_scale[band]
    chrom = MAG_PER_LN * jnp.log((1 + fp * i10) / (1 + fp * data.band_i10_std[band]))
    return data.obs_mag + base[pair] + t.dmag_i0[pair] * ds + flat + chrom


def _reference_chi2(params, data, lut, state, cheb):
    w = jnp.where(state.obs_use, 1.0 / obs_variance(data, state.sigma_fgcm, state.sigma0), 0.0)
    m = _reference_magnitudes(params, data, lut, state.sed_slope, cheb=cheb)
    mean, _, _ = star_means(m, w, data)
    r = m - mean[data.obs_sb]
    return jnp.sum(w * r * r)


def test_magnitudes_match_reference(problem):
    data, lut, p, state, gray = problem
    assert data.n_coef == 9
    for g in (None, gray):
        m = standard_magnitudes(p, data, lut, state.sed_slope, pair_gray=g)
        ref = _reference_magnitudes(p, data, lut, state.sed_slope, pair_gray=g)
        # padding rows (zero weight) take their segment's band in the chromatic term
        assert float(jnp.max(jnp.where(data.obs_valid, jnp.abs(m - ref), 0.0))) <= 1e-9
    # the stored basis property (used by the star-flat update) is the numpy basis
    tx = np.polynomial.chebyshev.chebvander(np.asarray(data.obs_xn), 2)
    ty = np.polynomial.chebyshev.chebvander(np.asarray(data.obs_yn), 2)
    np.testing.assert_allclose(np.asarray(data.obs_cheb),
                               (tx[:, :, None] * ty[:, None, :]).reshape(-1, 9), atol=1e-15)


def test_chi2_and_gradient_match_reference(problem):
    data, lut, p, state, _ = problem
    v, g = jax.jit(jax.value_and_grad(chi2))(p, data, lut, state)
    v_ref, g_ref = jax.jit(jax.value_and_grad(_reference_chi2))(p, data, lut, state,
                                                                _numpy_basis(data))
    assert abs(float(v) - float(v_ref)) <= 1e-12 * float(v_ref)
    flat, _ = jax.flatten_util.ravel_pytree(g)
    flat_ref, _ = jax.flatten_util.ravel_pytree(g_ref)
    # per element, relative to the gradient's scale (several elements are zero by symmetry)
    assert float(jnp.max(jnp.abs(flat - flat_ref))) <= 1e-10 * float(jnp.max(jnp.abs(flat_ref)))
    # and each parameter group that matters agrees on its own scale
    for name in ("o3", "alpha", "star_flat", "aper_slope", "sed_scale"):
        a, b = getattr(g, name), getattr(g_ref, name)
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-9 * float(jnp.max(jnp.abs(b))), name


def test_gauss_newton_normal_equations_match_jacfwd(problem, monkeypatch):
    """Both Jacobian paths (one vmapped JVP, blocks of GN_BLOCK) against jax.jacfwd of the
    reference residual vector."""
    data, lut, p, state, _ = problem
    mask = free_mask(data, fit_star_flat=True)  # star flat free: its columns are exercised
    x0, unravel, m, sc = O._ravel(p, mask)
    idx = jnp.asarray(np.nonzero(np.asarray(m))[0])
    scale = sc[idx]
    z = jnp.asarray(np.random.default_rng(5).normal(0, 0.1, idx.shape[0]))
    args = (data, lut, state)
    cheb = _numpy_basis(data)

    def ref_residual(zz):
        q = unravel(x0.at[idx].add(scale * zz))
        w = jnp.where(state.obs_use, 1.0 / obs_variance(data, state.sigma_fgcm, state.sigma0),
                      0.0)
        mm = _reference_magnitudes(q, data, lut, state.sed_slope, cheb=cheb)
        mean, _, _ = star_means(mm, w, data)
        return (mm - mean[data.obs_sb]) * jnp.sqrt(w)

    r = ref_residual(z)
    jac = jax.jacfwd(ref_residual)(z).T
    jtj_ref, jtr_ref = jac @ jac.T, jac @ r
    normal = O._gn_normal_equations.__wrapped__
    for one_block_max in (O.GN_ONE_BLOCK_MAX, 0):
        monkeypatch.setattr(O, "GN_ONE_BLOCK_MAX", one_block_max)
        jtj, jtr, rr = jax.jit(normal, static_argnums=(0, 1))(
            _residual_vector, unravel, z, x0, idx, scale, args)
        assert abs(float(rr) - float(r @ r)) <= 1e-12 * float(r @ r)
        assert float(jnp.max(jnp.abs(jtj - jtj_ref))) <= 1e-10 * float(jnp.max(jnp.abs(jtj_ref)))
        assert float(jnp.max(jnp.abs(jtr - jtr_ref))) <= 1e-10 * float(jnp.max(jnp.abs(jtr_ref)))


def _count_primitive(jaxpr, name, length):
    """Occurrences of primitive ``name`` with a 1-D output of ``length`` in a jaxpr, nested
    calls included."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == name and eqn.outvars[0].aval.shape == (length,)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            n += _count_primitive(sub, name, length)
    return n


def test_frozen_parameters_enter_the_jacobian_as_constants(problem):
    """With the star flat frozen (the fit's default), its leaf comes from the reference vector:
    the same normal equations, and no per-observation gathers of its (zero) tangents."""
    data, lut, p, state, _ = problem
    x0, unravel, m, sc = O._ravel(p, free_mask(data))
    rows = np.asarray(m) > 0
    idx = jnp.asarray(np.nonzero(rows)[0])
    scale = sc[idx]
    live = unravel.with_live(rows)
    leaves = jax.tree_util.tree_leaves(p)
    assert not all(live.live) and any(live.live)
    flat_leaf = next(k for k, a in enumerate(leaves) if a is p.star_flat)
    assert not live.live[flat_leaf]
    z = jnp.asarray(np.random.default_rng(6).normal(0, 0.1, idx.shape[0]))
    args = (data, lut, state)
    normal = jax.jit(O._gn_normal_equations.__wrapped__, static_argnums=(0, 1))
    dense = normal(_residual_vector, unravel, z, x0, idx, scale, args)
    const = normal(_residual_vector, live, z, x0, idx, scale, args)
    for a, b in zip(dense, const):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-12 * float(jnp.max(jnp.abs(a)))

    def gathers(unr):
        def f(t):
            return jax.jvp(lambda zz: O._gn_residual(_residual_vector, unr, zz, x0, idx, scale,
                                                     args), (z,), (t,))[1]
        return _count_primitive(jax.make_jaxpr(f)(z).jaxpr, "gather", data.obs_mag.shape[0])

    # the order-2 star flat: its 9 per-pair columns' tangents no longer gathered to the
    # observations
    assert gathers(unravel) - gathers(live) >= data.n_coef


@pytest.mark.parametrize("star_flat_free", [False, True])
def test_structured_normal_equations_match_the_generic_builder(problem, star_flat_free):
    """fit.normal builds J^T J, J^T r, r.r from the per-pair columns' tangents and the
    per-observation sensitivities instead of J: the same as the generic JVP builder, with the
    star flat frozen (the fit's default: its columns left out) and free (all columns), a frozen
    superset element (scale 0) included; and the trial value r.r, computed with the LUT's
    terms from their own compiled program."""
    data, lut, p, state, _ = problem
    mask = free_mask(data, fit_star_flat=star_flat_free)
    x0, unravel, m, sc = O._ravel(p, mask)
    rows = np.asarray(m) > 0
    idx = jnp.asarray(np.nonzero(rows)[0])
    scale = sc[idx].at[0].set(0.0)
    live = unravel.with_live(rows)
    z = jnp.asarray(np.random.default_rng(7).normal(0, 0.1, idx.shape[0]))
    args = (data, lut, state)
    generic = O._gn_normal_equations(_residual_vector, live, z, x0, idx, scale, args)
    structured = structured_normal_equations(live, z, x0, idx, scale, args)
    for name, a, b in zip(("J^T J", "J^T r", "r.r"), generic, structured):
        err = float(jnp.max(jnp.abs(a - b)))
        assert err <= 1e-12 * float(jnp.max(jnp.abs(a))), (name, err)  # measured <= 5e-15
    assert float(jnp.max(jnp.abs(structured[0][0]))) == 0.0  # the frozen superset element
    # the trial value with the LUT terms from their own compiled program
    v = float(O._gn_value(_residual_vector, live, z, x0, idx, scale, args))
    assert abs(float(structured_value(live, z, x0, idx, scale, args)) - v) <= 1e-12 * v


def test_structured_normal_equations_refuse_a_free_sed_scale(problem):
    data, lut, p, state, _ = problem
    x0, unravel, m, sc = O._ravel(p, free_mask(data, fit_sed_scale=True))
    rows = np.asarray(m) > 0
    idx = jnp.asarray(np.nonzero(rows)[0])
    with pytest.raises(ValueError, match="SED-slope scale"):
        structured_normal_equations(unravel.with_live(rows), jnp.zeros(idx.shape[0]), x0, idx,
                                    sc[idx], (data, lut, state))
