"""Start-up: the README's first example run cold, compile time per new mesh size, and a second run with
JAX's persistent compilation cache.

Every measurement runs in a fresh Python process (cold: nothing compiled, nothing imported):

* ``readme-cold``: the README's "A taste" snippet (read from README.md, so it stays the one users see), with
  no persistent cache: the imports (JAX and igax), then the snippet (trace, compile, run). Its baseline is
  the same snippet in a second process with the persistent cache warm (``readme-warm-cache``: a first
  process fills an empty cache directory through ``igax.enable_compilation_cache``, the second reads it);
  ratio = cold / warm. Programs that call back into Python (every direct sparse solve) are not stored by
  JAX, so they are compiled in the warm run too: the script prints how many compilations each run did.
* ``new-size/<task>``: small newcomer tasks (below), each in one process at tiny mesh sizes in turn, e.g. 4 x
  4, 5 x 5, 6 x 6 elements: the time to the first result at each new size, the number of XLA compilations it
  triggered, and the time of a second call at the same size (everything compiled). The first size also pays
  the one-time costs of the process (the first solver call loads MKL, JAX's first operations compile); the
  later sizes show what a new mesh size costs. Baseline: the first size; ratio = first-size time /
  new-size time. Compile time per new size ~ first-result time - second-call time.

Tasks (degree-2 splines; the forms and geometries of igax's library):

* ``heat``: Robin heat problem, eager: diffusion + Robin matrix, source + Robin load (callables of x), a
  Dirichlet value given as a callable (L2-projected on the boundary), ``fem.solve``, a functional;
* ``inverse``: ``jax.jit(jax.value_and_grad(loss))`` of a misfit in a Robin coefficient ``z0 + z1 y / 2``;
* ``cantilever``: 3D elasticity (vector space), ``jax.jit(jax.value_and_grad)`` of the compliance in E;
* ``vmap``: ``jax.jit(jax.vmap(forward))`` over 4 conductivities.

Times are wall and CPU seconds of a busy shared machine: the number of compilations does not depend on the
load, the times do (the load average is printed). ``--pythonpath DIR`` runs the children against another
igax checkout (e.g. a ``git worktree`` of an older commit) to compare before and after.

Usage: ``python benchmarks/bench_startup.py [--quick] [--tasks heat inverse] [--sizes 4 5 6]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TASKS = ("heat", "inverse", "cantilever", "vmap")


# -- children (fresh processes) ------------------------------------------------------------------------------
def _counters():
    """Count XLA compilations and persistent-cache events from here on (JAX's monitoring hooks).

    JAX reports a "compilation" for every program it needs, also when the persistent cache supplies it; the
    count here is of programs actually compiled (requests minus cache hits).
    """
    from jax import monitoring

    c = {"compiles": 0, "compile_s": 0.0, "cache_hits": 0, "cache_misses": 0}

    def on_duration(name, secs, **_):
        if name.endswith("backend_compile_duration"):
            c["compiles"] += 1
            c["compile_s"] += secs

    def on_event(name, **_):
        if name == "/jax/compilation_cache/cache_hits":
            c["cache_hits"] += 1
            c["compiles"] -= 1  # read from the cache, not compiled
        elif name == "/jax/compilation_cache/cache_misses":
            c["cache_misses"] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
    return c


def _enable_cache(path: str) -> None:
    """``igax.enable_compilation_cache(path)``; the same JAX options for an igax without it (--pythonpath)."""
    import jax

    import igax

    if hasattr(igax, "enable_compilation_cache"):
        igax.enable_compilation_cache(path)
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def readme_snippet() -> str:
    """The first Python block after the "A taste" heading of README.md."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## A taste") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _child_readme(cache: str | None) -> dict:
    w0, c0 = time.perf_counter(), time.process_time()
    import jax

    counts = _counters()
    import igax  # noqa: F401  (the snippet imports igax.fem; timed here as part of the imports)

    if cache:
        _enable_cache(cache)
    w1, c1 = time.perf_counter(), time.process_time()
    ns: dict = {}
    exec(compile(readme_snippet(), "README.md (A taste)", "exec"), ns)
    jax.block_until_ready(ns["g"])
    w2, c2 = time.perf_counter(), time.process_time()
    return {
        "import_s": w1 - w0,
        "import_cpu_s": c1 - c0,
        "snippet_s": w2 - w1,
        "snippet_cpu_s": c2 - c1,
        "total_s": w2 - w0,
        "total_cpu_s": c2 - c0,
        **counts,
    }


