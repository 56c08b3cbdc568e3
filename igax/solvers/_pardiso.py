"""Intel MKL PARDISO through ctypes, with the symbolic analysis shared by all matrices of one pattern.

pypardiso (optional) brings MKL and can locate ``mkl_rt`` (see :func:`_libmkl`); we declare the ``pardiso`` C
signature and drive the phases ourselves, because its solver object keeps one factorisation and redoes the
analysis (fill-reducing ordering, the most expensive phase for 2D problems) for every new matrix. Here a
:class:`PardisoPlan` runs phase 11 once per ``(pattern, matrix type)`` and numeric factorisations of matrices
with that pattern (Newton tangents, optimisation iterates, a ``vmap`` over values) each take one of PARDISO's
``maxfct`` factor slots (``mnum``).

Matrix types: SPD matrices use Cholesky (``mtype=2``) on the upper triangle; other symmetric matrices use
Bunch-Kaufman (``mtype=-2``); everything else real unsymmetric LU (``mtype=11``) with scaling and weighted
matching, whose transposed solve uses the same factors (``iparm[11] = 2``). (The backend tries Cholesky first
for symmetric matrices too: :mod:`igax.solvers.backends.pardiso`.)

Cholesky's analysis reads the pattern only (no scaling or matching), so a plan of ``kind="spd"`` can be made
without values and in the background (``background=True``): the analysis then runs in a thread, e.g. while
XLA compiles the program that will produce the values, and the first :meth:`PardisoPlan.factor` waits for it.
Its fill-reducing ordering is METIS's nested dissection, or, for a pattern carrying a verified grid hint,
the grid's own nested dissection given as the user permutation (see ``GRID_ORDERING``).

The other real and complex types read the values in their analysis (scaling and weighted matching), and a
plan reuses the analysis of the first matrix it saw. When that matrix was extreme (a line search's trial with
exp(180) in a coefficient), a later benign matrix of the pattern was solved with a relative residual of 0.96.
A factor of values other than those analysed is therefore *stale* and checked: the perturbed pivots of its
factorisation (``iparm[13]``) against those of the analysed matrix, and the residual of each solve against
``check_rtol``. On a failed check the analysis is rerun from the current values once and the plan replaced by
the new one (:attr:`PardisoPlan.successor`), before any failure is reported.

Cholesky reports a non-positive pivot (error -4) but factorises a singular positive semi-definite matrix
silently, its last pivot rounding noise. With ``iparm[55] = 1`` PARDISO gives the factor's diagonal
(``pardiso_getdiag``): a pivot ``d_i`` is never below ``lambda_min(A)`` and a diagonal entry ``a_ii`` never
above ``lambda_max(A)``, so ``min d_i / a_ii < SINGULAR_PIVOT`` (1e-12) flags only matrices with a condition
number above 1e12: :meth:`PardisoPlan.factor` then raises (``code = SINGULAR``) when asked to check.

Complex values (complex128) are factorised natively, at half the size of the real block form of
:mod:`igax.solvers._complex`: complex symmetric matrices (``A = A^T``, Helmholtz with impedance or PML) use
``mtype=6`` on the upper triangle, whose transposed solve is the solve itself; general complex matrices the
complex LU ``mtype=13``, transposed (not conjugated) solves by ``iparm[11] = 2`` with the same factors;
Hermitian matrices (flagged by the backend option ``hermitian=``) ``mtype=-4`` (indefinite) or ``4``
(positive definite), whose transposed solve ``A^T x = b`` is ``conj(A^{-1} conj(b))``: again the same factors.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import importlib.util
import os
import sys
import threading
import time

import numpy as np
import scipy.sparse as sp

from igax.solvers import _grid_ordering
from igax.solvers.backends.base import Factor, stats

MAXFCT = 16

_ERRORS = {
    -1: "input inconsistent",
    -2: "not enough memory",
    -3: "reordering problem",
    -4: "zero pivot (singular matrix, or not positive definite although flagged so)",
    -5: "unclassified internal error",
    -6: "reordering failed",
    -7: "diagonal matrix is singular",
    -8: "32-bit integer overflow",
    -9: "not enough memory for out-of-core",
    -10: "error opening out-of-core files",
    -11: "read/write error with out-of-core files",
}


class PardisoError(RuntimeError):
    """A failed PARDISO phase; ``code`` is PARDISO's error number (-4: a zero or, for Cholesky, a
    non-positive pivot)."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


