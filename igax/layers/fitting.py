"""Differentiable least-squares fitting and L2 projection onto B-spline spaces (1D and tensor products).

* :func:`fit`: scattered data ``(x_j, y_j)`` with optional weights and a smoothing penalty
  ``smoothing * integral |D^q f|^2`` (q = ``penalty_order``; for several dimensions the rotation-invariant sum
  over all q-th partial derivatives with multinomial weights, e.g. thin plate ``f_xx^2 + 2 f_xy^2 +
  f_yy^2``).
  Differentiable in the values ``y``, the sites ``x``, the weights and the smoothing parameter.
* :func:`fit_grid`: data on a tensor grid; the normal matrix is a Kronecker product of 1D band matrices, so
  the fit is one banded solve per direction.
* :func:`spline_project`: L2 projection of a function (Gauss quadrature on every knot span, then
  :func:`fit_grid`); once ``project``, the name of :func:`igax.fem.project` (onto a function space).

The normal equations are never solved densely. In 1D they are a symmetric band matrix of half-bandwidth ``p``,
solved by a banded Cholesky factorisation whose adjoint reuses the factor
(:func:`igax.layers._banded.spd_banded_solve`). In 2D/3D the normal matrix of scattered data is sparse with
the
tensor band pattern (known from the knots alone, so the sites may be traced); it is assembled by one scatter
into an offset storage and solved by :func:`igax.solvers.solve` (implicit adjoint).
"""

from __future__ import annotations

import itertools
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from igax.bases._checks import is_concrete, runtime_check
from igax.bases.bspline import basis_functions
from igax.bases.knots import num_basis, unique_knots, validate_degree, validate_knots
from igax.layers._banded import spd_banded_solve
from igax.solvers import SparseMatrix, solve
from igax.solvers.sparse import CSRPattern

__all__ = ["fit", "fit_grid", "spline_project"]


def _float_dtype(*arrays):
    dt = jnp.result_type(*arrays)
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(float)


# ----------------------------------------------------------------------------------------------------
# 1D pieces (NumPy for anything that depends on the knots only)
# ----------------------------------------------------------------------------------------------------


def _gauss_on_spans(t, nq):
    """Gauss points and weights on every non-empty knot span, NumPy (nspan * nq,)."""
    g, w = np.polynomial.legendre.leggauss(nq)
    br = unique_knots(t)
    a, b = br[:-1, None], br[1:, None]
    pts = 0.5 * (a + b) + 0.5 * (b - a) * g[None, :]
    wts = 0.5 * (b - a) * w[None, :]
    return pts.ravel(), wts.ravel()


def _full_band_gram(t, p, order):
    """``K[i, o + p] = integral N_i^(order) N_(i+o)^(order)`` for ``o = -p..p``; NumPy (n, 2p+1)."""
    n = num_basis(t, p)
    xq, wq = _gauss_on_spans(t, p + 1)
    first, ders = basis_functions(np.asarray(t), p, xq, nderiv=order)
    D = ders[order]  # (nq_total, p+1)
    K = np.zeros((n, 2 * p + 1))
    for a in range(p + 1):
        for b in range(p + 1):
            np.add.at(K, (first + a, b - a + p), wq * D[:, a] * D[:, b])
    return K


def _lower_band(full, p):
    """Lower band storage ``band[i, k] = A[i, i-k]`` from full band ``K[i, o + p]``."""
    n = full.shape[0]
    band = np.zeros((n, p + 1))
    for k in range(p + 1):
        band[k:, k] = full[k:, p - k]
    return band


