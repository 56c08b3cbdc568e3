"""igax.fem.forms: weak forms and their assembly.

- :mod:`~igax.fem.forms.form`: :func:`bilinear_form`, :func:`linear_form`, :func:`functional` (pointwise
  kernels of the jets of ``u``, ``v`` and the named inputs).
- :mod:`~igax.fem.forms.inputs`: named inputs (numbers, callables of ``x``, arrays, Fields) to values at the
  quadrature points.
- :mod:`~igax.fem.forms.assembly`: :func:`assemble` (vectorised, differentiable), with the sum-factorised path
  for spline patches in :mod:`~igax.fem.forms.sumfact` and the matrix-free operator in
  :mod:`~igax.fem.forms.matrix_free`.
- :mod:`~igax.fem.forms.library`: the usual forms (Laplace, diffusion, mass, elasticity, ...).

Example:
    >>> from igax import fem
    >>> from igax.fem.forms import assemble, library
    >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2))
    >>> assemble(library.mass, V).shape
    (16, 16)
"""

from igax.fem.forms.form import Form, FormInputs, Jet, QuadValue, bilinear_form, functional, linear_form
from igax.fem.forms.assembly import assemble
from igax.fem.forms.elements import element_dofs, element_matrices
from igax.fem.forms.nonlinear import assemble_energy, assemble_residual, energy_form, residual_form
from igax.fem.forms.matrix_free import SplineOperator, operator
from igax.fem.forms import library, sumfact  # noqa: E402  (the modules)

__all__ = [
    "Form",
    "FormInputs",
    "Jet",
    "QuadValue",
    "SplineOperator",
    "assemble",
    "assemble_energy",
    "assemble_residual",
    "energy_form",
    "residual_form",
    "bilinear_form",
    "element_dofs",
    "element_matrices",
    "functional",
    "library",
    "linear_form",
    "operator",
]
