"""Differentiable sparse linear solves: ``solve(A, b)`` and ``linear_solve(A, b) -> SolveResult``.

Every solve goes through ``jax.lax.custom_linear_solve``, so ``jit``, ``grad``, ``jvp``/``jacfwd``,
Hessian-vector products and ``vmap`` all work, and derivatives are computed implicitly: the gradient of a
loss of ``x = A^{-1} b`` is one transposed solve, ``lambda = A^{-T} dL/dx``, and ``dL/dA = -lambda x^T`` on
the pattern.

The backends are registered objects, one module each (:mod:`igax.solvers.backends`); ``method=`` names one,
and everything here asks the registry what a backend needs (an SPD matrix, an installed package) and where it
runs. Host backends (SuperLU, PARDISO, CHOLMOD, pyamg) run through ``jax.pure_callback``: a factorisation is
requested once per matrix (:func:`factorize`) and named by an integer token; the forward, tangent and
transpose solves all reuse it (see :mod:`igax.solvers._backends`). JAX backends (``"cg"``, ``"bicgstab"``,
``"gmres"``) run on the device, as does ``"mg-cg"``: CG preconditioned by a multigrid V-cycle
(:mod:`igax.solvers.multigrid`) whose coarse operators are recomputed in JAX from every new matrix; the
forward, tangent and transposed solves share one setup (the matrix is SPD, so the transposed solve is the
same solve). A third party adds a backend with :func:`~igax.solvers.register_backend`.

Failures are never silent. Every solve returns a status (:class:`SolveResult`, codes
:class:`~igax.solvers._errors.Status`); by default (``throw=True``) a
failure raises :class:`SolverError`, eagerly or, inside ``jit``, from the running program with the same text
(:mod:`igax.solvers._errors`). With ``throw=False`` the ``value`` of a failed solve is NaN, so it cannot be
used by mistake. When a solve fails, one cheap test (``A @ ones = 0``, one product with ``A``) tells a
constant null space (a pure Neumann problem) from other causes, and a failed factorisation reports the
backend's own reason. Malformed input (a non-square matrix, a right-hand side of the wrong
length, an unsorted pattern) is rejected before any host backend runs. Complex systems go to the backends
that take them natively (PARDISO's complex types, ``"cocg"``; SuperLU with ``complex_form="native"``) and are
otherwise solved as an equivalent real block system (:mod:`igax.solvers._complex`), so every real backend but
the SPD ones serves them.
"""

from __future__ import annotations

import functools
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from igax._compile import lazy_jit
from igax._config import check_float64
from igax.solvers import _backends, _complex
from igax.solvers._errors import Status, raise_on_failure
from igax.solvers._host_call import host_call
from igax.solvers.backends import Backend, JaxBackend, backend_names, get_backend, registered_backends
from igax.solvers.backends.base import _listeners
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


# The method lists that were constants here, derived from the registry now (so they include backends
# registered later). METHODS stays; the others warn: the backends' own declarations replace them.
_OLD_LISTS = {
    "DIRECT_METHODS": lambda b: b.on_host and not b.iterative,
    "ITERATIVE_METHODS": lambda b: not b.on_host and not b.setup_options,
    "MG_METHODS": lambda b: "hierarchy" in b.options,
}


