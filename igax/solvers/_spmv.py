"""The product of a :class:`~igax.solvers.SparseMatrix` with vectors: ``A @ x``, ``A.T @ x``, ``A @ X``.

This is the hot loop of every Krylov solver and smoother, so it is one JAX primitive, ``igax_spmv``, with a
lowering per platform, all of them reading the CSR arrays as they are (no conversion of the values, which
change with every assembly, into another layout):

* **CPU**: one XLA custom call to a native kernel (``igax/_native/spmv_kernels.cc``), a loop over the rows
  as in SciPy's ``csr_matvec`` (rows split over XLA's thread pool for large matrices); the transposed product
  scatters over the same arrays (SciPy's ``csc_matvec``), so ``A.rmatvec(x)`` needs neither the transposed
  values nor a second pattern.
* **GPU** (CUDA, ROCm): cuSPARSE / hipSPARSE SpMV and SpMM through ``jax.experimental.sparse``
  (``csr_matvec`` / ``csr_matmat``), the library a GPU-side baseline would call.
* **Elsewhere**, and on the CPU without a C++ compiler (``IGAX_NATIVE=0``) or for other dtypes than
  float32/float64: pure JAX, a fixed-width loop over each row's slots (:class:`_RowPlan`).

Nothing is prepared per matrix: a Krylov loop calls ``A.matvec`` (or ``A @ x``) on the assembled values as
they are, and gets the fast path. For a non-symmetric matrix, ``A.rmatvec(x)`` is cheaper than ``A.T @ x``
(``A.T`` permutes the values into the transposed pattern: one gather of every value).

Why not XLA's own operations on the CPU: the product as a gather of ``x`` plus a ``segment_sum`` (igax
before issue 14, kept as :func:`segment_sum_product` for the benchmark) took 22 ms against SciPy's 7.6 ms
for a 1M-DOF P1 matrix (2 cores); XLA's CPU scatter is serial and every nnz-sized temporary is a fresh
allocation. Padded layouts (ELL, sliced ELL) reach SciPy's speed in XLA only once the values are in the
padded layout, and putting them there (a gather of every value) cost 5-20 products on the CPU here, for
each new matrix. Figures of this module against SciPy: ``benchmarks/bench_spmv.py`` (the native kernel took
0.9-1.4x the time of SciPy's ``csr_matvec`` at 0.25-1M DOFs on 2 loaded cores, the previous product 6-14x).

Derivatives: the product is bilinear in ``(values, x)``. Its JVP is two products; its transpose in ``x`` is
the transposed product (the same kernel), and in the values the sampled product
``values_bar[p] = sum_c ct[row(p), c] x[col(p), c]`` (a second primitive, ``igax_spmv_sample``: one pass in
CSR order on the CPU, gathers elsewhere; its own derivatives are products again, so Hessian-vector products
stay sparse). ``vmap`` over ``x`` folds the batch into the columns (one ``A @ X`` call); ``vmap`` over the
values (a batch of matrices) loops over the batch inside the kernel.

``jax.export`` refuses custom calls without a compatibility guarantee (the native kernel, cuSPARSE's SpMV):
export a CPU program with ``IGAX_NATIVE=0`` set, which lowers the products to pure JAX.

Shapes of the primitive: values ``(*B, nnz)``, x ``(*B, m, k)`` -> ``(*B, n, k)`` with the same leading
batch dimensions ``B`` on both (the batching rule makes them so); ``m, n`` are ``(ncols, nrows)``, swapped
for ``transpose=True``.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = ["segment_sum_product", "spmv"]

_NATIVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_UNROLL = 32  # the pure-JAX kernel unrolls its loop over row slots (or columns) up to this many
_BLOCK = 16  # wider rows: a loop over blocks of this many unrolled slots (compile time ~ block size)
_PB = "promise_in_bounds"  # every index below is in range by construction


def spmv(values, pattern, x, *, transpose: bool = False, symmetric: bool = False) -> jax.Array:
    """``A @ x`` (or ``A.T @ x``) for the CSR matrix ``A = (pattern, values)``.

    Arguments:
        values: the stored entries in CSR order, shape ``(nnz,)``.
        pattern: the :class:`~igax.solvers.CSRPattern`.
        x: shape ``(m,)`` or ``(m, ...)`` with ``m = ncols`` (``nrows`` when ``transpose``).
        transpose: multiply by ``A.T`` (without forming it).
        symmetric: the caller asserts ``A == A.T``: the transposed products of the derivatives are then
            computed as plain ones.

    Returns:
        Shape ``(n,) + x.shape[1:]`` (``n = nrows``, or ``ncols`` when ``transpose``), in the common dtype of
        ``values`` and ``x``.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from igax.solvers import CSRPattern
        >>> from igax.solvers._spmv import spmv
        >>> p = CSRPattern(np.array([0, 1, 3]), np.array([1, 0, 1]), (2, 2))
        >>> spmv(jnp.array([2.0, 3.0, 4.0]), p, jnp.array([1.0, 1.0])).tolist()
        [2.0, 7.0]
    """
    nrows, ncols = pattern.shape
    if transpose and symmetric and nrows == ncols:
        transpose = False
    m, n = (nrows, ncols) if transpose else (ncols, nrows)
    dtype = jnp.result_type(values, x)
    values = jnp.asarray(values, dtype)
    x = jnp.asarray(x, dtype)
    trailing = x.shape[1:]
    k = int(np.prod(trailing, dtype=np.int64))
    if pattern.nnz == 0 or n == 0 or k == 0:
        return jnp.zeros((n, *trailing), dtype)
    if jnp.iscomplexobj(values) and jax.default_backend() == "cpu" and _native_ok(jnp.finfo(dtype).dtype):
        # Complex on the CPU: two real products with twice the columns, through the native kernel (it has no
        # complex dtype; the pure-JAX kernel in a Krylov loop compiled ~6x slower: 3.1 vs 0.5 s). JAX
        # differentiates and transposes the split as the complex product (non-conjugated transpose).
        x = x.reshape(m, k)
        X = jnp.concatenate([jnp.real(x), jnp.imag(x)], axis=1)
        kw = {"transpose": transpose, "symmetric": symmetric}
        P, Q = spmv(jnp.real(values), pattern, X, **kw), spmv(jnp.imag(values), pattern, X, **kw)
        y = jax.lax.complex(P[:, :k] - Q[:, k:], P[:, k:] + Q[:, :k])
        return y.reshape((n, *trailing))
    y = spmv_p.bind(
        values, x.reshape(m, k), pattern=pattern, transpose=bool(transpose), symmetric=bool(symmetric)
    )
    return y.reshape((n, *trailing))


def segment_sum_product(values, pattern, x) -> jax.Array:
    """``A @ x`` as a gather and a sorted ``segment_sum``: igax's product before issue 14, kept to compare.

    Same arguments as :func:`spmv` (no transpose). Differentiated by JAX's own rules (its transpose in ``x``
    is a scatter).
    """
    v = values.reshape(values.shape + (1,) * (x.ndim - 1))
    prod = v * x[pattern.indices]
    return jax.ops.segment_sum(prod, pattern.rows, num_segments=pattern.shape[0], indices_are_sorted=True)


# -- the pure-JAX kernel -------------------------------------------------------------------------------------
class _RowPlan:
    """How the pure-JAX kernel reads a CSR pattern (host arrays, built once per pattern and direction).

    Row ``i``'s entries are slots ``ptr[i] .. ptr[i] + len[i] - 1``. The kernel visits slot ``ptr[i] + j``
    of every row for ``j < width`` at once (one gather of the values and one of ``x`` per ``j``, masked
    where ``j >= len[i]``): no padded copy of the values is made. ``width`` is chosen so that a few long
    rows (a vertex of high valence, a glued seam) do not set the work of all rows: their slots past
    ``width`` are summed apart by a ``segment_sum``.

    For the transposed product the plan reads the transposed pattern, and the value of its slot ``q`` is
    ``values[vperm[q]]``.
    """

    def __init__(self, indptr, indices, nrows: int, vperm=None):
        indptr = np.asarray(indptr, np.int64)
        lens = np.diff(indptr)
        nnz = int(indptr[-1])
        itype = np.int32 if nnz < 2**31 else np.int64
        self.nrows, self.nnz = int(nrows), nnz
        self.width = _width(lens)
        self.ptr = indptr[:-1].astype(itype)
        self.lens = np.minimum(lens, self.width).astype(np.int32)
        self.indices = np.asarray(indices, np.int32)
        self.vperm = None if vperm is None else np.asarray(vperm, itype)
        long = np.flatnonzero(lens > self.width)
        extra = lens[long] - self.width
        self.tail_rows = np.repeat(long, extra).astype(np.int32)
        starts = np.repeat(indptr[long] + self.width - np.cumsum(extra) + extra, extra)
        self.tail_slots = (starts + np.arange(extra.sum())).astype(itype)

    def arrays(self):
        """``(ptr, lens, indices, vperm or None, tail_slots, tail_rows)``."""
        return self.ptr, self.lens, self.indices, self.vperm, self.tail_slots, self.tail_rows


def _width(lens: np.ndarray) -> int:
    """Slots per row that the padded loop covers: minimises ``n * width + 8 * (slots past width)``.

    A slot past the width costs a gather, a product and a scattered add (~8 padded slots on a CPU).
    """
    if lens.size == 0 or lens.max() == 0:
        return 0
    cand = np.unique(lens)
    counts = np.bincount(lens)
    # slots past w for every candidate w: sum over rows of max(len - w, 0)
    over = np.array([np.sum(np.maximum(cand - w, 0) * counts[cand]) for w in cand])
    return int(cand[np.argmin(lens.size * cand + 8 * over)])


def _plan(pattern, transpose: bool) -> _RowPlan:
    """The :class:`_RowPlan` of ``pattern`` (or of its transpose), cached on the pattern."""
    cache = pattern.__dict__.setdefault("_spmv_plans", {})
    if transpose not in cache:
        if transpose:
            pt, perm = pattern.transpose()
            cache[transpose] = _RowPlan(pt.indptr, pt.indices, pt.shape[0], perm)
        else:
            cache[transpose] = _RowPlan(pattern.indptr, pattern.indices, pattern.shape[0])
    return cache[transpose]


def _pure_core(v, x, plan: _RowPlan):
    """Pure-JAX product for one matrix: v (nnz,), x (m, k) -> (nrows, k)."""
    n, k = plan.nrows, x.shape[1]
    if plan.nnz == 0:
        return jnp.zeros((n, k), v.dtype)
    # The index arrays are constants of the program: behind a barrier, the slot indices computed from them
    # are computed when the program runs, not folded by XLA at compile time (6-9 s and 25 index arrays
    # stored in the executable for a 250k-row spline matrix).
    ptr, lens, ind, vperm, tail_slots, tail_rows = jax.lax.optimization_barrier(
        tuple(None if a is None else jnp.asarray(a) for a in plan.arrays())
    )
    xs = x[:, 0] if k == 1 else x  # a 1-D gather is several times faster than a row gather on the CPU

    def value_slots(s):
        return s if vperm is None else vperm.at[s].get(mode=_PB)

    def slot(j, acc):
        s = jnp.minimum(ptr + j, plan.nnz - 1)
        vs = v.at[value_slots(s)].get(mode=_PB)
        xv = xs.at[ind.at[s].get(mode=_PB)].get(mode=_PB)
        if k > 1:
            vs = vs[:, None]
        term = vs * xv
        return acc + jnp.where((j < lens) if k == 1 else (j < lens)[:, None], term, 0)

    acc = jnp.zeros((n,) + xs.shape[1:], v.dtype)
    w = plan.width
    if w <= _UNROLL:
        for j in range(w):
            acc = slot(j, acc)
    else:  # blocks of unrolled slots: one pass over the accumulator per block

        def block(b, acc):
            for jj in range(_BLOCK):
                acc = slot(b * _BLOCK + jj, acc)
            return acc

        acc = jax.lax.fori_loop(0, -(-w // _BLOCK), block, acc)
    if plan.tail_slots.size:
        tv = v.at[value_slots(tail_slots)].get(mode=_PB)
        tx = xs.at[ind.at[tail_slots].get(mode=_PB)].get(mode=_PB)
        term = tv * tx if k == 1 else tv[:, None] * tx
        acc = acc + jax.ops.segment_sum(term, tail_rows, n, indices_are_sorted=True)
    return acc[:, None] if k == 1 else acc


def _pure(v, x, *, pattern, transpose, symmetric=False):
    """The primitive in pure JAX (leading batch dimensions by vmap)."""
    plan = _plan(pattern, transpose)
    core = functools.partial(_pure_core, plan=plan)
    for _ in range(v.ndim - 1):
        core = jax.vmap(core)
    return core(v, x)


# -- the primitive -------------------------------------------------------------------------------------------
spmv_p = Primitive("igax_spmv")


def _abstract(v, x, *, pattern, transpose, symmetric):
    nrows, ncols = pattern.shape
    m, n = (nrows, ncols) if transpose else (ncols, nrows)
    if v.shape[-1:] != (pattern.nnz,) or x.ndim != v.ndim + 1 or x.shape[-2] != m or v.dtype != x.dtype:
        raise TypeError(f"igax_spmv: got values {v.shape} {v.dtype}, x {x.shape} {x.dtype} for {pattern}")
    return jax.core.ShapedArray(v.shape[:-1] + (n, x.shape[-1]), v.dtype)


spmv_p.def_abstract_eval(_abstract)


@functools.lru_cache(maxsize=8)  # eager products: one program per pattern and direction
def _jitted(pattern, transpose, symmetric):
    return jax.jit(functools.partial(spmv_p.bind, pattern=pattern, transpose=transpose, symmetric=symmetric))


def _impl(v, x, **params):
    # Outside jit the primitive runs as its own compiled program; with jit disabled that would bind it again,
    # forever, so the pure-JAX kernel runs op by op instead.
    if jax.config.jax_disable_jit:
        return _pure(v, x, **params)
    return _jitted(params["pattern"], params["transpose"], params["symmetric"])(v, x)


spmv_p.def_impl(_impl)


def _native_ok(dtype) -> bool:
    """Whether the native kernel covers this product: its dtype, the kernel is built, 64-bit indices exist.

    The kernels read the pattern's row pointers as int64; with ``jax_enable_x64`` off (float32 work) JAX
    would hand them over as int32, so the pure-JAX kernel runs instead (the same numbers, slower).
    """
    from igax import _native

    return dtype in _NATIVE_DTYPES and bool(jax.config.jax_enable_x64) and _native.load()


# -- held patterns: the CSR arrays stay on the host side, a program names them by a key ----------------------
# As operands of the native call, a pattern's arrays are constants of every program that multiplies by it
# (108 MB for 25M entries, written into the program by each product: the solve's residual check, the
# gradient's sampled product), copied through the compiler (~10 ms per MB on a CPU core) and stored in each
# executable. From _HELD_NNZ stored entries the kernels read them instead from a table of the native library
# where igax holds them while the pattern lives, under a key that is a hash of their content (so that JAX's
# persistent compilation cache stays valid across processes: the same pattern has the same key, and tracing
# the program, which JAX does before it looks up its cache, holds the pattern). A program run after its
# pattern was garbage collected (only possible when the program outlived every matrix and space that uses
# the pattern) fails with a clear error rather than reading freed memory.
_HELD_NNZ = 1 << 16
_held: dict[int, list] = {}  # key -> [indptr, indices, count of live patterns holding it]
_held_lock = threading.Lock()


def _held_key(pattern) -> int:
    """The key of ``pattern`` in the native library's table (held from the first call; cached on it)."""
    key = pattern.__dict__.get("_spmv_key")
    if key is not None:
        return key
    from igax import _native

    indptr = np.ascontiguousarray(pattern.indptr, np.int64)
    indices = np.ascontiguousarray(pattern.indices, np.int32)
    # The pattern's own digest (of its shape, indptr and indices, computed once when it was built): hashing
    # the arrays again took 50 ms at 1M P1 DOFs, in the trace of the first program using the pattern.
    key = int.from_bytes(pattern._digest[:8], "little") >> 1  # 63 bits: JAX writes the attribute as int64
    lib = _native.library()
    with _held_lock:
        entry = _held.get(key)
        if entry is None:
            entry = _held[key] = [indptr, indices, 0]
            ptr, ind = ctypes.c_void_p(indptr.ctypes.data), ctypes.c_void_p(indices.ctypes.data)
            lib.IgaxSpmvHold(
                ctypes.c_uint64(key), ptr, ind, ctypes.c_int64(len(indptr) - 1), ctypes.c_int64(len(indices))
            )
        elif not (np.array_equal(entry[0], indptr) and np.array_equal(entry[1], indices)):
            raise RuntimeError("igax spmv: two different CSR patterns share a key (a 64-bit hash collision).")
        entry[2] += 1
    weakref.finalize(pattern, _release, key)
    pattern.__dict__["_spmv_key"] = key
    return key


