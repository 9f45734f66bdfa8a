"""The patient twin: MAP/Laplace and NUTS individualisation, predictions, recommendations.

The MAP is checked against an independent implementation of the same objective: the
log density of η under N(0, Ω / w) (scipy.stats) plus the log-likelihood of the levels
computed with numpy/scipy from the engine's predictions (combined error, M3 censoring
with ``norm.logcdf``), minimised by scipy.optimize (Nelder–Mead). Tolerance: η within
2e-3 (log scale, i.e. 0.2 % on a parameter), objective within 1e-5 relative.

Statistical tests use fixed seeds; their tolerances (stated per test) are several Monte
Carlo standard errors wide, so a correct implementation fails them far less than 1 in
1000 runs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from twinsim.priors import DRUG_LIBRARY, ObservationData, drug_metadata
from twinsim.simulators import DosingEvents
from twinsim.simulators._compilations import recorded_compilations
from twinsim.twin import (
    Observation,
    PatientTwin,
    PatientTwinError,
    Regimen,
    Target,
    default_safety,
    default_target,
)
from twinsim.twin._compiled import _engine

VANCO = {"weight": 80.0, "crcl": 60.0, "dialysis": 0.0}


def _vanco_twin(levels=((37.0, 32.0), (47.5, 14.0)), *, n_doses=4, extra=()):
    twin = PatientTwin.create("vancomycin", VANCO)
    twin = twin.with_doses(*[twin.dose(12.0 * k, 1000.0) for k in range(n_doses)])
    obs = [Observation(t, v) for t, v in levels]
    return twin.with_observations(*obs, *extra)


def _typical_conc(twin, times):
    pm = twin.model
    params = pm.typical_parameters(twin.covariates)
    events = DosingEvents.from_doses([list(twin.doses)])
    return np.asarray(pm.predict(params, events, np.asarray(times)[None]))[0, :, 0]


# --------------------------------------------------------------------------- MAP vs scipy


def _scipy_objective(twin, prior_weight):
    """−(log N(η; 0, Ω/w) + log p(y | η)) written with numpy/scipy, independently of the
    twin's own objective (only the predictions come from the engine)."""
    pm = twin.model
    err = pm.residual["conc"]
    events = DosingEvents.from_doses([list(twin.doses)])
    times = np.array([[o.time for o in twin.observations]])
    values = np.array([o.value for o in twin.observations])
    censored = np.array([o.censored for o in twin.observations])
    lloq = np.array([o.lloq if o.lloq is not None else np.nan for o in twin.observations])
    omega = np.asarray(pm.omega) / prior_weight

    typical = pm.typical_parameters(twin.covariates)
    # only the engine's predictions are shared with the twin (compiled once for speed)
    predict = jax.jit(lambda eta: pm.predict(pm._apply(typical, eta[None]), events, times))

    def objective(eta):
        f = np.asarray(predict(jnp.asarray(eta)))[0, :, 0]
        sd = np.sqrt(err.additive**2 + (err.proportional * f) ** 2)
        ll = np.where(
            censored,
            scipy.stats.norm.logcdf(np.nan_to_num(lloq), loc=f, scale=sd),
            scipy.stats.norm.logpdf(values, loc=f, scale=sd),
        ).sum()
        prior = scipy.stats.multivariate_normal.logpdf(eta, np.zeros(len(eta)), omega)
        # the twin drops w-dependent constants of the weighted prior; so does the comparison
        return -(ll + prior)

    return objective


@pytest.mark.parametrize(
    ("prior_weight", "blq"),
    [(1.0, False), (0.5, True)],
    ids=["bayes", "weighted-with-blq"],
)
def test_map_agrees_with_scipy(prior_weight, blq):
    extra = (Observation(60.0, 0.0, below_lloq=True, lloq=5.0),) if blq else ()
    twin = _vanco_twin(n_doses=5 if blq else 4, extra=extra)
    post = twin.fit("map", prior_weight=prior_weight)
    assert post.diagnostics["converged"]
    objective = _scipy_objective(twin, prior_weight)
    result = scipy.optimize.minimize(
        objective,
        np.zeros(3),
        method="Nelder-Mead",
        options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 20000, "maxfev": 20000},
    )
    assert result.success
    np.testing.assert_allclose(post.eta_mode, result.x, atol=2e-3)
    # objectives differ by the constant of the normal density: compare differences
    assert objective(post.eta_mode) <= result.fun + 1e-6 * abs(result.fun)


