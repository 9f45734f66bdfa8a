"""PatientSpec: genotype, kidney function, comedications, lifestyle and the covariate row."""

import math

import numpy as np
import pytest
import yaml

from twinsim.priors import COVARIATE_COLUMNS, cockcroft_gault
from twinsim.scenarios import PatientSpec, SimulationSpec, SpecError, spec_json_schema


def test_full_patient_to_covariate_row():
    patient = PatientSpec(
        id="W-12",
        age="72 y",
        sex="F",
        weight="143 lb",
        height="5 ft 4 in",
        scr="97 µmol/L",
        ancestry="East Asian",
        genotype={"cyp2c9": "*3/*1", "VKORC1": "AA", "CYP2D6": "*10/*1"},
        comedications=["Amiodarone", "rifampin", "amiodarone"],
        smoking={"status": "current", "quit": "in 3 d", "cigarettes_per_day": 15},
        alcohol="7 units/wk",
        vitamin_k="120 µg/day",
        adherence="85%",
        dialysis=False,
    )
    assert patient.genotype == {"CYP2C9": "*1/*3", "VKORC1": "A/A", "CYP2D6": "*1/*10"}
    assert patient.comedications == ("amiodarone", "rifampicin")
    assert patient.ancestry == "east_asian"
    row = patient.covariates()
    assert list(row) == list(COVARIATE_COLUMNS) and all(len(v) == 1 for v in row.values())
    expected_crcl = cockcroft_gault(72, 143 * 0.45359237, 97 / 88.4, 1)
    assert row["crcl"][0] == pytest.approx(float(expected_crcl), rel=1e-14)
    assert row["female"][0] == 1.0 and row["age"][0] == 72.0
    assert row["cyp2c9"][0] == "*1/*3" and row["vkorc1"][0] == "A/A"
    assert row["cyp2c19"][0] == ""
    assert row["comed_amiodarone"][0] == 1.0 and row["comed_rifampicin"][0] == 1.0
    assert row["comed_fluconazole"][0] == 0.0
    assert (row["smoking"][0], row["smoking_quit_time"][0]) == (1.0, 72.0)
    assert row["cigarettes_per_day"][0] == 15.0
    assert row["alcohol_units_per_week"][0] == 7.0
    assert row["vitamin_k_ug_per_day"][0] == 120.0
    assert row["adherence"][0] == pytest.approx(0.85)
    assert row["ancestry"][0] == "east_asian"
    capped = patient.covariates(cap=150.0, min_creatinine_over_60=1.2)
    assert capped["crcl"][0] == pytest.approx(
        float(cockcroft_gault(72, 143 * 0.45359237, 1.2, 1)), rel=1e-14
    )


def test_measured_crcl_and_dialysis():
    patient = PatientSpec(age=50, sex="M", weight=80, scr=4.0, crcl="1.8 L/h", dialysis=True)
    row = patient.covariates()
    assert row["crcl"][0] == pytest.approx(30.0)  # measured wins over Cockcroft–Gault
    assert row["dialysis"][0] == 1.0
    assert PatientSpec(creatinine_clearance=85).crcl == 85.0


def test_defaults_keep_old_behaviour():
    patient = PatientSpec()
    assert patient.genotype == {} and patient.comedications == () and patient.smoking is None
    row = patient.covariates()
    assert np.isnan(row["crcl"][0]) and row["smoking"][0] == 0.0
    assert row["smoking_quit_time"][0] == math.inf and row["adherence"][0] == 1.0