def _release(key: int) -> None:
    from igax import _native

    with _held_lock:
        entry = _held[key]
        entry[2] -= 1
        if entry[2] == 0:
            _native.library().IgaxSpmvRelease(ctypes.c_uint64(key))
            del _held[key]


def _native_call(kind: str, pattern, shape, dtype, *operands):
    """The native kernel ``igax_spmv_<kind>_<f64|f32>`` on ``operands``, the pattern held or as operands."""
    suffix = "f64" if dtype == np.float64 else "f32"
    out = jax.ShapeDtypeStruct(shape, dtype)
    if pattern.nnz >= _HELD_NNZ:
        call = jax.ffi.ffi_call(f"igax_spmv_held_{kind}_{suffix}", out)
        return call(*operands, pattern=np.uint64(_held_key(pattern)))
    return jax.ffi.ffi_call(f"igax_spmv_{kind}_{suffix}", out)(pattern.indptr, pattern.indices, *operands)


def _cpu(v, x, *, pattern, transpose, symmetric):
    """The native kernel where it is built and covers the dtype, else pure JAX."""
    if not _native_ok(v.dtype):
        return _pure(v, x, pattern=pattern, transpose=transpose)
    n = pattern.shape[1] if transpose else pattern.shape[0]
    kind = "transpose" if transpose else "forward"
    return _native_call(kind, pattern, v.shape[:-1] + (n, x.shape[-1]), v.dtype, v, x)


