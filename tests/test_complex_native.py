"""Native complex solves (PARDISO's complex types, SuperLU on complex values) and COCG (issue 19).

The native path factorises the complex matrix itself (n unknowns) instead of its real block form (2n); both
and SciPy's complex spsolve must agree, the gradient of a real loss with respect to real parameters must
match finite differences with Taylor rate 2, and one factorisation must serve a solve and its gradient.
COCG solves complex symmetric systems in JAX; its adjoint is another COCG solve.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from igax import fem, solvers
from igax.fem import library

SIDES = ("left", "right", "bottom", "top")
HAVE_PARDISO = "pardiso" in solvers.available_methods()
pardiso = pytest.param(
    "pardiso", marks=pytest.mark.skipif(not HAVE_PARDISO, reason="pypardiso (Intel MKL) not installed")
)
# SuperLU's native complex path (not its default): its gradients run by default only where PARDISO is missing,
# so that the default run checks the native path's gradient once (the time of the suite).
superlu_native = pytest.param("superlu", marks=[pytest.mark.slow] if HAVE_PARDISO else [])


def _space(n=10, p=2):
    return fem.SplineSpace(fem.geometry.rectangle().refine(degree=p, elements=n))


def _helmholtz(V, k=8.0):
    """Helmholtz with the first-order absorbing (impedance) condition on every side: complex symmetric."""
    return fem.assemble(library.helmholtz, V, k=k) + fem.assemble(library.impedance, V, boundary=SIDES, k=k)


def _rhs(n, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=n) + 1j * rng.normal(size=n))


def _rel(x, ref):
    return float(np.abs(np.asarray(x) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("method", [pardiso, "superlu"])
def test_native_equals_block_equals_scipy(method):
    V = _space()
    A = _helmholtz(V)
    assert A.symmetric and A.values.dtype == jnp.complex128
    b = _rhs(V.ndofs)
    ref = spla.spsolve(A.to_scipy().tocsc(), np.asarray(b))
    solvers.solver_stats.reset()
    native = solvers.solve(A, b, method=method, complex_form="native")
    block = solvers.solve(A, b, method=method, complex_form="block")
    assert _rel(native, ref) < 1e-10 and _rel(block, ref) < 1e-10
    assert _rel(native, np.asarray(block)) < 1e-10
    assert solvers.solver_stats.factorizations == 2  # one native, one block: different matrices
    # a native factorisation object solves complex right-hand sides too, and vmap over them is one
    # multi-right-hand-side solve with the one factorisation
    F = solvers.factorize(A, method=method, complex_form="native")
    assert _rel(F.solve(b), ref) < 1e-10
    solvers.solver_stats.reset()
    X = jax.vmap(lambda c: solvers.solve(A, c, method=method, complex_form="native"))(jnp.stack([b, 1j * b]))
    assert _rel(X[1], 1j * ref) < 1e-10
    assert (solvers.solver_stats.factorizations, solvers.solver_stats.solves) == (0, 1)  # cached factor


def _unsymmetric(A):
    """A general complex matrix on A's pattern (neither symmetric nor Hermitian)."""
    K = A.to_scipy()
    return (K + 0.3j * sp.triu(K, 1) + 0.2 * sp.tril(K, -1)).tocsr()


