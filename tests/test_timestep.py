"""Theta-method time stepping: exact decay of a sine mode, orders in dt, gradients, factorisation reuse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from demo_runs import tiny

from igax import solvers

N = 24
H = 1.0 / (N + 1)
X = np.arange(1, N + 1) * H
LAM = 4.0 * np.sin(np.pi * H / 2) ** 2 / H**2  # discrete eigenvalue of the sine mode


def _matrices():
    L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (N, N)) / H**2
    K = solvers.SparseMatrix.from_scipy(L, positive_definite=True)
    # P1 mass matrix (h/6 [1 4 1]) on the same pattern, scaled by 1/h so the eigen-relation stays simple
    M = solvers.SparseMatrix.from_scipy(
        sp.diags([1.0, 4.0, 1.0], [-1, 0, 1], (N, N)) / 6.0, positive_definite=True
    )
    return M, K


M, K = _matrices()
U0 = jnp.asarray(np.sin(np.pi * X))
MU = (4.0 + 2.0 * np.cos(np.pi * H)) / 6.0  # M's eigenvalue for the sine mode


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_sine_mode_decays_exactly_as_the_scheme_predicts(theta):
    dt, n = 2e-3, 25
    uT, ys = solvers.theta_method(M, K, U0, dt=dt, nsteps=n, theta=theta, observe=lambda t, u: u @ U0)
    amp = (MU - (1 - theta) * dt * LAM) / (MU + theta * dt * LAM)
    np.testing.assert_allclose(uT, amp**n * U0, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(ys, amp ** np.arange(1, n + 1) * float(U0 @ U0), rtol=1e-11)


def test_orders_in_dt():
    T, steps = 0.05, np.array([8, 16, 32])
    exact = np.exp(-LAM / MU * T) * np.asarray(U0)  # semi-discrete solution of M u' + K u = 0
    for theta, order in ((1.0, 1.0), (0.5, 2.0)):
        errs = [
            float(
                jnp.max(
                    jnp.abs(solvers.theta_method(M, K, U0, dt=T / n, nsteps=int(n), theta=theta)[0] - exact)
                )
            )
            for n in steps
        ]
        slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
        assert abs(slope - order) < 0.1, (theta, errs, slope)


def test_load_and_gradients_match_finite_differences():
    def final(kappa, u0, a, checkpoint_every=None):
        def f(t):
            return a * jnp.sin(3.0 * t) * jnp.asarray(X * (1 - X))

        uT, _ = solvers.theta_method(
            M, kappa * K, u0, dt=0.01, nsteps=12, theta=0.5, f=f, checkpoint_every=checkpoint_every
        )
        return uT

    w = jnp.asarray(np.random.default_rng(0).normal(size=N))

    def loss(kappa, u0, a, ck=None):
        return jnp.vdot(w, final(kappa, u0, a, ck)) + jnp.sum(final(kappa, u0, a, ck) ** 2)

    args = (0.7, U0, 2.0)
    solvers.solver_stats.reset()
    g = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
    assert solvers.solver_stats.factorizations == 1  # one factorisation for the whole forward + backward pass
    g_ck = jax.jit(jax.grad(lambda *a: loss(*a, ck=4), argnums=(0, 1, 2)))(*args)
    for a, b in zip(g, g_ck, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    lj = jax.jit(loss)
    eps = 1e-6
    fd_k = (lj(0.7 + eps, U0, 2.0) - lj(0.7 - eps, U0, 2.0)) / (2 * eps)
    fd_a = (lj(0.7, U0, 2.0 + eps) - lj(0.7, U0, 2.0 - eps)) / (2 * eps)
    d = jnp.asarray(np.random.default_rng(1).normal(size=N))
    fd_u = (lj(0.7, U0 + eps * d, 2.0) - lj(0.7, U0 - eps * d, 2.0)) / (2 * eps)
    np.testing.assert_allclose(g[0], fd_k, rtol=1e-7)
    np.testing.assert_allclose(g[2], fd_a, rtol=1e-7)
    np.testing.assert_allclose(jnp.vdot(g[1], d), fd_u, rtol=1e-7)


def test_checkpointing_bounds_gradient_memory():
    def loss(kappa, ck):
        return jnp.sum(
            solvers.theta_method(M, kappa * K, U0, dt=1e-3, nsteps=64, checkpoint_every=ck)[0] ** 2
        )

    mem = {
        ck: jax.jit(jax.grad(lambda k, ck=ck: loss(k, ck)))
        .lower(1.0)
        .compile()
        .memory_analysis()
        .temp_size_in_bytes
        for ck in (None, 8)
    }
    assert mem[8] < 0.5 * mem[None], mem


def test_bad_arguments():
    with pytest.raises(ValueError, match="theta must lie in"):
        solvers.theta_method(M, K, U0, dt=0.1, nsteps=2, theta=0.2)
    with pytest.raises(ValueError, match="checkpoint_every"):
        solvers.theta_method(M, K, U0, dt=0.1, nsteps=10, checkpoint_every=3)
    other = solvers.SparseMatrix.from_scipy(sp.eye(N))
    with pytest.raises(ValueError, match="share one sparsity pattern"):
        solvers.theta_method(other, K, U0, dt=0.1, nsteps=2)
    with pytest.raises(ValueError, match="u0 must have shape"):
        solvers.theta_method(M, K, U0[:-1], dt=0.1, nsteps=2)


def test_heat_equation_example(tmp_path_factory):
    out = tiny("heat", tmp_path_factory).result  # main(out=..., **tiny size), also read by test_cli
    assert abs(out["implicit_euler"]["order_in_dt"] - 1.0) < 0.15
    assert abs(out["crank_nicolson"]["order_in_dt"] - 2.0) < 0.15
    assert max(out["crank_nicolson"]["error_vs_discrete_amplification"]) < 1e-12
    assert abs(out["grad_kappa"] - out["grad_kappa_fd"]) < 1e-6 * abs(out["grad_kappa_fd"])
    assert out["factorisations_for_gradient"] == 1
