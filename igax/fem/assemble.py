"""Vectorised assembly of forms into sparse matrices, load vectors and scalars.

Assembly never loops over elements. For a bilinear kernel ``k(u, v, w)`` the kernel is evaluated, at every
quadrature point at once (vmap), on the unit "jets" of the trial and test functions (a jet is the vector of a
function's value and gradient entries, ``m = ncomp * (1 + dim)`` numbers; entries the kernel never reads are
dropped after a walk over its jaxpr), giving a small ``(m, m)`` matrix per point. Because ``k`` is bilinear,
the element matrix is this matrix contracted with the basis tables,
``K[e, a, b] = sum_q S[e, q, a, :] @ M[e, q] @ S[e, q, b, :] dx[e, q]`` (one fused contraction), and the CSR
values are one ``segment_sum`` of all element entries through the scatter map computed when the space was
built. Everything here is traceable: ``jit`` it once and call it again with new field values, ``vmap`` it over
a batch, ``grad`` through it (also with respect to the geometry).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._config import check_float64
from igax.fem.forms import Form, FormInputs, Jet, QuadValue, kernel_output
from igax.fem.space import FunctionSpace, Rule, Tables
from igax.solvers.sparse import SparseMatrix

__all__ = ["assemble"]


def _field_type():
    from igax.fem.field import Field

    return Field


def _callable_values(f, x, name: str):
    """Values of a callable input at points x (ne, nq, dim) -> (ne, nq) + value shape."""
    ne, nq = x.shape[:2]
    val = jnp.asarray(f(jnp.moveaxis(x, -1, 0)))  # x: (dim, ne, nq), first axis = coordinate
    if val.ndim >= 2 and val.shape[-2:] == (ne, nq):
        return jnp.moveaxis(val.reshape(val.shape[:-2] + (ne * nq,)), -1, 0).reshape(
            (ne, nq) + val.shape[:-2]
        )
    if val.ndim == 0:
        return jnp.broadcast_to(val, (ne, nq))
    raise ValueError(
        f"form input {name!r} is a callable of x that returned shape {val.shape}; with x of shape "
        f"(dim, {ne}, {nq}) (first axis = coordinate) it must return shape ({ne}, {nq}) (or "
        f"value_shape + ({ne}, {nq}), or a scalar). Write it with x[0], x[1], ... and jnp functions."
    )


@eqx.filter_jit
def _points(space: FunctionSpace, boundary):
    return space._tables(space._rule(boundary)).x


def _inputs_at(fields: dict, space: FunctionSpace, rule: Rule, tables: Tables) -> dict:
    """Each named input as (value (ne, nq, ...), grad or None) at the rule's quadrature points."""
    Field = _field_type()
    ne, nq = tables.dx.shape
    out = {}
    for name, f in fields.items():
        if isinstance(f, Field):
            fs = f.space
            if fs is space or fs.plan is space.plan:
                t = tables if fs is space else fs._tables(rule)
            elif space._compatible(fs):
                t = fs._tables(rule)
            else:
                raise ValueError(
                    f"form input {name!r} is a Field on a space whose elements differ from the space being "
                    "assembled on; a Field input must live on the same mesh / the same knot spans (any "
                    "degree). Project or interpolate it onto this space first."
                )
            out[name] = fs._eval_coeffs(f.coeffs, t, rule)
        elif callable(f):
            val = _callable_values(f, tables.x, name)
            out[name] = (val, None)
        else:
            val = jnp.asarray(f)
            if val.ndim == 0:
                val = jnp.broadcast_to(val, (ne, nq))
            elif val.shape[:2] != (ne, nq) and val.ndim <= 2 and max(val.shape) <= 3:
                val = jnp.broadcast_to(val, (ne, nq) + val.shape)  # a constant vector or tensor
            elif val.shape[:2] != (ne, nq):
                raise ValueError(
                    f"form input {name!r} has shape {val.shape}; an array input holds values at the "
                    f"quadrature points, shape ({ne}, {nq}) (+ value shape), or is a constant vector or "
                    "tensor of shape (dim,) or (dim, dim). For dof coefficients pass "
                    "fem.Field(space, coeffs); for a constant pass a number."
                )
            out[name] = (val, None)
    return out


