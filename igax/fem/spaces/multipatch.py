"""Multi-patch spline spaces: several NURBS patches joined C0 along conforming interfaces."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.spaces.base import FunctionSpace, Rule, SpacePlan, Tables
from igax.fem.spaces.locators import PatchesLocator, select
from igax.fem.spaces.sampling import JoinedSampler
from igax.fem.spaces.spline import SplineSpace

__all__ = ["MultiPatchSpace"]


def _side_dofs(space: SplineSpace, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scalar dofs, control points and weights along a side of a one-patch space, in the side's C order."""
    pts = space.plan.side_points(side)
    cp = np.asarray(space.control_points).reshape(-1, space.dim)[pts]
    w = np.asarray(space.weights).reshape(-1)[pts]
    return space.plan.dof_map[pts], cp, w


def _side_knots(space: SplineSpace, side: str) -> list[np.ndarray]:
    axis, _ = space.plan.sides[side]
    return [k for j, k in enumerate(space.plan.knots) if j != axis]


class _MultiPlan(SpacePlan):
    """Global dof map of the patches (NumPy), their element offsets and the merged boundary names."""

    def __init__(self, subs, names, interfaces, value_shape):
        self.patch_names = tuple(names)
        self.subs_plans = tuple(s.plan for s in subs)
        self.interfaces = tuple(interfaces)
        dof_off = np.concatenate([[0], np.cumsum([s.nscalar for s in subs])]).astype(np.int64)
        el_off = np.concatenate([[0], np.cumsum([s.nel for s in subs])]).astype(np.int64)
        self.el_off = el_off
        self.dof_off = dof_off  # patch k's own dofs are dof_map[dof_off[k] : dof_off[k + 1]]
        parent = np.arange(int(dof_off[-1]))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for (ka, sa), (kb, sb), flip in interfaces:
            da = dof_off[ka] + _side_dofs(subs[ka], sa)[0]
            db = dof_off[kb] + _side_dofs(subs[kb], sb)[0]
            if flip:
                db = db[::-1]
            for i, j in zip(da.tolist(), db.tolist(), strict=True):  # once per interface, at construction
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
        _, dof_map = np.unique(parent, return_inverse=True)
        self.dof_map = dof_map.astype(np.int64)  # (patch offset + patch dof) -> global dof
        cell_dofs = np.concatenate([self.dof_map[dof_off[k] + s.plan.cell_dofs] for k, s in enumerate(subs)])
        # Boundaries: a side name shared by several patches ("inner" of four quarter annuli) is one boundary;
        # interface sides are not boundaries.
        inner = {(k, s) for (ka, sa), (kb, sb), _ in interfaces for k, s in ((ka, sa), (kb, sb))}
        self.boundary_parts: dict[str, list[tuple[int, str]]] = {}
        for k, s in enumerate(subs):
            for nm in s.boundary_names:
                if (k, nm) not in inner:
                    self.boundary_parts.setdefault(nm, []).append((k, nm))
        bdofs = {
            nm: np.concatenate(
                [self.dof_map[dof_off[k] + subs[k].plan.boundary_dofs[side]] for k, side in parts]
            )
            for nm, parts in self.boundary_parts.items()
        }
        super().__init__(
            kind="multipatch",
            partition_key=("multipatch", tuple(p.partition_key for p in self.subs_plans), self.interfaces),
            dim=subs[0].dim,
            pdim=subs[0].plan.pdim,
            value_shape=value_shape,
            cell_dofs=cell_dofs,
            nscalar=int(self.dof_map.max()) + 1,
            boundary_dofs=bdofs,
        )


