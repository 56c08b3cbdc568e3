"""Spaces, forms, boundary conditions, fields and guard rails of the FEM core."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.bases import NURBSPatch
from igax.fem import library, mesh


# --- guard rails --------------------------------------------------------------------------------------------
def test_inverted_mesh_cell_is_rejected():
    m = mesh.unit_square(2)
    cells = np.asarray(m.cells).copy()
    cells[0] = cells[0][[0, 2, 1]]  # flip one triangle
    bad = mesh.Mesh(m.points, cells, "triangle", check=False)
    with pytest.raises(ValueError, match="not positive"):
        fem.LagrangeSpace(bad)


def test_degenerate_spline_element_is_rejected():
    geo = fem.geometry.rectangle().refine(degree=2, elements=3)
    P = np.asarray(geo.control_points).copy()
    P[2, 2] = P[0, 0]  # fold the control net
    bad = NURBSPatch(geo.knots, geo.degrees, P, np.asarray(geo.weights), geo.boundaries)
    with pytest.raises(ValueError, match="degenerate or inverted"):
        fem.SplineSpace(bad)


def test_negatively_oriented_patch_is_accepted_and_measures_are_positive():
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=2))
    area = fem.Field(V, jnp.ones(V.ndofs)).integrate()
    assert abs(float(area) - 3 * np.pi / 4) < 1e-5  # pi (4 - 1) / 4


def test_shape_errors_are_clear():
    V = fem.LagrangeSpace(mesh.unit_square(2))
    with pytest.raises(ValueError, match=r"coeffs must have shape \(ndofs,\) = \(9,\)"):
        fem.Field(V, jnp.zeros(8))

    @fem.bilinear_form
    def vector_valued(u, v, w):
        return u.grad * v.value

    with pytest.raises(ValueError, match="must return a scalar"):
        fem.assemble(vector_valued, V)
    with pytest.raises(ValueError, match="at the quadrature"):
        fem.assemble(library.diffusion, V, kappa=jnp.ones(5))
    with pytest.raises(AttributeError, match="no input of that name"):
        fem.assemble(library.diffusion, V)
    with pytest.raises(TypeError, match="bilinear_form"):
        fem.assemble(lambda u, v, w: 0.0, V)


def test_unknown_boundary_name_lists_the_available_ones():
    V = fem.SplineSpace(fem.geometry.quarter_annulus())
    with pytest.raises(ValueError, match=r"unknown boundary 'top'.*'inner', 'outer', 'bottom', 'left'"):
        V.boundary("top")
    with pytest.raises(ValueError, match="unknown boundary"):
        fem.DirichletBC(V, "top", 0.0)
    with pytest.raises(ValueError, match="unknown boundary"):
        fem.assemble(library.neumann, V, boundary="top", g=1.0)


# --- boundary integrals -------------------------------------------------------------------------------------
@fem.functional
def one(w):
    return 1.0


@fem.functional
def x_dot_n(w):
    return jnp.dot(w.x, w.n)


def test_boundary_measures_and_normals():
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=2))
    assert abs(float(fem.assemble(one, V, boundary="outer")) - np.pi) < 1e-5  # quarter circle r = 2
    assert abs(float(fem.assemble(one, V, boundary=["bottom", "left"])) - 2.0) < 1e-12
    # Divergence theorem: int_boundary x.n = dim * area.
    total = fem.assemble(x_dot_n, V, boundary=list(V.boundary_names))
    assert abs(float(total) - 2 * 3 * np.pi / 4) < 1e-4
    for cell in ("triangle", "quad", "tetra", "hexahedron"):
        gen = mesh.unit_cube if cell in ("tetra", "hexahedron") else mesh.unit_square
        W = fem.LagrangeSpace(gen(2, cell=cell))
        dim = W.dim
        assert abs(float(fem.assemble(x_dot_n, W, boundary="boundary")) - dim) < 1e-12, cell


# --- boundary conditions ------------------------------------------------------------------------------------
def test_condense_keeps_symmetry_and_solves_exactly():
    V = fem.LagrangeSpace(mesh.unit_square(4), degree=2)
    A = fem.assemble(library.laplace, V)
    b = fem.assemble(library.source, V, f=0.0)
    bc = fem.DirichletBC(V, None, lambda x: x[0] + 2 * x[1])  # harmonic: reproduced exactly by P2
    Ac, bc_ = bc.condense(A, b)
    D = np.asarray(Ac.todense())
    assert np.abs(D - D.T).max() < 1e-14 and Ac.symmetric
    assert np.linalg.eigvalsh(D).min() > 0  # SPD after elimination
    u = fem.solve(A, b, bc=bc)
    xs = np.asarray(V.dof_coordinates())
    np.testing.assert_allclose(u.coeffs, xs[:, 0] + 2 * xs[:, 1], atol=1e-12)


def test_spline_dirichlet_projection_reproduces_the_spline_trace():
    geo = fem.geometry.rectangle().refine(degree=2, elements=4)
    V = fem.SplineSpace(geo)
    g = lambda x: x[0] ** 2 + x[0] * x[1]  # in the spline space: the projection is exact
    A = fem.assemble(library.laplace, V)
    b = fem.assemble(library.source, V, f=-2.0)  # -lap(g) = -2
    u = fem.solve(A, b, bc=fem.DirichletBC(V, None, g))
    pts = np.array([[0.3, 0.7], [0.9, 0.1], [0.5, 0.5]])
    np.testing.assert_allclose(u(pts), pts[:, 0] ** 2 + pts[:, 0] * pts[:, 1], atol=1e-11)


def test_vector_space_component_boundaries_and_ordering():
    geo = fem.geometry.rectangle().refine(degree=1, elements=2)
    V = fem.SplineSpace(geo, shape=(2,))
    ns = V.nscalar
    assert V.ndofs == 2 * ns
    left0 = V.boundary(V.boundary_names[0], component=0)
    left1 = V.boundary(V.boundary_names[0], component=1)
    np.testing.assert_array_equal(left1, left0 + ns)  # component-major numbering
    np.testing.assert_array_equal(V.boundary(V.boundary_names[0]), np.concatenate([left0, left1]))
    with pytest.raises(ValueError, match="component"):
        V.boundary(None, component=2)


def test_plane_stress_uniaxial_tension_is_exact():
    # A rectangle pulled on the right edge: u_x = T x / E, u_y = -nu T y / E (plane stress) -- in the space.
    E, nu, T = 200.0, 0.25, 3.0
    V = fem.LagrangeSpace(mesh.rectangle_mesh((0.0, 0.0), (2.0, 1.0), (4, 2), cell="quad"), shape=(2,))
    K = fem.assemble(library.linear_elasticity(E, nu, "plane_stress"), V)
    f = fem.assemble(library.traction, V, boundary="right", t=jnp.array([T, 0.0]))
    bcs = [fem.DirichletBC(V, "left", 0.0, component=0), fem.DirichletBC(V, "bottom", 0.0, component=1)]
    u = fem.solve(K, f, bc=bcs)
    pts = np.array([[1.3, 0.4], [2.0, 1.0]])
    np.testing.assert_allclose(u(pts), np.stack([T * pts[:, 0] / E, -nu * T * pts[:, 1] / E], 1), atol=1e-12)
    sig = library.stress(u.grad(pts), E, nu, "plane_stress")
    np.testing.assert_allclose(sig[:, 0, 0], T, rtol=1e-10)
    np.testing.assert_allclose(sig[:, 1, 1], 0.0, atol=1e-10)


def test_3d_elasticity_uniaxial_tension_is_exact():
    E, nu, T = 10.0, 0.3, 1.0
    V = fem.LagrangeSpace(mesh.unit_cube(2, cell="hexahedron"), shape=(3,))
    K = fem.assemble(library.linear_elasticity(E, nu, "3d"), V)
    f = fem.assemble(library.traction, V, boundary="right", t=jnp.array([T, 0.0, 0.0]))
    names = {"left": 0, "bottom": 1, "front": 2}  # x = 0, y = 0, z = 0
    bcs = [fem.DirichletBC(V, n, 0.0, component=c) for n, c in names.items() if n in V.boundary_names]
    assert len(bcs) == 3, V.boundary_names
    u = fem.solve(K, f, bc=bcs)
    p = np.array([[0.5, 0.25, 0.75]])
    np.testing.assert_allclose(u(p)[0], [T * 0.5 / E, -nu * T * 0.25 / E, -nu * T * 0.75 / E], atol=1e-12)


# --- fields -------------------------------------------------------------------------------------------------
def test_field_evaluation_on_splines_and_meshes():
    geo = fem.geometry.quarter_annulus().refine(degree=3, elements=4)
    V = fem.SplineSpace(geo)
    # L2 projection of x - 2y: the coordinates lie in an isoparametric NURBS space, so it is exact.
    M = fem.assemble(library.mass, V)
    b = fem.assemble(library.source, V, f=lambda x: x[0] - 2 * x[1])
    u = fem.solve(M, b, space=V)
    pts = np.array([[1.2, 0.3], [0.1, 1.9], [1.0, 1.0]])
    np.testing.assert_allclose(u(pts), pts[:, 0] - 2 * pts[:, 1], atol=1e-10)
    np.testing.assert_allclose(u.grad(pts), np.tile([1.0, -2.0], (3, 1)), atol=1e-9)
    with pytest.raises(ValueError, match="outside the domain"):
        u(np.array([[0.1, 0.1]]))
    W = fem.LagrangeSpace(mesh.unit_square(3, cell="quad"), degree=2)
    xs = np.asarray(W.dof_coordinates())
    f = fem.Field(W, jnp.asarray(xs[:, 0] ** 2 - xs[:, 1]))
    q = np.array([[0.33, 0.71], [1.0, 0.0], [0.05, 0.95]])
    np.testing.assert_allclose(f(q), q[:, 0] ** 2 - q[:, 1], atol=1e-13)
    np.testing.assert_allclose(f.grad(q), np.stack([2 * q[:, 0], -np.ones(3)], 1), atol=1e-12)
    assert abs(float(f.integrate()) - (1 / 3 - 1 / 2)) < 1e-13


def test_field_evaluation_is_differentiable_in_coefficients():
    W = fem.LagrangeSpace(mesh.unit_square(3), degree=1)
    q = np.array([[0.4, 0.45]])
    g = jax.grad(lambda c: fem.Field(W, c)(q)[0])(jnp.zeros(W.ndofs))
    assert abs(float(g.sum()) - 1.0) < 1e-13 and int((np.abs(g) > 0).sum()) == 3


def test_advection_diffusion_is_nonsymmetric_and_robin_adds_mass():
    V = fem.LagrangeSpace(mesh.unit_square(3))
    A = fem.assemble(
        library.advection_diffusion, V, kappa=1.0, b=lambda x: jnp.stack([1.0 + 0 * x[0], 0 * x[1]])
    )
    D = np.asarray(A.todense())
    L = np.asarray(fem.assemble(library.laplace, V).todense())
    C = D - L
    assert not A.symmetric and np.abs(C + C.T).max() > 1e-3
    ones = np.ones(V.ndofs)
    assert abs(ones @ C @ ones) < 1e-14  # int (b . grad 1) v = 0
    R = fem.assemble(library.robin, V, boundary="boundary", alpha=2.0)
    assert abs(ones @ np.asarray(R.todense()) @ ones - 8.0) < 1e-12  # alpha * perimeter
