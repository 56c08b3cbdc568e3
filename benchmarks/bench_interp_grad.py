"""Cubic spline interpolation: forward and gradient time of igax against plain autodiff, same run.

Case: n sites, 10 n sorted evaluation points, loss = sum of the interpolant; the gradient is taken with
respect to the values y, with the sites and points passed as arguments (not baked into the program as
constants). All three implementations share the system assembly (``interp._cubic_slopes``), the point
location (``interp.locate``, merge of sorted points) and the evaluation (one 1-D gather per coefficient
table in a fused Horner loop, differentiated by JAX: the transposes are segment sums). They differ only in
the tridiagonal solve:

* ``igax``: :func:`igax.bases.interpolate`: LAPACK ``gtsv`` with a custom VJP (one transposed solve; a
  gradient in y needs no forward solve at all, XLA drops it);
* ``dense-autodiff``: the same system as a dense matrix, ``jnp.linalg.solve``, differentiated by JAX
  (n <= 1000 only);
* ``scan-autodiff``: a textbook Thomas algorithm in ``lax.scan``, differentiated by JAX;
* ``naive-scan``: what one writes without structure: the same scan, and each point located by its own
  binary search among the sites (``jnp.searchsorted`` per point, O(m log n)) instead of the merge of sorted
  points (O(n + m)). The rest (assembly, evaluation) is still shared.

The first three ratios therefore isolate the solve and its adjoint; ``naive-scan`` adds the point search.
Against ``scan-autodiff`` the ratio stays modest (about 1-1.3x): with m = 10 n points the solve and system
assembly are only ~20 % of the gradient time at n = 10^4; the rest (point location ~40 %, evaluation and
its segment sums ~40 %) is shared code. The evaluation used to gather rows of a packed (n-1, 5) table: in
isolation ~10x slower than the 1-D gathers now shared by all of them at m = 10^6, the whole gradient
10-25 % slower. Below ~1e5 point-break pairs (n = 64) every variant locates by one fused comparison.

BLAS runs single-threaded for the whole script: the dense LU of n = 1000 takes ~25 ms with one OpenBLAS
thread but 0.2-0.3 s with two threads on a loaded two-core machine (the threads spin waiting for each
other), which made the dense baseline swing by 10x between runs. XLA's own threading is left as is.

On small VMs the large cases (m = 10^6) are dominated by first-touch page faults of the fresh temporary
buffers XLA allocates per call (glibc returns large blocks to the OS): with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` raised the igax gradient at n = 10^5 ran ~2.5x faster; the printed figures use
the default allocator. ``dispatch`` is the time of an empty jitted call: the floor for every row. Under
load, XLA's thread-pool hand-offs roughly double the small-n medians (pinning the process to one core with
``taskset -c 0`` took the n = 64 gradient from ~80 us to ~40 us); the minimum over repeats was ~30 us.

Times are jit steady-state medians (many repeats; under load they fluctuate, the same-run ratios less).
ratio = baseline time / igax time (bigger is better).

Usage: ``python benchmarks/bench_interp_grad.py [--quick]``
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import fmt_seconds, median_time  # benchmarks/_timing.py (used for the dispatch floor)

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


def _make(solver, bc, merge=True):
    def f(x, y, xq):
        if solver is None:
            return interp.interpolate(x, y, xq, bc_type=bc, assume_sorted=True)
        s = interp._cubic_slopes(x, y[:, None], (bc, bc), solve=solver)
        return interp._eval_cubic(x, y[:, None], s, xq, merge)[:, 0]

    return f


def _blas_threads(k):
    """Set the number of OpenBLAS threads of SciPy's bundled OpenBLAS (which jaxlib's LAPACK calls use).

    Returns the previous number, or None where no such library is loaded.
    """
    import scipy.linalg  # noqa: F401  (loads the library)

    site = os.path.dirname(os.path.dirname(os.path.dirname(scipy.linalg.__file__)))
    libdir = os.path.join(site, "scipy.libs")
    for path in glob.glob(os.path.join(libdir, "libscipy_openblas*.so*")):
        lib = ctypes.CDLL(path)
        old = lib.scipy_openblas_get_num_threads()
        lib.scipy_openblas_set_num_threads(k)
        return old
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only n = 64 and 1000")
    ap.add_argument("--bc", default="not-a-knot", help="cubic end condition")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    old_threads = _blas_threads(1)
    try:
        return _run(args, "1" if old_threads is not None else "unknown (no SciPy OpenBLAS found)")
    finally:
        if old_threads is not None:
            _blas_threads(old_threads)


def _interleaved(calls, repeat):
    """Median wall time of each zero-argument call, timed in turn (a fresh random order each round) so that
    load changes during the run and the state left by the previous call hit all of them alike; two untimed
    calls each first (compile, warm-up)."""
    names = list(calls)
    for name in names:
        jax.block_until_ready(calls[name]())
        jax.block_until_ready(calls[name]())
    ts = {name: [] for name in names}
    rng = np.random.default_rng(0)
    for _ in range(repeat):
        for k in rng.permutation(len(names)):
            name = names[k]
            t = time.perf_counter()
            jax.block_until_ready(calls[name]())
            ts[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in ts.items()}


def _run(args, blas):
    sizes = [64, 1000] if args.quick else [64, 1000, 10_000, 100_000]
    print(
        f"# machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, jax {jax.__version__}, backend {jax.default_backend()}, float64, "
        f"BLAS threads {blas}"
    )
    print(f"# cubic interpolation ({args.bc}), m = 10 n sorted points, loss = sum(interpolant), grad wrt y")
    dispatch = median_time(jax.jit(lambda a: a + 1), jnp.ones(3), repeat=2000)
    print(f"# dispatch (empty jitted call): {fmt_seconds(dispatch).strip()}")
    impls = {
        "igax": (None, True),
        "dense-autodiff": (_dense_solve, True),
        "scan-autodiff": (_thomas_scan, True),
        "naive-scan": (_thomas_scan, False),
    }
    rows = []
    for n in sizes:
        rng = np.random.default_rng(0)
        x = jnp.asarray(np.cumsum(rng.uniform(0.5, 1.5, n)))
        y = jnp.asarray(np.sin(np.asarray(x) / 5) + 0.1 * rng.standard_normal(n))
        xq = jnp.linspace(x[0], x[-1], 10 * n)
        repeat = 1000 if n <= 1000 else (100 if n <= 10_000 else 15)
        calls = {}
        grads = {}
        for name, (solver, merge) in impls.items():
            if name == "dense-autodiff" and n > 1000:
                continue
            f = _make(solver, args.bc, merge)
            fwd = jax.jit(f)
            grad = jax.jit(jax.grad(lambda x, y, xq, f=f: jnp.sum(f(x, y, xq)), argnums=1))
            calls[(name, "fwd")] = lambda fwd=fwd, x=x, y=y, xq=xq: fwd(x, y, xq)
            calls[(name, "grad")] = lambda grad=grad, x=x, y=y, xq=xq: grad(x, y, xq)
            grads[name] = np.asarray(grad(x, y, xq))
        # The dense solve costs ~1000x more at n = 1000: time it apart, fewer repeats.
        dense = {k: v for k, v in calls.items() if k[0] == "dense-autodiff"}
        med = _interleaved({k: v for k, v in calls.items() if k not in dense}, repeat)
        if dense:
            med.update(_interleaved(dense, min(repeat, 30)))
        times = {name: (med[(name, "fwd")], med[(name, "grad")]) for name in grads}
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
                    "n": n,
                    "m": 10 * n,
                    "igax": "tridiag-custom-vjp",
                    "igax_s": ti,
                    "baseline": name,
                    "baseline_s": tb,
                    "ratio": tb / ti,
                }
                rows.append(rec)
                print(json.dumps(rec))
    # scaling with n (m = 10 n): fitted slope of log time against log n, n >= 1000
    for base in ("scan-autodiff", "naive-scan"):
        grad_rows = [r for r in rows if r["baseline"] == base and "-grad-" in r["case"] and r["n"] >= 1000]
        if len(grad_rows) < 3:
            continue
        nn = np.array([r["n"] for r in grad_rows], float)
        keys = (
            (("igax", "igax_s"), (base, "baseline_s")) if base == "scan-autodiff" else ((base, "baseline_s"),)
        )
        for label, key in keys:
            slope = np.polyfit(np.log(nn), np.log([r[key] for r in grad_rows]), 1)[0]
            print(f"# {label} gradient time ~ n^{slope:.2f} for n >= 1000")
    return rows


if __name__ == "__main__":
    main()
