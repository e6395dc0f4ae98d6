"""Benchmark (and, on a simulated repository, truth check) of the JAX fit (docs/fit.md quotes it).

    python scripts/bench_fit.py                        # synthetic problem through the fit model
    python scripts/bench_fit.py --stars 20000 --nights 6 --visits 16 --detectors 40
    python scripts/bench_fit.py --repo DIR --tract 9615 # a simulator repository, with truth bars
    python scripts/bench_fit.py --repo DIR --tract 9615 --reserve-seeds 1,2  # + 2 reserve draws
    python scripts/bench_fit.py --repo DIR --tract 9615 --no-pass  # a fresh fit's compiles

(after ``pip install -e .``, or with ``PYTHONPATH=.`` from the repository root)

Prints, in one run: the value-and-gradient pass of chi2 over the observations vs two floors
(ratios; target <= 2 against the bare one), float32 vs float64 observation arrays (with freed host
memory retained, jaxfgcm.fit.hostmem, unless --malloc-defaults; the page faults per pass are
printed; the pass and its floors are timed in alternation, medians of ``--repeats`` rounds, so
a busy spell of a shared machine falls on all three), the Gauss-Newton normal equations (the
Jacobian pass that dominates the fit) with their page faults, compile times (separately), the
whole run_fit_cycles in seconds and passes over the data with the XLA programs it compiled
(count, seconds, the largest; ``--no-pass`` skips the pass benchmark, so that these are a
fresh fit's, as in the calibrate command), and with ``--repo`` the issue's correctness bars
against ``truth/``.

The floors, value and gradient, same arrays as the fit:
- bare: one scalar gather per observation (x[exp]), two sorted segment sums, the chi2;
- model: the memory traffic of this model without its arithmetic: every per-observation
  array the fit reads (mag, dsecz, x, y, err, use, pair, band, segment), one gather from each
  of the 4 + n_coef per-pair columns (model.pair_rows), the SED slope per segment and two
  per-band values, a linear combination instead of the model, the same star means and chi2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import time
from collections import defaultdict
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxfgcm.config import Config, default_config_path, load_config
from jaxfgcm.fit import FitParams, FitState, chi2, run_fit_cycles
from jaxfgcm.fit.hostmem import retain_freed_memory
from jaxfgcm.fit.model import pair_rows, pair_terms
from jaxfgcm.fit.synthetic import make_synthetic


def timed(fn, *args, n=5):
    """(first-call seconds incl. compile, median warm seconds)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def interleaved(calls, repeats):
    """Time several programs in alternation: ``calls`` maps a name to (fn, args). Returns
    {name: (seconds of the first call, with its compile; minimum; median of the warm calls)}.

    One call of each per round, so a slow spell of the shared machine falls on all of them
    alike and their ratio stays fair (timed one after the other, the fit pass looked 2.5 ms
    slower or 1 ms faster than a variant depending on which ran during a busy spell)."""
    first, warm = {}, {name: [] for name in calls}
    for name, (fn, args) in calls.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        first[name] = time.perf_counter() - t0
    for _ in range(repeats):
        for name, (fn, args) in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            warm[name].append(time.perf_counter() - t0)
    return {name: (first[name], float(np.min(t)), float(np.median(t)))
            for name, t in warm.items()}


def page_faults(fn, *args):
    """Minor page faults of one warm call (fresh zeroed pages the kernel had to map)."""
    import resource

    jax.block_until_ready(fn(*args))
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(fn(*args))
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0


def bare_pass(x, mag, w, exp, sb, n_sb):
    """The floor: gather a per-exposure value, a weighted segment mean per star, a chi2."""
    m = mag + x[exp]
    sw = jax.ops.segment_sum(w, sb, n_sb, indices_are_sorted=True)
    mean = jax.ops.segment_sum(w * m, sb, n_sb, indices_are_sorted=True) / jnp.maximum(sw, 1e-30)
    r = m - mean[sb]
    return jnp.sum(w * r * r)


