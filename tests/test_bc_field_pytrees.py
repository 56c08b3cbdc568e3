"""DirichletBC and Field are pytrees: arrays are leaves, the space's plan and the constrained dofs are static;
both cross jax.jit, jax.grad and jax.vmap as arguments."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem.forms.library import laplace, mass


@pytest.fixture(scope="module")
def setup():
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=4))
    A = fem.assemble(laplace, V) + fem.assemble(mass, V)
    x = np.asarray(V.quadrature_points().reshape(-1, 2))
    c = jnp.asarray(np.linspace(0.0, 1.0, V.ndofs) ** 2)
    return V, A, c, x


def _loss(bc, u, A):
    Ac, bc_rhs = bc.condense(A, u.coeffs)
    return jnp.sum(bc_rhs**2) + jnp.sum(Ac.values) * u.integrate() + jnp.sum(bc.expand(u.coeffs) ** 3)


def test_tree_leaves_are_exactly_the_arrays(setup):
    V, _, c, _ = setup
    u = fem.Field(V, c)
    leaves = jax.tree_util.tree_leaves(u)
    geometry = jax.tree_util.tree_leaves(V)
    assert len(leaves) == len(geometry) + 1 and leaves[-1] is u.coeffs
    assert all(isinstance(a, jax.Array) for a in leaves)
    bc = fem.DirichletBC(V, "inner", u)
    leaves = jax.tree_util.tree_leaves(bc)
    assert len(leaves) == len(geometry) + 1 and leaves[-1] is bc.values
    assert all(isinstance(a, jax.Array) for a in leaves)
    # the structure holds the static data: equal conditions have equal structures (one compilation)
    again = fem.DirichletBC(V, "inner", 2.0 * u.coeffs[bc.dofs])
    assert jax.tree_util.tree_structure(again) == jax.tree_util.tree_structure(bc)
    other = fem.DirichletBC(V, "outer", 0.0)
    assert jax.tree_util.tree_structure(other) != jax.tree_util.tree_structure(bc)
    rebuilt = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(bc), jax.tree_util.tree_leaves(bc))
    np.testing.assert_array_equal(rebuilt.dofs, bc.dofs)
    assert rebuilt.names == bc.names and rebuilt.space.plan is V.plan


def test_jit_with_bc_and_field_arguments_equals_eager(setup):
    V, A, c, x = setup
    u = fem.Field(V, c)
    bc = fem.DirichletBC(V, ["inner", "outer"], lambda x: x[0] * x[1])
    eager = _loss(bc, u, A)
    traces = []

    @jax.jit
    def f(bc, u):
        traces.append(1)
        return _loss(bc, u, A)

    np.testing.assert_allclose(f(bc, u), eager, rtol=1e-13)
    bc2 = fem.DirichletBC(V, ["inner", "outer"], lambda x: x[0] - x[1])  # same dofs, new values
    np.testing.assert_allclose(f(bc2, u), _loss(bc2, u, A), rtol=1e-13)
    assert len(traces) == 1  # the dofs are static data compared by value: no retrace
    # Field evaluation at points inside jit, with the Field an argument
    np.testing.assert_allclose(jax.jit(lambda u: u(x[:5]))(u), u(x[:5]), atol=1e-13)


def test_grad_through_bc_and_field_matches_the_coefficient_path(setup):
    V, A, c, _ = setup

    def by_coeffs(c):
        u = fem.Field(V, c)
        return _loss(fem.DirichletBC(V, "inner", u), u, A)

    want = jax.grad(by_coeffs)(c)
    bc = fem.DirichletBC(V, "inner", fem.Field(V, c))

    # with respect to the Field and the condition's values as arguments: the chain rule gives back want
    gu, gbc = jax.jit(jax.grad(lambda u, bc: _loss(bc, u, A), argnums=(0, 1)))(fem.Field(V, c), bc)
    assert isinstance(gu, fem.Field) and isinstance(gbc, fem.DirichletBC)
    total = gu.coeffs.at[bc.dofs].add(gbc.values)  # bc.values = c[bc.dofs] (the Field on its own space)
    np.testing.assert_allclose(total, want, rtol=1e-10, atol=1e-12)
    # finite differences in one coefficient
    i, h = int(bc.dofs[1]), 1e-6
    fd = (by_coeffs(c.at[i].add(h)) - by_coeffs(c.at[i].add(-h))) / (2 * h)
    assert float(want[i]) == pytest.approx(float(fd), rel=1e-6)


def test_vmap_over_a_batch_of_fields_and_conditions(setup):
    V, A, c, x = setup
    u = fem.Field(V, c)
    bc = fem.DirichletBC(V, "inner", 1.0)
    scales = jnp.array([0.5, 1.0, 3.0])
    C = scales[:, None] * c[None, :]
    batch = eqx.tree_at(lambda f: f.coeffs, u, C)  # stacked coefficient leaves
    axes = eqx.tree_at(lambda f: f.coeffs, jax.tree.map(lambda _: None, u), 0, is_leaf=lambda a: a is None)
    got = jax.vmap(lambda f: f.integrate(), in_axes=(axes,))(batch)
    np.testing.assert_allclose(got, scales * u.integrate(), rtol=1e-13)
    vals = jax.vmap(lambda f: f(x[:4]), in_axes=(axes,))(batch)
    np.testing.assert_allclose(vals, scales[:, None] * u(x[:4])[None], atol=1e-13)
    # a batch of boundary values: stacked values, the rest shared
    bcs = eqx.tree_at(lambda b: b.values, bc, scales[:, None] * bc.values[None, :])
    bc_axes = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(bc), [None] * (len(jax.tree_util.tree_leaves(bc)) - 1) + [0]
    )
    out = jax.vmap(lambda b: b.expand(jnp.zeros(V.ndofs)), in_axes=(bc_axes,))(bcs)
    np.testing.assert_allclose(out[:, bc.dofs], scales[:, None] * np.ones(len(bc.dofs)))
    assert float(jnp.abs(out).sum()) == pytest.approx(float(scales.sum()) * len(bc.dofs))
