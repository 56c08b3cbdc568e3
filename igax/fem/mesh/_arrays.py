"""Array helpers shared by the mesh modules and the spaces: row sorting and grouping of index arrays, and the
determinant of small matrices (NumPy or JAX).

They sit below :mod:`igax.fem.mesh.core`, :mod:`igax.fem.mesh.duplicates` and :mod:`igax.fem.mesh.refine`, so
that each of those imports them at module level without importing the others.
"""

from __future__ import annotations

import numpy as np

from igax.solvers.sparse import sort_keys

__all__ = ["MESH_CELLS", "determinant", "sort_rows", "unique_rows"]

MESH_CELLS = ("triangle", "quad", "tetra", "hexahedron")  # the cell types of a Mesh


def sort_rows(rows: np.ndarray) -> np.ndarray:
    """Sort each row of a small (n, k) int array (min/max network for k <= 4: np.sort on rows is slow)."""
    k = rows.shape[1]
    if k > 4:
        return np.sort(rows, axis=1)
    cols = [rows[:, j] for j in range(k)]
    network = {1: [], 2: [(0, 1)], 3: [(0, 1), (1, 2), (0, 1)], 4: [(0, 1), (2, 3), (0, 2), (1, 3), (1, 2)]}[
        k
    ]
    for a, b in network:
        cols[a], cols[b] = np.minimum(cols[a], cols[b]), np.maximum(cols[a], cols[b])
    return np.stack(cols, axis=1)


def unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group equal rows of an (n, k) int array (the one row grouping of igax.fem: mesh topology, Lagrange dof
    numbering, duplicate detection; sort each row first, :func:`sort_rows`, to group rows equal up to order).

    Returns ``first`` (nu,): index of each group's first occurrence (groups numbered in sorted order),
    ``inverse`` (n,): group of each row, ``counts`` (nu,).

    Example:
        >>> import numpy as np
        >>> from igax.fem.mesh import unique_rows
        >>> first, inverse, counts = unique_rows(np.array([[1, 2], [0, 5], [1, 2]]))
        >>> first.tolist(), inverse.tolist(), counts.tolist()
        ([1, 0], [1, 0, 1], [1, 2])
    """
    n, k = rows.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = int(rows.max()) + 1
    new = np.empty(n, dtype=bool)
    new[0] = True
    if top**k < 2**62:  # pack each row into one int64 key: one (packed, stable) sort instead of a lexsort
        key = rows[:, 0].astype(np.int64)
        for j in range(1, k):
            key = key * top + rows[:, j]
        order, sk = sort_keys(key, top**k)
        np.not_equal(sk[1:], sk[:-1], out=new[1:])
    else:
        order = np.lexsort(rows.T[::-1])  # stable
        sr = rows[order]
        new[1:] = np.any(sr[1:] != sr[:-1], axis=1)
    group = np.cumsum(new) - 1
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = group
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, n))
    return order[starts], inverse, counts  # stable sorts: a group's first entry is its smallest index


def determinant(j):
    """det of (..., d, d) matrices, d <= 3, NumPy or JAX: the one determinant of igax.fem (cell maps of
    meshes, Lagrange and spline spaces, :func:`igax.fem.spaces.base.det_inv`).

    Explicit formulas: faster than ``np.linalg.det`` on 1e6 cells, and plain arithmetic under JAX (no LU).

    Example:
        >>> import numpy as np
        >>> from igax.fem.mesh import determinant
        >>> float(determinant(np.array([[2.0, 1.0], [1.0, 3.0]])))
        5.0
    """
    if j.shape[-1] == 1:
        return j[..., 0, 0]
    if j.shape[-1] == 2:
        return j[..., 0, 0] * j[..., 1, 1] - j[..., 0, 1] * j[..., 1, 0]
    return (
        j[..., 0, 0] * (j[..., 1, 1] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 1])
        - j[..., 0, 1] * (j[..., 1, 0] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 0])
        + j[..., 0, 2] * (j[..., 1, 0] * j[..., 2, 1] - j[..., 1, 1] * j[..., 2, 0])
    )
