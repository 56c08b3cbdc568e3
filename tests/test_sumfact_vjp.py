"""The sum-factorised assembly's derivatives equal the element-wise path's (1e-12).

The sum-factorised loop is rematerialised under differentiation (its VJP runs no forward loop), the kernel's
inputs are broadcast over the jet pairs explicitly and the reference-jet products are stacks: all three
change how JAX differentiates the assembly, not what it computes. Checked here against the element-wise
path, whose contraction has its own derivative rules (tests/test_gradient_cost.py checks those against
autodiff); tests/test_sumfact.py checks the sum-factorised gradients against finite differences.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem import library
from igax.fem.forms import sumfact  # noqa: F401 (the module, patched below)

_SF = sys.modules["igax.fem.forms.sumfact"]


def _close(a, b, rtol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    err = np.max(np.abs(a - b)) / np.max(np.abs(b))
    assert err <= rtol, f"relative difference {err:.2e} > {rtol:.0e}"


def _paths(monkeypatch, matrix):
    """``(factorised, elementwise)``: ``matrix(*args)`` on each path, as functions for jax.vjp."""

    def on(min_entries, min_degree):
        def f(*args):
            with monkeypatch.context() as m:
                m.setattr(_SF, "_MIN_ENTRIES", min_entries)
                m.setattr(_SF, "_MIN_DEGREE", min_degree)
                return matrix(*args).values

        return f

    return on(0, 1), on(10**18, 10**9)


CASES = {
    "diffusion-field-p2": (2, (), lambda W, c: fem.assemble(library.diffusion, W, kappa=fem.Field(W, c))),
    "diffusion-field-p3": (3, (), lambda W, c: fem.assemble(library.diffusion, W, kappa=fem.Field(W, c))),
    "mass-field-p2": (
        2,
        (),
        lambda W, c: fem.assemble(
            fem.bilinear_form(lambda u, v, w: w.rho * u.value * v.value), W, rho=fem.Field(W, c)
        ),
    ),
    "diffusion-points-p2": (  # kappa as values at the quadrature points
        2,
        "points",
        lambda W, c: fem.assemble(library.diffusion, W, kappa=c),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_vjp_equals_the_elementwise_one(case, monkeypatch):
    """Cotangents of the coefficients and of the control points, both paths, the same cotangent."""
    deg, shape, assemble = CASES[case]
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=deg, elements=(4, 5)))
    rng = np.random.default_rng(3)
    nc = V.quadrature_points().shape[:2] if shape == "points" else V.ndofs
    c = jnp.asarray(rng.uniform(1.0, 2.0, nc))
    w = jnp.asarray(rng.standard_normal(V.pattern.nnz))

    def matrix(c, P):
        return assemble(V.with_geometry(control_points=P), c)

    fac, ele = _paths(monkeypatch, matrix)
    (vf, pf), (ve, pe) = jax.vjp(fac, c, V.control_points), jax.vjp(ele, c, V.control_points)
    _close(vf, ve)
    for a, b in zip(pf(w), pe(w), strict=True):
        _close(a, b)
    # Under jit, the VJP alone (the forward loop unused): the same cotangent.
    vjp = jax.jit(lambda c, w: jax.vjp(lambda c: fac(c, V.control_points), c)[1](w)[0])
    _close(vjp(c, w), pe(w)[0])


def test_jvp_equals_the_elementwise_one(monkeypatch):
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(4, 5)))
    rng = np.random.default_rng(4)
    c, dc = (jnp.asarray(rng.uniform(1.0, 2.0, V.ndofs)) for _ in range(2))
    fac, ele = _paths(monkeypatch, lambda c: fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)))
    _close(jax.jvp(fac, (c,), (dc,))[1], jax.jvp(ele, (c,), (dc,))[1])
