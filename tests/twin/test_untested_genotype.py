"""Untested genotypes ("CYP2C9 not tested"): the twin averages over the genotypes of the
patient's ancestry (issue 13, patients as clinicians describe them).

Most checks use a small linear model whose CYP2C9 effect is known exactly: a
one-compartment IV model with CL = 4 L/h · (0.2 + 0.4 · CPIC activity score), V 40 L, a
log-normal IIV of CL (ω 0.2) and 10 % proportional error. Its genotype groups are the
activity scores (0, 0.5, 1, 1.5, 2), the prior of each the Hardy–Weinberg sum of its
diplotypes' frequencies (:func:`twinsim.priors.diplotype_frequencies`, PharmGKB/CPIC allele
frequencies), and the exact marginal likelihood of a patient's levels under each genotype
is a one-dimensional integral over η_CL, computed here independently of the twin by the
trapezoid rule on a fine grid of the closed-form concentrations ``D/V·exp(−CL/V·t)``.
The twin's weights use the Laplace approximation at each genotype's MAP; for 4 levels with
10 % error its error in a log marginal likelihood is a few hundredths (measured below
0.01 in the weights), so the weights are compared within 0.02.

The warfarin test is the clinician's example itself (CYP2C9 not tested, VKORC1 G/A,
European, 70 y) without INR: weights equal the Hardy–Weinberg frequencies and the
recommendation says it averaged over genotypes.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from twinsim.priors import (
    GENES,
    Covariate,
    PopulationModel,
    ResidualError,
    diplotype_frequencies,
    one_compartment,
)
from twinsim.simulators import Dose
from twinsim.twin import Observation, PatientTwin, PatientTwinError, Target, fit_nuts_many

_CYP2C9 = GENES["CYP2C9"]
LEVELS = _CYP2C9.diplotypes()
ACTIVITY = np.array([_CYP2C9.activity_score(d) for d in LEVELS])
OMEGA = 0.2
CL, V, DOSE = 4.0, 40.0, 100.0


def _fraction(score):
    return 0.2 + 0.4 * score


_FRACTION = jnp.asarray(_fraction(ACTIVITY))

#: one instance: twins of one model share its compiled engine
MODEL = PopulationModel(
    name="cyp2c9_iv", structural=one_compartment(), theta={"cl": CL, "v": V},
    parameters=lambda th, cov: {"cl": th.cl * _FRACTION[cov["cyp2c9"]]},
    random_effects=("cl",), omega=[OMEGA**2], residual={"conc": ResidualError(proportional=0.1)},
    covariates=(Covariate("cyp2c9", reference="*1/*1", levels=LEVELS),),
)  # fmt: skip
TARGET = Target("conc", 1.0, 3.0, metric="trough", unit="mg/L")
TIMES = np.array([4.0, 24.0, 48.0, 72.0])


def _levels(score: float, eta: float, noise_seed: int = 1) -> np.ndarray:
    """Levels of a patient with this activity score and η_CL after one 100 mg bolus, with
    10 % proportional error (fixed seed)."""
    cl = CL * _fraction(score) * math.exp(eta)
    exact = DOSE / V * np.exp(-cl / V * TIMES)
    noise = np.random.default_rng(noise_seed).standard_normal(TIMES.size)
    return exact * (1.0 + 0.1 * noise)


def _twin(values=None, ancestry="european", genotype="not tested"):
    twin = PatientTwin.create(
        MODEL, {"cyp2c9": genotype, "ancestry": ancestry}, [Dose(0.0, DOSE, compartment=0)],
        target=TARGET,
    )  # fmt: skip
    if values is None:
        return twin
    return twin.with_observations(*[Observation(t, v) for t, v in zip(TIMES, values, strict=True)])


def _hardy_weinberg_by_score(ancestry="european") -> dict[float, float]:
    out: dict[float, float] = {}
    for diplotype, p in diplotype_frequencies("CYP2C9", ancestry).items():
        score = _CYP2C9.activity_score(diplotype)
        out[score] = out.get(score, 0.0) + p
    return out


def _score(group) -> float:
    return _CYP2C9.activity_score(group.genotypes["cyp2c9"])


def _quadrature_weights(values) -> dict[float, float]:
    """Exact posterior weights by activity score: prior × ∫ p(y | η, g) N(η; 0, ω²) dη, the
    integral by the trapezoid rule on η ∈ [−3, 3] in steps of 1e-4 (the posterior SD of
    η is ~0.01 here, so the rule's error is far below the tolerance)."""
    eta = np.linspace(-3.0, 3.0, 60001)
    prior = _hardy_weinberg_by_score()
    log_mass = {}
    for score, p in prior.items():
        cl = CL * _fraction(score) * np.exp(eta)[:, None]
        f = DOSE / V * np.exp(-cl / V * TIMES[None])
        sd = 0.1 * f
        ll = np.sum(-0.5 * ((values - f) / sd) ** 2 - np.log(sd), axis=1)
        log_density = ll - 0.5 * (eta / OMEGA) ** 2
        peak = log_density.max()
        integral = np.trapezoid(np.exp(log_density - peak), eta)
        log_mass[score] = math.log(p) + peak + math.log(integral)
    top = max(log_mass.values())
    total = sum(math.exp(v - top) for v in log_mass.values())
    return {k: math.exp(v - top) / total for k, v in log_mass.items()}


@pytest.mark.parametrize("spelling", ["not tested", "Unknown", "untested", None, "", "N/A"])
def test_not_tested_spellings_make_a_mixture_with_hardy_weinberg_weights(spelling):
    """Every documented spelling gives an untested gene; without levels the weights sum to
    1 and equal the Hardy–Weinberg frequencies of the ancestry pooled by activity score
    (to 1e-12), for ``fit("prior")`` and for ``fit()`` without data."""
    twin = _twin(genotype=spelling)
    assert twin.untested_genes == ("cyp2c9",) and twin.ancestry == "european"
    assert twin.ignored_covariates == ()
    expected = _hardy_weinberg_by_score()
    assert sorted(_score(g) for g in twin.genotype_groups) == sorted(expected)
    for method in ("prior", "map"):
        mixture = twin.fit(method).mixture
        assert mixture.log_evidence is None
        assert mixture.weights.sum() == pytest.approx(1.0, abs=1e-12)
        for group, w in zip(mixture.groups, mixture.weights, strict=True):
            assert w == pytest.approx(expected[_score(group)], abs=1e-12)
    # East Asian ancestry: other frequencies (CYP2C9*3 0.035, no *5/*6/*8/*11)
    east = _twin(ancestry="East Asian").fit("prior").mixture
    for group, w in zip(east.groups, east.weights, strict=True):
        assert w == pytest.approx(_hardy_weinberg_by_score("east_asian")[_score(group)])


def test_strong_data_from_a_poor_metabolizer_moves_the_weight_to_poor_metabolizers():
    """Four levels over 72 h from a simulated *3/*3 patient (typical for *3/*3, η_CL = 0,
    10 % error): the *3/*3 group (activity score 0) carries at least 90 % of the
    posterior weight, up from its 0.5 % prior; from a *1/*1 patient the *1/*1 group
    dominates instead (≥ 70 %, its prior 63 %). Every weight equals the exact quadrature
    weight within 0.02 (the Laplace approximation, see the module docstring)."""
    for score, floor in ((0.0, 0.9), (2.0, 0.7)):
        values = _levels(score, 0.0)
        post = _twin(values).fit()
        mixture = post.mixture
        assert mixture.log_evidence is not None and post.diagnostics["converged"]
        assert mixture.weights.sum() == pytest.approx(1.0, abs=1e-12)
        by_score = {_score(g): w for g, w in zip(mixture.groups, mixture.weights, strict=True)}
        assert by_score[score] >= floor, by_score
        exact = _quadrature_weights(values)
        for s, w in by_score.items():
            assert w == pytest.approx(exact[s], abs=0.02), (s, by_score, exact)
        best = mixture.groups[mixture.most_probable]
        assert _score(best) == score
        # the posterior's mode is the most probable genotype's
        np.testing.assert_allclose(
            post.eta_mode, mixture.components[mixture.most_probable].eta_mode
        )
        assert "measured level" in mixture.describe()


def test_mixture_band_contains_every_likely_genotypes_median():
    """One level at 24 h from a *1/*3-like patient leaves several genotypes plausible. For
    every component with weight ≥ 0.12 the median curve of its own draws (the same draws
    the mixture uses) lies inside the mixture's 5–95 % band at every time: a component of
    weight w puts w/2 of the mixture's mass on each side of its median, ≥ 5 % when w ≥ 0.1.
    The component medians are computed in closed form from the component's draws. The
    mixture's band is wider than the most probable component's (it adds the genotype
    uncertainty), and the draws split by weight (largest remainder)."""
    twin = _twin().with_observations(Observation(24.0, 1.3))
    post = twin.fit()
    mixture = post.mixture
    assert sum(w >= 0.12 for w in mixture.weights) >= 2, mixture.table()
    n = 400
    counts = mixture.allocate(n)
    assert counts.sum() == n and np.all(np.abs(counts - n * mixture.weights) < 1.0)
    regimen = {"q24h": [Dose(24.0 * k, DOSE, compartment=0) for k in range(1, 4)]}
    times = np.linspace(24.0, 96.0, 37)
    pred = post.predict(regimen, times=times, n_draws=n, seed=3)
    band = pred.band("q24h")
    assert pred.n_draws == n and pred.notes and "CYP2C9 not tested" in pred.notes[0]
    dose_times = np.array([0.0, 24.0, 48.0, 72.0])
    checked = 0
    for k, eta in mixture.draws(n, seed=3):
        if mixture.weights[k] < 0.12:
            continue
        # the component's median curve from its own draws, in closed form (pre-dose values
        # at dose times, as the engines report them)
        cl = CL * _fraction(_score(mixture.groups[k])) * np.exp(eta[:, 0])
        after = np.clip(times[None, :] - dose_times[:, None], 0.0, None)  # [dose, time]
        given = (times[None, :] > dose_times[:, None])[None]
        conc = np.sum(given * DOSE / V * np.exp(-cl[:, None, None] / V * after[None]), axis=1)
        median = np.median(conc, axis=0)
        assert np.all(band["lower"] <= median + 1e-9), mixture.groups[k].label
        assert np.all(median <= band["upper"] + 1e-9), mixture.groups[k].label
        checked += 1
    assert checked >= 2
    alone = mixture.components[mixture.most_probable].predict(
        regimen, times=times, n_draws=n, seed=3
    )
    width = band["upper"] - band["lower"]
    alone_width = alone.band("q24h")["upper"] - alone.band("q24h")["lower"]
    assert np.mean(width) > np.mean(alone_width)


def test_recommendation_uses_the_mixture_and_says_so():
    """The recommendation of an untested twin is scored on the mixture's draws, its why
    and notes say the gene was not tested and name the ancestry; the same seed gives the
    same recommendation."""
    twin = _twin().with_observations(Observation(24.0, 1.3))
    post = twin.fit()
    kwargs = dict(
        strengths_mg=[50.0, 100.0, 150.0, 200.0], intervals_h=[24.0], loading=False, top=2,
        n_draws=200,
    )  # fmt: skip
    recs = post.recommend(**kwargs)
    again = post.recommend(**kwargs)
    assert [r.description for r in recs] == [r.description for r in again]
    assert recs[0].pta == again[0].pta and recs[0].scored == 4
    for rec in recs:
        assert rec.notes and "CYP2C9 not tested" in rec.why and "European ancestry" in rec.why


def test_clear_errors_for_ancestry():
    """Without an ancestry, or with one that has no frequency table, the error names the
    field and the accepted values; a given genotype needs no ancestry; ``fit_nuts_many``
    refuses twins with untested genes."""
    with pytest.raises(PatientTwinError, match=r"`ancestry`.*'european', 'east_asian', 'african'"):
        PatientTwin.create(MODEL, {"cyp2c9": "not tested"})
    with pytest.raises(PatientTwinError, match=r"`ancestry` 'martian'.*accepted values"):
        PatientTwin.create(MODEL, {"cyp2c9": "unknown", "ancestry": "martian"})
    twin = PatientTwin.create(MODEL, {"cyp2c9": "*1/*3", "ancestry": "martian"})
    assert twin.untested_genes == () and twin.ignored_covariates == ("ancestry",)
    assert twin.genotype_note == ""
    with pytest.raises(PatientTwinError, match="covariate `cyp2c9`"):
        PatientTwin.create(MODEL, {"cyp2c9": "*1/*99", "ancestry": "european"})
    # the cohort sampler vectorises one genotype per twin: it refuses a mixture
    with pytest.raises(PatientTwinError, match=r"untested genes.*fit them one by one"):
        fit_nuts_many([_twin().with_observations(Observation(24.0, 1.3))])


@pytest.mark.isolated
def test_warfarin_patient_as_a_clinician_describes_them():
    """The clinician's example: 70 y, CYP2C9 not tested, VKORC1 G/A, European. Without
    INR the weights are the Hardy–Weinberg frequencies of the CYP2C9 genotypes pooled by
    the model's clearance class (*1/*2 with *1/*8 and *1/*11: the model treats *8 and *11
    as *2), summing to 1; the twin, its prediction and its recommendation say it averaged
    over genotypes. The recommended daily dose is the mixture's: between the typical
    doses the twin recommends for *3/*3 and *1/*1 (FDA label Table 5, G/A: 0.5–2 and
    5–7 mg/day)."""
    covariates = {"age": 70, "cyp2c9": "not tested", "vkorc1": "G/A", "ancestry": "european"}
    twin = PatientTwin.create("warfarin", covariates)
    assert twin.untested_genes == ("cyp2c9",) and "CYP2C9 not tested" in twin.genotype_note
    freqs = diplotype_frequencies("CYP2C9", "european")
    groups = {g.label: g for g in twin.genotype_groups}
    assert groups["CYP2C9 *1/*2"].pooled == "*1/*2, *1/*8, *1/*11"
    post = twin.fit()
    for group, w in zip(post.mixture.groups, post.mixture.weights, strict=True):
        assert w == pytest.approx(sum(freqs[m["cyp2c9"]] for m in group.members), abs=1e-12)
    assert post.mixture.weights.sum() == pytest.approx(1.0, abs=1e-12)
    (rec,) = post.recommend(top=1, n_draws=100)
    assert "CYP2C9 not tested" in rec.why and rec.notes
    assert 1.0 <= rec.regimen.amount_mg * 24 / rec.regimen.interval_h <= 6.0, rec.description
