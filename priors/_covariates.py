"""Patient covariates: genotypes, kidney function, comedications and lifestyle.

What a drug model may know about a patient before any drug level is measured:

* **genomic** — star-allele diplotypes of CYP2C9, CYP2D6, CYP2C19 and CYP3A5 and the
  VKORC1 −1639G>A (rs9923231) genotype, with the allele function / activity values and
  the diplotype → phenotype rules of the CPIC guidelines, and allele frequencies per
  ancestry group (:data:`GENES`, :func:`parse_diplotype`, :func:`phenotype`,
  :func:`diplotype_frequencies`);
* **clinical** — age, sex, weight, height, serum creatinine and the creatinine clearance
  by Cockcroft–Gault (:func:`cockcroft_gault`), dialysis, interacting comedications
  (:data:`COMEDICATIONS`: which enzyme each one inhibits or induces; how much a given
  drug's clearance changes is the drug model's business, not this catalogue's);
* **lifestyle** — smoking (with the time of quitting relative to the start of the
  simulation), alcohol, dietary vitamin K and adherence (:func:`smoking_status`,
  :func:`smoking_induction`).

A *covariate table* is a mapping ``column name → numpy array`` with one entry per subject
and the column names of :data:`COVARIATE_COLUMNS`; :func:`covariate_table` builds one
from per-patient records, filling what a record does not say (numbers NaN, genotypes
``""``, no comedication, not smoking, full adherence). Pure numpy/jax: validation of
files and forms is the job of ``twinsim.scenarios.PatientSpec``, which calls this.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations_with_replacement
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ANCESTRIES",
    "COMEDICATIONS",
    "COVARIATE_COLUMNS",
    "DERIVED_COVARIATES",
    "GENES",
    "NOT_TESTED",
    "Allele",
    "Comedication",
    "CovariateColumn",
    "CovariateError",
    "Gene",
    "allele_frequencies",
    "cockcroft_gault",
    "comedication",
    "covariate_table",
    "diplotype_frequencies",
    "is_not_tested",
    "parse_diplotype",
    "parse_genotype",
    "phenotype",
    "phenotype_frequencies",
    "smoking_induction",
    "smoking_status",
]


class CovariateError(ValueError):
    """A covariate value is impossible or unknown (the message names the known values)."""


def _listing(names: Iterable[str]) -> str:
    return ", ".join(names)


def _did_you_mean(value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ============================================================================ genes
@dataclass(frozen=True)
class Allele:
    """One allele of a pharmacogene.

    Attributes
    ----------
    name
        ``"*3"``, ``"*1x2"`` (two copies of ``*1``), ``"A"`` (a single-nucleotide allele).
    function
        CPIC clinical function: ``"normal function"``, ``"decreased function"``,
        ``"no function"``, ``"increased function"``.
    activity
        CPIC activity value (genes scored by activity; for the others 1 = normal
        function, 0 = none), already multiplied by the number of copies.
    """

    name: str
    function: str
    activity: float


@dataclass(frozen=True)
class Gene:
    """A pharmacogene: its alleles, the diplotype → phenotype rule and allele frequencies.

    Attributes
    ----------
    name
        HGNC symbol (``"CYP2C9"``); the covariate column is its lower-case form.
    alleles
        Known alleles in canonical order (reference allele first), ``name → Allele``.
    phenotype_rule
        ``(Allele, Allele) → phenotype`` (CPIC terms, e.g. ``"intermediate metabolizer"``).
    phenotypes
        Every phenotype the rule can give, from least to most activity.
    frequencies
        ``ancestry → {allele: frequency}``, summing to 1 for each ancestry (the reference
        allele takes what the listed variants leave).
    copy_number
        Whether copies (``"*1x2"``, ``"*2xN"``) are part of the nomenclature (CYP2D6).
    citation
        Sources of the function assignments, phenotype rule and frequencies.
    """

    name: str
    alleles: Mapping[str, Allele]
    phenotype_rule: Callable[[Allele, Allele], str]
    phenotypes: tuple[str, ...]
    frequencies: Mapping[str, Mapping[str, float]]
    copy_number: bool = False
    citation: str = ""
    notes: str = ""
    _order: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_order", {name: i for i, name in enumerate(self.alleles)})

    @property
    def column(self) -> str:
        """Covariate column holding this gene's diplotypes (``"cyp2c9"``)."""
        return self.name.lower()

    # ---------------------------------------------------------------- alleles
    def allele(self, text: str, *, diplotype: str | None = None) -> Allele:
        """The allele written ``text`` (``"*3"``, ``"3"``, ``"*1x2"``, ``"*2xN"``, ``"a"``)."""
        raw = text.strip()
        name = raw.upper() if not raw.startswith("*") and not raw[:1].isdigit() else raw
        if self.name in _STAR_GENES:
            name = name.lstrip("*")
            name = "*" + name.replace("X", "x").replace("xn", "xN")
        if name in self.alleles:
            return self.alleles[name]
        copies = re.fullmatch(r"(\*[0-9A-Za-z.]+)x(\d+|N)", name) if self.copy_number else None
        if copies and copies.group(1) in self.alleles:
            base = self.alleles[copies.group(1)]
            # CPIC scores "xN" (copy number not resolved) as two copies
            count = 2 if copies.group(2) == "N" else int(copies.group(2))
            if count >= 2:
                function = (
                    base.function
                    if base.activity == 0
                    else ("increased function" if base.activity * count > 1 else base.function)
                )
                return Allele(name, function, base.activity * count)
        where = f" in diplotype {diplotype!r}" if diplotype is not None else ""
        example = _listing(list(self.alleles)[:2])
        cnv = " (copies written e.g. '*1x2' or '*2xN')" if self.copy_number else ""
        raise CovariateError(
            f"`{self.column}` allele {raw!r}{where} is not a known {self.name} allele"
            f"{_did_you_mean(name, self.alleles)}; known alleles: {_listing(self.alleles)}{cnv}; "
            f"write the diplotype as two known alleles separated by '/', e.g. "
            f"'{example.replace(', ', '/')}'"
        )

    def _sort_key(self, allele: Allele) -> tuple[int, float]:
        base = allele.name.split("x")[0] if self.copy_number else allele.name
        return (self._order.get(base, len(self._order)), allele.activity)

    def split(self, text: str) -> tuple[Allele, Allele]:
        """The two alleles of a diplotype written ``text``, in canonical order."""
        if not isinstance(text, str):
            raise CovariateError(
                f"`{self.column}` must be a diplotype written as text, e.g. "
                f"'{_example_diplotype(self)}', got {text!r} ({type(text).__name__})"
            )
        body = text.strip()
        body = re.sub(rf"^{self.name}\s*", "", body, flags=re.IGNORECASE)
        if re.fullmatch(r"rs\d+\s*[:=]?\s*.*", body, flags=re.IGNORECASE) and self.name == "VKORC1":
            body = re.sub(r"^rs\d+\s*[:=]?\s*", "", body, flags=re.IGNORECASE)
        parts = [p for p in re.split(r"\s*/\s*", body)] if "/" in body else [body]
        if len(parts) == 1 and self.name not in _STAR_GENES and len(body.replace(" ", "")) == 2:
            parts = list(body.replace(" ", ""))  # "GA" for single-letter alleles
        if len(parts) != 2 or not all(parts):
            raise CovariateError(
                f"`{self.column}` diplotype {text!r} must be two alleles separated by '/', "
                f"e.g. '{_example_diplotype(self)}'; known alleles: {_listing(self.alleles)}"
            )
        first, second = (self.allele(p, diplotype=text) for p in parts)
        return tuple(sorted((first, second), key=self._sort_key))  # type: ignore[return-value]

    def canonical(self, text: str) -> str:
        """Canonical form of a diplotype (``"*3/*1"`` → ``"*1/*3"``, ``"AG"`` → ``"G/A"``)."""
        first, second = self.split(text)
        return f"{first.name}/{second.name}"

    def phenotype(self, text: str) -> str:
        """Phenotype of a diplotype by the gene's CPIC rule."""
        return self.phenotype_rule(*self.split(text))

    def activity_score(self, text: str) -> float:
        """Sum of the two alleles' activity values."""
        first, second = self.split(text)
        return first.activity + second.activity

    def diplotypes(self, ancestry: str | None = None) -> tuple[str, ...]:
        """Canonical diplotypes of the listed alleles (those with a frequency in ``ancestry``)."""
        names = list(self.alleles)
        if ancestry is not None:
            present = allele_frequencies(self.name, ancestry)
            names = [n for n in names if present.get(n, 0.0) > 0]
        return tuple(f"{a}/{b}" for a, b in combinations_with_replacement(names, 2))


