"""Pure-JAX Krylov solvers (CG, BiCGSTAB, restarted GMRES) with Jacobi preconditioning.

These run entirely on the device (the GPU path) and report iterations and a status, which
``jax.scipy.sparse.linalg`` does not. They are not differentiated through: :func:`igax.solvers.solve` wraps
them in ``custom_linear_solve``, so gradients are one more (transposed) Krylov solve.

This differs from a textbook loop in two places: the loop stops on the unpreconditioned residual
``|b - A x| <= max(rtol |b|, atol)``, and every ``recompute`` iterations CG recomputes the residual directly
so round-off in the recurrence cannot fake convergence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from igax.solvers._errors import Status

__all__ = ["KrylovResult", "bicgstab", "cg", "gmres", "jacobi"]

# The status codes of the shared enumeration (igax.solvers._errors.Status).
SUCCESS, NOT_CONVERGED, BREAKDOWN = Status.SUCCESS, Status.NOT_CONVERGED, Status.BREAKDOWN


class KrylovResult(NamedTuple):
    x: jax.Array
    iterations: jax.Array
    status: jax.Array


def jacobi(A) -> Callable[[jax.Array], jax.Array]:
    """The Jacobi preconditioner ``r -> r / diag(A)`` (rows with a zero diagonal are left unscaled)."""
    d = A.diagonal()
    inv = 1.0 / jnp.where(d != 0, d, 1.0)
    return lambda r: inv * r


def _defaults(b, rtol, atol, maxiter, norm=jnp.linalg.norm, n=None):
    if rtol is None:
        rtol = 1e-10 if b.dtype == jnp.float64 else 1e-5
    if maxiter is None:
        maxiter = max(100, 10 * (b.shape[0] if n is None else n))
    bnorm = norm(b)
    tol = jnp.maximum(rtol * bnorm, atol)
    return tol, int(maxiter)


def _status(converged, broke):
    return jnp.where(converged, SUCCESS, jnp.where(broke, BREAKDOWN, NOT_CONVERGED)).astype(jnp.int32)


def cg(
    matvec, b, precond=None, *, rtol=None, atol=0.0, maxiter=None, recompute=50, dot=None, n=None
) -> KrylovResult:
    """Preconditioned conjugate gradients for symmetric positive definite ``A``.

    Arguments:
        matvec: ``x -> A x``.
        b: right-hand side ``(n,)``.
        precond: ``r -> M^{-1} r`` (SPD), e.g. :func:`jacobi`; identity when ``None``.
        rtol, atol: stop when ``|b - A x| <= max(rtol |b|, atol)``.
        maxiter: iteration cap (default ``max(100, 10 n)``).
        recompute: recompute the residual as ``b - A x`` every this many iterations.
        dot: the inner products ``[(u1, v1), (u2, v2), ...] -> (u1 . v1, u2 . v2, ...)`` (default: one
            ``jnp.vdot`` each). The sharded solve (:mod:`igax.solvers.distributed`) passes local sums
            followed by one ``psum`` over the devices, so the same loop runs on one block of rows per device
            with one all-reduce per group of products.
        n: the global number of unknowns when ``b`` is one block of them (sets the default ``maxiter``).

    Returns:
        :class:`KrylovResult` ``(x, iterations, status)``; status 4 (breakdown) when ``p^T A p <= 0``.
    """
    M = precond or (lambda r: r)
    dots = dot or (lambda pairs: tuple(jnp.vdot(u, v) for u, v in pairs))

    def norm(v):
        return jnp.sqrt(dots([(v, v)])[0])

    tol, maxiter = _defaults(b, rtol, atol, maxiter, norm, n)
    x0 = jnp.zeros_like(b)
    r0 = b
    z0 = M(r0)
    # r.z (for beta) and r.r (for the stopping test) together: one reduction per iteration instead of two,
    # which on several devices is one all-reduce (latency) fewer.
    rz0, rr0 = dots([(r0, z0), (r0, r0)])

    def cond(s):
        x, r, p, rz, rr, k, broke = s
        return (jnp.sqrt(rr) > tol) & (k < maxiter) & ~broke

    def body(s):
        x, r, p, rz, rr, k, broke = s
        Ap = matvec(p)
        (pAp,) = dots([(p, Ap)])
        broke = ~(pAp > 0)
        alpha = jnp.where(broke, 0.0, rz / jnp.where(broke, 1.0, pAp))
        x = x + alpha * p
        r = jax.lax.cond((k + 1) % recompute == 0, lambda: b - matvec(x), lambda: r - alpha * Ap)
        z = M(r)
        rz_new, rr = dots([(r, z), (r, r)])
        beta = rz_new / jnp.where(rz == 0, 1.0, rz)
        p = z + beta * p
        return x, r, p, rz_new, rr, k + 1, broke

    init = (x0, r0, z0, rz0, rr0, jnp.int32(0), jnp.bool_(False))
    x, r, _, _, rr, k, broke = jax.lax.while_loop(cond, body, init)
    return KrylovResult(x, k, _status(jnp.sqrt(rr) <= tol, broke))


def bicgstab(matvec, b, precond=None, *, rtol=None, atol=0.0, maxiter=None) -> KrylovResult:
    """Right-preconditioned BiCGSTAB for general square ``A`` (arguments as :func:`cg`)."""
    M = precond or (lambda r: r)
    tol, maxiter = _defaults(b, rtol, atol, maxiter)
    x0 = jnp.zeros_like(b)
    r0 = b
    rhat = b
    one = jnp.ones((), b.dtype)

    def cond(s):
        x, r, p, v, rho, alpha, omega, k, broke = s
        return (jnp.linalg.norm(r) > tol) & (k < maxiter) & ~broke

    def safe(d):
        return jnp.where(d == 0, 1.0, d)

    def body(s):
        x, r, p, v, rho, alpha, omega, k, broke = s
        rho_new = jnp.vdot(rhat, r)
        beta = (rho_new / safe(rho)) * (alpha / safe(omega))
        p = r + beta * (p - omega * v)
        phat = M(p)
        v = matvec(phat)
        rv = jnp.vdot(rhat, v)
        alpha = rho_new / safe(rv)
        h = x + alpha * phat
        s_ = r - alpha * v
        shat = M(s_)
        t = matvec(shat)
        tt = jnp.vdot(t, t)
        omega = jnp.vdot(t, s_) / safe(tt)
        s_small = jnp.linalg.norm(s_) <= tol
        x = jnp.where(s_small, h, h + omega * shat)
        r = jnp.where(s_small, s_, s_ - omega * t)
        broke = (rho_new == 0) | (rv == 0) | ((tt == 0) & ~s_small) | ((omega == 0) & ~s_small)
        return x, r, p, v, rho_new, alpha, omega, k + 1, broke

    init = (x0, r0, jnp.zeros_like(b), jnp.zeros_like(b), one, one, one, jnp.int32(0), jnp.bool_(False))
    x, r, *_, k, broke = jax.lax.while_loop(cond, body, init)
    converged = jnp.linalg.norm(r) <= tol
    return KrylovResult(x, k, _status(converged, broke & ~converged))


def gmres(matvec, b, precond=None, *, rtol=None, atol=0.0, maxiter=None, restart=30) -> KrylovResult:
    """Restarted, right-preconditioned GMRES(``restart``) for general square ``A`` (arguments as :func:`cg`).

    Each cycle builds ``restart`` Arnoldi vectors with two passes of classical Gram-Schmidt (vectorised, as
    stable as modified Gram-Schmidt) and reduces the small least-squares problem with Givens rotations;
    ``iterations`` counts Arnoldi steps.
    """
    M = precond or (lambda r: r)
    tol, maxiter = _defaults(b, rtol, atol, maxiter)
    m = int(min(restart, b.shape[0]))
    n = b.shape[0]

    def cycle(x):
        r = b - matvec(x)
        beta = jnp.linalg.norm(r)
        V = jnp.zeros((m + 1, n), b.dtype).at[0].set(r / jnp.where(beta == 0, 1.0, beta))
        R = jnp.zeros((m + 1, m), b.dtype)
        cs = jnp.zeros(m, b.dtype)
        sn = jnp.zeros(m, b.dtype)
        g = jnp.zeros(m + 1, b.dtype).at[0].set(beta)

        def arnoldi(j, state):
            V, R, cs, sn, g = state
            w = matvec(M(V[j]))
            mask = (jnp.arange(m + 1) <= j).astype(b.dtype)
            h = (V @ w) * mask
            w = w - V.T @ h
            h2 = (V @ w) * mask
            w = w - V.T @ h2
            h = h + h2
            hn = jnp.linalg.norm(w)
            h = h.at[j + 1].set(hn)
            V = V.at[j + 1].set(w / jnp.where(hn == 0, 1.0, hn))

            # Apply the previous Givens rotations to the new column, then one more to zero h[j + 1]: the
            # least-squares problem stays triangular and |g[j + 1]| is its residual.
            def rotate(i, h):
                hi, hi1 = h[i], h[i + 1]
                return h.at[i].set(cs[i] * hi + sn[i] * hi1).at[i + 1].set(-sn[i] * hi + cs[i] * hi1)

            h = jax.lax.fori_loop(0, j, rotate, h)
            rho = jnp.hypot(h[j], h[j + 1])
            safe = jnp.where(rho == 0, 1.0, rho)
            c, s_ = jnp.where(rho == 0, 1.0, h[j] / safe), jnp.where(rho == 0, 0.0, h[j + 1] / safe)
            h = h.at[j].set(rho).at[j + 1].set(0.0)
            gj = g[j]
            g = g.at[j].set(c * gj).at[j + 1].set(-s_ * gj)
            return V, R.at[:, j].set(h), cs.at[j].set(c), sn.at[j].set(s_), g

        V, R, cs, sn, g = jax.lax.fori_loop(0, m, arnoldi, (V, R, cs, sn, g))
        U = R[:m]
        d = jnp.diagonal(U)
        U = U + jnp.diag(jnp.where(d == 0, 1.0, 0.0))  # an exactly zero pivot means A is singular
        y = jax.scipy.linalg.solve_triangular(U, g[:m], lower=False)
        return x + M(V[:m].T @ y)

    def cond(s):
        x, rn, k = s
        return (rn > tol) & (k < maxiter)

    def body(s):
        x, _, k = s
        x = cycle(x)
        return x, jnp.linalg.norm(b - matvec(x)), k + m

    x0 = jnp.zeros_like(b)
    x, rn, k = jax.lax.while_loop(cond, body, (x0, jnp.linalg.norm(b), jnp.int32(0)))
    return KrylovResult(x, k, _status(rn <= tol, jnp.bool_(False)))
