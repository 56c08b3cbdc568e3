"""Sum factorisation at the quadrature points: geometry, form inputs and the kernel matrices ``D``.

Everything here is pointwise (or a sum-factorised evaluation of a spline function): the geometry map's
points, inverse Jacobian, weight function and measure at the grid points of a chunk; the form's inputs
there (Fields evaluated from their coefficients, arrays moved to the grid, constants kept); the kernel on
unit jets (``M``) and its products with the geometry, ``D = T^T M T dx`` per state and component block.
Point arrays keep the point axis last ("structure of arrays"): XLA then runs the pointwise algebra as
vectorised passes over the points.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.field import Field
from igax.fem.forms._contract import broadcast_over_jets, jet_select, unit_jets
from igax.fem.forms._kernel_checks import check_bilinear_kernel, checked_kernel
from igax.fem.forms._sumfact_ops import barrier, evaluate
from igax.fem.forms._sumfact_plan import SumFactPlan, sumfact_plan
from igax.fem.forms.form import Form, FormInputs, Jet, QuadValue, kernel_output
from igax.fem.forms.inputs import _array_values, _constant_shapes
from igax.fem.spaces.base import det_inv

__all__ = ["Geometry", "geometry", "kernel_structure", "kernel_matrices", "reference_matrices"]


class Geometry(NamedTuple):
    """Geometry at the grid points, points last ("structure of arrays")."""

    x: jax.Array  # (dim, *grid)
    Jinv: jax.Array  # (pdim, dim, *grid): d u_k / d x_i
    invW: jax.Array  # (*grid,)
    dW: jax.Array  # (pdim, *grid): d W / d u_k
    dx: jax.Array  # (*grid,): Gauss weight times |det J|

    def flat(self) -> Geometry:
        """The same with the grid flattened to one point axis."""
        n = self.invW.size
        return Geometry(*[a.reshape(a.shape[: a.ndim - self.invW.ndim] + (n,)) for a in self])


def _det_inv(J: list, xp):
    """Determinant and inverse of a small matrix of arrays ``J[i][k]`` (unrolled): ``(det, Jinv[k][i])``."""
    d = len(J)
    if d == 1:
        return J[0][0], [[1.0 / J[0][0]]]
    if d == 2:
        det = J[0][0] * J[1][1] - J[0][1] * J[1][0]
        r = 1.0 / det
        return det, [[J[1][1] * r, -J[0][1] * r], [-J[1][0] * r, J[0][0] * r]]
    if d == 3:
        # Cofactors: Jinv[k][i] = C[i][k] / det.
        C = [
            [
                J[(i + 1) % 3][(k + 1) % 3] * J[(i + 2) % 3][(k + 2) % 3]
                - J[(i + 1) % 3][(k + 2) % 3] * J[(i + 2) % 3][(k + 1) % 3]
                for k in range(3)
            ]
            for i in range(3)
        ]
        det = J[0][0] * C[0][0] + J[0][1] * C[0][1] + J[0][2] * C[0][2]
        r = 1.0 / det
        return det, [[C[i][k] * r for i in range(3)] for k in range(3)]
    A = xp.moveaxis(xp.stack([xp.stack(row) for row in J]), (0, 1), (-2, -1))
    det, inv = det_inv(A, xp)
    return det, [[inv[..., k, i] for i in range(d)] for k in range(d)]


def _outer(vectors: list, xp):
    """Outer product of per-direction point vectors -> grid array."""
    out = vectors[0]
    for v in vectors[1:]:
        out = out[..., None] * xp.reshape(v, (1,) * out.ndim + (-1,))
    return out


def geometry(dirs: list, control_points, weights, xp=jnp, token=None) -> Geometry:
    """Points, inverse Jacobian, ``1 / W``, ``grad_u W`` and measure at the grid points of ``dirs``.

    Sum-factorised: the homogeneous control points are evaluated direction by direction, ``x = A / W`` and
    ``J = (dA - x dW) / W`` follow pointwise. ``dirs`` are :class:`~igax.fem.forms._sumfact_plan.Direction`
    s (or
    a chunk of direction 0 first); ``control_points`` the rows they touch.
    """
    dim, d = control_points.shape[-1], len(dirs)
    w = weights[..., None]
    Pw = xp.concatenate([control_points * w, w], axis=-1)  # homogeneous control points (n..., dim + 1)
    A, *dA = evaluate(dirs, Pw, True, xp, token)  # each (dim + 1, *grid)
    # With a token, evaluate stores its results (read by every pointwise pass below) once in memory.
    invW = 1.0 / A[dim]
    x = [A[i] * invW for i in range(dim)]
    J = [[(dA[k][i] - x[i] * dA[k][dim]) * invW for k in range(d)] for i in range(dim)]
    if not all(dd.uniform for dd in dirs):
        # Empty virtual elements (repeated knots): any regular Jacobian there (their weight is zero).
        real = _outer([xp.repeat(xp.asarray(dd.real), dd.nq) for dd in dirs], xp)
        J = [[xp.where(real, J[i][k], float(i == k)) for k in range(d)] for i in range(dim)]
    det, Jinv = _det_inv(J, xp)
    wq = _outer([xp.asarray(dd.wq, dtype=det.dtype).reshape(-1) for dd in dirs], xp)
    dx = wq * xp.abs(det)
    out = Geometry(
        xp.stack(x), xp.stack([xp.stack(r) for r in Jinv]), invW, xp.stack([g[dim] for g in dA]), dx
    )
    return Geometry(*[barrier(a) for a in out]) if xp is jnp else out


def _polynomial_weight(weights) -> float | None:
    """The common weight when the (concrete) weights are all equal to rounding (then ``W`` is constant and
    the patch is polynomial: fewer reference jets), else None (also for traced weights).

    Degree elevation leaves weights of 1 off by a few ulps; taking their mean changes entries by ~1e-15.
    """
    if isinstance(weights, jax.core.Tracer):
        return None
    w = np.asarray(weights)
    if not w.size:
        return None
    m = float(np.mean(w))
    return m if np.max(np.abs(w - m)) <= 1e-14 * abs(m) else None


def _homogeneous_coeffs(field):
    """A Field's coefficients on its control net times the weights, the weights appended: (n..., C + 1)."""
    fs = field.space
    p = fs.plan
    c = field.coeffs.reshape(p.ncomp, p.nscalar)
    if p.nscalar < p.dof_map.shape[0]:
        c = c[:, p.dof_map]  # glued / collapsed: dofs -> control points
    c = jnp.moveaxis(c.reshape((p.ncomp,) + tuple(p.shape)), 0, -1)  # (n..., C)
    w = fs.weights[..., None].astype(c.dtype)
    return jnp.concatenate([c * w, w], axis=-1)