def _task(name: str):
    """The newcomer task ``name``: ``prepare(n)`` -> ``run()`` for n elements per direction.

    ``run`` does the task's work: called twice, the second call shows the cost without compilation (for
    the jitted tasks it reuses the jitted function; the eager task repeats everything, all compiled).
    """
    import jax
    import jax.numpy as jnp

    from igax import fem
    from igax.fem import library as lib

    @fem.functional
    def mean(w):
        return w.u

    @fem.functional
    def misfit(w):
        return (w.u - w.target) ** 2

    elasticity = lib.linear_elasticity(nu=0.3, kind="3d")

    def square(n):
        return fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=(n, n)))

    def heat(n):
        def run():
            V = square(n)
            A = fem.assemble(lib.diffusion, V, kappa=1.0)
            A = A + fem.assemble(lib.robin, V, boundary="right", alpha=2.0)
            b = fem.assemble(lib.source, V, f=lambda x: 1.0 + x[0])
            b = b + fem.assemble(lib.robin_load, V, boundary="right", alpha=2.0, u_inf=0.5)
            u = fem.solve(A, b, bc=fem.DirichletBC(V, "left", lambda x: x[1]))
            return fem.assemble(mean, V, u=u)

        return run

    def inverse(n):
        V = square(n)
        bc = fem.DirichletBC(V, "left", 0.0)

        def loss(z):
            alpha = lambda x: z[0] + z[1] * x[1] / 2  # noqa: E731
            A = fem.assemble(lib.diffusion, V, kappa=1.0)
            A = A + fem.assemble(lib.robin, V, boundary="right", alpha=alpha)
            u = fem.solve(A, fem.assemble(lib.source, V, f=1.0), bc=bc)
            return fem.assemble(misfit, V, u=u, target=lambda x: 0.3 * x[0])

        f = jax.jit(jax.value_and_grad(loss))
        return lambda: f(jnp.array([2.0, 1.5]))[0]

    def cantilever(n):
        V = fem.SplineSpace(fem.geometry.box().refine(degree=2, elements=(2 * n, 2, 2)), shape=(3,))
        bc = fem.DirichletBC(V, "left", 0.0)
        b = fem.assemble(lib.traction, V, boundary="right", t=jnp.array([0.0, 0.0, -1.0]))

        def compliance(E):
            return jnp.dot(b, fem.solve(fem.assemble(elasticity, V, E=E), b, bc=bc).coeffs)

        f = jax.jit(jax.value_and_grad(compliance))
        return lambda: f(1.0e3)[0]

    def vmap(n):
        V = square(n)
        bc = fem.DirichletBC(V, None, 0.0)
        b = fem.assemble(lib.source, V, f=1.0)

        def forward(k):
            return fem.assemble(mean, V, u=fem.solve(fem.assemble(lib.diffusion, V, kappa=k), b, bc=bc))

        f = jax.jit(jax.vmap(forward))
        return lambda: jnp.sum(f(jnp.linspace(1.0, 2.0, 4)))

    return {"heat": heat, "inverse": inverse, "cantilever": cantilever, "vmap": vmap}[name]


def _child_sizes(name: str, sizes: list[int], cache: str | None = None) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    counts = _counters()
    if cache:
        _enable_cache(cache)
    task = _task(name)
    out = []
    for n in sizes:
        k0 = dict(counts)
        w, c = time.perf_counter(), time.process_time()
        run = task(n)
        value = float(jax.block_until_ready(run()))
        first, first_cpu = time.perf_counter() - w, time.process_time() - c
        k1 = dict(counts)
        w = time.perf_counter()
        jax.block_until_ready(run())
        again = time.perf_counter() - w
        out.append(
            {
                "n": n,
                "first_s": first,
                "first_cpu_s": first_cpu,
                "again_s": again,
                "compiles": k1["compiles"] - k0["compiles"],
                "compile_s": k1["compile_s"] - k0["compile_s"],
                "cache_hits": k1["cache_hits"] - k0["cache_hits"],
                "value": value,
            }
        )
    return {"task": name, "sizes": out}


# -- parent --------------------------------------------------------------------------------------------------
def _run_child(args: list[str], pythonpath: str | None) -> dict:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # cold means cold
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    w = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    wall = time.perf_counter() - w
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["process_s"] = wall
    return rec


