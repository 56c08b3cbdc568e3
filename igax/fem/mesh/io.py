"""Reading and writing meshes and fields through meshio (gmsh, VTU, XDMF, ...), and time series (.pvd, .xdmf).

Gmsh physical groups become names: physical groups of facets (lines in 2D, surfaces in 3D) become
``Mesh.boundaries``, physical groups of cells become ``Mesh.subdomains``. A group without a name in the file
is called by its tag number (``"3"``). Only ``.msh`` files keep boundary names when written; VTU and XDMF
carry the mesh and its point / cell data.

A file that cannot be read (garbage, empty, truncated, a format meshio does not know, no 2D/3D cells) raises
:class:`MeshReadError`, a ``ValueError`` that names the file and says what was expected; the reader's own
exception is chained to it (``raise ... from``). A missing file raises ``FileNotFoundError``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from xml.etree import ElementTree as ET
from xml.sax.saxutils import quoteattr

import meshio
import numpy as np

from igax.bases.lagrange import reference_cell
from igax.fem.mesh._arrays import MESH_CELLS

if TYPE_CHECKING:  # annotations only: core's Mesh.read / Mesh.write call this module
    from igax.fem.mesh.core import Mesh

__all__ = [
    "MeshArrays",
    "MeshReadError",
    "mesh_arrays",
    "mesh_data",
    "read_raw",
    "write_mesh",
    "write_time_series",
]

logger = logging.getLogger(__name__)

# meshio cell type -> (base cell type, topological dimension); higher-order cells keep their corner vertices
_BASE = {
    "vertex": ("vertex", 0),
    "line": ("line", 1),
    "line3": ("line", 1),
    "triangle": ("triangle", 2),
    "triangle6": ("triangle", 2),
    "quad": ("quad", 2),
    "quad8": ("quad", 2),
    "quad9": ("quad", 2),
    "tetra": ("tetra", 3),
    "tetra10": ("tetra", 3),
    "hexahedron": ("hexahedron", 3),
    "hexahedron20": ("hexahedron", 3),
    "hexahedron27": ("hexahedron", 3),
    "wedge": ("wedge", 3),
    "pyramid": ("pyramid", 3),
}
_NVERTS = {"vertex": 1, "line": 2, "triangle": 3, "quad": 4, "tetra": 4, "hexahedron": 8}

# what a file of each meshio format must hold, for the messages of MeshReadError
_EXPECTED = {
    "gmsh": "a gmsh mesh (.msh, format 2.2 or 4.x, ASCII or binary: $MeshFormat, $Nodes, $Elements)",
    "ansys": "an ANSYS mesh",
    "xdmf": "an XDMF file (XML: Xdmf/Domain/Grid with a Topology and a Geometry DataItem)",
    "vtu": "a VTK XML unstructured grid (.vtu)",
    "vtk": "a legacy VTK file (.vtk)",
}
_CELLS_EXPECTED = "triangles or quadrilaterals (2D), or tetrahedra or hexahedra (3D)"


class MeshReadError(ValueError):
    """A mesh file (or an in-memory meshio mesh) that igax cannot turn into a :class:`~igax.fem.Mesh`.

    The message names the file and what was expected; the reader's exception, if any, is the ``__cause__``.
    """


def _block_dim(cell_type: str) -> int:
    if cell_type not in _BASE:
        return -1  # unknown types (polygons, ...) never win the "highest dimension" vote silently
    return _BASE[cell_type][1]


def _group_names(field_data: Mapping[str, Any], dim: int) -> dict[int, str]:
    """gmsh physical tag -> name for groups of dimension ``dim`` (field_data: name -> [tag, dim])."""
    names = {}
    for name, value in field_data.items():
        value = np.asarray(value).reshape(-1)
        if len(value) >= 2 and int(value[1]) == dim:
            names[int(value[0])] = name
    return names


class MeshArrays(NamedTuple):
    """A meshio mesh as igax mesh arrays (see :func:`mesh_arrays`)."""

    points: np.ndarray  # (npoints, dim): the vertices used by the cells, renumbered in file order
    cells: np.ndarray  # (ncells, nverts) int64
    cell_type: str  # one of MESH_CELLS
    boundaries: dict  # name -> (nfacets, nfacet_verts) from gmsh physical groups of facets
    subdomains: dict  # name -> cell ids from gmsh physical groups of cells
    used: np.ndarray  # (npoints,) the file's id of each kept vertex


def mesh_arrays(raw: meshio.Mesh, source: str = "mesh") -> MeshArrays:
    """The cells of the highest dimension of a meshio mesh, with named boundaries and subdomains, as arrays.

    This is the file-format half of :func:`igax.fem.mesh.read_mesh` / :func:`igax.fem.mesh.from_meshio`, which
    build the :class:`~igax.fem.Mesh` (merging, reorienting and checking it) from what this returns.

    Arguments:
        raw: the meshio mesh; gmsh physical groups in ``cell_data["gmsh:physical"]`` and ``field_data`` become
            named boundaries and subdomains.
        source: how error messages name the mesh.

    Returns:
        A :class:`MeshArrays`.

    Example:
        >>> import meshio
        >>> from igax.fem.mesh.io import mesh_arrays
        >>> raw = meshio.Mesh([[0, 0], [1, 0], [0, 1]], [("triangle", [[0, 1, 2]])])
        >>> mesh_arrays(raw).cell_type
        'triangle'
    """
    path = source  # only used in messages below
    blocks = list(raw.cells)
    known = [b for b in blocks if b.type in _BASE]
    if not known:
        raise MeshReadError(
            f"{path} holds no cells igax understands (found {[b.type for b in blocks]}); expected "
            f"{_CELLS_EXPECTED}"
        )
    top = max(_block_dim(b.type) for b in known)
    if top < 2:
        raise MeshReadError(
            f"{path} holds no 2D or 3D cells (highest cell types: {[b.type for b in known]}); expected "
            f"{_CELLS_EXPECTED}"
        )
    bases = sorted({_BASE[b.type][0] for b in known if _block_dim(b.type) == top})
    if len(bases) > 1 or bases[0] not in MESH_CELLS:
        raise ValueError(
            f"{path} has {top}D cells of types {bases}; igax meshes hold one cell type of "
            f"{MESH_CELLS}. Mesh with a single element type (in gmsh: Mesh.RecombineAll / "
            "Mesh.SubdivisionAlgorithm)."
        )
    cell_type = bases[0]
    ref = reference_cell(cell_type)
    facet_type = ref.facet_cell
    physical = raw.cell_data.get("gmsh:physical")

    cell_parts, cell_tags, facet_parts, facet_tags, higher = [], [], [], [], set()
    for i, block in enumerate(blocks):
        if block.type not in _BASE:
            continue
        base, dim = _BASE[block.type]
        tags = None if physical is None else np.asarray(physical[i]).reshape(-1)
        data = np.asarray(block.data)
        if dim == top:
            if block.type != base:
                higher.add(block.type)
            cell_parts.append(data[:, : _NVERTS[base]])
            cell_tags.append(tags)
        elif dim == top - 1 and base == facet_type and tags is not None:
            facet_parts.append(data[:, : _NVERTS[base]])
            facet_tags.append(tags)
    if higher:
        warnings.warn(
            f"{path}: second-order cells {sorted(higher)} are read as straight-sided "
            f"{cell_type} cells "
            "(corner vertices only); use a LagrangeSpace of degree 2 on them for a quadratic field.",
            stacklevel=2,
        )
    cells = np.concatenate(cell_parts).astype(np.int64)

    # boundaries and subdomains from gmsh physical groups
    boundaries: dict[str, np.ndarray] = {}
    if facet_parts:
        names = _group_names(raw.field_data, top - 1)
        facets, tags = np.concatenate(facet_parts).astype(np.int64), np.concatenate(facet_tags)
        for tag in np.unique(tags[tags != 0]):  # tag 0: in no physical group
            boundaries[names.get(int(tag), str(int(tag)))] = facets[tags == tag]
    subdomains: dict[str, np.ndarray] = {}
    if all(t is not None for t in cell_tags):
        names = _group_names(raw.field_data, top)
        tags = np.concatenate(cell_tags)
        for tag in np.unique(tags[tags != 0]):
            subdomains[names.get(int(tag), str(int(tag)))] = np.flatnonzero(tags == tag)

    # keep only the vertices the cells use (gmsh files also list mid-side and geometry points)
    points = np.asarray(raw.points, dtype=np.float64)
    used = np.unique(cells)
    renumber = np.full(len(points), -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    points, cells = points[used], renumber[cells]
    for name, f in boundaries.items():
        boundaries[name] = renumber[f]
        if np.any(boundaries[name] < 0):
            raise ValueError(f"boundary {name!r} in {path} uses points that belong to no cell")
    points = _planar(points, ref.dim, path)
    return MeshArrays(points, cells, cell_type, boundaries, subdomains, used)


def mesh_data(raw: meshio.Mesh, used: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The point data of the kept vertices ``used`` and the cell data of the top-dimensional cells of
    ``raw``."""
    blocks = list(raw.cells)
    top = max(_block_dim(b.type) for b in blocks if b.type in _BASE)
    point_data = {k: np.asarray(v)[used] for k, v in raw.point_data.items() if not k.startswith("gmsh:")}
    cell_data = {}
    top_blocks = [i for i, b in enumerate(blocks) if b.type in _BASE and _block_dim(b.type) == top]
    for name, arrays in raw.cell_data.items():
        if not name.startswith("gmsh:"):
            cell_data[name] = np.concatenate([np.asarray(arrays[i]) for i in top_blocks])
    return point_data, cell_data


