"""Differentiable sparse linear solves: ``solve(A, b)`` and ``linear_solve(A, b) -> SolveResult``.

Every solve goes through ``jax.lax.custom_linear_solve``, so ``jit``, ``grad``, ``jvp``/``jacfwd``,
Hessian-vector products and ``vmap`` all work, and derivatives are computed implicitly: the gradient of a
loss of ``x = A^{-1} b`` is one transposed solve, ``lambda = A^{-T} dL/dx``, and ``dL/dA = -lambda x^T`` on
the pattern.

Direct backends run on the host through ``jax.pure_callback``. A factorisation is requested once per matrix
(:func:`factorize`) and named by an integer token; the forward, tangent and transpose solves all reuse it
(see :mod:`igax.solvers._backends`). Iterative backends (``"cg"``, ``"bicgstab"``, ``"gmres"``) are pure JAX
and run on the device, as does ``"mg-cg"``: CG preconditioned by a multigrid V-cycle
(:mod:`igax.solvers.multigrid`) whose coarse operators are recomputed in JAX from every new matrix; the
forward, tangent and transposed solves share one setup (the matrix is SPD, so the transposed solve is the
same solve).

Failures are never silent. Every solve returns a status (:class:`SolveResult`); by default (``throw=True``) a
failure raises :class:`SolverError`, eagerly or, inside ``jit``, from the running program with the same text
(:mod:`igax.solvers._errors`). With ``throw=False`` the ``value`` of a failed solve is NaN, so it cannot be
used by mistake. When a solve fails, one cheap test (``A @ ones = 0``, one product with ``A``) tells a
constant null space (a pure Neumann problem) from other causes, and a failed factorisation reports the
backend's own reason. Malformed input (a non-square matrix, complex values, a right-hand side of the wrong
length, an unsorted pattern) is rejected before any host backend runs.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from igax._compile import lazy_jit
from igax._config import check_float64
from igax.solvers import _backends, _errors
from igax.solvers import iterative as _it
from igax.solvers import multigrid as _mg
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
MG_METHODS = ("mg-cg",)
METHODS = DIRECT_METHODS + ("amg-cg",) + ITERATIVE_METHODS + MG_METHODS
# CG's iteration cap for mg-cg when maxiter is not given: a V-cycle-preconditioned CG converges in tens of
# iterations, so hitting this means the system is not SPD (or the hierarchy does not fit it).
_MG_MAXITER = 500

# Status codes of a SolveResult.
SUCCESS, SINGULAR, NOT_CONVERGED, NONFINITE, BREAKDOWN = 0, 1, 2, 3, 4
# Causes of a failure, where more is known than the status (SolveResult.cause). Negative causes are host
# failure codes of a factorisation or solve whose backend reason _backends.failure_reason gives.
CAUSE_NONE, CAUSE_NULLSPACE, CAUSE_RESIDUAL, CAUSE_NOT_SPD = 0, 1, 2, 3

_MESSAGES = (
    "success",
    "the matrix is singular or too ill-conditioned for the solver",
    "the iterative solver did not converge within maxiter iterations; raise maxiter, loosen rtol, or use a "
    'direct method (method="pardiso" / "superlu") or a better preconditioner (method="mg-cg" or "amg-cg" '
    "for SPD).",
    "the matrix values or the right-hand side contain NaN or inf; check the assembly inputs.",
    "the iterative solver broke down (a zero inner product; for CG the matrix may not be symmetric "
    'positive definite): use method="bicgstab", "gmres" or a direct method.',
)
# What to do about a singular matrix. The solvers know nothing of boundary conditions, so the advice is
# conditional; fem.solve, which knows them, passes its own (the private option _singular_advice).
_SINGULAR_ADVICE = (
    "If A is a stiffness matrix without Dirichlet conditions (a pure Neumann or traction problem), fix its "
    "constant / rigid-body modes with a Dirichlet condition or a constraint (e.g. a Lagrange multiplier for "
    "the mean)."
)
_ADVICE_OPTION = "_singular_advice"


def _describe(status: int, cause: int, residual: float, *, advice: str | None = None) -> str:
    """The text of a status and its cause (host only)."""
    if cause == CAUSE_NOT_SPD:
        return (
            "the matrix is not positive definite: mg-cg found a diagonal entry <= 0 or a coarse multigrid "
            "level whose Cholesky factorisation failed. CG needs a symmetric positive definite matrix: use "
            'method="pardiso", "superlu", "bicgstab" or "gmres" for an indefinite one'
        )
    if status != SINGULAR:
        return _MESSAGES[status]
    if cause == CAUSE_NULLSPACE:
        why = "the matrix is singular (constant null space): A @ ones = 0 to rounding"
    elif cause < 0:
        reason = _backends.failure_reason(cause)
        why = "the matrix is singular or not factorisable" + (f" ({reason})" if reason else "")
    elif cause == CAUSE_RESIDUAL:
        why = (
            f"the matrix is singular or too ill-conditioned: the relative residual |b - A x| / |b| = "
            f"{residual:.1e} of the direct solve is above direct_rtol"
        )
    else:
        why = _MESSAGES[SINGULAR]
    return f"{why}. {advice or _SINGULAR_ADVICE}"


class SolverError(RuntimeError):
    """A linear solve failed; the message names the cause, the residual and the iterations."""


class SolveResult(eqx.Module):
    """The solution of ``A x = b`` with diagnostics.

    Attributes:
        value: the solution ``x``; NaN where ``status`` is not 0 (success), so a failed solve returned with
            ``throw=False`` cannot be used by mistake.
        status: 0 success, 1 singular / failed factorisation, 2 not converged, 3 NaN or inf input,
            4 breakdown.
        iterations: Krylov iterations used (0 for the direct methods).
        residual: relative residual ``|b - A x| / |b|`` (``|b - A x|`` when ``b = 0``) of the computed
            solution (before it is replaced by NaN on failure).
        cause: what more is known about a failure: 0 nothing, 1 ``A`` has a constant null space
            (``A @ ones = 0``, checked only when a solve fails), 2 a direct solve's residual is above
            ``direct_rtol``, 3 ``A`` is not positive definite (``mg-cg``: a diagonal entry <= 0 or a
            failed Cholesky factorisation of the coarsest level), negative: the backend could not factorise
            or solve (its reason is in :attr:`message`).
    """

    value: jax.Array
    status: jax.Array
    iterations: jax.Array
    residual: jax.Array
    cause: jax.Array

    @property
    def message(self) -> str:
        """The status and its cause as text (host only)."""
        if np.ndim(self.status) != 0:
            return "batched: see .status"
        return _describe(int(self.status), int(self.cause), float(self.residual))


def available_methods() -> tuple[str, ...]:
    """The ``method=`` names usable on this machine."""
    out = ["superlu"]
    if _backends.pardiso_available():
        out.append("pardiso")
    if _backends.cholmod_available():
        out.append("cholmod")
    if _backends.pyamg_available():
        out.append("amg-cg")
    out += ITERATIVE_METHODS
    if _backends.pyamg_available():  # mg-cg without hierarchy= builds an algebraic one with pyamg
        out.append("mg-cg")
    return tuple(out)


@functools.cache
def _cpu_direct_default() -> str:
    return "pardiso" if _backends.pardiso_available() else "superlu"


def default_method(A: SparseMatrix | None = None, hierarchy=None) -> str:
    """The automatic choice: pardiso (else superlu) on CPU; on GPU/TPU for SPD matrices ``"mg-cg"`` when a
    multigrid ``hierarchy`` is given (``igax.fem.solve`` passes one) and Jacobi-CG otherwise; BiCGSTAB for
    other matrices."""
    if jax.default_backend() == "cpu":
        return _cpu_direct_default()
    if A is not None and A.positive_definite:
        return "mg-cg" if hierarchy is not None else "cg"
    return "bicgstab"


def _check_method(method: str | None, A: SparseMatrix, hierarchy=None) -> str:
    if method is None:
        return default_method(A, hierarchy)
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or None (automatic), got {method!r}.")
    if method in ("cholmod", "amg-cg", "cg", "mg-cg") and not A.symmetric:
        raise ValueError(
            f'method="{method}" needs a symmetric positive definite matrix, but A is not flagged symmetric. '
            "Build it with SparseMatrix(..., symmetric=True, positive_definite=True) if it is, or use "
            'method="bicgstab", "gmres", "pardiso" or "superlu".'
        )
    if method not in MG_METHODS:
        _backends.check_available(method)
    elif hierarchy is None and not _backends.pyamg_available():
        raise ImportError(
            'method="mg-cg" without hierarchy= builds an algebraic hierarchy with pyamg, which is not '
            "installed: `pip install pyamg`, or pass hierarchy=igax.solvers.Hierarchy([...]) (igax.fem "
            "builds geometric ones)."
        )
    return method


def _working_dtype(*dtypes):
    """The real floating dtype of a solve; complex input is refused (the backends are real)."""
    dtype = jnp.result_type(*dtypes)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"A.values and b must be real, got dtype {dtype}: igax's solvers are real-valued. Solve a "
            "complex system as the real block system [[Re A, -Im A], [Im A, Re A]] [Re x; Im x] = "
            "[Re b; Im b]."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def _check_matrix(A) -> SparseMatrix:
    """Validate ``A`` before anything (a host backend in particular) sees it: type, shape, values, dtype."""
    if not isinstance(A, SparseMatrix):
        raise TypeError(
            f"A must be an igax.solvers.SparseMatrix, got {type(A).__name__}; wrap scipy matrices with "
            "SparseMatrix.from_scipy(A)."
        )
    n, m = A.shape
    if n != m:
        raise ValueError(
            f"A must be square to be solved, got shape {A.shape}: a linear solve needs as many equations as "
            "unknowns. For a least-squares problem solve the normal equations (A.T A) x = A.T b."
        )
    if jnp.ndim(A.values) != 1:
        raise ValueError(
            f"A.values must have shape (nnz,) = ({A.nnz},), got {jnp.shape(A.values)}; for a batch of "
            "matrices with one pattern use jax.vmap (e.g. over SparseMatrix.stack(matrices))."
        )
    _working_dtype(A.values.dtype)
    return A


def _check_structure(A: SparseMatrix) -> None:
    """Refuse a matrix that no values can make regular: an empty row or column (checked once per pattern)."""
    rows, cols = A.pattern.empty_rows_and_cols
    for what, idx in (("row", rows), ("column", cols)):
        if idx.size:
            more = f" (and {idx.size - 1} more)" if idx.size > 1 else ""
            raise ValueError(
                f"A is structurally singular: {what} {int(idx[0])}{more} stores no entry, so no values "
                "make A invertible. In an assembled matrix this is a dof that belongs to no element (e.g. a "
                "mesh vertex that no cell uses): remove it from the mesh."
            )


def _validate_operands(A, b):
    """Check ``A`` and ``b`` (types, shapes, dtypes; no array operation) and return the working dtype."""
    A = _check_matrix(A)
    n = A.shape[0]
    shape = jnp.shape(b)
    if len(shape) != 1 or shape[0] != n:
        raise ValueError(
            f"b must have shape (n,) = ({n},) to match A of shape {A.shape}, got {shape}; for several "
            "right-hand sides use jax.vmap(lambda b: solve(A, b))(B) with B of shape (k, n)."
        )
    dtype = _working_dtype(A.values.dtype, jnp.result_type(b))
    if dtype == jnp.float32:
        check_float64("solve")
    return dtype


def _check_operands(A, b):
    dtype = _validate_operands(A, b)
    return A.with_values(A.values.astype(dtype)), jnp.asarray(b).astype(dtype)


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
    mg: _mg.MGState | None = None  # mg-cg: the hierarchy set up for A (coarse operators, smoother, factor)

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
            ``hierarchy`` for ``"mg-cg"``, whose coarse operators, smoother and coarse factor are set up here
            once; ``throw``).

    Returns:
        A :class:`Factorization` with ``.solve(b)``.

    Raises:
        TypeError, ValueError: for a matrix that cannot be solved (not square, complex, batched values, a
            pattern with unsorted or duplicate column indices), before any backend runs.

    Example:
        >>> F = factorize(A)
        >>> x1, x2 = F.solve(b1), F.solve(b2)   # one factorisation
    """
    return _factorize(A, method, options)