def model_floor(cols, band_tab, sed, data, use):
    """The model's minimum memory traffic (see the module docstring): the fit's reads, a
    linear combination instead of its arithmetic."""
    from jaxfgcm.fit.model import gather

    g = [gather(c, data.obs_pair) for c in cols]
    ds, xn, yn = data.obs_dsecz, data.obs_xn, data.obs_yn
    order = data.star_flat_order
    flat = sum(g[4 + i * (order + 1) + j] * xn ** i * yn ** j
               for i in range(order + 1) for j in range(order + 1))
    m = (data.obs_mag + g[0] + g[1] * ds + g[2] + g[3] * ds + flat
         + gather(sed, data.obs_sb) * gather(band_tab[0], data.obs_band)
         + gather(band_tab[1], data.obs_band))
    w = jnp.where(use, 1.0 / (data.obs_err * data.obs_err + 1e-5), 0.0)
    seg = partial(jax.ops.segment_sum, segment_ids=data.obs_sb, num_segments=data.n_sb,
                  indices_are_sorted=True)
    sw = seg(w)
    mean = seg(w * m) / jnp.maximum(sw, 1e-30)
    r = m - mean[data.obs_sb]
    return jnp.sum(w * r * r)


def gauss_newton_pass(data, lut, st, p, frozen_constant=True, structured=False):
    """Seconds of one Gauss-Newton normal-equation build (Jacobian of the weighted residuals
    for the default free parameters, J^T J, J^T r), the number of free parameters and the
    minor page faults of one warm call. ``frozen_constant``: parameter leaves without a free
    element enter as constants, as in the fit (else they carry dense zero tangents).
    ``structured``: the fit's builder from the per-pair structure (jaxfgcm.fit.normal) instead
    of the generic one."""
    from jaxfgcm.fit import optimize as O
    from jaxfgcm.fit.cycle import _residual_vector
    from jaxfgcm.fit.normal import structured_normal_equations
    from jaxfgcm.fit.params import free_mask

    x0, unravel, m, sc = O._ravel(p, free_mask(data))
    rows = np.asarray(m) > 0
    idx = jnp.asarray(np.nonzero(rows)[0])
    if frozen_constant:
        unravel = unravel.with_live(rows)
    z = jnp.zeros(idx.shape[0])
    scale = sc[idx]  # once, not an eager gather inside every timed call

    def normal_equations(zz):
        if structured:
            return structured_normal_equations(unravel, zz, x0, idx, scale, (data, lut, st))
        return O._gn_normal_equations(_residual_vector, unravel, zz, x0, idx, scale,
                                      (data, lut, st))

    first, t = timed(normal_equations, z, n=3)
    return first - t, t, int(idx.shape[0]), page_faults(normal_equations, z)


