"""Exact, differentiable predictions of LINEAR models at arbitrary per-subject times.

For a linear time-invariant model ``dx/dt = A x`` every dose acts independently, so the
state at time ``t`` is the sum of each dose's response:

- a bolus ``a`` (after bioavailability) into compartment ``c`` at ``t_d`` (after the lag
  time) contributes ``e^{A (t − t_d)} a e_c`` for ``t > t_d`` (the pre-dose convention of
  the engines: an output at the dose time does not yet see the dose);
- an infusion at rate ``r`` from ``t_s`` for ``d`` hours contributes
  ``e^{A h₂} Ψ(h₁) r e_c`` with ``h₁ = clip(t − t_s, 0, d)``, ``h₂ = t − t_s − h₁`` and
  ``Ψ(h) = ∫₀ʰ e^{A u} du``, read off one exponential of ``[[A, e_c], [0, 0]]``;
- a non-zero initial state contributes ``e^{A t} x₀``.

There is no event walk and no sorting, so the cost is one small matrix exponential per
(dose, output time) and the path traces to a compact, fast gradient — what a NUTS
sampler needs from the likelihood of a population fit. It covers the doses the engines
cover except steady-state (``SS=1``) records; :func:`predict_outputs` sends those, and
nonlinear models, to :func:`~twinsim.simulators.simulate`.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..priors._model import ODEModel
from ._engine import SimulationError, _effective_doses, simulate
from ._events import DosingEvents

__all__ = ["predict_linear", "predict_outputs"]


def _is_concrete(*trees) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


def _has_infusions(events: DosingEvents) -> bool:
    """Whether an infusion path must be traced (always, when the table is traced)."""
    if not _is_concrete(events.rate, events.duration, events.mask):
        return True
    mask = np.asarray(events.mask)
    return bool(np.any(mask & ((np.asarray(events.rate) > 0) | (np.asarray(events.duration) > 0))))


def _trim_padding(events: DosingEvents) -> DosingEvents:
    """Drop trailing all-padding columns: every column costs one exponential per time."""
    if not _is_concrete(events.mask):
        return events
    mask = np.asarray(events.mask)
    width = int(mask.sum(axis=1).max(initial=0))
    if width == mask.shape[1] or np.any(mask[:, width:]):
        return events
    keep = max(width, 1)
    return DosingEvents(**{f: getattr(events, f)[:, :keep] for f in events.__dataclass_fields__})


def predict_linear(
    model: ODEModel,
    params: Float[Array, "subject param"],
    events: DosingEvents,
    times: Float[Array, " time"] | Float[Array, "subject time"],
    *,
    return_states: bool = False,
) -> Float[Array, "subject time output"]:
    """Outputs of a linear model by superposition of per-dose responses.

    Parameters
    ----------
    model
        A linear :class:`~twinsim.priors.ODEModel` (``linear=True``).
    params
        ``[subject, P]`` parameters (one row per subject).
    events
        Dosing table with one row per subject (or one shared row); no steady-state records.
    times
        Output times in h, ``[time]`` or ``[subject, time]``, in any order.
    return_states
        Return the states ``[subject, time, state]`` instead of the outputs.

    Returns
    -------
    Array
        ``[subject, time, output]``, equal to ``simulate(...).outputs`` (pre-dose convention).

    Raises
    ------
    SimulationError
        For a nonlinear model, steady-state records or mismatched shapes.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from twinsim.priors import one_compartment
    >>> from twinsim.simulators import DosingEvents, predict_linear
    >>> model = one_compartment(absorption=True)
    >>> out = predict_linear(model, jnp.array([[2.8, 31.5, 1.5, 1.0]]),
    ...                      DosingEvents.repeated(320.0, 24.0, 1), jnp.array([0.0, 1.0, 24.0]))
    >>> [round(float(c), 4) for c in out[0, :, 0]]
    [0.0, 7.4707, 1.279]
    """
    if not model.linear:
        raise SimulationError(
            f"`predict_linear` needs a linear model, but model {model.name!r} has linear=False; "
            "use simulate(..., method='ode') or predict_outputs"
        )
    params = jnp.atleast_2d(jnp.asarray(params, jnp.float64))
    n = params.shape[0]
    if events.n_subjects == 1 and n > 1:
        events = events.broadcast(n)
    if events.n_subjects != n:
        raise SimulationError(
            f"`events` has {events.n_subjects} subjects, `params` {n}; give one row per subject"
        )
    times = jnp.asarray(times, jnp.float64)
    if times.ndim == 1:
        times = jnp.broadcast_to(times, (n, times.shape[0]))
    if times.ndim != 2 or times.shape[0] != n:
        raise SimulationError(
            f"`times` must have shape (time,) or ({n}, time), got {tuple(times.shape)}"
        )
    if _is_concrete(events.steady_state) and bool(
        np.any(np.asarray(events.steady_state) & np.asarray(events.mask))
    ):
        raise SimulationError(
            "`predict_linear` does not handle steady-state (SS=1) doses; use simulate() "
            "(or predict_outputs, which does so automatically)"
        )
    events = _trim_padding(events)
    infusions = _has_infusions(events)
    doses = _effective_doses(model, params, events)
    n_states = model.n_states

    def one(p, d, t):
        a = model.system_matrix(p)
        unit = jax.nn.one_hot(d.compartment, n_states, dtype=jnp.float64)  # [E, S]
        since = t[:, None] - d.time[None, :]  # [T, E]; +inf/-inf for padded rows
        bolus = d.bolus[None, :] & (since > 0)
        h = jnp.where(bolus, since, 0.0)
        phi = jax.vmap(jax.vmap(lambda hh: jax.scipy.linalg.expm(a * hh)))(h)  # [T, E, S, S]
        x = jnp.einsum("tesk,ek,e,te->ts", phi, unit, d.amount, bolus.astype(jnp.float64))
        if infusions:
            running = (d.rate > 0)[None, :] & (since > 0)
            h1 = jnp.where(running, jnp.clip(since, 0.0, d.duration[None, :]), 0.0)
            h2 = jnp.where(running, since - h1, 0.0)

            def infused(c, hh1, hh2):
                big = jnp.zeros((n_states + 1, n_states + 1), jnp.float64)
                big = big.at[:n_states, :n_states].set(a).at[:n_states, n_states].set(c)
                psi = jax.scipy.linalg.expm(big * hh1)[:n_states, n_states]
                return jax.scipy.linalg.expm(a * hh2) @ psi

            per = jax.vmap(jax.vmap(infused, in_axes=(0, 0, 0)), in_axes=(None, 0, 0))(
                unit, h1, h2
            )  # [T, E, S]
            x = x + jnp.einsum("tes,e,te->ts", per, d.rate, running.astype(jnp.float64))
        if model.initial is not None:
            x0 = model.initial_state(p)
            x = x + jax.vmap(lambda tt: jax.scipy.linalg.expm(a * tt) @ x0)(t)
        return x if return_states else model.observe(x, p)

    return jax.vmap(one)(params, doses, times)


def predict_outputs(
    model: ODEModel,
    params: Float[Array, "subject param"],
    events: DosingEvents,
    times: Float[Array, " time"] | Float[Array, "subject time"],
    *,
    method: Literal["auto", "superposition", "linear", "ode"] = "auto",
) -> Float[Array, "subject time output"]:
    """Outputs ``[subject, time, output]`` by the fastest exact path available.

    ``"auto"``: :func:`predict_linear` for a linear model without steady-state doses,
    otherwise :func:`~twinsim.simulators.simulate`; ``"superposition"`` forces the former,
    ``"linear"``/``"ode"`` the engine. Times may be per subject and must be sorted for the
    engine.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from twinsim.priors import one_compartment
    >>> from twinsim.simulators import DosingEvents, predict_outputs
    >>> out = predict_outputs(one_compartment(), jnp.array([[5.0, 50.0]]),
    ...                       DosingEvents.repeated(100.0, 12.0, 1), jnp.array([1.0]))
    >>> round(float(out[0, 0, 0]), 4)
    1.8097
    """
    if method not in ("auto", "superposition", "linear", "ode"):
        raise SimulationError(
            f"`method` must be 'auto', 'superposition', 'linear' or 'ode', got {method!r}"
        )
    params = jnp.atleast_2d(jnp.asarray(params, jnp.float64))
    use_superposition = method == "superposition" or (
        method == "auto"
        and model.linear
        and _is_concrete(events.steady_state)
        and not bool(np.any(np.asarray(events.steady_state) & np.asarray(events.mask)))
    )
    if use_superposition:
        return predict_linear(model, params, events, times)
    engine = "auto" if method == "auto" else method
    if events.n_subjects == 1 and params.shape[0] > 1:
        events = events.broadcast(params.shape[0])
    return simulate(model, params, events, times, method=engine).outputs
