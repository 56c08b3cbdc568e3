"""igax.fem: geometry and meshes, quadrature, spaces, forms and assembly, boundary conditions, fields, I/O."""

from igax.fem import quadrature
from igax.fem.quadrature import facet_quadrature, gauss_legendre, simplex_quadrature, tensor_gauss
from igax.fem import geometry
from igax.fem.forms import bilinear_form, linear_form, functional, Form  # noqa: E402
from igax.fem.space import FunctionSpace  # noqa: E402
from igax.fem.spline_space import SplineSpace  # noqa: E402
from igax.fem.multipatch import MultiPatchSpace  # noqa: E402
from igax.fem.lagrange_space import LagrangeSpace  # noqa: E402
from igax.fem.field import Field  # noqa: E402
from igax.fem.assemble import assemble  # noqa: E402
from igax.fem._allocator import keep_freed_memory  # noqa: E402
from igax.fem.matrix_free import SplineOperator, operator  # noqa: E402
from igax.fem.bc import DirichletBC  # noqa: E402
from igax.fem.solve import solve  # noqa: E402
from igax.fem.multigrid import mg_hierarchy  # noqa: E402
from igax.fem import mesh, mesh_io, mesh_refine  # noqa: E402
from igax.fem.mesh import Mesh, box_mesh, rectangle_mesh, unit_cube, unit_square  # noqa: E402
from igax.fem.mesh_io import from_meshio, read_mesh, write_mesh, write_time_series  # noqa: E402
from igax.fem.export import sample, to_pyvista, write_field_series, write_vtu  # noqa: E402
from igax.fem.plot import plot, plot_convergence, plot_history  # noqa: E402
from igax.fem import library, norms  # noqa: E402
from igax.fem.norms import h1_error, h1_seminorm, l2_error, l2_norm  # noqa: E402
from igax.fem import recovery  # noqa: E402
from igax.fem.recovery import TensorField, project, recover_stress, recover_von_mises, scalar_space  # noqa: E402

from igax._deprecation import renamed as _renamed  # noqa: E402

# Names that meant something else before issue 17: fem.rectangle/fem.box were meshes while
# fem.geometry.rectangle/box are spline patches, and write_vtu_series writes .pvd or .xdmf.
__getattr__ = _renamed(
    __name__,
    {
        "rectangle": ("igax.fem.rectangle_mesh (fem.geometry.rectangle is the spline patch)", rectangle_mesh),
        "box": ("igax.fem.box_mesh (igax.fem.geometry.box is the spline patch)", box_mesh),
        "write_vtu_series": ("igax.fem.write_field_series", write_field_series),
    },
)
