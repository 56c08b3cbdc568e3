"""Run-time errors from inside compiled programs, with igax's message first (the lowest layer of igax).

Every subpackage uses this one mechanism (``bases`` for its value checks, ``solvers`` for failed solves,
``fem`` for point location and kernel checks), so it lives at package level: ``bases`` and ``solvers``
import nothing of each other for it.

A failed solve (or Newton iteration, or any check on values) is often only known when a ``jit``-compiled
program runs. :func:`error_if` returns its array unchanged and raises igax's own exception where a predicate
holds:

* with concrete values (eager calls, and ``jax.grad`` without ``jit``) it raises at once, so the user catches
  e.g. a ``SolverError`` whose text starts with igax's message;
* under ``jit``/``vmap`` a ``lax.cond`` calls back to Python only when the predicate holds (no host round trip
  on success). The callback builds the exception from the *run-time* diagnostics it is given (residual,
  iterations, a failure code; under ``vmap`` their worst values over the failing elements), logs its message
  (logger ``igax.solvers._errors``, the name it had when it lived there, level ERROR) and raises it.

Why not ``equinox.error_if``, which igax used before: under ``jax.jit`` JAX turns any exception raised in a
host callback into ``JaxRuntimeError("INTERNAL: CpuCallback error calling callback: <traceback>")`` and
first logs the traceback once more ("jax.pure_callback failed"); neither can be changed from inside the
callback. Equinox's message is fixed at trace time (no residual, no iteration count) and ends in a banner
asking to wrap the program in ``equinox.filter_jit``. Here

1. the exception raised in the callback is igax's (``SolverError: solve(method=...) failed: ...``), with the
   same text as an eager call, and is the first line of the exception's text after JAX's traceback frames;
2. the message is logged before JAX's wrapper exists, so in a terminal it is the first line printed, and JAX's
   duplicate traceback log of an igax error is dropped (a filter on the ``jax._src.callback`` logger that
   matches only exceptions raised here).

Derivatives pass through unchanged (a ``custom_jvp`` identity), and under ``vmap`` the condition is reduced
over the batch so the callback still runs only on failure. A program holding such a check cannot be
serialised with ``jax.export`` (host callbacks are not serialisable).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["branched_error_if", "error_if"]

# Not __name__: the logger keeps the name it had in igax.solvers._errors, on which users and
# igax.inverse (CapturedErrors) install their filters.
LOGGER_NAME = "igax.solvers._errors"
logger = logging.getLogger(LOGGER_NAME)

_MARK = "_igax_runtime_error"


class _DropDuplicateLog(logging.Filter):
    """Drop JAX's "jax.pure_callback failed" traceback for exceptions that :func:`error_if` logged already."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not getattr(exc, _MARK, False)


logging.getLogger("jax._src.callback").addFilter(_DropDuplicateLog())


def _concrete(a) -> np.ndarray | None:
    """The value of ``a`` when it is known now (not a tracer), else None."""
    if isinstance(a, jax.core.Tracer):
        return None
    return np.asarray(a)


def _lowest(dtype):
    if jnp.issubdtype(dtype, jnp.floating):
        return -jnp.inf
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.iinfo(dtype).min
    return False


def _unvmap_worst(pred, d):
    """``d``'s largest value over the failing batch elements (elementwise), with no batch axis left."""
    d = jnp.where(pred, d, jnp.asarray(_lowest(d.dtype), d.dtype))
    if d.ndim == 0:
        return eqx.internal.unvmap_max(d)
    # unvmap_max reduces every axis: keep the entries apart (small arrays only, e.g. a residual history).
    flat = d.reshape(-1)
    return jnp.stack([eqx.internal.unvmap_max(flat[i]) for i in range(flat.shape[0])]).reshape(d.shape)


def error_if(x: jax.Array, pred, make_error: Callable[..., Exception], *diagnostics) -> jax.Array:
    """``x``, or raise ``make_error(*diagnostics)`` where ``pred`` holds (also at run time under ``jit``).

    Arguments:
        x: the array that downstream code uses; the check runs before anything that depends on it.
        pred: boolean scalar that flags a failure.
        make_error: builds the exception from the diagnostics as NumPy values; called on the host only when
            the check fails, so it may format numbers freely. Under ``vmap`` it receives, for each diagnostic,
            its largest value over the failing batch elements (the worst case).
        *diagnostics: arrays passed to ``make_error`` (e.g. a status code, a residual, an iteration count).

    Returns:
        ``x``, unchanged in value and in its derivatives.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax._errors import error_if
        >>> x, status = jnp.ones(3), jnp.int32(2)
        >>> make = lambda s: RuntimeError(f"failed with status {s}")
        >>> float(error_if(x, status == 7, make, status).sum())
        3.0
        >>> error_if(x, status != 0, make, status)
        Traceback (most recent call last):
        ...
        RuntimeError: failed with status 2
    """
    p = _concrete(pred)
    if p is not None and all(_concrete(d) is not None for d in diagnostics):
        if p.any():
            raise make_error(*(np.asarray(d) for d in diagnostics))
        return x
    pred = jnp.any(jnp.asarray(pred, dtype=bool))
    diagnostics = tuple(jnp.asarray(d) for d in diagnostics)
    struct = jax.ShapeDtypeStruct(x.shape, x.dtype)

    def raise_on_host(*d):
        err = make_error(*(np.asarray(a) for a in d))
        setattr(err, _MARK, True)
        logger.error("%s", err)
        raise err

    @jax.custom_jvp
    def check(x, pred, diagnostics):
        # Under vmap the condition and the diagnostics are reduced over the batch (equinox's unvmap
        # primitives), so this stays a conditional (a select would run the callback, and raise, on every call)
        # and the callback's operands and result are never batched (jacfwd needs an unbatched primal).
        fails = eqx.internal.unvmap_any(pred)
        worst = tuple(_unvmap_worst(pred, d) for d in diagnostics)
        return jax.lax.cond(fails, lambda: jax.pure_callback(raise_on_host, struct, *worst), lambda: x)

    @check.defjvp
    def check_jvp(primals, tangents):
        x, pred, diagnostics = primals
        return check(x, pred, diagnostics), tangents[0]

    return check(x, pred, diagnostics)


def branched_error_if(
    x: jax.Array, pred, index, messages: Sequence[str], error_type: type[Exception] = ValueError
) -> jax.Array:
    """``x``, or raise ``error_type(messages[index])`` where ``pred`` holds (as ``eqx.branched_error_if``).

    Arguments:
        x: the array that downstream code uses.
        pred: boolean flag of a failure.
        index: integer array choosing the message.
        messages: the messages, fixed at trace time.
        error_type: the exception class raised.

    Returns:
        ``x``, unchanged.
    """
    msgs = tuple(messages)
    return error_if(x, pred, lambda i: error_type(msgs[int(i)]), index)
