"""A trained latent model folder where the workflows take a model: the what-if (``model:``
in the file, ``twinsim whatif --model``) and cohort simulation (``model: MODEL_DIR`` in a
spec, subjects from patients or a virtual population).

The model is the untrained tiny one of ``tests/conftest.py`` (the workflow, not the
training, is under test). Spec checks compile nothing; the tests that solve ODEs are
marked ``isolated``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from twinsim.cli import app as cli
from twinsim.scenarios import (
    SimulationSpec,
    SpecError,
    WhatIfSpec,
    load_spec,
    load_whatif,
    run_simulation,
    trained_model,
    whatif_examples,
)
from twinsim.scenarios._whatif import fit_key

PATIENT = {
    "id": "V-07", "age": 60, "sex": "female", "weight": 80, "crcl": 60,
    "ancestry": "european", "genotype": {"CYP3A5": "*3/*3"},
}  # fmt: skip


def _whatif(model: Path | str | None, **changes) -> dict:
    data = {
        "drug": "vancomycin",
        "patient": PATIENT,
        "history": "1 g over 1 h q12h x 2 doses",
        "observations": [{"time": 11.5, "value": 9.0}, {"time": 13.0, "value": 28.0}],
        "candidates": ["1 g over 1 h q12h"],
        "horizon": "1 d",
        "fit": {"method": "map", "n_draws": 20},
        "recommend": False,
    }
    if model is not None:
        data["model"] = str(model)
    return {**data, **changes}


# ---------------------------------------------------------------------------- what-if spec
def test_whatif_spec_takes_a_model_folder(latent_model_dir: Path) -> None:
    spec = WhatIfSpec.model_validate(_whatif(latent_model_dir))
    trained = spec.trained_model()
    assert trained is trained_model(latent_model_dir)  # one model per folder: shared engines
    assert spec.twin_model() is trained.model
    assert spec.population_model().name == "vancomycin_latent"
    text = spec.model_text()
    assert text.startswith("trained latent model vanco-latent (prior vancomycin")
    assert trained.params_sha256[:12] in text
    published = WhatIfSpec.model_validate(_whatif(None))
    assert published.model_text().startswith("published vancomycin model: Goti")
    assert fit_key(spec) != fit_key(published)  # never a published fit for a trained model


def test_whatif_model_must_match_the_drug(latent_model_dir: Path) -> None:
    """A model trained over vancomycin cannot answer a warfarin what-if: the message names
    the model's prior and the spec's drug."""
    data = _whatif(latent_model_dir, drug="warfarin")
    with pytest.raises(
        SpecError, match=r"`model`.*prior is 'vancomycin', but `drug` is 'warfarin'"
    ):
        WhatIfSpec.model_validate(data)


def test_whatif_model_errors_name_the_field(tmp_path: Path, latent_model_dir: Path) -> None:
    with pytest.raises(SpecError, match=r"`model`.*is not a trained model folder.*twinsim train"):
        WhatIfSpec.model_validate(_whatif(tmp_path))
    # the trained model reads CYP3A5 (the published model does not): the field is named
    patient = {k: v for k, v in PATIENT.items() if k != "genotype"}
    with pytest.raises(SpecError, match=r"`patient.genotype.CYP3A5`.*trained model 'vanco-latent'"):
        WhatIfSpec.model_validate(_whatif(latent_model_dir, patient=patient))
    WhatIfSpec.model_validate(_whatif(None, patient=patient))  # fine without the model


def test_whatif_file_model_is_relative_to_the_file(tmp_path: Path, latent_model_dir: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    (folder / "models").symlink_to(latent_model_dir.parent)
    path = folder / "whatif.yaml"
    path.write_text(yaml.safe_dump(_whatif("models/vanco-latent")), encoding="utf-8")
    spec = load_whatif(path)
    assert spec.trained_model().folder == (folder / "models" / "vanco-latent").absolute()
    # --model replaces the file's choice
    example = whatif_examples()["whatif_vancomycin_renal"]
    with pytest.raises(SpecError, match=r"patient.genotype.CYP3A5"):
        load_whatif(example, model=latent_model_dir)  # the example gives no CYP3A5


def test_cli_whatif_model_of_another_drug_exits_2(tmp_path: Path, latent_model_dir: Path) -> None:
    spec = tmp_path / "warfarin.yaml"
    spec.write_text(whatif_examples()["whatif_warfarin_cyp2c9_vkorc1"].read_text())
    result = CliRunner().invoke(cli, ["whatif", str(spec), "--model", str(latent_model_dir)])
    assert result.exit_code == 2
    assert "prior is 'vancomycin', but `drug` is 'warfarin'" in result.output


@pytest.mark.isolated  # ODE engine compilation (~60-90 s)
def test_cli_whatif_runs_on_the_trained_model(tmp_path: Path, latent_model_dir: Path) -> None:
    """``twinsim whatif --model``: the model line, the report and the provenance name the
    folder, its prior and its hashes; the regimen table is finite. (That the untrained
    latent twin's posterior and forecasts are the published twin's is
    tests/twin/test_latent_twin.py's exact check.)"""
    spec = tmp_path / "whatif.yaml"
    spec.write_text(yaml.safe_dump(_whatif(None)), encoding="utf-8")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        cli,
        ["whatif", str(spec), "--model", str(latent_model_dir), "--out", str(out), "-q",
         "--table", str(tmp_path / "table.csv")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "model: trained latent model vanco-latent (prior vancomycin" in result.output
    record = json.loads(Path(f"{out}.provenance.json").read_text())
    trained = trained_model(latent_model_dir)
    assert record["trained_model"]["folder"] == str(trained.folder)
    assert record["trained_model"]["params_sha256"] == trained.params_sha256
    assert record["trained_model"]["model_json_sha256"] == trained.model_json_sha256
    assert record["model"]["name"] == "vancomycin_latent"
    html = out.read_text()
    assert 'id="model">Model: trained latent model vanco-latent' in html
    # the fit table names the mechanistic parameters, not the latent variables
    assert "<tr><td>cl</td>" in html and "<tr><td>latent_0</td>" not in html
    table = (tmp_path / "table.csv").read_text() if (tmp_path / "table.csv").exists() else ""
    assert "nan" not in table.lower()


# ---------------------------------------------------------------------------- cohort spec
COHORT = {
    "n_subjects": 5,
    "seed": 11,
    "regimen": "1 g over 1 h q12h x 1 d",
    "times": [2.0, 11.5, 13.0, 24.0],
}


def test_cohort_spec_takes_a_model_folder(latent_model_dir: Path) -> None:
    spec = SimulationSpec.model_validate({"model": str(latent_model_dir), **COHORT})
    assert spec.parameters == {} and spec.population_model().name == "vancomycin_latent"
    assert spec.model_definition() is spec.population_model().structural


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"parameters": {"cl": 4}}, r"`parameters` come from the trained model 'vanco-latent'"),
        ({"variability": {"cl": "30%"}}, r"`variability` comes from the trained model"),
        ({"pd": [{"emax": {"driver": "conc"}}]}, r"`pd` cannot add building blocks"),
        (
            {"patients": [{"id": "A", "weight": 70, "crcl": 60}]},
            r"`patients\[0\].genotype.CYP3A5` is needed by the trained model 'vanco-latent'",
        ),
        (
            {"patients": [{"id": "A"}], "population": {}},
            r"`population` and `patients` both say who is simulated",
        ),
    ],
)
def test_cohort_spec_errors_for_a_model_folder(latent_model_dir, changes, message) -> None:
    with pytest.raises(SpecError, match=message):
        SimulationSpec.model_validate({"model": str(latent_model_dir), **COHORT, **changes})


