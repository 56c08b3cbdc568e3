"""A spline space passed to ``jax.jit`` as an argument: the polynomial program alone against the run-time
choice.

A space passed as an argument has traced weights. Before, sum-factorised assembly built both the polynomial
and the rational program and chose between them when the program ran (``lax.cond``); a B-spline space now
says that its weights are equal (``SplineSpace.equal_weights``, static), and only the polynomial program is
built (``igax.fem.forms.sumfact._KNOWN_EQUAL``, switched here for the A/B in one process).

Measured per case (degree 3 and degree 2 on the unit square, ~250k DOFs; quick: ~10k):

* ``trace+compile``: CPU time of ``jit(f).lower(V).compile()`` for ``old`` (the run-time choice), ``new``
  (the polynomial program alone) and ``closed`` (the space closed over, the README's pattern), alternating,
  medians of ``--compiles`` fresh functions each;
* ``steady``: CPU time (``--wall``: wall time) of a call, medians of ``--reps`` calls interleaved ``old, new,
  closed, scikit-fem Q2`` (same number of DOFs; its ``assemble`` on a prepared basis, ``intorder=4``).

Ratios: ``new / old`` (below 1 is better) and scikit-fem Q2 / igax (above 1: igax faster).

Usage: ``python benchmarks/bench_traced_weights.py [--quick] [--reps 9] [--compiles 2] [--wall]
[--degrees 3 2]``
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from igax import fem
from igax.fem import library
from igax.fem.forms import sumfact


def _compile_time(make, args) -> float:
    t = time.process_time()
    make().lower(*args).compile()
    return time.process_time() - t


def run(degree: int, quick: bool, reps: int, compiles: int, clock) -> dict:
    import skfem
    from skfem.models.poisson import laplace as sk_laplace

    n = (100 if quick else 500) - degree  # n + degree functions per direction
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=degree, elements=n))
    form = library.laplace
    fem.assemble(form, V)  # host plans and layouts cached before any timing

    def make(known):
        def f(V):
            sumfact._KNOWN_EQUAL = known  # read when traced
            try:
                return fem.assemble(form, V).values
            finally:
                sumfact._KNOWN_EQUAL = True

        return jax.jit(f)

    make_closed = lambda: jax.jit(lambda: fem.assemble(form, V).values)  # noqa: E731
    ct = {"old": [], "new": [], "closed": []}
    for _ in range(compiles):
        ct["old"].append(_compile_time(lambda: make(False), (V,)))
        ct["new"].append(_compile_time(lambda: make(True), (V,)))
        ct["closed"].append(_compile_time(make_closed, ()))

    m = 50 if quick else 250
    ax = np.linspace(0, 1, m + 1)
    basis = skfem.Basis(skfem.MeshQuad.init_tensor(ax, ax), skfem.ElementQuad2(), intorder=4)
    f_old, f_new, g = make(False), make(True), make_closed()
    a, b, c = f_old(V), f_new(V), g()
    scale = float(np.max(np.abs(np.asarray(c))))
    same = max(float(np.max(np.abs(np.asarray(a - c)))), float(np.max(np.abs(np.asarray(b - c))))) / scale
    calls = {
        "old": lambda: f_old(V).block_until_ready(),
        "new": lambda: f_new(V).block_until_ready(),
        "closed": lambda: g().block_until_ready(),
        "skfem": lambda: sk_laplace.assemble(basis),
    }
    for fn in calls.values():
        fn()
    ts = {k: [] for k in calls}
    for _ in range(reps):
        for k, fn in calls.items():
            t = clock()
            fn()
            ts[k].append(clock() - t)
    return {"degree": degree, "ndofs": V.ndofs, "sk_ndofs": basis.N, "max_rel_diff": same,
            "compile": {k: float(np.median(v)) for k, v in ct.items()},
            "steady": {k: float(np.median(v)) for k, v in ts.items()}}  # fmt: skip


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="~10k DOFs (seconds)")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--compiles", type=int, default=2)
    ap.add_argument("--wall", action="store_true", help="steady calls in wall time (default CPU time)")
    ap.add_argument("--degrees", type=int, nargs="*", default=[3, 2])
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    clock = time.perf_counter if args.wall else time.process_time
    print(
        f"load {os.getloadavg()[0]:.1f}; steady in {'wall' if args.wall else 'CPU'} time, medians of "
        f"{args.reps} interleaved; trace+compile in CPU time, medians of {args.compiles}"
    )
    out = []
    for deg in args.degrees:
        r = run(deg, args.quick, args.reps, args.compiles, clock)
        c, s = r["compile"], r["steady"]
        print(
            f"degree {deg}, {r['ndofs']} DOFs (Q2 {r['sk_ndofs']}), max rel diff {r['max_rel_diff']:.1e}\n"
            f"  trace+compile  old {c['old']:.2f} s  new {c['new']:.2f} s  closed {c['closed']:.2f} s  "
            f"new/old {c['new'] / c['old']:.2f}\n"
            f"  steady         old {s['old']:.3f} s  new {s['new']:.3f} s  closed {s['closed']:.3f} s  "
            f"skfem {s['skfem']:.3f} s  new/old {s['new'] / s['old']:.3f}\n"
            f"  skfem / igax   old {s['skfem'] / s['old']:.2f}  new {s['skfem'] / s['new']:.2f}  "
            f"closed {s['skfem'] / s['closed']:.2f}"
        )
        out.append(r)
    return out


if __name__ == "__main__":
    main()
