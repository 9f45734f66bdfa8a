"""Dosing regimens as specs: structured records or the way clinicians write them.

A :class:`RegimenSpec` is a list of :class:`DoseSpec` records (NONMEM's dosing language:
amount, time, compartment, infusion rate or duration, interval, additional doses, steady
state). It can be written out in full, or as text:

====================================================  =========================================
text                                                  doses
====================================================  =========================================
``"100 mg q12h x 14 d"``                              28 doses, 0, 12, ..., 324 h
``"100 mg q12h x 28 doses"``                          the same
``"1 g over 1 h q12h x 3 d"``                         6 one-hour infusions of 1000 mg
``"500 mg iv over 30 min q8h"``                       every 8 h to the end of the simulation
``"loading 25 mg/kg then 15 mg/kg q12h x 5 d"``       25 mg/kg at 0 h, 15 mg/kg at 12, ..., 120 h
``"100 mg once"``                                     one dose at 0 h
``"100 mg q24h at steady state"``                     SS=1 dose at 0 h (II=24 h), repeated to the end
====================================================  =========================================

Rules of the text form (one *phase* per ``then`` or ``;``):

- ``x 14 d`` / ``for 14 d`` means *the doses whose start time is before the phase start
  + 14 d*: ``q12h x 14 d`` is 28 doses (0 … 324 h), ``q10h x 1 d`` is 3 doses (0, 10, 20 h).
  ``x 28 doses`` gives the count directly.
- A frequency without a count (``q8h``) repeats to the end of the simulation: the
  simulation spec passes its last output time as ``until``.
- A phase after ``then`` starts one dosing interval after the previous phase's last dose
  (the previous phase's interval, or, after a single dose such as a loading dose, the new
  phase's interval). ``at 6 h`` / ``starting at 6 h`` gives an absolute start time instead.
- Route words: ``oral``/``po``, ``iv``, ``sc``, ``im``. Without one, an infusion goes
  ``iv`` and anything else ``oral``; a model with a single route uses that route.
- Infusions: ``over 30 min`` (duration) or ``at 100 mg/h`` (rate).
- ``at steady state`` (or ``ss``) marks the first dose SS=1 with the phase's interval.
- Amounts ``mg/kg`` are per kg of body weight, resolved when the doses are built.
"""

from __future__ import annotations

import contextvars
import difflib
import math
import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..simulators import Dose
from ._units import UnitError, accepted_units, parse_quantity

__all__ = [
    "MAX_DOSES",
    "DoseSpec",
    "RegimenSpec",
    "SpecError",
    "SpecModel",
    "parse_regimen_text",
]

#: Upper bound on the number of doses one regimen may expand to (guards against typos
#: such as ``q1min x 1 wk`` turning into an array of a million doses).
MAX_DOSES = 100_000


