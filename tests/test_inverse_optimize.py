"""minimize(): every backend against scipy or closed forms, bounds, pytrees, history, stopping, errors."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize as so

from igax.inverse import OptimizeResult, minimize


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def quad(x):
    # strictly convex quadratic with minimiser 1 + index
    a = jnp.arange(1.0, x.shape[0] + 1.0)
    return 0.5 * jnp.sum(a * (x - a) ** 2)


@pytest.mark.parametrize("method", ["lbfgs", "scipy:L-BFGS-B", "scipy:BFGS"])
def test_rosenbrock_minimum(method):
    res = minimize(rosen, jnp.zeros(4), method=method, maxiter=300, tol=1e-9, progress=False)
    assert isinstance(res, OptimizeResult)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, np.ones(4), atol=1e-5)
    h = res.history
    assert h.fun.shape == h.grad_norm.shape == h.time.shape == (res.nit + 1,)
    assert h.fun[0] == pytest.approx(float(rosen(jnp.zeros(4))))
    assert h.fun[-1] < 1e-10 * h.fun[0]
    assert np.all(h.time >= 0) and res.time_per_iteration > 0


@pytest.mark.parametrize("method", ["lbfgsb", "scipy:L-BFGS-B", "adam"])
def test_bounds_match_scipy(method):
    lower = np.array([-1.0, 0.0, 0.0, 0.0])
    upper = np.array([0.5, 0.5, 2.5, 10.0])
    ref = so.minimize(
        lambda x: float(quad(jnp.asarray(x))),
        np.zeros(4),
        method="L-BFGS-B",
        bounds=list(zip(lower, upper, strict=True)),
        options={"gtol": 1e-12, "ftol": 1e-15},
    )
    opts = {"learning_rate": 0.1} if method == "adam" else None

    def scaled(x, a):  # extra arguments and auxiliary outputs go through every backend
        q = a * quad(x)
        return q, {"q": q}

    res = minimize(
        scaled,
        jnp.zeros(4),
        method=method,
        bounds=(lower, upper),
        maxiter=2000,
        tol=1e-8,
        options=opts,
        progress=False,
        has_aux=True,
        args=(jnp.asarray(1.0),),
    )
    assert res.success, res.message
    assert res.history.aux["q"][-1] == pytest.approx(res.fun)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert np.all(np.asarray(res.x) >= lower) and np.all(np.asarray(res.x) <= upper)


def test_pytree_x0_and_aux():
    x0 = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}

    def f(p):
        misfit = jnp.sum((p["a"] - 1.0) ** 2)
        reg = jnp.sum((p["b"] + 2.0) ** 2)
        return misfit + reg, {"misfit": misfit, "reg": reg}

    res = minimize(f, x0, method="scipy:BFGS", has_aux=True, tol=1e-10, progress=False)
    assert set(res.x) == {"a", "b"} and res.x["b"].shape == (2, 2)
    np.testing.assert_allclose(res.x["a"], 1.0, atol=1e-8)
    np.testing.assert_allclose(res.x["b"], -2.0, atol=1e-8)
    assert res.history.aux["misfit"].shape == (res.nit + 1,)
    assert res.history.aux["misfit"][0] == pytest.approx(2.0)
    # per-component pytree bounds
    res = minimize(
        lambda p: f(p)[0],
        x0,
        method="scipy:L-BFGS-B",
        bounds=({"a": 0.0, "b": -1.0}, None),
        tol=1e-10,
        progress=False,
    )
    np.testing.assert_allclose(res.x["b"], -1.0, atol=1e-10)


def test_optax_transformation_and_progress_bar(capsys):
    res = minimize(quad, jnp.zeros(3), method=optax.sgd(0.2), maxiter=500, tol=1e-8, progress=True)
    assert res.success
    np.testing.assert_allclose(res.x, [1.0, 2.0, 3.0], atol=1e-7)


def test_stopping_rules_and_callback():
    res = minimize(rosen, jnp.zeros(4), method="scipy:BFGS", maxiter=3, tol=0.0, progress=False)
    assert res.nit == 3 and not res.success and "maxiter" in res.message
    seen = []

    def cb(it):
        seen.append(it.iteration)
        return it.iteration == 2

    res = minimize(rosen, jnp.zeros(4), method="scipy:L-BFGS-B", callback=cb, progress=False)
    assert seen == [1, 2] and res.nit == 2 and "callback" in res.message
    res = minimize(
        quad, jnp.zeros(3), method="sgd", options={"learning_rate": 1e-3}, ftol=1e-2, tol=0.0, progress=False
    )
    assert res.success and "ftol" in res.message and res.nit == 1
    # a non-finite objective stops the run with a message, no silent NaN
    res = minimize(
        lambda x: jnp.sum(jnp.log(x)),
        -jnp.ones(2),
        method="adam",
        options={"learning_rate": 0.1},
        progress=False,
    )
    assert not res.success and "not finite" in res.message


def test_errors():
    with pytest.raises(ValueError, match="lbfgsb"):
        minimize(quad, jnp.zeros(2), method="lbfgs", bounds=(0, 1), progress=False)
    with pytest.raises(ValueError, match="method='newton'"):
        minimize(quad, jnp.zeros(2), method="newton", progress=False)
    with pytest.raises(ValueError, match="learning_rate"):
        minimize(quad, jnp.zeros(2), method="adam", progress=False)
    with pytest.raises(TypeError, match="scalar"):
        minimize(lambda x: x**2, jnp.zeros(2), progress=False)
    with pytest.raises(ValueError, match="lower > upper"):
        minimize(quad, jnp.zeros(2), method="lbfgsb", bounds=(1.0, 0.0), progress=False)
