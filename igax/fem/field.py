"""Fields: a space plus a coefficient vector; evaluation at physical points, gradients, integrals."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.locate import locate
from igax.fem.spaces.base import FunctionSpace

__all__ = ["Field"]


class Field(eqx.Module):
    """A finite-element / spline function ``u(x) = sum_i coeffs[i] phi_i(x)``.

    A pytree with two children: the space (whose leaves are its geometry) and ``coeffs``. Differentiating a
    loss of a Field therefore gives gradients with respect to the coefficients and, where the space was built
    from traced geometry, the geometry. Pass a Field as a named input of a form to use its value and
    ``.grad`` there.

    Arguments:
        space: the :class:`SplineSpace` or :class:`LagrangeSpace`.
        coeffs: shape exactly ``(space.ndofs,)``, component-major for vector spaces (all values of
            component 0, then component 1, ...). Any other shape raises a ``ValueError`` here, not at the
            first evaluation; for a batch of coefficient vectors build the Field inside ``jax.vmap``.

    Evaluation at physical points (``u(points)``, ``u.grad(points)``) works eagerly and under ``jax.jit``,
    ``jax.vmap`` and ``jax.grad``; which element holds a point is found on the host
    (:mod:`igax.fem.locate`):

    * concrete points (NumPy, or a constant closed over by ``jit``) with a fixed geometry are located, and
      their basis values computed, once when the call is traced; the compiled program only gathers and sums
      the coefficients. A repeated eager call at the same points reuses the location.
    * traced points (an argument of the jitted function, a ``vmap`` over point batches) or a traced geometry
      are located at run time in a host callback (``jax.pure_callback``, fixed shapes), and the basis is
      evaluated in JAX.

    Derivatives are exact in the coefficients, in the points (``d u(x) / dx`` is the physical gradient, and
    second derivatives are exact too) and in the geometry (control points, mesh nodes), by the implicit
    function theorem at the located point. Not differentiable: which element holds a point (a point on an
    element or patch interface takes one side's derivative). Points outside the domain, NaN points and
    points where the geometry map is singular raise ``ValueError`` eagerly, and at run time inside
    ``jit`` (JAX wraps it; its text is the same). A host callback cannot be serialised with ``jax.export``:
    for fixed points, build the operator once with :class:`igax.inverse.PointObservation` instead.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=4))
        >>> c = jnp.ones(V.ndofs)                # the constant 1 (a partition of unity)
        >>> u = fem.Field(V, c)
        >>> x = np.array([[1.5, 0.2]])
        >>> u(x).round(12).tolist()              # values at physical points
        [1.0]
        >>> jax.jit(lambda c, x: fem.Field(V, c)(x))(c, jnp.asarray(x)).round(12).tolist()  # traced points
        [1.0]
    """

    space: FunctionSpace
    coeffs: jax.Array

    def __init__(self, space: FunctionSpace, coeffs):
        if not isinstance(space, FunctionSpace):
            raise TypeError(f"space must be a SplineSpace or LagrangeSpace, got {type(space).__name__}.")
        coeffs = jnp.asarray(coeffs)
        _check_coeffs(space, jnp.shape(coeffs))
        self.space = space
        self.coeffs = coeffs

    @property
    def value_shape(self) -> tuple[int, ...]:
        return self.space.value_shape

    def component(self, c: int) -> jax.Array:
        """Coefficients of component ``c`` (vector spaces), shape ``(nscalar,)``."""
        return self.coeffs.reshape(-1, self.space.nscalar)[c]

    # -- evaluation at physical points -----------------------------------------------------------------------
    def _at(self, points):
        if not isinstance(points, jax.core.Tracer):
            # Concrete points (NumPy, or a constant closed over by jit) stay concrete: location then happens
            # now, on the host, instead of in a callback at run time.
            points = np.asarray(jax.device_get(points))
        if points.ndim != 2 or points.shape[1] != self.space.dim:
            raise ValueError(
                f"points must have shape (npts, {self.space.dim}), got {points.shape}; for one point write "
                "points[None, :]."
            )
        n = points.shape[0]
        if n == 0:
            raise ValueError("points must hold at least one point, got shape (0, dim).")
        if isinstance(points, np.ndarray):
            # Pad to a power of two so that the evaluation compiles once per size class, not once per number
            # of points (each compile costs a noticeable fraction of a second). Traced points have the fixed
            # shape of the caller's program.
            m = max(16, 1 << (n - 1).bit_length())
            points = np.concatenate([points, np.broadcast_to(points[:1], (m - n, points.shape[1]))])
        dofs, tables = locate(self.space, points, n_valid=n)
        val, grad = _contract(self, dofs, tables)
        return val[:n], grad[:n]

    def __call__(self, points) -> jax.Array:
        """Values at physical points ``(npts, dim)`` -> ``(npts,) + value_shape``."""
        return self._at(points)[0]

    def evaluate(self, points) -> jax.Array:
        """Values at physical points ``(npts, dim)`` -> ``(npts,) + value_shape``."""
        return self._at(points)[0]

    def grad(self, points) -> jax.Array:
        """Gradients at physical points ``(npts, dim)`` -> ``(npts,) + value_shape + (dim,)``."""
        return self._at(points)[1]

    # -- integrals -------------------------------------------------------------------------------------------
    def integrate(self, boundary=None) -> jax.Array:
        """Integral over the domain (or a named boundary); vector fields give one value per component."""
        V = self.space
        rule = V.quadrature_rule(boundary)
        t = V.tables(rule)
        val, _ = V.eval_coeffs(self.coeffs, t, rule)
        dx = t.dx.reshape(t.dx.shape + (1,) * (val.ndim - 2))
        return jnp.sum(val * dx, axis=(0, 1))

    def at_quadrature(self):
        """Value and gradient at the space's volume quadrature points, ``(nel, nq, ...)`` each."""
        V = self.space
        rule = V.quadrature_rule()
        return V.eval_coeffs(self.coeffs, V.tables(rule), rule)

    def __repr__(self):
        return f"Field({type(self.space).__name__}, ndofs={self.space.ndofs}, shape={self.value_shape})"


