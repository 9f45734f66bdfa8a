"""Simulation core: dosing events, the exact linear engine and the diffrax ODE engine."""

import jax

jax.config.update("jax_enable_x64", True)  # float64 throughout the numerical core

from ._events import Dose as Dose  # noqa: E402
from ._events import DosingEvents as DosingEvents  # noqa: E402
from ._events import EventError as EventError  # noqa: E402
from ._events import bucket_size as bucket_size  # noqa: E402
from ._engine import SimulationError as SimulationError  # noqa: E402
from ._engine import Solution as Solution  # noqa: E402
from ._engine import SolveStatus as SolveStatus  # noqa: E402
from ._engine import simulate as simulate  # noqa: E402
