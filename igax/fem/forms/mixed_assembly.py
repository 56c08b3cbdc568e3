"""Assembly of forms on a :class:`~igax.fem.MixedSpace`: kernels over tuples of jets, one block matrix.

A form on a mixed space is written like any other, but its kernel receives one jet per field::

    @fem.bilinear_form(symmetric=True)
    def stokes(u, v, w):
        (uu, p), (vv, q) = u, v
        return w.nu * jnp.sum(uu.grad * vv.grad) - p.value * jnp.trace(vv.grad) - q.value * jnp.trace(uu.grad)

The machinery is that of single spaces (:mod:`igax.fem.forms.assembly`, :mod:`igax.fem.forms.nonlinear`),
on the concatenated jet: at a point, the state (or the unit trial and test functions) of all fields is one
vector ``z`` of ``m = sum_k C_k (1 + dim)`` numbers (field by field; per component its value, then its
gradient), and the kernel is a function of the jets cut out of it. Its derivative with respect to the test
jet (the pointwise residual or load, ``(m,)``) and, for matrices, the derivative of that with respect to the
trial / state jet (``(m, m)``, one ``jacfwd``) are contracted with the element's basis columns
``S (ne, nq, Nloc, m)``: block-diagonal, field ``k``'s columns hold its values and physical gradients at the
mixed space's quadrature points, evaluated by that sub-space on the common rule. The element matrices
``K_e = sum_q S_q J_q S_q^T dx_q`` then go onto the block pattern through the mixed plan's slots (one
``segment_sum``). Rows are test functions, columns trial functions (``A[i, j] = a(phi_j, phi_i)``).

Blocks that a kernel never couples cost the same as the others here: the element matrices are formed in one
piece. Mixed problems are moderate in size (2D saddle points up to a few 1e5 dofs); for those the dense
element contraction is a small part of a solve.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._compile import lazy_jit
from igax._config import check_float64
from igax.fem.forms._kernel_checks import (
    check_linear,
    check_no_constant_term,
    check_symmetric,
    checked_kernel,
)
from igax.fem.forms.form import Form, FormInputs, Jet, QuadValue, kernel_output
from igax.fem.forms.inputs import check_call, inputs_at, prepare_inputs
from igax.fem.spaces.base import Tables
from igax.fem.spaces.mixed import MixedField, MixedSpace
from igax.solvers.sparse import SparseMatrix

__all__ = ["assemble_mixed", "mixed_residual_parts", "prepare_mixed"]


def _w_at(xp, np_, fl):
    """The kernel's ``w`` at one point (as :func:`igax.fem.forms.assembly.w_at`)."""
    return FormInputs(xp, np_, {k: QuadValue(v, g, k) for k, (v, g) in fl.items()})


def prepare_mixed(form: Form, W: MixedSpace, boundary, fields: dict):
    """Boundary names, named inputs made ready on the primary sub-space and the fields' host tables (or
    None): the host work, outside programs."""
    V = W.primary
    boundary, expected = check_call(form, V, boundary, fields)
    rule = W.quadrature_rule(boundary)
    tables = host_tables(W, rule)
    x = None if tables is None else np.moveaxis(np.asarray(tables[W.plan.primary].x), -1, 0)
    fields = prepare_inputs(V, dict(fields), boundary, form=form, expected=expected, x=x)
    return boundary, fields, tables


def host_tables(W: MixedSpace, rule):
    """The tables of every field at the rule's points, computed in NumPy when the geometry is concrete.

    As :func:`igax.fem.forms.assembly.known_tables` does for one space: callables of ``x`` then get NumPy
    points (nothing compiles for them) and the assembly program does not recompute the tables. None when
    the geometry is traced (derivatives must reach it) or a sub-space has no host path.
    """
    if any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(W)):
        return None
    out = []
    for s in W.spaces:
        t = s.host_tables(rule)
        if t is None:
            return None
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(s))
        out.append(Tables(*[None if a is None else np.asarray(a, dtype) for a in t]))
    return tuple(out)


