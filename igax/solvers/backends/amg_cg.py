"""pyamg's smoothed-aggregation AMG as a preconditioner of CG, on the host; for large SPD systems."""

from __future__ import annotations

import functools
import warnings

import numpy as np

from igax.solvers.backends.base import Factor, HostBackend, csr


@functools.cache
def pyamg_installed() -> bool:
    """Whether pyamg imports (also what ``mg-cg`` needs for its algebraic hierarchies)."""
    try:
        import pyamg  # noqa: F401
    except Exception:
        return False
    return True


class _AMGFactor(Factor):
    def __init__(self, ml, rtol: float, maxiter: int):
        self.ml = ml
        self.rtol = rtol
        self.maxiter = maxiter

    def solve(self, B, transpose):
        # A is SPD (checked on the traced side), so the transpose solve is the same solve.
        X = np.empty_like(B)
        iterations = np.zeros(B.shape[1], dtype=np.int32)
        for j in range(B.shape[1]):
            history = []  # pyamg appends the residual norm of the start and of every iteration
            # pyamg's CG warns (and stops) when it meets an indefinite matrix. The caller judges convergence
            # by the true residual and raises SolverError with it, so that warning would only repeat
            # the error, from a host thread and without the residual: drop it, and pass any other warning on.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                X[:, j] = self.ml.solve(
                    B[:, j], tol=self.rtol, accel="cg", maxiter=self.maxiter, residuals=history
                )
            for w in caught:
                if "indefinite matrix detected" not in str(w.message).lower():
                    warnings.warn(w.message, w.category, stacklevel=2)
            iterations[j] = max(len(history) - 1, 0)
        self.last_iterations = iterations
        return X


class AMGCG(HostBackend):
    """CG preconditioned by pyamg's smoothed aggregation; SPD matrices; converged when the true residual is
    below ``10 rtol`` (pyamg returns its last iterate without a flag).

    Example:
        >>> from igax.solvers.backends import get_backend
        >>> get_backend("amg-cg").spd, get_backend("amg-cg").iterative
        (True, True)
    """

    name = "amg-cg"
    label = "pyamg"
    spd = True
    iterative = True
    requirement = 'method="amg-cg" needs pyamg: `pip install pyamg`, or use method="cg".'

    def available(self):
        return pyamg_installed()

    def factor(self, pattern, values, kind, options):
        import pyamg  # optional dependency: imported only when used

        ml = pyamg.smoothed_aggregation_solver(csr(pattern, values), symmetry="symmetric")
        return _AMGFactor(ml, float(options.get("rtol", 1e-10)), int(options.get("maxiter", 500)))
