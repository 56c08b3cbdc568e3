"""One front for gradient-based optimisation: igax's L-BFGS(-B), jaxopt, optax or scipy, with a history.

``minimize(objective, x0, method=...)`` flattens a pytree ``x0`` (``jax.flatten_util.ravel_pytree``),
drives the chosen backend one iteration at a time from Python and records, for every iteration, the
objective, the norm of the (projected) gradient, the wall time and any auxiliary scalars the objective
returns. Stepping from Python (rather than handing the whole loop to ``jaxopt.run``/``scipy``) is what gives
one history format, one stopping rule, a progress bar and a callback that can stop the run or raise (the
shape-optimisation mesh guard does) for every backend. The objective's ``value_and_grad`` is jit-compiled
once (and shared with :func:`igax.inverse.taylor_test`); the first entries of ``history.time`` contain that
compile time.

Backends (``method``):

- ``None`` (the default): ``"lbfgs"``, or ``"lbfgsb"`` when ``bounds`` are given.
- ``"lbfgs"``, ``"lbfgsb"``: igax's own L-BFGS (:mod:`igax.inverse._lbfgs`), unconstrained / with bounds
  (two-metric projection). Options: ``history_size``, ``initial_step``, ``max_linesearch``, ``c1``, ``c2``.
- ``"jaxopt:lbfgs"``, ``"jaxopt:lbfgsb"``: ``jaxopt.LBFGS`` / ``jaxopt.LBFGSB`` (options go to their
  constructors), the default before igax had its own.
- ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"``, ``"adagrad"``, ``"adabelief"``, ``"lion"``, ... any optax
  optimiser by name (``learning_rate=`` in ``options``), or an ``optax.GradientTransformation``; bounds are
  imposed by projection after each step.
- ``"scipy"`` or ``"scipy:<name>"`` (``"scipy:L-BFGS-B"``, ``"scipy:BFGS"``, ``"scipy:TNC"``, ...):
  ``scipy.optimize.minimize`` with the JAX gradient (``jac=True``).

Why the default is igax's own L-BFGS and not jaxopt's (issue 16): a newcomer's inverse problem (a Robin
coefficient from 20 noisy point values, an objective of size 1e4) failed with jaxopt's L-BFGS, which takes a
unit first step along ``-grad``; with ``|grad| ~ 4e4`` that lands on a flat region, where it stayed for 100
iterations and 3435 evaluations; jaxopt's L-BFGS-B stalled at its upper bound the same way. Scaling the
objective by hand fixed it, which no one should have to know. And jaxopt's line search is compiled into its
step, so a trial point whose solve fails (``exp(1104)`` as a coefficient) raised out of the whole run. igax's
L-BFGS takes a first step of a safe length (``max(1, |x0| / 10)``, as SciPy's L-BFGS-B takes unit length),
searches on the host with a strong-Wolfe line search that treats a failed or non-finite evaluation as "too
far" and shortens the step, stops with ``success=True`` when the predicted decrease falls to the round-off of
the objective (a gradient tolerance can be out of reach of a large objective), and stops with a message saying
why when even steepest descent finds no decrease (usually a wrong gradient). On the problems tested it needs
about as many evaluations as SciPy's L-BFGS-B, and each is one call of the compiled ``value_and_grad``.

A solver that fails inside a compiled objective reaches Python wrapped in JAX's callback error, whose text is
a traceback. ``minimize`` raises igax's own exception instead (``SolverError: solve(method=...) failed: ...``
with a note saying where it happened), for every backend, when the failure is not recovered from: at ``x0``,
or at any point for the backends without igax's line search.

Interrupting a run (Ctrl-C) loses nothing: ``minimize`` raises :class:`Interrupted`, a subclass of
``KeyboardInterrupt``, whose ``result`` is an :class:`OptimizeResult` with ``success=False``, the history so
far and ``x`` the best iterate recorded (the lowest objective; for L-BFGS the last one)::

    try:
        res = minimize(loss, x0)
    except KeyboardInterrupt as err:    # Interrupted is one; err.result holds the run so far
        res = err.result

(in a notebook, after an interrupted cell: ``res = sys.last_value.result``). Raising rather than returning
keeps Ctrl-C's meaning: the script or cell stops instead of carrying on with a half-optimised ``x``. An
interrupt that arrives while a host callback of the compiled objective runs reaches JAX as a callback failure;
it is turned back into :class:`Interrupted` here. :func:`igax.inverse.train` does the same with a
``TrainResult``.

Printing an :class:`OptimizeResult` gives a short summary, like SciPy's (the arrays are in ``.history``).

jaxopt 0.8.5 works with jax 0.10.2 for both L-BFGS and L-BFGS-B (checked in tests against scipy); it is no
longer maintained, which is one more reason the default does not depend on it.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from igax.inverse._jitcache import ObjectiveOutputError, flat_objective, value_and_grad_flat
from igax.inverse._lbfgs import CapturedErrors, run_lbfgs

__all__ = ["minimize", "OptimizeResult", "History", "Iterate", "Interrupted", "projected_gradient_norm"]

logger = logging.getLogger(__name__)

_OPTAX_NAMES = (
    "adam",
    "adamw",
    "adamax",
    "amsgrad",
    "nadam",
    "radam",
    "sgd",
    "rmsprop",
    "adagrad",
    "adabelief",
    "lion",
    "novograd",
    "yogi",
    "fromage",
    "lamb",
)


@dataclass(frozen=True)
class History:
    """Per-iteration record of a run; entry 0 is the starting point.

    Attributes:
        fun: objective values, shape ``(nit + 1,)``.
        grad_norm: max-norm of the projected gradient (the plain gradient without bounds),
            shape ``(nit + 1,)``.
        time: wall seconds of each iteration; ``time[0]`` is the first evaluation, including jit compilation.
        aux: auxiliary scalars returned by an objective with ``has_aux=True``, one array per key.
    """

    fun: np.ndarray
    grad_norm: np.ndarray
    time: np.ndarray
    aux: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizeResult:
    """Outcome of :func:`minimize`.

    Attributes:
        x: the final parameters, same pytree structure as ``x0``.
        fun: final objective value.
        grad_norm: final max-norm of the projected gradient.
        nit: number of iterations taken.
        nfev: number of objective (and gradient) evaluations, where the backend reports it, else ``nit + 1``.
        success: whether a stopping tolerance was met (``False`` for ``maxiter``, a non-finite value, a failed
            line search).
        message: why the run stopped.
        method: the backend used.
        history: the :class:`History`.
        wall_time: total seconds.
    """

    x: Any
    fun: float
    grad_norm: float
    nit: int
    nfev: int
    success: bool
    message: str
    method: str
    history: History
    wall_time: float

    @property
    def time_per_iteration(self) -> float:
        """Median wall seconds per iteration, compilation (iteration 0) excluded."""
        t = self.history.time[1:]
        return float(np.median(t)) if t.size else float("nan")

    def __repr__(self) -> str:
        # A summary like scipy's OptimizeResult: the history arrays would print hundreds of lines.
        h = self.history
        aux = f"; aux: {', '.join(h.aux)}" if h.aux else ""
        rows = [
            ("message", self.message),
            ("success", self.success),
            ("method", self.method),
            ("fun", f"{self.fun:.6e}"),
            ("grad_norm", f"{self.grad_norm:.3e}"),
            ("x", summarise_pytree(self.x)),
            ("nit", self.nit),
            ("nfev", self.nfev),
            ("wall_time", f"{self.wall_time:.3g} s"),
            ("history", f"{len(h.fun)} iterates (fun, grad_norm, time{aux})"),
        ]
        return format_rows(type(self).__name__, rows)

    __str__ = __repr__


def summarise_pytree(x, *, edgeitems: int = 3) -> str:
    """One line for a parameter pytree: the values of a small array, else its first and last entries and
    its shape; for a pytree of several leaves, each leaf's dtype and shape.

    Example:
        >>> import numpy as np
        >>> from igax.inverse.optimize import summarise_pytree
        >>> summarise_pytree(np.arange(100.0))
        '[ 0.000e+00  1.000e+00  2.000e+00 ...  9.700e+01  9.800e+01  9.900e+01] (shape (100,))'
    """
    leaves = jax.tree_util.tree_leaves(x)
    if len(leaves) == 1 and not isinstance(x, dict | list | tuple):
        a = np.asarray(leaves[0])
        text = np.array2string(
            a.ravel(),
            threshold=2 * edgeitems,
            edgeitems=edgeitems,
            formatter={"float_kind": "{: .3e}".format},
            max_line_width=10**6,
        )
        return text if a.ndim == 1 and a.size <= 2 * edgeitems else f"{text} (shape {a.shape})"

    class _Leaf:
        def __init__(self, a):
            self.text = f"{np.asarray(a).dtype}{tuple(np.shape(a))}"

        def __repr__(self):
            return self.text

    return repr(jax.tree_util.tree_map(_Leaf, x))


def format_rows(title: str, rows) -> str:
    """``title(`` then one right-aligned ``name: value`` line per row, then ``)``."""
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"{title}("] + [f"  {k:>{width}}: {v}" for k, v in rows] + [")"])


@dataclass(frozen=True)
class Iterate:
    """What a callback sees after each iteration. Return ``True`` from the callback to stop the run."""

    iteration: int
    x: Any
    fun: float
    grad_norm: float
    aux: dict[str, float]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`minimize` or :func:`igax.inverse.train`, carrying the run so far in ``result``.

    A ``KeyboardInterrupt``, so an interrupted script still stops (``except KeyboardInterrupt`` catches it).

    Attributes:
        result: an :class:`OptimizeResult` (``minimize``; ``success=False``, ``x`` the best iterate recorded,
            the history so far) or a :class:`igax.inverse.TrainResult` (``train``; the last completed step,
            whose state was also written to the checkpoint, so that resuming is exact).
    """

    def __init__(self, message: str, result: Any):
        super().__init__(message)
        self.result = result


