"""A line search that treats a failed evaluation as "too far": bracketing, cubic interpolation, strong Wolfe.

The evaluations of a PDE-constrained objective can fail: a trial step puts a coefficient at ``exp(1104)``,
the matrix holds ``inf`` and the solve raises, or the objective is ``inf`` because a shape guard rejected a
folded geometry. A line search compiled into one program (jaxopt's) cannot recover from an exception raised
halfway through it. This one runs on the host, one evaluation at a time:

* a trial whose evaluation raised, or whose value or gradient is not finite, is *too far*: the next trial is
  ten times closer to the last good point (a failure carries no value to interpolate);
* a trial without sufficient decrease (Armijo: ``f <= f0 + c1 a phi'(0)``, and strictly below ``f0``) is too
  far as well; the next one comes from a cubic through the values and slopes at both ends of the bracket
  (quadratic where the slope at the far end is not meaningful). A long step that lands on a flat region
  with a value only a little below ``f0`` fails this test, since a long step predicts a large decrease;
* a trial with sufficient decrease must also meet the strong curvature condition
  ``|phi'(a)| <= c2 |phi'(0)|``, so that the quasi-Newton curvature pair of an accepted step is positive;
  while the slope is still steep and negative the step is extrapolated.

With bounds the search runs along the projected path ``P(x + a d)``; where the path bends at a bound the
curvature condition has no meaning and sufficient decrease alone accepts (Bertsekas' projected Armijo rule).

The driver (:mod:`igax.inverse._lbfgs`) decides what a trial is (the evaluator returns a :class:`Trial`); this
module only chooses step lengths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Trial", "LineSearchResult", "line_search"]


@dataclass
class Trial:
    """One evaluation along the search path.

    Attributes:
        alpha: the step length.
        ok: the evaluation succeeded and its value and gradient are finite.
        f: the objective value (``inf`` when not ok).
        dg: the slope ``phi'(alpha) = g(x(alpha)) . d`` (meaningful on a straight path only).
        pred: the linear model's predicted change at this step (``alpha g . d`` on a straight path), negative;
            sufficient decrease means ``f <= f0 + c1 pred``.
        straight: whether the path is straight up to ``alpha`` (no bound bent it), so that the curvature
            condition and ``dg`` are meaningful.
        payload: whatever the evaluator keeps for an accepted trial (the point, its gradient, aux).
        error: the exception of a failed evaluation, else None.
    """

    alpha: float
    ok: bool
    f: float
    dg: float
    pred: float
    straight: bool = True
    payload: Any = None
    error: BaseException | None = None


@dataclass
class LineSearchResult:
    """Outcome of :func:`line_search`.

    Attributes:
        trial: the accepted trial, or None when no step with sufficient decrease was found.
        evaluations: number of evaluations made.
        failures: how many of them failed (raised, or non-finite).
        curvature: whether the accepted trial meets the strong curvature condition (False: accepted on
            sufficient decrease alone, after the evaluation budget ran out or along a bent path).
        reason: why no step was accepted ("" when one was).
        last_error: the last exception of a failed evaluation, if any.
    """

    trial: Trial | None
    evaluations: int
    failures: int
    curvature: bool
    reason: str
    last_error: BaseException | None


def _cubic_min(a: Trial, b: Trial) -> float | None:
    """Minimiser of the cubic through values and slopes at ``a`` and ``b`` (Nocedal & Wright, eq. 3.59)."""
    if a.alpha == b.alpha:
        return None
    d1 = a.dg + b.dg - 3.0 * (a.f - b.f) / (a.alpha - b.alpha)
    disc = d1 * d1 - a.dg * b.dg
    if not (disc >= 0.0 and math.isfinite(disc)):
        return None
    d2 = math.copysign(math.sqrt(disc), b.alpha - a.alpha)
    den = b.dg - a.dg + 2.0 * d2
    if den == 0.0:
        return None
    t = b.alpha - (b.alpha - a.alpha) * (b.dg + d2 - d1) / den
    return t if math.isfinite(t) else None


def _quadratic_min(a: Trial, b: Trial) -> float | None:
    """Minimiser of the parabola through ``a``'s value and slope and ``b``'s value."""
    h = b.alpha - a.alpha
    curv = b.f - a.f - a.dg * h
    if not (curv > 0.0 and math.isfinite(curv)):
        return None
    t = a.alpha - a.dg * h * h / (2.0 * curv)
    return t if math.isfinite(t) else None


def _next_in_bracket(lo: Trial, hi: Trial) -> float:
    """A trial step between ``lo`` (sufficient decrease, lowest value so far) and ``hi`` (too far)."""
    width = hi.alpha - lo.alpha
    if not hi.ok:
        # A failed evaluation tells nothing about the shape of phi: come ten times closer.
        return lo.alpha + 0.1 * width
    t = None
    if lo.straight and hi.straight:
        t = _cubic_min(lo, hi)
    if t is None:
        t = _quadratic_min(lo, hi)
    if t is None:
        t = lo.alpha + 0.5 * width
    # Keep the trial well inside the bracket, so that it shrinks by a fixed factor at least; the lower
    # limit is small because a huge overshoot (a value many orders above f0) is common on a first step.
    lo_frac, hi_frac = (0.01, 0.9) if not lo.alpha else (0.1, 0.9)
    s = (t - lo.alpha) / width
    return lo.alpha + min(max(s, lo_frac), hi_frac) * width


def line_search(
    evaluate: Callable[[float], Trial],
    f0: float,
    dg0: float,
    alpha0: float,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evals: int = 25,
    grow: float = 4.0,
) -> LineSearchResult:
    """Find a step along a descent direction with sufficient decrease and (on straight paths) curvature.

    Arguments:
        evaluate: ``evaluate(alpha) -> Trial``; must not raise for a failed objective (return
            ``Trial(ok=False)`` with the error instead), but may raise to abort (Ctrl-C).
        f0, dg0: value and slope (``< 0``) at ``alpha = 0``.
        alpha0: the first trial step.
        c1, c2: sufficient-decrease and curvature constants, ``0 < c1 < c2 < 1``.
        max_evals: evaluation budget.
        grow: extrapolation factor while the slope stays steep and no upper end is known.

    Returns:
        A :class:`LineSearchResult`.
    """
    lo = Trial(0.0, True, f0, dg0, 0.0)  # lowest value with sufficient decrease so far (the start at first)
    hi: Trial | None = None  # a step known to be too far, or the other end of a bracket around a minimum
    alpha = alpha0
    evals = failures = 0
    last_error: BaseException | None = None
    while evals < max_evals:
        t = evaluate(alpha)
        evals += 1
        if not t.ok:
            failures += 1
            last_error = t.error if t.error is not None else last_error
            hi = t
        elif not (t.f < lo.f and t.f <= f0 + c1 * t.pred):
            # No sufficient decrease, or no decrease at all: near round-off ``f0 + c1 pred`` rounds to f0,
            # and a step to an equal value would be accepted for nothing.
            hi = t
        elif not t.straight or abs(t.dg) <= c2 * abs(dg0):
            return LineSearchResult(t, evals, failures, t.straight, "", last_error)
        else:
            # Sufficient decrease, slope still steep: a minimum lies beyond t if the slope is negative,
            # between lo and t (or t and hi) otherwise (Nocedal & Wright, algorithm 3.6).
            if hi is None:
                if t.dg >= 0.0:
                    hi = lo
            elif t.dg * (hi.alpha - t.alpha) >= 0.0:
                hi = lo  # the slope at t points back: the minimum lies between the old lo and t
            lo = t
            if hi is None:
                alpha = grow * t.alpha
                continue
        nxt = _next_in_bracket(lo, hi)
        if not (abs(nxt - lo.alpha) > 1e-14 * max(abs(lo.alpha), abs(hi.alpha))) or nxt <= 0.0:
            break  # the bracket has shrunk to round-off
        alpha = nxt
    if lo.alpha > 0.0:
        # Sufficient decrease but not (yet) curvature: still a step that lowers the objective.
        return LineSearchResult(lo, evals, failures, False, "", last_error)
    if failures == evals:
        reason = f"all {evals} trial evaluations failed"
    elif failures:
        reason = f"no sufficient decrease in {evals} trials ({failures} failed evaluations)"
    else:
        reason = f"no sufficient decrease in {evals} trials"
    return LineSearchResult(None, evals, failures, False, reason, last_error)