def _example_diplotype(gene: Gene) -> str:
    first, second = list(gene.alleles)[:2]
    return f"{first}/{second}"


def _alleles(*rows: tuple[str, str, float]) -> Mapping[str, Allele]:
    return MappingProxyType(
        {name: Allele(name, function, activity) for name, function, activity in rows}
    )


def _with_reference(
    reference: str, variants: Mapping[str, Mapping[str, float]]
) -> Mapping[str, Mapping[str, float]]:
    """Complete each ancestry's variant frequencies with the reference allele's share."""
    table = {}
    for ancestry, freqs in variants.items():
        rest = 1.0 - sum(freqs.values())
        if rest < 0:  # a typo in the table below, not a user error
            raise AssertionError(f"{reference} frequencies for {ancestry} sum above 1")
        table[ancestry] = MappingProxyType({reference: rest, **freqs})
    return MappingProxyType(table)


def _metabolizer_by_activity(*cuts: tuple[float, str]) -> Callable[[Allele, Allele], str]:
    """Phenotype = the label of the first ``(upper bound, label)`` the activity score is ≤."""

    def rule(first: Allele, second: Allele) -> str:
        score = first.activity + second.activity
        for upper, label in cuts:
            if score <= upper + 1e-9:
                return label
        return cuts[-1][1]

    return rule


def _cyp2c19_rule(first: Allele, second: Allele) -> str:
    # CPIC 2022 (Lee et al., Clin Pharmacol Ther 2022;112:959): count no-function and
    # increased-function alleles; one no-function allele is IM whatever the other is.
    functions = (first.function, second.function)
    no_function = functions.count("no function")
    increased = functions.count("increased function")
    if no_function == 2:
        return "poor metabolizer"
    if no_function == 1:
        return "intermediate metabolizer"
    if functions.count("decreased function") >= 1:
        return "likely intermediate metabolizer"
    return {0: "normal metabolizer", 1: "rapid metabolizer", 2: "ultrarapid metabolizer"}[increased]


def _cyp3a5_rule(first: Allele, second: Allele) -> str:
    # CPIC tacrolimus (Birdwell et al., Clin Pharmacol Ther 2015;98:19): number of
    # functional (*1) alleles; "extensive" metabolizer there is "normal" in current terms.
    functional = int(first.activity > 0) + int(second.activity > 0)
    return ("poor metabolizer", "intermediate metabolizer", "normal metabolizer")[functional]


def _vkorc1_rule(first: Allele, second: Allele) -> str:
    # −1639A lowers VKORC1 expression, so each A allele lowers the warfarin dose needed
    # (CPIC warfarin, Johnson et al., Clin Pharmacol Ther 2017;102:397).
    a_alleles = (first.name == "A") + (second.name == "A")
    return (
        "normal warfarin sensitivity",
        "increased warfarin sensitivity",
        "highly increased warfarin sensitivity",
    )[a_alleles]


_NORMAL, _DECREASED, _NO, _INCREASED = (
    "normal function",
    "decreased function",
    "no function",
    "increased function",
)
_STAR_GENES = frozenset({"CYP2C9", "CYP2D6", "CYP2C19", "CYP3A5"})

#: Ancestry groups with allele frequencies in :data:`GENES` (CPIC biogeographic groups:
#: ``"african"`` is CPIC's African American/Afro-Caribbean group).
ANCESTRIES: tuple[str, ...] = ("european", "east_asian", "african")

