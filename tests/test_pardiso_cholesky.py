"""PARDISO: Cholesky first for matrices flagged symmetric, Bunch-Kaufman when they are not positive definite,
and the symbolic analysis started from the pattern alone while a program is traced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl
from test_sumfact_vjp import _fd_and_taylor  # the same FD and Taylor-rate check

from igax import fem, solvers
from igax.fem import library
from igax.solvers import SparseMatrix

pytestmark = pytest.mark.skipif(
    "pardiso" not in solvers.available_methods(), reason="pypardiso is not installed"
)


@pytest.fixture(autouse=True)
def cholesky_first():
    """Cholesky first is the default; a test that turns it off gets it back on after."""
    previous = solvers.set_cholesky_first(True)
    yield
    solvers.set_cholesky_first(previous)


def test_cholesky_first_is_on_by_default_and_can_be_turned_off():
    from igax.solvers.backends import pardiso

    assert pardiso._CHOLESKY_FIRST == [True]  # (the fixture restores whatever a test set)
    assert solvers.set_cholesky_first(False) is True
    A = SparseMatrix.from_scipy(_laplacian(6), symmetric=True)
    x = solvers.solve(A, jnp.ones(36), method="pardiso")
    np.testing.assert_allclose(np.asarray(A.to_scipy() @ np.asarray(x)), np.ones(36), atol=1e-12)
    assert _plans(A.pattern) == {"sym": -2}  # Bunch-Kaufman, as before the switch existed
    with pytest.raises(TypeError, match="on must be True or False"):
        solvers.set_cholesky_first("yes")


def _laplacian(n, shift=0.0):
    """The 5-point Laplacian on an n x n grid minus ``shift`` times the identity (eigenvalues in (0, 8))."""
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (n, n))
    I = sp.identity(n)
    return (sp.kron(T, I) + sp.kron(I, T) - shift * sp.identity(n * n)).tocsr()


def _plans(pattern):
    """``{kind: mtype}`` of the cached PARDISO plans of ``pattern``."""
    from igax.solvers.backends import pardiso

    return {k[1]: p.mtype for k, p in pardiso._plans.items() if k[0] == pattern._digest}


def _solve_and_check(M, b):
    A = SparseMatrix.from_scipy(M, symmetric=True)  # flagged symmetric, not positive definite
    x = solvers.solve(A, jnp.asarray(b), method="pardiso")
    ref = spl.spsolve(M.tocsc(), b)
    assert np.linalg.norm(np.asarray(x) - ref) <= 1e-10 * np.linalg.norm(ref)
    return A


def test_spd_matrix_flagged_symmetric_gets_cholesky():
    M = _laplacian(21)
    b = np.random.default_rng(0).standard_normal(M.shape[0])
    A = _solve_and_check(M, b)
    assert _plans(A.pattern) == {"spd": 2}  # no Bunch-Kaufman analysis was needed


@pytest.mark.parametrize(
    "case",
    [
        "indefinite",  # positive diagonal (4 - 0.5): Cholesky is tried and meets a negative pivot
        "negative_definite",  # negative diagonal: Bunch-Kaufman at once
        "saddle",  # [[K, B^T], [B, 0]] with the zero block stored: zero diagonal, Bunch-Kaufman at once
    ],
)
def test_not_positive_definite_falls_back_to_bunch_kaufman(case):
    from igax.solvers.backends import pardiso

    n = 19
    if case == "indefinite":
        M = _laplacian(n, shift=0.5)
    elif case == "negative_definite":
        M = -_laplacian(n)
    else:
        K = _laplacian(n)
        B = sp.csr_matrix(np.random.default_rng(1).uniform(0.5, 1.5, (3, n * n)))
        C = sp.bmat([[K, B.T], [B, None]]).tocoo()
        m = n * n + np.arange(3)  # the zero block's diagonal, stored as explicit zeros
        M = sp.csr_matrix((np.r_[C.data, np.zeros(3)], (np.r_[C.row, m], np.r_[C.col, m])), shape=C.shape)
        assert M.nnz == C.nnz + 3
    assert M.diagonal().min() <= 0 or case == "indefinite"
    b = np.random.default_rng(2).standard_normal(M.shape[0])
    before = solvers.solver_stats.factorizations
    A = _solve_and_check(M, b)
    assert _plans(A.pattern) == {"sym": -2}  # a refused Cholesky plan is dropped
    assert A.pattern._digest in pardiso._not_spd
    # the adjoint (one transposed solve with the Bunch-Kaufman factors) against SciPy
    w = np.random.default_rng(3).standard_normal(M.shape[0])
    lam = jax.grad(lambda bb: jnp.vdot(jnp.asarray(w), solvers.solve(A, bb, method="pardiso")))(
        jnp.asarray(b)
    )
    ref = spl.spsolve(M.T.tocsc(), w)
    assert np.linalg.norm(np.asarray(lam) - ref) <= 1e-10 * np.linalg.norm(ref)
    # later matrices of the pattern go straight to Bunch-Kaufman: one factorisation each, no new analysis
    analyses = solvers.solver_stats.analyses
    _solve_and_check(sp.csr_matrix((1.5 * M.data, M.indices, M.indptr), shape=M.shape), b)
    assert solvers.solver_stats.analyses == analyses
    assert solvers.solver_stats.factorizations == before + 2


def test_flagged_positive_definite_but_indefinite_is_an_error():
    """A matrix flagged positive definite is not second-guessed: the solve reports PARDISO's reason."""
    M = _laplacian(9, shift=0.5)
    A = SparseMatrix.from_scipy(M, symmetric=True, positive_definite=True)
    with pytest.raises(solvers.SolverError, match="not positive definite"):
        solvers.solve(A, jnp.ones(M.shape[0]), method="pardiso")


