"""Random coefficient fields: a truncated Karhunen-Loeve (KL) expansion on a box.

The field is Gaussian, ``a(x) = mean + sum_k sqrt(lambda_k) xi_k phi_k(x)`` with independent standard normal
``xi_k``. The eigenfunctions are the Neumann cosines of the box ``[lo, hi]``,

    phi_k(x) = prod_d c_{k_d} cos(k_d pi (x_d - lo_d) / L_d),   c_0 = 1 / sqrt(L_d),  c_{k>0} = sqrt(2 / L_d),

orthonormal in L2 of the box, and the eigenvalues follow a squared-exponential spectral density,
``lambda_k ~ exp(-(pi ell)^2 |k / L|^2 / 2)``. This is exactly the KL expansion of the covariance
``C(x, y) = sum_k lambda_k phi_k(x) phi_k(y)``: a squared-exponential-like kernel of correlation length
``ell`` made even and periodic across the sides of the box (reflecting boundaries), a common stand-in for a
stationary field on a box whose eigenpairs are known in closed form. So the field and its gradient are
cheap, smooth JAX functions of ``x`` (PINNs differentiate them in ``x``) and of ``xi``. The eigenvalues are
scaled so that the untruncated field has average pointwise variance ``sigma**2``; the retained fraction of
that variance is :attr:`KLExpansion.energy`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KLExpansion", "kl_expansion"]


class KLExpansion(eqx.Module):
    """A truncated Karhunen-Loeve expansion ``a(x; xi) = mean + sum_k sqrt_eigs[k] xi[k] phi_k(x)``.

    Build it with :func:`kl_expansion`. Points ``x`` follow the form-input convention of igax: shape
    ``(dim, ...)`` with the first axis the coordinate, so ``lambda x: kl.field(xi, x)`` can be passed straight
    to :func:`igax.fem.assemble` or :class:`igax.fem.DirichletBC`.

    Attributes:
        modes: ``(n_terms, dim)`` integer wave numbers (NumPy; stored as a static tuple).
        sqrt_eigs: ``(n_terms,)`` square roots of the eigenvalues, largest first.
        lower, upper: the box.
        mean: mean of the Gaussian field.
        energy: retained fraction of the total variance, in ``(0, 1]``.
    """

    sqrt_eigs: jax.Array
    modes_: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    lower: tuple[float, ...] = eqx.field(static=True)
    upper: tuple[float, ...] = eqx.field(static=True)
    mean: float = eqx.field(static=True)
    energy: float = eqx.field(static=True)

    @property
    def modes(self) -> np.ndarray:
        """``(n_terms, dim)`` integer wave numbers."""
        return np.asarray(self.modes_, dtype=np.int64)

    @property
    def n_terms(self) -> int:
        """Number of retained terms (the length of ``xi``)."""
        return int(self.modes.shape[0])

    @property
    def dim(self) -> int:
        """Spatial dimension."""
        return int(self.modes.shape[1])

    def basis(self, x) -> jax.Array:
        """Eigenfunctions at points ``x`` of shape ``(dim, ...)`` -> ``(n_terms, ...)``."""
        x = jnp.asarray(x)
        if x.shape[:1] != (self.dim,):
            raise ValueError(
                f"x must have shape (dim, ...) = ({self.dim}, ...) with the coordinate first, got {x.shape}; "
                "for points stored as (npts, dim) pass x.T."
            )
        out = 1.0
        for d in range(self.dim):
            L = self.upper[d] - self.lower[d]
            k = jnp.asarray(self.modes[:, d], dtype=x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
            c = jnp.where(k == 0, 1.0 / np.sqrt(L), np.sqrt(2.0 / L))
            out = out * c * jnp.cos(k * np.pi * (x[d][None] - self.lower[d]) / L)
        return out

    def _check_xi(self, xi):
        xi = jnp.asarray(xi)
        if xi.shape != (self.n_terms,):
            raise ValueError(
                f"xi must have shape (n_terms,) = ({self.n_terms},), got {xi.shape}; for a batch use "
                "jax.vmap over the first axis."
            )
        return xi

    def log_field(self, xi, x) -> jax.Array:
        """The Gaussian field ``a(x; xi)`` at points ``x`` (``(dim, ...)``) -> ``(...)``."""
        xi = self._check_xi(xi)
        phi = self.basis(x)
        return self.mean + jnp.tensordot(self.sqrt_eigs * xi, phi, axes=1)

    def field(self, xi, x) -> jax.Array:
        """The log-normal field ``exp(a(x; xi))`` (a positive coefficient such as a conductivity)."""
        return jnp.exp(self.log_field(xi, x))

    def as_callable(self, xi, *, log: bool = False) -> Callable:
        """``x -> field(xi, x)`` (or the log-field), ready as an input of :func:`igax.fem.assemble`."""
        return (lambda x: self.log_field(xi, x)) if log else (lambda x: self.field(xi, x))

    def sample(self, key, n: int) -> jax.Array:
        """``n`` independent coefficient vectors ``xi``, shape ``(n, n_terms)`` (standard normal)."""
        return jax.random.normal(key, (int(n), self.n_terms))


def kl_expansion(
    n_terms: int,
    *,
    correlation_length: float = 0.3,
    sigma: float = 1.0,
    mean: float = 0.0,
    lower: Sequence[float] = (0.0, 0.0),
    upper: Sequence[float] = (1.0, 1.0),
    max_wavenumber: int = 40,
) -> KLExpansion:
    """The ``n_terms`` leading terms of the cosine KL expansion of a Gaussian field on a box.

    Arguments:
        n_terms: number of retained terms (random coefficients).
        correlation_length: ``ell`` of the squared-exponential spectrum (smaller: rougher fields, slower
            decay).
        sigma: pointwise standard deviation (on average over the box) of the untruncated field.
        mean: mean of the field.
        lower, upper: corners of the box (its dimension is their length).
        max_wavenumber: wave numbers ``0..max_wavenumber`` per direction enter the variance normalisation.

    Returns:
        A :class:`KLExpansion`.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import kl_expansion
        >>> kl = kl_expansion(6, correlation_length=0.3, sigma=1.0)
        >>> nu = kl.field(jnp.ones(6), jnp.array([[0.5], [0.5]]))    # at the point (0.5, 0.5)
    """
    lo = tuple(float(v) for v in lower)
    hi = tuple(float(v) for v in upper)
    if len(lo) != len(hi) or not lo or any(h <= l for l, h in zip(lo, hi, strict=True)):
        raise ValueError(f"lower and upper must be corners of a box with upper > lower, got {lo} and {hi}.")
    if not (isinstance(n_terms, (int, np.integer)) and n_terms >= 1):
        raise ValueError(f"n_terms must be a positive int, got {n_terms!r}.")
    if correlation_length <= 0 or sigma < 0:
        raise ValueError(
            f"correlation_length must be > 0 and sigma >= 0, got {correlation_length} and {sigma}."
        )
    dim = len(lo)
    L = np.array(hi) - np.array(lo)
    grids = np.meshgrid(*[np.arange(max_wavenumber + 1)] * dim, indexing="ij")
    modes = np.stack([g.ravel() for g in grids], axis=1)  # (nmodes, dim)
    if n_terms > modes.shape[0]:
        raise ValueError(f"n_terms must be at most {modes.shape[0]} for max_wavenumber={max_wavenumber}.")
    s = np.exp(-0.5 * (np.pi * correlation_length) ** 2 * np.sum((modes / L) ** 2, axis=1))
    # Stable sort: ties (e.g. (1, 0) and (0, 1)) keep the grid order, so the expansion is reproducible.
    order = np.argsort(-s, kind="stable")[:n_terms]
    volume = float(np.prod(L))
    # Sum of eigenvalues / volume = average pointwise variance; scale the full spectrum to sigma^2.
    eigs = sigma**2 * volume * s / s.sum()
    return KLExpansion(
        sqrt_eigs=jnp.asarray(np.sqrt(eigs[order])),
        modes_=tuple(tuple(int(v) for v in m) for m in modes[order]),
        lower=lo,
        upper=hi,
        mean=float(mean),
        energy=float(s[order].sum() / s.sum()),
    )
