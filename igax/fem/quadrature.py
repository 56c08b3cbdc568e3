"""Quadrature rules on reference cells and on the facets of reference cells.

All rules are computed once in NumPy (float64) and cached; they are plain arrays the assembly code closes
over. Reference cells are those of ``igax.bases.lagrange``: ``[0, 1]`` for lines, the unit simplex for
triangles and tetrahedra, ``[0, 1]^dim`` for quadrilaterals and hexahedra.

Simplex rules of any degree come from the collapsed (Duffy) map of the cube onto the simplex with Gauss-Jacobi
points in the collapsed directions, whose weight functions absorb the map's Jacobian; they have positive
weights and interior points. For the low degrees used most (up to 5 on triangles, 2 on tetrahedra) smaller
symmetric rules with closed-form points are used instead (fewer points per element means cheaper assembly).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import roots_jacobi

from igax.bases.lagrange import reference_cell

__all__ = [
    "gauss_legendre",
    "tensor_gauss",
    "simplex_quadrature",
    "quadrature",
    "FacetQuadrature",
    "facet_quadrature",
    "reference_facet_maps",
]


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.cache
def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre rule with ``n`` points on ``[0, 1]`` (exact for polynomials of degree ``2n - 1``).

    Arguments:
        n: number of points (>= 1).

    Returns:
        ``(points (n,), weights (n,))``, weights summing to 1. The arrays are read-only (cached).

    Example:
        >>> from igax.fem.quadrature import gauss_legendre
        >>> x, w = gauss_legendre(2)
        >>> round(float(w @ x**3), 14)   # = 1/4
        0.25
    """
    n = _check_int(n, "n", 1)
    t, w = np.polynomial.legendre.leggauss(n)
    return _frozen((t + 1.0) / 2.0, w / 2.0)