# The contractions below are unrolled over the (small) quadrature and jet axes in Python. This differs from
# the obvious jnp.einsum: XLA on CPU lowers these einsums to batched tiny matrix products, which are 5-10x
# slower than the fused elementwise multiply-adds that the unrolled form compiles to (element axis kept
# first).
def _col(cols, k, q):
    """Jet column k at point q, (ne | 1, nloc): tables may carry size-1 element or point axes."""
    c = cols[k]
    return c[:, q if c.shape[1] > 1 else 0]


# Element matrices that cost more multiply-adds than this (nq ku kv (C nloc)^2 per element) are formed by a
# batched matrix product instead: one GEMM of sizes (C nloc C) x (nq kv) x nloc per element, where the
# unrolled multiply-adds run out of cache. Measured (2 cores): 3D degree-2 spline elasticity 3.1x faster,
# 3D degree-2 spline Laplacian and P2 tetrahedral elasticity 1.3-1.4x; below ~1e5 (2D splines up to degree
# 3, Q1 hexahedral elasticity) the unrolled form was 15-80 % faster.
_GEMM_WORK = 100_000


def _contract_bilinear(U, M, V):
    """K[e, c, i, d, j] = sum_q,k,l U_k[e, q, i] M[e, q, c, k, d, l] V_l[e, q, j] (U, V: jet columns)."""
    if M.shape[1] * len(U) * len(V) * (M.shape[2] * U[0].shape[-1]) ** 2 >= _GEMM_WORK:
        return _contract_bilinear_gemm(U, M, V)
    nq = M.shape[1]
    K = 0.0
    for q in range(nq):
        Mq = M[:, q]  # (ne, C, ku, C, kv)
        for l in range(len(V)):
            T = sum(_col(U, k, q)[:, None, :, None] * Mq[:, :, None, k, :, l] for k in range(len(U)))
            K = K + T[:, :, :, :, None] * _col(V, l, q)[:, None, None, None, :]  # (ne, C, nloc, C, nloc)
    return K


def _contract_bilinear_gemm(U, M, V):
    """:func:`_contract_bilinear` as one batched matrix product per element over the (point, jet) pairs."""
    ne, nq = M.shape[:2]

    def stack(cols):  # jet columns (ne | 1, nq | 1, nloc) -> (ne, nq, k, nloc)
        return jnp.stack([jnp.broadcast_to(c, (ne, nq, c.shape[-1])) for c in cols], axis=2)

    Ua, Va = stack(U), stack(V)
    W = jnp.einsum("eqki,eqckdl->eqlcid", Ua, M)  # (ne, nq, kv, C, nloc, C)
    return jnp.einsum("eqlcid,eqlj->ecidj", W, Va)  # (ne, C, nloc, C, nloc)


def _contract_linear(V, L):
    """b[e, c, i] = sum_q,k V_k[e, q, i] L[e, q, c, k]."""
    nq = L.shape[1]
    return sum(_col(V, k, q)[:, None, :] * L[:, q, :, None, k] for q in range(nq) for k in range(len(V)))


def _jet_columns(tables: Tables, keep):
    """The jet entries kept, each (ne | 1, nq | 1, nloc): 0 -> values, k >= 1 -> gradient component k - 1."""
    return [tables.phi if k == 0 else tables.dphi[..., k - 1] for k in keep]


def _dependencies(fn, args) -> set[int]:
    """Indices of the positional arguments the output of ``fn`` depends on (a walk over its jaxpr).

    Used to drop the jet entries a kernel never reads (the values in a Laplacian, the gradients in a mass
    matrix): conservative (an equation's outputs depend on all its inputs), so nothing used is ever dropped.
    """
    closed = jax.make_jaxpr(fn)(*args)
    jaxpr = closed.jaxpr
    dep: dict = {}
    for i, v in enumerate(jaxpr.invars):
        dep[v] = {i}

    def deps_of(v):
        return dep.get(v, set()) if not hasattr(v, "val") else set()

    for eqn in jaxpr.eqns:
        d = set()
        for v in eqn.invars:
            d |= deps_of(v)
        for o in eqn.outvars:
            dep[o] = d
    out = set()
    for v in jaxpr.outvars:
        out |= deps_of(v)
    return out


