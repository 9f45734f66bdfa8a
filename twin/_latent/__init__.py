"""The latent generative twin: a hybrid of the drug's mechanistic model and flax networks."""

from ._data import LatentData as LatentData
from ._features import CovariateFeatures as CovariateFeatures
from ._features import LatentModelError as LatentModelError
from ._model import LatentConfig as LatentConfig
from ._model import LatentModel as LatentModel
from ._synthetic import CovariateCopula as CovariateCopula
from ._synthetic import covariate_kind as covariate_kind
from ._synthetic import synthesize_patients as synthesize_patients
from ._train import TrainingResult as TrainingResult
from ._train import TrainingSettings as TrainingSettings
from ._train import train_latent as train_latent
