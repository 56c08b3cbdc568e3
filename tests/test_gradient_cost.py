"""Gradients through assemble -> DirichletBC -> solve on the fast paths, and what compiled programs hold.

The element contraction has written-out derivative rules (igax.fem.forms._contract), spline tables are
formed by sum
factorisation, large spline patches form their index maps inside the program, large assemblies run in element
chunks, and concrete tables, geometry and index maps sit behind an optimization barrier. Every path is checked
here at a small size with the large-problem switches forced: gradients against central finite differences
(1e-6) and the Taylor remainder (rate 2), the primitive against autodiff of its einsum form, and the compiled
programs against constant folding and nel-sized constants.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem, solvers
from igax.fem import library, mesh
from igax.fem.forms import _contract

_ASSEMBLE = sys.modules["igax.fem.forms.assembly"]
_SPLINE = sys.modules["igax.fem.spaces.spline"]


@pytest.fixture
def large_paths(monkeypatch):
    """The switches of large problems at small sizes: tables computed in the program, index maps of spline
    patches formed in it, and assembly in element chunks (a few elements each)."""
    monkeypatch.setattr(_ASSEMBLE, "_TABLE_ENTRIES_LIMIT", 0)
    monkeypatch.setattr(_SPLINE, "_INDEX_ENTRIES", 0)
    monkeypatch.setattr(_ASSEMBLE, "_CHUNK_ENTRIES", 400)
    jax.clear_caches()
    yield
    jax.clear_caches()


def _arr(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape))


# -- the contraction primitive ------------------------------------------------------------------------------
@pytest.mark.parametrize("C, einsum, broadcast", [(1, False, True), (2, False, True), (2, True, False)])
def test_contraction_derivatives_match_autodiff_of_the_einsum_form(C, einsum, broadcast):
    rng = np.random.default_rng(0)
    ne, nq, nloc = 7, 4, 5
    U = [_arr(rng, *((1, nq, nloc) if broadcast else (ne, nq, nloc))), _arr(rng, ne, nq, nloc)]
    V = [
        _arr(rng, ne, nq, nloc),
        _arr(rng, *((ne, 1, nloc) if broadcast else (ne, nq, nloc))),
        _arr(rng, ne, nq, nloc),
    ]
    M = _arr(rng, C, 2, C, 3, ne, nq)
    W = _arr(rng, ne, C, nloc, C, nloc)

    def fast(U, M, V):
        return _contract.contract_bilinear(U, M, V, einsum=einsum)

    ref = _contract.bilinear_einsum
    np.testing.assert_allclose(fast(U, M, V), ref(U, M, V), rtol=1e-13, atol=1e-12)

    tangents = ([_arr(rng, *u.shape) for u in U], _arr(rng, *M.shape), [_arr(rng, *v.shape) for v in V])

    @jax.jit
    def derivatives(U, M, V, tangents):
        out = []
        for f in (fast, ref):
            g = jax.grad(lambda U, M, V, f=f: jnp.sum(f(U, M, V) * W), argnums=(0, 1, 2))(U, M, V)
            out.append((g, jax.jvp(f, (U, M, V), tangents)[1]))
        return out

    got, want = derivatives(U, M, V, tangents)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-11)
    Mb = _arr(rng, 3, *M.shape)  # vmap of grad and grad of vmap, through the batching rule

    def batched(f):
        vg = jax.vmap(jax.grad(lambda m, U: jnp.sum(f(U, m, V) * W), argnums=(0, 1)), (0, None))(Mb, U)
        gv = jax.grad(lambda U: jnp.sum(jax.vmap(lambda m: f(U, m, V))(Mb) * W))(U)
        return vg, gv

    for a, b in zip(*(jax.tree.leaves(jax.jit(lambda f=f: batched(f))()) for f in (fast, ref)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-11)


# -- index maps and tables formed in the program ------------------------------------------------------------
_SPLINES = {
    "2d-degree2": lambda: fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(5, 7))),
    "2d-degree3-vector": lambda: fem.SplineSpace(
        fem.geometry.plate_with_hole().refine(degree=3, elements=3), shape=(2,)
    ),
    "3d-degree2-vector": lambda: fem.SplineSpace(
        fem.geometry.box().refine(degree=2, elements=(3, 2, 4)), shape=(3,)
    ),
    "glued-ring": lambda: fem.SplineSpace(fem.geometry.annulus().refine(degree=2, elements=(3, 8))),
}


@pytest.mark.parametrize("name", list(_SPLINES))
def test_spline_index_maps_and_tables_formed_in_the_program_equal_the_host_ones(name, large_paths):
    V = _SPLINES[name]()
    p, rule = V.plan, V.quadrature_rule()
    ids = jnp.array([0, 3, p.nel - 1, 1], jnp.int32)
    dofs, dofs_ids, slots, slots_ids = jax.jit(
        lambda ids: (
            V.element_dofs(rule),
            V.element_dofs(rule, ids),
            V.element_slots(rule),
            V.element_slots(rule, ids),
        )
    )(ids)
    want_slots = p.slot.reshape(p.nel, -1)
    np.testing.assert_array_equal(dofs, p.cell_dofs)
    np.testing.assert_array_equal(dofs_ids, p.cell_dofs[np.asarray(ids)])
    np.testing.assert_array_equal(slots, want_slots)
    np.testing.assert_array_equal(slots_ids, want_slots[np.asarray(ids)])
    host = V.host_tables(rule)
    for got, want in zip(jax.jit(lambda: V.tables(rule))(), host, strict=True):
        if want is not None:
            np.testing.assert_allclose(
                np.broadcast_to(got, want.shape), want, rtol=0, atol=1e-13 * np.abs(want).max()
            )
    chunk = jax.jit(V.chunked_tables(rule))(ids)
    for got, want in zip(chunk, host, strict=True):
        if want is not None:
            np.testing.assert_allclose(got, want[np.asarray(ids)], rtol=0, atol=1e-13 * np.abs(want).max())
    side = V.boundary_names[0]
    for got, want in zip(
        jax.jit(lambda: V.tables(V.quadrature_rule(side)))(),
        V.host_tables(V.quadrature_rule(side)),
        strict=True,
    ):
        if want is not None:
            np.testing.assert_allclose(
                np.broadcast_to(got, want.shape), want, rtol=0, atol=1e-13 * np.abs(want).max()
            )


# -- gradients through assemble -> DirichletBC -> solve on the forced large paths ---------------------------
@fem.functional
def _misfit(w):
    return (w.u - w.target) ** 2


def _check_gradient(loss, x0, d, h):
    """The gradient against central differences (1e-6) and the Taylor remainder (rate 2), and the JVP too.

    One compiled program gives the value, the gradient and the JVP; the differences reuse its value.
    """
    run = jax.jit(lambda x, t: (*jax.value_and_grad(loss)(x), jax.jvp(loss, (x,), (t,))[1]))
    f0, g, jvp = run(x0, d)
    slope = float(jnp.vdot(g, d))
    f = lambda x: float(run(x, d)[0])  # noqa: E731
    fd = (f(x0 + h * d) - f(x0 - h * d)) / (2 * h)
    assert abs(slope - fd) <= 1e-6 * abs(fd), (slope, fd)
    assert abs(float(jvp) - slope) <= 1e-10 * abs(slope)
    hs = (2000 * h, 1000 * h)
    rem = [abs(f(x0 + t * d) - float(f0) - t * slope) for t in hs]
    assert 3.5 < rem[0] / rem[1] < 4.5, rem


def _spline():
    return fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(5, 4)))


def _solve_misfit(V, A, *, rhs=1.0):
    u = fem.solve(A, fem.assemble(library.source, V, f=rhs), bc=fem.DirichletBC(V, None, 0.0))
    return fem.assemble(_misfit, V, u=u, target=lambda x: 0.01 * x[0])


def test_gradient_wrt_a_coefficient_field(large_paths):
    V = _spline()

    def loss(c):
        return _solve_misfit(V, fem.assemble(library.diffusion, V, kappa=fem.Field(V, jnp.exp(c))))

    rng = np.random.default_rng(1)
    _check_gradient(loss, 0.2 * _arr(rng, V.ndofs), _arr(rng, V.ndofs), 1e-5)


def test_gradient_wrt_values_at_the_quadrature_points(large_paths):
    V = _spline()
    shape = V.quadrature_points().shape[:2]

    def loss(k):
        return _solve_misfit(V, fem.assemble(library.diffusion, V, kappa=jnp.exp(k)))

    rng = np.random.default_rng(2)
    _check_gradient(loss, 0.2 * _arr(rng, *shape), _arr(rng, *shape), 1e-5)


def test_gradient_wrt_control_points(large_paths):
    V0 = _spline()
    c = jnp.asarray(np.linspace(1.0, 2.0, V0.ndofs))

    def loss(P):
        V = V0.with_geometry(control_points=P)
        return _solve_misfit(V, fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)), rhs=lambda x: x[1])

    rng = np.random.default_rng(3)
    P0 = V0.control_points
    _check_gradient(loss, P0, 0.01 * _arr(rng, *P0.shape), 1e-5)


@pytest.mark.parametrize("vector", [False, True])
def test_gradient_wrt_mesh_nodes(vector, large_paths):
    M = mesh.unit_square(4, cell="quad" if vector else "triangle")
    S = fem.LagrangeSpace(M, degree=1)
    coef = fem.Field(S, jnp.asarray(np.linspace(1.0, 2.0, S.ndofs)))
    rng = np.random.default_rng(4)
    interior = ~np.isin(np.arange(S.ndofs), S.boundary())
    d = jnp.asarray(rng.standard_normal(M.points.shape) * interior[:, None])  # moving inner nodes only

    def loss(X):
        if not vector:
            V = fem.LagrangeSpace(M, degree=1, points=X)
            return _solve_misfit(V, fem.assemble(library.diffusion, V, kappa=fem.Field(V, coef.coeffs)))
        V = fem.LagrangeSpace(M, degree=1, shape=(2,), points=X)
        A = fem.assemble(library.linear_elasticity(None, 0.3), V, E=fem.Field(S.with_points(X), coef.coeffs))
        b = fem.assemble(library.source, V, f=jnp.array([0.0, -1.0]))
        u = fem.solve(A, b, bc=fem.DirichletBC(V, "left", 0.0))
        return jnp.sum(u.coeffs**2)

    _check_gradient(loss, jnp.asarray(M.points, float), 0.02 * d, 1e-5)


def test_gradient_wrt_a_coefficient_of_vector_elasticity(large_paths):
    V = fem.SplineSpace(fem.geometry.plate_with_hole().refine(degree=2, elements=3), shape=(2,))
    S = fem.SplineSpace(fem.geometry.plate_with_hole().refine(degree=2, elements=3))

    def loss(c):
        A = fem.assemble(library.linear_elasticity(None, 0.3), V, E=fem.Field(S, jnp.exp(c)))
        b = fem.assemble(library.neumann, V, boundary="outer", g=jnp.array([1.0, 0.5]))
        u = fem.solve(
            A,
            b,
            bc=[
                fem.DirichletBC(V, "right", 0.0, component=0),
                fem.DirichletBC(V, "bottom", 0.0, component=1),
            ],
        )
        return jnp.sum(u.coeffs**2)

    rng = np.random.default_rng(5)
    _check_gradient(loss, 0.2 * _arr(rng, S.ndofs), _arr(rng, S.ndofs), 1e-5)


# -- what the compiled programs hold ------------------------------------------------------------------------
_HLO_TYPES = {"pred": "i1", "s32": "i32", "s64": "i64", "u8": "ui8"}


def _constants(text: str, compiled: bool, skip: str | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, shape) of the array constants of a program's text (StableHLO, or compiled HLO).

    With ``skip``, StableHLO constants whose location (``as_text(debug_info=True)``) names it are left out.
    """
    locs = dict(re.findall(r"^(#loc\d+) = loc\((.*)\)$", text, re.M)) if skip else {}
    out = []
    for line in text.splitlines():
        if compiled:
            m = re.search(r"= (\w+)\[([\d,]+)\]\S* constant\(", line)
            if m:
                out.append(
                    (_HLO_TYPES.get(m.group(1), m.group(1)), tuple(int(x) for x in m.group(2).split(",")))
                )
            continue
        m = re.search(r"stablehlo\.constant dense.*: tensor<([0-9x]+)x([a-z0-9]+)>", line)
        if m:
            loc = re.search(r"loc\((#loc\d+)\)", line)
            if skip and loc and skip in locs.get(loc.group(1), ""):
                continue
            out.append((m.group(2), tuple(int(x) for x in m.group(1).split("x"))))
    return out


