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

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._config import check_float64
from igax._errors import error_if
from igax.solvers._eigen_core import RepeatedEigenvalueError, _Config, _diagnostics, _eig, _index, _union
from igax.solvers._errors import Status
from igax.solvers.backends import get_backend
from igax.solvers.linear import SolverError, default_method
from igax.solvers.sparse import CSRPattern, SparseMatrix

__all__ = ["EigenResult", "RepeatedEigenvalueError", "eigen_solve", "eigsh", "submatrix"]

METHODS = ("arpack", "lobpcg")


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
            (default rtol ``1e-10`` in float64, ``1e-4`` in float32, where the eigenpairs themselves are only
            about that accurate).
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
        grad_rtol=(1e-10 if dtype == jnp.float64 else 1e-4) if grad_rtol is None else float(grad_rtol),
        grad_maxiter=int(grad_maxiter),
        preconditioner=preconditioner,
        block=block,
    )
    w, V, status, it = _eig(cfg, _index(cfg, dtype), va, vm)
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
        >>> import jax, numpy as np, scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix, eigsh
        >>> A = SparseMatrix.from_scipy(sp.diags([1.0, 2.0, 3.0, 4.0, 5.0]).tocsr())
        >>> w, V = eigsh(A, k=2)
        >>> print(np.round(w, 12))
        [1. 2.]
        >>> def second(values):
        ...     w, _ = eigsh(A.with_values(values), k=2)
        ...     return w[1]
        >>> print(np.abs(np.round(jax.grad(second)(A.values), 12)))   # d lambda_1 / d A_ii
        [0. 1. 0. 0. 0.]
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
