"""Gradient checks: the Taylor remainder test and a central finite-difference comparison.

For a smooth ``f`` and a direction ``dx`` the remainders

    r0(h) = |f(x + h dx) - f(x)|                     ~ h     (zeroth order)
    r1(h) = |f(x + h dx) - f(x) - h <grad f(x), dx>| ~ h^2   (first order)

fall with rates 1 and 2 as ``h`` halves. A wrong gradient leaves ``r1`` at rate 1; a gradient that is right
only approximately (an inexact adjoint, a wrong boundary term) shows as a rate that drops towards 1 at small
``h``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from igax.inverse._jitcache import value_and_grad_flat

__all__ = ["taylor_test", "TaylorResult", "check_grad", "GradCheckResult"]


@dataclass(frozen=True)
class TaylorResult:
    """Outcome of :func:`taylor_test`.

    Attributes:
        h: step sizes, halving, shape ``(n,)``.
        r0: zeroth-order remainders ``|f(x + h dx) - f(x)|``.
        r1: first-order remainders ``|f(x + h dx) - f(x) - h g.dx|``.
        rates0: observed rates between consecutive steps, ``log2(r0[k] / r0[k+1])`` (expected 1).
        rates1: the same for ``r1`` (expected 2).
        rate0: least-squares slope of ``log r0`` against ``log h`` over all steps (expected 1).
        rate1: least-squares slope of ``log r1`` against ``log h`` over the steps above the round-off floor
            (expected 2).
        directional_derivative: ``<grad f(x), dx>``.
        roundoff_limited: ``True`` when some ``r1`` were at the round-off floor and were left out of
            ``rate1``.
    """

    h: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    rates0: np.ndarray
    rates1: np.ndarray
    rate0: float
    rate1: float
    directional_derivative: float
    roundoff_limited: bool

    def __str__(self) -> str:
        rows = [f"{'h':>10} {'r0':>12} {'rate0':>6} {'r1':>12} {'rate1':>6}"]
        for k, h in enumerate(self.h):
            q0 = f"{self.rates0[k - 1]:6.3f}" if k else " " * 6
            q1 = f"{self.rates1[k - 1]:6.3f}" if k else " " * 6
            rows.append(f"{h:10.3e} {self.r0[k]:12.4e} {q0} {self.r1[k]:12.4e} {q1}")
        rows.append(f"fitted rates: {self.rate0:.3f} (expect 1), {self.rate1:.3f} (expect 2)")
        return "\n".join(rows)


def _flat(f, x):
    x_flat, unravel = ravel_pytree(x)
    if not jnp.issubdtype(x_flat.dtype, jnp.floating):
        raise TypeError(f"x must hold floating-point arrays, got dtype {x_flat.dtype}.")
    return (lambda z: f(unravel(z))), x_flat, unravel


def _direction(dx, x_flat, seed):
    if dx is None:
        rng = np.random.default_rng(seed)
        d = rng.standard_normal(x_flat.shape[0])
        # Scale like x so that h is relative; an all-zero x gets unit-size steps.
        scale = float(jnp.max(jnp.abs(x_flat))) if x_flat.size else 1.0
        return jnp.asarray(d * (scale if scale > 0 else 1.0) / np.sqrt(max(x_flat.size, 1)), x_flat.dtype)
    d, _ = ravel_pytree(dx)
    if d.shape != x_flat.shape:
        raise ValueError(
            f"dx must have the structure and shapes of x ({x_flat.shape[0]} entries when flattened), got "
            f"{d.shape[0]} entries."
        )
    return jnp.asarray(d, x_flat.dtype)


def taylor_test(
    f: Callable[[Any], Any],
    x: Any,
    dx: Any = None,
    *,
    grad: Any = None,
    h0: float | None = None,
    n: int = 5,
    seed: int = 0,
    has_aux: bool = False,
) -> TaylorResult:
    """Taylor remainder test of the gradient of a scalar function.

    Arguments:
        f: scalar function of a pytree ``x``.
        x: the point, a pytree of float arrays.
        dx: the direction, same structure as ``x``; default: a seeded random direction scaled like ``x``.
        grad: a gradient to test (same structure as ``x``, e.g. from a hand-written adjoint); default
            ``jax.grad(f)(x)``.
        h0: the largest step, default ``1e-2``: with the default direction (scaled like ``x``) a 1 %
            perturbation.
        n: number of steps, halving from ``h0``.
        seed: seed of the random direction.
        has_aux: ``f`` returns ``(value, aux)`` (as for ``minimize(..., has_aux=True)``); ``aux`` is ignored.

    Returns:
        A :class:`TaylorResult`; ``rate1`` should be close to 2 and ``rate0`` close to 1.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import taylor_test
        >>> res = taylor_test(lambda x: jnp.sum(jnp.sin(x)), jnp.ones(4))
        >>> abs(res.rate1 - 2) < 0.1
        True
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 to measure a rate, got {n}.")
    _, x_flat, _ = _flat(f, x)
    d = _direction(dx, x_flat, seed)
    # One compiled value_and_grad, shared with minimize/optimality_criteria on the same objective; the values
    # at the perturbed points come from it too (one compilation instead of two).
    vg = value_and_grad_flat(f, x, has_aux)

    def value(z):
        v = vg(z)[0]
        return v[0] if has_aux else v

    if grad is None:
        out, g = vg(x_flat)
        f0 = out[0] if has_aux else out
    else:
        f0 = value(x_flat)
        g, _ = ravel_pytree(grad)
        if g.shape != x_flat.shape:
            raise ValueError(
                f"grad must have the structure of x ({x_flat.shape[0]} entries), got {g.shape[0]}."
            )
    if jnp.ndim(f0) != 0:
        raise TypeError(f"f must return a scalar, got shape {jnp.shape(f0)}.")
    f0 = float(f0)
    dd = float(jnp.vdot(g, d))
    h0 = 1e-2 if h0 is None else float(h0)
    hs = h0 * 0.5 ** np.arange(n)
    vals = np.array([float(value(x_flat + h * d)) for h in hs])
    r0 = np.abs(vals - f0)
    r1 = np.abs(vals - f0 - hs * dd)
    eps = float(jnp.finfo(x_flat.dtype).eps)
    floor = 100.0 * eps * max(abs(f0), 1e-300)
    tiny = np.finfo(float).tiny
    with np.errstate(divide="ignore", invalid="ignore"):
        rates0 = np.log2(np.maximum(r0[:-1], tiny) / np.maximum(r0[1:], tiny))
        rates1 = np.log2(np.maximum(r1[:-1], tiny) / np.maximum(r1[1:], tiny))
    keep = r1 > floor
    roundoff = bool(not np.all(keep))
    rate0 = float(np.polyfit(np.log(hs), np.log(np.maximum(r0, tiny)), 1)[0])
    if keep.sum() >= 2:
        rate1 = float(np.polyfit(np.log(hs[keep]), np.log(r1[keep]), 1)[0])
    else:
        # The first-order remainder is at round-off for every step (f is linear along dx, or h0 is too small).
        rate1 = float("nan")
    return TaylorResult(hs, r0, r1, rates0, rates1, rate0, rate1, dd, roundoff)


