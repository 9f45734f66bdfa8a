"""Mechanistic priors: model definitions, PK/PD building blocks, covariates, variability."""

import jax

jax.config.update("jax_enable_x64", True)  # float64 throughout the numerical core

from ._model import ModelDefinitionError as ModelDefinitionError  # noqa: E402
from ._model import Named as Named  # noqa: E402
from ._model import ODEModel as ODEModel  # noqa: E402
from ._pd import extend_model as extend_model  # noqa: E402
from ._pd import with_effect_compartment as with_effect_compartment  # noqa: E402
from ._pd import with_emax as with_emax  # noqa: E402
from ._pd import with_indirect_response as with_indirect_response  # noqa: E402
from ._pk import michaelis_menten as michaelis_menten  # noqa: E402
from ._pk import one_compartment as one_compartment  # noqa: E402
from ._pk import pk_model as pk_model  # noqa: E402
from ._pk import three_compartment as three_compartment  # noqa: E402
from ._pk import transit_compartment as transit_compartment  # noqa: E402
from ._pk import two_compartment as two_compartment  # noqa: E402
