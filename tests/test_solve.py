"""igax.solvers.solve: backends agree with scipy; derivatives by transformation; factorisation reuse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import igax.solvers as S
from igax.solvers import SolverError, SparseMatrix, available_methods, linear_solve, solve


def laplacian_2d(n):
    L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (n, n))
    eye = sp.eye(n)
    return (sp.kron(L, eye) + sp.kron(eye, L)).tocsr()


def convection_diffusion_2d(n, peclet=0.4):
    """Upwind convection in x plus diffusion: non-symmetric, diagonally dominant."""
    eye = sp.eye(n)
    D = sp.diags([-1.0, 1.0], [-1, 0], (n, n))
    return (laplacian_2d(n) + peclet * sp.kron(eye, D) + 0.5 * peclet * sp.kron(D, eye)).tocsr()


DIRECT = [m for m in ("superlu", "pardiso", "cholmod") if m in available_methods()]
# block-gmres needs saddle= block sizes (tests/test_saddle.py); minres needs a symmetric matrix;
# cocg: symmetric matrices only (complex symmetric A = A.T; tested in test_complex_native.py)
SPD_METHODS = [m for m in available_methods() if m != "block-gmres"]
GENERAL_METHODS = [
    m
    for m in available_methods()
    if m not in ("cg", "amg-cg", "mg-cg", "dist-cg", "cholmod", "minres", "block-gmres", "cocg")
]


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.fixture(scope="module")
def spd():
    K = laplacian_2d(12)
    return K, SparseMatrix.from_scipy(K, positive_definite=True)


@pytest.fixture(scope="module")
def nonsym():
    C = convection_diffusion_2d(12)
    return C, SparseMatrix.from_scipy(C)


@pytest.fixture(scope="module")
def rhs():
    return np.random.default_rng(0).normal(size=144)


@pytest.mark.parametrize("method", SPD_METHODS)
def test_backends_agree_spd(spd, rhs, method):
    K, A = spd
    ref = spla.spsolve(K.tocsc(), rhs)
    r = linear_solve(A, jnp.asarray(rhs), method=method, rtol=1e-13)
    assert rel(r.value, ref) < 1e-9
    assert int(r.status) == 0 and float(r.residual) < 1e-11
    if method in ("cg", "bicgstab", "gmres", "amg-cg", "mg-cg", "dist-cg", "minres", "cocg"):
        assert 0 < int(r.iterations) < 1000
    else:
        assert int(r.iterations) == 0


@pytest.mark.parametrize("method", GENERAL_METHODS)
def test_backends_agree_nonsymmetric(nonsym, rhs, method):
    C, A = nonsym
    assert not A.symmetric
    ref = spla.spsolve(C.tocsc(), rhs)
    x = solve(A, jnp.asarray(rhs), method=method, rtol=1e-13)
    assert rel(x, ref) < 1e-9
    # the transpose solve (used by the backward pass) as well
    g = jax.jit(jax.grad(lambda b: jnp.vdot(solve(A, b, method=method, rtol=1e-13), jnp.asarray(rhs))))(
        jnp.zeros(144)
    )
    assert rel(g, spla.spsolve(C.T.tocsc(), rhs)) < 1e-9


@pytest.mark.parametrize("method", DIRECT + ["gmres"])
def test_symmetric_indefinite(spd, rhs, method):
    K, _ = spd
    Ks = (K - 1.3 * sp.eye(K.shape[0])).tocsr()  # symmetric, indefinite (Laplacian eigenvalues span (0, 8))
    A = SparseMatrix.from_scipy(Ks)
    assert A.symmetric and not A.positive_definite
    x = solve(A, jnp.asarray(rhs), method=method, rtol=1e-13, maxiter=20000)
    assert rel(x, spla.spsolve(Ks.tocsc(), rhs)) < 1e-9


def test_pardiso_reuses_the_analysis_of_a_pattern(nonsym, rhs):
    if "pardiso" not in DIRECT:
        pytest.skip("pypardiso is not installed")
    _, A = nonsym
    b = jnp.asarray(rhs)
    S.solver_stats.reset()
    solve_v = jax.jit(lambda v: solve(A.with_values(v), b, method="pardiso"))
    xs = [solve_v(A.values * (1.0 + 0.1 * k)) for k in range(3)]
    assert S.solver_stats.factorizations == 3
    assert S.solver_stats.analyses <= 1  # 0 when an earlier test already analysed this pattern
    for k, x in enumerate(xs):
        assert rel(x, spla.spsolve((1.0 + 0.1 * k) * A.to_scipy().tocsc(), rhs)) < 1e-12


def test_default_method_is_pardiso_on_cpu(spd):
    expected = "pardiso" if "pardiso" in available_methods() else "superlu"
    assert S.default_method(spd[1]) == expected


# -- derivatives, organised by transformation ------------------------------------------------------------
# References are closed forms in NumPy (x = A^-1 b, dx = A^-1 (db - dA x), ...), so no dense JAX graph has to
# be compiled; the transformed igax functions are jitted (one compilation each instead of op-by-op dispatch).
SMALL = convection_diffusion_2d(4)  # 16 unknowns: dense Jacobians stay cheap


def _fns(method):
    A = SparseMatrix.from_scipy(SMALL)

    def f(v, b):
        return solve(A.with_values(v), b, method=method, rtol=1e-14)

    return A, f


def _dense(A, v):
    M = np.zeros(A.shape)
    np.add.at(M, (A.pattern.rows, A.pattern.indices), np.asarray(v))
    return M


DEFAULT_DIRECT = "pardiso" if "pardiso" in DIRECT else "superlu"


# The derivative machinery is shared by all backends (custom_linear_solve); one direct and one Krylov backend
# cover it, the agreement tests above cover every backend's transpose solve.
@pytest.mark.parametrize("method", [DEFAULT_DIRECT, "bicgstab"])
def test_jvp_jacfwd_jacrev_hvp_match_dense(method):
    A, f = _fns(method)
    rows, cols = A.pattern.rows, A.pattern.indices
    rng = np.random.default_rng(1)
    v, b = A.values, jnp.asarray(rng.normal(size=16))
    dv, db = jnp.asarray(rng.normal(size=v.shape)), jnp.asarray(rng.normal(size=16))
    M, dM = _dense(A, v), _dense(A, dv)
    Minv = np.linalg.inv(M)
    x = Minv @ np.asarray(b)
    dx = Minv @ (np.asarray(db) - dM @ x)
    tol = 1e-12 if method in DIRECT else 1e-9

    assert rel(jax.jit(lambda dv, db: jax.jvp(f, (v, b), (dv, db))[1])(dv, db), dx) < tol
    J_v = -Minv[:, rows] * x[cols]  # d x / d v_k = -A^-1 e_row(k) x_col(k)
    for jac in (jax.jacfwd, jax.jacrev):
        Jv, Jb = jax.jit(jac(f, argnums=(0, 1)))(v, b)
        assert rel(Jv, J_v) < tol and rel(Jb, Minv) < tol

    # Hessian-vector product of L = sum(x^3): grad_k = -lam[row_k] x[col_k] with lam = A^-T 3 x^2
    def grad_loss(v):
        return jax.grad(lambda v: jnp.sum(f(v, b) ** 3))(v)

    lam = Minv.T @ (3 * x**2)
    dx0 = -Minv @ (dM @ x)
    dlam = Minv.T @ (6 * x * dx0 - dM.T @ lam)
    hvp_ref = -(dlam[rows] * x[cols] + lam[rows] * dx0[cols])
    hvp = jax.jit(lambda dv: jax.jvp(grad_loss, (v,), (dv,))[1])(dv)
    assert rel(hvp, hvp_ref) < tol


def test_grad_matches_central_finite_differences():
    A, f = _fns("superlu")
    rng = np.random.default_rng(2)
    b = jnp.asarray(rng.normal(size=16))
    w = jnp.asarray(rng.normal(size=16))

    @jax.jit
    def loss(v, b):
        x = f(v, b)
        return jnp.vdot(w, x) + 0.5 * jnp.sum(x**2)

    gv, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(A.values, b)
    for arg, g in ((0, gv), (1, gb)):
        p = (A.values, b)[arg]
        d = jnp.asarray(rng.normal(size=p.shape))
        h = np.sqrt(np.finfo(float).eps) * float(jnp.linalg.norm(p)) / float(jnp.linalg.norm(d))
        args_p = [A.values, b]
        args_m = [A.values, b]
        args_p[arg] = p + h * d
        args_m[arg] = p - h * d
        fd = (loss(*args_p) - loss(*args_m)) / (2 * h)
        assert abs(float(fd) - float(jnp.vdot(g, d))) < 1e-6 * abs(float(fd))
    # Taylor remainder of the first-order expansion falls as h^2
    d = jnp.asarray(rng.normal(size=A.values.shape))
    hs = np.array([1e-2, 5e-3, 2.5e-3]) * float(jnp.linalg.norm(A.values)) / float(jnp.linalg.norm(d))
    rem = [abs(float(loss(A.values + h * d, b) - loss(A.values, b) - h * jnp.vdot(gv, d))) for h in hs]
    slope = np.polyfit(np.log(hs), np.log(rem), 1)[0]
    assert 1.9 < slope < 2.1


@pytest.mark.parametrize("method", [DEFAULT_DIRECT, "bicgstab"])
def test_vmap_over_b_values_and_grad(method):
    A, f = _fns(method)
    rows, cols = A.pattern.rows, A.pattern.indices
    rng = np.random.default_rng(3)
    B = jnp.asarray(rng.normal(size=(4, 16)))
    scales = np.linspace(1.0, 2.0, 4)
    V = A.values[None] * jnp.asarray(scales)[:, None]  # a batch of matrices with one pattern
    Ms = [_dense(A, V[i]) for i in range(4)]
    tol = 1e-12 if method in DIRECT else 1e-9
    X_b = np.linalg.solve(Ms[0], np.asarray(B).T).T
    assert rel(jax.jit(jax.vmap(lambda b: f(A.values, b)))(B), X_b) < tol
    X_vb = [np.linalg.solve(M, b) for M, b in zip(Ms, np.asarray(B), strict=True)]
    assert rel(jax.jit(jax.vmap(f))(V, B), X_vb) < tol

    def grad_ref(M, b):  # of L = sum(sin(x))
        x = np.linalg.solve(M, b)
        lam = np.linalg.solve(M.T, np.cos(x))
        return -lam[rows] * x[cols]

    G = jax.jit(jax.vmap(jax.grad(lambda v: jnp.sum(jnp.sin(f(v, B[0]))))))(V)
    assert rel(G, [grad_ref(M, np.asarray(B[0])) for M in Ms]) < tol


@pytest.mark.parametrize("method", DIRECT)
def test_one_factorisation_per_forward_and_backward(nonsym, rhs, method):
    _, A = nonsym
    A = A.with_values(A.values * 1.2345)  # values not seen by other tests: a fresh cache key
    b = jnp.asarray(rhs)

    @jax.jit
    def loss(v, b):
        return jnp.sum(solve(A.with_values(v), b, method=method) ** 2)

    S.solver_stats.reset()
    loss_grad = jax.value_and_grad(loss, argnums=(0, 1))
    _, (gv, gb) = loss_grad(A.values, b)
    assert S.solver_stats.factorizations == 1
    assert S.solver_stats.solves == 2 and S.solver_stats.transpose_solves == 1
    # a batch of 16 right-hand sides is one host call carrying 16 columns, with the cached factorisation
    S.solver_stats.reset()
    X = jax.jit(jax.vmap(lambda bb: solve(A, bb, method=method)))(jnp.tile(b, (16, 1)))
    assert S.solver_stats.factorizations == 0 and S.solver_stats.solves == 1 and S.solver_stats.rhs == 16
    assert rel(X[7], spla.spsolve(A.to_scipy().tocsc(), rhs)) < 1e-12
    # an explicit factorisation serves several solves
    S.solver_stats.reset()
    F = S.factorize(A.with_values(A.values * 2.0), method=method)
    x1, x2 = F.solve(b), F.solve(2.0 * b)
    assert S.solver_stats.factorizations == 1
    assert rel(x2, 2.0 * x1) < 1e-13


def test_cache_miss_refactorises_correctly(nonsym, rhs):
    _, A = nonsym
    b = jnp.asarray(rhs)
    F = S.factorize(A.with_values(A.values * 3.0), method="superlu")
    S.set_cache_size(1)
    try:
        S.factorize(A.with_values(A.values * 4.0), method="superlu").solve(b)  # evicts F's factor
        S.solver_stats.reset()
        x = F.solve(b)
        assert S.solver_stats.factorizations == 1  # the miss was refactorised from the values
    finally:
        S.set_cache_size(4)
    assert rel(x, spla.spsolve((3.0 * A.to_scipy()).tocsc(), rhs)) < 1e-12


@pytest.mark.parametrize("method", DIRECT + ["bicgstab"])
def test_float32(nonsym, rhs, method):
    C, A = nonsym
    A32 = SparseMatrix.from_scipy(C, dtype=jnp.float32)
    x = solve(A32, jnp.asarray(rhs, jnp.float32), method=method)
    assert x.dtype == jnp.float32
    assert rel(x, spla.spsolve(C.tocsc(), rhs)) < 1e-4
    b32 = jnp.asarray(rhs, jnp.float32)
    g = jax.jit(jax.grad(lambda v: jnp.sum(solve(A32.with_values(v), b32, method=method))))(A32.values)
    assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))


# -- errors ----------------------------------------------------------------------------------------------
def _neumann(n=6):
    L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (n, n)).tolil()
    L[0, 0] = L[-1, -1] = 1.0
    eye = sp.eye(n)
    return SparseMatrix.from_scipy((sp.kron(L, eye) + sp.kron(eye, L)).tocsr())


@pytest.mark.parametrize("method", DIRECT)
def test_singular_matrix_raises(method):
    A = _neumann()
    b = jnp.asarray(np.random.default_rng(4).normal(size=36))
    with pytest.raises(SolverError, match="singular.*Dirichlet"):
        solve(A, b, method=method)
    r = linear_solve(A, b, method=method, throw=False)
    assert int(r.status) == 1 and float(r.residual) > 1e-3
    with pytest.raises(Exception, match="singular"):  # inside jit: JAX's wrapper of the SolverError
        jax.block_until_ready(jax.jit(lambda v: solve(A.with_values(v), b, method=method))(A.values))


def test_cg_not_converged_and_breakdown(spd, nonsym, rhs):
    _, A = spd
    b = jnp.asarray(rhs)
    with pytest.raises(SolverError, match=r"did not converge.*iterations 3"):
        solve(A, b, method="cg", maxiter=3)
    r = linear_solve(A, b, method="cg", maxiter=3, throw=False)
    assert int(r.status) == 2 and int(r.iterations) == 3 and float(r.residual) > 1e-3
    indefinite = A.with_values(A.values - 6.0 * (A.pattern.rows == A.pattern.indices))
    with pytest.raises(SolverError, match="broke down|did not converge"):
        solve(indefinite, b, method="cg")


@pytest.mark.parametrize("method", ["superlu", "cg"])
def test_nan_input_raises(spd, rhs, method):
    _, A = spd
    with pytest.raises(SolverError, match="NaN or inf"):
        solve(A, jnp.asarray(rhs).at[3].set(jnp.nan), method=method)
    with pytest.raises(SolverError, match="NaN or inf"):
        solve(A.with_values(A.values.at[0].set(jnp.inf)), jnp.asarray(rhs), method=method)


def test_bad_arguments(spd, nonsym, rhs):
    K, A = spd
    _, C = nonsym
    b = jnp.asarray(rhs)
    with pytest.raises(ValueError, match="method must be one of"):
        solve(A, b, method="lu")
    with pytest.raises(ValueError, match="b must have shape"):
        solve(A, b[:-1])
    with pytest.raises(TypeError, match="from_scipy"):
        solve(K, b)
    with pytest.raises(ValueError, match="symmetric positive definite"):
        solve(C, b, method="cg")
    if "cholmod" not in available_methods():
        with pytest.raises(ImportError, match="scikit-sparse"):
            solve(A, b, method="cholmod")


@pytest.mark.skipif("amg-cg" not in available_methods(), reason="pyamg is not installed")
def test_amg_cg_reports_pyamg_iterations(spd, rhs):
    import pyamg

    K, A = spd
    r = linear_solve(A, jnp.asarray(rhs), method="amg-cg", rtol=1e-10)
    history = []
    ml = pyamg.smoothed_aggregation_solver(K.tocsr(), symmetry="symmetric")
    ml.solve(rhs, tol=1e-10, accel="cg", maxiter=500, residuals=history)
    assert int(r.iterations) == len(history) - 1 > 0
    # and a cap below the need is reported as not converged, with the count
    with pytest.raises(SolverError, match="iterations 2"):
        linear_solve(A, jnp.asarray(rhs), method="amg-cg", rtol=1e-14, maxiter=2)
