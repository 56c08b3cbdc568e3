"""Each demo runs at its tiny size once per test session: ``igax demo NAME --size tiny`` as the CLI runs it.

``tests/test_cli.py`` checks what the command printed and wrote; each example's own test checks the numbers
its ``main`` returned. Both read the same run (the command calls ``main(out=..., **sizes["tiny"])``, the
call the example tests made themselves), so every demo is compiled and run once instead of twice.

Under ``pytest -n 2`` (``make test``) the two tests of a demo may run in different worker processes: the
first to ask runs the demo under a file lock in the session's temporary folder and leaves the run there
(pickled); the other waits for the lock and reads it. (``--dist loadgroup`` would keep them in one worker,
but pytest-xdist 3.8 cannot rename pytest 9's node ids, so its groups are ignored.) Without workers the run
is cached in the process.
"""

import contextlib
import fcntl
import functools
import io
import pickle
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


def _run(name: str, out: Path) -> DemoRun:
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


@functools.cache
def _in_process(name: str, folder: Path) -> DemoRun:
    return _run(name, folder / name)


def tiny(name: str, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The run of demo ``name`` at its tiny size through the command line, made on the first call.

    ``tmp_path_factory``: the test's fixture; the runs live in the session's temporary folder (the one
    shared by the workers of ``pytest -n``), which pytest removes with old sessions.
    """
    base = tmp_path_factory.getbasetemp()
    if not base.name.startswith("popen-gw"):  # one process: cache in memory
        return _in_process(name, base / "demo-runs")
    shared = base.parent / "demo-runs"
    shared.mkdir(exist_ok=True)
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker may be running this demo: wait for it
        saved = shared / f"{name}.pickle"
        if saved.exists():
            return pickle.loads(saved.read_bytes())
        run = _run(name, shared / name)
        with contextlib.suppress(Exception):  # a result that does not pickle is not shared (still correct)
            saved.write_bytes(pickle.dumps(run))
        return run
