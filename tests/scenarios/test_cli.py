"""The ``twinsim`` command line, driven through typer's CliRunner.

Runs are kept small (4 subjects, one compiled shape) except the demo and the shipped
examples, which are run as a user would run them.
"""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from twinsim.cli import app, example_specs
from twinsim.scenarios import (
    SimulationSpec,
    load_spec,
    read_nonmem,
    resolve_model,
    spec_json_schema,
)
from twinsim.scenarios._provenance import provenance_path
from twinsim.simulators import lognormal_parameters, omega_from_cv, simulate

runner = CliRunner()

SMALL_SPEC = textwrap.dedent(
    """\
    model: pk_2cmt_oral
    parameters: {cl: 5 L/h, v1: 40 L, q: 8 L/h, v2: 80 L, ka: 1.2 1/h, f_oral: 0.8}
    variability: {cl: 30%, ka: 40%}
    n_subjects: 4
    seed: 3
    regimen: 100 mg q12h x 2 d
    times: {start: 0 h, stop: 2 d, step: 2 h}
    """
)


@pytest.fixture
def small_spec(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_SPEC)
    return path


def direct_simulation(spec: SimulationSpec) -> np.ndarray:
    """conc [subject, time] from one direct ``simulate`` call over the whole cohort."""
    model = resolve_model("pk_2cmt_oral")
    cv = [0.3 if name == "cl" else 0.4 if name == "ka" else 0.0 for name in model.parameters]
    params = lognormal_parameters(3, np.arange(4), spec.parameter_vector(), omega_from_cv(cv))
    solution = simulate(model, params, spec.dosing_events(), np.asarray(spec.times))
    assert np.all(np.asarray(solution.status) == 0)
    return np.asarray(solution.outputs)[:, :, 0]


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("simulate", "nonmem", "schema", "examples", "demo"):
        assert command in result.output
    result = runner.invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0
    assert "--chunk-size" in result.output and "--out" in result.output


def test_schema_to_stdout_and_to_a_file(tmp_path):
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == spec_json_schema()
    out = tmp_path / "schema.json"
    result = runner.invoke(app, ["schema", "--out", str(out)])
    assert result.exit_code == 0
    assert json.loads(out.read_text()) == spec_json_schema()


def test_simulate_writes_the_cohort_of_a_direct_simulate_call(small_spec, tmp_path):
    """The NetCDF holds what one direct ``simulate`` call of the same subjects gives.

    The CLI simulates in chunks of 3 (a chunk of 3 and a padded one); the reference is one
    batch of 4 with parameters drawn by lognormal_parameters(seed, [0..3], θ, ω²(CV)).
    Tolerance: rtol 1e-12, atol 1e-15 mg/L (the same exact linear engine; batches may
    differ by rounding only).
    """
    out = tmp_path / "result.nc"
    result = runner.invoke(
        app, ["simulate", str(small_spec), "--out", str(out), "--chunk-size", "3"]
    )
    assert result.exit_code == 0, result.output
    spec = load_spec(small_spec)
    with xr.open_dataset(out) as dataset:
        np.testing.assert_allclose(
            dataset["conc"].values, direct_simulation(spec), rtol=1e-12, atol=1e-15
        )
        np.testing.assert_array_equal(dataset["time"].values, spec.times)
        assert dataset["status"].values.tolist() == [0, 0, 0, 0]
        assert dataset.attrs["model"] == "pk_2cmt_oral"
        assert SimulationSpec.model_validate(json.loads(dataset.attrs["spec"])) == spec
    record = json.loads(provenance_path(out).read_text())
    assert record["command"] == (
        f"twinsim simulate {small_spec} --out {out} --chunk-size 3 --format auto"
    )
    assert record["spec_file"] == str(small_spec)
    assert "subjects" in result.stdout and "Cmax of conc" in result.stdout
    assert f"wrote {out}" in result.stdout


