"""igax.fem.output: fields out of igax, as samples, files and pictures.

- :mod:`~igax.fem.output.export`: :func:`sample` (any space on a grid of its elements), :func:`write_vtu`,
  :func:`write_field_series` (.pvd / .xdmf), :func:`to_pyvista`.
- :mod:`~igax.fem.output.plotting`: :func:`plot` (matplotlib or pyvista), :func:`plot_convergence`,
  :func:`plot_history`.

Example:
    >>> import jax.numpy as jnp
    >>> from igax import fem
    >>> from igax.fem.output import sample
    >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2))
    >>> s = sample(fem.Field(V, jnp.ones(V.ndofs)), resolution=3)
    >>> round(float(s.point_data["u"].max()), 12)   # partition of unity
    1.0
"""

from igax.fem.output.export import Sampled, sample, to_pyvista, write_field_series, write_vtu
from igax.fem.output.plotting import plot, plot_convergence, plot_history

__all__ = [
    "Sampled",
    "plot",
    "plot_convergence",
    "plot_history",
    "sample",
    "to_pyvista",
    "write_field_series",
    "write_vtu",
]
