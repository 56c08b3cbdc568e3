"""Three ways to learn a parametric PDE with igax: solver in the loop, discrete energy, collocation PINN.

The parametric problem, on the unit square:

    -div(nu grad u) = 0,   u = 1 on the left,  u = 0 on the right,  nu grad u . n = 0 on top and bottom,
    nu(x; xi) = exp(a(x; xi)),  a = a Karhunen-Loeve sum with 6 standard normal coefficients xi.

The task of all three models is the map ``xi -> u``, checked against igax solutions (degree-2 splines on an
``elements x elements`` mesh) on held-out samples:

(a) **solver in the loop (learned effective coefficient of a coarse solve)**: a network maps ``xi`` to the
    spline coefficients of ``log nu_c`` on a coarse mesh (1/4 of the elements per direction); the coarse
    problem ``-div(nu_c grad u_c) = 0`` is assembled and solved inside the loss (a batch of solves under
    ``vmap``, gradients by the adjoint), and ``u_c``, prolongated exactly to the fine spline space, is
    compared with the fine reference solutions of a training set (made by igax). The network never sees
    ``nu``: it learns an effective (upscaled) conductivity for which a small coarse solve reproduces the fine
    solution, and every prediction is the exact solution of a diffusion problem (boundary data, flux
    balance, maximum principle hold by construction).
(b) **discrete energy, no solve**: a network maps ``xi`` to the free spline coefficients of ``u`` on the fine
    space, with the Dirichlet data imposed exactly (``u = lift + mask * output``); the loss is the discrete
    energy ``1/2 u^T K(nu) u`` with ``K`` assembled by igax for each sample. No reference data, no solve:
    fresh ``xi`` are drawn at every step.
(c) **collocation PINN**: a network ``u(x, xi)`` with the Dirichlet data built in,
    ``u = (1 - x) + x (1 - x) N(x, y, xi)``; the loss is the mean squared strong residual
    ``lap u + grad a . grad u`` (the equation divided by ``nu``) at random points, plus the Neumann condition
    at random boundary points, all by automatic differentiation in ``x``.

Each model trains for the same wall-clock budget (compilation not counted, reported apart). The script
reports, for each, the training time, the relative L2 error on held-out samples against igax solutions, and
the inference time per sample, next to the time of a direct igax solve, and writes pictures of a held-out
sample.

Run: ``python examples/parametric_diffusion.py`` or ``igax demo training``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from igax import fem
from igax.bases.bspline import design_matrix
from igax.fem import library
from igax.inverse.random_fields import kl_expansion
from igax.inverse.training import DirichletLift, discrete_energy, make_dataset, relative_l2_errors, train

DEMO = {
    "name": "training",
    "description": "Parametric diffusion learned three ways: solver in the loop, discrete energy, PINN",
    "sizes": {
        "tiny": {"elements": 8, "n_train": 32, "n_test": 8, "budget_s": 1.5, "width": 32, "pinn_depth": 2},
        "small": {"elements": 12, "n_train": 128, "n_test": 32, "budget_s": 20.0, "width": 64},
        "default": {"elements": 16, "n_train": 256, "n_test": 64, "budget_s": 90.0, "width": 128},
    },
}

DEGREE = 2


# -- the parametric problem ----------------------------------------------------------------------------------
def greville(knots: np.ndarray, degree: int) -> np.ndarray:
    """Greville abscissae: the spline coefficients of ``x`` itself (linear functions are reproduced)."""
    n = len(knots) - degree - 1
    return np.array([np.mean(knots[i + 1 : i + degree + 1]) for i in range(n)])


class Problem:
    """Space, KL field, boundary conditions and helpers of one discretisation of the parametric problem."""

    def __init__(self, elements: int, kl, degree: int = DEGREE):
        geo = fem.geometry.rectangle().refine(degree=degree, elements=(elements, elements))
        self.V = V = fem.SplineSpace(geo)
        self.kl = kl
        self.bcs = [fem.DirichletBC(V, "left", 1.0), fem.DirichletBC(V, "right", 0.0)]
        kx, ky = (np.asarray(k) for k in V.knots)
        self.knots, self.degree = (kx, ky), degree
        nx, ny = len(kx) - degree - 1, len(ky) - degree - 1
        self.shape = (nx, ny)
        # Coefficients of 1 - x (dof = ix * ny + iy): the exact lift of the boundary data, a linear function.
        self.linear = np.repeat(1.0 - greville(kx, degree), ny)
        self.zero = jnp.zeros(V.ndofs)

    def stiffness(self, xi):
        """K(nu) without boundary conditions, nu = exp(a(x; xi))."""
        return fem.assemble(library.diffusion, self.V, kappa=self.kl.as_callable(xi))

    def solve(self, xi) -> jax.Array:
        """Coefficients of the igax solution for one ``xi``."""
        return fem.solve(self.stiffness(xi), self.zero, bc=self.bcs).coeffs

    def solve_log_coefficient(self, log_nu: jax.Array) -> jax.Array:
        """Solution coefficients for the conductivity ``exp(log_nu)`` (``log_nu``: spline coefficients)."""
        K = fem.assemble(exp_diffusion, self.V, c=fem.Field(self.V, log_nu))
        return fem.solve(K, self.zero, bc=self.bcs).coeffs

    def grid_values(self, coeffs: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Values on the tensor grid ``xs x xs`` (the rectangle's geometry map is the identity)."""
        Bx = design_matrix(self.knots[0], self.degree, xs)[0]
        By = design_matrix(self.knots[1], self.degree, xs)[0]
        return Bx @ np.asarray(coeffs).reshape(self.shape) @ By.T  # (nx_grid, ny_grid)