def pass_benchmark(data, lut, cfg, label="", repeats=30):
    """The fit pass and its two floors, timed in alternation (medians of ``repeats`` rounds)."""
    # non-zero SED slopes: the chromatic term's arithmetic is part of every real pass
    st = FitState(sed_slope=jnp.full(data.n_sb, 1e-4), obs_use=data.obs_valid,
                  sigma_fgcm=jnp.zeros(data.n_bands), sigma0=cfg.fit.sigma0_phot)
    p = FitParams.standard(data, cfg.standard_atmosphere, cfg.fit.sed_slope_scale)
    print(f"observations {data.n_obs} (padded {data.obs_mag.shape[0]}), stars {data.n_stars}, "
          f"exposures {data.n_exp}, detectors {data.n_det}, nights {data.n_nights}, "
          f"device {jax.devices()[0].platform}{label}")
    vg = jax.jit(jax.value_and_grad(chi2))
    w = jnp.where(data.obs_valid, 1.0 / (data.obs_err.astype(jnp.float64) ** 2 + 1e-5), 0.0)
    bare = jax.jit(jax.value_and_grad(bare_pass), static_argnums=5)
    floor = jax.jit(jax.value_and_grad(model_floor, argnums=(0, 1)))
    cols = pair_rows(p, data, lut)
    band_tab = (p.sed_scale, data.band_i10_std)
    x = jnp.zeros(data.n_exp)
    rows = []
    for name, d in (("float64", data), ("float32", data.with_obs_dtype(jnp.float32))):
        dt = d.obs_mag.dtype
        t = interleaved({
            "fit": (vg, (p, d, lut, st)),
            "bare": (bare, (x, d.obs_mag.astype(jnp.float64), w, d.obs_exp, d.obs_sb, d.n_sb)),
            "floor": (floor, (tuple(c.astype(dt) for c in cols),
                              tuple(b.astype(dt) for b in band_tab), st.sed_slope.astype(dt),
                              d, st.obs_use)),
        }, repeats)
        (c_fit, _, t_fit), t_bare, t_floor = t["fit"], t["bare"][2], t["floor"][2]
        rows.append((name, t_fit, t_bare, t_floor, c_fit - t_fit, page_faults(vg, p, d, lut, st)))
    # the per-(exposure, detector) LUT part alone: value and gradient of its terms (data and
    # LUT passed as arguments, as in the fit: closed over, XLA constant-folds them)
    lut_vg = jax.jit(jax.value_and_grad(
        lambda q, d, lt: sum(jnp.sum(t) for t in pair_terms(q, d, lt))))
    c_lut, t_lut = timed(lut_vg, p, data, lut)
    print("obs arrays | chi2 value+grad (ms) | bare floor (ms) | ratio | model floor (ms) | "
          "ratio | compile chi2 (s) | page faults per chi2 pass")
    for name, t_fit, t_bare, t_floor, c_fit, faults in rows:
        print(f"{name:9s}  | {1e3 * t_fit:8.2f} | {1e3 * t_bare:6.2f} | {t_fit / t_bare:5.2f} "
              f"| {1e3 * t_floor:6.2f} | {t_fit / t_floor:5.2f} | {c_fit:.2f} | {faults}")
    print(f"LUT terms for {data.n_pairs} (exposure, detector) pairs, value+grad: "
          f"{1e3 * t_lut:.2f} ms (compile {c_lut - t_lut:.2f} s)")
    c_gn, t_gn, n_free, gn_faults = gauss_newton_pass(data, lut, st, p)
    _, t_dense, _, _ = gauss_newton_pass(data, lut, st, p, frozen_constant=False)
    c_st, t_st, _, st_faults = gauss_newton_pass(data, lut, st, p, structured=True)
    print(f"Gauss-Newton normal equations ({n_free} free parameters, Jacobian of "
          f"{n_free} x {data.obs_mag.shape[0]}): {1e3 * t_gn:.1f} ms = "
          f"{1e3 * t_gn / math.ceil(n_free / 32):.1f} ms per 32 parameters "
          f"(compile {c_gn:.2f} s), {gn_faults} page faults per call; with dense zero "
          f"tangents for the frozen parameters {1e3 * t_dense:.1f} ms "
          f"(ratio {t_dense / t_gn:.2f})")
    print(f"  from the per-pair structure (the fit's default, jaxfgcm.fit.normal): "
          f"{1e3 * t_st:.1f} ms (compile {c_st:.2f} s), {st_faults} page faults per call; "
          f"generic / structured {t_gn / t_st:.2f}")
    return rows


@contextlib.contextmanager
def compile_log():
    """Collect the XLA compilations inside the block: {program name: [count, seconds]}
    (``jax_log_compiles``, recorded, not printed)."""
    programs = defaultdict(lambda: [0, 0.0])

    class Record(logging.Handler):
        def emit(self, record):
            m = re.search(r"Finished XLA compilation of (.*) in ([0-9.e+-]+) s",
                          record.getMessage())
            if m:
                programs[m.group(1)][0] += 1
                programs[m.group(1)][1] += float(m.group(2))

    logger = logging.getLogger("jax")
    handler, propagate = Record(), logger.propagate
    was = jax.config.jax_log_compiles
    logger.addHandler(handler)
    logger.propagate = False
    jax.config.update("jax_log_compiles", True)
    try:
        yield programs
    finally:
        jax.config.update("jax_log_compiles", was)
        logger.removeHandler(handler)
        logger.propagate = propagate


def whole_fit(data, lut, cfg):
    with compile_log() as programs:
        t0 = time.perf_counter()
        res = run_fit_cycles(data, lut, cfg, log=print)
        total = time.perf_counter() - t0
    passes = sum((c["solver"] or {}).get("passes", 0) for c in res.cycles)
    print(f"run_fit_cycles: {total:.1f} s (first call, includes compiles), {len(res.cycles)} "
          f"cycles incl. clean-up, {passes} solver passes over the observations")
    n = sum(c for c, _ in programs.values())
    largest = sorted(programs.items(), key=lambda kv: -kv[1][1])[:6]
    print(f"  of which XLA compiles: {n} programs, {sum(t for _, t in programs.values()):.1f} s "
          "(largest: " + ", ".join(f"{k} {t:.2f} s" + (f" x{c}" if c > 1 else "")
                                   for k, (c, t) in largest) + ")")
    return res


