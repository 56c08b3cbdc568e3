"""Memory of the direct solve path: how many factorisations exist at once, what the PARDISO plan copies,
that a solving program holds no nnz-sized row table, that the host reads the values in place and that the
condensation zeroes them in place."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from igax.solvers import SparseMatrix, _backends, available_methods, linear_solve, solve
from igax.solvers._backends import FactorCache
from igax.solvers.backends import HostBackend, get_backend, register_backend, unregister_backend
from igax.solvers.backends.base import Factor
from igax.solvers.sparse import CSRPattern


class _Counted(Factor):
    alive = 0

    def __init__(self):
        type(self).alive += 1

    def free(self):
        type(self).alive -= 1


@pytest.mark.parametrize("maxsize", [1, 2, 3])
def test_cache_frees_before_it_builds(maxsize):
    """At most ``maxsize`` factors exist at any moment, also while a new one is being computed."""
    cache = FactorCache(maxsize)
    seen = []

    def build():
        seen.append(_Counted.alive)  # factors alive while this one is computed
        return _Counted()

    _Counted.alive = 0
    for k in range(6):
        cache.factor(("key", k), build)
    assert seen == [min(k, maxsize - 1) for k in range(6)]
    assert _Counted.alive == maxsize == len(cache)
    # a hit builds nothing and keeps the entry; a miss by token (evicted) rebuilds within the bound
    cache.factor(("key", 5), build)
    assert len(seen) == 6
    cache.get(1, lambda: (("key", 0), build))
    assert seen[-1] == maxsize - 1 and _Counted.alive == maxsize
    cache.clear()
    assert _Counted.alive == 0


def _laplacian_2d(n):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (n, n))
    I = sp.identity(n)
    return (sp.kron(T, I) + sp.kron(I, T)).tocsr()


@pytest.mark.skipif("pardiso" not in available_methods(), reason="pypardiso is not installed")
@pytest.mark.parametrize("kind", ["spd", "sym"])
def test_pardiso_plan_upper_triangle(kind):
    """The plan hands PARDISO the upper triangle (SciPy's triu) through a boolean mask, and solves with it."""
    from igax.solvers import _pardiso

    K = _laplacian_2d(9) + sp.diags(np.linspace(0.1, 1.0, 81))
    K.sort_indices()
    pattern = CSRPattern(K.indptr, K.indices, K.shape)
    plan = _pardiso.PardisoPlan(pattern, kind, K.data)
    U = sp.triu(K).tocsr()
    assert plan.src is None and plan.upper is not None and plan.upper.dtype == bool
    np.testing.assert_array_equal(plan.ia, U.indptr)
    np.testing.assert_array_equal(plan.ja, U.indices)
    f = plan.factor(K.data * 2.0)
    np.testing.assert_array_equal(f.data, 2.0 * U.data)
    b = np.arange(81.0)[:, None]
    x = f.solve(b, False)
    np.testing.assert_allclose(x[:, 0], sp.linalg.spsolve((2.0 * K).tocsc(), b[:, 0]), rtol=1e-12)
    assert 0 < plan.iparm[17] <= 81 * 81  # the factor's nonzeros, reported (iparm[17] = -1 asks for them)
    f.free()


def test_solving_program_holds_no_row_table():
    """A jitted solve embeds no nnz-sized int32 constant (the row of every slot): the diagnostic that needs
    rows forms them from the row pointers; and that diagnostic still finds a constant null space."""
    K = _laplacian_2d(30)
    A = SparseMatrix.from_scipy(K, symmetric=True)
    closed = jax.make_jaxpr(lambda v: solve(A.with_values(v), jnp.ones(900), method="superlu"))(A.values)
    assert not [c for c in _consts(closed) if np.shape(c) == (A.nnz,) and np.asarray(c).dtype.kind in "iu"]
    # A pure Neumann Laplacian (rows sum to zero) with an inconsistent load: the failure names the null space.
    N = K - sp.diags(np.asarray(K.sum(axis=1)).ravel())
    N.eliminate_zeros()
    An = SparseMatrix.from_scipy(N.tocsr(), symmetric=True)
    from igax.solvers import linear_solve

    r = jax.jit(lambda v: linear_solve(An.with_values(v), jnp.ones(900), method="superlu", throw=False))(
        An.values
    )
    assert int(r.status) == 1 and int(r.cause) == 1  # singular, cause: constant null space


def _consts(closed):
    """The constants of a closed jaxpr and of every jaxpr nested in its equations."""
    out = list(closed.consts)
    stack = [closed.jaxpr]
    while stack:
        jaxpr = stack.pop()
        for eqn in jaxpr.eqns:
            for p in eqn.params.values():
                for q in p if isinstance(p, (tuple, list)) else [p]:
                    if isinstance(q, jax.extend.core.ClosedJaxpr):
                        out += list(q.consts)
                        stack.append(q.jaxpr)
                    elif isinstance(q, jax.extend.core.Jaxpr):
                        stack.append(q)
    return out


@pytest.mark.skipif("pardiso" not in available_methods(), reason="pypardiso is not installed")
@pytest.mark.parametrize("kind", ["sym", "gen"])
def test_pardiso_plan_missing_diagonal(kind):
    """A saddle point [[K, B^T], [B, 0]] whose zero block stores no diagonal: explicit zeros are added (the
    slot table path), and the solve matches SciPy's."""
    from igax.solvers import _pardiso

    K = _laplacian_2d(6)
    B = sp.csr_matrix(np.ones((1, 36)))  # a mean-value constraint (a Lagrange multiplier)
    S = sp.bmat([[K, B.T], [B, None]]).tocsr()
    S.sort_indices()
    pattern = CSRPattern(S.indptr, S.indices, S.shape)
    assert (pattern.diagonal_slots < 0).sum() == 1
    plan = _pardiso.PardisoPlan(pattern, kind, S.data)
    assert plan.upper is None and plan.src is not None
    rhs = np.r_[np.linspace(-1.0, 1.0, 36), 0.5]
    x = plan.factor(S.data).solve(rhs[:, None], False)[:, 0]
    np.testing.assert_allclose(x, sp.linalg.spsolve(S.tocsc(), rhs), rtol=1e-9, atol=1e-12)


def test_homogeneous_condition_leaves_out_the_product():
    """u = 0 known at trace time: the condensation has no product A g (one sparse product fewer in the
    program: the residual check's and the null-space diagnostic's only); the solution equals the general
    path's (a tiny nonzero value)."""
    from igax import fem
    from igax.fem import library

    V = fem.LagrangeSpace(fem.mesh.unit_square(12), degree=1)
    A = fem.assemble(library.diffusion, V, kappa=1.0)
    b = fem.assemble(library.source, V, f=1.0)

    def program(value):
        bc = fem.DirichletBC(V, None, value)
        f = jax.jit(lambda v: fem.solve(A.with_values(v), b, bc=bc, method="superlu").coeffs)
        return f, f.lower(A.values).as_text().count("igax_spmv_forward")

    f0, n0 = program(0.0)
    f1, n1 = program(1e-300)  # not zero: the general path, the same numbers to rounding
    assert (n0, n1) == (2, 3)
    np.testing.assert_allclose(f0(A.values), f1(A.values), rtol=1e-14, atol=1e-300)
    # the gradient through the homogeneous path: A.values -> sum(u^2), against central differences
    loss = lambda v: jnp.sum(f0(v) ** 2)  # noqa: E731
    g = jax.grad(loss)(A.values)
    d = jnp.asarray(np.random.default_rng(1).standard_normal(A.nnz)) * A.values
    h = 1e-6
    fd = (loss(A.values + h * d) - loss(A.values - h * d)) / (2 * h)
    assert abs(fd - jnp.vdot(g, d)) <= 1e-7 * abs(fd)


def test_pattern_keeps_no_row_or_transpose_tables():
    """The README pattern (an eager assembly, whose symmetry check reads the transpose permutation, then a
    jitted solve with a Dirichlet condition) leaves no nnz-sized table cached on the pattern: ``rows`` (int32)
    and ``_transpose`` (a pattern and an int64 permutation) were 400 MB for 1M degree-2 spline dofs, resident
    through the factorisation."""
    from igax import fem
    from igax.fem import library

    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(6, 5)))
    A = fem.assemble(library.diffusion, V, kappa=1.0)
    b = fem.assemble(library.source, V, f=1.0)
    bc = fem.DirichletBC(V, None, 0.0)
    u = jax.jit(lambda v: fem.solve(A.with_values(v), b, bc=bc).coeffs)(A.values)
    assert not {"rows", "_transpose"} & set(A.pattern.__dict__)
    # the same solution as SciPy's (the masks and diagonal slots came without the row table)
    Ac, bcv = bc.condense(A, b)
    ref = sp.linalg.spsolve(Ac.to_scipy().tocsc(), np.asarray(bcv))
    np.testing.assert_allclose(np.asarray(u), ref, rtol=1e-10, atol=1e-14)
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.pattern.indptr))
    slots = np.flatnonzero(rows == A.pattern.indices)
    np.testing.assert_array_equal(A.pattern.diagonal_slots, slots)


