"""The kernel matrices ``D`` of sum factorisation for a concrete kernel matrix ``M``, one sum per entry.

For a form whose kernel reads no point data (isotropic elasticity with numbers for its moduli, the
Laplacian), ``M`` is a NumPy constant, and per point, state ``(ru, rv)`` and component block ``(c, e)``

    D[(ru, rv), (c, e)] = dx sum_{k, l} M[c, k, e, l] T_u[ru, k] T_v[rv, l]

(:func:`igax.fem.forms._sumfact_points.reference_matrices` for the notation). That function forms the
products with ``T_v`` first, ``Y (C, K_u, C, R_v, P)``, stored, and then those with ``T_u``; here every
entry of ``D`` is written as its own short sum over the nonzero entries of ``M`` and of ``T``, so the whole
of ``D`` is one pass over the points and nothing else is stored. 3D elasticity has 2 or 3 nonzero
``(k, l)`` per block (of 9) and, on a polynomial patch, ``T`` has no structural zeros: 54 entries of a few
products each, against 81 stored entries of ``Y`` and then 54 sums of 3 (measured in
:func:`constant_point_matrices`). Used for 3D patches (``sumfact._chunk_matrices``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from igax.fem.forms._sumfact_points import Geometry, _reference_columns

__all__ = ["constant_point_matrices"]


def constant_point_matrices(M: np.ndarray, ku, kv, geo: Geometry, rational: bool, d: int, blocks, scale=None):
    """``D (Ru Rv, blocks, P)``, equal to ``reference_matrices(M, ...)[0]`` to rounding, for a concrete ``M``.

    Arguments:
        M: ``(C, Ku, C, Kv)`` NumPy kernel matrix; ku, kv: the physical jet entries kept on each side.
        geo: the geometry at the points, flat; rational: whether the patch is rational; d: dimension.
        blocks: the component blocks ``(c, e)`` computed; scale: a constant factor of ``dx`` or None.

    Returns:
        The kernel matrices per state (trial reference jet major) and block, points last.

    Measured (3D degree-2 elasticity, 31^3 elements, geometry and ``D`` of one chunk, CPU time, medians of
    31 interleaved calls on 2 cores shared with other jobs): polynomial 7.35 -> 5.13 ms, rational 13.8 ->
    11.2 ms against :func:`~igax.fem.forms._sumfact_points.reference_matrices`.

    Example:
        >>> import numpy as np, jax.numpy as jnp
        >>> from igax.fem.forms._sumfact_points import Geometry
        >>> from igax.fem.forms._sumfact_constant import constant_point_matrices
        >>> one = jnp.ones(2)
        >>> geo = Geometry(jnp.zeros((1, 2)), 2.0 * jnp.ones((1, 1, 2)), one, 0 * one[None], one)
        >>> constant_point_matrices(np.ones((1, 1, 1, 1)), [1], [1], geo, False, 1, [(0, 0)]).tolist()
        [[[4.0, 4.0]]]
    """
    tu = _reference_columns(list(ku), geo, rational, d)
    tv = _reference_columns(list(kv), geo, rational, d)
    dx = geo.dx if scale is None else geo.dx * scale
    zero = jnp.zeros_like(dx)
    rows = []
    for cu in tu.values():  # trial reference jet ru: {k: coefficient}
        for cv in tv.values():
            per_block = []
            for c, e in blocks:
                terms = [
                    float(M[c, k, e, l]) * (a * b)
                    for k, a in cu.items()
                    for l, b in cv.items()
                    if M[c, k, e, l] != 0
                ]
                per_block.append(sum(terms) * dx if terms else zero)
            rows.append(jnp.stack(per_block))
    return jnp.stack(rows)
