"""What a clinician states about a patient twin: measured levels (:class:`Observation`),
the therapeutic target (:class:`Target`, :func:`default_target`) and candidate regimens
(:class:`Regimen`, with the practical dose grids of each library drug)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..priors._library import DrugLibraryError, drug_metadata
from ..simulators import Dose

if TYPE_CHECKING:
    from ._patient import PatientTwin

__all__ = [
    "Observation",
    "PatientTwinError",
    "Regimen",
    "Safety",
    "Target",
    "default_safety",
    "default_target",
]

_METRICS = ("auc24", "trough", "concentration", "time_in_range", "inr")


class PatientTwinError(ValueError):
    """A patient twin was given inconsistent inputs (names, times, values, options)."""


@dataclass(frozen=True)
class Observation:
    """One measured value of the patient.

    Parameters
    ----------
    time
        Sampling time, h, on the clock of the doses (≥ 0).
    value
        Measured value in the output's unit (mg/L for ``conc``, unitless INR); ignored
        when ``below_lloq`` (give the limit as ``lloq``).
    output
        Model output measured: ``"conc"`` (default) or e.g. ``"inr"``.
    below_lloq
        Reported as below the lower limit of quantification (censored, Beal's M3).
    lloq
        The limit, output unit; needed when ``below_lloq``. A value below a given limit is
        treated as censored too.

    Examples
    --------
    >>> Observation(47.5, 12.3)
    Observation(time=47.5, value=12.3, output='conc', below_lloq=False, lloq=None)
    >>> Observation(96.0, float("nan"), below_lloq=True, lloq=2.0).censored
    True
    """

    time: float
    value: float
    output: str = "conc"
    below_lloq: bool = False
    lloq: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", float(self.time))
        object.__setattr__(self, "value", float(self.value))
        if not (np.isfinite(self.time) and self.time >= 0):
            raise PatientTwinError(
                f"`Observation.time` must be a finite time ≥ 0 h, got {self.time!r}; times are "
                "hours on the clock of the doses"
            )
        if self.lloq is not None:
            object.__setattr__(self, "lloq", float(self.lloq))
            if not (np.isfinite(self.lloq) and self.lloq > 0):
                raise PatientTwinError(f"`Observation.lloq` must be a limit > 0, got {self.lloq!r}")
        if self.below_lloq and self.lloq is None:
            raise PatientTwinError(
                f"`Observation(time={self.time:g}).below_lloq` needs the limit: give `lloq` "
                "(e.g. lloq=2.0 mg/L)"
            )
        if not self.censored and not (np.isfinite(self.value) and self.value >= 0):
            raise PatientTwinError(
                f"`Observation(time={self.time:g}).value` must be a finite value ≥ 0, got "
                f"{self.value!r}; flag a level below the limit with below_lloq=True, lloq=..."
            )

    @property
    def censored(self) -> bool:
        """Below the limit of quantification (flagged, or a value under ``lloq``)."""
        return bool(self.below_lloq or (self.lloq is not None and self.value < self.lloq))


@dataclass(frozen=True)
class Target:
    """A therapeutic target.

    Parameters
    ----------
    output
        Model output the target is on (``"conc"``, ``"inr"``).
    low, high
        Target range, in ``unit``.
    metric
        ``"auc24"``, ``"trough"``, ``"concentration"``, ``"time_in_range"`` or ``"inr"``
        (see the module docstring for how each is attained).
    unit
        Unit of ``low``/``high`` (documentation).
    source
        Where the target comes from.
    window_h
        Evaluation window: the last ``window_h`` hours of the prediction horizon (24 by
        default; AUC24 always uses 24 h).
    required_fraction
        For time-in-range metrics, the fraction of the window that must lie in range
        (default 0.9 for ``concentration``, 0.6 for ``inr`` and ``time_in_range``).

    Examples
    --------
    >>> t = Target("conc", 400.0, 600.0, metric="auc24", unit="mg*h/L")
    >>> t.attained({"auc24": np.array([350.0, 500.0])}).tolist()
    [False, True]
    """

    output: str
    low: float
    high: float
    metric: str = "concentration"
    unit: str = ""
    source: str = ""
    window_h: float = 24.0
    required_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in _METRICS:
            raise PatientTwinError(
                f"`Target.metric` must be one of {list(_METRICS)}, got {self.metric!r}"
            )
        low, high = float(self.low), float(self.high)
        if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high):
            raise PatientTwinError(
                f"`Target.low`/`high` must be finite with 0 ≤ low < high, got {self.low!r}–"
                f"{self.high!r} {self.unit}"
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        if not (np.isfinite(self.window_h) and self.window_h > 0):
            raise PatientTwinError(f"`Target.window_h` must be > 0 h, got {self.window_h!r}")
        if self.required_fraction is None:
            default = 0.9 if self.metric == "concentration" else 0.6
            object.__setattr__(self, "required_fraction", default)
        if not 0 < float(self.required_fraction) <= 1:
            raise PatientTwinError(
                f"`Target.required_fraction` must lie in (0, 1], got {self.required_fraction!r}"
            )

    @property
    def uses_time_in_range(self) -> bool:
        return self.metric in ("concentration", "time_in_range", "inr")

    @property
    def key_metric(self) -> str:
        """The exposure metric the target is judged on."""
        return "time_in_range" if self.uses_time_in_range else self.metric

    def attained(self, metrics: Mapping[str, Any]) -> np.ndarray:
        """Whether each draw attains the target, from its metrics (arrays over draws)."""
        if self.uses_time_in_range:
            return np.asarray(metrics["time_in_range"]) >= self.required_fraction - 1e-12
        value = np.asarray(metrics[self.metric])
        return (value >= self.low) & (value <= self.high)

    def describe(self) -> str:
        """Plain-language statement of the target."""
        if self.metric == "auc24":
            return f"AUC24 {self.low:g}–{self.high:g} {self.unit}"
        if self.metric == "trough":
            return f"trough {self.output} {self.low:g}–{self.high:g} {self.unit}"
        name = "INR" if self.output == "inr" else self.output
        unit = "" if self.unit in ("", "1") else f" {self.unit}"
        return (
            f"{name} {self.low:g}–{self.high:g}{unit} for ≥ {100 * self.required_fraction:.0f} % "
            f"of the last {self.window_h:g} h"
        )


def default_target(drug: str) -> Target:
    """The built-in therapeutic target of a drug in the library.

    Parameters
    ----------
    drug
        Drug name (``"vancomycin"``, ``"warfarin"``, ``"theophylline"``).

    Returns
    -------
    Target
        From :func:`~twinsim.priors.drug_metadata`: vancomycin AUC24 400–600 mg·h/L,
        warfarin INR 2–3 (≥ 60 % of the last 72 h in range), theophylline 10–20 mg/L
        (≥ 90 % of the last 24 h).

    Raises
    ------
    PatientTwinError
        For a drug not in the library (the message lists the known ones).

    Examples
    --------
    >>> default_target("vancomycin").describe()
    'AUC24 400–600 mg*h/L'
    >>> default_target("warfarin").window_h
    72.0
    """
    try:
        target = drug_metadata(drug)["therapeutic_target"]
    except DrugLibraryError as error:
        raise PatientTwinError(str(error)) from None
    metric = str(target["metric"])
    return Target(
        output=str(target["output"]),
        low=float(target["low"]),
        high=float(target["high"]),
        metric=metric,
        unit=str(target["unit"]),
        source=str(target.get("source", "")),
        # INR follows a dose change with a delay of days: judge the last three days
        window_h=72.0 if metric == "inr" else 24.0,
    )


_SAFETY_METRICS = ("auc24", "trough", "cmax", "peak", "steady_state")


@dataclass(frozen=True)
class Safety:
    """A safety threshold and the largest acceptable probability of crossing it.

    A draw is *unsafe* when any condition ``(metric, threshold)`` has ``metric >
    threshold``: ``auc24``, ``trough`` and ``cmax`` over the evaluation window as in
    :class:`~twinsim.twin.Prediction`; ``peak``, the largest value over the whole
    prediction (the initiation included); ``steady_state`` (warfarin), the INR at
    steady state of the maintenance dose. A regimen whose probability of an unsafe draw
    exceeds ``limit`` is never recommended.

    Examples
    --------
    >>> s = Safety("conc", (("auc24", 650.0), ("trough", 20.0)), limit=0.25)
    >>> s.unsafe({"auc24": np.array([500.0, 700.0]), "trough": np.array([25.0, 10.0])}).tolist()
    [True, True]
    """

    output: str
    conditions: tuple[tuple[str, float], ...]
    limit: float
    text: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        conditions = tuple((str(m), float(t)) for m, t in self.conditions)
        if not conditions or any(m not in _SAFETY_METRICS for m, _ in conditions):
            raise PatientTwinError(
                f"`Safety.conditions` must be (metric, threshold) pairs with metrics in "
                f"{list(_SAFETY_METRICS)}, got {self.conditions!r}"
            )
        object.__setattr__(self, "conditions", conditions)
        if not 0 <= float(self.limit) <= 1:
            raise PatientTwinError(f"`Safety.limit` must lie in [0, 1], got {self.limit!r}")

    def unsafe(self, metrics: Mapping[str, Any]) -> np.ndarray:
        """Whether each draw crosses a threshold (arrays over draws; missing metrics skip)."""
        out = None
        for metric, threshold in self.conditions:
            if metric not in metrics:
                continue
            crossed = np.asarray(metrics[metric]) > threshold
            out = crossed if out is None else out | crossed
        if out is None:
            raise PatientTwinError(f"no metric of {self.conditions!r} was predicted")
        return out

    def describe(self) -> str:
        """Plain-language statement."""
        what = self.text or " or ".join(f"{m} > {t:g}" for m, t in self.conditions)
        return f"{what} (a regimen is excluded above {100 * self.limit:.0f} % probability)"


def default_safety(drug: str) -> Safety | None:
    """The safety threshold of a library drug (``None`` for a drug without one).

    Examples
    --------
    >>> default_safety("vancomycin").conditions
    (('auc24', 650.0), ('trough', 20.0))
    """
    try:
        meta = drug_metadata(drug)
    except DrugLibraryError:
        return None
    safety = meta.get("safety")
    if safety is None:
        return None
    return Safety(
        output=str(safety["output"]),
        conditions=tuple(tuple(c) for c in safety["conditions"]),
        limit=float(safety["limit"]),
        text=str(safety.get("describe", "")),
        source=str(safety.get("source", "")),
    )


@dataclass(frozen=True)
class _Practical:
    """Practical dosing of a drug: available doses, standard intervals, infusion rule."""

    strengths_mg: tuple[float, ...]
    intervals_h: tuple[float, ...]
    horizon_h: float
    infusion_mg_per_h: float | None = None  # IV infusions at this rate (None: bolus)
    min_infusion_h: float = 1.0
    source: str = ""


# Dosing facts not in the library's metadata: what a pharmacy can dispense.
_PRACTICAL: dict[str, _Practical] = {
    "vancomycin": _Practical(
        strengths_mg=tuple(float(a) for a in range(500, 3001, 250)),
        intervals_h=(8.0, 12.0, 24.0),
        horizon_h=72.0,
        infusion_mg_per_h=1000.0,
        source="doses rounded to 250 mg (vials of 500, 750, 1000 mg); infusion 1 h per 1 g, "
        "at least 1 h (Rybak et al. 2020); label limits from drug_metadata('vancomycin')",
    ),
    "warfarin": _Practical(
        strengths_mg=(1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 7.5, 8.0, 9.0, 10.0),
        intervals_h=(24.0,),
        horizon_h=336.0,
        source="tablet strengths 1, 2, 2.5, 3, 4, 5, 6, 7.5, 10 mg, halves and sums; once "
        "daily; at most 10 mg/day and no loading dose (label; drug_metadata('warfarin'))",
    ),
    "theophylline": _Practical(
        strengths_mg=tuple(float(a) for a in range(100, 801, 50)),
        intervals_h=(8.0, 12.0, 24.0),
        horizon_h=72.0,
        source="immediate-release 100/200/300 mg tablets, scored (50 mg steps); at most "
        "600 mg per dose and 900 mg/day (drug_metadata('theophylline'))",
    ),
}


@dataclass(frozen=True)
class LabelLimits:
    """A drug's label limits on one regimen (from ``drug_metadata(drug)["label"]``)."""

    max_single_mg: float = math.inf
    max_daily_mg: float = math.inf
    max_loading_mg: float = math.inf
    loading_allowed: bool = True
    source: str = ""

    def violation(self, regimen: Regimen) -> str | None:
        """Why ``regimen`` breaks the label, or ``None``."""
        daily = regimen.amount_mg * 24.0 / regimen.interval_h
        if regimen.amount_mg > self.max_single_mg + 1e-9:
            return f"a single dose above the label maximum of {self.max_single_mg:g} mg"
        if daily > self.max_daily_mg + 1e-9:
            return f"{daily:g} mg/day, above the label maximum of {self.max_daily_mg:g} mg/day"
        if regimen.loading_mg is not None:
            if not self.loading_allowed:
                return "a loading dose, which the label does not recommend"
            if regimen.loading_mg > self.max_loading_mg + 1e-9:
                return f"a loading dose above the label maximum of {self.max_loading_mg:g} mg"
        return None


def label_limits(drug: str | None) -> LabelLimits:
    """The label limits of a library drug (no limits for other models).

    Examples
    --------
    >>> label_limits("warfarin").max_daily_mg, label_limits("warfarin").loading_allowed
    (10.0, False)
    """
    try:
        label = drug_metadata(drug or "").get("label")
    except DrugLibraryError:
        return LabelLimits()
    if not label:
        return LabelLimits()
    return LabelLimits(
        max_single_mg=float(label.get("max_single_mg", math.inf)),
        max_daily_mg=float(label.get("max_daily_mg", math.inf)),
        max_loading_mg=float(label.get("max_loading_mg", label.get("max_single_mg", math.inf))),
        loading_allowed=bool(label.get("loading_allowed", True)),
        source=str(label.get("source", "")),
    )


@dataclass(frozen=True)
class Regimen:
    """A candidate regimen: ``amount_mg`` every ``interval_h`` hours, optionally after a
    loading dose.

    Parameters
    ----------
    amount_mg
        Maintenance dose, mg.
    interval_h
        Dosing interval, h.
    start_h
        Time of the first dose, h (default: the twin's next dose time, see
        :attr:`PatientTwin.next_dose_time`).
    n_doses
        Number of doses (default: until the end of the prediction horizon).
    loading_mg
        A first dose of this amount instead of ``amount_mg``.
    route
        Route name of the structural model (default: the drug's route, or the model's
        first route).
    infusion_h
        Infusion duration of each dose (default: the drug's practical rule, e.g. 1 h per
        1 g of vancomycin; bolus for oral routes).

    Examples
    --------
    >>> Regimen(1250.0, 12.0, loading_mg=2000.0).describe()
    '2000 mg loading dose, then 1250 mg every 12 h'
    """

    amount_mg: float
    interval_h: float
    start_h: float | None = None
    n_doses: int | None = None
    loading_mg: float | None = None
    route: str | None = None
    infusion_h: float | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.amount_mg) and self.amount_mg > 0):
            raise PatientTwinError(
                f"`Regimen.amount_mg` must be a dose > 0 mg, got {self.amount_mg!r}"
            )
        if not (np.isfinite(self.interval_h) and self.interval_h > 0):
            raise PatientTwinError(
                f"`Regimen.interval_h` must be > 0 h, got {self.interval_h!r}; e.g. 12.0"
            )
        if self.loading_mg is not None and not self.loading_mg > 0:
            raise PatientTwinError(
                f"`Regimen.loading_mg` must be > 0 mg or None, got {self.loading_mg!r}"
            )
        if self.n_doses is not None and int(self.n_doses) < 1:
            raise PatientTwinError(f"`Regimen.n_doses` must be ≥ 1, got {self.n_doses!r}")

    def describe(self) -> str:
        """Plain-language text of the regimen."""
        text = f"{self.amount_mg:g} mg every {self.interval_h:g} h"
        if self.loading_mg is not None:
            text = f"{self.loading_mg:g} mg loading dose, then " + text
        if self.n_doses is not None:
            text += f" ({self.n_doses} doses)"
        return text

    def doses(self, twin: PatientTwin, *, horizon_h: float) -> list[Dose]:
        """The dose records from the start to the end of the horizon."""
        start = twin.next_dose_time if self.start_h is None else float(self.start_h)
        n = (
            int(self.n_doses)
            if self.n_doses is not None
            else max(1, math.floor(horizon_h / self.interval_h + 1e-9) + 1)
        )
        compartment = twin._compartment(self.route)
        out = []
        for k in range(n):
            amount = self.loading_mg if (k == 0 and self.loading_mg is not None) else self.amount_mg
            duration = twin._infusion_h(amount, self.route, self.infusion_h)
            out.append(
                Dose(
                    start + k * self.interval_h,
                    float(amount),
                    compartment=compartment,
                    rate=0.0,
                    duration=duration,
                )
            )
        return out
