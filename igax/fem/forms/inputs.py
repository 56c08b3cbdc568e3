"""Named form inputs: from what a user passes (numbers, callables of ``x``, arrays, Fields) to values at the
quadrature points.

Two steps, so that compiled assembly programs see arrays only: :func:`prepare_inputs` runs on the host,
outside any kernel (callables of ``x`` are evaluated at the rule's points there, numbers become arrays), and
:func:`inputs_at` runs inside the program, giving each input as ``(value (ne, nq, ...), gradient or None)``
at the points (Fields through their space's tables). Shapes are checked against a form's declared inputs
with messages that say what to pass instead.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.field import Field
from igax.fem.forms.form import _SHAPE_NAMES, Form
from igax.fem.spaces.base import FunctionSpace, Rule, Tables

__all__ = ["as_jax", "inputs_at", "prepare_inputs"]


def _callable_values(f, x, name: str):
    """Values of a callable input at points x (ne, nq, dim) -> (ne, nq) + value shape."""
    ne, nq = x.shape[:2]
    val = jnp.asarray(f(jnp.moveaxis(x, -1, 0)))  # x: (dim, ne, nq), first axis = coordinate
    if val.ndim == 0:
        return jnp.broadcast_to(val, (ne, nq))
    return _points_last(val, ne, nq, name)


def _points_last(val, ne: int, nq: int, name: str):
    """A callable's values, value shape + (ne, nq), as (ne, nq) + value shape (or a clear error)."""
    if val.ndim >= 2 and val.shape[-2:] == (ne, nq):
        return jnp.moveaxis(val.reshape(val.shape[:-2] + (ne * nq,)), -1, 0).reshape(
            (ne, nq) + val.shape[:-2]
        )
    raise ValueError(
        f"form input {name!r} is a callable of x that returned shape {val.shape}; with x of shape "
        f"(dim, {ne}, {nq}) (first axis = coordinate) it must return shape ({ne}, {nq}) (or "
        f"value_shape + ({ne}, {nq}), or a scalar). Write it with x[0], x[1], ... and jnp functions."
    )


def _callable_input(f, x, name: str):
    """A callable input at points x (dim, ne, nq): a 0-d value, (ne, nq), or (ne, nq) + value shape.

    Like :func:`_callable_values`, but eager work is kept to what the callable itself does: a constant stays
    0-d and scalar values stay as they are (the compiled assembly broadcasts them), so a new mesh size does
    not compile a broadcast or a reshape program of its own.
    """
    ne, nq = x.shape[1:]
    val = as_jax(f(x))
    if val.ndim == 0 or val.shape == (ne, nq):
        return val
    return _points_last(val, ne, nq, name)


def as_jax(value):
    """``jnp.asarray(value)``, with NumPy arrays moved by a transfer (``jnp.asarray`` compiles a program per
    shape for them), concrete also while a caller's function is being traced."""
    if isinstance(value, (np.ndarray, np.generic)):
        with jax.ensure_compile_time_eval():
            return jax.device_put(value)
    return jnp.asarray(value)


@eqx.filter_jit
def _points(space: FunctionSpace, boundary):
    return space.tables(space.quadrature_rule(boundary)).x


