"""Nonlinear diffusion -div((1 + c u^2) grad u) = f on the unit square: Newton, then an adjoint gradient.

Space: P1 triangles on a structured n x n mesh, u = 0 on the boundary. The element residual

    r_e(u_e) = area_e * ((1 + c ubar_e^2) G_e^T G_e u_e - f_e / 3)     (G_e: the constant P1 gradients)

is the only thing written by hand: :class:`igax.solvers.ElementSystem` assembles the global residual and
the sparse tangent (element Jacobians by ``jax.jacfwd``; the tangent is unsymmetric). :func:`newton_solve`
converges quadratically; the solution is differentiated implicitly, so the gradient of a misfit with respect
to the source field costs one adjoint solve with the tangent at the solution, whatever the number of Newton
steps.

Run: ``python examples/nonlinear_diffusion.py`` or ``igax demo nonlinear-diffusion``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from igax import fem, solvers

DEMO = {
    "name": "nonlinear-diffusion",
    "description": "Newton with implicit differentiation on -div((1 + c u^2) grad u) = f (P1 triangles)",
    "sizes": {"tiny": {"n": 12}, "small": {"n": 32}, "default": {"n": 96}},
}


def p1_gradients(nodes, tris):
    """Constant basis gradients ``(nel, 2, 3)`` and areas ``(nel,)`` of P1 triangles."""
    p = nodes[tris]  # (nel, 3, 2)
    J = np.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]], axis=2)  # (nel, 2, 2), columns = edge vectors
    ref = np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])  # reference gradients (2, 3)
    G = np.einsum("eji,jk->eik", np.linalg.inv(J), ref)  # J^-T @ ref
    return G, 0.5 * np.abs(np.linalg.det(J))


def element_residual(u_e, f_e, G_e, area_e, c):
    grad_u = G_e @ u_e  # (2,)
    k = 1.0 + c * jnp.mean(u_e) ** 2
    return area_e * (k * (G_e.T @ grad_u) - f_e / 3.0)


def main(n: int = 32, c: float = 4.0, amplitude: float = 60.0, out: str | None = None) -> dict:
    """Solve, check convergence and the adjoint gradient; returns numbers (a picture goes to ``out``)."""
    jax.config.update("jax_enable_x64", True)
    mesh = fem.unit_square(n, cell="triangle")  # 2 n^2 triangles
    nodes, tris = mesh.points, mesh.cells
    fixed = np.zeros(len(nodes), dtype=bool)
    fixed[np.unique(mesh.boundary_facets())] = True  # Dirichlet on the whole boundary
    free = np.nonzero(~fixed)[0]
    dof_of_node = -np.ones(len(nodes), dtype=np.int64)
    dof_of_node[free] = np.arange(free.size)
    G, area = p1_gradients(nodes, tris)
    system = solvers.ElementSystem(element_residual, dof_of_node[tris], free.size, arg_axes=(0, 0, 0, None))
    centroids = nodes[tris].mean(axis=1)
    f = jnp.asarray(amplitude * np.exp(-20 * ((centroids[:, 0] - 0.4) ** 2 + (centroids[:, 1] - 0.6) ** 2)))
    Gj, areaj = jnp.asarray(G), jnp.asarray(area)

    def solve(f, **kw):
        return solvers.newton_solve(
            system.residual, jnp.zeros(free.size), f, Gj, areaj, c, tangent=system.tangent, **kw
        )

    t = time.perf_counter()
    res = jax.block_until_ready(solve(f, rtol=1e-12))
    t_solve = time.perf_counter() - t
    hist = res.history
    print(f"{free.size} unknowns; Newton residuals {np.array2string(hist, precision=2)} ({t_solve:.2f} s)")

    target = 0.8 * res.value  # a misfit to the solution of a smaller source

    def loss(f):
        return 0.5 * jnp.sum((solve(f, rtol=1e-12).value - target) ** 2)

    g = jax.jit(jax.grad(loss))(f)
    d = jnp.asarray(np.random.default_rng(0).normal(size=f.shape))
    eps = 1e-6 * float(jnp.linalg.norm(f)) / float(jnp.linalg.norm(d))
    lj = jax.jit(loss)
    fd = float((lj(f + eps * d) - lj(f - eps * d)) / (2 * eps))
    dg = float(jnp.vdot(g, d))
    print(f"directional derivative: adjoint {dg:.10e}, finite difference {fd:.10e}")
    if out is not None:
        u_nodes = np.zeros(len(nodes))
        u_nodes[free] = np.asarray(res.value)
        _plot(out, nodes, tris, u_nodes, np.asarray(g))
    return {
        "unknowns": int(free.size),
        "iterations": int(res.iterations),
        "residual_norms": hist.tolist(),
        "u_max": float(jnp.max(res.value)),
        "grad_directional": dg,
        "grad_directional_fd": fd,
        "solve_seconds": t_solve,
    }


def _plot(out, nodes, tris, u, grad_f):
    import os

    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    im = axes[0].tripcolor(nodes[:, 0], nodes[:, 1], tris, u, shading="gouraud")
    axes[0].set_title("u")
    fig.colorbar(im, ax=axes[0])
    im = axes[1].tripcolor(nodes[:, 0], nodes[:, 1], tris, facecolors=grad_f)
    axes[1].set_title("d misfit / d f (per element)")
    fig.colorbar(im, ax=axes[1])
    for ax in axes:
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "nonlinear_diffusion.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(out="pictures")
