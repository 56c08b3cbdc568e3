"""Free-knot piecewise-polynomial approximation layer: optimality, weak Jacobian, transformations, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax.layers import free_knot_fit, segment, segment_projection


def _brute_force(y, k, d):
    """Optimal breakpoints and error by enumerating every segmentation (small n only)."""
    n = len(y)
    best = (np.inf, None)
    for inner in itertools.combinations(range(1, n), k - 1):
        b = (0, *inner, n)
        if min(np.diff(b)) < d + 1:
            continue
        err = 0.0
        for s in range(k):
            t = np.arange(b[s], b[s + 1])
            V = np.vander(t - t.mean(), d + 1)
            c = np.linalg.lstsq(V, y[b[s] : b[s + 1]], rcond=None)[0]
            err += np.sum((V @ c - y[b[s] : b[s + 1]]) ** 2)
        if err < best[0] - 1e-12:
            best = (err, b)
    return best


def _hat_jacobian(breaks, n, d):
    H = np.zeros((n, n))
    for s in range(len(breaks) - 1):
        a, b = breaks[s], breaks[s + 1]
        V = np.vander(np.arange(a, b) - (a + b) / 2, d + 1)
        H[a:b, a:b] = V @ np.linalg.pinv(V)
    return H


@pytest.mark.parametrize("degree", [0, 1, 2])
def test_exact_dp_is_optimal(degree):
    rng = np.random.default_rng(degree)
    f = jax.jit(lambda y: free_knot_fit(y, 3, degree, return_breaks=True))
    for _ in range(3):
        y = rng.standard_normal(13) + np.repeat(3 * rng.standard_normal(3), [4, 5, 4])
        err, b = _brute_force(y, 3, degree)
        yhat, breaks = f(jnp.asarray(y))
        np.testing.assert_allclose(float(np.sum((np.asarray(yhat) - y) ** 2)), err, rtol=1e-10)
        assert tuple(np.asarray(breaks)) == b


@pytest.mark.parametrize("degree", [1, 3])
def test_vjp_is_block_hat_matrix(degree):
    rng = np.random.default_rng(10 + degree)
    n, k = 16, 3
    y = jnp.asarray(rng.standard_normal(n))
    yhat, breaks = free_knot_fit(y, k, degree, return_breaks=True)
    H = _hat_jacobian(np.asarray(breaks), n, degree)
    J = jax.jacrev(lambda y: free_knot_fit(y, k, degree))(y)
    np.testing.assert_allclose(np.asarray(J), H, atol=1e-12)
    # the forward pass is the same projection
    np.testing.assert_allclose(np.asarray(yhat), H @ np.asarray(y), atol=1e-12)
    # and a single VJP against the explicit matrix
    g = rng.standard_normal(n)
    _, vjp = jax.vjp(lambda y: free_knot_fit(y, k, degree), y)
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g))[0]), H.T @ g, atol=1e-12)


def test_projection_reproduces_piecewise_polynomials_and_is_linear():
    n = 40
    t = np.arange(n, dtype=float)
    breaks = jnp.array([0, 12, 30, 40])
    y = np.where(t < 12, 1 + 0.5 * t, np.where(t < 30, 3 - 0.1 * (t - 20) ** 2, -t))
    np.testing.assert_allclose(np.asarray(segment_projection(jnp.asarray(y), breaks, 2)), y, atol=1e-10)
    # fitted breakpoints of a clean piecewise-quadratic signal are the true ones
    assert tuple(np.asarray(segment(jnp.asarray(y), 3, 2))) == (0, 12, 30, 40)


def test_candidate_search_with_refinement_finds_breaks():
    rng = np.random.default_rng(3)
    n = 5000
    t = np.arange(n)
    y = np.piecewise(
        t.astype(float),
        [t < 1234, (t >= 1234) & (t < 3777), t >= 3777],
        [lambda s: s / 1000, 3.0, lambda s: 2 - s / 2000],
    )
    y = y + 0.01 * rng.standard_normal(n)
    yhat, b = free_knot_fit(jnp.asarray(y), 3, 1, candidates=64, return_breaks=True)
    assert tuple(np.asarray(b)) == (0, 1234, 3777, n)
    assert np.sqrt(np.mean((np.asarray(yhat) - y) ** 2)) < 0.012


def test_batches_jit_grad_float32():
    rng = np.random.default_rng(4)
    Y = rng.standard_normal((3, 20))
    out = free_knot_fit(jnp.asarray(Y), 2, 1)
    for i in range(3):
        np.testing.assert_allclose(
            np.asarray(out[i]), np.asarray(free_knot_fit(jnp.asarray(Y[i]), 2, 1)), atol=1e-12
        )
    g = jax.grad(lambda Y: jnp.sum(free_knot_fit(Y, 2, 1) ** 2))(jnp.asarray(Y))
    np.testing.assert_allclose(np.asarray(g), 2 * np.asarray(out), atol=1e-12)  # H symmetric idempotent
    y32 = jnp.asarray(Y[0], jnp.float32)
    o32 = jax.jit(lambda y: free_knot_fit(y, 2, 1))(y32)
    assert o32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(o32), np.asarray(out[0]), atol=1e-5)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.ones(5), 3, 1), {}, "need at least"),
        ((np.ones(10), 0, 1), {}, "n_segments must be a positive integer"),
        ((np.ones(10), 2, -1), {}, "degree must be a non-negative integer"),
        ((np.ones((2, 2, 5)), 1, 0), {}, "y must have shape"),
        ((np.array([1.0, np.nan, 2, 3]), 1, 0), {}, "y contains NaN"),
        ((np.ones(10), 3, 1), {"candidates": 2}, "candidates must be an integer"),
    ],
)
def test_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        free_knot_fit(*args, **kwargs)


def test_integer_input_is_a_type_error():
    with pytest.raises(TypeError, match="y must be a real floating-point array"):
        free_knot_fit(np.arange(10), 2, 1)
