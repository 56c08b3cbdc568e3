"""COCG: conjugate orthogonal conjugate gradients for complex symmetric systems ``A = A^T``, in JAX.

Helmholtz matrices with impedance or PML terms are complex symmetric (``A = A^T``), not Hermitian, so CG does
not apply and GMRES must store a growing basis. COCG (van der Vorst and Melissen, 1990) is CG with the
unconjugated bilinear form ``(u, v) = u^T v`` in place of the inner product: one matrix product and two
short recurrences per iteration, the memory of CG. For a real symmetric matrix it is CG.

This differs from :func:`igax.solvers.iterative.cg` in three places: the products ``p^T A p`` and ``r^T z``
are not conjugated (so they are complex and may be small without the iteration having converged: a breakdown
is declared when one is zero relative to the norms of its factors, not when it is <= 0); the stopping test
uses the true (conjugated) norm of the residual ``|b - A x| <= max(rtol |b|, atol)``; and every ``recompute``
iterations the residual is recomputed as ``b - A x`` so round-off cannot fake convergence.

The preconditioner must be complex symmetric too (``M^T = M``): Jacobi (the diagonal) is, and it is the
default. The adjoint of a solve is another COCG solve with the same matrix, since ``A^T = A``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from igax.solvers.iterative import KrylovResult, _defaults, _status

__all__ = ["cocg"]


def cocg(
    matvec: Callable[[jax.Array], jax.Array],
    b: jax.Array,
    precond: Callable[[jax.Array], jax.Array] | None = None,
    *,
    rtol: float | None = None,
    atol: float = 0.0,
    maxiter: int | None = None,
    recompute: int = 50,
) -> KrylovResult:
    """Preconditioned COCG for a complex symmetric ``A`` (``A = A^T``; real symmetric works too).

    Arguments:
        matvec: ``x -> A x``.
        b: right-hand side ``(n,)``, real or complex.
        precond: ``r -> M^{-1} r`` with ``M`` complex symmetric (e.g. Jacobi); identity when None.
        rtol, atol: stop when ``|b - A x| <= max(rtol |b|, atol)`` (default rtol 1e-10 in double precision,
            1e-5 in single).
        maxiter: iteration cap (default ``max(100, 10 n)``).
        recompute: recompute the residual as ``b - A x`` every this many iterations.

    Returns:
        :class:`~igax.solvers.iterative.KrylovResult` ``(x, iterations, status)``: status 0 converged,
        2 not converged within ``maxiter``, 4 breakdown (``p^T A p`` or ``r^T M^{-1} r`` vanished).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.solvers._cocg import cocg
        >>> A = jnp.array([[2.0 + 1.0j, 0.5], [0.5, 1.0 - 2.0j]])   # complex symmetric, not Hermitian
        >>> b = jnp.array([1.0 + 0.0j, 2.0j])
        >>> r = cocg(lambda x: A @ x, b, rtol=1e-6)
        >>> int(r.status), bool(jnp.allclose(A @ r.x, b, atol=1e-5))
        (0, True)
    """
    M = precond or (lambda r: r)
    b = jnp.asarray(b)
    if rtol is None and b.dtype in (jnp.complex128, jnp.float64):
        rtol = 1e-10
    elif rtol is None:
        rtol = 1e-5
    tol, maxiter = _defaults(b, rtol, atol, maxiter)
    # A bilinear product below eps * |u| |v| is zero for the purpose of a division: a breakdown.
    eps = jnp.finfo(b.dtype).eps

    def bilinear(u, v):
        return jnp.sum(u * v)  # u^T v, not u^H v

    def tiny(uv, u, v):
        return jnp.abs(uv) <= eps * jnp.linalg.norm(u) * jnp.linalg.norm(v)

    x0 = jnp.zeros_like(b)
    r0 = b
    z0 = M(r0)
    rz0 = bilinear(r0, z0)

    def cond(s):
        x, r, p, rz, k, broke = s
        return (jnp.linalg.norm(r) > tol) & (k < maxiter) & ~broke

    def body(s):
        x, r, p, rz, k, broke = s
        Ap = matvec(p)
        pAp = bilinear(p, Ap)
        broke = tiny(pAp, p, Ap)
        alpha = jnp.where(broke, 0.0, rz / jnp.where(broke, 1.0, pAp))
        x = x + alpha * p
        r = jax.lax.cond((k + 1) % recompute == 0, lambda: b - matvec(x), lambda: r - alpha * Ap)
        z = M(r)
        rz_new = bilinear(r, z)
        converged = jnp.linalg.norm(r) <= tol
        broke = broke | (tiny(rz_new, r, z) & ~converged)
        beta = rz_new / jnp.where(rz == 0, 1.0, rz)
        p = z + beta * p
        return x, r, p, rz_new, k + 1, broke

    init = (x0, r0, z0, rz0, jnp.int32(0), jnp.bool_(False))
    x, r, _, _, k, broke = jax.lax.while_loop(cond, body, init)
    converged = jnp.linalg.norm(r) <= tol
    return KrylovResult(x, k, _status(converged, broke & ~converged))
