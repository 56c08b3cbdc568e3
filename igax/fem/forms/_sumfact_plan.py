"""Host (NumPy) structures of sum-factorised spline assembly, built once per space plan and cached.

A single-patch spline space is a tensor product: every basis function is ``w_i B_i(u) / W(u)`` with ``B_i`` a
product of univariate B-splines, one per parametric direction. :mod:`igax.fem.forms.sumfact` contracts the
kernel
matrices at the quadrature points with the univariate tables one direction at a time; this module holds what
that needs, table and integer work only:

- :class:`Direction`: the univariate tables of one direction on a uniform grid of virtual elements (an
  element per function start; repeated knots leave empty ones), and its band tables.
- :func:`scalar_steps`: the schedule of "states" (pairs of reference jets, value or a parametric
  derivative, of the trial and test side) direction by direction; states that become equal are summed.
- :class:`Chunks`: direction 0 processed in chunks of elements (``lax.scan``).
- :func:`csr_index`: the map from the padded band layout to the CSR slots of the space's pattern (one gather
  at the end of assembly).
"""

from __future__ import annotations

import weakref

import numpy as np

__all__ = ["Direction", "SumFactPlan", "sumfact_plan", "scalar_steps", "Chunks", "csr_index"]


class Direction:
    """Univariate data of one parametric direction on a quadrature rule.

    Elements are laid out on a *uniform* grid of ``nv = n - p`` virtual elements: virtual element ``v`` holds
    the functions ``v, ..., v + p``. Every element ``e`` of the knot vector sits at ``v = first[e]``; where an
    interior knot is repeated, some virtual elements hold no element (they get a neighbour's tables, so
    everything evaluated there is finite, and zero quadrature weights, so they contribute nothing). With this
    layout every "sum over the elements that share a function" is a sum of shifted slices (no gather).

    Attributes:
        n, p, nq: functions, degree, Gauss points per element; ``L = 2 p + 1`` the band width.
        ne, nv: real and virtual elements; ``uniform``: no virtual element is empty (``nv == ne``).
        B, dB: ``(nv, nq, p + 1)`` B-spline values and derivatives; ``wq``: ``(nv, nq)`` weights times h
            (zero on empty virtual elements).
        v_of_e: ``(ne,)`` virtual position of each element; ``e_of_v``: ``(nv,)`` the element at (or next to)
            each virtual position; ``real``: ``(nv,)`` whether a virtual element holds an element.
    """

    def __init__(self, plan, k: int, elems: np.ndarray, t: np.ndarray, w: np.ndarray):
        B, dB, wq, _ = plan.univariate(k, elems, t, w)
        self.p = int(plan.degrees[k])
        self.n = int(plan.shape[k])
        self.ne, self.nq = np.asarray(B).shape[:2]
        self.L = 2 * self.p + 1
        first = np.asarray(plan.first[k][elems], dtype=np.int64)
        self.nv = self.n - self.p
        if first[0] != 0 or first[-1] != self.nv - 1 or np.any(np.diff(first) < 1):  # pragma: no cover
            raise RuntimeError("internal error: unexpected knot spans for sum factorisation.")
        self.v_of_e = first
        real = np.zeros(self.nv, dtype=bool)
        real[first] = True
        self.real = real
        self.uniform = bool(real.all())
        # The element at or before each virtual position (its tables fill an empty position).
        self.e_of_v = np.maximum(np.cumsum(real) - 1, 0)
        self.B = np.asarray(B)[self.e_of_v]
        self.dB = np.asarray(dB)[self.e_of_v]
        self.wq = np.where(real[:, None], np.asarray(wq)[self.e_of_v], 0.0)

    def table(self, flag: int) -> np.ndarray:
        """``B`` (flag 0) or ``dB`` (flag 1)."""
        return self.dB if flag else self.B

    def band_table(self, flags) -> np.ndarray:
        """``(nv, (p + 1) L, m nq)``: ``A[v, (a, delta), (j, t)] = X_u[v, t, a] X_v[v, t, b]`` with
        ``b = delta + a - p`` (zero outside ``[0, p]``) and the tables ``X`` chosen by member ``j``'s flags.

        A step's output state is one batched matrix product with it (over the elements ``v``): the
        member states' values at the element's Gauss points -> the element's band rows ``v + a``.
        """
        p, p1, nq = self.p, self.p + 1, self.nq
        A = np.zeros((self.nv, p1, self.L, len(flags), nq))
        for j, (fu, fv) in enumerate(flags):
            Xu, Xv = self.table(fu), self.table(fv)  # (nv, nq, p + 1)
            for a in range(p1):
                for b in range(p1):
                    A[:, a, b - a + p, j, :] = Xu[:, :, a] * Xv[:, :, b]
        return A.reshape(self.nv, p1 * self.L, len(flags) * nq)