def inputs_at(
    fields: dict,
    space: FunctionSpace,
    rule: Rule,
    tables: Tables,
    form: Form | None = None,
    field_tables: dict | None = None,
    ids=None,
) -> dict:
    """Each named input as (value (ne, nq, ...), grad or None) at the rule's quadrature points (traceable).

    The inputs are those of :func:`prepare_inputs` (Fields, arrays, 0-d constants).

    With a ``form`` that declares its inputs, every input's value shape is checked against the declaration
    (shapes are static: this costs nothing at run time). ``field_tables`` holds, by input name, tables of
    Field inputs computed beforehand (:func:`known_tables`, or a chunk's). ``ids``: the positions of the
    elements in the rule when ``tables`` are those of a chunk of them (chunked assembly), else None.
    """
    ne, nq = tables.dx.shape
    p = space.plan
    expected = None if form is None else form.input_shapes(p.value_shape, p.dim)
    out = {}
    for name, f in fields.items():
        want = None if expected is None else expected.get(name)
        if isinstance(f, Field):
            fs = f.space
            if field_tables and name in field_tables:
                t = field_tables[name]
            elif fs is space or fs.plan is space.plan:
                t = tables if fs is space else fs.tables(rule)
            elif space.compatible(fs):
                t = fs.tables(rule)
            else:
                raise ValueError(
                    f"form input {name!r} is a Field on a space whose elements differ from the space being "
                    "assembled on; a Field input must live on the same mesh / the same knot spans (any "
                    "degree). Project or interpolate it onto this space first."
                )
            if want is not None and fs.value_shape != want:
                raise ValueError(
                    _shape_message(form, name, f"a Field of value shape {fs.value_shape}", want, ne, nq, p)
                )
            out[name] = fs.eval_coeffs(f.coeffs, t, rule, ids)
        elif callable(f):
            val = _callable_values(f, tables.x, name)
            if want is not None and val.shape[2:] != want:
                what = f"a callable of x whose values have shape {val.shape[2:]}"
                raise ValueError(_shape_message(form, name, what, want, ne, nq, p))
            out[name] = (val, None)
        else:
            out[name] = (_array_values(name, jnp.asarray(f), ne, nq, p, want, form), None)
    return out


def _array_values(name: str, val, ne: int, nq: int, plan, want, form):
    """An array input as values at the points (ne, nq, *value shape), its shape matched exactly.

    A form that declares the input's value shape ``want`` takes an array of shape ``want`` (a constant) or
    ``(ne, nq) + want`` (values at the quadrature points) and nothing else. Without a declaration: a 0-d array
    is a scalar constant, ``(ne, nq, ...)`` holds values at the points, and the constant vectors and tensors
    ``(dim,)``, ``(dim, dim)``, the space's value shape and value shape + ``(dim,)`` are taken as constants;
    any other shape is an error (not broadcast: an array of 2 numbers on a scalar space is a mistake, not a
    constant to spread over the points).
    """
    if want is not None:
        if val.shape == want:
            return jnp.broadcast_to(val, (ne, nq) + want)
        if val.shape == (ne, nq) + want:
            return val
        raise ValueError(_shape_message(form, name, f"an array of shape {val.shape}", want, ne, nq, plan))
    if val.ndim >= 2 and val.shape[:2] == (ne, nq):
        return val
    if val.shape in _constant_shapes(plan):
        return jnp.broadcast_to(val, (ne, nq) + val.shape)
    consts = " or ".join(str(s) for s in sorted(_constant_shapes(plan), key=len))
    raise ValueError(
        f"form input {name!r} is an array of shape {val.shape}, which is neither a constant nor values at "
        f"the quadrature points. On this space (dim {plan.dim}, value shape {plan.value_shape}) an array "
        f"input is a constant of shape {consts}, or holds values at the points, shape ({ne}, {nq}) + value "
        "shape (V.quadrature_points() gives those points). For dof coefficients pass fem.Field(space, "
        "coeffs); for a constant scalar pass a number; for a position-dependent value pass a callable of x. "
        "A form can declare its inputs' shapes (bilinear_form(inputs={...})) to have them checked exactly."
    )


def _constant_shapes(plan) -> set[tuple[int, ...]]:
    """Shapes an array input of a form without declared inputs may have as a constant."""
    d, vs = plan.dim, plan.value_shape
    shapes = {(), (d,), (d, d)}
    if vs:
        shapes |= {vs, vs + (d,)}
    return shapes


