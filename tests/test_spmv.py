"""SparseMatrix products (igax.solvers._spmv): each lowering against SciPy, derivatives against dense AD.

Three implementations compute the same product: the native CPU kernel (what ``A @ x`` runs here), the
pure-JAX fixed-width kernel (other platforms, no compiler) and the cuSPARSE path of the GPU (called directly
here, where ``jax.experimental.sparse`` runs its CPU fallback: this checks the shapes and batching of that
path, not cuSPARSE). Agreement is asserted to 1e-13 relative to ``|A| |x|`` (the scale of the rounding error
of any summation order).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from igax import _native
from igax.fem import mesh
from igax.solvers import CSRPattern, SparseMatrix, _spmv

RTOL = 1e-13


def _with_empty_rows_and_cols(seed=0):
    M = sp.random(40, 40, density=0.15, random_state=seed, format="lil")
    M[5, :] = 0  # empty rows
    M[17, :] = 0
    M[:, 9] = 0  # an empty column
    return M.tocsr()


def _p1():
    m = mesh.unit_square(6)
    cells = np.asarray(m.cells)
    pat, _ = CSRPattern.from_cells(cells, int(cells.max()) + 1)
    rng = np.random.default_rng(3)
    return sp.csr_matrix((rng.normal(size=pat.nnz), pat.indices, pat.indptr), shape=pat.shape)


def _long_rows():
    """Rows of 3 entries and two dense ones: the pure kernel sums the long rows' tails apart."""
    M = sp.diags([1.0, 2.0, 3.0], [-1, 0, 1], shape=(60, 60), format="lil")
    M[7, :] = np.arange(60) + 1.0
    M[40, ::2] = -1.5
    return M.tocsr()


def _wide():
    """Rows of 45 entries: wider than the pure kernel's unrolled block (its loop over blocks)."""
    e5 = sp.diags([np.ones(6 - abs(k)) for k in range(-2, 3)], list(range(-2, 3)), (6, 6))
    e3 = sp.diags([np.ones(6 - abs(k)) for k in range(-1, 2)], list(range(-1, 2)), (6, 6))
    return sp.kron(sp.kron(e5, e3), e3)


PATTERNS = {
    "random-square": lambda: sp.random(50, 50, density=0.1, random_state=1, format="csr") + sp.eye(50),
    "non-square": lambda: sp.random(23, 57, density=0.2, random_state=2, format="csr"),
    "tall": lambda: sp.random(57, 23, density=0.2, random_state=4, format="csr"),
    "empty-rows-cols": _with_empty_rows_and_cols,
    "single-row": lambda: sp.csr_matrix(np.array([[0.0, 2.0, 0.0, -1.0, 3.5]])),
    "single-column": lambda: sp.csr_matrix(np.array([[1.0], [0.0], [-2.0]])),
    "p1-mesh": _p1,
    "long-rows": _long_rows,
    "wide-rows": _wide,
}


def _scipy(name):
    M = sp.csr_matrix(PATTERNS[name]())
    M.sum_duplicates()
    M.sort_indices()
    M.data = np.random.default_rng(7).normal(size=M.nnz)  # no exact zeros, no structure in the values
    return M


def _check(y, M, x, transpose=False):
    """y == M @ x (or M.T @ x) to RTOL relative to |M| |x|."""
    Mt = M.T if transpose else M
    ref = Mt @ x
    err = np.max(np.abs(np.asarray(y) - ref), initial=0.0)
    assert np.shape(y) == ref.shape and err <= RTOL * np.max(abs(Mt) @ np.abs(x), initial=0.0), err


IMPLS = {
    "primitive": lambda v, p, x, t: _spmv.spmv_p.bind(v, x, pattern=p, transpose=t, symmetric=False),
    "pure": lambda v, p, x, t: _spmv._pure(v, x, pattern=p, transpose=t),
    "gpu-path": lambda v, p, x, t: _spmv._gpu(v, x, pattern=p, transpose=t, symmetric=False),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_products_equal_scipy(name):
    M = _scipy(name)
    A = SparseMatrix.from_scipy(M, symmetric=False)
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=M.shape[1]), rng.normal(size=M.shape[0])
    X, Y = rng.normal(size=(M.shape[1], 5)), rng.normal(size=(M.shape[0], 3))
    _check(A @ jnp.asarray(x), M, x)
    _check(A @ jnp.asarray(X), M, X)
    _check(A.rmatvec(jnp.asarray(y)), M, y, transpose=True)
    _check(A.T @ jnp.asarray(Y), M, Y, transpose=True)
    _check(jax.jit(lambda A, x: A @ x)(A, jnp.asarray(x)), M, x)
    X3 = rng.normal(size=(M.shape[1], 2, 3))  # trailing axes are columns too
    _check((A @ jnp.asarray(X3)).reshape(M.shape[0], 6), M, X3.reshape(-1, 6))
    _check(_spmv.segment_sum_product(A.values, A.pattern, jnp.asarray(x)), M, x)


