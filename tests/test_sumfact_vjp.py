"""The sum-factorised assembly's derivatives equal the element-wise path's (1e-12).

The sum-factorised loop is rematerialised under differentiation (its VJP runs no forward loop), the kernel's
inputs are broadcast over the jet pairs explicitly and the reference-jet products are stacks: all three
change how JAX differentiates the assembly, not what it computes. Checked here against the element-wise
path, whose contraction has its own derivative rules (tests/test_gradient_cost.py checks those against
autodiff); tests/test_sumfact.py checks the sum-factorised gradients against finite differences.

The band contraction of a chunk is a primitive with written-out JVP and transpose
(igax/fem/forms/_sumfact_band.py): its rules are checked against JAX's own derivatives of the same operations,
on 2D and 3D, scalar and vector structures, and a gradient through assemble -> solve against finite
differences and the Taylor rate.
"""

import sys

import equinox as eqx
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
                m.setattr(_SF, "_AFFINE", False)  # the general path (boxes are affine)
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


# -- the band primitive's written-out rules against JAX's automatic derivatives of the plain operations ------


def _box(deg, n):
    return fem.SplineSpace(fem.geometry.box().refine(degree=deg, elements=n))


def _annulus(deg, n, shape=()):
    return fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=deg, elements=n), shape=shape)


def _spec(V, Ru, Rv, nblocks, blk):
    """The band structure of ``V`` for reference jets ``Ru x Rv``, chunks of ``blk`` direction-0 elements."""
    from igax.fem.forms._sumfact_band import BandSpec
    from igax.fem.forms._sumfact_plan import scalar_steps, sumfact_plan

    sf = sumfact_plan(V)
    sched = scalar_steps(Ru, Rv, sf.d)
    pad = sf.chunks(blk).pad
    tables = [[sf.dirs[s["k"]].band_table(fl) for _, fl in s["outs"]] for s in sched]
    tables[-1] = [np.pad(A, [(0, pad)] + [(0, 0)] * (A.ndim - 1)) for A in tables[-1]]
    return BandSpec(sf.dirs, sched, tables, blk, nblocks, len(Ru) * len(Rv), jnp.float64)


# The structures of 2D and 3D, scalar and vector forms: (space, Ru, Rv, component blocks, chunk size). A
# rational patch's gradient form reads the value jet too (0); a polynomial one only the derivatives.
RULE_CASES = {
    "2d-scalar-rational": (lambda: _annulus(2, (5, 3)), [0, 1, 2], [0, 1, 2], 1, 2),
    "2d-vector-rational": (lambda: _annulus(3, (4, 3)), [0, 1, 2], [0, 1, 2], 4, 4),
    "3d-scalar": (lambda: _box(2, (3, 2, 2)), [1, 2, 3], [1, 2, 3], 1, 2),
    "3d-vector": (lambda: _box(2, (2, 2, 3)), [0, 1, 3], [2, 3], 9, 2),
}  # fmt: skip


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_band_rules_equal_automatic_derivatives(case):
    """The band primitive against JAX's own derivatives of the same operations (``_band_impl`` traced as
    plain JAX): forward (1e-14), transpose (VJP) and JVP (1e-12), a chunk inside and one past the patch,
    and the dot-product identity ``<band(D), R> = <D, band_transpose(R)>``."""
    from igax.fem.forms._sumfact_band import _band_impl, band, band_transpose

    make, Ru, Rv, nblocks, blk = RULE_CASES[case]
    spec = _spec(make(), Ru, Rv, nblocks, blk)
    rng = np.random.default_rng(5)
    D, dD = (jnp.asarray(rng.standard_normal(spec.in_shape())) for _ in range(2))
    R = jnp.asarray(rng.standard_normal(spec.out_shape()))

    @jax.jit
    def both(D, dD, R, start):
        plain = lambda D: _band_impl(D, start, spec=spec)  # noqa: E731
        out = [band(D, start, spec), jax.jvp(lambda D: band(D, start, spec), (D,), (dD,))[1]]
        out += [jax.vjp(lambda D: band(D, start, spec), D)[1](R)[0], band_transpose(R, start, spec)]
        ref = [plain(D), jax.jvp(plain, (D,), (dD,))[1], jax.linear_transpose(plain, D)(R)[0]]
        return out, ref

    for start in (0, spec.dirs[0].nv - 1):
        (A, t, ct, ct2), (A0, t0, ct0) = both(D, dD, R, jnp.int32(start))
        _close(A, A0, 1e-14)
        _close(t, t0)
        _close(ct, ct0)
        _close(ct2, ct0)
        lhs, rhs = float(jnp.vdot(A, R)), float(jnp.vdot(D, ct))
        assert abs(lhs - rhs) <= 1e-12 * float(jnp.linalg.norm(A) * jnp.linalg.norm(R)), (lhs, rhs)