# JAX reports an exception raised inside a host callback (pure_callback, debug.callback, the solvers' direct
# backends) as a runtime error whose text ends with the callback's traceback; Ctrl-C that lands in a callback
# becomes such an error with a final line "KeyboardInterrupt".
_INTERRUPT_LINE = re.compile(r"(?m)^KeyboardInterrupt\b")


def caused_by_interrupt(err: BaseException) -> bool:
    """Whether ``err`` is a KeyboardInterrupt, directly or as the failure of a host callback under ``jit``."""
    if isinstance(err, KeyboardInterrupt):
        return True
    return isinstance(err, Exception) and bool(_INTERRUPT_LINE.search(str(err)))


def projected_gradient_norm(x, g, lower, upper) -> jax.Array:
    """Max-norm of ``clip(x - g, lower, upper) - x``, the gradient norm that vanishes at a bounded optimum.

    Arguments:
        x, g: flat parameter and gradient arrays.
        lower, upper: flat bounds (``-inf``/``inf`` where unbounded).

    Returns:
        A scalar; equal to ``max |g|`` without active bounds.
    """
    return jnp.max(jnp.abs(jnp.clip(x - g, lower, upper) - x))


def _flatten_bounds(bounds, x0_flat, unravel_like, x0) -> tuple[np.ndarray, np.ndarray] | None:
    if bounds is None:
        return None
    if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
        raise TypeError(
            "bounds must be a pair (lower, upper); each a number, an array/pytree shaped like x0, or None "
            f"for no bound on that side. Got {type(bounds).__name__}."
        )
    n = x0_flat.shape[0]
    out = []
    for side, b, fill in (("lower", bounds[0], -np.inf), ("upper", bounds[1], np.inf)):
        if b is None:
            out.append(np.full(n, fill))
            continue
        if np.ndim(b) == 0 and not isinstance(b, dict | list | tuple):
            out.append(np.full(n, float(b)))
            continue
        try:
            flat, _ = ravel_pytree(
                jax.tree_util.tree_map(lambda bb, xx: jnp.broadcast_to(bb, jnp.shape(xx)), b, x0)
            )
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"bounds {side} must be a number or a pytree with the structure and shapes of x0 "
                f"({unravel_like}); "
                f"it could not be matched: {err}"
            ) from None
        out.append(np.asarray(flat, dtype=np.float64))
    lower, upper = out
    if np.any(lower > upper):
        i = int(np.argmax(lower > upper))
        raise ValueError(
            f"bounds: lower > upper at flat index {i} ({lower[i]} > {upper[i]}); swap or fix them."
        )
    return lower, upper


