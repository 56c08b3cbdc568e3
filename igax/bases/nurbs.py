"""Tensor-product B-spline and NURBS (rational) bases, built by composition.

The rational basis is the B-spline basis weighted and normalised by the weight field,
``R_a = w_a N_a / W`` with ``W = sum_a w_a N_a``; its derivatives follow from the quotient rule. Nothing here
stores state: knots and degrees are static data, points and weights are arrays (NumPy or JAX), and the JAX
path is differentiable in points and weights.

Naming: *Cartesian* control points ``x_a`` live in physical space; *homogeneous* control points are
``(w_a x_a, w_a)``. Functions here only deal with weights; see :class:`igax.bases.NURBSPatch` for geometry.
"""

from __future__ import annotations

from math import comb

import jax.numpy as jnp
import numpy as np

from igax.bases._checks import is_concrete, runtime_check
from igax.bases.bspline import _asarray, _namespace, basis_functions
from igax.bases.knots import validate_degree

__all__ = ["rational_basis_1d", "tensor_basis", "rational_tensor_basis"]


def _check_weights(w, caller: str):
    """Positive, finite weights, else ``W = sum_a w_a N_a`` vanishes or changes sign and ``R_a = w_a N_a / W``
    is inf/NaN (or a basis function silently drops out, for a zero weight).

    Concrete weights are checked at once; traced ones (under jit, or differentiated in a shape optimisation)
    at run time through the solvers' mechanism (:mod:`igax.bases._checks`): one reduction over the weights.
    """
    fix = "Use weights > 0 (all ones for a plain B-spline basis)."
    if is_concrete(w):
        wn = np.asarray(w)
        bad = ~(np.isfinite(wn) & (wn > 0))
        if bad.any():
            at = np.unravel_index(int(np.argmax(bad)), wn.shape)
            where = ", ".join(str(int(i)) for i in at)
            raise ValueError(
                f"{caller}: weights must be positive and finite (a zero or negative weight makes the "
                f"rational basis singular), got weights[{where}] = {wn[at]}. {fix}"
            )
        return w
    ok = jnp.all(jnp.isfinite(w) & (w > 0))
    msg = (
        f"{caller}: weights must be positive and finite (a zero or negative weight makes the rational basis "
        f"singular; checked at run time under jit). {fix}"
    )
    return runtime_check(w, [(~ok, msg)])


