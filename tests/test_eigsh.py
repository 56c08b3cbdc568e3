"""solvers.eigsh: closed-form spectra (Laplacian on the square, Mindlin plate), the 2p convergence of spline
eigenvalues, ARPACK vs LOBPCG, eigenvalue and eigenvector gradients (finite differences, Taylor rate 2),
repeated eigenvalues and bad input."""

import importlib.util
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp

from igax import _config, fem, solvers
from igax.fem import library

PI = np.pi
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _free(V):
    return np.setdiff1d(np.arange(V.ndofs), fem.DirichletBC(V, None, 0.0).dofs)


def _square(degree, elements):
    """Stiffness and mass of the unit square restricted to the interior dofs (homogeneous Dirichlet)."""
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=degree, elements=elements))
    free = _free(V)
    A = solvers.submatrix(fem.assemble(library.laplace, V), free)
    M = solvers.submatrix(fem.assemble(library.mass, V), free)
    return V, free, A, M


def _laplace_exact(k):
    return PI**2 * np.sort([m * m + n * n for m in range(1, 12) for n in range(1, 12)])[:k]


@pytest.fixture(scope="module")
def square3():
    return _square(3, 12)


@pytest.fixture(scope="module")
def square3_pairs(square3):
    _, _, A, M = square3
    return {m: solvers.eigen_solve(A, M, k=10, method=m) for m in ("arpack", "lobpcg")}


# -- closed forms --------------------------------------------------------------------------------------------
def test_first_ten_laplacian_eigenvalues_of_the_square(square3, square3_pairs):
    _, _, A, M = square3
    r = square3_pairs["arpack"]
    assert int(r.status) == 0 and float(r.residuals.max()) < 1e-10
    # Degree 3, 12 x 12 elements: relative errors 1e-8 (lambda_11) to 6.4e-5 (lambda_13, lambda_31).
    np.testing.assert_allclose(np.asarray(r.values), _laplace_exact(10), rtol=1e-4)
    # M-orthonormal eigenvectors that are eigenvectors.
    V = np.asarray(r.vectors)
    Ms, As = M.to_scipy(), A.to_scipy()
    np.testing.assert_allclose(V.T @ (Ms @ V), np.eye(10), atol=1e-12)
    np.testing.assert_allclose(As @ V, (Ms @ V) * np.asarray(r.values), atol=1e-8 * float(r.values[-1]))
    assert float(r.next_value) == pytest.approx(PI**2 * 18, rel=1e-3)  # lambda_33, the 11th


def test_arpack_and_lobpcg_agree(square3_pairs):
    a, b = square3_pairs["arpack"], square3_pairs["lobpcg"]
    assert int(b.status) == 0 and 0 < int(b.iterations) < 1000 and float(b.residuals.max()) <= 1e-8
    np.testing.assert_allclose(np.asarray(b.values), np.asarray(a.values), rtol=1e-11)
    # Separated modes agree up to nothing (the sign is fixed); repeated ones span the same space.
    for i in (0, 3):
        np.testing.assert_allclose(np.asarray(b.vectors[:, i]), np.asarray(a.vectors[:, i]), atol=1e-6)