def _normalise_method(method) -> tuple[str, Any]:
    import optax

    if isinstance(method, optax.GradientTransformation):
        return "optax", method
    if not isinstance(method, str):
        raise TypeError(
            "method must be a string ('lbfgs', 'lbfgsb', 'adam', 'scipy:L-BFGS-B', ...) or an "
            f"optax.GradientTransformation, got {type(method).__name__}."
        )
    low = method.lower()
    if low.startswith("scipy"):
        name = method.split(":", 1)[1] if ":" in method else "L-BFGS-B"
        return "scipy", name
    key = low.replace("-", "").replace("_", "").replace(":", "")
    if key == "lbfgs":
        return "lbfgs", None
    if key == "lbfgsb":
        return "lbfgsb", None
    if key in ("jaxoptlbfgs", "jaxoptlbfgsb"):
        return "jaxopt", key[len("jaxopt") :]
    if key in _OPTAX_NAMES:
        return "optax", key
    raise ValueError(
        f"method={method!r} is not known. Use 'lbfgs', 'lbfgsb' (igax's L-BFGS, with bounds), "
        "'jaxopt:lbfgs', 'jaxopt:lbfgsb', an optax name such as "
        f"{', '.join(repr(n) for n in _OPTAX_NAMES[:6])}, ..., or 'scipy:<name>' (e.g. 'scipy:L-BFGS-B')."
    )


