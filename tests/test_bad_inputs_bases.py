"""Bad input to igax.bases (and the spline space built on it): each case is an error that names the argument.

Until these checks, weights <= 0 gave inf/NaN bases, and NaN or duplicate interpolation sites and NaN values
under ``jit`` came back as NaN (the checks were skipped on traced arrays); a degree-0 spline space failed with
"the geometry Jacobian is zero" and ``refine(elements=2.5)`` with "'float' object is not iterable".

Under ``jit`` the value checks raise at run time: from the native interpolation kernel itself, elsewhere
through the run-time error mechanism of igax's solvers. Either way JAX raises ``JaxRuntimeError``, whose text
carries igax's message.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.bases import (
    NURBSPatch,
    open_uniform,
    rational_basis_1d,
    rational_tensor_basis,
)
from igax.fem import geometry
from igax.layers import (
    free_knot_fit,
    interpolate,
    spline_fit,
)

RuntimeFailure = jax.errors.JaxRuntimeError

T2 = [0, 0, 0, 1, 1, 1]  # quadratic, one element: the classic quarter circle's knots
U = np.array([[0.5, 0.5]])
X = jnp.linspace(0.0, 1.0, 8)
Y = jnp.sin(3 * X)
XQ = jnp.linspace(-0.1, 1.1, 13)
NAN_AT_2 = X.at[2].set(jnp.nan)
DUPLICATE = X.at[2].set(X[1])  # x[1] == x[2]


def _jit_interp(**kw):
    return jax.jit(partial(interpolate, **kw))


def _degree0_patch():
    cp = np.array([[[0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]])
    return NURBSPatch(([0, 0.5, 1], [0, 0.5, 1]), (0, 0), cp)


def _patch_with_weights(w):
    cp = jnp.array([[[0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]])
    return NURBSPatch(([0, 0, 1, 1], [0, 0, 1, 1]), (1, 1), cp, w)


CASES = [
    # -- item 7: rational bases with weights <= 0 (were inf/NaN) ------------------------------------------
    (
        "1D weight zero",
        lambda: rational_basis_1d(T2, 2, [1.0, 0.0, 1.0], [0.5]),
        ValueError,
        r"rational_basis_1d: weights must be positive and finite .* got weights\[1\] = 0\.0",
    ),
    (
        "1D weight negative",
        lambda: rational_basis_1d(T2, 2, np.array([1.0, -0.5, 1.0]), np.array([0.5])),
        ValueError,
        r"weights\[1\] = -0\.5",
    ),
    (
        "1D weight NaN",
        lambda: rational_basis_1d(T2, 2, jnp.array([1.0, jnp.nan, 1.0]), jnp.array([0.5])),
        ValueError,
        r"weights must be positive and finite",
    ),
    (
        "tensor weight negative",
        lambda: rational_tensor_basis((T2, T2), (2, 2), -np.ones((3, 3)), U),
        ValueError,
        r"rational_tensor_basis: weights must be positive and finite .* got weights\[0, 0\] = -1\.0",
    ),
    (
        "1D weight zero under jit",
        lambda: jax.jit(lambda w: rational_basis_1d(T2, 2, w, jnp.array([0.5]))[1])(
            jnp.array([1.0, 0.0, 1.0])
        ),
        RuntimeFailure,
        r"rational_basis_1d: weights must be positive",
    ),
    (
        "tensor weight negative under jit",
        lambda: jax.jit(lambda w: rational_tensor_basis((T2, T2), (2, 2), w, U)[1])(
            jnp.ones((3, 3)).at[1, 2].set(-1.0)
        ),
        RuntimeFailure,
        r"rational_tensor_basis: weights must be positive",
    ),
    (
        "traced patch weights under jit (shape optimisation)",
        lambda: jax.jit(lambda w: _patch_with_weights(w).evaluate(jnp.asarray(U)))(
            jnp.ones((2, 2)).at[0, 1].set(0.0)
        ),
        RuntimeFailure,
        r"weights must be positive",
    ),
    # -- item 8: interpolation under jit (returned NaN) ----------------------------------------------------
    (
        "NaN site, native kernel",
        lambda: _jit_interp()(NAN_AT_2, Y, XQ),
        RuntimeFailure,
        r"interpolate: x contains NaN",
    ),
    (
        "duplicate site, native kernel",
        lambda: _jit_interp()(DUPLICATE, Y, XQ),
        RuntimeFailure,
        r"interpolate: x must be strictly increasing, without duplicate sites",
    ),
    (
        "NaN value, native kernel",
        lambda: _jit_interp()(X, Y.at[5].set(jnp.nan), XQ),
        RuntimeFailure,
        r"interpolate: y contains NaN",
    ),
    (
        "NaN point, native kernel",
        lambda: _jit_interp()(X, Y, XQ.at[3].set(jnp.nan)),
        RuntimeFailure,
        r"interpolate: x_new contains NaN",
    ),
    (
        "infinite point among unsorted points, native kernel",
        lambda: _jit_interp()(X, Y, XQ[::-1].at[4].set(jnp.inf)),
        RuntimeFailure,
        r"interpolate: x_new contains NaN or infinity",
    ),
    (
        "infinite last site, degree 1 kernel",
        lambda: _jit_interp(degree=1)(X.at[-1].set(jnp.inf), Y, XQ),
        RuntimeFailure,
        r"interpolate: x contains NaN or infinity",
    ),
    (
        "NaN site, pure path",
        lambda: _jit_interp(native=False)(NAN_AT_2, Y, XQ),
        RuntimeFailure,
        r"interpolate: x contains NaN",
    ),
    (
        "duplicate site, degree 2 (pure path)",
        lambda: _jit_interp(degree=2, native=False)(DUPLICATE, Y, XQ),
        RuntimeFailure,
        r"interpolate: x must be strictly increasing",
    ),
    (
        "NaN value, pure path",
        lambda: _jit_interp(native=False)(X, Y.at[0].set(jnp.nan), XQ),
        RuntimeFailure,
        r"interpolate: y contains NaN",
    ),
    (
        "NaN point, pure path",
        lambda: _jit_interp(native=False)(X, Y, XQ.at[0].set(jnp.nan)),
        RuntimeFailure,
        r"interpolate: x_new contains NaN",
    ),
    (
        "unsorted points with assume_sorted, pure path",
        lambda: _jit_interp(native=False, assume_sorted=True)(X, Y, XQ[::-1]),
        RuntimeFailure,
        r"interpolate: assume_sorted=True but x_new is not sorted",
    ),
    (
        "NaN value in one signal of a vmap (one folded kernel call)",
        lambda: jax.jit(jax.vmap(lambda y: interpolate(X, y, XQ)))(jnp.stack([Y, Y.at[3].set(jnp.nan)])),
        RuntimeFailure,
        r"interpolate: y contains NaN",
    ),
    (
        "NaN value in a vmap, pure path",
        lambda: jax.jit(jax.vmap(lambda y: interpolate(X, y, XQ, degree=2, native=False)))(
            jnp.stack([Y, Y.at[3].set(jnp.nan)])
        ),
        RuntimeFailure,
        r"interpolate: y contains NaN",
    ),
    (
        "duplicate site in a gradient with respect to the values (transposed kernel)",
        lambda: jax.jit(jax.grad(lambda y, x: jnp.sum(interpolate(x, y, XQ))))(Y, DUPLICATE),
        RuntimeFailure,
        r"interpolate: x must be strictly increasing",
    ),
    (
        "NaN point in a gradient with respect to the sites",
        lambda: jax.jit(jax.grad(lambda x, q: jnp.sum(interpolate(x, Y, q) ** 2)))(X, XQ.at[1].set(jnp.nan)),
        RuntimeFailure,
        r"interpolate: x_new contains NaN",
    ),
    (
        "NaN value in a spline fit under jit",
        lambda: jax.jit(lambda y: spline_fit(open_uniform(3, 2), 3, X, y))(Y.at[1].set(jnp.nan)),
        RuntimeFailure,
        r"fit: y contains NaN",
    ),
    (
        "site outside the knot domain in a spline fit under jit",
        lambda: jax.jit(lambda x: spline_fit(open_uniform(3, 2), 3, x, Y))(X + 0.5),
        RuntimeFailure,
        r"fit: x must lie in the knot domain",
    ),
    (
        "negative smoothing under jit",
        lambda: jax.jit(lambda s: spline_fit(open_uniform(3, 2), 3, X, Y, smoothing=s))(-1.0),
        RuntimeFailure,
        r"fit: smoothing must be a finite number >= 0",
    ),
    (
        "infinite value in a free-knot fit under jit",
        lambda: jax.jit(lambda y: free_knot_fit(y, 2, 1))(Y.at[1].set(jnp.inf)),
        RuntimeFailure,
        r"free_knot_fit: y contains NaN",
    ),
    # -- item 16: obscure messages ------------------------------------------------------------------------
    (
        "degree-0 spline space",
        lambda: fem.SplineSpace(_degree0_patch()),
        ValueError,
        r"SplineSpace: patch.degrees = \(0, 0\); the degree must be >= 1",
    ),
    (
        "non-integer elements",
        lambda: geometry.rectangle().refine(elements=2.5),
        TypeError,
        r"elements must be an int or a tuple of 2 ints .* got 2\.5 .* whole number",
    ),
    (
        "non-integer NumPy elements",
        lambda: geometry.rectangle().refine(elements=np.float64(4.0)),
        TypeError,
        r"elements must be an int",
    ),
    (
        "non-integer entry of elements",
        lambda: geometry.rectangle().refine(elements=(4, 2.5)),
        TypeError,
        r"elements must be an int or a tuple of 2 ints .* got \(4, 2\.5\)",
    ),
    (
        "elements as a string",
        lambda: geometry.rectangle().refine(elements="4"),
        TypeError,
        r"elements must be an int",
    ),
    (
        "zero elements",
        lambda: geometry.rectangle().refine(elements=0),
        ValueError,
        r"elements must be positive",
    ),
    (
        "negative elements in one direction",
        lambda: geometry.rectangle().refine(elements=(4, -1)),
        ValueError,
        r"elements must be positive in every direction, got \(4, -1\)",
    ),
    (
        "non-integer degree",
        lambda: geometry.rectangle().refine(degree=2.0),
        TypeError,
        r"degree must be an int",
    ),
]


@pytest.mark.parametrize(("description", "call", "exc", "match"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(description, call, exc, match):
    with pytest.raises(exc, match=match):
        jax.block_until_ready(call())  # run-time errors surface when the (asynchronous) result is ready


# ------------------------------------------------------------------------------------------------------------
# the checks change no result and no derivative, and cost no host callback on the native path
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"native": False}, {"degree": 2}, {"degree": 1}], ids=str)
def test_checks_leave_values_gradients_and_vmap_unchanged(kw):
    def run(check):
        f = partial(interpolate, check=check, **kw)
        value = jax.jit(f)(X, Y, XQ)
        grads = jax.jit(jax.grad(lambda x, y, q: jnp.sum(jnp.sin(f(x, y, q))), argnums=(0, 1, 2)))(X, Y, XQ)
        batch = jax.jit(jax.vmap(lambda y: f(X, y, XQ)))(jnp.stack([Y, 2 * Y, -Y]))
        fwd = jax.jvp(lambda y: f(X, y, XQ), (Y,), (jnp.ones_like(Y),))[1]
        return value, *grads, batch, fwd

    for a, b in zip(run(True), run(False), strict=True):
        assert bool(jnp.all(jnp.isfinite(a)))
        # equal to rounding: the pure path's run-time branch may change XLA's fusion of the arithmetic
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14, atol=1e-14)


def test_check_false_skips_the_value_checks():
    out = jax.jit(partial(interpolate, check=False))(X, Y.at[2].set(jnp.nan), XQ)
    assert bool(jnp.any(jnp.isnan(out)))  # NaN in, NaN out: what the switch documents
    with pytest.raises(TypeError, match="check must be True or False"):
        interpolate(X, Y, XQ, check="no")


def test_native_path_checks_without_a_host_callback():
    # The native kernel checks its operands itself: the program holds no callback (equinox's branch would add
    # ~3.6 us to an 8 us call); the pure path holds one.
    from igax.layers import _interp_native

    if not _interp_native.supports(8, 3, jnp.float64):
        pytest.skip("native kernels unavailable")
    native = jax.jit(jax.grad(lambda y, x: jnp.sum(interpolate(x, y, XQ) ** 2))).lower(Y, X).as_text()
    pure = jax.jit(lambda y, x: interpolate(x, y, XQ, native=False)).lower(Y, X).as_text()
    assert "igax_interp" in native and "callback" not in native
    assert "callback" in pure


def test_weight_checks_keep_nurbs_differentiable():
    w = jnp.array([1.0, 0.5**0.5, 1.0])
    f = jax.jit(lambda w: jnp.sum(rational_basis_1d(T2, 2, w, jnp.linspace(0, 1, 5), nderiv=1)[1][1] ** 2))
    g = jax.grad(f)(w)
    eps = 1e-6
    fd = [(f(w.at[i].add(eps)) - f(w.at[i].add(-eps))) / (2 * eps) for i in range(3)]
    np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-6, atol=1e-9)
    # and the tensor basis under jit + vmap over weight sets
    W = jnp.stack([jnp.ones((3, 3)), jnp.full((3, 3), 2.0)])
    R = jax.jit(jax.vmap(lambda w: rational_tensor_basis((T2, T2), (2, 2), w, U)[1]))(W)
    np.testing.assert_allclose(np.asarray(R[0]), np.asarray(R[1]), atol=1e-14)  # uniform weights cancel
