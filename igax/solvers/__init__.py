"""igax.solvers: the sparse matrix type, differentiable linear solves, Newton, time stepping."""

from igax.solvers.sparse import CSRPattern, SparseMatrix

__all__ = ["CSRPattern", "SparseMatrix"]
