"""A library of NURBS geometries with named boundaries.

Every function returns an :class:`igax.bases.NURBSPatch` in its coarsest exact form; refine it with
``.refine(degree=..., elements=...)``. Circles and arcs are exact (rational quadratics): an arc of opening
angle ``2a`` has its middle control point at distance ``r / cos(a)`` from the centre, with weight ``cos(a)``.

Boundary names (``patch.boundary_names``):

- ``rectangle``: ``left`` (x = x0), ``right`` (x = x1), ``bottom`` (y = y0), ``top`` (y = y1).
- ``box``: as ``rectangle``, plus ``front`` (z = z0) and ``back`` (z = z1).
- ``quarter_annulus``: ``inner`` (r = r_inner), ``outer`` (r = r_outer), ``bottom`` (y = 0), ``left`` (x = 0).
- ``annulus``: ``inner``, ``outer``; ``seam_start`` and ``seam_end`` are the same segment on y = 0, x > 0 (an
  interface, not a physical boundary): :class:`~igax.fem.SplineSpace` ties them (``glue``), so a space on the
  annulus has the boundaries ``inner`` and ``outer`` only.
- ``disk``: ``south``, ``east``, ``north``, ``west``, four quarter arcs of the circle.
- ``plate_with_hole``: ``hole`` (r = R), ``outer`` (both x = -L and y = L: the corner (-L, L) lies inside this
  side, so tractions are given as stress . normal), ``bottom`` (y = 0, symmetry), ``right`` (x = 0, symmetry).
- ``l_shape``: ``inner`` (the two edges at the re-entrant corner), ``outer`` (x = -1 and y = 1), ``bottom``
  (y = -1), ``right`` (x = 1).
- ``thick_quarter_cylinder``: as ``quarter_annulus``, plus ``front`` (z = 0) and ``back`` (z = length).
"""

from __future__ import annotations

import numpy as np

from igax.bases.patch import NURBSPatch

__all__ = [
    "rectangle",
    "box",
    "quarter_annulus",
    "annulus",
    "disk",
    "plate_with_hole",
    "l_shape",
    "thick_quarter_cylinder",
]

_S2 = np.sqrt(0.5)


def _check_extent(lower, upper, dim, name="upper"):
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    if lo.shape != (dim,) or hi.shape != (dim,):
        raise ValueError(
            f"lower and upper must each hold {dim} coordinates, got {lo.tolist()} and {hi.tolist()}."
        )
    if np.any(hi <= lo):
        raise ValueError(
            f"{name} must exceed lower in every coordinate, got lower={lo.tolist()}, upper={hi.tolist()}."
        )
    return lo, hi


def rectangle(lower=(0.0, 0.0), upper=(1.0, 1.0)) -> NURBSPatch:
    """The rectangle ``[x0, x1] x [y0, y1]`` as a bilinear patch (one element).

    Example:
        >>> import numpy as np
        >>> from igax.fem.geometry import rectangle
        >>> rectangle((0, 0), (2, 1)).evaluate(np.array([[0.5, 0.5]])).tolist()
        [[1.0, 0.5]]
    """
    lo, hi = _check_extent(lower, upper, 2)
    cp = np.empty((2, 2, 2))
    for i in range(2):
        for j in range(2):
            cp[i, j] = (lo[0] if i == 0 else hi[0], lo[1] if j == 0 else hi[1])
    return NURBSPatch(
        ([0, 0, 1, 1],) * 2,
        (1, 1),
        cp,
        boundaries=(("left", 0, 0), ("right", 0, 1), ("bottom", 1, 0), ("top", 1, 1)),
    )


def box(lower=(0.0, 0.0, 0.0), upper=(1.0, 1.0, 1.0)) -> NURBSPatch:
    """The box ``[x0, x1] x [y0, y1] x [z0, z1]`` as a trilinear patch (one element).

    Example:
        >>> import numpy as np
        >>> from igax.fem.geometry import box
        >>> box().evaluate(np.array([[0.5, 0.5, 0.5]])).tolist()
        [[0.5, 0.5, 0.5]]
    """
    lo, hi = _check_extent(lower, upper, 3)
    corners = np.stack([lo, hi])  # (2, 3)
    i, j, k = np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")
    cp = np.stack([corners[i, 0], corners[j, 1], corners[k, 2]], axis=-1)  # (2, 2, 2, 3)
    return NURBSPatch(
        ([0, 0, 1, 1],) * 3,
        (1, 1, 1),
        cp,
        boundaries=(
            ("left", 0, 0),
            ("right", 0, 1),
            ("bottom", 1, 0),
            ("top", 1, 1),
            ("front", 2, 0),
            ("back", 2, 1),
        ),
    )


