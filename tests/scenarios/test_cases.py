"""Teaching cases (issue 16): keys by re-simulation, narrative numbers, errors, exports.

Kept small: two templates (theophylline after smoking cessation; amiodarone added to
warfarin, the drug–drug interaction), one or two cases each, generated once per module.
"""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
import yaml

from twinsim.priors import cockcroft_gault, drug_model
from twinsim.priors._vancomycin import VANCOMYCIN_CRCL_OPTIONS
from twinsim.priors._warfarin import AMIODARONE_CL_FACTOR
from twinsim.scenarios import CaseError, CaseSpec, SpecError, generate_cases, write_case_set
from twinsim.scenarios._cases import (
    AMIODARONE_CL_REDUCTION,
    builtin_templates,
    changing_clearance_model,
    draw_patients,
    fhir_bundle,
    inhibitor_clearance_ratio,
    load_case_spec,
    load_template,
    set_summary,
    simulate_rows,
)
from twinsim.scenarios._cases._course import clearance_factor
from twinsim.scenarios._cases._generate import _labs, _metric, _Row, _time_grid

SETS = {"theophylline_smoking_cessation": 2, "warfarin_amiodarone": 1}


@pytest.fixture(scope="module")
def case_sets():
    return {
        name: generate_cases(CaseSpec(template=name, n_cases=n, seed=11))
        for name, n in SETS.items()
    }


def _rows_from_json(case, template):
    """The twin's variants rebuilt from the case's JSON alone (covariates, eta, doses)."""
    covariates = {k: (math.inf if v is None else v) for k, v in case["model"]["covariates"].items()}
    doses = tuple((d["time_h"], d["amount_mg"]) for d in case["regimen"]["doses"])
    return covariates, doses, np.asarray(case["model"]["eta"])


def _level(template, eta, rows):
    pm = drug_model(template.drug)
    k = pm.structural.output_names.index(template.monitoring.output)
    return simulate_rows(template, eta, rows, _time_grid(template))[:, :, k]


@pytest.mark.parametrize("name", list(SETS))
def test_each_key_is_the_only_option_meeting_its_criterion(case_sets, name):
    """Re-simulating every option of every question (from the case's JSON) confirms that
    the keyed answer meets the stated criterion and that each distractor does not."""
    case_set = case_sets[name]
    template = case_set.template
    q = template.questions
    times = _time_grid(template)
    for case in case_set.cases:
        covariates, doses, eta = _rows_from_json(case, template)
        choose, interpret, predict, explain = case["questions"]
        assert [x["kind"] for x in case["questions"]] == [
            "choose_dose",
            "interpret_level",
            "predict_next",
            "explain_change",
        ]
        for question in case["questions"]:
            assert sum(o["correct"] for o in question["options"]) == 1
        # every variant in one batch: the dose options (switching at the decision time),
        # the course as given, and the course without each explanation
        rows = [
            _Row(
                covariates, tuple((t, o["value"] if t >= q.decision_time else a) for t, a in doses)
            )
            for o in choose["options"]
        ]
        rows.append(_Row(covariates, doses))
        for factor in q.factors:
            if factor.remove_event:
                changed = dict(covariates)
                if template.event.kind == "smoking_cessation":
                    changed["smoking_quit_time"] = math.inf
                rows.append(_Row(changed, doses, event=False))
            else:
                rows.append(_Row({**covariates, factor.covariate: factor.value}, doses))
        level = _level(template, eta, rows)
        n_options = len(choose["options"])
        metrics = [_metric(template, times, level[j]) for j in range(n_options)]
        if "within" in choose["criterion"]:
            low, high = (
                float(x) for x in re.findall(r"within ([\d.]+)–([\d.]+)", choose["criterion"])[0]
            )
            for option, metric in zip(choose["options"], metrics, strict=True):
                assert (low <= metric <= high) == option["correct"], (option, metric)
        else:  # "closest to the middle of the target" criterion
            mid = float(re.findall(r"closest to ([\d.]+)", choose["criterion"])[0])
            best = int(np.argmin([abs(m - mid) for m in metrics]))
            assert choose["options"][best]["correct"]
        # interpret a level and predict what happens next, on the course as given
        course = level[n_options]
        value = course[np.argmin(np.abs(times - q.interpret_time))]
        lo, hi = q.interpret_range
        category = (
            "below" if round(value, 1) < lo else "above" if round(value, 1) > hi else "within"
        )
        assert next(o for o in interpret["options"] if o["correct"])["value"] == category
        later = course[np.argmin(np.abs(times - q.predict_time))]
        for option in predict["options"]:
            lo_b = -math.inf if option["value"][0] is None else option["value"][0]
            hi_b = math.inf if option["value"][1] is None else option["value"][1]
            assert (lo_b <= later < hi_b) == option["correct"]

        # explain: without the keyed factor at least half (or the largest share) of the
        # change disappears; without a distractor, less
        def change(values, times=times, q=q):
            return (
                values[np.argmin(np.abs(times - q.explain_to))]
                - values[np.argmin(np.abs(times - q.explain_from))]
            )

        base = change(course)
        shares = {
            factor.label: 1 - change(level[n_options + 1 + j]) / base
            for j, factor in enumerate(q.factors)
        }
        key = next(o for o in explain["options"] if o["correct"])["label"]
        for option in explain["options"]:
            if option["correct"]:
                continue
            assert shares[option["label"]] < shares[key]
            if shares[key] >= 0.5:
                assert shares[option["label"]] < 0.5


