"""Saddle-point solves: MINRES and block-GMRES with block preconditioners, and the direct backends, on a
Stokes Taylor-Hood P2/P1 system assembled by scikit-fem (an independent assembler: igax.solvers must not
need igax.fem), checked against scipy's spsolve."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from igax import solvers
from igax.solvers import SaddlePoint, SparseMatrix

skfem = pytest.importorskip("skfem")
from skfem.helpers import ddot, div, dot, grad  # noqa: E402


@skfem.BilinearForm
def _vector_laplace(u, v, w):
    return ddot(grad(u), grad(v))


@skfem.BilinearForm
def _divergence(u, q, w):
    return -div(u) * q


@skfem.BilinearForm
def _mass(p, q, w):
    return p * q


@skfem.LinearForm
def _force(v, w):
    x, y = w.x
    return dot(np.stack([np.sin(np.pi * x) * y, np.cos(np.pi * y) * x + 1.0]), v)


@functools.cache
def stokes(refine: int):
    """Stokes on the unit square, P2/P1: ``K(nu) = nu KA + KB`` on one pattern, velocity unknowns first.

    No-slip on three sides and the natural (do-nothing) outflow at x = 1, which fixes the pressure: no
    pinned dof, whose Schur complement would have a mesh-dependent small eigenvalue.
    """
    m = skfem.MeshTri().refined(refine)
    ub = skfem.Basis(m, skfem.ElementVector(skfem.ElementTriP2()))
    pb = ub.with_element(skfem.ElementTriP1())
    A, B, Mp = skfem.asm(_vector_laplace, ub), skfem.asm(_divergence, ub, pb), skfem.asm(_mass, pb)
    nu_, np_ = A.shape[0], Mp.shape[0]
    walls = m.facets_satisfying(lambda x: x[0] < 1.0 - 1e-12, boundaries_only=True)
    keep = np.setdiff1d(np.arange(nu_ + np_), ub.get_dofs(walls).all())
    K = sp.bmat([[A, B.T], [B, None]]).tocsr()[keep][:, keep]
    K.sort_indices()
    n_u = int(np.sum(keep < nu_))
    rows = np.repeat(np.arange(K.shape[0]), np.diff(K.indptr))
    uu = (rows < n_u) & (K.indices < n_u)  # the viscous block; the rest is B and B^T
    KA = sp.csr_matrix((np.where(uu, K.data, 0.0), K.indices, K.indptr), shape=K.shape)
    KB = sp.csr_matrix((np.where(uu, 0.0, K.data), K.indices, K.indptr), shape=K.shape)
    b = np.concatenate([skfem.asm(_force, ub), np.zeros(np_)])[keep]
    pk = keep[keep >= nu_] - nu_
    return KA, KB, b, n_u, Mp[pk][:, pk].tocsr()


def _system(refine, nu=1.0):
    KA, KB, b, n_u, Mp = stokes(refine)
    K = SparseMatrix.from_scipy(nu * KA + KB, symmetric=True)
    return K, jnp.asarray(b), n_u, SparseMatrix.from_scipy(Mp / nu, positive_definite=True)


@functools.cache
def _saddle(refine, primal):
    _, _, n_u, Mp = _system(refine)
    return SaddlePoint(n_u, schur=Mp, primal=primal)


def _reference(refine, nu=1.0):
    KA, KB, b, _, _ = stokes(refine)
    return spl.spsolve((nu * KA + KB).tocsc(), b)


def test_minres_matches_spsolve_and_its_count_stays_bounded():
    counts = []
    for refine in (2, 3, 4):
        K, b, n_u, _ = _system(refine)
        r = solvers.linear_solve(K, b, method="minres", saddle=_saddle(refine, "superlu"))
        x_ref = _reference(refine)
        err = np.linalg.norm(np.asarray(r.value) - x_ref) / np.linalg.norm(x_ref)
        assert int(r.status) == 0 and err < 1e-8, (refine, err)
        counts.append(int(r.iterations))
    print("MINRES iterations, exact velocity block, diagonal pressure mass, h = 1/4, 1/8, 1/16:", counts)
    K, b, _, _ = _system(2)
    r = solvers.linear_solve(K, b, method="block-gmres", saddle=_saddle(2, "superlu"))
    err = np.linalg.norm(np.asarray(r.value) - _reference(2)) / np.linalg.norm(_reference(2))
    print("block-triangular GMRES at h = 1/4:", int(r.iterations), "iterations")
    assert int(r.status) == 0 and err < 1e-8 and int(r.iterations) < counts[0]
    # Mesh-independent preconditioner: the count levels off (measured 47, 65, 69).
    assert counts[2] <= 1.2 * counts[1] and counts[2] <= 1.6 * counts[0]


@pytest.mark.slow  # ~7 s (two AMG programs); the fast run checks block-gmres at h = 1/4 below
def test_minres_with_amg_velocity_block_and_block_gmres():
    K, b, n_u, _ = _system(3)
    x_ref = _reference(3)
    out = {}
    for method, saddle in (
        ("minres", _saddle(3, "amg")),
        ("block-gmres", _saddle(3, "amg")),
    ):
        r = solvers.linear_solve(K, b, method=method, saddle=saddle)
        err = np.linalg.norm(np.asarray(r.value) - x_ref) / np.linalg.norm(x_ref)
        assert int(r.status) == 0 and err < 1e-8, (method, err)
        out[method] = int(r.iterations)
    print("iterations at h = 1/8, AMG V-cycle for the velocity:", out)
    assert out["block-gmres"] < out["minres"]


def test_gradient_through_minres_matches_fd_and_taylor():
    KA, KB, b, n_u, _ = stokes(2)
    saddle = _saddle(2, "superlu")
    w = jnp.asarray(np.random.default_rng(0).standard_normal(KA.shape[0]))
    pattern = solvers.CSRPattern(KA.indptr, KA.indices, KA.shape)  # KA, KB: one pattern, explicit zeros
    K0 = SparseMatrix(jnp.zeros(KA.nnz), pattern, symmetric=True)
    vA, vB = jnp.asarray(KA.data), jnp.asarray(KB.data)

    def loss(nu):
        K = K0.with_values(nu * vA + vB)
        x = solvers.solve(K, jnp.asarray(b) * (1.0 + nu), method="minres", saddle=saddle, rtol=1e-13)
        return jnp.vdot(w, x) + 0.5 * jnp.vdot(x, x)

    value_and_grad = jax.jit(jax.value_and_grad(loss))  # one program for the values and the gradient

    def f(nu):
        return float(value_and_grad(nu)[0])

    nu0 = 1.3
    f0, g = (float(v) for v in value_and_grad(nu0))
    h = 1e-4
    fd = (f(nu0 + h) - f(nu0 - h)) / (2 * h)
    assert abs(g - fd) <= 1e-6 * abs(fd), (g, fd)
    rem = [abs(f(nu0 + t) - f0 - t * g) for t in (0.1, 0.05)]
    assert 3.5 < rem[0] / rem[1] < 4.5, rem


@pytest.mark.parametrize("method", ["superlu", "pardiso"])
def test_direct_backends_solve_the_indefinite_system_and_its_adjoint(method):
    if method not in solvers.available_methods():
        pytest.skip(f"{method} is not installed")
    # h = 1/16 (2273 dofs): without scaling and matching, PARDISO's perturbed pivots left an error of 7e-9
    KA, KB, b, _, _ = stokes(4)
    K = SparseMatrix.from_scipy(KA + KB, symmetric=True)  # symmetric, not positive definite
    x = solvers.solve(K, jnp.asarray(b), method=method)
    x_ref = _reference(4)
    assert np.linalg.norm(np.asarray(x) - x_ref) <= 1e-10 * np.linalg.norm(x_ref)
    # The adjoint: d(w.x)/db = K^-T w, one transposed solve with the same factors.
    w = np.random.default_rng(1).standard_normal(K.shape[0])
    lam = jax.grad(lambda bb: jnp.vdot(jnp.asarray(w), solvers.solve(K, bb, method=method)))(jnp.asarray(b))
    lam_ref = spl.spsolve((KA + KB).T.tocsc(), w)
    assert np.linalg.norm(np.asarray(lam) - lam_ref) <= 1e-10 * np.linalg.norm(lam_ref)
    if method == "pardiso":
        from igax.solvers.backends import pardiso

        # flagged symmetric but not positive definite: Bunch-Kaufman (mtype -2), never Cholesky (2)
        assert [p.mtype for key, p in pardiso._plans.items() if key[0] == K.pattern._digest] == [-2]


@pytest.mark.parametrize("method", ["cg", "mg-cg", "amg-cg", "cholmod"])
def test_spd_backends_refuse_the_indefinite_system(method):
    if method not in solvers.available_methods():
        pytest.skip(f"{method} is not installed")
    KA, KB, b, _, _ = stokes(2)
    K = SparseMatrix.from_scipy(KA + KB, symmetric=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(solvers.SolverError, match="positive definite|did not converge|singular"):
            solvers.solve(K, jnp.asarray(b), method=method)
    # the error says it all: no second, vaguer warning from the backend (pyamg's CG warns on indefinite A)
    assert not [w for w in caught if "ndefinite" in str(w.message)], [str(w.message) for w in caught]
    # not flagged symmetric: refused before anything runs
    with pytest.raises(ValueError, match="not flagged symmetric"):
        solvers.solve(K.with_values(K.values, symmetric=False), jnp.asarray(b), method=method)


def test_failures_and_bad_input_say_so():
    K, b, n_u, Mp = _system(2)
    with pytest.raises(solvers.SolverError, match=r"did not converge.*residual .*iterations 5"):
        solvers.solve(K, b, method="minres", saddle=_saddle(2, "superlu"), maxiter=5)
    with pytest.raises(ValueError, match="needs saddle="):
        solvers.solve(K, b, method="block-gmres")
    with pytest.raises(ValueError, match="does not add up"):
        solvers.solve(K, b, method="minres", saddle=(n_u, 3))
    with pytest.raises(ValueError, match="pressure block of K"):
        solvers.solve(K, b, method="minres", saddle=SaddlePoint(n_u + 1, schur=Mp))
    with pytest.raises(ValueError, match="needs a symmetric matrix"):
        solvers.solve(K.with_values(K.values, symmetric=False), b, method="minres")
    with pytest.raises(ValueError, match="primal must be one of"):
        SaddlePoint(n_u, primal="cg")
    # a wrong sign convention ([[A, B^T], [B, +C]] with C > 0 is not a saddle point): refused, not solved
    bad = SparseMatrix.from_scipy(-(stokes(2)[0] + stokes(2)[1]), symmetric=True)
    with pytest.raises(solvers.SolverError, match="not positive definite"):
        solvers.solve(bad, b, method="minres", saddle=_saddle(2, "amg"))


def test_minres_loop_on_dense_indefinite_matrix_matches_numpy():
    rng = np.random.default_rng(2)
    Q = rng.standard_normal((30, 30))
    A = jnp.asarray(Q + Q.T)  # symmetric, indefinite
    b = jnp.asarray(rng.standard_normal(30))
    r = solvers.minres(lambda x: A @ x, b, lambda v: v / (jnp.abs(jnp.diag(A)) + 1.0), maxiter=2000)
    assert int(r.status) == 0
    np.testing.assert_allclose(np.asarray(r.x), np.linalg.solve(np.asarray(A), np.asarray(b)), rtol=1e-7)
    # an indefinite preconditioner is a breakdown, not a wrong answer
    r = solvers.minres(lambda x: A @ x, b, lambda v: -v)
    assert int(r.status) == int(solvers.Status.BREAKDOWN)


@pytest.mark.slow  # ~8 s: compiling the batched MINRES loops; the gradient test covers jit and grad
def test_minres_under_vmap():
    KA, KB, b, _, _ = stokes(2)
    pattern = solvers.CSRPattern(KA.indptr, KA.indices, KA.shape)  # KA, KB: one pattern, explicit zeros
    K = SparseMatrix(jnp.asarray(KA.data + KB.data), pattern, symmetric=True)
    saddle = _saddle(2, "superlu")
    B = jnp.stack([jnp.asarray(b), jnp.asarray(np.random.default_rng(3).standard_normal(b.shape[0]))])
    X = jax.vmap(lambda bb: solvers.solve(K, bb, method="minres", saddle=saddle))(B)
    X_ref = spl.spsolve((KA + KB).tocsc(), np.asarray(B).T).T
    assert np.linalg.norm(np.asarray(X) - X_ref) <= 1e-8 * np.linalg.norm(X_ref)
