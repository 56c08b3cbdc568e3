"""Locators: how each kind of space finds the element (and the reference coordinates in it) that holds a
physical point, on the host in NumPy, and the differentiable inverse geometry map used at traced points.

:class:`Locator` is the protocol (``FunctionSpace.locator()`` returns one); :class:`SplineLocator` (a patch:
k-d tree of a parameter grid, then Newton on the NURBS map), :class:`PatchesLocator` (one per patch, the
first patch that holds the point) and :class:`CellLocator` (mesh cells) implement it. A :class:`Location`
is per point an index (the mesh cell, or the patch of a multi-patch space), reference coordinates and a
status (inside, outside, non-finite, singular). :func:`inverse_map` solves ``F(xi) = x`` for traced points
with exact derivatives (implicit function theorem, a ``custom_jvp``). The user-facing entry point is
:func:`igax.fem.locate.locate`.
"""

from __future__ import annotations

import abc
import functools
import hashlib
from collections import OrderedDict
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from igax.fem.spaces.base import det_inv

__all__ = [
    "Location",
    "Locator",
    "SplineLocator",
    "PatchesLocator",
    "CellLocator",
    "spline_tables",
    "inverse_map",
    "spline_map",
    "cell_map",
]

_TOL = 1e-9


# Location status codes; lower codes are reported first when several kinds of bad points occur.
OK, NONFINITE, OUTSIDE, SINGULAR = 0, 1, 2, 3


class Location(NamedTuple):
    """Where points lie (NumPy, one row per point).

    Attributes:
        index: (npts,) int32: the mesh cell (LagrangeSpace), the patch (MultiPatchSpace), 0 (SplineSpace).
        ref: (npts, pdim) reference coordinates in the cell, or parameters in the patch.
        status: (npts,) int8: ``OK`` (0), ``NONFINITE`` (1), ``OUTSIDE`` (2) or ``SINGULAR`` (3, a point where
            the geometry map degenerates: values exist, gradients do not). Rows that are not ``OK`` hold a
            valid placeholder location (so that evaluating them stays finite) and must not be used.
    """

    index: np.ndarray
    ref: np.ndarray
    status: np.ndarray


def spline_tables(V, u: np.ndarray):
    """Dofs ``(npts, nloc)``, NURBS values ``(npts, nloc)``, physical gradients ``(npts, nloc, dim)`` and
    points ``(npts, dim)`` of a spline patch at parameters ``u`` (npts, pdim), in NumPy (from
    :meth:`igax.fem.SplineSpace.basis_at`); gradients are not finite where the map is singular."""
    dofs, R, dR, x, J = V.basis_at(u)
    with np.errstate(divide="ignore", invalid="ignore"):
        dphi = np.matmul(dR, det_inv(J, np)[1])
    return dofs, R, dphi, x


def _mv(A, v):
    """Batched matrix-vector products ``A (n, i, k) @ v (n, k) -> (n, i)`` (NumPy's einsum is slower)."""
    return np.matmul(A, v[..., None])[..., 0]


def _knot_box(plan):
    return np.array([k[0] for k in plan.knots]), np.array([k[-1] for k in plan.knots])


class Locator(abc.ABC):
    """Host location for one space with concrete geometry (what :meth:`FunctionSpace.locator` returns);
    subclasses give ``locate`` and ``tables``, :meth:`evaluate` remembers recent point sets."""

    @abc.abstractmethod
    def locate(self, pts: np.ndarray) -> Location:
        """Element (or patch) and reference coordinates of each point; raises for points outside."""

    @abc.abstractmethod
    def tables(self, loc: Location):
        """Basis tables at located points."""

    def evaluate(self, pts: np.ndarray):
        """``(location, tables)`` of ``pts``, remembered for the last few point sets: a script or a loop that
        evaluates fields at the same points again (plots, a misfit in a Python loop) locates them once."""
        cache = self.__dict__.setdefault("_results", OrderedDict())
        key = (pts.shape, hashlib.blake2b(np.ascontiguousarray(pts).tobytes(), digest_size=16).digest())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        loc = self.locate(pts)
        out = (loc, self.tables(loc) if (loc.status == OK).all() else None)
        if sum(a.nbytes for a in (out[1] or ())) <= 2**26:  # keep small point sets only (<= 64 MiB of tables)
            cache[key] = out
            while len(cache) > 4:
                cache.popitem(last=False)
        return out


