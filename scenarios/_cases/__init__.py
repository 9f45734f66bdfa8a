"""Teaching cases for medical educators: virtual patients from the twin machinery.

:class:`CaseSpec` (YAML) names a template (built-in, or a user's YAML file), the number
of cases, the population and a seed; :func:`generate_cases` draws the patients, simulates
their course and computes each question's key by re-simulation; :func:`write_case_set`
writes Markdown, HTML, JSON (student and instructor versions) and a FHIR R4 bundle.
"""

from ._course import AMIODARONE_CL_REDUCTION as AMIODARONE_CL_REDUCTION
from ._course import changing_clearance_model as changing_clearance_model
from ._course import inhibitor_clearance_ratio as inhibitor_clearance_ratio
from ._export import case_figure as case_figure
from ._export import case_html as case_html
from ._export import case_json as case_json
from ._export import case_markdown as case_markdown
from ._export import fhir_bundle as fhir_bundle
from ._export import summary_markdown as summary_markdown
from ._export import write_case_set as write_case_set
from ._generate import CaseSet as CaseSet
from ._generate import draw_patients as draw_patients
from ._generate import generate_cases as generate_cases
from ._generate import inverse_cockcroft_gault as inverse_cockcroft_gault
from ._generate import set_summary as set_summary
from ._generate import simulate_rows as simulate_rows
from ._generate import try_dose as try_dose
from ._spec import TEMPLATE_DIR as TEMPLATE_DIR
from ._spec import CaseError as CaseError
from ._spec import CaseSpec as CaseSpec
from ._spec import CaseTemplate as CaseTemplate
from ._spec import builtin_templates as builtin_templates
from ._spec import load_case_spec as load_case_spec
from ._spec import load_template as load_template
