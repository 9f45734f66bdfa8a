"""The latent twin's benchmark study (issue 14, item 4) in reduced size, and its scoring.

Full size: ``benchmarks/latent_study.py`` (1,000 training patients per truth, 120
held-out per regimen; numbers in the README). Here: the scoring and the pass/fail criteria
on constructed inputs (they can fail: a wrong coverage or ratio is caught), then the
structural truth (clearance falling over days) end to end — a small hybrid trained on
``N_TRAIN`` patients and every arm evaluated on ``N_TEST`` patients of the regimen never
seen in training, from 0 and 2 levels.

What the reduced run must show, and why it holds at this size (seeds fixed, so the outcome
is deterministic; margins from a run of this test: mechanistic MdAPE 19.7 % and median
bias −18.7 % with 2 levels, oracle 11.4 % / +5.5 %, hybrid 13.0 % / −1.2 %; without levels
the mechanistic bias is −27 %, the hybrid's +2 %): the truth departs from Goti 2018 by a
clearance that falls to 45 % (τ 36 h), so the mechanistic twin under-predicts the AUC at
48–72 h (its median bias is below −10 % with 0 and 2 levels); the oracle (the true
process as the twin) has a clearly lower error with 2 levels (≤ 0.8 × the mechanistic
twin's); and a hybrid trained for 8 epochs on 200 patients has already learned most of
the fall: lower error than the mechanistic twin with 2 levels and a smaller bias with 0
and 2. Coverage is reported, not required, at this size.
"""

from __future__ import annotations

import numpy as np
import pytest

from twinsim.priors import vancomycin_model
from twinsim.twin import (
    CovariateFeatures,
    LatentConfig,
    LatentData,
    LatentModel,
    TrainingSettings,
    train_latent,
)
from twinsim.twin._latent._study import (
    LLOQ,
    evaluate_study,
    latent_covariates,
    observation_lists,
    simulate_patients,
    study_checks,
    study_table,
    summarise,
)

N_TRAIN, N_TEST = 200, 40


