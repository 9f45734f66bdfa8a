"""Mechanistic priors: model definitions, PK/PD building blocks, covariates, variability."""

import jax

jax.config.update("jax_enable_x64", True)  # float64 throughout the numerical core

from ._covariates import ANCESTRIES as ANCESTRIES  # noqa: E402
from ._covariates import COMEDICATIONS as COMEDICATIONS  # noqa: E402
from ._covariates import COVARIATE_COLUMNS as COVARIATE_COLUMNS  # noqa: E402
from ._covariates import GENES as GENES  # noqa: E402
from ._covariates import Allele as Allele  # noqa: E402
from ._covariates import Comedication as Comedication  # noqa: E402
from ._covariates import CovariateColumn as CovariateColumn  # noqa: E402
from ._covariates import CovariateError as CovariateError  # noqa: E402
from ._covariates import Gene as Gene  # noqa: E402
from ._covariates import allele_frequencies as allele_frequencies  # noqa: E402
from ._covariates import cockcroft_gault as cockcroft_gault  # noqa: E402
from ._covariates import comedication as comedication  # noqa: E402
from ._covariates import covariate_table as covariate_table  # noqa: E402
from ._covariates import diplotype_frequencies as diplotype_frequencies  # noqa: E402
from ._covariates import parse_diplotype as parse_diplotype  # noqa: E402
from ._covariates import phenotype as phenotype  # noqa: E402
from ._covariates import phenotype_frequencies as phenotype_frequencies  # noqa: E402
from ._covariates import smoking_induction as smoking_induction  # noqa: E402
from ._covariates import smoking_status as smoking_status  # noqa: E402
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
from ._population import Covariate as Covariate  # noqa: E402
from ._population import CovariateRangeWarning as CovariateRangeWarning  # noqa: E402
from ._population import InferencePriors as InferencePriors  # noqa: E402
from ._population import ObservationData as ObservationData  # noqa: E402
from ._population import PopulationModel as PopulationModel  # noqa: E402
from ._population import PopulationModelError as PopulationModelError  # noqa: E402
from ._population import PopulationSample as PopulationSample  # noqa: E402
from ._population import PopulationSimulation as PopulationSimulation  # noqa: E402
from ._population import ResidualError as ResidualError  # noqa: E402