def _mindlin_exact(E, nu, rho, kappa, h, count):
    """Simply supported (hard) square Mindlin plate: w = W sin sin, theta_x = X cos sin, theta_y = Y sin cos
    separate the equations; each (m, n) gives a 3 x 3 generalised problem whose lowest root is the flexural
    frequency (a closed form; the other two roots are thickness-shear modes, far above)."""
    G, D = E / (2 * (1 + nu)), E * h**3 / (12 * (1 - nu**2))
    s = kappa * G * h
    out = []
    for m in range(1, 8):
        for n in range(1, 8):
            a, b = m * PI, n * PI
            K = np.array(
                [
                    [s * (a * a + b * b), -s * a, -s * b],
                    [-s * a, D * (a * a + (1 - nu) / 2 * b * b) + s, D * a * b * (1 + nu) / 2],
                    [-s * b, D * a * b * (1 + nu) / 2, D * (b * b + (1 - nu) / 2 * a * a) + s],
                ]
            )
            Mm = np.diag([rho * h, rho * h**3 / 12, rho * h**3 / 12])
            out.append(sla.eigh(K, Mm, eigvals_only=True)[0])
    return np.sort(out)[:count]


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_simply_supported_mindlin_plate_matches_the_closed_form():
    mp = _load_example("modal_plate")
    E, nu, rho, kappa, h = 1.0, 0.3, 1.0, 5.0 / 6.0, 0.05
    geo = fem.geometry.rectangle().refine(degree=3, elements=12)
    V, S = fem.SplineSpace(geo, shape=(3,)), fem.SplineSpace(geo)
    # Hard simple support: w = 0 everywhere on the boundary, the tangential rotation 0 on each edge.
    fixed = np.concatenate(
        [
            fem.DirichletBC(V, None, 0.0, component=0).dofs,
            fem.DirichletBC(V, ["bottom", "top"], 0.0, component=1).dofs,
            fem.DirichletBC(V, ["left", "right"], 0.0, component=2).dofs,
        ]
    )
    free = np.setdiff1d(np.arange(V.ndofs), fixed)
    forms = mp.mindlin_forms(E=E, nu=nu, rho=rho, kappa=kappa)
    lam, _ = mp.frequencies(V, S, free, jnp.full(S.ndofs, h), k=6, forms=forms)
    exact = _mindlin_exact(E, nu, rho, kappa, h, 6)
    # Measured: 8e-7 (lambda_11) to 1.7e-4 (lambda_13); the Kirchhoff value of lambda_11 is 1.1% higher.
    np.testing.assert_allclose(np.asarray(lam), exact, rtol=3e-4)
    kirchhoff = 4 * PI**4 * E * h**2 / (12 * (1 - nu**2) * rho)
    assert 0.005 < kirchhoff / float(lam[0]) - 1 < 0.02


@pytest.mark.parametrize("degree", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_spline_eigenvalues_converge_at_rate_2p(degree):
    # lambda_1 = 2 pi^2 on the unit square; degree p converges like h^(2p).
    els = (4, 6, 8)
    errs = []
    for n in els:
        _, _, A, M = _square(degree, n)
        w, _ = solvers.eigsh(A, M, k=1)
        errs.append(float(w[0]) / (2 * PI**2) - 1)
    rate = -np.polyfit(np.log(els), np.log(errs), 1)[0]
    assert abs(rate - 2 * degree) < 0.3, (errs, rate)


# -- derivatives ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def field_problem():
    """Laplacian-type problem on the square with a conductivity field kappa and a density field rho (both
    spline Fields on the space itself): all computed eigenvalues are simple."""
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=6))
    free = _free(V)
    n = V.ndofs
    kappa0 = jnp.asarray(1.0 + 0.3 * np.sin(np.arange(n) * 0.37))
    rho0 = jnp.asarray(1.0 + 0.2 * np.cos(np.arange(n) * 0.53))

    def pairs(kappa, rho, method="arpack", k=4):
        A = solvers.submatrix(fem.assemble(library.diffusion, V, kappa=fem.Field(V, kappa)), free)
        M = solvers.submatrix(fem.assemble(library.reaction, V, c=fem.Field(V, rho)), free)
        return solvers.eigsh(A, M, k=k, method=method)

    return V, free, kappa0, rho0, pairs


def _directional(f, x, d, h):
    return (f(x + h * d) - f(x - h * d)) / (2 * h)


