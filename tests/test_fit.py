"""Least-squares spline fitting and projection: dense references, smoothing, gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import BSpline

from igax.bases import open_uniform
from igax.layers import fit_grid, spline_fit, spline_project


def _design(x, t, p):
    return BSpline.design_matrix(x, t, p).toarray()


def _penalty_dense(t, p, q):
    """integral N_i^(q) N_j^(q), independently through SciPy BSpline derivatives and Gauss quadrature."""
    n = len(t) - p - 1
    g, w = np.polynomial.legendre.leggauss(p + 2)
    br = np.unique(t)
    xs = (0.5 * (br[:-1, None] + br[1:, None]) + 0.5 * (br[1:, None] - br[:-1, None]) * g).ravel()
    ws = (0.5 * (br[1:, None] - br[:-1, None]) * w).ravel()
    D = np.stack([BSpline(t, np.eye(n)[i], p).derivative(q)(xs) for i in range(n)], axis=1)
    return D.T @ (ws[:, None] * D)


def _data(m=80, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.random(m))
    y = np.stack([np.sin(6 * x), np.exp(x)], axis=1) + 0.05 * rng.standard_normal((m, 2))
    w = rng.uniform(0.5, 2.0, m)
    return x, y, w


def test_1d_matches_dense_lstsq():
    t = open_uniform(3, 9)
    x, y, w = _data()
    B = _design(x, t, 3)
    sw = np.sqrt(w)[:, None]
    ref = np.linalg.lstsq(B * sw, y * sw, rcond=None)[0]
    c = spline_fit(t, 3, x, y, weights=w)
    assert c.shape == (12, 2)
    np.testing.assert_allclose(np.asarray(c), ref, atol=1e-10)


@pytest.mark.parametrize(("p", "q"), [(2, 1), (3, 2)])
def test_1d_smoothing_matches_dense_normal_equations(p, q):
    t = open_uniform(p, 12)
    x, y, w = _data(seed=1)
    B = _design(x, t, p)
    lam = 3e-4
    ref = np.linalg.solve(B.T @ (w[:, None] * B) + lam * _penalty_dense(t, p, q), B.T @ (w[:, None] * y))
    c = spline_fit(t, p, x, y, weights=w, smoothing=lam, penalty_order=q)
    np.testing.assert_allclose(np.asarray(c), ref, atol=1e-10)


def test_heavy_curvature_penalty_gives_the_regression_line():
    t = open_uniform(3, 6)
    x, y, _ = _data(seed=2)
    line = np.polyval(np.polyfit(x, y[:, 0], 1), x)
    lams = np.array([1e3, 1e4, 1e5])
    dev = [
        np.abs(_design(x, t, 3) @ np.asarray(spline_fit(t, 3, x, y[:, 0], smoothing=lam)) - line).max()
        for lam in lams
    ]
    assert dev[-1] < 1e-6
    assert abs(np.polyfit(np.log(lams), np.log(dev), 1)[0] + 1) < 0.05  # the gap closes like 1 / smoothing


def test_2d_and_3d_scattered_match_dense_lstsq():
    rng = np.random.default_rng(3)
    t1, t2 = open_uniform(2, 3), open_uniform(3, 2)
    X = rng.random((200, 2))
    Y = np.cos(3 * X[:, 0]) * X[:, 1] + 0.01 * rng.standard_normal(200)
    B = np.einsum("mi,mj->mij", _design(X[:, 0], t1, 2), _design(X[:, 1], t2, 3)).reshape(200, -1)
    c = spline_fit((t1, t2), (2, 3), X, Y)
    assert c.shape == (5, 5)
    np.testing.assert_allclose(np.asarray(c).ravel(), np.linalg.lstsq(B, Y, rcond=None)[0], atol=1e-10)
    # 3D, linear in every direction
    t = open_uniform(1, 2)
    X3 = rng.random((120, 3))
    Y3 = np.sin(X3.sum(axis=1))
    B3 = np.einsum("mi,mj,mk->mijk", *(_design(X3[:, d], t, 1) for d in range(3))).reshape(120, -1)
    c3 = spline_fit((t, t, t), 1, X3, Y3)
    np.testing.assert_allclose(np.asarray(c3).ravel(), np.linalg.lstsq(B3, Y3, rcond=None)[0], atol=1e-10)


def test_2d_thin_plate_penalty_matches_dense():
    rng = np.random.default_rng(4)
    t = open_uniform(2, 3)
    X = rng.random((60, 2))
    Y = X[:, 0] ** 2 - X[:, 1]
    B1, B2 = _design(X[:, 0], t, 2), _design(X[:, 1], t, 2)
    B = np.einsum("mi,mj->mij", B1, B2).reshape(60, -1)
    K = [_penalty_dense(t, 2, k) for k in range(3)]
    R = np.kron(K[2], K[0]) + 2 * np.kron(K[1], K[1]) + np.kron(K[0], K[2])
    lam = 1e-3
    ref = np.linalg.solve(B.T @ B + lam * R, B.T @ Y)
    c = spline_fit((t, t), 2, X, Y, smoothing=lam)
    np.testing.assert_allclose(np.asarray(c).ravel(), ref, atol=1e-10)


def test_grid_fit_and_projection():
    t1, t2 = open_uniform(2, 4), open_uniform(3, 3)
    g1, g2 = np.linspace(0, 1, 15), np.linspace(0, 1, 11)
    V = np.outer(np.sin(3 * g1), np.cos(2 * g2))
    ref = np.linalg.lstsq(np.kron(_design(g1, t1, 2), _design(g2, t2, 3)), V.ravel(), rcond=None)[0]
    np.testing.assert_allclose(np.asarray(fit_grid((t1, t2), (2, 3), (g1, g2), V)).ravel(), ref, atol=1e-10)
    # projection reproduces a member of the space exactly
    c0 = np.random.default_rng(5).standard_normal((6, 6))
    f = lambda X: jnp.einsum(
        "mi,mj,ij->m",
        *(jnp.asarray(_design(np.asarray(X[d]), t, 2)) for d, t in enumerate((t1, t1))),  # X: (dim, m)
        jnp.asarray(c0),
    )
    np.testing.assert_allclose(np.asarray(spline_project((t1, t1), 2, f)), c0, atol=1e-12)


def test_projection_converges_at_rate_p_plus_1():
    errs, hs = [], []
    xs = np.linspace(0, 1, 2001)
    for ne in (4, 8, 16):
        t = open_uniform(2, ne)
        c = spline_project(t, 2, jnp.sin)
        errs.append(np.sqrt(np.mean((_design(xs, t, 2) @ np.asarray(c) - np.sin(xs)) ** 2)))
        hs.append(1 / ne)
    rate = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert 2.8 < rate < 3.3


def test_gradients_match_finite_differences():
    t = open_uniform(3, 5)
    x, y, w = _data(m=30, seed=6)
    y = y[:, 0]
    probe = np.cos(np.arange(8.0))

    @jax.jit
    def loss(x, y, w, lam):
        return jnp.sum(probe * jnp.sin(spline_fit(t, 3, x, y, weights=w, smoothing=lam)))

    args = [jnp.asarray(a) for a in (x, y, w)] + [jnp.asarray(1e-3)]
    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*args)
    eps = 1e-6
    for a, idx in ((0, 3), (0, 17), (1, 5), (2, 11), (3, ())):
        e = np.zeros(np.shape(args[a]))
        e[idx] = eps
        up = [v if i != a else v + e for i, v in enumerate(args)]
        dn = [v if i != a else v - e for i, v in enumerate(args)]
        fd = (float(loss(*up)) - float(loss(*dn))) / (2 * eps)
        assert abs(fd - float(np.asarray(grads[a])[idx])) < 1e-6 * (1 + abs(fd))


def test_2d_gradient_wrt_sites():
    rng = np.random.default_rng(7)
    t = open_uniform(2, 2)
    X = jnp.asarray(0.05 + 0.9 * rng.random((40, 2)))
    Y = jnp.asarray(rng.standard_normal(40))
    loss = jax.jit(lambda X: jnp.sum(spline_fit((t, t), 2, X, Y) ** 2))
    g = jax.grad(loss)(X)
    eps = 1e-6
    for i, d in ((0, 0), (13, 1), (39, 0)):
        e = jnp.zeros_like(X).at[i, d].set(eps)
        fd = (loss(X + e) - loss(X - e)) / (2 * eps)
        assert abs(float(fd) - float(g[i, d])) < 1e-5 * (1 + abs(float(fd)))


def test_vmap_and_float32():
    t = open_uniform(3, 5)
    x, y, _ = _data(m=40, seed=8)
    Ys = jnp.asarray(y.T)  # (2, m)
    batched = jax.vmap(lambda yy: spline_fit(t, 3, jnp.asarray(x), yy))(Ys)
    np.testing.assert_allclose(np.asarray(batched).T, np.asarray(spline_fit(t, 3, x, y)), atol=1e-12)
    c32 = spline_fit(t, 3, x.astype(np.float32), y.astype(np.float32))
    assert c32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(c32), np.asarray(spline_fit(t, 3, x, y)), atol=2e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": np.linspace(0, 1.5, 30)}, "must lie in the knot domain"),
        ({"x": np.linspace(0, 0.3, 30)}, "Schoenberg-Whitney"),
        ({"y": np.ones(29)}, "y must have the data points"),
        ({"y": np.r_[np.nan, np.ones(29)]}, "y contains NaN"),
        ({"weights": -np.ones(30)}, "weights must be finite and non-negative"),
        ({"smoothing": -1.0}, "smoothing must be a finite number"),
        ({"penalty_order": 4, "smoothing": 1.0}, "penalty_order must be an integer"),
        ({"x": np.ones((30, 2))}, "x must have shape \\(m,\\)"),
    ],
)
def test_errors(kwargs, match):
    args = {"x": np.linspace(0, 1, 30), "y": np.ones(30)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        spline_fit(open_uniform(3, 5), 3, args.pop("x"), args.pop("y"), **args)


def test_tensor_errors():
    t = open_uniform(2, 4)
    with pytest.raises(ValueError, match="data points cannot determine"):
        spline_fit((t, t), 2, np.random.default_rng(0).random((10, 2)), np.ones(10))
    with pytest.raises(ValueError, match="degree must be an int or a tuple of 2"):
        spline_fit((t, t), (2, 2, 2), np.random.default_rng(0).random((100, 2)), np.ones(100))
