"""Samplers: the geometry part of sampling fields for pictures and files, computed once per space.

A space's :meth:`~igax.fem.spaces.base.FunctionSpace.sampler` returns one of these: the sample points and
the cells
joining them (a sample mesh), the element edges to draw, and the basis there, so that sampling any number of
fields of the space is a cheap NumPy contraction each (:func:`igax.fem.sample`). Plain NumPy on purpose:
pictures are not differentiated, and eager JAX would compile every operation anew for each number of sample
points (seconds per picture).

* :class:`GridSampler`: a spline patch, on a grid of its parameter domain (every knot span cut into
  ``resolution`` parts per direction), with the exact NURBS basis and physical gradients there.
* :class:`JoinedSampler`: several patches side by side, their dofs mapped to the joined numbering.
* :class:`NodalSampler`: a Lagrange space at its nodes (degree-2 cells cut into sub-cells through them).
"""

from __future__ import annotations

import abc

import jax
import numpy as np

from igax.fem.spaces.locators import spline_tables

__all__ = ["Sampler", "GridSampler", "JoinedSampler", "NodalSampler", "tabulated"]


def _np(x) -> np.ndarray:
    return np.asarray(jax.device_get(x), dtype=np.float64)


class Sampler(abc.ABC):
    """Sample points of a space and the basis there (NumPy).

    Attributes:
        points: (npts, dim) physical sample points.
        cells: (ncells, nverts) the sample mesh, meshio / VTK vertex order; cell_type: its meshio cell name.
        edges: (nseg, 2) point pairs drawing the element boundaries.
        parameters: (npts, pdim) parameter coordinates of the points, or None; grid_shape: points per
            parameter direction (C order), or None.
    """

    points: np.ndarray
    cells: np.ndarray
    cell_type: str
    edges: np.ndarray
    parameters: np.ndarray | None = None
    grid_shape: tuple[int, ...] | None = None

    @abc.abstractmethod
    def __call__(self, coeffs: np.ndarray, ncomp: int) -> tuple[np.ndarray, np.ndarray]:
        """Values ``(npts, ncomp)`` and physical gradients ``(npts, ncomp, dim)`` of NumPy coefficients
        ``(ncomp * nscalar,)``, component-major."""


class GridSampler(Sampler):
    """A spline patch: parameter grid, physical points and NURBS basis tables at the grid (NumPy)."""

    def __init__(self, space, resolution: int):
        p = space.plan
        self.space = space
        axes = []
        for b in p.breaks:
            t = np.linspace(0.0, 1.0, resolution + 1)[:-1]
            axes.append(np.concatenate([(b[:-1, None] + t[None, :] * np.diff(b)[:, None]).ravel(), b[-1:]]))
        self.grid_shape = tuple(len(a) for a in axes)
        u = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)  # (npts, pdim)
        self.parameters = u
        self.dofs, self.phi, self.dphi, self.points = spline_tables(space, u)
        self.cells, self.cell_type = _grid_cells(self.grid_shape)
        self.edges = _grid_edges(self.grid_shape, resolution)

    def __call__(self, coeffs: np.ndarray, ncomp: int):
        c = coeffs.reshape(ncomp, -1)[:, self.dofs]  # (ncomp, npts, nloc)
        val = np.einsum("cpa,pa->pc", c, self.phi)
        grad = np.einsum("cpa,pak->pck", c, self.dphi)
        return val, grad


def tabulated(points: np.ndarray, dofs: np.ndarray, phi: np.ndarray, dphi: np.ndarray) -> Sampler:
    """A sampler of bare points: ``cells`` and ``edges`` empty (``cell_type="vertex"``), values and gradients
    from the dofs ``(npts, nloc)``, basis values ``(npts, nloc)`` and gradients ``(npts, nloc, dim)``; what a
    space without a sample mesh of its own can return (e.g. at its located nodes)."""
    out = GridSampler.__new__(GridSampler)
    out.points, out.dofs, out.phi, out.dphi = points, dofs, phi, dphi
    out.cells, out.cell_type = np.arange(len(points))[:, None], "vertex"
    out.edges = np.zeros((0, 2), np.int64)
    return out


