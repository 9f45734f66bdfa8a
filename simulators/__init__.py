"""Simulation core: the model type, dosing events, the exact linear engine, the diffrax ODE
engines (walking, split) and the semilinear engine (exact PK driving PD).

The bottom floor of the house: it imports jax, diffrax and equinox and nothing of
``twinsim`` above it (``priors`` builds its drug models on :class:`ODEModel` from here).
Importing it turns on float64 and JAX's persistent compilation cache (a folder under the
user's cache directory, ``TWINSIM_CACHE_DIR`` to move it or ``off``; see
:func:`enable_compilation_cache`).
"""

import jax

jax.config.update("jax_enable_x64", True)  # float64 throughout the numerical core

from ._cache import enable_compilation_cache as enable_compilation_cache  # noqa: E402

# compiled programs persist on disk: a second start loads them instead of compiling
enable_compilation_cache()

from ._cache import compilation_cache_dir as compilation_cache_dir  # noqa: E402
from ._cohort import CohortReport as CohortReport  # noqa: E402
from ._cohort import lognormal_parameters as lognormal_parameters  # noqa: E402
from ._cohort import omega_from_cv as omega_from_cv  # noqa: E402
from ._cohort import simulate_cohort as simulate_cohort  # noqa: E402
from ._cohort import subject_keys as subject_keys  # noqa: E402
from ._engine import SimulationError as SimulationError  # noqa: E402
from ._engine import Solution as Solution  # noqa: E402
from ._engine import SolveStatus as SolveStatus  # noqa: E402
from ._engine import semilinear_outputs as semilinear_outputs  # noqa: E402
from ._engine import semilinear_segment as semilinear_segment  # noqa: E402
from ._engine import simulate as simulate  # noqa: E402
from ._events import Dose as Dose  # noqa: E402
from ._events import DosingEvents as DosingEvents  # noqa: E402
from ._events import EventError as EventError  # noqa: E402
from ._events import bucket_size as bucket_size  # noqa: E402
from ._metrics import AUC_METHODS as AUC_METHODS  # noqa: E402
from ._metrics import ExposureMetrics as ExposureMetrics  # noqa: E402
from ._metrics import HalfLife as HalfLife  # noqa: E402
from ._metrics import MetricsError as MetricsError  # noqa: E402
from ._metrics import auc as auc  # noqa: E402
from ._metrics import auc_interval as auc_interval  # noqa: E402
from ._metrics import auc_tau as auc_tau  # noqa: E402
from ._metrics import cmax as cmax  # noqa: E402
from ._metrics import cmin as cmin  # noqa: E402
from ._metrics import exposure_metrics as exposure_metrics  # noqa: E402
from ._metrics import half_life as half_life  # noqa: E402
from ._metrics import tmax as tmax  # noqa: E402
from ._metrics import trough as trough  # noqa: E402
from ._model import ModelDefinitionError as ModelDefinitionError  # noqa: E402
from ._model import Named as Named  # noqa: E402
from ._model import ODEModel as ODEModel  # noqa: E402
from ._model import ParameterError as ParameterError  # noqa: E402
from ._semilinear import SemilinearState as SemilinearState  # noqa: E402
from ._semilinear import semilinear_grid as semilinear_grid  # noqa: E402
from ._semilinear import semilinear_partition as semilinear_partition  # noqa: E402
from ._superposition import predict_linear as predict_linear  # noqa: E402
from ._superposition import predict_outputs as predict_outputs  # noqa: E402
