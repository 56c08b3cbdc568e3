"""igax.fem: the finite-element pipeline, geometry -> space -> forms/assemble -> bc -> solve -> field -> loss.

Subpackages follow the pipeline: :mod:`igax.fem.mesh` (unstructured meshes and their files),
:mod:`igax.fem.spaces` (spline, multi-patch and Lagrange spaces behind one protocol), :mod:`igax.fem.forms`
(weak forms, their inputs, assembly and the form library) and :mod:`igax.fem.output` (sampling, files,
plots). Beside them: ``geometry`` (spline patches), ``quadrature``, ``bc`` (Dirichlet conditions), ``solving``
(:func:`solve`), ``field``, ``locate``, ``norms``, ``recovery`` and ``multigrid``. See
``docs/architecture.md``. Everything a script needs is importable from ``igax.fem`` itself.
"""

from igax.fem import quadrature
from igax.fem.quadrature import facet_quadrature, gauss_legendre, simplex_quadrature, tensor_gauss
from igax.fem import geometry
from igax.fem.forms import Form, bilinear_form, functional, linear_form  # noqa: E402
from igax.fem.spaces import FunctionSpace, LagrangeSpace, MultiPatchSpace, SplineSpace  # noqa: E402
from igax.fem.field import Field  # noqa: E402
from igax.fem.forms import SplineOperator, assemble, operator  # noqa: E402
from igax.fem.forms import element_dofs, element_matrices  # noqa: E402
from igax.fem.forms import assemble_energy, assemble_residual, energy_form, residual_form  # noqa: E402
from igax.fem._allocator import keep_freed_memory  # noqa: E402
from igax.fem.bc import DirichletBC  # noqa: E402
from igax.fem.spaces.mixed import MixedField, MixedSpace, spline_taylor_hood, taylor_hood  # noqa: E402
from igax.fem.forms.mixed_assembly import assemble_mixed_residual  # noqa: E402
from igax.fem.solving import solve  # noqa: E402
from igax.fem.solving_nonlinear import NonlinearInfo, solve_nonlinear  # noqa: E402
from igax.fem.timestepping import TransientInfo, solve_transient  # noqa: E402
from igax.fem.timestepping_adaptive import StepSchedule, adapt_steps  # noqa: E402
from igax.fem.multigrid import mg_hierarchy  # noqa: E402
from igax.fem import mesh  # noqa: E402
from igax.fem.mesh import Mesh, box_mesh, rectangle_mesh, unit_cube, unit_square  # noqa: E402
from igax.fem.mesh import from_meshio, read_mesh, write_mesh, write_time_series  # noqa: E402
from igax.fem.output import sample, to_pyvista, write_field_series, write_vtu  # noqa: E402
from igax.fem.output import plot, plot_convergence, plot_history  # noqa: E402
from igax.fem.forms import library  # noqa: E402
from igax.fem import norms  # noqa: E402
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
        # the mesh modules became igax.fem.mesh.io / .refine when igax.fem got its folders
        "mesh_io": ("igax.fem.mesh.io (read_mesh / write_mesh are in igax.fem and igax.fem.mesh)", mesh.io),
        "mesh_refine": ("igax.fem.mesh.refine", mesh.refine),
    },
)
