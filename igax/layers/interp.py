"""Differentiable spline interpolation (linear, quadratic, cubic), O(n) in the forward and backward pass.

:func:`interpolate` builds the interpolating spline of values ``y`` at sites ``x`` and evaluates it at new
points. It is a pure function of ``(x, y, x_new)``: jit, vmap (batches of signals) and grad (with respect to
the values *and* the sites) all work.

On the CPU, degrees 1, 2 and 3 run as native kernels (``igax/_native/interp_kernels.cc``, compiled on
first use; see :mod:`igax._native`): the forward pass is one XLA custom call (cubic slopes or quadratic
B-spline coefficients by one pivoted tridiagonal solve, the power form of each piece, then each run of
sorted points evaluated with its piece's coefficients), and the gradient with respect to ``y`` is one
custom call of the transposed map (segment sums of ``g t^k``, the coefficient transpose, one transposed
solve); forward mode in ``y`` is one call of the first. A vmap over the values alone folds the batch into
columns (one solve and one pass over the points for the whole batch). Derivatives with respect to the
sites and points come from the pure-JAX path. Elsewhere (GPU, fewer than 4 sites, ``native=False`` or
``IGAX_NATIVE=0``) the pure-JAX path runs: LAPACK's (cuSPARSE's)
``gtsv`` through ``jax.lax.linalg.tridiagonal_solve``, which JAX differentiates in both modes (reverse mode
is one transposed solve), and an evaluation written so that its reverse mode is cheap: one 1-D gather per
coefficient table, whose transposes are segment sums of ``g t^k`` that need no coefficient values.
Differentiating through a dense solve instead costs O(n^3).

Measured (``benchmarks/bench_interp_grad.py``, 2-core CPU, m = 10 n sorted points, gradient in ``y``,
medians): n = 64: 8 us called back to back (~19-22 us interleaved with other programs, where XLA's hand-off
to a worker thread dominates); n = 1000: 55-89 us, ~230x faster than autodiff through a dense solve;
n = 10^5: 6.3 ms; time ~ n^0.93. The pure-JAX path's gradient is 2.2-4.4x slower. Quadratic (same
case): n = 64: 9.7-9.9 us back to back, 9-20x faster than autodiff through a dense solve (4.3-5.6x
interleaved; the pure-JAX path alone took 51-95 us before degree 2 had a kernel); n = 1000: 45 us, ~290-480x;
n = 10^5: 12 ms. The pure-JAX path's gradient is 2.5-9x slower.

The splines are the ones of SciPy:

* ``degree=1``: the broken line (``make_interp_spline(x, y, k=1)``);
* ``degree=2``: the quadratic spline with knots at the midpoints between sites, second and second-to-last
  midpoints left out (``make_interp_spline(x, y, k=2)``);
* ``degree=3``: the cubic spline with end conditions ``"not-a-knot"`` (default), ``"natural"`` (zero second
  derivative) or ``"clamped"`` (zero first derivative), or a pair of them for the two ends (``CubicSpline``).

Outside ``[x[0], x[-1]]`` the end pieces are extrapolated, as SciPy does by default.

Bad values never come back as a silent NaN: NaN or infinity in any input, and duplicate or unordered sites,
raise an error that names the argument, at once on concrete arrays and at run time inside ``jit`` (the
native kernel checks its operands itself; the pure-JAX path uses the run-time errors of igax's solvers).
``check=False`` turns the value checks off (see :func:`interpolate`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from igax.bases._checks import is_concrete as _is_concrete
from igax.bases._checks import runtime_check

# LAPACK gtsv (cuSPARSE gtsv2 on a GPU) with JAX's own rules for both forward and reverse mode; its gradient
# measured as fast as igax.layers._banded.tridiagonal_solve's custom VJP (n = 64 .. 10^4), which has no jvp
# (in x, 15-40 % faster).
tridiagonal_solve = jax.lax.linalg.tridiagonal_solve

__all__ = ["interpolate", "find_interval"]

_BC_NAMES = ("not-a-knot", "natural", "clamped")


def _float_dtype(*arrays):
    dt = jnp.result_type(*arrays)
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(float)


@partial(jax.jit, static_argnames=("assume_sorted",))
def find_interval(breaks: jax.Array, x_new: jax.Array, *, assume_sorted: bool = False) -> jax.Array:
    """Index ``i`` of the interval ``[breaks[i], breaks[i+1])`` holding each point, clipped to ``[0, nb-2]``.

    Named like :func:`igax.bases.find_span` (its counterpart on knot vectors); once ``locate``, the name of
    :func:`igax.fem.locate.locate` (the element of a space that holds a physical point).

    Arguments:
        breaks: (nb,) increasing breakpoints.
        x_new: points, any shape.
        assume_sorted: the (flattened) points are non-decreasing. Then the points are located by a merge
            (``O(nb log m + m)``: each breakpoint is searched among the points and a cumulative count spreads
            the result), instead of a vectorised binary search per point (``O(m log nb)``). Wrong answers if
            the points are not sorted; this is checked on concrete input only.

    Returns:
        int32 array of the shape of ``x_new``. Points left of ``breaks[0]`` get 0 and points right of
        ``breaks[-1]`` get ``nb-2``: the end pieces extrapolate.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.layers import find_interval
        >>> find_interval(jnp.array([0.0, 1.0, 2.0]), jnp.array([-1.0, 0.5, 1.0, 3.0]))
        Array([0, 0, 1, 1], dtype=int32)
    """
    inner = breaks[1:-1]
    nb = breaks.shape[0]
    shape = x_new.shape
    xf = x_new.reshape(-1)
    m = xf.shape[0]
    if nb <= 2:
        return jnp.zeros(shape, jnp.int32)
    if (nb - 2) * m <= 100_000:
        # Small problems: one fused comparison beats the loop of a search on CPU. A search's while loop also
        # splits the surrounding program; in the gradient of interpolate at n = 64, m = 640 (the classic case)
        # the comparison took it from 37 to 26 us (one core); past ~1e5 comparisons the search wins.
        idx = jnp.sum(xf[:, None] >= inner[None, :], axis=1, dtype=jnp.int32)
    elif assume_sorted and nb > 128:
        # Merge: the interval of point j is the number of inner breaks b <= x_j, and b <= x_j exactly when the
        # first point not smaller than b comes at or before j. The running count uses a parallel prefix sum:
        # jnp.cumsum lowers to a reduce-window that costs O(m^2) on CPU.
        first = jnp.searchsorted(xf, inner, side="left").astype(jnp.int32)
        counts = jnp.zeros((m + 1,), jnp.int32).at[first].add(1, indices_are_sorted=True)
        idx = jax.lax.associative_scan(jnp.add, counts[:m])
    else:
        idx = jnp.searchsorted(inner, xf, side="right").astype(jnp.int32)
    return idx.reshape(shape)


def _validate(x, y, x_new, degree, bc_type, check=True):
    if degree not in (1, 2, 3):
        raise ValueError(f"degree must be 1, 2 or 3, got {degree!r}.")
    if bc_type is None:
        bc = ("not-a-knot", "not-a-knot")
    elif isinstance(bc_type, str):
        bc = (bc_type, bc_type)
    elif (
        isinstance(bc_type, (tuple, list)) and len(bc_type) == 2 and all(isinstance(b, str) for b in bc_type)
    ):
        bc = tuple(bc_type)
    else:
        raise ValueError(
            f"bc_type must be one of {_BC_NAMES} or a pair of them (left end, right end), got {bc_type!r}."
        )
    for b in bc:
        if b not in _BC_NAMES:
            raise ValueError(f"bc_type {b!r} is unknown; write one of {_BC_NAMES} (or a pair of them).")
    if degree < 3 and bc != ("not-a-knot", "not-a-knot"):
        raise ValueError(
            f"bc_type={bc_type!r} applies to degree=3 only; degree={degree} has no end conditions to choose "
            "(leave bc_type=None)."
        )
    if jnp.ndim(x) != 1:
        raise ValueError(f"x must be a 1-D array of sites, got shape {jnp.shape(x)}.")
    n = jnp.shape(x)[0]
    if jnp.ndim(y) < 1 or jnp.shape(y)[0] != n:
        raise ValueError(
            f"y must have the sites along its first axis: shape ({n}, ...) to match x of shape ({n},), "
            f"got {jnp.shape(y)}."
        )
    need = {1: 2, 2: 3, 3: 2}[degree]
    if degree == 3 and "not-a-knot" in bc and bc != ("not-a-knot", "not-a-knot"):
        need = 3  # a not-a-knot end next to another condition needs two intervals
    if n < need:
        raise ValueError(f"x has {n} sites; degree={degree} interpolation needs at least {need}.")
    for name, a in (("x", x), ("y", y), ("x_new", x_new)):
        if not jnp.issubdtype(jnp.result_type(a), jnp.number):
            raise TypeError(f"{name} must be a real array, got dtype {jnp.result_type(a)}.")
        if jnp.issubdtype(jnp.result_type(a), jnp.complexfloating):
            raise TypeError(f"{name} must be real, got dtype {jnp.result_type(a)}.")
    if not isinstance(check, bool):
        raise TypeError(f"check must be True or False, got {check!r}.")
    # Value checks of concrete arrays, at once; traced ones are checked at run time (_runtime_checks).
    if not check:
        return bc
    if _is_concrete(x):
        xn = np.asarray(x)
        if not np.all(np.isfinite(xn)):
            raise ValueError("x contains NaN or infinity; sites must be finite.")
        if np.any(np.diff(xn) <= 0):
            k = int(np.argmax(np.diff(xn) <= 0))
            raise ValueError(
                f"x must be strictly increasing; x[{k}] = {xn[k]} is followed by x[{k + 1}] = {xn[k + 1]}. "
                "Sort the sites (and y with them: order = np.argsort(x)) and merge duplicates."
            )
    if _is_concrete(y) and not np.all(np.isfinite(np.asarray(y))):
        raise ValueError("y contains NaN or infinity; values must be finite.")
    if _is_concrete(x_new) and not np.all(np.isfinite(np.asarray(x_new))):
        raise ValueError("x_new contains NaN or infinity; evaluation points must be finite.")
    return bc


# Run-time messages (the concrete checks above name the offending entry; under jit only the fact is known).
_HINT = " (checked at run time under jit; interpolate(..., check=False) skips the value checks)"
_MSG_X_FINITE = "interpolate: x contains NaN or infinity; sites must be finite" + _HINT
_MSG_X_ORDER = (
    "interpolate: x must be strictly increasing, without duplicate sites; sort the sites (and y with them: "
    "order = jnp.argsort(x)) and merge duplicates" + _HINT
)
_MSG_Y = "interpolate: y contains NaN or infinity; values must be finite" + _HINT
_MSG_X_NEW = "interpolate: x_new contains NaN or infinity; evaluation points must be finite" + _HINT
_MSG_SORTED = (
    "interpolate: assume_sorted=True but x_new is not sorted; sort it or pass assume_sorted=False" + _HINT
)


def _runtime_checks(x, y, x_new, assume_sorted):
    """The value checks of :func:`_validate` for traced arrays, as one run-time error (the solvers'
    mechanism, :mod:`igax.bases._checks`). Concrete arrays were checked at once and add nothing here.

    Cost: one fused pass over the traced arrays (measured ~1 us at n = 64, m = 640; see interpolate).
    """
    checks = []
    if not _is_concrete(x):
        checks.append((~jnp.all(jnp.isfinite(x)), _MSG_X_FINITE))
        checks.append((~jnp.all(jnp.diff(x) > 0), _MSG_X_ORDER))
    if not _is_concrete(y):
        checks.append((~jnp.all(jnp.isfinite(y)), _MSG_Y))
    if not _is_concrete(x_new):
        checks.append((~jnp.all(jnp.isfinite(x_new)), _MSG_X_NEW))
        if assume_sorted:
            checks.append((~jnp.all(jnp.diff(x_new.reshape(-1)) >= 0), _MSG_SORTED))
    # Every output (and every derivative) depends on the sites, so guarding them orders the checks first.
    return runtime_check(x, checks), y, x_new


def _cubic_slopes(x, y, bc, solve=tridiagonal_solve):
    """First derivatives ``s`` of the cubic interpolant at the sites; y: (n, r). Tridiagonal, O(n).

    ``solve(lower, diag, upper, rhs)`` is a hook for the benchmarks' reference solvers.
    """
    n = x.shape[0]
    h = jnp.diff(x)  # (n-1,)
    delta = jnp.diff(y, axis=0) / h[:, None]  # (n-1, r)
    if n == 2 or (n == 3 and bc == ("not-a-knot", "not-a-knot")):
        if n == 2 and bc == ("not-a-knot", "not-a-knot"):
            return jnp.concatenate([delta, delta], axis=0)  # a straight line, as SciPy
        if n == 3:
            # Not-a-knot with three sites is the interpolating parabola: mean slopes equal the chord slopes.
            one = jnp.ones((1,), x.dtype)
            lower = jnp.concatenate([0 * one, h[1:], one])
            diag = jnp.concatenate([one, 2 * (h[:-1] + h[1:]), one])
            upper = jnp.concatenate([one, h[:-1], 0 * one])
            mid = 3 * (h[1:, None] * delta[:-1] + h[:-1, None] * delta[1:])
            rhs = jnp.concatenate([2 * delta[:1], mid, 2 * delta[-1:]], axis=0)
            return solve(lower, diag, upper, rhs)
    one = jnp.ones((1,), x.dtype)
    zero = jnp.zeros((1,), x.dtype)
    # Interior rows i = 1..n-2:
    #   h[i] s[i-1] + 2 (h[i-1] + h[i]) s[i] + h[i-1] s[i+1] = 3 (h[i] d[i-1] + h[i-1] d[i])
    low_in, diag_in, up_in = h[1:], 2 * (h[:-1] + h[1:]), h[:-1]
    rhs_in = 3 * (h[1:, None] * delta[:-1] + h[:-1, None] * delta[1:])
    left, right = bc
    if left == "natural":  # s''(x0) = 0: 2 s0 + s1 = 3 d0
        d0, u0, r0 = 2 * one, one, 3 * delta[:1]
    elif left == "clamped":  # s0 = 0
        d0, u0, r0 = one, zero, jnp.zeros_like(delta[:1])
    else:  # not-a-knot: s''' continuous at x1, with s2 eliminated so the system stays tridiagonal
        dd = h[0] + h[1]
        d0, u0 = h[1:2], dd[None]
        r0 = (((h[0] + 2 * dd) * h[1]) * delta[0] + h[0] ** 2 * delta[1])[None] / dd
    if right == "natural":
        dn, ln, rn = 2 * one, one, 3 * delta[-1:]
    elif right == "clamped":
        dn, ln, rn = one, zero, jnp.zeros_like(delta[-1:])
    else:
        dd = h[-1] + h[-2]
        dn, ln = h[-2:-1], dd[None]
        rn = (h[-1] ** 2 * delta[-2] + ((2 * dd + h[-1]) * h[-2]) * delta[-1])[None] / dd
    lower = jnp.concatenate([zero, low_in, ln])
    diag = jnp.concatenate([d0, diag_in, dn])
    upper = jnp.concatenate([u0, up_in, zero])
    rhs = jnp.concatenate([r0, rhs_in, rn], axis=0)
    return solve(lower, diag, upper, rhs)


def _take(a, idx, is_sorted=False):
    """Rows of ``a`` at ``idx`` (in range by construction): no clamping code in the fused loop. With sorted
    indices the transposed gather (the segment sum of the backward pass) takes XLA's sorted path."""
    return a.at[idx].get(mode="promise_in_bounds", indices_are_sorted=is_sorted)


