"""Population fits of the theophylline data against published estimates.

Reference values (``/work/shared/REFERENCES.md``):

- nlmixr2 SAEM, one compartment with first-order absorption, total-mg dose, additive
  error: ka 1.57 /h, CL 2.76 L/h, V 31.5 L; BSV 71.5 % (ka), 27.6 % (CL), 13.4 % (V) CV;
  additive SD 0.693 mg/L.
- R nlme (Pinheiro & Bates, ``SSfol``, per-kg dose): SD(η log ka) 0.644, SD(η log CL)
  0.167 (CL per kg), residual SD 0.709 mg/L.

Tolerances: ka, CL, V within 10 % of nlmixr2; residual SD within 10 % of 0.693; BSV SDs
(log scale) inside the published ranges widened by a third: ka 0.43–0.86 (0.63 from
nlmixr2's 71.5 % CV, 0.644 from nlme), CL 0.11–0.36 (0.167 per kg in nlme, 0.27 from
nlmixr2's 27.6 %), V 0.09–0.18 (0.133 from nlmixr2's 13.4 %). The model's starting values
(CL 1 L/h, V 20 L, ka 1 /h, ω² 0.1, σ 1 mg/L) are neutral, not the published estimates.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from twinsim.scenarios import read_nonmem
from twinsim.scenarios._fit import fit_data, fit_model
from twinsim.twin import FitError, fit_population

DATA = Path(__file__).parents[1] / "data" / "theophylline_nonmem.csv"
NLMIXR2 = {"theta_ka": 1.57, "theta_cl": 2.76, "theta_v": 31.5}
BSV_SD_RANGE = {"ka": (0.43, 0.86), "cl": (0.11, 0.36), "v": (0.09, 0.18)}
RESIDUAL_SD = 0.693


@pytest.fixture(scope="module")
def theophylline():
    model = fit_model("one_compartment_oral")
    return model, fit_data(read_nonmem(DATA), model)


def _check_published(fit, statistic="median"):
    for name, reference in NLMIXR2.items():
        assert fit.estimate(name, statistic) == pytest.approx(reference, rel=0.10), name
    for effect, (low, high) in BSV_SD_RANGE.items():
        assert low <= fit.estimate(f"omega_sd_{effect}", statistic) <= high, effect
    assert fit.estimate("sigma_conc_additive", statistic) == pytest.approx(RESIDUAL_SD, rel=0.10)


def test_data_mapping(theophylline):
    _, data = theophylline
    assert data.n_subjects == 12
    assert data.n_observations == 132
    assert float(np.asarray(data.events.amount)[0, 0]) == pytest.approx(319.992)
    assert "weight" in data.covariates


@pytest.mark.parametrize("method", ["laplace", "focei"])
def test_conditional_fits_match_published_estimates(theophylline, method):
    """Laplace and FOCE-I: the optimum (``estimate``) and the median of the normal draws
    both within the tolerances above."""
    model, data = theophylline
    fit = fit_population(model, data, method=method, seed=0)
    assert fit.success, fit.diagnostics["failure_reasons"]
    assert fit.diagnostics["optimizer_converged"] and fit.diagnostics["covariance_ok"]
    _check_published(fit, "estimate")
    _check_published(fit)
    # point estimates are the optimum (draw 0), not a summary of the draws
    assert fit.estimate("theta_cl") == pytest.approx(
        fit.diagnostics["optimum"]["theta_cl"], rel=1e-12
    )
    assert fit.estimate("theta_cl") == pytest.approx(fit.draws["theta_cl"][0, 0], rel=1e-12)
    # standard errors exist and are plausible: the 90 % interval of CL holds the estimate
    row = next(r for r in fit.summary if r["name"] == "theta_cl")
    assert row["q05"] < row["median"] < row["q95"] and row["sd"] > 0
    assert all(0.0 <= s < 1.0 for s in fit.shrinkage.values())
    fitted = fit.fitted_model()
    assert fitted.theta["cl"] == pytest.approx(fit.estimate("theta_cl"), rel=1e-12)
    assert fitted.omega[2, 2] == pytest.approx(fit.estimate("omega_sd_ka") ** 2, rel=1e-9)
    assert fit.draws["parameters"].shape[2:] == (12, 4)


@pytest.mark.slow
def test_nuts_matches_published_estimates(theophylline):
    """Reduced NUTS (2 chains × 250 draws after 250 warm-up) for CI; posterior medians.
    The full size (4 × 1,000) is in ``benchmarks/bench_fit.py``."""
    model, data = theophylline
    fit = fit_population(
        model, data, method="nuts", num_chains=2, num_warmup=250, num_samples=250, seed=3
    )
    _check_published(fit)
    d = fit.diagnostics
    assert d["num_chains"] == 2 and d["num_draws"] == 250
    assert d["max_r_hat"] < 1.05
    assert d["min_ess_bulk"] > 100
    assert d["divergences"] <= 5  # 1 % of transitions
    # R-hat is reported unrounded (arviz rounds to 2 decimals unless told not to)
    import arviz as az

    for name in NLMIXR2:
        row = next(row for row in fit.summary if row["name"] == name)
        exact = float(az.rhat(np.asarray(fit.draws[name])))
        assert row["r_hat"] == pytest.approx(exact, rel=1e-12, abs=1e-12)
    assert fit.inference_data is not None
    assert set(fit.shrinkage) == {"cl", "v", "ka"}


@pytest.mark.slow
def test_svi_matches_published_estimates(theophylline):
    model, data = theophylline
    fit = fit_population(model, data, method="svi", seed=0, svi_steps=2000)
    _check_published(fit)
    assert math.isfinite(fit.diagnostics["final_loss"])


def test_invalid_options_are_reported(theophylline):
    model, data = theophylline
    with pytest.raises(FitError, match=r"`method` must be one of .*'focei'.*, got 'mcmc'"):
        fit_population(model, data, method="mcmc")
    with pytest.raises(FitError, match=r"`num_chains` must be a whole number ≥ 1, got 0"):
        fit_population(model, data, num_chains=0)


def test_docstring_examples_run():
    import doctest

    from twinsim.twin import _fitting

    result = doctest.testmod(_fitting, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 3 and result.failed == 0


@pytest.mark.parametrize("case", ["theophylline", "full_omega", "noncentered_bov"])
def test_dense_mass_choice_counts_the_samplers_dimensions(theophylline, case):
    """``dense_mass="auto"`` decides on the number of unconstrained parameters NUTS samples;
    the count must be NumPyro's own (the flattened unconstrained sites of the model)."""
    import jax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model

    from twinsim.priors import ObservationData, PopulationModel, ResidualError, one_compartment
    from twinsim.simulators import Dose, DosingEvents
    from twinsim.twin._fitting import _unconstrained_size

    model, data = theophylline
    parameterization, full = "centered", False
    if case == "full_omega":
        omega = np.full((3, 3), 0.01) + np.diag([0.3, 0.05, 0.02])
        model = model.replace(omega=omega)
        full = True
    elif case == "noncentered_bov":
        model = PopulationModel(
            name="bov", structural=one_compartment(), theta={"cl": 5.0, "v": 50.0},
            random_effects=("cl", "v"), omega=[0.04, 0.02], occasion_effects=("cl",),
            occasion_omega=[0.0225], residual={"conc": ResidualError(additive=0.1, proportional=0.1)},
        )  # fmt: skip
        events = DosingEvents.from_doses(
            [[Dose(0.0, 100.0, compartment=0), Dose(168.0, 100.0, compartment=0)]] * 3
        )
        data = ObservationData.build(
            events,
            [[2.0, 6.0, 170.0, 174.0]] * 3,
            np.full((3, 4), 1.5),
            occasion=[[0, 0, 1, 1]] * 3,
        )
        parameterization = "noncentered"
    numpyro_model = model.population_model(
        data, omega_structure="full" if full else "diagonal", parameterization=parameterization
    )
    info = initialize_model(jax.random.key(0), numpyro_model)
    expected = ravel_pytree(info.param_info.z)[0].size
    assert _unconstrained_size(model, data, full) == expected
