"""Field sampling and output: values against independent references, meshio round trips, time series."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import jax.numpy as jnp
import meshio
import numpy as np
import pytest
from scipy.interpolate import NdBSpline

from igax import fem
from igax.fem.output import export


def _spline_reference(space, coeffs, u):
    """Value, physical gradient and point of a NURBS field at parameters u, from scipy's B-splines."""
    p = space.plan
    d = p.pdim
    w = np.asarray(space.weights)
    P = np.asarray(space.control_points)
    c = np.asarray(coeffs).reshape(p.shape)

    def spl(arr, nu):
        return NdBSpline(tuple(p.knots), arr, tuple(p.degrees))(u, nu=nu)

    zero = (0,) * d
    units = [tuple(int(k == j) for k in range(d)) for j in range(d)]
    W, dW = spl(w, zero), np.stack([spl(w, e) for e in units], -1)
    N, dN = spl(w * c, zero), np.stack([spl(w * c, e) for e in units], -1)
    val = N / W
    dval = (dN - val[:, None] * dW) / W[:, None]  # (npts, pdim)
    x = np.stack([spl(w * P[..., i], zero) for i in range(p.dim)], -1) / W[:, None]
    dX = np.stack([np.stack([spl(w * P[..., i], e) for e in units], -1) for i in range(p.dim)], 1)
    J = (dX - x[:, :, None] * dW[:, None, :]) / W[:, None, None]  # (npts, dim, pdim)
    grad = np.linalg.solve(np.transpose(J, (0, 2, 1)), dval[..., None])[..., 0]
    return val, grad, x


@pytest.fixture(scope="module")
def annulus_field():
    geo = fem.geometry.quarter_annulus().refine(degree=3, elements=(3, 2))
    V = fem.SplineSpace(geo)
    coeffs = np.random.default_rng(0).standard_normal(V.ndofs)
    return fem.Field(V, jnp.asarray(coeffs))


def test_spline_sampling_matches_scipy_reference(annulus_field):
    u = annulus_field
    s = export.sample(u, resolution=3)
    assert s.grid_shape == (3 * 3 + 1, 3 * 2 + 1) and s.cell_type == "quad"
    assert s.cells.shape == (9 * 6, 4)
    val, grad, x = _spline_reference(u.space, u.coeffs, s.parameters)
    np.testing.assert_allclose(s.points, x, atol=1e-12)
    np.testing.assert_allclose(s.point_data["u"], val, atol=1e-12)
    np.testing.assert_allclose(s.point_data["grad_u"], grad, atol=1e-10)
    # The domain is the annulus 1 <= r <= 2: every sample point lies in it, the corners are exact.
    r = np.linalg.norm(s.points, axis=1)
    assert r.min() == pytest.approx(1.0, abs=1e-12) and r.max() == pytest.approx(2.0, abs=1e-12)
    # Knot lines: 4 + 3 lines, each cut into 3 segments per element it crosses.
    assert s.edges.shape == (4 * 6 + 3 * 9, 2)


def test_write_vtu_round_trip_with_vector_field(tmp_path, annulus_field):
    u = annulus_field
    Vv = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=3, elements=(3, 2)), shape=(2,))
    cv = np.random.default_rng(1).standard_normal(Vv.ndofs)
    disp = fem.Field(Vv, jnp.asarray(cv))
    path = tmp_path / "fields.vtu"
    export.write_vtu(path, {"u": u, "disp": disp}, resolution=2)
    back = meshio.read(path)
    s = export.sample({"u": u, "disp": disp}, resolution=2)
    np.testing.assert_array_equal(back.points[:, :2], s.points)
    np.testing.assert_array_equal(back.points[:, 2], 0.0)
    np.testing.assert_array_equal(back.cells_dict["quad"], s.cells)
    val, grad, _ = _spline_reference(u.space, u.coeffs, s.parameters)
    np.testing.assert_allclose(back.point_data["u"], val, atol=1e-12)
    np.testing.assert_allclose(back.point_data["grad_u"][:, :2], grad, atol=1e-10)
    for c in range(2):  # each component is the scalar NURBS field of its coefficients
        vc, gc, _ = _spline_reference(u.space, cv.reshape(2, -1)[c], s.parameters)
        np.testing.assert_allclose(back.point_data["disp"][:, c], vc, atol=1e-12)
        np.testing.assert_allclose(back.point_data["grad_disp"][:, 2 * c : 2 * c + 2], gc, atol=1e-10)
    np.testing.assert_array_equal(back.point_data["disp"][:, 2], 0.0)  # 2-vectors padded for VTK


