"""Enrolment, randomisation and simulation of a chunk of replicate trials.

Reproducibility: candidate ``j`` of replicate ``r`` has the number ``r · 2²⁰ + j``; its
covariates, its parameters, its assay errors, its dropout time and its missed doses are
drawn from keys folded from the root seed and that number alone (one sub-seed per kind of
draw), and the randomisation of replicate ``r`` from ``(seed, r)``. A chunk of replicates
is therefore the same whatever the other chunks, their size or the worker running it.

Adaptive arms are simulated visit to visit: at each decision time the whole chunk (every
subject of every replicate) has been simulated up to that time, the rule reads each
subject's simulated measurement (with the drug's residual error as assay error) and
rewrites that subject's later doses, and the simulation continues. On the semilinear
engine (warfarin) it continues from the state it stopped at
(:func:`twinsim.simulators.semilinear_segment`): each grid node is stepped once. Other
engines run again from 0 to the next decision (:func:`twinsim.simulators.simulate`;
output times past the decision held at it). Shapes stay fixed from one decision to the
next, so the engine compiles once per chunk shape.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ...priors import PopulationModel
from ...simulators import (
    DosingEvents,
    semilinear_grid,
    semilinear_segment,
    simulate,
    subject_keys,
)
from ...twin import apply_criteria, draw_candidates
from .._population import sub_seed
from ._design import REPLICATE_STRIDE, ArmSpec, TitrationSpec, TrialDesign, TrialError

__all__ = ["SimulatedChunk", "enrol", "simulate_chunk", "sub_seed"]


# ---------------------------------------------------------------------------- enrolment
@dataclass
class Enrolment:
    """One replicate's enrolled subjects, arm by arm in order of enrolment."""

    covariates: dict[str, np.ndarray]  # columns, one row per enrolled subject
    ids: np.ndarray  # candidate numbers r · 2²⁰ + j
    arm: np.ndarray  # arm index
    position: np.ndarray  # order of enrolment within the arm (0-based)
    screened: int


def enrol(design: TrialDesign, replicates: list[int]) -> list[Enrolment]:
    """Screen candidates and randomise them until every arm holds its largest sample size.

    Randomisation: permuted blocks of ``block · sum(ratio)`` allocations within each stratum
    (the values of ``randomisation.stratify``), shuffled with a generator seeded from
    ``(seed, replicate)``; a candidate allocated to an arm that is already full is not
    enrolled (the arm is closed), as in a trial that recruits to fixed arm sizes.
    """
    config = design.population.config(design.drug)
    sizes = np.array(design.arm_sizes(design.n_max))
    need = int(sizes.sum())
    population_seed = sub_seed(design.seed, "population")
    drawn = dict.fromkeys(replicates, 0)
    out: list[Enrolment] = []
    for r in replicates:
        rng = np.random.default_rng([design.seed, r, zlib.crc32(b"randomisation")])
        counts = np.zeros(len(sizes), dtype=int)
        blocks: dict[tuple, list[int]] = {}
        ratio = np.array(design.ratio)
        chosen: list[tuple[int, int, int]] = []  # (row in pool, arm, position)
        rows: list[dict[str, np.ndarray]] = []
        cursor = 0
        batch = max(64, 2 * need)
        while (counts < sizes).any():
            if cursor >= sum(len(b["id"]) for b in rows):
                if drawn[r] + batch > REPLICATE_STRIDE:
                    raise TrialError(
                        f"replicate {r}: only {counts.sum()} of {need} subjects enrolled from "
                        f"{drawn[r]} candidates; relax `population.criteria`"
                    )
                ids = r * REPLICATE_STRIDE + np.arange(drawn[r], drawn[r] + batch)
                table = draw_candidates(config, population_seed, ids)
                keep = apply_criteria(table, config.criteria)
                rows.append({k: v[keep] for k, v in table.items()})
                drawn[r] += batch
                continue
            flat = _row(rows, cursor)
            stratum = tuple(str(flat[c]) for c in design.randomisation.stratify)
            pending = blocks.setdefault(stratum, [])
            if not pending:
                block = np.repeat(np.arange(len(sizes)), ratio * design.randomisation.block)
                pending.extend(rng.permutation(block).tolist())
            arm = pending.pop(0)
            if counts[arm] < sizes[arm]:
                chosen.append((cursor, arm, counts[arm]))
                counts[arm] += 1
            cursor += 1
        table = {k: np.concatenate([b[k] for b in rows]) for k in rows[0]}
        order = sorted(chosen, key=lambda c: (c[1], c[2]))
        index = np.array([c[0] for c in order])
        covariates = {k: v[index] for k, v in table.items() if k != "id"}
        # the model's own columns (e.g. warfarin's amiodarone from comed_amiodarone)
        covariates.update(load_model(design).covariate_columns(covariates))
        out.append(
            Enrolment(
                covariates=covariates,
                ids=table["id"][index],
                arm=np.array([c[1] for c in order]),
                position=np.array([c[2] for c in order]),
                screened=int(table["id"][cursor - 1] - r * REPLICATE_STRIDE + 1),
            )
        )
    return out


