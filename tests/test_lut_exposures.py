"""The per-exposure LUT path (LutInterpolator.exposure_terms / pairs_from_exposures, a low-rank
form over detector slots) against the per-pair interpolation it replaces: values, the sec z
derivative and the gradient w.r.t. the atmosphere, on the real HSC-like LUT (all filters, all
detectors). Also the second derivatives of the per-pair path (its custom JVP) against finite
differences of its first derivatives."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfgcm.camera import hsc_like_camera
from jaxfgcm.config import Config
from jaxfgcm.lut import AXIS_NAMES, LutInterpolator, build_lut
from jaxfgcm.lut.interp import _CUBIC_POLY, _stencil_weights
from jaxfgcm.throughput import hsc_like_throughput


@pytest.fixture(scope="module")
def interp():
    camera = hsc_like_camera()
    lut = build_lut(Config(), hsc_like_throughput(camera), camera)
    return LutInterpolator.from_lut(lut), lut


def _exposures(lut, n_exp, rng):
    cfg = Config().lut
    atm = [rng.uniform(getattr(cfg, a).min, getattr(cfg, a).max, n_exp) for a in AXIS_NAMES[:5]]
    # detector airmasses around the exposure's, some crossing grid nodes
    secz0 = rng.uniform(cfg.secz.min, cfg.secz.max - 0.1, n_exp)
    n_det = lut.detector_ids.size + 1
    secz = secz0[:, None] + rng.uniform(0, 0.1, (n_exp, n_det))
    filt = rng.integers(0, len(lut.physical_filters), n_exp)
    return filt, np.arange(n_det), atm, secz


def _exposures64(lut, n_exp, rng):
    """:func:`_exposures` with the atmosphere and sec z as float64 JAX arrays (call under
    ``jax.enable_x64``)."""
    filt, slots, atm, secz = _exposures(lut, n_exp, rng)
    return (filt, slots, [jnp.asarray(a, jnp.float64) for a in atm],
            jnp.asarray(secz, jnp.float64))


def test_exposure_path_matches_pairs(interp):
    it, lut = interp
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        filt, slots, atm, secz = _exposures64(lut, 24, rng)
        n_exp, n_det = secz.shape

        def pairs(atm, s):
            args = [jnp.repeat(a, n_det) for a in atm]
            i0, i10 = it.interp(np.repeat(filt, n_det), np.tile(slots, n_exp), *args,
                                s.reshape(-1))
            return jnp.log(i0).reshape(n_exp, n_det), i10.reshape(n_exp, n_det)

        def exposures(atm, s):
            terms = it.exposure_terms(filt, *atm)
            i0, i10 = it.pairs_from_exposures(terms, filt, slots, s)
            return jnp.log(i0), i10

        ref = pairs(atm, secz)
        got = exposures(atm, secz)
        # bars: the low-rank form's tolerance plus the float32 log of the per-pair table
        assert np.abs(np.asarray(got[0] - ref[0])).max() < 5e-7  # ln I0 = relative I0
        assert np.abs(np.asarray(got[1] - ref[1])).max() < 2e-4  # I10, Angstrom
        one = jnp.ones_like(secz)
        d_ref = jax.jvp(lambda s: pairs(atm, s), (secz,), (one,))[1]
        d_got = jax.jvp(lambda s: exposures(atm, s), (secz,), (one,))[1]
        assert np.abs(np.asarray(d_got[0] - d_ref[0])).max() < 5e-6  # per unit sec z
        assert np.abs(np.asarray(d_got[1] - d_ref[1])).max() < 2e-3

        def loss(fn):
            return lambda a: sum(jnp.sum(x * w) for x, w in zip(fn(a, secz), (1.0, 0.01)))

        g_ref = jax.grad(loss(pairs))(atm)
        g_got = jax.grad(loss(exposures))(atm)
        for a, b in zip(g_got, g_ref):
            scale = float(jnp.max(jnp.abs(b))) + 1e-12
            assert float(jnp.max(jnp.abs(a - b))) < 1e-4 * scale


def test_second_derivatives_of_interp(interp):
    """The custom JVP recurses for higher orders (the fit differentiates a JVP in sec z):
    d/dx of the analytic first derivative equals its finite difference."""
    it, _ = interp
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        cfg = Config().lut
        def inner(a):
            lo, hi = getattr(cfg, a).min, getattr(cfg, a).max
            return jnp.asarray(rng.uniform(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo), 40))

        x = [inner(a) for a in AXIS_NAMES]
        fi, di = rng.integers(0, 7, 40), rng.integers(0, 104, 40)

        def dsecz(args):  # d ln I0 / d secz
            f = lambda s: jnp.log(it.interp(fi, di, *args[:5], s)[0])
            return jax.jvp(f, (args[5],), (jnp.ones_like(args[5]),))[1]

        for a in (1, 3, 4, 5):  # pwv, tau, alpha, secz (cubic axes)
            tangent = [jnp.zeros_like(v) for v in x]
            tangent[a] = jnp.ones_like(x[a])
            analytic = jax.jvp(dsecz, (x,), (tangent,))[1]
            h = 1e-5 * float(jnp.mean(x[a]))
            xp = list(x)
            xm = list(x)
            xp[a], xm[a] = x[a] + h, x[a] - h
            numeric = (dsecz(xp) - dsecz(xm)) / (2 * h)
            # C1 interpolant: the second derivative jumps at nodes, where a central difference
            # straddling one is off: compare the median over the points
            scale = float(jnp.max(jnp.abs(numeric))) + 1e-12
            err = np.abs(np.asarray(analytic - numeric))
            assert np.median(err) < 1e-4 * scale, (AXIS_NAMES[a], np.median(err), scale)


def test_pairs_from_exposures_equals_its_contraction(interp):
    """The explicit-sum form of pairs_from_exposures (fast on XLA's CPU backend) equals the
    plain contraction it spells out, sum_z sum_k w(secz)_z coef[slot, k] terms[z, k], written
    with numpy in float64 from the stencil weights: values and the sec z derivative."""
    it, lut = interp
    rng = np.random.default_rng(7)
    with jax.enable_x64(True):
        filt, slots, atm, secz = _exposures64(lut, 12, rng)
        terms = it.exposure_terms(filt, *atm)
        i0, i10 = it.pairs_from_exposures(terms, filt, slots, secz)
        d_ln_i0 = jax.jvp(lambda s: jnp.log(it.pairs_from_exposures(terms, filt, slots, s)[0]),
                          (secz,), (jnp.ones_like(secz),))[1]

        def reference(s):
            start, kind, t = (np.asarray(v) for v in it._cell(5, jnp.asarray(s)))
            w = np.asarray(_stencil_weights(_CUBIC_POLY, kind.reshape(-1), t.reshape(-1), 0)
                           ).reshape(t.shape + (4,))
            coef = np.asarray(it.slot_coef)[np.asarray(filt)][:, slots]  # (e, d, k, 2)
            tm = np.asarray(terms)  # (e, z, k, 2)
            out = np.zeros(t.shape + (2,))
            for j in range(4):
                at = tm[np.arange(tm.shape[0])[:, None], start + j]  # (e, d, k, 2)
                out += w[..., j, None] * np.sum(coef * at, axis=2)
            return out

        ref = reference(np.asarray(secz))
        np.testing.assert_allclose(np.log(np.asarray(i0)), ref[..., 0], rtol=0, atol=1e-13)
        np.testing.assert_allclose(np.asarray(i10), ref[..., 1], rtol=1e-13, atol=0)
        h = 1e-6
        num = (reference(np.asarray(secz) + h)[..., 0] - reference(np.asarray(secz) - h)[..., 0])
        np.testing.assert_allclose(np.asarray(d_ln_i0), num / (2 * h), rtol=0, atol=1e-7)


def test_exposure_contraction_equals_separable(monkeypatch):
    """The per-exposure contraction (leading axis element-wise, then one matrix product per
    exposure) equals the separable per-point contraction on a random table: values and mixed
    derivatives of several orders (two orders on the leading axis exercise its stacked form),
    1-, 2- and 4-node stencils, and the batched map with a remainder (batch of 5, 13 points)."""
    import jaxfgcm.lut.interp as interp_module
    from jaxfgcm.lut.interp import _axis_cell, _contract, _contract_exposures

    monkeypatch.setattr(interp_module, "_EXPOSURE_BATCH", 5)
    rng = np.random.default_rng(11)
    grid = (3, 6, 1, 5, 2)  # node counts: linear, cubic, single, cubic, linear
    cubic = (False, True, False, True, False)
    block = (2, 4, 1, 4, 2)
    with jax.enable_x64(True):
        table = jnp.asarray(rng.normal(size=(2, 1, *grid, 3, 2)), jnp.float32)
        n = 13
        fi = jnp.asarray(rng.integers(0, 2, n), jnp.int32)
        cells = [_axis_cell(jnp.asarray(rng.uniform(0, g - 1, n)), g, c)
                 for g, c in zip(grid, cubic)]
        args = (table, fi, None, *(tuple(c[i] for c in cells) for i in range(3)))
        orders = ((0, 0, 0, 0, 0), (1, 0, 0, 0, 0), (0, 1, 0, 1, 0), (1, 0, 0, 0, 1),
                  (0, 2, 0, 0, 0))
        got = _contract_exposures(block, cubic, orders, *args)
        ref = _contract(block, cubic, orders, table, fi, jnp.zeros_like(fi),
                        *args[3:])
        assert got.shape == ref.shape == (n, len(orders), 3, 2)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-12, atol=1e-12)


def test_exposure_pair_terms_equals_two_step_path(interp):
    """exposure_pair_terms (one custom JVP over the exposure contraction and the pair sums)
    against exposure_terms -> pairs_from_exposures with a JVP in sec z: values, the sec z
    derivatives, the gradient w.r.t. the atmosphere and a batch of JVPs (the Gauss-Newton
    Jacobian's pattern), to rounding; a tangent on sec z raises."""
    it, lut = interp
    rng = np.random.default_rng(13)
    with jax.enable_x64(True):
        filt, slots, atm, secz = _exposures64(lut, 17, rng)

        def two_step(atm):
            terms = it.exposure_terms(filt, *atm)

            def f(s):
                i0, i10 = it.pairs_from_exposures(terms, filt, slots, s)
                return jnp.log(i0), i10

            (a, b), (da, db) = jax.jvp(f, (secz,), (jnp.ones_like(secz),))
            return a, da, b, db

        def fused(atm):
            return it.exposure_pair_terms(filt, slots, *atm, secz)

        def close(got, ref, rtol):
            for g, r in zip(got, ref):
                scale = float(jnp.max(jnp.abs(r)))
                assert float(jnp.max(jnp.abs(g - r))) <= rtol * scale, (rtol, scale)

        close(jax.jit(fused)(atm), jax.jit(two_step)(atm), 1e-12)
        wts = [jnp.asarray(rng.normal(size=secz.shape)) for _ in range(4)]

        def grad(fn):
            return jax.jit(jax.grad(lambda a: sum(jnp.sum(x * w) for x, w in zip(fn(a), wts))))

        close(grad(fused)(atm), grad(two_step)(atm), 1e-11)
        tangents = [jnp.asarray(rng.normal(size=(6, a.shape[0]))) for a in atm]

        def jvps(fn):
            return jax.jit(jax.vmap(lambda t: jax.jvp(fn, (atm,), (t,))[1]))(tangents)

        close(jvps(fused), jvps(two_step), 1e-11)
        with pytest.raises(ValueError, match="only the atmosphere"):
            jax.jvp(lambda s: it.exposure_pair_terms(filt, slots, *atm, s), (secz,),
                    (jnp.ones_like(secz),))
