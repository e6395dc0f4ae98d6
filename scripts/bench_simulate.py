"""Measure the simulator: wall time, peak memory, sizes, and the airmass-interpolation residual.

    python scripts/bench_simulate.py --preset tract [--keep DIR] [--residual-samples 3000]

The residual is the simulator's per-observation response (linear interpolation in magnitude
between the lowest and highest airmass of the detector) minus the exact integral of the SED
through atmosphere x passband at the observation's own airmass, over sampled observations.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def interpolation_residual(ctx, repo, n_samples, seed=0):
    from jaxfgcm.simulate import instrument as inst

    obs = repo.read_truth("observations")
    real = np.flatnonzero(obs["object_id"] > 0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(real, min(n_samples, real.size), replace=False)
    sch = ctx.schedule
    vindex = {int(v): i for i, v in enumerate(sch.visit)}
    out = np.empty(pick.size)
    for n, j in enumerate(pick):
        iv = vindex[int(obs["visit"][j])]
        a = ctx.nights.atmosphere(int(sch.night[iv]), float(sch.mjd[iv]))
        t = ctx.atmosphere.transmission(a["pressure"], a["pwv"], a["o3"], a["tau"], a["alpha"],
                                        obs["secz"][j])
        di = int(ctx.camera.index(int(obs["detector"][j])))
        s = ctx.passbands[str(sch.physical_filter[iv])][di]
        k = ctx.sky.sed_index[int(obs["object_id"][j]) - 1]
        exact = -2.5 * np.log10(inst.counts_per_fnu_unit()
                                * np.sum(ctx.library.fnu[k] * t * s * ctx.q))
        out[n] = obs["response_mag"][j] - exact
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tract")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", default=None, help="write the repository here (default: temp)")
    p.add_argument("--no-lut", action="store_true")
    p.add_argument("--residual-samples", type=int, default=2000)
    args = p.parse_args()

    from jaxfgcm.repo import Repository
    from jaxfgcm.simulate import build_context
    from jaxfgcm.simulate.writer import write_simulation

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.keep) if args.keep else Path(tmp) / "repo"
        t0 = time.perf_counter()
        ctx = build_context(preset=args.preset, seed=args.seed)
        t_ctx = time.perf_counter() - t0
        summary = write_simulation(ctx, d, build_lut=False if args.no_lut else None,
                                   overwrite=True)
        summary["seconds_context"] = round(t_ctx, 2)
        summary["peak_rss_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
        repo = Repository(d)
        t1 = time.perf_counter()
        repo.validate()
        summary["seconds_validate"] = round(time.perf_counter() - t1, 2)
        if args.residual_samples:
            r = interpolation_residual(ctx, repo, args.residual_samples)
            summary["interp_residual_mmag_rms"] = float(np.sqrt(np.mean(r**2)) * 1e3)
            summary["interp_residual_mmag_max"] = float(np.abs(r).max() * 1e3)
        print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
