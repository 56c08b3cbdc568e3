"""igax.bases: knot vectors, B-spline and NURBS bases, spline patches, refinement, Bezier extraction,
Lagrange reference elements, and differentiable spline layers."""

from igax.bases import lagrange
from igax.bases.lagrange import ReferenceCell, ReferenceElement, reference_cell, reference_element
