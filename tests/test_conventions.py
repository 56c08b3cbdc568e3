"""The point-axis convention (docs/conventions.md), pinned at every entry point.

Arrays of points are rows, ``(npts, dim)`` or ``(..., dim)``; functions of position receive ``x`` with the
coordinate axis first, ``(dim, ...)``. The domain is the rectangle [0, 2] x [0, 1], so that reading the wrong
axis gives another number (the integral of x is 2, of y is 1), and every check compares numbers.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.bases import open_uniform
from igax.fem import locate as fem_locate
from igax.inverse import PointObservation, kl_expansion
from igax.layers import spline_project

POINTS = np.array([[0.5, 0.25], [1.5, 0.75], [1.25, 0.5]])  # (npts, dim): three points as rows


def _spline():
    return fem.SplineSpace(fem.geometry.rectangle((0.0, 0.0), (2.0, 1.0)).refine(degree=2, elements=(4, 2)))


def _lagrange():
    return fem.LagrangeSpace(fem.rectangle_mesh((0.0, 0.0), (2.0, 1.0), n=(4, 2), cell="quad"))


SPACES = {"spline": _spline, "lagrange": _lagrange}


@pytest.fixture(params=list(SPACES), scope="module")
def V(request):
    return SPACES[request.param]()


@fem.functional
def _integral_of_f(w):
    return w.f


@fem.functional
def _integral_of_component_0(w):
    return w.f.value[0]


@fem.functional
def _integral_of_component_1(w):
    return w.f.value[1]


@fem.functional
def _integral_of_x0(w):
    return w.x[0]  # w.x: (dim,) in a kernel, coordinate first


def _x_field(V):
    """The field u(x) = x[0], by an L2 projection of a callable input (exact: x is in both spaces)."""
    return fem.project(lambda w: w.g, V, g=lambda x: x[0])


def test_callable_inputs_receive_the_coordinate_axis_first(V):
    # x: (dim, nel, nq); x[0] is the x-coordinate, so the integral over [0, 2] x [0, 1] is 2 (and of y, 1).
    seen = {}

    def f(x):
        seen["shape"] = x.shape
        return x[0]

    assert float(fem.assemble(_integral_of_f, V, f=f)) == pytest.approx(2.0, abs=1e-12)
    assert float(fem.assemble(_integral_of_f, V, f=lambda x: x[1])) == pytest.approx(1.0, abs=1e-12)
    nel, nq, dim = V.quadrature_points().shape
    assert seen["shape"] == (dim, nel, nq) == (2, nel, nq)
    # vector values come components first: value_shape + (nel, nq)
    xy = lambda x: jnp.stack([x[0], 3 * x[1]])
    assert float(fem.assemble(_integral_of_component_0, V, f=xy)) == pytest.approx(2.0, abs=1e-12)
    assert float(fem.assemble(_integral_of_component_1, V, f=xy)) == pytest.approx(3.0, abs=1e-12)
    assert float(fem.assemble(_integral_of_x0, V)) == pytest.approx(2.0, abs=1e-12)


def test_a_callable_written_for_rows_fails_loudly(V):
    # x[:, 0] of x (dim, nel, nq) is (dim, nq): not the (nel, nq) of values, and assembly says so.
    assert V.quadrature_points().shape[0] != 2
    with pytest.raises(ValueError, match=r"Write it with x\[0\]"):
        fem.assemble(_integral_of_f, V, f=lambda x: x[:, 0])


def test_quadrature_points_are_rows_in_the_order_callables_see_them(V):
    qp = V.quadrature_points()
    nel, nq, dim = qp.shape
    assert dim == 2 and nel == 8  # 4 x 2 elements, as rows of points
    # the same values given as an array at the quadrature points, (nel, nq), integrate to the same number
    by_array = fem.assemble(_integral_of_f, V, f=qp[..., 0])
    assert float(by_array) == pytest.approx(2.0, abs=1e-12)
    assert float(qp[..., 0].min()) >= 0.0 and float(qp[..., 0].max()) <= 2.0
    assert float(qp[..., 1].max()) <= 1.0 < float(qp[..., 0].max())


def test_field_takes_points_as_rows(V):
    u = _x_field(V)
    np.testing.assert_allclose(u(POINTS), POINTS[:, 0], atol=1e-10)
    np.testing.assert_allclose(u.grad(POINTS), np.tile([1.0, 0.0], (3, 1)), atol=1e-9)
    np.testing.assert_allclose(jax.jit(lambda p: u(p))(jnp.asarray(POINTS)), POINTS[:, 0], atol=1e-10)
    with pytest.raises(ValueError, match=r"points must have shape \(npts, 2\)"):
        u(POINTS.T)


def test_locate_takes_points_as_rows(V):
    dofs, tables = fem_locate.locate(V, POINTS)
    assert len(dofs) == 3
    np.testing.assert_allclose(np.asarray(tables.x)[:, 0], POINTS, atol=1e-12)  # the mapped points, as rows
    with pytest.raises(ValueError):
        fem_locate.locate(V, POINTS.T)


def test_point_observations_take_points_as_rows(V):
    u = _x_field(V)
    obs = PointObservation(V, POINTS)
    np.testing.assert_allclose(obs(u), POINTS[:, 0], atol=1e-10)
    with pytest.raises(ValueError, match=r"points must have shape \(npts, 2\)"):
        PointObservation(V, POINTS.T)


def test_sampling_returns_points_as_rows(V):
    u = _x_field(V)
    s = fem.sample({"u": u})
    assert s.points.ndim == 2 and s.points.shape[1] == 2
    np.testing.assert_allclose(s.point_data["u"], s.points[:, 0], atol=1e-10)
    np.testing.assert_allclose(s.points.min(axis=0), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s.points.max(axis=0), [2.0, 1.0], atol=1e-12)


def test_patches_map_parameter_points_as_rows():
    patch = fem.geometry.rectangle((0.0, 0.0), (2.0, 1.0))
    u = np.array([[0.5, 0.5], [1.0, 0.25]])  # (npts, pdim)
    np.testing.assert_allclose(patch(u), [[1.0, 0.5], [2.0, 0.25]], atol=1e-12)
    np.testing.assert_allclose(_spline().map_points(u), [[1.0, 0.5], [2.0, 0.25]], atol=1e-12)


def test_exact_solutions_and_dirichlet_data_are_functions_of_position(V):
    u = _x_field(V)
    assert float(fem.l2_error(u, lambda x: x[0])) < 1e-10
    assert float(fem.l2_error(u, lambda x: x[1])) > 0.5  # reading y instead of x is far off
    bc = fem.DirichletBC(V, "right", lambda x: x[0] * (1.0 + 0.0 * x[1]))  # x = 2 on the right side
    np.testing.assert_allclose(bc.values, 2.0, atol=1e-10)


def test_spline_project_and_kl_fields_take_the_coordinate_axis_first():
    t = open_uniform(1, 2)
    c = spline_project((t, t), 1, lambda x: x[0] + 2 * x[1])
    g = np.array([0.0, 0.5, 1.0])  # degree 1: coefficients = values at the Greville points
    np.testing.assert_allclose(c, g[:, None] + 2 * g[None, :], atol=1e-12)
    with pytest.raises(ValueError, match=r"reads x\[0\] now"):
        spline_project((t, t), 1, lambda x: x[:, 0])
    # vector values come components first, value_shape + (m,), like every function of position; the
    # coefficients have the value axes last, (n_1, n_2, 2)
    cv = spline_project((t, t), 1, lambda x: jnp.stack([x[0], 3 * x[1]]))
    np.testing.assert_allclose(cv[..., 0], np.broadcast_to(g[:, None], (3, 3)), atol=1e-12)
    np.testing.assert_allclose(cv[..., 1], np.broadcast_to(3 * g[None, :], (3, 3)), atol=1e-12)
    np.testing.assert_allclose(spline_project(t, 1, lambda x: jnp.stack([x, -x])), np.c_[g, -g], atol=1e-12)
    kl = kl_expansion(3, correlation_length=0.5, lower=(0.0, 0.0), upper=(2.0, 1.0))
    xi = jnp.array([1.0, -0.5, 0.25])
    grid = np.stack(np.meshgrid([0.1, 1.9], [0.2, 0.4, 0.6], indexing="ij"))  # (dim, 2, 3)
    values = kl.field(xi, grid)
    assert values.shape == (2, 3)
    # the same points as rows, moved once to the coordinate-first layout, give the same values
    rows = np.moveaxis(grid, 0, -1).reshape(-1, 2)
    np.testing.assert_allclose(kl.field(xi, np.moveaxis(rows, -1, 0)), np.ravel(values), atol=1e-12)
    # x and y are not interchangeable on [0, 2] x [0, 1]: swapping the axes changes the values
    assert not np.allclose(kl.field(xi, grid[::-1] * 0.5), values)
    with pytest.raises(ValueError, match=r"coordinate first"):
        kl.field(xi, POINTS)
