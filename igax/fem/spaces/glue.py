"""Glued sides of a NURBS patch: periodic seams and collapsed sides (poles) in the integer dof map.

A :class:`~igax.fem.SplineSpace` numbers one dof per control point, except where two sides of the patch
coincide (the seam of a closed patch such as :func:`igax.fem.geometry.annulus`) or a side collapses to a point
(the centre of a polar disk): there the control points are tied to one dof. The helpers here find such
sides, check them, and build the control point -> dof map, once, in NumPy.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["collapsed_sides", "glued_dof_map", "normalise_glue", "side_mismatch"]


def side_shape(shape, axis):
    """Shape of a side: the patch shape without ``axis``."""
    return tuple(n for k, n in enumerate(shape) if k != axis)


def glued_dof_map(shape, sides, glue, collapsed=()):
    """Control point -> dof map (NumPy) that ties the control points of glued sides, and the dof count.

    Points of the second side of each pair join the class of the matching point of the first side, and all
    points of a collapsed side join one class (union-find, so several pairs may share points, e.g. the pole of
    a polar disk lies on its seam); dofs are the classes numbered in the order of their first control point,
    so without gluing the map is the identity.
    """
    n = int(np.prod(shape))
    if not glue and not collapsed:
        return np.arange(n, dtype=np.int64), n
    idx = np.arange(n).reshape(shape)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def points(name):
        ax, sd = sides[name]
        return np.take(idx, 0 if sd == 0 else shape[ax] - 1, axis=ax).ravel()

    links = [(points(a), points(b)) for a, b in glue]
    links += [(np.full(points(c).shape, points(c)[0]), points(c)) for c in collapsed]
    for pa, pb in links:
        for i, j in zip(pa.tolist(), pb.tolist(), strict=True):  # NumPy at construction, once per side
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    while True:  # flatten the trees: every point to its root
        up = parent[parent]
        if np.array_equal(up, parent):
            break
        parent = up
    _, dof_map = np.unique(parent, return_inverse=True)
    return dof_map.astype(np.int64), int(dof_map.max()) + 1


def normalise_glue(patch, glue, cp, weights) -> tuple:
    """Validate ``glue`` (pairs of side names) or detect coincident opposite sides (``glue=None``)."""
    sides = {n: (a, s) for n, a, s in patch.boundaries}
    shape = tuple(patch.shape)
    if glue is None:
        if isinstance(cp, jax.core.Tracer) or isinstance(weights, jax.core.Tracer):
            return ()  # documented: pass glue= explicitly when building a space under tracing
        pairs = []
        names = list(sides)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                (ax_a, s_a), (ax_b, s_b) = sides[a], sides[b]
                if ax_a == ax_b and s_a != s_b and side_mismatch(patch, cp, weights, a, b)[0]:
                    pairs.append((a, b) if s_a == 0 else (b, a))
        return tuple(pairs)
    if isinstance(glue, (list, tuple)) and len(glue) == 2 and all(isinstance(g, str) for g in glue):
        glue = (tuple(glue),)  # one pair given bare
    try:
        pairs = tuple((a, b) for a, b in glue)
    except (TypeError, ValueError):
        raise TypeError(
            "glue must be a sequence of pairs of side names, e.g. glue=[('seam_start', 'seam_end')], or "
            f"None (tie coincident opposite sides automatically), or () (no gluing); got {glue!r}."
        ) from None
    used: set = set()
    for a, b in pairs:
        for nm in (a, b):
            if not isinstance(nm, str) or nm not in sides:
                raise ValueError(
                    f"glue: unknown side {nm!r}; this patch has sides {list(sides)}. Name two of them per "
                    "pair, e.g. glue=[('seam_start', 'seam_end')]."
                )
            if nm in used:
                raise ValueError(f"glue: side {nm!r} appears in more than one pair (or twice in one pair).")
            used.add(nm)
        (ax_a, _), (ax_b, _) = sides[a], sides[b]
        fa, fb = side_shape(shape, ax_a), side_shape(shape, ax_b)
        ka = [np.asarray(k) for j, k in enumerate(patch.knots) if j != ax_a]
        kb = [np.asarray(k) for j, k in enumerate(patch.knots) if j != ax_b]
        same_knots = fa == fb and all(
            x.shape == y.shape and np.allclose(x, y, rtol=0, atol=1e-12) for x, y in zip(ka, kb, strict=True)
        )
        if not same_knots:
            raise ValueError(
                f"glue: sides {a!r} and {b!r} carry different spline spaces (control points {fa} vs {fb}, "
                "or different knots along them), so their dofs cannot be identified one to one. Refine the "
                "patch so that both sides have the same knots and degree."
            )
        if not (isinstance(cp, jax.core.Tracer) or isinstance(weights, jax.core.Tracer)):
            ok, err, werr, scale = side_mismatch(patch, cp, weights, a, b)
            if not ok:
                raise ValueError(
                    f"glue: sides {a!r} and {b!r} do not coincide: their control points differ by up to "
                    f"{err:.3e} (weights by {werr:.3e}; geometry size {scale:.3e}), so tying them would tear "
                    "the geometry. Glue only sides whose control points match one to one, in the same order."
                )
    return pairs


def collapsed_sides(patch, cp) -> tuple[str, ...]:
    """Names of the sides whose control points all coincide (a side collapsed to a point, e.g. a pole)."""
    if isinstance(cp, jax.core.Tracer):
        return ()
    cp = np.asarray(cp)
    scale = float(np.max(np.ptp(cp.reshape(-1, cp.shape[-1]), axis=0))) or 1.0
    out = []
    for name, ax, sd in patch.boundaries:
        face = np.take(cp, 0 if sd == 0 else cp.shape[ax] - 1, axis=ax).reshape(-1, cp.shape[-1])
        if np.max(np.linalg.norm(face - face[0], axis=-1)) <= 1e-10 * scale:
            out.append(name)
    return tuple(out)


def side_mismatch(patch, cp, weights, a, b):
    """Whether sides a, b coincide (to 1e-10 of the geometry size), their max control-point and relative
    weight mismatch, and the geometry size."""
    sides = {n: (ax, s) for n, ax, s in patch.boundaries}
    cp = np.asarray(cp)
    w = np.asarray(weights)
    shape = cp.shape[:-1]
    scale = float(np.max(np.ptp(cp.reshape(-1, cp.shape[-1]), axis=0))) or 1.0

    def face(name):
        ax, s = sides[name]
        k = 0 if s == 0 else shape[ax] - 1
        return np.take(cp, k, axis=ax).reshape(-1, cp.shape[-1]), np.take(w, k, axis=ax).ravel()

    (pa, wa), (pb, wb) = face(a), face(b)
    if pa.shape != pb.shape:
        return False, np.inf, np.inf, scale
    err = float(np.max(np.linalg.norm(pa - pb, axis=-1)))
    werr = float(np.max(np.abs(wa - wb) / np.abs(wa)))
    return bool(err <= 1e-10 * scale and werr <= 1e-10), err, werr, scale
