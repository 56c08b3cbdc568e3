"""Free-knot piecewise-polynomial approximation as a differentiable layer.

:func:`free_knot_fit` returns the best ``k``-segment, degree-``d`` least-squares fit of a sequence ``y``
(sampled at equispaced positions): the breakpoints are chosen by dynamic programming, and on each segment the
values are replaced by their least-squares polynomial. The breakpoints are piecewise constant in ``y``, so
almost everywhere the Jacobian of the output is block diagonal: on each segment it is the local least-squares
hat matrix ``H = Phi (Phi^T Phi)^{-1} Phi^T`` ("weak Jacobian", as in Cho et al., *Differentiable Spline
Approximations*, NeurIPS 2021). The custom VJP applies it in ``O(n (d+1))`` with segment sums, never forming
it.

The breakpoint search (:func:`segment`):

* exact (every position is a candidate): dynamic programming over a table of segment costs, each computed in
  O(1) from prefix sums of moments, ``O(n^2)`` memory and ``O(k n^2)`` time; the default up to n = 2048;
* with ``candidates=c`` breakpoints are first chosen among ``c + 1`` equispaced candidate positions
  (``O(k c^2)``), then each breakpoint is moved to its best position within one candidate spacing, neighbours
  fixed, in alternating sweeps (``O(k n / c)`` per sweep). This is a heuristic: it is exact when the optimal
  breakpoints are candidates, and never worse than the candidate-restricted optimum.

The segment costs come from global prefix sums, which lose relative accuracy for very short segments of a long
sequence (and in float32); this can only change which of two nearly equal segmentations is chosen. The fit on
the chosen segments is computed afresh in local, well-conditioned (Legendre) coordinates.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from igax.bases._checks import is_concrete, runtime_check

__all__ = ["free_knot_fit", "segment", "segment_projection"]

_EXACT_LIMIT = 2048


def _cumsum0(a):
    """Prefix sums with a leading zero along axis 0 (parallel prefix: jnp.cumsum is O(n^2) on CPU)."""
    s = jax.lax.associative_scan(jnp.add, a, axis=0)
    return jnp.concatenate([jnp.zeros((1,) + a.shape[1:], a.dtype), s], axis=0)


def _legendre(u, degree):
    """(..., degree+1) Legendre polynomials P_0..P_d at u in [-1, 1]."""
    P = [jnp.ones_like(u)]
    if degree >= 1:
        P.append(u)
    for a in range(1, degree):
        P.append(((2 * a + 1) * u * P[a] - a * P[a - 1]) / (a + 1))
    return jnp.stack(P, axis=-1)


def _chol_residual(G, T, Y, d1):
    """``Y - T^T G^{-1} T`` for batched (…, d1, d1) SPD G given as a dict of entries; elementwise Cholesky."""
    L = {}
    ok = jnp.ones_like(Y, dtype=bool)
    for i in range(d1):
        for j in range(i + 1):
            s = G[(i, j)]
            for k in range(j):
                s = s - L[(i, k)] * L[(j, k)]
            if i == j:
                ok = ok & (s > 0)
                L[(i, i)] = jnp.sqrt(jnp.where(s > 0, s, 1.0))
            else:
                L[(i, j)] = s / L[(j, j)]
    res = Y
    w = []
    for i in range(d1):
        s = T[i]
        for k in range(i):
            s = s - L[(i, k)] * w[k]
        w.append(s / L[(i, i)])
        res = res - w[i] * w[i]
    return jnp.where(ok, jnp.maximum(res, 0.0), jnp.inf)


class _Moments:
    """Prefix sums of the moments needed for O(1) segment costs; positions 0..n."""

    def __init__(self, y, degree):
        n = y.shape[0]
        u = jnp.linspace(-1.0, 1.0, n, dtype=y.dtype) if n > 1 else jnp.zeros((1,), y.dtype)
        phi = _legendre(u, degree)  # (n, d1)
        d1 = degree + 1
        cols = [phi[:, i] * phi[:, j] for i in range(d1) for j in range(i + 1)]
        cols += [phi[:, i] * y for i in range(d1)] + [y * y]
        self.S = _cumsum0(jnp.stack(cols, axis=1))  # (n+1, ncols)
        self.d1 = d1

    def cost(self, p, q):
        """Least-squares residual of the segment [p, q) (broadcast); inf if shorter than degree + 1."""
        D = self.S[q] - self.S[p]  # (..., ncols)
        d1 = self.d1
        G = {}
        c = 0
        for i in range(d1):
            for j in range(i + 1):
                G[(i, j)] = D[..., c]
                c += 1
        T = [D[..., c + i] for i in range(d1)]
        Y = D[..., c + d1]
        res = _chol_residual(G, T, Y, d1)
        return jnp.where(q - p >= d1, res, jnp.inf)


def _dp(C, k):
    """Min-plus dynamic programme over candidate positions 0..c (C[p, q] = cost of [p, q)); k segments.

    Returns the candidate indices of the k+1 breakpoints (first 0, last c) and the optimal total cost.
    """
    c1 = C.shape[0]
    E1 = C[0]  # (c1,) best cost of one segment ending at q

    def level(E, _):
        tot = E[:, None] + C  # (p, q)
        arg = jnp.argmin(tot, axis=0)
        return jnp.min(tot, axis=0), arg

    E, back = jax.lax.scan(level, E1, None, length=k - 1)  # back: (k-1, c1)

    def trace(q, b):
        p = b[q]
        return p, p

    if k > 1:
        _, bs = jax.lax.scan(trace, jnp.asarray(c1 - 1, jnp.int32), back.astype(jnp.int32), reverse=True)
        idx = jnp.concatenate([jnp.zeros((1,), jnp.int32), bs, jnp.full((1,), c1 - 1, jnp.int32)])
    else:
        idx = jnp.array([0, c1 - 1], jnp.int32)
    return idx, E[c1 - 1]


def _refine(mom, breaks, n, window, sweeps=2):
    """Move each inner breakpoint within +-window to its best position, neighbours fixed (alternating)."""
    k = breaks.shape[0] - 1
    offs = jnp.arange(-window, window + 1)

    def sweep(b, parity):
        inner = jnp.arange(1, k)
        prev, cur, nxt = b[inner - 1], b[inner], b[inner + 1]
        cand = jnp.clip(cur[:, None] + offs[None, :], prev[:, None] + 1, nxt[:, None] - 1)  # (k-1, 2w+1)
        tot = mom.cost(prev[:, None], cand) + mom.cost(cand, nxt[:, None])
        tot = jnp.where(jnp.isnan(tot), jnp.inf, tot)
        best = jnp.take_along_axis(cand, jnp.argmin(tot, axis=1)[:, None], axis=1)[:, 0]
        move = (inner % 2 == parity) & jnp.isfinite(jnp.min(tot, axis=1))
        return b.at[inner].set(jnp.where(move, best, cur).astype(b.dtype)), None

    if k < 2:
        return breaks
    parities = jnp.array([1, 0] * sweeps)
    b, _ = jax.lax.scan(sweep, breaks, parities)
    return b


@partial(jax.jit, static_argnames=("n_segments", "degree", "candidates"))
def segment(y: jax.Array, n_segments: int, degree: int = 1, *, candidates: int | None = None) -> jax.Array:
    """Breakpoints of the best ``n_segments``-piece degree-``degree`` least-squares fit of ``y``.

    Arguments:
        y: (n,) sequence.
        n_segments: number of pieces k; needs ``n >= k (degree + 1)``.
        degree: polynomial degree on each piece.
        candidates: number of candidate intervals for the breakpoint search (see the module docstring);
            ``None``: exact search for n <= 2048, otherwise 1024 candidates with local refinement.

    Returns:
        int32 (k+1,) increasing positions ``0 = b_0 < ... < b_k = n``; piece s covers ``y[b_s:b_{s+1}]``.
        Not differentiable (integers).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.layers import segment
        >>> segment(jnp.array([0., 0, 0, 5, 5, 5]), 2, degree=0)
        Array([0, 3, 6], dtype=int32)
    """
    y = jax.lax.stop_gradient(y)
    n = y.shape[0]
    mom = _Moments(y, degree)
    if candidates is None and n <= _EXACT_LIMIT:
        pos = jnp.arange(n + 1)
        window = 0
    else:
        c = min(int(candidates or 1024), n)
        pos = jnp.asarray(np.round(np.linspace(0, n, c + 1)).astype(np.int32))
        window = int(np.ceil(n / c))
    C = mom.cost(pos[:, None], pos[None, :])  # (c1, c1) cost of [pos_p, pos_q)
    C = jnp.where(jnp.isnan(C), jnp.inf, C)
    idx, _ = _dp(C, n_segments)
    breaks = pos[idx].astype(jnp.int32)
    if window > 0:
        breaks = _refine(mom, breaks, n, window).astype(jnp.int32)
    return breaks


def _segment_basis(breaks, n, degree, dtype):
    """Segment id (n,) and local Legendre basis (n, d1) of each position given the breakpoints."""
    k = breaks.shape[0] - 1
    counts = jnp.zeros((n + 1,), jnp.int32).at[breaks[1:-1]].add(1)
    seg = jax.lax.associative_scan(jnp.add, counts[:n])  # (n,) piece of each position
    start = breaks[seg]
    length = breaks[seg + 1] - start
    i = jnp.arange(n)
    u = (2.0 * (i - start) - (length - 1)).astype(dtype) / jnp.maximum(length - 1, 1).astype(dtype)
    return seg, _legendre(u, degree), k


def _project(y, seg, phi, k):
    """Per-segment least squares: returns fitted values (n, r) and the Gram factors (k, d1, d1)."""
    G = jax.ops.segment_sum(phi[:, :, None] * phi[:, None, :], seg, num_segments=k)  # (k, d1, d1)
    L = jnp.linalg.cholesky(G)
    b = jax.ops.segment_sum(phi[:, :, None] * y[:, None, :], seg, num_segments=k)  # (k, d1, r)
    coef = jax.scipy.linalg.cho_solve((L, True), b)  # (k, d1, r)
    return jnp.einsum("na,nar->nr", phi, coef[seg]), L


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _hat_apply(y, seg, phi, k):
    return _project(y, seg, phi, k)[0]


def _hat_fwd(y, seg, phi, k):
    out, L = _project(y, seg, phi, k)
    return out, (seg, phi, L)


def _hat_bwd(k, res, g):
    seg, phi, L = res
    # H is symmetric: the VJP is the same block projection applied to the cotangent, reusing the factors.
    b = jax.ops.segment_sum(phi[:, :, None] * g[:, None, :], seg, num_segments=k)  # (k, d1, r)
    coef = jax.scipy.linalg.cho_solve((L, True), b)
    ybar = jnp.einsum("na,nar->nr", phi, coef[seg])
    return ybar, None, None


_hat_apply.defvjp(_hat_fwd, _hat_bwd)


@partial(jax.jit, static_argnames=("degree",))
def segment_projection(y: jax.Array, breaks: jax.Array, degree: int = 1) -> jax.Array:
    """Least-squares projection of ``y`` onto piecewise polynomials with the given (fixed) breakpoints.

    Linear in ``y``; its VJP applies the block-diagonal hat matrix in O(n (degree+1)).

    Arguments:
        y: (n,) or (n, r) values at equispaced positions.
        breaks: int (k+1,) breakpoints as returned by :func:`segment`.
        degree: polynomial degree on each piece.

    Returns:
        Array shaped like ``y``.
    """
    n = y.shape[0]
    breaks = jnp.asarray(breaks, jnp.int32)
    seg, phi, k = _segment_basis(breaks, n, degree, y.dtype)
    y2 = y.reshape((n, -1))
    out = _hat_apply(y2, seg, phi, k)
    return out.reshape(y.shape)


def _validate(y, n_segments, degree, candidates):
    if not isinstance(degree, (int, np.integer)) or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree!r}.")
    if not isinstance(n_segments, (int, np.integer)) or n_segments < 1:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments!r}.")
    if candidates is not None and (not isinstance(candidates, (int, np.integer)) or candidates < n_segments):
        raise ValueError(
            f"candidates must be an integer >= n_segments ({n_segments}) or None, got {candidates!r}."
        )
    if jnp.ndim(y) not in (1, 2):
        raise ValueError(f"y must have shape (n,) or (batch, n), got {jnp.shape(y)}.")
    if not jnp.issubdtype(jnp.result_type(y), jnp.floating):
        raise TypeError(f"y must be a real floating-point array, got dtype {jnp.result_type(y)}.")
    n = jnp.shape(y)[-1]
    if n < n_segments * (degree + 1):
        raise ValueError(
            f"y has {n} samples; {n_segments} segments of degree {degree} need at least "
            f"n_segments * (degree + 1) = {n_segments * (degree + 1)}. Use fewer segments or a lower degree."
        )
    if is_concrete(y):
        if not np.all(np.isfinite(np.asarray(y))):
            raise ValueError("y contains NaN or infinity; the fit needs finite values.")
        return y
    # Under jit: the same check at run time, through the solvers' mechanism (igax.bases._checks).
    msg = "free_knot_fit: y contains NaN or infinity; the fit needs finite values (checked at run time)"
    return runtime_check(y, [(~jnp.all(jnp.isfinite(y)), msg)])


def free_knot_fit(
    y: jax.Array,
    n_segments: int,
    degree: int = 1,
    *,
    candidates: int | None = None,
    return_breaks: bool = False,
):
    """Best ``n_segments``-piece polynomial least-squares fit of a sequence, differentiable (weak Jacobian).

    Arguments:
        y: (n,) sequence sampled at equispaced positions, or (batch, n) for a batch of sequences.
        n_segments: number of pieces k (``n >= k (degree + 1)``).
        degree: polynomial degree d of each piece (pieces are independent: the fit may jump at breakpoints).
        candidates: breakpoint search resolution (see :func:`segment`); ``None`` picks exact search when
            ``n <= 2048``.
        return_breaks: also return the int32 breakpoints (k+1,) (or (batch, k+1)).

    Returns:
        The fitted values, shaped like ``y`` (and the breakpoints if asked).

    Validation of shapes, degree, n_segments and candidates always; finite values at once on concrete input,
    and at run time under jit (an error from the compiled program, through the run-time errors that
    igax's solvers raise).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from igax.layers import free_knot_fit
        >>> y = jnp.concatenate([jnp.zeros(10), jnp.linspace(0.0, 1.0, 10)])
        >>> yhat = free_knot_fit(y, n_segments=2, degree=1)
        >>> g = jax.grad(lambda y: jnp.sum(free_knot_fit(y, 2, 1) ** 2))(y)
    """
    y = _validate(y, n_segments, degree, candidates)
    out, breaks = _free_knot_fit(y, n_segments=int(n_segments), degree=int(degree), candidates=candidates)
    return (out, breaks) if return_breaks else out


@partial(jax.jit, static_argnames=("n_segments", "degree", "candidates"))
def _free_knot_fit(y, *, n_segments, degree, candidates):
    def one(y1):
        breaks = segment(y1, n_segments, degree, candidates=candidates)
        return segment_projection(y1, breaks, degree), breaks

    return jax.vmap(one)(y) if y.ndim == 2 else one(y)
