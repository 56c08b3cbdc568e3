"""Isogeometric spaces: the NURBS basis of a patch as the finite-element space (isoparametric)."""

from __future__ import annotations

import functools
import operator
import string
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax.bases.bspline import basis_functions
from igax.bases.nurbs import rational_tensor_basis
from igax.fem.quadrature import gauss_legendre
from igax.fem.spaces.base import (
    FunctionSpace,
    Rule,
    SpacePlan,
    Tables,
    check_jacobian,
    det_inv,
    finish_tables,
    kron_pattern,
    kron_slots,
    measure_and_normals,
    pin,
)
from igax.fem.spaces.glue import collapsed_sides, glued_dof_map, normalise_glue
from igax.fem.spaces.locators import SplineLocator, inverse_map, spline_map
from igax.fem.spaces.sampling import GridSampler
from igax.solvers._grid_ordering import GridHint
from igax.solvers.sparse import CSRPattern

__all__ = ["SplineSpace"]


class _SplinePlan(SpacePlan):
    """Knot spans, element dofs, and the univariate basis tables of a tensor-product patch (NumPy)."""

    def __init__(
        self, knots, degrees, shape, boundaries, value_shape, quad_points, ndim, glue=(), collapsed=()
    ):
        self.knots = tuple(np.asarray(k, dtype=np.float64) for k in knots)
        self.degrees = tuple(int(p) for p in degrees)
        self.shape = tuple(int(n) for n in shape)
        pdim = len(self.degrees)
        self.breaks = [np.unique(k) for k in self.knots]
        self.ne = tuple(len(b) - 1 for b in self.breaks)
        # First basis function of each element along each direction: span index - degree.
        self.first = [
            np.searchsorted(k, b[:-1], side="right") - 1 - p
            for k, b, p in zip(self.knots, self.breaks, self.degrees, strict=True)
        ]
        self.nq = tuple(quad_points) if quad_points is not None else tuple(p + 1 for p in self.degrees)
        # Element dofs: C-order product over directions of first[e_d] + a_d, raveled with the patch shape.
        grids_e = np.meshgrid(*[np.arange(n) for n in self.ne], indexing="ij")
        grids_a = np.meshgrid(*[np.arange(p + 1) for p in self.degrees], indexing="ij")
        multi = [
            (self.first[d][grids_e[d].ravel()][:, None] + grids_a[d].ravel()[None, :]) for d in range(pdim)
        ]  # each (nel, nloc)
        # Geometry dofs: control points, C-order ravel of the control-net multi-index.
        self.geo_cell_dofs = np.ravel_multi_index(tuple(multi), self.shape).astype(np.int32)
        self.sides = {name: (int(axis), int(side)) for name, axis, side in boundaries}
        self.glue = tuple(glue)
        self.collapsed = tuple(collapsed)
        # dof_map: control point -> solution dof (the identity unless sides are glued or collapsed).
        self.dof_map, nscalar = glued_dof_map(self.shape, self.sides, self.glue, self.collapsed)
        glued = {nm for pair in self.glue for nm in pair} | set(self.collapsed)
        # Directions closed on themselves (both ends glued together): point location wraps around them.
        self.periodic_axes = tuple(
            sorted(
                {
                    self.sides[a][0]
                    for a, b in self.glue
                    if self.sides[a][0] == self.sides[b][0] and self.sides[a][1] != self.sides[b][1]
                }
            )
        )
        self.kron_1d = None  # per-direction pattern data, when the pattern is a Kronecker product
        bdofs = {}
        for name in self.sides:
            if name not in glued:
                bdofs[name] = self.dof_map[self.side_points(name)]
        super().__init__(
            # Gluing breaks the Kronecker structure of the pattern; then it is sorted out of element pairs.
            scalar_pattern=None if nscalar < int(np.prod(self.shape)) else self._tensor_pattern(),
            kind="spline",
            partition_key=("spline", tuple(tuple(b.tolist()) for b in self.breaks)),
            dim=ndim,
            pdim=pdim,
            value_shape=value_shape,
            cell_dofs=self.dof_map[self.geo_cell_dofs],
            nscalar=nscalar,
            boundary_dofs=bdofs,
        )

    def side_points(self, name: str) -> np.ndarray:
        """Control-point indices on side ``name``, in the C order of the remaining directions."""
        axis, side = self.sides[name]
        idx = np.arange(int(np.prod(self.shape))).reshape(self.shape)
        return np.take(idx, 0 if side == 0 else self.shape[axis] - 1, axis=axis).ravel()

    def _tensor_pattern(self):
        """Scalar pattern and element slots as a Kronecker product of the 1D patterns (no sort of all pairs).

        Two tensor-product functions share an element iff their 1D factors share one in every direction, so
        the pattern is kron(P_0, P_1, ...) with the C-order dof numbering.
        """
        pdim = len(self.degrees)
        pats, slots, kron = [], [], []
        for k in range(pdim):
            idx = self.first[k][:, None] + np.arange(self.degrees[k] + 1)[None, :]  # (ne_k, p + 1)
            r = np.broadcast_to(idx[:, :, None], idx.shape + idx.shape[1:])
            c = np.broadcast_to(idx[:, None, :], r.shape)
            pat, sl = CSRPattern.from_coo(r, c, (self.shape[k], self.shape[k]))
            pats.append(pat)
            slots.append((idx, sl.reshape(r.shape).astype(np.int64)))
            # Row lengths and each element entry's position within its row: what SplineSpace.element_slots
            # needs to form the slots of kron(P_0, P_1, ...) inside a compiled program.
            pos = (sl.reshape(r.shape) - pat.indptr[r]).astype(np.int32)  # (ne_k, p + 1, p + 1)
            kron.append((np.diff(pat.indptr).astype(np.int32), pos))
        self.kron_1d = tuple(kron)
        chain = [pats[0]]  # kron(P_0, .., P_k) for k = 0 .. pdim - 1
        for k in range(1, pdim):
            chain.append(kron_pattern(chain[-1], pats[k]))
        # The rows are the control points in C order, and two of them share an element only when their
        # indices differ by at most the degree in every direction: PARDISO may order them by the grid.
        chain[-1].grid = GridHint(tuple(int(n) for n in self.shape), tuple(int(p) for p in self.degrees))

        def element_slots():  # formed on first use only (see SpacePlan.slot)
            (rows, sl) = slots[0]
            # Running product over directions; arrays indexed (e_0..e_k, a_0..a_k, b_0..b_k) in C order.
            rows = rows[:, :, None]  # rows (E, A, 1), slots (E, A, B)
            for k in range(1, pdim):
                idx, slk = slots[k]
                E, A, B = sl.shape
                e2, a2, b2 = slk.shape
                ra = np.broadcast_to(rows[:, None, :, None, :, None], (E, e2, A, a2, 1, 1))[..., 0, 0]
                rb = np.broadcast_to(idx[None, :, None, :], (E, e2, A, a2))
                sa = np.broadcast_to(sl[:, None, :, None, :, None], (E, e2, A, a2, B, b2))
                sb = np.broadcast_to(slk[None, :, None, :, None, :], sa.shape)
                new = kron_slots(chain[k - 1], pats[k], ra[..., None, None], sa, rb[..., None, None], sb)
                rows = (ra * self.shape[k] + rb).reshape(E * e2, A * a2)[:, :, None]
                sl = new.reshape(E * e2, A * a2, B * b2)
            return sl

        return chain[-1], element_slots

    def univariate(self, d: int, elems: np.ndarray, t: np.ndarray, w: np.ndarray):
        """Basis values, derivatives (ne', nq', p+1) and scaled weights (ne', nq') at local t in [0, 1]."""
        a, b = self.breaks[d][elems], self.breaks[d][elems + 1]
        h = b - a
        u = a[:, None] + t[None, :] * h[:, None]  # (ne', nq')
        # Evaluate inside the element: nudge the end points inwards so each point sees its own element's span.
        eps = 1e-13 * (self.breaks[d][-1] - self.breaks[d][0])
        u_eval = np.clip(u, a[:, None] + eps, b[:, None] - eps)
        first, ders = basis_functions(self.knots[d], self.degrees[d], u_eval.ravel(), nderiv=1)
        first = np.asarray(first).reshape(u.shape)
        if not np.all(first == self.first[d][elems][:, None]):  # pragma: no cover - guarded by the nudge
            raise RuntimeError("internal error: quadrature point outside its knot span.")
        ders = np.asarray(ders).reshape(2, *u.shape, -1)
        return ders[0], ders[1], w[None, :] * h[:, None], u


