"""The sparse matrix type: a static CSR pattern (NumPy, hashed once) and a JAX array of values.

Everything integer about a matrix (row pointers, column indices, the row of every stored entry, the transpose
permutation, the diagonal slots) is computed once in NumPy and kept in a :class:`CSRPattern`. A
:class:`SparseMatrix` is a pytree whose only leaf is ``values``; jit caches on the pattern, grad and vmap act
on the values. This is what makes assembled systems cheap to re-use with new coefficients.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from igax.solvers._spmv import spmv

__all__ = ["CSRPattern", "SparseMatrix"]


class CSRPattern:
    """An immutable compressed-sparse-row sparsity pattern.

    Arguments:
        indptr: row pointers, shape ``(nrows + 1,)``.
        indices: column index of each stored entry, shape ``(nnz,)``, sorted within each row, no duplicates.
        shape: ``(nrows, ncols)``.

    Patterns compare equal when their content is equal (a digest is computed once), so two spaces built the
    same way share jit caches.

    ``grid`` (default None) may name the tensor grid of the rows, a
    :class:`~igax.solvers._grid_ordering.GridHint` set by the builder of a pattern that knows it (spline
    spaces, degree-1 Lagrange spaces on structured meshes): PARDISO then orders by the grid's nested
    dissection instead of METIS, once the hint is verified against the entries. It is not part of the
    pattern's equality or digest.

    Example:
        >>> import numpy as np
        >>> from igax.solvers import CSRPattern
        >>> p = CSRPattern(np.array([0, 1, 2]), np.array([0, 1]), (2, 2))
        >>> p.nnz
        2
    """

    grid = None  # a GridHint of the rows, set by builders that know it (see above)

    def __init__(self, indptr, indices, shape):
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        indices = np.ascontiguousarray(indices, dtype=np.int32)
        shape = (int(shape[0]), int(shape[1]))
        if indptr.ndim != 1 or indptr.shape[0] != shape[0] + 1:
            raise ValueError(f"indptr must have shape (nrows + 1,) = ({shape[0] + 1},), got {indptr.shape}.")
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != indices.shape[0]:
            raise ValueError("indptr must start at 0, be non-decreasing and end at len(indices).")
        if indices.size and (indices.min() < 0 or indices.max() >= shape[1]):
            raise ValueError(f"indices must lie in [0, ncols={shape[1]}).")
        self.indptr = indptr
        self.indices = indices
        self.shape = shape
        self.indptr.setflags(write=False)
        self.indices.setflags(write=False)
        h = hashlib.blake2b(digest_size=16)
        h.update(np.asarray(shape, np.int64).tobytes())
        h.update(indptr.tobytes())
        h.update(indices.tobytes())
        self._digest = h.digest()

    @classmethod
    def from_coo(cls, rows, cols, shape) -> tuple[CSRPattern, np.ndarray]:
        """Build the pattern of a set of (row, col) entries, duplicates allowed.

        Returns:
            ``(pattern, slot)`` where ``slot[k]`` is the CSR position of entry ``(rows[k], cols[k])``: the
            scatter map that assembly uses (``values = segment_sum(entries, slot, nnz)``).
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        nrows, ncols = int(shape[0]), int(shape[1])
        if rows.size == 0:
            return cls(np.zeros(nrows + 1, np.int64), np.zeros(0, np.int32), (nrows, ncols)), np.zeros(
                0, np.int32
            )
        # One key per entry, row-major. Banded keys (row, col - row) need fewer bits than row * ncols + col,
        # which lets the sort carry each entry's index in the same 64-bit word (see sort_keys).
        off = cols - rows
        lo, width = int(off.min()), int(off.max() - off.min()) + 1
        key = rows * width + (off - lo)
        order, skey = sort_keys(key, nrows * width)
        first = np.empty(skey.shape[0], dtype=bool)
        first[0] = True
        np.not_equal(skey[1:], skey[:-1], out=first[1:])
        ukey = skey[first]
        slot = np.empty(skey.shape[0], dtype=np.int32)
        slot[order] = np.cumsum(first, dtype=np.int32) - 1
        urows = ukey // width
        ucols = urows + ukey % width + lo
        indptr = np.zeros(nrows + 1, dtype=np.int64)
        np.cumsum(np.bincount(urows, minlength=nrows), out=indptr[1:])
        return cls(indptr, ucols, (nrows, ncols)), slot

    @classmethod
    def from_cells(cls, cell_dofs, n: int) -> tuple[CSRPattern, np.ndarray]:
        """The ``(n, n)`` pattern coupling all dofs of each cell, and each cell's scatter map.

        Equal to ``from_coo`` of all ``(cell_dofs[e, i], cell_dofs[e, j])`` pairs, built from the unordered
        pairs ``i < j`` only: the pattern is the diagonal plus each distinct dof pair in both orders, so the
        keys sorted are ``nloc (nloc - 1) / 2`` per cell instead of ``nloc**2`` (for P1 the pairs are the
        mesh edges).

        Arguments:
            cell_dofs: (nel, nloc) dofs of each cell (distinct within a cell).
            n: number of dofs.

        Returns:
            ``(pattern, slot)`` with ``slot[e, i, j]`` (int32, shape (nel, nloc, nloc)) the CSR position of
            entry ``(cell_dofs[e, i], cell_dofs[e, j])``.

        Example:
            >>> import numpy as np
            >>> from igax.solvers import CSRPattern
            >>> pat, slot = CSRPattern.from_cells(np.array([[0, 1, 2], [1, 3, 2]]), 4)
            >>> pat.nnz, slot.shape
            (14, (2, 3, 3))
        """
        cd = np.asarray(cell_dofs)
        n = int(n)
        if cd.ndim != 2:
            raise ValueError(f"cell_dofs must have shape (nel, nloc), got {cd.shape}.")
        nel, nloc = cd.shape
        if cd.size and (cd.min() < 0 or cd.max() >= n):
            raise ValueError(f"cell_dofs must lie in [0, n={n}).")
        cd = cd.astype(np.int32 if n < 2**31 else np.int64, copy=False)  # half the memory traffic
        iu, ju = np.triu_indices(nloc, 1)
        a, b = cd[:, iu], cd[:, ju]  # (nel, npl)
        first_small = a < b  # the cell lists the pair's smaller dof first
        lo = np.minimum(a, b)
        gap = np.maximum(a, b)
        gap -= lo
        del a, b  # large temporaries are released as soon as possible (peak memory, page faults)
        if gap.size and gap.min() == 0:  # a dof repeated within a cell: the general path handles it
            rows = np.broadcast_to(cd[:, :, None], (nel, nloc, nloc))
            cols = np.broadcast_to(cd[:, None, :], (nel, nloc, nloc))
            pat, slot = cls.from_coo(rows, cols, (n, n))
            return pat, slot.reshape(nel, nloc, nloc)
        # Distinct pairs (lo < hi), sorted by (lo, hi): key lo * width + gap - 1.
        width = max(int(gap.max()) if gap.size else 1, 1)
        key = lo.astype(np.int64).ravel()
        key *= width
        key += gap.ravel()
        key -= 1
        del lo, gap
        order, skey = sort_keys(key, n * width)
        del key
        first = np.empty(skey.shape[0], dtype=bool)
        first[:1] = True
        np.not_equal(skey[1:], skey[:-1], out=first[1:])
        pair = np.empty(skey.shape[0], dtype=np.int32)
        pair[order] = np.cumsum(first, dtype=np.int32) - 1
        del order
        ukey = skey[first]
        del skey, first
        pa = ukey // width
        pb = pa + ukey % width + 1
        npair = ukey.shape[0]
        del ukey
        # Row r: its lower entries (pairs (a, r), a < r), the diagonal, then its upper entries (r, b).
        has = np.zeros(n, dtype=np.int64)
        has[cd.ravel()] = 1
        nup, nlow = np.bincount(pa, minlength=n), np.bincount(pb, minlength=n)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(nlow + has + nup, out=indptr[1:])
        diag = (indptr[:-1] + nlow).astype(np.int32)  # (n,) slot of the diagonal (valid where has)
        k = np.arange(npair, dtype=np.int32)
        # The pairs are sorted by (a, b): row a's upper entries are consecutive, in column order.
        up = (diag + has - (np.cumsum(nup) - nup)).astype(np.int32)[pa] + k
        # Lower entries ordered by (b, a): a stable sort by b keeps the a order.
        order2, sb = sort_keys(pb, n)
        low = np.empty(npair, dtype=np.int32)
        low[order2] = (indptr[:-1] - (np.cumsum(nlow) - nlow)).astype(np.int32)[sb] + k
        del order2, sb, k
        indices = np.empty(int(indptr[-1]), dtype=np.int32)
        rows_with = np.flatnonzero(has)
        indices[diag[rows_with]] = rows_with
        indices[up] = pb
        indices[low] = pa
        del pa, pb
        # Element slots: the pair's upper slot where the cell lists the smaller dof first.
        pair = pair.reshape(nel, -1)
        slot = np.empty((nel, nloc, nloc), dtype=np.int32)
        ar = np.arange(nloc)
        slot[:, ar, ar] = diag[cd]
        su, sl = up[pair], low[pair]
        del pair
        slot[:, iu, ju] = np.where(first_small, su, sl)
        slot[:, ju, iu] = np.where(first_small, sl, su)
        return cls(indptr, indices, (n, n)), slot

    def find(self, rows, cols) -> np.ndarray:
        """CSR slots of the entries ``(rows[k], cols[k])``, or -1 where the pattern does not store one.

        Example:
            >>> import numpy as np
            >>> from igax.solvers import CSRPattern
            >>> CSRPattern(np.array([0, 2, 3]), np.array([0, 1, 1]), (2, 2)).find([0, 1], [1, 0])
            array([ 1, -1])
        """
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise ValueError(f"rows must lie in [0, nrows={self.shape[0]}).")
        if self.nnz == 0:
            return np.full(rows.shape, -1, dtype=np.int64)
        lo, hi = self.indptr[rows], self.indptr[rows + 1]
        # Binary search (lower bound) within each sorted row, all rows at once.
        for _ in range(int(np.max(hi - lo, initial=0)).bit_length()):
            mid = (lo + hi) // 2
            active = lo < hi
            less = self.indices[np.minimum(mid, self.nnz - 1)] < cols
            lo, hi = np.where(active & less, mid + 1, lo), np.where(active & ~less, mid, hi)
        found = (lo < self.indptr[rows + 1]) & (self.indices[np.minimum(lo, self.nnz - 1)] == cols)
        return np.where(found, lo, -1)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @cached_property
    def rows(self) -> np.ndarray:
        """Row index of every stored entry, shape ``(nnz,)``."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int32), np.diff(self.indptr))

    @cached_property
    def diagonal_slots(self) -> np.ndarray:
        """CSR slot of each diagonal entry, or -1 where the diagonal is not stored."""
        n = min(self.shape)
        out = -np.ones(n, dtype=np.int64)
        # rows as a temporary unless cached: not left behind (100 MB for 1M degree-2 spline dofs)
        rows = self.__dict__.get("rows")
        if rows is None:
            rows = np.repeat(np.arange(self.shape[0], dtype=np.int32), np.diff(self.indptr))
        mask = rows == self.indices
        out[rows[mask]] = np.nonzero(mask)[0]
        return out

    @cached_property
    def empty_rows_and_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns that store no entry (a matrix with one is singular whatever its values)."""
        rows = np.flatnonzero(np.diff(self.indptr) == 0)
        if self.shape[0] == self.shape[1] and not rows.size and "diagonal_slots" in self.__dict__:
            if np.all(self.diagonal_slots >= 0):  # every column stores its diagonal entry (known already)
                return rows, rows.copy()
        seen = np.zeros(self.shape[1], dtype=bool)
        seen[self.indices] = True  # (a scatter: a third of a bincount's time at 5M entries)
        return rows, np.flatnonzero(~seen)

    @cached_property
    def _first_non_canonical_row(self) -> int:
        """The first row whose column indices are not strictly increasing, or -1 (computed once)."""
        ind = self.indices
        if ind.shape[0] < 2:
            return -1
        ok = ind[1:] > ind[:-1]  # (nnz - 1,) bool: one byte per entry
        ends = self.indptr[1:-1]  # the last entry of every row but the last compares across a row boundary
        ends = ends[(ends > 0) & (ends < ind.shape[0])]
        ok[ends - 1] = True
        bad = np.flatnonzero(~ok)
        if bad.size == 0:
            return -1
        return int(np.searchsorted(self.indptr, bad[0], side="right") - 1)

    def check_canonical(self, name: str = "pattern") -> None:
        """Raise unless the column indices are sorted and unique within each row (what CSR backends index).

        Checked once per pattern (the answer is cached) before a host backend sees it: PARDISO reads such a
        pattern out of bounds and can kill the process.

        Arguments:
            name: how the caller names the pattern in the message (e.g. ``"A.pattern"``).
        """
        row = self._first_non_canonical_row
        if row >= 0:
            cols = self.indices[self.indptr[row] : self.indptr[row + 1]].tolist()
            raise ValueError(
                f"{name} is not canonical CSR: the column indices of row {row} are {cols[:12]}, which are "
                "not strictly increasing (unsorted or duplicate entries). Build the pattern with "
                "CSRPattern.from_coo(rows, cols, shape) or the matrix with SparseMatrix.from_scipy(M), which "
                "sort the entries and merge duplicates."
            )

    @cached_property
    def _transpose(self) -> tuple[CSRPattern, np.ndarray]:
        t = sp.csr_matrix(
            (np.arange(self.nnz, dtype=np.float64) + 1.0, self.indices, self.indptr), shape=self.shape
        ).T.tocsr()
        t.sort_indices()
        perm = (t.data - 1.0).astype(np.int64)
        return CSRPattern(t.indptr, t.indices, t.shape), perm

    def transpose(self) -> tuple[CSRPattern, np.ndarray]:
        """The transposed pattern and the permutation ``perm`` with ``values_T = values[perm]``."""
        return self._transpose

    @cached_property
    def is_structurally_symmetric(self) -> bool:
        pt, _ = self._transpose
        return pt == self

    def __eq__(self, other):
        return isinstance(other, CSRPattern) and (self is other or self._digest == other._digest)

    def __hash__(self):
        return hash(self._digest)

    def __repr__(self):
        return f"CSRPattern(shape={self.shape}, nnz={self.nnz})"


