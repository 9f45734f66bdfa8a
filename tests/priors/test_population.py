"""PopulationModel, ResidualError, Covariate: definitions, draws, likelihood, NumPyro models."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from twinsim.priors import (
    Covariate,
    CovariateRangeWarning,
    ObservationData,
    PopulationModel,
    PopulationModelError,
    ResidualError,
    one_compartment,
)
from twinsim.simulators import Dose, DosingEvents, predict_linear, simulate


def _model(**changes):
    kwargs = dict(
        name="pm",
        structural=one_compartment(absorption=True),
        theta={"cl": 2.8, "v": 31.5, "ka": 1.5, "f_oral": 1.0, "cl_wt": 0.75, "cl_cyp": 0.5},
        parameters=lambda th, cov: {
            "cl": th.cl
            * (cov["weight"] / 70.0) ** th.cl_wt
            * jnp.array([1.0, 1.0]).at[1].set(th.cl_cyp)[cov["genotype"]],
            "v": th.v * cov["weight"] / 70.0,
        },
        random_effects=("cl", "v", "ka"),
        omega=np.array([[0.09, 0.03, 0.0], [0.03, 0.04, 0.0], [0.0, 0.0, 0.25]]),
        residual={"conc": ResidualError(additive=0.2, proportional=0.1)},
        covariates=(
            Covariate("weight", "kg", 70.0, range=(40.0, 120.0)),
            Covariate("genotype", levels=("*1/*1", "*1/*3")),
        ),
        fixed=("f_oral", "cl_wt"),
    )
    kwargs.update(changes)
    return PopulationModel(**kwargs)


COV = {"weight": np.array([70.0, 140.0, 35.0]), "genotype": np.array(["*1/*1", "*1/*1", "*1/*3"])}


# --------------------------------------------------------------------------- definitions


def test_typical_parameters_apply_power_linear_and_categorical_effects():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CovariateRangeWarning)
        typical = np.asarray(_model().typical_parameters(COV))
    np.testing.assert_allclose(typical[:, 0], [2.8, 2.8 * 2**0.75, 2.8 * 0.5**0.75 * 0.5])
    np.testing.assert_allclose(typical[:, 1], [31.5, 63.0, 15.75])
    np.testing.assert_allclose(typical[:, 2:], [[1.5, 1.0]] * 3)


def test_range_warning_names_the_covariate_and_values():
    with pytest.warns(CovariateRangeWarning, match=r"`weight` outside .*40–120 kg.*140, 35"):
        messages = _model().check_covariates(COV)
    assert len(messages) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _model().check_covariates({"weight": np.array([50.0, 90.0])}) == []


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"random_effects": ("cl", "vmax")}, r"`random_effects` must name distinct structural"),
        ({"omega": np.eye(2)}, r"`omega` must be the \(3, 3\) covariance"),
        ({"omega": np.array([[1, 2, 0], [2, 1, 0], [0, 0, 1.0]])}, r"positive semi-definite"),
        ({"fixed": ("f",)}, r"`fixed` names unknown thetas \['f'\]"),
        ({"residual": {"effect": ResidualError(additive=1.0)}}, r"names output 'effect'"),
    ],
)
def test_definition_errors_name_the_field(changes, match):
    with pytest.raises(PopulationModelError, match=match):
        _model(**changes)


def test_unknown_level_and_missing_covariate_are_reported():
    with pytest.raises(PopulationModelError, match=r"`genotype` has unknown levels \['\*2/\*2'\]"):
        _model().typical_parameters({"weight": np.array([70.0]), "genotype": np.array(["*2/*2"])})
    with pytest.raises(PopulationModelError, match=r"needs covariates \['genotype'\]"):
        _model().typical_parameters({"weight": np.array([70.0])})


def test_model_is_immutable_and_replace_returns_a_new_model():
    pm = _model()
    with pytest.raises(AttributeError, match="immutable"):
        pm.name = "x"
    other = pm.replace(theta={**pm.theta, "cl": 5.0})
    assert other.theta["cl"] == 5.0 and pm.theta["cl"] == 2.8


# --------------------------------------------------------------------------- residual error


def test_residual_kinds_and_sd():
    assert ResidualError(additive=1.0).kind == "additive"
    assert ResidualError(proportional=0.1).kind == "proportional"
    assert ResidualError(additive=1.0, proportional=0.1).kind == "combined"
    assert ResidualError(proportional=0.1, exponential=True).kind == "exponential"
    f = jnp.array([0.0, 10.0])
    np.testing.assert_allclose(ResidualError(proportional=0.1).sd(f), [0.0, 1.0])
    np.testing.assert_allclose(
        ResidualError(additive=0.5, proportional=0.1).sd(f), [0.5, math.sqrt(1.25)]
    )
    with pytest.raises(PopulationModelError, match=r"needs `additive` > 0 or `proportional` > 0"):
        ResidualError()
    with pytest.raises(PopulationModelError, match=r"`ResidualError.additive` must be 0"):
        ResidualError(additive=1.0, proportional=0.1, exponential=True)


@pytest.mark.parametrize(
    "error",
    [
        ResidualError(additive=0.7),
        ResidualError(proportional=0.15),
        ResidualError(additive=0.3, proportional=0.1),
        ResidualError(proportional=0.2, exponential=True),
    ],
)
def test_log_likelihood_matches_scipy(error):
    """Densities against scipy.stats (rtol 1e-12); censored points against the normal CDF."""
    y = np.array([1.3, 4.0, 9.5])
    f = np.array([1.0, 5.0, 9.0])
    got = np.asarray(error.log_likelihood(y, f))
    if error.exponential:
        expected = stats.lognorm.logpdf(y, s=error.proportional, scale=f)
    else:
        sd = np.sqrt(error.additive**2 + (error.proportional * f) ** 2)
        expected = stats.norm.logpdf(y, f, sd)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # M3: an observation below the limit contributes P(Y < LLOQ)
    lloq = 1.2
    censored = np.array([True, False, False])
    got = np.asarray(error.log_likelihood(y, f, censored=censored, lloq=lloq))
    if error.exponential:
        below = stats.norm.logcdf((np.log(lloq) - np.log(f[0])) / error.proportional)
    else:
        sd0 = math.sqrt(error.additive**2 + (error.proportional * f[0]) ** 2)
        below = stats.norm.logcdf((lloq - f[0]) / sd0)
    np.testing.assert_allclose(got[0], below, rtol=1e-12)
    np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-12)


def test_censoring_by_default_below_the_stored_limit():
    err = ResidualError(additive=1.0, lloq=0.5)
    ll = np.asarray(err.log_likelihood(np.array([0.1, 2.0]), np.array([1.0, 2.0])))
    np.testing.assert_allclose(ll[0], stats.norm.logcdf(-0.5), rtol=1e-12)
    np.testing.assert_allclose(ll[1], stats.norm.logpdf(0.0), rtol=1e-12)


def test_residual_samples_have_the_stated_sd():
    """SD of 200,000 proportional draws within 1 % of 10 % (a 4.5-sigma band: failure rate < 1e-5)."""
    err = ResidualError(proportional=0.1)
    y = np.asarray(err.sample(jax.random.key(0), jnp.full(200_000, 10.0)))
    assert abs(y.std() - 1.0) < 0.01


# --------------------------------------------------------------------------- draws


def test_full_covariance_draws_reproduce_omega():
    """Sample covariance of η over 20,000 subjects vs Ω: each entry within 4 standard errors
    (SE of a covariance ≈ sqrt((σ_ii σ_jj + σ_ij²)/n)); seed fixed, failure rate < 1e-3."""
    pm = _model()
    n = 20_000
    cov = {"weight": np.full(n, 70.0), "genotype": np.full(n, "*1/*1")}
    sample = pm.sample_parameters(11, cov, np.arange(n))
    eta = np.asarray(sample.eta)
    estimate = np.cov(eta.T)
    omega = pm.omega
    se = np.sqrt((np.outer(np.diag(omega), np.diag(omega)) + omega**2) / n)
    assert np.all(np.abs(estimate - omega) < 4 * se)
    # individual parameters are the typical values times exp(η)
    np.testing.assert_allclose(
        np.asarray(sample.parameters[:, 0, :3]),
        np.asarray(sample.typical[:, :3]) * np.exp(eta),
        rtol=1e-12,
    )


def test_draws_do_not_depend_on_the_batch():
    pm = _model()
    cov = {
        "weight": np.linspace(50, 100, 7),
        "genotype": np.array(["*1/*1", "*1/*3"] * 3 + ["*1/*1"]),
    }
    everyone = pm.sample_parameters(5, cov, np.arange(7), n_occasions=1)
    pick = [2, 5]
    some = pm.sample_parameters(
        5, {k: v[pick] for k, v in cov.items()}, np.array(pick), n_occasions=1
    )
    assert np.array_equal(np.asarray(everyone.parameters)[pick], np.asarray(some.parameters))


def test_simulation_is_deterministic_and_batch_invariant_with_residual_error():
    pm = _model()
    cov = {
        "weight": np.array([60.0, 80.0, 90.0]),
        "genotype": np.array(["*1/*1", "*1/*3", "*1/*1"]),
    }
    events = DosingEvents.repeated(320.0, 24.0, 1, compartment=0)
    times = jnp.array([0.5, 2.0, 8.0, 24.0])
    full = pm.simulate(3, cov, events, times, ids=[0, 1, 2])
    again = pm.simulate(3, cov, events, times, ids=[0, 1, 2])
    alone = pm.simulate(3, {k: v[1:2] for k, v in cov.items()}, events, times, ids=[1])
    assert np.array_equal(np.asarray(full.observed), np.asarray(again.observed))
    assert np.array_equal(np.asarray(full.observed)[1], np.asarray(alone.observed)[0])
    assert not np.allclose(np.asarray(full.observed), np.asarray(full.prediction))
    # the prediction is the structural model at the drawn parameters
    direct = simulate(pm.structural, full.sample.parameters[:, 0], events.broadcast(3), times)
    np.testing.assert_allclose(np.asarray(full.prediction), np.asarray(direct.outputs), rtol=1e-9)


def test_between_occasion_variability():
    """κ on CL per occasion: occasion 2's trajectory uses CL·exp(η + κ₂); κ's sample SD over
    4,000 subjects within 10 % of ω_occ (failure rate < 1e-6)."""
    pm = PopulationModel(
        name="bov",
        structural=one_compartment(),
        theta={"cl": 5.0, "v": 50.0},
        random_effects=("cl",),
        omega=[0.04],
        occasion_effects=("cl",),
        occasion_omega=[0.0225],
        residual={"conc": ResidualError(additive=0.01)},
    )
    # two separate doses a week apart: occasion 1 from 0 h, occasion 2 from 168 h
    events = DosingEvents.from_doses(
        [[Dose(0.0, 100.0, compartment=0), Dose(168.0, 100.0, compartment=0)]]
    )
    times = jnp.array([2.0, 170.0])
    sim = pm.simulate(
        1, None, events, times, ids=range(4000), occasions=[0.0, 168.0], residual=False
    )
    kappa = np.asarray(sim.sample.kappa)[..., 0]
    assert kappa.shape == (4000, 2)
    assert abs(kappa.std() / 0.15 - 1) < 0.1
    cl = np.asarray(sim.sample.parameters)[:, :, 0]
    np.testing.assert_allclose(cl[:, 1] / cl[:, 0], np.exp(kappa[:, 1] - kappa[:, 0]), rtol=1e-12)
    expected = predict_linear(
        pm.structural, sim.sample.parameters[:, 1], events.broadcast(4000), times
    )
    np.testing.assert_allclose(
        np.asarray(sim.prediction)[:, 1], np.asarray(expected)[:, 1], rtol=1e-12
    )


# --------------------------------------------------------------------------- superposition


def test_superposition_matches_the_engine():
    """Boluses, infusions (rate and duration), lags and F against simulate(): rtol 1e-9."""
    from twinsim.priors import two_compartment

    model = two_compartment(absorption=True, lag=True)
    rng = np.random.default_rng(0)
    params = np.column_stack(
        [
            rng.uniform(2, 8, 5), rng.uniform(20, 60, 5), rng.uniform(1, 10, 5),
            rng.uniform(30, 90, 5), rng.uniform(0.5, 2, 5), rng.uniform(0.5, 1, 5),
            rng.uniform(0, 1, 5),
        ]
    )  # fmt: skip
    doses = [
        [
            Dose(0.0, 100.0, compartment=0),
            Dose(12.0, 50.0, compartment=1, rate=25.0),
            Dose(30.0, 80.0, compartment=0, interval=12.0, additional=2),
        ],
        [Dose(0.0, 200.0, compartment=1, duration=1.5)],
        [Dose(5.0, 100.0, compartment=0)],
        [Dose(0.0, 100.0, compartment=1), Dose(0.0, 100.0, compartment=0)],
        [Dose(1.0, 60.0, compartment=1, rate=10.0), Dose(4.0, 60.0, compartment=1, rate=10.0)],
    ]
    events = DosingEvents.from_doses(doses)
    times = np.sort(rng.uniform(0, 72, (5, 40)), axis=1)
    times[:, 0] = 0.0
    times[0, 5] = 12.0  # an output exactly at a dose time: pre-dose, as the engine
    times[0] = np.sort(times[0])
    got = predict_linear(model, params, events, times)
    want = simulate(model, params, events, times).outputs
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-12)


def test_superposition_gradient_matches_finite_differences():
    model = one_compartment(absorption=True)
    events = DosingEvents.repeated(320.0, 12.0, 3, compartment=0)
    times = jnp.linspace(0.5, 30.0, 12)

    def total(p):
        return predict_linear(model, p[None], events, times).sum()

    p = jnp.array([2.8, 31.5, 1.5, 1.0])
    grad = np.asarray(jax.grad(total)(p))
    for j in range(4):
        step = 1e-6 * float(p[j])
        e = jnp.zeros(4).at[j].set(step)
        fd = (float(total(p + e)) - float(total(p - e))) / (2 * step)
        assert grad[j] == pytest.approx(fd, rel=1e-6)


# --------------------------------------------------------------------------- NumPyro models


def _data(pm, n=4, seed=2):
    cov = {"weight": np.full(n, 70.0), "genotype": np.array(["*1/*1"] * n)}
    events = DosingEvents.repeated(320.0, 24.0, 1, n_subjects=n, compartment=0)
    times = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0])
    sim = pm.simulate(seed, cov, events, times, ids=range(n))
    return ObservationData.build(
        events, [times] * n, np.asarray(sim.observed[..., 0]), covariates=cov, lloq=0.05
    )


def test_population_model_log_density_is_the_hand_computed_sum():
    """Potential energy at a point = −(priors + Σ log-likelihood), computed by hand.

    Structural thetas have a log-normal prior (log-SD 2); a covariate effect (``cl_cyp``,
    either sign possible) a normal prior with SD ``max(|θ₀|, 1)``."""
    from numpyro.infer.util import log_density

    pm = _model()
    data = _data(pm)
    model = pm.population_model(data, omega_structure="diagonal")
    eta = jnp.array([[0.1, -0.2, 0.3]] * data.n_subjects)
    point = {
        "theta_cl": 3.0, "theta_v": 30.0, "theta_ka": 1.2, "theta_cl_cyp": 0.6,
        "omega_sd": jnp.array([0.3, 0.2, 0.5]), "eta": eta,
        "sigma_conc_additive": 0.25, "sigma_conc_proportional": 0.12,
    }  # fmt: skip
    got, _ = log_density(model, (), {}, point)
    theta = {**pm.theta, "cl": 3.0, "v": 30.0, "ka": 1.2, "cl_cyp": 0.6}
    params = pm.replace(theta=theta).individual_parameters(data.covariates, eta)
    ll = pm.log_likelihood(data, params, {"conc": {"additive": 0.25, "proportional": 0.12}}).sum()
    prior = sum(
        stats.lognorm.logpdf(point[f"theta_{k}"], s=2.0, scale=pm.theta[k])
        for k in ("cl", "v", "ka")
    )
    prior += stats.norm.logpdf(0.6, loc=pm.theta["cl_cyp"], scale=max(abs(pm.theta["cl_cyp"]), 1))
    prior += stats.halfnorm.logpdf([0.3, 0.2, 0.5], scale=1.0).sum()
    prior += stats.norm.logpdf(np.asarray(eta), 0, [0.3, 0.2, 0.5]).sum()
    prior += stats.halfnorm.logpdf(0.25, scale=5 * 0.2) + stats.halfnorm.logpdf(0.12, scale=5 * 0.1)
    np.testing.assert_allclose(float(got), float(ll) + prior, rtol=1e-10)


def test_individual_model_prior_weight_scales_the_prior():
    from numpyro.infer.util import log_density

    pm = _model()
    data = _data(pm, n=1)
    eta = jnp.array([[0.2, 0.1, -0.3]])
    values = []
    for w in (1.0, 0.25):
        model = pm.individual_model(data, prior_weight=w)
        z = jnp.linalg.solve(jnp.linalg.cholesky(jnp.asarray(pm.omega)) / math.sqrt(w), eta[0])
        values.append(float(log_density(model, (), {}, {"eta_z": z[None]})[0]))
    # non-centred: log p(z) differs by the log-Jacobian; compare the data parts instead
    params = pm.individual_parameters(data.covariates, eta)
    ll = float(pm.log_likelihood(data, params).sum())
    for w, value in zip((1.0, 0.25), values, strict=True):
        z = np.linalg.solve(np.linalg.cholesky(pm.omega) / math.sqrt(w), np.asarray(eta[0]))
        np.testing.assert_allclose(value, ll + stats.norm.logpdf(z).sum(), rtol=1e-10)
    with pytest.raises(PopulationModelError, match=r"`prior_weight` must be a finite number > 0"):
        pm.individual_model(data, prior_weight=0.0)


def test_observation_data_validation():
    events = DosingEvents.repeated(100.0, 24.0, 1, n_subjects=2, compartment=0)
    with pytest.raises(PopulationModelError, match=r"`times\[0\]` must be sorted"):
        ObservationData.build(events, [[2.0, 1.0], [1.0]], [[1.0, 1.0], [1.0]])
    with pytest.raises(PopulationModelError, match=r"`observed\[1\]\[0\]` is nan"):
        ObservationData.build(events, [[1.0], [1.0]], [[1.0], [np.nan]])
    data = ObservationData.build(events, [[1.0, 2.0], [1.0]], [[0.01, 1.0], [2.0]], lloq=0.1)
    assert np.asarray(data.censored).tolist() == [[True, False], [False, False]]


def test_docstring_examples_run():
    import doctest

    from twinsim.priors import _population, _segments
    from twinsim.simulators import _superposition

    for module in (_population, _superposition, _segments):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 3 and result.failed == 0, module.__name__


def test_population_model_with_occasions_uses_each_occasions_parameters():
    """BOV in inference: the likelihood of an observation uses η + κ of its occasion."""
    from numpyro.infer.util import log_density

    pm = PopulationModel(
        name="bov",
        structural=one_compartment(),
        theta={"cl": 5.0, "v": 50.0},
        random_effects=("cl",),
        omega=[0.04],
        occasion_effects=("cl",),
        occasion_omega=[0.0225],
        residual={"conc": ResidualError(proportional=0.1)},
    )
    events = DosingEvents.from_doses(
        [[Dose(0.0, 100.0, compartment=0), Dose(168.0, 100.0, compartment=0)]] * 2
    )
    times = [[2.0, 6.0, 170.0, 174.0]] * 2
    data = ObservationData.build(
        events, times, [[1.7, 1.2, 1.9, 1.3], [1.5, 1.1, 1.6, 1.2]], occasion=[[0, 0, 1, 1]] * 2
    )
    eta = jnp.array([[0.1], [-0.2]])
    kappa_z = jnp.array([[0.5], [-1.0], [0.0], [2.0]])  # (subject, occasion) flattened
    point = {
        "theta_cl": 5.0, "theta_v": 50.0, "omega_sd": jnp.array([0.2]), "eta": eta,
        "occasion_sd": jnp.array([0.15]), "kappa_z": kappa_z,
        "sigma_conc_proportional": 0.1,
    }  # fmt: skip
    model = pm.population_model(data)
    got, trace = log_density(model, (), {}, point)
    kappa = np.asarray(kappa_z).reshape(2, 2, 1) * 0.15
    np.testing.assert_allclose(np.asarray(trace["kappa"]["value"]), kappa, rtol=1e-12)
    cl = 5.0 * np.exp(np.asarray(eta)[:, :1] + kappa[..., 0])  # [subject, occasion]
    expected_ll = 0.0
    for i in range(2):
        for j, t in enumerate(times[i]):
            occ = int(t >= 168.0)
            k = cl[i, occ] / 50.0
            f = 100.0 / 50.0 * np.exp(-k * t) + (
                100.0 / 50.0 * np.exp(-k * (t - 168.0)) if t > 168 else 0.0
            )
            y = float(np.asarray(data.observed)[i, j])
            expected_ll += stats.norm.logpdf(y, f, 0.1 * f)
    ll = pm.log_likelihood(data, pm._apply(jnp.asarray([[5.0, 50.0]] * 2), eta, jnp.asarray(kappa)))
    np.testing.assert_allclose(float(ll.sum()), expected_ll, rtol=1e-10)
    assert np.isfinite(float(got))
