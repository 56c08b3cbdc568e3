"""The host side of ``eigsh(method="arpack")``: ARPACK in shift-invert mode on a factorisation igax caches.

The shifted matrix ``A - sigma M`` is factorised by a registered linear-solver backend (PARDISO where
installed, else SuperLU: the same :meth:`~igax.solvers.HostBackend.factor` that :func:`~igax.solvers.solve`
uses) and the factor is put into the solvers' content-keyed cache (:mod:`igax.solvers._backends`). The
callback returns the factor's integer token, so the backward pass of an eigenvector gradient, which
preconditions its solves with ``(A - sigma M)^{-1}``, finds the same factor instead of factorising again.

ARPACK itself is SciPy's ``eigsh`` with ``OPinv`` set to the cached factor's solve; SciPy would otherwise
factorise ``A - sigma M`` with SuperLU on every call. A run that does not converge returns what converged (NaN
elsewhere) and the status; nothing is raised here (an exception in a callback reaches the user as an opaque
``CpuCallback error``), the traced side raises igax's own error.
"""

from __future__ import annotations

import threading

import numpy as np
import scipy.sparse.linalg as spla

from igax.solvers import _backends
from igax.solvers._errors import Status
from igax.solvers.backends.base import csr

# ARPACK's Fortran state is global; SciPy serialises its calls, and so do we (a clearer error than a crash).
_lock = threading.Lock()


def _start_vector(n: int) -> np.ndarray:
    """A fixed starting vector, so that repeated runs (and finite differences of them) are reproducible."""
    return np.random.default_rng(12345).standard_normal(n) + 1.0


def arpack_callback(vals_a, vals_m, vals_s, *, pa, pm, ps, kind, factor, sigma, nev, tol, maxiter):
    """Eigenpairs of ``A x = lambda M x`` nearest ``sigma`` on the host.

    Arguments:
        vals_a, vals_m, vals_s: values of ``A``, ``M`` and ``A - sigma M`` (patterns ``pa``, ``pm``, ``ps``).
        kind: ``"spd"`` or ``"sym"``, the kind the shifted matrix is factorised as.
        factor: the linear-solver backend name.
        sigma: the shift; nev: how many pairs; tol, maxiter: ARPACK's.

    Returns:
        ``(w (nev,), V (n, nev), token, status, nconv, nops)``: unsorted eigenvalues and vectors (NaN where
        not converged), the factor's token (negative: a failure code), a :class:`Status` code, the number of
        converged pairs and the number of solves with the factor (ARPACK's operator applications).
    """
    vals_a, vals_m, vals_s = (np.asarray(v) for v in (vals_a, vals_m, vals_s))
    n = pa.shape[0]
    dtype = vals_a.dtype
    w = np.full(nev, np.nan, dtype)
    V = np.full((n, nev), np.nan, dtype)

    def out(token, status, nconv=0, nops=0):
        return w, V, np.int32(token), np.int32(status), np.int32(nconv), np.int32(nops)

    token = _backends._factor_one(factor, ps, vals_s, kind, {})
    if token == _backends.TOKEN_NONFINITE:
        return out(token, Status.NONFINITE)
    if token <= 0:
        return out(token, Status.SINGULAR)
    A = csr(pa, vals_a)
    M = csr(pm, vals_m)
    nops = [0]
    with _backends.cache._lock:  # the factor must not be evicted while ARPACK uses it

        def key_and_build():
            key = _backends._content_key(factor, ps, vals_s, kind, {})
            return key, lambda: _backends._build(factor, ps, vals_s, kind, {})

        F = _backends.cache.get(int(token), key_and_build)

        def opinv(x):
            nops[0] += 1
            x = np.asarray(x, dtype=np.float64).reshape(n, 1)
            return np.asarray(F.solve(x, False)).reshape(n)

        OP = spla.LinearOperator((n, n), matvec=opinv, dtype=np.float64)
        status = Status.SUCCESS
        try:
            with _lock:
                ww, VV = spla.eigsh(
                    A,
                    k=nev,
                    M=M,
                    sigma=sigma,
                    which="LM",
                    OPinv=OP,
                    tol=tol,
                    maxiter=maxiter,
                    v0=_start_vector(n),
                )
        except spla.ArpackNoConvergence as err:
            ww, VV = err.eigenvalues, err.eigenvectors
            status = Status.NOT_CONVERGED
        except (spla.ArpackError, RuntimeError, ArithmeticError, np.linalg.LinAlgError):
            return out(token, Status.BREAKDOWN, 0, nops[0])
    nconv = len(ww)
    w[:nconv] = ww
    V[:, :nconv] = VV
    return out(token, status, nconv, nops[0])
