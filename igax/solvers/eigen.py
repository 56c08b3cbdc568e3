"""Differentiable eigenvalues: ``eigsh(A, M, k)``, the generalised symmetric problem ``A phi = lambda M phi``.

Two methods, one result:

* ``method="arpack"`` (the default on CPU): SciPy's ARPACK in shift-invert mode on the host, through
  ``jax.pure_callback``. ``A - sigma M`` is factorised by igax's linear-solver backends (PARDISO where
  installed, else SuperLU) and cached with the solves' factorisations (:mod:`igax.solvers._arpack`).
* ``method="lobpcg"`` (the default on GPU/TPU): block LOBPCG for the generalised problem in JAX
  (:mod:`igax.solvers._lobpcg`), preconditioned by Jacobi or a callable of the user's; everything stays on the
  device. It finds the lowest eigenvalues (no shift).

Both return the ``k`` eigenvalues nearest ``sigma`` (the lowest ones for the default ``sigma=0`` of an SPD
``A``) in ascending order and ``M``-orthonormal eigenvectors with a fixed sign, and both are differentiated by
the same rule (a ``custom_vjp``; reverse mode only):

* eigenvalues: ``d lambda_i = phi_i^T (dA - lambda_i dM) phi_i`` for ``A.values`` and ``M.values``, hence for
  anything upstream (assembled coefficient fields, control points). No solve: the cost is a few passes over
  the stored entries, far below that of the eigensolve.
* eigenvectors: ``d phi_i = -S_i (dA - lambda_i dM) phi_i - (phi_i^T dM phi_i / 2) phi_i`` with ``S_i`` the
  inverse of ``A - lambda_i M`` on the ``M``-orthogonal complement of ``phi_i``. Its part along the computed
  modes is their explicit sum; the rest is one CG solve per requested eigenvector, deflated against the
  computed modes (where ``A - lambda_i M`` is positive definite when the computed modes are the lowest ones)
  and preconditioned by the forward factorisation of ``A - sigma M`` (``arpack``, reused through the cache:
  a few multi-right-hand-side host solves) or by the LOBPCG preconditioner. It runs only when an eigenvector's
  cotangent is non-zero, so eigenvalue gradients never pay for it.

Repeated eigenvalues: the derivative of one eigenvalue of a cluster, and of any eigenvector in it, is not
defined (the eigenvectors of a repeated eigenvalue are any basis of its eigenspace). igax computes one
eigenpair beyond the ``k`` requested to see a cluster that straddles the end of the set, and the backward
pass raises :class:`RepeatedEigenvalueError` when such a derivative is asked for; a loss that treats the
cluster symmetrically (its sum, or its mean) has a defined gradient and gets it.

A failed solve is never silent: :class:`EigenResult` carries a :class:`~igax.solvers.Status`, the iterations
and the relative residual of every pair, and ``throw=True`` (the default) raises
:class:`~igax.solvers.SolverError` with them.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._config import check_float64
from igax._errors import error_if
from igax.solvers import _arpack, _lobpcg
from igax.solvers._errors import Status
from igax.solvers._spmv import spmv
from igax.solvers.backends import get_backend
from igax.solvers.linear import SolverError, _host_solve, default_method
from igax.solvers.sparse import CSRPattern, SparseMatrix

__all__ = ["EigenResult", "RepeatedEigenvalueError", "eigen_solve", "eigsh", "submatrix"]

METHODS = ("arpack", "lobpcg")


class RepeatedEigenvalueError(SolverError):
    """The derivative of an eigenvector, or of one eigenvalue of a (near-)repeated cluster, was requested."""


class EigenResult(eqx.Module):
    """The eigenpairs of ``A phi = lambda M phi`` with diagnostics (from :func:`eigen_solve`).

    Attributes:
        values: ``(k,)`` eigenvalues, ascending; NaN where not computed when ``status`` is not 0.
        vectors: ``(n, k)`` eigenvectors, ``M``-orthonormal (``vectors.T @ M @ vectors = I``), each signed so
            that its product with a fixed pseudo-random vector is positive.
        status: a :class:`~igax.solvers.Status` code: 0 success, 1 ``A - sigma M`` singular (arpack),
            2 not converged, 3 NaN or inf in the input, 4 ARPACK failed.
        iterations: LOBPCG iterations, or ARPACK's solves with the factorisation of ``A - sigma M``.
        residuals: ``(k,)`` relative residuals ``|A phi - lambda M phi| / (|A phi| + |lambda| |M phi| + d)``,
            ``d = eps^(1/3) (|A| + |lambda| |M|) |phi|`` (norms: largest absolute row sums), which keeps the
            measure meaningful for a zero eigenvalue.
        next_value: the eigenvalue after the last one returned (computed to detect a cluster that continues
            beyond the set; ``inf`` when ``k = n - 1``).
    """

    values: jax.Array
    vectors: jax.Array
    status: jax.Array
    iterations: jax.Array
    residuals: jax.Array
    next_value: jax.Array


# -- the static configuration of one solve -------------------------------------------------------------------
class _Config(NamedTuple):
    pa: CSRPattern
    pm: CSRPattern
    ps: CSRPattern  # pattern of A - sigma M (the union of A's and M's)
    method: str
    factor: str  # linear backend of the shift-invert factorisation (arpack)
    kind: str
    sigma: float
    nev: int  # pairs computed: k + 1 (one beyond the request) unless k = n - 1
    k: int
    tol: float
    maxiter: int
    cluster_rtol: float
    grad_rtol: float
    grad_maxiter: int
    preconditioner: object  # None or a callable (hashable by identity)
    block: int  # LOBPCG block size


@functools.lru_cache(maxsize=16)
def _union(pa: CSRPattern, pm: CSRPattern):
    """The pattern of ``A + M`` and the slots of ``A``'s and ``M``'s entries in it (once per pair)."""
    if pa == pm:
        ident = np.arange(pa.nnz)
        return pa, ident, ident
    rows = np.concatenate([pa.rows, pm.rows])
    cols = np.concatenate([pa.indices, pm.indices])
    ps, slot = CSRPattern.from_coo(rows, cols, pa.shape)
    return ps, slot[: pa.nnz], slot[pa.nnz :]


def _shifted(cfg: _Config, va, vm):
    _, ia, im = _union(cfg.pa, cfg.pm)
    if cfg.pa == cfg.pm:
        return va - cfg.sigma * vm
    return jnp.zeros(cfg.ps.nnz, va.dtype).at[ia].add(va).at[im].add(-cfg.sigma * vm)


def _sign_vector(n: int, dtype):
    """A fixed vector whose product with an eigenvector decides its sign (pseudo-random: symmetric and
    antisymmetric modes alike have a clearly non-zero product with it)."""
    return jnp.asarray(np.cos(0.7 * np.arange(n) + 0.3) + 0.5 * np.sin(2.3 * np.arange(n)), dtype)


def _normalise(w, V):
    order = jnp.argsort(w)
    w, V = w[order], V[:, order]
    s = jnp.sign(_sign_vector(V.shape[0], V.dtype) @ V)
    return w, V * jnp.where(s == 0, 1.0, s)[None, :]


def _norm(A: SparseMatrix):
    """The largest absolute row sum of ``A`` (its infinity norm), one product with ``|A|``."""
    return jnp.max(A.with_values(jnp.abs(A.values)) @ jnp.ones(A.shape[1], A.values.dtype))


def _jacobi(cfg: _Config, va):
    A = SparseMatrix(va, cfg.pa, symmetric=True)
    d = jnp.abs(A.diagonal())
    d = jnp.where(d > 0, d, 1.0)
    return lambda R: R / d[:, None]


# -- the forward solve ---------------------------------------------------------------------------------------
def _forward(cfg: _Config, va, vm):
    """``(w (nev,), V (n, nev), status, iterations, token, vs)`` (unsorted for arpack; token -1: lobpcg)."""
    n = cfg.pa.shape[0]
    A = SparseMatrix(va, cfg.pa, symmetric=True)
    M = SparseMatrix(vm, cfg.pm, symmetric=True)
    if cfg.method == "arpack":
        vs = _shifted(cfg, va, vm)
        cb = functools.partial(
            _arpack.arpack_callback,
            pa=cfg.pa,
            pm=cfg.pm,
            ps=cfg.ps,
            kind=cfg.kind,
            factor=cfg.factor,
            sigma=cfg.sigma,
            nev=cfg.nev,
            tol=cfg.tol,
            maxiter=cfg.maxiter,
        )
        i32 = jax.ShapeDtypeStruct((), jnp.int32)
        shapes = (jax.ShapeDtypeStruct((cfg.nev,), va.dtype), jax.ShapeDtypeStruct((n, cfg.nev), va.dtype))
        w, V, token, status, _, nops = jax.pure_callback(
            cb, shapes + (i32,) * 4, va, vm, vs, vmap_method="sequential"
        )
        return w, V, status, nops, token, vs
    precond = cfg.preconditioner if cfg.preconditioner is not None else _jacobi(cfg, va)
    # A fixed random start (reproducible runs); the barrier keeps XLA from constant-folding the generator over
    # (n, block) entries at compile time.
    key = jax.lax.optimization_barrier(jax.random.PRNGKey(0))
    X0 = jax.random.normal(key, (n, cfg.block), va.dtype)
    lam, X, it, res = _lobpcg.lobpcg(
        A.matvec,
        M.matvec,
        precond,
        X0,
        norms=(_norm(A), _norm(M)),
        nwant=cfg.nev,
        tol=cfg.tol,
        maxiter=cfg.maxiter,
    )
    ok = jnp.all(res[: cfg.nev] <= cfg.tol)
    status = jnp.where(ok, Status.SUCCESS, Status.NOT_CONVERGED).astype(jnp.int32)
    return lam[: cfg.nev], X[:, : cfg.nev], status, it, jnp.int32(-1), jnp.zeros((0,), va.dtype)


@functools.partial(jax.jit, static_argnums=0)
def _forward_program(cfg: _Config, va, vm):
    # One compiled program per configuration: eagerly, the steps would compile one small program each.
    w, V, status, it, token, vs = _forward(cfg, va, vm)
    w, V = _normalise(w, V)
    return w, V, status, it, token, vs


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _eig(cfg: _Config, va, vm):
    return _forward_program(cfg, va, vm)[:4]


def _eig_fwd(cfg, va, vm):
    w, V, status, it, token, vs = _forward_program(cfg, va, vm)
    return (w, V, status, it), (va, vm, w, V, token, vs)


def _sampled(values, pattern, P, Q):
    """``out[p] = sum_c P[row(p), c] Q[col(p), c]`` over the stored entries: the values-cotangent of the
    product ``A @ Q`` (one pass in CSR order with the native kernel; no index arrays in the program)."""
    _, vjp = jax.vjp(lambda v: spmv(v, pattern, Q), values)
    return vjp(P)[0]


# -- the backward pass ---------------------------------------------------------------------------------------
def _cluster_check(cfg: _Config, w, ct_w, ct_V):
    """``(bad, index)``: whether a requested derivative is undefined (a cluster), and the first such pair."""
    scale = jnp.maximum(jnp.abs(w[1:]), jnp.abs(w[:-1]))
    scale = jnp.maximum(scale, jnp.max(jnp.abs(w)) * jnp.finfo(w.dtype).eps)
    close = jnp.abs(w[1:] - w[:-1]) <= cfg.cluster_rtol * scale  # (nev - 1,) pair (i, i + 1) in one cluster
    cmax = jnp.max(jnp.abs(ct_w))
    differ = jnp.abs(ct_w[1:] - ct_w[:-1]) > 1e-10 * cmax  # the loss weighs the pair's eigenvalues unequally
    vec = jnp.any(ct_V != 0, axis=0)  # (nev,) eigenvector cotangents
    bad = close & (differ | vec[1:] | vec[:-1])
    return jnp.any(bad), jnp.argmax(bad)


def _repeated_error(cfg: _Config, index, lo, hi):
    i = int(index)
    what = "the eigenvalue" if i + 1 < cfg.k else "the last requested eigenvalue and the next one"
    gap = abs(float(hi) - float(lo)) / max(abs(float(hi)), 1e-300)
    return RepeatedEigenvalueError(
        f"eigsh: the derivative asked for is undefined: {what} lambda_{i} = {float(lo):.10g} and "
        f"lambda_{i + 1} = {float(hi):.10g} are (near-)repeated (relative gap {gap:.1e} <= cluster_rtol = "
        f"{cfg.cluster_rtol:.0e}), and the loss depends on an eigenvector of this cluster or on its "
        "eigenvalues unequally. Only quantities symmetric in a cluster have derivatives: use the sum or the "
        "mean of the repeated eigenvalues (and no eigenvector of them), break the symmetry that makes them "
        "coincide, or lower cluster_rtol if the eigenvalues are distinct but close."
    )


def _cg_error(cfg: _Config, it, res):
    return SolverError(
        f"eigsh: the solve for the eigenvector gradient did not converge (relative residual {float(res):.2e} "
        f"after {int(it)} CG iterations, grad_rtol = {cfg.grad_rtol:.0e}). It needs A - lambda_i M to be "
        "positive definite outside the computed modes, i.e. the computed modes must be the lowest ones: use "
        "a sigma below the lowest eigenvalue (method='arpack'), a better preconditioner (method='lobpcg'), "
        "or raise grad_maxiter."
    )


@functools.partial(jax.jit, static_argnums=(0, 4))
def _backward_program(cfg: _Config, res, ct_w, ct_V, vectors: bool):
    """The cotangents of ``A.values`` and ``M.values`` and the diagnostics of the checks (compiled once per
    configuration; the checks raise outside, so that an eager gradient raises igax's own exception)."""
    va, vm, w, V, token, vs = res
    # The cotangent of the vectors is often a padding of a few columns with zeros: without the barrier XLA
    # constant-folds the tests on it below (an (n, k) reduction: 4 s of compilation at n = 100k).
    ct_V = jax.lax.optimization_barrier(ct_V)
    A = SparseMatrix(va, cfg.pa, symmetric=True)
    M = SparseMatrix(vm, cfg.pm, symmetric=True)
    bad, index = _cluster_check(cfg, w, ct_w, ct_V)

    def vector_part():
        # y_i = S_i vbar_i: the computed modes explicitly, the rest by deflated CG.
        dl = w[:, None] - w[None, :]  # (j, i): lambda_j - lambda_i
        inv = jnp.where(jnp.eye(w.shape[0], dtype=bool) | (dl == 0), 0.0, 1.0 / jnp.where(dl == 0, 1.0, dl))
        y_in = V @ (inv * (V.T @ ct_V))
        MV = M @ V

        def op(Z):
            return A @ Z - (M @ Z) * w[None, :]

        if cfg.method == "arpack":

            def precond(R):
                X, _, _ = _host_solve(
                    vs, token, R.T, False, pattern=cfg.ps, kind=cfg.kind, method=cfg.factor, options=()
                )
                return X.T
        else:
            precond = cfg.preconditioner if cfg.preconditioner is not None else _jacobi(cfg, va)
        Z, it, ok, r = _lobpcg.deflated_cg(
            op, precond, V, MV, ct_V, tol=cfg.grad_rtol, maxiter=cfg.grad_maxiter
        )
        return y_in + Z, it, jnp.all(ok), jnp.max(r)

    def no_vector_part():
        return jnp.zeros_like(V), jnp.int32(0), jnp.bool_(True), jnp.zeros((), V.dtype)

    if vectors:
        Y, cg_it, cg_ok, cg_res = jax.lax.cond(jnp.any(ct_V != 0), vector_part, no_vector_part)
    else:  # known to be zero: not even compiled
        Y, cg_it, cg_ok, cg_res = no_vector_part()
    d = jnp.sum(ct_V * V, axis=0)  # vbar_i . phi_i
    # dA = sum_i c_i phi_i phi_i^T - sym(y_i phi_i^T),
    # dM = sum_i (-c_i lambda_i - d_i / 2) phi_i phi_i^T + lambda_i sym(y_i phi_i^T), on the stored entries.
    h = 0.5 * Y
    ga = _sampled(va, cfg.pa, jnp.concatenate([V * ct_w - h, -V], 1), jnp.concatenate([V, h], 1))
    a = -ct_w * w - 0.5 * d
    gm = _sampled(vm, cfg.pm, jnp.concatenate([V * a + h * w, V * w], 1), jnp.concatenate([V, h], 1))
    return ga, gm, (bad, index, w[index], w[index + 1], cg_ok, cg_it, cg_res)


def _eig_bwd(cfg, res, cts):
    ct_V = cts[1]
    # An eager gradient of eigenvalues only: the eigenvector part is known to vanish, so it is not compiled.
    vectors = isinstance(ct_V, jax.core.Tracer) or bool(np.any(np.asarray(ct_V)))
    ga, gm, (bad, index, lo, hi, cg_ok, cg_it, cg_res) = _backward_program(cfg, res, cts[0], ct_V, vectors)
    ga = error_if(ga, bad, functools.partial(_repeated_error, cfg), index, lo, hi)
    ga = error_if(ga, ~cg_ok, functools.partial(_cg_error, cfg), cg_it, cg_res)
    return ga, gm


_eig.defvjp(_eig_fwd, _eig_bwd)


@functools.partial(jax.jit, static_argnums=0)
def _diagnostics(cfg: _Config, va, vm, w, V, status):
    """Exact residuals of the returned pairs, the final status, the next eigenvalue (not differentiated)."""
    va, vm, ws, Vs = jax.lax.stop_gradient((va, vm, w, V))
    k = cfg.k
    A = SparseMatrix(va, cfg.pa, symmetric=True)
    M = SparseMatrix(vm, cfg.pm, symmetric=True)
    res = _lobpcg.residual_norms(A @ Vs, M @ Vs, ws, Vs, (_norm(A), _norm(M)))
    status = jnp.where((status == Status.SUCCESS) & ~jnp.all(jnp.isfinite(ws[:k])), Status.NONFINITE, status)
    if cfg.method == "arpack":
        # ARPACK's own test is on the shift-inverted operator; judge the pairs themselves too. A large
        # residual next to sigma means that PARDISO factorised a singular A - sigma M with perturbed pivots.
        eps = jnp.finfo(ws.dtype).eps
        bad = (status == Status.SUCCESS) & (jnp.max(res[:k]) > max(1e3 * cfg.tol, float(np.sqrt(eps))))
        near = jnp.min(jnp.abs(ws - cfg.sigma)) <= 1e-6 * jnp.max(jnp.abs(ws))
        status = jnp.where(bad, jnp.where(near, Status.SINGULAR, Status.NOT_CONVERGED), status)
    nxt = ws[k] if cfg.nev > k else jnp.asarray(jnp.inf, ws.dtype)
    return res[:k], status.astype(jnp.int32), nxt


# -- public entry points -------------------------------------------------------------------------------------
def _check_pair(A, M) -> tuple[SparseMatrix, SparseMatrix]:
    """Validate ``A`` and ``M`` (type, shape, symmetry flags, dtype) before anything runs."""
    for name, X in (("A", A), ("M", M)):
        if not isinstance(X, SparseMatrix):
            raise TypeError(
                f"{name} must be an igax.solvers.SparseMatrix, got {type(X).__name__}; wrap scipy matrices "
                "with SparseMatrix.from_scipy."
            )
        if X.shape[0] != X.shape[1]:
            raise ValueError(f"{name} must be square for an eigenproblem, got shape {X.shape}.")
        if jnp.ndim(X.values) != 1:
            raise ValueError(
                f"{name}.values has shape {jnp.shape(X.values)}: a batch of matrices; call eigsh inside "
                "jax.vmap instead."
            )
        if jnp.issubdtype(X.values.dtype, jnp.complexfloating):
            raise TypeError(
                f"{name}.values must be real, got {X.values.dtype}: eigsh solves real symmetric problems."
            )
        if not X.symmetric:
            raise ValueError(
                f"{name} is not flagged symmetric; eigsh solves symmetric problems. If it is symmetric, flag "
                "it: "
                f"{name} = {name}.with_values({name}.values, symmetric=True) (assembled symmetric forms are "
                "flagged already)."
            )
    if A.shape != M.shape:
        raise ValueError(f"A and M must have the same shape, got A {A.shape} and M {M.shape}.")
    if not isinstance(M.values, jax.core.Tracer):  # concrete: a cheap necessary test of positive definiteness
        slots = M.pattern.diagonal_slots  # in NumPy: under jit, jnp operations on constants are traced
        d = np.where(slots >= 0, np.asarray(M.values)[np.maximum(slots, 0)], 0.0)
        if d.size and not np.all(d > 0):
            i = int(np.argmin(d))
            raise ValueError(
                f"M must be symmetric positive definite (a mass matrix), but its diagonal entry {i} is "
                f"{d[i]:.3g} <= 0. Pass the mass matrix as M and the stiffness as A; for a matrix with "
                "constrained (zeroed) rows, restrict both to the free dofs with solvers.submatrix."
            )
    return A, M


def _identity(n: int, dtype) -> SparseMatrix:
    pat = CSRPattern(np.arange(n + 1), np.arange(n), (n, n))
    return SparseMatrix(jnp.ones(n, dtype), pat, symmetric=True, positive_definite=True)


def _default_eig_method() -> str:
    return "arpack" if jax.default_backend() == "cpu" else "lobpcg"


def _status_error(method: str, k: int, status, it, res, next_value):
    s = Status(int(status))
    why = {
        Status.SINGULAR: "A - sigma M is singular or could not be factorised: sigma is (nearly) an "
        "eigenvalue (e.g. sigma = 0 for a structure without supports, whose rigid-body modes have "
        "eigenvalue 0); pass a sigma below the lowest eigenvalue, e.g. sigma=-1.0, or remove the null space "
        "with constraints",
        Status.NOT_CONVERGED: "the eigensolver did not converge: raise maxiter, loosen tol, or (lobpcg) "
        "pass a better preconditioner; method='arpack' with a direct factorisation converges in few "
        "iterations",
        Status.NONFINITE: "A or M contain NaN or inf; check the assembly inputs",
        Status.BREAKDOWN: "ARPACK failed (an internal error); try another sigma or a larger k",
    }.get(s, s.name)
    return SolverError(
        f'eigsh(method="{method}", k={k}) failed: {why} (largest relative residual {float(np.max(res)):.2e}, '
        f"{int(it)} iterations). Pass throw=False to get the EigenResult with its status instead."
    )


def eigen_solve(
    A: SparseMatrix,
    M: SparseMatrix | None = None,
    k: int = 6,
    *,
    sigma: float | None = None,
    method: str | None = None,
    tol: float | None = None,
    maxiter: int | None = None,
    factor: str | None = None,
    preconditioner=None,
    cluster_rtol: float | None = None,
    grad_rtol: float | None = None,
    grad_maxiter: int = 500,
    throw: bool = True,
) -> EigenResult:
    """The ``k`` eigenpairs of ``A phi = lambda M phi`` nearest ``sigma``, with diagnostics; differentiable.

    Arguments:
        A: symmetric :class:`SparseMatrix` (a stiffness matrix, restricted to the free dofs).
        M: symmetric positive definite :class:`SparseMatrix` of the same shape (a mass matrix), or None for
            the identity (the standard problem).
        k: how many eigenpairs, ``1 <= k < n``.
        sigma: the shift of ``method="arpack"`` (the eigenvalues nearest it are returned); default 0, the
            lowest ones of an SPD ``A``. Use a value below the lowest eigenvalue (e.g. -1) when ``A`` is
            singular. ``method="lobpcg"`` always returns the lowest ones and refuses ``sigma``.
        method: ``"arpack"`` (host, default on CPU) or ``"lobpcg"`` (JAX, default on GPU/TPU).
        tol: arpack: ARPACK's relative accuracy (default 0: machine precision); lobpcg: the relative residual
            every pair must reach (default 1e-8 in float64, 1e-4 in float32).
        maxiter: arpack: ARPACK's restarts (default ``max(1000, 10 n)``, SciPy's); lobpcg: iterations
            (default 1000).
        factor: the linear-solver backend that factorises ``A - sigma M`` (arpack; default igax's CPU choice:
            ``"pardiso"`` where installed, else ``"superlu"``).
        preconditioner: lobpcg: a function ``R (n, m) -> (n, m)`` approximating ``A^{-1} R`` (SPD), e.g. a
            multigrid V-cycle; default Jacobi. It also preconditions eigenvector gradients.
        cluster_rtol: eigenvalues closer than this relative gap count as repeated (default ``max(1e-6,
            100 eps)``): see :class:`RepeatedEigenvalueError`.
        grad_rtol, grad_maxiter: relative residual and iterations of the CG solves of eigenvector gradients
            (default rtol ``1e-10`` in float64, ``1e-5`` in float32).
        throw: raise :class:`~igax.solvers.SolverError` when the solve fails (default); False returns the
            status, with NaN in the pairs that did not converge (arpack).

    Returns:
        :class:`EigenResult` ``(values (k,), vectors (n, k), status, iterations, residuals (k,),
        next_value)``.

    Raises:
        TypeError, ValueError: malformed input (not a SparseMatrix, non-square, shapes differ, not flagged
            symmetric, ``M`` with a non-positive diagonal, ``k`` out of range, unknown method), before any
            solve.
        SolverError: the solve failed and ``throw=True`` (eagerly, or inside ``jit`` when the program runs).
        RepeatedEigenvalueError: in the backward pass, for the derivative of an eigenvector of, or of one
            eigenvalue in, a cluster of (near-)repeated eigenvalues.

    Example:
        >>> import jax.numpy as jnp, scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix, eigen_solve
        >>> K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (50, 50)).tocsr()      # 1D Laplacian, h = 1/51
        >>> r = eigen_solve(SparseMatrix.from_scipy(K), k=3, method="arpack")
        >>> int(r.status), [round(float(v) * 51**2 / jnp.pi**2, 2) for v in r.values]   # ~ m^2
        (0, [1.0, 3.99, 8.97])
    """
    if M is None and isinstance(A, SparseMatrix):
        M = _identity(A.shape[0], jnp.result_type(A.values))
    A, M = _check_pair(A, M)
    n = A.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(
            f"k must be an integer with 1 <= k < n = {n} (the matrix size), got {k!r}; for all eigenpairs "
            "of a small matrix use a dense solver (scipy.linalg.eigh(A.todense(), M.todense()))."
        )
    k = int(k)
    method = _default_eig_method() if method is None else method
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or None (automatic), got {method!r}.")
    dtype = jnp.result_type(A.values, M.values)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    if dtype == jnp.float32:
        check_float64("eigsh")
    eps = float(jnp.finfo(dtype).eps)
    va, vm = A.values.astype(dtype), M.values.astype(dtype)
    nev = min(k + 1, n - 1)
    if method == "lobpcg":
        if sigma is not None:
            raise ValueError(
                "sigma applies to method='arpack' (shift-invert); method='lobpcg' always finds the lowest "
                "eigenvalues. Drop sigma, or use method='arpack'."
            )
        if factor is not None:
            raise ValueError("factor= applies to method='arpack' only (the factorisation of A - sigma M).")
        block = nev + min(max(2, nev // 2), 8)
        if 3 * block > n:
            raise ValueError(
                f"method='lobpcg' needs n >= 3 (k + guard) = {3 * block} unknowns for k={k}, got n={n}; use "
                "method='arpack' for small problems."
            )
        sigma_f, factor_name, kind = 0.0, "", ""
        tol_f = 1e-8 if dtype == jnp.float64 else 1e-4
        tol_f = float(tol) if tol is not None else tol_f
        maxiter_i = 1000 if maxiter is None else int(maxiter)
    else:
        if preconditioner is not None:
            raise ValueError("preconditioner= applies to method='lobpcg' only.")
        block = 0
        sigma_f = 0.0 if sigma is None else float(sigma)
        factor_name = default_method() if factor is None else factor
        backend = get_backend(factor_name) if isinstance(factor_name, str) else None
        if backend is None or not backend.on_host or getattr(backend, "iterative", False):
            raise ValueError(
                f"factor must name a direct host backend (e.g. 'pardiso', 'superlu'), got {factor!r}."
            )
        backend.check_available({})
        kind = "spd" if (A.positive_definite and sigma_f <= 0) else "sym"
        if backend.spd and kind != "spd":
            raise ValueError(
                f"factor='{factor_name}' needs A - sigma M positive definite: flag A positive_definite and "
                "use sigma <= 0, or use factor='pardiso' / 'superlu'."
            )
        tol_f = 0.0 if tol is None else float(tol)
        maxiter_i = max(1000, 10 * n) if maxiter is None else int(maxiter)
    cfg = _Config(
        pa=A.pattern,
        pm=M.pattern,
        ps=_union(A.pattern, M.pattern)[0],
        method=method,
        factor=factor_name,
        kind=kind,
        sigma=sigma_f,
        nev=nev,
        k=k,
        tol=tol_f,
        maxiter=maxiter_i,
        cluster_rtol=max(1e-6, 100 * eps) if cluster_rtol is None else float(cluster_rtol),
        grad_rtol=(1e-10 if dtype == jnp.float64 else 1e-5) if grad_rtol is None else float(grad_rtol),
        grad_maxiter=int(grad_maxiter),
        preconditioner=preconditioner,
        block=block,
    )
    w, V, status, it = _eig(cfg, va, vm)
    res, status, nxt = _diagnostics(cfg, va, vm, w, V, status)
    values, vectors = w[:k], V[:, :k]
    if throw:
        make = functools.partial(_status_error, method, k)
        values = error_if(values, status != Status.SUCCESS, make, status, it, res, nxt)
        vectors = error_if(vectors, status != Status.SUCCESS, make, status, it, res, nxt)
    return EigenResult(values, vectors, status, it.astype(jnp.int32), res, nxt)


def eigsh(
    A: SparseMatrix, M: SparseMatrix | None = None, k: int = 6, **options
) -> tuple[jax.Array, jax.Array]:
    """The ``k`` eigenvalues (ascending) and ``M``-orthonormal eigenvectors of ``A phi = lambda M phi``.

    Differentiable (reverse mode) in ``A.values`` and ``M.values``; jit-able. See :func:`eigen_solve` for the
    options, the diagnostics and the errors.

    Arguments:
        A: symmetric :class:`SparseMatrix`.
        M: SPD :class:`SparseMatrix` or None (identity).
        k: how many eigenpairs.
        **options: ``sigma``, ``method``, ``tol``, ``maxiter``, ``factor``, ``preconditioner``,
            ``cluster_rtol``, ``grad_rtol``, ``grad_maxiter``, ``throw`` (see :func:`eigen_solve`).

    Returns:
        ``(values (k,), vectors (n, k))``.

    Example:
        >>> import jax, jax.numpy as jnp, scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix, eigsh
        >>> A = SparseMatrix.from_scipy(sp.diags([1.0, 2.0, 3.0, 4.0, 5.0]).tocsr())
        >>> w, V = eigsh(A, k=2)
        >>> [round(v, 12) for v in w.tolist()]
        [1.0, 2.0]
        >>> g = jax.grad(lambda v: eigsh(A.with_values(v), k=2)[0][1])(A.values)  # d lambda_1 / d A_ii
        >>> [round(v, 12) for v in g.tolist()]
        [0.0, 1.0, 0.0, 0.0, 0.0]
    """
    r = eigen_solve(A, M, k, **options)
    return r.values, r.vectors


def submatrix(A: SparseMatrix, keep) -> SparseMatrix:
    """The principal submatrix ``A[keep][:, keep]``, differentiable in ``A.values`` (a gather of its values).

    An eigenproblem must not see constrained dofs (condensation keeps them as rows with a diagonal entry,
    which would be spurious eigenvalues): restrict the stiffness and the mass to the free dofs, solve, and put
    the eigenvectors back with ``jnp.zeros(n).at[keep].set(phi)``.

    Arguments:
        A: a square :class:`SparseMatrix`.
        keep: int array of the rows (and columns) to keep, e.g. the free dofs
            ``np.setdiff1d(np.arange(n), bc.dofs)``; sorted and unique (a concrete NumPy array).

    Returns:
        A :class:`SparseMatrix` of shape ``(len(keep), len(keep))`` with A's flags.

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix, submatrix
        >>> A = SparseMatrix.from_scipy(sp.csr_matrix(np.arange(9.0).reshape(3, 3)))
        >>> np.asarray(submatrix(A, [0, 2]).todense()).tolist()
        [[0.0, 2.0], [6.0, 8.0]]
    """
    if not isinstance(A, SparseMatrix):
        raise TypeError(f"A must be an igax.solvers.SparseMatrix, got {type(A).__name__}.")
    keep = np.asarray(keep)
    n = A.shape[0]
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be square to take a principal submatrix, got shape {A.shape}.")
    if keep.ndim != 1 or not np.issubdtype(keep.dtype, np.integer):
        raise ValueError(
            f"keep must be a 1D integer array of row indices, got {keep.dtype} of shape {keep.shape}."
        )
    if keep.size and (keep.min() < 0 or keep.max() >= n or np.any(np.diff(keep) <= 0)):
        raise ValueError(
            f"keep must be sorted, unique and within [0, {n}); e.g. np.setdiff1d(np.arange(n), dofs)."
        )
    keep = keep.astype(np.int64)
    pat, slots = _sub_pattern(A.pattern, keep.tobytes(), keep.shape[0])
    return SparseMatrix(
        A.values[..., slots], pat, symmetric=A.symmetric, positive_definite=A.positive_definite
    )


@functools.lru_cache(maxsize=16)
def _sub_pattern(pattern: CSRPattern, keep_bytes: bytes, m: int):
    keep = np.frombuffer(keep_bytes, dtype=np.int64)
    pos = -np.ones(pattern.shape[0], np.int64)
    pos[keep] = np.arange(m)
    r, c = pos[pattern.rows], pos[pattern.indices]
    sel = np.flatnonzero((r >= 0) & (c >= 0))  # CSR order: rows ascending, columns ascending within a row
    indptr = np.zeros(m + 1, np.int64)
    np.cumsum(np.bincount(r[sel], minlength=m), out=indptr[1:])
    return CSRPattern(indptr, c[sel], (m, m)), sel
