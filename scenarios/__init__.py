"""Pydantic specs, workflows, file I/O and the command line.

Specs (:class:`SimulationSpec`, :class:`PatientSpec`, :class:`RegimenSpec`, ...) are read
from YAML/JSON with :func:`load_spec`, validated once with messages naming each bad field,
and converted to the core's units (h, mg, L, kg, cm, mg/L). NONMEM data sets are read and
written with :func:`read_nonmem` and :func:`write_nonmem`.
"""

from ._fit import FitDataError as FitDataError
from ._fit import example_data_path as example_data_path
from ._fit import fit_data as fit_data
from ._fit import fit_model as fit_model
from ._fit import vpc_figure as vpc_figure
from ._fit import write_fit_report as write_fit_report
from ._levels import MAX_LEVELS_BYTES as MAX_LEVELS_BYTES
from ._levels import LevelsData as LevelsData
from ._levels import LevelsError as LevelsError
from ._levels import read_levels as read_levels
from ._nonmem import STANDARD_COLUMNS as STANDARD_COLUMNS
from ._nonmem import NonmemData as NonmemData
from ._nonmem import NonmemError as NonmemError
from ._nonmem import read_nonmem as read_nonmem
from ._nonmem import write_nonmem as write_nonmem
from ._outputs import OutputError as OutputError
from ._outputs import ZarrCohortWriter as ZarrCohortWriter
from ._outputs import metrics_table as metrics_table
from ._outputs import open_zarr_cohort as open_zarr_cohort
from ._outputs import to_dataset as to_dataset
from ._outputs import to_frame as to_frame
from ._outputs import write_netcdf as write_netcdf
from ._outputs import write_zarr_chunk as write_zarr_chunk
from ._provenance import provenance_path as provenance_path
from ._provenance import provenance_record as provenance_record
from ._provenance import write_provenance as write_provenance
from ._regimen import DoseSpec as DoseSpec
from ._regimen import RegimenSpec as RegimenSpec
from ._regimen import SpecError as SpecError
from ._regimen import parse_regimen_text as parse_regimen_text
from ._specs import MODEL_REGISTRY as MODEL_REGISTRY
from ._specs import PatientSpec as PatientSpec
from ._specs import SimulationSpec as SimulationSpec
from ._specs import TimeGrid as TimeGrid
from ._specs import VariabilitySpec as VariabilitySpec
from ._specs import load_spec as load_spec
from ._specs import resolve_model as resolve_model
from ._specs import spec_json_schema as spec_json_schema
from ._units import CORE_UNITS as CORE_UNITS
from ._units import UnitError as UnitError
from ._units import accepted_units as accepted_units
from ._units import parse_quantity as parse_quantity
from ._whatif import METRIC_LABELS as METRIC_LABELS
from ._whatif import CandidateSpec as CandidateSpec
from ._whatif import FitOptions as FitOptions
from ._whatif import Metric as Metric
from ._whatif import ObservationSpec as ObservationSpec
from ._whatif import RecommendOptions as RecommendOptions
from ._whatif import RegimenForecast as RegimenForecast
from ._whatif import TargetSpec as TargetSpec
from ._whatif import WhatIfResult as WhatIfResult
from ._whatif import WhatIfSpec as WhatIfSpec
from ._whatif import load_whatif as load_whatif
from ._whatif import target_figure as target_figure
from ._whatif import whatif_examples as whatif_examples
from ._whatif import whatif_figure as whatif_figure
from ._whatif import whatif_html as whatif_html
from ._whatif import whatif_json_schema as whatif_json_schema
from ._whatif import write_whatif_report as write_whatif_report
from ._whatif_session import WhatIfFit as WhatIfFit
from ._whatif_session import WhatIfSession as WhatIfSession
from ._whatif_session import fit_whatif as fit_whatif
from ._whatif_session import forecast_whatif as forecast_whatif
from ._whatif_session import run_whatif as run_whatif
from ._whatif_session import search_whatif as search_whatif
from ._workflows import FailedSubjectsWarning as FailedSubjectsWarning
from ._workflows import LargeCohortWarning as LargeCohortWarning
from ._workflows import WorkflowWarning as WorkflowWarning
from ._workflows import cohort_size as cohort_size
from ._workflows import concentration_band_figure as concentration_band_figure
from ._workflows import exposure_summary as exposure_summary
from ._workflows import output_target as output_target
from ._workflows import read_provenance as read_provenance
from ._workflows import run_simulation as run_simulation
from ._workflows import simulated_nonmem as simulated_nonmem
