"""The :class:`TrialDesign` spec: who is enrolled, which arms, what is measured and analysed.

A design is read from YAML with :func:`load_trial` and validated once; every problem is
reported as one line naming the field (dotted path), the value received, what was expected
and how to fix it (:class:`~twinsim.scenarios.SpecError`, a ``ValueError``).

Times are h from the first dose (text with a unit such as ``"4 d"`` is accepted), amounts
mg, concentrations mg/L.

``model`` (optional) names a trained latent model folder (``twinsim train ... --out
MODEL_DIR``) whose mechanistic prior is ``drug``: each subject's dynamics then come from it
(its covariate model, latent draw and learned correction) instead of the published
population model; ``twinsim trial DESIGN --model MODEL_DIR`` sets it from the command line.
"""

from __future__ import annotations

import math
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ...priors import CovariateError, DrugLibraryError, drug_model
from .._patient import read_spec_mapping
from .._population import PopulationSpec
from .._regimen import SpecError, SpecModel
from .._trained_spec import TrainedModelSpec, resolve_model_field
from .._units import UnitError, parse_quantity

__all__ = [
    "AnalysisSpec",
    "ArmSpec",
    "Band",
    "DropoutSpec",
    "EndpointSpec",
    "LoadingSpec",
    "RandomisationSpec",
    "TitrationSpec",
    "TrialDesign",
    "TrialError",
    "TrialPopulationSpec",
    "load_trial",
    "trial_examples",
]

#: Candidates of replicate ``r`` are numbered ``r · REPLICATE_STRIDE + j`` (keys are folded
#: from the root seed with these numbers, which must stay below 2³²).
REPLICATE_STRIDE = 2**20
MAX_REPLICATES = 2**32 // REPLICATE_STRIDE - 1


class TrialError(ValueError):
    """A trial cannot run as asked (the message says why and how to fix it)."""


def _hours(value: Any, field: str) -> float:
    try:
        return float(parse_quantity(value, "time", field=field))
    except UnitError as error:
        raise ValueError(str(error)) from None


def _mg(value: Any, field: str) -> float:
    try:
        return float(parse_quantity(value, "amount", field=field))
    except UnitError as error:
        raise ValueError(str(error)) from None


# ---------------------------------------------------------------------------- population
#: Who is screened (the settings are shared with cohort specs: :class:`PopulationSpec`).
TrialPopulationSpec = PopulationSpec


# ---------------------------------------------------------------------------- arms
class LoadingSpec(SpecModel):
    """The first ``doses`` doses: a fixed ``dose`` (mg) or ``factor`` × the maintenance dose."""

    doses: int = Field(1, ge=1)
    dose: float | None = None
    factor: float | None = Field(None, gt=0)

    @field_validator("dose", mode="before")
    @classmethod
    def _dose(cls, v: Any) -> Any:
        return None if v is None else _mg(v, "loading.dose")

    @model_validator(mode="after")
    def _one(self) -> LoadingSpec:
        if (self.dose is None) == (self.factor is None):
            raise ValueError(
                f"give exactly one of `dose` (mg) or `factor` (× the maintenance dose), got "
                f"dose={self.dose!r}, factor={self.factor!r}; e.g. {{doses: 2, dose: 10}}"
            )
        if self.dose is not None and self.dose < 0:
            raise ValueError(f"`dose` must be ≥ 0 mg, got {self.dose!r}")
        return self


class Band(SpecModel):
    """One band of a titration nomogram: a measurement in ``[low, high)`` multiplies the
    dose by ``factor`` and withholds the next ``hold`` doses."""

    low: float = -math.inf
    high: float = math.inf
    factor: float = Field(..., gt=0)
    hold: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> Band:
        if not self.low < self.high:
            raise ValueError(
                f"`low` must be < `high`, got low={self.low!r}, high={self.high!r}; "
                "a band is [low, high)"
            )
        return self


