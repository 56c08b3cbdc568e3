"""Newton's method for sparse nonlinear systems ``R(u, *args) = 0``, differentiated implicitly.

The iteration (``lax.while_loop``) solves ``K(u) du = -R(u)`` with a sparse tangent ``K = dR/du`` and a
backtracking line search on ``|R|``. It is never differentiated: the solution ``u*`` enters a ``custom_jvp``
identity whose tangent rule is the implicit function theorem,

    du*/dargs . dargs = -K(u*)^{-1} (dR/dargs . dargs),

so ``jax.grad`` costs one transposed solve with the tangent at the solution (reusing its factorisation), and
the memory of a gradient does not depend on the number of Newton iterations. ``jvp``/``jacfwd`` work as well.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax.solvers._errors import Status, raise_on_failure
from igax.solvers.linear import _solve_unmasked, linear_solve
from igax.solvers.sparse import SparseMatrix

__all__ = ["NewtonError", "NewtonResult", "newton_solve"]

# Status codes of a NewtonResult: the shared enumeration (igax.solvers._errors.Status), in Newton's words.
CONVERGED, LINEAR_FAILED, NOT_CONVERGED, NONFINITE = (
    Status.CONVERGED,
    Status.LINEAR_FAILED,
    Status.NOT_CONVERGED,
    Status.NONFINITE,
)
_MESSAGES = {
    CONVERGED: "converged",
    LINEAR_FAILED: "a linear solve with the tangent failed (singular tangent?); check the tangent function "
    "and the boundary conditions, or start closer to the solution",
    NOT_CONVERGED: "Newton did not converge within maxiter iterations; raise maxiter, loosen rtol/atol, "
    "start closer to the solution, or load in steps (continuation)",
    NONFINITE: "the residual became NaN or inf; check the residual function at the initial guess",
}


class NewtonError(RuntimeError):
    """Newton's method failed; the message names the cause, the residual history and the iterations."""


class NewtonResult(eqx.Module):
    """The solution of ``R(u) = 0`` with a convergence report.

    Attributes:
        value: the solution ``u*`` (differentiable in ``args`` by the implicit function theorem).
        iterations: Newton steps taken.
        residual_norms: ``|R(u_k)|`` for ``k = 0 .. maxiter`` (entries after ``iterations`` are 0).
        status: 0 converged, 1 linear solve failed, 2 not converged, 3 NaN or inf residual (the codes of
            :class:`~igax.solvers.Status`, shared with the linear solves).
    """

    value: jax.Array
    iterations: jax.Array
    residual_norms: jax.Array
    status: jax.Array

    @property
    def history(self) -> np.ndarray:
        """The residual norms of the iterations actually taken (host only)."""
        return np.asarray(self.residual_norms)[: int(self.iterations) + 1]


def _newton_loop(
    residual, tangent, u0, args, *, method, linear_options, rtol, atol, maxiter, line_search, max_backtracks
):
    r0 = residual(u0, *args)
    n0 = jnp.linalg.norm(r0)
    tol = jnp.maximum(rtol * n0, atol)
    hist = jnp.zeros(maxiter + 1, r0.dtype).at[0].set(n0)

    def cond(s):
        u, r, rn, k, hist, status = s
        return (rn > tol) & (k < maxiter) & (status == CONVERGED)

    def body(s):
        u, r, rn, k, hist, status = s
        K = tangent(u, *args)
        lin = linear_solve(K, -r, method=method, throw=False, **linear_options)
        du = lin.value

        def trial(alpha):
            ut = u + alpha * du
            rt = residual(ut, *args)
            return ut, rt, jnp.linalg.norm(rt)

        ut, rt, rnt = trial(1.0)
        if line_search:
            # Backtracking on |R| (Armijo with c = 1e-4): halve the step until the residual decreases enough.
            def ls_cond(t):
                alpha, ut, rt, rnt, j = t
                return ~(rnt <= (1.0 - 1e-4 * alpha) * rn) & (j < max_backtracks)

            def ls_body(t):
                alpha, *_, j = t
                alpha = 0.5 * alpha
                return (alpha, *trial(alpha), j + 1)

            _, ut, rt, rnt, _ = jax.lax.while_loop(ls_cond, ls_body, (1.0, ut, rt, rnt, 0))
        status = jnp.where(lin.status != 0, LINEAR_FAILED, status)
        status = jnp.where((status == CONVERGED) & ~jnp.isfinite(rnt), NONFINITE, status)
        ok = status == CONVERGED
        u = jnp.where(ok, ut, u)
        r = jnp.where(ok, rt, r)
        rn = jnp.where(ok, rnt, rn)
        hist = hist.at[k + 1].set(jnp.where(ok, rnt, 0.0))
        return u, r, rn, k + jnp.where(ok, 1, 0), hist, status

    status0 = jnp.where(jnp.isfinite(n0), CONVERGED, NONFINITE)
    u, r, rn, k, hist, status = jax.lax.while_loop(cond, body, (u0, r0, n0, jnp.int32(0), hist, status0))
    status = jnp.where((status == CONVERGED) & ~(rn <= tol), NOT_CONVERGED, status).astype(jnp.int32)
    return u, k, hist, status


