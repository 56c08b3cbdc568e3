import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from igax.solvers import CSRPattern, SparseMatrix


def _random(n=30, density=0.2, seed=0):
    return sp.random(n, n, density=density, random_state=seed, format="csr") + sp.eye(n)


def test_matvec_transpose_roundtrip():
    A = _random()
    M = SparseMatrix.from_scipy(A)
    x = np.random.default_rng(1).normal(size=30)
    np.testing.assert_allclose(M @ jnp.asarray(x), A @ x, rtol=1e-13)
    np.testing.assert_allclose(M.T @ jnp.asarray(x), A.T @ x, rtol=1e-13)
    X = np.random.default_rng(2).normal(size=(30, 3))
    np.testing.assert_allclose(M @ jnp.asarray(X), A @ X, rtol=1e-13)
    np.testing.assert_allclose(M.to_scipy().toarray(), A.toarray())
    np.testing.assert_allclose(M.todense(), A.toarray())
    np.testing.assert_allclose(M.diagonal(), A.diagonal())


def test_algebra_and_jit_grad():
    A = _random()
    M = SparseMatrix.from_scipy(A)
    np.testing.assert_allclose((2.0 * M + M - M).to_scipy().toarray(), 2 * A.toarray(), rtol=1e-13)
    x = jnp.arange(30.0)
    f = jax.jit(lambda v: jnp.sum((M.with_values(v) @ x) ** 2))
    g = jax.grad(f)(M.values)
    # d/dv_k sum((A x)^2) = 2 (A x)_{row k} x_{col k}
    Ax = A @ np.asarray(x)
    expected = 2 * Ax[M.pattern.rows] * np.asarray(x)[M.pattern.indices]
    np.testing.assert_allclose(g, expected, rtol=1e-12)


def test_from_coo_scatter_map():
    rows = np.array([0, 2, 0, 1, 2, 0])
    cols = np.array([1, 2, 1, 0, 2, 0])
    vals = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    pattern, slot = CSRPattern.from_coo(rows, cols, (3, 3))
    values = jax.ops.segment_sum(jnp.asarray(vals), jnp.asarray(slot), pattern.nnz)
    ref = sp.coo_matrix((vals, (rows, cols)), shape=(3, 3)).toarray()
    np.testing.assert_allclose(SparseMatrix(values, pattern).todense(), ref)


def test_pattern_mismatch_and_shape_errors():
    M = SparseMatrix.from_scipy(_random(seed=0))
    N = SparseMatrix.from_scipy(_random(seed=5))
    with pytest.raises(ValueError, match="different sparsity patterns"):
        M + N
    with pytest.raises(ValueError, match="values must have shape"):
        SparseMatrix(jnp.ones(3), M.pattern)
    with pytest.raises(ValueError, match="leading dimension"):
        M @ jnp.ones(4)


def test_patterns_compare_by_content():
    A = _random()
    assert SparseMatrix.from_scipy(A).pattern == SparseMatrix.from_scipy(A.copy()).pattern