def _check_radii(r_inner, r_outer):
    if not (np.isfinite(r_inner) and np.isfinite(r_outer) and 0 < r_inner < r_outer):
        raise ValueError(f"0 < r_inner < r_outer is required, got r_inner={r_inner}, r_outer={r_outer}.")


def quarter_annulus(r_inner: float = 1.0, r_outer: float = 2.0) -> NURBSPatch:
    """Quarter annulus ``r_inner <= r <= r_outer`` in the first quadrant.

    Direction 0 is radial (degree 1, knots ``[0,0,1,1]``), direction 1 angular (degree 2, knots
    ``[0,0,0,1,1,1]``, counter-clockwise from the x-axis to the y-axis); this order makes the Jacobian
    determinant positive. With the defaults the control points are those of the classic benchmark:
    ``control_points[0]`` is the inner arc (1,0), (1,1), (0,1), ``control_points[1]`` the outer arc (2,0),
    (2,2), (0,2), weights 1, 1/sqrt(2), 1 on each arc.

    Example:
        >>> import numpy as np
        >>> from igax.fem.geometry import quarter_annulus
        >>> x = quarter_annulus().evaluate(np.array([[0.0, 0.3]]))
        >>> round(float(np.hypot(*x[0])), 12)
        1.0
    """
    _check_radii(r_inner, r_outer)
    arc = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    cp = np.stack([r_inner * arc, r_outer * arc], axis=0)  # (2 radial, 3 angular, 2)
    w = np.array([[1.0, _S2, 1.0], [1.0, _S2, 1.0]])
    return NURBSPatch(
        ([0, 0, 1, 1], [0, 0, 0, 1, 1, 1]),
        (1, 2),
        cp,
        w,
        boundaries=(("inner", 0, 0), ("outer", 0, 1), ("bottom", 1, 0), ("left", 1, 1)),
    )


def thick_quarter_cylinder(r_inner: float = 1.0, r_outer: float = 2.0, length: float = 1.0) -> NURBSPatch:
    """Quarter of a thick-walled cylinder: the quarter annulus extruded along z over ``[0, length]``.

    Directions: radial (degree 1), angular (degree 2), axial (degree 1).

    Example:
        >>> from igax.fem.geometry import thick_quarter_cylinder
        >>> thick_quarter_cylinder().shape
        (2, 3, 2)
    """
    if not (np.isfinite(length) and length > 0):
        raise ValueError(f"length must be a positive number, got {length}.")
    qa = quarter_annulus(r_inner, r_outer)
    xy = np.asarray(qa.control_points)  # (2, 3, 2)
    cp = np.empty((2, 3, 2, 3))
    for k, z in enumerate((0.0, float(length))):
        cp[:, :, k, :2] = xy
        cp[:, :, k, 2] = z
    w = np.repeat(np.asarray(qa.weights)[:, :, None], 2, axis=2)
    return NURBSPatch(
        qa.knots + ((0, 0, 1, 1),),
        (1, 2, 1),
        cp,
        w,
        boundaries=qa.boundaries + (("front", 2, 0), ("back", 2, 1)),
    )


def annulus(r_inner: float = 1.0, r_outer: float = 2.0) -> NURBSPatch:
    """Full annulus as one patch: four exact quarter arcs (angular degree 2, C0 at the quarter angles).

    Direction 0 is radial (degree 1), direction 1 angular, counter-clockwise from the positive x-axis back to
    it; the two seam sides ``seam_start`` and ``seam_end`` coincide. ``SplineSpace`` detects this and glues
    them (C0 across the seam, one dof per seam control point); ``SplineSpace(patch, glue=())`` would leave a
    slit with two free sides, which is wrong for a closed ring (natural boundary conditions on the seam).

    Example:
        >>> from igax.fem.geometry import annulus
        >>> annulus().shape
        (2, 9)
    """
    _check_radii(r_inner, r_outer)
    arc = np.array([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1], [1, 0]], float)
    wa = np.array([1, _S2, 1, _S2, 1, _S2, 1, _S2, 1])
    cp = np.stack([r_inner * arc, r_outer * arc], axis=0)  # (2, 9, 2)
    w = np.stack([wa, wa], axis=0)
    return NURBSPatch(
        ([0, 0, 1, 1], [0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1, 1]),
        (1, 2),
        cp,
        w,
        boundaries=(("inner", 0, 0), ("outer", 0, 1), ("seam_start", 1, 0), ("seam_end", 1, 1)),
    )


