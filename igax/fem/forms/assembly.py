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

import functools
import weakref

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._compile import fast_compile_options, lazy_jit
from igax._config import check_float64
from igax._held import fetch_arrays
from igax.fem.field import Field
from igax.fem.forms._contract import (
    bilinear_einsum,
    broadcast_over_jets,
    contract_bilinear,
    contract_linear,
    jet_columns,
    jet_select,
    unit_jets,
)
from igax.fem.forms._kernel_checks import (
    check_bilinear_kernel,
    check_linear,
    check_no_constant_term,
    check_symmetric,
    checked_kernel,
    dependencies,
)
from igax.fem.forms.form import Form, FormInputs, Jet, QuadValue, kernel_output
from igax.fem.forms.inputs import _check_input_names, inputs_at, prepare_inputs
from igax.fem.forms.mixed_assembly import assemble_mixed
from igax.fem.forms.sumfact import assemble_factorised
from igax.fem.spaces.base import FunctionSpace, Rule, Tables, hoist_constants
from igax.fem.spaces.mixed import MixedSpace
from igax.solvers.sparse import SparseMatrix

__all__ = ["assemble"]


# -- tables computed once per geometry -----------------------------------------------------------------------
# The basis tables of a rule (NURBS values, physical gradients, points, measures) depend only on the space's
# geometry. When that geometry is concrete (an eager call, or a space closed over by a jitted function) and
# the tables are small, they are computed once, in NumPy where the space has a host path (spline and
# Lagrange spaces: nothing to compile) or else by one compiled program per (space structure, rule), and
# cached with the geometry arrays. The assembly programs then take them as inputs instead of each
# recomputing them: those programs compile 2-3x faster (2 cores, 2D degree 3: the table code was most of a
# small assembly program, and a program of several forms on one space held several copies), and a new mesh
# size compiles no table code at all. Traced geometry (shape derivatives) and large tables keep the tables
# inside the assembly program: large constants must not be baked into a user's jitted program.
_TABLE_ENTRIES_LIMIT = 2**19  # entries of (phi, dphi) per rule: 4 MB in float64
_TABLE_CACHE_SIZE = 8
# key -> (weak references to the plan, the rule and the geometry leaves, tables, points (dim, ne, nq)); an
# entry goes when its geometry does.
_TABLE_CACHE: dict = {}


_PROGRAMS_SIZE = 16
_PROGRAMS: dict = {}  # (plan, rule, tree, shapes) -> compiled table program


def _tables_program(space: FunctionSpace, rule: Rule):
    """``(tables, x (dim, ne, nq))`` by a compiled program (one per space structure, rule and shapes).

    The program is compiled ahead of time and called directly, so it runs now even while a function is being
    traced (a jitted call there would be staged into the caller's trace and return tracers; and
    ``jax.ensure_compile_time_eval`` would run the table code op by op).
    """
    leaves, tree = jax.tree_util.tree_flatten(space)
    key = (id(rule), tree, tuple((a.shape, str(a.dtype)) for a in leaves))
    exe = _PROGRAMS.get(key)
    if exe is None:

        def tables(leaves):
            t = jax.tree_util.tree_unflatten(tree, leaves).tables(rule)
            return t, jnp.moveaxis(t.x, -1, 0)

        exe = jax.jit(tables).lower(leaves).compile(compiler_options=fast_compile_options())
        while len(_PROGRAMS) >= _PROGRAMS_SIZE:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[key] = exe
    return exe(leaves)