def __getattr__(name: str):
    if name == "METHODS":
        return backend_names()
    if name in _OLD_LISTS:
        warnings.warn(
            f"{__name__}.{name} is deprecated; use igax.solvers.backends.registered_backends() and each "
            "backend's on_host, spd and options instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return tuple(b.name for b in registered_backends() if _OLD_LISTS[name](b))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Status codes of a SolveResult: the shared enumeration (igax.solvers._errors.Status).
SUCCESS, SINGULAR, NOT_CONVERGED, NONFINITE, BREAKDOWN = (
    Status.SUCCESS,
    Status.SINGULAR,
    Status.NOT_CONVERGED,
    Status.NONFINITE,
    Status.BREAKDOWN,
)
# Causes of a failure, where more is known than the status (SolveResult.cause). Negative causes are host
# failure codes of a factorisation or solve whose backend reason _backends.failure_reason gives.
CAUSE_NONE, CAUSE_NULLSPACE, CAUSE_RESIDUAL, CAUSE_NOT_SPD = 0, 1, 2, 3

# What each status means for a linear solve (Newton words its own: igax.solvers.newton).
_MESSAGES = {
    SUCCESS: "success",
    SINGULAR: "the matrix is singular or too ill-conditioned for the solver",
    NOT_CONVERGED: "the iterative solver did not converge within maxiter iterations; raise maxiter, loosen "
    'rtol, or use a direct method (method="pardiso" / "superlu") or a better preconditioner (method="mg-cg" '
    'or "amg-cg" for SPD).',
    NONFINITE: "the matrix values or the right-hand side contain NaN or inf; check the assembly inputs.",
    BREAKDOWN: "the iterative solver broke down (a zero inner product; for CG the matrix may not be "
    'symmetric positive definite): use method="bicgstab", "gmres" or a direct method.',
}
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
            'method="pardiso", "superlu", "bicgstab" or "gmres" for an indefinite one (for minres / '
            "block-gmres: the primal block of saddle= or its Schur approximation is not positive definite; "
            "check the block sizes and the sign convention [[A, B^T], [B, -C]])"
        )
    if status != SINGULAR:
        return _MESSAGES[Status(status)]
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
            4 breakdown (the codes of :class:`~igax.solvers.Status`, shared with Newton and the Krylov loops).
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
    """The ``method=`` names usable on this machine (registered backends whose packages are installed).

    Example:
        >>> from igax.solvers import available_methods
        >>> {"superlu", "cg", "bicgstab", "gmres"} <= set(available_methods())
        True
    """
    return tuple(b.name for b in registered_backends() if b.available())


@functools.cache
def _default_for(situation: str, with_hierarchy: bool) -> str | None:
    """The usable backend of highest priority that is the automatic choice in ``situation`` (cached: the
    availability of packages does not change; a registration clears the cache)."""
    options = {"hierarchy": object()} if with_hierarchy else {}
    best = None
    for b in registered_backends():
        if situation in b.default_for and b.usable(options) and (best is None or b.priority > best.priority):
            best = b
    return None if best is None else best.name


_listeners.append(_default_for.cache_clear)


def default_method(A: SparseMatrix | None = None, hierarchy=None) -> str:
    """The automatic choice: pardiso (else superlu) on CPU; on GPU/TPU for SPD matrices ``"mg-cg"`` when a
    multigrid ``hierarchy`` is given (``igax.fem.solve`` passes one) and Jacobi-CG otherwise, COCG for complex
    symmetric matrices, BiCGSTAB for other matrices. Read from the backends' ``default_for`` and ``priority``.

    Example:
        >>> import jax
        >>> from igax.solvers import available_methods, default_method
        >>> jax.default_backend() != "cpu" or default_method() == (
        ...     "pardiso" if "pardiso" in available_methods() else "superlu")
        True
    """
    if jax.default_backend() == "cpu":
        situations = ("cpu",)
    elif A is not None and A.positive_definite:
        situations = (("accelerator-mg",) if hierarchy is not None else ()) + ("accelerator-spd",)
    elif A is not None and A.symmetric and _complex.is_complex(A.values.dtype):
        situations = ("accelerator-complex-symmetric", "accelerator")
    else:
        situations = ("accelerator",)
    for situation in situations:
        name = _default_for(situation, hierarchy is not None)
        if name is not None:
            return name
    raise RuntimeError(
        f"no registered solver backend is the automatic choice for {situations}; pass method=."
    )


