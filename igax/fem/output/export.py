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
from igax.fem.field import Field
from igax.fem.spaces.base import FunctionSpace

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
    """The sampling resolution used when none is given: the space's own
    (:meth:`~igax.fem.spaces.base.FunctionSpace.default_resolution`; spline patches: sub-intervals per knot
    span for
    about 64 (2D) or 16 (3D) points per direction, at least 2)."""
    return space.default_resolution()


def _sampler(space: FunctionSpace, resolution: int | None):
    res = default_resolution(space) if resolution is None else resolution
    if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or res < 1:
        raise ValueError(
            f"resolution must be a positive int (sub-intervals per knot span), got {resolution!r}."
        )
    return space.sampler(int(res))


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
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=4))
        >>> u = fem.Field(V, jnp.ones(V.ndofs))
        >>> s = fem.sample(u, resolution=4)
        >>> s.point_data["u"].shape == (len(s.points),)
        True
    """
    named = _named(fields)
    first = next(iter(named.values())).space
    for name, f in named.items():
        if not first.same_geometry(f.space):
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
        >>> # skipped (writes files)
        >>> grid = to_pyvista(u, resolution=8)   # pyvista is optional  # doctest: +SKIP
        >>> grid.point_data["u"]                     # doctest: +SKIP
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
        >>> # skipped (writes files)
        >>> write_vtu("u.vtu", {"u": u, "kappa": kappa}, resolution=8)      # doctest: +SKIP
    """
    from igax.fem.mesh import write_mesh

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
        >>> # skipped (writes files)
        >>> write_field_series("heat.pvd", ts, [fem.Field(V, c) for c in cs])   # doctest: +SKIP
    """
    from igax.fem.mesh import write_time_series

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
            if not first.same_geometry(f.space):
                raise ValueError(f"field {name!r} of step {k} lives on another geometry than step 0.")
        data.append(_evaluate(s, step))
    mesh = Sampled(s.points, s.cells, s.cell_type).to_mesh()
    return write_time_series(path, mesh, times, data)


# The name before issue 17: the function writes .pvd or .xdmf, not .vtu alone.
__getattr__ = renamed(__name__, {"write_vtu_series": ("write_field_series", write_field_series)})
