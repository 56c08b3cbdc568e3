"""Eigenvalues: ``solvers.eigsh`` against ``scipy.sparse.linalg.eigsh`` (shift-invert) on the same matrices,
and the cost of its gradient relative to the solve.

Case: the Dirichlet Laplacian of the rectangle [0, 1] x [0, 0.8], degree-2 splines on e x e elements (e^2
interior dofs: 10k with ``--quick``, 100k by default), stiffness K and mass M assembled by igax and restricted
to the interior dofs. The 20 lowest modes of ``K phi = lambda M phi`` are computed by

* ``igax-arpack``: ``solvers.eigsh(K, M, k=20)`` (ARPACK in shift-invert mode with sigma = 0 on the host, the
  shifted matrix factorised by igax's default backend: PARDISO where installed), jitted; the factor cache is
  cleared before every repetition so each one factorises afresh, as SciPy does;
* ``scipy``: ``scipy.sparse.linalg.eigsh(K, k=20, M=M, sigma=0)`` (ARPACK, SuperLU factorisation), the
  baseline, with the same starting vector;
* ``igax-lobpcg`` (``--quick`` size only, or ``--lobpcg``): the device method, Jacobi-preconditioned LOBPCG in
  JAX, here on the CPU (it is meant for GPUs, where ARPACK does not run).

Gradient: the backward pass (``jax.vjp``'s pullback) of ``sum_i c_i lambda_i`` with respect to K's and M's
values against the forward solve: the eigenvalue derivative is ``phi^T (dK - lambda dM) phi`` (no solve), so
the goal is <= 0.2x the solve. The gradient of one eigenvector (a CG solve per mode, preconditioned by the
forward factorisation) is reported beside it.

Times are medians (and the fastest run, the better estimate on a loaded machine); ratio = baseline / igax.

Usage: ``python benchmarks/bench_eigen.py [--quick] [--elements 316] [--k 20] [--repeat 3] [--lobpcg]``
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
import scipy.sparse.linalg as spla

from igax import fem, solvers
from igax.fem import library


def problem(elements: int):
    # A 1 x 0.8 rectangle: its low eigenvalues are simple (the square's come in pairs, and a gradient of
    # eigenvalues weighted unequally within a pair is undefined: RepeatedEigenvalueError).
    V = fem.SplineSpace(fem.geometry.rectangle((0.0, 0.0), (1.0, 0.8)).refine(degree=2, elements=elements))
    free = np.setdiff1d(np.arange(V.ndofs), fem.DirichletBC(V, None, 0.0).dofs)
    K = solvers.submatrix(fem.assemble(library.laplace, V), free)
    M = solvers.submatrix(fem.assemble(library.mass, V), free)
    return K, M


def timed(fn, repeat: int, setup=None):
    """(median, best) wall time of ``fn()`` over ``repeat`` runs after one untimed run."""
    if setup is not None:
        setup()
    jax.block_until_ready(fn())
    ts = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), float(np.min(ts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10k dofs instead of 100k")
    ap.add_argument("--elements", type=int, default=None)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lobpcg", action="store_true", help="also time LOBPCG at the full size")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    e = args.elements or (100 if args.quick else 316)
    k = args.k
    t0 = time.perf_counter()
    K, M = problem(e)
    n = K.shape[0]
    Ks, Ms = K.to_scipy(), M.to_scipy()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, jax "
        f"{jax.__version__} on {jax.default_backend()}; factor backend {solvers.default_method()}"
    )
    print(
        f"case: degree-2 spline Laplacian, {e} x {e} elements, n = {n} dofs, nnz = {K.nnz}, k = {k} "
        f"(assembled in {time.perf_counter() - t0:.1f} s)"
    )
    rows = []

    def record(case, name, t, base, base_t, extra=None):
        line = {
            "bench": "eigen",
            "case": case,
            "igax": name,
            "igax_s": round(t[0], 4),
            "igax_best_s": round(t[1], 4),
        }
        if base is not None:
            line.update(
                {"baseline": base, "baseline_s": round(base_t[0], 4), "ratio": round(base_t[0] / t[0], 3)}
            )
        line.update(extra or {})
        rows.append(line)
        print(json.dumps(line))

    v0 = np.random.default_rng(12345).standard_normal(n) + 1.0  # igax's ARPACK start vector (see _arpack)
    base = timed(lambda: spla.eigsh(Ks, k=k, M=Ms, sigma=0.0, v0=v0)[0], args.repeat)
    ref = np.sort(spla.eigsh(Ks, k=k, M=Ms, sigma=0.0, v0=v0)[0])
    case = f"laplace-spline2-{n // 1000}k-k{k}"

    fwd = jax.jit(lambda a, m: solvers.eigsh(K.with_values(a), M.with_values(m), k=k)[0])
    t_fwd = timed(lambda: fwd(K.values, M.values), args.repeat, setup=solvers.clear_cache)
    err = float(np.max(np.abs(np.asarray(fwd(K.values, M.values)) - ref) / ref))
    record(case, "arpack", t_fwd, "scipy-eigsh-shift-invert", base, {"max_rel_diff": err})

    # The backward pass alone (jax.vjp: the forward runs once, its pullback is timed), so that the cost of the
    # gradient is not the small difference of two noisy totals.
    c = jnp.linspace(1.0, 2.0, k)
    _, pull = jax.vjp(fwd, K.values, M.values)
    t_bwd = timed(lambda: pull(c), args.repeat)
    grad_cost = t_bwd[0] / t_fwd[0]
    record(
        case,
        "arpack-eigenvalue-grad (backward pass)",
        t_bwd,
        None,
        None,
        {"gradient_over_solve": round(grad_cost, 4)},
    )

    vec = jax.jit(lambda a: solvers.eigsh(K.with_values(a), M, k=k)[1][:, 0])
    _, pull_v = jax.vjp(vec, K.values)
    ct = jnp.asarray(np.cos(np.arange(n) * 0.01))
    t_bwdv = timed(lambda: pull_v(ct), args.repeat)
    record(
        case,
        "arpack-eigenvector-grad (backward pass)",
        t_bwdv,
        None,
        None,
        {"gradient_over_solve": round(t_bwdv[0] / t_fwd[0], 4)},
    )

    if args.quick or args.lobpcg:
        lob = jax.jit(
            lambda a, m: solvers.eigen_solve(
                K.with_values(a), M.with_values(m), k=k, method="lobpcg", maxiter=5000
            )
        )
        r = lob(K.values, M.values)
        t_lob = timed(lambda: lob(K.values, M.values).values, max(1, args.repeat // 2))
        err = float(np.max(np.abs(np.asarray(r.values) - ref) / ref))
        record(
            case,
            "lobpcg-jacobi",
            t_lob,
            "scipy-eigsh-shift-invert",
            base,
            {"iterations": int(r.iterations), "max_rel_diff": err},
        )

    print()
    print(f"{'method':40s} {'median s':>10s} {'best s':>9s} {'ratio vs scipy':>15s}")
    print(f"{'scipy eigsh (shift-invert)':40s} {base[0]:10.3f} {base[1]:9.3f} {'1.00':>15s}")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        print(f"{r['igax']:40s} {r['igax_s']:10.3f} {r['igax_best_s']:9.3f} {ratio:>15s}")
    print(f"gradient of the eigenvalues: {grad_cost:.3f} x the solve (goal <= 0.2)")
    return rows


if __name__ == "__main__":
    main()
