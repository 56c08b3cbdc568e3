"""Block preconditioners for saddle-point systems ``K = [[A, B^T], [B, -C]]`` (Stokes, mixed elasticity).

The unknowns are numbered in two blocks: the first ``n_primal`` (velocity, displacement) and then the rest
(pressure). Two preconditioners are built from one :class:`SaddlePoint` description:

* block-diagonal ``P = diag(Ahat, Shat)``, symmetric positive definite, for MINRES: with ``Ahat ~ A`` and
  ``Shat ~ S = C + B A^-1 B^T`` spectrally equivalent independently of the mesh, the eigenvalues of
  ``P^-1 K`` lie in a few mesh-independent intervals around ``1`` and ``(1 +- sqrt 5) / 2``, so the
  iteration count stays bounded as the mesh is refined (Elman, Silvester and Wathen, ch. 4);
* block upper-triangular ``P = [[Ahat, B^T], [0, -Shat]]`` for GMRES: with exact blocks ``K P^-1`` has the
  single eigenvalue 1 and a minimal polynomial of degree 2, so GMRES needs about half the iterations of
  MINRES, for the price of a stored Krylov basis and a non-symmetric preconditioner MINRES cannot use.

``Ahat^-1`` is one algebraic multigrid V-cycle of ``A`` (``primal="amg"``, the default: a fixed symmetric
linear operator, so MINRES sees one preconditioner throughout), its Jacobi diagonal (``"jacobi"``: cheap,
but the count then grows with the mesh), or an exact factorisation by a direct backend (``"superlu"``,
``"pardiso"``). For Stokes, ``S`` is spectrally equivalent to the pressure mass matrix over the viscosity,
``Mp / nu``: pass it as ``schur=``; its diagonal (``schur_solve="diagonal"``, equivalent to ``Mp`` up to a
constant for Lagrange elements) or an exact factorisation inverts it. Without ``schur=`` the diagonal of
``C + B diag(A)^-1 B^T`` is used, computed from ``K`` alone; it is cheap and needs nothing else, but it is
not mesh-independent.

Everything set up here is traced once per matrix (the solves of the forward, tangent and transposed systems
share it) and never differentiated: the solve's derivatives come from ``custom_linear_solve``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from igax.solvers import multigrid as _mg
from igax.solvers.backends import registered_backends
from igax.solvers.backends.amg_cg import pyamg_installed
from igax.solvers.eigen import _sub_pattern
from igax.solvers.linear import factorize
from igax.solvers.sparse import SparseMatrix

__all__ = ["SaddlePoint", "block_diagonal", "block_triangular"]

_PRIMAL = ("amg", "jacobi")
_SCHUR = ("diagonal", "lumped")


def _direct_methods() -> tuple[str, ...]:
    return tuple(b.name for b in registered_backends() if b.on_host and not getattr(b, "iterative", False))


class SaddlePoint:
    """The block structure of a saddle-point matrix and how to precondition each block.

    Arguments:
        n_primal: the number of primal unknowns (velocity, displacement), numbered first; the remaining
            unknowns of the matrix are the constraint (pressure) block.
        schur: optional :class:`~igax.solvers.SparseMatrix` approximating the Schur complement, SPD, of the
            size of the pressure block: for Stokes the pressure mass matrix divided by the viscosity. Without
            it the diagonal of ``C + B diag(A)^-1 B^T`` is used (not mesh-independent).
        primal: how ``A^-1`` is approximated: ``"amg"`` (one algebraic V-cycle; needs pyamg, or give
            ``hierarchy=``), ``"jacobi"``, or a direct method name (``"superlu"``, ``"pardiso"``) for an exact
            factorisation of ``A``.
        schur_solve: how ``schur`` is inverted: ``"diagonal"`` (its diagonal), ``"lumped"`` (row sums), or a
            direct method name for an exact factorisation.
        hierarchy: an :class:`~igax.solvers.Hierarchy` for the primal block (``primal="amg"``); by default
            the algebraic one of the block's pattern (cached).
        cycles: V-cycles per application (``primal="amg"``): a fixed number of symmetric cycles is still a
            fixed SPD operator, closer to ``A^-1`` (fewer MINRES iterations, each dearer).

    Pass it as ``saddle=`` to ``solve(K, b, method="minres")`` or ``method="block-gmres"``; a pair of
    sizes ``saddle=(n_primal, n_dual)`` is short for ``SaddlePoint(n_primal)`` (``primal="jacobi"`` without
    pyamg). It is compared by identity (it may hold a matrix): build it once, outside loops, so compiled
    programs are reused.

    Example:
        >>> import scipy.sparse as sp
        >>> from igax.solvers import SaddlePoint, SparseMatrix
        >>> Mp = SparseMatrix.from_scipy(sp.identity(3, format="csr"), positive_definite=True)
        >>> SaddlePoint(8, schur=Mp, primal="jacobi")
        SaddlePoint(n_primal=8, n_dual=3, primal='jacobi', schur_solve='diagonal')
    """

    def __init__(
        self, n_primal, *, schur=None, primal="amg", schur_solve="diagonal", hierarchy=None, cycles=1
    ):
        if isinstance(n_primal, bool) or not isinstance(n_primal, (int, np.integer)) or n_primal < 1:
            raise ValueError(
                f"n_primal must be a positive int (the number of velocity/displacement unknowns, numbered "
                f"before the pressure ones), got {n_primal!r}."
            )
        if schur is not None and not isinstance(schur, SparseMatrix):
            raise TypeError(
                f"schur must be an igax.solvers.SparseMatrix (e.g. the pressure mass matrix over the "
                f"viscosity, SparseMatrix.from_scipy(Mp / nu, positive_definite=True)) or None, got "
                f"{type(schur).__name__}."
            )
        if schur is not None and schur.shape[0] != schur.shape[1]:
            raise ValueError(f"schur must be square, got shape {schur.shape}.")
        direct = _direct_methods()
        if primal not in _PRIMAL + direct:
            raise ValueError(f"primal must be one of {_PRIMAL + direct}, got {primal!r}.")
        if schur_solve not in _SCHUR + direct:
            raise ValueError(f"schur_solve must be one of {_SCHUR + direct}, got {schur_solve!r}.")
        if hierarchy is not None and not isinstance(hierarchy, _mg.Hierarchy):
            raise TypeError(f"hierarchy must be an igax.solvers.Hierarchy or None, got {type(hierarchy)}.")
        if isinstance(cycles, bool) or not isinstance(cycles, (int, np.integer)) or cycles < 1:
            raise ValueError(f"cycles must be a positive int (V-cycles per application), got {cycles!r}.")
        if primal == "amg" and hierarchy is None and not pyamg_installed():
            raise ImportError(
                'primal="amg" without hierarchy= builds an algebraic hierarchy with pyamg, which is not '
                'installed: `pip install pyamg`, pass hierarchy=, or use primal="jacobi" or "superlu".'
            )
        self.cycles = int(cycles)
        self.n_primal = int(n_primal)
        self.schur = schur
        self.primal = primal
        self.schur_solve = schur_solve
        self.hierarchy = hierarchy

    @property
    def n_dual(self) -> int | None:
        return None if self.schur is None else self.schur.shape[0]

    def check_matrix(self, K: SparseMatrix) -> None:
        """Raise a ``ValueError`` unless ``K`` fits these block sizes."""
        n = K.shape[0]
        if not self.n_primal < n:
            raise ValueError(
                f"saddle= says the first n_primal={self.n_primal} unknowns are primal, but K has only {n}: "
                "the pressure block would be empty. Number the velocity unknowns first, then the pressure."
            )
        if self.schur is not None and self.schur.shape[0] != n - self.n_primal:
            raise ValueError(
                f"schur has shape {self.schur.shape}, but the pressure block of K has "
                f"{n - self.n_primal} unknowns (K: {n}, n_primal: {self.n_primal}); build the pressure mass "
                "matrix on the same pressure dofs (after the same boundary conditions)."
            )

    def __repr__(self):
        return (
            f"SaddlePoint(n_primal={self.n_primal}, n_dual={self.n_dual}, primal={self.primal!r}, "
            f"schur_solve={self.schur_solve!r})"
        )


def as_saddle(saddle, K: SparseMatrix) -> SaddlePoint:
    """``saddle=`` as a :class:`SaddlePoint` checked against ``K`` (a pair of sizes is accepted)."""
    pair = isinstance(saddle, tuple) and len(saddle) == 2
    if pair and all(isinstance(s, (int, np.integer)) for s in saddle):
        if sum(saddle) != K.shape[0]:
            raise ValueError(
                f"saddle=(n_primal, n_dual)={saddle} does not add up to the size of K ({K.shape[0]})."
            )
        saddle = _pair(int(saddle[0]))
    if not isinstance(saddle, SaddlePoint):
        raise TypeError(
            "saddle= must be an igax.solvers.SaddlePoint (block sizes and the Schur approximation) or a pair "
            f"(n_primal, n_dual) of ints, got {type(saddle).__name__}; e.g. "
            "saddle=SaddlePoint(n_velocity, schur=pressure_mass / viscosity)."
        )
    saddle.check_matrix(K)
    return saddle


@functools.lru_cache(maxsize=8)
def _pair(n_primal: int) -> SaddlePoint:
    # one object per size: programs compiled for it are reused
    return SaddlePoint(n_primal, primal="amg" if pyamg_installed() else "jacobi")


@functools.lru_cache(maxsize=8)
def _index_maps(pattern, n: int):
    """Static slots of ``K``'s pattern: the primal block's, and the ``B`` entries (pressure rows, primal
    columns) with their rows and columns, and the pressure diagonal."""
    keep = np.arange(n, dtype=np.int64)
    sub_pattern, sub_slots = _sub_pattern(pattern, keep.tobytes(), n)
    rows, cols = pattern.rows, pattern.indices
    b_slots = np.flatnonzero((rows >= n) & (cols < n))
    diag = pattern.diagonal_slots[n:]
    return sub_pattern, sub_slots, b_slots, rows[b_slots] - n, cols[b_slots], diag


class BlockState(NamedTuple):
    """A saddle-point preconditioner set up for one matrix (a pytree; fields unused by a choice are None)."""

    mg: object  # MGState of the primal block (primal="amg")
    primal_factor: object  # Factorization of the primal block (a direct method)
    dinv: jax.Array | None  # inverse diagonal of the primal block (primal="jacobi")
    sinv: jax.Array | None  # inverse diagonal / lumped Schur approximation
    schur_factor: object  # Factorization of schur (a direct schur_solve)
    ok: jax.Array  # False when a block is not positive definite: the preconditioner would not be SPD


def prepare_arrays(K: SparseMatrix, saddle: SaddlePoint):
    """Host-side arrays of the set-up that should be program arguments, not constants (eager, once)."""
    if saddle.primal != "amg":
        return None
    sub_pattern, sub_slots, *_ = _index_maps(K.pattern, saddle.n_primal)
    A = SparseMatrix(K.values[sub_slots], sub_pattern, symmetric=True)
    H = saddle.hierarchy or _mg.auto_hierarchy(A)
    return H.plan(sub_pattern).arrays


def setup(K: SparseMatrix, saddle: SaddlePoint, arrays=None) -> BlockState:
    """Set the block preconditioner up for the values of ``K`` (traceable; no gradient flows).

    Arguments:
        K: the saddle-point matrix ``[[A, B^T], [B, -C]]``.
        saddle: its :class:`SaddlePoint` description.
        arrays: what :func:`prepare_arrays` returned, or None.
    """
    n = saddle.n_primal
    vals = jax.lax.stop_gradient(K.values)
    sub_pattern, sub_slots, b_slots, b_rows, b_cols, pdiag = _index_maps(K.pattern, n)
    A = SparseMatrix(vals[sub_slots], sub_pattern, symmetric=True, positive_definite=True)
    mg = pf = dinv = sinv = sf = None
    ok = jnp.bool_(True)
    dA = A.diagonal()
    if saddle.primal == "amg":
        H = saddle.hierarchy or _mg.auto_hierarchy(A)
        plan = H.plan(sub_pattern)
        mg = _mg.setup(plan.static, plan.arrays if arrays is None else arrays, A.values)
        ok = ok & mg.ok
    elif saddle.primal == "jacobi":
        ok = ok & jnp.all(dA > 0)
        dinv = 1.0 / jnp.where(dA > 0, dA, 1.0)
    else:
        pf = factorize(A, method=saddle.primal)
    if saddle.schur is None:
        # diag(C + B diag(A)^-1 B^T): the (2,2) block of K is -C.
        safe = jnp.where(dA > 0, dA, 1.0)
        m = K.shape[0] - n
        s = jax.ops.segment_sum(vals[b_slots] ** 2 / safe[b_cols], b_rows, num_segments=m)
        s = s - jnp.where(pdiag >= 0, vals[jnp.asarray(np.maximum(pdiag, 0))], 0.0)
        ok = ok & jnp.all(s > 0)
        sinv = 1.0 / jnp.where(s > 0, s, 1.0)
    elif saddle.schur_solve in _SCHUR:
        S = saddle.schur
        s = S.diagonal() if saddle.schur_solve == "diagonal" else S.matvec(jnp.ones(S.shape[0], S.dtype))
        s = jax.lax.stop_gradient(s).astype(vals.dtype)
        ok = ok & jnp.all(s > 0)
        sinv = 1.0 / jnp.where(s > 0, s, 1.0)
    else:
        S = saddle.schur
        S = S.with_values(jax.lax.stop_gradient(S.values).astype(vals.dtype))
        sf = factorize(S, method=saddle.schur_solve)
    return BlockState(mg, pf, dinv, sinv, sf, ok)


def _primal_solve(state: BlockState, saddle: SaddlePoint, r):
    if state.mg is not None:
        # the automatic (algebraic) hierarchy has the default options
        opts = saddle.hierarchy.options if saddle.hierarchy is not None else _mg._check_options({})
        cycle = functools.partial(
            _mg.vcycle, state.mg, degree=opts["chebyshev_degree"], eig_ratio=opts["eig_ratio"]
        )
        x = cycle(r)
        for _ in range(saddle.cycles - 1):  # x += V (r - A x): iterated cycles, still symmetric
            x = x + cycle(r - state.mg.matrices[0].matvec(x))
        return x
    if state.dinv is not None:
        return state.dinv * r
    return state.primal_factor.linear_solve(r, throw=False).value


def _schur_solve(state: BlockState, r):
    if state.sinv is not None:
        return state.sinv * r
    return state.schur_factor.linear_solve(r, throw=False).value


def apply_diagonal(state: BlockState, saddle: SaddlePoint, r):
    """``diag(Ahat, Shat)^-1 r``."""
    n = saddle.n_primal
    return jnp.concatenate([_primal_solve(state, saddle, r[:n]), _schur_solve(state, r[n:])])


def apply_triangular(K: SparseMatrix, state: BlockState, saddle: SaddlePoint, r):
    """``[[Ahat, B^T], [0, -Shat]]^-1 r``: the pressure part first, then the velocity with its coupling."""
    n = saddle.n_primal
    p = -_schur_solve(state, r[n:])
    Bt_p = K.matvec(jnp.concatenate([jnp.zeros(n, r.dtype), p]))[:n]  # B^T p: the top-right block of K
    return jnp.concatenate([_primal_solve(state, saddle, r[:n] - Bt_p), p])


def block_diagonal(K: SparseMatrix, saddle) -> callable:
    """The block-diagonal preconditioner ``r -> diag(Ahat, Shat)^-1 r`` of ``K`` (SPD; for MINRES).

    Arguments:
        K: the saddle-point :class:`~igax.solvers.SparseMatrix`, primal unknowns first.
        saddle: a :class:`SaddlePoint` or ``(n_primal, n_dual)``.

    Returns:
        A function of ``r (n,)``, traceable, to pass as ``precond`` to :func:`~igax.solvers.minres`.

    Example:
        >>> import jax.numpy as jnp, scipy.sparse as sp
        >>> from igax.solvers import SaddlePoint, SparseMatrix, block_diagonal, minres
        >>> K = SparseMatrix.from_scipy(sp.csr_matrix([[4.0, 0, 1], [0, 4, 1], [1, 1, 0]]), symmetric=True)
        >>> P = block_diagonal(K, SaddlePoint(2, primal="jacobi"))
        >>> [round(v, 6) for v in P(jnp.array([4.0, 8.0, 1.0])).tolist()]   # S = 1/4 + 1/4
        [1.0, 2.0, 2.0]
        >>> r = minres(K.matvec, jnp.array([5.0, 5.0, 2.0]), P)
        >>> [round(v, 8) for v in r.x.tolist()], int(r.status)
        ([1.0, 1.0, 1.0], 0)
    """
    saddle = as_saddle(saddle, K)
    state = setup(K, saddle)
    return lambda r: apply_diagonal(state, saddle, r)


def block_triangular(K: SparseMatrix, saddle) -> callable:
    """The block upper-triangular preconditioner ``r -> [[Ahat, B^T], [0, -Shat]]^-1 r`` (for GMRES).

    Arguments:
        K: the saddle-point :class:`~igax.solvers.SparseMatrix`, primal unknowns first.
        saddle: a :class:`SaddlePoint` or ``(n_primal, n_dual)``.

    Returns:
        A function of ``r (n,)``, traceable, to pass as ``precond`` to ``igax.solvers.iterative.gmres``.

    Example:
        >>> import jax.numpy as jnp, scipy.sparse as sp
        >>> from igax.solvers import SparseMatrix, block_triangular
        >>> K = SparseMatrix.from_scipy(sp.csr_matrix([[4.0, 0, 1], [0, 4, 1], [1, 1, 0]]), symmetric=True)
        >>> P = block_triangular(K, (2, 1))
        >>> [round(v, 6) for v in P(jnp.array([4.0, 8.0, 1.0])).tolist()]   # p = -2, u = (4 + 2, 8 + 2) / 4
        [1.5, 2.5, -2.0]
    """
    saddle = as_saddle(saddle, K)
    state = setup(K, saddle)
    return lambda r: apply_triangular(K, state, saddle, r)