def _pp_eval(left, coefs, xq, idx, is_sorted=False):
    """Piecewise polynomial ``sum_k coefs[k][i] t^k`` with ``t = xq - left[i]`` on the interval ``i = idx``.

    left: (nseg,), coefs: tuple of (nseg, r) tables (lowest power first), xq: (m,), idx: (m,) int.
    Each table is gathered on its own (one 1-D gather per column, fused into the Horner loop): on CPU at
    m = 10^6 a gather of rows of a packed (nseg, 5) table took ~10x longer than five 1-D gathers in
    isolation, and the whole gradient 10-25 % longer. JAX differentiates this directly: the transpose of
    each 1-D gather is a segment sum of ``g t^k``, which needs no coefficient values, so a gradient with
    respect to ``y`` alone never runs the forward solve (XLA drops it as dead code). A hand-written VJP with
    the same segment sums was measured no faster and would cost forward mode.
    """
    t = (xq - _take(left, idx, is_sorted))[:, None]  # (m, 1)
    out = _take(coefs[-1], idx, is_sorted)
    for c in coefs[-2::-1]:
        out = _take(c, idx, is_sorted) + t * out
    return out  # (m, r)


def _cubic_coefs(x, y, s):
    """Power-form coefficients on each interval from values y and slopes s at the sites; (n-1, r) each."""
    h = jnp.diff(x)[:, None]  # (n-1, 1)
    delta = jnp.diff(y, axis=0) / h  # (n-1, r)
    c2 = (3 * delta - 2 * s[:-1] - s[1:]) / h
    c3 = (s[:-1] + s[1:] - 2 * delta) / (h * h)
    return (y[:-1], s[:-1], c2, c3)