def known_tables(space: FunctionSpace, rule: Rule):
    """``(tables, x)`` of ``rule`` on ``space`` as concrete arrays (cached), or None.

    None when the geometry is traced (the tables must then be computed in the caller's trace, so that
    derivatives reach the geometry) or the tables would exceed ``_TABLE_ENTRIES_LIMIT`` entries. ``x`` is the
    points with the coordinate axis first, ``(dim, ne, nq)``, as callables of ``x`` take them, as a
    read-only NumPy array: indexing it (``x[0]``) and arithmetic on it then run in NumPy instead of
    compiling one small XLA program per operation and mesh size (``jnp`` functions accept it as well).
    ``rule`` may belong to another space with the same elements (a Field on a compatible space).
    """
    leaves = jax.tree_util.tree_leaves(space)
    if any(isinstance(a, jax.core.Tracer) for a in leaves):
        return None
    p = space.plan
    nloc = p.nloc_scalar
    if rule.elements.size * nloc * nloc * (1 + p.dim) > _TABLE_ENTRIES_LIMIT:  # nq ~ nloc (tensor Gauss)
        return None
    owners = (p, rule, *leaves)
    key = tuple(id(a) for a in owners)
    hit = _TABLE_CACHE.get(key)
    if hit is not None and all(r() is a for r, a in zip(hit[0], owners, strict=True)):
        return hit[1], hit[2]
    host = space.host_tables(rule)
    if host is not None:  # NumPy: no compilation at all
        dtype = jnp.result_type(*leaves)
        host = Tables(*[None if a is None else np.asarray(a, dtype) for a in host])
        with jax.ensure_compile_time_eval():  # concrete also while a caller's function is being traced
            tables = jax.device_put(host)
        x = np.moveaxis(host.x, -1, 0)
    else:
        tables, x = _tables_program(space, rule)
        x = np.asarray(x)
    x = np.array(x)  # a copy of its own, read-only: callables receive it, the cache keeps it
    x.setflags(write=False)
    if any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(tables)):
        return tables, x  # pragma: no cover - never cache a tracer (both paths above return concrete arrays)
    try:
        refs = tuple(weakref.ref(a, lambda _, k=key: _TABLE_CACHE.pop(k, None)) for a in owners)
    except TypeError:  # something that cannot be referenced weakly (e.g. a NumPy leaf): do not cache
        return tables, x
    while len(_TABLE_CACHE) >= _TABLE_CACHE_SIZE:
        _TABLE_CACHE.pop(next(iter(_TABLE_CACHE)))  # the oldest entry
    _TABLE_CACHE[key] = (refs, tables, x)
    return tables, x


# The element contractions (igax.fem.forms._contract) come in two forms: unrolled fused multiply-adds over the
# (small) point and jet axes, which XLA on CPU runs 5-10x faster than the einsums of the same contraction
# (they lower to batched tiny matrix products), and the einsums, which become GEMMs when an element has many
# dofs per point. Their derivatives are written out in the same two forms.
#
# Element matrices that cost more multiply-adds than this (nq ku kv (C nloc)^2 per element) are formed by a
# batched matrix product instead: one GEMM of sizes (C nloc C) x (nq kv) x nloc per element, where the
# unrolled multiply-adds run out of cache. Measured (2 cores): 3D degree-2 spline elasticity 3.1x faster,
# 3D degree-2 spline Laplacian and P2 tetrahedral elasticity 1.3-1.4x; below ~1e5 (2D splines up to degree
# 3, Q1 hexahedral elasticity) the unrolled form was 15-80 % faster.
_GEMM_WORK = 100_000
# Small assemblies (at most this many multiply-adds in all: 2D degree 3 up to 16 x 16 elements, degree 2 up to
# ~38 x 38) use the compact einsum forms too: their run time is the same there (0.5 ms either way at 16 x 16
# cubic elements), and the unrolled forms' hundreds of indexing operations cost more to trace, lower and
# compile than the whole run (~50 ms of tracing per form at every new mesh size).
_SMALL_WORK = 2**22


def _contract_jets_first(U, M, V):
    """K[e, c, i, d, j] = sum_q,k,l U_k[e, q, i] M[c, k, d, l, e, q] V_l[e, q, j] (U, V: jet columns).

    ``M`` holds the jet pairs in front (see :func:`_assemble`). Differentiable in all three with derivatives
    that cost about one contraction each (see :mod:`igax.fem.forms._contract`).
    """
    C, ne, nq = M.shape[0], M.shape[-2], M.shape[-1]
    work = nq * len(U) * len(V) * (C * U[0].shape[-1]) ** 2  # per element
    einsum = work >= _GEMM_WORK or ne * work <= _SMALL_WORK
    return contract_bilinear(U, M, V, einsum=einsum)


def _contract_bilinear(U, M, V):
    """:func:`_contract_jets_first` with ``M`` element-major, ``(ne, nq, C, ku, C, kv)``."""
    return _contract_jets_first(U, jnp.moveaxis(M, (0, 1), (-2, -1)), V)


def _contract_bilinear_gemm(U, M, V):
    """The reference (einsum) form of :func:`_contract_bilinear` (tests compare against it)."""
    return bilinear_einsum(U, jnp.moveaxis(M, (0, 1), (-2, -1)), V)