def test_symmetry_check_names_the_entry_without_the_row_table():
    from igax.fem import library
    from igax.fem.forms._kernel_checks import check_symmetric

    M = sp.csr_matrix(np.arange(1.0, 10.0).reshape(3, 3))
    M = M + M.T
    M[1, 2] += 0.5  # the first asymmetric slot is (1, 2)
    pattern = CSRPattern(M.indptr, M.indices, M.shape)

    class Plan:  # a stand-in for a space's plan (verified triples are kept in a weak dictionary)
        pass

    with pytest.raises(ValueError, match=r"A\[j, i\]\| = 5\.000e-01 at \(i, j\) = \(1, 2\)"):
        check_symmetric(np.asarray(M.data), pattern, library.laplace, Plan(), None)
    assert "_transpose" not in pattern.__dict__


class _Recording(HostBackend):
    """SuperLU, recording the address of every values array its factorisations are given."""

    name = "recording-example"
    copies_values = True  # (SuperLU converts to CSC: it keeps no reference to values)
    seen: list = []

    def factor(self, pattern, values, kind, options):
        type(self).seen.append((values.__array_interface__["data"][0], values.flags.owndata))
        return get_backend("superlu").factor(pattern, values, kind, options)


class _RecordingCopy(_Recording):
    name = "recording-copy-example"
    copies_values = False  # the default: a backend may keep values, so it gets a copy


