"""Point location: which element (and where in it) holds a physical point.

Location is integer work done on the host (NumPy/SciPy k-d tree for the first guess, Newton iterations of the
geometry map). The last Newton step is repeated in JAX from the converged point, with the point itself held
constant (``stop_gradient``): at a converged point this step gives exactly the implicit derivative of the
reference coordinates with respect to the geometry, so evaluations stay differentiable in the coefficients
and the geometry without differentiating through the iterations.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from igax.fem.space import FunctionSpace, Tables, det_inv, finish_tables

__all__ = ["locate", "check_finite_points"]

_TOL = 1e-9


def locate(space: FunctionSpace, points, *, n_valid: int | None = None) -> tuple[jax.Array, Tables]:
    """Dofs (npts, nloc) and basis tables (npts, 1, nloc[, dim]) at physical points (npts, dim).

    ``n_valid``: only the first ``n_valid`` points are the caller's (the rest pad the batch to a size class);
    error messages count and quote those only.
    """
    if space.plan.kind == "spline":
        impl = _locate_spline
    elif space.plan.kind == "multipatch":
        impl = _locate_multipatch
    elif space.plan.kind == "lagrange":
        impl = _locate_lagrange
    else:
        raise ValueError(
            f"point evaluation is not available for a {type(space).__name__}; evaluate at the quadrature "
            "points instead (Field.at_quadrature, V.quadrature_points())."
        )
    if not isinstance(points, jax.core.Tracer):  # location is host work: traced points fail there anyway
        check_finite_points(np.asarray(jax.device_get(points)), n_valid)
    try:
        return impl(space, points)
    except _BadPoints as err:
        raise err.error(n_valid) from None


def check_finite_points(pts: np.ndarray, n_valid: int | None = None) -> None:
    """Raise a ValueError naming the first NaN/inf point of ``pts`` (npts, dim), if any.

    Without it a NaN point reached SciPy's k-d tree first, whose message ("'x' must be finite") names neither
    the argument nor the point. ``n_valid``: only the first ``n_valid`` points are the caller's.
    """
    pts = pts if n_valid is None else pts[:n_valid]
    bad = ~np.isfinite(pts).all(axis=-1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"points must be finite: {int(bad.sum())} of {len(pts)} points hold NaN or inf (first: index "
            f"{i}, {pts[i].tolist()}). Drop or replace them before evaluating, e.g. "
            "points[np.isfinite(points).all(axis=1)]."
        )


class _BadPoints(Exception):
    """Raised inside location with a mask of bad points; :func:`locate` turns it into a ValueError."""

    def __init__(self, why: str, bad: np.ndarray, pts: np.ndarray):
        super().__init__(why)
        self.why, self.bad, self.pts = why, bad, pts

    def error(self, n_valid: int | None) -> ValueError:
        n = len(self.pts) if n_valid is None else n_valid
        bad, pts = self.bad[:n], self.pts[:n]
        i = int(np.nonzero(bad)[0][0])
        if self.why == "outside":
            return ValueError(
                f"{int(bad.sum())} of {n} points lie outside the domain (first: {pts[i].tolist()}); evaluate "
                "fields only at points of the domain."
            )
        # A degenerate point of the map has no inverse Jacobian, so basis gradients there are undefined: say
        # so instead of returning NaN or garbage.
        return ValueError(
            f"{int(bad.sum())} of {n} points lie where the geometry map is singular (first: "
            f"{pts[i].tolist()}): a pole or a degenerate corner of the parametrisation (e.g. the centre of a "
            "polar disk, the four corners of geometry.disk()), where gradients of the basis are undefined. "
            "Evaluate at points a little away from it (e.g. 1e-2 of an element size)."
        )


# --- splines ------------------------------------------------------------------------------------------------


def invert_spline_map(plan, pts: np.ndarray, map_fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parameters ``u`` with ``map_fn(u)[0] == pts`` by Newton's method, on the host (NumPy).

    Arguments:
        plan: the ``SpacePlan`` of a SplineSpace (knots, breaks, periodic axes).
        pts: (npts, dim) physical points.
        map_fn: ``u (k, pdim) -> (x (k, dim), J (k, dim, pdim))`` in NumPy, the geometry map.

    Returns:
        ``(u, xs, Js)``: the parameters (clipped to the patch; a step across a glued seam wraps around), and
        the images and Jacobians of the starting grid (a few parameter points per element; the nearest one
        is the first guess), which callers use as scales. Callers check that ``map_fn(u)[0]`` reached
        ``pts``.
    """
    check_finite_points(pts)
    lo = np.array([k[0] for k in plan.knots])
    hi = np.array([k[-1] for k in plan.knots])
    per = [np.concatenate([b[:-1] + f * np.diff(b) for f in (0.1, 0.5, 0.9)] + [b[-1:]]) for b in plan.breaks]
    grid = np.stack([g.ravel() for g in np.meshgrid(*per, indexing="ij")], axis=1)
    xs, Js = map_fn(grid)
    _, near = cKDTree(xs).query(pts)
    u = grid[near]
    for _ in range(50):
        x, J = map_fn(u)
        du = np.linalg.solve(J, (pts - x)[..., None])[..., 0]
        u = u + du
        for ax in getattr(plan, "periodic_axes", ()):  # glued seam: a step across it wraps to the other end
            u[:, ax] = lo[ax] + np.mod(u[:, ax] - lo[ax], hi[ax] - lo[ax])
        u = np.clip(u, lo, hi)
        if np.max(np.abs(du)) < 1e-14 * max(1.0, float(np.max(hi - lo))):
            break
    return u, xs, Js


