"""Sum-factorised assembly that writes the CSR values chunk by chunk (scalar 2D patches), with no band.

:func:`igax.fem.forms._sumfact_ops.contract` returns the whole band ``(rows, blocks, n_1, L_0, L_1)`` (its
output buffer zeroed, then written chunk by chunk) and :mod:`igax.fem.forms.sumfact` gathers the CSR values
from it through an index of ``nnz`` entries: on degree 3 with 250k DOFs, 100 MB zeroed, 100 MB written,
then 48 MB of index and 100 MB of band read and 97 MB written, about 80 ms of a 460 ms assembly (CPU time).
Here each chunk writes its finished rows' CSR values straight into the result (an in-place
``dynamic_update_slice`` of a carried buffer), read from the chunk's rows while they are in cache.

For a scalar space the CSR rows of a direction-0 row ``i_0`` are one contiguous segment, and its entries
are the chunk's band rows read through an index that is the same for every chunk in the interior
(translation). The chunks run backwards (``lax.scan(reverse=True)``): a chunk of elements ``[s, s + blk)``
finishes the rows ``[s + p, s + blk + p)`` (the rows below still wait for earlier elements) and carries
``[s, s + p)``. Its segment is written *end-aligned* at a fixed length ``Lmax`` (the longest chunk's): a
chunk with shorter rows (the last rows of the patch) writes its values at the end and filler before them,
over rows that chunks run later (and the first ``p`` rows, written from the final carry) overwrite with
their values. So every write has one static size, the writes never run past either end of the buffer, and
there are as many gather indices as there are distinct chunk shapes (2-4), found on the host.

The map is the same linear map of the same chunk contractions, so derivatives are JAX's of the scan (the
transpose of each write is a slice of the cotangent, the transpose of each read a scatter into the chunk's
rows). :func:`csr_layout` says whether a case qualifies (None otherwise: the band and one gather).
"""

from __future__ import annotations

import weakref

import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.forms._sumfact_band import BandSpec, band
from igax.fem.forms._sumfact_ops import ChunkDirection, _weights_factor

__all__ = ["CSRLayout", "csr_layout", "half_index", "contract_csr"]

# The most distinct chunk shapes (gather indices) for which the layout is used.
_MAX_CLASSES = 8
_LAYOUTS: dict = {}  # (plan id, blocks, chunk size) -> (weakref to the plan, CSRLayout or None)


class CSRLayout:
    """Where each chunk's CSR values go and where they are read (host arrays).

    Attributes:
        tables: ``(K, Lmax)`` int32, per chunk shape the positions in the chunk's rows ``(blk + p, R)``
            (flattened) of the values it writes, right-aligned (filler positions in front, distinct).
        cls, offsets: ``(nchunks,)`` the shape of each chunk and where its segment starts in the values.
        head: positions in the first ``p`` rows of the values ``[0, len(head))``.
        nnz: the number of values.
    """

    def __init__(self, tables, cls, offsets, head, nnz: int):
        self.tables, self.cls, self.offsets, self.head, self.nnz = tables, cls, offsets, head, int(nnz)


def half_index(sf, idx):
    """The CSR index into the half band (``delta_0 >= p_0``; 2D, one block) from the one into the whole
    band: an entry with ``delta_0 < p_0`` reads its mirror ``(j, 2p - delta)`` (a symmetric matrix)."""
    d0, d1 = sf.dirs
    idx = np.asarray(idx, dtype=np.int64)
    q, e1 = np.divmod(idx, d1.L)
    q, e0 = np.divmod(q, d0.L)
    i0, i1 = np.divmod(q, d1.n)
    low = e0 < d0.p
    r0 = np.where(low, i0 + e0 - d0.p, i0)
    r1 = np.where(low, i1 + e1 - d1.p, i1)
    f0 = np.where(low, 2 * d0.p - e0, e0) - d0.p
    f1 = np.where(low, 2 * d1.p - e1, e1)
    return ((r0 * d1.n + r1) * (d0.p + 1) + f0) * d1.L + f1


