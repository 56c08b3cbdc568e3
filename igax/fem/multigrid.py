"""Multigrid hierarchies of function spaces: the transfer operators behind ``method="mg-cg"``.

:func:`mg_hierarchy` turns a space into an :class:`igax.solvers.Hierarchy` (the static, host-built list of
prolongations the multigrid-preconditioned CG of :mod:`igax.solvers.multigrid` runs with):

- spline spaces (:class:`~igax.fem.SplineSpace`, :class:`~igax.fem.MultiPatchSpace`): nested spaces made by
  coarsening the knot vectors, with the exact knot-insertion prolongation (NURBS weights, glued seams,
  collapsed poles and multi-patch interfaces included; see :mod:`igax.fem.spaces._transfer_spline`);
- Lagrange spaces on meshes made by :func:`igax.fem.mesh.refine.refine`: the parent meshes, with nodal
  interpolation as prolongation (:mod:`igax.fem.spaces._transfer_lagrange`);
- other Lagrange spaces: an algebraic (smoothed-aggregation) hierarchy built from the matrix by
  :func:`igax.solvers.amg_hierarchy`, with the near-null space the space knows (constants per component,
  rigid-body modes of displacement spaces).

All of it is integer and small dense work in NumPy, done once and cached per space plan (and Dirichlet dofs,
and NURBS weights): in an optimisation loop only the Galerkin values are recomputed, in JAX, from each new
matrix. :func:`igax.fem.solve` calls :func:`mg_hierarchy` itself for ``method="mg-cg"``.
"""

from __future__ import annotations

import hashlib
import weakref

import jax
import numpy as np
import scipy.sparse.linalg as spla

from igax.fem.spaces._transfer_lagrange import lagrange_levels, near_nullspace
from igax.fem.spaces._transfer_spline import spline_levels

__all__ = ["mg_hierarchy", "supports_geometric_mg"]


def _spline(space, max_coarse, max_levels):
    return [lv.prolongation for lv in spline_levels(space, coarse_size=max_coarse, max_levels=max_levels)]


def _lagrange(space, max_coarse, max_levels):
    return [P for _, P in lagrange_levels(space, coarse_size=max_coarse, max_levels=max_levels)]


# Geometric transfers by the kind of a space's plan. A new kind of space registers its builder here:
# ``builder(space, max_coarse, max_levels) -> [P_0, P_1, ...]`` (scipy.sparse, finest first), empty when the
# space has no geometric hierarchy.
TRANSFERS = {"spline": _spline, "multipatch": _spline, "lagrange": _lagrange}

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # plan -> {key: Hierarchy}


def _digest(a) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest()


def _geometry_key(space):
    """What a spline hierarchy depends on besides the plan: the NURBS weights (traced: a marker)."""
    subs = getattr(space, "spaces", None) or ((space,) if hasattr(space, "weights") else ())
    key = []
    for s in subs:
        w = s.weights
        key.append("traced" if isinstance(w, jax.core.Tracer) else _digest(np.asarray(w)))
    return tuple(key)


def _fixed_dofs(space, bc) -> np.ndarray | None:
    if bc is None:
        return None
    from igax.fem.bc import merge_bcs

    bc = merge_bcs(bc)
    if bc.space.plan is not space.plan:
        raise ValueError(
            "mg_hierarchy: bc was built on a different space than the one given; build the DirichletBC on "
            "this space, e.g. fem.DirichletBC(V, 'left', 0.0), or pass the bc's own space."
        )
    return np.asarray(bc.dofs, dtype=np.int64)


def supports_geometric_mg(space) -> bool:
    """Whether ``space`` has a geometric hierarchy (spline spaces; Lagrange spaces on refined meshes)."""
    build = TRANSFERS.get(getattr(space.plan, "kind", None))
    if build is None:
        return False
    if space.plan.kind == "lagrange":
        return getattr(space.plan, "refinement", None) is not None
    return True


