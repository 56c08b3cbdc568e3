"""An acoustic lens designed by gradient descent through a Helmholtz solve.

A plane wave ``exp(i k0 x)`` (sound speed ``c0 = 1``) crosses the rectangle ``[0, 2] x [0, 1]``. Inside a
design region, a block ahead of the middle, the sound speed is a spline Field ``c(x)`` whose coefficients are
bounded, ``0.6 <= c_i <= 1.4``; since B-splines are non-negative and sum to one, the field itself stays in
these bounds. The scattered field ``u_s = u - u_inc`` solves
``-div(grad u_s) - (omega / c)^2 u_s = ((omega / c)^2 - k0^2) u_inc`` with first-order impedance conditions
(outgoing waves) on all sides (``fem.library.helmholtz_speed``, ``impedance``, ``scattered_source``): a
complex symmetric system solved by ``fem.solve`` like a real one. The loss is minus the intensity
``|u|^2`` at a focal point behind the lens; ``jax.grad`` of it with respect to the (real) sound-speed
coefficients goes through the complex solve with one adjoint solve, and ``inverse.minimize`` (L-BFGS-B)
runs the design. The focal gain is the intensity after over before (no lens: the plane wave, intensity 1).

Run: ``python examples/acoustic_lens.py [tiny|small|default]`` or ``igax demo acoustic-lens``.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from igax import fem, inverse
from igax.fem import library

DEMO = {
    "name": "acoustic-lens",
    "description": "Helmholtz: a sound-speed lens (spline Field, L-BFGS-B) focuses a plane wave; PNGs",
    "sizes": {
        "tiny": {"degree": 2, "elements": 12, "k0": 8.0, "maxiter": 4},
        "small": {"degree": 2, "elements": 24, "k0": 12.0, "maxiter": 15},
        "default": {"degree": 3, "elements": 40, "k0": 20.0, "maxiter": 40},
    },
}
SIZES = DEMO["sizes"]
LENGTH, HEIGHT = 2.0, 1.0
REGION = ((0.5, 0.2), (0.9, 0.8))  # the design region's corners
FOCUS = (1.5, 0.5)
C_BOUNDS = (0.6, 1.4)
SIDES = ("left", "right", "bottom", "top")


def design_dofs(V) -> np.ndarray:
    """The dofs whose basis function lives inside the design region (host, once): the share of its integral
    that falls inside, from two load vectors, is 1."""
    (x0, y0), (x1, y1) = REGION

    def inside(x):
        return ((x[0] >= x0) & (x[0] <= x1) & (x[1] >= y0) & (x[1] <= y1)).astype(float)

    whole = fem.assemble(library.source, V, f=lambda x: jnp.ones_like(x[0]))
    share = fem.assemble(library.source, V, f=inside) / whole
    return np.flatnonzero(np.asarray(share) > 1.0 - 1e-9)


def make_problem(degree: int, elements: int, k0: float):
    """The space, the designable dofs and ``field(theta) -> (u_total, speed)``."""
    geo = fem.geometry.rectangle((0.0, 0.0), (LENGTH, HEIGHT))
    geo = geo.refine(degree=degree, elements=(2 * elements, elements))
    V = fem.SplineSpace(geo)
    dofs = design_dofs(V)
    u_inc = library.plane_wave(k0, (1.0, 0.0))
    B = fem.assemble(library.impedance, V, boundary=SIDES, k=k0)  # c = c0 = 1 on the boundary

    def field(theta):
        speed = fem.Field(V, jnp.ones(V.ndofs).at[dofs].set(theta))
        A = fem.assemble(library.helmholtz_speed, V, omega=k0, c=speed) + B
        b = fem.assemble(_lens_source, V, omega=k0, c=speed, u_inc=u_inc)
        u_s = fem.solve(A, b, space=V)
        return u_s, speed

    return V, dofs, u_inc, field


@fem.linear_form(inputs={"omega": "scalar", "c": "scalar", "u_inc": "scalar"})
def _lens_source(v, w):
    """``((omega / c)^2 - omega^2) u_inc v``: library.scattered_source with k = omega / c and k0 = omega."""
    return ((w.omega / w.c) ** 2 - w.omega**2) * w.u_inc * v.value


def intensity(u_s, u_inc, point) -> jax.Array:
    p = jnp.asarray([point])
    return jnp.abs(u_s(p)[0] + u_inc(p.T)[0]) ** 2


def picture(fields: dict, path: str, title: str, shared: bool = False) -> str:
    """Panels of real fields given at sample points (matplotlib tripcolor); ``shared``: one colour scale from
    0 (so a constant |u| = 1 reads as such)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.tri import Triangulation

    fig, axes = plt.subplots(len(fields), 1, figsize=(6, 3.2 * len(fields)))
    for ax, (name, (s, values)) in zip(np.atleast_1d(axes), fields.items(), strict=True):
        quads = s.cells
        tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
        lim = {"vmin": 0.0, "vmax": max(float(np.max(v)) for _, v in fields.values())} if shared else {}
        tpc = ax.tripcolor(
            Triangulation(s.points[:, 0], s.points[:, 1], tris), values, shading="gouraud", **lim
        )
        fig.colorbar(tpc, ax=ax, label=name)
        ax.plot(*FOCUS, "w+", ms=10)
        (x0, y0), (x1, y1) = REGION
        ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], "w--", lw=0.8)
        ax.set_aspect("equal")
        ax.set_title(name)
    fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _magnitude(V, u_s, u_inc, resolution):
    """|u_inc + u_s| at the sample points (the complex field sampled as its real and imaginary parts)."""
    sr = fem.sample(fem.Field(V, jnp.real(u_s.coeffs)), resolution=resolution)
    si = fem.sample(fem.Field(V, jnp.imag(u_s.coeffs)), resolution=resolution)
    inc = np.asarray(u_inc(jnp.asarray(sr.points[:, :2].T)))
    total = sr.point_data["u"] + 1j * si.point_data["u"] + inc
    return sr, np.abs(total)


