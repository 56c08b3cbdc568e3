"""Coincident vertices and repeated cells of a mesh: detection and merging, in O(n log n) NumPy work.

Two mistakes of mesh generators and hand-made meshes give silently wrong answers rather than errors:

- **coincident, unmerged vertices** (two vertex ids at the same place, each used by cells): the cells on
  either side do not share the vertex, so the mesh is cut along a hidden slit and the solution jumps there;
- **a cell listed twice** (the same vertex set, in any order): it is integrated twice.

Both are found once, when a :class:`~igax.fem.Mesh` is built or read. Coincident vertices are grouped by
binning: each used vertex falls in a grid bin much larger than the tolerance, and the rare vertices that lie
within the tolerance of a bin face are also entered in the neighbouring bin(s), so any two vertices within the
tolerance share at least one bin. One sort of int64 bin keys then finds the shared bins, whose entries are
checked against the real distance. Repeated cells are found by one sort of an order-independent 64-bit hash
of each cell's vertex set, checked exactly on the few cells whose hash repeats. Both are O(n log n), without
an O(n^2) comparison or a KD-tree, and cost a fraction of building the mesh's topology (measured figures in
``Mesh.check_duplicates``).

The tolerance is ``1e-10`` times the diagonal of the bounding box of the used vertices, per coordinate: far
below any real edge length and far above the round-off of coordinates written by generators. Vertex pairs that
share a cell are never taken as a slit (they are the ends of a very short edge, a question for
``Mesh.check_quality``), vertices used by no cell are never flagged, and periodic meshes (whose opposite sides
carry distinct vertices at distinct places) pass.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from igax.fem.mesh._arrays import sort_rows, unique_rows

__all__ = ["coincident_vertex_pairs", "repeated_cells", "merge_map", "check_duplicates"]

REL_TOL = 1e-10  # coincident: closer than REL_TOL * (bounding-box diagonal) in every coordinate
_BIN = 1e-6  # bin size relative to the diagonal: 1e4 x the tolerance (few vertices near a bin face), and at
# most ~1e6 bins per axis, so a 3D bin index packs into one int64


def _tolerance(points: np.ndarray) -> float:
    diag = float(np.linalg.norm(np.ptp(points, axis=0))) if len(points) else 0.0
    return REL_TOL * diag


def coincident_vertex_pairs(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Pairs of distinct vertices used by cells that coincide within the tolerance and share no cell.

    Arguments:
        points: (npts, dim) coordinates.
        cells: (ncells, nverts) vertex ids.

    Returns:
        ``(npairs, 2)`` int64 vertex ids, ``pairs[:, 0] < pairs[:, 1]``, sorted; empty when none.

    Example:
        >>> import numpy as np
        >>> from igax.fem.mesh.duplicates import coincident_vertex_pairs
        >>> pts = np.array([[0.0, 0], [1, 0], [0, 1], [1, 0], [1, 1], [0, 1]])
        >>> coincident_vertex_pairs(pts, np.array([[0, 1, 2], [3, 4, 5]])).tolist()
        [[1, 3], [2, 5]]
    """
    npts, dim = points.shape
    none = np.zeros((0, 2), np.int64)
    used = np.zeros(npts, dtype=bool)
    used[cells.reshape(-1)] = True
    ids = np.flatnonzero(used)
    if len(ids) < 2:
        return none
    x = points[ids]
    lo = x.min(axis=0)
    tol = _tolerance(x)
    if tol == 0.0:  # every used vertex at one place: degenerate cells, reported by check_quality
        return none
    size = _BIN * tol / REL_TOL
    # bin coordinates, shifted by half a bin so that the lowest vertices are not on a bin face
    t = (x - lo) / size + 0.5
    q = np.floor(t).astype(np.int64)  # (n, dim), in [0, 1e6 + 1]
    frac = (t - q) * size  # distance to the lower bin face
    low, high = frac <= tol, size - frac <= tol  # (n, dim): also enter the lower / upper neighbour bin
    stride = np.cumprod([1] + [int(q[:, d].max()) + 3 for d in range(dim - 1)])  # +3: room for q - 1, q + 1
    entries_q, entries_id = [q + 1], [np.arange(len(ids))]  # +1: keep q - 1 >= 0
    near = np.flatnonzero((low | high).any(axis=1))
    for shift in itertools.product((-1, 0, 1), repeat=dim):  # only the few vertices near a bin face
        s = np.array(shift)
        if not s.any() or not len(near):
            continue
        ok = np.all((s == 0) | ((s < 0) & low[near]) | ((s > 0) & high[near]), axis=1)
        entries_q.append(q[near[ok]] + 1 + s)
        entries_id.append(near[ok])
    allq = np.concatenate(entries_q)
    key = allq[:, 0].copy()
    for d in range(1, dim):  # (int matmul has no BLAS: a column sum is faster)
        key += allq[:, d] * stride[d]
    who = np.concatenate(entries_id)
    key, who = _in_shared_bins(key, who)
    order = np.argsort(key)
    key, who = key[order], who[order]
    pairs = []
    step = 1
    while True:  # compare each entry with the ones `step` places later in the same bin (bins hold 1-2)
        same = np.flatnonzero(key[step:] == key[:-step])
        if not len(same):
            break
        a, b = who[same], who[same + step]
        keep = (a != b) & np.all(np.abs(x[a] - x[b]) <= tol, axis=1)
        pairs.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)[keep])
        step += 1
    pairs = np.concatenate(pairs) if pairs else none
    if not len(pairs):
        return none
    pairs = ids[pairs]
    pairs = _unique_pairs(pairs, npts)
    return _drop_shared_cell(pairs, cells, npts)


