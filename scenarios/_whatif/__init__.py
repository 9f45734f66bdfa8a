"""The clinician's what-if: one patient, their doses and levels, candidate regimens.

- ``_spec``: the :class:`WhatIfSpec` (patient, drug, history, observations, target, fit,
  candidates, recommendation) and its file format;
- ``_session``: the staged run (fit → search → forecast) with the caches the dashboard
  uses, and :func:`run_whatif` that runs the stages in one go;
- ``_report``: the result (:class:`WhatIfResult`), its figures and its HTML report.
"""

from ._report import *  # noqa: F403
from ._report import __all__ as _report_all
from ._session import *  # noqa: F403
from ._session import __all__ as _session_all
from ._spec import *  # noqa: F403
from ._spec import __all__ as _spec_all

__all__ = [*_spec_all, *_session_all, *_report_all]
