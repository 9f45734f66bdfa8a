"""The split ODE engine: dose compartments in closed form, the rest in one adaptive solve.

Many drug models take their doses into a *source* compartment — a depot with no inflow,
emptied at a constant first-order rate, ``dy_d/dt = −k y_d`` — and every other state is
continuous in time (warfarin: oral depot → 2-compartment PK → inhibition → transit chains
→ INR). Then the depot is known exactly at any time,

    ``y_d(t) = y_d(t_j⁺) e^{−k (t − t_j)}``,  ``y_d(t_j⁺) = y_d(t_{j−1}⁺) e^{−k (t_j − t_{j−1})} + a_j``

for the last dose ``j`` before ``t``, and the remaining states never jump: one adaptive
solve over the whole horizon integrates them, stepping onto every dose time (where their
derivative has a kink) and reading every output time off the solver's dense interpolant.

There is no event walk — no solver restart at each output, no branch on the kind of
entry, nothing that a vectorised program must evaluate on both sides — so the path is
cheap inside ``jit``, ``vmap`` and ``grad`` alike. :func:`source_compartments` finds the
eligible compartments of a model from its right-hand side, so a model needs no extra
declaration; :func:`split_eligible` says whether a dosing table fits (boluses into
source compartments, no SS=1 records, no infusions).
"""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ._events import DosingEvents
from ._model import ODEModel

__all__ = []

#: random points at which a compartment's equation is checked (two parameter sets, two
#: states, two times): structural zeros are exact zeros of the Jacobian at any point
_PROBE_SEED = 20261204

#: outputs per solve: the horizon is integrated in solves of this many output times, one
#: after another. A vectorised solve carries its save buffer through every step (a batched
#: loop selects the whole carry), so one solve saving thousands of times costs more than
#: the integration itself (measured: 3,025 half-hourly warfarin outputs, 60 % of the time)
_CHUNK = 32


def probe(model: ODEModel, seed: int):
    """The right-hand side's Jacobian and value at random points — two parameter sets ``i``,
    two states ``j``, two times ``k`` (0.3 and 1.7 h), every value in [0.5, 2] — keyed
    ``(i, j, k)``, and the states (numpy). Structural zeros are exact zeros of the Jacobian
    at any point, so the engines read a model's structure from them."""
    rng = np.random.default_rng(seed)
    n, p_count = model.n_states, model.n_parameters
    params = [rng.uniform(0.5, 2.0, p_count) for _ in range(2)]
    ys = [rng.uniform(0.5, 2.0, n) for _ in range(2)]
    times = np.array([0.3, 1.7])

    def at(p, y, t):
        f = lambda y_: model.vector_field(t, y_, p)  # noqa: E731
        return jax.jacfwd(f)(y), f(y)

    # every point in one compiled program (cached on disk with the others): evaluated op
    # by op, the probe compiled ~100 tiny programs, 1.3 s of a warfarin twin's first fit
    points = jax.vmap(jax.vmap(jax.vmap(at, (None, None, 0)), (None, 0, None)), (0, None, None))
    with jax.ensure_compile_time_eval():  # concrete even when asked inside a trace
        jac, val = jax.jit(points)(np.stack(params), np.stack(ys), times)
    jac, val = np.asarray(jac), np.asarray(val)
    keys = [(i, j, k) for i in range(2) for j in range(2) for k in range(2)]
    return {key: jac[key] for key in keys}, {key: val[key] for key in keys}, ys


@functools.lru_cache(maxsize=64)
def source_compartments(model: ODEModel) -> tuple[int, ...]:
    """States ``d`` whose equation is ``dy_d/dt = −k(p) y_d``: no other state, no time, no
    constant term (a depot). Found from the right-hand side at random points; a model for
    which any check fails has none (and the general engine serves it)."""
    n = model.n_states
    found = []
    jacobians, values, ys = probe(model, _PROBE_SEED)
    for d in range(n):
        ok = True
        for i in range(2):
            rates = [jacobians[i, j, k][d, d] for j in range(2) for k in range(2)]
            for (_, j, k), jac in ((key, v) for key, v in jacobians.items() if key[0] == i):
                row = np.delete(jac[d], d)
                linear = np.isclose(values[i, j, k][d], jac[d, d] * ys[j][d], rtol=1e-12, atol=0)
                ok &= bool(np.all(row == 0) and linear and np.isfinite(jac[d, d]))
            ok &= bool(np.all(np.asarray(rates) == rates[0]))
        if ok:
            found.append(d)
    return tuple(found)


def status_of(result) -> jax.Array:
    """A diffrax result as a :class:`~twinsim.simulators.SolveStatus` code (0 success,
    1 max steps, 3 other failure)."""
    return jnp.where(
        result == diffrax.RESULTS.successful,
        0,
        jnp.where(result == diffrax.RESULTS.max_steps_reached, 1, 3),
    ).astype(jnp.int32)


def split_eligible(model: ODEModel, events: DosingEvents) -> bool:
    """Whether ``events`` (concrete) suit the split engine for ``model``: every dose is a
    bolus into a source compartment, none is SS=1, and some state is left to integrate."""
    sources = source_compartments(model)
    if model.linear or not sources or len(sources) == model.n_states:
        return False
    mask = np.asarray(events.mask)
    cmt = np.asarray(events.compartment)[mask]
    infusion = (np.asarray(events.rate)[mask] > 0) | (np.asarray(events.duration)[mask] > 0)
    steady = np.asarray(events.steady_state)[mask]
    return bool(np.all(np.isin(cmt, sources)) and not infusion.any() and not steady.any())