@fem.bilinear_form(symmetric=True)
def exp_diffusion(u, v, w):
    """``exp(c) grad u . grad v`` (``c``: the log-conductivity, a Field)."""
    return jnp.exp(w.c.value) * jnp.sum(u.grad * v.grad)


def prolongation(coarse: Problem, fine: Problem) -> np.ndarray:
    """The exact matrix of the embedding of the coarse spline space into the fine one (nested knots)."""
    mats = []
    for d in range(2):
        x = np.linspace(0.0, 1.0, 8 * fine.shape[d])
        Bf = design_matrix(fine.knots[d], fine.degree, x)[0]
        Bc = design_matrix(coarse.knots[d], coarse.degree, x)[0]
        mats.append(np.linalg.lstsq(Bf, Bc, rcond=None)[0])  # (nf_d, nc_d), exact up to round-off
    return np.kron(mats[0], mats[1])


@fem.functional
def _sq_error(w):
    return (w.p - w.u) ** 2


@fem.functional
def _sq_value(w):
    return w.u**2


def _small_last_layer(mlp: eqx.nn.MLP, scale: float) -> eqx.nn.MLP:
    """Shrink the output layer so that the untrained network is a small perturbation of its baseline."""
    last = mlp.layers[-1]
    mlp = eqx.tree_at(lambda m: m.layers[-1].weight, mlp, last.weight * scale)
    return eqx.tree_at(lambda m: m.layers[-1].bias, mlp, last.bias * 0.0)


# -- the three models ----------------------------------------------------------------------------------------
def solver_in_loop_model(fine: Problem, coarse: Problem, width: int, key):
    """(a) network xi -> coarse log-conductivity; loss = relative L2 misfit of the coarse solve (squared)."""
    P = jnp.asarray(prolongation(coarse, fine))
    M = fem.assemble(library.mass, fine.V)
    net = _small_last_layer(eqx.nn.MLP(fine.kl.n_terms, coarse.V.ndofs, width, 2, jax.nn.gelu, key=key), 0.1)

    def predict(net, xi):
        return P @ coarse.solve_log_coefficient(net(xi))

    def sample_loss(net, xi, u_ref):
        e = predict(net, xi) - u_ref
        return jnp.dot(e, M @ e) / jnp.dot(u_ref, M @ u_ref)

    def loss(net, batch):
        xi, u_ref = batch
        return jnp.mean(jax.vmap(sample_loss, (None, 0, 0))(net, xi, u_ref))

    return net, loss, predict


