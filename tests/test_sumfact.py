"""Sum-factorised spline assembly and the matrix-free operator (igax.fem.forms.sumfact,
igax.fem.forms.matrix_free).

Both are checked against the element-wise assembly on small meshes: the matrices agree to 1e-12 (relative to
the largest entry) for every form family and degree, the operator's products and diagonal agree with the
assembled matrix's, gradients w.r.t. coefficient Fields and control points agree with central finite
differences and have Taylor remainders of order 2, and the dispatch rule of ``fem.assemble`` takes the path
where it should.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import igax
from igax import fem
from igax.fem import library
from igax.fem.forms import sumfact

_SF = sys.modules["igax.fem.forms.sumfact"]
_rng = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def _seeded():
    """The same random data in every test, whatever runs before it."""
    global _rng
    _rng = np.random.default_rng(7)


@pytest.fixture
def elementwise(monkeypatch):
    """``fem.assemble`` on the element-wise path only."""

    def run(form, V, **inputs):
        with monkeypatch.context() as m:
            m.setattr(_SF, "_MIN_ENTRIES", 10**18)
            return fem.assemble(form, V, **inputs)

    return run


@pytest.fixture
def factorised(monkeypatch):
    """``fem.assemble`` taking the sum-factorised path whenever it applies (any size and degree)."""
    monkeypatch.setattr(_SF, "_MIN_ENTRIES", 0)
    monkeypatch.setattr(_SF, "_AFFINE", False)  # the general path (boxes are affine)
    monkeypatch.setattr(_SF, "_MIN_DEGREE", 1)
    return fem.assemble


def _close(A, B, rtol=1e-12):
    a, b = np.asarray(A), np.asarray(B)
    assert a.shape == b.shape
    err = np.max(np.abs(a - b)) / np.max(np.abs(b))
    assert err <= rtol, f"relative difference {err:.2e} > {rtol:.0e}"


def _annulus(deg, n=(3, 4), shape=()):
    return fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=deg, elements=n), shape=shape)


def _field(V, lo=1.0, hi=2.0):
    return fem.Field(V, jnp.asarray(_rng.uniform(lo, hi, V.ndofs)))


# (space, form, inputs): the form families of the issue on polynomial and rational patches, degrees 1-4.
CASES = {
    "laplace-rectangle-p1": (
        lambda: fem.SplineSpace(fem.geometry.rectangle().refine(1, (5, 4))),
        library.laplace,
        {},
    ),
    "laplace-annulus-p4": (lambda: _annulus(4), library.laplace, {}),
    "mass-annulus-p3": (lambda: _annulus(3), library.mass, {}),
    "diffusion-field-annulus-p2": (lambda: _annulus(2), library.diffusion, {"kappa": "field"}),
    "diffusion-callable-plate-p3": (  # a repeated interior knot: empty virtual elements
        lambda: fem.SplineSpace(fem.geometry.plate_with_hole().refine(degree=3, elements=(4, 3))),
        library.diffusion,
        {"kappa": lambda x: 1.0 + x[0] ** 2},
    ),
    "elasticity2d-annulus-p2": (lambda: _annulus(2, shape=(2,)), library.linear_elasticity(1.0, 0.3), {}),
    "elasticity2d-rectangle-p4": (
        lambda: fem.SplineSpace(fem.geometry.rectangle().refine(4, (3, 2)), shape=(2,)),
        library.linear_elasticity(2.0, 0.25),
        {},
    ),
    "elasticity3d-box-p1": (
        lambda: fem.SplineSpace(fem.geometry.box().refine(1, (3, 2, 4)), shape=(3,)),
        library.linear_elasticity(1.0, 0.3, "3d"),
        {},
    ),
    "elasticity3d-box-p2": (
        lambda: fem.SplineSpace(fem.geometry.box().refine(2, (2, 3, 2)), shape=(3,)),
        library.linear_elasticity(1.0, 0.3, "3d"),
        {},
    ),
}


def _inputs(V, spec):
    return {k: _field(V) if v == "field" else v for k, v in spec.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_factorised_matrix_equals_the_elementwise_one(case, elementwise):
    make, form, spec = CASES[case]
    V = make()
    inputs = _inputs(V, spec)
    A = sumfact.assemble_factorised(form, V, inputs, force=True)
    B = elementwise(form, V, **inputs)
    assert A.pattern == B.pattern and A.symmetric == B.symmetric
    _close(A.values, B.values)


@pytest.mark.slow
@pytest.mark.parametrize("deg", [1, 2, 3, 4])
@pytest.mark.parametrize("family", ["laplace", "mass", "diffusion", "elasticity2d", "elasticity3d"])
def test_every_family_and_degree(family, deg, elementwise):
    if family == "elasticity3d":
        V = fem.SplineSpace(fem.geometry.box().refine(max(deg, 1), (2, 2, 3)), shape=(3,))
        form, inputs = library.linear_elasticity(1.0, 0.3, "3d"), {}
    else:
        V = _annulus(max(deg, 2), shape=(2,) if family == "elasticity2d" else ())
        form = {
            "laplace": library.laplace,
            "mass": library.mass,
            "diffusion": library.diffusion,
            "elasticity2d": library.linear_elasticity(1.0, 0.3),
        }[family]
        inputs = {"kappa": _field(V)} if family == "diffusion" else {}
    _close(
        sumfact.assemble_factorised(form, V, inputs, force=True).values, elementwise(form, V, **inputs).values
    )


def test_inputs_of_every_kind(elementwise):
    # A Field on a space of another degree (same knot spans), values at the quadrature points, a constant
    # array, and a kernel that reads the points.
    V = _annulus(3, n=(4, 3))
    W = _annulus(2, n=(4, 3))
    kappa = _field(W)
    q = jnp.asarray(_rng.uniform(1.0, 2.0, V.quadrature_points().shape[:2]))

    @fem.bilinear_form
    def form(u, v, w):
        return (w.k * w.q + w.x[0] * w.x[1]) * jnp.dot(u.grad, v.grad) + w.b[0] * u.value * v.value

    inputs = {"k": kappa, "q": q, "b": jnp.array([0.5, 2.0])}
    _close(
        sumfact.assemble_factorised(form, V, inputs, force=True).values, elementwise(form, V, **inputs).values
    )


def test_assemble_dispatches_by_the_rule(monkeypatch, elementwise):
    calls = []
    real = _SF._values_jit
    monkeypatch.setattr(_SF, "_values_jit", lambda *a: calls.append(1) or real(*a))
    V = _annulus(2, n=(4, 4))
    fem.assemble(library.laplace, V)  # below the entry count: element-wise
    assert not calls
    monkeypatch.setattr(_SF, "_MIN_ENTRIES", 0)
    monkeypatch.setattr(_SF, "_AFFINE", False)  # the general path (boxes are affine)
    A = fem.assemble(library.laplace, V)
    assert calls
    _close(A.values, elementwise(library.laplace, V).values)
    # Not taken: degree 1, glued seams (a closed annulus), boundary integrals.
    calls.clear()
    fem.assemble(library.laplace, fem.SplineSpace(fem.geometry.rectangle().refine(1, 4)))
    ring = fem.SplineSpace(fem.geometry.annulus().refine(degree=2, elements=(2, 6)))
    _close(fem.assemble(library.laplace, ring).values, elementwise(library.laplace, ring).values)
    fem.assemble(library.mass, V, boundary="outer")
    assert not calls


def test_symmetric_flag_is_still_verified(factorised):
    @fem.bilinear_form(symmetric=True)
    def skew(u, v, w):
        return u.grad[0] * v.value

    with pytest.raises(ValueError, match="symmetric=True"):
        factorised(skew, _annulus(2))


def test_constant_symmetric_kernels_need_no_run_time_symmetry_check(factorised):
    # A constant kernel matrix verified symmetric on the host gives a symmetric matrix by construction: the
    # compiled assembly holds no run-time check (a host callback), and the matrix is symmetric to rounding.
    # A kernel that reads an input still gets the check, until an eager assembly has verified it.
    cases = [(library.laplace, _annulus(2)), (library.linear_elasticity(1.0, 0.3), _annulus(2, shape=(2,)))]
    for form, V in cases:
        jaxpr = str(jax.make_jaxpr(lambda V=V, form=form: factorised(form, V).values)())
        assert "callback" not in jaxpr
        A = factorised(form, V).todense()
        np.testing.assert_allclose(A, A.T, rtol=0, atol=1e-14 * np.abs(A).max())

    @fem.bilinear_form(symmetric=True)
    def weighted(u, v, w):
        return w.k * jnp.dot(u.grad, v.grad)

    V = _annulus(3, n=(3, 3))
    jaxpr = str(jax.make_jaxpr(lambda k: factorised(weighted, V, k=k).values)(1.0))
    assert "callback" in jaxpr


def _check_gradient(loss, args, taylor=(), jvp: bool = False):
    """``jax.grad`` of ``loss(*args)`` w.r.t. each argument against central differences (step 1e-6), the
    Taylor remainder's rate (2) for the arguments listed in ``taylor``, and optionally the JVP."""
    f = jax.jit(loss)
    grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))(*args)
    for i, (x0, g) in enumerate(zip(args, grads, strict=True)):
        dx = jnp.asarray(_rng.standard_normal(np.shape(x0)))

        def along(h, i=i, x0=x0, dx=dx):
            return f(*args[:i], x0 + h * dx, *args[i + 1 :])

        slope = float(jnp.vdot(g, dx))
        fd = (along(1e-6) - along(-1e-6)) / 2e-6
        assert abs(fd - slope) <= 1e-6 * max(1.0, abs(slope)), (i, fd, slope)
        if i in taylor:
            hs = np.array([2e-3, 1e-3, 5e-4])
            rem = [abs(along(h) - along(0.0) - h * slope) for h in hs]
            rates = np.diff(np.log(rem)) / np.diff(np.log(hs))
            assert np.all(np.abs(rates - 2.0) < 0.1), (i, rates)
        if jvp:
            _, t = jax.jvp(lambda x, i=i: loss(*args[:i], x, *args[i + 1 :]), (x0,), (dx,))
            assert abs(float(t) - slope) <= 1e-10 * max(1.0, abs(slope))