def _p1_gradient_program():
    """The structure of the 1M-DOF case: a jitted gradient closing over a P1 space, a Field, BCs, a solve."""
    V = fem.LagrangeSpace(mesh.unit_square(24), degree=1)
    b = fem.assemble(library.source, V, f=1.0)
    bc = fem.DirichletBC(V, None, 0.0)

    def loss(c):
        A = fem.assemble(library.diffusion, V, kappa=fem.Field(V, c))
        return jnp.sum(fem.solve(A, b, bc=bc).coeffs ** 2)

    return V, jax.jit(jax.grad(loss))


def test_xla_folds_nothing_computed_from_a_closed_over_space(large_paths):
    # Before: the vertex coordinates of every cell (a gather of constants) were folded at compile time (4 s
    # and an XLA alarm at 2M cells) into new constants of nel rows. Behind the barrier, nothing is folded.
    V, f = _p1_gradient_program()
    lowered = f.lower(jnp.ones(V.ndofs))
    before = {(t, int(np.prod(s))) for t, s in _constants(lowered.as_text(), compiled=False)}
    after = _constants(lowered.compile().as_text(), compiled=True)
    new = [(t, s) for t, s in after if int(np.prod(s)) >= V.nel and (t, int(np.prod(s))) not in before]
    assert not new, f"constants folded by XLA: {new}"