def _machine() -> str:
    import jax

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load:.1f}, Python {platform.python_version()}, JAX {jax.__version__}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tasks heat and inverse at sizes 4 and 5 only")
    ap.add_argument("--tasks", nargs="+", choices=TASKS, help="newcomer tasks to time (default: all)")
    ap.add_argument("--sizes", nargs="+", type=int, help="elements per direction, in turn (default 4 5 6)")
    ap.add_argument("--pythonpath", help="run the children against the igax found here")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "readme":
            rec = _child_readme(rest[0] if rest else None)
        else:
            cache = rest[-1] if not rest[-1].isdigit() else None
            rec = _child_sizes(rest[0], [int(s) for s in rest[1:] if s.isdigit()], cache)
        print(json.dumps(rec))
        return

    tasks = args.tasks or (("heat", "inverse") if args.quick else TASKS)
    sizes = args.sizes or ([4, 5] if args.quick else [4, 5, 6])
    print(f"# machine: {_machine()}")
    print("# every run in a fresh process; times in seconds (wall, and CPU of the process)")
    records = []

    # 1. The README snippet: cold, then a second run with the persistent cache warm.
    cold = _run_child(["readme"], args.pythonpath)
    with tempfile.TemporaryDirectory(prefix="igax-jax-cache-") as cache:
        fill = _run_child(["readme", cache], args.pythonpath)
        warm = _run_child(["readme", cache], args.pythonpath)
    print("\n## README 'A taste' snippet (16 x 16 cubic elements, jit(grad) through assemble and solve)")
    head = ("run", "imports", "snippet", "cpu", "process", "compiles", "hits")
    print("{:24s} {:>8s} {:>8s} {:>6s} {:>8s} {:>9s} {:>5s}".format(*head))
    for name, r in (("cold, no cache", cold), ("cache, first run", fill), ("cache, second run", warm)):
        print(
            f"{name:24s} {r['import_s']:8.2f} {r['snippet_s']:8.2f} {r['snippet_cpu_s']:6.2f} "
            f"{r['process_s']:8.2f} {r['compiles']:9d} {r['cache_hits']:5d}"
        )
    print(
        f"goal: cold imports + snippet under 3 s -> {cold['total_s']:.2f} s "
        f"({'met' if cold['total_s'] < 3.0 else 'not met'} on this machine)"
    )
    records.append(
        {
            "bench": "startup",
            "case": "readme-cold",
            "igax": "no-persistent-cache",
            "igax_s": round(cold["total_s"], 3),
            "imports_s": round(cold["import_s"], 3),
            "snippet_s": round(cold["snippet_s"], 3),
            "compiles": cold["compiles"],
            "baseline": "persistent-cache-warm",
            "baseline_s": round(warm["total_s"], 3),
            "ratio": round(warm["total_s"] / cold["total_s"], 3),
        }
    )
    records.append(
        {
            "bench": "startup",
            "case": "readme-warm-cache",
            "igax": "persistent-cache-warm",
            "igax_s": round(warm["total_s"], 3),
            "snippet_s": round(warm["snippet_s"], 3),
            "compiles": warm["compiles"],
            "cache_hits": warm["cache_hits"],
            "baseline": "no-persistent-cache",
            "baseline_s": round(cold["total_s"], 3),
            "ratio": round(cold["total_s"] / warm["total_s"], 3),
        }
    )

    # 2. New mesh sizes within one process.
    print(f"\n## time to the first result at each new mesh size (elements per direction: {sizes})")
    cold_rows = {}
    head = ("task", "n", "first", "cpu", "again", "compiles", "compile_s")
    print("{:11s} {:>3s} {:>7s} {:>6s} {:>7s} {:>9s} {:>9s}  value".format(*head))
    for task in tasks:
        rec = _run_child(["sizes", task, *map(str, sizes)], args.pythonpath)
        rows = cold_rows[task] = rec["sizes"]
        for r in rows:
            print(
                f"{task:11s} {r['n']:3d} {r['first_s']:7.2f} {r['first_cpu_s']:6.2f} {r['again_s']:7.3f} "
                f"{r['compiles']:9d} {r['compile_s']:9.2f}  {r['value']:.12e}"
            )
        first = rows[0]
        for r in rows[1:]:
            records.append(
                {
                    "bench": "startup",
                    "case": f"new-size/{task}/{r['n']}",
                    "igax": "new-size",
                    "igax_s": round(r["first_s"], 3),
                    "again_s": round(r["again_s"], 4),
                    "compiles": r["compiles"],
                    "baseline": f"first-size/{first['n']}",
                    "baseline_s": round(first["first_s"], 3),
                    "ratio": round(first["first_s"] / r["first_s"], 3),
                }
            )
        worst = max(r["first_s"] - r["again_s"] for r in rows[1:]) if len(rows) > 1 else float("nan")
        print(f"{'':11s} compile per new size (first - again), worst: {worst:.2f} s (goal < 1 s)")

    # 3. The same tasks in a second run with the persistent cache warm (a first run fills it).
    print("\n## second run with the persistent cache warm (igax.enable_compilation_cache)")
    head = ("task", "n", "first", "cold", "compiles", "hits")
    print("{:11s} {:>3s} {:>7s} {:>7s} {:>9s} {:>5s}".format(*head))
    for task in tasks:
        with tempfile.TemporaryDirectory(prefix="igax-jax-cache-") as cache:
            _run_child(["sizes", task, *map(str, sizes), cache], args.pythonpath)
            warm_rows = _run_child(["sizes", task, *map(str, sizes), cache], args.pythonpath)["sizes"]
        for r, c in zip(warm_rows, cold_rows[task], strict=True):
            print(
                f"{task:11s} {r['n']:3d} {r['first_s']:7.2f} {c['first_s']:7.2f} {r['compiles']:9d} "
                f"{r['cache_hits']:5d}"
            )
            records.append(
                {
                    "bench": "startup",
                    "case": f"warm-cache/{task}/{r['n']}",
                    "igax": "persistent-cache-warm",
                    "igax_s": round(r["first_s"], 3),
                    "compiles": r["compiles"],
                    "cache_hits": r["cache_hits"],
                    "baseline": "no-persistent-cache",
                    "baseline_s": round(c["first_s"], 3),
                    "ratio": round(c["first_s"] / r["first_s"], 3),
                }
            )
    print()
    for rec in records:
        print(json.dumps(rec))


if __name__ == "__main__":
    main()
