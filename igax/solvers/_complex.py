"""Complex linear solves through an equivalent real system of twice the size (the fallback).

Backends that take complex values natively (PARDISO's complex types, COCG; see
:attr:`igax.solvers.backends.Backend.complex_native`) do not come here unless ``complex_form="block"``
asks; SuperLU does by default, since SciPy's complex LU is the slower (measured below).

A complex system ``A x = b`` with ``A = Ar + i Ai``, ``x = xr + i xi`` is solved as the real system

    [[Ar,  Ai],   [ xr]   [br]
     [Ai, -Ar]] @ [-xi] = [bi]

(the second unknown is ``-xi``). This form, not ``[[Ar, -Ai], [Ai, Ar]]``, is chosen because it is symmetric
whenever ``A`` is complex symmetric (``A = A^T``, the Helmholtz case, impedance and PML terms included), so
the symmetric paths of the backends apply (PARDISO's symmetric indefinite factorisation, SuperLU's symmetric
ordering) and the transposed solve of a gradient is the forward solve. For a general complex ``A`` the block
matrix's transpose is the block form of ``A^T`` (transposed, not conjugated), and its transposed solve reuses
the one real factorisation, which is what ``custom_linear_solve`` needs.

Every step is a JAX operation on real arrays (a gather to build the block values, a concatenation of the
right-hand side, slices of the solution), so derivatives need no rule of their own: JAX differentiates the
real solve and the conversions, and ``jax.grad`` of a real loss of a complex solution with respect to real
parameters comes out right by JAX's own convention for complex numbers. The cost is a real system of ``2n``
unknowns and ``4 nnz`` entries: PARDISO's native complex factorisation of the same matrix took a third of the
time and half the memory (degree-2 splines, 99,856 unknowns, k = 40: 2.1 vs 6.5 s, 342 vs 696 MiB;
``benchmarks/bench_helmholtz.py --native``). Measured on a Helmholtz matrix (degree-3 splines, 96 x 96
elements, 9801 dofs, k = 40, impedance sides; 2 shared cores): SciPy's complex ``splu`` 7.9 s, the block
system with the same symmetric ordering 1.3 s (COLAMD: 14.3 vs 7.2 s); igax's solve of it 1.25 s with SuperLU,
0.47 s with PARDISO.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from igax.solvers.sparse import CSRPattern, SparseMatrix

__all__ = ["block_matrix", "is_complex", "from_block", "to_block"]


def is_complex(*dtypes) -> bool:
    """Whether any of ``dtypes`` is complex."""
    return any(jnp.issubdtype(d, jnp.complexfloating) for d in dtypes)


@functools.lru_cache(maxsize=32)
def _block_plan(pattern: CSRPattern) -> tuple[CSRPattern, np.ndarray]:
    """The ``(2n, 2n)`` pattern of the block matrix and, per block entry, its source in
    ``concat([Ar, Ai, -Ar])`` (host, cached per pattern: patterns hash by content)."""
    n = pattern.shape[0]
    nnz = pattern.nnz
    L = np.diff(pattern.indptr)
    rows = pattern.rows
    k = np.arange(nnz)
    j = k - pattern.indptr[rows]  # position of each entry within its row
    ptr = np.zeros(2 * n + 1, np.int64)
    np.cumsum(np.tile(2 * L, 2), out=ptr[1:])
    col = pattern.indices.astype(np.int64)
    top, bot = ptr[rows] + j, ptr[n + rows] + j
    indices = np.empty(4 * nnz, np.int64)
    src = np.empty(4 * nnz, np.int64)
    for pos, c, s in (
        (top, col, k),  # Ar
        (top + L[rows], n + col, nnz + k),  # Ai
        (bot, col, nnz + k),  # Ai
        (bot + L[rows], n + col, 2 * nnz + k),  # -Ar
    ):
        indices[pos] = c
        src[pos] = s
    return CSRPattern(ptr, indices, (2 * n, 2 * n)), src


def block_matrix(A: SparseMatrix, dtype) -> SparseMatrix:
    """The real block matrix ``[[Ar, Ai], [Ai, -Ar]]`` of ``A`` in the real dtype ``dtype`` (symmetric when
    ``A`` is flagged symmetric; never positive definite)."""
    pattern, src = _block_plan(A.pattern)
    v = A.values.astype(jnp.result_type(dtype, 1j))
    vr, vi = jnp.real(v), jnp.imag(v)
    values = jnp.concatenate([vr, vi, -vr])[src]
    return SparseMatrix(values, pattern, symmetric=A.symmetric)


def to_block(b: jnp.ndarray, dtype) -> jnp.ndarray:
    """``[Re b; Im b]``."""
    b = jnp.asarray(b).astype(jnp.result_type(dtype, 1j))
    return jnp.concatenate([jnp.real(b), jnp.imag(b)], axis=-1)


def from_block(y: jnp.ndarray) -> jnp.ndarray:
    """``x = y[:n] - i y[n:]`` from the block solution ``y = [xr; -xi]``."""
    n = y.shape[-1] // 2
    return y[..., :n] - 1j * y[..., n:]