def _layout(W: MixedSpace):
    """Per field: (value shape, ncomp, start of its jet segment); and the jet length m."""
    d1 = W.dim + 1
    out, start = [], 0
    for s in W.spaces:
        C = s.plan.ncomp
        out.append((s.plan.value_shape, C, start))
        start += C * d1
    return tuple(out), start


def _jets(W: MixedSpace, z):
    """The tuple of jets cut out of a concatenated jet vector ``z`` (m,)."""
    d1 = W.dim + 1
    lay, _ = _layout(W)
    jets = []
    for vs, C, start in lay:
        zz = z[start : start + C * d1].reshape(C, d1)
        jets.append(Jet(zz[:, 0].reshape(vs), zz[:, 1:].reshape(vs + (d1 - 1,))))
    return tuple(jets)


def _columns(W: MixedSpace, tables):
    """The basis columns ``S (ne, nq, Nloc, m)``, block-diagonal over the fields (``tables``: one each)."""
    blocks = []
    for t, (_, C, _) in zip(tables, _layout(W)[0], strict=True):
        t = t.full()
        T = jnp.concatenate([t.phi[..., None], t.dphi], axis=-1)  # (ne, nq, nloc, 1 + dim)
        ne, nq, nloc, d1 = T.shape
        Sk = jnp.einsum("cd,eqaj->eqcadj", jnp.eye(C, dtype=T.dtype), T).reshape(ne, nq, C * nloc, C * d1)
        blocks.append(Sk)
    ne, nq = blocks[0].shape[:2]
    m = sum(b.shape[-1] for b in blocks)
    rows, col = [], 0
    for b in blocks:
        k = b.shape[-1]
        pad = [(0, 0), (0, 0), (0, 0), (col, m - col - k)]
        rows.append(jnp.pad(b, pad))
        col += k
    return jnp.concatenate(rows, axis=2)


def _point_inputs(W: MixedSpace, form, rule, fields, primary_tables):
    V = W.primary
    inputs = inputs_at(fields, V, rule, primary_tables, form)
    ne, nq = primary_tables.dx.shape
    P = ne * nq
    flat = {
        k: (v.reshape((P,) + v.shape[2:]), None if g is None else g.reshape((P,) + g.shape[2:]))
        for k, (v, g) in inputs.items()
    }
    n = None if primary_tables.n is None else primary_tables.n.reshape(P, -1)
    return primary_tables.x.reshape(P, -1), n, flat


def _check(form, W, m, pt, kind):
    """The linearity checks of the kernel (once per form and shapes), as for single spaces."""
    sd = jax.ShapeDtypeStruct
    z = sd((m,), pt[0].dtype)
    none = sd((0,), pt[0].dtype)
    pts = jax.tree_util.tree_map(lambda a: sd(a.shape[1:], a.dtype), pt)

    if kind == "linear":

        def kern(a, _b, xp, np_, fl):
            return form.kernel(_jets(W, a), _w_at(xp, np_, fl))

        args = (z, none, *pts)
        checks = [(kern, args, "v")]
    else:

        def kern_u(a, _b, zv, xp, np_, fl):  # linear in the trial jet (bilinear forms only)
            return form.kernel(_jets(W, a), _jets(W, zv), _w_at(xp, np_, fl))

        def kern_v(a, _b, zu, xp, np_, fl):
            return form.kernel(_jets(W, zu), _jets(W, a), _w_at(xp, np_, fl))

        checks = [(kern_v, (z, none, z, *pts), "v")]
        if kind == "bilinear":
            checks.append((kern_u, (z, none, z, *pts), "u"))

    def run():
        for fn, args, which in checks:
            check_linear(fn, args, form, which)
            check_no_constant_term(fn, args, {which: (0, 1)}, form)
        return {0}

    # Keyed by shapes only: the (m, fields) marker tells mixed layouts from each other and from single spaces.
    checked_kernel(form, (sd((m, len(W.spaces)), pt[0].dtype), sd((len(kind),), pt[0].dtype), pts), run)


