"""Regularisers: Tikhonov (L2, H1 seminorm) and smoothed total variation, for fields and for pixel grids.

Three forms of the same ideas:

- on a finite-element or spline field (:func:`field_l2`, :func:`field_h1_seminorm`,
:func:`field_total_variation`):
  integrals over the domain evaluated with the field's quadrature, valid for any space and geometry;
- as a quadratic form with a matrix assembled once (:func:`tikhonov`): ``1/2 (c - c_ref)^T K (c - c_ref)``
  with ``K`` the mass matrix (L2) or the stiffness matrix (H1 seminorm) of the space, the fast choice inside
  an optimisation loop because nothing is re-integrated;
- on a regular grid of cell values (:func:`grid_tikhonov`, :func:`grid_total_variation`), e.g. element
  densities in topology optimisation.

Total variation is smoothed as ``sqrt(|grad m|^2 + eps^2)`` so that it is differentiable where ``grad m = 0``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "tikhonov",
    "quadratic_form",
    "grid_tikhonov",
    "grid_total_variation",
    "field_l2",
    "field_h1_seminorm",
    "field_total_variation",
]


def quadratic_form(K, x, reference=None) -> jax.Array:
    """``1/2 (x - r)^T K (x - r)`` for a :class:`~igax.solvers.SparseMatrix` or dense ``K``.

    Arguments:
        K: symmetric positive semi-definite matrix, ``(n, n)``.
        x: vector ``(n,)``.
        reference: ``r``, default 0.

    Returns:
        A scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import quadratic_form
        >>> float(quadratic_form(jnp.eye(2), jnp.array([1.0, 2.0])))
        2.5
    """
    d = jnp.asarray(x) if reference is None else jnp.asarray(x) - reference
    return 0.5 * jnp.dot(d, K @ d)


def tikhonov(
    space, kind: str = "l2", *, reference=None, weight: float = 1.0
) -> Callable[[jax.Array], jax.Array]:
    """Tikhonov regulariser of a scalar field on ``space`` as a precomputed quadratic form of its
    coefficients.

    Arguments:
        space: an ``igax.fem`` space (``SplineSpace`` or ``LagrangeSpace``), scalar.
        kind: ``"l2"`` for ``1/2 int (m - m_ref)^2``, ``"h1"`` for the seminorm
            ``1/2 int |grad (m - m_ref)|^2``,
            ``"h1full"`` for their sum.
        reference: reference coefficients ``m_ref`` (default 0).
        weight: factor in front.

    Returns:
        ``reg(coeffs) -> scalar``, cheap: one sparse matrix-vector product.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import tikhonov
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.rectangle((0.0, 0.0), (2.0, 1.0)).refine(degree=2, elements=4))
        >>> reg = tikhonov(V, "h1")
        >>> abs(float(reg(jnp.ones(V.ndofs)))) < 1e-12   # constants have no H1 seminorm
        True
    """
    from igax import fem
    from igax.fem import library

    kinds = ("l2", "h1", "h1full")
    if kind not in kinds:
        raise ValueError(f"kind must be one of {kinds}, got {kind!r}.")
    forms = ([library.mass] if kind in ("l2", "h1full") else []) + (
        [library.laplace] if kind in ("h1", "h1full") else []
    )

    @jax.jit  # one compiled assembly: much faster than op-by-op dispatch for a one-off matrix
    def matrix():
        mats = [fem.assemble(f, space) for f in forms]
        return mats[0] if len(mats) == 1 else mats[0] + mats[1]

    K = matrix()

    def reg(coeffs):
        return weight * quadratic_form(K, coeffs, reference)

    reg.matrix = K
    return reg


def _spacing(h, ndim):
    h = np.broadcast_to(np.asarray(h, dtype=float), (ndim,))
    if np.any(h <= 0):
        raise ValueError(f"spacing must be positive, got {h}.")
    return h


def grid_tikhonov(m, spacing=1.0, *, kind: str = "h1") -> jax.Array:
    """Tikhonov regulariser of cell values on a regular grid (first differences for ``"h1"``).

    Arguments:
        m: array of cell values, shape ``(n_1, ..., n_d)``.
        spacing: cell size, scalar or per axis.
        kind: ``"l2"`` (``1/2 int m^2``) or ``"h1"`` (``1/2 int |grad m|^2`` by first differences).

    Returns:
        A scalar approximating the integral.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import grid_tikhonov
        >>> float(grid_tikhonov(jnp.arange(4.0), 1.0))
        1.5
    """
    m = jnp.asarray(m)
    h = _spacing(spacing, m.ndim)
    cell = float(np.prod(h))
    if kind == "l2":
        return 0.5 * cell * jnp.sum(m**2)
    if kind != "h1":
        raise ValueError(f"kind must be 'l2' or 'h1', got {kind!r}.")
    total = 0.0
    for ax in range(m.ndim):
        d = jnp.diff(m, axis=ax) / h[ax]
        total = total + jnp.sum(d**2)
    return 0.5 * cell * total


def grid_total_variation(m, spacing=1.0, *, eps: float = 1e-3) -> jax.Array:
    """Smoothed isotropic total variation ``int sqrt(|grad m|^2 + eps^2)`` of cell values on a regular grid.

    Forward differences are evaluated on the ``(n_1 - 1) x ... x (n_d - 1)`` interior corners, so that every
    component of the gradient lives at the same place (isotropic TV).

    Arguments:
        m: array ``(n_1, ..., n_d)``.
        spacing: cell size, scalar or per axis.
        eps: smoothing; TV of a step of height ``s`` is exact up to ``O(eps)``.

    Returns:
        A scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import grid_total_variation
        >>> m = jnp.array([[0.0, 0.0, 1.0, 1.0]] * 3)   # a unit step across 3 rows
        >>> round(float(grid_total_variation(m, eps=1e-9)), 6)   # length 2 (interior) times jump 1
        2.0
    """
    m = jnp.asarray(m)
    h = _spacing(spacing, m.ndim)
    sq = 0.0
    for ax in range(m.ndim):
        d = jnp.diff(m, axis=ax) / h[ax]
        # average over the other axes to the corner grid
        for other in range(m.ndim):
            if other != ax:
                d = 0.5 * (
                    jax.lax.slice_in_dim(d, 0, d.shape[other] - 1, axis=other)
                    + jax.lax.slice_in_dim(d, 1, d.shape[other], axis=other)
                )
        sq = sq + d**2
    return float(np.prod(h)) * jnp.sum(jnp.sqrt(sq + eps**2) - eps)


def _assemble_functional(kernel, space, **fields):
    from igax import fem

    return fem.assemble(fem.functional(kernel), space, **fields)


def field_l2(field, reference=None) -> jax.Array:
    """``1/2 int (m - m_ref)^2 dx`` of a scalar field.

    Arguments:
        field: an ``igax.fem.Field``.
        reference: a number, callable of ``x`` or Field (default 0).

    Returns:
        A scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import field_l2
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.rectangle((0.0, 0.0), (2.0, 1.0)).refine(degree=2, elements=4))
        >>> round(float(field_l2(fem.Field(V, jnp.ones(V.ndofs)))), 12)   # half the area
        1.0
    """
    ref = 0.0 if reference is None else reference
    return _assemble_functional(lambda w: 0.5 * (w.m - w.ref) ** 2, field.space, m=field, ref=ref)


def field_h1_seminorm(field) -> jax.Array:
    """``1/2 int |grad m|^2 dx`` of a scalar field.

    Arguments:
        field: an ``igax.fem.Field``.

    Returns:
        A scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import field_h1_seminorm
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.rectangle((0.0, 0.0), (2.0, 1.0)).refine(degree=2, elements=4))
        >>> round(float(field_h1_seminorm(fem.Field(V, jnp.ones(V.ndofs)))), 12)   # 0 for a constant
        0.0
    """
    return _assemble_functional(lambda w: 0.5 * jnp.dot(w.m.grad, w.m.grad), field.space, m=field)


def field_total_variation(field, *, eps: float = 1e-3) -> jax.Array:
    """Smoothed total variation ``int sqrt(|grad m|^2 + eps^2) - eps dx`` of a scalar field.

    Arguments:
        field: an ``igax.fem.Field``.
        eps: smoothing parameter (same units as ``|grad m|``).

    Returns:
        A scalar.

    Example:
        >>> from igax.inverse import field_total_variation
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.rectangle((0.0, 0.0), (2.0, 1.0)).refine(degree=2, elements=4))
        >>> m = fem.project(lambda w: w.x[1], V)    # m = y: |grad m| = 1 on an area of 2
        >>> round(float(field_total_variation(m, eps=1e-6)), 5)
        2.0
    """
    return _assemble_functional(
        lambda w: jnp.sqrt(jnp.dot(w.m.grad, w.m.grad) + eps**2) - eps, field.space, m=field
    )