@pytest.mark.parametrize("method", [pardiso, superlu_native])
def test_native_unsymmetric_gradient_one_factorisation(method):
    """Complex LU (PARDISO mtype 13): the reverse pass solves with A^T (not A^H) on the same factors."""
    V = _space(6)
    K = _unsymmetric(_helmholtz(V))
    A = solvers.SparseMatrix.from_scipy(K, symmetric=False, dtype=jnp.complex128)
    b = _rhs(V.ndofs, 1)
    x = solvers.solve(A, b, method=method, complex_form="native")
    assert _rel(x, spla.spsolve(K.tocsc(), np.asarray(b))) < 1e-10
    P = jnp.asarray(np.random.default_rng(2).normal(size=A.nnz))

    def loss(t):
        values = A.values.real * (1 + t[0] * P) + 1j * (A.values.imag + t[1])
        x = solvers.solve(A.with_values(values), b * (1 + 1j * t[2]), method=method, complex_form="native")
        return jnp.sum(jnp.abs(x[:9]) ** 2) + jnp.real(x[10] * x[11])

    loss = jax.jit(loss)
    t0 = jnp.array([0.05, 0.1, 0.2])
    solvers.clear_cache()
    solvers.solver_stats.reset()
    g = jax.grad(loss)(t0)
    s = solvers.solver_stats
    assert (s.factorizations, s.solves, s.transpose_solves) == (1, 2, 1), s
    h = 1e-6
    fd = np.array([(loss(t0 + h * e) - loss(t0 - h * e)) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(g, fd, rtol=1e-6)


@pytest.mark.skipif(not HAVE_PARDISO, reason="pypardiso (Intel MKL) not installed")
@pytest.mark.parametrize("hermitian", [True, "positive_definite"])
def test_pardiso_hermitian(hermitian):
    """PARDISO mtype -4 / 4 (hermitian=): solve and gradient; the transposed solve is conj(A^-1 conj(b))."""
    V = _space(6)
    K = _unsymmetric(_helmholtz(V))
    H = (K + K.conj().T).tocsr()
    if hermitian == "positive_definite":
        H = (H @ H.conj().T).tocsr() + sp.eye(H.shape[0], format="csr")  # on a wider pattern
    A = solvers.SparseMatrix.from_scipy(H, symmetric=False, dtype=jnp.complex128)
    b = _rhs(V.ndofs, 3)
    x = solvers.solve(A, b, method="pardiso", hermitian=hermitian)
    assert _rel(x, spla.spsolve(H.tocsc(), np.asarray(b))) < 1e-10
    if hermitian != True:  # noqa: E712 (the gradient's transposed solve is the same code for both types)
        return
    w = jnp.asarray(np.random.default_rng(4).normal(size=V.ndofs))

    def loss(s):
        x = solvers.solve(A * s, b, method="pardiso", hermitian=hermitian)
        return jnp.sum(w * jnp.abs(x) ** 2) + jnp.real(jnp.sum(w * x))

    solvers.clear_cache()
    solvers.solver_stats.reset()
    g = float(jax.grad(loss)(1.2))
    assert solvers.solver_stats.factorizations == 1
    fd = (float(loss(1.2 + 1e-6)) - float(loss(1.2 - 1e-6))) / 2e-6
    assert abs(g - fd) <= 1e-6 * abs(g), (g, fd)
    with pytest.raises(ValueError, match="hermitian= must be"):
        solvers.solve(A, b, method="pardiso", hermitian="yes")


# -- gradients through the native path --------------------------------------------------------------------
def _wave_loss(method, **options):
    """A real loss of the solution of A(t) x = b(t), A(t) = K - (k + t0)^2 M + (k + t1) B (B: the impedance
    term, -i on the boundary): complex symmetric for every real t. Solver level, so that the compiled program
    is the solve's (the fem chain's gradient is tested in test_helmholtz.py)."""
    V = _space(6)
    K = fem.assemble(library.diffusion, V, kappa=1.0)
    M = fem.assemble(library.mass, V)
    B = fem.assemble(library.impedance, V, boundary=SIDES, k=1.0)
    assert K.pattern == M.pattern == B.pattern
    b = fem.assemble(library.source, V, f=library.point_source((0.25, 0.4), 0.08))
    k = 5.0

    def loss(t):
        values = K.values - (k + t[0]) ** 2 * M.values + (k + t[1]) * B.values
        A = solvers.SparseMatrix(values, K.pattern, symmetric=True)
        x = solvers.solve(A, b * (1 + 1j * t[2]), method=method, **options)
        return jnp.sum(jnp.abs(x[:9]) ** 2) + jnp.real(x[10] * x[11])

    return jax.jit(loss), jnp.array([0.3, -0.2, 0.1])


def _check_fd_taylor(loss, c0):
    d = jnp.asarray(np.random.default_rng(6).normal(size=c0.shape))
    L0, g = jax.value_and_grad(loss)(c0)
    assert g.dtype == jnp.float64
    dg = float(g @ d)
    h = 1e-5
    fd = (float(loss(c0 + h * d)) - float(loss(c0 - h * d))) / (2 * h)
    assert abs(fd - dg) <= 1e-6 * abs(dg), (fd, dg)
    ts = np.array([1e-2, 5e-3, 2.5e-3])
    rem = [abs(float(loss(c0 + t * d)) - float(L0) - t * dg) for t in ts]
    rates = np.log2(np.array(rem[:-1]) / np.array(rem[1:]))
    assert np.all(np.abs(rates - 2.0) < 0.2), rates


@pytest.mark.parametrize("method", [pardiso, superlu_native])
def test_native_gradient_fd_taylor_and_one_factorisation(method):
    loss, c0 = _wave_loss(method, complex_form="native")
    solvers.clear_cache()
    solvers.solver_stats.reset()
    jax.grad(loss)(c0)
    s = solvers.solver_stats
    # complex symmetric: one factorisation; the transposed solve is the forward solve (no transposed call)
    assert (s.factorizations, s.transpose_solves) == (1, 0), s
    _check_fd_taylor(loss, c0)


# -- COCG ----------------------------------------------------------------------------------------------------
def test_cocg_matches_direct_and_counts_iterations():
    V = _space(12)
    A = _helmholtz(V, k=6.0)
    b = _rhs(V.ndofs, 7)
    ref = spla.spsolve(A.to_scipy().tocsc(), np.asarray(b))
    r = solvers.linear_solve(A, b, method="cocg", rtol=1e-12)
    d = A.diagonal()
    user = solvers.linear_solve(A, b, method="cocg", rtol=1e-12, precond=lambda v: v / d)
    # measured: 63 iterations (Jacobi; 63 without a preconditioner); GMRES(30) on the block form: 1530
    print(f"{V.ndofs} unknowns, k = 6: COCG iterations {int(r.iterations)} (Jacobi)")
    for res in (r, user):
        assert int(res.status) == 0 and float(res.residual) <= 1e-12
        assert _rel(res.value, ref) < 1e-9
    assert int(user.iterations) == int(r.iterations)  # the same preconditioner, given by hand
    assert int(r.iterations) < V.ndofs


def test_cocg_gradient_fd_taylor():
    loss, c0 = _wave_loss("cocg", rtol=1e-13)
    _check_fd_taylor(loss, c0)


def test_cocg_refusals_and_failures():
    V = _space(6)
    A = _helmholtz(V, k=6.0)
    b = _rhs(V.ndofs)
    K = _unsymmetric(A)
    Au = solvers.SparseMatrix.from_scipy(K, symmetric=False, dtype=jnp.complex128)
    with pytest.raises(ValueError, match=r'method="cocg" needs a complex symmetric matrix.*"gmres"'):
        solvers.solve(Au, b, method="cocg")
    with pytest.raises(solvers.SolverError, match=r"did not converge.*relative residual .*iterations 3\)"):
        solvers.solve(A, b, method="cocg", maxiter=3)
    r = solvers.linear_solve(A, b, method="cocg", maxiter=3, throw=False)
    assert int(r.status) == 2 and int(r.iterations) == 3 and float(r.residual) > 1e-3
    with pytest.raises(ValueError, match="precond= must be"):
        solvers.solve(A, b, method="cocg", precond="ilu")
    with pytest.raises(ValueError, match='the option precond= applies only to method="cocg"'):
        solvers.solve(A, b, method="gmres", precond=None)
    with pytest.raises(ValueError, match=r'complex_form="native": method="gmres" has no complex path'):
        solvers.solve(A, b, method="gmres", complex_form="native")
    with pytest.raises(TypeError, match='factorize does not take complex matrices with method="gmres"'):
        solvers.factorize(A, method="gmres")
    with pytest.raises(ValueError, match=r'complex_form="native": method="gmres"'):
        solvers.factorize(A, method="gmres", complex_form="native")
    with pytest.raises(ValueError, match='complex_form must be "native", "block" or None'):
        solvers.solve(A, b, method="superlu", complex_form="real")


def test_cocg_is_the_automatic_choice_for_complex_symmetric_matrices_on_accelerators(monkeypatch):
    A = _helmholtz(_space(3))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert solvers.default_method(A) == "cocg"
    assert solvers.default_method(A.with_values(A.values, symmetric=False)) == "bicgstab"
    assert solvers.default_method(A.with_values(A.values.real)) == "bicgstab"  # real, not SPD