class SplineLocator(Locator):
    """One patch: Newton on the NURBS map from the nearest of a few images per element."""

    def __init__(self, V):
        p = V.plan
        self.V, self.plan = V, p
        self.lo, self.hi = _knot_box(p)
        self.center = 0.5 * (self.lo + self.hi)
        per = [
            np.concatenate([b[:-1] + f * np.diff(b) for f in (0.1, 0.5, 0.9)] + [b[-1:]]) for b in p.breaks
        ]
        self.grid = np.stack([g.ravel() for g in np.meshgrid(*per, indexing="ij")], axis=1)
        xs, Js = self.map(self.grid)
        self.xs = xs
        with np.errstate(divide="ignore", invalid="ignore"):
            self.Jinv = det_inv(Js, np)[1]  # (ngrid, pdim, dim): the first Newton step from a grid point
        self.tree = cKDTree(xs)
        self.scale = max(1.0, float(np.max(np.abs(xs))))
        self.det_scale = float(np.median(np.abs(np.linalg.det(Js))))

    def map(self, u):
        _, _, _, x, J = self.V.basis_at(u)
        return x, J

    def _step(self, u, du):
        """``u + du`` wrapped across glued seams and clipped to the patch."""
        lo, hi = self.lo, self.hi
        u = u + du
        for ax in getattr(self.plan, "periodic_axes", ()):  # glued seam: a step across it wraps around
            u[:, ax] = lo[ax] + np.mod(u[:, ax] - lo[ax], hi[ax] - lo[ax])
        return np.clip(u, lo, hi)

    def parameters(self, pts: np.ndarray):
        """``(u, reached, singular)`` of finite points: parameters (clipped to the patch; a step across a
        glued seam wraps around), whether the map reaches each point (else it lies outside the patch) and
        whether the map is singular there (a pole, a degenerate corner)."""
        _, near = self.tree.query(pts)
        # The first step uses the grid's own Jacobians: it costs no evaluation of the map.
        with np.errstate(invalid="ignore"):
            du = _mv(self.Jinv[near], pts - self.xs[near])
        u = self._step(self.grid[near], np.where(np.isfinite(du), du, 0.0))
        x = np.empty_like(pts)
        J = np.empty((len(pts),) + self.Jinv.shape[2:] + self.Jinv.shape[1:2])
        act = np.arange(len(pts))  # Newton only on the points not converged yet
        tol = 1e-14 * max(1.0, float(np.max(self.hi - self.lo)))
        for _ in range(50):
            if not act.size:
                break
            x[act], J[act] = self.map(u[act])
            with np.errstate(divide="ignore", invalid="ignore"):
                du = _mv(det_inv(J[act], np)[1], pts[act] - x[act])
            stuck = ~np.isfinite(du).all(axis=1)  # a singular Jacobian (a pole): stop there, flagged below
            du[stuck] = 0.0
            ua = self._step(u[act], du)
            # Converged, or pinned to the patch's boundary by the clip (a point outside: the step pushes
            # outward and nothing moves): either way done, so outside points cost a few steps, not fifty.
            moved = np.max(np.abs(ua - u[act]), axis=1)
            u[act] = ua
            act = act[(moved >= tol) & ~stuck]
        # x and J are those of the last iterate but one: off by a step below tol, far below the thresholds.
        reached = np.linalg.norm(x - pts, axis=1) <= 1e-8 * self.scale
        singular = np.abs(np.linalg.det(J)) < 1e-8 * self.det_scale
        return u, reached, singular

    def locate(self, pts):
        n = len(pts)
        status = np.full(n, OUTSIDE, np.int8)
        ref = np.tile(self.center, (n, 1))
        fin = np.isfinite(pts).all(axis=1)
        status[~fin] = NONFINITE
        idx = np.nonzero(fin)[0]
        if idx.size:
            u, reached, singular = self.parameters(pts[idx])
            status[idx[reached]] = np.where(singular[reached], SINGULAR, OK)
            ref[idx[reached]] = u[reached]
        return Location(np.zeros(n, np.int32), ref, status)

    def tables(self, loc):
        return spline_tables(self.V, loc.ref)


