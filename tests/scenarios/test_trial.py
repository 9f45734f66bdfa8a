"""Virtual trials: the design spec, adaptive rules, endpoints and the statistics of the analyses.

The statistical tests run replicated trials of a cheap design (vancomycin, linear PK on the
exact engine, one dose, n = 20 per arm) and state their failure rates: a bound of
``k`` Monte-Carlo standard errors fails with probability ``2 (1 − Φ(k))`` per check when
the property holds (k = 3.5: 0.047 %), over the choice of seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from twinsim.scenarios import SpecError, TrialDesign, load_trial, run_trial, trial_examples
from twinsim.scenarios._trial import rosendaal, two_level_auc24
from twinsim.scenarios._trial._analysis import endpoint_values

K = 3.5  # Monte-Carlo standard errors allowed; two-sided failure rate 2 (1 - Φ(3.5)) = 0.047 %


def _design(dose_b: float, *, replicates: int, n: int, seed: int, analyses=None, **extra):
    return TrialDesign.model_validate(
        {
            "drug": "vancomycin",
            "duration": 24,
            "visits": [1, 2, 4, 6, 8, 12, 16, 20, 24],
            "replicates": replicates,
            "seed": seed,
            "sample_size": n,
            "auc_step": 1.0,
            "population": {"criteria": ["crcl >= 30 and dialysis == 0"]},
            "arms": [
                {"name": "A", "control": True, "dose": 1000, "interval": 24, "infusion": 1},
                {"name": "B", "dose": dose_b, "interval": 24, "infusion": 1},
            ],
            "endpoints": [
                {"name": "auc", "kind": "value", "output": "conc", "auc": True, "window": [0, 24]},
                {"name": "high", "kind": "event", "output": "conc", "above": 8, "window": [12, 24]},
                {
                    "name": "below10",
                    "kind": "time_to_event",
                    "output": "conc",
                    "below": 10,
                    "window": [1, 24],
                },
            ],
            "analyses": analyses
            or [
                {"endpoint": "auc"},
                {"endpoint": "auc", "method": "ancova", "covariates": ["crcl", "weight"]},
                {"endpoint": "auc", "method": "procova"},
                {"endpoint": "high"},
                {"endpoint": "below10", "method": "cox"},
            ],
            **extra,
        }
    )


@pytest.fixture(scope="module")
def null_run():
    """400 replicate trials with identical arms (1000 mg in both)."""
    return run_trial(_design(1000, replicates=400, n=20, seed=11), chunk_size=100)


@pytest.fixture(scope="module")
def effect_run():
    """400 replicate trials, 1000 vs 1300 mg: AUC (linear PK) is 1.3 × per subject."""
    analyses = [{"endpoint": "auc"}, {"endpoint": "auc", "method": "procova"}]
    return run_trial(
        _design(1300, replicates=400, n=20, seed=12, analyses=analyses), chunk_size=100
    )


# ---------------------------------------------------------------------------- statistics
def test_type_one_error_of_every_analysis_is_alpha(null_run):
    """Identical arms: each analysis rejects in α = 5 % of 400 replicates within 3.5 MC SE
    (SE = sqrt(0.05 · 0.95 / 400) = 0.011; the band is 0.012–0.088). Failure rate per
    analysis 0.047 % when the test is exact; the proportions' score test and the Cox test
    are asymptotic, which the band also allows for."""
    p = null_run.results[:, 0, :, 0, 3]
    assert np.isfinite(p).all()
    rejection = (p < 0.05).mean(axis=0)
    se = math.sqrt(0.05 * 0.95 / p.shape[0])
    labels = [a.label for a in null_run.design.analyses]
    for label, rate in zip(labels, rejection, strict=True):
        assert abs(rate - 0.05) < K * se, (label, rate)


def test_confidence_intervals_cover_zero_under_the_null(null_run):
    """95 % CIs of the difference in means contain the true 0 in 95 % ± 3.5 MC SE."""
    ci = null_run.results[:, 0, 0, 0, 1:3]
    coverage = np.mean((ci[:, 0] <= 0) & (ci[:, 1] >= 0))
    assert abs(coverage - 0.95) < K * math.sqrt(0.05 * 0.95 / len(ci))


def test_power_matches_closed_form_and_estimate_is_unbiased(null_run, effect_run):
    """Known effect: linear PK makes each subject's AUC 1.3 × under 1300 mg, so the true
    difference is 0.3 μ and the arm SDs σ and 1.3 σ, with μ, σ of AUC under 1000 mg taken
    from the independent null run (16,000 subjects). Closed form: the pooled-variance t
    test with equal n has SE sqrt((σ_A² + σ_B²)/n), so power = P(|T| > t_{0.975, 2n−2})
    with T non-central t (df 2n − 2, ncp Δ / SE). The simulated power must be within
    3.5 MC SE (0.025 at 400 replicates) plus 0.02 for the t approximation of a skewed
    endpoint; the mean estimate within 3.5 SE of the truth (failure rate 0.047 % each)."""
    auc = null_run.arrays["endpoints"][..., 0][null_run.arrays["valid"]]
    mu, sigma = np.nanmean(auc), np.nanstd(auc, ddof=1)
    n = 20
    delta = 0.3 * mu
    se = math.sqrt((sigma**2 + (1.3 * sigma) ** 2) / n)
    df = 2 * n - 2
    crit = stats.t.ppf(0.975, df)
    closed = stats.nct.sf(crit, df, delta / se) + stats.nct.cdf(-crit, df, delta / se)
    p = effect_run.results[:, 0, 0, 0, 3]
    power = np.mean(p < 0.05)
    assert abs(power - closed) < K * math.sqrt(closed * (1 - closed) / len(p)) + 0.02
    estimate = effect_run.results[:, 0, 0, 0, 0]
    mc_se = math.sqrt(estimate.var(ddof=1) / len(estimate) + (0.3 * sigma) ** 2 / auc.size)
    assert abs(estimate.mean() - delta) < K * mc_se


def test_procova_variance_reduction_matches_one_minus_rho_squared(null_run):
    """PROCOVA (Schuler et al., Int J Biostat 2021): adjusting for a prognostic score with
    correlation ρ to the outcome multiplies the variance of the effect estimate by about
    1 − ρ². ρ is the achieved within-arm correlation of the twin's predicted AUC with the
    simulated AUC. Two checks: the model-based variances (mean SE²) within 0.05 of
    1 − ρ², and the empirical variances over 400 replicates within 0.12 (the SD of a
    ratio of two correlated variance estimates from 400 replicates is ≈ 0.03–0.04)."""
    arrays = null_run.arrays
    valid = arrays["valid"]
    y, score = arrays["endpoints"][..., 0], arrays["scores"][..., 0]
    y_c = y - np.nanmean(np.where(valid, y, np.nan), axis=2, keepdims=True)
    s_c = score - np.nanmean(np.where(valid, score, np.nan), axis=2, keepdims=True)
    ok = valid & np.isfinite(y_c) & np.isfinite(s_c)
    rho = np.corrcoef(y_c[ok], s_c[ok])[0, 1]
    assert rho > 0.3  # the twin's covariates (CrCL, weight) explain part of the AUC
    results = null_run.results[:, 0]
    labels = [a.label for a in null_run.design.analyses]
    plain, procova = labels.index("auc:difference"), labels.index("auc:procova")
    model_ratio = np.mean(results[:, procova, 0, 4] ** 2) / np.mean(results[:, plain, 0, 4] ** 2)
    empirical = results[:, procova, 0, 0].var() / results[:, plain, 0, 0].var()
    assert abs(model_ratio - (1 - rho**2)) < 0.05, (model_ratio, rho)
    assert abs(empirical - (1 - rho**2)) < 0.12, (empirical, rho)


def test_summary_reports_power_with_monte_carlo_error(effect_run):
    summary = effect_run.summary()
    entry = summary["analyses"][0]
    size = entry["sizes"][0]
    assert entry["comparison"] == "B vs A"
    assert size["power_mc_se"] == pytest.approx(
        math.sqrt(size["power"] * (1 - size["power"]) / 400)
    )
    assert summary["failed_solves"] == 0
    assert summary["subjects_simulated"] == 400 * 40


# ---------------------------------------------------------------------------- design
def test_examples_load():
    designs = {name: load_trial(path) for name, path in trial_examples().items()}
    assert set(designs) == {"warfarin_genotype_guided", "vancomycin_auc_vs_trough"}
    warfarin = designs["warfarin_genotype_guided"]
    assert [a.titration.kind for a in warfarin.arms] == ["bands", "bands"]
    assert warfarin.duration == 672.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"drug": "aspirin"}, r"`drug` .*aspirin"),
        ({"sample_size": [1]}, r"`sample_size` must be a whole number ≥ 2.*got \[1\]"),
        ({"duration": "3 parsecs"}, r"`duration`"),
        ({"visits": [30, 12]}, r"`visits` must be increasing.*\[30.0, 12.0\]"),
        (
            {"arms": [{"name": "A", "dose": 1000}, {"name": "B", "dose": 10, "placebo": True}]},
            r"`arms\[1\]`.*exactly one of `dose`.*placebo=True",
        ),
        (
            {"endpoints": [{"name": "x", "kind": "value", "output": "inr", "at": 12}]},
            r"`endpoints\[0\].output` must be one of \['conc'\], got 'inr'",
        ),
        ({"analyses": [{"endpoint": "nope"}]}, r"`analyses\[0\].endpoint` must name an endpoint"),
        ({"replicates": 0}, r"`replicates`.*greater than or equal to 1.*got 0"),
        ({"arms_typo": 1}, r"`arms_typo` is not a known field"),
    ],
)
def test_design_errors_name_field_value_and_fix(change, match):
    base = _design(1000, replicates=2, n=4, seed=0).model_dump()
    base.update(change)
    with pytest.raises(SpecError, match=match):
        TrialDesign.model_validate(base)


def test_titration_errors_name_the_field():
    base = _design(1000, replicates=2, n=4, seed=0).model_dump()
    base["arms"][1]["titration"] = {"kind": "auc", "output": "conc", "at": [12], "target": 500}
    with pytest.raises(SpecError, match=r"`arms\[1\].titration` kind 'auc' needs `peak_after`"):
        TrialDesign.model_validate(base)
    base["arms"][1]["titration"] = {"kind": "bands", "output": "conc", "at": [12]}
    with pytest.raises(SpecError, match=r"kind 'bands' needs `bands`"):
        TrialDesign.model_validate(base)


# ---------------------------------------------------------------------------- rules
def test_trough_guided_rule_scales_the_dose_from_the_measured_trough():
    """At 36 h the proportional rule sets dose = round(dose × 17.5 / measured trough, 250 mg)
    clipped to [250, 2000] mg when the trough is outside 15–20 mg/L — checked subject by
    subject against the measured (assay-error) trough stored in the run."""
    design = load_trial(trial_examples()["vancomycin_auc_vs_trough"]).model_copy(
        update={"replicates": 1, "sample_size": [12]}
    )
    result = run_trial(design)
    arrays = result.arrays
    times = arrays["times"]
    i36 = int(np.flatnonzero(times == 36.0)[0])
    dose_times = arrays["dose_times"][0]
    before, after = np.flatnonzero(dose_times == 24.0)[0], np.flatnonzero(dose_times == 36.0)[0]
    changed = 0
    for s in range(12):
        trough = arrays["measured"][0, 0, s, i36, 0]
        old, new = arrays["doses"][0, 0, s, before], arrays["doses"][0, 0, s, after]
        if 15 <= trough <= 20:
            expected = old
        else:
            factor = np.clip(17.5 / max(trough, 1e-3), 0.25, 4.0)
            expected = np.clip(np.round(np.clip(old * factor, 250, 2000) / 250) * 250, 250, 2000)
            changed += 1
        assert new == expected, (s, trough, old, new)
    assert changed > 0


def test_two_level_auc_is_exact_for_one_compartment_profiles():
    """Sawchuk–Zaske AUC from a peak and trough equals the closed-form AUC of a
    one-compartment steady-state profile after a 1-h infusion (rtol 1e-12)."""
    ke, k0, v, tau, tinf = 0.15, 1000.0, 50.0, 12.0, 1.0
    rate = k0 / tinf
    # steady state: C(end of infusion) and trough, one compartment
    cmax = rate / (v * ke) * (1 - math.exp(-ke * tinf)) / (1 - math.exp(-ke * tau))
    trough = cmax * math.exp(-ke * (tau - tinf))
    peak = cmax * math.exp(-ke * 1.0)
    auc = two_level_auc24(
        np.array([peak]), np.array([trough]), peak_time=2.0, trough_time=12.0, infusion=1.0,
        interval=12.0,
    )  # fmt: skip
    exact_elimination = (cmax - trough) / ke
    exact_infusion_linear = tinf * (trough + cmax) / 2
    assert auc[0] == pytest.approx(2 * (exact_infusion_linear + exact_elimination), rel=1e-12)
    # and close to the true AUC24 = 2 · dose / CL (the infusion phase is nearly linear)
    assert auc[0] == pytest.approx(2 * k0 / (ke * v), rel=0.01)


def test_rosendaal_time_in_range():
    """Linear interpolation: 1 → 3 over 10 h spends 5 h in [2, 3]; NaN pairs are dropped."""
    times = np.array([0.0, 10.0, 20.0])
    values = np.array([[1.0, 3.0, np.nan], [2.5, 2.5, 3.5], [np.nan, np.nan, np.nan]])
    out = rosendaal(times, values, 2.0, 3.0)
    assert out[0] == pytest.approx(0.5)
    assert out[1] == pytest.approx(0.75)
    assert np.isnan(out[2])


def test_time_to_event_is_censored_at_the_last_visit_attended():
    design = _design(1000, replicates=1, n=4, seed=0)
    endpoint = design.endpoint("below10")
    times = np.array([0.0, 1.0, 2.0, 4.0])
    mask = np.ones(4, bool)
    measured = np.array([[0, 30, 20, 9.0], [0, 30, 25, 20], [0, 30, np.nan, np.nan]])[..., None]
    value, event = endpoint_values(endpoint, times, mask, measured, measured, np.full(3, 99.0), 0)
    assert value.tolist() == [4.0, 4.0, 1.0]
    assert event.tolist() == [1.0, 0.0, 0.0]


def test_enrolment_carries_the_models_own_covariate_columns():
    """The warfarin model's ``amiodarone`` and ``enzyme_inducer`` (IWPC 2009 covariates) come
    from the virtual population's co-medication columns: ``comed_amiodarone`` drawn at the
    design's prevalence becomes the model's ``amiodarone``; no inducer drawn gives 0. (A
    warfarin trial once failed with KeyError 'amiodarone' in the simulation.)"""
    from twinsim.scenarios._trial._simulate import enrol

    design = load_trial(trial_examples()["warfarin_genotype_guided"])
    population = design.population.model_copy(update={"comedications": {"amiodarone": 0.5}})
    design = design.model_copy(
        update={"population": population, "replicates": 1, "sample_size": [40]}
    )
    (enrolment,) = enrol(design, [0])
    cov = enrolment.covariates
    np.testing.assert_array_equal(cov["amiodarone"], cov["comed_amiodarone"])
    assert 0 < cov["amiodarone"].sum() < cov["amiodarone"].size  # prevalence 0.5 of 80
    np.testing.assert_array_equal(cov["enzyme_inducer"], 0.0)