def _point_residual(form, W):
    """``r(z, x, n, fl) -> (m,)``: the residual at one point for every unit test jet (its gradient in v)."""

    def r(z, xp, np_, fl):
        w = _w_at(xp, np_, fl)
        if form.kind == "energy":
            return jax.grad(lambda y: kernel_output(form.kernel(_jets(W, y), w), form))(z)
        u = _jets(W, z)
        return jax.grad(lambda y: kernel_output(form.kernel(u, _jets(W, y), w), form))(jnp.zeros_like(z))

    return r


def _scatter_vector(W, rule, S, L, dx):
    be = jnp.einsum("eqam,eqm,eq->ea", S, L, dx)
    dofs = W.plan.element_dofs[rule.elements]
    return jax.ops.segment_sum(be.ravel(), jnp.asarray(dofs.ravel()), num_segments=W.ndofs)


def _scatter_matrix(W, rule, S, M, dx, symmetric):
    """``K_e[a, b] = sum_q S[a, i] M[i, j] S[b, j] dx`` onto the block pattern (rows: test, cols: trial)."""
    K = jnp.einsum("eqai,eqij,eqbj,eq->eab", S, M, S, dx)
    slots = W.plan.slot[rule.elements]
    values = jax.ops.segment_sum(K.ravel(), jnp.asarray(slots.ravel()), num_segments=W.plan.pattern.nnz)
    return SparseMatrix(values, W.plan.pattern, symmetric=symmetric)


def _tables(W, rule, tables):
    return tuple(s.tables(rule) for s in W.spaces) if tables is None else tables


def _assemble(form: Form, W: MixedSpace, boundary, fields: dict, tables=None):
    rule = W.quadrature_rule(boundary)
    tabs = _tables(W, rule, tables)
    tp = tabs[W.plan.primary]
    dtype = tp.dx.dtype
    if dtype != jnp.float64:
        check_float64("assemble")
    x, n, flat = _point_inputs(W, form, rule, fields, tp)
    ne, nq = tp.dx.shape
    _, m = _layout(W)
    in_axes = (0, None if n is None else 0, jax.tree_util.tree_map(lambda _: 0, flat))
    S = _columns(W, tabs)
    eye = jnp.eye(m, dtype=dtype)
    if form.kind == "linear":
        _check(form, W, m, (x, n, flat), "linear")

        def point(xp, np_, fl):
            w = _w_at(xp, np_, fl)
            return jax.grad(lambda y: kernel_output(form.kernel(_jets(W, y), w), form))(jnp.zeros(m, dtype))

        L = jax.vmap(point, in_axes)(x, n, flat).reshape(ne, nq, m)
        return _scatter_vector(W, rule, S, L, tp.dx)
    if form.kind == "functional":
        raise TypeError(
            "a functional has no test function: assemble it on one field's space (W[i]) with that field "
            "(MixedField.split()) as an input."
        )
    _check(form, W, m, (x, n, flat), "bilinear")

    def point(xp, np_, fl):
        w = _w_at(xp, np_, fl)

        def k(zu, zv):
            return kernel_output(form.kernel(_jets(W, zu), _jets(W, zv), w), form)

        # (m_v, m_u): the kernel on every pair of unit jets, test jets in the rows.
        return jax.vmap(lambda ev: jax.vmap(lambda eu: k(eu, ev))(eye))(eye)

    M = jax.vmap(point, in_axes)(x, n, flat).reshape(ne, nq, m, m)
    return _scatter_matrix(W, rule, S, M, tp.dx, form.symmetric)


def _residual(form: Form, W: MixedSpace, coeffs, boundary, fields: dict, want_tangent: bool, tables=None):
    rule = W.quadrature_rule(boundary)
    tabs = _tables(W, rule, tables)
    tp = tabs[W.plan.primary]
    if tp.dx.dtype != jnp.float64:
        check_float64("assemble_residual")
    x, n, flat = _point_inputs(W, form, rule, fields, tp)
    ne, nq = tp.dx.shape
    _, m = _layout(W)
    in_axes = (0, None if n is None else 0, jax.tree_util.tree_map(lambda _: 0, flat))
    if form.kind == "residual":
        _check(form, W, m, (x, n, flat), "residual")
    S = _columns(W, tabs)
    ce = coeffs[jnp.asarray(W.plan.element_dofs[rule.elements])]  # (ne, Nloc)
    z = jnp.einsum("eqam,ea->eqm", S, ce).reshape(ne * nq, m)
    r = _point_residual(form, W)
    L = jax.vmap(r, (0,) + in_axes)(z, x, n, flat).reshape(ne, nq, m)
    R = _scatter_vector(W, rule, S, L, tp.dx)
    if not want_tangent:
        return R
    J = jax.vmap(jax.jacfwd(r), (0,) + in_axes)(z, x, n, flat).reshape(ne, nq, m, m)  # dr_i / dz_j
    return R, _scatter_matrix(W, rule, S, J, tp.dx, form.symmetric)


