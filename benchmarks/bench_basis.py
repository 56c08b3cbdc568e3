"""B-spline basis evaluation: igax (jit, steady state) against scipy's ``BSpline.design_matrix`` in the same
run.

Case: degree 3, an open uniform knot vector with 100 elements, ``npts`` random points (1e6 by default).

* ``values``: igax ``basis_functions(..., nderiv=0)`` against ``BSpline.design_matrix(x, t, 3)`` (values).
* ``values+d1``: igax ``basis_functions(..., nderiv=1)`` (values and first derivatives in one call) against
  scipy's values plus the first derivatives of the basis, computed as scipy does for ``BSpline.derivative``:
  ``N_i' = p (N_(i,p-1) / (t_(i+p) - t_i) - N_(i+1,p-1) / (t_(i+p+1) - t_(i+1)))``, i.e. the degree-(p-1)
  design matrix on the inner knots ``t[1:-1]`` times a sparse difference matrix.

Both sides produce the non-zero entries at every point (igax as dense ``(npts, p+1)`` blocks, scipy as CSR).
The igax timings exclude compilation (reported separately); medians over ``--repeat`` runs; ratio = baseline
time / igax time (bigger is better). The two results are compared to make sure the same thing is computed.

Usage: ``python benchmarks/bench_basis.py [--quick] [--npts 1000000] [--repeat 9]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np
import scipy.sparse as sp
from scipy.interpolate import BSpline

from igax.bases import basis_functions, open_uniform


def _medians(fns, reps: int) -> list[float]:
    """Median wall time of each function; the runs are interleaved so that load changes hit all alike."""
    ts = [[] for _ in fns]
    for _ in range(reps):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            ts[k].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in ts]


def scipy_derivative_matrix(t: np.ndarray, p: int, x: np.ndarray) -> sp.csr_matrix:
    """First derivatives of all degree-p B-splines at x (CSR, npts x n), from scipy's degree-(p-1) basis."""
    n = t.size - p - 1
    lower = BSpline.design_matrix(x, t[1:-1], p - 1)  # (npts, n - 1): N_(i+1, p-1), i = 0..n-2
    i = np.arange(n)
    left = np.where(i >= 1, p / np.where(t[i + p] > t[i], t[i + p] - t[i], 1.0), 0.0)  # coeff of N_(i,p-1)
    right = np.where(i <= n - 2, -p / np.where(t[i + p + 1] > t[i + 1], t[i + p + 1] - t[i + 1], 1.0), 0.0)
    # column i of the result: left[i] * lower[:, i - 1] + right[i] * lower[:, i]
    D = sp.diags([left[1:], right[:-1]], [1, 0], shape=(n - 1, n), format="csr")
    return (lower @ D).tocsr()


def main(argv=None) -> list[dict]:
    """Run the benchmark; returns the list of JSON records it printed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--npts", type=int, default=None, help="number of points (default 1e6; quick 1e5)")
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--elements", type=int, default=100)
    parser.add_argument(
        "--repeat", type=int, default=None, help="repetitions per timing (default 9; quick 5)"
    )
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # the benchmark is an application; float64 like scipy
    npts = args.npts or (100_000 if args.quick else 1_000_000)
    reps = args.repeat or (5 if args.quick else 9)
    p = args.degree
    t = open_uniform(p, args.elements)
    x = np.random.default_rng(0).uniform(t[0], t[-1], npts)
    xj = jax.device_put(x)

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cpus, jax {jax.__version__} "
        f"({jax.devices()[0].platform}), float64"
    )
    print(f"case: degree {p}, {args.elements} elements, {npts} points, median of {reps} runs", flush=True)

    records = []
    for nderiv, case in ((0, "values"), (1, "values+d1")):
        f = jax.jit(lambda xx, nd=nderiv: basis_functions(t, p, xx, nd))
        t0 = time.perf_counter()
        jax.block_until_ready(f(xj))
        compile_s = time.perf_counter() - t0
        if nderiv == 0:
            baseline = "scipy-design_matrix"
            base = lambda: BSpline.design_matrix(x, t, p)  # noqa: E731
        else:
            baseline = "scipy-design_matrix+derivative-basis"
            base = lambda: (BSpline.design_matrix(x, t, p), scipy_derivative_matrix(t, p, x))  # noqa: E731
        igax_s, base_s = _medians([lambda f=f: f(xj), base], reps)
        # same numbers?
        first, ders = f(xj)
        first, ders = np.asarray(first), np.asarray(ders)
        m = min(npts, 5000)  # check a dense slice of the scipy matrices
        rows = np.arange(m)[:, None]
        cols = first[:m, None] + np.arange(p + 1)
        refs = [BSpline.design_matrix(x[:m], t, p)]
        if nderiv:
            refs.append(scipy_derivative_matrix(t, p, x[:m]))
        err = max(
            float(np.abs(R.toarray()[rows, cols] - ders[k, :m]).max() / max(1.0, np.abs(ders[k]).max()))
            for k, R in enumerate(refs)
        )
        rec = {
            "bench": "basis",
            "case": f"p{p}-{npts}-{case}",
            "igax": "basis_functions-jit",
            "igax_s": round(igax_s, 5),
            "baseline": baseline,
            "baseline_s": round(base_s, 5),
            "ratio": round(base_s / igax_s, 2),
        }
        records.append(rec)
        print(
            f"{case:10s} igax {igax_s:8.4f} s (compile {compile_s:.2f} s)   {baseline} {base_s:8.4f} s   "
            f"ratio {base_s / igax_s:5.2f}   max rel. difference {err:.1e}"
        )
    for rec in records:
        print(json.dumps(rec))
    return records


if __name__ == "__main__":
    main()
