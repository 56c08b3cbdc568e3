"""``fem.solve_nonlinear``: Newton on assembled nonlinear forms, with load stepping and implicit gradients.

The residual and tangent are those of :func:`igax.fem.assemble_residual` (the tangent from one ``jacfwd`` per
quadrature point, on the space's pattern), so every space of the protocol works. Dirichlet conditions are
built into the system the way :func:`igax.fem.solve` builds them in, keeping the pattern and the symmetry:
the residual is evaluated at the state with its constrained entries replaced by the prescribed values ``g``,
and the constrained rows become ``s (u_d - g_d)``. The Jacobian of that system is exactly the symmetrically
eliminated tangent (constrained rows and columns zero, ``s`` on the diagonal), so CG-type backends apply to
energy forms, and the implicit derivative with respect to ``g`` (``du_f = -K_ff^{-1} K_fd dg``) comes out of
the same solve.

The Newton iteration itself is :func:`igax.solvers.newton_solve`: a ``lax.while_loop`` with backtracking on
``|R|`` that is never differentiated. The converged state enters a ``custom_jvp`` whose rule is the implicit
function theorem, so a gradient costs one tangent assembly at the solution, one transposed solve and the
residual's VJP with respect to the inputs, whatever the number of Newton iterations or load steps (only the
last step carries derivatives; the earlier ones give it its starting point).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._compile import lazy_jit
from igax.fem.bc import DirichletBC, condense, merge_bcs
from igax.fem.field import Field
from igax.fem.forms.form import Form, kernel_output
from igax.fem.forms.mixed_assembly import mixed_residual_parts, prepare_mixed
from igax.fem.forms.nonlinear import (
    _check_form,
    _prepare,
    _residual_kernel,
    _residual_parts,
    _state,
    residual_form,
)
from igax.fem.mixed_solving import mixed_result, pressure_bcs
from igax.fem.multigrid import mg_hierarchy
from igax.fem.spaces.base import FunctionSpace
from igax.fem.spaces.mixed import MixedField, MixedSpace
from igax.solvers._errors import Status, raise_on_failure
from igax.solvers.linear import SMALL_NNZ, linear_solve
from igax.solvers.newton import _MESSAGES, NewtonError, newton_solve
from igax.solvers.sparse import SparseMatrix

__all__ = ["solve_nonlinear", "NonlinearInfo"]


class NonlinearInfo(eqx.Module):
    """Diagnostics of :func:`solve_nonlinear`, one row per load step.

    Attributes:
        iterations: Newton iterations of each load step, ``(steps,)``.
        residual_norms: ``|R(u_k)|`` of each step, ``(steps, maxiter + 1)`` (zeros after the last iteration).
        status: the :class:`~igax.solvers.Status` code of each step (0 converged).
    """

    iterations: jax.Array
    residual_norms: jax.Array
    status: jax.Array

    @property
    def history(self) -> list[np.ndarray]:
        """The residual norms of the iterations taken, one array per load step (host only)."""
        k = np.asarray(self.iterations)
        h = np.asarray(self.residual_norms)
        return [h[i, : k[i] + 1] for i in range(len(k))]


def _terms(form) -> tuple:
    """``form`` as a tuple of ``(Form, boundary)`` terms."""
    items = list(form) if isinstance(form, (list, tuple)) and not isinstance(form, Form) else [form]
    out = []
    for t in items:
        f, b = (
            (t, None) if isinstance(t, Form) else tuple(t) if isinstance(t, tuple) and len(t) == 2 else (t, 0)
        )
        if b == 0:
            raise TypeError(
                "form must be a residual_form / energy_form, or a list of them and (form, boundary) pairs, "
                f"e.g. [library.neo_hookean, (traction_form, 'right')]; got {type(t).__name__}."
            )
        _check_form(f, "solve_nonlinear")
        out.append((f, b))
    return tuple(out)


def _inputs_of(form: Form, inputs: dict, space) -> dict:
    """The inputs a term takes: the declared ones, or all of them for a form that declares none."""
    space = space.primary if isinstance(space, MixedSpace) else space  # inputs live on its rule
    shapes = form.input_shapes(space.plan.value_shape, space.plan.dim)
    return dict(inputs) if shapes is None else {k: v for k, v in inputs.items() if k in shapes}


def _scaled(value, t):
    if isinstance(value, Field):
        return Field(value.space, t * value.coeffs)
    return t * value


def solve_nonlinear(
    form,
    V: FunctionSpace,
    *,
    bc: DirichletBC | list[DirichletBC] | None = None,
    u0=None,
    method: str | None = None,
    load_steps: int = 1,
    load: tuple[str, ...] | None = None,
    rtol: float = 1e-10,
    atol: float = 0.0,
    maxiter: int = 25,
    line_search: bool = True,
    info: bool = False,
    linear_options: dict | None = None,
    **inputs,
):
    """Solve the nonlinear problem ``R(u; v) = 0`` for all ``v`` by Newton's method; returns a Field.

    Arguments:
        form: a :func:`~igax.fem.residual_form` or :func:`~igax.fem.energy_form`, or a list of them and
            ``(form, boundary)`` pairs (boundary terms such as tractions); the residuals are summed.
        V: the space of the solution; on a :class:`~igax.fem.MixedSpace` the kernels receive tuples of
            jets (one per field), its ``pressure=`` constraint is applied and the result is a
            :class:`~igax.fem.MixedField`.
        bc: a :class:`~igax.fem.DirichletBC` or a list of them (its values are differentiable), or None.
        u0: the initial guess (a Field on ``V`` or coefficients); default zero. Its constrained entries are
            replaced by the prescribed values.
        method: the linear solver of the tangent systems and of the adjoint, as in :func:`igax.fem.solve`
            (``"superlu"``, ``"pardiso"``, ``"cholmod"``, ``"cg"``, ``"gmres"``, ...); None picks the
            direct solver. ``"mg-cg"``: CG preconditioned by the space's multigrid hierarchy
            (:func:`~igax.fem.mg_hierarchy` with the Dirichlet dofs fixed; geometric for spline spaces), for
            the symmetric tangents of energy forms; ``linear_options={"hierarchy": H}`` overrides it.
        load_steps: load stepping (continuation): solve at the load factors ``1/n, 2/n, ..., 1`` in turn,
            each from the previous solution.
        load: the names of the inputs scaled by the load factor (e.g. ``("f",)``), and ``"bc"`` for the
            Dirichlet values; default (None): ``("bc",)`` when ``load_steps > 1`` (only the Dirichlet values
            are scaled), else nothing.
        rtol, atol: Newton stops when ``|R| <= max(rtol |R_0|, atol)`` at every load step, ``R_0`` the larger
            of the out-of-balance force at the step's start (before the prescribed values move) and the
            residual after the first (predictor) step.
        maxiter: Newton iterations per load step.
        line_search: backtracking on the residual norm (Armijo), else full steps.
        info: also return a :class:`NonlinearInfo` (iterations and residual histories per load step).
        linear_options: options of the linear solves (e.g. ``{"rtol": 1e-12}`` for iterative methods).
        **inputs: the named inputs of the form(s): numbers, callables of ``x``, arrays, Fields (all
            differentiable, as is the space's geometry).

    Returns:
        A :class:`~igax.fem.Field`, or ``(Field, NonlinearInfo)`` with ``info=True``.

    Raises:
        NewtonError: Newton failed at some load step; the message gives the step, the cause, the
            iterations and the residual history (inside ``jit`` when the program runs).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from igax import fem
        >>> @fem.residual_form(inputs={"f": "scalar"})
        ... def nonlinear_diffusion(u, v, w):
        ...     return (1 + u.value ** 2) * jnp.dot(u.grad, v.grad) - w.f * v.value
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=4))
        >>> bc = fem.DirichletBC(V, None, 0.0)
        >>> u, out = fem.solve_nonlinear(nonlinear_diffusion, V, bc=bc, f=10.0, info=True)
        >>> int(out.iterations[0]) < 8, round(float(u([[0.5, 0.5]])[0]), 3)
        (True, 0.649)
        >>> def centre(f):
        ...     return fem.solve_nonlinear(nonlinear_diffusion, V, bc=bc, f=f)([[0.5, 0.5]])[0]
        >>> bool(jax.grad(centre)(10.0) > 0)
        True
    """
    terms = _terms(form)
    mixed = isinstance(V, MixedSpace)
    if not (mixed or isinstance(V, FunctionSpace)):
        raise TypeError(f"V must be a SplineSpace, LagrangeSpace or MixedSpace, got {type(V).__name__}.")
    if not isinstance(load_steps, int) or load_steps < 1:
        raise ValueError(f"load_steps must be a positive int, got {load_steps!r}.")
    if not isinstance(maxiter, int) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive int, got {maxiter!r}.")
    bc = merge_bcs(bc)
    if bc is not None and bc.space.plan is not V.plan:
        raise ValueError("the DirichletBC was built on a different space than V.")
    if mixed:  # saddle points: the pressure constraint of MixedSpace(pressure=...)
        bc = pressure_bcs(V, bc)
    load = tuple(load) if load is not None else (("bc",) if load_steps > 1 else ())
    unknown = sorted(set(load) - set(inputs) - {"bc"})
    if unknown:
        raise ValueError(
            f"load= names {unknown}, which are not inputs of this solve; give input names (given: "
            f"{sorted(inputs) or 'none'}) or 'bc' for the Dirichlet values."
        )
    taken = set()
    fields = []
    for f, b in terms:
        own = _inputs_of(f, inputs, V)
        taken |= set(own)
        b, prepared = prepare_mixed(f, V, b, own)[:2] if mixed else _prepare(f, V, b, own)
        fields.append(prepared)
    extra = sorted(set(inputs) - taken)
    if extra:
        raise TypeError(f"solve_nonlinear got the input(s) {extra}, which no term of the form takes.")
    names = V.primary.check_names if mixed else V.check_names
    terms = tuple((f, None if b is None else names(b)) for f, b in terms)
    terms, fields = _merge_terms(terms, fields)
    if isinstance(u0, MixedField):
        u0 = u0.coeffs
    u0 = jnp.zeros(V.ndofs, _dtype(V)) if u0 is None else _state(V, u0, "u0")
    linear_options = dict(linear_options or {})
    if method == "mg-cg" and linear_options.get("hierarchy") is None:
        # The tangents are condensed like fem.solve's matrices: the space's hierarchy (geometric for spline
        # spaces) with the Dirichlet dofs fixed, built once here and shared by every Newton step and the
        # adjoint; only the Galerkin coarse operators are recomputed from each tangent.
        linear_options["hierarchy"] = mg_hierarchy(V, bc=bc)
    config = (
        method,
        tuple(sorted(linear_options.items())),
        float(rtol),
        float(atol),
        maxiter,
        bool(line_search),
        load_steps,
        load,
    )
    if bc is None:
        dofs, g = np.zeros(0, np.int64), jnp.zeros(0, u0.dtype)
    else:
        dofs, g = bc.dofs, jnp.asarray(bc.values, u0.dtype)
    program = _program_small if V.plan.pattern.nnz <= SMALL_NNZ else _program
    u, out = program(terms, V, tuple(fields), g, u0, _Static(dofs), config)
    result = _Result(u, out)
    result = raise_on_failure(result, _failure, out.iterations, out.residual_norms)
    u = mixed_result(V, result.value) if mixed else Field(V, result.value)
    return (u, out) if info else u


class _Result(eqx.Module):
    value: jax.Array
    info: NonlinearInfo

    @property
    def status(self):
        return jnp.max(self.info.status)


def _failure(status, iterations, norms) -> NewtonError:
    """The NewtonError of a failed solve, with the history of every load step (host values)."""
    iterations, norms = np.atleast_1d(iterations), np.atleast_2d(norms)
    lines = [
        f"step {i + 1}: {k} iterations, |R| = {np.array2string(norms[i, : k + 1], precision=3)}"
        for i, k in enumerate(iterations)
    ]
    return NewtonError(
        f"solve_nonlinear failed: {_MESSAGES[Status(int(status))]}.\n" + "\n".join(lines) + "\nA diverging "
        "Newton iteration often needs load_steps= (continuation) or a better u0; a NaN residual an inverted "
        "element (a load too large for one step)."
    )


def _dtype(V):
    return jnp.result_type(
        *[a for a in jax.tree_util.tree_leaves(V) if jnp.issubdtype(a.dtype, jnp.floating)]
    )


class _Static:
    """Constrained dofs as a hashable static argument."""

    def __init__(self, dofs):
        self.array = np.asarray(dofs, np.int64)
        self._hash = hash(self.array.tobytes())

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return isinstance(other, _Static) and np.array_equal(self.array, other.array)


# Merged forms by their terms: a merged form is a static argument of the compiled program, so it must be the
# same object for the same terms (else every call would compile anew).
_MERGED: dict = {}


def _merge_terms(terms, fields):
    """Terms on the same boundary merged into one form (one pointwise evaluation, one tangent contraction).

    A sum of forms (an energy and its loads) is then assembled in one pass: separate terms would each cost a
    ``jacfwd`` and a contraction (a load's tangent is zero) and several times the compilation.
    """
    groups: dict = {}
    for (f, b), fl in zip(terms, fields, strict=True):
        groups.setdefault(b, []).append((f, fl))
    out_terms, out_fields = [], []
    for b, items in groups.items():
        forms = tuple(f for f, _ in items)
        merged = {}
        for _, fl in items:
            merged.update(fl)
        if len(forms) == 1:
            out_terms.append((forms[0], b))
            out_fields.append(merged)
            continue
        form = _MERGED.get(forms)
        if form is None:
            kernels = [_residual_kernel(f) for f in forms]

            def kernel(u, v, w, kernels=kernels, first=forms[0]):
                return sum(kernel_output(k(u, v, w), first) for k in kernels)

            kernel.__name__ = "+".join(f.name for f in forms)
            decl = None
            if all(f.inputs is not None for f in forms):
                decl = {k: spec for f in forms for k, spec in f.inputs}
            form = residual_form(
                kernel, symmetric=all(f.symmetric for f in forms), boundary=forms[0].boundary, inputs=decl
            )
            _MERGED[forms] = form
        out_terms.append((form, b))
        out_fields.append(merged)
    return tuple(out_terms), out_fields


def _predictor(terms, args, dofs, constrained, diag, method, opts):
    """The start of a load step: one Newton step from ``u`` that also moves the constrained dofs to ``g``.

    Jumping the constrained entries to their new values with the rest of ``u`` unchanged can invert the
    elements next to the boundary (a NaN residual, e.g. from a zero initial guess under a large prescribed
    displacement); this step, the symmetric elimination of :func:`igax.fem.solve` applied to the increment,
    moves the interior with them (for a linear problem it is the solution). Not differentiated.
    """
    space, fl, g, u = args
    R, K = _system(terms, space, fl, u, True)
    Kc, b = condense(K, -R, dofs, g - u[dofs], constrained, diag)
    du = linear_solve(Kc, b, method=method, throw=False, **opts).value
    ok = jnp.all(jnp.isfinite(du))
    # |b|, the out-of-balance force of the step, is the scale that rtol refers to: the residual after the
    # predictor may already be tiny (a linear problem, a homogeneous deformation), and relative to itself
    # it could never be reduced by rtol.
    return jnp.where(ok, u + jnp.where(ok, du, 0.0), u).at[dofs].set(g), jnp.linalg.norm(b)


def _system(terms, space, fields, u, want_tangent):
    R, vals, sym = 0.0, 0.0, True
    K = None
    parts = mixed_residual_parts if isinstance(space, MixedSpace) else _residual_parts
    for (form, b), fl in zip(terms, fields, strict=True):
        out = parts(form, space, u, b, fl, want_tangent)
        if want_tangent:
            r, K = out
            vals = vals + K.values
            sym = sym and form.symmetric
        else:
            r = out
        R = R + r
    if not want_tangent:
        return R
    return R, SparseMatrix(vals, K.pattern, symmetric=sym)


def _dirichlet_slots(space, dofs):
    """(entries in a Dirichlet dof's row or column ``(nnz,)`` bool, the diagonal slots of those dofs): what a
    symmetric elimination of the dofs from a tangent zeroes and sets (host arrays, built once)."""
    pattern = space.plan.pattern
    isd = np.zeros(space.ndofs, bool)
    isd[dofs] = True
    return isd[pattern.rows] | isd[pattern.indices], pattern.diagonal_slots[dofs]


def _program(terms, space, fields, g, u0, static, config):
    method, lin_opts, rtol, atol, maxiter, line_search, steps, load = config
    dofs = static.array
    constrained, diag = _dirichlet_slots(space, dofs)

    def residual(u, space, fields, g, s):
        R = _system(terms, space, fields, u.at[dofs].set(g), False)
        return R.at[dofs].set(s * (u[dofs] - g))

    def tangent(u, space, fields, g, s):
        _, K = _system(terms, space, fields, u.at[dofs].set(g), True)
        return K.with_values(jnp.where(constrained, 0.0, K.values).at[diag].set(s))

    # The constrained rows are decoupled (their columns are zero too), so their scale s is one separate
    # eigenvalue: direct solvers and the Jacobi-preconditioned Krylov methods do not depend on it. s = 1
    # rather than the tangent's diagonal at u0, which would compile one more tangent assembly.
    s = jnp.ones((), u0.dtype)
    opts = dict(lin_opts)
    u = u0
    its, hists, stats = [], [], []
    for i in range(steps):
        t = (i + 1) / steps
        last = i == steps - 1
        fl = tuple({k: _scaled(v, t) if k in load else v for k, v in f.items()} for f in fields)
        gt = g * t if "bc" in load else g
        args = (space, fl, gt, s)
        if not last:
            args = jax.lax.stop_gradient(args)
        start, scale = _predictor(
            terms, jax.lax.stop_gradient((space, fl, gt, u)), dofs, constrained, diag, method, opts
        )
        res = newton_solve(
            residual, start, *args, tangent=tangent, method=method,
            rtol=rtol, atol=jnp.maximum(atol, rtol * scale), maxiter=maxiter, line_search=line_search,
            throw=False, linear_options=opts,
        )  # fmt: skip
        u = res.value if last else jax.lax.stop_gradient(res.value)
        its.append(res.iterations)
        hists.append(res.residual_norms)
        stats.append(res.status)
    return u, NonlinearInfo(jnp.stack(its), jnp.stack(hists), jnp.stack(stats))


_program_small = lazy_jit(eqx.filter_jit, _program)  # small problems: compiling dominates, cheap options
_program = eqx.filter_jit(_program)