def _check_method(method: str | None, A: SparseMatrix, hierarchy=None) -> str:
    if method is None:
        return default_method(A, hierarchy)
    if not isinstance(method, str) or method not in backend_names():
        raise ValueError(f"method must be one of {backend_names()} or None (automatic), got {method!r}.")
    backend = get_backend(method)
    if backend.spd and _complex.is_complex(A.values.dtype):
        raise ValueError(
            f'method="{method}" needs a real symmetric positive definite matrix, but A is complex '
            f'({A.values.dtype}): use method="pardiso" or "superlu" (direct), "cocg" (iterative, '
            'complex symmetric A = A.T), or "gmres" / "bicgstab" (iterative, any A).'
        )
    if backend.spd and not A.symmetric:
        raise ValueError(
            f'method="{method}" needs a symmetric positive definite matrix, but A is not flagged symmetric. '
            "Build it with SparseMatrix(..., symmetric=True, positive_definite=True) if it is, or use "
            'method="bicgstab", "gmres", "pardiso" or "superlu".'
        )
    backend.check_available({"hierarchy": hierarchy})
    return method


def _working_dtype(*dtypes):
    """The floating dtype of a solve: real, or complex (solved natively or as a real block system, see
    :mod:`igax.solvers._complex`)."""
    dtype = jnp.result_type(*dtypes)
    if not jnp.issubdtype(dtype, jnp.inexact):
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
    if dtype in (jnp.float32, jnp.complex64):
        check_float64("solve")
    return dtype


def _check_operands(A, b):
    dtype = _validate_operands(A, b)
    return A.with_values(A.values.astype(dtype)), jnp.asarray(b).astype(dtype)


# -- factorisation token -------------------------------------------------------------------------------------
class Factorization(eqx.Module):
    """A matrix prepared for solves: the host factorisation token (host backends) or the JAX backend's state.

    Create it with :func:`factorize` outside a loop (e.g. a time-stepping ``scan``) so each step only solves.

    Attributes:
        A: the matrix.
        token: int32 host token (host backends), negative on failure; ``None`` for JAX backends.
        method: the backend name.
        state: what a JAX backend set up for ``A`` (mg-cg: coarse operators, smoother, coarse factor) or None.
    """

    A: SparseMatrix
    token: jax.Array | None
    method: str = eqx.field(static=True)
    options: tuple = eqx.field(static=True, default=())
    state: object = None

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
        TypeError, ValueError: for a matrix that cannot be solved (not square, complex for a method without
            a native complex path, batched values, a pattern with unsorted or duplicate column indices),
            before any backend runs.

    Example:
        >>> import jax.numpy as jnp, scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix, factorize
        >>> A = SparseMatrix.from_scipy(sp.csr_matrix([[4.0, 1.0], [1.0, 3.0]]), symmetric=True)
        >>> F = factorize(A)
        >>> x1, x2 = F.solve(jnp.array([5.0, 4.0])), F.solve(jnp.array([6.0, 7.0]))   # one factorisation
        >>> ", ".join(f"{v:.12f}" for v in jnp.concatenate([x1, x2]).tolist())
        '1.000000000000, 1.000000000000, 1.000000000000, 2.000000000000'
    """
    if _complex.is_complex(jnp.result_type(A.values)):
        m = _check_method(method, A, options.get("hierarchy"))
        _check_complex_form(options.get("complex_form"), m)
        if not _complex_native(m, options.get("complex_form")):
            natives = [b.name for b in registered_backends() if b.complex_native]
            raise TypeError(
                f'factorize does not take complex matrices with method="{m}", which solves them through '
                f"their real block form (A.values has dtype {A.values.dtype}): use a natively complex method "
                f'{natives} (superlu with complex_form="native"), or igax.solvers.solve / linear_solve / '
                "igax.fem.solve, which factorise the block form once per solve and gradient."
            )
        method = m
    return _factorize(A, method, options)


def _factorize(A: SparseMatrix, method: str | None, options: dict, arrays=None) -> Factorization:
    """:func:`factorize`; ``arrays``: what the JAX backend's ``prepare`` returned (mg-cg: the hierarchy's
    index maps), passed as arguments of the caller's program so that they are not baked in as constants."""
    A = _check_matrix(A)
    options = dict(options)
    method = _check_method(method, A, options.get("hierarchy"))
    if A.shape[0] == 0:
        return Factorization(A, None, method, _freeze_options(options))
    _check_structure(A)
    backend = get_backend(method)
    if not backend.on_host:
        state = None
        if type(backend).setup is not JaxBackend.setup:  # (no setup: nothing traced for it, not even a cut)
            state = backend.setup(A.with_values(jax.lax.stop_gradient(A.values)), options, arrays)
        return Factorization(A, None, method, _freeze_options(options), state)  # options: hashable, static
    opts = _freeze_options(options)
    # Host backends index the CSR arrays directly (PARDISO crashes the process on duplicate entries).
    A.pattern.check_canonical("A.pattern")
    host_opts = _host_options(opts, backend)
    values = jax.lax.stop_gradient(A.values)
    cb = functools.partial(
        _backends.factor_callback,
        method=method,
        pattern=A.pattern,
        kind=_kind(A),
        options=host_opts,
    )
    # The host reads the values in place (a pure_callback would hand it a copy: igax/solvers/_host_call.py)
    ident = ("factor", method, A.pattern._digest, _kind(A), _ident(host_opts))
    (token,) = host_call(cb, [jax.ShapeDtypeStruct(values.shape[:-1], jnp.int32)], values, ident=ident)
    return Factorization(A, token, method, opts)


