"""The element contraction of bilinear assembly, as a primitive whose derivatives are written out.

For jet columns ``U_k, V_l`` (``(ne | 1, nq | 1, nloc)`` basis data: values or one gradient component) and the
per-point kernel matrices ``M`` (``(C, ku, C, kv, ne, nq)``, weights included), the element matrices are

    K[e, c, i, d, j] = sum_{q, k, l} U_k[e, q, i] M[c, k, d, l, e, q] V_l[e, q, j].

``K`` is linear in ``M`` (coefficient fields, quadrature-point arrays, the measure) and in each of ``U`` and
``V`` (the geometry's gradients). Why a primitive: left to JAX, the derivative of the fast forward form (fused
multiply-adds unrolled over points and jets) is its automatic transpose, which XLA runs 4-15x slower than the
forward (measured on 2D degree-2 splines: a slice, pad and add per point and jet); an einsum form transposes
into batched tiny matrix products, 10x slower than the forward on CPU. With a primitive, the tangent of each
argument is the same contraction (so a JVP costs one more forward contraction) and the transpose rules below
are contractions of the same tables written for speed: ``M``'s cotangent ``U^T Kbar V`` and the tables'
cotangents ``Kbar V M`` and ``U Kbar M``, each about one forward contraction. The reference (``einsum``)
forms are kept, at the caller's choice, for small problems (cheap to compile) and for elements with many dofs
per point (3D degree 2, vector P2), where they run as GEMMs.

All arrays may carry leading batch axes (``vmap``): they broadcast like NumPy (the batching rule puts every
batch axis in front).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

if TYPE_CHECKING:  # annotations only
    from igax.fem.spaces.base import FunctionSpace, Tables

__all__ = ["contract_bilinear", "contract_linear", "bilinear_einsum", "broadcast_over_jets"]


# -- forward forms (any leading batch axes) ------------------------------------------------------------------
def _col_q(u, i):
    """Column ``i`` of the local functions of one jet column, ``(..., ne | 1, nq | 1)``."""
    return u[..., :, :, i]


def _col(cols, k, q):
    """Jet column k at point q, ``(..., ne | 1, nloc)``: tables may carry size-1 element or point axes."""
    c = cols[k]
    return c[..., :, q if c.shape[-2] > 1 else 0, :]


def _stack(cols, ne: int, nq: int):
    """Jet columns ``(..., ne | 1, nq | 1, nloc)`` -> ``(..., ne, nq, k, nloc)``."""
    lead = np.broadcast_shapes(*[c.shape[:-3] for c in cols])
    return jnp.stack([jnp.broadcast_to(c, lead + (ne, nq, c.shape[-1])) for c in cols], axis=-2)


def _bilinear_unrolled(U, M, V):
    """K unrolled over the points and jets: fused multiply-adds on CPU (element axis kept first)."""
    C, nq = M.shape[-6], M.shape[-1]
    K = 0.0
    for q in range(nq):
        if C == 1:  # scalar: strided slices of M, no transpose inside the fused loop
            for l in range(len(V)):
                T = sum(_col(U, k, q) * M[..., 0, k, 0, l, :, q][..., None] for k in range(len(U)))
                K = K + T[..., :, None] * _col(V, l, q)[..., None, :]  # (..., ne, nloc, nloc)
            continue
        Mq = jnp.moveaxis(M[..., q], -1, -5)  # (..., ne, C, ku, C, kv)
        for l in range(len(V)):
            T = sum(
                _col(U, k, q)[..., :, None, :, None] * Mq[..., :, :, None, k, :, l] for k in range(len(U))
            )
            K = K + T[..., None] * _col(V, l, q)[..., :, None, None, None, :]  # (..., ne, C, nloc, C, nloc)
    return K[..., :, None, :, None, :] if C == 1 else K


def bilinear_einsum(U, M, V):
    """K as one batched matrix product per element over the (point, jet) pairs (the reference form)."""
    ne, nq = M.shape[-2:]
    Ua, Va = _stack(U, ne, nq), _stack(V, ne, nq)
    W = jnp.einsum("...eqki,...ckdleq->...eqlcid", Ua, M)  # (..., ne, nq, kv, C, nloc, C)
    return jnp.einsum("...eqlcid,...eqlj->...ecidj", W, Va)  # (..., ne, C, nloc, C, nloc)


def _bilinear_impl(*args, ku: int, kv: int, einsum: bool):
    U, V, M = _split(args, ku, kv)
    return bilinear_einsum(U, M, V) if einsum else _bilinear_unrolled(U, M, V)


# -- cotangents ----------------------------------------------------------------------------------------------
def _kbar_v(Kb, V):
    """``W[..., e, c, i, d, q, l] = sum_j Kbar[..., e, c, i, d, j] V_l[..., e, q, j]`` (unrolled over j)."""
    nloc = Kb.shape[-1]
    Vs = jnp.stack(jnp.broadcast_arrays(*V), axis=-1)  # (..., ne | 1, nq | 1, nloc, kv)
    return sum(
        Kb[..., j, None, None] * Vs[..., :, :, j, :][..., :, None, None, None, :, :] for j in range(nloc)
    )  # (..., ne, C, nloc, C, nqV, kv)


def _u_kbar(Kb, U):
    """``W'[..., e, c, d, j, q, k] = sum_i U_k[..., e, q, i] Kbar[..., e, c, i, d, j]`` (unrolled over i)."""
    nloc = Kb.shape[-3]
    Us = jnp.stack(jnp.broadcast_arrays(*U), axis=-1)  # (..., ne | 1, nq | 1, nloc, ku)
    return sum(
        Kb[..., :, :, i, :, :, None, None] * Us[..., :, :, i, :][..., :, None, None, None, :, :]
        for i in range(nloc)
    )  # (..., ne, C, C, nloc, nqU, ku)


