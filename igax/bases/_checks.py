"""Value checks of the bases' inputs that also hold under ``jit``: the run-time half of validation.

Shapes, dtypes and static options are checked when a function is traced. Values (finite numbers, positive
weights, increasing sites) are only known at run time under ``jit``/``vmap``/``grad``; there igax uses the
mechanism of its solvers (:mod:`igax.solvers.linear`): equinox's runtime errors
(``eqx.branched_error_if``), which raise from inside the compiled program. Concrete input is checked at once
in NumPy by the callers, with the offending index in the message.

Cost: the predicate is one fused reduction over the checked arrays, and the error branch is a ``lax.cond``
that calls back to Python only when a check fails. On the CPU that branch costs ~3.6 us per call whatever the
size (measured on an 8 us native interpolation), so the native interpolation kernel checks its operands
itself and fails through XLA's FFI error status instead, with the same messages (see
``igax/_native/interp_kernels.cc``); everything else comes here. Equinox's ``EQX_ON_ERROR`` environment
variable applies (``nan`` or ``off`` instead of raising). A program that holds such a check cannot be
serialised by ``jax.export`` (host callbacks are not serialisable); :func:`igax.bases.interpolate`, which is
exported, offers ``check=False``.

This is the one place to change should the solvers' mechanism change: :func:`runtime_check` has the
signature of ``eqx.branched_error_if`` reduced to one guarded array.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

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
    return eqx.branched_error_if(x, jnp.any(bad), jnp.argmax(bad), [m for _, m in checks])
