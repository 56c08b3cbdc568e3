"""Modal analysis of a NURBS plate, and the thickness that maximises its first frequency at a fixed mass.

The plate is a quarter annulus (exact NURBS arcs, inner radius 0.5 m, outer 1 m) of aluminium, clamped on its
inner arc and free elsewhere: a curved cantilever. It is modelled as a Reissner-Mindlin plate (deflection w
and rotations theta_x, theta_y: one vector space of three components), so only first derivatives appear and
the public form API assembles it on any spline or Lagrange space:

    bending  D(t) [ k(theta) : C : k(psi) ],     D = E t^3 / (12 (1 - nu^2)),  k = sym grad theta
    shear    kappa G t (grad w - theta) . (grad v - psi),    kappa = 5/6
    mass     rho t w v + rho t^3 / 12 theta . psi

The free vibration frequencies are f_i = sqrt(lambda_i) / (2 pi) for the eigenvalues of
``K phi = lambda M phi`` restricted to the free dofs (``solvers.submatrix``), solved by ``solvers.eigsh``.

Design: the thickness is a spline field t(x) on the plate's own scalar space, t = T0 (1 + z - mean(z)) with
mean(z) = (b . z) / area and b_i = int N_i dA, so that the mass rho * int t dA stays that of the uniform plate
of thickness T0 for every design z; L-BFGS-B maximises lambda_1 with |z_i| <= 0.45 (t between 0.1 and 1.9 T0).
The gradient of lambda_1 with respect to every coefficient is one eigenvalue derivative, phi^T (dK - lambda
dM) phi, through assembly: no extra solve. As for a cantilever beam, material moves towards the clamped root
and away from the free tip.

Measured: the uniform plate's f1 is 64.1 Hz (tiny) / 61.0 Hz (small), against 65.9 Hz for a clamped-free
Euler-Bernoulli strip of the same length; the optimised plates reach 125.2 / 122.4 Hz (gains 1.95x / 2.01x)
at the same mass, in 3-4 L-BFGS-B iterations that end with every z_i on a bound (a thick root band, a thin
rim: the projected gradient vanishes).

Run: ``python examples/modal_plate.py [--size tiny|small|default] [--out DIR]`` or ``igax demo modal``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from igax import fem, inverse, solvers

DEMO = {
    "name": "modal",
    "description": "Modal analysis of a NURBS plate; the thickness that maximises f1 at fixed mass",
    "sizes": {
        "tiny": {"degree": 2, "elements": 4, "maxiter": 8},
        "small": {"degree": 3, "elements": 6, "maxiter": 25},
        "default": {"degree": 3, "elements": 12, "maxiter": 40},
    },
}
SIZES = DEMO["sizes"]

E, NU, RHO, KAPPA = 70e9, 0.3, 2700.0, 5.0 / 6.0  # aluminium (Pa, -, kg/m^3), shear correction
T0 = 0.02  # mean thickness (m)
BOUND = 0.45  # |z| <= BOUND: the thickness stays within [1 - 2 BOUND, 1 + 2 BOUND] T0


def mindlin_forms(E=E, nu=NU, rho=RHO, kappa=KAPPA):
    """The stiffness and mass forms of a Reissner-Mindlin plate with thickness input ``t`` (scalar).

    Components of the vector space (shape ``(3,)``): ``(w, theta_x, theta_y)``.
    """
    G = E / (2.0 * (1.0 + nu))

    @fem.bilinear_form(symmetric=True, inputs={"t": "scalar"})
    def stiffness(u, v, w):
        t = w.t.value
        D = E * t**3 / (12.0 * (1.0 - nu**2))
        gu, gv = u.grad, v.grad  # (3, 2): d u_c / d x_k
        ku = jnp.stack([gu[1, 0], gu[2, 1], gu[1, 1] + gu[2, 0]])  # curvatures (xx, yy, 2 xy) of theta
        kv = jnp.stack([gv[1, 0], gv[2, 1], gv[1, 1] + gv[2, 0]])
        bending = D * (
            ku[0] * kv[0]
            + ku[1] * kv[1]
            + nu * (ku[0] * kv[1] + ku[1] * kv[0])
            + 0.5 * (1.0 - nu) * ku[2] * kv[2]
        )
        gamma_u = gu[0] - u.value[1:]  # shear strains grad w - theta
        gamma_v = gv[0] - v.value[1:]
        return bending + kappa * G * t * jnp.dot(gamma_u, gamma_v)

    @fem.bilinear_form(symmetric=True, inputs={"t": "scalar"})
    def mass(u, v, w):
        t = w.t.value
        return rho * t * u.value[0] * v.value[0] + rho * t**3 / 12.0 * jnp.dot(u.value[1:], v.value[1:])

    return stiffness, mass


def plate_problem(degree: int, elements: int, geometry=None, clamped=("inner",)):
    """The vector space of the plate, the scalar space of its thickness, and the free dofs (clamped edges).

    Returns:
        ``(V, S, free)``: ``V`` with shape (3,), ``S`` scalar on the same patch, ``free`` the dofs of ``V``
        not on a clamped boundary.
    """
    geo = fem.geometry.quarter_annulus(0.5, 1.0) if geometry is None else geometry
    geo = geo.refine(degree=degree, elements=elements)
    V = fem.SplineSpace(geo, shape=(3,))
    S = fem.SplineSpace(geo)
    fixed = fem.DirichletBC(V, list(clamped), 0.0).dofs
    free = np.setdiff1d(np.arange(V.ndofs), fixed)
    return V, S, free


def frequencies(V, S, free, t_coeffs, k: int = 3, forms=None):
    """The ``k`` lowest eigenvalues ``lambda = (2 pi f)^2`` and mode shapes (all dofs) for thickness ``t``."""
    stiffness, mass = mindlin_forms() if forms is None else forms
    t = fem.Field(S, t_coeffs)
    K = solvers.submatrix(fem.assemble(stiffness, V, t=t), free)
    M = solvers.submatrix(fem.assemble(mass, V, t=t), free)
    lam, phi = solvers.eigsh(K, M, k=k)
    modes = jnp.zeros((V.ndofs, k), phi.dtype).at[free].set(phi)
    return lam, modes


def main(
    degree: int = 2, elements: int = 4, maxiter: int = 8, out: str | None = "modal_plate_out", progress=False
):
    """Modal analysis of the uniform plate, then the thickness optimisation at fixed mass.

    Returns:
        A dict with the frequencies before and after (Hz), the gain of the first one, the mass before and
        after (kg), the thickness range, the iterations and the picture's path (None when ``out`` is None).
    """
    V, S, free = plate_problem(degree, elements)
    b = np.asarray(fem.assemble(fem.library.source, S, f=1.0))  # b_i = int N_i dA: the mass is rho * b . c
    area = float(b.sum())

    def thickness(z):
        # t = T0 (1 + z - mean(z)): int t dA = T0 * area for every z, i.e. the mass of the uniform plate.
        return T0 * (1.0 + z - jnp.dot(b, z) / area)

    lam0, modes0 = frequencies(V, S, free, jnp.full(S.ndofs, T0))

    def objective(c):
        lam, _ = frequencies(V, S, free, thickness(c), k=2)
        return -lam[0] / lam0[0]

    res = inverse.minimize(
        objective,
        jnp.zeros(S.ndofs),
        bounds=(-BOUND, BOUND),
        maxiter=maxiter,
        progress=progress,
    )
    t_opt = thickness(res.x)
    lam1, modes1 = frequencies(V, S, free, t_opt)
    f0, f1 = np.sqrt(np.asarray(lam0)) / (2 * np.pi), np.sqrt(np.asarray(lam1)) / (2 * np.pi)
    result = {
        "frequencies_before_hz": f0.tolist(),
        "frequencies_after_hz": f1.tolist(),
        "gain_first_frequency": float(f1[0] / f0[0]),
        "mass_before_kg": float(RHO * T0 * area),
        "mass_after_kg": float(RHO * np.dot(b, np.asarray(t_opt))),
        "thickness_range_m": (float(np.min(t_opt)), float(np.max(t_opt))),
        "iterations": int(res.nit),
        "evaluations": int(res.nfev),
        "ndofs": int(V.ndofs),
        "message": str(res.message),
        "png": None,
    }
    if out is not None:
        os.makedirs(out, exist_ok=True)
        result["png"] = _draw(V, S, modes0, modes1, t_opt, f0, f1, os.path.join(out, "modal_plate.png"))
    return result


def _draw(V, S, modes0, modes1, t_opt, f0, f1, path):
    """Thickness and the first mode's deflection before and after, as one picture."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.8), layout="constrained")
    ax = fig.subplots(1, 3)
    panels = [
        (fem.Field(V, modes0[:, 0]), 0, f"first mode, uniform t: f1 = {f0[0]:.1f} Hz"),
        (fem.Field(S, t_opt), None, "optimised thickness (m)"),
        (fem.Field(V, modes1[:, 0]), 0, f"first mode, optimised: f1 = {f1[0]:.1f} Hz"),
    ]
    for a, (field, comp, title) in zip(ax, panels, strict=True):
        s = fem.sample(field, resolution=8)
        vals = s.point_data["u"]
        vals = vals[:, comp] if comp is not None else vals
        tri = (
            s.cells if s.cell_type == "triangle" else np.concatenate([s.cells[:, :3], s.cells[:, [0, 2, 3]]])
        )
        im = a.tripcolor(s.points[:, 0], s.points[:, 1], tri, vals, shading="gouraud", cmap="viridis")
        fig.colorbar(im, ax=a, shrink=0.8)
        a.set_title(title, fontsize=10)
        a.set_aspect("equal")
        a.axis("off")
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    import argparse

    jax.config.update("jax_enable_x64", True)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="small")
    ap.add_argument("--out", default="modal_plate_out")
    args = ap.parse_args()
    r = main(out=args.out, progress=True, **SIZES[args.size])
    for key, value in r.items():
        print(f"{key}: {value}")
