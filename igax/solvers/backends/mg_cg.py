"""``mg-cg``: CG preconditioned by a multigrid V-cycle, in JAX on the device; SPD matrices.

The hierarchy (prolongations) is given with ``hierarchy=`` (geometric ones come from ``igax.fem``) or built
algebraically from the pattern with pyamg and cached (:mod:`igax.solvers.multigrid`). Its coarse operators,
smoother and coarse factor are set up in JAX from the matrix values once per matrix; the forward, tangent and
transposed solves share that setup (the matrix is SPD, so the transposed solve is the same solve).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from igax.solvers import iterative as _it
from igax.solvers import multigrid as _mg
from igax.solvers.backends.amg_cg import pyamg_installed
from igax.solvers.backends.base import JaxBackend

# CG's iteration cap when maxiter is not given: a V-cycle-preconditioned CG converges in tens of iterations,
# so hitting this means the system is not SPD (or the hierarchy does not fit it).
MAXITER = 500


def resolve_hierarchy(A, H) -> _mg.Hierarchy:
    """``hierarchy=`` checked against ``A``, or the algebraic hierarchy of ``A``'s pattern (cached)."""
    if H is None:
        H = _mg.auto_hierarchy(A)
    H.check_matrix(A)
    return H


class MGCG(JaxBackend):
    """CG with one multigrid V-cycle (Chebyshev smoothing) as its preconditioner.

    Example:
        >>> from igax.solvers.backends import get_backend
        >>> B = get_backend("mg-cg")
        >>> B.spd, B.options == {"hierarchy"}, B.default_for
        (True, True, ('accelerator-mg',))
    """

    name = "mg-cg"
    spd = True
    options = frozenset({"hierarchy"})
    setup_options = frozenset({"hierarchy"})
    default_for = ("accelerator-mg",)

    def available(self):
        return pyamg_installed()  # the automatic (algebraic) hierarchy needs pyamg

    def check_available(self, options):
        if options.get("hierarchy") is None and not self.available():
            raise ImportError(
                'method="mg-cg" without hierarchy= builds an algebraic hierarchy with pyamg, which is not '
                "installed: `pip install pyamg`, or pass hierarchy=igax.solvers.Hierarchy([...]) (igax.fem "
                "builds geometric ones)."
            )

    def check_options(self, options):
        H = options.get("hierarchy")
        if H is not None and not isinstance(H, _mg.Hierarchy):
            raise TypeError(
                f"hierarchy must be an igax.solvers.Hierarchy, got {type(H).__name__}; build "
                "one with Hierarchy([P0, P1, ...]) from the prolongations, amg_hierarchy(A), or igax.fem's "
                "geometric hierarchies."
            )

    def prepare(self, A, options):
        auto = options.get("hierarchy") is None
        options["hierarchy"] = H = resolve_hierarchy(A, options.get("hierarchy"))
        arrays = H.plan(A.pattern).arrays  # arguments of the program, not constants
        if not auto:
            return arrays, None
        # eager solves only: the automatic hierarchy is rebuilt when it stops fitting the values
        return arrays, lambda result: _mg.record_iterations(A.pattern, H, result.iterations)

    def setup(self, A, options, arrays=None):
        options["hierarchy"] = H = resolve_hierarchy(A, options.get("hierarchy"))
        plan = H.plan(A.pattern)
        return _mg.setup(plan.static, plan.arrays if arrays is None else arrays, A.values)

    def setup_ok(self, state):
        return state.ok

    def solve(self, A, b, *, transpose, options, state):
        # A is SPD: the transposed solve is the same solve.
        H = options["hierarchy"]
        kw = {k: options[k] for k in ("rtol", "atol", "maxiter") if k in options}
        kw.setdefault("maxiter", MAXITER)
        cycle = functools.partial(
            _mg.vcycle, state, degree=H.options["chebyshev_degree"], eig_ratio=H.options["eig_ratio"]
        )
        # A failed setup (not SPD) solves 0 = 0 at once; the status reports it and the value becomes NaN.
        r = _it.cg(A.matvec, jnp.where(state.ok, b, 0.0), cycle, **kw)
        return r.x, r.iterations, r.status