def _shape_message(form: Form, name: str, what: str, want, ne: int, nq: int, plan) -> str:
    spec = dict(form.inputs)[name]
    desc = _SHAPE_NAMES[spec] if isinstance(spec, str) else f"shape {spec}"
    scalar = "a number, " if want == () else ""
    return (
        f"form input {name!r} of {form!r} is {what}; the form declares {name!r} as {desc}, which is "
        f"shape {want} on this space (dim {plan.dim}, value shape {plan.value_shape}). Pass {scalar}a "
        f"callable of x returning shape {want}, a Field of value shape {want}, or an array of shape {want} "
        f"(a constant) or (nel, nq) + {want} = {(ne, nq) + want} (values at the quadrature points)."
    )


def prepare_inputs(
    space: FunctionSpace,
    fields: dict,
    boundary=None,
    *,
    form: Form | None = None,
    expected: dict | None = None,
    x=None,
) -> dict:
    """Named form inputs made ready for a compiled program, on the host (outside any kernel).

    Callables of ``x`` are evaluated at the rule's quadrature points here, so a new lambda does not trigger
    a new compilation (their few jnp ops are cached by JAX): a constant stays 0-d, values become ``(ne, nq)``
    or ``(ne, nq) + value shape``. Numbers become arrays for the same reason; Fields and arrays pass as they
    are (:func:`inputs_at` evaluates them at the points inside the program).

    Arguments:
        space: the space whose rule gives the points; boundary: None or the boundary names of the rule.
        fields: name -> number, callable of ``x`` (dim, ne, nq), array or Field.
        form, expected: the form and its declared input shapes (checked for callables), or None.
        x: the rule's points ``(dim, ne, nq)`` when known (NumPy for a concrete geometry: callables then
            run in NumPy, compiling nothing), else None (computed here when a callable needs them).

    Returns:
        A new dict with the same names.
    """
    out = dict(fields)
    for name, f in fields.items():
        if isinstance(f, Field):
            continue
        if callable(f):
            if x is None:
                x = jnp.moveaxis(_points(space, boundary), -1, 0)
            out[name] = _callable_input(f, x, name)
            want = None if expected is None else expected.get(name)
            got = out[name].shape[2:] if out[name].ndim >= 2 else ()
            if want is not None and got != want:
                what = f"a callable of x whose values have shape {got}"
                raise ValueError(_shape_message(form, name, what, want, *x.shape[1:], space.plan))
        elif isinstance(f, (int, float, complex, np.number)):
            # complex numbers stay complex (complex-valued forms); everything else is the float dtype
            out[name] = jnp.asarray(f, dtype=complex if np.iscomplexobj(f) else float)
    return out


def _check_input_names(form: Form, expected: dict, fields: dict) -> None:
    """A form that declares its inputs takes no others: an extra input would be silently ignored.

    (A missing input fails when the kernel asks for it, with a message that names it.)
    """
    extra = sorted(set(fields) - set(expected))
    if extra:
        takes = ", ".join(f"{k}=..." for k in expected) or "no named inputs"
        raise TypeError(
            f"assemble({form.name}, ...) got the input(s) {extra}, which {form!r} does not take (they would "
            f"be ignored); it takes {takes}. Check the input's name, or the form (e.g. library.diffusion, "
            "not library.laplace, for a coefficient kappa)."
        )


def check_call(form: Form, space, boundary, fields: dict):
    """The checks of a call that integrates ``form`` on ``space``: boundary names, a boundary form without
    ``boundary=``, inputs the form does not take or lacks. Returns ``(boundary names or None, the declared
    input shapes or None)``. Shared by the nonlinear and the mixed assemblies."""
    if boundary is not None:
        boundary = space.check_names(boundary)
    elif form.boundary:
        raise ValueError(
            f"{form!r} is a boundary form (declared with boundary=True); pass boundary=..., one of "
            f"{list(space.boundary_names)}."
        )
    expected = form.input_shapes(space.plan.value_shape, space.plan.dim)
    if expected is not None:
        _check_input_names(form, expected, fields)
        missing = sorted(set(expected) - set(fields))
        if missing:
            takes = ", ".join(f"{k}=..." for k in expected)
            raise TypeError(f"{form!r} needs the input(s) {missing}; pass {takes}.")
    return boundary, expected
