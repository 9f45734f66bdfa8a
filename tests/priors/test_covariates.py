"""Covariates: diplotypes and CPIC phenotypes, Hardy–Weinberg frequencies, Cockcroft–Gault,
comedications, smoking and the standard covariate table."""

import doctest
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from twinsim import priors
from twinsim.priors import (
    ANCESTRIES,
    COMEDICATIONS,
    COVARIATE_COLUMNS,
    GENES,
    CovariateError,
    _covariates,
    allele_frequencies,
    cockcroft_gault,
    comedication,
    covariate_table,
    diplotype_frequencies,
    parse_diplotype,
    phenotype,
    phenotype_frequencies,
    smoking_induction,
    smoking_status,
)


def test_docstring_examples_run():
    result = doctest.testmod(_covariates, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0


def test_public_surface():
    for name in _covariates.__all__:
        assert getattr(priors, name) is getattr(_covariates, name)


# ---------------------------------------------------------------------------- diplotypes
@pytest.mark.parametrize(
    ("gene", "text", "canonical"),
    [
        ("CYP2C9", "*1/*1", "*1/*1"),
        ("CYP2C9", "*3/*1", "*1/*3"),
        ("cyp2c9", "3/2", "*2/*3"),
        ("CYP2C9", " *11 / *2 ", "*2/*11"),
        ("CYP2C9", "CYP2C9*3/*1", "*1/*3"),
        ("VKORC1", "G/A", "G/A"),
        ("VKORC1", "A/G", "G/A"),
        ("VKORC1", "GA", "G/A"),
        ("VKORC1", "ag", "G/A"),
        ("VKORC1", "AA", "A/A"),
        ("VKORC1", "rs9923231 G/G", "G/G"),
        ("CYP2D6", "*4/*1x2", "*1x2/*4"),
        ("CYP2D6", "*2XN/*1", "*1/*2xN"),
        ("CYP2D6", "*10/*10", "*10/*10"),
        ("CYP2C19", "*17/*2", "*2/*17"),
        ("CYP3A5", "*3/*1", "*1/*3"),
    ],
)
def test_parse_diplotype_canonical(gene, text, canonical):
    assert parse_diplotype(gene, text) == canonical
    assert parse_diplotype(gene, canonical) == canonical  # idempotent


@pytest.mark.parametrize(
    ("gene", "text", "message"),
    [
        (
            "CYP2C9",
            "*1/*99",
            r"`cyp2c9` allele '\*99' in diplotype '\*1/\*99' is not a known CYP2C9 allele; "
            r"known alleles: \*1, \*2, \*3, \*5, \*6, \*8, \*11, \*13",
        ),
        ("CYP2C9", "*1", r"`cyp2c9` diplotype '\*1' must be two alleles separated by '/'"),
        ("CYP2C9", "*1/*2/*3", r"must be two alleles separated by '/'"),
        ("CYP2C9", "*1x2/*1", r"'\*1x2' .* is not a known CYP2C9 allele"),
        ("VKORC1", "G/T", r"`vkorc1` allele 'T' .* known alleles: G, A"),
        ("CYP2C9", 13, r"`cyp2c9` must be a diplotype written as text, e.g. '\*1/\*2', got 13"),
        (
            "CYP2C8",
            "*1/*1",
            r"gene 'CYP2C8' is not known \(did you mean 'CYP2C9'\?\); known genes: CYP2C9, VKORC1, "
            r"CYP2D6, CYP2C19, CYP3A5",
        ),
    ],
)
def test_parse_diplotype_errors(gene, text, message):
    with pytest.raises(CovariateError, match=message):
        parse_diplotype(gene, text)


def test_covariate_error_is_a_value_error():
    assert issubclass(CovariateError, ValueError)


# CPIC CYP2C9 (Theken et al. 2020): activity score 2 NM, 1.5 and 1 IM, 0.5 and 0 PM.
_CYP2C9 = {
    "*1/*1": "normal metabolizer",
    "*1/*2": "intermediate metabolizer",
    "*1/*3": "intermediate metabolizer",
    "*2/*2": "intermediate metabolizer",
    "*2/*3": "poor metabolizer",
    "*3/*3": "poor metabolizer",
    "*1/*8": "intermediate metabolizer",
    "*5/*6": "poor metabolizer",
}
# CPIC CYP2C19 (Lee et al. 2022).
_CYP2C19 = {
    "*1/*1": "normal metabolizer",
    "*1/*17": "rapid metabolizer",
    "*17/*17": "ultrarapid metabolizer",
    "*1/*2": "intermediate metabolizer",
    "*2/*17": "intermediate metabolizer",
    "*1/*3": "intermediate metabolizer",
    "*2/*2": "poor metabolizer",
    "*2/*3": "poor metabolizer",
}
# CPIC CYP2D6 (Caudle et al. 2020): AS 0 PM, 0.25–1 IM, 1.25–2.25 NM, > 2.25 UM.
_CYP2D6 = {
    "*4/*4": "poor metabolizer",
    "*4/*5": "poor metabolizer",
    "*4/*10": "intermediate metabolizer",  # 0.25
    "*10/*10": "intermediate metabolizer",  # 0.5
    "*1/*4": "intermediate metabolizer",  # 1
    "*1/*10": "normal metabolizer",  # 1.25
    "*1/*41": "normal metabolizer",  # 1.5
    "*1/*2": "normal metabolizer",  # 2
    "*1x2/*4": "normal metabolizer",  # 2
    "*1x2/*10": "normal metabolizer",  # 2.25
    "*1x2/*41": "ultrarapid metabolizer",  # 2.5
    "*1/*2x2": "ultrarapid metabolizer",  # 3
    "*1/*2xN": "ultrarapid metabolizer",  # xN scored as two copies
    "*4x2/*4": "poor metabolizer",
}
_CYP3A5 = {
    "*1/*1": "normal metabolizer",
    "*1/*3": "intermediate metabolizer",
    "*3/*3": "poor metabolizer",
    "*6/*7": "poor metabolizer",
}
_VKORC1 = {
    "G/G": "normal warfarin sensitivity",
    "G/A": "increased warfarin sensitivity",
    "A/A": "highly increased warfarin sensitivity",
}


@pytest.mark.parametrize(
    ("gene", "diplotype", "expected"),
    [
        (gene, d, p)
        for gene, table in (
            ("CYP2C9", _CYP2C9),
            ("CYP2C19", _CYP2C19),
            ("CYP2D6", _CYP2D6),
            ("CYP3A5", _CYP3A5),
            ("VKORC1", _VKORC1),
        )
        for d, p in table.items()
    ],
)
def test_cpic_phenotypes(gene, diplotype, expected):
    """Diplotype → phenotype as tabulated in the CPIC guidelines cited in GENES."""
    assert phenotype(gene, diplotype) == expected
    first, second = diplotype.split("/")
    assert phenotype(gene, f"{second}/{first}") == expected  # order does not matter


def test_every_listed_diplotype_has_a_declared_phenotype():
    for gene in GENES.values():
        for diplotype in gene.diplotypes():
            assert gene.phenotype(diplotype) in gene.phenotypes
            assert gene.canonical(diplotype) == diplotype


# ---------------------------------------------------------------------------- frequencies
@pytest.mark.parametrize("gene", list(GENES))
@pytest.mark.parametrize("ancestry", ANCESTRIES)
def test_frequency_tables_are_distributions(gene, ancestry):
    alleles = allele_frequencies(gene, ancestry)
    assert all(0 <= p <= 1 for p in alleles.values())
    assert math.fsum(alleles.values()) == pytest.approx(1.0, abs=1e-12)
    diplotypes = diplotype_frequencies(gene, ancestry)
    assert math.fsum(diplotypes.values()) == pytest.approx(1.0, abs=1e-12)
    phenotypes = phenotype_frequencies(gene, ancestry)
    assert math.fsum(phenotypes.values()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("gene", "allele", "ancestry", "low", "high"),
    [
        ("CYP2C9", "*2", "european", 0.10, 0.16),
        ("CYP2C9", "*2", "east_asian", 0.0, 0.01),
        ("CYP2C9", "*2", "african", 0.01, 0.03),
        ("CYP2C9", "*3", "european", 0.05, 0.09),
        ("CYP2C9", "*3", "east_asian", 0.03, 0.04),
        ("CYP2C9", "*3", "african", 0.005, 0.02),
        ("VKORC1", "A", "european", 0.35, 0.43),
        ("VKORC1", "A", "east_asian", 0.85, 0.95),
        ("VKORC1", "A", "african", 0.05, 0.15),
    ],
)
def test_frequencies_match_references(gene, allele, ancestry, low, high):
    """REFERENCES.md (PharmGKB/CPIC): CYP2C9*2 ≈ 0.13 EUR, < 0.01 EAS, ≈ 0.02 AFR; *3 ≈ 0.07
    EUR, 0.03–0.04 EAS, ≈ 0.01 AFR; VKORC1 −1639A ≈ 0.39 EUR, ≈ 0.9 EAS, ≈ 0.1 AFR."""
    assert low <= allele_frequencies(gene, ancestry)[allele] <= high


def test_hardy_weinberg_by_hand():
    p = {"*1": 0.8, "*2": 0.15, "*3": 0.05}
    freqs = diplotype_frequencies("CYP2C9", p)
    assert freqs["*1/*1"] == pytest.approx(0.64)
    assert freqs["*1/*2"] == pytest.approx(2 * 0.8 * 0.15)
    assert freqs["*2/*3"] == pytest.approx(2 * 0.15 * 0.05)
    assert freqs["*3/*3"] == pytest.approx(0.0025)
    phen = phenotype_frequencies("CYP2C9", p)
    assert phen["poor metabolizer"] == pytest.approx(2 * 0.15 * 0.05 + 0.0025)


@pytest.mark.parametrize(
    ("frequencies", "message"),
    [
        ({"G": 0.5, "A": 0.4}, r"`vkorc1` allele frequencies must sum to 1, got 0.9"),
        ({"G": 1.2, "A": -0.2}, r"`vkorc1` frequency of G must be a number in \[0, 1\], got 1.2"),
        ({"G": 0.5, "T": 0.5}, r"allele 'T' is not a known VKORC1 allele"),
    ],
)
def test_bad_frequencies(frequencies, message):
    with pytest.raises(CovariateError, match=message):
        diplotype_frequencies("VKORC1", frequencies)


def test_unknown_ancestry():
    with pytest.raises(
        CovariateError,
        match=r"`ancestry` 'asian' has no allele frequencies \(did you mean 'east_asian'\?\); "
        r"known ancestry groups: european, east_asian, african",
    ):
        allele_frequencies("CYP2C9", "asian")


# ---------------------------------------------------------------------------- kidney
@pytest.mark.parametrize(
    ("age", "weight", "scr", "female", "options", "expected"),
    [
        (40, 72, 1.0, 0, {}, 100.0),  # (140 − 40)·72 / (72·1)
        (40, 72, 1.0, 1, {}, 85.0),  # × 0.85
        (80, 60, 1.2, 0, {}, 60 * 60 / (72 * 1.2)),
        (25, 100, 0.5, 0, {"cap": 150.0}, 150.0),  # 319.4 capped
        (25, 100, 0.5, 0, {}, 115 * 100 / 36),
        (70, 60, 0.7, 1, {"min_creatinine_over_60": 1.0}, 70 * 60 / 72 * 0.85),
        (60, 60, 0.7, 1, {"min_creatinine_over_60": 1.0}, 80 * 60 / (72 * 0.7) * 0.85),
        (70, 60, 1.4, 0, {"min_creatinine_over_60": 1.0}, 70 * 60 / (72 * 1.4)),
    ],
)
def test_cockcroft_gault_by_hand(age, weight, scr, female, options, expected):
    """Cockcroft & Gault, Nephron 1976: (140 − age)·WT / (72·SCr), × 0.85 for women; Goti et
    al. 2018 cap 150 mL/min and SCr floor 1 mg/dL over 60 y (strictly older). rtol 1e-14."""
    assert float(cockcroft_gault(age, weight, scr, female, **options)) == pytest.approx(
        expected, rel=1e-14
    )


def test_cockcroft_gault_elementwise_numpy_and_jax():
    age = np.array([30.0, 50.0, 70.0, 90.0])
    weight = np.array([80.0, 70.0, 60.0, 50.0])
    scr = np.array([0.9, 1.0, 0.8, 1.5])
    female = np.array([0, 1, 1, 0])
    options = {"cap": 150.0, "min_creatinine_over_60": 1.0}
    expected = np.array(
        [
            min(cockcroft_gault(a, w, s, f, **options), 150)
            for a, w, s, f in zip(age, weight, scr, female, strict=True)
        ]
    )
    on_numpy = cockcroft_gault(age, weight, scr, female, **options)
    assert isinstance(on_numpy, np.ndarray)
    np.testing.assert_allclose(on_numpy, expected, rtol=1e-14)
    jitted = jax.jit(lambda a, w, s, f: cockcroft_gault(a, w, s, f, **options))
    on_jax = jitted(jnp.asarray(age), jnp.asarray(weight), jnp.asarray(scr), jnp.asarray(female))
    np.testing.assert_allclose(np.asarray(on_jax), expected, rtol=1e-14)
    # d CrCL / d weight = CrCL / weight where not capped
    gradient = jax.grad(lambda w: cockcroft_gault(50.0, w, 1.0, 0.0))(70.0)
    assert float(gradient) == pytest.approx(90 / 72, rel=1e-12)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((150, 70, 1.0, 0), r"`age` must be in \[0, 140\) y for Cockcroft–Gault, got 150"),
        ((50, -70, 1.0, 0), r"`weight` must be > 0 kg for Cockcroft–Gault, got -70"),
        ((50, 70, 0.0, 0), r"`serum_creatinine` must be > 0 mg/dL for Cockcroft–Gault, got 0"),
        (
            (50, 70, 1.0, 2),
            r"`female` must be 0 \(male\) or 1 \(female\) for Cockcroft–Gault, got 2",
        ),
    ],
)
def test_cockcroft_gault_errors(args, message):
    with pytest.raises(CovariateError, match=message):
        cockcroft_gault(*args)