def _eval_cubic(x, y, s, x_new, assume_sorted):
    """Hermite cubic on each interval, as a piecewise polynomial in ``t = x_new - x[i]``."""
    idx = find_interval(x, x_new, assume_sorted=assume_sorted)  # (m,)
    return _pp_eval(x[:-1], _cubic_coefs(x, y, s), x_new, idx, assume_sorted)  # (m, r)


def _eval_linear(x, y, x_new, assume_sorted):
    slope = jnp.diff(y, axis=0) / jnp.diff(x)[:, None]
    idx = find_interval(x, x_new, assume_sorted=assume_sorted)
    return _pp_eval(x[:-1], (y[:-1], slope), x_new, idx, assume_sorted)


def _quadratic_values(tl, u):
    """Quadratic B-spline values on the span ``[tl[:, 1], tl[:, 2]]``; tl: (m, 4) local knots, u: (m,).

    Cox-de Boor recursion written out for degree 2; returns (m, 3) values of the three non-zero functions.
    """
    left1, right1 = u - tl[:, 1], tl[:, 2] - u
    left2, right2 = u - tl[:, 0], tl[:, 3] - u
    # degree 1
    tmp = 1.0 / (right1 + left1)
    n0, n1 = right1 * tmp, left1 * tmp
    # degree 2
    tmp0 = n0 / (right1 + left2)
    tmp1 = n1 / (right2 + left1)
    return jnp.stack([right1 * tmp0, left2 * tmp0 + right2 * tmp1, left1 * tmp1], axis=1)