def test_gradients_wrt_a_coefficient_field_and_the_control_points(factorised):
    V = _annulus(2, n=(4, 5))
    r = jnp.asarray(_rng.standard_normal(V.pattern.nnz))

    def loss(c, P):
        W = V.with_geometry(control_points=P)
        A = factorised(library.diffusion, W, kappa=fem.Field(W, c))
        return jnp.sum(jnp.sin(A.values) * r)

    _check_gradient(loss, (jnp.asarray(_rng.uniform(1.0, 2.0, V.ndofs)), V.control_points), taylor=(0, 1))


@pytest.mark.slow
def test_gradient_of_vector_elasticity_wrt_control_points(factorised):
    V = _annulus(2, n=(3, 3), shape=(2,))
    r = jnp.asarray(_rng.standard_normal(V.pattern.nnz))

    def loss(P):
        A = factorised(library.linear_elasticity(1.0, 0.3), V.with_geometry(control_points=P))
        return jnp.sum(A.values * r)

    _check_gradient(loss, (V.control_points,), taylor=(0,), jvp=True)


def test_vmap_over_coefficients(factorised):
    V = _annulus(2, n=(3, 4))
    cs = jnp.asarray(_rng.uniform(1.0, 2.0, (3, V.ndofs)))
    batched = jax.vmap(lambda c: factorised(library.diffusion, V, kappa=fem.Field(V, c)).values)(cs)
    for i in range(3):
        _close(batched[i], factorised(library.diffusion, V, kappa=fem.Field(V, cs[i])).values)


