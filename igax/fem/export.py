"""Field output: sampling fields on fine grids, pyvista grids, VTU files and time series for ParaView.

A spline field is sampled on a structured grid of the parameter domain of its patch: every knot span is
cut into ``resolution`` equal parts along each direction, the grid points are mapped through the NURBS
geometry, and the field's values and physical gradients are evaluated exactly there (the same basis functions
as the analysis). A Lagrange field is sampled at its nodes, where its value is its coefficient: degree-1 cells
are written as they are; degree-2 cells are cut into 4 (triangle, quadrilateral) or 8 (tetrahedron,
hexahedron) sub-cells through their edge, face and cell nodes, so the picture interpolates linearly between
exact nodal values. Gradients of Lagrange fields are evaluated at the nodes in every cell that holds them and
averaged over those cells (they are discontinuous across cells).

The result is plain NumPy data (:class:`Sampled`), turned into a pyvista grid with :func:`to_pyvista` or
written with :func:`write_vtu` (any meshio format) and :func:`write_field_series` (``.pvd`` or ``.xdmf`` time
series; once ``write_vtu_series``, a name that hid the formats it writes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import jax
import numpy as np

from igax._deprecation import renamed
from igax.bases.bspline import basis_functions
from igax.fem.field import Field
from igax.fem.lagrange_space import LagrangeSpace
from igax.fem.multipatch import MultiPatchSpace
from igax.fem.space import FunctionSpace
from igax.fem.spline_space import SplineSpace

__all__ = ["Sampled", "sample", "to_pyvista", "write_vtu", "write_field_series", "default_resolution"]

FieldsLike = Field | Sequence[Field] | Mapping[str, Field]


@dataclass
class Sampled:
    """Fields sampled on a fine mesh of their domain (NumPy data).

    Attributes:
        points: (npts, dim) physical sample points.
        cells: (ncells, nverts) connectivity of the sample mesh in meshio / VTK vertex order.
        cell_type: meshio cell name ("triangle", "quad", "tetra", "hexahedron").
        point_data: name -> values at the points, ``(npts,)`` for scalars, ``(npts, c)`` for vectors, and
            ``"grad_<name>"`` -> ``(npts, dim)`` (scalars) or ``(npts, c * dim)`` (vectors, row-major:
            ``du_c/dx_k`` at column ``c * dim + k``).
        edges: (nseg, 2) point-index pairs of the segments that draw the element boundaries (knot lines of a
            patch, cell edges of a mesh).
        parameters: (npts, pdim) parameter coordinates of the points (spline fields), else None.
        grid_shape: points per parameter direction (spline fields; points are in C order), else None.
    """

    points: np.ndarray
    cells: np.ndarray
    cell_type: str
    point_data: dict[str, np.ndarray] = field(default_factory=dict)
    edges: np.ndarray | None = None
    parameters: np.ndarray | None = None
    grid_shape: tuple[int, ...] | None = None

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    def to_mesh(self):
        """The sample mesh as an :class:`igax.fem.Mesh` (no quality check: it only carries pictures)."""
        from igax.fem.mesh import Mesh

        return Mesh(self.points, self.cells, self.cell_type, check=False)


def _np(x) -> np.ndarray:
    return np.asarray(jax.device_get(x), dtype=np.float64)


def default_resolution(space: FunctionSpace) -> int:
    """Sub-intervals per knot span: enough for about 64 (2D) or 16 (3D) points per direction, at least 2."""
    if isinstance(space, MultiPatchSpace):  # the patches' own default, the same for all (the finest)
        return max(default_resolution(sub) for sub in space.spaces)
    if not isinstance(space, SplineSpace):
        return 1
    target = 64 if space.plan.pdim == 2 else 16
    return int(max(2, min(16, int(np.ceil(target / max(space.plan.ne))))))


# --- samplers: the geometry part, computed once per space; values are then a cheap contraction ----------


class _SplineSampler:
    """Parameter grid, physical points and NURBS basis tables of a spline space at the grid."""

    def __init__(self, space: SplineSpace, resolution: int):
        p = space.plan
        self.space = space
        axes = []
        for b in p.breaks:
            t = np.linspace(0.0, 1.0, resolution + 1)[:-1]
            axes.append(np.concatenate([(b[:-1, None] + t[None, :] * np.diff(b)[:, None]).ravel(), b[-1:]]))
        self.grid_shape = tuple(len(a) for a in axes)
        u = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)  # (npts, pdim)
        self.parameters = u
        self.dofs, self.phi, self.dphi, self.points = _nurbs_tables(space, u)
        self.cells, self.cell_type = _grid_cells(self.grid_shape)
        self.edges = _grid_edges(self.grid_shape, resolution)

    def __call__(self, coeffs: np.ndarray, ncomp: int):
        c = coeffs.reshape(ncomp, -1)[:, self.dofs]  # (ncomp, npts, nloc)
        val = np.einsum("cpa,pa->pc", c, self.phi)
        grad = np.einsum("cpa,pak->pck", c, self.dphi)
        return val, grad


class _MultiPatchSampler:
    """The patches' spline samplers side by side, their dofs mapped to the joined space's numbering.

    Each patch is sampled on its own grid, so points on an interface appear once per patch (same position,
    same value: the space is C0 there; gradients may differ across the interface).
    """

    def __init__(self, space: MultiPatchSpace, resolution: int):
        p = space.plan
        parts = [_SplineSampler(sub, resolution) for sub in space.spaces]
        offsets = np.concatenate([[0], np.cumsum([len(q.points) for q in parts])])
        self.points = np.concatenate([q.points for q in parts])
        self.cells = np.concatenate([q.cells + o for q, o in zip(parts, offsets, strict=False)])
        self.cell_type = parts[0].cell_type
        self.edges = np.concatenate([q.edges + o for q, o in zip(parts, offsets, strict=False)])
        self.dofs = np.concatenate([p.dof_map[p.dof_off[k] + q.dofs] for k, q in enumerate(parts)])
        self.phi = np.concatenate([q.phi for q in parts])
        self.dphi = np.concatenate([q.dphi for q in parts])
        self.patch = np.repeat(np.arange(len(parts)), np.diff(offsets))  # patch index of every point

    __call__ = _SplineSampler.__call__


def _nurbs_tables(space: SplineSpace, u: np.ndarray):
    """Dofs (npts, nloc), NURBS values (npts, nloc), physical gradients (npts, nloc, dim), points (npts, dim).

    Plain NumPy on purpose: pictures are not differentiated, and eager JAX would compile every operation anew
    for each number of sample points (seconds per picture).
    """
    p = space.plan
    d = p.pdim
    firsts, B, D = [], [], []
    for k in range(d):
        f, ders = basis_functions(p.knots[k], p.degrees[k], u[:, k], nderiv=1)
        firsts.append(np.asarray(f))
        B.append(np.asarray(ders[0]))  # (npts, p_k + 1)
        D.append(np.asarray(ders[1]))
    L = "abc"[:d]
    spec = ",".join(f"z{c}" for c in L) + "->z" + L
    npts = len(u)
    Bt = np.einsum(spec, *B).reshape(npts, -1)  # (npts, nloc) tensor-product B-splines
    dBt = np.stack(
        [np.einsum(spec, *[D[k] if k == j else B[k] for k in range(d)]).reshape(npts, -1) for j in range(d)],
        axis=-1,
    )  # (npts, nloc, pdim)
    grids = np.meshgrid(*[np.arange(q + 1) for q in p.degrees], indexing="ij")
    dofs = np.ravel_multi_index(
        tuple(firsts[k][:, None] + grids[k].ravel()[None, :] for k in range(d)), p.shape
    )
    wl = _np(space.weights).reshape(-1)[dofs]  # (npts, nloc)
    P = _np(space.control_points).reshape(-1, p.dim)[dofs]  # (npts, nloc, dim)
    Bw, dBw = Bt * wl, dBt * wl[..., None]
    W, dW = Bw.sum(-1), dBw.sum(-2)  # (npts,), (npts, pdim)
    R = Bw / W[:, None]
    dR = (dBw - R[..., None] * dW[:, None, :]) / W[:, None, None]  # (npts, nloc, pdim)
    x = np.einsum("pa,pai->pi", R, P)
    J = np.einsum("pak,pai->pik", dR, P)  # (npts, dim, pdim)
    dphi = np.einsum("pak,pki->pai", dR, np.linalg.inv(J))
    return p.dof_map[dofs], R, dphi, x  # solution dofs (control points of glued sides share one)


def _grid_cells(shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """Quadrilaterals / hexahedra of a C-order structured grid of points, VTK vertex order."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    if len(shape) == 2:
        a = idx[:-1, :-1]
        corners = [a, idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]]
        return np.stack([c.ravel() for c in corners], axis=1), "quad"
    s0, s1 = (slice(None, -1), slice(1, None))
    order = [(s0, s0), (s1, s0), (s1, s1), (s0, s1)]
    corners = [idx[i, j, s0] for i, j in order] + [idx[i, j, s1] for i, j in order]
    return np.stack([c.ravel() for c in corners], axis=1), "hexahedron"