_CYP2C9 = Gene(
    name="CYP2C9",
    alleles=_alleles(
        ("*1", _NORMAL, 1.0),
        ("*2", _DECREASED, 0.5),
        ("*3", _NO, 0.0),
        ("*5", _DECREASED, 0.5),
        ("*6", _NO, 0.0),
        ("*8", _DECREASED, 0.5),
        ("*11", _DECREASED, 0.5),
        ("*13", _NO, 0.0),
    ),
    phenotype_rule=_metabolizer_by_activity(
        (0.5, "poor metabolizer"), (1.5, "intermediate metabolizer"), (2.0, "normal metabolizer")
    ),
    phenotypes=("poor metabolizer", "intermediate metabolizer", "normal metabolizer"),
    frequencies=_with_reference(
        "*1",
        {
            # approximate, PharmGKB/CPIC CYP2C9 allele frequency table; European and East
            # Asian agree with 1000 Genomes (EUR *2 0.124, EAS *3 0.034, *13 0.003)
            "european": {"*2": 0.13, "*3": 0.07, "*8": 0.002, "*11": 0.002},
            "east_asian": {"*2": 0.001, "*3": 0.035, "*13": 0.003},
            "african": {"*2": 0.02, "*3": 0.01, "*5": 0.012, "*6": 0.006, "*8": 0.06, "*11": 0.024},
        },
    ),
    citation=(
        "Theken et al., CPIC guideline for CYP2C9 and NSAIDs, Clin Pharmacol Ther 2020;108:191 "
        "(activity values, AS 2 NM / 1–1.5 IM / 0–0.5 PM); frequencies: PharmGKB/CPIC CYP2C9 "
        "allele frequency table (approximate)."
    ),
)

_VKORC1 = Gene(
    name="VKORC1",
    alleles=_alleles(("G", _NORMAL, 1.0), ("A", _DECREASED, 0.5)),
    phenotype_rule=_vkorc1_rule,
    phenotypes=(
        "normal warfarin sensitivity",
        "increased warfarin sensitivity",
        "highly increased warfarin sensitivity",
    ),
    frequencies=_with_reference(
        "G",
        {
            # −1639A (rs9923231); PharmGKB/CPIC warfarin frequency table (approximate)
            "european": {"A": 0.39},
            "east_asian": {"A": 0.90},
            "african": {"A": 0.10},
        },
    ),
    citation=(
        "Johnson et al., CPIC guideline for warfarin, Clin Pharmacol Ther 2017;102:397; "
        "frequencies: PharmGKB/CPIC VKORC1 rs9923231 frequency table (approximate)."
    ),
    notes="−1639G>A (rs9923231); 'function' here means expression (A: lower).",
)

_CYP2D6 = Gene(
    name="CYP2D6",
    alleles=_alleles(
        ("*1", _NORMAL, 1.0),
        ("*2", _NORMAL, 1.0),
        ("*3", _NO, 0.0),
        ("*4", _NO, 0.0),
        ("*5", _NO, 0.0),
        ("*6", _NO, 0.0),
        ("*9", _DECREASED, 0.5),
        ("*10", _DECREASED, 0.25),
        ("*17", _DECREASED, 0.5),
        ("*29", _DECREASED, 0.5),
        ("*41", _DECREASED, 0.5),
    ),
    phenotype_rule=_metabolizer_by_activity(
        (0.0, "poor metabolizer"),
        (1.0, "intermediate metabolizer"),
        (2.25, "normal metabolizer"),
        (math.inf, "ultrarapid metabolizer"),
    ),
    phenotypes=(
        "poor metabolizer",
        "intermediate metabolizer",
        "normal metabolizer",
        "ultrarapid metabolizer",
    ),
    frequencies=_with_reference(
        "*1",
        {
            # approximate, PharmGKB/CPIC CYP2D6 allele frequency table
            "european": {
                "*2": 0.27,
                "*3": 0.014,
                "*4": 0.185,
                "*5": 0.028,
                "*6": 0.01,
                "*9": 0.027,
                "*10": 0.016,
                "*17": 0.002,
                "*29": 0.001,
                "*41": 0.09,
                "*1x2": 0.008,
                "*2x2": 0.005,
            },
            "east_asian": {
                "*2": 0.12,
                "*4": 0.005,
                "*5": 0.058,
                "*10": 0.42,
                "*41": 0.02,
                "*1x2": 0.003,
                "*2x2": 0.003,
            },
            "african": {
                "*2": 0.15,
                "*4": 0.06,
                "*5": 0.06,
                "*10": 0.04,
                "*17": 0.18,
                "*29": 0.08,
                "*41": 0.02,
                "*1x2": 0.01,
                "*2x2": 0.02,
            },
        },
    ),
    copy_number=True,
    citation=(
        "Caudle et al., Standardizing CYP2D6 genotype to phenotype translation, Clin Transl Sci "
        "2020;13:116 (activity values; AS 0 PM / 0.25–1 IM / 1.25–2.25 NM / >2.25 UM); "
        "frequencies: PharmGKB/CPIC CYP2D6 allele frequency table (approximate)."
    ),
    notes="Gene duplications are written '*1x2' ('xN' is scored as two copies).",
)

_CYP2C19 = Gene(
    name="CYP2C19",
    alleles=_alleles(
        ("*1", _NORMAL, 1.0),
        ("*2", _NO, 0.0),
        ("*3", _NO, 0.0),
        ("*4", _NO, 0.0),
        ("*8", _NO, 0.0),
        ("*9", _DECREASED, 0.5),
        ("*17", _INCREASED, 1.5),
    ),
    phenotype_rule=_cyp2c19_rule,
    phenotypes=(
        "poor metabolizer",
        "intermediate metabolizer",
        "likely intermediate metabolizer",
        "normal metabolizer",
        "rapid metabolizer",
        "ultrarapid metabolizer",
    ),
    frequencies=_with_reference(
        "*1",
        {
            # approximate, PharmGKB/CPIC CYP2C19 allele frequency table (1000 Genomes: EUR
            # *2 0.145 *17 0.224; EAS *2 0.31 *3 0.056 *17 0.015; AFR *2 0.17 *17 0.235)
            "european": {"*2": 0.15, "*3": 0.002, "*17": 0.21},
            "east_asian": {"*2": 0.29, "*3": 0.07, "*17": 0.02},
            "african": {"*2": 0.18, "*3": 0.003, "*17": 0.21},
        },
    ),
    citation=(
        "Lee et al., CPIC guideline for CYP2C19 and clopidogrel, Clin Pharmacol Ther "
        "2022;112:959 (function assignments and phenotypes); frequencies: PharmGKB/CPIC "
        "CYP2C19 allele frequency table (approximate)."
    ),
)

