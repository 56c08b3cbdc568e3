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

from igax import fem
from igax.fem import library
from igax.fem.forms import sumfact  # noqa: F401 (the module, patched below)

_SF = sys.modules["igax.fem.forms.sumfact"]


def _close(a, b, rtol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    err = np.max(np.abs(a - b)) / np.max(np.abs(b))
    assert err <= rtol, f"relative difference {err:.2e} > {rtol:.0e}"


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
                m.setattr(_SF, "_MIN_DEGREE", 1)
                m.setattr(_SF, "point_matrices", point)
                m.setattr(_SF, "_values_jit", eqx.filter_jit(lambda *a: _SF._values(*a)))
                return fn(*args)

        return f

    return on(_SF.point_matrices), on(_plain)


def _annulus(deg, n, shape=()):
    return fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=deg, elements=n), shape=shape)


def _square(deg, n):  # a polynomial patch (unit weights): the common-weight path
    return fem.SplineSpace(fem.geometry.rectangle().refine(degree=deg, elements=n))


def _cube(deg, n):
    return fem.SplineSpace(fem.geometry.box().refine(degree=deg, elements=n))


@fem.bilinear_form
def _squared(u, v, w):  # nonlinear in its input
    return w.kappa**2 * jnp.dot(u.grad, v.grad) + w.kappa * u.value * v.value


@fem.bilinear_form
def _advection(u, v, w):  # reads the Field's gradient; not symmetric
    return jnp.dot(w.kappa.grad, u.grad) * v.value + u.value * v.value


def _field(V, c):
    return fem.Field(V, c)


# name: (space, number of parameters (or "points"), matrix(V, theta))
CASES = {
    "2d-rational-field": (lambda: _annulus(2, (4, 3)), None,
                          lambda V, t: fem.assemble(library.diffusion, V, kappa=_field(V, t))),
    "2d-polynomial-field-squared": (lambda: _square(3, (3, 4)), None,
                                    lambda V, t: fem.assemble(_squared, V, kappa=_field(V, t))),
    "2d-rational-field-gradient": (lambda: _annulus(2, (3, 4)), None,
                                   lambda V, t: fem.assemble(_advection, V, kappa=_field(V, t))),
    "2d-points-squared": (lambda: _annulus(2, (3, 3)), "points",
                          lambda V, t: fem.assemble(_squared, V, kappa=t)),
    "2d-callable": (lambda: _annulus(2, (3, 3)), 2,
                    lambda V, t: fem.assemble(_squared, V, kappa=lambda x: t[0] + t[1] * x[0] * x[1])),
    "2d-constant": (lambda: _annulus(2, (3, 3)), 1, lambda V, t: fem.assemble(_squared, V, kappa=t[0])),
    "3d-field": (lambda: _cube(2, (2, 2, 3)), None,
                 lambda V, t: fem.assemble(_squared, V, kappa=_field(V, t))),
    "2d-vector-field": (lambda: _annulus(2, (3, 3), shape=(2,)), "scalar",
                        lambda V, t: fem.assemble(library.linear_elasticity(None, 0.3), V,
                                                  E=_field(_annulus(2, (3, 3)), t))),
}  # fmt: skip


def _theta(V, n, rng):
    if n is None:
        n = V.ndofs
    elif n == "points":
        n = V.quadrature_points().shape[:2]
    elif n == "scalar":
        n = V.ndofs // 2
    return jnp.asarray(rng.uniform(1.0, 2.0, n))


@pytest.mark.parametrize("case", list(CASES))
def test_vjp_and_jvp_equal_the_automatic_ones(case, monkeypatch):
    make, n, matrix = CASES[case]
    V = make()
    rng = np.random.default_rng(11)
    t, dt = _theta(V, n, rng), _theta(V, n, rng)
    w = jnp.asarray(rng.standard_normal(V.pattern.nnz))
    written, auto = _paths(monkeypatch, lambda t: matrix(V, t).values)
    (A, pull), (A0, pull0) = jax.vjp(written, t), jax.vjp(auto, t)
    _close(A, A0)
    _close(pull(w)[0], pull0(w)[0])
    _close(jax.jvp(written, (t,), (dt,))[1], jax.jvp(auto, (t,), (dt,))[1])
    # Under jit, the VJP alone (its forward loop unused): the same cotangent.
    _close(jax.jit(lambda t, w: jax.vjp(written, t)[1](w)[0])(t, w), pull0(w)[0])


def test_control_points_and_inputs_together_equal_the_automatic_ones(monkeypatch):
    """The geometry differentiated too: the JVP falls back to JAX's derivative of the plain map (exact)."""
    V = _annulus(2, (3, 4))
    rng = np.random.default_rng(12)
    c = _theta(V, None, rng)
    w = jnp.asarray(rng.standard_normal(V.pattern.nnz))

    def matrix(c, P):
        W = V.with_geometry(control_points=P)
        return fem.assemble(_squared, W, kappa=fem.Field(W, c)).values

    written, auto = _paths(monkeypatch, matrix)
    (_, pull), (_, pull0) = jax.vjp(written, c, V.control_points), jax.vjp(auto, c, V.control_points)
    for a, b in zip(pull(w), pull0(w), strict=True):
        _close(a, b)
    dP = jnp.asarray(rng.standard_normal(V.control_points.shape))
    _close(jax.jvp(written, (c, V.control_points), (c, dP))[1], jax.jvp(auto, (c, V.control_points), (c, dP))[1])


