"""Scaling over devices: the sharded CG (``method="dist-cg"``) and batched gradients (``batch_map``).

For each device count (1, 2, 4, 8; one subprocess each, since a process's device count is fixed when JAX
starts: ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on a CPU, the real devices elsewhere):

* ``cg-strong``: Q1 3D elasticity on a fixed mesh (``--cube`` hexahedra per side), clamped at ``x = 0``;
  time per CG iteration of ``dist-cg`` (a solve to ``--rtol``, divided by its iterations), with the ideal
  line ``t1 / N``; baseline: the one-device ``method="cg"`` in the same subprocess.
* ``cg-weak``: the same problem with ``N`` times the cells (``cube * N^(1/3)`` per side); ideal: ``t1``.
* ``assembly-rows``: the Q1 elasticity matrix of ``cg-strong`` assembled into the devices' row blocks
  (``igax.fem.distributed.SpaceRowBlocks``: each device its own elements); baseline ``fem.assemble`` on one
  device; with the elements each device computes and the collectives of the program (none).
* ``grad-strong`` / ``grad-weak``: ``jax.value_and_grad`` of a P1 diffusion loss (assemble, Dirichlet, CG
  solve) for a batch of coefficient samples, ``batch_map`` over the devices: a fixed batch of ``--batch``,
  and ``--batch / 8 * N`` samples (weak); time per batch; baseline: ``jax.vmap`` on one device.

Besides the times, each case prints what does not depend on the machine: rows and stored entries per device
(the work), the halo entries and bytes of one product (counted from the partition) and the bytes of the
collective-permutes and the all-reduces per iteration read from the compiled program's HLO
(:func:`igax.solvers.distributed.loop_communication`; it counts the branch that recomputes the residual
every 50 iterations in full, so its permute bytes are twice the halo of one product).

On a CPU the simulated devices share the machine's cores: the times show the overhead of the partitioned
program, not a speed-up (on the 2-core development machine nothing can scale past 2). The communication
volume and the work per device are the figures that carry over to real devices; ``docs/scaling.md`` turns
them into a paper estimate for GPUs.

Measured on the 2-core development machine (tables in ``docs/scaling.md``): at 16^3 hexahedra (14,739 DOFs)
on 1/2/4/8 devices, 140 iterations each (= ``cg``), stored entries per device 1.06M/0.55M/0.28M/0.14M, halo
27-36 kB per product and device, 2 all-reduces (24 bytes) per iteration, no all-gather in the loop; weak
scaling to 107,811 DOFs on 8 devices (284 iterations). Batched gradients (16 P1 problems of 4,225 DOFs):
``batch_map`` 172-179 ms on 2-8 devices against 386-564 ms for ``vmap`` on one device (load ~9).
``assembly-rows`` at 10^3 hexahedra (3,993 DOFs, load ~8): 9.6 ms on 1 device against 14.8 ms for
``fem.assemble``; elements computed per device 1000 / 666 / 541 on 1 / 2 / 4 devices (slabs 5 and 2.5
element layers thick, each computing its neighbours' interface layer too), block entries per device
323k / 162k / 81k, no collective in the program; 13 ms and 64 ms on 2 and 4 simulated devices (2 cores).

Usage: ``python benchmarks/bench_scale.py [--quick] [--devices 1 2 4 8] [--cube 16] [--batch 16]``,
``--estimate`` for the paper estimate of ``docs/scaling.md`` (10M-100M DOFs on 8-64 H200 GPUs).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def _worker(ndev: int, args) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from _timing import median_time

    from igax import fem, solvers
    from igax.fem import library
    from igax.solvers.distributed import batch_map, device_mesh, loop_communication, partition

    assert jax.device_count() >= ndev, (jax.device_count(), ndev)
    mesh = device_mesh(ndev)
    dev = jax.devices()[0]
    machine = f"{dev.platform} ({dev.device_kind}), {platform.machine()}, {os.cpu_count()} cores"

    def emit(**row):
        print(
            "JSON " + json.dumps({"bench": "scale", "devices": ndev, "machine": machine, **row}), flush=True
        )

    def elasticity(m):
        V = fem.LagrangeSpace(fem.unit_cube(m, cell="hexahedron"), shape=(3,))
        A = fem.assemble(library.linear_elasticity(1.0, 0.3, "3d"), V)
        b = fem.assemble(library.body_force, V, f=jnp.array([0.0, 0.0, -1.0]))
        return fem.DirichletBC(V, "left", 0.0).condense(A, b)

    for case, m in (("cg-strong", args.cube), ("cg-weak", round(args.cube * ndev ** (1 / 3)))):
        A, b = elasticity(m)
        kw = {"rtol": args.rtol, "throw": False}

        def run(v, b, method, A=A, kw=kw, **extra):
            return solvers.linear_solve(A.with_values(v), b, method=method, **kw, **extra)

        dist = jax.jit(functools.partial(run, method="dist-cg", mesh=mesh))
        single = jax.jit(functools.partial(run, method="cg"))
        compiled = dist.lower(A.values, b).compile()
        loops = [lp for lp in loop_communication(compiled.as_text()) if lp["collective-permute"]["count"]]
        r, r1 = dist(A.values, b), single(A.values, b)
        t = median_time(dist, A.values, b, repeat=args.reps) / max(int(r.iterations), 1)
        t1 = median_time(single, A.values, b, repeat=args.reps) / max(int(r1.iterations), 1)
        part = partition(A.pattern, ndev, "auto")
        nnz_dev = [int((part.slots[d] < A.nnz).sum()) for d in range(ndev)]
        emit(
            case=case,
            n=A.shape[0],
            cells_per_side=m,
            igax="dist-cg",
            igax_s=t,
            baseline="cg-1-device",
            baseline_s=t1,
            ratio=t1 / t,
            iterations=int(r.iterations),
            iterations_cg=int(r1.iterations),
            err_vs_cg=float(jnp.abs(r.value - r1.value).max() / jnp.abs(r1.value).max()),
            rows_per_device=int(part.nloc),
            nnz_per_device_max=max(nnz_dev),
            nnz_total=A.nnz,
            rows_padding=int(ndev * part.nloc - part.n) if ndev else 0,
            halo_entries_per_product=part.halo_entries(),
            halo_bytes_per_product_per_device=8 * part.nghost,
            ghosts_max=int(part.ghosts.max(initial=0)),
            ordering=part.ordering,
            hlo_permute_bytes=loops[0]["collective-permute"]["bytes"] if loops else 0,
            hlo_allreduce_count=loops[0]["all-reduce"]["count"] if loops else 0,
            hlo_allreduce_bytes=loops[0]["all-reduce"]["bytes"] if loops else 0,
            hlo_allgather_count=loops[0]["all-gather"]["count"] if loops else 0,
        )

    # Assembly into the row blocks (each device its own elements, no global values) against fem.assemble on
    # one device, Q1 3D elasticity on the cg-strong mesh.
    from igax.fem.distributed import SpaceRowBlocks

    Ve = fem.LagrangeSpace(fem.unit_cube(args.cube, cell="hexahedron"), shape=(3,))
    form = library.linear_elasticity(1.0, 0.3, "3d")
    rows_sys = SpaceRowBlocks(Ve, mesh)
    by_rows = jax.jit(lambda V: rows_sys.assemble_form(form, V))
    whole = jax.jit(lambda V: fem.assemble(form, V).values)
    hlo = by_rows.lower(Ve).compile().as_text()
    t = median_time(by_rows, Ve, repeat=args.reps)
    t1 = median_time(whole, Ve, repeat=args.reps)
    emit(
        case="assembly-rows",
        n=Ve.ndofs,
        cells_per_side=args.cube,
        igax="SpaceRowBlocks.assemble_form",
        igax_s=t,
        baseline="fem.assemble-1-device",
        baseline_s=t1,
        ratio=t1 / t,
        elements=int(Ve.nel),
        elements_per_device_max=int(rows_sys.elements_per_device.max()),
        elements_computed=int(rows_sys.elements_per_device.sum()),
        block_entries_per_device=int(np.prod(rows_sys.part.cols.shape[1:])),
        nnz_total=int(rows_sys.pattern.nnz),
        hlo_collectives=sum(hlo.count(f" {k}(") for k in ("all-gather", "all-reduce", "collective-permute")),
    )

    V = fem.LagrangeSpace(fem.unit_square(args.square), degree=1)
    bc = fem.DirichletBC(V, None, 0.0)
    xs = np.asarray(V.dof_coordinates())

    def loss(s):
        A = fem.assemble(library.diffusion, V, kappa=lambda x: 1.0 + s[0] * x[0] + s[1] * x[1] ** 2)
        b = fem.assemble(library.source, V, f=1.0)
        u = fem.solve(A, b, bc=bc, method="cg", rtol=args.rtol).coeffs
        return jnp.sum(u**2 * (1.0 + xs[:, 0]))

    vg = jax.value_and_grad(loss)
    for case, B in (("grad-strong", args.batch), ("grad-weak", max(args.batch // 8, 1) * ndev)):
        S = jnp.stack([jnp.linspace(0.1, 1.0, B), jnp.linspace(0.5, -0.3, B)], axis=1)
        S_sh = jax.device_put(S, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices")))
        sharded = jax.jit(batch_map(vg, mesh))
        single = jax.jit(jax.vmap(vg))
        g, g1 = sharded(S_sh)[1], single(S)[1]
        t = median_time(sharded, S_sh, repeat=args.reps)
        t1 = median_time(single, S, repeat=args.reps)
        emit(
            case=case,
            n=V.ndofs,
            batch=B,
            igax="batch_map",
            igax_s=t,
            baseline="vmap-1-device",
            baseline_s=t1,
            ratio=t1 / t,
            err_vs_vmap=float(jnp.abs(g - g1).max() / jnp.abs(g1).max()),
            per_device=B // ndev,
        )


# -- the paper estimate of docs/scaling.md -------------------------------------------------------------------
# Assumptions (stated in docs/scaling.md): H200 HBM 4.8 TB/s of which a sparse product and vector updates
# reach ETA; NVLink within a node of 8 GPUs, InfiniBand NDR (one 400 Gb/s port per GPU) between nodes;
# latencies of a small all-reduce and of one while-loop iteration on a GPU.
HBM, ETA = 4.8e12, 0.6
NVLINK, IB = 300e9, 40e9  # bytes/s per direction per GPU, achieved
T_ALLREDUCE_NODE, T_ALLREDUCE_NET, T_LOOP = 15e-6, 30e-6, 15e-6
ENTRIES, DOFS_PER_NODE = 81, 3  # Q1 3D elasticity: 27 nodes x 3 components per row
ITER_PER_NODE_LAYER = 8.7  # Jacobi-CG iterations / nodes per side: cg-weak measured 8.2-8.6, rising slowly


def estimate(ndofs: float, ngpu: int, *, blocks: str = "slab") -> dict:
    """Time per CG iteration and per gradient of Q1 3D elasticity on a cube, Jacobi-CG, ``ngpu`` H200s."""
    m = (ndofs / DOFS_PER_NODE) ** (1 / 3)  # nodes per side
    rows = ndofs / ngpu
    spmv_bytes = rows * (ENTRIES * 12 + 16)  # values + int32 columns, y written, x read once
    vector_bytes = rows * 16 * 8  # 16 vector passes of CG per iteration
    if blocks == "slab":
        halo = 2 * DOFS_PER_NODE * m * m * 8  # two faces of one node layer
        thickness = m / ngpu
    else:  # cubes: ngpu = k^3 blocks
        side = m / round(ngpu ** (1 / 3))
        halo = 6 * DOFS_PER_NODE * side * side * 8
        thickness = side
    link = NVLINK if ngpu <= 8 else IB
    t_local = (spmv_bytes + vector_bytes) / (ETA * HBM)
    t_halo = halo / link
    t_red = 2 * (T_ALLREDUCE_NODE if ngpu <= 8 else T_ALLREDUCE_NET)  # p.Ap; r.z with r.r
    t_iter = t_local + t_halo + t_red + T_LOOP
    iters = ITER_PER_NODE_LAYER * m
    return {
        "ndofs": ndofs,
        "gpus": ngpu,
        "blocks": blocks,
        "layers_per_block": thickness,
        "halo_MB": halo / 1e6,
        "t_local_ms": t_local * 1e3,
        "t_halo_ms": t_halo * 1e3,
        "t_latency_ms": (t_red + T_LOOP) * 1e3,
        "t_iter_ms": t_iter * 1e3,
        "iterations": iters,
        "t_gradient_s": 2 * iters * t_iter,  # forward + adjoint solve (assembly and its VJP not counted)
        "values_GB_per_gpu_replicated": ndofs * ENTRIES * 8 / 1e9,
    }


def _estimate_table() -> str:
    out = [
        f"{'DOFs':>6} {'GPUs':>4} {'blocks':>6} {'layers':>6} {'halo MB':>7} {'local ms':>8} {'halo ms':>7} "
        f"{'lat. ms':>7} {'ms/iter':>7} {'iters':>5} {'grad s':>6} {'repl. GB':>8}"
    ]
    for ndofs in (10e6, 100e6):
        for ngpu in (8, 16, 32, 64):
            for blocks in ("slab", "cube") if ngpu in (8, 64) else ("slab",):
                e = estimate(ndofs, ngpu, blocks=blocks)
                out.append(
                    f"{ndofs / 1e6:>5.0f}M {ngpu:>4} {blocks:>6} {e['layers_per_block']:>6.1f} "
                    f"{e['halo_MB']:>7.2f} "
                    f"{e['t_local_ms']:>8.3f} {e['t_halo_ms']:>7.3f} {e['t_latency_ms']:>7.3f} "
                    f"{e['t_iter_ms']:>7.3f} {e['iterations']:>5.0f} {e['t_gradient_s']:>6.2f} "
                    f"{e['values_GB_per_gpu_replicated']:>8.1f}"
                )
    return "\n".join(out)


def _table(rows: list[dict]) -> str:
    out = []
    for case in ("cg-strong", "cg-weak", "assembly-rows", "grad-strong", "grad-weak"):
        rs = sorted((r for r in rows if r["case"] == case), key=lambda r: r["devices"])
        if not rs:
            continue
        t1 = rs[0]["igax_s"] if rs[0]["devices"] == 1 else None
        unit = "per iteration" if case.startswith("cg") else "per batch"
        out.append(f"\n{case} (time {unit}; ideal = {'t1 / N' if 'strong' in case else 't1'})")
        if case == "assembly-rows":
            out[-1] = f"\n{case} (time per assembly; ideal = t1 / N)"
            out.append(
                f"{'N':>3} {'dofs':>8} {'time':>10} {'ideal':>10} {'1 program':>10} {'elems/dev':>9} "
                f"{'elems':>7} {'block entries/dev':>17} {'collectives':>11}"
            )
            for r in rs:
                ideal = "" if t1 is None else f"{t1 / r['devices'] * 1e3:8.2f}ms"
                out.append(
                    f"{r['devices']:>3} {r['n']:>8} {r['igax_s'] * 1e3:8.2f}ms {ideal:>10} "
                    f"{r['baseline_s'] * 1e3:8.2f}ms {r['elements_per_device_max']:>9} {r['elements']:>7} "
                    f"{r['block_entries_per_device']:>17} {r['hlo_collectives']:>11}"
                )
            continue
        if case.startswith("cg"):
            out.append(
                f"{'N':>3} {'dofs':>8} {'it':>4} {'it(cg)':>6} {'time':>10} {'ideal':>10} {'cg 1 dev':>10} "
                f"{'rows/dev':>8} {'nnz/dev':>9} {'halo B/prod/dev':>15} {'HLO permute B':>13} {'all-red':>7}"
            )
        else:
            out.append(f"{'N':>3} {'dofs':>8} {'batch':>5} {'time':>10} {'ideal':>10} {'vmap 1 dev':>10}")
        for r in rs:
            N = r["devices"]
            ideal = "" if t1 is None else (t1 / N if "strong" in case else t1)
            ideal = f"{ideal * 1e3:8.3f}ms" if ideal != "" else ""
            if case.startswith("cg"):
                out.append(
                    f"{N:>3} {r['n']:>8} {r['iterations']:>4} {r['iterations_cg']:>6} "
                    f"{r['igax_s'] * 1e3:8.3f}ms {ideal:>10} {r['baseline_s'] * 1e3:8.3f}ms "
                    f"{r['rows_per_device']:>8} {r['nnz_per_device_max']:>9} "
                    f"{r['halo_bytes_per_product_per_device']:>15} {r['hlo_permute_bytes']:>13} "
                    f"{r['hlo_allreduce_count']:>7}"
                )
            else:
                out.append(
                    f"{N:>3} {r['n']:>8} {r['batch']:>5} {r['igax_s'] * 1e3:8.2f}ms {ideal:>10} "
                    f"{r['baseline_s'] * 1e3:8.2f}ms"
                )
    return "\n".join(out)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--devices", nargs="*", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--cube", type=int, default=16, help="hexahedra per side of the strong-scaling case")
    ap.add_argument("--square", type=int, default=64, help="P1 mesh of the batched gradient")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--estimate", action="store_true", help="print the paper estimate of docs/scaling.md only"
    )
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.estimate:
        print(_estimate_table())
        return []
    if args.quick:
        args.cube, args.square, args.batch, args.reps = 6, 16, 8, 2
        args.devices = [d for d in args.devices if d <= 4]
    if args.worker:
        _worker(args.worker, args)
        return []
    rows = []
    for ndev in args.devices:
        env = dict(os.environ)
        if env.get("JAX_PLATFORMS", "cpu") == "cpu" and ndev > 1:
            env["XLA_FLAGS"] = (
                env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ndev}"
            ).strip()
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            str(ndev),
            "--cube",
            str(args.cube),
            "--square",
            str(args.square),
            "--batch",
            str(args.batch),
            "--rtol",
            str(args.rtol),
            "--reps",
            str(args.reps),
        ]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode:
            print(f"devices={ndev}: failed\n{p.stderr[-3000:]}", file=sys.stderr)
            continue
        for line in p.stdout.splitlines():
            if line.startswith("JSON "):
                row = json.loads(line[5:])
                rows.append(row)
                print(json.dumps(row))
        print(f"# devices={ndev}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if rows:
        print(f"\nbench_scale on {rows[0]['machine']}; {platform.platform()}")
        print(_table(rows))
    return rows


if __name__ == "__main__":
    main()
