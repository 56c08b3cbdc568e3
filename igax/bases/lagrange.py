"""Lagrange reference elements: P1/P2 on simplices, Q1/Q2 on quadrilaterals and hexahedra.

Reference cells are the unit simplex (vertices ``0, e1, e2[, e3]``) and the unit square / cube ``[0, 1]^dim``.
Vertices follow meshio's (= VTK's) order. The nodes of an element are the vertices, then one node per edge
midpoint in ``ReferenceElement.edges`` order, then (Q2 on hexahedra) one node per face centre in ``.faces``
order, then (Q2) the cell centre. Edge and face orders are VTK's, so the node order of a degree-2 element is
exactly meshio's ``triangle6``, ``tetra10``, ``quad9`` and ``hexahedron27`` and degree-2 fields can be written
to VTU without reordering.

Each basis function is stored as its coefficients in a monomial basis (P_k for simplices, Q_k for tensor
cells), obtained once in NumPy by inverting the Vandermonde matrix at the nodes. Evaluation is then a table of
powers of the coordinates (built by repeated multiplication, so no ``0 ** -1`` ever appears and derivatives of
any order are finite at the vertices) times a fixed matrix: the same code serves NumPy input (returns NumPy)
and JAX input (returns JAX arrays, jit/vmap/grad-safe).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ReferenceCell", "ReferenceElement", "reference_cell", "reference_element", "SUPPORTED_ELEMENTS"]


@dataclass(frozen=True, eq=False)
class ReferenceCell:
    """Topology and geometry of a reference cell.

    Attributes:
        cell: meshio name ("line", "triangle", "quad", "tetra", "hexahedron").
        dim: topological dimension.
        vertices: (nverts, dim) reference coordinates of the vertices, meshio order.
        edges: tuple of (a, b) local vertex ids, VTK order.
        faces: tuple of local vertex-id tuples of the 2D faces of 3D cells (empty in 2D), VTK order, each
            listed counter-clockwise seen from outside the cell.
        facets: tuple of local vertex-id tuples of the (dim-1)-dimensional facets, oriented so that the
            right-hand rule gives the outward normal (in 2D: walking along a facet, the cell is on the left).
        facet_cell: meshio name of the facets ("vertex", "line", "triangle" or "quad").
        volume: measure of the reference cell.
    """

    cell: str
    dim: int
    vertices: np.ndarray
    edges: tuple[tuple[int, ...], ...]
    faces: tuple[tuple[int, ...], ...]
    facets: tuple[tuple[int, ...], ...]
    facet_cell: str
    volume: float

    @property
    def is_simplex(self) -> bool:
        """Whether the cell is a simplex (line, triangle, tetra)."""
        return self.cell in ("line", "triangle", "tetra")

    @property
    def nverts(self) -> int:
        """Number of vertices."""
        return self.vertices.shape[0]

    def __repr__(self) -> str:
        return f"ReferenceCell({self.cell!r})"


def _make_cells() -> dict[str, ReferenceCell]:
    e = np.eye(3)
    unit = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    cube = np.concatenate([np.c_[unit, np.zeros(4)], np.c_[unit, np.ones(4)]])
    tri_edges = ((0, 1), (1, 2), (2, 0))
    quad_edges = ((0, 1), (1, 2), (2, 3), (3, 0))
    tet_edges = ((0, 1), (1, 2), (2, 0), (0, 3), (1, 3), (2, 3))
    tet_faces = ((0, 2, 1), (0, 1, 3), (1, 2, 3), (0, 3, 2))
    hex_edges = quad_edges + tuple((a + 4, b + 4) for a, b in quad_edges) + ((0, 4), (1, 5), (2, 6), (3, 7))
    hex_faces = ((3, 0, 4, 7), (1, 2, 6, 5), (0, 1, 5, 4), (2, 3, 7, 6), (0, 3, 2, 1), (4, 5, 6, 7))
    line = np.array([[0.0], [1.0]])
    return {
        "line": ReferenceCell("line", 1, line, ((0, 1),), (), ((0,), (1,)), "vertex", 1.0),
        "triangle": ReferenceCell("triangle", 2, np.vstack([np.zeros(2), e[:2, :2]]), tri_edges, (),
                                  tri_edges, "line", 0.5),
        "quad": ReferenceCell("quad", 2, unit, quad_edges, (), quad_edges, "line", 1.0),
        "tetra": ReferenceCell("tetra", 3, np.vstack([np.zeros(3), e]), tet_edges, tet_faces, tet_faces,
                               "triangle", 1.0 / 6.0),
        "hexahedron": ReferenceCell("hexahedron", 3, cube, hex_edges, hex_faces, hex_faces, "quad", 1.0),
    }  # fmt: skip


_CELLS = _make_cells()
_CELL_ALIASES = {"tetrahedron": "tetra", "hex": "hexahedron", "quadrilateral": "quad", "interval": "line"}


def reference_cell(cell: str) -> ReferenceCell:
    """The reference cell called ``cell`` (a meshio name).

    Arguments:
        cell: "line", "triangle", "quad", "tetra" or "hexahedron" (aliases "tetrahedron", "hex",
            "quadrilateral", "interval" are accepted).

    Returns:
        The ``ReferenceCell`` with vertices, edges, faces and outward-oriented facets.

    Example:
        >>> from igax.bases import reference_cell
        >>> reference_cell("triangle").facets
        ((0, 1), (1, 2), (2, 0))
    """
    if not isinstance(cell, str):
        raise TypeError(f"cell must be a string such as 'triangle', got {type(cell).__name__}")
    name = _CELL_ALIASES.get(cell, cell)
    if name not in _CELLS:
        raise ValueError(f"cell={cell!r} is not a known reference cell; use one of {sorted(_CELLS)}")
    return _CELLS[name]


# (cell, degree) -> meshio cell name of the element's node layout
SUPPORTED_ELEMENTS: dict[tuple[str, int], str] = {
    ("triangle", 1): "triangle",
    ("triangle", 2): "triangle6",
    ("quad", 1): "quad",
    ("quad", 2): "quad9",
    ("tetra", 1): "tetra",
    ("tetra", 2): "tetra10",
    ("hexahedron", 1): "hexahedron",
    ("hexahedron", 2): "hexahedron27",
}


def _exponents(dim: int, degree: int, simplex: bool) -> np.ndarray:
    """Monomial exponents (nmono, dim): total degree <= degree (P_k) or each exponent <= degree (Q_k)."""
    exps = [e for e in itertools.product(range(degree + 1), repeat=dim) if not simplex or sum(e) <= degree]
    return np.array(sorted(exps, key=lambda e: (sum(e), e[::-1])), dtype=np.int64).reshape(-1, dim)


def _is_jax(x: Any) -> bool:
    return isinstance(x, jax.Array)


@dataclass(frozen=True, eq=False)
class ReferenceElement:
    """A Lagrange element on a reference cell: nodes, topology and basis functions.

    Build it with ``reference_element(cell, degree)``; instances are cached, hashable and compare equal by
    ``(cell, degree)``, so they can sit in static fields of ``equinox`` modules.

    Attributes:
        cell: meshio name of the reference cell.
        degree: polynomial degree (1 or 2).
        dim: reference dimension.
        nbasis: number of basis functions (= nodes).
        nodes: (nbasis, dim) reference coordinates of the nodes.
        edges, faces, facets: local topology, see ``ReferenceCell``.
        dofs_per_entity: number of nodes on each vertex, edge, face (2D face of a 3D cell) and cell interior.
        meshio_cell: meshio name of the cell with this node layout (e.g. "triangle6"), for VTU export.
    """

    cell: str
    degree: int
    reference: ReferenceCell
    nodes: np.ndarray
    exponents: np.ndarray  # (nmono, dim)
    coefficients: np.ndarray  # (nmono, nbasis): basis_b = sum_m coefficients[m, b] * monomial_m
    dofs_per_entity: tuple[int, int, int, int]
    meshio_cell: str

    @property
    def dim(self) -> int:
        return self.reference.dim

    @property
    def nbasis(self) -> int:
        return self.nodes.shape[0]

    @property
    def edges(self) -> tuple[tuple[int, ...], ...]:
        return self.reference.edges

    @property
    def faces(self) -> tuple[tuple[int, ...], ...]:
        return self.reference.faces

    @property
    def facets(self) -> tuple[tuple[int, ...], ...]:
        return self.reference.facets

    @property
    def nverts(self) -> int:
        return self.reference.nverts

    @functools.cached_property
    def facet_nodes(self) -> tuple[np.ndarray, ...]:
        """Local ids of the nodes on each facet (``facets`` order): the nodes whose basis functions do not
        vanish on that facet, e.g. the boundary dofs of a cell touching a Dirichlet boundary.

        Example:
            >>> reference_element("triangle", 2).facet_nodes[1].tolist()   # facet (1, 2)
            [1, 2, 4]
        """
        v = self.reference.vertices
        out = []
        for facet in self.facets:
            fv = v[list(facet)]
            # nodes in the affine hull of the facet: zero residual of a least-squares fit by its vertices
            basis = (fv[1:] - fv[0]).T  # (dim, nvf - 1)
            rel = self.nodes - fv[0]  # (nbasis, dim)
            coef, *_ = np.linalg.lstsq(basis, rel.T, rcond=None)
            on = np.linalg.norm(basis @ coef - rel.T, axis=0) < 1e-12
            ids = np.flatnonzero(on)
            ids.setflags(write=False)
            out.append(ids)
        return tuple(out)

    def __hash__(self) -> int:
        return hash(("ReferenceElement", self.cell, self.degree))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReferenceElement):
            return NotImplemented
        return (self.cell, self.degree) == (other.cell, other.degree)

    def __repr__(self) -> str:
        return f"ReferenceElement(cell={self.cell!r}, degree={self.degree}, nbasis={self.nbasis})"

    # ------------------------------------------------------------------ evaluation
    def _check_points(self, xi: Any) -> Any:
        if not _is_jax(xi):
            xi = np.asarray(xi, dtype=np.float64)
        elif not jnp.issubdtype(xi.dtype, jnp.floating):  # integer points: compute in JAX's default float
            xi = xi.astype(jnp.result_type(float))
        if xi.ndim < 1 or xi.shape[-1] != self.dim:
            raise ValueError(
                f"xi must have shape (npts, {self.dim}) for a {self.cell} element, got shape "
                f"{tuple(xi.shape)}; for a single point write xi[None, :]"
            )
        return xi

    def _power_tables(self, xi: Any) -> tuple[Any, Any]:
        """Powers x_d^k and their derivatives k x_d^(k-1), each (..., dim, degree + 1)."""
        xp = jnp if _is_jax(xi) else np
        cols = [xp.ones_like(xi)]
        for _ in range(self.degree):
            cols.append(cols[-1] * xi)  # repeated products: exact derivatives at x = 0, no 0 ** -1
        dcols = [xp.zeros_like(xi)] + [k * cols[k - 1] for k in range(1, self.degree + 1)]
        return xp.stack(cols, axis=-1), xp.stack(dcols, axis=-1)

    def _coefficients(self, like: Any) -> Any:
        if _is_jax(like):
            return jnp.asarray(self.coefficients, dtype=like.dtype)
        return self.coefficients

    def values(self, xi: Any) -> Any:
        """Basis function values at reference points.

        Arguments:
            xi: (npts, dim) reference coordinates (any leading shape ``(..., dim)`` works), NumPy or JAX.

        Returns:
            (npts, nbasis) values; NumPy for NumPy input, JAX (same float dtype) for JAX input.

        Example:
            >>> import numpy as np
            >>> from igax.bases import reference_element
            >>> reference_element("triangle", 1).values(np.array([[0.25, 0.25]]))
            array([[0.5 , 0.25, 0.25]])
        """
        xi = self._check_points(xi)
        xp = jnp if _is_jax(xi) else np
        powers, _ = self._power_tables(xi)  # (..., dim, degree + 1)
        mono = xp.prod(powers[..., np.arange(self.dim), self.exponents], axis=-1)  # (..., nmono)
        return mono @ self._coefficients(mono)

    def gradients(self, xi: Any) -> Any:
        """Reference gradients of the basis functions.

        Arguments:
            xi: (npts, dim) reference coordinates (or ``(..., dim)``), NumPy or JAX.

        Returns:
            (npts, nbasis, dim) with ``out[q, b, d] = d phi_b / d xi_d (xi[q])``.

        Example:
            >>> import numpy as np
            >>> from igax.bases import reference_element
            >>> reference_element("quad", 1).gradients(np.array([[0.0, 0.0]]))[0, 0]
            array([-1., -1.])
        """
        xi = self._check_points(xi)
        xp = jnp if _is_jax(xi) else np
        powers, dpowers = self._power_tables(xi)
        axes = np.arange(self.dim)
        p = powers[..., axes, self.exponents]  # (..., nmono, dim): x_d ** e_md
        dp = dpowers[..., axes, self.exponents]  # (..., nmono, dim): d/dx_d of x_d ** e_md
        coef = self._coefficients(p)
        grads = []
        for d in range(self.dim):
            factors = [dp[..., d] if k == d else p[..., k] for k in range(self.dim)]
            grads.append(functools.reduce(lambda a, b: a * b, factors) @ coef)  # (..., nbasis)
        return xp.stack(grads, axis=-1)


def _nodes(ref: ReferenceCell, degree: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    v = ref.vertices
    if degree == 1:
        return v.copy(), (1, 0, 0, 0)
    parts = [v, np.array([(v[a] + v[b]) / 2 for a, b in ref.edges])]
    counts = [1, 1, 0, 0]
    if not ref.is_simplex:
        if ref.dim == 3:
            parts.append(np.array([v[list(f)].mean(axis=0) for f in ref.faces]))
            counts[2] = 1
        parts.append(v.mean(axis=0, keepdims=True))
        counts[3] = 1
    return np.concatenate(parts), tuple(counts)


@functools.cache
def _build(cell: str, degree: int) -> ReferenceElement:
    ref = _CELLS[cell]
    nodes, counts = _nodes(ref, degree)
    exps = _exponents(ref.dim, degree, ref.is_simplex)
    vander = np.prod(nodes[:, None, :] ** exps[None, :, :], axis=-1)  # (nbasis, nmono)
    coef = np.linalg.solve(vander, np.eye(len(nodes)))  # vander @ coef = I: basis_b(node_a) = delta_ab
    # The exact coefficients are small integers on these reference cells: snap away the solver's round-off.
    snapped = np.round(coef)
    coef = snapped if np.allclose(coef, snapped, atol=1e-9) else coef
    for arr in (nodes, exps, coef):
        arr.setflags(write=False)
    return ReferenceElement(cell, degree, ref, nodes, exps, coef, counts, SUPPORTED_ELEMENTS[(cell, degree)])


def reference_element(cell: str, degree: int) -> ReferenceElement:
    """The Lagrange element of ``degree`` on ``cell``.

    Arguments:
        cell: "triangle", "quad", "tetra" or "hexahedron" (meshio names; "tetrahedron", "hex" also accepted).
        degree: 1 (P1 / Q1) or 2 (P2 / Q2).

    Returns:
        A cached ``ReferenceElement``.

    Example:
        >>> from igax.bases import reference_element
        >>> el = reference_element("tetra", 2)
        >>> el.nbasis, el.meshio_cell
        (10, 'tetra10')
    """
    name = reference_cell(cell).cell
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)):
        raise TypeError(f"degree must be an int (1 or 2), got {degree!r}")
    if (name, int(degree)) not in SUPPORTED_ELEMENTS:
        supported = ", ".join(f"({c!r}, {p})" for c, p in SUPPORTED_ELEMENTS)
        raise ValueError(
            f"no Lagrange element for cell={cell!r} with degree={degree}; supported (cell, degree) pairs are "
            f"{supported}. For higher degrees use a spline space (igax.fem.SplineSpace)."
        )
    return _build(name, int(degree))
