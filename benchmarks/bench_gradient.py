"""The cost of a gradient through assemble -> DirichletBC -> solve, piece by piece, against its forward.

The pattern is the README's: a jitted loss that closes over a space, a coefficient ``Field`` as the parameter,
a direct solver (PARDISO where installed, else SuperLU), fresh coefficient values on every call (as in an
optimisation loop; the factorisation cache cannot serve a repeated matrix). Every stage below is timed in
rounds, one call of each per round in the same order (2 warm-up rounds, then ``--reps``: 25 for the ~10k
cases, 5 for the large ones), so that the load of a shared machine weighs on forward and gradient alike;
``grad / forward`` is the median of the round-by-round ratios, with its quartiles. Both clocks are printed
(one row each): wall time and the process's CPU time of all threads (waiting for a core costs nothing
there; spinning threads count). ``--cpu-time`` makes CPU time the headline (the JSON records' ``igax_s``).
For each case we time (medians)

* ``forward``: ``loss(c)``, assembly + boundary conditions + solve + a quadratic loss of the solution;
* ``grad``: ``jax.grad(loss)(c)``; the ratio ``grad / forward`` is the headline (goal <= 1.5);
* the pieces: ``assembly`` (the matrix alone), ``assembly VJP`` (the cotangent of the coefficients from a
  cotangent of the matrix values, as one program: what a gradient runs for its assembly part, tables
  included; goal <= 1.2x ``assembly``), ``assembly bwd`` (the backward pass alone, the forward's residuals
  given: what the gradient adds for its assembly part), ``bc`` (condensation alone), ``solve``
  (condensation, factorisation, solve and diagnostics from given matrix values), ``solve grad`` (the same
  with its gradient: one transposed solve with the same factorisation); ``transposed`` = solve grad -
  solve, and ``other`` = grad - (assembly + assembly bwd + solve grad): what the gradient does beyond its
  parts;
* ``host: factor solve tsolve``: inside the gradient, the time spent in the solver's host callbacks (the
  factorisation, the solve and the transposed solve with the same factorisation), measured by timing
  wrappers around them: wall time (how long XLA waited for each) and, in the CPU row, the CPU time of the
  callback's own thread (MKL's worker threads, where it uses them, are not in it).

Cases (full size / ``--quick``): degree-2 and degree-3 splines on the quarter annulus at ~10k and ~250k DOFs
(quick: the 10k ones only), P1 on the unit square at 1M DOFs (quick: 10k), and 3D linear elasticity with Q1
hexahedra at 108k DOFs (E a Field; quick: 8^3 cells).

``--large`` (minutes) instead measures compilation: a jitted gradient of P1 at 1M DOFs and a jitted forward
of degree-2 spline Poisson at 1000 x 1000 elements, each in a fresh process: first call (trace, compile, run)
against a steady call, the XLA constant-folding alarms on stderr, peak memory (the process's maximum
resident set), and for the spline case the forward against the sum of its parts timed alone (assembly,
solve). ``--large-quick`` runs the same at 1/16 of the sizes; PARDISO tries Cholesky first (the
default), whose analysis overlaps the compilation; ``--bunch-kaufman`` turns that off
(``solvers.set_cholesky_first(False)``) for a comparison.

``--sumfact-ab`` (spline cases) times the sum-factorised assembly's VJP with its band contraction's
written-out transpose (:mod:`igax.fem.forms._sumfact_band`) against JAX's automatic transpose of the same
operations, interleaved call by call in one process (a shared machine's load then weighs on both alike):
``assembly``, ``vjp`` (written out), ``vjp auto``, ``jvp``, as medians and as ratios to the assembly.

The benchmark calls ``igax.fem.keep_freed_memory()`` first, as the performance guide advises for loops
(opt-in: glibc's ``malloc`` thresholds raised, so XLA's per-call temporaries reuse freed memory instead of
being page-faulted in afresh on every call; :mod:`igax.fem._allocator`); run with ``IGAX_MALLOC_TUNING=0``
to measure without it. The header line says which.

``--cpu-time`` makes the process's CPU time (all threads) the headline instead of wall time (and the clock of
``--large``): on a shared machine the other jobs' load then does not enter the figures.

Usage: ``python benchmarks/bench_gradient.py [--quick] [--reps 25] [--cases spline2-10k p1-1M] [--large]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

CASES = ("spline2-10k", "spline3-10k", "spline2-250k", "spline3-250k", "p1-1M", "q1-elasticity3d-108k")
QUICK = {"spline2-10k": 96, "spline3-10k": 97, "p1-1M": 99, "q1-elasticity3d-108k": 8}
FULL = {"spline2-10k": 96, "spline3-10k": 97, "spline2-250k": 498, "spline3-250k": 497, "p1-1M": 999,
        "q1-elasticity3d-108k": 32}  # fmt: skip


# Rounds of the interleaved timings: small cases are fast and noisy (a few ms of a shared machine's load
# move a 50 ms ratio by 0.2), so they get many; the large ones few (each round costs seconds).
_SMALL_REPS, _LARGE_REPS, _SMALL_NDOFS = 25, 5, 50_000


def _ndofs_hint(case: str, n: int) -> int:
    """About how many DOFs a case has at ``n`` elements per direction (to choose its number of rounds)."""
    return 3 * (n + 1) ** 3 if case.startswith("q1") else (n + 3) ** 2


def _method():
    from igax.solvers import available_methods

    return "pardiso" if "pardiso" in available_methods() else "superlu"


_CLOCK = [time.perf_counter]  # --cpu-time: time.process_time (CPU seconds of all the process's threads)


def _median_fresh(fn, make, reps: int) -> float:
    """Median wall time of ``fn(*make())`` over ``reps`` calls with fresh arguments, after two warm-ups."""
    for _ in range(2):
        jax.block_until_ready(fn(*make()))
    ts = []
    for _ in range(reps):
        args = make()
        jax.block_until_ready(args)
        t = _CLOCK[0]()
        jax.block_until_ready(fn(*args))
        ts.append(_CLOCK[0]() - t)
    return float(np.median(ts))


def build(case: str, n: int):
    """``(space, coefficient space, form, matrix(c), b, bc)`` of a case with ``n`` elements per direction."""
    from igax import fem
    from igax.fem import library, mesh

    if case.startswith("spline"):
        deg = int(case[6])
        V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=deg, elements=(n, n)))
        S, form = V, library.diffusion
        b = fem.assemble(library.source, V, f=1.0)
        bc = fem.DirichletBC(V, None, 0.0)
        matrix = lambda c: fem.assemble(form, V, kappa=fem.Field(S, c))  # noqa: E731
    elif case.startswith("p1"):
        V = fem.LagrangeSpace(mesh.unit_square(n), degree=1)
        S, form = V, library.diffusion
        b = fem.assemble(library.source, V, f=1.0)
        bc = fem.DirichletBC(V, None, 0.0)
        matrix = lambda c: fem.assemble(form, V, kappa=fem.Field(S, c))  # noqa: E731
    else:  # 3D linear elasticity on Q1 hexahedra, Young's modulus a Field, clamped on the left
        M = mesh.unit_cube(n, cell="hexahedron")
        V = fem.LagrangeSpace(M, degree=1, shape=(3,))
        S = fem.LagrangeSpace(M, degree=1)
        form = library.linear_elasticity(None, 0.3, "3d")
        b = fem.assemble(library.source, V, f=np.array([0.0, 0.0, -1.0]))
        bc = fem.DirichletBC(V, "left", 0.0)
        matrix = lambda c: fem.assemble(form, V, E=fem.Field(S, c))  # noqa: E731
    return V, S, matrix, b, bc


class _HostTimer:
    """Wall and CPU seconds spent in the solver's host callbacks (factorisation, solve, transposed solve)
    while it is on: the timing wrappers replace the callbacks before the programs are traced."""

    def __init__(self):
        from igax.solvers import _backends

        self.mod, self.saved = _backends, (_backends.factor_callback, _backends.solve_callback)
        self.on, self.solves = False, 0
        self.reset()
        factor, solve = self.saved

        def timed(stage, fn):
            def wrapper(*args, **kwargs):
                if not self.on:
                    return fn(*args, **kwargs)
                name = stage
                if stage == "solve":  # a gradient's second solve is its transposed one
                    name = "tsolve" if self.solves % 2 else "solve"
                    self.solves += 1
                t, c = time.perf_counter(), time.thread_time()  # the callback's thread (MKL's own excluded)
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.t[name][0] += time.perf_counter() - t
                    self.t[name][1] += time.thread_time() - c

            return wrapper

        _backends.factor_callback = timed("factor", factor)
        _backends.solve_callback = timed("solve", solve)

    def reset(self):
        self.t = {k: [0.0, 0.0] for k in ("factor", "solve", "tsolve")}
        self.solves = 0

    def restore(self):
        self.mod.factor_callback, self.mod.solve_callback = self.saved


def run_case(case: str, n: int, reps: int) -> dict:
    """Every stage timed in rounds: one call of each per round, in the same order, fresh inputs every call,
    two warm-up rounds. The rounds interleave forward and gradient, so a shared machine's load weighs on
    both alike, and ``grad / forward`` is also taken round by round (paired): ``ratio`` is its median,
    ``ratio_q`` its quartiles. Wall time and the process's CPU time (all threads) are both recorded."""
    from igax import fem
    from igax.fem.bc import condense

    host = _HostTimer()  # before anything is traced
    try:
        V, S, matrix, b, bc = build(case, n)
        method = _method()
        rng = np.random.default_rng(0)

        def fresh_c():
            return (jnp.asarray(1.0 + 0.5 * rng.random(S.ndofs)),)

        matrix(jnp.ones(S.ndofs))  # eagerly once, as a set-up would: the symmetry check is then done

        def loss(c):
            u = fem.solve(matrix(c), b, bc=bc, method=method)
            return jnp.sum(u.coeffs**2)

        A0 = matrix(jnp.ones(S.ndofs))
        pattern = A0.pattern
        nnz = A0.nnz

        def solve_loss(v):
            u = fem.solve(A0.with_values(v), b, bc=bc, method=method)
            return jnp.sum(u.coeffs**2)

        def fresh_v():  # a new scalar factor: symmetric positive definite, and a new factorisation every call
            return (A0.values * (1.0 + 0.5 * rng.random()),)

        def fresh_cw():
            return fresh_c() + (jnp.asarray(rng.standard_normal(nnz)),)

        constrained, diag = bc._masks(pattern)

        def bc_only(v):
            Ac, bcond = condense(A0.with_values(v), b, bc.dofs, bc.values, constrained, diag)
            return Ac.values, bcond

        # The backward pass alone: one forward's residuals (tables, ...) given, a fresh cotangent each call.
        _, pullback = jax.vjp(lambda c: matrix(c).values, fresh_c()[0])
        progs = {
            "forward": (jax.jit(loss), fresh_c),
            "grad": (jax.jit(jax.grad(loss)), fresh_c),
            "assembly": (jax.jit(lambda c: matrix(c).values), fresh_c),
            "assembly_vjp": (jax.jit(lambda c, w: jax.vjp(lambda c: matrix(c).values, c)[1](w)[0]), fresh_cw),
            "assembly_bwd": (jax.jit(lambda w: pullback(w)[0]), lambda: fresh_cw()[1:]),
            "bc": (jax.jit(bc_only), fresh_v),
            "solve": (jax.jit(solve_loss), fresh_v),
            "solve_grad": (jax.jit(jax.grad(solve_loss)), fresh_v),
        }
        wall = {k: [] for k in progs}
        cpu = {k: [] for k in progs}
        hosts = []
        for r in range(reps + 2):
            for k, (f, make) in progs.items():
                args = make()
                jax.block_until_ready(args)
                host.reset()
                host.on = k == "grad"
                t, c = time.perf_counter(), time.process_time()
                jax.block_until_ready(f(*args))
                t, c = time.perf_counter() - t, time.process_time() - c
                host.on = False
                if r >= 2:  # two warm-up rounds (compilation)
                    wall[k].append(t)
                    cpu[k].append(c)
                    if k == "grad":
                        hosts.append({s: tuple(v) for s, v in host.t.items()})
    finally:
        host.restore()
    out = {"case": case, "ndofs": V.ndofs, "method": method, "reps": reps}
    for clock, data in (("wall", wall), ("cpu", cpu)):
        t = {k: float(np.median(v)) for k, v in data.items()}
        t["transposed"] = t["solve_grad"] - t["solve"]
        t["other"] = t["grad"] - t["assembly"] - t["assembly_bwd"] - t["solve_grad"]
        paired = np.asarray(data["grad"]) / np.asarray(data["forward"])
        out[clock] = t
        out[f"{clock}_ratio"] = float(np.median(paired))
        out[f"{clock}_ratio_q"] = (float(np.quantile(paired, 0.25)), float(np.quantile(paired, 0.75)))
        # the gradient's host callbacks, inside the callback's thread: wall, and that thread's CPU time
        i = 0 if clock == "wall" else 1
        out[f"{clock}_host"] = {s: float(np.median([h[s][i] for h in hosts])) for s in hosts[0]}
    out["times"] = out["cpu"] if _CLOCK[0] is time.process_time else out["wall"]
    return out


