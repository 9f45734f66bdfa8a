"""twinsim — digital-twin patient simulation engine on JAX.

Subpackages (imports go one way, left to right):

- :mod:`twinsim.priors`     mechanistic PK/PD models, covariates, variability
- :mod:`twinsim.simulators` dosing events and the linear / ODE engines
- :mod:`twinsim.twin`       the digital twin (individual posterior, latent model)
- :mod:`twinsim.scenarios`  pydantic specs, workflows, file I/O, the CLI
- :mod:`twinsim.dashboard`  the Dash app
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("twinsim")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
