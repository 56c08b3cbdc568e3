"""Row-block partitions of a sparse pattern over devices, with their halo (ghost) lists: host-side NumPy.

The sharded solve (:mod:`igax.solvers.distributed`) gives each of ``D`` devices one contiguous block of
``nloc = ceil(n / D)`` rows of a (possibly renumbered) matrix. A device's product ``y_d = A_d x`` needs the
entries of ``x`` its rows couple to; those it does not own are its *ghosts*. Everything integer about that is
computed here once per ``(pattern, D, ordering)`` and cached, like the rest of igax's index work:

* the numbering: the pattern's own (a structured spline space numbers its dofs lexicographically, so
  contiguous blocks are slabs along the slowest parametric direction) or reverse Cuthill-McKee
  (``scipy.sparse.csgraph``), which turns an unstructured mesh's numbering into a banded one whose
  contiguous blocks couple only to their neighbours. ``"auto"`` keeps the one with fewer ghosts.
* the halo exchange: for each block offset ``o`` that occurs (device ``d`` needs entries owned by ``d + o``),
  the sender's local indices of what it sends, padded to the widest pair. One ``ppermute`` per offset; a
  banded numbering has offsets ``{-1, +1}`` when blocks are wider than the bandwidth.
* the local matrix: rows of the block in ELLPACK layout (``nloc x W``, ``W`` the widest row), whose column
  indices point into ``[x_local, ghosts]`` and whose values are gathered from the global CSR values through
  one index array (padding reads an appended 0; padded rows past ``n`` read an appended 1 on the diagonal, so
  they solve ``1 x = 0``). ELLPACK because every row of a block is then one fixed-width gather and sum, the
  layout GPUs like; its waste is ``W / mean row length`` (1.0-1.3 for FEM and spline matrices).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

ORDERINGS = ("auto", "natural", "rcm")


@dataclasses.dataclass(frozen=True, eq=False)
class Partition:
    """The row blocks of one pattern on ``ndev`` devices (host arrays; see the module text).

    Attributes:
        n: rows of the matrix; ``nloc``: rows per device (the last block is padded); ``ndev``: devices.
        ordering: ``"natural"`` or ``"rcm"``.
        perm: ``(ndev * nloc,)`` the original row of each partitioned row, ``n`` for padding.
        iperm: ``(n,)`` the partitioned position of each original row.
        offsets: the block offsets ``o`` with a halo exchange (device ``d`` receives from ``d + o``).
        widths: entries sent per offset (padded to the widest device pair).
        send: one ``(ndev, width)`` int32 array per offset: the sender's local indices.
        cols: ``(ndev, nloc, W)`` int32 column of each ELLPACK slot in ``[local rows, ghosts]``.
        slots: ``(ndev, nloc, W)`` int32 CSR slot of each ELLPACK slot (``nnz``: zero, ``nnz + 1``: one).
        diag: ``(ndev, nloc)`` int32 CSR slot of each row's diagonal (``nnz + 1`` for padded rows, ``nnz``
            where the diagonal is not stored).
        ghosts: ``(ndev,)`` ghosts of each device (without padding).
    """

    n: int
    nloc: int
    ndev: int
    ordering: str
    perm: np.ndarray
    iperm: np.ndarray
    offsets: tuple[int, ...]
    widths: tuple[int, ...]
    send: tuple[np.ndarray, ...]
    cols: np.ndarray
    slots: np.ndarray
    diag: np.ndarray
    ghosts: np.ndarray

    @property
    def nghost(self) -> int:
        """Ghost slots of every device (the sum of the padded widths)."""
        return int(sum(self.widths))

    def halo_entries(self) -> int:
        """Vector entries moved between devices by one product (padded, as the exchange sends them)."""
        return int(
            sum(
                w * sum(1 for d in range(self.ndev) if 0 <= d + o < self.ndev)
                for o, w in zip(self.offsets, self.widths, strict=True)
            )
        )

    def summary(self) -> dict:
        """Sizes for reports: rows, ghosts and ELLPACK width per device, halo entries per product."""
        return {
            "n": self.n,
            "devices": self.ndev,
            "ordering": self.ordering,
            "rows_per_device": self.nloc,
            "ghosts_max": int(self.ghosts.max(initial=0)),
            "ghosts_mean": float(self.ghosts.mean()) if self.ndev else 0.0,
            "offsets": list(self.offsets),
            "halo_entries_per_product": self.halo_entries(),
            "ell_width": int(self.cols.shape[-1]),
        }


def _ordering(pattern, ordering: str) -> np.ndarray | None:
    """The permutation (new -> old) of ``ordering``; None for the natural one."""
    if ordering == "natural":
        return None
    graph = sp.csr_matrix(
        (np.ones(pattern.nnz, np.int8), pattern.indices, pattern.indptr), shape=pattern.shape
    )
    return np.asarray(reverse_cuthill_mckee(graph, symmetric_mode=False), dtype=np.int64)


def _build(pattern, ndev: int, ordering: str) -> Partition:
    n = pattern.shape[0]
    nnz = pattern.nnz
    nloc = max(1, -(-n // ndev))
    npad = ndev * nloc
    order = _ordering(pattern, ordering)
    order = np.arange(n, dtype=np.int64) if order is None else order
    iperm = np.empty(n, np.int64)
    iperm[order] = np.arange(n)
    # Entries in the new numbering, sorted by (row, column): each block's rows are consecutive.
    r = iperm[pattern.rows.astype(np.int64)]
    c = iperm[pattern.indices.astype(np.int64)]
    srt = np.lexsort((c, r))
    r, c, slot = r[srt], c[srt], srt.astype(np.int64)  # slot: the entry's position in the CSR values
    dev = r // nloc
    owner = c // nloc
    off = owner - dev
    # Ghost lists: the distinct (device, column) pairs with a foreign owner, grouped by offset.
    foreign = off != 0
    pairs = (
        np.unique(np.stack([dev[foreign], c[foreign]]), axis=1) if foreign.any() else np.zeros((2, 0), int)
    )
    pdev, pcol = pairs
    poff = pcol // nloc - pdev
    offsets = tuple(int(o) for o in np.unique(poff))
    ghosts = np.bincount(pdev, minlength=ndev)
    widths, send = [], []
    ghost_pos = np.empty(pairs.shape[1], np.int64)  # each pair's slot in its device's ghost buffer
    base = nloc
    for o in offsets:
        sel = np.flatnonzero(poff == o)  # sorted by (device, column)
        d, col = pdev[sel], pcol[sel]
        counts = np.bincount(d, minlength=ndev)
        w = int(counts.max())
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        k = np.arange(sel.size) - start[d]  # rank within the device's list
        ghost_pos[sel] = base + k
        # The sender e = d + o sends to d the local indices of the columns d needs from it.
        s = np.zeros((ndev, w), np.int32)
        s[d + o, k] = col - (d + o) * nloc
        widths.append(w)
        send.append(s)
        base += w
    # Column index of every entry in its device's [local, ghost] vector.
    lcol = c - dev * nloc
    if foreign.any():
        key = dev[foreign] * npad + c[foreign]
        pkey = pdev * npad + pcol
        lcol[foreign] = ghost_pos[np.searchsorted(pkey, key)]
    # ELLPACK: slot j of row i is the j-th entry of the row.
    counts = np.bincount(r, minlength=npad)
    width = max(int(counts.max(initial=0)), 1)
    rstart = np.concatenate([[0], np.cumsum(counts)[:-1]])
    j = np.arange(r.size) - rstart[r]
    cols = np.zeros((npad, width), np.int32)
    slots = np.full((npad, width), nnz, np.int64)
    cols[r, j] = lcol
    slots[r, j] = slot
    diag = np.full(npad, nnz, np.int64)
    on_diag = r == c
    diag[r[on_diag]] = slot[on_diag]
    pad = np.arange(n, npad)  # padded rows: 1 on the diagonal
    cols[pad, 0] = pad - (pad // nloc) * nloc
    slots[pad, 0] = nnz + 1
    diag[pad] = nnz + 1
    itype = np.int32 if nnz + 2 < 2**31 else np.int64
    perm = np.full(npad, n, np.int64)
    perm[:n] = order
    return Partition(
        n=n,
        nloc=nloc,
        ndev=ndev,
        ordering=ordering,
        perm=perm,
        iperm=iperm,
        offsets=offsets,
        widths=tuple(widths),
        send=tuple(send),
        cols=cols.reshape(ndev, nloc, width),
        slots=slots.astype(itype).reshape(ndev, nloc, width),
        diag=diag.astype(itype).reshape(ndev, nloc),
        ghosts=ghosts,
    )


@functools.lru_cache(maxsize=8)
def partition(pattern, ndev: int, ordering: str = "auto") -> Partition:
    """The row-block partition of ``pattern`` over ``ndev`` devices (cached per pattern).

    Arguments:
        pattern: a square :class:`~igax.solvers.CSRPattern`.
        ndev: number of devices (blocks).
        ordering: ``"natural"`` (the pattern's numbering), ``"rcm"`` (reverse Cuthill-McKee) or ``"auto"``
            (the one of the two with fewer ghosts in total).

    Returns:
        A :class:`Partition`.

    Example:
        >>> import scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix
        >>> from igax.solvers._partition import partition
        >>> K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (10, 10)).tocsr()
        >>> p = partition(SparseMatrix.from_scipy(K).pattern, 2, "natural")
        >>> p.nloc, p.offsets, p.widths, p.halo_entries()      # one ghost each way
        (5, (-1, 1), (1, 1), 2)
    """
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}.")
    if not isinstance(ndev, int) or ndev < 1:
        raise ValueError(f"ndev must be a positive int, got {ndev!r}.")
    if ordering != "auto":
        return _build(pattern, ndev, ordering)
    natural = _build(pattern, ndev, "natural")
    if ndev == 1:
        return natural
    rcm = _build(pattern, ndev, "rcm")
    return rcm if rcm.halo_entries() < natural.halo_entries() else natural