ZERO_PIVOT = -4
SINGULAR = -104  # ours, not PARDISO's: a Cholesky pivot below SINGULAR_PIVOT times its diagonal entry
# A pivot of a singular positive semi-definite matrix is rounding noise: 2.7e-15 of its diagonal entry for
# the pure Neumann 1D Laplacian (60 dofs); the smallest ratio of a Dirichlet Laplacian is 0.03 (1D, 60 dofs)
# or 0.37 (2D), and the ratio is never below 1 / cond(A) (see the module's docstring).
SINGULAR_PIVOT = 1e-12


@functools.cache
def _libmkl():
    """The ``mkl_rt`` library, loaded once per process, found where pypardiso finds it, in its order.

    pypardiso's solver object looks the library up in its constructor: its override ``PYPARDISO_MKL_RT``, then
    ``find_library``, then, where that finds nothing (MKL installed by pip into the environment, off the
    loader's path), a recursive glob of ``sys.prefix/lib*``: 0.1 s per object in this project's environment.
    Each of the four handles below built one, so the first solve of a process spent 0.4 s in it (most of it
    while its program was traced, before Cholesky's analysis could start). Here the same order, with the
    folder where pip's ``mkl`` package (pypardiso's requirement) puts the library, ``sys.prefix/lib``
    (``Library/bin`` on Windows), looked at before the glob; pypardiso's own lookup is the last resort. An
    override that does not load raises, as in pypardiso.
    """
    # pypardiso is what declares MKL a dependency (and its lookup is the fallback below); it is not imported
    # unless needed: importing it took 0.12 s (its scipy aliases), in the trace of a process's first solve.
    if importlib.util.find_spec("pypardiso") is None:
        raise ImportError("pypardiso is not installed")
    override = os.environ.get("PYPARDISO_MKL_RT")
    if override:
        return ctypes.CDLL(override)
    found = ctypes.util.find_library("mkl_rt") or ctypes.util.find_library("mkl_rt.1")
    candidates = [found] if found else []
    places = (("lib", "libmkl_rt.so*"), ("lib", "libmkl_rt*.dylib"), ("Library/bin", "mkl_rt*.dll"))
    for folder, name in places:
        candidates += sorted(glob.glob(os.path.join(sys.prefix, folder, name)), key=len)
    for path in candidates:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    import pypardiso

    return pypardiso.PyPardisoSolver().libmkl


@functools.cache
def _mkl_pardiso():
    """The C function ``pardiso`` with its signature declared (pt, maxfct, mnum, mtype, phase, n, a, ia, ja,
    perm, nrhs, iparm, msglvl, b, x, error)."""
    fn = _libmkl().pardiso
    i32, ptr = ctypes.POINTER(ctypes.c_int32), ctypes.c_void_p
    fn.argtypes = [ctypes.POINTER(ctypes.c_int64), i32, i32, i32, i32, i32, ptr, i32, i32, i32, i32, i32, i32,
                   ptr, ptr, i32]  # fmt: skip
    fn.restype = None
    return fn


# Systems with fewer stored entries than this are factorised and solved by one MKL thread. On two cores
# shared with XLA's own thread pool, MKL's second OpenMP thread bought nothing at 10k DOFs and cost a lot:
# after each PARDISO call it spins for OpenMP's block time (200 ms) on the core that XLA's next operations
# (the gradient's sampled product and assembly backward pass) then share. With one thread, the 10k degree-2
# spline gradient took 47-53 ms of CPU instead of 75-77 ms, grad / forward 1.20-1.25 instead of 1.45-1.61
# (benchmarks/bench_gradient.py, CPU time). The count is fixed per plan: PARDISO crashes when its
# factorisation runs on fewer threads than its analysis did.
SINGLE_THREAD_NNZ = 1_000_000

