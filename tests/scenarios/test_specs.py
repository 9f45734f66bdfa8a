"""Simulation and patient specs: validation, units, model registry, files, JSON Schema."""

import json

import numpy as np
import pytest

from twinsim.priors import ODEModel
from twinsim.scenarios import (
    MODEL_REGISTRY,
    PatientSpec,
    SimulationSpec,
    SpecError,
    TimeGrid,
    VariabilitySpec,
    load_spec,
    resolve_model,
    spec_json_schema,
)
from twinsim.simulators import DosingEvents

BASE = {
    "model": "pk_1cmt_oral",
    "parameters": {"cl": 2.8, "v": 32.0, "ka": 1.5, "f_oral": 1.0},
    "regimen": "320 mg q12h x 1 d",
    "times": [0, 1, 2, 24],
}


def spec(**changes):
    return SimulationSpec.model_validate({**BASE, **changes})


# ---------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_registry_names_are_the_models_own_names(name):
    model = resolve_model(name)
    assert isinstance(model, ODEModel)
    assert model.name == name


def test_resolve_model_caches_and_rejects_unknown_names():
    assert resolve_model("pk_2cmt_iv") is resolve_model("pk_2cmt_iv")
    with pytest.raises(
        SpecError,
        match=r"`model` 'pk_2cmt_oarl' is not a known model \(did you mean 'pk_2cmt_oral'\?\); known models: pk_1cmt_iv",
    ):
        resolve_model("pk_2cmt_oarl")


def test_unknown_model_in_a_spec():
    with pytest.raises(
        SpecError,
        match=r"`model` 'two_cmt' is not a known model.*known models: pk_1cmt_iv, pk_1cmt_oral",
    ):
        spec(model="two_cmt")


# ---------------------------------------------------------------------------- parameters
def test_parameters_accept_units_and_follow_the_model_order():
    """1 mL/min = 0.06 L/h, 1 /min = 60 /h, 1000 mL = 1 L (definitions); rtol 1e-14 (rounding)."""
    s = spec(
        parameters={
            "f_oral": "80%",
            "ka": "0.025 1/min",
            "v": "32000 mL",
            "cl": "46.666666666666664 mL/min",
        }
    )
    np.testing.assert_allclose(s.parameter_vector(), [2.8, 32.0, 1.5, 0.8], rtol=1e-14)
    assert list(s.parameters) == ["cl", "v", "ka", "f_oral"]


def test_parameter_problems_are_listed_with_the_models_parameters():
    with pytest.raises(SpecError) as info:
        spec(parameters={"cl": -1, "vc": 3, "ka": "1 parsec"})
    problems = info.value.problems
    assert problems[0] == "`parameters.cl` must be > 0 L/h, got -1; give a positive value"
    assert problems[1].startswith(
        "`parameters.vc` is not a parameter of model 'pk_1cmt_oral'; its parameters: cl (L/h), v (L), ka (1/h), f_oral (1)"
    )
    assert problems[2].startswith(
        "`parameters.ka` has unknown rate constant unit 'parsec' in '1 parsec'"
    )
    assert problems[3].startswith("`parameters` is missing v, f_oral for model 'pk_1cmt_oral'")


def test_zero_parameter():
    with pytest.raises(SpecError, match=r"`parameters.v` must be > 0 L, got 0"):
        spec(parameters={**BASE["parameters"], "v": 0})


# ---------------------------------------------------------------------------- variability
def test_variability_forms():
    """omega = log(1 + cv²) for a log-normal parameter (exact relation; rtol 1e-15)."""
    s = spec(variability={"cl": "30%", "v": 0.2, "ka": {"omega": 0.5}}, n_subjects=20, seed=3)
    assert s.variability["cl"].cv == pytest.approx(0.3, rel=1e-15)
    assert s.variability["cl"].omega_squared == pytest.approx(np.log(1 + 0.3**2), rel=1e-15)
    assert s.variability["v"].cv == 0.2
    assert s.variability["ka"].eta_sd == pytest.approx(np.sqrt(0.5), rel=1e-15)
    assert (s.n_subjects, s.seed) == (20, 3)