def _grid_edges(shape: tuple[int, ...], resolution: int) -> np.ndarray:
    """Segments of grid lines on knot lines (all other indices at multiples of ``resolution``)."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    segs = []
    for d in range(len(shape)):
        sl = [slice(None) if k == d else slice(0, None, resolution) for k in range(len(shape))]
        lines = np.moveaxis(idx[tuple(sl)], d, -1)  # (..., n_d)
        segs.append(np.stack([lines[..., :-1].ravel(), lines[..., 1:].ravel()], axis=1))
    return np.concatenate(segs)


# Degree-2 cells cut into sub-cells through their nodes, in reference coordinates (see the module docstring).
_H = 0.5
_SUBCELLS = {
    "triangle": [
        [(0, 0), (_H, 0), (0, _H)],
        [(_H, 0), (1, 0), (_H, _H)],
        [(0, _H), (_H, _H), (0, 1)],
        [(_H, 0), (_H, _H), (0, _H)],
    ],
    "quad": [[(a, b), (a + _H, b), (a + _H, b + _H), (a, b + _H)] for a in (0, _H) for b in (0, _H)],
    "tetra": None,  # built below from edge midpoints
    "hexahedron": [
        [(a + x, b + y, c + z) for z in (0, _H) for x, y in ((0, 0), (_H, 0), (_H, _H), (0, _H))]
        for a in (0, _H)
        for b in (0, _H)
        for c in (0, _H)
    ],
}


def _tetra_subcells():
    v = np.vstack([np.zeros(3), np.eye(3)])
    m = {(i, j): (v[i] + v[j]) / 2 for i in range(4) for j in range(i + 1, 4)}
    corners = [
        [v[0], m[0, 1], m[0, 2], m[0, 3]],
        [m[0, 1], v[1], m[1, 2], m[1, 3]],
        [m[0, 2], m[1, 2], v[2], m[2, 3]],
        [m[0, 3], m[1, 3], m[2, 3], v[3]],
    ]
    # The inner octahedron, cut along its diagonal m02-m13 into 4 tetrahedra around the cycle m01-m12-m23-m03.
    ring = [m[0, 1], m[1, 2], m[2, 3], m[0, 3]]
    inner = [[m[0, 2], m[1, 3], ring[k], ring[(k + 1) % 4]] for k in range(4)]
    return [[tuple(x) for x in s] for s in corners + inner]


def _local_subcells(ref) -> np.ndarray:
    """Local node ids (nsub, nverts) of the sub-cells of a degree-2 reference element, positively oriented."""
    subs = _SUBCELLS[ref.cell] if ref.cell != "tetra" else _tetra_subcells()
    out = []
    for s in subs:
        xi = np.asarray(s, dtype=float)
        ids = [int(np.argmin(np.linalg.norm(ref.nodes - x, axis=1))) for x in xi]
        if ref.cell in ("triangle", "tetra") and np.linalg.det((xi[1:] - xi[0]).T) < 0:
            ids[-1], ids[-2] = ids[-2], ids[-1]
        out.append(ids)
    return np.asarray(out, dtype=np.int64)


class _LagrangeSampler:
    """Nodes, sub-cells and (cell-averaged) nodal gradient operators of a Lagrange space."""

    def __init__(self, space: LagrangeSpace, resolution: int):
        if resolution != 1:
            raise ValueError(
                f"resolution={resolution!r}: Lagrange fields are sampled at their nodes (degree 2 cells are "
                "cut into sub-cells through them); pass resolution=None or 1, or refine the mesh for finer "
                "pictures."
            )
        p = space.plan
        self.space = space
        self.points = _np(space.dof_coordinates())  # (nscalar, dim)
        self.cell_dofs = p.cell_dofs  # (nel, nloc): local node a is local dof a
        ref, geo = p.ref, p.geo
        if p.degree == 1:
            self.cells = np.asarray(p.cell_dofs, dtype=np.int64)
        else:
            sub = _local_subcells(ref)  # (nsub, nv)
            self.cells = p.cell_dofs[:, sub].reshape(-1, sub.shape[1]).astype(np.int64)
        self.cell_type = ref.cell
        # Cell edges drawn through their nodes: vertex-vertex (degree 1), vertex-midpoint-vertex (degree 2).
        edges = np.asarray(ref.edges)
        if p.degree == 1:
            loc = edges
        else:
            mids = np.arange(geo.nbasis, geo.nbasis + len(ref.edges))  # edge midpoints follow the vertices
            loc = np.concatenate([np.stack([edges[:, 0], mids], 1), np.stack([mids, edges[:, 1]], 1)])
        segs = np.sort(p.cell_dofs[:, loc].reshape(-1, 2), axis=1)
        self.edges = np.unique(segs, axis=0)
        # Physical gradients of the local basis at the local nodes: (nel, nnode, nloc, dim).
        X = _np(space.points)[p.cells]  # (nel, nv, dim)
        J = np.einsum("qvk,evi->eqik", np.asarray(geo.gradients(ref.nodes)), X)
        dref = np.asarray(ref.gradients(ref.nodes))  # (nnode, nloc, pdim)
        self.dphi = np.einsum("qak,eqki->eqai", dref, np.linalg.inv(J))
        self.count = np.bincount(p.cell_dofs.ravel(), minlength=p.nscalar).astype(float)

    def __call__(self, coeffs: np.ndarray, ncomp: int):
        c = coeffs.reshape(ncomp, -1)  # (ncomp, nscalar)
        val = c.T
        local = c[:, self.cell_dofs]  # (ncomp, nel, nloc)
        g = np.einsum("cea,eqai->eqci", local, self.dphi)  # (nel, nnode, ncomp, dim)
        grad = np.zeros((c.shape[1],) + g.shape[2:])
        np.add.at(grad, self.cell_dofs.ravel(), g.reshape(-1, *g.shape[2:]))
        return val, grad / self.count[:, None, None]


def _sampler(space: FunctionSpace, resolution: int | None):
    res = default_resolution(space) if resolution is None else resolution
    if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or res < 1:
        raise ValueError(
            f"resolution must be a positive int (sub-intervals per knot span), got {resolution!r}."
        )
    if isinstance(space, SplineSpace):
        return _SplineSampler(space, int(res))
    if isinstance(space, LagrangeSpace):
        return _LagrangeSampler(space, int(res))
    if isinstance(space, MultiPatchSpace):
        return _MultiPatchSampler(space, int(res))
    raise TypeError(
        f"cannot sample fields of a {type(space).__name__}; use a SplineSpace or LagrangeSpace field."
    )


def _named(fields: FieldsLike, what: str = "fields") -> dict[str, Field]:
    if isinstance(fields, Field):
        return {"u": fields}
    if isinstance(fields, Mapping):
        named = dict(fields)
    elif isinstance(fields, Sequence) and not isinstance(fields, str):
        named = {f"u{i}": f for i, f in enumerate(fields)}
    else:
        raise TypeError(
            f"{what} must be a Field, a list of Fields or a dict name -> Field, got {type(fields).__name__}."
        )
    if not named:
        raise ValueError(f"{what} is empty; pass at least one Field.")
    for name, f in named.items():
        if not isinstance(f, Field):
            raise TypeError(f"{what}[{name!r}] must be an igax.fem.Field, got {type(f).__name__}.")
        if not isinstance(name, str) or not name:
            raise TypeError(f"field names must be non-empty strings, got {name!r}.")
    return named


def _same_geometry(a: FunctionSpace, b: FunctionSpace) -> bool:
    if type(a) is not type(b) or a.plan.partition_key != b.plan.partition_key:
        return False
    if isinstance(a, MultiPatchSpace):
        return all(_same_geometry(x, y) for x, y in zip(a.spaces, b.spaces, strict=True))
    if isinstance(a, SplineSpace):
        return (
            a.plan.shape == b.plan.shape
            and np.allclose(_np(a.control_points), _np(b.control_points))
            and (np.allclose(_np(a.weights), _np(b.weights)))
        )
    return a.plan.degree == b.plan.degree and np.allclose(_np(a.points), _np(b.points))


def _evaluate(s, named: dict[str, Field]) -> dict[str, np.ndarray]:
    """Point data of named fields from a sampler: values and gradients (flattened for vector fields)."""
    data = {}
    for name, f in named.items():
        val, grad = s(_np(f.coeffs), f.space.plan.ncomp)  # (npts, ncomp), (npts, ncomp, dim)
        scalar = not f.space.value_shape
        data[name] = val[:, 0] if scalar else val
        data[f"grad_{name}"] = grad[:, 0] if scalar else grad.reshape(len(val), -1)
    return data


def sample(fields: FieldsLike, resolution: int | None = None) -> Sampled:
    """Sample one or several fields on a fine mesh of their domain.

    Arguments:
        fields: a :class:`~igax.fem.Field` (named ``"u"``), a list of Fields (``"u0"``, ``"u1"``, ...) or a
            dict name -> Field. All fields must live on the same geometry (the same patch or mesh); scalar and
            vector fields may be mixed.
        resolution: spline fields: sub-intervals per knot span and direction (default: about 64 points per
            direction in 2D, 16 in 3D, at least 2 per span). Lagrange fields are sampled at their nodes
            (``None`` or ``1``).

    Returns:
        A :class:`Sampled` with the points, cells, element edges and, per field, ``name`` and ``grad_<name>``.

    Example:
        >>> s = sample(u, resolution=4)
        >>> s.point_data["u"].shape == (len(s.points),)
        True
    """
    named = _named(fields)
    first = next(iter(named.values())).space
    for name, f in named.items():
        if not _same_geometry(first, f.space):
            raise ValueError(
                f"field {name!r} lives on another geometry than the first field; sample (or write) fields of "
                "different patches or meshes separately."
            )
    s = _sampler(first, resolution)
    return Sampled(
        points=s.points,
        cells=s.cells,
        cell_type=s.cell_type,
        point_data=_evaluate(s, named),
        edges=s.edges,
        parameters=getattr(s, "parameters", None),
        grid_shape=getattr(s, "grid_shape", None),
    )


def _pad3(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == 2:
        return np.concatenate([a, np.zeros((len(a), 1))], axis=1)
    return a


_VTK_CELL = {"triangle": 5, "quad": 9, "tetra": 10, "hexahedron": 12}


def to_pyvista(fields: FieldsLike | Sampled, resolution: int | None = None, *, gradients: bool = True):
    """A ``pyvista.UnstructuredGrid`` of sampled fields (2D data lies in the plane z = 0).

    Arguments:
        fields: Field(s) as in :func:`sample`, or a :class:`Sampled`.
        resolution: see :func:`sample`.
        gradients: also attach the ``grad_<name>`` arrays.

    Returns:
        The grid; 2-vectors are padded with a zero z component, so ``grid.warp_by_vector("u")`` and glyphs
        work.

    Example:
        >>> grid = to_pyvista(u, resolution=8)
        >>> grid.point_data["u"]           # doctest: +SKIP
    """
    import pyvista as pv

    s = fields if isinstance(fields, Sampled) else sample(fields, resolution)
    grid = pv.UnstructuredGrid({_VTK_CELL[s.cell_type]: s.cells}, _pad3(s.points))
    for name, value in s.point_data.items():
        if name.startswith("grad_") and not gradients:
            continue
        grid.point_data[name] = _pad3(value) if not name.startswith("grad_") else value
    return grid


def write_vtu(path: str | os.PathLike, fields: FieldsLike, resolution: int | None = None) -> str:
    """Write sampled fields to a file for ParaView (VTU, or any format meshio writes, by extension).

    Arguments:
        path: output file, e.g. ``"u.vtu"`` (also ``.xdmf``, ``.vtk``).
        fields: Field(s) as in :func:`sample`.
        resolution: see :func:`sample`.

    Returns:
        The path written. Reading it back with ``meshio.read`` gives the sample points (padded to 3D) and, as
        point data, each field and its gradient (2-vectors padded with a zero z component).

    Example:
        >>> write_vtu("u.vtu", {"u": u, "kappa": kappa}, resolution=8)      # doctest: +SKIP
    """
    from igax.fem.mesh_io import write_mesh

    s = sample(fields, resolution)
    write_mesh(s.to_mesh(), path, point_data=s.point_data)
    return os.fspath(path)


def write_field_series(
    path: str | os.PathLike,
    times: Sequence[float],
    fields: Sequence[FieldsLike],
    resolution: int | None = None,
) -> list[str]:
    """Write a time series of fields on one geometry: a ``.pvd`` collection of VTU files, or one ``.xdmf``.

    The geometry is sampled once; each step only contracts its coefficients with the stored basis tables.

    Arguments:
        path: ``*.pvd`` (one ``<stem>_<k>.vtu`` file per step next to it) or ``*.xdmf``.
        times: one time per step.
        fields: one entry per step, each as in :func:`sample` (a Field, a list or a dict of Fields, always
            with the same names).
        resolution: see :func:`sample`.

    Returns:
        The files written (the collection first).

    Example:
        >>> write_field_series("heat.pvd", ts, [fem.Field(V, c) for c in cs])   # doctest: +SKIP
    """
    from igax.fem.mesh_io import write_time_series

    steps = [_named(f, "fields[k]") for f in fields]
    if len(steps) != len(np.reshape(times, -1)):
        raise ValueError(
            f"fields has {len(steps)} steps but times has {np.size(times)}; give one entry per time."
        )
    if not steps:
        raise ValueError("fields is empty; pass one Field (or dict of Fields) per time.")
    first = next(iter(steps[0].values())).space
    s = _sampler(first, resolution)
    names = list(steps[0])
    data = []
    for k, step in enumerate(steps):
        if list(step) != names:
            raise ValueError(f"step {k} has fields {list(step)} but step 0 has {names}; use the same names.")
        for name, f in step.items():
            if not _same_geometry(first, f.space):
                raise ValueError(f"field {name!r} of step {k} lives on another geometry than step 0.")
        data.append(_evaluate(s, step))
    mesh = Sampled(s.points, s.cells, s.cell_type).to_mesh()
    return write_time_series(path, mesh, times, data)


# The name before issue 17: the function writes .pvd or .xdmf, not .vtu alone.
__getattr__ = renamed(__name__, {"write_vtu_series": ("write_field_series", write_field_series)})
