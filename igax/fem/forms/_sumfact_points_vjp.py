"""The kernel matrices' map ``M -> D = T^T M T dx`` of sum-factorised assembly, with a written-out transpose.

Per quadrature point, :func:`igax.fem.forms._sumfact_points.reference_matrices` turns the kernel on unit
physical jets, ``M (C, Ku, C, Kv)``, into the matrices of the reference jets that the band contraction
reads, ``D[(ru, rv), (c, c')] = sum_{k, l} T_u[ru, k] M[c, k, c', l] T_v[rv, l] dx`` (``T``: the geometry's
map from reference to physical jets, ``dx``: the measure). ``D`` is linear in ``M`` for a fixed geometry,
which is the common optimisation case (coefficient Fields, quadrature-point arrays differentiated, the
control points not). There the derivatives are written out:

- the tangent is the same map applied to the tangent of ``M`` (whatever the kernel is: JAX linearises the
  kernel itself, vectorised over jets and points, so a nonlinear-in-input kernel such as ``kappa^2`` is
  handled by one vectorised JVP or VJP of it, never per entry);
- the transpose is ``Mbar[c, k, c', l] = sum_{ru, rv} T_u[ru, k] T_v[rv, l] Dbar[(ru, rv), (c, c')] dx``
  per point, two short unrolled sums with the geometry's structural zeros (a value jet that only has a
  value, a gradient jet that only has gradients) skipped, instead of JAX's transpose of the forward's
  stacks, transposes and selections.

Where the geometry is differentiated too (control points, shape gradients), the JVP falls back to JAX's
derivative of the plain operations (exact; the band contraction's own rules still apply downstream), and
under ``vmap`` the map runs once per batch member (``lax.map``) so that its transpose stays the written one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = ["PointSpec", "point_matrices"]


class PointSpec:
    """The static structure of ``M -> D`` (hashed by identity: a primitive parameter).

    Arguments:
        ku, kv: the physical jet entries the kernel reads (0 the value, ``k >= 1`` gradient component).
        rational: the patch is rational (the value's reference jet enters the gradient through ``W``).
        d: parametric dimension; blocks: the component blocks ``(c, c')`` kept in ``D``.
        scale: a constant factor of ``dx`` (``w0^2`` on a polynomial patch) or None.
    """

    def __init__(self, ku, kv, rational: bool, d: int, blocks, scale=None):
        self.ku, self.kv = tuple(int(k) for k in ku), tuple(int(k) for k in kv)
        self.rational, self.d = bool(rational), int(d)
        self.blocks = tuple((int(a), int(b)) for a, b in blocks)
        self.scale = None if scale is None else float(scale)


def _geometry(Jinv, invW, dW, dx):
    from igax.fem.forms._sumfact_points import Geometry

    return Geometry(None, Jinv, invW, dW, dx)


def _impl(M, Jinv, invW, dW, dx, *, spec: PointSpec):
    from igax.fem.forms._sumfact_points import reference_matrices

    geo = _geometry(Jinv, invW, dW, dx)
    D, _, _ = reference_matrices(M, spec.ku, spec.kv, geo, spec.rational, spec.d, spec.blocks, spec.scale)
    return D


def _transpose_impl(ct, Jinv, invW, dW, dx, *, spec: PointSpec, m_shape: tuple):
    """``Dbar (S, blocks, P) -> Mbar`` of shape ``m_shape`` (``(C, Ku, C, Kv[, P])``)."""
    from igax.fem.forms._sumfact_points import _reference_columns

    geo = _geometry(Jinv, invW, dW, dx)
    tu = _reference_columns(list(spec.ku), geo, spec.rational, spec.d)
    tv = _reference_columns(list(spec.kv), geo, spec.rational, spec.d)
    C, Ku, Kv = m_shape[0], len(spec.ku), len(spec.kv)
    w = geo.dx if spec.scale is None else geo.dx * spec.scale
    ct = ct * w  # (S, blocks, P)
    zero = jnp.zeros_like(ct[0, 0])
    where = {b: i for i, b in enumerate(spec.blocks)}

    def block(s, c, e):  # the cotangent of one state and block (zero for a block not computed)
        i = where.get((c, e))
        return zero if i is None else ct[s, i]

    Rv = len(tv)
    # Z[ru][l] = sum_rv T_v[rv, l] W[ru, rv]  (C C arrays of P each), then Mbar[k, l] = sum_ru T_u[ru, k] Z.
    Z = []
    for iu in range(len(tu)):
        row = []
        for l in range(Kv):
            terms = [(col[l], iu * Rv + iv) for iv, col in enumerate(tv.values()) if l in col]
            row.append([[sum(t * block(s, c, e) for t, s in terms) if terms else zero for e in range(C)]
                        for c in range(C)])  # fmt: skip
        Z.append(row)
    out = []
    for c in range(C):
        for k in range(Ku):
            for e in range(C):
                for l in range(Kv):
                    terms = [colu[k] * Z[iu][l][c][e] for iu, colu in enumerate(tu.values()) if k in colu]
                    out.append(sum(terms) if terms else zero)
    Mbar = jnp.stack(out).reshape((C, Ku, C, Kv, -1))
    return Mbar if len(m_shape) == 5 else Mbar.sum(-1)


_point_p = Primitive("igax_sumfact_point_matrices")
_point_p.def_impl(_impl)
_point_p.def_abstract_eval(
    lambda M, *geo, spec: jax.core.ShapedArray(
        jax.eval_shape(functools.partial(_impl, spec=spec), M, *geo).shape, M.dtype
    )
)
mlir.register_lowering(_point_p, mlir.lower_fun(_impl, multiple_results=False))

_point_t_p = Primitive("igax_sumfact_point_matrices_transpose")
_point_t_p.def_impl(_transpose_impl)
_point_t_p.def_abstract_eval(lambda ct, *geo, spec, m_shape: jax.core.ShapedArray(m_shape, ct.dtype))
mlir.register_lowering(_point_t_p, mlir.lower_fun(_transpose_impl, multiple_results=False))


def _jvp(primals, tangents, *, spec):
    out = _point_p.bind(*primals, spec=spec)
    if all(type(t) is ad.Zero for t in tangents[1:]):  # the geometry fixed: linear in M
        if type(tangents[0]) is ad.Zero:
            return out, ad.Zero.from_primal_value(out)
        return out, _point_p.bind(tangents[0], *primals[1:], spec=spec)
    # The geometry differentiated: JAX's derivative of the plain operations (exact).
    tangents = [ad.instantiate_zeros(t) for t in tangents]
    return out, jax.jvp(functools.partial(_impl, spec=spec), tuple(primals), tuple(tangents))[1]


def _transpose(ct, M, *geo, spec):
    if not ad.is_undefined_primal(M) or any(ad.is_undefined_primal(g) for g in geo):  # pragma: no cover
        raise RuntimeError("internal error: the point matrices are transposed in M only, the geometry fixed.")
    if type(ct) is ad.Zero:
        return [None] * (1 + len(geo))
    return [_point_t_p.bind(ct, *geo, spec=spec, m_shape=tuple(M.aval.shape))] + [None] * len(geo)


def _transpose_jvp(primals, tangents, *, spec, m_shape):
    """The transpose is linear in the cotangent: its tangent (for forward-over-reverse) is itself; in the
    geometry, JAX's derivative of the plain operations."""
    out = _point_t_p.bind(*primals, spec=spec, m_shape=m_shape)
    if all(type(t) is ad.Zero for t in tangents[1:]):
        if type(tangents[0]) is ad.Zero:
            return out, ad.Zero.from_primal_value(out)
        return out, _point_t_p.bind(tangents[0], *primals[1:], spec=spec, m_shape=m_shape)
    tangents = [ad.instantiate_zeros(t) for t in tangents]
    f = functools.partial(_transpose_impl, spec=spec, m_shape=m_shape)
    return out, jax.jvp(f, tuple(primals), tuple(tangents))[1]


def _transpose_t(ct, c, *geo, spec, m_shape):  # the transpose of the transpose: the forward map
    if not ad.is_undefined_primal(c) or any(ad.is_undefined_primal(g) for g in geo):  # pragma: no cover
        raise RuntimeError("internal error: the point matrices are transposed in M only, the geometry fixed.")
    if type(ct) is ad.Zero:
        return [None] * (1 + len(geo))
    Mct = ct if len(m_shape) == 5 else ct[..., None]
    return [_point_p.bind(Mct, *geo, spec=spec)] + [None] * len(geo)


def _batch(prim):
    """vmap: one evaluation per batch member (a ``lax.map``), batch axis first, so that derivatives of the
    batched program still use the written-out rules."""

    def rule(args, dims, **params):
        moved = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims, strict=True)]
        batched = [d is not None for d in dims]

        def one(xs):
            it = iter(xs)
            return prim.bind(*[next(it) if b else a for a, b in zip(moved, batched, strict=True)], **params)

        xs = [a for a, b in zip(moved, batched, strict=True) if b]
        return jax.lax.map(one, xs), 0

    return rule