def test_a_large_spline_program_holds_no_element_sized_index_constant(large_paths):
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(6, 5)))
    b = fem.assemble(library.source, V, f=1.0)

    def loss(c):
        A = fem.assemble(library.diffusion, V, kappa=fem.Field(V, c))
        return fem.assemble(_misfit, V, u=fem.Field(V, A @ b), target=0.0)

    text = jax.jit(jax.grad(loss)).lower(jnp.ones(V.ndofs)).as_text()
    per_element = [
        (t, s) for t, s in _constants(text, compiled=False) if t.startswith("i") and V.nel in s[:2]
    ]
    assert not per_element, f"element-indexed integer constants in the program: {per_element}"


def test_a_closed_over_spline_patch_and_load_vector_are_read_at_run_time(monkeypatch):
    # The README's pattern on a sum-factorised spline patch: inside the caller's jit, the patch's control
    # points and weights (the assembly's inputs) and the load vector (the solve's) are copied in when the
    # program runs (igax._held, forced here at a small size), not compiled in: at 1M degree-2 DOFs they were
    # 32 MB of constants. The solution is unchanged.
    from igax import _held, _native
    from igax.fem.forms import sumfact

    if not _native.available():
        pytest.skip("native kernels unavailable")
    monkeypatch.setattr(sumfact, "_MIN_ENTRIES", 0)
    monkeypatch.setattr(sumfact, "_AFFINE", False)  # the general path
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(7, 6)))
    b = fem.assemble(library.source, V, f=1.0)
    bc = fem.DirichletBC(V, None, 0.0)

    def forward(c):
        return fem.solve(fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)), b, bc=bc).coeffs

    c = jnp.asarray(np.linspace(1.0, 2.0, V.ndofs))
    jax.clear_caches()
    lowered = jax.jit(forward).lower(c)
    data = {V.control_points.shape, V.weights.shape, (V.ndofs,)}
    assert data <= {s for _, s in _constants(lowered.as_text(), compiled=False)}
    want = np.asarray(lowered.compile()(c))
    monkeypatch.setattr(_held, "_HELD_MIN_BYTES", 0)
    jax.clear_caches()
    lowered = jax.jit(forward).lower(c)
    text = lowered.as_text()
    assert "igax_fetch_held" in text
    assert not data & {s for _, s in _constants(text, compiled=False)}
    np.testing.assert_allclose(
        np.asarray(lowered.compile()(c)), want, rtol=1e-12, atol=1e-14 * np.abs(want).max()
    )
    jax.clear_caches()


