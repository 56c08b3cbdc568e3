"""Assembly straight into the row blocks of the devices, and a differentiable solve on them.

``method="dist-cg"`` takes a matrix assembled by one program (its values replicated on every device), which
bounds the problem by one device's memory. :class:`RowBlockSystem` removes that bound for element-assembled
matrices: each device computes the element matrices of the elements that touch its rows and adds only the
entries of its own rows into its block (the ELLPACK layout of :mod:`igax.solvers._partition`). An element on
an interface between two blocks is computed by both devices (each keeps its own rows), which costs a few
percent more element work and no communication at all; the global values never exist anywhere.

The solve (:meth:`RowBlockSystem.solve`) is ``jax.lax.custom_linear_solve`` around the sharded Jacobi CG
with the sharded product as its operator, so derivatives with respect to the element inputs flow back through
the product (a ``ppermute`` transposes to the reverse ``ppermute``) into each device's elements, and the
adjoint is one more sharded solve.

Called eagerly, each method runs one compiled program, built on its first call and kept by the system: for
each element function (``kernel`` / ``element_matrices``, by identity, as ``jax.jit`` keys functions) and
each set of CG options (compared by equality). As with ``jax.jit``, a kept program does not see later changes
of the Python values a function reads (a global, a closed-over float): pass such values as array inputs, or
a new function. Inside a caller's ``jit`` these programs are inlined. The programs hold the partition and
the mesh, never the system itself, so a system is freed as soon as its last reference goes.

The element kernel is the user's: ``kernel(*element_inputs) -> (nloc, nloc)`` for one element, vmapped
over the elements of each device (:meth:`RowBlockSystem.assemble`), or a function of a list of element ids
(:meth:`RowBlockSystem.assemble_elements`). ``igax.fem``'s forms use the latter through
``igax.fem.distributed.SpaceRowBlocks`` (this layer knows nothing of forms).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from igax.solvers import distributed as _dist
from igax.solvers.sparse import CSRPattern

__all__ = ["RowBlockSystem"]


class RowBlockSystem:
    """An element-assembled SPD system whose rows live in blocks, one per device of ``mesh``.

    Arguments:
        elem_dofs: ``(nel, nloc)`` int: the global dofs of each element (distinct within an element).
        ndofs: number of dofs.
        mesh: a one-axis :class:`jax.sharding.Mesh` (default: every device).
        ordering: the row blocks' numbering (see :func:`igax.solvers.distributed.partition`).

    Attributes:
        pattern: the :class:`~igax.solvers.CSRPattern` of the assembled matrix.
        part: its :class:`~igax.solvers._partition.Partition` over the mesh.
        elements_per_device: ``(ndev,)`` elements each device computes (interface elements count twice).

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> from igax.solvers.row_blocks import RowBlockSystem
        >>> edofs = np.stack([np.arange(8), np.arange(1, 9)], axis=1)      # 8 P1 elements on [0, 1]
        >>> S = RowBlockSystem(edofs, 9)
        >>> kernel = lambda k: k * 8.0 * jnp.array([[1.0, -1.0], [-1.0, 1.0]]) + jnp.eye(2) / 16
        >>> b = jnp.full(9, 1 / 8).at[jnp.array([0, 8])].set(1 / 16)    # the load of f = 1
        >>> u = S.solve(S.assemble(kernel, jnp.ones(8)), b, rtol=1e-12)
        >>> round(float(u.min()), 6), round(float(u.max()), 6)   # -u'' + u = 1, natural ends: u = 1
        (1.0, 1.0)
    """

    def __init__(self, elem_dofs, ndofs: int, mesh: Mesh | None = None, *, ordering: str = "auto"):
        cd = np.asarray(elem_dofs)
        if cd.ndim != 2 or cd.size == 0:
            raise ValueError(f"elem_dofs must have shape (nel, nloc) with nel > 0, got {cd.shape}.")
        self.mesh = _dist.device_mesh() if mesh is None else mesh
        self.axis = _dist._mesh_axis(self.mesh)
        ndev = int(self.mesh.devices.size)
        self.pattern, slot = CSRPattern.from_cells(cd, ndofs)
        part = self.part = _dist.partition(self.pattern, ndev, ordering)
        nnz, nloc, width = self.pattern.nnz, part.nloc, part.cols.shape[-1]
        # Where each CSR slot lives: (device, position in the device's flattened (nloc, W) block).
        owner = np.full(nnz, -1, np.int64)
        pos = np.zeros(nnz, np.int64)
        flat = part.slots.reshape(ndev, -1)
        for d in range(ndev):
            real = np.flatnonzero(flat[d] < nnz)
            owner[flat[d][real]] = d
            pos[flat[d][real]] = real
        dump = nloc * width  # entries of other devices' rows go to a dropped extra slot
        elem_owner = owner[slot]  # (nel, nloc, nloc)
        lists = [np.flatnonzero((elem_owner == d).any(axis=(1, 2))) for d in range(ndev)]
        self.elements_per_device = np.array([lst.size for lst in lists])
        emax = max(int(self.elements_per_device.max()), 1)
        elems = np.zeros((ndev, emax), np.int32)
        target = np.full((ndev, emax) + slot.shape[1:], dump, np.int64)
        for d, lst in enumerate(lists):
            elems[d, : lst.size] = lst
            target[d, : lst.size] = np.where(elem_owner[lst] == d, pos[slot[lst]], dump)
        # The diagonal's position in each row, and the 1 of padded rows (they solve 1 x = 0).
        ones = (part.slots == nnz + 1).astype(np.float64)
        diag_pos = np.zeros((ndev, nloc), np.int32)
        dslot = part.diag
        for d in range(ndev):
            hit = part.slots[d] == dslot[d][:, None]
            diag_pos[d] = np.argmax(hit, axis=1)
        sharding = NamedSharding(self.mesh, P(self.axis))
        itype = np.int32 if dump < 2**31 else np.int64
        put = lambda a: jax.device_put(a, sharding)  # noqa: E731
        self._elems = put(elems)
        self._target = put(target.astype(itype))
        self._ones = put(ones)
        self._diag_pos = put(diag_pos)
        self._arrays = _dist.plan_arrays(part, self.mesh)
        # Jitted programs by key (_program). They must not hold self: a system referenced by its own cache
        # would keep its device arrays until the cyclic garbage collector runs.
        self._programs: OrderedDict = OrderedDict()
        self._programs_lock = threading.Lock()

    _MAX_PROGRAMS = 16  # element functions and CG options kept compiled (least recently used dropped)

    def __getstate__(self):
        # copy.deepcopy and pickle: the kept programs are a cache (rebuilt on use) and a lock does not copy.
        state = self.__dict__.copy()
        state.pop("_programs", None)
        state.pop("_programs_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._programs = OrderedDict()
        self._programs_lock = threading.Lock()

    def _program(self, key, build):
        """The jitted program for ``key`` (made by ``build()`` on a miss); ``build()`` each time if the key
        does not hash (e.g. an array among the CG options). ``build`` must not hold ``self``."""
        try:
            hash(key)
        except TypeError:
            return build()
        with self._programs_lock:  # build() only wraps a function in jit: cheap, nothing is traced
            program = self._programs.get(key)
            if program is None:
                program = self._programs[key] = build()
                if len(self._programs) > self._MAX_PROGRAMS:
                    self._programs.popitem(last=False)
            else:
                self._programs.move_to_end(key)
        return program

    # -- assembly
    def assemble(self, kernel, *element_inputs):
        """The matrix in row blocks: ``(ndev, nloc, W)`` values, sharded over the mesh.

        Called eagerly, the compiled assembly is kept per ``kernel`` (by identity, as ``jax.jit`` keys
        functions) and number of inputs: a kernel that reads a Python value changed since its first call
        (a global, a closed-over float) gives the old result. Pass such values in ``element_inputs``.

        Arguments:
            kernel: ``kernel(*inputs_e) -> (nloc, nloc)`` element matrix of one element (symmetric, and SPD
                once summed).
            *element_inputs: arrays with a leading axis of ``nel`` (one entry per element); each device
                reads the rows of its own elements.

        Returns:
            The block values (a JAX array sharded by its leading axis), for :meth:`solve` and
            :meth:`matvec`.
        """

        def element_matrices(ids, *inputs):
            return jax.vmap(kernel)(*(a[ids] for a in inputs))

        return self._assemble(("kernel", kernel), element_matrices, element_inputs)

    def assemble_elements(self, element_matrices, *args):
        """The matrix in row blocks from a function that computes the matrices of a list of elements.

        Called eagerly, the compiled assembly is kept per ``element_matrices`` (by identity), as for
        :meth:`assemble`.

        Arguments:
            element_matrices: ``element_matrices(ids, *args) -> (m, nloc, nloc)`` (or ``(m, nloc * nloc)``):
                the matrices of the elements ``ids`` (a traced ``(m,)`` int array: one device's elements,
                padded with element 0, whose padded entries are dropped).
            *args: pytrees of arrays that every device receives whole (replicated), e.g. the geometry.

        Returns:
            The block values, as :meth:`assemble`.
        """
        return self._assemble(("elements", element_matrices), element_matrices, args)

    def _assemble(self, key, element_matrices, args):
        """Run the assembly program kept under ``key`` (one cache entry per key; ``element_matrices`` is
        only used when the program is built, on the key's first call)."""
        part, mesh, axis, nargs = self.part, self.mesh, self.axis, len(args)
        build = lambda: _assembly_program(element_matrices, nargs, part, mesh, axis)  # noqa: E731
        program = self._program(("assembly", key, nargs), build)
        return program(self._elems, self._target, self._ones, *args)

    # -- products and solves
    def matvec(self, vals, x):
        """``A x`` (global ``x`` of shape ``(n,)``) from the block values."""
        part, mesh, axis = self.part, self.mesh, self.axis
        program = self._program(("matvec",), lambda: jax.jit(_product_program(part, mesh, axis)))
        return program(vals, x, self._arrays)

    def solve(self, vals, b, **cg_options):
        """``A^{-1} b`` by the sharded Jacobi CG, differentiable in ``vals`` and ``b``.

        Arguments:
            vals: block values from :meth:`assemble`.
            b: ``(n,)`` right-hand side.
            **cg_options: ``rtol``, ``atol``, ``maxiter``.

        Returns:
            ``x`` of shape ``(n,)``. Use :meth:`linear_solve` for the iterations and the status.
        """
        return self.linear_solve(vals, b, **cg_options)[0]

    def linear_solve(self, vals, b, **cg_options):
        """``(x, iterations, status)`` of :meth:`solve` (status: :class:`~igax.solvers.Status` codes)."""
        part, mesh, axis = self.part, self.mesh, self.axis

        def build():
            return jax.jit(functools.partial(_linear_solve, part=part, mesh=mesh, axis=axis, **cg_options))

        program = self._program(("solve", tuple(sorted(cg_options.items()))), build)
        return program(vals, b, self._arrays, self._diag_pos)


# The programs' bodies: functions of the partition, the mesh and its axis only (never of the system, which
# keeps the programs; see RowBlockSystem._program).
def _assembly_program(element_matrices, nargs, part, mesh, axis):
    """The jitted ``shard_map`` assembly: ``program(elems, target, ones, *args) -> block values``."""
    nloc, width = part.nloc, part.cols.shape[-1]

    def local(elems, target, ones, *inputs):
        ke = element_matrices(elems[0], *inputs)
        slots = target[0].reshape(-1)
        blk = jax.ops.segment_sum(ke.reshape(-1), slots, num_segments=nloc * width + 1)
        return (blk[:-1].reshape(nloc, width) + ones[0])[None]

    spec = P(axis)
    specs = (spec, spec, spec) + (P(),) * nargs
    # check_vma=False: element code may hold primitives whose abstract evaluation does not carry the mesh
    # axes a value varies over (igax.fem's contractions); the transpose then sums the cotangents of the
    # replicated arguments over the devices itself (one psum each), which they need anyway.
    shmap = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=spec, check_vma=False)
    # jit: outside a jitted caller, shard_map runs the element code op by op (10.6 s against 0.6 s for the
    # SpaceRowBlocks example); inside one, this jit is inlined. Kept per element function: a new jit each
    # call compiled again each call.
    return jax.jit(shmap)


