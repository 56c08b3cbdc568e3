"""igax.bases: knot vectors, B-spline and NURBS bases, spline patches, refinement, Bezier extraction,
Lagrange reference elements, and differentiable spline layers."""