def truth_bars(repo_dir, cat, cam, data, res, cfg):
    import pyarrow.parquet as pq
    from scipy.spatial import cKDTree

    def truth(name):
        return {k: np.asarray(v) for k, v in
                pq.read_table(f"{repo_dir}/truth/{name}.parquet").to_pydict().items()}

    tz = truth("zeropoints")
    vi = {int(v): i for i, v in enumerate(res.visit)}
    di = {int(x): j for j, x in enumerate(np.asarray(cam.ids))}
    i = np.array([vi[int(v)] for v in tz["visit"]])
    j = np.array([di[int(x)] for x in tz["detector"]])
    d = res.zeropoint[i, j] - tz["zeropoint"]  # both AB (the fit adds zptABNoThroughput)
    flag = res.zeropoint_flag[i, j]
    print("bar 1: photometric exposures' zeropoint - truth RMS after one constant per band "
          "(target <= 2 mmag); the constant is the absolute (AB) offset")
    bars = {"zeropoint": {}, "bright": {}}
    for b in np.unique(tz["band"]):
        ok = (tz["band"] == b) & (flag == 1) & tz["photometric"]
        if ok.sum() == 0:
            continue
        x = d[ok] - np.median(d[ok])
        rms = bars["zeropoint"][str(b)] = float(np.sqrt(np.mean(x ** 2)))
        four = (tz["band"] == b) & (flag == 4)
        y = d[four] - np.median(d[ok])
        print(f"  {b}: {1e3 * rms:.2f} mmag over {ok.sum()} (visit, det), "
              f"constant {1e3 * np.median(d[ok]):+.1f} mmag; "
              f"flag-4 (gray-corrected) {1e3 * np.sqrt(np.mean(y ** 2)) if four.any() else np.nan:.2f}"
              f" mmag over {four.sum()}")
    tv = truth("visits")
    order = np.array([np.nonzero(tv["visit"] == v)[0][0] for v in res.visit])
    gray = tv["gray"][order]
    flagged = res.exp_flags != 0
    cloudy = gray > 0.010
    bars["clouds"] = (int(flagged[cloudy].sum()), int(cloudy.sum()))
    print(f"bar 2: non-photometric exposures with gray > 10 mmag flagged: "
          f"{flagged[cloudy].sum()}/{cloudy.sum()} = {np.mean(flagged[cloudy]):.1%} "
          f"(target >= 95 %); clear exposures flagged {np.mean(flagged[~cloudy]):.1%}")
    obj = truth("objects")
    tree = cKDTree(np.c_[obj["ra"] * np.cos(np.radians(obj["dec"])), obj["dec"]])
    ra, dec = np.asarray(cat.stars["ra"]), np.asarray(cat.stars["dec"])
    dist, k = tree.query(np.c_[ra * np.cos(np.radians(dec)), dec])
    matched = dist < 1.0 / 3600
    # S/N of a star = its median per-observation S/N (instrumental error); the mean's own
    # error (star_mag_err) would admit faint stars whose mean is only known to 10 mmag.
    valid = np.asarray(data.obs_valid)
    o_star = np.asarray(data.obs_star)[valid]
    o_band = np.asarray(data.obs_band)[valid]
    o_err = np.asarray(data.obs_err)[valid]
    med_err = np.full((data.n_stars, data.n_bands), np.inf)
    key = o_star * data.n_bands + o_band
    srt = np.argsort(key, kind="stable")
    uk, start = np.unique(key[srt], return_index=True)
    med_err.ravel()[uk] = [np.median(v) for v in np.split(o_err[srt], start[1:])]
    print("bar 3: bright reserved stars (median observation S/N > 100, >= 2 good observations), "
          "std mag - truth RMS after one constant (target <= 3 mmag); expected from their "
          "errors in brackets")
    for b, band in enumerate(data.bands):
        ok = matched & res.star_reserved & (med_err[:, b] < 1.0857 / 100)
        ok &= np.isfinite(res.star_mag[:, b]) & (res.star_n_good[:, b] >= 2)
        if ok.sum() < 5:
            continue
        x = res.star_mag[ok, b] - obj[f"mag_std_{band}"][k[ok]]
        const = np.median(x)
        x -= const
        rms = bars["bright"][band] = float(np.sqrt(np.mean(x ** 2)))
        print(f"  {band}: {1e3 * rms:.2f} mmag over {ok.sum()} stars "
              f"(robust {1e3 * 1.4826 * np.median(np.abs(x)):.2f}; errors "
              f"{1e3 * np.sqrt(np.mean(res.star_mag_err[ok, b] ** 2)):.2f}), constant "
              f"{1e3 * const:+.1f} mmag")
    print("bar 4: final reserved-star repeatability per band (mmag):",
          {b: round(1e3 * float(r), 2) for b, r in zip(data.bands, res.repeatability[-1])})
    print("       noise floor of the same statistic (the observations' own errors, same "
          "selection):", {b: round(1e3 * float(r), 2)
                           for b, r in zip(data.bands, repeatability_noise_floor(
                               data, res, cfg.fit.sigma0_phot))})
    floor = repeatability_noise_floor(data, res, cfg.fit.sigma0_phot,
                                      noise=measurement_errors(repo_dir, cat, data))
    print("       the same with the simulation's actual measurement errors (measured minus "
          "noise-free flux; perfect calibration):",
          {b: round(1e3 * float(r), 2) for b, r in zip(data.bands, floor)})
    bars["ratio"] = {b: float(r / f) for b, r, f in zip(data.bands, res.repeatability[-1], floor)}
    print("       ratio repeatability / actual floor (target <= 1.2):",
          {b: round(r, 3) for b, r in bars["ratio"].items()})
    return bars


