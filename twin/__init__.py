"""The digital twin: individual posterior, latent generative model, virtual populations."""

from ._clinical import Observation as Observation
from ._clinical import PatientTwinError as PatientTwinError
from ._clinical import Regimen as Regimen
from ._clinical import Target as Target
from ._clinical import default_target as default_target
from ._fitting import FitError as FitError
from ._fitting import PopulationFit as PopulationFit
from ._fitting import fit_population as fit_population
from ._fitting import objective_function_value as objective_function_value
from ._fitting import with_initial as with_initial
from ._nuts import fit_nuts_many as fit_nuts_many
from ._patient import PatientTwin as PatientTwin
from ._posterior import TwinPosterior as TwinPosterior
from ._prediction import Prediction as Prediction
from ._recommend import Recommendation as Recommendation
from ._virtual import Demographics as Demographics
from ._virtual import Lifestyle as Lifestyle
from ._virtual import PopulationReport as PopulationReport
from ._virtual import VirtualPopulation as VirtualPopulation
from ._virtual import VirtualPopulationConfig as VirtualPopulationConfig
from ._virtual import apply_criteria as apply_criteria
from ._virtual import draw_candidates as draw_candidates
from ._virtual import generate_population as generate_population