def _cot_M(U, Kb, V, nq: int, einsum: bool):
    """``Mbar[..., c, k, d, l, e, q] = sum_{i, j} U_k[e, q, i] Kbar[e, c, i, d, j] V_l[e, q, j]``."""
    ne, nloc = Kb.shape[-5], Kb.shape[-1]
    # Vector spaces (C > 1): the einsum (batched GEMM) form. Unrolled, the C^2 ku kv slabs below each sum
    # nloc products; for Q1 hexahedral elasticity (81 slabs) that took 1.3x the time of the einsums.
    if einsum or Kb.shape[-4] > 1:
        Ua, Va = _stack(U, ne, nq), _stack(V, ne, nq)
        W = jnp.einsum("...ecidj,...eqlj->...eqlcid", Kb, Va)
        return jnp.einsum("...eqlcid,...eqki->...ckdleq", W, Ua)
    C = Kb.shape[-4]
    # P_l[e, c, d, q, i] = sum_j Kbar[e, c, i, d, j] V_l[e, q, j] as a batched matrix product: XLA keeps its
    # result (and the gather of Kbar from the CSR cotangent that feeds it) as one array. Written as fused
    # multiply-adds, both were recomputed inside every consumer (2-3x the work).
    Kcd = jnp.moveaxis(Kb, -2, -3)  # (..., ne, C, C, nloc_i, nloc_j)
    P = [jnp.einsum("...ecdij,...eqj->...ecdqi", Kcd, v) for v in V]  # each (..., ne, C, C, nqV, nloc)
    slabs = [
        [
            [
                [sum(P[l][..., :, c, d, :, i] * _col_q(u, i) for i in range(nloc)) for l in range(len(V))]
                for d in range(C)
            ]
            for u in U
        ]
        for c in range(C)
    ]  # [c][k][d][l]: (..., ne, nq | 1)
    Mb = jnp.stack([jnp.stack([jnp.stack([jnp.stack(x) for x in y]) for y in z]) for z in slabs])
    Mb = jnp.moveaxis(Mb, (0, 1, 2, 3), (-6, -5, -4, -3))  # (..., C, ku, C, kv, ne, nq | 1)
    return jnp.broadcast_to(Mb, Mb.shape[:-1] + (nq,))


