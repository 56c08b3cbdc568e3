"""NURBS bases and patches: exact circles, quotient-rule derivatives, and gradients in control
points/weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from demo_runs import tiny

from igax.bases import NURBSPatch, open_uniform, rational_basis_1d, rational_tensor_basis, tensor_basis
from igax.fem import geometry

S2 = np.sqrt(0.5)


def circle_curve():
    """Full unit circle: four quarter arcs, degree 2, 9 control points."""
    cp = np.array([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1], [1, 0]], float)
    w = np.array([1, S2, 1, S2, 1, S2, 1, S2, 1])
    return NURBSPatch(([0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1, 1],), 2, cp, w)


def test_quarter_and_full_circle_radius_error():
    u = np.linspace(0, 1, 1000)
    quarter = NURBSPatch(([0, 0, 0, 1, 1, 1],), 2, np.array([[1.0, 0], [1, 1], [0, 1]]), [1, S2, 1])
    for patch in (quarter, circle_curve()):
        x, J, H = patch.derivatives(u[:, None], 2)
        r = np.hypot(x[:, 0], x[:, 1])
        assert np.abs(r - 1).max() < 1e-14
        # tangent orthogonal to the radius, and d/du |x|^2 = 0 to second order: x.x'' + x'.x' = 0
        assert np.abs(np.einsum("pi,pi->p", x, J[:, :, 0])).max() < 1e-13
        rad2 = np.einsum("pi,pi->p", x, H[:, :, 0, 0]) + np.einsum("pi,pi->p", J[:, :, 0], J[:, :, 0])
        assert np.abs(rad2).max() < 1e-11 * np.abs(H).max()


def _fd_np(f, u, h=1e-5):
    """Central differences of f(u (npts, pdim)) along each parametric direction, stacked last."""
    cols = []
    for d in range(u.shape[1]):
        e = np.zeros(u.shape[1])
        e[d] = h
        cols.append((f(u + e) - f(u - e)) / (2 * h))
    return np.stack(cols, axis=-1)


def test_rational_basis_1d_derivatives():
    t = [0, 0, 0, 0.3, 0.6, 1, 1, 1]
    w = np.array([1.0, 0.5, 2.0, 0.8, 1.2])
    x = np.linspace(0.01, 0.99, 23)
    x = x[np.min(np.abs(x[:, None] - np.array([0.3, 0.6])), axis=1) > 1e-3]  # stay off the knots for the FD
    first, R = rational_basis_1d(t, 2, w, x, nderiv=3)
    np.testing.assert_allclose(R[0].sum(-1), 1.0, atol=1e-15)
    np.testing.assert_allclose(R[1:].sum(-1), 0.0, atol=1e-11)
    # direct formula R_i = w_i N_i / W for the values
    from igax.bases import basis_functions

    _, N = basis_functions(t, 2, x)
    wl = w[first[:, None] + np.arange(3)]
    np.testing.assert_allclose(R[0], wl * N[0] / (wl * N[0]).sum(1, keepdims=True), atol=1e-15)
    for k in range(1, 4):
        fd = (
            rational_basis_1d(t, 2, w, x + 1e-5, k - 1)[1][k - 1]
            - rational_basis_1d(t, 2, w, x - 1e-5, k - 1)[1][k - 1]
        ) / 2e-5
        np.testing.assert_allclose(R[k], fd, atol=1e-8 * max(1.0, np.abs(R[k]).max()))


def test_tensor_basis_derivatives_vs_finite_differences():
    knots = (open_uniform(2, 3), [0, 0, 0, 0, 0.5, 1, 1, 1, 1])
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 2.0, (5, 5))
    u = np.c_[rng.uniform(0.01, 0.32, 6), rng.uniform(0.51, 0.99, 6)]  # one element, off its edges
    idx, R, dR, hR = rational_tensor_basis(knots, (2, 3), w, u, 2)
    assert (
        idx.shape == (6, 12) and R.shape == (6, 12) and dR.shape == (6, 12, 2) and hR.shape == (6, 12, 2, 2)
    )
    np.testing.assert_allclose(R.sum(1), 1.0, atol=1e-15)
    np.testing.assert_allclose(
        dR, _fd_np(lambda uu: rational_tensor_basis(knots, (2, 3), w, uu)[1], u), atol=1e-8
    )
    np.testing.assert_allclose(
        hR,
        _fd_np(lambda uu: rational_tensor_basis(knots, (2, 3), w, uu, 1)[2], u),
        atol=1e-7 * np.abs(hR).max(),
    )
    # with unit weights the rational basis is the B-spline basis
    _, N, dN, _ = tensor_basis(knots, (2, 3), u, 1)
    _, R1, dR1, _ = rational_tensor_basis(knots, (2, 3), np.ones((5, 5)), u, 1)
    np.testing.assert_allclose(R1, N, atol=1e-15)
    np.testing.assert_allclose(dR1, dN, atol=1e-13)
    # the JAX path gives the same numbers
    jout = jax.jit(lambda ww, uu: rational_tensor_basis(knots, (2, 3), ww, uu, 2))(
        jnp.asarray(w), jnp.asarray(u)
    )
    for a, b in zip(jout, (idx, R, dR, hR), strict=False):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-13)


def random_patch(pdim, seed=0):
    rng = np.random.default_rng(seed)
    knots = [open_uniform(2, 2), [0, 0, 0.4, 1, 1], open_uniform(3, 2)][:pdim]
    degrees = (2, 1, 3)[:pdim]
    shape = tuple(len(k) - p - 1 for k, p in zip(knots, degrees, strict=False))
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij"), axis=-1)
    cp = grid + 0.05 * rng.normal(size=grid.shape)
    return NURBSPatch(knots, degrees, cp, rng.uniform(0.6, 1.5, shape))


@pytest.mark.parametrize("pdim", [1, 2, 3])
def test_patch_jacobian_hessian_vs_finite_differences(pdim):
    patch = random_patch(pdim)
    u = np.random.default_rng(1).uniform(0.02, 0.38, size=(4, pdim))  # inside the first element
    x, J, H = patch.derivatives(u, 2)
    assert x.shape == (4, pdim) and J.shape == (4, pdim, pdim) and H.shape == (4, pdim, pdim, pdim)
    np.testing.assert_allclose(J, _fd_np(lambda uu: np.asarray(patch.evaluate(uu)), u), atol=1e-8)
    np.testing.assert_allclose(H, _fd_np(lambda uu: np.asarray(patch.jacobian(uu)), u), atol=1e-7)
    np.testing.assert_allclose(patch.jacobian(u), J)
    np.testing.assert_allclose(patch.hessian(u), H)


def test_grad_wrt_control_points_and_weights_matches_fd():
    patch = random_patch(2)
    u = jnp.asarray(np.random.default_rng(2).uniform(size=(7, 2)))

    def loss(cp, w):
        p = NURBSPatch(patch.knots, patch.degrees, cp, w)
        x, J, _ = p.derivatives(u, 1)
        return jnp.sum(jnp.sin(x)) + jnp.sum(jnp.linalg.det(J))

    cp, w = patch.control_points, patch.weights
    gcp, gw = jax.jit(jax.grad(loss, argnums=(0, 1)))(cp, w)
    loss = jax.jit(loss)
    rng = np.random.default_rng(3)
    for _ in range(3):
        dcp = jnp.asarray(rng.normal(size=cp.shape))
        dw = jnp.asarray(rng.normal(size=w.shape))
        h = 1e-6
        fd = (loss(cp + h * dcp, w + h * dw) - loss(cp - h * dcp, w - h * dw)) / (2 * h)
        an = jnp.sum(gcp * dcp) + jnp.sum(gw * dw)
        assert abs(an - fd) <= 1e-7 * max(1.0, abs(an))
    # Taylor remainder |f(x + h d) - f(x) - h g.d| falls as h^2
    hs = np.array([1e-1, 5e-2, 2.5e-2, 1.25e-2])
    f0 = loss(cp, w)
    rem = [
        abs(loss(cp + h * dcp, w + 0.1 * h * dw) - f0 - h * (jnp.sum(gcp * dcp) + 0.1 * jnp.sum(gw * dw)))
        for h in hs
    ]
    rate = np.polyfit(np.log(hs), np.log(np.asarray(rem, float)), 1)[0]
    assert 1.9 < rate < 2.2, rate
    # the same via equinox: the patch itself is the pytree being differentiated
    gp = jax.jit(jax.grad(lambda pt: loss(pt.control_points, pt.weights)))(patch)
    np.testing.assert_allclose(gp.control_points, gcp, atol=1e-13)
    np.testing.assert_allclose(gp.weights, gw, atol=1e-13)


def test_vmap_over_weights_and_boundary_patch():
    patch = geometry.quarter_annulus()
    u = jnp.array([[0.0, 0.5], [1.0, 0.5]])
    ws = jnp.stack([patch.weights, patch.weights * 1.0])

    f = lambda w: NURBSPatch(patch.knots, patch.degrees, patch.control_points, w, patch.boundaries).evaluate(
        u
    )
    out = jax.jit(jax.vmap(f))(ws)
    np.testing.assert_allclose(jnp.linalg.norm(out, axis=-1), [[1, 2], [1, 2]], atol=1e-14)
    inner = patch.boundary_patch("inner")
    assert inner.pdim == 1 and inner.shape == (3,)
    xs = inner.evaluate(np.linspace(0, 1, 11))
    np.testing.assert_allclose(np.hypot(xs[:, 0], xs[:, 1]), 1.0, atol=1e-15)


def test_no_nan_gradients_at_corners_and_c0_knots():
    patch = geometry.plate_with_hole().refine(degree=3, elements=4)
    u = jnp.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.0], [0.5, 1.0], [0.5, 0.5], [0.25, 0.75]])  # 0.5: C0 knot

    def loss(cp, w):
        x, J, H = NURBSPatch(patch.knots, patch.degrees, cp, w).derivatives(u, 2)
        return jnp.sum(x**2) + jnp.sum(jnp.linalg.det(J)) + jnp.sum(H**2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(patch.control_points, patch.weights)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    assert np.abs(np.asarray(grads[1])).max() > 0
    np.testing.assert_allclose(patch.breakpoints[0], [0, 0.25, 0.5, 0.75, 1])
    g = patch.greville()
    assert (
        g.shape == (*patch.shape, 2) and g[0, 0].tolist() == [0.0, 0.0] and g[-1, -1].tolist() == [1.0, 1.0]
    )


INVALID = [
    (lambda: NURBSPatch([0, 0, 1, 1], 1, np.zeros((2, 1))), TypeError, "one knot vector per parametric"),
    (lambda: NURBSPatch(([0, 0, 1, 1],), 1, np.zeros((3, 2))), ValueError, "control_points must have shape"),
    (
        lambda: NURBSPatch(([0, 0, 1, 1],), 1, np.zeros((2, 2)), [1.0, 0.0]),
        ValueError,
        "weights must be positive",
    ),
    (lambda: NURBSPatch(([0, 0, 1, 1],), 1, np.zeros((2, 2)), [1.0]), ValueError, "weights must have shape"),
    (
        lambda: NURBSPatch(([0, 0, 1, 1],), (1, 1), np.zeros((2, 2))),
        ValueError,
        "degrees must have one entry",
    ),
    (lambda: NURBSPatch(([0, 0, 1, 1], [0, 1, 1]), 1, np.zeros((2, 2, 2))), ValueError, "knots\\[1\\]"),
    (lambda: geometry.rectangle().boundary("hole"), ValueError, "unknown boundary name 'hole'"),
    (
        lambda: geometry.rectangle().evaluate(np.zeros((3, 3))),
        ValueError,
        "u must have shape \\(npts, pdim\\)",
    ),
    (lambda: geometry.rectangle().refine(degree=0), ValueError, "degree must be >= the current degree"),
    (
        lambda: geometry.rectangle().refine(elements=(2, 2, 2)),
        ValueError,
        "elements must be an int or a tuple",
    ),
    (lambda: geometry.rectangle().insert_knots(2, [0.5]), ValueError, "axis must be an int in \\[0, 2\\)"),
    (lambda: geometry.rectangle().insert_knots(0, [1.0]), ValueError, "new_knots must lie strictly inside"),
    (lambda: geometry.quarter_annulus(2.0, 1.0), ValueError, "0 < r_inner < r_outer"),
]


@pytest.mark.parametrize("make, exc, match", INVALID)
def test_invalid_patch_inputs(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_spline_basis_example_tiny(tmp_path_factory):
    run = tiny("basis", tmp_path_factory)  # main(out=..., **tiny size), also read by test_cli
    result, tmp_path = run.result, run.out
    assert (tmp_path / "basis.png").stat().st_size > 10_000
    assert result["radius_error"] < 1e-14 and result["radius_error_refined"] < 1e-14
    assert result["partition_of_unity_error"] < 1e-14 and result["scipy_difference"] < 1e-12
    assert result["n_basis"] == 7  # degree 2, C0 knot kept, 4 elements: 4 + 2 + 1