def _gpu(v, x, *, pattern, transpose, symmetric):
    """cuSPARSE / hipSPARSE (csr SpMV for one column, SpMM for several), one call per matrix of a batch."""
    from jax.experimental import sparse as jsparse

    if v.dtype not in _NATIVE_DTYPES or pattern.nnz >= 2**31:
        return _pure(v, x, pattern=pattern, transpose=transpose)
    ind = np.asarray(pattern.indices, np.int32)  # cuSPARSE takes both index arrays in one dtype
    ptr = np.asarray(pattern.indptr, np.int32)

    def one(args):
        vb, xb = args
        mat = jsparse.CSR((vb, ind, ptr), shape=pattern.shape)
        if xb.shape[1] == 1:
            return jsparse.csr_matvec(mat, xb[:, 0], transpose=transpose)[:, None]
        return jsparse.csr_matmat(mat, xb, transpose=transpose)

    if v.ndim == 1:
        return one((v, x))
    batch = v.shape[:-1]
    out = jax.lax.map(one, (v.reshape((-1,) + v.shape[-1:]), x.reshape((-1,) + x.shape[-2:])))
    return out.reshape(batch + out.shape[1:])


mlir.register_lowering(spmv_p, mlir.lower_fun(_pure, multiple_results=False))
mlir.register_lowering(spmv_p, mlir.lower_fun(_cpu, multiple_results=False), platform="cpu")
mlir.register_lowering(spmv_p, mlir.lower_fun(_gpu, multiple_results=False), platform="cuda")
mlir.register_lowering(spmv_p, mlir.lower_fun(_gpu, multiple_results=False), platform="rocm")