def _cot_U(Kb, M, V, k: int):
    """``Ubar_k[..., e, q, i] = sum_{c, d, l, j} Kbar[e, c, i, d, j] M[c, k, d, l, e, q] V_l[e, q, j]``."""
    W = _kbar_v(Kb, V)  # (..., ne, C, nloc, C, nqV, kv)
    C, kv = M.shape[-6], M.shape[-3]
    out = sum(
        W[..., :, c, :, d, :, l] * M[..., c, k, d, l, :, :][..., :, None, :]
        for c in range(C)
        for d in range(C)
        for l in range(kv)
    )  # (..., ne, nloc, nq)
    return jnp.swapaxes(out, -1, -2)


def _cot_V(U, Kb, M, l: int):
    """``Vbar_l[..., e, q, j] = sum_{c, d, k, i} U_k[e, q, i] Kbar[e, c, i, d, j] M[c, k, d, l, e, q]``."""
    W = _u_kbar(Kb, U)  # (..., ne, C, C, nloc, nqU, ku)
    C, ku = M.shape[-6], M.shape[-5]
    out = sum(
        W[..., :, c, d, :, :, k] * M[..., c, k, d, l, :, :][..., :, None, :]
        for c in range(C)
        for d in range(C)
        for k in range(ku)
    )  # (..., ne, nloc, nq)
    return jnp.swapaxes(out, -1, -2)


def _unbroadcast(x, aval):
    """Sum ``x`` down to ``aval``'s shape (over leading axes it lacks and axes where it has size 1)."""
    shape = aval.shape
    lead = x.ndim - len(shape)
    if lead:
        x = jnp.sum(x, axis=tuple(range(lead)))
    axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, shape, strict=True)) if b == 1 and a != 1)
    if axes:
        x = jnp.sum(x, axis=axes, keepdims=True)
    return x.astype(aval.dtype)


# -- the primitive ------------------------------------------------------------------------------------------
def _split(args, ku: int, kv: int):
    return list(args[:ku]), list(args[ku : ku + kv]), args[ku + kv]


_bilinear_p = Primitive("igax_element_contraction")
_bilinear_p.def_impl(_bilinear_impl)
mlir.register_lowering(_bilinear_p, mlir.lower_fun(_bilinear_impl, multiple_results=False))


@_bilinear_p.def_abstract_eval
def _bilinear_abstract(*avals, ku: int, kv: int, einsum: bool):
    U, V, M = _split(avals, ku, kv)
    lead = np.broadcast_shapes(*[a.shape[:-3] for a in U + V], M.shape[:-6])
    ne, C, nloc = M.shape[-2], M.shape[-6], U[0].shape[-1]
    dtype = jnp.result_type(*[a.dtype for a in avals])
    return jax.core.ShapedArray(lead + (ne, C, nloc, C, nloc), dtype)


def _bilinear_jvp(primals, tangents, *, ku: int, kv: int, einsum: bool):
    """Trilinear: dK = K(dU, M, V) + K(U, dM, V) + K(U, M, dV), each term the same contraction."""
    out = _bilinear_p.bind(*primals, ku=ku, kv=kv, einsum=einsum)
    U, V, M = _split(primals, ku, kv)
    dU, dV, dM = _split(tangents, ku, kv)
    zero = ad.Zero
    terms = []
    if type(dM) is not zero:
        terms.append(_bilinear_p.bind(*U, *V, dM, ku=ku, kv=kv, einsum=einsum))
    if any(type(t) is not zero for t in dU):
        terms.append(_bilinear_p.bind(*map(ad.instantiate_zeros, dU), *V, M, ku=ku, kv=kv, einsum=einsum))
    if any(type(t) is not zero for t in dV):
        terms.append(_bilinear_p.bind(*U, *map(ad.instantiate_zeros, dV), M, ku=ku, kv=kv, einsum=einsum))
    if not terms:  # not reached: JAX asks for this rule only when some input has a tangent
        return out, jnp.zeros_like(out)
    tangent = functools.reduce(jnp.add, terms)
    return out, jnp.broadcast_to(tangent, out.shape).astype(out.dtype)


