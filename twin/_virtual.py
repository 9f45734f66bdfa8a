"""Virtual populations: realistic covariate sets for virtual cohorts and trials.

A :class:`VirtualPopulationConfig` says who is in the population: the ancestry mix, the
age range and distribution, the share of women, how height, weight (through BMI) and
serum creatinine depend on sex, age and ancestry and on each other, the prevalence of
smoking, drinking, comedications and dialysis, and the trial's inclusion/exclusion
criteria. :func:`generate_population` draws candidates and keeps those meeting the
criteria, and reports the acceptance rate it achieved.

Reproducibility: candidate ``i``'s covariates are a function of ``(seed, i)`` alone — its
random numbers come from ``subject_keys(seed, [i])`` (folded with a fixed number per
covariate), and accepted subjects are the first ``n`` acceptable candidates in id order,
so the population is the same whatever the batch size.

Genotypes are drawn allele by allele from the subject's ancestry group's allele
frequencies (Hardy–Weinberg: two independent draws), from :data:`twinsim.priors.GENES` or
frequencies given in the config.

Sources of the default demographic numbers (approximate readings, all adjustable in
:class:`Demographics`):

* height by sex — NHANES 2015–2018 adults: mean 175 cm (men), 161 cm (women), SD ≈ 7 cm
  (Fryar et al., Anthropometric reference data for children and adults: United States,
  2015–2018, NCHS Vital Health Stat 3(46), 2021); ≈ 1 cm lower per decade after 50;
  East Asian adults ≈ 5 cm shorter (NHANES non-Hispanic Asian).
* BMI — the same NHANES report: median ≈ 28.5–29 kg/m² in middle age, lower in young
  and very old adults, right-skewed (log-normal, SD of log BMI ≈ 0.2); lower in East
  Asian adults (≈ 25 kg/m²). Weight = BMI · height², so weight correlates with height.
* serum creatinine — NHANES (IDMS-traceable) medians ≈ 0.9 mg/dL in men and ≈ 0.7 mg/dL
  in women, higher in people of African ancestry (greater creatinine generation, the
  reason for CKD-EPI 2009's race coefficient), rising with age as GFR falls ≈ 1
  mL/min/1.73 m² per year after 40 (Levey et al., Ann Intern Med 2009;150:604), with a
  chronic-kidney-disease tail whose prevalence rises with age (≈ 15 % stage 3–5 over 70
  in NHANES 1999–2004; Coresh et al., JAMA 2007;298:2038).
* lifestyle — adult current smoking ≈ 12–20 % (US NHIS 2020 12.5 %, EU ≈ 20 %), former
  ≈ 20–25 %; dietary vitamin K (phylloquinone) median ≈ 90 µg/day, wide spread (NHANES
  What We Eat in America 2011–2012).
"""

from __future__ import annotations

import ast
import math
import operator
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr, ndtri

from ..priors import (
    COMEDICATIONS,
    COVARIATE_COLUMNS,
    GENES,
    CovariateError,
    allele_frequencies,
    cockcroft_gault,
    comedication,
    diplotype_frequencies,
)
from ..simulators import subject_keys

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Demographics",
    "Lifestyle",
    "PopulationReport",
    "VirtualPopulation",
    "VirtualPopulationConfig",
    "apply_criteria",
    "draw_candidates",
    "generate_population",
]

Criterion = str | Callable[[Mapping[str, np.ndarray]], Any]
Table = dict[str, np.ndarray]


