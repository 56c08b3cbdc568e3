"""Saddle-point solves: MINRES / block-GMRES with block preconditioners against scipy's spsolve and PARDISO.

Case: Stokes flow on the unit square, Taylor-Hood P2/P1 assembled by scikit-fem (``refined(k)`` meshes,
no-slip on three sides, natural outflow at x = 1), ``K = [[A, B^T], [B, 0]]`` symmetric indefinite, velocity
unknowns first. The Schur approximation is the pressure mass matrix (viscosity 1), inverted by its diagonal.

Timed (medians of jitted solves, the matrix an argument of the program, after compile and warm-up):

* ``minres-amg``: MINRES, block-diagonal preconditioner, one algebraic V-cycle for the velocity block;
* ``minres-lu``: the same with an exact SuperLU factorisation of the velocity block (the textbook
  mesh-independent preconditioner: its iteration count levels off);
* ``block-gmres``: GMRES(30) with the block-triangular preconditioner (V-cycle);
* ``pardiso``: igax's direct path for a symmetric indefinite matrix (Bunch-Kaufman, ``mtype=-2``);
* the baseline ``scipy.sparse.linalg.spsolve`` (SuperLU, in the same process).

ratio = spsolve time / method time (bigger is better for igax). Iteration counts are Krylov matrix products.

Usage: ``python benchmarks/bench_saddle.py [--quick] [--refine 4 5 6] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from igax import solvers
from igax.solvers import SaddlePoint, SparseMatrix

try:
    from _timing import median_time
except ImportError:  # run from the repository root
    from benchmarks._timing import median_time


def stokes(refine: int):
    """``(K, b, n_velocity, Mp)`` of the Stokes problem on ``MeshTri().refined(refine)`` (scipy)."""
    import skfem
    from skfem.helpers import ddot, div, dot, grad

    @skfem.BilinearForm
    def vector_laplace(u, v, w):
        return ddot(grad(u), grad(v))

    @skfem.BilinearForm
    def divergence(u, q, w):
        return -div(u) * q

    @skfem.BilinearForm
    def mass(p, q, w):
        return p * q

    @skfem.LinearForm
    def force(v, w):
        x, y = w.x
        return dot(np.stack([np.sin(np.pi * x) * y, np.cos(np.pi * y) * x + 1.0]), v)

    m = skfem.MeshTri().refined(refine)
    ub = skfem.Basis(m, skfem.ElementVector(skfem.ElementTriP2()))
    pb = ub.with_element(skfem.ElementTriP1())
    A, B, Mp = skfem.asm(vector_laplace, ub), skfem.asm(divergence, ub, pb), skfem.asm(mass, pb)
    nu_, np_ = A.shape[0], Mp.shape[0]
    walls = m.facets_satisfying(lambda x: x[0] < 1.0 - 1e-12, boundaries_only=True)
    keep = np.setdiff1d(np.arange(nu_ + np_), ub.get_dofs(walls).all())
    K = sp.bmat([[A, B.T], [B, None]]).tocsr()[keep][:, keep]
    K.sort_indices()
    b = np.concatenate([skfem.asm(force, ub), np.zeros(np_)])[keep]
    pk = keep[keep >= nu_] - nu_
    return K, b, int(np.sum(keep < nu_)), Mp[pk][:, pk].tocsr()


def bench(refine: int, repeat: int) -> list[dict]:
    K, b, n_u, Mp = stokes(refine)
    Ks = SparseMatrix.from_scipy(K, symmetric=True)
    bj = jnp.asarray(b)
    Mps = SparseMatrix.from_scipy(Mp, positive_definite=True)
    t_sp = median_time(lambda: spla.spsolve(K.tocsc(), b), repeat=repeat)
    x_ref = spla.spsolve(K.tocsc(), b)
    rows = [dict(refine=refine, n=K.shape[0], method="scipy spsolve", its=0, time=t_sp, err=0.0)]
    amg = SaddlePoint(n_u, schur=Mps)
    lu = SaddlePoint(n_u, schur=Mps, primal="superlu")
    cases = [
        ("minres-amg", "minres", dict(saddle=amg)),
        ("minres-lu", "minres", dict(saddle=lu)),
        ("block-gmres", "block-gmres", dict(saddle=amg)),
    ]
    if "pardiso" in solvers.available_methods():
        cases.append(("pardiso", "pardiso", {}))
    for name, method, kw in cases:
        fn = jax.jit(lambda K, b, method=method, kw=kw: solvers.linear_solve(K, b, method=method, **kw))
        t0 = time.perf_counter()
        r = jax.block_until_ready(fn(Ks, bj))
        first = time.perf_counter() - t0
        t = median_time(fn, Ks, bj, repeat=repeat)
        err = float(np.linalg.norm(np.asarray(r.value) - x_ref) / np.linalg.norm(x_ref))
        rows.append(
            dict(
                refine=refine, n=K.shape[0], method=name, its=int(r.iterations), time=t, err=err, first=first
            )
        )
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes only (refine 3 4)")
    p.add_argument("--refine", type=int, nargs="+", default=None, help="mesh refinements (default 4 5 6)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # a benchmark driver, not the library: float64 solves
    refines = args.refine or ([3, 4] if args.quick else [4, 5, 6])
    print(
        f"bench_saddle: platform {platform.platform()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
        f"({jax.default_backend()}), Stokes P2/P1 (scikit-fem), medians of {args.repeat}"
    )
    head = ("refine", "n", "method", "its", "time", "ratio", "rel.err", "1st call")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (6, 8, 14, 5, 10, 7, 9, 9), strict=True)))
    out = []
    for k in refines:
        rows = bench(k, args.repeat)
        t_sp = rows[0]["time"]
        for r in rows:
            r["ratio"] = t_sp / r["time"]
            first = f"{r['first']:8.2f}s" if "first" in r else ""
            print(
                f"{r['refine']:>6} {r['n']:>8} {r['method']:>14} {r['its']:>5} {r['time']:>9.4f}s "
                f"{r['ratio']:>7.2f} {r['err']:>9.1e} {first}"
            )
        out += rows
    return out


if __name__ == "__main__":
    main()
