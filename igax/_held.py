"""Large concrete arrays read by a compiled program at run time instead of being constants of it (CPU).

JAX writes every concrete array a traced function uses into the program as a constant, and XLA copies it
through the compiler (about 10 ms of one CPU core per MB) and into the executable. For the index maps,
cells and node coordinates of a 1M-DOF mesh (over 100 MB) that is a large part of compiling a program that
assembles on it. :func:`fetch` instead gives an array that the program copies, when it runs, from memory
that igax holds (one ``memcpy`` per call: a few milliseconds per 100 MB, about what reading it once costs).

The arrays are held by content (a hash of their bytes is their key, which also keeps JAX's persistent
compilation cache valid across processes) for the life of the process, up to ``_HELD_BYTES_LIMIT`` bytes in
all; past that limit, and on other platforms than the CPU or without the native library, :func:`fetch`
returns the array itself (a constant, as before). Holding for the process's life is what keeps a cached
executable from reading freed memory: a program can outlive every Python object that built it.
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
_held: dict[int, np.ndarray] = {}
_held_bytes = [0]
_lock = threading.Lock()


def _usable() -> bool:
    from igax import _native

    return jax.default_backend() == "cpu" and _native.available()


def _hold(a: np.ndarray) -> int | None:
    """The key under which ``a``'s bytes are held (held now if new), or None past the limit."""
    # SHA-256: 1.6x faster than BLAKE2b where the CPU has instructions for it (0.06 s per 100 MB; a 1M P1
    # program's trace hashes about 150 MB)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    key = int.from_bytes(h.digest()[:8], "little") >> 1  # 63 bits: JAX writes the attribute through an int64
    with _lock:
        if key in _held:
            return key
        if _held_bytes[0] + a.nbytes > _HELD_BYTES_LIMIT:
            return None
        from igax import _native

        _held[key] = a
        _held_bytes[0] += a.nbytes
        _native.library().IgaxHoldArray(
            ctypes.c_uint64(key), ctypes.c_void_p(a.ctypes.data), ctypes.c_int64(a.nbytes)
        )
    return key


def fetch(a):
    """``a`` (a concrete array) as the result of a run-time copy in the program being traced.

    Arguments:
        a: a NumPy array (or anything ``np.asarray`` takes). Arrays under ``_HELD_MIN_BYTES``, and all
            arrays outside a trace, where the native library is unavailable or off the CPU, are returned
            unchanged.

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
    key = _hold(arr)
    if key is None:
        return a
    call = jax.ffi.ffi_call("igax_fetch_held", jax.ShapeDtypeStruct(arr.shape, arr.dtype))
    return call(key=np.uint64(key))


def fetch_arrays(tree):
    """``tree`` with each concrete array of at least ``_HELD_MIN_BYTES`` replaced by :func:`fetch` of it.

    For the inputs of a compiled function that igax calls inside a caller's trace (the assembly's and the
    solve's programs): arrays that the caller closed over (a space's node coordinates, a load vector: 24 MB at
    1M P1 DOFs) would otherwise become constants of the caller's program, compiled at about 10 ms per MB.
    Traced leaves, small arrays and everything outside a trace are left as they are (see :func:`fetch`). An
    array met twice (a Field's space's control points, those of the space) becomes one value, so identity
    checks between them still hold.

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
    from igax._compile import at_top_level

    if at_top_level():
        return tree

    fetched: dict[int, tuple] = {}  # id -> (array, its fetch): one array met twice gives one value

    def one(x):
        concrete = isinstance(x, (np.ndarray, jax.Array)) and not isinstance(x, jax.core.Tracer)
        if not concrete or x.nbytes < _HELD_MIN_BYTES:
            return x
        if id(x) not in fetched:  # (the array is kept in the entry, so its id is not reused meanwhile)
            fetched[id(x)] = (x, fetch(x))
        return fetched[id(x)][1]

    return jax.tree_util.tree_map(one, tree)
