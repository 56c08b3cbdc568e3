"""Host functions that read a compiled program's buffers in place: the direct solvers' callbacks (CPU).

``jax.pure_callback`` hands its function copies of the operands: XLA's handler copies each operand into a new
NumPy array and JAX then places it on the device again before the call. For the factorisation and solve
callbacks of :mod:`igax.solvers.linear` the operand is the matrix values, so a copy of them (200 MB for 1M
degree-2 spline dofs) was resident while PARDISO factorised, the moment of the process's peak memory.

:func:`host_call` computes the same ``fn(*operands)`` through one native XLA handler
(``igax/_native/host_call.cc``) that gives a Python dispatcher the addresses of the operand and result
buffers: ``fn`` reads the operands in place (read-only NumPy views, valid only during the call) and its
results are written into the program's result buffers. A host backend that keeps the values beyond the
call is given a copy (:mod:`igax.solvers._backends`).

The program names the function by a key, a hash of what it computes (``ident``) and of the shapes; the
lowering registers the function under that key, and the executable holds the registration for as long as
it lives (runs in flight included), as it holds a ``pure_callback``'s function. Elsewhere (no native
library, ``IGAX_NATIVE=0``, other platforms) and eagerly, the same function runs through
``jax.pure_callback`` or directly.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import threading
import traceback
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

__all__ = ["host_call"]

logger = logging.getLogger(__name__)


def host_call(fn, result_shapes, *operands, ident) -> tuple:
    """``fn(*operands)`` computed on the host, inside or outside a compiled program; ``vmap`` adds leading
    dimensions to every operand (size 1 for an unbatched one), as ``jax.pure_callback``'s ``"expand_dims"``.

    Arguments:
        fn: a function of NumPy arrays returning one array per entry of ``result_shapes`` (a tuple, or the
            array itself for one). It may read its operands only during the call (they are views of the
            program's buffers).
        result_shapes: a sequence of ``jax.ShapeDtypeStruct``.
        *operands: arrays.
        ident: a hashable value, the same in every process for the same computation (e.g. a pattern's
            digest and the solver's options), that names ``fn`` in the compiled program.

    Returns:
        A tuple of arrays of ``result_shapes``. Not differentiable (cut the operands from the gradient).

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> from igax.solvers._host_call import host_call
        >>> def total(x):
        ...     return (np.asarray(x.sum(axis=-1)),)
        >>> out = jax.ShapeDtypeStruct((), jnp.float32)
        >>> f = jax.jit(lambda x: host_call(total, [out], x, ident="sum-example")[0])
        >>> float(f(jnp.arange(4.0, dtype=jnp.float32)))
        6.0
    """
    shapes = tuple(jax.ShapeDtypeStruct(tuple(s.shape), np.dtype(s.dtype)) for s in result_shapes)
    return tuple(host_call_p.bind(*operands, fn=fn, ident=ident, result_shapes=shapes))


host_call_p = Primitive("igax_host_call")
host_call_p.multiple_results = True


def _impl(*args, fn, ident, result_shapes):
    outs = _as_tuple(fn(*(np.asarray(a) for a in args)))  # eagerly: views of the arrays, which stay alive
    return [jnp.asarray(_result(o, r)) for o, r in zip(outs, result_shapes, strict=True)]


def _as_tuple(outs) -> tuple:
    return tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)


def _result(value, shape: jax.ShapeDtypeStruct) -> np.ndarray:
    value = np.asarray(value)
    if value.shape != shape.shape or value.dtype != shape.dtype:
        raise RuntimeError(
            f"igax host call: the host function returned {value.dtype}{list(value.shape)}, the program "
            f"expects {shape.dtype}{list(shape.shape)}"
        )
    return value


def _abstract(*avals, fn, ident, result_shapes):
    return [jax.core.ShapedArray(r.shape, r.dtype) for r in result_shapes]


def _batch(args, dims, *, fn, ident, result_shapes):
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    moved = [
        jnp.expand_dims(a, 0) if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims, strict=True)
    ]
    shapes = tuple(jax.ShapeDtypeStruct((size, *r.shape), r.dtype) for r in result_shapes)
    out = host_call_p.bind(*moved, fn=fn, ident=ident, result_shapes=shapes)
    return out, [0] * len(out)


host_call_p.def_impl(_impl)
host_call_p.def_abstract_eval(_abstract)
batching.primitive_batchers[host_call_p] = _batch


# -- the native path ---------------------------------------------------------------------------------------
class _Entry:
    """A registered host function with the shapes of its buffers (kept alive by the executables using it)."""

    __slots__ = ("fn", "operands", "results", "__weakref__")

    def __init__(self, fn, operands, results):
        self.fn = fn
        self.operands = operands
        self.results = results

    def __call__(self, *args):  # never called: a host callback of the executable only to be held by it
        raise RuntimeError("igax host call: the registration was called as a JAX callback")


_entries: weakref.WeakValueDictionary[int, _Entry] = weakref.WeakValueDictionary()
_lock = threading.Lock()
_PROTOTYPE = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_uint64,
    ctypes.c_int64,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.c_void_p,
    ctypes.c_int64,
)


def _view(address: int, aval, writable: bool) -> np.ndarray:
    dtype = np.dtype(aval.dtype)
    nbytes = int(np.prod(aval.shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.zeros(aval.shape, dtype)
    a = np.frombuffer((ctypes.c_char * nbytes).from_address(address), dtype=dtype).reshape(aval.shape)
    a.flags.writeable = writable
    return a


def _dispatch(key, n, buffers, message, capacity):
    """The native handler's Python side: runs the function registered under ``key`` on the buffers."""
    try:
        entry = _entries.get(int(key))
        if entry is None:
            raise RuntimeError(
                "the program names a host function that is no longer registered (its executable was "
                "released); jit the function again"
            )
        k = len(entry.operands)
        if n != k + len(entry.results):
            raise RuntimeError(f"{n} buffers given, {k + len(entry.results)} expected")
        args = [_view(buffers[i], a, False) for i, a in enumerate(entry.operands)]
        outs = _as_tuple(entry.fn(*args))
        for i, r in enumerate(entry.results):
            np.copyto(_view(buffers[k + i], r, True), _result(outs[i], r))
        return 0
    except BaseException as err:  # reported by the program's error; never raised into the C++ frame
        # The text only (no traceback object): its frames hold views of XLA's buffers, freed after this call.
        logger.error("igax host call failed\n%s", "".join(traceback.format_exception(err)))
        traceback.clear_frames(err.__traceback__)
        text = f"igax host call failed: {type(err).__name__}: {err}".encode()[: max(int(capacity), 0)]
        ctypes.memmove(message, text, len(text))
        return 1


_dispatcher = _PROTOTYPE(_dispatch)  # kept for the life of the process (the native side points at it)
_ready: list[bool] = []


def _native_ready() -> bool:
    """Whether the native handler is registered and knows the dispatcher (once per process)."""
    if _ready:
        return _ready[0]
    from igax import _native

    with _lock:
        if not _ready:
            lib = _native.library()
            if lib is not None:
                lib.IgaxSetHostFunction.argtypes = (_PROTOTYPE,)
                lib.IgaxSetHostFunction(_dispatcher)
            _ready.append(lib is not None)
    return _ready[0]


def _key(ident, avals_in, avals_out) -> int:
    shapes = [(tuple(a.shape), np.dtype(a.dtype).str) for a in (*avals_in, *avals_out)]
    h = hashlib.blake2b(repr((ident, shapes)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1  # 63 bits: JAX writes the attribute through an int64


def _fallback(*args, fn, ident, result_shapes):
    return jax.pure_callback(fn, tuple(result_shapes), *args, vmap_method="expand_dims")


_lower_fallback = mlir.lower_fun(_fallback, multiple_results=True)
_lower_ffi = jax.ffi.ffi_lowering("igax_host_call")


def _lower_cpu(ctx, *args, fn, ident, result_shapes):
    if not _native_ready():
        return _lower_fallback(ctx, *args, fn=fn, ident=ident, result_shapes=result_shapes)
    key = _key(ident, ctx.avals_in, ctx.avals_out)
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            entry = _Entry(fn, tuple(ctx.avals_in), tuple(ctx.avals_out))
            _entries[key] = entry
    # Held by the executable (a host callback it never calls) for as long as it lives, runs included: the
    # registry holds it weakly, so the function and what it refers to (a sparsity pattern) go with the
    # last executable that names it.
    ctx.module_context.add_host_callback(entry)
    return _lower_ffi(ctx, *args, key=np.uint64(key))


mlir.register_lowering(host_call_p, _lower_fallback)
mlir.register_lowering(host_call_p, _lower_cpu, platform="cpu")