def _bilinear_transpose(ct, *args, ku: int, kv: int, einsum: bool):
    """Cotangents of the one argument group (U, V or M) the linear use leaves undefined."""
    U, V, M = _split(args, ku, kv)
    undefined = ad.is_undefined_primal
    out = [None] * len(args)
    if type(ct) is ad.Zero:
        return out
    if undefined(M):
        out[-1] = _unbroadcast(_cot_M(U, ct, V, M.aval.shape[-1], einsum), M.aval)
    if any(undefined(u) for u in U):
        if undefined(M) or any(undefined(v) for v in V):
            raise NotImplementedError("igax_element_contraction is linear in one argument group at a time.")
        for k, u in enumerate(U):
            if undefined(u):
                out[k] = _unbroadcast(_cot_U(ct, M, V, k), u.aval)
    if any(undefined(v) for v in V):
        if undefined(M):
            raise NotImplementedError("igax_element_contraction is linear in one argument group at a time.")
        for l, v in enumerate(V):
            if undefined(v):
                out[ku + l] = _unbroadcast(_cot_V(U, ct, M, l), v.aval)
    return out


def _bilinear_batch(args, dims, *, ku: int, kv: int, einsum: bool):
    """Batch axes to the front of every argument (size 1 where unbatched): the rules broadcast over them."""
    moved = [jnp.moveaxis(a, d, 0) if d is not None else a[None] for a, d in zip(args, dims, strict=True)]
    return _bilinear_p.bind(*moved, ku=ku, kv=kv, einsum=einsum), 0


ad.primitive_jvps[_bilinear_p] = _bilinear_jvp
ad.primitive_transposes[_bilinear_p] = _bilinear_transpose
batching.primitive_batchers[_bilinear_p] = _bilinear_batch


# -- broadcasting over jets ---------------------------------------------------------------------------------
# The kernel is evaluated on every pair of unit jets with the same inputs (coefficients, points), i.e. the
# inputs are broadcast over the jet axes. JAX's transpose of that broadcast, in the cotangent of the inputs,
# is a reduction over the jet axes, which XLA on CPU compiles into a float64 YNNPACK fusion (together with
# whatever produces the cotangent) several times slower than plain loops: 13 of 60 ms of a Q1 elasticity
# assembly's VJP. Broadcasting through this primitive makes that sum explicit adds of contiguous slabs.
def _broadcast_impl(x, *, shape: tuple):
    return jnp.broadcast_to(x, shape + x.shape)


def _broadcast_transpose(ct, x, *, shape: tuple):
    if type(ct) is ad.Zero:
        return [None]
    n = int(np.prod(shape))
    flat = ct.reshape((n,) + ct.shape[len(shape) :])
    return [sum(flat[i] for i in range(n)).astype(x.aval.dtype)]


def _broadcast_batch(args, dims, *, shape: tuple):
    (x,), (d,) = args, dims
    out = _broadcast_p.bind(jnp.moveaxis(x, d, 0), shape=shape)  # (*shape, B, ...)
    return out, len(shape)


_broadcast_p = Primitive("igax_broadcast_over_jets")
_broadcast_p.def_impl(_broadcast_impl)
_broadcast_p.def_abstract_eval(lambda x, *, shape: jax.core.ShapedArray(shape + x.shape, x.dtype))
mlir.register_lowering(_broadcast_p, mlir.lower_fun(_broadcast_impl, multiple_results=False))
ad.deflinear2(_broadcast_p, _broadcast_transpose)
batching.primitive_batchers[_broadcast_p] = _broadcast_batch


