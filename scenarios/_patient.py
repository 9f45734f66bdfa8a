"""The patient as a spec (:class:`PatientSpec`): demographics, renal function, genotypes,
comedications and lifestyle with units, shared by every workflow (what-if, trial, cases),
and the helpers that read a spec file into a mapping and report its problems by field."""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..priors import (
    ANCESTRIES,
    GENES,
    CovariateError,
    comedication,
    covariate_table,
    parse_genotype,
    smoking_status,
)
from ._regimen import SpecError, SpecModel, quantity
from ._units import UnitError, parse_quantity

if TYPE_CHECKING:
    pass

__all__ = ["PatientSpec", "SmokingSpec", "missing_covariates", "read_spec_mapping"]


def _raise(title: str, problems: list[tuple[tuple[str | int, ...], str, Any]]) -> None:
    """Raise several field errors at once (each with its own location)."""
    if problems:
        raise ValidationError.from_exception_data(
            title,
            [
                InitErrorDetails(
                    type=PydanticCustomError("value_error", "{message}", {"message": message}),
                    loc=loc,
                    input=value,
                )
                for loc, message, value in problems
            ],
        )


# ---------------------------------------------------------------------------- patient
def _sex(value: Any) -> Any:
    if isinstance(value, str):
        word = value.strip().lower()
        mapped = {
            "f": "female",
            "female": "female",
            "woman": "female",
            "m": "male",
            "male": "male",
            "man": "male",
        }
        if word in mapped:
            return mapped[word]
        raise ValueError(f"must be 'female' or 'male' (or F/M), got {value!r}")
    return value


