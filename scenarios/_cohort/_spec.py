"""Simulation specs: who is simulated, with which model, parameters, regimen and times.

A spec is what a scenario file (YAML or JSON), the command line or a dashboard form says;
it is validated once, here, with messages that name each bad field as a dotted path,
and converted to the core's units and arrays.

``model`` is a registered model name, a user model (``path/to/file.py:object``) or a
trained latent model folder (``twinsim train ... --out MODEL_DIR``; relative paths count
from the spec file). A trained model is a population model: its individual dynamics,
typical values and between-subject variation come from the model, so ``parameters``,
``variability`` and ``pd`` are not given; the subjects' covariates come from
``patients`` (``n_subjects`` draws each) or, without patients, from a virtual
``population`` (:class:`~twinsim.scenarios.PopulationSpec`, ``n_subjects`` subjects)::

    model: models/vancomycin-latent      # a folder with model.json and params/
    n_subjects: 200
    population: {ancestry: {european: 0.6, african: 0.4}, criteria: ["crcl >= 30"]}
    regimen: 1 g over 1 h q12h x 3 d
    times: {stop: 3 d, step: 1 h}

Example file with a registered model::

    model: pk_1cmt_oral
    parameters: {cl: 2.8 L/h, v: 32 L, ka: 1.5 1/h, f_oral: 1}
    variability: {cl: 30%, v: {omega: 0.04}}
    n_subjects: 50
    seed: 1
    regimen: 320 mg q12h x 3 d
    times: {start: 0 h, stop: 3 d, step: 30 min}
    patient: {id: A, age: 45 y, sex: female, weight: 150 lb, height: 5 ft 6 in,
              serum_creatinine: 80 µmol/L}
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .._regimen import Hours, RegimenSpec, SpecError, SpecModel, quantity
from .._units import CORE_UNITS, UnitError, parse_quantity

if TYPE_CHECKING:
    from ...priors import ODEModel, PopulationModel
    from ...simulators import Dose, DosingEvents
    from .._train import TrainedModel
from .._patient import PatientSpec, _raise, missing_covariates, read_spec_mapping
from .._population import PopulationSpec

__all__ = [
    "MODEL_REGISTRY",
    "OutputTimes",
    "SimulationSpec",
    "TimeGrid",
    "VariabilitySpec",
    "load_spec",
    "resolve_model",
    "spec_json_schema",
]


# ---------------------------------------------------------------------------- models
def _priors(factory: str, **options: Any) -> Callable[[], ODEModel]:
    """A model factory from :mod:`twinsim.priors`, imported when first used."""

    def build() -> ODEModel:
        from ... import priors

        return getattr(priors, factory)(**options)

    build.__doc__ = (
        f"twinsim.priors.{factory}({', '.join(f'{k}={v!r}' for k, v in options.items())})"
    )
    return build


#: Model names a spec may use, each mapped to a zero-argument factory. The names are the
#: models' own ``ODEModel.name``.
MODEL_REGISTRY: dict[str, Callable[[], ODEModel]] = {
    "pk_1cmt_iv": _priors("one_compartment"),
    "pk_1cmt_oral": _priors("one_compartment", absorption="first_order"),
    "pk_1cmt_oral_lag": _priors("one_compartment", absorption="first_order", lag=True),
    "pk_2cmt_iv": _priors("two_compartment"),
    "pk_2cmt_oral": _priors("two_compartment", absorption="first_order"),
    "pk_2cmt_oral_lag": _priors("two_compartment", absorption="first_order", lag=True),
    "pk_3cmt_iv": _priors("three_compartment"),
    "pk_3cmt_oral": _priors("three_compartment", absorption="first_order"),
    "pk_1cmt_mm_iv": _priors("michaelis_menten"),
    "pk_1cmt_mm_oral": _priors("michaelis_menten", absorption="first_order"),
}


@functools.cache
def resolve_model(name: str) -> ODEModel:
    """The model registered as ``name`` in :data:`MODEL_REGISTRY` (built once, then cached).

    Raises
    ------
    SpecError
        For an unknown name; the message lists the known ones.

    Examples
    --------
    >>> resolve_model("pk_1cmt_oral").parameters
    ('cl', 'v', 'ka', 'f_oral')
    """
    if _is_model_file(name):
        return _load_model_file(name)
    if _is_model_folder(name):
        return _trained(name).population_model().structural
    if name not in MODEL_REGISTRY:
        raise SpecError([_unknown_model_message(name)], title="unknown model")
    return MODEL_REGISTRY[name]()


def _is_model_file(name: Any) -> bool:
    """``path/to/file.py:object``: a user model in a Python file."""
    return isinstance(name, str) and ".py:" in name


def _is_model_folder(name: Any) -> bool:
    """A trained latent model folder (it holds ``model.json``)."""
    from .._train import is_model_folder

    return not _is_model_file(name) and is_model_folder(name)


def _trained(name: str) -> TrainedModel:
    """The trained model of a folder, a load failure as a :class:`SpecError`."""
    from ...twin import LatentModelError
    from .._train import trained_model

    try:
        return trained_model(name)
    except LatentModelError as error:
        raise SpecError([f"`model` {name!r}: {error}"], title="invalid model folder") from None


def _load_model_file(name: str) -> ODEModel:
    """The :class:`ODEModel` named ``object`` in ``file.py`` (``"file.py:object"``).

    ``object`` is a model, or a function without arguments that returns one. A relative
    path is relative to the working directory (:func:`load_spec` makes it relative to the
    spec file first).
    """
    import importlib.util

    from ...simulators import ODEModel

    file_name, _, attribute = name.rpartition(":")
    path = Path(file_name).expanduser()
    if not path.is_file():
        raise SpecError(
            [f"`model` {name!r}: no file {str(path)!r}; give path/to/file.py:object, the path "
             "relative to the spec file"],
            title="unknown model",
        )  # fmt: skip
    module_name = f"twinsim_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file: report any failure as a spec error
        raise SpecError(
            [f"`model` {name!r}: running {str(path)!r} failed: {type(error).__name__}: {error}"],
            title="invalid model file",
        ) from error
    if not hasattr(module, attribute):
        found = [
            k
            for k, v in vars(module).items()
            if isinstance(v, ODEModel)
            or (
                callable(v)
                and not k.startswith("_")
                and getattr(v, "__module__", None) == module_name
            )
        ]
        raise SpecError(
            [f"`model` {name!r}: {str(path)!r} has no {attribute!r}; it defines {found}"],
            title="unknown model",
        )  # fmt: skip
    model = getattr(module, attribute)
    if not isinstance(model, ODEModel) and callable(model):
        model = model()
    if not isinstance(model, ODEModel):
        raise SpecError(
            [f"`model` {name!r} must be an ODEModel (or a function returning one), got "
             f"{type(model).__name__}"],
            title="invalid model file",
        )  # fmt: skip
    return model


class PDStep(SpecModel):
    """One PD building block appended to the model (a ``pd:`` list item names exactly one).

    - ``effect_compartment: {driver: conc}`` adds the effect-site concentration ``ce``
      (parameter ``ke0``), :func:`twinsim.priors.with_effect_compartment`;
    - ``emax: {driver: ce, hill: true, output: effect, unit: "1"}`` adds a direct sigmoid
      Emax output (``e0``, ``emax``, ``ec50``, ``gamma``), :func:`twinsim.priors.with_emax`;
    - ``indirect_response: {kind: I, driver: conc, hill: false, unit: "1"}`` adds a
      response state (``kin``, ``kout``, ``imax``/``emax``, ``ic50``/``ec50``),
      :func:`twinsim.priors.with_indirect_response`.
    """

    effect_compartment: dict[str, Any] | None = None
    emax: dict[str, Any] | None = None
    indirect_response: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PDStep:
        given = [k for k in _PD_BLOCKS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"each `pd` item names one building block ({', '.join(_PD_BLOCKS)}), got "
                f"{given or 'none'}; write e.g. `- emax: {{driver: conc}}`"
            )
        return self

    def block(self) -> tuple[str, dict[str, Any]]:
        name = next(k for k in _PD_BLOCKS if getattr(self, k) is not None)
        return name, dict(getattr(self, name))


_PD_BLOCKS = ("effect_compartment", "emax", "indirect_response")


def _pd_key(pd: Any) -> tuple:
    return tuple((n, tuple(sorted(o.items()))) for n, o in (step.block() for step in pd))


@functools.cache
def _composed_model(name: str, pd_key: tuple) -> ODEModel:
    from ... import priors

    builders = {
        "effect_compartment": priors.with_effect_compartment,
        "emax": priors.with_emax,
        "indirect_response": priors.with_indirect_response,
    }
    model = resolve_model(name)
    for i, (block, options) in enumerate(pd_key):
        options = dict(options)
        try:
            if block == "indirect_response":
                if "kind" not in options:
                    raise TypeError("needs `kind` (I, II, III or IV)")
                model = builders[block](model, options.pop("kind"), **options)
            else:
                model = builders[block](model, **options)
        except (TypeError, ValueError) as error:
            import inspect

            accepted = [
                f"{k}={v.default!r}" if v.default is not inspect.Parameter.empty else k
                for k, v in inspect.signature(builders[block]).parameters.items()
                if k != "model"
            ]
            raise SpecError(
                [f"item {i} ({block}): {error}; got {dict(pd_key[i][1])}, accepted: {accepted}"],
                title="invalid pd block",
            ) from None
    return model


def spec_model(name: str, pd: Any = ()) -> ODEModel:
    """The model a spec simulates: ``model`` (registered name or ``file.py:object``) with
    its ``pd:`` building blocks appended in order."""
    if not pd:
        return resolve_model(name)
    return _composed_model(name, _pd_key(pd))


def _unknown_model_message(name: Any) -> str:
    close = difflib.get_close_matches(str(name), list(MODEL_REGISTRY), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"`model` {name!r} is not a known model{hint}; known models: {', '.join(MODEL_REGISTRY)}"
        ", a user model as path/to/file.py:object, or a trained model folder (with model.json)"
    )


def _parameter_kind(unit: str) -> str | None:
    """Quantity kind whose core unit is ``unit`` (``"L/h"`` → ``"clearance"``)."""
    for kind, core in CORE_UNITS.items():
        if core == unit and kind not in ("creatinine", "amount_per_weight"):
            return kind
    return None


# ---------------------------------------------------------------------------- variability
def _variability_shorthand(value: Any) -> Any:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return {"cv": value}
    return value


class VariabilitySpec(SpecModel):
    """Between-subject variability of one parameter, log-normal: ``θ_i = θ · exp(η_i)``.

    Give the coefficient of variation ``cv`` (a fraction, or ``"30%"``; a bare number or
    text in the parent mapping means ``cv``) or ``omega``, the variance of η (NONMEM's
    ``$OMEGA``). They are related by ``omega = log(1 + cv²)``.

    Examples
    --------
    >>> round(VariabilitySpec(cv="30%").omega_squared, 5)
    0.08618
    """

    cv: Annotated[float | None, quantity("fraction")] = None
    omega: float | None = None

    @model_validator(mode="after")
    def _one_of(self) -> VariabilitySpec:
        if (self.cv is None) == (self.omega is None):
            raise ValueError(
                f"give `cv` (e.g. '30%') or `omega` (variance of η), exactly one; got cv={self.cv}, "
                f"omega={self.omega}"
            )
        if self.cv is not None and not 0 < self.cv <= 2:
            hint = f" (did you mean '{self.cv:g}%'?)" if 2 < self.cv <= 200 else ""
            raise ValueError(f"`cv` must be a fraction in (0, 2], got {self.cv:g}{hint}")
        if self.omega is not None and not self.omega > 0:
            raise ValueError(f"`omega` (variance of η) must be > 0, got {self.omega:g}")
        return self

    @property
    def omega_squared(self) -> float:
        """Variance of η on the log scale (NONMEM ``$OMEGA``)."""
        if self.omega is not None:
            return self.omega
        assert self.cv is not None
        return math.log1p(self.cv**2)

    @property
    def eta_sd(self) -> float:
        """Standard deviation of η."""
        return math.sqrt(self.omega_squared)


# ---------------------------------------------------------------------------- times
class TimeGrid(SpecModel):
    """Regular output times ``start, start + step, ...`` up to and including ``stop``."""

    start: Hours = 0.0
    stop: Hours
    step: Hours

    def values(self) -> tuple[float, ...]:
        """The grid, h (``stop`` is included when it falls on the grid, within 1e-9 steps)."""
        count = math.floor((self.stop - self.start) / self.step + 1e-9) + 1
        return tuple(self.start + k * self.step for k in range(count))


_MAX_TIMES = 1_000_000


def _times_input(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    problems = []
    grid: dict[str, float] = {}
    for key in ("start", "stop", "step"):
        if key not in value:
            if key != "start":
                problems.append(((key,), "is required for a time grid {start, stop, step}", value))
            continue
        try:
            grid[key] = parse_quantity(value[key], "time")
        except UnitError as error:
            problems.append(((key,), str(error), value[key]))
    problems += [
        ((key,), "is not a field of a time grid; use start, stop, step", value[key])
        for key in value
        if key not in ("start", "stop", "step")
    ]
    _raise("times", problems)
    start, stop, step = grid.get("start", 0.0), grid["stop"], grid["step"]
    if not step > 0:
        _raise("times", [(("step",), f"must be > 0 h, got {step:g}", value["step"])])
    if stop < start:
        _raise(
            "times", [(("stop",), f"must be ≥ start ({start:g} h), got {stop:g} h", value["stop"])]
        )
    if (stop - start) / step >= _MAX_TIMES:
        _raise(
            "times",
            [
                (
                    ("step",),
                    f"gives more than {_MAX_TIMES} output times from {start:g} to {stop:g} h; use a larger step",
                    value["step"],
                )
            ],
        )
    return list(TimeGrid(start=start, stop=stop, step=step).values())


OutputTimes = Annotated[
    tuple[Hours, ...],
    BeforeValidator(_times_input, json_schema_input_type=list[float | str] | TimeGrid),
]


# ---------------------------------------------------------------------------- simulation
class SimulationSpec(SpecModel):
    """What to simulate: model, parameters, variability, regimen, output times, patients.

    Parameters
    ----------
    model
        A name from :data:`MODEL_REGISTRY` (e.g. ``"pk_2cmt_oral"``).
    parameters
        ``{name: value}`` for every parameter of the model, each > 0, in the model's units
        (``model.parameter_units``) or as text with a unit (``"2 mL/min"``).
    variability
        ``{parameter: cv}`` or ``{parameter: {cv | omega}}``: log-normal between-subject
        variability (see :class:`VariabilitySpec`).
    n_subjects
        Virtual subjects drawn from the variability for each patient (or for the typical
        patient when no patient is given).
    seed
        Root seed of the run.
    regimen
        A :class:`RegimenSpec` or its text form.
    times
        Output times (h): a strictly increasing list, or ``{start, stop, step}``.
    patients
        A list of :class:`PatientSpec`; ``patient:`` with one patient is accepted too.
    population
        With a trained model folder and no ``patients``: who the ``n_subjects`` subjects
        are (a virtual population, :class:`~twinsim.scenarios.PopulationSpec`; default
        European adults 18–85 y). Subject ``i``'s covariates depend only on the seed and
        ``i``.

    Examples
    --------
    >>> spec = SimulationSpec(
    ...     model="pk_1cmt_oral",
    ...     parameters={"cl": "2.8 L/h", "v": 32, "ka": 1.5, "f_oral": 1},
    ...     regimen="320 mg q12h x 1 d",
    ...     times={"start": 0, "stop": "1 d", "step": "6 h"},
    ... )
    >>> spec.times, [d.time for d in spec.doses()[0]]
    ((0.0, 6.0, 12.0, 18.0, 24.0), [0.0, 12.0])
    """

    model: str = Field(
        json_schema_extra={
            "examples": list(MODEL_REGISTRY),
            "description": "a registered model, path/to/file.py:object, or a trained model folder",
        }
    )
    pd: tuple[PDStep, ...] = ()
    parameters: dict[str, float] = Field(default_factory=dict, validate_default=True)
    variability: dict[str, Annotated[VariabilitySpec, BeforeValidator(_variability_shorthand)]] = (
        Field(default_factory=dict)
    )
    n_subjects: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    regimen: RegimenSpec
    times: OutputTimes
    patients: tuple[PatientSpec, ...] = ()
    population: PopulationSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_patient(cls, data: Any) -> Any:
        if isinstance(data, dict) and "patient" in data:
            if "patients" in data:
                raise ValueError("give `patient` (one) or `patients` (a list), not both")
            data = dict(data)
            data["patients"] = [data.pop("patient")]
        return data

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if _is_model_folder(name):
            try:
                _trained(name)
            except SpecError as error:
                problem = "; ".join(error.problems).removeprefix(f"`model` {name!r}: ")
                raise ValueError(problem) from None
            return str(Path(name).expanduser().absolute())
        if _is_model_file(name):
            try:
                resolve_model(name)
            except SpecError as error:
                raise ValueError("; ".join(error.problems).removeprefix("`model` ")) from None
            return name
        if name not in MODEL_REGISTRY:
            raise ValueError(_unknown_model_message(name).removeprefix("`model` "))
        return name

    @field_validator("pd")
    @classmethod
    def _pd_builds(cls, pd: tuple[PDStep, ...], info: ValidationInfo) -> tuple[PDStep, ...]:
        name = info.data.get("model")
        if name is not None and pd and _is_model_folder(name):
            raise ValueError(
                "cannot add building blocks to a trained model (its outputs are its own); "
                "remove `pd`"
            )
        if name is not None and pd:
            try:
                spec_model(name, pd)
            except SpecError as error:
                raise ValueError("; ".join(error.problems)) from None
        return pd

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters(cls, values: Any, info: ValidationInfo) -> Any:
        name = info.data.get("model")
        if name is not None and "pd" not in info.data:
            return {}  # the pd error is reported on its own (the parameters depend on it)
        if name is None or not isinstance(values, dict):
            return values  # the model error is reported on its own; pydantic reports the type
        if _is_model_folder(name):
            if values:
                raise ValueError(
                    f"come from the trained model {Path(name).name!r} (typical values for each "
                    f"subject's covariates, varied by its latent variable), got {values}; "
                    "remove `parameters`"
                )
            return {}
        model = spec_model(name, info.data["pd"])
        units = dict(model.parameter_units)
        listing = ", ".join(f"{p} ({units.get(p, '?')})" for p in model.parameters)
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        converted: dict[str, float] = {}
        for key, raw in values.items():
            if key not in model.parameters:
                problems.append(
                    (
                        (key,),
                        f"is not a parameter of model {name!r}; its parameters: {listing}",
                        raw,
                    )
                )
                continue
            unit = units.get(key, "")
            kind = _parameter_kind(unit)
            try:
                value = parse_quantity(raw, kind) if kind else parse_quantity(raw, "fraction")
            except UnitError as error:
                problems.append(((key,), str(error), raw))
                continue
            if not value > 0:
                problems.append(
                    ((key,), f"must be > 0 {unit}, got {value:g}; give a positive value", raw)
                )
                continue
            converted[key] = value
        missing = [p for p in model.parameters if p not in values]
        if missing:
            problems.append(
                (
                    (),
                    f"is missing {', '.join(missing)} for model {name!r}; its parameters: {listing}",
                    values,
                )
            )
        _raise("parameters", problems)
        return {p: converted[p] for p in model.parameters}

    @field_validator("variability", mode="before")
    @classmethod
    def _variability_names(cls, values: Any, info: ValidationInfo) -> Any:
        name = info.data.get("model")
        if name is not None and "pd" not in info.data:
            return {}
        if name is None or not isinstance(values, dict):
            return values
        if _is_model_folder(name):
            if values:
                raise ValueError(
                    f"comes from the trained model {Path(name).name!r} (its latent variable), "
                    f"got {values}; remove `variability`"
                )
            return {}
        model = spec_model(name, info.data["pd"])
        _raise(
            "variability",
            [
                (
                    (key,),
                    f"is not a parameter of model {name!r}; its parameters: {', '.join(model.parameters)}",
                    raw,
                )
                for key, raw in values.items()
                if key not in model.parameters
            ],
        )
        return values

    @field_validator("times")
    @classmethod
    def _increasing(cls, times: tuple[float, ...]) -> tuple[float, ...]:
        if not times:
            raise ValueError(
                "is empty; give at least one output time, e.g. [0, 1, 2] or {stop: 24 h, step: 1 h}"
            )
        if times[0] < 0:
            raise ValueError(
                f"must be ≥ 0 h, got {times[0]:g} h first; times count from the first dose's time origin"
            )
        for i in range(1, len(times)):
            if not times[i] > times[i - 1]:
                raise ValueError(
                    f"must be strictly increasing, but times[{i}] = {times[i]:g} h follows "
                    f"times[{i - 1}] = {times[i - 1]:g} h; sort them and remove repeats"
                )
        return times

    @field_validator("patients")
    @classmethod
    def _unique_ids(cls, patients: tuple[PatientSpec, ...]) -> tuple[PatientSpec, ...]:
        seen: dict[str, int] = {}
        for i, patient in enumerate(patients):
            if patient.id in seen:
                raise ValueError(
                    f"has the id {patient.id!r} twice (patients[{seen[patient.id]}] and patients[{i}]); "
                    "give each patient its own id"
                )
            seen[patient.id] = i
        return patients

    @model_validator(mode="after")
    def _population_covariates(self) -> SimulationSpec:
        trained = self.trained_model()
        if trained is None:
            if self.population is not None:
                _raise(
                    "spec",
                    [(("population",), "draws covariates for a trained model folder; this model "
                      "takes none (give `patients` for covariate coordinates)", None)],
                )  # fmt: skip
            return self
        if self.patients and self.population is not None:
            _raise(
                "spec",
                [(("population",), "and `patients` both say who is simulated; give one", None)],
            )
        if self.patients:
            table = PatientSpec.covariate_table(self.patients)
            words = f"the trained model {trained.name!r}"
            _raise(
                "spec",
                [
                    (("patients", i, *path), message, None)
                    for i in range(len(self.patients))
                    for path, message in missing_covariates(
                        trained.population_model(), table, words, row=i
                    )
                ],
            )
        return self

    @model_validator(mode="after")
    def _weights_for_per_kg_doses(self) -> SimulationSpec:
        if not self.regimen.uses_weight:
            return self
        per_kg = next(d.amount_per_kg for d in self.regimen.doses if d.amount_per_kg is not None)
        why = f"the regimen doses per kg ({per_kg:g} mg/kg)"
        if not self.patients:
            _raise(
                "spec",
                [
                    (
                        ("patients",),
                        f"is empty, but {why}; give a patient with a weight, e.g. patient: {{weight: 70 kg}}",
                        [],
                    )
                ],
            )
        _raise(
            "spec",
            [
                (
                    ("patients", i, "weight"),
                    f"is required because {why}; give it, e.g. weight: 70 kg",
                    None,
                )
                for i, patient in enumerate(self.patients)
                if patient.weight is None
            ],
        )
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        patients = target["properties"]["patients"]
        target["properties"]["patient"] = {
            "description": "one patient (instead of `patients`)",
            **patients["items"],
        }
        return schema

    # ------------------------------------------------------------------ conversions
    def trained_model(self) -> TrainedModel | None:
        """The trained latent model when ``model`` is a model folder, else ``None``."""
        return _trained(self.model) if _is_model_folder(self.model) else None

    def population_model(self) -> PopulationModel | None:
        """The :class:`~twinsim.priors.PopulationModel` behind a trained model folder (whose
        ``simulate`` and ``sample_parameters`` give the subjects' dynamics), else ``None``."""
        trained = self.trained_model()
        return None if trained is None else trained.population_model()

    def model_definition(self) -> ODEModel:
        """The :class:`~twinsim.priors.ODEModel` named by ``model``, with its ``pd`` blocks."""
        return spec_model(self.model, self.pd)

    def parameter_vector(self) -> np.ndarray:
        """Typical parameter values in the model's parameter order, shape ``[parameter]``."""
        return np.array(
            [self.parameters[p] for p in self.model_definition().parameters], dtype=float
        )

    def doses(self) -> list[list[Dose]]:
        """One dose list per patient (one list when no patient is given), to the last output time."""
        model = self.model_definition()
        patients: tuple[PatientSpec | None, ...] = self.patients or (None,)
        return [
            self.regimen.to_doses(model, None if p is None else p.weight, until=self.times[-1])
            for p in patients
        ]

    def dosing_events(self) -> DosingEvents:
        """:class:`~twinsim.simulators.DosingEvents` of :meth:`doses`, one row per patient."""
        from ...simulators import DosingEvents

        return DosingEvents.from_doses(self.doses())


# ---------------------------------------------------------------------------- files
def load_spec(path: str | os.PathLike[str]) -> SimulationSpec:
    """Read a :class:`SimulationSpec` from a YAML (``.yaml``/``.yml``) or JSON file.

    Raises
    ------
    SpecError
        The file is missing, is not valid YAML/JSON, is not a mapping, or the spec is
        invalid (one line per bad field).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "spec.yaml").write_text(
    ...     "model: pk_1cmt_iv\\nparameters: {cl: 5, v: 50}\\nregimen: 1 g once\\ntimes: [0, 1, 2]\\n"
    ... )
    >>> load_spec(folder / "spec.yaml").regimen.doses[0].amount
    1000.0
    """
    data = read_spec_mapping(
        path, what="spec", fields="spec fields (model, parameters, regimen, times, ...)"
    )
    model = data.get("model") if isinstance(data, dict) else None
    if _is_model_file(model) and not Path(model.rpartition(":")[0]).expanduser().is_absolute():
        # a user model file is found next to the spec, wherever the command runs
        data = {**data, "model": str(Path(path).parent / model)}
    elif (
        isinstance(model, str)
        and model not in MODEL_REGISTRY
        and not Path(model).expanduser().is_absolute()
        and _is_model_folder(str(Path(path).parent / model))
    ):
        data = {**data, "model": str(Path(path).parent / model)}  # a trained model folder
    try:
        return SimulationSpec.model_validate(data)
    except SpecError as error:
        raise SpecError(error.problems, title=f"invalid spec {str(path)!r}") from None


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of :class:`SimulationSpec` (for editors and form builders).

    Examples
    --------
    >>> sorted(spec_json_schema()["required"])
    ['model', 'regimen', 'times']
    """
    return SimulationSpec.model_json_schema()