def _quadratic(x, y, x_new, assume_sorted, solve=tridiagonal_solve):
    """SciPy's ``make_interp_spline(k=2)``: knots at midpoints (2nd and 2nd-to-last left out); tridiagonal.

    ``solve(lower, diag, upper, rhs)`` is a hook for the benchmarks' reference solvers.
    """
    n = x.shape[0]
    mid = 0.5 * (x[1:] + x[:-1])
    breaks = jnp.concatenate([x[:1], mid[1:-1], x[-1:]])  # (n-1,) distinct knots
    t = jnp.concatenate([x[:1], x[:1], breaks, x[-1:], x[-1:]])  # (n+3,) full knot vector
    # Collocation at the inner sites x[i] (span [t[i+1], t[i+2]]): functions i-1, i, i+1. Totally positive and
    # tridiagonal, so elimination without pivoting is stable.
    i = np.arange(1, n - 1)
    tl = jnp.stack([t[i], t[i + 1], t[i + 2], t[i + 3]], axis=1)  # (n-2, 4)
    vals = _quadratic_values(tl, x[1:-1])  # (n-2, 3)
    one = jnp.ones((1,), x.dtype)
    zero = jnp.zeros((1,), x.dtype)
    lower = jnp.concatenate([zero, vals[:, 0], zero])
    diag = jnp.concatenate([one, vals[:, 1], one])
    upper = jnp.concatenate([zero, vals[:, 2], zero])
    c = solve(lower, diag, upper, y)  # (n, r)
    j = find_interval(
        breaks, x_new, assume_sorted=assume_sorted
    )  # span j: [breaks[j], breaks[j+1]], functions j..j+2
    tq = jnp.stack([t[j + 1], t[j + 2], t[j + 3], t[j + 4]], axis=1)  # (m, 4)
    bq = _quadratic_values(tq, x_new)  # (m, 3)
    return bq[:, 0:1] * c[j] + bq[:, 1:2] * c[j + 1] + bq[:, 2:3] * c[j + 2]


