"""Host-side direct and algebraic-multigrid backends with a small LRU cache of factorisations.

The traced side (:mod:`igax.solvers.linear`) calls two host functions through ``jax.pure_callback``:

* :func:`factor_callback` hashes the matrix values, factorises on a cache miss and returns an integer *token*
  (negative tokens are failure codes);
* :func:`solve_callback` looks the token up and solves ``A x = b`` or ``A^T x = b``; on a miss (the entry was
  evicted) it refactorises from the values it is also given, so a token is only ever a shortcut, never the
  source of truth.

Because the key is the content of ``(pattern, values)``, the transpose solve of a backward pass, the tangent
solve of a ``jvp`` and repeated calls with the same matrix all find the forward factorisation. :data:`stats`
counts factorisations so tests can assert "one factorisation per forward + backward pass".
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import OrderedDict

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

logger = logging.getLogger(__name__)

# Failure codes carried by negative tokens (kept in sync with igax.solvers.linear).
TOKEN_SINGULAR = -1
TOKEN_NONFINITE = -3

HOST_METHODS = ("superlu", "pardiso", "cholmod", "amg-cg")


@dataclasses.dataclass
class SolverStats:
    """Counters of host-side work; reset with :meth:`reset`.

    Attributes:
        factorizations: numeric factorisations (or AMG setups) computed.
        cache_hits: factor requests answered from the cache.
        solves: host solve calls (one call may carry many right-hand sides).
        transpose_solves: host solve calls with the transposed matrix.
        rhs: right-hand sides solved in total.
    """

    factorizations: int = 0
    cache_hits: int = 0
    solves: int = 0
    transpose_solves: int = 0
    rhs: int = 0

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0)


stats = SolverStats()


# -- backends ------------------------------------------------------------------------------------------------
class _Factor:
    """A factorised matrix: ``solve(B, transpose)`` for ``B`` of shape ``(n, k)`` in float64."""

    def solve(self, B: np.ndarray, transpose: bool) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def free(self) -> None:
        pass


class _SuperLU(_Factor):
    def __init__(self, A: sp.csr_matrix, symmetric: bool, options: dict):
        # For symmetric matrices a symmetric fill-reducing ordering with diagonal pivoting preferred is much
        # sparser and faster than COLAMD; the threshold still allows off-diagonal pivots where needed.
        if symmetric:
            kw = {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.01}
        else:
            kw = {"permc_spec": "COLAMD"}
        kw.update(options.get("superlu_options", {}))
        self.lu = spla.splu(A.tocsc(), **kw)

    def solve(self, B, transpose):
        return self.lu.solve(B, trans="T" if transpose else "N")


class _Pardiso(_Factor):
    def __init__(self, A: sp.csr_matrix, symmetric: bool, options: dict):
        import pypardiso

        # mtype 11 (real non-symmetric) with MKL's default scaling and matching: robust for any matrix, and
        # the transposed solve reuses the same factors through iparm(12) = 2.
        self.A = A
        self.solver = pypardiso.PyPardisoSolver(mtype=11)
        self.solver.set_phase(12)
        self.solver._call_pardiso(A, np.zeros((A.shape[0], 1)))

    def solve(self, B, transpose):
        s = self.solver
        s.iparm[11] = 2 if transpose else 0
        s.set_phase(33)
        try:
            return s._call_pardiso(self.A, np.asfortranarray(B))
        finally:
            s.iparm[11] = 0

    def free(self):
        try:
            self.solver.free_memory(everything=True)
        except Exception:  # pragma: no cover - best effort at teardown
            pass


class _Cholmod(_Factor):
    def __init__(self, A: sp.csr_matrix, symmetric: bool, options: dict):
        from sksparse.cholmod import cholesky

        self.factor = cholesky(A.tocsc())

    def solve(self, B, transpose):
        return self.factor(B)


class _AMG(_Factor):
    """Smoothed-aggregation AMG as a preconditioner of CG (pyamg); for large SPD systems."""

    def __init__(self, A: sp.csr_matrix, symmetric: bool, options: dict):
        import pyamg

        self.A = A
        self.ml = pyamg.smoothed_aggregation_solver(A, symmetry="symmetric")
        self.rtol = float(options.get("rtol", 1e-10))
        self.maxiter = int(options.get("maxiter", 500))
        self.last_iterations = 0

    def solve(self, B, transpose):
        # A is SPD (checked on the traced side), so the transpose solve is the same solve.
        X = np.empty_like(B)
        for j in range(B.shape[1]):
            res: list[float] = []
            X[:, j] = self.ml.solve(B[:, j], tol=self.rtol, accel="cg", maxiter=self.maxiter, residuals=res)
            self.last_iterations = max(self.last_iterations, len(res) - 1)
        return X


def pardiso_available() -> bool:
    try:
        import pypardiso  # noqa: F401

        pypardiso.PyPardisoSolver()
    except Exception:
        return False
    return True


def cholmod_available() -> bool:
    try:
        import sksparse.cholmod  # noqa: F401
    except Exception:
        return False
    return True


def pyamg_available() -> bool:
    try:
        import pyamg  # noqa: F401
    except Exception:
        return False
    return True


_BACKENDS = {"superlu": _SuperLU, "pardiso": _Pardiso, "cholmod": _Cholmod, "amg-cg": _AMG}


def check_available(method: str) -> None:
    """Raise a clear ``ImportError`` when a host backend's package is missing."""
    if method == "pardiso" and not pardiso_available():
        raise ImportError(
            'method="pardiso" needs pypardiso (Intel MKL, x86_64 only): `pip install pypardiso`, or use '
            'method="superlu", which is always available.'
        )
    if method == "cholmod" and not cholmod_available():
        raise ImportError(
            'method="cholmod" needs scikit-sparse (`pip install scikit-sparse`, which needs SuiteSparse); '
            'it is not installed. Use method="pardiso" or method="superlu" instead.'
        )
    if method == "amg-cg" and not pyamg_available():
        raise ImportError('method="amg-cg" needs pyamg: `pip install pyamg`, or use method="cg".')


