"""The simulation engines behind one entry point, :func:`simulate`.

Both engines walk the same per-subject *entry list*: output times, (lagged) dose times and
infusion end times, sorted. Between consecutive entries the state is propagated with the
current piecewise-constant infusion input; at an entry a bolus is added, an infusion rate
switched, an output recorded, or the system reset to steady state (SS=1).

- The **linear engine** propagates exactly: ``x(t+h) = Φ(h) x(t) + Ψ(h) r`` with
  ``Φ = e^{Ah}`` and ``Ψ = ∫₀ʰ e^{As} ds`` from one matrix exponential of the augmented
  system. Propagators are cached per subject and recomputed (for the whole batch, one
  branch of a ``lax.cond``) only when some subject's step changes, so a cohort on a shared
  grid pays for a handful of matrix exponentials, not one per step.
- The **ODE engine** integrates each segment with diffrax (vmapped over subjects, each with
  its own adaptive step) and finds steady states by Newton's method (optimistix).

The entry loop runs on batched arrays ``[subject, ...]`` so that such batch-level decisions
are real branches; everything else is per subject and vmapped.
"""

from __future__ import annotations

import enum
import functools
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.scipy.linalg import expm
from jaxtyping import Array, Bool, Float, Int

from ._events import DosingEvents, bucket_size
from ._lockstep import lockstep_segment, tableau_of
from ._model import ODEModel
from ._semilinear import (
    SemilinearState,
    semilinear_grid,
    semilinear_partition,
    solve_semilinear,
)
from ._split import solve_split, source_compartments, supported_doses
from ._split import status_of as _status_of

__all__ = ["SimulationError", "Solution", "SolveStatus", "simulate"]

_OUTPUT, _DOSE, _INFUSION_END, _SS_RESET, _SS_PREVIOUS_END = 0, 1, 2, 3, 4


class SolveStatus(enum.IntEnum):
    """Per-subject result of a solve."""

    SUCCESS = 0
    MAX_STEPS = 1  #: the ODE solver hit ``max_steps`` in some segment
    NONFINITE = 2  #: a state became NaN or infinite
    SOLVER_FAILED = 3  #: the ODE solver failed otherwise (step size collapse, ...)
    STEADY_STATE_FAILED = 4  #: Newton's method did not find the SS=1 steady state
    UNSUPPORTED_DOSE = 5  #: the split engine got a dose it does not take (see ``method``)

    def describe(self) -> str:
        return {
            0: "success",
            1: "ODE solver reached max_steps; raise max_steps or use solver='kvaerno5' for stiff models",
            2: "a state became NaN or infinite; check the parameters for this subject",
            3: "ODE solver failed; check the parameters or tighten rtol/atol",
            4: "steady state (SS=1) not found; the model may have no steady state for this regimen",
            5: "method='split' takes boluses into source (depot) compartments only, without "
            "SS=1; use method='ode' for this subject's doses",
        }[int(self)]


class SimulationError(ValueError):
    """The simulation request is malformed (shapes, compartments, times)."""


class Solution(eqx.Module):
    """Raw engine output; :func:`twinsim.scenarios.to_dataset` labels it.

    Failed subjects (``status != 0``) have NaN outputs *and* a status code saying why.
    """

    times: Float[Array, "subject time"]
    outputs: Float[Array, "subject time output"]
    states: Float[Array, "subject time state"] | None
    status: Int[Array, " subject"]
    method: str = eqx.field(static=True)
    output_names: tuple[str, ...] = eqx.field(static=True)
    state_names: tuple[str, ...] = eqx.field(static=True)

    @property
    def ok(self) -> Bool[Array, " subject"]:
        return self.status == SolveStatus.SUCCESS

    def failures(self) -> dict[int, str]:
        """``{subject index: reason}`` for every subject whose solve failed."""
        status = np.asarray(self.status)
        return {int(i): SolveStatus(int(status[i])).describe() for i in np.flatnonzero(status)}


# --------------------------------------------------------------------------- public entry


def simulate(
    model: ODEModel,
    params: Float[Array, "subject param"] | Float[Array, " param"],
    events: DosingEvents,
    times: Float[Array, " time"] | Float[Array, "subject time"],
    *,
    method: Literal["auto", "linear", "ode", "split", "semilinear"] = "auto",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 4096,
    grid: tuple[float, int] | None = None,
    solver: Literal["auto", "tsit5", "dopri8", "kvaerno5"] = "auto",
    at_dose: Literal["pre", "post"] = "pre",
    ode_strategy: Literal["auto", "lockstep", "vmap", "batch"] = "auto",
    keep_states: bool = True,
    sensitivity: Literal["reverse", "forward"] = "reverse",
) -> Solution:
    """Simulate ``model`` for every subject's parameters, doses and output times.

    Parameters
    ----------
    model
        An :class:`~twinsim.priors.ODEModel`.
    params
        Parameters by name, ``{"cl": 5.0, "v": 50.0}`` (a scalar or one value per
        subject each; a pandas DataFrame or a numpy structured array works too), checked
        against ``model.parameters``; or an array in ``model.parameters`` order, one row per
        subject (or one row for all).
    events
        Dosing table, one row per subject (or one row for all).
    times
        Output times in h, sorted, ≥ 0; shared ``[time]`` or per subject ``[subject, time]``.
        Every subject starts from ``model.initial_state`` at t = 0.
    method
        ``"linear"`` (exact; needs ``model.linear``), ``"ode"`` (diffrax, walking the
        entries), ``"split"`` (a depot — ``dy/dt = −k·y``, no inflow — in closed form and
        the other states in one diffrax solve per 32 outputs; boluses into depots only, a
        subject with other doses fails with ``SolveStatus.UNSUPPORTED_DOSE``) or ``"auto"``
        (linear when the model is linear, else ode; the twin's compiled engine takes the
        split engine when every dose suits it). ``"semilinear"``: a linear part (the
        PK) exact and a part linear in itself driven by it (effect compartment, transit
        chains, indirect response I/II) by an exponential integrator on a uniform grid
        holding every dose and output time (:mod:`._semilinear`; boluses, no lag, no
        infusion, no SS=1).
    rtol, atol
        ODE engine tolerances (ignored by the exact linear engine).
    max_steps
        ODE engine step limit per segment between entries.
    grid
        Semilinear engine: ``(step h, number of steps)`` of the uniform grid from 0; found
        from the doses and times when they are concrete (required inside ``jit``; see
        :func:`~twinsim.simulators.semilinear_grid`). ``(step, None)``: step node by node
        to the last output time, whatever it is (one compilation for every horizon; no
        states kept; forward-mode derivatives only).
    solver
        ODE and split engine solver: explicit ``"tsit5"``/``"dopri8"`` or stiff
        ``"kvaerno5"``. ``"auto"`` (default): Dopri8 under the lockstep strategy at
        ``rtol ≤ 1e-7`` (2–3× fewer steps than Tsit5 there), Tsit5 otherwise.
    at_dose
        Whether an output at the exact time of a dose is taken before (``"pre"``, trough
        convention) or after (``"post"``) the dose.
    ode_strategy
        ODE engine only; every strategy but ``"batch"`` gives each subject its own adaptive
        steps, so a subject's numbers are the same bit for bit alone or in any batch.
        ``"lockstep"``: one loop advances every subject of a block together, each with its
        own steps of the solver's Runge–Kutta tableau and diffrax's error control
        (:mod:`._lockstep`; explicit solvers; forward-mode derivatives only; ≈ 5–6× faster
        than ``"vmap"``). ``"vmap"``: :func:`diffrax.diffeqsolve` per subject under
        :func:`jax.vmap` (any solver; reverse-mode derivatives). ``"auto"`` (default):
        ``"lockstep"`` for concrete inputs with an explicit solver — no :func:`jax.grad`
        can reach them — else ``"vmap"``. ``"batch"``: when the cohort shares its dose and
        output times, the stacked cohort is integrated as one system (one step size, every
        subject held to the tolerance by a max norm; a subject's last digits then depend on
        its batch-mates), falling back to per-subject solves for a segment that fails.
    keep_states
        Return the states at the output times as well (``Solution.states``). Large cohorts
        that need only the outputs save memory and time with ``False`` (``states`` is then
        ``None``).
    sensitivity
        ODE engine only: how derivatives of the solve are taken. ``"reverse"`` (default)
        serves :func:`jax.grad` through checkpointed steps; ``"forward"`` serves
        :func:`jax.jvp`/:func:`jax.jacfwd` only — cheaper to compile, and cheaper to run
        for derivatives with respect to a few parameters. The values are the same.

    Returns
    -------
    Solution
        ``outputs[subject, time, output]`` with a per-subject ``status``.

    Raises
    ------
    SimulationError
        For malformed shapes, unknown compartments, unsorted or negative times, or
        ``method="linear"`` with a nonlinear model.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from twinsim.priors import ODEModel
    >>> from twinsim.simulators import DosingEvents, simulate
    >>> model = ODEModel(name="iv1", states=("central",), parameters=("cl", "v"),
    ...     rhs=lambda t, y, p: {"central": -p.cl / p.v * y.central},
    ...     outputs={"conc": lambda y, p: y.central / p.v}, linear=True)
    >>> sol = simulate(model, jnp.array([5.0, 50.0]), DosingEvents.repeated(100.0, 12.0, 1, compartment=0),
    ...                jnp.array([1.0, 2.0]))
    >>> [round(float(c), 4) for c in sol.outputs[0, :, 0]]
    [1.8097, 1.6375]
    """
    if at_dose not in ("pre", "post"):
        raise SimulationError(
            f"`at_dose` must be 'pre' or 'post', got {at_dose!r}; 'pre' records the pre-dose "
            "value at a dose time (trough convention)"
        )
    params, events, times, n = _check_inputs(model, params, events, times)
    if method == "auto":
        # the split engine stays opt-in here: its results agree with a subject's own to
        # rtol 1e-11 whatever the batch, not bit for bit as the walking engine's do
        method = "linear" if model.linear else "ode"
    traced = any(
        isinstance(leaf, jax.core.Tracer)
        for leaf in jax.tree_util.tree_leaves((params, events, times))
    )
    # decided here when the inputs are concrete, so only one walk is compiled
    plan = None
    if not traced and method not in ("split", "semilinear"):
        facts = _grid_facts(model, params, events, times, jnp.asarray(n), padded_size(n), at_dose)
        facts = jax.device_get(facts)  # one transfer for all of them
        if facts[0]:
            plan = _host_plan(
                *facts[1:],
                n_outputs=times.shape[1],
                # per-interval segments serve the batched ODE strategy only
                segments=method == "ode" and ode_strategy == "batch",
            )
    walk = dict(plan=plan, run_time=traced)
    if method == "linear":
        if not model.linear:
            raise SimulationError(
                f"`method` 'linear' needs a linear model, but model {model.name!r} has linear=False; "
                "use method='ode' or 'auto'"
            )
        options = dict(at_dose=at_dose, **walk)
    elif method in ("ode", "split"):
        if solver not in ("auto", *_SOLVERS):
            raise SimulationError(f"`solver` must be one of {['auto', *_SOLVERS]}, got {solver!r}")
        if ode_strategy not in ("auto", "lockstep", "vmap", "batch"):
            raise SimulationError(
                "`ode_strategy` must be 'auto', 'lockstep', 'vmap' or 'batch', got "
                f"{ode_strategy!r}"
            )
        if ode_strategy == "lockstep" and solver == "kvaerno5":
            raise SimulationError(
                "`ode_strategy` 'lockstep' takes an explicit solver ('tsit5' or 'dopri8'), "
                "got solver='kvaerno5'; use ode_strategy='vmap' for the stiff solver"
            )
        if ode_strategy == "auto":
            ode_strategy = "lockstep" if not traced and solver != "kvaerno5" else "vmap"
        if solver == "auto":
            # an 8th-order method takes 2-3x fewer steps at tight tolerances; under the
            # lockstep strategy a step costs about the same either way (measured on the
            # engines benchmark at rtol 1e-8: 10,968 vs 4,645 subjects/s)
            tight = method == "ode" and ode_strategy == "lockstep" and rtol <= 1e-7
            solver = "dopri8" if tight else "tsit5"
        if sensitivity not in _SENSITIVITIES:
            raise SimulationError(
                f"`sensitivity` must be one of {list(_SENSITIVITIES)}, got {sensitivity!r}"
            )
        options = dict(
            at_dose=at_dose, rtol=rtol, atol=atol, max_steps=max_steps, solver=solver,
            sensitivity=sensitivity,
        )  # fmt: skip
        if method == "ode":
            options.update(strategy=ode_strategy, **walk)
        elif len(source_compartments(model)) in (0, model.n_states):
            raise SimulationError(
                f"`method` 'split' needs a model with a source (depot) compartment and other "
                f"states, but model {model.name!r} has source compartments "
                f"{[model.states[c] for c in source_compartments(model)]}; use method='ode'"
            )
    elif method == "semilinear":
        if semilinear_partition(model) is None:
            raise SimulationError(
                f"`method` 'semilinear' needs a model with a linear part driving a part linear "
                f"in its own states; model {model.name!r} has none; use method='ode'"
            )
        if grid is None:
            if traced:
                raise SimulationError(
                    "`method` 'semilinear' inside a compiled program needs `grid=(step, "
                    "n_steps)`: find it before with semilinear_grid(model, events, times)"
                )
            grid = semilinear_grid(model, events, times)
            if grid is None:
                raise SimulationError(
                    "`method` 'semilinear' needs boluses without lag time, no infusion or SS=1 "
                    "record, and dose and output times on a grid of at least 1 s with at most "
                    "40,000 steps; these doses and times are not; use method='ode'"
                )
        step = grid[0]  # a number (static), or an array: one compilation for every step
        step = jnp.asarray(step, float) if isinstance(step, jax.Array) else float(step)
        n_steps = None if grid[1] is None else int(grid[1])
        if n_steps is None and keep_states:
            raise SimulationError(
                "`grid=(step, None)` runs to the last output time and keeps no states; pass "
                "keep_states=False, or give the number of steps"
            )
        options = dict(at_dose=at_dose, step=step, n_steps=n_steps)
    else:
        raise SimulationError(
            f"`method` must be 'auto', 'linear', 'ode', 'split' or 'semilinear', got {method!r}"
        )
    outputs, states, status = _solve_in_blocks(
        model, params, events, times, n=n, method=method, options=options, keep_states=keep_states
    )
    return Solution(
        times=jnp.broadcast_to(times, (n, times.shape[1])),
        outputs=outputs[:n],
        states=None if states is None else states[:n],
        status=status[:n],
        method=method,
        output_names=model.output_names,
        state_names=model.states,
    )