def test_nuts_potential_is_the_population_individual_model():
    """The density the twin's NUTS samples is ``PopulationModel.individual_model``'s (same
    whitened site, same prior weight): minus the potential equals NumPyro's log density
    of that model less its normal constant, to 1e-9, at random points."""
    from numpyro.infer.util import log_density

    twin = _vanco_twin()
    pm = twin.model
    w = 0.7
    obs = twin.observations
    data = ObservationData.build(
        DosingEvents.from_doses([list(twin.doses)]),
        [[o.time for o in obs]],
        [[o.value for o in obs]],
        covariates={k: v for k, v in twin.covariates.items()},
    )
    reference = pm.individual_model(data, prior_weight=w)
    engine = _engine(pm)
    batch = twin._batch(w)
    rng = np.random.default_rng(1)
    for _ in range(3):
        z = rng.normal(size=3)
        ours = -float(engine.potential(jnp.asarray(z), batch)) - 1.5 * np.log(2 * np.pi)
        theirs, _ = log_density(reference, (), {}, {"eta_z": z[None]})
        assert ours == pytest.approx(float(theirs), rel=1e-9, abs=1e-9)


# --------------------------------------------------------------------------- posterior


def test_laplace_and_nuts_agree_for_a_well_identified_patient():
    """Twelve levels over four dosing intervals, consistent with one parameter set (the
    typical profile times 1.3), identify CL well: the NUTS posterior (2 chains × 300
    draws) has its median within 0.3 posterior SDs of the Laplace mode and an SD within
    ±35 % of the Laplace SD (Monte Carlo SE of a median ≈ 0.1 SD with ESS ≥ 150)."""
    twin0 = _vanco_twin(levels=())
    times = np.array([1.5, 6.0, 11.9, 13.5, 18.0, 23.9, 25.5, 30.0, 35.9, 37.5, 42.0, 47.9])
    levels = 1.3 * _typical_conc(twin0, times)
    twin = twin0.with_observations(*[Observation(t, v) for t, v in zip(times, levels, strict=True)])
    laplace = twin.fit("laplace")
    nuts = twin.fit("nuts", num_warmup=300, num_samples=300, num_chains=2, seed=3)
    assert nuts.samples.shape == (600, 3)
    assert nuts.diagnostics["divergences"] <= 3
    median, sd = np.median(nuts.samples, axis=0), nuts.samples.std(axis=0)
    laplace_sd = np.sqrt(np.diag(laplace.covariance))
    cl = twin.model.random_effects.index("cl")
    assert abs(laplace.eta_mode[cl] - median[cl]) < 0.3 * sd[cl]
    assert laplace_sd[cl] == pytest.approx(sd[cl], rel=0.35)


def test_levels_far_from_typical_move_the_prediction_towards_the_data():
    """Levels twice the typical prediction: the fitted prediction at the sampling times
    lies between the population prediction and the data, closer to the data."""
    twin0 = _vanco_twin(levels=())
    times = [37.0, 47.5]
    typical = _typical_conc(twin0, times)
    measured = 2.0 * typical
    twin = twin0.with_observations(
        *[Observation(t, v) for t, v in zip(times, measured, strict=True)]
    )
    post = twin.fit("map")
    pred = post.predict({"given doses": []}, times=[36.0, 37.0, 47.5], n_draws=200)
    fitted = pred.median[0, 1:, 0]
    assert np.all(fitted > typical)
    assert np.all(np.abs(fitted - measured) < np.abs(typical - measured))
    assert post.individual_parameters()["cl"] < twin.model.typical_parameters(twin.covariates)[0, 0]


