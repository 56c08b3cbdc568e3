"""Uniform refinement of meshes: every cell split into 4 (2D) or 8 (3D) children, boundaries and subdomains
kept.

The new vertices are the nodes of the degree-2 Lagrange element (edge midpoints, then face centres of
hexahedra, then centres of quadrilaterals and hexahedra), numbered after the old vertices like the dofs of a
degree-2 space. Each cell type has fixed child templates (lists of degree-2 node ids), oriented once on the
reference cell, so children inherit the parent's positive orientation and their local facets on a parent facet
are known in advance: refining a named boundary is a table lookup. Tetrahedra split their inner octahedron
along its shortest diagonal, which keeps the shapes of repeatedly refined tetrahedra in a bounded number of
classes.

Every mesh made here remembers the mesh it was refined from (:func:`parent`), so a Lagrange space on it has a
hierarchy of nested meshes for geometric multigrid (:func:`igax.fem.mg_hierarchy`) without any bookkeeping by
the user. The record is weak in the fine mesh (it goes when the fine mesh goes) and keeps the coarser meshes
alive as long as the fine one lives (about a third more mesh memory in 2D, a seventh in 3D).
"""

from __future__ import annotations

import functools
import weakref
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from igax.bases.lagrange import reference_cell, reference_element
from igax.fem.mesh._arrays import determinant

if TYPE_CHECKING:  # annotations only: core's Mesh.refine calls this module
    from igax.fem.mesh.core import Mesh

__all__ = ["refine", "parent", "Refinement"]

# children as degree-2 node ids (vertices, edge midpoints in ReferenceCell.edges order, faces, centre)
_TRIANGLE = [[[0, 3, 5], [3, 1, 4], [5, 4, 2], [3, 4, 5]]]
_QUAD = [[[0, 4, 8, 7], [4, 1, 5, 8], [8, 5, 2, 6], [7, 8, 6, 3]]]
# tetra nodes: 4 = m01, 5 = m12, 6 = m20, 7 = m03, 8 = m13, 9 = m23; corner children, then the inner
# octahedron split around one of its three diagonals (6-8, 4-9 or 5-7) into 4 tetrahedra
_TET_CORNERS = [[0, 4, 6, 7], [4, 1, 5, 8], [6, 5, 2, 9], [7, 8, 9, 3]]
_TET_DIAGONALS = [((6, 8), (4, 5, 9, 7)), ((4, 9), (5, 8, 7, 6)), ((5, 7), (4, 8, 9, 6))]


def _hex_children() -> list[list[list[int]]]:
    """Child k is the sub-cube at the parent's vertex k: vertices (corner + vertex) / 2 in reference space."""
    el = reference_element("hexahedron", 2)
    corners = reference_cell("hexahedron").vertices
    lookup = {tuple(np.round(2 * x).astype(int)): i for i, x in enumerate(el.nodes)}
    return [[[lookup[tuple((c + v).astype(int))] for v in corners] for c in corners]]


def _tet_variants() -> list[list[list[int]]]:
    variants = []
    for (a, b), ring in _TET_DIAGONALS:
        inner = [[a, b, ring[k], ring[(k + 1) % 4]] for k in range(4)]
        variants.append(_TET_CORNERS + inner)
    return variants


@functools.cache
def _plan(cell: str) -> tuple[np.ndarray, np.ndarray]:
    """Child templates (nvariants, nchildren, nverts), positively oriented, and the facet table
    (nvariants, nfacets, nsub, 2): for parent facet f, the (child, child's local facet) pairs that tile it."""
    el = reference_element(cell, 2)
    raw = {"triangle": _TRIANGLE, "quad": _QUAD, "tetra": _tet_variants(), "hexahedron": _hex_children()}[
        cell
    ]
    templates = np.array(raw, dtype=np.int64)
    ref = reference_cell(cell)
    # orient each child on the reference cell (affine maps of positive parents preserve orientation)
    geo = reference_element(cell, 1)
    at = ref.vertices[:1] if ref.is_simplex else ref.vertices
    dn = geo.gradients(at)  # (nv, nverts, dim)
    coords = el.nodes[templates]  # (nvar, nchild, nverts, dim)
    det = determinant(np.einsum("xcbi,vbj->xcvij", coords, dn)).min(axis=-1)
    flip = {"triangle": [0, 2, 1], "quad": [0, 3, 2, 1], "tetra": [0, 2, 1, 3]}
    if np.any(det < 0):
        templates[det < 0] = templates[det < 0][:, flip[cell]]
    local = np.array(ref.facets)  # (nfacets, nvf)
    on_parent = [set(ids.tolist()) for ids in el.facet_nodes]
    table = []
    for tpl in templates:
        rows = []
        for f in range(len(local)):
            pairs = [
                (c, g)
                for c in range(len(tpl))
                for g in range(len(local))
                if set(tpl[c][local[g]].tolist()) <= on_parent[f]
            ]
            rows.append(pairs)
        table.append(rows)
    table = np.array(table, dtype=np.int64)  # (nvar, nfacets, nsub, 2)
    for arr in (templates, table):
        arr.setflags(write=False)
    return templates, table