def test_interaction_drives_the_change_in_the_ddi_case(case_sets):
    """Amiodarone is the keyed explanation of the INR rise. The library's warfarin model
    carries an ``amiodarone`` covariate (S-warfarin CL × the IWPC 2009 dose ratio), so the
    event uses the model's own factor, and the event record names that source."""
    case = case_sets["warfarin_amiodarone"].cases[0]
    event = case["event"]
    assert event["clearance_ratio"] == pytest.approx(AMIODARONE_CL_FACTOR, abs=5e-4)  # 3 digits
    assert event["source"] == "model covariate `amiodarone` of 'warfarin'"
    explain = case["questions"][3]
    assert "rose" in explain["stem"]
    assert next(o for o in explain["options"] if o["correct"])["label"].startswith("Amiodarone")


def test_inhibitor_factor_uses_the_literature_table_and_refuses_unknown_drugs():
    """The model's covariate when it has one; otherwise the nearest tabulated maintenance
    dose (Sanoski & Bauman 2002: −30 % at 200–300 mg/day, −40 % at 400 mg/day); an
    inhibitor neither the model nor the table knows is an error, not a silent 1."""
    warfarin = drug_model("warfarin")
    cov = {"age": 70.0, "cyp2c9": "*1/*1", "vkorc1": "G/G"}
    ratio, source = inhibitor_clearance_ratio(warfarin, cov, "amiodarone", 250.0)
    assert ratio == pytest.approx(AMIODARONE_CL_FACTOR, rel=1e-12) and "covariate" in source
    no_covariate = drug_model("theophylline")
    assert inhibitor_clearance_ratio(no_covariate, {}, "amiodarone", 240.0)[0] == pytest.approx(
        1 - AMIODARONE_CL_REDUCTION[200.0]
    )
    ratio, source = inhibitor_clearance_ratio(no_covariate, {}, "amiodarone", 400.0)
    assert ratio == pytest.approx(0.60) and source.startswith("Sanoski")
    with pytest.raises(ValueError, match=r"fluconazole.*no covariate"):
        inhibitor_clearance_ratio(warfarin, cov, "fluconazole", 200.0)


def test_changing_clearance_follows_the_model_covariate():
    """Vancomycin CL (Goti 2018, CL ∝ CrCL^0.8) under a log-linear CrCL course equals the
    wrapper's clearance factor at every time (closed form; rtol 1e-12)."""
    pm = drug_model("vancomycin")
    i_cl = pm.structural.parameter_index("cl")
    crcl0, ratio, t0, half = 100.0, 0.4, 36.0, 12.0

    def cl(c):
        return float(
            pm.typical_parameters({"weight": [80.0], "crcl": [c], "dialysis": [0.0]})[0, i_cl]
        )

    cl_ratio = cl(crcl0 * ratio) / cl(crcl0)
    for t in (0.0, 36.0, 40.0, 60.0, 200.0):
        crcl_t = crcl0 * float(clearance_factor(t, t0, half, ratio))
        assert cl(crcl_t) / cl(crcl0) == pytest.approx(
            float(clearance_factor(t, t0, half, cl_ratio)), rel=1e-12
        )
    wrapped = changing_clearance_model(pm.structural)
    assert changing_clearance_model(pm.structural) is wrapped  # one compile per drug