LOWERING_CASES = [
    (impl, name) for impl in sorted(IMPLS) for name in ("empty-rows-cols", "non-square", "single-row")
]
LOWERING_CASES += [("pure", "long-rows"), ("pure", "wide-rows")]  # the pure kernel's tails and block loop


@pytest.mark.parametrize(("impl", "name"), LOWERING_CASES)
def test_each_lowering_equals_scipy(impl, name):
    M = _scipy(name)
    v, p = jnp.asarray(M.data), SparseMatrix.from_scipy(M).pattern
    rng = np.random.default_rng(5)
    x1, x4 = rng.normal(size=(M.shape[1], 1)), rng.normal(size=(M.shape[1], 4))
    y1, y4 = rng.normal(size=(M.shape[0], 1)), rng.normal(size=(M.shape[0], 4))
    xb = rng.normal(size=(3, M.shape[1], 2))  # a batch of matrices: leading batch dimension on values and x

    @jax.jit
    def products(v, x1, x4, y1, y4, xb):
        f = IMPLS[impl]
        return (
            f(v, p, x1, False),
            f(v, p, x4, False),
            f(v, p, y1, True),
            f(v, p, y4, True),
            f(jnp.stack([v, 2 * v, -v]), p, xb, False),
        )

    o1, o4, t1, t4, ob = products(v, x1, x4, y1, y4, xb)
    _check(o1, M, x1)
    _check(o4, M, x4)
    _check(t1, M, y1, transpose=True)
    _check(t4, M, y4, transpose=True)
    for b, scale in enumerate((1, 2, -1)):
        _check(ob[b], scale * M, xb[b])


@pytest.mark.parametrize("name", ["empty-rows-cols", "non-square", "long-rows"])
def test_sampled_product_native_and_pure(name):
    """The values-derivative kernel: vbar[p] = sum_c ct[row(p), c] x[col(p), c] (roles swapped transposed)."""
    M = _scipy(name)
    p = SparseMatrix.from_scipy(M).pattern
    rng = np.random.default_rng(9)
    ct, x = rng.normal(size=(2, M.shape[0], 3)), rng.normal(size=(2, M.shape[1], 3))  # a batch of two

    @jax.jit
    def both(ct, x):
        out = []
        for fn in (_spmv.sample_p.bind, _spmv._sample_pure):
            out.append(
                (
                    fn(ct, x, pattern=p, transpose=False),
                    fn(x[0, :, :1], ct[0, :, :1], pattern=p, transpose=True),
                )
            )
        return out

    expected = np.einsum("bpc,bpc->bp", ct[:, p.rows], x[:, p.indices])
    expected_t = x[0, p.indices, 0] * ct[0, p.rows, 0]
    for out, out_t in both(ct, x):
        np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(out_t, expected_t, rtol=1e-14, atol=1e-15)


def test_native_kernel_is_used_and_matches_scipy_bitwise():
    if not _native.available():
        pytest.skip(f"native kernels: {_native.reason()}")
    M = _scipy("p1-mesh")
    A = SparseMatrix.from_scipy(M)
    x = np.random.default_rng(0).normal(size=M.shape[1])
    hlo = jax.jit(lambda A, x: A @ x).lower(A, jnp.asarray(x)).as_text()
    assert "igax_spmv_forward_f64" in hlo
    # the kernel sums each row in SciPy's order: the same numbers to the last bit
    np.testing.assert_array_equal(np.asarray(A @ jnp.asarray(x)), M @ x)
    np.testing.assert_array_equal(np.asarray(A.rmatvec(jnp.asarray(x))), M.T @ x)