def mg_hierarchy(
    space,
    *,
    bc=None,
    A=None,
    max_coarse: int = 256,
    max_levels: int = 20,
    algebraic: bool | None = None,
    refresh: bool = False,
    **options,
):
    """The multigrid hierarchy of a space, for ``solvers.solve(..., method="mg-cg", hierarchy=H)``.

    Geometric where the space has nested coarse spaces (always for spline spaces; for Lagrange spaces when
    the mesh was made by :func:`igax.fem.mesh.refine.refine`, which records the meshes it came from),
    algebraic (pyamg smoothed aggregation, :func:`igax.solvers.amg_hierarchy`) otherwise. When the coarsest
    geometric level is still too large to factorise densely (a coarse mesh of thousands of nodes refined a few
    times), algebraic levels continue below it. Cached per space plan, NURBS weights, Dirichlet dofs and
    options: calling it again, e.g. in every step of an optimisation loop, costs a dictionary lookup.

    Arguments:
        space: the space the system is assembled on (scalar or vector).
        bc: the :class:`~igax.fem.DirichletBC` (or list) the system is condensed with; its dofs become the
            hierarchy's ``fixed`` dofs, so coarse corrections never touch prescribed values.
        A: the assembled matrix. Used only by algebraic levels: with concrete values, pyamg aggregates the
            real operator (it sees anisotropy and coefficient jumps); without ``A``, or with traced values,
            it aggregates the space's Laplacian stiffness matrix, once per component (computed in NumPy
            from the concrete geometry, also inside ``jit``). The first
            hierarchy built is reused for every later matrix of the space, whatever its values (build it
            once outside ``jit`` from a representative matrix for strongly anisotropic problems).
        max_coarse: coarsening stops at a level with at most this many dofs (the coarsest level is
            factorised densely once per matrix; the Hierarchy itself stops at its ``stop_size``, 256 by
            default).
        max_levels: at most this many coarse levels.
        algebraic: True forces an algebraic hierarchy, False refuses it (raises when the space has no
            geometric one), None (default) picks.
        refresh: build the hierarchy anew and replace the cached one (e.g. when the coefficients of an
            algebraic problem changed so much that the iteration counts grew).
        **options: passed on to :class:`igax.solvers.Hierarchy` (``chebyshev_degree``, ``eig_ratio``, ...).

    Returns:
        an :class:`igax.solvers.Hierarchy` (static and hashable: a ``jit`` static argument).

    Raises:
        ValueError: ``bc`` is on another space; ``algebraic=False`` for a space with no geometric hierarchy.

    Example:
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=64))
        >>> bc = fem.DirichletBC(V, None, 0.0)
        >>> H = fem.mg_hierarchy(V, bc=bc)
        >>> H.sizes
        (4356, 1156, 324, 100)
        >>> A = fem.assemble(fem.library.laplace, V)
        >>> b = fem.assemble(fem.library.source, V, f=1.0)
        >>> u = fem.solve(A, b, bc=bc, method="mg-cg", hierarchy=H)  # a CPU/GPU solve  # doctest: +SKIP
    """
    from igax.solvers import multigrid as smg

    plan = space.plan
    fixed = _fixed_dofs(space, bc)
    geometric = supports_geometric_mg(space)
    if algebraic is False and not geometric:
        raise ValueError(
            f"mg_hierarchy: this {plan.kind} space has no geometric hierarchy (a Lagrange space whose mesh "
            "was not made by fem.mesh.refine.refine): build the mesh coarse and refine it with "
            "fem.mesh.refine.refine, or leave algebraic=None for an algebraic hierarchy."
        )
    use_amg = bool(algebraic) or not geometric
    concrete = A is not None and not isinstance(A.values, jax.core.Tracer)
    opts = tuple(sorted(options.items()))
    key = (
        "amg" if use_amg else "geo",
        () if use_amg else _geometry_key(space),
        None if fixed is None else _digest(fixed),
        None if A is None else A.pattern,
        int(max_coarse),
        int(max_levels),
        opts,
    )
    per_plan = _CACHE.setdefault(plan, {})
    if key in per_plan and not refresh:
        return per_plan[key]
    if A is not None and A.shape != (plan.ndofs, plan.ndofs):
        raise ValueError(f"mg_hierarchy: A has shape {A.shape}, but the space has {plan.ndofs} dofs.")
    if use_amg:
        H = smg.amg_hierarchy(
            A if concrete else _stand_in(space),
            near_nullspace=near_nullspace(space),
            max_coarse=int(max_coarse),
            fixed=fixed,
            components=plan.ncomp,
            hierarchy_options=options,
        )
    else:
        Ps = TRANSFERS[plan.kind](space, int(max_coarse), int(max_levels))
        H = _finish(space, Ps, fixed, A if concrete else None, int(max_coarse), options)
    per_plan.pop(key, None)
    if len(per_plan) >= 8:  # bounded: a hierarchy holds sizeable sparse matrices
        per_plan.pop(next(iter(per_plan)))
    per_plan[key] = H
    return H


