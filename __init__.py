"""twinsim — digital-twin patient simulation engine on JAX.

Floors of the house, bottom to top; each imports only those below it (a contract that
import-linter checks, ``[tool.importlinter]`` in pyproject.toml):

- :mod:`twinsim.simulators` the model type, dosing events, the linear / ODE engines, metrics
- :mod:`twinsim.priors`     PK/PD building blocks, covariates, variability, the drug library
- :mod:`twinsim.twin`       the digital twin (individual posterior, virtual populations)
- :mod:`twinsim.scenarios`  pydantic specs, one module per workflow, file I/O
- :mod:`twinsim.dashboard`  the Dash app
- :mod:`twinsim.cli`        the ``twinsim`` command line (also ``python -m twinsim``)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("twinsim")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
