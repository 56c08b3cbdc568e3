"""The theta-method for ``M du/dt + K u = f(t)``: implicit Euler, Crank-Nicolson, differentiable.

Each step solves

    (M + theta dt K) u_{n+1} = (M - (1 - theta) dt K) u_n + dt (theta f_{n+1} + (1 - theta) f_n).

The matrices are constant, so the system matrix is factorised once before the ``lax.scan`` and every step
(forward and, in a gradient, every adjoint step) reuses that factorisation. Reverse-mode memory is bounded
with ``checkpoint_every=c``: the loop becomes an outer scan over ``nsteps / c`` checkpointed segments of ``c``
steps, so a gradient stores ``nsteps / c + c`` states instead of ``nsteps``.

Nonlinear problems ``M du/dt + R(u; t) = 0`` on assembled forms (a Newton solve per step, BDF2, adaptive
steps) are :func:`igax.fem.solve_transient` and :func:`igax.fem.adapt_steps`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from igax.solvers.linear import factorize
from igax.solvers.sparse import SparseMatrix

__all__ = ["theta_method"]


def theta_method(
    M: SparseMatrix,
    K: SparseMatrix,
    u0: jax.Array,
    *,
    dt: float,
    nsteps: int,
    theta: float = 0.5,
    f: Callable[[jax.Array], jax.Array] | None = None,
    t0: float = 0.0,
    observe: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    checkpoint_every: int | None = None,
    method: str | None = None,
    **options,
) -> tuple[jax.Array, jax.Array | None]:
    """Integrate ``M du/dt + K u = f(t)`` from ``u(t0) = u0`` over ``nsteps`` steps of size ``dt``.

    Arguments:
        M, K: mass and stiffness matrices with the same sparsity pattern (assemble both on one space).
        u0: initial state ``(n,)``.
        dt: time step (may be traced).
        nsteps: number of steps (static int).
        theta: 1 implicit Euler (first order, L-stable), 0.5 Crank-Nicolson (second order); in ``[0.5, 1]``.
        f: load ``f(t) -> (n,)``, or ``None`` for ``f = 0``; it may close over parameters to differentiate.
        t0: initial time.
        observe: ``observe(t, u) -> y`` recorded after every step (default: nothing is recorded).
        checkpoint_every: segment length for ``jax.checkpoint`` (must divide ``nsteps``); ``None``: no
            checkpointing.
        method, **options: linear solver backend and options (see :func:`igax.solvers.solve`).

    Returns:
        ``(u_final, observations)`` with ``observations`` stacked ``(nsteps, ...)`` (``None`` without
        ``observe``).

    Example:
        >>> import jax, jax.numpy as jnp, scipy.sparse
        >>> from igax.solvers import SparseMatrix, theta_method
        >>> M = SparseMatrix.from_scipy(scipy.sparse.eye(2, format="csr"))
        >>> K = SparseMatrix.from_scipy(scipy.sparse.diags([1.0, 2.0]).tocsr())   # u' = -k u, k = 1, 2
        >>> u0 = jnp.ones(2)
        >>> uT, _ = theta_method(M, K, u0, dt=1e-3, nsteps=100, theta=0.5)
        >>> [round(v, 4) for v in uT.tolist()]                                      # exp(-0.1), exp(-0.2)
        [0.9048, 0.8187]
        >>> final = lambda kappa: theta_method(M, kappa * K, u0, dt=1e-3, nsteps=100)[0]
        >>> g = jax.grad(lambda kappa: jnp.sum(final(kappa) ** 2))(1.0)
        >>> bool(g < 0)                                                             # faster decay
        True
    """
    if not isinstance(M, SparseMatrix) or not isinstance(K, SparseMatrix):
        raise TypeError("M and K must be igax.solvers.SparseMatrix (wrap scipy matrices with from_scipy).")
    if M.pattern != K.pattern:
        raise ValueError(
            f"M and K must share one sparsity pattern (got {M.pattern} and {K.pattern}); assemble both on "
            "the same space, or add explicit zeros to the smaller pattern."
        )
    if not isinstance(nsteps, int) or nsteps < 1:
        raise ValueError(f"nsteps must be a positive int, got {nsteps!r}.")
    if not 0.5 <= float(theta) <= 1.0:
        raise ValueError(
            f"theta must lie in [0.5, 1] (1: implicit Euler, 0.5: Crank-Nicolson) for stability, got {theta}."
        )
    if checkpoint_every is not None and (
        not isinstance(checkpoint_every, int) or checkpoint_every < 1 or nsteps % checkpoint_every
    ):
        raise ValueError(
            f"checkpoint_every must be a positive int dividing nsteps={nsteps}, got {checkpoint_every!r}."
        )
    u0 = jnp.asarray(u0)
    if u0.shape != (M.shape[0],):
        raise ValueError(f"u0 must have shape (n,) = ({M.shape[0]},), got {u0.shape}.")
    theta = float(theta)
    dt = jnp.asarray(dt, u0.dtype)

    A = SparseMatrix(
        M.values + theta * dt * K.values,
        M.pattern,
        symmetric=M.symmetric and K.symmetric,
        positive_definite=M.positive_definite and K.positive_definite,
    )
    B = M - ((1.0 - theta) * dt) * K if theta < 1.0 else M
    F = factorize(A, method=method, **options)  # once: every step below reuses it
    load = f if f is not None else None

    def step(carry, _):
        u, t = carry
        t1 = t + dt
        rhs = B @ u
        if load is not None:
            rhs = rhs + dt * (theta * load(t1) + ((1.0 - theta) * load(t) if theta < 1.0 else 0.0))
        u1 = F.solve(rhs)
        y = observe(t1, u1) if observe is not None else None
        return (u1, t1), y

    carry0 = (u0, jnp.asarray(t0, u0.dtype))
    if checkpoint_every is None:
        (uT, _), ys = jax.lax.scan(step, carry0, None, length=nsteps)
    else:

        @jax.checkpoint
        def segment(carry, _):
            return jax.lax.scan(step, carry, None, length=checkpoint_every)

        (uT, _), ys = jax.lax.scan(segment, carry0, None, length=nsteps // checkpoint_every)
        if ys is not None:
            ys = jax.tree_util.tree_map(lambda y: y.reshape((nsteps,) + y.shape[2:]), ys)
    return uT, ys
