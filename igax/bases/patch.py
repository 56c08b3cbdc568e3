"""Tensor-product NURBS patches in 1, 2 and 3 parametric dimensions: geometry map, derivatives, refinement.

A :class:`NURBSPatch` is an ``equinox.Module``: its array leaves are the Cartesian ``control_points`` and the
``weights``; knots, degrees and named boundaries are static. Everything is a pure function of those leaves, so
the geometry map, its Jacobian and Hessian, and refined patches are differentiable in control points and
weights.

Refinement (knot insertion, degree elevation) acts on *homogeneous* control points ``(w x, w)``: matrices are
computed in NumPy from the knots and applied with ``jnp``, then the result is split back into Cartesian points
and weights.
"""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax.bases.knots import _is_tracer, greville, n_elements, unique_knots, validate_degree, validate_knots
from igax.bases.nurbs import rational_tensor_basis
from igax.bases.refine import degree_elevation_matrix, knot_insertion_matrix, uniform_refinement_knots

__all__ = ["NURBSPatch"]

_GENERIC_SIDES = ("xi", "eta", "zeta")


def _default_boundaries(pdim: int) -> tuple:
    return tuple(
        (f"{_GENERIC_SIDES[a]}_{s}", a, i) for a in range(pdim) for i, s in enumerate(("min", "max"))
    )


