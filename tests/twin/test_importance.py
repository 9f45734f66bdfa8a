"""``PatientTwin.fit("importance")``: the Laplace posterior corrected by importance sampling.

Checked against the exact posterior by quadrature: the twin's own log posterior
(``_Engine.log_posteriors``, itself checked against scipy in test_patient_twin.py) on a
41³ grid over ±7 Laplace SDs of η, normalised numerically. A vancomycin patient with one
low level (or one level reported below the limit) has a posterior far from Gaussian: the
Laplace mean of η_CL is off by 0.1–0.2 (log scale), the importance-corrected one must lie
within 0.05 of the quadrature's (Monte Carlo SE ≈ 0.015 with 4,000 draws from ≈ 7,000
effective proposals for the widest effect: > 3 SE).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from twinsim.twin import PARETO_K_LIMIT, Observation, PatientTwin, PatientTwinError
from twinsim.twin import _importance as importance
from twinsim.twin._compiled import _engine

VANCO = {"weight": 80.0, "crcl": 60.0, "dialysis": 0.0}


def _twin(*observations: Observation) -> PatientTwin:
    twin = PatientTwin.create("vancomycin", VANCO)
    twin = twin.with_doses(*[twin.dose(12.0 * k, 1000.0) for k in range(4)])
    return twin.with_observations(*observations)


def _quadrature(twin: PatientTwin, n: int = 41) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid points ``[n³, R]`` and their normalised posterior weights, and the grid axis of
    η_CL — the exact posterior to quadrature accuracy."""
    laplace = twin.fit("laplace")
    sd = np.sqrt(np.diag(laplace.covariance))
    axes = [np.linspace(m - 7 * s, m + 7 * s, n) for m, s in zip(laplace.eta_mode, sd, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    log_p = np.asarray(_engine(twin.model).log_posteriors(jnp.asarray(grid), twin._batch(1.0)))
    weights = np.exp(log_p - log_p.max())
    return grid, weights / weights.sum(), laplace


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, q) -> np.ndarray:
    order = np.argsort(x)
    return np.interp(q, np.cumsum(w[order]), x[order])


@pytest.mark.parametrize(
    "observation",
    [Observation(47.5, 4.0), Observation(47.5, math.nan, below_lloq=True, lloq=10.0)],
    ids=["one low level", "below the limit"],
)
def test_importance_posterior_matches_quadrature_where_laplace_does_not(observation):
    twin = _twin(observation)
    grid, weights, laplace = _quadrature(twin)
    post = twin.fit("importance", num_samples=4000, seed=3)
    assert post.method == "importance"
    assert post.samples.shape == (4000, 3)
    assert post.diagnostics["pareto_k"] < PARETO_K_LIMIT
    exact_mean = weights @ grid
    exact_sd = np.sqrt(weights @ (grid - exact_mean) ** 2)
    np.testing.assert_allclose(post.samples.mean(0), exact_mean, atol=0.05)
    np.testing.assert_allclose(post.samples.std(0), exact_sd, rtol=0.08)
    cl = twin.model.random_effects.index("cl")
    exact_q = _weighted_quantiles(grid[:, cl], weights, [0.05, 0.5, 0.95])
    np.testing.assert_allclose(np.quantile(post.samples[:, cl], [0.05, 0.5, 0.95]), exact_q,
                               atol=0.07)  # fmt: skip
    # the Laplace approximation itself is off: what the correction is for
    assert abs(laplace.eta_draws(20000)[:, cl].mean() - exact_mean[cl]) > 0.1


def test_importance_is_reproducible_and_used_by_predictions():
    twin = _twin(Observation(37.0, 32.0), Observation(47.5, 14.0))
    a = twin.fit("importance", num_samples=300, seed=5)
    b = twin.fit("importance", num_samples=300, seed=5)
    c = twin.fit("importance", num_samples=300, seed=6)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)
    assert importance.proposal_count(300) == 1024 and importance.proposal_count(10) == 256
    assert a.diagnostics["proposals"] == 256 + 1024
    assert a.diagnostics["failed_solves"] == 0
    assert 0 < a.diagnostics["importance_ess"] <= a.diagnostics["proposals"]
    # forecasts draw from the resampled draws (not the Gaussian)
    np.testing.assert_array_equal(a.eta_draws(), a.samples)
    pred = a.predict({"same": []}, times=[55.0, 60.0], n_draws=100)
    assert np.isfinite(pred.median).all()
    with pytest.raises(PatientTwinError, match="num_samples"):
        twin.fit("importance", num_samples=0)
    with pytest.raises(PatientTwinError, match="'importance'"):
        twin.fit("importance-sampling")


def test_a_proposal_that_misses_the_posterior_is_flagged():
    """Proposals far too narrow (1/400 of the Laplace variance) leave weights no
    smoothing can trust: Pareto k ≥ 0.7, and the fit warns and names NUTS."""
    twin = _twin(Observation(47.5, 4.0))
    laplace = twin.fit("laplace")
    engine = _engine(twin.model)
    with pytest.warns(UserWarning, match=r"Pareto k = .* use fit\('nuts'\)"):
        _, diagnostics = importance.importance_draws(
            engine, twin._batch(1.0), laplace.eta_mode + 1.0, laplace.covariance / 400.0, 200, 0,
            stages=1,
        )  # fmt: skip
    assert diagnostics["pareto_k"] >= PARETO_K_LIMIT
