"""Data-misfit objectives and error measures."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["least_squares", "relative_error"]


def least_squares(predicted, observed, *, weights=None, sigma=None) -> jax.Array:
    """Weighted least-squares misfit ``1/2 sum w (predicted - observed)^2``.

    Arguments:
        predicted: model predictions, any shape.
        observed: data, same shape.
        weights: non-negative weights broadcastable to the data (default 1).
        sigma: noise standard deviation (scalar or per datum); sets ``weights = 1 / sigma^2``, so that the
            misfit of the true parameters is about ``n / 2`` for ``n`` data (the discrepancy principle's
            yardstick). Give ``weights`` or ``sigma``, not both.

    Returns:
        A scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import least_squares
        >>> float(least_squares(jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0]), sigma=2.0))
        0.5
    """
    predicted = jnp.asarray(predicted)
    observed = jnp.asarray(observed)
    if predicted.shape != observed.shape:
        raise ValueError(
            f"predicted and observed must have the same shape, got {predicted.shape} and {observed.shape}."
        )
    if weights is not None and sigma is not None:
        raise ValueError("give weights= or sigma= (weights = 1/sigma**2), not both.")
    r = predicted - observed
    if sigma is not None:
        w = 1.0 / jnp.asarray(sigma) ** 2
    elif weights is not None:
        w = jnp.asarray(weights)
    else:
        return 0.5 * jnp.sum(r**2)
    return 0.5 * jnp.sum(w * r**2)


def relative_error(estimate, truth, *, weights=None) -> jax.Array:
    """Relative (weighted) l2 error ``|estimate - truth|_w / |truth|_w``.

    Arguments:
        estimate, truth: arrays of the same shape, e.g. values at quadrature points.
        weights: non-negative weights, e.g. quadrature weights times Jacobians, which turn the discrete norms
            into
            L2 norms over the domain.

    Returns:
        A scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import relative_error
        >>> float(relative_error(jnp.array([1.1, 2.0]), jnp.array([1.0, 2.0])))  # doctest: +ELLIPSIS
        0.0447...
    """
    e = jnp.asarray(estimate) - jnp.asarray(truth)
    t = jnp.asarray(truth)
    w = 1.0 if weights is None else jnp.asarray(weights)
    return jnp.sqrt(jnp.sum(w * e**2) / jnp.sum(w * t**2))
