"""Weak forms as decorated pointwise kernels.

A form is written for one quadrature point, the way it reads on paper::

    @fem.bilinear_form(symmetric=True)
    def diffusion(u, v, w):
        return w.kappa * jnp.dot(u.grad, v.grad)

``u`` (trial) and ``v`` (test) carry ``.value`` (shape = the space's value shape) and ``.grad`` (value shape +
``(dim,)``); ``w`` carries the physical point ``w.x`` (shape ``(dim,)``, first axis = coordinate), the unit
outward normal ``w.n`` on boundary integrals and every named input given to :func:`igax.fem.assemble`.

Named inputs reach the kernel as :class:`QuadValue` objects that act as their value under Python arithmetic
(``w.kappa * ...``, ``(w.u - w.g) ** 2``) and expose ``.value`` and, for :class:`~igax.fem.Field` inputs,
``.grad``. JAX 0.10 no longer converts objects through ``__jax_array__`` while tracing, so inside ``jnp``
functions write ``jnp.exp(w.kappa.value)`` (plain arithmetic needs no ``.value``).

Kernels must be bilinear (resp. linear) in ``u`` and ``v``: assembly evaluates a bilinear kernel once per
pair of basis "jet" components (value and gradient entries) and contracts the resulting small matrix with the
basis tables, which is much cheaper than evaluating it for every pair of local basis functions. Both are
checked on the kernel's jaxpr when it is first traced (a non-linear operation on ``u`` or ``v``, or a term
without them, raises).

A form may declare what it is, so that a wrong use fails instead of giving a silently wrong result::

    @fem.bilinear_form(symmetric=True, boundary=True, inputs={"alpha": "scalar"})
    def robin(u, v, w):
        return w.alpha * u.value * v.value

``symmetric=True`` is verified on the assembled matrix; ``boundary=True`` makes assembly demand
``boundary=...``; ``inputs`` lists the named inputs with their value shapes, checked exactly at assembly
(see :func:`igax.fem.assemble` for the accepted kinds of input).
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

__all__ = ["Form", "bilinear_form", "linear_form", "functional", "QuadValue", "Jet", "FormInputs"]


@dataclass(frozen=True, eq=False)
class Form:
    """A weak form: a pointwise kernel plus its kind (``"bilinear"``, ``"linear"`` or ``"functional"``).

    Forms compare by identity (they are static in jit caches). Call :func:`igax.fem.assemble` to integrate
    one. A form's own ``__doc__`` (what ``help(form)`` shows) is its kernel's docstring followed by the
    form's kind, flags and inputs.
    """

    kernel: Callable
    kind: str
    symmetric: bool = False
    name: str = "form"
    boundary: bool = False
    inputs: tuple[tuple[str, object], ...] | None = None

    def __post_init__(self):
        # help(library.robin) should explain robin, not the Form class: give the instance the kernel's
        # docstring (as functools.wraps would), plus how to assemble it. The fields and identity semantics
        # are untouched, so a Form stays a static, hashable jit argument.
        object.__setattr__(self, "__doc__", self._describe())
        object.__setattr__(self, "__wrapped__", self.kernel)  # inspect.signature(form) is the kernel's

    def _describe(self) -> str:
        flags = [f for f, on in (("symmetric", self.symmetric), ("boundary form", self.boundary)) if on]
        head = f"{self.kind} form {self.name!r}" + (f" ({', '.join(flags)})" if flags else "")
        if self.inputs is None:
            takes = "named inputs: not declared"
        elif self.inputs:
            takes = "named inputs: " + ", ".join(f"{k} ({_SHAPE_NAMES.get(v, v)})" for k, v in self.inputs)
        else:
            takes = "no named inputs"
        args = "".join(f", {k}=..." for k, _ in self.inputs or ())
        where = ', boundary="..."' if self.boundary else ""
        how = f"Integrate it with igax.fem.assemble({self.name}, V{where}{args})."
        doc = inspect.cleandoc(getattr(self.kernel, "__doc__", None) or "")
        return (doc + "\n\n" if doc else "") + f"{head}; {takes}.\n{how}"

    def __call__(self, *args):
        return self.kernel(*args)

    def input_shapes(self, value_shape: tuple[int, ...], dim: int) -> dict[str, tuple[int, ...]] | None:
        """The value shape each declared input must have on a space (None when the form declares none)."""
        if self.inputs is None:
            return None
        return {name: resolve_shape(spec, value_shape, dim) for name, spec in self.inputs}

    def __repr__(self):
        return f"{self.kind}_form({self.name})"


def _explain_jnp_inputs(f: Callable) -> Callable:
    """``f`` with JAX's error for a :class:`QuadValue` passed to a ``jnp`` function turned into the fix."""

    @functools.wraps(f)
    def kernel(*args):
        try:
            return f(*args)
        except ValueError as err:
            if "__jax_array__" not in str(err):
                raise
            raise TypeError(
                f"kernel {getattr(f, '__name__', 'form')!r} passed a named form input (w.<name>) to a "
                f"jax.numpy function; JAX {jax.__version__} no longer converts such objects inside jnp "
                "functions. Write its .value there, e.g. jnp.exp(w.kappa.value) (plain arithmetic such as "
                "w.kappa * u.value needs no .value)."
            ) from err

    return kernel