_CYP3A5 = Gene(
    name="CYP3A5",
    alleles=_alleles(("*1", _NORMAL, 1.0), ("*3", _NO, 0.0), ("*6", _NO, 0.0), ("*7", _NO, 0.0)),
    phenotype_rule=_cyp3a5_rule,
    phenotypes=("poor metabolizer", "intermediate metabolizer", "normal metabolizer"),
    frequencies=_with_reference(
        "*3",
        {
            # *1 is the minor allele outside Africa; approximate, PharmGKB/CPIC CYP3A5 table
            "european": {"*1": 0.07},
            "east_asian": {"*1": 0.29},
            "african": {"*1": 0.45, "*6": 0.13, "*7": 0.10},
        },
    ),
    citation=(
        "Birdwell et al., CPIC guideline for CYP3A5 and tacrolimus, Clin Pharmacol Ther "
        "2015;98:19 ('extensive metabolizer' there is 'normal metabolizer' here); frequencies: "
        "PharmGKB/CPIC CYP3A5 allele frequency table (approximate)."
    ),
)

#: The pharmacogenes known to twinsim, by HGNC symbol.
GENES: Mapping[str, Gene] = MappingProxyType(
    {g.name: g for g in (_CYP2C9, _VKORC1, _CYP2D6, _CYP2C19, _CYP3A5)}
)


def _gene(name: str) -> Gene:
    if isinstance(name, str) and name.strip().upper() in GENES:
        return GENES[name.strip().upper()]
    raise CovariateError(
        f"gene {name!r} is not known{_did_you_mean(str(name).upper(), GENES)}; known genes: "
        f"{_listing(GENES)}"
    )


def parse_diplotype(gene: str, text: str) -> str:
    """Canonical form of a diplotype of ``gene``.

    Alleles are put in the gene's canonical order (reference first, then by star number),
    so every way of writing a diplotype maps to one string.

    Parameters
    ----------
    gene
        Gene symbol, any case (``"CYP2C9"``, ``"vkorc1"``).
    text
        Two alleles separated by ``/`` (``"*3/*1"``, ``"3/1"``, ``"CYP2C9*1/*3"``); VKORC1
        genotypes as ``"G/A"`` or ``"GA"``; CYP2D6 copies as ``"*1x2"``.

    Returns
    -------
    str
        ``"*1/*3"``, ``"G/A"``, ...

    Raises
    ------
    CovariateError
        Unknown gene (lists the known genes) or allele (lists the gene's known alleles).

    Examples
    --------
    >>> parse_diplotype("CYP2C9", "*3/*1"), parse_diplotype("vkorc1", "AG")
    ('*1/*3', 'G/A')
    >>> parse_diplotype("CYP2D6", "*4/*1xN")
    '*1xN/*4'
    """
    return _gene(gene).canonical(text)


#: How a genotype that was not tested is stored (covariate tables, specs, twins).
NOT_TESTED = "not tested"

#: Spellings read as "not tested" (case, spaces, ``-`` and ``_`` ignored), besides ``None``
#: and NaN.
NOT_TESTED_SPELLINGS = frozenset(
    {"", "not tested", "nottested", "untested", "unknown", "not known", "na", "n/a", "none", "nan"}
)


def is_not_tested(value: Any) -> bool:
    """Whether a genotype value says the gene was not tested.

    ``None``, NaN, ``""``, ``"not tested"``, ``"untested"``, ``"unknown"``, ``"not
    known"``, ``"NA"``, ``"N/A"``, ``"none"`` (any case, ``-``/``_`` as spaces). The one
    spelling check shared by the specs (``twinsim.scenarios.PatientSpec``) and the patient
    twin.

    Examples
    --------
    >>> [is_not_tested(v) for v in ("Not tested", "unknown", None, float("nan"), "*1/*3")]
    [True, True, True, True, False]
    """
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    if not isinstance(value, str | np.str_):
        return False
    key = " ".join(str(value).strip().lower().replace("_", " ").replace("-", " ").split())
    return key in NOT_TESTED_SPELLINGS


def parse_genotype(gene: str, value: Any) -> str:
    """A genotype as a clinician writes it: the canonical diplotype, or :data:`NOT_TESTED`.

    Parameters
    ----------
    gene
        Gene symbol, any case.
    value
        A diplotype (any spelling :func:`parse_diplotype` accepts) or a "not tested"
        spelling (:func:`is_not_tested`).

    Returns
    -------
    str
        ``"*1/*3"``, ``"G/A"``, ... or ``"not tested"``.

    Raises
    ------
    CovariateError
        Unknown gene or allele; the message says that ``"not tested"`` is accepted too.

    Examples
    --------
    >>> parse_genotype("CYP2C9", "*3/*1"), parse_genotype("cyp2c9", "Unknown")
    ('*1/*3', 'not tested')
    """
    the_gene = _gene(gene)
    if is_not_tested(value):
        return NOT_TESTED
    try:
        return the_gene.canonical(value)
    except CovariateError as error:
        raise CovariateError(
            f"{error}; if {the_gene.name} was not genotyped, write 'not tested'"
        ) from None


def phenotype(gene: str, diplotype: str) -> str:
    """CPIC phenotype of a diplotype (any spelling :func:`parse_diplotype` accepts).

    Examples
    --------
    >>> phenotype("CYP2C9", "*1/*3"), phenotype("CYP2C19", "*17/*17")
    ('intermediate metabolizer', 'ultrarapid metabolizer')
    >>> phenotype("CYP2D6", "*1/*2x2"), phenotype("VKORC1", "A/A")
    ('ultrarapid metabolizer', 'highly increased warfarin sensitivity')
    """
    return _gene(gene).phenotype(diplotype)


