"""The written-out derivatives of the sum-factorised pointwise map ``M -> D = T^T M T dx``.

igax/fem/forms/_sumfact_points_vjp.py gives that map a hand-written transpose (``Mbar = T Dbar T^T dx`` per
point) and keeps JAX's derivatives of the kernel itself and of the geometry. Checked here: the assembled
matrix's VJP and JVP equal JAX's automatic derivatives of the same operations (the primitive replaced by
the plain ``reference_matrices``) to 1e-12, for 2D and 3D, scalar and vector spaces, rational and
polynomial patches, Field, quadrature-point, callable and constant inputs, a kernel nonlinear in its input
and one that reads a Field's gradient; the control points' derivatives (the fallback) too; a gradient
through assemble -> solve against central differences and the Taylor rate; vmap; and the primitive's own
rules (dot-product identity).
"""

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sumfact_vjp import _close, _fd_and_taylor  # the same checks

from igax import fem
from igax.fem import library
from igax.fem.forms import sumfact  # noqa: F401 (the module, patched below)

_SF = sys.modules["igax.fem.forms.sumfact"]


def _plain(M, geo, spec):
    """The same map without the primitive: JAX differentiates the plain operations."""
    from igax.fem.forms._sumfact_points import reference_matrices

    return reference_matrices(M, spec.ku, spec.kv, geo, spec.rational, spec.d, spec.blocks, spec.scale)[0]


def _paths(monkeypatch, fn):
    """``(written, automatic)``: ``fn(*args)`` on the sum-factorised path with each point rule, each in a
    fresh compiled program."""

    def on(point):
        def f(*args):
            with monkeypatch.context() as m:
                m.setattr(_SF, "_MIN_ENTRIES", 0)
                m.setattr(_SF, "_AFFINE", False)  # the general path (boxes are affine)
                m.setattr(_SF, "_MIN_DEGREE", 1)
                m.setattr(_SF, "point_matrices", point)
                m.setattr(_SF, "_values_jit", eqx.filter_jit(lambda *a: _SF._values(*a)))
                return fn(*args)

        return f

    return on(_SF.point_matrices), on(_plain)


def _annulus(deg, n, shape=()):
    return fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=deg, elements=n), shape=shape)


def _square(deg, n, shape=()):  # a polynomial patch (unit weights): the common-weight path
    return fem.SplineSpace(fem.geometry.rectangle().refine(degree=deg, elements=n), shape=shape)


def _cube(deg, n):
    return fem.SplineSpace(fem.geometry.box().refine(degree=deg, elements=n))


@fem.bilinear_form
def _squared(u, v, w):  # nonlinear in its input
    return w.kappa**2 * jnp.dot(u.grad, v.grad) + w.kappa * u.value * v.value


@fem.bilinear_form
def _every_input(u, v, w):
    """A Field (value squared, and its gradient: not symmetric), point values, a callable, a constant."""
    a = w.kappa**2 + w.q * w.g + w.b[0]
    return a * jnp.dot(u.grad, v.grad) + jnp.dot(w.kappa.grad, u.grad) * v.value + w.b[1] * u.value * v.value


def _all_inputs(V, t):
    c, q, th, b = t
    g = lambda x: th[0] + th[1] * x[0] * x[1]  # noqa: E731
    return fem.assemble(_every_input, V, kappa=fem.Field(V, c), q=q, g=g, b=b)


def _vector(V, c):
    S = _square(2, (2, 3))
    return fem.assemble(library.linear_elasticity(None, 0.3), V, E=fem.Field(S, c))