def energy_model(fine: Problem, width: int, key):
    """(b): network xi -> free spline coefficients of u; loss = discrete energy 1/2 u^T K(nu) u."""
    lift = DirichletLift(fine.bcs, base=jnp.asarray(fine.linear))
    net = _small_last_layer(eqx.nn.MLP(fine.kl.n_terms, lift.n_free, width, 2, jax.nn.gelu, key=key), 0.1)

    def predict(net, xi):
        return lift(net(xi))

    def loss(net, xi):
        energies = jax.vmap(lambda z: discrete_energy(fine.stiffness(z), predict(net, z)))(xi)
        return jnp.mean(energies)

    return net, loss, predict


def pinn_model(kl, width: int, key, depth: int = 3):
    """(c): network (x, y, xi) -> u with exact Dirichlet data; loss = strong residual at random points."""
    net = eqx.nn.MLP(2 + kl.n_terms, "scalar", width, depth, jnp.tanh, key=key)

    def u_at(net, x, xi):  # x: (2,)
        return (1.0 - x[0]) + x[0] * (1.0 - x[0]) * net(jnp.concatenate([x, xi]))

    def residual(net, x, xi):
        grad_u = jax.grad(u_at, argnums=1)(net, x, xi)
        # Laplacian as forward-over-reverse along the two axes (cheaper to compile than a full jax.hessian).
        lap = sum(
            jax.jvp(lambda y: jax.grad(u_at, argnums=1)(net, y, xi), (x,), (e,))[1] @ e
            for e in jnp.eye(2, dtype=x.dtype)
        )
        grad_a = jax.grad(lambda y: kl.log_field(xi, y))(x)
        return lap + jnp.dot(grad_a, grad_u)  # = div(nu grad u) / nu

    def sample_loss(net, xi, xin, xbd):
        r = jax.vmap(lambda x: residual(net, x, xi))(xin)
        flux = jax.vmap(lambda x: jax.grad(u_at, argnums=1)(net, x, xi)[1])(xbd)
        return jnp.mean(r**2) + jnp.mean(flux**2)

    def loss(net, batch):
        xi, xin, xbd = batch
        return jnp.mean(jax.vmap(sample_loss, (None, 0, 0, 0))(net, xi, xin, xbd))

    def predict(net, xi, x):  # points as rows, x: (..., dim) -> (...), like Field(points)
        pts = x.reshape(-1, 2)
        return jax.vmap(lambda p: u_at(net, p, xi))(pts).reshape(x.shape[:-1])

    return net, loss, predict