class TitrationSpec(SpecModel):
    """An adaptive rule applied at decision times on simulated measurements (with assay error).

    Kinds
    -----
    ``bands``
        A nomogram: the level of ``output`` measured before the dose at each decision time
        falls in one of ``bands``, which scales the dose (INR-guided warfarin titration).
    ``proportional``
        Trough-guided: the pre-dose level ``output`` at the decision time; when outside
        ``range`` the dose is scaled by ``target / level`` (linear pharmacokinetics).
    ``auc``
        AUC-guided: two levels in the interval before the decision time — a peak
        ``peak_after`` h after the start of the previous dose and the trough at the
        decision time — give the AUC over 24 h by the log-linear (Sawchuk–Zaske) method;
        when outside ``range`` the dose is scaled by ``target / AUC24``.

    The new dose is clipped to ``[min_factor, max_factor]`` × the current one and to
    ``[min_dose, max_dose]``, and rounded to ``round_to`` mg.
    """

    kind: Literal["bands", "proportional", "auc"]
    output: str
    at: list[float]
    bands: list[Band] = Field(default_factory=list)
    target: float | None = Field(None, gt=0)
    range: tuple[float, float] | None = None
    peak_after: float | None = None
    min_factor: float = Field(0.25, gt=0)
    max_factor: float = Field(4.0, gt=0)
    min_dose: float = Field(0.0, ge=0)
    max_dose: float = Field(math.inf, gt=0)
    round_to: float = Field(0.0, ge=0)

    @field_validator("at", mode="before")
    @classmethod
    def _times(cls, v: Any) -> Any:
        if not isinstance(v, list | tuple) or not v:
            raise ValueError(f"must be a non-empty list of decision times (h), got {v!r}")
        return [_hours(t, f"at[{i}]") for i, t in enumerate(v)]

    @field_validator("peak_after", mode="before")
    @classmethod
    def _peak(cls, v: Any) -> Any:
        return None if v is None else _hours(v, "peak_after")

    @model_validator(mode="after")
    def _check(self) -> TitrationSpec:
        if any(t <= 0 for t in self.at) or sorted(set(self.at)) != list(self.at):
            raise ValueError(
                f"`at` must be increasing decision times > 0 h, got {self.at}; sort them"
            )
        if self.kind == "bands" and not self.bands:
            raise ValueError(
                "kind 'bands' needs `bands` (a nomogram), got none; e.g. "
                "[{high: 1.5, factor: 1.15}, {low: 1.5, high: 2, factor: 1.1}, ...]"
            )
        if self.kind in ("proportional", "auc") and self.target is None:
            raise ValueError(f"kind {self.kind!r} needs `target` (> 0), got none")
        if self.kind == "auc" and self.peak_after is None:
            raise ValueError(
                "kind 'auc' needs `peak_after`: the peak sample's time after the start of the "
                "dose before the decision (h), e.g. 2 for a 1-h infusion"
            )
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"`range` must be (low, high) with low < high, got {self.range}")
        if self.min_factor > self.max_factor:
            raise ValueError(
                f"`min_factor` ({self.min_factor}) must be ≤ `max_factor` ({self.max_factor})"
            )
        return self


