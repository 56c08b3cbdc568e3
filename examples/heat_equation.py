"""Heat equation u_t = kappa Laplace(u) on the unit square with the theta-method, and a gradient through time.

Space: bilinear (Q1) Lagrange elements on a uniform (m + 1) x (m + 1) mesh, so m x m interior nodes; M and K
are igax's own assembled mass and stiffness (``library.mass``, ``library.diffusion``), with u = 0 on the
boundary eliminated symmetrically (``DirichletBC.condense``: the boundary rows keep only their diagonal, so
the boundary values stay 0). The initial state is the first sine mode sin(pi x) sin(pi y) at the nodes, which
decays like exp(-2 pi^2 kappa t). On a uniform Q1 mesh the nodal sine mode is an exact eigenvector of the
pencil (K, M) (both are Kronecker products of the 1D P1 matrices), with the eigenvalue
lambda_h = 24 kappa sin^2(pi h / 2) / (h^2 (2 + cos(pi h))), so the semi-discrete mode decays like
exp(-lambda_h t), and the theta-method multiplies it by
(1 - (1 - theta) dt lambda_h) / (1 + theta dt lambda_h) per step. We report the error against both, the
observed orders of implicit Euler and Crank-Nicolson in dt, and d|u(T)|^2/d kappa (one factorisation for the
whole forward and backward pass) against a finite difference.

Run: ``python examples/heat_equation.py`` or ``igax demo heat``.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from igax import fem, solvers
from igax.fem import library

DEMO = {
    "name": "heat",
    "description": "Heat equation with implicit Euler / Crank-Nicolson: decay of a sine mode and d/dkappa",
    "sizes": {
        "tiny": {"m": 15, "steps": (5, 10, 20)},
        "small": {"m": 31, "steps": (10, 20, 40)},
        "default": {"m": 63, "steps": (10, 20, 40, 80)},
    },
}


def heat_matrices(m: int, kappa: float = 1.0):
    """``(M, K)`` assembled with Q1 elements on the unit square (``(m + 1)^2`` cells) with u = 0 on the
    boundary built in (same pattern), and the node coordinates ``X, Y``."""
    V = fem.LagrangeSpace(fem.unit_square(m + 1, cell="quad"), degree=1)
    bc = fem.DirichletBC(V, None, 0.0)
    zero = jnp.zeros(V.ndofs)
    M, _ = bc.condense(fem.assemble(library.mass, V), zero)
    K, _ = bc.condense(fem.assemble(library.diffusion, V, kappa=kappa), zero)
    X, Y = np.asarray(V.dof_coordinates()).T[:2]
    return M, K.with_values(K.values, positive_definite=True), X, Y


def eigenvalue(m: int, kappa: float = 1.0) -> float:
    """lambda_h of the nodal sine mode for Q1 on the uniform mesh of spacing ``h = 1 / (m + 1)``."""
    h = 1.0 / (m + 1)
    return 24.0 * kappa * np.sin(np.pi * h / 2) ** 2 / (h**2 * (2.0 + np.cos(np.pi * h)))


def sine_mode(X, Y):
    """sin(pi x) sin(pi y) at the nodes, exactly 0 on the boundary (where sin(pi) would leave 1e-16)."""
    u = np.sin(np.pi * X) * np.sin(np.pi * Y)
    on_boundary = (np.minimum(X, 1 - X) < 1e-12) | (np.minimum(Y, 1 - Y) < 1e-12)
    return jnp.asarray(np.where(on_boundary, 0.0, u))


def main(
    m: int = 31, steps=(10, 20, 40), T: float = 0.05, kappa: float = 1.0, out: str | None = None
) -> dict:
    """Run the study; returns the errors, observed orders and the gradient check as numbers."""
    jax.config.update("jax_enable_x64", True)
    M, K, X, Y = heat_matrices(m, kappa)
    u0 = sine_mode(X, Y)
    lam_h = eigenvalue(m, kappa)
    out_d: dict = {"unknowns": m * m}

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def final_state(u0, n, theta):
        return solvers.theta_method(M, K, u0, dt=T / n, nsteps=n, theta=theta)[0]

    for name, theta in (("implicit_euler", 1.0), ("crank_nicolson", 0.5)):
        err_semi, err_exact, err_scheme = [], [], []
        for n in steps:
            dt = T / n
            uT = final_state(u0, n, theta)
            amp = (1.0 - (1.0 - theta) * dt * lam_h) / (1.0 + theta * dt * lam_h)
            err_scheme.append(float(jnp.max(jnp.abs(uT - amp**n * u0))))
            err_semi.append(float(jnp.max(jnp.abs(uT - np.exp(-lam_h * T) * u0))))
            err_exact.append(float(jnp.max(jnp.abs(uT - np.exp(-2 * np.pi**2 * kappa * T) * u0))))
        order = -np.polyfit(np.log(np.asarray(steps, float)), np.log(err_semi), 1)[0]
        out_d[name] = {
            "dt": [T / n for n in steps],
            "error_vs_discrete_amplification": err_scheme,
            "error_vs_semidiscrete_decay": err_semi,
            "error_vs_exact_decay": err_exact,
            "order_in_dt": float(order),
        }
        print(f"{name:15s} order in dt {order:.2f}; errors vs exp(-lambda_h T): {np.array(err_semi)}")

    # gradient of |u(T)|^2 with respect to kappa, through 40 Crank-Nicolson steps (checkpointed in 4 segments)
    def loss(scale):
        uT, _ = solvers.theta_method(M, scale * K, u0, dt=T / 40, nsteps=40, theta=0.5, checkpoint_every=10)
        return jnp.sum(uT**2)

    solvers.solver_stats.reset()
    g = float(jax.jit(jax.grad(loss))(1.0))
    nfact = solvers.solver_stats.factorizations
    eps = 1e-6
    loss_jit = jax.jit(loss)
    fd = float((loss_jit(1.0 + eps) - loss_jit(1.0 - eps)) / (2 * eps))
    out_d["grad_kappa"] = g
    out_d["grad_kappa_fd"] = fd
    out_d["factorisations_for_gradient"] = nfact
    print(f"d|u(T)|^2/dkappa = {g:.8e} (finite difference {fd:.8e}); factorisations: {nfact}")
    if out is not None:
        os.makedirs(out, exist_ok=True)
        out_d["png"] = os.path.join(out, "heat_decay.png")
        decay_figure(u0, M, K, T, kappa).savefig(out_d["png"], dpi=120)
        print(f"wrote {out_d['png']}")
    return out_d


def decay_figure(u0, M, K, T: float, kappa: float = 1.0):
    """The maximum of u over time (Crank-Nicolson, 20 steps) against the exact decay, as a Figure.

    Returns:
        A ``matplotlib.figure.Figure`` (no pyplot state, so no GUI backend is needed).
    """
    from matplotlib.figure import Figure

    ts = np.linspace(0.0, T, 21)[1:]
    _, ys = solvers.theta_method(M, K, u0, dt=T / 20, nsteps=20, observe=lambda t, u: jnp.max(u))
    fig = Figure(figsize=(5, 3.5), layout="tight")
    ax = fig.add_subplot()
    ax.semilogy(ts, np.asarray(ys), "o", label="Crank-Nicolson, max u")
    ax.semilogy(ts, np.exp(-2 * np.pi**2 * kappa * ts), "-", label="exact, exp(-2 pi^2 kappa t)")
    ax.set_xlabel("t")
    ax.set_ylabel("max u (amplitude of the sine mode)")
    ax.legend()
    return fig


if __name__ == "__main__":
    main(out="pictures")
