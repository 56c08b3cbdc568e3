"""One step of the 3D sum-factorised band contraction as a native CPU kernel (``igax/_native``).

:func:`igax.fem.forms._sumfact_compact.step_compact` in XLA is a transpose of the member states, a batched
matrix product whose inner dimension is only ``m nq`` (3 to 12 for degree 2) and ``p + 1`` pads added into
the band: several passes over memory for few multiply-adds each. The kernel
(``igax/_native/sumfact_kernels.cc``) transposes the members once and accumulates each band row in blocks
that stay in the L1 cache; the sums are the same, in another order (results equal to rounding).

Used by the forward contraction of 3D patches on the CPU in float64 when the native kernels are available
(:func:`native_ok`); the transpose (gradients) keeps the XLA step, which is linear and exact on its own, so
derivatives do not depend on which forward ran. ``IGAX_NATIVE=0`` (or ``_USE = False``) gives the XLA step.

Measured (3D degree-2 elasticity, 31^3 elements, 108k DOFs, 2 cores shared with other jobs, CPU time,
medians of interleaved calls): see :func:`step_native`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["native_ok", "step_native"]

_USE = True  # the native step where available (False: the XLA step, for A/B timings and tests)


def native_ok(dtype) -> bool:
    """Whether :func:`step_native` runs here: float64 on the CPU backend with the native kernels loaded.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.fem.forms._sumfact_native3d import native_ok
        >>> native_ok(jnp.float32)  # float64 only
        False
    """
    if not _USE or jnp.dtype(dtype) != jnp.float64 or jax.default_backend() != "cpu":
        return False
    from igax import _native

    return _native.load()


def step_native(G, tables: list, outs: list, p: int):
    """:func:`igax.fem.forms._sumfact_compact.step_compact` by the native kernel: ``(S, pre..., nv nq) ->
    (S', n, L, pre...)`` with ``n = nv + p``, ``L = 2 p + 1``.

    Arguments:
        G: the states, the contracted direction's points last; tables: per output state its band table
            ``(nv, (p + 1) L, m nq)``; outs: the step's ``(members, flags)``; p: the direction's degree.

    Returns:
        The band of each output state, the uncontracted axes after it.

    Measured (one chunk of 3D degree-2 elasticity on 31^3 elements, 6 blocks of 9 states, band forward,
    2 cores loaded, CPU time, medians of interleaved calls): see the commit and ``docs/performance.md``.

    Example (one state, one element of degree 1 and one point: the band rows ``B_a B_b``):
        >>> import numpy as np, jax.numpy as jnp
        >>> from igax.fem.forms._sumfact_native3d import native_ok, step_native
        >>> A = np.zeros((1, 2 * 3, 1)); A[0, [1, 2, 3, 4], 0] = [1.0, 2.0, 3.0, 4.0]
        >>> out = step_native(jnp.ones((1, 2, 1)), [A], [([0], [(0, 0)])], 1)
        >>> out.shape, out[0, :, :, 0].tolist()
        ((1, 2, 3, 2), [[0.0, 1.0, 2.0], [3.0, 4.0, 0.0]])
    """
    from igax import _native
    from igax.fem.forms._sumfact_compact import nonzero_rows

    if not _native.load():
        raise RuntimeError(f"step_native needs the native kernels ({_native.reason()}); use step_compact.")
    pre = G.shape[1:-1]
    nv, Q = tables[0].shape[0], G.shape[-1]
    nq = Q // nv
    P = int(np.prod(pre, dtype=np.int64))
    rows = nonzero_rows(p)
    tab = jnp.concatenate([jnp.take(jnp.asarray(A, G.dtype), rows, axis=1).reshape(-1) for A in tables])
    members = np.asarray([m for ms, _ in outs for m in ms], np.int32)
    counts = np.asarray([len(ms) for ms, _ in outs], np.int32)
    shape = (len(outs), nv + p, 2 * p + 1, P)
    call = jax.ffi.ffi_call("igax_sumfact_step_f64", jax.ShapeDtypeStruct(shape, G.dtype))
    out = call(G.reshape((G.shape[0], P, Q)), tab, members, counts, p=np.int64(p), nq=np.int64(nq))
    return out.reshape(shape[:3] + pre)
