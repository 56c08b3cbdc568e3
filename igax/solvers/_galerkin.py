"""Galerkin coarse operators of a multigrid hierarchy: index maps on the host, values in JAX.

``A`` is symmetric, so ``P^T A P = C + C^T`` with ``C = P^T L P`` and ``L`` the lower triangle of ``A`` with
half its diagonal. For each transfer ``P`` (level k+1 -> k) and the pattern of ``A_k``, :func:`make_plan`
computes once in NumPy the pattern of ``B = L P`` and of ``P^T A_k P``, and two int32 maps: the slot in ``B``
of every term ``L_il P_lj`` and the slot in ``A_{k+1}`` of every term ``P_ia B_ij``. :func:`galerkin_values`
then turns any new ``A.values`` into the coarse values with two gathers, two products, two ``segment_sum``
and one permutation (``C + C^T``, exactly symmetric).

Terms per fine dof (2D degree-2 spline Laplacian, 24.8 entries a row, ``P`` with 4 a row): a one-shot map
from fine to coarse entries would hold ``24.8 * 16`` = 400; the two stages with the whole of ``A``,
``24.8 * 4 + nnz(A P) * 4`` = 164; with the lower triangle, 51.5 + 45.3 = 97 (degree 1: 39, degree 3: 410).
The rows of ``P`` are stored padded to the longest (ELL), which wastes terms where rows differ (bilinear
transfers have rows of 1, 2 or 4 entries, 2.25 on average, padded to 4; cubic ones 4, 6 or 9, padded to 9) but
needs one index array per stage instead of three. The maps reach the compiled program as arguments
(:class:`LevelArrays`), never as constants, which XLA would fold slowly (1.1 s of compile for a 20M-entry
constant on 2 cores). Measured (CPU seconds, shared 2-core machine): the Galerkin values of all levels of a
262k-dof degree-2 spline Laplacian take 0.24 s (0.42 s with the whole of ``A``).

Host cost, once per (hierarchy, pattern): the slots are found by ``searchsorted`` on the sorted keys
``row * ncols + col`` of the product patterns (2.1 s CPU for all levels at 262k degree-2 dofs; a sort-based
construction measured the same).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
import scipy.sparse as sp

from igax.solvers.sparse import CSRPattern, SparseMatrix


# -- the host plan -------------------------------------------------------------------------------------------
class LevelArrays(NamedTuple):
    """Device arrays of one transfer (level k -> k + 1); a pytree passed to compiled programs as arguments."""

    p_idx: jax.Array  # (n_k, r) int32: ELL of P_k (padding: column 0, value 0)
    p_val: jax.Array  # (n_k, r)
    pt_idx: jax.Array  # (n_{k+1}, rt) int32: ELL of P_k^T
    pt_val: jax.Array  # (n_{k+1}, rt)
    a_sel: jax.Array  # (nnz(L),) int32: the entries of A_k on and below the diagonal (L = tril(A_k))
    a_diag: jax.Array  # (n_k,) int32: slots of the diagonal of A_k
    a_cols: jax.Array  # (nnz(L),) int32: their columns
    b_slot: jax.Array  # (nnz(L) * r,) int32: slot of each term of L P_k in B (nnz(B) for padding)
    b_rows: jax.Array  # (nnz(B),) int32: row (level k) of each entry of B = L P_k
    c_slot: jax.Array  # (nnz(B) * r,) int32: slot of each term of P_k^T B in A_{k+1}
    c_perm: jax.Array  # (nnz(A_{k+1}),) int32: the transpose permutation of the coarse pattern


class Static(NamedTuple):
    """Hashable structure of a plan: the patterns of all levels and the sizes of B."""

    patterns: tuple  # CSRPattern of every level (level 0: the fine pattern)
    b_nnz: tuple  # nnz(L_k P_k) per transfer
    options: tuple


class Plan(NamedTuple):
    """A hierarchy's structure for one fine pattern: hashable ``static`` part and device ``arrays``."""

    static: Static
    arrays: tuple  # LevelArrays per transfer


