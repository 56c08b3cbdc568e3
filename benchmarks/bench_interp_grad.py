"""Cubic spline interpolation: forward and gradient time of igax against plain autodiff, same run.

Case: n sites, 10 n sorted evaluation points, loss = sum of the interpolant; the gradient is taken with
respect to the values y. Three implementations share the system assembly and the evaluation and differ only
in the tridiagonal solve:

* ``igax``: :func:`igax.bases.interpolate` (tridiagonal LAPACK solve, custom VJP with the transposed
  solve; sorted points located by a merge);
* ``dense-autodiff``: the same system as a dense matrix, ``jnp.linalg.solve``, differentiated by JAX
  (n <= 1000 only);
* ``scan-autodiff``: a textbook Thomas algorithm in ``lax.scan``, differentiated by JAX.

Times are jit steady-state medians. ratio = baseline time / igax time (bigger is better).

Usage: ``python benchmarks/bench_interp_grad.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
from _timing import fmt_seconds, median_time  # benchmarks/_timing.py

from igax.bases import interp


def _dense_solve(lower, diag, upper, rhs):
    A = jnp.diag(diag) + jnp.diag(lower[1:], -1) + jnp.diag(upper[:-1], 1)
    return jnp.linalg.solve(A, rhs)


def _thomas_scan(lower, diag, upper, rhs):
    """Textbook Thomas algorithm, one scan down and one up; JAX differentiates through it."""

    def down(carry, inp):
        cp, dp = carry
        a, b, c, r = inp
        den = b - a * cp
        cn = c / den
        dn = (r - a * dp) / den
        return (cn, dn), (cn, dn)

    zero = jnp.zeros(rhs.shape[1:], rhs.dtype)
    _, (cp, dp) = jax.lax.scan(down, (jnp.zeros((), diag.dtype), zero), (lower, diag, upper, rhs))

    def up(x, inp):
        c, d = inp
        x = d - c * x
        return x, x

    _, x = jax.lax.scan(up, zero, (cp, dp), reverse=True)
    return x


def _make(solver, bc):
    def f(x, y, xq):
        if solver is None:
            return interp.interpolate(x, y, xq, bc_type=bc, assume_sorted=True)
        s = interp._cubic_slopes(x, y[:, None], (bc, bc), solve=solver)
        return interp._eval_cubic(x, y[:, None], s, xq, True)[:, 0]

    return f


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only n = 64 and 1000")
    ap.add_argument("--bc", default="not-a-knot", help="cubic end condition")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    sizes = [64, 1000] if args.quick else [64, 1000, 10_000, 100_000]
    print(
        f"# machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, jax {jax.__version__}, backend {jax.default_backend()}, float64"
    )
    print(f"# cubic interpolation ({args.bc}), m = 10 n sorted points, loss = sum(interpolant), grad wrt y")
    impls = {"igax": None, "dense-autodiff": _dense_solve, "scan-autodiff": _thomas_scan}
    rows = []
    for n in sizes:
        rng = np.random.default_rng(0)
        x = jnp.asarray(np.cumsum(rng.uniform(0.5, 1.5, n)))
        y = jnp.asarray(np.sin(np.asarray(x) / 5) + 0.1 * rng.standard_normal(n))
        xq = jnp.linspace(x[0], x[-1], 10 * n)
        repeat = 200 if n <= 1000 else (30 if n <= 10_000 else 10)
        times = {}
        grads = {}
        for name, solver in impls.items():
            if name == "dense-autodiff" and n > 1000:
                continue
            f = _make(solver, args.bc)
            fwd = jax.jit(f)
            grad = jax.jit(jax.grad(lambda y, f=f, x=x, xq=xq: jnp.sum(f(x, y, xq))))
            times[name] = (median_time(fwd, x, y, xq, repeat=repeat), median_time(grad, y, repeat=repeat))
            grads[name] = np.asarray(grad(y))
        for name in grads:
            err = np.abs(grads[name] - grads["igax"]).max() / np.abs(grads["igax"]).max()
            assert err < 1e-8, f"{name} gradient disagrees with igax by {err:.1e}"
        ti_f, ti_g = times["igax"]
        print(f"\nn = {n}, m = {10 * n}")
        head = f"  {'implementation':16s} {'forward':>12s} {'gradient':>12s}"
        print(head + f" {'fwd ratio':>10s} {'grad ratio':>10s}")
        for name, (tf, tg) in times.items():
            ratios = f"{tf / ti_f:10.1f} {tg / ti_g:10.1f}"
            print(f"  {name:16s} {fmt_seconds(tf):>12s} {fmt_seconds(tg):>12s} {ratios}")
        for name, (tf, tg) in times.items():
            if name == "igax":
                continue
            for what, tb, ti in (("forward", tf, ti_f), ("grad", tg, ti_g)):
                rec = {
                    "bench": "interp_grad",
                    "case": f"cubic-{what}-n{n}-m{10 * n}",
                    "igax": "tridiag-custom-vjp",
                    "igax_s": ti,
                    "baseline": name,
                    "baseline_s": tb,
                    "ratio": tb / ti,
                }
                rows.append(rec)
                print(json.dumps(rec))
    # linear scaling of the igax gradient: fitted slope of log time against log n
    ns = np.array([r["case"] for r in rows if r["baseline"] == "scan-autodiff" and "grad" in r["case"]])
    tg = np.array([r["igax_s"] for r in rows if r["baseline"] == "scan-autodiff" and "grad" in r["case"]])
    nn = np.array([int(c.split("-n")[1].split("-")[0]) for c in ns])
    if len(nn) >= 3:
        slope = np.polyfit(np.log(nn[1:]), np.log(tg[1:]), 1)[0]
        print(f"\n# igax gradient time ~ n^{slope:.2f} for n >= 1000")
    return rows


if __name__ == "__main__":
    main()