def _field_at(dirs: list, cw, value_shape, geo: Geometry, token=None):
    """Value ``(*vs, P)`` and physical gradient ``(*vs, dim, P)`` of a Field from its homogeneous
    coefficients ``cw`` (the rows ``dirs`` touch); ``geo``: its space's geometry at the same points, flat."""
    P = geo.invW.shape[-1]
    A, *dA = [a.reshape(a.shape[0], P) for a in evaluate(dirs, cw, token=token)]
    val = A[:-1] * geo.invW
    ref = [(g[:-1] - val * g[-1]) * geo.invW for g in dA]  # d/du_k of the value, (C, P)
    grad = jnp.stack(
        [sum(ref[k] * geo.Jinv[k, i] for k in range(len(ref))) for i in range(geo.Jinv.shape[1])], 1
    )
    if not value_shape:
        val, grad = val[0], grad[0]
    return barrier(val), barrier(grad)


# -- inputs and kernel matrices at the points ------------------------------------------------------------
def _prepare_inputs(sf: SumFactPlan, space, fields: dict, form: Form, abstract: bool = False) -> dict:
    """Each input, once per call: ``("field", homogeneous coefficients, value shape, own geometry or None)``
    for a Field on this space's plan (evaluated chunk by chunk), ``("points", value, grad)`` with values at
    the grid points ``(*shape, *grid)``, or ``("const", value)``. With ``abstract``, the same with shapes
    (``jax.ShapeDtypeStruct``) in place of arrays, nothing computed."""
    p = space.plan
    ne, nq = p.nel, int(np.prod([dd.nq for dd in sf.dirs]))  # the element layout of inputs
    expected = form.input_shapes(p.value_shape, p.dim)
    out = {}
    for name, f in fields.items():
        want = None if expected is None else expected.get(name)
        if isinstance(f, Field):
            fs = f.space
            if not space.compatible(fs):
                raise ValueError(
                    f"form input {name!r} is a Field on a space whose elements differ from the space being "
                    "assembled on; a Field input must live on the same mesh / the same knot spans (any "
                    "degree). Project or interpolate it onto this space first."
                )
            if abstract:
                sds = jax.ShapeDtypeStruct
                dt = fs.control_points.dtype
                out[name] = (
                    "points",
                    sds(fs.value_shape + sf.nq, dt),
                    sds(fs.value_shape + (p.dim,) + sf.nq, dt),
                )
                continue
            if fs.plan is space.plan:
                same = fs.control_points is space.control_points and fs.weights is space.weights
                own = None if same else (fs.control_points, fs.weights)
                out[name] = ("field", _homogeneous_coeffs(f), fs.value_shape, own)
                continue
            # Another degree: evaluated once on its own grid, then moved to this space's grid.
            sff = sumfact_plan(fs, space.quadrature_rule(None))
            gf = geometry(sff.dirs, fs.control_points, fs.weights, jnp).flat()
            val, grad = _field_at(sff.dirs, _homogeneous_coeffs(f), fs.value_shape, gf)
            conv = [_regrid(sff, sf, a) for a in (val, grad)]
            out[name] = ("points", *conv)
            continue
        val = f if abstract and not isinstance(f, (int, float)) else jnp.asarray(f)
        if want is not None and val.shape == want:
            out[name] = ("const", val)
        elif val.ndim >= 2 and val.shape[:2] == (ne, nq) and (want is None or val.shape[2:] == want):
            if abstract:
                out[name] = ("points", jax.ShapeDtypeStruct(val.shape[2:] + sf.nq, val.dtype), None)
                continue
            g = sf.element_to_grid(val, jnp)  # (*grid, *shape)
            out[name] = ("points", jnp.moveaxis(g, tuple(range(sf.d)), tuple(range(-sf.d, 0))), None)
        elif want is None and val.shape in _constant_shapes(p):
            out[name] = ("const", val)
        else:  # the element-wise path's checks and messages
            _array_values(name, val, ne, nq, p, want, form)
            raise AssertionError("unreachable")  # pragma: no cover
    return out


