"""A spline space that says its weights are equal (``SplineSpace.equal_weights``, static): passed to ``jit``
(traced weights), sum-factorised assembly builds only the polynomial program (no run-time choice).

Checked: the flag (B-spline and NURBS patches, ``with_geometry`` with concrete and traced weights); that a
B-spline space passed as an argument builds the polynomial program only, a NURBS one both, in 2D and 3D,
and that both matrices equal the element-wise ones (1e-12); that weights changed past ``with_geometry``
raise (never a wrong matrix) and given through it give the rational matrix; and that the gradient w.r.t.
the space itself (control points and weights, whose derivative leaves the polynomial program) matches
central differences (1e-6) with Taylor remainders of order 2.
"""

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sumfact_vjp import _close

from igax import fem
from igax.fem import library
from igax.fem.forms import sumfact  # noqa: F401 - registers the module under its name

_SF = sys.modules["igax.fem.forms.sumfact"]


@pytest.fixture
def programs(monkeypatch):
    """The sum-factorised path at every size; returns the list of programs built (``"polynomial"`` or
    ``"rational"``, one entry per trace of ``_values``) and the element-wise matrix of a form."""
    monkeypatch.setattr(_SF, "_MIN_ENTRIES", 0)
    built = []
    real = _SF._values

    def values(form, space, fields, csr_idx, w0, *rest):
        built.append("rational" if w0 is None else "polynomial")
        return real(form, space, fields, csr_idx, w0, *rest)

    monkeypatch.setattr(_SF, "_values", values)

    def elementwise(form, V, **fields):
        with monkeypatch.context() as m:
            m.setattr(_SF, "_MIN_ENTRIES", 10**18)
            return fem.assemble(form, V, **fields).values

    return built, elementwise


def _rect(deg=3, n=(4, 3)):
    return fem.SplineSpace(fem.geometry.rectangle().refine(degree=deg, elements=n))


def _annulus(deg=2, n=(3, 4)):
    return fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=deg, elements=n))


def test_the_flag_follows_the_weights():
    V, A = _rect(), _annulus()
    assert V.equal_weights and not A.equal_weights
    assert V.with_geometry(weights=2.0 * V.weights).equal_weights  # equal, not 1: still polynomial
    assert not V.with_geometry(weights=V.weights.at[2, 1].set(1.1)).equal_weights
    assert A.with_geometry(weights=jnp.ones_like(A.weights)).equal_weights
    assert V.with_geometry(control_points=V.control_points + 0.01).equal_weights  # weights untouched
    assert not jax.jit(lambda V: jnp.asarray(V.with_geometry(weights=V.weights).equal_weights))(V)


@pytest.mark.parametrize("which", ["bspline", "nurbs"])
def test_a_space_as_argument_builds_the_polynomial_program_only_when_it_says_so(which, programs):
    """Fails on the code before the flag: a B-spline space passed to jit built the rational program too."""
    built, elementwise = programs
    V = _rect() if which == "bspline" else _annulus()
    c = jnp.asarray(np.random.default_rng(1).uniform(1.0, 2.0, V.ndofs))
    got = jax.jit(lambda V, c: fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)).values)(V, c)
    assert built == (["polynomial"] if which == "bspline" else ["polynomial", "rational"])
    _close(got, elementwise(library.diffusion, V, kappa=fem.Field(V, c)))


def test_3d_takes_it_too(programs):
    built, elementwise = programs
    V = fem.SplineSpace(fem.geometry.box().refine(degree=2, elements=(2, 2, 1)), shape=(3,))
    P = V.control_points + 0.03 * jnp.asarray(
        np.random.default_rng(2).standard_normal(V.control_points.shape)
    )
    V = V.with_geometry(control_points=P)
    form = library.linear_elasticity(1.0, 0.3, "3d")
    got = jax.jit(lambda V: fem.assemble(form, V).values)(V)
    assert built == ["polynomial"]
    _close(got, elementwise(form, V))


def test_weights_changed_past_with_geometry_raise_and_through_it_are_rational(programs):
    built, elementwise = programs
    V, w = _rect(), _annulus(3, (4, 3)).weights  # the same control net shape (7 x 6)
    f = jax.jit(lambda V: fem.assemble(library.laplace, V).values)
    bad = eqx.tree_at(lambda s: s.weights, V, w)  # the static flag still says "equal"
    assert bad.equal_weights
    with pytest.raises(Exception, match="with_geometry"):
        jax.block_until_ready(f(bad))
    built.clear()
    got = jax.jit(lambda V, w: fem.assemble(library.laplace, V.with_geometry(weights=w)).values)(V, w)
    assert built == ["polynomial", "rational"]  # traced weights through with_geometry: the run-time choice
    _close(got, elementwise(library.laplace, V.with_geometry(weights=w)))


def test_gradient_wrt_the_space_itself(programs):
    """``jax.grad`` w.r.t. a B-spline space passed whole (control points and weights, the flag kept) against
    central differences of the same loss on spaces given through ``with_geometry`` (the flag reset where
    the weights become unequal), and Taylor remainders of order 2."""
    V = _rect(3, (4, 3))
    rng = np.random.default_rng(7)
    r = jnp.asarray(rng.standard_normal(V.pattern.nnz))

    def loss(U):
        return jnp.sum(jnp.sin(fem.assemble(library.laplace, U).values) * r)

    g = jax.jit(jax.grad(loss))(V)
    assert g.equal_weights  # the cotangent has the space's structure
    L = jax.jit(lambda P, w: loss(V.with_geometry(control_points=P, weights=w)))
    for name in ("control_points", "weights"):
        x0, gx = getattr(V, name), getattr(g, name)
        dx = jnp.asarray(rng.standard_normal(x0.shape))

        def along(h, name=name, x0=x0, dx=dx):
            kw = {"P": V.control_points, "w": V.weights}
            kw["P" if name == "control_points" else "w"] = x0 + h * dx
            return float(L(kw["P"], kw["w"]))

        slope = float(jnp.vdot(gx, dx))
        fd = (along(1e-6) - along(-1e-6)) / 2e-6
        assert abs(fd - slope) <= 1e-6 * max(1.0, abs(slope)), (name, fd, slope)
        hs = np.array([2e-3, 1e-3, 5e-4])
        rem = [abs(along(h) - along(0.0) - h * slope) for h in hs]
        rates = np.diff(np.log(rem)) / np.diff(np.log(hs))
        assert np.all(np.abs(rates - 2.0) < 0.1), (name, rates)
