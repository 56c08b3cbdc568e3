"""Helmholtz at equal accuracy: DOFs and time that degree-2/3 splines and P1/P2 Lagrange need for a relative
L2 error of 1e-3.

Case: the plane wave ``exp(i k d.x)`` (d at 30 degrees) on the unit square with impedance data from the exact
solution on all sides (the MMS of tests/test_helmholtz.py), k = 40 (``--quick``: k = 10). For each
discretisation the elements per side grow geometrically (x 1.25) from about 4 per wavelength until the
relative L2 error is <= 1e-3; the first size that reaches it is reported with its DOFs and the time of
assembly + complex solve (jitted, median of ``--repeat`` runs after a compile; default solver: PARDISO where
installed, else SuperLU, on the real block system of twice the size). A discretisation that does not reach
the target within ``--max-dofs`` is reported with the DOFs extrapolated from its last two sizes (marked
``~``). Every discretisation runs in this script, on this machine; the ratios are P1 / P2 over each
spline degree (> 1: the spline needs fewer DOFs / less time).

Usage: ``python benchmarks/bench_helmholtz.py [--quick] [--k 40] [--target 1e-3] [--max-dofs 400000]``

``--native [--dofs 100000]``: instead, one complex symmetric Helmholtz system (degree-2 splines, k = 40,
impedance on every side, about ``--dofs`` complex unknowns) solved by PARDISO natively (complex symmetric
``mtype=6``, n unknowns) against the same PARDISO on the real block form (2n unknowns, the fallback of
backends without complex support; the baseline), each time with an empty factor cache (analysis,
factorisation and solve), with PARDISO's own peak-memory report; and SuperLU's native complex LU against its
block form at a size it can do in seconds. Ratio = block / native (> 1: native is faster / smaller).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_time  # noqa: E402

from igax import fem, solvers  # noqa: E402
from igax.fem import library, norms  # noqa: E402
from igax.solvers.backends.pardiso import _plans as pardiso_plans  # noqa: E402

SIDES = ("left", "right", "bottom", "top")
NORMALS = ((-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))
THETA = np.pi / 6


def space(kind: str, n: int):
    if kind.startswith("spline"):
        return fem.SplineSpace(fem.geometry.rectangle().refine(degree=int(kind[-1]), elements=n))
    return fem.LagrangeSpace(fem.unit_square(n, cell="quad"), degree=int(kind[-1]))


def solve(V, k):
    d = np.array([np.cos(THETA), np.sin(THETA)])
    exact = library.plane_wave(k, d)
    A = fem.assemble(library.helmholtz, V, k=k) + fem.assemble(library.impedance, V, boundary=SIDES, k=k)
    b = 0.0
    for side, nrm in zip(SIDES, NORMALS, strict=True):
        dn = float(d @ np.array(nrm))
        b = b + fem.assemble(
            library.neumann, V, boundary=side, g=lambda x, dn=dn: 1j * k * (dn - 1.0) * exact(x)
        )
    return fem.solve(A, b, space=V), exact


def relative_error(V, k) -> float:
    u, exact = solve(V, k)
    zero = fem.Field(V, jnp.zeros(V.ndofs))
    return float(norms.l2_error(u, exact) / norms.l2_error(zero, exact))


def search(kind, k, target, max_dofs):
    """The first size (x 1.25 steps) whose error is <= target: (n, dofs, error, reached, history)."""
    n = max(4, int(np.ceil(4 * k / (2 * np.pi))))
    history = []
    while True:
        V = space(kind, n)
        if V.ndofs > max_dofs:
            return None, history
        err = relative_error(V, k)
        history.append((n, V.ndofs, err))
        print(f"  {kind:8s} n = {n:4d}: {V.ndofs:8d} dofs, relative L2 error {err:.2e}", flush=True)
        if err <= target:
            return (n, V.ndofs, err), history
        n = int(np.ceil(1.25 * n))


def extrapolate(history, target):
    """DOFs at which the error reaches ``target``, by the rate of the last two sizes (error ~ dofs^-r)."""
    (_, d0, e0), (_, d1, e1) = history[-2:]
    r = np.log(e0 / e1) / np.log(d1 / d0)
    return d1 * (e1 / target) ** (1 / r) if r > 0 else np.inf


def _cold_solve(A, b, method, form, repeat):
    """Median time of a solve with an empty factor cache (analysis + factorisation + solve), and x."""
    ts = []
    for _ in range(repeat + 1):  # the first run compiles
        solvers.clear_cache()
        pardiso_plans.clear()
        t = time.perf_counter()
        x = jax.block_until_ready(solvers.solve(A, b, method=method, complex_form=form))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts[1:])), x


def _cold_gradient(A, b, method, form, repeat):
    """Median time of value_and_grad of a real loss of the solution (forward + adjoint solve) with an empty
    factor cache, and the factorisations it took."""
    loss = jax.jit(
        jax.value_and_grad(
            lambda s: jnp.sum(jnp.abs(solvers.solve(A * s, b, method=method, complex_form=form)) ** 2)
        )
    )
    ts = []
    for _ in range(repeat + 1):
        solvers.clear_cache()
        pardiso_plans.clear()
        solvers.solver_stats.reset()
        t = time.perf_counter()
        jax.block_until_ready(loss(1.0))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts[1:])), solvers.solver_stats.factorizations


def native_vs_block(dofs: int, repeat: int) -> None:
    """PARDISO (and SuperLU) native complex vs the real block form on one Helmholtz system."""
    k = 40.0
    for method, target in (("pardiso", dofs), ("superlu", min(dofs, 10_000))):
        if method not in solvers.available_methods():
            print(f"{method}: not installed, skipped")
            continue
        n = int(round(np.sqrt(target))) - 2  # degree 2: (n + 2)^2 dofs
        V = space("spline2", n)
        A = fem.assemble(library.helmholtz, V, k=k) + fem.assemble(library.impedance, V, boundary=SIDES, k=k)
        b = fem.assemble(library.source, V, f=library.point_source((0.3, 0.4), 0.05))
        row = {}
        for form in ("native", "block"):
            t, x = _cold_solve(A, b, method, form, repeat)
            r = float(jnp.linalg.norm(A @ x - b) / jnp.linalg.norm(b))
            mem = None
            if method == "pardiso":
                plan = next(iter(pardiso_plans.values()))
                mem = plan.memory_kb() / 1024
            tg, nf = _cold_gradient(A, b, method, form, repeat)
            row[form] = (t, mem, r, tg)
            mtxt = f", PARDISO peak memory {mem:8.1f} MiB" if mem is not None else ""
            print(
                f"  {method:8s} {form:6s} {V.ndofs:7d} complex unknowns: {t:7.3f} s{mtxt}, residual {r:.1e}; "
                f"value_and_grad {tg:7.3f} s ({nf} factorisation)"
            )
        ratio = row["block"][0] / row["native"][0]
        line = {
            "bench": "helmholtz-native",
            "case": f"spline2-k40-{V.ndofs}",
            "igax": f"{method}-native",
            "igax_s": round(row["native"][0], 4),
            "baseline": f"{method}-block",
            "baseline_s": round(row["block"][0], 4),
            "ratio": round(ratio, 2),
            "igax_grad_s": round(row["native"][3], 4),
            "baseline_grad_s": round(row["block"][3], 4),
            "grad_ratio": round(row["block"][3] / row["native"][3], 2),
        }
        if row["native"][1] is not None:
            line["igax_mib"] = round(row["native"][1], 1)
            line["baseline_mib"] = round(row["block"][1], 1)
            line["memory_ratio"] = round(row["block"][1] / row["native"][1], 2)
        print(
            f"  {method}: block / native time {ratio:.2f}x, gradient {line['grad_ratio']:.2f}x"
            + (f", memory {line['memory_ratio']:.2f}x" if "memory_ratio" in line else "")
        )
        print(json.dumps(line))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="k = 10 instead of 40")
    ap.add_argument("--k", type=float, default=None)
    ap.add_argument("--target", type=float, default=1e-3)
    ap.add_argument("--max-dofs", type=int, default=400_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--native", action="store_true", help="native complex vs real block form (see above)")
    ap.add_argument("--dofs", type=int, default=None, help="--native: complex unknowns (default 100000)")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    if args.native:
        dofs = args.dofs or (10_000 if args.quick else 100_000)
        print(
            f"machine: {platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, jax "
            f"{jax.__version__} ({jax.default_backend()}); native complex vs real block form, ~{dofs} dofs"
        )
        native_vs_block(dofs, args.repeat)
        return
    k = args.k or (10.0 if args.quick else 40.0)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, jax "
        f"{jax.__version__} ({jax.default_backend()}); k = {k}, target relative L2 error {args.target:g}"
    )
    rows = {}
    for kind in ("spline2", "spline3", "P1", "P2"):
        found, history = search(kind, k, args.target, args.max_dofs)
        if found is None:
            dofs = extrapolate(history, args.target) if len(history) >= 2 else np.inf
            rows[kind] = {"dofs": dofs, "time": np.nan, "reached": False}
            continue
        n, dofs, err = found
        V = space(kind, n)
        t = median_time(jax.jit(lambda V: solve(V, k)[0].coeffs), V, repeat=args.repeat)
        rows[kind] = {"dofs": dofs, "time": t, "reached": True, "n": n, "error": err}
    print(f"\n{'discretisation':14s} {'elements/side':>13s} {'dofs':>11s} {'assemble+solve':>15s}")
    for kind, r in rows.items():
        mark = "" if r["reached"] else "~"
        n = r.get("n", "-")
        t = f"{r['time'] * 1e3:12.1f} ms" if r["reached"] else "   (not run)"
        print(f"{kind:14s} {n!s:>13s} {mark + format(r['dofs'], '.0f'):>11s} {t:>15s}")
    print("\nspline efficiency (Lagrange / spline; > 1: the spline needs less):")
    for s in ("spline2", "spline3"):
        for lag in ("P1", "P2"):
            rd = rows[lag]["dofs"] / rows[s]["dofs"]
            rt = rows[lag]["time"] / rows[s]["time"]
            tt = f"{rt:6.1f}x time" if np.isfinite(rt) else "  time n/a (Lagrange size not run)"
            mark = "" if rows[lag]["reached"] else "~"
            print(f"  {lag} / {s}: {mark}{rd:.1f}x dofs, {tt}")


if __name__ == "__main__":
    main()