def _contract_linear(V, L):
    """b[e, c, i] = sum_q,k V_k[e, q, i] L[e, q, c, k]."""
    ne, nq = L.shape[:2]
    return contract_linear(V, L, einsum=ne * nq * len(V) * L.shape[2] * V[0].shape[-1] <= _SMALL_WORK)


def assemble(form: Form, space: FunctionSpace, *, boundary=None, **fields):
    """Integrate a form over a space's domain (or over named boundaries).

    Arguments:
        form: a :func:`bilinear_form`, :func:`linear_form` or :func:`functional`.
        space: the function space (trial = test space for bilinear forms; the integration domain for all);
            a :class:`~igax.fem.MixedSpace` gives kernels tuples of jets (see
            :func:`igax.fem.forms.mixed_assembly.assemble_mixed`).
        boundary: None for the volume; a boundary name (or list of names) to integrate over those boundaries,
            where ``w.n`` is the outward unit normal (Neumann and Robin terms). A form declared with
            ``boundary=True`` (``library.neumann``, ``robin``, ``traction``) requires it; any other form may
            also be integrated over boundaries (e.g. a boundary mass matrix).
        **fields: named inputs of the kernel, each turned into values at the quadrature points:

            - a number: a constant scalar;
            - a callable of ``x`` (``x`` of shape ``(dim, nel, nq)``, first axis = coordinate) returning a
              scalar, shape ``(nel, nq)``, or value shape + ``(nel, nq)``. It is called once per call of
              ``assemble``, outside the compiled kernel. Where the geometry is concrete, ``x`` is a read-only
              NumPy array (indexing and arithmetic then compile nothing); where it is traced (shape
              derivatives), a JAX array. Write it with ``x[0]``, ``x[1]``, ... and ``jnp`` functions, which
              take both;
            - a :class:`~igax.fem.Field` on the same mesh / knot spans (any degree; also gives ``.grad``);
            - an array: a constant of the input's value shape, or values at the quadrature points of shape
              ``(nel, nq)`` + value shape (``V.quadrature_points(boundary)`` gives those points, shape
              ``(nel, nq, dim)``).

            When the form declares its inputs (``inputs=`` of the decorator, as every form of
            :mod:`igax.fem.forms.library` does), each input's value shape must equal the declared one exactly,
            and an input the form does not take is an error (it would be ignored). Otherwise an array
            constant may have shape ``()``, ``(dim,)``, ``(dim, dim)``, the space's value shape or value
            shape + ``(dim,)``; any other array shape is an error, never broadcast.

    Returns:
        A :class:`igax.solvers.SparseMatrix` (bilinear; flagged symmetric when the form is declared so), a
        vector of length ``space.ndofs`` (linear) or a scalar (functional). Rows are test functions and
        columns trial functions, ``A[i, j] = a(phi_j, phi_i)``: ``A @ u`` is the form's action on ``u`` and
        ``solve(A, F)`` solves ``a(u, v) = F(v)`` for every ``v`` (visible for non-symmetric forms).

    Raises:
        ValueError: a kernel that is not (bi)linear or has a term without ``u`` (or ``v``), checked on its
            jaxpr when first traced; a boundary form without ``boundary=``; an input of the wrong shape; a
            form declared ``symmetric=True`` whose matrix is not symmetric. The symmetry is checked on the
            values: exactly and once per (form, space, boundary) when they are concrete (a gather and a
            maximum over the ``nnz`` values, then cached); under ``jit``/``grad``/``vmap``, before any eager
            check of that triple, as a run-time check with the solvers' mechanism (one gather over the
            values per call, about 5-10 % of the assembly; under ``jit`` the error reaches the caller as a
            ``JaxRuntimeError`` whose text holds this message). Assemble the form once eagerly (e.g. at
            set-up) to verify it there and leave compiled programs without the check (a program holding it
            cannot be serialised with ``jax.export``).
        TypeError: an input a form with declared inputs does not take.

    Example:
        >>> from igax import fem
        >>> from igax.fem.forms.library import diffusion, neumann, source
        >>> V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=4))
        >>> A = fem.assemble(diffusion, V, kappa=lambda x: 1 + x[0])
        >>> b = fem.assemble(source, V, f=1.0)
        >>> g = fem.assemble(neumann, V, boundary="outer", g=2.0)
        >>> A.shape, b.shape, round(float(g.sum()), 6)      # g times the outer arc's length: 2 * pi
        ((36, 36), (36,), 6.283185)
    """
    if not isinstance(form, Form):
        raise TypeError(
            f"form must be declared with fem.bilinear_form, fem.linear_form or fem.functional, got "
            f"{type(form).__name__}. Decorate the kernel, e.g. @fem.bilinear_form."
        )
    if isinstance(space, MixedSpace):  # tuples of jets, one block matrix: igax.fem.forms.mixed_assembly
        return assemble_mixed(form, space, boundary=boundary, **fields)
    if not isinstance(space, FunctionSpace):
        raise TypeError(f"space must be a SplineSpace or LagrangeSpace, got {type(space).__name__}.")
    if form.kind in ("residual", "energy"):
        raise TypeError(
            f"{form!r} is nonlinear: assemble it at a state with fem.assemble_residual({form.name}, V, u, "
            f"tangent=True, ...) or solve it with fem.solve_nonlinear({form.name}, V, bc=...)."
        )
    if boundary is not None:
        boundary = space.check_names(boundary)
    elif form.boundary:
        raise ValueError(
            f"{form!r} is a boundary form (declared with boundary=True): it integrates over boundary facets "
            f"and must not be integrated over the volume. Pass boundary=..., e.g. assemble({form.name}, V, "
            f"boundary={space.boundary_names[0]!r}, ...); this space's boundaries are "
            f"{list(space.boundary_names)} (boundary=V.boundary_names for all of them)."
        )
    expected = form.input_shapes(space.plan.value_shape, space.plan.dim)
    if expected is not None:
        _check_input_names(form, expected, fields)
    if boundary is None and form.kind == "bilinear":  # large spline patches: sum factorisation, or None
        out = assemble_factorised(form, space, fields)
        if out is not None:
            return out
    # Callables are evaluated here, outside the compiled kernel, so a new lambda does not trigger a new
    # compilation (their few jnp ops are cached by JAX); numbers become arrays for the same reason.
    fields = dict(fields)
    rule = space.quadrature_rule(boundary)
    known = known_tables(space, rule)
    tables, x = (None, None) if known is None else known
    # Tables of Field inputs on other spaces (same elements), when known: by name, for the compiled program.
    field_tables = {}
    for name, f in fields.items():
        if isinstance(f, Field):
            if f.space is space:
                field_tables[name] = tables
            elif f.space.plan is space.plan or space.compatible(f.space):
                field_tables[name] = (known_tables(f.space, rule) or (None,))[0]
    fields = prepare_inputs(space, fields, boundary, form=form, expected=expected, x=x)
    field_tables = {k: t for k, t in field_tables.items() if t is not None}
    p = space.plan
    small = rule.elements.size * p.nloc * p.nloc <= _SMALL_ENTRIES
    program = _assemble_small if small else _assemble_jit
    # Inside a caller's trace, large concrete arrays (a closed-over space's node coordinates, a Field's
    # coefficients) are read when the program runs instead of becoming constants of the caller's program.
    space_in, fields, tables, field_tables = fetch_arrays((space, fields, tables, field_tables))
    out = program(form, space_in, boundary, fields, tables, field_tables)
    if form.symmetric and form.kind == "bilinear":
        values = check_symmetric(out.values, out.pattern, form, space.plan, boundary)
        if values is not out.values:
            out = eqx.tree_at(lambda A: A.values, out, values)
    return out


