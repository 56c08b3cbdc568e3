"""Linear-solver backends: one module per backend, and the registry that ``method=`` names.

The built-in backends, in the order :func:`~igax.solvers.available_methods` lists them:

========== ============================ ====== ======== ================================================
method     module                       where  needs    automatic choice
========== ============================ ====== ======== ================================================
superlu    :mod:`.superlu`              host   any      CPU, when PARDISO is not installed
pardiso    :mod:`.pardiso`              host   any      CPU (pypardiso installed)
cholmod    :mod:`.cholmod`              host   SPD
amg-cg     :mod:`.amg_cg`               host   SPD
cg         :mod:`.krylov`               JAX    SPD      GPU/TPU, SPD matrix
bicgstab   :mod:`.krylov`               JAX    any      GPU/TPU, other matrices
gmres      :mod:`.krylov`               JAX    any
mg-cg      :mod:`.mg_cg`                JAX    SPD      GPU/TPU, SPD matrix with a multigrid hierarchy
dist-cg    :mod:`.dist_cg`              JAX    SPD      (rows split over the devices of ``mesh=``)
minres     :mod:`.saddle`               JAX    sym.     (symmetric indefinite; ``saddle=`` blocks)
block-gmres :mod:`.saddle`              JAX    any      (saddle-point matrices; ``saddle=`` blocks)
cocg       :mod:`.cocg`                 JAX    A = A^T  GPU/TPU, complex symmetric matrix (Helmholtz)
========== ============================ ====== ======== ================================================

``minres`` and ``block-gmres`` set up their block preconditioners with the direct backends (an exact
factorisation of a block), so they sit above :mod:`igax.solvers.linear` and :mod:`igax.solvers` registers
them after the others.

Complex systems: ``pardiso`` and ``cocg`` take complex matrices natively (``complex_native``); ``superlu``
can (``complex_form="native"``) but by default, like ``gmres`` and ``bicgstab``, solves the real block form of
twice the size (:mod:`igax.solvers._complex`); the SPD-only backends refuse complex matrices.

Add one with :func:`register_backend` (see :mod:`igax.solvers.backends.base` for the contract).
"""

from igax.solvers.backends.amg_cg import AMGCG
from igax.solvers.backends.base import (
    Backend,
    Factor,
    HostBackend,
    JaxBackend,
    backend_names,
    get_backend,
    register_backend,
    registered_backends,
    unregister_backend,
)
from igax.solvers.backends.cholmod import Cholmod
from igax.solvers.backends.cocg import COCG
from igax.solvers.backends.dist_cg import DistCG
from igax.solvers.backends.krylov import CG, GMRES, BiCGSTAB
from igax.solvers.backends.mg_cg import MGCG
from igax.solvers.backends.pardiso import Pardiso
from igax.solvers.backends.superlu import SuperLU

__all__ = [
    "Backend",
    "Factor",
    "HostBackend",
    "JaxBackend",
    "backend_names",
    "get_backend",
    "register_backend",
    "registered_backends",
    "unregister_backend",
]

# Registration order is the order of the method lists (available_methods, error messages).
for _backend in (
    SuperLU(),
    Pardiso(),
    Cholmod(),
    AMGCG(),
    CG(),
    BiCGSTAB(),
    GMRES(),
    MGCG(),
    DistCG(),
    COCG(),
):
    register_backend(_backend)
del _backend