def test_3d_vector_spline_field_against_patch_evaluation():
    geo = fem.geometry.thick_quarter_cylinder().refine(degree=2, elements=2)
    V = fem.SplineSpace(geo, shape=(3,))
    c = np.random.default_rng(2).standard_normal(V.ndofs)
    s = export.sample(fem.Field(V, jnp.asarray(c)), resolution=2)
    assert s.cell_type == "hexahedron" and s.grid_shape == (5, 5, 5)
    np.testing.assert_allclose(s.points, np.asarray(geo.evaluate(s.parameters)), atol=1e-12)
    # A field of a spline space is the NURBS map whose control points are its coefficients.
    cp = c.reshape(3, *V.plan.shape).transpose(1, 2, 3, 0)
    field_patch = type(geo)(geo.knots, geo.degrees, cp, geo.weights)
    np.testing.assert_allclose(s.point_data["u"], np.asarray(field_patch.evaluate(s.parameters)), atol=1e-12)
    vol = _volumes(s.points, s.cells[:, [0, 1, 3, 4]])  # corner tetrahedra: one orientation everywhere
    assert np.all(vol > 0) or np.all(vol < 0)


def _volumes(points, tets):
    e = points[tets[:, 1:]] - points[tets[:, :1]]
    return np.linalg.det(e) / 6.0


def _poly(x):
    """A quadratic polynomial (reproduced exactly by P2/Q2) and its gradient."""
    if x.shape[1] == 2:
        v = 1 + 2 * x[:, 0] - x[:, 1] + 3 * x[:, 0] * x[:, 1] - x[:, 0] ** 2
        g = np.stack([2 + 3 * x[:, 1] - 2 * x[:, 0], -1 + 3 * x[:, 0]], 1)
    else:
        v = 1 + x[:, 0] - 2 * x[:, 2] + x[:, 0] * x[:, 1] + 0.5 * x[:, 2] ** 2
        g = np.stack([1 + x[:, 1], x[:, 0], -2 + x[:, 2]], 1)
    return v, g


@pytest.mark.parametrize(
    "cell,degree,nsub",
    [("triangle", 1, 1), ("triangle", 2, 4), ("quad", 2, 4), ("tetra", 2, 8), ("hexahedron", 2, 8)],
)
def test_lagrange_sampling_is_exact_at_nodes(cell, degree, nsub):
    mesh = fem.unit_square(3, cell=cell) if cell in ("triangle", "quad") else fem.unit_cube(2, cell=cell)
    # Move the interior nodes so cells are not all alike (affine cells still: Jacobians vary per cell).
    inner = np.all((mesh.points > 0) & (mesh.points < 1), axis=1)[:, None]
    pts = mesh.points + 0.04 * np.sin(7 * mesh.points[:, ::-1]) * inner
    mesh = fem.Mesh(pts, mesh.cells, mesh.cell_type, mesh.boundaries)
    V = fem.LagrangeSpace(mesh, degree)
    X = np.asarray(V.dof_coordinates())
    v, g = _poly(X)
    if degree == 1:  # P1 reproduces only linear polynomials
        v, g = (
            X @ np.arange(1, X.shape[1] + 1) + 0.5,
            np.broadcast_to(np.arange(1, X.shape[1] + 1.0), X.shape),
        )
    s = export.sample(fem.Field(V, jnp.asarray(v)))
    assert s.cells.shape == (mesh.ncells * nsub, mesh.cells.shape[1])
    np.testing.assert_array_equal(s.points, X)
    np.testing.assert_array_equal(s.point_data["u"], v)
    if (
        cell in ("triangle", "tetra") or degree == 1
    ):  # exact gradients where the space reproduces the polynomial
        np.testing.assert_allclose(s.point_data["grad_u"], g, atol=1e-11)
    if cell in ("triangle", "tetra"):  # sub-cells tile the domain, positively oriented
        e = s.points[s.cells[:, 1:]] - s.points[s.cells[:, :1]]
        vol = np.linalg.det(e) / (2.0 if cell == "triangle" else 6.0)
        assert np.all(vol > 0)
        assert vol.sum() == pytest.approx(1.0, abs=1e-12)
    # Each original cell edge is drawn once (degree 2: as two halves through its midpoint).
    assert len(s.edges) == degree * mesh.edges()[0].shape[0]