class ArmSpec(SpecModel):
    """One arm: a regimen (fixed, placebo or formula-based initial dose) and an optional rule.

    ``dose`` is the maintenance dose (mg, or text such as ``"1 g"``); ``dose_formula`` an
    expression over the covariate columns giving it per subject (genotype-guided dosing,
    mg/kg dosing: ``"15 * weight"``); ``placebo: true`` gives no drug.
    """

    name: str = Field(..., min_length=1)
    control: bool = False
    placebo: bool = False
    dose: float | None = None
    dose_formula: str | None = None
    interval: float = 24.0
    route: str | None = None
    infusion: float = 0.0
    loading: LoadingSpec | None = None
    titration: TitrationSpec | None = None

    @field_validator("dose", mode="before")
    @classmethod
    def _dose(cls, v: Any) -> Any:
        return None if v is None else _mg(v, "dose")

    @field_validator("interval", "infusion", mode="before")
    @classmethod
    def _time(cls, v: Any, info: Any) -> Any:
        return _hours(v, info.field_name)

    @model_validator(mode="after")
    def _check(self) -> ArmSpec:
        given = sum(x is not None for x in (self.dose, self.dose_formula)) + self.placebo
        if given != 1:
            raise ValueError(
                f"arm {self.name!r} needs exactly one of `dose` (mg), `dose_formula` "
                f"(expression over covariates) or `placebo: true`, got dose={self.dose!r}, "
                f"dose_formula={self.dose_formula!r}, placebo={self.placebo!r}"
            )
        if self.dose is not None and self.dose < 0:
            raise ValueError(f"`dose` must be ≥ 0 mg, got {self.dose!r}")
        if not self.interval > 0:
            raise ValueError(f"`interval` must be > 0 h, got {self.interval!r}; e.g. 24")
        if self.infusion < 0 or self.infusion >= self.interval:
            raise ValueError(
                f"`infusion` must be ≥ 0 h and shorter than `interval` ({self.interval} h), "
                f"got {self.infusion!r}"
            )
        if self.dose_formula is not None:
            from ...twin._virtual import _compile

            try:
                _compile(self.dose_formula)
            except CovariateError as error:
                raise ValueError(f"`dose_formula`: {error}") from None
        if self.placebo and self.titration is not None:
            raise ValueError(f"arm {self.name!r} is a placebo arm; remove its `titration`")
        return self


class RandomisationSpec(SpecModel):
    """Allocation ``ratio`` (one whole number per arm, in arm order), permuted blocks of
    ``block`` × sum(ratio), stratified by covariate columns ``stratify``."""

    ratio: list[int] | None = None
    block: int = Field(1, ge=1)
    stratify: list[str] = Field(default_factory=list)


class DropoutSpec(SpecModel):
    """Dropout: the share ``by_end`` lost by the end of the trial (constant hazard)."""

    by_end: float = Field(0.0, ge=0, lt=1)


class EndpointSpec(SpecModel):
    """A subject-level endpoint.

    Kinds
    -----
    ``time_in_range``
        Share of ``window`` with ``output`` in ``[low, high]``, by linear interpolation
        between the measured values (Rosendaal), 0–1.
    ``value``
        ``output`` measured at visit ``at``; or with ``auc: true`` the exact AUC of the
        noise-free trajectory over ``window`` (mg·h/L).
    ``change``
        Measured ``output`` at ``at`` minus its measured value at 0 h.
    ``in_range``
        1 when the value (as for ``value``) lies in ``[low, high]``, else 0.
    ``event``
        1 when ``output`` exceeds ``above`` (or falls below ``below``) at some visit in
        ``window`` (or the AUC over ``window`` does, with ``auc: true``).
    ``time_to_event``
        Time (h) of the first visit in ``window`` where the threshold is crossed; censored
        at the last visit attended.
    """

    name: str = Field(..., min_length=1)
    kind: Literal["time_in_range", "value", "change", "in_range", "event", "time_to_event"]
    output: str
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None
    at: float | None = None
    window: tuple[float, float] | None = None
    auc: bool = False

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, v: Any) -> Any:
        return None if v is None else _hours(v, "at")

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, list | tuple) or len(v) != 2:
            raise ValueError(f"must be [start, end] in h, got {v!r}")
        return tuple(_hours(t, f"window[{i}]") for i, t in enumerate(v))

    @model_validator(mode="after")
    def _check(self) -> EndpointSpec:
        need_window = self.kind in ("time_in_range", "event", "time_to_event") or self.auc
        if need_window and (self.window is None or not self.window[0] < self.window[1]):
            raise ValueError(
                f"endpoint {self.name!r} ({self.kind}{', auc' if self.auc else ''}) needs "
                f"`window: [start, end]` with start < end (h), got {self.window!r}"
            )
        if self.kind in ("value", "change", "in_range") and not self.auc and self.at is None:
            raise ValueError(
                f"endpoint {self.name!r} ({self.kind}) needs `at`: the visit time (h), got none"
            )
        if self.kind in ("time_in_range", "in_range") and (
            self.low is None or self.high is None or not self.low < self.high
        ):
            raise ValueError(
                f"endpoint {self.name!r} ({self.kind}) needs `low` < `high`, got "
                f"low={self.low!r}, high={self.high!r}"
            )
        if self.kind in ("event", "time_to_event") and (self.above is None) == (self.below is None):
            raise ValueError(
                f"endpoint {self.name!r} ({self.kind}) needs exactly one threshold, `above` "
                f"or `below`, got above={self.above!r}, below={self.below!r}"
            )
        if self.auc and self.kind in ("change", "time_in_range", "time_to_event"):
            raise ValueError(f"`auc: true` is for value, in_range and event, not {self.kind!r}")
        return self

    @property
    def binary(self) -> bool:
        return self.kind in ("in_range", "event")


