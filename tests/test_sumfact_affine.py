"""Sum-factorised assembly on affine patches with a constant kernel (igax/fem/forms/_sumfact_affine.py).

On a polynomial patch whose control points are an affine image of the Greville abscissae, a constant kernel
gives the matrix as a sum of Kronecker products of univariate band matrices. Checked here: the matrices equal
the element-wise ones (and the general sum factorisation's) to 1e-12 in 2D and 3D, scalar and vector,
symmetric and not, on sheared and rotated maps, non-uniform and repeated knots and weights other than 1; the
Kronecker program is taken exactly where it applies (affine, equal weights, constant kernel), for concrete
patches when the program is built and for traced ones (a space passed to jit) when it runs; gradients w.r.t.
the control points and the weights through it come from the general program and match central differences
with Taylor rate 2; under vmap an affine and a curved patch each get their own matrix; and a closed-over
patch's program holds no control-net- or pattern-sized constant.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_gradient_cost import _constants
from test_sumfact import _check_gradient, _close

from igax import fem
from igax.fem import library
from igax.fem.forms import sumfact  # noqa: F401 - registers the module under its name
from igax.fem.forms.form import bilinear_form

_SF = sys.modules["igax.fem.forms.sumfact"]
_AF = sys.modules["igax.fem.forms._sumfact_affine"]
_EL3 = library.linear_elasticity(1.0, 0.3, "3d")


@bilinear_form
def _advection(u, v, w):
    """A constant kernel that is not symmetric (the matrix reads the transposed band index)."""
    return (0.7 * u.grad[0] - 0.4 * u.grad[1] + 0.3 * u.value) * v.value


@bilinear_form(symmetric=True)
def _reads_x(u, v, w):
    return (1.0 + w.x[0] ** 2) * u.value * v.value


@pytest.fixture
def paths(monkeypatch):
    """Sum factorisation at every size; ``paths.elementwise`` / ``paths.general`` assemble the reference
    matrices, and ``paths.taken`` lists the Kronecker routes taken (``values_concrete``: a concrete patch
    found affine when the program is built; ``values_traced``: the run-time choice)."""
    monkeypatch.setattr(_SF, "_MIN_ENTRIES", 0)
    monkeypatch.setattr(_SF, "_MIN_DEGREE", 1)
    taken = []  # counted per assembly (the programs themselves are traced once per shape)
    for name in ("values_concrete", "values_traced"):
        real = getattr(_AF, name)
        monkeypatch.setattr(_AF, name, lambda *a, real=real, name=name: taken.append(name) or real(*a))

    class Paths:
        def elementwise(self, form, V, **kw):
            with monkeypatch.context() as m:
                m.setattr(_SF, "_MIN_ENTRIES", 10**18)
                return fem.assemble(form, V, **kw).values

        def general(self, form, V, **kw):
            with monkeypatch.context() as m:
                m.setattr(_SF, "_AFFINE", False)
                return fem.assemble(form, V, **kw).values

    p = Paths()
    p.taken = taken
    return p


def _sheared_box(n=(2, 3, 2), degree=2, shape=(3,)):
    """A degree-``degree`` box mapped by a rotation-and-shear (every entry of ``J`` nonzero), weights 2."""
    V = fem.SplineSpace(fem.geometry.box().refine(degree=degree, elements=n), shape=shape)
    A = np.array([[1.2, 0.3, -0.2], [0.1, 0.9, 0.25], [-0.15, 0.2, 1.4]])
    P = np.asarray(V.control_points) @ A.T + np.array([0.5, -1.0, 2.0])
    return V.with_geometry(control_points=jnp.asarray(P), weights=2.0 * jnp.ones_like(V.weights))


def _parallelogram(degree=3, n=(5, 4), knots=None, shape=()):
    """A 2D patch on the map ``x = A u + b`` (non-uniform breakpoints with ``knots``)."""
    geo = fem.geometry.rectangle((0, 0), (2, 1)).refine(degree=degree, elements=n)
    if knots is not None:  # uneven breakpoints, one repeated (an empty virtual element)
        for axis, values in enumerate(knots):
            geo = geo.insert_knots(axis, values)
    V = fem.SplineSpace(geo, shape=shape)
    A = np.array([[1.0, 0.4], [-0.3, 0.8]])
    return V.with_geometry(control_points=jnp.asarray(np.asarray(V.control_points) @ A.T + 0.25))


def _rational(V):
    w = np.random.default_rng(2).uniform(0.8, 1.2, np.shape(V.weights))
    return V.with_geometry(weights=jnp.asarray(w))


def _curved(V, scale=0.03):
    rng = np.random.default_rng(1)
    P = np.asarray(V.control_points)
    return V.with_geometry(control_points=jnp.asarray(P + scale * rng.standard_normal(P.shape)))


@pytest.mark.parametrize(
    "make, form",
    [
        (lambda: _sheared_box(), _EL3),
        (lambda: _sheared_box(shape=()), library.laplace),
        (lambda: _sheared_box(shape=()), library.mass),
        (lambda: _parallelogram(), library.laplace),
        (lambda: _parallelogram(), _advection),
        (lambda: _parallelogram(shape=(2,)), library.linear_elasticity(2.0, 0.25)),
        (lambda: _parallelogram(2, n=(2, 1), knots=[[0.1, 0.5, 0.7], [0.3]]), library.laplace),
        (lambda: _parallelogram(), library.diffusion),
    ],
    ids=[
        "3d-elasticity", "3d-laplace", "3d-mass", "2d-laplace", "2d-advection", "2d-elasticity", "2d-knots",
        "2d-constant-input",
    ],
)  # fmt: skip
def test_affine_patches_equal_the_elementwise_and_general_matrices(make, form, paths):
    V = make()
    kw = {"kappa": 2.5} if form is library.diffusion else {}
    got = fem.assemble(form, V, **kw).values
    assert paths.taken == ["values_concrete"], "the Kronecker program was not taken"
    _close(got, paths.elementwise(form, V, **kw))
    _close(got, paths.general(form, V, **kw))


@pytest.mark.parametrize(
    "make, form, kw",
    [
        (lambda: _curved(_sheared_box()), _EL3, {}),
        (lambda: _rational(_sheared_box()), _EL3, {}),
        (lambda: _parallelogram(), library.diffusion, {"kappa": lambda x: 1.0 + x[0] ** 2}),
        (lambda: _parallelogram(), _reads_x, {}),
    ],
    ids=["curved", "rational", "input-at-points", "reads-x"],
)
def test_the_general_program_where_it_does_not_apply(make, form, kw, paths):
    """A curved patch, unequal weights, an input given at the points and a kernel that reads ``x``."""
    V = make()
    got = fem.assemble(form, V, **kw).values
    assert not paths.taken
    _close(got, paths.elementwise(form, V, **kw))


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "curved"])
def test_a_space_passed_to_jit_chooses_at_run_time(affine, paths):
    V = _sheared_box(n=(2, 2, 2))
    V = V if affine else _curved(V)
    got = jax.jit(lambda V: fem.assemble(_EL3, V).values)(V)
    assert paths.taken == ["values_traced"], "the run-time choice was not built"
    _close(got, paths.elementwise(_EL3, V))


def test_vmap_over_an_affine_and_a_curved_patch(paths):
    V = _parallelogram(2, n=(3, 3))
    Ps = jnp.stack([V.control_points, _curved(V).control_points])
    got = jax.vmap(lambda P: fem.assemble(library.laplace, V.with_geometry(control_points=P)).values)(Ps)
    assert paths.taken == ["values_traced"]
    for k in range(2):
        _close(got[k], paths.elementwise(library.laplace, V.with_geometry(control_points=Ps[k])))


def test_gradients_wrt_control_points_and_weights_leave_the_kronecker_program(paths):
    """At an affine patch the derivative is taken along non-affine perturbations too: exact (FD, rate 2)."""
    V = _parallelogram(2, n=(3, 2))
    r = jnp.asarray(np.random.default_rng(4).standard_normal(V.pattern.nnz))

    def loss(P, w):
        return jnp.sum(fem.assemble(library.laplace, V.with_geometry(control_points=P, weights=w)).values * r)

    _check_gradient(loss, (V.control_points, V.weights), taylor=(0, 1), jvp=True)
    assert set(paths.taken) == {"values_traced"}


@pytest.mark.parametrize("space_as_argument", [False, True], ids=["closed-over", "argument"])
def test_gradients_wrt_traced_moduli_and_coefficients(space_as_argument, paths):
    """A kernel with traced constants (a modulus closed over, a coefficient passed in) stays on the
    Kronecker program, and its gradient is exact: the matrix is linear in both."""
    V = _parallelogram(2, n=(3, 3), shape=(2,))  # 2D: a third of the 3D compile time
    r = jnp.asarray(np.random.default_rng(7).standard_normal(V.pattern.nnz))

    def loss_el(E, V):
        return jnp.sum(fem.assemble(library.linear_elasticity(E, 0.3), V).values * r)

    Vs = _parallelogram(2, n=(3, 3))
    s = jnp.asarray(np.random.default_rng(8).standard_normal(Vs.pattern.nnz))

    def loss_diff(kappa, V):
        return jnp.sum(fem.assemble(library.diffusion, V, kappa=kappa).values * s)

    for fn, x0, W in [(loss_el, 1.3, V), (loss_diff, 0.7, Vs)]:
        if space_as_argument:
            f, g = jax.jit(fn), jax.jit(jax.grad(fn))
            val, grad = f(x0, W), g(x0, W)
        else:
            f = jax.jit(lambda x, W=W, fn=fn: fn(x, W))
            val, grad = f(x0), jax.jit(jax.grad(lambda x, W=W, fn=fn: fn(x, W)))(x0)
        # Linear in the modulus / coefficient: the gradient is the value at 1, the value divided by x0.
        np.testing.assert_allclose(float(grad), float(val) / x0, rtol=1e-12)
        h = 1e-3
        fd = (fn(x0 + h, W) - fn(x0 - h, W)) / (2 * h)
        np.testing.assert_allclose(float(grad), float(fd), rtol=1e-9)
        if fn is loss_diff:
            ref = jnp.sum(paths.elementwise(library.diffusion, W, kappa=x0) * s)
        else:
            ref = jnp.sum(paths.elementwise(library.linear_elasticity(x0, 0.3), W) * r)
        np.testing.assert_allclose(float(val), float(ref), rtol=1e-12)
    # (the central differences run eagerly: a concrete patch)
    assert ("values_traced" in paths.taken) == space_as_argument and "values_concrete" in paths.taken


def test_a_closed_over_affine_patch_holds_no_large_constant(paths):
    """The README's pattern: inside the caller's jit the Kronecker program reads univariate tables (a few
    hundred numbers) and the CSR index (read at run time, igax/_held.py, forced here at a small size)."""
    from igax import _held, _native

    if not _native.available():
        pytest.skip("native kernels unavailable")
    V = _sheared_box(n=(3, 3, 3))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_held, "_HELD_MIN_BYTES", 0)
        lowered = jax.jit(lambda: fem.assemble(_EL3, V).values).lower()
    sizes = [int(np.prod(s)) for _, s in _constants(lowered.as_text(), compiled=False)]
    assert paths.taken == ["values_concrete"]
    assert max(sizes, default=0) < min(V.control_points.size, V.pattern.nnz), sizes


def test_the_affine_check():
    """Refined boxes are affine to rounding; a point moved by 1e-9 of the extent is not."""
    V = _sheared_box(n=(4, 3, 5))
    sf = _SF.sumfact_plan(V)
    ap = _AF.affine_plan(V.plan, sf, ((0, 0),))
    J, w0 = _AF.concrete_map(ap, V.control_points, V.weights)
    np.testing.assert_allclose(J, [[1.2, 0.3, -0.2], [0.1, 0.9, 0.25], [-0.15, 0.2, 1.4]], atol=1e-13)
    assert w0 == 2.0
    P = np.array(V.control_points)
    P[2, 1, 3, 0] += 1e-9
    assert _AF.concrete_map(ap, P, V.weights) is None
    assert _AF.concrete_map(ap, np.asarray(V.control_points), 1.0 + np.arange(V.weights.size)) is None


def test_grad_wrt_a_closed_over_modulus_with_the_space_passed_to_jit_on_a_curved_patch(paths):
    """The general path's run-time choice (traced weights) with a form closing over the differentiated
    modulus: the custom JVP receives it as an argument (closure conversion). Before, UnexpectedTracerError."""
    V = _curved(_parallelogram(2, n=(3, 3), shape=(2,)))
    r = jnp.asarray(np.random.default_rng(9).standard_normal(V.pattern.nnz))

    def loss(E, V):
        return jnp.sum(fem.assemble(library.linear_elasticity(E, 0.3), V).values * r)

    g = jax.jit(jax.grad(loss))(1.3, V)
    np.testing.assert_allclose(float(g), float(loss(1.3, V)) / 1.3, rtol=1e-12)  # linear in E


@pytest.mark.parametrize("case", ["affine", "curved", "rational", "inf"])
def test_the_run_time_choice_takes_the_kronecker_program_exactly_where_it_applies(case, monkeypatch, paths):
    """The Kronecker program marked (its values doubled): a space passed to jit gets doubled values exactly
    when it is affine with equal weights and finite; a control point at inf goes to the general program
    (non-finite values there, as eagerly), not to a finite matrix built from the corners."""
    real = _AF.kron_values
    monkeypatch.setattr(_AF, "kron_values", lambda *a: 2.0 * real(*a))
    V = _sheared_box(n=(2, 2, 2), shape=())
    if case == "curved":
        V = _curved(V)
    elif case == "rational":
        V = _rational(V)
    elif case == "inf":
        V = V.with_geometry(control_points=V.control_points.at[1, 2, 1, 0].set(jnp.inf))
    got = jax.jit(lambda V: fem.assemble(library.laplace, V).values)(V)
    assert paths.taken == ["values_traced"]
    if case == "inf":
        assert not np.all(np.isfinite(np.asarray(got)))
        return
    _close(got, (2.0 if case == "affine" else 1.0) * paths.elementwise(library.laplace, V))


def test_a_complex_kernel_takes_the_elementwise_path(paths):
    """Sum factorisation works in the space's real dtype: a complex kernel (here constant) keeps its
    imaginary part by taking the element-wise path (before, it was dropped with a ComplexWarning)."""

    @bilinear_form(symmetric=True)
    def helmholtz(u, v, w):
        return jnp.sum(u.grad * v.grad) - (2.0 + 0.5j) * u.value * v.value

    V = _parallelogram(2, n=(3, 3))
    got = fem.assemble(helmholtz, V).values
    assert got.dtype == jnp.complex128 and float(jnp.max(jnp.abs(got.imag))) > 1e-3
    _close(got, paths.elementwise(helmholtz, V))
    # A complex number for an input (before: TypeError in sum factorisation's input conversion).
    got = fem.assemble(library.diffusion, V, kappa=2.0 + 1.0j).values
    assert got.dtype == jnp.complex128
    _close(got, paths.elementwise(library.diffusion, V, kappa=2.0 + 1.0j))
    assert not paths.taken


@pytest.mark.parametrize("order", ["jit-of-grad", "grad-of-jit"])
def test_gradients_through_the_run_time_choice_with_held_index_arrays(order, monkeypatch, paths):
    """Past 4 MB the CSR index is read when the program runs (igax._held: an integer value of the caller's
    trace, forced here at a small size), and both run-time choices close over it; the custom JVP receives
    it as an argument. Before, lowering the rule failed (``No constant handler for type:
    DynamicJaxprTracer``), for a modulus, a coefficient and control points, affine or curved."""
    from igax import _held, _native

    if not _native.available():
        pytest.skip("native kernels unavailable")
    monkeypatch.setattr(_held, "_HELD_MIN_BYTES", 0)
    V = _parallelogram(2, n=(3, 3), shape=(2,))
    r = jnp.asarray(np.random.default_rng(11).standard_normal(V.pattern.nnz))

    def loss(E, P):
        A = fem.assemble(library.linear_elasticity(E, 0.3), V.with_geometry(control_points=P))
        return jnp.sum(A.values * r)

    for P in (V.control_points, _curved(V).control_points):
        grad = jax.grad(loss, argnums=(0, 1))
        gE, gP = jax.jit(grad)(1.3, P) if order == "jit-of-grad" else jax.grad(jax.jit(loss), (0, 1))(1.3, P)
        np.testing.assert_allclose(float(gE), float(loss(1.3, P)) / 1.3, rtol=1e-12)  # linear in E
        dP = jnp.asarray(np.random.default_rng(12).standard_normal(P.shape))
        h = 1e-6
        fd = (loss(1.3, P + h * dP) - loss(1.3, P - h * dP)) / (2 * h)
        np.testing.assert_allclose(float(jnp.vdot(gP, dP)), float(fd), rtol=1e-6)
    assert "values_traced" in paths.taken
