"""Large concrete arrays read by a compiled program at run time instead of being constants of it (CPU).

JAX writes every concrete array a traced function uses into the program as a constant, and XLA copies it
through the compiler (about 10 ms of one CPU core per MB) and into the executable. For the index maps,
cells and node coordinates of a 1M-DOF mesh (over 100 MB) that is a large part of compiling a program that
assembles on it. :func:`fetch` instead gives an array that the program copies, when it runs, from memory
that igax holds (one ``memcpy`` per call: a few milliseconds per 100 MB, about what reading it once costs).

The arrays are held by content (a hash of their bytes is their key, which also keeps JAX's persistent
compilation cache valid across processes) for the life of the process, an array that can still change as a
read-only copy, up to ``_HELD_BYTES_LIMIT`` bytes in all (of which callers' data: ``_DATA_BYTES_LIMIT``);
past that limit, and on other platforms than the CPU or without the native library, :func:`fetch` returns
the array itself (a constant, as before). Holding for the process's life is what keeps a cached executable
from reading freed memory: a program can outlive every Python object that built it.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading

import jax
import numpy as np

__all__ = ["fetch", "fetch_arrays"]

_HELD_MIN_BYTES = 1 << 22  # smaller arrays stay constants (cheap to compile; XLA may use their values)
_HELD_BYTES_LIMIT = 4 << 30
# Of which the callers' data (fetch_arrays: load vectors, matrix values, coefficients), so that a loop that
# jits new closures over new data cannot use up what spaces' index maps need; past it such data are constants
# again, as before they were held.
_DATA_BYTES_LIMIT = 1 << 30
_held: dict[int, np.ndarray] = {}
_held_bytes = [0, 0]  # all held; of which callers' data
_lock = threading.Lock()


def _usable() -> bool:
    from igax import _native

    return jax.default_backend() == "cpu" and _native.available()


def _hold(a: np.ndarray, data: bool = False) -> int | None:
    """The key under which ``a``'s bytes are held (held now if new: a read-only copy unless ``a`` cannot
    change), or None past the limit (``data``: the callers' data, see ``_DATA_BYTES_LIMIT``)."""
    # SHA-256: 1.6x faster than BLAKE2b where the CPU has instructions for it (0.06 s per 100 MB; a 1M P1
    # program's trace hashes about 150 MB)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    key = int.from_bytes(h.digest()[:8], "little") >> 1  # 63 bits: JAX writes the attribute through an int64
    with _lock:
        if key in _held:
            return key
        if _held_bytes[0] + a.nbytes > _HELD_BYTES_LIMIT or (
            data and _held_bytes[1] + a.nbytes > _DATA_BYTES_LIMIT
        ):
            return None
        from igax import _native

        if not _immutable(a):
            # Held by content, so a caller changing its array in place afterwards must not change what a
            # compiled program (or a later one closing over an equal array) reads: JAX fixes a closed-over
            # array when it is traced.
            a = a.copy()
            a.setflags(write=False)
        _held[key] = a
        _held_bytes[0] += a.nbytes
        _held_bytes[1] += a.nbytes if data else 0
        _native.library().IgaxHoldArray(
            ctypes.c_uint64(key), ctypes.c_void_p(a.ctypes.data), ctypes.c_int64(a.nbytes)
        )
    return key


def _immutable(a: np.ndarray) -> bool:
    """Whether no one can write ``a``'s memory: read-only down its chain of bases to memory NumPy does not
    own (a JAX array's buffer, bytes)."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        a = a.base
    return a is not None


def _staging() -> bool:
    """Whether a trace that stages out a program (``jit``, ``make_jaxpr``) is active, under any ``grad`` or
    ``vmap`` above it: only there do closed-over arrays become constants. (Eager ``grad`` and ``vmap``
    evaluate them as they go.)"""
    try:
        from jax._src import core
        from jax._src.interpreters.partial_eval import DynamicJaxprTrace

        trace = core.trace_ctx.trace
    except (ImportError, AttributeError):  # pragma: no cover - another JAX: any trace counts
        from igax._compile import at_top_level

        return not at_top_level()
    while trace is not None:
        if isinstance(trace, DynamicJaxprTrace):
            return True
        trace = getattr(trace, "parent_trace", None)
    return False


def fetch(a, *, data: bool = False):
    """``a`` (a concrete array) as the result of a run-time copy in the program being traced.

    Arguments:
        a: a NumPy array (or anything ``np.asarray`` takes). Arrays under ``_HELD_MIN_BYTES``, and all
            arrays outside a trace, where the native library is unavailable or off the CPU, are returned
            unchanged. An array that can still change is held as a read-only copy.
        data: a caller's data rather than igax's own structure (held within ``_DATA_BYTES_LIMIT``).

    Returns:
        A JAX value equal to ``a`` (inside a trace: computed when the program runs), or ``a`` itself.

    Example:
        >>> import jax, numpy as np
        >>> from igax._held import fetch
        >>> idx = np.arange(2**20, dtype=np.int32)
        >>> int(jax.jit(lambda i: fetch(idx)[i])(12345))
        12345
    """
    from igax._compile import at_top_level

    if isinstance(a, jax.core.Tracer) or at_top_level():  # eager: no program to keep the array out of
        return a
    arr = np.asarray(a)
    if arr.nbytes < _HELD_MIN_BYTES or not _usable():
        return a
    arr = np.ascontiguousarray(arr)
    key = _hold(arr, data)
    if key is None:
        return a
    call = jax.ffi.ffi_call("igax_fetch_held", jax.ShapeDtypeStruct(arr.shape, arr.dtype))
    return call(key=np.uint64(key))


def fetch_arrays(tree):
    """``tree`` with each concrete array of at least ``_HELD_MIN_BYTES`` replaced by :func:`fetch` of it.

    For the inputs of a compiled function that igax calls inside a caller's trace (the assembly's and the
    solve's programs): arrays that the caller closed over (a space's node coordinates, a load vector: 24 MB at
    1M P1 DOFs) would otherwise become constants of the caller's program, compiled at about 10 ms per MB.
    Traced leaves, small or weakly typed arrays, and everything outside a staging trace (``jit``; not an eager
    ``grad`` or ``vmap``, which make no constants) are left as they are. Held are read-only copies (changing
    the caller's array afterwards changes no program, as with constants), within ``_DATA_BYTES_LIMIT`` for all
    such data of the process. An array met twice (a Field's space's control points, those of the space)
    becomes one value, so identity checks between them still hold.

    Arguments:
        tree: a pytree (an equinox module included: its array leaves).

    Returns:
        The same pytree, large concrete arrays replaced by values read when the program runs.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> from igax._held import fetch_arrays
        >>> tree = {"b": np.ones(2**20), "n": 3}
        >>> float(jax.jit(lambda s: jnp.sum(fetch_arrays(tree)["b"]) * s)(2.0))
        2097152.0
    """
    if not _staging():
        return tree

    fetched: dict[int, tuple] = {}  # id -> (array, its fetch): one array met twice gives one value

    def one(x):
        concrete = isinstance(x, (np.ndarray, jax.Array)) and not isinstance(x, jax.core.Tracer)
        # (a weakly typed array would come back strongly typed: left as it is)
        if not concrete or x.nbytes < _HELD_MIN_BYTES or getattr(x, "weak_type", False):
            return x
        if id(x) not in fetched:  # (the array is kept in the entry, so its id is not reused meanwhile)
            fetched[id(x)] = (x, fetch(x, data=True))
        return fetched[id(x)][1]

    return jax.tree_util.tree_map(one, tree)