# The ordering of a plan running on several MKL threads, up to PARALLEL_ORDERING_MAX_ENTRIES entries given to
# PARDISO (the upper triangle for the symmetric types): METIS's OpenMP nested dissection (iparm[1] = 3)
# instead of the sequential one. The same fill (hence the same factorisation time) on the patterns tried, a
# faster analysis: on 2 cores, P1 with 1M dofs (4M entries) 2.31 s instead of 2.81 s in the gradient
# benchmark (its first call waited 1.02 s for it instead of 1.69 s, for the same CPU time), 3D 7-point 216k
# dofs 0.56-0.64 s instead of 0.82-1.26 s. Above the limit the sequential one: a degree-2 spline space with 1M
# dofs (13M entries) was analysed in 4.8-5.0 s instead of 4.9-7.5 s, but the worker threads' heaps that
# keep_freed_memory() keeps raised the steady peak of its jitted forward from 3.81 to 3.98-4.01 GB.
PARALLEL_ORDERING = True
PARALLEL_ORDERING_MAX_ENTRIES = 8_000_000

# Cholesky plans of a pattern that carries a grid hint (``pattern.grid``: spline spaces, degree-1 Lagrange
# spaces on the structured meshes), verified against the entries PARDISO is given, are ordered by the grid's
# nested dissection (igax.solvers._grid_ordering), PARDISO's user permutation (iparm[4] = 1), instead of by
# METIS: the analysis is then the symbolic factorisation alone. On 2 cores: a degree-2 spline space with 1M
# dofs 0.76 s + 0.08 s (check and ordering, CPU) instead of 4.0 s, P1 with 1M dofs 0.30 s + 0.06 s instead of
# 1.6-1.8 s, with 3-6 % fewer factor entries than METIS's in 2D and 0.5-3.5 % in 3D (P1 tetrahedra, Q1
# elasticity, degree-2 spline elasticity) and factorisations as fast or faster (docs/performance.md, "Fourth
# pass"). The other matrix types keep METIS: their analysis also scales and matches from the values. False:
# METIS for every pattern.
GRID_ORDERING = True


@functools.cache
def _mkl_set_threads_local():
    """mkl_rt's ``MKL_Set_Num_Threads_Local`` (the calling thread's MKL thread count; 0: the global one), or
    None where the library lacks it."""
    fn = getattr(_libmkl(), "MKL_Set_Num_Threads_Local", None)
    if fn is not None:
        fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
    return fn


@functools.cache
def _mkl_max_threads():
    """mkl_rt's ``MKL_Get_Max_Threads`` (the MKL thread count of the calling thread: its own setting, else the
    global one), or None where the library lacks it."""
    fn = getattr(_libmkl(), "MKL_Get_Max_Threads", None)
    if fn is not None:
        fn.restype, fn.argtypes = ctypes.c_int, []
    return fn


@functools.cache
def _mkl_getdiag():
    f = _libmkl().pardiso_getdiag
    p = ctypes.c_void_p
    f.argtypes = [p, p, p, ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32)]
    f.restype = None
    return f


def available() -> bool:
    try:
        _mkl_pardiso()
    except Exception:
        return False
    return True


