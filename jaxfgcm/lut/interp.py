"""Differentiable JAX interpolation of the look-up table (docs/lut.md, "Interpolation").

Tensor-product interpolation on the axis coordinates of :mod:`jaxfgcm.lut.grid`: C1 cubic
Hermite (Catmull-Rom, one-sided second-order slopes at the two end intervals) along the axes in
``CUBIC_AXES`` that have >= 4 nodes, linear along the others. ln I0 and I10 are interpolated
(ln I0 because the atmosphere multiplies: ln I0 is near-linear where I0 is exponential).

Values outside the grid are clamped to the grid edge (the derivative there is zero), which keeps
the fit's parameters inside the tabulated physics rather than extrapolating it.

Precision (measured with scripts/bench_lut.py, docs/lut.md): the tables are float32 (storage
error 6e-8 relative, half the memory and gathered bytes of float64), and the arithmetic is done
in the dtype of the inputs (float32 unless jax_enable_x64 is on and float64 is passed). float32
vs float64 arithmetic differ by <= 1.1e-6 relative in I0 and <= 5e-5 A in I10, far below the
interpolation error (RMS 5.6e-5 relative, 0.014 A), so this module does not enable x64.

Speed (docs/performance.md): each point reads one contiguous stencil block of the table
(``lax.dynamic_slice`` inside a batched ``lax.map``: XLA's CPU gather of scattered elements was
~2x slower) and contracts it axis by axis with separable 1-D weights. Derivatives come from a
custom JVP: the weights are cubic polynomials in the cell fraction, so a derivative of any order
w.r.t. any axis is the same contraction with differentiated weights, and one pass over the
gathered blocks yields the value together with every requested derivative (sharing partial
contractions). The fit's pattern (a JVP in sec z, then reverse mode over the atmosphere) costs
one such pass instead of autodiff through the contraction, which stored or re-gathered the
blocks: 4-5x faster value + gradient on the tract preset (scripts/bench_lut.py,
scripts/bench.py).

Per-exposure path (:meth:`LutInterpolator.exposure_terms`, :meth:`pairs_from_exposures`): the
detectors' tables of one filter are nearly collinear (their passbands differ by small shifts),
so ``from_lut`` also stores a low-rank form over the slots (mean + ~5 components, chosen to
reproduce every node to 2e-7 in ln I0 and 1e-4 A in I10). The five atmosphere axes are then
contracted once per exposure for those few basis tables, and each pair only applies its sec z
stencil and its slot's coefficients: ~10x fewer table bytes read per pass than the per-pair
path when exposures have ~100 detectors.

The fit uses :meth:`LutInterpolator.exposure_pair_terms`: both steps and the sec z derivative
in one custom JVP (:func:`_contract_exposures`), so that the atmosphere derivatives of the pair
terms are computed in its forward pass and a tangent is an element-wise combination of them.
Reverse mode then transposes only that combination (a sum over detectors) instead of the pair
sums (~100 separate reductions over detectors on XLA's CPU backend), and the Gauss-Newton
Jacobian's 32 batched JVPs cost little more than one. The exposure contraction itself is the
leading (pressure) axis element-wise, then one matrix product per exposure over the other four
axes' 128 stencil nodes for the value and all derivatives at once. On the tract preset the
fit's LUT value+grad went from ~8 ms to ~2 ms (docs/performance.md, 2026-11-25).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from jaxfgcm.lut.grid import AXIS_NAMES, to_coordinate

#: Points per batch of the interpolation map: the gathered blocks (256 x 1024 x 2 float32 = 2 MB)
#: stay in cache; 128-1024 measured within the noise on CPU, 4096 1.5-3x slower.
_BATCH = 256

# Stencil weights as cubic polynomials in the cell fraction t: weight k = sum_p M[k, p] t^p, so
# derivatives of any order are exact and cheap (d^o/dt^o of the monomials). Hermite basis
# h00, h10, h01, h11 in monomial coefficients (rows) [1, t, t^2, t^3]:
_HERMITE = np.array([[1, 0, -3, 2], [0, 1, -2, 1], [0, 0, 3, -2], [0, 0, -1, 1]], np.float64)
# Stencil weights as combinations of (h00, h10, h01, h11), one 4x4 matrix per interval type.
# Interior: Catmull-Rom slopes (f[k+1]-f[k-1])/2 at both ends of the interval.
# First interval: slope at node 0 from (-3 f0 + 4 f1 - f2)/2 (exact for quadratics).
# Last interval: slope at node n-1 from (f1 - 4 f2 + 3 f3)/2.
_COMBOS = np.array([
    [[1, -1.5, 0, -0.5], [0, 2, 1, 0], [0, -0.5, 0, 0.5], [0, 0, 0, 0]],  # first
    [[0, -0.5, 0, 0], [1, 0, 0, -0.5], [0, 0.5, 1, 0], [0, 0, 0, 0.5]],  # interior
    [[0, 0, 0, 0], [0, -0.5, 0, 0.5], [1, 0, 0, -2], [0, 0.5, 1, 1.5]],  # last
])
#: (interval type, stencil node, monomial power) coefficients of the cubic stencil weights.
_CUBIC_POLY = _COMBOS @ _HERMITE
#: Linear stencil: weights 1 - t and t.
_LINEAR_POLY = np.array([[[1.0, -1.0, 0, 0], [0, 1.0, 0, 0]]])


def _monomial_derivatives(t, order):
    """[d^o/dt^o t^p for p = 0..3], stacked on the last axis."""
    one, zero = jnp.ones_like(t), jnp.zeros_like(t)
    rows = {0: (one, t, t * t, t * t * t), 1: (zero, one, 2 * t, 3 * t * t),
            2: (zero, zero, 2 * one, 6 * t), 3: (zero, zero, zero, 6 * one)}
    return jnp.stack(rows.get(order, (zero,) * 4), axis=-1)


def _stencil_weights(poly, kind, t, order):
    """(n, stencil) weights (order 0) or their order-th derivatives in t."""
    coef = jnp.asarray(poly, t.dtype)[kind]  # (n, stencil, 4)
    return jnp.einsum("nkp,np->nk", coef, _monomial_derivatives(t, order))


def _axis_cell(u, n, cubic):
    """Stencil start, interval type (index into the weight polynomials) and fraction t."""
    if n == 1:
        zero = jnp.zeros(u.shape, jnp.int32)
        return zero, zero, jnp.zeros_like(u)
    k = jnp.clip(jnp.floor(jax.lax.stop_gradient(u)), 0, n - 2)
    t = u - k
    if not cubic:
        return k.astype(jnp.int32), jnp.zeros(u.shape, jnp.int32), t
    s = jnp.clip(k - 1, 0, n - 4)
    kind = (k - s).astype(jnp.int32)  # 0: first interval, 1: interior, 2: last interval
    return s.astype(jnp.int32), kind, t


def _axis_weights(block, cubic, orders, kinds, ts):
    """{(axis, derivative order): (n, block[axis]) stencil weights} for the orders ``orders``
    use."""
    dtype = ts[0].dtype
    weights = {}
    for a in range(len(block)):
        for o in sorted({m[a] for m in orders}):
            if block[a] == 1:
                w = jnp.full(ts[a].shape + (1,), 1.0 if o == 0 else 0.0, dtype)
            else:
                poly = _CUBIC_POLY if cubic[a] else _LINEAR_POLY
                w = _stencil_weights(poly, kinds[a], ts[a], o)
            weights[(a, o)] = w
    return weights


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _contract(block, cubic, orders, table, fi, di, starts, kinds, ts):
    """Derivatives of the interpolant in the cell fractions ``ts``, for each multi-index in
    ``orders`` (a tuple of per-axis derivative orders; (0,)*6 is the value):
    (n, len(orders), *trailing), where ``table`` is (n_filter, n_slot, *grid, *trailing) and
    ``block`` the stencil size along each grid axis.

    A custom JVP so that a derivative of any order is one more pass over the same gathered
    stencil blocks with derivative weights (the block is read once per pass, and the pass
    computes all requested multi-indices sharing the partial contractions); plain autodiff of
    the contraction instead stored or re-gathered the blocks and took ~2.5x longer.
    """
    dtype = ts[0].dtype
    n_axes = len(block)
    weights = _axis_weights(block, cubic, orders, kinds, ts)
    prefixes = [sorted({m[:a + 1] for m in orders}) for a in range(n_axes)]
    trailing = table.shape[2 + n_axes:]  # read whole: [ln I0, I10] (and more axes)
    zeros = (jnp.zeros((), jnp.int32),) * len(trailing)

    def one(args):
        f, d, s, w = args
        nodes = jax.lax.dynamic_slice(table, (f, d, *s, *zeros), (1, 1) + block + trailing)[0, 0]
        partial = {(): nodes}
        # Contract the leading (slowest-varying) axis first: each term is a scalar times a
        # contiguous slab, which vectorises; prefixes shared by several multi-indices are
        # contracted once.
        for a in range(n_axes):
            partial = {
                p: sum(w[(a, p[-1])][k] * partial[p[:-1]][k].astype(dtype)
                       for k in range(block[a]))
                for p in prefixes[a]
            }
        return jnp.stack([partial[m] for m in orders])

    return jax.lax.map(one, (fi, di, tuple(starts), weights), batch_size=_BATCH)


def _orders_jvp(contract):
    """The JVP rule of a contraction ``contract(block, cubic, orders, *data, ts)`` whose output is
    (n, len(orders), ...) per point and whose derivatives in the cell fractions ``ts`` are the same
    contraction with raised orders: one call with the extended orders yields the value and
    every first derivative. Differentiable in ``ts`` only: a tangent on any other floating input
    (the table, the sec z weights of :func:`_contract_exposures`) raises."""

    def rule(block, cubic, orders, primals, tangents):
        *rest, ts = primals
        for t in jax.tree_util.tree_leaves(tangents[:-1], is_leaf=lambda x: x is None):
            if t is not None and not isinstance(t, SymbolicZero):
                raise ValueError("LUT contraction: only the atmosphere arguments (the cell "
                                 "fractions) are differentiable; got a tangent on the table, "
                                 "the detector coefficients or the sec z weights")
        dts = tangents[-1]
        active = [a for a, dt in enumerate(dts) if not isinstance(dt, SymbolicZero)]
        raised = [tuple(o + (i == a) for i, o in enumerate(m)) for a in active for m in orders]
        extended = tuple(dict.fromkeys(orders + tuple(raised)))
        out = contract(block, cubic, extended, *rest, ts)
        pos = {m: i for i, m in enumerate(extended)}
        primal = out[:, [pos[m] for m in orders]]
        tangent = jnp.zeros_like(primal)
        for a in active:
            idx = [pos[tuple(o + (i == a) for i, o in enumerate(m))] for m in orders]
            dt = dts[a].astype(out.dtype).reshape((-1,) + (1,) * (out.ndim - 1))
            tangent = tangent + out[:, idx] * dt
        return primal, tangent

    return rule


_contract.defjvp(_orders_jvp(_contract), symbolic_zeros=True)


#: Exposures per batch of the per-exposure contraction: each gathers a 2x4x2x4x4 block of
#: 8 x 6 x 2 basis values (98 KB float32, 98 KB more in float64 after the first axis), so a
#: batch holds ~25 MB (vs ~2 GB unbatched for 10^4 exposures). The tract preset's 112 exposures
#: are one batch; batches of 56 measured the same, 16-28 ~15 % slower.
_EXPOSURE_BATCH = 128


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _contract_exposures(block, cubic, orders, table, fi, pairs, starts, kinds, ts):
    """Per exposure, the basis table ``table`` (n_filter, 1, *grid(5), n_secz, n_basis, 2)
    interpolated over the five atmosphere axes, for each multi-index in ``orders`` as in
    :func:`_contract`: (n, len(orders), n_secz, n_basis, 2). With ``pairs = (w, dw, coef)``
    (the dense sec z weights and their sec z derivatives (n, n_det, n_secz), the slot
    coefficients (n, n_det, n_basis, 2)), continued to the pairs: (n, len(orders), 4, n_det),
    [ln I0, d ln I0 / d secz, I10, d I10 / d secz] per detector (:func:`_pair_sums`).

    Same values as :func:`_contract` to rounding (~1e-15 relative), in another order: the
    first (leading) axis is contracted element-wise from the float32 block, then all others at
    once with a product of the other axes' weights per multi-index, one (len(orders) x 128) @
    (128 x 96) product per exposure. XLA's CPU backend runs that batched matrix product well,
    where the separable contraction's many small strided slices cost ~70 us each, so the value
    and 4 derivatives cost about what the value alone did (docs/performance.md).

    Continuing to the pairs inside this custom JVP puts the atmosphere derivatives of the pair
    terms into its forward pass: the tangent is then a per-exposure combination of them,
    element-wise, whose transpose (reverse mode) is a sum over detectors and whose 32-wide
    batch (the Gauss-Newton Jacobian) is cheap, where autodiff through the pair sums
    transposed ~100 separate reductions over the detectors.
    """
    dtype = ts[0].dtype
    n_axes = len(block)
    weights = _axis_weights(block, cubic, orders, kinds, ts)
    trailing = table.shape[2 + n_axes:]
    zeros = (jnp.zeros((), jnp.int32),) * len(trailing)
    first = sorted({m[0] for m in orders})
    n_rest = int(np.prod(block[1:]))

    def one(args):
        f, s, w, pair_args = args
        nodes = jax.lax.dynamic_slice(table, (f, zeros[0], *s, *zeros),
                                      (1, 1) + block + trailing)[0, 0]
        x = jnp.stack([sum(w[(0, o)][k] * nodes[k].astype(dtype) for k in range(block[0]))
                       for o in first]).reshape(len(first), n_rest, -1)
        rows = []
        for m in orders:
            y = w[(1, m[1])]
            for a in range(2, n_axes):
                y = (y[:, None] * w[(a, m[a])][None, :]).reshape(-1)
            rows.append(jnp.stack([y if o == m[0] else jnp.zeros_like(y) for o in first]))
        out = jnp.einsum("mob,obt->mt", jnp.stack(rows), x,
                         precision=jax.lax.Precision.HIGHEST).reshape((len(orders),) + trailing)
        return out if pair_args is None else _pair_sums(out, *pair_args)

    return jax.lax.map(one, (fi, tuple(starts), weights, pairs), batch_size=_EXPOSURE_BATCH)


_contract_exposures.defjvp(_orders_jvp(_contract_exposures), symbolic_zeros=True)


def _pair_sums(terms, w, dw, coef):
    """One exposure's pair terms from its basis terms (n_m, n_secz, n_basis, 2): per
    multi-index, [sum_z w_z at_z, sum_z dw_z at_z] for ln I0 and I10, with at_z = sum_k
    coef_k terms[z, k] per detector: (n_m, 4, n_det).

    Explicit sums over the few nodes and basis tables, each term a (n_m, 2, n_det) product
    with the detectors minor, not an einsum: XLA's CPU backend runs these as one fused loop,
    where a batched matrix product with 6-long contractions was 2x slower (and 5x in the
    Gauss-Newton batch), and a sum over a broadcast axis 2-3x slower. Unrolled per multi-index
    and quantity as well, the same arithmetic compiled 2-2.5x slower into every differentiated
    program (docs/performance.md). Same order of operations as
    :meth:`LutInterpolator.pairs_from_exposures`."""
    coef_t = jnp.moveaxis(coef, 0, -1)  # (n_basis, 2, n_det)
    acc = dacc = None
    for z in range(terms.shape[1]):
        at_z = sum(terms[:, z, k, :, None] * coef_t[k] for k in range(terms.shape[2]))
        acc = w[:, z] * at_z if acc is None else acc + w[:, z] * at_z
        dacc = dw[:, z] * at_z if dacc is None else dacc + dw[:, z] * at_z
    # (n_m, [ln I0, I10], [sum, d/dsecz], n_det) -> [ln I0, d ln I0, I10, d I10]
    return jnp.stack([acc, dacc], axis=2).reshape(terms.shape[0], 4, -1)


#: Largest error the low-rank slot form may add: ln I0 (= relative I0) and I10 (Angstrom).
_SLOT_TOL = (2e-7, 1e-4)


def _slot_basis(table):
    """Low-rank form of the detector-slot axis: per filter and quantity, the slot mean plus the
    fewest principal components over slots that reproduce every node to ``_SLOT_TOL``.

    The detectors' passbands differ by small shifts, so their tables are nearly collinear:
    on the HSC-like camera the mean and 5 components reach 1.1e-7 in ln I0 (the float32
    storage floor) and 2e-5 A in I10, against 105 slots (measured with the tract preset's LUT). Returns (basis (n_filter, 1, *grid, k, 2) float32,
    coefficients (n_filter, n_slot, k, 2) float64), k the largest rank any filter needs + 1.
    """
    n_filter, n_slot = table.shape[:2]
    grid = table.shape[2:-1]
    parts = []
    for f in range(n_filter):
        for c in range(2):
            a = table[f, ..., c].reshape(n_slot, -1).astype(np.float64)
            mean = a.mean(axis=0)
            d = a - mean
            # principal components from the small slot x slot Gram matrix (fast; the explicit
            # reconstruction check below guards its precision)
            _, vec = np.linalg.eigh(d @ d.T)
            u = vec[:, ::-1]
            comps = u.T @ d
            for k in range(n_slot + 1):
                rec = mean + u[:, :k] @ comps[:k]
                if np.abs(rec - a).max() <= _SLOT_TOL[c] or k == n_slot:
                    break
            parts.append((f, c, mean, u[:, :k], comps[:k]))
    n_basis = 1 + max(p[3].shape[1] for p in parts)
    basis = np.zeros((n_filter, 1, *grid, n_basis, 2), np.float32)
    coef = np.zeros((n_filter, n_slot, n_basis, 2), np.float64)
    for f, c, mean, u, comps in parts:
        k = u.shape[1]
        basis[f, 0, ..., 0, c] = mean.reshape(grid)
        basis[f, 0, ..., 1:1 + k, c] = np.moveaxis(comps.reshape((k, *grid)), 0, -1)
        coef[f, :, 0, c] = 1.0
        coef[f, :, 1:1 + k, c] = u
    return jnp.asarray(basis), jnp.asarray(coef)


class LutInterpolator(eqx.Module):
    """``interp(filter_index, detector_index, pressure, pwv, o3, tau, alpha, secz) -> (i0, i10)``.

    Build with :meth:`from_lut`. Arguments broadcast together; results have the broadcast shape.
    ``filter_index`` is ``lut.filter_index(name)``; ``detector_index`` is the LUT slot
    (``lut.detector_index(ids)``; ``lut.mean_detector_index`` for the focal-plane mean). Indices
    are not checked here (inside jit XLA clamps them): map names and ids with those methods.
    Jit-able and differentiable in the six atmosphere arguments.
    """

    #: (n_filter, n_slot, *grid_shape, 2): [ln I0, I10] per node, float32.
    table: jax.Array
    coordinates: tuple[str, ...] = eqx.field(static=True)
    coord_min: tuple[float, ...] = eqx.field(static=True)
    coord_step: tuple[float, ...] = eqx.field(static=True)
    value_min: tuple[float, ...] = eqx.field(static=True)
    value_max: tuple[float, ...] = eqx.field(static=True)
    cubic: tuple[bool, ...] = eqx.field(static=True)
    #: Low-rank form over detector slots for :meth:`interp_exposures`:
    #: (n_filter, 1, *grid, n_basis, 2) float32 basis tables (the slot mean first) and
    #: (n_filter, n_slot, n_basis, 2) float64 coefficients per slot.
    slot_basis: jax.Array | None = None
    slot_coef: jax.Array | None = None

    @classmethod
    def from_lut(cls, lut) -> LutInterpolator:
        log_i0 = np.log(np.asarray(lut.i0, dtype=np.float32))  # float32 log: ~3e-7 relative in I0
        table = np.stack([log_i0, np.asarray(lut.i10, np.float32)], axis=-1)
        return cls(
            table=jnp.asarray(table),
            coordinates=tuple(a.coordinate for a in lut.axes),
            coord_min=tuple(a.coord_min for a in lut.axes),
            coord_step=tuple(a.coord_step for a in lut.axes),
            value_min=tuple(float(a.nodes[0]) for a in lut.axes),
            value_max=tuple(float(a.nodes[-1]) for a in lut.axes),
            cubic=tuple(a.cubic for a in lut.axes),
            # from float64 logs: the float32 log of the table adds ~3e-7 of node-to-node noise
            # that no low-rank form reproduces (and that the low-rank form does not need)
            **dict(zip(("slot_basis", "slot_coef"), _slot_basis(np.stack(
                [np.log(np.asarray(lut.i0, np.float64)), np.asarray(lut.i10, np.float64)],
                axis=-1)))),
        )

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(self.table.shape[2:-1])

    def interp(self, filter_index, detector_index, pressure, pwv, o3, tau, alpha, secz):
        values = (pressure, pwv, o3, tau, alpha, secz)
        dtype = jnp.result_type(*values, jnp.float32)
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.float32
        arrays = jnp.broadcast_arrays(
            jnp.asarray(filter_index), jnp.asarray(detector_index),
            *(jnp.asarray(v, dtype) for v in values),
        )
        shape = arrays[0].shape
        fi, di, *vals = (a.reshape(-1) for a in arrays)

        starts, kinds, ts, polys = [], [], [], []
        for a in range(len(AXIS_NAMES)):
            n = self.grid_shape[a]
            v = jnp.clip(vals[a], self.value_min[a], self.value_max[a])
            u = (to_coordinate(self.coordinates[a], v, jnp) - self.coord_min[a]) / self.coord_step[a]
            cubic = self.cubic[a] and n > 1
            s, kind, t = _axis_cell(u, n, cubic)
            starts.append(s)
            kinds.append(kind)
            ts.append(t)
            polys.append(cubic)
        block = tuple(1 if n == 1 else (4 if self.cubic[a] else 2)
                      for a, n in enumerate(self.grid_shape))
        table = jax.lax.stop_gradient(self.table)
        out = _contract(block, tuple(polys), ((0,) * len(block),), table,
                        fi.astype(jnp.int32), di.astype(jnp.int32), tuple(starts),
                        tuple(kinds), tuple(ts))[:, 0]
        return jnp.exp(out[:, 0]).reshape(shape), out[:, 1].reshape(shape)

    def interp_exposures(self, filter_index, detector_index, pressure, pwv, o3, tau, alpha,
                         secz):
        """``(i0, i10)`` of shape (n_exp, n_det) for every (exposure, detector) pair.

        ``filter_index``, ``pressure`` .. ``alpha``: (n_exp,) per exposure; ``detector_index``:
        (n_det,) LUT slots; ``secz``: (n_exp, n_det). :meth:`exposure_terms` then
        :meth:`pairs_from_exposures`; use the two directly to differentiate in sec z (a JVP)
        around the second only (measured 3x faster reverse mode than around both), or
        :meth:`exposure_pair_terms` for the sec z derivatives without a JVP (the fit's path).
        """
        terms = self.exposure_terms(filter_index, pressure, pwv, o3, tau, alpha)
        return self.pairs_from_exposures(terms, filter_index, detector_index, secz)

    def exposure_terms(self, filter_index, pressure, pwv, o3, tau, alpha):
        """The low-rank slot form contracted over the five atmosphere axes, per exposure:
        (n_exp, n_secz_nodes, n_basis, 2). Differentiable in the five (per-exposure) arguments.

        Same values as :meth:`interp` to the low-rank form's error (:func:`_slot_basis`:
        <= 2e-7 in ln I0, <= 1e-4 A in I10) and much cheaper when exposures have many
        detectors: the atmosphere stencil is read and contracted once per exposure for a few
        basis tables instead of once per pair (docs/performance.md).
        """
        *_, contract = self._exposure_contraction("exposure_terms", filter_index,
                                                  (pressure, pwv, o3, tau, alpha))
        return contract(None)

    def exposure_pair_terms(self, filter_index, detector_index, pressure, pwv, o3, tau, alpha,
                            secz):
        """``(ln I0, d ln I0 / d secz, I10, d I10 / d secz)``, each (n_exp, n_det), for every
        (exposure, detector) pair: what the fit needs (fit/model.py:pair_terms).

        Arguments as :meth:`interp_exposures`. The values equal :meth:`exposure_terms` then
        :meth:`pairs_from_exposures` with a JVP in sec z to rounding (~1e-15 relative), and it
        is several times faster differentiated (docs/performance.md: one custom JVP over both
        steps, :func:`_contract_exposures`). Differentiable in the five atmosphere arguments;
        ``secz`` is data here: a tangent on it raises (use :meth:`pairs_from_exposures`).
        """
        fi, dtype, contract = self._exposure_contraction(
            "exposure_pair_terms", filter_index, (pressure, pwv, o3, tau, alpha))
        di = jnp.asarray(detector_index, jnp.int32).reshape(-1)
        secz = jnp.broadcast_to(jnp.asarray(secz, dtype), (fi.shape[0], di.shape[0]))
        w, dw = jax.jvp(self._secz_weights, (secz,), (jnp.ones_like(secz),))
        coef = jax.lax.stop_gradient(self.slot_coef).astype(dtype)[fi][:, di]  # (e, d, k, 2)
        out = contract((w, dw, coef))
        return out[:, 0], out[:, 1], out[:, 2], out[:, 3]

    def _exposure_contraction(self, name, filter_index, values):
        """Shared set-up of :meth:`exposure_terms` and :meth:`exposure_pair_terms`: the
        per-exposure filter indices, the arithmetic dtype, and ``contract(pairs)``, the value of
        :func:`_contract_exposures` on the slot basis at the five atmosphere ``values``."""
        if self.slot_basis is None:
            raise ValueError(f"{name} needs an interpolator built with from_lut")
        dtype = jnp.result_type(*values, jnp.float32)
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.float32
        fi = jnp.asarray(filter_index, jnp.int32).reshape(-1)
        atm = [jnp.broadcast_to(jnp.asarray(v, dtype), fi.shape) for v in values]
        cells = [self._cell(a, atm[a]) for a in range(5)]

        def contract(pairs):
            return _contract_exposures(tuple(self._block(a) for a in range(5)),
                                       tuple(self._cubic(a) for a in range(5)), ((0,) * 5,),
                                       jax.lax.stop_gradient(self.slot_basis), fi, pairs,
                                       tuple(c[0] for c in cells), tuple(c[1] for c in cells),
                                       tuple(c[2] for c in cells))[:, 0]

        return fi, dtype, contract

    def pairs_from_exposures(self, terms, filter_index, detector_index, secz):
        """``(i0, i10)`` (n_exp, n_det) from :meth:`exposure_terms`: the sec z stencil of each
        pair, then the detector slot's coefficients. Differentiable in ``terms`` and ``secz``."""
        fi = jnp.asarray(filter_index, jnp.int32).reshape(-1)
        di = jnp.asarray(detector_index, jnp.int32).reshape(-1)
        dtype = terms.dtype
        secz = jnp.broadcast_to(jnp.asarray(secz, dtype), (fi.shape[0], di.shape[0]))
        # Written as explicit sums of (n_exp, n_det) products over the few nodes and basis
        # tables, not as an einsum: XLA's CPU backend runs these small batched contractions
        # (and their 32-tangent JVPs in the fit's Gauss-Newton blocks) 10-30x slower.
        coef = jax.lax.stop_gradient(self.slot_coef).astype(dtype)[fi][:, di]  # (e, d, k, 2)
        n_z, n_k = terms.shape[1], terms.shape[2]
        dense = self._secz_weights(secz)
        out = []
        for c in range(2):
            acc = None
            for z in range(n_z):
                at_z = sum(coef[:, :, k, c] * terms[:, z, k, c][:, None] for k in range(n_k))
                acc = dense[..., z] * at_z if acc is None else acc + dense[..., z] * at_z
            out.append(acc)
        return jnp.exp(out[0]), out[1]

    def _secz_weights(self, secz):
        """Dense sec z weights (..., n_secz nodes): each pair's stencil weights placed at its
        nodes (one-hot), zero elsewhere. A contraction with them replaces a gather of the
        stencil nodes, whose reverse-mode scatter was 5x slower on CPU."""
        s, kind, t = self._cell(5, secz)
        bz, n_z = self._block(5), self.grid_shape[5]
        if bz == 1:
            return jnp.ones(secz.shape + (1,), secz.dtype)
        poly = _CUBIC_POLY if self._cubic(5) else _LINEAR_POLY
        w = _stencil_weights(poly, kind.reshape(-1), t.reshape(-1), 0).reshape(t.shape + (bz,))
        return jnp.stack([sum(jnp.where(s + j == z, w[..., j], 0.0) for j in range(bz))
                          for z in range(n_z)], axis=-1)

    def _cubic(self, a):
        return self.cubic[a] and self.grid_shape[a] > 1

    def _block(self, a):
        n = self.grid_shape[a]
        return 1 if n == 1 else (4 if self.cubic[a] else 2)

    def _cell(self, a, value):
        v = jnp.clip(value, self.value_min[a], self.value_max[a])
        u = (to_coordinate(self.coordinates[a], v, jnp) - self.coord_min[a]) / self.coord_step[a]
        return _axis_cell(u, self.grid_shape[a], self._cubic(a))

    __call__ = interp
