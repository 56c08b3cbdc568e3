"""The pressure constraint of saddle-point solves on a :class:`~igax.fem.MixedSpace`.

:func:`igax.fem.solve` and :func:`igax.fem.solve_nonlinear` call these on a mixed space: the pin of
``pressure=`` joins the Dirichlet conditions (with a unit diagonal where the pressure block has none, so the
elimination keeps the matrix regular), and ``pressure="mean"`` removes the mean of the pressure from the
solution exactly (differentiable, like the rest of the solve). See :mod:`igax.fem.spaces.mixed`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._compile import lazy_jit
from igax.fem.bc import DirichletBC, merge_bcs
from igax.fem.spaces.mixed import MixedField, MixedSpace

__all__ = ["pressure_bcs", "remove_mean", "with_pinned_diagonal", "mixed_result"]


def pressure_bcs(W: MixedSpace, bc):
    """The conditions of a solve on ``W``: ``bc`` (merged) plus the pressure pin of ``pressure=``.

    Checks that the pressure is fixed when the velocity fields are prescribed on their whole boundary (else a
    singular system), and that it is not pinned when it is not (an outflow boundary already fixes it).
    """
    bc = merge_bcs(bc)
    dofs = np.zeros(0, np.int64) if bc is None else bc.dofs
    closed = all(
        np.isin(s.boundary(None) + o, dofs).all() for s, o in zip(W.spaces[:-1], W.offsets[:-2], strict=True)
    )
    pressure_fixed = np.any(dofs >= W.offsets[-2])
    if W.pressure == "free":
        return bc
    if W.pressure is None:
        if closed and not pressure_fixed:
            raise ValueError(
                "the velocity is prescribed on the whole boundary, so the pressure (the last field) is "
                "determined only up to a constant and the system is singular. Build the space with "
                "pressure='mean' (zero-mean pressure) or pressure='pin' (first pressure dof = 0), e.g. "
                "fem.MixedSpace(V, Q, pressure='mean') or fem.taylor_hood(mesh, pressure='mean'), or "
                "prescribe a pressure dof yourself (pressure='free' turns this check off)."
            )
        return bc
    if not closed:
        raise ValueError(
            f"pressure={W.pressure!r} fixes the pressure's constant, but the velocity is not prescribed on "
            "the whole boundary, so the boundary conditions already determine it; build the space with "
            "pressure=None."
        )
    pin = W.lift(_pin_bc(W), len(W.spaces) - 1)
    return pin if bc is None else merge_bcs([bc, pin])


def _pin_bc(W: MixedSpace):
    return DirichletBC(W.spaces[-1], np.array([0]), 0.0)


def remove_mean(W: MixedSpace, coeffs):
    """With ``pressure="mean"``: the coefficients with the pressure's mean subtracted (exactly)."""
    if W.pressure != "mean":
        return coeffs
    return _remove_mean(W, coeffs)


def _remove_mean(W: MixedSpace, coeffs):
    Q = W.spaces[-1]
    if Q.value_shape:
        raise ValueError("pressure='mean' needs a scalar pressure field (the last sub-space).")
    a, b = W.offsets[-2], W.offsets[-1]
    rule = Q.quadrature_rule()
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(Q))
    t = None if traced else Q.host_tables(rule)
    if t is None:
        return _remove_mean_traced(W, coeffs)
    # Concrete geometry: the integrals of the basis functions in NumPy (nothing to compile), then one dot.
    phi = np.broadcast_to(np.asarray(t.phi), t.dx.shape + (t.phi.shape[-1],))
    weights = np.zeros(Q.ndofs)
    np.add.at(weights, Q.plan.cell_dofs[rule.elements], np.einsum("eqa,eq->ea", phi, np.asarray(t.dx)))
    return _shift(coeffs, jnp.asarray(weights / np.sum(t.dx)), a, b)


def _shift(coeffs, weights, a, b):
    return coeffs.at[a:b].add(-jnp.dot(weights, coeffs[a:b]))


_shift = lazy_jit(jax.jit, _shift, static_argnames=("a", "b"))


@eqx.filter_jit  # one program (eagerly, the tables alone compiled ~100 small programs per mesh size)
def _remove_mean_traced(W: MixedSpace, coeffs):
    Q = W.spaces[-1]
    rule = Q.quadrature_rule()
    t = Q.tables(rule)
    a, b = W.offsets[-2], W.offsets[-1]
    vals, _ = Q.eval_coeffs(coeffs[a:b], t, rule)
    mean = jnp.sum(vals * t.dx) / jnp.sum(t.dx)
    return coeffs.at[a:b].add(-mean)


def with_pinned_diagonal(A, bc):
    """``A`` with a unit diagonal on prescribed dofs whose diagonal is zero (pressure dofs of a saddle point).

    The elimination keeps a prescribed dof's diagonal as the scale of its row; a zero there (the pressure
    block of a Stokes matrix) would leave the condensed matrix singular.
    """
    if bc is None:
        return A
    return _unit_diagonal(A, A.pattern.diagonal_slots[bc.dofs])


def _unit_diagonal(A, diag):
    d = A.values[diag]
    return A.with_values(A.values.at[diag].set(jnp.where(d == 0, 1.0, d)))


_unit_diagonal = lazy_jit(eqx.filter_jit, _unit_diagonal)


def mixed_result(W: MixedSpace, coeffs) -> MixedField:
    """The solution of a solve on ``W`` as a :class:`MixedField` (the pressure's mean removed if asked)."""
    return MixedField(W, remove_mean(W, coeffs))
