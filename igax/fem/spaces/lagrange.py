"""Lagrange spaces on meshes: P1/P2 on triangles and tetrahedra, Q1/Q2 on quadrilaterals and hexahedra."""

from __future__ import annotations

import functools
import hashlib
import weakref
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from igax.bases.lagrange import reference_element
from igax.fem.mesh import Mesh, determinant, sort_rows, unique_rows
from igax.fem.mesh import refine as mesh_refine
from igax.fem.quadrature import facet_quadrature, quadrature
from igax.fem.spaces.base import FunctionSpace, Rule, SpacePlan, Tables, check_jacobian, finish_tables, pin
from igax.fem.spaces.locators import CellLocator, cell_map, inverse_map
from igax.fem.spaces.sampling import NodalSampler
from igax.solvers._grid_ordering import GridHint
from igax.solvers.sparse import CSRPattern

__all__ = ["LagrangeSpace"]


def _entity_ids(cells: np.ndarray, local, topology) -> tuple[np.ndarray, int]:
    """Ids ``(nel * nlocal,)`` of the cells' edges or faces (vertex sets ``local``), numbered in the sorted
    order of their vertex sets, and their number: the mesh's cached topology when there is one (a
    :class:`~igax.fem.Mesh`: ``topology`` is its ``edges`` or ``faces`` method), else grouped here."""
    if topology is not None:
        ents, cell_to = topology()
        return cell_to.ravel(), len(ents)
    _, inverse, counts = unique_rows(sort_rows(cells[:, np.array(local)].reshape(-1, len(local[0]))))
    return inverse, len(counts)


