"""PARDISO: an analysis read from an extreme first matrix is redone when it does not fit later values, and a
singular positive semi-definite matrix is reported under Cholesky first as under Bunch-Kaufman."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl

# the skip without PARDISO, and Cholesky first on (the default) again after a test that turns it off
from test_pardiso_cholesky import cholesky_first, pytestmark  # noqa: F401

from igax import solvers
from igax.solvers import SparseMatrix


def _robin(n, h, shift=0.0):
    """The 5-point Laplacian on an n x n grid plus ``h`` times a boundary mass matrix on the last column
    (a Robin term; ``h = exp(180)`` is a line search's trial), minus ``shift`` times the identity."""
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (n, n))
    I = sp.identity(n)
    side = np.arange(n) * n + n - 1
    Rb = sp.diags([1 / 6, 2 / 3, 1 / 6], [-1, 0, 1], (n, n)).tocoo()
    R = sp.csr_matrix((Rb.data, (side[Rb.row], side[Rb.col])), shape=(n * n, n * n))
    M = (sp.kron(T, I) + sp.kron(I, T) + h * R - shift * sp.identity(n * n)).tocsr()
    M.sort_indices()
    return M


def _bunch_kaufman_plans(pattern):
    from igax.solvers.backends import pardiso

    return [p for k, p in pardiso._plans.items() if k[0] == pattern._digest and k[1] == "sym"]


@pytest.mark.parametrize("cholesky", [False, True])
def test_an_analysis_from_an_extreme_matrix_is_redone(cholesky):
    """An extreme first matrix (h = exp(180); with Cholesky first also indefinite, so that it reaches
    Bunch-Kaufman) leaves the pattern's Bunch-Kaufman analysis; before the re-analysis the benign matrices
    that followed were solved with relative residual ~0.35 (reported as singular). Now: SciPy's solution to
    1e-10, one more analysis, and the cache holds the new one. With Cholesky first, Bunch-Kaufman's inertia
    of the first benign matrix (positive definite) sends the next one back to Cholesky."""
    from igax.solvers.backends import pardiso

    solvers.set_cholesky_first(cholesky)
    n = 18 + cholesky  # a pattern per case
    b = np.random.default_rng(0).standard_normal(n * n)
    Ax = SparseMatrix.from_scipy(_robin(n, np.exp(180.0), shift=0.5 * cholesky), symmetric=True)
    solvers.solve(Ax, jnp.asarray(b), method="pardiso", throw=False)  # the trial (its outcome aside)
    (extreme,) = _bunch_kaufman_plans(Ax.pattern)
    analyses = solvers.solver_stats.analyses
    for h in (2.0, 3.0):
        M = _robin(n, h)
        x = solvers.solve(SparseMatrix.from_scipy(M, symmetric=True), jnp.asarray(b), method="pardiso")
        ref = spl.spsolve(M.tocsc(), b)
        assert np.linalg.norm(np.asarray(x) - ref) <= 1e-10 * np.linalg.norm(ref)
        if h == 2.0:
            assert solvers.solver_stats.analyses == analyses + 1  # the re-analysis
            # the new analysis replaces the old one (the cache takes it at its next look-up)
            assert extreme.successor is not None and extreme.successor.successor is None
            assert Ax.pattern._digest not in pardiso._not_spd
    # h = 3: Bunch-Kaufman reuses the analysis of h = 2; Cholesky (again) analyses the pattern once
    assert solvers.solver_stats.analyses == analyses + 1 + cholesky
    kinds = {k[1] for k in pardiso._plans if k[0] == Ax.pattern._digest}
    assert kinds == ({"sym", "spd"} if cholesky else {"sym"})


