"""Workflows on pydantic specs, and the file formats they share.

One module or small package per workflow:

- ``_cohort/``: cohort simulation (:class:`SimulationSpec`, :func:`run_simulation`);
- ``_whatif/``: the clinician's what-if (:class:`WhatIfSpec`, :class:`WhatIfSession`,
  :func:`run_whatif`, the HTML report);
- ``_fit.py``: population fit of a NONMEM data set (:func:`fit_data`, the VPC report);
- ``_train.py``: training a latent twin on a data set (:func:`train_from_nonmem`);
- ``_synthetic.py``: fidelity and privacy of a latent twin's synthetic patients
  (:func:`synthetic_report`, :func:`compare_synthetic`).

Shared by all of them: ``_patient`` (:class:`PatientSpec`), ``_units`` (quantities with
units, converted once to the core's h, mg, L, kg, cm, mg/L), ``_regimen`` (regimen text and
:class:`RegimenSpec`), ``_nonmem`` (:func:`read_nonmem`, :func:`write_nonmem`), ``_levels``
(levels files), ``_outputs`` (xarray/pandas adapters, NetCDF, Zarr) and ``_provenance``.
Specs are read from YAML/JSON, validated once with messages naming each bad field. The
command line that runs them is :mod:`twinsim.cli`, one floor up.
"""

from ._cases import CaseError as CaseError
from ._cases import CaseSet as CaseSet
from ._cases import CaseSpec as CaseSpec
from ._cases import CaseTemplate as CaseTemplate
from ._cases import builtin_templates as builtin_templates
from ._cases import case_figure as case_figure
from ._cases import case_html as case_html
from ._cases import case_markdown as case_markdown
from ._cases import fhir_bundle as fhir_bundle
from ._cases import generate_cases as generate_cases
from ._cases import load_case_spec as load_case_spec
from ._cases import load_template as load_template
from ._cases import try_dose as try_dose
from ._cases import write_case_set as write_case_set
from ._cohort._run import FailedSubjectsWarning as FailedSubjectsWarning
from ._cohort._run import LargeCohortWarning as LargeCohortWarning
from ._cohort._run import WorkflowWarning as WorkflowWarning
from ._cohort._run import cohort_size as cohort_size
from ._cohort._run import concentration_band_figure as concentration_band_figure
from ._cohort._run import exposure_summary as exposure_summary
from ._cohort._run import output_target as output_target
from ._cohort._run import read_provenance as read_provenance
from ._cohort._run import run_simulation as run_simulation
from ._cohort._run import simulated_nonmem as simulated_nonmem
from ._cohort._spec import MODEL_REGISTRY as MODEL_REGISTRY
from ._cohort._spec import PDStep as PDStep
from ._cohort._spec import SimulationSpec as SimulationSpec
from ._cohort._spec import TimeGrid as TimeGrid
from ._cohort._spec import VariabilitySpec as VariabilitySpec
from ._cohort._spec import load_spec as load_spec
from ._cohort._spec import resolve_model as resolve_model
from ._cohort._spec import spec_json_schema as spec_json_schema
from ._cohort._spec import spec_model as spec_model
from ._fit import FitDataError as FitDataError
from ._fit import UserModel as UserModel
from ._fit import example_data_path as example_data_path
from ._fit import fit_data as fit_data
from ._fit import fit_model as fit_model
from ._fit import load_model_file as load_model_file
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
from ._patient import PatientSpec as PatientSpec
from ._population import PopulationSpec as PopulationSpec
from ._provenance import provenance_path as provenance_path
from ._provenance import provenance_record as provenance_record
from ._provenance import write_provenance as write_provenance
from ._provenance import write_text_atomic as write_text_atomic
from ._regimen import DoseSpec as DoseSpec
from ._regimen import RegimenSpec as RegimenSpec
from ._regimen import SpecError as SpecError
from ._regimen import parse_regimen_text as parse_regimen_text
from ._synthetic import SyntheticReport as SyntheticReport
from ._synthetic import closest_record_distance as closest_record_distance
from ._synthetic import compare_synthetic as compare_synthetic
from ._synthetic import patient_table as patient_table
from ._synthetic import synthetic_html as synthetic_html
from ._synthetic import synthetic_report as synthetic_report
from ._synthetic import synthetic_report_from_files as synthetic_report_from_files
from ._synthetic import write_synthetic_report as write_synthetic_report
from ._train import TrainedModel as TrainedModel
from ._train import is_model_folder as is_model_folder
from ._train import load_latent_model as load_latent_model
from ._train import save_latent_model as save_latent_model
from ._train import train_from_nonmem as train_from_nonmem
from ._train import trained_model as trained_model
from ._trial import TrialDesign as TrialDesign
from ._trial import TrialError as TrialError
from ._trial import TrialResult as TrialResult
from ._trial import load_trial as load_trial
from ._trial import run_trial as run_trial
from ._trial import trial_dataset as trial_dataset
from ._trial import trial_examples as trial_examples
from ._units import CORE_UNITS as CORE_UNITS
from ._units import UnitError as UnitError
from ._units import accepted_units as accepted_units
from ._units import parse_quantity as parse_quantity
from ._whatif._report import METRIC_LABELS as METRIC_LABELS
from ._whatif._report import Metric as Metric
from ._whatif._report import RegimenForecast as RegimenForecast
from ._whatif._report import WhatIfResult as WhatIfResult
from ._whatif._report import target_figure as target_figure
from ._whatif._report import whatif_figure as whatif_figure
from ._whatif._report import whatif_html as whatif_html
from ._whatif._report import write_whatif_report as write_whatif_report
from ._whatif._session import WhatIfFit as WhatIfFit
from ._whatif._session import WhatIfSession as WhatIfSession
from ._whatif._session import fit_whatif as fit_whatif
from ._whatif._session import forecast_whatif as forecast_whatif
from ._whatif._session import run_whatif as run_whatif
from ._whatif._session import search_whatif as search_whatif
from ._whatif._spec import CandidateSpec as CandidateSpec
from ._whatif._spec import FitOptions as FitOptions
from ._whatif._spec import ObservationSpec as ObservationSpec
from ._whatif._spec import RecommendOptions as RecommendOptions
from ._whatif._spec import TargetSpec as TargetSpec
from ._whatif._spec import WhatIfSpec as WhatIfSpec
from ._whatif._spec import load_whatif as load_whatif
from ._whatif._spec import whatif_examples as whatif_examples
from ._whatif._spec import whatif_json_schema as whatif_json_schema