@dataclass(frozen=True)
class GradCheckResult:
    """Outcome of :func:`check_grad`.

    Attributes:
        ad: directional derivatives from the gradient, one per direction.
        fd: central finite-difference directional derivatives.
        rel_error: ``|ad - fd| / max(|fd|, scale)`` per direction.
        max_rel_error: the largest of them.
        step: the finite-difference steps used.
    """

    ad: np.ndarray
    fd: np.ndarray
    rel_error: np.ndarray
    max_rel_error: float
    step: np.ndarray


def check_grad(
    f: Callable[[Any], Any],
    x: Any,
    *,
    directions: int | Any = 3,
    grad: Any = None,
    step: float | None = None,
    seed: int = 0,
) -> GradCheckResult:
    """Compare the gradient of ``f`` with central finite differences along a few directions.

    Arguments:
        f: scalar function of a pytree ``x``.
        x: the point.
        directions: number of seeded random unit directions, or an array ``(k, n)`` of flat directions, or
            ``"coordinates"`` for every coordinate direction (small problems only).
        grad: gradient to test; default ``jax.grad(f)(x)``.
        step: finite-difference step; default ``eps ** (1/3) * max(|x|_inf, 1)``, the step that balances
            truncation (``h^2``) against round-off (``eps / h``) for central differences.
        seed: seed of the random directions.

    Returns:
        A :class:`GradCheckResult`; ``max_rel_error`` of order ``1e-6`` or smaller in float64 means agreement.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import check_grad
        >>> check_grad(lambda x: jnp.sum(x ** 3), jnp.arange(3.0)).max_rel_error < 1e-6
        True
    """
    ff, x_flat, _ = _flat(f, x)
    nx = x_flat.shape[0]
    if isinstance(directions, str):
        if directions != "coordinates":
            raise ValueError(f"directions must be an int, an array or 'coordinates', got {directions!r}.")
        D = np.eye(nx)
    elif np.ndim(directions) == 0:
        k = int(directions)
        if k < 1:
            raise ValueError(f"directions must be >= 1, got {k}.")
        D = np.random.default_rng(seed).standard_normal((k, nx))
        D /= np.linalg.norm(D, axis=1, keepdims=True)
    else:
        D = np.atleast_2d(np.asarray(directions, dtype=float))
        if D.shape[1] != nx:
            raise ValueError(f"directions must have shape (k, {nx}), got {D.shape}.")
    if grad is None:
        g = jax.grad(ff)(x_flat)
    else:
        g, _ = ravel_pytree(grad)
    eps = float(jnp.finfo(x_flat.dtype).eps)
    h = (
        step
        if step is not None
        else eps ** (1.0 / 3.0) * max(float(jnp.max(jnp.abs(x_flat))) if nx else 1.0, 1.0)
    )
    fj = jax.jit(ff)
    ad = np.asarray(D @ np.asarray(g, dtype=float))
    fd = np.empty(D.shape[0])
    for i, d in enumerate(D):
        dj = jnp.asarray(d, x_flat.dtype)
        fd[i] = (float(fj(x_flat + h * dj)) - float(fj(x_flat - h * dj))) / (2 * h)
    scale = max(float(np.max(np.abs(fd))), float(np.max(np.abs(ad))), np.finfo(float).tiny)
    rel = np.abs(ad - fd) / np.maximum(np.abs(fd), 1e-3 * scale)
    return GradCheckResult(ad, fd, rel, float(rel.max()), np.full(D.shape[0], h))
