"""Assembly: igax's vectorised, jitted assembly against scikit-fem on the same meshes, in the same run.

Cases (full size / ``--quick``):

* ``p1-poisson``: P1 Laplacian on a structured triangle mesh of the unit square, ~1M DOFs (quick: ~10k);
* ``q2-poisson``: Q2 Laplacian on quadrilaterals, ~250k DOFs (quick: ~10k);
* ``spline3-poisson``: SplineSpace of degree 3 on the unit square, ~250k DOFs (quick: ~10k); the baseline is
  scikit-fem's Q2 assembly of a similar number of DOFs (no spline element there), so its ratio is indicative
  only;
* ``q1-elasticity3d``: 3D linear elasticity, Q1 hexahedra on a 32^3 mesh, ~108k DOFs (quick: 8^3);
* ``spline2-elasticity3d``: the same problem on a SplineSpace of degree 2 on the unit box with 31^3 elements,
  the same 107,811 DOFs (quick: 7^3, 2187 DOFs); the baseline is scikit-fem's Q1 case above (timed once per
  run), so this ratio too is indicative only: a degree-2 spline element couples 81 dofs against Q1's 24.
  The box is an affine patch and the kernel a constant, so igax assembles the matrix as a sum of Kronecker
  products of univariate band matrices (``igax/fem/forms/_sumfact_affine.py``);
* ``spline2-elasticity3d-curved``: the same with the interior control points moved (a curved patch, the
  boundary kept): the general sum factorisation, against the same scikit-fem Q1 baseline.

Quadrature is the same on both sides: scikit-fem's ``intorder`` is set to igax's default rule (exact for
degree ``2 * degree``: ``intorder=2`` for P1 and Q1, ``4`` for Q2; scikit-fem's defaults over-integrate the
quadrilateral and hexahedral elements, e.g. 4^3 points for Q1 against 2^3, which would flatter the ratios).

For igax we report: ``build`` (mesh + space: dof map, CSR pattern, scatter map, guard-rail check), ``cold``
(the first build in the process) and ``warm`` (median of later builds on fresh meshes), ``compile`` (first
call of the jitted assembly minus a steady call), ``steady`` (median of calls of
``jax.jit(lambda V: assemble(form, V))``, the space an argument, values on the device) and ``closed`` (the
same with the space closed over, the README's pattern). For spline patches both take the polynomial path
(4 instead of 9 reference-jet states in 2D) when the weights are equal: closed over it is known when traced,
as an argument (weights traced) it is chosen at run time (2D and 3D: 9 instead of 16 states in 3D). With
``--cpu-time`` every time is the CPU time of the process (all threads) instead of wall time: on a machine
shared with other jobs, waiting for a core then costs nothing. For scikit-fem: ``setup`` (mesh + basis,
cold and warm the same way) and ``assemble`` (median).
Ratios = baseline time / igax time (bigger is better): ``asm x`` (``steady``) and ``clo x`` (``closed``)
against scikit-fem's assembly, and ``build`` against scikit-fem's setup + one assembly (cold against cold,
warm against warm). JAX's backend is started before the first timing (a process start-up cost, like the
imports).

Usage: ``python benchmarks/bench_assembly.py [--quick] [--reps 3] [--cpu-time] [--cases p1-poisson ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from igax import fem
from igax.fem import library, mesh

CASES = (
    "p1-poisson", "q2-poisson", "spline3-poisson", "q1-elasticity3d", "spline2-elasticity3d",
    "spline2-elasticity3d-curved",
)  # fmt: skip
_SKFEM_DONE: dict = {}  # baseline timings already taken in this run, by baseline key
_CLOCK = [time.perf_counter]  # time.process_time with --cpu-time


def _median(fn, reps, budget=30.0):
    """Median time of ``fn()`` over ``reps`` runs, fewer when they exceed ``budget`` seconds in all."""
    ts = []
    clock = _CLOCK[0]
    for _ in range(reps):
        t = clock()
        fn()
        ts.append(clock() - t)
        if sum(ts) > budget:
            break
    return float(np.median(ts))


def _time_igax(build, form, reps):
    t = _CLOCK[0]()
    V = build()
    t_cold = _CLOCK[0]() - t
    t_warm = _median(build, reps)
    f = jax.jit(lambda V: fem.assemble(form, V).values)
    t = _CLOCK[0]()
    f(V).block_until_ready()
    t_first = _CLOCK[0]() - t
    # The README's pattern: the jitted function closes over the space (its arrays are then concrete when
    # traced: a spline patch built without weights takes the polynomial path, where the space passed as an
    # argument has traced weights and chooses it at run time).
    g = jax.jit(lambda: fem.assemble(form, V).values)
    g().block_until_ready()
    # The two interleaved (argument, closed over, closed over, argument, ...): timed one after the other,
    # another job taking one of the 2 cores during either changed their ratio by up to 2x.
    arg_times, closed_times = [], []
    clock = _CLOCK[0]
    for rep in range(reps):
        pairs = ((lambda: f(V), arg_times), (g, closed_times))
        for fn, ts in pairs if rep % 2 == 0 else pairs[::-1]:  # the order alternates too
            t = clock()
            fn().block_until_ready()
            ts.append(clock() - t)
        if sum(arg_times) + sum(closed_times) > 60.0:
            break
    steady, closed = float(np.median(arg_times)), float(np.median(closed_times))
    return V, {"build_cold": t_cold, "build": t_warm, "compile": max(t_first - steady, 0.0), "steady": steady,
               "closed": closed}  # fmt: skip


def _time_skfem(setup, form, reps):
    t = _CLOCK[0]()
    basis = setup()
    t_cold = _CLOCK[0]() - t
    t_warm = _median(setup, reps)
    A = form.assemble(basis)
    return A, {"setup_cold": t_cold, "setup": t_warm, "assemble": _median(lambda: form.assemble(basis), reps)}


def _skfem():
    import skfem
    from skfem.models.elasticity import lame_parameters, linear_elasticity
    from skfem.models.poisson import laplace

    return skfem, laplace, linear_elasticity, lame_parameters


def _curved_box(n: int):
    """The degree-2 box on ``n^3`` elements with its control points moved by ``0.05 sin(pi x) sin(pi y)
    sin(pi z)`` along each coordinate (zero on the boundary): a curved, regular patch."""
    V = fem.SplineSpace(fem.geometry.box().refine(degree=2, elements=n), shape=(3,))
    P = np.asarray(V.control_points)
    bump = 0.05 * np.prod(np.sin(np.pi * P), axis=-1, keepdims=True)
    return V.with_geometry(control_points=P + bump)


def run_case(case: str, quick: bool, reps: int) -> dict:
    skfem, sk_laplace, sk_elasticity, sk_lame = _skfem()
    if case == "p1-poisson":
        n = 100 if quick else 1000
        igx = lambda: fem.LagrangeSpace(mesh.unit_square(n), degree=1)
        form, sk_form = library.laplace, sk_laplace
        ax = np.linspace(0, 1, n + 1)
        sk = lambda: skfem.Basis(skfem.MeshTri.init_tensor(ax, ax), skfem.ElementTriP1(), intorder=2)
    elif case == "q2-poisson":
        n = 50 if quick else 250
        igx = lambda: fem.LagrangeSpace(mesh.unit_square(n, cell="quad"), degree=2)
        form, sk_form = library.laplace, sk_laplace
        ax = np.linspace(0, 1, n + 1)
        sk = lambda: skfem.Basis(skfem.MeshQuad.init_tensor(ax, ax), skfem.ElementQuad2(), intorder=4)
    elif case == "spline3-poisson":
        n = 97 if quick else 497
        igx = lambda: fem.SplineSpace(fem.geometry.rectangle().refine(degree=3, elements=n))
        form, sk_form = library.laplace, sk_laplace
        m = 50 if quick else 250
        ax = np.linspace(0, 1, m + 1)
        sk = lambda: skfem.Basis(skfem.MeshQuad.init_tensor(ax, ax), skfem.ElementQuad2(), intorder=4)
    elif case in ("q1-elasticity3d", "spline2-elasticity3d", "spline2-elasticity3d-curved"):
        n = 8 if quick else 32
        E, nu = 1.0, 0.3
        if case == "q1-elasticity3d":
            igx = lambda: fem.LagrangeSpace(mesh.unit_cube(n, cell="hexahedron"), degree=1, shape=(3,))
        elif case == "spline2-elasticity3d":  # degree 2 on n - 1 elements: n + 1 functions per direction
            igx = lambda: fem.SplineSpace(fem.geometry.box().refine(degree=2, elements=n - 1), shape=(3,))
        else:
            igx = lambda: _curved_box(n - 1)
        form = library.linear_elasticity(E, nu, "3d")
        sk_form = sk_elasticity(*sk_lame(E, nu))
        ax = np.linspace(0, 1, n + 1)
        sk = lambda: skfem.Basis(
            skfem.MeshHex.init_tensor(ax, ax, ax), skfem.ElementVector(skfem.ElementHex1()), intorder=2
        )
    else:
        raise ValueError(f"unknown case {case!r}; choose from {CASES}")
    V, ti = _time_igax(igx, form, reps)
    sk_key = ("q1-elasticity3d" if case.startswith("spline2-elasticity3d") else case, quick)
    if sk_key not in _SKFEM_DONE:
        _SKFEM_DONE[sk_key] = _time_skfem(sk, sk_form, reps)
    A_sk, ts = _SKFEM_DONE[sk_key]
    # Same operator: compare a similarity invariant (dof numberings differ): sum of all entries and the trace.
    same = None
    if not case.startswith("spline"):
        A = fem.assemble(form, V).to_scipy()
        same = bool(
            abs(A.diagonal().sum() - A_sk.diagonal().sum()) <= 1e-9 * abs(A_sk.diagonal().sum())
            and abs(A.sum() - A_sk.sum()) <= 1e-9 * max(1.0, abs(A_sk).sum())
        )
    return {
        "case": case,
        "ndofs": V.ndofs,
        "nel": V.nel,
        "baseline_ndofs": int(A_sk.shape[0]),
        "igax": ti,
        "skfem": ts,
        "same_operator": same,
    }


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpu-time", action="store_true", help="CPU time of the process instead of wall time")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    args = ap.parse_args(argv)
    _CLOCK[0] = time.process_time if args.cpu_time else time.perf_counter
    jax.config.update("jax_enable_x64", True)
    jax.numpy.zeros(1).block_until_ready()  # start the backend outside the timings
    print(
        f"bench_assembly: platform {platform.platform()}, {os.cpu_count()} CPUs, jax {jax.__version__}, "
        f"{'quick' if args.quick else 'full'} sizes, median of {args.reps}, "
        f"{'CPU' if args.cpu_time else 'wall'} time"
    )
    header = (
        f"{'case':27s} {'ndofs':>9s} {'build0':>7s} {'build':>7s} {'compile':>7s} {'steady':>7s} | "
        f"{'closed':>7s} | {'sk set0':>7s} {'sk set':>7s} {'sk asm':>7s} | {'asm x':>6s} {'clo x':>6s} "
        f"{'bld0 x':>6s} {'bld x':>6s} same"
    )
    print(header)
    records = []
    for case in args.cases:
        r = run_case(case, args.quick, args.reps)
        ti, ts = r["igax"], r["skfem"]
        ratio = ts["assemble"] / ti["steady"]
        cratio = ts["assemble"] / ti["closed"]
        bratio = (ts["setup"] + ts["assemble"]) / ti["build"]
        bratio0 = (ts["setup_cold"] + ts["assemble"]) / ti["build_cold"]
        print(
            f"{case:27s} {r['ndofs']:9d} {ti['build_cold']:7.3f} {ti['build']:7.3f} {ti['compile']:7.3f} "
            f"{ti['steady']:7.3f} {ti['closed']:7.3f} | {ts['setup_cold']:7.3f} {ts['setup']:7.3f} "
            f"{ts['assemble']:7.3f} | {ratio:6.1f} {cratio:6.1f} {bratio0:6.1f} {bratio:6.1f} "
            f"{r['same_operator']}",
            flush=True,
        )
        size = f"{r['ndofs'] // 1000}k"
        recs = [
            {"bench": "assembly", "case": f"{case}-{size}", "igax": "jit-steady", "igax_s": ti["steady"],
             "baseline": "skfem-assemble", "baseline_s": ts["assemble"], "ratio": ratio},
            {"bench": "assembly", "case": f"{case}-{size}", "igax": "jit-steady-closed-over",
             "igax_s": ti["closed"], "baseline": "skfem-assemble", "baseline_s": ts["assemble"],
             "ratio": cratio},
            {"bench": "assembly", "case": f"{case}-{size}", "igax": "space-build-cold",
             "igax_s": ti["build_cold"], "baseline": "skfem-setup+assemble-cold",
             "baseline_s": ts["setup_cold"] + ts["assemble"], "ratio": bratio0},
            {"bench": "assembly", "case": f"{case}-{size}", "igax": "space-build", "igax_s": ti["build"],
             "baseline": "skfem-setup+assemble", "baseline_s": ts["setup"] + ts["assemble"], "ratio": bratio},
            {"bench": "assembly", "case": f"{case}-{size}", "igax": "compile", "igax_s": ti["compile"],
             "baseline": None, "baseline_s": None, "ratio": None},
        ]  # fmt: skip
        for rec in recs:
            print(json.dumps(rec), flush=True)
        records.append(r)
    return records


if __name__ == "__main__":
    main()
