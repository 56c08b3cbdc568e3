"""Constraints (a volume or an area budget, say) by quadratic penalty or by the augmented Lagrangian method.

The augmented Lagrangian for equality constraints ``c(x) = 0`` and inequality constraints ``h(x) <= 0`` is

    L(x; lam, nu, mu) = f(x) + lam.c + mu/2 |c|^2 + 1/(2 mu) sum(max(0, nu + mu h)^2 - nu^2),

minimised in ``x`` by :func:`igax.inverse.minimize` for fixed multipliers, which are then updated by
``lam += mu c``, ``nu = max(0, nu + mu h)``. Unlike a pure penalty, the constraint is met to tolerance without
sending ``mu`` to infinity, so the inner problems stay well conditioned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from igax.inverse.optimize import OptimizeResult, format_rows, minimize, summarise_pytree

__all__ = ["quadratic_penalty", "augmented_lagrangian", "ConstrainedResult"]


def quadratic_penalty(value, target=0.0, *, weight: float = 1.0, kind: str = "eq") -> jax.Array:
    """Quadratic penalty of a constraint ``value == target`` (``kind="eq"``) or ``value <= target``
    (``"le"``).

    Arguments:
        value: scalar or array constraint value (e.g. the area of a shape).
        target: the bound.
        weight: penalty factor ``mu``; the penalty is ``mu / 2 * sum(violation ** 2)``.
        kind: ``"eq"``, ``"le"`` (``value <= target``) or ``"ge"``.

    Returns:
        A scalar.

    Example:
        >>> from igax.inverse import quadratic_penalty
        >>> float(quadratic_penalty(1.5, 1.0, weight=2.0, kind="le"))
        0.25
    """
    v = jnp.asarray(value) - target
    if kind == "le":
        v = jnp.maximum(v, 0.0)
    elif kind == "ge":
        v = jnp.minimum(v, 0.0)
    elif kind != "eq":
        raise ValueError(f"kind must be 'eq', 'le' or 'ge', got {kind!r}.")
    return 0.5 * weight * jnp.sum(v**2)


@dataclass(frozen=True)
class ConstrainedResult:
    """Outcome of :func:`augmented_lagrangian`.

    Attributes:
        x: final parameters (structure of ``x0``).
        fun: objective ``f(x)`` (without penalty terms).
        eq, ineq: final constraint values (empty arrays where none).
        lam, nu: final multipliers.
        violation: max constraint violation per outer iteration.
        fun_history: objective per outer iteration.
        inner: the inner :class:`OptimizeResult` of each outer iteration.
        success: whether the violation fell below ``ctol`` (see ``inner[-1].message`` for the last
            inner solve).
        message: why the run stopped.
    """

    x: Any
    fun: float
    eq: np.ndarray
    ineq: np.ndarray
    lam: np.ndarray
    nu: np.ndarray
    violation: np.ndarray
    fun_history: np.ndarray
    inner: list[OptimizeResult]
    success: bool
    message: str

    @property
    def time_per_iteration(self) -> float:
        """Median wall seconds per inner iteration over all inner solves (compilation excluded)."""
        t = np.concatenate([r.history.time[1:] for r in self.inner]) if self.inner else np.array([])
        return float(np.median(t)) if t.size else float("nan")

    def __repr__(self) -> str:
        # A summary: the inner results and the histories would print hundreds of lines.
        rows = [
            ("message", self.message),
            ("success", self.success),
            ("fun", f"{self.fun:.6e}"),
            ("x", summarise_pytree(self.x)),
            ("eq", summarise_pytree(self.eq)),
            ("ineq", summarise_pytree(self.ineq)),
            ("violation", f"{self.violation[-1]:.3e}" if self.violation.size else "none"),
            ("inner", f"{len(self.inner)} inner solves, {sum(r.nit for r in self.inner)} iterations in all"),
        ]
        return format_rows(type(self).__name__, rows)

    __str__ = __repr__


def _as_vec(v):
    return jnp.atleast_1d(jnp.asarray(v)).ravel()


def augmented_lagrangian(
    objective: Callable[[Any], Any],
    x0: Any,
    *,
    eq: Callable[[Any], Any] | None = None,
    ineq: Callable[[Any], Any] | None = None,
    mu: float = 10.0,
    mu_growth: float = 10.0,
    mu_max: float = 1e8,
    outer_maxiter: int = 20,
    ctol: float = 1e-6,
    method: str | None = None,
    bounds=None,
    maxiter: int = 100,
    tol: float = 1e-6,
    progress: bool = False,
    callback=None,
    options: dict | None = None,
) -> ConstrainedResult:
    """Minimise ``objective`` subject to ``eq(x) == 0`` and ``ineq(x) <= 0`` (augmented Lagrangian).

    Arguments:
        objective: scalar function of a pytree.
        x0: starting point.
        eq: equality constraints, ``eq(x) -> scalar or array`` that must vanish.
        ineq: inequality constraints, ``ineq(x) -> scalar or array`` that must be ``<= 0``.
        mu: initial penalty factor; scale it so that ``mu * c^2`` is comparable to the objective.
        mu_growth: factor applied to ``mu`` when the violation did not fall by 4 in an outer iteration.
        mu_max: upper limit of ``mu``.
        outer_maxiter: number of multiplier updates at most.
        ctol: stop when the max violation is ``<= ctol``.
        method, bounds, maxiter, tol, progress, callback, options: passed to :func:`minimize` for each inner
            problem (``maxiter`` and ``tol`` per inner problem); the default method is igax's L-BFGS
            (``"lbfgsb"`` with bounds).

    Returns:
        A :class:`ConstrainedResult`.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> from igax.inverse import augmented_lagrangian
        >>> res = augmented_lagrangian(lambda x: jnp.sum(x**2), jnp.zeros(2), eq=lambda x: jnp.sum(x) - 1.0)
        >>> np.allclose(res.x, 0.5, atol=1e-5)
        True
    """
    if eq is None and ineq is None:
        raise ValueError("give at least one of eq= or ineq=; without constraints call minimize() directly.")
    if mu <= 0 or mu_growth < 1:
        raise ValueError(f"mu must be > 0 and mu_growth >= 1, got mu={mu}, mu_growth={mu_growth}.")

    def cons(x):
        c = _as_vec(eq(x)) if eq is not None else jnp.zeros(0)
        h = _as_vec(ineq(x)) if ineq is not None else jnp.zeros(0)
        return c, h

    cons_jit = jax.jit(cons)  # constraints of PDE quantities are slow op by op
    c0, h0 = cons_jit(x0)
    lam = jnp.zeros_like(c0)
    nu = jnp.zeros_like(h0)

    def violation(c, h):
        parts = [jnp.abs(c), jnp.maximum(h, 0.0)]
        v = jnp.concatenate(parts)
        return float(jnp.max(v)) if v.size else 0.0

    x = x0
    viol_hist, f_hist, inner = [], [], []
    prev_viol = violation(c0, h0)
    message = f"outer_maxiter={outer_maxiter} reached"
    success = False

    # One Lagrangian for all outer iterations, with the multipliers and the penalty factor as arguments: the
    # compiled value_and_grad is then reused instead of recompiled for every multiplier update.
    def lagrangian(z, lam, nu, mu):
        f = objective(z)
        c, h = cons(z)
        pen = jnp.dot(lam, c) + 0.5 * mu * jnp.sum(c**2)
        pen = pen + 0.5 / mu * jnp.sum(jnp.maximum(0.0, nu + mu * h) ** 2 - nu**2)
        return f + pen, {"objective": f}

    for _ in range(int(outer_maxiter)):
        res = minimize(
            lagrangian,
            x,
            method=method,
            bounds=bounds,
            maxiter=maxiter,
            tol=tol,
            progress=progress,
            callback=callback,
            has_aux=True,
            options=options,
            args=(lam, nu, jnp.asarray(mu, dtype=lam.dtype)),
        )
        inner.append(res)
        x = res.x
        c, h = cons_jit(x)
        v = violation(c, h)
        viol_hist.append(v)
        f_hist.append(float(res.history.aux["objective"][-1]))
        lam = lam + mu * c
        nu = jnp.maximum(0.0, nu + mu * h)
        if v <= ctol:
            # The constraint is met; the last inner solve may still have stopped on round-off (scipy's
            # "precision loss") with a tiny gradient, which is not a failure of the constrained problem.
            message = f"constraint violation {v:.3e} <= ctol={ctol:g}; last inner solve: {res.message}"
            success = bool(np.isfinite(res.fun))
            break
        if v > 0.25 * prev_viol:
            mu = min(mu * mu_growth, mu_max)
        prev_viol = v
    c, h = cons_jit(x)
    return ConstrainedResult(
        x=x,
        fun=f_hist[-1],
        eq=np.asarray(c),
        ineq=np.asarray(h),
        lam=np.asarray(lam),
        nu=np.asarray(nu),
        violation=np.asarray(viol_hist),
        fun_history=np.asarray(f_hist),
        inner=inner,
        success=bool(success),
        message=message,
    )
