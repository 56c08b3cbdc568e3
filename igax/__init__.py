"""igax: differentiable isogeometric and finite-element analysis in JAX.

igax never changes JAX's global configuration. Analysis is meant to run in float64: enable it once at the top
of your script with ``jax.config.update("jax_enable_x64", True)``; igax warns once where an analysis runs in
float32. Likewise, JAX's persistent compilation cache is yours to turn on, with
``igax.enable_compilation_cache()``, so that a second run of a script skips most compilations.
"""

from igax import bases, fem, inverse, solvers
from igax._compile import enable_compilation_cache
from igax._config import check_float64

__version__ = "0.1.0"
__all__ = ["bases", "fem", "solvers", "inverse", "check_float64", "enable_compilation_cache", "__version__"]