def test_prior_weight_moves_the_fit_between_population_and_data():
    """|η̂| falls as the prior weight grows (0.2 → 1 → 5 → 1000), and a weight of 1000
    gives practically the population values (|η̂| < 0.05)."""
    twin = _vanco_twin(levels=((37.0, 45.0), (47.5, 25.0)))
    norms = [
        float(np.linalg.norm(twin.fit("map", prior_weight=w).eta_mode))
        for w in (0.2, 1.0, 5.0, 1000.0)
    ]
    assert norms[0] > norms[1] > norms[2] > norms[3]
    assert norms[3] < 0.05
    prior = twin.fit("prior")
    np.testing.assert_allclose(prior.covariance, twin.model.omega)


def test_below_lloq_is_censored_not_a_value():
    """A level reported below 5 mg/L at a time the typical prediction is ~10 mg/L pulls
    the fit to a faster clearance; as a censored observation it differs from plugging
    in the limit as a value (M3 is not substitution)."""
    twin = _vanco_twin(levels=((37.0, 30.0),), n_doses=4)
    typical_later = _typical_conc(twin, [58.0])[0]
    assert typical_later > 6.0
    blq = twin.with_observations(Observation(58.0, math.nan, below_lloq=True, lloq=5.0))
    substituted = twin.with_observations(Observation(58.0, 5.0))
    cl = twin.model.random_effects.index("cl")
    eta_base = twin.fit("map").eta_mode[cl]
    eta_blq = blq.fit("map").eta_mode[cl]
    eta_sub = substituted.fit("map").eta_mode[cl]
    assert eta_blq > eta_base
    assert abs(eta_blq - eta_sub) > 1e-3
    # the censored level lowers the predicted level at its time
    at = {"given doses": []}
    with_blq = blq.fit("map").predict(at, times=[57.0, 58.0], n_draws=200).median[0, 1, 0]
    without = twin.fit("map").predict(at, times=[57.0, 58.0], n_draws=200).median[0, 1, 0]
    assert with_blq < without


# --------------------------------------------------------------------------- predict and recommend


def test_predict_returns_bands_metrics_and_pta():
    twin = _vanco_twin()
    post = twin.fit("laplace")
    regimens = {"low": Regimen(500.0, 12.0), "high": Regimen(2000.0, 12.0), "stop": []}
    pred = post.predict(regimens, horizon_h=48.0, n_draws=200)
    assert pred.median.shape == (3, pred.times.size, 1)
    assert np.all(pred.lower <= pred.median + 1e-12) and np.all(pred.median <= pred.upper + 1e-12)
    # a linear model: 4 times the new doses, 4 times the AUC they add (same draws; 2 %
    # for the log-down rule of summed profiles)
    low, high, stop = (pred.draw_metrics[i]["auc24"] for i in range(3))
    np.testing.assert_allclose(high - stop, 4.0 * (low - stop), rtol=0.02)
    assert pred.table()[0]["regimen"] == "low"
    assert pred.descriptions[0] == "500 mg every 12 h"
    assert np.all((pred.pta >= 0.0) & (pred.pta <= 1.0))
    draws = pred.draw_metrics[1]["auc24"]
    assert pred.pta[1] == pytest.approx(np.mean((draws >= 400) & (draws <= 600)))


def test_recommend_uses_the_strength_grid_and_orders_by_pta():
    twin = _vanco_twin()
    post = twin.fit("map")
    strengths = (500.0, 750.0, 1000.0, 1250.0, 1500.0)
    recs = post.recommend(strengths_mg=strengths, intervals_h=(12.0, 24.0), top=4, n_draws=200)
    assert len(recs) == 4
    for rec in recs:
        assert rec.regimen.amount_mg in strengths
        assert rec.regimen.loading_mg is None or rec.regimen.loading_mg in strengths
        assert all(d.amount in strengths for d in rec.doses)
        assert rec.why and "%" in rec.why
        assert rec.p_unsafe <= default_safety("vancomycin").limit
    ptas = [r.pta for r in recs]
    assert ptas == sorted(ptas, reverse=True)
    # no safe candidate of the grid does better than the first recommendation
    grid = [Regimen(a, tau) for a in strengths for tau in (12.0, 24.0)]
    pred = post.predict(grid, n_draws=200)
    safe = pred.p_unsafe <= default_safety("vancomycin").limit
    assert recs[0].pta >= pred.pta[safe].max() - 1e-12