# name: (space, parameters(V, rng), matrix(V, parameters)): every kind of input on a rational 2D patch;
# a vector space on a polynomial patch; 3D.
CASES = {
    "2d-rational-every-input": (
        lambda: _annulus(2, (3, 3)),
        lambda V, r: (r.uniform(1, 2, V.ndofs), r.uniform(1, 2, V.quadrature_points().shape[:2]),
                      r.uniform(1, 2, 2), r.uniform(1, 2, 2)),
        _all_inputs,
    ),
    "2d-polynomial-vector": (lambda: _square(2, (2, 3), (2,)), lambda V, r: r.uniform(1, 2, V.ndofs // 2),
                             _vector),
    "3d-polynomial-squared": (lambda: _cube(2, (1, 2, 2)), lambda V, r: r.uniform(1, 2, V.ndofs),
                              lambda V, c: fem.assemble(_squared, V, kappa=fem.Field(V, c))),
}  # fmt: skip


_SLOW = pytest.mark.slow  # compile-bound (~30 s each on 2 cores): the fast run keeps the 2D rational case


@pytest.mark.parametrize(
    "case", [c if c.startswith("2d-rational") else pytest.param(c, marks=_SLOW) for c in CASES]
)
def test_vjp_and_jvp_equal_the_automatic_ones(case, monkeypatch):
    """Each path's VJP as one compiled program: the matrix and the cotangents of every input equal the
    automatic ones (1e-12); the JVP matches the VJP (``<w, J dt> = <J^T w, dt>``, 1e-12)."""
    make, params, matrix = CASES[case]
    V = make()
    rng = np.random.default_rng(11)
    t = jax.tree_util.tree_map(jnp.asarray, params(V, rng))
    dt = jax.tree_util.tree_map(jnp.asarray, params(V, rng))
    w = jnp.asarray(rng.standard_normal(V.pattern.nnz))
    written, auto = _paths(monkeypatch, lambda t: matrix(V, t).values)

    def vjp(f):
        def run(t, w):
            A, pull = jax.vjp(f, t)
            return A, pull(w)[0]

        return jax.jit(run)

    (A, ct), (A0, ct0) = vjp(written)(t, w), vjp(auto)(t, w)
    _close(A, A0)
    for a, b in zip(jax.tree_util.tree_leaves(ct), jax.tree_util.tree_leaves(ct0), strict=True):
        _close(a, b)
    tangent = jax.jit(lambda t, dt: jax.jvp(written, (t,), (dt,))[1])(t, dt)
    lhs = float(jnp.vdot(w, tangent))
    rhs = sum(
        float(jnp.vdot(a, b))
        for a, b in zip(jax.tree_util.tree_leaves(ct0), jax.tree_util.tree_leaves(dt), strict=True)
    )
    assert abs(lhs - rhs) <= 1e-12 * abs(rhs), (lhs, rhs)


@_SLOW
def test_control_points_and_inputs_together_equal_the_automatic_ones(monkeypatch):
    """The geometry differentiated too: the JVP falls back to JAX's derivative of the plain map (exact)."""
    V = _annulus(2, (3, 4))
    rng = np.random.default_rng(12)
    c = jnp.asarray(rng.uniform(1.0, 2.0, V.ndofs))
    w = jnp.asarray(rng.standard_normal(V.pattern.nnz))

    def matrix(c, P):
        W = V.with_geometry(control_points=P)
        return fem.assemble(_squared, W, kappa=fem.Field(W, c)).values

    written, auto = _paths(monkeypatch, matrix)
    (_, pull), (_, pull0) = jax.vjp(written, c, V.control_points), jax.vjp(auto, c, V.control_points)
    for a, b in zip(pull(w), pull0(w), strict=True):
        _close(a, b)


def test_gradient_of_a_solve_with_a_nonlinear_kernel(monkeypatch):
    """loss(c) = |u(c)|^2 with A(kappa = Field(c)) u = b and the kernel kappa^2: jax.grad against central
    differences (1e-6) and the Taylor remainder's rate 2."""
    V = _annulus(2, (3, 4))
    b = fem.assemble(library.source, V, f=1.0)
    bc = fem.DirichletBC(V, None, 0.0)
    rng = np.random.default_rng(14)
    c0, dc = jnp.asarray(rng.uniform(1.0, 2.0, V.ndofs)), jnp.asarray(rng.standard_normal(V.ndofs))

    def loss(c):
        u = fem.solve(fem.assemble(_squared, V, kappa=fem.Field(V, c)), b, bc=bc)
        return jnp.sum(u.coeffs**2)

    written, _ = _paths(monkeypatch, loss)
    _fd_and_taylor(written, c0, dc)


def test_point_rules_equal_automatic_derivatives():
    """The primitive alone (rational and polynomial, vector blocks, a value jet on one side), in one
    compiled program: forward = the plain map (1e-14), transpose = JAX's transpose of the plain map and the
    dot-product identity, the transpose's own transpose and tangent, a JVP with the geometry
    differentiated, and vmap of the map and of its VJP (both rules batched)."""
    from igax.fem.forms._sumfact_points import Geometry
    from igax.fem.forms._sumfact_points_vjp import PointSpec, _point_t_p, point_matrices

    rng = np.random.default_rng(15)
    P, d, C = 7, 2, 2
    blocks = [(a, b) for a in range(C) for b in range(C)]
    geo = Geometry(None, *(jnp.asarray(rng.standard_normal(s)) for s in ((d, d, P), (P,), (d, P), (P,))))
    M, dM = (jnp.asarray(rng.standard_normal((C, 3, C, 2, P))) for _ in range(2))
    dJ = jnp.asarray(rng.standard_normal(geo.Jinv.shape))
    for spec in (
        PointSpec([0, 1, 2], [1, 2], True, d, blocks),
        PointSpec([0, 1, 2], [1, 2], False, d, blocks, 2.0),
    ):
        Dbar = jnp.asarray(rng.standard_normal(jax.eval_shape(lambda M, s=spec: _plain(M, geo, s), M).shape))

        @jax.jit
        def both(M, dM, Dbar, dJ, spec=spec):
            fwd = lambda M: point_matrices(M, geo, spec)  # noqa: E731
            plain = lambda M: _plain(M, geo, spec)  # noqa: E731
            tr = lambda c: _point_t_p.bind(c, *geo[1:], spec=spec, m_shape=M.shape)  # noqa: E731
            ct = jax.vjp(fwd, M)[1](Dbar)[0]
            with_j = lambda M, J: point_matrices(M, geo._replace(Jinv=J), spec)  # noqa: E731
            plain_j = lambda M, J: _plain(M, geo._replace(Jinv=J), spec)  # noqa: E731
            Ms, Dbars = jnp.stack([M, dM]), jnp.stack([Dbar, 2.0 * Dbar])
            vjp = jax.vmap(lambda m, db: jax.vjp(fwd, m)[1](db)[0])
            out = [
                fwd(M),
                ct,
                jax.linear_transpose(tr, Dbar)(M)[0],
                jax.jvp(tr, (Dbar,), (2.0 * Dbar,))[1],
                jax.jvp(with_j, (M, geo.Jinv), (dM, dJ))[1],
                jax.vmap(fwd)(Ms),
                vjp(Ms, Dbars),
            ]
            ref = [plain(M), jax.linear_transpose(plain, M)(Dbar)[0], plain(M), 2.0 * ct,
                   jax.jvp(plain_j, (M, geo.Jinv), (dM, dJ))[1], jnp.stack([plain(M), plain(dM)]),
                   jnp.stack([ct, 2.0 * ct])]  # fmt: skip
            return out, ref

        out, ref = both(M, dM, Dbar, dJ)
        for i, (a, b) in enumerate(zip(out, ref, strict=True)):
            _close(a, b, 1e-14 if i == 0 else 1e-12)
        lhs, rhs = float(jnp.vdot(out[0], Dbar)), float(jnp.vdot(M, out[1]))
        assert abs(lhs - rhs) <= 1e-12 * abs(lhs), (lhs, rhs)
