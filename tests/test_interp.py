"""Spline interpolation layer: agreement with SciPy, gradients, transformations, banded solves, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import CubicSpline, make_interp_spline

from igax.layers import find_interval, interpolate
from igax.layers._banded import band_matvec, spd_banded_solve, tridiagonal_solve


def _sites(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.uniform(0.3, 1.7, n))
    y = np.stack([np.sin(x / 2), np.cos(x / 3) + 0.2 * rng.standard_normal(n)], axis=1)
    xq = np.linspace(x[0] - 0.5, x[-1] + 0.5, 41)  # includes extrapolation on both sides
    return x, y, xq


def _fd(f, v, i, eps=1e-6):
    e = np.zeros_like(v)
    e.flat[i] = eps
    return (f(v + e) - f(v - e)) / (2 * eps)


# ------------------------------------------------------------------------------------------------------------
# agreement with SciPy
# ------------------------------------------------------------------------------------------------------------

BCS = ["not-a-knot", "natural", "clamped", ("natural", "clamped"), ("not-a-knot", "natural")]


CASES = [(bc, 9) for bc in BCS[:4]] + [("not-a-knot", 2), ("not-a-knot", 3), (("not-a-knot", "natural"), 3)]


@pytest.mark.parametrize(("bc", "n"), CASES)
def test_cubic_matches_scipy_cubicspline(bc, n):
    x, y, xq = _sites(n)
    ref = CubicSpline(x, y, bc_type=bc)(xq)
    got = np.asarray(interpolate(x, y, xq, bc_type=bc))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    got_sorted = np.asarray(interpolate(x, y, xq, bc_type=bc, assume_sorted=True))
    np.testing.assert_allclose(got_sorted, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("k", [1, 2, 3])
def test_matches_scipy_make_interp_spline(k):
    x, y, xq = _sites(12, seed=1)
    ref = make_interp_spline(x, y, k=k)(xq)
    got = np.asarray(interpolate(x, y, xq, degree=k))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("bc", ["natural", "clamped"])
def test_cubic_bc_matches_make_interp_spline(bc):
    x, y, xq = _sites(10, seed=2)
    ref = make_interp_spline(x, y, k=3, bc_type=bc)(xq)
    np.testing.assert_allclose(
        np.asarray(interpolate(x, y, xq, bc_type=bc)), ref, atol=1e-12 * np.abs(ref).max()
    )


def test_large_random_points_and_shapes():
    x, y, _ = _sites(300, seed=3)
    rng = np.random.default_rng(4)
    xq = rng.uniform(x[0], x[-1], (20, 30))  # unsorted, 2-D: binary-search path
    ref = CubicSpline(x, y)(xq)
    got = np.asarray(interpolate(x, y, xq))
    assert got.shape == (20, 30, 2)
    np.testing.assert_allclose(got, ref, atol=1e-12 * np.abs(ref).max())
    xs = np.sort(xq.ravel())  # sorted, merge path
    np.testing.assert_allclose(
        np.asarray(interpolate(x, y[:, 0], xs, assume_sorted=True)), CubicSpline(x, y[:, 0])(xs), atol=1e-11
    )


def test_locate_paths_agree():
    br = jnp.asarray(np.cumsum(np.random.default_rng(5).uniform(0.1, 1, 200)))
    xq = jnp.linspace(br[0] - 1, br[-1] + 1, 500)
    ref = np.clip(np.searchsorted(np.asarray(br), np.asarray(xq), side="right") - 1, 0, 198)
    for kw in ({}, {"assume_sorted": True}):
        np.testing.assert_array_equal(np.asarray(find_interval(br, xq, **kw)), ref)


# ------------------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("degree", "bc"), [(3, "not-a-knot"), (3, "clamped"), (2, None)])
def test_gradients_match_finite_differences(degree, bc):
    x, y, xq = _sites(8, seed=6)
    y = y[:, 0]
    wq = np.cos(np.arange(xq.size))  # a generic linear functional of the output

    @jax.jit
    def loss(x, y, xq):
        return jnp.sum(wq * jnp.sin(interpolate(x, y, xq, degree=degree, bc_type=bc)))

    gx, gy, gq = jax.grad(loss, argnums=(0, 1, 2))(jnp.asarray(x), jnp.asarray(y), jnp.asarray(xq))
    fx = lambda v: float(loss(jnp.asarray(v), y, xq))
    fy = lambda v: float(loss(x, jnp.asarray(v), xq))
    fq = lambda v: float(loss(x, y, jnp.asarray(v)))
    for i in range(len(x)):
        assert abs(_fd(fy, y, i) - gy[i]) < 1e-7 * (1 + abs(gy[i]))
        assert abs(_fd(fx, x, i) - gx[i]) < 1e-6 * (1 + abs(gx[i]))
    for i in (0, 7, 20, 40):
        assert abs(_fd(fq, xq, i) - gq[i]) < 1e-6 * (1 + abs(gq[i]))


def test_gradient_taylor_remainder_in_sites():
    x, y, xq = _sites(10, seed=7)
    f = jax.jit(lambda x: jnp.sum(interpolate(x, y, xq, bc_type="natural") ** 2))
    x0 = jnp.asarray(x)
    g = jax.grad(f)(x0)
    d = jnp.asarray(np.random.default_rng(8).standard_normal(x.shape)) * 0.05
    hs = np.array([1.0, 0.5, 0.25, 0.125])
    rem = [abs(float(f(x0 + h * d) - f(x0) - h * jnp.dot(g, d))) for h in hs]
    rate = np.polyfit(np.log(hs), np.log(rem), 1)[0]
    assert rate > 1.9


# ------------------------------------------------------------------------------------------------------------
# transformations and precision
# ------------------------------------------------------------------------------------------------------------


def test_jit_vmap_grad_batches():
    x, y, xq = _sites(16, seed=9)
    Y = jnp.asarray(np.random.default_rng(10).standard_normal((5, 16)))
    f = jax.jit(lambda y: interpolate(x, y, xq, assume_sorted=True))
    batched = jax.vmap(f)(Y)
    ref = CubicSpline(x, np.asarray(Y).T)(xq).T
    np.testing.assert_allclose(np.asarray(batched), ref, atol=1e-12)
    # vmap over sites too, and vmap of grad
    X = jnp.asarray(x)[None] + jnp.arange(3.0)[:, None] * 0.1
    out = jax.vmap(lambda x: interpolate(x, Y[0], xq))(X)
    np.testing.assert_allclose(
        np.asarray(out[2]), CubicSpline(np.asarray(X[2]), np.asarray(Y[0]))(xq), atol=1e-12
    )
    G = jax.vmap(jax.grad(lambda y: jnp.sum(f(y) ** 2)))(Y)
    assert G.shape == Y.shape and np.all(np.isfinite(np.asarray(G)))


def test_float32():
    x, y, xq = _sites(20, seed=11)
    x32, y32, q32 = (jnp.asarray(a, jnp.float32) for a in (x, y[:, 0], xq))
    out = interpolate(x32, y32, q32)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), CubicSpline(x, y[:, 0])(xq), atol=1e-4)
    g = jax.grad(lambda y: jnp.sum(interpolate(x32, y, q32)))(y32)
    assert g.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(g)))


# ------------------------------------------------------------------------------------------------------------
# banded solves
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lapack", "scan"])
def test_tridiagonal_solve_and_adjoint(method):
    rng = np.random.default_rng(12)
    n = 11
    a, c, b = rng.random(n), rng.random(n), 3 + rng.random(n)
    r = rng.standard_normal((n, 2))
    A = np.diag(b) + np.diag(a[1:], -1) + np.diag(c[:-1], 1)
    solve = jax.jit(lambda *v: tridiagonal_solve(*v, method=method))
    x = solve(*map(jnp.asarray, (a, b, c, r)))
    np.testing.assert_allclose(A @ np.asarray(x), r, atol=1e-13)

    def dense(a, b, c, r):
        M = jnp.diag(b) + jnp.diag(a[1:], -1) + jnp.diag(c[:-1], 1)
        return jnp.sum(jnp.sin(jnp.linalg.solve(M, r)))

    g1 = jax.jit(jax.grad(lambda *v: jnp.sum(jnp.sin(solve(*v))), argnums=(0, 1, 2, 3)))(
        *map(jnp.asarray, (a, b, c, r))
    )
    g2 = jax.grad(dense, argnums=(0, 1, 2, 3))(*map(jnp.asarray, (a, b, c, r)))
    for u, v, trim in zip(g1, g2, (slice(1, None), slice(None), slice(None, -1), slice(None)), strict=True):
        np.testing.assert_allclose(np.asarray(u)[trim], np.asarray(v)[trim], atol=1e-12)


@pytest.mark.parametrize("p", [2])
def test_spd_banded_solve_and_adjoint(p):
    rng = np.random.default_rng(13)
    n = 9
    band = rng.random((n, p + 1))
    band[:, 0] += 2 * p + 2
    r = rng.standard_normal(n)

    def full(band):
        M = jnp.diag(band[:, 0])
        for k in range(1, p + 1):
            M = M + jnp.diag(band[k:, k], -k) + jnp.diag(band[k:, k], k)
        return M

    A = np.asarray(full(jnp.asarray(band)))
    x = jax.jit(spd_banded_solve)(jnp.asarray(band), jnp.asarray(r))
    np.testing.assert_allclose(A @ np.asarray(x), r, atol=1e-13)
    np.testing.assert_allclose(
        np.asarray(jax.jit(band_matvec)(jnp.asarray(band), jnp.asarray(r))), A @ r, atol=1e-13
    )
    g1 = jax.jit(jax.grad(lambda b: jnp.sum(jnp.sin(spd_banded_solve(b, jnp.asarray(r))))))(jnp.asarray(band))
    g2 = jax.grad(lambda b: jnp.sum(jnp.sin(jnp.linalg.solve(full(b), jnp.asarray(r)))))(jnp.asarray(band))
    mask = np.arange(n)[:, None] >= np.arange(p + 1)[None, :]
    np.testing.assert_allclose(np.asarray(g1)[mask], np.asarray(g2)[mask], atol=1e-12)


# ------------------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": [0.0, 2.0, 1.0, 3.0]}, "x must be strictly increasing"),
        ({"x": [0.0, 1.0, 1.0, 3.0]}, "x must be strictly increasing"),
        ({"x": [0.0], "y": [1.0]}, "at least 2"),
        ({"x": [0.0, 1.0], "y": [1.0, 2.0], "degree": 2}, "at least 3"),
        ({"y": [1.0, np.nan, 0.0, 1.0]}, "y contains NaN"),
        ({"x": [0.0, np.nan, 2.0, 3.0]}, "x contains NaN"),
        ({"y": [1.0, 2.0, 3.0]}, "y must have the sites along its first axis"),
        ({"x": [[0.0, 1.0]], "y": [[1.0, 2.0]]}, "x must be a 1-D array"),
        ({"bc_type": "periodic"}, "bc_type 'periodic' is unknown"),
        ({"bc_type": 3}, "bc_type must be one of"),
        ({"degree": 2, "bc_type": "natural"}, "applies to degree=3 only"),
        ({"degree": 4}, "degree must be 1, 2 or 3"),
        ({"x_new": [0.5, np.inf]}, "x_new contains NaN"),
        ({"x_new": [2.0, 1.0], "assume_sorted": True}, "x_new is not sorted"),
    ],
)
def test_errors_name_the_argument(kwargs, match):
    args = {"x": [0.0, 1.0, 2.0, 3.0], "y": [1.0, 0.0, 2.0, 1.0], "x_new": [0.5, 1.5]}
    args.update(kwargs)
    x, y, xn = (np.asarray(args.pop(k), float) for k in ("x", "y", "x_new"))
    with pytest.raises(ValueError, match=match):
        interpolate(x, y, xn, **args)


def test_under_jit_shapes_are_still_checked():
    f = jax.jit(lambda x, y: interpolate(x, y, jnp.array([0.5])))
    with pytest.raises(ValueError, match="y must have the sites"):
        f(jnp.arange(4.0), jnp.ones(3))
