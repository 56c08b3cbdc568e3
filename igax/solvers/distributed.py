"""Beyond one device: a batch of problems sharded over devices, and one problem's solve sharded by rows.

Both are built on JAX's own distributed machinery (``jax.sharding.Mesh``, ``jax.shard_map`` and, across hosts,
``jax.distributed``); igax adds no message layer.

**Many problems** (designs, samples, training batches on one mesh): :func:`batch_map` maps a function over
the leading axis of its arguments with each device running ``jax.vmap(f)`` on its own slice under
``shard_map``. Assembly, solve and gradient then run where the slice lives and the results stay sharded.
Why not plain ``jit`` of ``vmap(f)`` over a sharded batch: that works for the JAX backends (XLA partitions
the batch), but a host backend (PARDISO, SuperLU, CHOLMOD, pyamg through ``jax.pure_callback``) is run by
JAX *once on the full logical value*, so XLA gathers the whole batch to one device for it (an all-gather in
the program, and the host solves every problem in one process). Under ``shard_map`` a callback runs once per
device on that device's slice. Inside ``shard_map`` a Krylov loop also stops when *its* slice has converged;
under plain ``jit`` the ``while`` predicate of a vmapped loop is an ``any`` over the whole batch, one
all-reduce per iteration.

**One large problem**: :func:`sharded_cg` (``method="dist-cg"`` of :func:`igax.solvers.solve`) splits the rows
into one contiguous block per device (:mod:`igax.solvers._partition`: the pattern's numbering or reverse
Cuthill-McKee, halo lists computed once per pattern), and runs Jacobi-preconditioned CG under ``shard_map``:
each product exchanges only the halo with ``ppermute`` (one collective-permute per block offset, two for a
banded numbering) and the inner products are local sums and a ``psum`` (two all-reduces per iteration, of
one and of two numbers). With the pointwise Jacobi preconditioner the iterates are those of ``method="cg"``
up to rounding, so iteration counts match the single-device solve.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from igax.solvers import iterative as _it
from igax.solvers._partition import Partition, partition

__all__ = ["batch_map", "device_mesh", "loop_communication", "partition", "sharded_cg"]


def device_mesh(devices=None, axis_name: str = "devices") -> Mesh:
    """A one-axis :class:`jax.sharding.Mesh` over ``devices`` (default: every device JAX sees).

    Arguments:
        devices: a sequence of devices, an int (the first that many devices), or None (all).
        axis_name: the mesh axis name.

    Returns:
        The mesh.

    Example:
        >>> from igax.solvers.distributed import device_mesh
        >>> dict(device_mesh(1).shape)
        {'devices': 1}
    """
    if devices is None:
        devices = jax.devices()
    elif isinstance(devices, int):
        if not 1 <= devices <= jax.device_count():
            raise ValueError(
                f"devices={devices} but JAX sees {jax.device_count()} device(s); on a CPU simulate more with "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX is imported."
            )
        devices = jax.devices()[:devices]
    return Mesh(np.asarray(list(devices)), (axis_name,))


def _mesh_axis(mesh, name: str = "mesh") -> str:
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"{name} must be a jax.sharding.Mesh, got {type(mesh).__name__}; build one with "
            "igax.solvers.distributed.device_mesh() or jax.make_mesh((ndev,), ('devices',))."
        )
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"{name} must have one axis (the devices the rows or the batch are split over), got axes "
            f"{mesh.axis_names}; use device_mesh(devices) or jax.make_mesh((ndev,), ('devices',))."
        )
    return mesh.axis_names[0]


# -- many problems -------------------------------------------------------------------------------------------
def batch_map(f, mesh: Mesh | None = None, *, in_axes=0):
    """``jax.vmap(f)`` with the batch axis split over the devices of ``mesh``: each device maps its slice.

    Arguments:
        f: a function of one problem (assemble, solve, loss, gradient ...); host callbacks inside it (direct
            solvers) run once per device on that device's slice.
        mesh: a one-axis mesh (default :func:`device_mesh` ``()``: every device).
        in_axes: as in ``jax.vmap``: 0 (every argument batched on its leading axis) or a tuple with 0 or
            None (broadcast: the argument is replicated) per positional argument.

    Returns:
        A function of the batched arguments whose outputs are batched on their leading axis and sharded over
        the mesh (``NamedSharding(mesh, P(axis))``). The batch size must be a multiple of the device count.
        It is differentiable (``jax.grad`` of a loss of its outputs runs the adjoint solves on the devices
        too) and can be jitted.

    Example:
        >>> import jax.numpy as jnp, scipy.sparse as sp
        >>> from igax import solvers
        >>> from igax.solvers.distributed import batch_map
        >>> A = solvers.SparseMatrix.from_scipy(sp.diags([1.0, 2.0, 4.0]).tocsr(), symmetric=True)
        >>> xs = batch_map(lambda s: solvers.solve(A.with_values(s * A.values), jnp.ones(3)))(jnp.ones(2))
        >>> xs.shape, xs.sharding.spec[0]        # batched on the leading axis, split over "devices"
        ((2, 3), 'devices')
    """
    mesh = device_mesh() if mesh is None else mesh
    axis = _mesh_axis(mesh)
    ndev = mesh.devices.size

    def mapped(*args):
        axes = (in_axes,) * len(args) if not isinstance(in_axes, (tuple, list)) else tuple(in_axes)
        if len(axes) != len(args):
            raise ValueError(f"in_axes has {len(axes)} entries for {len(args)} arguments.")
        for a, ax in zip(args, axes, strict=True):
            if ax not in (0, None):
                raise ValueError(f"in_axes entries must be 0 or None, got {ax!r}.")
            if ax == 0:
                for leaf in jax.tree.leaves(a):
                    if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] % ndev:
                        raise ValueError(
                            f"the batch axis (length {jnp.shape(leaf)[:1]}) must be a multiple of the "
                            f"{ndev} devices of the mesh; pad the batch or use a mesh of fewer devices."
                        )
        specs = tuple(P(axis) if ax == 0 else P() for ax in axes)
        body = jax.vmap(f, in_axes=axes)
        # check_vma=False: f is user code (callbacks, Krylov loops) whose replication JAX cannot always infer;
        # every output is batched, hence varying over the axis, which is what out_specs says.
        return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=P(axis), check_vma=False)(*args)

    return mapped


# -- one large problem ---------------------------------------------------------------------------------------
def _halo(x, part: Partition, send, axis: str):
    """``[x_local, ghosts]``: one ppermute per block offset (device ``d`` receives from ``d + o``)."""
    ndev = part.ndev
    parts = [x]
    for o, idx in zip(part.offsets, send, strict=True):
        pairs = [(e, e - o) for e in range(ndev) if 0 <= e - o < ndev]
        parts.append(jax.lax.ppermute(x[idx[0]], axis, pairs))
    return jnp.concatenate(parts)


def _local_arrays(part: Partition, values, arrays):
    """The block's ELLPACK values and inverse diagonal from the global CSR values (inside shard_map)."""
    cols, slots, diag, *send = arrays
    ext = jnp.concatenate([values, jnp.zeros(1, values.dtype), jnp.ones(1, values.dtype)])
    vals = ext[slots[0]]  # (nloc, W)
    d = ext[diag[0]]
    dinv = 1.0 / jnp.where(d != 0, d, 1.0)
    return cols[0], vals, dinv, send


