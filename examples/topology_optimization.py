"""Minimum-compliance topology optimisation (SIMP + density filter) of the MBB beam and a cantilever.

The design domain is a grid of nelx x nely unit Q1 elements (plane stress, E0 = 1, Emin = 1e-9, nu = 0.3).
Each element carries a density; the physical density is the density-filtered design (cone weights, radius
``rmin`` element widths), the Young's modulus is SIMP-interpolated, E = Emin + x^p (E0 - Emin), and arrives in
the elasticity form as a per-element array at the quadrature points. The compliance c = f . u and its
sensitivities come from one assembly, one solve and ``jax.grad`` (the adjoint of compliance is the solution
itself, so the gradient costs one more solve with the cached factorisation).

Problems:
- "mbb": half of the Messerschmitt-Boelkow-Blohm beam: symmetry (u_x = 0) on the left edge, roller
  (u_y = 0) at the bottom-right corner, unit downward load at the top-left corner.
- "cantilever": left edge clamped, unit downward load at the middle of the right edge.

Optimisers: the optimality-criteria update (``method="oc"``), or L-BFGS-B on the densities in [0, 1] with the
volume constraint by the augmented Lagrangian (``method="lbfgsb"``).

Run: ``python examples/topology_optimization.py`` or ``igax demo topology``.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from igax import fem, inverse
from igax.fem import library
from igax.inverse._jitcache import value_and_grad_flat
from igax.inverse.topology import DensityFilter, optimality_criteria, simp

DEMO = {
    "name": "topology",
    "description": "SIMP topology optimisation of the MBB beam (optimality criteria, density filter)",
    "sizes": {
        "tiny": {"nelx": 30, "nely": 10, "maxiter": 60},
        "small": {"nelx": 60, "nely": 20, "maxiter": 150},
        "default": {"nelx": 120, "nely": 40, "maxiter": 300},
    },
}

NU = 0.3


def make_problem(problem: str, nelx: int, nely: int):
    """Space, load vector and boundary conditions of the MBB beam or the cantilever."""
    mesh = fem.rectangle_mesh((0.0, 0.0), (float(nelx), float(nely)), n=(nelx, nely), cell="quad")
    V = fem.LagrangeSpace(mesh, degree=1, shape=(2,))
    pts = np.asarray(mesh.points)
    ns = V.nscalar

    def node(x, y):
        i = int(np.argmin(np.hypot(pts[:, 0] - x, pts[:, 1] - y)))
        assert np.hypot(*(pts[i] - (x, y))) < 1e-9
        return i

    b = np.zeros(V.ndofs)
    if problem == "mbb":
        b[ns + node(0.0, nely)] = -1.0  # dof = component * nscalar + node (component-major)
        bcs = [
            fem.DirichletBC(V, "left", 0.0, component=0),
            fem.DirichletBC(V, np.array([ns + node(nelx, 0.0)]), 0.0),
        ]
    elif problem == "cantilever":
        b[ns + node(nelx, nely / 2 if nely % 2 == 0 else (nely - 1) / 2)] = -1.0
        bcs = [fem.DirichletBC(V, "left", 0.0)]
    else:
        raise ValueError(f"problem must be 'mbb' or 'cantilever', got {problem!r}.")
    centroids = pts[np.asarray(mesh.cells)].mean(axis=1)  # (nel, 2)
    return V, jnp.asarray(b), bcs, centroids


def main(
    out: str = "demo-output/topology",
    problem: str = "mbb",
    nelx: int = 60,
    nely: int = 20,
    volfrac: float = 0.5,
    penal: float = 3.0,
    rmin: float = 1.5,
    maxiter: int = 150,
    tol: float = 0.01,
    method: str = "oc",
    progress: bool = False,
) -> dict:
    """Optimise the layout and report compliance, volume, history and timings.

    Arguments:
        out: folder for pictures and the VTU file.
        problem: "mbb" or "cantilever".
        nelx, nely: elements along x and y (unit squares).
        volfrac: allowed volume fraction.
        penal: SIMP penalty exponent.
        rmin: density-filter radius in element widths.
        maxiter: iteration limit.
        tol: OC stops when no density changes by more than ``tol`` in an iteration.
        method: "oc" (optimality criteria) or "lbfgsb" (L-BFGS-B + augmented Lagrangian for the volume).
        progress: show a progress bar.

    Returns:
        A dict of numbers (final compliance, volume fraction, density range, iterations, time per iteration),
        the paths of the picture and the VTU file (``png``, ``vtu``) and the physical densities as an image
        ``density`` of shape (nely, nelx), row 0 at the bottom.
    """
    Path(out).mkdir(parents=True, exist_ok=True)
    V, b, bcs, centroids = make_problem(problem, nelx, nely)
    H = DensityFilter(centroids, rmin)
    nq = fem.Field(V, jnp.zeros(V.ndofs)).at_quadrature()[0].shape[1]  # quadrature points per element
    form = library.linear_elasticity(E=None, nu=NU, kind="plane_stress")

    def compliance(x):
        E = simp(H(x), penal)  # (nel,)
        A = fem.assemble(form, V, E=jnp.broadcast_to(E[:, None], (E.shape[0], nq)))
        # SuperLU: on SIMP matrices (stiffness contrast 1e9) it leaves residuals near 1e-13, where PARDISO
        # without iterative refinement leaves ~1e-7, close to the solver's own singularity check.
        u = fem.solve(A, b, bc=bcs, method="superlu")
        return jnp.dot(b, u.coeffs)

    def volume(x):
        return jnp.mean(H(x))

    x0 = jnp.full(centroids.shape[0], volfrac)
    taylor = inverse.taylor_test(compliance, x0 + 0.2 * jnp.sin(jnp.arange(x0.shape[0])) * volfrac, h0=0.05)
    if method == "oc":
        res = optimality_criteria(
            compliance, x0, volume=volume, volfrac=volfrac, maxiter=maxiter, tol=tol, progress=progress
        )
        x, hist_c, tpi, nit = res.x, res.history.fun, res.time_per_iteration, res.nit
        message = res.message
    elif method == "lbfgsb":
        c0 = float(value_and_grad_flat(compliance, x0)(x0)[0])  # compiled once, shared with taylor_test
        ares = inverse.augmented_lagrangian(
            lambda x: compliance(x) / c0,
            x0,
            eq=lambda x: volume(x) / volfrac - 1.0,
            mu=100.0,
            method="scipy:L-BFGS-B",
            bounds=(0.0, 1.0),
            maxiter=maxiter,
            tol=1e-6,
            ctol=1e-4,
            outer_maxiter=8,
            progress=progress,
        )
        x = ares.x
        hist_c = np.concatenate([r.history.aux["objective"] * c0 for r in ares.inner])
        tpi, nit, message = ares.time_per_iteration, len(hist_c) - 1, ares.message
    else:
        raise ValueError(f"method must be 'oc' or 'lbfgsb', got {method!r}.")

    xphys = np.asarray(H(x))
    c_final = float(value_and_grad_flat(compliance, x0)(jnp.asarray(x, x0.dtype))[0])
    tail = hist_c[-min(10, len(hist_c)) :]
    result = {
        "problem": problem,
        "nelx": nelx,
        "nely": nely,
        "ndofs": V.ndofs,
        "method": method,
        "compliance_initial": float(hist_c[0]),
        "compliance_final": c_final,
        "compliance_spread_last10": float(np.max(np.abs(tail - c_final)) / c_final),
        "volume_fraction": float(xphys.mean()),
        "density_min": float(min(xphys.min(), np.min(x))),
        "density_max": float(max(xphys.max(), np.max(x))),
        "grey_fraction": float(np.mean((xphys > 0.1) & (xphys < 0.9))),
        "iterations": nit,
        "time_per_iteration_s": tpi,
        "taylor_rate1": taylor.rate1,
        "message": message,
    }
    # Element densities as an image: row = y index, column = x index of the element's centroid.
    rho = np.zeros((nely, nelx))
    rho[np.floor(centroids[:, 1]).astype(int), np.floor(centroids[:, 0]).astype(int)] = xphys
    result["png"], result["vtu"] = _pictures(out, problem, rho, hist_c, result)
    for k, v in result.items():
        print(f"{k:26s} {v}")
    result["density"] = rho
    return result


def _pictures(out, problem, rho, hist, result):
    import meshio
    from matplotlib.figure import Figure

    nely, nelx = rho.shape
    full = np.hstack([rho[:, ::-1], rho]) if problem == "mbb" else rho  # mirror the half MBB beam
    # Size the figure from the layout's aspect ratio: a fixed figure height around an equal-aspect image
    # leaves blank bands above and below a wide beam.
    width = 8.0
    layout_h = width * full.shape[0] / full.shape[1]
    fig = Figure(figsize=(width, layout_h + 2.8), layout="constrained")
    ax = fig.subplots(2, 1, gridspec_kw={"height_ratios": [layout_h, 2.2]})
    ax[0].imshow(1 - full, cmap="gray", origin="lower", vmin=0, vmax=1, interpolation="none")
    ax[0].set_title(
        f"{problem}: c = {result['compliance_final']:.3f}, volume {result['volume_fraction']:.3f}"
    )
    ax[0].axis("off")
    ax[1].plot(hist)
    ax[1].set_yscale("log")
    ax[1].set_xlabel("iteration")
    ax[1].set_ylabel("compliance")
    fig.savefig(os.path.join(out, f"topology_{problem}.png"), dpi=110)

    # The layout as cell data on the grid (x fastest, as the mesh numbers its cells).
    xs, ys = np.meshgrid(np.arange(nelx + 1.0), np.arange(nely + 1.0))
    pts = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)])
    idx = np.arange(xs.size).reshape(nely + 1, nelx + 1)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], axis=-1).reshape(-1, 4)
    meshio.write(
        os.path.join(out, f"topology_{problem}.vtu"),
        meshio.Mesh(pts, [("quad", quads)], cell_data={"density": [rho.ravel()]}),
    )
    return os.path.join(out, f"topology_{problem}.png"), os.path.join(out, f"topology_{problem}.vtu")


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
