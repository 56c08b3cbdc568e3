"""Recovered (L2-projected) stress fields: exactness, Kirsch convergence, gradients, errors."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem import library, mesh, norms, recovery

# The closed-form Kirsch solution is written once, in the example (as in test_fem_elasticity.py).
_spec = importlib.util.spec_from_file_location(
    "plate_with_hole_example", Path(__file__).resolve().parents[1] / "examples" / "plate_with_hole.py"
)
_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_example)
E, NU, T = _example.E, _example.NU, _example.T
kirsch_stress, exact_traction = _example.kirsch_stress, _example.exact_traction
ELASTIC = library.linear_elasticity(E, NU, "plane_strain")


# --- exactness for representable stresses -------------------------------------------------------------------
GRAD = np.array([[0.1, 0.3, -0.05], [-0.2, 0.05, 0.15], [0.07, -0.12, 0.02]])


def _displacement(x, dim, quadratic):
    u = [sum(GRAD[i, j] * x[j] for j in range(dim)) + 0.01 * (i + 1) for i in range(dim)]
    if quadratic:  # a quadratic displacement has a linear stress: representable in P2
        u = [u[i] + 0.1 * (i + 1) * x[0] * x[1] - 0.05 * x[i] ** 2 for i in range(dim)]
    return jnp.stack(u)


def _nodal_field(V, quadratic):
    X = np.asarray(V.dof_coordinates())  # (nscalar, dim)
    return fem.Field(V, _displacement(X.T, V.dim, quadratic).reshape(-1))


EXACT_CASES = [  # (cell, degree, quadratic displacement, mass)
    ("quad", 1, False, "consistent"),
    ("quad", 1, False, "lumped"),  # lumping reproduces constants: exact for a constant stress
    ("triangle", 2, True, "consistent"),
    pytest.param("tetra", 1, False, "consistent", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("cell,degree,quadratic,mass", EXACT_CASES)
def test_recovered_stress_of_representable_displacement_is_exact(cell, degree, quadratic, mass):
    m = mesh.unit_cube(2, cell=cell) if cell == "tetra" else mesh.unit_square(3, cell=cell)
    d = m.dim
    kind = "3d" if d == 3 else "plane_strain"
    V = fem.LagrangeSpace(m, degree, shape=(d,))
    u = _nodal_field(V, quadratic)
    sig = recovery.recover_stress(u, 100.0, 0.3, kind, mass=mass)
    assert sig.value_shape == (d, d)
    # Lagrange dofs are nodal: the recovered coefficients are the stress at the nodes.
    X = jnp.asarray(V.dof_coordinates())
    grads = jax.vmap(jax.jacfwd(lambda p: _displacement(p, d, quadratic)))(X)
    exact = library.stress(grads, 100.0, 0.3, kind)  # (nscalar, d, d)
    np.testing.assert_allclose(jnp.moveaxis(sig.coeffs, -1, 0), exact, atol=1e-10, rtol=0)
    if cell == "quad" and mass == "consistent":  # point evaluation of a TensorField (located once)
        pts = np.random.default_rng(0).uniform(0.05, 0.95, (5, d))
        g = jax.vmap(jax.jacfwd(lambda p: _displacement(p, d, quadratic)))(jnp.asarray(pts))
        np.testing.assert_allclose(sig(pts), library.stress(g, 100.0, 0.3, kind), atol=1e-10, rtol=0)
        np.testing.assert_allclose(sig[0, 1](pts), sig(pts)[:, 0, 1], atol=1e-12, rtol=0)
        # At the quadrature points the recovered field equals the pointwise stress of u (exact case).
        pointwise = recovery.quadrature_values(lambda w: library.stress(w.u.grad, 100.0, 0.3, kind), V, u=u)
        assert pointwise.shape == sig.at_quadrature().shape == (V.nel, pointwise.shape[1], d, d)
        np.testing.assert_allclose(sig.at_quadrature(), pointwise, atol=1e-10, rtol=0)
        parts = sig.components("s_", symmetric=True)
        assert sorted(parts) == ["s_xx", "s_xy", "s_yy"]
        np.testing.assert_allclose(parts["s_xy"].coeffs, sig.coeffs[1, 0], atol=1e-12)  # symmetric recovery
    # Von Mises recovered from the same displacement: exact where it is constant (linear displacement).
    if not quadratic:
        vm = recovery.recover_von_mises(u, 100.0, 0.3, kind, mass=mass)
        np.testing.assert_allclose(vm.coeffs, library.von_mises(exact, 0.3, kind), rtol=1e-10)


def test_project_reproduces_space_members_on_splines():
    geo = fem.geometry.quarter_annulus().refine(degree=2, elements=3)
    V = fem.SplineSpace(geo)
    # x - 2y lies in the isoparametric space (coordinates are NURBS): the projection reproduces it.
    f = recovery.project(lambda w: w.x[0] - 2 * w.x[1], V)
    assert float(norms.l2_error(f, lambda x: x[0] - 2 * x[1])) < 1e-10
    # A vector space: projecting a Field of that space returns it; tensors go on the scalar space.
    V2 = fem.SplineSpace(geo, shape=(2,))
    c = jnp.asarray(np.random.default_rng(1).normal(size=V2.ndofs))
    u = fem.Field(V2, c)
    back = recovery.project(lambda w: w.u.value, V2, u=u)
    np.testing.assert_allclose(back.coeffs, c, atol=1e-10)
    # A scalar target space of the user (same knots) gives the same recovered stress as the default one.
    S = fem.SplineSpace(geo)
    a = recovery.recover_stress(u, 3.0, 0.25, "plane_stress")
    b = recovery.recover_stress(u, 3.0, 0.25, "plane_stress", space=S)
    np.testing.assert_allclose(a.coeffs, b.coeffs, rtol=1e-12, atol=1e-12)
    assert recovery.scalar_space(V2).ndofs == S.ndofs and recovery.scalar_space(S) is S


# --- Kirsch plate: convergence of the recovered stress ------------------------------------------------------
@jax.jit
def _kirsch(V):
    K = fem.assemble(ELASTIC, V)
    f = fem.assemble(exact_traction, V, boundary="outer", sigma=kirsch_stress)
    bcs = [fem.DirichletBC(V, "bottom", 0.0, component=1), fem.DirichletBC(V, "right", 0.0, component=0)]
    return fem.solve(K, f, bc=bcs)


@fem.functional
def _raw_sxx_error(w):
    return (library.stress(w.u.grad, E, NU, "plane_strain")[0, 0] - w.exact.value) ** 2


def _sxx(x):
    return kirsch_stress(x)[0, 0]


def kirsch_recovery_study(degree, levels):
    """L2 errors of the recovered and of the pointwise s_xx, and the recovered s_xx at (0, 1) (exact 3 T)."""
    rec, raw, top = [], [], []
    for n in levels:
        V = fem.SplineSpace(fem.geometry.plate_with_hole().refine(degree=degree, elements=n), shape=(2,))
        u = _kirsch(V)
        sig = recovery.recover_stress(u, E, NU, "plane_strain")
        rec.append(float(norms.l2_error(sig[0, 0], _sxx)))
        raw.append(float(jnp.sqrt(fem.assemble(_raw_sxx_error, recovery.scalar_space(V), u=u, exact=_sxx))))
        top.append(float(sig[0, 0](np.array([[0.0, 1.0]]))[0]))
    h = 1.0 / np.asarray(levels, float)
    rate = np.polyfit(np.log(h), np.log(rec), 1)[0]
    return np.asarray(rec), np.asarray(raw), np.asarray(top), rate


# Measured, degree 2, levels 8-16-32: recovered L2 errors 0.420, 0.115, 0.0237 (fitted rate 2.07; pairwise
# 1.86, 2.28), pointwise sigma(u_h) 0.606, 0.195, 0.0520; recovered s_xx(0, 1) - 3 T = 0.442, 0.166, 0.043.
# Degree 3: 0.133, 0.0190, 0.00165 (rate 3.17), s_xx(0, 1) - 3 T = 0.112, 0.0129, 0.0013. The stress of a
# degree-p displacement converges like h^p; 8 -> 16 is still slightly pre-asymptotic at the hole.
def test_kirsch_recovered_stress_converges_and_concentration_approaches_3T():
    rec, raw, top, rate = kirsch_recovery_study(2, [8, 16])
    assert rate > 2 - 0.2, (rec, rate)
    assert np.all(rec < raw), (rec, raw)  # the projection is closer to the exact stress than sigma(u_h)
    err = np.abs(top - 3 * T)
    assert err[-1] < 0.2 and err[-1] < err[0], top


@pytest.mark.slow
@pytest.mark.parametrize("degree", [2, 3])
def test_kirsch_recovered_stress_full_study(degree):
    rec, raw, top, rate = kirsch_recovery_study(degree, [8, 16, 32])
    assert rate > degree - 0.2, (rec, rate)
    assert np.all(np.diff(np.abs(top - 3 * T)[1:]) < 0), top
    assert abs(top[-1] - 3 * T) < 0.05, top


# --- gradients ----------------------------------------------------------------------------------------------
_Q1 = fem.LagrangeSpace(mesh.unit_square(4, cell="quad"), 1, shape=(2,))
_POINT = np.array([[0.3, 0.6]])


@jax.jit
def _recovered_fields(params):
    """A clamped block pulled at its right edge by a prescribed displacement delta and a traction t."""
    E_, nu_, delta, t = params
    V = _Q1
    K = fem.assemble(library.linear_elasticity(None, None, "plane_stress"), V, E=E_, nu=nu_)
    f = fem.assemble(library.traction, V, boundary="top", t=jnp.stack([t, 0.0]))
    bcs = [fem.DirichletBC(V, "left", 0.0), fem.DirichletBC(V, "right", delta, component=0)]
    u = fem.solve(K, f, bc=bcs)
    # Both variants in one objective (one compilation): consistent stress, lumped von Mises.
    sig = recovery.recover_stress(u, E_, nu_, "plane_stress")
    vm = recovery.recover_von_mises(u, E_, nu_, "plane_stress", mass="lumped")
    return sig, vm


def _recovered_objective(params):
    # Point evaluation locates the point on the host, so it runs outside jax.jit (gradients still flow).
    sig, vm = _recovered_fields(params)
    return sig[0, 0](_POINT)[0] + norms.l2_norm(vm) + 0.5 * sig[0, 1](_POINT)[0]


def test_gradient_of_recovered_stress_matches_finite_differences():
    p0 = jnp.array([50.0, 0.3, 0.02, 0.4])

    J = _recovered_objective
    g = np.asarray(jax.grad(J)(p0))
    assert np.all(np.isfinite(g)) and np.all(np.abs(g) > 0), g
    for i in range(4):
        h = 1e-6 * max(1.0, abs(float(p0[i])))
        e = jnp.zeros(4).at[i].set(h)
        fd = (float(J(p0 + e)) - float(J(p0 - e))) / (2 * h)
        np.testing.assert_allclose(g[i], fd, rtol=1e-6, atol=1e-8 * abs(float(J(p0))))
    # Taylor remainder along a direction: |J(p + s d) - J(p) - s g.d| falls like s^2.
    d = jnp.array([5.0, 0.02, 0.004, 0.1])
    s = np.array([1e-1, 5e-2, 2.5e-2])
    J0, gd = float(J(p0)), float(np.dot(g, d))
    rem = [abs(float(J(p0 + si * d)) - J0 - si * gd) for si in s]
    assert np.polyfit(np.log(s), np.log(rem), 1)[0] > 1.8, rem


def test_von_mises_gradient_is_finite_at_zero_stress():
    u = fem.Field(_Q1, jnp.zeros(_Q1.ndofs))
    g = jax.grad(lambda c: norms.l2_norm(recovery.recover_von_mises(fem.Field(_Q1, c), 1.0, 0.3)))(u.coeffs)
    assert np.all(np.isfinite(np.asarray(g)))


def test_recovery_under_jit_matches_eager():
    c = jnp.asarray(np.random.default_rng(2).normal(size=_Q1.ndofs)) * 1e-2
    eager = recovery.recover_stress(fem.Field(_Q1, c), 10.0, 0.3).coeffs
    jitted = jax.jit(lambda c: recovery.recover_stress(fem.Field(_Q1, c), 10.0, 0.3).coeffs)(c)
    np.testing.assert_allclose(jitted, eager, rtol=1e-12, atol=1e-14)


# --- errors -------------------------------------------------------------------------------------------------
def test_clear_errors():
    u = fem.Field(_Q1, jnp.zeros(_Q1.ndofs))
    S = recovery.scalar_space(_Q1)
    with pytest.raises(ValueError, match="mass must be"):
        recovery.recover_stress(u, 1.0, 0.3, mass="diagonal")
    with pytest.raises(ValueError, match="kind"):
        recovery.recover_stress(u, 1.0, 0.3, "3d")
    with pytest.raises(ValueError, match="displacement Field of shape"):
        recovery.recover_stress(fem.Field(S, jnp.zeros(S.ndofs)), 1.0, 0.3)
    with pytest.raises(TypeError, match="fem.Field"):
        recovery.recover_stress(jnp.zeros(_Q1.ndofs), 1.0, 0.3)
    with pytest.raises(ValueError, match="share the elements"):
        recovery.recover_stress(u, 1.0, 0.3, space=fem.LagrangeSpace(mesh.unit_square(3, cell="quad")))
    with pytest.raises(ValueError, match="value shape"):
        recovery.project(lambda w: w.u.grad, _Q1, u=u)
    with pytest.raises(TypeError, match="callable"):
        recovery.project(3.0, S)
    with pytest.raises(IndexError, match="tensor components"):
        recovery.recover_stress(u, 1.0, 0.3)[0, 0, 0]
    P2 = fem.LagrangeSpace(mesh.unit_square(2), 2, shape=(2,))
    with pytest.raises(Exception, match="positive row sums"):  # P2 triangle vertex functions integrate to 0
        recovery.recover_stress(fem.Field(P2, jnp.zeros(P2.ndofs)), 1.0, 0.3, mass="lumped")


@pytest.mark.slow
def test_gradient_of_recovered_stress_with_respect_to_node_positions():
    m = mesh.unit_square(3, cell="quad")
    X0 = jnp.asarray(m.points)
    V0 = fem.LagrangeSpace(m, 1, shape=(2,))
    form = library.linear_elasticity(10.0, 0.3, "plane_stress")

    @jax.jit
    def J(X):
        V = V0.with_points(X)
        K = fem.assemble(form, V)
        f = fem.assemble(library.traction, V, boundary="right", t=jnp.array([1.0, 0.5]))
        u = fem.solve(K, f, bc=fem.DirichletBC(V, "left", 0.0))
        sig = recovery.recover_stress(u, 10.0, 0.3, "plane_stress")
        return jnp.sum(sig.coeffs[0, 0] ** 2) + jnp.sum(sig.coeffs[0, 1])

    g = jax.grad(J)(X0)
    interior = (X0[:, 0] > 0) & (X0[:, 0] < 1) & (X0[:, 1] > 0) & (X0[:, 1] < 1)
    d = jnp.where(interior[:, None], jnp.asarray(np.random.default_rng(3).normal(size=X0.shape)), 0.0)
    h = 1e-6
    fd = (float(J(X0 + h * d)) - float(J(X0 - h * d))) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(g * d)), fd, rtol=1e-6)


def test_pointwise_von_mises_gradient_is_finite_at_zero_stress():
    for d, kind in [(2, "plane_strain"), (3, "3d")]:
        g = jax.grad(lambda s, k=kind: library.von_mises(s, 0.3, k))(jnp.zeros((d, d)))
        assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g) == 0.0)
    # away from zero the value is the textbook one: uniaxial stress s gives von Mises |s|
    s = jnp.zeros((3, 3)).at[0, 0].set(-2.0)
    assert abs(float(library.von_mises(s)) - 2.0) < 1e-14
