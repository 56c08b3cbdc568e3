"""Density-based topology optimisation: SIMP interpolation, density filter, optimality-criteria update.

The design is one density ``x_e`` in ``[0, 1]`` per element. The physical density is the filtered design
``x_phys = H x`` (a weighted average over the elements within a radius ``rmin``, which rules out checkerboards
and makes the result mesh-independent), and the stiffness is interpolated by SIMP,
``E(x_phys) = E_min + x_phys^p (E_0 - E_min)``. Sensitivities of any objective built from these pieces
come from ``jax.grad`` (through the filter, the interpolation and the adjoint solve), so the update rules
below need only the objective, its gradient and the volume.

The optimality-criteria (OC) update is the classic fixed-point rule for minimum compliance with a volume
constraint: ``x_new = clip(x * sqrt(-dc / (lambda dv)), x - move, x + move, 0, 1)`` with ``lambda`` found by
bisection so that the filtered volume is met exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from igax.inverse._jitcache import value_and_grad_flat
from igax.inverse.optimize import History, OptimizeResult

__all__ = ["DensityFilter", "simp", "oc_update", "optimality_criteria"]

logger = logging.getLogger(__name__)


class DensityFilter:
    """Linear density filter ``(H x)_e = sum_i w_ei x_i / sum_i w_ei``, cone weights ``max(0, rmin - d_ei)``.

    Arguments:
        centroids: element centroids, shape ``(nel, dim)``.
        rmin: filter radius in the units of the centroids (e.g. ``1.5`` element widths on a unit grid).

    The weights are found once with a k-d tree; applying the filter is a gather and a ``segment_sum``, linear
    and differentiable (its transpose, used by ``jax.grad``, is the same sparse sum the other way round).

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> from igax.inverse import DensityFilter
        >>> H = DensityFilter(np.array([[0.5, 0.5], [1.5, 0.5]]), rmin=1.5)
        >>> H(jnp.array([1.0, 0.0]))   # weights 1.5 and 0.5 on each side
        Array([0.75, 0.25], dtype=float64)
    """

    def __init__(self, centroids, rmin: float):
        c = np.asarray(centroids, dtype=np.float64)
        if c.ndim != 2:
            raise ValueError(f"centroids must have shape (nel, dim), got {c.shape}.")
        if not rmin > 0:
            raise ValueError(f"rmin must be positive, got {rmin}.")
        pairs = cKDTree(c).query_pairs(rmin, output_type="ndarray")  # i < j, |c_i - c_j| < rmin
        n = c.shape[0]
        rows = np.concatenate([np.arange(n), pairs[:, 0], pairs[:, 1]])
        cols = np.concatenate([np.arange(n), pairs[:, 1], pairs[:, 0]])
        w = rmin - np.linalg.norm(c[rows] - c[cols], axis=1)
        self.n = n
        self.rows, self.cols = rows, cols
        self.weights = w / np.bincount(rows, weights=w, minlength=n)[rows]  # rows sum to one

    def __call__(self, x) -> jax.Array:
        x = jnp.asarray(x)
        w = jnp.asarray(self.weights, x.dtype)
        return jax.ops.segment_sum(w * x[self.cols], self.rows, num_segments=self.n)

    def transpose(self, y) -> jax.Array:
        """``H^T y``: chains sensitivities with respect to ``x_phys`` back to the design ``x``."""
        y = jnp.asarray(y)
        w = jnp.asarray(self.weights, y.dtype)
        return jax.ops.segment_sum(w * y[self.rows], self.cols, num_segments=self.n)


def simp(x, penal: float = 3.0, E0: float = 1.0, Emin: float = 1e-9) -> jax.Array:
    """SIMP interpolation ``Emin + x^penal (E0 - Emin)`` of a density in ``[0, 1]``.

    Example:
        >>> from igax.inverse import simp
        >>> float(simp(0.5, 3.0))   # doctest: +ELLIPSIS
        0.125...
    """
    return Emin + jnp.asarray(x) ** penal * (E0 - Emin)


def oc_update(
    x: np.ndarray,
    dc: np.ndarray,
    dv: np.ndarray,
    volume: Callable[[np.ndarray], float],
    volfrac: float,
    *,
    move: float = 0.2,
    eta: float = 0.5,
    tol: float = 1e-10,
) -> tuple[np.ndarray, float]:
    """One optimality-criteria step with the Lagrange multiplier found by bisection.

    Arguments:
        x: current design densities ``(nel,)``.
        dc: objective sensitivities ``(nel,)`` (non-positive for compliance; positive entries are clipped).
        dv: volume sensitivities ``(nel,)`` (positive).
        volume: the volume fraction of a design (of its filtered densities when a filter is used).
        volfrac: the target volume fraction.
        move: largest change of a density in one step.
        eta: damping exponent of the update (0.5 is the classic choice).
        tol: relative bisection tolerance on the multiplier.

    Returns:
        ``(x_new, lambda)``; ``volume(x_new)`` equals ``volfrac`` to the bisection tolerance.

    Example:
        >>> import numpy as np
        >>> from igax.inverse import oc_update
        >>> x, lam = oc_update(np.full(4, 0.5), -np.ones(4), np.ones(4), np.mean, 0.4)
        >>> round(float(np.mean(x)), 8)
        0.4
    """
    x = np.asarray(x, dtype=np.float64)
    ratio = np.maximum(-np.asarray(dc, dtype=np.float64), 0.0) / np.asarray(dv, dtype=np.float64)
    lo_x, hi_x = np.maximum(0.0, x - move), np.minimum(1.0, x + move)
    l1, l2 = 0.0, 1e9
    # Grow the upper bracket until the volume is below the target (large lambda shrinks every density).
    while volume(np.clip(x * (ratio / l2) ** eta, lo_x, hi_x)) > volfrac and l2 < 1e300:
        l2 *= 1e3
    xnew = x
    while (l2 - l1) / (l1 + l2) > tol:
        lmid = 0.5 * (l1 + l2)
        xnew = np.clip(x * (ratio / lmid) ** eta, lo_x, hi_x)
        if volume(xnew) > volfrac:
            l1 = lmid
        else:
            l2 = lmid
    return xnew, 0.5 * (l1 + l2)


def optimality_criteria(
    objective: Callable[[jax.Array], jax.Array],
    x0,
    *,
    volume: Callable[[jax.Array], jax.Array],
    volfrac: float,
    maxiter: int = 200,
    tol: float = 1e-2,
    move: float = 0.2,
    eta: float = 0.5,
    callback: Callable | None = None,
    progress: bool = True,
) -> OptimizeResult:
    """Minimise a compliance-type objective under a volume constraint with the OC update.

    Arguments:
        objective: ``objective(x) -> scalar`` of the design densities (filter, SIMP and solve inside),
            differentiable; its sensitivities must be non-positive (more material, less compliance).
        x0: initial design ``(nel,)``, usually ``volfrac`` everywhere.
        volume: ``volume(x) -> scalar`` volume fraction of the (filtered) design, differentiable.
        volfrac: target volume fraction.
        maxiter: iteration limit.
        tol: stop when the largest density change of an iteration is ``<= tol`` (top88's criterion).
        move, eta: OC move limit and damping exponent.
        callback: called as ``callback(iteration, x, value)`` after each iteration; ``True`` stops.
        progress: tqdm progress bar.

    Returns:
        An :class:`~igax.inverse.OptimizeResult`; ``history.grad_norm`` holds the largest density change per
        iteration (0 for the start).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import optimality_criteria
        >>> w = jnp.array([1.0, 4.0, 9.0, 16.0])       # a compliance-like objective, decreasing in x
        >>> res = optimality_criteria(lambda x: jnp.sum(w / x), jnp.full(4, 0.5), volume=jnp.mean,
        ...                           volfrac=0.5, progress=False)
        >>> round(float(jnp.mean(res.x)), 3), bool(res.x[3] > res.x[0])   # the volume; more where it pays
        (0.5, True)
    """
    vg = value_and_grad_flat(
        objective, jnp.asarray(x0, dtype=float)
    )  # shared with taylor_test on the same objective
    vol = jax.jit(volume)
    dvol = jax.jit(jax.grad(volume))
    x0 = jnp.asarray(x0)
    x = np.asarray(x0, dtype=np.float64)
    funs, changes, times = [], [], []
    t0 = t = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=maxiter, desc="optimality criteria", leave=False)
    message, success = f"maxiter={maxiter} reached", False
    try:
        for it in range(maxiter + 1):
            c, dc = vg(jnp.asarray(x))
            c = float(c)
            now = time.perf_counter()
            times.append(now - t)
            t = now
            funs.append(c)
            if it == 0:
                changes.append(0.0)
            if not np.isfinite(c):
                message = f"the objective is not finite at iteration {it}"
                break
            if it > 0:
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(c=f"{c:.4e}", change=f"{changes[-1]:.3f}")
                if callback is not None and callback(it, x, c):
                    message, success = "stopped by callback", True
                    break
                if changes[-1] <= tol:
                    message, success = f"largest density change {changes[-1]:.2e} <= tol={tol:g}", True
                    break
            if it == maxiter:
                break
            dv = np.asarray(dvol(jnp.asarray(x)))
            xnew, _ = oc_update(
                x, np.asarray(dc), dv, lambda z: float(vol(jnp.asarray(z))), volfrac, move=move, eta=eta
            )
            changes.append(float(np.max(np.abs(xnew - x))))
            x = xnew
    finally:
        if bar is not None:
            bar.close()
    n = len(funs)
    hist = History(fun=np.asarray(funs), grad_norm=np.asarray(changes[:n]), time=np.asarray(times))
    logger.info("optimality_criteria: %s after %d iterations, c=%.6e", message, n - 1, funs[-1])
    return OptimizeResult(
        x=jnp.asarray(x),
        fun=funs[-1],
        grad_norm=float(hist.grad_norm[-1]),
        nit=n - 1,
        nfev=n,
        success=success,
        message=message,
        method="oc",
        history=hist,
        wall_time=time.perf_counter() - t0,
    )