class PatchesLocator(Locator):
    """Each point on the first patch whose map reaches it regularly (on an interface: the first listed)."""

    def __init__(self, V):
        self.plan = V.plan
        self.subs = [SplineLocator(s) for s in V.spaces]

    def locate(self, pts):
        n = len(pts)
        fin = np.isfinite(pts).all(axis=1)
        status = np.where(fin, OUTSIDE, NONFINITE).astype(np.int8)
        owner = np.full(n, -1)
        ref = np.tile(self.subs[0].center, (n, 1))
        for k, sub in enumerate(self.subs):
            todo = np.nonzero(fin & (status != OK))[0]
            if not todo.size:
                break
            u, reached, singular = sub.parameters(pts[todo])
            ok = reached & ~singular
            # a singular point keeps the first patch that reaches it, unless a later one holds it regularly
            first_singular = reached & singular & (owner[todo] < 0)
            for sel, code in ((ok, OK), (first_singular, SINGULAR)):
                owner[todo[sel]] = k
                ref[todo[sel]] = u[sel]
                status[todo[sel]] = code
        return Location(np.maximum(owner, 0).astype(np.int32), ref, status)

    def tables(self, loc):
        p = self.plan
        n = len(loc.index)
        out = None
        for k in np.unique(loc.index):
            idx = np.nonzero(loc.index == k)[0]
            sub = self.subs[int(k)]
            dofs, R, dphi, x = sub.tables(Location(loc.index[idx], loc.ref[idx], loc.status[idx]))
            dofs = p.dof_map[int(p.dof_off[k]) + dofs]  # patch dofs -> the joined numbering
            if out is None:
                out = [np.zeros((n,) + a.shape[1:], a.dtype) for a in (dofs, R, dphi, x)]
            for o, a in zip(out, (dofs, R, dphi, x), strict=True):
                o[idx] = a
        return tuple(out)


def _ref_coords(p, X, pts, iters=20):
    """Newton for the reference coordinates of pts in cells with vertex coordinates X (n, nv, dim)."""
    xi = np.tile(p.geo.nodes.mean(axis=0), (pts.shape[0], 1))
    for _ in range(iters):
        gv = p.geo.values(xi)  # (n, nv)
        gg = p.geo.gradients(xi)  # (n, nv, dim)
        x = _mv(X.transpose(0, 2, 1), gv)
        J = np.matmul(X.transpose(0, 2, 1), gg)
        dxi = np.linalg.solve(J, (pts - x)[..., None])[..., 0]
        xi = xi + dxi
        if np.max(np.abs(dxi), initial=0.0) < 1e-14:
            break
    return xi


def _inside(xi, simplex):
    if simplex:
        return np.all(xi >= -_TOL, axis=-1) & (np.sum(xi, axis=-1) <= 1 + _TOL)
    return np.all((xi >= -_TOL) & (xi <= 1 + _TOL), axis=-1)