def _factorize(A: SparseMatrix, method: str | None, options: dict, mg_arrays=None) -> Factorization:
    """:func:`factorize`; ``mg_arrays``: the hierarchy's index maps as arguments of the caller's program
    (from :meth:`Hierarchy.plan`), so that they are not baked into it as constants."""
    A = _check_matrix(A)
    options = dict(options)
    method = _check_method(method, A, options.get("hierarchy"))
    if A.shape[0] == 0:
        opts = tuple(sorted((k, _freeze(v)) for k, v in options.items()))
        return Factorization(A, None, method, opts)
    _check_structure(A)
    if method in MG_METHODS:
        H = _resolve_hierarchy(A, options.get("hierarchy"))
        options["hierarchy"] = H
        plan = H.plan(A.pattern)
        arrays = plan.arrays if mg_arrays is None else mg_arrays
        state = _mg.setup(plan.static, arrays, jax.lax.stop_gradient(A.values))
        return Factorization(A, None, method, _freeze_options(options), state)
    opts = tuple(sorted((k, _freeze(v)) for k, v in options.items()))  # hashable: a static field
    if method in ITERATIVE_METHODS:
        return Factorization(A, None, method, opts)
    # Host backends index the CSR arrays directly (PARDISO crashes the process on duplicate entries).
    A.pattern.check_canonical("A.pattern")
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