class PardisoPlan:
    """Symbolic analysis of one sparsity pattern; numeric factors live in slots ``1..MAXFCT``.

    Arguments:
        pattern: the full :class:`~igax.solvers.sparse.CSRPattern`.
        kind: ``"spd"``, ``"sym"`` or ``"gen"``; for complex values also ``"herm"`` (Hermitian) and ``"hpd"``
            (Hermitian positive definite). Complex ``"spd"`` is treated as ``"sym"`` (complex symmetric).
        values: values of a first matrix (phase 11 uses them for scaling and matching when unsymmetric); a
            complex dtype selects the complex matrix types. None for a real ``"spd"`` plan: Cholesky's
            analysis reads the pattern only.
        background: run the analysis in a thread; :meth:`factor` waits for it (``wait_s`` says how long).

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> from igax.solvers import _pardiso
        >>> from igax.solvers.sparse import CSRPattern
        >>> K = sp.csr_matrix(np.array([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]]))
        >>> pattern = CSRPattern(K.indptr, K.indices, K.shape)
        >>> if _pardiso.available():       # (pypardiso: Intel MKL, x86_64 only)
        ...     plan = _pardiso.PardisoPlan(pattern, "spd", None, background=True)
        ...     x = plan.factor(K.data).solve(np.ones((3, 1)), False)[:, 0]  # waits for the analysis
        ... else:
        ...     x = np.array([1.5, 2.0, 1.5])
        >>> x.round(12).tolist()
        [1.5, 2.0, 1.5]
    """

    def __init__(self, pattern, kind: str, values: np.ndarray | None, *, background: bool = False):
        self.complex = values is not None and np.iscomplexobj(values)
        self.dtype = np.complex128 if self.complex else np.float64
        if self.complex:
            kind = "sym" if kind == "spd" else kind
            self.mtype = {"sym": 6, "gen": 13, "herm": -4, "hpd": 4}[kind]
        elif kind in ("herm", "hpd"):
            raise ValueError(f"PARDISO kind {kind!r} (Hermitian) needs complex values")
        else:
            self.mtype = {"spd": 2, "sym": -2, "gen": 11}[kind]
        if values is None and self.mtype != 2:
            # scaling and matching (and the unsymmetric types' analysis) read the values
            raise ValueError(f'a PARDISO plan of kind {kind!r} needs values; only "spd" is analysed without')
        self.kind = kind
        self.n = pattern.shape[0]
        self.perm = None  # PARDISO's user permutation (zero-based), where a grid ordering is used
        # MKL threads of every phase of this plan (0: MKL's global setting, read and recorded when the
        # analysis starts, so that a later change of the global setting does not reach this plan's
        # factorisations: PARDISO crashes when they run on fewer threads than its analysis did); see
        # SINGLE_THREAD_NNZ
        self.threads = 1 if pattern.nnz < SINGLE_THREAD_NNZ else 0
        if not self.threads:
            # The count the caller's thread would run MKL on (its local setting, else the global one), read
            # here and not in a background analysis thread (which has no local setting): every phase of the
            # plan runs on it, so a later global change cannot make a factorisation use fewer threads than
            # its analysis (PARDISO fails then).
            get_threads = _mkl_max_threads()
            if get_threads is not None and _mkl_set_threads_local() is not None:
                self.threads = max(int(get_threads()), 1)
        self._init_state()
        self._analysed = values  # identity only: marks the factorisation of the analysed values (fresh)
        if background:
            self._thread = threading.Thread(target=self._analyse_guarded, args=(pattern, values), daemon=True)
            self._thread.start()
        else:
            self._analyse(pattern, values)

    def _init_state(self):
        self.free_slots = list(range(MAXFCT, 0, -1))
        self.lock = threading.Lock()
        self.analysis_s = self.factor_s = None  # seconds of phase 11 and of the last phase 22 (benchmarks)
        self.wait_s = 0.0  # seconds the first factorisation waited for a background analysis
        # Cholesky's analysis reads the pattern only; the others scale and match by the values analysed.
        self.value_dependent = self.mtype not in (2, 4)
        self.base_perturbed = 0  # iparm[13] (perturbed pivots) of the analysed matrix's factorisation
        self.successor = None  # the plan re-analysed from other values that replaces this one (see factor)
        self._error = None
        self._thread = None
        self._analysed = None
        self.ordering = "metis"  # or "grid": the user permutation self.perm (see GRID_ORDERING)
        self.ordering_s = 0.0  # seconds to check the grid hint and form its ordering

    def _analyse_guarded(self, pattern, values):
        try:
            self._analyse(pattern, values)
        except BaseException as err:  # re-raised by the first factorisation that waits for it
            self._error = err

    @property
    def failed(self) -> bool:
        """Whether the (finished) background analysis failed."""
        return self._error is not None

    def ready(self) -> None:
        """Wait for a background analysis (re-raising its error); immediate otherwise."""
        t = self._thread
        # Not from the analysis thread itself: the plan's last reference can go at the end of that thread's
        # run, and destroy (phase -1, the analysis memory) must not fail there on joining itself.
        if t is not None and t is not threading.current_thread():
            start = time.perf_counter()
            t.join()
            self.wait_s += time.perf_counter() - start
            self._thread = None
        if self._error is not None:
            raise self._error

    def _analyse(self, pattern, values):
        kind = self.kind
        # PARDISO needs every diagonal entry stored (MKL requires it of the symmetric types). A valid matrix
        # may leave some out, e.g. the zero block of a saddle-point system (a Lagrange multiplier): they are
        # stored as explicit zeros. The pivot perturbation and iterative refinement handle the zero pivots
        # (relative residual 1e-14 on a Neumann Laplacian with a mean-zero multiplier).
        diag = pattern.diagonal_slots
        missing = np.flatnonzero(diag < 0)
        # What PARDISO's entry k reads from A.values: everything (src and upper None), the upper triangle
        # (upper: a boolean mask over the slots), or src[k] (-1: an added zero; present: the slots >= 0).
        self.src = self.present = self.upper = None
        if kind == "gen" and not missing.size:
            indptr, cols = pattern.indptr, pattern.indices  # the pattern as it is: no copies
        elif not missing.size:
            # PARDISO's symmetric types read the upper triangle only. Columns are sorted within each row, so
            # row i's upper part is the run of slots from its diagonal to the row's end: a mask marks the runs
            # (+1 at the diagonal, -1 at the row's end, a running sum), with no per-slot row or slot numbers
            # (int64 arrays of nnz entries: 200 MB each for 1M degree-2 spline dofs).
            mark = np.zeros(pattern.nnz + 1, np.int8)
            mark[diag] += 1  # (each set's positions are distinct: no row is empty when none lacks a diagonal)
            mark[pattern.indptr[1:]] -= 1
            self.upper = np.cumsum(mark[:-1], dtype=np.int8).view(bool)
            cols = pattern.indices[self.upper]
            indptr = np.zeros(self.n + 1, np.int64)
            np.cumsum(pattern.indptr[1:] - diag, out=indptr[1:])
        else:
            rows, cols = pattern.rows, pattern.indices
            src = np.arange(pattern.nnz) if kind == "gen" else np.flatnonzero(cols >= rows)
            rows, cols = rows[src], cols[src]
            # A valid matrix may leave diagonal entries out (see above): added as explicit zeros.
            rows = np.concatenate([rows, missing])
            cols = np.concatenate([cols, missing])
            src = np.concatenate([src, np.full(missing.size, -1)])
            order = np.lexsort((cols, rows))
            rows, cols, src = rows[order], cols[order], src[order]
            self.present = np.flatnonzero(src >= 0)
            self.src = src
            indptr = np.zeros(self.n + 1, np.int64)
            np.cumsum(np.bincount(rows, minlength=self.n), out=indptr[1:])
        if cols.shape[0] >= 2**31:
            raise PardisoError(
                f'{cols.shape[0]} stored entries exceed the 32-bit indices of PARDISO; use method="superlu"'
            )
        self.ia = np.ascontiguousarray(indptr, dtype=np.int32)
        self.ja = np.ascontiguousarray(cols, dtype=np.int32)
        self.perm = self._grid_perm(pattern)  # (checked on the upper triangle that PARDISO reads)
        # Cholesky's analysis reads no values; zeros of the right size stand in (calloc'd: no pages touched).
        self._symbolic(self._data(values) if values is not None else np.zeros(self.ja.shape[0]))

    def _grid_perm(self, pattern):
        """The verified grid ordering of ``pattern`` for a Cholesky plan (see GRID_ORDERING), or None."""
        hint = getattr(pattern, "grid", None)
        if not GRID_ORDERING or hint is None or self.mtype != 2:
            return None
        t = time.perf_counter()
        perm = _grid_ordering.grid_permutation(self.ia, self.ja, hint)
        self.ordering_s = time.perf_counter() - t
        if perm is not None:
            self.ordering = "grid"
        return perm

    def _symbolic(self, data):
        """Phase 11 on a fresh handle, reading ``data`` (values in PARDISO's layout) where the type scales."""
        kind = self.kind
        self.pt = np.zeros(64, dtype=np.int64)
        self.iparm = np.zeros(64, dtype=np.int32)
        ip = self.iparm
        ip[0] = 1  # we set the parameters below (otherwise MKL ignores them all)
        # METIS nested dissection; its OpenMP version where the plan runs on several threads (see
        # PARALLEL_ORDERING)
        entries = self.ja.shape[0]
        parallel = PARALLEL_ORDERING and self.threads != 1 and entries <= PARALLEL_ORDERING_MAX_ENTRIES
        ip[1] = 3 if parallel else 2
        if self.perm is not None:
            ip[4] = 1  # the user permutation self.perm (zero-based with iparm[34] = 1) instead of METIS
        ip[17] = -1  # report the number of nonzeros in the factor
        ip[34] = 1  # zero-based ia/ja: no index copies per call
        if kind == "gen":
            ip[9], ip[10], ip[12] = 13, 1, 1  # pivot perturbation 1e-13, scaling, weighted matching
        elif kind == "sym":
            # Symmetric indefinite (Bunch-Kaufman): scaling and weighted matching, as MKL advises for saddle
            # points. Without them the zero pressure block leans on perturbed pivots: the relative error of
            # a Stokes P2/P1 solve grew from 7e-9 (2k dofs) to 5e-7 (37k dofs), against 1e-12 with them.
            ip[9], ip[10], ip[12] = 8, 1, 1
        else:
            ip[9] = 8
        if self.mtype in (6, -4):
            # Complex symmetric Helmholtz matrices are indefinite; symmetric scaling and matching (MKL's
            # advice for the indefinite types 6 and -4) keep the Bunch-Kaufman pivots away from the
            # perturbation threshold.
            ip[10], ip[12] = 1, 1
        if self.complex:
            # Up to 10 steps of iterative refinement (it stops when converged; each is one more solve with
            # the factors and a product with A): the plain complex solves leave relative residuals of
            # 9e-13 (mtype 6, k = 40 Helmholtz, 10k dofs) and 1e-10 (mtype -4, a cond-1e3 test matrix);
            # three steps bring both to 3e-15, the real block form's accuracy.
            ip[7] = 10
        if self.mtype == 2:
            ip[55] = 1  # the factor's diagonal for pardiso_getdiag (the singularity check of factor)
        t = time.perf_counter()
        self._call(11, 1, data, np.zeros((self.n, 1)))
        self.analysis_s = time.perf_counter() - t

    def _data(self, values):
        if np.iscomplexobj(values) and not self.complex:
            raise TypeError("complex values given to a real PARDISO plan (the plan cache keys on the dtype)")
        v = np.ascontiguousarray(values, dtype=self.dtype)
        if self.upper is not None:
            return v[self.upper]  # a new array: PARDISO reads it again in every solve (refinement)
        if self.src is None:
            return v.copy() if v is values else v  # our own: values may be a program's buffer, reused later
        data = np.zeros(self.src.shape[0], self.dtype)
        data[self.present] = v[self.src[self.present]]
        return data

    def memory_kb(self) -> int:
        """Peak memory of the last analysis and factorisation in KiB, as PARDISO reports it
        (``max(iparm[14], iparm[15] + iparm[16])``)."""
        ip = self.iparm
        return int(max(ip[14], ip[15] + ip[16]))

    def _call(self, phase, mnum, data, B):
        B = np.asfortranarray(B, dtype=self.dtype)
        X = np.zeros_like(B)
        err = ctypes.c_int32(0)
        i32 = ctypes.POINTER(ctypes.c_int32)
        f64 = ctypes.POINTER(ctypes.c_double)
        perm = self.perm if self.perm is not None else np.zeros(1, np.int32)
        set_threads = _mkl_set_threads_local() if self.threads else None
        previous = set_threads(self.threads) if set_threads is not None else None
        try:
            self._pardiso(phase, mnum, data, B, X, err, i32, f64, perm)
        finally:
            if previous is not None:
                set_threads(previous)  # the calling thread's own setting again
        if err.value != 0:
            raise PardisoError(
                f"PARDISO phase {phase} failed: {_ERRORS.get(err.value, err.value)}", err.value
            )
        return X

    def _pardiso(self, phase, mnum, data, B, X, err, i32, f64, perm):
        _mkl_pardiso()(
            self.pt.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
            ctypes.byref(ctypes.c_int32(MAXFCT)),
            ctypes.byref(ctypes.c_int32(mnum)),
            ctypes.byref(ctypes.c_int32(self.mtype)),
            ctypes.byref(ctypes.c_int32(phase)),
            ctypes.byref(ctypes.c_int32(self.n)),
            data.ctypes.data_as(f64),
            self.ia.ctypes.data_as(i32),
            self.ja.ctypes.data_as(i32),
            perm.ctypes.data_as(i32),
            ctypes.byref(ctypes.c_int32(B.shape[1])),
            self.iparm.ctypes.data_as(i32),
            ctypes.byref(ctypes.c_int32(0)),
            B.ctypes.data_as(f64),
            X.ctypes.data_as(f64),
            ctypes.byref(err),
        )

    def factor(
        self, values, *, check_singular: bool = False, check_rtol: float | None = None
    ) -> PardisoFactor:
        """Factorise ``values`` (the pattern's layout) into a free slot.

        Arguments:
            values: ``(nnz,)`` values of a matrix of the plan's pattern.
            check_singular: (Cholesky) raise :class:`PardisoError` with ``code == SINGULAR`` when a pivot is
                below ``SINGULAR_PIVOT`` times its diagonal entry: a singular positive semi-definite matrix.
            check_rtol: the relative residual above which a solve with a stale factor (values other than the
                analysed ones, for the types whose analysis reads values) re-analyses and solves again.

        Returns:
            A :class:`PardisoFactor`.
        """
        self.ready()
        fresh = values is self._analysed
        self._analysed = None  # (only marks the first factorisation; the values are not kept)
        return self._factor(self._data(values), fresh, check_singular, check_rtol)

    def _factor(self, data, fresh, check_singular, check_rtol) -> PardisoFactor:
        with self.lock:
            if not self.free_slots:
                raise PardisoError("no free PARDISO factor slot")
            mnum = self.free_slots.pop()
            try:
                t = time.perf_counter()
                self._call(22, mnum, data, np.zeros((self.n, 1)))
                self.factor_s = time.perf_counter() - t
            except Exception:
                self.free_slots.append(mnum)
                raise
            perturbed = int(self.iparm[13])
            # Bunch-Kaufman's inertia: the number of negative eigenvalues (0: positive definite).
            negative = int(self.iparm[22]) if self.mtype == -2 else None
            if fresh:
                self.base_perturbed = perturbed
            ratio = self._smallest_pivot(mnum) if check_singular and self.mtype == 2 else 1.0
        if ratio < SINGULAR_PIVOT:
            self.release(mnum)
            raise PardisoError(
                f"PARDISO: the matrix is singular to working precision (a Cholesky pivot is {ratio:.1e} "
                "times its diagonal entry: positive semi-definite, not definite)",
                SINGULAR,
            )
        stale = self.value_dependent and not fresh
        f = PardisoFactor(self, mnum, data, stale=stale, check_rtol=check_rtol)
        f.perturbed, f.negative = perturbed, negative
        if stale and perturbed > self.base_perturbed:
            # More perturbed pivots than the analysed matrix had: its scaling and matching do not fit these
            # values (20 against 0 after an exp(180) trial matrix, and a residual of 0.35).
            try:
                f.reanalyse()
            except PardisoError:
                pass  # the stale factor stays usable: its solves are checked against check_rtol
        return f

    def _smallest_pivot(self, mnum) -> float:
        """``min_i d_i / a_ii`` of the Cholesky factor in slot ``mnum`` (1.0 when PARDISO gives none)."""
        df, da = np.zeros(self.n), np.zeros(self.n)
        err = ctypes.c_int32(0)
        p = ctypes.c_void_p
        _mkl_getdiag()(
            self.pt.ctypes.data_as(p),
            df.ctypes.data_as(p),
            da.ctypes.data_as(p),
            ctypes.byref(ctypes.c_int32(mnum)),
            ctypes.byref(err),
        )
        if err.value != 0 or self.n == 0:
            return 1.0
        return float(np.min(df / np.where(da > 0, da, 1.0)))

    def reanalysed(self, data) -> PardisoPlan:
        """A new plan of the same pattern and type whose analysis reads ``data`` (values in PARDISO's
        layout); it becomes this plan's :attr:`successor`, which the backend's plan cache takes instead."""
        new = object.__new__(PardisoPlan)
        for name in (
            "complex",
            "dtype",
            "mtype",
            "kind",
            "n",
            "threads",
            "src",
            "present",
            "upper",
            "ia",
            "ja",
            "perm",
        ):
            setattr(new, name, getattr(self, name))
        new._init_state()
        new.ordering = self.ordering
        new._symbolic(data)
        stats.analyses += 1
        self.successor = new
        return new

    def release(self, mnum: int) -> None:
        with self.lock:
            try:
                self._call(0, mnum, np.zeros(1), np.zeros((self.n, 1)))
            finally:
                self.free_slots.append(mnum)

    def destroy(self) -> None:
        try:
            self.ready()
        except BaseException:
            return  # the analysis failed: nothing was allocated
        with self.lock:
            self._call(-1, 1, np.zeros(1), np.zeros((self.n, 1)))

    def __del__(self):  # pragma: no cover - interpreter teardown
        try:
            self.destroy()
        except Exception:
            pass


