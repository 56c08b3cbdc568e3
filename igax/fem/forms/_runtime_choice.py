"""A program chosen when it runs, with exact derivatives: the fast one where exact, else the general one.

Sum-factorised assembly picks a program from values known only when the program runs (a space passed to
``jax.jit``: are its weights equal? is its geometry affine?). The fast program is exact for perturbations
of some arguments (the fields, a modulus) but not of others (the weights, the control points), so the
values are a ``jax.custom_jvp`` whose rule differentiates the run-time choice where every tangent is of
the first kind and the general program otherwise, each w.r.t. the leaves that have a tangent only.

Both programs are closure-converted first (``jax.closure_convert``): a form may close over values that are
being differentiated (``linear_elasticity(E, nu)`` inside ``jax.grad`` w.r.t. ``E``), and a custom JVP
must receive those as arguments; closed over, they escaped the rule as leaked tracers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

__all__ = ["choose"]


def choose(either, general, primals: tuple, exact):
    """``either(*primals)`` (the run-time choice) with derivatives from ``either`` where ``exact(tangents)``
    and from ``general(*primals)`` otherwise.

    Arguments:
        either: the run-time choice (a ``lax.cond`` between a fast and the general program).
        general: the general program, exact for every perturbation.
        primals: the arguments of both (pytrees of arrays).
        exact: ``tangents -> bool`` (the tangents of ``primals``, symbolic zeros where none): whether
            ``either`` is exact for them.

    Returns:
        ``either(*primals)``.

    Example (a fast program that is exact only for a fixed ``a``):
        >>> import jax, jax.numpy as jnp
        >>> from jax.custom_derivatives import SymbolicZero
        >>> from igax.fem.forms._runtime_choice import choose
        >>> general = lambda a, b: a * b
        >>> either = lambda a, b: jax.lax.stop_gradient(a) * b  # wrong in a
        >>> f = lambda a, b: choose(either, general, (a, b), lambda t: isinstance(t[0], SymbolicZero))
        >>> float(jax.grad(f)(2.0, 3.0)), float(jax.grad(f, 1)(2.0, 3.0))
        (3.0, 2.0)
    """
    fast, fast_consts = jax.closure_convert(either, *primals)
    slow, slow_consts = jax.closure_convert(general, *primals)

    @jax.custom_jvp
    def run(args, fc, sc):
        return fast(*args, *fc)

    def rule(prim, tans):
        args, fc, sc = prim
        targs, tfc, tsc = tans
        if exact(targs):
            return _jvp_live(lambda a, c: fast(*a, *c), (args, fc), (targs, tfc))
        return _jvp_live(lambda a, c: slow(*a, *c), (args, sc), (targs, tsc))

    run.defjvp(rule, symbolic_zeros=True)
    return run(tuple(primals), tuple(fast_consts), tuple(slow_consts))


def _jvp_live(fn, primals, tangents):
    """``jax.jvp(fn, primals, tangents)`` over the leaves whose tangent is not a symbolic zero."""
    leaves, treedef = jax.tree_util.tree_flatten(primals)
    tleaves = treedef.flatten_up_to(tangents)
    live = [i for i, t in enumerate(tleaves) if not isinstance(t, SymbolicZero)]

    def part(*xs):
        full = list(leaves)
        for i, x in zip(live, xs, strict=True):
            full[i] = x
        return fn(*jax.tree_util.tree_unflatten(treedef, full))

    if not live:
        out = fn(*primals)
        return out, jnp.zeros_like(out)
    return jax.jvp(part, tuple(leaves[i] for i in live), tuple(tleaves[i] for i in live))