def _ancestry(ancestry: str) -> str:
    key = (
        ancestry.strip().lower().replace(" ", "_").replace("-", "_")
        if isinstance(ancestry, str)
        else ancestry
    )
    if key in ANCESTRIES:
        return key
    raise CovariateError(
        f"`ancestry` {ancestry!r} has no allele frequencies{_did_you_mean(str(key), ANCESTRIES)}; "
        f"known ancestry groups: {_listing(ANCESTRIES)}; for another group give the allele "
        "frequencies yourself"
    )


def allele_frequencies(gene: str, ancestry: str) -> Mapping[str, float]:
    """Allele frequencies of ``gene`` in an ancestry group (summing to 1).

    Examples
    --------
    >>> round(allele_frequencies("VKORC1", "european")["A"], 2)
    0.39
    """
    return _gene(gene).frequencies[_ancestry(ancestry)]


def diplotype_frequencies(gene: str, ancestry: str | Mapping[str, float]) -> dict[str, float]:
    """Diplotype frequencies under Hardy–Weinberg equilibrium: ``p²`` and ``2pq``.

    Parameters
    ----------
    gene
        Gene symbol.
    ancestry
        An ancestry group of :data:`ANCESTRIES` or ``{allele: frequency}`` summing to 1.

    Examples
    --------
    >>> freqs = diplotype_frequencies("VKORC1", {"G": 0.6, "A": 0.4})
    >>> {k: round(v, 2) for k, v in freqs.items()}
    {'G/G': 0.36, 'G/A': 0.48, 'A/A': 0.16}
    """
    the_gene = _gene(gene)
    alleles = _check_frequencies(the_gene, ancestry)
    names = sorted(alleles, key=lambda n: the_gene._sort_key(the_gene.allele(n)))
    out: dict[str, float] = {}
    for i, a in enumerate(names):
        for b in names[i:]:
            p = alleles[a] * alleles[b] * (1 if a == b else 2)
            if p > 0:
                out[the_gene.canonical(f"{a}/{b}")] = p
    return out


def phenotype_frequencies(gene: str, ancestry: str | Mapping[str, float]) -> dict[str, float]:
    """Phenotype frequencies implied by :func:`diplotype_frequencies` (Hardy–Weinberg).

    Examples
    --------
    >>> round(phenotype_frequencies("CYP2C9", "european")["normal metabolizer"], 3)
    0.634
    """
    the_gene = _gene(gene)
    out = dict.fromkeys(the_gene.phenotypes, 0.0)
    for diplotype, p in diplotype_frequencies(gene, ancestry).items():
        out[the_gene.phenotype(diplotype)] += p
    return out