def main(
    out: str | None = "acoustic_lens_out",
    degree: int = 2,
    elements: int = 24,
    k0: float = 12.0,
    maxiter: int = 15,
    progress: bool = False,
) -> dict:
    """Design the lens at one size; write the pictures to ``out`` (None: none) and return the figures."""
    jax.config.update("jax_enable_x64", True)
    V, dofs, u_inc, field = make_problem(degree, elements, k0)

    def loss(theta):
        u_s, _ = field(theta)
        return -intensity(u_s, u_inc, FOCUS)

    theta0 = jnp.ones(dofs.size)
    before = -float(loss(theta0))
    res = inverse.minimize(loss, theta0, bounds=C_BOUNDS, maxiter=maxiter, progress=progress)
    after = -float(res.fun)
    theta = np.asarray(res.x)
    result = {
        "ndofs": V.ndofs,
        "design_dofs": int(dofs.size),
        "k0": k0,
        "wavelengths_across": LENGTH * k0 / (2 * np.pi),
        "intensity_before": before,
        "intensity_after": after,
        "focal_gain": after / before,
        "speed_range": (float(theta.min()), float(theta.max())),
        "iterations": int(res.nit),
        "speed_coefficients": theta,
    }
    print(
        f"acoustic lens: {V.ndofs} dofs, {dofs.size} design coefficients, k0 = {k0}: focal intensity "
        f"{before:.3f} -> {after:.3f} (gain {after / before:.2f}) in {res.nit} L-BFGS-B iterations; "
        f"sound speed in [{theta.min():.3f}, {theta.max():.3f}]"
    )
    if out is not None:
        os.makedirs(out, exist_ok=True)
        res_pts = 4
        u0, _ = field(theta0)
        u1, speed = field(jnp.asarray(theta))
        s0, m0 = _magnitude(V, u0, u_inc, res_pts)
        s1, m1 = _magnitude(V, u1, u_inc, res_pts)
        sc = fem.sample(speed, resolution=res_pts)
        result["png_field"] = picture(
            {"|u| before (no lens)": (s0, m0), "|u| after": (s1, m1)},
            os.path.join(out, "acoustic_lens_field.png"),
            f"focal gain {after / before:.2f}",
            shared=True,
        )
        result["png_speed"] = picture(
            {"sound speed c": (sc, sc.point_data["u"])},
            os.path.join(out, "acoustic_lens_speed.png"),
            "design",
        )
        print(f"wrote {result['png_field']} and {result['png_speed']}")
    return result


if __name__ == "__main__":
    main(**SIZES[sys.argv[1] if len(sys.argv) > 1 else "small"])