def broadcast_over_jets(tree, shape: tuple):
    """Every array of ``tree`` broadcast to ``shape + x.shape``; the transpose sums the leading axes as
    explicit adds (see above). Differentiable (linear) and vmappable."""
    shape = tuple(int(n) for n in shape)
    return jax.tree_util.tree_map(lambda x: _broadcast_p.bind(jnp.asarray(x), shape=shape), tree)


def contract_bilinear(U, M, V, *, einsum: bool = False):
    """Element matrices ``K[e, c, i, d, j] = sum_{q,k,l} U_k[e, q, i] M[c, k, d, l, e, q] V_l[e, q, j]``.

    Arguments:
        U, V: lists of jet columns, each ``(ne | 1, nq | 1, nloc)`` (size-1 axes broadcast).
        M: ``(C, ku, C, kv, ne, nq)`` kernel matrices at the points, weights included; jet pairs first (a
            layout XLA reduces over fast in the kernel's transpose, see :mod:`igax.fem.forms.assembly`).
        einsum: contract (and differentiate) with the einsum forms, which XLA runs as GEMMs: faster for
            elements with many dofs per point, and cheaper to compile; else unrolled multiply-adds.

    Returns:
        ``(ne, C, nloc, C, nloc)``. Differentiable in all three (JVP and VJP each about one contraction).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.fem.forms._contract import contract_bilinear
        >>> U = [jnp.ones((3, 4, 6)), jnp.ones((3, 4, 6))]       # two jets, (ne, nq, nloc)
        >>> M = jnp.ones((1, 2, 1, 2, 3, 4))                      # (C, ku, C, kv, ne, nq)
        >>> K = contract_bilinear(U, M, U)
        >>> K.shape, float(K[0, 0, 0, 0, 0])                      # 4 points x 2 x 2 jet pairs
        ((3, 1, 6, 1, 6), 16.0)
    """
    dtype = jnp.result_type(M, *U, *V)
    args = [jnp.asarray(a, dtype) for a in (*U, *V, M)]
    return _bilinear_p.bind(*args, ku=len(U), kv=len(V), einsum=bool(einsum))


def contract_linear(V, L, *, einsum: bool = False):
    """Element vectors ``b[e, c, i] = sum_{q,k} V_k[e, q, i] L[e, q, c, k]`` (``V``: jet columns)."""
    ne, nq = L.shape[:2]
    if einsum:
        return jnp.einsum("eqki,eqck->eci", _stack(V, ne, nq), L)
    return sum(_col(V, k, q)[:, None, :] * L[:, q, :, None, k] for q in range(nq) for k in range(len(V)))


# -- unit jets: the basis functions' values and gradients as the kernels' arguments --------------------------
def jet_columns(tables: Tables, keep):
    """The jet entries kept, each (ne | 1, nq | 1, nloc): 0 -> values, k >= 1 -> gradient component k - 1."""
    return [tables.phi if k == 0 else tables.dphi[..., k - 1] for k in keep]


def jet_select(space: FunctionSpace, dtype, use_value: bool, use_grad: bool):
    """Unit jets restricted to the used entries: values (m, *vs), grads (m, *vs, dim), kept jet indices."""
    d1 = space.plan.dim + 1
    keep = ([0] if use_value else []) + (list(range(1, d1)) if use_grad else [])
    val, grad = unit_jets(space, dtype)
    C = space.plan.ncomp
    rows = np.array([c * d1 + k for c in range(C) for k in keep], dtype=np.int64)
    return val[rows], grad[rows], keep


def unit_jets(space: FunctionSpace, dtype):
    """Unit jets of the (vector) space: (m, *vs) values and (m, *vs, dim) gradients, m = ncomp * (1 + dim)."""
    p = space.plan
    d = p.dim
    eye = jnp.eye(p.ncomp * (1 + d), dtype=dtype).reshape(-1, p.ncomp, 1 + d)
    val, grad = eye[..., 0], eye[..., 1:]
    if not p.value_shape:
        val, grad = val[:, 0], grad[:, 0]
    return val, grad
