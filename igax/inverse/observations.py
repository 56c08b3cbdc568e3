"""Observation operators (point values, boundary fluxes, subdomain integrals) and noisy synthetic data.

Each operator does its integer and geometric work once, when it is built, outside any ``jit``: point
location (:mod:`igax.fem.locate`: a Newton solve of the geometry map per point, in NumPy, so that building an
operator compiles nothing), the basis values at the located points, or the assembled linear functional of a
subdomain indicator. Applying it to coefficients is then a small gather-and-sum or a dot product, cheap to
call inside an optimisation loop and exactly linear in the field's coefficients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from igax import fem
from igax.fem import Field
from igax.fem.locate import host_locate, host_tables, points_error

__all__ = ["PointObservation", "SubdomainIntegral", "boundary_flux", "reaction_flux", "add_noise"]


def _coeffs_of(u, space):
    if isinstance(u, Field):
        if u.space.plan is not space.plan:
            raise ValueError(
                "the Field lives on a different space than the one the observation was built on."
            )
        return u.coeffs
    c = jnp.asarray(u)
    if c.shape != (space.ndofs,):
        raise ValueError(
            f"expected a Field or a coefficient vector of shape ({space.ndofs},), got shape {c.shape}."
        )
    return c


class PointObservation:
    """Values of a field at fixed physical points, as a precomputed sparse operator.

    Arguments:
        space: the ``igax.fem`` space of the observed field (geometry held fixed).
        points: physical points, shape ``(npts, dim)``; all must lie in the domain.

    Calling the operator on a ``Field`` (or its coefficient vector) returns the values, shape
    ``(npts,) + value_shape``; it is linear, differentiable and jit-able.

    Example:
        >>> # skipped (fragment: its names come from the text above)
        >>> obs = PointObservation(V, np.array([[1.2, 0.5], [0.3, 1.5]]))   # doctest: +SKIP
        >>> obs(u)                                                           # doctest: +SKIP
    """

    def __init__(self, space, points):
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != space.dim:
            raise ValueError(f"points must have shape (npts, {space.dim}), got {pts.shape}.")
        # fem.locate's host location (NumPy, nothing compiled); values are defined at singular points of the
        # map (a pole), so only points outside the domain or not finite are refused.
        loc = host_locate(space, pts)
        err = points_error(loc.status, pts, allow_singular=True)
        if err is not None:
            raise err
        dofs, phi, _, _ = host_tables(space, loc)
        self.space = space
        self.points = pts
        self.dofs = np.asarray(dofs)  # (npts, nloc) scalar dofs
        self.phi = phi  # (npts, nloc)

    @classmethod
    def from_parameters(cls, space, u) -> PointObservation:
        """The operator at the images of parameter points ``u`` (npts, pdim) of a ``SplineSpace`` (no Newton).

        Example:
            >>> # skipped (fragment: its names come from the text above)
            >>> obs = PointObservation.from_parameters(V, np.array([[0.5, 0.5]]))   # doctest: +SKIP
            >>> obs.points                                     # the physical points   # doctest: +SKIP
        """
        if not callable(getattr(space, "basis_at", None)):
            raise TypeError(
                f"from_parameters needs a space with parameter points (a SplineSpace), got "
                f"{type(space).__name__}; for meshes give physical points: PointObservation(space, points)."
            )
        u = np.asarray(u, dtype=np.float64)
        if u.ndim != 2 or u.shape[1] != space.plan.pdim:
            raise ValueError(f"u must have shape (npts, {space.plan.pdim}), got {u.shape}.")
        lo = np.array([k[0] for k in space.plan.knots])
        hi = np.array([k[-1] for k in space.plan.knots])
        if np.any(u < lo) or np.any(u > hi):
            raise ValueError(f"parameters must lie in the patch's parameter box [{lo}, {hi}].")
        dofs, R, _, x, _ = space.basis_at(u)
        obs = cls.__new__(cls)
        obs.space, obs.points, obs.dofs, obs.phi = space, x, dofs, R
        return obs

    @property
    def npts(self) -> int:
        return self.points.shape[0]

    def __call__(self, u) -> jax.Array:
        c = _coeffs_of(u, self.space)
        p = self.space.plan
        cc = c.reshape(p.ncomp, p.nscalar)[:, self.dofs]  # (ncomp, npts, nloc)
        vals = jnp.einsum("cpa,pa->pc", cc, jnp.asarray(self.phi, c.dtype))
        return vals[:, 0] if not p.value_shape else vals.reshape((self.npts,) + tuple(p.value_shape))

    def matrix(self) -> sp.csr_matrix:
        """The operator as a SciPy matrix ``(npts, nscalar)`` acting on scalar coefficients."""
        rows = np.repeat(np.arange(self.npts), self.dofs.shape[1])
        return sp.csr_matrix(
            (self.phi.ravel(), (rows, self.dofs.ravel())), shape=(self.npts, self.space.plan.nscalar)
        )


class SubdomainIntegral:
    """Integrals ``int chi_k(x) u(x) dx`` of a scalar field over subdomains given by indicator functions.

    Arguments:
        space: the ``igax.fem`` space of the field.
        indicators: one callable ``chi(x) -> values`` or a sequence of them (``x`` of shape ``(dim, ...)``,
            first axis = coordinate); sharp indicators such as ``lambda x: (x[0] < 0.5) * 1.0`` are integrated
            at the quadrature points, so their boundary is resolved to the element size.

    Calling it on a Field or coefficients returns one integral per indicator, shape ``(k,)``: a matrix-vector
    product with the assembled linear functionals.

    Example:
        >>> # skipped (fragment: its names come from the text above)
        >>> obs = SubdomainIntegral(V, [lambda x: (x[0] > 1.0) * 1.0])   # doctest: +SKIP
    """

    def __init__(self, space, indicators: Callable | Sequence[Callable]):
        if callable(indicators):
            indicators = [indicators]
        if not indicators or not all(callable(c) for c in indicators):
            raise TypeError("indicators must be a callable chi(x) or a non-empty sequence of callables.")
        if space.value_shape:
            raise ValueError("SubdomainIntegral observes scalar fields; take a component first.")

        @fem.linear_form
        def weighted(v, w):
            return w.chi * v.value

        self.space = space
        # One compiled assembly beats op-by-op dispatch of the same graph by a wide margin.
        self.weights = jax.jit(
            lambda: jnp.stack([fem.assemble(weighted, space, chi=c) for c in indicators])
        )()

    def __call__(self, u) -> jax.Array:
        return self.weights @ _coeffs_of(u, self.space)


def boundary_flux(u, boundary: str | Sequence[str], kappa=1.0) -> jax.Array:
    """Outward flux ``int_G kappa grad u . n ds`` of a scalar field over named boundaries.

    Arguments:
        u: a scalar ``igax.fem.Field``.
        boundary: a boundary name or a list of names.
        kappa: conductivity: a number, a callable of ``x``, or a Field on the same mesh.

    Returns:
        A scalar. The gradient is evaluated on the boundary itself, so it converges like ``h^p``; for the
        more accurate variationally consistent flux of a Dirichlet boundary use :func:`reaction_flux`.

    Example:
        >>> # skipped (fragment: its names come from the text above)
        >>> q = boundary_flux(u, "outer", kappa=kappa_field)   # doctest: +SKIP
    """

    @fem.functional
    def flux(w):
        return w.kappa * jnp.dot(w.u.grad, w.n)

    return fem.assemble(flux, u.space, boundary=boundary, u=u, kappa=kappa)


def reaction_flux(A, b, u, dofs) -> jax.Array:
    """Variationally consistent flux through a Dirichlet boundary: ``sum_{i in dofs} (A u - b)_i``.

    For ``-div(kappa grad u) = f`` with ``A``, ``b`` assembled *without* boundary conditions, the residual at
    the constrained dofs is the boundary flux tested with the basis functions; summed (the sum of those basis
    functions is 1 on the boundary) it is the outward flux ``int_G kappa grad u . n ds``, accurate to the
    order of the energy (``h^(2p)``) rather than of the gradient.

    Arguments:
        A: unconstrained stiffness matrix (``SparseMatrix``).
        b: unconstrained load vector.
        u: the solution Field or coefficients.
        dofs: the boundary's dofs, e.g. ``V.boundary("outer")``.

    Returns:
        A scalar.

    Example:
        >>> # skipped (fragment: its names come from the text above)
        >>> q = reaction_flux(A, b, u, V.boundary("outer"))   # doctest: +SKIP
    """
    c = u.coeffs if hasattr(u, "coeffs") else jnp.asarray(u)
    r = A @ c - b
    return jnp.sum(r[np.asarray(dofs)])


def add_noise(data, level: float, *, seed: int = 0, relative: bool = True) -> tuple[jax.Array, float]:
    """Gaussian noise for synthetic data, reproducible by seed.

    Arguments:
        data: clean data, any shape.
        level: noise standard deviation: relative to ``max |data|`` when ``relative`` (``0.01`` = 1 %),
            else absolute.
        seed: random seed.
        relative: see ``level``.

    Returns:
        ``(noisy_data, sigma)`` with ``sigma`` the absolute standard deviation used (for weighting misfits).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import add_noise
        >>> d, s = add_noise(jnp.array([1.0, -2.0]), 0.01, seed=1)
        >>> s
        0.02
    """
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}.")
    data = jnp.asarray(data)
    sigma = float(level * jnp.max(jnp.abs(data))) if relative else float(level)
    noise = np.random.default_rng(seed).standard_normal(data.shape)
    return data + sigma * jnp.asarray(noise, dtype=data.dtype), sigma