class _Recorder:
    """Collects the history, runs the callback, the progress bar and the stopping rule."""

    def __init__(self, unravel, maxiter, tol, ftol, callback, progress, method_label):
        self.unravel = unravel
        self.maxiter = maxiter
        self.tol = tol
        self.ftol = ftol
        self.callback = callback
        self.fun: list[float] = []
        self.gnorm: list[float] = []
        self.times: list[float] = []
        self.aux: dict[str, list[float]] = {}
        self.stop_message: str | None = None
        self.success = False
        self.best: tuple[int, Any] | None = None  # (iteration, flat x) of the lowest finite objective
        self._t = time.perf_counter()
        self.t0 = self._t
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=maxiter, desc=f"minimize[{method_label}]", leave=False)

    def record(self, x_flat, value, gnorm, aux) -> bool:
        """Record one iterate; return True when the run must stop."""
        now = time.perf_counter()
        value = float(value)
        gnorm = float(gnorm)
        self.times.append(now - self._t)
        self._t = now
        self.fun.append(value)
        self.gnorm.append(gnorm)
        aux_f = {}
        if aux is not None:
            if not isinstance(aux, dict):
                raise TypeError(
                    "with has_aux=True the objective must return (value, aux) where aux is a dict of "
                    f"scalars, got aux of type {type(aux).__name__}."
                )
            for k, v in aux.items():
                aux_f[k] = float(v)
                self.aux.setdefault(k, []).append(aux_f[k])
        it = len(self.fun) - 1
        if math.isfinite(value) and (self.best is None or value < self.fun[self.best[0]]):
            # scipy hands over arrays it may reuse; JAX arrays are immutable and kept as they are.
            self.best = (it, x_flat if isinstance(x_flat, jax.Array) else np.array(x_flat, copy=True))
        if self.bar is not None and it > 0:
            self.bar.update(1)
            self.bar.set_postfix(f=f"{value:.4e}", g=f"{gnorm:.2e}")
        if not (math.isfinite(value) and math.isfinite(gnorm)):
            self.stop_message = (
                f"the objective or its gradient is not finite at iteration {it} (f={value}, |g|={gnorm}); "
                "check the model for invalid parameters (bounds may help)."
            )
            return True
        if gnorm <= self.tol:
            self.stop_message = f"gradient norm {gnorm:.3e} <= tol={self.tol:g}"
            self.success = True
            return True
        if self.ftol is not None and it > 0:
            prev = self.fun[-2]
            if abs(prev - value) <= self.ftol * max(abs(prev), abs(value), np.finfo(float).tiny):
                self.stop_message = f"relative objective change <= ftol={self.ftol:g}"
                self.success = True
                return True
        if self.callback is not None and it > 0:
            if self.callback(Iterate(it, self.unravel(x_flat), value, gnorm, aux_f)):
                self.stop_message = "stopped by callback"
                self.success = True
                return True
        if it >= self.maxiter:
            self.stop_message = f"maxiter={self.maxiter} reached"
            return True
        return False

    def close(self):
        if self.bar is not None:
            self.bar.close()

    def history(self) -> History:
        # An interrupt can land between the appends of one record: keep only complete entries.
        n = min(len(self.fun), len(self.gnorm), len(self.times))
        return History(
            fun=np.asarray(self.fun[:n]),
            grad_norm=np.asarray(self.gnorm[:n]),
            time=np.asarray(self.times[:n]),
            aux={k: np.asarray(v[:n]) for k, v in self.aux.items()},
        )


