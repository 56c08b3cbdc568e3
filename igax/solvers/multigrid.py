"""Multigrid hierarchies for ``method="mg-cg"``: transfers on the host, Galerkin coarse operators in JAX.

A :class:`Hierarchy` holds the prolongations ``P_k`` (level 0 is the finest) as constant host matrices: the
knot-insertion operators of nested spline spaces, the interpolation of nested meshes (``igax.fem`` builds
both), or smoothed-aggregation transfers from pyamg (:func:`amg_hierarchy`). Everything structural is done
once in NumPy per (hierarchy, fine pattern) and cached (:meth:`Hierarchy.plan`): the coarse CSR patterns
and the index maps that turn fine values into coarse values. A compiled program only does value work:

* the Galerkin products ``A_{k+1} = P_k^T A_k P_k`` from every new ``A.values``, in two stages through the
  lower triangle of ``A`` (:mod:`igax.solvers._galerkin`: 97 terms per fine dof for the 2D degree-2 spline
  Laplacian, where a one-shot map from fine to coarse entries would hold 400); the int32 maps reach the
  compiled program as arguments, not as constants;
* the smoother's data (:mod:`igax.solvers._chebyshev`): the inverse diagonal and an estimate of the largest
  eigenvalue of ``D^-1 A_k``, by a few Lanczos steps;
* a dense Cholesky factor of the coarsest operator.

The V-cycle (:func:`vcycle`) is symmetric (the same Chebyshev polynomial before and after the coarse
correction), so it is a valid preconditioner of CG; :mod:`igax.solvers.linear` wraps CG in
``custom_linear_solve`` and reuses the same setup for the transposed (= same, SPD) solve of a gradient.

Dirichlet conditions: igax condenses them by zeroing the rows and columns of the constrained dofs and
keeping the diagonal (``igax.fem.DirichletBC.condense``). Those dofs are decoupled, so the coarse spaces
must not mix with them: ``Hierarchy(..., fixed=dofs)`` zeroes their rows of ``P_0`` (the smoother solves
their decoupled equations exactly: ``D^-1 A = 1`` there), then removes the coarse dofs left without any fine
support (zero columns of ``P_0``, and the matching rows of ``P_1``, level by level). Removing them, rather
than giving them an identity row in the coarse operator, keeps the coarse systems as small as possible and
exactly ``P^T A P``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import OrderedDict
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from igax.solvers import _chebyshev, _galerkin
from igax.solvers.sparse import CSRPattern, SparseMatrix

__all__ = ["Hierarchy", "amg_hierarchy"]

logger = logging.getLogger(__name__)

_DEFAULTS = {
    "chebyshev_degree": 3,  # matrix products of each smoothing (pre and post)
    "eig_ratio": 30.0,  # the smoother targets [lmax / eig_ratio, lmax] of D^-1 A
    "eig_safety": 1.1,  # lmax = eig_safety * (largest Ritz value)
    "lanczos_steps": 12,
    "coarse_size": 2000,  # the largest coarsest level factorised densely
    "stop_size": 256,  # levels after the first one this small are dropped
}


def _check_options(options: dict) -> dict:
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise TypeError(
            f"Hierarchy: unknown option(s) {sorted(unknown)}; known (with defaults): {_DEFAULTS}."
        )
    out = dict(_DEFAULTS)
    out.update(options)
    deg = out["chebyshev_degree"]
    if not isinstance(deg, (int, np.integer)) or not 1 <= deg <= 16:
        raise ValueError(f"chebyshev_degree must be an integer in [1, 16] (2-4 is usual), got {deg!r}.")
    if not float(out["eig_ratio"]) > 1.0:
        raise ValueError(f"eig_ratio must be > 1 (e.g. 30), got {out['eig_ratio']!r}.")
    if not float(out["eig_safety"]) >= 1.0:
        raise ValueError(f"eig_safety must be >= 1 (e.g. 1.1), got {out['eig_safety']!r}.")
    steps = out["lanczos_steps"]
    if not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"lanczos_steps must be an integer >= 2 (e.g. 12), got {steps!r}.")
    for name in ("coarse_size", "stop_size"):
        if not isinstance(out[name], (int, np.integer)) or out[name] < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {out[name]!r}.")
    return {
        "chebyshev_degree": int(deg),
        "eig_ratio": float(out["eig_ratio"]),
        "eig_safety": float(out["eig_safety"]),
        "lanczos_steps": int(steps),
        "coarse_size": int(out["coarse_size"]),
        "stop_size": int(out["stop_size"]),
    }


def _as_csr(P, k: int) -> sp.csr_matrix:
    if isinstance(P, SparseMatrix):
        P = P.to_scipy()
    if not sp.issparse(P):
        raise TypeError(
            f"prolongations[{k}] must be a scipy.sparse matrix of shape (n_{k}, n_{k + 1}), got "
            f"{type(P).__name__}; wrap a dense array with scipy.sparse.csr_matrix(P)."
        )
    P = sp.csr_matrix(P, dtype=np.float64)
    P.sum_duplicates()
    P.eliminate_zeros()
    P.sort_indices()
    if not np.all(np.isfinite(P.data)):
        raise ValueError(f"prolongations[{k}] holds NaN or inf values.")
    return P


def _remove_fixed(Ps: list[sp.csr_matrix], fixed: np.ndarray) -> list[sp.csr_matrix]:
    """Zero the fixed rows of ``P_0``; drop coarse dofs left without fine support, level by level."""
    Ps = list(Ps)
    keep_rows = np.ones(Ps[0].shape[0], bool)
    keep_rows[fixed] = False
    for k in range(len(Ps)):
        P = Ps[k]
        if k == 0:
            P = sp.diags(keep_rows.astype(np.float64)) @ P
        P = sp.csr_matrix(P)
        P.eliminate_zeros()
        used = np.bincount(P.indices, minlength=P.shape[1]) > 0
        if not used.all():
            P = P[:, np.flatnonzero(used)]
            if k + 1 < len(Ps):
                Ps[k + 1] = sp.csr_matrix(Ps[k + 1][np.flatnonzero(used)])
        P.sort_indices()
        Ps[k] = P
    return Ps


class Hierarchy:
    """A multigrid hierarchy for ``solve(A, b, method="mg-cg", hierarchy=H)``: static and hashable.

    Arguments:
        prolongations: sequence of scipy.sparse matrices ``P_k`` of shape ``(n_k, n_{k+1})``, level 0 the
            finest (the size of ``A``); constant host values. An empty sequence means one level: the
            preconditioner is then the dense Cholesky factor of ``A`` itself (only for small ``A``).
        fixed: optional int array of level-0 dofs that are decoupled rows and columns of a condensed
            Dirichlet system: their rows of ``P_0`` are zeroed and coarse dofs left without fine support
            are removed (see the module notes).
        **options: ``chebyshev_degree`` (3: matrix products per smoothing; see
            :mod:`igax.solvers._chebyshev` for the choice and measured figures), ``eig_ratio`` (30: the
            smoother damps ``[lmax / eig_ratio, lmax]`` of ``D^-1 A_k``), ``eig_safety`` (1.1),
            ``lanczos_steps`` (12: products per level of the eigenvalue estimate), ``coarse_size`` (2000: the
            largest coarsest level allowed, factorised densely), ``stop_size`` (256: the hierarchy stops at
            the first level with at most this many dofs and drops the coarser ones given: a dense Cholesky
            factor of that size costs less than more levels, each of which adds about 1 s of compile time on
            2 CPU cores; 0 keeps every level).

    Two hierarchies with the same content compare equal (a digest of the matrices, ``fixed`` and the
    options), so programs compiled for one serve the other.

    Example:
        A 2D Poisson matrix on 15 x 15 grid points, and one coarser level of 7 x 7 points:

        >>> import jax.numpy as jnp, numpy as np, scipy.sparse as sp
        >>> from igax.solvers import Hierarchy, SparseMatrix, linear_solve
        >>> L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (15, 15))
        >>> K = (sp.kron(L, sp.eye(15)) + sp.kron(sp.eye(15), L)).tocsr()
        >>> A = SparseMatrix.from_scipy(K, symmetric=True, positive_definite=True)
        >>> P1 = sp.csr_matrix(np.array([[1.0 if i == 2 * j + 1 else 0.5 * (abs(i - 2 * j - 1) == 1)
        ...                               for j in range(7)] for i in range(15)]))   # 1D linear interpolation
        >>> H = Hierarchy([sp.kron(P1, P1)], stop_size=0)   # 2D from 1D; stop_size=0 keeps this small level
        >>> r = linear_solve(A, jnp.ones(225), method="mg-cg", hierarchy=H)
        >>> int(r.status), int(r.iterations) < 20, float(r.residual) < 1e-10
        (0, True, True)
    """

    def __init__(self, prolongations, *, fixed=None, **options):
        if isinstance(prolongations, (sp.spmatrix, sp.sparray)) or not hasattr(prolongations, "__len__"):
            raise TypeError(
                "prolongations must be a sequence of scipy.sparse matrices (one per coarser level), e.g. "
                "Hierarchy([P0, P1]); for one transfer write Hierarchy([P])."
            )
        Ps = [_as_csr(P, k) for k, P in enumerate(prolongations)]
        for k in range(1, len(Ps)):
            if Ps[k].shape[0] != Ps[k - 1].shape[1]:
                raise ValueError(
                    f"prolongations[{k}] has shape {Ps[k].shape}, but prolongations[{k - 1}] has "
                    f"{Ps[k - 1].shape}: P_k maps level k+1 to level k, so P_k.shape[0] must equal "
                    "P_{k-1}.shape[1] (level 0 is the finest)."
                )
        self.options = _check_options(options)
        if fixed is not None:
            fixed = np.unique(np.asarray(fixed, dtype=np.int64).ravel())
            if Ps and fixed.size and (fixed[0] < 0 or fixed[-1] >= Ps[0].shape[0]):
                raise ValueError(f"fixed must hold level-0 dofs in [0, {Ps[0].shape[0]}).")
            if Ps and fixed.size:
                Ps = _remove_fixed(Ps, fixed)
        for k, P in enumerate(Ps):
            if P.shape[1] == 0:
                raise ValueError(f"level {k + 1} of the hierarchy has no dofs left (prolongations[{k}]).")
        self._n0 = Ps[0].shape[0] if Ps else None
        sizes = [P.shape[0] for P in Ps] + [P.shape[1] for P in Ps[-1:]]
        small = [k for k, n in enumerate(sizes) if n <= self.options["stop_size"]]
        if small:
            Ps = Ps[: small[0]]
        self.prolongations = tuple(Ps)
        self.fixed = fixed
        n_coarse = Ps[-1].shape[1] if Ps else self._n0
        if n_coarse is not None and n_coarse > self.options["coarse_size"]:
            raise ValueError(
                f"the coarsest level has {n_coarse} dofs, more than coarse_size="
                f"{self.options['coarse_size']} (it is factorised densely). Add coarser levels (more "
                f"prolongations), or pass coarse_size={n_coarse} to factorise it anyway "
                f"({n_coarse**2 * 8 / 2**20:.0f} MB in float64)."
            )
        h = hashlib.blake2b(digest_size=16)
        for P in self.prolongations:
            for a in (np.asarray(P.shape, np.int64), P.indptr.astype(np.int64), P.indices.astype(np.int64)):
                h.update(a.tobytes())
            h.update(P.data.tobytes())
        h.update(b"fixed" + (b"" if fixed is None else fixed.tobytes()) + repr(self._n0).encode())
        h.update(repr(sorted(self.options.items())).encode())
        self._digest = h.digest()
        self._plans: OrderedDict = OrderedDict()

    @property
    def levels(self) -> int:
        """The number of levels (the finest included)."""
        return len(self.prolongations) + 1

    @property
    def sizes(self) -> tuple[int, ...]:
        """Dofs per level, finest first (``None`` for level 0 of a hierarchy without transfers)."""
        if not self.prolongations:
            return (self._n0,)
        return (self.prolongations[0].shape[0],) + tuple(P.shape[1] for P in self.prolongations)

    def __eq__(self, other):
        return isinstance(other, Hierarchy) and (self is other or self._digest == other._digest)

    def __hash__(self):
        return hash(self._digest)

    def __repr__(self):
        return f"Hierarchy(levels={self.levels}, sizes={self.sizes})"

    def check_matrix(self, A: SparseMatrix) -> None:
        """Raise a ``ValueError`` unless ``A`` has the size of level 0."""
        n0 = self.sizes[0]
        if n0 is not None and A.shape[0] != n0:
            raise ValueError(
                f"hierarchy= was built for {n0} dofs on level 0, but A has shape {A.shape}; build the "
                "hierarchy for this matrix (the same space and boundary conditions), or omit hierarchy= to "
                "use the algebraic one (method='mg-cg')."
            )

    def plan(self, pattern: CSRPattern) -> _galerkin.Plan:
        """The structural data of this hierarchy for a fine pattern (computed once; the last 2 cached)."""
        key = pattern._digest
        p = self._plans.get(key)
        if p is None:
            p = _galerkin.make_plan(self.prolongations, self.options, self.sizes, pattern)
            self._plans[key] = p
            while len(self._plans) > 2:
                self._plans.popitem(last=False)
        self._plans.move_to_end(key)
        return p

    def galerkin(self, A: SparseMatrix) -> list[SparseMatrix]:
        """The operators of every level, ``[A, P_0^T A P_0, ...]``, with values computed in JAX from ``A``.

        Example:
            >>> import numpy as np, scipy.sparse as sp
            >>> from igax.solvers import Hierarchy, SparseMatrix
            >>> K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (3, 3)).tocsr()
            >>> A = SparseMatrix.from_scipy(K, symmetric=True, positive_definite=True)
            >>> H = Hierarchy([sp.csr_matrix(np.array([[0.5], [1.0], [0.5]]))], stop_size=0)
            >>> A1 = H.galerkin(A)[1]       # P_0^T A P_0, differentiable in A.values
            >>> A1.todense().tolist()
            [[1.0]]
        """
        self.check_matrix(A)
        p = self.plan(A.pattern)
        return _galerkin.operators(p.static, p.arrays, A.values)


# -- set-up and cycle (traced) -----------------------------------------------------------------------------
class Transfer(NamedTuple):
    """The arrays of one transfer the V-cycle uses: ``P_k`` and ``P_k^T`` in ELL form."""

    p_idx: jax.Array
    p_val: jax.Array
    pt_idx: jax.Array
    pt_val: jax.Array


class MGState(NamedTuple):
    """A hierarchy set up for one matrix: operators, smoother data, the coarse factor (a pytree)."""

    matrices: tuple  # SparseMatrix per level (level 0: A itself)
    dinv: tuple  # inverse diagonal per level (all but the coarsest)
    lmax: tuple  # upper end of the smoothed interval of D^-1 A_k per level (all but the coarsest)
    chol: jax.Array  # lower Cholesky factor of the coarsest operator (dense)
    transfers: tuple  # Transfer per level (all but the coarsest)
    ok: jax.Array  # False when a diagonal entry is <= 0 or the coarse Cholesky failed: A is not SPD


def setup(static: _galerkin.Static, arrays: tuple, values: jax.Array) -> MGState:
    """Set a hierarchy up for ``A.values`` (traceable: value work only; ``values`` should carry no gradient).

    The compiled part returns only what it computes: passing ``A.values`` or the transfer arrays through it
    as outputs would copy them on every call (0.36 s of a 0.64 s setup at 262k degree-2 spline dofs).
    """
    coarse, dinvs, lmaxs, L, ok = _setup(static, arrays, values)
    pats = static.patterns
    mats = [SparseMatrix(values, pats[0], symmetric=True)]
    mats += [SparseMatrix(v, pats[k + 1], symmetric=True) for k, v in enumerate(coarse)]
    transfers = tuple(Transfer(a.p_idx, a.p_val, a.pt_idx, a.pt_val) for a in arrays)
    return MGState(tuple(mats), dinvs, lmaxs, L, transfers, ok)


@functools.partial(jax.jit, static_argnums=0)
def _setup(static: _galerkin.Static, arrays: tuple, values: jax.Array):
    # Inside a caller's jit that closes over the space, the index maps and transfer values are constants of
    # the program; behind the barrier XLA does not constant-fold the Galerkin gathers over them (a 4.3M-entry
    # gather logged "Constant folding an instruction is taking > 1s" at 1M P1 dofs).
    arrays = jax.lax.optimization_barrier(jax.tree_util.tree_map(jnp.asarray, arrays))
    opts = dict(static.options)
    mats = _galerkin.operators(static, arrays, values)
    ok = jnp.bool_(True)
    dinvs, Ts = [], []
    for M in mats[:-1]:
        d = M.diagonal()
        ok = ok & jnp.all(d > 0)
        dinv = 1.0 / jnp.where(d > 0, d, 1.0)
        Ts.append(_chebyshev.lanczos_tridiagonal(M.matvec, dinv, steps=opts["lanczos_steps"]))
        dinvs.append(dinv)
    lmaxs = ()
    if Ts:
        lmax = _chebyshev.largest_eigenvalues(Ts) * opts["eig_safety"]
        lmaxs = tuple(lmax[k] for k in range(len(Ts)))
    C = mats[-1]
    n = C.shape[0]
    dense = jnp.zeros((n, n), C.values.dtype).at[C.pattern.rows, C.pattern.indices].add(C.values)
    dense = 0.5 * (dense + dense.T)  # A itself (one level) may be symmetric only up to rounding
    L = jnp.linalg.cholesky(dense)
    ok = ok & jnp.all(jnp.isfinite(L))
    return tuple(M.values for M in mats[1:]), tuple(dinvs), lmaxs, L, ok


def _prolong(arr: Transfer, xc):
    return jnp.sum(arr.p_val.astype(xc.dtype) * xc[arr.p_idx], axis=1)


def _restrict(arr: Transfer, r):
    return jnp.sum(arr.pt_val.astype(r.dtype) * r[arr.pt_idx], axis=1)


def vcycle(state: MGState, r: jax.Array, *, degree: int, eig_ratio: float) -> jax.Array:
    """One symmetric V-cycle from a zero initial guess: ``x ~ A^{-1} r`` (the preconditioner of CG)."""

    def level(k, rk):
        if k == len(state.matrices) - 1:
            return jax.scipy.linalg.cho_solve((state.chol, True), rk)
        A = state.matrices[k]
        smooth = lambda b, x: _chebyshev.smooth(  # noqa: E731
            A.matvec, state.dinv[k], state.lmax[k], b, x, degree=degree, eig_ratio=eig_ratio
        )
        x = smooth(rk, None)
        res = rk - A.matvec(x)
        x = x + _prolong(state.transfers[k], level(k + 1, _restrict(state.transfers[k], res)))
        return smooth(rk, x)

    return level(0, r)


def _graph_matrix(pattern: CSRPattern) -> sp.csr_matrix:
    """The graph Laplacian of a pattern plus the identity: SPD, with the pattern's couplings (see amg)."""
    rows, cols = pattern.rows, pattern.indices
    off = rows != cols
    n = pattern.shape[0]
    G = sp.csr_matrix((-np.ones(int(off.sum())), (rows[off], cols[off])), shape=(n, n))
    G = ((G + G.T) * 0.5).tocsr()
    deg = -np.asarray(G.sum(axis=1)).ravel()
    return (G + sp.diags(deg + 1.0)).tocsr()


