"""Spline bases at a glance: B-splines of a refined knot vector, an exact NURBS circle and its control net.

1. Start from a coarse quadratic knot vector with a C0 knot, elevate the degree and insert knots
   (k-refinement), and plot the basis functions and their first derivatives. Checked: partition of unity,
   and agreement with ``scipy.interpolate.BSpline``.
2. Build the unit circle from four rational quadratic arcs, refine it exactly, and plot the curve with the
   coarse and refined control nets. Checked: the radius error at 1000 points, before and after refinement.

Run: ``python examples/spline_basis.py`` or ``igax demo basis``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import numpy as np

from igax.bases import NURBSPatch, basis_functions, design_matrix, open_knots, uniform_refinement_knots
from igax.bases.refine import degree_elevation_matrix, knot_insertion_matrix

DEMO = {
    "name": "basis",
    "description": "B-spline basis of a refined knot vector and an exact NURBS circle with its control net",
    "sizes": {
        "tiny": {"n_elements": 4, "degree": 2},
        "small": {"n_elements": 8, "degree": 3},
        "default": {"n_elements": 8, "degree": 3},
        "large": {"n_elements": 32, "degree": 4},
    },
}


def unit_circle() -> NURBSPatch:
    """The unit circle as one rational quadratic curve of four quarter arcs (9 control points)."""
    s = np.sqrt(0.5)
    cp = np.array([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1], [1, 0]], float)
    w = np.array([1, s, 1, s, 1, s, 1, s, 1])
    return NURBSPatch(([0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1, 1],), 2, cp, w)


def main(out: str = "demo-output", n_elements: int = 8, degree: int = 3) -> dict:
    """Make the figure ``basis.png`` in ``out``; return the checked numbers.

    Arguments:
        out: output folder.
        n_elements: elements of the refined knot vector and of the refined circle.
        degree: degree after elevation (>= 2).

    Returns:
        dict with ``radius_error`` (coarse circle), ``radius_error_refined``, ``partition_of_unity_error``,
        ``scipy_difference``, ``n_basis`` and ``seconds``.
    """
    if degree < 2:
        raise ValueError(f"degree must be >= 2 (the coarse data is quadratic), got {degree}.")
    t0 = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.interpolate import BSpline

    # 1. k-refinement of a quadratic knot vector with a C0 knot at 0.5
    coarse = open_knots([0.0, 0.5, 1.0], 2, multiplicity=2)
    _, elevated = degree_elevation_matrix(coarse, 2, degree - 2)
    _, fine = knot_insertion_matrix(elevated, degree, uniform_refinement_knots(elevated, n_elements))
    x = np.linspace(0.0, 1.0, 801)
    first, ders = basis_functions(fine, degree, x, nderiv=1)
    D = design_matrix(fine, degree, x, nderiv=1)  # (2, npts, n)
    n = D.shape[2]
    pu_error = float(np.abs(D[0].sum(axis=1) - 1.0).max())
    scipy_diff = max(
        float(np.abs(BSpline(fine, np.eye(n)[i], degree)(x[:-1], nu=k) - D[k, :-1, i]).max())
        for i in range(n)
        for k in (0, 1)
    )

    # 2. exact circle, coarse and refined
    circle = unit_circle()
    refined = circle.refine(degree=degree, elements=max(n_elements, 4))
    u = np.linspace(0.0, 1.0, 1000)
    xc = circle.evaluate(u[:, None])
    xr = refined.evaluate(u[:, None])
    radius_error = float(np.abs(np.hypot(xc[:, 0], xc[:, 1]) - 1.0).max())
    radius_error_refined = float(np.abs(np.hypot(xr[:, 0], xr[:, 1]) - 1.0).max())

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for i in range(n):
        axes[0].plot(x, D[0, :, i], lw=1.2)
        axes[1].plot(x, D[1, :, i], lw=1.0)
    breaks = np.unique(fine)
    for ax in axes[:2]:
        ax.plot(breaks, np.zeros_like(breaks), "k|", ms=10)
    axes[0].set_title(f"B-splines, degree {degree}, {breaks.size - 1} elements, C0 at 0.5")
    axes[1].set_title("first derivatives")
    ax = axes[2]
    ax.plot(xr[:, 0], xr[:, 1], "k-", lw=2, label="NURBS circle")
    cpc, cpr = np.asarray(circle.control_points), np.asarray(refined.control_points)
    ax.plot(cpc[:, 0], cpc[:, 1], "o--", color="tab:red", ms=5, label=f"coarse net ({len(cpc)})")
    ax.plot(cpr[:, 0], cpr[:, 1], ".:", color="tab:blue", ms=6, label=f"refined net ({len(cpr)})")
    ax.set_aspect("equal")
    ax.legend(loc="center", fontsize=8)
    ax.set_title(f"max |r - 1| = {radius_error_refined:.1e} (refined)")
    fig.tight_layout()
    Path(out).mkdir(parents=True, exist_ok=True)
    path = os.path.join(out, "basis.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)

    result = {
        "radius_error": radius_error,
        "radius_error_refined": radius_error_refined,
        "partition_of_unity_error": pu_error,
        "scipy_difference": scipy_diff,
        "n_basis": int(n),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    for key, value in result.items():
        print(f"{key:26s} {value}")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
