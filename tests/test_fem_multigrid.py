"""Geometric multigrid on function spaces: exact transfer operators, and mg-cg through fem.solve.

The transfers are checked by what defines them: a random function of the coarse space, evaluated at physical
points, equals the fine-space function with coefficients ``P @ c`` (to 1e-12), on NURBS weights, a glued
annulus, a polar disk with a pole, multi-patch interfaces, 3D and vector spaces, and nested P1/P2/Q1/Q2
meshes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import bases, fem
from igax.fem._transfer_lagrange import lagrange_levels, near_nullspace
from igax.fem._transfer_spline import coarsen_knots, spline_levels
from igax.fem.mesh_refine import parent, refine

RNG = np.random.default_rng(14)


def polar_disk(radius=1.0):
    """Disk as a polar patch: side 'center' collapsed to the origin, the angular seam glued."""
    ring = fem.geometry.annulus(1.0, 2.0)
    arc = np.asarray(ring.control_points)[0]
    cp = np.stack([0.0 * arc, radius * arc])
    names = (("center", 0, 0), ("circle", 0, 1), ("seam_start", 1, 0), ("seam_end", 1, 1))
    return bases.NURBSPatch(ring.knots, ring.degrees, cp, ring.weights, boundaries=names)


def _points(patch, n=40, lo=0.03, hi=0.97):
    """Physical points of random parameters of a patch (away from the poles and the seam)."""
    u = RNG.uniform(lo, hi, size=(n, patch.pdim))
    return jnp.asarray(np.asarray(patch.evaluate(u)))


def _check_exact(Vf, Vc, P, points, tol=1e-12):
    """A random coarse function equals the fine function with coefficients P @ c at the points."""
    assert P.shape == (Vf.ndofs, Vc.ndofs)
    c = RNG.standard_normal(Vc.ndofs)
    coarse = np.asarray(fem.Field(Vc, jnp.asarray(c))(points))
    fine = np.asarray(fem.Field(Vf, jnp.asarray(P @ c))(points))
    scale = np.max(np.abs(coarse))
    np.testing.assert_allclose(fine, coarse, rtol=0, atol=tol * scale)


def _one_level(Vf, coarse_size=1):
    levels = spline_levels(Vf, coarse_size=coarse_size, max_levels=1)
    assert len(levels) == 1
    return levels[0]


# -- knot coarsening ---------------------------------------------------------------------------------------
def test_coarsen_knots_halves_and_keeps_multiple_knots():
    t = np.r_[[0.0] * 3, np.linspace(0, 1, 17)[1:-1], [1.0] * 3]
    np.testing.assert_array_equal(
        coarsen_knots(t, 2), np.r_[[0.0] * 3, np.linspace(0, 1, 9)[1:-1], [1.0] * 3]
    )
    # the quarter-circle joints of the annulus (multiplicity 2) stay; knots between them go
    ring = np.r_[[0.0] * 3, np.repeat([0.25, 0.5, 0.75], 2), [1.0] * 3]
    refined = np.sort(np.r_[ring, [0.125, 0.375, 0.625, 0.875]])
    np.testing.assert_array_equal(coarsen_knots(refined, 2), ring)
    np.testing.assert_array_equal(coarsen_knots(ring, 2), ring)  # nothing left to drop
    # odd element counts: symmetric under reversal, so flipped multi-patch interfaces stay conforming
    for n, coarse in [(3, 1), (5, 3), (7, 3), (9, 5)]:
        t = np.r_[0.0, 0.0, np.linspace(0, 1, n + 1)[1:-1] ** 1.5, 1.0, 1.0]
        flipped = np.sort(1.0 - t)
        np.testing.assert_allclose(np.sort(1.0 - coarsen_knots(t, 1)), coarsen_knots(flipped, 1), atol=1e-15)
        assert np.unique(coarsen_knots(t, 1)).size - 1 == coarse


# -- exact spline transfers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_bspline_square_transfer_is_exact(degree):
    coarse = fem.geometry.rectangle((0, 0), (2, 1)).refine(degree=degree, elements=(3, 4))
    fine = coarse.refine(elements=(6, 8))
    Vf, Vc = fem.SplineSpace(fine), fem.SplineSpace(coarse)
    level = _one_level(Vf)
    for a, b in zip(level.knots[0], coarse.knots, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-15)
    _check_exact(Vf, Vc, level.prolongation, _points(fine))


@pytest.mark.parametrize("geometry", ["quarter_annulus", "plate_with_hole"])
def test_nurbs_transfer_is_exact(geometry):
    coarse = getattr(fem.geometry, geometry)().refine(degree=3, elements=4)
    fine = coarse.refine(elements=8)
    Vf, Vc = fem.SplineSpace(fine), fem.SplineSpace(coarse)
    level = _one_level(Vf)
    assert level.exact
    np.testing.assert_allclose(level.weights[0], np.asarray(coarse.weights), rtol=1e-13)
    _check_exact(Vf, Vc, level.prolongation, _points(fine))
    # the whole hierarchy: rows of every P sum to one (constants are coarse functions on every level)
    for lv in spline_levels(Vf, coarse_size=1):
        np.testing.assert_allclose(lv.prolongation.sum(axis=1).A1, 1.0, atol=1e-13)


def test_glued_annulus_transfer_is_exact():
    coarse = fem.geometry.annulus().refine(degree=2, elements=(2, 8))
    fine = coarse.refine(elements=(4, 16))
    Vf, Vc = fem.SplineSpace(fine), fem.SplineSpace(coarse)
    assert Vf.glued == (("seam_start", "seam_end"),)
    level = _one_level(Vf)
    assert level.exact and level.ndofs == Vc.ndofs
    _check_exact(Vf, Vc, level.prolongation, _points(fine, lo=0.0, hi=1.0))  # the seam included


def test_polar_disk_transfer_is_exact():
    coarse = polar_disk().refine(degree=2, elements=(2, 8))
    fine = coarse.refine(elements=(4, 16))
    Vf, Vc = fem.SplineSpace(fine), fem.SplineSpace(coarse)
    assert Vf.collapsed == ("center",) and Vc.collapsed == ("center",)
    level = _one_level(Vf)
    _check_exact(Vf, Vc, level.prolongation, _points(fine, lo=0.05, hi=1.0))
    # the pole is one dof on both levels, and P maps it to itself
    pole_f = Vf.plan.dof_map[Vf.plan.side_points("center")[0]]
    pole_c = Vc.plan.dof_map[Vc.plan.side_points("center")[0]]
    row = level.prolongation.getrow(pole_f)
    assert row.indices.tolist() == [pole_c] and row.data.tolist() == pytest.approx([1.0])


def test_3d_and_vector_transfers_are_exact():
    coarse = fem.geometry.thick_quarter_cylinder().refine(degree=2, elements=(2, 2, 2))
    fine = coarse.refine(elements=(4, 4, 4))
    Vf, Vc = fem.SplineSpace(fine, shape=(3,)), fem.SplineSpace(coarse, shape=(3,))
    level = _one_level(Vf)
    assert level.exact
    _check_exact(Vf, Vc, level.prolongation, _points(fine, n=20))


def test_multipatch_transfer_is_exact():
    # two quarter annuli joined along a radial side; the second runs from the outer arc inwards (reversed)
    a = fem.geometry.quarter_annulus().refine(degree=2, elements=(3, 4))
    qb = fem.geometry.quarter_annulus()
    rot = np.asarray(qb.control_points) @ np.array([[0.0, 1.0], [-1.0, 0.0]])  # rotate by +90 degrees
    b = bases.NURBSPatch(qb.knots, qb.degrees, rot[::-1], np.asarray(qb.weights)[::-1], qb.boundaries)
    b = b.refine(degree=2, elements=(3, 4))
    interfaces = [(("A", "left"), ("B", "bottom"))]
    Vc = fem.MultiPatchSpace({"A": a, "B": b}, interfaces)
    fine = {"A": a.refine(elements=(6, 8)), "B": b.refine(elements=(6, 8))}
    Vf = fem.MultiPatchSpace(fine, interfaces)
    assert Vf.ndofs < 2 * fine["A"].shape[0] * fine["A"].shape[1]  # the interface is shared
    level = _one_level(Vf)
    assert level.ndofs == Vc.ndofs
    pts = jnp.concatenate([_points(fine["A"], 20), _points(fine["B"], 20)])
    _check_exact(Vf, Vc, level.prolongation, pts)


def test_hierarchy_depth_and_sizes():
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=64))
    levels = spline_levels(V, coarse_size=100)
    sizes = [V.ndofs] + [lv.ndofs for lv in levels]
    assert sizes == [66**2, 34**2, 18**2, 10**2]
    for lv, n in zip(levels, sizes, strict=False):
        assert lv.prolongation.shape[0] == n


def test_weights_not_representable_and_traced():
    geo = fem.geometry.rectangle().refine(degree=2, elements=8)
    w = RNG.uniform(0.5, 1.5, size=geo.shape)
    V = fem.SplineSpace(bases.NURBSPatch(geo.knots, geo.degrees, geo.control_points, w))
    level = _one_level(V)
    assert not level.exact
    np.testing.assert_allclose(level.prolongation.sum(axis=1).A1, 1.0, atol=1e-13)
    # traced weights: the B-spline knot-insertion transfer (rows sum to one as well)
    out = []

    def build(weights):
        out.append(_one_level(V.with_geometry(weights=weights)))
        return weights.sum()

    jax.jit(build)(jnp.asarray(w))
    T = _one_level(fem.SplineSpace(geo)).prolongation
    assert not out[0].exact
    assert abs(out[0].prolongation - T).max() == 0.0


# -- nested Lagrange meshes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cell, degree",
    [
        ("triangle", 1),
        ("triangle", 2),
        ("quad", 1),
        ("quad", 2),
        ("tetra", 1),
        ("tetra", 2),
        ("hexahedron", 1),
    ],
)
def test_lagrange_transfer_is_exact(cell, degree):
    m0 = fem.mesh.unit_square(2, cell) if cell in ("triangle", "quad") else fem.mesh.unit_cube(1, cell)
    # a curved-ish coarse mesh: nesting must hold for any vertex positions
    pts = np.asarray(m0.points) + 0.05 * np.sin(3.0 * np.asarray(m0.points)[:, ::-1])
    m0 = fem.Mesh(pts, m0.cells, m0.cell_type, m0.boundaries)
    mid = refine(m0)
    fine = refine(mid)  # two steps: the second sees tetrahedra of several template variants
    assert parent(fine).mesh is mid and parent(mid).mesh is m0 and parent(m0) is None
    for shape in [(), (m0.dim,)]:
        Vf, Vc = fem.LagrangeSpace(fine, degree, shape=shape), fem.LagrangeSpace(mid, degree, shape=shape)
        levels = lagrange_levels(Vf, coarse_size=1)
        assert [n for n, _ in levels] == [Vc.ndofs, fem.LagrangeSpace(m0, degree, shape=shape).ndofs]
        x = np.asarray(Vf.dof_coordinates())
        _check_exact(Vf, Vc, levels[0][1], jnp.asarray(x[:: max(1, len(x) // 60)]))


def test_near_nullspace_of_vector_spaces():
    V = fem.LagrangeSpace(fem.mesh.unit_square(4), 1, shape=(2,))
    B = near_nullspace(V)
    assert B.shape == (V.ndofs, 3)
    K = fem.assemble(fem.library.linear_elasticity(1.0, 0.3), V)
    np.testing.assert_allclose(np.asarray(K.to_scipy() @ B), 0.0, atol=1e-11)
