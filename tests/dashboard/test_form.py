"""The clinician form ↔ the what-if spec: the spec's messages land by their fields."""

from __future__ import annotations

import numpy as np
import pytest

from twinsim.dashboard._form import (
    FIELDS,
    GENES_SHOWN,
    N_REGIMENS,
    check_form,
    example_form,
    field_for,
    genotype_choices,
    genotype_note,
    spec_form,
)
from twinsim.scenarios import load_whatif, whatif_examples


@pytest.fixture
def form() -> dict:
    return example_form("whatif_vancomycin_renal")


@pytest.mark.parametrize("name", sorted(whatif_examples()))
def test_examples_round_trip_through_the_form(name: str) -> None:
    """The form of an example gives back the example's patient, doses, levels, regimens."""
    expected = load_whatif(whatif_examples()[name])
    check = check_form(example_form(name))
    assert check.ok and not check.errors and not check.general, check
    spec = check.spec
    assert spec.drug == expected.drug
    for column, values in expected.covariates().items():
        np.testing.assert_array_equal(spec.covariates()[column], values, err_msg=column)
    # one row per dose given: the interval to the next dose is not a column (the regimens'
    # start is), and it does not change a dose that is not at steady state
    assert spec.history_doses() == [d.replace(interval=0.0) for d in expected.history_doses()]
    assert spec.observation_records() == expected.observation_records()
    assert spec.candidate_doses() == expected.candidate_doses()
    assert (spec.candidate_start, spec.horizon) == (expected.candidate_start, expected.horizon)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"age": "720"}, "age", "must be between 0 and 120 y, got 720 y"),
        ({"weight": "80 stone"}, "weight", "80 stone"),
        ({"scr": "150"}, "scr", "if this is µmol/L, write '150 µmol/L'"),
        ({"sex": "x"}, "sex", "must be 'female' or 'male'"),
        ({"gene_CYP2C9": "*1/*99"}, "gene_CYP2C9", "'*99' in diplotype '*1/*99' is not a known"),
        ({"gene_VKORC1": "GX"}, "gene_VKORC1", "known alleles: G, A"),
        ({"comedications": ["aspirin-ish"]}, "comedications", "not in the interaction catalogue"),
        ({"smoking": "former", "quit": "soon"}, "quit", "could not read 'soon' as a time"),
        ({"adherence": "150%"}, "adherence", "fraction between 0 and 1"),
        ({"ancestry": "martian"}, "ancestry", "not a known ancestry group"),
        ({"horizon": "200 d"}, "horizon", "must be between 0 and 90 d"),
        ({"start": "20"}, "start", "before the last dose of the history (36 h)"),
        ({"drug": "vancomycn"}, "drug", "did you mean 'vancomycin'"),
    ],
)
def test_each_bad_field_gets_the_spec_message(form, changes, field, message) -> None:
    check = check_form({**form, **changes})
    assert not check.ok
    assert field in check.errors, (check.errors, check.general)
    assert message in check.errors[field]
    assert not check.general


def test_missing_covariates_land_on_the_genotype_fields(form) -> None:
    """Warfarin needs CYP2C9 and VKORC1: the message is shown by both fields."""
    check = check_form({**form, "drug": "warfarin", "levels": [], "regimens": ["5 mg q24h"]})
    assert "is needed by the warfarin model (covariate `cyp2c9`" in check.errors["gene_CYP2C9"]
    assert "covariate `vkorc1`" in check.errors["gene_VKORC1"]


def test_table_rows_keep_the_row_shown(form) -> None:
    """Blank rows are skipped, yet a message names the row as the user sees it."""
    levels = [form["levels"][0], {"time": None, "value": ""}, {"time": -2, "value": "abc"}]
    history = [*form["history"], {"time": 40, "amount": -5}]
    check = check_form({**form, "levels": levels, "history": history})
    assert check.level_errors[(2, "time")].startswith("must be ≥ 0 h, got -2 h")
    assert "could not read 'abc' as a concentration" in check.level_errors[(2, "value")]
    assert (4, "amount") in check.history_errors
    late = check_form({**form, "levels": [{"time": 60, "value": "20"}]})
    assert "after the candidate regimens start (48 h)" in late.level_errors[(0, "time")]


