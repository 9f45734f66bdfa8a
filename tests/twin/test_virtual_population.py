"""Virtual populations: batch-size invariance, genotype/phenotype frequencies vs
Hardy–Weinberg, demographics, lifestyle prevalences, criteria and their report.

Statistical tests use fixed seeds; each is calibrated to fail with probability ≤ 0.001
for a correct generator (chi-square / binomial at α = 0.001), so the whole file's false
failure rate under a fresh seed is below 2 % (about 20 such tests)."""

import doctest
import math

import numpy as np
import pytest
from scipy import stats

from twinsim import twin
from twinsim.priors import (
    COVARIATE_COLUMNS,
    GENES,
    CovariateError,
    allele_frequencies,
    diplotype_frequencies,
    phenotype_frequencies,
)
from twinsim.twin import (
    Lifestyle,
    VirtualPopulationConfig,
    _virtual,
    apply_criteria,
    draw_candidates,
    generate_population,
)

ALPHA = 1e-3
MIX = {"european": 1 / 3, "east_asian": 1 / 3, "african": 1 / 3}


@pytest.fixture(scope="module")
def mixed():
    """30 000 candidates, three ancestry groups, no criteria (so no selection bias)."""
    config = VirtualPopulationConfig(
        ancestry=MIX,
        comedications={"amiodarone": 0.1, "rifampin": 0.02},
        lifestyle=Lifestyle(adherence=(0.85, 20.0), quitting_during=0.5),
    )
    return generate_population(config, 30_000, seed=2024).covariates