def rational_basis_1d(knots, degree: int, weights, x, nderiv: int = 0):
    """Univariate NURBS basis functions ``R_i = w_i N_i / sum_j w_j N_j`` and their derivatives.

    Arguments:
        knots: open knot vector ``(nknots,)``.
        degree: polynomial degree ``p``.
        weights: positive, finite weights, one per basis function, ``(n,)``. Checked at once when concrete;
            under ``jit`` at run time (the solvers' run-time error mechanism), since a weight
            ``<= 0`` makes the basis inf/NaN.
        x: points ``(npts,)`` (any shape ``S``).
        nderiv: highest derivative order (any; the general Leibniz quotient rule is used).

    Returns:
        ``(first, ders)`` as in :func:`igax.bases.basis_functions`: ``ders`` has shape
        ``(nderiv + 1, *S, p + 1)``, ``ders[k, j, a] = d^k R_(first[j] + a) / dx^k (x[j])``.

    Example:
        >>> from igax.bases.nurbs import rational_basis_1d
        >>> first, R = rational_basis_1d([0, 0, 0, 1, 1, 1], 2, [1, 0.5 ** 0.5, 1], [0.0, 1.0])
        >>> R[0].tolist()
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    p = validate_degree(degree)
    nd = validate_degree(nderiv, name="nderiv")
    xp = _namespace(knots, x, weights)
    w = _asarray(xp, weights)
    n = int(np.shape(knots)[0]) - p - 1
    if w.shape != (n,):
        raise ValueError(f"weights must have shape (n,) = ({n},), one per basis function, got {w.shape}.")
    w = _check_weights(w, "rational_basis_1d")
    first, N = basis_functions(knots, p, x, nd)  # (nd+1, *S, p+1)
    wl = w[first[..., None] + xp.arange(p + 1)]  # (*S, p+1)
    A = N * wl  # weighted B-splines and their derivatives
    W = A.sum(axis=-1)  # (nd+1, *S)
    R = []
    for k in range(nd + 1):
        # A^(k) = sum_i C(k, i) W^(i) R^(k-i)  =>  R^(k) = (A^(k) - sum_(i>=1) C(k, i) W^(i) R^(k-i)) / W
        acc = A[k]
        for i in range(1, k + 1):
            acc = acc - comb(k, i) * W[i][..., None] * R[k - i]
        R.append(acc / W[0][..., None])
    return first, xp.stack(R, axis=0)


def tensor_basis(knots, degrees, u, nderiv: int = 0):
    """Tensor-product B-spline basis functions that are non-zero at each point, with gradients and Hessians.

    Arguments:
        knots: one open knot vector per parametric direction (tuple of sequences).
        degrees: one degree per direction.
        u: points of shape ``(npts, pdim)``.
        nderiv: 0, 1 or 2.

    Returns:
        ``(index, values, grads, hessians)``: ``index`` ``(npts, nloc)`` int, the flat (C-order) index of each
        local function in the array of basis functions of shape ``tuple(len(t) - p - 1)``; ``values``
        ``(npts, nloc)``; ``grads`` ``(npts, nloc, pdim)`` or None; ``hessians`` ``(npts, nloc, pdim, pdim)``
        or None. ``nloc = prod(p_d + 1)``, local functions ordered C-order over ``(a_1, ..., a_pdim)``.

    Example:
        >>> import numpy as np
        >>> from igax.bases.nurbs import tensor_basis
        >>> idx, N, dN, _ = tensor_basis(([0, 0, 1, 1], [0, 0, 1, 1]), (1, 1), np.array([[0.5, 0.5]]), 1)
        >>> N.tolist()
        [[0.25, 0.25, 0.25, 0.25]]
    """
    pdim = len(knots)
    if len(degrees) != pdim:
        raise ValueError(f"degrees must have one entry per knot vector ({pdim}), got {degrees!r}.")
    nd = validate_degree(nderiv, name="nderiv")
    if nd > 2:
        raise ValueError(f"nderiv must be 0, 1 or 2 for tensor-product bases, got {nd}.")
    xp = _namespace(u)
    u = _asarray(xp, u)
    if u.ndim != 2 or u.shape[1] != pdim:
        raise ValueError(f"u must have shape (npts, pdim) = (npts, {pdim}), got {u.shape}.")
    npts = u.shape[0]
    firsts, ders = [], []
    for d in range(pdim):
        f, D = basis_functions(knots[d], degrees[d], u[:, d], nd)
        firsts.append(f)
        ders.append(D)  # (nd+1, npts, p_d+1)
    nloc_d = [p + 1 for p in degrees]
    nbasis = [len(t) - p - 1 for t, p in zip(knots, degrees, strict=False)]
    strides = [int(np.prod(nbasis[d + 1 :])) for d in range(pdim)]

    def expand(arr, d):  # (npts, p_d+1) -> broadcastable (npts, 1, ..., p_d+1, ..., 1)
        shape = [npts] + [1] * pdim
        shape[d + 1] = nloc_d[d]
        return arr.reshape(shape)

    index = sum(expand((firsts[d][:, None] + xp.arange(nloc_d[d])) * strides[d], d) for d in range(pdim))
    index = xp.broadcast_to(index, (npts, *nloc_d)).reshape(npts, -1)

    def product(orders):  # derivative orders per direction -> (npts, nloc)
        out = expand(ders[0][orders[0]], 0)
        for d in range(1, pdim):
            out = out * expand(ders[d][orders[d]], d)
        return out.reshape(npts, -1)

    values = product([0] * pdim)
    grads = hess = None
    if nd >= 1:
        unit = np.eye(pdim, dtype=int)
        grads = xp.stack([product(unit[i]) for i in range(pdim)], axis=-1)  # (npts, nloc, pdim)
    if nd >= 2:
        rows = []
        for i in range(pdim):
            rows.append(xp.stack([product(unit[i] + unit[j]) for j in range(pdim)], axis=-1))
        hess = xp.stack(rows, axis=-2)  # (npts, nloc, pdim, pdim)
    return index, values, grads, hess


def rational_tensor_basis(knots, degrees, weights, u, nderiv: int = 0):
    """Tensor-product NURBS basis ``R_a = w_a N_a / W`` with gradients and Hessians (quotient rule).

    Arguments:
        knots, degrees, u, nderiv: as in :func:`tensor_basis`.
        weights: positive, finite weights of shape ``tuple(n_d)`` (one per basis function; NumPy or JAX);
            checked as in :func:`rational_basis_1d` (at once, or at run time under ``jit``).

    Returns:
        ``(index, values, grads, hessians)`` with the shapes of :func:`tensor_basis`.

    Example:
        >>> import numpy as np
        >>> from igax.bases.nurbs import rational_tensor_basis
        >>> w = np.ones((2, 2))
        >>> _, R, _, _ = rational_tensor_basis(([0, 0, 1, 1],) * 2, (1, 1), w, np.array([[0.5, 0.5]]))
        >>> R.tolist()
        [[0.25, 0.25, 0.25, 0.25]]
    """
    index, N, dN, hN = tensor_basis(knots, degrees, u, nderiv)
    xp = _namespace(u, weights)
    w = _asarray(xp, weights)
    nbasis = tuple(len(t) - p - 1 for t, p in zip(knots, degrees, strict=False))
    if w.shape != nbasis:
        raise ValueError(f"weights must have shape {nbasis} (one per basis function), got {w.shape}.")
    w = _check_weights(w, "rational_tensor_basis")
    wl = w.reshape(-1)[index]  # (npts, nloc)
    A = wl * N
    W = A.sum(axis=1)  # (npts,)
    R = A / W[:, None]
    dR = hR = None
    if nderiv >= 1:
        dA = wl[..., None] * dN  # (npts, nloc, pdim)
        dW = dA.sum(axis=1)  # (npts, pdim)
        dR = (dA - R[..., None] * dW[:, None, :]) / W[:, None, None]
    if nderiv >= 2:
        hA = wl[..., None, None] * hN  # (npts, nloc, pdim, pdim)
        hW = hA.sum(axis=1)  # (npts, pdim, pdim)
        outer = dR[..., :, None] * dW[:, None, None, :]  # (npts, nloc, pdim, pdim)
        hR = (hA - outer - xp.swapaxes(outer, -1, -2) - R[..., None, None] * hW[:, None]) / W[
            :, None, None, None
        ]
    return index, R, dR, hR
