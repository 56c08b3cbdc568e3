"""PARDISO's matrix types and orderings on the stiffness matrices of the 1M-DOF programs of ``bench_gradient
--large``: analysis and factorisation times (wall and CPU), fill and memory, interleaved in one process.

Configurations: Bunch-Kaufman (``mtype=-2``, with the scaling and matching igax used for every symmetric
matrix), Cholesky (``mtype=2``, what igax tries first after ``solvers.set_cholesky_first(True)``), and
Cholesky with parallel METIS (``iparm[1] = 3``) or minimum degree (``iparm[1] = 0``). The baseline is the
first row of each matrix.

Usage: ``python benchmarks/bench_pardiso.py [--quick] [--cases p1 spline2] [--reps 2]``
(or ``igax bench pardiso``; run the full sizes under ``flock /tmp/large.lock``: about 2 GB resident).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

CONFIGS = {  # name: (kind, iparm[1])
    "bunch-kaufman": ("sym", 2),
    "cholesky": ("spd", 2),
    "cholesky, parallel METIS": ("spd", 3),
    "cholesky, minimum degree": ("spd", 0),
}


def matrix(case: str, n: int):
    """The condensed stiffness matrix of a case: (pattern, values) on the host."""
    from igax import fem
    from igax.fem import library, mesh

    if case == "p1":
        V = fem.LagrangeSpace(mesh.unit_square(n), degree=1)
    else:
        V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(n, n)))
    A = fem.assemble(library.diffusion, V, kappa=1.0)
    b = fem.assemble(library.source, V, f=1.0)
    Ac, _ = fem.DirichletBC(V, None, 0.0).condense(A, b)
    return A.pattern, np.asarray(Ac.values)


def measure(pattern, values, kind: str, ordering: int, factor: bool) -> dict:
    from igax.solvers import _pardiso

    call = _pardiso.PardisoPlan._call

    def patched(self, phase, mnum, data, B):
        if phase == 11:
            self.iparm[1] = ordering
        return call(self, phase, mnum, data, B)

    _pardiso.PardisoPlan._call = patched
    try:
        c = time.process_time()
        plan = _pardiso.PardisoPlan(pattern, kind, values if kind != "spd" else None)
        out = {"analysis_s": plan.analysis_s, "analysis_cpu_s": time.process_time() - c}
        if factor:
            c = time.process_time()
            f = plan.factor(values)
            out.update(factor_s=plan.factor_s, factor_cpu_s=time.process_time() - c)
            b = np.ones((pattern.shape[0], 1))
            t = time.perf_counter()
            f.solve(b, False)
            out["solve_s"] = time.perf_counter() - t
            f.free()
        out.update(fill=int(plan.iparm[17]), pardiso_gb=plan.memory_kb() / 2**20)
        plan.destroy()
        plan.destroy = lambda: None  # (destroyed: __del__ must not call PARDISO again)
    finally:
        _pardiso.PardisoPlan._call = call
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1/16 of the sizes")
    ap.add_argument("--cases", nargs="+", default=["p1", "spline2"])
    ap.add_argument("--reps", type=int, default=2, help="interleaved rounds (analysis medians)")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    sizes = {"p1": 249 if args.quick else 999, "spline2": 250 if args.quick else 1000}
    print(f"bench_pardiso: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    # warm-up: MKL's first call loads and initialises its kernels (not to be charged to the first row)
    measure(*matrix("p1", 8), "sym", 2, factor=True)
    for case in args.cases:
        pattern, values = matrix(case, sizes[case])
        print(f"\n{case}: n = {pattern.shape[0]:,}, nnz = {pattern.nnz:,}")
        rows = {name: [] for name in CONFIGS}
        for r in range(args.reps):
            for name, (kind, ordering) in CONFIGS.items():
                rows[name].append(measure(pattern, values, kind, ordering, factor=(r == 0)))
        base = np.median([m["analysis_s"] for m in rows["bunch-kaufman"]])
        print(f"{'configuration':26s} {'analysis':>9s} {'cpu':>7s} {'/ BK':>6s} {'factor':>8s} {'cpu':>7s}"
              f" {'solve':>7s} {'fill':>12s} {'PARDISO GB':>10s}")  # fmt: skip
        for name, ms in rows.items():
            a = np.median([m["analysis_s"] for m in ms])
            ac = np.median([m["analysis_cpu_s"] for m in ms])
            m0 = ms[0]
            print(f"{name:26s} {a:8.2f}s {ac:6.2f}s {a / base:6.2f} {m0['factor_s']:7.2f}s"
                  f" {m0['factor_cpu_s']:6.2f}s {m0['solve_s']:6.2f}s {m0['fill']:12,d}"
                  f" {m0['pardiso_gb']:10.2f}")  # fmt: skip
        print(f"(load {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
