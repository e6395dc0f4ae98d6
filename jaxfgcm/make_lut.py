"""``python -m jaxfgcm.make_lut``: build the look-up table of passband integrals for a repository.

Reads ``REPO/camera.parquet`` and ``REPO/throughput/``, tabulates I0 and I10 for every physical
filter of the configuration and every science detector on the configured atmosphere grid
(``lut`` section), and writes ``REPO/fgcmLookupTable.fits`` (or ``--output``) atomically.
See docs/lut.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LUT_FILE = "fgcmLookupTable.fits"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxfgcm.make_lut",
        description=(
            "Build the LUT of passband integrals (I0, I10 per physical filter and detector on "
            "the atmosphere grid of the config's 'lut' section) from REPO/camera.parquet and "
            "REPO/throughput/, and write REPO/" + LUT_FILE + "."
        ),
    )
    p.add_argument("--repo", required=True, type=Path, help="data repository directory")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML config file (default: the built-in HSC defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set lut.pwv.n=9 (repeatable)")
    p.add_argument("--output", type=Path, default=None,
                   help=f"output file (default: REPO/{LUT_FILE})")
    p.add_argument("--quiet", action="store_true", help="do not print build progress")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Imports after argument parsing so --help is instant.
    from jaxfgcm.camera import CameraError, read_camera
    from jaxfgcm.config import ConfigError, load_config
    from jaxfgcm.lut import build_lut, save_lut
    from jaxfgcm.throughput import ThroughputError, read_throughput

    prog = "jaxfgcm.make_lut"
    repo: Path = args.repo
    output = args.output if args.output is not None else repo / LUT_FILE
    try:
        if not repo.is_dir():
            raise FileNotFoundError(f"{repo}: repository directory not found")
        config = load_config(args.config, overrides=args.overrides or None)
        camera = read_camera(repo / "camera.parquet")
        throughput = read_throughput(repo / "throughput", camera)
        lut = build_lut(config, throughput, camera, progress=not args.quiet)
        save_lut(lut, output)
    except (ConfigError, CameraError, ThroughputError, FileNotFoundError, ValueError,
            KeyError, OSError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 1
    size_mb = output.stat().st_size / 1e6
    if not args.quiet:
        print(f"{prog}: wrote {output} ({size_mb:.1f} MB; {len(lut.physical_filters)} filters x "
              f"{lut.detector_ids.size} detectors; built in {lut.build_seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
