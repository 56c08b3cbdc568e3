"""An implicit layer in miniature: fit the brachistochrone by differentiating through a root solve.

The curve of fastest descent from the origin to a point P = (px, py) (y pointing down) is the cycloid

    x = R (t - sin t),   y = R (1 - cos t),       which solves   y (1 + y'^2) = 2 R.

Passing through P fixes the end parameter t* by the root of  g(t) = (t - sin t) / (1 - cos t) - px / py  on
(0, 2 pi) (g rises monotonically from 0 to infinity there), then R = py / (1 - cos t*), and the descent
time is T = t* sqrt(R / gravity).

The root is found by plain bisection, which JAX cannot (and should not) differentiate step by step. Wrapping
it in ``jax.lax.custom_root`` gives the exact derivative by the implicit function theorem instead:
dt*/dp = -(dg/dt)^-1 dg/dp at the root, however the root was found. igax differentiates its PDE solves the
same way (the adjoint is one more linear solve with the transposed matrix, never the solver's iterations).

We then fit the end point: find px such that the descent time equals a target, with the gradient through the
root solve, and check that gradient by the Taylor test and against the closed-form implicit derivative.

Run: ``python examples/brachistochrone.py`` or ``igax demo brachistochrone``.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from igax import inverse

DEMO = {
    "name": "brachistochrone",
    "description": "Fit the end point of a brachistochrone through an implicitly differentiated root solve",
    "sizes": {
        "tiny": {"maxiter": 30, "method": "scipy:L-BFGS-B"},
        "small": {"maxiter": 50},
        "default": {"maxiter": 50},
    },
}

GRAVITY = 9.81


def _g(t, ratio):
    """(t - sin t) / (1 - cos t) - ratio, with 1 - cos t = 2 sin^2(t/2), which loses no digits."""
    s = jnp.sin(0.5 * t)
    return (t - jnp.sin(t)) / (2.0 * s * s) - ratio


def end_parameter(px, py, *, steps: int = 64):
    """The cycloid parameter t* in (0, 2 pi) of the end point P = (px, py), differentiable in px and py."""
    px, py = jnp.asarray(px, dtype=float), jnp.asarray(py, dtype=float)
    ratio = px / py

    def f(t):
        return _g(t, ratio)

    def bisect(f, t0):
        # 64 halvings of (0, 2 pi) reach round-off; the iterations are not differentiated (custom_root).
        lo = jnp.zeros_like(t0) + 1e-12
        hi = jnp.zeros_like(t0) + 2.0 * jnp.pi - 1e-12

        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            pos = f(mid) > 0
            return jnp.where(pos, lo, mid), jnp.where(pos, mid, hi)

        lo, hi = jax.lax.fori_loop(0, steps, body, (lo, hi))
        return 0.5 * (lo + hi)

    def tangent_solve(g, y):
        # g is the linearisation of f at the root (a scalar map here): solve g(x) = y.
        return y / g(jnp.ones_like(y))

    return jax.lax.custom_root(f, jnp.full_like(ratio, np.pi), bisect, tangent_solve)


def cycloid(px, py):
    """(R, t*, T): radius, end parameter and descent time of the brachistochrone from 0 to (px, py)."""
    t = end_parameter(px, py)
    R = py / (2.0 * jnp.sin(0.5 * t) ** 2)
    T = t * jnp.sqrt(R / GRAVITY)
    return R, t, T


def dT_dpx_closed_form(px, py):
    """dT/dpx by the implicit function theorem written out by hand (an independent check of custom_root)."""
    R, t, T = (float(v) for v in cycloid(px, py))
    # g(t) = (t - sin t)/(1 - cos t) = px/py  =>  dt/dpx = 1 / (py g'(t))
    c, s = np.cos(t), np.sin(t)
    gp = ((1 - c) ** 2 - (t - s) * s) / (1 - c) ** 2
    dt = 1.0 / (py * gp)
    # R = py / (1 - cos t)  =>  dR/dpx = -py sin t / (1 - cos t)^2 dt/dpx
    dR = -py * s / (1 - c) ** 2 * dt
    # T = t sqrt(R/g)
    return dt * np.sqrt(R / GRAVITY) + t * 0.5 / np.sqrt(R * GRAVITY) * dR


def main(
    out: str = "demo-output/brachistochrone",
    py: float = 1.0,
    px0: float = 0.5,
    target_time: float = 0.7,
    maxiter: int = 50,
    method: str = "lbfgs",
    progress: bool = False,
) -> dict:
    """Fit px so that the brachistochrone from the origin to (px, py) takes ``target_time`` seconds.

    Arguments:
        out: folder for the pictures.
        py: drop height (m).
        px0: initial horizontal distance (m).
        target_time: the descent time to match (s).
        maxiter: optimiser iterations.
        method: any ``igax.inverse.minimize`` method.
        progress: show a progress bar.

    Returns:
        A dict of numbers: fitted px, R, descent time, Taylor rate, gradient check, time per iteration.
    """
    Path(out).mkdir(parents=True, exist_ok=True)
    pos = inverse.Exp(1.0)  # px = exp(z) > 0

    def loss(z):
        _, _, T = cycloid(pos(z), py)
        return (T / target_time - 1.0) ** 2

    z0 = pos.inverse(px0)
    taylor = inverse.taylor_test(loss, z0, 1.0, h0=1e-2)
    grad_ad = float(jax.grad(lambda p: cycloid(p, py)[2])(px0))
    grad_cf = float(dT_dpx_closed_form(px0, py))
    res = inverse.minimize(loss, z0, method=method, maxiter=maxiter, tol=1e-12, progress=progress)
    px = float(pos(res.x))
    R, t, T = (float(v) for v in cycloid(px, py))

    # The fitted curve solves y (1 + y'^2) = 2 R (checked along the curve, away from the cusp at t = 0).
    ts = np.linspace(0.05, t, 200)
    y = R * (1 - np.cos(ts))
    yp = np.sin(ts) / (1 - np.cos(ts))
    ode_residual = float(np.max(np.abs(y * (1 + yp**2) - 2 * R)) / (2 * R))
    straight = np.hypot(px, py) * np.sqrt(2.0 / (GRAVITY * py))  # time on a straight ramp to the same point

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for p, label in ((px0, "initial"), (px, "fitted")):
        Rp, tp, Tp = (float(v) for v in cycloid(p, py))
        s = np.linspace(0, tp, 200)
        ax[0].plot(Rp * (s - np.sin(s)), Rp * (1 - np.cos(s)), label=f"{label}: T = {Tp:.3f} s")
        ax[0].plot([p], [py], "o")
    ax[0].invert_yaxis()
    ax[0].set_aspect("equal")
    ax[0].set_xlabel("x (m)")
    ax[0].set_ylabel("y (m, down)")
    ax[0].legend()
    ax[0].set_title(f"brachistochrone to P = (px, {py}); target T = {target_time} s")
    ax[1].semilogy(np.maximum(res.history.fun, 1e-32))
    ax[1].set_xlabel("iteration")
    ax[1].set_ylabel("(T / T* - 1)^2")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "brachistochrone.png"), dpi=120)
    plt.close(fig)

    result = {
        "px": px,
        "R": R,
        "t_end": t,
        "descent_time": T,
        "target_time": target_time,
        "straight_ramp_time": float(straight),
        "final_loss": res.fun,
        "iterations": res.nit,
        "time_per_iteration_s": res.time_per_iteration,
        "taylor_rate0": taylor.rate0,
        "taylor_rate1": taylor.rate1,
        "dT_dpx_autodiff": grad_ad,
        "dT_dpx_closed_form": grad_cf,
        "ode_residual": ode_residual,
    }
    for k, v in result.items():
        print(f"{k:22s} {v}")
    return result


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
