"""Stokes flow in a channel with an outflow: Taylor-Hood P2/P1 and the isogeometric Taylor-Hood pair.

The channel ``[0, L] x [0, 1]``: a parabolic inflow ``u = (4 y (1 - y), 0)`` on the left, no slip on the
walls, and the natural ("do-nothing") outflow ``nu du/dn - p n = 0`` on the right, which fixes the pressure
(no ``pressure=`` constraint: the default ``None`` checks that the velocity is not prescribed on the whole
boundary). The exact solution is Poiseuille flow, ``u = (4 y (1 - y), 0)``, ``p = 8 nu (L - x)``: quadratic in
the velocity and linear in the pressure, so both pairs reproduce it to round-off, which the example checks,
together with the pressure drop ``8 nu L``.

Run: ``python examples/stokes_flow.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from igax import fem
from igax.fem import library


def inflow(x):
    return [4 * x[1] * (1 - x[1]), 0 * x[1]]


def solve(W, nu: float):
    """Assemble and solve the channel problem on the mixed space ``W``; returns (u, p) Fields."""
    A = fem.assemble(library.stokes, W, nu=nu)
    b = jnp.zeros(W.ndofs)
    bc = [
        fem.DirichletBC(W, ["top", "bottom"], 0.0, field=0),
        fem.DirichletBC(W, "left", inflow, field=0),
    ]
    return fem.solve(A, b, bc=bc).split()


def errors(u, p, nu: float, length: float):
    """Max errors of u and p at sample points against Poiseuille flow."""
    g = np.linspace(0.0, 1.0, 7)
    pts = np.stack(np.meshgrid(g * length, g), -1).reshape(-1, 2)
    ue = np.stack([4 * pts[:, 1] * (1 - pts[:, 1]), 0 * pts[:, 1]], 1)
    pe = 8 * nu * (length - pts[:, 0])
    return float(np.abs(np.asarray(u(pts)) - ue).max()), float(np.abs(np.asarray(p(pts)) - pe).max())


def main(n: int = 8, length: float = 3.0, nu: float = 0.5, out: str | None = None) -> dict:
    """Solve on P2/P1 triangles and on the cubic/quadratic spline pair; returns the errors."""
    jax.config.update("jax_enable_x64", True)
    mesh = fem.rectangle_mesh((0.0, 0.0), (length, 1.0), (3 * n, n), "triangle")
    patch = fem.geometry.rectangle((0.0, 0.0), (length, 1.0))
    pairs = {
        "P2/P1": fem.taylor_hood(mesh),
        "spline p=3/2": fem.spline_taylor_hood(patch, degree=3, elements=(3 * n // 2, n // 2)),
    }
    result = {}
    for name, W in pairs.items():
        u, p = solve(W, nu)
        eu, ep = errors(u, p, nu, length)
        drop = float(p([[0.0, 0.5]])[0] - p([[length, 0.5]])[0])
        print(f"{name:13s} {W.ndofs:6d} dofs: max |u - u_exact| {eu:.1e}, max |p - p_exact| {ep:.1e}, "
              f"pressure drop {drop:.6f} (exact {8 * nu * length:g})")  # fmt: skip
        key = name.split()[0].replace("/", "")
        result[f"{key}_u_error"], result[f"{key}_p_error"], result[f"{key}_drop"] = eu, ep, drop
        if out is not None and name.startswith("spline"):
            result["png"] = _plot(out, u, p, length)
    return result


def _plot(out, u, p, length):
    import os

    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    x, y = np.meshgrid(np.linspace(0, length, 61), np.linspace(0, 1, 21))
    pts = np.stack([x.ravel(), y.ravel()], 1)
    uv = np.asarray(u(pts))
    fig, ax = plt.subplots(figsize=(8, 3))
    im = ax.contourf(x, y, np.asarray(p(pts)).reshape(x.shape), 20)
    ax.quiver(
        x[::3, ::4], y[::3, ::4], uv[:, 0].reshape(x.shape)[::3, ::4], uv[:, 1].reshape(x.shape)[::3, ::4]
    )
    fig.colorbar(im, ax=ax, label="p")
    ax.set_aspect("equal")
    ax.set_title("Stokes flow in a channel (spline Taylor-Hood)")
    fig.tight_layout()
    path = os.path.join(out, "stokes_flow.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main(out="out")
