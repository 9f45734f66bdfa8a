"""Mechanistic priors: model definitions, PK/PD building blocks, covariates, variability."""

import jax

jax.config.update("jax_enable_x64", True)  # float64 throughout the numerical core

from ._model import ModelDefinitionError as ModelDefinitionError  # noqa: E402
from ._model import Named as Named  # noqa: E402
from ._model import ODEModel as ODEModel  # noqa: E402
