"""The array work of sum factorisation on a tensor-product spline patch (JAX; the evaluation also in NumPy).

Grid layout: quadrature points are indexed direction by direction, ``(Nq_0, ..., Nq_{d-1})`` with
``Nq_k = nv_k nq_k`` (virtual elements times Gauss points, see
:class:`~igax.fem.forms._sumfact_plan.Direction`),
so a direction's points are one axis, and point arrays keep that axis last ("structure of arrays").

- :func:`evaluate`: coefficients on the control net ``(n_0, ..., n_{d-1}, C)`` -> values and first
  parametric derivatives at the grid points, one direction at a time (``p + 1`` multiply-adds per point and
  direction instead of ``(p + 1)^d``); :func:`evaluate_adjoint` is its transpose.
- :func:`contract`: kernel matrices at the points -> the band of the global matrix,
  ``(blocks, n_0, ..., n_{d-1}, L_0, ..., L_{d-1})`` with ``j_k = i_k + delta_k - p_k``: per chunk of
  direction-0 elements, directions ``d-1, ..., 1`` whole and then direction 0, each step one batched matrix
  product per group of states with the direction's band tables, the element rows added into the band as
  shifted slices, and the states that became equal summed (:func:`igax.fem.forms._sumfact_plan.scalar_steps`).

Why slices and products only: every "sum over the elements that share a function" is a sum of shifted
slices of a uniform (virtual) element layout, never a gather or a scatter-add, so XLA runs it at memory
speed and its derivatives (pads, slices, products) are as cheap; the element-wise path scatters
``nel (C (p + 1)^d)^2`` entries, this one none.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.forms._sumfact_band import BandSpec, band
from igax.fem.forms._sumfact_plan import Chunks, Direction, SumFactPlan

__all__ = ["evaluate", "evaluate_adjoint", "contract", "barrier", "materialize", "ChunkDirection"]


# -- evaluation at the grid points ---------------------------------------------------------------------------
# Arrays are contracted along their leading axis and the result's point axis is moved to the end, so the
# multiply-adds run over a long contiguous inner axis (vectorised), and after all directions the layout is
# (channels, Nq_0, ..., Nq_{d-1}): "structure of arrays", which the pointwise code downstream wants too.
def _lead(G, dd: Direction, X, xp, token=None):
    """``(n, R...) -> (R..., Nq)``: ``out[r, (v, t)] = sum_a X[v, t, a] G[v + a, r]`` (shifted slices)."""
    X = xp.asarray(X, dtype=G.dtype)
    tail = (1,) * (G.ndim - 1)
    out = sum(X[:, :, a].reshape((dd.nv, dd.nq) + tail) * G[a : a + dd.nv, None] for a in range(dd.p + 1))
    out = xp.moveaxis(out.reshape((dd.nv * dd.nq,) + G.shape[1:]), 0, -1)
    # Stored once: the next direction reads it in p + 1 shifted slices, and a fused producer would be
    # recomputed in each (the barrier alone does not hold on CPU, see materialize).
    return barrier(out) if token is None else materialize(out, token)


def barrier(x):
    """``x``, materialised: XLA would otherwise fuse a producer into each of its consumers and recompute it
    (a direction's partial result into the ``p + 1`` shifted slices of the next: 6x slower in 2D)."""
    return (
        jax.lax.optimization_barrier(x) if isinstance(x, jax.Array) and not isinstance(x, np.ndarray) else x
    )


def materialize(tree, token):
    """``tree``'s arrays, computed once into memory: passed through a ``lax.cond`` on ``token >= 0`` (an
    integer known only at run time, always true), whose boundary XLA cannot fuse across.

    Why: XLA on CPU fuses an elementwise producer into every consumer and recomputes it there, and its CPU
    pipeline removes ``optimization_barrier`` before fusion (so :func:`~igax.fem.forms._sumfact_ops.barrier`
    no longer holds): the geometry's evaluation was recomputed in each of the ~10 fusions that read it (the
    inverse Jacobian, each group of states of ``D``). A conditional's result is a buffer.

    Arguments:
        tree: a pytree; its traced arrays are stored, anything else (flags, NumPy constants) kept as is.
        token: a traced integer that is never negative (a chunk's start).

    Returns:
        ``tree`` with the same values.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    traced = [i for i, a in enumerate(leaves) if isinstance(a, jax.core.Tracer)]  # not flags, NumPy constants
    if not traced:
        return tree
    arrays = [leaves[i] for i in traced]
    arrays = jax.lax.cond(token >= 0, lambda t: t, lambda t: [jnp.zeros_like(a) for a in t], arrays)
    for i, a in zip(traced, arrays, strict=True):
        leaves[i] = a
    return jax.tree_util.tree_unflatten(treedef, leaves)


def evaluate(dirs: list, coef, derivs: bool = True, xp=jnp, token=None) -> list:
    """Values and first parametric derivatives of ``coef`` (control net ``(n_0, ..., n_{d-1}, C)``).

    Returns ``[value, d/du_0, ..., d/du_{d-1}]``, each ``(C, Nq_0, ..., Nq_{d-1})``, or ``[value]`` without
    ``derivs``. The partial contractions are shared between the ``d + 1`` results; with ``token`` (a traced,
    never negative integer) each is stored once (:func:`materialize`).
    """
    cur = [(None, coef)]  # (derivative direction or None, partially evaluated array)
    for k, dd in enumerate(dirs):
        nxt = []
        for j, G in cur:
            nxt.append((j, _lead(G, dd, dd.B, xp, token)))
            if derivs and j is None:
                nxt.append((k, _lead(G, dd, dd.dB, xp, token)))
        cur = nxt
    by = dict(cur)
    return [by[None]] + ([by[k] for k in range(len(dirs))] if derivs else [])


def _lead_adjoint(G, dd: Direction, X, xp):
    """The transpose of :func:`_lead`: ``(R..., Nq) -> (n, R...)``."""
    X = xp.asarray(X, dtype=G.dtype)
    G = xp.moveaxis(G, -1, 0)
    G = G.reshape((dd.nv, dd.nq) + G.shape[1:])
    tail = (1,) * (G.ndim - 2)
    out = 0
    for a in range(dd.p + 1):
        Ha = (X[:, :, a].reshape((dd.nv, dd.nq) + tail) * G).sum(axis=1)  # (nv, R...)
        out = out + xp.pad(Ha, [(a, dd.p - a)] + [(0, 0)] * (Ha.ndim - 1))
    return out


def evaluate_adjoint(dirs: list, parts: list, xp=jnp):
    """The transpose of :func:`evaluate`: ``[value, d/du_0, ...]`` cotangents ``(C, grid)`` -> ``(n..., C)``.

    Entries may be None (no contribution).
    """
    cur = [(None if j == 0 else j - 1, G) for j, G in enumerate(parts) if G is not None]
    for k in range(len(dirs) - 1, -1, -1):
        dd = dirs[k]
        acc: dict = {}
        for j, G in cur:
            out = _lead_adjoint(G, dd, dd.dB if j == k else dd.B, xp)
            key = None if j == k else j
            acc[key] = out if key not in acc else acc[key] + out
        cur = list(acc.items())
    ((_, out),) = cur
    return out


# -- the banded contraction ----------------------------------------------------------------------------------
class ChunkDirection:
    """Direction 0 restricted to one chunk of ``chunks.size`` virtual elements from ``start`` (traced)."""

    def __init__(self, chunks: Chunks, dd: Direction, start):
        size = chunks.size
        self.p, self.nq, self.nv, self.n, self.L = dd.p, dd.nq, size, size + dd.p, dd.L
        self.uniform = chunks.uniform

        def cut(a):
            return jax.lax.dynamic_slice_in_dim(jnp.asarray(a), start, size, axis=0)

        self.B, self.dB, self.wq = cut(chunks.B), cut(chunks.dB), cut(chunks.wq)
        self.real = None if chunks.uniform else cut(chunks.real)


def _weights_factor(wpad, dirs, start, rows: int):
    """``w_i w_j`` on a slab's layout ``(rows, n_1, ..., n_{d-1}, L_0, ..., L_{d-1})`` (``i_0 = start + r``,
    ``j = i + delta - p``; ``wpad``: the weights padded by ``p_k`` on both sides of every direction)."""
    d = len(dirs)
    p0 = dirs[0].p
    blockw = jax.lax.dynamic_slice_in_dim(wpad, start, rows + 2 * p0, axis=0)
    wi = blockw[p0 : p0 + rows]
    for k, dd in enumerate(dirs[1:], 1):
        wi = jax.lax.slice_in_dim(wi, dd.p, dd.p + dd.n, axis=k)
    wj = blockw
    for k, dd in enumerate(dirs):
        size = rows if k == 0 else dd.n
        wj = jnp.stack(
            [jax.lax.slice_in_dim(wj, delta, delta + size, axis=k) for delta in range(dd.L)], axis=-1
        )
    return wi.reshape(wi.shape + (1,) * d) * wj


def contract(
    sf: SumFactPlan, chunk_D, sched: list, chunks: Chunks, nblocks: int, dtype, weights=None, windows=None
):
    """The band of a bilinear form, ``(rows, blocks, n_1, ..., n_{d-1}, L_0, ..., L_{d-1})`` with
    ``rows = chunks.nchunks * chunks.size >= n_0`` (the rows beyond ``n_0`` are zero).

    A ``lax.scan`` over chunks of direction-0 elements: each iteration computes the kernel matrices of the
    chunk's points (``chunk_D(dir0_chunk, start, window)`` -> ``(S, blocks, size nq_0, Nq_1, ...)``;
    ``window``: chunk ``c``'s entry of ``windows``, a pytree of arrays whose leading axis is the chunks),
    contracts directions ``d-1, ..., 1`` whole and then direction 0
    (:func:`igax.fem.forms._sumfact_band.band`, a primitive whose transpose is the transposed sum
    factorisation), adds the ``p`` rows the previous chunk left unfinished, emits the ``size`` rows it
    finished and carries the next ``p``. Nothing large is carried, so reverse-mode differentiation neither
    stores nor copies the result per iteration; no operation is a scatter. Chunks beyond the elements only
    pass the unfinished rows on. ``weights``: the control-point weights of a
    rational patch (entries are multiplied by ``w_i w_j``), or None.
    """
    dirs = sf.dirs
    d0 = dirs[0]
    blk, p0 = chunks.size, d0.p
    tables = [[dirs[st["k"]].band_table(fl) for _, fl in st["outs"]] for st in sched]
    # Direction 0's tables over the padded elements (zeros beyond the last one): a chunk reads its ``blk``
    # rows from ``start`` and must not be clamped back when ``blk`` does not divide the elements.
    tables[-1] = [np.pad(A, [(0, chunks.pad)] + [(0, 0)] * (A.ndim - 1)) for A in tables[-1]]
    spec = BandSpec(dirs, sched, tables, blk, nblocks, sum(len(m) for m, _ in sched[0]["outs"]), dtype)
    rest = spec.rest  # a row: (n_1.., L_0, L_1..)
    wpad = None
    if weights is not None:
        wpad = jnp.pad(
            weights, [(dd.p, dd.p + (chunks.pad if k == 0 else 0)) for k, dd in enumerate(dirs)], mode="edge"
        )

    def work(pending, start, window):
        D = chunk_D(ChunkDirection(chunks, d0, start), start, window)  # (S, blocks, q_0, ..., q_{d-1})
        slab = band(D, start, spec)  # (blk + p, blocks, n_1, ..., L_0, ...)
        if wpad is not None:
            slab = slab * _weights_factor(wpad, dirs, start, blk + p0)[:, None]
        return slab

    def nothing(pending, start, window):  # a chunk past the elements: only the unfinished rows move on
        return jnp.zeros((blk + p0,) + pending.shape[1:], pending.dtype)

    def body(pending, xs):
        start, window = xs
        slab = jax.lax.cond(start < chunks.nv, work, nothing, pending, start, window)
        full = jnp.concatenate([slab[:p0] + pending, slab[p0:]]) if p0 else slab
        return full[blk:], full[:blk]

    # Differentiated, the loop body is rematerialised: the backward loop recomputes a chunk's geometry and
    # kernel matrices instead of storing them per chunk. The matrix is linear in the kernel matrices, so an
    # assembly VJP then runs no forward loop at all (XLA drops it: nothing of it is used), where it ran the
    # whole forward contraction to store the residuals: VJP 163 -> 105 ms on 200 x 200 degree-2 elements
    # (2 cores; the forward assembly 75 ms); gradients of assemble + solve unchanged, and no per-chunk
    # residuals in memory.
    body = jax.checkpoint(body, prevent_cse=False)
    pending = jnp.zeros((p0, nblocks) + rest, dtype)
    starts = jnp.asarray(np.arange(chunks.nchunks, dtype=np.int32) * blk)
    _, rows = jax.lax.scan(body, pending, (starts, windows))
    return rows.reshape((chunks.nchunks * blk, nblocks) + rest)
