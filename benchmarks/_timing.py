"""Timing helpers shared by the benchmarks (steady-state medians of jitted functions)."""

import time

import jax
import numpy as np


def median_time(fn, *args, repeat: int) -> float:
    """Median wall time of ``fn(*args)`` over ``repeat`` runs, after two untimed runs (compile, warm-up)."""
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def fmt_seconds(t: float) -> str:
    """A time in microseconds or milliseconds, fixed width."""
    return f"{t * 1e6:9.1f} us" if t < 1e-3 else f"{t * 1e3:9.3f} ms"
