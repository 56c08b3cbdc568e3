"""Bernstein polynomials and Bezier extraction operators.

On each element ``e`` the ``p + 1`` non-zero B-splines are combinations of the Bernstein polynomials of the
element mapped to ``[0, 1]``: ``N_e(t) = C_e @ B(t)``. The operators ``C_e`` come from exact knot insertion of
every interior knot up to multiplicity ``p`` (the Bezier decomposition), so they are exact.
"""

from __future__ import annotations

import numpy as np

from igax.bases.bspline import basis_functions
from igax.bases.knots import multiplicities, unique_knots, validate_degree, validate_knots
from igax.bases.refine import knot_insertion_matrix

__all__ = ["bernstein", "bezier_extraction"]


def bernstein(degree: int, t, nderiv: int = 0):
    """Bernstein polynomials ``B_(b,p)(t) = C(p, b) t^b (1 - t)^(p - b)`` on ``[0, 1]`` and their derivatives.

    Arguments:
        degree: polynomial degree ``p``.
        t: points in ``[0, 1]``, any shape ``S`` (NumPy or JAX).
        nderiv: highest derivative order.

    Returns:
        array ``(nderiv + 1, *S, p + 1)``.

    Example:
        >>> from igax.bases import bernstein
        >>> bernstein(2, [0.5])[0].tolist()
        [[0.25, 0.5, 0.25]]
    """
    p = validate_degree(degree)
    # Bernstein polynomials are the B-splines of the knot vector [0]*(p+1) + [1]*(p+1).
    return basis_functions(np.r_[np.zeros(p + 1), np.ones(p + 1)], p, t, nderiv)[1]


def bezier_extraction(knots, degree: int) -> np.ndarray:
    """Bezier extraction operators, one per element: ``N_(first_e + a) = sum_b C[e, a, b] B_b``.

    ``first_e`` is the index of the first non-zero B-spline on element ``e`` (its span index minus ``p``), and
    ``B_b`` the Bernstein polynomials of the element mapped to ``[0, 1]``.

    Arguments:
        knots: open knot vector.
        degree: polynomial degree ``p``.

    Returns:
        float64 array ``(n_elements, p + 1, p + 1)``.

    Example:
        >>> from igax.bases import bezier_extraction
        >>> bezier_extraction([0, 0, 0, 0.5, 1, 1, 1], 2)[0].tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 0.5]]
    """
    p = validate_degree(degree)
    t = validate_knots(knots, p)
    u = unique_knots(t)
    m = multiplicities(t)
    nel = u.size - 1
    if p == 0:
        return np.ones((nel, 1, 1))
    insert = np.repeat(u[1:-1], p - m[1:-1])
    T, _ = knot_insertion_matrix(t, p, insert)  # (nel * p + 1, n): old basis = T^T @ Bezier basis
    # Element e of the decomposed space owns Bernstein functions e*p .. e*p + p, and old function i is
    # sum_j T[j, i] B_j, so C[e, a, b] = T[e*p + b, first_e + a].
    first, _ = basis_functions(t, p, 0.5 * (u[:-1] + u[1:]))  # (nel,)
    rows = np.arange(nel)[:, None] * p + np.arange(p + 1)  # (nel, p+1) Bezier functions
    cols = first[:, None] + np.arange(p + 1)  # (nel, p+1) B-splines
    return T[rows[:, None, :], cols[:, :, None]]  # (nel, a, b) = T[e*p + b, first_e + a]