def test_cohort_population_needs_a_trained_model() -> None:
    with pytest.raises(SpecError, match=r"`population` draws covariates for a trained model"):
        SimulationSpec.model_validate(
            {"model": "pk_1cmt_iv", "parameters": {"cl": 5, "v": 50}, "population": {}, **COHORT}
        )
    with pytest.raises(SpecError, match=r"`parameters` is missing cl, v for model 'pk_1cmt_iv'"):
        SimulationSpec.model_validate({"model": "pk_1cmt_iv", **COHORT})


@pytest.mark.isolated  # ODE engine compilation
def test_cohort_from_a_model_folder_is_finite_and_chunk_invariant(
    tmp_path: Path, latent_model_dir: Path
) -> None:
    """A virtual population (two ancestries, a CrCL criterion) simulated on the trained
    model: finite concentrations; the covariates it reads are coordinates; the same numbers
    for chunk sizes 2 and 5 (subject i's covariates and latent draw depend on (seed, i)
    alone, to the last bit); and a spec file naming the folder relative to itself."""
    (tmp_path / "models").symlink_to(latent_model_dir.parent)
    spec_file = tmp_path / "cohort.yaml"
    population = {"ancestry": {"european": 0.5, "african": 0.5}, "criteria": ["crcl >= 30"]}
    spec_file.write_text(
        yaml.safe_dump({"model": "models/vanco-latent", "population": population, **COHORT})
    )
    spec = load_spec(spec_file)
    small = run_simulation(spec, chunk_size=2)
    whole = run_simulation(spec, chunk_size=5, out=tmp_path / "cohort.nc")
    conc = np.asarray(whole["conc"].values)
    assert conc.shape == (5, 4) and np.all(np.isfinite(conc)) and np.all(conc[:, 1:] > 0)
    np.testing.assert_array_equal(np.asarray(small["conc"].values), conc)
    for column in ("cyp3a5", "ancestry", "age", "female", "crcl", "weight", "latent_0"):
        assert column in whole.coords, column
    assert set(np.asarray(whole["ancestry"].values)) <= {"european", "african"}
    assert np.all(np.asarray(whole["crcl"].values) >= 30)
    record = json.loads((tmp_path / "cohort.nc.provenance.json").read_text())
    assert record["trained_model"]["prior"] == "vancomycin"
    # patients instead: each patient's covariates, n_subjects latent draws each
    patients = [
        {**{k: v for k, v in PATIENT.items() if k != "id"}, "id": "A"},
        {**{k: v for k, v in PATIENT.items() if k != "id"}, "id": "B", "crcl": 30},
    ]
    per_patient = run_simulation(
        SimulationSpec.model_validate(
            {"model": str(latent_model_dir), **COHORT, "n_subjects": 3, "patients": patients}
        ),
        chunk_size=4,
    )
    values = np.asarray(per_patient["conc"].values)
    assert values.shape == (6, 4) and np.all(np.isfinite(values))
    assert np.asarray(per_patient["cyp3a5"].values).tolist() == ["*3/*3"] * 6
    # the typical clearance follows each patient's covariates (CrCL 30 vs 60 mL/min)
    typical_cl = np.asarray(per_patient["cl"].values)
    assert np.all(typical_cl[3:] < typical_cl[:3]) and len(set(typical_cl[:3])) == 1


