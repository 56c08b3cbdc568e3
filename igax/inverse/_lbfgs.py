"""igax's L-BFGS (and its bounded variant), driven from the host one evaluation at a time.

Why not jaxopt's L-BFGS, the default before: on a plain inverse problem (a Robin coefficient from 20 noisy
point values, issue 16) its first step was a unit step along ``-grad`` with ``|grad| ~ 1100``; it landed on a
flat region of the objective and spent 100 iterations and 3435 evaluations there. And its line search is
compiled into one program, so a trial step whose PDE solve fails (``exp(1104)`` as a coefficient) aborts the
whole run instead of shortening the step. This driver

* takes a *safe first step*: without curvature pairs (the first iteration, after a reset) the trial step moves
  ``x`` by ``initial_step = max(1, |x0| / 10)`` in the 2-norm (SciPy's L-BFGS-B takes a unit step; the
  relative part keeps parameters in large units from crawling), and the line search extrapolates if that is
  too short. Later steps start from the L-BFGS step, scaled by ``s.y / y.y`` as usual;
* searches with :func:`igax.inverse._linesearch.line_search` (strong Wolfe, cubic interpolation), in which a
  trial whose evaluation raises (``SolverError``, ``NewtonError``, a geometry check...) or returns a
  non-finite value or gradient is "too far" and the step is shortened; only a failure at ``x0`` is raised;
* restarts from steepest descent once when the line search finds no decrease along the quasi-Newton
  direction, and stops with a message saying why if that fails too.

Every evaluation is one call of the compiled ``value_and_grad`` shared with ``taylor_test`` (one compilation
for both; jaxopt compiled its own ``init`` and ``update`` programs, each holding the objective). The host-side
vector algebra is O(m n) per iteration for ``m`` stored pairs, nothing next to a PDE solve.

Bounds (``method="lbfgsb"``) use a two-metric projection (Bertsekas 1982): variables at a bound whose gradient
pushes outwards are held (steepest-descent scaling, so they stay on the bound), the others take the L-BFGS
direction built from their components of the stored pairs, and the search runs along the projected path
``clip(x + a d, lower, upper)``. Unlike an active-set method that frees or fixes one bound per iteration, many
bounds can become active in one step (density variables of topology optimisation hit 0 and 1 in thousands).

Failures of the solvers raised inside a compiled objective reach Python wrapped in JAX's
``JaxRuntimeError("INTERNAL: CpuCallback error ...")``; :class:`CapturedErrors` recovers igax's original
exception (the solvers log it before raising, and the record carries it), so the user sees the solver's own
message and type, and the log of a failure that the line search recovered from is not an ERROR.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from igax.inverse._linesearch import Trial, line_search

__all__ = ["CapturedErrors", "LBFGS_OPTIONS", "run_lbfgs"]

logger = logging.getLogger(__name__)

# The logger of igax.solvers._errors.error_if, which logs igax's exception (as the record's only argument)
# on the host just before raising it inside a host callback.
_RUNTIME_ERROR_LOGGER = "igax.solvers._errors"

LBFGS_OPTIONS = {
    "history_size": "number of stored curvature pairs (default 10)",
    "initial_step": "length (2-norm) of the first trial step, without curvature pairs "
    "(default max(1, |x0| / 10))",
    "max_linesearch": "evaluations per line search (default 25)",
    "c1": "sufficient-decrease constant (default 1e-4)",
    "c2": "curvature constant of the strong Wolfe condition (default 0.9)",
}


class CapturedErrors(logging.Filter):
    """Context manager that keeps (and silences) the exceptions that igax's run-time checks log.

    ``igax.solvers._errors.error_if`` logs its exception at ERROR level on the host, then raises it inside a
    callback, where JAX wraps it in a ``JaxRuntimeError`` whose text is a traceback. While this manager is
    active, those records are kept in :attr:`errors` instead of printed; :meth:`original` picks igax's
    exception for a wrapped error.
    """

    def __init__(self):
        super().__init__()
        self.errors: list[BaseException] = []

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) == 1 and isinstance(args[0], BaseException):
            self.errors.append(args[0])
            return False
        return True

    def __enter__(self) -> CapturedErrors:
        logging.getLogger(_RUNTIME_ERROR_LOGGER).addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger(_RUNTIME_ERROR_LOGGER).removeFilter(self)

    def original(self, err: BaseException) -> BaseException:
        """igax's exception behind ``err`` when ``err`` is JAX's wrapper of one raised in a callback, else
        ``err``."""
        # JAX raises the wrapper as a JaxRuntimeError or, from some dispatch paths, a plain ValueError; what
        # identifies it is its text, the callback's traceback, which ends with igax's exception.
        if self.errors and err is not self.errors[-1]:
            last = self.errors[-1]
            text = str(err)
            first_line = str(last).splitlines()[0] if str(last) else ""
            if "callback" in text.lower() and f"{type(last).__name__}: {first_line}" in text:
                return last
        return err


def _flat_bounds(bounds, n):
    if bounds is None:
        return None, None
    lo, hi = (np.asarray(b, dtype=np.float64).reshape(n) for b in bounds)
    return lo, hi


def _two_loop(g, pairs, mask, gamma):
    """``-H g`` of the L-BFGS inverse Hessian ``H`` built from ``pairs`` (components in ``mask`` only)."""
    q = g * mask
    coefs = []
    for s, y in reversed(pairs):
        sm, ym = s * mask, y * mask
        sy = float(sm @ ym)
        if not sy > 1e-12 * math.sqrt(float(sm @ sm) * float(ym @ ym)):
            coefs.append(None)  # the pair's curvature on the free components is not positive: skip it
            continue
        rho = 1.0 / sy
        a = rho * float(sm @ q)
        q = q - a * ym
        coefs.append((rho, a, sm, ym))
    r = gamma * q
    for c in reversed(coefs):
        if c is None:
            continue
        rho, a, sm, ym = c
        b = rho * float(ym @ r)
        r = r + (a - b) * sm
    return -r


def run_lbfgs(
    vg: Callable,
    x0,
    bounds,
    rec,
    has_aux: bool,
    args: tuple,
    options: dict,
    gnorm: Callable,
    is_interrupt: Callable[[BaseException], bool],
    captured: CapturedErrors,
    label: str,
) -> tuple[Any, int, str | None]:
    """Run L-BFGS(-B) from ``x0`` (flat), recording each iterate in ``rec``.

    Arguments:
        vg: ``vg(z, *args) -> (value or (value, aux), grad)``, compiled.
        x0: flat starting point (its dtype is the dtype of every evaluation).
        bounds: flat ``(lower, upper)`` arrays, or None.
        rec: the ``_Recorder`` of :func:`igax.inverse.minimize` (history, stopping rule, callback).
        has_aux, args: as for ``minimize``.
        options: keys of :data:`LBFGS_OPTIONS`.
        gnorm: ``gnorm(z, g)``, the (projected) gradient max-norm of the stopping rule.
        is_interrupt: whether an exception is a Ctrl-C (those are re-raised, never treated as a failed step).
        captured: the active :class:`CapturedErrors`.
        label: the method's name for log messages.

    Returns:
        ``(x, nfev, message)``: the last accepted point (flat, ``x0``'s dtype), the number of evaluations, and
        a message when the run stopped for a reason the recorder does not know (a failed line search).
    """
    unknown = set(options) - set(LBFGS_OPTIONS)
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in LBFGS_OPTIONS.items())
        raise TypeError(
            f"options {sorted(unknown)} are not options of method={label!r}. Its options are {known}. "
            "(jaxopt's options go with method='jaxopt:lbfgs' / 'jaxopt:lbfgsb'.)"
        )
    m = int(options.get("history_size", 10))
    c1 = float(options.get("c1", 1e-4))
    c2 = float(options.get("c2", 0.9))
    max_ls = int(options.get("max_linesearch", 25))
    if m < 1 or max_ls < 1 or not (0.0 < c1 < c2 < 1.0):
        raise ValueError(
            f"options for method={label!r}: need history_size >= 1, max_linesearch >= 1 and "
            f"0 < c1 < c2 < 1; got history_size={m}, max_linesearch={max_ls}, c1={c1}, c2={c2}."
        )
    dtype = x0.dtype
    x = np.asarray(x0, dtype=np.float64)
    n = x.shape[0]
    lo, hi = _flat_bounds(bounds, n)
    first_step = options.get("initial_step")
    first_step = float(first_step) if first_step is not None else max(1.0, 0.1 * float(np.linalg.norm(x)))
    if not first_step > 0.0:
        raise ValueError(f"options['initial_step'] must be > 0, got {first_step}.")
    # Relative size of the objective's round-off: a predicted decrease below roundoff * |f| cannot be seen.
    roundoff = 10.0 * float(jnp.finfo(dtype).eps)
    nfev = 0

    def evaluate(z):
        """``(f, g, aux, None)`` at ``z``, or ``(inf, None, None, error)`` when the objective failed there."""
        nonlocal nfev
        nfev += 1
        captured.errors.clear()
        try:
            out, g = vg(jnp.asarray(z, dtype=dtype), *args)
            val, aux = out if has_aux else (out, None)
            f = float(val)
            g = np.asarray(g, dtype=np.float64)
        except Exception as err:  # a failed solve, Newton iteration or run-time check at this point
            if is_interrupt(err):
                raise
            return math.inf, None, None, captured.original(err)
        return f, g, aux, None

    def record(z, f, g, aux):
        zj = jnp.asarray(z, dtype=dtype)
        return rec.record(zj, f, gnorm(zj, jnp.asarray(g, dtype=dtype)), aux)

    f, g, aux, err = evaluate(x)
    if err is not None:
        err.add_note(f"minimize[{label}]: raised by the objective at the starting point x0.")
        if captured.errors and err is captured.errors[-1]:
            # igax's exception from inside the compiled objective: raise it rather than JAX's wrapper (whose
            # text is a traceback of JAX's callback machinery with the message at its end).
            raise err.with_traceback(None) from None
        raise err
    stop = record(x, f, g, aux)
    if not (math.isfinite(f) and np.all(np.isfinite(g))):
        return jnp.asarray(x, dtype), nfev, None  # the recorder has stopped the run with its message

    pairs: deque = deque(maxlen=m)
    gamma = 1.0
    step_length = first_step  # length of the last accepted step: the scale of a restart's first trial

    def converged_to_roundoff(predicted):
        rec.stop_message = (
            f"converged to the precision of the objective: the predicted decrease of the next step, "
            f"{predicted:.1e}, is at the round-off of f={f:.6e} (the gradient norm "
            f"{float(gnorm(jnp.asarray(x), jnp.asarray(g))):.1e} cannot reach tol={rec.tol:g})"
        )
        rec.success = True

    message = None
    while not stop:
        # Direction: L-BFGS on the free variables; variables held at a bound get the scaled gradient.
        if lo is not None:
            w = float(np.linalg.norm(np.clip(x - g, lo, hi) - x))
            eps = np.minimum(w, 1e-3 * np.where(np.isfinite(hi - lo), hi - lo, np.inf))
            held = ((x <= lo + eps) & (g > 0)) | ((x >= hi - eps) & (g < 0))
            free = (~held).astype(np.float64)
        else:
            held = None
            free = np.ones(n)
        if pairs:
            d = _two_loop(g, pairs, free, gamma)
            alpha0 = 1.0
        else:
            d = -g * free
            gn = float(np.linalg.norm(d))
            alpha0 = step_length / gn if gn > 0 else 1.0
        if held is not None:
            # held variables at the bound stay there (d = 0); those within eps of it move onto it
            at_bound = held & ((x <= lo) | (x >= hi))
            d = np.where(held & ~at_bound, -gamma * g, np.where(held, 0.0, d))
        dg0 = float(g @ d)
        if not dg0 < 0.0:
            if not pairs:
                # Zero gradient on the free variables and nothing held can move: a stationary point that the
                # stopping rule did not accept (tol=0). Nothing more can be done.
                message = "no descent direction (the gradient on the free variables is zero)"
                break
            pairs.clear()  # not a descent direction: the curvature pairs are stale
            continue
        if len(pairs) >= 2 and -0.5 * dg0 <= roundoff * abs(f):
            # The quadratic model's decrease over a full L-BFGS step (half the Newton decrement squared) is
            # below what f's last digits can show: no line search can measure progress any more. (Two pairs at
            # least: a model built from one pair knows the curvature along a single direction.)
            converged_to_roundoff(-0.5 * dg0)
            break
        g_free_d = float((g * free) @ d)

        def trial(alpha, x=x, g=g, d=d, free=free, g_free_d=g_free_d):
            if lo is None:
                z = x + alpha * d
                straight = True
                pred = alpha * float(g @ d)
            else:
                raw = x + alpha * d
                z = np.clip(raw, lo, hi)
                straight = bool(np.array_equal(z, raw))
                # Bertsekas' projected Armijo rule: the free part of the step predicts alpha g_F . d_F, the
                # held part its actual (projected) change.
                pred = alpha * g_free_d + float((g * (1.0 - free)) @ (z - x))
            ft, gt, auxt, errt = evaluate(z)
            ok = errt is None and math.isfinite(ft) and gt is not None and bool(np.all(np.isfinite(gt)))
            if errt is not None:
                logger.info(
                    "minimize[%s]: the objective failed at a trial step (step length %.3g); shortening it. "
                    "%s: %s",
                    label,
                    alpha * float(np.linalg.norm(d)),
                    type(errt).__name__,
                    str(errt).splitlines()[-1] if str(errt) else "",
                )
            dgt = float(gt @ d) if ok else math.nan
            return Trial(alpha, ok, ft if ok else math.inf, dgt, pred, straight, (z, ft, gt, auxt), errt)

        ls = line_search(trial, f, dg0, alpha0, c1=c1, c2=c2, max_evals=max_ls)
        if ls.trial is None:
            if pairs and -0.5 * dg0 <= 100.0 * roundoff * abs(f) and not ls.failures:
                # No measurable decrease where the model predicts almost none: converged as far as f can tell.
                converged_to_roundoff(-0.5 * dg0)
                break
            if pairs:
                logger.info("minimize[%s]: line search failed (%s); restarting L-BFGS", label, ls.reason)
                pairs.clear()
                continue
            message = (
                f"the line search failed along the steepest-descent direction ({ls.reason}) at f={f:.6e}, "
                f"|g|={gnorm(jnp.asarray(x), jnp.asarray(g)):.3e} > tol={rec.tol:g}: "
            )
            if ls.failures == ls.evaluations and ls.last_error is not None:
                message += (
                    "the objective failed at every trial point, even very close to x; the last error: "
                    f"{type(ls.last_error).__name__}: {ls.last_error}"
                )
            else:
                message += (
                    "x is a minimum to the precision of the objective's values, or the gradient is wrong "
                    "(check it with taylor_test); loosen tol, or give ftol= to stop on a small change of f"
                )
            break
        z, f_new, g_new, aux = ls.trial.payload
        s, y = z - x, g_new - g
        sy, yy = float(s @ y), float(y @ y)
        if sy > np.finfo(np.float64).eps * yy and yy > 0.0:
            pairs.append((s, y))
            gamma = sy / yy
        step_length = float(np.linalg.norm(s)) or step_length
        x, f, g = z, f_new, g_new
        stop = record(x, f, g, aux)
    return jnp.asarray(x, dtype), nfev, message
