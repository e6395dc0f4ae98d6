"""``python -m jaxfgcm.calibrate``: calibrate one tract (build stars -> fit cycles -> products).

This module is the command line only (arguments, logging, exit codes); the work is done by
:func:`jaxfgcm.pipeline.run_tract` and :func:`jaxfgcm.pipeline.run_demo`. docs/cli.md documents
every option, the products and the exit codes.

Exit codes: 0 success; 1 an input or output problem (missing repository, unknown tract, no
visits in a band, missing or mismatched look-up table, unreadable source file, unwritable
output, bad configuration), reported as one line on stderr; 2 bad command-line usage; 3 an
internal error (a bug: the traceback is printed); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

EXIT_OK = 0
EXIT_INPUT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130

PROG = "python -m jaxfgcm.calibrate"

DESCRIPTION = """\
Calibrate one tract with the Forward Global Calibration Method: read the per-visit source
tables of REPO, build stars, fit the atmosphere and instrument model in cycles, and write the
standard stars, the per (visit, detector) calibrations, the per-visit atmosphere transmission,
the fit state, summary.json and QA plots to the output directory.

The device is chosen by JAX from the environment (JAX_PLATFORMS=cpu or cuda)."""

EPILOG = """\
exit codes: 0 success; 1 input/output problem (one line on stderr); 2 bad usage;
3 internal error (traceback); 130 interrupted.

examples:
  python -m jaxfgcm.calibrate --demo
  python -m jaxfgcm.calibrate --repo /data/hsc --tract 9615
  python -m jaxfgcm.calibrate --repo /data/hsc --tract 9615 --bands g,r,i \\
      --set fit.max_fit_cycles=3 --output /scratch/tract-9615
See docs/cli.md and docs/products.md."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", metavar="DIR", type=Path,
                   help="data repository (docs/repository.md). Required unless --demo; with "
                        "--demo, where the simulated repository is written and kept (default: a "
                        "temporary directory, deleted at the end)")
    p.add_argument("--tract", metavar="ID", type=int,
                   help="tract to calibrate, as defined in REPO/skymap.yaml (required unless "
                        "--demo; the demo simulates tract 9615)")
    p.add_argument("--output", metavar="DIR", type=Path,
                   help="output directory (default REPO/jaxfgcm/tract-<ID>/); created if "
                        "needed; must not be the repository itself or one of its input folders")
    p.add_argument("--config", metavar="YAML", type=Path,
                   help="configuration file; fields it does not name keep the HSC defaults "
                        "(configs/hsc.yaml spells them all out). Default: the HSC defaults")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one configuration field, e.g. --set fit.max_fit_cycles=3 "
                        "(value parsed as YAML; repeatable; applied after --config)")
    p.add_argument("--bands", metavar="B1,B2,...",
                   help="calibrate only these bands (comma-separated, e.g. g,r,i); each must "
                        "have visits. Default: the configured bands (instrument.bands) that have "
                        "visits")
    p.add_argument("--resume", action="store_true",
                   help="reuse the star tables cached in OUTPUT/cache/ by an earlier run with "
                        "the same star-building inputs, and restart at the fit")
    p.add_argument("--demo", action="store_true",
                   help="no data needed: simulate a small tract (the 'tiny' preset) with known "
                        "truth, calibrate it and print recovered-vs-truth figures")
    p.add_argument("--preset", default="tiny", metavar="NAME",
                   help="simulation preset used by --demo (default: tiny)")
    p.add_argument("--no-plots", action="store_true",
                   help="skip the QA plots (they need matplotlib, the 'plot' extra)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--compile-cache", metavar="DIR", type=Path,
                       help="keep the fit's compiled programs in DIR, so a later run of the "
                            "same shapes skips compiling them (default: JAX_COMPILATION_CACHE_DIR "
                            "if set, else ~/.cache/jaxfgcm/xla)")
    cache.add_argument("--no-compile-cache", action="store_true",
                       help="compile every program afresh and write no cache")
    p.add_argument("--nondeterministic", action="store_true",
                   help="on a GPU, let XLA sum with atomic additions whose order varies from "
                        "run to run (results then differ between runs by up to ~1 mmag); "
                        "default: deterministic GPU kernels, identical results every run")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="log warnings and errors only (the summary table is still "
                                "printed)")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s",
                                           datefmt="%H:%M:%S"))
    root = logging.getLogger("jaxfgcm")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input or output, not a bug: reported in one line."""
    from jaxfgcm.pipeline import expected_errors

    return expected_errors()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.demo and (args.repo is None or args.tract is None):
        parser.error("--repo and --tract are required (or use --demo)")
    bands = None
    if args.bands is not None:
        bands = [b.strip() for b in args.bands.split(",") if b.strip()]
        if not bands:
            parser.error("--bands needs at least one band, e.g. --bands g,r,i")
    _setup_logging(args.quiet, args.verbose)
    # Before any JAX computation (process-wide, so only entry points do it): XLA's CPU
    # temporaries then reuse freed heap instead of page-faulting fresh memory every pass
    # (fit 55 -> 44 s on the tract preset; jaxfgcm.fit.hostmem, docs/performance.md).
    from jaxfgcm.fit.hostmem import retain_freed_memory

    retain_freed_memory()
    if not args.nondeterministic:
        # XLA reads XLA_FLAGS when the backend starts (jaxfgcm.fit.reproducible).
        from jaxfgcm.fit.reproducible import deterministic_gpu_ops

        deterministic_gpu_ops()
    if not args.no_compile_cache:
        # Also before the first computation: compiling the fit's programs is most of a first
        # GPU run's time (jaxfgcm.fit.compilecache, docs/performance.md).
        from jaxfgcm.fit.compilecache import enable_compilation_cache

        cache_dir = enable_compilation_cache(args.compile_cache)
        if cache_dir is not None:
            logging.getLogger("jaxfgcm").info("compiled programs cached in %s", cache_dir)
    # Star building reports skipped visits both as a log line and as a StarsWarning; the log
    # line is enough on the command line.
    warnings.filterwarnings("ignore", module="jaxfgcm.stars")

    expected: tuple[type[BaseException], ...] = ()
    try:
        from jaxfgcm import pipeline

        expected = _expected_errors()
        options = {"config_path": args.config, "overrides": args.overrides, "bands": bands,
                   "resume": args.resume, "plots": not args.no_plots}
        if args.demo:
            result = pipeline.run_demo(repo=args.repo, tract_id=args.tract, output=args.output,
                                       preset=args.preset, **options)
        else:
            result = pipeline.run_tract(args.repo, args.tract, output=args.output, **options)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no product of this run was completed "
              "(summary.json is written last)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - sorted into expected and internal below
        if isinstance(exc, expected):
            print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_INPUT_ERROR
        import traceback

        traceback.print_exc()
        print(f"{PROG}: internal error (a bug; please report it with the traceback above)",
              file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    print(result.report())
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


if __name__ == "__main__":
    raise SystemExit(main())