def _check_coeffs(space: FunctionSpace, shape: tuple[int, ...]) -> None:
    """Raise unless ``shape == (space.ndofs,)``, saying what to write for the usual mix-ups.

    Only ``__init__`` calls this. Under ``jit``/``vmap`` the shape is the traced (per-sample) one, so a
    batched Field made by ``jax.vmap(lambda c: Field(V, c))`` passes; pytree transformations rebuild Fields
    without ``__init__`` (equinox unflattens modules directly), so placeholder or batched leaves never reach
    it. A looser check on the last axis alone let ``(3, ndofs)`` through, and the Field failed only when
    evaluated, with a reshape error.
    """
    n = space.ndofs
    if shape == (n,):
        return
    hint = "Use one coefficient per dof, e.g. jnp.zeros(V.ndofs)."
    ncomp, nscalar = space.plan.ncomp, space.nscalar
    if space.value_shape and shape == (ncomp, nscalar):
        hint = (
            f"For a vector space the coefficients are component-major and flat: write coeffs.reshape(-1) "
            f"(component c is coeffs[c * {nscalar}:(c + 1) * {nscalar}])."
        )
    elif space.value_shape and shape == (nscalar, ncomp):
        hint = (
            "For a vector space the coefficients are component-major and flat: one value per node and "
            "component, (nscalar, ncomp), becomes coeffs.T.reshape(-1)."
        )
    elif len(shape) >= 2 and shape[-1] == n:
        hint = (
            "A Field holds one coefficient vector: make one Field per row ([Field(V, c) for c in coeffs]), "
            "or build it inside jax.vmap (jax.vmap(lambda c: Field(V, c).integrate())(coeffs)); for "
            "tensor-valued data on a scalar space use fem.TensorField(V, coeffs)."
        )
    raise ValueError(f"coeffs must have shape (ndofs,) = ({n},) for this space, got {shape}. {hint}")


@eqx.filter_jit  # eager, the contraction would compile anew for every number of points
def _contract(field: Field, dofs, tables):
    p = field.space.plan
    c = field.coeffs.reshape(p.ncomp, p.nscalar)[:, dofs]  # (ncomp, npts, nloc)
    val = jnp.einsum("cea,eqa->ec", c, tables.phi)
    grad = jnp.einsum("cea,eqak->eck", c, tables.dphi)
    if not p.value_shape:
        val, grad = val[:, 0], grad[:, 0]
    return val, grad


def _np(x):
    return np.asarray(jax.device_get(x))