# Cheap compiler options at the top level (mixed problems here are small to moderate: compiling dominates a
# first call); inside a caller's trace the program is part of the caller's.
_assemble_jit = lazy_jit(eqx.filter_jit, _assemble)
_residual_jit = lazy_jit(eqx.filter_jit, _residual)


def assemble_mixed(form: Form, W: MixedSpace, *, boundary=None, **fields):
    """:func:`igax.fem.assemble` on a mixed space (it dispatches here): a block matrix or a load vector.

    Bilinear kernels receive ``u = (u0, u1, ...)`` and ``v = (v0, v1, ...)``, linear kernels
    ``v = (v0, v1, ...)``: one jet per field (``.value``, ``.grad``; vector fields give vectors).

    Returns:
        A :class:`~igax.solvers.SparseMatrix` on the block pattern (``W.ndofs`` square, flagged symmetric
        when the form is declared so; a saddle-point matrix is symmetric but not positive definite, so the
        direct backends use their symmetric indefinite factorisations), or a vector of ``W.ndofs``.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> mesh = fem.unit_square(2, "quad")
        >>> W = fem.MixedSpace(fem.LagrangeSpace(mesh, 2, shape=(2,)), fem.LagrangeSpace(mesh, 1))
        >>> @fem.bilinear_form(symmetric=True)
        ... def stokes(u, v, w):
        ...     (uu, p), (vv, q) = u, v
        ...     div_u, div_v = jnp.trace(uu.grad), jnp.trace(vv.grad)
        ...     return jnp.sum(uu.grad * vv.grad) - p.value * div_v - q.value * div_u
        >>> A = fem.assemble(stokes, W)
        >>> A.shape, bool(abs(A.todense() - A.todense().T).max() < 1e-5)
        ((59, 59), True)
    """
    if form.kind in ("residual", "energy"):
        raise TypeError(
            f"{form!r} is nonlinear: assemble it with fem.assemble_mixed_residual(form, W, u, tangent=True) "
            "or solve it with fem.solve_nonlinear(form, W, bc=...)."
        )
    boundary, fields, tables = prepare_mixed(form, W, boundary, fields)
    out = _assemble_jit(form, W, boundary, fields, tables)
    if form.symmetric and form.kind == "bilinear":  # the flag is trusted by the solvers: verify it
        values = check_symmetric(out.values, out.pattern, form, W.plan, boundary)
        if values is not out.values:
            out = eqx.tree_at(lambda A: A.values, out, values)
    return out


def mixed_residual_parts(form: Form, W: MixedSpace, coeffs, boundary, fields: dict, want_tangent: bool):
    """The residual (and tangent) of a nonlinear form on a mixed space; ``fields`` from :func:`prepare_mixed`
    (called inside the nonlinear solver's program: the tables are computed there)."""
    return _residual(form, W, coeffs, boundary, fields, want_tangent)


def assemble_mixed_residual(form: Form, W: MixedSpace, u, *, boundary=None, tangent: bool = False, **fields):
    """:func:`igax.fem.assemble_residual` on a mixed space: ``R`` or ``(R, K)`` at the state ``u``."""
    c = u.coeffs if isinstance(u, MixedField) else jnp.asarray(u)
    W.check_coeffs(c, "u")
    boundary, fields, tables = prepare_mixed(form, W, boundary, fields)
    return _residual_jit(form, W, c, boundary, fields, bool(tangent), tables)
