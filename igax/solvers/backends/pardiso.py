"""Intel MKL PARDISO (through pypardiso's library handle): the default direct solver on CPUs where installed.

The symbolic analysis (fill-reducing ordering) is shared by every matrix of one pattern: a small LRU of
:class:`~igax.solvers._pardiso.PardisoPlan` keyed by ``(pattern, matrix type)``; new values of a known pattern
only refactorise. The ctypes driver is :mod:`igax.solvers._pardiso`.

Complex matrices are factorised natively (complex symmetric ``mtype=6``, complex LU ``mtype=13``, Hermitian
``-4`` / ``4`` with ``hermitian=``): half the unknowns of the real block form, one factorisation for a solve
and its gradient. Measured figures are in ``benchmarks/bench_helmholtz.py --native``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from igax.solvers import _pardiso
from igax.solvers.backends.base import HostBackend, stats

_plans: OrderedDict[tuple, _pardiso.PardisoPlan] = OrderedDict()
_MAX_PLANS = 4


class Pardiso(HostBackend):
    """PARDISO: Cholesky for SPD, Bunch-Kaufman for symmetric, LU with matching for other matrices; the
    complex types natively (option ``hermitian=True`` or ``"positive_definite"``: a Hermitian matrix, which is
    passed unflagged, since ``A != A.T``).

    Example:
        >>> from igax.solvers.backends import get_backend
        >>> get_backend("pardiso").label, get_backend("pardiso").default_for
        ('PARDISO', ('cpu',))
    """

    name = "pardiso"
    label = "PARDISO"
    requirement = (
        'method="pardiso" needs pypardiso (Intel MKL, x86_64 only): `pip install pypardiso`, or use '
        'method="superlu", which is always available.'
    )
    default_for = ("cpu",)
    priority = 10
    complex_native = True
    options = frozenset({"hermitian"})

    def available(self):
        return _pardiso.available()

    def check_options(self, options):
        h = options.get("hermitian", False)
        if h not in (False, True, "positive_definite"):
            raise ValueError(
                'hermitian= must be False, True (A = conj(A.T), indefinite) or "positive_definite", '
                f"got {h!r}."
            )

    def factor(self, pattern, values, kind, options):
        h = options.get("hermitian", False)
        if h and np.iscomplexobj(values):
            # A Hermitian matrix is flagged unsymmetric (A != A.T), so kind is "gen" here.
            kind = "hpd" if h == "positive_definite" else "herm"
        # One symbolic analysis per (pattern, matrix type): new values of a known pattern only refactorise.
        key = (pattern._digest, kind, np.iscomplexobj(values))
        plan = _plans.get(key)
        if plan is None or not plan.free_slots:
            plan = _pardiso.PardisoPlan(pattern, kind, values)
            _plans[key] = plan
            stats.analyses += 1
            while len(_plans) > _MAX_PLANS:
                _plans.popitem(last=False)  # destroyed once its last factor is evicted
        _plans.move_to_end(key)
        return plan.factor(values)