#: The issue's upper limits per band: bar -> (unit factor for printing, target in that unit).
TARGETS = {"zeropoint": (1e3, 2.0), "bright": (1e3, 3.0), "ratio": (1.0, 1.2)}


def print_draws(draws: dict, label: str = "reserve draw (fit.random_seed = {keys})") -> None:
    """The bars of several runs side by side (``draws``: key -> ``truth_bars``), and in how many
    each target is met. For reserve draws: the repeatability floor depends on the reserved
    stars' S/N mix, so one draw's pass or miss by a few hundredths says little (docs/fit.md);
    scripts/bench_seeds.py uses it for simulated repositories of several seeds."""
    seeds = list(draws)
    print(f"bars per {label.format(keys=', '.join(map(str, seeds)))}:")
    order = list(draws[seeds[0]]["ratio"])  # FitData's band order
    for name, (unit, target) in TARGETS.items():
        for band in sorted(draws[seeds[0]][name], key=order.index):
            vals = [draws[s][name].get(band, np.nan) * unit for s in seeds]
            met = sum(v <= target for v in vals)
            digits = 3 if unit == 1.0 else 2
            print(f"  {name:9s} {band}: " + "  ".join(f"{v:6.{digits}f}" for v in vals)
                  + f"   target {target}: met in {met}/{len(vals)}")
    clouds = [draws[s]["clouds"] for s in seeds]
    met = sum(f >= 0.95 * n for f, n in clouds)
    print("  clouds flagged: " + "  ".join(f"{f}/{n}" for f, n in clouds)
          + f"   target 95 %: met in {met}/{len(clouds)}")


def measurement_errors(repo_dir, cat, data):
    """Per FitData observation: its magnitude minus the noise-free one from truth/ (the
    simulator's noise, background-subtraction noise and defects; 0 for padding)."""
    import pyarrow.parquet as pq

    t = pq.read_table(f"{repo_dir}/truth/observations.parquet",
                      columns=["sourceId", "flux12_true"]).to_pydict()
    sid = np.asarray(t["sourceId"])
    srt = np.argsort(sid)
    order = np.asarray(data.obs_order)
    ok = order >= 0
    src = np.asarray(cat.observations["source_id"])[order[ok]]
    row = srt[np.searchsorted(sid[srt], src)]
    if not np.array_equal(sid[row], src):
        raise ValueError("catalog sources missing from truth/observations.parquet")
    exptime = np.asarray(data.exp_exptime)[np.asarray(data.obs_exp)[ok]]
    true_mag = -2.5 * np.log10(np.asarray(t["flux12_true"])[row] / exptime)
    out = np.zeros(len(order))
    out[ok] = np.asarray(data.obs_mag, np.float64)[ok] - true_mag
    return out