def test_vmap_of_the_gradient_equals_a_loop(monkeypatch):
    V = _annulus(2, (3, 3))
    rng = np.random.default_rng(13)
    cs = jnp.stack([_theta(V, None, rng) for _ in range(2)])
    w = jnp.asarray(rng.standard_normal(V.pattern.nnz))
    written, _ = _paths(monkeypatch, lambda c: fem.assemble(_squared, V, kappa=fem.Field(V, c)).values)
    g = jax.grad(lambda c: jnp.vdot(written(c), w))
    _close(jax.vmap(g)(cs), jnp.stack([g(c) for c in cs]))


def test_gradient_of_a_solve_with_a_nonlinear_kernel(monkeypatch):
    """loss(c) = |u(c)|^2 with A(kappa = Field(c)) u = b and the kernel kappa^2: jax.grad against central
    differences (1e-6) and the Taylor remainder's rate 2."""
    V = _annulus(3, (4, 4))
    b = fem.assemble(library.source, V, f=1.0)
    bc = fem.DirichletBC(V, None, 0.0)
    rng = np.random.default_rng(14)
    c0, dc = _theta(V, None, rng), jnp.asarray(rng.standard_normal(V.ndofs))

    def loss(c):
        u = fem.solve(fem.assemble(_squared, V, kappa=fem.Field(V, c)), b, bc=bc)
        return jnp.sum(u.coeffs**2)

    written, _ = _paths(monkeypatch, loss)
    f = jax.jit(written)
    slope = float(jnp.vdot(jax.jit(jax.grad(written))(c0), dc))
    fd = float(f(c0 + 1e-6 * dc) - f(c0 - 1e-6 * dc)) / 2e-6
    assert abs(fd - slope) <= 1e-6 * abs(slope), (fd, slope)
    hs = np.array([4e-2, 2e-2, 1e-2])
    rem = [abs(float(f(c0 + h * dc) - f(c0)) - h * slope) for h in hs]
    rates = np.diff(np.log(rem)) / np.diff(np.log(hs))
    assert np.all(np.abs(rates - 2.0) < 0.1), rates


@pytest.mark.parametrize("rational", [True, False])
def test_point_rules_equal_automatic_derivatives(rational):
    """The primitive alone, vector blocks and a value jet on one side: forward = the plain map (1e-14),
    transpose = JAX's transpose of the plain map, the dot-product identity, the transpose's own transpose
    and its tangent, and a JVP with the geometry differentiated."""
    from igax.fem.forms._sumfact_points import Geometry
    from igax.fem.forms._sumfact_points_vjp import PointSpec, _point_t_p, point_matrices

    rng = np.random.default_rng(15)
    P, d, C = 7, 2, 2
    ku, kv = [0, 1, 2], [1, 2]
    geo = Geometry(None, *(jnp.asarray(rng.standard_normal(s)) for s in ((d, d, P), (P,), (d, P), (P,))))
    spec = PointSpec(ku, kv, rational, d, [(a, b) for a in range(C) for b in range(C)], None if rational else 2.0)
    M, dM = (jnp.asarray(rng.standard_normal((C, 3, C, 2, P))) for _ in range(2))
    D = point_matrices(M, geo, spec)
    Dbar = jnp.asarray(rng.standard_normal(D.shape))
    _close(D, _plain(M, geo, spec), 1e-14)
    ct = jax.vjp(lambda M: point_matrices(M, geo, spec), M)[1](Dbar)[0]
    _close(ct, jax.linear_transpose(lambda M: _plain(M, geo, spec), M)(Dbar)[0])
    lhs, rhs = float(jnp.vdot(D, Dbar)), float(jnp.vdot(M, ct))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs), (lhs, rhs)
    tr = lambda c: _point_t_p.bind(c, *geo[1:], spec=spec, m_shape=M.shape)  # noqa: E731
    _close(jax.linear_transpose(tr, Dbar)(M)[0], D)
    _close(jax.jvp(tr, (Dbar,), (2.0 * Dbar,))[1], 2.0 * ct)
    dJ = jnp.asarray(rng.standard_normal(geo.Jinv.shape))

    def with_jinv(M, J):
        return point_matrices(M, geo._replace(Jinv=J), spec)

    def plain_jinv(M, J):
        return _plain(M, geo._replace(Jinv=J), spec)

    _close(jax.jvp(with_jinv, (M, geo.Jinv), (dM, dJ))[1], jax.jvp(plain_jinv, (M, geo.Jinv), (dM, dJ))[1])
    # vmap: a batch of kernel matrices, the geometry shared.
    Ms = jnp.stack([M, dM])
    _close(jax.vmap(lambda m: point_matrices(m, geo, spec))(Ms), jnp.stack([D, point_matrices(dM, geo, spec)]))