# ============================================================================ config
@dataclass(frozen=True, kw_only=True)
class Demographics:
    """How height, BMI and serum creatinine depend on sex, age and ancestry.

    Height is normal; BMI and serum creatinine are log-normal; their three standard-normal
    residuals are correlated by ``correlation`` (order: height, log BMI, log creatinine).
    Defaults and their sources: see the module docstring.

    Attributes
    ----------
    height_mean
        ``(men, women)`` mean height at 50 y or younger, cm.
    height_sd
        ``(men, women)`` SD of height, cm.
    height_loss_per_year_over_50
        cm per year of age above 50.
    bmi_median
        Median BMI at ``bmi_peak_age``, kg/m².
    bmi_peak_age, bmi_curvature
        Median BMI = ``bmi_median − bmi_curvature · (age − bmi_peak_age)²``.
    bmi_sd_log
        SD of log BMI.
    creatinine_median
        ``(men, women)`` median serum creatinine at 40 y or younger, mg/dL.
    creatinine_log_slope_over_40
        Increase of log creatinine per year above 40.
    creatinine_sd_log
        SD of log creatinine (kidney-healthy).
    ckd_prevalence
        ``(at 40 y or younger, per year above 40)``: probability of the CKD tail.
    ckd_creatinine_factor
        ``(median, SD of log)`` multiplier of creatinine in the CKD tail.
    dialysis_creatinine
        ``(median, SD of log)`` pre-dialysis serum creatinine, mg/dL.
    ancestry_offsets
        ``ancestry → {"height": cm, "bmi": kg/m², "log_creatinine": log units}``.
    correlation
        3×3 correlation of the residuals (height, log BMI, log creatinine).
    """

    height_mean: tuple[float, float] = (175.3, 161.5)
    height_sd: tuple[float, float] = (7.4, 7.0)
    height_loss_per_year_over_50: float = 0.1
    bmi_median: float = 28.8
    bmi_peak_age: float = 55.0
    bmi_curvature: float = 0.0025
    bmi_sd_log: float = 0.2
    creatinine_median: tuple[float, float] = (0.92, 0.72)
    creatinine_log_slope_over_40: float = 0.004
    creatinine_sd_log: float = 0.17
    ckd_prevalence: tuple[float, float] = (0.02, 0.003)
    ckd_creatinine_factor: tuple[float, float] = (1.6, 0.3)
    dialysis_creatinine: tuple[float, float] = (7.0, 0.3)
    ancestry_offsets: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: {
            "european": {"height": 1.5, "bmi": 0.0, "log_creatinine": 0.0},
            "east_asian": {"height": -5.0, "bmi": -4.0, "log_creatinine": -0.05},
            "african": {"height": 0.5, "bmi": 1.0, "log_creatinine": 0.1},
        }
    )
    correlation: tuple[tuple[float, ...], ...] = (
        (1.0, 0.0, 0.15),
        (0.0, 1.0, 0.1),
        (0.15, 0.1, 1.0),
    )

    def __post_init__(self) -> None:
        corr = np.asarray(self.correlation, dtype=float)
        if (
            corr.shape != (3, 3)
            or not np.allclose(corr, corr.T)
            or not np.allclose(np.diag(corr), 1)
            or np.linalg.eigvalsh(corr).min() <= 0
        ):
            raise CovariateError(
                f"`demographics.correlation` must be a 3×3 positive-definite correlation matrix "
                f"(height, log BMI, log creatinine), got {corr.tolist()}"
            )


@dataclass(frozen=True, kw_only=True)
class Lifestyle:
    """Prevalence and distribution of lifestyle covariates.

    Attributes
    ----------
    current_smoker, former_smoker
        Fractions of the population (the rest never smoked).
    former_quit_window
        Former smokers quit uniformly within this many hours before t = 0.
    quitting_during
        Fraction of current smokers who quit during the simulation, uniformly in
        ``(0, quitting_window]`` h.
    quitting_window
        h.
    cigarettes_per_day
        ``(median, SD of log)`` for smokers.
    drinker
        Fraction who drink alcohol.
    alcohol_units_per_week
        ``(median, SD of log)`` for drinkers, UK units (8 g).
    vitamin_k_ug_per_day
        ``(median, SD of log)`` dietary vitamin K, µg/day.
    adherence
        ``(mean, concentration)`` of a beta distribution; mean 1 means everyone takes every
        dose.
    """

    current_smoker: float = 0.15
    former_smoker: float = 0.22
    former_quit_window: float = 10 * 365.25 * 24
    quitting_during: float = 0.0
    quitting_window: float = 14 * 24
    cigarettes_per_day: tuple[float, float] = (12.0, 0.5)
    drinker: float = 0.6
    alcohol_units_per_week: tuple[float, float] = (5.0, 0.9)
    vitamin_k_ug_per_day: tuple[float, float] = (90.0, 0.6)
    adherence: tuple[float, float] = (1.0, 20.0)

    def __post_init__(self) -> None:
        for name in ("current_smoker", "former_smoker", "quitting_during", "drinker"):
            _fraction(f"lifestyle.{name}", getattr(self, name))
        if self.current_smoker + self.former_smoker > 1:
            raise CovariateError(
                f"`lifestyle.current_smoker` + `lifestyle.former_smoker` must be ≤ 1, got "
                f"{self.current_smoker:g} + {self.former_smoker:g}"
            )
        mean, concentration = self.adherence
        if not (0 < mean <= 1 and concentration > 0):
            raise CovariateError(
                f"`lifestyle.adherence` must be (mean in (0, 1], concentration > 0), got {self.adherence}"
            )


