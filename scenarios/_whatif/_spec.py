"""What-if specs: one patient, the doses given and the levels measured, candidate regimens.

A what-if file asks the clinician's question — *this patient, these levels: what happens
with each of these regimens, and which regimen is most likely to hit the target?* —
and :func:`run_whatif` answers it with a patient twin (:class:`~twinsim.twin.PatientTwin`):
the drug's population model individualised on the measured levels, forecasts of each
regimen with 90 % bands, exposure metrics, the probability of target attainment (PTA)
and a recommended regimen. :func:`write_whatif_report` writes the answer as one HTML
page (plot, table, recommendation, the spec and the provenance). Example file::

    title: Vancomycin, reduced renal function
    drug: vancomycin
    patient: {id: V-01, age: 72 y, sex: male, weight: 80 kg, serum_creatinine: 1.9 mg/dL}
    history: 1250 mg over 90 min q12h x 4 doses      # doses given (t = 0: the first dose)
    observations:
      - {time: 37.5 h, value: 31.2 mg/L}              # peak after the 4th dose
      - {time: 47.5 h, value: "21.4 mg/L"}            # trough
    candidates: [1250 mg over 90 min q12h, 1000 mg over 1 h q12h, 1500 mg over 2 h q24h]
    horizon: 3 d                                      # forecast after the candidates start
    fit: map                                          # or laplace, importance, nuts, {method: nuts, ...}

Times count in hours from ``t = 0``, the time of the first dose of ``history`` (the
patient's smoking ``quit`` time counts from the same origin). Fields:

``drug``
    A drug of :data:`twinsim.priors.DRUG_LIBRARY` (``vancomycin``, ``warfarin``,
    ``theophylline``).
``model``
    Optional: a trained latent model folder (``twinsim train ... --out MODEL_DIR``;
    a relative path counts from the what-if file) to run the twin on instead of the
    library's published model of ``drug``. Its mechanistic prior must be ``drug`` (the
    targets, label limits and safety thresholds are the drug's), and the patient must
    give the covariates it was trained on (e.g. ``genotype: {CYP3A5: ...}``,
    ``ancestry``). ``twinsim whatif FILE --model MODEL_DIR`` sets it from the command
    line. The report and the provenance record name the folder, its prior and the
    hashes of its parameters and ``model.json``.
``patient``
    A :class:`~twinsim.scenarios.PatientSpec`; it must give every covariate the drug's
    model uses (e.g. the CYP2C9 and VKORC1 genotypes for warfarin). A genotype that was
    not tested is written ``not tested`` (``genotype: {CYP2C9: not tested, VKORC1: G/A}``;
    also ``untested``, ``unknown``, ``N/A``): the twin then averages over the genotypes of
    the patient's ``ancestry`` (required then: ``european``, ``east_asian`` or
    ``african``), and the report says so.
``history`` (alias ``doses``)
    The doses actually given: regimen text, or a list of dose records with their actual
    times (``{time: 12.5 h, amount: 1 g, duration: 1 h}``), or a mix (see
    :class:`~twinsim.scenarios.RegimenSpec`). Open-ended text (``q12h`` without a count)
    repeats until ``start``.
``observations``
    ``{time, value, output, lloq, below_lloq}``: ``value`` a number in the output's unit
    or text with a unit (``"12 µg/mL"``); below the limit of quantification write
    ``value: "<LLOQ"`` with ``lloq``, ``value: "<2 mg/L"``, or ``below_lloq: true`` with
    ``lloq``. ``output`` (alias ``kind``) is the model output: ``conc`` (default) or
    ``inr`` (warfarin).
``candidates``
    1–6 regimens to compare, as text (``"1250 mg over 90 min q12h"``) or
    ``{name, regimen}``. Their times count from ``start``; open-ended text repeats to
    the end of the horizon.
``start``
    When the candidate regimens begin, h (default: the next dose due after ``history``:
    the last dose's time plus its interval).
``horizon``
    How long to forecast after ``start`` (default 72 h).
``target``
    Override of the drug's therapeutic target: ``{metric, low, high}`` with ``metric`` one
    of ``auc24`` (mg·h/L), ``trough``, ``concentration`` (mg/L; text with other units
    accepted), ``time_in_range`` (the fraction of the horizon within ``[low, high]`` of
    ``output``) or ``inr``.
``fit``
    ``map`` (default), ``laplace``, ``importance`` (Laplace corrected by importance
    sampling), ``nuts``, or ``{method, prior_weight, seed, num_warmup, num_samples,
    num_chains}``.
``recommend``
    ``false``, or ``{strengths_mg, intervals_h, loading, top}`` for the search of
    practical regimens.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import AliasChoices, BeforeValidator, Field, field_validator, model_validator

from .._patient import PatientSpec, _raise, missing_covariates, read_spec_mapping
from .._regimen import Hours, RegimenSpec, SpecError, SpecModel, quantity
from .._trained_spec import TrainedModelSpec, library_model, resolve_model_field
from .._units import UnitError, parse_quantity

if TYPE_CHECKING:
    from ...priors import PopulationModel
    from ...simulators import Dose
    from ...twin import LatentModel, Target

__all__ = [
    "DEFAULT_HORIZON_H",
    "MAX_CANDIDATES",
    "TARGET_METRICS",
    "CandidateSpec",
    "FitOptions",
    "ObservationSpec",
    "RecommendOptions",
    "TargetSpec",
    "WhatIfSpec",
    "load_whatif",
    "whatif_examples",
    "whatif_json_schema",
]

#: At most this many candidate regimens in one what-if (the plot stays readable).
MAX_CANDIDATES = 6


#: Default forecast horizon after the candidate regimens start, h.
DEFAULT_HORIZON_H = 72.0


# ---------------------------------------------------------------------------- drugs
def _drug_names() -> tuple[str, ...]:
    from ...priors import DRUG_LIBRARY

    return tuple(DRUG_LIBRARY)


def _output_units(drug: str) -> dict[str, str]:
    return dict(library_model(drug).structural.output_units)


# ---------------------------------------------------------------------------- observations
_BELOW = re.compile(r"\s*(?:<|below|blq\b)\s*(.*?)\s*", re.IGNORECASE)


_OUTPUT_WORDS = {
    "conc": "conc",
    "concentration": "conc",
    "level": "conc",
    "drug level": "conc",
    "inr": "inr",
}


class ObservationSpec(SpecModel):
    """One measured level: time, value (or below the limit of quantification), output.

    Parameters
    ----------
    time
        When the sample was taken, h from the first dose (``"37.5 h"``, ``"1.5 d"``).
    value
        The measured value in the output's unit (mg/L for concentrations; INR has none),
        or text with a concentration unit (``"12 µg/mL"``). ``"<LLOQ"`` (with ``lloq``),
        ``"<2 mg/L"`` or ``"BLQ"`` mark a value below the limit of quantification.
    output
        Model output: ``conc`` (default; ``concentration``/``level`` accepted) or ``inr``;
        alias ``kind``.
    lloq
        Lower limit of quantification (same unit as ``value``).
    below_lloq
        The value was below ``lloq`` (set by the ``"<..."`` forms).

    Examples
    --------
    >>> ObservationSpec(time="36 h", value="<2.5 mg/L")
    ObservationSpec(time=36.0, value=None, output='conc', lloq=2.5, below_lloq=True)
    >>> ObservationSpec(time=12, value="15 ug/mL").value
    15.0
    """

    time: Hours
    value: Annotated[float | None, quantity("concentration")] = None
    output: str = Field("conc", validation_alias=AliasChoices("output", "kind"))
    lloq: Annotated[float | None, quantity("concentration")] = None
    below_lloq: bool = False

    @model_validator(mode="before")
    @classmethod
    def _below_limit_text(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("value"), str):
            return data
        match = _BELOW.fullmatch(data["value"])
        if match is None:
            return data
        data = {k: v for k, v in data.items() if k != "value"}
        data["below_lloq"] = True
        limit = match.group(1)
        if limit and limit.upper() not in ("LLOQ", "LOQ", "BLQ", "LOD"):
            if data.get("lloq") is not None:
                raise ValueError(
                    f"`value` {limit!r} after '<' and `lloq` {data['lloq']!r} both give the limit; "
                    "write value: '<LLOQ' with lloq, or value: '<2 mg/L' alone"
                )
            data["lloq"] = limit
        return data

    @field_validator("time")
    @classmethod
    def _time(cls, value: float) -> float:
        if value < 0:
            raise ValueError(
                f"must be ≥ 0 h, got {value:g} h; times count from the first dose (t = 0)"
            )
        return value

    @field_validator("output", mode="before")
    @classmethod
    def _output_word(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _OUTPUT_WORDS.get(value.strip().lower(), value.strip())
        return value

    @model_validator(mode="after")
    def _value_or_limit(self) -> ObservationSpec:
        if self.below_lloq:
            if self.lloq is None:
                raise ValueError(
                    "is below the limit of quantification but gives no limit; add `lloq` "
                    "(e.g. lloq: 2 mg/L) or write value: '<2 mg/L'"
                )
            if self.value is not None and self.value >= self.lloq:
                raise ValueError(
                    f"is flagged below_lloq with value {self.value:g} ≥ lloq {self.lloq:g}; "
                    "drop the value or the flag"
                )
            if not self.lloq > 0:
                raise ValueError(f"`lloq` must be > 0, got {self.lloq:g}")
            return self
        if self.value is None:
            raise ValueError(
                "has no `value`; give the measured value (e.g. value: 12.5 mg/L) or, below the "
                "limit of quantification, value: '<LLOQ' with lloq"
            )
        if self.value < 0:
            raise ValueError(f"`value` must be ≥ 0, got {self.value:g}; give the measured value")
        if self.lloq is not None and self.value < self.lloq:
            # a number below the limit is not a measurement (the fit would treat it as
            # one); the lab's "<LLOQ" is what the censored (M3) likelihood needs
            raise ValueError(
                f"has value {self.value:g} below its lloq {self.lloq:g}; a value below the limit "
                "of quantification is not measured: write value: '<LLOQ' (with lloq)"
            )
        return self


# ---------------------------------------------------------------------------- target
_AUC_UNITS = {"mg*h/L": 1.0, "mg·h/L": 1.0, "mg h/L": 1.0, "mg.h/L": 1.0, "mg*h/l": 1.0}


TARGET_METRICS = ("auc24", "trough", "concentration", "time_in_range", "inr")


def _target_value(value: Any, metric: str | None, field: str) -> float:
    if not isinstance(value, str):
        return value
    if metric == "auc24":
        match = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?)\s*(.*?)\s*", value)
        if match and (not match.group(2) or match.group(2) in _AUC_UNITS):
            return float(match.group(1))
        raise ValueError(
            f"`{field}` must be an AUC24 in mg·h/L (a number, or text such as '400 mg*h/L'), "
            f"got {value!r}"
        )
    if metric in ("inr", "time_in_range") and not re.search(r"[a-zA-Zµ/]", value):
        return float(value)
    try:
        return parse_quantity(value, "concentration", field=field)
    except UnitError as error:
        raise ValueError(str(error)) from None


class TargetSpec(SpecModel):
    """A therapeutic target: a metric of one output and its window ``[low, high]``.

    Parameters
    ----------
    metric
        ``auc24`` (mg·h/L over the last 24 h of the forecast), ``trough`` (mg/L, before
        the last dose of the forecast), ``concentration`` (mg/L) or ``inr`` (INR), or
        ``time_in_range`` of ``output``: attained when the output stays inside the
        window for ``required_fraction`` of the evaluation ``window``.
    low, high
        The window, in the metric's unit (text with a unit accepted).
    output
        The model output (default ``inr`` for ``metric: inr``, else ``conc``).
    source
        Where the target comes from (shown in the report).
    window
        Evaluation window: the last ``window`` hours of the forecast (default 24 h; 72 h
        for INR); AUC24 always uses the last 24 h.
    required_fraction
        For ``concentration``, ``inr`` and ``time_in_range``: the fraction of the window
        that must be in range for a draw to attain the target (default 90 % for
        ``concentration``, 60 % otherwise).

    Examples
    --------
    >>> TargetSpec(metric="concentration", low="10 ug/mL", high=20).low
    10.0
    """

    metric: Literal["auc24", "trough", "concentration", "time_in_range", "inr"]
    low: float
    high: float
    output: str | None = None
    source: str | None = None
    window: Hours | None = None
    required_fraction: Annotated[float | None, quantity("fraction")] = None

    @model_validator(mode="before")
    @classmethod
    def _units(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        problems = []
        metric = data.get("metric")
        for key in ("low", "high"):
            if key in data:
                try:
                    data[key] = _target_value(data[key], metric, key)
                except ValueError as error:
                    problems.append(((key,), str(error).removeprefix(f"`{key}` "), data[key]))
        _raise("target", problems)
        return data

    @model_validator(mode="after")
    def _window(self) -> TargetSpec:
        if not 0 <= self.low < self.high:
            raise ValueError(
                f"needs 0 ≤ low < high, got low={self.low:g}, high={self.high:g}; "
                "give the lower bound of the window first"
            )
        if self.window is not None and not self.window > 0:
            raise ValueError(f"`window` must be > 0 h, got {self.window:g} h; e.g. window: 3 d")
        if self.required_fraction is not None and not 0 < self.required_fraction <= 1:
            raise ValueError(
                f"`required_fraction` must be in (0, 1], got {self.required_fraction:g}; "
                "e.g. required_fraction: 60%"
            )
        return self

    @property
    def output_name(self) -> str:
        """The output the target is about."""
        return self.output or ("inr" if self.metric == "inr" else "conc")


# ---------------------------------------------------------------------------- options
def _method_shorthand(value: Any) -> Any:
    return {"method": value} if isinstance(value, str) else value


class FitOptions(SpecModel):
    """How the twin is fitted: ``map`` (fast), ``laplace`` (fast, with uncertainty),
    ``importance`` (the Laplace posterior corrected by importance sampling), ``nuts``.

    Parameters
    ----------
    method
        ``map``, ``laplace``, ``importance`` or ``nuts``.
    prior_weight
        Weight of the population prior against the patient's data (1: Bayes; < 1 trusts
        the data more), > 0.
    seed
        Root seed of the fit and of the forecast draws.
    num_warmup, num_samples, num_chains
        NUTS settings (``num_samples``: also the importance draws).
    n_draws
        Parameter draws behind each forecast band.
    """

    method: Literal["map", "laplace", "importance", "nuts"] = "map"
    prior_weight: float = Field(1.0, gt=0)
    seed: int = Field(0, ge=0)
    num_warmup: int = Field(500, ge=1)
    num_samples: int = Field(500, ge=1)
    num_chains: int = Field(2, ge=1)
    n_draws: int = Field(500, ge=10)

    @field_validator("method", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


def _recommend_shorthand(value: Any) -> Any:
    return {"enabled": value} if isinstance(value, bool) else value


class RecommendOptions(SpecModel):
    """The search of practical regimens (see :meth:`~twinsim.twin.TwinPosterior.recommend`).

    Parameters
    ----------
    enabled
        Search at all (``recommend: false`` turns it off).
    strengths_mg
        Dose sizes available (vials, tablets), mg; default: the twin's per-drug choice.
    intervals_h
        Dosing intervals to try, h.
    loading
        Also try a loading dose.
    top
        How many regimens to report.
    """

    enabled: bool = True
    strengths_mg: tuple[Annotated[float, quantity("amount")], ...] | None = None
    intervals_h: tuple[Hours, ...] | None = None
    loading: bool = False
    top: int = Field(3, ge=1, le=10)

    @field_validator("strengths_mg", "intervals_h")
    @classmethod
    def _positive(cls, values: tuple[float, ...] | None, info: Any) -> tuple[float, ...] | None:
        if values is None:
            return None
        unit = "mg" if info.field_name == "strengths_mg" else "h"
        bad = [v for v in values if not v > 0]
        if not values or bad:
            raise ValueError(
                f"must be a non-empty list of values > 0 {unit}, got {list(values)}; "
                f"e.g. {[250, 500, 750, 1000] if unit == 'mg' else [8, 12, 24]}"
            )
        return tuple(sorted(set(values)))


def _candidate_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"name": value.strip(), "regimen": value}
    return value


class CandidateSpec(SpecModel):
    """A candidate regimen: a name and a :class:`~twinsim.scenarios.RegimenSpec`.

    Text alone (``"1250 mg over 90 min q12h"``) is its own name.
    """

    name: str | None = None
    regimen: RegimenSpec

    @property
    def label(self) -> str:
        """The name, or a description of the regimen."""
        return self.name or _describe_regimen(self.regimen)


def _describe_regimen(regimen: RegimenSpec) -> str:
    parts = []
    for dose in regimen.doses:
        amount = (
            f"{dose.amount:g} mg" if dose.amount is not None else f"{dose.amount_per_kg:g} mg/kg"
        )
        if dose.duration:
            amount += f" over {dose.duration:g} h"
        if dose.interval:
            amount += f" q{dose.interval:g}h"
        if dose.time:
            amount += f" at {dose.time:g} h"
        parts.append(amount)
    return "; ".join(parts)


# ---------------------------------------------------------------------------- what-if
class WhatIfSpec(TrainedModelSpec):
    """A what-if question about one patient (see the module docs for the file form).

    Examples
    --------
    >>> spec = WhatIfSpec(
    ...     drug="vancomycin",
    ...     patient={"age": 72, "sex": "male", "weight": 80, "scr": 1.9},
    ...     history="1250 mg over 90 min q12h x 4 doses",
    ...     observations=[{"time": 47.5, "value": "21.4 mg/L"}],
    ...     candidates=["1000 mg over 1 h q12h", "1500 mg over 2 h q24h"],
    ... )
    >>> spec.candidate_start, spec.horizon, [c.label for c in spec.candidates]
    (48.0, 72.0, ['1000 mg over 1 h q12h', '1500 mg over 2 h q24h'])
    >>> [round(d.time, 1) for d in spec.candidate_doses()["1500 mg over 2 h q24h"]]
    [48.0, 72.0, 96.0]
    """

    title: str | None = None
    patient: PatientSpec
    history: RegimenSpec | None = Field(
        None, validation_alias=AliasChoices("history", "doses", "dosing_history")
    )
    observations: tuple[ObservationSpec, ...] = ()
    candidates: tuple[
        Annotated[
            CandidateSpec,
            BeforeValidator(_candidate_shorthand, json_schema_input_type=str | CandidateSpec),
        ],
        ...,
    ]
    start: Hours | None = None
    horizon: Hours = DEFAULT_HORIZON_H
    target: TargetSpec | None = None
    fit: Annotated[
        FitOptions, BeforeValidator(_method_shorthand, json_schema_input_type=str | FitOptions)
    ] = FitOptions()
    recommend: Annotated[
        RecommendOptions,
        BeforeValidator(_recommend_shorthand, json_schema_input_type=bool | RecommendOptions),
    ] = RecommendOptions()

    @model_validator(mode="before")
    @classmethod
    def _one_history(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in ("history", "doses", "dosing_history") if k in data]
            if len(given) > 1:
                raise ValueError(
                    f"give the dosing history once, as `history`; got {', '.join(given)}"
                )
        return data

    @field_validator("drug", mode="before")
    @classmethod
    def _known_drug(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        key = value.strip().lower()
        known = _drug_names()
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{value!r} is not a drug of the library{hint}; known drugs: {', '.join(known)}"
            )
        return key

    @field_validator("candidates")
    @classmethod
    def _candidate_count(cls, values: tuple[CandidateSpec, ...]) -> tuple[CandidateSpec, ...]:
        if not 1 <= len(values) <= MAX_CANDIDATES:
            raise ValueError(
                f"must list 1 to {MAX_CANDIDATES} regimens, got {len(values)}; e.g. "
                "candidates: ['1000 mg over 1 h q12h', '1250 mg over 90 min q12h']"
            )
        labels = [c.label for c in values]
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            raise ValueError(
                f"has the name {repeated[0]!r} twice; give each candidate its own `name`"
            )
        return values

    @field_validator("horizon")
    @classmethod
    def _horizon(cls, value: float) -> float:
        if not 0 < value <= 24 * 90:
            raise ValueError(f"must be between 0 and 90 d, got {value:g} h; e.g. horizon: 3 d")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WhatIfSpec:
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        mismatch = self.prior_problem()
        if mismatch is not None:
            problems.append((("model",), mismatch, self.model))
            _raise("what-if", problems)
        model = self.population_model()
        units = dict(model.structural.output_units)
        observed = [o for o in model.structural.output_names if o in model.residual]
        problems += self._covariate_problems(model)
        for i, obs in enumerate(self.observations):
            if obs.output not in observed:
                problems.append(
                    (
                        ("observations", i, "output"),
                        f"is {obs.output!r}, not a measured output of the {self.drug} model; "
                        f"its outputs: {', '.join(observed)}",
                        obs.output,
                    )
                )
        weight = self.patient.weight
        needs_weight = (self.history is not None and self.history.uses_weight) or any(
            c.regimen.uses_weight for c in self.candidates
        )
        if needs_weight and weight is None:
            problems.append(
                (
                    ("patient", "weight"),
                    "is required because a regimen doses per kg; give it, e.g. weight: 70 kg",
                    None,
                )
            )
        if self.history is not None and self.history.open_ended and self.start is None:
            problems.append(
                (
                    ("history",),
                    "repeats to the end (no count) but `start` is not given, so the number of "
                    "doses given is unknown; add a count (e.g. 'x 4 doses') or give `start`",
                    _describe_regimen(self.history),
                )
            )
        if self.target is not None and self.target.output_name not in units:
            problems.append(
                (
                    ("target", "output"),
                    f"is {self.target.output_name!r}, not an output of the {self.drug} model; "
                    f"its outputs: {', '.join(units)}",
                    self.target.output_name,
                )
            )
        _raise("what-if", problems)
        self._check_times()
        return self

    def _covariate_problems(
        self, model: PopulationModel
    ) -> list[tuple[tuple[str | int, ...], str, Any]]:
        """A covariate the drug's model uses but the patient does not give; the ancestry
        when a genotype the model uses is not tested."""
        from ...priors import ANCESTRIES, NOT_TESTED

        row = self.covariates()
        problems = []
        untested = [
            c.name.upper()
            for c in model.covariates
            if c.name in row and str(row[c.name][0]) == NOT_TESTED
        ]
        if untested and self.patient.ancestry is None:
            genes = " and ".join(untested) + (" is" if len(untested) == 1 else " are")
            problems.append(
                (
                    ("patient", "ancestry"),
                    f"is needed because {genes} not tested: the twin averages over the "
                    f"genotype frequencies of the patient's ancestry group; give one of "
                    f"{', '.join(repr(a) for a in ANCESTRIES)} (e.g. ancestry: european), or "
                    f"the genotype itself",
                    None,
                )
            )
        problems += [
            (("patient", *path), message, None)
            for path, message in missing_covariates(model, row, self._model_words())
        ]
        return problems

    def _check_times(self) -> None:
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        given = self.history_doses()
        start = self.candidate_start
        if given and start < given[-1].time:
            problems.append(
                (
                    ("start",),
                    f"is {start:g} h, before the last dose of the history ({given[-1].time:g} h); "
                    "candidate regimens start after the doses already given",
                    start,
                )
            )
        for i, obs in enumerate(self.observations):
            if obs.time > start:
                problems.append(
                    (
                        ("observations", i, "time"),
                        f"is {obs.time:g} h, after the candidate regimens start ({start:g} h); "
                        "observations are measured before the forecast; move `start` later",
                        obs.time,
                    )
                )
        _raise("what-if", problems)

    # ------------------------------------------------------------------ conversions
    def twin_model(self) -> str | LatentModel:
        """What :meth:`twinsim.twin.PatientTwin.create` takes: the drug's name, or the
        trained :class:`~twinsim.twin.LatentModel`."""
        trained = self.trained_model()
        return self.drug if trained is None else trained.model

    def _model_words(self) -> str:
        trained = self.trained_model()
        return (
            f"the {self.drug} model" if trained is None else f"the trained model {trained.name!r}"
        )

    # the two names :func:`~twinsim.scenarios.provenance_record` reads of a spec
    def model_definition(self) -> PopulationModel:
        return self.population_model()

    @property
    def seed(self) -> int:
        """Root seed of the fit and the forecast draws (``fit.seed``)."""
        return self.fit.seed

    def resolved_target(self) -> Target:
        """The :class:`~twinsim.twin.Target` of this what-if: ``target`` or the drug's own."""
        from ...twin import Target, default_target

        if self.target is None:
            return default_target(self.drug)
        t = self.target
        units = _output_units(self.drug)
        unit = "mg*h/L" if t.metric == "auc24" else units.get(t.output_name, "")
        window = t.window if t.window is not None else (72.0 if t.output_name == "inr" else 24.0)
        return Target(
            t.output_name,
            t.low,
            t.high,
            metric=t.metric,
            unit=unit,
            source=t.source or "set in the what-if spec",
            window_h=window,
            required_fraction=t.required_fraction,
        )

    def covariates(self) -> dict[str, np.ndarray]:
        """The patient's covariate row (arrays of length 1), with the drug's CrCL rules."""
        from ... import priors

        options = {"vancomycin": getattr(priors, "VANCOMYCIN_CRCL_OPTIONS", {})}
        return self.patient.covariates(**options.get(self.drug, {}))

    @property
    def candidate_start(self) -> float:
        """When the candidate regimens begin, h.

        ``start`` when given; otherwise the next dose due after the history (the last
        dose's time plus its interval), or the last observation when that is later.
        """
        if self.start is not None:
            return self.start
        last_observation = max((o.time for o in self.observations), default=0.0)
        given = self.history_doses()
        if not given:
            return last_observation
        next_due = given[-1].time + given[-1].interval
        return max(next_due, last_observation)

    @property
    def end(self) -> float:
        """End of the forecast, h."""
        return self.candidate_start + self.horizon

    def history_doses(self) -> list[Dose]:
        """The doses given, one :class:`~twinsim.simulators.Dose` per administration."""
        if self.history is None:
            return []
        until = self.start if self.history.open_ended else None
        return self.history.to_doses(
            self.population_model().structural, self.patient.weight, until=until
        )

    def candidate_doses(self) -> dict[str, list[Dose]]:
        """``{label: doses}`` of each candidate, shifted to start at :attr:`candidate_start`."""
        structural = self.population_model().structural
        start = self.candidate_start
        out = {}
        for candidate in self.candidates:
            doses = candidate.regimen.to_doses(structural, self.patient.weight, until=self.horizon)
            out[candidate.label] = [d.replace(time=d.time + start) for d in doses]
        return out

    def observation_records(self) -> list[dict[str, Any]]:
        """Observations as plain records (time h, value, output, below_lloq, lloq)."""
        return [obs.model_dump() for obs in self.observations]