def _ell(P: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """``(idx, val)`` of shape ``(nrows, r)``: each row's columns and values, padded with (0, 0.0)."""
    counts = np.diff(P.indptr)
    r = max(int(counts.max(initial=0)), 1)
    pos = np.arange(P.nnz) - np.repeat(P.indptr[:-1], counts)
    rows = np.repeat(np.arange(P.shape[0]), counts)
    idx = np.zeros((P.shape[0], r), np.int32)
    val = np.zeros((P.shape[0], r), np.float64)
    idx[rows, pos] = P.indices
    val[rows, pos] = P.data
    return idx, val


def _slots(rows, cols, valid, pattern: CSRPattern, chunk: int = 1 << 23) -> np.ndarray:
    """CSR slot of each (rows, cols) pair of ``pattern`` (all present), ``pattern.nnz`` where not valid.

    Keys ``row * ncols + col`` of the sorted pattern are searched in chunks (bounded host memory).
    """
    ncols = np.int64(pattern.shape[1])
    keys = pattern.rows.astype(np.int64) * ncols + pattern.indices
    out = np.empty(rows.shape[0], np.int32)
    for s in range(0, rows.shape[0], chunk):
        q = rows[s : s + chunk].astype(np.int64) * ncols + cols[s : s + chunk]
        slot = np.searchsorted(keys, q)
        out[s : s + chunk] = np.where(valid[s : s + chunk], slot, pattern.nnz)
    return out


def _structure(pattern: CSRPattern) -> sp.csr_matrix:
    return sp.csr_matrix(
        (np.ones(pattern.nnz, np.float64), pattern.indices, pattern.indptr), shape=pattern.shape
    )


def make_plan(prolongations, options: dict, sizes, pattern: CSRPattern) -> Plan:
    """The structural data of a hierarchy (its ``prolongations``, finest first) for the fine ``pattern``."""
    patterns = [pattern]
    arrays = []
    b_nnz = []
    for P in prolongations:
        pat = patterns[-1]
        if P.shape[0] != pat.shape[0]:
            raise ValueError(f"the hierarchy's sizes {sizes} do not match A of shape {pattern.shape}.")
        Ps = sp.csr_matrix((np.ones(P.nnz), P.indices, P.indptr), shape=P.shape)
        # A is symmetric: P^T A P = C + C^T with C = P^T L P and L = tril(A) with half its diagonal, which
        # has about half the terms of P^T A P.
        lower = pat.rows >= pat.indices
        a_sel = np.flatnonzero(lower)
        L = sp.csr_matrix(
            (
                np.ones(a_sel.size),
                pat.indices[a_sel],
                np.concatenate([[0], np.cumsum(np.bincount(pat.rows[a_sel], minlength=pat.shape[0]))]),
            ),
            shape=pat.shape,
        )
        # Stage 1: B = L P. Term (e, s) of entry e = (i, l) of L and the s-th entry of row l of P.
        p_idx, p_val = _ell(P)
        r = p_idx.shape[1]
        Bs = (L @ Ps).tocsr()
        Bs.sort_indices()
        b_pat = CSRPattern(Bs.indptr, Bs.indices, Bs.shape)
        counts = np.diff(P.indptr)
        a_cols = pat.indices[a_sel]
        valid = (np.arange(r)[None, :] < counts[a_cols][:, None]).ravel()
        b_slot = _slots(np.repeat(pat.rows[a_sel], r), p_idx[a_cols].ravel(), valid, b_pat)
        # Stage 2: C = P^T B. Term (f, s) of B's entry f = (l, j) and the s-th entry (l, a) of row l of P;
        # its slot in the pattern of P^T A P (symmetric, and holding that of C).
        Cs = (Ps.T @ _structure(pat) @ Ps).tocsr()
        Cs.sort_indices()
        c_pat = CSRPattern(Cs.indptr, Cs.indices, Cs.shape)
        b_rows = b_pat.rows
        valid = (np.arange(r)[None, :] < counts[b_rows][:, None]).ravel()
        c_slot = _slots(p_idx[b_rows].ravel(), np.repeat(b_pat.indices, r), valid, c_pat)
        c_perm = c_pat.transpose()[1]
        a_diag = pat.diagonal_slots
        if np.any(a_diag < 0):
            raise ValueError("A must store its diagonal for mg-cg (every row needs a diagonal entry).")
        pt_idx, pt_val = _ell(sp.csr_matrix(P.T))
        with jax.ensure_compile_time_eval():  # concrete arrays even when planned while a caller traces
            ints = (np.asarray(a, np.int32) for a in (a_sel, a_diag, a_cols, b_slot, b_rows, c_slot, c_perm))
            arrays.append(LevelArrays(*(jax.device_put(a) for a in (p_idx, p_val, pt_idx, pt_val, *ints))))
        b_nnz.append(b_pat.nnz)
        patterns.append(c_pat)
    static = Static(tuple(patterns), tuple(b_nnz), tuple(sorted(options.items())))
    return Plan(static, tuple(arrays))


# -- value work (traced) -------------------------------------------------------------------------------------
def galerkin_values(arr: LevelArrays, values: jax.Array, b_nnz: int, c_nnz: int) -> jax.Array:
    """Values of ``P^T A P`` on the coarse pattern from those of ``A`` (two gathers, two segment sums)."""
    dt = values.dtype
    p_val = arr.p_val.astype(dt)
    low = values.at[arr.a_diag].multiply(0.5)[arr.a_sel]  # tril(A), half diagonal
    t = low[:, None] * p_val[arr.a_cols]  # (nnz_L, r)
    bv = jax.ops.segment_sum(t.ravel(), arr.b_slot, num_segments=b_nnz + 1)[:b_nnz]
    t = p_val[arr.b_rows] * bv[:, None]  # (nnz_B, r)
    c = jax.ops.segment_sum(t.ravel(), arr.c_slot, num_segments=c_nnz + 1)[:c_nnz]
    return c + c[arr.c_perm]  # C + C^T: exactly symmetric


def operators(static: Static, arrays: tuple, values: jax.Array) -> list[SparseMatrix]:
    """The matrices of all levels, ``[A_0, A_1, ...]``, from the fine values (traceable)."""
    pats = static.patterns
    out = [SparseMatrix(values, pats[0], symmetric=True)]
    for k, arr in enumerate(arrays):
        v = galerkin_values(arr, out[-1].values, static.b_nnz[k], pats[k + 1].nnz)
        out.append(SparseMatrix(v, pats[k + 1], symmetric=True))
    return out