@pytest.mark.parametrize(
    ("crcl", "scale"), [(30.0, 1.0), (60.0, 0.6), (60.0, 1.6), (110.0, 1.0), (140.0, 0.8)]
)
def test_shortlisted_search_finds_the_exhaustive_best(crcl, scale):
    """The recommendation scores only the 16 candidates nearest mid-target at the mode:
    its best PTA equals the best of all default candidates within the label (scored on the
    same draws)
    (renal function from poor to augmented, levels from 0.6 to 1.6 × typical)."""
    twin0 = PatientTwin.create("vancomycin", {**VANCO, "crcl": crcl})
    twin0 = twin0.with_doses(*[twin0.dose(12.0 * k, 1000.0) for k in range(4)])
    times = [37.0, 47.5]
    levels = scale * _typical_conc(twin0, times)
    post = twin0.with_observations(
        *[Observation(t, v) for t, v in zip(times, levels, strict=True)]
    ).fit()
    short = post.recommend(top=1, n_draws=100)[0]
    full = post.recommend(top=1, n_draws=100, shortlist=None)[0]
    within_label = full.searched - sum("by the label" in why for _, why in full.excluded)
    assert (short.searched, short.scored, full.scored) == (full.searched, 16, within_label)
    assert short.pta == pytest.approx(full.pta, abs=1e-12)


@pytest.mark.isolated  # see pyproject.toml
def test_nuts_with_one_chain():
    nuts = _vanco_twin().fit("nuts", num_warmup=100, num_samples=100, num_chains=1)
    assert nuts.samples.shape == (100, 3)
    assert "max_r_hat" not in nuts.diagnostics  # needs two chains


def test_target_override_changes_the_recommendation():
    twin = _vanco_twin()
    post = twin.fit("map")
    default = post.recommend(top=1, n_draws=100, loading=False)[0]
    trough = Target("conc", 5.0, 8.0, metric="trough", unit="mg/L")
    low = post.recommend(target=trough, top=1, n_draws=100, loading=False)[0]
    assert "trough" in low.why
    daily = lambda r: r.regimen.amount_mg * 24 / r.regimen.interval_h  # noqa: E731
    assert daily(low) < daily(default)
    # a target set on the twin is used by default
    twin2 = PatientTwin.create("vancomycin", VANCO, twin.doses, twin.observations, target=trough)
    assert twin2.target == trough


def test_default_targets_come_from_the_library():
    vanco, warfarin, theo = (default_target(d) for d in ("vancomycin", "warfarin", "theophylline"))
    assert (vanco.metric, vanco.low, vanco.high, vanco.output) == ("auc24", 400.0, 600.0, "conc")
    assert (warfarin.metric, warfarin.low, warfarin.high, warfarin.output) == (
        "inr",
        2.0,
        3.0,
        "inr",
    )
    assert (theo.low, theo.high, theo.unit) == (10.0, 20.0, "mg/L")
    assert vanco.source == drug_metadata("vancomycin")["therapeutic_target"]["source"]


# --------------------------------------------------------------------------- compilation


def test_one_more_observation_does_not_recompile():
    """Observations and doses are padded to bucket sizes and passed as arguments: a
    second fit with one more level (3 → 4, one bucket) adds no compilation."""
    twin = _vanco_twin(levels=((37.0, 32.0), (42.0, 22.0), (47.5, 14.0)))
    post = twin.fit("map")
    post.predict(Regimen(1000.0, 12.0), n_draws=50)
    before = PatientTwin.compilations("vancomycin")
    more = twin.with_observations(Observation(30.0, 18.0))
    post2 = more.fit("map")
    post2.predict(Regimen(1250.0, 12.0), n_draws=50)
    assert PatientTwin.compilations("vancomycin") == before
    assert not np.allclose(post.eta_mode, post2.eta_mode)