def _resolve_hierarchy(A: SparseMatrix, H) -> _mg.Hierarchy:
    """``hierarchy=`` checked against ``A``, or the algebraic hierarchy of ``A``'s pattern (cached)."""
    if H is None:
        H = _mg.auto_hierarchy(A)
    H.check_matrix(A)
    return H


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
    batch = jax.ShapeDtypeStruct(b.shape[:-1], jnp.int32)
    shapes = (jax.ShapeDtypeStruct(b.shape, b.dtype), batch, batch)
    return jax.pure_callback(cb, shapes, token, values, b, vmap_method="expand_dims")


def _solve_fns(values, token, *, pattern, kind, method, options, mg=None):
    """``(solve, transpose_solve)`` for custom_linear_solve; each returns ``(x, (iterations, status, code))``.

    ``values`` are already cut from the gradient: derivatives with respect to the matrix flow through
    ``matvec`` (custom_linear_solve's implicit rule), never through the solver. ``code`` is a host failure
    code of the solve (negative) or 0.
    """
    zero = jnp.zeros((), jnp.int32)
    symmetric = kind != "gen"
    if method in MG_METHODS:
        return _mg_fns(values, pattern, options, mg)
    if method not in ITERATIVE_METHODS:
        host = functools.partial(
            _host_solve, values, token, pattern=pattern, kind=kind, method=method, options=options
        )

        def run(b, transpose):
            x, iterations, code = host(b, transpose)  # iterations: amg-cg's CG count, 0 for direct methods
            return x, (iterations, zero, code)

        return (lambda _mv, b: run(b, False)), (lambda _vm, b: run(b, not symmetric))

    A = SparseMatrix(values, pattern, symmetric=symmetric)
    opts = dict(options)
    kw = {k: opts[k] for k in ("rtol", "atol", "maxiter", "restart") if k in opts}
    algo = {"cg": _it.cg, "bicgstab": _it.bicgstab, "gmres": _it.gmres}[method]

    def run(M, b):
        r = algo(M.matvec, b, _it.jacobi(M), **kw)
        return r.x, (r.iterations, r.status, zero)

    return (lambda _mv, b: run(A, b)), (lambda _vm, b: run(A.T, b))