_SUBJECT_MULTIPLE = 32
_BLOCK = 256


def padded_size(n: int) -> int:
    """``n`` rounded up to a multiple of 32 subjects (of 256 beyond 256).

    XLA vectorises loops over subjects, splits large ones across threads and finishes a
    ragged remainder with scalar code, which may round differently (fused multiply-adds).
    Batches are therefore computed in blocks of one shape (:func:`_solve_in_blocks`), every
    subject on the vector path, so a subject's result is bitwise the same whatever the batch
    it is simulated in. Fewer distinct batch sizes also mean fewer compilations.
    """
    multiple = _SUBJECT_MULTIPLE if n <= _BLOCK else _BLOCK
    return -(-n // multiple) * multiple


def _pad_subjects(tree, n: Array, n_padded: int):
    """Every ``[subject, ...]`` leaf of ``tree`` as ``n_padded`` rows: a one-row leaf is shared
    by all, others repeat their last real subject (``n`` of them) into the padding."""
    index = jnp.minimum(jnp.arange(n_padded), n - 1)

    def rows(a):
        if a.shape[0] == 1:
            return jnp.broadcast_to(a, (n_padded, *a.shape[1:]))
        return a[index]

    return jax.tree_util.tree_map(rows, tree)


def _check_inputs(model, params, events, times):
    params = model.parameter_array(params)  # by name ({'cl': 5, ...}) or in model order
    times = jnp.asarray(times, dtype=jnp.float64)
    if params.ndim == 1:
        params = params[None, :]
    if params.ndim != 2 or params.shape[1] != model.n_parameters:
        raise SimulationError(
            f"`params` must have shape (subject, {model.n_parameters}) for model {model.name!r} "
            f"(parameters {list(model.parameters)}), got {tuple(params.shape)}"
        )
    n = max(params.shape[0], events.n_subjects, times.shape[0] if times.ndim == 2 else 1)
    if params.shape[0] not in (1, n):
        raise SimulationError(
            f"`params` has {params.shape[0]} rows but there are {n} subjects; give 1 or {n}"
        )
    if events.n_subjects not in (1, n):
        raise SimulationError(
            f"`events` has {events.n_subjects} subjects but there are {n}; give 1 or {n}"
        )
    if times.ndim == 1:
        times = times[None, :]
    if times.ndim != 2 or times.shape[0] not in (1, n) or times.shape[1] == 0:
        raise SimulationError(
            f"`times` must have shape (time,) or ({n}, time), got {tuple(times.shape)}"
        )
    if not isinstance(times, jax.core.Tracer):
        host = np.asarray(times)
        bad = ~np.isfinite(host) | (host < 0)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise SimulationError(
                f"`times` must be finite and ≥ 0 h (the system starts at t = 0), got "
                f"{host[i, j]!r} for subject {i} at position {j}; drop or shift that time"
            )
        down = np.diff(host, axis=1) < 0
        if down.any():
            i, j = np.argwhere(down)[0]
            raise SimulationError(
                f"`times` must be sorted in increasing order, but for subject {i} "
                f"{host[i, j + 1]!r} h follows {host[i, j]!r} h; sort the output times"
            )
    if not isinstance(events.compartment, jax.core.Tracer):
        cmt = np.asarray(events.compartment)[np.asarray(events.mask)]
        if cmt.size and (cmt.min() < 0 or cmt.max() >= model.n_states):
            raise SimulationError(
                f"dose compartment {int(cmt.max() if cmt.max() >= model.n_states else cmt.min())} (0-based) is "
                f"outside model {model.name!r}, which has states {list(model.states)}; "
                f"use 0..{model.n_states - 1} (NONMEM CMT 1..{model.n_states})"
            )
    return params, events, times, n


# --------------------------------------------------------------------------- shared entry walk


class _Doses(eqx.Module):
    """Per-subject effective doses (after F and lag), [subject, event]."""

    time: Array
    lag: Array
    amount: Array
    compartment: Array
    bolus: Array
    rate: Array
    duration: Array
    steady_state: Array
    interval: Array
    mask: Array


def _effective_doses(model: ODEModel, params, events: DosingEvents) -> _Doses:
    def one(p, ev):
        f, lag = model.dosing_factors(p)
        cmt = ev.compartment
        amount = ev.amount * f[cmt]
        is_infusion = (ev.rate > 0) | (ev.duration > 0)
        safe_rate = jnp.where(ev.rate > 0, ev.rate, 1.0)
        safe_duration = jnp.where(ev.duration > 0, ev.duration, 1.0)
        duration = jnp.where(
            ev.rate > 0, amount / safe_rate, jnp.where(ev.duration > 0, ev.duration, 0.0)
        )
        rate = jnp.where(
            ev.rate > 0, ev.rate, jnp.where(ev.duration > 0, amount / safe_duration, 0.0)
        )
        return _Doses(
            time=jnp.where(ev.mask, ev.time + lag[cmt], jnp.inf),
            lag=lag[cmt],
            amount=jnp.where(ev.mask, amount, 0.0),
            compartment=cmt,
            bolus=ev.mask & ~is_infusion,
            rate=jnp.where(ev.mask & is_infusion, rate, 0.0),
            duration=jnp.where(ev.mask & is_infusion, duration, 0.0),
            steady_state=ev.mask & ev.steady_state,
            interval=jnp.where(ev.steady_state, ev.interval, 1.0),
            mask=ev.mask,
        )

    return jax.vmap(one)(params, events)


def _entry_blocks(doses: _Doses, times, at_dose: str):
    """Unsorted entries per subject, each block sorted in itself when it can be:
    (times, kinds, indices) each [subject, entry], and the blocks' times."""
    n, n_out = times.shape
    n_ev = doses.time.shape[1]
    ends = jnp.where(doses.rate > 0, doses.time + doses.duration, jnp.inf)
    out_idx = jnp.broadcast_to(jnp.arange(n_out), (n, n_out))
    ev_idx = jnp.broadcast_to(jnp.arange(n_ev), (n, n_ev))
    blocks = {
        _OUTPUT: (times, out_idx),
        _INFUSION_END: (ends, ev_idx),
        _DOSE: (doses.time, ev_idx),
        # SS=1 resets at the record's time (before a lag), before anything else at that
        # time, so a pre-dose output sees the steady-state trough
        _SS_RESET: (jnp.where(doses.steady_state, doses.time - doses.lag, jnp.inf), ev_idx),
        # with a lag, the previous cycle's infusion may still run at the reset
        _SS_PREVIOUS_END: (_previous_cycle_end(doses), ev_idx),
    }
    if at_dose == "pre":
        order = [_SS_RESET, _OUTPUT, _SS_PREVIOUS_END, _INFUSION_END, _DOSE]
    else:
        order = [_SS_RESET, _SS_PREVIOUS_END, _INFUSION_END, _DOSE, _OUTPUT]
    t = jnp.concatenate([blocks[k][0] for k in order], axis=1)
    kind = jnp.concatenate(
        [jnp.full(blocks[k][0].shape, k, dtype=jnp.int32) for k in order], axis=1
    )
    idx = jnp.concatenate([blocks[k][1] for k in order], axis=1).astype(jnp.int32)
    return t, kind, idx, [blocks[k][0] for k in order]


def _entry_list(doses: _Doses, times, at_dose: str):
    """Sorted entries per subject: (time, kind, index) each [entry, subject]."""
    t, kind, idx, block_times = _entry_blocks(doses, times, at_dose)
    perm = jax.lax.cond(
        jnp.all(jnp.stack([jnp.all(b[:, 1:] >= b[:, :-1]) for b in block_times])),
        lambda: _merge_sorted(block_times),
        # rare: lag times differing by compartment or unequal infusions reorder a block
        lambda: jnp.argsort(t, axis=1, stable=True).astype(jnp.int32),
    )
    take = lambda a: jnp.take_along_axis(a, perm, axis=1).T  # noqa: E731
    return take(t), take(kind), take(idx)


def _previous_cycle_end(doses: _Doses) -> Array:
    """End of the infusion of the steady-state cycle before an SS=1 record, when it ends after
    the record's time (only possible with a lag time); ``inf`` otherwise."""
    end = doses.time - doses.interval + doses.duration
    running = doses.steady_state & (doses.rate > 0) & (end > doses.time - doses.lag)
    return jnp.where(running, end, jnp.inf)


def _contracts(interval_map: Array) -> Array:
    """Whether repeating a one-interval map (its Jacobian) converges: a steady state exists.

    ``M^(2^20)`` still far from zero means a mode that does not decay over a million
    intervals, e.g. a model without elimination; ``I − M`` is then (nearly) singular and a
    "solution" would be meaningless numbers.
    """
    m = jax.lax.stop_gradient(interval_map)
    m = m / jnp.maximum(1.0, jnp.max(jnp.abs(m)))  # keep squarings finite; flags growth too
    power = jax.lax.fori_loop(0, 20, lambda _, q: q @ q, m)
    return jnp.max(jnp.abs(power)) < 1e-3


def _steady_state_at_record(cycle, fixed_point, x_initial, doses: _Doses, k, active):
    """State at an SS=1 record's time, and whether the previous cycle's infusion still runs.

    ``cycle(x, bolus, rate, duration, h)`` gives the state ``h`` after a dose arrives on
    ``x``; ``fixed_point(bolus, rate, duration, tau, x_initial)`` the pre-dose steady state.
    With a lag ``L`` the record's time lies ``tau − L`` after the previous cycle's dose.
    """
    n_states = x_initial.shape[1]
    at = lambda a: jnp.take_along_axis(a, k[:, None], axis=1)[:, 0]  # noqa: E731
    onehot = jax.nn.one_hot(at(doses.compartment), n_states, dtype=x_initial.dtype)
    bolus = onehot * (at(doses.amount) * at(doses.bolus))[:, None]
    rate = onehot * at(doses.rate)[:, None]
    duration, tau, lag = at(doses.duration), at(doses.interval), at(doses.lag)
    # sanitise subjects without an SS record here (their result is discarded)
    tau = jnp.where(active, tau, 1.0)
    duration = jnp.where(active, duration, 0.0)
    lag = jnp.where(active, lag, 0.0)
    x_star, status = fixed_point(bolus, rate, duration, tau, x_initial)
    # a steady state holds at most what a million intervals of dosing bring; more means a
    # mode that never decays (no elimination) and the "solution" is meaningless
    scale = jnp.sum(jnp.abs(bolus) + jnp.abs(rate) * tau[:, None] + jnp.abs(x_initial), axis=1)
    runaway = jnp.max(jnp.abs(x_star), axis=1) > 1e6 * (scale + 1.0)
    status = jnp.where(
        runaway | ~jnp.all(jnp.isfinite(x_star), axis=1),
        int(SolveStatus.STEADY_STATE_FAILED),
        status,
    )
    since_dose = tau - lag
    x_record = jax.lax.cond(
        jnp.any(active & (lag > 0)),
        lambda: jnp.where(
            (lag > 0)[:, None], cycle(x_star, bolus, rate, duration, since_dose), x_star
        ),
        lambda: x_star,
    )
    lag_too_long = active & (lag >= tau)  # the cycle would hold several pending doses
    status = jnp.where(lag_too_long, int(SolveStatus.STEADY_STATE_FAILED), status)
    running = (lag > 0) & (duration > since_dose)
    return x_record, rate * running[:, None], status.astype(jnp.int32)


def _implicit_root(residual, solver, x0: Array, args) -> tuple[Array, Array]:
    """Root ``x`` of ``residual(x, args) = 0`` by ``solver`` from ``x0``, and whether it
    converged; differentiable in ``args`` by the implicit function theorem,
    ``ẋ = −(∂r/∂x)⁻¹ (∂r/∂args) · args̊``.

    optimistix differentiates a root the same way but its linear solve raises from inside
    the compiled program when the Jacobian is singular or not finite — which an extreme
    proposal of a sampler (a rate constant underflowing to 0) or a discarded branch of a
    vectorised ``cond`` produces. Here the solve is a plain one: such a root's derivative
    is non-finite and the caller's status already says the steady state failed.
    """

    @jax.custom_jvp
    def root(x_start, a):
        sol = optx.root_find(residual, solver, x_start, args=a, max_steps=64, throw=False)
        return sol.value, sol.result == optx.RESULTS.successful

    @root.defjvp
    def _jvp(primals, tangents):
        x_start, a = primals
        x, ok = root(x_start, a)
        _, r_dot = jax.jvp(lambda b: residual(x, b), (a,), (tangents[1],))
        jac = jax.jacfwd(residual)(x, a)
        x_dot = -jnp.linalg.solve(jac, r_dot)
        return (x, ok), (x_dot, np.zeros(ok.shape, jax.dtypes.float0))

    # the start is a guess: the root does not depend on it
    return root(jax.lax.stop_gradient(x0), args)


def _merge_sorted(blocks: list[Array]) -> Array:
    """Stable-sort permutation of the concatenated, individually sorted ``blocks``.

    A merge by binary search costs O(n log n) comparisons without a general sort, which
    is the slowest operation XLA runs on the CPU. Ties go to the earlier block.
    """

    def one(*rows):
        position = []
        for b, row in enumerate(rows):
            pos = jnp.arange(row.shape[0], dtype=jnp.int32)
            for other_b, other in enumerate(rows):
                if other_b != b:
                    side = "right" if other_b < b else "left"
                    pos = pos + jnp.searchsorted(
                        other,
                        row,
                        side=side,
                        method="compare_all" if other.shape[0] <= 64 else "scan",
                    ).astype(jnp.int32)
            position.append(pos)
        position = jnp.concatenate(position)
        return (
            jnp.zeros_like(position)
            .at[position]
            .set(jnp.arange(position.shape[0], dtype=jnp.int32))
        )

    return jax.vmap(one)(*blocks)


class _Walk(eqx.Module):
    x: Array  # [subject, state]
    r: Array  # infusion input per compartment, mg/h
    t: Array  # current time per subject
    reset_t: Array  # time of the last SS reset: earlier infusions no longer run
    status: Array
    cache: object

    @classmethod
    def start(cls, x0, cache0) -> _Walk:
        n = x0.shape[0]
        return cls(
            x=x0,
            r=jnp.zeros_like(x0),
            t=jnp.zeros(n, x0.dtype),
            reset_t=jnp.full(n, -jnp.inf, x0.dtype),
            status=jnp.zeros(n, jnp.int32),
            cache=cache0,
        )


class _Plan(eqx.Module):
    """The entry list a cohort on one shared grid walks: ``[entry]`` arrays.

    Built on the host when the inputs are concrete (:func:`_host_plan`): only real entries,
    padded to a bucket size, with the distinct step lengths (``steps``) and each entry's
    index into them, and flags saying whether the cohort has SS=1 records or infusions at
    all. Under tracing it is built in the compiled function, without ``steps``.
    """

    t: Array
    kind: Array
    index: Array
    valid: Array
    output_position: Array
    step: Array | None
    steps: Array | None
    has_steady_state: bool = eqx.field(static=True)
    has_infusion: bool = eqx.field(static=True)
    powers: _Powers | None = None
    segments: _Segments | None = None


class _Powers(eqx.Module):
    """A shared grid whose every event gap and output offset is a whole number of one base
    step ``h``: the linear engine then walks the events only, with propagators
    ``Φ(kh) = Φ(h)^k``, and computes all outputs at once from the states after events.

    ``event_*`` are ``[event]`` (padded with no-ops); output ``i`` lies ``output_power[i]``
    steps after the state emitted at ``output_event[i]`` (0: the initial state).
    """

    base: Array
    event_t: Array
    event_kind: Array
    event_index: Array
    event_valid: Array
    event_power: Array
    output_event: Array
    output_power: Array
    n_powers: int = eqx.field(static=True)  # powers the event gaps need
    n_output_steps: int = eqx.field(static=True)  # steps after an event outputs need


_MAX_POWER = 4096


def _host_powers(t, kind, idx, n_out) -> _Powers | None:
    """:class:`_Powers` for the real sorted entries, or ``None`` when no base step fits."""
    is_event = kind != _OUTPUT
    event_t = t[is_event]
    gaps = event_t - np.concatenate([[0.0], event_t[:-1]])
    events_before = np.cumsum(is_event)[~is_event]  # 0: before any event
    out_t = t[~is_event]
    offsets = out_t - np.concatenate([[0.0], event_t])[events_before]
    values = np.concatenate([gaps, offsets])
    positive = values[values > 0]
    base = positive.min() if positive.size else 1.0
    ratio = values / base
    power = np.rint(ratio)
    if np.any(np.abs(ratio - power) > 1e-10 * np.maximum(ratio, 1.0)):
        return None
    power = power.astype(np.int32)
    n_events = event_t.size
    size = bucket_size(n_events, 8)
    n_output_steps = bucket_size(int(power[n_events:].max(initial=0)) + 1, 8)
    # outputs are stepped from every event at once: worth it while that is not much more
    # work than stepping through the outputs one by one
    if power.max(initial=0) >= _MAX_POWER or n_output_steps * (size + 1) > 4 * max(n_out, 64):
        return None
    pad = size - n_events
    output_event = np.zeros(n_out, np.int32)
    output_power = np.zeros(n_out, np.int32)
    output_event[idx[~is_event]] = events_before
    output_power[idx[~is_event]] = power[n_events:]
    return _Powers(
        base=jnp.asarray(base),
        event_t=jnp.asarray(np.concatenate([event_t, np.full(pad, t[-1] if t.size else 0.0)])),
        event_kind=jnp.asarray(
            np.concatenate([kind[is_event], np.full(pad, _OUTPUT)]), dtype=jnp.int32
        ),
        event_index=jnp.asarray(
            np.concatenate([idx[is_event], np.zeros(pad, np.int32)]), dtype=jnp.int32
        ),
        event_valid=jnp.asarray(np.arange(size) < n_events),
        event_power=jnp.asarray(np.concatenate([power[:n_events], np.zeros(pad, np.int32)])),
        output_event=jnp.asarray(output_event),
        output_power=jnp.asarray(output_power),
        n_powers=bucket_size(int(power[:n_events].max(initial=0)) + 1, 8),
        n_output_steps=n_output_steps,
    )


class _Segments(eqx.Module):
    """A shared grid as the intervals between events, each with the outputs inside it.

    The ODE engine integrates each interval in one solve that steps onto and saves at its
    outputs, instead of one solve per output: far fewer solver restarts. Segment ``j`` ends
    at event ``j`` (``end_t``, ``kind``, ``index``; the last real one ends at the last output
    and does nothing there) and saves at ``save_t[j]`` (padded with ``end_t[j]``). Output
    ``i`` is slot ``output_slot[i]`` of segment ``output_segment[i]``.
    """

    end_t: Array
    kind: Array
    index: Array
    valid: Array
    save_t: Array
    output_segment: Array
    output_slot: Array


def _host_segments(t, kind, idx, n_out) -> _Segments:
    """:class:`_Segments` from the real sorted entries of a shared grid."""
    is_event = kind != _OUTPUT
    event_t = t[is_event]
    n_segments = event_t.size + 1
    segment = np.cumsum(is_event)[~is_event]  # events before each output
    counts = np.bincount(segment, minlength=n_segments)
    slot = np.arange(segment.size) - (np.cumsum(counts) - counts)[segment]
    size = bucket_size(n_segments, 8)
    end_t = np.full(size, t[-1] if t.size else 0.0)
    end_t[: event_t.size] = event_t
    save_t = np.repeat(end_t[:, None], bucket_size(int(counts.max(initial=1)), 4), axis=1)
    save_t[segment, slot] = t[~is_event]
    output_segment = np.zeros(n_out, np.int32)
    output_slot = np.zeros(n_out, np.int32)
    output_segment[idx[~is_event]] = segment
    output_slot[idx[~is_event]] = slot
    pad = size - event_t.size
    return _Segments(
        end_t=jnp.asarray(end_t),
        kind=jnp.asarray(np.concatenate([kind[is_event], np.full(pad, _OUTPUT)]), jnp.int32),
        index=jnp.asarray(np.concatenate([idx[is_event], np.zeros(pad, np.int32)]), jnp.int32),
        valid=jnp.asarray(np.arange(size) < event_t.size),
        save_t=jnp.asarray(save_t),
        output_segment=jnp.asarray(output_segment),
        output_slot=jnp.asarray(output_slot),
    )


def _walk_segments(span, steady_state, x0, doses: _Doses, plan: _Plan, dt0):
    """ODE walk over a shared grid's event intervals: ``span(x, r, t0, t1, save_t, dt)``
    integrates every subject from ``t0`` to ``t1``, returning the states at ``save_t``
    ``[subject, save, state]``, the state at ``t1``, the next step size and the status."""
    seg = plan.segments

    def step(w: _Walk, e):
        t_end, kind, k, ok, save_t = e
        t_new = jnp.maximum(w.t, t_end)  # padding segments end where the last one did
        saved, x, dt, status = span(w.x, w.r, w.t, t_new, save_t, w.cache)
        status = jnp.maximum(w.status, status)
        x_next, r, reset_t, status = _act_shared(
            x.T, w.r.T, w.reset_t, status, kind, k, ok, t_new[0], doses, plan, steady_state, x0
        )
        return _Walk(x_next.T, r.T, t_new, reset_t, status, dt), saved

    entries = (seg.end_t, seg.kind, seg.index, seg.valid, seg.save_t)
    w, saved = jax.lax.scan(step, _Walk.start(x0, dt0), entries)  # [segment, subject, save, state]
    return jnp.swapaxes(saved[seg.output_segment, :, seg.output_slot], 0, 1), w.status


def _output_positions(entry_t, entry_kind, entry_idx, n_out, xp=jnp):
    is_out = xp.isfinite(entry_t) & (entry_kind == _OUTPUT)
    if xp is np:
        position = np.zeros(n_out + 1, np.int32)
        position[np.where(is_out, entry_idx, n_out)] = np.arange(entry_t.shape[0], dtype=np.int32)
        return position[:n_out]
    return (
        jnp.zeros(n_out + 1, jnp.int32)
        .at[jnp.where(is_out, entry_idx, n_out)]
        .set(jnp.arange(entry_t.shape[0], dtype=jnp.int32))[:n_out]
    )


def _plan_in_jit(doses: _Doses, times, at_dose) -> _Plan:
    sub0 = jax.tree_util.tree_map(lambda a: a[:1], doses)
    t, kind, idx = (a[:, 0] for a in _entry_list(sub0, times[:1], at_dose))
    return _Plan(
        t=t,
        kind=kind,
        index=idx,
        valid=jnp.isfinite(t),
        output_position=_output_positions(t, kind, idx, times.shape[1]),
        step=None,
        steps=None,
        has_steady_state=True,
        has_infusion=True,
    )


_MAX_DISTINCT_STEPS = 64


@eqx.filter_jit
def _grid_facts(model, params, events, times, n, n_padded, at_dose):
    """Whether the cohort shares one grid, and what :func:`_host_plan` needs: subject 0's
    unsorted entries, whether it has SS=1 records, whether any subject has an infusion."""
    first = jax.tree_util.tree_map(lambda a: a[:1], (params, events, times))
    doses = _effective_doses(model, first[0], first[1])
    t, kind, idx, _ = _entry_blocks(doses, first[2], at_dose)
    padded = _pad_subjects((params, events, times), n, n_padded)
    if params.shape[0] == events.n_subjects == times.shape[0] == 1:
        shares = jnp.asarray(True)
    else:
        shares = _shares_grid(_effective_doses(model, padded[0], padded[1]), padded[2])
    infusion = jnp.any(((events.rate > 0) | (events.duration > 0)) & events.mask)
    return shares, t[0], kind[0], idx[0], jnp.any(doses.steady_state), infusion


def _host_plan(t, kind, idx, has_steady_state, has_infusion, *, n_outputs, segments) -> _Plan:
    """The shared entry list built once on the host, for concrete inputs on a shared grid."""
    order = np.argsort(t, kind="stable")
    t, kind, idx = t[order], kind[order], idx[order]
    real = np.isfinite(t)
    t, kind, idx = t[real], kind[real], idx[real]
    n_out = n_outputs
    position = _output_positions(t, kind, idx, n_out, xp=np)
    powers = _host_powers(t, kind, idx, n_out)
    # pad with entries that stay at the last time and record into no output
    size = max(32, -(-t.size // 32) * 32)
    pad = size - t.size
    last = t[-1] if t.size else 0.0
    valid = np.concatenate([np.ones(t.size, bool), np.zeros(pad, bool)])
    t = np.concatenate([t, np.full(pad, last)])
    kind = np.concatenate([kind, np.full(pad, _OUTPUT, np.int32)])
    idx = np.concatenate([idx, np.full(pad, n_out, np.int32)])
    h = np.diff(t, prepend=0.0)
    distinct = np.unique(np.concatenate([[0.0], h]))
    step = steps = None
    if distinct.size <= _MAX_DISTINCT_STEPS:
        steps = np.concatenate([distinct, np.zeros(bucket_size(distinct.size, 1) - distinct.size)])
        step = np.searchsorted(distinct, h).astype(np.int32)
    return _Plan(
        t=jnp.asarray(t),
        kind=jnp.asarray(kind, dtype=jnp.int32),
        index=jnp.asarray(idx, dtype=jnp.int32),
        valid=jnp.asarray(valid),
        output_position=jnp.asarray(position),
        step=None if step is None else jnp.asarray(step),
        steps=None if steps is None else jnp.asarray(steps),
        has_steady_state=bool(has_steady_state),
        has_infusion=bool(has_infusion),
        powers=powers,
        segments=_host_segments(t[valid], kind[valid], idx[valid], n_out) if segments else None,
    )


def _walk(
    propagate, steady_state, x0, params, doses: _Doses, times, at_dose, cache0, plan, run_time
):
    """Walk the sorted entries of all subjects, calling the engine's propagator between them.

    Returns the states at the output times, ``[subject, time, state]``, and the status.
    ``propagate(x, r, t0, t1, params, cache, shared)`` advances every subject; with
    ``shared`` the step ``t1 - t0`` is the same for all of them.

    A cohort whose subjects share output times and (effective) dose times takes a fast
    path that walks one entry list with scalar control flow; amounts, compartments and
    parameters may still differ per subject. With concrete inputs the caller decides and
    passes the host-built ``plan`` (or none: the general walk); with traced inputs
    (``run_time``, e.g. under ``jax.grad``) the choice is made at run time, at the cost of
    compiling both paths.
    """
    if plan is not None:  # concrete inputs on a shared grid
        return _walk_shared(propagate, steady_state, x0, params, doses, plan, cache0)
    general = lambda: _walk_general(  # noqa: E731
        propagate, steady_state, x0, params, doses, times, at_dose, cache0
    )
    if run_time:  # traced inputs: decided at run time, both paths compiled
        shared = lambda: _walk_shared(  # noqa: E731
            propagate, steady_state, x0, params, doses, _plan_in_jit(doses, times, at_dose), cache0
        )
        return jax.lax.cond(_shares_grid(doses, times), shared, general)
    return general()


def _shares_grid(doses: _Doses, times) -> Array:
    ends = jnp.where(doses.rate > 0, doses.time + doses.duration, jnp.inf)
    same = lambda a: jnp.all(a == a[:1])  # noqa: E731
    return same(times) & same(doses.time) & same(ends) & same(doses.steady_state)


def _act_shared(x, r, reset_t, status, kind, k, ok, t, doses: _Doses, plan, steady_state, x0):
    """What entry ``(kind, k)``, the same for every subject, does at time ``t`` to the state
    and input ``x, r`` laid out ``[state, subject]``."""
    n_states, n = x.shape
    k = jnp.where(ok, k, 0)
    onehot = jax.nn.one_hot(doses.compartment[:, k], n_states, dtype=x.dtype).T
    # one kind of entry per step: the others' terms are zero (no branches to pay for)
    is_dose = ok & (kind == _DOSE)
    x = x + onehot * jnp.where(is_dose & doses.bolus[:, k], doses.amount[:, k], 0.0)[None, :]
    if plan.has_infusion:
        rate = doses.rate[:, k]
        # an SS reset stops the infusions that started before it
        stop = (ok & (kind == _INFUSION_END)) & (doses.time[:, k] >= reset_t)
        previous = ok & (kind == _SS_PREVIOUS_END)
        change = jnp.where(is_dose, rate, 0.0) - jnp.where(stop | previous, rate, 0.0)
        r = r + onehot * change[None, :]
    if plan.has_steady_state:

        def reset(args):
            _, _, _, status = args
            x_ss, r_ss, ss_status = _steady_state_at_record(
                *steady_state, x0, doses, jnp.full(n, k), jnp.ones(n, bool)
            )
            return x_ss.T, r_ss.T, jnp.full(n, t), jnp.maximum(status, ss_status)

        x, r, reset_t, status = jax.lax.cond(
            ok & (kind == _SS_RESET), reset, lambda a: a, (x, r, reset_t, status)
        )
    return x, r, reset_t, status


def _walk_shared(propagate, steady_state, x0, params, doses: _Doses, plan: _Plan, cache0):
    if plan.step is None:
        plan = eqx.tree_at(
            lambda p: p.step, plan, jnp.zeros_like(plan.kind), is_leaf=lambda x: x is None
        )

    def step(w: _Walk, e):
        t_entry, kind, k, ok, u = e
        t_new = jnp.where(ok, t_entry, w.t)
        x, cache, status = propagate(w.x, w.r, w.t, t_new, params, w.cache, True, u)
        status = jnp.maximum(w.status, status)
        x_next, r, reset_t, status = _act_shared(
            x.T, w.r.T, w.reset_t, status, kind, k, ok, t_new[0], doses, plan, steady_state, x0
        )
        return _Walk(x_next.T, r.T, t_new, reset_t, status, cache), x

    w0 = _Walk.start(x0, cache0)
    entries = (plan.t, plan.kind, plan.index, plan.valid, plan.step)
    w, seen = jax.lax.scan(step, w0, entries)  # seen: [entry, subject, state]
    return jnp.swapaxes(seen[plan.output_position], 0, 1), w.status


def _walk_general(propagate, steady_state, x0, params, doses: _Doses, times, at_dose, cache0):
    n, n_out = times.shape
    n_states = x0.shape[1]
    rows = jnp.arange(n)
    entry_t, entry_kind, entry_idx = _entry_list(doses, times, at_dose)
    valid = jnp.isfinite(entry_t)
    ev = jnp.where(entry_kind == _OUTPUT, 0, entry_idx)
    per_entry = lambda a: a[rows[None, :], ev]  # noqa: E731  [entry, subject] view of a dose field
    is_dose = valid & (entry_kind == _DOSE)
    # everything an entry does, gathered once outside the loop
    entries = dict(
        t=entry_t,
        valid=valid,
        is_ss=valid & (entry_kind == _SS_RESET),
        ev=ev,
        cmt=per_entry(doses.compartment),
        bolus=jnp.where(is_dose & per_entry(doses.bolus), per_entry(doses.amount), 0.0),
        start=jnp.where(is_dose, per_entry(doses.rate), 0.0),
        stop=jnp.where(valid & (entry_kind == _INFUSION_END), per_entry(doses.rate), 0.0),
        previous_stop=jnp.where(
            valid & (entry_kind == _SS_PREVIOUS_END), per_entry(doses.rate), 0.0
        ),
        started=per_entry(doses.time),
    )

    def step(w: _Walk, e):
        t_new = jnp.where(e["valid"], e["t"], w.t)
        x, cache, status = propagate(w.x, w.r, w.t, t_new, params, w.cache, False, None)
        seen = x  # the state an output at this entry records
        status = jnp.maximum(w.status, status)
        r, reset_t, is_ss = w.r, w.reset_t, e["is_ss"]

        def reset(args):
            x, r, reset_t, status = args
            x_ss, r_ss, ss_status = _steady_state_at_record(
                *steady_state, x0, doses, e["ev"], is_ss
            )
            x = jnp.where(is_ss[:, None], x_ss, x)
            r = jnp.where(is_ss[:, None], r_ss, r)
            reset_t = jnp.where(is_ss, t_new, reset_t)
            status = jnp.where(is_ss, jnp.maximum(status, ss_status), status)
            return x, r, reset_t, status

        x, r, reset_t, status = jax.lax.cond(
            jnp.any(is_ss), reset, lambda a: a, (x, r, reset_t, status)
        )
        onehot = jax.nn.one_hot(e["cmt"], n_states, dtype=x.dtype)
        # an SS reset stops the infusions that started before it
        stop = jnp.where(e["started"] >= reset_t, e["stop"], 0.0)
        x = x + onehot * e["bolus"][:, None]
        r = r + onehot * (e["start"] - stop - e["previous_stop"])[:, None]
        return _Walk(x, r, t_new, reset_t, status, cache), seen

    w0 = _Walk.start(x0, cache0)
    w, seen = jax.lax.scan(step, w0, entries)  # seen: [entry, subject, state]
    # position of each output in the sorted entry list
    is_out = valid & (entry_kind == _OUTPUT)
    position = (
        jnp.zeros((n, n_out + 1), jnp.int32)
        .at[rows[None, :], jnp.where(is_out, entry_idx, n_out)]
        .set(
            jnp.broadcast_to(jnp.arange(entry_t.shape[0], dtype=jnp.int32)[:, None], entry_t.shape)
        )[:, :n_out]
    )
    return seen[position, rows[:, None]], w.status


def _observe(model: ODEModel, params, states, status):
    outputs = jax.vmap(model.observe)(states, params)
    finite = jnp.all(jnp.isfinite(outputs), axis=(1, 2)) & jnp.all(
        jnp.isfinite(states), axis=(1, 2)
    )
    status = jnp.where(
        (status == SolveStatus.SUCCESS) & ~finite, int(SolveStatus.NONFINITE), status
    )
    return _failed_as_nan(outputs, status), status


def _failed_as_nan(outputs, status):
    """``outputs [subject, time, output]`` with NaN for every subject whose solve failed."""
    return jnp.where((status == SolveStatus.SUCCESS)[:, None, None], outputs, jnp.nan)


# --------------------------------------------------------------------------- linear engine


def _propagators(a: Float[Array, "state state"], h: Float[Array, ""]):
    """``Φ = e^{Ah}`` and ``Ψ = ∫₀ʰ e^{As} ds`` from one exponential of ``[[A, I], [0, 0]]``."""
    n = a.shape[0]
    aug = (
        jnp.zeros((2 * n, 2 * n), a.dtype)
        .at[:n, :n]
        .set(a)
        .at[:n, n:]
        .set(jnp.eye(n, dtype=a.dtype))
    )
    e = expm(aug * h)
    return e[:n, :n], e[:n, n:]


def _cached_propagate(a, x, r, t0, t1, _params, cache, shared, u):
    """Exact step with propagators cached per subject, recomputed (for the whole batch, one
    branch of a ``lax.cond``) only when some subject's step length changes."""
    n = x.shape[0]
    h = t1 - t0
    moving = h > 0

    def recompute(c: _LinearCache):
        h_use = jnp.where(moving, h, jnp.where(jnp.isfinite(c.h), c.h, 1.0))
        phi, psi = jax.vmap(_propagators)(a, h_use)
        return _LinearCache(h_use, phi, psi)

    stale = jnp.any(moving & (h != cache.h))
    cache = jax.lax.cond(stale, recompute, lambda c: c, cache)
    x_new = jnp.sum(cache.phi * x[:, None, :], axis=-1)
    # most steps run no infusion: skip reading the input propagator then
    x_new = jax.lax.cond(
        jnp.any(r != 0),
        lambda: x_new + jnp.sum(cache.psi * r[:, None, :], axis=-1),
        lambda: x_new,
    )
    return jnp.where(moving[:, None], x_new, x), cache, jnp.zeros(n, jnp.int32)


class _LinearCache(eqx.Module):
    h: Array
    phi: Array
    psi: Array


def _solve_in_blocks(model: ODEModel, params, events, times, *, n, method, options, keep_states):
    """Outputs (and states) of ``n`` subjects, padded and run in blocks of at most 256."""
    return _solve_padded(
        model, params, events, times, jnp.asarray(n), padded_size(n),
        method=method, options=options, keep_states=keep_states,
    )  # fmt: skip


@eqx.filter_jit
def _solve_padded(model, params, events, times, n, n_padded, *, method, options, keep_states):
    params, events, times = _pad_subjects((params, events, times), n, n_padded)
    solve = {
        "linear": _solve_linear, "ode": _solve_ode, "split": _solve_split,
        "semilinear": _solve_semilinear,
    }[method]  # fmt: skip

    def block(args):
        p, ev, tm = args
        if method == "semilinear":  # outputs observed on the grid, states only if kept
            return solve(model, p, ev, tm, keep_states=keep_states, **options)
        states, status = solve(model, p, ev, tm, **options)
        outputs, status = _observe(model, p, states, status)
        return outputs, (states if keep_states else None), status

    return map_in_blocks(block, (params, events, times))


def map_in_blocks(fn, tree):
    """``fn`` over the ``[subject, ...]`` leaves of ``tree`` (a padded size, see
    :func:`padded_size`) in blocks of at most 256 subjects, one after the other."""
    n_padded = jax.tree_util.tree_leaves(tree)[0].shape[0]
    if n_padded <= _BLOCK:
        return fn(tree)
    blocks = lambda a: a.reshape((n_padded // _BLOCK, _BLOCK, *a.shape[1:]))  # noqa: E731
    result = jax.lax.map(fn, jax.tree_util.tree_map(blocks, tree))
    return jax.tree_util.tree_map(lambda a: a.reshape((n_padded, *a.shape[2:])), result)


def _solve_linear(model: ODEModel, params, events, times, *, at_dose, plan, run_time):
    a = jax.vmap(model.system_matrix)(params)
    n, n_states = params.shape[0], model.n_states
    doses = _effective_doses(model, params, events)
    x0 = jax.vmap(model.initial_state)(params)

    if plan is not None and plan.steps is not None:
        # every distinct step of the shared grid, once: [step, subject, state, state]
        phi_table, psi_table = jax.vmap(lambda h: jax.vmap(_propagators, in_axes=(0, None))(a, h))(
            plan.steps
        )

        def propagate(x, r, t0, t1, _params, cache, shared, u):
            x_new = jnp.sum(phi_table[u] * x[:, None, :], axis=-1)
            if plan.has_infusion:
                x_new = x_new + jnp.sum(psi_table[u] * r[:, None, :], axis=-1)
            return x_new, cache, jnp.zeros(n, jnp.int32)
    else:
        propagate = functools.partial(_cached_propagate, a)

    def cycle(x, bolus, rate, duration, h):
        """State ``h`` after a dose arrives on ``x`` (exact)."""

        def one(a_i, x_i, b_i, r_i, d, h_i):
            on = jnp.minimum(d, h_i)
            phi_on, psi_on = _propagators(a_i, on)
            phi_off, _ = _propagators(a_i, h_i - on)
            return phi_off @ (phi_on @ (x_i + b_i) + psi_on @ r_i)

        return jax.vmap(one)(a, x, bolus, rate, duration, h)

    def fixed_point(bolus, rate, duration, tau, _x_initial):
        """Pre-dose steady state: ``x = Φ(τ) x + cycle(0, τ)``, solved exactly."""
        phi_tau = jax.vmap(_propagators)(a, tau)[0]
        after_one = cycle(jnp.zeros_like(bolus), bolus, rate, duration, tau)
        eye = jnp.eye(n_states, dtype=a.dtype)
        x_ss = jnp.linalg.solve(eye - phi_tau, after_one[..., None])[..., 0]
        bad = ~jnp.all(jnp.isfinite(x_ss), axis=1) | ~jax.vmap(_contracts)(phi_tau)
        return x_ss, jnp.where(bad, int(SolveStatus.STEADY_STATE_FAILED), 0)

    cache0 = _LinearCache(
        h=jnp.full(n, jnp.nan),
        phi=jnp.zeros((n, n_states, n_states)),
        psi=jnp.zeros((n, n_states, n_states)),
    )
    if plan is not None and plan.powers is not None:
        return _linear_by_powers(a, x0, doses, plan, (cycle, fixed_point))
    return _walk(
        propagate, (cycle, fixed_point), x0, params, doses, times, at_dose, cache0, plan, run_time
    )


def _matvec(m: Array, v: Array) -> Array:
    """``m @ v`` for ``m [..., i, j, subject]`` and ``v [..., j, subject]``, written out term by
    term: small matrices over a long subject axis vectorise far better than a reduction."""
    n = v.shape[-2]
    rows = [sum(m[..., i, j, :] * v[..., j, :] for j in range(n)) for i in range(n)]
    return jnp.stack(rows, axis=-2)


def _linear_by_powers(a, x0, doses: _Doses, plan: _Plan, steady_state):
    """Linear engine on a grid of whole base steps: walk the events, then every output at once.

    ``Φ(kh) = Φ(h)^k`` and ``Ψ(kh) = Σ_{i<k} Φ(h)^i Ψ(h)`` come from one matrix exponential
    per subject and ``k`` small matrix products, exact up to rounding. Output ``i`` lies
    ``k_i`` base steps after event ``e_i``; stepping the states after all events together,
    ``z_k = Φ(h) z_{k-1} + Ψ(h) r_e``, yields every output without a loop over outputs.
    """
    powers = plan.powers
    n, n_states = x0.shape
    if plan.has_infusion:
        phi_h, psi_h = jax.vmap(_propagators, in_axes=(0, None))(a, powers.base)
    else:  # no input propagator needed: a smaller exponential
        phi_h, psi_h = jax.vmap(lambda a_i: expm(a_i * powers.base))(a), jnp.zeros_like(a)

    def next_power(carry, _):
        phi_k, psi_k = carry
        return (phi_k @ phi_h, psi_k + phi_k @ psi_h), carry

    eye = jnp.broadcast_to(jnp.eye(n_states, dtype=a.dtype), a.shape)
    _, (phi, psi) = jax.lax.scan(next_power, (eye, jnp.zeros_like(a)), length=powers.n_powers)
    # subject as the last, contiguous axis: XLA vectorises the small matrix products over it
    phi, psi = jnp.moveaxis(phi, 1, -1), jnp.moveaxis(psi, 1, -1)  # [power, state, state, subject]
    phi_h, psi_h = jnp.moveaxis(phi_h, 0, -1), jnp.moveaxis(psi_h, 0, -1)

    def step(carry, e):
        x, r, reset_t, status = carry  # x, r: [state, subject]
        t, kind, k, ok, g = e
        x_new = _matvec(phi[g], x)
        if plan.has_infusion:
            x_new = x_new + _matvec(psi[g], r)
        x, r, reset_t, status = _act_shared(
            x_new, r, reset_t, status, kind, k, ok, t, doses, plan, steady_state, x0
        )
        return (x, r, reset_t, status), (x, r)

    start = (x0.T, jnp.zeros_like(x0.T), jnp.full(n, -jnp.inf, x0.dtype), jnp.zeros(n, jnp.int32))
    entries = (
        powers.event_t,
        powers.event_kind,
        powers.event_index,
        powers.event_valid,
        powers.event_power,
    )
    (_, _, _, status), (x_after, r_after) = jax.lax.scan(step, start, entries)
    x_after = jnp.concatenate([x0.T[None], x_after])  # [event + 1, state, subject]
    r_after = jnp.concatenate([jnp.zeros_like(x0.T)[None], r_after])
    input_step = _matvec(psi_h, r_after) if plan.has_infusion else None

    def output_step(z, _):
        # one base step from every event's state at once
        z_next = _matvec(phi_h, z)
        return (z_next if input_step is None else z_next + input_step), z

    _, stepped = jax.lax.scan(output_step, x_after, length=powers.n_output_steps)
    # [time, state, subject] -> [subject, time, state]
    picked = stepped[powers.output_power, powers.output_event]  # [time, state, subject]
    # the barrier keeps XLA from folding the transpose into the loop's layout (4x slower)
    states = jnp.moveaxis(jax.lax.optimization_barrier(picked), -1, 0)
    return states, status


# --------------------------------------------------------------------------- split engine


#: the split engine integrates the whole horizon in one solve: its step budget is that of
#: this many segments of the walking engine
_SPLIT_STEP_FACTOR = 16


def _solve_split(
    model: ODEModel, params, events, times, *, at_dose, rtol, atol, max_steps, solver,
    sensitivity="reverse",
):  # fmt: skip
    """The split engine (:mod:`._split`): source compartments exact, one solve for the rest."""
    doses = _effective_doses(model, params, events)
    states, status = solve_split(
        model, params, doses, times, rtol=rtol, atol=atol,
        max_steps=max_steps * _SPLIT_STEP_FACTOR, solver=_SOLVERS[solver](),
        adjoint=_SENSITIVITIES[sensitivity](), at_dose=at_dose,
    )  # fmt: skip
    status = jnp.where(supported_doses(model, doses), status, int(SolveStatus.UNSUPPORTED_DOSE))
    return states, status.astype(jnp.int32)


def _solve_semilinear(model: ODEModel, params, events, times, *, at_dose, step, n_steps,
                      keep_states):  # fmt: skip
    """The semilinear engine (:mod:`._semilinear`): exact PK, exponential integrator for
    the driven part on a uniform grid; it observes the outputs as it goes (NaN for a
    subject whose solve failed)."""
    doses = _effective_doses(model, params, events)
    outputs, states, status = solve_semilinear(
        model, params, doses, times, step=step, n_steps=n_steps, at_dose=at_dose,
        keep_states=keep_states,
    )  # fmt: skip
    return _failed_as_nan(outputs, status), states, status


def semilinear_outputs(model: ODEModel, params, events: DosingEvents, times, *, step,
                       at_dose: str = "pre"):  # fmt: skip
    """Outputs ``[subject, time, output]`` of the semilinear engine at a few output times,
    for a patient twin's likelihood inside a compiled program.

    Unlike :func:`simulate` with ``method="semilinear"`` it runs node by node to the last
    output time, whatever the horizon (the step may be traced: one compilation serves
    every grid and history of the same padded sizes), keeps only the outputs, and does
    not pad subjects to blocks of 32 (the bitwise batch invariance that buys costs 32× the
    work for one subject) nor check its inputs. Forward-mode differentiable (``jvp``,
    ``jacfwd``).

    ``params`` ``[subject, P]`` in model order, ``events`` one row per subject, ``times``
    ``[subject, time]`` on the grid of ``step`` (see
    :func:`~twinsim.simulators.semilinear_grid`). A subject whose doses or times the grid
    cannot take, or whose solve is not finite, gets NaN outputs.
    """
    return _solve_semilinear(
        model, params, events, times, at_dose=at_dose, step=step, n_steps=None,
        keep_states=False,
    )[0]  # fmt: skip


def semilinear_segment(model: ODEModel, params, events: DosingEvents, times, *, step,
                       stop, start: SemilinearState | None = None):  # fmt: skip
    """One piece of a semilinear run whose doses are decided along the way (a titrated
    trial): from ``start`` (the state a previous piece stopped at; ``None``: time 0) to node
    ``stop`` ``[subject]`` (``time / step``), before that node's doses.

    Returns ``(outputs, status, state)``: outputs ``[subject, time, output]`` at the output
    times of the piece (pre-dose; NaN elsewhere and for a failed subject), the status per
    subject and the :class:`~twinsim.simulators.SemilinearState` to start the next piece
    from. The pieces take the same steps as one run from 0 with the doses as finally
    given, as long as a piece changes only doses from its start on. ``params``, ``events``,
    ``times`` and ``step`` as in :func:`semilinear_outputs`; ``stop`` may be traced.
    """
    n = params.shape[0]
    stop = jnp.broadcast_to(jnp.asarray(stop, jnp.int32), (n,))
    # padded to 32 and run in blocks as `simulate` does: a subject's bits do not depend
    # on the batch (a trial's chunk size)
    padded = _pad_subjects((params, events, times, stop, start), jnp.asarray(n), padded_size(n))

    def block(args):
        p, ev, tm, last, first = args
        outputs, _, status, state = solve_semilinear(
            model, p, _effective_doses(model, p, ev), tm, step=step, n_steps=None,
            at_dose="pre", keep_states=False, start=first, stop=last,
        )  # fmt: skip
        return _failed_as_nan(outputs, status), status, state

    return jax.tree_util.tree_map(lambda a: a[:n], map_in_blocks(block, padded))


# --------------------------------------------------------------------------- ODE engine

#: how derivatives of a solve are taken: reverse mode checkpoints the steps; forward mode
#: pushes tangents along (cheaper to compile, and cheap for a few parameters)
_SENSITIVITIES = {"reverse": diffrax.RecursiveCheckpointAdjoint, "forward": diffrax.ForwardMode}
_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri8": diffrax.Dopri8, "kvaerno5": diffrax.Kvaerno5}


class _StartStep(diffrax.AbstractAdaptiveStepSizeController):
    """An adaptive controller whose first step is ``dt0`` held here, not ``diffeqsolve``'s.

    ``diffeqsolve`` checks a traced ``dt0`` (``(t1 - t0) * dt0 >= 0``) with
    ``equinox.error_if``, which puts a host callback into the compiled program, and JAX
    never writes a program with host callbacks to its persistent compilation cache: every
    ODE program would be compiled again by every process. The scaled segments integrate
    over the constant ``s`` in [0, 1], so with a constant ``dt0`` passed to ``diffeqsolve``
    (:data:`_CONSTANT_DT0`) its check is decided at trace time, and the step the walk carries
    from segment to segment comes in here. The steps taken are the same as before.
    """

    controller: diffrax.AbstractAdaptiveStepSizeController
    dt0: Array

    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):
        return self.controller.norm

    def wrap(self, direction):
        return _StartStep(self.controller.wrap(direction), self.dt0 * direction)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        del dt0  # the constant stand-in; the real first step is ours
        return self.controller.init(terms, t0, t1, y0, self.dt0, args, func, error_order)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        return self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state
        )


#: ``dt0`` given to ``diffeqsolve`` with :class:`_StartStep` (any positive constant).
_CONSTANT_DT0 = 1.0


def _solve_ode(
    model: ODEModel,
    params,
    events,
    times,
    *,
    at_dose,
    rtol,
    atol,
    max_steps,
    solver,
    strategy,
    plan,
    run_time,
    sensitivity="reverse",
):
    n = params.shape[0]
    doses = _effective_doses(model, params, events)
    x0 = jax.vmap(model.initial_state)(params)
    solve_adjoint = _SENSITIVITIES[sensitivity]()
    term = diffrax.ODETerm(lambda t, y, args: model.vector_field(t, y, args[0]) + args[1])
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    ode_solver = _SOLVERS[solver]()
    tableau = tableau_of(ode_solver) if strategy == "lockstep" else None
    batch_term = diffrax.ODETerm(
        lambda t, y, args: (
            jax.vmap(model.vector_field, in_axes=(None, 0, 0))(t, y, args[0]) + args[1]
        )
    )
    scaled_batch_term = diffrax.ODETerm(
        lambda s, y, args: (
            args[3]
            * (
                jax.vmap(model.vector_field, in_axes=(None, 0, 0))(
                    args[2] + s * args[3], y, args[0]
                )
                + args[1]
            )
        )
    )
    batch_controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=optx.max_norm)
    # a segment [t0, t1] integrated on s in [0, 1], t = t0 + s (t1 - t0): where the steps fall
    # does not move with t0 or t1, so derivatives with respect to event times (lags, infusion
    # ends) are those of one fixed discretisation
    scaled_term = diffrax.ODETerm(
        lambda s, y, args: (
            args[3] * (model.vector_field(args[2] + s * args[3], y, args[0]) + args[1])
        )
    )

    def segment(x, r, t0, t1, p, dt0, adjoint=solve_adjoint):
        """Integrate one subject from t0 to t1 with constant infusion input r."""
        moving = t1 > t0
        t1_safe = jnp.where(moving, t1, t0 + 1e-6)  # a one-step dummy solve, discarded
        span = t1_safe - t0
        sol = diffrax.diffeqsolve(
            scaled_term,
            ode_solver,
            0.0,
            1.0,
            _CONSTANT_DT0,
            x,
            args=(p, r, t0, span),
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=_StartStep(
                controller, jax.lax.stop_gradient(jnp.minimum(dt0 / span, 1.0))
            ),
            max_steps=max_steps,
            throw=False,
            adjoint=adjoint,
        )
        steps = jnp.maximum(sol.stats["num_accepted_steps"], 1)
        x_new = jnp.where(moving, sol.ys[-1], x)
        status = jnp.where(moving, _status_of(sol.result), 0)
        # a sliver of a segment (an entry an ulp before the next) says nothing about the step
        # size; carried on, a step below the spacing of floats near t would never advance
        meaningful = moving & (t1_safe - t0 > 1e-9 * jnp.maximum(1.0, jnp.abs(t1_safe)))
        dt_next = jax.lax.stop_gradient(jnp.where(meaningful, (t1_safe - t0) / steps, dt0))
        return x_new, status, dt_next

    def propagate(x, r, t0, t1, p, dt0, shared, _u):
        def each_subject(_):
            if strategy == "lockstep":
                x_new, status, dt_next = lockstep_segment(
                    model.vector_field, tableau, x, r, t0, t1, p, dt0,
                    rtol=rtol, atol=atol, max_steps=max_steps,
                )  # fmt: skip
            else:
                x_new, status, dt_next = jax.vmap(segment)(x, r, t0, t1, p, dt0)
            return x_new, dt_next, status

        def whole_batch(_):
            # One solve of the stacked cohort; the max norm holds every subject to the
            # tolerance. If it fails, solve each subject alone so failures stay per subject.
            ta, tb = t0[0], t1[0]
            sol = diffrax.diffeqsolve(
                scaled_batch_term,
                ode_solver,
                0.0,
                1.0,
                _CONSTANT_DT0,
                x,
                args=(p, r, ta, tb - ta),
                saveat=diffrax.SaveAt(t1=True),
                stepsize_controller=_StartStep(
                    batch_controller,
                    jax.lax.stop_gradient(jnp.minimum(jnp.min(dt0) / (tb - ta), 1.0)),
                ),
                max_steps=max_steps,
                throw=False,
                adjoint=solve_adjoint,
            )
            steps = jnp.maximum(sol.stats["num_accepted_steps"], 1)
            done = (sol.ys[-1], jnp.full(n, (tb - ta) / steps), jnp.zeros(n, jnp.int32))
            return jax.lax.cond(
                sol.result == diffrax.RESULTS.successful, lambda _: done, each_subject, None
            )

        def stay(_):
            return x, dt0, jnp.zeros(n, jnp.int32)

        move = whole_batch if (shared and strategy == "batch") else each_subject
        return jax.lax.cond(jnp.any(t1 > t0), move, stay, None)

    def span_one(x, r, t0, t1, save_t, p, dt0):
        """One subject from t0 to t1, stepping onto and saving at ``save_t``."""
        moving = t1 > t0
        t1_safe = jnp.where(moving, t1, t0 + 1e-6)
        save_t = jnp.clip(save_t, t0, t1_safe)
        sol = diffrax.diffeqsolve(
            term,
            ode_solver,
            t0,
            t1_safe,
            jnp.minimum(dt0, t1_safe - t0),
            x,
            args=(p, r),
            saveat=diffrax.SaveAt(ts=save_t, t1=True),
            stepsize_controller=diffrax.ClipStepSizeController(controller, step_ts=save_t),
            max_steps=max_steps,
            throw=False,
            adjoint=solve_adjoint,
        )
        steps = jnp.maximum(sol.stats["num_accepted_steps"], 1)
        saved = jnp.where(moving, sol.ys[:-1], x)
        x_new = jnp.where(moving, sol.ys[-1], x)
        status = jnp.where(moving, _status_of(sol.result), 0)
        meaningful = moving & (t1_safe - t0 > 1e-9 * jnp.maximum(1.0, jnp.abs(t1_safe)))
        dt_next = jax.lax.stop_gradient(jnp.where(meaningful, (t1_safe - t0) / steps, dt0))
        return saved, x_new, dt_next, status

    def span(x, r, t0, t1, save_t, dt0):
        """Every subject over one event interval of a shared grid (see ``_walk_segments``)."""

        def each_subject(_):
            return jax.vmap(span_one, in_axes=(0, 0, 0, 0, None, 0, 0))(
                x, r, t0, t1, save_t, params, dt0
            )

        def whole_batch(_):
            ta, tb = t0[0], t1[0]
            sol = diffrax.diffeqsolve(
                batch_term,
                ode_solver,
                ta,
                tb,
                jnp.minimum(jnp.min(dt0), tb - ta),
                x,
                args=(params, r),
                saveat=diffrax.SaveAt(ts=jnp.clip(save_t, ta, tb), t1=True),
                stepsize_controller=diffrax.ClipStepSizeController(
                    batch_controller, step_ts=jnp.clip(save_t, ta, tb)
                ),
                max_steps=max_steps,
                throw=False,
                adjoint=solve_adjoint,
            )
            steps = jnp.maximum(sol.stats["num_accepted_steps"], 1)
            done = (
                jnp.swapaxes(sol.ys[:-1], 0, 1),
                sol.ys[-1],
                jnp.full(n, (tb - ta) / steps),
                jnp.zeros(n, jnp.int32),
            )
            return jax.lax.cond(
                sol.result == diffrax.RESULTS.successful, lambda _: done, each_subject, None
            )

        def stay(_):
            g = save_t.shape[0]
            return jnp.broadcast_to(x[:, None], (n, g, x.shape[1])), x, dt0, jnp.zeros(n, jnp.int32)

        move = whole_batch if strategy == "batch" else each_subject
        return jax.lax.cond(jnp.any(t1 > t0), move, stay, None)

    def cycle(x, bolus, rate, duration, h, adjoint=solve_adjoint):
        """State ``h`` after a dose arrives on ``x``: infusion on for ``min(duration, h)``."""

        def one(p_i, x_i, b_i, r_i, d, h_i):
            on = jnp.minimum(d, h_i)
            y, _, _ = segment(x_i + b_i, r_i, 0.0, on, p_i, jnp.asarray(0.1), adjoint)
            y, _, _ = segment(y, jnp.zeros_like(y), on, h_i, p_i, jnp.asarray(0.1), adjoint)
            return y

        return jax.vmap(one)(params, x, bolus, rate, duration, h)

    def fixed_point(bolus, rate, duration, tau, x_initial):
        """Pre-dose steady state by Newton's method on the one-interval map."""

        def residual(x, args):
            p_i, b_i, r_i, d, tau_i = args
            # Newton needs forward-mode derivatives of the solve
            on = jnp.minimum(d, tau_i)
            fwd = diffrax.DirectAdjoint()  # forward and reverse mode both work
            y, _, _ = segment(x + b_i, r_i, 0.0, on, p_i, jnp.asarray(0.1), fwd)
            y, _, _ = segment(y, jnp.zeros_like(y), on, tau_i, p_i, jnp.asarray(0.1), fwd)
            return y - x

        # the map is only as smooth as the solver's tolerance (its steps move with x):
        # asking Newton for more than that may never converge
        newton = optx.Newton(rtol=max(rtol, 1e-10), atol=max(atol, 1e-12))

        def one(p_i, b_i, r_i, d, tau_i, x0_i):
            x, ok = _implicit_root(residual, newton, x0_i, (p_i, b_i, r_i, d, tau_i))
            return x, jnp.where(ok, 0, int(SolveStatus.STEADY_STATE_FAILED))

        return jax.vmap(one)(params, bolus, rate, duration, tau, x_initial)

    # one solve per event interval pays for a stacked cohort; per-subject (vmapped) solves
    # save at outputs more cheaply by ending a solve at each (measured, benchmarks/)
    if plan is not None and plan.segments is not None and strategy == "batch":
        return _walk_segments(span, (cycle, fixed_point), x0, doses, plan, jnp.full(n, 0.01))
    return _walk(
        propagate,
        (cycle, fixed_point),
        x0,
        params,
        doses,
        times,
        at_dose,
        jnp.full(n, 0.01),
        plan,
        run_time,
    )
