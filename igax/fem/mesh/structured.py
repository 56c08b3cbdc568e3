"""Structured meshes of boxes: :func:`rectangle_mesh`, :func:`unit_square` (triangles or quadrilaterals) and
:func:`box_mesh`, :func:`unit_cube` (tetrahedra or hexahedra), with the sides named "left"/"right" (x
min/max),
"bottom"/"top" (y) and "front"/"back" (z), like the spline geometries in ``igax.fem.geometry``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from igax.bases.lagrange import reference_cell
from igax.fem.mesh.core import Mesh

__all__ = ["rectangle_mesh", "unit_square", "box_mesh", "unit_cube"]


# ---------------------------------------------------------------------------------------------- generators
def _counts(n: int | Sequence[int], dim: int) -> tuple[int, ...]:
    if isinstance(n, (int, np.integer)) and not isinstance(n, bool):
        counts = (n,) * dim
    elif isinstance(n, (tuple, list, np.ndarray)):
        counts = tuple(n)
    else:
        counts = ()  # e.g. a float: rejected below
    if len(counts) != dim or any(
        isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in counts
    ):
        raise ValueError(f"n must be a positive int or a tuple of {dim} positive ints, got {n!r}")
    return tuple(int(k) for k in counts)


def _bounds(lower: Sequence[float], upper: Sequence[float], dim: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    if lo.shape != (dim,) or hi.shape != (dim,):
        raise ValueError(
            f"lower and upper must each have {dim} coordinates, got {lo.tolist()} and {hi.tolist()}"
        )
    if np.any(hi <= lo):
        raise ValueError(
            f"upper must exceed lower in every coordinate, got lower={lo.tolist()}, upper={hi.tolist()}"
        )
    return lo, hi


_SIDES = (("left", "right"), ("bottom", "top"), ("front", "back"))


def _structured(
    lo: np.ndarray, hi: np.ndarray, counts: tuple[int, ...], cell_type: str, template: np.ndarray
) -> Mesh:
    """Structured mesh of a box, each grid cube split like ``template``: (ntemplate, nverts, dim) offsets.

    Cell ``cube * ntemplate + t`` is template ``t`` placed in cube ``cube`` (x fastest). The sides of the box
    are named from the template's local facets that lie on a side of the unit cube: O(boundary) work, no
    search.
    """
    dim = len(counts)
    axes = [np.linspace(lo[d], hi[d], counts[d] + 1) for d in range(dim)]
    points = np.stack(np.meshgrid(*axes[::-1], indexing="ij")[::-1], axis=-1).reshape(-1, dim)  # x fastest
    stride = np.cumprod([1] + [c + 1 for c in counts[:-1]])  # point id = sum_d stride_d * index_d
    cube_index = np.stack(np.meshgrid(*[np.arange(c) for c in counts[::-1]], indexing="ij")[::-1], -1)
    cube_index = cube_index.reshape(-1, dim)  # (ncubes, dim), x fastest
    base = cube_index @ stride
    ntpl = len(template)
    cells = (base[:, None, None] + (template @ stride)[None]).reshape(-1, template.shape[1])
    facets = np.array(reference_cell(cell_type).facets)  # (nfl, nvf) local facets, oriented outwards
    tpl_facets = template[:, facets]  # (ntpl, nfl, nvf, dim) corner offsets of every local facet
    boundaries = {}
    for d in range(dim):
        for side, name in enumerate(_SIDES[d]):
            t_ids, f_ids = np.nonzero(
                (tpl_facets[..., d] == side).all(axis=-1)
            )  # template facets on the side
            cubes = np.flatnonzero(cube_index[:, d] == (0 if side == 0 else counts[d] - 1))
            cell_ids = (cubes[:, None] * ntpl + t_ids[None]).reshape(-1)
            boundaries[name] = cells[cell_ids[:, None], facets[np.tile(f_ids, len(cubes))]]
    mesh = Mesh._trusted(points, cells.astype(np.int64, copy=False), cell_type, boundaries, {})
    # The grid of the points in C order (z, y, x: x fastest): a degree-1 Lagrange space on the mesh passes it
    # to PARDISO (igax.solvers._grid_ordering); copies that keep the cells keep it (Mesh._replace).
    object.__setattr__(mesh, "_grid_shape", tuple(c + 1 for c in counts[::-1]))
    return mesh


def rectangle_mesh(
    lower: Sequence[float] = (0.0, 0.0),
    upper: Sequence[float] = (1.0, 1.0),
    n: int | Sequence[int] = 8,
    cell: str = "triangle",
    *,
    diagonal: str = "right",
) -> Mesh:
    """Structured mesh of a rectangle with boundaries "left", "right", "bottom", "top".

    Named ``rectangle_mesh`` (once ``rectangle``) because ``igax.fem.geometry.rectangle`` is the spline
    patch of a rectangle.

    Arguments:
        lower, upper: opposite corners.
        n: cells per direction, an int or ``(nx, ny)``.
        cell: "triangle" (each square split in two) or "quad".
        diagonal: "right" (squares split along the diagonal from lower-left to upper-right) or "left".

    Returns:
        A :class:`Mesh` with ``(nx + 1) * (ny + 1)`` points, numbered with x fastest.

    Example:
        >>> from igax.fem import rectangle_mesh
        >>> rectangle_mesh((0, 0), (2, 1), n=(4, 2), cell="quad").ncells
        8
    """
    nx, ny = _counts(n, 2)
    lo, hi = _bounds(lower, upper, 2)
    c0, c1, c2, c3 = (0, 0), (1, 0), (1, 1), (0, 1)  # counter-clockwise corners of a grid square
    if cell == "quad":
        template = [[c0, c1, c2, c3]]
    elif cell == "triangle":
        if diagonal == "right":
            template = [[c0, c1, c2], [c0, c2, c3]]
        elif diagonal == "left":
            template = [[c0, c1, c3], [c1, c2, c3]]
        else:
            raise ValueError(f"diagonal must be 'right' or 'left', got {diagonal!r}")
    else:
        raise ValueError(f"cell must be 'triangle' or 'quad' for a 2D mesh, got {cell!r}")
    return _structured(lo, hi, (nx, ny), cell, np.array(template))


def unit_square(n: int | Sequence[int] = 8, cell: str = "triangle", *, diagonal: str = "right") -> Mesh:
    """Structured mesh of ``[0, 1]^2``; see :func:`rectangle_mesh`.

    Example:
        >>> from igax.fem import unit_square
        >>> unit_square(2, cell="quad").npoints
        9
    """
    return rectangle_mesh((0.0, 0.0), (1.0, 1.0), n, cell, diagonal=diagonal)


# Kuhn subdivision of the unit cube into 6 tetrahedra: one per ordering of the axes, walking from corner
# (0, 0, 0) to (1, 1, 1) one axis at a time. Every cube uses the same split, so the face diagonals of
# neighbouring cubes match and the mesh is conforming.
def _kuhn_offsets() -> np.ndarray:
    tets = []
    for perm in itertools.permutations(range(3)):
        corner = np.zeros(3, dtype=int)
        path = [corner.copy()]
        for axis in perm:
            corner[axis] = 1
            path.append(corner.copy())
        path = np.array(path)
        if (
            np.linalg.det((path[1:] - path[0]).astype(float)) < 0
        ):  # odd permutation: swap to orient positively
            path[[2, 3]] = path[[3, 2]]
        tets.append(path)
    return np.array(tets)  # (6, 4, 3)


def box_mesh(
    lower: Sequence[float] = (0.0, 0.0, 0.0),
    upper: Sequence[float] = (1.0, 1.0, 1.0),
    n: int | Sequence[int] = 4,
    cell: str = "tetra",
) -> Mesh:
    """Structured mesh of a box with boundaries "left"/"right" (x), "bottom"/"top" (y), "front"/"back" (z).

    Named ``box_mesh`` (once ``box``) because ``igax.fem.geometry.box`` is the spline patch of a box.

    Arguments:
        lower, upper: opposite corners.
        n: cells (cubes) per direction, an int or ``(nx, ny, nz)``.
        cell: "tetra" (6 tetrahedra per cube, Kuhn subdivision) or "hexahedron".

    Returns:
        A :class:`Mesh` with ``(nx + 1) (ny + 1) (nz + 1)`` points, numbered with x fastest, then y, then z.

    Example:
        >>> from igax.fem import box_mesh
        >>> box_mesh(n=(2, 1, 1), cell="hexahedron").ncells
        2
    """
    counts = _counts(n, 3)
    lo, hi = _bounds(lower, upper, 3)
    if cell == "hexahedron":
        template = reference_cell("hexahedron").vertices.astype(int)[None]  # (1, 8, 3) in meshio order
    elif cell == "tetra":
        template = _kuhn_offsets()  # (6, 4, 3)
    else:
        raise ValueError(f"cell must be 'tetra' or 'hexahedron' for a 3D mesh, got {cell!r}")
    return _structured(lo, hi, counts, cell, template)


def unit_cube(n: int | Sequence[int] = 4, cell: str = "tetra") -> Mesh:
    """Structured mesh of ``[0, 1]^3``; see :func:`box_mesh`.

    Example:
        >>> from igax.fem import unit_cube
        >>> unit_cube(2).ncells
        48
    """
    return box_mesh((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), n, cell)