def _text_id(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    return str(value) if isinstance(value, int | float) else value


def _between(lo: float, hi: float, unit: str, fix: str) -> AfterValidator:
    """Range check whose message names the range, the value and how to fix it."""

    def check(value: float | None) -> float | None:
        if value is not None and not lo <= value <= hi:
            raise ValueError(
                f"must be between {lo:g} and {hi:g} {unit}, got {value:g} {unit}; {fix}"
            )
        return value

    return AfterValidator(check)


def _number_with_unit(*units: str) -> BeforeValidator:
    """A number, or text ``"<number> <unit>"`` with one of ``units`` (the first is the core unit)."""

    def read(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?|\.\d+)\s*(.*?)\s*", value)
        if match and (not match.group(2) or match.group(2) in units):
            return float(match.group(1))
        raise ValueError(
            f"must be a number in {units[0]} (or text with one of {', '.join(units)}), got {value!r}"
        )

    return BeforeValidator(read, json_schema_input_type=float | str)


def _creatinine_clearance(value: Any) -> Any:
    # a bare number is mL/min (the clinical unit), text may carry any clearance unit
    if isinstance(value, str) and re.search(r"[A-Za-z/]", value):
        try:
            return parse_quantity(value, "clearance") / 0.06  # L/h → mL/min
        except UnitError as error:
            raise ValueError(str(error)) from None
    return value


def _relative_time(value: Any) -> Any:
    """``"-3 d"``, ``"3 d ago"`` (before t = 0), ``"in 5 d"``, ``"5 d"`` (after), numbers in h."""
    if not isinstance(value, str):
        return value
    text, sign = value.strip(), 1.0
    if text.endswith(" ago"):
        text, sign = text.removesuffix(" ago"), -1.0
    elif text.startswith("in "):
        text = text.removeprefix("in ")
    try:
        return sign * parse_quantity(text, "time")
    except UnitError as error:
        raise ValueError(f"{error}; write e.g. '-3 d', '3 d ago' or 'in 5 d'") from None


class SmokingSpec(SpecModel):
    """Smoking history: ``never``, ``current`` or ``former``, and when the patient quits.

    Parameters
    ----------
    status
        ``"never"``, ``"current"`` or ``"former"``.
    quit
        Time of quitting relative to the start of the simulation (t = 0): ``"-3 d"`` or
        ``"3 d ago"`` for a former smoker, ``"in 5 d"`` or ``"5 d"`` for a current smoker
        who quits during the simulation; a bare number is hours.
    quit_date
        Date of quitting, instead of ``quit`` (needs the patient's ``start_date``).
    cigarettes_per_day
        While smoking, 0–200.
    """

    status: Literal["never", "current", "former"]
    quit: Annotated[
        float | None, BeforeValidator(_relative_time, json_schema_input_type=float | str)
    ] = None
    quit_date: dt.date | None = None
    cigarettes_per_day: Annotated[
        float | None, _between(0, 200, "per day", "give cigarettes smoked per day")
    ] = None

    @model_validator(mode="after")
    def _consistent(self) -> SmokingSpec:
        if self.quit is not None and self.quit_date is not None:
            raise ValueError(
                f"give `quit` (time relative to the start) or `quit_date`, not both; got quit={self.quit:g} h "
                f"and quit_date={self.quit_date}"
            )
        try:
            smoking_status(self.status, self.quit)
        except CovariateError as error:
            message = str(error).removeprefix("`smoking_quit_time` ")
            _raise("smoking", [(("quit",), message, self.quit)])
        if self.status == "never" and (self.quit_date is not None or self.cigarettes_per_day):
            raise ValueError(
                "a never-smoker has no `quit_date` or `cigarettes_per_day`; set status 'former' or "
                "'current', or drop them"
            )
        return self


def _smoking(value: Any) -> Any:
    if isinstance(value, bool):
        return {"status": "current" if value else "never"}
    if isinstance(value, str):
        return {"status": value.strip().lower()}
    return value


class PatientSpec(SpecModel):
    """One patient: demographics, kidney function, genotype, comedications and lifestyle.

    Values are in core units after validation; :meth:`covariates` gives the standard
    covariate table row (:data:`twinsim.priors.COVARIATE_COLUMNS`).

    Parameters
    ----------
    id
        Identifier (text; numbers are turned into text).
    age
        Years (``"18 mo"`` accepted), 0–120.
    sex
        ``"female"`` or ``"male"`` (``F``/``M`` accepted).
    weight
        kg (``"150 lb"`` accepted), 0.3–400.
    height
        cm (``"5 ft 10 in"``, ``"1.78 m"`` accepted), 20–250.
    serum_creatinine
        mg/dL (``"80 µmol/L"`` accepted, ÷ 88.4), 0.1–20; alias ``scr``.
    crcl
        Measured creatinine clearance, mL/min (text with a clearance unit accepted),
        0–400; alias ``creatinine_clearance``. Without it, the covariate row computes it
        by Cockcroft–Gault from age, weight, serum creatinine and sex.
    dialysis
        On haemodialysis.
    ancestry
        One of :data:`twinsim.priors.ANCESTRIES` (``"european"``, ``"east_asian"``, ...).
    genotype
        ``{gene: diplotype}`` (``{CYP2C9: "*1/*3", VKORC1: GA}``), genes of
        :data:`twinsim.priors.GENES`; stored in canonical form. A gene that was not
        genotyped may be given as ``"not tested"`` (also ``"untested"``, ``"unknown"``,
        ``"not known"``, ``"N/A"``, ``"none"``, ``""`` or null; stored as ``"not tested"``,
        :func:`twinsim.priors.is_not_tested`): the patient twin then averages over the
        genotypes of the patient's ``ancestry``, which a workflow using that gene requires.
    comedications
        Interacting comedications, names of :data:`twinsim.priors.COMEDICATIONS`
        (aliases such as ``rifampin`` accepted; stored canonical).
    smoking
        ``never``/``current``/``former``, or a :class:`SmokingSpec` mapping.
    alcohol_units_per_week
        UK units (8 g ethanol) per week, 0–500; alias ``alcohol``.
    vitamin_k_ug_per_day
        Dietary vitamin K, µg/day, 0–5000; alias ``vitamin_k``.
    adherence
        Fraction of doses taken, 0–1 (``"90%"`` accepted).
    start_date
        Calendar date of the simulation's t = 0 (needed to place a smoking ``quit_date``).

    Examples
    --------
    >>> patient = PatientSpec(id=7, weight="154 lb", height="5 ft 10 in", scr="88.4 µmol/L")
    >>> patient.id, round(patient.weight, 2), round(patient.height, 1), patient.serum_creatinine
    ('7', 69.85, 177.8, 1.0)
    >>> patient = PatientSpec(age=40, sex="M", weight=72, scr=1.0, genotype={"cyp2c9": "*3/*1"},
    ...                       comedications=["rifampin"], smoking={"status": "former", "quit": "2 d ago"})
    >>> row = patient.covariates()
    >>> float(row["crcl"][0]), str(row["cyp2c9"][0]), float(row["comed_rifampicin"][0])
    (100.0, '*1/*3', 1.0)
    >>> float(row["smoking"][0]), float(row["smoking_quit_time"][0])
    (1.0, -48.0)
    >>> PatientSpec(genotype={"CYP2C9": "Unknown", "VKORC1": "AG"}, ancestry="european").genotype
    {'CYP2C9': 'not tested', 'VKORC1': 'G/A'}
    """

    id: Annotated[str, BeforeValidator(_text_id, json_schema_input_type=str | int)] = "patient-1"
    age: Annotated[float | None, quantity("age")] = None
    sex: Annotated[Literal["female", "male"] | None, BeforeValidator(_sex)] = None
    weight: Annotated[float | None, quantity("weight")] = None
    height: Annotated[float | None, quantity("height")] = None
    serum_creatinine: Annotated[float | None, quantity("creatinine")] = Field(
        None, validation_alias=AliasChoices("serum_creatinine", "scr")
    )
    crcl: Annotated[
        float | None,
        BeforeValidator(_creatinine_clearance, json_schema_input_type=float | str),
        _between(0, 400, "mL/min", "a bare number is mL/min, e.g. 85 or '5.1 L/h'"),
    ] = Field(None, validation_alias=AliasChoices("crcl", "creatinine_clearance"))
    dialysis: bool = False
    ancestry: str | None = None
    genotype: dict[str, str] = Field(default_factory=dict)
    comedications: tuple[str, ...] = ()
    smoking: Annotated[
        SmokingSpec | None, BeforeValidator(_smoking, json_schema_input_type=str | SmokingSpec)
    ] = None
    alcohol_units_per_week: Annotated[
        float | None,
        _number_with_unit("units/wk", "units/week", "unit/wk"),
        _between(0, 500, "units/wk", "give UK units (8 g ethanol) per week"),
    ] = Field(None, validation_alias=AliasChoices("alcohol_units_per_week", "alcohol"))
    vitamin_k_ug_per_day: Annotated[
        float | None,
        _number_with_unit("µg/d", "ug/d", "mcg/d", "µg/day", "ug/day", "mcg/day"),
        _between(0, 5000, "µg/day", "give dietary vitamin K in µg per day"),
    ] = Field(None, validation_alias=AliasChoices("vitamin_k_ug_per_day", "vitamin_k"))
    adherence: Annotated[float | None, quantity("fraction")] = None
    start_date: dt.date | None = None

    @field_validator("age")
    @classmethod
    def _age(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 120:
            raise ValueError(
                f"must be between 0 and 120 y, got {value:g} y; give the age in years, e.g. '45 y'"
            )
        return value

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float | None) -> float | None:
        if value is not None and not 0.3 <= value <= 400:
            raise ValueError(
                f"must be between 0.3 and 400 kg, got {value:g} kg; a bare number is kg, give "
                "other units explicitly, e.g. '150 lb'"
            )
        return value

    @field_validator("height")
    @classmethod
    def _height(cls, value: float | None) -> float | None:
        if value is not None and not 20 <= value <= 250:
            hint = f" (did you mean '{value:g} m'?)" if 0.2 <= value <= 2.5 else ""
            raise ValueError(
                f"must be between 20 and 250 cm, got {value:g} cm{hint}; a bare number is cm, give "
                "other units explicitly, e.g. '1.78 m' or '5 ft 10 in'"
            )
        return value

    @field_validator("serum_creatinine")
    @classmethod
    def _creatinine(cls, value: float | None) -> float | None:
        if value is not None and not 0.1 <= value <= 20:
            hint = f" (if this is µmol/L, write '{value:g} µmol/L')" if 20 < value <= 1800 else ""
            raise ValueError(f"must be between 0.1 and 20 mg/dL, got {value:g} mg/dL{hint}")
        return value

    @field_validator("ancestry")
    @classmethod
    def _ancestry(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = value.strip().lower().replace(" ", "_").replace("-", "_")
        if key not in ANCESTRIES:
            close = difflib.get_close_matches(key, ANCESTRIES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{value!r} is not a known ancestry group{hint}; known groups: {', '.join(ANCESTRIES)}"
            )
        return key

    @field_validator("genotype", mode="before")
    @classmethod
    def _genotype(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values  # pydantic reports the type
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        canonical: dict[str, str] = {}
        for gene, text in values.items():
            symbol = str(gene).strip().upper()
            if symbol not in GENES:
                close = difflib.get_close_matches(symbol, list(GENES), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(
                    ((gene,), f"is not a known gene{hint}; known genes: {', '.join(GENES)}", text)
                )
                continue
            try:
                canonical[symbol] = parse_genotype(symbol, text)  # or "not tested"
            except CovariateError as error:
                message = str(error).removeprefix(f"`{GENES[symbol].column}` ")
                problems.append(((gene,), message, text))
        _raise("genotype", problems)
        return canonical

    @field_validator("comedications", mode="before")
    @classmethod
    def _comedications(cls, values: Any) -> Any:
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list | tuple):
            return values
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        names: list[str] = []
        for i, name in enumerate(values):
            try:
                canonical = comedication(name).name
            except CovariateError as error:
                problems.append(((i,), str(error).removeprefix("comedication "), name))
                continue
            if canonical not in names:
                names.append(canonical)
        _raise("comedications", problems)
        return tuple(names)

    @field_validator("adherence")
    @classmethod
    def _adherence(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 1:
            hint = f" (did you mean '{value:g}%'?)" if 1 < value <= 100 else ""
            raise ValueError(
                f"must be a fraction between 0 and 1, got {value:g}{hint}; e.g. 0.9 or '90%'"
            )
        return value

    @model_validator(mode="after")
    def _quit_date(self) -> PatientSpec:
        if self.smoking is not None and self.smoking.quit_date is not None:
            try:
                self._smoking_columns()
            except CovariateError as error:
                _raise(
                    "patient", [(("smoking", "quit_date"), str(error), str(self.smoking.quit_date))]
                )
        return self

    def _smoking_columns(self) -> tuple[float, float]:
        """``(smoking, smoking_quit_time)`` columns; raises :class:`CovariateError`."""
        if self.smoking is None:
            return 0.0, math.inf
        quit = self.smoking.quit
        if self.smoking.quit_date is not None:
            if self.start_date is None:
                raise CovariateError(
                    f"({self.smoking.quit_date}) needs `start_date`, the calendar date of the "
                    "simulation's t = 0; add it, or give `smoking.quit` relative to the start "
                    "(e.g. '3 d ago')"
                )
            quit = (self.smoking.quit_date - self.start_date).days * 24.0
        try:
            return smoking_status(self.smoking.status, quit)
        except CovariateError as error:
            raise CovariateError(
                f"{self.smoking.quit_date} is {quit:g} h after start_date {self.start_date}, but "
                "the quit time " + str(error).removeprefix("`smoking_quit_time` ")
            ) from None

    # ------------------------------------------------------------------ covariates
    def covariate_record(self) -> dict[str, Any]:
        """This patient as a record for :func:`twinsim.priors.covariate_table`."""
        smoking, quit_time = self._smoking_columns()
        return {
            "age": self.age,
            "sex": self.sex,
            "weight": self.weight,
            "height": self.height,
            "serum_creatinine": self.serum_creatinine,
            "crcl": self.crcl,
            "dialysis": float(self.dialysis),
            "ancestry": self.ancestry,
            "genotype": dict(self.genotype),
            "comedications": list(self.comedications),
            "smoking": smoking,
            "smoking_quit_time": quit_time,
            "cigarettes_per_day": None if self.smoking is None else self.smoking.cigarettes_per_day,
            "alcohol_units_per_week": self.alcohol_units_per_week,
            "vitamin_k_ug_per_day": self.vitamin_k_ug_per_day,
            "adherence": self.adherence,
        }

    def covariates(self, **crcl_options: float) -> dict[str, np.ndarray]:
        """This patient's row of the standard covariate table (arrays of length 1).

        ``crcl_options`` are keywords of :func:`twinsim.priors.cockcroft_gault` (``cap``,
        ``min_creatinine_over_60``), used when ``crcl`` is not given.
        """
        return PatientSpec.covariate_table([self], **crcl_options)

    @staticmethod
    def covariate_table(
        patients: Sequence[PatientSpec], **crcl_options: float
    ) -> dict[str, np.ndarray]:
        """The standard covariate table of several patients, one entry per patient.

        Examples
        --------
        >>> table = PatientSpec.covariate_table([PatientSpec(sex="F"), PatientSpec(sex="M")])
        >>> table["female"].tolist()
        [1.0, 0.0]
        """
        return covariate_table([p.covariate_record() for p in patients], crcl_options=crcl_options)


#: Covariate column → (PatientSpec field, example) for "missing covariate" messages.
_PATIENT_FIELDS = {
    "age": ("age", "age: 65 y"),
    "weight": ("weight", "weight: 70 kg"),
    "crcl": ("crcl", "crcl: 60 (mL/min), or age, sex and serum_creatinine for Cockcroft–Gault"),
    "cyp2c9": (
        "genotype.CYP2C9",
        "genotype: {CYP2C9: '*1/*3'}, or {CYP2C9: not tested} with ancestry",
    ),
    "vkorc1": ("genotype.VKORC1", "genotype: {VKORC1: A/A}, or {VKORC1: not tested} with ancestry"),
    "cyp2d6": (
        "genotype.CYP2D6",
        "genotype: {CYP2D6: '*1/*4'}, or {CYP2D6: not tested} with ancestry",
    ),
    "cyp2c19": (
        "genotype.CYP2C19",
        "genotype: {CYP2C19: '*1/*2'}, or {CYP2C19: not tested} with ancestry",
    ),
    "cyp3a5": (
        "genotype.CYP3A5",
        "genotype: {CYP3A5: '*3/*3'}, or {CYP3A5: not tested} with ancestry",
    ),
    "smoking": ("smoking", "smoking: current"),
    "female": ("sex", "sex: female"),
    "ancestry": ("ancestry", "ancestry: european"),
}


def missing_covariates(
    model: Any, table: Mapping[str, Any], words: str, row: int = 0
) -> list[tuple[tuple[str, ...], str]]:
    """``(patient field path, message)`` for each covariate ``model`` needs that row ``row``
    of the covariate ``table`` (:meth:`PatientSpec.covariate_table`) does not give.

    Covariates with a default may be missing (they take it). ``words`` names the model in
    the message (``"the vancomycin model"``).

    Examples
    --------
    >>> from twinsim.priors import drug_model
    >>> table = PatientSpec.covariate_table([PatientSpec(weight=70)])
    >>> [(path, text[:33]) for path, text in missing_covariates(drug_model("vancomycin"), table,
    ...                                                        "the vancomycin model")]
    [(('crcl',), 'is needed by the vancomycin model')]
    """
    problems = []
    for cov in model.covariates:
        value = table.get(cov.name)
        value = None if value is None else value[row]
        missing = value is None or (isinstance(value, str) and not value)
        missing = missing or (isinstance(value, float) and math.isnan(value))
        if missing and cov.default is None:  # optional covariates take their default
            field, example = _PATIENT_FIELDS.get(cov.name, (cov.name, f"{cov.name}: ..."))
            problems.append(
                (
                    tuple(field.split(".")),
                    f"is needed by {words} (covariate `{cov.name}`, {cov.unit or 'category'}) "
                    f"but not given; add it, e.g. {example}",
                )
            )
    return problems


def read_spec_mapping(path: str | os.PathLike[str], *, what: str, fields: str) -> dict[str, Any]:
    """The mapping a YAML/JSON spec file holds; errors name the file and what it must hold."""
    path = Path(path)
    title = f"cannot load {what}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(
            [f"cannot read {str(path)!r}: {error.strerror or error}"], title=title
        ) from None
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(
            [f"{path.name} is not valid {'JSON' if is_json else 'YAML'}: {error}"], title=title
        ) from None
    if not isinstance(data, dict):
        raise SpecError(
            [f"{path.name} must hold a mapping of {fields}, got {type(data).__name__}"],
            title=title,
        )
    return data
