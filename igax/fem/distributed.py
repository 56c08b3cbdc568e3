"""Forms assembled straight into the devices' row blocks: the ``igax.fem`` side of
:class:`igax.solvers.row_blocks.RowBlockSystem`.

:class:`SpaceRowBlocks` is a row-block system built from a space's element dofs. Each device computes, inside
``shard_map``, the element matrices of its own elements with :func:`igax.fem.element_matrices` (the code of
:func:`igax.fem.assemble`) and adds their entries of its rows into its block: the global values never exist.
What each device receives whole (replicated) is what the element matrices are computed from: the geometry
(control points or mesh nodes), the coefficient vectors of Field inputs and arrays of values at the
quadrature points, from which it takes its own elements' rows; callables of ``x`` are evaluated at its own
elements' points only. The solver layer knows nothing of forms; this module is the glue.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from igax.fem.bc import DirichletBC
from igax.fem.field import Field
from igax.fem.forms.elements import element_dofs, element_matrices
from igax.fem.forms.form import Form
from igax.fem.spaces.base import FunctionSpace
from igax.solvers.row_blocks import RowBlockSystem

__all__ = ["SpaceRowBlocks"]


class SpaceRowBlocks(RowBlockSystem):
    """A :class:`~igax.solvers.row_blocks.RowBlockSystem` on the elements of a space: forms assembled by rows.

    Arguments:
        space: the space (its element dofs give the pattern and the row blocks; built once per space).
        mesh: a one-axis :class:`jax.sharding.Mesh` (default: every device).
        ordering: the row blocks' numbering (``"auto"``, ``"natural"``, ``"rcm"``).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> from igax.fem import library
        >>> from igax.fem.distributed import SpaceRowBlocks
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=6))
        >>> S = SpaceRowBlocks(V)                                   # every device (one here)
        >>> vals = S.assemble_form(library.diffusion, kappa=lambda x: 1 + x[0])
        >>> bc = fem.DirichletBC(V, None, 0.0)
        >>> b = fem.assemble(library.source, V, f=1.0)
        >>> u = S.solve_bc(vals, b, bc, rtol=1e-12)
        >>> ref = fem.solve(fem.assemble(library.diffusion, V, kappa=lambda x: 1 + x[0]), b, bc=bc)
        >>> bool(jnp.allclose(u, ref.coeffs, atol=1e-10))
        True
    """

    def __init__(self, space: FunctionSpace, mesh=None, *, ordering: str = "auto"):
        if not isinstance(space, FunctionSpace):
            raise TypeError(f"space must be a SplineSpace or LagrangeSpace, got {type(space).__name__}.")
        super().__init__(element_dofs(space), space.ndofs, mesh, ordering=ordering)
        self.space = space
        self._bc_masks: dict = {}

    def assemble_form(self, form: Form, space: FunctionSpace | None = None, **inputs) -> jax.Array:
        """The matrix of a bilinear form in row blocks, each device computing its own elements.

        Called eagerly, the compiled assembly is kept per ``form`` and static inputs (the inputs that are
        neither arrays nor Fields: numbers, callables of ``x``), the form compared by identity and the static
        inputs by equality (a callable by identity), as ``jax.jit`` compares its static arguments. So a
        ``kappa`` callable that reads a Python value changed since its first call (a global, a closed-over
        float) gives the old matrix, as it would under ``jax.jit``: pass such values as arrays or Fields,
        or a new callable.

        Arguments:
            form: a volume bilinear form (symmetric, SPD once constrained, for :meth:`solve`).
            space: the space with the current geometry (default: the one the system was built on); it must
                have the same elements and dofs (e.g. the space of a traced geometry, for shape derivatives).
            **inputs: as for :func:`igax.fem.assemble`.

        Returns:
            ``(ndev, nloc, W)`` block values, sharded over the mesh; differentiable in the inputs and the
            geometry.
        """
        space = self.space if space is None else space
        if space.plan is not self.space.plan:
            raise ValueError(
                "space must be the space this SpaceRowBlocks was built on (the same plan), possibly with "
                "other geometry values; build a new SpaceRowBlocks for another space."
            )
        arrays = {k: v for k, v in inputs.items() if isinstance(v, Field) or _is_array(v)}
        static = {k: v for k, v in inputs.items() if k not in arrays}

        def matrices(ids, space, arrays):
            return element_matrices(form, space, ids, **static, **arrays)

        # One compiled assembly per form and static inputs (used only when that program is built).
        return self._assemble(("form", form, tuple(sorted(static.items()))), matrices, (space, arrays))

    def condense(self, vals, b, bc: DirichletBC):
        """Block values and right-hand side with the Dirichlet condition built in (SPD stays SPD).

        Constrained rows and columns are zeroed with a 1 on the diagonal, and ``b`` becomes ``b - A g`` on
        the free rows and ``g`` on the constrained ones (``g`` the prescribed values), so the solution takes
        the prescribed values; :func:`igax.fem.solve` gives the same solution.

        Returns:
            ``(vals_c, b_c)``.
        """
        if not isinstance(bc, DirichletBC) or bc.space.plan is not self.space.plan:
            raise ValueError("bc must be a DirichletBC on the space this SpaceRowBlocks was built on.")
        keep, unit = self._masks(bc.dofs)
        vals_c = jnp.where(unit, 1.0, jnp.where(keep, vals, 0.0))
        g = jnp.zeros(self.space.ndofs, vals.dtype).at[bc.dofs].set(bc.values)
        b_c = (jnp.asarray(b) - self.matvec(vals, g)).at[bc.dofs].set(bc.values)
        return vals_c, b_c

    def solve_bc(self, vals, b, bc: DirichletBC | None = None, **cg_options):
        """``A u = b`` with a Dirichlet condition (:meth:`condense`, then :meth:`solve`); ``u`` of shape
        ``(ndofs,)`` with exactly the prescribed values on the constrained dofs."""
        if bc is None:
            return self.solve(vals, b, **cg_options)
        vals_c, b_c = self.condense(vals, b, bc)
        return bc.expand(self.solve(vals_c, b_c, **cg_options))

    def _masks(self, dofs: np.ndarray):
        """Sharded boolean blocks: entries kept (free row and column) and constrained diagonals (set to 1)."""
        key = dofs.tobytes()
        if key not in self._bc_masks:
            pat, part = self.pattern, self.part
            isd = np.zeros(pat.shape[0], bool)
            isd[dofs] = True
            free = ~(isd[pat.rows] | isd[pat.indices])
            diag = np.zeros(pat.nnz, bool)
            diag[pat.diagonal_slots[dofs]] = True
            ext = lambda a, pad: np.concatenate([a, pad])  # noqa: E731  (slots nnz: padding, nnz + 1: a 1)
            keep = ext(free, [False, True])[part.slots]
            unit = ext(diag, [False, False])[part.slots]
            sharding = NamedSharding(self.mesh, P(self.axis))
            self._bc_masks[key] = (jax.device_put(keep, sharding), jax.device_put(unit, sharding))
        return self._bc_masks[key]


def _is_array(v) -> bool:
    return isinstance(v, (jax.Array, np.ndarray)) and not isinstance(v, np.generic)