def newton_solve(
    residual: Callable,
    u0: jax.Array,
    *args,
    tangent: Callable[..., SparseMatrix],
    method: str | None = None,
    rtol: float = 1e-10,
    atol: float = 0.0,
    maxiter: int = 30,
    line_search: bool = True,
    max_backtracks: int = 10,
    throw: bool = True,
    linear_options: dict | None = None,
) -> NewtonResult:
    """Solve ``residual(u, *args) = 0`` by Newton's method; the solution is differentiable in ``args``.

    Arguments:
        residual: ``residual(u, *args) -> (n,)``.
        u0: initial guess ``(n,)`` (not differentiated: the solution does not depend on it).
        *args: parameters (any pytrees of arrays); gradients flow to them implicitly.
        tangent: ``tangent(u, *args) -> SparseMatrix`` with ``dR/du`` (e.g. :meth:`ElementSystem.tangent`).
        method: linear solver backend for the tangent systems and the adjoint (see :func:`solve`).
        rtol, atol: stop when ``|R(u)| <= max(rtol |R(u0)|, atol)``.
        maxiter: Newton step limit (a static int).
        line_search: backtracking on ``|R|`` (Armijo); ``False`` takes full steps.
        max_backtracks: step halvings per iteration.
        throw: raise :class:`NewtonError` when Newton fails (under jit from the running program, see
            :func:`igax.solvers.linear_solve`).
        linear_options: options for the linear solves (e.g. ``{"rtol": 1e-12}`` for iterative methods).

    Returns:
        :class:`NewtonResult` ``(value, iterations, residual_norms, status)``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> from igax.solvers import ElementSystem, newton_solve
        >>> def kernel(u_e, h, f_e):                 # 1D P1 element of -((1 + u^2) u')' = f
        ...     k = 1.0 + jnp.mean(u_e) ** 2
        ...     return k / h * jnp.array([[1.0, -1.0], [-1.0, 1.0]]) @ u_e - 0.5 * h * f_e
        >>> elem_dofs = np.array([[-1, 0], [0, 1], [1, 2], [2, -1]])   # 4 elements, both ends fixed
        >>> sys = ElementSystem(kernel, elem_dofs, 3, arg_axes=(None, 0))
        >>> h, f = 0.25, jnp.full(4, 10.0)                           # one load value per element
        >>> res = newton_solve(sys.residual, jnp.zeros(3), h, f, tangent=sys.tangent)
        >>> int(res.status), bool(jnp.abs(sys.residual(res.value, h, f)).max() < 1e-9)
        (0, True)
        >>> u = lambda f: newton_solve(sys.residual, jnp.zeros(3), h, f, tangent=sys.tangent).value
        >>> g = jax.grad(lambda f: jnp.sum(u(f) ** 2))(f)   # implicit: one adjoint solve
        >>> g.shape, bool(jnp.all(g > 0))
        ((4,), True)
    """
    u0 = jnp.asarray(u0)
    if u0.ndim != 1:
        raise ValueError(f"u0 must be a vector (n,), got shape {u0.shape}.")
    if not isinstance(maxiter, int) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive int, got {maxiter!r}.")
    if not callable(tangent):
        raise TypeError(
            "tangent must be a function (u, *args) -> SparseMatrix; build one from an element kernel with "
            "igax.solvers.ElementSystem(kernel, elem_dofs, ndofs).tangent."
        )
    linear_options = dict(linear_options or {})
    args_c = jax.lax.stop_gradient(args)
    u, k, hist, status = _newton_loop(
        residual,
        tangent,
        jax.lax.stop_gradient(u0),
        args_c,
        method=method,
        linear_options=linear_options,
        rtol=rtol,
        atol=atol,
        maxiter=maxiter,
        line_search=line_search,
        max_backtracks=max_backtracks,
    )

    @jax.custom_jvp
    def implicit(u, args):
        return u

    @implicit.defjvp
    def implicit_jvp(primals, tangents):
        u, args = primals
        _, args_dot = tangents
        _, r_dot = jax.jvp(lambda a: residual(u, *a), (args,), (args_dot,))
        K = tangent(u, *args)
        # No runtime check (and no NaN on failure) on the tangent solve: its right-hand side is a tangent, so
        # a condition on its status could not be transposed in reverse mode; and the same matrix was just
        # solved successfully in the last Newton step.
        dx = _solve_unmasked(K, -r_dot, method=method, **linear_options)
        return u, dx

    result = NewtonResult(implicit(u, args), k, hist, status)
    if throw:
        result = _raise_on_failure(result)
    return result


def _failure(status, iterations, norms) -> NewtonError:
    """The exception of a failed Newton solve, from its host diagnostics (eagerly or under jit)."""
    k = int(iterations)
    return NewtonError(
        f"newton_solve failed: {_MESSAGES[Status(int(status))]} (iterations {k}, residual norms "
        f"{np.array2string(np.asarray(norms)[: k + 1], precision=3)}). Pass throw=False to get the "
        "NewtonResult."
    )


def _raise_on_failure(result: NewtonResult) -> NewtonResult:
    return raise_on_failure(result, _failure, result.iterations, result.residual_norms)