def _check_linear(fn, args, form: Form, which: str) -> None:
    """Raise a clear error unless ``fn(*args)`` is linear in ``args[0]`` and ``args[1]`` (one jet).

    Assembly evaluates kernels only on unit jets, which is exact for (bi)linear kernels and silently wrong
    otherwise. ``jax.linear_transpose`` traces the kernel (abstractly, no values) and fails on any operation
    that is not linear in the jet, e.g. ``u.value ** 2`` or ``jnp.sin(v.value)``. It lets constant
    terms through (an affine kernel such as ``u.value * v.value + v.value``): :func:`_check_no_constant_term`
    catches those.
    """
    lin, rest = args[:2], args[2:]
    # The kernel's own errors (e.g. a non-scalar result) surface first, with their own message.
    jax.eval_shape(lambda *a: kernel_output(fn(*a), form), *args)

    def transposed(*rest):
        def f(a, b):
            return kernel_output(fn(a, b, *rest), form)

        out = jax.eval_shape(f, *lin)
        return jax.linear_transpose(f, *lin)(jnp.zeros(out.shape, out.dtype))

    try:
        jax.eval_shape(transposed, *rest)
    except Exception as err:  # any failure of the transpose trace means a non-linear operation on the jet
        raise ValueError(
            f"the kernel of {form!r} is not linear in {which} (transposing it failed: "
            f"{type(err).__name__}: {str(err)[:120]}). Assembly needs {form.kind} kernels: every term must "
            f"be linear in {which}, e.g. w.kappa * jnp.dot(u.grad, v.grad), not u.value ** 2 or "
            "jnp.exp(u.value). For a non-linear problem, assemble the residual's linearisation (a bilinear "
            "form in the increment) or use igax.solvers.newton_solve with an element energy."
        ) from err


def _check_no_constant_term(fn, args, zero: tuple[int, ...], form: Form, which: str) -> None:
    """Raise a clear error if ``fn`` is non-zero with the jets at positions ``zero`` set to zero.

    A (bi)linear kernel vanishes when its trial (or test) jet is zero. The kernel is evaluated once, eagerly,
    at one random point with the other arguments random. When it closes over traced values (a coefficient
    that is a jit argument) the result is not concrete and the check is skipped; so is a kernel that fails or
    gives a non-finite value at the random point (the real evaluation reports its own errors).
    """
    rng = np.random.default_rng(0)

    def sample(i, a):
        if a is None:
            return None
        if i in zero:
            return np.zeros(a.shape, a.dtype)
        if jnp.issubdtype(a.dtype, jnp.floating):
            return rng.uniform(0.25, 0.75, a.shape).astype(a.dtype)
        return np.ones(a.shape, a.dtype)

    concrete = [jax.tree_util.tree_map(lambda a, i=i: sample(i, a), arg) for i, arg in enumerate(args)]
    try:
        with jax.ensure_compile_time_eval():
            out = kernel_output(fn(*concrete), form)
            if isinstance(out, jax.core.Tracer):
                return
            out = np.asarray(out)
    except Exception:  # noqa: BLE001 - see the docstring: the real evaluation reports kernel errors
        return
    if np.all(np.isfinite(out)) and np.any(out != 0):
        fix = (
            "Move a term without the trial function u into a linear_form (the right-hand side)."
            if which == "u"
            else "A term without the test function v is not part of a weak form: multiply it by v.value."
        )
        raise ValueError(
            f"the kernel of {form!r} has a term that does not contain {which}: with {which} = 0 it still "
            f"returns {out.ravel()[:3]} at a sample point. Every term of a {form.kind} kernel must be linear "
            f"in {which} (e.g. u.value * v.value + v.value is not bilinear). {fix}"
        )


