"""One twin interface: ``PatientTwin`` takes a latent model where it takes a published one.

The latent model enters the twin as a population model over its standardised latent
variable (``twin/_latent/_population.py``). The untrained model *is* the published model
(``η = L ε``), which gives exact checks of the whole chain: posterior mode, Laplace
covariance, predictions, untested genotypes. Tiny networks; one ODE engine per module."""

import jax
import numpy as np
import pytest

from twinsim.priors import vancomycin_model
from twinsim.simulators import DosingEvents
from twinsim.twin import (
    CovariateFeatures,
    LatentConfig,
    LatentModel,
    Observation,
    PatientTwin,
    PatientTwinError,
    default_safety,
    label_limits,
)

pytestmark = pytest.mark.isolated  # ODE engine compilations (see pyproject.toml)

PATIENT = {
    "weight": 80.0, "crcl": 60.0, "dialysis": 0.0, "age": 60.0, "female": 1.0,
    "cyp3a5": "*3/*3", "ancestry": "european",
}  # fmt: skip
LEVELS = (Observation(11.5, 9.0), Observation(13.0, 28.0))


def _doses(twin):
    return [twin.dose(t, 1000.0, infusion_h=1.0) for t in (0.0, 12.0)]


@pytest.fixture(scope="module")
def untrained(latent_training):
    config = LatentConfig(latent_dim=4, hidden=8, correction_hidden=4)
    return LatentModel.create(
        vancomycin_model(), CovariateFeatures.fit(latent_training), config, seed=0
    )


