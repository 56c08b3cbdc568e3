"""taylor_test and check_grad: right gradients give rates 1 and 2, wrong ones are caught."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax.inverse import check_grad, taylor_test


def f(x):
    return jnp.sum(jnp.sin(x) * x**2) + jnp.prod(jnp.cos(x))


X = jnp.linspace(0.2, 1.4, 6)


def test_taylor_rates_for_correct_gradient():
    res = taylor_test(f, X)
    assert res.rate0 == pytest.approx(1.0, abs=0.05)
    assert res.rate1 == pytest.approx(2.0, abs=0.1)
    assert np.all(np.abs(res.rates1 - 2.0) < 0.1)
    assert res.directional_derivative == pytest.approx(
        float(jnp.vdot(jax.grad(f)(X), X - X + res.h[0] * 0 + _default_dir(X))), rel=1e-12
    )
    assert "expect 2" in str(res)


def _default_dir(x):
    # the default direction of taylor_test: seeded normal, scaled like x
    d = np.random.default_rng(0).standard_normal(x.shape[0])
    return d * float(jnp.max(jnp.abs(x))) / np.sqrt(x.shape[0])


def test_taylor_catches_wrong_gradient():
    wrong = jax.grad(f)(X) * 1.01  # a 1 % error, as an inexact adjoint would give
    res = taylor_test(f, X, grad=wrong, n=6)
    assert res.rate1 < 1.3  # the remainder falls only like h


def test_taylor_pytree_and_explicit_direction():
    x = {"a": jnp.ones(3), "b": jnp.array(0.5)}
    g = lambda p: jnp.sum(jnp.exp(p["a"] * p["b"]))
    res = taylor_test(g, x, {"a": jnp.array([1.0, -1.0, 0.5]), "b": jnp.array(1.0)}, h0=0.05)
    assert res.rate1 == pytest.approx(2.0, abs=0.1)
    with pytest.raises(ValueError, match="dx must have the structure"):
        taylor_test(g, x, jnp.ones(2))


def test_taylor_roundoff_floor_is_reported():
    # a linear function: the first-order remainder is pure round-off, no rate can be measured
    res = taylor_test(lambda x: jnp.sum(3.0 * x), jnp.ones(3))
    assert res.roundoff_limited and np.isnan(res.rate1)


def test_check_grad_agrees_and_detects():
    res = check_grad(f, X, directions=4)
    assert res.max_rel_error < 1e-7
    res = check_grad(f, X, directions="coordinates")
    np.testing.assert_allclose(res.ad, jax.grad(f)(X), rtol=1e-12)
    assert res.max_rel_error < 1e-7
    bad = check_grad(f, X, grad=jax.grad(f)(X).at[2].add(0.1), directions="coordinates")
    assert bad.rel_error[2] > 1e-2 and np.all(np.delete(bad.rel_error, 2) < 1e-7)
