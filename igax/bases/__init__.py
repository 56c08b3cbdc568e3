"""igax.bases: knot vectors, B-spline and NURBS bases, spline patches, refinement, Bezier extraction,
Lagrange reference elements, and differentiable spline layers."""

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
from igax.bases import approx, fit, interp
from igax.bases.approx import free_knot_fit, segment, segment_projection
from igax.bases import approx2d
from igax.bases.approx2d import piecewise_constant_2d, region_projection, segment_image
from igax.bases.fit import fit as spline_fit
from igax.bases.fit import fit_grid, spline_project
from igax.bases.interp import find_interval, interpolate

from igax._deprecation import renamed as _renamed

# Names before issue 17: bases.project and fem.project were different projections, bases.locate and
# fem.locate.locate different searches.
__getattr__ = _renamed(
    __name__,
    {
        # The old name keeps its callable of points as rows (m, dim); spline_project's f takes (dim, m).
        "project": ("igax.bases.spline_project (note: its f takes x of shape (dim, m))", fit._project_rows),
        "locate": ("igax.bases.find_interval (igax.fem.locate.locate finds elements)", find_interval),
    },
)
