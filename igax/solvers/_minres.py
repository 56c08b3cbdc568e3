"""Preconditioned MINRES in JAX: symmetric (possibly indefinite) systems with an SPD preconditioner.

CG needs a positive definite matrix and GMRES stores its whole Krylov basis; a saddle-point system
``[[A, B^T], [B, -C]]`` (Stokes, mixed elasticity) is symmetric but indefinite, and MINRES solves it with
short recurrences (a fixed handful of vectors, whatever the iteration count) while minimising the residual in
the norm of the preconditioner. The preconditioner must be symmetric positive definite, which rules out the
block-triangular one (use it with GMRES) but allows the block-diagonal ``diag(Ahat^-1, Shat^-1)`` of
:mod:`igax.solvers._block_precond`.

This differs from the textbook loop (Paige and Saunders 1975; the form of Greenbaum's book) in two places:

* it also updates the unpreconditioned residual ``r = b - A x`` (two more vectors: ``A w`` of the last two
  search directions, from the product ``A v`` the Lanczos step computes anyway), and stops on
  ``|r| <= max(rtol |b|, atol)`` like the other loops of :mod:`igax.solvers.iterative`; the textbook loop
  stops on the residual in the preconditioner's norm, which a badly scaled preconditioner makes meaningless;
* when the updated residual says converged, the true residual ``b - A x`` is computed; if round-off made the
  two drift apart, MINRES restarts from ``x`` instead of reporting success.

A preconditioner that is not positive definite makes ``r^T M^-1 r`` negative: the loop stops with status
``BREAKDOWN`` (4) rather than taking a square root of a negative number.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from igax.solvers.iterative import KrylovResult, _defaults, _status

__all__ = ["minres"]


def minres(matvec, b, precond=None, *, rtol=None, atol=0.0, maxiter=None) -> KrylovResult:
    """Preconditioned MINRES for a symmetric ``A`` (definite or not) and an SPD preconditioner.

    Arguments:
        matvec: ``x -> A x``, ``A`` symmetric.
        b: right-hand side ``(n,)``.
        precond: ``r -> M^{-1} r`` with ``M`` symmetric positive definite (e.g. the block-diagonal
            preconditioner of :func:`~igax.solvers.block_diagonal`); identity when ``None``.
        rtol, atol: stop when ``|b - A x| <= max(rtol |b|, atol)`` (rtol defaults to 1e-10 in float64).
        maxiter: cap on the matrix products (default ``max(100, 10 n)``).

    Returns:
        :class:`~igax.solvers.iterative.KrylovResult` ``(x, iterations, status)``: status 0 success,
        2 not converged within ``maxiter``, 4 breakdown (the preconditioner is not positive definite).

    Example:
        A symmetric indefinite 2 x 2 system (eigenvalues of both signs), which CG cannot solve:

        >>> import jax.numpy as jnp
        >>> from igax.solvers import minres
        >>> A = jnp.array([[2.0, 1.0], [1.0, -3.0]])
        >>> r = minres(lambda x: A @ x, jnp.array([3.0, -2.0]))
        >>> [round(v, 10) for v in r.x.tolist()], int(r.status), int(r.iterations)
        ([1.0, 1.0], 0, 2)
    """
    M = precond or (lambda r: r)
    tol, maxiter = _defaults(b, rtol, atol, maxiter)
    eps = jnp.finfo(b.dtype).eps
    zero = jnp.zeros_like(b)

    def safe(d):
        return jnp.where(d == 0, 1.0, d)

    def start(x, k):
        """The state of a (re)start of MINRES from ``x``: Lanczos vectors, rotations, directions."""
        r = b - matvec(x)
        z = M(r)
        rz = jnp.vdot(r, z)
        beta = jnp.sqrt(jnp.maximum(rz, 0.0))
        scal = dict(
            beta=beta, oldb=jnp.zeros_like(beta), dbar=jnp.zeros_like(beta), eps_=jnp.zeros_like(beta),
            phibar=beta, cs=-jnp.ones_like(beta), sn=jnp.zeros_like(beta),
        )  # fmt: skip
        vecs = dict(x=x, r=r, r1=r, r2=r, y=z, w=zero, w2=zero, aw=zero, aw2=zero)
        return vecs, scal, k, rz < 0

    def inner_cond(s):
        vecs, scal, k, broke = s
        return (jnp.linalg.norm(vecs["r"]) > tol) & (k < maxiter) & ~broke & (scal["beta"] > 0)

    def inner_body(s):
        v_, s_, k, broke = s
        beta, oldb = s_["beta"], s_["oldb"]
        v = v_["y"] / beta  # the Lanczos vector in the preconditioned space (M^-1 of the residual-space one)
        Av = matvec(v)
        y = Av - jnp.where(oldb == 0, 0.0, beta / safe(oldb)) * v_["r1"]
        alfa = jnp.vdot(v, y)
        y = y - (alfa / beta) * v_["r2"]
        r1, r2 = v_["r2"], y
        y = M(r2)
        rz = jnp.vdot(r2, y)
        broke = rz < 0  # M is not positive definite
        oldb, beta = beta, jnp.sqrt(jnp.maximum(rz, 0.0))
        # Apply the previous rotation to the new tridiagonal column, then a new one that zeroes beta.
        oldeps = s_["eps_"]
        delta = s_["cs"] * s_["dbar"] + s_["sn"] * alfa
        gbar = s_["sn"] * s_["dbar"] - s_["cs"] * alfa
        eps_ = s_["sn"] * beta
        dbar = -s_["cs"] * beta
        gamma = jnp.maximum(jnp.hypot(gbar, beta), eps)
        cs, sn = gbar / gamma, beta / gamma
        phi = cs * s_["phibar"]
        phibar = sn * s_["phibar"]
        w = (v - oldeps * v_["w2"] - delta * v_["w"]) / gamma
        aw = (Av - oldeps * v_["aw2"] - delta * v_["aw"]) / gamma  # A w, without another product
        vecs = dict(
            x=v_["x"] + phi * w, r=v_["r"] - phi * aw, r1=r1, r2=r2, y=y,
            w=w, w2=v_["w"], aw=aw, aw2=v_["aw"],
        )  # fmt: skip
        scal = dict(beta=beta, oldb=oldb, dbar=dbar, eps_=eps_, phibar=phibar, cs=cs, sn=sn)
        return vecs, scal, k + 1, broke

    def outer_cond(s):
        x, rn, k, broke = s
        return (rn > tol) & (k < maxiter) & ~broke

    def outer_body(s):
        x, _, k0, _ = s
        vecs, _, k, broke = jax.lax.while_loop(inner_cond, inner_body, start(x, k0))
        k = jnp.maximum(k, k0 + 1)  # a restart that cannot step (M^-1 r = 0) still ends at maxiter
        x = vecs["x"]
        # The updated residual may have drifted from the true one: judge (and restart) on the true one.
        return x, jnp.linalg.norm(b - matvec(x)), k, broke

    x, rn, k, broke = jax.lax.while_loop(
        outer_cond, outer_body, (zero, jnp.linalg.norm(b), jnp.int32(0), jnp.bool_(False))
    )
    converged = rn <= tol
    return KrylovResult(x, k, _status(converged, broke & ~converged))
