"""igax: differentiable isogeometric and finite-element analysis in JAX.

igax never changes JAX's global configuration. Analysis is meant to run in float64: enable it once at the top
of your script with ``jax.config.update("jax_enable_x64", True)``; igax warns once where an analysis runs in
float32. Likewise, JAX's persistent compilation cache is yours to turn on, with
``igax.enable_compilation_cache()``, so that a second run of a script skips most compilations.
"""

import importlib

from igax import bases, fem, solvers
from igax._compile import enable_compilation_cache
from igax._config import check_float64

__version__ = "0.1.0"
__all__ = ["bases", "fem", "solvers", "inverse", "check_float64", "enable_compilation_cache", "__version__"]


def __getattr__(name):
    # igax.inverse (optimisers: optax, jaxopt, SciPy's optimisers and spatial trees) is imported on first use,
    # not by `import igax`: a script that only analyses starts ~0.1-0.3 s sooner.
    if name == "inverse":
        return importlib.import_module("igax.inverse")
    raise AttributeError(f"module 'igax' has no attribute {name!r}")