def minimize(
    objective: Callable[..., Any],
    x0: Any,
    *,
    method: str | Any | None = None,
    bounds: tuple[Any, Any] | None = None,
    maxiter: int = 100,
    tol: float = 1e-6,
    ftol: float | None = None,
    callback: Callable[[Iterate], bool | None] | None = None,
    progress: bool = True,
    has_aux: bool = False,
    jit: bool = True,
    options: dict | None = None,
    args: tuple = (),
) -> OptimizeResult:
    """Minimise a scalar JAX function of a pytree with a gradient-based method.

    Arguments:
        objective: ``objective(x) -> scalar`` (or ``(scalar, dict_of_scalars)`` with ``has_aux=True``),
            differentiable with ``jax.grad``.
        x0: starting point, any pytree of float arrays.
        method: ``None`` (igax's L-BFGS: ``"lbfgs"``, or ``"lbfgsb"`` with bounds), ``"lbfgs"``,
            ``"lbfgsb"``, ``"jaxopt:lbfgs"``, ``"jaxopt:lbfgsb"``, an optax name (``"adam"``, ...) or an
            ``optax.GradientTransformation``, or ``"scipy:<method>"``; see the module docstring.
        bounds: ``(lower, upper)``; each a number, ``None`` or a pytree like ``x0``. ``x0`` is clipped into
            them. Supported by ``"lbfgsb"``, ``"jaxopt:lbfgsb"``, the optax methods (projection) and the
            scipy methods with bounds.
        maxiter: iteration limit.
        tol: stop when the max-norm of the projected gradient is ``<= tol``.
        ftol: also stop when the relative change of the objective over one iteration is ``<= ftol``.
        callback: called with an :class:`Iterate` after each iteration; returning ``True`` stops the run,
            raising aborts it.
        progress: show a tqdm progress bar.
        has_aux: the objective returns ``(value, aux)``; the scalars of ``aux`` are recorded in
            ``history.aux``.
        jit: jit-compile the objective and the backend step (switch off for objectives that cannot be traced).
        args: extra arguments, ``objective(x, *args)``: arrays that change between calls (multipliers,
            data) without recompiling, since the compiled function is cached per objective.
        options: backend options, e.g. ``{"history_size": 20}`` or ``{"initial_step": 0.1}`` (the length
            of the first trial step) for igax's L-BFGS, ``{"learning_rate": 1e-2}`` for optax,
            ``{"maxcor": 20}`` for scipy; jaxopt's go to its constructor.

    Returns:
        An :class:`OptimizeResult` with ``x`` in the structure of ``x0`` and the :class:`History`.

    Raises:
        Interrupted: on Ctrl-C (a ``KeyboardInterrupt``, also one raised in a host callback of the compiled
            objective); its ``result`` holds the best iterate and the history so far.
        ValueError: when the objective's first evaluation fails with a shape error, naming ``x0``'s shape
            and the shapes the error mentions (the original error is chained).
        SolverError: (or another igax error raised inside the objective) when the objective fails at
            ``x0``, with the solver's own message and a note saying where; with igax's L-BFGS a failure at a
            trial point of the line search only shortens the step.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> from igax.inverse import minimize
        >>> res = minimize(lambda x: jnp.sum((x - 2.0) ** 2), jnp.zeros(3), progress=False)
        >>> np.allclose(res.x, 2.0)
        True
    """
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}.")
    if int(maxiter) < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter}.")
    if not (tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol}.")
    if method is None:
        method = "lbfgs" if bounds is None else "lbfgsb"
    backend, spec = _normalise_method(method)
    options = dict(options or {})
    x0_flat, unravel = ravel_pytree(x0)
    dtype = x0_flat.dtype if jnp.issubdtype(x0_flat.dtype, jnp.floating) else jnp.result_type(float)
    # A strongly typed copy: a weak-typed x0 (from Python floats) would make every jitted step compile twice.
    x0_flat = jnp.array(x0_flat, dtype=dtype)
    flat_bounds = _flatten_bounds(bounds, x0_flat, jax.tree_util.tree_structure(x0), x0)
    if flat_bounds is not None:
        if backend == "lbfgs" or (backend == "jaxopt" and spec == "lbfgs"):
            raise ValueError(
                f"method={method!r} does not take bounds; use method='lbfgsb' or 'scipy:L-BFGS-B'."
            )
        x0_flat = jnp.clip(x0_flat, flat_bounds[0], flat_bounds[1]).astype(x0_flat.dtype)

    flat_fun, _ = flat_objective(objective, x0, has_aux)
    # The scipy and optax routes share one compiled value_and_grad per objective with taylor_test & co.
    cached_vg = value_and_grad_flat(objective, x0, has_aux, jit)

    label = spec if backend == "optax" and isinstance(spec, str) else backend
    if backend in ("scipy", "jaxopt"):
        label = f"{backend}:{spec}"
    rec = _Recorder(unravel, int(maxiter), float(tol), ftol, callback, progress, label)
    captured = CapturedErrors()
    try:
        try:
            with captured:  # igax's run-time errors inside the objective, kept for the message
                if backend in ("lbfgs", "lbfgsb"):
                    x, nfev, extra_msg = run_lbfgs(
                        cached_vg,
                        x0_flat,
                        flat_bounds,
                        rec,
                        has_aux,
                        args,
                        options,
                        _gnorm_fn(flat_bounds),
                        caused_by_interrupt,
                        captured,
                        label,
                    )
                elif backend == "jaxopt":
                    x, nfev, extra_msg = _run_jaxopt(
                        spec, flat_fun, x0_flat, flat_bounds, rec, has_aux, jit, options, args
                    )
                elif backend == "optax":
                    x, nfev, extra_msg = _run_optax(
                        spec, flat_fun, x0_flat, flat_bounds, rec, has_aux, jit, options, args
                    )
                else:
                    x, nfev, extra_msg = _run_scipy(
                        spec, flat_fun, x0_flat, flat_bounds, rec, has_aux, jit, options, args, vg=cached_vg
                    )
        finally:
            rec.close()
    except BaseException as err:
        if caused_by_interrupt(err):
            res = _interrupted_result(rec, x0_flat, unravel, label)
            logger.info("minimize[%s]: %s", label, res.message)
            # from None: a callback's interrupt arrives as a JAX error whose text is a long traceback; the
            # original stays reachable as __context__.
            raise Interrupted(
                f"minimize[{label}] {res.message}. The run so far is in this exception's .result "
                "(except KeyboardInterrupt as err: res = err.result).",
                res,
            ) from None
        orig = captured.original(err)
        if orig is not err:
            # A solver (or another run-time check) failed inside the compiled objective: raise its own
            # exception, not JAX's wrapper whose text is a traceback of the callback machinery.
            where = "at the starting point x0" if not rec.fun else f"after iteration {len(rec.fun) - 1}"
            orig.add_note(f"minimize[{label}]: raised by the objective {where}.")
            raise orig.with_traceback(None) from None
        if (
            not rec.fun
            and isinstance(err, TypeError | ValueError)
            and not isinstance(err, ObjectiveOutputError)
        ):
            # The objective failed before producing any value: most often x0 has the wrong shape and the
            # objective's arithmetic does not broadcast. Say so in terms of x0 (the original error follows).
            msg = _x0_shape_message(err, x0)
            if msg is not None:
                raise ValueError(msg) from err
        raise
    hist = rec.history()
    message = rec.stop_message or extra_msg or "stopped"
    success = rec.success and rec.stop_message is not None
    if extra_msg and rec.stop_message is None:
        success = False
    res = OptimizeResult(
        x=unravel(jnp.asarray(x)),
        fun=float(hist.fun[-1]),
        grad_norm=float(hist.grad_norm[-1]),
        nit=len(hist.fun) - 1,
        nfev=int(nfev) if nfev is not None else len(hist.fun),
        success=success,
        message=message,
        method=label,
        history=hist,
        wall_time=time.perf_counter() - rec.t0,
    )
    logger.info("minimize[%s]: %s after %d iterations, f=%.6e", label, message, res.nit, res.fun)
    return res