def _in_shared_bins(key: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """The entries whose key occurs more than once (with the matching entries of ``others``).

    A plain sort of the keys (no argsort: half the cost) finds the repeated keys, usually none; only the
    entries holding them are then selected.
    """
    sk = np.sort(key)
    rep = sk[1:][sk[1:] == sk[:-1]]
    if not len(rep):
        return (key[:0],) + tuple(o[:0] for o in others)
    # (np.isin hashes: several times slower than a binary search in the sorted repeats)
    hit = rep[np.searchsorted(rep, key).clip(max=len(rep) - 1)] == key
    return (key[hit],) + tuple(o[hit] for o in others)


def _mix(v: np.ndarray) -> np.ndarray:
    """A 64-bit mixing of integers (splitmix64 finaliser): nearby ids give unrelated hashes."""
    z = v.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _unique_pairs(pairs: np.ndarray, npts: int) -> np.ndarray:
    key = np.sort(pairs[:, 0] * npts + pairs[:, 1])  # one int64 per pair (npts**2 < 2**63)
    key = key[np.append(True, key[1:] != key[:-1])]
    return np.stack([key // npts, key % npts], axis=1)


def _groups(pairs: np.ndarray, npts: int) -> np.ndarray:
    """Group label of every vertex: connected components of the coincidence pairs."""
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(npts, npts))
    return connected_components(graph, directed=False)[1]


def _drop_shared_cell(pairs: np.ndarray, cells: np.ndarray, npts: int) -> np.ndarray:
    """Remove vertex pairs that belong to one cell (a short edge, not a slit)."""
    # A cell holds a coincident pair iff two of its vertices fall in one group: look at the (rare) cells with
    # a repeated group label, not at every vertex pair of every cell.
    lab = sort_rows(_groups(pairs, npts)[cells])
    bad = np.flatnonzero((lab[:, 1:] == lab[:, :-1]).any(axis=1))
    if not len(bad):
        return pairs
    sub = cells[bad]
    a, b = np.triu_indices(sub.shape[1], 1)
    u, v = np.minimum(sub[:, a], sub[:, b]).ravel(), np.maximum(sub[:, a], sub[:, b]).ravel()
    inside = np.isin(pairs[:, 0] * npts + pairs[:, 1], u * npts + v)
    return pairs[~inside]


def repeated_cells(cells: np.ndarray) -> np.ndarray:
    """Groups of cells with the same vertex set (any order).

    Returns:
        ``(ngroups, 2)`` int64: the first cell of each repeated group and one later repeat of it (cell ids
        sorted by the first column); empty when every cell is distinct.

    Example:
        >>> import numpy as np
        >>> from igax.fem.mesh.duplicates import repeated_cells
        >>> repeated_cells(np.array([[0, 1, 2], [1, 2, 3], [2, 0, 1]])).tolist()
        [[0, 2]]
    """
    none = np.zeros((0, 2), np.int64)
    # An order-independent 64-bit hash of each cell's vertex set (a sum of mixed ids, wrapping modulo 2**64)
    # and one sort of the hashes: no sort of the rows, no lexsort over 4-8 columns (~5x the cost on 6M
    # tetrahedra). The few cells whose hash repeats, usually none, are then grouped exactly.
    h = _mix(cells[:, 0])
    for j in range(1, cells.shape[1]):
        h += _mix(cells[:, j])
    (cand,) = _in_shared_bins(h, np.arange(len(cells)))[1:]
    if not len(cand):
        return none
    rows = sort_rows(cells[cand])
    first, inverse, counts = unique_rows(rows)
    again = np.flatnonzero(first[inverse] != np.arange(len(cand)))  # rows that are not their group's first
    if not len(again):
        return none  # hash collisions only
    group = inverse[again]
    _, one = np.unique(group, return_index=True)  # one repeat per group
    out = cand[np.stack([first[group[one]], again[one]], axis=1)]
    return out[np.argsort(out[:, 0])]


def merge_map(points: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How to merge coincident vertices: which vertices to keep and the renumbering of all of them.

    Each group of coincident vertices (chains of pairs from :func:`coincident_vertex_pairs`) is replaced by
    its smallest vertex id; vertices used by no cell are kept as they are.

    Returns:
        ``kept`` (nkept,) the old ids of the vertices kept (increasing), and ``renumber`` (npts,) the new id
        of every old vertex (``new_points = points[kept]``, ``new_cells = renumber[cells]``).
    """
    npts = len(points)
    pairs = coincident_vertex_pairs(points, cells)
    if not len(pairs):
        return np.arange(npts), np.arange(npts)
    label = _groups(pairs, npts)
    rep = np.full(label.max() + 1, npts, dtype=np.int64)
    np.minimum.at(rep, label, np.arange(npts))
    target = rep[label]  # the smallest id of each vertex's group
    kept = np.flatnonzero(target == np.arange(npts))
    new_id = np.full(npts, -1, dtype=np.int64)
    new_id[kept] = np.arange(len(kept))
    return kept, new_id[target]


def check_duplicates(points: np.ndarray, cells: np.ndarray, what: str = "Mesh", merge_hint: str = "") -> None:
    """Raise ``ValueError`` on coincident used vertices (a hidden slit) or on a cell listed twice.

    Arguments:
        points, cells: the mesh data.
        what: how the message names the mesh (e.g. the file it was read from).
        merge_hint: how to merge, e.g. "Mesh(..., merge_duplicates=True)".
    """
    rep = repeated_cells(cells)
    if len(rep):
        c0, c1 = (int(i) for i in rep[0])
        raise ValueError(
            f"{what}: cells {c0} and {c1} have the same vertices {sorted(cells[c0].tolist())}: a cell listed "
            f"twice is integrated twice. {len(rep)} cell(s) are repeated (first ids: "
            f"{rep[:8, 1].tolist()}). Give each cell once, e.g. "
            "cells = cells[np.sort(np.unique(np.sort(cells, axis=1), axis=0, return_index=True)[1])]."
        )
    pairs = coincident_vertex_pairs(points, cells)
    if len(pairs):
        a, b = (int(i) for i in pairs[0])
        tol = _tolerance(points[np.unique(cells)])
        raise ValueError(
            f"{what}: points {a} and {b} coincide (at {points[a].tolist()}, within {tol:.1e}) and are "
            f"both used by cells, so the mesh is cut along a hidden slit there (the cells on either side "
            f"share no vertex). {len(pairs)} such pair(s) (first: {pairs[:8].tolist()}). Merge them with "
            f"{merge_hint or 'mesh.merge_duplicate_vertices()'}; if the slit is deliberate (a crack), "
            "pass check=False and call mesh.check_quality() yourself."
        )
