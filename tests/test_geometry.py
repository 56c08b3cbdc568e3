"""Geometry library: reference control points, named boundaries on the right circles and lines, valid maps."""

import numpy as np
import pytest

from igax.fem import geometry

S2 = np.sqrt(0.5)
t = np.linspace(0, 1, 101)


def boundary_points(patch, name, n=101):
    """Points on boundary `name`, sampled along the other direction(s)."""
    axis, side = patch.boundary(name)
    u = np.full((n, patch.pdim), 0.37)
    u[:, axis] = float(side)
    other = [d for d in range(patch.pdim) if d != axis][0]
    u[:, other] = t
    return np.asarray(patch.evaluate(u))


def test_quarter_annulus_reference_data_and_boundaries():
    qa = geometry.quarter_annulus()
    cp = np.asarray(qa.control_points)
    np.testing.assert_array_equal(cp[0], [[1, 0], [1, 1], [0, 1]])  # inner arc
    np.testing.assert_array_equal(cp[1], [[2, 0], [2, 2], [0, 2]])  # outer arc
    np.testing.assert_allclose(np.asarray(qa.weights), [[1, S2, 1], [1, S2, 1]], rtol=1e-16)
    assert qa.knots == ((0, 0, 1, 1), (0, 0, 0, 1, 1, 1)) and qa.degrees == (1, 2)
    assert set(qa.boundary_names) == {"inner", "outer", "bottom", "left"}
    np.testing.assert_allclose(np.hypot(*boundary_points(qa, "inner").T), 1.0, atol=1e-15)
    np.testing.assert_allclose(np.hypot(*boundary_points(qa, "outer").T), 2.0, atol=1e-15)
    b = boundary_points(qa, "bottom")
    np.testing.assert_allclose(b[:, 1], 0.0, atol=1e-15)
    np.testing.assert_allclose(b[:, 0], 1 + t, atol=1e-15)
    np.testing.assert_allclose(boundary_points(qa, "left")[:, 0], 0.0, atol=1e-15)


def test_plate_with_hole_reference_data_and_boundaries():
    ph = geometry.plate_with_hole()
    cp = np.asarray(ph.control_points)
    ref_inner = [[-1, 0], [-1, 0.41421356], [-0.70710678, 0.70710678], [-0.41421356, 1], [0, 1]]
    np.testing.assert_allclose(cp[:, 0], ref_inner, atol=5e-9)
    np.testing.assert_array_equal(cp[:, 1], [[-4, 0], [-4, 2], [-4, 4], [-2, 4], [0, 4]])
    np.testing.assert_allclose(
        np.asarray(ph.weights)[:, 0], [1, 0.85355339, 0.85355339, 0.85355339, 1], atol=5e-9
    )
    np.testing.assert_array_equal(np.asarray(ph.weights)[:, 1], 1.0)
    assert ph.knots[0] == (0, 0, 0, 0.5, 0.5, 1, 1, 1)
    np.testing.assert_allclose(np.hypot(*boundary_points(ph, "hole").T), 1.0, atol=1e-15)
    outer = boundary_points(ph, "outer")
    on_left = np.isclose(outer[:, 0], -4.0, atol=1e-14)
    on_top = np.isclose(outer[:, 1], 4.0, atol=1e-14)
    assert np.all(on_left | on_top) and on_left.sum() > 40 and on_top.sum() > 40
    np.testing.assert_allclose(boundary_points(ph, "bottom")[:, 1], 0.0, atol=1e-15)  # symmetry edge y = 0
    np.testing.assert_allclose(boundary_points(ph, "right")[:, 0], 0.0, atol=1e-15)  # symmetry edge x = 0


def test_annulus_disk_and_cylinder_circles():
    an = geometry.annulus(0.5, 1.5)
    np.testing.assert_allclose(np.hypot(*boundary_points(an, "inner").T), 0.5, atol=1e-15)
    np.testing.assert_allclose(np.hypot(*boundary_points(an, "outer").T), 1.5, atol=1e-15)
    np.testing.assert_allclose(boundary_points(an, "seam_start"), boundary_points(an, "seam_end"), atol=1e-15)
    dk = geometry.disk(2.0, center=(1.0, -1.0))
    for name in ("south", "east", "north", "west"):
        x = boundary_points(dk, name)
        np.testing.assert_allclose(np.hypot(x[:, 0] - 1, x[:, 1] + 1), 2.0, atol=1e-14)
    cyl = geometry.thick_quarter_cylinder(1.0, 2.0, length=3.0)
    u = np.random.default_rng(0).uniform(size=(50, 3))
    u[:, 0] = 0.0
    x = np.asarray(cyl.evaluate(u))
    np.testing.assert_allclose(np.hypot(x[:, 0], x[:, 1]), 1.0, atol=1e-15)
    np.testing.assert_allclose(x[:, 2], 3 * u[:, 2], atol=1e-15)
    u[:, 2] = 1.0
    np.testing.assert_allclose(np.asarray(cyl.evaluate(u))[:, 2], 3.0, atol=1e-15)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("rectangle", 6.0),
        ("box", 24.0),
        ("quarter_annulus", 3 * np.pi / 4),
        ("annulus", 3 * np.pi),
        ("disk", np.pi),
        ("plate_with_hole", 16 - np.pi / 4),
        ("l_shape", 3.0),
        ("thick_quarter_cylinder", 3 * np.pi / 4),
    ],
)
def test_areas_and_positive_jacobian(name, expected):
    kwargs = {"rectangle": dict(lower=(0, 0), upper=(3, 2)), "box": dict(lower=(0, 0, 0), upper=(2, 3, 4))}
    patch = getattr(geometry, name)(**kwargs.get(name, {}))
    # Gauss quadrature of det J on a refined patch (exact geometry; rational -> tiny quadrature error)
    fine = patch.refine(elements=4)
    g, w = np.polynomial.legendre.leggauss(8)
    g, w = (g + 1) / 2, w / 2
    total = 0.0
    for el in np.stack(np.meshgrid(*[np.arange(4)] * patch.pdim, indexing="ij"), -1).reshape(-1, patch.pdim):
        pts = np.stack(np.meshgrid(*[(el[d] + g) / 4 for d in range(patch.pdim)], indexing="ij"), -1)
        wts = np.prod(np.stack(np.meshgrid(*[w / 4] * patch.pdim, indexing="ij"), -1), -1)
        detJ = np.linalg.det(np.asarray(fine.jacobian(pts.reshape(-1, patch.pdim))))
        assert np.all(detJ > 0), f"{name}: non-positive Jacobian"
        total += np.sum(detJ * wts.reshape(-1))
    assert abs(total - expected) < 1e-8 * expected
