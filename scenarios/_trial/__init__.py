"""Virtual trials for trial designers.

A :class:`TrialDesign` (YAML, :func:`load_trial`) names the virtual population and its
inclusion criteria, the arms (fixed, placebo, formula-based and adaptive dosing rules
applied at visits on simulated measurements), randomisation, sample sizes, visits with
assay error, dropout and missed doses, endpoints and analyses. :func:`run_trial` runs the
replicates (in process or on a Dask cluster, in resumable chunks) and writes the outputs.
"""

from ...simulators._lazy import lazy_exports

#: where each public name lives (imported on first use, see twinsim.simulators._lazy)
_EXPORTS = {
    "._analysis": (
        "RESULT_FIELDS",
        "rosendaal",
    ),
    "._design": (
        "AnalysisSpec",
        "ArmSpec",
        "EndpointSpec",
        "TitrationSpec",
        "TrialDesign",
        "TrialError",
        "load_trial",
        "trial_examples",
    ),
    "._outputs": (
        "dose_path_figure",
        "endpoint_figure",
        "endpoint_table",
        "power_figure",
        "trajectory_figure",
        "trial_dataset",
        "trial_report_html",
    ),
    "._run": (
        "TrialResult",
        "run_chunk",
        "run_trial",
    ),
    "._simulate": ("two_level_auc24",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