def _schoenberg_whitney(t, p, x, name):
    """Raise unless the design matrix at the (concrete) sites x has full column rank."""
    xs = np.unique(np.asarray(x, dtype=np.float64))
    n = num_basis(t, p)
    first, ders = basis_functions(np.asarray(t), p, xs)
    nz = ders[0] > 0  # (nsites, p+1)
    j = 0
    for i in range(n):
        # smallest unused site at which N_i is non-zero (supports are intervals, sites are sorted)
        while j < xs.shape[0] and not (first[j] <= i <= first[j] + p and nz[j, i - first[j]]):
            if first[j] > i:
                break
            j += 1
        if j >= xs.shape[0] or first[j] > i:
            lo, hi = t[i], t[i + p + 1]
            raise ValueError(
                f"{name} leave basis function {i} (support [{lo}, {hi}]) without a data site of its own: "
                "the least-squares problem has no unique solution (Schoenberg-Whitney condition). Use fewer "
                "knots where data are sparse, add data, or pass smoothing > 0."
            )
        j += 1


# ----------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------


def _check_common(y, weights, smoothing, penalty_order, degrees, m, penalised):
    if jnp.ndim(y) < 1 or jnp.shape(y)[0] != m:
        raise ValueError(
            f"y must have the data points along its first axis: shape ({m}, ...), got {jnp.shape(y)}."
        )
    if weights is not None:
        if jnp.shape(weights) != (m,):
            raise ValueError(
                f"weights must have shape ({m},) (one per data point), got {jnp.shape(weights)}."
            )
        if is_concrete(weights):
            w = np.asarray(weights)
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError("weights must be finite and non-negative.")
    if is_concrete(y) and not np.all(np.isfinite(np.asarray(y))):
        raise ValueError("y contains NaN or infinity; values must be finite.")
    if is_concrete(smoothing):
        s = float(np.asarray(smoothing))
        if not np.isfinite(s) or s < 0:
            raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing!r}.")
    if penalised and (
        not isinstance(penalty_order, (int, np.integer)) or penalty_order < 1 or penalty_order > min(degrees)
    ):
        raise ValueError(
            f"penalty_order must be an integer in [1, degree] = [1, {min(degrees)}] (the penalised "
            f"derivative must not vanish on the space), got {penalty_order!r}."
        )


def _normalise_space(knots, degree):
    """(tuple of validated NumPy knot vectors, tuple of degrees); 1D if knots is a single vector."""
    if isinstance(knots, (tuple, list)) and len(knots) and np.ndim(knots[0]) == 1:
        dim = len(knots)
        degrees = (degree,) * dim if np.ndim(degree) == 0 else tuple(degree)
        if len(degrees) != dim:
            raise ValueError(
                f"degree must be an int or a tuple of {dim} ints (one per knot vector), got {degree!r}."
            )
        ts = tuple(
            validate_knots(np.asarray(t, float), validate_degree(p), name=f"knots[{d}]")
            for d, (t, p) in enumerate(zip(knots, degrees, strict=True))
        )
        return ts, tuple(int(p) for p in degrees), False
    if np.ndim(degree) != 0:
        raise ValueError(f"degree must be an int for a single knot vector, got {degree!r}.")
    p = validate_degree(degree)
    return (validate_knots(np.asarray(knots, float), p),), (p,), True


# ----------------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------------


def _fit_1d(t, p, x, y2, w, smoothing, q):
    n = num_basis(t, p)
    first, ders = basis_functions(jnp.asarray(t, x.dtype), p, x)
    N = ders[0]  # (m, p+1)
    wN = N * w[:, None]
    # lower band of B^T W B: entry (first + a, first + b), a >= b, goes to band[first + a, a - b]
    rows, cols, vals = [], [], []
    for a in range(p + 1):
        for b in range(a + 1):
            rows.append(first + a)
            cols.append(a - b)
            vals.append(wN[:, a] * N[:, b])
    flat = jnp.concatenate([r * (p + 1) + c for r, c in zip(rows, cols, strict=True)])
    band = jax.ops.segment_sum(jnp.concatenate(vals), flat, num_segments=n * (p + 1)).reshape(n, p + 1)
    idx = (first[:, None] + jnp.arange(p + 1)[None, :]).reshape(-1)
    rhs = jax.ops.segment_sum((wN[:, :, None] * y2[:, None, :]).reshape(-1, y2.shape[1]), idx, num_segments=n)
    if smoothing is not None:
        R = _lower_band(_full_band_gram(t, p, q), p)
        band = band + smoothing * jnp.asarray(R, band.dtype)
    return spd_banded_solve(band, rhs)  # (n, r)