def run_sumfact_ab(case: str, n: int, reps: int) -> dict:
    """Assembly, its VJP with the written-out band transpose and with JAX's automatic one, and its JVP,
    timed interleaved (one call of each per round, fresh coefficients), medians over ``reps`` rounds."""
    from igax.fem.forms import _sumfact_band, _sumfact_ops

    sf_mod = sys.modules["igax.fem.forms.sumfact"]
    V, S, matrix, b, bc = build(case, n)
    rng = np.random.default_rng(0)
    values = lambda c: matrix(c).values  # noqa: E731
    values(jnp.ones(S.ndofs))
    nnz = V.pattern.nnz
    progs = {
        "assembly": jax.jit(lambda c, w: values(c)),
        "vjp": jax.jit(lambda c, w: jax.vjp(values, c)[1](w)[0]),
        "jvp": jax.jit(lambda c, w: jax.jvp(values, (c,), (w[: S.ndofs],))[1]),
    }

    def plain(D, start, spec):  # the same operations, no primitive: JAX transposes them
        return _sumfact_band._band_impl(D, jnp.asarray(start, jnp.int32), spec=spec)

    auto_values = eqx_filter_jit(lambda *a: sf_mod._values(*a))
    band = _sumfact_ops.band

    def vjp_auto(c, w):
        _sumfact_ops.band, saved = plain, sf_mod._values_jit
        sf_mod._values_jit = auto_values
        try:
            return jax.vjp(values, c)[1](w)[0]
        finally:
            _sumfact_ops.band, sf_mod._values_jit = band, saved

    progs["vjp_auto"] = jax.jit(vjp_auto)
    times = {k: [] for k in progs}
    cpu = {k: [] for k in progs}  # process time: less sensitive than wall time to other jobs on the machine
    for r in range(reps + 2):
        for k, f in progs.items():
            c = jnp.asarray(1.0 + 0.5 * rng.random(S.ndofs))
            w = jnp.asarray(rng.standard_normal(nnz))
            jax.block_until_ready((c, w))
            t, p = time.perf_counter(), time.process_time()
            jax.block_until_ready(f(c, w))
            if r >= 2:  # two warm-up rounds (compilation)
                times[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - p)
    return {"case": case, "ndofs": V.ndofs, "times": {k: float(np.median(v)) for k, v in times.items()},
            "cpu": {k: float(np.median(v)) for k, v in cpu.items()},
            "spread": {k: (float(np.min(v)), float(np.max(v))) for k, v in times.items()}}  # fmt: skip