def _nurbs(B, dB, wl, P, xp):
    """Rational basis R (ne, nq, nloc), its reference gradients, the points x and the Jacobian J (ne, nq,
    dim, pdim).

    The sums over local functions are unrolled in Python: XLA on CPU lowers the equivalent einsums to batched
    tiny matrix products, several times slower than these fused multiply-adds (and NumPy's einsum is slow
    too).
    """
    Bw = B * wl[:, None, :]
    dBw = dB * wl[:, None, :, None]
    W = xp.sum(Bw, axis=-1)  # (ne, nq)
    dW = xp.sum(dBw, axis=-2)  # (ne, nq, pdim)
    R = Bw / W[..., None]
    dR = (dBw - R[..., None] * dW[:, :, None, :]) / W[..., None, None]
    nloc = B.shape[-1]
    x = sum(R[:, :, a, None] * P[:, None, a, :] for a in range(nloc))  # (ne, nq, dim)
    J = sum(P[:, None, a, :, None] * dR[:, :, a, None, :] for a in range(nloc))  # (ne, nq, dim, pdim)
    return R, dR, x, J


def _tensor(factors, op=operator.mul, shared=None):
    """Tensor product of per-direction tables with three axes each -> the product table.

    Each axis of the result is the C-order product of the factors' axes over the directions (the order of the
    element, point and local-function numbering), whatever the roles of the axes: ``(n_k, ne_k, nq_k)``
    factors give ``(nloc, ne, nq)``, ``(ne_k, nq_k, n_k)`` ones ``(ne, nq, nloc)``. ``shared``: an axis all
    factors share instead (the elements of a chunk). ``op`` is ``operator.add`` for sums of indices.
    """
    out = factors[0]
    for f in factors[1:]:
        ix = [(slice(None), None), (None, slice(None))]
        lhs = tuple(s for ax in range(3) for s in ((slice(None),) if ax == shared else ix[0]))
        rhs = tuple(s for ax in range(3) for s in ((slice(None),) if ax == shared else ix[1]))
        shape = tuple(
            n if ax == shared else n * m for ax, (n, m) in enumerate(zip(out.shape, f.shape, strict=True))
        )
        out = op(out[lhs], f[rhs]).reshape(shape)
    return out


def _full_shape(x, plan, multi) -> tuple[int, ...]:
    """The broadcast shape ``(e_0 .. e_{d-1} | m, a_0 .. a_{d-1}, b_0 .. b_{d-1})`` of an index array."""
    loc = tuple(q + 1 for q in plan.degrees)
    lead = tuple(plan.ne) if multi is None else (x.shape[0],)
    return lead + loc + loc


def _geometry_by_directions(B1, D1, Pe):
    """The rational map's denominator, the geometry and their derivatives, one direction at a time.

    Arguments: per direction k the univariate values ``B1[k]`` and derivatives ``D1[k]`` of each element
    (``(m, nq_k, p_k + 1)``), and ``Pe`` (m, p_0 + 1, ..., p_{d-1} + 1, dim + 1) the homogeneous control
    points ``(w P, w)`` of each element's functions. Returns ``W`` (m, nq), ``dW`` (list of pdim such), ``x``
    (m, nq, dim) and ``J`` (m, nq, dim, pdim): ``x = A / W`` and ``J_k = (dA_k - x dW_k) / W`` for the
    homogeneous map ``(A, W) = sum_a N_a (w_a P_a, w_a)``.

    The sums over the element's functions are contractions with the univariate tables, direction by
    direction (sum factorisation: ``(p + 1)`` multiply-adds per point and direction instead of ``(p + 1)^d``),
    written as batched matrix products, which XLA keeps as separate operations: their results are computed
    once, not again inside every table entry that uses them (written as fused multiply-adds, the sums were
    recomputed for each local function and gradient component of the tables: 96 x 96 degree-2 elements, 14 ms
    for the tables against 6.5 ms; 64 x 64 degree-3 elements, 50 ms against 6.5 ms; 1 core).
    """
    d = len(B1)
    m = Pe.shape[0]

    def contract(tabs):
        T = Pe  # (m, a_0 .. a_{d-1}, c) -> (m, q_0 .. q_{d-1}, c), one a_k at a time
        for k in range(d):
            T = jnp.einsum("mqa,ma...->mq...", tabs[k], jnp.moveaxis(T, 1 + k, 1))
            T = jnp.moveaxis(T, 1, 1 + k)
        return T.reshape(m, -1, T.shape[-1])  # (m, nq, dim + 1)

    A = contract(B1)
    dA = [contract([D1[k] if k == j else B1[k] for k in range(d)]) for j in range(d)]
    W = A[..., -1]
    x = A[..., :-1] / W[..., None]
    dW = [t[..., -1] for t in dA]
    J = jnp.stack([(t[..., :-1] - x * w[..., None]) / W[..., None] for t, w in zip(dA, dW, strict=True)], -1)
    return W, dW, x, J