def test_held_data_are_copies_and_only_jit_holds_them(monkeypatch):
    # A caller's array is held by content: it must be a copy, so that changing the array in place afterwards
    # changes neither the program that closed over it (JAX fixes a closed-over array when tracing) nor a later
    # program closing over an array equal to its old content. Eager grad and vmap make no constants, so they
    # hold nothing. (Forced at a small size; before, the second program read the changed array: 2x.)
    from igax import _held, _native

    if not _native.available():
        pytest.skip("native kernels unavailable")
    monkeypatch.setattr(_held, "_HELD_MIN_BYTES", 0)
    V = fem.LagrangeSpace(mesh.unit_square(6), degree=1)
    A = fem.assemble(library.diffusion, V, kappa=1.0)
    bc = fem.DirichletBC(V, None, 0.0)
    b = np.ones(V.ndofs)
    f = jax.jit(lambda s: fem.solve(A, b, bc=bc).coeffs * s)
    u1 = np.asarray(f(1.0))
    b[:] = 2.0
    g = jax.jit(lambda s: fem.solve(A, np.ones(V.ndofs), bc=bc).coeffs * s)
    np.testing.assert_allclose(np.asarray(g(1.0)), u1, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(f(1.0)), u1, rtol=1e-13)

    def loss(c, load):
        return jnp.sum(
            fem.solve(fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)), load, bc=bc).coeffs
        )

    held = len(_held._held)
    c = jnp.ones(V.ndofs)
    for k in range(3):  # a new load vector each time, closed over by eager transformations
        load = np.full(V.ndofs, 1.0 + k)
        jax.grad(lambda c, load=load: loss(c, load))(c)
        jax.vmap(lambda s, load=load: loss(c * s, load))(jnp.ones(2))
    assert len(_held._held) == held
    jax.clear_caches()