def _interrupted_result(rec: _Recorder, x0_flat, unravel, label: str) -> OptimizeResult:
    """The :class:`OptimizeResult` of an interrupted run: the best recorded iterate and the history so far."""
    hist = rec.history()
    nit = max(len(hist.fun) - 1, 0)
    plural = "iteration" if nit == 1 else "iterations"
    if rec.best is None or rec.best[0] >= len(hist.fun):
        x, fun, gnorm = x0_flat, float("nan"), float("nan")
        where = "before the first objective value was computed; x is x0"
    else:
        it, x = rec.best
        fun, gnorm = float(hist.fun[it]), float(hist.grad_norm[it])
        where = f"x is the best iterate recorded (iteration {it}, f={fun:.6e})"
    return OptimizeResult(
        x=unravel(jnp.asarray(x, dtype=x0_flat.dtype)),
        fun=fun,
        grad_norm=gnorm,
        nit=nit,
        nfev=len(hist.fun),
        success=False,
        message=f"interrupted by the user (KeyboardInterrupt) after {nit} {plural}; {where}",
        method=label,
        history=hist,
        wall_time=time.perf_counter() - rec.t0,
    )


_SHAPE_IN_TEXT = re.compile(r"\((?:\s*\d+\s*,)*\s*\d*\s*,?\s*\)")  # (4,)  (2, 3)  ()


