"""igax.layers: differentiable spline layers, built on the bases of :mod:`igax.bases`.

- :mod:`~igax.layers.interp`: :func:`interpolate`, spline interpolation (degrees 1-3) whose derivatives
  exploit the banded structure (a native kernel where available), and :func:`find_interval`.
- :mod:`~igax.layers.fitting`: :func:`spline_fit` (smoothing least squares, 1D and tensor products),
  :func:`fit_grid` and :func:`spline_project` (L2 projection onto a B-spline space).
- :mod:`~igax.layers.approx`: :func:`free_knot_fit`, :func:`segment`, :func:`segment_projection`
  (piecewise-constant approximation of signals with differentiable breakpoints).
- :mod:`~igax.layers.approx2d`: :func:`piecewise_constant_2d`, :func:`region_projection`,
  :func:`segment_image` (the same on images).

Layering: ``igax.layers`` uses ``igax.bases`` and ``igax.solvers``, never ``igax.fem`` or ``igax.inverse``.
Before this subpackage existed these names lived in ``igax.bases``; they still resolve there, with a
``DeprecationWarning`` naming the new place.

Example:
    >>> import jax.numpy as jnp
    >>> from igax.layers import interpolate
    >>> x = jnp.linspace(0.0, 1.0, 8)
    >>> float(interpolate(x, x**2, jnp.array([0.5]), degree=3)[0])   # a cubic reproduces x**2
    0.25
"""

from igax.layers import approx, approx2d, fitting, interp
from igax.layers.approx import free_knot_fit, segment, segment_projection
from igax.layers.approx2d import piecewise_constant_2d, region_projection, segment_image
from igax.layers.fitting import fit as spline_fit
from igax.layers.fitting import fit_grid, spline_project
from igax.layers.interp import find_interval, interpolate

__all__ = [
    "find_interval",
    "fit_grid",
    "free_knot_fit",
    "interpolate",
    "piecewise_constant_2d",
    "region_projection",
    "segment",
    "segment_image",
    "segment_projection",
    "spline_fit",
    "spline_project",
]