def _ident(options: dict) -> tuple:
    """Host options as a value that names the same computation in every process (see host_call)."""
    return tuple(sorted((k, repr(_freeze(v))) for k, v in options.items()))


# The options a host backend is given (they are part of its cache key): these, and the backend's own.
_HOST_OPTIONS = ("rtol", "maxiter", "superlu_options")


def _host_options(options: tuple, backend: Backend) -> dict:
    return {k: v for k, v in options if k in _HOST_OPTIONS or k in backend.options}


def _kind(A: SparseMatrix) -> str:
    return "spd" if A.positive_definite else ("sym" if A.symmetric else "gen")


def _host_solve(values, token, b, transpose, *, pattern, kind, method, options):
    host_opts = _host_options(options, get_backend(method))
    cb = functools.partial(
        _backends.solve_callback,
        method=method,
        pattern=pattern,
        kind=kind,
        options=host_opts,
        transpose=transpose,
    )
    batch = jax.ShapeDtypeStruct(b.shape[:-1], jnp.int32)
    shapes = (jax.ShapeDtypeStruct(b.shape, b.dtype), batch, batch)
    ident = ("solve", method, pattern._digest, kind, _ident(host_opts), bool(transpose))
    return host_call(cb, shapes, token, values, b, ident=ident)


def _solve_fns(values, token, *, pattern, kind, method, options, state=None):
    """``(solve, transpose_solve)`` for custom_linear_solve; each returns ``(x, (iterations, status, code))``.

    ``values`` are already cut from the gradient: derivatives with respect to the matrix flow through
    ``matvec`` (custom_linear_solve's implicit rule), never through the solver. ``code`` is a host failure
    code of the solve (negative) or 0.
    """
    zero = jnp.zeros((), jnp.int32)
    symmetric = kind != "gen"
    backend = get_backend(method)
    if backend.on_host:
        host = functools.partial(
            _host_solve, values, token, pattern=pattern, kind=kind, method=method, options=options
        )

        def run(b, transpose):
            x, iterations, code = host(b, transpose)  # iterations: amg-cg's CG count, 0 for direct methods
            return x, (iterations, zero, code)

        return (lambda _mv, b: run(b, False)), (lambda _vm, b: run(b, not symmetric))

    A = SparseMatrix(values, pattern, symmetric=symmetric)
    opts = dict(options)

    def run(b, transpose):
        x, iterations, status = backend.solve(A, b, transpose=transpose, options=opts, state=state)
        return x, (iterations, status, zero)

    return (lambda _mv, b: run(b, False)), (lambda _vm, b: run(b, True))


