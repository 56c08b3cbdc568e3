"""Knot vectors: validation with teaching errors, open uniform constructors, elements and continuity.

igax uses *open* knot vectors: the first and the last knot are repeated ``degree + 1`` times, so the basis
interpolates the end control points and the parametric domain is ``[knots[0], knots[-1]]``. Interior knots may
be repeated at most ``degree`` times (at most once for degree 0), which keeps every basis at least C0 inside a
patch: a knot of multiplicity ``m`` lowers the continuity there to ``C^(degree - m)``.

Everything in this module is NumPy: knot vectors are static data, computed once when a space is built.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "validate_degree",
    "validate_knots",
    "open_uniform",
    "open_knots",
    "unique_knots",
    "multiplicities",
    "continuity",
    "num_basis",
    "elements",
    "n_elements",
    "greville",
]


def validate_degree(degree, *, name: str = "degree") -> int:
    """Check that ``degree`` is a non-negative Python/NumPy integer and return it as ``int``.

    Arguments:
        degree: the polynomial degree.
        name: the argument name used in error messages.

    Returns:
        ``int(degree)``.

    Example:
        >>> from igax.bases.knots import validate_degree
        >>> validate_degree(2)
        2
    """
    if isinstance(degree, bool) or not isinstance(degree, numbers.Integral):
        raise TypeError(
            f"{name} must be a non-negative integer (a static Python int, e.g. {name}=2), "
            f"got {degree!r} of type {type(degree).__name__}."
        )
    if degree < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {degree}. Write e.g. {name}=2.")
    return int(degree)


def validate_knots(knots, degree: int, *, name: str = "knots") -> np.ndarray:
    """Check that ``knots`` is a valid open knot vector for ``degree`` and return it as a float64 array.

    Rules: one-dimensional, finite, non-decreasing; at least ``2 * (degree + 1)`` entries; first and last knot
    repeated exactly ``degree + 1`` times (open knot vector); a non-empty domain; interior knots repeated at
    most ``max(degree, 1)`` times (the basis stays C0 inside a patch).

    Arguments:
        knots: sequence of floats.
        degree: the polynomial degree (non-negative int).
        name: the argument name used in error messages.

    Returns:
        The knots as a read-only-safe float64 copy, shape ``(nknots,)``.

    Example:
        >>> from igax.bases import validate_knots
        >>> validate_knots([0, 0, 0, 0.5, 1, 1, 1], 2)
        array([0. , 0. , 0. , 0.5, 1. , 1. , 1. ])
    """
    p = validate_degree(degree)
    if _is_tracer(knots):
        raise TypeError(
            f"{name} must be concrete (a list or NumPy array) to be validated, got a traced JAX array. "
            "Validate the knots outside jit, or pass them as a static argument."
        )
    try:
        t = np.array(knots, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a one-dimensional sequence of numbers, got {knots!r}.") from err
    if t.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got an array of shape {t.shape}.")
    example = f"e.g. {name}=igax.bases.open_uniform(degree={p}, n_elements=4)"
    if t.size < 2 * (p + 1):
        raise ValueError(
            f"{name} has {t.size} entries, but degree {p} needs at least 2 * (degree + 1) = {2 * (p + 1)} "
            f"(the end knots repeated degree + 1 times), {example}."
        )
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{name} must be finite, got {t.tolist()}.")
    if np.any(np.diff(t) < 0):
        i = int(np.argmax(np.diff(t) < 0))
        raise ValueError(
            f"{name} must be non-decreasing, but {name}[{i}] = {t[i]} > {name}[{i + 1}] = {t[i + 1]}. "
            f"Sort the knots, e.g. {name}=sorted({name})."
        )
    if t[0] == t[-1]:
        raise ValueError(
            f"{name} spans an empty domain [{t[0]}, {t[-1]}]; the last knot must exceed the first."
        )
    if np.any(t[: p + 1] != t[0]) or (t.size > p + 1 and t[p + 1] == t[0]):
        m = int(np.sum(t == t[0]))
        raise ValueError(
            f"{name} must be an open knot vector: the first knot must be repeated exactly degree + 1 = "
            f"{p + 1} times, but {t[0]} appears {m} times. {example[0].upper() + example[1:]}."
        )
    if np.any(t[-(p + 1) :] != t[-1]) or t[-(p + 2)] == t[-1]:
        m = int(np.sum(t == t[-1]))
        raise ValueError(
            f"{name} must be an open knot vector: the last knot must be repeated exactly degree + 1 = "
            f"{p + 1} times, but {t[-1]} appears {m} times. {example[0].upper() + example[1:]}."
        )
    values, counts = np.unique(t, return_counts=True)
    limit = max(p, 1)
    bad = counts[1:-1] > limit
    if np.any(bad):
        k = int(np.argmax(bad)) + 1
        raise ValueError(
            f"interior knot {values[k]} of {name} is repeated {counts[k]} times, but at most "
            f"{'degree = ' + str(p) if p else '1 (for degree 0)'} repeats are allowed (the basis must stay "
            "at least C0 inside a patch). Remove repeats, or split the geometry into separate patches."
        )
    return t


def open_uniform(degree: int, n_elements: int, lower: float = 0.0, upper: float = 1.0) -> np.ndarray:
    """Open uniform knot vector with ``n_elements`` equal elements on ``[lower, upper]`` (maximal continuity).

    Arguments:
        degree: polynomial degree (non-negative int).
        n_elements: number of (non-empty) elements, a positive int.
        lower, upper: the parametric domain.

    Returns:
        float64 array of ``n_elements + 2 * degree + 1`` knots.

    Example:
        >>> from igax.bases import open_uniform
        >>> open_uniform(2, 2)
        array([0. , 0. , 0. , 0.5, 1. , 1. , 1. ])
    """
    p = validate_degree(degree)
    if isinstance(n_elements, bool) or not isinstance(n_elements, numbers.Integral) or n_elements < 1:
        raise ValueError(
            f"n_elements must be a positive integer, got {n_elements!r}. Write e.g. n_elements=8."
        )
    if not (np.isfinite(lower) and np.isfinite(upper) and upper > lower):
        raise ValueError(f"lower < upper (both finite) is required, got lower={lower}, upper={upper}.")
    inner = np.linspace(lower, upper, int(n_elements) + 1)
    return np.concatenate([np.full(p, float(lower)), inner, np.full(p, float(upper))])


def open_knots(breakpoints, degree: int, multiplicity=1) -> np.ndarray:
    """Open knot vector from breakpoints: ends repeated ``degree + 1`` times, interior ones
    ``multiplicity`` times.

    Arguments:
        breakpoints: strictly increasing sequence of at least two values.
        degree: polynomial degree.
        multiplicity: int, or one int per interior breakpoint (each between 1 and ``max(degree, 1)``).

    Returns:
        The validated knot vector.

    Example:
        >>> from igax.bases import open_knots
        >>> open_knots([0, 0.5, 1], 2, multiplicity=2)
        array([0. , 0. , 0. , 0.5, 0.5, 1. , 1. , 1. ])
    """
    p = validate_degree(degree)
    b = np.asarray(breakpoints, dtype=np.float64)
    if b.ndim != 1 or b.size < 2 or np.any(np.diff(b) <= 0):
        raise ValueError(
            f"breakpoints must be a strictly increasing sequence of >= 2 values, got {b.tolist()}."
        )
    m = np.broadcast_to(np.asarray(multiplicity, dtype=int), (b.size - 2,))
    parts = (
        [np.full(p + 1, b[0])]
        + [np.full(int(k), v) for v, k in zip(b[1:-1], m, strict=False)]
        + [np.full(p + 1, b[-1])]
    )
    return validate_knots(np.concatenate(parts), p)


def unique_knots(knots) -> np.ndarray:
    """The distinct knot values (the element breakpoints), sorted.

    Example:
        >>> from igax.bases import unique_knots
        >>> unique_knots([0, 0, 0.5, 0.5, 1, 1])
        array([0. , 0.5, 1. ])
    """
    return np.unique(np.asarray(knots, dtype=np.float64))


def multiplicities(knots) -> np.ndarray:
    """How often each distinct knot (see :func:`unique_knots`) is repeated, int array.

    Example:
        >>> from igax.bases import multiplicities
        >>> multiplicities([0, 0, 0.5, 0.5, 1, 1])
        array([2, 2, 2])
    """
    return np.unique(np.asarray(knots, dtype=np.float64), return_counts=True)[1]


def continuity(knots, degree: int) -> np.ndarray:
    """Continuity order ``degree - multiplicity`` of the basis at each *interior* breakpoint (int array).

    ``-1`` means discontinuous. The ends of an open knot vector are not included.

    Example:
        >>> from igax.bases import continuity
        >>> continuity([0, 0, 0, 0.5, 0.5, 0.7, 1, 1, 1], 2)
        array([0, 1])
    """
    p = validate_degree(degree)
    return p - multiplicities(knots)[1:-1]


def num_basis(knots, degree: int) -> int:
    """Number of B-spline basis functions, ``len(knots) - degree - 1``.

    Example:
        >>> from igax.bases import num_basis, open_uniform
        >>> num_basis(open_uniform(3, 4), 3)
        7
    """
    return int(np.shape(knots)[0]) - validate_degree(degree) - 1


def elements(knots) -> np.ndarray:
    """The non-empty knot spans as an array of shape ``(n_elements, 2)`` of ``[lower, upper]`` bounds.

    Example:
        >>> from igax.bases import elements
        >>> elements([0, 0, 0.5, 1, 1]).tolist()
        [[0.0, 0.5], [0.5, 1.0]]
    """
    u = unique_knots(knots)
    return np.stack([u[:-1], u[1:]], axis=1)


def n_elements(knots) -> int:
    """Number of non-empty knot spans.

    Example:
        >>> from igax.bases import n_elements, open_uniform
        >>> n_elements(open_uniform(2, 5))
        5
    """
    return int(unique_knots(knots).size - 1)


def greville(knots, degree: int) -> np.ndarray:
    """Greville abscissae: the knot averages ``mean(knots[i+1 : i+degree+1])``, one per basis function.

    For degree 0 the element midpoints are returned. These points are unisolvent for the spline space
    (Schoenberg-Whitney), which makes them good collocation points.

    Example:
        >>> from igax.bases import greville, open_uniform
        >>> greville(open_uniform(2, 2), 2)
        array([0.  , 0.25, 0.75, 1.  ])
    """
    p = validate_degree(degree)
    t = np.asarray(knots, dtype=np.float64)
    n = t.size - p - 1
    if p == 0:
        return 0.5 * (t[:-1] + t[1:])[:n]
    idx = np.arange(n)[:, None] + np.arange(1, p + 1)[None, :]
    return t[idx].mean(axis=1)


def _is_tracer(x) -> bool:
    try:
        import jax

        return isinstance(x, jax.core.Tracer)
    except Exception:  # pragma: no cover - jax is a dependency; this is only a guard
        return False
