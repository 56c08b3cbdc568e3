"""Nonlinear weak forms: residuals linear in the test function, energies, and their autodiff tangents.

A residual form is written for one quadrature point like a linear form, with the current state's jet ``u``
(``u.value``, ``u.grad``) as an extra argument::

    @fem.residual_form(inputs={"f": "scalar"})
    def nonlinear_diffusion(u, v, w):
        return (1 + u.value ** 2) * jnp.dot(u.grad, v.grad) - w.f * v.value

An energy form gives a scalar density ``psi(u, w)``; its residual is the first variation
``dpsi/du-jet . v-jet`` (``jax.grad`` at the point) and its tangent the second.

Assembly reuses the machinery of bilinear forms (:mod:`igax.fem.forms.assembly`). At every quadrature point
the kernel is evaluated on the unit test jets, giving the pointwise residual vector ``r(z)`` (``z`` = the
state's jet, ``m = ncomp (1 + dim)`` numbers); the residual vector is ``r`` contracted with the basis tables
like a linear form. The tangent is ONE ``jax.jacfwd`` of ``r`` with respect to ``z`` at each point, an
``(m, m)`` matrix that is contracted with the basis tables exactly like the kernel matrix of a bilinear form
and summed onto the space's CSR pattern. No tangent is written by hand, and since the whole chain is JAX,
residual and tangent are differentiable in the state, the inputs and the geometry.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from igax._config import check_float64
from igax.fem.field import Field
from igax.fem.forms._contract import jet_columns, unit_jets
from igax.fem.forms._kernel_checks import check_linear, check_no_constant_term, checked_kernel
from igax.fem.forms.assembly import _contract_jets_first, _contract_linear, known_tables
from igax.fem.forms.form import Form, FormInputs, Jet, QuadValue, _decorator, kernel_output
from igax.fem.forms.inputs import check_call, inputs_at, prepare_inputs
from igax.fem.spaces.base import FunctionSpace
from igax.solvers.sparse import SparseMatrix

__all__ = ["residual_form", "energy_form", "assemble_residual", "assemble_energy"]


def residual_form(
    fn: Callable | None = None, *, symmetric: bool = False, boundary: bool = False, inputs=None
):
    """Declare a nonlinear residual ``R(u; v)`` from a pointwise kernel ``kernel(u, v, w) -> scalar``.

    The kernel may be any (differentiable) function of the state's jet ``u`` (``u.value``, ``u.grad``) and
    the named inputs, but must be linear in the test jet ``v`` with no term free of ``v`` (checked on its
    jaxpr when first traced). Its tangent comes from automatic differentiation.

    Arguments:
        fn: the kernel (when used as ``@residual_form`` without parentheses).
        symmetric: declare the tangent symmetric (the residual derives from an energy), so that the tangent
            matrix is flagged symmetric and Cholesky or CG may be used on it.
        boundary: a boundary term (e.g. a traction or a follower load): integrate with ``boundary=...``.
        inputs: the named inputs and their value shapes, as for :func:`igax.fem.bilinear_form`.

    Returns:
        A :class:`Form` of kind ``"residual"``: :func:`assemble_residual` or :func:`igax.fem.solve_nonlinear`.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> @fem.residual_form(inputs={"f": "scalar"})
        ... def nonlinear_diffusion(u, v, w):
        ...     return (1 + u.value ** 2) * jnp.dot(u.grad, v.grad) - w.f * v.value
        >>> nonlinear_diffusion
        residual_form(nonlinear_diffusion)
    """
    return _decorator("residual", fn, symmetric, boundary, inputs)


def energy_form(fn: Callable | None = None, *, boundary: bool = False, inputs=None):
    """Declare a nonlinear problem by its energy density ``psi(u, w) -> scalar`` (a minimisation problem).

    The residual is the first variation ``R(u; v) = dpsi/du . v`` (``jax.grad`` of ``psi`` with respect to
    the state's jet at each point), the tangent its derivative (symmetric); :func:`assemble_energy` integrates
    ``psi`` itself.

    Arguments:
        fn: the density (when used as ``@energy_form`` without parentheses).
        boundary: a boundary energy (e.g. the potential of a dead traction): integrate with ``boundary=``.
        inputs: the named inputs and their value shapes, as for :func:`igax.fem.bilinear_form`.

    Returns:
        A :class:`Form` of kind ``"energy"``.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> @fem.energy_form(inputs={"f": "scalar"})
        ... def p_laplace(u, w):
        ...     return 0.25 * jnp.dot(u.grad, u.grad) ** 2 - w.f * u.value
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=3))
        >>> u = fem.Field(V, jnp.ones(V.ndofs))
        >>> float(fem.assemble_energy(p_laplace, V, u, f=2.0))      # u = 1: -f over the unit square
        -2.0
    """
    return _decorator("energy", fn, True, boundary, inputs)


def _check_form(form, what: str):
    if not isinstance(form, Form) or form.kind not in ("residual", "energy"):
        got = repr(form) if isinstance(form, Form) else type(form).__name__
        raise TypeError(
            f"{what} needs a nonlinear form declared with fem.residual_form or fem.energy_form, got {got}. "
            "Linear problems go through fem.assemble and fem.solve."
        )


def _state(space: FunctionSpace, u, name: str = "u"):
    coeffs = u.coeffs if isinstance(u, Field) else jnp.asarray(u)
    if jnp.shape(coeffs) != (space.ndofs,):
        raise ValueError(
            f"{name} must be a Field on the space or its {space.ndofs} coefficients, got shape "
            f"{jnp.shape(coeffs)}."
        )
    return coeffs


def _prepare(form, space, boundary, fields):
    """Boundary names and inputs made ready (the checks of :func:`igax.fem.assemble`)."""
    if not isinstance(space, FunctionSpace):
        raise TypeError(f"space must be a SplineSpace or LagrangeSpace, got {type(space).__name__}.")
    boundary, expected = check_call(form, space, boundary, fields)
    rule = space.quadrature_rule(boundary)
    known = known_tables(space, rule)
    x = None if known is None else known[1]
    fields = prepare_inputs(space, dict(fields), boundary, form=form, expected=expected, x=x)
    return boundary, fields


def assemble_residual(form: Form, space: FunctionSpace, u, *, boundary=None, tangent: bool = False, **fields):
    """The residual vector of a nonlinear form at the state ``u`` and, with ``tangent=True``, its tangent.

    Arguments:
        form: a :func:`residual_form` or :func:`energy_form`.
        space: the space of the state (trial = test space).
        u: the state, a :class:`~igax.fem.Field` on ``space`` or its coefficients ``(ndofs,)``.
        boundary: None (volume) or boundary names (boundary forms).
        tangent: also return the tangent ``dR/du`` as a :class:`~igax.solvers.SparseMatrix` on the space's
            pattern (from one ``jax.jacfwd`` of the pointwise residual at every quadrature point).
        **fields: named inputs (numbers, callables of ``x``, arrays, Fields), as for
            :func:`igax.fem.assemble`.

    Returns:
        ``R`` of shape ``(ndofs,)``, or ``(R, K)``. Differentiable in ``u``, the inputs and the geometry.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> @fem.energy_form
        ... def quartic(u, w):
        ...     return 0.25 * u.value ** 4
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=1, elements=2))
        >>> R, K = fem.assemble_residual(quartic, V, jnp.ones(V.ndofs), tangent=True)
        >>> round(float(R.sum()), 12), round(float(K.todense().sum()), 12)   # integrals of u^3, 3 u^2
        (1.0, 3.0)
    """
    _check_form(form, "assemble_residual")
    coeffs = _state(space, u)
    boundary, fields = _prepare(form, space, boundary, fields)
    return _residual_program(form, space, coeffs, boundary, fields, want_tangent=bool(tangent))


def assemble_energy(form: Form, space: FunctionSpace, u, *, boundary=None, **fields):
    """The energy ``integral of psi(u, w)`` of an :func:`energy_form` at the state ``u`` (a scalar).

    Arguments and example: see :func:`assemble_residual` and :func:`energy_form`.
    """
    _check_form(form, "assemble_energy")
    if form.kind != "energy":
        raise TypeError(f"assemble_energy needs an energy_form; {form!r} declares only a residual.")
    coeffs = _state(space, u)
    boundary, fields = _prepare(form, space, boundary, fields)
    return _energy_program(form, space, coeffs, boundary, fields)


# -- pointwise kernels -----------------------------------------------------------------------------------
def _residual_kernel(form: Form):
    """``k(u, v, w)`` of a form: its own kernel, or the first variation of an energy density."""
    if form.kind == "residual":
        return form.kernel

    def first_variation(u, v, w):
        def psi(val, grad):
            return kernel_output(form.kernel(Jet(val, grad), w), form)

        gv, gg = jax.grad(psi, argnums=(0, 1))(u.value, u.grad)
        return jnp.sum(gv * v.value) + jnp.sum(gg * v.grad)

    return first_variation


def _w_at(xp, np_, fl):
    return FormInputs(xp, np_, {k: QuadValue(v, g, k) for k, (v, g) in fl.items()})


def _point_data(form, space, coeffs, boundary, fields):
    rule = space.quadrature_rule(boundary)
    known = known_tables(space, rule)
    tables = space.tables(rule) if known is None else known[0]
    if tables.dx.dtype != jnp.float64:
        check_float64("assemble_residual")
    inputs = inputs_at(fields, space, rule, tables, form)
    ne, nq = tables.dx.shape
    P = ne * nq
    uval, ugrad = space.eval_coeffs(coeffs, tables, rule)
    flat = {
        k: (v.reshape((P,) + v.shape[2:]), None if g is None else g.reshape((P,) + g.shape[2:]))
        for k, (v, g) in inputs.items()
    }
    n = None if tables.n is None else tables.n.reshape(P, -1)
    pts = (tables.x.reshape(P, -1), n, flat)
    state = (uval.reshape((P,) + uval.shape[2:]), ugrad.reshape((P,) + ugrad.shape[2:]))
    return rule, tables, pts, state


def _residual_parts(form, space, coeffs, boundary, fields, want_tangent: bool):
    rule, tables, (x, n, flat), (uval, ugrad) = _point_data(form, space, coeffs, boundary, fields)
    p = space.plan
    C, d1 = p.ncomp, p.dim + 1
    ne, nq = tables.dx.shape
    dtype = tables.dx.dtype
    kernel = _residual_kernel(form)
    in_axes = (0, None if n is None else 0, jax.tree_util.tree_map(lambda _: 0, flat))

    # The test jet must enter linearly: checked (once per form and shapes) like a linear form's kernel.
    def kern(va, vg, ua, ug, xp, np_, fl):
        return kernel(Jet(ua, ug), Jet(va, vg), _w_at(xp, np_, fl))

    uv0, ug0 = unit_jets(space, dtype)
    sd = jax.ShapeDtypeStruct
    jv = (sd(uv0.shape[1:], dtype), sd(ug0.shape[1:], dtype))
    pt = jax.tree_util.tree_map(lambda a: sd(a.shape[1:], a.dtype), (x, n, flat))

    def checks():
        args = (*jv, *jv, *pt)
        check_linear(kern, args, form, "v")
        check_no_constant_term(kern, args, {"v": (0, 1)}, form)
        return {0, 1}

    checked_kernel(form, (jv, jv, pt), checks)
    # Jets in the layout of the unit jets: entry c * (1 + dim) + k, k = 0 the value, k >= 1 the gradient.
    keep = list(range(d1))
    shape_v = uv0.shape[1:]

    def jet(z):
        zz = z.reshape(C, d1)
        return Jet(zz[:, 0].reshape(shape_v), zz[:, 1:].reshape(shape_v + (d1 - 1,)))

    def point_residual(z, xp, np_, fl):
        """The residual at one point for every unit test jet, ``(C * (1 + dim),)``, from the state jet ``z``.

        The kernel is linear in the test jet, so its values at the unit jets are its gradient with respect to
        that jet: one reverse pass instead of one evaluation per unit jet (2x faster tangents for 3D
        hyperelasticity, where the vmapped evaluations were not all fused).
        """
        w = _w_at(xp, np_, fl)
        if form.kind == "energy":  # the first variation at the unit jets: the gradient of the density
            return jax.grad(lambda y: kernel_output(form.kernel(jet(y), w), form))(z)
        u = jet(z)
        return jax.grad(lambda y: kernel_output(kernel(u, jet(y), w), form))(jnp.zeros_like(z))

    z = jnp.concatenate([uval.reshape(-1, C, 1), ugrad.reshape(-1, C, d1 - 1)], axis=-1).reshape(
        -1, C * d1
    )  # (P, m)
    cols = jet_columns(tables, keep)
    L = jax.vmap(point_residual, (0,) + in_axes)(z, x, n, flat).reshape(ne, nq, C, d1)
    be = _contract_linear(cols, L * tables.dx[..., None, None])
    be = jnp.broadcast_to(be, (ne, C, p.nloc_scalar)).reshape(ne, -1)
    dofs = space.element_dofs(rule)[:, None, :] + p.nscalar * jnp.arange(C, dtype=jnp.int32)[:, None]
    R = jax.ops.segment_sum(be.ravel(), dofs.reshape(ne, -1).ravel(), num_segments=p.ndofs)
    if not want_tangent:
        return R
    # One forward-mode Jacobian of the pointwise residual: (m_test, m_state) per point.
    # Points last (out_axes): the layout of a bilinear kernel matrix, (C, k, C, k, ne, nq), whose first jet
    # pair is scattered to the rows: the test jet there, the state increment in the columns
    # (K[i, j] = dR_i / du_j).
    J = jax.vmap(jax.jacfwd(point_residual), (0,) + in_axes, out_axes=-1)(z, x, n, flat)  # (m_v, m_u, P)
    M = J.reshape(C, d1, C, d1, ne, nq) * tables.dx
    K = _contract_jets_first(cols, M, cols).reshape(ne, -1)
    slots = space.element_slots(rule)
    values = jax.ops.segment_sum(K.ravel(), slots.ravel(), num_segments=p.pattern.nnz)
    return R, SparseMatrix(values, p.pattern, symmetric=form.symmetric)


def _energy(form, space, coeffs, boundary, fields):
    _, tables, (x, n, flat), (uval, ugrad) = _point_data(form, space, coeffs, boundary, fields)
    in_axes = (0, 0, 0, None if n is None else 0, jax.tree_util.tree_map(lambda _: 0, flat))

    def point(a, b, xp, np_, fl):
        return kernel_output(form.kernel(Jet(a, b), _w_at(xp, np_, fl)), form)

    vals = jax.vmap(point, in_axes)(uval, ugrad, x, n, flat).reshape(tables.dx.shape)
    return jnp.sum(vals * tables.dx)


_residual_program = eqx.filter_jit(_residual_parts)
_energy_program = eqx.filter_jit(_energy)