def test_docstring_examples_run():
    result = doctest.testmod(_virtual, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 3 and result.failed == 0


def test_public_surface():
    for name in _virtual.__all__:
        assert getattr(twin, name) is getattr(_virtual, name)


# ---------------------------------------------------------------------------- determinism
def test_identical_whatever_the_batch_size():
    """1000 subjects in one batch or in batches of 100 (with criteria rejecting some)."""
    config = VirtualPopulationConfig(
        ancestry=MIX, criteria=["age >= 40 and crcl >= 30"], comedications={"fluconazole": 0.1}
    )
    one = generate_population(config, 1000, seed=11, batch_size=1000)
    chunked = generate_population(config, 1000, seed=11, batch_size=100)
    odd = generate_population(config, 1000, seed=11, batch_size=337)
    for other in (chunked, odd):
        assert other.report == one.report
        assert list(other.covariates) == list(one.covariates)
        for name, values in one.covariates.items():
            np.testing.assert_array_equal(other.covariates[name], values, err_msg=name)
    other_seed = generate_population(config, 1000, seed=12)
    assert not np.array_equal(other_seed.covariates["age"], one.covariates["age"])


def test_candidate_depends_only_on_seed_and_id():
    config = VirtualPopulationConfig(ancestry=MIX)
    full = draw_candidates(config, 5, np.arange(50))
    some = draw_candidates(config, 5, [49, 3, 17])
    for name, values in full.items():
        np.testing.assert_array_equal(some[name], values[[49, 3, 17]], err_msg=name)


def test_adding_a_comedication_keeps_other_draws():
    """Each covariate has its own random stream, so configs can grow without reshuffling."""
    base = draw_candidates(VirtualPopulationConfig(), 1, np.arange(200))
    more = draw_candidates(
        VirtualPopulationConfig(comedications={"amiodarone": 0.3}), 1, np.arange(200)
    )
    for name in ("age", "weight", "cyp2c9", "smoking", "serum_creatinine"):
        np.testing.assert_array_equal(base[name], more[name])
    assert more["comed_amiodarone"].sum() > 0 and base["comed_amiodarone"].sum() == 0


# ---------------------------------------------------------------------------- genotypes
def _chi_square(counts: dict[str, int], expected_p: dict[str, float]) -> float:
    """P-value of a chi-square goodness of fit; categories expected < 5 are pooled."""
    n = sum(counts.values())
    assert set(counts) <= set(expected_p), set(counts) - set(expected_p)
    observed, expected = [], []
    pooled_o = pooled_e = 0.0
    for category, p in expected_p.items():
        if n * p >= 5:
            observed.append(counts.get(category, 0))
            expected.append(n * p)
        else:
            pooled_o += counts.get(category, 0)
            pooled_e += n * p
    if pooled_e > 0:
        observed.append(pooled_o)
        expected.append(pooled_e)
    if len(observed) < 2:
        return 1.0
    return float(stats.chisquare(observed, expected).pvalue)


@pytest.mark.parametrize("ancestry", list(MIX))
@pytest.mark.parametrize("gene", list(GENES))
def test_diplotype_and_phenotype_frequencies_match_hardy_weinberg(mixed, gene, ancestry):
    """Chi-square of drawn diplotypes and phenotypes vs the HWE frequencies of the allele
    table, within each ancestry group (≈ 10 000 subjects each), α = 0.001."""
    rows = mixed["ancestry"] == ancestry
    column = GENES[gene].column
    values, counts = np.unique(mixed[column][rows], return_counts=True)
    diplotypes = dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert _chi_square(diplotypes, diplotype_frequencies(gene, ancestry)) > ALPHA
    phenotypes: dict[str, int] = {}
    for diplotype, count in diplotypes.items():
        label = GENES[gene].phenotype(diplotype)
        phenotypes[label] = phenotypes.get(label, 0) + count
    assert _chi_square(phenotypes, phenotype_frequencies(gene, ancestry)) > ALPHA


def test_allele_frequencies_within_binomial_error(mixed):
    """CYP2C9*2/*3 and VKORC1 A allele counts (2 per subject) vs the table, α = 0.001."""
    for ancestry in MIX:
        rows = mixed["ancestry"] == ancestry
        n_alleles = 2 * int(rows.sum())
        for gene, allele in (("CYP2C9", "*2"), ("CYP2C9", "*3"), ("VKORC1", "A")):
            column = mixed[GENES[gene].column][rows]
            count = sum(d.split("/").count(allele) for d in column.tolist())
            p = diplotype_frequencies(gene, ancestry)  # any table entry gives p
            p_allele = sum(f * d.split("/").count(allele) / 2 for d, f in p.items())
            test = stats.binomtest(count, n_alleles, p_allele)
            assert test.pvalue > ALPHA, (ancestry, gene, allele, count / n_alleles, p_allele)


def test_ancestry_shares(mixed):
    values, counts = np.unique(mixed["ancestry"], return_counts=True)
    observed = dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert _chi_square(observed, MIX) > ALPHA


def test_custom_ancestry_with_given_frequencies():
    config = VirtualPopulationConfig(
        ancestry={"south_asian": 1.0},
        genes=("CYP2C9", "vkorc1"),
        genotype_frequencies={
            "south_asian": {
                "CYP2C9": {"*1": 0.84, "*2": 0.04, "*3": 0.12},
                "VKORC1": {"G": 0.86, "A": 0.14},
            }
        },
    )
    table = generate_population(config, 5000, seed=3).covariates
    values, counts = np.unique(table["cyp2c9"], return_counts=True)
    observed = dict(zip(values.tolist(), counts.tolist(), strict=True))
    expected = diplotype_frequencies("CYP2C9", {"*1": 0.84, "*2": 0.04, "*3": 0.12})
    assert _chi_square(observed, expected) > ALPHA
    assert set(table["cyp2d6"].tolist()) == {""}  # not genotyped


# ---------------------------------------------------------------------------- demographics
def test_demographics_are_realistic_and_correlated(mixed):
    """Means by sex (NHANES 2015–2018 ranges), weight–height and age–CrCL correlations."""
    female = mixed["female"] == 1
    assert abs(female.mean() - 0.5) < 3.3 * math.sqrt(0.25 / female.size)  # α ≈ 0.001
    european = mixed["ancestry"] == "european"
    assert 172 < mixed["height"][european & ~female].mean() < 180
    assert 158 < mixed["height"][european & female].mean() < 166
    assert (
        mixed["height"][mixed["ancestry"] == "east_asian"].mean() < mixed["height"][european].mean()
    )
    bmi = mixed["weight"] / (mixed["height"] / 100) ** 2
    assert 26 < np.median(bmi[european]) < 30
    assert np.corrcoef(mixed["height"], mixed["weight"])[0, 1] > 0.3
    assert np.median(mixed["serum_creatinine"][female]) < np.median(
        mixed["serum_creatinine"][~female]
    )
    assert 0.8 < np.median(mixed["serum_creatinine"][~female]) < 1.15
    assert np.corrcoef(mixed["age"], mixed["crcl"])[0, 1] < -0.4
    assert mixed["age"].min() >= 18 and mixed["age"].max() <= 85
    np.testing.assert_allclose(
        mixed["crcl"],
        (140 - mixed["age"])
        * mixed["weight"]
        / (72 * mixed["serum_creatinine"])
        * np.where(female, 0.85, 1.0),
        rtol=1e-12,
    )


def test_truncated_normal_age():
    config = VirtualPopulationConfig(age_range=(65, 90), age_mean=70, age_sd=8)
    age = draw_candidates(config, 0, np.arange(5000))["age"]
    assert age.min() >= 65 and age.max() <= 90
    truncated = stats.truncnorm((65 - 70) / 8, (90 - 70) / 8, loc=70, scale=8)
    assert stats.kstest(age, truncated.cdf).pvalue > ALPHA


def test_lifestyle_and_comedication_prevalences(mixed):
    """Binomial tests of the configured prevalences, α = 0.001 each."""
    n = mixed["age"].size
    life = Lifestyle()
    current = (mixed["smoking"] == 1) & (mixed["smoking_quit_time"] >= 0)
    former = (mixed["smoking"] == 1) & (mixed["smoking_quit_time"] < 0)
    for observed, p in (
        (current.sum(), life.current_smoker),
        (former.sum(), life.former_smoker),
        ((mixed["alcohol_units_per_week"] > 0).sum(), life.drinker),
        (mixed["comed_amiodarone"].sum(), 0.1),
        (mixed["comed_rifampicin"].sum(), 0.02),
    ):
        assert stats.binomtest(int(observed), n, p).pvalue > ALPHA, (observed / n, p)
    quitting = current & np.isfinite(mixed["smoking_quit_time"])
    assert stats.binomtest(int(quitting.sum()), int(current.sum()), 0.5).pvalue > ALPHA
    assert np.all(mixed["smoking_quit_time"][quitting] <= life.quitting_window)
    assert np.all(mixed["smoking_quit_time"][former] > -life.former_quit_window)
    assert np.all(mixed["cigarettes_per_day"][mixed["smoking"] == 0] == 0)
    assert np.all(mixed["cigarettes_per_day"][mixed["smoking"] == 1] >= 1)
    assert abs(mixed["adherence"].mean() - 0.85) < 0.005
    assert mixed["adherence"].min() >= 0 and mixed["adherence"].max() <= 1
    assert 70 < np.median(mixed["vitamin_k_ug_per_day"]) < 110
    assert mixed["comed_fluconazole"].sum() == 0


def test_dialysis_prevalence_and_creatinine():
    table = draw_candidates(VirtualPopulationConfig(dialysis=0.2), 9, np.arange(4000))
    on = table["dialysis"] == 1
    assert stats.binomtest(int(on.sum()), on.size, 0.2).pvalue > ALPHA
    assert np.median(table["serum_creatinine"][on]) > 5
    assert np.median(table["serum_creatinine"][~on]) < 1.2


def test_table_has_the_standard_columns(mixed):
    assert list(mixed) == ["id", *COVARIATE_COLUMNS]
    assert mixed["id"].dtype == np.int64
    for name, column in COVARIATE_COLUMNS.items():
        assert mixed[name].dtype.kind == ("U" if column.kind == "text" else "f"), name


# ---------------------------------------------------------------------------- criteria
def test_criteria_filter_and_report():
    config = VirtualPopulationConfig(
        ancestry=MIX,
        criteria=[
            "age >= 60 and crcl >= 30",
            'cyp2c9 in ("*1/*1", "*1/*2", "*1/*3")',
            lambda t: t["weight"] / (t["height"] / 100) ** 2 < 35,
        ],
    )
    population = generate_population(config, 2000, seed=4)
    table, report = population.covariates, population.report
    assert len(population) == report.accepted == report.requested == 2000
    assert report.acceptance_rate == pytest.approx(2000 / report.candidates)
    assert np.all(table["age"] >= 60) and np.all(table["crcl"] >= 30)
    assert set(table["cyp2c9"].tolist()) <= {"*1/*1", "*1/*2", "*1/*3"}
    assert np.all(table["weight"] / (table["height"] / 100) ** 2 < 35)
    # the reported rates are those of the candidates examined
    candidates = draw_candidates(config, 4, np.arange(report.candidates))
    keep = apply_criteria(candidates, config.criteria)
    assert keep.sum() == 2000 and keep[-1]  # stops at the 2000th accepted candidate
    np.testing.assert_array_equal(candidates["id"][keep], table["id"])
    assert report.criteria["age >= 60 and crcl >= 30"] == pytest.approx(
        apply_criteria(candidates, "age >= 60 and crcl >= 30").mean()
    )
    assert "<lambda>" in report.criteria
    assert "acceptance rate" in str(report)
    frame = population.to_frame()
    assert frame.shape == (2000, len(COVARIATE_COLUMNS)) and frame.index.name == "id"


def test_criteria_expressions():
    table = {
        "age": np.array([16.0, 40.0, 70.0, np.nan]),
        "crcl": np.array([90.0, 25.0, 60.0, 80.0]),
        "cyp2c9": np.array(["*1/*1", "*3/*3", "*1/*2", "*1/*1"]),
    }
    assert apply_criteria(table, "age >= 18 and crcl >= 30").tolist() == [0, 0, 1, 0]
    # NaN fails every comparison, so `not` turns it into a pass: write positive comparisons
    assert apply_criteria(table, "not (age < 18) or crcl > 85").tolist() == [1, 1, 1, 1]
    assert apply_criteria(table, "age >= 18 or crcl > 85").tolist() == [1, 1, 1, 0]
    assert apply_criteria(table, "18 <= age < 65").tolist() == [0, 1, 0, 0]
    assert apply_criteria(table, 'cyp2c9 != "*3/*3"').tolist() == [1, 0, 1, 1]
    assert apply_criteria(table, 'cyp2c9 not in ["*3/*3", "*1/*2"]').tolist() == [1, 0, 0, 1]
    assert apply_criteria(table, "crcl / 2 - 10 > 20").tolist() == [1, 0, 0, 1]
    assert apply_criteria(table, []).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("criterion", "message"),
    [
        ("age >= ", r"criterion 'age >= ' is not a valid expression"),
        ("agee >= 18", r"criterion 'agee >= 18' uses 'agee', which is not a covariate column"),
        ("__import__('os')", r"uses Call, which criteria do not allow"),
        ("age.real > 3", r"uses Attribute, which criteria do not allow"),
        ("abs(age) > 3", r"uses Call, which criteria do not allow"),
        ("age + 1", r"must give true/false per subject"),
    ],
)
def test_bad_criteria(criterion, message):
    table = {"age": np.array([30.0]), "crcl": np.array([90.0])}
    with pytest.raises(CovariateError, match=message):
        apply_criteria(table, criterion)