class CellLocator(Locator):
    """A mesh: candidate cells from a k-d tree of cell centres, Newton on each candidate's vertex map."""

    def __init__(self, V):
        p = V.plan
        self.plan = p
        self.X = np.asarray(V.points)[p.cells]  # (nel, nv, dim)
        self.tree = cKDTree(self.X.mean(axis=1))
        self.centroid = p.geo.nodes.mean(axis=0)

    def locate(self, pts):
        p = self.plan
        n = len(pts)
        simplex = p.geo.reference.is_simplex
        cell = np.zeros(n, dtype=np.int32)
        xi = np.tile(self.centroid, (n, 1))
        fin = np.isfinite(pts).all(axis=1)
        status = np.where(fin, OUTSIDE, NONFINITE).astype(np.int8)
        todo = np.nonzero(fin)[0]
        for k in (8, 64):
            if not todo.size:
                break
            kk = min(k, p.nel)
            _, cand = self.tree.query(pts[todo], k=kk)
            cand = cand.reshape(len(todo), kk)
            for j in range(kk):
                if not todo.size:
                    break
                c = cand[:, j]
                xij = _ref_coords(p, self.X[c], pts[todo])
                ok = _inside(xij, simplex)
                cell[todo[ok]] = c[ok]
                xi[todo[ok]] = xij[ok]
                status[todo[ok]] = OK
                todo, cand = todo[~ok], cand[~ok]
        return Location(cell, xi, status)

    def tables(self, loc):
        p = self.plan
        Xc = self.X[loc.index]  # (n, nv, dim)
        xi = loc.ref
        x = _mv(Xc.transpose(0, 2, 1), p.geo.values(xi))
        J = np.matmul(Xc.transpose(0, 2, 1), p.geo.gradients(xi))
        dphi = np.matmul(p.ref.gradients(xi), det_inv(J, np)[1])
        return p.cell_dofs[loc.index], p.ref.values(xi), dphi, x


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def inverse_map(map_fn, ref0, geometry, points):
    """Reference coordinates ``ref`` with ``map_fn(ref, geometry)[0] == points``, given the solution ``ref0``.

    The value is ``ref0`` (located on the host); the derivatives are the implicit ones,
    ``d ref = J^-1 (d points - dF/dgeometry d geometry)``. The rule calls this function again, so higher
    derivatives follow the same way and are exact too (a single Newton step from ``ref0`` gives exact first
    derivatives only).
    """
    return ref0


def _inverse_map_jvp(map_fn, primals, tangents):
    ref0, geometry, points = primals
    _, dgeometry, dpoints = tangents
    ref = inverse_map(map_fn, ref0, geometry, points)
    # Symbolic zeros: with a fixed geometry (the usual case: derivatives in the points only) the geometry's
    # tangent map is not built at all, which keeps the compiled derivative small.
    leaves = jax.tree.leaves(dgeometry, is_leaf=_is_zero)
    if all(_is_zero(t) for t in leaves):
        _, J = map_fn(ref, geometry)
        rhs = jnp.zeros_like(points)
    else:
        dgeometry = jax.tree.map(
            lambda t, g: jnp.zeros_like(g) if _is_zero(t) else t, dgeometry, geometry, is_leaf=_is_zero
        )
        (_, J), (dx, _) = jax.jvp(lambda g: map_fn(ref, g), (geometry,), (dgeometry,))
        rhs = -dx
    if not _is_zero(dpoints):
        rhs = rhs + dpoints
    _, Jinv = det_inv(J)
    return ref, jnp.einsum("nki,ni->nk", Jinv, rhs)


inverse_map.defjvp(_inverse_map_jvp, symbolic_zeros=True)


def _is_zero(t) -> bool:
    return isinstance(t, jax.custom_derivatives.SymbolicZero)


def spline_map(u, V):
    """Points ``(npts, dim)`` and Jacobians ``(npts, dim, pdim)`` of a spline patch's map at parameters ``u``
    (JAX): the ``map_fn`` of :func:`inverse_map` for a SplineSpace ``V``."""
    _, t, J = V._param_tables(u, return_jacobian=True)
    return t.x[:, 0], J[:, 0]


def cell_map(geo, xi, Xc):
    """Points and Jacobians of mesh cells with vertices ``Xc`` (npts, nv, dim) at reference coordinates ``xi``
    under the vertex basis ``geo`` (JAX): the ``map_fn`` of :func:`inverse_map` for a mesh cell."""
    x = jnp.einsum("nv,nvi->ni", geo.values(xi), Xc)
    J = jnp.einsum("nvk,nvi->nik", geo.gradients(xi), Xc)
    return x, J


def select(mask, a, b):
    """``a`` where ``mask`` (npts,) holds, else ``b``, broadcast over the trailing axes."""
    return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