def _batch(args, dims, **params):
    (v, x), (dv, dx) = args, dims
    if dv is None:
        # One matrix, a batch of vectors: the batch becomes more columns of x, one product for all.
        x = jnp.moveaxis(x, dx, -1)  # (*B, m, k, S)
        size = x.shape[-1]
        y = spmv_p.bind(v, x.reshape(x.shape[:-2] + (-1,)), **params)
        return y.reshape(y.shape[:-1] + (-1, size)), y.ndim
    size = v.shape[dv]
    v = batching.bdim_at_front(v, dv, size)
    x = batching.bdim_at_front(x, dx, size)  # broadcast when x is shared by the matrices
    return spmv_p.bind(v, x, **params), 0


batching.primitive_batchers[spmv_p] = _batch


def _jvp(primals, tangents, **params):
    (v, x), (dv, dx) = primals, tangents
    y = spmv_p.bind(v, x, **params)
    t = None if type(dv) is ad.Zero else spmv_p.bind(dv, x, **params)
    if type(dx) is not ad.Zero:
        tx = spmv_p.bind(v, dx, **params)
        t = tx if t is None else t + tx
    return y, (ad.Zero.from_primal_value(y) if t is None else t)


ad.primitive_jvps[spmv_p] = _jvp


# -- the sampled product: the derivative in the values -----------------------------------------------------
# vbar[p] = sum_c ct[out(p), c] x[in(p), c], (out, in) = (row, col), or (col, row) for the transposed product.
# Its own primitive (bilinear in ct and x) so that the CPU runs it as one pass over the pattern, and so that
# derivatives of gradients (Hessian-vector products) stay products with the matrix.
sample_p = Primitive("igax_spmv_sample")


