"""Counting XLA compilations, to check that new data of the same shapes reuse programs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def recorded_compilations() -> Iterator[list[str]]:
    """The names of the XLA programs compiled inside the ``with`` block, in order.

    JAX reports every backend compilation to ``jax.monitoring`` listeners, whatever the
    code's internals (a cache miss deep inside a library counts too).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> with recorded_compilations() as compiled:
    ...     _ = jax.jit(lambda x: x + 1)(jnp.ones(3))
    >>> len(compiled) >= 1
    True
    """
    names: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == _COMPILE_EVENT:
            names.append(str(kwargs.get("fun_name", "?")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