def test_eigenvalue_gradient_matches_finite_differences_and_taylor(field_problem):
    V, free, kappa0, rho0, pairs = field_problem
    c = jnp.array([1.0, 0.5, -0.3, 0.2])

    def loss(p):
        w, _ = pairs(p[: V.ndofs], p[V.ndofs :])
        return jnp.dot(c, w)

    p0 = jnp.concatenate([kappa0, rho0])
    d = jnp.asarray(np.random.default_rng(0).standard_normal(p0.shape))
    g = jax.grad(loss)(p0)
    fd = _directional(loss, p0, d, 1e-5)
    assert float(jnp.dot(g, d)) == pytest.approx(float(fd), rel=1e-6)
    # Taylor: |L(p + h d) - L(p) - h g.d| falls like h^2.
    L0, gd = float(loss(p0)), float(jnp.dot(g, d))
    hs = np.array([1e-2, 5e-3, 2.5e-3])
    rem = [abs(float(loss(p0 + h * d)) - L0 - h * gd) for h in hs]
    rate = np.polyfit(np.log(hs), np.log(rem), 1)[0]
    assert abs(rate - 2.0) < 0.1, (rem, rate)


@pytest.mark.parametrize("method", ["arpack", "lobpcg"])
def test_eigenvector_gradient_of_a_separated_mode(field_problem, method):
    V, free, kappa0, rho0, pairs = field_problem
    weights = jnp.asarray(np.cos(np.arange(free.shape[0]) * 0.21))

    def loss(kappa):
        _, phi = pairs(kappa, rho0, method=method)
        return jnp.dot(weights, phi[:, 1]) + jnp.sum(phi[:, 0] ** 3)

    d = jnp.asarray(np.random.default_rng(1).standard_normal(kappa0.shape))
    g = jax.grad(loss)(kappa0)
    fd = _directional(loss, kappa0, d, 1e-5)
    assert float(jnp.dot(g, d)) == pytest.approx(float(fd), rel=1e-6)


def test_eigenvalue_gradient_costs_no_solve(field_problem):
    V, _, kappa0, rho0, pairs = field_problem
    pairs(kappa0, rho0)
    solvers.solver_stats.reset()
    jax.grad(lambda k: pairs(k, rho0)[0][0])(kappa0)
    s = solvers.solver_stats
    # The forward's factorisation of A - sigma M is found in the cache and no solve is needed at all.
    assert s.factorizations == 0 and s.solves == 0, s
    jax.grad(lambda k: pairs(k, rho0)[1][:, 0].sum())(kappa0)
    assert s.factorizations == 0 and 0 < s.solves < 30, s  # a few preconditioned CG steps, multi-RHS


# -- repeated eigenvalues ------------------------------------------------------------------------------------
def test_repeated_eigenvalues_raise_the_documented_error(square3, square3_pairs):
    _, _, A, M = square3
    w = square3_pairs["arpack"].values
    assert float(w[2] - w[1]) < 1e-9 * float(w[1])  # lambda_12 = lambda_21 (the mesh is symmetric)

    def grad_of(f, k=10):  # k of the fixture: its compiled forward program is reused
        return jax.grad(lambda v: f(*solvers.eigsh(A.with_values(v), M, k=k)))(A.values)

    with pytest.raises(solvers.RepeatedEigenvalueError, match=r"lambda_1 = .* and lambda_2 = .*repeated"):
        grad_of(lambda w, V: w[1])
    with pytest.raises(solvers.RepeatedEigenvalueError, match="use the sum or the mean"):
        grad_of(lambda w, V: V[:, 2].sum())
    # The cluster straddles the end of the requested set (k = 2): lambda_1 alone is still undefined.
    with pytest.raises(solvers.RepeatedEigenvalueError, match="the last requested eigenvalue and the next"):
        grad_of(lambda w, V: w[1], k=2)
    # Quantities symmetric in the cluster, and modes outside it, have derivatives: FD check of the sum.
    g = grad_of(lambda w, V: w[1] + w[2] + w[0])
    d = jnp.asarray(np.random.default_rng(2).standard_normal(A.values.shape))
    d = A.with_values(d).to_scipy()
    d = jnp.asarray(((d + d.T) / 2).tocsr().sorted_indices().data)
    loss = lambda v: jnp.sum(solvers.eigsh(A.with_values(v), M, k=10)[0][:3])  # noqa: E731
    assert float(jnp.dot(g, d)) == pytest.approx(float(_directional(loss, A.values, d, 1e-6)), rel=1e-6)


