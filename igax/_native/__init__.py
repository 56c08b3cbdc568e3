"""Native CPU kernels, compiled from C++ on first use and cached; igax falls back to pure JAX without them.

Some hot layers (today: :func:`igax.layers.interpolate` for degrees 1, 2 and 3, and the products of
:class:`igax.solvers.SparseMatrix`) have a native CPU kernel that does in one XLA custom call what the
pure-JAX version does in several XLA operations (~30 for interpolate; a gather and a segment sum for a
product). The kernels are C++ against XLA's FFI headers, which ship with jaxlib. They are compiled on
first use with the system C++ compiler and cached, so installing igax needs nothing but pip:

* compiler: ``$CXX`` or ``g++`` (C++17);
* cache: ``$IGAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/igax``, else ``~/.cache/igax`` (where that is not
  writable, a private ``igax-<uid>`` directory, mode 0700, in the temporary directory); the file name
  carries a hash of the source, the jaxlib version and the compiler, so a change of any of them rebuilds;
* integrity: beside each library ``igax_native_<key>.so`` a manifest ``igax_native_<key>.json`` records
  the sha256 of its bytes and what it was built from (source hash, compiler, flags, jaxlib version). A
  cached library is handed to the dynamic loader only after its bytes and manifest check out; a truncated,
  corrupted or foreign file (which could crash the process inside ``dlopen`` or at its first call) or a
  missing manifest means a rebuild. Should a freshly built library still not load, one warning names the
  file and how to clear the cache, and the pure-JAX path is used;
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
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

__all__ = ["available", "load", "reason", "cache_dir"]

_SOURCES = ("interp_kernels.cc", "spmv_kernels.cc", "host_call.cc")
_HANDLERS = {
    "igax_interp_forward_f64": "IgaxInterpForwardF64",
    "igax_interp_forward_f32": "IgaxInterpForwardF32",
    "igax_interp_transpose_f64": "IgaxInterpTransposeF64",
    "igax_interp_transpose_f32": "IgaxInterpTransposeF32",
    "igax_spmv_forward_f64": "IgaxSpmvForwardF64",
    "igax_spmv_forward_f32": "IgaxSpmvForwardF32",
    "igax_spmv_transpose_f64": "IgaxSpmvTransposeF64",
    "igax_spmv_transpose_f32": "IgaxSpmvTransposeF32",
    "igax_spmv_sample_f64": "IgaxSpmvSampleF64",
    "igax_spmv_sample_f32": "IgaxSpmvSampleF32",
    "igax_spmv_sample_transpose_f64": "IgaxSpmvSampleTransposeF64",
    "igax_spmv_sample_transpose_f32": "IgaxSpmvSampleTransposeF32",
}
# The products with a held pattern (named by a key, see igax/solvers/_spmv.py): same names with "_held".
_HANDLERS.update(
    {name.replace("igax_spmv_", "igax_spmv_held_"): sym.replace("IgaxSpmv", "IgaxSpmvHeld")
     for name, sym in list(_HANDLERS.items()) if name.startswith("igax_spmv_")}
)  # fmt: skip
_HANDLERS["igax_fetch_held"] = "IgaxFetchHeld"  # a held array copied into the program (igax/_held.py)
_HANDLERS["igax_host_call"] = "IgaxHostCall"  # Python on the program's buffers (solvers/_host_call.py)
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


def _recipe() -> dict:
    """What a library is built from: compiler, flags, source hash, jaxlib version; raises if no compiler."""
    import jax
    import jaxlib

    cxx = _compiler()
    if cxx is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'g++')!r} not found on PATH)")
    here = Path(__file__).parent
    source = b"".join((here / name).read_bytes() for name in _SOURCES)
    flags = ["-std=c++17", "-O3", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}"]
    key = hashlib.sha256(
        source + jaxlib.__version__.encode() + cxx.encode() + " ".join(flags[:-1]).encode()
    ).hexdigest()[:16]
    return {
        "format": 1,
        "key": key,
        "source_sha256": hashlib.sha256(source).hexdigest(),
        "compiler": cxx,
        "flags": flags,
        "jaxlib": jaxlib.__version__,
    }


def _manifest_path(library: Path) -> Path:
    """The checksum file beside a library: ``igax_native_<key>.json``."""
    return library.with_suffix(".json")


def _verified(library: Path, recipe: dict) -> bool:
    """Whether ``library`` holds exactly the bytes recorded in its manifest, built from ``recipe``.

    Checked before the file is ever handed to the dynamic loader: a truncated or bit-flipped library can
    crash the process inside ``dlopen`` or at its first call (SIGBUS, SIGSEGV, SIGILL), and a foreign one
    loads but lacks the kernels. Hashing ~150 kB costs well under a millisecond, once per process.
    """
    try:
        manifest = json.loads(_manifest_path(library).read_text())
        data = library.read_bytes()
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in recipe.items()):
        return False
    return manifest.get("sha256") == hashlib.sha256(data).hexdigest()


def _compile(recipe: dict, out: str) -> None:
    """Run the compiler on the sources into ``out``; raises RuntimeError with its message on failure."""
    here = Path(__file__).parent
    cmd = [recipe["compiler"], *recipe["flags"], *(str(here / name) for name in _SOURCES), "-o", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"compilation failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")


def _build(rebuild: bool = False) -> Path:
    """Path of the compiled kernels (see :func:`_ensure`)."""
    return _ensure(rebuild)[0]


def _ensure(rebuild: bool = False) -> tuple[Path, bool]:
    """The compiled kernels: from the cache if verified, else freshly compiled; RuntimeError on failure.

    Returns ``(path, fresh)``: ``fresh`` is True when this call compiled the library. A cached library is
    used only when its manifest (``.json`` beside it) matches the current recipe and the sha256 of its bytes;
    anything else (missing or stale manifest, truncated, corrupted or foreign file) is rebuilt.
    ``rebuild``: compile even if the cache holds a verified library (it failed to load).
    """
    recipe = _recipe()
    target = cache_dir() / f"igax_native_{recipe['key']}.so"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=target.parent)
        probe.close()
    except OSError:  # a read-only cache directory: build in a private temporary directory instead
        target = _private_temp_dir() / target.name
    if not rebuild and _verified(target, recipe):
        return target, False
    if target.exists() and not rebuild:
        logger.info("igax: the cached native library %s does not match its checksum; rebuilding it", target)
    # Build into temporary files beside the target and rename them: concurrent processes (pytest -n 2) may
    # build at once, and a half-written library must never be loaded. The library is renamed first, then its
    # manifest: a reader in between sees a mismatch and rebuilds, it never trusts unverified bytes.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    fd, tmp_manifest = tempfile.mkstemp(suffix=".json", dir=target.parent)
    os.close(fd)
    try:
        logger.info("igax: compiling the native CPU kernels into %s (once, a few seconds)", target)
        _compile(recipe, tmp)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        Path(tmp_manifest).write_text(json.dumps({**recipe, "sha256": digest}, indent=1))
        os.replace(tmp, target)
        os.replace(tmp_manifest, _manifest_path(target))
    finally:
        for path in (tmp, tmp_manifest):
            if os.path.exists(path):
                os.unlink(path)
    return target, True


class _LoadError(RuntimeError):
    """A verified (freshly built) library that the dynamic loader refuses or that lacks the kernels."""

    def __init__(self, path: Path, exc: Exception):
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.path = path


def _dlopen(path: Path):
    """Load a library and look up every kernel (AttributeError when one is missing)."""
    lib = ctypes.CDLL(str(path))
    for symbol in _HANDLERS.values():
        getattr(lib, symbol)
    return lib


def _open_library():
    """The compiled library: verified before loading, rebuilt once if a cached one still fails to load."""
    path, fresh = _ensure()
    try:
        return _dlopen(path)
    except (OSError, AttributeError) as exc:
        if fresh:
            raise _LoadError(path, exc) from exc
        logger.info("igax: the cached native library %s does not load (%s); rebuilding it", path, exc)
    path, _ = _ensure(rebuild=True)
    try:
        return _dlopen(path)
    except (OSError, AttributeError) as exc:
        raise _LoadError(path, exc) from exc


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
        except _LoadError as exc:  # freshly built and verified, yet it does not load: say how to start over
            _state.update(ok=False, reason=f"the library {exc.path} does not load ({exc})")
            warnings.warn(
                f"igax: the native CPU kernels were rebuilt in {exc.path} but do not load ({exc}), so the "
                "pure-JAX implementations are used (same results, slower for small problems). To retry, "
                f"clear the cache: delete {exc.path.parent / 'igax_native_*'} (or set IGAX_CACHE_DIR to an "
                "empty directory). Set IGAX_NATIVE=0 to silence this.",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        except Exception as exc:  # any other failure means: use pure JAX, and say so once
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


def library():
    """The loaded library (ctypes), or None where the kernels are unavailable."""
    return _state.get("library") if load() else None


def available() -> bool:
    """Whether the native kernels are usable (builds them on the first call)."""
    return load()


def reason() -> str:
    """Why the kernels are unavailable ('' when they are available)."""
    load()
    return _state.get("reason", "")