@pytest.mark.parametrize(
    ("variability", "message"),
    [
        (
            {"q": 0.3},
            r"`variability.q` is not a parameter of model 'pk_1cmt_oral'; its parameters: cl, v, ka, f_oral",
        ),
        (
            {"cl": 30},
            r"`variability.cl` `cv` must be a fraction in \(0, 2\], got 30 \(did you mean '30%'\?\)",
        ),
        (
            {"cl": {"cv": 0.3, "omega": 0.1}},
            r"give `cv` \(e.g. '30%'\) or `omega` \(variance of η\), exactly one",
        ),
        ({"cl": {"omega": -0.1}}, r"`omega` \(variance of η\) must be > 0, got -0.1"),
    ],
)
def test_invalid_variability(variability, message):
    with pytest.raises(SpecError, match=message):
        spec(variability=variability)


def test_cohort_size_and_seed_bounds():
    with pytest.raises(
        SpecError, match=r"`n_subjects` input should be greater than or equal to 1, got 0"
    ):
        spec(n_subjects=0)
    with pytest.raises(
        SpecError, match=r"`seed` input should be greater than or equal to 0, got -1"
    ):
        spec(seed=-1)


# ---------------------------------------------------------------------------- times
def test_time_grid_includes_stop_and_converts_units():
    assert spec(times={"start": "0 h", "stop": "1 d", "step": "6 h"}).times == (
        0.0,
        6.0,
        12.0,
        18.0,
        24.0,
    )
    assert spec(times={"stop": "1 h", "step": "20 min"}).times == pytest.approx(
        (0.0, 1 / 3, 2 / 3, 1.0), rel=1e-15
    )
    assert spec(times=["0 h", "30 min", 2, "1 d"]).times == (0.0, 0.5, 2.0, 24.0)
    assert TimeGrid(stop=10, step=4).values() == (0.0, 4.0, 8.0)


@pytest.mark.parametrize(
    ("times", "message"),
    [
        (
            [0, 2, 1],
            r"`times` must be strictly increasing, but times\[2\] = 1 h follows times\[1\] = 2 h; sort them",
        ),
        ([0, 1, 1], r"times\[2\] = 1 h follows times\[1\] = 1 h"),
        ([-1, 1], r"`times` must be ≥ 0 h, got -1 h first"),
        ([], r"`times` is empty; give at least one output time"),
        ([0, "2 parsec"], r"`times\[1\]` has unknown time unit 'parsec'"),
        ({"stop": 10, "step": 0}, r"`times.step` must be > 0 h, got 0"),
        ({"start": 5, "stop": 1, "step": 1}, r"`times.stop` must be ≥ start \(5 h\), got 1 h"),
        ({"step": 1}, r"`times.stop` is required for a time grid"),
        ({"stop": 1, "step": 1, "every": 2}, r"`times.every` is not a field of a time grid"),
        ({"stop": "2 wk", "step": "1 s"}, r"`times.step` gives more than 1000000 output times"),
    ],
)
def test_invalid_times(times, message):
    with pytest.raises(SpecError, match=message):
        spec(times=times)


