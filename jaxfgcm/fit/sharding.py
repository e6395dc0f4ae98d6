"""Shard the observation axis of a fit over all visible devices (docs/performance.md).

One code path for 1..N devices: a 1-D :class:`jax.sharding.Mesh` named ``"obs"`` over the
devices; every per-observation array of :class:`FitData` (the ``obs_*`` fields) and of the
fit state (``FitState.obs_use``) is split along its first axis, everything else (exposure,
pair, segment arrays, the LUT table, the parameters) is replicated. ``jax.jit`` then partitions
the fit's programs (GSPMD): gathers from replicated tables stay local, and the sorted segment
sums over observations (star means, chi2, gray) become per-device partial sums combined by an
all-reduce, so no fit code changes.

The observation axis is padded to a multiple of the device count with rows that carry no
weight, like the padding :meth:`FitData.from_arrays` already adds (``obs_valid`` False,
``obs_err`` 1, ``obs_order`` -1, the last star-band segment so the segment ids stay sorted,
zeros elsewhere). ``FitData`` pads to a multiple of 4096, so for 1, 2, 4, 8... devices no
row is added.

Usage::

    mesh = obs_mesh()                     # all devices
    data = shard_fit_data(data, mesh)
    state = shard_fit_state(state, data, mesh)
    params = replicate(params, mesh)
    value, grad = jax.jit(jax.value_and_grad(chi2))(params, data, lut, state)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: Name of the mesh axis the observations are split over.
OBS_AXIS = "obs"

#: Fill values of padding rows per FitData field (other obs_* fields: 0).
_PAD_FILL = {"obs_valid": False, "obs_err": 1.0, "obs_order": -1}


def obs_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of the process, or of all processes
    under ``jax.distributed``)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (OBS_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def obs_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(OBS_AXIS))


def replicate(tree, mesh: Mesh):
    """Every array leaf of ``tree`` replicated on all devices of ``mesh``."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, sharding) if isinstance(x, (jax.Array, np.ndarray)) else x,
        tree)


def padded_length(n: int, mesh: Mesh) -> int:
    size = mesh.devices.size
    return math.ceil(n / size) * size


def pad_obs(x, n_total: int, fill):
    """``x`` padded along axis 0 to ``n_total`` rows of ``fill``."""
    extra = n_total - x.shape[0]
    if extra == 0:
        return x
    pad = jnp.full((extra,) + x.shape[1:], fill, dtype=x.dtype)
    return jnp.concatenate([x, pad], axis=0)


def shard_obs(x, mesh: Mesh, n_total: int | None = None, fill=0):
    """One per-observation array padded to a multiple of the device count and split over
    the mesh along axis 0."""
    n_total = padded_length(x.shape[0], mesh) if n_total is None else n_total
    return jax.device_put(pad_obs(jnp.asarray(x), n_total, fill), obs_sharded(mesh))


def shard_fit_data(data, mesh: Mesh | None = None):
    """A FitData whose ``obs_*`` arrays are padded (zero-weight rows) and split over the
    mesh, every other array replicated. Values of the fit are unchanged (to rounding of the
    partial sums: tests/test_sharding.py)."""
    mesh = obs_mesh() if mesh is None else mesh
    n_total = padded_length(data.obs_mag.shape[0], mesh)
    changes = {}
    for field in dataclasses.fields(data):
        value = getattr(data, field.name)
        if not isinstance(value, jax.Array):
            continue
        if field.name.startswith("obs_"):
            if field.name == "obs_sb":
                fill = data.n_sb - 1  # keeps the segment ids sorted
            else:
                fill = _PAD_FILL.get(field.name, 0)
            changes[field.name] = shard_obs(value, mesh, n_total, fill)
        else:
            changes[field.name] = jax.device_put(value, replicated(mesh))
    return dataclasses.replace(data, **changes)


def shard_fit_state(state, data, mesh: Mesh | None = None):
    """The fit state on the mesh: ``obs_use`` padded with False to ``data``'s (sharded)
    observation length and split, the rest replicated."""
    mesh = obs_mesh() if mesh is None else mesh
    n_total = data.obs_mag.shape[0]
    changes = {}
    for field in dataclasses.fields(state):
        value = getattr(state, field.name)
        if not isinstance(value, jax.Array):
            continue
        if field.name.startswith("obs_"):
            fill = False if value.dtype == jnp.bool_ else 0
            changes[field.name] = shard_obs(value, mesh, n_total, fill)
        else:
            changes[field.name] = jax.device_put(value, replicated(mesh))
    return dataclasses.replace(state, **changes)


__all__ = ["OBS_AXIS", "obs_mesh", "obs_sharded", "pad_obs", "padded_length", "replicate",
           "replicated", "shard_fit_data", "shard_fit_state", "shard_obs"]
