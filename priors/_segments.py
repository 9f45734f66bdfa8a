"""Predictions with piecewise-constant individual parameters (time-varying covariates).

A population model whose covariates change over a subject's course (a creatinine
clearance measured every day, a weight that falls) gives each subject parameters that are
constant between *change times* ``τ_1 < τ_2 < …``: segment ``k`` holds the parameters of
the covariate values recorded at ``τ_k`` from ``τ_k`` (included) up to ``τ_(k+1)``
(excluded) — last observation carried forward; segment 0 holds from time 0.

:func:`predict_segments` solves such a course exactly, segment after segment: each
segment is one solve of the structural model (the exact linear path for linear models,
the ODE engine otherwise) that starts from the state the previous segment ended in, with
the doses given in that segment (times shifted to the segment's start) and the rest of any
infusion still running at its start. States are continuous at a change time; outputs that
read parameters (``central / v``) take the new segment's values from the change time on.

Not supported, each a clear :class:`~twinsim.priors.PopulationModelError`: models with a
lag time (a dose's arrival would depend on the parameters of a later segment), and
infusions into a compartment with a bioavailability parameter that run across a change
time (their length depends on ``F``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..simulators import Dose, DosingEvents, ODEModel, predict_linear, predict_outputs, simulate
from ._errors import PopulationModelError as _SegmentError
from ._pd import extend_model

__all__ = ["predict_segments", "segment_starts"]


@functools.cache
def _with_initial_state(structural: ODEModel) -> ODEModel:
    """``structural`` with one more parameter per state, its initial value (``x0_<state>``)."""
    extra = tuple(f"x0_{state}" for state in structural.states)
    taken = set(structural.parameters) & set(extra)
    if taken:
        raise _SegmentError(
            f"model {structural.name!r} has parameters named {sorted(taken)}, which the "
            "segment-wise solve of time-varying covariates uses for initial states; rename them"
        )
    return extend_model(
        structural,
        name=f"{structural.name}_segment",
        parameters=extra,
        initial=lambda p: {state: getattr(p, f"x0_{state}") for state in structural.states},
        linear=structural.linear,
    )


def segment_starts(change_times, n: int, k: int) -> np.ndarray:
    """Change times as ``[subject, segment]`` float64 with the first column 0 (host array)."""
    starts = np.asarray(change_times, dtype=np.float64)
    if starts.ndim == 1:
        starts = np.broadcast_to(starts, (n, starts.shape[0]))
    if starts.shape != (n, k):
        raise _SegmentError(
            f"covariate change times have shape {starts.shape}; expected ({n}, {k}): one "
            "start time per subject and covariate segment"
        )
    starts = starts.copy()
    starts[:, 0] = 0.0
    return starts


def _infusion(d: Dose) -> tuple[float, float] | None:
    """(rate, nominal duration) of an infusion record, ``None`` for a bolus."""
    if d.rate > 0:
        return d.rate, d.amount / d.rate
    if d.duration > 0:
        return d.amount / d.duration, d.duration
    return None


def _segment_doses(
    structural: ODEModel, doses: list[list[Dose]], starts: np.ndarray, ends: np.ndarray, k: int
) -> DosingEvents:
    with_f = {structural.state_index(s) for s, _ in structural.bioavailability}
    rows: list[list[Dose]] = []
    for i, subject in enumerate(doses):
        s, e = float(starts[i, k]), float(ends[i, k])
        here: list[Dose] = []
        if s < e:
            for d in subject:
                infusion = _infusion(d)
                if s <= d.time < e:
                    here.append(d.replace(time=d.time - s))
                elif infusion is not None and d.time < s < d.time + infusion[1]:
                    if d.compartment in with_f:
                        raise _SegmentError(
                            f"subject {i}: an infusion into {structural.states[d.compartment]!r} "
                            f"(started at {d.time:g} h) runs across the covariate change at "
                            f"{s:g} h, and that compartment has a bioavailability parameter, so "
                            "its length depends on F; time-varying covariates do not support it: "
                            "give the covariate change after the infusion ends"
                        )
                    rate, length = infusion
                    here.append(
                        Dose(
                            0.0, rate * (d.time + length - s), compartment=d.compartment, rate=rate
                        )
                    )
        rows.append(here)
    return DosingEvents.from_doses(rows)


def _states(model: ODEModel, params, events: DosingEvents, times, method: str):
    steady = bool(np.any(np.asarray(events.steady_state) & np.asarray(events.mask)))
    if model.linear and method in ("auto", "superposition") and not steady:
        return predict_linear(model, params, events, times, return_states=True)
    engine = "auto" if method in ("auto", "superposition") else method
    return simulate(model, params, events, times, method=engine, keep_states=True).states


def predict_segments(
    structural: ODEModel, params, events: DosingEvents, times, change_times, *, method="auto"
):
    """Outputs ``[subject, time, output]`` with parameters ``[subject, segment, P]``.

    Parameters
    ----------
    structural
        The structural model.
    params
        Parameters per subject and segment (may be traced).
    events
        Dosing table, one row per subject (concrete: it is split on the host).
    times
        Output times ``[time]`` or ``[subject, time]`` (concrete, sorted per subject).
    change_times
        ``[subject, segment]`` (or ``[segment]``): segment ``k`` starts at
        ``change_times[:, k]`` (h; the first column is taken as 0). Repeated times (padding
        of subjects with fewer changes) give empty segments.
    method
        As in :func:`~twinsim.simulators.predict_outputs`.

    Examples
    --------
    Clearance halves at 12 h: before it, the concentration is the one-compartment
    solution; after it, it decays with the new rate from the 12 h value.

    >>> import math
    >>> import jax.numpy as jnp
    >>> from twinsim.priors import one_compartment
    >>> params = jnp.array([[[5.0, 50.0], [2.5, 50.0]]])
    >>> out = predict_segments(one_compartment(), params,
    ...     DosingEvents.repeated(100.0, 24.0, 1, compartment=0), jnp.array([6.0, 18.0]), [0.0, 12.0])
    >>> c12 = 2.0 * math.exp(-0.1 * 12.0)
    >>> [round(float(c), 6) for c in out[0, :, 0]] == [round(2.0 * math.exp(-0.6), 6), round(c12 * math.exp(-0.05 * 6.0), 6)]
    True
    """
    params = jnp.asarray(params, jnp.float64)
    n, k, _ = params.shape
    if k == 1:
        return predict_outputs(structural, params[:, 0], events, times, method=method)
    if structural.lag_time:
        raise _SegmentError(
            f"model {structural.name!r} has a lag time ({dict(structural.lag_time)}); time-varying "
            "covariates need a model without one (a lagged dose could arrive in a later "
            "segment); declare the covariate without time_varying=True or drop the lag"
        )
    try:
        t_host = np.asarray(times, dtype=np.float64)
        doses = events.to_doses()
    except jax.errors.JAXTypeError:
        raise _SegmentError(
            "time-varying covariates need concrete dosing events and output times (they are "
            "split into segments on the host); do not trace them"
        ) from None
    if t_host.ndim == 1:
        t_host = np.broadcast_to(t_host, (n, t_host.shape[0]))
    if len(doses) == 1 and n > 1:
        doses = doses * n
    starts = segment_starts(change_times, n, k)
    last_dose = max((d.time + (_infusion(d) or (0, 0))[1] for s in doses for d in s), default=0.0)
    big = float(max(t_host.max(initial=0.0), last_dose)) + 1.0
    ends = np.concatenate([starts[:, 1:], np.full((n, 1), big)], axis=1)
    ends = np.maximum(ends, starts)
    model = _with_initial_state(structural)
    n_out = t_host.shape[1]
    x = jax.vmap(structural.initial_state)(params[:, 0])
    out = None
    for j in range(k):
        s, e = starts[:, j : j + 1], ends[:, j : j + 1]
        inside = (t_host >= s) & (t_host < e)
        local = np.concatenate([np.clip(t_host - s, 0.0, e - s), e - s], axis=1)
        seg_params = jnp.concatenate([params[:, j], x], axis=1)
        with jax.ensure_compile_time_eval():  # host tables, not staged into a trace
            seg_events = _segment_doses(structural, doses, starts, ends, j)
        states = _states(model, seg_params, seg_events, local, method)
        y = jax.vmap(structural.observe)(states[:, :n_out], params[:, j])
        out = y if out is None else jnp.where(jnp.asarray(inside)[..., None], y, out)
        x = states[:, n_out]
    return out
