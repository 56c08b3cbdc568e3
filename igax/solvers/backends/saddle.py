"""``minres`` and ``block-gmres``: Krylov solves of saddle-point systems in JAX, with block preconditioners.

``minres`` solves any symmetric system, definite or not; given ``saddle=`` (a
:class:`~igax.solvers.SaddlePoint`, or the block sizes ``(n_primal, n_dual)``) it is preconditioned by the
block-diagonal ``diag(Ahat, Shat)^-1``, else by ``|diag(K)|^-1`` (SPD, as MINRES needs). ``block-gmres`` is
restarted GMRES with the block upper-triangular preconditioner and needs ``saddle=``; it also takes a
non-symmetric primal block (Oseen). Both set the preconditioner up once per matrix (:mod:`igax.solvers.
_block_precond`); the forward, tangent and transposed solves share it, and gradients are one more solve
(``custom_linear_solve``), like every backend.
"""

from __future__ import annotations

import jax.numpy as jnp

from igax.solvers import _block_precond as _bp
from igax.solvers import iterative as _it
from igax.solvers._minres import minres
from igax.solvers.backends.base import JaxBackend


def _abs_jacobi(K):
    d = jnp.abs(K.diagonal())
    inv = 1.0 / jnp.where(d > 0, d, 1.0)
    return lambda r: inv * r


class _Saddle(JaxBackend):
    options = frozenset({"saddle"})
    setup_options = frozenset({"saddle"})

    def check_options(self, options):
        s = options.get("saddle")
        if s is not None and not isinstance(s, (_bp.SaddlePoint, tuple)):
            raise TypeError(
                f"saddle= must be an igax.solvers.SaddlePoint or a pair (n_primal, n_dual), got "
                f"{type(s).__name__}."
            )

    def prepare(self, A, options):
        s = options.get("saddle")
        if s is None:
            return None, None
        return _bp.prepare_arrays(A, _bp.as_saddle(s, A)), None

    def setup(self, A, options, arrays=None):
        s = options.get("saddle")
        if s is None:
            return None
        return _bp.setup(A, _bp.as_saddle(s, A), arrays)

    def setup_ok(self, state):
        return None if state is None else state.ok


class MINRES(_Saddle):
    """Preconditioned MINRES for symmetric (indefinite) matrices; ``saddle=``: the block-diagonal
    preconditioner of a saddle-point matrix.

    Example:
        >>> from igax.solvers.backends import get_backend
        >>> get_backend("minres").spd, sorted(get_backend("minres").options)
        (False, ['saddle'])
    """

    name = "minres"

    def setup(self, A, options, arrays=None):
        if not A.symmetric:
            raise ValueError(
                'method="minres" needs a symmetric matrix, but A is not flagged symmetric. Build it with '
                'SparseMatrix(..., symmetric=True) if it is, or use method="block-gmres" (saddle-point '
                'matrices), "gmres", "bicgstab" or a direct method.'
            )
        return super().setup(A, options, arrays)

    def solve(self, A, b, *, transpose, options, state):
        # A is symmetric: the transposed solve is the same solve.
        s = options.get("saddle")
        precond = (
            _abs_jacobi(A) if s is None else (lambda r: _bp.apply_diagonal(state, _bp.as_saddle(s, A), r))
        )
        kw = {k: options[k] for k in ("rtol", "atol", "maxiter") if k in options}
        r = minres(A.matvec, jnp.where(state is None or state.ok, b, 0.0), precond, **kw)
        return r.x, r.iterations, r.status


class BlockGMRES(_Saddle):
    """Restarted GMRES with the block upper-triangular preconditioner ``[[Ahat, B^T], [0, -Shat]]``; needs
    ``saddle=``; ``restart=``: the cycle length.

    Example:
        >>> from igax.solvers.backends import get_backend
        >>> sorted(get_backend("block-gmres").options)
        ['restart', 'saddle']
    """

    name = "block-gmres"
    options = frozenset({"saddle", "restart"})

    def check_options(self, options):
        if options.get("saddle") is None:
            raise ValueError(
                'method="block-gmres" needs saddle=: the block sizes (n_primal, n_dual), primal unknowns '
                "numbered first, or an igax.solvers.SaddlePoint with the Schur approximation (for Stokes the "
                "pressure mass matrix over the viscosity)."
            )
        super().check_options(options)

    def solve(self, A, b, *, transpose, options, state):
        M = A.T if transpose else A
        saddle = _bp.as_saddle(options["saddle"], A)
        kw = {k: options[k] for k in ("rtol", "atol", "maxiter", "restart") if k in options}
        precond = lambda r: _bp.apply_triangular(M, state, saddle, r)  # noqa: E731
        r = _it.gmres(M.matvec, jnp.where(state.ok, b, 0.0), precond, **kw)
        return r.x, r.iterations, r.status