def _permute(b, part, mesh, axis):
    bp = jnp.concatenate([b, jnp.zeros(1, b.dtype)])[part.perm].reshape(part.ndev, part.nloc)
    return jax.lax.with_sharding_constraint(bp, NamedSharding(mesh, P(axis)))


def _blocked_matvec(vals, xp, arrays, part, mesh, axis):
    def local(vals, xp, cols, *send):
        return _dist.block_matvec(vals[0], cols[0], send, xp[0], part, axis)[None]

    cols, _, _, *send = arrays
    spec = P(axis)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec,) * (3 + len(send)), out_specs=spec)(
        vals, xp, cols, *send
    )


def _product_program(part, mesh, axis):
    """``product(vals, x, arrays) -> A x`` (global ``x``)."""

    def product(vals, x, arrays):
        xp = _permute(x, part, mesh, axis)
        return _blocked_matvec(vals, xp, arrays, part, mesh, axis).reshape(-1)[part.iperm]

    return product


def _linear_solve(vals, b, arrays, diag_pos, *, part, mesh, axis, **cg_options):
    fixed = jax.lax.stop_gradient(vals)  # the solver is not differentiated; the product is
    cols, _, _, *send = arrays

    def cg(_matvec, bp):
        def local(vals, diag_pos, bp, cols, *send):
            d = jnp.take_along_axis(vals[0], diag_pos[0][:, None], axis=1)[:, 0]
            dinv = 1.0 / jnp.where(d != 0, d, 1.0)
            r = _dist.block_cg(vals[0], dinv, cols[0], send, bp[0], part, axis, **cg_options)
            return r.x[None], r.iterations, r.status

        spec = P(axis)
        x, k, status = jax.shard_map(
            local, mesh=mesh, in_specs=(spec,) * (4 + len(send)), out_specs=(spec, P(), P())
        )(fixed, diag_pos, bp, cols, *send)
        return x, (k, status)

    xp, (k, status) = jax.lax.custom_linear_solve(
        lambda x: _blocked_matvec(vals, x, arrays, part, mesh, axis),
        _permute(b, part, mesh, axis),
        cg,
        cg,
        symmetric=True,
        has_aux=True,
    )
    return xp.reshape(-1)[part.iperm], k, status