class PardisoFactor(Factor):
    """One numeric factorisation: slot ``mnum`` of a :class:`PardisoPlan`.

    A *stale* factor (its plan's analysis read other values) checks the residual of its solves against
    ``check_rtol``; on a failure it re-analyses from its own values once (:meth:`reanalyse`) and solves again.
    ``perturbed`` is the number of perturbed pivots of its factorisation (``iparm[13]``), ``negative`` (for
    Bunch-Kaufman, else None) the number of negative eigenvalues (``iparm[22]``).
    """

    perturbed = 0
    negative = None

    def __init__(self, plan: PardisoPlan, mnum: int, data: np.ndarray, stale=False, check_rtol=None):
        self.plan = plan
        self.mnum = mnum
        self.data = data  # phase 33 reads the values again for iterative refinement
        self.stale = stale
        self.check_rtol = check_rtol

    def reanalyse(self) -> None:
        """Move this factor to a new plan analysed from its own values (the old plan's successor)."""
        old, mnum = self.plan, self.mnum
        new = old.reanalysed(self.data)
        f = new._factor(self.data, True, False, None)
        self.plan, self.mnum, self.stale = new, f.mnum, False
        self.perturbed, self.negative = f.perturbed, f.negative
        old.release(mnum)  # last: should it fail, this factor already names its new slot

    def solve(self, B, transpose):
        if transpose and self.plan.kind in ("herm", "hpd"):
            # A^T = conj(A) for a Hermitian A: A^T x = b is A conj(x) = conj(b), the same factors.
            return np.conj(self.solve(np.conj(B), False))
        X = self._solve(B, transpose)
        if self.stale and self.check_rtol is not None and not self._residual_ok(B, X, transpose):
            self.reanalyse()
            X = self._solve(B, transpose)
        return X

    def _solve(self, B, transpose):
        p = self.plan
        with p.lock:
            p.iparm[11] = 2 if (transpose and p.kind == "gen") else 0  # 2: transposed, not conjugated
            try:
                return p._call(33, self.mnum, self.data, B)
            finally:
                p.iparm[11] = 0

    def _residual_ok(self, B, X, transpose) -> bool:
        """Whether every column has ``|b - A x| <= check_rtol |b|`` (``|b - A x|`` when ``b = 0``), as the
        solvers' residual check judges a direct solve; ``A`` from the factor's own values and layout."""
        p = self.plan
        B = np.asarray(B).reshape(p.n, -1)
        X = np.asarray(X).reshape(p.n, -1)
        S = sp.csr_matrix((self.data, p.ja, p.ia), shape=(p.n, p.n))
        if p.kind == "gen":
            AX = (S.T @ X) if transpose else (S @ X)
        else:  # the upper triangle: A = U + U^T - D (U^H for the Hermitian types)
            L = S.conj().T if p.kind in ("herm", "hpd") else S.T
            AX = S @ X + L @ X - S.diagonal()[:, None] * X
        rn = np.linalg.norm(B - AX, axis=0)
        bn = np.linalg.norm(B, axis=0)
        rel = np.where(bn > 0, rn / np.where(bn > 0, bn, 1.0), rn)
        return bool(np.all(rel <= self.check_rtol))

    def free(self):
        self.plan.release(self.mnum)
