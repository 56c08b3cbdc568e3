"""igax.fem.mesh: unstructured meshes of one cell type with named boundaries and subdomains.

Modules, from the bottom up:

- ``_arrays``: row sorting and grouping of index arrays, the determinant of small matrices, ``MESH_CELLS``.
- :mod:`~igax.fem.mesh.duplicates`: coincident unmerged vertices and repeated cells.
- :mod:`~igax.fem.mesh.refine`: uniform refinement (4 or 8 children per cell) and the parent maps.
- :mod:`~igax.fem.mesh.io`: files through meshio (gmsh, VTU, XDMF) and time series (.pvd, .xdmf).
- :mod:`~igax.fem.mesh.core`: :class:`Mesh`, :func:`read_mesh`, :func:`from_meshio`.
- :mod:`~igax.fem.mesh.structured`: meshes of boxes (:func:`rectangle_mesh`, :func:`box_mesh`, ...).

Example:
    >>> from igax.fem.mesh import unit_square
    >>> unit_square(2).ncells
    8
"""

from igax.fem.mesh._arrays import MESH_CELLS, determinant, sort_rows, unique_rows
from igax.fem.mesh.core import Mesh, from_meshio, read_mesh
from igax.fem.mesh.io import MeshReadError, write_mesh, write_time_series
from igax.fem.mesh.structured import box_mesh, rectangle_mesh, unit_cube, unit_square
from igax.fem.mesh import duplicates, io, refine  # noqa: E402  (the modules, also as attributes)

from igax._deprecation import renamed as _renamed  # noqa: E402

__all__ = [
    "MESH_CELLS",
    "Mesh",
    "MeshReadError",
    "box_mesh",
    "determinant",
    "from_meshio",
    "read_mesh",
    "rectangle_mesh",
    "sort_rows",
    "unique_rows",
    "unit_cube",
    "unit_square",
    "write_mesh",
    "write_time_series",
]

# The names before the geometry/mesh split (issue 17): they warn and name the new ones.
__getattr__ = _renamed(
    __name__, {"rectangle": ("rectangle_mesh", rectangle_mesh), "box": ("box_mesh", box_mesh)}
)
