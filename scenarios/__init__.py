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

from ..simulators._lazy import lazy_exports

#: where each public name lives (imported on first use, see twinsim.simulators._lazy)
_EXPORTS = {
    "._cases": (
        "CaseError",
        "CaseSet",
        "CaseSpec",
        "CaseTemplate",
        "builtin_templates",
        "case_figure",
        "case_html",
        "case_markdown",
        "fhir_bundle",
        "generate_cases",
        "load_case_spec",
        "load_template",
        "try_dose",
        "write_case_set",
    ),
    "._cohort._run": (
        "FailedSubjectsWarning",
        "LargeCohortWarning",
        "WorkflowWarning",
        "cohort_size",
        "concentration_band_figure",
        "exposure_summary",
        "output_target",
        "read_provenance",
        "run_simulation",
        "simulated_nonmem",
    ),
    "._cohort._spec": (
        "MODEL_REGISTRY",
        "PDStep",
        "SimulationSpec",
        "TimeGrid",
        "VariabilitySpec",
        "load_spec",
        "resolve_model",
        "spec_json_schema",
        "spec_model",
    ),
    "._fit": (
        "FitDataError",
        "UserModel",
        "example_data_path",
        "fit_data",
        "fit_model",
        "load_model_file",
        "vpc_figure",
        "write_fit_report",
    ),
    "._levels": (
        "MAX_LEVELS_BYTES",
        "LevelsData",
        "LevelsError",
        "read_levels",
    ),
    "._nonmem": (
        "STANDARD_COLUMNS",
        "NonmemData",
        "NonmemError",
        "read_nonmem",
        "write_nonmem",
    ),
    "._outputs": (
        "OutputError",
        "ZarrCohortWriter",
        "metrics_table",
        "open_zarr_cohort",
        "to_dataset",
        "to_frame",
        "write_netcdf",
        "write_zarr_chunk",
    ),
    "._patient": ("PatientSpec",),
    "._population": ("PopulationSpec",),
    "._provenance": (
        "provenance_path",
        "provenance_record",
        "write_provenance",
        "write_text_atomic",
    ),
    "._regimen": (
        "DoseSpec",
        "RegimenSpec",
        "SpecError",
        "parse_regimen_text",
    ),
    "._synthetic": (
        "SyntheticReport",
        "closest_record_distance",
        "compare_synthetic",
        "patient_table",
        "synthetic_html",
        "synthetic_report",
        "synthetic_report_from_files",
        "write_synthetic_report",
    ),
    "._train": (
        "TrainedModel",
        "is_model_folder",
        "load_latent_model",
        "save_latent_model",
        "train_from_nonmem",
        "trained_model",
    ),
    "._trial": (
        "TrialDesign",
        "TrialError",
        "TrialResult",
        "load_trial",
        "run_trial",
        "trial_dataset",
        "trial_examples",
    ),
    "._units": (
        "CORE_UNITS",
        "UnitError",
        "accepted_units",
        "parse_quantity",
    ),
    "._whatif._report": (
        "METRIC_LABELS",
        "Metric",
        "RegimenForecast",
        "WhatIfResult",
        "target_figure",
        "whatif_figure",
        "whatif_html",
        "write_whatif_report",
    ),
    "._whatif._session": (
        "WhatIfFit",
        "WhatIfSession",
        "fit_whatif",
        "forecast_whatif",
        "run_whatif",
        "search_whatif",
    ),
    "._whatif._spec": (
        "CandidateSpec",
        "FitOptions",
        "ObservationSpec",
        "RecommendOptions",
        "TargetSpec",
        "WhatIfSpec",
        "load_whatif",
        "whatif_examples",
        "whatif_json_schema",
    ),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
