"""The host side of the host backends: callbacks and a small LRU cache of factorisations.

The backends themselves (SuperLU, PARDISO, CHOLMOD, pyamg) are one module each in
:mod:`igax.solvers.backends`; here is what they share.

The traced side (:mod:`igax.solvers.linear`) calls two host functions, which read the program's buffers in
place (:func:`igax.solvers._host_call.host_call`; a backend that keeps its ``values`` is given a copy):

* :func:`factor_callback` hashes the matrix values, factorises on a cache miss and returns an integer *token*
  (negative tokens are failure codes);
* :func:`solve_callback` looks the token up and solves ``A x = b`` or ``A^T x = b``; on a miss (the entry was
  evicted) it refactorises from the values it is also given, so a token is only ever a shortcut, never the
  source of truth.

Because the key is the content of ``(pattern, values)``, the transpose solve of a backward pass, the tangent
solve of a ``jvp`` and repeated calls with the same matrix all find the forward factorisation. :data:`stats`
counts factorisations so tests can assert "one factorisation per forward + backward pass".

A failed factorisation or solve is never raised here (it would surface as an opaque ``CpuCallback error``):
it returns a negative *failure code* whose text, the backend's own reason, :func:`failure_reason` gives to
the error message on the traced side.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import itertools
import logging
import sys
import threading
from collections import OrderedDict

import numpy as np

from igax.solvers.backends import base as _registry
from igax.solvers.backends.base import Factor

logger = logging.getLogger(__name__)

# Failure codes carried by negative tokens (kept in sync with igax.solvers.linear).
TOKEN_SINGULAR = -1
TOKEN_NONFINITE = -3
# Codes <= _FIRST_REASON name a recorded reason (see failure_reason).
_FIRST_REASON = -16
_MAX_REASONS = 256
_reasons: OrderedDict[int, str] = OrderedDict()
_reason_codes: dict[str, int] = {}
_reason_lock = threading.Lock()
_reason_ids = itertools.count()


def _failure_code(reason: str) -> int:
    """A negative code that names ``reason`` (the same code for the same text while it is remembered)."""
    with _reason_lock:
        code = _reason_codes.get(reason)
        if code is not None:
            _reasons.move_to_end(code)
            return code
        code = _FIRST_REASON - next(_reason_ids) % 2**30  # stays an int32
        _reasons[code] = reason
        _reason_codes[reason] = code
        while len(_reasons) > _MAX_REASONS:
            _, old = _reasons.popitem(last=False)
            _reason_codes.pop(old, None)
        return code


def failure_reason(code: int) -> str | None:
    """The backend's reason for failure code ``code`` (None when unknown or forgotten)."""
    with _reason_lock:
        return _reasons.get(int(code))


# Counters of host-side work, defined with the backends (PARDISO counts its analyses there).
stats = _registry.stats


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

    def _evict(self, keep: int) -> None:
        """Free the least recently used factors until at most ``keep`` remain."""
        while len(self._by_token) > keep:
            _, old = self._by_token.popitem(last=False)
            self._by_key.pop(old.key, None)
            old.factor.free()

    def _build(self, build) -> Factor:
        # Make room first: the factor a new one will displace is freed before the new one is computed, not
        # after, so that at most maxsize factors exist at any time (with maxsize 1, a loop over fresh
        # matrices of 1M degree-2 spline dofs peaked at 7.6 GB with two PARDISO factors alive, 1.6 GB each).
        self._evict(self.maxsize - 1)
        factor = build()
        stats.factorizations += 1
        return factor

    def _insert(self, token, key, factor):
        self._by_token[token] = _Entry(key, factor)
        self._by_key[key] = token
        self._evict(self.maxsize)

    def factor(self, key, build) -> tuple[int, Factor]:
        with self._lock:
            token = self._by_key.get(key)
            if token is not None:
                self._by_token.move_to_end(token)
                stats.cache_hits += 1
                return token, self._by_token[token].factor
            factor = self._build(build)
            token = self._next
            self._next = (self._next % (2**31 - 2)) + 1  # int32 tokens, never 0 or negative
            self._insert(token, key, factor)
            return token, factor

    def get(self, token: int, key_and_build) -> Factor:
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
            factor = self._build(build)
            self._insert(token, key, factor)
            return factor


cache = FactorCache()


def _content_key(method, pattern, values: np.ndarray, kind: str, options: dict) -> tuple:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(values).view(np.uint8))
    opts = tuple(sorted((k, repr(v)) for k, v in options.items()))
    return (method, pattern._digest, values.dtype.str, h.digest(), kind, opts)


def _build(method, pattern, values, kind, options) -> Factor:
    backend = _registry.get_backend(method)
    if not backend.copies_values:  # values may be a view of the program's buffer (see linear.host_call)
        values = np.array(values)
    if values.shape[-1] >= _TRIM_NNZ:
        _release_free_memory()
    return backend.factor(pattern, values, kind, options)


# A factorisation of a large matrix allocates gigabytes (PARDISO: 1.5 GB of factor and 0.7 GB of analysis
# for 1M degree-2 spline dofs) while everything else of the process stays resident, the moment of its peak
# memory. Memory the process freed before (the set-up of the space, an eager assembly, earlier calls'
# buffers) stays resident in malloc's heaps, the more so with igax.fem.keep_freed_memory(): 0.9 GB of free
# heap after that set-up. It is given back to the system first (glibc's malloc_trim; the cache has already
# freed the factorisation the new one displaces). Memory in use is not touched, so a loop's buffers that are
# reused call after call (the program's working memory) stay resident and cost no page faults; the trim
# itself takes milliseconds. Below _TRIM_NNZ stored entries a factorisation is too small to matter.
_TRIM_NNZ = 1 << 22