def _x0_shape_message(err: Exception, x0) -> str | None:
    """A message that puts a shape error of the objective's first evaluation in terms of ``x0``, or None."""
    text = str(err)
    if "shape" not in text.lower():
        return None
    leaves, treedef = jax.tree_util.tree_flatten(x0)
    leaf_shapes = {tuple(np.shape(a)) for a in leaves}
    if treedef.num_leaves == 1 and treedef.num_nodes == 1:
        desc = f"x0 has shape {tuple(np.shape(leaves[0]))}"
    else:
        desc = f"x0 has leaf shapes {jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), x0)}"
    others: list[tuple[int, ...]] = []
    for m in _SHAPE_IN_TEXT.finditer(text):
        shape = tuple(int(d) for d in re.findall(r"\d+", m.group(0)))
        if shape and shape not in leaf_shapes and shape not in others:
            others.append(shape)
    if others:
        listed = ", ".join(str(sh) for sh in others[:3])
        if len(leaves) > 1:
            hint = (
                f"The error mentions the shape(s) {listed}: if a leaf of x0 should have it, change that leaf."
            )
        else:
            hint = (
                f"The error mentions the shape(s) {listed}: if the objective expects parameters of that "
                f"shape, start from e.g. x0 = jnp.zeros({others[0]})."
            )
    else:
        hint = "Give x0 the shape (or pytree structure) that the objective indexes and broadcasts against."
    return (
        f"{desc}, and the objective failed on its first evaluation, at x0, with a shape error. {hint} "
        f"If x0's shape is right, the mismatch is inside the objective (see the traceback above). The error: "
        f"{type(err).__name__}: {text}"
    )


def _gnorm_fn(flat_bounds):
    if flat_bounds is None:
        return lambda z, g: jnp.max(jnp.abs(g)) if g.size else jnp.zeros((), g.dtype)
    lo, hi = (jnp.asarray(b) for b in flat_bounds)
    return lambda z, g: projected_gradient_norm(z, g, lo.astype(z.dtype), hi.astype(z.dtype))