def disk(radius: float = 1.0, center=(0.0, 0.0)) -> NURBSPatch:
    """Disk as one biquadratic patch: the boundary circle is four exact quarter arcs (one per side).

    The Jacobian vanishes at the four parametric corners (where two arcs meet, at 45 degrees); quadrature
    points never lie there, and no side is collapsed, so assembly, Dirichlet conditions on the arcs, norms
    and fields work, and Poisson converges at the optimal rates (L2 ~ h^(p+1), H1 ~ h^p, measured for degrees
    2 and 3). Gradients are undefined at the four corner points themselves: evaluating a Field exactly there
    raises, and point location within about 1e-3 of the radius of a corner may fail to converge on coarse
    meshes (it reports the point as outside).

    Example:
        >>> import numpy as np
        >>> from igax.fem.geometry import disk
        >>> x = disk().evaluate(np.array([[0.5, 0.0]]))
        >>> np.round(x, 12).tolist()
        [[0.0, -1.0]]
    """
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive number, got {radius}.")
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (2,):
        raise ValueError(f"center must hold two coordinates, got {c.tolist()}.")
    s = _S2
    q = np.sqrt(2.0)
    cp = np.array(
        [
            [[-s, -s], [-q, 0.0], [-s, s]],
            [[0.0, -q], [0.0, 0.0], [0.0, q]],
            [[s, -s], [q, 0.0], [s, s]],
        ]
    )
    w = np.array([[1.0, s, 1.0], [s, 1.0, s], [1.0, s, 1.0]])
    return NURBSPatch(
        ([0, 0, 0, 1, 1, 1],) * 2,
        (2, 2),
        radius * cp + c,
        w,
        boundaries=(("west", 0, 0), ("east", 0, 1), ("south", 1, 0), ("north", 1, 1)),
    )


def plate_with_hole(radius: float = 1.0, length: float = 4.0) -> NURBSPatch:
    """Quarter of an infinite plate with a circular hole: ``[-L, 0] x [0, L]`` minus the disc ``r < R``.

    Direction 0 is angular (degree 2, knots ``[0,0,0,0.5,0.5,1,1,1]``, from (-R, 0) to (0, R)), direction 1
    radial (degree 1). With ``R = 1, L = 4`` the control points are those of Hughes et al. (2005): hole
    (-1,0), (-1,0.41421356), (-0.70710678,0.70710678), (-0.41421356,1), (0,1) with weights 1, 0.85355339,
    0.85355339, 0.85355339, 1; outer (-4,0), (-4,2), (-4,4), (-2,4), (0,4) with weights 1.

    Example:
        >>> from igax.fem.geometry import plate_with_hole
        >>> plate_with_hole().shape
        (5, 2)
    """
    _check_radii(radius, length)
    t = np.sqrt(2.0) - 1.0  # tan(pi / 8)
    wm = 0.5 * (1.0 + _S2)
    hole = radius * np.array([[-1.0, 0.0], [-1.0, t], [-_S2, _S2], [-t, 1.0], [0.0, 1.0]])
    L = float(length)
    outer = np.array([[-L, 0.0], [-L, L / 2], [-L, L], [-L / 2, L], [0.0, L]])
    cp = np.stack([hole, outer], axis=1)  # (5, 2, 2)
    w = np.stack([np.array([1.0, wm, wm, wm, 1.0]), np.ones(5)], axis=1)
    # The outer row uses weights 1 while the hole row is rational: the radial direction is linear in the
    # homogeneous coordinates, as in the reference definition.
    return NURBSPatch(
        ([0, 0, 0, 0.5, 0.5, 1, 1, 1], [0, 0, 1, 1]),
        (2, 1),
        cp,
        w,
        boundaries=(("hole", 1, 0), ("outer", 1, 1), ("bottom", 0, 0), ("right", 0, 1)),
    )


def l_shape() -> NURBSPatch:
    """The L-shaped domain ``[-1, 1]^2`` minus ``(0, 1] x [-1, 0)`` as one bilinear patch (two elements).

    Direction 0 runs around the re-entrant corner (knots ``[0, 0, 0.5, 1, 1]``, the corner at ``0.5``),
    direction 1 from the inner edges to the outer ones.

    Example:
        >>> from igax.fem.geometry import l_shape
        >>> l_shape().n_elements
        (2, 1)
    """
    inner = np.array([[0.0, -1.0], [0.0, 0.0], [1.0, 0.0]])
    outer = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    cp = np.stack([inner, outer], axis=1)  # (3, 2, 2)
    return NURBSPatch(
        ([0, 0, 0.5, 1, 1], [0, 0, 1, 1]),
        (1, 1),
        cp,
        boundaries=(("inner", 1, 0), ("outer", 1, 1), ("bottom", 0, 0), ("right", 0, 1)),
    )