# ---------------------------------------------------------------------------- files
def load_whatif(
    path: str | os.PathLike[str], *, model: str | os.PathLike[str] | None = None
) -> WhatIfSpec:
    """Read a :class:`WhatIfSpec` from a YAML or JSON file.

    ``model`` (a trained model folder) replaces the file's ``model``; a relative
    ``model`` in the file counts from the file's folder.

    Raises
    ------
    SpecError
        Missing file, invalid YAML/JSON, not a mapping, or an invalid spec (one line per
        bad field, naming it).

    Examples
    --------
    >>> spec = load_whatif(whatif_examples()["whatif_vancomycin_renal"])
    >>> spec.drug
    'vancomycin'
    """
    data = read_spec_mapping(
        path,
        what="what-if",
        fields="what-if fields (drug, patient, history, observations, candidates, ...)",
    )
    data = resolve_model_field(data, path, model)
    try:
        return WhatIfSpec.model_validate(data)
    except SpecError as error:
        raise SpecError(error.problems, title=f"invalid what-if {str(path)!r}") from None


def whatif_examples() -> dict[str, Path]:
    """``{name: path}`` of the what-if example files shipped in ``twinsim/scenarios/examples``.

    Examples
    --------
    >>> sorted(whatif_examples())  # doctest: +NORMALIZE_WHITESPACE
    ['whatif_theophylline_smoking_cessation', 'whatif_vancomycin_renal',
     'whatif_warfarin_cyp2c9_vkorc1']
    """
    from importlib import resources

    folder = resources.files("twinsim.scenarios") / "examples"
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.startswith("whatif_") and entry.name.endswith(".yaml")
    }


def whatif_json_schema() -> dict[str, Any]:
    """JSON Schema of :class:`WhatIfSpec` (for editors and form builders).

    Examples
    --------
    >>> sorted(whatif_json_schema()["required"])
    ['candidates', 'drug', 'patient']
    """
    return WhatIfSpec.model_json_schema()
