"""Virtual trials for trial designers.

A :class:`TrialDesign` (YAML, :func:`load_trial`) names the virtual population and its
inclusion criteria, the arms (fixed, placebo, formula-based and adaptive dosing rules
applied at visits on simulated measurements), randomisation, sample sizes, visits with
assay error, dropout and missed doses, endpoints and analyses. :func:`run_trial` runs the
replicates (in process or on a Dask cluster, in resumable chunks) and writes the outputs.
"""

from ._analysis import RESULT_FIELDS as RESULT_FIELDS
from ._analysis import rosendaal as rosendaal
from ._design import AnalysisSpec as AnalysisSpec
from ._design import ArmSpec as ArmSpec
from ._design import EndpointSpec as EndpointSpec
from ._design import TitrationSpec as TitrationSpec
from ._design import TrialDesign as TrialDesign
from ._design import TrialError as TrialError
from ._design import load_trial as load_trial
from ._design import trial_examples as trial_examples
from ._outputs import dose_path_figure as dose_path_figure
from ._outputs import endpoint_figure as endpoint_figure
from ._outputs import endpoint_table as endpoint_table
from ._outputs import power_figure as power_figure
from ._outputs import trajectory_figure as trajectory_figure
from ._outputs import trial_dataset as trial_dataset
from ._outputs import trial_report_html as trial_report_html
from ._run import TrialResult as TrialResult
from ._run import run_chunk as run_chunk
from ._run import run_trial as run_trial
from ._simulate import two_level_auc24 as two_level_auc24