def _check_frequencies(gene: Gene, ancestry: str | Mapping[str, float]) -> dict[str, float]:
    if isinstance(ancestry, str):
        return dict(gene.frequencies[_ancestry(ancestry)])
    freqs: dict[str, float] = {}
    for name, value in ancestry.items():
        allele = gene.allele(name).name
        if not (isinstance(value, int | float) and 0 <= value <= 1):
            raise CovariateError(
                f"`{gene.column}` frequency of {allele} must be a number in [0, 1], got {value!r}"
            )
        freqs[allele] = freqs.get(allele, 0.0) + float(value)
    total = sum(freqs.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise CovariateError(
            f"`{gene.column}` allele frequencies must sum to 1, got {total:.6g} for "
            f"{freqs}; add the reference allele {next(iter(gene.alleles))} with the rest"
        )
    return freqs


# ============================================================================ kidney
def _is_jax(*values: Any) -> bool:
    return any(isinstance(v, jax.Array) for v in values)


def cockcroft_gault(
    age: Any,
    weight: Any,
    serum_creatinine: Any,
    female: Any,
    *,
    cap: float | None = None,
    min_creatinine_over_60: float | None = None,
) -> Any:
    """Creatinine clearance by Cockcroft–Gault, mL/min, elementwise.

    ``CrCL = (140 − age) · weight / (72 · SCr)``, × 0.85 for women (Cockcroft & Gault,
    Nephron 1976;16:31).

    Parameters
    ----------
    age
        Years.
    weight
        kg (total body weight, as in the original equation).
    serum_creatinine
        mg/dL.
    female
        1/``True`` for women, 0/``False`` for men.
    cap
        Upper limit of the result, mL/min (Goti et al. 2018 use 150).
    min_creatinine_over_60
        For patients older than 60, serum creatinine below this is raised to it before
        computing (Goti et al. 2018 use 1 mg/dL).

    Returns
    -------
    numpy or jax array (jax when any input is one; traceable under ``jit``)

    Raises
    ------
    CovariateError
        For concrete (non-traced) inputs out of range: age outside [0, 140), weight or
        serum creatinine ≤ 0, female not 0/1.

    Examples
    --------
    >>> float(cockcroft_gault(40, 72, 1.0, 0))
    100.0
    >>> round(float(cockcroft_gault(70, 60, 0.7, 1, cap=150, min_creatinine_over_60=1.0)), 2)
    49.58
    """
    xp = jnp if _is_jax(age, weight, serum_creatinine, female) else np
    age, weight, scr = (xp.asarray(v, dtype=float) for v in (age, weight, serum_creatinine))
    female = xp.asarray(female, dtype=float)
    if xp is np:
        for name, values, ok, expected in (
            ("age", age, (age >= 0) & (age < 140), "in [0, 140) y"),
            ("weight", weight, weight > 0, "> 0 kg"),
            ("serum_creatinine", scr, scr > 0, "> 0 mg/dL"),
            ("female", female, (female == 0) | (female == 1), "0 (male) or 1 (female)"),
        ):
            bad = ~ok & ~np.isnan(values)
            if np.any(bad):
                raise CovariateError(
                    f"`{name}` must be {expected} for Cockcroft–Gault, got "
                    f"{np.asarray(values)[bad].ravel()[0]:g}; check the value and its unit"
                )
    if min_creatinine_over_60 is not None:
        scr = xp.where(age > 60, xp.maximum(scr, min_creatinine_over_60), scr)
    crcl = (140.0 - age) * weight / (72.0 * scr) * (1.0 - 0.15 * female)
    if cap is not None:
        crcl = xp.minimum(crcl, cap)
    return crcl


# ============================================================================ comedications
@dataclass(frozen=True)
class Comedication:
    """An interacting comedication and the enzymes/transporters it acts on.

    Attributes
    ----------
    name
        Canonical (INN) name; the covariate column is ``comed_<name>``.
    inhibits, induces
        ``{enzyme or transporter: strength}`` with strength ``"strong"``, ``"moderate"``
        or ``"weak"`` (FDA clinical index classification where one exists).
    aliases
        Other names accepted for it (``"rifampin"``).
    """

    name: str
    inhibits: Mapping[str, str] = field(default_factory=dict)
    induces: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    notes: str = ""

    @property
    def column(self) -> str:
        """Covariate column: ``comed_<name>``."""
        return f"comed_{self.name}"


def _comed(name: str, *, inhibits: Mapping[str, str] = {}, induces: Mapping[str, str] = {},
           aliases: tuple[str, ...] = (), notes: str = "") -> Comedication:  # fmt: skip
    return Comedication(
        name, MappingProxyType(dict(inhibits)), MappingProxyType(dict(induces)), aliases, notes
    )


_S, _M, _W = "strong", "moderate", "weak"

#: Interacting comedications by canonical name. Strengths follow the FDA "Drug Development
#: and Drug Interactions: Table of Substrates, Inhibitors and Inducers" (clinical index)
#: where it lists the drug, otherwise the Flockhart table (Indiana University); how much a
#: given drug's clearance changes belongs to that drug's model.
COMEDICATIONS: Mapping[str, Comedication] = MappingProxyType(
    {
        c.name: c
        for c in (
            _comed("amiodarone", inhibits={"CYP2C9": _M, "CYP2D6": _W, "CYP3A4": _W, "P-gp": _M},
                   notes="raises warfarin exposure; long half-life (weeks) keeps inhibition after stopping"),
            _comed("fluconazole", inhibits={"CYP2C9": _M, "CYP2C19": _S, "CYP3A4": _M}),
            _comed("miconazole", inhibits={"CYP2C9": _M, "CYP3A4": _M}),
            _comed("voriconazole", inhibits={"CYP2C9": _M, "CYP2C19": _M, "CYP3A4": _S}),
            _comed("ketoconazole", inhibits={"CYP3A4": _S, "P-gp": _M}),
            _comed("itraconazole", inhibits={"CYP3A4": _S, "P-gp": _M}),
            _comed("clarithromycin", inhibits={"CYP3A4": _S, "P-gp": _M}),
            _comed("erythromycin", inhibits={"CYP3A4": _M}),
            _comed("ciprofloxacin", inhibits={"CYP1A2": _S, "CYP3A4": _M}),
            _comed("fluvoxamine", inhibits={"CYP1A2": _S, "CYP2C19": _S}),
            _comed("fluoxetine", inhibits={"CYP2D6": _S, "CYP2C19": _M}),
            _comed("paroxetine", inhibits={"CYP2D6": _S}),
            _comed("bupropion", inhibits={"CYP2D6": _S}),
            _comed("quinidine", inhibits={"CYP2D6": _S, "P-gp": _M}),
            _comed("omeprazole", inhibits={"CYP2C19": _M}),
            _comed("diltiazem", inhibits={"CYP3A4": _M}),
            _comed("verapamil", inhibits={"CYP3A4": _M, "P-gp": _M}),
            _comed("cimetidine", inhibits={"CYP1A2": _W, "CYP3A4": _W, "CYP2D6": _W}),
            _comed("metronidazole", inhibits={"CYP2C9": _M}, notes="potentiates warfarin"),
            _comed("sulfamethoxazole", inhibits={"CYP2C9": _M},
                   aliases=("co-trimoxazole", "cotrimoxazole", "trimethoprim-sulfamethoxazole")),
            _comed("rifampicin", induces={"CYP3A4": _S, "CYP2C19": _S, "CYP2C9": _M, "CYP1A2": _M,
                                          "CYP2B6": _M, "P-gp": _S}, aliases=("rifampin",)),
            _comed("carbamazepine", induces={"CYP3A4": _S, "CYP1A2": _M, "CYP2C9": _M, "CYP2B6": _M}),
            _comed("phenytoin", induces={"CYP3A4": _S, "CYP2C19": _M, "CYP1A2": _M}),
            _comed("phenobarbital", induces={"CYP3A4": _S, "CYP2C9": _M, "CYP1A2": _M}),
            _comed("efavirenz", induces={"CYP3A4": _M, "CYP2B6": _M}),
            _comed("st_johns_wort", induces={"CYP3A4": _S, "P-gp": _S},
                   aliases=("st john's wort", "hypericum")),
        )
    }
)  # fmt: skip


#: Model covariates derived from the standard co-medication columns (``comed_<name>``):
#: 1 when any of the listed drugs is taken. The warfarin model's ``amiodarone`` and
#: ``enzyme_inducer`` (IWPC 2009's inducer status: carbamazepine, phenytoin, rifampicin).
DERIVED_COVARIATES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "amiodarone": ("comed_amiodarone",),
        "enzyme_inducer": ("comed_carbamazepine", "comed_phenytoin", "comed_rifampicin"),
    }
)


def _comed_key(text: str) -> str:
    return re.sub(r"[\s\-']+", "_", text.strip().lower()).strip("_")


_COMED_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        **{_comed_key(a): c.name for c in COMEDICATIONS.values() for a in c.aliases},
        **{c.name: c.name for c in COMEDICATIONS.values()},
    }
)