def test_a_second_nuts_fit_compiles_nothing():
    """NUTS runs as one compiled program per (warm-up, draws) and bucket sizes: fitting
    the same patient with one more level (same bucket) compiles nothing at all, counted
    by JAX's own compilation events (``/jax/core/compile/backend_compile_duration``).
    Regression: NumPyro's ``MCMC.run`` recompiled its sampling loop on every run (14
    programs per vancomycin fit; for warfarin 2 × 16 s, and each compilation kept its
    code mapped until the process ran out of memory mappings)."""
    twin = _vanco_twin(levels=((37.0, 32.0), (42.0, 22.0), (47.5, 14.0)))
    settings = {"num_warmup": 50, "num_samples": 50, "num_chains": 2}
    with recorded_compilations() as compiled:
        first = twin.fit("nuts", seed=1, **settings)
        assert compiled, "the first NUTS fit should have compiled (is the listener blind?)"
        compiled.clear()
        second = twin.with_observations(Observation(30.0, 18.0)).fit("nuts", seed=1, **settings)
    assert compiled == [], f"the second NUTS fit compiled {compiled}"
    assert second.samples.shape == first.samples.shape == (100, 3)
    assert not np.allclose(first.samples, second.samples)


# --------------------------------------------------------------------------- errors


def test_clear_errors():
    with pytest.raises(PatientTwinError, match=r"not in the library.*known drugs: 'theophylline'"):
        PatientTwin.create("vancomicin", VANCO)
    with pytest.raises(PatientTwinError, match=r"needs covariates \['crcl'\]"):
        PatientTwin.create("vancomycin", {"weight": 80.0, "dialysis": 0})
    twin = PatientTwin.create("vancomycin", VANCO)
    with pytest.raises(PatientTwinError, match=r"before any dose \(no dose is recorded\)"):
        twin.with_observations(Observation(2.0, 10.0))
    dosed = twin.with_doses(twin.dose(10.0, 1000.0))
    with pytest.raises(
        PatientTwinError, match=r"at 5 h is before any dose \(the first dose is at 10 h\)"
    ):
        dosed.with_observations(Observation(5.0, 10.0))
    with pytest.raises(PatientTwinError, match=r"`Observation.output` 'inr' cannot be observed"):
        dosed.with_observations(Observation(12.0, 2.0, output="inr"))
    with pytest.raises(PatientTwinError, match=r"below_lloq` needs the limit"):
        Observation(12.0, 0.0, below_lloq=True)
    with pytest.raises(
        PatientTwinError,
        match=r"`method` must be one of 'map', 'laplace', 'importance', 'nuts', 'prior', got 'mcmc'",
    ):
        dosed.fit("mcmc")
    with pytest.raises(PatientTwinError, match=r"`prior_weight` must be a finite number > 0"):
        dosed.fit(prior_weight=0.0)
    with pytest.raises(PatientTwinError, match=r"`Target.metric` must be one of"):
        Target("conc", 1.0, 2.0, metric="peak")
    with pytest.raises(PatientTwinError, match=r"`route` 'oral' is not a route"):
        dosed.dose(12.0, 500.0, route="oral")


def test_model_outside_the_library_needs_a_target_to_recommend():
    pm = DRUG_LIBRARY["vancomycin"].replace(name="custom_vanco")
    twin = PatientTwin.create(pm, VANCO)
    twin = twin.with_doses(twin.dose(0.0, 1000.0, infusion_h=1.0))
    assert twin.target is None
    with pytest.raises(PatientTwinError, match=r"`target` is needed"):
        twin.fit().recommend()


def test_baseline_outputs_may_be_observed_before_the_first_dose():
    """An INR at the first dose is a baseline, not a drug level: allowed."""
    cov = {"age": 60.0, "cyp2c9": "*1/*1", "vkorc1": "G/A"}
    twin = PatientTwin.create("warfarin", cov)
    twin = twin.with_doses(twin.dose(0.0, 5.0)).with_observations(
        Observation(0.0, 1.0, output="inr")
    )
    assert twin.observations[0].output == "inr"
    assert twin.route == "oral"


