"""The native CPU path of :func:`igax.layers.interpolate`: two JAX primitives over the kernels of
``igax/_native/interp_kernels.cc``.

For fixed sites ``x`` and points ``xq`` the interpolant is linear in the values ``y``:
``out = L(x, xq) y``. Two primitives carry that map and its transpose,

* ``interp_apply_p(x, xq, y) = L y``  (one custom call: slopes or B-spline coefficients, power-form
  coefficients, point location, evaluation),
* ``interp_transpose_p(x, xq, g) = L^T g`` (one custom call: segment sums, coefficient transpose,
  transposed tridiagonal solve),

each the other's transpose, for degrees 1, 2 and 3 (parameter ``degree``; degree 2 has no end conditions
and takes the codes of not-a-knot, 0). Reverse mode in ``y`` is one call of the second and forward mode
one call of the first. The derivatives with respect to ``x`` and ``xq`` are the pure-JAX implementation's
(``interp._pure_interpolate``), taken only when those tangents are not symbolically zero: the hot case
(gradient in the values) never touches them. ``vmap`` adds leading batch dimensions, which the kernels
loop over. On platforms other than the CPU the primitives lower to the pure-JAX implementation.

Core shapes: x (n,), xq (m,), y (n, r), out (m, r), with any leading batch dimensions, the same on all
operands (the batching rule broadcasts unbatched operands).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from igax import _native
from igax.bases._checks import runtime_check

__all__ = ["native_interpolate", "supports"]

BC_CODES = {"not-a-knot": 0, "natural": 1, "clamped": 2}
_BC_NAMES = {v: k for k, v in BC_CODES.items()}
# Value checks, the primitives' parameter ``check`` (bit flags, as in interp_kernels.cc): sites finite and
# strictly increasing, points finite, values finite. The kernels check in their pass over the operands and
# fail through the FFI's error status; the pure-JAX lowering (GPU, jax.disable_jit) checks through the
# runtime errors (igax.bases._checks), with the same messages.
CHECK_SITES, CHECK_POINTS, CHECK_VALUES = 1, 2, 4
CHECK_ALL = CHECK_SITES | CHECK_POINTS | CHECK_VALUES


def supports(n: int, degree: int, dtype) -> bool:
    """Whether the native kernels cover this case (and are available); otherwise use pure JAX."""
    if degree not in (1, 2, 3) or n < 4 or jnp.dtype(dtype) not in (jnp.float32, jnp.float64):
        return False
    return _native.available()


def _checked(x, xq, v, check):
    """The operands behind run-time errors for the checks flagged in ``check`` (pure-JAX lowering)."""
    from igax.layers import interp

    checks = []
    if check & CHECK_SITES:
        checks.append((~jnp.all(jnp.isfinite(x)), interp._MSG_X_FINITE))
        checks.append((~jnp.all(jnp.diff(x, axis=-1) > 0), interp._MSG_X_ORDER))
    if check & CHECK_VALUES:
        checks.append((~jnp.all(jnp.isfinite(v)), interp._MSG_Y))
    if check & CHECK_POINTS:
        checks.append((~jnp.all(jnp.isfinite(xq)), interp._MSG_X_NEW))
    return runtime_check(x, checks), xq, v  # everything depends on the sites


def _pure(x, xq, y, *, degree, left, right, check=0):
    """Pure-JAX ``L y`` with the primitive's shapes (leading batch dimensions looped by vmap)."""
    from igax.layers.interp import _pure_interpolate

    x, xq, y = _checked(x, xq, y, check)

    def core(x, xq, y):
        return _pure_interpolate(x, y, xq, degree=degree, bc=(_BC_NAMES[left], _BC_NAMES[right]))

    for _ in range(x.ndim - 1):
        core = jax.vmap(core)
    return core(x, xq, y)


def _pure_transpose(x, xq, g, *, check=0, **params):
    """Pure-JAX ``L^T g`` (the map is linear in y, so the VJP at y = 0 is the transpose)."""
    x, xq, g = _checked(x, xq, g, check & ~CHECK_VALUES)  # the cotangent is not the user's input
    y0 = jnp.zeros(x.shape + g.shape[-1:], g.dtype)
    _, vjp = jax.vjp(lambda y: _pure(x, xq, y, **params), y0)
    return vjp(g)[0]


interp_apply_p = Primitive("igax_interp_apply")
interp_transpose_p = Primitive("igax_interp_transpose")


def _apply_abstract(x, xq, y, **params):
    return jax.core.ShapedArray(xq.shape + y.shape[-1:], y.dtype)


def _transpose_abstract(x, xq, g, **params):
    return jax.core.ShapedArray(x.shape + g.shape[-1:], g.dtype)


interp_apply_p.def_abstract_eval(_apply_abstract)
interp_transpose_p.def_abstract_eval(_transpose_abstract)


# Outside jit a primitive is run by compiling it on its own (the CPU lowering below picks the kernel); with
# jit disabled (jax.disable_jit) that would bind the primitive again, forever, so the pure path runs instead.
def _apply_impl(x, xq, y, **p):
    if jax.config.jax_disable_jit:
        return _pure(x, xq, y, **p)
    return jax.jit(partial(interp_apply_p.bind, **p))(x, xq, y)


def _transpose_impl(x, xq, g, **p):
    if jax.config.jax_disable_jit:
        return _pure_transpose(x, xq, g, **p)
    return jax.jit(partial(interp_transpose_p.bind, **p))(x, xq, g)