ad.primitive_jvps[_point_p] = _jvp
ad.primitive_transposes[_point_p] = _transpose
ad.primitive_jvps[_point_t_p] = _transpose_jvp
ad.primitive_transposes[_point_t_p] = _transpose_t
batching.primitive_batchers[_point_p] = _batch(_point_p)
batching.primitive_batchers[_point_t_p] = _batch(_point_t_p)


def point_matrices(M, geo, spec: PointSpec):
    """``D (states, blocks, P)`` from the kernel matrices ``M (C, Ku, C, Kv, P)`` and the geometry.

    Arguments:
        M: the kernel on unit physical jets at the points (traced; a concrete NumPy ``M`` needs no rule and
            goes straight to :func:`~igax.fem.forms._sumfact_points.reference_matrices`).
        geo: the :class:`~igax.fem.forms._sumfact_points.Geometry` at the points (flat).
        spec: the static structure (:class:`PointSpec`).

    Returns:
        The same as ``reference_matrices(...)[0]``; linear in ``M`` with a written-out transpose.

    Example (one point of the unit square, the Laplacian's ``M``: ``D`` couples the two derivatives):
        >>> import jax.numpy as jnp
        >>> from igax.fem.forms._sumfact_points import Geometry
        >>> from igax.fem.forms._sumfact_points_vjp import PointSpec, point_matrices
        >>> geo = Geometry(None, jnp.eye(2)[..., None], jnp.ones(1), jnp.zeros((2, 1)), jnp.ones(1))
        >>> M = jnp.eye(2).reshape(1, 2, 1, 2, 1)
        >>> point_matrices(M, geo, PointSpec([1, 2], [1, 2], False, 2, [(0, 0)]))[:, 0, 0].tolist()
        [1.0, 0.0, 0.0, 1.0]
    """
    return _point_p.bind(jnp.asarray(M), geo.Jinv, geo.invW, geo.dW, geo.dx, spec=spec)
