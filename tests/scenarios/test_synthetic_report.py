"""Synthetic patients of a latent twin: useful (fidelity) and private (distance to the
closest record against a holdout baseline, membership-inference AUC).

The metric definitions are SDMetrics 0.32's, checked here against numbers computed with
sdmetrics itself; the generator is an *untrained* latent model (the published vancomycin
model, a fine generator) on tiny simulated cohorts, so the ODE program compiles once for
the module (forward only, no training step)."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from twinsim.cli import app
from twinsim.priors import vancomycin_model
from twinsim.scenarios import (
    closest_record_distance,
    compare_synthetic,
    patient_table,
    save_latent_model,
    synthetic_report,
    write_synthetic_report,
)
from twinsim.twin import (
    CovariateCopula,
    CovariateFeatures,
    LatentConfig,
    LatentData,
    LatentModel,
    LatentModelError,
    synthesize_patients,
)
from twinsim.twin._latent._study import latent_covariates, observation_lists, simulate_patients

N = 60  # training, holdout and synthetic patients


def _reference_tables():
    """Three small tables with numbers, a flag, a text category and missing values."""
    rng = np.random.default_rng(7)

    def cohort(n, shift):
        return pd.DataFrame({
            "weight": rng.normal(75 + shift, 12, n).round(1),
            "crcl": rng.normal(80, 25, n).round(1),
            "female": rng.integers(0, 2, n).astype(float),
            "ancestry": rng.choice(["european", "african", "east_asian"], n, p=[0.5, 0.2, 0.3]),
        })  # fmt: skip

    training, synthetic, holdout = cohort(50, 0), cohort(45, 6), cohort(40, 0)
    training.loc[3, "weight"] = np.nan
    synthetic.loc[7, "crcl"] = np.nan
    return training, synthetic, holdout


def test_metrics_equal_sdmetrics():
    """Reference values from sdmetrics 0.32.0 (Python 3.11, pandas 2.3.3, scikit-learn
    1.9.1) on the same tables: KSComplement, TVComplement, CorrelationSimilarity,
    ContingencySimilarity (a number binned: continuous_column_names), LogisticDetection
    (after numpy.random.seed(3): its folds come from numpy's global generator, as ours
    from random_state=3), calculate_dcr and DCROverfittingProtection (training cut to the
    holdout's 40 rows so that neither subsamples). Equal to 1e-12."""
    t, s, h = _reference_tables()
    kinds = {"weight": "numerical", "crcl": "numerical", "female": "categorical",
             "ancestry": "categorical"}  # fmt: skip
    full = compare_synthetic(t, s, h, columns=kinds, seed=3)
    shapes, pair = (
        full.fidelity["column_shapes"],
        {tuple(p["columns"]): p for p in full.fidelity["column_pairs"]},
    )
    assert shapes["weight"]["score"] == pytest.approx(0.5356009070294785, abs=1e-12)
    assert shapes["crcl"]["score"] == pytest.approx(0.8109090909090909, abs=1e-12)
    assert shapes["ancestry"]["score"] == pytest.approx(0.8133333333333334, abs=1e-12)
    assert shapes["female"]["score"] == pytest.approx(0.9355555555555556, abs=1e-12)
    assert pair[("weight", "crcl")]["score"] == pytest.approx(0.9202584644029392, abs=1e-12)
    assert pair[("female", "ancestry")]["score"] == pytest.approx(0.7911111111111111, abs=1e-12)
    assert pair[("weight", "ancestry")]["score"] == pytest.approx(0.4622222222222222, abs=1e-12)
    assert full.fidelity["detection"]["score"] == pytest.approx(0.5766339869281045, abs=1e-12)
    dcr = closest_record_distance(s, t, kinds)
    np.testing.assert_allclose(
        dcr[:5], [0.027105186782204912, 0.014204569011982297, 0.04877793440855753,
                  0.07643869978025625, 0.07610286496123393], atol=1e-12,
    )  # fmt: skip
    baseline = closest_record_distance(h, t, kinds)
    np.testing.assert_allclose(
        baseline[:5], [0.04017061238028114, 0.03967722542393961, 0.11083067291347076,
                       0.03114660640988433, 0.054745221609519445], atol=1e-12,
    )  # fmt: skip
    report = compare_synthetic(t.iloc[:40], s, h, columns=kinds, seed=3)
    assert report.privacy["overfitting"]["closer_to_training"] == pytest.approx(0.35555555555555557)
    assert report.privacy["overfitting"]["score"] == 1.0


def _study_table(cohort) -> pd.DataFrame:
    table = pd.DataFrame(latent_covariates(cohort))
    for k in range(cohort["observed"].shape[1]):
        table[f"conc_{k + 1}"] = cohort["observed"][:, k]
    return table


def test_fidelity_is_high_for_the_same_process_and_low_for_shifted_weights():
    """Covariates and levels of 60 simulated vancomycin patients against 60 more of the
    same process (every score high, the detection classifier near chance) and against 60
    whose weights are 25 kg heavier (weight's KS complement and the detection score fall:
    the classifier tells them apart)."""
    training = _study_table(simulate_patients("published", N, seed=1))
    holdout = _study_table(simulate_patients("published", N, seed=2))
    same = _study_table(simulate_patients("published", N, seed=3))
    wrong = same.assign(weight=same["weight"] + 25.0)
    good = compare_synthetic(training, same, holdout, seed=0)
    bad = compare_synthetic(training, wrong, holdout, seed=0)
    assert good.columns["ancestry"] == good.columns["cyp3a5"] == "categorical"
    assert good.columns["female"] == "categorical" and good.columns["conc_1"] == "numerical"
    assert good.fidelity["column_shapes"]["weight"]["score"] > 0.8
    assert bad.fidelity["column_shapes"]["weight"]["score"] < 0.4
    assert good.fidelity["column_shapes_score"] > 0.85
    assert good.fidelity["column_pair_trends_score"] > 0.8
    assert good.fidelity["detection"]["auc"] < 0.7 < 0.8 < bad.fidelity["detection"]["auc"]
    assert bad.fidelity["quality_score"] < good.fidelity["quality_score"]


def test_copula_draws_new_rows_with_the_training_frequencies():
    """The copula's numbers are never training values, categories keep their frequencies
    (ancestry within 0.1), the weight–CrCL correlation of a correlated table is kept
    (0.8 → within 0.1 on 2,000 draws), and patient i does not depend on n."""
    rng = np.random.default_rng(0)
    weight = rng.normal(75, 12, 300)
    table = {
        "weight": weight,
        "crcl": 80 + 2.0 * (weight - 75) + rng.normal(0, 18, 300),
        "ancestry": rng.choice(["european", "african", "east_asian"], 300, p=[0.5, 0.2, 0.3]),
        "cyp3a5": rng.choice(["*3/*3", "*1/*3", ""], 300, p=[0.7, 0.2, 0.1]),
    }
    copula = CovariateCopula.fit(table, seed=0)
    new = copula.sample(2000, seed=1)
    assert not np.isin(new["weight"], table["weight"]).any()
    assert np.corrcoef(table["weight"], table["crcl"])[0, 1] == pytest.approx(
        np.corrcoef(new["weight"], new["crcl"])[0, 1], abs=0.1
    )
    assert np.mean(new["ancestry"] == "african") == pytest.approx(0.2, abs=0.05)
    assert set(new["cyp3a5"]) == {"*3/*3", "*1/*3", ""}
    few = copula.sample(5, seed=1)
    for column in table:
        assert list(few[column]) == list(new[column][:5])


@pytest.fixture(scope="module")
def latent():
    """An untrained latent model (the published population model) and 60 + 60 patients."""
    train = simulate_patients("published", N, seed=11)
    hold = simulate_patients("published", N, seed=12)
    features = CovariateFeatures.fit(latent_covariates(train))
    config = LatentConfig(hidden=8, correction_hidden=4)
    model = LatentModel.create(vancomycin_model(), features, config, seed=0)

    def data(cohort):
        return LatentData.build(model, latent_covariates(cohort), cohort["doses"],
                                observation_lists(cohort))  # fmt: skip

    return model, train, hold, data(train), data(hold)


def test_real_generator_is_private_and_a_copier_is_flagged(latent):
    """The latent generator: no covariate row or weight is a training one, the
    membership-inference AUC is within 0.5 ± 0.15 (SE ≈ 0.05 at 60 + 60), synthetic
    patients are no closer to the training set than holdout patients (P ≤ 0.6) — the
    checks pass. A generator that returns the training rows (shuffled) has DCR 0, attack
    AUC 1 and fails."""
    model, _, _, training, holdout = latent
    report = synthetic_report(model, training, holdout, seed=0, weight_based_doses=True)
    privacy = report.privacy
    assert privacy["dcr"]["synthetic_copies"] == 0.0
    assert abs(privacy["membership_inference"]["auc"] - 0.5) < 0.15
    assert privacy["dcr"]["closer_than_holdout"] <= 0.6
    assert report.passed
    assert report.fidelity["column_shapes_score"] > 0.75
    tables = [patient_table(model, d) for d in (training, holdout)]
    rows = np.random.default_rng(0).permutation(N)
    copier = compare_synthetic(tables[0], tables[0].iloc[rows], tables[1])
    assert copier.privacy["dcr"]["synthetic_copies"] == 1.0
    assert (
        copier.privacy["dcr"]["synthetic_median"] == 0.0 < copier.privacy["dcr"]["holdout_median"]
    )
    assert copier.privacy["membership_inference"]["auc"] == 1.0
    assert not copier.passed


def test_same_seed_same_report_and_the_files(latent, tmp_path):
    """Same seed → the same report, number for number; another seed → other patients.
    The files are report.json (the report's numbers) and report.html (the verdict)."""
    model, _, _, training, holdout = latent
    first = synthetic_report(model, training, holdout, seed=5)
    again = synthetic_report(model, training, holdout, seed=5)
    other = synthetic_report(model, training, holdout, seed=6)
    assert first.to_dict() == again.to_dict()
    assert first.to_dict()["privacy"] != other.to_dict()["privacy"]
    paths = write_synthetic_report(first, tmp_path / "out")
    record = json.loads(paths["json"].read_text())
    assert record["privacy"] == json.loads(json.dumps(first.to_dict()["privacy"]))
    assert record["sizes"] == {"training": N, "holdout": N, "synthetic": N}
    page = paths["html"].read_text()
    assert 'id="verdict"' in page and "membership-inference AUC" in page
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_command_line_writes_the_report(latent, tmp_path, study_csv):
    """`twinsim synth-report MODEL_DIR DATA.csv --holdout HOLDOUT.csv --out DIR` loads the
    model folder and the two NONMEM files and writes report.json + report.html."""
    model, train, hold, _, _ = latent
    save_latent_model(model, tmp_path / "model")
    args = ["synth-report", str(tmp_path / "model"), str(study_csv(train, tmp_path / "train.csv")),
            "--holdout", str(study_csv(hold, tmp_path / "holdout.csv")), "--out",
            str(tmp_path / "report"), "--seed", "2", "--weight-based-doses"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "membership-inference AUC" in result.output
    record = json.loads((tmp_path / "report" / "report.json").read_text())
    assert record["settings"]["weight_based_doses"] is True
    assert record["settings"]["command"].startswith("twinsim synth-report")
    assert (tmp_path / "report" / "report.html").is_file()
    missing = CliRunner().invoke(app, [*args[:3], "--holdout", str(tmp_path / "nope.csv"),
                                       "--out", str(tmp_path / "r2")])  # fmt: skip
    assert missing.exit_code == 2
    assert "nope.csv" in missing.output


def test_bad_inputs_name_the_field(latent):
    t, s, h = _reference_tables()
    with pytest.raises(LatentModelError, match=r"`holdout` lacks columns \['ancestry'\]"):
        compare_synthetic(t, s, h.drop(columns="ancestry"))
    with pytest.raises(LatentModelError, match=r"`synthetic` must have at least 2 patients, got 1"):
        compare_synthetic(t, s.iloc[:1], h)
    with pytest.raises(LatentModelError, match=r"`training` must be a pandas DataFrame.*got dict"):
        compare_synthetic(dict(t), s, h)
    with pytest.raises(LatentModelError, match=r"`columns` must map .*'weight': 'number'"):
        compare_synthetic(t, s, h, columns={"weight": "number"})
    with pytest.raises(LatentModelError, match=r"`synthetic` column `crcl` must be numeric"):
        compare_synthetic(t, s.assign(crcl="high"), h)
    with pytest.raises(LatentModelError, match=r"at least 2 training patients, got 1"):
        CovariateCopula.fit({"weight": [70.0]})
    with pytest.raises(LatentModelError, match=r"covariate `weight` must be numeric"):
        CovariateCopula.fit({"weight": ["heavy", "light"]})
    with pytest.raises(LatentModelError, match=r"`n` must be an integer ≥ 1, got 0"):
        CovariateCopula.fit({"weight": [70.0, 80.0]}).sample(0, seed=0)
    model, _, _, training, _ = latent
    no_weight = LatentData(**{**training.__dict__, "covariates": {
        k: v for k, v in training.covariates.items() if k != "weight"}})  # fmt: skip
    with pytest.raises(LatentModelError, match=r"needs covariate columns \['weight'\]"):
        synthesize_patients(model, no_weight, 5, seed=0)