def test_with_jax_hoisting_switch_the_1m_program_holds_no_large_constant():
    # The documented pattern for large meshes (docs/performance.md): JAX_USE_SIMPLIFIED_JAXPR_CONSTANTS=True
    # passes everything a jitted function closes over as arguments of the executable. Same gradient. Left
    # out: the CSR pattern that the sparse product's own lowering rule writes into the program as constants
    # (igax/solvers/_spmv.py), which JAX cannot hoist.
    V, f = _p1_gradient_program()
    c = jnp.asarray(np.linspace(1.0, 2.0, V.ndofs))
    want = np.asarray(f(c))
    script = textwrap.dedent(
        f"""
        import json, sys
        import jax, jax.numpy as jnp, numpy as np
        jax.config.update("jax_enable_x64", True)
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_gradient_cost import _p1_gradient_program, _constants
        V, f = _p1_gradient_program()
        c = jnp.asarray(np.linspace(1.0, 2.0, V.ndofs))
        text = f.lower(c).as_text(debug_info=True)
        sizes = [int(np.prod(s)) for _, s in _constants(text, compiled=False, skip="igax_spmv")]
        print(json.dumps({{"largest": max(sizes, default=0), "grad": np.asarray(f(c)).tolist()}}))
        """
    )
    env = dict(os.environ, JAX_USE_SIMPLIFIED_JAXPR_CONSTANTS="True")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["largest"] < V.ndofs, got["largest"]  # only small tables (quadrature rules, 1D data) remain
    np.testing.assert_allclose(got["grad"], want, rtol=1e-10, atol=1e-14 * np.abs(want).max())


