"""``method="cocg"``: COCG for complex symmetric matrices (``A = A^T``), pure JAX, on the device.

The loop is :func:`igax.solvers._cocg.cocg`. The matrix is taken as it is (complex, ``n`` unknowns), not as
the real block form of twice the size that GMRES and BiCGSTAB solve. The gradient's transposed solve is one
more COCG solve with the same matrix (``A^T = A``; the solve is wrapped in ``custom_linear_solve`` with
``symmetric=True``). A matrix not flagged symmetric is refused before anything runs: a Hermitian or general
complex matrix breaks the short recurrences.
"""

from __future__ import annotations

from igax.solvers import iterative as _it
from igax.solvers._cocg import cocg
from igax.solvers.backends.base import JaxBackend


class COCG(JaxBackend):
    """COCG with the Jacobi preconditioner (or ``precond=``: a callable ``r -> M^{-1} r`` with ``M = M^T``,
    or None for none); complex (or real) symmetric matrices.

    Example:
        >>> import jax.numpy as jnp, scipy.sparse as sp
        >>> from igax import solvers
        >>> K = sp.csr_matrix([[4.0 + 1.0j, 1.0], [1.0, 3.0 - 2.0j]])
        >>> A = solvers.SparseMatrix.from_scipy(K, symmetric=True, dtype=jnp.complex128)
        >>> x = solvers.solve(A, jnp.array([1.0 + 0.0j, 1.0j]), method="cocg", rtol=1e-12)
        >>> bool(jnp.allclose(A @ x, jnp.array([1.0, 1.0j]), atol=1e-10))
        True
    """

    name = "cocg"
    label = "COCG"
    complex_native = True
    options = frozenset({"precond"})
    default_for = ("accelerator-complex-symmetric",)

    def check_options(self, options):
        p = options.get("precond", "jacobi")
        if not (p is None or p == "jacobi" or callable(p)):
            raise ValueError(
                'precond= must be "jacobi" (default), None (no preconditioner) or a callable r -> M^-1 r '
                f"with M complex symmetric (M = M.T), got {p!r}."
            )

    def setup(self, A, options, arrays=None):
        if not A.symmetric:
            raise ValueError(
                'method="cocg" needs a complex symmetric matrix (A = A.T, transposed without conjugation; '
                "Helmholtz with impedance or PML terms is), but A is not flagged symmetric. If it is, build "
                'it with SparseMatrix(..., symmetric=True); otherwise use method="gmres" or "bicgstab" '
                '(iterative) or "pardiso" / "superlu" (direct). A Hermitian matrix is not complex symmetric.'
            )
        return None

    def solve(self, A, b, *, transpose, options, state):
        # A^T = A: the transposed solve of a gradient is the same solve.
        p = options.get("precond", "jacobi")
        M = _it.jacobi(A) if p == "jacobi" else p
        kw = {k: options[k] for k in ("rtol", "atol", "maxiter") if k in options}
        r = cocg(A.matvec, b, M, **kw)
        return r.x, r.iterations, r.status
