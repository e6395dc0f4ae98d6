"""Benchmark and accuracy report of the look-up table (docs/lut.md quotes its output).

    python scripts/bench_lut.py [--points 2000] [--n-eval 10000 100000] [--output lut.fits]

(after ``pip install -e .``, or with ``PYTHONPATH=.`` from the repository root)

Prints: build time (all physical filters x all detectors of the HSC-like camera, default
grid), file size, load time; interpolation accuracy against direct integration at random
off-grid points over the whole grid (max and RMS, per filter); float32 vs float64 arithmetic;
interpolation throughput (compile time separate) for values and values + gradients.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxfgcm.atmosphere import BuiltinAtmosphere
from jaxfgcm.camera import hsc_like_camera
from jaxfgcm.config import Config
from jaxfgcm.lut import (
    AXIS_NAMES,
    LutInterpolator,
    build_lut,
    load_lut,
    passband_integrals,
    save_lut,
)
from jaxfgcm.lut.build import config_wavelength
from jaxfgcm.throughput import hsc_like_throughput


def random_parameters(config, n, rng):
    return {a: rng.uniform(getattr(config.lut, a).min, getattr(config.lut, a).max, n)
            for a in AXIS_NAMES}


def accuracy(lut, interp, throughput, atmosphere, n_points, rng, detectors_per_filter=6):
    """Interpolated vs direct I0 (relative) and I10 (A) at random points, random detectors."""
    pars = random_parameters(Config(), n_points, rng)
    trans = atmosphere.transmission(**pars)
    rows = []
    for fi, f in enumerate(lut.physical_filters):
        slots = rng.choice(lut.detector_ids.size + 1, detectors_per_filter, replace=False)
        for slot in slots:
            if slot == lut.mean_detector_index:
                pb = throughput.mean_passband(f, lut.wavelength)[None]
            else:
                pb = throughput.passbands(f, lut.wavelength, [lut.detector_ids[slot]])
            i0, i10 = passband_integrals(trans, pb, lut.wavelength, [lut.lambda_std[fi]])
            a0, a10 = interp.interp(fi, int(slot), *[pars[a] for a in AXIS_NAMES])
            rows.append((f, np.asarray(a0, np.float64) / i0[:, 0] - 1,
                         np.asarray(a10, np.float64) - i10[:, 0]))
    return rows


def throughput_bench(interp, n_filter, n_slot, config, n, rng, dtype):
    pars = random_parameters(config, n, rng)
    args = [jnp.asarray(pars[a], dtype) for a in AXIS_NAMES]
    fi = jnp.asarray(rng.integers(0, n_filter, n))
    di = jnp.asarray(rng.integers(0, n_slot, n))
    value = jax.jit(lambda it, *a: it.interp(fi, di, *a))

    def loss(a, it):
        i0, i10 = it.interp(fi, di, *a)
        return jnp.sum(jnp.log(i0)) + jnp.sum(i10)

    grad = jax.jit(jax.value_and_grad(loss))
    out = {}
    for name, fn, call in (("value", value, lambda: value(interp, *args)),
                           ("value+grad", grad, lambda: grad(args, interp))):
        t = time.perf_counter()
        jax.block_until_ready(call())
        compile_s = time.perf_counter() - t
        reps = 3
        t = time.perf_counter()
        for _ in range(reps):
            jax.block_until_ready(call())
        run_s = (time.perf_counter() - t) / reps
        out[name] = (compile_s, run_s)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=2000, help="random points for the accuracy")
    p.add_argument("--n-eval", type=int, nargs="+", default=[10_000, 100_000],
                   help="points per interpolation call for the throughput")
    p.add_argument("--output", type=Path, default=None, help="keep the LUT file here")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)

    config = Config()
    camera = hsc_like_camera()
    throughput = hsc_like_throughput(camera)
    atmosphere = BuiltinAtmosphere(config_wavelength(config.lut),
                                   config.lut.aerosol_lambda_norm)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; grid "
          + " ".join(f"{a.name}={a.n}" for a in build_axes(config)))

    lut = build_lut(config, throughput, camera, atmosphere, progress=True)
    print(f"build: {len(lut.physical_filters)} filters x {lut.detector_ids.size} detectors "
          f"(+ mean) x {int(np.prod(lut.grid_shape))} nodes: {lut.build_seconds:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        path = args.output or Path(tmp) / "fgcmLookupTable.fits"
        t = time.perf_counter()
        save_lut(lut, path)
        save_s = time.perf_counter() - t
        t = time.perf_counter()
        lut = load_lut(path, config=config, camera=camera)
        load_s = time.perf_counter() - t
        print(f"file: {path.stat().st_size / 1e6:.1f} MB (save {save_s:.1f} s, "
              f"load+check {load_s:.1f} s)")

    interp = LutInterpolator.from_lut(lut)
    rows = accuracy(lut, interp, throughput, atmosphere, args.points, rng)
    e0 = np.concatenate([r[1] for r in rows])
    e10 = np.concatenate([r[2] for r in rows])
    print(f"accuracy ({args.points} random points x {len(rows)} filter/detector pairs, "
          "whole grid range):")
    print(f"  I0 relative: max {np.abs(e0).max():.2e}  rms {np.sqrt(np.mean(e0**2)):.2e}")
    print(f"  I10 (A):     max {np.abs(e10).max():.3f}  rms {np.sqrt(np.mean(e10**2)):.3f}")
    for f in lut.physical_filters:
        a0 = np.concatenate([r[1] for r in rows if r[0] == f])
        a10 = np.concatenate([r[2] for r in rows if r[0] == f])
        print(f"  {f:8s} I0 max {np.abs(a0).max():.1e} rms {np.sqrt(np.mean(a0**2)):.1e}   "
              f"I10 max {np.abs(a10).max():.3f} rms {np.sqrt(np.mean(a10**2)):.3f} A")

    # float32 vs float64 arithmetic (same float32 tables).
    pars = random_parameters(config, 5000, rng)
    fi = rng.integers(0, len(lut.physical_filters), 5000)
    di = rng.integers(0, lut.detector_ids.size + 1, 5000)
    v32 = interp.interp(fi, di, *[np.float32(pars[a]) for a in AXIS_NAMES])
    with jax.enable_x64(True):
        v64 = interp.interp(fi, di, *[jnp.asarray(pars[a], jnp.float64) for a in AXIS_NAMES])
        d0 = np.abs(np.asarray(v32[0], np.float64) / np.asarray(v64[0]) - 1).max()
        d10 = np.abs(np.asarray(v32[1], np.float64) - np.asarray(v64[1])).max()
    print(f"float32 vs float64 arithmetic: I0 max rel diff {d0:.1e}, I10 max diff {d10:.1e} A")

    n_f, n_slot = lut.i0.shape[:2]
    for n in args.n_eval:
        res = throughput_bench(interp, n_f, n_slot, config, n, rng, jnp.float32)
        for name, (c, r) in res.items():
            print(f"interp {name:10s} n={n:>7d}: compile {c:.2f} s, run {r * 1e3:.1f} ms "
                  f"({n / r / 1e6:.2f} M points/s)")


def build_axes(config):
    from jaxfgcm.lut.grid import axes_from_config

    return axes_from_config(config.lut)


if __name__ == "__main__":
    main()
