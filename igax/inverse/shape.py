"""Shape parameterisation by control-point displacements of a NURBS patch, with a mesh-quality guard.

The design is a vector of displacements of chosen control points of a coarse *design* patch. The analysis
space lives on a refined copy: knot insertion and degree elevation act linearly on the homogeneous control
points, so the refined geometry, everything assembled on it, and any loss are differentiable functions of the
design (``jax.grad`` gives shape derivatives for free). A step of an optimiser can fold the control net and
invert elements; :meth:`ControlPointShape.check` (used as a ``minimize`` callback) stops the run with an
:class:`InvertedGeometryError` that says where and what to do instead, and :func:`jacobian_barrier` is a
smooth penalty that keeps the optimiser away from that situation in the first place.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ControlPointShape", "InvertedGeometryError", "jacobian_barrier", "min_jacobian"]


class InvertedGeometryError(ValueError):
    """A shape step made the geometry Jacobian vanish or change sign (folded control net)."""


def _jacobian_det(space) -> jax.Array:
    """Signed geometry Jacobian determinants (nel, nq) of a SplineSpace, also under tracing."""
    return space.jacobian_determinant()


def min_jacobian(space) -> float:
    """Smallest geometry Jacobian determinant of a ``SplineSpace`` over its quadrature points, relative to
    the mean of its absolute value (1 for an affine map, <= 0 when some element is degenerate or inverted;
    for a positively oriented patch)."""
    det = np.asarray(_jacobian_det(space))
    return float(det.min() / np.mean(np.abs(det)))


def jacobian_barrier(space, threshold: float = 0.1, *, sharpness: float = 50.0) -> jax.Array:
    """Smooth penalty that grows when the relative Jacobian determinant falls below ``threshold``.

    ``sum(softplus(sharpness * (threshold - det / mean(det)))^2) / sharpness^2`` over the quadrature points:
    about zero for healthy elements, quadratic in the shortfall below ``threshold`` at every point (a sum,
    not a mean, so that a single folding element is not averaged away). Add it (times a weight) to a shape
    objective.

    Arguments:
        space: a ``SplineSpace`` built from the current design.
        threshold: relative determinant below which the penalty acts.
        sharpness: how sharply it switches on.

    Returns:
        A scalar, differentiable in the geometry.

    Example:
        >>> # skipped (fragment: its names come from the text above)
        >>> jacobian_barrier(V_design)   # doctest: +SKIP
    """
    det = _jacobian_det(space)
    rel = det / jnp.abs(jnp.mean(det))  # (positively oriented patches; flip the patch otherwise)
    return jnp.sum(jax.nn.softplus(sharpness * (threshold - rel)) ** 2) / sharpness**2


class ControlPointShape:
    """Displacements of selected control points of a design patch, mapped to an analysis space.

    Arguments:
        patch: the coarse design patch (``igax.bases.NURBSPatch``).
        movable: boolean mask over the control net, shape ``patch.shape`` (True = moves), or None for all.
        fixed_components: per physical coordinate, a boolean mask of the same shape marking points whose
            displacement in that coordinate is held at zero (e.g. points on a symmetry line); or None.
        refine: keyword arguments of ``patch.refine`` that give the analysis patch, e.g.
            ``{"degree": 2, "elements": 12}``.
        space_kwargs: keyword arguments of ``igax.fem.SplineSpace`` (``shape=(2,)`` for elasticity, ...).

    ``shape.space(d)`` is the analysis ``SplineSpace`` for design ``d`` (a vector of length ``shape.size``,
    zeros = the initial shape), differentiable in ``d``; ``shape.patch(d)`` the design patch.

    Example:
        >>> # skipped (fragment: its names come from the text above)
        >>> shape = ControlPointShape(geo, refine={"elements": 8})   # doctest: +SKIP
        >>> V = shape.space(jnp.zeros(shape.size))                   # doctest: +SKIP
    """

    def __init__(
        self,
        patch,
        movable=None,
        *,
        fixed_components: Sequence | None = None,
        refine: dict | None = None,
        space_kwargs: dict | None = None,
    ):
        from igax import fem

        cp = np.asarray(patch.control_points)
        net, ndim = cp.shape[:-1], cp.shape[-1]
        mask = np.ones(net, bool) if movable is None else np.asarray(movable, bool)
        if mask.shape != net:
            raise ValueError(f"movable must have the control-net shape {net}, got {mask.shape}.")
        free = np.repeat(mask[..., None], ndim, axis=-1)  # (..., ndim)
        if fixed_components is not None:
            if len(fixed_components) != ndim:
                raise ValueError(f"fixed_components needs one mask per coordinate ({ndim}).")
            for k, fk in enumerate(fixed_components):
                if fk is not None:
                    fk = np.asarray(fk, bool)
                    if fk.shape != net:
                        raise ValueError(f"fixed_components[{k}] must have shape {net}, got {fk.shape}.")
                    free[..., k] &= ~fk
        self.design_patch = patch
        self.free = np.flatnonzero(free.ravel())  # flat indices into the (..., ndim) control points
        self.refine_kwargs = dict(refine or {})
        self.space_kwargs = dict(space_kwargs or {})
        self.space0 = fem.SplineSpace(self._refined(jnp.asarray(cp)), **self.space_kwargs)
        # Compiled once: the guard runs after every iteration, op-by-op it would cost more than the solve.
        self._det_jit = jax.jit(lambda d: _jacobian_det(self.space(d)))
        det0 = np.asarray(self.space0.jacobian_determinant())
        self._sign0 = -1.0 if np.mean(det0) < 0 else 1.0
        self._scale0 = float(np.mean(np.abs(det0)))

    @property
    def size(self) -> int:
        """Number of design variables."""
        return int(self.free.size)

    def control_points(self, d) -> jax.Array:
        """Design-patch control points for design ``d``."""
        cp0 = jnp.asarray(self.design_patch.control_points)
        d = jnp.asarray(d, cp0.dtype)
        if d.shape != (self.size,):
            raise ValueError(f"the design must have shape ({self.size},), got {d.shape}.")
        return cp0.reshape(-1).at[self.free].add(d).reshape(cp0.shape)

    def patch(self, d):
        """The design patch for design ``d``."""
        return eqx.tree_at(lambda p: p.control_points, self.design_patch, self.control_points(d))

    def _refined(self, cp):
        p = eqx.tree_at(lambda q: q.control_points, self.design_patch, cp)
        return p.refine(**self.refine_kwargs) if self.refine_kwargs else p

    def space(self, d):
        """The analysis ``SplineSpace`` for design ``d`` (differentiable; no Jacobian check under ``jit``)."""
        r = self._refined(self.control_points(d))
        return self.space0.with_geometry(control_points=r.control_points, weights=r.weights)

    def relative_jacobian(self, space) -> jax.Array:
        """Jacobian determinants (nel, nq) of an analysis space of this shape, relative to the initial
        geometry's mean (and orientation): 1 where elements kept their size, <= 0 where they folded."""
        return self._sign0 * _jacobian_det(space) / self._scale0

    def guard(self, value, space, *, threshold: float = 0.0) -> jax.Array:
        """``value`` where the geometry is valid (every relative determinant > ``threshold``), else ``inf``.

        Line searches (scipy's L-BFGS-B, jaxopt's zoom) treat ``inf`` as a failed trial and shorten the step,
        so an objective wrapped this way never accepts a folded geometry.

        Example:
            >>> # skipped (fragment: its names come from the text above)
            >>> return shape.guard(compliance, V, threshold=0.02)   # doctest: +SKIP
        """
        ok = jnp.min(self.relative_jacobian(space)) > threshold
        return jnp.where(ok, value, jnp.inf)

    def check(self, d, *, threshold: float = 0.0) -> float:
        """Raise :class:`InvertedGeometryError` if design ``d`` folds the geometry; return the min relative
        Jacobian determinant otherwise. Use as ``minimize(..., callback=shape.callback())``."""
        det = np.asarray(self._det_jit(jnp.asarray(d, self.space0.control_points.dtype)))
        # relative to the initial geometry's orientation and mean determinant, so that a mostly inverted
        # patch (negative mean) cannot pass for a healthy one
        m = float((self._sign0 * det).min() / self._scale0)
        if not m > threshold:
            raise InvertedGeometryError(
                f"the shape step inverted or degenerated the geometry: the smallest Jacobian determinant is "
                f"{m:.3e} times the mean (must stay > {threshold}). Remedies: take smaller steps (fewer "
                "iterations between checks, a move limit or bounds on the design), add "
                "igax.inverse.shape.jacobian_barrier(space) to the objective, or move fewer control points "
                "(keep the interior of the control net following the boundary)."
            )
        return m

    def callback(self, threshold: float = 0.0):
        """A ``minimize`` callback that checks every accepted iterate with :meth:`check`."""

        def cb(it):
            self.check(it.x, threshold=threshold)

        return cb