# ---------------------------------------------------------------------------- patients
def test_patient_units_and_normalisation():
    """1 lb = 0.45359237 kg, 1 in = 2.54 cm (exact); creatinine 88.4 µmol/L = 1 mg/dL."""
    p = PatientSpec(
        id=7, age="30 y", sex="F", weight="154 lb", height="5 ft 10 in", scr="88.4 µmol/L"
    )
    assert p.id == "7" and p.sex == "female" and p.age == 30.0
    assert p.weight == pytest.approx(154 * 0.45359237, rel=1e-15)
    assert p.height == pytest.approx(70 * 2.54, rel=1e-15)
    assert p.serum_creatinine == pytest.approx(1.0, rel=1e-15)
    assert PatientSpec(sex="male", serum_creatinine=1.1).serum_creatinine == 1.1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"weight": 700},
            r"`weight` must be between 0.3 and 400 kg, got 700 kg; a bare number is kg, give other units explicitly, e.g. '150 lb'",
        ),
        (
            {"height": 1.8},
            r"`height` must be between 20 and 250 cm, got 1.8 cm \(did you mean '1.8 m'\?\)",
        ),
        (
            {"scr": 88},
            r"`scr` must be between 0.1 and 20 mg/dL, got 88 mg/dL \(if this is µmol/L, write '88 µmol/L'\)",
        ),
        ({"age": 130}, r"`age` must be between 0 and 120 y, got 130 y"),
        ({"sex": "x"}, r"`sex` must be 'female' or 'male' \(or F/M\), got 'x'"),
        ({"weight": "70 stone"}, r"`weight` has unknown weight unit 'stone'"),
        ({"wieght": 70}, r"`wieght` is not a known field \(did you mean `weight`\?\)"),
    ],
)
def test_invalid_patients(fields, message):
    with pytest.raises(SpecError, match=message):
        PatientSpec(**fields)


def test_one_patient_or_several():
    one = spec(patient={"id": "A", "weight": "70 kg"})
    assert [p.id for p in one.patients] == ["A"]
    many = spec(patients=[{"id": 1}, {"id": 2}])
    assert [p.id for p in many.patients] == ["1", "2"]
    with pytest.raises(
        SpecError, match=r"give `patient` \(one\) or `patients` \(a list\), not both"
    ):
        spec(patient={}, patients=[])
    with pytest.raises(
        SpecError, match=r"`patients` has the id '1' twice \(patients\[0\] and patients\[1\]\)"
    ):
        spec(patients=[{"id": 1}, {"id": "1"}])


def test_per_kg_regimens_need_every_patients_weight():
    regimen = "loading 25 mg/kg then 15 mg/kg q12h x 1 d"
    with pytest.raises(
        SpecError,
        match=r"`patients\[1\].weight` is required because the regimen doses per kg \(25 mg/kg\)",
    ):
        spec(regimen=regimen, patients=[{"id": 1, "weight": 60}, {"id": 2}])
    with pytest.raises(SpecError, match=r"`patients` is empty, but the regimen doses per kg"):
        spec(regimen=regimen)
    doses = spec(
        regimen=regimen, patients=[{"id": 1, "weight": 60}, {"id": 2, "weight": "220 lb"}]
    ).doses()
    assert [d.amount for d in doses[0]] == pytest.approx([1500.0, 900.0, 900.0], rel=1e-15)
    assert doses[1][0].amount == pytest.approx(25 * 220 * 0.45359237, rel=1e-15)


def test_nested_errors_have_full_dotted_paths():
    with pytest.raises(SpecError, match=r"`regimen.doses\[2\].amount` must be > 0 mg, got -50"):
        spec(
            regimen={"doses": ["100 mg once", {"amount": 1, "time": 2}, {"amount": -50, "time": 3}]}
        )
    with pytest.raises(SpecError, match=r"`regimen.doses\[0\].amount` must be > 0 mg, got -50"):
        SimulationSpec(**{**BASE, "regimen": "-50 mg once"})
    with pytest.raises(
        SpecError, match=r"`colour` is not a known field; known fields here: model, pd, parameters"
    ):
        spec(colour="blue")
    with pytest.raises(SpecError, match=r"`regimen` is required but missing"):
        SimulationSpec.model_validate({k: v for k, v in BASE.items() if k != "regimen"})


# ---------------------------------------------------------------------------- conversions
def test_open_ended_regimen_runs_to_the_last_output_time():
    s = spec(regimen="100 mg q8h", times={"stop": "1 d", "step": "1 h"})
    assert [d.time for d in s.doses()[0]] == [0.0, 8.0, 16.0]


