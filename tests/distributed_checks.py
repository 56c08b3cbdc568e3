"""Checks of the sharded batch and the sharded solve, run on simulated CPU devices in a subprocess.

``python tests/distributed_checks.py NDEV GROUP`` sets
``XLA_FLAGS=--xla_force_host_platform_device_count=NDEV`` before JAX is imported (which is why this runs in
its own process: the device count of a process is fixed when JAX starts), runs the checks of GROUP
(``main``, ``more``, ``small``, or ``multihost`` with ``PROCESS_ID PORT``: one of two processes joined by
``jax.distributed`` on localhost) and prints one JSON object with the measured numbers;
``tests/test_distributed.py`` asserts on them.
"""

import functools
import json
import os
import sys
import time

NDEV = int(sys.argv[1]) if len(sys.argv) > 1 else 4  # devices of this process
GROUP = sys.argv[2] if len(sys.argv) > 2 else "main"
# multihost: process PROCESS_ID of 2 on localhost, coordinator at 127.0.0.1:PORT
PROCESS_ID, PORT = (int(sys.argv[3]), sys.argv[4]) if GROUP == "multihost" else (0, "")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NDEV}"
).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
if GROUP == "multihost":
    # CPU collectives between processes go through gloo (bundled with jaxlib).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{PORT}", num_processes=2, process_id=PROCESS_ID)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from igax import fem, solvers  # noqa: E402
from igax.fem import library  # noqa: E402
from igax.solvers.distributed import batch_map, device_mesh, loop_communication, partition  # noqa: E402

RTOL = 1e-12
out: dict = {"devices": jax.device_count()}


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def system(name):
    """A condensed SPD system ``(A, b)`` of the named problem, assembled with igax.fem."""
    if name == "p1":
        V = fem.LagrangeSpace(fem.unit_square(20), degree=1)
        A = fem.assemble(library.laplace, V)
        b = fem.assemble(library.source, V, f=lambda x: 1.0 + x[0])
        bc = fem.DirichletBC(V, None, 0.0)
    elif name == "spline2":
        V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(16, 12)))
        A = fem.assemble(library.laplace, V)
        b = fem.assemble(library.source, V, f=lambda x: x[0] * x[1])
        bc = fem.DirichletBC(V, None, 0.0)
    else:  # small 3D elasticity, clamped at x = 0, own weight
        V = fem.LagrangeSpace(fem.unit_cube(4, cell="hexahedron"), shape=(3,))
        A = fem.assemble(library.linear_elasticity(1.0, 0.3, "3d"), V)
        b = fem.assemble(library.body_force, V, f=jnp.array([0.0, 0.0, -1.0]))
        bc = fem.DirichletBC(V, "left", 0.0)
    return bc.condense(A, b)


def check_solves(mesh):
    for name in ("p1", "spline2", "elasticity3d"):
        A, b = system(name)
        ref = solvers.linear_solve(A, b, method="cg", rtol=RTOL)
        direct = solvers.solve(A, b, method="superlu")
        d = solvers.linear_solve(A, b, method="dist-cg", rtol=RTOL, mesh=mesh)
        part = partition(A.pattern, jax.device_count(), "auto")
        out[name] = {
            "n": A.shape[0],
            "err_vs_cg": rel(d.value, ref.value),
            "err_vs_direct": rel(d.value, direct),
            "iterations": int(d.iterations),
            "iterations_cg": int(ref.iterations),
            "status": int(d.status),
            "sharding_devices": len(d.value.sharding.device_set),
            **{k: v for k, v in part.summary().items() if k in ("ordering", "offsets", "ghosts_max")},
        }


