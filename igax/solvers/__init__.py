"""igax.solvers: the sparse matrix type, differentiable linear solves, Newton, time stepping."""

from igax.solvers.sparse import CSRPattern, SparseMatrix

__all__ = ["CSRPattern", "SparseMatrix"]
from igax.solvers._backends import clear_cache, set_cache_size  # noqa: E402
from igax.solvers.backends.pardiso import set_cholesky_first  # noqa: E402
from igax.solvers._backends import stats as solver_stats  # noqa: E402
from igax.solvers._errors import Status  # noqa: E402
from igax.solvers.backends import (  # noqa: E402
    Factor,
    HostBackend,
    JaxBackend,
    register_backend,
    unregister_backend,
)
from igax.solvers.eigen import EigenResult, RepeatedEigenvalueError, eigen_solve, eigsh, submatrix  # noqa: E402
from igax.solvers.elements import ElementSystem  # noqa: E402
from igax.solvers.linear import (  # noqa: E402
    Factorization,
    SolverError,
    SolveResult,
    available_methods,
    default_method,
    factorize,
    linear_solve,
    solve,
)
from igax.solvers.multigrid import Hierarchy, amg_hierarchy  # noqa: E402
from igax.solvers.newton import NewtonError, NewtonResult, newton_solve  # noqa: E402
from igax.solvers.timestep import theta_method  # noqa: E402
from igax.solvers._block_precond import SaddlePoint, block_diagonal, block_triangular  # noqa: E402
from igax.solvers._minres import minres  # noqa: E402
from igax.solvers.backends.saddle import MINRES, BlockGMRES  # noqa: E402

# After the others: their block preconditioners factorise blocks with the direct backends (linear.py).
for _backend in (MINRES(), BlockGMRES()):
    register_backend(_backend)
del _backend
from igax.solvers.iterative import KrylovResult  # noqa: E402

__all__ += [
    "Factor",
    "HostBackend",
    "JaxBackend",
    "Status",
    "register_backend",
    "unregister_backend",
    "Factorization",
    "SolveResult",
    "SolverError",
    "available_methods",
    "clear_cache",
    "default_method",
    "factorize",
    "linear_solve",
    "set_cache_size",
    "set_cholesky_first",
    "solve",
    "solver_stats",
    "EigenResult",
    "RepeatedEigenvalueError",
    "eigen_solve",
    "eigsh",
    "submatrix",
    "ElementSystem",
    "Hierarchy",
    "amg_hierarchy",
    "NewtonError",
    "NewtonResult",
    "newton_solve",
    "theta_method",
    "KrylovResult",
    "SaddlePoint",
    "block_diagonal",
    "block_triangular",
    "minres",
]
