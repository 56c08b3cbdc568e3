"""Maps from unconstrained optimisation variables to bounded physical parameters.

A coefficient field ``kappa = sum_i c_i N_i`` on a B-spline or NURBS space stays inside ``[lower, upper]``
wherever its coefficients do, because the basis functions are non-negative and sum to one (convex-hull
property). Bounding the coefficients therefore bounds the field exactly, either with a smooth map of
unconstrained variables (:class:`Sigmoid`, :class:`Softplus`, :class:`Exp`) and any unconstrained optimiser,
or with the bounds themselves and a bound-constrained optimiser
(``minimize(..., method="lbfgsb", bounds=(lower, upper))``). For Lagrange spaces of degree 2 and above the
convex-hull property does not hold between nodes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Sigmoid", "Softplus", "Exp", "Identity"]


def _check_bounds(lower, upper):
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    if np.any(~np.isfinite(lo)) or np.any(~np.isfinite(hi)):
        raise ValueError("Sigmoid needs finite lower and upper bounds; use Softplus for a one-sided bound.")
    if np.any(hi <= lo):
        raise ValueError(f"upper must exceed lower everywhere, got lower={lower}, upper={upper}.")


class Identity:
    """The identity map (no transformation); for a uniform interface."""

    def __call__(self, z) -> jax.Array:
        return jnp.asarray(z)

    def inverse(self, x) -> jax.Array:
        return jnp.asarray(x)


class Sigmoid:
    """``x = lower + (upper - lower) * sigmoid(z)``: maps the real line onto ``(lower, upper)``.

    Arguments:
        lower, upper: finite bounds (scalars or arrays broadcastable to the parameters).

    Example:
        >>> from igax.inverse import Sigmoid
        >>> m = Sigmoid(0.5, 2.0)
        >>> float(m(m.inverse(1.5)))  # doctest: +ELLIPSIS
        1.5...
    """

    def __init__(self, lower, upper):
        _check_bounds(lower, upper)
        self.lower, self.upper = lower, upper

    def __call__(self, z) -> jax.Array:
        return self.lower + (self.upper - self.lower) * jax.nn.sigmoid(z)

    def inverse(self, x) -> jax.Array:
        """The ``z`` with ``self(z) == x``; ``x`` must lie strictly inside the bounds."""
        t = (jnp.asarray(x) - self.lower) / (self.upper - self.lower)
        if not isinstance(t, jax.core.Tracer) and (jnp.any(t <= 0) or jnp.any(t >= 1)):
            raise ValueError("Sigmoid.inverse: x must lie strictly between lower and upper.")
        return jnp.log(t) - jnp.log1p(-t)


class Softplus:
    """``x = lower + softplus(z)``: maps the real line onto ``(lower, inf)``; nearly linear for large ``z``.

    Arguments:
        lower: the lower bound (default 0).

    Example:
        >>> from igax.inverse import Softplus
        >>> m = Softplus(1.0)
        >>> float(m(m.inverse(3.0)))  # doctest: +ELLIPSIS
        3.0...
    """

    def __init__(self, lower=0.0):
        self.lower = lower

    def __call__(self, z) -> jax.Array:
        return self.lower + jax.nn.softplus(z)

    def inverse(self, x) -> jax.Array:
        """The ``z`` with ``self(z) == x``; ``x`` must exceed ``lower``."""
        y = jnp.asarray(x) - self.lower
        if not isinstance(y, jax.core.Tracer) and jnp.any(y <= 0):
            raise ValueError("Softplus.inverse: x must exceed lower.")
        # log(expm1(y)) written so that it neither overflows for large y nor loses digits for small y.
        return y + jnp.log(-jnp.expm1(-y))


class Exp:
    """``x = scale * exp(z)``: positive parameters on a logarithmic scale (conductivities, moduli).

    Arguments:
        scale: reference value (``z = 0`` maps to ``scale``).

    Example:
        >>> from igax.inverse import Exp
        >>> float(Exp(2.0)(0.0))
        2.0
    """

    def __init__(self, scale=1.0):
        self.scale = scale

    def __call__(self, z) -> jax.Array:
        return self.scale * jnp.exp(z)

    def inverse(self, x) -> jax.Array:
        return jnp.log(jnp.asarray(x) / self.scale)