def amg_hierarchy(
    A: SparseMatrix,
    *,
    near_nullspace=None,
    max_coarse: int = 256,
    fixed=None,
    components: int = 1,
    hierarchy_options: dict | None = None,
    **pyamg_options,
) -> Hierarchy:
    """A smoothed-aggregation hierarchy from pyamg (on the host, once per pattern; reuse it for new values).

    When ``A.values`` are concrete, pyamg aggregates ``A`` itself: its strength of connection sees the
    coefficients (anisotropy, jumps) and the prolongation smoothing uses the real operator. When they are
    traced (inside ``jit``/``grad`` of a caller) only the pattern is known: pyamg then aggregates the
    pattern's graph (its graph Laplacian plus the identity; with ``components > 1`` that of one component's
    block, once per component), which for the isotropic Laplacian-like systems of a mesh gives nearly the
    same aggregates; build the hierarchy once outside the traced function from a
    representative ``A`` for anything strongly anisotropic.

    Arguments:
        A: SPD :class:`SparseMatrix` (the fine level).
        near_nullspace: ``(n, k)`` array of near-null-space vectors (e.g. rigid-body modes for elasticity:
            3 in 2D, 6 in 3D); default the constant vector.
        max_coarse: the coarsest level has at most this many dofs (pyamg's ``max_coarse``).
        fixed: decoupled (condensed Dirichlet) dofs, see :class:`Hierarchy`; with concrete values, rows
            whose off-diagonal values are all zero are added.
        components: for a vector space numbered component-major (``dof = c * nscalar + node``, igax's
            numbering), the number of components: pyamg then aggregates nodes (BSR blocks), so a coarse dof
            never mixes a node's components unevenly.
        hierarchy_options: options of the :class:`Hierarchy` (``chebyshev_degree`` ...).
        **pyamg_options: passed to ``pyamg.smoothed_aggregation_solver`` (e.g. ``strength``, ``smooth``).

    Returns:
        A :class:`Hierarchy`.

    Example:
        >>> import jax.numpy as jnp, scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix, amg_hierarchy, linear_solve
        >>> L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (40, 40))
        >>> K = (sp.kron(L, sp.eye(40)) + sp.kron(sp.eye(40), L)).tocsr()
        >>> A = SparseMatrix.from_scipy(K, symmetric=True, positive_definite=True)
        >>> H = amg_hierarchy(A)   # for elasticity pass near_nullspace= (the rigid-body modes)
        >>> r = linear_solve(A, jnp.ones(1600), method="mg-cg", hierarchy=H)
        >>> int(r.status), float(r.residual) < 1e-10
        (0, True)
    """
    import pyamg

    n = A.shape[0]
    components = int(components)
    if components < 1 or n % components:
        raise ValueError(f"components must be a positive divisor of n={n}, got {components}.")
    concrete = not isinstance(A.values, jax.core.Tracer)
    if concrete and np.ndim(A.values) == 1:
        M = A.to_scipy()
        M = ((M + M.T) * 0.5).tocsr()
        offdiag = M - sp.diags(M.diagonal())
        offdiag.eliminate_zeros()
        decoupled = np.flatnonzero(np.diff(offdiag.tocsr().indptr) == 0)
    elif components == 1:
        M = _graph_matrix(A.pattern)
        decoupled = np.zeros(0, np.int64)
    else:
        # One graph per component, of the first component's block: the graph of the whole vector pattern
        # couples every component to every other, and its aggregates fit elasticity badly.
        ns = n // components
        p = A.pattern
        keep = (p.rows < ns) & (p.indices < ns)
        scalar, _ = CSRPattern.from_coo(p.rows[keep], p.indices[keep], (ns, ns))
        M = sp.kron(sp.identity(components), _graph_matrix(scalar), format="csr")
        decoupled = np.zeros(0, np.int64)
    fixed_all = decoupled if fixed is None else np.union1d(np.asarray(fixed, np.int64).ravel(), decoupled)
    perm = None
    if components > 1:
        ns = n // components
        # node-major position of each component-major dof: node * c + comp
        perm = (np.arange(n) % ns) * components + np.arange(n) // ns
        inv = np.empty(n, np.int64)
        inv[perm] = np.arange(n)
        M = M[inv][:, inv].tocsr()
        M = sp.bsr_matrix(M, blocksize=(components, components))
    B = None
    if near_nullspace is not None:
        B = np.asarray(near_nullspace, np.float64)
        if B.ndim == 1:
            B = B[:, None]
        if B.shape[0] != n:
            raise ValueError(f"near_nullspace must have shape (n, k) = ({n}, k), got {B.shape}.")
        if perm is not None:
            B = B[inv]
    opts = {"max_coarse": int(max_coarse), "max_levels": 30, "symmetry": "symmetric", "keep": False}
    opts.update(pyamg_options)
    # pyamg estimates spectral radii from random vectors drawn from NumPy's global generator: seed it for the
    # call (and restore the caller's state), so the same matrix always gives the same hierarchy, whatever ran
    # before (hierarchies are compared and cached by content).
    state = np.random.get_state()
    np.random.seed(0)
    try:
        ml = pyamg.smoothed_aggregation_solver(M, B=B, **opts)
    finally:
        np.random.set_state(state)
    Ps = [sp.csr_matrix(lvl.P) for lvl in ml.levels[:-1]]
    if perm is not None and Ps:
        Ps[0] = Ps[0][perm].tocsr()
    logger.debug("amg_hierarchy: sizes %s", [lvl.A.shape[0] for lvl in ml.levels])
    return Hierarchy(Ps, fixed=fixed_all if fixed_all.size else None, **(hierarchy_options or {}))


