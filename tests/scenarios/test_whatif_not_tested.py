"""A genotype "not tested" from a what-if spec to the patient twin (issue 13, item 6).

The spec (:class:`~twinsim.scenarios.PatientSpec`) reads the same spellings as the twin
(:func:`twinsim.priors.is_not_tested`: one check, in the priors) and stores them as
``"not tested"``; a what-if whose drug model uses that gene then needs the patient's
``ancestry`` (the twin averages over that ancestry's Hardy–Weinberg genotype
frequencies), and says so naming ``patient.ancestry`` and the accepted groups. End to
end, the warfarin what-if with CYP2C9 not tested and no INR yet runs, its genotype
weights are the Hardy–Weinberg frequencies of the CYP2C9 genotype groups (the twin's own
``genotype_groups`` priors: no levels, so posterior = prior, to 1e-12), and the HTML report
and the ``twinsim whatif`` output carry the twin's note.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from twinsim.cli import app
from twinsim.priors import NOT_TESTED, covariate_table, is_not_tested, parse_genotype
from twinsim.scenarios import PatientSpec, SpecError, run_whatif, write_whatif_report
from twinsim.scenarios._whatif import FitOptions, WhatIfSpec
from twinsim.twin import PatientTwin
from twinsim.twin._genotype import is_not_tested as twin_is_not_tested

SPELLINGS = ["not tested", "Not Tested", "untested", "unknown", "not-known", "N/A", "NA",
             "none", "", None]  # fmt: skip

WARFARIN = {
    "title": "Warfarin initiation, CYP2C9 not tested",
    "drug": "warfarin",
    "patient": {
        "id": "W-NT",
        "age": "70 y",
        "sex": "female",
        "weight": "68 kg",
        "ancestry": "european",
        "genotype": {"CYP2C9": "not tested", "VKORC1": "G/A"},
    },
    "candidates": ["5 mg q24h"],
    "horizon": "3 d",
    "recommend": False,
}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_patient_spec_reads_the_twins_spellings_as_not_tested(spelling) -> None:
    """Every spelling the twin accepts is stored as "not tested" and reaches the covariate
    row as such; the twin's check is the priors' one (re-exported)."""
    assert twin_is_not_tested is is_not_tested and is_not_tested(spelling)
    patient = PatientSpec(genotype={"cyp2c9": spelling, "VKORC1": "AG"}, ancestry="European")
    assert patient.genotype == {"CYP2C9": NOT_TESTED, "VKORC1": "G/A"}
    row = patient.covariates()
    assert str(row["cyp2c9"][0]) == "not tested" and str(row["vkorc1"][0]) == "G/A"
    assert str(row["ancestry"][0]) == "european"


def test_covariate_table_keeps_not_given_apart_from_not_tested() -> None:
    """In a covariate table, a "not tested" spelling becomes "not tested"; a gene left
    out, ``None``, ``""`` or NaN stays not given (``""``), which a what-if reports as
    missing."""
    table = covariate_table(
        [{"genotype": {"CYP2C9": "Unknown"}}, {"cyp2c9": None}, {"cyp2c9": float("nan")}, {}]
    )
    assert table["cyp2c9"].tolist() == ["not tested", "", "", ""]
    assert parse_genotype("cyp2c9", "*3/*1") == "*1/*3"
    with pytest.raises(
        ValueError, match=r"'\*99'.*if CYP2C9 was not genotyped, write 'not tested'"
    ):
        parse_genotype("CYP2C9", "*1/*99")
    with pytest.raises(SpecError, match=r"`genotype\.CYP2C9` .*write 'not tested'"):
        PatientSpec(genotype={"CYP2C9": "*1/*99"})


def test_untested_gene_of_the_drug_needs_the_ancestry() -> None:
    """Warfarin with CYP2C9 not tested and no ancestry: one problem, at
    ``patient.ancestry``, naming the gene, the accepted groups and the fix; with a gene
    the drug's model does not use (vancomycin) no ancestry is needed."""
    data = {**WARFARIN, "patient": {**WARFARIN["patient"]}}
    del data["patient"]["ancestry"]
    with pytest.raises(SpecError) as info:
        WhatIfSpec.model_validate(data)
    (problem,) = info.value.problems
    assert re.fullmatch(
        r"`patient\.ancestry` is needed because CYP2C9 is not tested: .*ancestry group; give one "
        r"of 'european', 'east_asian', 'african' \(e\.g\. ancestry: european\), or the "
        r"genotype itself",
        problem,
    ), problem
    vancomycin = WhatIfSpec(
        drug="vancomycin",
        patient={"age": 70, "sex": "M", "weight": 80, "scr": 1.2, "genotype": {"CYP2C9": "NA"}},
        candidates=["1 g over 1 h q12h"],
    )
    assert vancomycin.patient.genotype == {"CYP2C9": "not tested"}
    # a gene left out is still "not given": the message offers "not tested"
    data = {**WARFARIN, "patient": {**WARFARIN["patient"], "genotype": {"VKORC1": "G/A"}}}
    with pytest.raises(SpecError, match=r"`patient\.genotype\.CYP2C9` is needed .*not tested"):
        WhatIfSpec.model_validate(data)


@pytest.mark.isolated  # the warfarin ODE forecast compiles (as the twin's warfarin test)
def test_warfarin_whatif_with_cyp2c9_not_tested_runs_and_says_so(tmp_path) -> None:
    """End to end from Python and from ``twinsim whatif``: the forecast averages over the
    CYP2C9 genotype groups with their Hardy–Weinberg weights (no INR: posterior = prior),
    the twin's note is in the result, the HTML report (with the weights table) and the
    command's output (and the clinician page's recommendation card)."""
    spec = WhatIfSpec.model_validate(WARFARIN)
    spec = spec.model_copy(update={"fit": FitOptions(method="map", n_draws=60)})
    result = run_whatif(spec)
    (note,) = result.notes
    assert note.startswith("CYP2C9 not tested: the prediction averages over the genotypes of "
                           "European ancestry")  # fmt: skip
    rows = result.fit["genotypes"]
    twin = PatientTwin.create("warfarin", spec.covariates())
    expected = {g.label: g.prior for g in twin.genotype_groups}
    assert {r["genotype"]: r["posterior"] for r in rows} == pytest.approx(expected, abs=1e-12)
    assert sum(r["prior"] for r in rows) == pytest.approx(1.0, abs=1e-12)
    assert set(result.fit["parameters"]) and all(
        np.isfinite(p["typical"]) for p in result.fit["parameters"].values()
    )
    forecast = result.forecasts[0]
    assert 0.0 <= forecast.pta <= 1.0 and np.all(np.isfinite(forecast.bands["inr"]))
    html = write_whatif_report(result, tmp_path / "r.html")["report"].read_text()
    assert 'id="twin-note-0"' in html and "CYP2C9 not tested" in html
    assert 'id="genotypes"' in html and "CYP2C9 *1/*1" in html
    # the clinician page's recommendation card shows it too
    from twinsim.dashboard._clinician import _recommendation

    (alert,) = [c for c in _recommendation(result) if getattr(c, "id", None) == "cl-twin-notes"]
    assert [div.children for div in alert.children] == [note]

    spec_file = tmp_path / "warfarin.yaml"
    spec_file.write_text(yaml.safe_dump({**WARFARIN, "fit": {"method": "map", "n_draws": 60}}))
    out = runner.invoke(app, ["whatif", str(spec_file), "--out", str(tmp_path / "cli.html")])
    assert out.exit_code == 0, out.output
    assert "assumption: CYP2C9 not tested" in " ".join(out.stdout.split())


runner = CliRunner()
