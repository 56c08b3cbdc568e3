"""Galerkin coarse operators of a multigrid hierarchy: index maps on the host, values in JAX.

For each transfer ``P`` (level k+1 -> k) and the pattern of ``A_k``, :func:`make_plan` computes once in NumPy
the pattern of ``B = A_k P``, of ``A_{k+1} = P^T B``, and two int32 maps: the slot in ``B`` of every term
``A_il P_lj`` and the slot in ``A_{k+1}`` of every term ``P_ia B_ij``. :func:`operators` then turns any new
``A.values`` into the values of every level with two gathers, two products and two ``segment_sum`` per level.

Sizes (2D degree-2 spline Laplacian, 25 entries a row, ``P`` with 4 a row): the one-shot map from fine to
coarse entries would hold ``nnz(A) * 16`` = 400 terms a fine dof; the two stages hold
``nnz(A) * 4 + nnz(A P) * 4`` = 100 + 64 = 164 (``nnz(A P)`` is about 16 a row). The rows of ``P`` are stored
padded to the longest (ELL), which wastes terms where rows differ (bilinear transfers have rows of 1, 2 or 4
entries, 2.25 on average, padded to 4) but needs one index array per stage instead of three. The maps reach
the compiled program as arguments (:class:`LevelArrays`), never as constants, which XLA would fold slowly
(1.1 s of compile for a 20M-entry constant on 2 cores).

Host cost, once per (hierarchy, pattern): the slots are found by ``searchsorted`` on the sorted keys
``row * ncols + col`` of the product patterns (about 1.4 s CPU for the 26M terms of the first level of a
262k-dof degree-2 spline Laplacian; a sort-based construction measured the same).
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
    a_cols: jax.Array  # (nnz(A_k),) int32: column of each entry of A_k
    b_slot: jax.Array  # (nnz(A_k) * r,) int32: slot of each term of A_k P_k in B (nnz(B) for padding)
    b_rows: jax.Array  # (nnz(B),) int32: row (level k) of each entry of B = A_k P_k
    c_slot: jax.Array  # (nnz(B) * r,) int32: slot of each term of P_k^T B in A_{k+1}


class Static(NamedTuple):
    """Hashable structure of a plan: the patterns of all levels and the sizes of B."""

    patterns: tuple  # CSRPattern of every level (level 0: the fine pattern)
    b_nnz: tuple  # nnz(A_k P_k) per transfer
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
        # Stage 1: B = A P. Term (e, s) of fine entry e = (i, l) and the s-th entry of row l of P.
        p_idx, p_val = _ell(P)
        r = p_idx.shape[1]
        Bs = (_structure(pat) @ Ps).tocsr()
        Bs.sort_indices()
        b_pat = CSRPattern(Bs.indptr, Bs.indices, Bs.shape)
        counts = np.diff(P.indptr)
        a_cols = pat.indices
        valid = (np.arange(r)[None, :] < counts[a_cols][:, None]).ravel()
        b_slot = _slots(np.repeat(pat.rows, r), p_idx[a_cols].ravel(), valid, b_pat)
        # Stage 2: C = P^T B. Term (f, s) of B's entry f = (l, j) and the s-th entry (l, a) of row l of P.
        Cs = (Ps.T @ Bs).tocsr()
        Cs.sort_indices()
        c_pat = CSRPattern(Cs.indptr, Cs.indices, Cs.shape)
        b_rows = b_pat.rows
        valid = (np.arange(r)[None, :] < counts[b_rows][:, None]).ravel()
        c_slot = _slots(p_idx[b_rows].ravel(), np.repeat(b_pat.indices, r), valid, c_pat)
        pt_idx, pt_val = _ell(sp.csr_matrix(P.T))
        with jax.ensure_compile_time_eval():  # concrete arrays even when planned while a caller traces
            ints = (np.asarray(a, np.int32) for a in (a_cols, b_slot, b_rows, c_slot))
            arrays.append(LevelArrays(*(jax.device_put(a) for a in (p_idx, p_val, pt_idx, pt_val, *ints))))
        b_nnz.append(b_pat.nnz)
        patterns.append(c_pat)
    static = Static(tuple(patterns), tuple(b_nnz), tuple(sorted(options.items())))
    return Plan(static, tuple(arrays))


# -- value work (traced) -------------------------------------------------------------------------------------
def galerkin_values(arr: LevelArrays, values: jax.Array, b_nnz: int, c_nnz: int) -> jax.Array:
    """Values of ``P^T A P`` on the coarse pattern from those of ``A`` (two gathers, two segment sums)."""
    dt = values.dtype
    t = values[:, None] * arr.p_val.astype(dt)[arr.a_cols]  # (nnz_A, r)
    bv = jax.ops.segment_sum(t.ravel(), arr.b_slot, num_segments=b_nnz + 1)[:b_nnz]
    t = arr.p_val.astype(dt)[arr.b_rows] * bv[:, None]  # (nnz_B, r)
    return jax.ops.segment_sum(t.ravel(), arr.c_slot, num_segments=c_nnz + 1)[:c_nnz]


def operators(static: Static, arrays: tuple, values: jax.Array) -> list[SparseMatrix]:
    """The matrices of all levels, ``[A_0, A_1, ...]``, from the fine values (traceable)."""
    pats = static.patterns
    out = [SparseMatrix(values, pats[0], symmetric=True)]
    for k, arr in enumerate(arrays):
        v = galerkin_values(arr, out[-1].values, static.b_nnz[k], pats[k + 1].nnz)
        out.append(SparseMatrix(v, pats[k + 1], symmetric=True))
    return out
