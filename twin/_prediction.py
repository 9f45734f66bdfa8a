"""Forecasts of candidate regimens for posterior draws: median and 90 % bands over time,
exposure metrics with their intervals and the probability of target attainment
(:class:`Prediction`)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from ..simulators import DosingEvents, bucket_size, semilinear_grid
from ..simulators._metrics import auc_interval
from ._clinical import PatientTwinError
from ._compiled import _engine
from ._intervals import draw_quantiles

if TYPE_CHECKING:
    from ._clinical import Safety, Target

__all__ = ["Prediction"]


@dataclass(frozen=True, eq=False)
class Prediction:
    """Predictions of candidate regimens for posterior draws.

    Attributes
    ----------
    names, descriptions
        Regimen names and their plain-language descriptions.
    times
        Time grid ``[time]``, h (absolute).
    output_names
        Model outputs.
    median, lower, upper
        ``[regimen, time, output]``: median and the 5 % / 95 % quantiles over draws.
    metrics
        Per regimen ``{metric: {"median", "q05", "q95", "mean"}}`` for ``auc24``,
        ``trough``, ``cmax``, ``average``, ``time_in_range`` (of the target's output).
    pta
        Probability of target attainment per regimen ``[regimen]`` (NaN without target).
    target
        The target used.
    window
        ``(start, end)`` of the evaluation window, h.
    horizon_h, start_h
        The horizon and the regimens' first new dose time.
    n_draws
        Posterior draws used.
    draw_metrics
        Per regimen the metrics of every draw (``{metric: array[draw]}``).
    p_unsafe
        Probability of crossing the safety threshold per regimen ``[regimen]`` (NaN
        without a :class:`Safety`).
    safety
        The safety threshold used.
    objective
        What the recommendation ranks on, per regimen: the PTA, or for warfarin the mean
        of the PTA over the evaluation window and the probability that the steady-state
        INR of the maintenance dose lies in range (see :attr:`objective_text`).
    objective_text
        The objective in plain words.
    notes
        What the prediction assumes beyond the data, in words (e.g. an untested genotype
        averaged over the ancestry's genotype frequencies).
    """

    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    times: np.ndarray
    output_names: tuple[str, ...]
    median: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    metrics: tuple[dict[str, dict[str, float]], ...]
    pta: np.ndarray
    target: Target | None
    window: tuple[float, float]
    horizon_h: float
    start_h: float
    n_draws: int
    draw_metrics: tuple[dict[str, np.ndarray], ...] = field(repr=False, default=())
    p_unsafe: np.ndarray | None = None
    safety: Safety | None = None
    objective: np.ndarray | None = None
    objective_text: str = ""
    notes: tuple[str, ...] = ()

    def table(self) -> list[dict[str, Any]]:
        """One row per regimen: name, PTA and the metrics' medians and 90 % intervals."""
        rows = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {
                "regimen": name,
                "description": self.descriptions[i],
                "pta": float(self.pta[i]),
            }
            if self.p_unsafe is not None:
                row["p_unsafe"] = float(self.p_unsafe[i])
            if self.objective is not None:
                row["objective"] = float(self.objective[i])
            for metric, stats in self.metrics[i].items():
                row[f"{metric}_median"] = stats["median"]
                row[f"{metric}_q05"] = stats["q05"]
                row[f"{metric}_q95"] = stats["q95"]
            rows.append(row)
        return rows

    def band(self, regimen: str | int, output: str = "conc") -> dict[str, np.ndarray]:
        """``{"times", "median", "lower", "upper"}`` of one regimen and output."""
        i = regimen if isinstance(regimen, int) else self.names.index(regimen)
        j = self.output_names.index(output)
        return {
            "times": self.times,
            "median": self.median[i, :, j],
            "lower": self.lower[i, :, j],
            "upper": self.upper[i, :, j],
        }


def _predict(
    post,
    names,
    descriptions,
    dose_lists,
    starts,
    horizon,
    times,
    eta,
    target,
    window_h,
    resolution_h,
    safety=None,
    daily_doses=None,
    typical=None,
    notes=(),
):
    """Predictions of the regimens for the draws ``eta [draw, R]`` whose typical
    parameters are ``typical [draw, P]`` (default: the twin's, for every draw)."""
    twin = post.twin
    engine = _engine(twin.model)
    start = min(starts)
    end = start + horizon
    if times is None:
        n_steps = max(2, math.ceil(horizon / resolution_h))
        grid = np.linspace(start, end, n_steps + 1)
    else:
        grid = np.sort(np.asarray(times, dtype=np.float64))
        if grid.size < 2:
            raise PatientTwinError("`times` must hold at least two output times")
        end = float(grid[-1])
    window_h = min(window_h, end - float(grid[0]))
    w_start = end - window_h
    n_history = len(twin.doses)
    width = bucket_size(n_history + max(len(d) for d in dose_lists))
    if typical is None:
        typical = np.asarray(twin.model.typical_parameters(twin.covariates), np.float64)
    typical = np.broadcast_to(typical, (eta.shape[0], np.shape(typical)[-1]))
    eta_j = jnp.asarray(eta)
    out_index = twin.model.structural.output_names.index(target.output) if target is not None else 0
    tables = [[*twin.doses, *doses] for doses in dose_lists]
    n = len(dose_lists)
    # the engines' pre-dose convention: a trough at a dose time is the value before it
    last_dose = [
        max((d.time for d in doses if grid[0] < d.time <= end + 1e-9), default=end)
        for doses in dose_lists
    ]
    names_out = twin.model.structural.output_names
    safety_index = names_out.index(safety.output) if safety is not None else out_index
    # the peak over the prediction (from its start); requested times all before the start
    # (a look back at the history) take the peak over those times
    after = grid >= start - 1e-9
    if not after.any():
        after = np.ones_like(after)
    first = int(np.argmax(after))  # the times after the start are the grid's last ones
    in_range = (
        (target.low, target.high) if target is not None and target.uses_time_in_range else None
    )
    settings = [
        (out_index, safety_index, first, trough_at, end, w_start, window_h, in_range)
        for trough_at in last_dose
    ]

    def summarise(i, e):
        # one regimen, on views of its trajectories [draw, time, output]
        found = _exposure(grid, e[..., out_index], last_dose[i], end, w_start, window_h, in_range)
        found["peak"] = e[:, first:, safety_index].max(axis=-1)
        return found

    bands, rows = _forecast_parts(engine, typical, eta_j, tables, grid, width, summarise, settings)
    lowers, medians, uppers = bands  # [regimen, time, output] each
    per_draw = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    steady = _steady_state(twin, eta, typical, daily_doses, n) if daily_doses is not None else None
    if steady is not None:
        per_draw["steady_state"] = steady
    summary = {
        k: (np.median(v, axis=1), *draw_quantiles(v, [0.05, 0.95], axis=1), np.mean(v, axis=1))
        for k, v in per_draw.items()
    }
    metric_rows = [
        {
            k: {
                "median": float(m[c]),
                "q05": float(lo[c]),
                "q95": float(hi[c]),
                "mean": float(mu[c]),
            }
            for k, (m, lo, hi, mu) in summary.items()
        }
        for c in range(n)
    ]
    draw_rows = [{k: v[c] for k, v in per_draw.items()} for c in range(n)]
    ptas = (
        np.mean(target.attained(per_draw), axis=1) if target is not None else np.full(n, math.nan)
    )
    p_unsafe = (
        np.mean(safety.unsafe(per_draw), axis=1) if safety is not None else np.full(n, math.nan)
    )
    objective, objective_text = (
        np.asarray(ptas, np.float64),
        (f"the probability of {target.describe()}" if target is not None else ""),
    )
    if steady is not None and target is not None:
        in_range = np.mean((steady >= target.low) & (steady <= target.high), axis=1)
        objective = 0.5 * objective + 0.5 * in_range
        objective_text = (
            f"the average of two probabilities: {target.describe()} (the INR trajectory "
            f"over initiation), and the INR at steady state of the maintenance dose "
            f"within {target.low:g}–{target.high:g}"
        )
    return Prediction(
        names=tuple(names),
        descriptions=tuple(descriptions),
        times=grid,
        output_names=twin.model.structural.output_names,
        median=medians,
        lower=lowers,
        upper=uppers,
        metrics=tuple(metric_rows),
        pta=np.asarray(ptas, np.float64),
        target=target,
        window=(w_start, end),
        horizon_h=float(end - start),
        start_h=float(start),
        n_draws=int(eta.shape[0]),
        draw_metrics=tuple(draw_rows),
        p_unsafe=np.asarray(p_unsafe, np.float64),
        safety=safety,
        objective=objective,
        objective_text=objective_text,
        notes=tuple(notes),
    )


class _KeptForecasts(collections.OrderedDict):
    """``{key: (bands, per-draw metrics)}``, oldest first, that knows the bytes it holds:
    the count follows every entry set, popped or cleared (summing the entries at each
    eviction made a 1,000-patient ``recommend_cohort`` quadratic: 0.3 s a patient became
    6 s once the cache was full: ~50,000 entries of 2.7 kB after ~700 patients)."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0

    @staticmethod
    def size(entry: tuple[np.ndarray, dict[str, np.ndarray]]) -> int:
        return entry[0].nbytes + sum(v.nbytes for v in entry[1].values())

    def __setitem__(self, key, entry) -> None:
        if key in self:
            self.nbytes -= self.size(self[key])
        super().__setitem__(key, entry)
        self.nbytes += self.size(entry)

    def popitem(self, last: bool = True):
        key, entry = super().popitem(last=last)
        self.nbytes -= self.size(entry)
        return key, entry

    def clear(self) -> None:
        super().clear()
        self.nbytes = 0

    def trim(self, budget: int, keep: int) -> None:
        """Drop the oldest entries while over ``budget`` bytes, never the newest ``keep``."""
        while len(self) > keep and self.nbytes > budget:
            self.popitem(last=False)


#: bands and per-draw metrics of recent forecasts, one entry per regimen and metric
#: settings: a what-if that changes one regimen computes that one only. The trajectories
#: themselves are not kept: growing the heap by 23 MB per regimen (500 draws × 8 weeks at
#: 0.5 h) cost ~0.1 s of first-touch page faults per what-if on the benchmark's VM, and a
#: regimen's bands and metrics are all a forecast reads. A regimen's draws must not depend
#: on the regimens forecast with it: on the semilinear engine each regimen has calls of its
#: own (see _forecast_parts); the linear and walking engines pad a batch so that a subject's
#: bits do not depend on it (vancomycin checked alone and with others at 40, 80 and 200 draws)
_RECENT = _KeptForecasts()
_RECENT_BYTES = 128 * 2**20
_RECENT_LOCK = threading.Lock()
#: threads a forecast's (regimen, half of the draws) calls run on (semilinear engine only)
_WORKERS = min(2, os.cpu_count() or 1)


def clear_kept_forecasts() -> None:
    """Forget every kept forecast (the next what-if computes each regimen afresh)."""
    with _RECENT_LOCK:
        _RECENT.clear()


def _forecast_parts(engine, typical, eta, tables, grid, width, summarise, settings):
    """The 5/50/95 % bands ``[3, regimen, time, output]`` of each dose table of ``tables``
    (history + regimen) for the draws ``eta`` with typical parameters ``typical [draw,
    P]``, and each one's per-draw metrics ``summarise(i, outputs [draw, time, output])``
    (a dict of ``[draw]`` arrays) under the hashable ``settings[i]``; each regimen from
    the cache of recent forecasts when it was computed before for the same model, draws,
    times and settings."""
    common = hashlib.sha256()
    for part in (np.asarray(typical, np.float64), np.asarray(eta, np.float64), grid):
        common.update(np.ascontiguousarray(part).tobytes())
    structural = engine.model.structural
    identity = (id(engine), structural.name, structural.parameters, structural.output_names)
    common.update(repr((identity, np.shape(eta), np.shape(grid))).encode())
    keys = []
    for table, setting in zip(tables, settings, strict=True):
        h = common.copy()
        h.update(repr([tuple(dataclasses.astuple(d)) for d in table]).encode())
        h.update(repr(setting).encode())
        keys.append(h.digest())
    with _RECENT_LOCK:
        missing = [i for i, k in enumerate(keys) if k not in _RECENT]
    if missing:
        todo = [tables[i] for i in missing]
        # a warfarin-like model (exact PK driving transit chains) on a grid holding every
        # dose and output time: the semilinear engine, else the model's own
        semi = semilinear_grid(
            engine.model.structural, DosingEvents.from_doses(todo, pad_to=width), grid
        )

        def run(group, draws=slice(None)):
            # regimens padded to a bucket (copies of the last): few compiled shapes
            group = group + [group[-1]] * (bucket_size(len(group), minimum=1) - len(group))
            events = DosingEvents.from_doses(group, pad_to=width)
            out = engine.predict(
                jnp.asarray(typical[draws]), eta[draws], events, jnp.asarray(grid), grid=semi
            )
            return np.asarray(out)

        def summary(j, trajectories):
            # the bands and metrics of todo[j]: what is kept of it
            i = missing[j]
            return keys[i], (_bands([trajectories])[0], summarise(i, trajectories))

        if semi is not None:
            # the semilinear engine: each regimen's draws in two halves, every (regimen,
            # half) its own call of one shape, spread over the cores (its programs hold no
            # thread-pool ops). A regimen's numbers then depend on nothing computed with it:
            # batched with others they differed in the last bits (1e-15) with the batch's
            # size — not in the engine call, whose padding keeps a subject's bits (checked
            # for 1–513 subjects), but in the compiled forecast around it
            n_draws = eta.shape[0]
            halves = [slice(None, n_draws // 2), slice(n_draws // 2, None)]
            if n_draws < 64:
                halves = [slice(None)]
            # a regimen at a time, its trajectories dropped once summarised: 7 regimens'
            # at once (23 MB each for 500 draws × 8 weeks) grew the heap into fresh pages,
            # ~0.1 s of page faults per regimen on the benchmark's VM
            found = {}
            with ThreadPoolExecutor(_WORKERS) as pool:
                for j, table in enumerate(todo):
                    parts = list(pool.map(lambda d, t=table: run([t], d)[0], halves))
                    found.update([summary(j, np.concatenate(parts))])
                    del parts
        else:
            computed = run(todo)
            found = dict(summary(j, computed[j]) for j in range(len(todo)))
            del computed
        with _RECENT_LOCK:
            _RECENT.update(found)
    with _RECENT_LOCK:
        entries = [_RECENT[k] for k in keys]
        for k in keys:
            _RECENT.move_to_end(k)
        _RECENT.trim(_RECENT_BYTES, keep=len(keys))
    return np.stack([e[0] for e in entries], axis=1), [e[1] for e in entries]


def _bands(every: list[np.ndarray]) -> list[np.ndarray]:
    """5 %, 50 % and 95 % quantiles ``[3, time, output]`` over the draws of each regimen's
    ``[draw, time, output]``; each regimen's times in halves, a (regimen, half) per thread
    (numpy's partition runs without the GIL; a time's quantiles do not depend on the others)."""
    quantiles = [0.05, 0.5, 0.95]
    if _WORKERS < 2:
        return [draw_quantiles(y, quantiles, axis=0) for y in every]
    units = [
        (y, part)
        for y in every
        for part in (slice(None, y.shape[1] // 2), slice(y.shape[1] // 2, None))
    ]
    with ThreadPoolExecutor(_WORKERS) as pool:
        parts = list(pool.map(lambda u: draw_quantiles(u[0][:, u[1]], quantiles, axis=0), units))
    return [np.concatenate(parts[2 * i : 2 * i + 2], axis=1) for i in range(len(every))]


def _steady_state(twin, eta, typical, daily_doses, n) -> np.ndarray | None:
    """Warfarin: steady-state INR of each regimen's maintenance dose ``[regimen, draw]``
    (NaN for a dose list without a maintenance dose); ``typical [draw, P]``."""
    if twin.drug != "warfarin":
        return None
    from ..priors._warfarin import steady_state_inr_at_average

    eta = jnp.atleast_2d(jnp.asarray(eta, jnp.float64))
    params = np.asarray(twin.model._apply(jnp.asarray(typical, jnp.float64), eta))
    names = twin.model.structural.parameters
    rows = [
        steady_state_inr_at_average(params, daily, names)
        if daily is not None
        else np.full(params.shape[0], math.nan)
        for daily in daily_doses[:n]
    ]
    return np.stack(rows)


def _auc_between(grid, y, start: float, end: float) -> np.ndarray:
    """:func:`~twinsim.simulators.auc_interval` over ``[start, end]`` on the samples that
    bracket it only (the same area; a 24 h window of an 8-week forecast is 1/56 of it)."""
    first = max(int(np.searchsorted(grid, start, side="right")) - 1, 0)
    last = min(int(np.searchsorted(grid, end, side="left")) + 1, grid.size)
    first = min(first, last - 2)
    return np.asarray(auc_interval(grid[first:last], y[..., first:last], start, end))


def _exposure(grid, y, trough_at, end, w_start, window_h, in_range) -> dict[str, np.ndarray]:
    """Per-draw exposure metrics ``[draw]`` of one regimen's target output ``y [draw,
    time]`` (a view is fine: nothing is copied but the window's in-range flags); the trough
    is taken at ``trough_at``; ``in_range``: ``(low, high)`` of a time-in-range target."""
    auc_start = max(end - 24.0, float(grid[0]))
    auc = _auc_between(grid, y, auc_start, end) * (24.0 / max(end - auc_start, 1e-12))
    window_auc = _auc_between(grid, y, w_start, end)
    # linear interpolation at the trough time, or the sample itself (pre-dose) on the grid
    right = int(np.clip(np.searchsorted(grid, trough_at - 1e-9), 1, grid.size - 1))
    on_grid = abs(grid[right] - trough_at) < 1e-9
    between = (trough_at - grid[right - 1]) / (grid[right] - grid[right - 1])
    frac = 1.0 if on_grid else float(np.clip(between, 0.0, 1.0))
    trough = (1.0 - frac) * y[:, right - 1] + frac * y[:, right]
    window = y[:, int(np.searchsorted(grid, w_start - 1e-9)) :]  # the grid is sorted
    metrics = {
        "auc24": auc,
        "trough": trough,
        "cmax": window.max(axis=-1),
        "average": window_auc / window_h,
    }
    if in_range is not None:
        inside = (window >= in_range[0]) & (window <= in_range[1])
        metrics["time_in_range"] = inside.mean(axis=-1)
    return metrics