def _constant_nullspace(A: SparseMatrix) -> jax.Array:
    """Whether ``A @ ones = 0`` to rounding: the constant null space of a pure Neumann (or traction) problem.

    Row sums of such a stiffness matrix cancel to a few ulps of the row's absolute sum, at most the row's
    length times the largest entry; sqrt(eps) of the largest entry leaves a wide margin on both sides (a
    mass or Robin term is far above it, rounding far below).

    The row sums are one sparse product and the scale one reduction, so the test needs no nnz-sized
    temporary. It runs only when a solve failed, yet XLA reserves the temporaries of both branches of its
    ``cond`` in the program's one block of working memory, which is resident for the whole call, the
    factorisation included: the earlier form (the row of every slot by a running count, the absolute
    values, two segment sums) reserved 400 MB for 1M degree-2 spline dofs and set the program's size.
    """
    v = A.values
    rowsum = A @ jnp.ones(A.shape[1], v.dtype)
    tol = float(np.sqrt(np.finfo(v.dtype).eps))
    return jnp.max(jnp.abs(rowsum), initial=0.0) <= tol * jnp.max(jnp.abs(v), initial=0.0)


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
def _solve_core(values, token, b, state=None, *, pattern, kind, method, options, mask) -> SolveResult:
    # Jitted on the static pattern and options so that eager calls (and their grads) compile once.
    symmetric = kind != "gen"
    A = SparseMatrix(values, pattern, symmetric=symmetric)
    vs = jax.lax.stop_gradient(values)
    solve_fn, tsolve_fn = _solve_fns(
        vs, token, pattern=pattern, kind=kind, method=method, options=options, state=state
    )
    x, aux = jax.lax.custom_linear_solve(A.matvec, b, solve_fn, tsolve_fn, symmetric=symmetric, has_aux=True)
    iters, status, code = _unbatch_like(aux, x)
    # Diagnostics, outside the differentiated path.
    xs, bs = jax.lax.stop_gradient((x, b))
    # A right-hand side closed over by a jitted function is a constant: behind the barrier XLA does not fold
    # the reductions below over it at compile time (|b| and all(isfinite(b)): 3.6 s and an XLA alarm for
    # the 1M-DOF P1 gradient, whose condensed load vector depends on constants only).
    bs = jax.lax.optimization_barrier(bs)
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
        if get_backend(method).iterative:
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
        ok = None if state is None else get_backend(method).setup_ok(state)
        if ok is not None:  # the setup found the matrix unusable (mg-cg: not positive definite)
            status = jnp.where(ok, status, BREAKDOWN)
            cause = jnp.where(ok, cause, CAUSE_NOT_SPD)
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


# Options every backend accepts (superlu_options is read by SuperLU only, and accepted by all as before);
# the other known options are those the registered backends declare.
_COMMON_OPTIONS = frozenset(
    {"rtol", "atol", "maxiter", "throw", "direct_rtol", "superlu_options", "complex_form"}
)


def _freeze(v):
    return tuple(sorted(v.items())) if isinstance(v, dict) else v


def _check_options(opts: dict, method: str) -> None:
    owners: dict[str, list[str]] = {}  # backend-specific option -> the backends that read it
    for b in registered_backends():
        for k in b.options:
            owners.setdefault(k, []).append(b.name)
    unknown = set(opts) - _COMMON_OPTIONS - set(owners) - {_ADVICE_OPTION}
    if unknown:
        known = sorted(_COMMON_OPTIONS | set(owners))
        raise TypeError(f"unknown solver option(s) {sorted(unknown)}; known: {known}.")
    _check_complex_form(opts.get("complex_form"), method)
    backend = get_backend(method)
    for k in sorted(set(opts) & set(owners)):
        # an option of another backend, given a value (hierarchy=None is how "none given" is spelled)
        if k not in backend.options and (opts[k] is not None or k != "hierarchy"):
            names = " / ".join(f'"{n}"' for n in owners[k])
            raise ValueError(f'the option {k}= applies only to method={names}, not "{method}".')
    backend.check_options(opts)


