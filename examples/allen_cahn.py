"""Allen-Cahn phase separation on a spline space, adaptive time steps, and a gradient through the trajectory.

    u_t = -m (u^3 - u - eps^2 Laplace(u))   on the unit square, natural (no-flux) boundary conditions,

written as the residual form ``m (eps^2 grad u . grad v + (u^3 - u) v)`` and stepped by
:func:`igax.fem.solve_transient`: every step is one Newton solve on igax's assembled residual and autodiff
tangent (degree-2 splines), with the mass matrix of the space. A smooth, small initial perturbation first
separates quickly into the phases u = +-1 (fast), then the interfaces move slowly (curvature-driven
coarsening). :func:`igax.fem.adapt_steps` chooses the steps by step doubling with Crank-Nicolson (from
``dt0``, growing at most 2x per step, smaller again while the interfaces form); the trajectory is then
stepped with BDF2 on that schedule.

The loss is the Ginzburg-Landau free energy ``E(u(T)) = int eps^2/2 |grad u|^2 + (u^2 - 1)^2 / 4`` at the
end. Its derivative with respect to the mobility ``m`` goes through the whole trajectory on the adaptive
schedule (the step sizes are constants in the gradient), by one adjoint solve per step with checkpointed
segments; a central difference checks it. The energy must decrease along the trajectory (a gradient flow).

Run: ``python examples/allen_cahn.py`` or ``igax demo allen-cahn``.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from igax import fem

DEMO = {
    "name": "allen-cahn",
    "description": "Allen-Cahn phase separation: adaptive steps, BDF2, d(free energy)/d(mobility)",
    "sizes": {
        "tiny": {"elements": 6, "eps": 0.1, "T": 3.0, "tol": 2e-2},
        "small": {"elements": 16, "eps": 0.05, "T": 4.0, "tol": 1e-2},
        "default": {"elements": 32, "eps": 0.025, "T": 6.0, "tol": 5e-3},
    },
}


@fem.residual_form(symmetric=True, inputs={"m": "scalar", "eps": "scalar"})
def allen_cahn(u, v, w):
    """``m (eps^2 grad u . grad v + (u^3 - u) v)``: the mobility times the free energy's first variation."""
    return w.m * (w.eps**2 * jnp.dot(u.grad, v.grad) + (u.value**3 - u.value) * v.value)


@fem.energy_form(inputs={"eps": "scalar"})
def free_energy(u, w):
    """The Ginzburg-Landau density ``eps^2/2 |grad u|^2 + (u^2 - 1)^2 / 4``."""
    return 0.5 * w.eps**2 * jnp.dot(u.grad, u.grad) + 0.25 * (u.value**2 - 1.0) ** 2


def initial_state(x):
    """A smooth perturbation of u = 0 (the unstable state): a few cosine modes, amplitude 0.3."""
    X, Y = x[0], x[1]
    return 0.3 * (
        jnp.cos(2 * jnp.pi * X) * jnp.cos(jnp.pi * Y)
        + 0.6 * jnp.sin(3 * jnp.pi * X * Y)
        - 0.25 * jnp.cos(jnp.pi * Y)
    )


def main(
    elements: int = 16,
    eps: float = 0.05,
    T: float = 4.0,
    tol: float = 1e-2,
    m: float = 1.0,
    scheme: str = "bdf2",
    out: str | None = None,
) -> dict:
    """Choose the steps, step the trajectory, differentiate ``E(u(T))`` by the mobility; returns numbers."""
    jax.config.update("jax_enable_x64", True)
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=elements))
    u0 = fem.project(lambda w: initial_state(w.x), V).coeffs
    t = time.perf_counter()
    sched = fem.adapt_steps(allen_cahn, V, u0, t_span=(0.0, T), tol=tol, dt0=1e-3 * T, m=m, eps=eps)
    t_adapt = time.perf_counter() - t
    print(
        f"{V.ndofs} dofs; adaptive steps: {sched.nsteps} accepted ({sched.rejected} rejected), dt from "
        f"{sched.dts.min():.2e} to {sched.dts.max():.2e} ({t_adapt:.1f} s)"
    )

    def energy(u):
        return fem.assemble_energy(free_energy, V, u, eps=eps)

    def trajectory(m):
        """The final state and the energy after every step, on the adaptive schedule (a constant)."""
        uT, E = fem.solve_transient(
            allen_cahn, V, u0, dt=sched.dts, scheme=scheme, checkpoint_every=16, m=m, eps=eps,
            observe=lambda t, u: energy(u),
        )  # fmt: skip
        return uT, E

    def loss(m):
        return energy(trajectory(m)[0])

    run = jax.jit(trajectory)
    uT, E = run(m)
    E = np.asarray(E)
    t = time.perf_counter()
    g = float(jax.jit(jax.grad(loss))(m))
    t_grad = time.perf_counter() - t
    h = 1e-5
    fd = float((energy(run(m + h)[0]) - energy(run(m - h)[0])) / (2 * h))  # the compiled forward, twice
    E0 = float(energy(u0))
    decreasing = bool(np.all(np.diff(np.concatenate([[E0], E])) <= 0))
    print(f"free energy: {E0:.5f} at t = 0, {E[-1]:.5f} at t = {T}; decreasing at every step: {decreasing}")
    print(f"dE(u(T))/dm = {g:.10e} (central difference {fd:.10e}; {t_grad:.1f} s with compiling)")
    result = {
        "dofs": V.ndofs,
        "steps": sched.nsteps,
        "rejected": sched.rejected,
        "dt_min": float(sched.dts.min()),
        "dt_max": float(sched.dts.max()),
        "energy_initial": E0,
        "energy_final": float(E[-1]),
        "energy_max_increase": float(np.max(np.diff(np.concatenate([[E0], E])))),
        "grad_mobility": g,
        "grad_mobility_fd": fd,
        "u_final_range": [float(jnp.min(uT.coeffs)), float(jnp.max(uT.coeffs))],
    }
    if out is not None:
        os.makedirs(out, exist_ok=True)
        result["png"] = os.path.join(out, "allen_cahn.png")
        figure(fem.Field(V, u0), uT, np.cumsum(sched.dts), E, sched.dts).savefig(result["png"], dpi=110)
        print(f"wrote {result['png']}")
    return result


def figure(u0, uT, times, energies, dts, resolution: int = 80):
    """Initial and final phase fields, and the energy and step size over time, as a matplotlib Figure."""
    from matplotlib.figure import Figure

    s = (np.arange(resolution) + 0.5) / resolution
    X, Y = np.meshgrid(s, s, indexing="xy")
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, u, title in ((axes[0], u0, "u at t = 0"), (axes[1], uT, f"u at t = {times[-1]:.3g}")):
        values = np.asarray(u(pts)).reshape(X.shape)
        im = ax.imshow(values, origin="lower", extent=(0, 1, 0, 1), cmap="RdBu_r", vmin=-1.05, vmax=1.05)
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.colorbar(im, ax=axes[:2], shrink=0.85)
    ax = axes[2]
    ax.plot(times, energies, "-", color="k", label="free energy")
    ax.set_xlabel("t")
    ax.set_ylabel("free energy E(u(t))")
    ax2 = ax.twinx()
    ax2.semilogy(times, dts, ".", color="tab:orange", ms=3, label="step size")
    ax2.set_ylabel("adaptive step size dt")
    ax.set_title("energy decay and adaptive steps")
    return fig


if __name__ == "__main__":
    main(out="pictures")
