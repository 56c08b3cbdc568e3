"""Point location: which element (and where in it) holds a physical point, and the basis there.

Location is integer and geometric work, done on the host in NumPy: a k-d tree for the first guess, then
Newton iterations of the geometry map (the NURBS map of a patch, the vertex map of a mesh cell). Its result
is a :class:`Location`: per point an index (the mesh cell, or the patch of a multi-patch space), reference
coordinates (in the cell, or the patch's parameters) and a status (inside, outside, non-finite, singular).
This module is the one home of point location; :class:`igax.fem.Field` and
:class:`igax.inverse.PointObservation` use it.

:func:`locate` gives the dofs and basis tables at points in two regimes:

* **concrete points and geometry** (NumPy data, eager calls, or constants closed over by ``jit``): location
  and the basis tables are computed now, in NumPy, so the compiled program holds only a gather and a sum
  over the coefficients, exact in their derivatives, and nothing is compiled for the geometry.
* **traced points or geometry** (arguments of a ``jit``-compiled function, ``vmap``, ``grad`` with respect to
  points or control points): location runs on the host at run time, through ``jax.pure_callback`` (one call
  per evaluation, fixed output shapes), and the basis is evaluated in JAX at the located reference
  coordinates. Those coordinates carry the derivatives of the inverse map by the implicit function theorem
  (a ``custom_jvp``: ``d xi = J^-1 (dx - dF/dgeometry dgeometry)`` at the solution, applied recursively, so
  derivatives of every order are exact), which makes the values differentiable in the coefficients, the
  points and the geometry. Points outside the domain raise at run time through the solvers' error mechanism
  (:func:`igax.solvers._errors.error_if`), with the eager message.

A host callback cannot be serialised: a program that evaluates a Field at traced points cannot go through
``jax.export``; for fixed points precompute the operator with :class:`igax.inverse.PointObservation`.

Measured, 1000 points, float64, 2 shared CPU cores (quarter annulus degree 3 with 16 x 16 elements; P2 on 2048
triangles; four quarter annuli of degree 2 with 8 x 8 elements each), first call / warm call:

| call                                      | spline patch    | P2 triangles     | 4-patch ring     |
| ----------------------------------------- | --------------- | ---------------- | ---------------- |
| eager, before this design (JAX map)       | 8.5 s / 12 ms   | 0.9 s / 5 ms     | 25 s / 115 ms    |
| eager, the same points again              | 0.3 s / 0.9 ms  | 0.16 s / 0.7 ms  | 0.3 s / 0.8 ms   |
| eager, new points every call (warm)       | 12 ms           | 5 ms             | 22 ms            |
| jit, constant points                      | 0.07 s / 0.07 ms| 0.09 s / 0.05 ms | 0.1 s / 0.06 ms  |
| jit, traced points (callback + JAX tail)  | 2.3 s / 12 ms   | 0.7 s / 3 ms     | 5.5 s / 18 ms    |

The first eager call no longer compiles the geometry map (NumPy instead), and the multi-patch search stops a
point as soon as the clip pins it to a patch's boundary (it ran fifty Newton steps on every point outside a
patch). Compiling a traced-points program is the cost of the JAX basis evaluation (``SplineSpace
._param_tables``), once per shape.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import weakref
from collections import OrderedDict
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from igax.fem.space import FunctionSpace, Tables, det_inv

__all__ = [
    "Location",
    "Locator",
    "SplineLocator",
    "PatchesLocator",
    "CellLocator",
    "locate",
    "host_locate",
    "host_tables",
    "points_error",
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


# --- public entry points ------------------------------------------------------------------------------------


def locate(space: FunctionSpace, points, *, n_valid: int | None = None) -> tuple:
    """Scalar dofs (npts, nloc) and basis tables (npts, 1, nloc[, dim]) at physical points (npts, dim).

    Arguments:
        space: a SplineSpace, MultiPatchSpace or LagrangeSpace.
        points: (npts, dim), NumPy or JAX, concrete or traced (see the module docstring for both regimes).
        n_valid: only the first ``n_valid`` points are the caller's (the rest pad the batch to a size class);
            error messages count and quote those only.

    Returns:
        ``(dofs, tables)``: NumPy arrays for concrete points and geometry, JAX arrays otherwise. Bad points
        raise a ``ValueError`` (at run time when the points are traced).
    """
    _check_space(space)
    if _concrete(points) and _concrete(space):
        pts = np.asarray(jax.device_get(points), dtype=np.float64)
        n = len(pts) if n_valid is None else n_valid
        # Only the caller's points are located; padding rows repeat the first point's data.
        loc, data = _locator(space).evaluate(pts[:n])
        err = points_error(loc.status, pts[:n])
        if err is not None:
            raise err
        rows = np.concatenate([np.arange(n), np.zeros(len(pts) - n, np.int64)])
        dofs, phi, dphi, x = (a[rows] for a in data)
        # NumPy: a jitted consumer transfers them with its other arguments (one dispatch, not five).
        return dofs, Tables(phi[:, None], dphi[:, None], x[:, None], np.ones((len(pts), 1)), None)
    return _locate_traced(space, points)


def host_locate(space: FunctionSpace, pts: np.ndarray) -> Location:
    """Locate concrete points (npts, dim) in a space with concrete geometry, on the host; never raises for
    bad points (see ``Location.status``)."""
    _check_space(space)
    return _locator(space).locate(np.asarray(pts, dtype=np.float64))


def host_tables(space: FunctionSpace, loc: Location):
    """Basis data at located points, in NumPy.

    Returns:
        ``(dofs (npts, nloc) scalar dofs, phi (npts, nloc) values, dphi (npts, nloc, dim) physical
        gradients, x (npts, dim) the mapped points)``. Rows whose status is not ``OK`` are placeholders (and
        ``dphi`` is not finite at ``SINGULAR`` points).
    """
    return _locator(space).tables(loc)


def points_error(
    status: np.ndarray, pts: np.ndarray, n_valid: int | None = None, *, allow_singular: bool = False
) -> ValueError | None:
    """The ValueError for the worst kind of bad point in ``status`` (None when all are usable).

    Arguments:
        status: (npts,) location status codes; pts: (npts, dim) the points.
        n_valid: only the first ``n_valid`` points are the caller's.
        allow_singular: accept ``SINGULAR`` points (values are defined there; only gradients are not).
    """
    n = len(pts) if n_valid is None else n_valid
    status, pts = np.asarray(status)[:n], np.asarray(pts)[:n]
    for kind in (NONFINITE, OUTSIDE) + (() if allow_singular else (SINGULAR,)):
        sel = status == kind
        if sel.any():
            i = int(np.argmax(sel))
            return ValueError(_message(kind, int(sel.sum()), n, i, pts[i]))
    return None


def _message(kind: int, count: int, n: int, i: int, point) -> str:
    pt = np.asarray(point, dtype=np.float64).tolist()
    if kind == NONFINITE:
        return (
            f"points must be finite: {count} of {n} points hold NaN or inf (first: index {i}, {pt}). Drop or "
            "replace them before evaluating, e.g. points[np.isfinite(points).all(axis=1)]."
        )
    if kind == OUTSIDE:
        return (
            f"{count} of {n} points lie outside the domain (first: {pt}) at points[{i}]; evaluate fields "
            "only at points of the domain."
        )
    # A degenerate point of the map has no inverse Jacobian, so basis gradients there are undefined: say so
    # instead of returning NaN or garbage.
    return (
        f"{count} of {n} points lie where the geometry map is singular (first: {pt}) at points[{i}]: a pole "
        "or a degenerate corner of the parametrisation (e.g. the centre of a polar disk, the four corners "
        "of geometry.disk()), where gradients of the basis are undefined. Evaluate at points a little away "
        "from it (e.g. 1e-2 of an element size); for values alone, inverse.PointObservation accepts it."
    )


def _check_space(space):
    if not isinstance(space, FunctionSpace):
        raise TypeError(
            f"point evaluation needs an igax.fem space (a FunctionSpace), got {type(space).__name__}."
        )


def _concrete(tree) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(tree))


# --- host locators (NumPy), cached per space ----------------------------------------------------------------

# Search structures (k-d trees, the starting grid's images) depend only on the geometry: keep the last few,
# keyed by the identity of the geometry arrays (weak references: a dead array misses instead of aliasing).
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 8


def _locator(space):
    leaves = jax.tree.leaves(space)
    key = (id(space.plan), tuple(id(a) for a in leaves))
    hit = _CACHE.get(key)
    if hit is not None and all(r() is a for r, a in zip(hit[0], leaves, strict=True)):
        _CACHE.move_to_end(key)
        return hit[1]
    loc = jax.device_get(space).locator()

    def forget(_, key=key):  # a geometry array died: drop its entry now, not when it is evicted
        _CACHE.pop(key, None)

    try:
        refs = tuple(weakref.ref(a, forget) for a in leaves)
    except TypeError:  # leaves that take no weak reference: no caching
        return loc
    _CACHE[key] = (refs, loc)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return loc


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


# --- traced points or geometry: location in a host callback, the basis in JAX -------------------------------


def _locate_traced(space, points):
    """Location through ``jax.pure_callback`` at run time, then the differentiable basis tables."""
    points = jnp.asarray(points)
    if not jnp.issubdtype(points.dtype, jnp.floating):
        points = points.astype(jnp.result_type(float))
    n, dim = points.shape
    pdim = space.plan.pdim
    leaves, treedef = jax.tree.flatten(space)
    if _concrete(space):  # geometry known now: the callback closes over its host locator (and k-d tree)
        locator, operands, base = _locator(space), [], []
    else:
        locator, operands, base = None, [jax.lax.stop_gradient(a) for a in leaves], [a.ndim for a in leaves]

    def host(pts, *geo):
        # vmap_method="expand_dims": batched operands carry leading batch axes, the others size-1 axes; the
        # result has the full batch shape.
        pts = np.asarray(pts, dtype=np.float64)
        geo = [np.asarray(g) for g in geo]
        leads = [pts.shape[:-2]] + [g.shape[: g.ndim - b] for g, b in zip(geo, base, strict=True)]
        batch = np.broadcast_shapes(*leads)
        index = np.zeros(batch + (n,), np.int32)
        ref = np.zeros(batch + (n, pdim))
        status = np.zeros(batch + (n,), np.int8)
        if all(int(np.prod(s)) == 1 for s in leads[1:]):  # one geometry: all point sets in one go
            loc = (
                locator
                or jax.tree.unflatten(
                    treedef, [g.reshape(g.shape[-b:] if b else ()) for g, b in zip(geo, base, strict=True)]
                ).locator()
            )
            out = loc.locate(pts.reshape(-1, dim))
            for o, a in zip((index, ref, status), out, strict=True):
                o[...] = a.reshape(pts.shape[:-2] + o.shape[len(batch) :])
        else:  # a batch of geometries: one locator each
            for b in np.ndindex(*batch):
                g = [
                    np.broadcast_to(a, batch + a.shape[len(a.shape) - nb :])[b]
                    for a, nb in zip(geo, base, strict=True)
                ]
                loc = jax.tree.unflatten(treedef, g).locator()
                p = np.broadcast_to(pts, batch + (n, dim))[b]
                for o, a in zip((index, ref, status), loc.locate(p), strict=True):
                    o[b] = a
        return index, ref.astype(points.dtype), status

    shapes = (
        jax.ShapeDtypeStruct((n,), jnp.int32),
        jax.ShapeDtypeStruct((n, pdim), points.dtype),
        jax.ShapeDtypeStruct((n,), jnp.int8),
    )
    index, ref, status = jax.pure_callback(
        host, shapes, jax.lax.stop_gradient(points), *operands, vmap_method="expand_dims"
    )
    ref = _check_status(ref, status, points)
    return _tables_at(space, index, ref, points)


def _check_status(ref, status, points):
    """``ref``, or a run-time ValueError with the eager message where a point is not usable."""
    from igax.solvers._errors import error_if

    n = points.shape[0]
    code = status.astype(jnp.int32)
    bad = code != OK
    kind = jnp.min(jnp.where(bad, code, 127))  # the kind reported first, as eagerly
    sel = code == kind
    first = jnp.argmax(sel)

    def make(kind, count, first, point):
        return ValueError(_message(int(kind), int(count), n, int(first), point))

    return error_if(ref, jnp.any(bad), make, kind, jnp.sum(sel), first, jax.lax.stop_gradient(points)[first])


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


# Jitted: run eagerly (``grad`` with respect to points outside ``jit``), its many small ops would compile anew
# one by one for every number of points.
@eqx.filter_jit
def _tables_at(space, index, ref, points):
    """Dofs and basis tables at located points, differentiable in the points and the geometry."""
    return space.tables_at(index, ref, points)


def select(mask, a, b):
    """``a`` where ``mask`` (npts,) holds, else ``b``, broadcast over the trailing axes."""
    return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
