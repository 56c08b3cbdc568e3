"""Identify a spatially varying conductivity kappa(x) on the quarter annulus from noisy point values of u.

Forward model (isogeometric, degree-2 NURBS on the quarter annulus 1 <= r <= 2):

    -div(kappa grad u_k) = f_k  in the domain, with Dirichlet data on some sides and no flux on the others,

for three experiments k (a radial and an angular potential drop, a grounded source) that share kappa. The
synthetic data are values of u_k at random points, computed on a twice finer mesh than the inversion uses
(no "inverse crime") with the true kappa, plus Gaussian noise of a given relative level.

Unknowns: the spline coefficients z of log kappa (kappa coefficients exp(z) > 0, and by the convex-hull
property of the spline basis, kappa > 0 everywhere). Objective:

    J(z) = 1/(2 N) sum_k,i ((u_k(x_i) - d_ki) / sigma)^2  +  alpha/2 |log kappa|_H1^2,

(N data in all; J is about 1/2 at the truth), whose gradient costs one adjoint solve per experiment
(jax.grad through fem.solve). We report the relative L2 error of the recovered kappa, the misfit history and
the time per iteration, and write pictures and a VTU file.

Run: ``python examples/conductivity_identification.py`` or ``igax demo conductivity``.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from igax import fem, inverse, solvers
from igax.fem import library
from igax.inverse.observations import PointObservation, add_noise

DEMO = {
    "name": "conductivity",
    "description": "Recover a conductivity field on the quarter annulus from noisy point data (IGA, adjoint)",
    "sizes": {
        "tiny": {"elements": 6, "n_obs": 80, "maxiter": 120},
        "small": {"elements": 10, "n_obs": 200, "maxiter": 200},
        "default": {"elements": 16, "n_obs": 400, "maxiter": 300},
    },
}


def kappa_true(x):
    """Background 2 with a gentle trend and a +75 % bump (x: (dim, ...), first axis = coordinate)."""
    bump = jnp.exp(-((x[0] - 1.05) ** 2 + (x[1] - 0.85) ** 2) / 0.12)
    return 2.0 + 0.2 * (x[0] - x[1]) + 1.5 * bump


# Three experiments share the conductivity (like the current patterns of impedance tomography): a radial
# potential drop, an angular one, and a distributed source with the boundary grounded. Together their
# gradients cover every direction everywhere, which is what makes kappa identifiable from values of u.
EXPERIMENTS = (
    ({"inner": 0.0, "outer": 1.0}, 0.0),
    ({"bottom": 0.0, "left": 1.0}, 0.0),
    ({"inner": 0.0, "outer": 0.0, "bottom": 0.0, "left": 0.0}, 4.0),
)


def make_problem(elements: int, degree: int = 2):
    """Space and, per experiment, (load vector, boundary conditions) of the forward model."""
    geo = fem.geometry.quarter_annulus().refine(degree=degree, elements=(elements, elements))
    V = fem.SplineSpace(geo)
    setups = []
    for dirichlet, f in EXPERIMENTS:
        b = fem.assemble(library.source, V, f=f)
        bcs = [fem.DirichletBC(V, name, value) for name, value in dirichlet.items()]
        setups.append((b, bcs))
    return V, setups


def forward(V, setups, kappa):
    """Solutions u_k of the experiments for a conductivity ``kappa`` (Field, callable or number)."""
    A = fem.assemble(library.diffusion, V, kappa=kappa)
    return [fem.solve(A, b, bc=bcs) for b, bcs in setups]


def random_points(n: int, seed: int) -> np.ndarray:
    """Points spread uniformly over the quarter annulus (area-uniform in r), away from the boundary."""
    rng = np.random.default_rng(seed)
    r = np.sqrt(rng.uniform(1.05**2, 1.95**2, n))
    t = rng.uniform(0.03, np.pi / 2 - 0.03, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


@fem.functional
def _sq_diff(w):
    return (w.a - w.b) ** 2


@fem.functional
def _sq(w):
    return w.b**2


def relative_l2(field, exact) -> jax.Array:
    """Relative L2 error of a Field against a callable, integrated on the Field's quadrature."""
    V = field.space
    return jnp.sqrt(fem.assemble(_sq_diff, V, a=field, b=exact) / fem.assemble(_sq, V, b=exact))


def _sample(field, n=60):
    """Values of a field on a structured parametric grid: (X, Y, values), each (n, n)."""
    V = field.space
    s = np.linspace(0.0, 1.0, n)
    uv = np.stack([g.ravel() for g in np.meshgrid(s, s, indexing="ij")], axis=1)
    obs = PointObservation.from_parameters(V, uv)
    x = obs.points
    vals = np.asarray(obs(field))
    return x[:, 0].reshape(n, n), x[:, 1].reshape(n, n), vals.reshape(n, n), x