def scalar_steps(Ru: list[int], Rv: list[int], d: int) -> list[dict]:
    """The contraction schedule of the states ``(ru, rv)`` (reference jets of one component pair).

    Directions are contracted ``d-1, ..., 0``. After contracting direction ``k`` only derivatives along
    ``0, ..., k-1`` remain distinguishable, so a reference jet ``r`` becomes ``r if r <= k else 0`` and the
    states that then agree are summed (a 3D Laplacian: 9 -> 9 -> 4 -> 1 states). Each step lists its output
    states as ``(members, flags)``: the input states summed into it and their derivative flags
    ``(ru == k + 1, rv == k + 1)`` along the contracted direction.
    """
    cur = [(ru, rv) for ru in Ru for rv in Rv]
    out = []
    for k in range(d - 1, -1, -1):
        keys = [(ru if ru <= k else 0, rv if rv <= k else 0) for ru, rv in cur]
        new = sorted(set(keys), key=keys.index)
        # Outputs with the same number of members are one batched product: keep them adjacent.
        new = sorted(new, key=lambda kk: keys.count(kk))
        outs = []
        for key in new:
            members = [i for i, kk in enumerate(keys) if kk == key]
            flags = [(int(cur[i][0] == k + 1), int(cur[i][1] == k + 1)) for i in members]
            outs.append((members, flags))
        out.append({"k": k, "outs": outs})
        cur = new
    return out