def _mg_fns(values, pattern, options, mg: _mg.MGState):
    """``(solve, transpose_solve)`` of mg-cg: CG preconditioned by one V-cycle; both the same (SPD)."""
    opts = dict(options)
    H = opts["hierarchy"]
    kw = {k: opts[k] for k in ("rtol", "atol", "maxiter") if k in opts}
    kw.setdefault("maxiter", _MG_MAXITER)
    A = SparseMatrix(values, pattern, symmetric=True)
    cycle = functools.partial(
        _mg.vcycle, mg, degree=H.options["chebyshev_degree"], eig_ratio=H.options["eig_ratio"]
    )
    zero = jnp.zeros((), jnp.int32)

    def run(b):
        # A failed setup (not SPD) solves 0 = 0 at once; the status reports it and the value becomes NaN.
        r = _it.cg(A.matvec, jnp.where(mg.ok, b, 0.0), cycle, **kw)
        return r.x, (r.iterations, r.status, zero)

    return (lambda _mv, b: run(b)), (lambda _vm, b: run(b))


def _constant_nullspace(A: SparseMatrix) -> jax.Array:
    """Whether ``A @ ones = 0`` to rounding: the constant null space of a pure Neumann (or traction) problem.

    Row sums of such a stiffness matrix cancel to a few ulps of the row's absolute sum; sqrt(eps) of the
    largest absolute row sum leaves a wide margin on both sides (a mass or Robin term is far above it).
    """
    p = A.pattern
    v = A.values
    rowsum = jax.ops.segment_sum(v, p.rows, num_segments=p.shape[0], indices_are_sorted=True)
    abssum = jax.ops.segment_sum(jnp.abs(v), p.rows, num_segments=p.shape[0], indices_are_sorted=True)
    tol = float(np.sqrt(np.finfo(v.dtype).eps))
    return jnp.max(jnp.abs(rowsum), initial=0.0) <= tol * jnp.max(abssum, initial=0.0)


