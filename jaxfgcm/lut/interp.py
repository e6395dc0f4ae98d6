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
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxfgcm.lut.grid import AXIS_NAMES, to_coordinate

#: Points per batch of the interpolation map (cache-sized; measured on CPU).
_BATCH = 1024


def _hermite(t):
    t2 = t * t
    t3 = t2 * t
    h00 = 2 * t3 - 3 * t2 + 1
    h10 = t3 - 2 * t2 + t
    h01 = -2 * t3 + 3 * t2
    h11 = t3 - t2
    return h00, h10, h01, h11


def _cubic_stencil(u, n):
    """First node index and 4 weights of the C1 cubic through the 4-node stencil around u."""
    k = jnp.clip(jnp.floor(jax.lax.stop_gradient(u)), 0, n - 2)
    t = u - k
    s = jnp.clip(k - 1, 0, n - 4)
    j = (k - s)[..., None]  # 0: first interval, 1: interior, 2: last interval
    h00, h10, h01, h11 = _hermite(t)
    # Interior: Catmull-Rom slopes (f[k+1]-f[k-1])/2 at both ends of the interval.
    interior = jnp.stack([-h10 / 2, h00 - h11 / 2, h01 + h10 / 2, h11 / 2], axis=-1)
    # First interval: slope at node 0 from (-3 f0 + 4 f1 - f2)/2 (exact for quadratics).
    first = jnp.stack(
        [h00 - 1.5 * h10 - 0.5 * h11, 2 * h10 + h01, -0.5 * h10 + 0.5 * h11, 0 * t], axis=-1
    )
    # Last interval: slope at node n-1 from (f1 - 4 f2 + 3 f3)/2.
    last = jnp.stack(
        [0 * t, -0.5 * h10 + 0.5 * h11, h00 - 2 * h11, h01 + 0.5 * h10 + 1.5 * h11], axis=-1
    )
    w = jnp.where(j == 0, first, jnp.where(j == 1, interior, last))
    idx = s.astype(jnp.int32)[..., None] + jnp.arange(4, dtype=jnp.int32)
    return idx, w


def _linear_stencil(u, n):
    if n == 1:
        return jnp.zeros(u.shape + (1,), jnp.int32), jnp.ones(u.shape + (1,), u.dtype)
    k = jnp.clip(jnp.floor(jax.lax.stop_gradient(u)), 0, n - 2)
    t = u - k
    idx = k.astype(jnp.int32)[..., None] + jnp.arange(2, dtype=jnp.int32)
    return idx, jnp.stack([1 - t, t], axis=-1)


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

        starts, weights = [], []
        for a in range(len(AXIS_NAMES)):
            n = self.grid_shape[a]
            v = jnp.clip(vals[a], self.value_min[a], self.value_max[a])
            u = (to_coordinate(self.coordinates[a], v, jnp) - self.coord_min[a]) / self.coord_step[a]
            idx, w = (_cubic_stencil if self.cubic[a] else _linear_stencil)(u, n)
            starts.append(idx[:, 0])
            weights.append(w)
        block = tuple(w.shape[-1] for w in weights)
        table = jax.lax.stop_gradient(self.table)

        # Per point: one contiguous (stencil block x [ln I0, I10]) slice of the table, contracted
        # with the per-axis weights, last axis first. Mapped in batches of _BATCH points so the
        # gathered blocks (up to 1024 x 2 values per point) stay in cache: ~3x faster on CPU than
        # gathering all points at once (measured while writing scripts/bench_lut.py).
        def one(args):
            f, d, s, w = args
            zero = jnp.zeros((), jnp.int32)
            start = (f.astype(jnp.int32), d.astype(jnp.int32), *s, zero)
            nodes = jax.lax.dynamic_slice(table, start, (1, 1) + block + (2,))[0, 0]
            nodes = nodes.astype(dtype)
            for wa in reversed(w):
                nodes = jnp.einsum("...kc,k->...c", nodes, wa)
            return nodes

        nodes = jax.lax.map(one, (fi, di, tuple(starts), tuple(weights)), batch_size=_BATCH)
        return jnp.exp(nodes[:, 0]).reshape(shape), nodes[:, 1].reshape(shape)

    __call__ = interp