# -- the cache -----------------------------------------------------------------------------------------------
class _Entry:
    __slots__ = ("key", "factor")

    def __init__(self, key, factor):
        self.key = key
        self.factor = factor


class FactorCache:
    """An LRU cache ``token -> factorisation``, plus ``content key -> token`` for lookups by value.

    Arguments:
        maxsize: how many factorisations to keep (each can be large; the default keeps a few).
    """

    def __init__(self, maxsize: int = 4):
        self.maxsize = int(maxsize)
        self._by_token: OrderedDict[int, _Entry] = OrderedDict()
        self._by_key: dict[tuple, int] = {}
        self._next = 1
        self._lock = threading.RLock()

    def clear(self) -> None:
        with self._lock:
            for e in self._by_token.values():
                e.factor.free()
            self._by_token.clear()
            self._by_key.clear()

    def __len__(self):
        return len(self._by_token)

    def _insert(self, token, key, factor):
        self._by_token[token] = _Entry(key, factor)
        self._by_key[key] = token
        while len(self._by_token) > self.maxsize:
            _, old = self._by_token.popitem(last=False)
            self._by_key.pop(old.key, None)
            old.factor.free()

    def factor(self, key, build) -> tuple[int, _Factor]:
        with self._lock:
            token = self._by_key.get(key)
            if token is not None:
                self._by_token.move_to_end(token)
                stats.cache_hits += 1
                return token, self._by_token[token].factor
            factor = build()
            stats.factorizations += 1
            token = self._next
            self._next = (self._next % (2**31 - 2)) + 1  # int32 tokens, never 0 or negative
            self._insert(token, key, factor)
            return token, factor

    def get(self, token: int, key_and_build) -> _Factor:
        """The factor of ``token``; on a miss refactorise (``key_and_build() -> (key, build)``)."""
        with self._lock:
            e = self._by_token.get(token)
            if e is not None:
                self._by_token.move_to_end(token)
                return e.factor
            key, build = key_and_build()
            other = self._by_key.get(key)
            if other is not None:  # same content cached under another token
                return self._by_token[other].factor
            factor = build()
            stats.factorizations += 1
            self._insert(token, key, factor)
            return factor