def csr_layout(sf, chunks, idx, indptr, half: bool = False) -> CSRLayout | None:
    """The chunk-wise CSR layout of a scalar patch, or None where it does not apply (more than one component,
    a pattern that is not the band's, or more than ``_MAX_CLASSES`` chunk shapes).

    Arguments:
        sf: the :class:`~igax.fem.forms._sumfact_plan.SumFactPlan`; chunks: its chunks of direction 0.
        idx: the CSR index into the band (:func:`~igax.fem.forms._sumfact_plan.csr_index`, one block, plain).
        indptr: the pattern's row pointers.
        half: the chunks compute the half band (``delta_0 >= p_0``): the reads are mapped to it
            (:func:`half_index`, applied to the few distinct chunk shapes only: on the whole index it took
            5.7 s of host time at 250k DOFs).

    Returns:
        A :class:`CSRLayout`, or None.

    Example (a degree-2 patch of 12 x 12 elements in chunks of 4: three chunk shapes):
        >>> import numpy as np
        >>> from igax.fem import SplineSpace, geometry
        >>> from igax.fem.forms._sumfact_plan import sumfact_plan
        >>> from igax.fem.forms._sumfact_csr import csr_layout
        >>> V = SplineSpace(geometry.rectangle().refine(degree=2, elements=12))
        >>> sf = sumfact_plan(V)
        >>> lay = csr_layout(sf, sf.chunks(4), sf.csr(((0, 0),)), V.plan.pattern.indptr)
        >>> lay.tables.shape[0] <= 4, lay.nnz == V.plan.pattern.nnz
        (True, True)
    """
    dirs = sf.dirs
    d0 = dirs[0]
    p, blk, n0 = d0.p, chunks.size, d0.n
    N1 = int(np.prod([dd.n for dd in dirs[1:]]))
    R = N1 * int(np.prod([dd.L for dd in dirs]))  # one direction-0 row of the band (one block)
    indptr = np.asarray(indptr, dtype=np.int64)
    if indptr.shape[0] != n0 * N1 + 1:
        return None  # several components: a row's CSR entries are not one segment
    idx = np.asarray(idx, dtype=np.int64)
    nnz = int(indptr[-1])
    rowptr = indptr[np.arange(n0 + 1) * N1]
    segs = []
    for c in range(chunks.nchunks):
        s = c * blk
        lo, hi = min(s + p, n0), min(s + blk + p, n0)
        g = idx[rowptr[lo] : rowptr[hi]] - s * R  # positions in the chunk's rows [s, s + blk + p)
        if g.size and (g.min() < 0 or g.max() >= (blk + p) * R):  # pragma: no cover - the band's pattern
            return None
        segs.append((int(rowptr[hi]), g))
    Lmax = max(g.size for _, g in segs)
    keys: dict = {}
    tables, cls, offsets = [], [], []
    for end, g in segs:
        off = end - Lmax
        if off < 0:
            return None  # the first chunk's rows are shorter than the longest: the write would be clamped
        fill = Lmax - g.size
        if fill and half:  # entries are read twice anyway: any filler position
            g = np.concatenate([np.zeros(fill, np.int64), g])
        elif fill:
            free = np.setdiff1d(np.arange((blk + p) * R), g)[:fill]  # distinct filler positions
            if free.size < fill:  # pragma: no cover - the rows hold more positions than values
                return None
            g = np.concatenate([free, g])
        key = g.tobytes()
        if key not in keys:
            keys[key] = len(tables)
            tables.append(g if not half else np.concatenate([g[:fill], half_index(sf, g[fill:])]))
        cls.append(keys[key])
        offsets.append(off)
    if len(tables) > _MAX_CLASSES:
        return None
    head = idx[: rowptr[min(p, n0)]]
    if half:  # positions in the half band's rows (translation-invariant: local positions map alike)
        head = half_index(sf, head)
        R = N1 * (p + 1) * int(np.prod([dd.L for dd in dirs[1:]]))
        if max(int(t.max()) for t in tables) >= (blk + p) * R or min(int(t.min()) for t in tables) < 0:
            return None  # pragma: no cover - the mirrors of a chunk's entries lie in its rows
    if head.size and head.max() >= p * R:  # pragma: no cover - the first p rows read only themselves
        return None
    dt = np.int32 if (blk + p) * R < 2**31 and nnz < 2**31 else np.int64
    lay = CSRLayout(np.stack(tables).astype(dt), np.asarray(cls, np.int32), np.asarray(offsets, dt),
                    head.astype(dt), nnz)  # fmt: skip
    lay.unique = not half  # the half band's entries are read twice (an entry and its mirror)
    return lay