def _cohort(truth: np.ndarray) -> dict:
    """A cohort of ``len(truth)`` patients with one level each and a 3-point grid."""
    n = len(truth)
    return {
        "times": np.ones((n, 1)),
        "observed": np.full((n, 1), 10.0),
        "censored": np.zeros((n, 1), bool),
        "grid": np.array([0.0, 12.0, 24.0]),
        "curve": np.tile(truth[:, None] / 24.0, (1, 3)),
        "auc24": truth,
        "covariates": {
            "female": np.array([1.0, 0.0] * (n // 2)),
            "ancestry": np.array(["african", "european"] * (n // 2), dtype=object),
        },
    }


def test_summarise_scores_error_bias_and_coverage():
    """Draws centred on the truth with ±20 % spread: MdAPE 0, bias 0, all covered; the same
    draws × 1.5: MdAPE and bias 50 %, none covered (the interval is 1.2–1.8 × truth);
    half the patients shifted: coverage 0.5 and split by sex exactly as constructed."""
    truth = np.array([400.0, 500.0, 600.0, 700.0])
    spread = np.linspace(0.8, 1.2, 101)
    draws = truth[:, None, None] / 24.0 * spread[None, :, None] * np.ones((1, 1, 4))
    cohort = _cohort(truth)
    exact = summarise(draws, cohort, k=1)
    assert exact["auc_mdape_percent"] == pytest.approx(0.0, abs=1e-9)
    assert exact["auc_median_bias_percent"] == pytest.approx(0.0, abs=1e-9)
    assert exact["coverage90"] == 1.0
    off = summarise(draws * 1.5, cohort, k=1)
    assert off["auc_mdape_percent"] == pytest.approx(50.0)
    assert off["auc_median_bias_percent"] == pytest.approx(50.0)
    assert off["coverage90"] == 0.0
    half = draws.copy()
    half[1::2] *= 1.5  # the men (odd rows) are missed
    split = summarise(half, cohort, k=1)
    assert split["coverage90"] == 0.5
    assert split["coverage90_by_group"]["female"] == 1.0
    assert split["coverage90_by_group"]["male"] == 0.0
    assert np.isnan(split["nll_held_out_levels"])  # no level left after the first


def _cell(mech, hybrid, coverage=0.9, **more):
    cell = {
        "mechanistic": {"auc_mdape_percent": mech, "coverage90": 0.9},
        "hybrid": {"auc_mdape_percent": hybrid, "coverage90": coverage},
    }
    cell.update({arm: {"auc_mdape_percent": v, "coverage90": 0.9} for arm, v in more.items()})
    return cell


def test_checks_apply_the_issue_criteria():
    """Ratios average the levels; ≥ 25 % lower passes at 0.75 and fails just above; one
    cell outside 85–95 % fails the per-k coverage bar, the pooled coverage (the issue's
    bar, and by group) averages the cells; the learned fold must be within 30 % of the
    effect (1.6: 1.42–1.78); the neural-only model must be worse on the held-out regimen."""
    good = {r: {"0": _cell(20.0, 15.0, neural_encoder=30.0),
                "2": _cell(10.0, 7.5, neural_encoder=20.0)} for r in ("train", "heldout")}  # fmt: skip
    checks = study_checks("structural", good)
    assert checks["train: hybrid/mechanistic mean AUC MdAPE ratio"] == pytest.approx(0.75)
    assert checks["train: hybrid error ≥ 25 % lower than mechanistic"]
    assert checks["heldout: hybrid coverage 85–95 % at every k"]
    assert checks["heldout: hybrid beats neural-only"]
    bad = {r: {"0": _cell(20.0, 15.1, coverage=0.84, neural_encoder=10.0),
               "2": _cell(10.0, 7.5, neural_encoder=5.0)} for r in ("train", "heldout")}  # fmt: skip
    checks = study_checks("structural", bad)
    assert not checks["train: hybrid error ≥ 25 % lower than mechanistic"]
    assert not checks["train: hybrid coverage 85–95 % at every k"]
    assert checks["train: hybrid coverage over every k"] == pytest.approx(0.87)
    assert checks["train: hybrid coverage 85–95 % over every k"]  # 0.84 and 0.90 pooled
    assert not checks["heldout: hybrid beats neural-only"]
    low = {"train": {"0": _cell(20.0, 15.0, coverage=0.84), "2": _cell(10.0, 7.5, coverage=0.855)}}
    checks = study_checks("structural", low)
    assert checks["train: hybrid coverage over every k"] == pytest.approx(0.8475)
    assert not checks["train: hybrid coverage 85–95 % over every k"]
    assert not checks["train: hybrid coverage 85–95 % at every k"]
    for cell, female in zip(low["train"].values(), (0.80, 0.90), strict=True):
        cell["hybrid"]["coverage90_by_group"] = {"female": female, "male": 0.9}
    assert study_checks("structural", low)["train: hybrid coverage over every k by group"] == {
        "female": pytest.approx(0.85),
        "male": pytest.approx(0.9),
    }
    published = study_checks("published", {"train": {"0": _cell(20.0, 21.0)}})
    assert published["train: hybrid error within 5 % of mechanistic"]
    assert not study_checks("published", {"train": {"0": _cell(20.0, 21.1)}})[
        "train: hybrid error within 5 % of mechanistic"
    ]
    # the twins fitted with fit("importance") are judged the same way, as their own pair
    both = {
        "train": {
            "0": {
                **_cell(20.0, 16.0),
                "mechanistic_importance": {"auc_mdape_percent": 20.0, "coverage90": 0.9},
                "hybrid_importance": {"auc_mdape_percent": 14.0, "coverage90": 0.86},
            }
        }
    }
    checks = study_checks("structural", both)
    assert not checks["train: hybrid error ≥ 25 % lower than mechanistic"]
    assert checks["train: hybrid_importance error ≥ 25 % lower than mechanistic_importance"]
    assert checks["train: hybrid_importance coverage 85–95 % at every k"]
    # a run of the hybrid arms alone (merged into the full entry afterwards) checks nothing
    only = {"train": {"0": {"hybrid": {"auc_mdape_percent": 10.0, "coverage90": 0.9}}}}
    assert study_checks("structural", only) == {}
    for learned, ok in ((1.43, True), (1.77, True), (1.38, False), (1.82, False), (0.7, False)):
        entry = {
            "train": {"0": _cell(20.0, 15.0)},
            "genomic_fold": {"true": 1.6, "learned": learned},
        }
        assert (
            study_checks("genomic", entry)["genomic: learned effect right sign, size within 30 %"]
            is ok
        )


@pytest.fixture(scope="module")
def structural_study():
    train = simulate_patients("structural", N_TRAIN, seed=0)
    cov = latent_covariates(train)
    config = LatentConfig(latent_dim=4, hidden=8, correction_hidden=4)
    model = LatentModel.create(vancomycin_model(), CovariateFeatures.fit(cov), config, seed=0)
    data = LatentData.build(model, cov, train["doses"], observation_lists(train), lloq=LLOQ)
    settings = TrainingSettings(epochs=8, batch_size=16, learning_rate=1e-2, patience=8, seed=0)
    hybrid = train_latent(model, data, settings).model
    return evaluate_study("structural", {"hybrid": hybrid}, n_test=N_TEST, n_draws=50,
                          levels=(0, 2), regimens=("heldout",))  # fmt: skip


@pytest.mark.isolated  # ODE compilations: the decoder's training step and three twins
@pytest.mark.slow
def test_reduced_structural_study(structural_study):
    """Every arm scores every cell with finite numbers; the mechanistic twin is biased low
    where the truth departs from it, the oracle is clearly better with 2 levels, and the
    briefly trained hybrid beats the mechanistic twin (see the module doc for the margins)."""
    cells = structural_study["heldout"]
    assert set(cells) == {"0", "2"}
    for cell in cells.values():
        assert set(cell) == {"mechanistic", "oracle", "hybrid", "hybrid_encoder"}
        for scores in cell.values():
            assert np.isfinite(scores["auc_mdape_percent"]) and 0 <= scores["coverage90"] <= 1
            assert set(scores["coverage90_by_group"]) >= {"female", "male"}
        mech, hybrid = cell["mechanistic"], cell["hybrid"]
        assert mech["auc_median_bias_percent"] < -10.0
        assert abs(hybrid["auc_median_bias_percent"]) < abs(mech["auc_median_bias_percent"])
    two = cells["2"]
    assert two["oracle"]["auc_mdape_percent"] <= 0.8 * two["mechanistic"]["auc_mdape_percent"]
    assert two["hybrid"]["auc_mdape_percent"] < two["mechanistic"]["auc_mdape_percent"]
    assert "heldout: hybrid/mechanistic mean AUC MdAPE ratio" in structural_study["checks"]
    table = study_table({"truths": {"structural": structural_study}})
    assert table.count("| structural | heldout |") == 2 and "oracle" in table.splitlines()[0]