class Chunks:
    """Virtual elements of direction 0 in chunks of ``size``, padded with empty elements to whole chunks.

    The chunks run over ``nchunks * size >= n`` elements: enough that chunk ``c`` completes the rows
    ``[c size, (c + 1) size)`` of the band, all ``n`` rows in all. Elements beyond the knot vector's
    (``v >= nv``) have zero weights (and a neighbour's tables, so everything evaluated there is finite).

    Attributes:
        size, nchunks: elements per chunk and chunks; ``nv``: real virtual elements; ``pad``: elements added.
        B, dB, wq, real: direction 0's tables, weights and real-element flags over the padded elements.
    """

    def __init__(self, d0: Direction, size: int):
        size = max(1, min(int(size), d0.nv))
        nchunks = -(-d0.n // size)
        total = nchunks * size
        last = np.minimum(np.arange(total), d0.nv - 1)
        self.size, self.nchunks, self.nv, self.pad = size, nchunks, d0.nv, total - d0.nv
        self.B, self.dB = d0.B[last], d0.dB[last]
        inside = np.arange(total) < d0.nv
        self.wq = np.where(inside[:, None], d0.wq[last], 0.0)
        self.real = np.where(inside, d0.real[last], False)
        self.uniform = bool(self.real.all())


def _band_valid(dd: Direction) -> np.ndarray:
    """``(n, L)`` bool: functions ``i`` and ``j = i + delta - p`` share an element (the 1D pattern)."""
    i = np.arange(dd.n)[:, None]
    j = i + np.arange(dd.L)[None, :] - dd.p
    lo, hi = np.maximum(i, j) - dd.p, np.minimum(i, j)  # the elements v holding both: lo <= v <= hi
    count = np.concatenate([[0], np.cumsum(dd.real)])  # real elements before v
    lo_c, hi_c = np.clip(lo, 0, dd.nv), np.clip(hi + 1, 0, dd.nv)
    return (j >= 0) & (j < dd.n) & (count[hi_c] > count[lo_c])


def csr_index(plan, dirs: list[Direction], blocks: list[tuple[int, int]]) -> np.ndarray:
    """For each CSR slot of ``plan.pattern``, its position in the padded layout
    ``(i_0, blocks, i_1, ..., i_{d-1}, delta_0, ..., delta_{d-1})`` (rows of direction 0 outermost, so rows
    beyond ``n_0`` at the end do not move anything).

    ``blocks`` lists the component pairs ``(c, c')`` that are computed; a pair whose mirror ``(c', c)`` is
    listed instead reads the mirrored entry (symmetric forms). Built from the tensor structure (the CSR
    order of a row's entries is the order of their ``delta``), in a few passes over the pattern's size.
    """
    d = len(dirs)
    C = plan.ncomp
    N = int(np.prod([dd.n for dd in dirs]))
    Ld = int(np.prod([dd.L for dd in dirs]))
    valid = np.ones((), dtype=bool)
    for dd in dirs:  # separable: valid(i, delta) = prod_k valid_k(i_k, delta_k), layout (i.., delta..)
        valid = valid[..., None, None] & _band_valid(dd).reshape((1,) * valid.ndim + (dd.n, dd.L))
    perm = [2 * k for k in range(d)] + [2 * k + 1 for k in range(d)]
    valid = np.transpose(valid, perm).reshape(N, Ld)
    where = {}
    for bi, (a, b) in enumerate(blocks):
        where[a, b] = (bi, False)
    for a in range(C):
        for b in range(C):
            if (a, b) not in where:
                if (b, a) not in where:  # pragma: no cover - the callers list every pair or its mirror
                    raise RuntimeError("internal error: a component block is missing from the layout.")
                where[a, b] = (where[b, a][0], True)
    dt = np.int64
    nb = len(blocks)
    N1 = N // dirs[0].n  # rows of one direction-0 row (directions 1, ...)

    def position(b: int, row, delta):
        """Layout (i_0, block, i_1.., delta..) from a flat row index (C order) and a flat delta."""
        return (((row // N1) * nb + b) * N1 + row % N1) * Ld + delta

    local = (np.arange(N, dtype=dt)[:, None], np.arange(Ld, dtype=dt)[None, :])
    mirror = None
    if any(m for _, m in where.values()):
        # The transposed entry: row j = i + delta - p and delta' = 2p - delta, per direction, combined.
        jidx = np.zeros((), dtype=dt)
        didx = np.zeros((), dtype=dt)
        for dd in dirs:
            i = np.arange(dd.n)[:, None]
            delta = np.arange(dd.L)[None, :]
            j = np.clip(i + delta - dd.p, 0, dd.n - 1)
            flip = np.broadcast_to(dd.L - 1 - delta, (dd.n, dd.L))
            jidx = jidx[..., None, None] * dd.n + j.reshape((1,) * jidx.ndim + (dd.n, dd.L))
            didx = didx[..., None, None] * dd.L + flip.reshape((1,) * didx.ndim + (dd.n, dd.L))
        mirror = (np.transpose(jidx, perm).reshape(N, Ld), np.transpose(didx, perm).reshape(N, Ld))
    rows = []
    for a in range(C):
        row = []
        for b in range(C):
            bi, flip = where[a, b]
            row.append(position(bi, *(mirror if flip else local)))
        rows.append(np.stack(np.broadcast_arrays(*row), axis=1))  # (N, C, Ld)
    pos = np.stack(rows)  # (C, N, C, Ld): the CSR order of a component-major vector pattern
    out = pos[np.broadcast_to(valid[None, :, None, :], pos.shape)]
    if out.size != plan.pattern.nnz:  # pragma: no cover - guarded by applicable()
        raise RuntimeError("internal error: the sum-factorised band does not match the space's pattern.")
    total = nb * N * Ld
    return out.astype(np.int32 if total < 2**31 else np.int64)


class SumFactPlan:
    """Per-direction data of a spline space's volume rule, and cached index maps (see the module docstring).

    Arguments:
        plan: the space's ``_SplinePlan``; rule: its volume :class:`~igax.fem.spaces.base.Rule`.
    """

    def __init__(self, plan, rule):
        ((dirs, nref),) = rule.groups
        self.dirs = [Direction(plan, k, e, t, w) for k, (e, t, w) in enumerate(dirs)]
        self.d = len(self.dirs)
        self.nq = tuple(dd.nv * dd.nq for dd in self.dirs)  # grid points per direction (virtual elements)
        self.uniform = all(dd.uniform for dd in self.dirs)
        self.plan = plan
        self._csr: dict = {}
        self._chunks: dict = {}

    def csr(self, blocks: tuple) -> np.ndarray:
        if blocks not in self._csr:
            self._csr[blocks] = csr_index(self.plan, self.dirs, list(blocks))
        return self._csr[blocks]

    def chunks(self, size: int) -> Chunks:
        if size not in self._chunks:
            self._chunks[size] = Chunks(self.dirs[0], size)
        return self._chunks[size]

    def element_to_grid(self, a, xp=np):
        """``(ne, nq, ...)`` (elements and points in C order) -> grid ``(Nq0, ..., Nq_{d-1}, ...)``.

        Empty virtual elements get a neighbour's values (finite; their weights are zero).
        """
        d = self.d
        rest = a.shape[2:]
        a = a.reshape(tuple(dd.ne for dd in self.dirs) + tuple(dd.nq for dd in self.dirs) + rest)
        perm = [x for k in range(d) for x in (k, d + k)] + list(range(2 * d, 2 * d + len(rest)))
        a = xp.transpose(a, perm)
        for k, dd in enumerate(self.dirs):
            if not dd.uniform:
                a = xp.take(a, dd.e_of_v, axis=2 * k)
        return a.reshape(self.nq + rest)

    def grid_to_element(self, a, xp=np):
        """Grid ``(Nq0, ..., ...)`` -> ``(ne, nq, ...)`` (the inverse of :meth:`element_to_grid`)."""
        d = self.d
        rest = a.shape[d:]
        a = a.reshape(tuple(x for dd in self.dirs for x in (dd.nv, dd.nq)) + rest)
        for k, dd in enumerate(self.dirs):
            if not dd.uniform:
                a = xp.take(a, dd.v_of_e, axis=2 * k)
        perm = (
            [2 * k for k in range(d)] + [2 * k + 1 for k in range(d)] + list(range(2 * d, 2 * d + len(rest)))
        )
        ne = int(np.prod([dd.ne for dd in self.dirs]))
        nq = int(np.prod([dd.nq for dd in self.dirs]))
        return xp.transpose(a, perm).reshape((ne, nq) + rest)

    def real_points(self):
        """``(Nq0, ..., Nq_{d-1})`` bool: points of real elements (None when every direction is uniform)."""
        if self.uniform:
            return None
        m = np.ones((), dtype=bool)
        for dd in self.dirs:
            m = np.multiply.outer(m, np.repeat(dd.real, dd.nq))
        return m


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sumfact_plan(space, rule=None) -> SumFactPlan:
    """The (cached) :class:`SumFactPlan` of a spline space on a volume rule (default: its own)."""
    plan = space.plan
    rule = space.quadrature_rule(None) if rule is None else rule
    byrule = _PLANS.setdefault(plan, {})
    hit = byrule.get(rule)
    if hit is None:
        hit = byrule[rule] = SumFactPlan(plan, rule)
    return hit