interp_apply_p.def_impl(_apply_impl)
interp_transpose_p.def_impl(_transpose_impl)


def _ffi(kind):
    def lower(x, xq, v, *, degree, left, right, check=0):
        if not _native.load():  # forced native path without kernels: lower to pure JAX instead
            if kind == "forward":
                return _pure(x, xq, v, degree=degree, left=left, right=right, check=check)
            return _pure_transpose(x, xq, v, degree=degree, left=left, right=right, check=check)
        target = f"igax_interp_{kind}_{'f64' if v.dtype == jnp.float64 else 'f32'}"
        shape = xq.shape + v.shape[-1:] if kind == "forward" else x.shape + v.shape[-1:]
        call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, v.dtype))
        codes = {k: np.int32(v) for k, v in dict(degree=degree, left=left, right=right, check=check).items()}
        return call(x, xq, v, **codes)

    return lower


# CPU: the custom calls (registered with XLA by _native.load, which supports() has run); elsewhere: pure JAX.
mlir.register_lowering(
    interp_apply_p, mlir.lower_fun(_ffi("forward"), multiple_results=False), platform="cpu"
)
mlir.register_lowering(
    interp_transpose_p, mlir.lower_fun(_ffi("transpose"), multiple_results=False), platform="cpu"
)
mlir.register_lowering(interp_apply_p, mlir.lower_fun(_pure, multiple_results=False))
mlir.register_lowering(
    interp_transpose_p,
    mlir.lower_fun(lambda x, xq, g, **p: _pure_transpose(x, xq, g, **p), multiple_results=False),
)


def _batch(prim):
    def rule(args, dims, **params):
        (x, xq, v), (dx, dq, dv) = args, dims
        if dx is None and dq is None:
            # Only the values (or cotangents) are batched: fold the batch into the columns, so that the
            # points are located and the system is factorised once for the whole batch.
            v = jnp.moveaxis(v, dv, -1)  # (..., k, r, B)
            size = v.shape[-1]
            out = prim.bind(x, xq, v.reshape(v.shape[:-2] + (-1,)), **params)
            return out.reshape(out.shape[:-1] + (-1, size)), out.ndim
        size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
        args = [batching.bdim_at_front(a, d, size) for a, d in zip(args, dims, strict=True)]
        return prim.bind(*args, **params), 0

    return rule


batching.primitive_batchers[interp_apply_p] = _batch(interp_apply_p)
batching.primitive_batchers[interp_transpose_p] = _batch(interp_transpose_p)


def _geometric_tangent(fun, x, xq, dx, dxq):
    """Tangent of ``fun(x, xq)`` along (dx, dxq), or None when both are symbolic zeros."""
    if type(dx) is ad.Zero and type(dxq) is ad.Zero:
        return None
    dx = jnp.zeros_like(x) if type(dx) is ad.Zero else dx
    dxq = jnp.zeros_like(xq) if type(dxq) is ad.Zero else dxq
    return jax.jvp(fun, (x, xq), (dx, dxq))[1]


def _jvp(prim, pure):
    """JVP rule of a primitive linear in its last operand: the primitive itself on that operand's tangent,
    plus the tangent in (x, xq) of the pure-JAX function (only when those tangents are not zero)."""

    def rule(primals, tangents, **params):
        x, xq, v = primals
        dx, dxq, dv = tangents
        out = prim.bind(x, xq, v, **params)
        # The tangent call checks the sites and points again (never the tangent itself): in reverse mode it
        # becomes the transposed call, and the forward call may be dropped as dead code (gradient in y only).
        sites_points = {**params, "check": params.get("check", 0) & ~CHECK_VALUES}
        tan = None if type(dv) is ad.Zero else prim.bind(x, xq, dv, **sites_points)
        unchecked = {**params, "check": 0}
        geo = _geometric_tangent(lambda x, xq: pure(x, xq, v, **unchecked), x, xq, dx, dxq)
        if geo is not None:
            tan = geo if tan is None else tan + geo
        return out, (ad.Zero.from_primal_value(out) if tan is None else tan)

    return rule


ad.primitive_jvps[interp_apply_p] = _jvp(interp_apply_p, _pure)
ad.primitive_jvps[interp_transpose_p] = _jvp(interp_transpose_p, _pure_transpose)


def _linear_transpose(other):
    def rule(ct, x, xq, v, **params):
        if ad.is_undefined_primal(x) or ad.is_undefined_primal(xq):
            raise TypeError("interpolate is linear in the values y only; it has no transpose in x or x_new")
        if type(ct) is ad.Zero:
            return [None, None, ad.Zero(v.aval)]
        params = {**params, "check": params.get("check", 0) & ~CHECK_VALUES}  # never the cotangent
        return [None, None, other.bind(x, xq, ct, **params)]

    return rule


ad.primitive_transposes[interp_apply_p] = _linear_transpose(interp_transpose_p)
ad.primitive_transposes[interp_transpose_p] = _linear_transpose(interp_apply_p)


def native_interpolate(x, y2, xq, *, degree: int, bc: tuple[str, str], check: int = CHECK_ALL):
    """``L(x, xq) y2`` through the native primitive; x (n,), y2 (n, r), xq (m,) -> (m, r).

    ``check``: value checks to run (bit flags ``CHECK_*``; 0 for none); a failure raises from the call.
    """
    return interp_apply_p.bind(
        x, xq, y2, degree=degree, left=BC_CODES[bc[0]], right=BC_CODES[bc[1]], check=int(check)
    )