# custom_linear_solve's batching rule batches its aux outputs (iterations, status) even when the solution is
# not batched: under jacfwd / vmap-of-jvp the *primal* status would carry the tangents' batch axis, and so
# would anything computed from it (the NaN mask of a failed solve, hence the primal solution, which jacfwd
# requires unbatched). _unbatch_like(aux, x) is the identity, except that under vmap it drops the batch axis
# of the aux when x has none: then the solve did not depend on the batch and its aux is the same for every
# element.
_unbatch_like_p = Primitive("igax_unbatch_like")
_unbatch_like_p.multiple_results = True
_unbatch_like_p.def_impl(lambda *args: args[:-1])
_unbatch_like_p.def_abstract_eval(lambda *avals: avals[:-1])
mlir.register_lowering(_unbatch_like_p, mlir.lower_fun(lambda *args: args[:-1], multiple_results=True))


def _unbatch_like_batching(args, dims):
    *vals, _ = args
    *vdims, like_dim = dims
    if like_dim is not None:  # None: not mapped
        return list(vals), list(vdims)
    out = [v if d is None else jnp.take(v, 0, axis=d) for v, d in zip(vals, vdims, strict=True)]
    return out, [None] * len(out)


def _unbatch_like_jvp(primals, tangents):
    out = _unbatch_like_p.bind(*primals)
    return out, [ad.Zero(jax.typeof(o).to_tangent_aval()) for o in out]  # integer diagnostics: no derivative


batching.primitive_batchers[_unbatch_like_p] = _unbatch_like_batching
ad.primitive_jvps[_unbatch_like_p] = _unbatch_like_jvp


def _unbatch_like(aux: tuple, like: jax.Array) -> tuple:
    return tuple(_unbatch_like_p.bind(*aux, like))


