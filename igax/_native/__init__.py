"""Native CPU kernels, compiled from C++ on first use and cached; igax falls back to pure JAX without them.

Some hot layers (today: :func:`igax.bases.interpolate` for degrees 1 and 3) have a native CPU kernel that
does in one XLA custom call what the pure-JAX version does in ~30 small XLA operations. The kernels are C++
against XLA's FFI headers, which ship with jaxlib. They are compiled on first use with the system C++
compiler and cached, so installing igax needs nothing but pip:

* compiler: ``$CXX`` or ``g++`` (C++17);
* cache: ``$IGAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/igax``, else ``~/.cache/igax`` (where that is not
  writable, a private ``igax-<uid>`` directory, mode 0700, in the temporary directory); the file name
  carries a hash of the source, the jaxlib version and the compiler, so a change of any of them rebuilds,
  and a cached file that does not load is rebuilt;
* ``IGAX_NATIVE=0`` turns the kernels off (pure JAX everywhere, e.g. to compare the two).

Nothing is compiled, loaded or registered on ``import igax``; the first call of a layer that can use a
kernel does it (about 2 s once, then a file load). Where no compiler is found or the build fails, a single
warning says why and the pure-JAX path is used: results are the same to rounding, only slower. On other
platforms than the CPU (GPU) the pure-JAX path is always used.

Example:
    >>> from igax import _native
    >>> _native.available()        # True where the kernels could be built
    True
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

__all__ = ["available", "load", "reason", "cache_dir"]

_SOURCES = ("interp_kernels.cc",)
_HANDLERS = {
    "igax_interp_forward_f64": "IgaxInterpForwardF64",
    "igax_interp_forward_f32": "IgaxInterpForwardF32",
    "igax_interp_transpose_f64": "IgaxInterpTransposeF64",
    "igax_interp_transpose_f32": "IgaxInterpTransposeF32",
}
_lock = threading.Lock()
_state: dict = {}
logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Directory for the compiled kernels (see the module docstring for the order of the settings)."""
    if os.environ.get("IGAX_CACHE_DIR"):
        return Path(os.environ["IGAX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "igax"


def _compiler() -> str | None:
    cxx = os.environ.get("CXX", "g++")
    return shutil.which(cxx)


def _private_temp_dir() -> Path:
    """``<tmp>/igax-<uid>``, created 0700; a fresh per-process directory when that one is not ours alone.

    A library loaded from a directory that other users can write would run their code: never trust one.
    """
    uid = getattr(os, "getuid", None)
    if uid is not None:
        path = Path(tempfile.gettempdir()) / f"igax-{uid()}"
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            st = path.lstat()
            if st.st_uid == uid() and not (st.st_mode & 0o077) and path.is_dir() and not path.is_symlink():
                return path
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="igax-"))


def _build(rebuild: bool = False) -> Path:
    """Compile the kernels (or find them in the cache); raises RuntimeError with the reason on failure.

    ``rebuild``: compile even if the cache holds the library (it failed to load).
    """
    import jax
    import jaxlib

    cxx = _compiler()
    if cxx is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'g++')!r} not found on PATH)")
    here = Path(__file__).parent
    source = b"".join((here / name).read_bytes() for name in _SOURCES)
    include = jax.ffi.include_dir()
    flags = ["-std=c++17", "-O3", "-shared", "-fPIC", "-w", f"-I{include}"]
    key = hashlib.sha256(
        source + jaxlib.__version__.encode() + cxx.encode() + " ".join(flags[:-1]).encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"igax_native_{key}.so"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=target.parent)
        probe.close()
    except OSError:  # a read-only cache directory: build in a private temporary directory instead
        target = _private_temp_dir() / target.name
    if target.exists() and not rebuild:
        return target
    # Build into a temporary file beside the target and rename it: concurrent processes (pytest -n 2) may
    # build at once, and a half-written library must never be loaded.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [cxx, *flags, *(str(here / name) for name in _SOURCES), "-o", tmp]
        logger.info("igax: compiling the native CPU kernels into %s (once, a few seconds)", target)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"compilation failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _open_library():
    """The compiled library, rebuilt once if the cached file does not load (truncated, foreign)."""
    try:
        return ctypes.CDLL(str(_build()))
    except OSError:
        return ctypes.CDLL(str(_build(rebuild=True)))


def load() -> bool:
    """Build (once), load and register the kernels with XLA; True on success. Thread-safe, idempotent."""
    with _lock:
        if "ok" in _state:
            return _state["ok"]
        if os.environ.get("IGAX_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            _state.update(ok=False, reason="turned off by IGAX_NATIVE")
            return False
        try:
            import jax

            lib = _open_library()
            for name, symbol in _HANDLERS.items():
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        except Exception as exc:  # any failure means: use pure JAX, and say so once
            _state.update(ok=False, reason=f"{type(exc).__name__}: {exc}")
            warnings.warn(
                "igax: the native CPU kernels could not be built, so the pure-JAX implementations are used "
                f"(same results, slower for small problems). Reason: {_state['reason']}. Set IGAX_NATIVE=0 "
                "to silence this.",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        _state.update(ok=True, reason="", library=lib)
        return True


def available() -> bool:
    """Whether the native kernels are usable (builds them on the first call)."""
    return load()


def reason() -> str:
    """Why the kernels are unavailable ('' when they are available)."""
    load()
    return _state.get("reason", "")
