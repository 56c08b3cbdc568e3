"""Precision policy: igax never flips ``jax_enable_x64``; it warns once when analysis runs in float32."""

import logging
import warnings

import jax

logger = logging.getLogger(__name__)
_warned: set[str] = set()


class Float32Warning(UserWarning):
    """Analysis is running in float32; finite-element solves and gradient checks lose about 8 digits."""


def x64_enabled() -> bool:
    """Whether ``jax_enable_x64`` is on."""
    return bool(jax.config.jax_enable_x64)


def check_float64(where: str) -> None:
    """Warn once per ``where`` if float64 is disabled.

    Arguments:
        where: short name of the analysis step, e.g. ``"assemble"``, used in the message and to warn
            only once.

    Example:
        >>> check_float64("solve")   # silent when x64 is on
    """
    if x64_enabled() or where in _warned:
        return
    _warned.add(where)
    warnings.warn(
        f"igax.{where} is running in float32 (jax_enable_x64 is off). Finite-element analysis loses about 8 "
        "digits in float32; enable float64 at the top of your script with "
        "`jax.config.update('jax_enable_x64', True)`, or ignore this warning if float32 is what you want "
        "(e.g. GPU training).",
        Float32Warning,
        stacklevel=3,
    )