class _LagrangePlan(SpacePlan):
    """Dof numbering (vertices, then edges, faces, cell interiors) and facet lookup of a mesh."""

    def __init__(
        self, cells: np.ndarray, cell_type: str, named: dict, degree: int, value_shape, qdeg, dim, mesh=None
    ):
        ref = reference_element(cell_type, degree)
        geo = reference_element(cell_type, 1)
        nv = geo.nbasis
        cells = np.asarray(cells, dtype=np.int64)[:, :nv]
        nel = cells.shape[0]
        itype = np.int32 if max(cells.size, int(cells.max()) + 1) < 2**31 else np.int64
        # Vertex dofs: only vertices that cells use, numbered in increasing point order (a mask, not a sort).
        mask = np.zeros(int(cells.max()) + 1, dtype=bool)
        mask[cells] = True
        used = np.flatnonzero(mask)
        newid = np.cumsum(mask, dtype=itype) - 1  # point -> vertex dof (valid where mask)
        parts, offset = [newid[cells]], used.shape[0]
        counts = ref.dofs_per_entity
        if counts[1]:
            eid, ne = _entity_ids(cells, ref.edges, None if mesh is None else mesh.edges)
            parts.append(offset + eid.reshape(nel, len(ref.edges)))
            offset += ne
        if counts[2]:
            fid, nf = _entity_ids(cells, ref.faces, None if mesh is None else mesh.faces)
            parts.append(offset + fid.reshape(nel, len(ref.faces)))
            offset += nf
        if counts[3]:
            parts.append(offset + np.arange(nel)[:, None])
            offset += nel
        cell_dofs = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1).astype(itype)
        if cell_dofs.shape[1] != ref.nbasis:
            raise ValueError(f"degree {degree} on {cell_type} is not supported by LagrangeSpace.")
        # Built from the distinct dof pairs of the cells (for P1: the edges), not all nloc**2 entries.
        pattern, slot = CSRPattern.from_cells(cell_dofs, offset)
        grid = getattr(mesh, "_grid_shape", None)
        if grid is not None and degree == 1 and offset == int(np.prod(grid)):
            # P1/Q1 on a structured mesh whose points (all used) are the dofs, in the grid's C order: an
            # entry couples neighbouring grid points (PARDISO may order the rows by the grid).
            pattern.grid = GridHint(tuple(grid), (1,) * len(grid))

        # Facets: all cell facets, the boundary ones (seen once) and the named ones.
        lf = np.array(ref.facets)  # (nfac, nvf)
        nfac = lf.shape[0]
        named_rows = {k: np.asarray(v, dtype=np.int64) for k, v in named.items()}
        if lf.shape[1] == 2:
            facet_sets = _edge_facets(lf, pattern, slot, named_rows, mask, newid)
        else:
            facet_sets = _sorted_facets(cells[:, lf].reshape(nel * nfac, -1), named_rows)
        # Local nodes on each local facet (nodes whose reference coordinates lie on the facet's plane).
        fq = facet_quadrature(ref.cell, max(2 * degree, 1))
        origin = geo.nodes[lf[:, 0]]
        on = np.abs(np.einsum("fd,afd->af", fq.normals, ref.nodes[:, None, :] - origin[None])) < 1e-12
        self.facet_nodes = [np.nonzero(on[:, f])[0] for f in range(nfac)]
        self.facets = {k: (v // nfac, v % nfac) for k, v in facet_sets.items()}  # (cell ids, local facet ids)
        bdofs = {k: _facet_dofs(cell_dofs, self.facet_nodes, c, f) for k, (c, f) in self.facets.items()}
        super().__init__(
            kind="lagrange",
            partition_key=("lagrange", cell_type, _digest(cells)),
            dim=dim,
            pdim=ref.dim,
            value_shape=value_shape,
            cell_dofs=cell_dofs,
            nscalar=offset,
            boundary_dofs=bdofs,
            scalar_pattern=(pattern, slot),
        )
        # The vertices of the cells in the narrowest integer type, and one array with the dofs when they are
        # the same (P1/Q1 on a mesh whose points are all used, in order): inside a compiled program these are
        # constants, and the two then share one.
        same = self.cell_dofs.shape == cells.shape and np.array_equal(self.cell_dofs, cells)
        cells = self.cell_dofs if same else cells.astype(itype)
        self.ref, self.geo, self.cells, self.degree = ref, geo, cells, degree
        self.quad = quadrature(ref.cell, qdeg)
        self.facet_quad = facet_quadrature(ref.cell, qdeg)
        self.mesh_points_used = used


def _facet_dofs(cell_dofs: np.ndarray, facet_nodes, cells: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Sorted scalar dofs on the facets ``(cells, local)`` (the nodes of each local facet of its cell)."""
    parts = [cell_dofs[cells[local == j]][:, nodes].ravel() for j, nodes in enumerate(facet_nodes)]
    return np.unique(np.concatenate(parts))


def _not_boundary(name: str) -> ValueError:
    return ValueError(
        f"boundary {name!r} of the mesh lists facets that are not boundary facets of its cells."
    )


def _sorted_facets(allf: np.ndarray, named_rows: dict) -> dict:
    """Boundary and named facets (indices ``cell * nfac + local facet``) by sorting all cell facets."""
    stacked = np.concatenate([allf] + [r.reshape(-1, allf.shape[1]) for r in named_rows.values()])
    _, fid, _ = unique_rows(sort_rows(stacked))
    cell_fid = fid[: allf.shape[0]]
    count = np.bincount(cell_fid)
    first = np.full(count.shape[0], -1, dtype=np.int64)
    first[cell_fid[::-1]] = np.arange(allf.shape[0])[::-1]  # first cell facet with each id
    facet_sets = {}
    pos = allf.shape[0]
    for k, r in named_rows.items():
        ids = fid[pos : pos + r.shape[0]]
        pos += r.shape[0]
        idx = first[ids] if ids.size else np.zeros(0, np.int64)
        if ids.size and (idx.min() < 0 or (count[ids] != 1).any()):
            raise _not_boundary(k)
        facet_sets[k] = idx
    facet_sets["boundary"] = np.nonzero(count[cell_fid] == 1)[0]
    return facet_sets


def _edge_facets(lf, pattern: CSRPattern, slot: np.ndarray, named_rows: dict, mask, newid) -> dict:
    """Boundary and named facets of a 2D mesh, whose facets are edges: no sort of all cell facets.

    An edge joins two vertices of a cell, which the dof pattern couples: the smaller of the two CSR slots
    of its vertex pair is a label unique to the edge, and an edge seen by one cell only is on the boundary.
    """
    label = np.minimum(slot[:, lf[:, 0], lf[:, 1]], slot[:, lf[:, 1], lf[:, 0]]).ravel()  # (nel * nfac,)
    count = np.bincount(label, minlength=pattern.nnz)
    bnd = np.flatnonzero(count[label] == 1)  # boundary cell facets, in cell-facet order
    blabel = label[bnd]
    border = np.argsort(blabel)
    facet_sets = {}
    for k, r in named_rows.items():
        r = r.reshape(-1, 2)
        if r.size == 0:
            facet_sets[k] = np.zeros(0, np.int64)
            continue
        ok = (r.min() >= 0) and (r.max() < mask.shape[0]) and mask[r].all()
        if not ok:
            raise _not_boundary(k)
        i, j = newid[r[:, 0]], newid[r[:, 1]]
        lab = np.minimum(pattern.find(i, j), pattern.find(j, i))
        pos = np.searchsorted(blabel, lab, sorter=border)
        pos = np.minimum(pos, blabel.shape[0] - 1)
        hit = border[pos] if blabel.size else np.zeros_like(pos)
        if (lab < 0).any() or blabel.size == 0 or (blabel[hit] != lab).any():
            raise _not_boundary(k)
        facet_sets[k] = bnd[hit]
    facet_sets["boundary"] = bnd
    return facet_sets


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_EVERY_ELEMENT: dict[int, tuple] = {}  # id(elements) -> (elements, answer): a few rules' arrays


def _every_element(elements, nel: int) -> bool:
    """Whether ``elements`` (a slice or an index array) is ``0, 1, ..., nel - 1`` (answer kept per array)."""
    if isinstance(elements, slice):
        return elements == slice(None)
    hit = _EVERY_ELEMENT.get(id(elements))
    if hit is not None and hit[0] is elements:
        return hit[1]
    e = np.asarray(elements)
    answer = bool(e.shape == (nel,) and (nel == 0 or (e[0] == 0 and np.all(np.diff(e) == 1))))
    if len(_EVERY_ELEMENT) >= 16:
        _EVERY_ELEMENT.pop(next(iter(_EVERY_ELEMENT)))
    _EVERY_ELEMENT[id(elements)] = (elements, answer)
    return answer


class LagrangeSpace(FunctionSpace):
    """Continuous Lagrange elements of degree 1 or 2 on a mesh (P on simplices, Q on quads and hexahedra).

    The JAX leaf is ``points`` (the mesh node coordinates, shape ``(npts, dim)``); the geometry map of each
    cell is its degree-1 (affine / multilinear) map through the vertices, so gradients of assembled
    quantities with respect to ``points`` are shape derivatives. Dofs: vertices (in increasing mesh-point
    order, unused points skipped), then edge midpoints, face centres and cell centres (degree 2); vector
    spaces number them component-major, ``dof = c * nscalar + i``.

    Arguments:
        mesh: an :class:`igax.fem.Mesh` (``points``, ``cells``, ``cell_type``, ``boundaries``).
        degree: 1 or 2.
        shape: ``()`` scalar, ``(dim,)`` vector-valued (e.g. displacements).
        quad_degree: polynomial degree integrated exactly (default ``2 * degree``).
        points: node coordinates to use instead of ``mesh.points`` (a JAX array for shape derivatives).

    Example:
        >>> from igax import fem
        >>> V = fem.LagrangeSpace(fem.unit_square(8), degree=2)
        >>> V.ndofs
        289
    """

    points: jax.Array

    def __init__(
        self,
        mesh,
        degree: int = 1,
        *,
        shape: Sequence[int] = (),
        quad_degree: int | None = None,
        points=None,
    ):
        qdeg = 2 * int(degree) if quad_degree is None else int(quad_degree)
        shape = tuple(shape)
        key = (int(degree), shape, qdeg)
        cache = _PLANS.setdefault(mesh, {}) if _weakrefable(mesh) else {}
        if key not in cache:
            pts = np.asarray(mesh.points)
            cache[key] = _LagrangePlan(
                mesh.cells, mesh.cell_type, dict(getattr(mesh, "boundaries", {}) or {}), int(degree), shape,
                qdeg, pts.shape[1], mesh if isinstance(mesh, Mesh) else None,
            )  # fmt: skip
            # The mesh this one was refined from (fem.mesh.refine), kept for geometric multigrid.
            cache[key].refinement = mesh_refine.parent(mesh)
        self.plan = cache[key]
        pts = mesh.points if points is None else points
        if jnp.shape(pts)[0] != np.shape(mesh.points)[0]:
            raise ValueError(f"points must have shape {np.shape(mesh.points)}, got {jnp.shape(pts)}.")
        self.points = jnp.asarray(pts, dtype=float if not isinstance(pts, jax.Array) else pts.dtype)
        if self.plan.dim != self.plan.pdim:
            raise ValueError(
                f"LagrangeSpace needs cells of the mesh's dimension; got {mesh.cell_type} cells in "
                f"{self.plan.dim}D."
            )
        check_jacobian(
            self.jacobian_determinant(),
            "LagrangeSpace",
            "Fix the mesh (check the node order of the cells and remove zero-area cells).",
        )

    @property
    def degree(self) -> int:
        return self.plan.degree

    @property
    def element(self):
        """The reference element."""
        return self.plan.ref

    def with_points(self, points) -> LagrangeSpace:
        """The same space on moved nodes (reuses the plan; differentiable in ``points``)."""
        import equinox as eqx

        return eqx.tree_at(lambda s: s.points, self, jnp.asarray(points))

    def build_rule(self, names) -> Rule:
        p = self.plan
        if names is None:
            return Rule(np.arange(p.nel), ((p.nel, p.quad[0], p.quad[1], None),), None)
        cells, lfs = [], []
        for nm in names:
            c, f = p.pieces[nm].facets if nm in p.pieces else p.facets[nm]
            cells.append(c)
            lfs.append(f)
        cells, lfs = np.concatenate(cells), np.concatenate(lfs)
        order = np.argsort(lfs, kind="stable")
        cells, lfs = cells[order], lfs[order]
        fq = p.facet_quad
        groups = tuple(
            (int(np.sum(lfs == f)), fq.points[f], fq.weights[f], fq.normals[f]) for f in np.unique(lfs)
        )
        return Rule(cells, groups, tuple(names))

    def _select_boundary_facets(self, sides, where, prange, side_given):
        """Boundary facets (of ``sides``, or all) whose vertex average satisfies ``where``."""
        if prange is not None:
            raise ValueError(
                "tag_boundary: range= is a spline parameter interval; on a LagrangeSpace select facets "
                "with where=, e.g. lambda x: (x[0] < 0.5) & np.isclose(x[1], 0.0)."
            )
        p = self.plan
        names = sides if side_given else ("boundary",)  # "boundary": every exterior facet
        c = np.concatenate([p.facets[n][0] for n in names])
        f = np.concatenate([p.facets[n][1] for n in names])
        if len(names) > 1:  # named boundaries may overlap: each facet once
            _, first = np.unique(c * len(p.facet_nodes) + f, return_index=True)
            c, f = c[first], f[first]
        lf = np.array(p.geo.reference.facets)  # (nfac, nverts_per_facet): vertices of each local facet
        x = np.asarray(self.points)[p.cells[c[:, None], lf[f]]].mean(axis=1).T  # (dim, nf)
        mask = self._predicate_mask(where, x)
        c, f = c[mask], f[mask]
        dofs = _facet_dofs(p.cell_dofs, p.facet_nodes, c, f) if len(c) else np.zeros(0, np.int64)
        return (c, f), dofs, int(mask.sum()), len(mask)

    def tables(self, rule: Rule, xp=jnp) -> Tables:
        p = self.plan
        if xp is np:
            X = np.asarray(self.points)[p.cells]  # (nel, nv, dim)
        else:
            cells, points = self._pinned_geometry(slice(None))
            X = points[cells]
        out, start = [], 0
        for count, xi, w, nref in rule.groups:
            elems = rule.elements[start : start + count]
            Xe = X if (start == 0 and count == p.nel and nref is None) else X[elems]
            start += count
            out.append(self._group_tables(Xe, xi, w, nref, xp))
        if len(out) == 1:
            return out[0]
        full = [t.full(xp) for t in out]  # groups differ in their reference points: broadcast, then stack
        return Tables(
            *[None if full[0][i] is None else xp.concatenate([o[i] for o in full]) for i in range(5)]
        )

    def host_tables(self, rule: Rule) -> Tables:
        """:meth:`tables` in NumPy (concrete vertices): nothing to compile (see the base class)."""
        return self.tables(rule, np)

    def _group_tables(self, Xe, xi, w, nref, xp=jnp) -> Tables:
        """Tables of cells with vertex coordinates ``Xe`` (ne, nv, dim) at reference points ``xi``."""
        p = self.plan
        gv, gg = p.geo.values(xi), p.geo.gradients(xi)  # (nq, nv), (nq, nv, pdim)
        # Affine cells (simplices): one Jacobian per element, broadcast over the points; the tables then
        # carry size-1 axes ((1, nq, nloc) values, (ne, 1, nloc, dim) gradients) that consumers broadcast.
        if p.geo.reference.is_simplex:
            gg = gg[:1]
        # Unrolled over the vertices (constant tables): fused multiply-adds instead of small batched dots.
        x = sum(gv[None, :, v, None] * Xe[:, None, v, :] for v in range(gv.shape[1]))  # (ne, nq, dim)
        J = sum(gg[None, :, v, None, :] * Xe[:, None, v, :, None] for v in range(gv.shape[1]))
        phi = xp.asarray(p.ref.values(xi))[None]  # (1, nq, nloc)
        dref = xp.asarray(p.ref.gradients(xi))[None]  # (1, nq, nloc, pdim)
        if p.geo.reference.is_simplex and p.degree == 1:  # P1: constant gradients on each cell
            dref = dref[:, :1]
        return finish_tables(phi, dref, x, J, xp.asarray(w)[None], nref, xp=xp)

    def chunked_tables(self, rule: Rule):
        """The tables of any chunk of a volume rule's elements (for chunked assembly), or None.

        Returns ``fn``: ``fn(ids)`` gives the :class:`Tables` of the elements ``ids`` (an int array, traced:
        e.g. computed from the loop counter inside ``lax.scan``); None for boundary rules.
        """
        if rule.boundary is not None or len(rule.groups) != 1:
            return None
        _, xi, w, nref = rule.groups[0]

        def fn(ids):
            cells, points = self._pinned_geometry(rule.elements)
            return self._group_tables(points[cells[ids]], xi, w, nref)

        return fn

    def _pinned_geometry(self, elements):
        """``(cells of the elements, points)`` as JAX arrays, concrete ones behind :func:`pin` (see there)."""
        cells = self.plan.cells
        # The volume rule lists every element in order: its cells are the mesh's own (a gather of 48 MB per
        # call at 2M triangles, four calls in a gradient's trace, avoided)
        cells = cells if _every_element(elements, cells.shape[0]) else cells[elements]
        cells, points = pin(cells), self.points
        if not isinstance(points, jax.core.Tracer):
            points = pin(points)
        return cells, points

    def jacobian_determinant(self) -> jax.Array:
        """Signed determinant of the cell maps at the volume quadrature points, shape (nel, nq)."""
        p = self.plan
        xp = jnp if isinstance(self.points, jax.core.Tracer) else np  # construction-time check: NumPy
        nq = p.quad[0].shape[0]
        # Simplices have one Jacobian per cell: evaluate it once and broadcast it over the points.
        gg = p.geo.gradients(p.quad[0][:1] if p.geo.reference.is_simplex else p.quad[0])  # (nq', nv, pdim)
        pts = xp.asarray(self.points)

        def det(cells):  # one vertex at a time: (ne, dim) gathers instead of one (ne, nv, dim) array
            J = sum(gg[None, :, v, None, :] * pts[cells[:, v]][:, None, :, None] for v in range(gg.shape[1]))
            return determinant(J)  # J: (ne, nq', dim, pdim)

        if xp is jnp:
            return jnp.broadcast_to(det(p.cells), (p.nel, nq))
        # NumPy: in chunks, so the temporaries are small and reused (large fresh arrays cost page faults).
        out = np.empty((p.nel, gg.shape[0]))
        for s in range(0, p.nel, 2**16):
            out[s : s + 2**16] = det(p.cells[s : s + 2**16])
        return np.broadcast_to(out, (p.nel, nq))

    # -- the space protocol: sampling and point location ----------------------------------------------------
    def sampler(self, resolution: int) -> NodalSampler:
        """The nodes (degree-2 cells cut into sub-cells through them); ``resolution`` must be 1."""
        return NodalSampler(self, resolution)

    @property
    def nodal(self) -> bool:
        """True: every dof is the value at a node (:meth:`dof_coordinates`)."""
        return True

    def same_geometry(self, other) -> bool:
        return super().same_geometry(other) and other.plan.degree == self.plan.degree

    def locator(self) -> CellLocator:
        """Candidate cells from a k-d tree of cell centres, Newton on each candidate's vertex map (NumPy)."""
        return CellLocator(self)

    def tables_at(self, index, ref, points):
        p = self.plan
        Xc = self.points[jnp.asarray(p.cells)[index]]  # (npts, nv, dim)
        xi = inverse_map(functools.partial(cell_map, p.geo), ref, Xc, points)
        x, J = cell_map(p.geo, xi, Xc)
        phi, dref = p.ref.values(xi)[:, None], p.ref.gradients(xi)[:, None]
        tables = finish_tables(phi, dref, x[:, None], J[:, None], jnp.ones((xi.shape[0], 1), xi.dtype), None)
        return jnp.asarray(p.cell_dofs)[index], tables

    def dof_coordinates(self) -> jax.Array:
        """Physical coordinates of the scalar dofs (nodes), shape ``(nscalar, dim)``."""
        p = self.plan
        gv = p.geo.values(p.ref.nodes)  # (nloc, nv)
        xn = jnp.einsum("av,evi->eai", gv, self.points[p.cells])  # (nel, nloc, dim)
        return jnp.zeros((p.nscalar, p.dim), xn.dtype).at[p.cell_dofs].set(xn)


def _digest(a: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest()


def _weakrefable(obj) -> bool:
    try:
        weakref.ref(obj)
        return True
    except TypeError:
        return False
