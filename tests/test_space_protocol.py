"""The public space protocol (igax.fem.spaces.base.FunctionSpace): a space written only against it works with
assemble, Field evaluation, sampling/export and point location; an incomplete one fails with a clear error."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem.forms.library import laplace, mass
from igax.fem.locate import locate
from igax.fem.spaces.base import FunctionSpace, SpacePlan


class WrappedSpace(FunctionSpace):
    """A space that delegates every protocol method to a LagrangeSpace, touching nothing private."""

    inner: FunctionSpace

    def __init__(self, inner: FunctionSpace):
        self.inner = inner
        self.plan = inner.plan

    def build_rule(self, names):
        return self.inner.build_rule(names)

    def tables(self, rule):
        return self.inner.tables(rule)

    def sampler(self, resolution):
        return self.inner.sampler(resolution)

    def locator(self):
        return self.inner.locator()

    def tables_at(self, index, ref, points):
        return self.inner.tables_at(index, ref, points)

    def dof_coordinates(self):
        return self.inner.dof_coordinates()


@pytest.fixture(scope="module")
def spaces():
    V = fem.LagrangeSpace(fem.unit_square(4), degree=2)
    return V, WrappedSpace(V)


def _coeffs(V):
    x = np.asarray(V.dof_coordinates())
    return jnp.asarray(np.sin(2.0 * x[:, 0]) + x[:, 1] ** 2)


def test_assemble_matches_the_wrapped_space(spaces):
    V, W = spaces
    for form in (laplace, mass):
        A, B = fem.assemble(form, V), fem.assemble(form, W)
        np.testing.assert_array_equal(np.asarray(B.pattern.indices), np.asarray(A.pattern.indices))
        np.testing.assert_allclose(np.asarray(B.values), np.asarray(A.values), rtol=1e-14, atol=1e-14)
    c = _coeffs(V)
    load = fem.assemble(fem.library.source, W, f=fem.Field(W, c))
    np.testing.assert_allclose(load, fem.assemble(fem.library.source, V, f=fem.Field(V, c)), atol=1e-14)
    # integral of 1 over the unit square, and of the left boundary's length
    one = fem.Field(W, jnp.ones(W.ndofs))
    assert float(one.integrate()) == pytest.approx(1.0, abs=1e-13)
    assert float(one.integrate("left")) == pytest.approx(1.0, abs=1e-13)


def test_field_evaluation_matches(spaces):
    V, W = spaces
    c = _coeffs(V)
    pts = np.array([[0.1, 0.2], [0.5, 0.5], [0.93, 0.41]])
    u, w = fem.Field(V, c), fem.Field(W, c)
    np.testing.assert_allclose(w(pts), u(pts), atol=1e-14)
    np.testing.assert_allclose(w.grad(pts), u.grad(pts), atol=1e-13)
    # traced points go through the host callback and the space's tables_at
    got = jax.jit(lambda x: fem.Field(W, c)(x))(jnp.asarray(pts))
    np.testing.assert_allclose(got, u(pts), atol=1e-13)
    # P2 reproduces a quadratic exactly: check the numbers against the function itself
    q = lambda x: 1.0 + x[..., 0] * x[..., 1] - 0.5 * x[..., 1] ** 2  # noqa: E731
    cq = jnp.asarray(q(np.asarray(V.dof_coordinates())))
    np.testing.assert_allclose(fem.Field(W, cq)(pts), q(pts), atol=1e-13)


def test_locate_matches(spaces):
    V, W = spaces
    pts = np.array([[0.05, 0.9], [0.77, 0.13]])
    (dv, tv), (dw, tw) = locate(V, pts), locate(W, pts)
    np.testing.assert_array_equal(dw, dv)
    np.testing.assert_allclose(tw.phi, tv.phi, atol=1e-15)
    np.testing.assert_allclose(tw.x[:, 0], pts, atol=1e-14)


def test_sampling_and_export_match(spaces, tmp_path):
    V, W = spaces
    c = _coeffs(V)
    sv, sw = fem.sample(fem.Field(V, c)), fem.sample(fem.Field(W, c))
    np.testing.assert_allclose(sw.points, sv.points)
    np.testing.assert_array_equal(sw.cells, sv.cells)
    np.testing.assert_allclose(sw.point_data["u"], sv.point_data["u"], atol=1e-14)
    np.testing.assert_allclose(sw.point_data["grad_u"], sv.point_data["grad_u"], atol=1e-12)
    # Lagrange fields are sampled at their nodes: the values are the coefficients
    np.testing.assert_allclose(sw.point_data["u"], np.asarray(c), atol=1e-14)
    path = fem.write_vtu(tmp_path / "w.vtu", fem.Field(W, c))
    assert (tmp_path / "w.vtu").exists() and str(path).endswith("w.vtu")


def test_dirichlet_and_scalar_companion(spaces):
    V, W = spaces
    bc = fem.DirichletBC(W, "left", 2.0)
    np.testing.assert_array_equal(bc.dofs, V.boundary("left"))
    np.testing.assert_allclose(bc.values, 2.0)
    assert W.scalar() is W
    V2 = fem.LagrangeSpace(fem.unit_square(2), degree=1, shape=(2,))
    S = V2.scalar()
    assert S.value_shape == () and S.ndofs == V2.ndofs // 2 and S.scalar() is S
    assert V2.scalar().plan is S.plan  # built once per plan
    np.testing.assert_allclose(
        np.asarray(fem.assemble(mass, S).values),
        np.asarray(fem.assemble(mass, fem.LagrangeSpace(fem.unit_square(2), degree=1)).values),
        atol=1e-15,
    )
    # the scalar companion shares the geometry leaves (derivatives reach it)
    assert S.points is V2.points


def test_incomplete_space_names_the_missing_methods():
    class Half(FunctionSpace):
        def build_rule(self, names):
            raise AssertionError

        def tables(self, rule):
            raise AssertionError

    with pytest.raises(TypeError, match="abstract") as err:
        Half()
    for name in ("sampler", "locator", "tables_at"):
        assert name in str(err.value)


def test_protocol_defaults():
    class Minimal(FunctionSpace):
        def __init__(self, plan):
            self.plan = plan

        build_rule = tables = sampler = locator = tables_at = lambda self, *a: None

    plan = SpacePlan(
        kind="test",
        partition_key="test",
        dim=1,
        pdim=1,
        value_shape=(),
        cell_dofs=np.array([[0, 1], [1, 2]]),
        nscalar=3,
        boundary_dofs={"ends": [0, 2]},
    )
    S = Minimal(plan)
    rule = S.quadrature_rule  # bound: the cache goes through build_rule
    assert rule() is None
    assert S.chunked_tables(None) is None and S.host_tables(None) is None
    assert S.default_resolution() == 1 and not S.nodal
    assert S.same_geometry(Minimal(plan)) and S.check_names(None) == ("ends",)
    assert eqx.tree_equal(S, S)