@pytest.mark.parametrize("cls", [_Recording, _RecordingCopy])
def test_host_callbacks_read_the_values_in_place(cls):
    """The factorisation and solve callbacks read the matrix values where the program keeps them (through
    pure_callback they got a copy each: 200 MB for 1M degree-2 spline dofs, resident while PARDISO
    factorised), and a backend that may keep them gets its own copy. The solution is SciPy's."""
    register_backend(cls(), replace=True)
    try:
        K = _laplacian_2d(12) + sp.diags(np.linspace(0.5, 1.0, 144))
        A = SparseMatrix.from_scipy(K.tocsr(), symmetric=True)
        b = jnp.linspace(-1.0, 1.0, 144)
        f = jax.jit(lambda v: linear_solve(A.with_values(v), b, method=cls.name, throw=False).value)
        text = f.lower(A.values).as_text()  # (throw=False: no callback that raises a failure)
        assert text.count("igax_host_call") == 2 and "python_cpu_callback" not in text
        cls.seen = []
        _backends.clear_cache()
        x = f(A.values)
        np.testing.assert_allclose(np.asarray(x), sp.linalg.spsolve(K.tocsc(), np.asarray(b)), rtol=1e-12)
    finally:
        unregister_backend(cls.name)
    # one factorisation, given a view of the program's buffer, or a copy of its own
    assert [owned for _, owned in cls.seen] == [not cls.copies_values]