def check_gradient(mesh):
    """d loss / d kappa through assemble + dist-cg solve, against SuperLU's gradient and central FD."""
    V = fem.LagrangeSpace(fem.unit_square(12), degree=1)
    bc = fem.DirichletBC(V, None, 0.0)
    xs = np.asarray(V.dof_coordinates())

    def loss(c, method, **kw):
        A = fem.assemble(library.diffusion, V, kappa=fem.Field(V, c))
        b = fem.assemble(library.source, V, f=1.0)
        u = fem.solve(A, b, bc=bc, method=method, **kw).coeffs
        return jnp.sum(u**2 * (1.0 + xs[:, 0]))

    c0 = jnp.asarray(1.0 + 0.5 * np.sin(3 * xs[:, 0]) * xs[:, 1])
    g = jax.jit(jax.grad(lambda c: loss(c, "dist-cg", rtol=1e-13, mesh=mesh)))(c0)
    direct = jax.jit(lambda c: loss(c, "superlu"))
    g_ref = jax.jit(jax.grad(direct))(c0)
    dc = jnp.asarray(np.cos(5 * xs[:, 1]) + xs[:, 0])
    h = 1e-5
    fd = (direct(c0 + h * dc) - direct(c0 - h * dc)) / (2 * h)
    out["gradient"] = {
        "err_vs_direct": rel(g, g_ref),
        "fd": float(fd),
        "directional": float(jnp.dot(g, dc)),
        "err_vs_fd": abs(float(jnp.dot(g, dc)) - float(fd)) / abs(float(fd)),
    }


def check_hlo(mesh):
    A, b = system("p1")
    f = jax.jit(lambda v, b: solvers.solve(A.with_values(v), b, method="dist-cg", mesh=mesh))
    hlo = f.lower(A.values, b).compile().as_text()
    loops = loop_communication(hlo)
    part = partition(A.pattern, jax.device_count(), "auto")
    n = A.shape[0]
    cg_loops = [lp for lp in loops if lp["collective-permute"]["count"]]
    out["hlo"] = {
        "loops": len(loops),
        "cg_loops": len(cg_loops),
        "permutes": [lp["collective-permute"]["count"] for lp in cg_loops],
        "permute_bytes": [lp["collective-permute"]["bytes"] for lp in cg_loops],
        "all_reduces": [lp["all-reduce"]["count"] for lp in cg_loops],
        "all_gathers_in_loops": sum(lp["all-gather"]["count"] for lp in loops),
        "halo_bytes_counted": 8 * max(part.widths, default=0) * len(part.offsets),
        "n": n,
    }


def check_batch(mesh):
    """vmap-ed assemble + solve + gradient over a batch sharded across the devices."""
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=6))
    bc = fem.DirichletBC(V, None, 0.0)

    def loss(s, method):
        kappa = lambda x: 1.0 + s[0] * x[0] ** 2 + s[1] * x[1]  # noqa: E731
        A = fem.assemble(library.diffusion, V, kappa=kappa)
        b = fem.assemble(library.source, V, f=1.0)
        return jnp.sum(fem.solve(A, b, bc=bc, method=method).coeffs ** 2)

    B = 2 * NDEV
    S = jnp.asarray(np.stack([np.linspace(0.1, 1.0, B), np.linspace(0.5, -0.3, B)], axis=1))
    sharded = jax.device_put(S, NamedSharding(mesh, P(mesh.axis_names[0])))
    res = {}
    for method in ("superlu", "cg"):
        vg = jax.value_and_grad(functools.partial(loss, method=method))
        ref_v, ref_g = jax.jit(jax.vmap(vg))(S)  # one device
        fn = jax.jit(batch_map(vg, mesh)).lower(sharded).compile()
        v, g = fn(sharded)
        res[method] = {
            "err_value": rel(v, ref_v),
            "err_grad": rel(g, ref_g),
            "spec": str(g.sharding.spec),
            "devices": len(g.sharding.device_set),
            "shards": [int(s.data.shape[0]) for s in g.addressable_shards],
            "all_gathers": fn.as_text().count(" all-gather("),
        }
    out["batch"] = res


def check_plain_jit(mesh):
    """Plain jit of vmap over a sharded batch: the same numbers, but JAX runs a host callback once on the
    whole batch, so XLA gathers it to one device (what batch_map avoids)."""
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=6))
    bc = fem.DirichletBC(V, None, 0.0)

    def loss(s):
        A = fem.assemble(library.diffusion, V, kappa=lambda x: 1.0 + s[0] * x[0] ** 2 + s[1] * x[1])
        return jnp.sum(
            fem.solve(A, fem.assemble(library.source, V, f=1.0), bc=bc, method="superlu").coeffs ** 2
        )

    S = jnp.asarray(np.stack([np.linspace(0.1, 1.0, 2 * NDEV), np.linspace(0.5, -0.3, 2 * NDEV)], axis=1))
    sharded = jax.device_put(S, NamedSharding(mesh, P(mesh.axis_names[0])))
    vg = jax.vmap(jax.value_and_grad(loss))
    plain = jax.jit(vg).lower(sharded).compile()
    out["plain_jit"] = {
        "err": rel(plain(sharded)[1], jax.jit(vg)(S)[1]),
        "all_gathers": plain.as_text().count(" all-gather("),
    }


