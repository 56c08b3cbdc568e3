"""Constraints (augmented Lagrangian), regularisers on grids, parameterisations, misfits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import inverse


def test_augmented_lagrangian_equality_and_inequality():
    # min x^2 + 2 y^2  s.t.  x + y = 1: x = 2/3, y = 1/3, multiplier lam = -4/3 (grad f + lam grad c = 0)
    f = lambda p: p[0] ** 2 + 2 * p[1] ** 2
    res = inverse.augmented_lagrangian(
        f, jnp.zeros(2), eq=lambda p: p[0] + p[1] - 1.0, method="scipy:BFGS", tol=1e-10, ctol=1e-9
    )
    assert res.success, res.message
    np.testing.assert_allclose(res.x, [2 / 3, 1 / 3], atol=1e-7)
    np.testing.assert_allclose(res.lam, [-4 / 3], atol=1e-5)
    assert res.violation[-1] <= 1e-9 and res.violation[0] > res.violation[-1]
    # inactive and active inequality: min (x-2)^2 s.t. x <= 1 -> x = 1, nu = 2; x <= 3 is inactive
    g = lambda p: (p[0] - 2.0) ** 2
    res = inverse.augmented_lagrangian(
        g,
        jnp.zeros(1),
        ineq=lambda p: jnp.array([p[0] - 1.0, p[0] - 3.0]),
        method="scipy:BFGS",
        tol=1e-10,
        ctol=1e-9,
    )
    np.testing.assert_allclose(res.x, [1.0], atol=1e-7)
    np.testing.assert_allclose(res.nu, [2.0, 0.0], atol=1e-5)
    with pytest.raises(ValueError, match="eq= or ineq="):
        inverse.augmented_lagrangian(g, jnp.zeros(1))


def test_quadratic_penalty():
    assert float(
        inverse.quadratic_penalty(jnp.array([1.5, 0.5]), 1.0, weight=4.0, kind="le")
    ) == pytest.approx(0.5)
    assert float(inverse.quadratic_penalty(0.5, 1.0, kind="ge")) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="kind"):
        inverse.quadratic_penalty(1.0, kind="lt")


def test_grid_regularisers_against_closed_forms():
    # m = x^2 sampled at cell centres of [0,1] x [0,0.5]: int |grad m|^2 = int 4x^2 = 4/3 * 0.5
    n = 100
    h = 1.0 / n
    xc = (np.arange(n) + 0.5) * h
    m = jnp.asarray(np.tile(xc**2, (n // 2, 1)))  # rows: y, columns: x
    # first differences live between cell centres, on [h/2, 1 - h/2]: int 4 x^2 there (midpoint rule)
    expected = 0.5 * 0.5 * 4 / 3 * ((1 - h / 2) ** 3 - (h / 2) ** 3)
    assert float(inverse.grid_tikhonov(m, h)) == pytest.approx(expected, rel=1e-4)
    assert float(inverse.grid_tikhonov(m, h, kind="l2")) == pytest.approx(0.5 * 0.2 * 0.5, rel=3e-4)
    # TV of a plane a x + b y over the interior corners is |(a, b)| times their area; of a unit step, its
    # length
    yy, xx = np.meshgrid(xc[: n // 2], xc, indexing="ij")
    plane = jnp.asarray(0.3 * xx - 0.4 * yy)
    tv = float(inverse.grid_total_variation(plane, h, eps=1e-9))
    assert tv == pytest.approx(0.5 * (1 - h) * (0.5 - h), rel=1e-7)
    step = jnp.asarray((xx > 0.5).astype(float))
    assert float(inverse.grid_total_variation(step, h, eps=1e-9)) == pytest.approx(0.5 - h, rel=1e-6)
    # gradients are finite where grad m = 0 (the smoothing at work)
    g = jax.grad(lambda z: inverse.grid_total_variation(z, h, eps=1e-3))(jnp.zeros((4, 5)))
    assert np.all(np.isfinite(g))
    res = inverse.taylor_test(
        lambda z: inverse.grid_total_variation(z, 0.1, eps=0.1),
        jnp.asarray(np.random.default_rng(1).random((5, 6))),
    )
    assert res.rate1 == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(
    "param, x",
    [
        (inverse.Sigmoid(0.5, 2.0), jnp.array([0.6, 1.0, 1.9])),
        (inverse.Softplus(1.0), jnp.array([1.01, 3.0, 50.0])),
        (inverse.Exp(2.0), jnp.array([0.1, 1.0, 30.0])),
    ],
)
def test_parameterisations_roundtrip_and_bounds(param, x):
    np.testing.assert_allclose(param(param.inverse(x)), x, rtol=1e-12)
    z = jnp.linspace(-30, 30, 7)
    y = param(z)
    assert np.all(np.isfinite(y))
    if isinstance(param, inverse.Sigmoid):
        assert np.all((y >= 0.5) & (y <= 2.0))
        with pytest.raises(ValueError, match="strictly between"):
            param.inverse(jnp.array([2.5]))
    if isinstance(param, inverse.Softplus):
        assert np.all(y >= 1.0)
    with pytest.raises(ValueError):
        inverse.Sigmoid(1.0, 1.0)


def test_least_squares_and_relative_error():
    p, d = jnp.array([1.0, 2.0, 4.0]), jnp.array([1.0, 1.0, 1.0])
    assert float(inverse.least_squares(p, d)) == pytest.approx(5.0)
    assert float(inverse.least_squares(p, d, weights=jnp.array([1.0, 2.0, 0.0]))) == pytest.approx(1.0)
    assert float(inverse.least_squares(p, d, sigma=0.5)) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="same shape"):
        inverse.least_squares(p, d[:2])
    with pytest.raises(ValueError, match="not both"):
        inverse.least_squares(p, d, weights=1.0, sigma=1.0)
    err = inverse.relative_error(jnp.array([3.0, 4.0]) * 1.1, jnp.array([3.0, 4.0]))
    assert float(err) == pytest.approx(0.1)
