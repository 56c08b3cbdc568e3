"""Element matrices of a bilinear form on any subset of the elements, and the global dofs of their rows.

:func:`assemble` sums the element matrices into the CSR values of the whole space. Some callers need them
before that sum, for part of the elements: a device that assembles only its own rows
(:mod:`igax.fem.distributed`), or a user's own scatter. :func:`element_matrices` gives them through the same
code as :func:`assemble` (the kernel checks, the jet selection and the contraction of
:func:`igax.fem.forms.assembly.bilinear_element_matrices`), with the tables of the chosen elements only
(the space's ``chunked_tables`` where it has them), so its cost is that of the chosen elements.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._config import check_float64
from igax.fem.field import Field
from igax.fem.forms.assembly import bilinear_element_matrices, known_tables
from igax.fem.forms.form import Form
from igax.fem.forms.inputs import _check_input_names, inputs_at
from igax.fem.spaces.base import FunctionSpace, Rule, Tables

__all__ = ["element_dofs", "element_matrices"]


def element_dofs(space: FunctionSpace, elements=None) -> np.ndarray:
    """Global dofs of the rows (and columns) of :func:`element_matrices`, a host array.

    Arguments:
        space: the space.
        elements: None (all elements) or an int array of element ids.

    Returns:
        ``(nel_sel, C * nloc)`` int64 NumPy array, component-major (entry ``c * nloc + a`` is dof
        ``c * nscalar + d_a`` of scalar dof ``d_a``), as the element matrices are ordered.

    Example:
        >>> from igax import fem
        >>> V = fem.LagrangeSpace(fem.unit_square(1), degree=1, shape=(2,))
        >>> fem.element_dofs(V, [0]).tolist()     # 2 triangles, 4 nodes; x-components, then y-components
        [[0, 1, 3, 4, 5, 7]]
    """
    p = space.plan
    ids = _element_ids(space, elements, concrete=True)
    d = np.asarray(p.element_dofs, np.int64)  # (nel, C nloc), component-major
    return d if ids is None else d[ids]


def element_matrices(form: Form, space: FunctionSpace, elements=None, **inputs) -> jax.Array:
    """The element matrices of a bilinear form, on all elements or on the chosen ones.

    Differentiable with respect to the inputs and the geometry, traceable (``elements`` may be a traced int
    array, e.g. one device's elements inside ``shard_map``), and summed into the rows of
    :func:`element_dofs` they give the matrix of :func:`assemble`.

    Arguments:
        form: a volume :func:`bilinear_form` (``library.diffusion``, ``linear_elasticity(...)``, ...).
        space: the space (trial = test space).
        elements: None for all elements, or an int array of element ids (repeats allowed), in the space's
            numbering (the rows of ``V.plan.cell_dofs``).
        **inputs: the form's named inputs, as for :func:`assemble`: numbers, callables of ``x`` (evaluated at
            the chosen elements' points only), Fields on a compatible space (each element gathers its own
            coefficients), arrays that are constants or values at all quadrature points ``(nel, nq, ...)``,
            ordered as ``V.quadrature_points()`` (each element takes its own rows).

    Returns:
        ``(nel_sel, C * nloc, C * nloc)`` array, rows and columns ordered as :func:`element_dofs`.

    Raises:
        TypeError: ``form`` is not a bilinear form, ``space`` not a space, or an input the form does not take.
        ValueError: a boundary form; element ids out of range; an input of the wrong shape.

    Example:
        >>> import numpy as np
        >>> from igax import fem
        >>> from igax.fem import library
        >>> V = fem.LagrangeSpace(fem.unit_square(2), degree=1)
        >>> K = fem.element_matrices(library.diffusion, V, [0, 3], kappa=2.0)
        >>> K.shape, bool(np.allclose(K.sum(axis=2), 0))       # constants are in the kernel
        ((2, 3, 3), True)
    """
    if not isinstance(form, Form) or form.kind != "bilinear":
        raise TypeError(
            f"form must be a bilinear form (fem.bilinear_form), got {form!r}; element_matrices gives the "
            "matrices of a bilinear form (for load vectors use fem.assemble)."
        )
    if not isinstance(space, FunctionSpace):
        raise TypeError(f"space must be a SplineSpace or LagrangeSpace, got {type(space).__name__}.")
    if form.boundary:
        raise ValueError(
            f"{form!r} is a boundary form; element_matrices integrates over the volume only. Assemble "
            "boundary terms with fem.assemble(..., boundary=...)."
        )
    expected = form.input_shapes(space.plan.value_shape, space.plan.dim)
    if expected is not None:
        _check_input_names(form, expected, inputs)
    ids = _element_ids(space, elements)
    inputs = {
        k: jnp.asarray(v, float) if isinstance(v, (int, float, np.number)) else v for k, v in inputs.items()
    }
    if any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves((space, ids, inputs))):
        return _element_matrices(form, space, ids, inputs)  # inside a caller's trace: inline
    return _element_matrices_jit(form, space, ids, inputs)


def _element_ids(space: FunctionSpace, elements, concrete: bool = False):
    """``elements`` as an int32 array (checked when concrete), or None."""
    if elements is None:
        return None
    if isinstance(elements, jax.core.Tracer):
        if concrete:
            raise TypeError("elements must be concrete here (a NumPy array or a list of ints).")
        if elements.ndim != 1 or not jnp.issubdtype(elements.dtype, jnp.integer):
            raise ValueError(
                f"elements must be a 1D int array, got {elements.dtype} of shape {elements.shape}."
            )
        return elements.astype(jnp.int32)
    e = np.asarray(elements)
    if e.ndim != 1 or (e.size and e.dtype.kind not in "iu"):
        raise ValueError(f"elements must be a 1D array of element ids, got dtype {e.dtype}, shape {e.shape}.")
    if e.size and (e.min() < 0 or e.max() >= space.nel):
        raise ValueError(f"elements must lie in [0, {space.nel}) (the space has {space.nel} elements).")
    return e.astype(np.int32) if concrete else jnp.asarray(e, jnp.int32)


def _tables_of(space: FunctionSpace, rule: Rule, ids) -> Tables:
    """Tables of the elements ``ids`` (all for None): the space's chunked tables, else a selection."""
    if ids is not None:
        fn = space.chunked_tables(rule)
        if fn is not None:
            return fn(ids)
    known = known_tables(space, rule)
    t = space.tables(rule) if known is None else known[0]
    if ids is None:
        return t
    ne = rule.elements.shape[0]
    return Tables(*[None if a is None else (a[ids] if a.shape[0] == ne else a) for a in t])