def _spline_parameters(V, pts: np.ndarray):
    """Host Newton inversion of one patch's map at ``pts``.

    Returns ``(u, reached, singular)``: the parameters, whether the map reaches each point (else it lies
    outside the patch), and whether the map is singular there (a pole, a degenerate corner).
    """
    p = V.plan
    V_host = jax.device_get(V)

    def map_fn(u):
        return tuple(np.asarray(a) for a in _map_jit(V_host, jnp.asarray(u)))

    u, xs, Js = invert_spline_map(p, pts, map_fn)
    x, J = (np.asarray(a) for a in _map_jit(V_host, jnp.asarray(u)))
    scale = max(1.0, float(np.max(np.abs(xs))))
    reached = np.linalg.norm(x - pts, axis=1) <= 1e-8 * scale
    singular = np.abs(np.linalg.det(J)) < 1e-8 * np.median(np.abs(np.linalg.det(Js)))
    return u, reached, singular


def _knot_box(plan):
    return np.array([k[0] for k in plan.knots]), np.array([k[-1] for k in plan.knots])


def _locate_spline(V, points):
    pts = np.asarray(jax.device_get(points), dtype=np.float64)
    u, reached, singular = _spline_parameters(V, pts)
    if not reached.all():
        raise _BadPoints("outside", ~reached, pts)
    if singular.any():
        raise _BadPoints("singular", singular, pts)
    return _spline_tables_at(V, jnp.asarray(u), jnp.asarray(points), *_knot_box(V.plan))


def _locate_multipatch(V, points):
    """Each point on the first patch whose map reaches it regularly (on an interface: the first patch listed).

    Dofs are mapped to the joined space's numbering; tables are concatenated back in the order of the points.
    """
    p = V.plan
    pts = np.asarray(jax.device_get(points), dtype=np.float64)
    owner = np.full(len(pts), -1)
    params = np.zeros((len(pts), p.pdim))
    singular_somewhere = np.zeros(len(pts), bool)
    for k, sub in enumerate(V.spaces):
        todo = np.nonzero(owner < 0)[0]
        if not todo.size:
            break
        u, reached, singular = _spline_parameters(sub, pts[todo])
        ok = reached & ~singular
        owner[todo[ok]] = k
        params[todo[ok]] = u[ok]
        singular_somewhere[todo[reached & singular]] = True
    if (owner < 0).any():
        outside = (owner < 0) & ~singular_somewhere
        raise _BadPoints("outside", outside, pts) if outside.any() else _BadPoints("singular", owner < 0, pts)
    order = np.argsort(owner, kind="stable")
    parts = []
    for k in np.unique(owner):
        idx = np.nonzero(owner == k)[0]
        sub = V.spaces[int(k)]
        dofs, tables = _spline_tables_at(
            sub, jnp.asarray(params[idx]), jnp.asarray(points)[idx], *_knot_box(sub.plan)
        )
        parts.append((jnp.asarray(p.dof_map)[int(p.dof_off[k]) + dofs], tables))
    inverse = jnp.asarray(np.argsort(order))
    dofs = jnp.concatenate([d for d, _ in parts])[inverse]
    tables = jax.tree.map(lambda *a: jnp.concatenate(a)[inverse], *[t for _, t in parts])
    return dofs, tables