def _regrid(src: SumFactPlan, dst: SumFactPlan, a):
    """Point values ``(*shape, P)`` on ``src``'s grid -> ``(*shape, *grid)`` on ``dst``'s (same elements)."""
    shape = a.shape[:-1]
    a = jnp.moveaxis(a, -1, 0).reshape(src.nq + shape)
    if src.nq != dst.nq or not (src.uniform and dst.uniform):
        a = dst.element_to_grid(src.grid_to_element(a, jnp), jnp)
    return jnp.moveaxis(a, tuple(range(dst.d)), tuple(range(-dst.d, 0)))


def _chunk_inputs(prepared: dict, dirs: list, start, geo: Geometry, rows) -> dict:
    """The inputs at one chunk's points: ``name -> (value, grad or None, batched)`` (points last, flat)."""
    d0 = dirs[0]
    P = geo.invW.shape[-1]
    out = {}
    for name, item in prepared.items():
        kind = item[0]
        if kind == "const":
            out[name] = (item[1], None, False)
        elif kind == "points":

            def cut(a):
                if a is None:
                    return None
                axis = a.ndim - len(dirs)
                a = jax.lax.dynamic_slice_in_dim(a, start * d0.nq, d0.nv * d0.nq, axis=axis)
                return a.reshape(a.shape[:axis] + (P,))

            out[name] = (cut(item[1]), cut(item[2]), True)
        else:
            _, cw, vs, own = item
            g = geo if own is None else geometry(dirs, rows(own[0]), rows(own[1]), jnp, start).flat()
            val, grad = _field_at(dirs, rows(cw), vs, g, start)
            out[name] = (val, grad, True)
    return out


