"""Poisson's equation on a quarter annulus with NURBS (isogeometric analysis) and a manufactured solution.

-Laplace(u) = f on 1 <= r <= 2 in the first quadrant, u = 0 on the boundary, with the exact solution
u = -(x^2 + y^2 - 1)(x^2 + y^2 - 4) x y^2. The geometry is the exact NURBS quarter annulus, refined by degree
elevation and knot insertion; the discrete solution converges like h^(p+1) in L2 and h^p in H1. The script
prints the errors, writes the field to VTU and a picture (matplotlib) and returns the numbers.

Run: ``python examples/poisson_annulus.py`` or ``igax demo poisson``.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from igax import fem
from igax.fem import library, norms

DEMO = {
    "name": "poisson",
    "description": "Poisson on the NURBS quarter annulus: L2/H1 errors against the exact solution, VTU + PNG",
    "sizes": {
        "tiny": {"degree": 2, "elements": 4},
        "small": {"degree": 3, "elements": 8},
        "default": {"degree": 3, "elements": 16},
    },
}


def exact(x):
    r2 = x[0] ** 2 + x[1] ** 2
    return -(r2 - 1.0) * (r2 - 4.0) * x[0] * x[1] ** 2


def source(x):
    X, Y = x[0], x[1]
    return 2.0 * X * (22 * X**2 * Y**2 + 21 * Y**4 - 45 * Y**2 + X**4 - 5 * X**2 + 4)


def exact_grad(x):
    shape = x.shape[1:]
    g = jax.vmap(jax.grad(exact), in_axes=1, out_axes=1)(x.reshape(2, -1))
    return g.reshape((2,) + shape)


@jax.jit
def solve(V: fem.SplineSpace):
    """Assemble, apply u = 0 on the whole boundary, solve; returns the solution and its L2 / H1 errors."""
    A = fem.assemble(library.laplace, V)
    b = fem.assemble(library.source, V, f=source)
    u = fem.solve(A, b, bc=fem.DirichletBC(V, None, 0.0))
    return u, norms.l2_error(u, exact), norms.h1_error(u, exact_grad)


def picture(u: fem.Field, path: str) -> str:
    """The field on a sampled triangulation of the patch (matplotlib tripcolor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.tri import Triangulation

    s = fem.sample(u, resolution=4)
    quads = s.cells
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    tpc = ax.tripcolor(
        Triangulation(s.points[:, 0], s.points[:, 1], tris), s.point_data["u"], shading="gouraud"
    )
    fig.colorbar(tpc, ax=ax, label="u")
    ax.set_aspect("equal")
    ax.set_title("Poisson on the NURBS quarter annulus")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(out: str | None = "demo-output", degree: int = 3, elements: int = 16) -> dict:
    """Solve at one size, write VTU + PNG to ``out`` (None: no files) and return the errors."""
    jax.config.update("jax_enable_x64", True)
    geo = fem.geometry.quarter_annulus().refine(degree=degree, elements=elements)
    V = fem.SplineSpace(geo)
    u, l2, h1 = solve(V)
    result = {
        "degree": degree,
        "elements": elements,
        "ndofs": V.ndofs,
        "l2_error": float(l2),
        "h1_error": float(h1),
    }
    print(f"quarter annulus, degree {degree}, {elements}x{elements} elements, {V.ndofs} dofs: "
          f"L2 error {float(l2):.3e}, H1 error {float(h1):.3e}")  # fmt: skip
    if out is not None:
        os.makedirs(out, exist_ok=True)
        result["vtu"] = fem.write_vtu(os.path.join(out, "poisson_annulus.vtu"), {"u": u})
        result["png"] = picture(u, os.path.join(out, "poisson_annulus.png"))
        print(f"wrote {result['vtu']} and {result['png']}")
    return result


if __name__ == "__main__":
    main()