def test_simulate_quiet_and_default_output_name(small_spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["simulate", str(small_spec), "--quiet", "--chunk-size", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "small.nc").is_file()
    assert (tmp_path / "small.nc.provenance.json").is_file()
    assert "Cmax" not in result.stdout


def test_nonmem_writes_doses_and_simulated_dv(small_spec, tmp_path):
    """The NONMEM file reads back with the spec's doses and DV = the simulated concentration.

    Tolerance for DV: rtol 1e-12 (the file writes floats with repr, which round-trips).
    """
    out = tmp_path / "data.csv"
    result = runner.invoke(app, ["nonmem", str(small_spec), "--out", str(out), "--chunk-size", "3"])
    assert result.exit_code == 0, result.output
    spec = load_spec(small_spec)
    data = read_nonmem(out)
    assert data.ids == (1, 2, 3, 4)
    doses = spec.doses()[0]
    for subject in data.doses:
        assert [(d.time, d.amount, d.compartment) for d in subject] == [
            (d.time, d.amount, d.compartment) for d in doses
        ]
    observations = data.observations
    assert set(observations["CMT"]) == {2}  # NONMEM ADVAN4: depot 1, central 2
    dv = observations.pivot(index="ID", columns="TIME", values="DV").to_numpy()
    np.testing.assert_allclose(dv, direct_simulation(spec), rtol=1e-12, atol=1e-15)
    assert (observations["MDV"] == 0).all()
    assert json.loads(provenance_path(out).read_text())["outputs"]["format"] == "nonmem-csv"


@pytest.mark.parametrize(
    ("spec_text", "expected"),
    [
        (SMALL_SPEC.replace("cl: 5 L/h", "cl: -5 L/h"), r"`parameters.cl` must be > 0 L/h, got -5"),
        (SMALL_SPEC.replace("cl: 5 L/h", "cl: 5 L"), r"`parameters.cl`.*L"),
        (SMALL_SPEC.replace("regimen:", "regimn:"), r"`regimn` is not a known field"),
        (SMALL_SPEC.replace("pk_2cmt_oral", "pk_2cmt_orl"), r"did you mean 'pk_2cmt_oral'"),
        (SMALL_SPEC + "patient: {weight: 900 kg}\n", r"`patients\[0\].weight` must be between"),
        ("model: [unclosed\n", r"is not valid YAML"),
    ],
)
def test_bad_spec_is_one_message_and_exit_code_2(tmp_path, spec_text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(spec_text)
    result = runner.invoke(app, ["simulate", str(path), "--out", str(tmp_path / "x.nc")])
    assert result.exit_code == 2
    assert result.output.startswith("error: ")
    assert "Traceback" not in result.output
    assert re.search(expected, result.output), result.output
    assert not (tmp_path / "x.nc").exists()


def test_missing_spec_file_is_exit_code_2(tmp_path):
    result = runner.invoke(app, ["nonmem", str(tmp_path / "absent.yaml"), "--out", "x.csv"])
    assert result.exit_code == 2
    assert "cannot read" in result.output and "absent.yaml" in result.output
    assert "Traceback" not in result.output


def test_shipped_examples_are_listed_and_valid():
    """Every shipped example loads; the per-kg example resolves each patient's doses."""
    examples = example_specs()
    assert {
        "two_compartment_oral_cohort",
        "vancomycin_like_iv_infusion",
        "loading_dose_per_kg",
    } <= set(examples)
    result = runner.invoke(app, ["examples"])
    assert result.exit_code == 0
    for name, path in examples.items():
        assert name in result.stdout and str(path) in result.stdout
        load_spec(path)

    vancomycin = load_spec(examples["vancomycin_like_iv_infusion"]).doses()[0]
    assert [(d.time, d.amount, d.duration) for d in vancomycin] == [
        (12.0 * k, 1000.0, 1.0) for k in range(6)
    ]
    light, heavy = load_spec(examples["loading_dose_per_kg"]).doses()
    assert [d.amount for d in light] == [1500.0] + [900.0] * 10
    assert [d.amount for d in heavy] == [2500.0] + [1500.0] * 10
    assert [d.time for d in heavy] == [12.0 * k for k in range(11)]


@pytest.mark.parametrize("name", ["vancomycin_like_iv_infusion", "loading_dose_per_kg"])
def test_shipped_examples_run(name, tmp_path):
    path = example_specs()[name]
    out = tmp_path / f"{name}.nc"
    result = runner.invoke(app, ["simulate", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    spec = load_spec(path)
    with xr.open_dataset(out) as dataset:
        assert dataset.sizes["subject"] == spec.n_subjects * max(1, len(spec.patients))
        assert (dataset["status"].values == 0).all()
        assert np.nanmax(dataset["conc"].values) > 0


def test_demo_writes_every_output(tmp_path):
    """The demo's cohort has 200 subjects × 337 times; CSVs, plot and provenance exist."""
    out_dir = tmp_path / "demo-output"
    result = runner.invoke(app, ["demo", "--out-dir", str(out_dir)])
    assert result.exit_code == 0, result.output
    cohort = out_dir / "cohort.nc"
    with xr.open_dataset(cohort) as dataset:
        assert dict(dataset["conc"].sizes) == {"subject": 200, "time": 337}
        assert (dataset["status"].values == 0).all()
    tidy = pd.read_csv(out_dir / "cohort.csv")
    assert len(tidy) == 200 * 337
    assert list(tidy.columns[:5]) == ["subject", "time", "output", "value", "unit"]
    metrics = pd.read_csv(out_dir / "metrics.csv")
    assert len(metrics) == 200
    assert {"cmax", "auc_tau", "trough"} <= set(metrics.columns)
    html = (out_dir / "concentration.html").read_text()
    assert "plotly" in html and "median" in html
    record = json.loads(provenance_path(cohort).read_text())
    assert record["example"] == "two_compartment_oral_cohort"
    assert record["command"] == f"twinsim demo --out-dir {out_dir}"
    for name in ("cohort.nc", "cohort.csv", "metrics.csv", "concentration.html"):
        assert str(out_dir / name) in result.stdout