def block_matvec(vals, cols, send, x, part: Partition, axis: str):
    """One device's rows of ``A x`` (inside ``shard_map``): halo exchange, then the ELLPACK product."""
    xe = _halo(x, part, send, axis)
    return jnp.sum(vals * xe[cols], axis=1)


def block_cg(vals, dinv, cols, send, b, part: Partition, axis: str, **cg_options):
    """Jacobi CG on one device's block of rows (inside ``shard_map``); inner products by ``psum``."""

    def dot(pairs):  # local sums, then one all-reduce for the group
        return tuple(jax.lax.psum(jnp.stack([jnp.vdot(u, v) for u, v in pairs]), axis))

    def matvec(x):
        return block_matvec(vals, cols, send, x, part, axis)

    return _it.cg(matvec, b, lambda r: dinv * r, dot=dot, n=part.n, **cg_options)


def sharded_cg(values, b, part: Partition, mesh: Mesh, arrays=None, **cg_options):
    """Jacobi-preconditioned CG on the row blocks of ``part``, one per device of ``mesh``.

    Arguments:
        values: ``(nnz,)`` CSR values of the SPD matrix (replicated: each device reads its rows' entries).
        b: ``(n,)`` right-hand side.
        part: the :func:`partition` of the matrix's pattern over ``mesh``'s devices.
        mesh: a one-axis mesh of ``part.ndev`` devices.
        arrays: the partition's index arrays ``(cols, slots, diag, *send)``, device arrays sharded over the
            mesh (:func:`plan_arrays`); default: put them there now.
        **cg_options: ``rtol``, ``atol``, ``maxiter`` of :func:`igax.solvers.iterative.cg`.

    Returns:
        :class:`~igax.solvers.iterative.KrylovResult` ``(x (n,), iterations, status)``; ``x`` is unpermuted
        to the original numbering.

    Example:
        >>> import jax.numpy as jnp, scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix
        >>> from igax.solvers.distributed import device_mesh, partition, sharded_cg
        >>> A = SparseMatrix.from_scipy(sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (8, 8)).tocsr())
        >>> r = sharded_cg(A.values, jnp.ones(8), partition(A.pattern, 1), device_mesh(1), rtol=1e-12)
        >>> int(r.status), round(float(r.x[0]), 10)   # x_i = i (9 - i) / 2, i = 1..8
        (0, 4.0)
    """
    axis = _mesh_axis(mesh)
    if mesh.devices.size != part.ndev:
        raise ValueError(f"the partition has {part.ndev} blocks but the mesh {mesh.devices.size} devices.")
    if arrays is None:
        arrays = plan_arrays(part, mesh)
    bp = jnp.concatenate([b, jnp.zeros(1, b.dtype)])[part.perm].reshape(part.ndev, part.nloc)
    bp = jax.lax.with_sharding_constraint(bp, NamedSharding(mesh, P(axis)))

    def local(values, bp, *arrays):
        cols, vals, dinv, send = _local_arrays(part, values, arrays)
        r = block_cg(vals, dinv, cols, send, bp[0], part, axis, **cg_options)
        return r.x[None], r.iterations, r.status

    specs = (P(), P(axis)) + (P(axis),) * len(arrays)
    x, k, status = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=(P(axis), P(), P()))(
        values, bp, *arrays
    )
    return _it.KrylovResult(x.reshape(-1)[part.iperm], k, status)


