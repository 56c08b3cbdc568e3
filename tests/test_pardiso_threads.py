"""PARDISO: a plan's MKL thread count, fixed when its analysis runs, and the METIS ordering it uses."""

import numpy as np
import pytest
import scipy.sparse.linalg as spl

# the skip without PARDISO, and Cholesky first on (the default) again after a test that turns it off
from test_pardiso_cholesky import _laplacian, cholesky_first, pytestmark  # noqa: F401

from igax.solvers import CSRPattern


def _global_threads():
    """mkl_rt's global thread count setter, or a skip where the library lacks the calls used here."""
    from igax.solvers import _pardiso

    lib = _pardiso._libmkl()
    if _pardiso._mkl_max_threads() is None or _pardiso._mkl_set_threads_local() is None:
        pytest.skip("mkl_rt lacks MKL_Get_Max_Threads or MKL_Set_Num_Threads_Local")
    return lib.MKL_Set_Num_Threads


def test_a_large_plan_keeps_the_thread_count_of_its_analysis(monkeypatch):
    """A plan above SINGLE_THREAD_NNZ runs on the caller's MKL thread count, read when the plan is created
    (before its background analysis) and kept for its factorisations: a global change in between must not
    reach them (PARDISO crashes when a factorisation runs on fewer threads than the analysis). Before, the
    plan read the global setting at every call (``threads == 0``)."""
    from igax.solvers import _pardiso

    set_global = _global_threads()
    monkeypatch.setattr(_pardiso, "SINGLE_THREAD_NNZ", 0)  # this small pattern counts as large
    real_local = _pardiso._mkl_set_threads_local()
    asked = []

    def spy(count):
        asked.append(count)
        return real_local(count)

    monkeypatch.setattr(_pardiso, "_mkl_set_threads_local", lambda: spy)
    before = int(_pardiso._mkl_max_threads()())
    M = _laplacian(40)
    M.sort_indices()
    b = np.random.default_rng(0).standard_normal(M.shape[0])
    try:
        set_global(2)
        want = int(_pardiso._mkl_max_threads()())  # 2, or fewer where MKL caps it
        plan = _pardiso.PardisoPlan(CSRPattern(M.indptr, M.indices, M.shape), "spd", None, background=True)
        plan.ready()
        assert plan.threads == want
        assert plan.iparm[1] == (3 if want > 1 else 2)  # METIS's OpenMP ordering on several threads
        # A global change after the analysis, to fewer threads where there were several (the change that
        # crashes PARDISO when it reaches the factorisation; MKL caps larger counts at the cores).
        set_global(1 if want > 1 else 2)
        if want > 1:
            assert int(_pardiso._mkl_max_threads()()) == 1
        asked.clear()
        f = plan.factor(M.data)
        x = f.solve(b[:, None], False)[:, 0]
        f.free()
    finally:
        set_global(before)
    assert asked and set(asked[::2]) == {want}  # every phase on the analysis's count (then the previous one)
    ref = spl.spsolve(M.tocsc(), b)
    assert np.linalg.norm(x - ref) <= 1e-12 * np.linalg.norm(ref)


def test_a_large_pattern_orders_sequentially_above_the_parallel_limit(monkeypatch):
    """Above PARALLEL_ORDERING_MAX_ENTRIES a plan on several threads keeps the sequential METIS ordering
    (``iparm[1] = 2``), with the same solution."""
    from igax.solvers import _pardiso

    set_global = _global_threads()
    monkeypatch.setattr(_pardiso, "SINGLE_THREAD_NNZ", 0)
    M = _laplacian(30)
    M.sort_indices()
    pattern = CSRPattern(M.indptr, M.indices, M.shape)
    b = np.random.default_rng(1).standard_normal(M.shape[0])
    ref = spl.spsolve(M.tocsc(), b)
    before = int(_pardiso._mkl_max_threads()())
    try:
        set_global(2)
        for limit, ordering in ((10**9, 3), (10, 2)):
            monkeypatch.setattr(_pardiso, "PARALLEL_ORDERING_MAX_ENTRIES", limit)
            plan = _pardiso.PardisoPlan(pattern, "spd", None)
            assert plan.iparm[1] == (ordering if plan.threads > 1 else 2)
            f = plan.factor(M.data)
            x = f.solve(b[:, None], False)[:, 0]
            f.free()
            plan.destroy()
            assert np.linalg.norm(x - ref) <= 1e-12 * np.linalg.norm(ref)
    finally:
        set_global(before)


def test_the_mkl_library_is_looked_up_once(monkeypatch):
    """pypardiso's solver object looks mkl_rt up in its constructor (0.1 s: a recursive glob of the
    environment where the loader's path lacks MKL). The library is loaded once for all the handles, from the
    environment's ``lib`` where pip's ``mkl`` puts it; before, each of the four handles built a solver object
    (0.4 s in the trace of a process's first solve)."""
    import glob
    import os
    import sys

    import pypardiso

    from igax.solvers import _pardiso

    built = []
    real = pypardiso.PyPardisoSolver
    monkeypatch.setattr(pypardiso, "PyPardisoSolver", lambda *a, **k: built.append(1) or real(*a, **k))
    handles = (_pardiso._libmkl, _pardiso._mkl_pardiso, _pardiso._mkl_max_threads,
               _pardiso._mkl_set_threads_local, _pardiso._mkl_getdiag)  # fmt: skip
    for handle in handles:
        handle.cache_clear()
    try:
        assert _pardiso.available()
        for handle in handles:
            handle()
        # in the environment's lib unless MKL came another way (then pypardiso's lookup, once)
        in_prefix = bool(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
        assert len(built) == (0 if in_prefix or os.environ.get("PYPARDISO_MKL_RT") else 1)
        # the handles work: a small Cholesky solve
        K = _laplacian(30)
        plan = _pardiso.PardisoPlan(CSRPattern(K.indptr, K.indices, K.shape), "spd", None)
        x = plan.factor(K.data).solve(np.ones((K.shape[0], 1)), False)[:, 0]
        np.testing.assert_allclose(x, spl.spsolve(K.tocsc(), np.ones(K.shape[0])), rtol=1e-12)
    finally:
        for handle in handles:  # the next test loads them again (unpatched)
            handle.cache_clear()
