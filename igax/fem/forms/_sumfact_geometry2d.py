"""The geometry of a polynomial 2D patch at a chunk's grid points, without the weight channel.

On a patch whose (concrete) weights all equal ``w0``, ``W = w0`` everywhere (the B-splines sum to one), so
``x = sum_i B_i P_i``, ``J = sum_i grad B_i P_i``, ``1 / W = 1 / w0`` and ``grad W = 0``: the sum-factorised
evaluation needs the ``dim`` coordinate channels only, not the homogeneous ``dim + 1``, and the quotient
rule drops out. :func:`igax.fem.forms._sumfact_points.geometry` computes the same for any patch.
"""

from __future__ import annotations

import jax.numpy as jnp

from igax.fem.forms._sumfact_ops import evaluate
from igax.fem.forms._sumfact_points import Geometry, _det_inv, _outer

__all__ = ["polynomial_geometry"]


def polynomial_geometry(dirs: list, control_points, w0: float, token=None) -> Geometry:
    """Points, inverse Jacobian, ``1 / W``, ``grad_u W`` and measure at the grid points of ``dirs`` (a chunk
    of direction 0 first), for a patch whose weights all equal ``w0``; the same fields as
    :func:`igax.fem.forms._sumfact_points.geometry`.

    Arguments:
        dirs: the directions (:class:`~igax.fem.forms._sumfact_plan.Direction`, or a chunk of direction 0).
        control_points: the rows the directions touch, ``(n_0, ..., n_{d-1}, dim)``.
        w0: the common weight; token: a traced, never negative integer (results stored once).

    Returns:
        A :class:`~igax.fem.forms._sumfact_points.Geometry` on the chunk's grid.

    Example (the measure sums to the area of a 2 x 1 rectangle):
        >>> from igax.fem import SplineSpace, geometry
        >>> from igax.fem.forms._sumfact_plan import sumfact_plan
        >>> from igax.fem.forms._sumfact_geometry2d import polynomial_geometry
        >>> V = SplineSpace(geometry.rectangle((0, 0), (2, 1)).refine(degree=2, elements=3))
        >>> round(float(polynomial_geometry(sumfact_plan(V).dirs, V.control_points, 1.0).dx.sum()), 12)
        2.0
    """
    dim, d = control_points.shape[-1], len(dirs)
    A, *dA = evaluate(dirs, control_points, True, jnp, token)  # each (dim, *grid)
    J = [[dA[k][i] for k in range(d)] for i in range(dim)]
    if not all(dd.uniform for dd in dirs):
        # Empty virtual elements (repeated knots): any regular Jacobian there (their weight is zero).
        real = _outer([jnp.repeat(jnp.asarray(dd.real), dd.nq) for dd in dirs], jnp)
        J = [[jnp.where(real, J[i][k], float(i == k)) for k in range(d)] for i in range(dim)]
    det, Jinv = _det_inv(J, jnp)
    wq = _outer([jnp.asarray(dd.wq, dtype=det.dtype).reshape(-1) for dd in dirs], jnp)
    dx = wq * jnp.abs(det)
    invW = jnp.full(det.shape, 1.0 / w0, det.dtype)
    dW = jnp.zeros((d,) + det.shape, det.dtype)
    return Geometry(A, jnp.stack([jnp.stack(r) for r in Jinv]), invW, dW, dx)