# The differentiable tails below are jitted: run eagerly, each of their many small ops would compile anew for
# every number of points (seconds per call).
@eqx.filter_jit
def _spline_tables_at(V, u0, points, lo, hi):
    """One differentiable Newton step from the converged parameters u0, then the basis tables there."""
    _, t0, J0 = V._param_tables(u0, return_jacobian=True)
    _, Jinv = det_inv(J0[:, 0])
    uj = jnp.clip(u0 - jnp.einsum("pki,pi->pk", Jinv, t0.x[:, 0] - points), lo, hi)
    return V._param_tables(uj)


@jax.jit
def _map_jit(V, u):
    _, t, J = V._param_tables(u, return_jacobian=True)
    return t.x[:, 0], J[:, 0]


# --- Lagrange meshes ----------------------------------------------------------------------------------------


def _inside(xi, simplex):
    if simplex:
        return np.all(xi >= -_TOL, axis=-1) & (np.sum(xi, axis=-1) <= 1 + _TOL)
    return np.all((xi >= -_TOL) & (xi <= 1 + _TOL), axis=-1)


def _ref_coords(p, X, pts, iters=20):
    """Newton for the reference coordinates of pts in cells with vertex coordinates X (n, nv, dim)."""
    xi = np.tile(p.geo.nodes.mean(axis=0), (pts.shape[0], 1))
    for _ in range(iters):
        gv = p.geo.values(xi)  # (n, nv)
        gg = p.geo.gradients(xi)  # (n, nv, dim)
        x = np.einsum("nv,nvi->ni", gv, X)
        J = np.einsum("nvk,nvi->nik", gg, X)
        dxi = np.linalg.solve(J, (pts - x)[..., None])[..., 0]
        xi = xi + dxi
        if np.max(np.abs(dxi), initial=0.0) < 1e-14:
            break
    return xi


def _locate_lagrange(V, points):
    p = V.plan
    pts = np.asarray(jax.device_get(points), dtype=np.float64)
    X = np.asarray(jax.device_get(V.points))[p.cells]  # (nel, nv, dim)
    tree = cKDTree(X.mean(axis=1))
    simplex = p.geo.reference.is_simplex
    cell = -np.ones(len(pts), dtype=np.int64)
    xi = np.zeros((len(pts), p.pdim))
    todo = np.arange(len(pts))
    for k in (8, 64):
        if not todo.size:
            break
        kk = min(k, p.nel)
        _, cand = tree.query(pts[todo], k=kk)
        cand = cand.reshape(len(todo), kk)
        for j in range(kk):
            if not todo.size:
                break
            c = cand[:, j]
            xij = _ref_coords(p, X[c], pts[todo])
            ok = _inside(xij, simplex)
            cell[todo[ok]] = c[ok]
            xi[todo[ok]] = xij[ok]
            todo, cand = todo[~ok], cand[~ok]
    if todo.size:
        bad = np.zeros(len(pts), bool)
        bad[todo] = True
        raise _BadPoints("outside", bad, pts)
    tables = _lagrange_tables_at(V, p.cells[cell], jnp.asarray(xi), jnp.asarray(points))
    return jnp.asarray(p.cell_dofs[cell]), tables


@eqx.filter_jit
def _lagrange_tables_at(V, vertex_ids, xi0, points):
    """A differentiable Newton step from the converged reference coordinates, then the basis tables there."""
    p = V.plan
    Xc = V.points[vertex_ids]  # (npts, nv, dim)
    gv, gg = p.geo.values(xi0), p.geo.gradients(xi0)
    x = jnp.einsum("nv,nvi->ni", gv, Xc)
    J = jnp.einsum("nvk,nvi->nik", gg, Xc)
    _, Jinv = det_inv(J)
    xi1 = xi0 - jnp.einsum("nki,ni->nk", Jinv, x - points)
    gv, gg = p.geo.values(xi1), p.geo.gradients(xi1)
    x = jnp.einsum("nv,nvi->ni", gv, Xc)[:, None]
    J = jnp.einsum("nvk,nvi->nik", gg, Xc)[:, None]
    phi = p.ref.values(xi1)[:, None]
    dref = p.ref.gradients(xi1)[:, None]
    return finish_tables(phi, dref, x, J, jnp.ones((xi0.shape[0], 1), xi0.dtype), None)