# Names of the value shapes a form may declare for its inputs (``inputs={"f": "value"}``); a tuple of ints is
# taken literally.
_SHAPE_NAMES = {
    "scalar": "a scalar, shape ()",
    "value": "the space's value shape (() on a scalar space, (c,) on a vector space)",
    "vector": "a vector of shape (dim,)",
    "matrix": "a matrix of shape (dim, dim)",
}


def resolve_shape(spec, value_shape: tuple[int, ...], dim: int) -> tuple[int, ...]:
    """The value shape a declared input ``spec`` stands for on a space with ``value_shape`` in ``dim`` D."""
    if isinstance(spec, tuple):
        return spec
    return {"scalar": (), "value": tuple(value_shape), "vector": (dim,), "matrix": (dim, dim)}[spec]


def _check_inputs(inputs, kind: str):
    """``inputs`` of a decorator as a tuple of ``(name, spec)`` pairs (None stays None: undeclared)."""
    if inputs is None:
        return None
    if not isinstance(inputs, dict):
        raise TypeError(
            f"{kind}_form(inputs=...) must be a dict from input name to value shape, e.g. "
            f'inputs={{"kappa": "scalar", "b": "vector"}}, got {type(inputs).__name__}.'
        )
    out = []
    for name, spec in inputs.items():
        ok_tuple = isinstance(spec, tuple) and all(isinstance(n, int) and n > 0 for n in spec)
        if not isinstance(name, str) or not (ok_tuple or spec in _SHAPE_NAMES):
            raise ValueError(
                f"{kind}_form(inputs=...): input {name!r} has shape {spec!r}; give one of "
                f"{sorted(_SHAPE_NAMES)} or a tuple of positive ints such as (3, 3)."
            )
        out.append((name, spec))
    return tuple(out)


def _decorator(kind: str, fn, symmetric: bool = False, boundary: bool = False, inputs=None):
    declared = _check_inputs(inputs, kind)

    def wrap(f):
        if not callable(f):
            raise TypeError(f"{kind}_form expects a function, got {type(f).__name__}.")
        name = getattr(f, "__name__", "form")
        return Form(_explain_jnp_inputs(f), kind, bool(symmetric), name, bool(boundary), declared)

    return wrap if fn is None else wrap(fn)