def test_renal_labs_are_cockcroft_gault_consistent():
    """Creatinine during acute kidney injury is Cockcroft–Gault inverted: the formula gives
    back each time's creatinine clearance (rtol 1e-9)."""
    template = load_template("vancomycin_aki")
    row = {"age": 67.0, "weight": 82.0, "female": 1.0, "height": 165.0}
    row["serum_creatinine"] = 1.1
    row["crcl"] = float(cockcroft_gault(67.0, 82.0, 1.1, 1.0, **VANCOMYCIN_CRCL_OPTIONS))
    eta = np.zeros(len(drug_model("vancomycin").random_effects))
    labs = _labs(template, row, None, eta, 1000.0)
    late = [lab for lab in labs if lab["time_h"] > 0]
    assert late and all(lab["loinc"] == "2160-0" for lab in late)
    for lab in late:
        crcl = float(cockcroft_gault(67.0, 82.0, lab["value"], 1.0))
        assert crcl == pytest.approx(lab["crcl_ml_min"], rel=5e-3)  # creatinine shown to 0.01
        assert lab["value"] > row["serum_creatinine"]


def test_every_number_in_the_narrative_equals_its_data(case_sets):
    """Each number in the vignette is one of the case's facts, and each fact is formatted
    from the case data it names."""
    for case_set in case_sets.values():
        for case in case_set.cases:
            facts, p = case["facts"], case["patient"]
            baseline = {lab["name"]: lab["value"] for lab in case["labs"] if lab["time_h"] == 0}
            assert facts["age"] == str(p["age_y"])
            assert facts["weight"] == f"{p['weight_kg']:.0f}"
            assert facts["height"] == str(p["height_cm"])
            assert (
                float(facts["creatinine"])
                == baseline["Creatinine [Mass/volume] in Serum or Plasma"]
            )
            assert (
                float(facts["crcl"]) == baseline["Creatinine clearance, Cockcroft–Gault estimate"]
            )
            assert float(facts["dose"]) == case["regimen"]["dose_mg"]
            for m in case["monitoring"]["values"]:
                assert f"{m['value']:.1f}" in facts["levels"]
            allowed = set()
            for value in facts.values():
                allowed |= set(re.findall(r"\d+(?:\.\d+)?", value))
            for number in re.findall(r"\d+(?:\.\d+)?", case["narrative"]):
                assert number in allowed, number


def test_exports_are_byte_identical_and_students_get_no_key(case_sets, tmp_path):
    """Same spec and seed → the same bytes in every file; the student files carry no key."""
    spec = CaseSpec(template="theophylline_smoking_cessation", n_cases=2, seed=11)
    first = write_case_set(case_sets["theophylline_smoking_cessation"], tmp_path / "a")
    write_case_set(generate_cases(spec), tmp_path / "b")
    for path in first:
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert path.read_bytes() == twin.read_bytes(), path.name
    folder = first[0].parent
    student = json.loads((folder / "student.json").read_text())
    assert "correct" not in json.dumps(student) and "explanation" not in json.dumps(student)
    assert "Answer:" not in (folder / "student.md").read_text()
    assert "Answer:" in (folder / "instructor.md").read_text()
    page = (folder / "instructor.html").read_text()
    assert "Plotly.newPlot" in page and "<script" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js inlined, nothing fetched


def test_fhir_bundle_validates_with_codes_and_doses(case_sets):
    """The bundle validates as FHIR R4(B) (fhir.resources) and holds LOINC-coded labs and
    levels, dose quantities in mg and a SNOMED-coded condition."""
    from fhir.resources.R4B.bundle import Bundle

    case = case_sets["warfarin_amiodarone"].cases[0]
    data = fhir_bundle(case)
    bundle = Bundle.model_validate(data)
    kinds = [e.resource.__resource_type__ for e in bundle.entry]
    for kind in (
        "Patient",
        "Condition",
        "Observation",
        "MedicationRequest",
        "MedicationAdministration",
    ):
        assert kind in kinds
    resources = [e["resource"] for e in data["entry"]]
    loinc = {
        c["code"]
        for r in resources
        if r["resourceType"] == "Observation"
        for c in r["code"].get("coding", [])
    }
    assert {"6301-6", "2160-0", "29463-7"} <= loinc
    doses = [
        r["dosage"]["dose"] for r in resources if r["resourceType"] == "MedicationAdministration"
    ]
    assert doses and all(d["unit"] == "mg" and d["value"] > 0 for d in doses)
    assert any(
        r["resourceType"] == "MedicationRequest"
        and r["medicationCodeableConcept"]["text"] == "amiodarone"
        for r in resources
    )