def comedication(name: str) -> Comedication:
    """The catalogue entry of a comedication (any case; aliases such as ``rifampin``).

    Raises
    ------
    CovariateError
        For a name not in :data:`COMEDICATIONS`; the message lists the known ones.

    Examples
    --------
    >>> comedication("Rifampin").name, dict(comedication("amiodarone").inhibits)["CYP2C9"]
    ('rifampicin', 'moderate')
    """
    key = _comed_key(name) if isinstance(name, str) else name
    if key in _COMED_ALIASES:
        return COMEDICATIONS[_COMED_ALIASES[key]]
    raise CovariateError(
        f"comedication {name!r} is not in the interaction catalogue"
        f"{_did_you_mean(str(key), _COMED_ALIASES)}; known comedications: {_listing(COMEDICATIONS)}"
        " (drugs without a known CYP/P-gp interaction need not be listed)"
    )


# ============================================================================ lifestyle
_SMOKING = ("never", "current", "former")


def smoking_status(status: str, quit_time: float | None = None) -> tuple[float, float]:
    """The ``smoking`` and ``smoking_quit_time`` columns of one patient.

    Parameters
    ----------
    status
        ``"never"``, ``"current"`` or ``"former"``.
    quit_time
        Hours from the start of the simulation (t = 0) to quitting: negative for a former
        smoker (quit before t = 0), positive for a current smoker who quits during the
        simulation, ``None`` for a current smoker who keeps smoking or a former smoker who
        quit long ago (induction fully worn off).

    Returns
    -------
    (smoking, smoking_quit_time)
        ``smoking`` is 1 when the patient smokes at t = 0 or quit recently enough to carry
        induction into the simulation (a former smoker with a quit time), else 0;
        ``smoking_quit_time`` is ``inf`` when not quitting and ``-inf`` for "long ago".

    Examples
    --------
    >>> smoking_status("current", 72.0), smoking_status("former", -48.0), smoking_status("never")
    ((1.0, 72.0), (1.0, -48.0), (0.0, inf))
    """
    word = status.strip().lower() if isinstance(status, str) else status
    if word not in _SMOKING:
        raise CovariateError(
            f"`smoking` status {status!r} is not known; use one of {_listing(_SMOKING)}"
        )
    if quit_time is not None and not isinstance(quit_time, int | float):
        raise CovariateError(f"`smoking_quit_time` must be a number of hours, got {quit_time!r}")
    if word == "never":
        if quit_time is not None:
            raise CovariateError(
                f"`smoking_quit_time` {quit_time:g} h was given for a never-smoker; "
                "set status 'former' (quit before t = 0) or 'current', or drop the quit time"
            )
        return 0.0, math.inf
    if word == "current":
        if quit_time is not None and not quit_time > 0:
            raise CovariateError(
                f"`smoking_quit_time` of a current smoker must be > 0 h (quitting after the "
                f"start), got {quit_time:g} h; for someone who already quit use status 'former'"
            )
        return 1.0, math.inf if quit_time is None else float(quit_time)
    if quit_time is None:
        return 0.0, -math.inf
    if quit_time > 0:
        raise CovariateError(
            f"`smoking_quit_time` of a former smoker must be ≤ 0 h (before the start), got "
            f"{quit_time:g} h; for someone quitting during the simulation use status 'current'"
        )
    return 1.0, float(quit_time)


def smoking_induction(time: Any, smoking: Any, quit_time: Any, half_life: Any) -> Any:
    """Fraction of smoking-related enzyme induction present at ``time`` (0–1), jax.

    1 while smoking, decaying exponentially with ``half_life`` (h) after ``quit_time``,
    0 for non-smokers: a drug model multiplies its induction effect by this, e.g.
    ``CL = CL₀ · (1 + (fold − 1) · smoking_induction(t, ...))``. Traceable; works with
    ``quit_time = inf`` (never quits) and ``-inf`` (quit long ago).

    Examples
    --------
    >>> [round(float(smoking_induction(t, 1.0, 24.0, 24.0)), 3) for t in (0.0, 24.0, 48.0)]
    [1.0, 1.0, 0.5]
    """
    elapsed = jnp.maximum(jnp.asarray(time, dtype=float) - quit_time, 0.0)
    return jnp.asarray(smoking, dtype=float) * jnp.exp(-math.log(2.0) * elapsed / half_life)


# ============================================================================ tables
@dataclass(frozen=True)
class CovariateColumn:
    """A standard covariate column: name, unit, kind (``"number"``, ``"flag"``, ``"text"``)."""

    name: str
    unit: str
    kind: str
    description: str
    default: Any
    range: tuple[float, float] | None = None


def _columns() -> Mapping[str, CovariateColumn]:
    number, flag, text, inf = "number", "flag", "text", math.inf
    rows = [
        CovariateColumn("age", "y", number, "age", math.nan, (0, 120)),
        CovariateColumn("female", "1", flag, "1 female, 0 male", math.nan),
        CovariateColumn("weight", "kg", number, "total body weight", math.nan, (0.3, 400)),
        CovariateColumn("height", "cm", number, "height", math.nan, (20, 250)),
        CovariateColumn("serum_creatinine", "mg/dL", number, "serum creatinine", math.nan, (0.1, 20)),
        CovariateColumn("crcl", "mL/min", number, "creatinine clearance (Cockcroft–Gault unless measured)",
                        math.nan, (0, 400)),
        CovariateColumn("dialysis", "1", flag, "1 on haemodialysis", 0.0),
        CovariateColumn("smoking", "1", flag, "1 smokes at t = 0 or carries induction from recent quitting", 0.0),
        CovariateColumn("smoking_quit_time", "h", number,
                        "time of quitting relative to t = 0 (inf: not quitting, -inf: long ago)", inf, (-inf, inf)),
        CovariateColumn("cigarettes_per_day", "1/d", number, "cigarettes per day while smoking", 0.0, (0, 200)),
        CovariateColumn("alcohol_units_per_week", "unit/wk", number, "alcohol, UK units (8 g) per week", 0.0,
                        (0, 500)),
        CovariateColumn("vitamin_k_ug_per_day", "µg/d", number, "dietary vitamin K", math.nan, (0, 5000)),
        CovariateColumn("adherence", "1", number, "fraction of doses taken", 1.0, (0, 1)),
        CovariateColumn("ancestry", "", text, "ancestry group (see ANCESTRIES)", ""),
        *(CovariateColumn(g.column, "", text, f"{g.name} diplotype", "") for g in GENES.values()),
        *(CovariateColumn(c.column, "1", flag, f"1 taking {c.name}", 0.0) for c in COMEDICATIONS.values()),
    ]  # fmt: skip
    return MappingProxyType({c.name: c for c in rows})


