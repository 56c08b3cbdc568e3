"""Solves that stay on the device: multigrid-preconditioned CG (``method="mg-cg"``) end to end, at ~1M DOFs.

Runs on JAX's default device: a GPU where JAX sees one, else the CPU (then it is a CPU benchmark of the same
code, and the baseline is the direct solver). For each case we time, with fresh coefficients on every call (as
an optimiser does; a repeated value would hit the factorisation cache of the direct baseline):

* ``forward``: jitted ``assemble -> DirichletBC -> solve`` of a diffusion (or elasticity) problem whose
  coefficient is a ``Field`` (kappa, or Young's modulus E), returning ``sum(u^2)``;
* ``grad``: ``jax.grad`` of the same loss with respect to the coefficient's dof values (one adjoint solve);
* ``iterations``: the mg-cg iteration count to ``rtol`` (``solvers.linear_solve`` on the condensed system);
* ``vmap16``: one jitted ``vmap`` over 16 right-hand sides against 16 separate jitted solves (same matrix);
* ``spmv``: ``A @ x`` (jitted) against SciPy's CSR matvec on the host (CPU) or CuPy's cuSPARSE matvec (GPU,
  when CuPy is installed; otherwise reported as missing).

Cases (full size / ``--quick``):

* ``p1-poisson``: P1 on the unit square, 1000^2 cells x 2 triangles, 1,002,001 DOFs (quick: 64^2);
* ``spline2-poisson``: degree-2 SplineSpace, quarter annulus, 998^2 elements, 1,000,000 DOFs (quick: 62^2);
* ``q1-elasticity3d``: Q1 hexahedra, 64^3 cells, 3 x 65^3 = 823,875 DOFs (quick: 8^3), the mesh made by
  refining a 4^3 cube 4 times, so that ``fem.mg_hierarchy`` uses the nested meshes (geometric transfers: 3.1
  nonzeros per row of the finest prolongation at 16^3 cells, against 14.1 for the smoothed-aggregation
  transfers of the same problem, whose Galerkin index maps ran out of memory at 108k DOFs on 23 GB);
* ``spline2-elasticity3d``: degree-2 SplineSpace on the unit box, 67^3 elements, 3 x 69^3 = 985,527 DOFs
  (quick: 6^3); ``--spline3d-elements N`` sets another size (for machines with less memory).

Two more CPU cases measure mg-cg where a direct factorisation is slowest (3D fill-in), against PARDISO:

* ``q1-poisson3d``: Q1 hexahedra, 63^3 cells, 64^3 = 262,144 DOFs (quick: 8^3 cells);
* ``q1-elasticity3d-108k``: Q1 hexahedra, 32^3 cells, 3 x 33^3 = 107,811 DOFs (quick: 8^3 cells), refined
  from a 4^3 cube as above.

The baseline method is measured in the same run: on CPU the default direct solver (PARDISO, else SuperLU; it
is skipped for the 3D cases above 300k DOFs, where its fill makes one factorisation take minutes), and for
``p1-poisson`` also pyamg's smoothed-aggregation CG (``method="amg-cg"``, when pyamg is installed); on a GPU
Jacobi-preconditioned CG (``method="cg"``, the only device method before mg-cg). Ratios = baseline / mg-cg,
one per baseline (``forward_ratio_<method>``, ``grad_ratio_<method>``, ``total_ratio_<method>`` for
forward + gradient).

Usage: ``python benchmarks/bench_gpu.py [--quick] [--reps 3] [--cases p1-poisson spline2-poisson]``
Output: a table, then one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

CASES = ("p1-poisson", "spline2-poisson", "q1-elasticity3d", "spline2-elasticity3d", "q1-poisson3d",
         "q1-elasticity3d-108k")  # fmt: skip
DIRECT_3D_MAX = 300_000  # direct baseline skipped above this many DOFs in 3D (fill-in: minutes per factor)


def _problem(case: str, quick: bool, spline3d_elements: int | None = None):
    """``(V, S, form, input_name, bc, load)``: solution space, coefficient space, form, its input name, the
    Dirichlet condition and the load vector."""
    from igax import fem
    from igax.fem import library, mesh
    from igax.fem.mesh.refine import refine

    if case == "p1-poisson":
        n = 64 if quick else 1000
        V = fem.LagrangeSpace(mesh.unit_square(n), degree=1)
        S = V
    elif case == "spline2-poisson":
        n = 62 if quick else 998
        V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=n))
        S = V
    elif case == "q1-elasticity3d":
        m = refine(mesh.unit_cube(2 if quick else 4, cell="hexahedron"), times=2 if quick else 4)
        V = fem.LagrangeSpace(m, degree=1, shape=(3,))
        S = fem.LagrangeSpace(m, degree=1)
    elif case == "q1-poisson3d":
        n = 8 if quick else 63
        V = fem.LagrangeSpace(mesh.unit_cube(n, cell="hexahedron"), degree=1)
        S = V
    elif case == "q1-elasticity3d-108k":
        m = refine(mesh.unit_cube(2 if quick else 4, cell="hexahedron"), times=2 if quick else 3)
        V = fem.LagrangeSpace(m, degree=1, shape=(3,))
        S = fem.LagrangeSpace(m, degree=1)
    elif case == "spline2-elasticity3d":
        n = spline3d_elements or (6 if quick else 67)
        geo = fem.geometry.box().refine(degree=2, elements=n)
        V = fem.SplineSpace(geo, shape=(3,))
        S = fem.SplineSpace(geo)
    else:
        raise ValueError(f"unknown case {case!r}; choose from {CASES}")
    if V.value_shape:
        form, name = library.linear_elasticity(None, 0.3, "3d"), "E"
        load = fem.assemble(library.body_force, V, f=jnp.array([0.0, 0.0, -1.0]))
        bc = fem.DirichletBC(V, V.boundary_names[0], 0.0)
    else:
        form, name = library.diffusion, "kappa"
        load = fem.assemble(library.source, V, f=1.0)
        bc = fem.DirichletBC(V, None, 0.0)
    return V, S, form, name, bc, load


def _median(fn, args_list, reps):
    """Median wall time of ``fn(a)`` over fresh arguments ``args_list[1:reps + 1]`` after one warm-up call."""
    jax.block_until_ready(fn(args_list[0]))
    ts = []
    for a in args_list[1 : reps + 1]:
        t = time.perf_counter()
        jax.block_until_ready(fn(a))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _first_call(fn, arg):
    t = time.perf_counter()
    jax.block_until_ready(fn(arg))
    return time.perf_counter() - t


def _spmv(A, reps):
    """``(igax_s, baseline_s, baseline_name)`` for ``A @ x``."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal(A.shape[1]), A.values.dtype)
    mv = jax.jit(lambda A, x: A @ x)
    t_igax = _median(lambda x: mv(A, x), [x] * (reps + 1), reps)
    if jax.default_backend() == "cpu":
        As, xs = A.to_scipy(), np.asarray(x)
        ts = []
        for _ in range(max(reps, 5)):
            t = time.perf_counter()
            As @ xs
            ts.append(time.perf_counter() - t)
        return t_igax, float(np.median(ts)), "scipy-csr"
    try:  # pragma: no cover - GPU only
        import cupy
        import cupyx.scipy.sparse as csp
    except ImportError:  # pragma: no cover - GPU only
        return t_igax, None, "cupy-missing"
    As = A.to_scipy()  # pragma: no cover - GPU only
    Ac = csp.csr_matrix((cupy.asarray(As.data), cupy.asarray(As.indices), cupy.asarray(As.indptr)), As.shape)
    xc = cupy.asarray(np.asarray(x))
    ts = []
    for _ in range(max(reps, 5)):
        cupy.cuda.Device().synchronize()
        t = time.perf_counter()
        Ac @ xc
        cupy.cuda.Device().synchronize()
        ts.append(time.perf_counter() - t)
    return t_igax, float(np.median(ts)), "cupy-cusparse"