def test_set_mix_matches_the_request_within_sampling_error():
    """Sex, genotype and age of 300 drawn patients against the request: |z| < 4 for every
    share (two-sided chance ≈ 6e-5 each, < 0.1 % for the ~15 comparisons together);
    ancestry groups get exact quotas."""
    spec = CaseSpec(
        template="warfarin_pgx_initiation", n_cases=300, seed=4, population={"female_fraction": 0.3}
    )
    table = draw_patients(spec)
    summary = set_summary(table, spec)
    assert summary["n"] == 300
    for share in summary["ancestry"].values():
        assert abs(share["obtained"] - share["requested"]) < 1 / 300 + 1e-9
    assert abs(summary["sex"]["female"]["z"]) < 4
    assert abs(summary["age"]["z"]) < 4
    cyp2c9 = summary["genotype"]["CYP2C9"]
    assert "*1/*1" not in cyp2c9  # only carriers were requested
    for share in [*cyp2c9.values(), *summary["genotype"]["VKORC1"].values()]:
        assert abs(share["z"]) < 4, share


def test_impossible_request_is_refused_not_substituted():
    """*2/*2 in East Asian ancestry (allele frequency 0.001 → 1e-6) is refused, naming the
    frequency; nothing else is drawn instead."""
    spec = CaseSpec(
        template="warfarin_pgx_initiation",
        n_cases=2,
        population={"ancestry": {"east_asian": 1}, "genotype": {"CYP2C9": ["*2/*2"]}},
    )
    with pytest.raises(
        CaseError, match=r"CYP2C9.*\*2/\*2.*cannot be met in ancestry 'east_asian'.*frequency"
    ):
        draw_patients(spec)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            {"template": "warfarin_pgx_initiation", "n_cases": 0},
            r"`n_cases`.*greater than or equal to 1",
        ),
        ({"template": "no_such_case"}, r"`template` 'no_such_case' is neither a built-in"),
        (
            {"template": "vancomycin_aki", "n_case": 2},
            r"`n_case` is not a known field \(did you mean `n_cases`\?\)",
        ),
        (
            {"template": "vancomycin_aki", "population": {"ancestry": {"martian": 1}}},
            r"`population.ancestry`.*'martian' is not known",
        ),
        (
            {"template": "vancomycin_aki", "drug": "warfarin"},
            r"`drug` is 'warfarin' but template 'vancomycin_aki' is about 'vancomycin'",
        ),
        (
            {
                "template": "warfarin_pgx_initiation",
                "population": {"genotype": {"CYP2C9": ["*1/*99"]}},
            },
            r"`population.genotype`.*\*99",
        ),
        (
            {"template": "warfarin_pgx_initiation", "population": {"age_range": [80, 40]}},
            r"`population.age_range`.*lowest < highest",
        ),
    ],
)
def test_malformed_specs_name_the_field(data, match):
    with pytest.raises(SpecError, match=match):
        CaseSpec.model_validate(data)


def test_user_template_file_works_without_code_changes(tmp_path, case_sets):
    """A copy of a built-in template, edited, named by path from a spec file: generated
    like a built-in one; a broken copy names its bad field."""
    data = yaml.safe_load(builtin_templates()["theophylline_smoking_cessation"].read_text())
    data["name"] = "my_theophylline"
    data["title"] = "Theophylline in a smoker who is admitted"
    data["history"] = ["asthma since childhood"]
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    (tmp_path / "spec.yaml").write_text("template: mine.yaml\nn_cases: 1\nseed: 3\n")
    case = generate_cases(load_case_spec(tmp_path / "spec.yaml")).cases[0]
    assert case["title"] == "Theophylline in a smoker who is admitted"
    assert "asthma since childhood" in case["narrative"]
    data["questions"]["predict_time"] = "40 d"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(CaseError, match=r"`questions.predict_time` is 960 h, after `horizon`"):
        load_case_spec(tmp_path / "spec.yaml")


def test_cli_writes_the_set_and_reports_bad_specs(tmp_path, case_sets):
    from typer.testing import CliRunner

    from twinsim.cli import app

    spec = tmp_path / "set.yaml"
    spec.write_text("template: theophylline_smoking_cessation\nn_cases: 1\nseed: 11\n")
    result = CliRunner().invoke(app, ["cases", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "wrote 1 cases" in result.output
    assert (tmp_path / "out" / "summary.md").is_file()
    assert len(list((tmp_path / "out").glob("*/fhir.json"))) == 1
    spec.write_text("template: theophylline_smoking_cessation\nn_cases: -1\n")
    result = CliRunner().invoke(app, ["cases", str(spec), "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "`n_cases`" in result.output
    shutil.rmtree(tmp_path / "out")
