"""Residuals and sparse tangents assembled from an element kernel (for Newton solves).

Given an element residual ``r_e = kernel(u_e, *args_e)`` (``u_e``: the element's dof values) and the element
connectivity, :class:`ElementSystem` builds the global residual ``R(u) = sum_e P_e^T r_e`` and its tangent
``dR/du`` as a :class:`~igax.solvers.sparse.SparseMatrix`, whose element blocks are ``jax.jacfwd(kernel)``
evaluated for all elements at once (``vmap``) and scattered into the CSR values with one ``segment_sum``.
The pattern and the scatter map are computed once in NumPy.

Homogeneous Dirichlet conditions: write ``-1`` for a fixed dof in ``elem_dofs``; it reads as 0 and its rows
and columns are dropped (the unknowns are the free dofs only). Non-zero boundary values enter through
``args``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from igax.solvers.sparse import CSRPattern, SparseMatrix

__all__ = ["ElementSystem"]


class ElementSystem:
    """Global residual and sparse tangent of an element kernel.

    Arguments:
        kernel: ``kernel(u_e, *args_e) -> r_e`` with ``u_e`` and ``r_e`` of shape ``(nloc,)``.
        elem_dofs: int array ``(nel, nloc)``: the global dof of each local dof, ``-1`` for a fixed (zero)
            dof.
        ndofs: number of unknowns (dofs are ``0 .. ndofs - 1``).
        arg_axes: per extra argument, ``0`` when it holds one entry per element (leading axis ``nel``),
            ``None`` when it is shared by all elements (like ``vmap``'s ``in_axes``); default: all per
            element.
        symmetric: the tangent is symmetric (true for kernels that are gradients of an element energy).
        positive_definite: the tangent is SPD (convex energies).

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from igax.solvers import ElementSystem
        >>> def kernel(u_e, h):                      # 1D P1 element of -(1 + u^2) u'' = 1
        ...     k = 1.0 + jnp.mean(u_e) ** 2
        ...     return k / h * jnp.array([[1.0, -1.0], [-1.0, 1.0]]) @ u_e - 0.5 * h
        >>> elem_dofs = np.array([[-1, 0], [0, 1], [1, 2], [2, -1]])   # 4 elements, both ends fixed
        >>> sys = ElementSystem(kernel, elem_dofs, 3, arg_axes=(None,))
        >>> u, h = jnp.zeros(3), 0.25
        >>> R, K = sys.residual(u, h), sys.tangent(u, h)
        >>> R.tolist(), K.todense()[0].tolist()
        ([-0.25, -0.25, -0.25], [8.0, -4.0, 0.0])
    """

    def __init__(
        self,
        kernel: Callable,
        elem_dofs,
        ndofs: int,
        *,
        arg_axes: Sequence[int | None] | None = None,
        symmetric: bool = False,
        positive_definite: bool = False,
    ):
        dofs = np.asarray(elem_dofs)
        if dofs.ndim != 2 or not np.issubdtype(dofs.dtype, np.integer):
            raise ValueError(
                f"elem_dofs must be an integer array (nel, nloc), got {dofs.dtype} {dofs.shape}."
            )
        if dofs.size and (dofs.max() >= ndofs or dofs.min() < -1):
            raise ValueError(f"elem_dofs must lie in [-1, ndofs={ndofs}) (-1 marks a fixed dof).")
        self.kernel = kernel
        self.ndofs = int(ndofs)
        self.arg_axes = None if arg_axes is None else tuple(arg_axes)
        self.symmetric = bool(symmetric) or bool(positive_definite)
        self.positive_definite = bool(positive_definite)
        nel, nloc = dofs.shape
        self.elem_dofs = dofs.astype(np.int32)
        self.free = dofs >= 0  # (nel, nloc)
        self.gather = np.maximum(dofs, 0).astype(np.int32)
        # residual scatter: fixed rows go to a dropped extra segment
        self.rows_scatter = np.where(self.free, dofs, ndofs).astype(np.int32).ravel()
        rows = np.broadcast_to(dofs[:, :, None], (nel, nloc, nloc))
        cols = np.broadcast_to(dofs[:, None, :], (nel, nloc, nloc))
        keep = (rows >= 0) & (cols >= 0)
        pattern, slot = CSRPattern.from_coo(rows[keep], cols[keep], (ndofs, ndofs))
        self.pattern = pattern
        full_slot = np.full(keep.shape, pattern.nnz, dtype=np.int32)  # dropped entries -> extra segment
        full_slot[keep] = slot
        self.slot = full_slot.ravel()
        if np.any(np.diff(pattern.indptr) == 0):
            raise ValueError("some dof is not touched by any element: the tangent would be singular.")

    def _element_values(self, u):
        return jnp.where(jnp.asarray(self.free), u[self.gather], 0.0)  # (nel, nloc)

    def _axes(self, args):
        axes = self.arg_axes if self.arg_axes is not None else (0,) * len(args)
        if len(axes) != len(args):
            raise ValueError(f"arg_axes has {len(axes)} entries but {len(args)} extra arguments were given.")
        return (0,) + tuple(axes)

    def residual(self, u: jax.Array, *args) -> jax.Array:
        """``R(u) = sum_e P_e^T kernel(u_e, *args_e)``, shape ``(ndofs,)``."""
        return self._residual_jit(u, *args)

    def tangent(self, u: jax.Array, *args) -> SparseMatrix:
        """``dR/du`` as a :class:`SparseMatrix` (element Jacobians by ``jax.jacfwd``)."""
        return self._tangent_jit(u, *args)

    # jitted once per system (inlined when called inside another jit), so eager calls compile once
    @functools.cached_property
    def _residual_jit(self):
        return jax.jit(self._residual)

    @functools.cached_property
    def _tangent_jit(self):
        return jax.jit(self._tangent)

    def _residual(self, u, *args):
        r_e = jax.vmap(self.kernel, in_axes=self._axes(args))(self._element_values(u), *args)  # (nel, nloc)
        r = jax.ops.segment_sum(r_e.ravel(), jnp.asarray(self.rows_scatter), num_segments=self.ndofs + 1)
        return r[: self.ndofs]

    def _tangent(self, u, *args):
        k_e = jax.vmap(jax.jacfwd(self.kernel), in_axes=self._axes(args))(self._element_values(u), *args)
        values = jax.ops.segment_sum(k_e.ravel(), jnp.asarray(self.slot), num_segments=self.pattern.nnz + 1)
        return SparseMatrix(
            values[: self.pattern.nnz],
            self.pattern,
            symmetric=self.symmetric,
            positive_definite=self.positive_definite,
        )

    @classmethod
    def from_energy(cls, energy: Callable, elem_dofs, ndofs: int, **kwargs) -> ElementSystem:
        """The system of ``R = dE/du`` for ``E(u) = sum_e energy(u_e, *args_e)``: the tangent is symmetric."""
        kwargs.setdefault("symmetric", True)
        return cls(jax.grad(energy), elem_dofs, ndofs, **kwargs)
