"""Sum-factorised assembly (2D and 3D) with traced weights: a polynomial patch found at run time, exact
derivatives.

A space passed to a jitted function as an argument has traced weights, so which patches are polynomial
(all weights equal: ``W`` constant) is not known when the program is built, and the rational path ran for
every patch: 9 reference-jet states in 2D (value and two derivatives on each side) where a polynomial patch
needs 4 (16 against 9 in 3D), about 1.2x the time of the whole assembly. Here both programs are built
and a ``lax.cond`` on the weights (equal to 1e-14, the rule
:func:`igax.fem.forms._sumfact_points._polynomial_weight` applies to concrete weights) picks one when the
program runs. Equal weights cancel (``R_i = B_i``), so the polynomial program runs with weights of 1 and
the geometry without the weight channel.

Derivatives: the polynomial program is exact for perturbations of anything but the weights (control
points, fields, inputs: the patch stays polynomial), not for a perturbation of the weights, which makes the
patch rational. So the values are a ``jax.custom_jvp`` (:mod:`igax.fem.forms._runtime_choice`) whose rule
differentiates the conditional program when the weights' tangent is a symbolic zero (the common case: a loss
differentiated in coefficients or control points), and the rational program otherwise. Only the leaves whose
tangent is not a symbolic zero are differentiated, so no derivative of the geometry is formed when only a
field is differentiated.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from igax.fem.forms._runtime_choice import choose

__all__ = ["applies", "values_traced_weights", "Uniform"]


class Uniform(float):
    """The common weight of a patch whose weights are known equal: concrete and equal to 1e-14, or traced and
    found equal at run time (the weights array then holds that value everywhere). Either way the geometry
    may skip the weight channel (:mod:`igax.fem.forms._sumfact_geometry2d`)."""


def applies(space, sf) -> bool:
    """Whether :func:`values_traced_weights` is used: a 2D or 3D patch whose weights are traced.

    Example (concrete weights take the static rule instead):
        >>> from igax.fem import SplineSpace, geometry
        >>> from igax.fem.forms._sumfact_plan import sumfact_plan
        >>> from igax.fem.forms._sumfact_weights2d import applies
        >>> V = SplineSpace(geometry.rectangle().refine(degree=2, elements=3))
        >>> applies(V, sumfact_plan(V))
        False
    """
    return sf.d == 2 and isinstance(space.weights, jax.core.Tracer)


def _uniform(w):
    """Whether all weights equal their mean to 1e-14 (traced), and the mean."""
    m = jnp.mean(w)
    return jnp.all(jnp.abs(w - m) <= 1e-14 * jnp.abs(m)), m


def values_traced_weights(values, form, space, fields: dict, csr_idx, blocks, idx_sorted: bool):
    """CSR values as ``values(form, space, fields, csr_idx, w0, blocks, idx_sorted)`` (the sum-factorised
    program, ``w0``: the common weight of a polynomial patch or None) computes them, the polynomial or the
    rational program chosen at run time (see the module docstring).

    Arguments:
        values: :func:`igax.fem.forms.sumfact._values`.
        form, space, fields, csr_idx, blocks, idx_sorted: as :func:`igax.fem.forms.sumfact._values` takes.

    Returns:
        The CSR values; their derivatives are exact (see the module docstring).
    """
    from igax.fem.field import Field

    bare = eqx.tree_at(lambda s: s.weights, space, replace=None)  # the weights travel apart
    # Fields on the space itself travel without it (rebuilt on the same space inside): the assembly then
    # still sees one geometry, where separately flattened copies would make it evaluate the field's own.
    own = {
        k for k, f in fields.items()
        if isinstance(f, Field) and f.space.control_points is space.control_points
        and f.space.weights is space.weights
    }  # fmt: skip
    fields = {
        k: eqx.tree_at(lambda f: f.space, f, replace=None) if k in own else f for k, f in fields.items()
    }
    none = lambda x: x is None  # noqa: E731

    def rebuild(w, rest):
        s, fl = rest
        s = eqx.tree_at(lambda t: t.weights, s, w, is_leaf=none)
        fl = {k: eqx.tree_at(lambda f: f.space, f, s, is_leaf=none) if k in own else f for k, f in fl.items()}
        return s, fl

    def rational(w, rest):
        s, fl = rebuild(w, rest)
        return values(form, s, fl, csr_idx, None, blocks, idx_sorted)

    def polynomial(w, rest):
        # Equal weights cancel (R_i = B_i): the space and its own fields see weights of 1, and the geometry
        # skips the weight channel (Uniform). Taken only where the weights are not differentiated.
        s, fl = rebuild(jnp.ones_like(w), rest)
        return values(form, s, fl, csr_idx, Uniform(1.0), blocks, idx_sorted)

    def equal(w, rest):
        return _uniform(w)[0]

    def fixed_weights(tangents):  # the polynomial program is exact for everything but the weights
        return isinstance(tangents[0], SymbolicZero)

    return choose(equal, polynomial, rational, (space.weights, (bare, fields)), fixed_weights)
