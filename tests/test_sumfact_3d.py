"""The 3D paths of sum-factorised assembly on curved and rational patches (igax/fem/forms/_sumfact_compact.py,
_sumfact_constant.py).

The box patches of ``test_sumfact.py`` are affine and axis-aligned, so their inverse Jacobian is diagonal and
most products of the kernel matrices ``D`` vanish. Here the control points of a degree-2 box are moved at
random (a curved polynomial patch) and its weights too (a rational one): every entry of ``D`` is then
nonzero. The sum-factorised matrices of 3D elasticity (a concrete kernel matrix, 6 of 9 component blocks
computed) and of a mass form equal the element-wise ones to 1e-12, and the gradient of a functional of the
elasticity matrix w.r.t. the control points agrees with central differences, with Taylor rate 2, and with
the JVP. A space passed to jit (traced weights) takes the run-time choice between the polynomial and the
rational program (equal to the element-wise matrix; gradients w.r.t. control points and weights, slow).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sumfact import _check_gradient, _close  # the same checks as the 2D cases

from igax import fem
from igax.fem import library
from igax.fem.forms import sumfact  # noqa: F401 - registers the module under its name

_SF = sys.modules["igax.fem.forms.sumfact"]


@pytest.fixture
def sumfact_always(monkeypatch):
    """The sum-factorised path for every size and degree (the element-wise one under ``elementwise()``)."""
    monkeypatch.setattr(_SF, "_MIN_ENTRIES", 0)
    monkeypatch.setattr(_SF, "_AFFINE", False)  # the general path (boxes are affine)
    monkeypatch.setattr(_SF, "_MIN_DEGREE", 1)

    def elementwise(form, V):
        with monkeypatch.context() as m:
            m.setattr(_SF, "_MIN_ENTRIES", 10**18)
            return fem.assemble(form, V)

    return elementwise


def _curved(rational: bool, n=(2, 3, 2), shape=(3,)):
    """A degree-2 box with moved interior and boundary control points (and random weights if rational)."""
    V = fem.SplineSpace(fem.geometry.box().refine(degree=2, elements=n), shape=shape)
    rng = np.random.default_rng(3)
    P = np.asarray(V.control_points)
    P = P + 0.04 * rng.standard_normal(P.shape)  # keeps the map regular: spacing 1 / (n + 2) >= 0.2
    kw = {"control_points": jnp.asarray(P)}
    if rational:
        kw["weights"] = jnp.asarray(rng.uniform(0.7, 1.3, np.shape(V.weights)))
    return V.with_geometry(**kw)


@pytest.mark.parametrize("rational", [False, True], ids=["polynomial", "rational"])
@pytest.mark.parametrize(
    "form, shape",
    [(library.linear_elasticity(1.0, 0.3, "3d"), (3,)), (library.mass, ())],
    ids=["elasticity", "mass"],
)
def test_curved_patches_equal_the_elementwise_matrix(form, shape, rational, sumfact_always):
    V = _curved(rational, shape=shape)
    _close(fem.assemble(form, V).values, sumfact_always(form, V).values)


def test_gradient_of_elasticity_wrt_control_points_on_a_curved_patch(sumfact_always):
    V = _curved(False, n=(2, 2, 2))
    r = jnp.asarray(np.random.default_rng(5).standard_normal(V.pattern.nnz))

    def loss(P):
        A = fem.assemble(library.linear_elasticity(1.0, 0.3, "3d"), V.with_geometry(control_points=P))
        return jnp.sum(A.values * r)

    _check_gradient(loss, (V.control_points,), taylor=(0,), jvp=True)


@pytest.mark.parametrize("rational", [False, True], ids=["polynomial", "rational"])
def test_traced_weights_choose_the_program_at_run_time(rational, sumfact_always, monkeypatch):
    """A 3D space passed to jit (traced weights) takes the run-time choice between the polynomial and the
    rational program: the matrix equals the element-wise one on both patches."""
    V = _curved(rational, n=(2, 2, 2))
    form = library.linear_elasticity(1.0, 0.3, "3d")
    calls = []
    real = _SF.weights2d.values_traced_weights
    monkeypatch.setattr(_SF.weights2d, "values_traced_weights", lambda *a: calls.append(1) or real(*a))
    got = jax.jit(lambda V: fem.assemble(form, V).values)(V)
    assert calls, "the traced-weights program was not taken"
    _close(got, sumfact_always(form, V).values)


@pytest.mark.slow  # ~50 s on 2 loaded cores, mostly compiling both programs and their derivatives
def test_gradients_with_traced_weights_wrt_control_points_and_weights(sumfact_always):
    """On a polynomial patch with traced weights (the run-time polynomial program), the gradient w.r.t. the
    control points and the weights (whose derivative leaves the polynomial program) matches central
    differences with Taylor rate 2, and the JVP."""
    V = _curved(False, n=(2, 2, 2))
    form = library.linear_elasticity(1.0, 0.3, "3d")
    r = jnp.asarray(np.random.default_rng(6).standard_normal(V.pattern.nnz))

    def loss(P, w):
        return jnp.sum(fem.assemble(form, V.with_geometry(control_points=P, weights=w)).values * r)

    _check_gradient(loss, (V.control_points, V.weights), taylor=(0, 1))