def supported_doses(model: ODEModel, doses) -> jax.Array:
    """Per subject, whether every (effective) dose suits the split engine (traced check)."""
    sources = jnp.asarray(source_compartments(model), jnp.int32)
    into_source = jnp.any(doses.compartment[..., None] == sources, axis=-1)
    fits = into_source & doses.bolus & ~doses.steady_state
    return jnp.all(fits | ~doses.mask, axis=-1)


def solve_split(model: ODEModel, params, doses, times, *, rtol, atol, max_steps, solver,
                adjoint, at_dose):  # fmt: skip
    """States ``[subject, time, state]`` and the status code per subject.

    ``doses`` are the effective doses (after bioavailability and lag) of the engines;
    a dose that is not a bolus into a source compartment is ignored here (the caller
    reports such subjects as failed).
    """
    sources = source_compartments(model)
    n_states = model.n_states
    rest = np.array([s for s in range(n_states) if s not in sources])
    post_dose = at_dose == "post"

    def one(p, dose, times_row):
        x0 = model.initial_state(p)
        order = jnp.argsort(dose.time)
        t_sorted = dose.time[order]  # padding (inf) last
        finite = jnp.isfinite(t_sorted)
        gap = jnp.where(finite, t_sorted - jnp.concatenate([t_sorted[:1], t_sorted[:-1]]), 0.0)
        rates, after = [], []
        for c in sources:
            unit = jnp.zeros(n_states, p.dtype).at[c].set(1.0)
            # the rate constant: the equation is linear in y_c alone (checked)
            rate = model.vector_field(jnp.zeros((), p.dtype), unit, p)[c]
            amount = jnp.where(
                (dose.compartment == c) & dose.bolus & ~dose.steady_state, dose.amount, 0.0
            )[order]

            def accumulate(held, step, rate=rate):
                g, a = step
                held = held * jnp.exp(rate * g) + a
                return held, held

            _, held = jax.lax.scan(accumulate, jnp.zeros((), p.dtype), (gap, amount))
            rates.append(rate)
            after.append(held)  # amount just after each sorted dose

        def source_states(t, with_doses_at_t):
            # the last dose at or before t (compare-all: a few dozen doses, vectorised)
            j = jnp.sum(t_sorted < t) + jnp.where(with_doses_at_t, jnp.sum(t_sorted == t), 0) - 1
            has = j >= 0
            jj = jnp.maximum(j, 0)
            since = jnp.where(has, t - t_sorted[jj], 0.0)
            return [
                x0[c] * jnp.exp(rate * t) + jnp.where(has, held[jj] * jnp.exp(rate * since), 0.0)
                for c, rate, held in zip(sources, rates, after, strict=True)
            ]

        def full_state(t, y_rest, with_doses_at_t):
            y = jnp.zeros((*y_rest.shape[:-1], n_states), y_rest.dtype)
            y = y.at[..., rest].set(y_rest)
            for c, value in zip(sources, source_states(t, with_doses_at_t), strict=True):
                y = y.at[..., c].set(value)
            return y

        def field(t, y_rest, t_end):
            # inside a solve the solver evaluates just before or just after a dose time
            # (jump_ts); a solve that ends on a dose time ends before that dose
            return model.vector_field(t, full_state(t, y_rest, t < t_end), p)[rest]

        term = diffrax.ODETerm(field)
        controller = diffrax.PIDController(rtol=rtol, atol=atol, jump_ts=t_sorted)

        def chunk(carry, ts):
            y, t_start, dt, result = carry
            t_end = jnp.maximum(ts[-1], t_start)
            moving = t_end > t_start
            t_end_safe = jnp.where(moving, t_end, t_start + 1e-6)  # a dummy solve, discarded
            sol = diffrax.diffeqsolve(
                term, solver, t_start, t_end_safe, jnp.minimum(dt, t_end_safe - t_start), y,
                args=t_end_safe, saveat=diffrax.SaveAt(ts=jnp.clip(ts, t_start, t_end_safe)),
                stepsize_controller=controller, max_steps=max_steps, throw=False,
                adjoint=adjoint,
            )  # fmt: skip
            steps = jnp.maximum(sol.stats["num_accepted_steps"], 1)
            saved = jnp.where(moving, sol.ys, y)
            y_next = jnp.where(moving, sol.ys[-1], y)
            worst = jnp.maximum(result, jnp.where(moving, status_of(sol.result), 0))
            # the next solve starts with the step size this one ended near
            dt_next = jax.lax.stop_gradient(jnp.where(moving, (t_end - t_start) / steps, dt))
            return (y_next, t_end, dt_next, worst), saved

        n_times = times_row.shape[0]
        size = min(n_times, _CHUNK)
        n_chunks = -(-n_times // size)
        padded = jnp.concatenate(
            [times_row, jnp.full(n_chunks * size - n_times, times_row[-1], times_row.dtype)]
        )
        start = (x0[rest], jnp.zeros((), p.dtype), jnp.asarray(0.01, p.dtype),
                 jnp.zeros((), jnp.int32))  # fmt: skip
        (_, _, _, result), saved = jax.lax.scan(chunk, start, padded.reshape(n_chunks, size))
        saved = saved.reshape(n_chunks * size, -1)[:n_times]
        states = jax.vmap(lambda t, y: full_state(t, y, post_dose))(times_row, saved)
        return states, result

    n = params.shape[0]
    times = jnp.broadcast_to(times, (n, times.shape[-1]))
    return jax.vmap(one)(params, doses, times)