# ---------------------------------------------------------------------------- comedications
def test_comedication_catalogue():
    assert comedication("Rifampin") is COMEDICATIONS["rifampicin"]
    assert comedication("co-trimoxazole").name == "sulfamethoxazole"
    assert comedication("St John's Wort").name == "st_johns_wort"
    assert COMEDICATIONS["amiodarone"].inhibits["CYP2C9"] == "moderate"
    assert COMEDICATIONS["rifampicin"].induces["CYP3A4"] == "strong"
    for entry in COMEDICATIONS.values():
        assert entry.inhibits or entry.induces
        strengths = {*entry.inhibits.values(), *entry.induces.values()}
        assert strengths <= {"strong", "moderate", "weak"}
        assert entry.column in COVARIATE_COLUMNS


def test_unknown_comedication_lists_known():
    with pytest.raises(
        CovariateError,
        match=r"comedication 'rifampcin' is not in the interaction catalogue \(did you mean "
        r"'rifampicin'\?\); known comedications: amiodarone, .*rifampicin",
    ):
        comedication("rifampcin")


# ---------------------------------------------------------------------------- smoking
def test_smoking_status():
    assert smoking_status("never") == (0.0, math.inf)
    assert smoking_status("current") == (1.0, math.inf)
    assert smoking_status("Current", 72.0) == (1.0, 72.0)
    assert smoking_status("former", -48.0) == (1.0, -48.0)
    assert smoking_status("former") == (0.0, -math.inf)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("sometimes",),
            r"`smoking` status 'sometimes' is not known; use one of never, current, former",
        ),
        (("never", -3.0), r"`smoking_quit_time` -3 h was given for a never-smoker"),
        (("current", -3.0), r"of a current smoker must be > 0 h .* got -3 h"),
        (("former", 3.0), r"of a former smoker must be ≤ 0 h .* got 3 h"),
    ],
)
def test_smoking_status_errors(args, message):
    with pytest.raises(CovariateError, match=message):
        smoking_status(*args)


