"""Precision policy: igax never flips ``jax_enable_x64``; it warns once when analysis runs in float32.

The warning has one cause (float64 is off), so it is issued once per process, by whichever analysis step
meets float32 first (assembly; the solve after it would only repeat it). It points at the user's line, not at
igax or at the JAX/equinox frames that trace a jitted function: the frames of those libraries are skipped when
choosing the warning's ``stacklevel``.
"""

import logging
import os
import sys
import warnings

import jax

logger = logging.getLogger(__name__)
_warned: set[str] = set()  # the causes already reported ("float32")

# Libraries whose frames stand between the user's call and the check (tracing, jit wrappers, optimisers).
_LIBRARIES = ("igax", "jax", "jaxlib", "equinox", "lineax", "optimistix", "jaxopt", "optax")


class Float32Warning(UserWarning):
    """Analysis is running in float32; finite-element solves and gradient checks lose about 8 digits."""


def x64_enabled() -> bool:
    """Whether ``jax_enable_x64`` is on."""
    return bool(jax.config.jax_enable_x64)


def _library_folders() -> tuple[str, ...]:
    """Folders of the imported libraries of ``_LIBRARIES`` (one not imported has no frame to skip)."""
    folders = []
    for name in _LIBRARIES:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            folders.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return tuple(folders)


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller of this function point at user code.

    Counts the frames from the caller outwards up to the first one outside igax and the libraries that trace
    or wrap it (jax, equinox, ...); the outermost frame if all are inside.

    Returns:
        A ``stacklevel`` for :func:`warnings.warn` called in the function that called this one.
    """
    skip = _library_folders()
    frame = sys._getframe(1)  # the function that will call warnings.warn: stacklevel 1
    level = 1
    while frame.f_back is not None and _is_library(frame.f_code.co_filename, skip):
        frame = frame.f_back
        level += 1
    return level


def _is_library(filename: str, folders: tuple[str, ...]) -> bool:
    path = os.path.abspath(filename)
    # The demo scripts of an installed igax (igax/_examples) are user code, though they live in the package.
    return path.startswith(folders) and f"{os.sep}igax{os.sep}_examples{os.sep}" not in path


def check_float64(where: str) -> None:
    """Warn once per process (a :class:`Float32Warning` at the user's line) if float64 is disabled.

    Arguments:
        where: short name of the analysis step, e.g. ``"assemble"``, named in the message: the first step
            that met float32. Later steps stay silent, since the cause is the same.

    Example:
        >>> from igax import check_float64
        >>> check_float64("solve")   # silent when x64 is on
    """
    if x64_enabled() or "float32" in _warned:
        return
    _warned.add("float32")
    warnings.warn(
        f"igax.{where} is running in float32 (jax_enable_x64 is off). Finite-element analysis loses about 8 "
        "digits in float32; enable float64 at the top of your script with "
        "`jax.config.update('jax_enable_x64', True)`, or ignore this warning if float32 is what you want "
        "(e.g. GPU training). igax warns once per process.",
        Float32Warning,
        stacklevel=caller_stacklevel(),
    )
