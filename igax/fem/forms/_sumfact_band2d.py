"""A fused band contraction for one chunk of 2D sum-factorised assembly (the same map, another schedule).

:mod:`igax.fem.forms._sumfact_band` contracts a chunk direction by direction with one batched matrix product
per element and state (``(p + 1) L x m nq`` times ``m nq x P``) and adds the element rows into the band as
shifted slices: it writes an element-matrix intermediate ``(p + 1) L / nq`` times the size of its input and
runs hundreds of tiny products. In 2D with few states this path instead

- contracts direction 1 by one fused loop per output state (:func:`_fused`): band row ``i`` sums its
  elements ``v = i - a`` directly, as broadcast products of static slices (no element-matrix intermediate,
  no transpose), and
- contracts direction 0 by one batched product per chunk on the nonzero ``(a, b)`` pairs of the element
  band only (``(p + 1)^2`` of ``(p + 1) L`` rows: 16 of 28 at degree 3), with the states and Gauss points
  as its inner dimension, then one fused pass that adds the element rows into the band rows, written
  straight in the band layout of :mod:`igax.fem.forms._sumfact_ops` (``(rows, n_1, L_0, L_1)``).

The transpose mirrors both (direction 0 first: the band rows read back as slices, one batched product with
the stored transposed table; then each element's Gauss points of direction 1 collect its band rows). Both
are the same linear maps as the general path's (equal to rounding), so the primitive's JVP, transpose and
vmap rules apply unchanged; :func:`spec_2d` decides per case whether this schedule is used.

Which cases take it, and the figures behind the rule: :func:`spec_2d`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Band2DSpec", "spec_2d", "half_applies", "band_2d", "band_2d_transpose"]

# The most states of D for which the forward takes this schedule, and for which its transpose does
# (see spec_2d).
_MAX_STATES = 4
_MAX_STATES_T = 9


class Band2DSpec:
    """The tables of the fused 2D schedule (built once per :class:`~igax.fem.forms._sumfact_band.BandSpec`).

    Attributes:
        fused: direction 1's ``(a, b)`` tables per output state, ``(nv_1 + 2 p_1, p_1 + 1, p_1 + 1, m, nq_1)``
            (padded by ``p_1`` elements on both sides: row ``i``'s element ``i - a`` is a static slice).
        gemm, gemm_t: direction 0's table ``(nv_0 padded, (p_0 + 1)^2, S nq_0)`` and its transpose.
    """

    def __init__(self, dirs: list, sched: list, tables: list, blk: int, nblocks: int, dtype, half=False):
        d0, d1 = dirs
        st1, st0 = sched
        self.dirs, self.sched, self.blk, self.nblocks, self.dtype = dirs, sched, int(blk), int(nblocks), dtype
        # half: the band's entries with delta_0 >= p_0 only (a symmetric matrix; see half_applies)
        p0 = d0.p
        self.half = bool(half)
        self.pairs = [(a, b) for a in range(p0 + 1) for b in range(p0 + 1) if b >= a or not half]
        self.fused = [
            np.pad(_ab_table(A, d1, len(members)), [(d1.p, d1.p)] + [(0, 0)] * 4)
            for (members, _), A in zip(st1["outs"], tables[0], strict=True)
        ]
        ((members0, _),) = st0["outs"]
        T0 = _ab_table(tables[1][0], d0, len(members0))
        T0 = T0.reshape(T0.shape[0], (p0 + 1) ** 2, -1)[:, [a * (p0 + 1) + b for a, b in self.pairs]]
        self.gemm = np.ascontiguousarray(T0)
        self.gemm_t = np.ascontiguousarray(np.swapaxes(self.gemm, 1, 2))
        self.nstates = sum(len(m) for m, _ in st1["outs"])
        self.nlast = len(members0)
        self.forward = self.nstates <= _MAX_STATES  # else only the transpose takes this schedule
        if half and not self.forward:  # pragma: no cover - guarded by half_applies
            raise RuntimeError("internal error: the half band needs the fused forward schedule.")


def half_applies(dirs: list, sched: list) -> bool:
    """Whether a 2D case can compute the half band (``delta_0 >= p_0``): the fused forward schedule (at most
    ``_MAX_STATES`` states). The caller decides whether the matrix is symmetric (a constant symmetric kernel
    on a polynomial patch: ``D`` is then symmetric at every point), and reads the other half mirrored: on
    degree 3 the direction-0 product has 10 rows instead of 16 and the band 4 of 7 entries of ``delta_0``."""
    return (
        len(dirs) == 2
        and len(sched) == 2
        and len(sched[-1]["outs"]) == 1
        and sum(len(m) for m, _ in sched[0]["outs"]) <= _MAX_STATES
    )


def spec_2d(
    dirs: list, sched: list, tables: list, blk: int, nblocks: int, dtype, half: bool = False
) -> Band2DSpec | None:
    """The fused schedule's tables when it is used for this case (its ``forward`` flag: for the forward
    too, not only the transpose), else None.

    The transpose takes it in 2D with up to ``_MAX_STATES_T`` states (every scalar-jet form, rational or
    not), the forward with up to ``_MAX_STATES`` (a polynomial patch: the gradient-gradient states of a
    Laplacian or diffusion, the one state of a mass matrix). With more (the rational path's 9) the general
    forward wins: the states summed into one output are one product there. Measured per chunk of 3
    degree-3 elements on 497 x 497 (CPU time, 2 cores, load 8-9, general -> fused): forward 1.26-1.34 ->
    1.16-1.19 ms (4 states), 1.93 -> 2.08 ms (9 states); transpose 1.42 -> 0.64 ms (4), 2.16 -> 1.14 ms (9).

    Example (a polynomial Laplacian's 4 states: forward and transpose both fused):
        >>> import jax.numpy as jnp
        >>> from igax.fem import SplineSpace, geometry
        >>> from igax.fem.forms._sumfact_plan import sumfact_plan, scalar_steps
        >>> from igax.fem.forms._sumfact_band2d import spec_2d
        >>> V = SplineSpace(geometry.rectangle().refine(degree=3, elements=4))
        >>> sf = sumfact_plan(V); sched = scalar_steps([1, 2], [1, 2], 2)
        >>> tabs = [[sf.dirs[s["k"]].band_table(fl) for _, fl in s["outs"]] for s in sched]
        >>> spec_2d(sf.dirs, sched, tabs, 2, 1, jnp.float64).forward
        True
    """
    if len(dirs) != 2 or len(sched) != 2 or len(sched[-1]["outs"]) != 1:
        return None
    if sum(len(m) for m, _ in sched[0]["outs"]) > _MAX_STATES_T:
        return None
    return Band2DSpec(dirs, sched, tables, blk, nblocks, dtype, half)


def _ab_table(A, dd, m: int) -> np.ndarray:
    """A band table ``(nv, (p + 1) L, m nq)`` on its nonzero entries only: ``(nv, a, b, m, nq)``, the product
    ``X_u[v, t, a] X_v[v, t, b]`` of member ``j`` (the band table holds it at ``delta = b - a + p``)."""
    p = dd.p
    Ar = np.asarray(A).reshape(A.shape[0], p + 1, 2 * p + 1, m, -1)
    return np.stack([Ar[:, a, p - a : 2 * p - a + 1] for a in range(p + 1)], axis=1)


def _fused(G, tabs: list, outs: list, p: int, nq: int) -> list:
    """Direction 1: ``G (S, P, nv nq)`` -> per output state ``(P, n, L)`` (``n = nv + p``).

    Row ``i`` of the band gathers the elements ``v = i - a`` (``a = 0..p``): per ``(a, b)`` the terms
    ``T[v, a, b, j, t] G[m_j, :, v, t]`` summed over members ``j`` and Gauss points ``t`` and put at
    ``delta = b - a + p``: broadcast products of static slices, which XLA fuses into one loop per output
    state that writes the band once.
    """
    P = G.shape[1]
    nv = G.shape[2] // nq
    n = nv + p
    Gp = jnp.pad(G.reshape(G.shape[:2] + (nv, nq)), [(0, 0), (0, 0), (p, p), (0, 0)])
    Ga = [Gp[:, :, p - a : p - a + n] for a in range(p + 1)]  # (S, P, n, nq): element i - a of row i
    res = []
    for (members, _), T in zip(outs, tabs, strict=True):
        T = jnp.asarray(T, G.dtype)  # (nv + 2p, a, b, m, nq)
        out = 0
        for a in range(p + 1):
            Ta = T[p - a : p - a + n, a]  # (n, b, m, nq)
            term = 0
            for j, mem in enumerate(members):
                for t in range(nq):
                    term = term + Ta[:, :, j, t] * Ga[a][mem][:, :, t, None]  # (P, n, b)
            out = out + jnp.pad(term, [(0, 0), (0, 0), (p - a, a)])
        res.append(out.reshape((P, n, 2 * p + 1)))
    return res


def _fused_transpose(H, tabs: list, outs: list, p: int, nq: int, nin: int):
    """The transpose of :func:`_fused`: ``(S', P, n, L) -> (nin, P, nv nq)``.

    Element ``v``'s values at its Gauss points collect the band rows ``v + a`` at ``delta = b - a + p``
    (static slices), weighted by the same tables; each input state is a member of one output state.
    """
    P, n = H.shape[1], H.shape[2]
    nv = n - p
    res = [None] * nin
    for o, ((members, _), T) in enumerate(zip(outs, tabs, strict=True)):
        T = jnp.asarray(T, H.dtype)[p : p + nv]  # (nv, a, b, m, nq): element v's table
        Hs = [H[o][:, a : a + nv, p - a : 2 * p - a + 1] for a in range(p + 1)]  # (P, nv, b)
        for j, mem in enumerate(members):
            acc = 0
            for a in range(p + 1):
                for b in range(p + 1):
                    acc = acc + T[:, a, b, j, :] * Hs[a][:, :, b, None]  # (P, nv, nq)
            res[mem] = acc.reshape((P, nv * nq))
    return jnp.stack(res)


def _dir0(Hs: list, A, p: int, nq: int, blk: int, half: bool = False):
    """Direction 0: the states ``Hs`` (each ``(blk nq, n_1, L_1)``) -> the slab ``(blk + p, n_1, L_0, L_1)``.

    One batched product over the chunk's elements, rows ``(a, b)`` of the element band and columns
    ``(state, Gauss point)`` (``A``: ``(blk, (p + 1)^2, S nq)``), then the element rows ``a`` added into the
    band rows ``v + a`` at ``delta_0 = b - a + p`` (shifted slices, one fused pass into the band layout). The
    product's operand ``(blk, S, nq, Y)`` is written state by state (in-place updates of one buffer):
    stacked, XLA fused the states' computations into one loop that picked a state per entry, 2.3x slower.
    """
    S, (n1, L1) = len(Hs), Hs[0].shape[1:]
    buf = jnp.zeros((blk, S, nq, n1 * L1), Hs[0].dtype)
    for s, g in enumerate(Hs):
        buf = buf.at[:, s].set(g.reshape((blk, nq, -1)))
    if half:  # rows (a, b >= a) only: delta_0 - p = b - a in [0, p - a]
        O = jnp.matmul(A, buf.reshape((blk, S * nq, -1))).reshape((blk, -1, n1, L1))
        out, k = 0, 0
        for a in range(p + 1):
            Oa = jnp.transpose(O[:, k : k + p + 1 - a], (0, 2, 1, 3))  # (blk, n_1, b - a, L_1)
            out = out + jnp.pad(Oa, ((a, p - a), (0, 0), (0, a), (0, 0)))
            k += p + 1 - a
        return out
    O = jnp.matmul(A, buf.reshape((blk, S * nq, -1))).reshape((blk, p + 1, p + 1, n1, L1))
    O = jnp.transpose(O, (0, 1, 3, 2, 4))  # (blk, a, n_1, b, L_1): fused into the pass below
    return sum(jnp.pad(O[:, a], ((a, p - a), (0, 0), (p - a, a), (0, 0))) for a in range(p + 1))


def _dir0_transpose(c, At, p: int, nq: int, blk: int, S: int, half: bool = False):
    """The transpose of :func:`_dir0`: the slab ``(blk + p, n_1, L_0, L_1)`` -> ``(S, blk nq, n_1, L_1)``."""
    n1, L1 = c.shape[1], c.shape[3]
    if half:  # (blk, (a, b >= a), n_1, L_1): rows v + a at delta_0 - p = b - a
        parts = [jnp.transpose(c[a : a + blk, :, : p + 1 - a], (0, 2, 1, 3)) for a in range(p + 1)]
        Ot = jnp.concatenate(parts, axis=1).reshape((blk, -1, n1 * L1))
    else:
        # (blk, a, n_1, b, L_1): element v's band rows v + a at delta_0 = b - a + p
        Ot = jnp.stack([c[a : a + blk, :, p - a : 2 * p - a + 1] for a in range(p + 1)], axis=1)
        Ot = jnp.transpose(Ot, (0, 1, 3, 2, 4)).reshape((blk, (p + 1) ** 2, n1 * L1))
    Gm = jnp.matmul(At, Ot)  # (blk, S nq, Y)
    return jnp.swapaxes(Gm.reshape((blk, S, nq, n1, L1)), 0, 1).reshape((S, blk * nq, n1, L1))


def _gemm_tables(spec: Band2DSpec, start, transposed: bool = False):
    A = jnp.asarray(spec.gemm_t if transposed else spec.gemm, spec.dtype)
    return jax.lax.dynamic_slice_in_dim(A, start, spec.blk, axis=0)


def band_2d(D, start, spec: Band2DSpec):
    """The chunk's band rows ``(blk + p_0, blocks, n_1, L_0, L_1)`` from ``D (S, blocks, q_0, q_1)``."""
    d0, d1 = spec.dirs
    st1 = spec.sched[0]
    A0 = _gemm_tables(spec, start)

    def block_slab(b):
        G = jax.lax.dynamic_index_in_dim(D, b, axis=1, keepdims=False)  # (S, q_0, q_1)
        Hs = _fused(G, spec.fused, st1["outs"], d1.p, d1.nq)
        return _dir0(Hs, A0, d0.p, d0.nq, spec.blk, spec.half)

    if spec.nblocks == 1:
        return block_slab(0)[:, None]
    # Component blocks one at a time (a scan): smaller arrays, faster on CPU.
    _, slabs = jax.lax.scan(lambda c, b: (c, block_slab(b)), None, jnp.arange(spec.nblocks))
    return jnp.moveaxis(slabs, 0, 1)


def band_2d_transpose(ct, start, spec: Band2DSpec):
    """The transpose of :func:`band_2d`: band rows -> the cotangent of ``D (S, blocks, q_0, q_1)``."""
    d0, d1 = spec.dirs
    st1 = spec.sched[0]
    At = _gemm_tables(spec, start, transposed=True)

    def block_bar(b):
        c = jax.lax.dynamic_index_in_dim(ct, b, axis=1, keepdims=False)  # (blk + p, n_1, L_0, L_1)
        H = _dir0_transpose(c, At, d0.p, d0.nq, spec.blk, spec.nlast, spec.half)  # (S', blk nq, n_1, L_1)
        return _fused_transpose(H, spec.fused, st1["outs"], d1.p, d1.nq, spec.nstates)

    if spec.nblocks == 1:
        return block_bar(0)[:, None]
    _, bars = jax.lax.scan(lambda c, b: (c, block_bar(b)), None, jnp.arange(spec.nblocks))
    return jnp.moveaxis(bars, 0, 1)
