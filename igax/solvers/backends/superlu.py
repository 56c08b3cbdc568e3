"""SuperLU (SciPy's ``splu``): the direct solver that is always available."""

from __future__ import annotations

import scipy.sparse.linalg as spla

from igax.solvers.backends.base import Factor, HostBackend, csr


class _SuperLUFactor(Factor):
    def __init__(self, lu):
        self.lu = lu

    def solve(self, B, transpose):
        return self.lu.solve(B, trans="T" if transpose else "N")


class SuperLU(HostBackend):
    """Sparse LU with partial pivoting (SciPy); one factorisation serves ``A`` and ``A^T`` solves.

    Example:
        >>> from igax.solvers.backends import get_backend
        >>> get_backend("superlu").available(), get_backend("superlu").spd
        (True, False)
    """

    name = "superlu"
    label = "SuperLU"
    default_for = ("cpu",)
    priority = 0  # the fallback: PARDISO is faster where installed

    def factor(self, pattern, values, kind, options):
        # For symmetric matrices a symmetric fill-reducing ordering with diagonal pivoting preferred is much
        # sparser and faster than COLAMD; the threshold still allows off-diagonal pivots where needed.
        if kind != "gen":
            kw = {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.01}
        else:
            kw = {"permc_spec": "COLAMD"}
        kw.update(dict(options.get("superlu_options", ())))
        return _SuperLUFactor(spla.splu(csr(pattern, values).tocsc(), **kw))
