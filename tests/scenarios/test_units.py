"""Quantities with units: conversion to the core units and error messages."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinsim.scenarios import CORE_UNITS, UnitError, accepted_units, parse_quantity

# Exact definitions: 1 lb = 0.45359237 kg and 1 in = 2.54 cm (international yard and pound
# agreement, 1959); creatinine 1 mg/dL = 88.4 µmol/L (molar mass 113.12 g/mol, the
# conversion used by clinical laboratories and KDIGO).
CONVERSIONS = [
    ("12 h", "time", 12.0),
    ("30 min", "time", 0.5),
    ("14 d", "time", 336.0),
    ("1 wk", "time", 168.0),
    ("1 h 30 min", "time", 1.5),
    ("90 s", "time", 90 / 3600),
    ("1 g", "amount", 1000.0),
    ("500 mg", "amount", 500.0),
    ("250 ug", "amount", 0.25),
    ("250 \u00b5g", "amount", 0.25),  # micro sign
    ("250 \u03bcg", "amount", 0.25),  # Greek small mu
    ("250 mcg", "amount", 0.25),
    ("150 lb", "weight", 150 * 0.45359237),
    ("70 kg", "weight", 70.0),
    ("180 cm", "height", 180.0),
    ("1.8 m", "height", 180.0),
    ("5 ft 10 in", "height", (5 * 12 + 10) * 2.54),
    ("1.2 mg/dL", "creatinine", 1.2),
    ("88.4 \u00b5mol/L", "creatinine", 1.0),
    ("106 umol/L", "creatinine", 106 / 88.4),
    ("10 mg/L", "concentration", 10.0),
    ("2 ug/mL", "concentration", 2.0),
    ("500 ng/mL", "concentration", 0.5),
    ("1 mg/dL", "concentration", 10.0),
    ("60 mg/min", "rate", 3600.0),
    ("100 mg/h", "rate", 100.0),
    ("100 mL/min", "clearance", 6.0),
    ("0.5 1/h", "rate_constant", 0.5),
    ("0.01 /min", "rate_constant", 0.6),
    ("25 mg/kg", "amount_per_weight", 25.0),
    ("30%", "fraction", 0.3),
    ("18 mo", "age", 1.5),
    ("-50 mg", "amount", -50.0),
    ("1.5e3 mg", "amount", 1500.0),
    ("  12h ", "time", 12.0),
]


@pytest.mark.parametrize(("text", "kind", "expected"), CONVERSIONS)
def test_text_converts_to_the_core_unit(text, kind, expected):
    """Each conversion matches its definition (see CONVERSIONS) to rtol 1e-12 (float rounding)."""
    assert parse_quantity(text, kind) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kind", sorted(CORE_UNITS))
def test_bare_numbers_are_in_the_core_unit(kind):
    assert parse_quantity(12, kind) == 12.0
    assert parse_quantity(2.5, kind) == 2.5
    assert parse_quantity("12", kind) == 12.0


@pytest.mark.parametrize("kind", sorted(CORE_UNITS))
def test_the_core_unit_is_accepted_and_listed_first(kind):
    if kind == "fraction":
        assert accepted_units(kind) == ("%",)
        return
    assert accepted_units(kind)[0] == CORE_UNITS[kind]
    assert parse_quantity(f"3 {CORE_UNITS[kind]}", kind) == 3.0


def test_unknown_unit_names_field_value_and_accepted_units():
    with pytest.raises(
        UnitError,
        match=r"`regimen.amount` has unknown amount unit 'mgs' in '5 mgs'.*accepted amount units: mg, g, ",
    ):
        parse_quantity("5 mgs", "amount", field="regimen.amount")


def test_unit_of_another_kind_is_named():
    with pytest.raises(
        UnitError, match=r"unknown time unit 'mg' in '12 mg' \('mg' is a unit of amount"
    ):
        parse_quantity("12 mg", "time")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "abc",
            r"`t` could not read 'abc' as a time; expected a number with a unit such as '12 h'",
        ),
        ("", r"`t` is empty"),
        ("inf h", r"could not read 'inf h'"),
        (float("nan"), r"`t` must be a finite number, got nan"),
        (True, r"`t` must be a number or text with a unit, got True"),
        ([1, 2], r"`t` must be a number or text with a unit .* got \[1, 2\] of type list"),
    ],
)
def test_values_that_are_not_quantities(value, message):
    with pytest.raises(UnitError, match=message):
        parse_quantity(value, "time", field="t")


def test_compound_quantity_needs_a_unit_on_each_part():
    with pytest.raises(UnitError, match=r"unknown height unit 'ft 10' in '5 ft 10'"):
        parse_quantity("5 ft 10", "height")


def test_unknown_kind():
    with pytest.raises(
        UnitError, match=r"unknown quantity kind 'speed'; known kinds: time, amount"
    ):
        parse_quantity("1 m/s", "speed")


def test_unit_error_is_a_value_error():
    assert issubclass(UnitError, ValueError)


@given(
    value=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
    unit_factor=st.sampled_from([("h", 1.0), ("min", 1 / 60), ("d", 24.0), ("wk", 168.0)]),
)
def test_time_text_round_trips_through_repr(value, unit_factor):
    """Writing a number with ``repr`` and a unit reads back exactly that number × factor
    (rtol 1e-15: one rounding in the multiplication)."""
    unit, factor = unit_factor
    assert math.isclose(parse_quantity(f"{value!r} {unit}", "time"), value * factor, rel_tol=1e-15)