_FOLDED = {"stablehlo.reduce", "stablehlo.gather", "stablehlo.scatter", "stablehlo.select", "stablehlo.sort"}


def _computed_from_constants(module, min_entries: int) -> list[str]:
    """Reductions, gathers, scatters, selects and sorts of at least ``min_entries`` entries in a lowered
    program whose operands all derive from constants alone: what XLA evaluates at compile time (constant
    folding). Followed through calls (an argument counts as constant when every call passes one); an
    optimization barrier, a custom call and the arguments of the program end the derivation."""
    funcs = {
        str(op.attributes["sym_name"]).strip('"'): op
        for op in module.body.operations
        if op.operation.name == "func.func"
    }
    const_args = {name: set(range(len(f.regions[0].blocks[0].arguments))) for name, f in funcs.items()}
    const_args["main"] = set()

    def size(value) -> int:
        try:
            return int(np.prod(value.type.shape))
        except (AttributeError, ValueError):
            return 0

    while True:
        found, changed = [], False
        for name, f in funcs.items():
            block = f.regions[0].blocks[0]
            const = {a for i, a in enumerate(block.arguments) if i in const_args[name]}
            for op in block.operations:  # top level of the function; nested regions count as not constant
                kind = op.operation.name
                for inner in _nested_calls(
                    op
                ):  # a call in a loop or a branch: its arguments are not constant
                    callee = str(inner.attributes["callee"]).lstrip("@")
                    changed |= bool(const_args[callee])
                    const_args[callee] = set()
                operands = list(op.operands)
                if kind == "func.call":
                    callee = str(op.attributes["callee"]).lstrip("@")
                    drop = {i for i, v in enumerate(operands) if v not in const}
                    if drop & const_args[callee]:
                        const_args[callee] -= drop
                        changed = True
                    continue
                if (
                    kind in ("stablehlo.optimization_barrier", "stablehlo.custom_call")
                    or op.regions
                    and (kind != "stablehlo.reduce")
                ):
                    continue
                if all(v in const for v in operands):
                    const.update(op.results)
                    if kind in _FOLDED and max(map(size, operands), default=0) >= min_entries:
                        found.append(f"{name}: {kind} {[str(v.type) for v in operands]}")
        if not changed:
            return found


def _nested_calls(op):
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                if inner.operation.name == "func.call":
                    yield inner
                yield from _nested_calls(inner)


def test_xla_folds_no_reduction_over_a_closed_over_load_vector(large_paths):
    # Before: the solve's diagnostics (|b| and all(isfinite(b))) reduced the condensed load vector, which
    # depends on constants alone when b is closed over: XLA folded it at compile time (3.6 s and an alarm
    # for P1 at 1M DOFs). Behind a barrier, nothing of size ndofs is computed from constants alone.
    V, f = _p1_gradient_program()
    module = f.lower(jnp.ones(V.ndofs)).compiler_ir("stablehlo")
    assert not _computed_from_constants(module, V.ndofs)
    # A solve whose right-hand side is closed over: its diagnostics reduce b.
    A = fem.assemble(library.mass, V)
    b = np.linspace(1.0, 2.0, V.ndofs)
    g = jax.jit(lambda v: solvers.solve(A.with_values(v), b))
    assert not _computed_from_constants(g.lower(A.values).compiler_ir("stablehlo"), V.ndofs)


