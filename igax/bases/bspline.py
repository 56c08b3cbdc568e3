"""B-spline basis functions of any degree, values and derivatives, on NumPy or JAX input.

The evaluation follows the classic triangular recurrence (Cox-de Boor in the form of Piegl & Tiller, "The
NURBS Book", algorithms A2.2/A2.3): for a point in the non-empty span ``[t_s, t_(s+1))`` only ``degree + 1``
functions, ``N_(s-p), ..., N_s``, are non-zero. Every denominator of that recurrence is a knot difference that
contains the span itself, hence strictly positive, so there is no 0/0 anywhere -- neither in the values nor in
reverse-mode gradients -- at repeated knots or at the domain ends.

The span search is ``searchsorted(knots, x, side="right") - 1`` clipped to ``[degree, n - 1]``: jit- and
vmap-safe, it puts a point on a repeated knot into the next non-empty span and the right end
``x == knots[-1]`` into the last non-empty span, so the basis is right-continuous inside the domain and
left-continuous at its end.

With NumPy (or list) input everything runs in NumPy float64 (exact tables when a space is built, whatever
JAX's precision setting); with JAX input it is traced and differentiable in ``x``, ``knots`` and coefficients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from igax.bases.knots import _is_tracer, validate_degree, validate_knots

__all__ = ["find_span", "basis_functions", "evaluate", "design_matrix"]


def _namespace(*arrays):
    """NumPy when every input is concrete non-JAX data, jax.numpy otherwise."""
    if any(isinstance(a, jax.Array) or _is_tracer(a) for a in arrays):
        return jnp
    return np


def _asarray(xp, a):
    """``xp.asarray``, but NumPy data goes to JAX by ``device_put`` (jnp.asarray compiles once per shape)."""
    if xp is np or isinstance(a, jax.Array) or _is_tracer(a):
        return xp.asarray(a)
    return jax.device_put(np.asarray(a))


def _check_knots(knots, degree, name="knots"):
    """Validate concrete knots (full rules); traced knots only get a shape check."""
    if isinstance(knots, jax.Array) and not _is_tracer(knots):
        validate_knots(np.asarray(knots), degree, name=name)
        return knots
    if _is_tracer(knots):
        if knots.ndim != 1 or knots.shape[0] < 2 * (degree + 1):
            raise ValueError(
                f"{name} must be one-dimensional with at least 2 * (degree + 1) = {2 * (degree + 1)} "
                f"entries, got shape {knots.shape}."
            )
        return knots
    return validate_knots(knots, degree, name=name)


def _check_points(x, t, xp, name="x"):
    if xp is np:
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a number or an array of numbers, got {x!r}.") from err
    else:
        x = _asarray(jnp, x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
    if not _is_tracer(x) and not _is_tracer(t):
        xv, tv = np.asarray(x), np.asarray(t)
        if not np.all(np.isfinite(xv)):
            raise ValueError(f"{name} must be finite; got NaN or inf.")
        lo, hi = tv[0], tv[-1]
        tol = 1e-12 * (hi - lo)
        if xv.size and (xv.min() < lo - tol or xv.max() > hi + tol):
            raise ValueError(
                f"{name} must lie in the parametric domain [{lo}, {hi}] of the knot vector; got values in "
                f"[{xv.min()}, {xv.max()}]. Map your points into the domain first (e.g. clip them)."
            )
    return x


def find_span(knots, degree: int, x):
    """Index ``s`` of the non-empty knot span ``[knots[s], knots[s+1])`` containing each point.

    Points on the last knot belong to the last non-empty span, points on a repeated interior knot to the span
    that starts there. Works under jit and vmap (``searchsorted``).

    Arguments:
        knots: open knot vector, shape ``(nknots,)``.
        degree: polynomial degree.
        x: points, any shape.

    Returns:
        int array of the shape of ``x`` with values in ``[degree, nknots - degree - 2]``.

    Example:
        >>> from igax.bases.bspline import find_span
        >>> find_span([0, 0, 0, 0.5, 1, 1, 1], 2, [0.0, 0.5, 1.0]).tolist()
        [2, 3, 3]
    """
    p = validate_degree(degree)
    xp = _namespace(knots, x)
    t = _asarray(xp, knots)
    n = t.shape[0] - p - 1
    kw = {} if xp is np else {"method": "scan_unrolled"}  # unrolled binary search: faster on CPU
    s = xp.searchsorted(t, _asarray(xp, x), side="right", **kw) - 1
    return xp.clip(s, p, n - 1)


def basis_functions(knots, degree: int, x, nderiv: int = 0):
    """Non-zero B-spline basis functions and their derivatives at points.

    Arguments:
        knots: open knot vector, shape ``(nknots,)`` (NumPy, list, or JAX array; a JAX array may be traced,
            then gradients w.r.t. knots are available).
        degree: polynomial degree ``p`` (static int).
        x: evaluation points in ``[knots[0], knots[-1]]``, any shape ``S`` (usually ``(npts,)``). Concrete
            points outside the domain raise; traced points cannot be checked, and outside the domain they get
            the end polynomial pieces extended.
        nderiv: highest derivative order (static int, >= 0). Orders above ``p`` are zero.

    Returns:
        ``(first, ders)``: ``first`` int array of shape ``S``, the index of the first non-zero basis function
        at each point; ``ders`` of shape ``(nderiv + 1, *S, p + 1)`` with ``ders[k, j, a] = d^k N_(first[j] +
        a) / dx^k (x[j])``.

    Example:
        >>> from igax.bases.bspline import basis_functions
        >>> first, ders = basis_functions([0, 0, 0, 1, 1, 1], 2, [0.5], nderiv=1)
        >>> ders[0].tolist(), ders[1].tolist()
        ([[0.25, 0.5, 0.25]], [[-1.0, 0.0, 1.0]])
    """
    p = validate_degree(degree)
    nd = validate_degree(nderiv, name="nderiv")
    xp = _namespace(knots, x)
    t = _check_knots(knots, p)
    t = _asarray(xp, t)
    if xp is jnp and not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    x = _check_points(x, t, xp)
    shape = x.shape
    x = x.reshape(-1)
    span = find_span(t, p, x)  # (npts,)
    first = span - p

    # left[j] = x - t[s+1-j], right[j] = t[s+j] - x for j = 1..p (index 0 unused, as in the textbook).
    left = [None] + [x - t[span + 1 - j] for j in range(1, p + 1)]
    right = [None] + [t[span + j] - x for j in range(1, p + 1)]

    # ndu[j][r] (r < j): knot differences t[s+r+1] - t[s+1-j+r] >= t[s+1] - t[s] > 0;
    # ndu[r][j] (r <= j): basis functions of degree j.
    one = xp.ones_like(x)
    ndu = [[None] * (p + 1) for _ in range(p + 1)]
    ndu[0][0] = one
    for j in range(1, p + 1):
        saved = xp.zeros_like(x)
        for r in range(j):
            ndu[j][r] = right[r + 1] + left[j - r]
            temp = ndu[r][j - 1] / ndu[j][r]
            ndu[r][j] = saved + right[r + 1] * temp
            saved = left[j - r] * temp
        ndu[j][j] = saved

    ders = [[ndu[a][p] for a in range(p + 1)]]
    kmax = min(nd, p)
    if kmax > 0:
        higher = [[None] * (p + 1) for _ in range(kmax)]
        for r in range(p + 1):
            a_prev = [one]  # a[k-1][j]: coefficients of the derivative recurrence
            for k in range(1, kmax + 1):
                a_cur = [None] * (k + 1)
                d = xp.zeros_like(x)
                rk, pk = r - k, p - k
                if r >= k:
                    a_cur[0] = a_prev[0] / ndu[pk + 1][rk]
                    d = a_cur[0] * ndu[rk][pk]
                j1 = 1 if rk >= -1 else -rk
                j2 = k - 1 if r - 1 <= pk else p - r
                for j in range(j1, j2 + 1):
                    a_cur[j] = (a_prev[j] - a_prev[j - 1]) / ndu[pk + 1][rk + j]
                    d = d + a_cur[j] * ndu[rk + j][pk]
                if r <= pk:
                    a_cur[k] = -a_prev[k - 1] / ndu[pk + 1][r]
                    d = d + a_cur[k] * ndu[r][pk]
                higher[k - 1][r] = d
                a_prev = a_cur
        factor = p
        for k in range(1, kmax + 1):
            ders.append([factor * higher[k - 1][r] for r in range(p + 1)])
            factor *= p - k
    zero = xp.zeros_like(x)
    for _ in range(kmax + 1, nd + 1):
        ders.append([zero] * (p + 1))

    out = xp.stack([xp.stack(row, axis=-1) for row in ders], axis=0)  # (nderiv+1, npts, p+1)
    return first.reshape(shape), out.reshape((nd + 1, *shape, p + 1))


def evaluate(knots, degree: int, coeffs, x, nderiv: int = 0):
    """Evaluate the spline ``sum_i coeffs[i] N_i(x)`` and its derivatives.

    Arguments:
        knots: open knot vector ``(nknots,)``.
        degree: polynomial degree.
        coeffs: coefficients of shape ``(n, *C)`` with ``n = nknots - degree - 1``.
        x: points, shape ``S``.
        nderiv: highest derivative order.

    Returns:
        array ``(nderiv + 1, *S, *C)``: entry ``k`` is the k-th derivative.

    Example:
        >>> import numpy as np
        >>> from igax.bases.bspline import evaluate
        >>> float(evaluate([0, 0, 1, 1], 1, np.array([1.0, 3.0]), 0.5)[0])
        2.0
    """
    p = validate_degree(degree)
    xp = _namespace(knots, x, coeffs)
    c = _asarray(xp, coeffs)
    n = int(np.shape(knots)[0]) - p - 1
    if c.ndim < 1 or c.shape[0] != n:
        raise ValueError(
            f"coeffs must have shape (n, ...) with n = len(knots) - degree - 1 = {n} basis functions, "
            f"got shape {c.shape}."
        )
    first, ders = basis_functions(knots, p, x, nderiv)
    idx = first[..., None] + xp.arange(p + 1)  # (*S, p+1)
    local = c[idx]  # (*S, p+1, *C)
    return xp.einsum("k...a,...ac->k...c", ders, local.reshape(*idx.shape, -1)).reshape(
        (ders.shape[0], *first.shape, *c.shape[1:])
    )


def design_matrix(knots, degree: int, x, nderiv: int = 0):
    """Dense design matrices ``D[k, j, i] = d^k N_i / dx^k (x[j])``.

    Arguments:
        knots: open knot vector ``(nknots,)``.
        degree: polynomial degree.
        x: points ``(npts,)``.
        nderiv: highest derivative order.

    Returns:
        array ``(nderiv + 1, npts, n)``. Dense: mind memory for many points (use :func:`basis_functions`
        then).

    Example:
        >>> from igax.bases.bspline import design_matrix
        >>> design_matrix([0, 0, 1, 1], 1, [0.25])[0].tolist()
        [[0.75, 0.25]]
    """
    p = validate_degree(degree)
    xp = _namespace(knots, x)
    n = int(np.shape(knots)[0]) - p - 1
    first, ders = basis_functions(knots, p, x, nderiv)
    first = first.reshape(-1)
    ders = ders.reshape(ders.shape[0], -1, p + 1)
    npts = first.shape[0]
    cols = first[:, None] + xp.arange(p + 1)  # (npts, p+1)
    rows = xp.broadcast_to(xp.arange(npts)[:, None], cols.shape)
    if xp is np:
        out = np.zeros((ders.shape[0], npts, n), dtype=ders.dtype)
        out[:, rows, cols] = ders
        return out
    return jnp.zeros((ders.shape[0], npts, n), dtype=ders.dtype).at[:, rows, cols].set(ders)