def _finish(F: Factorization, b, *, mask: bool = True, **overrides) -> SolveResult:
    for b_ in registered_backends():
        for k in sorted(b_.setup_options & set(overrides)):
            raise ValueError(f"{k}= belongs to factorize(A, method='{b_.name}', {k}=...), not to F.solve.")
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
        F.state,
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
    return raise_on_failure(result, make, result.cause, result.residual, result.iterations)


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
            multigrid V-cycle, pure JAX, the default on GPU for SPD matrices when ``hierarchy=`` is given;
            ``"cocg"``: COCG for complex symmetric matrices (``A = A.T``), pure JAX.
        **options: ``rtol`` (default 1e-10 in float64, 1e-5 in float32), ``atol``, ``maxiter``, ``restart``
            (GMRES); ``throw`` (default True): raise :class:`SolverError` when the solve fails (inside ``jit``
            from the running program: JAX reports it as a ``JaxRuntimeError`` whose text holds the
            ``SolverError`` line, and the message is logged first), ``throw=False``: return the status and
            NaN in ``value`` instead; ``direct_rtol``: the relative residual above which a direct solve
            counts as singular (default ``eps**0.25``: 1.2e-4 in float64, 0.02 in float32); ``hierarchy``
            (``"mg-cg"`` only): a :class:`~igax.solvers.Hierarchy` (geometric from ``igax.fem``, or
            :func:`~igax.solvers.amg_hierarchy`); without it the algebraic hierarchy of ``A``'s pattern is
            built with pyamg on first use and cached. ``maxiter`` of ``"mg-cg"`` defaults to 500.
            ``complex_form`` (complex systems): ``"native"`` (the backend takes the complex matrix: PARDISO,
            COCG, SuperLU) or ``"block"`` (the real block form of twice the size); default: the backend's
            choice (native for PARDISO and COCG). ``hermitian`` (``"pardiso"``): ``True`` or
            ``"positive_definite"`` for a Hermitian matrix (flagged unsymmetric). ``precond`` (``"cocg"``):
            ``"jacobi"`` (default), None, or a callable ``r -> M^-1 r`` with ``M = M.T``.

    Returns:
        :class:`SolveResult` ``(value, status, iterations, residual, cause)``; ``value`` is NaN when
        ``status`` is not 0.

    Raises:
        TypeError, ValueError: malformed input (see :func:`factorize`; ``b`` of another length than ``A``),
            before any backend runs.
        SolverError: the solve failed and ``throw=True``; the message names the cause (a constant null
            space, the backend's reason, the residual) and what to do.

    Example:
        >>> import jax.numpy as jnp, scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix, linear_solve
        >>> K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (50, 50)).tocsr()
        >>> A = SparseMatrix.from_scipy(K, symmetric=True, positive_definite=True)
        >>> r = linear_solve(A, jnp.ones(50), method="cg", rtol=1e-12, throw=False)
        >>> int(r.status), int(r.iterations) <= 50, float(r.residual) < 1e-12
        (0, True, True)
        >>> r = linear_solve(A, jnp.ones(50), method="cg", maxiter=5, throw=False)
        >>> int(r.status), bool(jnp.isnan(r.value).all())   # 2: not converged; the value is NaN
        (2, True)
    """
    _validate_operands(A, b)  # before the factorisation: nothing malformed reaches a host backend
    options = dict(options)
    throw = options.pop("throw", True)
    advice = options.pop(_ADVICE_OPTION, None)
    method = _check_method(method, A, options.get("hierarchy"))
    _check_options(options, method)
    arrays, after = _prepare(A, method, options)
    program = _solve_program_small if A.nnz <= SMALL_NNZ else _solve_program
    result = program(A, b, arrays, method=method, options=_freeze_options(options))
    if after is not None:
        after(result)
    return _raise_on_failure(result, method, advice) if throw else result


def _prepare(A: SparseMatrix, method: str, options: dict):
    """The JAX backend's host-side preparation before the compiled program: ``(arrays, after)`` (see
    :meth:`JaxBackend.prepare`); ``options`` may be completed in place (mg-cg's hierarchy)."""
    backend = get_backend(method)
    if backend.on_host or A.shape[0] == 0:
        return None, None
    _check_structure(A)
    return backend.prepare(A, options)


def _freeze_options(options: dict) -> tuple:
    """Solver options as a hashable tuple (the static argument of :func:`_solve_program`)."""
    return tuple(sorted((k, _freeze(v)) for k, v in options.items()))


def _solve_result(A: SparseMatrix, b: jax.Array, arrays=None, *, method: str, options: tuple) -> SolveResult:
    """Factorise and solve without raising: the traceable body of :func:`_solve_program` (checked input)."""
    if _complex.is_complex(jnp.result_type(b)) and not _complex.is_complex(A.values.dtype):
        # A real matrix and a complex right-hand side: two real solves of one factorisation (any backend).
        real = jnp.finfo(_working_dtype(A.values.dtype, jnp.result_type(b))).dtype
        b = jnp.asarray(b)
        parts = jnp.stack([jnp.real(b), jnp.imag(b)]).astype(real)
        F = _factorize(A.with_values(A.values.astype(real)), method, dict(options), arrays)
        r = jax.vmap(lambda c: _finish(F, c, throw=False))(parts)
        worst = jnp.argmax(r.status != SUCCESS)
        pick = jax.tree_util.tree_map(lambda a: a[worst], r)
        return eqx.tree_at(lambda p: p.value, pick, r.value[0] + 1j * r.value[1])
    if _complex.is_complex(A.values.dtype, jnp.result_type(b)):
        if _complex_native(method, dict(options).get("complex_form")):
            # Natively complex (PARDISO's complex types, COCG): n unknowns, and the transposed solve of the
            # gradient reuses the one factorisation / is the same COCG solve (A^T = A).
            return _finish(_factorize(A, method, dict(options), arrays), b, throw=False)
        # A complex system: the equivalent real block system (see igax.solvers._complex), whose
        # differentiation is the real one's; the JAX backends' host preparation (mg-cg) does not apply.
        real = jnp.finfo(_working_dtype(A.values.dtype, jnp.result_type(b))).dtype
        Ab, bb = _complex.block_matrix(A, real), _complex.to_block(b, real)
        r = _finish(_factorize(Ab, method, dict(options)), bb, throw=False)
        return eqx.tree_at(lambda r: r.value, r, _complex.from_block(r.value))
    return _finish(_factorize(A, method, dict(options), arrays), b, throw=False)


def _complex_native(method: str, form: str | None) -> bool:
    """Whether a complex system is given to ``method`` as it is (True) or as its real block form."""
    backend = get_backend(method)
    if form is None:
        return backend.complex_native and backend.complex_native_default
    return form == "native"


def _check_complex_form(form, method: str) -> None:
    if form not in (None, "native", "block"):
        raise ValueError(
            f'complex_form must be "native", "block" or None (the backend\'s choice), got {form!r}.'
        )
    backend = get_backend(method)
    if form == "native" and not backend.complex_native:
        natives = [b.name for b in registered_backends() if b.complex_native]
        raise ValueError(
            f'complex_form="native": method="{method}" has no complex path of its own (it solves the real '
            f"block form of twice the size); the natively complex methods are {natives}."
        )


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
        >>> import jax, jax.numpy as jnp, scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix, solve
        >>> A = SparseMatrix.from_scipy(sp.csr_matrix([[2.0, 0.0], [0.0, 4.0]]))
        >>> b = jnp.array([1.0, 1.0])
        >>> solve(A, b).round(12).tolist()                 # (Cholesky: sqrt(2) sqrt(2) is 2 to rounding)
        [0.5, 0.25]
        >>> g = jax.grad(lambda v: jnp.sum(solve(A.with_values(v), b) ** 2))(A.values)   # -2 x_i^2 / a_i
        >>> ", ".join(f"{v:.12f}" for v in g.tolist())
        '-0.250000000000, -0.031250000000'
    """
    return linear_solve(A, b, method=method, **options).value
