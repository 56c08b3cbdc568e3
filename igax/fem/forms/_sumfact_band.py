"""The band contraction of one chunk of sum-factorised assembly, as a primitive with written-out derivatives.

One chunk of :func:`igax.fem.forms._sumfact_ops.contract` maps the kernel matrices at the chunk's points,
``D (S, blocks, q_0, ..., q_{d-1})``, to the band rows the chunk touches, ``(blk + p_0, blocks, L_0, n_1, L_1,
..., n_{d-1}, L_{d-1})``, one direction at a time, ``d-1, ..., 1`` and then direction 0:

- directions ``d-1, ..., 1`` (:func:`_fused`): band row ``i`` sums its elements ``v = i - a`` directly,
  ``sum_{a, j, t} T[v, a, b, j, t] G[m_j, ..., v, t, ...]`` at ``delta = b - a + p``, broadcast products of
  static slices that XLA fuses into one loop per output state. The contracted point axis is replaced in place
  by ``(n, L)``: no transposes, and no element-matrix intermediate ``((p + 1) L`` entries per element, 7x the
  input at degree 3) written and re-read to be summed into the band;
- direction 0 (:func:`_dir0`): one batched GEMM over the chunk's elements with the element band's nonzero
  rows ``(a, b)`` only (``(p + 1)^2``, not ``(p + 1) L``: 16 of 28 at degree 3) and the states and Gauss
  points as its inner dimension, then one fused pass adding the element rows into the band rows.

The map is linear in ``D``, so its tangent is the same contraction of the tangent of ``D`` (a JVP costs one
more contraction), and its transpose (the cotangent of ``D`` from a cotangent of the band rows) is the
transposed sum factorisation with the same tables in reverse order: direction 0's GEMM with the transposed
table, then each fused step read backwards (:func:`_fused_transpose`: element ``v``'s Gauss points collect
the band rows ``v + a``).

Why a primitive: left to JAX, the transpose of a chunk's contraction took 2x its forward (3.3 against 1.65
ms per chunk, degree 3 on 97 x 97 elements, 2 cores). Measured per chunk of 3 degree-3 elements on 497 x 497
elements (2 cores, other jobs running): forward 3.25 -> 1.35 ms and transpose 2.03 -> 1.28 ms against the
previous batched products of the full ``(p + 1) L`` element band with transposes between the steps. The rest
of a gradient (the geometry's and the kernel's pointwise derivatives, the coefficients' evaluation adjoint)
keeps JAX's automatic derivatives (:mod:`igax.fem.forms._sumfact_points`), and geometry derivatives pass
through this transpose too.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = ["BandSpec", "band", "band_transpose"]


class BandSpec:
    """The static structure of one chunk's contraction (hashed by identity: a primitive parameter).

    Arguments:
        dirs: the directions (:class:`~igax.fem.forms._sumfact_plan.Direction`), direction 0 whole.
        sched: the state schedule (:func:`~igax.fem.forms._sumfact_plan.scalar_steps`).
        tables: per step, the band tables of its output states
            (:meth:`~igax.fem.forms._sumfact_plan.Direction.band_table`; direction 0's over all padded
            elements).
        blk: direction-0 elements per chunk; nblocks: component blocks; nstates: states of ``D``.
    """

    def __init__(self, dirs: list, sched: list, tables: list, blk: int, nblocks: int, nstates: int, dtype):
        self.dirs, self.sched = dirs, sched
        self.blk, self.nblocks, self.nstates, self.dtype = int(blk), int(nblocks), int(nstates), dtype
        self.d = len(dirs)
        ab = [
            [
                _ab_table(A, dirs[st["k"]], len(members))
                for (members, _), A in zip(st["outs"], step, strict=True)
            ]
            for st, step in zip(sched, tables, strict=True)
        ]
        # Directions d-1, ..., 1: element tables padded by p on both sides, so that row i's term of its
        # element i - a is the static slice [p - a, p - a + n) (no gather).
        self.fused = [
            [np.pad(T, [(dirs[st["k"]].p,) * 2] + [(0, 0)] * 4) for T in step]
            for st, step in zip(sched[:-1], ab[:-1], strict=True)
        ]
        # Direction 0 (one output state; its members are all states left): a GEMM per element with rows
        # (a, b) and columns (state, Gauss point), and its transpose stored contiguous.
        ((T0,),) = ab[-1:]
        d0 = dirs[0]
        self.gemm = np.ascontiguousarray(T0.reshape(T0.shape[0], (d0.p + 1) ** 2, -1))
        self.gemm_t = np.ascontiguousarray(np.swapaxes(self.gemm, 1, 2))
        self.q = (self.blk * d0.nq,) + tuple(dd.nv * dd.nq for dd in dirs[1:])  # the chunk's point grid
        self.rest = (d0.L,) + tuple(x for dd in dirs[1:] for x in (dd.n, dd.L))  # a band row

    def out_shape(self) -> tuple:
        return (self.blk + self.dirs[0].p, self.nblocks) + self.rest

    def in_shape(self) -> tuple:
        return (self.nstates, self.nblocks) + self.q


def _ab_table(A, dd, m: int) -> np.ndarray:
    """A band table ``(nv, (p + 1) L, m nq)`` on the nonzero entries only: ``(nv, a, b, m, nq)``, the product
    ``X_u[v, t, a] X_v[v, t, b]`` of member ``j`` (the band table holds it at ``delta = b - a + p``)."""
    p = dd.p
    Ar = np.asarray(A).reshape(A.shape[0], p + 1, 2 * p + 1, m, -1)
    return np.stack([Ar[:, a, p - a : 2 * p - a + 1] for a in range(p + 1)], axis=1)


def _fused(G, ax: int, tabs: list, outs: list, p: int, nq: int, split: bool = False):
    """Contract axis ``ax`` of ``G (S, pre..., nv nq, post...)`` -> ``(S', pre..., n, L, post...)``.

    Row ``i`` of the band gathers the elements ``v = i - a`` (``a = 0..p``): per ``(a, b)`` the terms
    ``T[v, a, b, j, t] G[m_j, ..., v, t, ...]`` summed over members ``j`` and Gauss points ``t`` and put at
    ``delta = b - a + p``: broadcast products of static slices, which XLA fuses into one loop per output
    state that writes the band once (no element-matrix intermediate, no transpose, vectorised along the
    trailing axes or along ``delta``). ``split``: the output states as a list (not stacked).
    """
    nv = G.shape[ax] // nq
    n = nv + p
    pre, post = G.shape[1:ax], G.shape[ax + 1 :]
    G = G.reshape(G.shape[:ax] + (nv, nq) + post)
    Gp = jnp.pad(G, [(0, 0)] * ax + [(p, p), (0, 0)] + [(0, 0)] * len(post))
    Ga = [jax.lax.slice_in_dim(Gp, p - a, p - a + n, axis=ax) for a in range(p + 1)]  # (S, pre, n, nq, post)
    tail = (1,) * len(post)
    res = []
    for (members, _), T in zip(outs, tabs, strict=True):
        T = jnp.asarray(T, G.dtype)  # (nv + 2p, a, b, m, nq)
        out = 0
        for a in range(p + 1):
            Ta = T[p - a : p - a + n, a]  # (n, b, m, nq)
            term = 0
            for j, mem in enumerate(members):
                g = Ga[a][mem]  # (pre, n, nq, post)
                for t in range(nq):
                    gt = jax.lax.index_in_dim(g, t, len(pre) + 1, keepdims=False)  # (pre, n, post)
                    gt = jnp.expand_dims(gt, len(pre) + 1)  # (pre, n, 1, post)
                    term = term + Ta[:, :, j, t].reshape((n, p + 1) + tail) * gt
            out = out + jnp.pad(term, [(0, 0)] * (len(pre) + 1) + [(p - a, a)] + [(0, 0)] * len(post))
        res.append(out)
    # Materialised: XLA would otherwise fuse this step into the next one's loop and recompute it for each of
    # the (p + 1) m nq terms that read it.
    return res if split else jax.lax.optimization_barrier(jnp.stack(res))


def _fused_transpose(H, ax: int, tabs: list, outs: list, p: int, nq: int, nin: int):
    """The transpose of :func:`_fused`: ``(S', pre..., n, L, post...) -> (nin, pre..., nv nq, post...)``.

    Element ``v``'s values at its Gauss points collect the band rows ``v + a`` at ``delta = b - a + p``
    (static slices), weighted by the same tables; each input state is a member of one output state.
    """
    n = H.shape[ax]
    nv = n - p
    pre, post = H.shape[1:ax], H.shape[ax + 2 :]
    tail = (1,) * len(post)
    res = [None] * nin
    for o, ((members, _), T) in enumerate(zip(outs, tabs, strict=True)):
        T = jnp.asarray(T, H.dtype)[p : p + nv]  # (nv, a, b, m, nq): element v's table
        Ho = H[o]  # (pre, n, L, post)
        Hs = [
            jax.lax.slice_in_dim(
                jax.lax.slice_in_dim(Ho, a, a + nv, axis=ax - 1), p - a, 2 * p - a + 1, axis=ax
            )
            for a in range(p + 1)
        ]  # (pre, nv, b, post)
        for j, mem in enumerate(members):
            acc = 0
            for a in range(p + 1):
                for b in range(p + 1):
                    h = jax.lax.index_in_dim(Hs[a], b, ax, keepdims=False)  # (pre, nv, post)
                    h = jnp.expand_dims(h, ax)  # (pre, nv, 1, post)
                    acc = acc + T[:, a, b, j, :].reshape((nv, nq) + tail) * h
            res[mem] = acc.reshape(pre + (nv * nq,) + post)
    return jnp.stack(res)


def _dir0(Gs: list, A, p: int, nq: int, blk: int):
    """Direction 0 of a chunk: the states ``Gs`` (each ``(blk nq, Y...)``) -> the slab ``(blk + p, L, Y...)``.

    One batched GEMM over the chunk's elements, rows ``(a, b)`` of the element band and columns
    ``(state, Gauss point)`` (``A``: ``(blk, (p + 1)^2, S nq)``), then the element rows ``a`` added into the
    band rows ``v + a`` at ``delta = b - a + p`` (shifted slices, one fused pass). The GEMM's operand
    ``(blk, S, nq, Y)`` is written state by state (in-place updates of one buffer): stacked, XLA fused the
    states' computations into one loop that picked a state per entry, 2.3x slower (degree 3, 2 cores).
    """
    S, Y = len(Gs), Gs[0].shape[1:]
    buf = jnp.zeros((blk, S, nq, math.prod(Y)), Gs[0].dtype)
    for s, g in enumerate(Gs):
        buf = buf.at[:, s].set(g.reshape((blk, nq, -1)))
    O = jnp.matmul(A, buf.reshape((blk, S * nq, -1))).reshape((blk, p + 1, p + 1, -1))
    slab = sum(jnp.pad(O[:, a], ((a, p - a), (p - a, a), (0, 0))) for a in range(p + 1))
    return slab.reshape((blk + p, 2 * p + 1) + Y)


def _dir0_transpose(ct, At, p: int, nq: int, blk: int, S: int):
    """The transpose of :func:`_dir0`: the slab ``(blk + p, L, Y...)`` -> ``(S, blk nq, Y...)``."""
    Y = ct.shape[2:]
    c = ct.reshape(ct.shape[:2] + (-1,))
    Ot = jnp.stack([c[a : a + blk, p - a : 2 * p - a + 1] for a in range(p + 1)], axis=1)  # (blk, a, b, Y)
    Gm = jnp.matmul(At, Ot.reshape((blk, (p + 1) ** 2, -1)))  # (blk, S nq, Y)
    return jnp.swapaxes(Gm.reshape((blk, S, nq, -1)), 0, 1).reshape((S, blk * nq) + Y)


def _gemm_tables(spec, start, transposed: bool = False):
    A = jnp.asarray(spec.gemm_t if transposed else spec.gemm, spec.dtype)
    return jax.lax.dynamic_slice_in_dim(A, start, spec.blk, axis=0)


def _band_impl(D, start, *, spec: BandSpec):
    """The chunk's band rows from its kernel matrices (see :func:`igax.fem.forms._sumfact_ops.contract`)."""
    dirs, sched, d0 = spec.dirs, spec.sched, spec.dirs[0]
    A0 = _gemm_tables(spec, start)

    def block_slab(b):
        G = jax.lax.dynamic_index_in_dim(D, b, axis=1, keepdims=False)  # (S, q_0, ..., q_{d-1})
        G = list(G) if len(sched) == 1 else G
        for i, (st, tabs) in enumerate(zip(sched[:-1], spec.fused, strict=True)):
            k = st["k"]  # q_k -> (n_k, L_k); the last step's states apart, for direction 0's GEMM
            G = _fused(G, k + 1, tabs, st["outs"], dirs[k].p, dirs[k].nq, split=i == len(sched) - 2)
        return _dir0(G, A0, d0.p, d0.nq, spec.blk)  # (blk + p, L_0, n_1, L_1, ...)

    # Component blocks one at a time (a scan): smaller arrays, faster on CPU.
    _, slabs = jax.lax.scan(lambda c, b: (c, block_slab(b)), None, jnp.arange(spec.nblocks))
    return jnp.moveaxis(slabs, 0, 1)  # (blk + p, blocks, L_0, n_1, L_1, ...)


def _band_transpose_impl(ct, start, *, spec: BandSpec):
    """The cotangent of the kernel matrices ``D`` from one of the chunk's band rows (the transpose)."""
    dirs, sched, d0 = spec.dirs, spec.sched, spec.dirs[0]
    At = _gemm_tables(spec, start, transposed=True)
    nlast = len(sched[-1]["outs"][0][0])  # states before direction 0

    def block_bar(b):
        c = jax.lax.dynamic_index_in_dim(ct, b, axis=1, keepdims=False)  # (blk + p, L_0, n_1, L_1, ...)
        G = _dir0_transpose(c, At, d0.p, d0.nq, spec.blk, nlast)
        nin = [sum(len(m) for m, _ in st["outs"]) for st in sched]
        for i in range(len(sched) - 2, -1, -1):
            st = sched[i]
            k = st["k"]
            G = _fused_transpose(G, k + 1, spec.fused[i], st["outs"], dirs[k].p, dirs[k].nq, nin[i])
        return G  # (S, q_0, ..., q_{d-1})

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