# -- jit, failures and bad input -----------------------------------------------------------------------------
def test_eigsh_under_jit_vmap_and_with_the_identity(square3, square3_pairs):
    _, _, A, M = square3
    w = jax.jit(lambda v: solvers.eigsh(A.with_values(v), M, k=10)[0])(A.values)
    np.testing.assert_allclose(np.asarray(w), np.asarray(square3_pairs["arpack"].values), rtol=1e-12)
    K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (40, 40)).tocsr()
    B = solvers.SparseMatrix.from_scipy(K)
    w, _ = solvers.eigsh(B, k=3)  # M = identity
    exact = 2 - 2 * np.cos(np.arange(1, 4) * PI / 41)
    np.testing.assert_allclose(np.asarray(w), exact, rtol=1e-12)
    # vmap over a batch of matrices (one host solve after the other).
    W = jax.vmap(lambda X: solvers.eigsh(X, k=3)[0])(solvers.SparseMatrix.stack([B, 3.0 * B]))
    np.testing.assert_allclose(np.asarray(W), np.stack([exact, 3 * exact]), rtol=1e-12)


def test_failures_are_reported():
    n = 60
    K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (n, n)).tolil()
    K[0, 0] = K[n - 1, n - 1] = 1.0  # pure Neumann: singular, constant null space
    A = solvers.SparseMatrix.from_scipy(K.tocsr())
    with pytest.raises(solvers.SolverError, match="sigma below the lowest eigenvalue"):
        solvers.eigsh(A, k=2, method="arpack")
    w, _ = solvers.eigsh(A, k=2, sigma=-1.0)
    assert abs(float(w[0])) < 1e-12 and float(w[1]) == pytest.approx(2 - 2 * np.cos(PI / n), rel=1e-10)
    with pytest.raises(solvers.SolverError, match=r"did not converge.*residual .*3 iterations"):
        solvers.eigsh(A, k=2, method="lobpcg", maxiter=3)
    r = solvers.eigen_solve(A, k=2, method="lobpcg", maxiter=3, throw=False)
    assert int(r.status) == solvers.Status.NOT_CONVERGED and float(r.residuals.max()) > 1e-8


def test_bad_input_is_rejected_with_the_fix():
    K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (20, 20)).tocsr()
    A = solvers.SparseMatrix.from_scipy(K)
    with pytest.raises(ValueError, match=r"1 <= k < n = 20"):
        solvers.eigsh(A, k=20)
    with pytest.raises(ValueError, match=r"1 <= k < n"):
        solvers.eigsh(A, k=0)
    with pytest.raises(ValueError, match="must be square"):
        solvers.eigsh(solvers.SparseMatrix.from_scipy(sp.random(4, 5, 0.5, format="csr")), k=1)
    with pytest.raises(ValueError, match="same shape"):
        solvers.eigsh(A, solvers.SparseMatrix.from_scipy(sp.eye(10, format="csr")), k=2)
    with pytest.raises(ValueError, match=r"diagonal entry 3 is -1 <= 0"):
        solvers.eigsh(
            A, solvers.SparseMatrix.from_scipy(sp.diags(np.r_[1.0, 1, 1, -1, np.ones(16)]).tocsr()), k=2
        )
    with pytest.raises(ValueError, match="not flagged symmetric"):
        solvers.eigsh(A.with_values(A.values, symmetric=False), k=2)
    with pytest.raises(TypeError, match="SparseMatrix"):
        solvers.eigsh(K, k=2)
    with pytest.raises(ValueError, match="method must be one of"):
        solvers.eigsh(A, k=2, method="dense")
    with pytest.raises(ValueError, match="sigma applies to method='arpack'"):
        solvers.eigsh(A, k=2, method="lobpcg", sigma=1.0)
    with pytest.raises(ValueError, match="needs n >= 3"):
        solvers.eigsh(A, k=6, method="lobpcg")
    with pytest.raises(ValueError, match="keep must be sorted"):
        solvers.submatrix(A, [3, 1])