def test_impossible_criteria_report_rates():
    config = VirtualPopulationConfig(criteria=["age > 80", "crcl > 200"])
    with pytest.raises(
        CovariateError,
        match=r"only \d+ of 100 subjects met the criteria among 3000 candidates .* "
        r"'age > 80': \d+\.\d+%, 'crcl > 200': \d+\.\d+%\); relax the criteria",
    ):
        generate_population(config, 100, seed=1, max_candidates=3000)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"ancestry": {"martian": 1.0}},
            r"`ancestry` 'martian' has no allele frequencies.*add `genotype_frequencies\['martian'\]",
        ),
        ({"ancestry": {"european": -1}}, r"`ancestry` must map ancestry groups to shares ≥ 0"),
        ({"age_range": (50, 20)}, r"`age_range` must be \(lowest, highest\)"),
        ({"age_mean": 50}, r"give `age_mean` and `age_sd` > 0 together"),
        ({"female_fraction": 1.5}, r"`female_fraction` must be a fraction in \[0, 1\], got 1.5"),
        ({"comedications": {"aspirinn": 0.1}}, r"comedication 'aspirinn' is not in the"),
        ({"comedications": {"amiodarone": 2}}, r"`comedications.amiodarone` must be a fraction"),
        ({"genes": ("CYP2C8",)}, r"gene 'CYP2C8' is not known; known genes: CYP2C9"),
        ({"criteria": "age >> 3"}, r"criterion 'age >> 3' uses RShift"),
        ({"criteria": [3]}, r"`criteria` items must be expressions \(text\) or callables"),
    ],
)
def test_config_errors(fields, message):
    with pytest.raises(CovariateError, match=message):
        VirtualPopulationConfig(**fields)


