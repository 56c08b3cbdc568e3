"""Free-knot approximation layer: forward and backward time against n, and the backward against autodiff.

Case: a noisy piecewise-linear sequence of length n, k = 8 pieces of degree 2. Forward = breakpoint search +
per-piece least squares (exact search up to n = 2048, else 1024 candidates with local refinement); backward =
the VJP (block hat matrix applied with segment sums, custom rule). The backward is compared with plain
autodiff of the same projection with the breakpoints held fixed (``segment_projection`` body differentiated by
JAX), in the same run. Times are jit steady-state medians; ratio = baseline time / igax time.

The fitted slope of log(backward time) against log(n) should be about 1 (linear time).

Usage: ``python benchmarks/bench_approx.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
from _timing import fmt_seconds, median_time  # benchmarks/_timing.py

from igax.bases import approx


def _autodiff_projection(y, breaks, degree):
    """The same projection without the custom VJP: JAX differentiates segment sums and Cholesky solves."""
    n = y.shape[0]
    seg, phi, k = approx._segment_basis(breaks, n, degree, y.dtype)
    return approx._project(y[:, None], seg, phi, k)[0][:, 0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n up to 10^4")
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--degree", type=int, default=2)
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    sizes = [1000, 3000, 10_000] if args.quick else [1000, 10_000, 100_000, 1_000_000]
    k, d = args.segments, args.degree
    print(
        f"# machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, jax {jax.__version__}, backend {jax.default_backend()}, float64"
    )
    print(f"# free-knot fit, k = {k} pieces, degree {d}; backward = VJP of sum(w * fit)")
    print(f"  {'n':>8s} {'forward':>12s} {'backward':>12s} {'bwd autodiff':>13s} {'ratio':>7s}")
    rows, bwd_times = [], []
    for n in sizes:
        rng = np.random.default_rng(0)
        t = np.linspace(0, 1, n)
        y = np.interp(t, np.linspace(0, 1, k + 1), rng.standard_normal(k + 1)) + 0.05 * rng.standard_normal(n)
        y = jnp.asarray(y)
        w = jnp.asarray(rng.standard_normal(n))
        repeat = 20 if n <= 10_000 else 5
        fwd = jax.jit(lambda y: approx.free_knot_fit(y, k, d))
        tf = median_time(fwd, y, repeat=repeat)
        yhat, breaks = approx.free_knot_fit(y, k, d, return_breaks=True)
        # backward only: the VJP of the projection at fixed breakpoints (what the layer's backward runs)
        _, vjp = jax.vjp(lambda y, b=breaks: approx.segment_projection(y, b, d), y)
        bwd = jax.jit(lambda g, vjp=vjp: vjp(g)[0])
        tb = median_time(bwd, w, repeat=repeat)
        _, vjp_ad = jax.vjp(lambda y, b=breaks: _autodiff_projection(y, b, d), y)
        bwd_ad = jax.jit(lambda g, vjp=vjp_ad: vjp(g)[0])
        ta = median_time(bwd_ad, w, repeat=repeat)
        err = float(jnp.max(jnp.abs(bwd(w) - bwd_ad(w))))
        assert err < 1e-8, f"custom VJP and autodiff disagree by {err:.1e}"
        bwd_times.append(tb)
        print(f"  {n:8d} {fmt_seconds(tf):>12s} {fmt_seconds(tb):>12s} {fmt_seconds(ta):>13s} {ta / tb:7.2f}")
        for what, ti in (("forward", tf), ("backward", tb)):
            rec = {
                "bench": "approx",
                "case": f"free-knot-{what}-n{n}-k{k}-d{d}",
                "igax": "free_knot_fit",
                "igax_s": ti,
                "baseline": "autodiff-projection" if what == "backward" else None,
                "baseline_s": ta if what == "backward" else None,
                "ratio": ta / ti if what == "backward" else None,
            }
            rows.append(rec)
            print(json.dumps(rec))
    slope = np.polyfit(np.log(sizes), np.log(bwd_times), 1)[0]
    print(f"# backward time ~ n^{slope:.2f} (fitted over n = {sizes[0]} .. {sizes[-1]})")
    rows.append({"bench": "approx", "case": "backward-slope", "slope": float(slope)})
    return rows


if __name__ == "__main__":
    main()
