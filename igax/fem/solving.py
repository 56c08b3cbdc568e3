"""``fem.solve``: boundary conditions around :func:`igax.solvers.solve`, returning a Field."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from igax import solvers
from igax._compile import lazy_jit
from igax._held import fetch_arrays
from igax.fem.bc import DirichletBC, condense, known_zero, merge_bcs
from igax.fem.field import Field
from igax.fem.mixed_solving import mixed_result, pressure_bcs, with_pinned_diagonal
from igax.fem.multigrid import TRANSFERS, mg_hierarchy
from igax.fem.spaces.base import FunctionSpace
from igax.fem.spaces.mixed import MixedSpace
from igax.solvers import _backends
from igax.solvers.linear import (
    SMALL_NNZ,
    SolveResult,
    _check_method,
    _check_options,
    _freeze_options,
    _kind,
    _prepare,
    _raise_on_failure,
    _solve_result,
    _validate_operands,
)
from igax.solvers.sparse import SparseMatrix

__all__ = ["solve"]

_BC_ADVICE = (
    "A Dirichlet condition is given, so check that it fixes every constant / rigid-body mode (all "
    "components of a vector field, on a boundary part that exists), that no coefficient vanishes on part of "
    "the domain and that no element is degenerate."
)
_NO_BC_ADVICE = (
    "No Dirichlet condition is given (bc=None): a pure Neumann or traction problem is singular; pass bc= or "
    "add a constraint (e.g. a Lagrange multiplier for the mean)."
)


def solve(
    A: SparseMatrix,
    b: jax.Array,
    *,
    bc: DirichletBC | list[DirichletBC] | None = None,
    space: FunctionSpace | None = None,
    method: str | None = None,
    **options,
) -> Field:
    """Solve ``A u = b`` with Dirichlet conditions and return the solution as a Field.

    Differentiable (adjoint) in ``A.values``, ``b`` and the prescribed boundary values; ``jit``- and
    ``vmap``-able.

    Arguments:
        A: the assembled matrix (same space as ``b``).
        b: the load vector, shape ``(ndofs,)``.
        bc: a :class:`DirichletBC`, a list of them (later ones win on shared dofs), or None.
        space: the space of the solution; defaults to the space of ``bc`` (required when ``bc`` is None). On
            a :class:`~igax.fem.MixedSpace` its ``pressure=`` constraint is applied and the result is a
            :class:`~igax.fem.MixedField`.
        method: linear solver (see :func:`igax.solvers.linear_solve`); None picks automatically: the direct
            solver on CPU; on a GPU, for a symmetric matrix (every symmetric form), ``"mg-cg"``.
            ``"mg-cg"`` (multigrid-preconditioned CG) uses the space's hierarchy,
            :func:`igax.fem.mg_hierarchy` ``(space, bc=bc, A=A)`` (geometric for spline spaces and refined
            meshes, algebraic otherwise), built on the first solve and cached.
        **options: passed on to :func:`igax.solvers.solve` (``rtol``, ``maxiter``, ...);
            ``hierarchy=`` overrides the space's multigrid hierarchy of ``"mg-cg"``.

    Returns:
        A :class:`Field` on the space.

    Example:
        >>> from igax import fem
        >>> from igax.fem import library
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=4))
        >>> A = fem.assemble(library.laplace, V)
        >>> b = fem.assemble(library.source, V, f=-2.0)                      # -lap(u) = -2
        >>> bc = fem.DirichletBC(V, None, lambda x: x[0] ** 2)                # u = x^2 on the boundary
        >>> u = fem.solve(A, b, bc=bc)
        >>> round(float(u([[0.5, 0.5]])[0]), 10)                               # u = x^2 exactly
        0.25
        >>> u = fem.solve(A, b, bc=bc, method="mg-cg", rtol=1e-12)           # multigrid-preconditioned CG
        >>> round(float(u([[0.5, 0.5]])[0]), 8)
        0.25
    """
    bc = merge_bcs(bc)
    if space is None:
        if bc is None:
            raise ValueError("fem.solve needs space= when no boundary condition is given.")
        space = bc.space
    elif bc is not None and bc.space.plan is not space.plan:
        raise ValueError("the DirichletBC was built on a different space than space=.")
    if A.shape != (space.ndofs, space.ndofs):
        raise ValueError(
            f"A has shape {A.shape}, but the space has {space.ndofs} dofs; assemble A on that space."
        )
    mixed = isinstance(space, MixedSpace)
    if mixed:  # saddle points: the pressure constraint of MixedSpace(pressure=...)
        bc = pressure_bcs(space, bc)
        A = with_pinned_diagonal(A, bc)
    # The solvers know nothing of boundary conditions; tell them what to advise if A turns out singular.
    options.setdefault("_singular_advice", _BC_ADVICE if bc is not None else _NO_BC_ADVICE)
    method = _multigrid(method, A, space, bc, options)
    if bc is None:
        value = solvers.solve(A, b, method=method, **options)
        return mixed_result(space, value) if mixed else Field(space, value)
    # Elimination, factorisation, solve and expansion in one compiled program (see _program); checked here
    # first, so malformed input raises the same errors as the separate steps would.
    bc._check_system(A, b)
    _validate_operands(A, jax.ShapeDtypeStruct(jnp.shape(b), jnp.result_type(b, A.values, bc.values)))
    throw = options.pop("throw", True)
    advice = options.pop("_singular_advice")
    method = _check_method(method, A, options.get("hierarchy"))
    _check_options(options, method)
    # The pattern is known now, the values only when the program runs: a host backend may start its
    # symbolic analysis (PARDISO's Cholesky ordering) in the background, overlapping the compilation.
    _backends.analyse(method, A.pattern, _kind(A), A.values.dtype)
    constrained, diag = bc._masks(A.pattern)
    # A JAX backend's host-side preparation (mg-cg: the hierarchy's index maps, arguments of the program, not
    # constants baked into it); the space's hierarchy is given, so nothing is recorded after the solve.
    arrays, _ = _prepare(A, method, options)
    program = _program_small if A.nnz <= SMALL_NNZ else _program
    # Inside a caller's trace, a closed-over load vector (8 MB at 1M DOFs) or matrix is read when the program
    # runs instead of becoming a constant of the caller's program (igax._held)
    A, b, dofs, values, constrained, diag = fetch_arrays((A, b, bc.dofs, bc.values, constrained, diag))
    result = program(
        A,
        b,
        dofs,
        values,
        constrained,
        diag,
        arrays,
        method=method,
        options=_freeze_options(options),
        homogeneous=known_zero(bc.values),  # decided here: inside the program the values are traced
    )
    if throw:
        result = _raise_on_failure(result, method, advice)
    return mixed_result(space, result.value) if mixed else Field(space, result.value)


def _multigrid(method, A, space, bc, options) -> str | None:
    """The method, with the space's multigrid hierarchy put in ``options`` where mg-cg will run.

    ``method="mg-cg"`` without ``hierarchy=``: :func:`mg_hierarchy` of the space (cached). ``method=None``
    on a GPU for a symmetric matrix: mg-cg with that hierarchy (on CPU the direct solver stays the default).
    Assembled stiffness matrices are flagged symmetric, not positive definite (the form cannot know the sign
    of its coefficients), so symmetry is the test: CG judges convergence by the true residual, and an
    indefinite or singular matrix ends in a SolverError that names the cause, never in a wrong value.
    """
    real = not jnp.issubdtype(A.values.dtype, jnp.complexfloating)  # complex: no CG (not SPD)
    auto = (
        method is None
        and real
        and jax.default_backend() != "cpu"
        and A.symmetric
        and space.plan.kind in TRANSFERS
    )
    # (a matrix not flagged symmetric is refused by the solver's own check, with advice, before any setup)
    if (method == "mg-cg" or auto) and options.get("hierarchy") is None and A.symmetric and real:
        options["hierarchy"] = mg_hierarchy(space, bc=bc, A=A)
    return "mg-cg" if auto else method


def _program(
    A, b, dofs, values, constrained, diag, mg_arrays=None, *, method, options, homogeneous=False
) -> SolveResult:
    """``condense``, the solve and ``expand`` as one program (per pattern, sizes and options).

    Eagerly, these steps compiled about 25 small programs (scatters, gathers, casts, the factorisation
    callback, the solve, the status test) for every new mesh size; inside a caller's trace it is inlined.
    The result's ``value`` is the expanded solution (prescribed values set exactly); the rest of it are the
    solve's diagnostics, for the caller to raise on.
    """
    Ac, bc = condense(A, b, dofs, values, constrained, diag, homogeneous)
    result = _solve_result(Ac, bc, mg_arrays, method=method, options=options)
    return eqx.tree_at(lambda r: r.value, result, result.value.at[dofs].set(values))


_STATIC = ("method", "options", "homogeneous")
_program_small = lazy_jit(jax.jit, _program, static_argnames=_STATIC)  # see SMALL_NNZ
_program = jax.jit(_program, static_argnames=_STATIC)
