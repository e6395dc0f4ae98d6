"""Run-to-run reproducible results on a GPU: XLA's deterministic scatter and reduction kernels.

On a GPU, XLA implements scatter-adds (the fit's segment sums over stars, pairs and exposures,
and the reverse pass of every gather) with atomic additions, whose summation order changes from
run to run. The differences are at the level of float64 rounding, but the fit's discrete decisions
amplify them: on the tract preset (H100, seed 77) two runs of the same command took 16 and 13
Gauss-Newton iterations in their last cycle and their zeropoints differed by up to 1.2 mmag,
mostly a per-band constant (the overall level that the stars' magnitudes absorb; relative
differences up to 0.35 mmag). With ``--xla_gpu_deterministic_ops=true`` two runs were
identical to the last bit, 0-30 % slower (docs/performance.md, "GPU"). CPU results
are deterministic already; the flag is not set where no GPU backend can start.

XLA reads ``XLA_FLAGS`` once, when JAX first starts its backend: the command line calls
:func:`deterministic_gpu_ops` at process start (``--nondeterministic`` skips it), and the
library never does on import.
"""

from __future__ import annotations

import importlib.metadata
import os
import pkgutil

FLAG = "--xla_gpu_deterministic_ops"


def deterministic_gpu_ops() -> bool:
    """Add ``--xla_gpu_deterministic_ops=true`` to ``XLA_FLAGS`` unless the user's flags
    already choose either way, or no GPU backend can start (no JAX GPU plugin installed, or
    ``JAX_PLATFORMS`` names no GPU platform): XLA aborts at start on a flag it does not know,
    so the flag is only set where a GPU is in play. Returns whether deterministic GPU ops are
    asked for. Call before the first JAX computation."""
    flags = os.environ.get("XLA_FLAGS", "")
    for word in flags.split():
        if word.split("=")[0] == FLAG:
            return word.split("=", 1)[-1].lower() in ("true", "1", FLAG.lower())
    if not gpu_backend_possible():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}=true".strip()
    return True


def gpu_backend_possible() -> bool:
    """A JAX GPU plugin (CUDA or ROCm, as the ``jax[cuda*]`` wheels install) is installed and
    ``JAX_PLATFORMS`` does not exclude it."""
    platforms = os.environ.get("JAX_PLATFORMS", "").lower()
    if platforms and not any(p in platforms for p in ("cuda", "gpu", "rocm")):
        return False
    # JAX finds its PJRT plugins the same two ways: the jax_plugins namespace package and the
    # "jax_plugins" entry points.
    names = [ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")]
    try:
        import jax_plugins

        names += [m.name for m in pkgutil.iter_modules(jax_plugins.__path__)]
    except ImportError:
        pass
    return any(kind in name.lower() for name in names for kind in ("cuda", "rocm"))


__all__ = ["deterministic_gpu_ops", "gpu_backend_possible"]
