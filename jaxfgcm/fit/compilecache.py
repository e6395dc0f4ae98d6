"""A persistent cache of the fit's compiled XLA programs, so a later run of the same shapes skips
compiling them.

A tract's fit compiles many XLA programs (the Gauss-Newton normal equations, the chi2 pass, the
gray and star-flat steps and small array operations: 120 on the tract preset, 400 before the
eager operations were folded into compiled ones). Measured on the tract preset: 17 s of a 39 s
run on the 2-core CPU, and 66 s of an 81 s run on an H100, where the fit's arithmetic itself
takes a few seconds (docs/performance.md, "GPU"). JAX's persistent compilation cache stores
each compiled program on disk under a key of its HLO, the JAX/XLA versions, the device kind and
the compile options, so a rerun (``--resume``, a changed configuration value that leaves the shapes alone, the same
tract after new data of the same size) loads them instead: same programs, same results.

The command line turns it on (``--compile-cache``, docs/cli.md); the library never does on
import, because the setting is process-wide. JAX's own ``JAX_COMPILATION_CACHE_DIR``, where a
user has set it, wins over our default directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax

log = logging.getLogger(__name__)

#: Default size limit of the cache directory where the ``filelock`` package is installed: JAX
#: then evicts the least recently used programs beyond it. A tract's programs take ~2.5 MB (CPU).
DEFAULT_MAX_BYTES = 2 * 1024**3


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxfgcm/xla`` (``~/.cache/jaxfgcm/xla`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxfgcm" / "xla"


def enable_compilation_cache(path: str | Path | None = None,
                             max_bytes: int = DEFAULT_MAX_BYTES) -> Path | None:
    """Cache compiled programs in ``path`` (default: JAX's configured directory if the user set
    one, else :func:`default_cache_dir`). Call before the first JAX computation. Returns the
    directory, or None (with a warning) when it cannot be created: a run never fails for want
    of a cache, it only compiles everything again."""
    configured = jax.config.jax_compilation_cache_dir
    if path is None and configured:
        return Path(configured)
    directory = Path(path) if path is not None else default_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("compilation cache %s cannot be created (%s); compiling without it",
                    directory, exc)
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Cache the small programs too: JAX's default (programs that took >= 1 s to compile) would
    # keep only the few large ones, yet the many small ones took ~24 s of a first GPU run.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if jax.config.jax_compilation_cache_max_size < 0 and _have_filelock():
        # JAX's least-recently-used eviction needs the filelock package (without it JAX writes
        # nothing at all when a limit is set); without it the directory grows until removed.
        jax.config.update("jax_compilation_cache_max_size", int(max_bytes))
    return directory


def _have_filelock() -> bool:
    try:
        import filelock  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["DEFAULT_MAX_BYTES", "default_cache_dir", "enable_compilation_cache"]