class SparseMatrix(eqx.Module):
    """A sparse matrix with a static CSR pattern and JAX values: a pytree whose only leaf is ``values``.

    Arguments:
        values: stored entries in CSR order, shape ``(nnz,)``.
        pattern: the :class:`CSRPattern`.
        symmetric: the caller asserts ``A == A.T`` (lets solvers pick Cholesky-type methods and skip
            transposes).
        positive_definite: the caller asserts ``A`` is symmetric positive definite.

    A batch of matrices for ``jax.vmap`` is one SparseMatrix with values ``(k, nnz)``: the matrices must share
    the pattern (assemble them on one space); :meth:`stack` builds it and says which matrix differs.

    Example:
        >>> import jax.numpy as jnp, scipy.sparse
        >>> from igax.solvers import SparseMatrix
        >>> A = SparseMatrix.from_scipy(scipy.sparse.eye(3, format="csr"))
        >>> (A @ jnp.ones(3)).tolist()
        [1.0, 1.0, 1.0]
    """

    values: jax.Array
    pattern: CSRPattern = eqx.field(static=True)
    symmetric: bool = eqx.field(static=True, default=False)
    positive_definite: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if hasattr(self.values, "shape") and self.values.shape[-1:] != (self.pattern.nnz,):
            raise ValueError(
                f"values must have shape (nnz,) = ({self.pattern.nnz},) to match the pattern, "
                f"got {self.values.shape}."
            )

    # -- construction and conversion -------------------------------------------------------------------------
    @classmethod
    def from_scipy(cls, A, *, symmetric: bool | None = None, positive_definite: bool = False, dtype=None):
        """Wrap a scipy sparse matrix (any format; converted to canonical CSR).

        Arguments:
            A: scipy sparse matrix or array.
            symmetric: flag; ``None`` checks ``A`` numerically.
            positive_definite: flag the caller asserts (not checked).
            dtype: values dtype (default: jnp's default float dtype).
        """
        A = sp.csr_matrix(A)
        A.sum_duplicates()
        A.sort_indices()
        if symmetric is None:
            symmetric = A.shape[0] == A.shape[1] and (
                A.nnz == 0 or abs(A - A.T).max() <= 1e-14 * max(abs(A).max(), 1e-300)
            )
        pattern = CSRPattern(A.indptr, A.indices, A.shape)
        return cls(
            jnp.asarray(A.data, dtype=dtype),
            pattern,
            symmetric=bool(symmetric) or positive_definite,
            positive_definite=positive_definite,
        )

    @classmethod
    def stack(cls, matrices) -> SparseMatrix:
        """One matrix whose ``values`` stack those of ``matrices`` (shape ``(k, nnz)``), to ``jax.vmap`` over.

        ``jax.vmap`` maps over array leaves, and a matrix's only leaf is its ``values``; the pattern is
        static, so a batch of matrices must share one pattern. Stacking matrices with different patterns
        (e.g. with ``jax.tree.map(jnp.stack, ...)``) fails inside JAX with a pytree-structure error, which
        igax cannot intercept; this function checks first and says what differs.

        Arguments:
            matrices: a non-empty sequence of :class:`SparseMatrix` with one pattern (assembled on one space).

        Returns:
            A :class:`SparseMatrix` with values ``(k, nnz)``; flags are kept where all matrices have them.

        Example:
            >>> import jax, jax.numpy as jnp, scipy.sparse
            >>> from igax.solvers import SparseMatrix, solve
            >>> A = SparseMatrix.from_scipy(scipy.sparse.diags([2.0, 4.0]).tocsr())
            >>> As = SparseMatrix.stack([A, 2.0 * A, 4.0 * A])
            >>> X = jax.vmap(solve)(As, jnp.ones((3, 2)))   # one system per matrix
            >>> X[:, 0].round(12).tolist()
            [0.5, 0.25, 0.125]
        """
        mats = list(matrices)
        if not mats:
            raise ValueError("SparseMatrix.stack: matrices is empty; give at least one SparseMatrix.")
        for i, M in enumerate(mats):
            if not isinstance(M, SparseMatrix):
                raise TypeError(
                    f"SparseMatrix.stack: matrices[{i}] is a {type(M).__name__}, not a SparseMatrix; wrap "
                    "scipy matrices with SparseMatrix.from_scipy."
                )
            if M.pattern != mats[0].pattern:
                raise ValueError(
                    f"SparseMatrix.stack: matrices[{i}] has another sparsity pattern ({M.pattern}) than "
                    f"matrices[0] ({mats[0].pattern}). A batch for jax.vmap must share one pattern: assemble "
                    "the matrices on the same space (same mesh, degree and boundary handling), or solve them "
                    "in a Python loop."
                )
            if jnp.shape(M.values) != jnp.shape(mats[0].values):
                raise ValueError(
                    f"SparseMatrix.stack: matrices[{i}].values has shape {jnp.shape(M.values)}, but "
                    f"matrices[0].values has {jnp.shape(mats[0].values)}; stack unbatched matrices."
                )
        return cls(
            jnp.stack([M.values for M in mats]),
            mats[0].pattern,
            symmetric=all(M.symmetric for M in mats),
            positive_definite=all(M.positive_definite for M in mats),
        )

    def to_scipy(self) -> sp.csr_matrix:
        """A scipy CSR copy (host). Not traceable."""
        p = self.pattern
        return sp.csr_matrix((np.asarray(self.values), p.indices, p.indptr), shape=p.shape)

    def todense(self) -> jax.Array:
        p = self.pattern
        out = jnp.zeros(p.shape, self.values.dtype)
        return out.at[p.rows, p.indices].add(self.values)

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.shape

    @property
    def nnz(self) -> int:
        return self.pattern.nnz

    @property
    def dtype(self):
        return self.values.dtype

    def diagonal(self) -> jax.Array:
        slots = self.pattern.diagonal_slots
        d = self.values[np.maximum(slots, 0)]
        return jnp.where(jnp.asarray(slots >= 0), d, 0.0)

    # -- algebra ---------------------------------------------------------------------------------------------
    def matvec(self, x: jax.Array) -> jax.Array:
        """``A @ x`` for ``x`` of shape ``(ncols,)`` or ``(ncols, k)`` (more trailing axes are columns too).

        One pass over the CSR arrays (a native kernel on the CPU, cuSPARSE on the GPU; see
        :mod:`igax.solvers._spmv`), differentiable in the values and in ``x`` (``vmap`` too).

        Example:
            >>> import jax.numpy as jnp, scipy.sparse
            >>> from igax.solvers import SparseMatrix
            >>> A = SparseMatrix.from_scipy(scipy.sparse.csr_matrix([[1.0, 2.0], [0.0, 3.0]]))
            >>> (A @ jnp.ones(A.shape[1])).tolist()              # row sums
            [3.0, 3.0]
        """
        return self._product(x, transpose=False)

    def rmatvec(self, x: jax.Array) -> jax.Array:
        """``A.T @ x`` without forming ``A.T`` (no permuted copy of the values); x of shape ``(nrows, ...)``.

        The same kernel as :meth:`matvec`, scattering instead of gathering (SciPy's CSC product).

        Example:
            >>> import jax.numpy as jnp, scipy.sparse
            >>> from igax.solvers import SparseMatrix
            >>> A = SparseMatrix.from_scipy(scipy.sparse.csr_matrix([[1.0, 2.0], [0.0, 3.0]]))
            >>> A.rmatvec(jnp.ones(2)).tolist()                  # equals A.T @ y: column sums
            [1.0, 5.0]
        """
        return self._product(x, transpose=True)

    def _product(self, x, transpose: bool) -> jax.Array:
        p = self.pattern
        x = jnp.asarray(x)
        m = p.shape[0] if transpose else p.shape[1]
        if x.ndim == 0 or x.shape[0] != m:
            what = "nrows" if transpose else "ncols"
            raise ValueError(
                f"x must have leading dimension {what}={m} to multiply {'A.T' if transpose else 'A'} of "
                f"shape {p.shape}, got shape {x.shape}."
            )
        if jnp.ndim(self.values) != 1:
            raise ValueError(
                f"this matrix holds a batch of values {jnp.shape(self.values)}; multiply inside jax.vmap "
                "(jax.vmap(lambda A, x: A @ x)(As, X)) instead of with the batch at once."
            )
        return spmv(self.values, p, x, transpose=transpose, symmetric=self.symmetric)

    def __matmul__(self, x):
        return self.matvec(x)

    @property
    def T(self) -> SparseMatrix:
        """The transpose (values permuted; for a symmetric matrix, itself)."""
        if self.symmetric:
            return self
        pt, perm = self.pattern.transpose()
        return SparseMatrix(self.values[perm], pt, symmetric=False, positive_definite=False)

    def _same_pattern(self, other, op):
        if not isinstance(other, SparseMatrix):
            return NotImplemented
        if other.pattern != self.pattern:
            raise ValueError(
                f"cannot {op} matrices with different sparsity patterns ({self.pattern} vs {other.pattern}); "
                "assemble both on the same space so they share one pattern."
            )
        return None

    def __add__(self, other):
        bad = self._same_pattern(other, "add")
        if bad is NotImplemented:
            return bad
        return SparseMatrix(
            self.values + other.values,
            self.pattern,
            symmetric=self.symmetric and other.symmetric,
            positive_definite=self.positive_definite and other.positive_definite,
        )

    def __sub__(self, other):
        bad = self._same_pattern(other, "subtract")
        if bad is NotImplemented:
            return bad
        return SparseMatrix(
            self.values - other.values, self.pattern, symmetric=self.symmetric and other.symmetric
        )

    def __mul__(self, scalar):
        if isinstance(scalar, SparseMatrix):
            return NotImplemented
        scalar = jnp.asarray(scalar)
        if scalar.ndim != 0:
            raise ValueError("a SparseMatrix can only be scaled by a scalar; use A @ x for products.")
        # Positive definiteness survives only a positive scale, which is unknown under tracing.
        return SparseMatrix(self.values * scalar, self.pattern, symmetric=self.symmetric)

    __rmul__ = __mul__

    def __neg__(self):
        return SparseMatrix(-self.values, self.pattern, symmetric=self.symmetric)

    def with_values(self, values, *, symmetric=None, positive_definite=None) -> SparseMatrix:
        """The same pattern with new values (flags kept unless given)."""
        return SparseMatrix(
            values,
            self.pattern,
            symmetric=self.symmetric if symmetric is None else symmetric,
            positive_definite=self.positive_definite if positive_definite is None else positive_definite,
        )

    def __repr__(self):
        return (
            f"SparseMatrix(shape={self.shape}, nnz={self.nnz}, dtype={getattr(self.values, 'dtype', '?')}, "
            f"symmetric={self.symmetric}, positive_definite={self.positive_definite})"
        )


def sort_keys(key: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable argsort of non-negative int64 keys below ``bound``, and the sorted keys.

    When the key and the entry index fit in one 64-bit word together, the packed words are sorted by value
    (a vectorised sort, several times faster than ``np.argsort``) and both parts are read back; otherwise
    this is ``np.argsort(kind="stable")``.
    """
    key = np.asarray(key, dtype=np.int64)
    m = key.shape[0]
    shift = max(int(m - 1).bit_length(), 1)
    if int(max(bound, 1) - 1).bit_length() + shift <= 63:
        packed = key << shift
        packed |= np.arange(m, dtype=np.int64)
        packed.sort()
        order = packed & ((1 << shift) - 1)
        packed >>= shift  # in place: these arrays are large
        return order, packed
    order = np.argsort(key, kind="stable")
    return order, key[order]
