"""Quantities with explicit units, converted once to the core units.

The numerical core never guesses units: it works in h, mg, L, kg, cm, mg/L and mg/h.
Scenario files and forms may say ``"30 min"``, ``"1 g"`` or ``"150 lb"``; this module turns
such text into a number in the core unit of its kind, from a small explicit table (no
unit library, no guessing: a unit that is not in the table is an error naming the
accepted ones). A bare number means the core unit.

Serum creatinine is the one exception to "one core unit per physical dimension": it is a
concentration, but clinical formulas (Cockcroft–Gault) use mg/dL, so its kind
``"creatinine"`` has mg/dL as core unit and accepts µmol/L (÷ 88.4).
"""

from __future__ import annotations

import math
import re

__all__ = [
    "CORE_UNITS",
    "UnitError",
    "accepted_units",
    "parse_quantity",
    "split_quantity",
]


class UnitError(ValueError):
    """A quantity has an unknown unit, no number, or a unit of the wrong kind."""


_MICRO = ("u", "µ", "μ", "mc")  # "u", micro sign U+00B5, Greek mu U+03BC, "mc" (mcg)


def _micro(suffix: str, factor: float) -> dict[str, float]:
    return {prefix + suffix: factor for prefix in _MICRO}


def _aliases(factor: float, *names: str) -> dict[str, float]:
    return dict.fromkeys(names, factor)


# Core unit first in each table; every factor converts *to* the core unit.
_TABLES: dict[str, dict[str, float]] = {
    "time": {
        **_aliases(1.0, "h", "hr", "hrs", "hour", "hours"),
        **_aliases(1 / 60, "min", "mins", "minute", "minutes"),
        **_aliases(1 / 3600, "s", "sec", "secs", "second", "seconds"),
        **_aliases(24.0, "d", "day", "days"),
        **_aliases(168.0, "wk", "wks", "week", "weeks"),
    },
    "amount": {
        "mg": 1.0,
        **_aliases(1000.0, "g", "gram", "grams"),
        **_micro("g", 1e-3),
        "ng": 1e-6,
    },
    "amount_per_weight": {
        "mg/kg": 1.0,
        "g/kg": 1000.0,
        **_micro("g/kg", 1e-3),
    },
    "volume": {
        **_aliases(1.0, "L", "l"),
        **_aliases(1e-3, "mL", "ml"),
        **_aliases(0.1, "dL", "dl"),
    },
    "weight": {
        "kg": 1.0,
        "g": 1e-3,
        **_aliases(0.45359237, "lb", "lbs", "pound", "pounds"),
    },
    "height": {
        "cm": 1.0,
        "m": 100.0,
        "mm": 0.1,
        **_aliases(2.54, "in", "inch", "inches"),
        **_aliases(30.48, "ft", "foot", "feet"),
    },
    "age": {
        **_aliases(1.0, "y", "yr", "yrs", "year", "years"),
        **_aliases(1 / 12, "mo", "month", "months"),
        **_aliases(7 / 365.25, "wk", "wks", "week", "weeks"),
        **_aliases(1 / 365.25, "d", "day", "days"),
    },
    "concentration": {
        **_aliases(1.0, "mg/L", "mg/l"),
        **{u: 1.0 for p in _MICRO for u in (p + "g/mL", p + "g/ml")},
        **_aliases(1e-3, "ng/mL", "ng/ml", "ug/L", "µg/L", "μg/L", "mcg/L"),
        **_aliases(10.0, "mg/dL", "mg/dl"),
        **_aliases(1000.0, "g/L", "g/l"),
    },
    "rate": {
        **_aliases(1.0, "mg/h", "mg/hr"),
        "mg/min": 60.0,
        **_aliases(1000.0, "g/h", "g/hr"),
        "mg/d": 1 / 24,
        "mg/day": 1 / 24,
    },
    "clearance": {
        **_aliases(1.0, "L/h", "l/h", "L/hr"),
        **_aliases(0.06, "mL/min", "ml/min"),
        **_aliases(1 / 24, "L/d", "L/day"),
    },
    "rate_constant": {
        **_aliases(1.0, "1/h", "/h", "h-1", "h^-1", "per h"),
        **_aliases(60.0, "1/min", "/min", "min-1"),
        **_aliases(1 / 24, "1/d", "/d", "d-1"),
    },
    "creatinine": {
        **_aliases(1.0, "mg/dL", "mg/dl"),
        **{p + "mol/L": 1 / 88.4 for p in ("u", "µ", "μ")},
        **{p + "mol/l": 1 / 88.4 for p in ("u", "µ", "μ")},
    },
    "fraction": {"%": 0.01},
}

#: The unit every kind is converted to.
CORE_UNITS: dict[str, str] = {
    "time": "h",
    "amount": "mg",
    "amount_per_weight": "mg/kg",
    "volume": "L",
    "weight": "kg",
    "height": "cm",
    "age": "y",
    "concentration": "mg/L",
    "rate": "mg/h",
    "clearance": "L/h",
    "rate_constant": "1/h",
    "creatinine": "mg/dL",
    "fraction": "1",
}

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SINGLE = re.compile(rf"\s*({_NUMBER})\s*(.*?)\s*")
# "5 ft 10 in", "1 h 30 min": several number–unit pairs of one kind, added up
_PAIR = re.compile(rf"({_NUMBER})\s*([^\W\d_]+)")
_PAIRS = re.compile(rf"\s*(?:{_PAIR.pattern}\s*)+")