# ---------------------------------------------------------------------------- errors
class SpecError(ValueError):
    """A scenario spec is invalid; the message lists every bad field as a dotted path.

    Attributes
    ----------
    problems
        One line per problem: ``"`regimen.doses[2].amount` must be > 0 mg, got -50"``.
    """

    def __init__(self, problems: Sequence[str], title: str = "invalid spec"):
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{title} ({len(self.problems)} problem{'s' * (len(self.problems) != 1)}):\n{lines}"
        )

    @classmethod
    def from_validation(cls, error: ValidationError, model: type[BaseModel]) -> SpecError:
        """Turn pydantic's error into one readable line per bad field."""
        return cls([_describe(e, model) for e in error.errors()], title=f"invalid {model.__name__}")


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(error: Any, model: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    path = _dotted(loc)
    head = f"`{path}` " if path else ""
    kind, message = error["type"], error["msg"]
    if kind == "value_error":
        # our validators write complete sentences (expected, received, fix)
        return head + message.removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = _known_fields(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        return f"{head}is not a known field{hint}; known fields here: {', '.join(known)}"
    if kind == "missing":
        return f"{head}is required but missing; add it to the spec"
    return f"{head}{message[:1].lower()}{message[1:]}, got {_short(error.get('input'))}"


def _known_fields(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names of the (nested) model at ``loc``, walking annotations."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        current = _model_in(fields[part].annotation)
        if current is None:
            return []
    return [_field_key(name, info) for name, info in getattr(current, "model_fields", {}).items()]


def _field_key(name: str, info: Any) -> str:
    aliases = (
        info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) else ()
    )
    others = [a for a in aliases if isinstance(a, str) and a != name]
    return f"{name} (or {', '.join(others)})" if others else name


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# Depth of nested spec validation: only the outermost call turns pydantic's
# ValidationError into a SpecError, so nested models report full dotted paths.
_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("twinsim_spec_depth", default=0)


class SpecModel(BaseModel):
    """Base of every spec: frozen, no unknown fields, errors raised as :class:`SpecError`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def __init__(self, /, **data: Any):
        token = _DEPTH.set(_DEPTH.get() + 1)
        try:
            super().__init__(**data)
        except ValidationError as error:
            if _DEPTH.get() > 1:
                raise
            raise SpecError.from_validation(error, type(self)) from None
        finally:
            _DEPTH.reset(token)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        """Validate ``obj`` (a dict, or for regimens also text); raises :class:`SpecError`."""
        token = _DEPTH.set(_DEPTH.get() + 1)
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as error:
            if _DEPTH.get() > 1:
                raise
            raise SpecError.from_validation(error, cls) from None
        finally:
            _DEPTH.reset(token)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Any:
        """Validate JSON text; raises :class:`SpecError`."""
        token = _DEPTH.set(_DEPTH.get() + 1)
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as error:
            if _DEPTH.get() > 1:
                raise
            raise SpecError.from_validation(error, cls) from None
        finally:
            _DEPTH.reset(token)


def quantity(kind: str) -> BeforeValidator:
    """Pydantic validator reading a number or text with a unit into the core unit of ``kind``."""

    def read(value: Any) -> Any:
        if value is None:
            return None
        try:
            return parse_quantity(value, kind)
        except UnitError as error:
            raise ValueError(str(error)) from None

    return BeforeValidator(read, json_schema_input_type=float | str)


Hours = Annotated[float, quantity("time")]
Milligrams = Annotated[float, quantity("amount")]
MilligramsPerKg = Annotated[float, quantity("amount_per_weight")]
MilligramsPerHour = Annotated[float, quantity("rate")]


# ---------------------------------------------------------------------------- doses
class _RoutedModel(Protocol):
    """What :meth:`RegimenSpec.to_doses` needs of a model (an :class:`~twinsim.priors.ODEModel`)."""

    name: str
    states: tuple[str, ...]
    routes: tuple[tuple[str, str], ...]

    def route_compartment(self, route: str) -> int: ...

    def state_index(self, name: str) -> int: ...


class DoseSpec(SpecModel):
    """One dosing record, possibly repeated (NONMEM ``ADDL``/``II``) or at steady state.

    Parameters
    ----------
    amount
        Dose, mg (``"1 g"``, ``"250 ug"`` accepted). Give this or ``amount_per_kg``.
    amount_per_kg
        Dose per kg of body weight, mg/kg (``"25 mg/kg"``); needs the patient's weight.
        Writing ``amount: 25 mg/kg`` is read as ``amount_per_kg``.
    time
        Time of the (first) dose, h (``"30 min"``, ``"2 d"``); alias ``start``.
    route
        ``"oral"``, ``"iv"``, ``"sc"``, ...: the model's compartment for that route.
    compartment
        Instead of ``route``: a state name (``"central"``) or NONMEM's 1-based ``CMT``.
    rate, duration
        Zero-order infusion: rate (mg/h) or duration (h), at most one; neither = bolus.
    interval
        Dosing interval, h: needed for ``additional``, ``until_end`` and ``steady_state``.
    additional
        Further doses every ``interval`` after the first (NONMEM ``ADDL``).
    until_end
        Repeat every ``interval`` until the end of the simulation (``to_doses(until=...)``).
    steady_state
        The first dose is at steady state of dosing every ``interval`` (NONMEM ``SS=1``).

    Examples
    --------
    >>> DoseSpec(amount="1 g", duration="30 min", route="iv").amount
    1000.0
    """

    amount: Milligrams | None = None
    amount_per_kg: MilligramsPerKg | None = None
    time: Hours = Field(0.0, validation_alias=AliasChoices("time", "start"))
    route: str | None = None
    compartment: str | int | None = None
    rate: MilligramsPerHour | None = None
    duration: Hours | None = None
    interval: Hours | None = None
    additional: int = 0
    until_end: bool = False
    steady_state: bool = False

    @model_validator(mode="before")
    @classmethod
    def _per_kg_amount(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "time" in data and "start" in data:
                raise ValueError(
                    f"give `time` or its alias `start`, not both (got time={data['time']!r}, "
                    f"start={data['start']!r})"
                )
            amount = data.get("amount")
            if (
                isinstance(amount, str)
                and "/kg" in amount.replace(" ", "")
                and "amount_per_kg" not in data
            ):
                data["amount_per_kg"] = data.pop("amount")
        return data

    @field_validator("amount")
    @classmethod
    def _positive_amount(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError(f"must be > 0 mg, got {value:g}; give the dose as a positive amount")
        return value

    @field_validator("amount_per_kg")
    @classmethod
    def _positive_amount_per_kg(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError(
                f"must be > 0 mg/kg, got {value:g}; give the dose as a positive amount"
            )
        return value

    @field_validator("time")
    @classmethod
    def _nonnegative_time(cls, value: float) -> float:
        if value < 0:
            raise ValueError(
                f"must be ≥ 0 h, got {value:g}; times count from the start of the simulation"
            )
        return value

    @field_validator("rate", "duration", "interval")
    @classmethod
    def _positive(cls, value: float | None, info: Any) -> float | None:
        unit = "mg/h" if info.field_name == "rate" else "h"
        if value is not None and not value > 0:
            raise ValueError(
                f"must be > 0 {unit} when given, got {value:g}; leave it out for a bolus"
            )
        return value

    @field_validator("additional")
    @classmethod
    def _nonnegative_additional(cls, value: int) -> int:
        if value < 0:
            raise ValueError(
                f"must be a whole number ≥ 0, got {value}; it counts the doses after the first"
            )
        if value + 1 > MAX_DOSES:
            raise ValueError(
                f"gives {value + 1} doses, more than {MAX_DOSES}; check the interval and count"
            )
        return value

    @field_validator("route")
    @classmethod
    def _route_word(cls, value: str | None) -> str | None:
        return (
            None
            if value is None
            else _ROUTE_WORDS.get(value.strip().lower(), value.strip().lower())
        )

    @field_validator("compartment")
    @classmethod
    def _compartment(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int) and value < 1:
            raise ValueError(
                f"must be a state name or NONMEM's 1-based CMT ≥ 1, got {value}; "
                "CMT 1 is the model's first state"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DoseSpec:
        if (self.amount is None) == (self.amount_per_kg is None):
            raise ValueError(
                "`amount` (mg) or `amount_per_kg` (mg/kg) must be given, exactly one of them; "
                f"got amount={self.amount}, amount_per_kg={self.amount_per_kg}"
            )
        if self.route is not None and self.compartment is not None:
            raise ValueError(
                f"give `route` ({self.route!r}) or `compartment` ({self.compartment!r}), not both"
            )
        if self.rate is not None and self.duration is not None:
            raise ValueError(
                f"give the infusion `rate` ({self.rate:g} mg/h) or its `duration` "
                f"({self.duration:g} h), not both"
            )
        repeats = self.additional > 0 or self.until_end or self.steady_state
        if repeats and self.interval is None:
            raise ValueError(
                "`interval` (h) is required for repeated or steady-state doses "
                f"(additional={self.additional}, until_end={self.until_end}, "
                f"steady_state={self.steady_state}); give e.g. interval: 12 h"
            )
        if self.until_end and self.additional:
            raise ValueError(
                f"give `additional` ({self.additional}) or `until_end`, not both: "
                "a count of doses or repetition to the end of the simulation"
            )
        known_length = (
            self.amount is not None or self.rate is None
        )  # mg/kg by rate: wait for the weight
        length = self.infusion_hours(self.amount or 0.0)
        if self.interval is not None and known_length and length > self.interval:
            raise ValueError(
                f"infusion lasts {length:g} h, longer than the dosing interval "
                f"{self.interval:g} h; shorten the infusion or lengthen the interval"
            )
        return self

    def infusion_hours(self, amount_mg: float) -> float:
        """Duration of the infusion of ``amount_mg`` (0 for a bolus), h."""
        if self.duration is not None:
            return self.duration
        if self.rate is not None:
            return amount_mg / self.rate
        return 0.0

    @property
    def is_infusion(self) -> bool:
        return self.rate is not None or self.duration is not None

    @property
    def n_doses(self) -> int | None:
        """Number of administrations, or ``None`` when it repeats to the end of the simulation."""
        return None if self.until_end else self.additional + 1

    def compartment_index(self, model: _RoutedModel) -> int:
        """0-based compartment this dose enters in ``model``."""
        if isinstance(self.compartment, int):
            if self.compartment > len(model.states):
                raise ValueError(
                    f"`compartment` CMT={self.compartment} but model {model.name!r} has "
                    f"{len(model.states)} compartments {list(model.states)} (CMT 1..{len(model.states)})"
                )
            return self.compartment - 1
        if isinstance(self.compartment, str):
            return model.state_index(self.compartment)
        routes = dict(model.routes)
        route = self.route or ("iv" if self.is_infusion else "oral")
        if self.route is None and route not in routes and len(routes) == 1:
            route = next(iter(routes))
        return model.route_compartment(route)


_ROUTE_WORDS = {
    "oral": "oral",
    "orally": "oral",
    "po": "oral",
    "p.o.": "oral",
    "iv": "iv",
    "i.v.": "iv",
    "intravenous": "iv",
    "intravenously": "iv",
    "sc": "sc",
    "s.c.": "sc",
    "subcutaneous": "sc",
    "subcutaneously": "sc",
    "im": "im",
    "i.m.": "im",
    "intramuscular": "im",
    "intramuscularly": "im",
}


# ---------------------------------------------------------------------------- regimen
class RegimenSpec(SpecModel):
    """A dosing regimen: a list of :class:`DoseSpec`, or text that parses to one.

    Accepted inputs: text (``"100 mg q12h x 14 d"``, see the module docs for the form),
    a list of texts and/or dose records, ``{"doses": [...]}``, or one dose record.

    Examples
    --------
    >>> regimen = RegimenSpec.model_validate("100 mg q12h x 14 d")
    >>> regimen.doses[0].interval, regimen.doses[0].n_doses
    (12.0, 28)
    >>> [d.time for d in RegimenSpec.model_validate("loading 1 g then 500 mg q12h x 1 d").doses]
    [0.0, 12.0]
    """

    doses: tuple[DoseSpec, ...]

    _EXAMPLES: ClassVar[str] = (
        "'100 mg q12h x 14 d', '1 g iv over 1 h q12h x 3 d', "
        "'loading 25 mg/kg then 15 mg/kg q12h x 5 d', '100 mg once', "
        "'100 mg q24h at steady state'"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"doses": parse_regimen_text(data)}
        if isinstance(data, list | tuple):
            data = {"doses": data}
        dose_keys = set(DoseSpec.model_fields) | {"start"}
        if isinstance(data, dict) and "doses" not in data and data.keys() & dose_keys:
            data = {"doses": [data]}
        if isinstance(data, dict) and isinstance(data.get("doses"), list | tuple):
            doses: list[Any] = []
            for item in data["doses"]:
                doses.extend(parse_regimen_text(item) if isinstance(item, str) else [item])
            if not doses:
                raise ValueError("has no doses; give at least one, e.g. '100 mg once'")
            data = {**data, "doses": doses}
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        record = handler(core_schema)
        text = {
            "type": "string",
            "description": f"regimen text, e.g. {cls._EXAMPLES}",
        }
        return {"anyOf": [text, record]}

    @property
    def uses_weight(self) -> bool:
        """Whether some dose is per kg of body weight."""
        return any(d.amount_per_kg is not None for d in self.doses)

    @property
    def open_ended(self) -> bool:
        """Whether some dose repeats to the end of the simulation (needs ``until``)."""
        return any(d.until_end for d in self.doses)

    def to_doses(
        self, model: _RoutedModel, weight_kg: float | None = None, *, until: float | None = None
    ) -> list[Dose]:
        """Expand to one :class:`~twinsim.simulators.Dose` per administration, sorted by time.

        Parameters
        ----------
        model
            The model the doses go into: routes resolve through ``model.route_compartment``.
        weight_kg
            Body weight, kg: needed for ``mg/kg`` doses.
        until
            End of the simulation, h: doses marked ``until_end`` repeat while their time is
            before ``until``.

        Returns
        -------
        list of Dose
            0-based compartments, amounts in mg, one record per administration
            (``additional=0``); a steady-state dose keeps ``steady_state`` and ``interval``.

        Raises
        ------
        SpecError
            A ``mg/kg`` dose without ``weight_kg``, an open-ended dose without ``until``, an
            unknown route or compartment, an infusion longer than its interval.

        Examples
        --------
        >>> from twinsim.priors._pk import one_compartment
        >>> model = one_compartment(absorption="first_order")
        >>> doses = RegimenSpec.model_validate("100 mg q12h x 1 d").to_doses(model)
        >>> [(d.time, d.amount, d.compartment) for d in doses]
        [(0.0, 100.0, 0), (12.0, 100.0, 0)]
        """
        problems: list[str] = []
        doses: list[Dose] = []
        for i, spec in enumerate(self.doses):
            where = f"regimen.doses[{i}]"
            try:
                doses.extend(_expand(spec, model, weight_kg, until, where))
            except ValueError as error:
                problems.append(str(error))
        if problems:
            raise SpecError(problems, title="cannot build the doses of the regimen")
        doses.sort(key=lambda d: d.time)
        return doses


def _expand(
    spec: DoseSpec, model: _RoutedModel, weight_kg: float | None, until: float | None, where: str
) -> Iterator[Dose]:
    if spec.amount_per_kg is not None:
        if weight_kg is None:
            raise ValueError(
                f"`{where}.amount_per_kg` is {spec.amount_per_kg:g} mg/kg: the patient's weight is "
                "needed; give `weight_kg` (or the patient's `weight` in the spec, e.g. '70 kg')"
            )
        if not (math.isfinite(weight_kg) and weight_kg > 0):
            raise ValueError(f"`weight_kg` must be a positive number of kg, got {weight_kg!r}")
        amount = spec.amount_per_kg * weight_kg
    else:
        assert spec.amount is not None
        amount = spec.amount
    length = spec.infusion_hours(amount)
    if spec.interval is not None and length > spec.interval:
        raise ValueError(
            f"`{where}` infusion of {amount:g} mg lasts {length:g} h, longer than "
            f"the dosing interval {spec.interval:g} h; shorten the infusion or lengthen the interval"
        )
    try:
        compartment = spec.compartment_index(model)
    except ValueError as error:
        raise ValueError(f"`{where}`: {error}") from None
    if spec.until_end:
        if until is None:
            raise ValueError(
                f"`{where}` repeats every {spec.interval:g} h to the end of the simulation; pass "
                "`until` (h, the last output time) or give a count such as 'x 7 d' or 'x 14 doses'"
            )
        assert spec.interval is not None
        n_doses = _count_before(until - spec.time, spec.interval) if until > spec.time else 0
        if n_doses > MAX_DOSES:
            raise ValueError(
                f"`{where}` gives {n_doses} doses up to {until:g} h, more than {MAX_DOSES}; "
                "check the interval and the output times"
            )
    else:
        n_doses = spec.additional + 1
    rate = spec.rate or 0.0
    duration = spec.duration or 0.0
    interval = spec.interval or 0.0
    for k in range(n_doses):
        yield Dose(
            time=spec.time + k * interval,
            amount=amount,
            compartment=compartment,
            rate=rate,
            duration=duration,
            steady_state=spec.steady_state and k == 0,
            interval=interval,
            additional=0,
        )


def _count_before(span: float, interval: float) -> int:
    """Number of doses at 0, interval, 2·interval, ... strictly before ``span``."""
    ratio = span / interval
    nearest = round(ratio)
    # a span that is a whole number of intervals (up to rounding) ends just before a dose
    return int(nearest) if abs(ratio - nearest) <= 1e-9 * max(1.0, ratio) else math.ceil(ratio)


# ---------------------------------------------------------------------------- text form
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?"
_WORD_UNIT = r"[a-zµμ%]+(?:/[a-z]+)?"
_CLAUSES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("steady_state", r"(?:at\s+)?steady[\s-]*state\b|ss\b"),
        ("once", r"(?:once|single\s+dose|as\s+a\s+single\s+dose)\b(?!\s+daily)"),
        (
            "named_frequency",
            r"(?:once\s+daily|twice\s+daily|daily|qd|od|bid|b\.i\.d\.|tid|t\.i\.d\.|qid|q\.i\.d\.|weekly)(?![a-z])",
        ),
        ("frequency", rf"(?:q|every)\s*({_NUM})?\s*([a-z]+)\b"),
        ("count", rf"(?:x|×|for)\s*({_NUM})\s*(doses?|[a-z]+)\b"),
        ("over", rf"over\s+({_NUM})\s*({_WORD_UNIT})"),
        ("rate", rf"at\s+({_NUM})\s*([a-zµμ]+/[a-z]+)"),
        ("start", rf"(?:starting\s+)?(?:at|from)\s+(?:t\s*=\s*)?({_NUM})\s*({_WORD_UNIT})?"),
        (
            "route",
            r"(?:orally|oral|po|p\.o\.|intravenously|intravenous|iv|i\.v\.|subcutaneously|subcutaneous|sc|s\.c\.|intramuscularly|intramuscular|im|i\.m\.)(?![a-z])",
        ),
        ("infusion", r"(?:infusion|infused|bolus|dose)\b"),
    )
)
_NAMED_FREQUENCY_H = {
    "once daily": 24.0, "daily": 24.0, "qd": 24.0, "od": 24.0,
    "twice daily": 12.0, "bid": 12.0, "b.i.d.": 12.0,
    "tid": 8.0, "t.i.d.": 8.0,
    "qid": 6.0, "q.i.d.": 6.0,
    "weekly": 168.0,
}  # fmt: skip
_AMOUNT = re.compile(rf"(?:loading(?:\s+dose)?\s*:?\s*)?({_NUM})\s*({_WORD_UNIT})")


def _fail(text: str, phase: str, position: int, why: str) -> ValueError:
    rest = phase[position:].strip()
    if position > 0:
        at = f" at {rest!r}"
    else:  # the whole phase is at fault: name it when the text has several
        at = f" in the phase {phase!r}" if phase != text.strip().lower() and phase else ""
    return ValueError(
        f"could not read the regimen {text!r}{at}: {why}; expected text such as {RegimenSpec._EXAMPLES}"
    )


def _quantity(number: str, unit: str | None, kind: str, text: str) -> float:
    try:
        return parse_quantity(f"{number} {unit or ''}", kind)
    except UnitError as error:
        raise ValueError(f"in the regimen {text!r}: {error}") from None


def parse_regimen_text(text: str) -> list[dict[str, Any]]:
    """Read regimen text into dose records (dicts of :class:`DoseSpec` fields, core units).

    Parameters
    ----------
    text
        E.g. ``"loading 25 mg/kg then 15 mg/kg q12h x 5 d"``; see the module docs for the
        form and the exact meaning of ``x 14 d``, ``then`` and open-ended frequencies.

    Returns
    -------
    list of dict
        One record per phase, to be validated as :class:`DoseSpec`.

    Raises
    ------
    ValueError
        Text that does not follow the form: the message quotes the part that could not be
        read and gives examples.

    Examples
    --------
    >>> parse_regimen_text("1 g over 1 h q12h x 3 d")
    [{'amount': 1000.0, 'time': 0.0, 'duration': 1.0, 'interval': 12.0, 'additional': 5}]
    """
    if not text.strip():
        raise _fail(text, "", 0, "it is empty")
    phases = [p.strip(" ,") for p in re.split(r"\bthen\b|;", text.strip().lower())]
    records: list[dict[str, Any]] = []
    previous_end: float | None = None  # last dose time of the previous phase
    previous_interval: float | None = None
    for index, phase in enumerate(phases):
        record, explicit_start = _read_phase(text, phase)
        interval = record.get("interval")
        if explicit_start is not None:
            record["time"] = explicit_start
        elif previous_end is not None:
            gap = previous_interval if previous_interval is not None else interval
            if gap is None:
                raise _fail(
                    text, phase, 0,
                    "this phase follows a single dose and has no interval, so its start is unknown; "
                    "give it, e.g. '... then 500 mg once at 12 h'",
                )  # fmt: skip
            record["time"] = previous_end + gap
        if record.get("until_end") and index < len(phases) - 1:
            raise _fail(
                text, phase, 0,
                "only the last phase may repeat to the end of the simulation; give a count such as 'x 3 d'",
            )  # fmt: skip
        records.append(record)
        previous_interval = interval
        previous_end = record["time"] + record.get("additional", 0) * (interval or 0.0)
    return records


def _match_clause(phase: str, pos: int) -> tuple[str, re.Match[str]] | None:
    for name, pattern in _CLAUSES:
        match = pattern.match(phase, pos)
        if match is not None:
            return name, match
    return None


def _read_phase(text: str, phase: str) -> tuple[dict[str, Any], float | None]:
    amount_match = _AMOUNT.match(phase)
    if amount_match is None:
        raise _fail(text, phase, 0, "a phase starts with an amount such as '100 mg' or '25 mg/kg'")
    number, unit = amount_match.groups()
    record: dict[str, Any] = {}
    if unit in accepted_units("amount_per_weight"):
        record["amount_per_kg"] = _quantity(number, unit, "amount_per_weight", text)
    elif unit in accepted_units("amount"):
        record["amount"] = _quantity(number, unit, "amount", text)
    else:
        raise ValueError(
            f"in the regimen {text!r}: unknown amount unit {unit!r}; accepted: "
            f"{', '.join(accepted_units('amount') + accepted_units('amount_per_weight'))}"
        )
    seen: dict[str, str] = {}
    pos = amount_match.end()
    explicit_start: float | None = None
    while True:
        while pos < len(phase) and phase[pos] in " ,\t":
            pos += 1
        if pos >= len(phase):
            break
        found = _match_clause(phase, pos)
        if found is None:
            raise _fail(
                text, phase, pos, "this part is not an amount, route, infusion, frequency or count"
            )
        name, match = found
        group = "frequency" if name == "named_frequency" else name
        if group in seen and name != "infusion":
            raise _fail(text, phase, pos, f"{match.group(0)!r} repeats {seen[group]!r}")
        seen[group] = match.group(0)
        if name == "steady_state":
            record["steady_state"] = True
        elif name == "once":
            record["once"] = True
        elif name == "named_frequency":
            record["interval"] = _NAMED_FREQUENCY_H[match.group(0)]
        elif name == "frequency":
            value, unit = match.groups()
            if unit not in accepted_units("time"):
                raise _fail(
                    text,
                    phase,
                    pos,
                    f"{match.group(0)!r} is not a frequency such as 'q12h' or 'every 8 h'",
                )
            record["interval"] = _quantity(value or "1", unit, "time", text)
        elif name == "count":
            value, unit = match.groups()
            if unit.startswith("dose"):
                count = float(value)
                if count != int(count) or count < 1:
                    raise _fail(
                        text,
                        phase,
                        pos,
                        f"the number of doses must be a whole number ≥ 1, got {value}",
                    )
                record["n_doses"] = int(count)
            else:
                record["span"] = _quantity(value, unit, "time", text)
        elif name == "over":
            record["duration"] = _quantity(*match.groups(), "time", text)
        elif name == "rate":
            record["rate"] = _quantity(*match.groups(), "rate", text)
        elif name == "start":
            explicit_start = _quantity(*match.groups(), "time", text)
        elif name == "route":
            record["route"] = _ROUTE_WORDS[match.group(0)]
        pos = match.end()
    return _finish_phase(text, phase, record, seen), explicit_start


def _finish_phase(
    text: str, phase: str, record: dict[str, Any], seen: dict[str, str]
) -> dict[str, Any]:
    once = record.pop("once", False)
    n_doses = record.pop("n_doses", None)
    span = record.pop("span", None)
    interval = record.get("interval")
    if once and (interval is not None or n_doses is not None or span is not None):
        raise _fail(
            text, phase, 0, f"'once' contradicts {seen.get('frequency') or seen.get('count')!r}"
        )
    if interval is None and (n_doses is not None or span is not None):
        raise _fail(text, phase, 0, f"{seen['count']!r} needs a frequency such as 'q12h'")
    if interval is None and record.get("steady_state"):
        raise _fail(
            text,
            phase,
            0,
            "steady state needs a dosing interval, e.g. '100 mg q24h at steady state'",
        )
    if (
        "infusion" in seen
        and seen["infusion"].startswith("infus")
        and "duration" not in record
        and "rate" not in record
    ):
        raise _fail(
            text, phase, 0, "an infusion needs its duration ('over 1 h') or rate ('at 100 mg/h')"
        )
    if interval is not None:
        if not interval > 0:
            raise _fail(text, phase, 0, f"the dosing interval must be > 0 h, got {interval:g}")
        if n_doses is not None:
            record["additional"] = n_doses - 1
        elif span is not None:
            if not span > 0:
                raise _fail(text, phase, 0, f"the duration of therapy must be > 0 h, got {span:g}")
            record["additional"] = _count_before(span, interval) - 1
        elif not once:
            record["until_end"] = True
    ordered = {
        "amount": record.pop("amount", None),
        "amount_per_kg": record.pop("amount_per_kg", None),
    }
    ordered = {k: v for k, v in ordered.items() if v is not None}
    ordered["time"] = 0.0
    ordered.update(record)
    if ordered.get("additional") == 0 and not ordered.get("steady_state"):
        ordered.pop("additional")
    return ordered
