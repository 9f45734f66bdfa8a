"""``twinsim fit`` end to end on the shipped theophylline data set (Laplace, small VPC)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from twinsim.cli import app
from twinsim.scenarios import read_nonmem
from twinsim.scenarios._fit import example_data_path, fit_data, fit_model

runner = CliRunner()


def test_fit_writes_estimates_report_and_vpc(tmp_path):
    """Laplace fit with M3 censoring below 0.3 mg/L (the pre-dose samples): estimates near
    the uncensored fit (ka, CL, V within 10 % of nlmixr2's 1.57 /h, 2.76 L/h, 31.5 L)."""
    out = tmp_path / "fit"
    result = runner.invoke(
        app,
        [
            "fit", str(example_data_path()), "--model", "one_compartment_oral",
            "--method", "laplace", "--lloq", "0.3", "--vpc-replicates", "20", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "theta_cl" in result.output and "wrote" in result.output
    estimates = pd.read_csv(out / "estimates.csv").set_index("name")
    for name, reference in {"theta_ka": 1.57, "theta_cl": 2.76, "theta_v": 31.5}.items():
        assert abs(estimates.loc[name, "median"] / reference - 1) < 0.10, name
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == {
        "n_subjects": 12,
        "n_observations": 132,
        "max_covariate_segments": 1,
    }
    assert report["diagnostics"]["method"] == "laplace"
    assert set(report["shrinkage"]) == {"cl", "v", "ka"}
    vpc = report["vpc"]
    observed_median = np.array(vpc["observed"], dtype=float)[:, 1]
    low = np.array(vpc["simulated_low"], dtype=float)[:, 1]
    high = np.array(vpc["simulated_high"], dtype=float)[:, 1]
    # the observed median lies inside the simulated 90 % band in most bins
    assert np.mean((observed_median >= low) & (observed_median <= high)) >= 0.75
    assert "plotly" in (out / "vpc.html").read_text()[:5000].lower()
    assert (out / "vpc.png").exists() or report["vpc_png_error"]
    assert "| theta_ka |" in (out / "report.md").read_text()


def test_censoring_flags_observations_below_the_limit():
    model = fit_model("one_compartment_oral")
    data = fit_data(read_nonmem(example_data_path()), model, lloq=0.3)
    censored = np.asarray(data.censored)
    observed = np.asarray(read_nonmem(example_data_path()).observations.query("EVID == 0")["DV"])
    assert censored.sum() == np.sum(observed < 0.3) > 0


def test_unknown_model_is_one_message_and_exit_code_2(tmp_path):
    result = runner.invoke(
        app, ["fit", str(example_data_path()), "--model", "three_cmt_magic", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "`--model` 'three_cmt_magic' is not known" in result.output
    assert "Traceback" not in result.output


def test_docstring_examples_run():
    import doctest

    from twinsim.scenarios import _fit

    result = doctest.testmod(_fit, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0