# -- the matrix-free operator ----------------------------------------------------------------------------
OPERATOR_CASES = [
    "laplace-rectangle-p1",
    "mass-annulus-p3",
    "diffusion-field-annulus-p2",
    "diffusion-callable-plate-p3",
    "elasticity2d-annulus-p2",
    "elasticity3d-box-p2",
]


@pytest.mark.parametrize("case", OPERATOR_CASES)
def test_operator_product_and_diagonal_equal_the_assembled_matrix(case, elementwise):
    make, form, spec = CASES[case]
    V = make()
    inputs = _inputs(V, spec)
    A = elementwise(form, V, **inputs)
    op = fem.operator(form, V, **inputs)
    assert op.shape == A.shape
    X = jnp.asarray(_rng.standard_normal((2, V.ndofs)))
    _close(op.matvec(X[0]), A @ X[0])
    _close(op @ X[1], A @ X[1])
    _close(jax.vmap(op)(X), jax.vmap(lambda x: A @ x)(X))
    _close(op.diagonal(), A.diagonal())


def test_operator_in_cg_with_jacobi_solves_like_the_direct_solver():
    V = _annulus(3, n=(6, 6))
    kappa = _field(V)
    A = fem.operator(library.diffusion, V, kappa=kappa)
    M = fem.assemble(library.diffusion, V, kappa=kappa)
    b = fem.assemble(library.source, V, f=1.0)
    free = np.setdiff1d(np.arange(V.ndofs), V.boundary())  # homogeneous Dirichlet on the whole boundary

    def matvec(y):  # the condensed operator on the free dofs
        return A.matvec(jnp.zeros(V.ndofs).at[free].set(y))[free]

    res = igax.solvers.iterative.cg(matvec, b[free], lambda r: r / A.diagonal()[free], rtol=1e-12)
    assert int(res.status) == 0
    ref = fem.solve(M, b, bc=fem.DirichletBC(V, None, 0.0)).coeffs[free]
    _close(res.x, ref, rtol=1e-9)
    # jacobi() takes the operator itself (it reads A.diagonal()): a mass matrix, SPD without conditions.
    Mop = fem.operator(library.mass, V)
    x = jnp.asarray(_rng.standard_normal(V.ndofs))
    res2 = igax.solvers.iterative.cg(
        Mop.matvec, Mop.matvec(x), igax.solvers.iterative.jacobi(Mop), rtol=1e-12
    )
    assert int(res2.status) == 0
    _close(res2.x, x, rtol=1e-8)


