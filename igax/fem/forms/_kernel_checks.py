"""Checks of form kernels and assembled forms: which jet entries a kernel reads, (bi)linearity, no constant
term, and the ``symmetric=True`` declaration.

Assembly evaluates a kernel only on unit jets (see :mod:`igax.fem.forms.assembly`), which is exact for
(bi)linear
kernels and silently wrong otherwise. The kernel checks run once per compilation, on the kernel's jaxpr, so
they cost nothing per call and do not depend on the values at the points:

- :func:`check_linear` transposes the kernel with ``jax.linear_transpose``, which fails on any operation that
  is not linear in the jet (``u.value ** 2``, ``jnp.sin(v.value)``);
- :func:`check_no_constant_term` walks the jaxpr and proves the kernel vanishes when the jet is zero. The
  transpose lets affine kernels through (``u.value * v.value + g(x) * v.value``); a check by evaluation at a
  sample point misses a term that is zero, or not finite, at that point (``jnp.sqrt(x[0] - 1)`` on a domain
  that starts at ``x = 1``). The walk instead tracks which values are zero whenever the jet is, through sums,
  products, reshapes and nested calls, and needs no point values at all.

A symmetric declaration is verified on the assembled values (:func:`check_symmetric`): exactly (``A == A.T``
up to rounding) the first time a form is assembled eagerly on a space, then trusted for that pair; under
``jit``/``grad``/``vmap`` before such a first eager check, at run time through the solvers' error mechanism.
"""

from __future__ import annotations

import weakref

import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.forms.form import Form, kernel_output
from igax.solvers._errors import error_if

__all__ = ["dependencies", "check_linear", "check_no_constant_term", "check_symmetric"]


def dependencies(fn, args) -> set[int]:
    """Indices of the positional arguments the output of ``fn`` depends on (a walk over its jaxpr).

    Used to drop the jet entries a kernel never reads (the values in a Laplacian, the gradients in a mass
    matrix): conservative (an equation's outputs depend on all its inputs), so nothing used is ever dropped.
    """
    closed = jax.make_jaxpr(fn)(*args)
    jaxpr = closed.jaxpr
    dep: dict = {}
    for i, v in enumerate(jaxpr.invars):
        dep[v] = {i}

    def deps_of(v):
        return dep.get(v, set()) if not hasattr(v, "val") else set()

    for eqn in jaxpr.eqns:
        d = set()
        for v in eqn.invars:
            d |= deps_of(v)
        for o in eqn.outvars:
            dep[o] = d
    out = set()
    for v in jaxpr.outvars:
        out |= deps_of(v)
    return out


def check_linear(fn, args, form: Form, which: str) -> None:
    """Raise a clear error unless ``fn(*args)`` is linear in ``args[0]`` and ``args[1]`` (one jet).

    ``jax.linear_transpose`` traces the kernel (abstractly, no values) and fails on any operation that is
    not linear in the jet, e.g. ``u.value ** 2`` or ``jnp.sin(v.value)``. It lets constant terms through (an
    affine kernel such as ``u.value * v.value + v.value``): :func:`check_no_constant_term` catches those.
    """
    lin, rest = args[:2], args[2:]
    # The kernel's own errors (e.g. a non-scalar result) surface first, with their own message.
    jax.eval_shape(lambda *a: kernel_output(fn(*a), form), *args)

    def transposed(*rest):
        def f(a, b):
            return kernel_output(fn(a, b, *rest), form)

        out = jax.eval_shape(f, *lin)
        return jax.linear_transpose(f, *lin)(jnp.zeros(out.shape, out.dtype))

    try:
        jax.eval_shape(transposed, *rest)
    except Exception as err:  # any failure of the transpose trace means a non-linear operation on the jet
        raise ValueError(
            f"the kernel of {form!r} is not linear in {which} (transposing it failed: "
            f"{type(err).__name__}: {str(err)[:120]}). Assembly needs {form.kind} kernels: every term must "
            f"be linear in {which}, e.g. w.kappa * jnp.dot(u.grad, v.grad), not u.value ** 2 or "
            "jnp.exp(u.value). For a non-linear problem, assemble the residual's linearisation (a bilinear "
            "form in the increment) or use igax.solvers.newton_solve with an element energy."
        ) from err


# --- the constant-term walk ---------------------------------------------------------------------------------
# Each value of the jaxpr carries two flags: `dep` (it depends on the jet) and `zero` (it is zero whenever the
# jet is zero, whatever the other arguments are). The jet starts (dep, zero); other arguments (False, False);
# literals and closed-over constants are zero when every entry is 0. Linear operations applied to the jet
# fall into three families (the transpose check has already rejected non-linear ones):