class AnalysisSpec(SpecModel):
    """How an endpoint is compared between each arm and the control arm.

    Methods
    -------
    ``difference``
        Difference in means (OLS on the arm) or, for a binary endpoint, in proportions
        (Wald confidence interval, score test; statsmodels).
    ``ancova``
        OLS of the endpoint on the arm and baseline ``covariates``.
    ``procova``
        OLS on the arm and a prognostic score: each subject's twin at baseline (typical
        parameters for its covariates, no measurements) simulated under the control arm,
        its endpoint being the predicted control outcome.
    ``cox``
        Cox proportional hazards (time-to-event endpoints): log hazard ratio.
    """

    endpoint: str
    method: Literal["difference", "ancova", "procova", "cox"] = "difference"
    covariates: list[str] = Field(default_factory=list)
    alpha: float = Field(0.05, gt=0, lt=1)
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"{self.endpoint}:{self.method}"


# ---------------------------------------------------------------------------- design
class TrialDesign(TrainedModelSpec):
    """A virtual trial: population, arms, schedule, endpoints, analyses, replicates, seed.

    Examples
    --------
    >>> design = TrialDesign.model_validate({
    ...     "drug": "vancomycin", "duration": "3 d", "visits": [36, 72],
    ...     "arms": [{"name": "1 g", "control": True, "dose": "1 g", "interval": 12,
    ...               "infusion": 1}, {"name": "1.25 g", "dose": 1250, "interval": 12,
    ...               "infusion": 1}],
    ...     "sample_size": [10, 20], "replicates": 5,
    ...     "endpoints": [{"name": "trough", "kind": "value", "output": "conc", "at": 72}],
    ...     "analyses": [{"endpoint": "trough"}]})
    >>> design.n_max, [a.name for a in design.arms], design.control_index
    (20, ['1 g', '1.25 g'], 0)
    """

    name: str = "virtual trial"
    description: str = ""
    population: TrialPopulationSpec = Field(default_factory=TrialPopulationSpec)
    arms: list[ArmSpec] = Field(..., min_length=2)
    randomisation: RandomisationSpec = Field(default_factory=RandomisationSpec)
    sample_size: list[int] = Field(..., min_length=1)
    duration: float
    visits: list[float] = Field(..., min_length=1)
    assay_error: bool = True
    dropout: DropoutSpec = Field(default_factory=DropoutSpec)
    missed_dose_probability: float = Field(0.0, ge=0, lt=1)
    endpoints: list[EndpointSpec] = Field(..., min_length=1)
    analyses: list[AnalysisSpec] = Field(..., min_length=1)
    replicates: int = Field(100, ge=1, le=MAX_REPLICATES)
    seed: int = Field(0, ge=0, lt=2**32)
    auc_step: float = Field(0.25, gt=0)
    trajectory_step: float | None = Field(None, gt=0)
    references: list[str] = Field(default_factory=list)

    @field_validator("sample_size", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> Any:
        values = v if isinstance(v, list | tuple) else [v]
        if not values or any(
            not isinstance(x, int) or isinstance(x, bool) or x < 2 for x in values
        ):
            raise ValueError(
                f"must be a whole number ≥ 2 of subjects per arm, or a list of them for a power "
                f"curve, got {v!r}; e.g. [50, 100, 200]"
            )
        return sorted(set(values))

    @field_validator("trajectory_step", mode="before")
    @classmethod
    def _step(cls, v: Any) -> Any:
        return None if v is None else _hours(v, "trajectory_step")

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return _hours(v, "duration")

    @field_validator("visits", mode="before")
    @classmethod
    def _visits(cls, v: Any) -> Any:
        if not isinstance(v, list | tuple):
            raise ValueError(f"must be a list of visit times (h), got {v!r}; e.g. [72, 168]")
        return [_hours(t, f"visits[{i}]") for i, t in enumerate(v)]

    @field_validator("drug")
    @classmethod
    def _drug(cls, v: str) -> str:
        try:
            drug_model(v)
        except DrugLibraryError as error:
            raise ValueError(str(error)) from None
        return v.strip().lower()

    @model_validator(mode="after")
    def _check(self) -> TrialDesign:
        problems: list[str] = []
        mismatch = self.prior_problem()
        if mismatch is not None:
            raise ValueError(f"`model` {mismatch}")
        model = self.population_model()
        outputs = model.structural.output_names
        routes = dict(model.structural.routes)
        if self.duration <= 0:
            problems.append(f"`duration` must be > 0 h, got {self.duration!r}")
        bad = [t for t in self.visits if not 0 <= t <= self.duration]
        if bad or sorted(set(self.visits)) != list(self.visits):
            problems.append(
                f"`visits` must be increasing times within [0, duration = {self.duration} h], "
                f"got {self.visits}; sort them and drop those past the end"
            )
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            problems.append(f"`arms` names must be unique, got {names}")
        controls = [i for i, a in enumerate(self.arms) if a.control]
        if len(controls) > 1:
            problems.append(
                f"`arms`: at most one arm has `control: true`, got {[names[i] for i in controls]}"
            )
        for i, arm in enumerate(self.arms):
            route = arm.route or next(iter(routes))
            if route not in routes:
                problems.append(
                    f"`arms[{i}].route` must be one of {list(routes)} for {self.drug}, got "
                    f"{arm.route!r}"
                )
            if arm.titration is not None:
                t = arm.titration
                if t.output not in outputs:
                    problems.append(
                        f"`arms[{i}].titration.output` must be one of {list(outputs)}, got "
                        f"{t.output!r}"
                    )
                if t.at[-1] >= self.duration:
                    problems.append(
                        f"`arms[{i}].titration.at` must be before the end ({self.duration} h), "
                        f"got {t.at}"
                    )
                if t.kind == "auc" and any(
                    a - arm.interval + (t.peak_after or 0) <= 0 for a in t.at
                ):
                    problems.append(
                        f"`arms[{i}].titration.at`: an AUC decision needs a dose interval "
                        f"before it (peak at decision − interval + peak_after > 0), got {t.at}"
                    )
        if self.randomisation.ratio is not None and (
            len(self.randomisation.ratio) != len(self.arms)
            or any(r < 1 for r in self.randomisation.ratio)
        ):
            problems.append(
                f"`randomisation.ratio` needs one whole number ≥ 1 per arm ({len(self.arms)}), "
                f"got {self.randomisation.ratio}"
            )
        from ...priors import COVARIATE_COLUMNS

        for j, column in enumerate(self.randomisation.stratify):
            if column not in COVARIATE_COLUMNS:
                problems.append(
                    f"`randomisation.stratify[{j}]` must be a covariate column, got {column!r}; "
                    f"e.g. vkorc1, female, ancestry"
                )
        ends = [e.name for e in self.endpoints]
        if len(set(ends)) != len(ends):
            problems.append(f"`endpoints` names must be unique, got {ends}")
        for i, e in enumerate(self.endpoints):
            if e.output not in outputs:
                problems.append(
                    f"`endpoints[{i}].output` must be one of {list(outputs)}, got {e.output!r}"
                )
            if e.at is not None and not e.auc and e.at not in self.visits:
                problems.append(
                    f"`endpoints[{i}].at` must be a visit time {self.visits}, got {e.at}; add "
                    "it to `visits`"
                )
            if e.window is not None and e.window[1] > self.duration:
                problems.append(
                    f"`endpoints[{i}].window` must end by `duration` ({self.duration} h), got "
                    f"{list(e.window)}"
                )
        for i, a in enumerate(self.analyses):
            if a.endpoint not in ends:
                problems.append(
                    f"`analyses[{i}].endpoint` must name an endpoint {ends}, got {a.endpoint!r}"
                )
                continue
            kind = self.endpoints[ends.index(a.endpoint)].kind
            if (kind == "time_to_event") != (a.method == "cox"):
                problems.append(
                    f"`analyses[{i}].method` {a.method!r} does not fit endpoint kind {kind!r}; "
                    "use 'cox' for time_to_event endpoints and difference/ancova/procova otherwise"
                )
            for column in a.covariates:
                if column not in COVARIATE_COLUMNS:
                    problems.append(
                        f"`analyses[{i}].covariates` must be covariate columns, got {column!r}"
                    )
            if a.method == "ancova" and not a.covariates:
                problems.append(f"`analyses[{i}]`: method 'ancova' needs `covariates`, got none")
        labels = [a.label for a in self.analyses]
        if len(set(labels)) != len(labels):
            problems.append(f"`analyses` must differ (endpoint, method or name), got {labels}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ------------------------------------------------------------------ derived
    @property
    def control_index(self) -> int:
        """Index of the control arm (the one marked ``control``, else the first)."""
        return next((i for i, a in enumerate(self.arms) if a.control), 0)

    @property
    def ratio(self) -> list[int]:
        return self.randomisation.ratio or [1] * len(self.arms)

    @property
    def n_max(self) -> int:
        """Largest sample size per (ratio-1) arm."""
        return max(self.sample_size)

    def arm_sizes(self, n: int) -> list[int]:
        """Subjects per arm for sample size ``n`` (``n`` × ratio / the control's ratio)."""
        base = self.ratio[self.control_index]
        return [max(2, round(n * r / base)) for r in self.ratio]

    def endpoint(self, name: str) -> EndpointSpec:
        return next(e for e in self.endpoints if e.name == name)


def load_trial(
    path: str | os.PathLike[str], *, model: str | os.PathLike[str] | None = None
) -> TrialDesign:
    """Read a :class:`TrialDesign` from a YAML or JSON file.

    ``model`` (a trained model folder) replaces the file's ``model``; a relative ``model``
    in the file counts from the file's folder.

    Raises
    ------
    SpecError
        Unreadable file, or one line per bad field (name, value, expectation, fix).

    Examples
    --------
    >>> design = load_trial(trial_examples()["vancomycin_auc_vs_trough"])
    >>> design.drug, [a.name for a in design.arms]
    ('vancomycin', ['trough-guided', 'AUC-guided'])
    """
    data = read_spec_mapping(
        path, what="trial design", fields="design fields (drug, arms, endpoints, ...)"
    )
    data = resolve_model_field(data, path, model)
    try:
        return TrialDesign.model_validate(data)
    except SpecError as error:
        raise SpecError(error.problems, title=f"invalid trial design {str(path)!r}") from None


def trial_examples() -> dict[str, Path]:
    """``{name: path}`` of the trial designs shipped with twinsim.

    Examples
    --------
    >>> sorted(trial_examples())
    ['vancomycin_auc_vs_trough', 'warfarin_genotype_guided']
    """
    folder = resources.files("twinsim.scenarios") / "_trial" / "examples"
    return {
        Path(str(p)).stem: Path(str(p))
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".yaml")
    }