def bilinear_form(
    fn: Callable | None = None, *, symmetric: bool = False, boundary: bool = False, inputs=None
):
    """Declare a bilinear form ``a(u, v)`` from a pointwise kernel ``kernel(u, v, w) -> scalar``.

    Arguments:
        fn: the kernel (when used as ``@bilinear_form`` without parentheses).
        symmetric: declare ``a(u, v) == a(v, u)``; the assembled matrix is then flagged symmetric so solvers
            can use Cholesky-type methods (which read one triangle only). Verified on the assembled values:
            a matrix that is not symmetric raises a ``ValueError`` that names the flag (once per form and
            space; see :func:`igax.fem.assemble`).
        boundary: declare a boundary form (a Neumann, Robin or traction term): :func:`igax.fem.assemble`
            then refuses to integrate it over the volume and asks for ``boundary=``.
        inputs: optional declaration of the named inputs and their value shapes, a dict from name to
            ``"scalar"``, ``"value"`` (the space's value shape), ``"vector"`` (``(dim,)``), ``"matrix"``
            (``(dim, dim)``) or a tuple of ints. Assembly then checks every input against it exactly (an
            array of 2 numbers is not accepted where a scalar is expected) and rejects inputs the form does
            not take. Without it, inputs follow the general conventions of :func:`igax.fem.assemble`.

    Returns:
        A :class:`Form`.

    Example:
        >>> from igax.fem import bilinear_form
        >>> @bilinear_form(symmetric=True)
        ... def mass(u, v, w):
        ...     return u.value * v.value
        >>> @bilinear_form(symmetric=True, boundary=True, inputs={"alpha": "scalar"})
        ... def robin(u, v, w):
        ...     return w.alpha * u.value * v.value
    """
    return _decorator("bilinear", fn, symmetric, boundary, inputs)


def linear_form(fn: Callable | None = None, *, boundary: bool = False, inputs=None):
    """Declare a linear form ``l(v)`` from a pointwise kernel ``kernel(v, w) -> scalar``.

    Arguments:
        fn: the kernel (when used as ``@linear_form`` without parentheses).
        boundary: declare a boundary form (a Neumann, Robin or traction term): :func:`igax.fem.assemble`
            then refuses to integrate it over the volume and asks for ``boundary=``.
        inputs: optional declaration of the named inputs and their value shapes, a dict from name to
            ``"scalar"``, ``"value"`` (the space's value shape), ``"vector"`` (``(dim,)``), ``"matrix"``
            (``(dim, dim)``) or a tuple of ints. Assembly then checks every input against it exactly (an
            array of 2 numbers is not accepted where a scalar is expected) and rejects inputs the form does
            not take. Without it, inputs follow the general conventions of :func:`igax.fem.assemble`.

    Returns:
        A :class:`Form`.

    Example:
        >>> from igax.fem import linear_form
        >>> @linear_form
        ... def load(v, w):
        ...     return w.f * v.value
        >>> @linear_form(boundary=True, inputs={"g": "value"})
        ... def flux(v, w):
        ...     return w.g * v.value
    """
    return _decorator("linear", fn, boundary=boundary, inputs=inputs)


def functional(fn: Callable | None = None, *, boundary: bool = False, inputs=None):
    """Declare a functional ``J = integral of kernel(w)`` from a pointwise kernel ``kernel(w) -> scalar``.

    Arguments:
        fn: the kernel (when used as ``@functional`` without parentheses).
        boundary: declare a boundary functional (e.g. a flux through a boundary, reading ``w.n``):
            :func:`igax.fem.assemble` then refuses to integrate it over the volume and asks for
            ``boundary=``.
        inputs: optional declaration of the named inputs and their value shapes, a dict from name to
            ``"scalar"``, ``"value"`` (the space's value shape), ``"vector"`` (``(dim,)``), ``"matrix"``
            (``(dim, dim)``) or a tuple of ints. Assembly then checks every input against it exactly (an
            array of 2 numbers is not accepted where a scalar is expected) and rejects inputs the form does
            not take. Without it, inputs follow the general conventions of :func:`igax.fem.assemble`.

    Returns:
        A :class:`Form`.

    Example:
        >>> from igax.fem import functional
        >>> @functional
        ... def misfit(w):
        ...     return (w.u - w.target) ** 2
    """
    return _decorator("functional", fn, boundary=boundary, inputs=inputs)


# --- values seen by kernels ---------------------------------------------------------------------------------


def _val(x):
    return x.value if isinstance(x, QuadValue) else x


def _binop(op, reflected=False):
    def f(self, other):
        a, b = self.value, _val(other)
        return op(b, a) if reflected else op(a, b)

    return f