def interpolate(
    x: jax.Array,
    y: jax.Array,
    x_new: jax.Array,
    *,
    degree: int = 3,
    bc_type: str | tuple[str, str] | None = None,
    assume_sorted: bool = False,
    native: bool | None = None,
    check: bool = True,
) -> jax.Array:
    """Interpolating spline of ``y`` at sites ``x``, evaluated at ``x_new``; differentiable in all three.

    Arguments:
        x: (n,) strictly increasing sites.
        y: (n, ...) values at the sites (trailing axes are independent signals sharing the sites).
        x_new: evaluation points, any shape.
        degree: 1 (broken line), 2 (quadratic, SciPy's midpoint knots) or 3 (cubic).
        bc_type: cubic end conditions ``"not-a-knot"`` (default), ``"natural"``, ``"clamped"`` or a pair
            ``(left, right)``; only ``None`` for degrees 1 and 2.
        assume_sorted: promise that ``x_new`` (flattened) is non-decreasing, so points are located by a merge
            in ``O(n + m)`` instead of a binary search each (see :func:`find_interval`). The native kernel
            needs no promise: it finds runs of sorted points itself.
        native: ``None`` (default): the native CPU kernel where it applies (any degree, at least 4 sites,
            kernels available; see :mod:`igax._native`), else pure JAX. ``False``: pure JAX, e.g. for
            ``jax.export`` of a CPU program (the kernel's custom call has no compatibility guarantee, so
            export refuses it). ``True``: the kernel, or an error saying why it does not apply.
        check: value checks: finite ``x``, ``y`` and ``x_new``, strictly increasing ``x`` (no duplicate
            sites), sorted ``x_new`` with ``assume_sorted``. ``True`` (default): concrete arrays are checked
            at once (``ValueError`` naming the entry); under ``jit``, ``vmap`` or ``grad`` the values are
            checked at run time and a failure raises from the compiled program, with a message that names
            the argument (see below). ``False``: no value checks (NaN in, NaN out), e.g. for ``jax.export``,
            which cannot serialise the host callback of a run-time error.

    Returns:
        Array of shape ``x_new.shape + y.shape[1:]``.

    Validation: degree, bc_type, ``native``, ``check`` and all shapes are always checked, at trace time. At
    run time the native kernel checks its operands in its own pass over them and fails with
    ``JaxRuntimeError: INVALID_ARGUMENT: interpolate: y contains NaN or infinity; ...``; the pure-JAX path
    (GPU, ``native=False``) uses the mechanism of igax's solvers
    (:func:`igax.solvers._errors.branched_error_if`: a branch that calls back to Python only on failure),
    with the same messages. Measured cost (2-core CPU, n = 64, m = 640, paired medians): native
    kernel +0.03 us on an 8 us forward call and on its 8.3 us gradient in ``y`` (n = 1000, m = 10^4:
    +0.6-1 us on ~45 us); pure path +0.3-2 us on 23-35 us calls. (That branch on the native path would
    cost ~3.6 us, +45 %: that is why the kernel checks for itself.) In a gradient with respect to ``y``
    alone the native path does not check the values: that gradient does not depend on them.

    Forward and backward passes are O(n + m) (plus ``log`` for the point search unless ``assume_sorted``).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.layers import interpolate
        >>> x = jnp.linspace(0.0, 1.0, 8)
        >>> interpolate(x, jnp.sin(x), jnp.array([0.25, 0.5]), bc_type="natural")
        Array([0.2474..., 0.4794...], dtype=float64)
    """
    bc = _validate(x, y, x_new, degree, bc_type, check)
    dtype = _float_dtype(x, y, x_new)
    x = jnp.asarray(x, dtype)
    y = jnp.asarray(y, dtype)
    x_new = jnp.asarray(x_new, dtype)
    if check and assume_sorted and _is_concrete(x_new) and np.any(np.diff(np.asarray(x_new).reshape(-1)) < 0):
        raise ValueError("assume_sorted=True but x_new is not sorted; sort it or pass assume_sorted=False.")
    if native not in (None, True, False):
        raise ValueError(f"native must be None, True or False, got {native!r}.")
    from igax.layers import _interp_native

    supported = _interp_native.supports(jnp.shape(x)[0], degree, dtype) if native is not False else False
    if native and not supported:
        from igax import _native

        why = _native.reason() or f"degree={degree} with {jnp.shape(x)[0]} sites in {jnp.dtype(dtype)}"
        raise ValueError(
            f"native=True, but the native kernel does not apply here ({why}); it covers degrees 1, 2 "
            "and 3 with at least 4 sites in float32/float64. Leave native=None to fall back to pure JAX."
        )
    if check and not supported:
        # The pure-JAX path checks traced values through the solvers' run-time errors; the native kernel
        # checks its operands itself (see igax/layers/_interp_native.py).
        x, y, x_new = _runtime_checks(x, y, x_new, assume_sorted)
    return _interpolate(
        x, y, x_new, degree=degree, bc=bc, assume_sorted=assume_sorted, native=supported, check=check
    )