def accepted_units(kind: str) -> tuple[str, ...]:
    """Units accepted for ``kind`` (``"time"``, ``"amount"``, ``"weight"``, ...), core unit first."""
    if kind not in _TABLES:
        raise UnitError(f"unknown quantity kind {kind!r}; known kinds: {', '.join(_TABLES)}")
    return tuple(_TABLES[kind])


def _where(field: str | None) -> str:
    return f"`{field}` " if field else ""


def split_quantity(text: str, kind: str, *, field: str | None = None) -> tuple[float, str]:
    """Number and unit of a one-unit quantity, e.g. ``"12 h"`` → ``(12.0, "h")``.

    The unit is checked against ``kind``'s table but not converted; bare numbers give the
    core unit.
    """
    table = _TABLES[kind] if kind in _TABLES else accepted_units(kind)  # raises for bad kind
    match = _SINGLE.fullmatch(text)
    if match is None:
        raise UnitError(
            f"{_where(field)}must be a number with a unit such as '{_example(kind)}', got {text!r}"
        )
    unit = match.group(2)
    if unit and unit not in table:
        raise UnitError(_unknown_unit_message(unit, text, kind, field))
    return float(match.group(1)), unit or CORE_UNITS[kind]


def _example(kind: str) -> str:
    return "30%" if kind == "fraction" else f"12 {accepted_units(kind)[0]}"


def _bare(kind: str) -> str:
    return (
        "a bare number is a fraction, e.g. 0.3"
        if kind == "fraction"
        else f"a bare number means {CORE_UNITS[kind]}"
    )


def _unknown_unit_message(unit: str, text: str, kind: str, field: str | None) -> str:
    kind_name = kind.replace("_", " ")
    other = [k for k, table in _TABLES.items() if unit in table and k != kind]
    hint = (
        f" ({unit!r} is a unit of {', '.join(o.replace('_', ' ') for o in other)})" if other else ""
    )
    return (
        f"{_where(field)}has unknown {kind_name} unit {unit!r} in {text!r}{hint}; "
        f"accepted {kind_name} units: {', '.join(accepted_units(kind))} "
        f"({_bare(kind)})"
    )


def parse_quantity(value: str | float | int, kind: str, *, field: str | None = None) -> float:
    """Convert a quantity to the core unit of ``kind``.

    Parameters
    ----------
    value
        A number (already in the core unit) or text such as ``"30 min"``, ``"1 g"``,
        ``"150 lb"``, ``"5 ft 10 in"`` (several number–unit pairs of the same kind add up).
    kind
        ``"time"`` (h), ``"amount"`` (mg), ``"amount_per_weight"`` (mg/kg), ``"volume"`` (L),
        ``"weight"`` (kg), ``"height"`` (cm), ``"age"`` (y), ``"concentration"`` (mg/L),
        ``"rate"`` (mg/h), ``"clearance"`` (L/h), ``"rate_constant"`` (1/h),
        ``"creatinine"`` (mg/dL) or ``"fraction"`` (``"30%"`` → 0.3).
    field
        Name of the field being read, for error messages (e.g. ``"patient.weight"``).

    Returns
    -------
    float
        The value in the core unit (:data:`CORE_UNITS`).

    Raises
    ------
    UnitError
        Unknown unit (the message names the field, the value and the accepted units), no
        number, or a value that is not finite.

    Examples
    --------
    >>> parse_quantity("30 min", "time")
    0.5
    >>> parse_quantity("1 g", "amount")
    1000.0
    >>> round(parse_quantity("150 lb", "weight"), 3)
    68.039
    >>> parse_quantity(12, "time")
    12.0
    >>> round(parse_quantity("5 ft 10 in", "height"), 2)
    177.8
    """
    if kind not in _TABLES:
        accepted_units(kind)  # raises the "unknown kind" error
    if isinstance(value, bool):
        raise UnitError(f"{_where(field)}must be a number or text with a unit, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        number = _parse_text(value, kind, field)
    else:
        raise UnitError(
            f"{_where(field)}must be a number or text with a unit such as "
            f"'{_example(kind)}', got {value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(number):
        raise UnitError(f"{_where(field)}must be a finite number, got {value!r}")
    return number


def _parse_text(text: str, kind: str, field: str | None) -> float:
    table = _TABLES[kind]
    if not text.strip():
        raise UnitError(
            f"{_where(field)}is empty; give a number with a unit such as '{_example(kind)}'"
        )
    single = _SINGLE.fullmatch(text)
    if single is not None:
        number, unit = float(single.group(1)), single.group(2)
        if not unit:  # a bare number means the core unit
            return number
        if unit in table:
            return number * table[unit]
    pairs = _PAIRS.fullmatch(text)
    if pairs is not None:
        parts = _PAIR.findall(text)
        if len(parts) > 1 and all(unit in table for _, unit in parts):
            return sum(float(number) * table[unit] for number, unit in parts)
    if single is None:
        raise UnitError(
            f"{_where(field)}could not read {text!r} as a {kind.replace('_', ' ')}; "
            f"expected a number with a unit such as '{_example(kind)}'"
        )
    raise UnitError(_unknown_unit_message(single.group(2), text, kind, field))