def check_minimize(mesh):
    """An ensemble objective through batch_map inside inverse.minimize: same iterates as without sharding."""
    from igax.inverse import minimize

    A = solvers.SparseMatrix.from_scipy(
        __import__("scipy.sparse", fromlist=["diags"]).diags([-1.0, 2.5, -1.0], [-1, 0, 1], (12, 12)).tocsr(),
        symmetric=True,
        positive_definite=True,
    )
    target = jnp.linspace(0.0, 1.0, 12)

    def member(theta):
        u = solvers.solve(A.with_values(A.values * theta[0]), jnp.ones(12) * theta[1], method="superlu")
        return jnp.sum((u - target) ** 2)

    x0 = jnp.ones((2 * NDEV, 2)) + 0.1 * jnp.arange(2 * NDEV)[:, None]
    f_plain = lambda x: jnp.sum(jax.vmap(member)(x))  # noqa: E731
    f_sharded = lambda x: jnp.sum(batch_map(member, mesh)(x))  # noqa: E731
    r1 = minimize(f_plain, x0, maxiter=8, progress=False)
    r2 = minimize(
        f_sharded, jax.device_put(x0, NamedSharding(mesh, P(mesh.axis_names[0]))), maxiter=8, progress=False
    )
    out["minimize"] = {"err_x": rel(r2.x, r1.x), "fun": float(r2.fun), "fun_plain": float(r1.fun)}
    # make_dataset (and batched) with mesh=: chunks split over the devices, the same outputs
    from igax.inverse import make_dataset

    solve = lambda th: solvers.solve(A.with_values(A.values * th[0]), jnp.ones(12) * th[1], method="superlu")  # noqa: E731
    inputs = jnp.concatenate([x0, x0[:3] * 1.5])  # not a multiple of the devices: the last chunk is padded
    U, _ = make_dataset(solve, inputs, batch_size=NDEV + 1, mesh=mesh)
    U1, _ = make_dataset(solve, inputs, batch_size=NDEV + 1)
    out["dataset"] = {"err": rel(U, U1), "shape": list(U.shape)}


def _p1_kernel(xe, k):
    """P1 triangle: k grad.grad plus the consistent mass (an SPD matrix without boundary conditions)."""
    J = jnp.stack([xe[1] - xe[0], xe[2] - xe[0]], axis=1)
    area = 0.5 * jnp.abs(jnp.linalg.det(J))
    G = jnp.linalg.solve(J.T, jnp.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]]))
    return k * area * G.T @ G + area / 12 * (jnp.ones((3, 3)) + jnp.eye(3))


def check_row_blocks(mesh):
    """Assembly into each device's rows (no global values) + sharded solve + gradient."""
    from igax.solvers.row_blocks import RowBlockSystem

    m = fem.unit_square(12)
    pts, cells = np.asarray(m.points), np.asarray(m.cells)
    S = RowBlockSystem(cells, len(pts), mesh)
    X = jnp.asarray(pts[cells])
    kap0 = jnp.asarray(1.0 + pts[cells].mean(axis=1)[:, 0])
    b = jnp.asarray(np.cos(np.pi * pts[:, 0]) * np.cos(np.pi * pts[:, 1]) / len(pts))  # zero mean: k matters
    pat, slot = solvers.CSRPattern.from_cells(cells, len(pts))

    def loss(k):
        return jnp.sum(S.solve(S.assemble(_p1_kernel, X, k), b, rtol=1e-13) ** 2)

    def ref(k):  # the single-program assembly and a direct solve
        v = jax.ops.segment_sum(jax.vmap(_p1_kernel)(X, k).ravel(), slot.ravel(), pat.nnz)
        A = solvers.SparseMatrix(v, pat, symmetric=True, positive_definite=True)
        return solvers.solve(A, b, method="superlu")

    forward = jax.jit(
        lambda k: (S.assemble(_p1_kernel, X, k), *S.linear_solve(S.assemble(_p1_kernel, X, k), b))
    )
    vals, x, k, status = forward(kap0)
    grad = jax.jit(jax.grad(loss)).lower(kap0).compile()
    g = grad(kap0)
    ref_loss = jax.jit(lambda k: jnp.sum(ref(k) ** 2))
    g_ref = jax.jit(jax.grad(ref_loss))(kap0)
    dk = jnp.asarray(1.0 + 0.5 * np.cos(4 * pts[cells].mean(axis=1)[:, 1]))
    h = 1e-5
    fd = (ref_loss(kap0 + h * dk) - ref_loss(kap0 - h * dk)) / (2 * h)
    hlo = grad.as_text()
    out["row_blocks"] = {
        "err_vs_direct": rel(x, ref(kap0)),
        "status": int(status),
        "iterations": int(k),
        "values_shape": list(vals.shape),
        "values_devices": len(vals.sharding.device_set),
        "grad_err_vs_direct": rel(g, g_ref),
        "grad_err_vs_fd": abs(float(jnp.dot(g, dk)) - float(fd)) / abs(float(fd)),
        "all_gathers": hlo.count(" all-gather("),
        "elements": int(len(cells)),
        "elements_computed": int(S.elements_per_device.sum()),
    }


