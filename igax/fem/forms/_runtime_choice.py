"""A program chosen when it runs, with exact derivatives: the fast one where exact, else the general one.

Sum-factorised assembly picks a program from values known only when the program runs (a space passed to
``jax.jit``: are its weights equal? is its geometry affine?). The fast program is exact for perturbations
of some arguments (the fields, a modulus) but not of others (the weights, the control points), so the
values are a ``jax.custom_jvp`` whose rule differentiates the run-time choice where every tangent is of
the first kind and the general program otherwise, each w.r.t. the leaves that have a tangent only.

Both programs are traced once into jaxprs, and every value of the caller's trace that they close over
becomes an argument of the custom JVP: a form may close over a value being differentiated
(``linear_elasticity(E, nu)`` inside ``jax.grad`` w.r.t. ``E``), and the assembly over an index array read
when the program runs (``igax._held``, an integer value of the caller's trace). Closed over, the first
escaped the rule as a leaked tracer (``UnexpectedTracerError``), and the second became a constant of the
rule's trace that could not be lowered. (``jax.closure_convert`` hoists floating-point values only, and
caches every closure it converts.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

__all__ = ["choose"]


def choose(pick, fast, general, primals: tuple, exact):
    """``fast(*primals)`` where ``pick(*primals)`` holds when the program runs, else ``general(*primals)``;
    derivatives from that choice where ``exact(tangents)``, from ``general`` otherwise.

    Arguments:
        pick: ``*primals -> bool scalar`` (traced): whether the fast program applies.
        fast: the fast program, exact where ``pick`` holds for the perturbations ``exact`` accepts.
        general: the general program, exact everywhere for every perturbation.
        primals: the arguments of all three (pytrees of arrays).
        exact: ``tangents -> bool`` (the tangents of ``primals``, symbolic zeros where none): whether the
            choice is exact for them.

    Returns:
        The values of the program chosen.

    Example (a fast program that is right only for ``a >= 0`` and whose derivative in ``a`` is wrong):
        >>> import jax, jax.numpy as jnp
        >>> from jax.custom_derivatives import SymbolicZero
        >>> from igax.fem.forms._runtime_choice import choose
        >>> general = lambda a, b: jnp.abs(a) * b
        >>> fast = lambda a, b: jax.lax.stop_gradient(a) * b
        >>> f = lambda a, b: choose(lambda a, b: a >= 0, fast, general, (a, b),
        ...                         lambda t: isinstance(t[0], SymbolicZero))
        >>> float(f(-2.0, 3.0)), float(jax.grad(f)(2.0, 3.0)), float(jax.grad(f, 1)(2.0, 3.0))
        (6.0, 3.0, 2.0)
    """
    fast_fn, fast_consts = _convert(fast, primals)
    slow_fn, slow_consts = _convert(general, primals)
    pick_fn, pick_consts = _convert(pick, primals)

    def fast_branch(args, fc, sc):  # the cond's branches take the same operands
        return fast_fn(args, fc)

    def slow_branch(args, fc, sc):
        return slow_fn(args, sc)

    def chosen_(args, fc, sc, pc):
        return jax.lax.cond(pick_fn(args, pc), fast_branch, slow_branch, args, fc, sc)

    @jax.custom_jvp
    def run(args, fc, sc, pc):
        return chosen_(args, fc, sc, pc)

    def rule(prim, tans):
        args, fc, sc, pc = prim
        targs, tfc, tsc, _ = tans
        if exact(targs):
            return _jvp_live(lambda a, f, s: chosen_(a, f, s, pc), (args, fc, sc), (targs, tfc, tsc))
        return _jvp_live(lambda a, s: slow_fn(a, s), (args, sc), (targs, tsc))

    run.defjvp(rule, symbolic_zeros=True)
    return run(tuple(primals), fast_consts, slow_consts, pick_consts)


def _convert(fn, primals):
    """``(g, consts)``: ``g(primals, consts) == fn(*primals)``, every value of an outer trace that ``fn``
    closes over passed in ``consts`` (traced once here; ``g`` evaluates the jaxpr)."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*primals)
    consts = list(closed.consts)
    where = [i for i, c in enumerate(consts) if isinstance(c, jax.core.Tracer)]
    out_tree = jax.tree_util.tree_structure(out_shape)
    jaxpr = closed.jaxpr

    def g(args, hoisted):
        cs = list(consts)
        for i, c in zip(where, hoisted, strict=True):
            cs[i] = c
        out = jaxpr_as_fun(ClosedJaxpr(jaxpr, cs))(*jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(out_tree, out)

    return g, tuple(consts[i] for i in where)


def _jvp_live(fn, primals, tangents):
    """``jax.jvp(fn, primals, tangents)`` over the leaves whose tangent is not a symbolic zero."""
    leaves, treedef = jax.tree_util.tree_flatten(primals)
    tleaves = treedef.flatten_up_to(tangents)
    live = [
        i
        for i, t in enumerate(tleaves)
        if not isinstance(t, SymbolicZero) and jnp.issubdtype(jnp.result_type(leaves[i]), jnp.inexact)
    ]

    def part(*xs):
        full = list(leaves)
        for i, x in zip(live, xs, strict=True):
            full[i] = x
        return fn(*jax.tree_util.tree_unflatten(treedef, full))

    if not live:
        out = fn(*primals)
        return out, jnp.zeros_like(out)
    return jax.jvp(part, tuple(leaves[i] for i in live), tuple(tleaves[i] for i in live))