def test_a_bad_regimen_does_not_hide_the_others(form) -> None:
    regimens = ["1000 mg over 1 h q12h", "zzz", "", "750 mg over 1 h q12h"]
    check = check_form({**form, "regimens": regimens})
    assert check.ok  # the two good regimens are still forecast
    assert [c.label for c in check.spec.candidates] == [regimens[0], regimens[3]]
    assert "could not read the regimen 'zzz'" in check.errors["regimen_1"]
    none = check_form({**form, "regimens": [""] * N_REGIMENS})
    assert not none.ok and "give at least one regimen" in none.errors["regimen_0"]
    twice = check_form({**form, "regimens": ["1 g q12h", "1 g q12h", "", ""]})
    assert not twice.ok and "twice" in " ".join(twice.general)


def test_per_kg_regimen_needs_the_weight(form) -> None:
    check = check_form({**form, "weight": "", "regimens": ["15 mg/kg over 1 h q12h", "", "", ""]})
    assert "is required because a regimen doses per kg" in check.errors["weight"]


def test_every_spec_path_maps_to_its_field() -> None:
    for key, path in FIELDS.items():
        if not key.startswith("regimen_"):  # regimens map through their slots
            assert field_for(path) == key
    assert field_for("patient.smoking") == "smoking"
    assert field_for("patient.genotype") == "gene_CYP2C9"
    assert field_for("title") is None


def test_genotype_note_names_the_phenotype() -> None:
    assert genotype_note("VKORC1", "AA") == "A/A: highly increased warfarin sensitivity"
    assert genotype_note("CYP2C19", "*17/*17") == "*17/*17: ultrarapid metabolizer"
    assert genotype_note("CYP2C9", "*1/*99") == ""
    assert genotype_note("CYP2C9", "  ") == "not given"
    assert genotype_note("CYP2C9", "N/A").startswith("not tested: averaged over the genotypes")


def test_the_form_offers_and_submits_not_tested(form, find_component) -> None:
    """Each genotype field offers "not tested" (first in its datalist); the form submits it
    to the spec as "not tested" (any spelling), it round-trips through the form, and a
    warfarin patient without ancestry gets the spec's message on the ancestry field."""
    from twinsim.dashboard._clinician import layout

    for gene in ("CYP2C9", "VKORC1", "CYP2D6"):
        choices = genotype_choices(gene)
        assert choices[0] == "not tested" and len(set(choices)) == len(choices) > 2
    page = layout()
    for gene in GENES_SHOWN:
        field = find_component(page, f"cl-gene_{gene}")
        offered = find_component(page, field.list)
        assert [o.value for o in offered.children] == list(genotype_choices(gene))
    warfarin = {
        **form, "drug": "warfarin", "history": [], "levels": [], "start": "",
        "regimens": ["5 mg q24h", "", "", ""],
        "gene_CYP2C9": "not tested", "gene_VKORC1": "GA", "ancestry": "east_asian",
    }  # fmt: skip
    check = check_form(warfarin)
    assert check.ok, (check.errors, check.general)
    assert check.data["patient"]["genotype"] == {"CYP2C9": "not tested", "VKORC1": "GA"}
    assert check.spec.patient.genotype == {"CYP2C9": "not tested", "VKORC1": "G/A"}
    assert str(check.spec.covariates()["cyp2c9"][0]) == "not tested"
    again = spec_form(check.spec)
    assert again["gene_CYP2C9"] == "not tested" and again["ancestry"] == "east_asian"
    unknown = check_form({**warfarin, "gene_CYP2C9": "Unknown"})
    assert unknown.ok and unknown.spec.patient.genotype["CYP2C9"] == "not tested"
    missing = check_form({**warfarin, "ancestry": ""})
    assert not missing.ok and not missing.general
    assert missing.errors["ancestry"].startswith("is needed because CYP2C9 is not tested")
    assert "'european', 'east_asian', 'african'" in missing.errors["ancestry"]


def test_docstring_examples_run() -> None:
    import doctest

    from twinsim.dashboard import _clinician, _form

    for module in (
        _form,
        _clinician,
    ):
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
        assert result.failed == 0 and result.attempted > 0, module.__name__