def _poisson(n):
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(n, n)))
    return V, fem.assemble(library.source, V, f=1.0), fem.DirichletBC(V, None, 0.0)


def test_fem_solve_starts_the_analysis_while_tracing():
    """The Cholesky analysis of the pattern exists once the program is traced, before any value; the run
    uses it (one analysis in all) and the solution equals SciPy's."""
    V, b, bc = _poisson(7)  # (a pattern no other test of this file uses)
    A0 = fem.assemble(library.diffusion, V, kappa=1.0)
    assert _plans(A0.pattern) == {}
    analyses = solvers.solver_stats.analyses

    def forward(c):
        return fem.solve(fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)), b, bc=bc).coeffs

    c = jnp.asarray(np.random.default_rng(4).uniform(1.0, 2.0, V.ndofs))
    lowered = jax.jit(forward).lower(c)
    assert _plans(A0.pattern) == {"spd": 2}
    assert solvers.solver_stats.analyses == analyses + 1
    u = lowered.compile()(c)
    assert solvers.solver_stats.analyses == analyses + 1
    A = fem.assemble(library.diffusion, V, kappa=fem.Field(V, c))
    Ac, bcv = bc.condense(A, b)
    ref = spl.spsolve(Ac.to_scipy().tocsc(), np.asarray(bcv))
    assert np.linalg.norm(np.asarray(u) - ref) <= 1e-10 * np.linalg.norm(ref)


def test_early_analysis_of_an_indefinite_program_falls_back():
    """K - k^2 M (Helmholtz, real, positive diagonal, indefinite): the early Cholesky plan is refused at the
    first factorisation and the solve is Bunch-Kaufman's, equal to SciPy's."""
    V, b, bc = _poisson(6)
    K = fem.assemble(library.diffusion, V, kappa=1.0)
    Mm = fem.assemble(library.mass, V)
    k2 = 60.0  # between eigenvalues: indefinite (checked below), with a positive diagonal
    A = K.with_values(K.values - k2 * Mm.values)
    Ac, bcv = bc.condense(A, b)
    S = Ac.to_scipy()
    assert np.all(S.diagonal() > 0)
    ev = np.linalg.eigvalsh(S.toarray())
    assert ev.min() < 0 < ev.max()
    u = jax.jit(lambda v: fem.solve(A.with_values(v), b, bc=bc).coeffs)(A.values)
    ref = spl.spsolve(S.tocsc(), np.asarray(bcv))
    assert np.linalg.norm(np.asarray(u) - ref) <= 1e-10 * np.linalg.norm(ref)
    assert _plans(A.pattern) == {"sym": -2}


def test_gradient_through_a_cholesky_solve():
    """loss(c) = |u(c)|^2 with A(kappa = Field(c)) u = b on the Cholesky path: jax.grad against central
    differences (step 1e-6) and the Taylor remainder's rate 2."""
    V, b, bc = _poisson(5)
    rng = np.random.default_rng(5)
    c0 = jnp.asarray(rng.uniform(1.0, 2.0, V.ndofs))
    dc = jnp.asarray(rng.standard_normal(V.ndofs))

    def loss(c):
        u = fem.solve(fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)), b, bc=bc, method="pardiso")
        return jnp.sum(u.coeffs**2)

    _fd_and_taylor(loss, c0, dc)
    A = fem.assemble(library.diffusion, V, kappa=1.0)
    assert _plans(A.pattern).get("spd") == 2 and "sym" not in _plans(A.pattern)


def test_background_analysis_error_reaches_the_factorisation(monkeypatch):
    from igax.solvers import _pardiso
    from igax.solvers.sparse import CSRPattern

    def fail(self, pattern, values):
        raise _pardiso.PardisoError("PARDISO phase 11 failed: reordering problem", -3)

    monkeypatch.setattr(_pardiso.PardisoPlan, "_analyse", fail)
    M = _laplacian(3)
    plan = _pardiso.PardisoPlan(CSRPattern(M.indptr, M.indices, M.shape), "spd", None, background=True)
    with pytest.raises(_pardiso.PardisoError, match="reordering problem"):
        plan.factor(M.data)
    assert plan.failed
    with pytest.raises(ValueError, match="needs values"):
        _pardiso.PardisoPlan(CSRPattern(M.indptr, M.indices, M.shape), "sym", None)


def test_a_pattern_whose_background_analysis_failed_is_analysed_again(monkeypatch):
    """The failed plan reports its error once; the next factorisation of the pattern analyses again (before,
    the failed plan stayed cached and every later factorisation of the pattern re-raised its error)."""
    from igax.solvers import _pardiso
    from igax.solvers.backends import pardiso
    from igax.solvers.sparse import CSRPattern

    M = _laplacian(5)
    pattern = CSRPattern(M.indptr, M.indices, M.shape)
    analyse = _pardiso.PardisoPlan._analyse

    def fail(self, pattern, values):
        raise _pardiso.PardisoError("PARDISO phase 11 failed: not enough memory", -2)

    monkeypatch.setattr(_pardiso.PardisoPlan, "_analyse", fail)
    with pytest.raises(_pardiso.PardisoError, match="not enough memory"):
        pardiso._plan(pattern, "spd", None, background=True).factor(M.data)
    monkeypatch.setattr(_pardiso.PardisoPlan, "_analyse", analyse)
    b = np.arange(1.0, M.shape[0] + 1)
    x = pardiso._plan(pattern, "spd", None).factor(M.data).solve(b[:, None], False)[:, 0]
    assert np.linalg.norm(x - spl.spsolve(M.tocsc(), b)) <= 1e-12 * np.linalg.norm(x)