def _collective_sizes(hlo: str, kind: str) -> list[int]:
    """Bytes of the result of every ``kind`` collective of a compiled program (anywhere in it)."""
    import re

    from igax.solvers.distributed import _bytes

    return [_bytes(m.group(1)) for m in re.finditer(rf"=\s*(\S+?)\s{kind}(-start)?\(", hlo)]


def _form_case(name):
    """(space, form, inputs, bc, b) of a row-block form check."""
    if name == "p1":
        V = fem.LagrangeSpace(fem.unit_square(10), degree=1)
        xs = np.asarray(V.dof_coordinates())
        inputs = {"kappa": fem.Field(V, jnp.asarray(1.0 + 0.5 * np.sin(3 * xs[:, 0]) * xs[:, 1]))}
        return V, library.diffusion, inputs, fem.DirichletBC(V, None, 0.0), library.source, {"f": 1.0}
    if name == "spline2":
        V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(8, 6)))
        c = 1.0 + 0.3 * np.cos(np.arange(V.ndofs))
        bc = fem.DirichletBC(V, "inner", lambda x: x[0])  # not homogeneous: the lifting is tested too
        f = {"f": lambda x: x[0] * x[1]}
        return V, library.diffusion, {"kappa": fem.Field(V, jnp.asarray(c))}, bc, library.source, f
    if name == "elasticity2d":
        V = fem.LagrangeSpace(fem.unit_square(5), shape=(2,))
        bc = fem.DirichletBC(V, "left", 0.0)
        return (
            V,
            library.linear_elasticity(1.0, 0.3),
            {},
            bc,
            library.body_force,
            {"f": jnp.array([0.0, -1.0])},
        )
    V = fem.LagrangeSpace(fem.unit_cube(3, cell="hexahedron"), shape=(3,))
    bc = fem.DirichletBC(V, "left", 0.0)
    f = {"f": jnp.array([0.0, 0.0, -1.0])}
    return V, library.linear_elasticity(1.0, 0.3, "3d"), {}, bc, library.body_force, f


