"""``python -m jaxfgcm.simulate --repo DIR --tract 9615 [--preset tiny|tract|large] [--seed N]``."""

from __future__ import annotations

import argparse
import json
import sys

from jaxfgcm.simulate.presets import PRESETS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jaxfgcm.simulate",
        description="Write a simulated HSC tract with ground truth as a jaxfgcm repository "
                    "(docs/simulation.md).")
    p.add_argument("--repo", required=True, help="output repository directory")
    p.add_argument("--tract", type=int, default=9615, help="tract id (default 9615)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tract")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--config", default=None, help="jaxfgcm config YAML (default: HSC)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. standard_atmosphere.pwv=2.0")
    lut = p.add_mutually_exclusive_group()
    lut.add_argument("--lut", dest="lut", action="store_true", default=None,
                     help="build fgcmLookupTable.fits (default: per preset)")
    lut.add_argument("--no-lut", dest="lut", action="store_false")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing repository at --repo")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    from jaxfgcm.config import ConfigError, load_config
    from jaxfgcm.simulate import simulate

    try:
        config = load_config(args.config, overrides=args.set or None)
        summary = simulate(args.repo, tract_id=args.tract, preset=args.preset, seed=args.seed,
                           config=config, build_lut=args.lut, overwrite=args.overwrite,
                           progress=not args.quiet)
    except (ConfigError, FileExistsError, ValueError) as exc:
        print(f"jaxfgcm.simulate: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