class NURBSPatch(eqx.Module):
    """A tensor-product NURBS patch ``F(u) = sum_a R_a(u) x_a`` with named boundaries.

    Arguments:
        knots: one open knot vector per parametric direction (sequence of sequences).
        degrees: one degree per direction (int or sequence of int).
        control_points: Cartesian control points, shape ``(n_1, ..., n_pdim, ndim)`` with
            ``n_d = len(knots[d]) - degrees[d] - 1``.
        weights: positive weights of shape ``(n_1, ..., n_pdim)``; default all ones (a B-spline patch).
        boundaries: ``(name, axis, side)`` triples, ``side`` 0 for the lower end of ``axis`` and 1 for the
            upper end; default ``xi_min, xi_max, eta_min, ...``.

    Example:
        >>> import numpy as np
        >>> from igax.bases import NURBSPatch
        >>> patch = NURBSPatch(([0, 0, 1, 1], [0, 0, 1, 1]), (1, 1),
        ...                    np.array([[[0., 0.], [0., 1.]], [[2., 0.], [2., 1.]]]))
        >>> patch.evaluate(np.array([[0.5, 0.5]])).tolist()
        [[1.0, 0.5]]
    """

    control_points: jax.Array
    weights: jax.Array
    knots: tuple = eqx.field(static=True)
    degrees: tuple = eqx.field(static=True)
    boundaries: tuple = eqx.field(static=True)

    def __init__(self, knots, degrees, control_points, weights=None, boundaries=None):
        if (
            isinstance(knots, np.ndarray)
            and knots.ndim == 1
            or (len(knots) > 0 and isinstance(knots[0], numbers.Number))
        ):
            raise TypeError(
                "knots must be a sequence with one knot vector per parametric direction, e.g. "
                "knots=([0, 0, 1, 1],) for a curve; got a single flat knot vector."
            )
        pdim = len(knots)
        if not 1 <= pdim <= 3:
            raise ValueError(f"knots must hold 1, 2 or 3 knot vectors (one per direction), got {pdim}.")
        if isinstance(degrees, numbers.Integral) and not isinstance(degrees, bool):
            degrees = (degrees,) * pdim
        degrees = tuple(validate_degree(p, name="degrees") for p in degrees)
        if len(degrees) != pdim:
            raise ValueError(f"degrees must have one entry per knot vector ({pdim}), got {degrees!r}.")
        knots = tuple(
            tuple(float(v) for v in validate_knots(k, p, name=f"knots[{d}]"))
            for d, (k, p) in enumerate(zip(knots, degrees, strict=False))
        )
        shape = tuple(len(k) - p - 1 for k, p in zip(knots, degrees, strict=False))
        # Concrete input is checked (and later computed with) in NumPy: eager jnp ops compile per shape.
        traced = _is_tracer(control_points) or _is_tracer(weights)
        xp = jnp if traced else np
        cp = xp.asarray(control_points)
        if not xp.issubdtype(cp.dtype, xp.floating):
            cp = cp.astype(np.float64)
        if cp.ndim != pdim + 1 or cp.shape[:pdim] != shape:
            raise ValueError(
                f"control_points must have shape (*{shape}, ndim): one Cartesian point per basis function "
                f"for these knots and degrees, got {cp.shape}."
            )
        w = xp.ones(shape, cp.dtype) if weights is None else xp.asarray(weights, dtype=cp.dtype)
        if w.shape != shape:
            raise ValueError(f"weights must have shape {shape} (one per control point), got {w.shape}.")
        if not traced:
            if not np.all(np.isfinite(cp)):
                raise ValueError("control_points must be finite; got NaN or inf.")
            if not np.all(w > 0):
                raise ValueError(
                    "weights must be positive (a zero or negative weight makes the map singular)."
                )
            cp, w = jax.device_put(cp), jax.device_put(w)  # no per-shape compile, unlike jnp.asarray
        if boundaries is None:
            boundaries = _default_boundaries(pdim)
        boundaries = tuple((str(n), int(a), int(s)) for n, a, s in boundaries)
        names = [b[0] for b in boundaries]
        if len(set(names)) != len(names):
            raise ValueError(f"boundaries must have distinct names, got {names}.")
        for n, a, s in boundaries:
            if not (0 <= a < pdim and s in (0, 1)):
                raise ValueError(
                    f"boundary {n!r}: axis must be in [0, {pdim}) and side 0 or 1, got ({a}, {s})."
                )
        self.control_points = cp
        self.weights = w
        self.knots = knots
        self.degrees = degrees
        self.boundaries = boundaries

    # ---------------------------------------------------------------- descriptors
    @property
    def pdim(self) -> int:
        """Number of parametric directions."""
        return len(self.knots)

    @property
    def ndim(self) -> int:
        """Dimension of physical space."""
        return int(self.control_points.shape[-1])

    @property
    def shape(self) -> tuple:
        """Number of basis functions per direction."""
        return tuple(len(k) - p - 1 for k, p in zip(self.knots, self.degrees, strict=False))

    @property
    def n_elements(self) -> tuple:
        """Number of non-empty knot spans per direction."""
        return tuple(n_elements(k) for k in self.knots)

    @property
    def breakpoints(self) -> tuple:
        """Distinct knot values (element boundaries) per direction, a tuple of float64 arrays."""
        return tuple(unique_knots(k) for k in self.knots)

    def greville(self) -> np.ndarray:
        """Greville abscissae of the tensor-product basis, shape ``(*shape, pdim)`` (C order of the basis)."""
        g = [greville(k, p) for k, p in zip(self.knots, self.degrees, strict=True)]
        return np.stack(np.meshgrid(*g, indexing="ij"), axis=-1)

    @property
    def is_rational(self) -> bool:
        """False when all weights are equal (a plain B-spline patch); True otherwise or when weights are
        traced."""
        if _is_tracer(self.weights):
            return True
        w = np.asarray(self.weights)
        return bool(np.any(w != w.reshape(-1)[0]))

    @property
    def homogeneous_control_points(self) -> jax.Array:
        """``(w x, w)`` of shape ``(*shape, ndim + 1)``."""
        return jnp.concatenate(
            [self.control_points * self.weights[..., None], self.weights[..., None]], axis=-1
        )

    @property
    def boundary_names(self) -> tuple:
        """Names of the boundaries, in the order given."""
        return tuple(b[0] for b in self.boundaries)

    def boundary(self, name: str) -> tuple:
        """``(axis, side)`` of the boundary called ``name``."""
        for n, a, s in self.boundaries:
            if n == name:
                return a, s
        raise ValueError(f"unknown boundary name {name!r}; this patch has {list(self.boundary_names)}.")

    def boundary_patch(self, name: str) -> NURBSPatch:
        """The boundary ``name`` as a patch of one parametric dimension less (pdim >= 2)."""
        if self.pdim < 2:
            raise ValueError("boundary_patch needs a patch with pdim >= 2; a curve's boundary is two points.")
        axis, side = self.boundary(name)
        idx = 0 if side == 0 else -1
        keep = [d for d in range(self.pdim) if d != axis]
        return NURBSPatch(
            tuple(self.knots[d] for d in keep),
            tuple(self.degrees[d] for d in keep),
            jnp.take(self.control_points, idx, axis=axis),
            jnp.take(self.weights, idx, axis=axis),
        )

    # ---------------------------------------------------------------- evaluation
    def _points(self, u):
        xp = np if not (isinstance(u, jax.Array) or _is_tracer(u)) else jnp
        u = xp.asarray(u)
        if self.pdim == 1 and u.ndim == 1:
            u = u[:, None]
        if u.ndim != 2 or u.shape[1] != self.pdim:
            raise ValueError(f"u must have shape (npts, pdim) = (npts, {self.pdim}), got {u.shape}.")
        return u

    def basis(self, u, nderiv: int = 0):
        """Rational basis at parametric points: ``(index, values, grads, hessians)``.

        See :func:`igax.bases.rational_tensor_basis`; ``index`` is the flat C-order index into ``shape``.
        """
        return rational_tensor_basis(self.knots, self.degrees, self.weights, self._points(u), nderiv)

    def _concrete_leaves(self):
        """NumPy copies of control points and weights, or None when they are traced."""
        if _is_tracer(self.control_points) or _is_tracer(self.weights):
            return None
        return np.asarray(self.control_points), np.asarray(self.weights)

    def derivatives(self, u, nderiv: int = 2):
        """Map, Jacobian and Hessian at once: ``(x (npts, ndim), J (npts, ndim, pdim) | None, H | None)``.

        NumPy points on a concrete patch (outside jit/grad) are evaluated in NumPy and give NumPy arrays;
        JAX points, or a traced patch, give JAX arrays.
        """
        u = self._points(u)
        leaves = self._concrete_leaves() if isinstance(u, np.ndarray) else None
        xp = jnp if leaves is None else np
        cp, w = (self.control_points, self.weights) if leaves is None else leaves
        index, R, dR, hR = rational_tensor_basis(self.knots, self.degrees, w, u, nderiv)
        xl = cp.reshape(-1, self.ndim)[index]  # (npts, nloc, ndim)
        x = xp.einsum("pa,pai->pi", R, xl)
        J = None if dR is None else xp.einsum("pad,pai->pid", dR, xl)
        H = None if hR is None else xp.einsum("pade,pai->pide", hR, xl)
        return x, J, H

    def evaluate(self, u) -> jax.Array:
        """Geometry map: parametric points ``u (npts, pdim)`` to physical points ``(npts, ndim)``."""
        return self.derivatives(u, 0)[0]

    def __call__(self, u) -> jax.Array:
        return self.evaluate(u)

    def jacobian(self, u) -> jax.Array:
        """``J[j, i, d] = d x_i / d u_d`` at each point, shape ``(npts, ndim, pdim)``."""
        return self.derivatives(u, 1)[1]

    def hessian(self, u) -> jax.Array:
        """``H[j, i, d, e] = d^2 x_i / (d u_d d u_e)``, shape ``(npts, ndim, pdim, pdim)``."""
        return self.derivatives(u, 2)[2]

    # ---------------------------------------------------------------- refinement
    def _apply(self, axis: int, T: np.ndarray, knots: np.ndarray, degree: int) -> NURBSPatch:
        leaves = self._concrete_leaves()
        if leaves is None:  # traced: stay differentiable
            xp, Pw = jnp, self.homogeneous_control_points  # (*shape, ndim+1)
        else:
            xp, (cp0, w0) = np, leaves
            Pw = np.concatenate([cp0 * w0[..., None], w0[..., None]], axis=-1)
        Tx = xp.asarray(T, dtype=Pw.dtype)  # (n_new, n_old)
        new = xp.moveaxis(xp.tensordot(Tx, xp.moveaxis(Pw, axis, 0), axes=1), 0, axis)
        w = new[..., -1]
        cp = new[..., :-1] / w[..., None]
        ks = list(self.knots)
        ps = list(self.degrees)
        ks[axis] = knots
        ps[axis] = degree
        return NURBSPatch(tuple(ks), tuple(ps), cp, w, self.boundaries)

    def _axis(self, axis) -> int:
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not 0 <= axis < self.pdim:
            raise ValueError(f"axis must be an int in [0, {self.pdim}), got {axis!r}.")
        return int(axis)

    def insert_knots(self, axis: int, values) -> NURBSPatch:
        """Exact knot insertion in direction ``axis`` (the map is unchanged)."""
        a = self._axis(axis)
        T, t = knot_insertion_matrix(self.knots[a], self.degrees[a], values)
        return self._apply(a, T, t, self.degrees[a])

    def elevate_degree(self, axis: int, times: int = 1) -> NURBSPatch:
        """Exact degree elevation by ``times`` in direction ``axis``, keeping the continuity at every knot."""
        a = self._axis(axis)
        E, t = degree_elevation_matrix(self.knots[a], self.degrees[a], times)
        return self._apply(a, E, t, self.degrees[a] + int(times))

    def refine(self, degree=None, elements=None) -> NURBSPatch:
        """k-refinement: elevate to ``degree``, then insert knots until there are ``elements`` elements.

        Arguments:
            degree: target degree, an int for all directions or a tuple (>= the current degrees); None
                keeps them.
            elements: target number of elements, a positive int or a tuple of them (one per direction); None
                keeps the knots. Each existing element is split uniformly (see
                :func:`igax.bases.refine.uniform_refinement_knots`). A float (``2.5``, even ``4.0``) is an
                error that names ``elements``: counts are whole numbers.

        Returns:
            A new patch describing the same geometry. New knots have multiplicity one (maximal continuity).

        Example:
            >>> from igax.fem.geometry import quarter_annulus
            >>> quarter_annulus().refine(degree=3, elements=8).n_elements
            (8, 8)
        """
        degrees = self._per_axis(degree, "degree", self.degrees)
        elements = self._per_axis(elements, "elements", self.n_elements)
        patch = self
        for a in range(self.pdim):
            if degrees[a] < self.degrees[a]:
                raise ValueError(
                    f"degree must be >= the current degree {self.degrees[a]} in direction {a}, got "
                    f"{degrees[a]}; "
                    "refinement never lowers the degree."
                )
            if degrees[a] > self.degrees[a]:
                patch = patch.elevate_degree(a, degrees[a] - self.degrees[a])
        for a in range(self.pdim):
            new = uniform_refinement_knots(patch.knots[a], elements[a])
            if new.size:
                patch = patch.insert_knots(a, new)
        return patch

    def _per_axis(self, value, name, default) -> tuple:
        """``value`` (None, an int, or one int per direction) as a tuple of ints; errors name ``name``."""
        if value is None:
            return tuple(default)

        def is_int(v):
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        example = f"{name}={2 * max(default)}" if name == "elements" else f"{name}={max(default) + 1}"
        what = f"an int or a tuple of {self.pdim} ints (one per direction)"
        if is_int(value):
            values = (int(value),) * self.pdim
        elif isinstance(value, (numbers.Number, str, bytes)) or not np.iterable(value):
            raise TypeError(
                f"{name} must be {what}, got {value!r} of type {type(value).__name__}; write a whole number, "
                f"e.g. {example}."
            )
        else:
            values = tuple(value)
            if len(values) != self.pdim:
                raise ValueError(f"{name} must be {what}, got {values!r}; e.g. {example}.")
            if not all(is_int(v) for v in values):
                raise TypeError(
                    f"{name} must be {what}, got {values!r}; write whole numbers, e.g. {example}."
                )
            values = tuple(int(v) for v in values)
        if name == "elements" and min(values) < 1:
            raise ValueError(f"elements must be positive in every direction, got {value!r}; e.g. {example}.")
        return values