def check_form_rows(mesh):
    """igax.fem forms assembled into each device's rows: matrix, solve, gradients and HLO."""
    from igax.fem.distributed import SpaceRowBlocks

    res = {}
    for name in ("p1", "spline2", "elasticity2d", "elasticity3d"):
        t0 = time.perf_counter()
        V, form, inputs, bc, lform, linputs = _form_case(name)
        S = SpaceRowBlocks(V, mesh)
        assemble = jax.jit(lambda V, inputs, S=S, form=form: S.assemble_form(form, V, **inputs))
        compiled = assemble.lower(V, inputs).compile()
        vals = compiled(V, inputs)
        A = fem.assemble(form, V, **inputs)
        b = fem.assemble(lform, V, **linputs)
        x = jnp.asarray(np.random.default_rng(1).normal(size=V.ndofs))
        product_and_solve = jax.jit(
            lambda vals, b, x, S=S, bc=bc: (S.matvec(vals, x), S.solve_bc(vals, b, bc, rtol=1e-13))
        )
        Ax, u = product_and_solve(vals, b, x)
        ref = fem.solve(A, b, bc=bc, method="superlu").coeffs
        hlo = compiled.as_text()
        res[name] = {
            "ndofs": V.ndofs,
            "nnz": int(A.pattern.nnz),
            "err_matvec": rel(Ax, A @ x),
            "err_solve": rel(u, ref),
            "values_devices": len(vals.sharding.device_set),
            "values_shape": list(vals.shape),
            "assembly_collectives": sum(
                len(_collective_sizes(hlo, k)) for k in ("all-gather", "all-reduce", "all-to-all")
            ),
            "elements": int(V.nel),
            "elements_computed": int(S.elements_per_device.sum()),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    # Gradients w.r.t. a Field kappa and a geometry parameter (the interior nodes moved by t bump).
    for name in ("p1",):
        V, form, inputs, bc, lform, linputs = _form_case(name)
        S = SpaceRowBlocks(V, mesh)
        wts = jnp.asarray(1.0 + np.arange(V.ndofs) % 3)
        if name == "p1":
            pts = np.asarray(V.points)
            bump = pts[:, 0] * (1 - pts[:, 0]) * pts[:, 1] * (1 - pts[:, 1])
            bump = jnp.asarray(bump[:, None] * np.array([1.0, 0.5]))
            moved = lambda t, V=V, bump=bump: eqx.tree_at(lambda s: s.points, V, V.points + t * bump)  # noqa: E731
        else:
            moved = lambda t, V=V: V  # noqa: E731

        def loss(c, t, sharded, moved=moved, S=S, form=form, lform=lform, linputs=linputs, bc=bc, wts=wts):
            Vt = moved(t)
            k = fem.Field(Vt, c)
            b = fem.assemble(lform, Vt, **linputs)
            if sharded:
                u = S.solve_bc(S.assemble_form(form, Vt, kappa=k), b, bc, rtol=1e-13)
            else:
                u = fem.solve(fem.assemble(form, Vt, kappa=k), b, bc=bc, method="superlu").coeffs
            return jnp.sum(wts * u**2)

        c0, t0 = inputs["kappa"].coeffs, jnp.asarray(0.1)
        grad = jax.jit(jax.grad(lambda c, t: loss(c, t, True), argnums=(0, 1))).lower(c0, t0).compile()
        gc, gt = grad(c0, t0)
        gc1, gt1 = jax.jit(jax.grad(lambda c, t: loss(c, t, False), argnums=(0, 1)))(c0, t0)
        gathers = _collective_sizes(grad.as_text(), "all-gather")
        res[name]["grad_kappa_err"] = rel(gc, gc1)
        if name == "p1":
            res[name]["grad_geometry"] = [float(gt), float(gt1)]
            res[name]["grad_geometry_err"] = abs(float(gt - gt1)) / abs(float(gt1))
        res[name]["grad_all_gather_bytes"] = gathers
        res[name]["value_bytes"] = 8 * int(S.pattern.nnz)
    out["form_rows"] = res


def check_multihost(mesh):
    """dist-cg over the devices of two processes: the same solution and iterations as one process."""
    from jax.experimental import multihost_utils

    for name in ("p1", "elasticity3d"):
        A, b = system(name)
        d = solvers.linear_solve(A, b, method="dist-cg", rtol=RTOL, mesh=mesh)
        x = multihost_utils.process_allgather(d.value, tiled=True)
        ref = solvers.linear_solve(A, b, method="cg", rtol=RTOL)  # each process on its own devices
        out[name] = {
            "err_vs_cg": rel(x, np.asarray(ref.value)),
            "iterations": int(d.iterations),
            "iterations_cg": int(ref.iterations),
            "processes": jax.process_count(),
        }


if __name__ == "__main__":
    mesh = device_mesh()
    checks = {
        "main": (check_solves, check_gradient, check_hlo, check_batch),
        "more": (check_minimize, check_row_blocks, check_plain_jit),
        "small": (check_solves,),
        "forms": (check_form_rows,),
        "multihost": (check_multihost,),
    }[GROUP]
    times = {}
    for check in checks:
        t = time.perf_counter()
        check(mesh)
        times[check.__name__] = round(time.perf_counter() - t, 2)
    out["times"] = times
    print("RESULT " + json.dumps(out))