def main(
    out: str = "demo-output/conductivity",
    elements: int = 10,
    n_obs: int = 200,
    noise: float = 0.01,
    alpha: float = 3e-2,
    maxiter: int = 150,
    method: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Recover kappa from noisy point data and report errors, history and timings.

    Arguments:
        out: folder for pictures and the VTU file.
        elements: elements per direction of the inversion mesh (the data come from a mesh twice finer).
        n_obs: number of observation points.
        noise: relative noise level (standard deviation / max |u|).
        alpha: weight of the H1-seminorm regulariser of log kappa.
        maxiter: optimiser iterations.
        method: any :func:`igax.inverse.minimize` method (None: its default, igax's L-BFGS).
        seed: seed of the observation points and the noise.
        progress: show a progress bar.

    Returns:
        A dict of numbers (relative L2 error, misfit reduction, Taylor rate, time per iteration, ...).
    """
    Path(out).mkdir(parents=True, exist_ok=True)
    pts = random_points(n_obs, seed)

    # Synthetic data on a finer mesh with the true conductivity.
    Vf, setups_f = make_problem(2 * elements)
    obs_f = PointObservation(Vf, pts)
    # (jit: one compiled graph is much faster than op-by-op execution of a one-off solve)
    clean = jax.jit(lambda: jnp.stack([obs_f(u) for u in forward(Vf, setups_f, kappa_true)]))()
    data, sigma = add_noise(clean, noise, seed=seed + 1)
    # Noise-free runs still need a misfit scale: weigh them as if sigma were 0.1 % of the data.
    sigma = max(sigma, 1e-3 * float(jnp.max(jnp.abs(clean))))

    V, setups = make_problem(elements)
    obs = PointObservation(V, pts)
    reg = inverse.tikhonov(V, "h1")  # 1/2 |log kappa|_H1^2, a precomputed quadratic form
    log_kappa = inverse.Exp(1.0)  # kappa coefficients = exp(z)

    def objective(z):
        us = forward(V, setups, fem.Field(V, log_kappa(z)))
        pred = jnp.stack([obs(u) for u in us])
        misfit = inverse.least_squares(pred, data, sigma=sigma) / data.size
        r = alpha * reg(z)
        return misfit + r, {"misfit": misfit, "regularisation": r}

    z0 = jnp.zeros(V.ndofs)  # kappa = 1 everywhere
    taylor = inverse.taylor_test(objective, z0 + 0.1 * jnp.sin(jnp.arange(V.ndofs)), has_aux=True)
    res = inverse.minimize(objective, z0, method=method, maxiter=maxiter, has_aux=True, progress=progress)
    kappa = fem.Field(V, log_kappa(res.x))

    @jax.jit
    def errors(c):
        # Recovered kappa, and the best the space can do: the L2 projection of the truth.
        M = fem.assemble(library.mass, V)
        proj = solvers.solve(M, fem.assemble(library.source, V, f=kappa_true))
        return relative_l2(fem.Field(V, c), kappa_true), relative_l2(fem.Field(V, proj), kappa_true)

    err, err_best = (float(e) for e in errors(kappa.coeffs))
    misfit = res.history.aux["misfit"]

    _pictures(out, kappa, res, pts)
    result = {
        "ndofs": V.ndofs,
        "n_obs": n_obs,
        "noise": noise,
        "sigma": sigma,
        "kappa_rel_l2_error": err,
        "kappa_rel_l2_error_projection": err_best,
        "misfit_initial": float(misfit[0]),
        "misfit_final": float(misfit[-1]),
        "misfit_reduction": float(misfit[0] / misfit[-1]),
        "iterations": res.nit,
        "time_per_iteration_s": res.time_per_iteration,
        "taylor_rate1": taylor.rate1,
        "message": res.message,
    }
    for k, v in result.items():
        print(f"{k:32s} {v}")
    return result


def _pictures(out, kappa, res, pts):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import meshio

    X, Y, K, x = _sample(kappa)
    T = np.asarray(kappa_true(jnp.asarray(x.T))).reshape(X.shape)
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    lim = (min(T.min(), K.min()), max(T.max(), K.max()))
    for a, Z, title in ((ax[0], T, "true kappa"), (ax[1], K, "recovered kappa")):
        im = a.pcolormesh(X, Y, Z, vmin=lim[0], vmax=lim[1], shading="gouraud", cmap="viridis")
        a.set_title(title)
        a.set_aspect("equal")
        fig.colorbar(im, ax=a)
    ax[1].plot(pts[:, 0], pts[:, 1], "k.", ms=2)
    im = ax[2].pcolormesh(X, Y, K - T, shading="gouraud", cmap="RdBu_r")
    ax[2].set_title("recovered - true")
    ax[2].set_aspect("equal")
    fig.colorbar(im, ax=ax[2])
    fig.tight_layout()
    fig.savefig(os.path.join(out, "conductivity_fields.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(res.history.aux["misfit"], label="misfit")
    ax.semilogy(res.history.aux["regularisation"], label="regularisation")
    ax.set_xlabel("iteration")
    ax.legend()
    ax.set_title("conductivity identification: objective history")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "conductivity_history.png"), dpi=110)
    plt.close(fig)

    n = X.shape[0]
    idx = np.arange(n * n).reshape(n, n)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], axis=-1).reshape(-1, 4)
    pts3 = np.column_stack([x, np.zeros(len(x))])
    meshio.write(
        os.path.join(out, "conductivity.vtu"),
        meshio.Mesh(
            pts3,
            [("quad", quads)],
            point_data={"kappa": K.ravel(), "kappa_true": T.ravel(), "error": (K - T).ravel()},
        ),
    )


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
