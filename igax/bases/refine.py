"""Exact refinement of spline spaces: knot insertion (h), degree elevation (p) and their composition (k).

Each function returns a refinement matrix ``T`` of shape ``(n_new, n_old)`` computed once in NumPy from the
knots, and the refined knot vector. The old basis is a combination of the new one, ``N_old_i = sum_j T[j, i]
N_new_j``, so new (homogeneous) coefficients are ``c_new = T @ c_old`` and the spline is unchanged. Applying
``T`` to JAX arrays keeps refinement differentiable in the coarse coefficients.

Methods: knot insertion uses the Oslo algorithm (discrete B-splines: every row is a convex combination);
degree elevation solves the exact interpolation problem on the elevated space at its Greville abscissae
(unisolvent by Schoenberg-Whitney), with one step of iterative refinement; since the old space is a
subspace of
the new one, the solution is exact up to round-off.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from scipy.linalg import solve_banded

from igax.bases.bspline import design_matrix
from igax.bases.knots import greville, unique_knots, validate_degree, validate_knots

__all__ = [
    "knot_insertion_matrix",
    "oslo_matrix",
    "degree_elevation_matrix",
    "elevate_knots",
    "uniform_refinement_knots",
]


def knot_insertion_matrix(knots, degree: int, new_knots) -> tuple[np.ndarray, np.ndarray]:
    """Refinement matrix for inserting ``new_knots`` (all at once, by the Oslo algorithm).

    Arguments:
        knots: open knot vector ``(nknots,)``.
        degree: polynomial degree ``p``.
        new_knots: values strictly inside the domain to insert (repeats allowed, up to multiplicity ``p``).

    Returns:
        ``(T, refined_knots)`` with ``T`` of shape ``(n + m, n)`` (``m`` inserted knots).

    Example:
        >>> from igax.bases import knot_insertion_matrix
        >>> T, t = knot_insertion_matrix([0, 0, 1, 1], 1, [0.5])
        >>> T.tolist(), t.tolist()
        ([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], [0.0, 0.0, 0.5, 1.0, 1.0])
    """
    p = validate_degree(degree)
    t = validate_knots(knots, p)
    new = np.sort(np.atleast_1d(np.asarray(new_knots, dtype=np.float64)))
    if new.ndim != 1:
        raise ValueError(f"new_knots must be a one-dimensional sequence of values, got shape {new.shape}.")
    if new.size and not (np.all(np.isfinite(new)) and new[0] > t[0] and new[-1] < t[-1]):
        raise ValueError(
            f"new_knots must lie strictly inside the domain ({t[0]}, {t[-1]}), got {new.tolist()}. "
            "The ends of an open knot vector are already at full multiplicity."
        )
    refined = np.sort(np.concatenate([t, new]))
    # Check the result first, so the error names what the user wrote.
    validate_knots(refined, p, name="knots with new_knots inserted")
    return oslo_matrix(t, p, refined), refined


def oslo_matrix(knots: np.ndarray, degree: int, refined: np.ndarray) -> np.ndarray:
    """Knot-insertion matrix from ``knots`` to a refined knot vector ``refined`` (Oslo algorithm).

    Row ``i`` holds the discrete B-splines ``alpha_j(i)``, computed as the product
    ``R_1(tau_(i+1)) ... R_p(tau_(i+p))`` of the matrices of the B-spline recurrence, evaluated at the refined
    knots ``tau`` instead of at a point; all rows at once, ``O(n_new p^2)``. Every denominator
    ``t_(m+k) - t_m`` spans the non-empty interval ``[t_mu, t_(mu+1))`` that contains ``tau_i``, so it is
    positive. The inputs must already be valid (``refined`` contains ``knots``).

    Example:
        >>> import numpy as np
        >>> from igax.bases.refine import oslo_matrix
        >>> oslo_matrix(np.array([0., 0, 1, 1]), 1, np.array([0., 0, 0.5, 1, 1])).tolist()
        [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    t, tau, p = np.asarray(knots, float), np.asarray(refined, float), int(degree)
    n_old, n_new = t.size - p - 1, tau.size - p - 1
    i = np.arange(n_new)
    mu = np.searchsorted(t, tau[:n_new], side="right") - 1  # t[mu] <= tau_i < t[mu+1]
    b = [np.ones(n_new)]  # b[r]: coefficient of B_(mu-k+r), degree k, after step k
    for k in range(1, p + 1):
        x = tau[i + k]
        new = [np.zeros(n_new) for _ in range(k + 1)]
        for r in range(k):
            m = mu - k + 1 + r
            w = (x - t[m]) / (t[m + k] - t[m])
            new[r] += (1.0 - w) * b[r]
            new[r + 1] += w * b[r]
        b = new
    T = np.zeros((n_new, n_old))
    cols = mu[:, None] - p + np.arange(p + 1)  # (n_new, p+1)
    T[i[:, None], cols] = np.stack(b, axis=1)
    return T


def elevate_knots(knots, degree: int, times: int = 1) -> np.ndarray:
    """Knot vector of the degree-elevated space: every distinct knot gains ``times`` in multiplicity.

    Example:
        >>> from igax.bases.refine import elevate_knots
        >>> elevate_knots([0, 0, 1, 1], 1).tolist()
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    """
    p = validate_degree(degree)
    t = validate_knots(knots, p)
    r = validate_degree(times, name="times")
    values, counts = np.unique(t, return_counts=True)
    return np.repeat(values, counts + r)


def degree_elevation_matrix(knots, degree: int, times: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Refinement matrix for raising the degree by ``times`` while keeping the continuity at every knot.

    Arguments:
        knots: open knot vector.
        degree: current degree ``p``.
        times: how much to raise the degree (non-negative int).

    Returns:
        ``(E, elevated_knots)`` with ``E`` of shape ``(n_new, n_old)`` (dense; meant for the coarse knot
        vectors of a geometry -- :meth:`NURBSPatch.refine` elevates before it inserts knots, which keeps this
        cheap).

    Example:
        >>> import numpy as np
        >>> from igax.bases import degree_elevation_matrix
        >>> E, t = degree_elevation_matrix([0, 0, 1, 1], 1)
        >>> np.round(E, 12).tolist()
        [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    p = validate_degree(degree)
    t = validate_knots(knots, p)
    r = validate_degree(times, name="times")
    if r == 0:
        return np.eye(t.size - p - 1), t
    if p == 0 and unique_knots(t).size > 2:
        raise ValueError(
            "degree 0 splines with interior knots are discontinuous and cannot be elevated into a C0 space; "
            "start from degree >= 1 (e.g. build the geometry with degree=1)."
        )
    q = p + r
    tn = elevate_knots(t, p, r)
    g = greville(tn, q)
    B_new = design_matrix(tn, q, g)[0]  # (n_new, n_new)
    B_old = design_matrix(t, p, g)[0]  # (n_new, n_old)
    # B_new is banded (bandwidth <= q at the Greville points): a banded LU keeps this O(n q^2) per column.
    ab = np.zeros((2 * q + 1, B_new.shape[0]))
    rows, cols = np.nonzero(B_new)
    if np.any(np.abs(rows - cols) > q):  # pragma: no cover - Greville collocation matrices are banded
        raise RuntimeError("internal error: collocation matrix is not banded.")
    ab[q + rows - cols, cols] = B_new[rows, cols]
    E = solve_banded((q, q), ab, B_old)
    E += solve_banded((q, q), ab, B_old - sp.csr_matrix(B_new) @ E)  # one step of iterative refinement
    E[np.abs(E) < 1e-15] = 0.0  # exact zeros outside the band
    return E, tn


def uniform_refinement_knots(knots, n_elements: int) -> np.ndarray:
    """Knots to insert so that the knot vector has ``n_elements`` elements, as uniform as possible.

    Each existing element is split into equal parts; the number of parts is proportional to its length
    (largest remainder), at least one. When ``n_elements`` is a multiple of the current count on a uniform
    knot vector the result is the uniform refinement.

    Arguments:
        knots: a knot vector.
        n_elements: the wanted number of elements (>= the current number).

    Returns:
        sorted array of new knot values (possibly empty).

    Example:
        >>> from igax.bases import uniform_refinement_knots
        >>> uniform_refinement_knots([0, 0, 1, 1], 4).tolist()
        [0.25, 0.5, 0.75]
    """
    u = unique_knots(knots)
    current = u.size - 1
    if isinstance(n_elements, bool) or not isinstance(n_elements, numbers.Integral) or n_elements < current:
        raise ValueError(
            f"elements must be an integer >= the current number of elements ({current}) in that direction, "
            "got "
            f"{n_elements!r}; refinement never coarsens. Write e.g. elements={max(current, 1) * 2}."
        )
    lengths = np.diff(u)
    share = lengths / lengths.sum() * n_elements
    parts = np.maximum(np.floor(share).astype(int), 1)
    while parts.sum() < n_elements:  # give the rest to the elements with the largest remainder per part
        parts[int(np.argmax(lengths / parts - lengths / (parts + 1)))] += 1
    while parts.sum() > n_elements:
        candidates = np.where(parts > 1, lengths / (parts - 1), np.inf)
        parts[int(np.argmin(candidates))] -= 1
    new = [np.linspace(a, b, m + 1)[1:-1] for a, b, m in zip(u[:-1], u[1:], parts, strict=False)]
    return np.concatenate(new) if new else np.zeros(0)
