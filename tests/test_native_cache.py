"""Faults in the cache of the native kernels (igax/_native): each is detected before the loader sees the file.

A truncated library crashed every later process inside ``dlopen`` (SIGBUS), a bit-flipped one at its first
call (SIGSEGV), and a foreign but valid shared library gave a pure-JAX fallback that was never rebuilt. Each
case runs in a fresh process (the loader's state is per process) on a temporary cache directory
(``IGAX_CACHE_DIR``) seeded with a good library and its manifest, then damaged.

Compiling the kernels takes several seconds on a loaded CI machine, so the good library is built once (into
the normal cache, where the rest of the suite builds it anyway), and all but one fault case replace the
compiler run by a copy of those bytes (``_native._compile`` patched in the child process): the detection,
the rebuild, the manifest and the load are igax's own code either way. The truncated case runs the real
compiler, end to end.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from igax import _native

pytestmark = pytest.mark.skipif(
    _native._compiler() is None or os.environ.get("IGAX_NATIVE", "1") in ("0", "false", "no", "off"),
    reason="needs a C++ compiler and the native kernels turned on",
)

# The child process: optionally replace the compiler run, interpolate with the kernels and with pure JAX,
# report what happened as one JSON line.
CHILD = """
import json, shutil, sys, warnings
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
from igax import _native
from igax.layers import interpolate

mode, golden = sys.argv[1], sys.argv[2]
calls = []
real_compile = _native._compile

def compile_hook(recipe, out):
    calls.append(out)
    if mode == "real":
        real_compile(recipe, out)
    elif mode == "copy":
        shutil.copyfile(golden, out)
    else:  # "garbage": a compiler that exits 0 but writes no loadable library
        open(out, "wb").write(b"\\x7fELF garbage")

_native._compile = compile_hook
x = jnp.linspace(0.0, 2.0, 11)
y = jnp.sin(3 * x)
xq = jnp.linspace(-0.1, 2.1, 37)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = interpolate(x, y, xq)
    out = interpolate(x, y, xq)  # a second call: still one warning at most
ref = interpolate(x, y, xq, native=False)
path = _native._build()
print(json.dumps({
    "available": _native.available(),  # True: interpolate above ran the kernel (degree 3, 11 sites)
    "max_error": float(jnp.max(jnp.abs(out - ref))),
    "compiler_runs": len(calls),
    "verified": _native._verified(path, _native._recipe()),
    "warnings": [str(w.message) for w in caught if "igax" in str(w.message)],
}))
"""


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """A good library and its manifest, copied out of the normal cache (built there once if needed)."""
    lib = _native._build()
    out = tmp_path_factory.mktemp("golden")
    shutil.copy2(lib, out / lib.name)
    shutil.copy2(_native._manifest_path(lib), out / _native._manifest_path(lib).name)
    return out / lib.name


def _run_child(cache: Path, mode: str, golden: Path) -> dict:
    env = dict(os.environ, IGAX_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu")
    env.pop("IGAX_NATIVE", None)
    res = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(golden)], capture_output=True, text=True, env=env, timeout=600
    )
    # A crash (SIGBUS, SIGSEGV from a damaged library) shows as a negative return code.
    assert res.returncode == 0, f"child process died ({res.returncode}):\n{res.stderr[-3000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def _foreign_library() -> bytes:
    """Another valid shared library: a compiled extension module of the standard library or NumPy."""
    import _ctypes

    candidates = [getattr(_ctypes, "__file__", None)]
    try:
        from numpy._core import _multiarray_umath
    except ImportError:  # NumPy < 2
        from numpy.core import _multiarray_umath
    candidates.append(_multiarray_umath.__file__)
    for c in candidates:
        if c and Path(c).suffix == ".so":
            return Path(c).read_bytes()
    pytest.skip("no foreign shared library found to plant in the cache")


def _truncate(lib: Path, manifest: Path) -> None:
    data = lib.read_bytes()
    lib.write_bytes(data[: len(data) // 2])


def _flip_bytes(lib: Path, manifest: Path) -> None:
    data = bytearray(lib.read_bytes())
    for i in range(len(data) // 7, len(data), len(data) // 50):  # spread over code and data sections
        data[i] ^= 0xFF
    lib.write_bytes(bytes(data))


def _replace_by_foreign(lib: Path, manifest: Path) -> None:
    lib.write_bytes(_foreign_library())


def _not_a_library(lib: Path, manifest: Path) -> None:
    lib.write_bytes(b"not a library")  # a truncated or foreign file, the manifest of the good one beside it


def _drop_manifest(lib: Path, manifest: Path) -> None:
    manifest.unlink()  # a cache written before manifests existed


def _stale_manifest(lib: Path, manifest: Path) -> None:
    record = json.loads(manifest.read_text())
    record["jaxlib"] = "0.0.0"  # built for another jaxlib: the bytes match, the recipe does not
    manifest.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("damage", "mode"),
    [
        (_truncate, "real"),
        (_flip_bytes, "copy"),
        (_replace_by_foreign, "copy"),
        (_not_a_library, "copy"),
        (_drop_manifest, "copy"),
        (_stale_manifest, "copy"),
    ],
    ids=["truncated", "flipped-bytes", "foreign-library", "not-a-library", "no-manifest", "stale-manifest"],
)
def test_damaged_cache_is_rebuilt_in_the_next_process(tmp_path, golden, damage, mode):
    cache = tmp_path / "cache"
    cache.mkdir()
    lib = cache / golden.name
    shutil.copy2(golden, lib)
    shutil.copy2(_native._manifest_path(golden), _native._manifest_path(lib))
    damage(lib, _native._manifest_path(lib))
    report = _run_child(cache, mode, golden)
    assert report["compiler_runs"] == 1, report
    assert report["available"] and report["max_error"] < 1e-12, report
    assert report["verified"] and report["warnings"] == [], report
    if mode == "real":  # the repaired cache is used as is by the process after (once is enough: slow)
        again = _run_child(cache, "copy", golden)
        assert again["compiler_runs"] == 0 and again["available"] and again["max_error"] < 1e-12, again


def test_rebuilt_library_that_does_not_load_falls_back_with_one_warning(tmp_path, golden):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / golden.name).write_bytes(b"truncated")
    report = _run_child(cache, "garbage", golden)
    assert report["compiler_runs"] == 1, report  # rebuilt once, not in a loop
    assert not report["available"], report
    assert report["max_error"] == 0.0, report  # the pure-JAX path
    assert len(report["warnings"]) == 1, report
    message = report["warnings"][0]
    assert "do not load" in message and f"delete {cache / 'igax_native_*'}" in message, message