# ---------------------------------------------------------------------------- trial design
TRIAL = {
    "name": "latent trial", "drug": "vancomycin", "duration": 24, "visits": [11.5, 23.5],
    "arms": [{"name": "1 g", "control": True, "dose": "1 g", "interval": 12, "infusion": 1},
             {"name": "1.5 g", "dose": 1500, "interval": 12, "infusion": 1.5}],
    "sample_size": [4], "replicates": 2, "seed": 5,
    "endpoints": [{"name": "trough", "kind": "value", "output": "conc", "at": 23.5}],
    "analyses": [{"endpoint": "trough"}],
}  # fmt: skip


def test_trial_design_takes_a_model_folder(tmp_path: Path, latent_model_dir: Path) -> None:
    """``model:`` in a design (relative to the file, or from ``load_trial(model=...)``)
    makes the trained model the subjects' source; its prior must be the design's drug, and
    the chunks of a run belong to the model's parameters, not just its folder's name."""
    from twinsim.scenarios import TrialDesign, load_trial
    from twinsim.scenarios._trial._run import _design_hash
    from twinsim.scenarios._trial._simulate import load_model

    published = TrialDesign.model_validate(TRIAL)
    design = TrialDesign.model_validate({**TRIAL, "model": str(latent_model_dir)})
    assert published.model is None and load_model(published).name == "vancomycin"
    assert load_model(design).name == "vancomycin_latent"
    assert design.model_text().startswith("trained latent model vanco-latent (prior vancomycin")
    assert _design_hash(design) != _design_hash(published)
    (tmp_path / "models").symlink_to(latent_model_dir.parent)
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump({**TRIAL, "model": "models/vanco-latent"}), encoding="utf-8")
    assert Path(load_trial(path).model).resolve() == latent_model_dir.resolve()
    assert load_trial(tmp_path / "trial.yaml", model=latent_model_dir).model == str(
        latent_model_dir
    )
    with pytest.raises(SpecError, match=r"`model` is the trained model 'vanco-latent', whose "):
        TrialDesign.model_validate({**TRIAL, "drug": "theophylline", "model": str(latent_model_dir),
                                    "arms": [{"name": "a", "dose": 300, "interval": 12},
                                             {"name": "b", "dose": 400, "interval": 12}]})  # fmt: skip
    with pytest.raises(SpecError, match=r"is not a trained model folder"):
        TrialDesign.model_validate({**TRIAL, "model": str(tmp_path)})
    # the trial-designer page reads the same design text (its problems placed by field)
    from twinsim.dashboard._trial import check_design

    assert check_design(yaml.safe_dump({**TRIAL, "model": str(latent_model_dir)})).ok
    bad = check_design(yaml.safe_dump({**TRIAL, "model": str(tmp_path)}))
    assert [p["field"] for p in bad.problems] == ["model"]


