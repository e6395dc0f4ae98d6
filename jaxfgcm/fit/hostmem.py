"""Keep freed host memory mapped, so that XLA's CPU temporaries do not page-fault on every pass.

XLA's CPU runtime allocates each program's temporaries with ``malloc`` on every call. glibc
serves blocks above its mmap threshold (128 kB to 32 MB, adaptive) with fresh ``mmap`` pages and
unmaps them on ``free``: every pass of the fit then touches megabytes of new zero pages, and the
kernel's page faults cost as much as the arithmetic. On the tract preset (274k observations)
the chi2 value+gradient pass took 36 ms with glibc's defaults and 16 ms with freed memory kept
(single core, ``scripts/bench_fit.py``, docs/performance.md); the per-observation work is
unchanged, only first-touch faults are gone.

:func:`retain_freed_memory` sets glibc's ``mallopt`` parameters at run time (the environment
variables ``MALLOC_MMAP_THRESHOLD_`` etc. do the same but must be set before the process
starts). It is process-wide, so the library never calls it on import: entry points (the
command line, benchmarks) opt in, at process start, before the first JAX computation (XLA's
worker threads keep the malloc arenas they started with: called later, the faults remain).
The cost is that the process keeps its peak heap size instead of returning freed memory to
the system.

glibc caps the mmap threshold at 32 MiB, so blocks above it got a fresh mapping on every call
even so: XLA puts a program's temporaries in one block, and the Gauss-Newton normal equations'
block (the Jacobian, 44 x 274k float64, and its companions) is 608 MB on the tract preset:
148k page faults per call. ``large_blocks`` (the default) also serves those from the heap
(``M_MMAP_MAX`` = 0; glibc still maps memory where the heap cannot grow). Measured on the tract
preset, 2-core CPU (docs/performance.md, 2026-12-05): the normal equations 312-375 -> 161-187
ms, ``run_fit_cycles`` 38.5 -> 25.2 s with identical results, peak resident memory 2.2 ->
2.8 GB (the heap keeps room for the largest blocks).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

#: Largest value glibc accepts for the mmap threshold (HEAP_MAX / 2 on 64-bit: 32 MiB); above
#: it mallopt fails. Larger blocks get their own mapping unless mmap is off (``large_blocks``).
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def retain_freed_memory(top_pad_bytes: int = 256 * 1024 * 1024,
                        large_blocks: bool = True) -> bool:
    """Serve large allocations from the heap and never trim it: freed blocks are reused
    without page faults. ``top_pad_bytes``: extra heap grown at a time. ``large_blocks``: blocks
    above glibc's 32 MiB mmap cap from the heap too (no mapping per allocation); False leaves
    them to mmap, which returns their memory when freed. Returns False (and does nothing) where
    the C library has no ``mallopt`` (not glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    ok &= mallopt(_M_TOP_PAD, min(int(top_pad_bytes), 2**31 - 1))
    # one arena: XLA's worker threads otherwise get per-thread arenas, mmapped heaps that glibc
    # shrinks on its own rules (measured: a pass page-faulted again now and then)
    ok &= mallopt(_M_ARENA_MAX, 1)
    if large_blocks:
        ok &= mallopt(_M_MMAP_MAX, 0)
    return bool(ok)


__all__ = ["retain_freed_memory"]
