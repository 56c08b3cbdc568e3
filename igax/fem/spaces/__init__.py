"""igax.fem.spaces: function spaces, all implementing one protocol (:class:`FunctionSpace`).

- :mod:`~igax.fem.spaces.base`: the abstract :class:`FunctionSpace` (quadrature rules, basis tables,
  coefficient evaluation, sampling, point location), :class:`SpacePlan`, :class:`Rule`, :class:`Tables`.
- :mod:`~igax.fem.spaces.spline`: :class:`SplineSpace`, B-spline / NURBS spaces on a patch.
- :mod:`~igax.fem.spaces.mixed`: :class:`MixedSpace`, products of spaces on the same elements (velocity and
  pressure), with block dof numbering (import it from ``igax.fem``: it builds on Fields, which this package
  must not load).
- :mod:`~igax.fem.spaces.multipatch`: :class:`MultiPatchSpace`, patches glued conformingly.
- :mod:`~igax.fem.spaces.lagrange`: :class:`LagrangeSpace`, P1-P3 / Q1-Q3 elements on a
:class:`~igax.fem.Mesh`.
- :mod:`~igax.fem.spaces.sampling`: how each space draws itself (samplers for export and plots).
- ``glue``, ``_transfer_spline``, ``_transfer_lagrange``: patch gluing and the prolongations between
  refined spaces that multigrid uses.

A new kind of space subclasses :class:`FunctionSpace` and implements its abstract methods; see
``docs/architecture.md``.

Example:
    >>> from igax.fem import geometry
    >>> from igax.fem.spaces import FunctionSpace, SplineSpace
    >>> V = SplineSpace(geometry.rectangle().refine(degree=2, elements=3))
    >>> isinstance(V, FunctionSpace), V.ndofs
    (True, 25)
"""

from igax.fem.spaces.base import BoundaryPiece, FunctionSpace, Rule, SpacePlan, Tables
from igax.fem.spaces.lagrange import LagrangeSpace
from igax.fem.spaces.multipatch import MultiPatchSpace
from igax.fem.spaces.spline import SplineSpace

__all__ = [
    "BoundaryPiece",
    "FunctionSpace",
    "LagrangeSpace",
    "MultiPatchSpace",
    "Rule",
    "SpacePlan",
    "SplineSpace",
    "Tables",
]