def _row(rows: list[dict[str, np.ndarray]], i: int) -> dict[str, Any]:
    for b in rows:
        n = len(b["id"])
        if i < n:
            return {k: v[i] for k, v in b.items()}
        i -= n
    raise IndexError(i)


# ---------------------------------------------------------------------------- regimens
def dose_times(arm: ArmSpec, duration: float) -> np.ndarray:
    """Dose times of an arm (h): every ``interval`` from 0 until before ``duration``."""
    return np.arange(0.0, duration - 1e-9, arm.interval)


def maintenance_dose(arm: ArmSpec, covariates: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The arm's maintenance dose per subject (mg)."""
    if arm.placebo:
        return np.zeros(n)
    if arm.dose is not None:
        return np.full(n, arm.dose)
    from ...twin._virtual import _compile, _evaluate  # the criteria's safe evaluator

    value = np.broadcast_to(
        np.asarray(_evaluate(_compile(arm.dose_formula), covariates), dtype=float), (n,)
    )
    if arm.titration is not None and arm.titration.round_to > 0:
        value = np.round(value / arm.titration.round_to) * arm.titration.round_to
    return np.maximum(value, 0.0)


def planned_doses(arm: ArmSpec, maintenance: np.ndarray, n_doses: int) -> np.ndarray:
    """``[subject, dose]`` amounts: loading doses first, then the maintenance dose."""
    amounts = np.repeat(maintenance[:, None], n_doses, axis=1)
    if arm.loading is not None:
        k = min(arm.loading.doses, n_doses)
        first = (
            np.full(len(maintenance), arm.loading.dose)
            if arm.loading.dose is not None
            else maintenance * arm.loading.factor
        )
        if arm.titration is not None and arm.titration.round_to > 0:
            first = np.round(first / arm.titration.round_to) * arm.titration.round_to
        amounts[:, :k] = first[:, None]
    return amounts


# ---------------------------------------------------------------------------- rules
def _apply_rule(
    rule: TitrationSpec,
    arm: ArmSpec,
    decision: float,
    current: np.ndarray,
    measured: dict[float, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """New maintenance dose and doses to withhold, per subject, from the rule's measurements.

    A subject with no measurement (dropped out) keeps its dose.
    """
    hold = np.zeros(current.shape, dtype=int)
    level = measured[decision]
    if rule.kind == "bands":
        factor = np.ones_like(level)
        for band in rule.bands:
            inside = (level >= band.low) & (level < band.high)
            factor = np.where(inside, band.factor, factor)
            hold = np.where(inside, band.hold, hold)
    else:
        if rule.kind == "proportional":
            value = np.maximum(level, 1e-3)
        else:
            value = two_level_auc24(
                measured[decision - arm.interval + rule.peak_after],
                level,
                peak_time=rule.peak_after,
                trough_time=arm.interval,
                infusion=arm.infusion,
                interval=arm.interval,
            )
        factor = rule.target / value
        if rule.range is not None:
            factor = np.where((value >= rule.range[0]) & (value <= rule.range[1]), 1.0, factor)
        factor = np.where(np.isfinite(factor), factor, 1.0)
    factor = np.clip(factor, rule.min_factor, rule.max_factor)
    new = np.clip(current * factor, rule.min_dose, rule.max_dose)
    if rule.round_to > 0:
        new = np.round(new / rule.round_to) * rule.round_to
    missing = ~np.isfinite(level)
    return np.where(missing, current, new), np.where(missing, 0, hold)


def two_level_auc24(
    peak: np.ndarray,
    trough: np.ndarray,
    *,
    peak_time: float,
    trough_time: float,
    infusion: float,
    interval: float,
) -> np.ndarray:
    """AUC over 24 h from a peak and a trough in one dosing interval (Sawchuk–Zaske).

    One-compartment log-linear decline between the two levels gives ``ke``; the level at
    the end of the infusion is back-extrapolated, the trough before the dose is taken equal
    to the measured trough (steady state), the infusion phase is a linear trapezoid and the
    decline an exponential. Times are h after the start of the dose.

    Examples
    --------
    >>> ke, cmax = 0.1, 30.0  # a one-compartment profile after a 1-h infusion, q12h
    >>> peak, trough = cmax * np.exp(-ke * 1.0), cmax * np.exp(-ke * 11.0)
    >>> auc = two_level_auc24(np.array([peak]), np.array([trough]), peak_time=2.0,
    ...                       trough_time=12.0, infusion=1.0, interval=12.0)
    >>> expected = 2 * (1.0 * (trough + cmax) / 2 + (cmax - trough) / ke)
    >>> bool(np.isclose(auc[0], expected))
    True
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ke = np.log(peak / trough) / (trough_time - peak_time)
        cmax = peak * np.exp(ke * (peak_time - infusion))
        auc_tau = infusion * (trough + cmax) / 2 + (cmax - trough) / ke
    return np.where((ke > 0) & np.isfinite(auc_tau), auc_tau * 24.0 / interval, np.nan)


# ---------------------------------------------------------------------------- simulation
@dataclass
class SimulatedChunk:
    """Raw simulated data of a flat batch of subjects (rows of every replicate and arm)."""

    times: np.ndarray  # [time] output grid (h)
    measured_mask: np.ndarray  # [time] True at visits and rule samples
    predicted: np.ndarray  # [subject, time, output]
    measured: np.ndarray  # [subject, time, output], NaN off-visit or after dropout
    dose_times: np.ndarray  # [dose]
    doses: np.ndarray  # [subject, dose] amounts taken (mg), NaN past the arm's last dose
    dropout: np.ndarray  # [subject] time of dropout (h), inf if none
    status: np.ndarray  # [subject] solver status (0 = success)


def observation_grid(design: TrialDesign) -> tuple[np.ndarray, np.ndarray]:
    """Output times (h) and which of them are measured (visits, baseline, rule samples)."""
    measured = {0.0, *design.visits}
    for arm in design.arms:
        rule = arm.titration
        if rule is not None:
            measured.update(rule.at)
            if rule.kind == "auc":
                measured.update(a - arm.interval + rule.peak_after for a in rule.at)
    dense: set[float] = set()
    for e in design.endpoints:
        if e.auc:
            start, end = e.window
            steps = int(np.ceil((end - start) / design.auc_step))
            dense.update(np.linspace(start, end, steps + 1).round(9).tolist())
            # the dose and infusion-end times inside the window are kinks of the profile
            for arm in design.arms:
                for t in dose_times(arm, design.duration):
                    for kink in (t, t + arm.infusion):
                        if start <= kink <= end:
                            dense.add(round(float(kink), 9))
    if design.trajectory_step is not None:
        # noise-free outputs on a regular grid too, for plots of the trajectories
        grid = np.arange(0.0, design.duration + 1e-9, design.trajectory_step)
        dense.update(grid.round(9).tolist())
    times = np.array(sorted(measured | dense))
    return times, np.isin(times, sorted(measured))


@functools.lru_cache(maxsize=8)
def _piece_program(structural, step: float):
    """The compiled semilinear piece (:func:`~twinsim.simulators.semilinear_segment`) of
    ``structural`` on the grid of ``step``: one program per model and grid."""
    return jax.jit(
        lambda params, events, times, stop, start: semilinear_segment(
            structural, params, events, times, step=step, stop=stop, start=start
        )
    )


def simulate_chunk(
    design: TrialDesign,
    model: PopulationModel,
    covariates: dict[str, np.ndarray],
    ids: np.ndarray,
    arm: np.ndarray,
    *,
    typical: bool = False,
    only_arm: int | None = None,
) -> SimulatedChunk:
    """Simulate subjects ``ids`` (with ``covariates``) in arms ``arm`` through the trial.

    Parameters
    ----------
    typical
        The baseline twin: typical parameters for the covariates (no between-subject
        draws), no assay error, full adherence, no dropout (the prognostic score).
    only_arm
        Simulate every subject in this arm instead of ``arm`` (the control arm, for the
        prognostic score).
    """
    n_real = len(ids)
    arm = np.full(n_real, only_arm) if only_arm is not None else np.asarray(arm)
    # pad to a bucket (repeating the last subject) so that chunks of different sizes share
    # a few compiled shapes; the padding is dropped at the end
    n = bucket(n_real)
    pad = np.minimum(np.arange(n), n_real - 1)
    ids, arm = np.asarray(ids)[pad], arm[pad]
    covariates = {k: np.asarray(v)[pad] for k, v in covariates.items()}
    structural = model.structural
    routes = dict(structural.routes)
    outputs = structural.output_names
    times, measured_mask = observation_grid(design)
    per_arm_times = [dose_times(a, design.duration) for a in design.arms]
    n_doses = max(len(t) for t in per_arm_times)
    grid_times = np.full((n, n_doses), design.duration)
    amounts = np.zeros((n, n_doses))
    mask = np.zeros((n, n_doses), dtype=bool)
    compartment = np.zeros((n, n_doses), dtype=np.int32)
    duration = np.zeros((n, n_doses))
    maintenance = np.zeros(n)
    for k, a in enumerate(design.arms):
        rows = np.flatnonzero(arm == k)
        if rows.size == 0:
            continue
        t = per_arm_times[k]
        sub = {c: v[rows] for c, v in covariates.items()}
        maintenance[rows] = maintenance_dose(a, sub, rows.size)
        amounts[rows, : len(t)] = planned_doses(a, maintenance[rows], len(t))
        grid_times[rows, : len(t)] = t
        mask[rows, : len(t)] = True
        compartment[rows] = structural.state_index(routes[a.route or next(iter(routes))])
        duration[rows, : len(t)] = a.infusion

    if typical:
        params = np.asarray(model.typical_parameters(_model_covariates(model, covariates)))
        keys = None
    else:
        sample = model.sample_parameters(
            sub_seed(design.seed, "parameters"), _model_covariates(model, covariates), ids
        )
        params = np.asarray(sample.parameters[:, 0])
        keys = subject_keys(sub_seed(design.seed, "trial"), ids)
    adherent, dropout, noise = _subject_draws(design, keys, n, n_doses, times, len(outputs))

    held = np.zeros((n, n_doses), dtype=bool)
    decisions = sorted({t for a in design.arms if a.titration for t in a.titration.at})

    # a warfarin-like model (exact PK driving transit chains) with every dose, visit and
    # decision on one grid: the semilinear engine, the same step (one compilation) for
    # every run up to a decision, each run stopping at its last output (the decision)
    def table(amount, given) -> DosingEvents:
        return DosingEvents(
            time=jnp.asarray(grid_times),
            amount=jnp.asarray(amount),
            compartment=jnp.asarray(compartment),
            rate=jnp.zeros((n, n_doses)),
            duration=jnp.asarray(duration),
            steady_state=jnp.zeros((n, n_doses), bool),
            interval=jnp.zeros((n, n_doses)),
            mask=jnp.asarray(given),
        )

    semi = semilinear_grid(
        structural, table(amounts, mask), np.concatenate([times, decisions, [design.duration]])
    )

    def observed(predicted):
        measured = _measure(model, outputs, predicted, noise)
        measured[:, ~measured_mask] = np.nan
        measured[(times[None, :] > dropout[:, None])] = np.nan
        return measured

    def run_from_zero(until: float):
        taken = np.where(held | ~adherent, 0.0, amounts)
        events = table(taken, mask & (grid_times <= until))
        sol = simulate(
            structural,
            jnp.asarray(params),
            events,
            jnp.asarray(np.minimum(times, until)),
            at_dose="pre",
            keep_states=False,
        )
        predicted = np.asarray(sol.outputs)
        return predicted, observed(predicted), np.asarray(sol.status), taken

    # the semilinear engine goes visit to visit from the state it stopped at (doses
    # before a decision never change after it): each node once, not once per decision
    # before it as a run from 0 to every decision did (2,112 h for a 672-h trial)
    carried = None
    status = np.zeros(n, np.int32)
    reached = -np.inf
    predicted = np.full((n, len(times), len(outputs)), np.nan)

    def run_on(until: float):
        nonlocal carried, status, reached
        piece = _piece_program(structural, semi[0])
        taken = np.where(held | ~adherent, 0.0, amounts)
        out, piece_status, carried = piece(
            jnp.asarray(params), table(taken, mask), jnp.asarray(np.tile(times, (n, 1))),
            jnp.full(n, round(until / semi[0]), jnp.int32), carried,
        )  # fmt: skip
        inside = (times >= reached) & (times <= until)
        predicted[:, inside] = np.asarray(out)[:, inside]
        status = np.where(status == 0, np.asarray(piece_status), status)
        reached = until
        return predicted.copy(), observed(predicted), status, taken

    run = run_from_zero if semi is None else run_on

    for decision in decisions:
        _, measured, _, _ = run(decision)
        for k, a in enumerate(design.arms):
            rule = a.titration
            if rule is None or decision not in rule.at:
                continue
            rows = np.flatnonzero(arm == k)
            j = outputs.index(rule.output)
            samples = {
                float(t): measured[rows, i, j]
                for i, t in enumerate(times)
                if measured_mask[i] and t <= decision
            }
            new, hold = _apply_rule(rule, a, decision, maintenance[rows], samples)
            maintenance[rows] = new
            later = per_arm_times[k] >= decision - 1e-9
            first = int(np.argmax(later)) if later.any() else len(per_arm_times[k])
            cols = np.arange(first, len(per_arm_times[k]))
            amounts[np.ix_(rows, cols)] = new[:, None]
            for h in range(1, int(hold.max(initial=0)) + 1):
                if first + h - 1 < len(per_arm_times[k]):
                    held[rows, first + h - 1] |= hold >= h
    predicted, measured, status, taken = run(design.duration)
    doses = np.where(mask, taken, np.nan)
    real = slice(0, n_real)
    return SimulatedChunk(
        times=times,
        measured_mask=measured_mask,
        predicted=predicted[real],
        measured=measured[real],
        dose_times=np.where(mask, grid_times, np.nan)[real],
        doses=doses[real],
        dropout=dropout[real],
        status=status[real],
    )


def bucket(n: int) -> int:
    """Subjects padded to a power of two (at least 32), beyond 1,024 to a multiple of 1,024.

    Examples
    --------
    >>> [bucket(n) for n in (1, 33, 1000, 1025)]
    [32, 64, 1024, 2048]
    """
    if n > 1024:
        return -(-n // 1024) * 1024
    return max(32, 1 << (n - 1).bit_length())


def _model_covariates(model: PopulationModel, covariates: dict[str, np.ndarray]) -> dict:
    return {name: covariates[name] for name in model.covariate_names}


_ADHERENCE, _DROPOUT, _ASSAY = 1, 2, 3


def _subject_draws(design, keys, n, n_doses, times, n_outputs):
    """Missed doses, dropout times and standard-normal assay errors per subject.

    The assay error of a sample is drawn from the subject's key folded with the sample
    time (in ms), so it does not depend on which other times are simulated.
    """
    if keys is None:
        return (
            np.ones((n, n_doses), bool),
            np.full(n, np.inf),
            np.zeros((n, len(times), n_outputs)),
        )
    stamps = jnp.asarray(np.round(np.asarray(times) * 1000).astype(np.uint32))

    def one(key):
        missed = jax.random.uniform(jax.random.fold_in(key, _ADHERENCE), (n_doses,))
        u = jax.random.uniform(jax.random.fold_in(key, _DROPOUT), ())
        assay = jax.random.fold_in(key, _ASSAY)
        z = jax.vmap(lambda t: jax.random.normal(jax.random.fold_in(assay, t), (n_outputs,)))(
            stamps
        )
        return missed, u, z

    missed, u, z = (np.asarray(a) for a in jax.vmap(one)(keys))
    adherent = missed >= design.missed_dose_probability
    if design.dropout.by_end > 0:
        hazard = -np.log1p(-design.dropout.by_end) / design.duration
        dropout = -np.log(u) / hazard
    else:
        dropout = np.full(n, np.inf)
    if not design.assay_error:
        z = np.zeros_like(z)
    return adherent, dropout, z


def _measure(model, outputs, predicted, noise):
    """Measured values: the drug's residual-error model applied with fixed normal draws
    (the same draws at every pass, so a measurement does not change between passes).
    Values below 0 (additive error) are read as 0."""
    measured = predicted.copy()
    for j, name in enumerate(outputs):
        err = model.residual.get(name)
        if err is None:
            continue
        f = predicted[..., j]
        if err.exponential:
            measured[..., j] = f * np.exp(err.proportional * noise[..., j])
        else:
            sd = np.sqrt(err.additive**2 + (err.proportional * f) ** 2)
            measured[..., j] = np.maximum(f + sd * noise[..., j], 0.0)
    return measured


def load_model(design: TrialDesign) -> PopulationModel:
    """The design's model: the drug's from the library, or the trained latent model's of
    ``design.model`` (one object per drug or model folder and process, so every chunk and
    every run reuses the programs compiled for it)."""
    return design.population_model()
