"""The pure-JAX Krylov backends ``cg``, ``bicgstab`` and ``gmres``, Jacobi-preconditioned, on the device.

The loops are :mod:`igax.solvers.iterative`; a backend here only picks the loop and its options. The
transposed solve (reverse mode) runs the same loop with ``A^T``.
"""

from __future__ import annotations

from typing import ClassVar

from igax.solvers import iterative as _it
from igax.solvers.backends.base import JaxBackend


class _Krylov(JaxBackend):
    algorithm: ClassVar = None
    keywords: ClassVar[tuple[str, ...]] = ("rtol", "atol", "maxiter")

    def solve(self, A, b, *, transpose, options, state):
        M = A.T if transpose else A
        kw = {k: options[k] for k in self.keywords if k in options}
        r = type(self).algorithm(M.matvec, b, _it.jacobi(M), **kw)
        return r.x, r.iterations, r.status


class CG(_Krylov):
    """Conjugate gradients with the Jacobi preconditioner; SPD matrices.

    Example:
        >>> from igax.solvers.backends import get_backend
        >>> get_backend("cg").spd, get_backend("cg").on_host
        (True, False)
    """

    name = "cg"
    spd = True
    algorithm = staticmethod(_it.cg)
    default_for = ("accelerator-spd",)


class BiCGSTAB(_Krylov):
    """BiCGSTAB with the Jacobi preconditioner; any square matrix (the automatic choice on accelerators for
    matrices that are not SPD)."""

    name = "bicgstab"
    algorithm = staticmethod(_it.bicgstab)
    default_for = ("accelerator",)


class GMRES(_Krylov):
    """Restarted GMRES with the Jacobi preconditioner; any square matrix; ``restart=``: the cycle length."""

    name = "gmres"
    algorithm = staticmethod(_it.gmres)
    options = frozenset({"restart"})
    keywords = ("rtol", "atol", "maxiter", "restart")
