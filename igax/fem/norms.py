"""Norms of fields and of their errors against exact solutions (integrated with the space's quadrature)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from igax.fem.field import Field
from igax.fem.forms.assembly import assemble
from igax.fem.forms.form import functional

__all__ = ["l2_norm", "h1_seminorm", "l2_error", "h1_error"]


def _abs2(d):
    """``|d|^2``; for a real ``d`` exactly ``d * d`` (conj and real are no-ops); complex fields work too."""
    return jnp.real(d * jnp.conj(d))


@functional
def _sq_value(w):
    return jnp.sum(_abs2(w.u.value))


@functional
def _sq_grad(w):
    return jnp.sum(_abs2(w.u.grad))


@functional
def _sq_value_error(w):
    return jnp.sum(_abs2(w.u.value - w.exact.value))


@functional
def _sq_grad_error(w):
    return jnp.sum(_abs2(w.u.grad - w.exact.value))


def _check(u):
    if not isinstance(u, Field):
        raise TypeError(f"u must be a fem.Field, got {type(u).__name__}.")


def l2_norm(u: Field) -> jax.Array:
    """``||u||_L2`` over the domain of its space."""
    _check(u)
    return jnp.sqrt(assemble(_sq_value, u.space, u=u))


def h1_seminorm(u: Field) -> jax.Array:
    """``|u|_H1 = ||grad u||_L2``."""
    _check(u)
    return jnp.sqrt(assemble(_sq_grad, u.space, u=u))


def l2_error(u: Field, exact: Callable) -> jax.Array:
    """``||u - exact||_L2``.

    Arguments:
        u: the discrete solution.
        exact: callable of ``x`` (shape ``(dim, ...)``, first axis = coordinate) returning the exact values,
            shape ``(...)`` for scalar fields or ``(ncomp, ...)`` for vector fields.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=4))
        >>> u = fem.Field(V, jnp.ones(V.ndofs))       # u = 1
        >>> round(float(fem.l2_error(u, lambda x: x[0])), 8)   # ||1 - x||: sqrt(1/3) on [0, 1]^2
        0.57735027
    """
    _check(u)
    return jnp.sqrt(assemble(_sq_value_error, u.space, u=u, exact=exact))


def h1_error(u: Field, exact_grad: Callable) -> jax.Array:
    """``|u - exact|_H1 = ||grad u - exact_grad||_L2``.

    Arguments:
        u: the discrete solution.
        exact_grad: callable of ``x`` (shape ``(dim, ...)``) returning the exact gradient, shape ``(dim,
            ...)``
            for scalar fields or ``(ncomp, dim, ...)`` for vector fields.
    """
    _check(u)
    return jnp.sqrt(assemble(_sq_grad_error, u.space, u=u, exact=exact_grad))
