"""Each demo runs at its tiny size once per test process: ``igax demo NAME --size tiny`` as the CLI runs it.

``tests/test_cli.py`` checks what the command printed and wrote; each example's own test checks the numbers
its ``main`` returned. Both read the same run (the command calls ``main(out=..., **sizes["tiny"])``, the
call the example tests made themselves), so every demo is compiled and run once instead of twice. Tests of
one demo carry ``group(name)``: under ``pytest -n 2 --dist loadgroup`` (``make test``) they land in the same
worker process and share its run; in any other set-up they are still correct, only slower.
"""

import atexit
import contextlib
import functools
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from igax import cli


@dataclass(frozen=True)
class DemoRun:
    code: int  # what `igax demo NAME --size tiny --out OUT` returned
    stdout: str  # what it printed
    result: dict  # what the example's main returned (read only: tests share it)
    out: Path  # the folder it wrote its pictures and files into


@functools.cache
def tiny(name: str) -> DemoRun:
    """The run of demo ``name`` at its tiny size through the command line, made on the first call."""
    out = Path(tempfile.mkdtemp(prefix=f"igax-demo-{name}-"))
    atexit.register(shutil.rmtree, out, True)
    results = []
    run_demo = cli.run_demo

    def recording(*args, **kwargs):  # the command prints a summary; the tests need the dict itself
        results.append(run_demo(*args, **kwargs))
        return results[-1]

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(cli, "run_demo", recording)
        code = cli.main(["demo", name, "--size", "tiny", "--out", str(out)])
    assert len(results) == 1, results
    return DemoRun(code, printed.getvalue(), results[0], out)


def group(name: str):
    """The mark that keeps the tests of one demo in one worker process (``--dist loadgroup``)."""
    return pytest.mark.xdist_group(f"demo-{name}")