def _assemble(form: Form, space: FunctionSpace, boundary, fields: dict, tables=None, field_tables=None):
    rule = space.quadrature_rule(boundary)
    if tables is None:
        tables = space.tables(rule)
    dtype = tables.dx.dtype
    if dtype != jnp.float64:
        check_float64("assemble")
    inputs = inputs_at(fields, space, rule, tables, form, field_tables)
    ne, nq = tables.dx.shape
    P = ne * nq
    x = tables.x.reshape(P, -1)
    n = None if tables.n is None else tables.n.reshape(P, -1)
    flat = {
        k: (v.reshape((P,) + v.shape[2:]), None if g is None else g.reshape((P,) + g.shape[2:]))
        for k, (v, g) in inputs.items()
    }

    in_axes = (0, None if n is None else 0, jax.tree_util.tree_map(lambda _: 0, flat))
    p = space.plan

    if form.kind == "functional":

        def point(xp, np_, fl):
            return kernel_output(form.kernel(w_at(xp, np_, fl)), form)

        vals = jax.vmap(point, in_axes)(x, n, flat).reshape(ne, nq)
        return jnp.sum(vals * tables.dx)

    uval, ugrad = unit_jets(space, dtype)
    C = p.ncomp
    # Abstract per-point arguments, to find which jet entries the kernel reads.
    pt = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (x, n, flat))
    jv = jax.ShapeDtypeStruct(uval.shape[1:], dtype), jax.ShapeDtypeStruct(ugrad.shape[1:], dtype)

    if form.kind == "linear":

        def kern(a, b, xp, np_, fl):
            return form.kernel(Jet(a, b), w_at(xp, np_, fl))

        def checks():
            check_linear(kern, (*jv, *pt), form, "v")
            check_no_constant_term(kern, (*jv, *pt), {"v": (0, 1)}, form)
            return dependencies(kern, (*jv, *pt))

        used = checked_kernel(form, (jv, pt), checks)
        tval, tgrad, keep = jet_select(space, dtype, 0 in used, 1 in used)
        if not keep:
            return jnp.zeros(p.ndofs, dtype)

        def point(xp, np_, fl):
            w = w_at(xp, np_, fl)
            return jax.vmap(lambda a, b: kernel_output(form.kernel(Jet(a, b), w), form))(tval, tgrad)

        def element_vectors(tables, x, n, flat):
            m = tables.dx.shape[0]
            L = jax.vmap(point, in_axes)(x, n, flat).reshape(m, nq, C, len(keep)) * tables.dx[..., None, None]
            be = _contract_linear(jet_columns(tables, keep), L)
            return jnp.broadcast_to(be, (m, C, p.nloc_scalar)).reshape(m, -1)

        def element_dofs(ids=None):  # component-major, (m, C nloc_scalar)
            d = (
                space.element_dofs(rule, ids)[:, None, :]
                + p.nscalar * jnp.arange(C, dtype=jnp.int32)[:, None]
            )
            return d.reshape(d.shape[0], -1)

        chunks = _chunking(space, rule, fields, ne * p.nloc * p.nloc)
        if chunks is not None:
            return _scatter_chunks(
                *chunks, element_vectors, element_dofs, form, fields, space, rule, nq, p.ndofs, dtype
            )
        be = element_vectors(tables, x, n, flat)
        return jax.ops.segment_sum(be.ravel(), element_dofs().ravel(), num_segments=p.ndofs)

    if form.kind != "bilinear":
        raise ValueError(f"unknown form kind {form.kind!r}.")
    element_matrices = bilinear_element_matrices(form, space, dtype, pt)
    if element_matrices is None:  # the kernel ignores the trial or the test function: a zero matrix
        return SparseMatrix(jnp.zeros(p.pattern.nnz, dtype), p.pattern, symmetric=form.symmetric)

    chunks = _chunking(space, rule, fields, ne * p.nloc * p.nloc)
    if chunks is not None:
        slots = functools.partial(space.element_slots, rule)
        values = _scatter_chunks(
            *chunks, element_matrices, slots, form, fields, space, rule, nq, p.pattern.nnz, dtype
        )
    else:
        K = element_matrices(tables, x, n, flat)
        slots = space.element_slots(rule)  # (ne, nloc * nloc)
        values = jax.ops.segment_sum(K.ravel(), slots.ravel(), num_segments=p.pattern.nnz)
    return SparseMatrix(values, p.pattern, symmetric=form.symmetric)