def _run_jaxopt(kind, flat_fun, x0, flat_bounds, rec, has_aux, jit, options, args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import jaxopt
    cls = jaxopt.LBFGS if kind == "lbfgs" else jaxopt.LBFGSB
    # jaxopt's own tol is set to 0: the stopping rule is ours, the same for every backend.
    solver = cls(fun=flat_fun, has_aux=has_aux, maxiter=max(int(rec.maxiter), 1), tol=0.0, jit=jit, **options)
    pre = ()  # LBFGSB takes the bounds as the positional argument after the parameters / the state
    if kind == "lbfgsb":
        if flat_bounds is None:
            lo, hi = np.full(x0.shape, -np.inf), np.full(x0.shape, np.inf)
        else:
            lo, hi = flat_bounds
        pre = ((jnp.asarray(lo, x0.dtype), jnp.asarray(hi, x0.dtype)),)
    gnorm = _gnorm_fn(flat_bounds)
    gnorm = jax.jit(gnorm) if jit else gnorm
    # jaxopt jits its line search but not ``update``; jit the whole step once here.
    init, update = (
        (jax.jit(solver.init_state), jax.jit(solver.update)) if jit else (solver.init_state, solver.update)
    )
    state = init(x0, *pre, *args)
    x = x0
    stop = rec.record(x, state.value, gnorm(x, state.grad), state.aux if has_aux else None)
    msg = None
    nfev = 0  # evaluations of discarded states; the live state counts its own
    restarts = 0
    while not stop:
        x_new, new = update(x, state, *pre, *args)
        if bool(new.failed_linesearch):
            # jaxopt's line search can accept a step that violates the curvature condition on a non-convex
            # objective; the next quasi-Newton direction may then point uphill and every later search fails.
            # Forget the curvature pairs and restart from the last good point with a gradient step; give up
            # only if that fails too.
            nfev += int(new.num_fun_eval)
            restarts += 1
            if restarts > 2:
                msg = (
                    "the line search failed after restarting L-BFGS (the objective may be noisy or its "
                    "gradient wrong: try taylor_test; or try method='scipy:L-BFGS-B' or "
                    "options={'linesearch': 'hager-zhang'})"
                )
                break
            state = init(x, *pre, *args)
            continue
        restarts = 0
        x, state = x_new, new
        stop = rec.record(x, state.value, gnorm(x, state.grad), state.aux if has_aux else None)
    return x, nfev + int(state.num_fun_eval), msg


def _run_optax(spec, flat_fun, x0, flat_bounds, rec, has_aux, jit, options, args):
    import optax

    if isinstance(spec, str):
        if "learning_rate" not in options:
            raise ValueError(
                f"method={spec!r} (optax) needs a step size: pass options={{'learning_rate': 1e-2}} "
                "(or similar)."
            )
        opt = getattr(optax, spec)(**options)
    else:
        opt = spec
    vg = jax.value_and_grad(flat_fun, has_aux=has_aux)
    gnorm = _gnorm_fn(flat_bounds)
    lo = hi = None
    if flat_bounds is not None:
        lo, hi = (jnp.asarray(b, x0.dtype) for b in flat_bounds)

    def evaluate(z, args):
        out, g = vg(z, *args)
        val, aux = out if has_aux else (out, None)
        return val, aux, g, gnorm(z, g)

    def step(z, s, g, args):
        upd, s = opt.update(g, s, z)
        z = optax.apply_updates(z, upd)
        if lo is not None:
            z = jnp.clip(z, lo, hi)
        return (z, s) + evaluate(z, args)

    if jit:
        evaluate, step = jax.jit(evaluate), jax.jit(step)
    s = opt.init(x0)
    val, aux, g, gn = evaluate(x0, args)
    x = x0
    stop = rec.record(x, val, gn, aux)
    while not stop:
        x, s, val, aux, g, gn = step(x, s, g, args)
        stop = rec.record(x, val, gn, aux)
    return x, None, None


def _run_scipy(name, flat_fun, x0, flat_bounds, rec, has_aux, jit, options, args, vg=None):
    import scipy.optimize as so

    if vg is None:
        vg = jax.value_and_grad(flat_fun, has_aux=has_aux)
        vg = jax.jit(vg) if jit else vg
    gnorm = _gnorm_fn(flat_bounds)
    dtype = x0.dtype
    cache: dict[bytes, tuple] = {}
    nfev = [0]

    def fg(z):
        key = np.asarray(z, dtype=np.float64).tobytes()
        if key not in cache:
            zj = jnp.asarray(z, dtype)
            out, g = vg(zj, *args)
            val, aux = out if has_aux else (out, None)
            nfev[0] += 1
            cache.clear()  # keep only the latest point: the one scipy accepts is normally the last evaluated
            cache[key] = (float(val), np.asarray(g, dtype=np.float64), aux, float(gnorm(zj, g)))
        return cache[key]

    def fun(z):
        val, g, _, _ = fg(z)
        return val, g

    z0 = np.asarray(x0, dtype=np.float64)
    val, _, aux, gn = fg(z0)
    if rec.record(z0, val, gn, aux):
        return x0, nfev[0], None
    state = {"x": z0}

    def cb(intermediate_result):
        z = np.asarray(intermediate_result.x)
        state["x"] = z.copy()
        v, _, a, gnz = fg(z)
        if rec.record(z, v, gnz, a):
            raise StopIteration

    sb = None
    if flat_bounds is not None:
        sb = so.Bounds(np.asarray(flat_bounds[0]), np.asarray(flat_bounds[1]))
    opts = {"maxiter": int(rec.maxiter) + 1}
    # Our gradient tolerance is the stopping rule; scipy's own gradient test is set to the same value where
    # the method has one, so that neither stops long before the other.
    if name.upper() in ("L-BFGS-B", "BFGS", "CG", "TNC"):
        opts["gtol"] = rec.tol
    if rec.ftol is not None and name.upper() in ("L-BFGS-B", "TNC", "SLSQP"):
        opts["ftol"] = rec.ftol
    opts.update(options)
    res = so.minimize(fun, z0, jac=True, method=name, bounds=sb, callback=cb, options=opts)
    if rec.stop_message is None:
        # scipy stopped on its own criterion: record the final point if new, then report scipy's message.
        if not np.array_equal(np.asarray(res.x), state["x"]):
            v, _, a, gnz = fg(res.x)
            rec.record(np.asarray(res.x), v, gnz, a)
            state["x"] = np.asarray(res.x)
        if rec.stop_message is None:
            rec.stop_message = f"scipy: {res.message}"
            rec.success = bool(res.success)
    return jnp.asarray(state["x"], dtype), nfev[0], None
