"""One-command performance report of jaxfgcm (docs/performance.md quotes its output).

    python scripts/bench.py --quick                 # < 2 min: pass vs floor + scaling 1e5, 1e6
    python scripts/bench.py                         # ~10 min: simulates the tract preset, adds
                                                    # end-to-end calibrate and 1e7 observations
    python scripts/bench.py --repo DIR --tract 9615 # use an existing simulated repository

(after ``pip install -e .``, or with ``PYTHONPATH=.`` from the repository root)

Prints, in one run:
  1. the fit's chi2 value-and-gradient pass against a bare gather + segment-sum
     value-and-gradient pass over the same arrays (the floor: every array the pass reads,
     gathered and segment-summed without the model's arithmetic, bench_fit.model_floor), their
     ratio (issue target <= 2), the stricter one-gather floor (bench_fit.bare_pass), and the
     LUT part (per (exposure, detector) pair) alone, on a repository's tract;
  2. end-to-end ``calibrate`` per stage (the pipeline's summary.json timings);
  3. scaling over synthetic problems of ~1e5, 1e6, 1e7 observations (jaxfgcm.fit.synthetic):
     time per pass, bytes per observation of the fit arrays and of the pass (XLA's compiled
     memory analysis), peak resident memory of the process;
  4. JIT compile times, separately from the run times.
The passes of 1. and 3. are timed in alternation, one call of each per round, so that a busy
spell of the shared machine falls on all of them alike; the figures are the median of the
``--repeats`` rounds (minimum alongside, the least disturbed figure).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

# The floors and the alternating timer are defined once, next to the fit benchmark (scripts/
# is on sys.path when run).
from bench_fit import bare_pass, interleaved, model_floor

from jaxfgcm.config import Config, default_config_path, load_config
from jaxfgcm.fit import FitParams, FitState, chi2
from jaxfgcm.fit.model import pair_rows, pair_terms
from jaxfgcm.fit.synthetic import make_synthetic


class PerPairLut:
    """The LUT seen through its plain per-point ``interp`` only: model.pair_terms then takes the
    per-(exposure, detector) path, the reference for the fit's per-exposure path."""

    def __init__(self, lut):
        self.interp = lut.interp


