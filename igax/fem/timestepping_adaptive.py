"""``fem.adapt_steps``: choose the time steps of :func:`~igax.fem.solve_transient` from an error estimate.

The estimate is step doubling: from the accepted state, one step of ``2h`` and two steps of ``h`` with
the same one-step scheme (implicit Euler, Crank-Nicolson or a theta-method) give ``u_big`` and ``u_small``;
the local error of ``u_small`` is ``|u_small - u_big|_inf / (2^p - 1)`` (Richardson, ``p`` the order). Step
doubling was chosen over an embedded pair because it needs no second formula: it holds for every theta and is
exact in its leading term for nonlinear problems, at three Newton solves per accepted pair of steps.

The tolerance is on the error of the trajectory (max norm of the coefficients, at every step): a pair of
steps is accepted when its local error is at most ``tol * 2h / (T - t0)`` (error per unit step), so for a
dissipative problem, where errors do not grow, the local errors add up to at most ``tol`` (a bound: damping
makes the true error smaller, 70x in the test problem). The next step is
``h * safety * (allowed / err)^(1/p)``, clipped to ``[h/5, 2h]`` and to ``[dt_min, dt_max]``; a rejected step
(or a Newton solve that failed) is retried smaller and counted.

Under ``jit``/``grad``: the choice of steps is host control flow, so it runs eagerly, once, here. The accepted
steps are DATA (:attr:`StepSchedule.dts`): pass them as ``dt=`` to :func:`~igax.fem.solve_transient`, which
replays the same trajectory (the same Newton solves, so the same states to the Newton tolerance) as a
differentiable, checkpointable scan on that fixed schedule. The gradient then treats the step sizes as
constants: it is the exact gradient of the discrete trajectory on that schedule, not of the step-size choice
(which depends on the parameters only through the discrete, non-differentiable accept/reject decisions).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.field import Field
from igax.fem.spaces.base import FunctionSpace
from igax.fem.timestepping import _boundary_values, _make_step, _newton_config, _scheme, _setup

__all__ = ["adapt_steps", "StepSchedule"]


class StepSchedule(eqx.Module):
    """The steps chosen by :func:`adapt_steps`, and what it took to choose them.

    Attributes:
        dts: the accepted step sizes, ``(nsteps,)`` NumPy (pairs of equal half steps); pass as ``dt=``.
        times: the time at the end of each step, ``(nsteps,)``.
        errors: the local error estimate of each accepted pair, ``(nsteps // 2,)``.
        rejected: the number of rejected trial steps (error too large or Newton failed).
        newton_solves: Newton solves taken in all (three per trial).
        final: the state at the final time (a Field, not differentiable: replay for gradients).
    """

    dts: np.ndarray
    times: np.ndarray
    errors: np.ndarray
    rejected: int
    newton_solves: int
    final: Field

    @property
    def nsteps(self) -> int:
        return int(self.dts.shape[0])


def adapt_steps(
    form,
    V: FunctionSpace,
    u0,
    *,
    t_span: tuple[float, float],
    tol: float,
    dt0: float | None = None,
    dt_min: float | None = None,
    dt_max: float | None = None,
    scheme: str | float = "crank_nicolson",
    safety: float = 0.9,
    max_steps: int = 10_000,
    mass=None,
    bc=None,
    bc_values: Callable | None = None,
    method: str | None = None,
    rtol: float = 1e-10,
    atol: float = 0.0,
    maxiter: int = 25,
    line_search: bool = True,
    linear_options: dict | None = None,
    **inputs,
) -> StepSchedule:
    """Choose the steps of ``M du/dt + R(u; t) = 0`` over ``t_span`` for an error ``<= tol`` at the end.

    Arguments:
        form, V, u0, mass, bc, bc_values, method, rtol, atol, maxiter, line_search, linear_options, **inputs:
            as for :func:`~igax.fem.solve_transient`.
        t_span: ``(t0, T)``.
        tol: tolerance on the error at ``T`` (max norm of the coefficients; see the module notes).
        dt0: first step size (default ``(T - t0) / 100``).
        dt_min, dt_max: bounds on the step size (default ``(T - t0) * 1e-8`` and ``(T - t0) / 4``); a step
            that would have to be smaller than ``dt_min`` raises.
        scheme: a one-step scheme: ``"implicit_euler"`` (order 1), ``"crank_nicolson"`` (order 2) or a theta
            (order 2 at 0.5, else 1). The schedule may be replayed with ``scheme="bdf2"`` too.
        safety: factor on the predicted step.
        max_steps: limit on the trial steps.

    Returns:
        A :class:`StepSchedule`. Runs eagerly (host control flow); differentiate
        ``solve_transient(..., dt=schedule.dts)``.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from igax import fem
        >>> @fem.residual_form(inputs={})
        ... def decay(u, v, w):                      # du/dt = -u^2: u(t) = 1 / (1 + t)
        ...     return u.value**2 * v.value
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=1, elements=1))
        >>> s = fem.adapt_steps(decay, V, jnp.full(V.ndofs, 10.0), t_span=(0.0, 2.0), tol=1e-4)
        >>> bool(abs(float(s.final.coeffs[0]) - 10 / 21) < 1e-4), bool(s.dts[-1] > 10 * s.dts[0])
        (True, True)
    """
    theta, bdf2 = _scheme(scheme)
    leaves = jax.tree_util.tree_leaves((u0, inputs, bc, mass, V))
    if any(isinstance(a, jax.core.Tracer) for a in leaves):
        raise TypeError(
            "adapt_steps chooses the steps on the host and cannot run under jit/grad/vmap; call it outside, "
            "then differentiate solve_transient(..., dt=schedule.dts) (the steps are constants there)."
        )
    if bdf2:
        raise ValueError(
            "adapt_steps estimates errors by step doubling with a one-step scheme; use scheme="
            "'crank_nicolson' (order 2) and replay its schedule with solve_transient(..., scheme='bdf2')."
        )
    t0, T = (float(t) for t in t_span)
    if not T > t0:
        raise ValueError(f"t_span must be (t0, T) with T > t0, got {t_span!r}.")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}.")
    span = T - t0
    dt_min = span * 1e-8 if dt_min is None else float(dt_min)
    dt_max = span / 4 if dt_max is None else float(dt_max)
    h = span / 100 if dt0 is None else float(dt0)
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}.")
    if not h > 0:
        raise ValueError(f"dt0 must be positive, got {dt0}.")
    terms, fields, M, u, static, g = _setup(
        form, V, u0, mass=mass, bc=bc, bc_values=bc_values, t0=t0, inputs=inputs
    )
    config = _newton_config(theta, False, method, linear_options, rtol, atol, maxiter, line_search)
    p = 2 if theta == 0.5 else 1
    if g is not None:
        u = u.at[static.array].set(_boundary_values(g, bc_values, jnp.asarray(t0, u.dtype), jnp.zeros(0))[0])
    h = min(max(h, dt_min), dt_max)
    dts, times, errors = [], [], []
    t, rejected, solves = t0, 0, 0
    for _ in range(max_steps):
        if t >= T - 1e-12 * span:
            break
        h = min(h, (T - t) / 2)
        tt = jnp.asarray(t, u.dtype)
        hh = jnp.asarray(h, u.dtype)
        G = _boundary_values(g, bc_values, tt, jnp.stack([tt + hh, tt + 2 * hh]))
        G = jnp.zeros((3, 0), u.dtype) if G is None else G
        big, small, bad = _trial(terms, V, fields, M, G, u, tt, hh, static, config)
        solves += 3
        err = float(jnp.max(jnp.abs(small - big))) / (2**p - 1)
        allowed = tol * 2 * h / span
        if bool(bad) or not np.isfinite(err):
            fac = 0.25
            rejected += 1
        else:
            if err <= allowed:
                u, t = small, t + 2 * h
                dts += [h, h]
                times += [t - h, t]
                errors.append(err)
            else:
                rejected += 1
            fac = 2.0 if err == 0 else min(2.0, max(0.2, safety * (allowed / err) ** (1.0 / p)))
        if fac < 1 and h <= dt_min * (1 + 1e-12):
            raise RuntimeError(
                f"adapt_steps: at t = {t:.6g} the step would have to fall below dt_min = {dt_min:.3g} to "
                f"meet tol = {tol:.3g} (estimate {err:.3g}); loosen tol or lower dt_min."
            )
        h = min(max(h * fac, dt_min), dt_max)
    else:
        raise RuntimeError(f"adapt_steps: max_steps={max_steps} trial steps did not reach T = {T}; raise it.")
    return StepSchedule(np.asarray(dts), np.asarray(times), np.asarray(errors), rejected, solves, Field(V, u))


@eqx.filter_jit
def _trial(terms, space, fields, M, G, u, t, h, static, config):
    """One step of ``2h`` and two of ``h`` from ``u``; and whether any of the Newton solves failed.

    ``G``: the Dirichlet values at ``t``, ``t + h`` and ``t + 2h``.
    """
    step = _make_step(terms, space, static, config)
    args = (fields, M)
    big, r1 = step(args, u, u, t, 2 * h, 2 * h, False, G[2])
    half, r2 = step(args, u, u, t, h, h, False, G[1])
    small, r3 = step(args, half, u, t + h, h, h, False, G[2])
    return big, small, (r1.status != 0) | (r2.status != 0) | (r3.status != 0)