def test_sparse_products_name_their_pattern_instead_of_holding_it_as_a_constant(monkeypatch):
    # Large patterns are held by the native library and named by a key in the program (issue 15: the
    # 108 MB CSR pattern that every product wrote into a 1M-DOF program). Forced here at a small size: the
    # gradient (a forward product in the solve's residual check, a sampled product in the gradient) must
    # equal the one with the pattern as constants, and no nnz-sized index array may remain in the program.
    from igax import _native
    from igax.solvers import _spmv

    if not _native.available():
        pytest.skip("native kernels unavailable")

    def program():
        V, f = _p1_gradient_program()
        fem.assemble(library.diffusion, V, kappa=1.0)  # the set-up: symmetry verified once, eagerly
        return V, f

    V, f = program()
    c = jnp.asarray(np.linspace(1.0, 2.0, V.ndofs))
    want = np.asarray(f(c))
    nnz = V.pattern.nnz
    before = [s for t, s in _constants(f.lower(c).as_text(), compiled=False) if t in ("i32", "i64")]
    # the column indices, in the products of the residual check, the null-space diagnostic and the gradient
    assert before.count((nnz,)) == 3
    monkeypatch.setattr(_spmv, "_HELD_NNZ", 0)
    jax.clear_caches()
    V, f = program()
    text = f.lower(c).as_text()
    assert "igax_spmv_held_sample_f64" in text and "igax_spmv_held_forward_f64" in text
    assert not [s for t, s in _constants(text, compiled=False) if t in ("i32", "i64") and nnz in s]
    np.testing.assert_allclose(np.asarray(f(c)), want, rtol=1e-12, atol=1e-14 * np.abs(want).max())
    jax.clear_caches()


def test_chunked_assembly_reads_its_index_maps_at_run_time(large_paths, monkeypatch):
    # The arrays a chunked assembly's loop closes over enter the program once (igax.fem.spaces.base.
    # hoist_constants) and, large ones on the CPU, not as constants but copied in when the program runs
    # (igax._held; forced here at a small size). The gradient must not change.
    from igax import _held, _native

    if not _native.available():
        pytest.skip("native kernels unavailable")
    V, f = _p1_gradient_program()
    c = jnp.asarray(np.linspace(1.0, 2.0, V.ndofs))
    want = np.asarray(f(c))
    sizes = [s for _, s in _constants(f.lower(c).as_text(), compiled=False)]
    assert sizes.count((V.nel, 9)) == 1  # the CSR slots of the element matrices, once (was: twice)
    monkeypatch.setattr(_held, "_HELD_MIN_BYTES", 0)
    jax.clear_caches()
    V, f = _p1_gradient_program()
    text = f.lower(c).as_text()
    assert "igax_fetch_held" in text
    assert not [s for _, s in _constants(text, compiled=False) if s[:1] == (V.nel,)]
    # nor the closed-over node coordinates (the assembly's input) and load vector (the solve's): before, the
    # 1M P1 gradient compiled them in as constants (24 MB, 0.2 s of compilation)
    assert not [s for _, s in _constants(text, compiled=False) if s[:1] == (V.ndofs,)]
    np.testing.assert_allclose(np.asarray(f(c)), want, rtol=1e-12, atol=1e-14 * np.abs(want).max())
    jax.clear_caches()


# -- the host work of a gradient (benchmarks/bench_gradient.py, the 10k cases) -------------------------------
def _callbacks(compiled) -> int:
    """Host callbacks in a compiled program (the failure report's, in a branch taken only when a solve
    failed, included)."""
    text = compiled.as_text()
    # Python callbacks, and igax's in-place host calls (igax/solvers/_host_call.py) where its native
    # library is built.
    return text.count('custom_call_target="xla_ffi_python_cpu_callback"') + text.count(
        'custom_call_target="igax_host_call"'
    )