def pinn_sampler(kl, n_xi: int, n_interior: int, n_boundary: int):
    """key -> (xi, interior points, top/bottom boundary points), fresh at every step."""

    def sample(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        xi = kl.sample(k1, n_xi)
        xin = jax.random.uniform(k2, (n_xi, n_interior, 2))
        xb = jax.random.uniform(k3, (n_xi, n_boundary))
        yb = jax.random.bernoulli(k4, 0.5, (n_xi, n_boundary)).astype(xb.dtype)
        return xi, xin, jnp.stack([xb, yb], axis=-1)

    return sample


# -- evaluation ----------------------------------------------------------------------------------------------
def _timed(fn, *args, repeat: int = 3) -> float:
    """Best wall-clock time of a jitted call (compiled beforehand)."""
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def errors_at_quadrature(V, values, u_ref):
    """Relative L2 errors of values at the quadrature points ``(n, nel, nq)`` against igax solutions."""

    def one(p, c):
        u = fem.Field(V, c)
        return jnp.sqrt(fem.assemble(_sq_error, V, u=u, p=p) / fem.assemble(_sq_value, V, u=u))

    return jax.jit(jax.vmap(one))(values, u_ref)


def plot_sample(path, fine, xs, nu, ref, preds: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(preds)
    fig, ax = plt.subplots(2, n + 1, figsize=(3.3 * (n + 1), 6.2), constrained_layout=True)
    ext = (0, 1, 0, 1)
    vmin, vmax = float(ref.min()), float(ref.max())

    def show(a, img, title, **kw):
        im = a.imshow(img.T, origin="lower", extent=ext, **kw)
        a.set_title(title, fontsize=9)
        a.set_xticks([])
        a.set_yticks([])
        fig.colorbar(im, ax=a, shrink=0.8)

    show(ax[0, 0], ref, "reference u (igax)", vmin=vmin, vmax=vmax, cmap="viridis")
    show(ax[1, 0], np.log(nu), "log nu", cmap="RdBu_r")
    emax = max(float(np.abs(p - ref).max()) for p in preds.values())
    for k, (name, p) in enumerate(preds.items(), start=1):
        show(ax[0, k], p, name, vmin=vmin, vmax=vmax, cmap="viridis")
        err = np.abs(p - ref)
        show(ax[1, k], err, f"|error| {name}, max {err.max():.1e}", vmin=0.0, vmax=emax, cmap="magma")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_losses(path, curves: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for name, (t, loss) in curves.items():
        ax.semilogy(t, np.asarray(loss) / loss[0], marker=".", label=name)
    ax.set_xlabel("training time [s]")
    ax.set_ylabel("held-out loss / initial held-out loss")
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- driver --------------------------------------------------------------------------------------------------
def main(
    out: str | os.PathLike = "out/parametric_diffusion",
    *,
    budget_s: float = 10.0,
    n_train: int = 64,
    n_test: int = 16,
    elements: int = 8,
    width: int = 64,
    pinn_depth: int = 3,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    sil_learning_rate: float = 1e-2,
    sigma: float = 1.0,
    correlation_length: float = 0.3,
    n_kl: int = 6,
    seed: int = 0,
    eval_every: int = 50,
    progress: bool = False,
) -> dict:
    """Train the three models for ``budget_s`` seconds each and compare them on held-out samples.

    Arguments:
        out: folder of the pictures and checkpoints.
        budget_s: training wall-clock budget of each model (compilation excluded).
        n_train: reference solutions in the training set of the solver-in-the-loop model.
        n_test: held-out samples for the errors and timings.
        elements: elements per direction of the fine (reference) mesh; the coarse mesh has a quarter.
        width: hidden width of the networks (two hidden layers; ``pinn_depth`` for the PINN).
        batch_size: parameter samples per step (the PINN uses half as many, with 128 + 32 points each).
        learning_rate: Adam step of the energy model and the PINN; ``sil_learning_rate``: of model (a).
        sigma, correlation_length, n_kl: the KL field (pointwise std of log nu, correlation length, terms).
        seed: seed of all random draws.
        eval_every: steps between evaluations of the loss on a fixed batch (the learning curves; the PINN,
            with about ten times fewer steps, every ``eval_every // 5``); not counted as training time.
        progress: show progress bars.

    Returns:
        A dict of numbers: per model (prefixes ``sil_``, ``energy_``, ``pinn_``) the training and compile
        time, steps, the loss on a fixed evaluation batch before and after training, mean and max held-out
        relative L2 error and inference time per sample; the direct igax solve time per sample; the errors of
        two references that need no training (the linear lift ``1 - x`` and the coarse igax solve with the
        true nu).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kl = kl_expansion(n_kl, correlation_length=correlation_length, sigma=sigma)
    fine = Problem(elements, kl)
    coarse = Problem(max(2, elements // 4), kl)
    keys = jax.random.split(jax.random.key(seed), 8)
    xi_train = kl.sample(keys[0], n_train)
    xi_test = kl.sample(keys[1], n_test)

    # Reference solutions by igax (training data for (a), held-out truth for all).
    # One batched call for both sets (one compilation); its time per sample is the batched direct solve time.
    u_all, data_s = make_dataset(fine.solve, jnp.concatenate([xi_train, xi_test]), batch_size=64)
    u_train, u_test = u_all[:n_train], u_all[n_train:]
    one_solve = jax.jit(fine.solve)
    single_solve_s = _timed(one_solve, xi_test[0])

    res = {
        "elements": elements,
        "ndofs": fine.V.ndofs,
        "coarse_ndofs": coarse.V.ndofs,
        "kl_energy": kl.energy,
        "data_seconds": data_s,
        "direct_solve_s_per_sample": data_s / (n_train + n_test),
        "direct_solve_s_single": single_solve_s,
    }
    lin = jnp.broadcast_to(jnp.asarray(fine.linear), u_test.shape)
    res["baseline_linear_rel_l2"] = float(jnp.mean(relative_l2_errors(fine.V, lin, u_test)))

    def adam(lr):  # halve the step every 1000 steps (down to lr / 100): lets Adam settle late in training
        sched = optax.exponential_decay(lr, transition_steps=1000, decay_rate=0.5, end_value=lr / 100)
        return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))

    opt = adam(learning_rate)
    ckpt = out / "checkpoints"
    preds_test, models = {}, {}

    # (a) solver in the loop
    net, loss, predict = solver_in_loop_model(fine, coarse, width, keys[2])
    P = jnp.asarray(prolongation(coarse, fine))
    pred_a = eqx.filter_jit(jax.vmap(predict, (None, 0)))
    # Context: the coarse solve with the true nu (what a coarse model knowing nu achieves, no network).
    coarse_true = make_dataset(lambda z: P @ coarse.solve(z), xi_test, batch_size=n_test)[0]
    res["coarse_solve_rel_l2"] = float(jnp.mean(relative_l2_errors(fine.V, coarse_true, u_test)))
    r = train(loss, net, adam(sil_learning_rate), (xi_train, u_train), key=keys[3], batch_size=batch_size,
            budget_s=budget_s, checkpoint=ckpt / "solver_in_loop.eqx", resume=False, progress=progress,
            eval_batch=(xi_test, u_test), eval_every=eval_every)  # fmt: skip
    models["sil"] = r
    preds_test["sil"] = pred_a(r.model, xi_test)
    res["sil_infer_s_per_sample"] = _timed(pred_a, r.model, xi_test) / n_test

    # (b) discrete energy
    net, loss, predict = energy_model(fine, width, keys[4])
    r = train(loss, net, opt, lambda k: kl.sample(k, batch_size), key=keys[5], budget_s=budget_s,
            checkpoint=ckpt / "energy.eqx", resume=False, progress=progress, eval_batch=xi_test,
            eval_every=eval_every)  # fmt: skip
    pred_b = eqx.filter_jit(jax.vmap(predict, (None, 0)))
    models["energy"] = r
    preds_test["energy"] = pred_b(r.model, xi_test)
    res["energy_infer_s_per_sample"] = _timed(pred_b, r.model, xi_test) / n_test

    # (c) collocation PINN
    net, loss, predict_pinn = pinn_model(kl, width, keys[6], pinn_depth)
    sampler = pinn_sampler(kl, n_xi=max(2, batch_size // 2), n_interior=128, n_boundary=32)
    r = train(loss, net, opt, sampler, key=keys[7], budget_s=budget_s, checkpoint=ckpt / "pinn.eqx",
            resume=False, progress=progress, eval_batch=sampler(jax.random.key(seed + 1)),
            eval_every=max(1, eval_every // 5))  # fmt: skip
    models["pinn"] = r
    pred_c = eqx.filter_jit(jax.vmap(predict_pinn, (None, 0, None)))
    # Inference of the PINN: its values at the quadrature points of the fine space (what its error
    # integrates).
    x_quad = fine.V.quadrature_points()  # (nel, nq, dim): the points of form inputs, as rows
    res["pinn_infer_s_per_sample"] = _timed(pred_c, r.model, xi_test, x_quad) / n_test

    err = {
        "sil": relative_l2_errors(fine.V, preds_test["sil"], u_test),
        "energy": relative_l2_errors(fine.V, preds_test["energy"], u_test),
        "pinn": errors_at_quadrature(fine.V, pred_c(r.model, xi_test, x_quad), u_test),
    }
    for name, m in models.items():
        res.update(
            {
                f"{name}_train_s": m.train_seconds,
                f"{name}_compile_s": m.compile_seconds,
                f"{name}_steps": m.steps,
                f"{name}_eval_loss_initial": m.history["eval_loss"][0],
                f"{name}_eval_loss_final": m.history["eval_loss"][-1],
                f"{name}_rel_l2": float(jnp.mean(err[name])),
                f"{name}_rel_l2_max": float(jnp.max(err[name])),
            }
        )

    # Pictures of the held-out sample farthest from the linear profile 1 - x (the most informative one).
    xs = np.linspace(0.0, 1.0, 60)
    k = int(jnp.argmax(relative_l2_errors(fine.V, lin, u_test)))
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    ref = fine.grid_values(u_test[k], xs)
    preds = {
        "(a) solver in the loop": fine.grid_values(preds_test["sil"][k], xs),
        "(b) discrete energy": fine.grid_values(preds_test["energy"][k], xs),
        # Eager evaluation: a handful of operations, not worth a compilation.
        "(c) PINN": np.asarray(predict_pinn(models["pinn"].model, xi_test[k], jnp.stack([X, Y], axis=-1))),
    }
    # kl.field is a function of position: x with the coordinate axis first, (dim, ...), as igax calls it.
    kappa = np.asarray(kl.field(xi_test[k], np.stack([X, Y])))
    plot_sample(out / "training_sample.png", fine, xs, kappa, ref, preds)
    # Learning curves on the fixed evaluation batches. The energy loss is shifted by its minimum (the mean
    # energy of the reference solutions), so that it reads as the energy-norm error 1/2 |u - u_h|_K^2.
    e_min = float(
        jnp.mean(jax.jit(jax.vmap(lambda z, u: discrete_energy(fine.stiffness(z), u)))(xi_test, u_test))
    )
    curves = {}
    for (name, label), off in zip(
        [("sil", "(a) solver in the loop: rel. L2 misfit^2"), ("energy", "(b) energy - min energy"),
         ("pinn", "(c) PINN: residual loss")], [0.0, e_min, 0.0], strict=True
    ):  # fmt: skip
        h = models[name].history
        curves[label] = (h["eval_time"], np.asarray(h["eval_loss"]) - off)
    res["energy_eval_energy_error_final"] = float(curves["(b) energy - min energy"][1][-1])
    plot_losses(out / "training_loss.png", curves)
    return res


def table(res: dict) -> str:
    """The comparison as a Markdown table."""
    rows = [
        "| model | training time [s] (+ compile) | steps | held-out rel. L2 error (mean / max) "
        "| inference per sample [ms] |",
        "|---|---|---|---|---|",
    ]
    names = {"sil": "(a) solver in the loop", "energy": "(b) discrete energy", "pinn": "(c) collocation PINN"}
    for key, name in names.items():
        rows.append(
            f"| {name} | {res[f'{key}_train_s']:.1f} (+{res[f'{key}_compile_s']:.1f}) "
            f"| {res[f'{key}_steps']} "
            f"| {100 * res[f'{key}_rel_l2']:.2f} % / {100 * res[f'{key}_rel_l2_max']:.2f} % "
            f"| {1e3 * res[f'{key}_infer_s_per_sample']:.3f} |"
        )
    rows.append(
        f"| direct igax solve ({res['ndofs']} dofs) | - | - | reference "
        f"| {1e3 * res['direct_solve_s_per_sample']:.3f} (batched), {1e3 * res['direct_solve_s_single']:.3f} "
        "(single) |"
    )
    rows.append(f"| no training: u = 1 - x | - | - | {100 * res['baseline_linear_rel_l2']:.2f} % | - |")
    rows.append(
        f"| no network: coarse igax solve with the true nu ({res['coarse_ndofs']} dofs) | - | - "
        f"| {100 * res['coarse_solve_rel_l2']:.2f} % | - |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(DEMO["sizes"]), default="small")
    ap.add_argument("--out", default="out/parametric_diffusion")
    args = ap.parse_args()
    result = main(out=args.out, progress=True, **DEMO["sizes"][args.size])
    print(table(result))
    for k, v in result.items():
        print(f"{k}: {v}")
