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

import weakref
from collections import OrderedDict

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.spaces.base import FunctionSpace, Tables
from igax.fem.spaces.locators import NONFINITE, OK, OUTSIDE, SINGULAR, Location
from igax.solvers._errors import error_if

__all__ = ["Location", "locate", "host_locate", "host_tables", "points_error"]


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


# Jitted: run eagerly (``grad`` with respect to points outside ``jit``), its many small ops would compile anew
# one by one for every number of points.
@eqx.filter_jit
def _tables_at(space, index, ref, points):
    """Dofs and basis tables at located points, differentiable in the points and the geometry."""
    return space.tables_at(index, ref, points)


def _check_status(ref, status, points):
    """``ref``, or a run-time ValueError with the eager message where a point is not usable."""
    n = points.shape[0]
    code = status.astype(jnp.int32)
    bad = code != OK
    kind = jnp.min(jnp.where(bad, code, 127))  # the kind reported first, as eagerly
    sel = code == kind
    first = jnp.argmax(sel)

    def make(kind, count, first, point):
        return ValueError(_message(int(kind), int(count), n, int(first), point))

    return error_if(ref, jnp.any(bad), make, kind, jnp.sum(sel), first, jax.lax.stop_gradient(points)[first])
