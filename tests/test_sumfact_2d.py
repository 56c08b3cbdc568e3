"""The 2D paths of sum-factorised assembly: the fused band schedule (igax.fem.forms._sumfact_band2d) and
the run-time choice between the polynomial and the rational program for traced weights
(igax.fem.forms._sumfact_weights2d).

The fused schedule is checked against the general one chunk by chunk (forward and transpose, 1e-13, every
2D structure: polynomial, rational, vector, mass; chunks inside and past the patch, mixed degrees); the
traced-weights program against the element-wise matrix (1e-12) on a polynomial and a rational patch, and its
gradients w.r.t. coefficients, control points and weights against central finite differences with Taylor
remainders of order 2 (the weights' derivative must leave the polynomial program).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sumfact_vjp import _close, _spec  # the same checks and band structures

from igax import fem
from igax.fem import library
from igax.fem.forms import sumfact  # noqa: F401 (the module, patched below)

_SF = sys.modules["igax.fem.forms.sumfact"]


def _specs(V, Ru, Rv, nblocks, blk):
    """``(fused, general)`` band structures of ``V`` for reference jets ``Ru x Rv``."""
    general = _spec(V, Ru, Rv, nblocks, blk)
    general.fused2d = None  # the general schedule of the same structure
    return _spec(V, Ru, Rv, nblocks, blk), general


def _rect(deg, n, shape=()):
    return fem.SplineSpace(fem.geometry.rectangle().refine(degree=deg, elements=n), shape=shape)


def _annulus(deg, n, shape=()):
    return fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=deg, elements=n), shape=shape)


# (space, Ru, Rv, component blocks, chunk size): polynomial gradient states (4), a mass matrix (1), the
# rational path's 9, a vector form's 4 blocks; chunk sizes that do not divide the elements.
CASES = {
    "polynomial-laplace": (lambda: _rect(3, (7, 5)), [1, 2], [1, 2], 1, 3),
    "mixed-degrees": (lambda: _rect((2, 3), (5, 4)), [1, 2], [1, 2], 1, 2),
    "mass": (lambda: _rect(2, (4, 6)), [0], [0], 1, 3),
    "rational": (lambda: _annulus(2, (5, 3)), [0, 1, 2], [0, 1, 2], 1, 2),
    "vector": (lambda: _rect(3, (4, 3), (2,)), [1, 2], [1, 2], 4, 3),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_fused_schedule_equals_the_general_one(case):
    """Forward and transpose of one chunk, at the first chunk and one past the patch's last element."""
    from igax.fem.forms._sumfact_band import band, band_transpose

    make, Ru, Rv, nblocks, blk = CASES[case]
    fused, general = _specs(make(), Ru, Rv, nblocks, blk)
    assert fused.fused2d is not None
    assert fused.fused2d.forward == (len(Ru) * len(Rv) <= 4)
    rng = np.random.default_rng(3)
    D = jnp.asarray(rng.standard_normal(fused.in_shape()))
    R = jnp.asarray(rng.standard_normal(fused.out_shape()))
    run = jax.jit(lambda D, R, s, spec: (band(D, s, spec), band_transpose(R, s, spec)), static_argnums=3)
    for start in (0, blk * ((fused.dirs[0].nv - 1) // blk)):
        A, Rt = run(D, R, jnp.int32(start), fused)
        A0, Rt0 = run(D, R, jnp.int32(start), general)
        _close(A, A0, 1e-13)
        _close(Rt, Rt0, 1e-13)


def _loss(V, y):
    def loss(c, cp, w):
        U = V.with_geometry(cp, w)
        return jnp.sum(y * fem.assemble(library.diffusion, U, kappa=fem.Field(U, c)).values ** 2)

    return loss


@pytest.mark.parametrize(
    "make, grads",
    [(lambda: _rect(3, (4, 3)), True), (lambda: _annulus(2, (3, 4)), False)],
    ids=["poly", "rat"],
)
def test_traced_weights_choose_the_program_at_run_time_with_exact_gradients(make, grads, monkeypatch):
    """A space passed to jit (traced weights): the matrix equals the element-wise one on a polynomial and a
    rational patch; on the polynomial one (the run-time polynomial program) gradients w.r.t. the
    coefficients, the control points and the weights match central differences with Taylor rate 2."""
    monkeypatch.setattr(_SF, "_MIN_ENTRIES", 0)
    monkeypatch.setattr(_SF, "_AFFINE", False)  # the general path (boxes are affine)
    V = make()
    rng = np.random.default_rng(4)
    c = jnp.asarray(rng.random(V.ndofs)) + 1.0
    calls = []
    real = _SF.weights2d.values_traced_weights
    monkeypatch.setattr(_SF.weights2d, "values_traced_weights", lambda *a: calls.append(1) or real(*a))
    got = jax.jit(lambda V, c: fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)).values)(V, c)
    assert calls, "the traced-weights program was not taken"
    with monkeypatch.context() as m:
        m.setattr(_SF, "_MIN_ENTRIES", 10**18)
        ref = fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)).values
    _close(got, ref)
    if not grads:
        return
    loss = _loss(V, jnp.asarray(rng.random(ref.shape)))
    L, g = jax.jit(loss), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    args = (c, V.control_points, V.weights)
    grads = g(*args)
    for k in range(3):
        dv = jnp.asarray(rng.standard_normal(args[k].shape))

        def at(h, k=k, dv=dv):
            a = list(args)
            a[k] = args[k] + h * dv
            return float(L(*a))

        an = float(jnp.vdot(grads[k], dv))
        h = 1e-5
        fd = (at(h) - at(-h)) / (2 * h)
        assert abs(fd - an) <= 1e-6 * abs(an), (k, fd, an)
        l0 = float(L(*args))
        r1, r2 = abs(at(1e-2) - l0 - 1e-2 * an), abs(at(5e-3) - l0 - 5e-3 * an)
        assert np.log2(r1 / r2) > 1.8, (k, r1, r2)
