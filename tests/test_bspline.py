"""B-spline basis: agreement with scipy, partition of unity, end and repeated-knot behaviour, and the JAX
transformations (jit, vmap, grad) with finite-difference checks and no NaN gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import BSpline

from igax.bases import basis_functions, design_matrix, evaluate, find_span, greville, open_uniform


def knot_cases():
    cases = []
    for p in range(6):
        cases.append((p, "uniform", open_uniform(p, 5)))
        rng = np.random.default_rng(p)
        inner = np.sort(rng.uniform(0.05, 0.95, 4))
        cases.append((p, "nonuniform", np.r_[[-1.0] * (p + 1), 2 * inner - 1, [1.0] * (p + 1)]))
        if p >= 2:  # repeated interior knots (multiplicity 2 and p)
            t = np.r_[[0.0] * (p + 1), 0.2, 0.4, 0.4, [0.7] * p, [1.0] * (p + 1)]
            cases.append((p, "repeated", t))
    return cases


@pytest.mark.parametrize("p, kind, t", knot_cases(), ids=[f"p{c[0]}-{c[1]}" for c in knot_cases()])
def test_matches_scipy(p, kind, t):
    rng = np.random.default_rng(1)
    knots_u = np.unique(t)
    x = np.r_[knots_u, rng.uniform(t[0], t[-1], 40)]
    n = len(t) - p - 1
    nd = p + 1  # includes an order above p, which must be zero
    D = design_matrix(t, p, x, nderiv=nd)  # (nd+1, npts, n)
    # scipy's design_matrix for the values (it is right-continuous and, at x = t[-1], uses the last span too)
    ref0 = BSpline.design_matrix(x, t, p).toarray()
    np.testing.assert_allclose(D[0], ref0, rtol=0, atol=1e-12)
    for k in range(1, nd + 1):
        ref = np.stack([BSpline(t, np.eye(n)[i], p)(x, nu=k) for i in range(n)], axis=1)
        scale = max(1.0, np.abs(ref).max())
        np.testing.assert_allclose(D[k], ref, rtol=0, atol=1e-12 * scale)
    # compare at the right end in the limit from the left, independent of any convention
    left = np.nextafter(t[-1], -np.inf)
    np.testing.assert_allclose(design_matrix(t, p, [t[-1]])[0], design_matrix(t, p, [left])[0], atol=1e-12)


@pytest.mark.parametrize("p", [0, 1, 3, 5])
def test_partition_of_unity_and_greville_identity(p):
    t = np.r_[[0.0] * (p + 1), 0.1, 0.35, 0.35 if p > 1 else 0.5, 0.8, [1.0] * (p + 1)]
    x = np.r_[np.linspace(0, 1, 201), np.unique(t)]
    first, ders = basis_functions(t, p, x, nderiv=2)
    np.testing.assert_allclose(ders[0].sum(-1), 1.0, atol=1e-14)
    np.testing.assert_allclose(ders[1:].sum(-1), 0.0, atol=1e-10)
    assert np.all(ders[0] >= -1e-15)
    if p >= 1:  # linear precision: sum_i g_i N_i(x) = x
        np.testing.assert_allclose(evaluate(t, p, greville(t, p), x)[0], x, atol=1e-14)


def test_span_at_ends_and_repeated_knots():
    t = [0, 0, 0, 0.5, 0.5, 1, 1, 1]
    np.testing.assert_array_equal(find_span(t, 2, [0.0, 0.25, 0.5, 0.75, 1.0]), [2, 2, 4, 4, 4])
    first, ders = basis_functions(t, 2, [1.0])
    assert first.tolist() == [2] and ders[0, 0].tolist() == [0.0, 0.0, 1.0]
    # at the C0 knot the middle function interpolates
    first, ders = basis_functions(t, 2, [0.5])
    assert first.tolist() == [2] and ders[0, 0].tolist() == [1.0, 0.0, 0.0]


def test_numpy_and_jax_agree_and_shapes():
    t = open_uniform(3, 4)
    x = np.random.default_rng(0).uniform(size=(5, 7))
    f_np, d_np = basis_functions(t, 3, x, 2)
    f_j, d_j = jax.jit(lambda tt, xx: basis_functions(tt, 3, xx, 2))(jnp.asarray(t), jnp.asarray(x))
    assert isinstance(d_np, np.ndarray) and d_np.shape == (3, 5, 7, 4) and f_np.shape == (5, 7)
    np.testing.assert_array_equal(f_np, np.asarray(f_j))
    np.testing.assert_allclose(d_np, np.asarray(d_j), atol=1e-14)
    c = np.random.default_rng(1).normal(size=(7, 2))
    assert evaluate(t, 3, c, x, 1).shape == (2, 5, 7, 2)


P3_KNOTS = np.r_[[0.0] * 4, 0.3, 0.5, 0.55, [1.0] * 4]
P3_COEFFS = np.random.default_rng(2).normal(size=P3_KNOTS.size - 4)


def test_grad_wrt_points_coeffs_knots_match_finite_differences():
    p, t, c, x0, h = 3, P3_KNOTS, P3_COEFFS, 0.42, 1e-6
    f_np = lambda tt, cc, xx: float(evaluate(tt, p, cc, xx)[0])  # NumPy path for the finite differences
    grad = jax.jit(jax.grad(lambda tt, cc, xx: evaluate(tt, p, cc, xx)[0], argnums=(0, 1, 2)))
    gt, gc, gx = grad(jnp.asarray(t), jnp.asarray(c), jnp.asarray(x0))
    # points
    fd = (f_np(t, c, x0 + h) - f_np(t, c, x0 - h)) / (2 * h)
    assert abs(gx - fd) <= 1e-7 * max(1.0, abs(gx))
    assert abs(gx - evaluate(t, p, c, x0, 1)[1]) <= 1e-12 * max(1.0, abs(gx))
    # coefficients: the gradient is the basis row itself
    np.testing.assert_allclose(gc, design_matrix(t, p, [x0])[0, 0], atol=1e-14)
    # simple interior knots, where the derivative is well defined
    for i in (4, 5, 6):
        e = np.zeros_like(t)
        e[i] = h
        fd = (f_np(t + e, c, x0) - f_np(t - e, c, x0)) / (2 * h)
        assert abs(gt[i] - fd) <= 1e-7 * max(1.0, abs(fd)), i


def _repeated_loss(tt, cc, xx):
    return jnp.sum(evaluate(tt, 3, cc, xx, nderiv=2) ** 2)


_repeated_grad = jax.jit(jax.grad(_repeated_loss, argnums=(0, 1, 2)))


@pytest.mark.parametrize("x", [0.0, 0.4, 0.7, 1.0])
def test_no_nan_gradients_at_repeated_knots_and_ends(x):
    t = jnp.asarray(np.r_[[0.0] * 4, 0.4, 0.4, [0.7] * 3, [1.0] * 4])
    c = jnp.asarray(np.random.default_rng(3).normal(size=t.shape[0] - 4))
    grads = _repeated_grad(t, c, jnp.asarray(x))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    # the point derivative at a repeated knot / the ends is the one-sided derivative of the span used
    tn, cn = np.asarray(t), np.asarray(c)
    d1 = evaluate(tn, 3, cn, x, 1)[1]
    if x == 1.0:
        fd = (evaluate(tn, 3, cn, 1.0)[0] - evaluate(tn, 3, cn, 1.0 - 1e-7)[0]) / 1e-7
    else:
        fd = (evaluate(tn, 3, cn, x + 1e-7)[0] - evaluate(tn, 3, cn, x)[0]) / 1e-7
    assert abs(d1 - fd) <= 1e-5 * max(1.0, abs(d1))


def test_jit_vmap_grad_compose():
    p = 2
    t = jnp.asarray(open_uniform(p, 6))
    c = jnp.asarray(np.random.default_rng(4).normal(size=8))
    f = lambda cc, x: evaluate(t, p, cc, x)[0]
    xs = jnp.linspace(0.0, 1.0, 9)
    vals = jax.jit(jax.vmap(f, in_axes=(None, 0)))(c, xs)
    np.testing.assert_allclose(vals, evaluate(np.asarray(t), p, np.asarray(c), np.asarray(xs))[0], atol=1e-14)
    dx = jax.jit(jax.vmap(jax.grad(f, argnums=1), in_axes=(None, 0)))(c, xs)
    np.testing.assert_allclose(
        dx, evaluate(np.asarray(t), p, np.asarray(c), np.asarray(xs), 1)[1], atol=1e-12
    )
    # vmap over coefficient sets of grad w.r.t. coefficients: rows of the design matrix
    J = jax.jit(jax.vmap(jax.grad(lambda cc: jnp.sum(f(cc, xs)))))(jnp.stack([c, 2 * c]))
    np.testing.assert_allclose(J[0], design_matrix(np.asarray(t), p, np.asarray(xs))[0].sum(0), atol=1e-14)
    # traced knots under jit (no validation possible, shapes only)
    g = jax.jit(lambda tt: evaluate(tt, p, c, 0.3)[0])(t)
    np.testing.assert_allclose(g, f(c, 0.3), atol=1e-14)


INVALID = [
    (dict(knots=[0, 0, 1, 1], degree=1, x=[1.5]), ValueError, "x must lie in the parametric domain"),
    (dict(knots=[0, 0, 1, 1], degree=1, x=[np.nan]), ValueError, "x must be finite"),
    (dict(knots=[0, 0, 1, 1], degree=1, x=[0.5], nderiv=-1), ValueError, "nderiv must be a non-negative"),
    (dict(knots=[0, 0, 1, 1], degree=1, x=[0.5], nderiv=1.0), TypeError, "nderiv must be a non-negative"),
    (dict(knots=[0, 0, 1, 1], degree=2, x=[0.5]), ValueError, "knots has 4 entries, but degree 2 needs"),
    (dict(knots=[0, 1, 0, 1], degree=1, x=[0.5]), ValueError, "knots must be non-decreasing"),
    (dict(knots=[0, 0, 1, 1], degree="1", x=[0.5]), TypeError, "degree must be a non-negative integer"),
]


@pytest.mark.parametrize("kwargs, exc, match", INVALID)
def test_invalid_basis_inputs(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        basis_functions(**kwargs)


def test_invalid_coefficient_shape():
    with pytest.raises(ValueError, match="coeffs must have shape \\(n, ...\\) with n = .* = 2"):
        evaluate([0, 0, 1, 1], 1, np.ones(3), [0.5])


@st.composite
def knot_vectors(draw):
    p = draw(st.integers(0, 5))
    n_breaks = draw(st.integers(1, 6))
    gaps = draw(st.lists(st.floats(0.05, 3.0), min_size=n_breaks, max_size=n_breaks))
    start = draw(st.floats(-5.0, 5.0))
    breaks = start + np.concatenate([[0.0], np.cumsum(gaps)])
    mults = draw(st.lists(st.integers(1, max(p, 1)), min_size=n_breaks - 1, max_size=n_breaks - 1))
    t = np.concatenate(
        [np.full(p + 1, breaks[0])]
        + [np.full(m, b) for m, b in zip(mults, breaks[1:-1], strict=True)]
        + [np.full(p + 1, breaks[-1])]
    )
    return p, t


@settings(max_examples=40, deadline=None)
@given(knot_vectors(), st.integers(0, 2**31 - 1))
def test_random_knot_vectors_match_scipy(case, seed):
    p, t = case
    x = np.r_[np.unique(t), np.random.default_rng(seed).uniform(t[0], t[-1], 20)]
    D = design_matrix(t, p, x, nderiv=1)
    np.testing.assert_allclose(D[0], BSpline.design_matrix(x, t, p).toarray(), atol=1e-12)
    np.testing.assert_allclose(D[0].sum(1), 1.0, atol=1e-13)
    if p >= 1:
        n = t.size - p - 1
        ref = np.stack([BSpline(t, np.eye(n)[i], p)(x, nu=1) for i in range(n)], axis=1)
        np.testing.assert_allclose(D[1], ref, atol=1e-12 * max(1.0, np.abs(ref).max()))