cache = FactorCache()


def _content_key(method, pattern, values: np.ndarray, symmetric: bool, options: dict) -> tuple:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(values).view(np.uint8))
    opts = tuple(sorted((k, repr(v)) for k, v in options.items()))
    return (method, pattern._digest, values.dtype.str, h.digest(), symmetric, opts)


def _build(method, pattern, values, symmetric, options):
    A = sp.csr_matrix(
        (values.astype(np.float64, copy=False), pattern.indices, pattern.indptr), shape=pattern.shape
    )
    return _BACKENDS[method](A, symmetric, options)


def _factor_one(method, pattern, values, symmetric, options) -> int:
    if not np.all(np.isfinite(values)):
        return TOKEN_NONFINITE
    key = _content_key(method, pattern, values, symmetric, options)
    try:
        token, _ = cache.factor(key, lambda: _build(method, pattern, values, symmetric, options))
    except Exception as err:  # singular or failed factorisation: reported through the status, not raised here
        logger.debug("factorisation with %s failed: %s", method, err)
        return TOKEN_SINGULAR
    return token


def factor_callback(values, *, method, pattern, symmetric, options) -> np.ndarray:
    """Host side of ``factorize``: ``values`` of shape ``(..., nnz)`` -> tokens ``(...)`` (int32)."""
    values = np.asarray(values)
    batch = values.shape[:-1]
    flat = values.reshape(-1, values.shape[-1])
    out = np.array([_factor_one(method, pattern, v, symmetric, options) for v in flat], dtype=np.int32)
    return out.reshape(batch)


def solve_callback(token, values, b, *, method, pattern, symmetric, options, transpose) -> np.ndarray:
    """Host side of a solve: ``token (...)``, ``values (..., nnz)``, ``b (..., n)`` -> ``x (..., n)``.

    Leading (vmap) dimensions broadcast against each other. Right-hand sides that share a token are solved
    together as one multi-RHS solve with that factorisation.
    """
    token = np.asarray(token)
    values = np.asarray(values)
    b = np.asarray(b)
    batch = np.broadcast_shapes(token.shape, values.shape[:-1], b.shape[:-1])
    n = b.shape[-1]
    tok = np.broadcast_to(token, batch).reshape(-1)
    B = np.broadcast_to(b, batch + (n,)).reshape(-1, n)
    val_batched = values.ndim > 1 and int(np.prod(values.shape[:-1])) > 1
    V = np.broadcast_to(values, batch + values.shape[-1:]).reshape(-1, values.shape[-1])
    X = np.full(B.shape, np.nan, dtype=np.float64)
    stats.solves += 1
    stats.transpose_solves += int(transpose)
    for t in np.unique(tok):
        idx = np.nonzero(tok == t)[0]
        if t <= 0:
            continue  # failed factorisation: leave NaN, the traced side reports the status
        v = V[idx[0]] if val_batched else V[0]

        def key_and_build(v=v):
            key = _content_key(method, pattern, v, symmetric, options)
            return key, lambda: _build(method, pattern, v, symmetric, options)

        try:
            f = cache.get(int(t), key_and_build)
            rhs = np.ascontiguousarray(B[idx].T, dtype=np.float64)  # (n, k)
            X[idx] = np.asarray(f.solve(rhs, transpose)).reshape(n, -1).T
            stats.rhs += idx.size
        except Exception as err:
            logger.debug("solve with %s failed: %s", method, err)
    return X.astype(b.dtype, copy=False).reshape(batch + (n,))


def clear_cache() -> None:
    """Drop all cached factorisations (frees their memory)."""
    cache.clear()


def set_cache_size(maxsize: int) -> None:
    """Keep at most ``maxsize`` factorisations (each can hold gigabytes for a million unknowns)."""
    if maxsize < 1:
        raise ValueError(f"maxsize must be >= 1, got {maxsize}.")
    cache.maxsize = int(maxsize)
