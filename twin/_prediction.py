"""Forecasts of candidate regimens for posterior draws: median and 90 % bands over time,
exposure metrics with their intervals and the probability of target attainment
(:class:`Prediction`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from ..simulators import DosingEvents, bucket_size, semilinear_grid
from ..simulators._metrics import auc_interval
from ._clinical import PatientTwinError
from ._compiled import _engine

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
    in_window = grid >= w_start - 1e-9
    tables = [[*twin.doses, *doses] for doses in dose_lists]
    # regimens padded to a bucket (copies of the last): few compiled shapes
    tables += [tables[-1]] * (bucket_size(len(tables), minimum=1) - len(tables))
    events = DosingEvents.from_doses(tables, pad_to=width)
    n = len(dose_lists)
    # a warfarin-like model (exact PK driving transit chains) on a grid holding every dose
    # and output time: the semilinear engine, else the model's own
    semi = semilinear_grid(twin.model.structural, events, grid)
    every = engine.predict(jnp.asarray(typical), eta_j, events, jnp.asarray(grid), grid=semi)
    every = np.asarray(every)[:n]
    lowers, medians, uppers = np.quantile(every, [0.05, 0.5, 0.95], axis=1)  # [regimen, ...]
    # the engines' pre-dose convention: a trough at a dose time is the value before it
    last_dose = [
        max((d.time for d in doses if grid[0] < d.time <= end + 1e-9), default=end)
        for doses in dose_lists
    ]
    per_draw = _exposure(
        grid, every[..., out_index], np.asarray(last_dose), end, w_start, window_h, in_window,
        target,
    )  # fmt: skip
    names_out = twin.model.structural.output_names
    safety_index = names_out.index(safety.output) if safety is not None else out_index
    # the peak over the prediction (from its start); requested times all before the start
    # (a look back at the history) take the peak over those times
    after = grid >= start - 1e-9
    if not after.any():
        after = np.ones_like(after)
    per_draw["peak"] = every[..., safety_index][..., after].max(axis=-1)
    steady = _steady_state(twin, eta, typical, daily_doses, n) if daily_doses is not None else None
    if steady is not None:
        per_draw["steady_state"] = steady
    summary = {
        k: (np.median(v, axis=1), *np.quantile(v, [0.05, 0.95], axis=1), np.mean(v, axis=1))
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


def _exposure(
    grid, y, trough_at, end, w_start, window_h, in_window, target
) -> dict[str, np.ndarray]:
    """Per-draw exposure metrics ``[regimen, draw]`` of the target's output
    ``y [regimen, draw, time]``; each regimen's trough is taken at ``trough_at [regimen]``."""
    auc_start = max(end - 24.0, float(grid[0]))
    auc = _auc_between(grid, y, auc_start, end) * (24.0 / max(end - auc_start, 1e-12))
    window_auc = _auc_between(grid, y, w_start, end)
    # linear interpolation at the trough time, or the sample itself (pre-dose) on the grid
    right = np.clip(np.searchsorted(grid, trough_at - 1e-9), 1, grid.size - 1)
    on_grid = np.abs(grid[right] - trough_at) < 1e-9
    between = (trough_at - grid[right - 1]) / (grid[right] - grid[right - 1])
    frac = np.where(on_grid, 1.0, np.clip(between, 0.0, 1.0))[:, None]
    rows = np.arange(y.shape[0])
    trough = (1.0 - frac) * y[rows, :, right - 1] + frac * y[rows, :, right]
    window = y[..., in_window]
    metrics = {
        "auc24": auc,
        "trough": trough,
        "cmax": window.max(axis=-1),
        "average": window_auc / window_h,
    }
    if target is not None and target.uses_time_in_range:
        inside = (window >= target.low) & (window <= target.high)
        metrics["time_in_range"] = inside.mean(axis=-1)
    return metrics