def test_dosing_events_have_one_row_per_patient():
    s = spec(patients=[{"id": "a"}, {"id": "b"}, {"id": "c"}])
    events = s.dosing_events()
    assert isinstance(events, DosingEvents)
    assert events.n_subjects == 3
    np.testing.assert_array_equal(np.asarray(events.mask).sum(axis=1), [2, 2, 2])
    assert spec().dosing_events().n_subjects == 1


def test_dump_validates_back_to_the_same_spec():
    s = spec(
        variability={"cl": "30%", "v": {"omega": 0.04}},
        patient={"id": 1, "weight": "150 lb", "sex": "m", "scr": "80 umol/L"},
        regimen="loading 1 g then 500 mg q12h x 2 d",
    )
    assert SimulationSpec.model_validate(s.model_dump(mode="json")) == s
    assert SimulationSpec.model_validate_json(s.model_dump_json()) == s


# ---------------------------------------------------------------------------- files
YAML_SPEC = """\
model: pk_1cmt_oral
parameters: {cl: 2.8 L/h, v: 32 L, ka: 1.5 1/h, f_oral: 1}
variability: {cl: 30%}
n_subjects: 5
seed: 1
regimen: 320 mg q12h x 3 d
times: {start: 0 h, stop: 3 d, step: 30 min}
patient: {id: A, age: 45 y, sex: female, weight: 150 lb, height: 5 ft 6 in, serum_creatinine: 80 µmol/L}
"""


def test_load_yaml_and_json(tmp_path):
    from_yaml = load_spec(_write(tmp_path / "spec.yaml", YAML_SPEC))
    assert from_yaml.regimen.doses[0].additional == 5
    assert len(from_yaml.times) == 3 * 48 + 1
    from_json = load_spec(_write(tmp_path / "spec.json", from_yaml.model_dump_json()))
    assert from_json == from_yaml


def test_load_spec_errors_name_the_file(tmp_path):
    bad = _write(tmp_path / "bad.yaml", YAML_SPEC.replace("cl: 2.8 L/h", "cl: -2.8 L/h"))
    with pytest.raises(
        SpecError,
        match=r"invalid spec '.*bad.yaml' \(1 problem\):\n  - `parameters.cl` must be > 0 L/h, got -2.8",
    ):
        load_spec(bad)
    with pytest.raises(SpecError, match=r"broken.yaml is not valid YAML"):
        load_spec(_write(tmp_path / "broken.yaml", "model: [unclosed\n"))
    with pytest.raises(SpecError, match=r"broken.json is not valid JSON"):
        load_spec(_write(tmp_path / "broken.json", "{"))
    with pytest.raises(
        SpecError, match=r"list.yaml must hold a mapping of spec fields .* got list"
    ):
        load_spec(_write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(SpecError, match=r"cannot read '.*missing.yaml'"):
        load_spec(tmp_path / "missing.yaml")


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_json_schema_describes_the_accepted_forms():
    schema = spec_json_schema()
    json.dumps(schema)  # serialisable
    # parameters: required by a registered or user model (the spec says which are missing),
    # absent for a trained model folder
    assert sorted(schema["required"]) == ["model", "regimen", "times"]
    properties = schema["properties"]
    # the registered names, but also file.py:object and folders: examples, not an enum
    assert properties["model"]["examples"] == list(MODEL_REGISTRY)
    assert "patient" in properties and "patients" in properties
    regimen = schema["$defs"]["RegimenSpec"]
    assert regimen["anyOf"][0]["type"] == "string"
    time_forms = properties["times"]["anyOf"]
    assert {"type": "array"}.items() <= time_forms[0].items()
    assert time_forms[1] == {"$ref": "#/$defs/TimeGrid"}
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["PatientSpec"]["additionalProperties"] is False


def test_variability_spec_alone():
    with pytest.raises(SpecError, match=r"invalid VariabilitySpec"):
        VariabilitySpec()