# Compiled once per shape and options: called eagerly, the layer would otherwise dispatch ~100 small ops one
# by one.
@partial(jax.jit, static_argnames=("degree", "bc", "assume_sorted", "native", "check"))
def _interpolate(x, y, x_new, *, degree, bc, assume_sorted, native, check=True):
    from igax.layers import _interp_native

    n = x.shape[0]
    out_shape = x_new.shape + y.shape[1:]
    y2 = y.reshape((n, -1))  # (n, r)
    xq = x_new.reshape(-1)  # (m,)
    if native:
        # One custom call each way on the CPU (see igax/layers/_interp_native.py); it locates points by
        # galloping from the previous one, so it needs no promise of sorted points. It checks its operands'
        # values itself (concrete ones again: nearly free, see CheckValues in interp_kernels.cc).
        flags = _interp_native.CHECK_ALL if check else 0
        out = _interp_native.native_interpolate(x, y2, xq, degree=degree, bc=bc, check=flags)
    else:
        out = _pure_interpolate(x, y2, xq, degree=degree, bc=bc, assume_sorted=assume_sorted)
    return out.reshape(out_shape)


def _pure_interpolate(x, y2, xq, *, degree, bc, assume_sorted=False, solve=tridiagonal_solve):
    """The pure-JAX interpolant: x (n,), y2 (n, r), xq (m,) -> (m, r). Reference and non-CPU path.

    ``solve(lower, diag, upper, rhs)`` is the tridiagonal solver of degrees 2 and 3 (a hook for the
    benchmarks).
    """
    if degree == 1:
        return _eval_linear(x, y2, xq, assume_sorted)
    if degree == 2:
        return _quadratic(x, y2, xq, assume_sorted, solve=solve)
    s = _cubic_slopes(x, y2, bc, solve=solve)
    return _eval_cubic(x, y2, s, xq, assume_sorted)
