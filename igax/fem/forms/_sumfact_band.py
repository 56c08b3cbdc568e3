"""The band contraction of one chunk of sum-factorised assembly, as a primitive with written-out derivatives.

One chunk of :func:`igax.fem.forms._sumfact_ops.contract` maps the kernel matrices at the chunk's points,
``D (S, blocks, q_0, ..., q_{d-1})``, to the band rows the chunk touches, ``(blk + p_0, blocks, n_1, ...,
n_{d-1}, L_0, ..., L_{d-1})``, by contracting one direction at a time with the univariate band tables
(:func:`_step`). The map is linear in ``D``, so

- its tangent is the same contraction of the tangent of ``D`` (a JVP costs one more contraction), and
- its transpose (the cotangent of ``D`` from a cotangent of the band rows) is the transposed sum
  factorisation: direction 0 first, then ``1, ..., d-1``, each step the band rows of an element read back
  as ``p + 1`` shifted slices and one batched matrix product with the transposed band table, the summed
  states handed back to their members. The same tables, the same products, in reverse order.

Why a primitive: left to JAX, the transpose of a chunk's contraction took 2x its forward (3.3 against 1.65
ms per chunk, degree 3 on 97 x 97 elements, 2 cores); written out, with the band tables stored transposed,
1.9 ms. Before it, the map from the kernel matrices to ``D`` has a written-out transpose too
(:mod:`igax.fem.forms._sumfact_points_vjp`); the rest of a gradient (the geometry's and the kernel's
pointwise derivatives, the coefficients' evaluation adjoint) keeps JAX's automatic derivatives
(:mod:`igax.fem.forms._sumfact_points`), and geometry derivatives pass through this transpose too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from igax.fem.forms._sumfact_band2d import band_2d, band_2d_transpose, spec_2d
from igax.fem.forms._sumfact_compact import step_compact, step_compact_transpose

__all__ = ["BandSpec", "band", "band_transpose"]


class BandSpec:
    """The static structure of one chunk's contraction (hashed by identity: a primitive parameter).

    Arguments:
        dirs: the directions (:class:`~igax.fem.forms._sumfact_plan.Direction`), direction 0 whole.
        sched: the state schedule (:func:`~igax.fem.forms._sumfact_plan.scalar_steps`).
        tables: per step, the band tables of its output states (direction 0's over all padded elements).
        blk: direction-0 elements per chunk; nblocks: component blocks; nstates: states of ``D``.
    """

    def __init__(
        self, dirs: list, sched: list, tables: list, blk: int, nblocks: int, nstates: int, dtype, half=False
    ):
        self.dirs, self.sched, self.tables = dirs, sched, tables
        # The transposed tables, stored contiguous: a batched product with them ran 1.4x faster than one that
        # contracts the tables' first axis (2 cores, degree 3: 2.6 -> 1.9 ms per chunk, the forward 1.7 ms).
        self.tables_t = [[np.ascontiguousarray(np.swapaxes(A, 1, 2)) for A in step] for step in tables]
        self.blk, self.nblocks, self.nstates, self.dtype = int(blk), int(nblocks), int(nstates), dtype
        d0 = dirs[0]
        self.d = len(dirs)
        self.q = (self.blk * d0.nq,) + tuple(dd.nv * dd.nq for dd in dirs[1:])  # the chunk's point grid
        self.rest = tuple(dd.n for dd in dirs[1:]) + tuple(dd.L for dd in dirs)  # a band row
        if half:  # 2D: the entries with delta_0 >= p_0 only (igax.fem.forms._sumfact_band2d.half_applies)
            self.rest = self.rest[:1] + (dirs[0].p + 1,) + self.rest[2:]
        # slab axes (rows, L_0, n_1, L_1, ..., n_{d-1}, L_{d-1}) -> (rows, n_1, ..., L_0, L_1, ...)
        d = self.d
        self.perm = [0] + [2 * k for k in range(1, d)] + [2 * k + 1 for k in range(d)]
        self.inv_perm = list(np.argsort(self.perm))
        # Shapes of the states before each step of directions d-1, ..., 1 (the transpose walks them back).
        shape = (self.nstates, 1) + self.q
        self.shapes = []
        for st in sched[:-1]:
            dd = dirs[st["k"]]
            self.shapes.append(shape)
            shape = (len(st["outs"]), dd.n * dd.L) + shape[1:-1]
        self.last_in = shape  # (S, n_{d-1} L_{d-1}, ..., n_1 L_1, 1, q_0) before direction 0
        self.Y = int(np.prod(shape[1:-1]))
        # 2D with few states: the fused schedule of igax.fem.forms._sumfact_band2d (the same map), or None.
        self.fused2d = spec_2d(dirs, sched, tables, self.blk, self.nblocks, dtype, half)

    def out_shape(self) -> tuple:
        return (self.blk + self.dirs[0].p, self.nblocks) + self.rest

    def in_shape(self) -> tuple:
        return (self.nstates, self.nblocks) + self.q


def _step(G, tables: list, outs: list, p: int):
    """Contract the last axis of ``G (S, pre..., nv nq)`` -> ``(S', n, L, pre...)`` (``n = nv + p``).

    For each output state, its member states' values are stacked as ``(nv, m nq, pre)`` and multiplied by
    the band table ``(nv, (p + 1) L, m nq)`` (one batched matrix product over the elements), and the element
    rows ``a`` are added into the band rows ``v + a`` as shifted slices.
    """
    pre = G.shape[1:-1]
    nv = tables[0].shape[0]
    nq = G.shape[-1] // nv
    L = 2 * p + 1
    res = []
    for (members, _), A in zip(outs, tables, strict=True):
        Gm = jnp.stack([G[m].reshape((-1, nv, nq)) for m in members], axis=0)  # (m, P, nv, nq)
        Gm = jnp.transpose(Gm, (2, 0, 3, 1)).reshape((nv, len(members) * nq, -1))  # (nv, m nq, P)
        O = jnp.matmul(A, Gm).reshape((nv, p + 1, L, -1))  # (nv, p + 1, L, P)
        band = sum(jnp.pad(O[:, a], ((a, p - a), (0, 0), (0, 0))) for a in range(p + 1))  # (n, L, P)
        res.append(band.reshape(band.shape[:2] + pre))
    return jnp.stack(res)


def _step_transpose(Gb, tables: list, outs: list, p: int, nin: int, pre: tuple):
    """The transpose of :func:`_step`: ``(S', n, L, P) -> (nin, *pre, nv nq)`` (``tables``: transposed).

    Per output state: the band rows ``v + a`` of element ``v`` read back (``p + 1`` shifted slices), one
    batched product with the transposed band table (``(nv, m nq, (p + 1) L) x (nv, (p + 1) L, P)``), and the
    member states' values at the element's Gauss points handed back to them.
    """
    res = [None] * nin
    for j, ((members, _), At) in enumerate(zip(outs, tables, strict=True)):
        nv, m = At.shape[0], len(members)
        nq = At.shape[1] // m
        band = Gb[j]  # (n, L, P)
        L, P = band.shape[1], band.shape[2]
        O = jnp.stack([band[a : a + nv] for a in range(p + 1)], axis=1).reshape((nv, (p + 1) * L, P))
        Gm = jnp.matmul(At, O)  # (nv, m nq, P)
        Gm = jnp.transpose(Gm.reshape((nv, m, nq, P)), (1, 3, 0, 2)).reshape((m,) + pre + (nv * nq,))
        for i, mem in enumerate(members):
            res[mem] = Gm[i]
    return jnp.stack(res)


def _tables(spec: BandSpec, start, transposed: bool = False):
    """The band tables (or their transposes) as arrays, direction 0's cut to the chunk's elements."""
    tables = spec.tables_t if transposed else spec.tables
    tabs = [[jnp.asarray(A, spec.dtype) for A in step] for step in tables]
    tabs[-1] = [jax.lax.dynamic_slice_in_dim(A, start, spec.blk, axis=0) for A in tabs[-1]]
    return tabs


def _steps(spec: BandSpec) -> tuple:
    """The step and its transpose: in 3D over the nonzero rows of the band tables only
    (:mod:`igax.fem.forms._sumfact_compact`). One chunk of 3D degree-2 elasticity (31^3 elements, 6 blocks
    of 9 states, 2 cores shared with other jobs, CPU time, medians of 15 interleaved calls): forward 37 -> 28
    ms, transpose 51 -> 34 ms."""
    return (step_compact, step_compact_transpose) if spec.d == 3 else (_step, _step_transpose)


def _band_impl(D, start, *, spec: BandSpec):
    """The chunk's band rows from its kernel matrices (see :func:`igax.fem.forms._sumfact_ops.contract`)."""
    if spec.fused2d is not None and spec.fused2d.forward:
        return band_2d(D, start, spec.fused2d)
    dirs, sched = spec.dirs, spec.sched
    d0 = dirs[0]
    tabs = _tables(spec, start)
    step = _steps(spec)[0]

    def block_slab(b):
        G = jax.lax.dynamic_slice_in_dim(D, b, 1, axis=1)  # (S, 1, q_0, ..., q_{d-1})
        for st, tb in zip(sched[:-1], tabs[:-1], strict=True):
            G = step(G, tb, st["outs"], dirs[st["k"]].p)  # (S', n_k, L_k, pre...)
            G = G.reshape((G.shape[0], -1) + G.shape[3:])  # the band merged; the next direction is last
        G = G.reshape((G.shape[0], -1, spec.q[0]))  # (S, Y, q_0)
        slab = step(G, tabs[-1], sched[-1]["outs"], d0.p)[0]  # (blk + p, L_0, Y)
        slab = slab.reshape((spec.blk + d0.p, d0.L) + tuple(x for dd in dirs[1:] for x in (dd.n, dd.L)))
        return jnp.transpose(slab, spec.perm)

    # Component blocks one at a time (a scan): smaller arrays, faster on CPU.
    _, slabs = jax.lax.scan(lambda c, b: (c, block_slab(b)), None, jnp.arange(spec.nblocks))
    return jnp.moveaxis(slabs, 0, 1)  # (blk + p, blocks, n_1, ..., L_0, ...)


def _band_transpose_impl(ct, start, *, spec: BandSpec):
    """The cotangent of the kernel matrices ``D`` from one of the chunk's band rows (the transpose)."""
    if spec.fused2d is not None:
        return band_2d_transpose(ct, start, spec.fused2d)
    dirs, sched = spec.dirs, spec.sched
    d0 = dirs[0]
    tabs = _tables(spec, start, transposed=True)
    step_t = _steps(spec)[1]

    def block_bar(b):
        c = jax.lax.dynamic_index_in_dim(ct, b, axis=1, keepdims=False)  # (blk + p, n_1, ..., L_0, ...)
        c = jnp.transpose(c, spec.inv_perm).reshape((1, spec.blk + d0.p, d0.L, spec.Y))
        last = spec.last_in
        G = step_t(c, tabs[-1], sched[-1]["outs"], d0.p, last[0], (spec.Y,))  # (S, Y, q_0)
        G = G.reshape(last)
        for st, tb, shape in reversed(list(zip(sched[:-1], tabs[:-1], spec.shapes, strict=True))):
            dd = dirs[st["k"]]
            G = G.reshape((G.shape[0], dd.n, dd.L, -1))  # (S', n_k, L_k, P)
            G = step_t(G, tb, st["outs"], dd.p, shape[0], shape[1:-1])  # (S, pre..., q_k)
        return G[:, 0]  # (S, q_0, ..., q_{d-1})

    _, bars = jax.lax.scan(lambda c, b: (c, block_bar(b)), None, jnp.arange(spec.nblocks))
    return jnp.moveaxis(bars, 0, 1)  # (S, blocks, q_0, ...)


_band_p = Primitive("igax_sumfact_band")
_band_p.def_impl(_band_impl)
_band_p.def_abstract_eval(lambda D, start, *, spec: jax.core.ShapedArray(spec.out_shape(), D.dtype))
mlir.register_lowering(_band_p, mlir.lower_fun(_band_impl, multiple_results=False))

_band_t_p = Primitive("igax_sumfact_band_transpose")
_band_t_p.def_impl(_band_transpose_impl)
_band_t_p.def_abstract_eval(lambda ct, start, *, spec: jax.core.ShapedArray(spec.in_shape(), ct.dtype))
mlir.register_lowering(_band_t_p, mlir.lower_fun(_band_transpose_impl, multiple_results=False))


def _linear_jvp(prim):
    def jvp(primals, tangents, *, spec):
        x, start = primals
        out = prim.bind(x, start, spec=spec)
        return out, prim.bind(ad.instantiate_zeros(tangents[0]), start, spec=spec)

    return jvp


def _linear_transpose(other):
    def transpose(ct, x, start, *, spec):
        if ad.is_undefined_primal(start):  # pragma: no cover - an integer is never a linear input
            raise RuntimeError("internal error: the chunk start of the band is not a linear input.")
        if type(ct) is ad.Zero:
            return [None, None]
        return [other.bind(ct, start, spec=spec), None]

    return transpose


def _batch(prim):
    """vmap: one chunk contraction per batch member (a ``lax.map``), batch axis first."""

    def rule(args, dims, *, spec):
        x, start = args
        dx, ds = dims
        x = jnp.moveaxis(x, dx, 0) if dx is not None else x
        if ds is None:
            if dx is None:  # pragma: no cover - JAX batches a primitive only when an argument is batched
                return prim.bind(x, start, spec=spec), None
            return jax.lax.map(lambda a: prim.bind(a, start, spec=spec), x), 0
        start = jnp.moveaxis(start, ds, 0)
        if dx is None:
            x = jnp.broadcast_to(x, start.shape[:1] + x.shape)
        return jax.lax.map(lambda a: prim.bind(a[0], a[1], spec=spec), (x, start)), 0

    return rule


ad.primitive_jvps[_band_p] = _linear_jvp(_band_p)
ad.primitive_jvps[_band_t_p] = _linear_jvp(_band_t_p)
ad.primitive_transposes[_band_p] = _linear_transpose(_band_t_p)
ad.primitive_transposes[_band_t_p] = _linear_transpose(_band_p)
batching.primitive_batchers[_band_p] = _batch(_band_p)
batching.primitive_batchers[_band_t_p] = _batch(_band_t_p)


def band(D, start, spec: BandSpec):
    """One chunk's band rows ``(blk + p_0, blocks, n_1, ..., L_0, ...)`` from its kernel matrices ``D``.

    Arguments:
        D: ``(S, blocks, blk nq_0, Nq_1, ..., Nq_{d-1})`` kernel matrices at the chunk's points.
        start: the chunk's first direction-0 element (an integer, traced).
        spec: the static structure (:class:`BandSpec`).

    Returns:
        The band rows; linear in ``D``, with written-out JVP, transpose (:func:`band_transpose`) and vmap.

    Example (a 1D degree-1 patch, one state: the rows of a mass-like band from unit point values):
        >>> import jax.numpy as jnp, numpy as np
        >>> from igax.fem import SplineSpace, geometry
        >>> from igax.fem.forms._sumfact_plan import sumfact_plan, scalar_steps
        >>> from igax.fem.forms._sumfact_band import BandSpec, band
        >>> V = SplineSpace(geometry.rectangle().refine(1, (2, 1)))
        >>> sf = sumfact_plan(V); sched = scalar_steps([0], [0], 2)
        >>> tabs = [[sf.dirs[s["k"]].band_table(fl) for _, fl in s["outs"]] for s in sched]
        >>> spec = BandSpec(sf.dirs, sched, tabs, 2, 1, 1, jnp.float64)
        >>> band(jnp.ones(spec.in_shape()), 0, spec).shape
        (3, 1, 2, 3, 3)
    """
    return _band_p.bind(D, jnp.asarray(start, jnp.int32), spec=spec)


def band_transpose(ct, start, spec: BandSpec):
    """The transpose of :func:`band`: a cotangent of the band rows -> the cotangent of ``D``."""
    return _band_t_p.bind(ct, jnp.asarray(start, jnp.int32), spec=spec)