@functools.partial(jax.jit, static_argnames=("pattern", "kind", "method", "options", "mask"))
def _solve_core(values, token, b, mg=None, *, pattern, kind, method, options, mask) -> SolveResult:
    # Jitted on the static pattern and options so that eager calls (and their grads) compile once.
    symmetric = kind != "gen"
    A = SparseMatrix(values, pattern, symmetric=symmetric)
    vs = jax.lax.stop_gradient(values)
    solve_fn, tsolve_fn = _solve_fns(
        vs, token, pattern=pattern, kind=kind, method=method, options=options, mg=mg
    )
    x, aux = jax.lax.custom_linear_solve(A.matvec, b, solve_fn, tsolve_fn, symmetric=symmetric, has_aux=True)
    iters, status, code = _unbatch_like(aux, x)
    # Diagnostics, outside the differentiated path.
    xs, bs = jax.lax.stop_gradient((x, b))
    rnorm = jnp.linalg.norm(bs - A.with_values(vs) @ xs)
    bnorm = jnp.linalg.norm(bs)
    residual = jnp.where(bnorm > 0, rnorm / jnp.where(bnorm > 0, bnorm, 1.0), rnorm)
    finite = jnp.all(jnp.isfinite(bs))
    cause = jnp.zeros((), jnp.int32)
    if token is not None:
        # The host checked the values (token -3) before factorising: no device reduction over them here, which
        # XLA would constant-fold (slowly) when the matrix is closed over in a jitted function.
        finite = finite & (token != _backends.TOKEN_NONFINITE)
        status = jnp.where(token < 0, SINGULAR, status)
        cause = jnp.where(token < 0, token, jnp.where(code < 0, code, cause))
        status = jnp.where(code < 0, SINGULAR, status)
        opts = dict(options)
        if method == "amg-cg":
            # pyamg returns its last iterate without a flag: judge convergence by the true residual.
            tol = 10.0 * opts.get("rtol", 1e-10)
            status = jnp.where((status == SUCCESS) & ~(residual <= tol), NOT_CONVERGED, status)
        else:
            # A backward-stable direct solve leaves |r| <~ eps cond(A) |b|, which stays far below eps^(1/4)
            # (1e-4 in float64) up to cond ~ 1e12; an inconsistent singular system leaves |r| ~ |b|.
            tol = opts.get("direct_rtol") or float(np.finfo(b.dtype).eps) ** 0.25
            large = (status == SUCCESS) & ~(residual <= tol)
            status = jnp.where(large, SINGULAR, status)
            cause = jnp.where(large, CAUSE_RESIDUAL, cause)
    else:
        # optimization_barrier: keep XLA from constant-folding this reduction over closed-over values.
        finite = finite & jnp.all(jnp.isfinite(jax.lax.optimization_barrier(vs)))
        status = jnp.where((status == SUCCESS) & ~jnp.isfinite(residual), BREAKDOWN, status)
        if mg is not None:
            status = jnp.where(mg.ok, status, BREAKDOWN)
            cause = jnp.where(mg.ok, cause, CAUSE_NOT_SPD)
    status = jnp.where(finite, status, NONFINITE)
    # Diagnose a failure: one product with A, computed only when the solve failed (a cond, not a select,
    # outside vmap). A constant null space explains a breakdown or non-convergence of CG as well as a failed
    # direct solve.
    failed = (status != SUCCESS) & (status != NONFINITE)
    A_d = A.with_values(jax.lax.optimization_barrier(vs))
    null = jax.lax.cond(failed, lambda: _constant_nullspace(A_d), lambda: jnp.bool_(False))
    status = jnp.where(null, SINGULAR, status).astype(jnp.int32)
    cause = jnp.where(null, CAUSE_NULLSPACE, cause).astype(jnp.int32)
    if mask:
        # A failed solve's value is garbage (1e16 and the like): NaN cannot be used by mistake. The condition
        # is a primal value, so derivatives pass through where the solve succeeded and are 0 elsewhere.
        x = jnp.where(status == SUCCESS, x, jnp.nan)
    return SolveResult(x, status, iters, residual, cause)


_KNOWN_OPTIONS = {
    "rtol",
    "atol",
    "maxiter",
    "restart",
    "throw",
    "direct_rtol",
    "superlu_options",
    "hierarchy",
    _ADVICE_OPTION,
}


def _freeze(v):
    return tuple(sorted(v.items())) if isinstance(v, dict) else v


