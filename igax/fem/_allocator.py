"""Keep the memory a compiled program frees for its next call (glibc ``malloc`` thresholds).

XLA on CPU allocates every temporary of a program afresh at each call and frees it when the call ends. With
glibc's defaults, blocks above the ``mmap`` threshold (dynamic, 128 kB growing to at most 32 MB) are fresh
``mmap`` regions unmapped on ``free``, and free memory at the top of a heap beyond the trim threshold is given
back to the system; either way the next call touches new pages, and the kernel zeroes and maps every page
of every temporary again. In an optimisation loop that is a large part of the work: on the degree-2 spline
patch with 96 x 96 elements (9,604 DOFs), ``perf`` put 40 % of the assembly VJP's time in the kernel
(``clear_page_erms``, ``exc_page_fault``, ``unmap_page_range``); raising both thresholds to 1 GB took the
VJP from 30 to 13 ms of CPU time and the gradient of assemble + solve from 68 to 50 ms, forward unchanged.
The 32 MB threshold alone does not help (the worker threads' arenas), nor the trim threshold alone.

:func:`keep_freed_memory` (``igax.fem.keep_freed_memory``) sets the two thresholds once per process
(``mallopt``). It is opt-in: importing igax changes nothing, because the setting is process-wide and has a
cost: up to the threshold of freed memory stays with the process (its resident size stays near its peak
instead of shrinking between calls; the peak itself does not grow), which a larger application embedding
igax may not want. Call it once at the start of an optimisation or training script. It does nothing where
the environment variable ``IGAX_MALLOC_TUNING=0`` is set, where the user configured ``malloc``
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``glibc.malloc`` tunables), and on systems
without glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # bytes: blocks up to 1 GB come from the heaps, and up to 1 GB of free top is kept

_done: list[bool] = []


def keep_freed_memory(threshold: int = THRESHOLD) -> bool:
    """Raise glibc's ``mmap`` and trim thresholds to ``threshold`` bytes, once per process (opt-in).

    Compiled programs then reuse the memory their previous call freed instead of page-faulting fresh memory
    in (see the module docstring for figures and the cost).

    Arguments:
        threshold: bytes; blocks up to this size come from the heaps, and this much free heap top is kept.

    Returns:
        True when the thresholds were set (now or by an earlier call), False where they were left alone:
        ``IGAX_MALLOC_TUNING=0``, ``malloc`` configured by the user, or no glibc.

    Example:
        >>> from igax import fem
        >>> fem.keep_freed_memory() in (True, False)
        True
    """
    if _done:
        return _done[0]
    _done.append(_apply(int(threshold)))
    return _done[0]


def _apply(threshold: int) -> bool:
    if os.environ.get("IGAX_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        _ = libc.gnu_get_libc_version  # glibc only (musl has no mallopt thresholds)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    value = min(threshold, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
