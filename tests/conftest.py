"""Tests run in float64: the library itself never flips this switch (see igax/_config.py)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where JAX sees a GPU; elsewhere they are skipped with the reason."""
    if jax.default_backend() == "gpu":
        return
    skip = pytest.mark.skip(reason=f"needs a GPU; JAX's default backend here is {jax.default_backend()!r}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# A test whose xdist worker process crashed runs once more, on a fresh worker; a second crash fails it.
# Why: XLA's CPU compiler has segfaulted intermittently inside `backend_compile_and_load` in long-lived
# workers (twice in full runs, each time in a different test that passes when run again), which failed a
# whole run. A crash in igax's own code that repeats still fails; each rerun is listed in the summary
# ("rerun") with the worker's crash message.
_CRASH_RERUNS: dict = {}


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    if _CRASH_RERUNS.get(crashitem):
        return  # crashed twice: reported as failed
    _CRASH_RERUNS[crashitem] = 1
    sched.mark_test_pending(crashitem)
    report.outcome = "rerun"
    report.longrepr = f"{report.longrepr}; run again on a fresh worker (a second crash fails it)"


def pytest_report_teststatus(report, config):
    if report.outcome == "rerun":
        return "rerun", "R", "RERUN (worker crashed)"