class Refinement(NamedTuple):
    """How a mesh was made from its parent by :func:`refine` (one uniform refinement step).

    Attributes:
        mesh: the parent (coarser) mesh.
        children: (nvariants, nchildren, nverts) child templates: child ``k`` of a parent cell of variant
            ``v`` has as vertices the degree-2 nodes ``children[v, k]`` of the parent's reference element.
        variant: (parent ncells,) the template variant of each parent cell (tetrahedra: which diagonal of
            the inner octahedron was cut; 0 for the other cells).

    Fine cell ``c * nchildren + k`` is child ``k`` of parent cell ``c``.
    """

    mesh: Mesh
    children: np.ndarray
    variant: np.ndarray


_PARENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def parent(mesh: Mesh) -> Refinement | None:
    """The mesh ``mesh`` was refined from by :func:`refine`, with the child map; None for any other mesh.

    Example:
        >>> from igax.fem.mesh import unit_square
        >>> from igax.fem.mesh.refine import parent, refine
        >>> fine = refine(unit_square(2))
        >>> parent(fine).mesh.ncells
        8
    """
    return _PARENTS.get(mesh)


def refine(mesh: Mesh, times: int = 1) -> Mesh:
    """Uniformly refine a mesh ``times`` times (each time: h -> h / 2).

    Arguments:
        mesh: the mesh; its named boundaries and subdomains are refined with it.
        times: number of refinements (>= 0).

    Returns:
        A new :class:`~igax.fem.Mesh`. The old vertices keep their ids; cell ``c`` of the old mesh becomes
        cells ``c * nchildren + k`` (``nchildren`` = 4 in 2D, 8 in 3D). The new mesh remembers the meshes it
        was refined from (:func:`parent`): geometric multigrid on a Lagrange space over it uses them.

    Example:
        >>> from igax.fem.mesh import unit_square
        >>> from igax.fem.mesh.refine import refine
        >>> fine = refine(unit_square(2), times=2)
        >>> fine.ncells
        128
    """
    if isinstance(times, bool) or not isinstance(times, (int, np.integer)) or times < 0:
        raise ValueError(f"times must be an int >= 0, got {times!r}")
    for _ in range(int(times)):
        mesh = _refine_once(mesh)
    return mesh


def _refine_once(mesh: Mesh) -> Mesh:
    cell = mesh.cell_type
    ref = mesh.reference
    el = reference_element(cell, 2)
    templates, table = _plan(cell)
    nvar, nchild, _ = templates.shape
    # global ids of the degree-2 nodes of every cell, numbered like the dofs of a degree-2 space; their
    # coordinates are vertex averages of the entity (exact for the degree-1 maps: linear along edges,
    # bilinear faces and trilinear cells have their centre at the vertex average)
    edges, c2e = mesh.edges()
    parts, coords = [mesh.cells, mesh.npoints + c2e], [mesh.points, mesh.points[edges].mean(axis=1)]
    offset = mesh.npoints + len(edges)
    if el.dofs_per_entity[2]:
        faces, c2f = mesh.faces()
        parts.append(offset + c2f)
        coords.append(mesh.points[faces].mean(axis=1))
        offset += len(faces)
    if el.dofs_per_entity[3]:
        parts.append(offset + np.arange(mesh.ncells)[:, None])
        coords.append(mesh.points[mesh.cells].mean(axis=1))
    nodes = np.concatenate(parts, axis=1)  # (ncells, n2)
    points = np.concatenate(coords)

    if nvar > 1:  # tetrahedra: split the inner octahedron along its shortest diagonal
        diag = [np.square(points[nodes[:, a]] - points[nodes[:, b]]).sum(-1) for (a, b), _ in _TET_DIAGONALS]
        variant = np.argmin(np.stack(diag, axis=-1), axis=1)
    else:
        variant = np.zeros(mesh.ncells, dtype=np.int64)
    rows = np.arange(mesh.ncells)[:, None, None]
    cells = nodes[rows, templates[variant]].reshape(-1, templates.shape[2])  # (ncells * nchild, nverts)

    local = np.array(ref.facets)
    boundaries = {}
    for name, facets in mesh.boundaries.items():
        owner, lf = mesh.locate_facets(facets)
        pairs = table[variant[owner], lf]  # (nb, nsub, 2): (child, child's local facet)
        child = owner[:, None] * nchild + pairs[..., 0]
        boundaries[name] = cells[child[..., None], local[pairs[..., 1]]].reshape(-1, local.shape[1])
    subdomains = {
        name: (ids[:, None] * nchild + np.arange(nchild)).reshape(-1) for name, ids in mesh.subdomains.items()
    }
    out = type(mesh)._trusted(points, cells, cell, boundaries, subdomains, check=mesh.check)
    if mesh.check and not ref.is_simplex:  # children of curved-ish quads / hexahedra: verify
        out.check_quality()
    variant.setflags(write=False)
    _PARENTS[out] = Refinement(mesh, templates, variant)
    return out