def _kernel(form: Form):
    def kern(ua, ug, va, vg, xp, np_, fl):
        w = FormInputs(xp, np_, {k: QuadValue(v, g, k) for k, (v, g) in fl.items()})
        return form.kernel(Jet(ua, ug), Jet(va, vg), w)

    return kern


class KernelStructure(NamedTuple):
    """What a bilinear kernel reads, found once while tracing (see :func:`kernel_structure`)."""

    ku: list  # physical jet entries of u kept (0 the value, k >= 1 gradient component k - 1)
    kv: list
    unit: tuple  # the unit jets (uval, ugrad, vval, vgrad) restricted to ku, kv
    constant: (
        np.ndarray | None
    )  # the kernel matrix (C, ku, C, kv) when it reads no point data and is concrete
    uniform: bool = False  # it reads no point data: the same matrix at every point (traced or concrete)
    complex: bool = False  # its values are complex (sum factorisation works in the space's real dtype)


def kernel_structure(form: Form, space, x_shape, inputs: dict, dtype) -> KernelStructure | None:
    """Check the kernel (linear, no constant term: the element-wise path's checks, cached per form) and find
    the jet entries it reads. ``inputs``: ``name -> (value, grad or None, batched)`` of one chunk, or their
    abstract shapes. None when the kernel ignores ``u`` or ``v`` (a zero matrix)."""
    p = space.plan
    C = p.ncomp
    kern = _kernel(form)
    # Concrete even under a trace (a jitted assembly): the unit jets are structure, and a kernel that reads
    # no point data then gives a concrete constant matrix below (mirrored blocks, no run-time symmetry check).
    with jax.ensure_compile_time_eval():
        uval, ugrad = unit_jets(space, dtype)
    jv = jax.ShapeDtypeStruct(uval.shape[1:], dtype), jax.ShapeDtypeStruct(ugrad.shape[1:], dtype)

    def per_point(a, batched):
        return jax.ShapeDtypeStruct(a.shape[:-1] if batched else a.shape, a.dtype)

    pt = (
        jax.ShapeDtypeStruct(x_shape, dtype),
        None,
        {k: (per_point(v, b), None if g is None else per_point(g, True)) for k, (v, g, b) in inputs.items()},
    )

    used = checked_kernel(form, (jv, pt), lambda: check_bilinear_kernel(kern, jv, pt, form))
    out = jax.eval_shape(
        lambda ua, ug, va, vg, x, fl: kernel_output(kern(ua, ug, va, vg, x, None, fl), form),
        *jv,
        *jv,
        *pt[::2],
    )
    is_complex = bool(jnp.issubdtype(out.dtype, jnp.complexfloating))
    with jax.ensure_compile_time_eval():
        uv, ug_, ku = jet_select(space, dtype, 0 in used, 1 in used)
        vv, vg_, kv = jet_select(space, dtype, 2 in used, 3 in used)
    if not ku or not kv:
        return None
    unit = (uv, ug_, vv, vg_)
    constant = None
    batched = any(b for _, _, b in inputs.values())
    # Leaf 4 of the kernel's arguments is x; inputs not batched over the points are the same everywhere.
    uniform = 4 not in used and not batched
    if not (set(used) - {0, 1, 2, 3}) and not batched:
        # The kernel reads no point data: one evaluation, concrete when its own constants are.
        const_in = {k: (v, g) for k, (v, g, _) in inputs.items()}
        with jax.ensure_compile_time_eval():
            M = _point_matrix(form, unit, jnp.zeros(x_shape, dtype), const_in)
        if not isinstance(M, jax.core.Tracer):
            constant = np.asarray(M).reshape(C, len(ku), C, len(kv))
    return KernelStructure(list(ku), list(kv), unit, constant, uniform, is_complex)


