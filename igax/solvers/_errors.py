"""The status of every solve (linear, Krylov, Newton) and the one helper that raises on a failed one.

One enumeration, :class:`Status`, is shared by :func:`~igax.solvers.linear_solve` (direct, Krylov and
multigrid backends alike), the pure-JAX Krylov loops of :mod:`igax.solvers.iterative` and
:func:`~igax.solvers.newton_solve`, so a status code means the same thing wherever it comes from. Each solver
keeps its own wording of what went wrong and what to do (a singular matrix is advice about boundary
conditions, a failed Newton step advice about the tangent), but the codes, and how a failure is turned into an
exception, are defined once here: :func:`raise_on_failure` guards a result's ``value`` with
:func:`igax._errors.error_if`, which raises igax's own exception eagerly or from inside a compiled program.

``error_if`` and ``branched_error_if`` themselves live one layer lower, in :mod:`igax._errors`, because
``igax.bases`` uses them too and must not import the solvers; they are re-exported here for the modules that
import them from this place.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import equinox as eqx

from igax._errors import branched_error_if, error_if

__all__ = ["Status", "branched_error_if", "error_if", "raise_on_failure"]


class Status(enum.IntEnum):
    """The outcome of a solve, as the integer ``status`` of a :class:`~igax.solvers.SolveResult`,
    :class:`~igax.solvers.NewtonResult` or Krylov loop.

    Members (the values are part of the public results and never change):

    * ``SUCCESS = 0``: solved (Newton: converged; alias ``CONVERGED``);
    * ``SINGULAR = 1``: the matrix is singular or could not be factorised (Newton: a linear solve with the
      tangent failed; alias ``LINEAR_FAILED``);
    * ``NOT_CONVERGED = 2``: an iteration (Krylov or Newton) reached ``maxiter``;
    * ``NONFINITE = 3``: NaN or inf in the input (Newton: in the residual);
    * ``BREAKDOWN = 4``: a Krylov method broke down (a zero inner product; for CG a matrix that is not SPD).

    Being an ``IntEnum``, a member compares equal to its code and can be used in ``jnp.where``.

    Example:
        >>> from igax.solvers._errors import Status
        >>> Status(2).name, int(Status.BREAKDOWN), Status.CONVERGED is Status.SUCCESS
        ('NOT_CONVERGED', 4, True)
    """

    SUCCESS = 0
    SINGULAR = 1
    NOT_CONVERGED = 2
    NONFINITE = 3
    BREAKDOWN = 4
    # Newton's names of the same codes.
    CONVERGED = 0
    LINEAR_FAILED = 1


def raise_on_failure(result: eqx.Module, make_error: Callable[..., Exception], *diagnostics):
    """``result`` with its ``value`` guarded: raise ``make_error(status, *diagnostics)`` on a failed solve.

    Arguments:
        result: an ``eqx.Module`` with ``value`` and ``status`` fields (``SolveResult``, ``NewtonResult``).
        make_error: builds the exception on the host from the status and the diagnostics (NumPy values; under
            ``vmap`` their worst values over the failing elements).
        *diagnostics: arrays handed to ``make_error`` after the status (residual, iterations, ...).

    Returns:
        ``result``, whose ``value`` raises (eagerly at once, under ``jit`` when the program runs) where
        ``status != Status.SUCCESS``; values and derivatives are unchanged otherwise.

    Example:
        >>> import equinox as eqx, jax.numpy as jnp
        >>> from igax.solvers._errors import Status, raise_on_failure
        >>> class Result(eqx.Module):
        ...     value: jnp.ndarray
        ...     status: jnp.ndarray
        >>> make = lambda status: RuntimeError(f"failed: {Status(int(status)).name}")
        >>> float(raise_on_failure(Result(jnp.ones(2), jnp.int32(0)), make).value.sum())
        2.0
        >>> raise_on_failure(Result(jnp.ones(2), jnp.int32(2)), make)
        Traceback (most recent call last):
        ...
        RuntimeError: failed: NOT_CONVERGED
    """
    value = error_if(result.value, result.status != Status.SUCCESS, make_error, result.status, *diagnostics)
    return eqx.tree_at(lambda r: r.value, result, value)