def test_float32_warns_once_and_still_solves(monkeypatch):
    monkeypatch.setattr(_config, "_warned", set())
    K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (30, 30)).tocsr()
    with jax.enable_x64(False), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        A = solvers.SparseMatrix.from_scipy(K, dtype=jnp.float32)
        w, _ = solvers.eigsh(A, k=2)
    assert w.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(w), 2 - 2 * np.cos(np.arange(1, 3) * PI / 31), rtol=1e-3)
    assert [c.category for c in caught] == [_config.Float32Warning]
    assert "eigsh" in str(caught[0].message)


def test_submatrix_is_the_principal_submatrix_and_differentiable():
    K = sp.random(8, 8, 0.5, format="csr", random_state=3) + sp.eye(8)
    A = solvers.SparseMatrix.from_scipy(K)
    keep = np.array([0, 2, 3, 7])
    np.testing.assert_array_equal(
        np.asarray(solvers.submatrix(A, keep).todense()), K.toarray()[np.ix_(keep, keep)]
    )
    g = jax.grad(lambda v: solvers.submatrix(A.with_values(v), keep).values.sum())(A.values)
    G = A.with_values(g).to_scipy().toarray()
    mask = np.zeros((8, 8), bool)
    mask[np.ix_(keep, keep)] = True
    np.testing.assert_array_equal(G, (K.toarray() != 0) & mask)


# -- what the compiled programs hold (issue 15) --------------------------------------------------------------
@pytest.mark.parametrize("method, with_mass", [("arpack", False), ("lobpcg", True)])
def test_programs_take_index_arrays_as_arguments(method, with_mass, monkeypatch):
    """The forward and backward programs hold no array constants of their own: the diagonal slots, the slots
    of A's and M's entries in A - sigma M and the sign vector are arguments. (The CSR pattern that the sparse
    product's lowering writes into the program is the known exception, left out by its location.)"""
    import re

    from igax.solvers import _eigen_core as core

    _, _, A, M = _square(2, 6)
    texts = []
    for name in ("_forward_program", "_backward_program"):
        real = getattr(core, name)

        def spy(*args, real=real):
            texts.append(real.lower(*args).as_text(debug_info=True))
            return real(*args)

        monkeypatch.setattr(core, name, spy)
    kw = {"sigma": -1.0} if method == "arpack" else {}

    def loss(v):
        r = solvers.eigen_solve(A.with_values(v), M if with_mass else None, 3, method=method, **kw)
        return jnp.sum(r.values) + jnp.sum(r.vectors[:, 0] ** 3)

    g = jax.grad(loss)(A.values)
    assert np.all(np.isfinite(g)) and len(texts) == 2
    for text in texts:
        locs = dict(re.findall(r"^(#loc\d+) = loc\((.*)\)$", text, re.M))
        found = []
        for line in text.splitlines():
            m = re.search(r"stablehlo\.constant dense.*: tensor<([0-9x]+)x([a-z0-9]+)>", line)
            loc = re.search(r"loc\((#loc\d+)\)", line)
            if m and not (loc and "igax_spmv" in locs.get(loc.group(1), "")):
                shape = tuple(int(x) for x in m.group(1).split("x"))
                if int(np.prod(shape)) > 4:  # (a PRNG key is 2-4 words)
                    found.append((m.group(2), shape))
        assert not found, f"array constants in the {method} program: {found}"