@functools.lru_cache(maxsize=8)
def plan_arrays(part: Partition, mesh: Mesh) -> tuple:
    """The partition's index arrays on the devices, each sharded by its leading (device) axis.

    Cached per partition and mesh (partitions are cached per pattern), so repeated solves with one pattern
    move the index arrays to the devices once.
    """
    sharding = NamedSharding(mesh, P(_mesh_axis(mesh)))
    host = (part.cols, part.slots, part.diag, *part.send)
    with jax.ensure_compile_time_eval():  # concrete also when first called inside a trace (it is cached)
        return tuple(jax.device_put(a, sharding) for a in host)


# -- what the compiled program communicates ------------------------------------------------------------------
_COLLECTIVES = ("collective-permute", "all-reduce", "all-gather", "all-to-all", "reduce-scatter")
_ITEMSIZE = {
    "f64": 8,
    "f32": 4,
    "s32": 4,
    "u32": 4,
    "s64": 8,
    "pred": 1,
    "f16": 2,
    "bf16": 2,
    "s8": 1,
    "u8": 1,
}


# The attributes by which an instruction names the computations it runs.
_CALLED = (
    r"(?:calls|body|condition|to_apply|true_computation|false_computation|branch_computations)="
    r"\{?(%?[\w.\-]+(?:,\s*%?[\w.\-]+)*)\}?"
)


def _computations(hlo: str) -> dict[str, list[str]]:
    """The computations of an HLO module's text: name -> instruction lines."""
    comps: dict[str, list[str]] = {}
    name = None
    for line in hlo.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            head = line.split("(")[0].split()
            name = head[-1].lstrip("%") if head else None
            comps[name] = []
        elif line.startswith("}"):
            name = None
        elif name is not None:
            comps[name].append(line)
    return comps


def _bytes(shape_text: str) -> int:
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape_text):
        if dtype in _ITEMSIZE:
            total += _ITEMSIZE[dtype] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
    return total


def loop_communication(hlo: str) -> list[dict]:
    """The collectives inside each ``while`` loop of a compiled program (one iteration of the loop).

    Arguments:
        hlo: the text of a compiled program, ``jax.jit(f).lower(*args).compile().as_text()``.

    Returns:
        One dict per ``while`` loop: for each collective kind (``"collective-permute"``, ``"all-reduce"``,
        ``"all-gather"``, ...) the number of instructions and the bytes of their results per device,
        counted over the loop's condition and body and the computations they call (conditional branches
        count in full, so a residual recomputed every 50 iterations counts as if it ran every time).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from igax.solvers.distributed import loop_communication
        >>> step = lambda s: (s[0] + 1, s[1] * 2)
        >>> f = jax.jit(lambda x: jax.lax.while_loop(lambda s: s[0] < 3, step, (0, x)))
        >>> first, = loop_communication(f.lower(jnp.ones(4)).compile().as_text())   # one while loop
        >>> first["all-reduce"]
        {'count': 0, 'bytes': 0}
    """
    comps = _computations(hlo)
    loops = []
    for lines in comps.values():
        for line in lines:
            m = re.search(r"\bwhile\(.*condition=%?([\w.\-]+).*body=%?([\w.\-]+)", line)
            if m:
                loops.append((m.group(2), m.group(1)))
    out = []
    for body, condition in loops:
        seen, todo, found = set(), [body, condition], {k: {"count": 0, "bytes": 0} for k in _COLLECTIVES}
        while todo:
            c = todo.pop()
            if c in seen or c not in comps:
                continue
            seen.add(c)
            for line in comps[c]:
                for kind in _COLLECTIVES:
                    m = re.search(rf"=\s*(.*?)\s{kind}(-start)?\(", line)
                    if m:
                        found[kind]["count"] += 1
                        found[kind]["bytes"] += _bytes(m.group(1))
                for group in re.findall(_CALLED, line):
                    todo.extend(g.strip().lstrip("%") for g in group.split(","))
        out.append({"body": body, **found})
    return out
