"""Generalised block LOBPCG in JAX, and the deflated preconditioned CG that eigenvector gradients solve with.

``jax.experimental.sparse.linalg.lobpcg_standard`` solves ``A x = lambda x`` only. Mass matrices of splines
are not diagonal, and turning ``A x = lambda M x`` into a standard problem needs a Cholesky factor of ``M``
(not available on the device for a sparse matrix) or ``M^{-1/2}``. So this is LOBPCG written for the
generalised problem directly (Knyazev's method): every basis is orthonormalised in the ``M`` inner product and
the Rayleigh-Ritz step solves a small dense standard problem in that basis. Only products with ``A`` and ``M``
and an optional preconditioner are needed, so it runs on any device and compiles to one ``while_loop``.

Choices, and why:

* The Rayleigh-Ritz basis ``[X, W, P]`` is orthonormalised by SVQB (eigen-decomposition of its ``M``-Gram
  matrix after diagonal scaling) rather than by Cholesky: Cholesky fails outright once ``P`` becomes nearly
  dependent on ``X`` near convergence, while SVQB can drop the dependent directions. Shapes must stay fixed in
  a compiled loop, so a dropped direction is kept as a zero column and pushed to the top of the small spectrum
  (it never enters ``X``).
* The products ``A X``, ``A P`` (and with ``M``) are computed anew every iteration, not updated by the small
  combinations that update ``X`` and ``P`` (which would save two of three block products): measured on a 1D
  Laplacian, the updated products drift, and the residuals then stagnate near 1e-5 instead of reaching 1e-10.
* Converged columns are soft-locked (their new search direction is zero), so their rounding-level residuals
  do not pollute the basis.
* The block holds ``k`` wanted plus a few guard vectors; only the wanted ones must converge. Guard vectors
  speed up the last wanted ones (their rate depends on the gap to the first vector outside the block).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _svqb(G, tol):
    """``C`` with ``C^T G C = I`` on the numerically independent directions of the Gram matrix ``G`` and zero
    columns elsewhere, and the mask of the kept columns."""
    d = jnp.sqrt(jnp.abs(jnp.diagonal(G)))
    d = jnp.where(d > 0, 1.0 / jnp.where(d > 0, d, 1.0), 0.0)
    Gs = G * d[:, None] * d[None, :]
    theta, U = jnp.linalg.eigh(0.5 * (Gs + Gs.T))
    keep = theta > tol * jnp.max(jnp.abs(theta))
    scale = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, theta, 1.0)), 0.0)
    return (d[:, None] * U) * scale[None, :], keep


def _rayleigh_ritz(S, AS, MS, tol):
    """Ritz values (ascending) and coefficient matrix of the basis ``S`` for ``A x = lambda M x``."""
    C, keep = _svqb(S.T @ MS, tol)
    H = C.T @ (S.T @ AS) @ C
    H = 0.5 * (H + H.T)
    # Dropped directions: a zero row and column of H; give them a Ritz value above every other so that they
    # sort last and never become an eigenvector.
    big = 2.0 * jnp.max(jnp.abs(H)) + 1.0
    H = jnp.where(keep[:, None] & keep[None, :], H, 0.0) + jnp.diag(jnp.where(keep, 0.0, big))
    mu, Y = jnp.linalg.eigh(H)
    return mu, C @ Y


def residual_norms(AX, MX, lam, X, norms):
    """Relative residuals of the columns ``x`` of ``X``: ``|A x - lambda M x| / (|A x| + |lambda| |M x| + d)``
    with ``d = eps^(1/3) (|A| + |lambda| |M|) |x|`` and ``norms = (|A|, |M|)`` (largest absolute row sums).

    The first two terms make the measure relative for every eigenvalue (the low modes of a stiffness matrix
    have ``|A x|`` far below ``|A| |x|``); the last one keeps it meaningful for a zero eigenvalue (a
    rigid-body mode), whose residual is rounding of ``|A| |x|`` while ``|A x|`` vanishes.
    """
    R = AX - MX * lam[None, :]
    na, nm = norms
    floor = jnp.finfo(AX.dtype).eps ** (1.0 / 3.0) * (na + jnp.abs(lam) * nm) * jnp.linalg.norm(X, axis=0)
    den = jnp.linalg.norm(AX, axis=0) + jnp.abs(lam) * jnp.linalg.norm(MX, axis=0) + floor
    return jnp.linalg.norm(R, axis=0) / jnp.where(den > 0, den, 1.0)


def lobpcg(matA, matM, precond, X0, *, norms, nwant: int, tol: float, maxiter: int):
    """Smallest eigenpairs of ``A x = lambda M x`` (``A`` symmetric, ``M`` SPD) by block LOBPCG.

    Arguments:
        matA, matM: ``(n, m) -> (n, m)`` products with ``A`` and ``M``.
        precond: ``(n, m) -> (n, m)``, an SPD approximation of ``A^{-1}`` (e.g. Jacobi), or the identity.
        X0: ``(n, m)`` starting block (``m`` >= ``nwant``; the extra columns are guard vectors).
        norms: ``(|A|, |M|)``, scales of the residuals (:func:`residual_norms`).
        nwant: how many of the lowest pairs must converge.
        tol: relative residual (:func:`residual_norms`) every wanted pair must reach.
        maxiter: iterations at most.

    Returns:
        ``(lam (m,), X (n, m), iterations, residuals (m,))``: Ritz values ascending, ``M``-orthonormal Ritz
        vectors, the iterations used and the final residuals (recomputed exactly).
    """
    n, m = X0.shape
    eps = jnp.finfo(X0.dtype).eps
    svqb_tol = 10.0 * eps

    AX, MX = matA(X0), matM(X0)
    lam, Y = _rayleigh_ritz(X0, AX, MX, svqb_tol)
    Y = Y[:, :m]
    X, AX, MX, lam = X0 @ Y, AX @ Y, MX @ Y, lam[:m]
    zeros = jnp.zeros_like(X)

    def cond(state):
        it, _, _, _, _, _, _, _, res = state
        return (it < maxiter) & (jnp.max(res[:nwant]) > tol)

    def body(state):
        it, X, AX, MX, P, AP, MP, lam, _ = state
        R = AX - MX * lam[None, :]
        # Soft locking: converged columns get no new direction (their residual is rounding noise, which would
        # only pollute the basis), and the rest are made M-orthogonal to X before the Rayleigh-Ritz step.
        active = residual_norms(AX, MX, lam, X, norms) > tol
        W = jnp.where(active[None, :], precond(R), 0.0)
        W = W - X @ (MX.T @ W)
        AW, MW = matA(W), matM(W)
        # In the first iteration P is zero: SVQB drops its columns.
        S = jnp.concatenate([X, W, P], axis=1)
        AS = jnp.concatenate([AX, AW, AP], axis=1)
        MS = jnp.concatenate([MX, MW, MP], axis=1)
        mu, Z = _rayleigh_ritz(S, AS, MS, svqb_tol)
        Z = Z[:, :m]
        Zx = Z[:m]
        Xn = S @ Z
        # P: the new directions without their X part (the implicit "previous step").
        Pn = Xn - X @ Zx
        XP = jnp.concatenate([Xn, Pn], axis=1)
        AXP, MXP = matA(XP), matM(XP)  # exact products: see the module's note
        AXn, APn, MXn, MPn = AXP[:, :m], AXP[:, m:], MXP[:, :m], MXP[:, m:]
        keep = residual_norms(AXn, MXn, mu[:m], Xn, norms) > tol
        Pn, APn, MPn = (jnp.where(keep[None, :], B, 0.0) for B in (Pn, APn, MPn))
        lamn = mu[:m]
        res = residual_norms(AXn, MXn, lamn, Xn, norms)
        return it + 1, Xn, AXn, MXn, Pn, APn, MPn, lamn, res

    res0 = residual_norms(AX, MX, lam, X, norms)
    state = (jnp.int32(0), X, AX, MX, zeros, zeros, zeros, lam, res0)
    it, X, _, _, _, _, _, lam, _ = jax.lax.while_loop(cond, body, state)
    AX, MX = matA(X), matM(X)
    # Final Rayleigh-Ritz on X alone (exact products): the returned vectors are M-orthonormal to rounding.
    lam, Y = _rayleigh_ritz(X, AX, MX, svqb_tol)
    X, AX, MX = X @ Y, AX @ Y, MX @ Y
    return lam, X, it, residual_norms(AX, MX, lam, X, norms)


def deflated_cg(op, precond, Phi, MPhi, B, *, tol: float, maxiter: int):
    """Solve ``Q^T K_i Q z_i = Q^T b_i`` for each column ``i`` with ``z_i`` in the range of ``Q``, by CG.

    ``Q = I - Phi (M Phi)^T`` projects onto the ``M``-orthogonal complement of the computed modes ``Phi``; on
    that subspace ``K_i = A - lambda_i M`` is positive definite when ``lambda_i`` lies below every eigenvalue
    outside ``Phi`` (the computed modes are the lowest ones), so plain CG applies.

    Arguments:
        op: ``(n, k) -> (n, k)``, column ``i`` multiplied by ``K_i``.
        precond: ``(n, k) -> (n, k)``, SPD approximation of ``K_i^{-1}`` (projected here).
        Phi, MPhi: ``(n, q)`` computed modes and ``M`` times them.
        B: ``(n, k)`` right-hand sides.
        tol: relative residual ``|Q^T (b - K z)| / |Q^T b|`` per column.
        maxiter: iterations at most.

    Returns:
        ``(Z (n, k), iterations, converged (k,) bool, residuals (k,))``.
    """

    def Qt(V):  # I - M Phi Phi^T
        return V - MPhi @ (Phi.T @ V)

    def Q(V):  # I - Phi Phi^T M
        return V - Phi @ (MPhi.T @ V)

    r = Qt(B)
    bnorm = jnp.linalg.norm(r, axis=0)
    bnorm = jnp.where(bnorm > 0, bnorm, 1.0)
    z = Q(precond(r))
    p = z
    rz = jnp.sum(r * z, axis=0)
    x = jnp.zeros_like(B)

    def cond(s):
        it, _, r, _, _ = s[0], s[1], s[2], s[3], s[4]
        return (it < maxiter) & jnp.any(jnp.linalg.norm(r, axis=0) > tol * bnorm)

    def body(s):
        it, x, r, p, rz = s
        q = Qt(op(p))
        pq = jnp.sum(p * q, axis=0)
        active = jnp.linalg.norm(r, axis=0) > tol * bnorm
        alpha = jnp.where(active & (pq != 0), rz / jnp.where(pq != 0, pq, 1.0), 0.0)
        x = x + p * alpha
        r = r - q * alpha
        z = Q(precond(r))
        rzn = jnp.sum(r * z, axis=0)
        beta = jnp.where(active & (rz != 0), rzn / jnp.where(rz != 0, rz, 1.0), 0.0)
        p = jnp.where(active[None, :], z + p * beta, p)
        return it + 1, x, r, p, jnp.where(active, rzn, rz)

    it, x, r, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), x, r, p, rz))
    res = jnp.linalg.norm(Qt(B - op(x)), axis=0) / bnorm
    return Q(x), it, res <= 10.0 * tol, res
