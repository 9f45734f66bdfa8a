"""Warfarin twins on the semilinear engine: the likelihood of the MAP fit and of NUTS.

The twin's likelihood predicts a patient's INRs with the semilinear engine (exact PK, an
exponential integrator for the clotting-factor chains; ``simulators/_semilinear.py``)
whenever the doses and observation times lie on a grid, on a step ≤ 0.5 h for fits and
≤ 2 h for NUTS, running node by node to the last observation
(:func:`~twinsim.simulators.semilinear_outputs`). References and tolerances:

- the walking ODE engine (diffrax Tsit5) at rtol 1e-11: INR within 1e-8 relative on the
  fit grid and 5e-6 on the sampling grid (measured over these patients and η: ≤ 2.5e-9
  and ≤ 7.4e-7; NUTS on the walking engine solved to rtol 1e-5);
- ``simulate(method="semilinear")`` (the same update, as a ``scan`` recording every node,
  padded to 32 subjects): 1e-12 relative;
- a history off the grid (an INR 0.036 s after the hour) takes the walking engine, and
  its mode agrees with the on-grid history's to 1e-4 in η.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from twinsim.simulators import semilinear_outputs, simulate
from twinsim.twin import Observation, PatientTwin, fit_nuts_many
from twinsim.twin._compiled import _engine

# a fresh process (`make test`): see the `isolated` marker in pyproject.toml
pytestmark = pytest.mark.isolated

PATIENT = {"age": 62.0, "weight": 78.0, "female": 1, "cyp2c9": "*1/*3", "vkorc1": "A/A"}


def _twin(doses, inrs, covariates=PATIENT):
    twin = PatientTwin.create("warfarin", covariates)
    twin = twin.with_doses(*[twin.dose(t, mg) for t, mg in doses])
    return twin.with_observations(*[Observation(t, v, output="inr") for t, v in inrs])


#: daily 5 mg, INRs on days 3 and 5 (the benchmark patient); 7.5 mg then 2.5 mg at 18:00
#: with INRs at 08:30 from day 1; a CYP2C9 *1/*1 VKORC1 G/G patient on 10 mg, day-8 INR
PATIENTS = [
    ([(24.0 * k, 5.0) for k in range(7)], [(72.0, 1.9), (120.0, 2.8)], PATIENT),
    (
        [(18.0 + 24.0 * k, 7.5 if k < 3 else 2.5) for k in range(10)],
        [(38.5, 1.2), (86.5, 1.8), (134.5, 2.6), (206.5, 3.1)],
        PATIENT,
    ),
    (
        [(24.0 * k, 10.0) for k in range(8)],
        [(192.0, 1.7)],
        {"age": 45.0, "weight": 95.0, "female": 0, "cyp2c9": "*1/*1", "vkorc1": "G/G"},
    ),
]


@pytest.mark.parametrize("case", range(len(PATIENTS)))
def test_the_likelihood_predicts_the_walking_engines_inr(case):
    twin = _twin(*PATIENTS[case])
    engine, batch = _engine(twin.model), twin._batch(1.0)
    assert batch["grid"] is not None and batch["sample_grid"] is not None
    etas = np.random.default_rng(case).normal(size=(3, engine.n_effects)) * engine.prior_sd
    n = len(twin.observations)
    for eta in jnp.asarray(etas):
        walking = dict(batch, grid=None, sample_grid=None)
        reference = engine._observed_predictions(eta, walking, rtol=1e-11, atol=1e-13)[:n]
        fit = engine._observed_predictions(eta, batch)[:n]
        sample = engine._observed_predictions(eta, batch, grid="sample_grid")[:n]
        np.testing.assert_allclose(fit, reference, rtol=1e-8)
        np.testing.assert_allclose(sample, reference, rtol=5e-6)


def test_running_to_the_last_output_equals_the_recorded_scan():
    twin = _twin(*PATIENTS[1])
    model = twin.model.structural
    batch = twin._batch(1.0)
    params = twin.model.typical_parameters(twin.covariates)
    times = jnp.array([0.0, 38.5, 86.5, 134.5, 206.5])
    step = float(batch["grid"])
    direct = jax.jit(
        lambda p, s: semilinear_outputs(model, p, batch["events"], times[None], step=s)
    )(params, jnp.asarray(step))
    scan = simulate(
        model, params, batch["events"], times, method="semilinear",
        grid=(step, round(206.5 / step)),
    ).outputs  # fmt: skip
    assert np.all(np.isfinite(direct))
    np.testing.assert_allclose(direct, scan, rtol=1e-12)


def test_a_history_off_the_grid_takes_the_walking_engine():
    doses, inrs, covariates = PATIENTS[0]
    on = _twin(doses, inrs, covariates)
    off = _twin(doses, [(72.0 + 1e-5, 1.9), inrs[1]], covariates)
    assert off._batch(1.0)["grid"] is None and off._batch(1.0)["sample_grid"] is None
    np.testing.assert_allclose(off.fit("map").eta_mode, on.fit("map").eta_mode, atol=1e-4)


def test_many_warfarin_patients_sample_in_one_program():
    """``fit_nuts_many``: the three patients of one data shape (padded observations and
    doses) are one compiled NUTS program, each chain and patient a lane; every posterior
    mixes (no divergences, R-hat ≤ 1.1) near its Laplace approximation (mean within 0.5
    Laplace SD, as tests/twin/test_patient_twin_ode.py asks of one patient)."""
    doses, _, covariates = PATIENTS[0]
    inrs = [(1.9, 2.8), (1.4, 2.0), (2.4, 3.3)]
    twins = [_twin(doses, [(72.0, a), (120.0, b)], covariates) for a, b in inrs]
    engine = _engine(twins[0].model)
    before = len(engine._nuts)
    posts = fit_nuts_many(twins, num_warmup=60, num_samples=60, num_chains=2, seed=5)
    assert len(engine._nuts) - before <= 1
    for twin, post in zip(twins, posts, strict=True):
        laplace = twin.fit("laplace")
        sd = np.sqrt(np.diag(laplace.covariance))
        assert post.diagnostics["divergences"] == 0
        assert post.diagnostics["max_r_hat"] <= 1.1
        assert np.all(np.abs(post.samples.mean(axis=0) - laplace.eta_mode) <= 0.5 * sd)