# Zero in, zero out (one data operand; other operands are integer indices or shapes; `split` and `unstack`
# have several outputs, each zero when the operand is).
_STRUCTURAL = frozenset(
    {
        "neg", "reshape", "broadcast_in_dim", "squeeze", "expand_dims", "transpose", "convert_element_type",
        "slice", "dynamic_slice", "gather", "reduce_sum", "reduce_window_sum", "copy", "copy_p", "rev",
        "cumsum", "real", "imag", "conj", "reduce_precision", "split", "unstack", "tile", "fft",
        "sharding_constraint", "layout_constraint", "psum", "pbroadcast", "pvary",
    }
)  # fmt: skip
# One output per operand, each zero when its operand is.
_PER_OPERAND = frozenset({"optimization_barrier", "device_put"})
# Products: zero when any factor is (the jet times a coefficient).
_PRODUCTS = frozenset({"mul", "dot_general", "ragged_dot_general", "conv_general_dilated"})
# Zero when the listed operands are: quotients (numerator), solves (right-hand side), scatter-mul (operand).
_LINEAR_IN = {"div": (0,), "triangular_solve": (1,), "tridiagonal_solve": (3,), "scatter-mul": (0,)}
# Sums: zero only when every summand is; a summand without the jet that is not a literal zero is exactly
# the constant term this walk looks for. `None` = all operands.
_SUMS = {
    "add": None,
    "add_any": None,
    "sub": None,
    "concatenate": None,
    "stack": None,
    "complex": None,
    "pad": (0, 1),
    "select_n": slice(1, None),  # operand 0 is the predicate
    "dynamic_update_slice": (0, 1),
    "scatter": (0, 2),
    "scatter-add": (0, 2),
    "scatter_add": (0, 2),
    "scatter-sub": (0, 2),
}


def check_bilinear_kernel(kern, jv: tuple, pt: tuple, form: Form) -> set[int]:
    """The checks of a bilinear kernel ``kern(ua, ug, va, vg, *pt)``: linear in the trial jet ``(ua, ug)`` and
    in the test jet ``(va, vg)``, no constant term; returns the indices of the arguments it depends on
    (:func:`dependencies`). Shared by the element-wise and the sum-factorised assembly."""
    args = (*jv, *jv, *pt)
    check_linear(kern, args, form, "u")
    check_linear(lambda va, vg, ua, ug, *r: kern(ua, ug, va, vg, *r), args, form, "v")
    check_no_constant_term(kern, args, {"u": (0, 1), "v": (2, 3)}, form)
    return dependencies(kern, args)


def _is_zero_constant(val) -> bool:
    if isinstance(val, jax.core.Tracer):
        return False
    try:
        a = np.asarray(val)
    except Exception:  # noqa: BLE001 - not an array: not a known zero
        return False
    return a.dtype.kind in "fciub" and a.size > 0 and not np.any(a)


def _pick(flags, which):
    if which is None:
        return flags
    if isinstance(which, slice):
        return flags[which]
    return [flags[i] for i in which if i < len(flags)]


