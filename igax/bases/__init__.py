"""igax.bases: knot vectors, B-spline and NURBS bases, spline patches, refinement, Bezier extraction and
Lagrange reference elements.

The differentiable spline layers built on these bases (interpolation, fitting, projection, free-knot and
segmentation layers) live in :mod:`igax.layers`; their old names here still resolve, with a warning.
"""

from igax.bases import lagrange
from igax.bases.lagrange import ReferenceCell, ReferenceElement, reference_cell, reference_element
from igax.bases import bezier, bspline, knots, nurbs, patch, refine
from igax.bases.bezier import bernstein, bezier_extraction
from igax.bases.bspline import basis_functions, design_matrix, evaluate, find_span
from igax.bases.knots import (
    continuity,
    elements,
    greville,
    multiplicities,
    n_elements,
    num_basis,
    open_knots,
    open_uniform,
    unique_knots,
    validate_knots,
)
from igax.bases.nurbs import rational_basis_1d, rational_tensor_basis, tensor_basis
from igax.bases.patch import NURBSPatch
from igax.bases.refine import degree_elevation_matrix, knot_insertion_matrix, uniform_refinement_knots

from igax._deprecation import moved as _moved

# The spline layers moved to igax.layers (issue 17); bases.project and bases.locate were renamed before that
# (bases.project and fem.project were different projections, bases.locate and fem.locate.locate different
# searches). Served by name, so that importing igax.bases loads nothing of igax.layers or igax.solvers.
__getattr__ = _moved(
    __name__,
    {
        **{
            name: f"igax.layers:{name}"
            for name in (
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
            )
        },
        "approx": "igax.layers.approx",
        "approx2d": "igax.layers.approx2d",
        "interp": "igax.layers.interp",
        "fit": "igax.layers.fitting",
        # The old name keeps its callable of points as rows (m, dim); spline_project's f takes (dim, m).
        "project": (
            "igax.layers.fitting:_project_rows",
            "igax.layers.spline_project (note: its f takes x of shape (dim, m))",
        ),
        "locate": (
            "igax.layers:find_interval",
            "igax.layers.find_interval (igax.fem.locate.locate finds elements)",
        ),
    },
)