def _element_matrices(form: Form, space: FunctionSpace, ids, inputs: dict) -> jax.Array:
    rule = space.quadrature_rule(None)
    elems = rule.elements
    if not np.array_equal(elems, np.arange(elems.size)):  # the rule groups elements (mixed cells): positions
        pos = np.empty(space.nel, np.int32)
        pos[elems] = np.arange(elems.size, dtype=np.int32)
        ids = jnp.asarray(pos) if ids is None else jnp.asarray(pos)[ids]
    tables = _tables_of(space, rule, ids)
    dtype = tables.dx.dtype
    if dtype != jnp.float64:
        check_float64("element_matrices")
    ne_all = rule.elements.shape[0]
    nq = tables.dx.shape[1]
    sel, ftabs = {}, {}
    for name, v in inputs.items():
        if isinstance(v, Field):
            if v.space.plan is space.plan:
                ftabs[name] = tables  # the same basis on the same elements
            elif space.compatible(v.space):
                ftabs[name] = _tables_of(v.space, rule, ids)
            sel[name] = v
        elif callable(v):
            sel[name] = v  # evaluated by inputs_at at the chosen elements' points
        else:
            a = jnp.asarray(v)
            chosen = ids is not None and a.ndim >= 2 and a.shape[:2] == (ne_all, nq)
            sel[name] = a[ids] if chosen else a  # values at the points: the chosen elements' rows
    vals = inputs_at(sel, space, rule, tables, form, ftabs, ids)
    m = tables.dx.shape[0]
    P = m * nq
    flat = {
        k: (v.reshape((P,) + v.shape[2:]), None if g is None else g.reshape((P,) + g.shape[2:]))
        for k, (v, g) in vals.items()
    }
    x = tables.x.reshape(P, -1)
    pt = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (x, None, flat))
    fn = bilinear_element_matrices(form, space, dtype, pt)
    n = space.plan.nloc  # C * nloc_scalar
    if fn is None:  # the kernel ignores u or v
        return jnp.zeros((m, n, n), dtype)
    return fn(tables, x, None, flat).reshape(m, n, n)


_element_matrices_jit = eqx.filter_jit(_element_matrices)