@pytest.fixture(scope="module")
def trained_like(untrained):
    """The same model with every network weight perturbed (a correction that is not zero,
    a covariate shift, a prior that depends on x): what training leaves behind."""
    leaves, tree = jax.tree.flatten(untrained.params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    moved = [
        leaf + 0.05 * jax.random.normal(k, leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return untrained.with_params(jax.tree.unflatten(tree, moved))


def _pair(model):
    mech = PatientTwin.create("vancomycin", PATIENT)
    mech = mech.with_doses(*_doses(mech)).with_observations(*LEVELS)
    latent = PatientTwin.create(model, PATIENT)
    return mech, latent.with_doses(*_doses(latent)).with_observations(*LEVELS)


def test_untrained_latent_twin_is_the_mechanistic_twin(untrained):
    """Untrained, the latent model is Goti 2018 with η = L ε (L = chol Ω), so individualising
    ε must give the mechanistic twin's posterior mapped through L: mode to 1e-5, Laplace
    covariance to 2 % (finite-difference Hessians of two different engines), predictions at
    the mode to 1e-5 relative (ODE at rtol 1e-7 vs exact superposition). The latent
    dimension the model does not use stays at its prior (mode 0)."""
    mech, latent = _pair(untrained)
    assert latent.drug == "vancomycin"  # targets and label limits of the prior's drug
    p_mech, p_lat = mech.fit("laplace"), latent.fit("laplace")
    chol = np.linalg.cholesky(np.asarray(vancomycin_model().omega))
    np.testing.assert_allclose(chol @ p_lat.eta_mode[:3], p_mech.eta_mode, atol=1e-5)
    assert abs(p_lat.eta_mode[3]) < 1e-6
    mapped = chol @ p_lat.covariance[:3, :3] @ chol.T
    np.testing.assert_allclose(mapped, p_mech.covariance, rtol=0.02, atol=1e-4)
    regimen = {"q12h": [mech.dose(24.0 + 12 * k, 1250.0, infusion_h=1.0) for k in range(4)]}
    a = p_mech.predict(regimen, eta=p_mech.eta_mode[None], horizon_h=48.0)
    b = p_lat.predict(regimen, eta=p_lat.eta_mode[None], horizon_h=48.0)
    np.testing.assert_allclose(b.median, a.median, rtol=1e-5, atol=1e-6)
    assert b.metrics[0]["auc24"]["median"] == pytest.approx(
        a.metrics[0]["auc24"]["median"], rel=1e-5
    )
    # the what-if report's fit table shows the mechanistic parameters (CL, Vc, Q, Vp), not
    # latent_k: the latent twin's equal the mechanistic twin's
    from twinsim.scenarios._whatif._report import _fit_summary

    shown, expected = _fit_summary(p_lat)["parameters"], _fit_summary(p_mech)["parameters"]
    assert tuple(shown) == vancomycin_model().structural.parameters
    for name, row in expected.items():
        assert shown[name]["unit"] == row["unit"]
        for key in ("typical", "individual"):
            assert shown[name][key] == pytest.approx(row[key], rel=1e-5), (name, key)


def test_a_trained_latent_twin_fits_predicts_and_recommends(trained_like):
    """With non-zero networks: MAP and Laplace converge, bands are ordered and finite, and
    the recommendation is the library's (label-bounded doses, a harm probability beside
    every PTA, nothing above the safety limit)."""
    _, latent = _pair(trained_like)
    post = latent.fit("laplace")
    assert post.diagnostics["converged"] and post.diagnostics["hessian_positive_definite"]
    assert post.eta_mode.shape == (4,)
    regimen = {"q12h": [latent.dose(24.0 + 12 * k, 1000.0, infusion_h=1.0) for k in range(4)]}
    pred = post.predict(regimen, horizon_h=48.0, n_draws=64)
    assert np.all(np.isfinite(pred.median)) and np.all(pred.lower <= pred.upper)
    assert np.all(pred.lower >= 0.0)
    recs = post.recommend(n_draws=64, top=2)
    assert recs
    limit, label = default_safety("vancomycin").limit, label_limits("vancomycin")
    for rec in recs:
        assert np.isfinite(rec.pta) and np.isfinite(rec.p_unsafe)
        assert rec.p_unsafe <= limit
        assert all(d.amount <= max(label.max_single_mg, label.max_loading_mg) for d in rec.doses)


def test_untested_latent_genotype_is_averaged_over(untrained):
    """A genotype the latent model uses only as a feature column (CYP3A5, which Goti's
    model lacks) may be 'not tested': the twin averages over the ancestry's diplotypes.
    Untrained, the model ignores the column, so the data cannot move the weights off the
    Hardy–Weinberg prior (to 1e-6)."""
    row = {**PATIENT, "cyp3a5": "not tested"}
    twin = PatientTwin.create(untrained, row)
    twin = twin.with_doses(*_doses(twin)).with_observations(*LEVELS)
    assert twin.untested_genes == ("cyp3a5",)
    post = twin.fit("map")
    mixture = post.mixture
    np.testing.assert_allclose(mixture.weights, mixture.prior, atol=1e-6)


def test_cohort_simulation_from_a_latent_model(untrained, latent_training):
    """The population-model form simulates cohorts like a published model: same seed,
    same patients whatever the cohort's size."""
    pm = untrained.population_model()
    cov = {k: np.asarray(v) for k, v in latent_training.items()}
    events = DosingEvents.from_doses([_doses(PatientTwin.create("vancomycin", PATIENT))] * 4)
    times = np.tile(np.array([2.0, 11.5, 13.0]), (4, 1))
    full = pm.simulate(3, cov, events, times)
    two = pm.simulate(
        3, {k: v[:2] for k, v in cov.items()}, DosingEvents.from_doses(
            [_doses(PatientTwin.create("vancomycin", PATIENT))] * 2
        ), times[:2], ids=[0, 1],
    )  # fmt: skip
    assert np.all(np.isfinite(np.asarray(full.prediction)))
    np.testing.assert_array_equal(np.asarray(full.prediction)[:2], np.asarray(two.prediction))


def test_latent_twin_errors_name_the_field(untrained):
    with pytest.raises(PatientTwinError, match="ancestry"):
        PatientTwin.create(untrained, {**PATIENT, "ancestry": "martian"})
    missing = {k: v for k, v in PATIENT.items() if k != "cyp3a5"}
    with pytest.raises(PatientTwinError, match="cyp3a5"):
        PatientTwin.create(untrained, missing)
