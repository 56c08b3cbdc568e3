"""Multigrid hierarchies of function spaces: the transfer operators behind ``method="mg-cg"``.

:func:`mg_hierarchy` turns a space into an :class:`igax.solvers.Hierarchy` (the static, host-built list of
prolongations the multigrid-preconditioned CG of :mod:`igax.solvers.multigrid` runs with):

- spline spaces (:class:`~igax.fem.SplineSpace`, :class:`~igax.fem.MultiPatchSpace`): nested spaces made by
  coarsening the knot vectors, with the exact knot-insertion prolongation (NURBS weights, glued seams,
  collapsed poles and multi-patch interfaces included; see :mod:`igax.fem._transfer_spline`);
- Lagrange spaces on meshes made by :func:`igax.fem.mesh_refine.refine`: the parent meshes, with nodal
  interpolation as prolongation (:mod:`igax.fem._transfer_lagrange`);
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

from igax.fem._transfer_lagrange import lagrange_levels, near_nullspace
from igax.fem._transfer_spline import spline_levels

__all__ = ["mg_hierarchy", "supports_geometric_mg"]


def _spline(space, coarse_size, max_levels):
    return [lv.prolongation for lv in spline_levels(space, coarse_size=coarse_size, max_levels=max_levels)]


def _lagrange(space, coarse_size, max_levels):
    return [P for _, P in lagrange_levels(space, coarse_size=coarse_size, max_levels=max_levels)]


# Geometric transfers by the kind of a space's plan. A new kind of space registers its builder here:
# ``builder(space, coarse_size, max_levels) -> [P_0, P_1, ...]`` (scipy.sparse, finest first), empty when the
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
        raise ValueError("mg_hierarchy: bc was built on a different space than the one given.")
    return np.asarray(bc.dofs, dtype=np.int64)


def supports_geometric_mg(space) -> bool:
    """Whether ``space`` has a geometric hierarchy (spline spaces; Lagrange spaces on refined meshes)."""
    build = TRANSFERS.get(getattr(space.plan, "kind", None))
    if build is None:
        return False
    if space.plan.kind == "lagrange":
        from igax.fem import mesh_refine
        from igax.fem._transfer_lagrange import mesh_of

        mesh = mesh_of(space)
        return mesh is not None and mesh_refine.parent(mesh) is not None
    return True


def mg_hierarchy(
    space,
    *,
    bc=None,
    A=None,
    coarse_size: int = 256,
    max_levels: int = 20,
    algebraic: bool | None = None,
    **options,
):
    """The multigrid hierarchy of a space, for ``solvers.solve(..., method="mg-cg", hierarchy=H)``.

    Geometric where the space has nested coarse spaces (always for spline spaces; for Lagrange spaces when
    the mesh was made by :func:`igax.fem.mesh_refine.refine`, which records the meshes it came from),
    algebraic (smoothed aggregation on ``A``) otherwise. Cached per space plan, NURBS weights, Dirichlet dofs
    and options: calling it again, e.g. in every step of an optimisation loop, costs a dictionary lookup.

    Arguments:
        space: the space the system is assembled on (scalar or vector).
        bc: the :class:`~igax.fem.DirichletBC` (or list) the system is condensed with; its dofs become the
            hierarchy's ``fixed`` dofs, so coarse corrections never touch prescribed values.
        A: the assembled matrix, with concrete values: needed only for an algebraic hierarchy (a Lagrange
            space on a mesh with no recorded refinement). Its sparsity pattern and values set up the
            aggregation once; later matrices with new values reuse it.
        coarse_size: geometric coarsening stops at a level with at most this many dofs (the coarsest level
            is solved directly or by a long Krylov run, see :class:`igax.solvers.Hierarchy`).
        max_levels: at most this many coarse levels.
        algebraic: True forces the algebraic hierarchy (needs ``A``), False refuses it (raises when the space
            has no geometric one), None (default) picks.
        **options: passed on to :class:`igax.solvers.Hierarchy` (smoother, cycle ...).

    Returns:
        an :class:`igax.solvers.Hierarchy` (static and hashable: a ``jit`` static argument).

    Raises:
        ValueError: an algebraic hierarchy is needed but ``A`` is missing or traced; ``bc`` is on another
            space.

    Example:
        >>> V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=64))
        >>> bc = fem.DirichletBC(V, None, 0.0)
        >>> H = fem.mg_hierarchy(V, bc=bc)
        >>> u = fem.solve(A, b, bc=bc, method="mg-cg", hierarchy=H)   # fem.solve would build the same H
    """
    from igax.solvers import multigrid as smg

    plan = space.plan
    fixed = _fixed_dofs(space, bc)
    use_amg = algebraic
    if use_amg is None:
        use_amg = not supports_geometric_mg(space) and plan.ndofs > coarse_size
    opts = tuple(sorted(options.items()))
    key = (
        "amg" if use_amg else "geo",
        _geometry_key(space) if not use_amg else (),
        None if fixed is None else _digest(fixed),
        None if not use_amg or A is None else A.pattern,
        int(coarse_size),
        int(max_levels),
        opts,
    )
    per_plan = _CACHE.setdefault(plan, {})
    if key in per_plan:
        return per_plan[key]
    if use_amg:
        H = _algebraic(space, A, fixed, options)
    else:
        build = TRANSFERS.get(plan.kind)
        if build is None:
            raise ValueError(
                f"mg_hierarchy: spaces of kind {plan.kind!r} have no geometric hierarchy; pass A= and "
                "algebraic=True for an algebraic one."
            )
        prolongations = build(space, int(coarse_size), int(max_levels))
        if not prolongations and algebraic is False and plan.ndofs > coarse_size:
            raise ValueError(
                f"mg_hierarchy: this {plan.kind} space ({plan.ndofs} dofs) has no geometric hierarchy (its "
                "mesh was not made by fem.mesh_refine.refine); build the mesh coarse and refine it, or pass "
                "A= and leave algebraic=None for an algebraic hierarchy."
            )
        H = smg.Hierarchy(prolongations, fixed=fixed, **options)
    if len(per_plan) >= 8:  # bounded: a hierarchy holds sizeable sparse matrices
        per_plan.pop(next(iter(per_plan)))
    per_plan[key] = H
    return H


def _algebraic(space, A, fixed, options):
    from igax.solvers import multigrid as smg
    from igax.solvers.sparse import SparseMatrix

    if not isinstance(A, SparseMatrix):
        raise ValueError(
            f"mg_hierarchy: this {space.plan.kind} space has no geometric hierarchy (its mesh was not made "
            "by fem.mesh_refine.refine), so an algebraic one is built from the matrix: pass A=<the assembled "
            "SparseMatrix>. Or build the mesh coarse and refine it with fem.mesh_refine.refine."
        )
    if isinstance(A.values, jax.core.Tracer):
        raise ValueError(
            "mg_hierarchy: an algebraic hierarchy is set up on the host from concrete matrix values, but A's "
            "values are traced (inside jit/grad). Build it once outside with a representative matrix, "
            "H = fem.mg_hierarchy(V, bc=bc, A=A0), and pass hierarchy=H to fem.solve: the aggregation is "
            "reused for every new matrix with the same pattern."
        )
    return smg.amg_hierarchy(A, near_nullspace=near_nullspace(space), fixed=fixed, **options)