class QuadValue:
    """A named form input at one quadrature point: acts as its value in arithmetic; ``.value`` and ``.grad``.

    ``.grad`` exists for :class:`~igax.fem.Field` inputs (shape = value shape + ``(dim,)``); for other inputs
    accessing it raises an error that says so.
    """

    __slots__ = ("value", "_grad", "name")
    __array_priority__ = 100

    def __init__(self, value, grad=None, name: str = "input"):
        self.value = value
        self._grad = grad
        self.name = name

    @property
    def grad(self):
        if self._grad is None:
            raise AttributeError(
                f"form input {self.name!r} has no gradient: only fem.Field inputs carry .grad. Pass "
                f"{self.name}=fem.Field(space, coeffs) to use its gradient."
            )
        return self._grad

    def __jax_array__(self):
        return self.value

    @property
    def shape(self):
        return jnp.shape(self.value)

    @property
    def ndim(self):
        return jnp.ndim(self.value)

    @property
    def T(self):
        return jnp.transpose(self.value)

    def __getitem__(self, idx):
        return self.value[idx]

    def __len__(self):
        return len(self.value)

    __add__ = _binop(operator.add)
    __radd__ = _binop(operator.add, True)
    __sub__ = _binop(operator.sub)
    __rsub__ = _binop(operator.sub, True)
    __mul__ = _binop(operator.mul)
    __rmul__ = _binop(operator.mul, True)
    __truediv__ = _binop(operator.truediv)
    __rtruediv__ = _binop(operator.truediv, True)
    __pow__ = _binop(operator.pow)
    __rpow__ = _binop(operator.pow, True)
    __matmul__ = _binop(operator.matmul)
    __rmatmul__ = _binop(operator.matmul, True)
    __lt__ = _binop(operator.lt)
    __le__ = _binop(operator.le)
    __gt__ = _binop(operator.gt)
    __ge__ = _binop(operator.ge)

    def __neg__(self):
        return -self.value

    def __pos__(self):
        return self.value

    def __abs__(self):
        return jnp.abs(self.value)

    def __repr__(self):
        return f"QuadValue({self.name}, shape={self.shape})"


class Jet:
    """A trial or test function at one point: ``.value`` and ``.grad`` (value shape + ``(dim,)``)."""

    __slots__ = ("value", "grad")

    def __init__(self, value, grad):
        self.value = value
        self.grad = grad

    def __repr__(self):
        return f"Jet(value shape={jnp.shape(self.value)}, grad shape={jnp.shape(self.grad)})"


class FormInputs:
    """The ``w`` argument of a kernel: ``w.x`` (point), ``w.n`` (boundary normal) and the named inputs."""

    def __init__(self, x, n, fields: dict):
        self.x = x
        self._n = n
        self._fields = fields

    @property
    def n(self):
        if self._n is None:
            raise AttributeError(
                "w.n (the outward unit normal) exists only on boundary integrals: "
                "assemble(form, V, boundary='name', ...)."
            )
        return self._n

    def __getattr__(self, name):
        fields = self.__dict__.get("_fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(
            f"the form asked for w.{name}, but no input of that name was given to assemble; given: "
            f"{sorted(fields) or 'none'}. Pass it as assemble(form, V, {name}=...)."
        )

    def __getitem__(self, name):
        return self.__getattr__(name)


def check_scalar_output(out, form: Form):
    """Kernels return one scalar per point; say what was returned otherwise."""
    shape = jnp.shape(out)
    if shape != ():
        raise ValueError(
            f"the kernel of {form!r} returned an array of shape {shape} at a quadrature point; a form kernel "
            "must return a scalar. Contract vectors and tensors, e.g. jnp.dot(u.grad, v.grad) or "
            "jnp.sum(sigma * eps), instead of returning them."
        )
    return out


def kernel_output(out, form: Form):
    out = _val(out)
    check_scalar_output(out, form)
    return jnp.asarray(out)


def tree_shapes(tree):
    return jax.tree_util.tree_map(jnp.shape, tree)
