"""The machinery of :func:`igax.solvers.eigsh`: the compiled forward solve (ARPACK or LOBPCG), its custom VJP
and the diagnostics; the public functions, their checks and the result type are in :mod:`igax.solvers.eigen`.

Everything static about one solve (patterns, method, shift, tolerances) is one hashable :class:`_Config`, the
static argument of three compiled programs: the forward solve, the backward pass and the diagnostics. Eager
calls therefore compile once per configuration instead of one small program per operation, and the checks of
the backward pass (repeated eigenvalues, the CG of eigenvector gradients) raise outside the compiled program,
so that an eager gradient raises igax's own exception.

The index arrays of a solve (the slots of ``A``'s diagonal, of ``A``'s and ``M``'s entries in the pattern of
``A - sigma M``) and the sign vector reach the programs as arguments (:class:`_Index`), never as constants
baked into them (the design's rule for large arrays; before, the three of the diagonal gather and the sign
vector were constants of every LOBPCG program, and ARPACK's without ``M`` held four more).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from igax._errors import error_if
from igax.solvers import _arpack, _lobpcg
from igax.solvers._errors import Status
from igax.solvers._spmv import spmv
from igax.solvers.linear import SolverError, _host_solve
from igax.solvers.sparse import CSRPattern, SparseMatrix


class RepeatedEigenvalueError(SolverError):
    """The derivative of an eigenvector, or of one eigenvalue of a (near-)repeated cluster, was requested."""


# -- the static configuration of one solve -------------------------------------------------------------------
class _Config(NamedTuple):
    pa: CSRPattern
    pm: CSRPattern
    ps: CSRPattern  # pattern of A - sigma M (the union of A's and M's)
    method: str
    factor: str  # linear backend of the shift-invert factorisation (arpack)
    kind: str
    sigma: float
    nev: int  # pairs computed: k + 1 (one beyond the request) unless k = n - 1
    k: int
    tol: float
    maxiter: int
    cluster_rtol: float
    grad_rtol: float
    grad_maxiter: int
    preconditioner: object  # None or a callable (hashable by identity)
    block: int  # LOBPCG block size


@functools.lru_cache(maxsize=16)
def _union(pa: CSRPattern, pm: CSRPattern):
    """The pattern of ``A + M`` and the slots of ``A``'s and ``M``'s entries in it (once per pair)."""
    if pa == pm:
        ident = np.arange(pa.nnz)
        return pa, ident, ident
    rows = np.concatenate([pa.rows, pm.rows])
    cols = np.concatenate([pa.indices, pm.indices])
    ps, slot = CSRPattern.from_coo(rows, cols, pa.shape)
    return ps, slot[: pa.nnz], slot[pa.nnz :]


class _Index(NamedTuple):
    """The arrays of one solve that depend only on the patterns: arguments of the compiled programs."""

    diag: jax.Array  # (n,) int32: the slot of A's diagonal entry in A.values, -1 where none is stored
    ia: jax.Array  # (nnz_A,) int32: slots of A's entries in the pattern of A - sigma M (empty: same pattern)
    im: jax.Array  # (nnz_M,) int32: slots of M's entries there (empty: same pattern)
    sign: jax.Array  # (n,): the sign vector (see _index)


@functools.lru_cache(maxsize=16)
def _index_host(pa: CSRPattern, pm: CSRPattern):
    n = pa.shape[0]
    _, ia, im = _union(pa, pm)
    if pa == pm:
        ia = im = np.zeros(0, np.int32)
    # A fixed vector whose product with an eigenvector decides its sign (pseudo-random: symmetric and
    # antisymmetric modes alike have a clearly non-zero product with it).
    sign = np.cos(0.7 * np.arange(n) + 0.3) + 0.5 * np.sin(2.3 * np.arange(n))
    return pa.diagonal_slots.astype(np.int32), ia.astype(np.int32), im.astype(np.int32), sign


def _index(cfg: _Config, dtype) -> _Index:
    """The :class:`_Index` of ``cfg`` (host work cached per pair of patterns)."""
    diag, ia, im, sign = _index_host(cfg.pa, cfg.pm)
    return _Index(jnp.asarray(diag), jnp.asarray(ia), jnp.asarray(im), jnp.asarray(sign, dtype))


def _shifted(cfg: _Config, idx: _Index, va, vm):
    if cfg.pa == cfg.pm:
        return va - cfg.sigma * vm
    return jnp.zeros(cfg.ps.nnz, va.dtype).at[idx.ia].add(va).at[idx.im].add(-cfg.sigma * vm)


def _normalise(w, V, sign):
    order = jnp.argsort(w)
    w, V = w[order], V[:, order]
    s = jnp.sign(sign @ V)
    return w, V * jnp.where(s == 0, 1.0, s)[None, :]


def _norm(A: SparseMatrix):
    """The largest absolute row sum of ``A`` (its infinity norm), one product with ``|A|``."""
    return jnp.max(A.with_values(jnp.abs(A.values)) @ jnp.ones(A.shape[1], A.values.dtype))


def _jacobi(idx: _Index, va):
    # A.diagonal() would gather with the pattern's slots as constants of the program: idx.diag is an argument.
    d = jnp.abs(jnp.where(idx.diag >= 0, va[jnp.maximum(idx.diag, 0)], 0.0))
    d = jnp.where(d > 0, d, 1.0)
    return lambda R: R / d[:, None]


# -- the forward solve ---------------------------------------------------------------------------------------
def _forward(cfg: _Config, idx: _Index, va, vm):
    """``(w (nev,), V (n, nev), status, iterations, token, vs)`` (unsorted for arpack; token -1: lobpcg)."""
    n = cfg.pa.shape[0]
    A = SparseMatrix(va, cfg.pa, symmetric=True)
    M = SparseMatrix(vm, cfg.pm, symmetric=True)
    if cfg.method == "arpack":
        vs = _shifted(cfg, idx, va, vm)
        cb = functools.partial(
            _arpack.arpack_callback,
            pa=cfg.pa,
            pm=cfg.pm,
            ps=cfg.ps,
            kind=cfg.kind,
            factor=cfg.factor,
            sigma=cfg.sigma,
            nev=cfg.nev,
            tol=cfg.tol,
            maxiter=cfg.maxiter,
        )
        i32 = jax.ShapeDtypeStruct((), jnp.int32)
        shapes = (jax.ShapeDtypeStruct((cfg.nev,), va.dtype), jax.ShapeDtypeStruct((n, cfg.nev), va.dtype))
        w, V, token, status, _, nops = jax.pure_callback(
            cb, shapes + (i32,) * 4, va, vm, vs, vmap_method="sequential"
        )
        return w, V, status, nops, token, vs
    precond = cfg.preconditioner if cfg.preconditioner is not None else _jacobi(idx, va)
    # A fixed random start (reproducible runs); the barrier keeps XLA from constant-folding the generator over
    # (n, block) entries at compile time.
    key = jax.lax.optimization_barrier(jax.random.PRNGKey(0))
    X0 = jax.random.normal(key, (n, cfg.block), va.dtype)
    lam, X, it, res = _lobpcg.lobpcg(
        A.matvec,
        M.matvec,
        precond,
        X0,
        norms=(_norm(A), _norm(M)),
        nwant=cfg.nev,
        tol=cfg.tol,
        maxiter=cfg.maxiter,
    )
    ok = jnp.all(res[: cfg.nev] <= cfg.tol)
    status = jnp.where(ok, Status.SUCCESS, Status.NOT_CONVERGED).astype(jnp.int32)
    return lam[: cfg.nev], X[:, : cfg.nev], status, it, jnp.int32(-1), jnp.zeros((0,), va.dtype)


@functools.partial(jax.jit, static_argnums=0)
def _forward_program(cfg: _Config, idx: _Index, va, vm):
    # One compiled program per configuration: eagerly, the steps would compile one small program each.
    w, V, status, it, token, vs = _forward(cfg, idx, va, vm)
    w, V = _normalise(w, V, idx.sign)
    return w, V, status, it, token, vs


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _eig(cfg: _Config, idx: _Index, va, vm):
    return _forward_program(cfg, idx, va, vm)[:4]


def _eig_fwd(cfg, idx, va, vm):
    w, V, status, it, token, vs = _forward_program(cfg, idx, va, vm)
    return (w, V, status, it), (idx, va, vm, w, V, token, vs)


def _sampled(values, pattern, P, Q):
    """``out[p] = sum_c P[row(p), c] Q[col(p), c]`` over the stored entries: the values-cotangent of the
    product ``A @ Q`` (one pass in CSR order with the native kernel; no index arrays in the program)."""
    _, vjp = jax.vjp(lambda v: spmv(v, pattern, Q), values)
    return vjp(P)[0]


# -- the backward pass ---------------------------------------------------------------------------------------
def _cluster_check(cfg: _Config, w, ct_w, ct_V):
    """``(bad, index)``: whether a requested derivative is undefined (a cluster), and the first such pair."""
    scale = jnp.maximum(jnp.abs(w[1:]), jnp.abs(w[:-1]))
    scale = jnp.maximum(scale, jnp.max(jnp.abs(w)) * jnp.finfo(w.dtype).eps)
    close = jnp.abs(w[1:] - w[:-1]) <= cfg.cluster_rtol * scale  # (nev - 1,) pair (i, i + 1) in one cluster
    cmax = jnp.max(jnp.abs(ct_w))
    differ = jnp.abs(ct_w[1:] - ct_w[:-1]) > 1e-10 * cmax  # the loss weighs the pair's eigenvalues unequally
    vec = jnp.any(ct_V != 0, axis=0)  # (nev,) eigenvector cotangents
    bad = close & (differ | vec[1:] | vec[:-1])
    return jnp.any(bad), jnp.argmax(bad)


def _repeated_error(cfg: _Config, index, lo, hi):
    i = int(index)
    what = "the eigenvalue" if i + 1 < cfg.k else "the last requested eigenvalue and the next one"
    gap = abs(float(hi) - float(lo)) / max(abs(float(hi)), 1e-300)
    return RepeatedEigenvalueError(
        f"eigsh: the derivative asked for is undefined: {what} lambda_{i} = {float(lo):.10g} and "
        f"lambda_{i + 1} = {float(hi):.10g} are (near-)repeated (relative gap {gap:.1e} <= cluster_rtol = "
        f"{cfg.cluster_rtol:.0e}), and the loss depends on an eigenvector of this cluster or on its "
        "eigenvalues unequally. Only quantities symmetric in a cluster have derivatives: use the sum or the "
        "mean of the repeated eigenvalues (and no eigenvector of them), break the symmetry that makes them "
        "coincide, or lower cluster_rtol if the eigenvalues are distinct but close."
    )


def _cg_error(cfg: _Config, it, res):
    return SolverError(
        f"eigsh: the solve for the eigenvector gradient did not converge (relative residual {float(res):.2e} "
        f"after {int(it)} CG iterations, grad_rtol = {cfg.grad_rtol:.0e}). It needs A - lambda_i M to be "
        "positive definite outside the computed modes, i.e. the computed modes must be the lowest ones: use "
        "a sigma below the lowest eigenvalue (method='arpack'), a better preconditioner (method='lobpcg'), "
        "or raise grad_maxiter."
    )


@functools.partial(jax.jit, static_argnums=(0, 4))
def _backward_program(cfg: _Config, res, ct_w, ct_V, vectors: bool):
    """The cotangents of ``A.values`` and ``M.values`` and the diagnostics of the checks (compiled once per
    configuration; the checks raise outside, so that an eager gradient raises igax's own exception)."""
    idx, va, vm, w, V, token, vs = res
    # The cotangent of the vectors is often a padding of a few columns with zeros: without the barrier XLA
    # constant-folds the tests on it below (an (n, k) reduction: 4 s of compilation at n = 100k).
    ct_V = jax.lax.optimization_barrier(ct_V)
    A = SparseMatrix(va, cfg.pa, symmetric=True)
    M = SparseMatrix(vm, cfg.pm, symmetric=True)
    bad, index = _cluster_check(cfg, w, ct_w, ct_V)

    def vector_part():
        # y_i = S_i vbar_i: the computed modes explicitly, the rest by deflated CG.
        dl = w[:, None] - w[None, :]  # (j, i): lambda_j - lambda_i
        inv = jnp.where(jnp.eye(w.shape[0], dtype=bool) | (dl == 0), 0.0, 1.0 / jnp.where(dl == 0, 1.0, dl))
        y_in = V @ (inv * (V.T @ ct_V))
        MV = M @ V

        def op(Z):
            return A @ Z - (M @ Z) * w[None, :]

        if cfg.method == "arpack":

            def precond(R):
                X, _, _ = _host_solve(
                    vs, token, R.T, False, pattern=cfg.ps, kind=cfg.kind, method=cfg.factor, options=()
                )
                return X.T
        else:
            precond = cfg.preconditioner if cfg.preconditioner is not None else _jacobi(idx, va)
        Z, it, ok, r = _lobpcg.deflated_cg(
            op, precond, V, MV, ct_V, tol=cfg.grad_rtol, maxiter=cfg.grad_maxiter
        )
        return y_in + Z, it, jnp.all(ok), jnp.max(r)

    def no_vector_part():
        return jnp.zeros_like(V), jnp.int32(0), jnp.bool_(True), jnp.zeros((), V.dtype)

    if vectors:
        Y, cg_it, cg_ok, cg_res = jax.lax.cond(jnp.any(ct_V != 0), vector_part, no_vector_part)
    else:  # known to be zero: not even compiled
        Y, cg_it, cg_ok, cg_res = no_vector_part()
    d = jnp.sum(ct_V * V, axis=0)  # vbar_i . phi_i
    # dA = sum_i c_i phi_i phi_i^T - sym(y_i phi_i^T),
    # dM = sum_i (-c_i lambda_i - d_i / 2) phi_i phi_i^T + lambda_i sym(y_i phi_i^T), on the stored entries.
    h = 0.5 * Y
    ga = _sampled(va, cfg.pa, jnp.concatenate([V * ct_w - h, -V], 1), jnp.concatenate([V, h], 1))
    a = -ct_w * w - 0.5 * d
    gm = _sampled(vm, cfg.pm, jnp.concatenate([V * a + h * w, V * w], 1), jnp.concatenate([V, h], 1))
    return ga, gm, (bad, index, w[index], w[index + 1], cg_ok, cg_it, cg_res)


def _eig_bwd(cfg, res, cts):
    ct_V = cts[1]
    # An eager gradient of eigenvalues only: the eigenvector part is known to vanish, so it is not compiled.
    vectors = isinstance(ct_V, jax.core.Tracer) or bool(np.any(np.asarray(ct_V)))
    ga, gm, (bad, index, lo, hi, cg_ok, cg_it, cg_res) = _backward_program(cfg, res, cts[0], ct_V, vectors)
    ga = error_if(ga, bad, functools.partial(_repeated_error, cfg), index, lo, hi)
    ga = error_if(ga, ~cg_ok, functools.partial(_cg_error, cfg), cg_it, cg_res)
    return None, ga, gm  # None: the index arrays have no cotangent


_eig.defvjp(_eig_fwd, _eig_bwd)


@functools.partial(jax.jit, static_argnums=0)
def _diagnostics(cfg: _Config, va, vm, w, V, status):
    """Exact residuals of the returned pairs, the final status, the next eigenvalue (not differentiated)."""
    va, vm, ws, Vs = jax.lax.stop_gradient((va, vm, w, V))
    k = cfg.k
    A = SparseMatrix(va, cfg.pa, symmetric=True)
    M = SparseMatrix(vm, cfg.pm, symmetric=True)
    res = _lobpcg.residual_norms(A @ Vs, M @ Vs, ws, Vs, (_norm(A), _norm(M)))
    status = jnp.where((status == Status.SUCCESS) & ~jnp.all(jnp.isfinite(ws[:k])), Status.NONFINITE, status)
    if cfg.method == "arpack":
        # ARPACK's own test is on the shift-inverted operator; judge the pairs themselves too. A large
        # residual next to sigma means that PARDISO factorised a singular A - sigma M with perturbed pivots.
        eps = jnp.finfo(ws.dtype).eps
        bad = (status == Status.SUCCESS) & (jnp.max(res[:k]) > max(1e3 * cfg.tol, float(np.sqrt(eps))))
        near = jnp.min(jnp.abs(ws - cfg.sigma)) <= 1e-6 * jnp.max(jnp.abs(ws))
        status = jnp.where(bad, jnp.where(near, Status.SINGULAR, Status.NOT_CONVERGED), status)
    nxt = ws[k] if cfg.nev > k else jnp.asarray(jnp.inf, ws.dtype)
    return res[:k], status.astype(jnp.int32), nxt