def test_large_products_split_over_threads_give_the_same_numbers():
    """Above ~0.5M multiply-adds the CPU kernels split the rows over XLA's thread pool: each output entry is
    still summed by one thread in SciPy's order, so the numbers are SciPy's to the last bit."""
    if not _native.available():
        pytest.skip(f"native kernels: {_native.reason()}")
    cells = np.asarray(mesh.unit_square(300).cells)
    pat, _ = CSRPattern.from_cells(cells, int(cells.max()) + 1)
    rng = np.random.default_rng(12)
    M = sp.csr_matrix((rng.normal(size=pat.nnz), pat.indices, pat.indptr), shape=pat.shape)
    A = SparseMatrix.from_scipy(M, symmetric=False)
    x, X = rng.normal(size=M.shape[0]), rng.normal(size=(M.shape[0], 3))
    y, Y, vbar = jax.jit(
        lambda A, x, X: (A @ x, A @ X, jax.grad(lambda v: jnp.vdot(X, A.with_values(v) @ X))(A.values))
    )(A, jnp.asarray(x), jnp.asarray(X))
    np.testing.assert_array_equal(np.asarray(y), M @ x)
    np.testing.assert_allclose(np.asarray(Y), M @ X, rtol=1e-14, atol=1e-14)
    expected = np.einsum("pc,pc->p", X[pat.rows], X[pat.indices])
    np.testing.assert_allclose(np.asarray(vbar), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_float32(impl):
    M = _scipy("p1-mesh")
    p = SparseMatrix.from_scipy(M).pattern
    x = np.random.default_rng(1).normal(size=M.shape[1])
    f = jax.jit(lambda v, x, t: IMPLS[impl](v, p, x, t), static_argnums=2)
    for t in (False, True):
        y = f(jnp.asarray(M.data, jnp.float32), jnp.asarray(x, jnp.float32)[:, None], t)
        assert y.dtype == jnp.float32
        ref = (M.T if t else M) @ x
        scale = np.max(abs(M.T if t else M) @ np.abs(x))
        assert np.max(np.abs(np.asarray(y)[:, 0] - ref)) < 1e-6 * scale


def test_mixed_dtypes_promote():
    M = _scipy("random-square")
    A32 = SparseMatrix.from_scipy(M, dtype=jnp.float32)
    x = jnp.asarray(np.random.default_rng(2).normal(size=50))  # float64
    y = A32 @ x
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(y, M.astype(np.float32).astype(np.float64) @ np.asarray(x), rtol=1e-12)
    assert (A32 @ jnp.arange(50)).dtype == jnp.float32  # integer x takes the values' dtype


def test_empty_matrix_and_empty_batch():
    p = CSRPattern(np.zeros(4, np.int64), np.zeros(0, np.int32), (3, 5))
    A = SparseMatrix(jnp.zeros(0), p)
    np.testing.assert_array_equal(A @ jnp.ones(5), np.zeros(3))
    np.testing.assert_array_equal(A.rmatvec(jnp.ones(3)), np.zeros(5))
    assert (SparseMatrix.from_scipy(_scipy("non-square")) @ jnp.ones((57, 0))).shape == (23, 0)


# -- derivatives against dense autodiff --------------------------------------------------------------------
def _dense(v, p):
    return jnp.zeros(p.shape, v.dtype).at[p.rows, p.indices].add(v)


@pytest.mark.parametrize("name", ["non-square", "long-rows"])
@pytest.mark.parametrize("transpose", [False, True])
def test_grad_jvp_match_dense(name, transpose):
    M = _scipy(name)
    A = SparseMatrix.from_scipy(M, symmetric=False)
    p, v = A.pattern, A.values
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=M.shape[0] if transpose else M.shape[1]))
    dv, dx = jnp.asarray(rng.normal(size=v.shape)), jnp.asarray(rng.normal(size=x.shape))

    def sparse_f(v, x):
        A_ = A.with_values(v)
        return jnp.sum(jnp.sin(A_.rmatvec(x) if transpose else A_ @ x))

    def dense_f(v, x):
        D = _dense(v, p)
        return jnp.sum(jnp.sin((D.T if transpose else D) @ x))

    def derivatives(f, v, x, dv, dx):
        grads = jax.grad(f, (0, 1))(v, x)
        jvp = jax.jvp(f, (v, x), (dv, dx))[1]
        # second derivatives (the transpose rules differentiated again), along directions
        hxx = jax.jvp(lambda x: jax.grad(f, 1)(v, x), (x,), (dx,))[1]
        hvx = jax.jvp(lambda x: jax.grad(f, 0)(v, x), (x,), (dx,))[1]
        hvv = jax.jvp(lambda v: jax.grad(f, 0)(v, x), (v,), (dv,))[1]
        return (*grads, jvp, hxx, hvx, hvv)

    both = jax.jit(lambda *a: (derivatives(sparse_f, *a), derivatives(dense_f, *a)))
    sparse, dense = both(v, x, dv, dx)
    for a, b in zip(sparse, dense, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_grad_of_batched_columns_and_symmetric_flag():
    M = _scipy("p1-mesh")
    S = (M + M.T).tocsr()
    A = SparseMatrix.from_scipy(S)  # symmetric: transposed products are plain ones
    assert A.symmetric
    p = A.pattern
    X = jnp.asarray(np.random.default_rng(4).normal(size=(S.shape[1], 3)))

    def f(v, X):
        return jnp.sum((A.with_values(v) @ X) ** 3)

    def fd(v, X):
        return jnp.sum((_dense(v, p) @ X) ** 3)

    for g, gd in zip(jax.grad(f, (0, 1))(A.values, X), jax.grad(fd, (0, 1))(A.values, X), strict=True):
        np.testing.assert_allclose(g, gd, rtol=1e-12, atol=1e-14)


def test_vmap_over_vectors_matrices_and_both():
    M = _scipy("non-square")
    A = SparseMatrix.from_scipy(M)
    p = A.pattern
    rng = np.random.default_rng(6)
    X = jnp.asarray(rng.normal(size=(4, M.shape[1])))
    Y = jnp.asarray(rng.normal(size=(4, M.shape[0])))
    V = jnp.asarray(rng.normal(size=(4, M.nnz)))
    XX = jnp.asarray(rng.normal(size=(2, 3, M.shape[1])))
    As = SparseMatrix.stack([A.with_values(v) for v in V])

    def loss(v, x):
        return jnp.sum(jnp.cos(A.with_values(v) @ x))

    def loss_d(v, x):
        return jnp.sum(jnp.cos(_dense(v, p) @ x))

    @jax.jit
    def batched(v, V, X, Y, XX, As):
        mv = lambda v, x: A.with_values(v) @ x  # noqa: E731
        return {
            "vectors": jax.vmap(mv, (None, 0))(v, X),
            "vectors-axis1": jax.vmap(mv, (None, 1), 1)(v, X.T),
            "matrices": jax.vmap(mv, (0, None))(V, X[0]),
            "both": jax.vmap(mv)(V, X),
            "stacked-rmatvec": jax.vmap(lambda A, y: A.rmatvec(y))(As, Y),
            "nested": jax.vmap(jax.vmap(mv, (None, 0)), (None, 0))(v, XX),
            "vmap-of-grad": jax.vmap(jax.grad(loss, (0, 1)))(V, X),
            "grad-of-vmap": jax.grad(lambda v: jnp.sum(jax.vmap(loss, (None, 0))(v, X)))(v),
        }

    out = batched(A.values, V, X, Y, XX, As)
    Md = M.toarray()
    Dv = np.stack([np.asarray(_dense(v, p)) for v in V])
    g = [jax.grad(loss_d, (0, 1))(v, x) for v, x in zip(V, X, strict=True)]
    expected = {
        "vectors": X @ Md.T,
        "vectors-axis1": Md @ X.T,
        "matrices": Dv @ X[0],
        "both": np.einsum("bij,bj->bi", Dv, X),
        "stacked-rmatvec": np.einsum("bij,bi->bj", Dv, Y),
        "nested": XX @ Md.T,
        "vmap-of-grad": (np.stack([a for a, _ in g]), np.stack([b for _, b in g])),
        "grad-of-vmap": sum(jax.grad(loss_d)(A.values, x) for x in X),
    }
    for key, ref in expected.items():
        for a, b in zip(jax.tree.leaves(out[key]), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=key)


def test_disable_jit_runs_the_pure_kernel():
    M = _scipy("empty-rows-cols")
    A = SparseMatrix.from_scipy(M)
    x = np.random.default_rng(8).normal(size=M.shape[1])
    with jax.disable_jit():
        y = A @ jnp.asarray(x)
        g = jax.grad(lambda v: jnp.sum(A.with_values(v) @ jnp.asarray(x)))(A.values)
    _check(y, M, x)
    np.testing.assert_allclose(g, x[A.pattern.indices], rtol=1e-15)


def test_errors_name_the_argument():
    A = SparseMatrix.from_scipy(_scipy("non-square"))
    with pytest.raises(ValueError, match="ncols=57"):
        A @ jnp.ones(23)
    with pytest.raises(ValueError, match="nrows=23"):
        A.rmatvec(jnp.ones(57))
    with pytest.raises(ValueError, match="jax.vmap"):
        SparseMatrix.stack([A, A]) @ jnp.ones(57)


def test_row_plan_width_and_tails():
    """The pure kernel's width: uniform rows use their length; two dense rows go to the tail sums."""
    p = SparseMatrix.from_scipy(_scipy("long-rows")).pattern
    plan = _spmv._plan(p, False)
    lens = np.diff(p.indptr)
    assert plan.width == 3 and sorted(lens[[7, 40]]) == [32, 60]
    assert plan.tail_rows.size == (60 - 3) + (32 - 3)
    assert set(np.unique(plan.tail_rows)) == {7, 40}
    wide = _spmv._plan(SparseMatrix.from_scipy(_scipy("wide-rows")).pattern, False)
    assert wide.width == 45 and wide.tail_rows.size == 0