def _fraction(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and 0 <= value <= 1):
        raise CovariateError(f"`{name}` must be a fraction in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class VirtualPopulationConfig:
    """Who is in a virtual population.

    Attributes
    ----------
    ancestry
        ``{ancestry group: share}`` (shares are normalised); groups without built-in
        allele frequencies need ``genotype_frequencies``.
    age_range
        ``(lowest, highest)`` age, y.
    age_mean, age_sd
        When given, age is normal truncated to ``age_range``; otherwise uniform on it.
    female_fraction
        Share of women.
    genes
        Genes to genotype (others are left ``""``).
    genotype_frequencies
        ``{ancestry: {gene: {allele: frequency}}}`` overriding or adding to the built-in
        frequencies.
    alleles
        ``{gene: alleles}`` to draw only these alleles (frequencies renormalised, i.e.
        conditional on carrying none of the others), for a drug model whose covariate
        levels know only some, e.g. ``{"CYP2C9": ("*1", "*2", "*3")}`` for Hamberg 2007.
    comedications
        ``{name: prevalence}``; names from :data:`twinsim.priors.COMEDICATIONS`.
    dialysis
        Prevalence of haemodialysis.
    lifestyle, demographics
        See :class:`Lifestyle`, :class:`Demographics`.
    criteria
        Inclusion/exclusion: expressions over the covariate columns (``"age >= 18 and crcl
        >= 30"``, ``'cyp2c9 != "*3/*3"'``) or callables ``table → bool array``; a subject
        is kept when all hold.
    crcl_options
        Keywords of :func:`twinsim.priors.cockcroft_gault` (``cap``,
        ``min_creatinine_over_60``).
    """

    ancestry: Mapping[str, float] = field(default_factory=lambda: {"european": 1.0})
    age_range: tuple[float, float] = (18.0, 85.0)
    age_mean: float | None = None
    age_sd: float | None = None
    female_fraction: float = 0.5
    genes: tuple[str, ...] = tuple(GENES)
    genotype_frequencies: Mapping[str, Mapping[str, Mapping[str, float]]] = field(
        default_factory=dict
    )
    alleles: Mapping[str, Sequence[str]] = field(default_factory=dict)
    comedications: Mapping[str, float] = field(default_factory=dict)
    dialysis: float = 0.0
    lifestyle: Lifestyle = field(default_factory=Lifestyle)
    demographics: Demographics = field(default_factory=Demographics)
    criteria: Criterion | Sequence[Criterion] = ()
    crcl_options: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "ancestry",
            {_ancestry_key(k): v for k, v in dict(self.ancestry).items()},
        )
        if not self.ancestry or any(
            not (isinstance(v, int | float) and v >= 0) for v in self.ancestry.values()
        ):
            raise CovariateError(
                f"`ancestry` must map ancestry groups to shares ≥ 0, got {dict(self.ancestry)}; "
                "e.g. {'european': 0.6, 'african': 0.2, 'east_asian': 0.2}"
            )
        if sum(self.ancestry.values()) <= 0:
            raise CovariateError(f"`ancestry` shares must not all be 0, got {dict(self.ancestry)}")
        lo, hi = self.age_range
        if not 0 <= lo <= hi <= 120:
            raise CovariateError(
                f"`age_range` must be (lowest, highest) with 0 ≤ lowest ≤ highest ≤ 120 y, got {self.age_range}"
            )
        if (self.age_mean is None) != (self.age_sd is None) or (
            self.age_sd is not None and not self.age_sd > 0
        ):
            raise CovariateError(
                f"give `age_mean` and `age_sd` > 0 together (truncated normal) or neither "
                f"(uniform), got age_mean={self.age_mean}, age_sd={self.age_sd}"
            )
        _fraction("female_fraction", self.female_fraction)
        _fraction("dialysis", self.dialysis)
        for name, prevalence in self.comedications.items():
            comedication(name)
            _fraction(f"comedications.{name}", prevalence)
        object.__setattr__(self, "genes", tuple(GENES[_gene_name(g)].name for g in self.genes))
        self.allele_table()  # every ancestry in the mix needs frequencies for every gene
        if isinstance(self.criteria, str) or callable(self.criteria):
            object.__setattr__(self, "criteria", (self.criteria,))
        for criterion in self.criteria:
            if isinstance(criterion, str):
                _compile(criterion)
            elif not callable(criterion):
                raise CovariateError(
                    f"`criteria` items must be expressions (text) or callables, got {criterion!r}"
                )

    @property
    def ancestries(self) -> tuple[str, ...]:
        """Ancestry groups of the mix, in the order given."""
        return tuple(self.ancestry)

    def allele_table(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """``gene → (allele names, frequencies[ancestry, allele])`` for the ancestry mix."""
        table = {}
        restrict = {
            _gene_name(g): {GENES[_gene_name(g)].allele(a).name for a in names}
            for g, names in self.alleles.items()
        }
        for gene_name in self.genes:
            gene = GENES[gene_name]
            per_ancestry = []
            for ancestry in self.ancestries:
                given = {
                    _gene_name(g): f for g, f in self.genotype_frequencies.get(ancestry, {}).items()
                }
                if gene_name in given:
                    freqs = _frequencies(gene_name, given[gene_name], ancestry)
                else:
                    try:
                        freqs = dict(allele_frequencies(gene_name, ancestry))
                    except CovariateError as error:
                        raise CovariateError(
                            f"{error}: add `genotype_frequencies[{ancestry!r}][{gene_name!r}]` "
                            "or leave the gene out of `genes`"
                        ) from None
                if gene_name in restrict:
                    freqs = {a: f for a, f in freqs.items() if a in restrict[gene_name]}
                    total = sum(freqs.values())
                    if not total > 0:
                        raise CovariateError(
                            f"`alleles[{gene_name!r}]` {list(restrict[gene_name])} have frequency "
                            f"0 in {ancestry!r}; allow more alleles"
                        )
                    freqs = {a: f / total for a, f in freqs.items()}
                per_ancestry.append(freqs)
            names = tuple(
                sorted(
                    {a for f in per_ancestry for a in f},
                    key=lambda a: gene._sort_key(gene.allele(a)),
                )
            )
            matrix = np.array([[f.get(a, 0.0) for a in names] for f in per_ancestry])
            table[gene_name] = (names, matrix)
        return table


def _ancestry_key(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _gene_name(name: str) -> str:
    key = name.strip().upper() if isinstance(name, str) else name
    if key not in GENES:
        raise CovariateError(f"gene {name!r} is not known; known genes: {', '.join(GENES)}")
    return key


def _frequencies(gene_name: str, given: Mapping[str, float], ancestry: str) -> dict[str, float]:
    diplotype_frequencies(gene_name, given)  # validates names, values and the sum
    gene = GENES[gene_name]
    return {gene.allele(a).name: float(f) for a, f in given.items()}


# ============================================================================ draws
# Fixed stream numbers, so adding a covariate never changes the draws of another.
def _stream(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@jax.jit
def _uniforms(keys: jax.Array, streams: jax.Array) -> jax.Array:
    """``u[subject, stream]`` in [0, 1): one uniform per (subject key, stream number)."""

    def per_subject(key: jax.Array) -> jax.Array:
        return jax.vmap(lambda s: jax.random.uniform(jax.random.fold_in(key, s)))(streams)

    return jax.vmap(per_subject)(keys)


_BASE_STREAMS = (
    "ancestry",
    "sex",
    "age",
    "z_height",
    "z_bmi",
    "z_creatinine",
    "ckd",
    "z_ckd",
    "dialysis",
    "z_dialysis",
    "smoking",
    "quit",
    "quitting_during",
    "z_cigarettes",
    "drinker",
    "z_alcohol",
    "z_vitamin_k",
    "adherence",
)


def _stream_names(config: VirtualPopulationConfig) -> tuple[str, ...]:
    genes = tuple(f"{g}:{k}" for g in config.genes for k in (1, 2))
    comeds = tuple(f"comed:{comedication(c).name}" for c in config.comedications)
    return _BASE_STREAMS + genes + comeds


def _normal(u: np.ndarray) -> np.ndarray:
    # keep away from 0 so ndtri stays finite (uniform() can return exactly 0)
    return ndtri(np.clip(u, 1e-300, 1.0 - 2**-53))


def _categorical(u: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw per row: ``probabilities[subject, category]`` or ``[category]``."""
    cdf = np.cumsum(probabilities, axis=-1)
    cdf = cdf / cdf[..., -1:]
    return np.minimum((u[..., None] >= cdf).sum(axis=-1), probabilities.shape[-1] - 1)


def draw_candidates(
    config: VirtualPopulationConfig, seed: int, ids: Sequence[int] | np.ndarray
) -> Table:
    """Covariates of candidates ``ids`` before the criteria, one entry per id.

    Candidate ``i``'s values depend only on ``(seed, i)``.

    Parameters
    ----------
    config
        The population.
    seed
        Root seed.
    ids
        Candidate numbers (whole numbers ≥ 0).

    Returns
    -------
    dict
        The standard covariate columns (:data:`twinsim.priors.COVARIATE_COLUMNS`) plus
        ``id`` (int64).

    Examples
    --------
    >>> config = VirtualPopulationConfig(ancestry={"east_asian": 1.0})
    >>> table = draw_candidates(config, seed=3, ids=[0, 1, 2])
    >>> table["id"].tolist(), sorted(set(table["ancestry"].tolist()))
    ([0, 1, 2], ['east_asian'])
    """
    ids = np.asarray(ids, dtype=np.int64)
    names = _stream_names(config)
    streams = jnp.asarray([_stream(n) for n in names], dtype=jnp.uint32)
    if ids.size == 0:
        raw = np.zeros((0, len(names)))
    else:
        raw = np.asarray(_uniforms(subject_keys(seed, ids), streams), dtype=np.float64)
    u = {name: raw[:, j] for j, name in enumerate(names)}
    demo, life = config.demographics, config.lifestyle
    n = ids.size

    shares = np.array([config.ancestry[a] for a in config.ancestries], dtype=float)
    ancestry_index = _categorical(u["ancestry"], shares)
    ancestry = np.array(config.ancestries, dtype=np.str_)[ancestry_index]
    female = (u["sex"] < config.female_fraction).astype(float)
    age = _age(config, u["age"])

    z = np.stack([_normal(u["z_height"]), _normal(u["z_bmi"]), _normal(u["z_creatinine"])], -1)
    z = z @ np.linalg.cholesky(np.asarray(demo.correlation, dtype=float)).T
    offsets = {k: np.zeros(n) for k in ("height", "bmi", "log_creatinine")}
    for i, group in enumerate(config.ancestries):
        for k in offsets:
            offsets[k][ancestry_index == i] = demo.ancestry_offsets.get(group, {}).get(k, 0.0)

    by_sex = lambda pair: np.where(female == 1, pair[1], pair[0])  # noqa: E731
    height = (
        by_sex(demo.height_mean)
        + offsets["height"]
        - demo.height_loss_per_year_over_50 * np.maximum(age - 50, 0)
        + by_sex(demo.height_sd) * z[:, 0]
    )
    height = np.clip(height, 120.0, 230.0)
    bmi_median = (
        demo.bmi_median - demo.bmi_curvature * (age - demo.bmi_peak_age) ** 2 + offsets["bmi"]
    )
    bmi = np.clip(np.maximum(bmi_median, 15.0) * np.exp(demo.bmi_sd_log * z[:, 1]), 14.0, 70.0)
    weight = np.clip(bmi * (height / 100) ** 2, 30.0, 300.0)

    dialysis = (u["dialysis"] < config.dialysis).astype(float)
    ckd_p = np.clip(demo.ckd_prevalence[0] + demo.ckd_prevalence[1] * np.maximum(age - 40, 0), 0, 1)
    ckd = u["ckd"] < ckd_p
    log_scr = (
        np.log(by_sex(demo.creatinine_median))
        + offsets["log_creatinine"]
        + demo.creatinine_log_slope_over_40 * np.maximum(age - 40, 0)
        + demo.creatinine_sd_log * z[:, 2]
        + np.where(
            ckd,
            np.log(demo.ckd_creatinine_factor[0])
            + demo.ckd_creatinine_factor[1] * _normal(u["z_ckd"]),
            0.0,
        )
    )
    log_dialysis = np.log(demo.dialysis_creatinine[0]) + demo.dialysis_creatinine[1] * _normal(
        u["z_dialysis"]
    )
    serum_creatinine = np.clip(np.exp(np.where(dialysis == 1, log_dialysis, log_scr)), 0.2, 20.0)
    crcl = cockcroft_gault(age, weight, serum_creatinine, female, **config.crcl_options)

    table: Table = {
        "id": ids,
        "age": age,
        "female": female,
        "weight": weight,
        "height": height,
        "serum_creatinine": serum_creatinine,
        "crcl": np.asarray(crcl, dtype=float),
        "dialysis": dialysis,
        "ancestry": ancestry,
        **_lifestyle(life, u, n),
        **_genotypes(config, u, ancestry_index, n),
    }
    for comed in COMEDICATIONS.values():
        table[comed.column] = np.zeros(n)
    for name, prevalence in config.comedications.items():
        entry = comedication(name)
        table[entry.column] = (u[f"comed:{entry.name}"] < prevalence).astype(float)
    return {name: table[name] for name in ("id", *COVARIATE_COLUMNS)}


def _age(config: VirtualPopulationConfig, u: np.ndarray) -> np.ndarray:
    lo, hi = config.age_range
    if config.age_mean is None:
        return lo + (hi - lo) * u
    assert config.age_sd is not None
    a, b = (
        ndtr((lo - config.age_mean) / config.age_sd),
        ndtr((hi - config.age_mean) / config.age_sd),
    )
    if not b > a:
        raise CovariateError(
            f"`age_range` {config.age_range} holds no probability under a normal with mean "
            f"{config.age_mean:g} and SD {config.age_sd:g}; widen the range or move the mean"
        )
    return np.clip(config.age_mean + config.age_sd * _normal(a + (b - a) * u), lo, hi)


def _lifestyle(life: Lifestyle, u: Mapping[str, np.ndarray], n: int) -> Table:
    status = _categorical(
        u["smoking"],
        np.array(
            [life.current_smoker, life.former_smoker, 1 - life.current_smoker - life.former_smoker]
        ),
    )
    current, former = status == 0, status == 1
    quits = current & (u["quitting_during"] < life.quitting_during)
    quit_time = np.full(n, math.inf)
    quit_time[quits] = life.quitting_window * (1.0 - u["quit"][quits])  # in (0, window]
    quit_time[former] = -life.former_quit_window * u["quit"][former]  # in (−window, 0]
    cigarettes = np.where(
        current | former,
        np.round(
            life.cigarettes_per_day[0]
            * np.exp(life.cigarettes_per_day[1] * _normal(u["z_cigarettes"]))
        ),
        0.0,
    )
    drinks = u["drinker"] < life.drinker
    alcohol = np.where(
        drinks,
        life.alcohol_units_per_week[0]
        * np.exp(life.alcohol_units_per_week[1] * _normal(u["z_alcohol"])),
        0.0,
    )
    vitamin_k = life.vitamin_k_ug_per_day[0] * np.exp(
        life.vitamin_k_ug_per_day[1] * _normal(u["z_vitamin_k"])
    )
    mean, concentration = life.adherence
    if mean >= 1:
        adherence = np.ones(n)
    else:
        from scipy.special import betaincinv

        adherence = betaincinv(mean * concentration, (1 - mean) * concentration, u["adherence"])
    return {
        "smoking": (current | former).astype(float),
        "smoking_quit_time": quit_time,
        "cigarettes_per_day": np.maximum(cigarettes, 1.0) * (current | former),
        "alcohol_units_per_week": np.clip(alcohol, 0.0, 500.0),
        "vitamin_k_ug_per_day": np.clip(vitamin_k, 0.0, 5000.0),
        "adherence": adherence,
    }


def _genotypes(
    config: VirtualPopulationConfig,
    u: Mapping[str, np.ndarray],
    ancestry_index: np.ndarray,
    n: int,
) -> Table:
    out = {gene.column: np.full(n, "", dtype=np.str_) for gene in GENES.values()}
    for gene_name, (names, matrix) in config.allele_table().items():
        gene = GENES[gene_name]
        probabilities = matrix[ancestry_index]
        first = _categorical(u[f"{gene_name}:1"], probabilities)
        second = _categorical(u[f"{gene_name}:2"], probabilities)
        # names are in canonical order, so the smaller index goes first
        labels = np.array(
            [
                [f"{names[min(i, j)]}/{names[max(i, j)]}" for j in range(len(names))]
                for i in range(len(names))
            ],
            dtype=np.str_,
        )
        out[gene.column] = labels[first, second] if n else np.zeros(0, dtype=np.str_)
    return out


# ============================================================================ criteria
_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _compile(expression: str) -> ast.Expression:
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise CovariateError(
            f"criterion {expression!r} is not a valid expression ({error.msg}); write e.g. "
            "'age >= 18 and crcl >= 30'"
        ) from None
    known = set(COVARIATE_COLUMNS) | {"id"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in known:
            raise CovariateError(
                f"criterion {expression!r} uses {node.id!r}, which is not a covariate column; "
                f"known columns: {', '.join(sorted(known))}"
            )
        allowed = (
            ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare,
            ast.BinOp, ast.Name, ast.Load, ast.Constant, ast.In, ast.NotIn, ast.Tuple, ast.List,
            *_OPERATORS,
        )  # fmt: skip
        if not isinstance(node, allowed):
            raise CovariateError(
                f"criterion {expression!r} uses {type(node).__name__}, which criteria do not "
                "allow; use column names, numbers, text, comparisons, arithmetic, and/or/not, in"
            )
    return tree


def _evaluate(node: ast.AST, table: Mapping[str, np.ndarray]) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, table)
    if isinstance(node, ast.Name):
        return np.asarray(table[node.id])
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple | ast.List):
        return [_evaluate(e, table) for e in node.elts]
    if isinstance(node, ast.BoolOp):
        values = [np.asarray(_evaluate(v, table), dtype=bool) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, table)
        if isinstance(node.op, ast.Not):
            return np.logical_not(operand)
        return _OPERATORS[type(node.op)](operand)
    if isinstance(node, ast.BinOp):
        return _OPERATORS[type(node.op)](_evaluate(node.left, table), _evaluate(node.right, table))
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, table)
        result: Any = True
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comparator, table)
            if isinstance(op, ast.In | ast.NotIn):
                held = np.isin(left, right)
                step = held if isinstance(op, ast.In) else ~held
            else:
                step = _OPERATORS[type(op)](left, right)
            result = np.logical_and(result, step)
            left = right
        return result
    raise AssertionError(type(node))  # _compile admits nothing else


def apply_criteria(
    table: Mapping[str, np.ndarray], criteria: Criterion | Sequence[Criterion]
) -> np.ndarray:
    """Which rows of a covariate table meet every criterion, ``bool[subject]``.

    Parameters
    ----------
    table
        A covariate table.
    criteria
        Expressions over its columns (``"age >= 18 and crcl >= 30"``,
        ``'cyp2c9 in ("*1/*1", "*1/*2")'``, ``"weight / (height / 100) ** 2 < 35"``) and/or
        callables ``table → bool array``. Missing values (NaN) fail comparisons
        (and so pass ``not (...)``: write criteria as positive comparisons).

    Examples
    --------
    >>> import numpy as np
    >>> table = {"age": np.array([16.0, 40.0, 70.0]), "crcl": np.array([90.0, 25.0, 60.0])}
    >>> apply_criteria(table, "age >= 18 and crcl >= 30").tolist()
    [False, False, True]
    """
    if isinstance(criteria, str) or callable(criteria):
        criteria = (criteria,)
    n = len(next(iter(table.values()))) if table else 0
    keep = np.ones(n, dtype=bool)
    for criterion in criteria:
        keep &= _criterion_mask(criterion, table, n)
    return keep


def _criterion_mask(criterion: Criterion, table: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    if isinstance(criterion, str):
        value = _evaluate(_compile(criterion), table)
    else:
        value = criterion(table)
    mask = np.broadcast_to(np.asarray(value), (n,))
    if mask.dtype != bool:
        raise CovariateError(
            f"criterion {criterion!r} must give true/false per subject, got values of type "
            f"{mask.dtype}; compare with a threshold, e.g. 'crcl >= 30'"
        )
    return mask.copy()


# ============================================================================ generate
@dataclass(frozen=True)
class PopulationReport:
    """How a virtual population was obtained.

    Attributes
    ----------
    requested
        Subjects asked for.
    accepted
        Subjects returned.
    candidates
        Candidates examined (ids ``0 … candidates − 1``).
    acceptance_rate
        ``accepted / candidates``.
    criteria
        ``{criterion: fraction of candidates meeting it}``.
    """

    requested: int
    accepted: int
    candidates: int
    acceptance_rate: float
    criteria: Mapping[str, float]

    def __str__(self) -> str:
        lines = [
            f"{self.accepted} of {self.requested} requested subjects from {self.candidates} "
            f"candidates (acceptance rate {self.acceptance_rate:.1%})"
        ]
        lines += [f"  {name}: {rate:.1%} of candidates" for name, rate in self.criteria.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class VirtualPopulation:
    """A generated population: its covariate table and how it was obtained.

    Attributes
    ----------
    covariates
        Standard covariate columns plus ``id`` (the candidate number).
    report
        :class:`PopulationReport`.
    config, seed
        What generated it.
    """

    covariates: Mapping[str, np.ndarray]
    report: PopulationReport
    config: VirtualPopulationConfig
    seed: int

    def __len__(self) -> int:
        return len(self.covariates["id"])

    def to_frame(self) -> pd.DataFrame:
        """The covariates as a pandas DataFrame indexed by ``id``."""
        import pandas as pd

        return pd.DataFrame(dict(self.covariates)).set_index("id")


def _criterion_name(criterion: Criterion) -> str:
    return (
        criterion if isinstance(criterion, str) else getattr(criterion, "__name__", repr(criterion))
    )


def generate_population(
    config: VirtualPopulationConfig,
    n: int,
    seed: int,
    *,
    batch_size: int = 10_000,
    max_candidates: int | None = None,
) -> VirtualPopulation:
    """Draw ``n`` subjects meeting the config's criteria.

    Candidates ``0, 1, 2, …`` are drawn in batches and the first ``n`` that meet every
    criterion are kept, so the result does not depend on ``batch_size``.

    Parameters
    ----------
    config
        The population.
    n
        Subjects wanted.
    seed
        Root seed.
    batch_size
        Candidates drawn at a time (memory, not results).
    max_candidates
        Give up after this many candidates (default ``1000 · n + 10 000``).

    Returns
    -------
    VirtualPopulation

    Raises
    ------
    CovariateError
        When ``max_candidates`` candidates give fewer than ``n`` subjects (the message
        gives the acceptance rate of each criterion).

    Examples
    --------
    >>> config = VirtualPopulationConfig(criteria="crcl >= 60")
    >>> population = generate_population(config, n=200, seed=1)
    >>> len(population), population.report.accepted, bool(population.covariates["crcl"].min() >= 60)
    (200, 200, True)
    """
    if not (isinstance(n, int) and n >= 0):
        raise CovariateError(f"`n` must be a whole number ≥ 0, got {n!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise CovariateError(f"`batch_size` must be a whole number ≥ 1, got {batch_size!r}")
    limit = 1000 * n + 10_000 if max_candidates is None else max_candidates
    criteria = tuple(config.criteria)  # type: ignore[arg-type]
    kept: list[Table] = []
    passed = np.zeros(len(criteria))
    accepted = examined = 0
    batch = min(batch_size, max(2 * n, 256))  # small requests need no huge batches
    while accepted < n and examined < limit:
        # always a full batch (one compiled shape); candidates past the limit are cut below
        ids = np.arange(examined, examined + batch)
        table = draw_candidates(config, seed, ids)
        masks = [_criterion_mask(c, table, len(ids)) for c in criteria]
        keep = np.logical_and.reduce(masks) if masks else np.ones(len(ids), dtype=bool)
        keep[limit - examined :] = False
        cut = min(len(ids), limit - examined)
        if accepted + keep.sum() >= n:
            # stop at the n-th accepted candidate, so counts do not depend on batch_size
            cut = int(np.flatnonzero(keep)[n - accepted - 1]) + 1
        keep = keep[:cut]
        passed += [m[:cut].sum() for m in masks]
        kept.append({k: v[:cut][keep] for k, v in table.items()})
        accepted += int(keep.sum())
        examined += cut
    if accepted < n:
        rates = ", ".join(
            f"{_criterion_name(c)!r}: {p / max(examined, 1):.2%}"
            for c, p in zip(criteria, passed, strict=True)
        )
        raise CovariateError(
            f"only {accepted} of {n} subjects met the criteria among {examined} candidates "
            f"(acceptance rate {accepted / max(examined, 1):.3%}; per criterion {rates}); "
            "relax the criteria, widen the population config or raise `max_candidates`"
        )
    covariates = (
        {k: np.concatenate([t[k] for t in kept]) for k in kept[0]}
        if kept
        else draw_candidates(config, seed, [])
    )
    report = PopulationReport(
        requested=n,
        accepted=accepted,
        candidates=examined,
        acceptance_rate=accepted / examined if examined else math.nan,
        criteria={
            _criterion_name(c): (p / examined if examined else math.nan)
            for c, p in zip(criteria, passed, strict=True)
        },
    )
    return VirtualPopulation(MappingProxyType(covariates), report, config, seed)