def _check_options(opts: dict, method: str) -> None:
    unknown = set(opts) - _KNOWN_OPTIONS
    if unknown:
        known = sorted(_KNOWN_OPTIONS - {_ADVICE_OPTION})
        raise TypeError(f"unknown solver option(s) {sorted(unknown)}; known: {known}.")
    if "restart" in opts and method != "gmres":
        raise ValueError(f'the option restart= applies only to method="gmres", not "{method}".')
    if opts.get("hierarchy") is not None:
        if method not in MG_METHODS:
            raise ValueError(f'the option hierarchy= applies only to method="mg-cg", not "{method}".')
        if not isinstance(opts["hierarchy"], _mg.Hierarchy):
            raise TypeError(
                f"hierarchy must be an igax.solvers.Hierarchy, got {type(opts['hierarchy']).__name__}; build "
                "one with Hierarchy([P0, P1, ...]) from the prolongations, amg_hierarchy(A), or igax.fem's "
                "geometric hierarchies."
            )


def _finish(F: Factorization, b, *, mask: bool = True, **overrides) -> SolveResult:
    if "hierarchy" in overrides:
        raise ValueError("hierarchy= belongs to factorize(A, method='mg-cg', hierarchy=H), not to F.solve.")
    opts = dict(F.options)
    opts.update(overrides)
    _check_options(opts, F.method)
    throw = opts.pop("throw", True)
    advice = opts.pop(_ADVICE_OPTION, None)
    A, b = _check_operands(F.A, b)
    if A.shape[0] == 0:  # nothing to solve (no backend accepts n = 0)
        z = jnp.zeros((), jnp.int32)
        return SolveResult(b, z, z, jnp.zeros((), b.dtype), z)
    options = tuple(sorted((k, _freeze(v)) for k, v in opts.items()))
    result = _solve_core(
        A.values,
        F.token,
        b,
        F.mg,
        pattern=A.pattern,
        kind=_kind(A),
        method=F.method,
        options=options,
        mask=mask,
    )
    if throw:
        result = _raise_on_failure(result, F.method, advice)
    return result


def _failure(method: str, advice: str | None, status, cause, residual, iterations) -> SolverError:
    """The exception of a failed solve, from its host diagnostics (eagerly or in the callback under jit)."""
    text = _describe(int(status), int(cause), float(residual), advice=advice)
    # A failed factorisation has no solution, hence no residual to report.
    res = f"relative residual {float(residual):.3e}, " if np.isfinite(residual) else ""
    return SolverError(
        f'solve(method="{method}") failed: {text} ({res}iterations {int(iterations)}). Pass throw=False to '
        "get the SolveResult with its status instead."
    )


def _raise_on_failure(result: SolveResult, method: str, advice: str | None = None) -> SolveResult:
    make = functools.partial(_failure, method, advice)
    r = result
    value = _errors.error_if(r.value, r.status != SUCCESS, make, r.status, r.cause, r.residual, r.iterations)
    return eqx.tree_at(lambda r: r.value, result, value)


def _solve_unmasked(A: SparseMatrix, b: jax.Array, *, method: str | None = None, **options) -> jax.Array:
    """``A^{-1} b`` with no run-time check and no NaN on failure, for solves whose right-hand side is a
    tangent (e.g. the implicit-function rule of Newton): there the status depends on a linear input, and a
    condition on it could not be transposed in reverse mode."""
    return _finish(factorize(A, method=method, **options), b, mask=False, throw=False).value