def data_bytes(data) -> int:
    return sum(x.nbytes for x in jax.tree_util.tree_leaves(data) if hasattr(x, "nbytes"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def device_peak_mb() -> float:
    """Peak bytes in use on the first device's allocator (GPU); NaN where the backend keeps no
    statistics (CPU: the process's peak RSS is the figure there)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", float("nan")) / 1e6


def measure_pass(data, lut, cfg, repeats=30):
    """chi2 value+grad vs the floors, the LUT part, compile times and memory. The passes are
    timed in alternation (:func:`interleaved`); each figure is the median of ``repeats`` warm
    calls, with the minimum alongside."""
    # non-zero SED slopes: the chromatic term's arithmetic is part of every real pass
    st = FitState(sed_slope=jnp.full(data.n_sb, 1e-4), obs_use=data.obs_valid,
                  sigma_fgcm=jnp.zeros(data.n_bands), sigma0=cfg.fit.sigma0_phot)
    p = FitParams.standard(data, cfg.standard_atmosphere, cfg.fit.sed_slope_scale)
    vg = jax.jit(jax.value_and_grad(chi2))
    t0 = time.perf_counter()
    compiled = vg.lower(p, data, lut, st).compile()
    compile_fit = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", 0) if mem is not None else 0

    w = jnp.where(data.obs_valid, 1.0 / (data.obs_err.astype(jnp.float64) ** 2 + 1e-5), 0.0)
    mag = data.obs_mag.astype(jnp.float64)
    bare = jax.jit(jax.value_and_grad(bare_pass), static_argnums=5)
    # the same-arrays floor: every array the pass reads, gathered and segment-summed
    dt = data.obs_mag.dtype
    floor = jax.jit(jax.value_and_grad(model_floor, argnums=(0, 1)))
    lut_vg = jax.jit(jax.value_and_grad(
        lambda q: sum(jnp.sum(t) for t in pair_terms(q, data, lut))))
    calls = {
        "fit": (compiled, (p, data, lut, st)),
        "bare": (bare, (jnp.zeros(data.n_exp), mag, w, data.obs_exp, data.obs_sb, data.n_sb)),
        "floor": (floor, (tuple(c.astype(dt) for c in pair_rows(p, data, lut)),
                          (p.sed_scale.astype(dt), data.band_i10_std.astype(dt)),
                          st.sed_slope.astype(dt), data, st.obs_use)),
        "lut": (lut_vg, (p,)),
    }
    out = {}
    if hasattr(lut, "exposure_terms"):
        exp_vg = jax.jit(jax.value_and_grad(
            lambda q: sum(jnp.sum(t) for t in pair_terms(q, data, PerPairLut(lut)))))
        a, b = pair_terms(p, data, lut), pair_terms(p, data, PerPairLut(lut))
        out["lut_exp_diff"] = [float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b)]
    times = interleaved(calls, repeats)
    if hasattr(lut, "exposure_terms"):
        # a reference, not part of the ratio: timed after, so that its 10x larger working set
        # does not evict the others' arrays between their calls
        times |= interleaved({"lut_exp": (exp_vg, (p,))}, max(repeats // 3, 1))
    for name, (first, tmin, tmed) in times.items():
        out[f"t_{name}"], out[f"tmin_{name}"] = tmed, tmin
        if name != "fit":
            out[f"compile_{name}"] = first - tmed
    return out | {"compile_fit": compile_fit, "data_bytes": data_bytes(data),
                  "pass_temp_bytes": temp,
                  "data_bytes_f64": data_bytes(data.with_obs_dtype(jnp.float64))}


def print_pass(title, data, r):
    n = data.n_obs
    print(f"\n== 1. {title}: {n} observations (padded {data.obs_mag.shape[0]}), "
          f"{data.n_stars} stars, {data.n_exp} exposures x {data.n_det} detectors = "
          f"{data.n_pairs} pairs, {jax.device_count()} {jax.devices()[0].platform} device(s)")
    rows = [("chi2 value+grad (fit pass)", "fit"),
            ("same-arrays floor: gathers + segment sums of every array the pass reads",
             "floor"),
            ("one-gather floor: one gather + segment sums (stricter)", "bare"),
            ("LUT terms of all pairs, value+grad (part of the fit pass)", "lut")]
    if "t_lut_exp" in r:
        rows.append(("  reference: per-pair interp (the fit uses the per-exposure path)",
                     "lut_exp"))
    print(f"{'pass (timed in alternation)':60s} {'median ms':>9s} {'min ms':>7s} "
          f"{'compile s':>10s}")
    for name, key in rows:
        print(f"{name:60s} {1e3 * r['t_' + key]:9.2f} {1e3 * r['tmin_' + key]:7.2f} "
              f"{r['compile_' + key]:10.2f}")
    if "lut_exp_diff" in r:
        d = r["lut_exp_diff"]
        print(f"fit's per-exposure path - per-pair path: 2.5log10 I0 {d[0]:.1e} mag, its secz derivative "
              f"{d[1]:.1e}, I10 {d[2]:.1e} A, its derivative {d[3]:.1e}")
    obs_part = max(r["t_fit"] - r["t_lut"], 0.0)
    print(f"ratio fit / same-arrays floor: {r['t_fit'] / r['t_floor']:.2f} of the medians, "
          f"{r['tmin_fit'] / r['tmin_floor']:.2f} of the minima (target <= 2); "
          f"fit / one-gather floor: {r['t_fit'] / r['t_bare']:.1f} (without the LUT part: "
          f"{obs_part / r['t_bare']:.1f})")
    print(f"memory: fit arrays {r['data_bytes'] / n:.0f} B/obs ({data.obs_mag.dtype} observation "
          f"arrays; {r['data_bytes_f64'] / n:.0f} with float64), value+grad temporaries "
          f"{r['pass_temp_bytes'] / n:.0f} B/obs (XLA memory analysis)")


def repo_problem(repo_dir, tract, cfg):
    from jaxfgcm.fit import FitData
    from jaxfgcm.lut import LutInterpolator, load_lut
    from jaxfgcm.repo import Repository
    from jaxfgcm.stars import build_stars

    repo = Repository(repo_dir)
    cat = build_stars(repo, cfg, tract)
    cam = repo.camera()
    lut_np = load_lut(repo.lut_path, config=cfg, camera=cam)
    return FitData.build(cat, lut_np, cam, cfg), LutInterpolator.from_lut(lut_np)


def simulate(repo_dir, preset, tract):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jaxfgcm.simulate", "--repo", str(repo_dir),
                    "--tract", str(tract), "--preset", preset, "--seed", "77", "--lut",
                    "--overwrite", "--quiet"], check=True)
    print(f"simulated the {preset} preset into {repo_dir} in {time.perf_counter() - t0:.0f} s")


def calibrate(repo_dir, tract):
    from jaxfgcm.pipeline import run_tract

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = run_tract(repo_dir, tract, output=Path(out) / "out", plots=False, truth=False)
        wall = time.perf_counter() - t0
    timings = res.summary.get("timings_s", {})
    print(f"\n== 2. end-to-end calibrate (run_tract, plots off), tract {tract}: "
          f"{wall:.1f} s wall")
    for k, v in timings.items():
        print(f"  {k:32s} {v:8.2f} s")


def scaling(sizes, cfg, repeats):
    print("\n== 3. scaling (synthetic problems through the fit model, analytic LUT: the real "
          "LUT's cost scales with pairs, see 1.)")
    print(f"{'obs':>10s} {'pairs':>7s} {'build s':>8s} {'fit ms':>9s} {'floor ms':>9s} "
          f"{'ratio':>6s} {'1-gather':>9s} {'ratio':>6s} {'ns/obs':>7s} {'data B/obs':>11s} {'pass B/obs':>11s} "
          f"{'compile s':>10s} {'peak RSS MB':>12s} {'device peak MB':>15s}")
    for target in sizes:
        n_stars = max(int(target / (0.8 * 96)), 100)  # 6 nights x 16 visits, 80 % seen
        t0 = time.perf_counter()
        data, lut, _ = make_synthetic(cfg, n_stars=n_stars, n_nights=6, visits_per_night=16,
                                      n_det=104, seed=5)
        data = data.with_obs_dtype(jnp.dtype(cfg.fit.observation_dtype))  # as the pipeline
        build = time.perf_counter() - t0
        r = measure_pass(data, lut, cfg, repeats=repeats)
        n = data.n_obs
        print(f"{n:10d} {data.n_pairs:7d} {build:8.1f} {1e3 * r['t_fit']:9.2f} "
              f"{1e3 * r['t_floor']:9.2f} {r['t_fit'] / r['t_floor']:6.2f} "
              f"{1e3 * r['t_bare']:9.2f} {r['t_fit'] / r['t_bare']:6.1f} "
              f"{1e9 * r['t_fit'] / n:7.1f} {r['data_bytes'] / n:11.0f} "
              f"{r['pass_temp_bytes'] / n:11.0f} {r['compile_fit']:10.2f} "
              f"{peak_rss_mb():12.0f} {device_peak_mb():15.0f}", flush=True)
        del data, lut


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="skip simulation, end-to-end calibrate and 1e7 observations (< 2 min)")
    ap.add_argument("--repo", help="existing simulated repository (default: simulate the tract "
                    "preset into a temporary directory; with --quick: a synthetic problem)")
    ap.add_argument("--tract", type=int, default=9615)
    ap.add_argument("--sizes", type=float, nargs="*", default=None,
                    help="observation counts for the scaling (default 1e5 1e6 [1e7])")
    ap.add_argument("--no-calibrate", action="store_true", help="skip the end-to-end run")
    ap.add_argument("--repeats", type=int, default=30,
                    help="warm calls of each pass, timed in alternation (default 30)")
    ap.add_argument("--malloc-defaults", action="store_true",
                    help="keep glibc's allocator defaults (else fit.hostmem.retain_freed_memory, "
                    "as the calibrate command does)")
    ap.add_argument("--nondeterministic", action="store_true",
                    help="on a GPU, XLA's atomic (run-to-run varying) scatter-adds instead of the "
                    "deterministic kernels the calibrate command asks for")
    a = ap.parse_args(argv)
    if not a.nondeterministic:
        from jaxfgcm.fit.reproducible import deterministic_gpu_ops

        deterministic_gpu_ops()  # as the command: XLA_FLAGS before the backend starts
    if not a.malloc_defaults:
        from jaxfgcm.fit.hostmem import retain_freed_memory

        retain_freed_memory()  # before the first JAX computation (docs/performance.md)
    print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
          f"freed host memory {'returned (glibc defaults)' if a.malloc_defaults else 'retained'}"
          f", XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    synth_cfg = Config().with_overrides(["instrument.bands=[g,r,i]", "fit.fit_bands=[g,r,i]",
                                         "fit.min_star_per_exp=50"])
    with tempfile.TemporaryDirectory() as tmp:
        repo_dir = a.repo
        if repo_dir is None and not a.quick:
            repo_dir = Path(tmp) / "repo"
            simulate(repo_dir, "tract", a.tract)
        if repo_dir is not None:
            cfg = load_config(default_config_path())
            data, lut = repo_problem(repo_dir, a.tract, cfg)
            print_pass(f"tract {a.tract} of {repo_dir}", data,
                       measure_pass(data, lut, cfg, a.repeats))
            del data, lut
        else:
            data, lut, _ = make_synthetic(synth_cfg, n_stars=5000, n_nights=4,
                                          visits_per_night=16, n_det=20, seed=5)
            print_pass("synthetic problem (analytic LUT)", data,
                       measure_pass(data, lut, synth_cfg, a.repeats))
            del data, lut
        if repo_dir is not None and not (a.quick or a.no_calibrate):
            calibrate(repo_dir, a.tract)
        sizes = a.sizes if a.sizes is not None else ([1e5, 1e6] if a.quick else [1e5, 1e6, 1e7])
        scaling([int(s) for s in sizes], synth_cfg, a.repeats)
    print("\n== 4. compile times: the 'compile s' columns above (chi2 value+grad; the whole fit "
          "compiles several such programs, see the calibrate stage timings)")


if __name__ == "__main__":
    main()