def _sample_abstract(ct, x, *, pattern, transpose):
    nrows, ncols = pattern.shape
    m, n = (nrows, ncols) if transpose else (ncols, nrows)
    if ct.shape[-2] != n or x.shape[-2] != m or ct.shape[-1] != x.shape[-1] or ct.dtype != x.dtype:
        raise TypeError(
            f"igax_spmv_sample: got ct {ct.shape} {ct.dtype}, x {x.shape} {x.dtype} for {pattern}"
        )
    return jax.core.ShapedArray(ct.shape[:-2] + (pattern.nnz,), ct.dtype)


sample_p.def_abstract_eval(_sample_abstract)


def _sample_pure(ct, x, *, pattern, transpose):
    """Pure JAX: column by column, 1-D gathers (no (nnz, k) temporaries)."""
    rows, cols = jax.lax.optimization_barrier((jnp.asarray(pattern.rows), jnp.asarray(pattern.indices)))
    out_idx, in_idx = (cols, rows) if transpose else (rows, cols)

    def core(ct, x):
        def col(c, acc):
            return acc + ct[:, c].at[out_idx].get(mode=_PB) * x[:, c].at[in_idx].get(mode=_PB)

        k = x.shape[1]
        if k <= _UNROLL:
            acc = col(0, 0)
            for c in range(1, k):
                acc = col(c, acc)
            return acc
        return jax.lax.fori_loop(0, k, col, jnp.zeros(pattern.nnz, ct.dtype))

    for _ in range(ct.ndim - 2):
        core = jax.vmap(core)
    return core(ct, x)