# -- public entry points -------------------------------------------------------------------------------------
def linear_solve(A: SparseMatrix, b: jax.Array, *, method: str | None = None, **options) -> SolveResult:
    """Solve ``A x = b`` and return the solution with diagnostics.

    Arguments:
        A: square :class:`SparseMatrix` (``values`` of shape ``(nnz,)``).
        b: right-hand side ``(n,)``; use ``jax.vmap`` for several (one multi-RHS host solve for direct
            methods).
        method: ``"pardiso"`` (default on CPU where installed), ``"superlu"`` (always available),
            ``"cholmod"`` (scikit-sparse, SPD), ``"amg-cg"`` (pyamg, SPD), the pure-JAX
            Jacobi-preconditioned ``"cg"`` (SPD), ``"bicgstab"``, ``"gmres"``, or ``"mg-cg"`` (SPD): CG with a
            multigrid V-cycle, pure JAX, the default on GPU for SPD matrices when ``hierarchy=`` is given.
        **options: ``rtol`` (default 1e-10 in float64, 1e-5 in float32), ``atol``, ``maxiter``, ``restart``
            (GMRES); ``throw`` (default True): raise :class:`SolverError` when the solve fails (inside ``jit``
            from the running program: JAX reports it as a ``JaxRuntimeError`` whose text holds the
            ``SolverError`` line, and the message is logged first), ``throw=False``: return the status and
            NaN in ``value`` instead; ``direct_rtol``: the relative residual above which a direct solve
            counts as singular (default ``eps**0.25``: 1.2e-4 in float64, 0.02 in float32); ``hierarchy``
            (``"mg-cg"`` only): a :class:`~igax.solvers.Hierarchy` (geometric from ``igax.fem``, or
            :func:`~igax.solvers.amg_hierarchy`); without it the algebraic hierarchy of ``A``'s pattern is
            built with pyamg on first use and cached. ``maxiter`` of ``"mg-cg"`` defaults to 500.

    Returns:
        :class:`SolveResult` ``(value, status, iterations, residual, cause)``; ``value`` is NaN when
        ``status`` is not 0.

    Raises:
        TypeError, ValueError: malformed input (see :func:`factorize`; ``b`` of another length than ``A``),
            before any backend runs.
        SolverError: the solve failed and ``throw=True``; the message names the cause (a constant null
            space, the backend's reason, the residual) and what to do.

    Example:
        >>> r = linear_solve(A, b, method="cg", rtol=1e-12, throw=False)
        >>> r.value, r.iterations, r.residual
    """
    _validate_operands(A, b)  # before the factorisation: nothing malformed reaches a host backend
    options = dict(options)
    throw = options.pop("throw", True)
    advice = options.pop(_ADVICE_OPTION, None)
    method = _check_method(method, A, options.get("hierarchy"))
    _check_options(options, method)
    arrays = auto = None
    if method in MG_METHODS and A.shape[0] > 0:
        _check_structure(A)
        auto = options.get("hierarchy") is None
        options["hierarchy"] = _resolve_hierarchy(A, options.get("hierarchy"))
        arrays = options["hierarchy"].plan(A.pattern).arrays  # arguments of the program, not constants
    program = _solve_program_small if A.nnz <= SMALL_NNZ else _solve_program
    result = program(A, b, arrays, method=method, options=_freeze_options(options))
    if auto:  # eager solves only: the automatic hierarchy is rebuilt when it stops fitting the values
        _mg.record_iterations(A.pattern, options["hierarchy"], result.iterations)
    return _raise_on_failure(result, method, advice) if throw else result


def _freeze_options(options: dict) -> tuple:
    """Solver options as a hashable tuple (the static argument of :func:`_solve_program`)."""
    return tuple(sorted((k, _freeze(v)) for k, v in options.items()))


def _solve_result(
    A: SparseMatrix, b: jax.Array, mg_arrays=None, *, method: str, options: tuple
) -> SolveResult:
    """Factorise and solve without raising: the traceable body of :func:`_solve_program` (checked input)."""
    return _finish(_factorize(A, method, dict(options), mg_arrays), b, throw=False)


# Factorisation, solve and diagnostics in one compiled program per (pattern, shapes, method, options). Called
# eagerly, the steps compiled one small program each (the factorisation callback, the solve, casts, the
# status test), for every new matrix size; inside a caller's trace this is inlined.
_solve_program = jax.jit(_solve_result, static_argnames=("method", "options"))
# Systems with at most SMALL_NNZ stored entries get cheap compiler options: their program compiles in
# 0.27 instead of 0.35 s (CPU, 4 x 4 degree-3 spline Laplacian with its boundary conditions) and its
# device-side part (casts, residual, status) runs for microseconds either way.
SMALL_NNZ = 2**16
_solve_program_small = lazy_jit(jax.jit, _solve_result, static_argnames=("method", "options"))


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