# pattern digest -> [Hierarchy, iterations of its first solve with concrete values (or None)]
_AUTO: OrderedDict = OrderedDict()


def auto_hierarchy(A: SparseMatrix) -> Hierarchy:
    """The algebraic hierarchy of ``A``'s pattern (built on first use, the last 4 patterns cached).

    It is built again from the values of a later solve when :func:`record_iterations` saw an eager solve take
    more than twice the iterations of the first one (the aggregation no longer fits the values).
    """
    key = A.pattern._digest
    entry = _AUTO.get(key)
    if entry is None:
        entry = [amg_hierarchy(A), None]
        _AUTO[key] = entry
        while len(_AUTO) > 4:
            _AUTO.popitem(last=False)
    _AUTO.move_to_end(key)
    return entry[0]


def record_iterations(pattern: CSRPattern, H: Hierarchy, iterations) -> None:
    """Note the CG iterations of an eager solve with the automatic hierarchy ``H`` of ``pattern``; more than
    twice those of its first solve drop it, so the next solve rebuilds it from its own values."""
    entry = _AUTO.get(pattern._digest)
    if entry is None or entry[0] is not H or isinstance(iterations, jax.core.Tracer) or np.ndim(iterations):
        return
    its = int(iterations)
    if entry[1] is None:
        entry[1] = its
    elif its > 2 * max(entry[1], 1):
        logger.info(
            "mg-cg: %d iterations against %d with a fresh algebraic hierarchy; rebuilding it", its, entry[1]
        )
        _AUTO.pop(pattern._digest, None)