def _sample_cpu(ct, x, *, pattern, transpose):
    if not _native_ok(ct.dtype):
        return _sample_pure(ct, x, pattern=pattern, transpose=transpose)
    kind = "sample_transpose" if transpose else "sample"
    return _native_call(kind, pattern, ct.shape[:-2] + (pattern.nnz,), ct.dtype, ct, x)


@functools.lru_cache(maxsize=8)
def _sample_jitted(pattern, transpose):
    return jax.jit(functools.partial(sample_p.bind, pattern=pattern, transpose=transpose))


def _sample_impl(ct, x, **params):
    if jax.config.jax_disable_jit:
        return _sample_pure(ct, x, **params)
    return _sample_jitted(params["pattern"], params["transpose"])(ct, x)


sample_p.def_impl(_sample_impl)
mlir.register_lowering(sample_p, mlir.lower_fun(_sample_pure, multiple_results=False))
mlir.register_lowering(sample_p, mlir.lower_fun(_sample_cpu, multiple_results=False), platform="cpu")


def _sample_batch(args, dims, **params):
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    ct, x = (batching.bdim_at_front(a, d, size) for a, d in zip(args, dims, strict=True))
    return sample_p.bind(ct, x, **params), 0


batching.primitive_batchers[sample_p] = _sample_batch