class MultiPatchSpace(FunctionSpace):
    """Several NURBS patches as one C0 space, tied along conforming interfaces.

    Each patch is analysed isoparametrically as in :class:`~igax.fem.SplineSpace`; the dofs of two interface
    sides are identified one to one (the sides must carry the same knots and coincident control points and
    weights, possibly in reverse order: checked, a mismatch raises naming the sides and the distance). The
    integer dof map is built once, so assembly, Dirichlet conditions, boundary integrals and norms work on the
    joined space as on a single patch. Boundaries are the patches' side names that are not interfaces; a name
    used by several patches (``"inner"`` of four quarter annuli) is one boundary spanning them.

    Fields on this space evaluate at physical points (``u(points)``, ``u.grad(points)``: each point on the
    first patch that holds it, so a point on an interface takes the gradient of the first patch listed; also
    under ``jit``, ``vmap`` and ``grad``, see :class:`~igax.fem.Field`), and sample and export
    (:func:`igax.fem.sample`, ``write_vtu``) patch by patch into one mesh.

    Arguments:
        patches: a sequence of :class:`igax.bases.NURBSPatch` (named ``"0"``, ``"1"``, ...) or a mapping
            name -> patch. All patches need the same degrees (refine them alike).
        interfaces: pairs ``(("A", "right"), ("B", "left"))`` of (patch name, side name); the same patch may
            appear on both ends (a periodic seam).
        shape: ``()`` scalar, ``(dim,)`` vector-valued.
        quad_points: Gauss points per element and direction (default ``degree + 1``).

    Example:
        >>> from igax import fem
        >>> left = fem.geometry.rectangle((0, 0), (1, 1)).refine(degree=2, elements=4)
        >>> right = fem.geometry.rectangle((1, 0), (2, 1)).refine(degree=2, elements=4)
        >>> V = fem.MultiPatchSpace({"L": left, "R": right}, [(("L", "right"), ("R", "left"))])
        >>> V.ndofs, V.boundary_names
        (66, ('left', 'bottom', 'top', 'right'))
    """

    spaces: tuple

    def __init__(
        self,
        patches: Sequence | Mapping,
        interfaces: Sequence = (),
        *,
        shape: Sequence[int] = (),
        quad_points: int | Sequence[int] | None = None,
    ):
        if isinstance(patches, Mapping):
            names, plist = [str(k) for k in patches], list(patches.values())
        else:
            plist = list(patches)
            names = [str(i) for i in range(len(plist))]
        if not plist:
            raise ValueError("patches must hold at least one NURBSPatch.")
        subs = tuple(SplineSpace(p, quad_points=quad_points, glue=()) for p in plist)
        degs = {s.degrees for s in subs}
        if len(degs) != 1 or len(set(subs[0].degrees)) != 1:
            raise ValueError(
                f"MultiPatchSpace needs patches of one degree in every direction, got degrees "
                f"{[s.degrees for s in subs]}; refine them alike, e.g. patch.refine(degree=2, elements=8)."
            )
        index = {n: k for k, n in enumerate(names)}
        resolved = []
        used = set()
        for item in interfaces:
            try:
                (pa, sa), (pb, sb) = item
            except (TypeError, ValueError):
                raise TypeError(
                    "interfaces must hold pairs of (patch name, side name), e.g. "
                    f"[(('L', 'right'), ('R', 'left'))]; got {item!r}."
                ) from None
            ends = []
            for pn, sn in ((str(pa), sa), (str(pb), sb)):
                if pn not in index:
                    raise ValueError(f"interfaces: unknown patch {pn!r}; the patches are {names}.")
                k = index[pn]
                if sn not in subs[k].plan.sides:
                    sides = list(subs[k].plan.sides)
                    raise ValueError(f"interfaces: patch {pn!r} has no side {sn!r}; its sides are {sides}.")
                if (k, sn) in used:
                    raise ValueError(
                        f"interfaces: side {sn!r} of patch {pn!r} appears in more than one pair."
                    )
                used.add((k, sn))
                ends.append((k, sn))
            resolved.append((*ends, self._orientation(subs, names, *ends)))
        self.spaces = subs
        self.plan = _MultiPlan(subs, names, resolved, tuple(shape))

    @staticmethod
    def _orientation(subs, names, a, b) -> bool:
        """Whether side b runs against side a (reverse order); raises when the sides do not coincide."""
        (ka, sa), (kb, sb) = a, b
        label = f"side {sa!r} of patch {names[ka]!r} and side {sb!r} of patch {names[kb]!r}"
        _, ca, wa = _side_dofs(subs[ka], sa)
        _, cb, wb = _side_dofs(subs[kb], sb)
        kna, knb = _side_knots(subs[ka], sa), _side_knots(subs[kb], sb)
        if (
            ca.shape != cb.shape
            or len(kna) != len(knb)
            or any(x.shape != y.shape for x, y in zip(kna, knb, strict=False))
        ):
            raise ValueError(
                f"interfaces: {label} carry different spline spaces ({len(ca)} vs {len(cb)} control points); "
                "refine the patches so that the interface has the same knots on both sides."
            )
        if len(kna) > 1:
            orients = [False]  # faces of 3D patches: same index order only
        else:
            orients = [False, True]
        scale = float(
            max(np.ptp(np.asarray(s.control_points).reshape(-1, s.dim), axis=0).max() for s in subs)
        )
        best = np.inf
        for flip in orients:
            cbo, wbo = (cb[::-1], wb[::-1]) if flip else (cb, wb)
            same_knots = all(
                np.allclose((1.0 - y[::-1]) if flip else y, x, rtol=0, atol=1e-12)
                or np.allclose(((y[-1] + y[0]) - y[::-1]) if flip else y, x, rtol=0, atol=1e-12)
                for x, y in zip(kna, knb, strict=True)
            )
            err = float(np.max(np.linalg.norm(ca - cbo, axis=-1)))
            werr = float(np.max(np.abs(wa - wbo) / np.abs(wa)))
            if err <= 1e-10 * scale and werr <= 1e-10:
                if not same_knots:
                    raise ValueError(
                        f"interfaces: {label} meet at the same control points but with different knots "
                        "(the two traces are different spline spaces); refine both patches alike."
                    )
                return flip
            best = min(best, err)
        raise ValueError(
            f"interfaces: {label} do not coincide: their control points differ by up to {best:.3e} "
            f"(geometry size {scale:.3e}), in either order. Join only sides that match one to one."
        )

    @property
    def patch_names(self) -> tuple[str, ...]:
        """Names of the patches, in the order of the element numbering."""
        return self.plan.patch_names

    # -- quadrature ----------------------------------------------------------------------------------------
    def build_rule(self, names) -> Rule:
        p = self.plan
        groups, elements = [], []
        if names is None:
            for k, s in enumerate(self.spaces):
                r = s.quadrature_rule()
                groups.append((k, r))
                elements.append(p.el_off[k] + r.elements)
        else:
            per_patch: dict[int, list[str]] = {}
            for nm in names:
                for k, side in p.boundary_parts[nm]:
                    per_patch.setdefault(k, []).append(side)
            for k in sorted(per_patch):
                r = self.spaces[k].quadrature_rule(tuple(per_patch[k]))
                groups.append((k, r))
                elements.append(p.el_off[k] + r.elements)
        return Rule(np.concatenate(elements), tuple(groups), None if names is None else tuple(names))

    def tables(self, rule: Rule) -> Tables:
        out = [self.spaces[k].tables(r) for k, r in rule.groups]
        nq = {t.dx.shape[1] for t in out}
        if len(nq) != 1:  # pragma: no cover - equal degrees and quad_points give equal counts
            raise ValueError("internal: patches with different numbers of quadrature points per element.")
        if len(out) == 1:
            return out[0]
        return Tables(
            *[None if out[0][i] is None else jnp.concatenate([o[i] for o in out]) for i in range(5)]
        )

    # -- the space protocol: sampling and point location ----------------------------------------------------
    def sampler(self, resolution: int) -> JoinedSampler:
        """The patches' grids side by side (points on an interface appear once per patch)."""
        return JoinedSampler(self, resolution)

    def default_resolution(self) -> int:
        """The patches' own default, the same for all (the finest)."""
        return max(sub.default_resolution() for sub in self.spaces)

    def locator(self) -> PatchesLocator:
        """Each point on the first patch whose map reaches it regularly (on an interface: the first)."""
        return PatchesLocator(self)

    def tables_at(self, index, ref, points):
        # Which patch holds a point is known only at run time, so every patch evaluates every point (the
        # others at the patch's centre, where the map is regular) and the owner's result is selected.
        p = self.plan
        dofs = tables = None
        for k, sub in enumerate(self.spaces):
            own = index == k
            lo = np.array([t[0] for t in sub.plan.knots])
            hi = np.array([t[-1] for t in sub.plan.knots])
            u0 = jnp.where(own[:, None], ref, jnp.asarray(0.5 * (lo + hi), ref.dtype))
            d, t = sub.tables_at(jnp.zeros_like(index), u0, points)
            d = jnp.asarray(p.dof_map)[int(p.dof_off[k]) + d]
            if dofs is None:
                dofs, tables = d, t
                continue
            dofs = jnp.where(own[:, None], d, dofs)
            tables = jax.tree.map(functools.partial(select, own), t, tables)
        return dofs, tables

    def jacobian_determinant(self) -> jax.Array:
        """Signed geometry Jacobian determinants at the volume quadrature points, ``(nel, nq)``."""
        return jnp.concatenate([s.jacobian_determinant() for s in self.spaces])