def _release_free_memory() -> None:
    """Return the free memory of malloc's heaps to the system (glibc; a no-op elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim  # (not in musl)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = (ctypes.c_size_t,), ctypes.c_int
    return fn


# What a backend raises for a singular or failed factorisation; anything else is a bug and propagates.
_NUMERICAL_ERRORS = (RuntimeError, ArithmeticError, np.linalg.LinAlgError)


def _reason(method: str, err: Exception) -> str:
    """The backend's message, prefixed with its name unless it names itself."""
    name, text = _registry.get_backend(method).display_name, str(err) or type(err).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _factor_one(method, pattern, values, kind, options) -> int:
    if not np.all(np.isfinite(values)):
        return TOKEN_NONFINITE
    key = _content_key(method, pattern, values, kind, options)
    try:
        token, _ = cache.factor(key, lambda: _build(method, pattern, values, kind, options))
    except _NUMERICAL_ERRORS as err:  # singular / failed: reported through the status, not raised here
        logger.debug("factorisation with %s failed: %s", method, err)
        return _failure_code(_reason(method, err))
    return token


def factor_callback(values, *, method, pattern, kind, options) -> np.ndarray:
    """Host side of ``factorize``: ``values`` of shape ``(..., nnz)`` -> tokens ``(...)`` (int32)."""
    values = np.asarray(values)
    batch = values.shape[:-1]
    flat = values.reshape(int(np.prod(batch, dtype=np.int64)), values.shape[-1])  # also for nnz = 0
    out = np.array([_factor_one(method, pattern, v, kind, options) for v in flat], dtype=np.int32)
    return out.reshape(batch)


def solve_callback(token, values, b, *, method, pattern, kind, options, transpose):
    """Host side of a solve: ``token (...)``, ``values (..., nnz)``, ``b (..., n)`` -> ``x (..., n)``, the
    iterations ``(...)`` (int32; 0 for direct methods) and a failure code ``(...)`` (int32; 0, or negative
    when the backend's solve failed: see :func:`failure_reason`).

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
    V = np.broadcast_to(values, batch + values.shape[-1:]).reshape(tok.shape[0], values.shape[-1])
    work = np.complex128 if np.iscomplexobj(b) or np.iscomplexobj(values) else np.float64
    X = np.full(B.shape, np.nan, dtype=work)
    iterations = np.zeros(B.shape[0], dtype=np.int32)
    codes = np.zeros(B.shape[0], dtype=np.int32)
    stats.solves += 1
    stats.transpose_solves += int(transpose)
    with cache._lock:  # a concurrent callback must not evict a factor while it is in use
        _solve_groups(tok, V, B, X, iterations, codes, val_batched, method, pattern, kind, options, transpose)
    return (
        X.astype(b.dtype, copy=False).reshape(batch + (n,)),
        iterations.reshape(batch),
        codes.reshape(batch),
    )


def _solve_groups(tok, V, B, X, iterations, codes, val_batched, method, pattern, kind, options, transpose):
    n = B.shape[1]
    for t in np.unique(tok):
        idx = np.nonzero(tok == t)[0]
        if t <= 0:
            continue  # failed factorisation: leave NaN, the traced side reports the status
        v = V[idx[0]] if val_batched else V[0]

        def key_and_build(v=v):
            key = _content_key(method, pattern, v, kind, options)
            return key, lambda: _build(method, pattern, v, kind, options)

        try:
            f = cache.get(int(t), key_and_build)
            rhs = np.ascontiguousarray(B[idx].T, dtype=X.dtype)  # (n, k)
            X[idx] = np.asarray(f.solve(rhs, transpose)).reshape(n, -1).T
            counts = f.last_iterations  # iterative host backends (amg-cg); None for direct ones
            if counts is not None:
                iterations[idx] = counts
            stats.rhs += idx.size
        except _NUMERICAL_ERRORS as err:  # X stays NaN; the code carries the reason to the error message
            logger.debug("solve with %s failed: %s", method, err)
            codes[idx] = _failure_code(_reason(method, err))


def analyse(method: str, pattern, kind: str, dtype) -> None:
    """Let a host backend start the work that needs only the pattern (PARDISO's Cholesky analysis) while the
    program that will produce the values is traced and compiled; a no-op for other backends. Never raises:
    a failed early analysis is reported by the factorisation that waits for it."""
    backend = _registry.get_backend(method)
    if not backend.on_host:
        return
    try:
        backend.analyse(pattern, kind, np.dtype(dtype))
    except Exception as err:  # pragma: no cover - the factorisation redoes and reports it
        logger.debug("early analysis with %s failed: %s", method, err)


def clear_cache() -> None:
    """Drop all cached factorisations (frees their memory)."""
    cache.clear()


def set_cache_size(maxsize: int) -> None:
    """Keep at most ``maxsize`` factorisations (each can hold gigabytes for a million unknowns).

    The bound holds at every moment: the factorisation a new one displaces is freed before the new one is
    computed (with ``maxsize=1``, a loop over fresh matrices holds one factorisation, never two).

    Arguments:
        maxsize: how many factorisations to keep, at least 1 (the default keeps 4).

    Example:
        >>> from igax import solvers
        >>> solvers.set_cache_size(1)      # a loop with fresh coefficients: one factorisation at a time
        >>> solvers.set_cache_size(4)      # the default again
    """
    if maxsize < 1:
        raise ValueError(f"maxsize must be >= 1, got {maxsize}.")
    cache.maxsize = int(maxsize)