def run_case(
    case: str, quick: bool, reps: int, rtol: float, spline3d_elements: int | None = None
) -> list[dict]:
    from igax import fem, solvers

    on_gpu = jax.default_backend() != "cpu"
    t = time.perf_counter()
    V, S, form, name, bc, load = _problem(case, quick, spline3d_elements)
    t_build = time.perf_counter() - t
    rng = np.random.default_rng(1)
    coeffs = [jnp.asarray(1.0 + 0.5 * rng.random(S.ndofs)) for _ in range(reps + 2)]
    methods = ["mg-cg"]
    if on_gpu:
        methods.append("cg")
    elif not (V.dim == 3 and V.ndofs > DIRECT_3D_MAX):
        methods.append(solvers.default_method())
    if not on_gpu and case == "p1-poisson" and "amg-cg" in solvers.available_methods():
        methods.append("amg-cg")
    t = time.perf_counter()
    H = fem.mg_hierarchy(V, bc=bc)
    t_hier = time.perf_counter() - t
    out = []
    for method in methods:
        opts = {"rtol": rtol, "maxiter": 20_000} if method != "mg-cg" else {"rtol": rtol, "hierarchy": H}
        if method == "amg-cg":
            opts = {"rtol": rtol}
        elif method not in ("mg-cg", "cg"):
            opts = {}

        def loss(c, method=method, opts=opts):
            A = fem.assemble(form, V, **{name: fem.Field(S, c)})
            u = fem.solve(A, load, bc=bc, method=method, **opts)
            return jnp.sum(u.coeffs**2)

        fwd = jax.jit(loss)
        grad = jax.jit(jax.grad(loss))
        # Coefficients no earlier call saw, for every call: the direct baseline caches factorisations by
        # matrix values, so a gradient at the forward's coefficients would reuse the forward's factor.
        fresh = [jnp.asarray(1.0 + 0.5 * rng.random(S.ndofs)) for _ in range(2 * reps + 3)]
        t_first = _first_call(fwd, fresh[0])
        t_fwd = _median(fwd, fresh[1 : reps + 2], reps)
        t_grad = _median(grad, fresh[reps + 2 :], reps)
        rec = {"bench": "gpu", "case": case, "ndofs": V.ndofs, "device": jax.default_backend(),
               "method": method, "build_s": t_build, "first_s": t_first, "forward_s": t_fwd,
               "grad_s": t_grad, "grad_over_forward": t_grad / t_fwd}  # fmt: skip
        if method == "mg-cg":
            rec["hierarchy_s"] = t_hier
            A = fem.assemble(form, V, **{name: fem.Field(S, coeffs[0])})
            Ac, bc_vec = bc.condense(A, load)
            r = solvers.linear_solve(Ac, bc_vec, method="mg-cg", **opts)
            rec["iterations"] = int(r.iterations)
            rec["residual"] = float(r.residual)
            B = jnp.stack([bc_vec * (1.0 + 0.1 * k) for k in range(16)])
            solve = functools.partial(solvers.solve, method="mg-cg", **opts)
            one, many = jax.jit(solve), jax.jit(jax.vmap(solve, (None, 0)))
            jax.block_until_ready(one(Ac, B[0]))
            jax.block_until_ready(many(Ac, B))
            t = time.perf_counter()
            for k in range(16):
                jax.block_until_ready(one(Ac, B[k]))
            t_sep = time.perf_counter() - t
            t = time.perf_counter()
            jax.block_until_ready(many(Ac, B))
            t_vmap = time.perf_counter() - t
            rec.update({"vmap16_s": t_vmap, "separate16_s": t_sep, "vmap16_speedup": t_sep / t_vmap})
            s_igax, s_base, s_name = _spmv(A, reps)
            rec.update({"spmv_s": s_igax, "spmv_baseline": s_name, "spmv_baseline_s": s_base,
                        "spmv_ratio": None if s_base is None else s_igax / s_base})  # fmt: skip
        out.append(rec)
    mg = out[0]
    for b in out[1:]:
        m = b["method"]
        mg[f"forward_ratio_{m}"] = b["forward_s"] / mg["forward_s"]
        mg[f"grad_ratio_{m}"] = b["grad_s"] / mg["grad_s"]
        mg[f"total_ratio_{m}"] = (b["forward_s"] + b["grad_s"]) / (mg["forward_s"] + mg["grad_s"])
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    ap.add_argument(
        "--spline3d-elements", type=int, default=None, help="elements per direction of spline2-elasticity3d"
    )
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    from igax import solvers

    # Every call has new coefficients, so no cached factorisation is ever reused; keeping the default four
    # (gigabytes each at 1M DOFs) only costs memory (docs/performance.md advises the same for loops).
    solvers.set_cache_size(1)
    jnp.zeros(1).block_until_ready()  # start the backend outside the timings
    dev = jax.devices()[0]
    print(
        f"bench_gpu: device {dev.platform} ({dev.device_kind}), platform {platform.platform()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}, {'quick' if args.quick else 'full'} sizes, "
        f"median of {args.reps}, rtol {args.rtol:g}"
    )
    print(
        f"{'case':22s} {'method':8s} {'ndofs':>9s} {'first':>7s} {'fwd':>7s} {'grad':>7s} {'g/f':>5s} "
        f"{'iters':>5s} {'vmap16x':>7s} {'spmv/base':>9s}"
    )
    records = []
    for case in args.cases:
        for r in run_case(case, args.quick, args.reps, args.rtol, args.spline3d_elements):
            spmv = r.get("spmv_ratio")
            print(
                f"{case:22s} {r['method']:8s} {r['ndofs']:9d} {r['first_s']:7.3f} {r['forward_s']:7.3f} "
                f"{r['grad_s']:7.3f} {r['grad_over_forward']:5.2f} {r.get('iterations', '-')!s:>5s} "
                f"{r.get('vmap16_speedup', float('nan')):7.2f} "
                f"{'-' if spmv is None else f'{spmv:9.2f}':>9s}",
                flush=True,
            )
            records.append(r)
            for k in sorted(k for k in r if k.startswith("total_ratio_")):
                m = k[len("total_ratio_") :]
                print(f"{'':22s} {m} / mg-cg: forward {r['forward_ratio_' + m]:.2f}x, gradient "
                      f"{r['grad_ratio_' + m]:.2f}x, forward + gradient {r[k]:.2f}x", flush=True)  # fmt: skip
    for r in records:
        print(json.dumps(r), flush=True)
    return records


if __name__ == "__main__":
    main()