def w_at(xp, np_, fl):
    """The kernel's ``w`` at one point: the point, the normal (or None) and the named inputs' values."""
    return FormInputs(xp, np_, {k: QuadValue(v, g, k) for k, (v, g) in fl.items()})


def bilinear_element_matrices(form: Form, space: FunctionSpace, dtype, pt):
    """The element matrices of a bilinear form as a function, or None when the kernel ignores ``u`` or ``v``.

    ``pt`` holds the abstract per-point arguments ``(x, n, inputs)`` (``jax.ShapeDtypeStruct`` without the
    point axis); the kernel is checked on them (once per form and shapes). Returns
    ``element_matrices(tables, x (P, dim), n (P, dim) or None, inputs) -> (m, (C nloc)^2)``, component-major,
    for the ``m`` elements of ``tables`` (``P = m nq`` points). Shared by :func:`assemble` and
    :func:`igax.fem.element_matrices`.
    """
    p = space.plan
    C = p.ncomp
    uval, ugrad = unit_jets(space, dtype)
    jv = jax.ShapeDtypeStruct(uval.shape[1:], dtype), jax.ShapeDtypeStruct(ugrad.shape[1:], dtype)
    in_axes = (0, None if pt[1] is None else 0, jax.tree_util.tree_map(lambda _: 0, pt[2]))

    def kern(ua, ug, va, vg, xp, np_, fl):
        return form.kernel(Jet(ua, ug), Jet(va, vg), w_at(xp, np_, fl))

    used = checked_kernel(form, (jv, pt), lambda: check_bilinear_kernel(kern, jv, pt, form))
    uv, ug_, ku = jet_select(space, dtype, 0 in used, 1 in used)
    vv, vg_, kv = jet_select(space, dtype, 2 in used, 3 in used)
    if not ku or not kv:
        return None

    def kernel_matrices(x, n, flat):
        """(mu, mv, P): the kernel at every point for every pair of unit jets, jet pairs first.

        The inputs (points, normals, input values) are broadcast over the jet pairs explicitly, by
        :func:`igax.fem.forms._contract.broadcast_over_jets`, before the kernel is vmapped over jets and
        points:
        the cotangent of the inputs is then a sum over the jet pairs written as adds of slabs. As JAX's own
        transpose of vmapping a kernel over jets with unbatched inputs, it was a reduction, which XLA on CPU
        fuses with the contraction's cotangent feeding it into a library (YNNPACK) fusion that runs float64
        3-10x slower than plain loops (a third of a gradient's assembly time at 96 x 96 degree-2 elements,
        with the points outermost). The contraction takes ``M`` in this layout, jet pairs first.
        """
        bx, bn, bflat = broadcast_over_jets((x, n, flat), (vv.shape[0], uv.shape[0]))

        def k(ua, ug, va, vg, xp, np_, fl):
            return kernel_output(form.kernel(Jet(ua, ug), Jet(va, vg), w_at(xp, np_, fl)), form)

        over_points = jax.vmap(k, (None, None, None, None) + in_axes)
        over_u = jax.vmap(over_points, (0, 0, None, None) + (0, None if pt[1] is None else 0, 0))
        over_v = jax.vmap(over_u, (None, None, 0, 0) + (0, None if pt[1] is None else 0, 0))
        return over_v(uv, ug_, vv, vg_, bx, bn, bflat)  # (mv, mu, P)

    def element_matrices(tables, x, n, flat):
        # Rows are test functions, columns trial functions: K[i, j] = a(phi_j, phi_i), so that K @ u is the
        # form's action on u (the convention of every assembled matrix, which non-symmetric forms expose).
        m, nq = tables.dx.shape
        M = kernel_matrices(x, n, flat).reshape(C, len(kv), C, len(ku), m, nq) * tables.dx
        return _contract_jets_first(jet_columns(tables, kv), M, jet_columns(tables, ku)).reshape(m, -1)

    return element_matrices


