"""``dist-cg``: one SPD system solved by CG with its rows split over devices (halo exchange, psum dots).

The loop is :func:`igax.solvers.distributed.sharded_cg`; the row blocks and halo lists are computed once
per pattern and device count (:mod:`igax.solvers._partition`) and reach the compiled program as arguments,
already sharded over the devices. Like every backend it sits inside ``custom_linear_solve``: the gradient is
one more sharded solve (the matrix is SPD, so the transposed solve is the same solve).
"""

from __future__ import annotations

from igax.solvers import distributed as _dist
from igax.solvers._partition import ORDERINGS
from igax.solvers.backends.base import JaxBackend


def _resolve(options):
    mesh = options.get("mesh")
    mesh = _dist.device_mesh() if mesh is None else mesh
    _dist._mesh_axis(mesh, "mesh")
    ordering = options.get("ordering") or "auto"
    return mesh, ordering


class DistCG(JaxBackend):
    """Jacobi-preconditioned CG on one block of rows per device of ``mesh=`` (default: every device).

    Options: ``mesh`` (a one-axis :class:`jax.sharding.Mesh`), ``ordering`` (``"auto"``, ``"natural"``: the
    matrix's numbering, ``"rcm"``: reverse Cuthill-McKee). Iterations equal those of ``method="cg"`` up to
    rounding (same preconditioner, same loop).

    Example:
        >>> from igax.solvers.backends import get_backend
        >>> B = get_backend("dist-cg")
        >>> B.spd, sorted(B.options)
        (True, ['mesh', 'ordering'])
    """

    name = "dist-cg"
    spd = True
    options = frozenset({"mesh", "ordering"})
    setup_options = frozenset({"mesh", "ordering"})

    def check_options(self, options):
        mesh = options.get("mesh")
        if mesh is not None:
            _dist._mesh_axis(mesh, "mesh")
        ordering = options.get("ordering")
        if ordering is not None and ordering not in ORDERINGS:
            raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}.")

    def _partition(self, A, options):
        mesh, ordering = _resolve(options)
        return _dist.partition(A.pattern, int(mesh.devices.size), ordering), mesh

    def prepare(self, A, options):
        part, mesh = self._partition(A, options)
        return _dist.plan_arrays(part, mesh), None  # arguments of the program, sharded already

    def setup(self, A, options, arrays=None):
        part, mesh = self._partition(A, options)
        # factorize() without prepare: the index arrays become constants of the caller's program
        return _dist.plan_arrays(part, mesh) if arrays is None else arrays

    def solve(self, A, b, *, transpose, options, state):
        # A is SPD: the transposed solve is the same solve.
        part, mesh = self._partition(A, options)
        kw = {k: options[k] for k in ("rtol", "atol", "maxiter") if k in options}
        r = _dist.sharded_cg(A.values, b, part, mesh, state, **kw)
        return r.x, r.iterations, r.status