def test_q2_gradients_exact_for_bilinear_times_quadratic():
    """On affine quads Q2 reproduces x^2 y^2 terms: gradients averaged at nodes are exact."""
    V = fem.LagrangeSpace(fem.unit_square(2, cell="quad"), 2, shape=(2,))
    X = np.asarray(V.dof_coordinates())
    c = np.concatenate([X[:, 0] ** 2 * X[:, 1] ** 2, X[:, 0] * X[:, 1]])
    s = export.sample(fem.Field(V, jnp.asarray(c)))
    x, y = X[:, 0], X[:, 1]
    np.testing.assert_allclose(s.point_data["u"], np.stack([x**2 * y**2, x * y], 1), atol=1e-14)
    expected = np.stack([2 * x * y**2, 2 * x**2 * y, y, x], 1)
    np.testing.assert_allclose(s.point_data["grad_u"], expected, atol=1e-12)


def test_time_series_pvd(tmp_path):
    V = fem.LagrangeSpace(fem.unit_square(2, cell="quad"), 1)
    X = np.asarray(V.dof_coordinates())
    times = [0.0, 0.5, 1.0]
    steps = [fem.Field(V, jnp.asarray(np.exp(-t) * X[:, 0])) for t in times]
    files = export.write_field_series(tmp_path / "heat.pvd", times, steps)
    assert len(files) == 4 and files[0].endswith("heat.pvd")
    entries = ET.parse(files[0]).getroot().findall(".//DataSet")
    assert [float(e.get("timestep")) for e in entries] == times
    for t, e in zip(times, entries, strict=True):
        back = meshio.read(tmp_path / e.get("file"))
        np.testing.assert_allclose(back.point_data["u"], np.exp(-t) * back.points[:, 0], atol=1e-14)


def test_to_pyvista_grid(annulus_field):
    grid = export.to_pyvista(annulus_field, resolution=2)
    s = export.sample(annulus_field, resolution=2)
    assert grid.n_points == len(s.points) and grid.n_cells == len(s.cells)
    np.testing.assert_array_equal(np.asarray(grid.point_data["u"]), s.point_data["u"])
    assert grid.points.shape[1] == 3


def test_errors(annulus_field):
    geo = fem.geometry.quarter_annulus(1.0, 3.0).refine(degree=3, elements=(3, 2))
    other = fem.Field(fem.SplineSpace(geo), annulus_field.coeffs)
    with pytest.raises(ValueError, match="another geometry"):
        export.sample({"a": annulus_field, "b": other})
    with pytest.raises(ValueError, match="resolution must be a positive int"):
        export.sample(annulus_field, resolution=0)
    with pytest.raises(TypeError, match="must be a Field"):
        export.sample(np.zeros(3))
    V = fem.LagrangeSpace(fem.unit_square(2), 1)
    with pytest.raises(ValueError, match="sampled at their nodes"):
        export.sample(fem.Field(V, jnp.zeros(V.ndofs)), resolution=3)
    with pytest.raises(ValueError, match="one entry per time"):
        export.write_field_series("x.pvd", [0.0, 1.0], [fem.Field(V, jnp.zeros(V.ndofs))])


@pytest.mark.slow
def test_samples_equal_field_evaluation(annulus_field):
    """The sampled values equal Field.__call__ at the sample points (point location by Newton iterations)."""
    s = export.sample(annulus_field, resolution=2)
    idx = np.random.default_rng(3).choice(len(s.points), 25, replace=False)
    np.testing.assert_allclose(s.point_data["u"][idx], np.asarray(annulus_field(s.points[idx])), atol=1e-12)
