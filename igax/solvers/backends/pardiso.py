"""Intel MKL PARDISO (through pypardiso's library handle): the default direct solver on CPUs where installed.

The symbolic analysis (fill-reducing ordering) is shared by every matrix of one pattern: a small LRU of
:class:`~igax.solvers._pardiso.PardisoPlan` keyed by ``(pattern, matrix type)``; new values of a known pattern
only refactorise. The ctypes driver is :mod:`igax.solvers._pardiso`.

Cholesky first (the default; :func:`set_cholesky_first` turns it off): stiffness matrices are flagged
symmetric, not positive definite (a form cannot know the sign of its coefficients), yet most are positive
definite. A real matrix flagged symmetric is factorised by Cholesky (``mtype=2``) when its diagonal is
positive (necessary for a positive definite matrix: a zero block of a saddle point or a negative definite
matrix goes straight to Bunch-Kaufman); when PARDISO then meets a non-positive pivot (error -4) the pattern is
remembered and that matrix and later ones of the pattern are factorised by Bunch-Kaufman (``mtype=-2``),
until one of them has Bunch-Kaufman's inertia of a positive definite matrix (no negative eigenvalue, no
perturbed pivot: a line search's extreme trial was the only indefinite one), after which Cholesky is tried
again. A singular positive semi-definite matrix (a pivot below 1e-12 of its diagonal entry: see
:mod:`igax.solvers._pardiso`) goes to Bunch-Kaufman too, which reports it as it always did (a shift-invert
exactly at the lowest eigenvalue), but the pattern is not remembered. Cholesky's analysis needs no values and
no scaling or matching, so :meth:`Pardiso.analyse` can start it as soon as the pattern is known
(``fem.solve`` does while its program is traced), in a thread that overlaps XLA's compilation; the first
factorisation waits for it.

A pattern that knows its grid (``CSRPattern.grid``: spline spaces, degree-1 Lagrange spaces on the structured
meshes) is ordered for Cholesky by the grid's nested dissection (:mod:`igax.solvers._grid_ordering`, checked
against the entries first), given as PARDISO's user permutation: no METIS run, and 3-6 % less fill on the 2D
patterns tried; ``_pardiso.GRID_ORDERING = False`` turns it off.

Bunch-Kaufman's analysis (and LU's) reads the values of the first matrix of a pattern. A factorisation of
other values is checked (more perturbed pivots than the analysed matrix had; a solve's residual above
``direct_rtol``) and on a failed check the analysis is rerun from the current values once, before a failure
is reported; the re-analysed plan replaces the old one in the cache. So a fallback to Bunch-Kaufman does not
need a new analysis each time: an analysis from an extreme matrix (a line search's trial) is replaced by the
first benign matrix that it does not fit.

Complex matrices are factorised natively (complex symmetric ``mtype=6``, complex LU ``mtype=13``, Hermitian
``-4`` / ``4`` with ``hermitian=``): half the unknowns of the real block form, one factorisation for a solve
and its gradient. Measured figures are in ``benchmarks/bench_helmholtz.py --native``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from igax.solvers import _pardiso
from igax.solvers.backends.base import HostBackend, stats

_plans: OrderedDict[tuple, _pardiso.PardisoPlan] = OrderedDict()
_MAX_PLANS = 4
# Patterns (digests) whose matrices Cholesky refused (a non-positive pivot): Bunch-Kaufman from then on.
_not_spd: OrderedDict[bytes, None] = OrderedDict()
_MAX_NOT_SPD = 64
_lock = threading.RLock()  # the plan cache is used by callbacks and by the tracing thread (analyse)


def _plan(pattern, kind, values, background=False) -> _pardiso.PardisoPlan:
    """The cached plan of ``(pattern, kind, complex)``; a new one (an analysis) when there is none or its
    factor slots are all taken."""
    key = (pattern._digest, kind, values is not None and np.iscomplexobj(values))
    with _lock:
        plan = _plans.get(key)
        while plan is not None and plan.successor is not None:  # re-analysed from other values (stale)
            plan = _plans[key] = plan.successor
        # A plan whose background analysis failed has reported it to the factorisation that waited for it;
        # the next one analyses again rather than meeting the same error for the pattern's life.
        if plan is None or not plan.free_slots or plan.failed:
            plan = _pardiso.PardisoPlan(pattern, kind, values, background=background)
            _plans[key] = plan
            stats.analyses += 1
            while len(_plans) > _MAX_PLANS:
                _plans.popitem(last=False)  # destroyed once its last factor is evicted
        _plans.move_to_end(key)
        return plan


# On by default. It was opt-in while two cases of the test suite failed with it, both fixed in
# igax.solvers._pardiso: a line search's trial matrix that is not positive definite (exp(180) in a
# coefficient) sent the pattern to Bunch-Kaufman, whose analysis (scaling and weighted matching) was then
# computed from that extreme matrix and reused for the benign ones that followed (relative residual 0.96; now
# re-analysed on the failed check); and a singular positive semi-definite matrix (shift-invert exactly at the
# lowest eigenvalue) factorised without the error that Bunch-Kaufman's inertia gives (now found from the
# factor's pivots).
_CHOLESKY_FIRST = [True]


def set_cholesky_first(on: bool) -> bool:
    """Factorise real matrices flagged symmetric by Cholesky first (PARDISO ``mtype=2``), falling back to
    Bunch-Kaufman (``mtype=-2``) when Cholesky meets a non-positive pivot; on by default.

    Cholesky's analysis needs the pattern only, so :func:`igax.fem.solve` starts it in a background thread
    while its program is traced and compiled; at 1M P1 DOFs this takes most of PARDISO's analysis out of a
    jitted gradient's first call, and Cholesky's analysis and factorisation are a fifth and a tenth cheaper.
    Switch it off to factorise every real symmetric matrix by Bunch-Kaufman at once, e.g. for a sequence of
    indefinite matrices with a positive diagonal (Helmholtz ``K - k^2 M``), where each pattern pays one
    refused Cholesky factorisation before it is remembered as indefinite.

    Arguments:
        on: True to try Cholesky first, False for Bunch-Kaufman for every real symmetric matrix.

    Returns:
        The previous setting.

    Example:
        >>> from igax import solvers
        >>> solvers.set_cholesky_first(False)
        True
        >>> solvers.set_cholesky_first(True)
        False
    """
    if not isinstance(on, bool):
        raise TypeError(f"on must be True or False, got {on!r}.")
    previous, _CHOLESKY_FIRST[0] = _CHOLESKY_FIRST[0], on
    return previous


def _cholesky_first(pattern) -> bool:
    """Whether a real symmetric matrix of ``pattern`` may be positive definite: Cholesky first is on, it has
    not refused the pattern and every diagonal entry is stored."""
    if not _CHOLESKY_FIRST[0]:
        return False
    with _lock:
        refused = pattern._digest in _not_spd
    return not refused and bool(np.all(pattern.diagonal_slots >= 0))


def _refuse(pattern) -> None:
    """Cholesky met a non-positive pivot: the pattern goes to Bunch-Kaufman, its Cholesky plan is dropped
    (its analysis memory is freed with its last factor)."""
    with _lock:
        _not_spd[pattern._digest] = None
        while len(_not_spd) > _MAX_NOT_SPD:
            _not_spd.popitem(last=False)
        _plans.pop((pattern._digest, "spd", False), None)


def _forgive(pattern) -> None:
    """A refused pattern's matrix was positive definite after all: Cholesky first again for the next."""
    with _lock:
        _not_spd.pop(pattern._digest, None)


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
    options = frozenset({"hermitian", "direct_rtol"})  # direct_rtol: the stale-factor check
    copies_values = True  # each factor keeps its own copy of the entries PARDISO reads (_pardiso._data)

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
        # A factor of values other than those analysed re-analyses when a solve's residual is above this.
        rtol = options.get("direct_rtol") or float(np.finfo(np.float64).eps) ** 0.25
        real_sym = kind == "sym" and not np.iscomplexobj(values) and _CHOLESKY_FIRST[0]
        if real_sym and _cholesky_first(pattern):
            # Cholesky first (see the module's docstring); a positive diagonal is necessary for it to succeed.
            if np.all(values[pattern.diagonal_slots] > 0):
                try:
                    return _plan(pattern, "spd", values).factor(values, check_singular=True)
                except _pardiso.PardisoError as err:
                    if err.code == _pardiso.SINGULAR:
                        # Positive semi-definite and singular: Bunch-Kaufman reports it as before (perturbed
                        # pivots, the residual); the pattern stays with Cholesky.
                        return _plan(pattern, kind, values).factor(values, check_rtol=rtol)
                    if err.code != _pardiso.ZERO_PIVOT:
                        raise
            _refuse(pattern)
        # One symbolic analysis per (pattern, matrix type): new values of a known pattern only refactorise.
        f = _plan(pattern, kind, values).factor(values, check_rtol=rtol)
        if real_sym and f.negative == 0 and f.perturbed == 0:
            # Bunch-Kaufman's inertia says positive definite: a refusal came from another matrix (a line
            # search's extreme trial); the next matrix of the pattern tries Cholesky again.
            _forgive(pattern)
        return f

    def analyse(self, pattern, kind, dtype):
        """Start the symbolic analysis of ``pattern`` in the background, before any values exist (once per
        pattern while cached): for real matrices flagged symmetric or positive definite, which Cholesky
        factorises first unless :func:`set_cholesky_first` turned it off. Called when the pattern is known,
        e.g. while a program is traced; otherwise a no-op.

        Arguments:
            pattern: the :class:`~igax.solvers.CSRPattern` of the matrices to come.
            kind: ``"spd"``, ``"sym"`` or ``"gen"``.
            dtype: their dtype (complex: nothing is started).

        Returns:
            The :class:`~igax.solvers._pardiso.PardisoPlan` (its analysis running or done), or None.

        Example:
            >>> import numpy as np, scipy.sparse as sp
            >>> from igax.solvers.backends import get_backend
            >>> from igax.solvers.sparse import CSRPattern
            >>> K = sp.csr_matrix(np.array([[2.0, -1.0], [-1.0, 2.0]]))
            >>> from igax import solvers
            >>> backend = get_backend("pardiso")
            >>> plan = backend.analyse(CSRPattern(K.indptr, K.indices, K.shape), "sym", np.float64)
            >>> plan.mtype if backend.available() else 2            # Cholesky
            2
        """
        if kind == "gen" or np.issubdtype(dtype, np.complexfloating) or not _cholesky_first(pattern):
            return None
        if pattern.shape[0] == 0 or not self.available():
            return None
        with _lock:
            plan = _plans.get((pattern._digest, "spd", False))
            return plan if plan is not None else _plan(pattern, "spd", None, background=True)