def _sub_jaxpr(eqn):
    """The (closed) jaxpr a call-like equation (jit, custom_jvp/vjp, remat, ...) runs on its operands."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if sub is None:
            continue
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns") and len(inner.invars) == len(eqn.invars):
            return inner, getattr(sub, "consts", ())
    return None


def _loop(body, consts, fixed, carry, rest):
    """Flags of a loop's carry (and the body's other outputs) at the fixed point of its body.

    The body runs on ``fixed + carry + rest`` and returns ``carry + others``; a carry value keeps its flags
    only if every iteration does (zero stays zero, independent stays independent), so the body is walked
    until the carry's flags stop changing (at most a few passes: each flag changes once).
    """
    n = len(carry)
    while True:
        outs = _walk(body, consts, fixed + carry + rest)
        new = [(d0 or d1, z0 and z1) for (d0, z0), (d1, z1) in zip(carry, outs[:n], strict=True)]
        if new == carry:
            return carry, outs[n:]
        carry = new


def _walk(jaxpr, consts, in_flags):
    """(dep, zero) flags of the outputs of ``jaxpr`` given the flags of its inputs (see the table above)."""
    env = {}
    consts = list(consts) + [None] * (len(jaxpr.constvars) - len(consts))  # unknown constants: not zero
    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = (False, c is not None and _is_zero_constant(c))
    for v, f in zip(jaxpr.invars, in_flags, strict=True):
        env[v] = f

    def read(v):
        if hasattr(v, "val"):  # a Literal
            return False, _is_zero_constant(v.val)
        return env.get(v, (False, False))

    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        name, params = eqn.primitive.name, eqn.params
        if name == "scan":  # operands: consts, initial carry, scanned inputs; outputs: carry, stacked outputs
            nc, nk = params["num_consts"], params["num_carry"]
            body = params["jaxpr"]
            carry, ys = _loop(body.jaxpr, body.consts, ins[:nc], ins[nc : nc + nk], ins[nc + nk :])
            outs = carry + ys
        elif name == "while":  # operands: cond consts, body consts, carry; outputs: carry
            cn, bn = params["cond_nconsts"], params["body_nconsts"]
            body = params["body_jaxpr"]
            outs, _ = _loop(body.jaxpr, body.consts, ins[cn : cn + bn], ins[cn + bn :], [])
        elif name == "cond":  # operand 0 is the branch index; zero if every branch gives zero
            branches = [_walk(b.jaxpr, b.consts, ins[1:]) for b in params["branches"]]
            outs = [
                (any(b[k][0] for b in branches), all(b[k][1] for b in branches))
                for k in range(len(eqn.outvars))
            ]
        elif (sub := _sub_jaxpr(eqn)) is not None:
            outs = _walk(sub[0], sub[1], ins)
        elif name in _PER_OPERAND:
            outs = ins
        else:
            dep = any(d for d, _ in ins)
            zeros = [z for _, z in ins]
            if name in _STRUCTURAL:
                zero = bool(zeros) and zeros[0]
            elif name in _PRODUCTS:
                zero = any(zeros)
            elif name in _LINEAR_IN:
                zero = all(_pick(zeros, _LINEAR_IN[name]))
            elif name in _SUMS:
                zero = all(_pick(zeros, _SUMS[name]))
            elif dep:
                # An operation this table does not know, applied to the jet (it is linear: the transpose
                # check passed). Zero when its jet operands are; its other operands are taken as
                # coefficients. Lenient on purpose: a false alarm would reject a correct kernel.
                zero = all(z for d, z in ins if d)
            else:
                zero = False
            outs = [(dep, zero)] * len(eqn.outvars)
        for o, f in zip(eqn.outvars, outs, strict=True):
            env[o] = f
    return [read(v) for v in jaxpr.outvars]


def check_no_constant_term(fn, args, jets: dict[str, tuple[int, ...]], form: Form) -> None:
    """Raise a clear error unless ``fn(*args)`` vanishes whenever one jet's arguments are zero.

    Arguments:
        fn, args: the kernel on flat per-point arguments (abstract shapes suffice).
        jets: for each jet name (``"u"``, ``"v"``), the positions of its arguments in ``args``.

    A structural proof on the kernel's jaxpr (module docstring), traced once for all jets: independent of the
    values at the quadrature points, and also valid when the kernel closes over traced values (a closed-over
    tracer is a coefficient of unknown value, so it may multiply the jet but not stand alone in a sum).
    It works on whole arrays, not entries: a kernel that puts a constant beside the jet and cancels it later
    by a zero on the other side (``jnp.dot(jnp.append(u.grad, 0.0), jnp.append(v.grad, 1.0))``) is rejected;
    write such a term without the constant.
    """
    closed = jax.make_jaxpr(lambda *a: kernel_output(fn(*a), form))(*args)
    nleaves = [len(jax.tree_util.tree_leaves(a)) for a in args]
    for which, zero in jets.items():
        in_flags = []
        for i, n in enumerate(nleaves):
            in_flags += [(True, True) if i in zero else (False, False)] * n
        ((_, vanishes),) = _walk(closed.jaxpr, closed.consts, in_flags)
        if vanishes:
            continue
        fix = (
            "Move a term without the trial function u into a linear_form (the right-hand side)."
            if which == "u"
            else "A term without the test function v is not part of a weak form: multiply it by v.value."
        )
        raise ValueError(
            f"the kernel of {form!r} has a term that does not contain {which}: with {which} = 0 it does not "
            f"vanish (found on the kernel's jaxpr, whatever the values at the points). Every term of a "
            f"{form.kind} kernel must be linear in {which} (e.g. u.value * v.value + g * v.value is not "
            f"bilinear). {fix}"
        )


# --- the symmetric declaration ------------------------------------------------------------------------------
# (form, boundary) pairs whose declared symmetry was verified on concrete values, per space plan; weak in the
# plan, so a space's cache dies with it.
_VERIFIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _symmetry_tolerance(dtype) -> float:
    # sqrt(eps): far above the rounding of a symmetric assembly (different summation orders of the same
    # products, ~1e-16 relative in float64) and far below any asymmetry that changes a solution.
    return float(np.sqrt(np.finfo(dtype).eps))


def check_symmetric(values, pattern, form: Form, plan, boundary):
    """Verify ``A == A.T`` for a form declared ``symmetric=True``; return the values (maybe wrapped).

    The test: ``max |A[i, j] - A[j, i]| <= sqrt(eps) max |A|`` over the stored entries (a gather through the
    pattern's transpose permutation and two maxima over the ``nnz`` values). Concrete values are checked at
    once, then the (form, space plan, boundary) triple is trusted; traced values (``assemble`` under ``jit``,
    ``grad`` or ``vmap``) of a triple not yet verified eagerly get the same test at run time, through the
    solvers' run-time error mechanism (:mod:`igax.solvers._errors`: no host round trip unless it fails).
    """
    key = (form, boundary)
    done = _VERIFIED.setdefault(plan, set())
    if key in done:
        return values
    tol = _symmetry_tolerance(values.dtype)
    concrete = not isinstance(values, jax.core.Tracer)
    if concrete:
        # The transpose permutation (int64, nnz) is not left cached on the pattern by this once-only check:
        # with its transposed pattern it is 300 MB for 1M degree-2 spline dofs, resident through the solve.
        cached = "_transpose" in pattern.__dict__
        _, perm = pattern.transpose()
        if not cached:
            del pattern.__dict__["_transpose"]
        v = np.asarray(values)
        diff = np.abs(v - v[..., perm]).reshape(-1, pattern.nnz).max(axis=0)  # (nnz,), worst over a batch
        del perm
        k = int(np.argmax(diff))
        worst, scale = diff[k], np.max(np.abs(v))
        i = int(np.searchsorted(pattern.indptr, k, side="right")) - 1  # the row of slot k
        where = f" at (i, j) = ({i}, {int(pattern.indices[k])})"
    else:
        _, perm = pattern.transpose()
        # At run time: one gather and two maxima (no argmax, which doubled the cost), int32 indices (half
        # the index traffic). Measured on 2 cores: 2-4 % of a degree-2 spline assembly, ~10 % of a bilinear
        # one (the cheapest assembly there is).
        perm = perm.astype(np.int32) if pattern.nnz < 2**31 else perm
        perm = jax.lax.optimization_barrier(jnp.asarray(perm))  # XLA would fold its index wrap-around (nnz)
        worst = jnp.max(jnp.abs(values - values[..., perm]))
        scale = jnp.max(jnp.abs(values))
        where = ""

    def error(worst, scale):
        return ValueError(
            f"{form!r} was declared with symmetric=True, but the assembled matrix is not symmetric: "
            f"max |A[i, j] - A[j, i]| = {float(worst):.3e}{where}, relative to max |A| = {float(scale):.3e} "
            f"(tolerance {tol:.1e}). Solvers trust the flag (a direct solver then reads one triangle only), "
            "so the solution would be wrong. Declare the form without symmetric=True (e.g. an advection term "
            "jnp.dot(b, u.grad) * v.value is not symmetric), or make the kernel symmetric in u and v."
        )

    values = error_if(values, worst > tol * scale, error, worst, scale)
    if concrete:
        done.add(key)
    return values


def mark_symmetric(form: Form, plan, boundary) -> None:
    """Record that ``form``'s matrices on ``plan`` are symmetric by construction (a constant kernel
    matrix verified symmetric on the host), so that :func:`check_symmetric` trusts the pair from now on."""
    _VERIFIED.setdefault(plan, set()).add((form, boundary))


# Kernels already checked, and the jet entries they read, per form and per-point argument shapes. The checks
# trace the kernel four or five times; the per-point shapes do not depend on the mesh, so a retrace for a new
# mesh size (or a new jit of the same assembly) reuses the verdict.
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def checked_kernel(form: Form, point_args, checks) -> set[int]:
    """``checks()`` (which raises on a bad kernel and returns the arguments it reads), once per shapes."""
    leaves, tree = jax.tree_util.tree_flatten(point_args)
    key = (form.kind, tree, tuple((a.shape, str(a.dtype)) for a in leaves))
    done = _CHECKED.setdefault(form, {})
    if key not in done:
        done[key] = checks()
    return done[key]