def _planar(points: np.ndarray, dim: int, path: Any) -> np.ndarray:
    """Drop the constant z coordinate of a 2D mesh stored with 3D points."""
    if points.shape[1] == dim:
        return points
    if points.shape[1] > dim:
        extra = points[:, dim:]
        scale = max(float(np.ptp(points[:, :dim], axis=0).max()), 1.0)
        if np.ptp(extra, axis=0).max() > 1e-12 * scale:
            raise ValueError(
                f"{path}: a {dim}D mesh whose points do not lie in a plane z = const (a surface "
                "mesh in 3D) is not supported; igax meshes are flat in 2D"
            )
        return np.ascontiguousarray(points[:, :dim])
    raise ValueError(f"{path}: points have {points.shape[1]} coordinates but the cells are {dim}D")


def _check_data(data: Mapping[str, Any] | None, n: int, what: str) -> dict[str, np.ndarray]:
    out = {}
    for name, value in dict(data or {}).items():
        arr = np.asarray(value)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ValueError(
                f"{what}[{name!r}] must have {n} rows (one per {what.split('_')[0]}), got shape {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            raise TypeError(f"{what}[{name!r}] must be numeric, got dtype {arr.dtype}")
        out[name] = arr
    return out


def _pad3(points: np.ndarray) -> np.ndarray:
    """VTK stores 3D points: pad 2D coordinates (and 2-vectors) with a zero third component."""
    if points.ndim == 2 and points.shape[1] == 2:
        return np.concatenate([points, np.zeros((len(points), 1), dtype=points.dtype)], axis=1)
    return points


def _is_gmsh(path: str) -> bool:
    return path.lower().endswith((".msh",))


def write_mesh(
    mesh: Mesh,
    path: str | os.PathLike,
    point_data: Mapping[str, Any] | None = None,
    cell_data: Mapping[str, Any] | None = None,
    *,
    file_format: str | None = None,
) -> None:
    """Write a mesh and fields with meshio.

    Arguments:
        mesh: the mesh.
        path: file name; the format follows the extension (``.vtu``, ``.xdmf``, ``.msh``, ...) or
            ``file_format``.
        point_data: name -> array of shape (npoints, ...) (NumPy or JAX), e.g. the coefficients of a P1 field.
        cell_data: name -> array of shape (ncells, ...).
        file_format: a meshio format name overriding the extension, e.g. "vtu" or "gmsh22". ``.msh`` files are
            written in gmsh format 2.2 (read by gmsh, meshio and most tools): ASCII, or binary when they carry
            point data; cell data goes to VTU or XDMF.

    Gmsh files also store the named boundaries and subdomains as physical groups, so ``read_mesh`` gets them
    back. In VTU/XDMF, 2D points and 2-vectors are padded with a zero z component (VTK's convention).

    Example:
        >>> import meshio
        >>> from igax.fem import unit_square, write_mesh
        >>> mesh = unit_square(4)
        >>> write_mesh(mesh, "u.vtu", point_data={"u": mesh.points[:, 0]})   # e.g. a P1 field's coefficients
        >>> meshio.read("u.vtu").point_data["u"].shape
        (25,)
    """
    path = os.fspath(path)
    point_data = _check_data(point_data, mesh.npoints, "point_data")
    cell_data = _check_data(cell_data, mesh.ncells, "cell_data")
    if mesh.dim == 2:  # VTK and gmsh know 3-vectors only
        point_data = {k: _pad3(v) for k, v in point_data.items()}
        cell_data = {k: _pad3(v) for k, v in cell_data.items()}
    if _is_gmsh(path) or (file_format or "").startswith("gmsh"):
        _write_gmsh(mesh, path, point_data, cell_data, file_format)
        return
    points = _pad3(mesh.points)
    out = meshio.Mesh(points, [(mesh.cell_type, mesh.cells)], point_data=point_data,
                      cell_data={k: [v] for k, v in cell_data.items()})  # fmt: skip
    if path.lower().endswith((".xdmf", ".xmf")) and file_format is None:
        _write_xdmf(path, out)
    else:
        meshio.write(path, out, file_format=file_format)


def _write_gmsh(mesh: Mesh, path: str, point_data: dict, cell_data: dict, file_format: str | None) -> None:
    dim = mesh.dim
    blocks = [(mesh.cell_type, mesh.cells)]
    physical = [np.zeros(mesh.ncells, dtype=np.int64)]
    field_data = {}
    tag = 1
    for name, ids in mesh.subdomains.items():
        physical[0][ids] = tag  # gmsh stores one tag per cell: a cell in two subdomains keeps the last one
        field_data[name] = np.array([tag, dim])
        tag += 1
    for name, facets in mesh.boundaries.items():
        blocks.append((mesh.facet_type, facets))
        physical.append(np.full(len(facets), tag, dtype=np.int64))
        field_data[name] = np.array([tag, dim - 1])
        tag += 1
    cdata = {"gmsh:physical": physical, "gmsh:geometrical": [p.copy() for p in physical]}
    if cell_data:  # meshio cannot read back gmsh element data of files with several blocks (the boundaries)
        raise ValueError(
            f"cell_data {sorted(cell_data)} cannot be stored in a gmsh file with named boundaries; "
            "write cell data "
            "to a .vtu or .xdmf file instead"
        )
    if file_format not in (None, "gmsh22"):
        raise ValueError(
            f"file_format={file_format!r}: igax writes gmsh files in format 2.2 "
            "(file_format='gmsh22' or None), "
            "which gmsh and meshio read; reading handles gmsh 2 and 4"
        )
    out = meshio.Mesh(mesh.points, blocks, point_data=point_data, cell_data=cdata, field_data=field_data)
    # ASCII unless there are fields: meshio 5.3 writes ASCII gmsh data as "np.float64(...)" with NumPy 2
    meshio.gmsh.write(path, out, fmt_version="2.2", binary=bool(point_data))


# ---------------------------------------------------------------------------------------------- XDMF (XML)
# meshio's XDMF reader and writer import h5py even for inline XML data; these few lines read and write
# XDMF 3 files with inline XML data items without it (HDF5-backed files still go through meshio).
_XDMF_TOPOLOGY = {"triangle": "Triangle", "quad": "Quadrilateral", "tetra": "Tetrahedron",
                  "hexahedron": "Hexahedron", "line": "Polyline", "triangle6": "Triangle_6",
                  "tetra10": "Tetrahedron_10"}  # fmt: skip
_XDMF_CELL = {v: k for k, v in _XDMF_TOPOLOGY.items()}


def _data_item(parent: ET.Element, array: np.ndarray) -> None:
    array = np.asarray(array)
    number = "Float" if np.issubdtype(array.dtype, np.floating) else "Int"
    item = ET.SubElement(parent, "DataItem", Dimensions=" ".join(map(str, array.shape)), NumberType=number,
                         Precision=str(array.dtype.itemsize), Format="XML")  # fmt: skip
    fmt = "%.17g" if number == "Float" else "%d"
    rows = array.reshape(len(array), -1)
    item.text = "\n" + "\n".join(" ".join(fmt % v for v in row) for row in rows) + "\n"


def _attribute(grid: ET.Element, name: str, value: np.ndarray, center: str) -> None:
    kind = {1: "Scalar", 2: "Vector"}.get(value.ndim, "Tensor")
    if value.ndim == 2 and value.shape[1] not in (2, 3):
        kind = "Matrix"
    _data_item(ET.SubElement(grid, "Attribute", Name=name, AttributeType=kind, Center=center), value)


def _write_xdmf(path: str, mesh: meshio.Mesh) -> None:
    (block,) = mesh.cells
    root = ET.Element("Xdmf", Version="3.0")
    grid = ET.SubElement(ET.SubElement(root, "Domain"), "Grid", Name="mesh", GridType="Uniform")
    topo = ET.SubElement(
        grid,
        "Topology",
        TopologyType=_XDMF_TOPOLOGY[block.type],
        # fmt: skip
        NumberOfElements=str(len(block.data)),
        NodesPerElement=str(block.data.shape[1]),
    )
    _data_item(topo, block.data)
    _data_item(ET.SubElement(grid, "Geometry", GeometryType="XYZ"), mesh.points)
    for name, value in mesh.point_data.items():
        _attribute(grid, name, np.asarray(value), "Node")
    for name, value in mesh.cell_data.items():
        _attribute(grid, name, np.asarray(value[0]), "Cell")
    ET.ElementTree(root).write(path, xml_declaration=True, encoding="utf-8")


def _parse_item(item: ET.Element | None, path: str, what: str) -> np.ndarray:
    if item is None:
        raise MeshReadError(f"{path!r}: the XDMF {what} has no DataItem; expected {_EXPECTED['xdmf']}")
    try:
        dims = tuple(int(d) for d in item.get("Dimensions", "").split())
        dtype = np.float64 if item.get("NumberType", "Float") == "Float" else np.int64
        return np.array((item.text or "").split(), dtype=dtype).reshape(dims)
    except ValueError as err:  # non-numbers, or fewer numbers than Dimensions says
        raise MeshReadError(
            f"{path!r}: the XDMF {what} DataItem does not hold {item.get('Dimensions')!r} numbers ({err}); "
            f"expected {_EXPECTED['xdmf']} with inline XML data"
        ) from err


def _read_xdmf_xml(path: str) -> meshio.Mesh | None:
    """Read the first uniform grid of an XDMF file with inline XML data, or None if the data is elsewhere."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:  # an empty or truncated file, or not XML at all
        raise MeshReadError(
            f"could not read mesh file {path!r}: not valid XML ({err}); expected {_EXPECTED['xdmf']}"
        ) from err
    if any(item.get("Format", "XML") != "XML" for item in root.iter("DataItem")):
        return None
    for grid in root.iter("Grid"):
        topo, geo = grid.find("Topology"), grid.find("Geometry")
        if topo is None or geo is None:
            continue
        kind = topo.get("TopologyType") or topo.get("Type")
        if kind not in _XDMF_CELL:
            raise MeshReadError(
                f"{path!r}: XDMF topology {kind!r} is not supported; use one of {sorted(_XDMF_CELL)}"
            )
        cells = _parse_item(topo.find("DataItem"), path, "Topology")
        points = _parse_item(geo.find("DataItem"), path, "Geometry")
        point_data, cell_data = {}, {}
        for att in grid.findall("Attribute"):
            target = point_data if att.get("Center", "Node") == "Node" else cell_data
            name = att.get("Name")
            target[name] = _parse_item(att.find("DataItem"), path, f"Attribute {name!r}")
        try:
            return meshio.Mesh(points, [(_XDMF_CELL[kind], cells)], point_data=point_data,
                               cell_data={k: [v] for k, v in cell_data.items()})  # fmt: skip
        except ValueError as err:  # data sizes that do not match the points or cells
            raise MeshReadError(
                f"{path!r}: inconsistent XDMF grid ({err}); expected {_EXPECTED['xdmf']}"
            ) from err
    raise MeshReadError(
        f"{path!r}: no grid with a Topology and a Geometry in this XDMF file; expected {_EXPECTED['xdmf']}"
    )


def _formats(path: str) -> list[str]:
    """meshio format names for the file's extension (the last suffixes, e.g. ".vtu" or ".vtk.gz")."""
    name = os.path.basename(path).lower()
    out = []
    for ext, formats in meshio.extension_to_filetypes.items():
        if name.endswith(ext):
            out += [f for f in formats if f not in out]
    return out


def read_raw(path: str) -> meshio.Mesh:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"mesh file {path!r} does not exist (relative paths start in {os.getcwd()!r}); expected a mesh "
            "file such as part.msh (gmsh), part.vtu or part.xdmf"
        )
    if os.path.isdir(path):
        raise MeshReadError(
            f"{path!r} is a directory; expected a mesh file such as part.msh, part.vtu, part.xdmf"
        )
    formats = sorted(_formats(path), key=lambda f: f != "gmsh")  # .msh: gmsh before ANSYS
    if not formats:
        raise MeshReadError(
            f"could not read mesh file {path!r}: the extension names no mesh format meshio knows; expected "
            "e.g. .msh (gmsh), .vtu, .vtk, .xdmf, .mesh (medit), .med"
        )
    if os.path.getsize(path) == 0:
        raise MeshReadError(
            f"could not read mesh file {path!r}: the file is empty; expected "
            f"{_EXPECTED.get(formats[0], 'a ' + formats[0] + ' mesh')}"
        )
    if "xdmf" in formats:
        raw = _read_xdmf_xml(path)
        if raw is not None:
            return raw
    # meshio.read prints every reader's failure and then calls sys.exit(1) when no reader succeeds, so we
    # call the readers of the extension's formats ourselves and keep their errors (older and newer meshio
    # without the reader table go through meshio.read).
    readers = getattr(getattr(meshio, "_helpers", None), "reader_map", None)
    if readers is None or not all(f in readers for f in formats):
        readers = {f: (lambda p, f=f: meshio.read(p, file_format=f)) for f in formats}
    failures: list[tuple[str, BaseException]] = []
    for fmt in formats:
        try:
            return readers[fmt](path)
        except ModuleNotFoundError as err:  # XDMF with HDF5 data, and other formats with optional packages
            raise MeshReadError(
                f"reading {path!r} needs the {err.name!r} package: pip install {err.name}"
            ) from err
        except ValueError as err:
            if "Incompatible cell data" in str(err):  # meshio and gmsh 4 entities without physical groups
                raise MeshReadError(
                    f"could not read {path!r}: some gmsh entities of this file have a physical group and "
                    "others have none, which meshio cannot read; put every boundary curve/surface in a "
                    "physical group, or save the mesh in gmsh format 2.2 (gmsh option Mesh.MshFileVersion "
                    "= 2.2)"
                ) from err
            failures.append((fmt, err))
        except (Exception, SystemExit) as err:  # garbage makes readers fail in any way
            failures.append((fmt, err))
    why = "; ".join(f"as {fmt}: {type(err).__name__}: {str(err) or 'unreadable'}" for fmt, err in failures)
    expected = " or ".join(_EXPECTED.get(fmt, f"a {fmt} mesh") for fmt, _ in failures)
    raise MeshReadError(
        f"could not read mesh file {path!r} ({why}); expected {expected}. Check that the file is complete "
        "(not truncated) and that its extension matches its format."
    ) from failures[0][1]