@pytest.mark.isolated  # ODE engine compilation
def test_cli_trial_runs_on_the_trained_model(tmp_path: Path, latent_model_dir: Path) -> None:
    """``twinsim trial --model``: subjects simulated on the trained model (finite endpoints,
    no failed solve), and the command, the summary, the report and the provenance record
    name the folder and its hashes."""
    design = tmp_path / "trial.yaml"
    design.write_text(yaml.safe_dump(TRIAL), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["trial", str(design), "--model", str(latent_model_dir), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "model: trained latent model vanco-latent (prior vancomycin" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith("trained latent model vanco-latent")
    assert summary["failed_solves"] == 0 and summary["subjects_simulated"] == 2 * 2 * 4
    trough = summary["endpoints_by_arm"]["trough"]
    assert all(np.isfinite(v["mean"]) and v["mean"] > 0 for v in trough.values())
    record = json.loads((out / "provenance.json").read_text())
    trained = trained_model(latent_model_dir)
    assert record["model"]["name"] == "vancomycin_latent"
    assert record["trained_model"]["params_sha256"] == trained.params_sha256
    assert "Model: trained latent model vanco-latent" in (out / "report.html").read_text()


def test_specs_without_a_model_do_not_load_the_latent_machinery() -> None:
    """Reading a trial design or a what-if file that names no trained model imports
    neither flax nor orbax (they cost seconds at the start of every command); the shared
    ``model`` field loads them only for a folder."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from twinsim.scenarios import load_trial, load_whatif, trial_examples, whatif_examples\n"
        "load_trial(trial_examples()['vancomycin_auc_vs_trough'])\n"
        "load_whatif(whatif_examples()['whatif_vancomycin_renal'])\n"
        "print(sorted(m for m in ('flax', 'orbax') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
