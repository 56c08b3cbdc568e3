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
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_time  # noqa: E402

from igax import fem  # noqa: E402
from igax.fem import library, norms  # noqa: E402

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="k = 10 instead of 40")
    ap.add_argument("--k", type=float, default=None)
    ap.add_argument("--target", type=float, default=1e-3)
    ap.add_argument("--max-dofs", type=int, default=400_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
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