def _laplacian(space):
    """The Laplacian stiffness matrix of a scalar space, in NumPy from its host tables (None: no host path,
    or traced geometry). NumPy, so that it is concrete also while a caller's function is being traced."""
    import scipy.sparse as sp

    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(space)):
        return None
    rule = space.quadrature_rule()
    t = space.host_tables(rule)
    if t is None:
        return None
    t = t.full(np)
    Ke = np.einsum("eqad,eqbd,eq->eab", t.dphi, t.dphi, t.dx)  # (nel, nloc, nloc)
    p = space.plan
    vals = np.bincount(p.slot[rule.elements].ravel(), Ke.ravel(), minlength=p.pattern.nnz)
    return sp.csr_matrix((vals, p.pattern.indices, p.pattern.indptr), shape=p.pattern.shape)


def _stand_in(space):
    """A concrete SPD-like operator to aggregate when the matrix's values are unknown (traced) or not given.

    The Laplacian stiffness of the space's scalar companion, once per component, from the concrete geometry.
    For a 256 x 256 P1 Poisson problem its aggregates give 12 CG iterations, as the real matrix does, where
    the graph of the sparsity pattern gave 55 (its couplings have the wrong strengths: P1 stiffness entries
    across the diagonals of right triangles vanish). For vector spaces it also decouples the components:
    aggregating the whole vector pattern's graph gave 116 iterations where the real elasticity operator gives
    16 (P1 displacements, 64 x 64 square). Without host tables (traced geometry) the graph Laplacian (plus the
    identity) of the scalar pattern stands in.
    """
    import scipy.sparse as sp

    from igax.fem.recovery import scalar_space
    from igax.solvers import multigrid as smg
    from igax.solvers.sparse import CSRPattern, SparseMatrix

    plan = space.plan
    K = _laplacian(scalar_space(space))
    if K is None:
        p, ns = plan.pattern, plan.nscalar
        keep = (p.rows < ns) & (p.indices < ns)  # the first component's block: the scalar pattern
        K = smg._graph_matrix(CSRPattern.from_coo(p.rows[keep], p.indices[keep], (ns, ns))[0])
    G = sp.kron(sp.identity(plan.ncomp), K, format="csr") if plan.ncomp > 1 else K.tocsr()
    with jax.ensure_compile_time_eval():  # concrete values also while a caller's function is traced
        return SparseMatrix.from_scipy(G, positive_definite=True)


def _finish(space, Ps, fixed, A, max_coarse, options):
    """The Hierarchy of geometric transfers ``Ps``, with algebraic levels below a coarsest level that is too
    large to factorise densely (more than the Hierarchy's ``coarse_size``)."""
    from igax.solvers import multigrid as smg
    from igax.solvers.sparse import SparseMatrix

    limit = smg._check_options(dict(options))["coarse_size"]
    n_coarse = Ps[-1].shape[1] if Ps else space.plan.ndofs
    if n_coarse <= limit:
        return smg.Hierarchy(Ps, fixed=fixed, **options)
    # The geometric levels with the fixed dofs taken out, then the coarsest operator: the Galerkin product of
    # A (or of the pattern's graph matrix) through them, aggregated by pyamg.
    geo = smg.Hierarchy(Ps, fixed=fixed, **{**options, "coarse_size": n_coarse}).prolongations
    M = (A if A is not None else _stand_in(space)).to_scipy()
    B = near_nullspace(space)
    for P in geo:
        M = (P.T @ M @ P).tocsr()
        # the coarse near-null space: least squares through P (exact for constants and rigid-body modes,
        # which every nested coarse space contains)
        B = spla.splu((P.T @ P).tocsc()).solve(np.asarray(P.T @ B))
    # component-major blocks survive only when no coarse dof was dropped with the fixed ones
    whole = geo[-1].shape[1] == Ps[-1].shape[1]
    tail = smg.amg_hierarchy(
        SparseMatrix.from_scipy(M, positive_definite=True),
        near_nullspace=B,
        max_coarse=max_coarse,
        components=space.plan.ncomp if whole else 1,
        hierarchy_options=options,
    ).prolongations
    return smg.Hierarchy(list(geo) + list(tail), **options)
