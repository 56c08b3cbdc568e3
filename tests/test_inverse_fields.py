"""Observation operators and field regularisers on the quarter annulus against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem, inverse
from igax.fem import library
from igax.inverse.observations import (
    PointObservation,
    SubdomainIntegral,
    add_noise,
    boundary_flux,
    reaction_flux,
)

AREA = 3 * np.pi / 4  # quarter annulus 1 <= r <= 2


@pytest.fixture(scope="module")
def V():
    return fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(4, 4)))


def coordinate(V, k):
    # isoparametric: the control-point coordinates are the coefficients of the field x_k, exactly
    return fem.Field(V, jnp.asarray(V.control_points)[..., k].ravel())


def test_point_observation_is_exact_for_the_geometry_field(V):
    pts = np.array([[1.2, 0.5], [0.3, 1.5], [1.0, 1.0], [1.9, 0.1]])
    obs = PointObservation(V, pts)
    np.testing.assert_allclose(obs(coordinate(V, 0)), pts[:, 0], atol=1e-12)
    np.testing.assert_allclose(obs(coordinate(V, 1).coeffs), pts[:, 1], atol=1e-12)
    np.testing.assert_allclose(obs.matrix() @ np.asarray(coordinate(V, 1).coeffs), pts[:, 1], atol=1e-12)
    # linear in the coefficients, so its gradient is the row sum of the operator matrix
    g = jax.grad(lambda c: jnp.sum(obs(c)))(jnp.zeros(V.ndofs))
    np.testing.assert_allclose(g, np.asarray(obs.matrix().sum(axis=0)).ravel(), atol=1e-14)
    # vector fields: one row of values per point
    V2 = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(4, 4)), shape=(2,))
    both = jnp.concatenate([coordinate(V, 0).coeffs, coordinate(V, 1).coeffs])
    np.testing.assert_allclose(PointObservation(V2, pts)(both), pts, atol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        PointObservation(V, np.array([[0.1, 0.1]]))
    with pytest.raises(ValueError, match="shape"):
        PointObservation(V, np.array([1.0, 1.0]))


def test_subdomain_integrals_and_fluxes(V):
    one = fem.Field(V, jnp.ones(V.ndofs))
    si = SubdomainIntegral(V, [lambda x: 1.0 + 0.0 * x[0], lambda x: x[0]])
    # int 1 = area; int x = int int r cos(t) r dr dt = 7/3 (rational geometry: Gauss is not exact)
    np.testing.assert_allclose(si(one), [AREA, 7 / 3], rtol=1e-7)

    @jax.jit
    def fluxes(cx):
        x = fem.Field(V, cx)
        A = fem.assemble(library.laplace, V)
        b = fem.assemble(library.source, V, f=3.0)
        u = fem.solve(A, b, bc=fem.DirichletBC(V, None, 0.0))
        return (
            boundary_flux(x, "outer"),
            boundary_flux(x, list(V.boundary_names)),
            reaction_flux(A, b, u, V.boundary()),
        )

    outer, total, reaction = fluxes(coordinate(V, 0).coeffs)
    # flux of grad x through the outer arc: int cos(t) * 2 dt = 2; through the whole boundary: 0
    assert float(outer) == pytest.approx(2.0, rel=1e-7)
    assert float(total) == pytest.approx(0.0, abs=1e-7)
    # the consistent (reaction) flux of a Poisson solution equals -int f
    assert float(reaction) == pytest.approx(-3.0 * AREA, rel=1e-7)


def test_add_noise_is_reproducible_and_scaled():
    clean = jnp.linspace(-2.0, 1.0, 20000)
    d1, s1 = add_noise(clean, 0.01, seed=3)
    d2, _ = add_noise(clean, 0.01, seed=3)
    np.testing.assert_array_equal(d1, d2)
    assert s1 == pytest.approx(0.02)
    assert float(jnp.std(d1 - clean)) == pytest.approx(0.02, rel=0.03)
    _, s = add_noise(clean, 0.5, relative=False)
    assert s == 0.5
    with pytest.raises(ValueError, match="level"):
        add_noise(clean, -1.0)


def test_field_regularisers_closed_forms(V):
    @jax.jit
    def values(c1, cx):
        one, x = fem.Field(V, c1), fem.Field(V, cx)
        return (
            inverse.field_l2(one),
            inverse.field_l2(one, reference=1.0),
            inverse.field_h1_seminorm(one),
            inverse.field_h1_seminorm(x),
            inverse.field_total_variation(x, eps=1e-8),
        )

    c1, cx = jnp.ones(V.ndofs), coordinate(V, 0).coeffs
    l2_one, l2_zero, h1_one, h1_x, tv_x = (float(v) for v in values(c1, cx))
    assert l2_one == pytest.approx(AREA / 2, rel=1e-7)
    assert l2_zero == pytest.approx(0.0, abs=1e-14)
    assert h1_one == pytest.approx(0.0, abs=1e-14)
    assert h1_x == pytest.approx(AREA / 2, rel=1e-7)
    assert tv_x == pytest.approx(AREA, rel=1e-7)  # |grad x| = 1, up to the smoothing eps
    # the precomputed quadratic forms agree with the integrals
    assert float(inverse.tikhonov(V, "l2")(c1)) == pytest.approx(AREA / 2, rel=1e-7)
    assert float(inverse.tikhonov(V, "h1")(cx)) == pytest.approx(AREA / 2, rel=1e-7)
    reg = inverse.tikhonov(V, "h1full", reference=jnp.ones(V.ndofs), weight=2.0)
    assert float(reg(c1)) == pytest.approx(0.0, abs=1e-14)
    z = jnp.asarray(np.random.default_rng(0).standard_normal(V.ndofs))
    res = inverse.taylor_test(lambda c: inverse.field_total_variation(fem.Field(V, c), eps=0.1), z)
    assert res.rate1 == pytest.approx(2.0, abs=0.1)
    with pytest.raises(ValueError, match="kind"):
        inverse.tikhonov(V, "h2")
