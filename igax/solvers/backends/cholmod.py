"""CHOLMOD (scikit-sparse): sparse Cholesky for symmetric positive definite matrices."""

from __future__ import annotations

import functools

from igax.solvers.backends.base import Factor, HostBackend, csr


class _CholmodFactor(Factor):
    def __init__(self, factor):
        self.factor = factor

    def solve(self, B, transpose):
        return self.factor(B)  # A is SPD: the transposed solve is the same solve


@functools.cache
def _installed() -> bool:
    try:
        import sksparse.cholmod  # noqa: F401
    except Exception:
        return False
    return True


class Cholmod(HostBackend):
    """Supernodal Cholesky (SuiteSparse through scikit-sparse); SPD matrices only.

    Example:
        >>> from igax.solvers.backends import get_backend
        >>> get_backend("cholmod").spd
        True
    """

    name = "cholmod"
    label = "CHOLMOD"
    spd = True
    requirement = (
        'method="cholmod" needs scikit-sparse (`pip install scikit-sparse`, which needs SuiteSparse); '
        'it is not installed. Use method="pardiso" or method="superlu" instead.'
    )

    def available(self):
        return _installed()

    def factor(self, pattern, values, kind, options):
        from sksparse.cholmod import cholesky  # optional dependency: imported only when used

        return _CholmodFactor(cholesky(csr(pattern, values).tocsc()))
