"""igax.inverse: objectives, regularisers, observation operators, optimiser drivers."""

from igax.inverse.constraints import ConstrainedResult, augmented_lagrangian, quadratic_penalty
from igax.inverse.gradcheck import GradCheckResult, TaylorResult, check_grad, taylor_test
from igax.inverse.objectives import least_squares, relative_error
from igax.inverse.observations import (
    PointObservation,
    SubdomainIntegral,
    add_noise,
    boundary_flux,
    reaction_flux,
)
from igax.inverse.optimize import (
    History,
    Interrupted,
    Iterate,
    OptimizeResult,
    minimize,
    projected_gradient_norm,
)
from igax.inverse.parameterizations import Exp, Identity, Sigmoid, Softplus
from igax.inverse.random_fields import KLExpansion, kl_expansion
from igax.inverse.regularizers import (
    field_h1_seminorm,
    field_l2,
    field_total_variation,
    grid_tikhonov,
    grid_total_variation,
    quadratic_form,
    tikhonov,
)
from igax.inverse.shape import ControlPointShape, InvertedGeometryError, jacobian_barrier, min_jacobian
from igax.inverse.topology import DensityFilter, oc_update, optimality_criteria, simp
from igax.inverse.training import (
    DirichletLift,
    TrainResult,
    batched,
    discrete_energy,
    galerkin_residual,
    load_checkpoint,
    make_dataset,
    relative_l2_errors,
    save_checkpoint,
    train,
)
from igax._deprecation import renamed as _renamed

__all__ = [
    "minimize",
    "OptimizeResult",
    "History",
    "Iterate",
    "Interrupted",
    "projected_gradient_norm",
    "taylor_test",
    "TaylorResult",
    "check_grad",
    "GradCheckResult",
    "augmented_lagrangian",
    "quadratic_penalty",
    "ConstrainedResult",
    "least_squares",
    "relative_error",
    "Sigmoid",
    "Softplus",
    "Exp",
    "Identity",
    "tikhonov",
    "quadratic_form",
    "grid_tikhonov",
    "grid_total_variation",
    "field_l2",
    "field_h1_seminorm",
    "field_total_variation",
    "PointObservation",
    "SubdomainIntegral",
    "add_noise",
    "boundary_flux",
    "reaction_flux",
    "ControlPointShape",
    "InvertedGeometryError",
    "jacobian_barrier",
    "min_jacobian",
    "DensityFilter",
    "simp",
    "oc_update",
    "optimality_criteria",
    "KLExpansion",
    "kl_expansion",
    "DirichletLift",
    "TrainResult",
    "batched",
    "discrete_energy",
    "galerkin_residual",
    "load_checkpoint",
    "make_dataset",
    "relative_l2_errors",
    "save_checkpoint",
    "train",
]

# The name before issue 17, when igax.inverse.fit (the training loop) and igax.layers.fitting (spline fits)
# were both "fit".
__getattr__ = _renamed(__name__, {"fit": ("igax.inverse.train", train)})