class _TensorPattern:
    """CSR pattern of a tensor-product band matrix and the map from offset storage to CSR slots (NumPy)."""

    def __init__(self, shape, degrees):
        self.shape = shape
        self.degrees = degrees
        N = int(np.prod(shape))
        widths = tuple(2 * p + 1 for p in degrees)
        # every (I, offset) slot of the offset storage (N, prod(widths)), valid where J = I + offset exists
        I = np.indices(shape).reshape(len(shape), -1).T  # (N, dim)
        offs = np.array(list(itertools.product(*[range(-p, p + 1) for p in degrees])))  # (nw, dim)
        J = I[:, None, :] + offs[None, :, :]  # (N, nw, dim)
        valid = np.all((J >= 0) & (J < np.array(shape)), axis=2)
        rows = np.broadcast_to(np.arange(N)[:, None], valid.shape)[valid]
        cols = np.ravel_multi_index(tuple(J[valid].T), shape)
        self.pattern, slot = CSRPattern.from_coo(rows, cols, (N, N))
        storage_pos = np.nonzero(valid.ravel())[0]
        self.gather = np.empty(self.pattern.nnz, dtype=np.int64)
        self.gather[slot] = storage_pos  # CSR value k = storage[gather[k]]
        self.widths = widths


def _fit_tensor(ts, ps, x, y2, w, smoothing, q):
    dim = len(ts)
    shape = tuple(num_basis(t, p) for t, p in zip(ts, ps, strict=True))
    N = int(np.prod(shape))
    pat = _TensorPattern(shape, ps)
    nw = int(np.prod(pat.widths))
    firsts, vals = [], []
    for d in range(dim):
        f, ders = basis_functions(jnp.asarray(ts[d], x.dtype), ps[d], x[:, d])
        firsts.append(f)
        vals.append(ders[0])
    # local tensor basis: (m, nloc) values and global row indices, nloc = prod(p + 1)
    locs = list(itertools.product(*[range(p + 1) for p in ps]))  # local multi-indices a
    Nloc = jnp.stack([math.prod(vals[d][:, a[d]] for d in range(dim)) for a in locs], axis=1)  # (m, nloc)
    Iloc = jnp.stack(
        [
            jnp.ravel_multi_index(tuple(firsts[d] + a[d] for d in range(dim)), shape, mode="clip")
            for a in locs
        ],
        axis=1,
    )  # (m, nloc)
    # offset slot of pair (a, b): flat index of (b - a + p) in the widths grid
    loc_arr = np.array(locs)
    off = loc_arr[None, :, :] - loc_arr[:, None, :] + np.array(ps)  # (nloc, nloc, dim): b - a + p
    off_flat = np.ravel_multi_index(tuple(off.reshape(-1, dim).T), pat.widths).reshape(len(locs), len(locs))
    wN = Nloc * w[:, None]
    entries = wN[:, :, None] * Nloc[:, None, :]  # (m, nloc, nloc)
    pos = Iloc[:, :, None] * nw + jnp.asarray(off_flat)[None, :, :]
    storage = jax.ops.segment_sum(entries.reshape(-1), pos.reshape(-1), num_segments=N * nw)
    if smoothing is not None:
        storage = storage + smoothing * jnp.asarray(_tensor_penalty(ts, ps, q).reshape(-1), storage.dtype)
    values = storage[jnp.asarray(pat.gather)]
    A = SparseMatrix(values, pat.pattern, symmetric=True, positive_definite=True)
    rhs = jax.ops.segment_sum(
        (wN[:, :, None] * y2[:, None, :]).reshape(-1, y2.shape[1]), Iloc.reshape(-1), num_segments=N
    )  # (N, r)
    c = jax.vmap(lambda b: solve(A, b), in_axes=1, out_axes=1)(rhs)
    return c.reshape(shape + (y2.shape[1],))


