"""Compilation: JAX's persistent cache for igax's programs, and cheap compiles for small one-off programs.

Where start-up time goes (2 cores, JAX 0.10, CPU; ``benchmarks/bench_startup.py`` measures it): a script
pays the imports (~1 s for JAX, ~0.4 s for igax), then one XLA compilation per compiled program and per
array size, which dominates a first run at small sizes (0.05-0.3 s each; a program holding ``jax.grad`` of
assembly and a solve takes 0.5-1 s). igax keeps the number of programs per new mesh size small (one per form
and boundary, one for the solve with its boundary conditions; the basis tables of a concrete geometry are
computed in NumPy) and gives its small one-off programs cheap compiler options (:func:`fast_compile_options`).

A second run of the same script can skip most compilations through JAX's persistent compilation cache, which
igax never turns on by itself (it is process-wide configuration): call :func:`enable_compilation_cache` at the
top of a script, or set ``JAX_COMPILATION_CACHE_DIR``. One limit: JAX does not store programs that call back
into Python (``jax.pure_callback``), and every program holding a direct sparse solve does (PARDISO, SuperLU,
CHOLMOD run on the host), as do programs with a run-time error check under ``jit``; those are compiled again
in every process. Assembly, basis tables, point evaluation, norms and iterative solves are cached.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import jax

__all__ = [
    "enable_compilation_cache",
    "compilation_cache_dir",
    "fast_compile_options",
    "lazy_jit",
    "at_top_level",
]

logger = logging.getLogger(__name__)


def compilation_cache_dir() -> Path:
    """The default directory of the persistent compilation cache.

    ``$IGAX_CACHE_DIR/jax`` if ``IGAX_CACHE_DIR`` is set, else ``$XDG_CACHE_HOME/igax/jax``, else
    ``~/.cache/igax/jax`` (the native kernels' cache lives beside it, see :mod:`igax._native`).
    """
    if os.environ.get("IGAX_CACHE_DIR"):
        return Path(os.environ["IGAX_CACHE_DIR"]) / "jax"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "igax" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None, *, min_compile_time: float = 0.0) -> Path:
    """Turn on JAX's persistent compilation cache, so a second run of a script skips most compilations.

    This sets JAX's process-wide options ``jax_compilation_cache_dir`` and
    ``jax_persistent_cache_min_compile_time_secs`` (and ``jax_persistent_cache_min_entry_size_bytes`` to
    cache entries of any size). igax never calls it on import: call it once at the top of a script, before
    the first compilation (a cache turned on later only serves programs compiled after it). Programs that
    call back into Python (direct sparse solves, run-time checks under ``jit``) are not stored by JAX and are
    compiled again in every process.

    The cache is trusted code: a program read from it runs as is. Keep it in a directory only you can write
    (the default is in your home directory).

    Arguments:
        path: the cache directory; default :func:`compilation_cache_dir` (``~/.cache/igax/jax``, or under
            ``IGAX_CACHE_DIR``). Created if missing.
        min_compile_time: store only programs that took at least this many seconds to compile. JAX's own
            default is 1 s, which would leave out nearly all of igax's programs at small sizes (0.05-0.5 s
            each, and many of them); 0 stores all.

    Returns:
        The cache directory.

    Example:
        >>> import igax
        >>> igax.enable_compilation_cache()   # sets JAX's global configuration  # doctest: +SKIP
        PosixPath('/home/me/.cache/igax/jax')
    """
    directory = Path(path) if path is not None else compilation_cache_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    logger.info("JAX persistent compilation cache in %s", directory)
    return directory


@functools.cache
def fast_compile_options() -> dict | None:
    """XLA options for igax's small one-off programs on the CPU: LLVM optimisation level 0.

    Such programs (basis tables computed once per geometry, boundary projections, small eager assemblies and
    solves) run for micro- to milliseconds, but compile for 0.1-0.5 s each at every new mesh size. Level 0
    compiles them 1.3-1.7x faster (a 2D table program: 0.29 -> 0.17 s CPU) and runs them up to 2x slower,
    which is why igax uses it only where the program is small or runs once. None off the CPU.
    """
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def at_top_level() -> bool:
    """Whether no JAX transformation (jit, grad, vmap) is tracing now.

    JAX accepts compiler options only on a top-level ``jit``; a nested one with options raises.
    """
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # pragma: no cover - a JAX without it: never pass options
        return False
    return trace_state_clean()


def lazy_jit(make, fun, **kwargs):
    """``make(fun, **kwargs)`` with :func:`fast_compile_options` when called at the top level.

    ``make`` is ``jax.jit`` or ``equinox.filter_jit``. Inside a trace (the caller's ``jit``, ``grad``,
    ``vmap``) the plain ``make(fun, **kwargs)`` is used: the program is then part of the caller's, compiled
    with its options. Built at the first call, because the options depend on the backend, which must not be
    initialised on import.
    """
    jitted: dict = {}

    @functools.wraps(fun)
    def call(*args, **kw):
        top = at_top_level()
        if top not in jitted:
            options = fast_compile_options() if top else None
            jitted[top] = make(fun, compiler_options=options, **kwargs) if options else make(fun, **kwargs)
        return jitted[top](*args, **kw)

    return call