def test_band_primitive_under_vmap():
    """vmap of the primitive and its transpose (batched data, and batched chunk starts) equals a loop."""
    from igax.fem.forms._sumfact_band import band, band_transpose

    spec = _spec(_annulus(2, (3, 3)), [0, 1, 2], [0, 1], 1, 2)
    rng = np.random.default_rng(6)
    D = jnp.asarray(rng.standard_normal((2,) + spec.in_shape()))
    R = jnp.asarray(rng.standard_normal((2,) + spec.out_shape()))
    starts = jnp.asarray([0, 2], jnp.int32)
    for fn, x in ((band, D), (band_transpose, R)):
        _close(jax.vmap(lambda a, s, fn=fn: fn(a, s, spec))(x, starts),
               jnp.stack([fn(a, s, spec) for a, s in zip(x, starts, strict=True)]))  # fmt: skip


def _factorised(monkeypatch):
    """Force the sum-factorised path, in a fresh compiled program (the program cache is per function)."""
    monkeypatch.setattr(_SF, "_MIN_ENTRIES", 0)
    monkeypatch.setattr(_SF, "_AFFINE", False)  # the general path (boxes are affine)
    monkeypatch.setattr(_SF, "_MIN_DEGREE", 1)
    monkeypatch.setattr(_SF, "_values_jit", eqx.filter_jit(lambda *a: _SF._values(*a)))


def test_chunks_that_do_not_divide_the_elements(monkeypatch):
    """Chunks of 4 of 11 direction-0 elements (the last chunk partly past the patch): the matrix and
    its coefficient VJP equal the element-wise ones (a chunk once read clamped, shifted tables)."""
    V = _annulus(3, (11, 4))
    rng = np.random.default_rng(8)
    c = jnp.asarray(rng.uniform(1.0, 2.0, V.ndofs))
    w = jnp.asarray(rng.standard_normal(V.pattern.nnz))

    def matrix(c):
        return fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)).values

    with monkeypatch.context() as m:
        m.setattr(_SF, "_MIN_ENTRIES", 10**18)
        A0, pull0 = jax.vjp(matrix, c)
        (cb0,) = pull0(w)
    with monkeypatch.context() as m:
        _factorised(m)
        m.setattr(_SF, "_chunk_size", lambda *a: 4)
        A, pull = jax.vjp(matrix, c)
        (cb,) = pull(w)
        assert _SF.sumfact_plan(V).dirs[0].nv % 4  # a chunk that starts inside the patch and ends past it
    _close(A, A0)
    _close(cb, cb0)


def test_gradient_of_a_solve_through_the_factorised_assembly(monkeypatch):
    """loss(c) = |u(c)|^2 with A(kappa = Field(c)) u = b: jax.grad against central differences (1e-6) and
    the Taylor remainder's rate 2."""
    V = _annulus(3, (5, 4))
    b = fem.assemble(library.source, V, f=1.0)
    bc = fem.DirichletBC(V, None, 0.0)
    rng = np.random.default_rng(9)
    c0 = jnp.asarray(rng.uniform(1.0, 2.0, V.ndofs))
    dc = jnp.asarray(rng.standard_normal(V.ndofs))
    _factorised(monkeypatch)

    def loss(c):
        u = fem.solve(fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)), b, bc=bc)
        return jnp.sum(u.coeffs**2)

    _fd_and_taylor(loss, c0, dc)


def _fd_and_taylor(loss, c0, dc):
    """``jax.grad(loss)`` along ``dc`` against central differences (step 1e-6) and the Taylor remainder's
    rate (2) at ``c0``."""
    f = jax.jit(loss)
    slope = float(jnp.vdot(jax.jit(jax.grad(loss))(c0), dc))
    fd = float(f(c0 + 1e-6 * dc) - f(c0 - 1e-6 * dc)) / 2e-6
    assert abs(fd - slope) <= 1e-6 * abs(slope), (fd, slope)
    hs = np.array([4e-2, 2e-2, 1e-2])
    rem = [abs(float(f(c0 + h * dc) - f(c0)) - h * slope) for h in hs]
    rates = np.diff(np.log(rem)) / np.diff(np.log(hs))
    assert np.all(np.abs(rates - 2.0) < 0.1), rates
