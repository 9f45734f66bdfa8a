"""The dose recommendation's search pieces: candidate grids, the shortlist at the
posterior mode, the ranked :class:`Recommendation` and its plain-language why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..simulators import Dose, DosingEvents
from ._clinical import PatientTwinError, Regimen

if TYPE_CHECKING:
    from ._clinical import Target
    from ._prediction import Prediction

__all__ = ["Recommendation"]


def _shortlist(
    candidates: list[Regimen], at_mode: Prediction, target: Target, size: int
) -> list[Regimen]:
    """The candidates whose metric at the posterior mode lies nearest mid-target: the
    nearest two of each (interval, loading or not) group, then the nearest overall."""
    key = "average" if target.uses_time_in_range else target.key_metric
    middle = 0.5 * (target.low + target.high)
    off = [abs(m[key]["median"] - middle) for m in at_mode.metrics]
    order = sorted(range(len(candidates)), key=lambda i: off[i])
    chosen: list[int] = []
    groups: dict[tuple[float, bool], int] = {}
    for i in order:
        group = (candidates[i].interval_h, candidates[i].loading_mg is not None)
        if groups.get(group, 0) < 2:
            groups[group] = groups.get(group, 0) + 1
            chosen.append(i)
    chosen += [i for i in order if i not in chosen][: max(size - len(chosen), 0)]
    return [candidates[i] for i in sorted(chosen)]


def _positive_grid(values: Sequence[float] | None, name: str) -> list[float]:
    if values is None:
        raise PatientTwinError(
            f"`{name}` is needed for a model outside the library (e.g. {name}=[250, 500, 750])"
        )
    grid = sorted({float(v) for v in values})
    if not grid or not all(np.isfinite(v) and v > 0 for v in grid):
        raise PatientTwinError(
            f"`{name}` must be a non-empty list of values > 0, got {list(values)!r}"
        )
    return grid


def _nearest(grid: Sequence[float], value: float) -> float:
    return min(grid, key=lambda g: (abs(g - value), g))


def _named_regimens(regimens: Any) -> dict[str, Any]:
    if isinstance(regimens, Regimen | DosingEvents):
        regimens = [regimens]
    if isinstance(regimens, Mapping):
        named = {str(k): v for k, v in regimens.items()}
    else:
        named = {}
        for i, reg in enumerate(regimens):
            name = reg.describe() if isinstance(reg, Regimen) else f"regimen {i + 1}"
            named[name if name not in named else f"{name} ({i + 1})"] = reg
    if not named:
        raise PatientTwinError("`regimens` is empty; give at least one Regimen or dose list")
    return named


@dataclass(frozen=True)
class Recommendation:
    """A recommended regimen.

    Attributes
    ----------
    regimen
        The :class:`Regimen`.
    description
        Its plain-language text.
    doses
        The dose records over the horizon.
    pta
        Probability of target attainment.
    metrics
        ``{metric: {"median", "q05", "q95", "mean"}}``.
    why
        Plain-language reason.
    searched, scored
        How many candidate regimens were searched, and how many of those were scored on
        the posterior draws (see :meth:`TwinPosterior.recommend`).
    p_unsafe
        Probability of crossing the drug's safety threshold (NaN without one).
    objective, objective_text
        The value the ranking maximises and what it is, in plain words.
    safety
        The safety threshold and its limit, in plain words.
    excluded
        ``(regimen, reason)`` for every candidate not recommended because of the label or
        the safety limit.
    notes
        What the recommendation assumes beyond the data, in words (e.g. that an untested
        genotype was averaged over the ancestry's genotype frequencies); also in ``why``.
    """

    regimen: Regimen
    description: str
    doses: tuple[Dose, ...]
    pta: float
    metrics: dict[str, dict[str, float]]
    why: str
    searched: int = 0
    scored: int = 0
    p_unsafe: float = float("nan")
    objective: float = float("nan")
    objective_text: str = ""
    safety: str = ""
    excluded: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _why(post, prediction, i, order, candidates, target) -> str:
    m = prediction.metrics[i]
    key = target.key_metric
    w0, w1 = prediction.window
    data = post.twin.observations
    basis = (
        f"fitted to {len(data)} measured level(s) ({post.method})"
        if data and post.method != "prior"
        else "from the population model and the patient's covariates only (no levels)"
    )
    parts = [
        f"{candidates[i].describe()}: probability {100 * prediction.pta[i]:.0f} % of "
        f"{target.describe()} over {w0:g}–{w1:g} h, {basis}."
    ]
    if key == "time_in_range":
        parts.append(
            f"Median time in range {100 * m['time_in_range']['median']:.0f} % (90 % interval "
            f"{100 * m['time_in_range']['q05']:.0f}–{100 * m['time_in_range']['q95']:.0f} %)."
        )
    else:
        stats = m[key]
        parts.append(
            f"Median {key} {_fmt(stats['median'])} {target.unit} (90 % interval "
            f"{_fmt(stats['q05'])}–{_fmt(stats['q95'])})."
        )
    parts.append(
        f"Trough {_fmt(m['trough']['median'])}, peak {_fmt(m['cmax']['median'])} ({target.output})."
    )
    if prediction.safety is not None:
        parts.append(
            f"Probability of {prediction.safety.text or 'the safety threshold'}: "
            f"{100 * prediction.p_unsafe[i]:.0f} % (limit {100 * prediction.safety.limit:.0f} %)."
        )
    if prediction.objective_text:
        parts.append(f"Ranked by {prediction.objective_text}.")
    rank = order.index(i)
    if rank + 1 < len(order):
        j = order[rank + 1] if rank == 0 else order[0]
        relation = "next best" if rank == 0 else "best"
        parts.append(
            f"The {relation} safe option, {candidates[j].describe()}, has "
            f"{100 * prediction.pta[j]:.0f} %."
        )
    lower = [
        k
        for k in order  # safe candidates only
        if candidates[k].amount_mg * 24 / candidates[k].interval_h
        < candidates[i].amount_mg * 24 / candidates[i].interval_h
    ]
    if lower:
        best_lower = lower[0]
        parts.append(
            f"A smaller daily dose ({candidates[best_lower].describe()}) would reach "
            f"{100 * prediction.pta[best_lower]:.0f} %."
        )
    parts.extend(prediction.notes)
    return " ".join(parts)
