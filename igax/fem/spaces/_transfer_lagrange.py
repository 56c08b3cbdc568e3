"""Geometric transfers between nested Lagrange spaces, and the near-null space of a mesh space.

A mesh made by :func:`igax.fem.mesh.refine.refine` splits every parent cell into children that are images of
fixed sub-cells of the reference cell (the templates of ``mesh_refine``), and the children's degree-1 maps are
the restrictions of the parent's (the new vertices are vertex averages, which is exact for affine and
multilinear maps). So the Lagrange space of the parent mesh is a subspace of the child mesh's, and the
prolongation is nodal interpolation: ``P[i, J]`` is coarse basis function ``J`` at fine dof ``i``. It is
computed in reference coordinates of the parent cell (NumPy, once per space): the fine dof's node in its
child cell's reference element is mapped through the child template into the parent's reference cell, and the
parent's reference basis is evaluated there. Exact for P1/P2 on simplices and Q1/Q2 on quadrilaterals and
hexahedra.

Meshes with no recorded parent get an algebraic hierarchy instead; its smoothed aggregation needs the
near-null space of the operator, which the space knows: the constants per component, and for vector spaces
of the mesh's dimension the rigid-body modes from the dof coordinates (3 in 2D, 6 in 3D).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from igax.bases.lagrange import reference_element

__all__ = ["lagrange_levels", "near_nullspace"]


def _first_occurrence(cell_dofs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each dof, one (cell, local index) pair that carries it (the first in C order)."""
    flat = cell_dofs.ravel()
    first = np.empty(n, dtype=np.int64)
    first[flat[::-1]] = np.arange(flat.size)[::-1]
    return first // cell_dofs.shape[1], first % cell_dofs.shape[1]


def _prolongation(fine_plan, coarse_plan, refinement) -> sp.csr_matrix:
    """Scalar prolongation (fine nscalar, coarse nscalar) for one refinement step."""
    cell = fine_plan.ref.cell
    degree = fine_plan.degree
    ref = reference_element(cell, degree)
    geo = reference_element(cell, 1)
    el2 = reference_element(cell, 2)  # the children's vertices are degree-2 nodes of the parent
    nchild = refinement.children.shape[1]
    fcell, local = _first_occurrence(fine_plan.cell_dofs, fine_plan.nscalar)
    pcell, k = fcell // nchild, fcell % nchild
    corners = el2.nodes[refinement.children[refinement.variant[pcell], k]]  # (n, nv, dim)
    gv = geo.values(ref.nodes)  # (nloc, nv): the child's degree-1 map at its own nodes
    xi = np.einsum("nv,nvd->nd", gv[local], corners)  # fine nodes in the parent's reference cell
    vals = ref.values(xi)  # (n, nloc) coarse (parent) basis at those points
    vals[np.abs(vals) < 1e-13] = 0.0  # exact zeros of the nodal basis, up to rounding
    rows = np.repeat(np.arange(fine_plan.nscalar), vals.shape[1])
    P = sp.csr_matrix(
        (vals.ravel(), (rows, coarse_plan.cell_dofs[pcell].ravel())),
        shape=(fine_plan.nscalar, coarse_plan.nscalar),
    )
    P.eliminate_zeros()
    return P


def lagrange_levels(
    space, *, coarse_size: int = 256, max_levels: int = 20
) -> list[tuple[int, sp.csr_matrix]]:
    """Coarse levels ``(ndofs, P)`` of a LagrangeSpace from the meshes its mesh was refined from.

    Returns an empty list when the mesh has no recorded parent (see :func:`igax.fem.mesh.refine.parent`; the
    space's plan keeps the parent mesh, so the fine mesh itself need not be kept).
    Coarsening stops when a level has at most ``coarse_size`` dofs or after ``max_levels`` coarse levels.
    """
    from igax.fem.spaces.lagrange import LagrangeSpace

    plan = space.plan
    levels = []
    while plan.ndofs > coarse_size and len(levels) < max_levels:
        rec = getattr(plan, "refinement", None)  # set by LagrangeSpace from mesh_refine.parent(mesh)
        if rec is None:
            break
        coarse = LagrangeSpace(rec.mesh, plan.degree, shape=plan.value_shape)
        P = _prolongation(plan, coarse.plan, rec)
        if plan.ncomp > 1:
            P = sp.kron(sp.identity(plan.ncomp, format="csr"), P, format="csr")
        levels.append((coarse.plan.ndofs, P))
        plan = coarse.plan
    return levels


def near_nullspace(space) -> np.ndarray:
    """Near-null space of the space's stiffness-type operators, (ndofs, k), for smoothed aggregation.

    Scalar spaces and vector spaces whose number of components is not the mesh dimension: one constant per
    component. Vector spaces of the mesh dimension (displacements): the rigid-body modes, translations and
    rotations about the centroid of the dofs (3 in 2D, 6 in 3D), from the dof coordinates.
    """
    plan = space.plan
    n, c = plan.nscalar, plan.ncomp
    if c == 1:
        return np.ones((n, 1))
    if c != plan.dim or c not in (2, 3) or not hasattr(space, "dof_coordinates"):
        return np.kron(np.eye(c), np.ones((n, 1)))
    x = np.asarray(space.dof_coordinates(), dtype=np.float64)
    x = x - x.mean(axis=0)
    modes = [np.kron(np.eye(c)[:, j : j + 1], np.ones((n, 1)))[:, 0] for j in range(c)]
    # rotation about axis e: u = e x (x - x0); in 2D only about z: u = (-y, x)
    pairs = [(0, 1)] if c == 2 else [(0, 1), (1, 2), (2, 0)]
    for a, b in pairs:
        u = np.zeros((c, n))
        u[a], u[b] = -x[:, b], x[:, a]
        modes.append(u.ravel())
    return np.stack(modes, axis=1)
