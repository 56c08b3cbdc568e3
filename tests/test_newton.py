"""Newton with implicit differentiation on a 1D nonlinear diffusion problem (P1, u = 0 at both ends)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from demo_runs import tiny

from igax.solvers import ElementSystem, NewtonError, SparseMatrix, newton_solve

NE = 32
H = 1.0 / NE


def _system():
    nodes = np.arange(NE + 1)
    dof = np.where((nodes > 0) & (nodes < NE), nodes - 1, -1)  # boundary nodes fixed at 0
    elem_dofs = np.stack([dof[:-1], dof[1:]], axis=1)  # (nel, 2)

    def energy(u_e, f_e, c):
        # int_e (1 + c u^2) u'^2 / 2 - f u (midpoint rule): its Euler-Lagrange equation is the nonlinear
        # diffusion -((1 + c u^2) u')' + c u u'^2 = f, and its tangent (the Hessian) is symmetric.
        um = jnp.mean(u_e)
        g = (u_e[1] - u_e[0]) / H
        return H * (0.5 * (1.0 + c * um**2) * g**2 - f_e * um)

    return ElementSystem.from_energy(energy, elem_dofs, NE - 1, arg_axes=(0, None)), elem_dofs


SYS, ELEM = _system()
F = 8.0 + 4.0 * np.sin(np.linspace(0.0, 3.0, NE))  # (nel,) source per element
C = 1.0


def _solve(f, c=C, **kw):
    return newton_solve(SYS.residual, jnp.zeros(NE - 1), f, c, tangent=SYS.tangent, method="superlu", **kw)


def test_element_tangent_matches_dense_jacobian():
    u = jnp.asarray(np.random.default_rng(0).normal(size=NE - 1))
    K = SYS.tangent(u, jnp.asarray(F), C)
    J = jax.jacfwd(SYS.residual)(u, jnp.asarray(F), C)
    np.testing.assert_allclose(K.todense(), J, rtol=1e-13, atol=1e-13)
    assert K.symmetric
    np.testing.assert_allclose(K.todense(), K.todense().T, atol=1e-13)
    assert K.nnz == 3 * (NE - 1) - 2  # tridiagonal on the free dofs


def test_quadratic_convergence():
    res = _solve(jnp.asarray(F), rtol=1e-13, line_search=False)
    h = res.history
    assert int(res.status) == 0 and 3 <= int(res.iterations) <= 10
    assert h[-1] <= 1e-13 * h[0]
    # quadratic: log r_{k+1} = 2 log r_k + const on the asymptotic iterations (before round-off)
    asym = [k for k in range(len(h) - 1) if h[k + 1] > 1e-11 * h[0]]
    x, y = np.log(h[asym][-3:]), np.log(h[np.array(asym[-3:]) + 1])
    slope = np.polyfit(x, y, 1)[0]
    assert 1.8 < slope < 2.6, (h, slope)
    ratios = h[np.array(asym) + 1] / h[asym] ** 2
    assert np.all(ratios[-2:] < 10.0), ratios


def test_solution_satisfies_the_discrete_equation_and_limits():
    u = _solve(jnp.asarray(F), rtol=1e-12).value
    np.testing.assert_allclose(SYS.residual(u, jnp.asarray(F), C), 0.0, atol=1e-10)
    # c = 0 makes it linear: u solves K0 u = f exactly
    u0 = _solve(jnp.asarray(F), c=0.0).value
    K0 = SYS.tangent(jnp.zeros(NE - 1), jnp.asarray(F), 0.0).todense()
    load = 0.5 * H * (F[:-1] + F[1:])
    np.testing.assert_allclose(K0 @ u0, load, rtol=1e-10)


def test_implicit_gradient_matches_finite_differences():
    f0 = jnp.asarray(F)
    w = jnp.asarray(np.random.default_rng(1).normal(size=NE - 1))

    @jax.jit
    def loss(f, c):
        u = _solve(f, c, rtol=1e-13).value
        return jnp.vdot(w, u) + jnp.sum(u**2)

    gf, gc = jax.jit(jax.grad(loss, argnums=(0, 1)))(f0, C)
    d = jnp.asarray(np.random.default_rng(2).normal(size=NE))
    eps = 1e-5 * float(jnp.linalg.norm(f0)) / float(jnp.linalg.norm(d))
    fd = (loss(f0 + eps * d, C) - loss(f0 - eps * d, C)) / (2 * eps)
    assert abs(float(fd) - float(jnp.vdot(gf, d))) < 1e-7 * abs(float(fd))
    fd_c = (loss(f0, C + 1e-5) - loss(f0, C - 1e-5)) / 2e-5
    assert abs(float(fd_c) - float(gc)) < 1e-7 * abs(float(fd_c))
    # forward mode through the same implicit rule
    _, tangent = jax.jvp(lambda f: loss(f, C), (f0,), (d,))
    assert abs(float(tangent) - float(jnp.vdot(gf, d))) < 1e-10 * abs(float(tangent))


def test_gradient_memory_does_not_grow_with_iterations():
    def loss(f, maxiter):
        return jnp.sum(_solve(f, maxiter=maxiter, throw=False).value ** 2)

    f0 = jnp.asarray(F)
    fwd = str(jax.make_jaxpr(lambda f: loss(f, 50))(f0))
    bwd = str(jax.make_jaxpr(jax.grad(lambda f: loss(f, 50)))(f0))
    # the only loops in the gradient are the forward Newton loop and its line search: nothing runs backwards
    assert bwd.count("while[") == fwd.count("while[") == 2
    assert "scan[" not in bwd
    mem = [
        jax.jit(jax.grad(lambda f, m=m: loss(f, m))).lower(f0).compile().memory_analysis().temp_size_in_bytes
        for m in (5, 50)
    ]
    assert mem[1] <= mem[0] + 8 * 64  # only the (maxiter + 1,) residual history may grow


def test_line_search_rescues_a_diverging_newton():
    # R(u) = arctan(u) - 0.5: plain Newton diverges from |u0| > 1.39; the backtracking search converges.
    n = 5
    pattern = SparseMatrix.from_scipy(np.eye(n)).pattern

    def residual(u):
        return jnp.arctan(u) - 0.5

    def tangent(u):
        return SparseMatrix(1.0 / (1.0 + u**2), pattern, symmetric=True)

    u0 = jnp.full(n, 3.0)
    res = newton_solve(residual, u0, tangent=tangent, rtol=1e-12)
    np.testing.assert_allclose(res.value, np.tan(0.5), rtol=1e-12)
    bad = newton_solve(residual, u0, tangent=tangent, line_search=False, maxiter=10, throw=False)
    assert int(bad.status) != 0
    with pytest.raises(NewtonError, match="did not converge|NaN or inf|linear solve"):
        newton_solve(residual, u0, tangent=tangent, line_search=False, maxiter=10)


def test_failures_raise_clear_errors():
    f0 = jnp.asarray(F)
    with pytest.raises(NewtonError, match=r"did not converge within maxiter.*iterations 1"):
        _solve(f0, maxiter=1, rtol=1e-14)
    with pytest.raises(NewtonError, match="NaN or inf"):
        _solve(f0.at[3].set(jnp.nan))

    def singular_tangent(u, f, c):
        K = SYS.tangent(u, f, c)
        return K.with_values(0.0 * K.values)

    with pytest.raises(NewtonError, match="linear solve with the tangent failed"):
        newton_solve(SYS.residual, jnp.zeros(NE - 1), f0, C, tangent=singular_tangent)
    with pytest.raises(TypeError, match="ElementSystem"):
        newton_solve(SYS.residual, jnp.zeros(NE - 1), f0, C, tangent=None)
    with pytest.raises(ValueError, match="elem_dofs must lie in"):
        ElementSystem(lambda u: u, ELEM + 5, NE - 1)


def _example(name, tmp_path_factory):
    """examples/NAME main(**DEMO["sizes"]["tiny"]) as the CLI runs it, shared with tests/test_cli.py."""
    return tiny(name, tmp_path_factory).result


def test_nonlinear_diffusion_example(tmp_path_factory):
    out = _example("nonlinear-diffusion", tmp_path_factory)
    h = np.asarray(out["residual_norms"])
    assert h[-1] < 1e-12 * h[0] and out["iterations"] <= 8
    k = int(np.argmax(h < 1e-3 * h[0]))  # first iterate in the asymptotic range
    assert h[k + 1] < 10.0 * h[k] ** 2 / h[0]  # quadratic (relative to the initial residual)
    assert abs(out["grad_directional"] - out["grad_directional_fd"]) < 1e-6 * abs(out["grad_directional_fd"])


def test_hyperelasticity_example_matches_the_homogeneous_closed_form(tmp_path_factory):
    out = _example("hyperelasticity", tmp_path_factory)
    assert out["max_error"] < 1e-12  # P1 reproduces the homogeneous deformation exactly
    h = np.asarray(out["residual_norms"])
    assert h[-1] < 1e-12 * h[0] and out["iterations"] <= 8
    assert abs(out["dl2_dmu"] - out["dl2_dmu_reference"]) < 1e-7 * abs(out["dl2_dmu_reference"])
