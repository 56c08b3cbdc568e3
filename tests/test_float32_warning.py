"""Float32Warning: one warning per cause (float64 off), pointing at the caller's line, eager and under jit.

Before: assembling and solving in float32 gave two warnings (one from assemble, one from solve), and under
``jax.jit`` they pointed at ``equinox/_jit.py``.
"""

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from igax import _config, fem
from igax._config import Float32Warning


@fem.bilinear_form(symmetric=True)
def stiffness(u, v, w):
    return w.kappa * jnp.dot(u.grad, v.grad)


@fem.linear_form
def load(v, w):
    return v.value


@pytest.fixture
def float32(monkeypatch):
    """float64 off in this thread, and the once-per-process record of the warning emptied (then restored)."""
    monkeypatch.setattr(_config, "_warned", set())
    with jax.enable_x64(False), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _line_of(comment: str) -> int:
    """The number of the line of this file that ends with ``comment``."""
    lines = Path(__file__).read_text().splitlines()
    (n,) = [i + 1 for i, line in enumerate(lines) if line.rstrip().endswith(comment)]
    return n


def _float32_warnings(caught):
    return [w for w in caught if issubclass(w.category, Float32Warning)]


def _space():
    return fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(3, 3)))


def test_eager_assemble_and_solve_warn_once_at_the_assemble_line(float32):
    V = _space()
    A = fem.assemble(stiffness, V, kappa=1.0)  # first float32 step (eager)
    b = fem.assemble(load, V)
    u = fem.solve(A, b, bc=fem.DirichletBC(V, V.boundary(), 0.0))
    assert u.coeffs.dtype == jnp.float32  # the analysis did run in float32
    (w,) = _float32_warnings(float32)
    assert (w.filename, w.lineno) == (__file__, _line_of("# first float32 step (eager)"))
    assert "igax.assemble is running in float32" in str(w.message)


def test_under_jit_the_warning_points_into_the_users_traced_function(float32):
    V = _space()
    b = fem.assemble(load, V)
    float32.clear()
    _config._warned.clear()

    @jax.jit
    def solve(kappa):
        A = fem.assemble(stiffness, V, kappa=kappa)  # first float32 step (traced)
        return fem.solve(A, b, bc=fem.DirichletBC(V, V.boundary(), 0.0)).coeffs

    u1, u2 = solve(1.0), solve(2.0)
    assert float(jnp.max(jnp.abs(u1 - 2 * u2))) < 1e-5 * float(jnp.max(jnp.abs(u1)))
    (w,) = _float32_warnings(float32)
    assert (w.filename, w.lineno) == (__file__, _line_of("# first float32 step (traced)"))


def test_silent_in_float64(monkeypatch):
    monkeypatch.setattr(_config, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        V = _space()
        fem.solve(
            fem.assemble(stiffness, V, kappa=1.0), fem.assemble(load, V), bc=fem.DirichletBC(V, None, 0.0)
        )
    assert _float32_warnings(caught) == []