@functools.cache
def tensor_gauss(n: int | tuple[int, ...], dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tensor-product Gauss-Legendre rule on ``[0, 1]^dim``.

    Arguments:
        n: points per direction, an int (same in every direction; then ``dim`` is required) or a tuple.
        dim: number of directions when ``n`` is an int.

    Returns:
        ``(points (prod n, dim), weights (prod n,))``; the last coordinate varies fastest.

    Example:
        >>> from igax.fem.quadrature import tensor_gauss
        >>> x, w = tensor_gauss(3, 2)
        >>> x.shape, round(float(w.sum()), 14)
        ((9, 2), 1.0)
    """
    if isinstance(n, tuple):
        if dim is not None and dim != len(n):
            raise ValueError(f"dim={dim} does not match len(n)={len(n)}; pass n as an int or drop dim")
        counts = tuple(_check_int(k, "n[i]", 1) for k in n)
    else:
        if dim is None:
            raise TypeError("tensor_gauss(n, dim): dim is required when n is an int, e.g. tensor_gauss(3, 2)")
        counts = (_check_int(n, "n", 1),) * _check_int(dim, "dim", 1)
    rules = [gauss_legendre(k) for k in counts]
    pts = np.stack(np.meshgrid(*[r[0] for r in rules], indexing="ij"), axis=-1).reshape(-1, len(counts))
    wts = functools.reduce(np.multiply.outer, [r[1] for r in rules]).reshape(-1)
    return _frozen(pts, wts)


def _gauss_jacobi01(n: int, alpha: int) -> tuple[np.ndarray, np.ndarray]:
    """n-point rule on [0, 1] for the weight (1 - u)^alpha."""
    t, w = roots_jacobi(n, alpha, 0.0)
    # u = (1 + t) / 2: (1 - u)^alpha du = ((1 - t) / 2)^alpha dt / 2
    return (t + 1.0) / 2.0, w / 2.0 ** (alpha + 1)


def _collapsed(dim: int, degree: int) -> tuple[np.ndarray, np.ndarray]:
    n = degree // 2 + 1  # 2n - 1 >= degree in every collapsed direction
    if dim == 2:
        u, wu = _gauss_jacobi01(n, 1)  # Jacobian of (u, v) -> (u, v (1 - u)) is (1 - u)
        v, wv = gauss_legendre(n)
        U, V = np.meshgrid(u, v, indexing="ij")
        pts = np.stack([U, V * (1.0 - U)], axis=-1).reshape(-1, 2)
        return pts, np.outer(wu, wv).reshape(-1)
    u, wu = _gauss_jacobi01(n, 2)  # (u, v, w) -> (u, v (1-u), w (1-u)(1-v)): Jacobian (1-u)^2 (1-v)
    v, wv = _gauss_jacobi01(n, 1)
    w, ww = gauss_legendre(n)
    U, V, W = np.meshgrid(u, v, w, indexing="ij")
    pts = np.stack([U, V * (1.0 - U), W * (1.0 - U) * (1.0 - V)], axis=-1).reshape(-1, 3)
    return pts, np.einsum("i,j,k->ijk", wu, wv, ww).reshape(-1)


def _orbit3(a: float) -> np.ndarray:
    """Barycentric orbit (a, a, 1 - 2a) of the triangle, as Cartesian points (3, 2)."""
    b = 1.0 - 2.0 * a
    return np.array([[a, a], [b, a], [a, b]])


def _symmetric(dim: int, degree: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Small symmetric rules with closed-form points and positive weights, or None."""
    if degree <= 1:  # centroid rule
        return np.full((1, dim), 1.0 / (dim + 1)), np.array([0.5 if dim == 2 else 1.0 / 6.0])
    if dim == 2 and degree == 2:  # 3 points at barycentric (1/6, 1/6, 2/3)
        return _orbit3(1.0 / 6.0), np.full(3, 1.0 / 6.0)
    if dim == 2 and degree in (4, 5):  # 7-point degree-5 rule (Radon); points and weights involve sqrt(15)
        s = np.sqrt(15.0)
        pts = np.vstack([[1.0 / 3.0, 1.0 / 3.0], _orbit3((6.0 - s) / 21.0), _orbit3((6.0 + s) / 21.0)])
        wts = np.r_[9.0 / 40.0, np.full(3, (155.0 - s) / 1200.0), np.full(3, (155.0 + s) / 1200.0)] / 2.0
        return pts, wts
    if dim == 3 and degree == 2:  # 4 points at barycentric (a, a, a, b), a = (5 - sqrt 5) / 20
        a = (5.0 - np.sqrt(5.0)) / 20.0
        b = 1.0 - 3.0 * a
        pts = np.array([[a, a, a], [b, a, a], [a, b, a], [a, a, b]])
        return pts, np.full(4, 1.0 / 24.0)
    return None


@functools.cache
def simplex_quadrature(dim: int, degree: int, rule: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Quadrature on the reference triangle (dim 2) or tetrahedron (dim 3), exact to ``degree``.

    Arguments:
        dim: 2 (triangle with vertices 0, e1, e2) or 3 (tetrahedron with vertices 0, e1, e2, e3).
        degree: total polynomial degree integrated exactly (any int >= 0).
        rule: "auto" (small symmetric rule where one is known, else collapsed Gauss-Jacobi) or "collapsed".

    Returns:
        ``(points (nq, dim), weights (nq,))``; weights are positive and sum to 1/2 or 1/6, points are
        interior.

    Example:
        >>> from igax.fem.quadrature import simplex_quadrature
        >>> x, w = simplex_quadrature(2, 2)
        >>> float(w @ (x[:, 0] * x[:, 1]))   # = 1! 1! / 4! = 1/24
        0.041666666666666664
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 (triangle) or 3 (tetrahedron), got {dim!r}")
    degree = _check_int(degree, "degree", 0)
    if rule not in ("auto", "collapsed"):
        raise ValueError(f"rule must be 'auto' or 'collapsed', got {rule!r}")
    found = _symmetric(dim, degree) if rule == "auto" else None
    pts, wts = found if found is not None else _collapsed(dim, degree)
    return _frozen(np.ascontiguousarray(pts, dtype=np.float64), np.ascontiguousarray(wts, dtype=np.float64))


def quadrature(cell: str, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature rule on a reference cell exact for polynomials of ``degree``.

    "Degree" means total degree on simplices and degree in each variable on lines, quads and hexahedra (the
    tensor Gauss rule with ``degree // 2 + 1`` points per direction integrates Q_degree exactly).

    Arguments:
        cell: "vertex", "line", "triangle", "quad", "tetra" or "hexahedron".
        degree: polynomial degree to integrate exactly (int >= 0).

    Returns:
        ``(points (nq, dim), weights (nq,))`` on the reference cell (read-only arrays).

    Example:
        >>> from igax.fem.quadrature import quadrature
        >>> x, w = quadrature("quad", 3)
        >>> x.shape
        (4, 2)
    """
    degree = _check_int(degree, "degree", 0)
    if cell == "vertex":  # facets of a line: a point with unit weight
        return _frozen(np.zeros((1, 0)), np.ones(1))
    ref = reference_cell(cell)
    if ref.is_simplex and ref.dim > 1:
        return simplex_quadrature(ref.dim, degree)
    return tensor_gauss(degree // 2 + 1, ref.dim)


# ---------------------------------------------------------------------------------------------------- facets
@functools.cache
def reference_facet_maps(cell: str) -> tuple[np.ndarray, np.ndarray]:
    """Affine parametrisations of the facets of a reference cell.

    Facet ``f`` of the cell (``reference_cell(cell).facets[f]``) is ``x = origins[f] + axes[f] @ s`` for ``s``
    in the facet's own reference cell (``[0, 1]`` for lines, unit triangle, ``[0, 1]^2`` for quads), with
    ``s = 0`` at the facet's first vertex. The map keeps the facet's vertex order, so the columns of
    ``axes[f]`` follow the outward orientation of ``facets[f]``.

    Arguments:
        cell: "line", "triangle", "quad", "tetra" or "hexahedron".

    Returns:
        ``origins (nfacets, dim)`` and ``axes (nfacets, dim, dim - 1)``.

    Example:
        >>> from igax.fem.quadrature import reference_facet_maps
        >>> o, a = reference_facet_maps("triangle")
        >>> o[1], a[1, :, 0]      # facet (1, 2): from e1 towards e2
        (array([1., 0.]), array([-1.,  1.]))
    """
    ref = reference_cell(cell)
    v = ref.vertices
    facets = np.array(ref.facets)  # (nfacets, nvf)
    origins = v[facets[:, 0]]
    if ref.dim == 1:  # facets are points: no tangent directions
        axes = np.zeros((len(facets), 1, 0))
    elif ref.facet_cell == "quad":  # s0 along (v0 -> v1), s1 along (v0 -> v3)
        axes = np.stack([v[facets[:, 1]] - origins, v[facets[:, 3]] - origins], axis=-1)
    else:
        axes = np.stack([v[facets[:, k]] - origins for k in range(1, facets.shape[1])], axis=-1)
    axes = axes.reshape(len(facets), ref.dim, ref.dim - 1)
    return _frozen(origins, axes)


@dataclass(frozen=True, eq=False)
class FacetQuadrature:
    """A quadrature rule on every facet of a reference cell, mapped into the cell.

    For a cell map ``x = F(xi)`` with Jacobian ``J`` (physical dim == reference dim), the physical surface
    element at a facet point is ``ds = |det J| * |J^{-T} n| * dS``, where ``n`` is the reference outward unit
    normal and ``dS`` the reference facet measure carried by ``weights``; the physical outward normal is
    ``J^{-T} n`` normalised. (For a degree-1 simplex this reduces to the facet's physical length/area.)

    Attributes:
        cell: the reference cell.
        points: (nfacets, nq, dim) quadrature points in the reference cell, one set per facet.
        weights: (nfacets, nq) weights for the reference facet measure: ``weights[f].sum()`` is the measure of
            facet ``f`` of the reference cell (e.g. sqrt(2) for the hypotenuse of the triangle).
        normals: (nfacets, dim) outward unit normals of the reference facets.
        facet_points: (nq, dim - 1) the rule on the facet's own reference cell.
        facet_weights: (nq,) its weights.
    """

    cell: str
    points: np.ndarray
    weights: np.ndarray
    normals: np.ndarray
    facet_points: np.ndarray
    facet_weights: np.ndarray


def _outward_normals(cell: str, axes: np.ndarray) -> np.ndarray:
    ref = reference_cell(cell)
    if ref.dim == 1:
        n = np.array([[-1.0], [1.0]])  # facets (0,), (1,) at xi = 0 and xi = 1
    elif ref.dim == 2:
        t = axes[:, :, 0]
        n = np.stack([t[:, 1], -t[:, 0]], axis=-1)  # tangent rotated clockwise: outward for CCW facets
    else:
        n = np.cross(axes[:, :, 0], axes[:, :, 1])
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


@functools.cache
def facet_quadrature(cell: str, degree: int) -> FacetQuadrature:
    """Quadrature on all facets of a reference cell, exact to ``degree`` on each facet.

    Arguments:
        cell: "line", "triangle", "quad", "tetra" or "hexahedron".
        degree: polynomial degree integrated exactly along the facets.

    Returns:
        A ``FacetQuadrature`` (points in the cell, weights, outward reference normals).

    Example:
        >>> from igax.fem.quadrature import facet_quadrature
        >>> fq = facet_quadrature("triangle", 2)
        >>> fq.points.shape, fq.weights.sum(axis=1)      # edge lengths 1, sqrt(2), 1
        ((3, 2, 2), array([1.        , 1.41421356, 1.        ]))
    """
    ref = reference_cell(cell)
    s, w = quadrature(ref.facet_cell, degree)  # (nq, dim - 1), (nq,)
    origins, axes = reference_facet_maps(ref.cell)
    pts = origins[:, None, :] + np.einsum("fdk,qk->fqd", axes, s)  # (nfacets, nq, dim)
    if ref.dim == 1:
        scale = np.ones(len(origins))
    elif ref.dim == 2:
        scale = np.linalg.norm(axes[:, :, 0], axis=-1)
    else:  # affine image of the facet's reference cell: area ratio |a0 x a1| (triangles and quads alike)
        scale = np.linalg.norm(np.cross(axes[:, :, 0], axes[:, :, 1]), axis=-1)
    weights = scale[:, None] * w[None, :]
    normals = _outward_normals(ref.cell, axes)
    return FacetQuadrature(ref.cell, *_frozen(pts, weights, normals, np.asarray(s), np.asarray(w)))
