"""Unstructured meshes of triangles, quadrilaterals, tetrahedra or hexahedra, with named boundaries.

A :class:`Mesh` is plain NumPy data: vertex coordinates, cell connectivity in meshio's vertex order, named
sets of boundary facets and named sets of cells. Everything a Lagrange space needs from the topology (unique
edges and faces with cell-to-entity maps, boundary facets, the cell and local facet that own a facet) is
computed on demand, vectorised with sorting and ``cumsum`` (no Python loop over cells), and cached on the
mesh.

Conventions: cells are positively oriented (counter-clockwise in 2D, right-handed in 3D); the Jacobian of each
cell's map from its reference cell (``igax.bases.lagrange``) has a positive determinant at every vertex, which
the constructor checks, with the absence of coincident unmerged vertices and of repeated cells
(``igax.fem.mesh.duplicates``). Facets are stored oriented outwards (the order of ``ReferenceCell.facets``).
Generated meshes name the sides of their box "left"/"right" (x min/max), "bottom"/"top" (y) and "front"/"back"
(z), like the spline geometries in ``igax.fem.geometry``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from functools import cached_property
from typing import Any

import meshio
import numpy as np

from igax.bases.lagrange import ReferenceCell, reference_cell, reference_element
from igax.fem.mesh import duplicates, io, refine
from igax.fem.mesh._arrays import MESH_CELLS, determinant, sort_rows, unique_rows
from igax.fem.quadrature import quadrature

__all__ = ["MESH_CELLS", "Mesh", "from_meshio", "read_mesh"]

_REL_TOL = 1e-12  # a cell is degenerate when det J <= _REL_TOL * (its edge length) ** dim


def _as_index_array(value: Any, name: str, ncols: int | None, upper: int) -> np.ndarray:
    """Validated read-only int64 array with ``ncols`` columns (1D if ncols is None), entries in [0, upper)."""
    arr = np.asarray(value)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.int64, copy=True)
    if ncols is None:
        arr = arr.reshape(-1)
    elif arr.ndim != 2 or arr.shape[1] != ncols:
        if arr.size == 0:
            arr = arr.reshape(0, ncols)
        else:
            raise ValueError(f"{name} must have shape (n, {ncols}), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        raise ValueError(f"{name} holds indices outside [0, {upper}): min {arr.min()}, max {arr.max()}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class _Entities:
    """Unique sub-entities (edges, faces or facets) of the cells."""

    vertices: np.ndarray  # (n, k) vertex ids, in the orientation of the first cell that has the entity
    sorted_vertices: np.ndarray  # (n, k) the same ids sorted: the entity's key
    cell_to_entity: np.ndarray  # (ncells, nlocal)
    owner: np.ndarray  # (n,) first cell that has the entity
    owner_local: np.ndarray  # (n,) its local index in that cell
    counts: np.ndarray  # (n,) number of cells that share the entity


@dataclass(frozen=True, eq=False)
class Mesh:
    """A mesh of one cell type with named boundaries and subdomains (NumPy data, read-only).

    Arguments:
        points: (npts, dim) vertex coordinates; dim is the cell's dimension (2 for triangles and quads).
        cells: (ncells, nverts) vertex ids per cell in meshio order, positively oriented.
        cell_type: "triangle", "quad", "tetra" or "hexahedron".
        boundaries: name -> (nf, nverts_per_facet) facets (vertex ids); re-oriented outwards on construction.
        subdomains: name -> (n,) cell ids.
        check: run :meth:`check_duplicates` (raise on coincident unmerged vertices, a hidden slit, and on a
            cell listed twice) and :meth:`check_quality` (raise on inverted or degenerate cells). Default
            True.
        merge_duplicates: first merge vertices that coincide (within ``1e-10`` of the bounding-box diagonal)
            and are used by cells into one (the smallest id; the others are dropped and the later vertices
            renumbered), as :meth:`merge_duplicate_vertices` does. Default False: such vertices raise.

    Equality and hashing are by identity, so a mesh can sit in a static field of an ``equinox`` module.

    Example:
        >>> from igax.fem import unit_square
        >>> mesh = unit_square(4)
        >>> mesh.ncells, sorted(mesh.boundaries)
        (32, ['bottom', 'left', 'right', 'top'])
        >>> edges, cell_to_edge = mesh.edges()
        >>> edges.shape, cell_to_edge.shape
        ((56, 2), (32, 3))
    """

    points: np.ndarray
    cells: np.ndarray
    cell_type: str
    boundaries: Mapping[str, np.ndarray] = field(default_factory=dict)
    subdomains: Mapping[str, np.ndarray] = field(default_factory=dict)
    check: bool = field(default=True, repr=False)
    merge_duplicates: InitVar[bool] = False

    def __post_init__(self, merge_duplicates: bool) -> None:
        ref = reference_cell(self.cell_type)
        if ref.cell not in MESH_CELLS:
            raise ValueError(f"cell_type={self.cell_type!r} is not a mesh cell type; use one of {MESH_CELLS}")
        points = np.array(self.points, dtype=np.float64, copy=True)
        if points.ndim != 2 or points.shape[1] != ref.dim:
            hint = " (drop the z column: points[:, :2])" if points.ndim == 2 and points.shape[1] == 3 else ""
            raise ValueError(
                f"points must have shape (npts, {ref.dim}) for {ref.cell} cells, got {points.shape}{hint}"
            )
        if not np.all(np.isfinite(points)):
            raise ValueError("points contain NaN or infinite coordinates")
        points.setflags(write=False)
        cells = _as_index_array(self.cells, "cells", ref.nverts, len(points))
        if len(cells) == 0:
            raise ValueError("cells is empty: a mesh needs at least one cell")
        object.__setattr__(self, "cell_type", ref.cell)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "cells", cells)
        nvf = len(ref.facets[0])
        bnd = {}
        for name, facets in dict(self.boundaries).items():
            if not isinstance(name, str):
                raise TypeError(f"boundary names must be strings, got {name!r}")
            bnd[name] = _as_index_array(facets, f"boundaries[{name!r}]", nvf, len(points))
        sub = {}
        for name, ids in dict(self.subdomains).items():
            if not isinstance(name, str):
                raise TypeError(f"subdomain names must be strings, got {name!r}")
            sub[name] = _as_index_array(ids, f"subdomains[{name!r}]", None, len(cells))
        if merge_duplicates:
            points, cells, bnd, _ = _merged(points, cells, bnd)
            object.__setattr__(self, "points", points)
            object.__setattr__(self, "cells", cells)
        object.__setattr__(self, "subdomains", sub)
        object.__setattr__(self, "boundaries", {})
        object.__setattr__(self, "boundaries", {k: self._orient_facets(v, k) for k, v in bnd.items()})
        if self.check:
            self.check_duplicates()
            self.check_quality()

    # ------------------------------------------------------------------------------------------ basic facts
    @property
    def reference(self) -> ReferenceCell:
        """The reference cell (vertices, local edges, faces and facets)."""
        return reference_cell(self.cell_type)

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    @property
    def npoints(self) -> int:
        return self.points.shape[0]

    @property
    def ncells(self) -> int:
        return self.cells.shape[0]

    @property
    def facet_type(self) -> str:
        """meshio name of the facets: "line" in 2D, "triangle" or "quad" in 3D."""
        return self.reference.facet_cell

    @property
    def boundary_names(self) -> tuple[str, ...]:
        return tuple(self.boundaries)

    def __repr__(self) -> str:
        return (
            f"Mesh({self.cell_type}, npoints={self.npoints}, ncells={self.ncells}, "
            f"boundaries={list(self.boundaries)}, subdomains={list(self.subdomains)})"
        )

    @classmethod
    def _trusted(cls, points: np.ndarray, cells: np.ndarray, cell_type: str,
                 boundaries: Mapping[str, np.ndarray], subdomains: Mapping[str, np.ndarray],
                 check: bool = True) -> Mesh:  # fmt: skip
        """Build without validation from data that is already valid and oriented (generators, copies)."""
        self = object.__new__(cls)
        for arr in (points, cells, *boundaries.values(), *subdomains.values()):
            arr.setflags(write=False)
        fields = dict(points=points, cells=cells, cell_type=cell_type, boundaries=dict(boundaries),
                      subdomains=dict(subdomains), check=check)  # fmt: skip
        for key, value in fields.items():
            object.__setattr__(self, key, value)
        return self

    def _replace(self, **changes: Any) -> Mesh:
        """A copy with boundaries or subdomains changed, sharing points, cells and the cached topology."""
        fields = dict(points=self.points, cells=self.cells, cell_type=self.cell_type,
                      boundaries=self.boundaries, subdomains=self.subdomains, check=self.check)  # fmt: skip
        fields.update(changes)
        new = Mesh._trusted(**fields)
        for key in ("_edge_table", "_face_table", "_facet_table"):
            if key in self.__dict__:
                new.__dict__[key] = self.__dict__[key]
        if "_grid_shape" in self.__dict__ and new.cells is self.cells:  # structured meshes' point grid
            new.__dict__["_grid_shape"] = self.__dict__["_grid_shape"]
        return new

    # ------------------------------------------------------------------------------------------ topology
    def _entities(self, local: Sequence[tuple[int, ...]]) -> _Entities:
        loc = np.array(local, dtype=np.int64)  # (nlocal, k)
        verts = self.cells[:, loc].reshape(-1, loc.shape[1])  # (ncells * nlocal, k)
        key = sort_rows(verts)
        first, inverse, counts = unique_rows(key)
        ents = _Entities(
            vertices=verts[first],
            sorted_vertices=key[first],
            cell_to_entity=inverse.reshape(self.ncells, len(loc)),
            owner=first // len(loc),
            owner_local=first % len(loc),
            counts=counts,
        )
        for arr in vars(ents).values():
            arr.setflags(write=False)
        return ents

    @cached_property
    def _edge_table(self) -> _Entities:
        return self._entities(self.reference.edges)

    @cached_property
    def _face_table(self) -> _Entities:
        return self._entities(self.reference.faces)

    @cached_property
    def _facet_table(self) -> _Entities:
        if self.dim == 2:  # the facets of 2D cells are their edges, in the same local order
            return self._edge_table
        return self._face_table

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Unique edges and the cell-to-edge map.

        Returns:
            ``edges (nedges, 2)`` vertex ids with ``edges[:, 0] < edges[:, 1]``, and ``cell_to_edge (ncells,
            nedges_per_cell)`` where column ``e`` is the cell's local edge ``reference.edges[e]``.

        Example:
            >>> from igax.fem import unit_square
            >>> e, c2e = unit_square(1, cell="quad").edges()
            >>> e.tolist(), c2e.tolist()
            ([[0, 1], [0, 2], [1, 3], [2, 3]], [[0, 2, 3, 1]])
        """
        t = self._edge_table
        return t.sorted_vertices, t.cell_to_entity

    def faces(self) -> tuple[np.ndarray, np.ndarray]:
        """Unique 2D faces of a 3D mesh and the cell-to-face map.

        Returns:
            ``faces (nfaces, nverts_per_face)`` vertex ids in the (cyclic) order of the first cell that has
            the face (that cell's outward orientation), and ``cell_to_face (ncells, nfaces_per_cell)`` where
            column ``f`` is the cell's local face ``reference.faces[f]``.
        """
        if self.dim != 3:
            raise ValueError(
                f"faces() is for 3D meshes; a {self.cell_type} mesh has no faces besides its cells: "
                "use edges()"
            )
        t = self._face_table
        return t.vertices, t.cell_to_entity

    def facets(self) -> tuple[np.ndarray, np.ndarray]:
        """Unique facets (edges in 2D, faces in 3D) and the cell-to-facet map (columns: ``reference.facets``).

        Facets are oriented outwards from their first cell, so boundary facets point out of the domain.
        """
        t = self._facet_table
        return t.vertices, t.cell_to_entity

    def boundary_facets(self) -> np.ndarray:
        """All exterior facets, (nf, nverts_per_facet), oriented outwards."""
        t = self._facet_table
        return t.vertices[t.counts == 1]

    def boundary(self, name: str | Sequence[str] | None = None) -> np.ndarray:
        """Facets of a named boundary (or of several names, or all exterior facets when ``name`` is None)."""
        if name is None:
            return self.boundary_facets()
        names = [name] if isinstance(name, str) else list(name)
        for n in names:
            if n not in self.boundaries:
                raise KeyError(f"no boundary named {n!r}; this mesh has {sorted(self.boundaries)}")
        return np.concatenate([self.boundaries[n] for n in names])

    def boundary_vertices(self, name: str | Sequence[str] | None = None) -> np.ndarray:
        """Sorted unique vertex ids on a named boundary (all exterior facets when ``name`` is None)."""
        return np.unique(self.boundary(name))

    def locate_facets(self, facets: Any) -> tuple[np.ndarray, np.ndarray]:
        """The cell owning each facet and the facet's local index in that cell.

        Arguments:
            facets: (nf, nverts_per_facet) vertex ids, in any vertex order.

        Returns:
            ``cells (nf,)`` and ``local (nf,)`` with ``reference.facets[local[i]]`` of ``cells[i]`` equal to
            facet ``i``. Interior facets report the first of their two cells.

        Example:
            >>> from igax.fem import unit_square
            >>> mesh = unit_square(2)
            >>> cells, local = mesh.locate_facets(mesh.boundaries["left"])
        """
        t = self._facet_table
        f = _as_index_array(facets, "facets", t.vertices.shape[1], self.npoints)
        ids = self._facet_ids(f, "facets")
        return t.owner[ids], t.owner_local[ids]

    def _facet_ids(self, facets: np.ndarray, what: str) -> np.ndarray:
        t = self._facet_table
        if len(facets) == 0:
            return np.zeros(0, np.int64)
        both = np.concatenate([t.sorted_vertices, sort_rows(facets)])
        first, inverse, _ = unique_rows(both)
        ids = inverse[len(t.sorted_vertices) :]
        # a query is a facet iff the first (smallest-index) row of its group is a row of the facet table
        found = first[ids] < len(t.sorted_vertices)
        if not np.all(found):
            bad = int(np.flatnonzero(~found)[0])
            raise ValueError(
                f"{what}: row {bad} (vertices {facets[bad].tolist()}) is not a facet of any cell of this mesh"
            )
        return first[ids]  # the first member of a query's group is its row in the facet table

    def _orient_facets(self, facets: np.ndarray, name: str) -> np.ndarray:
        """Replace facets by their stored (outward) orientation."""
        if len(facets) == 0:
            return facets
        out = self._facet_table.vertices[self._facet_ids(facets, f"boundaries[{name!r}]")]
        out.setflags(write=False)
        return out

    # ------------------------------------------------------------------------------------------ tagging
    def facet_midpoints(self, facets: np.ndarray) -> np.ndarray:
        """Vertex averages of facets, shape (dim, nf) (first axis = coordinate, like ``w.x`` in forms)."""
        return self.points[facets].mean(axis=1).T

    def cell_centroids(self) -> np.ndarray:
        """Vertex averages of the cells, shape (dim, ncells)."""
        return self.points[self.cells].mean(axis=1).T

    def tag_boundary(
        self, name: str, predicate: Callable[[np.ndarray], Any], *, facets: str = "exterior"
    ) -> Mesh:
        """A new mesh with the boundary ``name`` = the exterior facets whose midpoint satisfies ``predicate``.

        Arguments:
            name: boundary name (replaces an existing one of that name).
            predicate: function of the facet midpoints ``x`` of shape (dim, nf) returning a bool array (nf,).
            facets: "exterior" (default) or "all" (also interior facets, e.g. an interface).

        Returns:
            A new :class:`Mesh` sharing points, cells and cached topology.

        Example:
            >>> import numpy as np
            >>> from igax.fem import unit_square
            >>> mesh = unit_square(4).tag_boundary("inlet", lambda x: np.isclose(x[0], 0.0) & (x[1] < 0.5))
            >>> mesh.boundaries["inlet"].shape
            (2, 2)
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {name!r}")
        if facets not in ("exterior", "all"):
            raise ValueError(f"facets must be 'exterior' or 'all', got {facets!r}")
        cand = self.boundary_facets() if facets == "exterior" else self.facets()[0]
        mask = np.asarray(predicate(self.facet_midpoints(cand)))
        if mask.shape != (len(cand),) or mask.dtype != bool:
            raise ValueError(
                f"predicate must return a bool array of shape ({len(cand)},) for midpoints x of shape "
                f"{(self.dim, len(cand))}, got dtype {mask.dtype} and shape {mask.shape}; "
                f"write e.g. lambda x: np.isclose(x[0], 0.0)"
            )
        if not mask.any():
            raise ValueError(
                f"predicate selected no {facets} facet for boundary {name!r}; compare coordinates with a "
                "tolerance, e.g. lambda x: np.isclose(x[0], 1.0)"
            )
        return self._replace(boundaries={**self.boundaries, name: cand[mask]})

    def tag_subdomain(self, name: str, predicate: Callable[[np.ndarray], Any]) -> Mesh:
        """A new mesh with the subdomain ``name`` = the cells whose centroid satisfies ``predicate``."""
        mask = np.asarray(predicate(self.cell_centroids()))
        if mask.shape != (self.ncells,) or mask.dtype != bool:
            raise ValueError(
                f"predicate must return a bool array of shape ({self.ncells},) for centroids of shape "
                f"{(self.dim, self.ncells)}, got dtype {mask.dtype} and shape {mask.shape}"
            )
        return self._replace(subdomains={**self.subdomains, name: np.flatnonzero(mask)})

    # ------------------------------------------------------------------------------------------ geometry
    def _vertex_jacobians(self) -> np.ndarray:
        """Jacobians of the degree-1 cell maps at the reference vertices, (ncells, nv, dim, dim).

        Simplices have constant Jacobians, so only the first vertex is evaluated (nv = 1).
        """
        ref = self.reference
        xc = self.points[self.cells]  # (ncells, nverts, dim)
        if ref.is_simplex:  # columns of J are the edges from vertex 0
            return (xc[:, 1:] - xc[:, :1]).transpose(0, 2, 1)[:, None]
        dn = reference_element(ref.cell, 1).gradients(ref.vertices)  # (nv, nbasis, dim)
        return np.matmul(xc.transpose(0, 2, 1)[:, None], dn[None])  # (ncells, nv, dim, dim)

    def jacobian_determinants(self) -> np.ndarray:
        """det J of each cell at its vertices, (ncells, nv) (nv = 1 for simplices, whose J is constant)."""
        return determinant(self._vertex_jacobians())

    def cell_volumes(self) -> np.ndarray:
        """Area (2D) or volume (3D) of each cell, (ncells,), exact for straight-sided cells."""
        ref = self.reference
        x, w = quadrature(ref.cell, 2 if ref.is_simplex else 3)  # det J of a Q1 map is Q_(dim-1)
        dn = reference_element(ref.cell, 1).gradients(x)
        jac = np.einsum("cbi,qbj->cqij", self.points[self.cells], dn)
        return determinant(jac) @ w

    def check_quality(self) -> None:
        """Raise ``ValueError`` naming the first cell whose Jacobian is not positive at one of its vertices.

        A cell fails when ``det J <= 1e-12 * L**dim`` at a vertex, ``L`` the longest edge there: inverted
        (clockwise / left-handed), degenerate (zero area) or non-convex quadrilaterals and hexahedra.
        """
        jac = self._vertex_jacobians()  # (ncells, nv, dim, dim)
        det = determinant(jac)
        # scale: the longest J column (an edge at that vertex), so the test is invariant to the mesh's size
        length2 = np.square(jac).sum(axis=-2).max(axis=-1)  # (ncells, nv)
        bad_mask = det <= _REL_TOL * length2 ** (self.dim / 2)
        if not bad_mask.any():
            return
        bad_cells = np.flatnonzero(bad_mask.any(axis=1))
        c = int(bad_cells[0])
        v = int(np.flatnonzero(bad_mask[c])[0])
        all_inverted = np.all(det < 0)
        hint = (
            " All cells are negatively oriented: the mesh is mirrored; fix it with mesh.reoriented() "
            "(Mesh.read "
            "does this by default)."
            if all_inverted
            else " Fix the mesh generator, or pass check=False to skip this check."
        )
        where = "" if self.reference.is_simplex else f" at its local vertex {v}"
        raise ValueError(
            f"cell {c} (vertices {self.cells[c].tolist()}, coordinates "
            f"{self.points[self.cells[c]].tolist()}) has a "
            f"non-positive Jacobian determinant {det[c, v]:.3e}{where}: it is inverted or degenerate. "
            f"{len(bad_cells)} of {self.ncells} cells fail (first ids: {bad_cells[:8].tolist()}).{hint}"
        )

    def check_duplicates(self) -> None:
        """Raise ``ValueError`` on coincident unmerged vertices or on a cell listed twice.

        Two vertices closer than ``1e-10`` times the bounding-box diagonal (in every coordinate), both used by
        cells and not in a common cell, cut the mesh along a hidden slit; a cell whose vertex set (in any
        order) repeats another's is integrated twice. Vertices used by no cell are ignored. The check sorts
        one int64 key per vertex and one hash per cell (O(n log n)); on a 1M-vertex mesh it costs 0.6-2 s
        (2M triangles to 5.8M tetrahedra, measured on 2 busy cores), less than :meth:`check_quality`. See
        ``igax.fem.mesh.duplicates``.
        """
        hint = (
            "Mesh(..., merge_duplicates=True) or mesh.merge_duplicate_vertices() "
            "(Mesh.read(path, merge_duplicates=True) for files)"
        )
        duplicates.check_duplicates(self.points, self.cells, merge_hint=hint)

    def merge_duplicate_vertices(self) -> Mesh:
        """A copy in which coincident vertices used by cells are merged into one (closing hidden slits).

        Each group of coincident vertices becomes its smallest id; the other vertices of the group are dropped
        and the later vertices renumbered (vertices used by no cell are kept). Boundaries follow the
        renumbering (facets that became equal are kept once) and subdomains are unchanged. Returns ``self``
        when nothing coincides.

        Example:
            >>> from igax.fem import Mesh
            >>> pts = [[0.0, 0], [1, 0], [0, 1], [1, 0], [1, 1], [0, 1]]      # the diagonal stored twice
            >>> m = Mesh(pts, [[0, 1, 2], [3, 4, 5]], "triangle", check=False).merge_duplicate_vertices()
            >>> m.npoints, m.cells.tolist()
            (4, [[0, 1, 2], [1, 3, 2]])
        """
        points, cells, bnd, _ = _merged(self.points, self.cells, self.boundaries)
        if len(points) == len(self.points):
            return self
        return Mesh(points, cells, self.cell_type, bnd, self.subdomains, check=self.check)

    def reoriented(self) -> Mesh:
        """A copy in which cells with negative Jacobian at every vertex are flipped to positive orientation.

        Mirrored cells (e.g. clockwise triangles from a generator that orients its surface towards -z) are
        fixed by reversing their vertex order; tangled cells, with Jacobians of both signs, are left alone and
        still fail :meth:`check_quality`.
        """
        det = self.jacobian_determinants()
        flip = np.all(det < 0, axis=1)
        if not flip.any():
            return self
        cells = np.array(self.cells)
        cells[flip] = cells[flip][:, _FLIP[self.cell_type]]
        return Mesh(self.points, cells, self.cell_type, self.boundaries, self.subdomains, check=self.check)

    def refine(self, times: int = 1) -> Mesh:
        """Uniformly refined copy (4 or 8 children per cell, boundaries kept); see ``mesh_refine.refine``."""
        return refine.refine(self, times)

    # ------------------------------------------------------------------------------------------ I/O
    @classmethod
    def read(
        cls, path: str, *, reorient: bool = True, check: bool = True, merge_duplicates: bool = False
    ) -> Mesh:
        """Read a mesh with meshio (gmsh ``.msh`` v2/v4, ``.vtu``, ``.xdmf``, ...); see :func:`read_mesh`.

        Raises ``FileNotFoundError`` for a missing file and ``igax.fem.mesh.io.MeshReadError`` (a
        ``ValueError`` naming the file and what was expected) for one that is not a readable mesh.
        """
        return read_mesh(path, reorient=reorient, check=check, merge_duplicates=merge_duplicates)

    def write(
        self,
        path: str,
        point_data: Mapping[str, Any] | None = None,
        cell_data: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the mesh (and data) with meshio; see :func:`igax.fem.mesh.io.write_mesh`."""
        io.write_mesh(self, path, point_data=point_data, cell_data=cell_data)