def repeatability_noise_floor(data, res, sigma0=0.003, seed=1, noise=None):
    """The fit's own repeatability statistic (``jaxfgcm.fit.cycle.repeatability``: the final
    cycle's star means, error model and selection, from ``res.repeatability_mean_use`` and
    ``res.repeatability_sigma_fgcm``) on noise-only magnitudes: what perfect calibration would
    give. ``noise`` per observation (default: Gaussian with each observation's reported
    error)."""
    from jaxfgcm.fit.cycle import repeatability
    from jaxfgcm.fit.loss import obs_variance

    if noise is None:
        inst = np.asarray(data.obs_err, float)
        noise = np.random.default_rng(seed).normal(0.0, 1.0, len(inst)) * inst
    sig = np.asarray(res.repeatability_sigma_fgcm)
    var = obs_variance(data, jnp.asarray(sig), sigma0)
    return list(repeatability(np.asarray(noise, float), var,
                              jnp.asarray(res.repeatability_mean_use), sig, data))


def load_repo(repo_dir, tract, cfg):
    """A simulated repository's stars, camera, LUT (host and interpolator) and FitData."""
    from jaxfgcm.fit import FitData
    from jaxfgcm.lut import LutInterpolator, load_lut
    from jaxfgcm.repo import Repository
    from jaxfgcm.stars import build_stars

    repo = Repository(repo_dir)
    t0 = time.perf_counter()
    cat = build_stars(repo, cfg, tract)
    cam = repo.camera()
    lut_np = load_lut(repo.lut_path, config=cfg, camera=cam)
    t1 = time.perf_counter()
    data = FitData.build(cat, lut_np, cam, cfg)
    print(f"build_stars + load_lut {t1 - t0:.1f} s; FitData.build "
          f"{time.perf_counter() - t1:.2f} s")
    return cat, cam, lut_np, data, LutInterpolator.from_lut(lut_np)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", help="simulated repository (else a synthetic problem)")
    ap.add_argument("--tract", type=int, default=9615)
    ap.add_argument("--stars", type=int, default=5000)
    ap.add_argument("--nights", type=int, default=4)
    ap.add_argument("--visits", type=int, default=16)
    ap.add_argument("--detectors", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], help="config override")
    ap.add_argument("--no-fit", action="store_true", help="pass benchmark only")
    ap.add_argument("--no-pass", action="store_true",
                    help="skip the pass benchmark: the whole fit then compiles everything it "
                         "needs, as a fresh calibrate run does")
    ap.add_argument("--repeats", type=int, default=30,
                    help="rounds of the alternating pass timing (medians reported)")
    ap.add_argument("--reserve-seeds", default="",
                    help="with --repo: comma-separated fit.random_seed values to refit with "
                         "(other draws of the reserved stars) and print the truth bars side by "
                         "side with the configured draw's")
    ap.add_argument("--malloc-defaults", action="store_true",
                    help="keep glibc's allocator defaults (else fit.hostmem.retain_freed_memory)")
    a = ap.parse_args(argv)
    if not a.malloc_defaults:
        # before any JAX computation: XLA's worker threads keep the arenas they start with
        retain_freed_memory()
    if a.repo:
        from jaxfgcm.fit import FitData

        cfg = load_config(default_config_path(), overrides=a.set)
        cat, cam, lut_np, data, lut = load_repo(a.repo, a.tract, cfg)
    else:
        cfg = Config().with_overrides(["instrument.bands=[g,r,i]", "fit.fit_bands=[g,r,i]",
                                       "fit.min_star_per_exp=50", *a.set])
        t0 = time.perf_counter()
        data, lut, _ = make_synthetic(cfg, n_stars=a.stars, n_nights=a.nights,
                                      visits_per_night=a.visits, n_det=a.detectors, seed=5)
        print(f"synthetic problem built in {time.perf_counter() - t0:.1f} s")
    if not a.no_pass:
        pass_benchmark(data, lut, cfg, ", glibc malloc defaults" if a.malloc_defaults
                       else ", freed host memory retained (fit.hostmem)", repeats=a.repeats)
    if a.no_fit:
        return
    res = whole_fit(data, lut, cfg)
    if a.repo:
        draws = {cfg.fit.random_seed: truth_bars(a.repo, cat, cam, data, res, cfg)}
        for seed in (int(v) for v in a.reserve_seeds.split(",") if v.strip()):
            print(f"\n== reserve draw fit.random_seed={seed}")
            c = cfg.with_overrides({"fit.random_seed": seed})
            d = FitData.build(cat, lut_np, cam, c)
            draws[seed] = truth_bars(a.repo, cat, cam, d, whole_fit(d, lut, c), c)
        if len(draws) > 1:
            print_draws(draws)


if __name__ == "__main__":
    main()
