"""Benchmark the build-stars stage: read + select + match throughput and peak memory.

    python scripts/bench_stars.py --repo REPO --tract 9615 [--workers 2] [--repeat 2]
    python scripts/bench_stars.py --repo /tmp/synth --synthetic 40000   # writes a synthetic
        # repository (tests/_stars_fixtures.py, ~1e6 sources for 40000 stars) first, then runs

Prints, per run: sources read, observations kept, stars, the stage timings and the throughput
(sources read per second, end to end: file reading, cuts, photometry, matching, table
assembly), and the peak resident memory of the process (ru_maxrss) above the baseline before
the first run. Timings depend on the load of the machine; run on an otherwise idle one.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout without installing


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _generate(repo: Path, n_stars: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from _stars_fixtures import make_synthetic_repo

    t0 = time.perf_counter()
    truth = make_synthetic_repo(
        repo, n_stars=n_stars, n_galaxies=n_stars // 5, visits_per_band=6, n_pix=8000,
        field_radius_arcsec=1300.0, tract_radius_deg=0.3, seed=3)
    print(f"synthetic repository {repo}: {truth.source_id.size:,} sources in "
          f"{len(truth.visits)} visits ({time.perf_counter() - t0:.1f} s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", required=True, type=Path)
    ap.add_argument("--tract", type=int, default=None, help="default: the only/first tract")
    ap.add_argument("--workers", type=int, default=2, help="reader threads")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--synthetic", type=int, default=0, metavar="N_STARS",
                    help="first write a synthetic repository with this many stars to --repo")
    ap.add_argument("--_generate_only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.synthetic:
        if args._generate_only:
            _generate(args.repo, args.synthetic)
            return 0
        # In a child process, so that its memory does not count in this one's peak.
        subprocess.run([sys.executable, __file__, "--repo", str(args.repo), "--synthetic",
                        str(args.synthetic), "--_generate_only"], check=True)

    from jaxfgcm.config import load_config
    from jaxfgcm.repo import Repository
    from jaxfgcm.stars import StarsWarning, build_stars

    warnings.simplefilter("ignore", StarsWarning)  # skipped visits are counted in the summary

    config = load_config(args.config)
    repo = Repository(args.repo)
    tract = args.tract if args.tract is not None else repo.tracts()[0]
    base = _rss_mb()
    print(f"repo {args.repo}, tract {tract}, {args.workers} reader thread(s), "
          f"baseline RSS {base:.0f} MB")
    for k in range(args.repeat):
        t0 = time.perf_counter()
        cat = build_stars(repo, config, tract, workers=args.workers, progress=False)
        wall = time.perf_counter() - t0
        s = cat.summary
        n_read = s["sources"]["read"]
        print(f"run {k}: {n_read:,} sources read, {s['sources']['selected']:,} selected, "
              f"{cat.n_observations:,} observations of {cat.n_stars:,} stars kept; "
              f"read+select {s['timing_s']['read_select']:.2f} s, "
              f"match+assemble {s['timing_s']['match_assemble']:.2f} s, total {wall:.2f} s; "
              f"{n_read / wall:,.0f} sources/s, {s['sources']['selected'] / wall:,.0f} "
              f"selected obs/s; peak RSS {_rss_mb():.0f} MB (+{_rss_mb() - base:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
