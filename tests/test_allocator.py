"""igax.fem._allocator: glibc malloc thresholds raised once per process, with an opt-out."""

import os
import subprocess
import sys

import pytest

from igax.fem import _allocator

GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None

_PROBE = (
    "import igax.fem, igax.fem._allocator as a; before = list(a._done); "
    "print(before, a.keep_freed_memory(), a._done)"
)


def _run(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("IGAX_MALLOC_TUNING", "GLIBC_TUNABLES")}
    env = {k: v for k, v in env.items() if not k.startswith("MALLOC_")}
    env.update(env_extra)
    p = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_opt_in_and_once():
    """Importing igax.fem sets nothing; a call sets the thresholds; later calls return the same answer."""
    assert _run({}) == "[] True [True]"
    assert _allocator.keep_freed_memory() is _allocator._done[0]
    assert len(_allocator._done) == 1


@pytest.mark.skipif(not GLIBC, reason="glibc only")
@pytest.mark.parametrize(
    "env",
    [
        {"IGAX_MALLOC_TUNING": "0"},
        {"IGAX_MALLOC_TUNING": "off"},
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
    ],
)
def test_left_alone(env):
    """Opted out, or malloc configured by the user: nothing is set."""
    assert _run(env) == "[] False [False]"