def test_operator_gradients():
    # In x (linear), in a coefficient Field and in the control points, through one program.
    V = _annulus(2, n=(4, 4), shape=(2,))
    S = _annulus(2, n=(4, 4))  # the coefficient's scalar space (same geometry)
    r = jnp.asarray(_rng.standard_normal(V.ndofs))

    @fem.bilinear_form
    def scaled(u, v, w):
        return w.E * jnp.sum(u.grad * v.grad) + u.value[0] * v.value[0]

    def loss(x, c, P):
        op = fem.operator(
            scaled, V.with_geometry(control_points=P), E=fem.Field(S.with_geometry(control_points=P), c)
        )
        return jnp.sum(jnp.sin(op.matvec(x)) * r)

    args = (
        jnp.asarray(_rng.standard_normal(V.ndofs)),
        jnp.asarray(_rng.uniform(1.0, 2.0, S.ndofs)),
        V.control_points,
    )
    _check_gradient(loss, args, taylor=(0, 1, 2))


def test_operator_refuses_what_it_cannot_apply():
    V = _annulus(2)
    with pytest.raises(TypeError, match="bilinear form"):
        fem.operator(library.source, V, f=1.0)
    with pytest.raises(ValueError, match="boundary form"):
        fem.operator(library.robin, V, alpha=1.0)
    ring = fem.SplineSpace(fem.geometry.annulus().refine(degree=2, elements=(2, 6)))
    with pytest.raises(ValueError, match="single-patch SplineSpace"):
        fem.operator(library.laplace, ring)
    with pytest.raises(ValueError, match="shape"):
        fem.operator(library.laplace, V).matvec(jnp.zeros(V.ndofs + 1))