def _jet_select(space: FunctionSpace, dtype, use_value: bool, use_grad: bool):
    """Unit jets restricted to the used entries: values (m, *vs), grads (m, *vs, dim), kept jet indices."""
    d1 = space.plan.dim + 1
    keep = ([0] if use_value else []) + (list(range(1, d1)) if use_grad else [])
    val, grad = _unit_jets(space, dtype)
    C = space.plan.ncomp
    rows = np.array([c * d1 + k for c in range(C) for k in keep], dtype=np.int64)
    return val[rows], grad[rows], keep


def _unit_jets(space: FunctionSpace, dtype):
    """Unit jets of the (vector) space: (m, *vs) values and (m, *vs, dim) gradients, m = ncomp * (1 + dim)."""
    p = space.plan
    d = p.dim
    eye = jnp.eye(p.ncomp * (1 + d), dtype=dtype).reshape(-1, p.ncomp, 1 + d)
    val, grad = eye[..., 0], eye[..., 1:]
    if not p.value_shape:
        val, grad = val[:, 0], grad[:, 0]
    return val, grad


def assemble(form: Form, space: FunctionSpace, *, boundary=None, **fields):
    """Integrate a form over a space's domain (or over named boundaries).

    Arguments:
        form: a :func:`bilinear_form`, :func:`linear_form` or :func:`functional`.
        space: the function space (trial = test space for bilinear forms; the integration domain for all).
        boundary: None for the volume; a boundary name (or list of names) to integrate over those boundaries,
            where ``w.n`` is the outward unit normal (Neumann and Robin terms).
        **fields: named inputs of the kernel: numbers, callables of ``x`` (shape ``(dim, ...)``), arrays of
            values at the quadrature points (shape ``(nel, nq)``) or :class:`~igax.fem.Field` objects (also
            giving ``.grad``) on the same mesh / knot spans.

    Returns:
        A :class:`igax.solvers.SparseMatrix` (bilinear; flagged symmetric when the form is declared so), a
        vector of length ``space.ndofs`` (linear) or a scalar (functional).

    Example:
        >>> A = assemble(diffusion, V, kappa=lambda x: 1 + x[0])
        >>> b = assemble(load, V, f=1.0)
        >>> g = assemble(neumann, V, boundary="outer", g=2.0)
    """
    if not isinstance(form, Form):
        raise TypeError(
            f"form must be declared with fem.bilinear_form, fem.linear_form or fem.functional, got "
            f"{type(form).__name__}. Decorate the kernel, e.g. @fem.bilinear_form."
        )
    if not isinstance(space, FunctionSpace):
        raise TypeError(f"space must be a SplineSpace or LagrangeSpace, got {type(space).__name__}.")
    if boundary is not None:
        boundary = space._check_names(boundary)
    # Callables are evaluated here, outside the compiled kernel, so a new lambda does not trigger a new
    # compilation (their few jnp ops are cached by JAX); numbers become arrays for the same reason.
    Field = _field_type()
    fields = dict(fields)
    x = None
    for name, f in fields.items():
        if isinstance(f, Field):
            continue
        if callable(f):
            x = _points(space, boundary) if x is None else x
            fields[name] = _callable_values(f, x, name)
        elif isinstance(f, (int, float, complex, np.number)):
            fields[name] = jnp.asarray(f, dtype=float)
    return _assemble_jit(form, space, boundary, fields)


