"""Neo-Hookean hyperelasticity: uniaxial stretch of the unit square, Newton on the energy, implicit gradients.

Plane strain, P1 triangles, compressible Neo-Hookean energy density

    W(F) = mu/2 (tr(F^T F) - 2) - mu ln J + lam/2 (ln J)^2,      F = I + grad u,  J = det F.

The left edge cannot move in x, the corner (0, 0) cannot move at all, the right edge is pulled to
x = 1 + delta, top and bottom are free. The deformation is homogeneous, F = diag(l1, l2) with l1 = 1 + delta
and l2 from P_22 = mu (l2 - 1/l2) + lam ln(l1 l2) / l2 = 0, so P1 elements reproduce it exactly: the Newton
solution must match it to round-off. Only the element energy is written by hand;
:meth:`ElementSystem.from_energy` gives the residual (its gradient) and the symmetric sparse tangent (its
Hessian), and the derivative of the lateral contraction with respect to mu is one adjoint solve.

Run: ``python examples/hyperelasticity.py`` or ``igax demo hyperelasticity``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq

from igax import fem, solvers

DEMO = {
    "name": "hyperelasticity",
    "description": "Neo-Hookean uniaxial stretch (P1, Newton on the energy, adjoint d/dmu) vs closed form",
    "sizes": {"tiny": {"n": 4}, "small": {"n": 12}, "default": {"n": 32}},
}


def p1_gradients(nodes, tris):
    """Constant basis gradients ``(nel, 2, 3)`` and areas ``(nel,)`` of P1 triangles."""
    p = nodes[tris]  # (nel, 3, 2)
    J = np.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]], axis=2)  # (nel, 2, 2)
    ref = np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    return np.einsum("eji,jk->eik", np.linalg.inv(J), ref), 0.5 * np.abs(np.linalg.det(J))


def element_energy(u_e, g_e, G_e, area_e, mu, lam):
    """Neo-Hookean energy of one triangle; ``u_e`` free and ``g_e`` prescribed displacements, (6,) each."""
    d = (u_e + g_e).reshape(3, 2)  # (node, component)
    F = jnp.eye(2) + d.T @ G_e.T  # F_ij = delta_ij + sum_a d_ai dN_a/dX_j
    J = jnp.linalg.det(F)
    lnJ = jnp.log(J)  # NaN for an inverted element: the line search then backtracks
    return area_e * (0.5 * mu * (jnp.sum(F * F) - 2.0) - mu * lnJ + 0.5 * lam * lnJ**2)


def lateral_stretch(l1: float, mu: float, lam: float) -> float:
    """``l2`` with ``P_22 = 0`` under the axial stretch ``l1`` (closed form reference)."""
    return brentq(lambda l2: mu * (l2 - 1.0 / l2) + lam * np.log(l1 * l2) / l2, 0.2, 1.5)


def main(n: int = 12, delta: float = 0.3, mu: float = 1.0, lam: float = 2.0, out: str | None = None) -> dict:
    """Solve, compare with the closed form, check d(l2)/d(mu) against finite differences; returns numbers."""
    jax.config.update("jax_enable_x64", True)
    mesh = fem.unit_square(n, cell="triangle")  # 2 n^2 triangles
    nodes, tris = mesh.points, mesh.cells
    G, area = p1_gradients(nodes, tris)
    ndof = 2 * len(nodes)
    fixed = np.zeros(ndof, dtype=bool)
    prescribed = np.zeros(ndof)
    left, right = np.isclose(nodes[:, 0], 0.0), np.isclose(nodes[:, 0], 1.0)
    fixed[2 * np.nonzero(left)[0]] = True  # u_x = 0 on the left
    fixed[1] = True  # u_y = 0 at the origin
    fixed[2 * np.nonzero(right)[0]] = True
    prescribed[2 * np.nonzero(right)[0]] = delta  # u_x = delta on the right
    free = np.nonzero(~fixed)[0]
    number = -np.ones(ndof, dtype=np.int64)
    number[free] = np.arange(free.size)
    local = np.stack([2 * tris, 2 * tris + 1], axis=2).reshape(len(tris), 6)  # (nel, 6) global dofs
    system = solvers.ElementSystem.from_energy(
        element_energy, number[local], free.size, arg_axes=(0, 0, 0, None, None)
    )
    g = jnp.asarray(prescribed[local])  # (nel, 6) prescribed values, 0 at free dofs
    Gj, aj = jnp.asarray(G), jnp.asarray(area)

    def solve(mu):
        return solvers.newton_solve(
            system.residual, jnp.zeros(free.size), g, Gj, aj, mu, lam, tangent=system.tangent, rtol=1e-12
        )

    res = solve(mu)
    u = prescribed.copy()
    u[free] = np.asarray(res.value)
    u = u.reshape(-1, 2)
    l1 = 1.0 + delta
    l2 = lateral_stretch(l1, mu, lam)
    exact = np.stack([(l1 - 1.0) * nodes[:, 0], (l2 - 1.0) * nodes[:, 1]], axis=1)
    err = float(np.max(np.abs(u - exact)))
    print(f"{free.size} unknowns; Newton residuals {np.array2string(res.history, precision=2)}")
    print(f"l2 = {l2:.12f}; max |u - u_exact| = {err:.2e}")

    top_right = int(np.nonzero(np.isclose(nodes, 1.0).all(axis=1))[0][0])
    k = number[2 * top_right + 1]  # free y-dof of the corner (1, 1): u_y = l2 - 1

    def contraction(mu):
        return solve(mu).value[k]

    dl2 = float(jax.grad(contraction)(mu))
    eps = 1e-6
    fd = (lateral_stretch(l1, mu + eps, lam) - lateral_stretch(l1, mu - eps, lam)) / (2 * eps)
    print(f"d l2 / d mu: implicit {dl2:.10f}, closed form (finite difference) {fd:.10f}")
    if out is not None:
        _plot(out, nodes, tris, u)
    return {
        "unknowns": int(free.size),
        "iterations": int(res.iterations),
        "residual_norms": res.history.tolist(),
        "lateral_stretch": l2,
        "max_error": err,
        "dl2_dmu": dl2,
        "dl2_dmu_reference": float(fd),
    }


def _plot(out, nodes, tris, u):
    import os

    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.triplot(nodes[:, 0], nodes[:, 1], tris, color="0.8", lw=0.6)
    x = nodes + u
    ax.triplot(x[:, 0], x[:, 1], tris, color="C0", lw=0.8)
    ax.set_aspect("equal")
    ax.set_title("Neo-Hookean uniaxial stretch (grey: reference)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "hyperelasticity.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(out="pictures")