def _point_matrix(form: Form, unit, xp, fl):
    """The kernel on unit jets at one point: ``(C ku, C kv)``."""
    uv, ug_, vv, vg_ = unit
    kern = _kernel(form)

    def k(ua, ug, va, vg):
        return kernel_output(kern(ua, ug, va, vg, xp, None, fl), form)

    inner = jax.vmap(k, (None, None, 0, 0))  # over test jets
    return jax.vmap(inner, (0, 0, None, None))(uv, ug_, vv, vg_)


def kernel_matrices(form: Form, ks: KernelStructure, C: int, x, inputs: dict):
    """``M (C, ku, C, kv, P)`` at the points ``x (dim, P)`` (or the concrete ``ks.constant``)."""
    if ks.constant is not None:
        return ks.constant
    flat = {k: (v, g) for k, (v, g, _) in inputs.items()}
    axes = {k: (-1 if b else None, None if g is None else -1) for k, (v, g, b) in inputs.items()}
    # The points and inputs broadcast over the jet pairs explicitly
    # (igax.fem.forms._contract.broadcast_over_jets),
    # then the kernel vmapped over jets and points: the cotangent of an input is then a sum of slabs written
    # as adds. Vmapped over jets with unbatched inputs, JAX's transpose is a reduction over the jet axes,
    # which XLA on CPU runs as a float64 YNNPACK fusion several times slower than plain loops.
    uv, ug_, vv, vg_ = ks.unit
    bx, bflat = broadcast_over_jets((x, flat), (uv.shape[0], vv.shape[0]))
    kern = _kernel(form)

    def k(ua, ug, va, vg, xp, fl):
        return kernel_output(kern(ua, ug, va, vg, xp, None, fl), form)

    over_points = jax.vmap(k, (None, None, None, None, -1, axes), out_axes=-1)
    over_v = jax.vmap(over_points, (None, None, 0, 0, 0, 0))
    M = jax.vmap(over_v, (0, 0, None, None, 0, 0))(uv, ug_, vv, vg_, bx, bflat)  # (C ku, C kv, P)
    return barrier(M.reshape(C, len(ks.ku), C, len(ks.kv), -1))


def _reference_columns(keep, geo: Geometry | None, rational: bool, d: int, dry: bool = False) -> dict:
    """Physical jet of each reference jet ``r`` used: ``{r: {k: coefficient (P,)}}`` (``k`` indexes ``keep``).

    ``r = 0``: the B-spline value (physical value ``1/W``, gradient ``-J^{-T} grad W / W^2`` on a rational
    geometry); ``r = j + 1``: its derivative along direction ``j`` (gradient ``J^{-T} e_j / W``).
    """
    grads = [k for k in keep if k >= 1]
    cols: dict = {}
    if dry:  # only which reference jets are used
        return dict.fromkeys(
            ([0] if 0 in keep or (grads and rational) else []) + ([j + 1 for j in range(d)] if grads else [])
        )
    if 0 in keep or (grads and rational):
        col = {}
        if 0 in keep:
            col[keep.index(0)] = geo.invW
        if grads and rational:
            s = -geo.invW * geo.invW
            for k in grads:
                col[keep.index(k)] = sum(geo.dW[j] * geo.Jinv[j, k - 1] for j in range(d)) * s
        cols[0] = col
    if grads:
        for j in range(d):
            cols[j + 1] = {keep.index(k): geo.Jinv[j, k - 1] * geo.invW for k in grads}
    return cols


def _column_matrix(cols: dict, nk: int, like):
    """``{r: {k: coefficient}}`` -> ``T (R, K, P)`` (structural zeros filled in)."""
    zero = jnp.zeros_like(like)
    return jnp.stack([jnp.stack([col.get(k, zero) for k in range(nk)]) for col in cols.values()])