def test_lifestyle_errors():
    with pytest.raises(
        CovariateError, match=r"`lifestyle.current_smoker` \+ `lifestyle.former_smoker` must be ≤ 1"
    ):
        Lifestyle(current_smoker=0.7, former_smoker=0.5)
    with pytest.raises(CovariateError, match=r"`lifestyle.drinker` must be a fraction"):
        Lifestyle(drinker=-0.1)


def test_zero_subjects():
    population = generate_population(VirtualPopulationConfig(), 0, seed=0)
    assert len(population) == 0 and population.report.candidates == 0
    assert list(population.covariates) == ["id", *COVARIATE_COLUMNS]


def test_restricting_alleles_renormalises():
    """Hamberg 2007 knows CYP2C9 *1, *2, *3 only: draw from the conditional distribution."""
    config = VirtualPopulationConfig(
        ancestry={"african": 1.0}, alleles={"cyp2c9": ("*1", "2", "*3")}, genes=("CYP2C9",)
    )
    table = generate_population(config, 5000, seed=8).covariates
    values, counts = np.unique(table["cyp2c9"], return_counts=True)
    observed = dict(zip(values.tolist(), counts.tolist(), strict=True))
    full = allele_frequencies("CYP2C9", "african")
    kept = {a: full[a] for a in ("*1", "*2", "*3")}
    total = sum(kept.values())
    expected = diplotype_frequencies("CYP2C9", {a: f / total for a, f in kept.items()})
    assert set(observed) <= set(expected)
    assert _chi_square(observed, expected) > ALPHA
    with pytest.raises(CovariateError, match=r"`alleles\['CYP2C9'\]` \['\*13'\] have frequency 0"):
        VirtualPopulationConfig(ancestry={"african": 1.0}, alleles={"CYP2C9": ("*13",)})
    with pytest.raises(CovariateError, match=r"allele '\*99' is not a known CYP2C9 allele"):
        VirtualPopulationConfig(alleles={"CYP2C9": ("*1", "*99")})
