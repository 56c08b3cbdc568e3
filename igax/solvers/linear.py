"""Differentiable sparse linear solves: ``solve(A, b)`` and ``linear_solve(A, b) -> SolveResult``.

Every solve goes through ``jax.lax.custom_linear_solve``, so ``jit``, ``grad``, ``jvp``/``jacfwd``,
Hessian-vector products and ``vmap`` all work, and derivatives are computed implicitly: the gradient of a
loss of ``x = A^{-1} b`` is one transposed solve, ``lambda = A^{-T} dL/dx``, and ``dL/dA = -lambda x^T`` on
the pattern.

Direct backends run on the host through ``jax.pure_callback``. A factorisation is requested once per matrix
(:func:`factorize`) and named by an integer token; the forward, tangent and transpose solves all reuse it
(see :mod:`igax.solvers._backends`). Iterative backends (``"cg"``, ``"bicgstab"``, ``"gmres"``) are pure JAX
and run on the device.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._config import check_float64
from igax.solvers import _backends
from igax.solvers import iterative as _it
from igax.solvers.sparse import SparseMatrix

__all__ = [
    "Factorization",
    "SolveResult",
    "SolverError",
    "available_methods",
    "default_method",
    "factorize",
    "linear_solve",
    "solve",
]

DIRECT_METHODS = ("superlu", "pardiso", "cholmod")
ITERATIVE_METHODS = ("cg", "bicgstab", "gmres")
METHODS = DIRECT_METHODS + ("amg-cg",) + ITERATIVE_METHODS

# Status codes of a SolveResult.
SUCCESS, SINGULAR, NOT_CONVERGED, NONFINITE, BREAKDOWN = 0, 1, 2, 3, 4
_MESSAGES = (
    "success",
    "the matrix is singular or too ill-conditioned for the direct solver (the factorisation failed or the "
    "relative residual |b - A x| / |b| of the result is large; a matrix flagged positive_definite must be "
    "so). A stiffness matrix is singular when no "
    "Dirichlet condition fixes the rigid-body / constant modes: add one (or a constraint).",
    "the iterative solver did not converge within maxiter iterations; raise maxiter, loosen rtol, or use a "
    'direct method (method="pardiso" / "superlu") or a better preconditioner (method="amg-cg" for SPD).',
    "the matrix values or the right-hand side contain NaN or inf; check the assembly inputs.",
    "the iterative solver broke down (a zero inner product; for CG the matrix is probably not symmetric "
    'positive definite): use method="bicgstab", "gmres" or a direct method.',
)


class SolverError(RuntimeError):
    """A linear solve failed; the message names the cause, the residual and the iterations."""


class SolveResult(eqx.Module):
    """The solution of ``A x = b`` with diagnostics.

    Attributes:
        value: the solution ``x``.
        status: 0 success, 1 singular / failed factorisation, 2 not converged, 3 NaN or inf input,
            4 breakdown.
        iterations: Krylov iterations used (0 for the direct methods).
        residual: relative residual ``|b - A x| / |b|`` (``|b - A x|`` when ``b = 0``).
    """

    value: jax.Array
    status: jax.Array
    iterations: jax.Array
    residual: jax.Array

    @property
    def message(self) -> str:
        """The status as text (host only)."""
        return _MESSAGES[int(self.status)] if np.ndim(self.status) == 0 else "batched: see .status"


def available_methods() -> tuple[str, ...]:
    """The ``method=`` names usable on this machine."""
    out = ["superlu"]
    if _backends.pardiso_available():
        out.append("pardiso")
    if _backends.cholmod_available():
        out.append("cholmod")
    if _backends.pyamg_available():
        out.append("amg-cg")
    return tuple(out) + ITERATIVE_METHODS


@functools.cache
def _cpu_direct_default() -> str:
    return "pardiso" if _backends.pardiso_available() else "superlu"


def default_method(A: SparseMatrix | None = None) -> str:
    """The automatic choice: pardiso (else superlu) on CPU; on GPU/TPU CG for SPD matrices, else BiCGSTAB."""
    if jax.default_backend() == "cpu":
        return _cpu_direct_default()
    return "cg" if (A is not None and A.positive_definite) else "bicgstab"


def _check_method(method: str | None, A: SparseMatrix) -> str:
    if method is None:
        return default_method(A)
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or None (automatic), got {method!r}.")
    if method in ("cholmod", "amg-cg", "cg") and not A.symmetric:
        raise ValueError(
            f'method="{method}" needs a symmetric positive definite matrix, but A is not flagged symmetric. '
            "Build it with SparseMatrix(..., symmetric=True, positive_definite=True) if it is, or use "
            'method="bicgstab", "gmres", "pardiso" or "superlu".'
        )
    _backends.check_available(method)
    return method


def _check_operands(A, b):
    if not isinstance(A, SparseMatrix):
        raise TypeError(
            f"A must be an igax.solvers.SparseMatrix, got {type(A).__name__}; wrap scipy matrices with "
            "SparseMatrix.from_scipy(A)."
        )
    n, m = A.shape
    if n != m:
        raise ValueError(f"A must be square, got shape {A.shape}.")
    b = jnp.asarray(b)
    if b.ndim != 1 or b.shape[0] != n:
        raise ValueError(
            f"b must have shape (n,) = ({n},), got {b.shape}; for several right-hand sides use "
            "jax.vmap(lambda b: solve(A, b))(B) with B of shape (k, n)."
        )
    if A.values.ndim != 1:
        raise ValueError(
            f"A.values must have shape (nnz,), got {A.values.shape}; for a batch of matrices use jax.vmap."
        )
    dtype = jnp.result_type(A.values.dtype, b.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    if dtype == jnp.float32:
        check_float64("solve")
    return A.with_values(A.values.astype(dtype)), b.astype(dtype)


# -- factorisation token -------------------------------------------------------------------------------------
class Factorization(eqx.Module):
    """A matrix prepared for solves: the host factorisation token (direct methods) or the preconditioner.

    Create it with :func:`factorize` outside a loop (e.g. a time-stepping ``scan``) so each step only solves.

    Attributes:
        A: the matrix.
        token: int32 host token (direct methods), negative on failure; ``None`` for iterative methods.
        method: the backend name.
    """

    A: SparseMatrix
    token: jax.Array | None
    method: str = eqx.field(static=True)
    options: tuple = eqx.field(static=True, default=())

    def solve(self, b: jax.Array, **overrides) -> jax.Array:
        """``A^{-1} b`` (raises on failure by default, like :func:`solve`)."""
        return _finish(self, b, **overrides).value

    def linear_solve(self, b: jax.Array, **overrides) -> SolveResult:
        """``A^{-1} b`` with diagnostics (see :func:`linear_solve`)."""
        return _finish(self, b, **overrides)


def factorize(A: SparseMatrix, *, method: str | None = None, **options) -> Factorization:
    """Factorise ``A`` once (direct methods) so several solves can share the factors.

    Arguments:
        A: square :class:`SparseMatrix`.
        method: backend (see :func:`solve`).
        **options: backend options (``rtol``, ``atol``, ``maxiter``, ``restart`` for iterative methods;
            ``throw``).

    Returns:
        A :class:`Factorization` with ``.solve(b)``.

    Example:
        >>> F = factorize(A)
        >>> x1, x2 = F.solve(b1), F.solve(b2)   # one factorisation
    """
    if not isinstance(A, SparseMatrix):
        raise TypeError(
            f"A must be an igax.solvers.SparseMatrix, got {type(A).__name__}; wrap scipy matrices with "
            "SparseMatrix.from_scipy(A)."
        )
    method = _check_method(method, A)
    opts = tuple(sorted((k, _freeze(v)) for k, v in options.items()))  # hashable: a static field
    if method in ITERATIVE_METHODS:
        return Factorization(A, None, method, opts)
    host_opts = {k: v for k, v in opts if k in _HOST_OPTIONS}
    values = jax.lax.stop_gradient(A.values)
    cb = functools.partial(
        _backends.factor_callback,
        method=method,
        pattern=A.pattern,
        kind=_kind(A),
        options=host_opts,
    )
    token = jax.pure_callback(
        cb, jax.ShapeDtypeStruct(values.shape[:-1], jnp.int32), values, vmap_method="expand_dims"
    )
    return Factorization(A, token, method, opts)


_HOST_OPTIONS = ("rtol", "maxiter", "superlu_options")


def _kind(A: SparseMatrix) -> str:
    return "spd" if A.positive_definite else ("sym" if A.symmetric else "gen")


def _host_solve(values, token, b, transpose, *, pattern, kind, method, options):
    cb = functools.partial(
        _backends.solve_callback,
        method=method,
        pattern=pattern,
        kind=kind,
        options={k: v for k, v in options if k in _HOST_OPTIONS},
        transpose=transpose,
    )
    shapes = (jax.ShapeDtypeStruct(b.shape, b.dtype), jax.ShapeDtypeStruct(b.shape[:-1], jnp.int32))
    return jax.pure_callback(cb, shapes, token, values, b, vmap_method="expand_dims")


def _solve_fns(values, token, *, pattern, kind, method, options):
    """``(solve, transpose_solve)`` for custom_linear_solve; each returns ``(x, (iterations, status))``.

    ``values`` are already cut from the gradient: derivatives with respect to the matrix flow through
    ``matvec`` (custom_linear_solve's implicit rule), never through the solver.
    """
    zero = jnp.zeros((), jnp.int32)
    symmetric = kind != "gen"
    if method not in ITERATIVE_METHODS:
        host = functools.partial(
            _host_solve, values, token, pattern=pattern, kind=kind, method=method, options=options
        )

        def run(b, transpose):
            x, iterations = host(b, transpose)  # iterations: amg-cg's CG count, 0 for direct methods
            return x, (iterations, zero)

        return (lambda _mv, b: run(b, False)), (lambda _vm, b: run(b, not symmetric))

    A = SparseMatrix(values, pattern, symmetric=symmetric)
    opts = dict(options)
    kw = {k: opts[k] for k in ("rtol", "atol", "maxiter", "restart") if k in opts}
    algo = {"cg": _it.cg, "bicgstab": _it.bicgstab, "gmres": _it.gmres}[method]

    def run(M, b):
        r = algo(M.matvec, b, _it.jacobi(M), **kw)
        return r.x, (r.iterations, r.status)

    return (lambda _mv, b: run(A, b)), (lambda _vm, b: run(A.T, b))


@functools.partial(jax.jit, static_argnames=("pattern", "kind", "method", "options"))
def _solve_core(values, token, b, *, pattern, kind, method, options) -> SolveResult:
    # Jitted on the static pattern and options so that eager calls (and their grads) compile once.
    symmetric = kind != "gen"
    A = SparseMatrix(values, pattern, symmetric=symmetric)
    vs = jax.lax.stop_gradient(values)
    solve_fn, tsolve_fn = _solve_fns(vs, token, pattern=pattern, kind=kind, method=method, options=options)
    x, (iters, status) = jax.lax.custom_linear_solve(
        A.matvec, b, solve_fn, tsolve_fn, symmetric=symmetric, has_aux=True
    )
    # Diagnostics, outside the differentiated path.
    xs, bs = jax.lax.stop_gradient((x, b))
    rnorm = jnp.linalg.norm(bs - A.with_values(vs) @ xs)
    bnorm = jnp.linalg.norm(bs)
    residual = jnp.where(bnorm > 0, rnorm / jnp.where(bnorm > 0, bnorm, 1.0), rnorm)
    finite = jnp.all(jnp.isfinite(bs))
    if token is not None:
        # The host checked the values (token -3) before factorising: no device reduction over them here, which
        # XLA would constant-fold (slowly) when the matrix is closed over in a jitted function.
        finite = finite & (token != _backends.TOKEN_NONFINITE)
        status = jnp.where(token < 0, SINGULAR, status)
        opts = dict(options)
        if method == "amg-cg":
            # pyamg returns its last iterate without a flag: judge convergence by the true residual.
            tol = 10.0 * opts.get("rtol", 1e-10)
            status = jnp.where((status == SUCCESS) & ~(residual <= tol), NOT_CONVERGED, status)
        else:
            # A backward-stable direct solve leaves |r| <~ eps cond(A) |b|, which stays far below eps^(1/4)
            # (1e-4 in float64) up to cond ~ 1e12; an inconsistent singular system leaves |r| ~ |b|.
            tol = opts.get("direct_rtol") or float(np.finfo(b.dtype).eps) ** 0.25
            status = jnp.where((status == SUCCESS) & ~(residual <= tol), SINGULAR, status)
    else:
        # optimization_barrier: keep XLA from constant-folding this reduction over closed-over values.
        finite = finite & jnp.all(jnp.isfinite(jax.lax.optimization_barrier(vs)))
        status = jnp.where((status == SUCCESS) & ~jnp.isfinite(residual), BREAKDOWN, status)
    status = jnp.where(finite, status, NONFINITE).astype(jnp.int32)
    return SolveResult(x, status, iters, residual)


_KNOWN_OPTIONS = {"rtol", "atol", "maxiter", "restart", "throw", "direct_rtol", "superlu_options"}


def _freeze(v):
    return tuple(sorted(v.items())) if isinstance(v, dict) else v


def _finish(F: Factorization, b, **overrides) -> SolveResult:
    opts = dict(F.options)
    opts.update(overrides)
    unknown = set(opts) - _KNOWN_OPTIONS
    if unknown:
        raise TypeError(f"unknown solver option(s) {sorted(unknown)}; known: {sorted(_KNOWN_OPTIONS)}.")
    if "restart" in opts and F.method != "gmres":
        raise ValueError(f'the option restart= applies only to method="gmres", not "{F.method}".')
    throw = opts.pop("throw", True)
    A, b = _check_operands(F.A, b)
    options = tuple(sorted((k, _freeze(v)) for k, v in opts.items()))
    result = _solve_core(
        A.values, F.token, b, pattern=A.pattern, kind=_kind(A), method=F.method, options=options
    )
    if throw:
        result = _raise_on_failure(result, F.method)
    return result


def _raise_on_failure(result: SolveResult, method: str) -> SolveResult:
    status = result.status
    if not isinstance(status, jax.core.Tracer):
        st = np.asarray(status)
        if np.any(st != SUCCESS):
            code = int(st.ravel()[np.argmax(st.ravel() != SUCCESS)])
            res = np.asarray(result.residual).ravel()
            it = np.asarray(result.iterations).ravel()
            raise SolverError(
                f'solve(method="{method}") failed: {_MESSAGES[code]} '
                f"(relative residual {res.max():.3e}, iterations {it.max()}). "
                "Pass throw=False to get the SolveResult with its status instead."
            )
        return result
    # Under tracing: equinox's runtime error machinery (raises at run time, also inside jit).
    msgs = [f'solve(method="{method}") failed: {m}' for m in _MESSAGES[1:]]
    value = eqx.branched_error_if(
        result.value, jnp.any(status != SUCCESS), jnp.max(status).astype(jnp.int32) - 1, msgs
    )
    return eqx.tree_at(lambda r: r.value, result, value)


# -- public entry points -------------------------------------------------------------------------------------
def linear_solve(A: SparseMatrix, b: jax.Array, *, method: str | None = None, **options) -> SolveResult:
    """Solve ``A x = b`` and return the solution with diagnostics.

    Arguments:
        A: square :class:`SparseMatrix` (``values`` of shape ``(nnz,)``).
        b: right-hand side ``(n,)``; use ``jax.vmap`` for several (one multi-RHS host solve for direct
            methods).
        method: ``"pardiso"`` (default on CPU where installed), ``"superlu"`` (always available),
            ``"cholmod"`` (scikit-sparse, SPD), ``"amg-cg"`` (pyamg, SPD), or the pure-JAX
            Jacobi-preconditioned ``"cg"`` (SPD), ``"bicgstab"``, ``"gmres"`` (default on GPU).
        **options: ``rtol`` (default 1e-10 in float64, 1e-5 in float32), ``atol``, ``maxiter``, ``restart``
            (GMRES); ``throw`` (default True): raise :class:`SolverError` (or equinox's runtime error inside
            jit) when the solve fails; ``direct_rtol``: the relative residual above which a direct solve
            counts as singular (default ``eps**0.25``: 1.2e-4 in float64, 0.02 in float32).

    Returns:
        :class:`SolveResult` ``(value, status, iterations, residual)``.

    Example:
        >>> r = linear_solve(A, b, method="cg", rtol=1e-12, throw=False)
        >>> r.value, r.iterations, r.residual
    """
    return factorize(A, method=method, **options).linear_solve(b)


def solve(A: SparseMatrix, b: jax.Array, *, method: str | None = None, **options) -> jax.Array:
    """Solve ``A x = b``, differentiable in ``A.values`` and ``b``; jit-, grad-, jvp- and vmap-able.

    A gradient costs one transposed solve with the forward factorisation (direct methods) and a failure raises
    instead of returning NaN. See :func:`linear_solve` for the arguments.

    Example:
        >>> A = SparseMatrix.from_scipy(K)
        >>> x = solve(A, b)
        >>> g = jax.grad(lambda v: jnp.sum(solve(A.with_values(v), b) ** 2))(A.values)
    """
    return linear_solve(A, b, method=method, **options).value
