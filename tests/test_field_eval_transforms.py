"""Point evaluation of Fields under jit, vmap and grad (issue 16, item 3), organised by transformation.

Every space that evaluates at physical points (one spline patch, Lagrange meshes of each cell type, a
multi-patch space) goes through one jitted program holding every transformation at once (one compile per
space): constant points, traced points, vmap over coefficient batches and over point batches, grad with
respect to the coefficients and to the points. Each result is compared in float64 with the eager result
(concrete points: location and basis on the host), to 1e-12 relative to its size. Geometry derivatives are
checked against central differences, second derivatives in the points against differences of the eager
gradient, and bad points under jit against the eager messages.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import bases, fem, inverse
from igax.fem import mesh


def _quarter(k):
    """The quarter annulus turned by k quarter turns, degree 2, 2 x 2 elements (a curved NURBS map)."""
    q = fem.geometry.quarter_annulus()
    c, s = np.cos(k * np.pi / 2), np.sin(k * np.pi / 2)
    cp = np.asarray(q.control_points) @ np.array([[c, -s], [s, c]]).T
    return bases.NURBSPatch(q.knots, q.degrees, cp, q.weights, q.boundaries).refine(degree=2, elements=2)


def _moved(m, amount):
    """Node coordinates of mesh m with the interior nodes moved (non-affine cells), the boundary kept."""
    X = np.array(m.points, dtype=float)
    inner = np.all((X > 1e-9) & (X < 1 - 1e-9), axis=1)
    X[inner] += amount * np.sin(7.0 * X[inner] + np.arange(X.shape[1]))
    return X


def _ring(r, th):
    return np.stack([r * np.cos(th), r * np.sin(th)], axis=1)


_SQUARE_PTS = np.array([[0.31, 0.72], [0.88, 0.13], [0.05, 0.95], [0.5, 0.5], [0.61, 0.27]])
_CUBE_PTS = np.array([[0.31, 0.72, 0.4], [0.88, 0.13, 0.6], [0.05, 0.95, 0.9], [0.52, 0.48, 0.5]])


# name -> (space factory, points inside the domain); factories so that collecting the tests builds nothing.
SPACES = {
    "spline": (
        lambda: fem.SplineSpace(_quarter(0)),
        _ring(np.array([1.2, 1.9, 1.45, 1.05]), np.array([0.25, 1.5, 0.8, 0.05])),
    ),
    "P2 triangles": (
        lambda: fem.LagrangeSpace(mesh.unit_square(3), degree=2, points=_moved(mesh.unit_square(3), 0.03)),
        _SQUARE_PTS,
    ),
    "Q1 quads, vector": (
        lambda: fem.LagrangeSpace(
            mesh.unit_square(3, cell="quad"),
            shape=(2,),
            points=_moved(mesh.unit_square(3, cell="quad"), 0.05),
        ),
        _SQUARE_PTS,
    ),
    "P1 tets": (lambda: fem.LagrangeSpace(mesh.unit_cube(1)), _CUBE_PTS),
    "Q1 hexes": (
        lambda: fem.LagrangeSpace(
            mesh.unit_cube(2, cell="hexahedron"),
            points=_moved(mesh.unit_cube(2, cell="hexahedron"), 0.05),
        ),
        _CUBE_PTS,
    ),
    "multipatch": (
        lambda: fem.MultiPatchSpace({"a": _quarter(0), "b": _quarter(1)}, [(("a", "left"), ("b", "bottom"))]),
        _ring(np.array([1.2, 1.9, 1.45, 1.05, 1.3]), np.array([0.25, 1.5, 2.4, 3.0, np.pi / 2])),
    ),
}


@functools.cache
def _space(name):
    return SPACES[name][0]()


def _close(actual, expected, rtol=1e-12):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("name", list(SPACES))
def test_jit_vmap_grad_agree_with_the_eager_evaluation(name):
    V, pts = _space(name), SPACES[name][1]
    rng = np.random.default_rng(0)
    c = jnp.asarray(rng.standard_normal(V.ndofs))
    C = jnp.asarray(rng.standard_normal((3, V.ndofs)))
    P = np.stack([pts, pts[::-1], np.roll(pts, 1, axis=0)])  # point batches
    w = jnp.asarray(rng.standard_normal((len(pts),) + V.value_shape))

    def value(c, p):
        return fem.Field(V, c)(p)

    @jax.jit
    def transformed(c, C, p, P):
        return {
            "constant points": value(c, pts),
            "constant points, vmap over coefficients": jax.vmap(lambda c: value(c, pts))(C),
            "traced points": value(c, p),
            "traced points, gradient": fem.Field(V, c).grad(p),
            "vmap over coefficients": jax.vmap(value, (0, None))(C, p),
            "vmap over point batches": jax.vmap(value, (None, 0))(c, P),
            "grad in the coefficients": jax.grad(lambda c: jnp.sum(w * value(c, p)))(c),
            "grad in the points": jax.grad(lambda p: jnp.sum(w * value(c, p)))(p),
        }

    out = transformed(c, C, jnp.asarray(pts), jnp.asarray(P))
    u = fem.Field(V, c)
    eager_val, eager_grad = u(pts), u.grad(pts)
    # d/dx_i sum_j w_j u(x_j) = w_i . grad u(x_i): the physical gradient, by the implicit inverse map
    dx = np.einsum(
        "pc,pck->pk", np.asarray(w).reshape(len(pts), -1), np.asarray(eager_grad).reshape(len(pts), -1, V.dim)
    )
    expected = {
        "constant points": eager_val,
        "constant points, vmap over coefficients": np.stack([fem.Field(V, ci)(pts) for ci in C]),
        "traced points": eager_val,
        "traced points, gradient": eager_grad,
        "vmap over coefficients": np.stack([fem.Field(V, ci)(pts) for ci in C]),
        "vmap over point batches": np.stack([u(q) for q in P]),
        "grad in the coefficients": jax.grad(lambda c: jnp.sum(w * fem.Field(V, c)(pts)))(c),
        "grad in the points": dx,
    }
    for key, exp in expected.items():
        _close(out[key], exp)
    if not V.value_shape:  # the coefficient gradient is the observation operator's transpose applied to w
        obs = inverse.PointObservation(V, pts).matrix()
        _close(out["grad in the coefficients"], obs.T @ np.asarray(w))


@pytest.mark.parametrize("name", ["Q1 quads, vector", "multipatch"])
def test_geometry_gradient_matches_central_differences(name):
    V, pts = _space(name), SPACES[name][1]
    if name == "multipatch":
        # not the interface point: moving one patch's control points alone moves its side of the interface
        # only, and the point changes patch within a difference step
        pts = pts[:-1]
    rng = np.random.default_rng(1)
    c = jnp.asarray(rng.standard_normal(V.ndofs))
    leaves, treedef = jax.tree.flatten(V)
    i = max(range(len(leaves)), key=lambda k: leaves[k].size)  # control points / node coordinates
    direction = rng.standard_normal(leaves[i].shape)

    def f(geometry, c, p):  # space, points and coefficients all traced
        W = jax.tree.unflatten(treedef, leaves[:i] + [geometry] + leaves[i + 1 :])
        return jnp.sum(fem.Field(W, c)(p) ** 2)

    g = jax.jit(jax.grad(f))(leaves[i], c, jnp.asarray(pts))
    h = 1e-6
    fd = (f(leaves[i] + h * direction, c, pts) - f(leaves[i] - h * direction, c, pts)) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(g * direction)), float(fd), rtol=1e-6)
    if name != "multipatch":
        # eagerly (geometry traced, points concrete: location in the host callback) the same gradient
        _close(jax.grad(f)(leaves[i], c, pts), g)


def test_second_derivatives_in_the_points_are_exact():
    # The inverse map's derivative rule calls itself, so the Hessian of the value is the Jacobian of the
    # gradient. On distorted bilinear quads the inverse map is curved: a single Newton step from the located
    # point (exact first derivatives only) would miss its second derivatives.
    m = mesh.unit_square(3, cell="quad")
    V = fem.LagrangeSpace(m, points=_moved(m, 0.05))
    u = fem.Field(V, jnp.asarray(np.random.default_rng(2).standard_normal(V.ndofs)))
    x = _SQUARE_PTS[0]
    H = jax.jit(jax.hessian(lambda x: u(x[None])[0]))(jnp.asarray(x))
    h = 1e-5
    fd = np.stack([(u.grad((x + h * e)[None]) - u.grad((x - h * e)[None]))[0] / (2 * h) for e in np.eye(2)])
    assert np.max(np.abs(fd)) > 1e-2  # a curved inverse map: the check below can fail
    np.testing.assert_allclose(np.asarray(H), fd, atol=1e-7 * float(np.max(np.abs(fd))))
    _close(H, H.T)


def _runtime_message(call):
    """The ValueError line of a failure raised inside a compiled program (JAX wraps it)."""
    with pytest.raises(Exception) as info:
        jax.block_until_ready(call())
    return next(ln for ln in str(info.value).splitlines() if ln.startswith("ValueError: "))[
        len("ValueError: ") :
    ]


@pytest.mark.parametrize("name", ["spline", "P2 triangles"])
def test_bad_points_under_jit_raise_the_eager_message(name):
    V, pts = _space(name), SPACES[name][1]
    u = fem.Field(V, jnp.ones(V.ndofs))
    f = jax.jit(lambda p: u(p))
    outside = np.array(pts[:3])
    outside[1] = [5.0, 0.5]
    text = _runtime_message(lambda: f(jnp.asarray(outside)))
    assert text.startswith("1 of 3 points lie outside the domain (first: [5.0, 0.5]) at points[1]; ")
    with pytest.raises(ValueError) as info:
        u(outside)
    assert str(info.value) == text
    nan = np.array(pts[:3])
    nan[2, 0] = np.nan
    text = _runtime_message(lambda: f(jnp.asarray(nan)))
    assert text.startswith("points must be finite: 1 of 3 points hold NaN or inf (first: index 2, [nan, ")
    if name == "P2 triangles":  # under vmap, one bad batch fails the whole call
        batches = jnp.asarray(np.stack([pts[:3], outside]))
        text = _runtime_message(lambda: jax.jit(jax.vmap(u))(batches))
        assert text.startswith("1 of 3 points lie outside the domain (first: [5.0, 0.5]) at points[1]")


def test_singular_point_under_jit():
    # geometry.disk(): the map degenerates at the four parametric corners; gradients are undefined there.
    V = fem.SplineSpace(fem.geometry.disk().refine(degree=2, elements=2))
    corner = V.basis_at(np.zeros((1, 2)))[3]  # the image of the parameter corner (0, 0)
    u = fem.Field(V, jnp.ones(V.ndofs))
    text = _runtime_message(lambda: jax.jit(lambda p: u(p))(jnp.asarray(corner)))
    assert "where the geometry map is singular" in text and "PointObservation" in text
    with pytest.raises(ValueError) as info:
        u(corner)
    assert str(info.value) == text
    # values are defined there: the observation operator accepts the point, and 1 is reproduced
    np.testing.assert_allclose(inverse.PointObservation(V, corner)(jnp.ones(V.ndofs)), [1.0], atol=1e-12)
