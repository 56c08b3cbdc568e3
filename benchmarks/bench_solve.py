"""Sparse solves: forward and gradient time of igax backends against scipy and jax.experimental, same run.

Case: 2D Poisson, 5-point Laplacian on an m x m grid (m^2 unknowns, SPD), right-hand side of ones. For each
igax backend we time

* ``forward``: ``x = solve(A, b)`` (jitted) with a fresh numeric factorisation (the factor cache is cleared
  before every repetition; PARDISO keeps its symbolic analysis of the pattern, as in any loop where the values
  change and the mesh does not; a cold call, analysis included, is reported as ``pardiso-cold``);
* ``grad``: ``jax.grad`` of ``sum(x**2)`` with respect to the matrix values and ``b`` (factorisation, forward
  and one transposed solve);
* ``vmap16``: ``jax.vmap`` over 16 right-hand sides against 16 separate solves (each with its own
  factorisation, as a loop of independent solver calls does).

Baselines in the same process: ``scipy.sparse.linalg.splu`` (factor + solve) and
``jax.experimental.sparse.linalg.spsolve`` (forward and grad; on CPU it calls scipy's spsolve, and its
gradient factorises three times). Times are medians; ratio = baseline time / igax time (bigger is better).

Usage: ``python benchmarks/bench_solve.py [--quick] [--sizes 400 1000] [--methods pardiso superlu]``
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
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from igax import solvers
from igax.solvers.backends import pardiso as _pardiso_backend

SPSOLVE_MAX = 200_000  # jax spsolve (scipy spsolve, three factorisations per gradient) beyond this: skipped
CG_MAX = 200_000  # Jacobi-CG needs O(m) iterations: skipped beyond this


def poisson2d(m: int) -> sp.csr_matrix:
    L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (m, m))
    eye = sp.eye(m)
    return (sp.kron(L, eye) + sp.kron(eye, L)).tocsr()


class Timing(float):
    """A median wall time (the float) that also remembers the fastest run in ``best``: on a shared machine the
    minimum is the better estimate of the uncontended time, the median the honest typical one."""

    best: float


def _median(fn, reps, setup=None) -> Timing:
    ts = []
    for _ in range(reps):
        if setup is not None:
            setup()
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    out = Timing(np.median(ts))
    out.best = float(min(ts))
    return out


def _fresh():
    solvers.clear_cache()


def _case_name(n):
    return f"poisson2d-{n // 1000}k" if n < 1_000_000 else f"poisson2d-{n / 1e6:.1f}M"


def _emit(rows, case, igax, igax_s, baseline, baseline_s):
    rec = {
        "bench": "solve",
        "case": case,
        "igax": igax,
        "igax_s": round(igax_s, 5),
        "baseline": baseline,
        "baseline_s": round(baseline_s, 5),
        "ratio": round(baseline_s / igax_s, 3),
    }
    rows.append(rec)
    print(json.dumps(rec), flush=True)


def bench_method(method, K, A, m, reps, rows, case, t_splu, t_sps, t_sps_grad) -> float:
    """Time one igax backend on one matrix; returns the forward time."""
    n = K.shape[0]
    vals, b, bn = A.values, jnp.ones(n), np.ones(n)
    opts = {"rtol": 1e-10} if method in ("cg", "amg-cg") else {}
    if method == "cg":
        opts["maxiter"] = 20 * m

    def fwd_fn(v, b):
        return solvers.solve(A.with_values(v), b, method=method, **opts)

    fwd = jax.jit(fwd_fn)
    grad = jax.jit(jax.grad(lambda v, b: jnp.sum(fwd_fn(v, b) ** 2), argnums=(0, 1)))
    # values as an argument, not a closed-over constant: XLA compiles large constants slowly
    vm = jax.jit(jax.vmap(fwd_fn, in_axes=(None, 0)))
    t_first = None
    _fresh()
    jax.block_until_ready(fwd(vals, b))  # compile
    if method == "pardiso":
        # a cold call: symbolic analysis (ordering) + factorisation + solve, as for a one-off solve
        _pardiso_backend._plans.clear()
        _fresh()
        t_first = _median(lambda: fwd(vals, b), 1)
    t_fwd = _median(lambda: fwd(vals, b), reps, _fresh)
    _fresh()
    jax.block_until_ready(grad(vals, b))
    solvers.solver_stats.reset()
    t_grad = _median(lambda: grad(vals, b), reps, _fresh)
    nfact = solvers.solver_stats.factorizations / reps
    x = np.asarray(fwd(vals, b))
    resid = np.linalg.norm(K @ x - bn) / np.linalg.norm(bn)
    line = f"  igax {method:15s}  forward {t_fwd:8.3f} s (min {t_fwd.best:.3f})   grad {t_grad:8.3f} s"
    line += (
        f" (min {t_grad.best:.3f})   grad/fwd {t_grad / t_fwd:5.2f} (minima: {t_grad.best / t_fwd.best:.2f})"
    )
    line += f"   factorisations/grad {nfact:.0f}   residual {resid:.1e}"
    if t_first is not None:
        line += f"\n  igax {method + '-cold':15s}  forward {t_first:8.3f} s (symbolic analysis included)"
    print(line, flush=True)
    _emit(rows, case, method, t_fwd, "scipy-splu", t_splu)
    if t_first is not None:
        _emit(rows, case, method + "-cold", t_first, "scipy-splu", t_splu)
    _emit(rows, case + "-grad/forward", method + "-grad", t_grad, method + "-forward", t_fwd)
    if t_sps is not None:
        _emit(rows, case, method, t_fwd, "jax-spsolve", t_sps)
        _emit(rows, case + "-grad", method, t_grad, "jax-spsolve-grad", t_sps_grad)
    if (method == "pardiso" and n <= 200_000) or (method == "superlu" and n <= 20_000):
        B = jnp.asarray(np.random.default_rng(0).normal(size=(16, n)))
        _fresh()
        jax.block_until_ready(vm(vals, B))
        t_vm = _median(lambda: vm(vals, B), reps, _fresh)

        def separate():
            out = []
            for i in range(16):
                _fresh()
                out.append(fwd(vals, B[i]))
            return out

        t_sep = _median(separate, 1)
        t_sep_c = _median(lambda: [fwd(vals, B[i]) for i in range(16)], 1, _fresh)
        print(
            f"  igax {method:15s}  vmap16  {t_vm:8.3f} s (min {t_vm.best:.3f})   "
            f"16 separate solves {t_sep:8.3f} s "
            f"(reusing the cached factorisation: {t_sep_c:.3f} s)",
            flush=True,
        )
        _emit(rows, case + "-16rhs", method + "-vmap", t_vm, "16-separate-solves", t_sep)
        _emit(rows, case + "-16rhs", method + "-vmap", t_vm, "16-separate-solves-cached", t_sep_c)
    return t_fwd


def run_size(m: int, methods, reps: int, rows: list) -> None:
    K = poisson2d(m)
    n = K.shape[0]
    case = _case_name(n)
    print(f"\n== {case}: {n} unknowns, {K.nnz} nonzeros ==", flush=True)
    A = solvers.SparseMatrix.from_scipy(K, positive_definite=True)
    b = jnp.ones(n)
    bn = np.ones(n)
    vals = A.values
    timings: dict[str, float] = {}

    # baselines -------------------------------------------------------------------------------------------
    big = n > 500_000
    t_splu = _median(lambda: spla.splu(K.tocsc()).solve(bn), 1 if big else reps)
    print(f"  scipy splu            forward {t_splu:8.3f} s (min {t_splu.best:.3f})", flush=True)
    t_sps = t_sps_grad = None
    if n <= SPSOLVE_MAX:
        from jax.experimental.sparse.linalg import spsolve

        idx, ptr = jnp.asarray(K.indices), jnp.asarray(K.indptr)  # arguments, not constants to fold
        f_sps = jax.jit(lambda v, i, p, b: spsolve(v, i, p, b))
        g_sps = jax.jit(jax.grad(lambda v, i, p, b: jnp.sum(spsolve(v, i, p, b) ** 2), argnums=(0, 3)))
        jax.block_until_ready(f_sps(vals, idx, ptr, b))
        t_sps = _median(lambda: f_sps(vals, idx, ptr, b), reps)
        jax.block_until_ready(g_sps(vals, idx, ptr, b))
        t_sps_grad = _median(lambda: g_sps(vals, idx, ptr, b), reps)
        print(f"  jax spsolve           forward {t_sps:8.3f} s   grad {t_sps_grad:8.3f} s", flush=True)
    else:
        print(f"  jax spsolve           skipped above {SPSOLVE_MAX} unknowns (3 factorisations per grad)")

    for method in methods:
        if method == "cg" and n > CG_MAX:
            print(f"  {method:20s}  skipped above {CG_MAX} unknowns (Jacobi-CG needs O(sqrt(n)) iterations)")
            continue
        timings[method] = bench_method(method, K, A, m, reps, rows, case, t_splu, t_sps, t_sps_grad)
    if "pardiso" in timings:
        print(f"  default backend (pardiso) vs splu: {t_splu / timings['pardiso']:.1f}x")


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one small case (~10k unknowns), seconds")
    p.add_argument("--sizes", type=int, nargs="*", help="grid sizes m (m^2 unknowns); default 400 and 1000")
    p.add_argument("--methods", nargs="*", help="igax backends; default: all available SPD backends")
    p.add_argument("--reps", type=int, default=None, help="repetitions per timing (median)")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    sizes = args.sizes or ([100] if args.quick else [400, 1000])
    methods = args.methods or [m for m in solvers.available_methods() if m not in ("bicgstab", "gmres")]
    reps = args.reps or (5 if args.quick else 3)
    print(
        f"bench_solve: platform {platform.platform()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
        f"({jax.default_backend()}), methods {methods}, sizes {[m * m for m in sizes]}"
    )
    rows: list[dict] = []
    for m in sizes:
        run_size(m, methods, reps, rows)
    return rows


if __name__ == "__main__":
    main()
