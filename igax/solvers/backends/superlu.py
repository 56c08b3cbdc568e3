"""SuperLU (SciPy's ``splu``): the direct solver that is always available.

It factorises complex matrices natively too (``complex_form="native"``), but not by default: SciPy's complex
SuperLU is far slower than its real one on the real block form of twice the size (measured on a k = 40
Helmholtz matrix, degree-3 splines, 9801 dofs, 2 shared cores: complex ``splu`` 9-17 s with 3.4M factor
entries, the block form 0.6-0.95 s with 11.4M; the same ordering and pivot threshold), so complex systems go
through the block form (:mod:`igax.solvers._complex`) unless asked otherwise.
"""

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
    complex_native = True
    complex_native_default = False  # see the module docstring: the block form is ~10x faster here

    def factor(self, pattern, values, kind, options):
        # For symmetric matrices a symmetric fill-reducing ordering with diagonal pivoting preferred is much
        # sparser and faster than COLAMD; the threshold still allows off-diagonal pivots where needed.
        if kind != "gen":
            kw = {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.01}
        else:
            kw = {"permc_spec": "COLAMD"}
        kw.update(dict(options.get("superlu_options", ())))
        return _SuperLUFactor(spla.splu(csr(pattern, values).tocsc(), **kw))