def test_a_solve_residual_above_direct_rtol_also_reanalyses():
    """The second check: a stale factor whose solve misses direct_rtol re-analyses and solves again (here the
    pivot count, the first check, is made to pass)."""
    from igax.solvers import _pardiso
    from igax.solvers.sparse import CSRPattern

    n = 16
    Mx, M = _robin(n, np.exp(180.0)), _robin(n, 2.0)
    plan = _pardiso.PardisoPlan(CSRPattern(Mx.indptr, Mx.indices, Mx.shape), "sym", Mx.data)
    plan.factor(Mx.data).free()
    plan.base_perturbed = 10**9  # no perturbed-pivot evidence
    b = np.random.default_rng(1).standard_normal((n * n, 2))
    unchecked = plan.factor(M.data)
    x0 = unchecked.solve(b, False)
    assert np.linalg.norm(b - M @ x0) > 1e-2 * np.linalg.norm(b)  # the stale analysis solves badly
    f = plan.factor(M.data, check_rtol=1e-4)
    assert f.stale
    x = f.solve(b, False)
    assert not f.stale and f.plan is plan.successor
    np.testing.assert_allclose(x, spl.spsolve(M.tocsc(), b), rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(b - M @ f.solve(b, True)) <= 1e-12 * np.linalg.norm(b)  # symmetric: A^T = A


def _neumann(n):
    K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (n, n)).tolil()
    K[0, 0] = K[n - 1, n - 1] = 1.0  # pure Neumann: singular, constant null space
    return K.tocsr()


def test_a_singular_positive_semidefinite_matrix_is_reported():
    """Cholesky factorises the pure Neumann Laplacian without error (its last pivot is rounding noise); the
    factor's diagonal shows it, Bunch-Kaufman takes over as before and eigsh reports the shift (sigma = 0
    at the lowest eigenvalue) with its clear error; the pattern stays with Cholesky."""
    from igax.solvers import _pardiso
    from igax.solvers.backends import pardiso
    from igax.solvers.sparse import CSRPattern

    K = _neumann(60)
    pattern = CSRPattern(K.indptr, K.indices, K.shape)
    plan = _pardiso.PardisoPlan(pattern, "spd", None)
    plan.factor(K.data).free()  # unchecked: no error from PARDISO itself
    with pytest.raises(_pardiso.PardisoError, match=r"singular to working precision.*pivot is \d") as err:
        plan.factor(K.data, check_singular=True)
    assert err.value.code == _pardiso.SINGULAR
    assert len(plan.free_slots) == _pardiso.MAXFCT  # the refused factor's slot is free again
    # Nonsingular: a Dirichlet Laplacian passes the check (smallest pivot 0.03 of its diagonal entry).
    D = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (60, 60)).tocsr()
    assert plan._smallest_pivot(plan.factor(D.data, check_singular=True).mnum) > 1e-2

    A = SparseMatrix.from_scipy(K)
    with pytest.raises(solvers.SolverError, match="sigma below the lowest eigenvalue"):
        solvers.eigsh(A, k=2, method="arpack")
    assert A.pattern._digest not in pardiso._not_spd
    with pytest.raises(solvers.SolverError, match="singular"):
        solvers.solve(A, jnp.ones(60), method="pardiso")
    w, _ = solvers.eigsh(A, k=2, sigma=-1.0)  # nonsingular shift: Cholesky, the right pairs
    assert abs(float(w[0])) < 1e-12 and float(w[1]) == pytest.approx(2 - 2 * np.cos(np.pi / 60), rel=1e-10)


def test_the_users_direct_rtol_is_the_stale_factor_check(monkeypatch):
    """``direct_rtol`` given to ``solve`` reaches the backend's stale-factor check (before, the host function
    never received it and always used eps**0.25)."""
    from igax.solvers import _pardiso

    seen = []
    factor = _pardiso.PardisoPlan.factor

    def recording(self, values, **kw):
        seen.append(kw.get("check_rtol"))
        return factor(self, values, **kw)

    monkeypatch.setattr(_pardiso.PardisoPlan, "factor", recording)
    solvers.set_cholesky_first(False)  # Bunch-Kaufman: the value-dependent analysis the check is for
    M = _robin(7, 1.0, shift=-0.25)
    b = jnp.ones(M.shape[0])
    A = SparseMatrix.from_scipy(M, symmetric=True)
    x = solvers.solve(A, b, method="pardiso", direct_rtol=1e-9)
    assert np.allclose(np.asarray(x), spl.spsolve(M.tocsc(), np.ones(M.shape[0])), rtol=1e-12, atol=0)
    assert seen[-1] == 1e-9
    solvers.solve(A, b + 1.0, method="pardiso")
    assert seen[-1] == pytest.approx(np.finfo(np.float64).eps ** 0.25)
