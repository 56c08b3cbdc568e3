"""Sum-factorised assembly of bilinear forms on single-patch spline spaces.

Every basis function of a spline patch is ``R_i = w_i B_i / W``, with ``B_i(u) = prod_k B_{i_k}(u_k)`` a
product of univariate B-splines and ``W = sum_i w_i B_i``. A form's kernel is bilinear, so at a quadrature
point it is ``u_jet^T M v_jet`` for a small matrix ``M`` (the kernel on unit jets, as in
:func:`igax.fem.assemble`), and the physical jet (value, gradient) of ``R_i`` is ``w_i T b_i``: ``b_i`` the
*reference* jet of ``B_i`` (its value and parametric derivatives), ``T`` a per-point matrix of the geometry
(``1 / W``, ``J^{-1} / W``, ``-J^{-T} grad W / W^2``). So

    A[i, j] = w_i w_j sum_q b_i(q)^T D_q b_j(q),      D_q = T^T M T |det J| w_q,

and every entry of ``b_i`` is a product of univariate values or derivatives: the sum over the points
factorises direction by direction (:mod:`igax.fem.forms._sumfact_ops`), and the result is written straight
into
the band of the global matrix with no scatter of element matrices. Per element, the element-wise path costs
``nq (C (p + 1)^d)^2`` multiply-adds and a scatter of ``(C (p + 1)^d)^2`` entries; this one about
``(p + 1)^(d + 2)`` per state and direction, states falling from ``(d + 1)^2`` to 4 as directions are
contracted. The matrix is the same to rounding (1e-15 relative). Derivatives (``grad``, ``jvp``, ``vmap``):
the matrix is linear in the kernel matrices ``D``, and the contraction of a chunk is a primitive whose
transpose is the transposed sum factorisation with the same tables (:mod:`igax.fem.forms._sumfact_band`);
the map from the kernel matrices ``M`` to ``D`` is a primitive too, whose transpose is written out
(:mod:`igax.fem.forms._sumfact_points_vjp`: ``Mbar = T Dbar T^T dx`` per point), and the rest of the
pointwise work (geometry, the inputs' evaluation, the kernel itself) keeps JAX's automatic derivatives.

Which path :func:`igax.fem.assemble` takes: this one for bilinear volume forms on a single-patch
:class:`~igax.fem.SplineSpace` without glued or collapsed sides, of degree >= ``_MIN_DEGREE`` in every
direction, once the element matrices would hold ``_MIN_ENTRIES`` entries or more (below that the element-wise
path is as fast or faster and compiles in half the time). Measured on 2 cores (see
``benchmarks/bench_assembly.py`` and ``docs/performance.md``). Boundary integrals, linear forms, functionals,
multi-patch and Lagrange spaces take the element-wise path, and so do complex kernels. Within this path, a
form whose kernel reads no point data (its constants may be traced) on an affine polynomial patch (a box,
rectangle or parallelepiped) takes the Kronecker assembly of :mod:`igax.fem.forms._sumfact_affine` (the same
matrix to rounding, 3.5x faster for 3D degree-2 elasticity); a space passed to ``jax.jit`` makes that choice
when the program runs.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._config import check_float64
from igax._held import fetch, fetch_arrays
from igax.fem.field import Field
from igax.fem.forms import _sumfact_affine as affine
from igax.fem.forms import _sumfact_weights2d as weights2d
from igax.fem.forms._kernel_checks import check_symmetric, mark_symmetric
from igax.fem.forms._sumfact_band2d import half_applies
from igax.fem.forms._sumfact_constant import constant_point_matrices
from igax.fem.forms._sumfact_csr import cached_layout, contract_csr
from igax.fem.forms._sumfact_geometry2d import polynomial_geometry
from igax.fem.forms._sumfact_ops import contract, materialize
from igax.fem.forms._sumfact_plan import SumFactPlan, scalar_steps, sumfact_plan
from igax.fem.forms._sumfact_points import (
    KernelStructure,
    _chunk_inputs,
    _input_shapes,
    _polynomial_weight,
    _prepare_inputs,
    _reference_columns,
    geometry,
    kernel_matrices,
    kernel_structure,
    reference_matrices,
)
from igax.fem.forms._sumfact_points_vjp import PointSpec, point_matrices
from igax.fem.forms.form import Form
from igax.fem.forms.inputs import _callable_input, _shape_message
from igax.solvers.sparse import SparseMatrix

__all__ = ["assemble_factorised", "applicable"]

# The rule for taking this path (see the module docstring): element-matrix entries nel (C nloc)^2 and degree.
_MIN_ENTRIES = 2**21
_MIN_DEGREE = 2
# Target size (entries) of the largest intermediate array of one chunk of direction-0 elements.
_CHUNK_ENTRIES = 2**21
# The same where the chunks write the CSR values (2D scalar, _sumfact_csr): no band output per chunk, and
# larger chunks won. Degree 3, 250k DOFs, CPU time, medians of 9 interleaved calls, load 13-15: 3 elements
# per chunk 393 ms, 6: 349, 8: 364, 12: 365 (the band path: 2: 397, 3: 429, 4: 413, 6: 374, 8: 375).
_CHUNK_ENTRIES_CSR = 2**22
# A polynomial 2D patch's geometry without the weight channel (see _chunk_matrices; off for A/B timings).
_POLY_GEOMETRY = True
# Scalar 2D patches: CSR values written per chunk, no band and no final gather (_sumfact_csr; off for A/B).
_DIRECT_CSR = True
# ... and for a constant symmetric kernel on a polynomial patch, the half band only (off for A/B timings).
_HALF_BAND = True
# A kernel that reads no point data on an affine polynomial patch: a sum of Kronecker products of univariate
# band matrices (_sumfact_affine; off for A/B timings and for tests of the general path on boxes).
_AFFINE = True


def applicable(space, form: Form, boundary=None) -> bool:
    """Whether :func:`assemble_factorised` handles ``form`` on ``space`` (a static decision)."""
    if form.kind != "bilinear" or boundary is not None:
        return False
    plan = space.plan
    if getattr(plan, "kind", None) != "spline" or not hasattr(plan, "univariate"):
        return False
    if plan.dim != plan.pdim or plan.nscalar != int(np.prod(plan.shape)):
        return False  # glued or collapsed sides: the dof map is not the control net
    return True


# -- assembly ------------------------------------------------------------------------------------------------
def _chunk_size(
    sf: SumFactPlan, sched: list, S0: int, nblocks: int, ninputs: int, direct: bool = False
) -> int:
    """Direction-0 elements per chunk: the largest array of one iteration near ``_CHUNK_ENTRIES``
    (``_CHUNK_ENTRIES_CSR`` where the chunks write the CSR values, ``direct``)."""
    d0 = sf.dirs[0]
    pts = d0.nq * int(np.prod(sf.nq[1:]))  # points of one direction-0 element
    peak = max(S0 * nblocks, 3 * sf.d * sf.d + ninputs) * pts  # kernel matrices, geometry
    pre, S = nblocks * pts, S0
    for st in sched[:-1]:
        dd = sf.dirs[st["k"]]
        pre //= dd.nv * dd.nq
        m = max(len(mb) for mb, _ in st["outs"])
        peak = max(peak, dd.nv * (m * dd.nq + (dd.p + 1) * dd.L) * pre, len(st["outs"]) * dd.n * dd.L * pre)
        pre *= dd.n * dd.L
        S = len(st["outs"])
    peak = max(peak, S * pre * (d0.p + 1 + d0.L))
    target = _CHUNK_ENTRIES_CSR if direct else _CHUNK_ENTRIES
    return int(max(1, min(d0.nv, target // max(peak, 1))))


def _pad_axis(a, axis: int, n: int):
    """``a`` with ``n`` copies of its last entry along ``axis`` appended (finite values there)."""
    if a is None or n == 0:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, n)
    return jnp.pad(a, widths, mode="edge")


def _chunk_matrices(form: Form, space, sf: SumFactPlan, prepared: dict, ks, chunks, blocks, w0):
    """``(chunk_D, windows)``: ``chunk_D(dir0_chunk, start, window) -> D (S, blocks, size nq_0, Nq_1, ...)``,
    the geometry, inputs and kernel matrices of the chunk's direction-0 elements (``w0``: see
    :func:`_values`), and the control-net rows of every chunk (``window``: one chunk's). The arrays that the
    chunks read are padded for the empty elements that complete the last chunk (``chunks.pad``)."""
    d0, d = sf.dirs[0], sf.d
    blk, pad = chunks.size, chunks.pad
    rational = w0 is None
    scale = None if rational else w0 * w0  # a polynomial patch: R_i = w0 B_i / W, W = w0
    pspec = PointSpec(ks.ku, ks.kv, rational, d, blocks, scale)
    # A polynomial patch whose weights are known equal (weights2d.Uniform: concrete, marked before this
    # program, or traced and found equal at run time): its geometry without the weight channel (2 cores, CPU
    # time: 2D degree 3, 250k DOFs, assembly 491 -> 421 ms; 3D degree-2 elasticity, 108k DOFs, closed over,
    # 1.29 -> 1.19 s, a loaded machine). Inside this program (filter_jit) the weights are always traced.
    poly_geo = _POLY_GEOMETRY and not rational and isinstance(w0, weights2d.Uniform)
    cp, wts = _pad_axis(space.control_points, 0, pad), _pad_axis(space.weights, 0, pad)
    padded = {}
    for name, item in prepared.items():
        if item[0] == "points":
            padded[name] = (
                "points",
                *[None if a is None else _pad_axis(a, a.ndim - d, pad * d0.nq) for a in item[1:]],
            )
        elif item[0] == "field":
            _, cw, vs, own = item
            own = None if own is None else tuple(_pad_axis(a, 0, pad) for a in own)
            padded[name] = ("field", _pad_axis(cw, 0, pad), vs, own)
        else:
            padded[name] = item

    # The control-net rows each chunk reads, cut out once for all chunks (one gather): the loop then takes
    # them as per-iteration inputs. Sliced inside the loop from arrays it closes over, the backward loop
    # carried a whole-array cotangent of each (zeros, update, add) through every iteration.
    sliced = [cp, wts] + [
        a for item in padded.values() if item[0] == "field" for a in (item[1], *(item[3] or ()))
    ]
    at = np.arange(chunks.nchunks)[:, None] * blk + np.arange(blk + d0.p)[None, :]
    windows = [jnp.asarray(a).at[at].get(mode="promise_in_bounds") for a in sliced]
    slot = {id(a): i for i, a in enumerate(sliced)}

    def chunk_D(d0c, start, window):
        dirs = [d0c] + sf.dirs[1:]

        def rows(a):  # the control-net rows of the chunk's elements
            return window[slot[id(a)]]

        # Geometry, inputs and kernel matrices each computed once into memory (materialize: XLA would fuse
        # them into every pass that reads them and recompute them there); D stays fused into the band's
        # first step, which reads each state once. Measured (2 cores, CPU time, bench_gradient --sumfact-ab):
        # assembly at 250k DOFs 1.14 -> 0.80 s (degree 3), 0.63 -> 0.32 s (degree 2).
        if poly_geo:  # a polynomial 2D patch with concrete weights: no weight channel
            geo = materialize(polynomial_geometry(dirs, rows(cp), w0, start).flat(), start)
        else:
            geo = materialize(geometry(dirs, rows(cp), rows(wts), jnp, start).flat(), start)
        inputs = materialize(_chunk_inputs(padded, dirs, start, geo, rows), start)
        M = materialize(kernel_matrices(form, ks, space.plan.ncomp, geo.x, inputs), start)
        if isinstance(M, np.ndarray) and d == 3:  # one sum per entry of D (_sumfact_constant)
            D = constant_point_matrices(M, ks.ku, ks.kv, geo, rational, d, blocks, scale)
        elif isinstance(M, np.ndarray):  # a concrete kernel matrix: only the geometry can be differentiated
            D, _, _ = reference_matrices(M, ks.ku, ks.kv, geo, rational, d, blocks, scale)
        else:  # linear in M with a written-out transpose (the inputs' derivatives)
            D = point_matrices(M, geo, pspec)
        return D.reshape(D.shape[:2] + (blk * d0.nq,) + sf.nq[1:])

    return chunk_D, windows


def _values(form: Form, space, fields: dict, csr_idx, w0, blocks, idx_sorted: bool = True):
    """CSR values of a bilinear form (traceable; ``w0``: the common weight of a polynomial patch or None;
    ``blocks``: the component blocks computed, see :func:`_blocks`; ``idx_sorted``: ``csr_idx`` is the
    plain, not the transposed index; ``csr_idx`` None: written per chunk where :mod:`._sumfact_csr` can)."""
    sf = sumfact_plan(space)
    p = space.plan
    d, C = sf.d, p.ncomp
    dtype = jnp.result_type(space.control_points.dtype, space.weights.dtype)
    prepared = _prepare_inputs(sf, space, fields, form)
    rational = w0 is None
    shapes = _input_shapes(prepared, d, p.dim, dtype)
    ks = kernel_structure(form, space, (p.dim,), shapes, dtype)
    if ks is None:
        return jnp.zeros(p.pattern.nnz, dtype)
    Ru = list(_reference_columns(ks.ku, None, rational, d, dry=True))
    Rv = list(_reference_columns(ks.kv, None, rational, d, dry=True))
    sched = scalar_steps(Ru, Rv, d)
    direct = csr_idx is None  # the chunks may write the CSR values (see below)
    chunks = sf.chunks(_chunk_size(sf, sched, len(Ru) * len(Rv), len(blocks), len(prepared), direct))
    chunk_D, windows = _chunk_matrices(form, space, sf, prepared, ks, chunks, blocks, w0)
    wts = space.weights if rational else None
    if csr_idx is None:  # the CSR values written chunk by chunk where the layout allows (_sumfact_csr)
        # A constant symmetric kernel on a polynomial patch: D symmetric at every point, so the matrix is
        # symmetric and the chunks compute the half band, the rest read mirrored (_sumfact_band2d).
        half = _HALF_BAND and not rational and _constant_symmetric(ks) and half_applies(sf.dirs, sched)
        layout = cached_layout(space, sf, chunks, blocks, half)
        if layout is not None:
            return contract_csr(sf, chunk_D, sched, chunks, len(blocks), dtype, layout, wts, windows, half)
        csr_idx = fetch(_csr_index(space, blocks, not idx_sorted))
    V = contract(sf, chunk_D, sched, chunks, len(blocks), dtype, wts, windows)
    # The index map behind a barrier: inside a user's jit it is a constant, and XLA would otherwise fold the
    # scatter of a constant cotangent through it (gradients of a fixed linear functional) at compile time.
    csr_idx = jax.lax.optimization_barrier(csr_idx)
    # The index map is built in range (csr_index): promised so, the gather and its transpose (a scatter into
    # the band) carry no bounds masks (a where over the nnz indices per call, ~5 % of an assembly VJP).
    return (
        V.reshape(-1)
        .at[csr_idx]
        .get(mode="promise_in_bounds", unique_indices=True, indices_are_sorted=C == 1 and idx_sorted)
    )


_values_jit = eqx.filter_jit(_values)


def _blocks(space, ks: KernelStructure | None = None) -> tuple:
    """The component blocks ``(c, c')`` computed: all, or the upper triangle when the kernel matrix is a
    concrete constant that is symmetric (``M[c, k, c', l] == M[c', l, c, k]``; then the lower blocks are
    the transposes, read from the upper ones: a third less work for 3D elasticity). A symmetric form whose
    kernel reads inputs computes every block, so ``symmetric=True`` is still verified on its values."""
    C = space.plan.ncomp
    if C > 1 and ks is not None and _constant_symmetric(ks):
        return tuple((a, b) for a in range(C) for b in range(a, C))
    return tuple((a, b) for a in range(C) for b in range(C))


_INDEX: dict = {}  # (plan, blocks) -> CSR index as a device array


def _csr_index(space, blocks, transposed: bool = False):
    """The band entry of every CSR entry; ``transposed``: of the transposed matrix's entries.

    The band holds ``a(phi_i, phi_j)`` with the trial index ``i`` first, while assembled matrices put test
    functions on rows (``A[i, j] = a(phi_j, phi_i)``): a form that is not declared symmetric reads the band
    through the transposed index (the pattern is structurally symmetric), which costs nothing at run time.
    """
    import weakref

    key = (id(space.plan), blocks, transposed)
    hit = _INDEX.get(key)
    if hit is not None and hit[0]() is space.plan:
        return hit[1]
    idx = sumfact_plan(space).csr(blocks)
    if transposed:
        idx = idx[space.plan.pattern.transpose()[1]]
    with jax.ensure_compile_time_eval():
        arr = jax.device_put(idx)
    while len(_INDEX) >= 4:
        _INDEX.pop(next(iter(_INDEX)))
    _INDEX[key] = (weakref.ref(space.plan), arr)
    return arr


def assemble_factorised(form: Form, space, fields: dict, *, force: bool = False):
    """The matrix of a bilinear volume form on a spline patch by sum factorisation, or None (not handled).

    Called by :func:`igax.fem.assemble` (same arguments and result); ``force`` skips the size rule.
    """
    if not applicable(space, form):
        return None
    p = space.plan
    if not force and (min(p.degrees) < _MIN_DEGREE or p.nel * p.nloc * p.nloc < _MIN_ENTRIES):
        return None
    sf = sumfact_plan(space)
    fields = _eager_inputs(form, space, sf, fields)
    w0 = _polynomial_weight(space.weights)
    # Concrete equal weights, marked as such for _values: inside its filter_jit every array is traced, and
    # only the mark tells it that the geometry may skip the weight channel. Before, a closed-over patch (the
    # README's pattern) evaluated the weight channel; a space passed as an argument did not (weights2d).
    w0 = None if w0 is None else weights2d.Uniform(w0)
    dtype = jnp.result_type(space.control_points.dtype, space.weights.dtype)
    shapes = _input_shapes(_prepare_inputs(sf, space, fields, form, abstract=True), sf.d, p.dim, dtype)
    ks = kernel_structure(form, space, (p.dim,), shapes, dtype)
    if ks is not None and ks.complex:
        return None  # a complex kernel: the element-wise path (complex values; here they would be real)
    if ks is None:
        return SparseMatrix(jnp.zeros(p.pattern.nnz, dtype), p.pattern, symmetric=form.symmetric)
    if dtype != jnp.float64:
        check_float64("assemble")
    blocks = _blocks(space, ks)
    transposed = not form.symmetric
    if _DIRECT_CSR and sf.d == 2 and p.ncomp == 1 and not transposed:
        idx = None  # _values writes the CSR values chunk by chunk (or fetches the index where it cannot)
    else:
        idx = fetch(_csr_index(space, blocks, transposed))  # not a constant of a user's jit (igax/_held.py)
    # Traced weights (the space a jit argument): the polynomial or the rational program chosen at run time
    # (the module _sumfact_weights2d; its program does not depend on the dimension). 3D degree-2 elasticity,
    # 108k DOFs, space as argument (2 cores, CPU time, medians, interleaved): 1.67 -> 1.23 s (9 reference-jet
    # states instead of 16), as fast as closed over (1.17 s).
    traced_weights = w0 is None and (weights2d.applies(space, sf) or _traced_3d(space, sf))
    # Decided on the space as given; then, inside a caller's trace, its large concrete arrays (control points
    # and weights: 24 MB at 1M degree-2 DOFs) are read when the program runs, not compiled in (igax/_held.py).
    space_in, fields = fetch_arrays((space, fields))

    def general(space_in, fields):
        if traced_weights:
            return weights2d.values_traced_weights(
                _values, form, space_in, fields, idx, blocks, not transposed
            )
        return _values_jit(form, space_in, fields, idx, w0, blocks, not transposed)

    values = None
    if _AFFINE and ks.uniform:
        # A kernel that reads no point data: on an affine polynomial patch the matrix is a sum of Kronecker
        # products (_sumfact_affine). 3D degree-2 elasticity, 108k DOFs, 2 cores: 0.94 -> 0.27 s.
        Ru = tuple(_reference_columns(ks.ku, None, False, sf.d, dry=True))
        Rv = tuple(_reference_columns(ks.kv, None, False, sf.d, dry=True))
        ap = affine.affine_plan(p, sf, tuple((ru, rv) for ru in Ru for rv in Rv))
        idx_sorted = p.ncomp == 1 and not transposed

        def band_index():  # the index the Kronecker values are read through (the general 2D one has none)
            return idx if idx is not None else fetch(_csr_index(space, blocks, transposed))

        def matrix(fields):
            return affine.uniform_matrix(form, ks, p.ncomp, p.dim, dtype, fields)

        if not any(isinstance(a, jax.core.Tracer) for a in (space.control_points, space.weights)):
            hit = affine.concrete_map(ap, space.control_points, space.weights)
            if hit is not None:
                J, w0_ = hit
                Dc = affine.point_constants(matrix(fields), ks, jnp.asarray(J, dtype), w0_, sf.d, blocks)
                values = affine.values_concrete(ap, Dc, band_index(), idx_sorted, dtype)
        else:
            values = affine.values_traced(
                ap, matrix, ks, blocks, band_index(), idx_sorted, general, space_in, fields
            )
    if values is None:
        values = general(space_in, fields)
    if form.symmetric and _constant_symmetric(ks):
        # A constant kernel matrix that is symmetric (verified above on the host, exactly as ``_blocks``
        # does) gives symmetric D = T^T M T dx at every point, hence a symmetric matrix by construction: the
        # run-time check (a gather over nnz values, ~10 % of a 3D elasticity assembly under jit) is skipped.
        mark_symmetric(form, p, None)
    elif form.symmetric:
        values = check_symmetric(values, p.pattern, form, p, None)
    return SparseMatrix(values, p.pattern, symmetric=form.symmetric)


def _traced_3d(space, sf: SumFactPlan) -> bool:
    """Whether a 3D patch's weights are traced (see :func:`assemble_factorised`)."""
    return sf.d == 3 and isinstance(space.weights, jax.core.Tracer)


def _constant_symmetric(ks: KernelStructure) -> bool:
    """Whether the kernel matrix is a concrete constant with ``M[c, k, c', l] == M[c', l, c, k]``."""
    M = ks.constant
    if M is None or list(ks.ku) != list(ks.kv):
        return False
    return bool(np.allclose(M, np.transpose(M, (2, 3, 0, 1)), rtol=1e-14, atol=1e-300))


def _eager_inputs(form: Form, space, sf: SumFactPlan, fields: dict) -> dict:
    """Callables of ``x`` evaluated at the points (outside any compiled program, as assemble does) and
    numbers made arrays; Fields and arrays as given."""
    p = space.plan
    expected = form.input_shapes(p.value_shape, p.dim)
    fields = dict(fields)
    x = None
    for name, f in fields.items():
        if isinstance(f, Field):
            continue
        if callable(f):
            if x is None:
                x = _points_elementwise(sf, space)
            fields[name] = _callable_input(f, x, name)
            want = None if expected is None else expected.get(name)
            got = fields[name].shape[2:] if fields[name].ndim >= 2 else ()
            if want is not None and got != want:
                what = f"a callable of x whose values have shape {got}"
                raise ValueError(_shape_message(form, name, what, want, *x.shape[1:], p))
        elif isinstance(f, (int, float, complex, np.number)):
            # A complex number stays complex (the kernel is then complex: the element-wise path).
            fields[name] = jnp.asarray(f, dtype=complex if np.iscomplexobj(f) else float)
    return fields


def _points_elementwise(sf: SumFactPlan, space):
    """Quadrature points as callables of x take them, ``(dim, nel, nq)``: NumPy for a concrete geometry."""
    leaves = (space.control_points, space.weights)
    if any(isinstance(a, jax.core.Tracer) for a in leaves):
        g = _geometry_jit(sf, space.control_points, space.weights)
        return jnp.moveaxis(sf.grid_to_element(jnp.moveaxis(g, 0, -1), jnp), -1, 0)
    g = geometry(sf.dirs, np.asarray(space.control_points), np.asarray(space.weights), np).x
    x = np.moveaxis(sf.grid_to_element(np.moveaxis(g, 0, -1), np), -1, 0).copy()
    x.setflags(write=False)
    return x


@eqx.filter_jit
def _geometry_jit(sf, cp, w):
    return geometry(sf.dirs, cp, w, jnp).x