def _tensor_penalty(ts, ps, q):
    """Offset storage (n_1..n_D, w_1..w_D) of sum_{|alpha|=q} q!/alpha! prod_d K_d^(alpha_d)."""
    dim = len(ts)
    shape = tuple(num_basis(t, p) for t, p in zip(ts, ps, strict=True))
    grams = [[_full_band_gram(ts[d], ps[d], k) for k in range(q + 1)] for d in range(dim)]
    out = 0.0
    for alpha in itertools.product(range(q + 1), repeat=dim):
        if sum(alpha) != q:
            continue
        coef = math.factorial(q) / math.prod(math.factorial(a) for a in alpha)
        term = grams[0][alpha[0]]
        for d in range(1, dim):
            term = np.einsum("...,jv->...jv", term, grams[d][alpha[d]])
        # term axes: (n1, w1, n2, w2, ...) -> (n1, n2, ..., w1, w2, ...)
        perm = [2 * d for d in range(dim)] + [2 * d + 1 for d in range(dim)]
        out = out + coef * np.transpose(term, perm)
    return np.asarray(out).reshape(shape + tuple(2 * p + 1 for p in ps))


def fit(knots, degree, x, y, *, weights=None, smoothing=0.0, penalty_order: int = 2) -> jax.Array:
    """Least-squares spline fit of scattered data, optionally smoothed; differentiable in x, y and weights.

    Minimises ``sum_j w_j (f(x_j) - y_j)^2 + smoothing * integral |D^q f|^2`` over the spline space.

    Arguments:
        knots: a knot vector (1D), or a tuple of knot vectors (tensor-product space in 2D/3D).
        degree: int, or a tuple of ints (one per knot vector).
        x: sites, (m,) in 1D or (m, dim); inside the parametric domain.
        y: (m, ...) values (trailing axes are fitted independently).
        weights: (m,) non-negative data weights (default 1).
        smoothing: penalty weight ``>= 0`` (may be traced; ``0`` fits without penalty).
        penalty_order: q, the penalised derivative order, ``1 <= q <= degree`` (2: curvature / thin plate).

    Returns:
        Coefficients, (n, ...) in 1D or (n_1, ..., n_dim, ...) for tensor spaces.

    Validation: knots, degrees, shapes, penalty order always; on concrete input also finite values, sites in
    the domain and (without smoothing) the Schoenberg-Whitney condition, i.e. enough sites under every basis
    function for a unique fit. Under jit the values are checked at run time (finite values and sites, sites in
    the domain, weights and smoothing >= 0: an error from the compiled program, through the run-time
    errors as igax's solvers raise); the Schoenberg-Whitney condition is not, so a rank-deficient problem then
    yields non-finite coefficients.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.bases import open_uniform
        >>> from igax.layers.fitting import fit
        >>> t = open_uniform(3, 8)
        >>> x = jnp.linspace(0, 1, 50)
        >>> c = fit(t, 3, x, jnp.sin(6 * x), smoothing=1e-6)
        >>> c.shape
        (11,)
    """
    ts, ps, one_d = _normalise_space(knots, degree)
    dim = len(ts)
    x_arr = x if isinstance(x, jax.Array) else np.asarray(x)
    if one_d:
        if np.ndim(x_arr) != 1:
            raise ValueError(f"x must have shape (m,) for a single knot vector, got {np.shape(x_arr)}.")
    elif np.ndim(x_arr) != 2 or np.shape(x_arr)[1] != dim:
        raise ValueError(f"x must have shape (m, {dim}) for {dim} knot vectors, got {np.shape(x_arr)}.")
    m = np.shape(x_arr)[0]
    penalised = not (is_concrete(smoothing) and float(np.asarray(smoothing)) == 0.0)
    _check_common(y, weights, smoothing, penalty_order, ps, m, penalised)
    dtype = _float_dtype(x_arr, y, 1.0 if weights is None else weights)
    xj = jnp.asarray(x_arr, dtype)
    if is_concrete(x_arr):
        xn = np.asarray(x_arr, float).reshape(m, dim)
        for d in range(dim):
            lo, hi = ts[d][0], ts[d][-1]
            nm = "x" if one_d else f"x[:, {d}]"
            if not np.all(np.isfinite(xn[:, d])):
                raise ValueError(f"{nm} contains NaN or infinity; sites must be finite.")
            if xn[:, d].min() < lo or xn[:, d].max() > hi:
                raise ValueError(
                    f"{nm} must lie in the knot domain [{lo}, {hi}], "
                    f"got [{xn[:, d].min()}, {xn[:, d].max()}]."
                )
            if not penalised:
                w_ok = (
                    np.ones(m, bool)
                    if weights is None or not is_concrete(weights)
                    else np.asarray(weights) > 0
                )
                if one_d:
                    _schoenberg_whitney(ts[d], ps[d], xn[w_ok, d], "the sites x")
        nbasis = math.prod(num_basis(t, p) for t, p in zip(ts, ps, strict=True))
        if not penalised and not one_d and m < nbasis:
            raise ValueError(
                f"{m} data points cannot determine {nbasis} "
                "coefficients; pass smoothing > 0 or use fewer knots."
            )
    y = jnp.asarray(y, dtype)
    y2 = y.reshape((m, -1))
    w = jnp.ones((m,), dtype) if weights is None else jnp.asarray(weights, dtype)
    lam = jnp.asarray(smoothing if penalised else 0.0, dtype)
    xj, y2, w, lam = _runtime_checks(xj, y2, w, lam, ts, traced=(x_arr, y, weights, smoothing))
    key = tuple(tuple(float(v) for v in t) for t in ts)
    c = _fit_compiled(xj, y2, w, lam, knots=key, degrees=ps, q=int(penalty_order), penalised=penalised)
    return c.reshape(c.shape[:dim] + y.shape[1:])