def _merged(
    points: np.ndarray, cells: np.ndarray, boundaries: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Points, cells and boundaries with coincident used vertices merged, and the old ids of the kept points.

    See ``mesh_duplicates.merge_map``.
    """
    kept, renumber = duplicates.merge_map(points, cells)
    if len(kept) == len(points):
        return points, cells, dict(boundaries), kept
    bnd = {}
    for name, facets in boundaries.items():
        f = renumber[facets]
        _, first = np.unique(sort_rows(f), axis=0, return_index=True)  # both sides of a closed slit: once
        bnd[name] = f[np.sort(first)]
    new_points = points[kept]
    new_cells = renumber[cells]
    for arr in (new_points, new_cells):
        arr.setflags(write=False)
    return new_points, new_cells, bnd, kept


# vertex permutations that mirror a cell (reverse its orientation)
_FLIP = {
    "triangle": [0, 2, 1],
    "quad": [0, 3, 2, 1],
    "tetra": [0, 2, 1, 3],
    "hexahedron": [0, 3, 2, 1, 4, 7, 6, 5],
}


# ------------------------------------------------------------------------------------------- reading
def read_mesh(
    path: str | os.PathLike,
    *,
    reorient: bool = True,
    check: bool = True,
    with_data: bool = False,
    merge_duplicates: bool = False,
) -> Mesh | tuple[Mesh, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read a mesh with meshio, keeping the cells of the highest dimension.

    Arguments:
        path: file name; the format follows the extension (gmsh ``.msh`` v2 and v4, ``.vtu``, ``.xdmf``, ...).
        reorient: flip mirrored cells (negative Jacobian at every vertex, e.g. clockwise triangles) to
            positive orientation instead of rejecting them.
        check: run ``Mesh.check_duplicates`` (coincident unmerged vertices, repeated cells) and
            ``Mesh.check_quality``.
        with_data: also return the point data and the cell data of the mesh's cells.
        merge_duplicates: merge coincident vertices used by cells (unmerged duplicates, a hidden slit) into
            one, as ``Mesh.merge_duplicate_vertices`` does; point data keeps the values of the kept vertex.

    Raises:
        FileNotFoundError: no file at ``path``.
        MeshReadError: the file cannot be read as a mesh of 2D or 3D cells (the message names the file and
            what was expected; the reader's exception is chained).

    Returns:
        A :class:`~igax.fem.Mesh` whose points are the vertices used by its cells (renumbered in file order),
        or ``(mesh, point_data, cell_data)`` with ``with_data=True``. Second-order cells (``triangle6``,
        ``tetra10``, ...) are read as straight-sided cells through their corner vertices, with a warning.

    Example:
        >>> from igax.fem import read_mesh, unit_square, write_mesh
        >>> write_mesh(unit_square(2), "square.msh")   # boundaries become physical groups
        >>> mesh = read_mesh("square.msh")
        >>> mesh.ncells, mesh.boundaries["left"].shape
        (8, (2, 2))
    """
    path = os.fspath(path)
    return from_meshio(io.read_raw(path), reorient=reorient, check=check, with_data=with_data,
                       merge_duplicates=merge_duplicates, source=repr(path))  # fmt: skip


def from_meshio(
    raw: meshio.Mesh,
    *,
    reorient: bool = True,
    check: bool = True,
    with_data: bool = False,
    merge_duplicates: bool = False,
    source: str = "mesh",
) -> Mesh | tuple[Mesh, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Convert an in-memory ``meshio.Mesh`` (e.g. from pygmsh or the gmsh Python API) like :func:`read_mesh`.

    Arguments:
        raw: the meshio mesh; gmsh physical groups in ``cell_data["gmsh:physical"]`` and ``field_data`` become
            named boundaries and subdomains.
        reorient, check, with_data, merge_duplicates: as in :func:`read_mesh`.
        source: how error messages name the mesh.

    Returns:
        As :func:`read_mesh`.

    Example:
        >>> from igax.fem import from_meshio
        >>> import meshio
        >>> raw = meshio.Mesh([[0, 0], [1, 0], [0, 1]], [("triangle", [[0, 1, 2]])])
        >>> from_meshio(raw).ncells
        1
    """
    arrays = io.mesh_arrays(raw, source)
    points, cells, boundaries, used = arrays.points, arrays.cells, arrays.boundaries, arrays.used
    if merge_duplicates:
        points, cells, boundaries, kept = _merged(points, cells, boundaries)
        used = used[kept]

    mesh = Mesh(points, cells, arrays.cell_type, boundaries, arrays.subdomains, check=False)
    if reorient:
        mesh = mesh.reoriented()
    if check:
        hint = "Mesh.read(path, merge_duplicates=True) (from_meshio(raw, merge_duplicates=True) in memory)"
        duplicates.check_duplicates(mesh.points, mesh.cells, what=source, merge_hint=hint)
        mesh.check_quality()
    if not with_data:
        return mesh
    return (mesh, *io.mesh_data(raw, used))