def _assemble(form: Form, space: FunctionSpace, boundary, fields: dict):
    rule = space._rule(boundary)
    tables = space._tables(rule)
    dtype = tables.dx.dtype
    if dtype != jnp.float64:
        check_float64("assemble")
    inputs = _inputs_at(fields, space, rule, tables)
    ne, nq = tables.dx.shape
    P = ne * nq
    x = tables.x.reshape(P, -1)
    n = None if tables.n is None else tables.n.reshape(P, -1)
    flat = {
        k: (v.reshape((P,) + v.shape[2:]), None if g is None else g.reshape((P,) + g.shape[2:]))
        for k, (v, g) in inputs.items()
    }

    def w_at(xp, np_, fl):
        return FormInputs(xp, np_, {k: QuadValue(v, g, k) for k, (v, g) in fl.items()})

    in_axes = (0, None if n is None else 0, jax.tree_util.tree_map(lambda _: 0, flat))
    p = space.plan

    if form.kind == "functional":

        def point(xp, np_, fl):
            return kernel_output(form.kernel(w_at(xp, np_, fl)), form)

        vals = jax.vmap(point, in_axes)(x, n, flat).reshape(ne, nq)
        return jnp.sum(vals * tables.dx)

    uval, ugrad = _unit_jets(space, dtype)
    C = p.ncomp
    edofs = p.element_dofs[rule.elements]  # (ne, nloc)
    # Abstract per-point arguments, to find which jet entries the kernel reads.
    pt = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (x, n, flat))
    jv = jax.ShapeDtypeStruct(uval.shape[1:], dtype), jax.ShapeDtypeStruct(ugrad.shape[1:], dtype)

    if form.kind == "linear":

        def kern(a, b, xp, np_, fl):
            return form.kernel(Jet(a, b), w_at(xp, np_, fl))

        used = _dependencies(kern, (*jv, *pt))
        _check_linear(kern, (*jv, *pt), form, "v")
        _check_no_constant_term(kern, (*jv, *pt), (0, 1), form, "v")
        tval, tgrad, keep = _jet_select(space, dtype, 0 in used, 1 in used)
        if not keep:
            return jnp.zeros(p.ndofs, dtype)

        def point(xp, np_, fl):
            w = w_at(xp, np_, fl)
            return jax.vmap(lambda a, b: kernel_output(form.kernel(Jet(a, b), w), form))(tval, tgrad)

        L = jax.vmap(point, in_axes)(x, n, flat).reshape(ne, nq, C, len(keep)) * tables.dx[..., None, None]
        be = _contract_linear(_jet_columns(tables, keep), L)
        be = jnp.broadcast_to(be, (ne, C, p.nloc_scalar)).reshape(ne, p.nloc)  # (ne, nloc)
        return jax.ops.segment_sum(be.ravel(), edofs.ravel(), num_segments=p.ndofs)

    if form.kind != "bilinear":
        raise ValueError(f"unknown form kind {form.kind!r}.")

    def kern(ua, ug, va, vg, xp, np_, fl):
        return form.kernel(Jet(ua, ug), Jet(va, vg), w_at(xp, np_, fl))

    used = _dependencies(kern, (*jv, *jv, *pt))
    _check_linear(kern, (*jv, *jv, *pt), form, "u")
    _check_linear(lambda va, vg, ua, ug, *r: kern(ua, ug, va, vg, *r), (*jv, *jv, *pt), form, "v")
    _check_no_constant_term(kern, (*jv, *jv, *pt), (0, 1), form, "u")
    _check_no_constant_term(kern, (*jv, *jv, *pt), (2, 3), form, "v")
    uv, ug_, ku = _jet_select(space, dtype, 0 in used, 1 in used)
    vv, vg_, kv = _jet_select(space, dtype, 2 in used, 3 in used)
    if not ku or not kv:  # the kernel ignores the trial or the test function: a zero matrix
        return SparseMatrix(jnp.zeros(p.pattern.nnz, dtype), p.pattern, symmetric=form.symmetric)

    def point(xp, np_, fl):
        w = w_at(xp, np_, fl)

        def k(ua, ug, va, vg):
            return kernel_output(form.kernel(Jet(ua, ug), Jet(va, vg), w), form)

        inner = jax.vmap(k, (None, None, 0, 0))  # over test jets
        return jax.vmap(inner, (0, 0, None, None))(uv, ug_, vv, vg_)  # (mu, mv)

    def element_matrices(tables, x, n, flat):
        m = tables.dx.shape[0]
        M = (
            jax.vmap(point, in_axes)(x, n, flat).reshape(m, nq, C, len(ku), C, len(kv))
            * tables.dx[..., None, None, None, None]
        )
        return _contract_bilinear(_jet_columns(tables, ku), M, _jet_columns(tables, kv)).reshape(m, -1)

    slots = p.slot[rule.elements].reshape(ne, -1)  # (ne, nloc * nloc)
    chunks = _chunking(space, rule, fields, slots.size)
    if chunks is not None:
        values = _scatter_chunks(
            *chunks, element_matrices, fields, space, rule, nq, slots, p.pattern.nnz, dtype
        )
    else:
        K = element_matrices(tables, x, n, flat)
        values = jax.ops.segment_sum(K.ravel(), slots.ravel(), num_segments=p.pattern.nnz)
    return SparseMatrix(values, p.pattern, symmetric=form.symmetric)