def test_smoking_induction_decay():
    """Full induction before quitting, halves every half-life after, 0 for non-smokers."""
    times = jnp.array([0.0, 10.0, 34.0, 58.0])
    np.testing.assert_allclose(
        smoking_induction(times, 1.0, 10.0, 24.0), [1.0, 1.0, 0.5, 0.25], rtol=1e-14
    )
    assert float(smoking_induction(100.0, 1.0, math.inf, 24.0)) == 1.0
    assert float(smoking_induction(0.0, 1.0, -math.inf, 24.0)) == 0.0
    assert float(smoking_induction(5.0, 0.0, math.inf, 24.0)) == 0.0
    slope = jax.grad(lambda t: smoking_induction(t, 1.0, 0.0, 24.0))(24.0)
    assert float(slope) == pytest.approx(-0.5 * math.log(2) / 24, rel=1e-12)


# ---------------------------------------------------------------------------- tables
def test_covariate_table_columns_defaults_and_crcl():
    table = covariate_table(
        [
            {
                "age": 40,
                "sex": "male",
                "weight": 72,
                "serum_creatinine": 1.0,
                "genotype": {"cyp2c9": "*3/*1", "VKORC1": "AG"},
                "comedications": ["Rifampin", "amiodarone"],
                "smoking": 1,
                "smoking_quit_time": 24.0,
            },
            {"female": 1, "crcl": 55.0, "age": 80, "cyp2d6": "*4/*1x2", "ancestry": "East Asian"},
            {},
        ],
        crcl_options={"cap": 150.0},
    )
    assert list(table) == list(COVARIATE_COLUMNS)
    assert all(len(v) == 3 for v in table.values())
    assert table["crcl"][0] == pytest.approx(100.0) and table["crcl"][1] == 55.0
    assert np.isnan(table["crcl"][2]) and np.isnan(table["female"][2])
    assert table["female"].tolist()[:2] == [0.0, 1.0]
    assert table["cyp2c9"].tolist() == ["*1/*3", "", ""]
    assert table["vkorc1"].tolist() == ["G/A", "", ""]
    assert table["cyp2d6"].tolist() == ["", "*1x2/*4", ""]
    assert table["ancestry"].tolist() == ["", "east_asian", ""]
    assert table["comed_rifampicin"].tolist() == [1.0, 0.0, 0.0]
    assert table["comed_amiodarone"].tolist() == [1.0, 0.0, 0.0]
    assert table["comed_fluconazole"].tolist() == [0.0, 0.0, 0.0]
    assert table["smoking_quit_time"].tolist() == [24.0, math.inf, math.inf]
    assert table["adherence"].tolist() == [1.0, 1.0, 1.0]
    for name, column in COVARIATE_COLUMNS.items():
        assert table[name].dtype.kind == ("U" if column.kind == "text" else "f"), name


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"wieght": 70}, r"`records\[0\].wieght` is not a covariate \(did you mean 'weight'\?\)"),
        ({"age": 130}, r"`records\[0\].age` must be between 0 and 120 y, got 130"),
        ({"dialysis": 2}, r"`records\[0\].dialysis` must be 0 or 1, got 2"),
        ({"adherence": "most"}, r"`records\[0\].adherence` must be a number in 1, got 'most'"),
        ({"sex": "x"}, r"`records\[0\].sex` must be 'female' or 'male', got 'x'"),
        ({"sex": "female", "female": 1}, r"`records\[0\]` gives both `sex` and `female`"),
        ({"cyp2c9": "*1/*7"}, r"`cyp2c9` allele '\*7' .* known alleles"),
        ({"comedications": ["aspirinn"]}, r"comedication 'aspirinn' is not in the interaction"),
        ({"ancestry": "martian"}, r"`ancestry` 'martian' has no allele frequencies"),
    ],
)
def test_covariate_table_errors(record, message):
    with pytest.raises(CovariateError, match=message):
        covariate_table([record])


def test_every_combination_of_listed_alleles_parses():
    for gene in GENES.values():
        for a, b in itertools.product(gene.alleles, repeat=2):
            canonical = parse_diplotype(gene.name, f"{b}/{a}")
            assert canonical == parse_diplotype(gene.name, f"{a}/{b}")
