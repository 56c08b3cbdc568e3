"""Nested spline spaces for geometric multigrid: coarsened knot vectors and exact knot-insertion transfers.

A spline space with knots ``t`` contains every spline space whose knot vectors are sub-multisets of ``t``
(same degree). Coarse levels are made by dropping every other interior knot per direction, and the
prolongation from a coarse level to the next finer one is the knot-insertion (Oslo) matrix, which is exact:
a coarse function with coefficients ``c`` is the fine function with coefficients ``P @ c``. Everything here
is integer and small dense 1D work in NumPy, done once per space on the host; the result is one
``scipy.sparse`` matrix per level (the Kronecker product of the 1D matrices, mapped through the dof maps of
glued seams, collapsed poles and multi-patch interfaces).

Which knots are kept (per direction, positions ``k = 1..m`` of the distinct interior knots):

- a knot of multiplicity > 1 is always kept: it marks a line where the geometry itself is only C^(p-2) or
  less (the quarter-circle joints of :func:`igax.fem.geometry.annulus`, the plate with a hole), and the
  weights of an exact circle are not representable without it;
- a simple knot is kept when ``min(k, m + 1 - k)`` is even. For an odd number of elements this is every
  second knot from each end; the rule is symmetric under reversing the knot vector, so the two sides of a
  multi-patch interface (which may run in opposite directions) are coarsened alike and stay conforming.

Rational (NURBS) spaces: the fine basis is ``R_i = w_i N_i / W``. With coarse weights ``w_c`` such that ``T
w_c = w`` (``T``: B-spline knot insertion), the coarse NURBS functions satisfy ``R^c_j = sum_i T_ij w^c_j /
w_i R_i``, so ``P_ij = T_ij w^c_j / w_i``. The coarse weights are found by least squares (the pseudo-inverse
of a Kronecker product is the Kronecker product of the 1D pseudo-inverses, so this is a few banded 1D
normal-equation solves), which is exact whenever the fine weights are representable (always, with the knots
kept above, for geometries refined from a coarse NURBS patch). When they are not (a fine patch whose weights
vary from knot to knot), the least-squares weights are used with ``P_ij = T_ij w^c_j / (T w^c)_i``: rows still
sum to one (constants are reproduced exactly) and the coarse space is a good one, but it is no longer the
coarse NURBS space; this is logged. When the weights are traced (built inside ``jit`` from traced weights),
``P = T`` is used (also logged): its columns are fine-space functions too and its rows sum to one. A multigrid
preconditioner only needs a good coarse space; the accuracy of the solve comes from the Krylov method.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jax
import numpy as np
import scipy.sparse as sp
from scipy.linalg import solveh_banded
from scipy.sparse.csgraph import connected_components

from igax.bases.refine import oslo_matrix
from igax.fem.spaces.glue import glued_dof_map

__all__ = ["coarsen_knots", "spline_levels"]

logger = logging.getLogger(__name__)


def coarsen_knots(knots, degree: int) -> np.ndarray:
    """The knot vector of the next coarser level: every other simple interior knot dropped.

    Knots of multiplicity > 1 are kept (see the module docstring). Returns the same knots when nothing can
    be dropped.

    Example:
        >>> from igax.fem.spaces._transfer_spline import coarsen_knots
        >>> coarsen_knots([0, 0, 0, .25, .5, .75, 1, 1, 1], 2).tolist()
        [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    """
    t = np.asarray(knots, dtype=np.float64)
    u, counts = np.unique(t, return_counts=True)
    m = u.size - 2
    k = np.arange(1, m + 1)
    keep = np.ones(u.size, bool)
    keep[1:-1] = (counts[1:-1] > 1) | (np.minimum(k, m + 1 - k) % 2 == 0)
    return np.repeat(u[keep], counts[keep])


@dataclass
class _Patch:
    """One patch of a level: knots, degrees, control-net shape, homogeneous weights (or None: all equal)."""

    knots: tuple
    degrees: tuple
    sides: dict  # name -> (axis, side)
    glue: tuple
    collapsed: tuple
    weights: np.ndarray | None  # (n_1, ..., n_d) or None when all equal / traced

    @property
    def shape(self) -> tuple:
        return tuple(len(t) - p - 1 for t, p in zip(self.knots, self.degrees, strict=True))

    def dof_map(self) -> tuple[np.ndarray, int]:
        return glued_dof_map(self.shape, self.sides, self.glue, self.collapsed)

    def side_dofs(self, name: str) -> np.ndarray:
        """Patch dofs on side ``name``, in the side's C order (as ``_SplinePlan.side_points``)."""
        axis, side = self.sides[name]
        idx = np.arange(int(np.prod(self.shape))).reshape(self.shape)
        pts = np.take(idx, 0 if side == 0 else self.shape[axis] - 1, axis=axis).ravel()
        return self.dof_map()[0][pts]


def _weights(space) -> tuple[np.ndarray | None, str]:
    """Concrete weights of a one-patch space, or None when they are all equal (B-spline) or traced."""
    w = space.weights
    if isinstance(w, jax.core.Tracer):
        return None, "traced"
    w = np.asarray(w, dtype=np.float64)
    return (None, "equal") if np.all(w == w.reshape(-1)[0]) else (w, "rational")


def _patches(space) -> tuple[list[_Patch], bool]:
    """The patches of a SplineSpace or MultiPatchSpace, and whether any weights are traced."""
    subs = space.spaces if space.plan.kind == "multipatch" else (space,)
    out, traced = [], False
    for s in subs:
        w, how = _weights(s)
        traced |= how == "traced"
        p = s.plan
        out.append(_Patch(p.knots, p.degrees, dict(p.sides), p.glue, p.collapsed, w))
    return out, traced


def _patch_transfer(fine: _Patch, coarse_knots: tuple) -> tuple[sp.csr_matrix, np.ndarray | None, bool]:
    """Control-point prolongation (ncp_f, ncp_c) of one patch, its coarse weights, and whether exact."""
    Ts = [oslo_matrix(tc, p, tf) for tc, tf, p in zip(coarse_knots, fine.knots, fine.degrees, strict=True)]
    T = sp.csr_matrix(Ts[0])
    for Td in Ts[1:]:
        T = sp.kron(T, sp.csr_matrix(Td), format="csr")
    T.eliminate_zeros()
    if fine.weights is None:
        return T, None, True
    # Least-squares coarse weights, one direction at a time: pinv(kron(T_0, T_1)) = kron(pinv T_0, pinv T_1).
    # Each 1D problem by its normal equations: T_d^T T_d is banded SPD and well conditioned (B-spline
    # refinement matrices are; a dense pinv by SVD took 6 s for the 5 levels of a 512^2 patch).
    wc = fine.weights
    for d, Td in enumerate(Ts):
        S = sp.csr_matrix(Td)
        G = (S.T @ S).tocoo()
        upper = G.row <= G.col
        u = int(np.max(G.col - G.row))
        ab = np.zeros((u + 1, G.shape[0]))  # upper banded storage of T_d^T T_d
        ab[u + G.row[upper] - G.col[upper], G.col[upper]] = G.data[upper]
        rhs = np.moveaxis(wc, d, 0)
        x = solveh_banded(ab, S.T @ rhs.reshape(rhs.shape[0], -1))
        wc = np.moveaxis(x.reshape((Td.shape[1],) + rhs.shape[1:]), 0, d)
    cshape = wc.shape
    wc = wc.reshape(-1)
    Tw = T @ wc
    wf = fine.weights.reshape(-1)
    exact = bool(np.max(np.abs(Tw - wf)) <= 1e-12 * np.max(np.abs(wf)))
    if not (np.all(wc > 0) and np.all(Tw > 0)):  # pragma: no cover - pathological weights
        logger.info("multigrid: least-squares coarse weights are not positive; using the B-spline transfer.")
        return T, None, False
    # P_ij = T_ij w^c_j / (T w^c)_i: the exact NURBS transfer when T w^c = w, rows summing to one otherwise.
    P = sp.diags(1.0 / Tw) @ T @ sp.diags(wc)
    return P.tocsr(), wc.reshape(cshape), exact


def _tie(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Classes of ``range(n)`` joined by the pairs ``(a, b)``, numbered in the order of their smallest
    member (the numbering of :class:`~igax.fem.MultiPatchSpace`'s union-find)."""
    g = sp.coo_matrix((np.ones(a.size), (a, b)), shape=(n, n))
    ncomp, label = connected_components(g, directed=False)
    first = np.full(ncomp, n, dtype=np.int64)
    np.minimum.at(first, label, np.arange(n))
    rank = np.empty(ncomp, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(ncomp)
    return rank[label]


def _level_map(patches: list[_Patch], interfaces) -> tuple[np.ndarray, int]:
    """Map from the concatenated control points of all patches to the level's (scalar) dofs, and their count.

    One patch: its glued/collapsed dof map (as the space builds it). Several: each patch's own dof map, then
    the interface sides tied one to one (in reverse where ``flip``), as :class:`MultiPatchSpace` does.
    """
    maps = [p.dof_map() for p in patches]
    if len(patches) == 1:
        return maps[0]
    off = np.concatenate([[0], np.cumsum([n for _, n in maps])])
    a, b = [], []
    for (ka, sa), (kb, sb), flip in interfaces:
        da = off[ka] + patches[ka].side_dofs(sa)
        db = off[kb] + patches[kb].side_dofs(sb)
        a.append(da)
        b.append(db[::-1] if flip else db)
    tie = _tie(int(off[-1]), np.concatenate(a), np.concatenate(b)) if a else np.arange(int(off[-1]))
    cp_to_patch_dof = np.concatenate([off[k] + m for k, (m, _) in enumerate(maps)])
    return tie[cp_to_patch_dof], int(tie.max()) + 1


def _space_map(space) -> tuple[np.ndarray, int]:
    """The space's own map from its (concatenated) control points to scalar dofs."""
    plan = space.plan
    if plan.kind != "multipatch":
        return plan.dof_map, plan.nscalar
    parts = [plan.dof_map[plan.dof_off[k] + s.plan.dof_map] for k, s in enumerate(space.spaces)]
    return np.concatenate(parts), plan.nscalar


def _representatives(dof_map: np.ndarray, n: int) -> np.ndarray:
    """For each dof, the first control point that carries it."""
    rep = np.empty(n, dtype=np.int64)
    rep[dof_map[::-1]] = np.arange(dof_map.size)[::-1]
    return rep


@dataclass
class SplineLevel:
    """One coarse level of a spline hierarchy.

    Attributes:
        knots: per patch, the knot vectors of the level.
        weights: per patch, the level's weights (None: plain B-splines, or not representable/traced).
        ndofs: number of (vector) dofs of the level.
        prolongation: ``scipy.sparse.csr_matrix`` of shape (finer level's ndofs, ndofs).
        exact: whether the level is exactly the coarse NURBS space of these knots (False when the weights
            had to be fitted or were traced).
    """

    knots: list
    weights: list
    ndofs: int
    prolongation: sp.csr_matrix
    exact: bool


def spline_levels(space, *, coarse_size: int = 256, max_levels: int = 20) -> list[SplineLevel]:
    """Coarse levels of a :class:`SplineSpace` or :class:`MultiPatchSpace`, finest first.

    Coarsening stops when a level has at most ``coarse_size`` dofs, when no knot can be dropped, or after
    ``max_levels`` coarse levels. Vector spaces: ``P`` is block-diagonal over the components
    (component-major dofs).

    Returns:
        the coarse levels (possibly empty: a space already at most ``coarse_size`` dofs has none).
    """
    plan = space.plan
    patches, traced = _patches(space)
    if traced:
        logger.info(
            "multigrid: the spline weights are traced; the hierarchy uses the B-spline knot-insertion "
            "transfer (rows sum to one, constants exact), not the coarse NURBS spaces. Build the hierarchy "
            "outside jit (fem.mg_hierarchy(V)) to get the exact rational transfer."
        )
    interfaces = getattr(plan, "interfaces", ())
    ncomp = plan.ncomp
    fine_map, nf = _space_map(space)
    levels: list[SplineLevel] = []
    while nf * ncomp > coarse_size and len(levels) < max_levels:
        new = [tuple(coarsen_knots(t, q) for t, q in zip(p.knots, p.degrees, strict=True)) for p in patches]
        if all(
            all(a.size == b.size for a, b in zip(k, p.knots, strict=True))
            for k, p in zip(new, patches, strict=True)
        ):
            break
        blocks, coarse, exact = [], [], not traced
        for p, knots in zip(patches, new, strict=True):
            P, wc, ok = _patch_transfer(p, knots)
            blocks.append(P)
            exact &= ok
            coarse.append(_Patch(knots, p.degrees, p.sides, p.glue, p.collapsed, wc))
        if not exact and not traced:
            logger.info(
                "multigrid: the fine weights are not representable on the coarse knots; using least-squares "
                "coarse weights (rows of P sum to one)."
            )
        coarse_map, nc = _level_map(coarse, interfaces)
        P_cp = sp.block_diag(blocks, format="csr")  # (all fine control points, all coarse control points)
        G = sp.csr_matrix(
            (np.ones(coarse_map.size), (np.arange(coarse_map.size), coarse_map)), (P_cp.shape[1], nc)
        )
        P = (P_cp[_representatives(fine_map, nf)] @ G).tocsr()
        P.sum_duplicates()
        P.eliminate_zeros()
        if ncomp > 1:
            P = sp.kron(sp.identity(ncomp, format="csr"), P, format="csr")
        levels.append(
            SplineLevel([p.knots for p in coarse], [p.weights for p in coarse], nc * ncomp, P, exact)
        )
        patches, fine_map, nf = coarse, coarse_map, nc
    return levels