def _runtime_checks(x, y2, w, lam, ts, traced):
    """Under jit: the value checks that :func:`fit` makes at once on concrete input (finite values and sites,
    sites in the domain, weights and smoothing finite and >= 0), through the run-time errors, the
    mechanism of igax's solvers (:mod:`igax.bases._checks`). One reduction per traced input; the Schoenberg-
    Whitney condition is not checked at run time (a rank-deficient fit then gives non-finite coefficients)."""
    x_in, y_in, w_in, lam_in = traced
    hint = " (checked at run time under jit)"
    checks = []
    if not is_concrete(x_in):
        xs = x.reshape(x.shape[0], -1)
        lo = jnp.asarray([t[0] for t in ts], x.dtype)
        hi = jnp.asarray([t[-1] for t in ts], x.dtype)
        checks.append(
            (~jnp.all(jnp.isfinite(xs)), "fit: x contains NaN or infinity; sites must be finite" + hint)
        )
        checks.append(
            (~jnp.all((xs >= lo) & (xs <= hi)), "fit: x must lie in the knot domain of each direction" + hint)
        )
    if not is_concrete(y_in):
        checks.append(
            (~jnp.all(jnp.isfinite(y2)), "fit: y contains NaN or infinity; values must be finite" + hint)
        )
    if w_in is not None and not is_concrete(w_in):
        checks.append(
            (~jnp.all(jnp.isfinite(w) & (w >= 0)), "fit: weights must be finite and non-negative" + hint)
        )
    if not is_concrete(lam_in):
        checks.append(
            (~(jnp.isfinite(lam) & (lam >= 0)), "fit: smoothing must be a finite number >= 0" + hint)
        )
    return x, runtime_check(y2, checks), w, lam  # the coefficients always depend on the values


# Compiled once per space and shape (knots are static, as hashable tuples): eager calls stay fast.
@partial(jax.jit, static_argnames=("knots", "degrees", "q", "penalised"))
def _fit_compiled(x, y2, w, lam, *, knots, degrees, q, penalised):
    ts = tuple(np.asarray(t) for t in knots)
    lam = lam if penalised else None
    if len(ts) == 1:
        return _fit_1d(ts[0], degrees[0], x.reshape(-1), y2, w, lam, q)
    return _fit_tensor(ts, degrees, x, y2, w, lam, q)


