"""Simulation core: dosing events, the exact linear engine and the diffrax ODE engine."""

import jax

jax.config.update("jax_enable_x64", True)  # float64 throughout the numerical core

from ._events import Dose as Dose  # noqa: E402
from ._events import DosingEvents as DosingEvents  # noqa: E402
from ._events import EventError as EventError  # noqa: E402
from ._events import bucket_size as bucket_size  # noqa: E402
