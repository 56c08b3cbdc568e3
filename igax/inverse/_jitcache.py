"""One compiled ``value_and_grad`` per (objective, argument structure), shared by the drivers and checks.

PDE objectives take seconds to compile. ``taylor_test``, ``minimize`` (scipy route) and
``optimality_criteria`` called on the same objective would each compile their own
``jax.jit(jax.value_and_grad)`` of it; keying the compiled function on the objective itself (weakly, so the
cache never keeps it alive) and on the structure of its argument makes the second and later users free.
"""

from __future__ import annotations

import weakref

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class ObjectiveOutputError(TypeError):
    """The objective returned something other than a scalar (or a ``(scalar, aux)`` pair).

    A class of its own so that :func:`igax.inverse.minimize` can tell it from a shape error raised inside the
    objective (which it explains in terms of ``x0``'s shape).
    """


def _check_output(out, has_aux):
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ObjectiveOutputError(
                "with has_aux=True the objective must return a pair (value, aux_dict)."
            )
        val = out[0]
    else:
        val = out
    if jnp.ndim(val) != 0:
        raise ObjectiveOutputError(
            f"objective must return a scalar, got shape {jnp.shape(val)}; sum or average the entries "
            "(e.g. jnp.sum(residual ** 2))."
        )
    return out


def flat_objective(f, x_example, has_aux: bool = False):
    """``(flat_f, unravel)``: ``f`` as a function of the flat parameter vector, with its output checked."""
    _, unravel = ravel_pytree(x_example)
    return (lambda z, *args: _check_output(f(unravel(z), *args), has_aux)), unravel


def value_and_grad_flat(f, x_example, has_aux: bool = False, jit: bool = True):
    """Compiled ``value_and_grad`` of ``f`` as a function of the flat parameters, cached per objective."""
    flat, _ = ravel_pytree(x_example)
    leaves = jax.tree_util.tree_leaves(x_example)
    key = (
        jax.tree_util.tree_structure(x_example),
        tuple(jnp.shape(a) for a in leaves),
        str(flat.dtype),
        bool(has_aux),
        bool(jit),
    )
    try:
        per = _CACHE.setdefault(f, {})
    except TypeError:  # not weak-referenceable: no caching
        per = {}
    if key not in per:
        ff, _ = flat_objective(f, x_example, has_aux)
        vg = jax.value_and_grad(ff, has_aux=has_aux)
        per[key] = jax.jit(vg) if jit else vg
    return per[key]