# ----------------------------------------------------------------------------------------------------
# gridded data and projection
# ----------------------------------------------------------------------------------------------------


def _apply_axis_solve(t, p, xg, wg, Y, axis):
    """Replace axis ``axis`` of Y (length m) by the 1D weighted least-squares coefficients (length n)."""
    n = num_basis(t, p)
    first, ders = basis_functions(jnp.asarray(t, xg.dtype), p, xg)
    N = ders[0]  # (m, p+1)
    wN = N * wg[:, None]
    rows, vals = [], []
    for a in range(p + 1):
        for b in range(a + 1):
            rows.append((first + a) * (p + 1) + (a - b))
            vals.append(wN[:, a] * N[:, b])
    band = jax.ops.segment_sum(jnp.concatenate(vals), jnp.concatenate(rows), num_segments=n * (p + 1))
    band = band.reshape(n, p + 1)
    Ym = jnp.moveaxis(Y, axis, 0)
    rest = Ym.shape[1:]
    Y2 = Ym.reshape(Ym.shape[0], -1)
    idx = (first[:, None] + jnp.arange(p + 1)[None, :]).reshape(-1)
    rhs = jax.ops.segment_sum((wN[:, :, None] * Y2[:, None, :]).reshape(-1, Y2.shape[1]), idx, num_segments=n)
    C = spd_banded_solve(band, rhs).reshape((n,) + rest)
    return jnp.moveaxis(C, 0, axis)


def fit_grid(knots, degree, grid, values, *, weights=None) -> jax.Array:
    """Least-squares fit of data on a tensor grid: one banded solve per direction (Kronecker structure).

    Arguments:
        knots: knot vector or tuple of knot vectors.
        degree: int or tuple of ints.
        grid: (m,) sites for 1D, or a tuple of 1D site arrays ``(x_1, ..., x_dim)``.
        values: (m_1, ..., m_dim, ...) data on the grid (trailing axes fitted independently).
        weights: optional tuple of per-direction weight vectors (the data weight is their product).

    Returns:
        Coefficients (n_1, ..., n_dim, ...).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.bases import open_uniform
        >>> from igax.layers import fit_grid
        >>> t = open_uniform(2, 4)
        >>> g = jnp.linspace(0, 1, 12)
        >>> c = fit_grid((t, t), 2, (g, g), jnp.outer(g, 1 - g))
        >>> c.shape
        (6, 6)
    """
    ts, ps, one_d = _normalise_space(knots, degree)
    dim = len(ts)
    grids = (grid,) if one_d else tuple(grid)
    if len(grids) != dim:
        raise ValueError(f"grid must be a tuple of {dim} site arrays, got {len(grids)}.")
    shape = tuple(np.shape(g)[0] for g in grids)
    if jnp.shape(values)[:dim] != shape:
        raise ValueError(
            f"values must have shape {shape} + (...) to match the grid, got {jnp.shape(values)}."
        )
    if weights is not None:
        weights = (weights,) if one_d else tuple(weights)
    dtype = _float_dtype(values, *grids)
    for d in range(dim):
        g = grids[d]
        if is_concrete(g):
            gn = np.asarray(g, float)
            if gn.ndim != 1:
                raise ValueError(f"grid[{d}] must be one-dimensional, got shape {gn.shape}.")
            if weights is None:
                _schoenberg_whitney(ts[d], ps[d], gn, f"the grid sites of direction {d}")
    ws = tuple(
        jnp.ones((shape[d],), dtype) if weights is None else jnp.asarray(weights[d], dtype)
        for d in range(dim)
    )
    key = tuple(tuple(float(v) for v in t) for t in ts)
    gs = tuple(jnp.asarray(g, dtype) for g in grids)
    return _fit_grid_compiled(gs, ws, jnp.asarray(values, dtype), knots=key, degrees=ps)