def reference_matrices(M, ku, kv, geo: Geometry, rational: bool, d: int, blocks, scale=None):
    """``D[state, block, P] = (T_u^T M T_v dx)`` per component block ``(cu, cv)`` and state ``(ru, rv)``.

    Returns ``(D, Ru, Rv)`` with the reference jets used on each side (states are ``Ru x Rv``, row-major).
    Two broadcast products with a sum over the short jet axis: a few operations that XLA fuses into passes
    over the points (unrolling the sums per entry was as fast to run and 5x slower to compile in 3D).
    """
    tu = _reference_columns(list(ku), geo, rational, d)
    tv = _reference_columns(list(kv), geo, rational, d)
    dx = geo.dx if scale is None else geo.dx * scale
    Tu = _column_matrix(tu, len(ku), dx)  # (Ru, Ku, P)
    Tv = _column_matrix(tv, len(kv), dx)  # (Rv, Kv, P)
    Ku, Kv = len(ku), len(kv)
    # Sums over the short jet axes unrolled: elementwise passes over the points (a reduce over a middle axis
    # of these broadcasts ran 3-5x slower on CPU).
    if isinstance(M, np.ndarray):  # a concrete kernel matrix: its zeros skipped
        C = M.shape[0]
        zero = jnp.zeros_like(Tv[:, 0])
        rows = []
        for c in range(C):
            for k in range(Ku):
                for e in range(C):
                    terms = [float(M[c, k, e, l]) * Tv[:, l] for l in range(Kv) if M[c, k, e, l] != 0]
                    rows.append(sum(terms) if terms else zero)
        Y = jnp.stack(rows).reshape((C, Ku, C) + Tv[:, 0].shape)  # (C, Ku, C, Rv, P)
    else:
        # Stacks over the reference jets instead of broadcasts along a new axis: the cotangent of M (inputs
        # differentiated) is then a sum of products written as adds, where the transpose of a broadcast was a
        # reduction over a middle axis, a float64 YNNPACK fusion on CPU that took 2/3 of the backward pass.
        M = M if M.ndim == 5 else M[..., None]
        Y = jnp.stack(
            [sum(M[:, :, :, l, :] * Tv[r, l] for l in range(Kv)) for r in range(Tv.shape[0])], axis=3
        )  # (C, Ku, C, Rv, P)
    Yk = [jnp.transpose(Y[:, k], (2, 0, 1, 3)) for k in range(Ku)]  # (Rv, C, C, P) each
    D = jnp.stack([sum(Tu[r, k] * Yk[k] for k in range(Ku)) for r in range(Tu.shape[0])])
    D = D * dx  # (Ru, Rv, C, C, P)
    C = D.shape[2]
    D = D.reshape((D.shape[0] * D.shape[1], C * C, -1))
    sel = [cu * C + cv for cu, cv in blocks]
    if sel != list(range(C * C)):
        D = D[:, np.asarray(sel)]
    return D, list(tu), list(tv)


def _input_shapes(prepared: dict, d: int, dim: int, dtype) -> dict:
    """Per-point shapes of prepared inputs, as :func:`kernel_structure` takes them."""
    shapes = {}
    for name, item in prepared.items():
        if item[0] == "const":
            shapes[name] = (jax.ShapeDtypeStruct(item[1].shape, item[1].dtype), None, False)
        elif item[0] == "points":
            v, g = item[1], item[2]
            shp = jax.ShapeDtypeStruct(v.shape[: v.ndim - d] + (1,), v.dtype)
            gs = None if g is None else jax.ShapeDtypeStruct(g.shape[: g.ndim - d] + (1,), g.dtype)
            shapes[name] = (shp, gs, True)
        else:
            vs = item[2]
            shapes[name] = (
                jax.ShapeDtypeStruct(vs + (1,), dtype),
                jax.ShapeDtypeStruct(vs + (dim, 1), dtype),
                True,
            )
    return shapes
