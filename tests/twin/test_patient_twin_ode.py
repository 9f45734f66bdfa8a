"""Patient twins of ODE (nonlinear) drug models: warfarin's INR model.

The MAP of an ODE model is searched on the host (bounded L-BFGS-B in prior-whitened
coordinates) with the gradient from forward sensitivities of the solve; its Hessian is
central differences of that gradient. Both are checked against an independent
implementation: :func:`twinsim.twin._accuracy.scipy_map` writes the same objective with
numpy/scipy (engine predictions at rtol 1e-8) and minimises it by scipy's BFGS with
finite-difference gradients. Tolerances: η within 5e-3 (log scale, 0.5 % on a parameter:
scipy's finite-difference gradient of an adaptive ODE solve limits the reference itself);
each objective, evaluated at the other's minimiser, no lower than at its own by more than
1e-6 (the same optimum); the Hessian's diagonal within 2 % of second differences of the
scipy objective (steps 0.02 in η).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from twinsim.twin import Observation, PatientTwin, fit_nuts_many
from twinsim.twin._accuracy import scipy_map, scipy_objective
from twinsim.twin._compiled import _engine

# a fresh process (`make test`): see the `isolated` marker in pyproject.toml
pytestmark = pytest.mark.isolated

PATIENT = {"age": 62.0, "weight": 78.0, "female": 1, "cyp2c9": "*1/*3", "vkorc1": "A/A"}


def _warfarin_twin(inrs):
    twin = PatientTwin.create("warfarin", PATIENT)
    twin = twin.with_doses(*[twin.dose(24.0 * k, 5.0) for k in range(7)])
    return twin.with_observations(*[Observation(t, v, output="inr") for t, v in inrs])


@pytest.fixture(scope="module")
def twin():
    return _warfarin_twin([(72.0, 1.9), (120.0, 2.8)])


def test_warfarin_map_equals_an_independent_scipy_map(twin):
    post = twin.fit("laplace")
    assert post.diagnostics["converged"]
    assert post.diagnostics["hessian_positive_definite"]
    reference, _ = scipy_map(twin)
    np.testing.assert_allclose(post.eta_mode, reference, atol=5e-3)
    theirs = scipy_objective(twin)
    ours = _twin_objective(twin)
    assert theirs(post.eta_mode) >= theirs(reference) - 1e-6
    assert ours(reference) >= ours(post.eta_mode) - 1e-6
    # the Laplace precision against second differences of the independent objective
    hess = np.linalg.inv(post.covariance)
    for i in range(len(reference)):
        step = 0.02 * np.eye(len(reference))[i]
        second = (
            theirs(post.eta_mode + step) - 2 * theirs(post.eta_mode) + theirs(post.eta_mode - step)
        ) / 0.02**2
        assert hess[i, i] == pytest.approx(second, rel=0.02)


def test_one_more_inr_reuses_the_compilation_and_moves_the_forecast(twin):
    post2 = twin.fit("map")
    before = PatientTwin.compilations("warfarin")
    twin3 = twin.with_observations(Observation(168.0, 3.6, output="inr"))
    post3 = twin3.fit("map")
    assert PatientTwin.compilations("warfarin")["value_and_grad"] == before["value_and_grad"]
    # a higher third INR than the model expected: the forecast INR on day 14 rises
    regimen = {"5 mg daily": [twin.dose(24.0 * k, 5.0) for k in range(14)]}
    inr = twin.model.structural.output_names.index("inr")
    day14 = [
        p.predict(regimen, times=[168.0, 336.0], n_draws=50).median[0, -1, inr]
        for p in (post2, post3)
    ]
    assert day14[1] > day14[0]


def test_an_implausible_inr_gives_a_finite_bounded_mode_not_a_crash():
    """An INR of 12 on day 3 of 5 mg daily pulls η far out, where solves can fail; the
    search scores failed solves as improbable and stays within its bounds."""
    post = _warfarin_twin([(72.0, 12.0)]).fit("map")
    assert np.all(np.isfinite(post.eta_mode))
    assert np.all(np.abs(post.eta_mode) < 10 * np.sqrt(np.diag(post.twin.model.omega)))


def _twin_objective(twin):
    engine, batch = _engine(twin.model), twin._batch(1.0)
    return lambda eta: float(engine.value_and_grad(jnp.asarray(eta), batch)[0])


def test_warfarin_nuts_samples_the_posterior_laplace_approximates(twin):
    """NUTS on an ODE drug model. Regression: it used to abort inside the compiled sampler
    (the engine's steady-state root was differentiated by a linear solve that raises on a
    singular Jacobian, which extreme proposals produce; see
    ``tests/simulators/test_gradients.py``). 2 chains × (60 warm-up + 60 draws): no
    divergences, split R-hat ≤ 1.1; with two INRs the posterior of η is near normal, so
    the NUTS mean lies within 0.5 Laplace SD of the mode and each SD within 0.7–1.4 × the
    Laplace SD (measured with 2 × 100: 0.25 SD and 0.93–1.17)."""
    laplace = twin.fit("laplace")
    # through the cohort entry point (ODE twins: one patient per compiled call)
    (post,) = fit_nuts_many([twin], num_warmup=60, num_samples=60, num_chains=2, seed=3)
    assert post.method == "nuts"
    assert post.samples.shape == (120, len(twin.model.random_effects))
    assert np.all(np.isfinite(post.samples))
    assert post.diagnostics["divergences"] == 0
    assert post.diagnostics["max_r_hat"] <= 1.1
    sd = np.sqrt(np.diag(laplace.covariance))
    assert np.all(np.abs(post.samples.mean(axis=0) - laplace.eta_mode) <= 0.5 * sd)
    ratio = post.samples.std(axis=0) / sd
    assert np.all((ratio > 0.7) & (ratio < 1.4)), ratio