def _mask_blocks(mask: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Tensor-product blocks (element lists per tangential direction) covering the True entries of a mask.

    A side of a 2D patch has one tangential direction: one block. On a 3D patch, rows of the mask with the
    same set of columns form one block (a rectangular piece is a single block).
    """
    if mask.ndim == 0:
        return [()] if bool(mask) else []
    if mask.ndim == 1:
        return [(np.flatnonzero(mask),)]
    rows, inv = np.unique(mask.reshape(mask.shape[0], -1), axis=0, return_inverse=True)
    inv = np.asarray(inv).reshape(-1)
    return [(np.flatnonzero(inv == i), np.flatnonzero(r)) for i, r in enumerate(rows) if r.any()]


def _side_ranges(range_, ntangent: int) -> list[tuple[float, float]]:
    """``range=`` of tag_boundary as one ``(lo, hi)`` per tangential direction of a side."""
    hint = (
        "range=(a, b) on a 2D patch; on a 3D patch one (a, b) or None per tangential direction, e.g. "
        "range=((0.0, 0.5), None)"
    )
    per = [range_] if ntangent == 1 else list(range_) if isinstance(range_, (list, tuple)) else None
    if per is None or len(per) != ntangent or any(r is not None and np.shape(r) != (2,) for r in per):
        raise ValueError(
            f"tag_boundary: range={range_!r} does not fit a side with {ntangent} direction(s); {hint}."
        )
    out = []
    for r in per:
        if r is None:
            out.append((-np.inf, np.inf))
            continue
        lo, hi = (float(v) for v in r)
        if not lo <= hi:
            raise ValueError(f"tag_boundary: range={range_!r} needs intervals (a, b) with a <= b; {hint}.")
        out.append((lo, hi))
    return out


_PLANS: dict = {}
_INDEX_ENTRIES = (
    2**22
)  # element-matrix slots above which a volume rule's index maps are formed in the program


def _plan(key, make):
    if key not in _PLANS:
        if len(_PLANS) >= 16:  # bounded: plans of large spaces hold sizeable integer arrays
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = make()
    return _PLANS[key]


class SplineSpace(FunctionSpace):
    """The NURBS space of a patch, used isoparametrically (geometry and solution share the basis).

    JAX leaves are the patch's ``control_points`` (``(n_1, ..., n_d, dim)``) and ``weights`` (``(n_1, ...,
    n_d)``), so everything assembled on the space is differentiable with respect to the geometry. Scalar dof
    ``i`` is the C-order ravel of the control-point multi-index; vector spaces number dofs component-major,
    ``dof = c * nscalar + i``. Boundaries are the patch's named sides.

    Glued sides (periodic seams): a closed patch such as :func:`igax.fem.geometry.annulus` has two sides that
    are the same curve (``seam_start`` and ``seam_end``). ``glue`` ties the dofs of such pairs one to one
    (control point ``k`` of the first side with control point ``k`` of the second), which makes the space
    continuous (C0) across the seam. The integer dof map is built once, so assembly, boundary dof sets,
    Dirichlet conditions, Field evaluation and norms all see the glued space. Glued sides are interior
    interfaces: they are no longer boundaries (``V.boundary_names`` omits them, and naming them in a boundary
    condition or a boundary integral raises). Scalar dof ``i`` is then the rank of control point ``i`` among
    the control points that are not dropped (``V.plan.dof_map`` maps control points to dofs).

    Collapsed sides (poles): a side whose control points all coincide (e.g. the centre of a disk
    parametrised in polar form) is detected, its dofs are tied into one (the space is C0 at the pole) and
    it is not a boundary (it has no length; naming it raises and says which dof to constrain instead). The
    geometry Jacobian vanishes there, so evaluating a Field exactly at the pole raises; quadrature points
    never reach it.

    Arguments:
        patch: an :class:`igax.bases.NURBSPatch` of degree >= 1 in every direction (refine it first:
            ``geo.refine(degree=3, elements=16)``).
        shape: ``()`` scalar, ``(dim,)`` vector-valued.
        quad_points: Gauss points per element and direction (default ``degree + 1``).
        glue: pairs of side names to tie, e.g. ``[("seam_start", "seam_end")]``; the sides must carry the same
            knots and coincident control points and weights (checked; a mismatch raises, naming the sides and
            the largest distance). ``None`` (default) ties every pair of opposite sides whose control points
            and weights coincide, so ``SplineSpace(geometry.annulus())`` is correct as it stands; ``()`` ties
            nothing (a slit, e.g. a crack whose two faces coincide). Automatic detection needs concrete
            control points: under ``jax.jit`` pass ``glue`` explicitly (or build the space outside and use
            :meth:`with_geometry`).

    Example:
        >>> from igax import fem
        >>> geo = fem.geometry.quarter_annulus().refine(degree=3, elements=8)
        >>> V = fem.SplineSpace(geo)
        >>> V.ndofs
        121
        >>> ring = fem.SplineSpace(fem.geometry.annulus().refine(degree=2, elements=(4, 16)))
        >>> ring.boundary_names, ring.glued
        (('inner', 'outer'), (('seam_start', 'seam_end'),))
    """

    control_points: jax.Array
    weights: jax.Array

    def __init__(
        self,
        patch,
        *,
        shape: Sequence[int] = (),
        quad_points: int | Sequence[int] | None = None,
        glue: Sequence[tuple[str, str]] | None = None,
    ):
        pdim = len(patch.degrees)
        if min(patch.degrees) < 1:
            # Caught here, before the tables: degree 0 would surface as "the geometry Jacobian is zero".
            raise ValueError(
                f"SplineSpace: patch.degrees = {tuple(patch.degrees)}; the degree must be >= 1 in every "
                "direction (degree 0 is piecewise constant: no gradient, and a geometry map whose Jacobian "
                "is zero). Build the patch with degree >= 1, e.g. fem.geometry.rectangle().refine(degree=2)."
            )
        if quad_points is not None:
            quad_points = (int(quad_points),) * pdim if np.ndim(quad_points) == 0 else tuple(quad_points)
        cp = jnp.asarray(patch.control_points)
        ndim = cp.shape[-1]
        if ndim != pdim:
            raise ValueError(
                f"SplineSpace needs a patch whose parametric dimension equals its physical dimension; got a "
                f"{pdim}D patch in {ndim}D (surfaces and curves are not supported as analysis domains)."
            )
        weights = jnp.asarray(patch.weights, dtype=cp.dtype)
        glue = normalise_glue(patch, glue, cp, weights)
        collapsed = collapsed_sides(patch, cp)
        key = (
            tuple(tuple(map(float, k)) for k in patch.knots),
            tuple(patch.degrees),
            tuple(patch.boundaries),
            tuple(shape),
            quad_points,
            glue,
            collapsed,
        )
        self.plan = _plan(
            key,
            lambda: _SplinePlan(
                patch.knots,
                patch.degrees,
                cp.shape[:-1],
                patch.boundaries,
                tuple(shape),
                quad_points,
                ndim,
                glue,
                collapsed,
            ),
        )
        self.control_points = cp
        self.weights = weights
        check_jacobian(
            self.jacobian_determinant(),
            "SplineSpace",
            "Check the control points (a folded or collapsed control net) and their order.",
            orientation_free=True,
        )

    @property
    def degrees(self) -> tuple[int, ...]:
        return self.plan.degrees

    @property
    def knots(self) -> tuple[np.ndarray, ...]:
        return self.plan.knots

    @property
    def glued(self) -> tuple[tuple[str, str], ...]:
        """The pairs of patch sides tied together in this space (``()`` when none)."""
        return self.plan.glue

    @property
    def collapsed(self) -> tuple[str, ...]:
        """Patch sides collapsed to a single point (poles); their dofs are tied into one (``()``: none)."""
        return self.plan.collapsed

    def check_names(self, name) -> tuple[str, ...]:
        if callable(name):
            return super().check_names(name)  # raises, pointing to tag_boundary
        names = (name,) if isinstance(name, str) else (() if name is None else tuple(name))
        for nm in names:
            if nm in self.plan.collapsed:
                pole = int(self.plan.dof_map[self.plan.side_points(nm)[0]])
                raise ValueError(
                    f"boundary {nm!r} is collapsed to a single point (a pole of the parametrisation): it has "
                    "no length or area, so boundary integrals and projected boundary values do not apply, "
                    f"and its control points share one dof ({pole}). This space has boundaries "
                    f"{list(self.boundary_names)}; to prescribe the value at the pole pass the dof array, "
                    f"e.g. DirichletBC(V, np.array([{pole}]), value)."
                )
        for a, b in self.plan.glue:
            for nm in names:
                if nm in (a, b):
                    other = b if nm == a else a
                    raise ValueError(
                        f"boundary {nm!r} is glued to {other!r} in this space: the two sides form "
                        f"an interior seam, not a boundary, so no boundary condition or boundary integral "
                        f"applies there. This space has boundaries {list(self.boundary_names)}; build the "
                        "space with glue=() to treat the sides as two separate boundaries (a slit)."
                    )
        return super().check_names(name)

    def with_geometry(self, control_points=None, weights=None) -> SplineSpace:
        """The same space with new control points and/or weights (reuses the plan; differentiable).

        The dof map is kept: on a space with glued sides move the control points of both sides together
        (they must stay equal, which is not checked under tracing), or the geometry tears along the seam.
        """
        out = self
        if control_points is not None:
            out = eqx.tree_at(lambda s: s.control_points, out, jnp.asarray(control_points))
        if weights is not None:
            out = eqx.tree_at(lambda s: s.weights, out, jnp.asarray(weights))
        return out

    # -- quadrature ----------------------------------------------------------------------------------------
    def build_rule(self, names) -> Rule:
        p = self.plan
        gauss = [gauss_legendre(n) for n in p.nq]
        full = [(np.arange(p.ne[d]), np.asarray(gauss[d][0]), np.asarray(gauss[d][1])) for d in range(p.pdim)]
        if names is None:
            groups = [(tuple(full), None)]
        else:
            groups = []
            for nm in names:
                piece = p.pieces.get(nm)
                for side_name, mask in piece.facets if piece is not None else ((nm, None),):
                    axis, side = p.sides[side_name]
                    dirs = list(full)
                    e = 0 if side == 0 else p.ne[axis] - 1
                    h = p.breaks[axis][e + 1] - p.breaks[axis][e]
                    # Weight 1 / h: univariate() scales weights by the element length, the facet direction
                    # has none.
                    dirs[axis] = (
                        np.array([e]),
                        np.array([float(side)]),
                        np.array([1.0 / h]),
                    )
                    nref = np.zeros(p.pdim)
                    nref[axis] = -1.0 if side == 0 else 1.0
                    tangent = [d for d in range(p.pdim) if d != axis]
                    for block in [()] if mask is None else _mask_blocks(mask):
                        for t, elems in zip(tangent, block, strict=False):  # a piece: its facets only
                            dirs[t] = (elems, full[t][1], full[t][2])
                        groups.append((tuple(dirs), nref))
        elements = []
        for dirs, _ in groups:
            grids = np.meshgrid(*[e for e, _, _ in dirs], indexing="ij")
            elements.append(np.ravel_multi_index(tuple(g.ravel() for g in grids), p.ne))
        return Rule(np.concatenate(elements), tuple(groups), None if names is None else tuple(names))

    def _select_boundary_facets(self, sides, where, prange, side_given):
        """Facets of patch sides selected by parameter range and/or a predicate at their midpoints."""
        p = self.plan
        if prange is not None and not (side_given and len(sides) == 1):
            raise ValueError(
                "tag_boundary: range= is a parameter interval along one patch side; name that side, e.g. "
                f"side={self.boundary_names[0]!r} (this space's sides: {list(self.boundary_names)})."
            )
        facets, dofs, nf, ncand = [], [], 0, 0
        for nm in sides:
            axis, side = p.sides[nm]
            tangent = [d for d in range(p.pdim) if d != axis]
            mids = [0.5 * (p.breaks[t][:-1] + p.breaks[t][1:]) for t in tangent]
            grid = np.meshgrid(*mids, indexing="ij")  # the side's element grid, C order
            mask = np.ones(tuple(len(m) for m in mids), dtype=bool)
            if prange is not None:
                for g, (lo, hi) in zip(grid, _side_ranges(prange, len(tangent)), strict=True):
                    mask &= (g >= lo) & (g <= hi)
            if where is not None:
                u = np.empty((mask.size, p.pdim))
                u[:, axis] = p.breaks[axis][0 if side == 0 else -1]
                for t, g in zip(tangent, grid, strict=True):
                    u[:, t] = g.ravel()
                # NumPy (the geometry is concrete here): eager JAX would compile a dozen small programs.
                w = np.asarray(self.weights)
                index, R, _, _ = rational_tensor_basis(p.knots, p.degrees, w, u, 0)
                cp = np.asarray(self.control_points).reshape(-1, p.dim)[index]  # (nf, nloc, dim)
                x = np.einsum("fa,fai->if", R, cp)  # (dim, nf)
                mask &= self._predicate_mask(where, x).reshape(mask.shape)
            ncand += mask.size
            if not mask.any():
                continue
            facets.append((nm, mask))
            nf += int(mask.sum())
            # Dofs: the side's layer of control points times each selected facet's p + 1 functions along
            # every tangential direction (those that do not vanish on it).
            sel = np.argwhere(mask)  # (nsel, ntangent)
            loc = tuple(p.degrees[t] + 1 for t in tangent)
            multi = []
            for d in range(p.pdim):
                if d == axis:
                    multi.append(np.full((len(sel),) + loc, 0 if side == 0 else p.shape[d] - 1))
                    continue
                k = tangent.index(d)
                idx = p.first[d][sel[:, k]][:, None] + np.arange(p.degrees[d] + 1)  # (nsel, p + 1)
                shape = (len(sel),) + tuple(n if j == k else 1 for j, n in enumerate(loc))
                multi.append(np.broadcast_to(idx.reshape(shape), (len(sel),) + loc))
            cps = np.ravel_multi_index(tuple(m.ravel() for m in multi), p.shape)
            dofs.append(p.dof_map[cps])
        return tuple(facets), np.concatenate(dofs) if dofs else np.zeros(0, np.int64), nf, ncand

    def jacobian_determinant(self) -> jax.Array:
        """Signed determinant of the geometry Jacobian at the volume quadrature points, shape (nel, nq)."""
        ((dirs, nref),) = self.quadrature_rule().groups
        concrete = not any(isinstance(a, jax.core.Tracer) for a in (self.control_points, self.weights))
        if concrete:  # the construction-time check: NumPy, sum-factorised, nothing to compile
            # In blocks of direction-0 elements (contiguous in the element order), so that the temporaries
            # stay small: at once, a degree-2 patch of 1000 x 1000 elements took 0.6 GB more at its peak.
            e0, t0, w0 = dirs[0]
            step = max(1, 2**18 // max(1, int(np.prod([len(e) * len(t) for e, t, _ in dirs[1:]]))))
            out = []
            for s in range(0, len(e0), step):
                J = self._geometry_jacobian_numpy(((e0[s : s + step], t0, w0),) + tuple(dirs[1:]))
                with np.errstate(all="ignore"):
                    out.append(det_inv(J, np)[0])
            return np.concatenate(out)
        _, J = self._group_tables(self.quadrature_rule(), dirs, nref, return_jacobian=True, xp=jnp)
        return det_inv(J, jnp)[0]

    def _geometry_jacobian_numpy(self, dirs) -> np.ndarray:
        """Jacobian (nel, nq, dim, pdim) of the geometry map by sum factorisation (one direction at a time).

        The homogeneous map A(u) = sum_a N_a(u) (w_a x_a, w_a) is contracted with the univariate tables of
        each direction in turn, so the cost is that of a few small tensor products instead of the (nel, nq,
        nloc) tables; x = A[:dim] / A[dim] and J follows from the quotient rule.
        """
        p = self.plan
        d = p.pdim
        w = np.asarray(self.weights)
        Pw = np.concatenate([np.asarray(self.control_points) * w[..., None], w[..., None]], axis=-1)
        uni = [p.univariate(k, e, t, wt) for k, (e, t, wt) in enumerate(dirs)]

        def contract(tabs):
            T = Pw  # axes: (n_0, ..., n_{d-1}, dim + 1) -> (e_0, q_0, ..., e_{d-1}, q_{d-1}, dim + 1)
            for k in range(d):
                ax = 2 * k  # directions before k are already (e, q) pairs
                idx = p.first[k][dirs[k][0]][:, None] + np.arange(p.degrees[k] + 1)[None, :]  # (ne_k, p + 1)
                G = np.take(T, idx, axis=ax)  # (..., ne_k, p + 1, ...)
                G = np.moveaxis(G, (ax, ax + 1), (0, 1))  # (ne_k, p + 1, ...)
                rest = G.shape[2:]
                # (ne_k, nq_k, p + 1) @ (ne_k, p + 1, rest): a batched matrix product (np.einsum: ~5x slower)
                G = np.matmul(tabs[k], G.reshape(G.shape[0], G.shape[1], -1))
                G = G.reshape(G.shape[:2] + rest)
                T = np.moveaxis(G, (0, 1), (ax, ax + 1))
            ne, nq = int(np.prod([len(e) for e, _, _ in dirs])), int(np.prod([len(t) for _, t, _ in dirs]))
            perm = [2 * k for k in range(d)] + [2 * k + 1 for k in range(d)] + [2 * d]
            return np.transpose(T, perm).reshape(ne, nq, p.dim + 1)

        A = contract([u[0] for u in uni])
        dA = np.stack(
            [contract([uni[k][1] if k == j else uni[k][0] for k in range(d)]) for j in range(d)], -1
        )
        W = A[:, :, -1]
        x = A[:, :, :-1] / W[..., None]
        return (dA[:, :, :-1, :] - x[..., None] * dA[:, :, -1:, :]) / W[..., None, None]

    def tables(self, rule: Rule) -> Tables:
        out = [self._group_tables(rule, dirs, nref) for dirs, nref in rule.groups]
        if len(out) == 1:
            return out[0]
        return Tables(
            *[None if out[0][i] is None else jnp.concatenate([o[i] for o in out]) for i in range(5)]
        )

    def _group_tables(self, rule: Rule, dirs, nref, return_jacobian=False, xp=jnp):
        if xp is not np:
            uni = [self.plan.univariate(k, e, t, w) for k, (e, t, w) in enumerate(dirs)]
            G = [self._geometry_index_1d(k, e) for k, (e, _, _) in enumerate(dirs)]
            return self._nurbs_tables(uni, G, nref, return_jacobian=return_jacobian)
        p = self.plan
        d = p.pdim
        uni = [p.univariate(k, e, t, w) for k, (e, t, w) in enumerate(dirs)]
        ne = int(np.prod([len(e) for e, _, _ in dirs]))
        nq = int(np.prod([len(t) for _, t, _ in dirs]))
        L = string.ascii_lowercase
        # einsum "Aqa,Brb->ABqrab": tensor product of per-direction tables, elements then points then
        # functions.
        ins = [f"{L[k]}{L[d + k]}{L[2 * d + k]}" for k in range(d)]
        out = (
            "".join(L[k] for k in range(d))
            + "".join(L[d + k] for k in range(d))
            + "".join(L[2 * d + k] for k in range(d))
        )
        spec = ",".join(ins) + "->" + out
        grids = np.meshgrid(*[e for e, _, _ in dirs], indexing="ij")
        elems = np.ravel_multi_index(tuple(g.ravel() for g in grids), p.ne)
        B = [xp.asarray(u[0]) for u in uni]
        D = [xp.asarray(u[1]) for u in uni]
        nloc = p.nloc_scalar
        phi = xp.einsum(spec, *B).reshape(ne, nq, nloc)
        dref = xp.stack(
            [
                xp.einsum(spec, *[D[k] if k == j else B[k] for k in range(d)]).reshape(ne, nq, nloc)
                for j in range(d)
            ],
            axis=-1,
        )  # (ne, nq, nloc, pdim)
        wspec = ",".join(f"{L[k]}{L[d + k]}" for k in range(d)) + "->" + out[: 2 * d]
        wq = xp.einsum(wspec, *[xp.asarray(u[2]) for u in uni]).reshape(ne, nq)
        dofs = p.geo_cell_dofs[elems]
        cp = np.asarray(self.control_points).reshape(-1, p.dim)[dofs]
        R, dR, x, J = _nurbs(phi, dref, np.asarray(self.weights).reshape(-1)[dofs], cp, np)
        return finish_tables(R, dR, x, J, wq, nref, xp=np)

    def host_tables(self, rule: Rule) -> Tables:
        """:meth:`tables` in NumPy (concrete geometry): nothing to compile (see the base class)."""
        out = [self._group_tables(rule, dirs, nref, xp=np) for dirs, nref in rule.groups]
        if len(out) == 1:
            return out[0]
        return Tables(*[None if out[0][i] is None else np.concatenate([o[i] for o in out]) for i in range(5)])

    def chunked_tables(self, rule: Rule):
        """The tables of any chunk of a volume rule's elements (for chunked assembly), or None.

        Returns ``fn``: ``fn(ids)`` gives the :class:`Tables` of the elements ``ids`` (an int array, traced:
        e.g. computed from the loop counter inside ``lax.scan``), from the univariate tables of each direction
        gathered by the elements' multi-indices. None for boundary rules. Assembled in one piece, the
        (ne, nq, nloc) tables of a degree-3 space with 250k elements are hundreds of MB per call.
        """
        if rule.boundary is not None or len(rule.groups) != 1:
            return None
        p = self.plan
        ((dirs, nref),) = rule.groups
        if nref is not None or any(len(e) != n for (e, _, _), n in zip(dirs, p.ne, strict=True)):
            return None
        uni = [p.univariate(k, e, t, w) for k, (e, t, w) in enumerate(dirs)]
        G = [self._geometry_index_1d(k, e) for k, (e, _, _) in enumerate(dirs)]
        strides = np.cumprod((1,) + p.ne[:0:-1])[::-1]  # element multi-index from the C-order element id

        def fn(ids):
            multi = [(ids // int(strides[k])) % p.ne[k] for k in range(p.pdim)]
            return self._nurbs_tables(uni, G, None, zipped=multi)

        return fn

    # -- index maps of the volume rule, computed inside the compiled program ------------------------------
    # The element dofs (nel, nloc) and above all the CSR slots of the element matrices (nel, (C nloc)^2: 324
    # MB for degree 2 on 1000 x 1000 elements) would be constants of every assembly program. On a patch they
    # are sums and products of per-direction tables of a few KB, so they are formed when the program runs.
    def _whole_volume(self, rule: Rule) -> bool:
        """Whether the rule is the volume's and large enough for its maps to be formed in the program.

        Below ``_INDEX_ENTRIES`` slots (16 MB) the tables are used: forming the slots costs ~3 ns per entry
        at every call (div/mod index arithmetic; a gather from the table ~0.5 ns), and a small constant does
        not slow a compilation.
        """
        p = self.plan
        return rule.boundary is None and len(rule.elements) == p.nel and p.nel * p.nloc**2 > _INDEX_ENTRIES

    def _element_multi(self, ids):
        """Per-direction element indices of C-order element ids (traced), or None for all elements."""
        if ids is None:
            return None
        p = self.plan
        strides = np.cumprod((1,) + p.ne[:0:-1])[::-1]
        return [(ids // int(strides[k])) % p.ne[k] for k in range(p.pdim)]

    def _place(self, x, k: int, multi):
        """A per-direction array ``(ne_k | m, n_a[, n_b])`` with its axes in the positions of direction k in
        ``(e_0 .. e_{d-1} | m, a_0 .. a_{d-1}[, b_0 .. b_{d-1}])`` (size 1 elsewhere), for broadcasting."""
        d = self.plan.pdim
        nlead = 1 if multi is not None else d
        shape = [1] * (nlead + d * (x.ndim - 1))
        shape[0 if multi is not None else k] = x.shape[0]
        for j, n in enumerate(x.shape[1:]):
            shape[nlead + j * d + k] = n
        return x.reshape(shape)

    def element_dofs(self, rule: Rule, ids=None):
        if not self._whole_volume(rule):
            return super().element_dofs(rule, ids)
        p = self.plan
        multi = self._element_multi(ids)
        G = pin([self._geometry_index_1d(k, np.arange(p.ne[k]))[:, :, 0].T for k in range(p.pdim)])
        if multi is not None:
            G = [g[m] for g, m in zip(G, multi, strict=True)]
        geo = sum(self._place(g, k, multi) for k, g in enumerate(G))  # control points (e.., a..)
        geo = geo.reshape(p.nel if multi is None else ids.shape[0], p.nloc_scalar)
        if p.nscalar < p.dof_map.shape[0]:  # glued or collapsed sides: control points -> dofs
            geo = pin(p.dof_map.astype(np.int32))[geo]
        return geo

    def element_slots(self, rule: Rule, ids=None):
        p = self.plan
        if not self._whole_volume(rule) or p.kron_1d is None:
            return super().element_slots(rule, ids)
        multi = self._element_multi(ids)
        d, C = p.pdim, p.ncomp
        itype = jnp.int32 if p.pattern.nnz < 2**31 else jnp.int64
        lens, poss = pin(([ln for ln, _ in p.kron_1d], [ps for _, ps in p.kron_1d]))
        firsts = pin([(p.first[k][:, None] + np.arange(p.degrees[k] + 1)).astype(np.int32) for k in range(d)])

        def with_b(x):  # (e.., a..) -> (e.., a.., 1..): broadcast against the b axes
            return x.reshape(x.shape + (1,) * d)

        # Slot of entry (a, b) of an element of kron(P_0, P_1, ...): the start of row r = (r_0, r_1, ...) plus
        # the entry's position in that row, sum_k pos_k(a_k, b_k) prod_{k' > k} len_{k'}(r_{k'}) (the row
        # holds the C-order product of the 1D rows' columns).
        rows, lenr, pos_k = 0, [], []
        for k in range(d):
            r, ps = (firsts[k], poss[k]) if multi is None else (firsts[k][multi[k]], poss[k][multi[k]])
            stride = int(np.prod(p.shape[k + 1 :], dtype=np.int64))
            rows = rows + self._place(r * stride, k, multi)  # (e.., a..): the scalar dof is the row
            lenr.append(self._place(lens[k][r], k, multi))
            pos_k.append(self._place(ps, k, multi))  # (e.., a.., b..)
        one = jnp.ones((), jnp.int32)
        pos = sum(pos_k[k] * with_b(functools.reduce(jnp.multiply, lenr[k + 1 :], one)) for k in range(d))
        grid = [ln.reshape((1,) * k + (-1,) + (1,) * (d - k - 1)) for k, ln in enumerate(lens)]
        counts = functools.reduce(jnp.multiply, grid).ravel().astype(itype)  # row lengths of all rows
        start = jnp.cumsum(counts) - counts  # row starts of the scalar pattern
        m = p.nel if multi is None else ids.shape[0]
        nl = p.nloc_scalar
        base = with_b(start[rows]).astype(itype)
        if C == 1:
            out = base + pos
            return jnp.broadcast_to(out, _full_shape(out, p, multi)).reshape(m, nl * nl)
        # Vector spaces, kron(1_{C x C}, P): row (c, r) starts at c C nnz + C start[r], column block d at
        # d len(r) within it.
        nnz = p.pattern.nnz // (C * C)
        base = jnp.broadcast_to(C * base + pos, _full_shape(pos, p, multi)).reshape(m, 1, nl, 1, nl)
        rl = jnp.broadcast_to(with_b(functools.reduce(jnp.multiply, lenr)), _full_shape(pos, p, multi))
        rl = rl.reshape(m, nl, nl)[:, None, :, None, :1].astype(itype)
        c = jnp.arange(C, dtype=itype)
        out = c[None, :, None, None, None] * (C * nnz) + base + c[None, None, None, :, None] * rl
        return out.reshape(m, -1)

    def _geometry_index_1d(self, k: int, elems: np.ndarray) -> np.ndarray:
        """Control-point index offsets of direction k, ``(p_k + 1, ne_k, 1)``: their sum over the directions
        (a tensor sum) is the control point of every (local function, element)."""
        p = self.plan
        stride = int(np.prod(p.shape[k + 1 :], dtype=np.int64))
        idx = (p.first[k][elems][None, :] + np.arange(p.degrees[k] + 1)[:, None]) * stride
        return idx[:, :, None].astype(np.int32)

    def _nurbs_tables(self, uni, G, nref, zipped=None, return_jacobian=False):
        """Tables from univariate data, in JAX (``uni``: per direction the values, derivatives and weights of
        :meth:`_SplinePlan.univariate`; ``G``: :meth:`_geometry_index_1d`).

        ``zipped``: None for a tensor-product group of elements; else a list of traced element indices per
        direction (a chunk), by which the univariate data are gathered.

        The B-spline tables are formed twice from the univariate ones (a broadcast product, cheap): with the
        local functions first, for the sums over them (:func:`_geometry_sums`), and last, the layout of
        :class:`Tables`, for the rational basis and its physical gradients, so that no table is transposed
        (a transposed copy fused with its producer cost as much as the rest of the tables).

        Every concrete input (the univariate tables, the control points of a closed-over space) goes through
        :func:`igax.fem.spaces.base.pin`, so that XLA computes the tables when the program runs instead of
        folding
        them into constants at compile time (a degree-2 space with 1000 x 1000 elements logged four
        constant-folding alarms and needed 12 GB to compile).
        """
        p = self.plan
        d = p.pdim
        dtype = self.control_points.dtype
        B1 = [u[0].astype(dtype) for u in uni]  # (ne_k, nq_k, p_k + 1)
        D1 = [u[1].astype(dtype) for u in uni]
        W1 = [u[2][..., None].astype(dtype) for u in uni]  # (ne_k, nq_k, 1)
        G = [g.transpose(1, 2, 0) for g in G]  # (ne_k, 1, p_k + 1)
        (B1, D1, W1, G), cp, w = pin((B1, D1, W1, G)), self.control_points, self.weights
        if not any(isinstance(a, jax.core.Tracer) for a in (cp, w)):
            cp, w = pin((cp, w))
        if zipped is not None:
            B1, D1, W1, G = ([t[e] for t, e in zip(ts, zipped, strict=True)] for ts in (B1, D1, W1, G))
        shared = None if zipped is None else 0

        B = _tensor(B1, shared=shared)  # (ne, nq, nloc)
        dB = [_tensor([D1[k] if k == j else B1[k] for k in range(d)], shared=shared) for j in range(d)]
        wq = _tensor(W1, shared=shared)[..., 0]  # (ne, nq)
        dofs = _tensor(G, operator.add, shared=shared)[:, 0, :]  # (ne, nloc) control points
        wl = w.reshape(-1)[dofs]
        Pe = jnp.concatenate([cp.reshape(-1, p.dim)[dofs] * wl[..., None], wl[..., None]], axis=-1)
        ne = dofs.shape[0]
        if zipped is None:  # per-element univariate tables: (ne, nq_k, p_k + 1) by the element's index in k
            strides = np.cumprod((1,) + tuple(len(t) for t in B1)[:0:-1])[::-1]
            multi = [jnp.arange(ne) // int(strides[k]) % B1[k].shape[0] for k in range(d)]
            B1e, D1e = (
                [t[e] for t, e in zip(B1, multi, strict=True)],
                [t[e] for t, e in zip(D1, multi, strict=True)],
            )
        else:
            B1e, D1e = B1, D1
        Pe = Pe.reshape((ne,) + tuple(t.shape[-1] for t in B1) + (p.dim + 1,))
        W, dW, x, J = _geometry_by_directions(B1e, D1e, Pe)
        det, Jinv = det_inv(J)
        iW = (1.0 / W)[..., None]
        R = B * wl[:, None, :] * iW  # (ne, nq, nloc)
        dR = [(D * wl[:, None, :] - R * dWk[..., None]) * iW for D, dWk in zip(dB, dW, strict=True)]
        dphi = jnp.stack(
            [sum(dR[k] * Jinv[:, :, None, k, j] for k in range(d)) for j in range(p.dim)], axis=-1
        )
        dx, n = measure_and_normals(det, Jinv, wq, nref, x.shape)
        t = Tables(R, dphi, x, dx, n)
        return (t, J) if return_jacobian else t

    def _rational(self, B, dB, dofs, wq, nref, return_jacobian=False):
        """NURBS basis, geometry map and physical gradients from B-spline tables (the JAX part, functions
        last; for point evaluation); ``dofs`` are control-point (geometry) indices."""
        P = self.control_points.reshape(-1, self.plan.dim)[dofs]  # (ne, nloc, dim)
        wl = self.weights.reshape(-1)[dofs]  # (ne, nloc)
        R, dR, x, J = _nurbs(B, dB, wl, P, jnp)
        t = finish_tables(R, dR, x, J, wq, nref)
        return (t, J) if return_jacobian else t

    # -- evaluation at parameter points ----------------------------------------------------------------------
    def _param_tables(self, u, return_jacobian=False):
        """Dofs (npts, nloc) and tables (NURBS values (npts, 1, nloc), gradients, points) at parameters u."""
        p = self.plan
        d = p.pdim
        firsts, B, D = [], [], []
        for k in range(d):
            f, ders = basis_functions(p.knots[k], p.degrees[k], u[:, k], nderiv=1)
            firsts.append(f)
            B.append(ders[0])
            D.append(ders[1])
        L = string.ascii_lowercase
        spec = ",".join(f"z{L[k]}" for k in range(d)) + "->z" + "".join(L[:d])
        npts = u.shape[0]
        phi = jnp.einsum(spec, *B).reshape(npts, 1, -1)
        dref = jnp.stack(
            [
                jnp.einsum(spec, *[D[k] if k == j else B[k] for k in range(d)]).reshape(npts, 1, -1)
                for j in range(d)
            ],
            axis=-1,
        )
        grids = np.meshgrid(*[np.arange(q + 1) for q in p.degrees], indexing="ij")
        multi = tuple(jnp.asarray(firsts[k])[:, None] + grids[k].ravel()[None, :] for k in range(d))
        dofs = jnp.ravel_multi_index(multi, p.shape, mode="clip")
        out = self._rational(phi, dref, dofs, jnp.ones((npts, 1)), None, return_jacobian)
        if p.nscalar < p.dof_map.shape[0]:  # glued or collapsed sides: control points -> solution dofs
            dofs = jnp.asarray(p.dof_map)[dofs]
        return (dofs, *out) if return_jacobian else (dofs, out)

    def map_points(self, u) -> jax.Array:
        """Physical points of parameter points ``u`` (npts, pdim) -> (npts, dim)."""
        _, t = self._param_tables(jnp.asarray(u))
        return t.x[:, 0]

    def basis_at(self, u):
        """The NURBS basis and the geometry map at parameter points ``u`` (npts, pdim), in NumPy.

        Host evaluation (concrete geometry), for point location and sampling; :meth:`map_points` is the
        JAX (differentiable) map. The basis is :func:`igax.bases.nurbs.rational_tensor_basis`.

        Returns:
            ``(dofs (npts, nloc) solution dofs, R (npts, nloc) values, dR (npts, nloc, pdim) parameter
            derivatives, x (npts, dim) points, J (npts, dim, pdim) the geometry Jacobian)``.

        Example:
            >>> import numpy as np, igax.fem as fem
            >>> V = fem.SplineSpace(fem.geometry.rectangle((0, 0), (2, 1)).refine(degree=2, elements=2))
            >>> dofs, R, dR, x, J = V.basis_at(np.array([[0.5, 0.5]]))
            >>> x.round(6).tolist(), float(R.sum())
            ([[1.0, 0.5]], 1.0)
        """
        p = self.plan
        u = np.asarray(u, dtype=np.float64)
        w = np.asarray(jax.device_get(self.weights), dtype=np.float64).reshape(p.shape)
        cps, R, dR, _ = rational_tensor_basis(p.knots, p.degrees, w, u, 1)
        P = np.asarray(jax.device_get(self.control_points), dtype=np.float64).reshape(-1, p.dim)[cps]
        x = np.matmul(R[:, None, :], P)[:, 0]  # (npts, dim); matmul: NumPy's einsum is several times slower
        J = np.matmul(P.transpose(0, 2, 1), dR)  # (npts, dim, pdim)
        # dof_map: control points -> solution dofs (they differ where sides are glued, e.g. a periodic seam).
        return p.dof_map[cps], R, dR, x, J

    # -- the space protocol: sampling and point location ----------------------------------------------------
    def sampler(self, resolution: int) -> GridSampler:
        """A grid of the parameter domain, every knot span cut into ``resolution`` parts per direction."""
        return GridSampler(self, resolution)

    def default_resolution(self) -> int:
        """Sub-intervals per knot span: enough for about 64 (2D) or 16 (3D) points per direction, >= 2."""
        target = 64 if self.plan.pdim == 2 else 16
        return int(max(2, min(16, int(np.ceil(target / max(self.plan.ne))))))

    def same_geometry(self, other) -> bool:
        return super().same_geometry(other) and other.plan.shape == self.plan.shape

    def locator(self) -> SplineLocator:
        """Newton on the NURBS map from the nearest of a few images per element (NumPy)."""
        return SplineLocator(self)

    def tables_at(self, index, ref, points):
        return self._param_tables(inverse_map(spline_map, ref, self, points))
