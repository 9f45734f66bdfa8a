"""Regimen specs: text and structured forms, expansion to doses, error messages."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinsim.priors import one_compartment, two_compartment
from twinsim.scenarios import DoseSpec, RegimenSpec, SpecError, parse_regimen_text
from twinsim.simulators import Dose, DosingEvents

ORAL = one_compartment(absorption="first_order")  # states depot, central; routes oral, iv
IV = two_compartment()  # states central, peripheral1; route iv only
DEPOT, CENTRAL = ORAL.state_index("depot"), ORAL.state_index("central")


def doses_of(text, model=ORAL, **kwargs):
    return RegimenSpec.model_validate(text).to_doses(model, **kwargs)


def test_x_days_counts_doses_whose_start_is_before_the_end():
    """'q12h x 14 d' = the doses with start time < 14 d = 28 doses at 0, 12, ..., 324 h."""
    doses = doses_of("100 mg q12h x 14 d")
    assert [d.time for d in doses] == [12.0 * k for k in range(28)]
    assert all(
        d.amount == 100.0 and d.compartment == DEPOT and d.rate == 0 and d.duration == 0
        for d in doses
    )
    assert doses == doses_of("100 mg q12h x 28 doses")


def test_x_days_with_an_interval_that_does_not_divide_it():
    """q10h x 1 d: 0, 10 and 20 h start before 24 h; 30 h does not."""
    assert [d.time for d in doses_of("100 mg q10h x 1 d")] == [0.0, 10.0, 20.0]


def test_infusion_over_a_duration_defaults_to_the_iv_route():
    doses = doses_of("1 g over 1 h q12h x 3 d")
    assert [d.time for d in doses] == [0.0, 12.0, 24.0, 36.0, 48.0, 60.0]
    assert {(d.amount, d.duration, d.rate, d.compartment) for d in doses} == {
        (1000.0, 1.0, 0.0, CENTRAL)
    }


def test_open_ended_frequency_repeats_until_the_end_of_the_simulation():
    doses = doses_of("500 mg iv over 30 min q8h", until=24.0)
    assert [d.time for d in doses] == [0.0, 8.0, 16.0]
    assert {(d.amount, d.duration, d.compartment) for d in doses} == {(500.0, 0.5, CENTRAL)}
    with pytest.raises(
        SpecError,
        match=r"`regimen.doses\[0\]` repeats every 8 h to the end of the simulation; pass `until`",
    ):
        doses_of("500 mg iv over 30 min q8h")


def test_loading_dose_per_kg_then_maintenance():
    """Maintenance starts one interval (12 h) after the loading dose; 'x 5 d' counts from there."""
    doses = doses_of("loading 25 mg/kg then 15 mg/kg q12h x 5 d", weight_kg=70.0)
    assert [d.time for d in doses] == [0.0] + [12.0 + 12.0 * k for k in range(10)]
    assert [d.amount for d in doses] == pytest.approx([25 * 70.0] + [15 * 70.0] * 10, rel=1e-15)


def test_per_kg_doses_need_the_weight():
    with pytest.raises(
        SpecError,
        match=r"`regimen.doses\[0\].amount_per_kg` is 25 mg/kg: the patient's weight is needed; give `weight_kg`",
    ):
        doses_of("loading 25 mg/kg then 15 mg/kg q12h x 5 d")


def test_once():
    assert doses_of("100 mg once") == [Dose(0.0, 100.0, compartment=DEPOT)]


def test_steady_state():
    doses = doses_of("100 mg q24h at steady state", until=72.0)
    assert [(d.time, d.steady_state, d.interval) for d in doses] == [
        (0.0, True, 24.0),
        (24.0, False, 24.0),
        (48.0, False, 24.0),
    ]
    counted = doses_of("100 mg q24h x 7 doses at steady state")
    assert (
        len(counted) == 7
        and counted[0].steady_state
        and not any(d.steady_state for d in counted[1:])
    )


@pytest.mark.parametrize(
    ("text", "interval"),
    [("1 g bid x 1 d", 12.0), ("1 g tid x 1 d", 8.0), ("1 g qid x 1 d", 6.0), ("1 g daily x 1 d", 24.0),
     ("1 g once daily x 1 d", 24.0), ("1 g every 6 hours x 1 d", 6.0), ("1 g q1d x 1 d", 24.0)],
)  # fmt: skip
def test_named_frequencies(text, interval):
    doses = doses_of(text)
    assert [d.time for d in doses] == [interval * k for k in range(math.ceil(24 / interval))]


def test_rate_route_and_start_clauses():
    doses = doses_of("500 mg po at 250 mg/h q12h x 1 d starting at 6 h")
    assert [(d.time, d.rate, d.duration, d.compartment) for d in doses] == [
        (6.0, 250.0, 0.0, DEPOT),
        (18.0, 250.0, 0.0, DEPOT),
    ]


def test_phases_after_a_repeated_phase_start_one_interval_after_its_last_dose():
    doses = doses_of("200 mg q12h x 1 d then 100 mg q24h x 2 d")
    assert [(d.time, d.amount) for d in doses] == [
        (0.0, 200.0),
        (12.0, 200.0),
        (24.0, 100.0),
        (48.0, 100.0),
    ]


def test_model_with_one_route_takes_doses_without_a_route():
    assert doses_of("100 mg once", model=IV)[0].compartment == IV.state_index("central")


def test_structured_doses_with_units_and_aliases():
    regimen = RegimenSpec.model_validate(
        {
            "doses": [
                {"amount": "1 g", "start": "30 min", "route": "iv", "duration": "1 h"},
                {"amount": "25 mg/kg", "time": "1 d", "compartment": "central"},
                {"amount": 50, "time": 48, "compartment": 1, "interval": "12 h", "additional": 2},
                "10 mg once",
            ]
        }
    )
    assert regimen.doses[1].amount_per_kg == 25.0 and regimen.doses[1].amount is None
    doses = regimen.to_doses(ORAL, weight_kg=80.0)
    assert [(d.time, d.amount, d.compartment, d.duration) for d in doses] == [
        (0.0, 10.0, DEPOT, 0.0),
        (0.5, 1000.0, CENTRAL, 1.0),
        (24.0, 2000.0, CENTRAL, 0.0),
        (48.0, 50.0, DEPOT, 0.0),
        (60.0, 50.0, DEPOT, 0.0),
        (72.0, 50.0, DEPOT, 0.0),
    ]


def test_one_dose_record_or_a_list_is_a_regimen():
    single = RegimenSpec.model_validate({"amount": "100 mg", "interval": "12 h", "additional": 1})
    assert single == RegimenSpec.model_validate(["100 mg q12h x 2 doses"])


def test_doses_build_a_dosing_table():
    table = DosingEvents.from_doses([doses_of("100 mg q12h x 14 d")])
    assert int(np.asarray(table.mask).sum()) == 28


def test_dump_validates_back_to_the_same_regimen():
    regimen = RegimenSpec.model_validate("loading 1 g iv over 1 h then 500 mg iv over 30 min q8h")
    assert RegimenSpec.model_validate(regimen.model_dump()) == regimen
    assert RegimenSpec.model_validate_json(regimen.model_dump_json()) == regimen


def test_parse_regimen_text_gives_records():
    assert parse_regimen_text("loading 25 mg/kg then 15 mg/kg q12h x 5 d") == [
        {"amount_per_kg": 25.0, "time": 0.0},
        {"amount_per_kg": 15.0, "time": 12.0, "interval": 12.0, "additional": 9},
    ]


# ---------------------------------------------------------------------------- errors
def test_negative_dose_names_the_field_and_value():
    with pytest.raises(SpecError, match=r"`doses\[2\]\.amount` must be > 0 mg, got -50"):
        RegimenSpec.model_validate(
            {"doses": ["100 mg once", {"amount": 5, "time": 1}, {"amount": -50}]}
        )
    with pytest.raises(SpecError, match=r"`doses\[0\]\.amount` must be > 0 mg, got -50"):
        RegimenSpec.model_validate("-50 mg once")


def test_unknown_unit():
    with pytest.raises(
        SpecError,
        match=r"`doses\[0\]\.interval` has unknown time unit 'fortnights'.*accepted time units: h",
    ):
        RegimenSpec(doses=[{"amount": 1, "interval": "2 fortnights", "additional": 1}])
    with pytest.raises(SpecError, match=r"unknown amount unit 'tablets'; accepted: mg, g"):
        RegimenSpec.model_validate("2 tablets q12h x 1 d")


def test_infusion_longer_than_the_interval():
    with pytest.raises(
        SpecError, match=r"`doses\[0\]` infusion lasts 13 h, longer than the dosing interval 12 h"
    ):
        RegimenSpec.model_validate("2 g over 13 h q12h x 2 d")
    per_kg_by_rate = RegimenSpec.model_validate("20 mg/kg iv at 100 mg/h q12h x 1 d")
    with pytest.raises(
        SpecError, match=r"infusion of 1400 mg lasts 14 h, longer than the dosing interval 12 h"
    ):
        per_kg_by_rate.to_doses(ORAL, weight_kg=70.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "hello",
            r"could not read the regimen 'hello': a phase starts with an amount.*expected text such as '100 mg q12h x 14 d'",
        ),
        (
            "100 mg q12h x 14 d please",
            r"at 'please': this part is not an amount, route, infusion, frequency or count",
        ),
        ("100 mg once q12h", r"'once' contradicts 'q12h'"),
        ("100 mg x 3 d", r"'x 3 d' needs a frequency such as 'q12h'"),
        ("100 mg q12h q8h", r"'q8h' repeats 'q12h'"),
        ("100 mg once at steady state", r"steady state needs a dosing interval"),
        ("1 g infusion q8h x 1 d", r"an infusion needs its duration \('over 1 h'\) or rate"),
        (
            "loading 1 g then 500 mg once",
            r"in the phase '500 mg once': this phase follows a single dose",
        ),
        ("100 mg q12h then 50 mg once", r"only the last phase may repeat to the end"),
        ("100 mg q12h x 0 doses", r"the number of doses must be a whole number ≥ 1, got 0"),
        ("", r"could not read the regimen '': it is empty"),
    ],
)
def test_unreadable_text_says_what_is_expected(text, message):
    with pytest.raises(SpecError, match=message):
        RegimenSpec.model_validate(text)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"amount": 1, "amount_per_kg": 1},
            r"`amount` \(mg\) or `amount_per_kg` \(mg/kg\) must be given, exactly one",
        ),
        ({"time": 1}, r"`amount` \(mg\) or `amount_per_kg` \(mg/kg\) must be given"),
        (
            {"amount": 1, "rate": 1, "duration": 1},
            r"give the infusion `rate` \(1 mg/h\) or its `duration` \(1 h\), not both",
        ),
        (
            {"amount": 1, "additional": 2},
            r"`interval` \(h\) is required for repeated or steady-state doses",
        ),
        (
            {"amount": 1, "route": "iv", "compartment": 1},
            r"give `route` \('iv'\) or `compartment` \(1\), not both",
        ),
        ({"amount": 1, "time": -1}, r"`doses\[0\]\.time` must be ≥ 0 h, got -1"),
        ({"amount": 1, "time": 1, "start": 2}, r"give `time` or its alias `start`, not both"),
        (
            {"amount": 1, "compartment": 0},
            r"`doses\[0\]\.compartment` must be a state name or NONMEM's 1-based CMT ≥ 1, got 0",
        ),
        ({"amount": 1, "duration": 0}, r"`doses\[0\]\.duration` must be > 0 h when given, got 0"),
        (
            {"amount": 1, "dose": 3},
            r"`doses\[0\]\.dose` is not a known field; known fields here: amount, amount_per_kg, time \(or start\)",
        ),
        (
            {"amount": 1, "interval": 12, "additional": 2, "until_end": True},
            r"give `additional` \(2\) or `until_end`, not both",
        ),
        (
            {"amount": 1, "interval": 1, "additional": 100_000},
            r"gives 100001 doses, more than 100000",
        ),
    ],
)
def test_invalid_dose_records(record, message):
    with pytest.raises(SpecError, match=message):
        RegimenSpec.model_validate({"doses": [record]})


def test_empty_regimen():
    with pytest.raises(SpecError, match=r"has no doses; give at least one"):
        RegimenSpec.model_validate([])


def test_routes_and_compartments_the_model_lacks():
    with pytest.raises(
        SpecError,
        match=r"`regimen.doses\[0\]`: model 'pk_1cmt_oral' has no route 'sc'; known routes: \['oral', 'iv'\]",
    ):
        doses_of("100 mg sc once")
    with pytest.raises(SpecError, match=r"CMT=5 but model 'pk_2cmt_iv' has 2 compartments"):
        RegimenSpec(doses=[DoseSpec(amount=1, compartment=5)]).to_doses(IV)
    with pytest.raises(SpecError, match=r"has no state \(compartment\) 'gut'"):
        RegimenSpec(doses=[{"amount": 1, "compartment": "gut"}]).to_doses(ORAL)


def test_spec_error_is_a_value_error_and_lists_problems():
    with pytest.raises(ValueError) as info:
        RegimenSpec.model_validate({"doses": [{"amount": -1}, {"amount": -2}]})
    assert isinstance(info.value, SpecError)
    assert len(info.value.problems) == 2
    assert "invalid RegimenSpec (2 problems)" in str(info.value)


def test_specs_are_frozen():
    regimen = RegimenSpec.model_validate("100 mg once")
    with pytest.raises(Exception, match="frozen"):
        regimen.doses[0].amount = 5  # type: ignore[misc]


@given(interval_h=st.integers(1, 48), span_h=st.integers(1, 24 * 60))
def test_x_span_means_doses_before_the_end(interval_h, span_h):
    """Property: 'q{I}h x {S} h' gives exactly the doses k·I with k·I < S (integers: exact)."""
    doses = doses_of(f"10 mg q{interval_h}h x {span_h} h")
    assert [d.time for d in doses] == [float(t) for t in range(0, span_h, interval_h)]
