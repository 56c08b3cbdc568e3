"""Cubic and quadratic spline interpolation: forward and gradient time of igax against autodiff, same run.

Case: n sites, 10 n sorted evaluation points, loss = sum of the interpolant; the gradient is taken with
respect to the values y, with the sites and points passed as arguments (not baked into the program as
constants). Degree 3 (cubic, ``--bc`` end conditions) and degree 2 (SciPy's quadratic with midpoint knots)
are timed in turn (``--degree`` picks). All implementations share the system assembly
(``interp._cubic_slopes``; for degree 2 the collocation system of ``interp._quadratic``), the point
location (``interp.locate``, merge of sorted points) and the evaluation (one 1-D gather per coefficient
table in a fused Horner loop, differentiated by JAX: the transposes are segment sums). They differ only in
the tridiagonal solve:

* ``igax``: :func:`igax.layers.interpolate` as users call it. On the CPU with the native kernels (the
  default where a C++ compiler is found) the forward pass is one custom call and the gradient in y is one
  custom call of the transposed map (slopes or B-spline coefficients, point runs, segment sums and the
  transposed tridiagonal solve in one O(n + m) pass; ``igax/_native/interp_kernels.cc``);
* ``igax-pure-jax``: the pure-JAX path of the same function (what runs on a GPU or with ``IGAX_NATIVE=0``):
  LAPACK ``gtsv`` (``jax.lax.linalg.tridiagonal_solve``, whose reverse rule is one transposed solve), the
  merge of sorted points and the fused evaluation whose transposes are segment sums;
* ``dense-autodiff``: the same system as a dense matrix, ``jnp.linalg.solve``, differentiated by JAX
  (n <= 1000 only);
* ``scan-autodiff``: a textbook Thomas algorithm in ``lax.scan``, differentiated by JAX;
* ``naive-scan``: what one writes without structure: the same scan, and each point located by its own
  binary search among the sites (``jnp.searchsorted`` per point, O(m log n)) instead of the merge of sorted
  points (O(n + m)). The rest (assembly, evaluation) is still shared.

The baselines share the pure-JAX path's system assembly (``interp._cubic_slopes``), point location and
evaluation, and differ from it only in the tridiagonal solve (and, for ``naive-scan``, the point search).
Against the pure-JAX path, the ``scan-autodiff`` ratio stays modest (about 1-1.3x): with m = 10 n points
the solve and system assembly are only ~20 % of its gradient time at n = 10^4; the rest (point location
~40 %, evaluation and its segment sums ~40 %) is shared code. (That evaluation gathers one 1-D table per
coefficient: rows of a packed (n-1, 5) table were ~10x slower in isolation at m = 10^6.) Below ~1e5
point-break pairs (n = 64) the pure-JAX variants locate by one fused comparison. The native kernels remove
the ~30 XLA operations' fixed costs and do location and evaluation in one pass over the points.

BLAS runs single-threaded for the whole script: the dense LU of n = 1000 takes ~25 ms with one OpenBLAS
thread but 0.2-0.3 s with two threads on a loaded two-core machine (the threads spin waiting for each
other), which made the dense baseline swing by 10x between runs. XLA's own threading is left as is.

On small VMs the large cases (m = 10^6) are dominated by first-touch page faults of the fresh temporary
buffers XLA allocates per call (glibc returns large blocks to the OS): with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` raised the igax gradient at n = 10^5 ran ~2.5x faster; the printed figures use
the default allocator. ``dispatch`` is the time of an empty jitted call: the floor for every row.

Small problems are dominated by how XLA's CPU client runs a call: a program whose cost analysis is under
~1000 flops runs on the calling thread, anything else (every variant here, custom calls included) is handed
to a worker thread and waited for, which costs ~10 us on a loaded two-core VM. The script prints that
floor; ``--sync`` turns async dispatch off (``jax_cpu_enable_async_dispatch=False``, a user setting) to show
the times without it. In the interleaved runs (each implementation in turn) the caches and threads are
colder than in back-to-back calls of one function, which the script also prints for igax.

Times are jit steady-state medians (many repeats; under load they fluctuate, the same-run ratios less).
ratio = baseline time / igax time (bigger is better).

The issue's quadratic case (n = 64, m = 640) is summarised at the end: the igax gradient called back to back
and its ratio to dense-solve autodiff (goals: under 15 us, at least 4x).

Usage: ``python benchmarks/bench_interp_grad.py [--quick] [--sync] [--degree 3,2]``
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

from igax.layers import interp


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


def _make(solver, bc, merge=True, degree=3):
    bc = bc if degree == 3 else "not-a-knot"  # degree 2 has no end conditions to choose

    def f(x, y, xq):
        if solver is None:
            return interp.interpolate(
                x, y, xq, degree=degree, bc_type=bc if degree == 3 else None, assume_sorted=True
            )
        if solver == "pure":
            b = (bc, bc)
            return interp._interpolate(x, y, xq, degree=degree, bc=b, assume_sorted=True, native=False)
        if degree == 2:
            return interp._quadratic(x, y[:, None], xq, merge, solve=solver)[:, 0]
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
    ap.add_argument("--degree", default="3,2", help="spline degrees to time, comma-separated (2 and/or 3)")
    ap.add_argument(
        "--sync",
        action="store_true",
        help="jax_cpu_enable_async_dispatch=False: run each call on the calling thread (no hand-off)",
    )
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    if args.sync:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
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


_LABELS = {2: "quadratic", 3: "cubic"}


def _run(args, blas):
    sizes = [64, 1000] if args.quick else [64, 1000, 10_000, 100_000]
    degrees = [int(d) for d in str(args.degree).split(",")]
    if any(d not in _LABELS for d in degrees):
        raise SystemExit(f"--degree takes 2 and/or 3 (comma-separated), got {args.degree!r}")
    print(
        f"# machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, jax {jax.__version__}, backend {jax.default_backend()}, float64, "
        f"BLAS threads {blas}"
    )
    dispatch = median_time(jax.jit(lambda a: a + 1), jnp.ones(3), repeat=2000)
    print(f"# dispatch (empty jitted call): {fmt_seconds(dispatch).strip()}")
    # XLA runs a program whose cost analysis is under ~1000 flops on the calling thread, anything else (any
    # custom call included) on a worker thread unless async dispatch is off: this is that floor.
    handoff = median_time(jax.jit(lambda a: a * 2.0 + 1.0), jnp.ones(2000), repeat=2000)
    mode = "off (--sync)" if args.sync else "on (default)"
    print(f"# async dispatch {mode}; trivial call with a thread hand-off: {fmt_seconds(handoff).strip()}")
    from igax import _native

    print(f"# native CPU kernels: {'yes' if _native.available() else 'no (' + _native.reason() + ')'}")
    rows, summary = [], []
    for degree in degrees:
        label = _LABELS[degree]
        bc = f" ({args.bc})" if degree == 3 else ""
        print(f"\n# {label} interpolation{bc}, m = 10 n sorted points, loss = sum(interpolant), grad wrt y")
        for n in sizes:
            back_to_back, new = _case(args, degree, n, _native.available())
            rows += new
            dense = [r for r in new if r["baseline"] == "dense-autodiff" and "-grad-" in r["case"]]
            if n == 64 and dense:
                summary.append((label, back_to_back, dense[0]["baseline_s"]))
        # scaling with n (m = 10 n): fitted slope of log time against log n, n >= 1000
        for base in ("scan-autodiff", "naive-scan", "igax-pure-jax"):
            grad_rows = [
                r
                for r in rows
                if r["baseline"] == base and r["case"].startswith(f"{label}-grad-") and r["n"] >= 1000
            ]
            if len(grad_rows) < 3:
                continue
            nn = np.array([r["n"] for r in grad_rows], float)
            keys = (
                (("igax", "igax_s"), (base, "baseline_s"))
                if base == "scan-autodiff"
                else ((base, "baseline_s"),)
            )
            for name, key in keys:
                slope = np.polyfit(np.log(nn), np.log([r[key] for r in grad_rows]), 1)[0]
                print(f"# {label}: {name} gradient time ~ n^{slope:.2f} for n >= 1000")
    print()
    for label, b2b, dense in summary:
        print(
            f"# {label}, n = 64, m = 640: igax gradient back to back {fmt_seconds(b2b).strip()}, "
            f"dense-solve autodiff {fmt_seconds(dense).strip()}: {dense / b2b:.1f}x"
        )
    return rows


def _case(args, degree, n, native):
    """Time every implementation at one size; returns the igax gradient back to back and the JSON rows."""
    impls = {
        "igax": (None, True),
        "igax-pure-jax": ("pure", True),
        "dense-autodiff": (_dense_solve, True),
        "scan-autodiff": (_thomas_scan, True),
        "naive-scan": (_thomas_scan, False),
    }
    label = _LABELS[degree]
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
        f = _make(solver, args.bc, merge, degree)
        fwd = jax.jit(f)
        grad = jax.jit(jax.grad(lambda x, y, xq, f=f: jnp.sum(f(x, y, xq)), argnums=1))
        calls[(name, "fwd")] = lambda fwd=fwd, x=x, y=y, xq=xq: fwd(x, y, xq)
        calls[(name, "grad")] = lambda grad=grad, x=x, y=y, xq=xq: grad(x, y, xq)
        grads[name] = np.asarray(grad(x, y, xq))
    # igax alone, called back to back (caches and threads warm), besides the interleaved medians below.
    back_to_back = median_time(calls[("igax", "grad")], repeat=repeat)
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
    b2b = fmt_seconds(back_to_back).strip()
    print(f"\n{label}, n = {n}, m = {10 * n}; igax gradient called back to back: {b2b}")
    head = f"  {'implementation':16s} {'forward':>12s} {'gradient':>12s}"
    print(head + f" {'fwd ratio':>10s} {'grad ratio':>10s}")
    for name, (tf, tg) in times.items():
        ratios = f"{tf / ti_f:10.1f} {tg / ti_g:10.1f}"
        print(f"  {name:16s} {fmt_seconds(tf):>12s} {fmt_seconds(tg):>12s} {ratios}")
    rows = []
    for name, (tf, tg) in times.items():
        if name == "igax":
            continue
        for what, tb, ti in (("forward", tf, ti_f), ("grad", tg, ti_g)):
            rec = {
                "bench": "interp_grad",
                "case": f"{label}-{what}-n{n}-m{10 * n}",
                "degree": degree,
                "n": n,
                "m": 10 * n,
                "igax": "native-kernels" if native else "pure-jax",
                "igax_s": ti,
                "baseline": name,
                "baseline_s": tb,
                "ratio": tb / ti,
            }
            if what == "grad":
                rec["igax_back_to_back_s"] = back_to_back
            rows.append(rec)
            print(json.dumps(rec))
    return back_to_back, rows


if __name__ == "__main__":
    main()