def _sample_jvp(primals, tangents, **params):
    (ct, x), (dct, dx) = primals, tangents
    out = sample_p.bind(ct, x, **params)
    t = None if type(dct) is ad.Zero else sample_p.bind(dct, x, **params)
    if type(dx) is not ad.Zero:
        tx = sample_p.bind(ct, dx, **params)
        t = tx if t is None else t + tx
    return out, (ad.Zero.from_primal_value(out) if t is None else t)


ad.primitive_jvps[sample_p] = _sample_jvp


def _sample_transpose(g, ct, x, *, pattern, transpose):
    # vbar = sample(ct, x) is the values-derivative of y = A x, and <g, sample(ct, x)> = <ct, A_g x> =
    # <A_g^T ct, x> with A_g the matrix of values g (roles swapped for the transposed product).
    if ad.is_undefined_primal(ct) and ad.is_undefined_primal(x):
        raise ValueError("igax_spmv_sample is bilinear: it has no transpose in both operands together")
    undefined = ct if ad.is_undefined_primal(ct) else x
    if type(g) is ad.Zero:
        return [ad.Zero(ct.aval), None] if undefined is ct else [None, ad.Zero(x.aval)]
    params = dict(pattern=pattern, symmetric=False)
    if undefined is ct:
        return [spmv_p.bind(g, x, transpose=transpose, **params), None]
    return [None, spmv_p.bind(g, ct, transpose=not transpose, **params)]


ad.primitive_transposes[sample_p] = _sample_transpose


def _transpose(ct, v, x, *, pattern, transpose, symmetric):
    if ad.is_undefined_primal(v) and ad.is_undefined_primal(x):
        raise ValueError("igax_spmv is bilinear: it has no transpose in values and x together")
    if ad.is_undefined_primal(x):
        if type(ct) is ad.Zero:
            return [None, ad.Zero(x.aval)]
        t = transpose if (symmetric and pattern.shape[0] == pattern.shape[1]) else not transpose
        return [None, spmv_p.bind(v, ct, pattern=pattern, transpose=t, symmetric=symmetric)]
    if type(ct) is ad.Zero:
        return [ad.Zero(v.aval), None]
    return [sample_p.bind(ct, x, pattern=pattern, transpose=transpose), None]


ad.primitive_transposes[spmv_p] = _transpose