def cached_layout(space, sf, chunks, blocks, half: bool = False) -> CSRLayout | None:
    """:func:`csr_layout` for a space's plan, cached per chunk size (None where it does not apply)."""
    key = (id(space.plan), blocks, chunks.size, half)
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0]() is space.plan:
        return hit[1]
    lay = csr_layout(sf, chunks, sf.csr(blocks), space.plan.pattern.indptr, half)
    while len(_LAYOUTS) >= 8:
        _LAYOUTS.pop(next(iter(_LAYOUTS)))
    _LAYOUTS[key] = (weakref.ref(space.plan), lay)
    return lay


def contract_csr(sf, chunk_D, sched: list, chunks, nblocks: int, dtype, layout: CSRLayout, weights=None,
                 windows=None, half: bool = False):  # fmt: skip
    """The CSR values of a bilinear form on a scalar patch (see the module docstring); the arguments as
    :func:`igax.fem.forms._sumfact_ops.contract` takes them, the :class:`CSRLayout`, and ``half``: the
    chunks compute the half band of a symmetric matrix (the layout built for it; no ``weights``)."""
    dirs = sf.dirs
    d0 = dirs[0]
    blk, p0 = chunks.size, d0.p
    tables = [[dirs[st["k"]].band_table(fl) for _, fl in st["outs"]] for st in sched]
    tables[-1] = [np.pad(A, [(0, chunks.pad)] + [(0, 0)] * (A.ndim - 1)) for A in tables[-1]]
    spec = BandSpec(dirs, sched, tables, blk, nblocks, sum(len(m) for m, _ in sched[0]["outs"]), dtype, half)
    rest = spec.rest
    wpad = None
    if weights is not None:
        wpad = jnp.pad(
            weights, [(dd.p, dd.p + (chunks.pad if k == 0 else 0)) for k, dd in enumerate(dirs)], mode="edge"
        )
    reads = jnp.asarray(layout.tables)

    def work(start, window):
        D = chunk_D(ChunkDirection(chunks, d0, start), start, window)
        slab = band(D, start, spec)  # (blk + p, blocks, n_1, ..., L_0, ...): rows [start, start + blk + p)
        if wpad is not None:
            slab = slab * _weights_factor(wpad, dirs, start, blk + p0)[:, None]
        return slab

    def nothing(start, window):  # a chunk past the elements: only the carried rows move on
        return jnp.zeros((blk + p0, nblocks) + rest, dtype)

    def body(carry, xs):
        pending, out = carry
        start, window, c, off = xs
        slab = jax.lax.cond(start < chunks.nv, work, nothing, start, window)
        # The rows [start + blk, start + blk + p) also hold the later chunk's contributions (pending).
        full = jnp.concatenate([slab[:blk], slab[blk:] + pending]) if p0 else slab
        vals = full.reshape(-1).at[reads[c]].get(mode="promise_in_bounds", unique_indices=layout.unique)
        out = jax.lax.dynamic_update_slice_in_dim(out, vals, off, axis=0)
        return (full[:p0], out), None

    # Rematerialised under differentiation, as in contract: the backward loop recomputes a chunk's tables.
    body = jax.checkpoint(body, prevent_cse=False)
    pending = jnp.zeros((p0, nblocks) + rest, dtype)
    out = jnp.zeros(layout.nnz, dtype)
    starts = jnp.asarray(np.arange(chunks.nchunks, dtype=np.int32) * blk)
    xs = (starts, windows, jnp.asarray(layout.cls), jnp.asarray(layout.offsets))
    (pending, out), _ = jax.lax.scan(body, (pending, out), xs, reverse=True)
    head = pending.reshape(-1).at[jnp.asarray(layout.head)]
    head = head.get(mode="promise_in_bounds", unique_indices=layout.unique)
    return jax.lax.dynamic_update_slice_in_dim(out, head, 0, axis=0)