@partial(jax.jit, static_argnames=("knots", "degrees"))
def _fit_grid_compiled(grids, weights, Y, *, knots, degrees):
    for d in range(len(knots)):
        Y = _apply_axis_solve(np.asarray(knots[d]), degrees[d], grids[d], weights[d], Y, d)
    return Y


def spline_project(knots, degree, f, *, n_quad: int | None = None) -> jax.Array:
    """L2 projection of a function onto a spline space (Gauss quadrature on every knot span).

    Arguments:
        knots: knot vector or tuple of knot vectors.
        degree: int or tuple of ints.
        f: function of position, called once on all quadrature points as every function of position in igax
            is (docs/conventions.md): ``x`` has the coordinate axis first, shape ``(dim, m)`` (``x[0]`` holds
            the first coordinate of the m points; in 1D ``x`` is ``(m,)``), and ``f`` returns ``(m,)``,
            ``value_shape + (m,)`` (components first) or a scalar.
        n_quad: Gauss points per span and direction (default degree + 1; exact when f is a spline of the
            same space).

    Returns:
        Coefficients (n, ...) or (n_1, ..., n_dim, ...), value axes last. Differentiable in anything ``f``
        closes over.

    Raises:
        ValueError: when ``f`` returns another shape, e.g. a function written for points as rows
            (``x[:, 0]``), as the deprecated ``igax.bases.project`` took them.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.bases import open_uniform
        >>> from igax.layers import spline_project
        >>> c = spline_project(open_uniform(3, 6), 3, jnp.sin)
        >>> c.shape
        (9,)
        >>> t = open_uniform(1, 2)   # degree 1 reproduces x * y: coefficients = values at the Greville points
        >>> spline_project((t, t), 1, lambda x: x[0] * x[1])[1:, 1:].round(12).tolist()
        [[0.25, 0.5], [0.5, 1.0]]
    """
    return _project(knots, degree, f, n_quad, coordinates_first=True)


def _project(knots, degree, f, n_quad, *, coordinates_first: bool) -> jax.Array:
    ts, ps, one_d = _normalise_space(knots, degree)
    dim = len(ts)
    pts, wts = [], []
    for t, p in zip(ts, ps, strict=True):
        xq, wq = _gauss_on_spans(t, n_quad or p + 1)
        pts.append(xq)
        wts.append(wq)
    grid = tuple(len(p) for p in pts)
    m = math.prod(grid)
    if one_d:
        x = pts[0]
    else:
        x = np.stack(np.meshgrid(*pts, indexing="ij"), axis=0).reshape(dim, m)  # (dim, m)
        x = x if coordinates_first else x.T  # the deprecated project's points as rows (m, dim)
    vals = jnp.asarray(f(jnp.asarray(x)))
    if coordinates_first:
        if vals.ndim == 0:
            vals = jnp.broadcast_to(vals, (m,))
        elif vals.shape[-1] != m:
            raise ValueError(
                f"f returned shape {vals.shape}; with x of shape {np.shape(x)} (the coordinate axis first, "
                f"so x[0] is the first coordinate of the {m} points) it must return ({m},), value_shape + "
                f"({m},) or a scalar. A function written for points as rows (x[:, 0]) reads x[0] now."
            )
        vals = jnp.moveaxis(vals, -1, 0)  # (m, ...): value axes last, as fit_grid takes them
    vals = jnp.reshape(vals, grid + jnp.shape(vals)[1:])
    return fit_grid(
        ts[0] if one_d else ts,
        ps[0] if one_d else ps,
        pts[0] if one_d else tuple(pts),
        vals,
        weights=wts[0] if one_d else tuple(wts),
    )


def _project_rows(knots, degree, f, *, n_quad: int | None = None) -> jax.Array:
    """The deprecated ``igax.bases.project``: ``f`` takes the points as rows, ``(m, dim)``, and returns
    ``(m, ...)``. Kept as it was, so that scripts written for it compute what they computed."""
    return _project(knots, degree, f, n_quad, coordinates_first=False)