# Element-matrix entries per chunk in chunked assembly (~8 MB of float64 values): large enough that the loop
# overhead is negligible, small enough that a chunk's temporaries stay in cache and are reused.
_CHUNK_ENTRIES = 2**20


def _chunking(space: FunctionSpace, rule: Rule, fields: dict, nentries: int):
    """``(data, tables_fn, nchunks)`` when a bilinear volume assembly should run over element chunks.

    Assembled in one piece, every per-element temporary (vertex coordinates, Jacobians, element matrices:
    hundreds of MB at a million DOFs) is a fresh allocation on every call, and memory traffic and page faults
    dominate. A ``lax.scan`` over chunks computes tables and element matrices chunk by chunk and scatters them
    into the values carried by the loop, so the temporaries are a few MB, allocated once. Used when the space
    can compute the tables of a chunk (``_chunked_tables``) and no input is a Field (whose values come from
    whole-rule tables).
    """
    hook = getattr(space, "_chunked_tables", None)
    if hook is None or nentries < 2 * _CHUNK_ENTRIES:
        return None
    if any(isinstance(f, _field_type()) for f in fields.values()):
        return None
    got = hook(rule)
    if got is None:
        return None
    data, tables_fn = got
    return data, tables_fn, -(-nentries // _CHUNK_ENTRIES)


def _scatter_chunks(data, tables_fn, nchunks, element_matrices, fields, space, rule, nq, slots, nnz, dtype):
    """CSR values: ``lax.scan`` over element chunks, each scatter-added into the carried values."""
    ne = slots.shape[0]
    cs = -(-ne // nchunks)
    # Chunk i covers elements [start_i, start_i + cs); the last one ends at ne and overlaps its predecessor,
    # whose elements it repeats with dropped slots (nnz). No padding: inputs with values at the points are
    # sliced in place, constants are broadcast inside the loop (not materialised for all points).
    starts = np.minimum(np.arange(nchunks) * cs, ne - cs).astype(np.int32)
    idx = starts[:, None] + np.arange(cs)  # (nchunks, cs)
    data, slots = data[idx], slots[idx]
    slots[idx < (np.arange(nchunks) * cs)[:, None]] = nnz

    def body(values, chunk):
        start, cells, slot = chunk
        t = tables_fn(cells)
        sliced = {
            k: v if callable(v) else _chunk_of(jnp.asarray(v), start, cs, ne, nq) for k, v in fields.items()
        }
        fl = {
            k: (v.reshape((cs * nq,) + v.shape[2:]), None)
            for k, (v, _) in _inputs_at(sliced, space, rule, t).items()
        }
        K = element_matrices(t, t.x.reshape(cs * nq, -1), None, fl)  # (cs, nloc * nloc)
        return values.at[slot.ravel()].add(K.ravel().astype(values.dtype), mode="drop"), None

    values, _ = jax.lax.scan(body, jnp.zeros(nnz, dtype), (starts, data, slots))
    return values


def _chunk_of(v, start, cs: int, ne: int, nq: int):
    """The chunk's rows of an input with values at the points (ne, nq, ...); other inputs unchanged."""
    return jax.lax.dynamic_slice_in_dim(v, start, cs) if v.ndim >= 2 and v.shape[:2] == (ne, nq) else v


# One compilation per (form, space plan, boundary, input structure): array inputs are traced, callables and
# numbers are static. Inside a user's jit this is inlined; called eagerly it avoids op-by-op dispatch.
_assemble_jit = eqx.filter_jit(_assemble)