@pytest.mark.parametrize(
    ("smoking", "extra", "columns"),
    [
        ("never", {}, (0.0, math.inf)),
        (True, {}, (1.0, math.inf)),
        (False, {}, (0.0, math.inf)),
        ("Current", {}, (1.0, math.inf)),
        ({"status": "former", "quit": "2 d ago"}, {}, (1.0, -48.0)),
        ({"status": "former", "quit": "-1 wk"}, {}, (1.0, -168.0)),
        ({"status": "former", "quit": -5}, {}, (1.0, -5.0)),
        ({"status": "former"}, {}, (0.0, -math.inf)),
        ({"status": "current", "quit": "36 h"}, {}, (1.0, 36.0)),
        (
            {"status": "former", "quit_date": "2024-03-01"},
            {"start_date": "2024-03-04"},
            (1.0, -72.0),
        ),
        (
            {"status": "current", "quit_date": "2024-03-10"},
            {"start_date": "2024-03-04"},
            (1.0, 144.0),
        ),
    ],
)
def test_smoking_forms(smoking, extra, columns):
    row = PatientSpec(smoking=smoking, **extra).covariates()
    assert (row["smoking"][0], row["smoking_quit_time"][0]) == columns


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"genotype": {"CYP2C9": "*1/*99"}},
            r"`genotype.CYP2C9` allele '\*99' in diplotype '\*1/\*99' is not a known CYP2C9 "
            r"allele; known alleles: \*1, \*2, \*3, \*5, \*6, \*8, \*11, \*13",
        ),
        (
            {"genotype": {"CYP2C8": "*1/*1"}},
            r"`genotype.CYP2C8` is not a known gene \(did you mean 'CYP2C9'\?\); known genes: "
            r"CYP2C9, VKORC1, CYP2D6, CYP2C19, CYP3A5",
        ),
        ({"genotype": {"VKORC1": "G"}}, r"`genotype.VKORC1` diplotype 'G' must be two alleles"),
        ({"genotype": "CYP2C9 *1/*3"}, r"`genotype` input should be a valid dictionary"),
        (
            {"comedications": ["warfarin", "rifampcin"]},
            r"`comedications\[0\]` 'warfarin' is not in the interaction catalogue; known "
            r"comedications: amiodarone, .*\n.*`comedications\[1\]` 'rifampcin' .*did you mean "
            r"'rifampicin'",
        ),
        (
            {"ancestry": "asian"},
            r"`ancestry` 'asian' is not a known ancestry group \(did you mean 'east_asian'\?\); "
            r"known groups: european, east_asian, african",
        ),
        (
            {"crcl": 500},
            r"`crcl` must be between 0 and 400 mL/min, got 500 mL/min; a bare number is mL/min",
        ),
        ({"crcl": "5 L/fortnight"}, r"`crcl` has unknown clearance unit"),
        (
            {"adherence": 90},
            r"`adherence` must be a fraction between 0 and 1, got 90 \(did you mean '90%'\?\)",
        ),
        (
            {"alcohol": "14 pints"},
            r"`alcohol` must be a number in units/wk \(or text with one of units/wk",
        ),
        ({"vitamin_k": -3}, r"`vitamin_k` must be between 0 and 5000 µg/day, got -3 µg/day"),
        (
            {"smoking": "sometimes"},
            r"`smoking.status` input should be 'never', 'current' or 'former', got 'sometimes'",
        ),
        (
            {"smoking": {"status": "never", "quit": "3 d ago"}},
            r"`smoking.quit` -72 h was given for a never-smoker; set status 'former'",
        ),
        (
            {"smoking": {"status": "former", "quit": "in 3 d"}},
            r"`smoking.quit` of a former smoker must be ≤ 0 h \(before the start\), got 72 h",
        ),
        (
            {"smoking": {"status": "current", "quit": "3 d ago"}},
            r"`smoking.quit` of a current smoker must be > 0 h",
        ),
        ({"smoking": {"status": "former", "quit": "3 furlongs"}}, r"`smoking.quit` .*'3 d ago'"),
        (
            {"smoking": {"status": "former", "quit": "-1 d", "quit_date": "2024-01-01"}},
            r"`smoking` give `quit` \(time relative to the start\) or `quit_date`, not both",
        ),
        (
            {"smoking": {"status": "former", "quit_date": "2024-01-01"}},
            r"`smoking.quit_date` \(2024-01-01\) needs `start_date`",
        ),
        (
            {
                "smoking": {"status": "former", "quit_date": "2024-02-01"},
                "start_date": "2024-01-01",
            },
            r"`smoking.quit_date` 2024-02-01 is 744 h after start_date 2024-01-01, but the quit "
            r"time of a former smoker must be ≤ 0 h",
        ),
        (
            {"smoking": {"status": "never", "cigarettes_per_day": 10}},
            r"a never-smoker has no `quit_date` or `cigarettes_per_day`",
        ),
        (
            {"smoking": {"status": "current", "cigarettes_per_day": 400}},
            r"`smoking.cigarettes_per_day` must be between 0 and 200 per day, got 400",
        ),
        ({"dialysis": "sometimes"}, r"`dialysis` input should be a valid boolean"),
        ({"genotyp": {}}, r"`genotyp` is not a known field \(did you mean `genotype`\?\)"),
    ],
)
def test_invalid_patients(fields, message):
    with pytest.raises(SpecError, match=message):
        PatientSpec(**fields)


def test_covariate_table_of_several_patients():
    patients = [
        PatientSpec(id=1, age=40, sex="M", weight=72, scr=1.0, genotype={"VKORC1": "GA"}),
        PatientSpec(id=2, age=80, sex="F", weight=55, scr=0.8, comedications=["fluconazole"]),
    ]
    table = PatientSpec.covariate_table(patients, min_creatinine_over_60=1.0)
    assert table["crcl"].tolist() == pytest.approx([100.0, 60 * 55 / 72 * 0.85])
    assert table["vkorc1"].tolist() == ["G/A", ""]
    assert table["comed_fluconazole"].tolist() == [0.0, 1.0]


def test_patients_in_a_simulation_spec_file(tmp_path):
    text = """
model: pk_1cmt_oral
parameters: {cl: 2.8 L/h, v: 32 L, ka: 1.5 1/h, f_oral: 1}
regimen: 5 mg q24h x 3 d
times: {stop: 3 d, step: 12 h}
start_date: 2024-05-01
patients:
  - id: A
    age: 67 y
    sex: male
    weight: 82 kg
    scr: 1.1
    ancestry: european
    genotype: {CYP2C9: "*2/*1", VKORC1: AG}
    comedications: [amiodarone]
    smoking: {status: former, quit_date: 2024-04-20}
    start_date: 2024-05-01
  - id: B
    sex: F
    smoking: never
"""
    data = yaml.safe_load(text)
    data.pop("start_date")
    spec = SimulationSpec.model_validate(data)
    table = PatientSpec.covariate_table(spec.patients)
    assert table["cyp2c9"].tolist() == ["*1/*2", ""]
    assert table["smoking_quit_time"].tolist() == [-11 * 24.0, math.inf]
    assert table["comed_amiodarone"].tolist() == [1.0, 0.0]
    round_trip = PatientSpec.model_validate_json(spec.patients[0].model_dump_json())
    assert round_trip == spec.patients[0]


def test_json_schema_describes_the_new_fields():
    patient = spec_json_schema()["$defs"]["PatientSpec"]["properties"]
    for name in ("genotype", "comedications", "smoking", "crcl", "dialysis", "adherence"):
        assert name in patient
