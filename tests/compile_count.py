"""Counting XLA compilations in a test: ``with compilations() as n: ...; n()``.

JAX's monitoring events count compilations independently of the machine's load (times do not). Shared by the
tests that check a program is compiled once (imported like ``demo_runs``: tests/ is on the path).
"""

from __future__ import annotations

import contextlib

from jax import monitoring

_COUNT = {"on": False, "n": 0}


def _on_duration(name, secs, **_):
    if _COUNT["on"] and name.endswith("backend_compile_duration"):
        _COUNT["n"] += 1


monitoring.register_event_duration_secs_listener(_on_duration)


@contextlib.contextmanager
def compilations():
    """Count the XLA compilations in the block: ``with compilations() as n: ...; n()``."""
    _COUNT.update(on=True, n=0)
    try:
        yield lambda: _COUNT["n"]
    finally:
        _COUNT["on"] = False
