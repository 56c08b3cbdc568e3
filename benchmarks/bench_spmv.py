"""Sparse matrix products: igax's ``A @ x`` against SciPy's CSR matvec and igax's previous product, same run.

Cases (full size / ``--quick``), each a FEM/IGA sparsity pattern with random values:

* ``p1-2d``: P1 triangles on the unit square (``mesh.unit_square`` + ``CSRPattern.from_cells``), 1M DOFs,
  7 entries per interior row (quick: 10k);
* ``spline2-2d``: a degree-2 tensor-product spline space in 2D (the Kronecker product of two 1D patterns of
  bandwidth 2, as ``SplineSpace`` numbers its dofs), 25 entries per row, 250k and 1M DOFs (quick: 10k);
* ``q1-3d``: Q1 hexahedra with 64^3 nodes (262k DOFs), 27 entries per row (quick: 16^3);
* ``spline2-3d``: degree-2 splines in 3D, 125 entries per row, 64^3 = 262k DOFs (quick: 12^3).

Products timed (median over repetitions, a fresh ``x`` each call, after two warm-up calls):

* ``matvec``: ``y = A @ x``, x of shape (n,). igax: the default path (``native``: the CPU kernel of
  ``igax/_native/spmv_kernels.cc``), the pure-JAX kernel that other platforms and ``IGAX_NATIVE=0`` use
  (``pure``), and the previous implementation, a gather plus a ``segment_sum`` (``segment-sum``, kept as
  ``igax.solvers._spmv.segment_sum_product``). Baseline: ``scipy.sparse`` CSR ``A @ x``;
* ``rmatvec``: ``A.T @ x`` without forming the transpose (igax ``A.rmatvec``; SciPy ``A.T @ x``, its CSC
  product);
* ``matmat16``: ``A @ X`` with X of shape (n, 16) (also what ``jax.vmap`` over 16 vectors runs);
* ``grad``: ``jax.grad`` of ``w . (A x)`` with respect to the values and ``x`` (one forward, one transposed
  product, one sampled outer product), against the same gradient through the previous implementation.

Ratio = baseline time / igax time (bigger is better); the table also prints igax / SciPy (the issue's goal:
within 1.5x of SciPy at 1M DOFs on the CPU). ``memory`` lines give the CSR arrays' size and what the product
adds per pattern (the native and GPU paths: nothing; the pure kernel: row starts and lengths).

Measured on the development machine (2 shared cores, load ~8 from other jobs, float64, medians in ms; igax
native / SciPy / previous igax product):

=================  ===================  ===================  ===================  ==================
case               matvec               rmatvec (A.T x)      matmat16             grad (old / new)
=================  ===================  ===================  ===================  ==================
p1-2d 1M           14.0 / 14.8 / 93.7   20.4 / 16.6 / 100    215 / 102 / 1260     264 / 99
spline2-2d 250k    9.1 / 7.9 / 80.0     8.4 / 8.6 / 121      36 / 42 / 961        196 / 80
spline2-2d 1M      39.9 / 29.4 / 420    40.5 / 39.4 / 508    311 / 259 / -        1028 / 294
q1-3d 262k         12.6 / 13.4 / 144    12.8 / 13.9 / 172    56 / 82 / 1208       261 / 89
spline2-3d 262k    58.2 / 49.6 / 526    59.7 / 45.3 / 1064   250 / 258 / -        1200 / 314
=================  ===================  ===================  ===================  ==================

igax / SciPy is 0.9-1.4 for every product (goal: within 1.5x at 1M DOFs); the previous product was 6-23x
slower than SciPy. The per-call ``matmat16`` times of the 1M-row cases include page faults on the 128 MB
output, which XLA allocates afresh for every call (above glibc's mmap threshold): inside a jitted loop, or
with ``MALLOC_MMAP_THRESHOLD_=4000000000``, the same product took 45 ms against SciPy's 72 ms (P1, 1M).
The pure-JAX kernel (``pure``, for platforms without the native kernel or cuSPARSE) took 1.4-2.7x SciPy's
time up to 27 entries per row (spline2-2d 1M: 83 against 41 ms) and 8.5x at 125 (its loop over blocks of
slots: 335 against 40 ms).

Usage: ``python benchmarks/bench_spmv.py [--quick] [--cases p1-2d q1-3d] [--reps 15] [--float32]``
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

from igax import _native
from igax.fem import mesh
from igax.solvers import CSRPattern, SparseMatrix, _spmv

CASES = ("p1-2d", "spline2-2d", "q1-3d", "spline2-3d")


def _band(m: int, b: int) -> sp.csr_matrix:
    return sp.diags([np.ones(m - abs(k)) for k in range(-b, b + 1)], list(range(-b, b + 1)), (m, m), "csr")


def _kron(*factors) -> sp.csr_matrix:
    out = factors[0]
    for f in factors[1:]:
        out = sp.kron(out, f, format="csr")
    return out


def patterns(case: str, quick: bool) -> list[tuple[str, sp.csr_matrix]]:
    """``[(name, scipy CSR matrix with random values)]`` for one case."""
    if case == "p1-2d":
        mats = []
        for m in [99] if quick else [999]:
            cells = np.asarray(mesh.unit_square(m).cells)
            pat, _ = CSRPattern.from_cells(cells, int(cells.max()) + 1)
            mats.append((pat.indptr, pat.indices, pat.shape))
        out = [sp.csr_matrix((np.ones(i.shape[0]), i, p), shape=s) for p, i, s in mats]
    elif case == "spline2-2d":
        out = [_kron(_band(m, 2), _band(m, 2)) for m in ([100] if quick else [500, 1000])]
    elif case == "q1-3d":
        m = 16 if quick else 64
        out = [_kron(_band(m, 1), _band(m, 1), _band(m, 1))]
    elif case == "spline2-3d":
        m = 12 if quick else 64
        out = [_kron(_band(m, 2), _band(m, 2), _band(m, 2))]
    else:
        raise ValueError(f"unknown case {case!r}; choose from {CASES}")
    rng = np.random.default_rng(0)
    named = []
    for A in out:
        A.sort_indices()
        A.data = rng.normal(size=A.nnz)
        n = A.shape[0]
        named.append((f"{case}-{n // 1000}k" if n < 1_000_000 else f"{case}-{n / 1e6:.1f}M", A))
    return named


def _time(fn, inputs, reps: int) -> float:
    """Median wall time of ``fn(inputs[i])`` with a different input each call (two untimed calls first)."""
    jax.block_until_ready(fn(inputs[0]))
    jax.block_until_ready(fn(inputs[1 % len(inputs)]))
    ts = []
    for r in range(reps):
        arg = inputs[r % len(inputs)]
        t = time.perf_counter()
        jax.block_until_ready(fn(arg))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _emit(rows, case, op, igax, igax_s, baseline, baseline_s, **extra):
    rec = {
        "bench": "spmv",
        "case": case,
        "op": op,
        "igax": igax,
        "igax_s": igax_s,
        "baseline": baseline,
        "baseline_s": baseline_s,
        "ratio": baseline_s / igax_s,
        **extra,
    }
    rows.append(rec)
    print(json.dumps(rec), flush=True)


def run_case(name: str, M: sp.csr_matrix, reps: int, dtype, rows: list[dict]) -> None:
    n, nnz = M.shape[0], M.nnz
    M = M.astype(dtype)
    A = SparseMatrix.from_scipy(M, symmetric=False, dtype=dtype)
    p = A.pattern
    print(
        f"\n== {name}: {n} rows, {nnz} nonzeros ({nnz / n:.1f} per row), {np.dtype(dtype).name} ==",
        flush=True,
    )
    csr_bytes = M.data.nbytes + M.indices.nbytes + M.indptr.nbytes
    plan = _spmv._plan(p, False)
    pure_bytes = plan.ptr.nbytes + plan.lens.nbytes + plan.tail_slots.nbytes + plan.tail_rows.nbytes
    print(
        f"  memory: CSR arrays {csr_bytes / 2**20:.0f} MiB; the product adds nothing (native, GPU) or "
        f"{pure_bytes / 2**20:.1f} MiB (pure kernel: row starts and lengths, width {plan.width})"
    )
    rng = np.random.default_rng(1)
    nin = 4
    xs_np = [rng.normal(size=n).astype(dtype) for _ in range(nin)]
    xs = [jnp.asarray(x) for x in xs_np]
    Xs_np = [rng.normal(size=(n, 16)).astype(dtype) for _ in range(2)]
    Xs = [jnp.asarray(X) for X in Xs_np]
    v = A.values

    new = jax.jit(lambda v, x: A.with_values(v) @ x)
    pure = jax.jit(lambda v, x: _spmv._pure(v, x[:, None], pattern=p, transpose=False)[:, 0])
    old = jax.jit(lambda v, x: _spmv.segment_sum_product(v, p, x))
    t0 = time.perf_counter()
    jax.block_until_ready(new(v, xs[0]))
    first = time.perf_counter() - t0

    t_sc = _time(lambda x: M @ x, xs_np, reps)
    t_new = _time(lambda x: new(v, x), xs, reps)
    t_pure = _time(lambda x: pure(v, x), xs, reps)
    t_old = _time(lambda x: old(v, x), xs, reps)
    label = "native" if _native.available() and jax.default_backend() == "cpu" else "default"
    print(
        f"  matvec   scipy {t_sc * 1e3:8.2f} ms | igax {label} {t_new * 1e3:8.2f} ms  igax/scipy "
        f"{t_new / t_sc:5.2f} | pure {t_pure * 1e3:8.2f} ms ({t_pure / t_sc:4.2f}) | segment-sum (old) "
        f"{t_old * 1e3:8.2f} ms ({t_old / t_sc:4.2f}) | first call {first:.2f} s",
        flush=True,
    )
    _emit(rows, name, "matvec", label, t_new, "scipy-csr", t_sc, n=n, nnz=nnz, first_call_s=first)
    _emit(rows, name, "matvec", "pure", t_pure, "scipy-csr", t_sc, n=n, nnz=nnz)
    _emit(rows, name, "matvec", "segment-sum (old)", t_old, "scipy-csr", t_sc, n=n, nnz=nnz)

    Mt = M.T  # SciPy's transposed product is its CSC matvec (no conversion)
    rnew = jax.jit(lambda v, x: A.with_values(v).rmatvec(x))
    pt, perm = p.transpose()  # before: A.T permuted the values into the transposed pattern
    rold = jax.jit(lambda v, x: _spmv.segment_sum_product(v[perm], pt, x))
    t_sc = _time(lambda x: Mt @ x, xs_np, reps)
    t_new = _time(lambda x: rnew(v, x), xs, reps)
    t_old = _time(lambda x: rold(v, x), xs, reps)
    print(
        f"  rmatvec  scipy {t_sc * 1e3:8.2f} ms | igax {label} {t_new * 1e3:8.2f} ms  igax/scipy "
        f"{t_new / t_sc:5.2f} | old (A.T then segment-sum) {t_old * 1e3:8.2f} ms ({t_old / t_sc:4.2f})",
        flush=True,
    )
    _emit(rows, name, "rmatvec", label, t_new, "scipy-csc", t_sc, n=n, nnz=nnz)
    _emit(rows, name, "rmatvec", "segment-sum (old)", t_old, "scipy-csc", t_sc, n=n, nnz=nnz)

    mreps = max(3, reps // 3)
    t_sc = _time(lambda X: M @ X, Xs_np, mreps)
    t_new = _time(lambda X: new(v, X), Xs, mreps)
    # the previous product materialises an (nnz, 16) temporary: skipped where that exceeds 2 GB
    big = nnz * 16 * np.dtype(dtype).itemsize > 2 * 2**30
    t_old = float("nan") if big else _time(lambda X: old(v, X), Xs, mreps)
    print(
        f"  matmat16 scipy {t_sc * 1e3:8.2f} ms | igax {label} {t_new * 1e3:8.2f} ms  igax/scipy "
        f"{t_new / t_sc:5.2f} | segment-sum (old) "
        + ("skipped (a 2 GB temporary)" if big else f"{t_old * 1e3:8.2f} ms ({t_old / t_sc:4.2f})"),
        flush=True,
    )
    _emit(rows, name, "matmat16", label, t_new, "scipy-csr", t_sc, n=n, nnz=nnz)
    if not big:
        _emit(rows, name, "matmat16", "segment-sum (old)", t_old, "scipy-csr", t_sc, n=n, nnz=nnz)

    # w is an argument: a constant cotangent would let XLA fold the old path's gathers at compile time
    w = jnp.asarray(rng.normal(size=n).astype(dtype))
    gnew = jax.jit(jax.grad(lambda v, x, w: jnp.vdot(w, A.with_values(v) @ x), (0, 1)))
    gold = jax.jit(jax.grad(lambda v, x, w: jnp.vdot(w, _spmv.segment_sum_product(v, p, x)), (0, 1)))
    t_new = _time(lambda x: gnew(v, x, w), xs, mreps)
    t_old = _time(lambda x: gold(v, x, w), xs, mreps)
    print(
        f"  grad     igax {label} {t_new * 1e3:8.2f} ms | segment-sum (old) {t_old * 1e3:8.2f} ms "
        f"(new is {t_old / t_new:4.1f}x faster)",
        flush=True,
    )
    _emit(rows, name, "grad", label, t_new, "segment-sum (old)", t_old, n=n, nnz=nnz)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (~10k rows), seconds")
    p.add_argument("--cases", nargs="*", choices=CASES, help=f"default: all of {CASES}")
    p.add_argument("--reps", type=int, default=None, help="calls per timing (median); default 15 (quick 9)")
    p.add_argument("--float32", action="store_true", help="values and vectors in float32")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    reps = args.reps or (9 if args.quick else 15)
    dtype = np.float32 if args.float32 else np.float64
    print(
        f"bench_spmv: platform {platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
        f"jax {jax.__version__} ({jax.default_backend()}), native kernels: "
        f"{_native.available() or _native.reason()}"
    )
    rows: list[dict] = []
    for case in args.cases or CASES:
        for name, M in patterns(case, args.quick):
            run_case(name, M, reps, dtype, rows)
    return rows


if __name__ == "__main__":
    main()