def test_host_call_under_vmap_and_errors():
    """A batch of matrices (vmap over the values) is one host call with a leading batch axis, as
    pure_callback's expand_dims; a failing host function raises from the program with its message."""
    from igax.solvers._host_call import host_call

    K = (_laplacian_2d(5) + sp.identity(25)).tocsr()
    A = SparseMatrix.from_scipy(K, symmetric=True)
    scales = jnp.array([1.0, 2.0, 4.0])
    X = jax.jit(jax.vmap(lambda s: solve(A.with_values(s * A.values), jnp.ones(25), method="superlu")))(
        scales
    )
    ref = sp.linalg.spsolve(K.tocsc(), np.ones(25))
    np.testing.assert_allclose(np.asarray(X), ref[None] / np.asarray(scales)[:, None], rtol=1e-12)

    def broken(x):
        raise ValueError("no such thing")

    out = [jax.ShapeDtypeStruct((), jnp.float64)]
    f = jax.jit(lambda x: host_call(broken, out, x, ident="broken-example")[0])
    with pytest.raises(Exception, match="igax host call failed: ValueError: no such thing"):
        jax.block_until_ready(f(jnp.ones(3)))


def test_condensation_zeroes_the_values_in_place():
    """A Dirichlet condition zeroes its rows and columns by a scatter into the values' buffer (int32 slots,
    diagonals kept): the solving program's temporaries hold one copy of the values (the argument is not
    donated), where the select of a mask (plus the null-space diagnostic's slot rows and absolute values)
    held three. The solution equals the mask path's."""
    from igax import fem
    from igax.fem import library
    from igax.fem.bc import condense

    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(40, 40)))
    A = fem.assemble(library.diffusion, V, kappa=1.0)
    b = fem.assemble(library.source, V, f=1.0)
    bc = fem.DirichletBC(V, None, 0.0)
    slots, diag = bc._masks(A.pattern)
    assert slots.dtype == np.int32 and not np.isin(diag, slots).any() and slots.size < A.nnz // 4
    f = jax.jit(lambda v: fem.solve(A.with_values(v), b, bc=bc, method="superlu").coeffs)
    temp = f.lower(A.values).compile().memory_analysis().temp_size_in_bytes
    assert temp < 1.5 * A.nnz * 8, temp / (A.nnz * 8)
    # against the mask path (all constrained slots, diagonals set back)
    mask = np.zeros(A.nnz, bool)
    mask[slots] = True
    mask[diag] = True
    for g in (0.0, 0.25):
        values = jnp.full(bc.dofs.shape, g)
        Ac, bc_vec = condense(A, b, bc.dofs, values, slots, diag)
        Am, bm = condense(A, b, bc.dofs, values, mask, diag)
        np.testing.assert_array_equal(np.asarray(Ac.values), np.asarray(Am.values))
        np.testing.assert_allclose(np.asarray(bc_vec), np.asarray(bm), rtol=1e-15, atol=1e-15)


def test_large_factorisation_returns_free_memory_first(monkeypatch):
    """Before a factorisation of at least _TRIM_NNZ entries the heaps' free memory goes back to the system
    (after the cache freed the factor it displaces); smaller ones do not pay for it."""
    calls = []
    monkeypatch.setattr(_backends, "_release_free_memory", lambda: calls.append(len(_backends.cache)))
    K = _laplacian_2d(8).tocsr()
    A = SparseMatrix.from_scipy(K, symmetric=True)
    _backends.set_cache_size(1)
    try:
        monkeypatch.setattr(_backends, "_TRIM_NNZ", A.nnz + 1)
        solve(A, jnp.ones(64), method="superlu")
        assert calls == []
        monkeypatch.setattr(_backends, "_TRIM_NNZ", A.nnz)
        solve(A.with_values(2.0 * A.values), jnp.ones(64), method="superlu")
        assert calls == [0]  # the previous factor was freed before
    finally:
        _backends.set_cache_size(4)
    assert _backends._malloc_trim() is not None or not sys.platform.startswith("linux")
