"""Assembled matrices put test functions on rows: ``A[i, j] = a(phi_j, phi_i)``, so ``A @ u`` is the action
of the form on ``u`` and ``fem.solve(A, F)`` solves ``a(u, v) = F(v)``.

Symmetric forms cannot tell rows from columns, so every assembly path is checked here with a non-symmetric
form whose action is known in closed form: the advection ``a(u, v) = (b . grad u) v`` with ``b = (1, 0)``
applied to ``u = x`` (represented exactly by every space here: Lagrange nodes, and isoparametric splines whose
coefficients are the control points' first coordinate) is ``int v``, the load of ``f = 1``. The transposed
matrix applied to ``u`` gives something else, so each check can fail.
"""

import sys

import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem import library

_SF = sys.modules["igax.fem.forms.sumfact"]
_ASM = sys.modules["igax.fem.forms.assembly"]


@fem.bilinear_form
def advect_x(u, v, w):
    """``(du/dx) v``, summed over components for vector spaces."""
    return jnp.sum(u.grad[..., 0] * v.value)


@fem.linear_form
def one(v, w):
    return jnp.sum(v.value)


def _lagrange(cell, degree, shape=()):
    V = fem.LagrangeSpace(fem.unit_square(3, cell=cell), degree=degree, shape=shape)
    x = np.asarray(V.scalar.dof_coordinates() if shape else V.dof_coordinates())[:, 0]
    return V, x


def _spline(degree, elements, shape=()):
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=degree, elements=elements), shape=shape)
    x = np.asarray(V.control_points).reshape(-1, V.dim)[:, 0]
    return V, x


def _coeffs(V, x):
    """Coefficients of ``u = x`` in every component (component-major: all of component 0 first)."""
    ncomp = int(np.prod(V.value_shape)) if V.value_shape else 1
    return jnp.asarray(np.tile(x, ncomp))


SPACES = {
    "P1": lambda: _lagrange("triangle", 1),
    "P2": lambda: _lagrange("triangle", 2),
    "Q1": lambda: _lagrange("quad", 1),
    "spline2": lambda: _spline(2, (3, 4)),
    "spline3-vector": lambda: _spline(3, (3, 2), shape=(2,)),
}


def _check_action(A, V, u):
    F = np.asarray(fem.assemble(one, V))
    Au = np.asarray(A.to_scipy() @ np.asarray(u)) if hasattr(A, "to_scipy") else np.asarray(A @ u)
    np.testing.assert_allclose(Au, F, rtol=0, atol=1e-12 * np.abs(F).max())


@pytest.mark.parametrize("name", list(SPACES))
def test_assembled_rows_are_test_functions(name):
    V, x = SPACES[name]()
    u = _coeffs(V, x)
    A = fem.assemble(advect_x, V)
    _check_action(A, V, u)
    # The transpose is a different matrix: the check above can tell the two apart.
    F = np.asarray(fem.assemble(one, V))
    assert np.abs(A.to_scipy().T @ np.asarray(u) - F).max() > 1e-3 * np.abs(F).max()


def test_sum_factorised_rows_are_test_functions():
    V, x = _spline(3, (4, 3))
    A = _SF.assemble_factorised(advect_x, V, {}, force=True)
    _check_action(A, V, _coeffs(V, x))


def test_chunked_rows_are_test_functions(monkeypatch):
    V, x = _lagrange("triangle", 2)
    monkeypatch.setattr(_ASM, "_CHUNK_ENTRIES", 64)
    A = fem.assemble(advect_x, V)
    _check_action(A, V, _coeffs(V, x))


def test_matrix_free_operator_is_the_action():
    V, x = _spline(2, (3, 4))
    u = _coeffs(V, x)
    op = fem.operator(advect_x, V)
    F = np.asarray(fem.assemble(one, V))
    np.testing.assert_allclose(np.asarray(op @ u), F, rtol=0, atol=1e-12 * np.abs(F).max())


def test_element_matrices_rows_are_test_functions():
    V, x = _lagrange("quad", 1)
    cells = [0, 4]
    K = np.asarray(fem.element_matrices(advect_x, V, cells))
    dofs = np.asarray(V.plan.cell_dofs)[cells]
    # int over one element of v_i: the element load of f = 1
    b = np.asarray(fem.element_matrices(library.mass, V, cells)).sum(axis=2)
    np.testing.assert_allclose(np.einsum("eij,ej->ei", K, x[dofs]), b, atol=1e-13)


def test_boundary_assembly_rows_are_test_functions():
    V, x = _lagrange("quad", 2)
    u = _coeffs(V, x)
    A = fem.assemble(advect_x, V, boundary="top")
    F = np.asarray(fem.assemble(one, V, boundary="top"))
    np.testing.assert_allclose(A.to_scipy() @ np.asarray(u), F, atol=1e-13)


def test_advection_diffusion_solution_flows_downstream():
    """A 1D-like steady advection-diffusion solve matches its closed form, which the transposed system does
    not: -eps u'' + u' = 1 on (0, 1), u(0) = u(1) = 0, on Q2 elements stretched in x."""
    eps = 0.1
    mesh = fem.rectangle_mesh((0.0, 0.0), (1.0, 0.1), (32, 1), "quad")
    V = fem.LagrangeSpace(mesh, degree=2)
    A = fem.assemble(library.advection_diffusion, V, kappa=eps, b=np.array([1.0, 0.0]))
    F = fem.assemble(library.source, V, f=1.0)
    bc = fem.DirichletBC(V, ["left", "right"], 0.0)
    u = np.asarray(fem.solve(A, F, bc=bc).coeffs)
    x = np.asarray(V.dof_coordinates())[:, 0]
    exact = x - (np.exp((x - 1) / eps) - np.exp(-1 / eps)) / (1 - np.exp(-1 / eps))
    assert np.abs(u - exact).max() < 1e-4