# Element-matrix entries per chunk in chunked assembly (~8 MB of float64 values): large enough that the loop
# overhead is negligible, small enough that a chunk's temporaries stay in cache and are reused.
_CHUNK_ENTRIES = 2**20


def _chunking(space: FunctionSpace, rule: Rule, fields: dict, nentries: int):
    """``(tables_fn, field_fns, nchunks)`` when a volume assembly should run over element chunks.

    Assembled in one piece, every per-element temporary (vertex coordinates, Jacobians, element matrices:
    hundreds of MB at a million DOFs) is a fresh allocation on every call, and memory traffic and page faults
    dominate. A ``lax.scan`` over chunks computes tables and element matrices chunk by chunk and scatters them
    into the values carried by the loop, so the temporaries are a few MB, allocated once. Used when the space
    can compute the tables of a chunk (``chunked_tables``), and so can the space of every Field input
    (``field_fns``: by input name, None for a Field on the assembled space itself, whose tables are the
    chunk's).
    """
    if nentries < 2 * _CHUNK_ENTRIES:
        return None
    tables_fn = space.chunked_tables(rule)
    if tables_fn is None:
        return None
    field_fns = {}
    for name, f in fields.items():
        if isinstance(f, Field):
            if f.space.plan is space.plan:
                field_fns[name] = None
                continue
            fn = f.space.chunked_tables(rule)
            if fn is None:
                return None
            field_fns[name] = fn
    return tables_fn, field_fns, -(-nentries // _CHUNK_ENTRIES)


def _scatter_chunks(
    tables_fn, field_fns, nchunks, element_values, element_indices, form, fields, space, rule, nq, size, dtype
):
    """A vector of ``size`` values (CSR values or a load vector): ``lax.scan`` over element chunks.

    ``element_values(tables, x, n, inputs)`` gives the entries of a chunk's elements, ``(m, k)``, and
    ``element_indices(ids)`` their positions in the vector; each chunk's entries are scatter-added into the
    values the loop carries. A chunk's element ids, tables and positions are all formed inside the loop from
    its start (the space's ``chunked_tables`` and index maps): nothing of size nel need enter the program.
    """
    ne = rule.elements.shape[0]
    cs = -(-ne // nchunks)
    # Chunk i covers elements [start_i, start_i + cs); the last one ends at ne and overlaps its predecessor,
    # whose elements it repeats with dropped positions (size). No padding: inputs with values at the points
    # are sliced in place, constants are broadcast inside the loop (not materialised for all points).
    owned = (np.arange(nchunks) * cs).astype(np.int32)  # the first element each chunk owns
    starts = np.minimum(owned, ne - cs).astype(np.int32)

    def entries(start, own):
        ids = start + jnp.arange(cs, dtype=jnp.int32)
        t = tables_fn(ids)
        sliced = {
            k: v if callable(v) or isinstance(v, Field) else _chunk_of(jnp.asarray(v), start, cs, ne, nq)
            for k, v in fields.items()
        }
        ftabs = {k: t if fn is None else fn(ids) for k, fn in field_fns.items()}
        fl = {
            k: (
                v.reshape((cs * nq,) + v.shape[2:]),
                None if g is None else g.reshape((cs * nq,) + g.shape[2:]),
            )
            for k, (v, g) in inputs_at(sliced, space, rule, t, form, ftabs, ids).items()
        }
        K = element_values(t, t.x.reshape(cs * nq, -1), None, fl)  # (cs, k)
        where = jnp.where((ids >= own)[:, None], element_indices(ids), size)
        return where, K

    def body(values, chunk):
        where, K = entries(*chunk)
        return values.at[where.ravel()].add(K.ravel().astype(values.dtype), mode="drop"), None

    # Differentiated, the loop would store every chunk's tables as residuals (as much memory as assembling
    # in one piece) and write and read them back; recomputing a chunk's tables in the backward loop instead
    # is faster: degree 3 on 97 x 97 elements, gradient of assemble + solve 155 -> 132 ms (1 core), the
    # assembly VJP about one forward assembly. No effect on a forward pass.
    # Complex kernels or inputs give complex entries: the loop carries the dtype of a chunk's entries.
    dtype = jnp.result_type(dtype, jax.eval_shape(entries, starts[0], owned[0])[1].dtype)
    # The arrays the body closes over (index maps, geometry) enter the program once, outside the loop: left
    # in the body they would be written into the program once per copy of it (the forward loop, and the
    # backward one that recomputes it), e.g. 120 MB more program for a gradient of P1 at 1M DOFs.
    body = jax.checkpoint(
        hoist_constants(body, jnp.zeros(size, dtype), (starts[0], owned[0])), prevent_cse=False
    )
    values, _ = jax.lax.scan(body, jnp.zeros(size, dtype), (starts, owned))
    return values


def _chunk_of(v, start, cs: int, ne: int, nq: int):
    """The chunk's rows of an input with values at the points (ne, nq, ...); other inputs unchanged."""
    return jax.lax.dynamic_slice_in_dim(v, start, cs) if v.ndim >= 2 and v.shape[:2] == (ne, nq) else v


# One compilation per (form, space plan, boundary, input structure): array inputs are traced, callables and
# numbers are static. Inside a user's jit this is inlined; called eagerly it avoids op-by-op dispatch.
_assemble_jit = eqx.filter_jit(_assemble)
# Small assemblies (at most _SMALL_ENTRIES element-matrix entries: 2D degree 3 up to 16 x 16 elements) get
# cheap compiler options: compiling dominates there (0.47 -> 0.28 s CPU for a 4 x 4 degree-3 diffusion
# matrix), the run time stays below a millisecond.
_SMALL_ENTRIES = 2**16
_assemble_small = lazy_jit(eqx.filter_jit, _assemble)
