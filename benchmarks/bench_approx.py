"""Free-knot approximation layer: forward and backward time against n, and the backward against autodiff.

Case: a noisy piecewise-linear sequence of length n, k = 8 pieces of degree 2. Forward = breakpoint search +
per-piece least squares (exact search up to n = 2048, else 1024 candidates with local refinement); backward =
the VJP (block hat matrix applied with segment sums, custom rule). The backward is compared with plain
autodiff of the same projection with the breakpoints held fixed (``segment_projection`` body differentiated by
JAX), in the same run. Times are jit steady-state medians; ratio = baseline time / igax time.

The fitted slope of log(backward time) against log(n) should be about 1 (linear time).

2D case (:func:`main_2d`): the piecewise-constant image layer ``piecewise_constant_2d`` on a noisy blocky
image of side 64 .. 1024. Forward = host segmentation (pure_callback) + region means; backward = the VJP at
fixed labels (weak-Jacobian rule: region means of the cotangent). Baselines in the same run: plain autodiff
of the same segment-sum projection without the rule, and the dense N x N projection matrix ``P^T g`` where it
fits in memory (N <= 64^2). The fitted slope of log(backward time) against log(N) should be about 1.

Usage: ``python benchmarks/bench_approx.py [--quick] [--only {1d,2d}]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import fmt_seconds, median_time  # benchmarks/_timing.py

from igax.layers import approx, approx2d


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
    ap.add_argument("--only", choices=["1d", "2d"], default=None, help="run one case only")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    rows = [] if args.only == "1d" else main_2d(args.quick)
    if args.only == "2d":
        return rows
    return rows + main_1d(args)


def main_1d(args):
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


def _autodiff_region_projection(x, labels):
    """Naive region means (segment sums, divide, gather) differentiated by JAX itself, no custom rule."""
    n = x.size
    lab = labels.reshape(n)
    count = jax.ops.segment_sum(jnp.ones(n, x.dtype), lab, num_segments=n)
    s = jax.ops.segment_sum(x.reshape(n), lab, num_segments=n)
    return (s / jnp.maximum(count, 1.0))[lab].reshape(x.shape)


def _interleaved_medians(fn, args_a, args_b, repeat):
    """Median times of fn(*args_a) and fn(*args_b), measured alternately so both see the same load."""
    for args in (args_a, args_b, args_a, args_b):  # compile and warm up
        jax.block_until_ready(fn(*args))
    ta, tb = [], []
    for _ in range(repeat):
        for args, ts in ((args_a, ta), (args_b, tb)):
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            ts.append(time.perf_counter() - t)
    return float(np.median(ta)), float(np.median(tb))


def _dense_projection(labels):
    """The explicit N x N weak Jacobian, P_ij = 1/|R| for i, j in the same region (small images only)."""
    f = np.asarray(labels).ravel()
    same = f[:, None] == f[None, :]
    return jnp.asarray(same / same.sum(axis=1, keepdims=True))


def main_2d(quick=False, n_levels=8, min_size=16):
    """Piecewise-constant image layer: forward and backward time against the pixel count N."""
    sides = [64, 128, 256] if quick else [64, 128, 256, 512, 1024]
    print(
        f"# machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, jax {jax.__version__}, backend {jax.default_backend()}, float64"
    )
    print(
        f"# piecewise-constant image, {n_levels} levels in (0, 1), min_size {min_size}; "
        "backward = VJP at fixed labels"
    )
    print(
        f"  {'side':>5s} {'regions':>8s} {'forward':>12s} {'projection':>12s} {'backward':>12s} "
        f"{'bwd autodiff':>13s} {'ratio':>6s} {'bwd dense':>12s} {'ratio':>7s}"
    )
    rows, bwd_times = [], []
    for side in sides:
        rng = np.random.default_rng(0)
        blocks = np.kron(rng.random((8, 8)), np.ones((side // 8, side // 8)))
        x = jnp.asarray(np.clip(blocks + 0.05 * rng.standard_normal((side, side)), 0.0, 1.0))
        g = jnp.asarray(rng.standard_normal((side, side)))
        repeat = 20 if side <= 256 else 10
        fwd = jax.jit(
            lambda x: approx2d.piecewise_constant_2d(x, n_levels, value_range=(0, 1), min_size=min_size)
        )
        tf = median_time(fwd, x, repeat=max(3, repeat // 4))
        # labels and the host's integer tables (first pixel, size of each pixel's region), as the layer uses
        tables = approx2d._segment(x, n_levels, (0.0, 1.0), min_size)
        labels = tables[0]
        n = side * side
        # labels and VJP residuals are jit arguments: closed over, XLA would constant-fold the region counts
        proj = jax.jit(approx2d._region_projection)
        tp = median_time(proj, x, *tables, repeat=repeat)
        _, vjp = jax.vjp(lambda x, t=tables: approx2d._region_projection(x, *t), x)
        bwd = jax.jit(lambda vjp, g: vjp(g)[0])
        _, vjp_ad = jax.vjp(lambda x, lab=labels: _autodiff_region_projection(x, lab), x)
        tb, ta = _interleaved_medians(bwd, (vjp, g), (vjp_ad, g), repeat=repeat)
        err = float(jnp.max(jnp.abs(bwd(vjp, g) - bwd(vjp_ad, g))))
        assert err < 1e-12, f"weak-Jacobian VJP and autodiff disagree by {err:.1e}"
        td = None
        if n <= 64 * 64:
            P = _dense_projection(labels)
            dense = jax.jit(lambda P, g: (g.reshape(-1) @ P).reshape(g.shape))  # P^T g, no transposed copy
            td = median_time(dense, P, g, repeat=repeat)
            err = float(jnp.max(jnp.abs(bwd(vjp, g) - dense(P, g))))
            assert err < 1e-12, f"weak-Jacobian VJP and dense P^T g disagree by {err:.1e}"
            del P
        bwd_times.append(tb)
        R = int(labels.max()) + 1
        dense_txt = f"{fmt_seconds(td):>12s} {td / tb:7.1f}" if td else f"{'-':>12s} {'-':>7s}"
        print(
            f"  {side:5d} {R:8d} {fmt_seconds(tf):>12s} {fmt_seconds(tp):>12s} {fmt_seconds(tb):>12s} "
            f"{fmt_seconds(ta):>13s} {ta / tb:6.2f} {dense_txt}"
        )
        recs = [
            ("forward", tf, None, None),
            ("projection", tp, None, None),
            ("backward", tb, "autodiff-projection", ta),
        ]
        if td:
            recs.append(("backward", tb, "dense-projection", td))
        for what, ti, base, tbase in recs:
            rec = {
                "bench": "approx",
                "case": f"pc2d-{what}-{side}x{side}-k{n_levels}-m{min_size}",
                "igax": "piecewise_constant_2d" if what == "forward" else "region_projection",
                "igax_s": ti,
                "baseline": base,
                "baseline_s": tbase,
                "ratio": tbase / ti if tbase else None,
                "pixels": n,
                "regions": R,
            }
            rows.append(rec)
            print(json.dumps(rec))
    npix = np.array(sides, float) ** 2
    slope = np.polyfit(np.log(npix), np.log(bwd_times), 1)[0]
    print(f"# 2D backward time ~ N^{slope:.2f} (fitted over N = {sides[0]}^2 .. {sides[-1]}^2)")
    rows.append({"bench": "approx", "case": "pc2d-backward-slope", "slope": float(slope)})
    return rows


if __name__ == "__main__":
    main()