class JoinedSampler(Sampler):
    """The patches' spline samplers side by side, their dofs mapped to the joined space's numbering.

    Each patch is sampled on its own grid, so points on an interface appear once per patch (same position,
    same value: the space is C0 there; gradients may differ across the interface).
    """

    def __init__(self, space, resolution: int):
        p = space.plan
        parts = [sub.sampler(resolution) for sub in space.spaces]
        offsets = np.concatenate([[0], np.cumsum([len(q.points) for q in parts])])
        self.points = np.concatenate([q.points for q in parts])
        self.cells = np.concatenate([q.cells + o for q, o in zip(parts, offsets, strict=False)])
        self.cell_type = parts[0].cell_type
        self.edges = np.concatenate([q.edges + o for q, o in zip(parts, offsets, strict=False)])
        self.dofs = np.concatenate([p.dof_map[p.dof_off[k] + q.dofs] for k, q in enumerate(parts)])
        self.phi = np.concatenate([q.phi for q in parts])
        self.dphi = np.concatenate([q.dphi for q in parts])
        self.patch = np.repeat(np.arange(len(parts)), np.diff(offsets))  # patch index of every point

    __call__ = GridSampler.__call__


def _grid_cells(shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """Quadrilaterals / hexahedra of a C-order structured grid of points, VTK vertex order."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    if len(shape) == 2:
        a = idx[:-1, :-1]
        corners = [a, idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]]
        return np.stack([c.ravel() for c in corners], axis=1), "quad"
    s0, s1 = (slice(None, -1), slice(1, None))
    order = [(s0, s0), (s1, s0), (s1, s1), (s0, s1)]
    corners = [idx[i, j, s0] for i, j in order] + [idx[i, j, s1] for i, j in order]
    return np.stack([c.ravel() for c in corners], axis=1), "hexahedron"


def _grid_edges(shape: tuple[int, ...], resolution: int) -> np.ndarray:
    """Segments of grid lines on knot lines (all other indices at multiples of ``resolution``)."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    segs = []
    for d in range(len(shape)):
        sl = [slice(None) if k == d else slice(0, None, resolution) for k in range(len(shape))]
        lines = np.moveaxis(idx[tuple(sl)], d, -1)  # (..., n_d)
        segs.append(np.stack([lines[..., :-1].ravel(), lines[..., 1:].ravel()], axis=1))
    return np.concatenate(segs)


# Degree-2 cells cut into sub-cells through their nodes, in reference coordinates (see the module docstring).
_H = 0.5
_SUBCELLS = {
    "triangle": [
        [(0, 0), (_H, 0), (0, _H)],
        [(_H, 0), (1, 0), (_H, _H)],
        [(0, _H), (_H, _H), (0, 1)],
        [(_H, 0), (_H, _H), (0, _H)],
    ],
    "quad": [[(a, b), (a + _H, b), (a + _H, b + _H), (a, b + _H)] for a in (0, _H) for b in (0, _H)],
    "tetra": None,  # built below from edge midpoints
    "hexahedron": [
        [(a + x, b + y, c + z) for z in (0, _H) for x, y in ((0, 0), (_H, 0), (_H, _H), (0, _H))]
        for a in (0, _H)
        for b in (0, _H)
        for c in (0, _H)
    ],
}


def _tetra_subcells():
    v = np.vstack([np.zeros(3), np.eye(3)])
    m = {(i, j): (v[i] + v[j]) / 2 for i in range(4) for j in range(i + 1, 4)}
    corners = [
        [v[0], m[0, 1], m[0, 2], m[0, 3]],
        [m[0, 1], v[1], m[1, 2], m[1, 3]],
        [m[0, 2], m[1, 2], v[2], m[2, 3]],
        [m[0, 3], m[1, 3], m[2, 3], v[3]],
    ]
    # The inner octahedron, cut along its diagonal m02-m13 into 4 tetrahedra around the cycle m01-m12-m23-m03.
    ring = [m[0, 1], m[1, 2], m[2, 3], m[0, 3]]
    inner = [[m[0, 2], m[1, 3], ring[k], ring[(k + 1) % 4]] for k in range(4)]
    return [[tuple(x) for x in s] for s in corners + inner]


def _local_subcells(ref) -> np.ndarray:
    """Local node ids (nsub, nverts) of the sub-cells of a degree-2 reference element, positively oriented."""
    subs = _SUBCELLS[ref.cell] if ref.cell != "tetra" else _tetra_subcells()
    out = []
    for s in subs:
        xi = np.asarray(s, dtype=float)
        ids = [int(np.argmin(np.linalg.norm(ref.nodes - x, axis=1))) for x in xi]
        if ref.cell in ("triangle", "tetra") and np.linalg.det((xi[1:] - xi[0]).T) < 0:
            ids[-1], ids[-2] = ids[-2], ids[-1]
        out.append(ids)
    return np.asarray(out, dtype=np.int64)


class NodalSampler(Sampler):
    """Nodes, sub-cells and (cell-averaged) nodal gradient operators of a Lagrange space."""

    def __init__(self, space, resolution: int):
        if resolution != 1:
            raise ValueError(
                f"resolution={resolution!r}: Lagrange fields are sampled at their nodes (degree 2 cells are "
                "cut into sub-cells through them); pass resolution=None or 1, or refine the mesh for finer "
                "pictures."
            )
        p = space.plan
        self.space = space
        self.points = _np(space.dof_coordinates())  # (nscalar, dim)
        self.cell_dofs = p.cell_dofs  # (nel, nloc): local node a is local dof a
        ref, geo = p.ref, p.geo
        if p.degree == 1:
            self.cells = np.asarray(p.cell_dofs, dtype=np.int64)
        else:
            sub = _local_subcells(ref)  # (nsub, nv)
            self.cells = p.cell_dofs[:, sub].reshape(-1, sub.shape[1]).astype(np.int64)
        self.cell_type = ref.cell
        # Cell edges drawn through their nodes: vertex-vertex (degree 1), vertex-midpoint-vertex (degree 2).
        edges = np.asarray(ref.edges)
        if p.degree == 1:
            loc = edges
        else:
            mids = np.arange(geo.nbasis, geo.nbasis + len(ref.edges))  # edge midpoints follow the vertices
            loc = np.concatenate([np.stack([edges[:, 0], mids], 1), np.stack([mids, edges[:, 1]], 1)])
        segs = np.sort(p.cell_dofs[:, loc].reshape(-1, 2), axis=1)
        self.edges = np.unique(segs, axis=0)
        # Physical gradients of the local basis at the local nodes: (nel, nnode, nloc, dim).
        X = _np(space.points)[p.cells]  # (nel, nv, dim)
        J = np.einsum("qvk,evi->eqik", np.asarray(geo.gradients(ref.nodes)), X)
        dref = np.asarray(ref.gradients(ref.nodes))  # (nnode, nloc, pdim)
        self.dphi = np.einsum("qak,eqki->eqai", dref, np.linalg.inv(J))
        self.count = np.bincount(p.cell_dofs.ravel(), minlength=p.nscalar).astype(float)

    def __call__(self, coeffs: np.ndarray, ncomp: int):
        c = coeffs.reshape(ncomp, -1)  # (ncomp, nscalar)
        val = c.T
        local = c[:, self.cell_dofs]  # (ncomp, nel, nloc)
        g = np.einsum("cea,eqai->eqci", local, self.dphi)  # (nel, nnode, ncomp, dim)
        grad = np.zeros((c.shape[1],) + g.shape[2:])
        np.add.at(grad, self.cell_dofs.ravel(), g.reshape(-1, *g.shape[2:]))
        return val, grad / self.count[:, None, None]
