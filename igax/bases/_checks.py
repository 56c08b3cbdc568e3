"""Value checks of the bases' inputs that also hold under ``jit``: the run-time half of validation.

Shapes, dtypes and static options are checked when a function is traced. Values (finite numbers, positive
weights, increasing sites) are only known at run time under ``jit``/``vmap``/``grad``; there igax uses the
mechanism of the whole package, :func:`igax._errors.branched_error_if`: a ``lax.cond`` that calls back to
Python only when a check fails, raises igax's message (also logged first, so it is the first line a user
reads) and passes derivatives through. Concrete input is checked at once in NumPy by the callers, with the
offending index in the message.

Cost: the predicate is one fused reduction over the checked arrays; the conditional branch costs ~3.6 us per
call on the CPU whatever the size (measured on an 8 us native interpolation), so the native interpolation
kernel checks its operands itself and fails through XLA's FFI error status instead, with the same messages
(see ``igax/_native/interp_kernels.cc``); everything else comes here. A program that holds such a check
cannot be serialised by ``jax.export`` (host callbacks are not serialisable); :func:`igax.layers.interpolate`,
which is exported, offers ``check=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

# one run-time error mechanism for the whole package, at package level (bases imports neither fem nor solvers)
from igax._errors import branched_error_if

__all__ = ["is_concrete", "runtime_check"]


def is_concrete(*arrays) -> bool:
    """Whether none of ``arrays`` is a tracer, i.e. their values can be inspected now."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def runtime_check(x: jax.Array, checks: Sequence[tuple[jax.Array, str]]) -> jax.Array:
    """``x`` guarded by run-time errors: raise when any ``bad`` flag is set.

    Arguments:
        x: an array that everything downstream depends on (e.g. the sites of an interpolation); the checks
            run before anything that uses the returned array.
        checks: ``(bad, message)`` pairs, ``bad`` a boolean scalar (traced). The first failing check's
            message is raised.

    Returns:
        ``x``, unchanged in value.
    """
    if not checks:
        return x
    bad = jnp.stack([jnp.asarray(b, bool).reshape(()) for b, _ in checks])
    return branched_error_if(x, jnp.any(bad), jnp.argmax(bad), [m for _, m in checks])