def write_time_series(
    path: str | os.PathLike,
    mesh: Mesh,
    times: Sequence[float],
    point_data: Sequence[Mapping[str, Any]] | Mapping[str, Any],
) -> list[str]:
    """Write fields at several times, for ParaView: a ``.pvd`` collection of VTU files, or one ``.xdmf`` file.

    Arguments:
        path: ``*.pvd`` (one ``<stem>_<k>.vtu`` per time next to it) or ``*.xdmf`` (inline XML data).
        mesh: the mesh.
        times: the times, one per step.
        point_data: one dict name -> (npoints, ...) per time, or one dict name -> (ntimes, npoints, ...).

    Returns:
        The files written.

    Example:
        >>> from igax.fem import write_time_series
        >>> import numpy as np
        >>> from igax.fem import unit_square
        >>> mesh = unit_square(2)
        >>> us = np.stack([t * mesh.points[:, 0] for t in (0.0, 0.5, 1.0)])   # (ntimes, npoints)
        >>> len(write_time_series("heat.pvd", mesh, [0.0, 0.5, 1.0], {"u": us}))   # the .pvd and 3 .vtu
        4
    """
    path = os.fspath(path)
    times = [float(t) for t in np.asarray(times, dtype=float).reshape(-1)]
    if isinstance(point_data, Mapping):
        stacked = {k: np.asarray(v) for k, v in point_data.items()}
        for k, v in stacked.items():
            if v.ndim == 0 or v.shape[0] != len(times):
                raise ValueError(
                    f"point_data[{k!r}] must have a leading time axis of length {len(times)}, got {v.shape}"
                )
        steps = [{k: v[i] for k, v in stacked.items()} for i in range(len(times))]
    else:
        steps = list(point_data)
        if len(steps) != len(times):
            raise ValueError(
                f"point_data has {len(steps)} steps but times has {len(times)}; give one dict per time"
            )
    steps = [_check_data(s, mesh.npoints, "point_data") for s in steps]
    if mesh.dim == 2:
        steps = [{k: _pad3(v) for k, v in s.items()} for s in steps]
    points = _pad3(mesh.points)
    lower = path.lower()
    if lower.endswith((".xdmf", ".xmf")):
        with meshio.xdmf.TimeSeriesWriter(path, data_format="XML") as writer:
            writer.write_points_cells(points, [(mesh.cell_type, mesh.cells)])
            for t, data in zip(times, steps, strict=True):
                writer.write_data(t, point_data=data)
        return [path]
    if not lower.endswith(".pvd"):
        raise ValueError(f"path must end in .pvd or .xdmf for a time series, got {path!r}")
    folder, name = os.path.split(path)
    stem = name[: -len(".pvd")]
    written, entries = [], []
    for k, (t, data) in enumerate(zip(times, steps, strict=True)):
        vtu = f"{stem}_{k:06d}.vtu"
        meshio.write(
            os.path.join(folder, vtu), meshio.Mesh(points, [(mesh.cell_type, mesh.cells)], point_data=data)
        )
        written.append(os.path.join(folder, vtu))
        entries.append(f'    <DataSet timestep="{t!r}" group="" part="0" file={quoteattr(vtu)}/>')
    xml = (
        '<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1" byte_order="LittleEndian">\n'
        "  <Collection>\n" + "\n".join(entries) + "\n  </Collection>\n</VTKFile>\n"
    )
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(xml)
    logger.debug("wrote %d steps to %s", len(times), path)
    return [path, *written]