def test_a_gradient_adds_one_host_solve_with_the_forwards_factorisation():
    # The structure of the 10k gradient benchmark at a small size: a degree-2 spline, kappa a Field, the
    # direct solver, a jitted loss closing over the space. The gradient is exact (central differences, Taylor
    # rate 2) and its host work is the forward's plus one solve with the same factorisation: one callback
    # more, no second factorisation, no second analysis.
    method = "pardiso" if "pardiso" in solvers.available_methods() else "superlu"
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(5, 4)))
    b = fem.assemble(library.source, V, f=1.0)
    bc = fem.DirichletBC(V, None, 0.0)
    fem.assemble(library.diffusion, V, kappa=1.0)  # the eager set-up (symmetry verified once)

    def loss(c):
        A = fem.assemble(library.diffusion, V, kappa=fem.Field(V, jnp.exp(c)))
        return jnp.sum(fem.solve(A, b, bc=bc, method=method).coeffs ** 2)

    rng = np.random.default_rng(6)
    c0, d = 0.2 * _arr(rng, V.ndofs), _arr(rng, V.ndofs)
    forward, grad = (jax.jit(f).lower(c0).compile() for f in (loss, jax.grad(loss)))
    assert _callbacks(grad) == _callbacks(forward) + 1
    jax.block_until_ready((forward(c0), grad(c0)))  # the pattern analysed
    stats = solvers.solver_stats
    counts = []
    for f in (forward, grad):
        stats.reset()
        jax.block_until_ready(f(c0 + 0.01 * (len(counts) + 1)))  # new values: a new factorisation
        counts.append((stats.analyses, stats.factorizations, stats.solves, stats.rhs))
    assert counts == [(0, 1, 1, 1), (0, 1, 2, 2)], counts
    _check_gradient(loss, c0, d, 1e-5)


def test_small_pardiso_systems_run_on_one_mkl_thread_and_solve_alike(monkeypatch):
    # Below SINGLE_THREAD_NNZ stored entries every phase of a PARDISO plan runs on one MKL thread (set for
    # the calling thread only, and restored): the solutions equal those of MKL's own thread count and
    # scipy's, and the gradient through a solve stays exact.
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    from igax.solvers import _pardiso
    from igax.solvers.sparse import CSRPattern

    if not _pardiso.available() or _pardiso._mkl_set_threads_local() is None:
        pytest.skip("PARDISO (pypardiso, MKL's thread control) unavailable")
    rng = np.random.default_rng(7)
    n = 300
    R = sp.random(n, n, density=0.02, random_state=8)
    K = (R + R.T + sp.diags(np.full(n, 8.0))).tocsr()  # symmetric, diagonally dominant
    K.sort_indices()
    pattern = CSRPattern(K.indptr, K.indices, K.shape)
    B = rng.standard_normal((n, 2))
    want = spla.spsolve(K.tocsc(), B)
    if _pardiso._mkl_set_threads_local() is None or _pardiso._mkl_max_threads() is None:
        pytest.skip("mkl_rt lacks MKL_Set_Num_Threads_Local or MKL_Get_Max_Threads")
    get_threads = _pardiso._mkl_set_threads_local()  # (returns the previous setting: set it back at once)
    before = get_threads(0)
    get_threads(before)
    xs = []
    for limit in (10**9, 0):  # one thread / MKL's own count
        monkeypatch.setattr(_pardiso, "SINGLE_THREAD_NNZ", limit)
        plan = _pardiso.PardisoPlan(pattern, "sym", K.data)
        # (a large plan records the caller's MKL count when created: tests/test_pardiso_threads.py)
        assert plan.threads == (1 if limit else max(int(_pardiso._mkl_max_threads()()), 1))
        factor = plan.factor(K.data)
        xs.append(factor.solve(B, False))
        factor.free()
        plan.destroy()
        assert get_threads(0) == before  # the calling thread's setting is restored
        get_threads(before)
    for x in xs:
        np.testing.assert_allclose(x, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
