"""The solver backend registry: the built-in backends, lists derived from it, and third-party backends.

A backend registered with ``igax.solvers.register_backend`` must work everywhere a built-in one does: in
``solvers.solve`` / ``linear_solve`` (under jit, grad and vmap, through the one ``custom_linear_solve`` path),
in ``factorize``, and in ``fem.solve(method=...)``; and the lists, errors and the automatic choice follow.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from igax import fem, solvers
from igax.fem import library, mesh
from igax.solvers import iterative, linear, newton
from igax.solvers._errors import Status
from igax.solvers.backends import backend_names, get_backend

BUILT_IN = (
    "superlu",
    "pardiso",
    "cholmod",
    "amg-cg",
    "cg",
    "bicgstab",
    "gmres",
    "mg-cg",
    "dist-cg",
    "cocg",
    "minres",
    "block-gmres",
)


class DenseJax(solvers.JaxBackend):
    """Dense LU in JAX: the smallest useful third-party backend."""

    name = "dense-test"

    def solve(self, A, b, *, transpose, options, state):
        M = A.todense().T if transpose else A.todense()
        return jnp.linalg.solve(M, b), jnp.int32(0), jnp.int32(0)


class _DenseFactor(solvers.Factor):
    def __init__(self, M):
        self.M = M

    def solve(self, B, transpose):
        M = self.M.T if transpose else self.M
        if np.linalg.matrix_rank(M) < M.shape[0]:
            raise np.linalg.LinAlgError("rank-deficient matrix")
        return np.linalg.solve(M, B)


class DenseHost(solvers.HostBackend):
    """Dense LU in NumPy on the host, with an option of its own."""

    name = "dense-host-test"
    label = "DenseHost"
    options = frozenset({"pivot_note"})

    def factor(self, pattern, values, kind, options):
        return _DenseFactor(np.asarray(sp.csr_matrix((values, pattern.indices, pattern.indptr)).todense()))


@pytest.fixture
def registered():
    """Register the test backends for one test, and remove them afterwards (the registry is global)."""
    added = [solvers.register_backend(DenseJax()), solvers.register_backend(DenseHost())]
    try:
        yield added
    finally:
        for b in added:
            solvers.unregister_backend(b.name)


def _system(n=12, seed=0, symmetric=False):
    rng = np.random.default_rng(seed)
    M = sp.random(n, n, density=0.3, random_state=rng) + 4.0 * sp.eye(n)
    if symmetric:
        M = M + M.T
    A = solvers.SparseMatrix.from_scipy(sp.csr_matrix(M), symmetric=symmetric)
    return A, jnp.asarray(rng.normal(size=n)), np.asarray(M.todense())


# --- the built-in backends and the lists derived from them --------------------------------------------------
def test_builtin_backends_are_registered_in_the_order_of_the_method_list():
    assert backend_names()[: len(BUILT_IN)] == BUILT_IN
    assert linear.METHODS == backend_names()
    usable = [n for n in BUILT_IN if get_backend(n).available()]
    assert solvers.available_methods() == tuple(usable)
    assert {"superlu", "cg", "bicgstab", "gmres"} <= set(usable)


def test_old_method_lists_are_derived_and_warn():
    old = {
        "DIRECT_METHODS": ("superlu", "pardiso", "cholmod"),
        "ITERATIVE_METHODS": ("cg", "bicgstab", "gmres", "cocg"),
        "MG_METHODS": ("mg-cg",),
    }
    for name, value in old.items():
        with pytest.warns(DeprecationWarning, match=f"linear.{name} is deprecated; use igax.solvers.back"):
            assert getattr(linear, name) == value
    with pytest.raises(AttributeError, match="no attribute 'NO_SUCH_LIST'"):
        linear.NO_SUCH_LIST  # noqa: B018


def test_builtin_backends_declare_what_they_need():
    spd = {n for n in BUILT_IN if get_backend(n).spd}
    assert spd == {"cholmod", "amg-cg", "cg", "mg-cg", "dist-cg"}
    host = {n for n in BUILT_IN if get_backend(n).on_host}
    assert host == {"superlu", "pardiso", "cholmod", "amg-cg"}
    assert get_backend("gmres").options == {"restart"} and get_backend("mg-cg").options == {"hierarchy"}
    expected = "pardiso" if get_backend("pardiso").available() else "superlu"
    assert solvers.default_method() == expected


def test_automatic_choice_on_an_accelerator(monkeypatch):
    # the same choices as before the registry: mg-cg with a hierarchy, else CG for SPD, BiCGSTAB otherwise
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    spd = solvers.SparseMatrix.from_scipy(sp.eye(3, format="csr"), symmetric=True, positive_definite=True)
    sym = solvers.SparseMatrix.from_scipy(sp.eye(3, format="csr"), symmetric=True)
    assert solvers.default_method(spd, hierarchy=object()) == "mg-cg"
    assert solvers.default_method(spd) == "cg"
    assert solvers.default_method(sym) == "bicgstab" and solvers.default_method() == "bicgstab"


def test_pardiso_factor_is_a_factor():
    if not get_backend("pardiso").available():
        pytest.skip("pypardiso is not installed")
    from igax.solvers import _pardiso

    assert issubclass(_pardiso.PardisoFactor, solvers.Factor)


# --- a third-party JAX backend ------------------------------------------------------------------------------
def test_registered_backend_is_listed_and_named_in_errors(registered):
    assert backend_names()[-2:] == ("dense-test", "dense-host-test")
    assert solvers.available_methods()[-2:] == ("dense-test", "dense-host-test")
    with pytest.raises(ValueError, match="dense-host-test") as err:
        solvers.solve(*_system()[:2], method="no-such-method")
    assert "method must be one of" in str(err.value)


def test_jax_backend_solves_like_superlu_under_jit_and_vmap(registered):
    A, b, M = _system()
    x = solvers.solve(A, b, method="dense-test")
    np.testing.assert_allclose(x, np.linalg.solve(M, np.asarray(b)), rtol=1e-12, atol=1e-13)
    r = solvers.linear_solve(A, b, method="dense-test")
    assert int(r.status) == Status.SUCCESS and float(r.residual) < 1e-13
    xj = jax.jit(lambda v, b: solvers.solve(A.with_values(v), b, method="dense-test"))(A.values, b)
    np.testing.assert_allclose(xj, x, rtol=1e-13)
    B = jnp.stack([b, 2.0 * b, -b])
    X = jax.vmap(lambda b: solvers.solve(A, b, method="dense-test"))(B)
    np.testing.assert_allclose(X, np.stack([x, 2 * x, -x]), rtol=1e-12, atol=1e-13)


def test_jax_backend_gradient_goes_through_custom_linear_solve(registered):
    A, b, _ = _system(seed=1)

    def loss(v, b, method):
        return jnp.sum(solvers.solve(A.with_values(v), b, method=method) ** 2)

    gv, gb = jax.grad(loss, argnums=(0, 1))(A.values, b, "dense-test")
    rv, rb = jax.grad(loss, argnums=(0, 1))(A.values, b, "superlu")
    np.testing.assert_allclose(gv, rv, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gb, rb, rtol=1e-10, atol=1e-13)
    # a directional finite difference of the loss in the matrix values
    d = jnp.asarray(np.random.default_rng(2).normal(size=A.nnz))
    h = 1e-6
    fd = (loss(A.values + h * d, b, "dense-test") - loss(A.values - h * d, b, "dense-test")) / (2 * h)
    assert float(jnp.vdot(gv, d)) == pytest.approx(float(fd), rel=1e-7)
    # forward mode too
    _, tangent = jax.jvp(lambda v: loss(v, b, "dense-test"), (A.values,), (d,))
    assert float(tangent) == pytest.approx(float(jnp.vdot(gv, d)), rel=1e-10)


def test_jax_backend_in_factorize_and_fem_solve(registered):
    A, b, M = _system(seed=3)
    F = solvers.factorize(A, method="dense-test")
    assert F.token is None and F.state is None
    np.testing.assert_allclose(F.solve(b), np.linalg.solve(M, np.asarray(b)), rtol=1e-12, atol=1e-13)

    V = fem.LagrangeSpace(mesh.unit_square(4), degree=2)
    K = fem.assemble(library.laplace, V)
    f = fem.assemble(library.source, V, f=0.0)
    bc = fem.DirichletBC(V, None, lambda x: x[0] + 2 * x[1])  # harmonic: P2 reproduces it exactly
    u = fem.solve(K, f, bc=bc, method="dense-test")
    xs = np.asarray(V.dof_coordinates())
    np.testing.assert_allclose(u.coeffs, xs[:, 0] + 2 * xs[:, 1], atol=1e-12)
    # and its gradient in the load equals the built-in direct solver's
    g = jax.grad(lambda f, m: jnp.sum(fem.solve(K, f, bc=bc, method=m).coeffs ** 2), argnums=0)
    np.testing.assert_allclose(g(f, "dense-test"), g(f, "superlu"), rtol=1e-9, atol=1e-12)


# --- a third-party host backend -----------------------------------------------------------------------------
def test_host_backend_factorises_once_per_gradient(registered):
    A, b, M = _system(seed=4)
    solvers.clear_cache()
    solvers.solver_stats.reset()
    loss = lambda v: jnp.sum(solvers.solve(A.with_values(v), b, method="dense-host-test") ** 2)
    g = jax.grad(loss)(A.values)
    assert solvers.solver_stats.factorizations == 1  # the transposed solve reuses the forward factor
    assert solvers.solver_stats.transpose_solves == 1
    ref = jax.grad(lambda v: jnp.sum(solvers.solve(A.with_values(v), b, method="superlu") ** 2))(A.values)
    np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-13)
    x = solvers.solve(A, b, method="dense-host-test", pivot_note="any")  # its own option is accepted
    np.testing.assert_allclose(x, np.linalg.solve(M, np.asarray(b)), rtol=1e-12, atol=1e-13)


def test_host_backend_failure_reports_its_reason(registered):
    M = sp.csr_matrix(np.array([[1.0, 2.0], [2.0, 4.0]]))  # singular, no constant null space
    A = solvers.SparseMatrix.from_scipy(M)
    r = solvers.linear_solve(A, jnp.array([1.0, 0.0]), method="dense-host-test", throw=False)
    assert int(r.status) == Status.SINGULAR and np.all(np.isnan(r.value))
    assert "DenseHost: rank-deficient matrix" in r.message
    with pytest.raises(solvers.SolverError, match="DenseHost: rank-deficient"):
        solvers.solve(A, jnp.array([1.0, 0.0]), method="dense-host-test")


def test_backend_options_are_refused_by_other_backends(registered):
    A, b, _ = _system()
    with pytest.raises(
        ValueError, match='pivot_note= applies only to method="dense-host-test", not "superlu"'
    ):
        solvers.solve(A, b, method="superlu", pivot_note="x")
    with pytest.raises(
        ValueError, match='restart= applies only to method="gmres" / "block-gmres", not "dense-'
    ):
        solvers.solve(A, b, method="dense-test", restart=5)


# --- declarations that change what is checked or chosen -----------------------------------------------------
class _Unavailable(solvers.HostBackend):
    name = "unavailable-test"
    requirement = 'method="unavailable-test" needs the package frobnicate: `pip install frobnicate`.'

    def available(self):
        return False


class _SPDOnly(DenseJax):
    name = "spd-only-test"
    spd = True


class _Preferred(DenseJax):
    name = "preferred-test"
    default_for = ("cpu",)
    priority = 100


def test_unavailable_backend_is_not_listed_and_raises_its_requirement():
    solvers.register_backend(_Unavailable())
    try:
        assert "unavailable-test" in backend_names()
        assert "unavailable-test" not in solvers.available_methods()
        with pytest.raises(ImportError, match="pip install frobnicate"):
            solvers.solve(*_system()[:2], method="unavailable-test")
    finally:
        solvers.unregister_backend("unavailable-test")


def test_spd_backend_refuses_a_matrix_not_flagged_symmetric():
    solvers.register_backend(_SPDOnly())
    try:
        A, b, _ = _system()
        with pytest.raises(ValueError, match='method="spd-only-test" needs a symmetric positive definite'):
            solvers.solve(A, b, method="spd-only-test")
        As, bs, Ms = _system(symmetric=True)
        np.testing.assert_allclose(solvers.solve(As, bs, method="spd-only-test"), np.linalg.solve(Ms, bs))
    finally:
        solvers.unregister_backend("spd-only-test")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU's automatic choice")
def test_default_choice_follows_default_for_and_priority():
    before = solvers.default_method()
    solvers.register_backend(_Preferred())
    try:
        assert solvers.default_method() == "preferred-test"
        A, b, M = _system()
        np.testing.assert_allclose(solvers.solve(A, b), np.linalg.solve(M, np.asarray(b)), rtol=1e-12)
    finally:
        solvers.unregister_backend("preferred-test")
    assert solvers.default_method() == before


def test_registration_errors_say_what_to_do():
    with pytest.raises(TypeError, match="subclass one"):
        solvers.register_backend(object())
    with pytest.raises(ValueError, match='"superlu" is registered already'):
        solvers.register_backend(type("X", (DenseJax,), {"name": "superlu"})())
    with pytest.raises(ValueError, match="non-empty string"):
        solvers.register_backend(type("Nameless", (DenseJax,), {"name": ""})())
    old = get_backend("superlu")
    try:
        assert solvers.register_backend(type("S", (DenseJax,), {"name": "superlu"})(), replace=True)
        assert get_backend("superlu") is not old
    finally:
        solvers.register_backend(old, replace=True)
    assert backend_names()[: len(BUILT_IN)] == BUILT_IN  # replacing keeps the place in the order


# --- one status enumeration ---------------------------------------------------------------------------------
def test_one_status_enumeration_for_linear_krylov_and_newton():
    codes = (linear.SUCCESS, linear.SINGULAR, linear.NOT_CONVERGED, linear.NONFINITE, linear.BREAKDOWN)
    assert codes == (0, 1, 2, 3, 4)
    assert linear.BREAKDOWN is Status.BREAKDOWN and iterative.BREAKDOWN is Status.BREAKDOWN
    assert newton.CONVERGED is Status.SUCCESS and newton.LINEAR_FAILED is Status.SINGULAR
    assert newton.NOT_CONVERGED is linear.NOT_CONVERGED is iterative.NOT_CONVERGED
    assert solvers.Status is Status
    # a Krylov status reported by linear_solve is the enumeration's code
    A, b, _ = _system(symmetric=True)
    r = solvers.linear_solve(A, b, method="cg", maxiter=1, throw=False)
    assert int(r.status) == Status.NOT_CONVERGED
    assert r.message.startswith("the iterative solver did not converge")