#: The standard covariate columns, in table order.
COVARIATE_COLUMNS: Mapping[str, CovariateColumn] = _columns()

_RECORD_KEYS = (set(COVARIATE_COLUMNS) - {c.column for c in COMEDICATIONS.values()}) | {
    "sex",
    "comedications",
    "genotype",
    "id",
}


def _female(value: Any, where: str) -> float:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("female", "f", "woman"):
            return 1.0
        if word in ("male", "m", "man"):
            return 0.0
        raise CovariateError(f"`{where}` must be 'female' or 'male', got {value!r}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if value in (0, 1) and not isinstance(value, str):
        return float(value)
    raise CovariateError(f"`{where}` must be 1 (female) or 0 (male), got {value!r}")


def _number(value: Any, column: CovariateColumn, where: str) -> float:
    if value is None:
        return column.default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CovariateError(
            f"`{where}` must be a number in {column.unit or 'no unit'}, got {value!r}"
        ) from None
    if column.kind == "flag" and number not in (0.0, 1.0):
        raise CovariateError(f"`{where}` must be 0 or 1, got {value!r}")
    if column.range is not None and not math.isnan(number):
        lo, hi = column.range
        if not lo <= number <= hi:
            raise CovariateError(
                f"`{where}` must be between {lo:g} and {hi:g} {column.unit}, got {number:g}; "
                "check the value and its unit"
            )
    return number


def covariate_table(
    records: Sequence[Mapping[str, Any]], *, crcl_options: Mapping[str, float] | None = None
) -> dict[str, np.ndarray]:
    """The standard covariate table of a list of patient records.

    Parameters
    ----------
    records
        One mapping per patient with any of the :data:`COVARIATE_COLUMNS` plus ``sex``
        (``"female"``/``"male"``, instead of ``female``), ``genotype`` (``{gene: diplotype}``,
        instead of the gene columns) and ``comedications`` (a list of names, instead of
        ``comed_*`` flags); an ``id`` key is ignored. Diplotypes are made canonical
        (:func:`parse_genotype`): a "not tested" spelling becomes :data:`NOT_TESTED`,
        while ``None``, ``""`` or NaN leave the gene not given (``""``).
    crcl_options
        Keywords of :func:`cockcroft_gault` (``cap``, ``min_creatinine_over_60``) used when
        ``crcl`` is computed (a record without ``crcl`` but with age, weight, serum
        creatinine and sex).

    Returns
    -------
    dict
        Every column of :data:`COVARIATE_COLUMNS`: float64 arrays (missing numbers NaN) and
        text arrays (missing genotype or ancestry ``""``).

    Raises
    ------
    CovariateError
        Unknown key, gene, allele or comedication, or an impossible value (the message
        names ``records[i].field``).

    Examples
    --------
    >>> table = covariate_table([
    ...     {"age": 40, "sex": "male", "weight": 72, "serum_creatinine": 1.0,
    ...      "genotype": {"CYP2C9": "*3/*1"}, "comedications": ["rifampin"]},
    ... ])
    >>> float(table["crcl"][0]), str(table["cyp2c9"][0]), float(table["comed_rifampicin"][0])
    (100.0, '*1/*3', 1.0)
    """
    columns: dict[str, list[Any]] = {name: [] for name in COVARIATE_COLUMNS}
    for i, record in enumerate(records):
        row = _row(record, f"records[{i}]", crcl_options or {})
        for name in COVARIATE_COLUMNS:
            columns[name].append(row[name])
    return {
        name: (
            np.array(values, dtype=np.str_)
            if COVARIATE_COLUMNS[name].kind == "text"
            else np.array(values, dtype=np.float64)
        )
        for name, values in columns.items()
    }


def _row(
    record: Mapping[str, Any], where: str, crcl_options: Mapping[str, float]
) -> dict[str, Any]:
    comed_columns = {c.column for c in COMEDICATIONS.values()}
    unknown = [k for k in record if k not in _RECORD_KEYS and k not in comed_columns]
    if unknown:
        raise CovariateError(
            f"`{where}.{unknown[0]}` is not a covariate{_did_you_mean(unknown[0], _RECORD_KEYS)}; "
            f"known covariates: {_listing(sorted(_RECORD_KEYS))}, comed_<name>"
        )
    row: dict[str, Any] = {}
    for name, column in COVARIATE_COLUMNS.items():
        if column.kind == "text" or name == "female" or name in comed_columns:
            continue
        row[name] = _number(record.get(name), column, f"{where}.{name}")
    if "sex" in record and "female" in record:
        raise CovariateError(f"`{where}` gives both `sex` and `female`; give one")
    row["female"] = _female(record.get("sex", record.get("female")), f"{where}.sex")
    ancestry = record.get("ancestry")
    row["ancestry"] = "" if ancestry in (None, "") else _ancestry(ancestry)
    genotype = dict(record.get("genotype") or {})
    for gene in GENES.values():
        if gene.column in record:
            genotype[gene.name] = record[gene.column]
    canonical: dict[str, str] = {}
    for gene_name, text in genotype.items():
        gene = _gene(gene_name)
        missing = text is None or (isinstance(text, str) and not text.strip())
        missing = missing or (isinstance(text, float) and math.isnan(text))
        canonical[gene.name] = "" if missing else parse_genotype(gene.name, text)
    for gene in GENES.values():
        row[gene.column] = canonical.get(gene.name, "")
    taking = {comedication(name).column for name in record.get("comedications") or ()}
    for column in comed_columns:
        flag = _number(record.get(column, 0.0), COVARIATE_COLUMNS[column], f"{where}.{column}")
        row[column] = 1.0 if column in taking else flag
    if math.isnan(row["crcl"]):
        inputs = (row["age"], row["weight"], row["serum_creatinine"], row["female"])
        if not any(math.isnan(v) for v in inputs):
            row["crcl"] = float(cockcroft_gault(*inputs, **crcl_options))
    return row
