"""Shape optimisation: the stiffest bar in torsion at a given area, by moving NURBS control points.

Saint-Venant torsion of a prismatic elastic bar: the Prandtl stress function phi solves

    -Laplace(phi) = 2  in the cross-section,   phi = 0 on its boundary,

and the torsional stiffness (torque per unit twist and unit shear modulus) is K = 2 int phi dx. The
torsional compliance 1/K is what we minimise, over the control points of a coarse NURBS patch (a square to
start with), under the constraint that the area stays that of the square (augmented Lagrangian, L-BFGS).
Saint-Venant's conjecture (proved by Polya) says the disc is the optimum: K / A^2 <= 1 / (2 pi) = 0.1592,
against 0.1406 for the square, so the run has a known ceiling to approach and must never exceed.

A single four-sided patch cannot become an exact disc (its corners would need a vanishing Jacobian), so the
mesh-quality guard matters here: a smooth barrier on the Jacobian determinant keeps the elements healthy, and
a callback stops the run with a clear message should an accepted step still invert the geometry.

Run: ``python examples/shape_optimization.py`` or ``igax demo shape``.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from igax import fem, inverse
from igax.fem import library
from igax.inverse.observations import PointObservation
from igax.inverse.shape import ControlPointShape, jacobian_barrier, min_jacobian

DEMO = {
    "name": "shape",
    "description": "Stiffest bar in torsion at fixed area: NURBS control-point shape optimisation",
    "sizes": {
        "tiny": {"design_elements": 2, "elements": 6, "maxiter": 40},
        "small": {"design_elements": 3, "elements": 12, "maxiter": 60},
        "default": {"design_elements": 4, "elements": 16, "maxiter": 100},
    },
}

DISC_BOUND = 1.0 / (2.0 * np.pi)  # K / A^2 of the disc (Saint-Venant / Polya)


@fem.functional
def _one(w):
    return 1.0 + 0.0 * w.x[0]


def stiffness_and_area(V):
    """Torsional stiffness K = 2 int phi and area of the cross-section of a SplineSpace, and phi."""
    A = fem.assemble(library.laplace, V)
    b = fem.assemble(library.source, V, f=2.0)
    phi = fem.solve(A, b, bc=fem.DirichletBC(V, None, 0.0))
    # int phi = b . phi / 2 (b tests the source 2 against the basis)
    return jnp.dot(b, phi.coeffs), fem.assemble(_one, V), phi


def main(
    out: str = "demo-output/shape",
    design_elements: int = 3,
    elements: int = 12,
    maxiter: int = 60,
    barrier: float = 1.0,
    move_limit: float = 0.2,
    progress: bool = False,
) -> dict:
    """Optimise the cross-section and report stiffness, area, mesh quality and timings.

    Arguments:
        out: folder for pictures and the VTU file.
        design_elements: elements per direction of the degree-2 design patch (its control points move).
        elements: elements per direction of the analysis patch.
        maxiter: iterations per inner (augmented Lagrangian) solve.
        barrier: weight of the Jacobian barrier.
        move_limit: bound on each control-point displacement (a trust region against folding steps).
        progress: show a progress bar.

    Returns:
        A dict of numbers: K / A^2 before and after (and the disc bound), the area error, the smallest
        relative Jacobian, the Taylor rate, time per iteration.
    """
    Path(out).mkdir(parents=True, exist_ok=True)
    design = fem.geometry.rectangle((-0.5, -0.5), (0.5, 0.5)).refine(degree=2, elements=design_elements)
    shape = ControlPointShape(design, refine={"elements": elements})
    V0 = shape.space0
    K0, A0, _ = jax.jit(lambda: stiffness_and_area(V0))()
    K0, A0 = float(K0), float(A0)

    def objective(d):
        V = shape.space(d)
        K, _, _ = stiffness_and_area(V)
        return K0 / K + barrier * jacobian_barrier(V)  # the barrier keeps the elements healthy

    def area_constraint(d):
        return stiffness_and_area(shape.space(d))[1] / A0 - 1.0

    d0 = jnp.zeros(shape.size)
    taylor = inverse.taylor_test(objective, d0 + 0.02 * jnp.sin(jnp.arange(shape.size)), h0=0.05)
    res = inverse.augmented_lagrangian(
        objective,
        d0,
        eq=area_constraint,
        mu=10.0,
        bounds=(-move_limit, move_limit),  # minimize's default method with bounds: igax's L-BFGS-B
        maxiter=maxiter,
        tol=1e-7,
        ctol=1e-5,
        outer_maxiter=6,
        progress=progress,
        callback=shape.callback(),  # the mesh-quality guard: raises InvertedGeometryError on a folded step
    )
    V = shape.space(res.x)
    K, A, phi = jax.jit(lambda: stiffness_and_area(V))()
    K, A = float(K), float(A)
    result = {
        "design_variables": shape.size,
        "ndofs": V.ndofs,
        "stiffness_ratio_initial": K0 / A0**2,
        "stiffness_ratio_final": K / A**2,
        "disc_bound": DISC_BOUND,
        "area_relative_error": abs(A / A0 - 1.0),
        "min_relative_jacobian": min_jacobian(V),
        "outer_iterations": len(res.inner),
        "iterations": int(sum(r.nit for r in res.inner)),
        "time_per_iteration_s": res.time_per_iteration,
        "taylor_rate1": taylor.rate1,
        "message": res.message,
    }
    _pictures(out, shape, res.x, phi, result)
    for k, v in result.items():
        print(f"{k:26s} {v}")
    return result


def _outline(shape, d, n=200):
    """Boundary curve of the analysis geometry for design d (counter-clockwise), shape (4 n, 2)."""
    t = np.linspace(0.0, 1.0, n)
    z, o = np.zeros(n), np.ones(n)
    uv = np.concatenate([np.column_stack(c) for c in ((t, z), (o, t), (t[::-1], o), (z, t[::-1]))], axis=0)
    return PointObservation.from_parameters(shape.space(jnp.asarray(d)), uv).points


def _pictures(out, shape, d, phi, result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import meshio

    fig, ax = plt.subplots(1, 2, figsize=(10, 4.6))
    for dd, label, style in ((np.zeros(shape.size), "initial", "--"), (np.asarray(d), "optimised", "-")):
        xy = _outline(shape, dd)
        ax[0].plot(xy[:, 0], xy[:, 1], style, label=label)
        cp = np.asarray(shape.control_points(jnp.asarray(dd)))
        ax[0].plot(cp[..., 0], cp[..., 1], "k.", ms=3)
    r = np.sqrt(1.0 / np.pi)
    s = np.linspace(0, 2 * np.pi, 200)
    ax[0].plot(r * np.cos(s), r * np.sin(s), ":", color="gray", label="disc of equal area")
    ax[0].set_aspect("equal")
    ax[0].legend(loc="upper right", fontsize=8)
    ax[0].set_title(
        f"K/A^2: {result['stiffness_ratio_initial']:.4f} -> {result['stiffness_ratio_final']:.4f} "
        f"(disc {DISC_BOUND:.4f})"
    )
    n = 50
    g = np.linspace(0.0, 1.0, n)
    uv = np.stack([a.ravel() for a in np.meshgrid(g, g, indexing="ij")], axis=1)
    obs = PointObservation.from_parameters(phi.space, uv)
    X, Y = obs.points[:, 0].reshape(n, n), obs.points[:, 1].reshape(n, n)
    P = np.asarray(obs(phi)).reshape(n, n)
    im = ax[1].pcolormesh(X, Y, P, shading="gouraud", cmap="magma")
    fig.colorbar(im, ax=ax[1])
    ax[1].set_aspect("equal")
    ax[1].set_title("Prandtl stress function on the optimised section")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "shape_optimization.png"), dpi=110)
    plt.close(fig)

    idx = np.arange(n * n).reshape(n, n)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], axis=-1).reshape(-1, 4)
    meshio.write(
        os.path.join(out, "shape_optimization.vtu"),
        meshio.Mesh(
            np.column_stack([obs.points, np.zeros(n * n)]), [("quad", quads)], point_data={"phi": P.ravel()}
        ),
    )


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