def eqx_filter_jit(fn):
    import equinox as eqx

    return eqx.filter_jit(fn)


# -- --large: compilation of big programs, each in a fresh process ------------------------------------------
def _proc_gb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak since the last :func:`_reset_peak`) in GiB (Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _pardiso_plan(method: str):
    """The PARDISO plan used last (its analysis and factorisation times, memory, fill), or None."""
    plans = list(getattr(sys.modules.get("igax.solvers.backends.pardiso"), "_plans", {}).values())
    return plans[-1] if method == "pardiso" and plans else None


def _reset_peak() -> None:
    """Restart the peak ``VmHWM`` from the current resident size (Linux >= 4.0), so each stage has its own."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _large_child(case: str, n: int) -> dict:
    from igax import fem, solvers
    from igax.fem import library, mesh

    method = _method()
    # Keep one factorisation (a loop with fresh coefficients never reuses one; the default keeps four, each
    # gigabytes at this size). A gradient still reuses its forward's factorisation for the transposed solve.
    solvers.set_cache_size(1)
    # PARDISO tries Cholesky first (the default); its analysis starts while the program compiles.
    # --bunch-kaufman (BENCH_CHOLESKY_FIRST=0) turns it off.
    cholesky = os.environ.get("BENCH_CHOLESKY_FIRST") != "0"
    solvers.set_cholesky_first(cholesky)
    out = {"case": case, "n": n, "method": method, "cholesky_first": cholesky}
    t0 = time.perf_counter()
    if case == "p1-grad":
        V = fem.LagrangeSpace(mesh.unit_square(n), degree=1)
        b = fem.assemble(library.source, V, f=1.0)
        bc = fem.DirichletBC(V, None, 0.0)
        fem.assemble(library.diffusion, V, kappa=1.0)  # the eager set-up (symmetry verified once)

        def f(c):
            A = fem.assemble(library.diffusion, V, kappa=fem.Field(V, c))
            return jnp.sum(fem.solve(A, b, bc=bc, method=method).coeffs ** 2)

        f = jax.jit(jax.grad(f))
        parts = None
    else:  # degree-2 spline Poisson, jitted forward: kappa a Field, solution's coefficients out
        V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(n, n)))
        b = fem.assemble(library.source, V, f=1.0)
        bc = fem.DirichletBC(V, None, 0.0)
        fem.assemble(library.diffusion, V, kappa=1.0)

        def matrix(c):
            return fem.assemble(library.diffusion, V, kappa=fem.Field(V, c))

        f = jax.jit(lambda c: fem.solve(matrix(c), b, bc=bc, method=method).coeffs)
        parts = (jax.jit(lambda c: matrix(c).values), matrix)
    out["build_s"] = time.perf_counter() - t0
    out["ndofs"] = V.ndofs
    rng = np.random.default_rng(0)

    def fresh():
        return jnp.asarray(1.0 + 0.5 * rng.random(V.ndofs))

    out["rss_setup_gb"] = _proc_gb("VmRSS")
    # The first call in its stages (trace, compile, first run), each with its own peak of resident memory.
    c = fresh()
    _reset_peak()
    cpu = time.process_time()  # CPU seconds of all the process's threads (robust to a loaded machine)
    t = time.perf_counter()
    lowered = f.lower(c)
    out["trace_s"] = time.perf_counter() - t
    t = time.perf_counter()
    f = lowered.compile()
    out["compile_s"] = time.perf_counter() - t
    del lowered
    # XLA's working memory of one call (one block, resident for the whole call, host callbacks included)
    out["program_temp_gb"] = f.memory_analysis().temp_size_in_bytes / 2**30
    out["peak_compile_gb"] = _proc_gb("VmHWM")
    _reset_peak()
    t = time.perf_counter()
    jax.block_until_ready(f(c))
    out["first_run_s"] = time.perf_counter() - t
    out["first_s"] = out["trace_s"] + out["compile_s"] + out["first_run_s"]
    out["first_cpu_s"] = time.process_time() - cpu
    out["peak_first_gb"] = _proc_gb("VmHWM")
    plan = _pardiso_plan(method)
    # PARDISO: the symbolic analysis (first call only), the first factorisation, the factor's size
    if plan is not None:
        # (Cholesky's analysis runs in the background from the trace on, overlapping the compilation; the
        # first factorisation waited analysis_wait_s for it: the part of the analysis the first call pays)
        out.update(analysis_s=plan.analysis_s, analysis_wait_s=getattr(plan, "wait_s", None),
                   mtype=int(plan.mtype), first_factor_s=plan.factor_s,
                   pardiso_gb=plan.memory_kb() / 2**20, factor_nnz=int(plan.iparm[17]))  # fmt: skip
        # the ordering: "grid" (the grid's nested dissection, checked and formed in ordering_s before the
        # analysis, in its thread) or "metis" (inside the analysis)
        out.update(ordering=getattr(plan, "ordering", "metis"), ordering_s=getattr(plan, "ordering_s", 0.0))
    _reset_peak()
    cpu = time.process_time()
    out["steady_s"] = _median_fresh(f, lambda: (fresh(),), 3)
    out["steady_cpu_s"] = (time.process_time() - cpu) / 5  # the mean of its five calls (two warm-ups)
    out["peak_steady_gb"] = _proc_gb("VmHWM")
    if plan is not None:
        out["factor_s"] = plan.factor_s  # the last steady call's
    # the program's peak: set-up, compilation, first and steady calls (not the parts timed alone below)
    out["peak_rss_gb"] = max(out["peak_compile_gb"], out["peak_first_gb"], out["peak_steady_gb"])
    _reset_peak()
    if parts is not None:
        values, matrix = parts
        out["assembly_s"] = _median_fresh(values, lambda: (fresh(),), 3)
        A = matrix(fresh())
        solve = jax.jit(lambda v: fem.solve(A.with_values(v), b, bc=bc, method=method).coeffs)
        out["solve_s"] = _median_fresh(solve, lambda: (A.values * (1.0 + 0.1 * rng.random()),), 3)
    out["peak_parts_gb"] = _proc_gb("VmHWM")  # while the parts ran (their own programs added)
    return out


def run_large(quick: bool) -> list[dict]:
    sizes = {"p1-grad": 249 if quick else 999, "spline2-forward": 250 if quick else 1000}
    rows = []
    for case, n in sizes.items():
        cmd = [sys.executable, __file__, "--large-child", case, str(n)]
        p = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if p.returncode != 0:
            raise RuntimeError(f"{case} failed:\n{p.stderr[-4000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["alarms"] = p.stderr.count("Constant folding an instruction is taking")
        rows.append(r)
    return rows


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--reps", type=int, default=None, help="rounds (default: see _SMALL_REPS)")
    ap.add_argument("--cases", nargs="*", default=None, choices=CASES)
    ap.add_argument("--large", action="store_true", help="compile time and memory of 1M-DOF programs")
    ap.add_argument("--large-quick", action="store_true", help="--large at 1/16 of the sizes")
    ap.add_argument("--bunch-kaufman", action="store_true", help="--large, no Cholesky first (PARDISO)")
    ap.add_argument("--large-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--cpu-time", action="store_true", help="medians of CPU time (a shared machine's load)")
    ap.add_argument("--sumfact-ab", action="store_true", help="VJP: written-out vs automatic band transpose")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    if args.cpu_time:  # CPU seconds of all threads: the other jobs of a shared machine do not enter
        _CLOCK[0] = time.process_time
    from igax.fem import keep_freed_memory

    tuned = keep_freed_memory()  # the opt-in the performance guide advises for loops (see the docstring)
    jnp.zeros(1).block_until_ready()  # start the backend outside the timings
    if args.large_child:
        print(json.dumps(_large_child(args.large_child[0], int(args.large_child[1]))), flush=True)
        return []
    head = f"platform {platform.platform()}, {os.cpu_count()} CPUs, jax {jax.__version__}"
    head += f", malloc tuning {'on' if tuned else 'off'}"
    if args.large or args.large_quick:
        if args.bunch_kaufman:
            os.environ["BENCH_CHOLESKY_FIRST"] = "0"  # read by each child process
            head += ", PARDISO Bunch-Kaufman (solvers.set_cholesky_first(False))"
        print(f"bench_gradient --large: {head}, {'1/16 sizes' if args.large_quick else 'full sizes'}")
        rows = run_large(args.large_quick)
        print(
            f"{'case':16s} {'ndofs':>8s} {'build':>7s} {'trace':>6s} {'compile':>7s} {'run 1':>7s} "
            f"{'first':>7s} {'steady':>7s} {'first/st':>8s} {'alarms':>6s} {'peak GB':>7s} {'parts':>7s} "
            f"{'fwd/parts':>9s}"
        )
        for r in rows:
            parts = r.get("assembly_s", 0.0) + r.get("solve_s", 0.0)
            fp = f"{r['steady_s'] / parts:9.2f}" if parts else f"{'-':>9s}"
            print(
                f"{r['case']:16s} {r['ndofs']:8d} {r['build_s']:7.2f} {r['trace_s']:6.2f} "
                f"{r['compile_s']:7.2f} {r['first_run_s']:7.2f} {r['first_s']:7.2f} {r['steady_s']:7.3f} "
                f"{r['first_s'] / r['steady_s']:8.2f} {r['alarms']:6d} {r['peak_rss_gb']:7.2f} {parts:7.3f} "
                f"{fp}"
            )
            print(
                f"{'':16s} peak GB: set-up {r['rss_setup_gb']:.2f} (resident), compile "
                f"{r['peak_compile_gb']:.2f}, first call {r['peak_first_gb']:.2f}, steady "
                f"{r['peak_steady_gb']:.2f}, parts "
                f"{r['peak_parts_gb']:.2f}"
                + (
                    f"; PARDISO (mtype {r.get('mtype')}): analysis {r['analysis_s']:.2f} s (first call "
                    f"waited {r.get('analysis_wait_s') or 0.0:.2f} s of it), factorisation "
                    f"{r['first_factor_s']:.2f} s "
                    f"(first), {r['factor_s']:.2f} s (steady), "
                    f"{r['factor_nnz'] / 1e6:.1f}M factor entries, {r['pardiso_gb']:.2f} GB"
                    if "analysis_s" in r
                    else ""
                )
            )
            rec = {"bench": "gradient-compile", "case": f"{r['case']}-{r['ndofs'] // 1000}k",
                   "igax": "first-call", "igax_s": r["first_s"], "baseline": "steady-call",
                   "baseline_s": r["steady_s"], "ratio": r["steady_s"] / r["first_s"], "alarms": r["alarms"],
                   "peak_rss_gb": r["peak_rss_gb"]}  # fmt: skip
            rec.update({k: r[k] for k in ("trace_s", "compile_s", "first_run_s", "rss_setup_gb",
                        "peak_compile_gb", "peak_first_gb", "peak_steady_gb", "peak_parts_gb", "analysis_s",
                        "analysis_wait_s", "mtype", "first_factor_s", "first_cpu_s", "steady_cpu_s",
                        "factor_s", "pardiso_gb", "factor_nnz") if k in r})  # fmt: skip
            if parts:
                rec.update(
                    assembly_s=r["assembly_s"], solve_s=r["solve_s"], forward_over_parts=r["steady_s"] / parts
                )
            print(json.dumps(rec), flush=True)
        return rows
    sizes = QUICK if args.quick else FULL
    cases = args.cases or [c for c in CASES if c in sizes]
    if args.sumfact_ab:
        args.reps = args.reps or 7
        print(f"bench_gradient --sumfact-ab: {head}, median of {args.reps} interleaved rounds (ms)")
        print(f"{'case':16s} {'ndofs':>8s} {'assembly':>9s} {'vjp':>9s} {'vjp auto':>9s} {'jvp':>9s}  "
              "vjp/asm auto/asm jvp/asm | CPU: assembly vjp vjp/asm")  # fmt: skip
        rows = []
        for case in [c for c in cases if c.startswith("spline")]:
            r = run_sumfact_ab(case, sizes[case], args.reps)
            t = r["times"]
            a = t["assembly"]
            print(f"{case:16s} {r['ndofs']:8d} " + " ".join(f"{1e3 * t[k]:9.2f}" for k in
                  ("assembly", "vjp", "vjp_auto", "jvp")) + f"  {t['vjp'] / a:7.2f} {t['vjp_auto'] / a:8.2f} "
                  f"{t['jvp'] / a:7.2f} | {1e3 * r['cpu']['assembly']:9.2f} {1e3 * r['cpu']['vjp']:9.2f} "
                  f"{r['cpu']['vjp'] / r['cpu']['assembly']:6.2f}", flush=True)  # fmt: skip
            name = f"{case.rsplit('-', 1)[0]}-{r['ndofs'] // 1000}k"
            print(json.dumps({"bench": "gradient-sumfact", "case": name,
                              "igax": "vjp-written-out", "igax_s": t["vjp"], "baseline": "vjp-automatic",
                              "baseline_s": t["vjp_auto"], "ratio": t["vjp_auto"] / t["vjp"],
                              "vjp_over_assembly": t["vjp"] / a, "auto_over_assembly": t["vjp_auto"] / a,
                              "jvp_over_assembly": t["jvp"] / a, "times_s": t, "cpu_s": r["cpu"],
                              "spread_s": r["spread"]}),
                  flush=True)  # fmt: skip
            rows.append(r)
        return rows
    headline = "cpu" if args.cpu_time else "wall"
    size = "quick" if args.quick else "full"
    print(f"bench_gradient: {head}, {size} sizes, interleaved rounds (--reps, default {_SMALL_REPS} below "
          f"{_SMALL_NDOFS} DOFs, else {_LARGE_REPS}), medians; headline clock: "
          f"{'CPU time of all threads' if args.cpu_time else 'wall time'}")  # fmt: skip
    cols = ("forward", "grad", "assembly", "assembly_vjp", "assembly_bwd", "bc", "solve", "solve_grad")
    cols = cols + ("transposed", "other")
    names = " ".join(f"{c[:10]:>10s}" for c in cols)
    print(f"{'case':22s} {'ndofs':>8s} {names}  grad/fwd [quartiles] vjp/asm bwd/asm | host: factor solve "
          "tsolve (ms)")  # fmt: skip
    records = []
    for case in cases:
        reps = args.reps or (_SMALL_REPS if _ndofs_hint(case, sizes[case]) < _SMALL_NDOFS else _LARGE_REPS)
        r = run_case(case, sizes[case], reps)
        for clock in (headline, "cpu" if headline == "wall" else "wall"):
            t, h = r[clock], r[f"{clock}_host"]
            g, (q1, q3) = r[f"{clock}_ratio"], r[f"{clock}_ratio_q"]
            v, w = t["assembly_vjp"] / t["assembly"], t["assembly_bwd"] / t["assembly"]
            print(
                f"{case + ' ' + clock:22s} {r['ndofs']:8d} "
                + " ".join(f"{1e3 * t[c]:10.2f}" for c in cols)
                + f"  {g:8.2f} [{q1:.2f}, {q3:.2f}] {v:7.2f} {w:7.2f} | "
                + " ".join(f"{1e3 * h[s]:6.2f}" for s in ("factor", "solve", "tsolve")),
                flush=True,
            )
        t = r[headline]
        g = r[f"{headline}_ratio"]
        v, w = t["assembly_vjp"] / t["assembly"], t["assembly_bwd"] / t["assembly"]
        name = f"{case.rsplit('-', 1)[0]}-{r['ndofs'] // 1000}k"
        recs = [
            {"bench": "gradient", "case": name, "igax": "grad", "igax_s": t["grad"], "baseline": "forward",
             "baseline_s": t["forward"], "ratio": 1.0 / g, "grad_over_forward": g, "clock": headline,
             "grad_over_forward_wall": r["wall_ratio"], "grad_over_forward_cpu": r["cpu_ratio"],
             "quartiles_wall": r["wall_ratio_q"], "quartiles_cpu": r["cpu_ratio_q"], "reps": reps,
             "method": r["method"], "pieces_s": t, "pieces_wall_s": r["wall"], "pieces_cpu_s": r["cpu"],
             "host_wall_s": r["wall_host"], "host_thread_cpu_s": r["cpu_host"]},
            {"bench": "gradient", "case": name, "igax": "assembly-vjp", "igax_s": t["assembly_vjp"],
             "baseline": "assembly", "baseline_s": t["assembly"], "ratio": t["assembly"] / t["assembly_vjp"],
             "vjp_over_forward": v},
            {"bench": "gradient", "case": name, "igax": "assembly-backward", "igax_s": t["assembly_bwd"],
             "baseline": "assembly", "baseline_s": t["assembly"], "ratio": t["assembly"] / t["assembly_bwd"],
             "backward_over_forward": w},
        ]  # fmt: skip
        for rec in recs:
            print(json.dumps(rec), flush=True)
        records.append(r)
    return records


if __name__ == "__main__":
    main()