def test_a_regimen_forecast_alone_is_the_same_as_with_others():
    """The forecast keeps recent regimens' trajectories: a what-if that changes one regimen
    computes that one only. Its numbers must not depend on what it was computed with —
    warfarin (semilinear engine; regimens on two threads, a regimen alone its draws in two
    halves on two threads) and a fresh cache give the same bits."""
    from twinsim.twin import _prediction

    twin = PatientTwin.create(
        "warfarin", {"age": 62.0, "weight": 78.0, "female": 1, "cyp2c9": "*1/*3", "vkorc1": "A/A"}
    )
    twin = twin.with_doses(*[twin.dose(24.0 * k, 5.0) for k in range(3)])
    post = twin.fit("map")
    regimens = {
        f"{mg} mg": [twin.dose(72.0 + 24.0 * k, float(mg)) for k in range(5)] for mg in (2, 3, 4)
    }
    together = post.predict(regimens, horizon_h=120.0, n_draws=80, seed=5)
    _prediction.clear_kept_forecasts()
    alone = post.predict({"3 mg": regimens["3 mg"]}, horizon_h=120.0, n_draws=80, seed=5)
    np.testing.assert_array_equal(alone.median[0], together.median[1])
    np.testing.assert_array_equal(alone.upper[0], together.upper[1])


def test_kept_forecasts_stay_within_their_budget(monkeypatch):
    """The kept forecasts' byte count follows the entries as they come and go (it is kept,
    not summed at each eviction: summing made a 1,000-patient cohort's recommendations
    quadratic) and the oldest are dropped past the budget, never the current forecast's."""
    from twinsim.twin import _prediction

    _prediction.clear_kept_forecasts()
    monkeypatch.setattr(_prediction, "_RECENT_BYTES", 40_000)
    twin = PatientTwin.create("vancomycin", {"weight": 70.0, "crcl": 90.0, "dialysis": 0})
    post = twin.fit(method="prior")
    for mg in (500, 750, 1000, 1250, 1500, 1750):
        regimens = {f"{mg} q{h}": [twin.dose(h * k, float(mg)) for k in range(3)]
                    for h in (8, 12, 24)}  # fmt: skip
        post.predict(regimens, horizon_h=48.0, n_draws=40, seed=1)
        kept = list(_prediction._RECENT.values())
        assert _prediction._RECENT.nbytes == sum(map(_prediction._RECENT.size, kept))
        assert len(kept) >= 3
        assert _prediction._RECENT.nbytes <= 40_000 or len(kept) == 3
    assert len(kept) < 18  # the budget dropped the oldest
    _prediction.clear_kept_forecasts()
    assert _prediction._RECENT.nbytes == 0 and not _prediction._RECENT


def test_kept_forecasts_follow_the_target_and_window():
    """A forecast keeps each regimen's bands and per-draw metrics for the next what-if,
    keyed by the target's range and window too: a second forecast of the same regimens
    with another INR range and window gives what a fresh cache gives, not the first
    forecast's metrics."""
    from twinsim.twin import Target, _prediction

    twin = PatientTwin.create(
        "warfarin", {"age": 62.0, "weight": 78.0, "female": 1, "cyp2c9": "*1/*3", "vkorc1": "A/A"}
    )
    twin = twin.with_doses(*[twin.dose(24.0 * k, 5.0) for k in range(3)])
    post = twin.fit("map")
    regimens = {
        f"{mg} mg": [twin.dose(72.0 + 24.0 * k, float(mg)) for k in range(5)] for mg in (2, 6)
    }
    wide = Target("inr", 1.2, 3.0, metric="time_in_range", window_h=96.0)
    narrow = Target("inr", 1.5, 2.0, metric="time_in_range", window_h=48.0)
    options = {"horizon_h": 120.0, "n_draws": 80, "seed": 5}
    first = post.predict(regimens, target=wide, **options)
    second = post.predict(regimens, target=narrow, **options)
    _prediction.clear_kept_forecasts()
    fresh = post.predict(regimens, target=narrow, **options)
    for kept, new in zip(second.draw_metrics, fresh.draw_metrics, strict=True):
        assert kept.keys() == new.keys()
        for name in kept:
            np.testing.assert_array_equal(kept[name], new[name])
    np.testing.assert_array_equal(second.pta, fresh.pta)
    np.testing.assert_array_equal(second.median, first.median)  # the same trajectories
    assert not np.array_equal(
        first.draw_metrics[0]["time_in_range"], second.draw_metrics[0]["time_in_range"]
    )
