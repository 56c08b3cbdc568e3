"""The same meshes and problems assembled and solved with scikit-fem agree to round-off."""

import jax.numpy as jnp
import numpy as np
import pytest

skfem = pytest.importorskip("skfem")
from skfem.helpers import dot, grad  # noqa: E402

from igax import fem  # noqa: E402
from igax.fem import library, mesh  # noqa: E402


def _skfem_basis(m, degree):
    if m.cell_type == "triangle":
        sk = skfem.MeshTri(m.points.T.copy(), m.cells.T.copy())
        el = skfem.ElementTriP1() if degree == 1 else skfem.ElementTriP2()
    else:
        sk = skfem.MeshQuad(m.points.T.copy(), m.cells.T.copy())
        el = skfem.ElementQuad1() if degree == 1 else skfem.ElementQuad2()
    return skfem.Basis(sk, el, intorder=2 * degree)


@skfem.BilinearForm
def sk_diffusion(u, v, w):
    return (1.0 + w.x[0] * w.x[1]) * dot(grad(u), grad(v)) + u * v


@skfem.LinearForm
def sk_load(v, w):
    return (1.0 + w.x[0]) * v


@pytest.mark.parametrize("cell", ["triangle", "quad"])
def test_p1_poisson_matches_scikit_fem(cell):
    m = mesh.unit_square(7, cell=cell)
    V = fem.LagrangeSpace(m, degree=1)
    basis = _skfem_basis(m, 1)
    A_sk = sk_diffusion.assemble(basis)
    b_sk = sk_load.assemble(basis)

    A = fem.assemble(library.diffusion, V, kappa=lambda x: 1.0 + x[0] * x[1]) + fem.assemble(library.mass, V)
    b = fem.assemble(library.source, V, f=lambda x: 1.0 + x[0])
    # P1 dofs are the mesh vertices in point order (all points are used here).
    np.testing.assert_allclose(A.todense(), A_sk.toarray(), atol=1e-13)
    np.testing.assert_allclose(b, b_sk, atol=1e-14)

    D = basis.get_dofs().all()
    x_sk = skfem.solve(*skfem.condense(A_sk, b_sk, D=D))
    u = fem.solve(A, b, bc=fem.DirichletBC(V, None, 0.0))
    assert np.max(np.abs(np.asarray(u.coeffs) - x_sk)) < 1e-10


def test_neumann_and_robin_boundary_terms_match_scikit_fem():
    m = mesh.unit_square(6)
    V = fem.LagrangeSpace(m, degree=2)
    sk = skfem.MeshTri(m.points.T.copy(), m.cells.T.copy())
    fb = skfem.FacetBasis(
        sk, skfem.ElementTriP2(), facets=sk.facets_satisfying(lambda x: x[0] > 1 - 1e-12), intorder=4
    )

    @skfem.BilinearForm
    def sk_robin(u, v, w):
        return 3.0 * u * v

    @skfem.LinearForm
    def sk_flux(v, w):
        return (w.x[1] ** 2 + w.n[0]) * v

    R = fem.assemble(library.robin, V, boundary="right", alpha=3.0)

    @fem.linear_form
    def flux(v, w):
        return (w.x[1] ** 2 + w.n[0]) * v.value

    g = fem.assemble(flux, V, boundary="right")
    # Dof numbering differs for P2 (skfem: vertices, then its edges); compare invariants: total mass of the
    # Robin term and the integral of the flux against constants and against x-linear fields.
    ones = np.ones(V.ndofs)
    xs = np.asarray(V.dof_coordinates())
    sk_ones = np.ones(fb.N)
    sk_x = fb.doflocs[1]
    R_sk, g_sk = sk_robin.assemble(fb), sk_flux.assemble(fb)
    assert abs(ones @ (R.todense() @ ones) - sk_ones @ (R_sk @ sk_ones)) < 1e-12
    assert abs(xs[:, 1] @ (R.todense() @ xs[:, 1]) - sk_x @ (R_sk @ sk_x)) < 1e-12
    assert abs(float(jnp.sum(g)) - float(g_sk.sum())) < 1e-12
    assert abs(float(g @ xs[:, 1]) - float(g_sk @ sk_x)) < 1e-12
    # Exact values: int_0^1 3 dy = 3, int_0^1 (y^2 + 1) dy = 4/3.
    assert abs(ones @ (R.todense() @ ones) - 3.0) < 1e-12
    assert abs(float(jnp.sum(g)) - 4.0 / 3.0) < 1e-12


def test_p2_solution_matches_scikit_fem_at_vertices():
    m = mesh.unit_square(5)
    V = fem.LagrangeSpace(m, degree=2)
    basis = _skfem_basis(m, 2)
    A_sk, b_sk = sk_diffusion.assemble(basis), sk_load.assemble(basis)
    x_sk = skfem.solve(*skfem.condense(A_sk, b_sk, D=basis.get_dofs().all()))
    A = fem.assemble(library.diffusion, V, kappa=lambda x: 1.0 + x[0] * x[1]) + fem.assemble(library.mass, V)
    b = fem.assemble(library.source, V, f=lambda x: 1.0 + x[0])
    u = fem.solve(A, b, bc=fem.DirichletBC(V, None, 0.0))
    nv = m.points.shape[0]  # vertex dofs come first in both numberings
    assert np.max(np.abs(np.asarray(u.coeffs[:nv]) - x_sk[:nv])) < 1e-10
