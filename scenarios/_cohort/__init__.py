"""Cohort simulation: a :class:`SimulationSpec` (model, parameters, variability, regimen,
times) run over a virtual cohort in chunks, to NetCDF or streamed Zarr with provenance.

- ``_spec``: the spec, the model registry and the spec's JSON Schema;
- ``_run``: the chunked run, failed subjects reported per subject, the exposure summary,
  the band figure and the simulated NONMEM data set.
"""

from ._run import *  # noqa: F403
from ._run import __all__ as _run_all
from ._spec import *  # noqa: F403
from ._spec import __all__ as _spec_all

__all__ = [*_spec_all, *_run_all]
