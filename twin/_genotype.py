"""Untested genotypes: a twin that averages over the genotypes the patient may carry.

A clinician often has no genotype ("CYP2C9 not tested"). The twin then treats the gene as
a discrete latent variable ``g``:

- **prior** ``p(g)``: the diplotype frequencies of the patient's ancestry under
  Hardy–Weinberg equilibrium, from the allele frequency table of
  :data:`~twinsim.priors.GENES` (:func:`~twinsim.priors.diplotype_frequencies`; sources
  in each gene's ``citation``: the PharmGKB/CPIC allele frequency tables). Several
  untested genes are taken as independent (linkage equilibrium: CYP2C9 and VKORC1 lie on
  different chromosomes). Diplotypes the model has no level for are left out and the rest
  renormalised; the note says how much frequency that removed.
- **genotype groups**: diplotypes that give the model identical typical parameters (for
  warfarin, ``*1/*2``, ``*1/*8`` and ``*1/*11`` all take the ``*2`` clearance) have
  identical likelihoods, so they are pooled into one component (their frequencies
  summed), labelled by the most frequent one.
- **posterior** ``p(g | y) ∝ p(g) · p(y | g)``, with the marginal likelihood of the
  measured levels under each genotype by the **Laplace approximation at that genotype's
  MAP** of η: ``log p(y | g) ≈ −U_g(η̂_g) − ½ log det H_g + const``, where ``U_g`` is the
  twin's negative log posterior (the same objective :meth:`PatientTwin.fit` minimises)
  and ``H_g`` its Hessian at the mode; the constant (prior normaliser, data constants) is
  the same for every genotype. Without levels the posterior is the prior.
- **predictions**: the mixture. ``n`` draws are allocated to the components in
  proportion to their weights (largest remainder; a component whose share is below half
  a draw gets none) and drawn from each component's posterior with a fixed seed, so the
  quantiles, metrics and probabilities of a :class:`~twinsim.twin.Prediction` are those of
  the mixture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from ..priors._covariates import (
    ANCESTRIES,
    GENES,
    NOT_TESTED,
    NOT_TESTED_SPELLINGS,
    CovariateError,
    _ancestry,
    diplotype_frequencies,
    is_not_tested,
)
from ..priors._covariates import parse_diplotype as _parse_diplotype
from ._clinical import PatientTwinError

if TYPE_CHECKING:
    from ..priors._population import PopulationModel
    from ._posterior import TwinPosterior

# the spellings live in the priors (specs check them too); re-exported here
__all__ = [
    "NOT_TESTED",
    "NOT_TESTED_SPELLINGS",
    "GenotypeGroup",
    "GenotypeMixture",
    "is_not_tested",
]


def ancestry_of(covariates: Mapping[str, Any], untested: Sequence[str]) -> str:
    """The patient's ancestry group (a key of :data:`~twinsim.priors.ANCESTRIES`), needed
    to average over untested genes; a clear error without one."""
    genes = ", ".join(f"`{c}`" for c in untested)
    accepted = ", ".join(repr(a) for a in ANCESTRIES)
    value = covariates.get("ancestry")
    if value is not None:
        value = np.atleast_1d(np.asarray(value, dtype=object))[0]
    if value is None or is_not_tested(value):
        raise PatientTwinError(
            f"covariate `ancestry` is needed because {genes} is not tested: the twin averages "
            f"over the genotype frequencies of the patient's ancestry group; give `ancestry` "
            f"(one of {accepted}) or the genotype itself"
        )
    try:
        return _ancestry(str(value))  # the frequency tables' own spelling rule
    except CovariateError:
        raise PatientTwinError(
            f"covariate `ancestry` {value!r} has no genotype frequencies (needed because "
            f"{genes} is not tested); accepted values: {accepted}; give one of them or the "
            "genotype itself"
        ) from None


@dataclass(frozen=True)
class GenotypeGroup:
    """Genotypes with identical typical parameters, one component of the mixture.

    Attributes
    ----------
    genotypes
        ``{column: model level}`` the component is computed with (its most frequent
        member).
    members
        Every ``{column: diplotype}`` pooled here, most frequent first.
    prior
        Summed population frequency (renormalised over the model's levels).
    label
        ``"CYP2C9 *1/*2"`` (several genes: joined by ``" + "``).
    """

    genotypes: Mapping[str, str]
    members: tuple[Mapping[str, str], ...]
    prior: float
    label: str

    @property
    def pooled(self) -> str:
        """The members in words: ``"*1/*2, *1/*8, *1/*11"`` (genes joined by ``" + "``)."""
        return ", ".join(" + ".join(m.values()) for m in self.members)


def genotype_groups(
    model: PopulationModel, row: Mapping[str, np.ndarray], untested: Sequence[str], ancestry: str
) -> tuple[tuple[GenotypeGroup, ...], dict[str, float]]:
    """The mixture's components for a twin's covariate ``row``: genotype groups and their
    prior weights, and per untested column the frequency of diplotypes the model has no
    level for (left out)."""
    per_gene: list[list[tuple[str, str, float]]] = []  # (diplotype, level, frequency)
    dropped: dict[str, float] = {}
    for column in untested:
        gene = column.upper()
        levels = next(c.levels for c in model.covariates if c.name == column) or ()
        canonical: dict[str, str] = {}
        for level in levels:
            try:
                canonical.setdefault(_parse_diplotype(gene, level), level)
            except CovariateError:
                continue
        freqs = diplotype_frequencies(gene, ancestry)
        kept = [(d, canonical[d], p) for d, p in freqs.items() if d in canonical]
        total = sum(p for _, _, p in kept)
        if not kept:
            raise PatientTwinError(
                f"covariate `{column}` is not tested, but none of the {gene} diplotypes of "
                f"{ancestry} ancestry is a level of model {model.name!r} "
                f"({list(levels)}); give the genotype"
            )
        dropped[column] = float(sum(freqs.values()) - total)
        per_gene.append([(d, level, p / total) for d, level, p in kept])
    combos: list[tuple[tuple[str, str, float], ...]] = [()]
    for options in per_gene:
        combos = [(*c, o) for c in combos for o in options]
    n = len(combos)
    table = {k: np.repeat(np.asarray(v), n) for k, v in row.items() if k not in untested}
    for j, column in enumerate(untested):
        table[column] = np.asarray([c[j][1] for c in combos])
    typical = np.asarray(model.typical_parameters(table), np.float64)
    groups: dict[bytes, list[int]] = {}
    for i in range(n):
        groups.setdefault(typical[i].tobytes(), []).append(i)
    out = []
    for members in groups.values():
        prior = [math.prod(p for _, _, p in combos[i]) for i in members]
        order = sorted(range(len(members)), key=lambda m: -prior[m])
        best = combos[members[order[0]]]
        out.append(
            GenotypeGroup(
                genotypes={c: best[j][1] for j, c in enumerate(untested)},
                members=tuple(
                    {c: combos[members[m]][j][0] for j, c in enumerate(untested)} for m in order
                ),
                prior=float(sum(prior)),
                label=" + ".join(f"{c.upper()} {best[j][0]}" for j, c in enumerate(untested)),
            )
        )
    return tuple(out), dropped


def _largest_remainder(weights: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to ``n`` proportional to ``weights`` (Hamilton's method;
    ties to the earlier component)."""
    exact = np.asarray(weights, np.float64) * n
    counts = np.floor(exact).astype(int)
    rest = n - int(counts.sum())
    if rest > 0:
        order = sorted(range(len(exact)), key=lambda k: (-(exact[k] - counts[k]), k))
        for k in order[:rest]:
            counts[k] += 1
    return counts


@dataclass(frozen=True, eq=False)
class GenotypeMixture:
    """The posterior over untested genotypes (see the module docstring).

    Attributes
    ----------
    ancestry
        The ancestry group whose frequencies are the prior.
    genes
        The untested covariate columns (``("cyp2c9",)``).
    groups
        The components (:class:`GenotypeGroup`).
    prior
        Prior weights ``[component]`` (Hardy–Weinberg frequencies, summing to 1).
    weights
        Posterior weights ``[component]`` (summing to 1; the prior without levels).
    log_evidence
        Laplace log marginal likelihood of the levels per component, up to a constant
        shared by all (``None`` without levels).
    components
        Each component's :class:`~twinsim.twin.TwinPosterior` (its twin has the genotype
        filled in).
    dropped
        Per untested column, the frequency of diplotypes without a model level (left out).
    observations
        How many levels the weights use.
    """

    ancestry: str
    genes: tuple[str, ...]
    groups: tuple[GenotypeGroup, ...]
    prior: np.ndarray
    weights: np.ndarray
    log_evidence: np.ndarray | None
    components: tuple[TwinPosterior, ...]
    dropped: Mapping[str, float]
    observations: int

    @property
    def most_probable(self) -> int:
        """Index of the component with the largest posterior weight."""
        return int(np.argmax(self.weights))

    def allocate(self, n: int) -> np.ndarray:
        """Draws per component for ``n`` mixture draws (largest remainder)."""
        return _largest_remainder(self.weights, int(n))

    def draws(self, n: int, seed: int = 0) -> list[tuple[int, np.ndarray]]:
        """``[(component, η draws [n_k, R])]`` for ``n`` mixture draws (components with
        no draw left out). Component ``k`` draws with ``fold_in(key(seed), k)`` (Gaussian
        posteriors) or thins its NUTS samples."""
        out = []
        key = jax.random.PRNGKey(seed)
        for k, count in enumerate(self.allocate(n)):
            if count == 0:
                continue
            post = self.components[k]
            if post.samples is not None:
                out.append((k, post.eta_draws(int(count))))
                continue
            r = post.eta_mode.size
            z = np.asarray(jax.random.normal(jax.random.fold_in(key, k), (int(count), r)))
            chol = np.linalg.cholesky(post.covariance + 1e-300 * np.eye(r))
            out.append((k, post.eta_mode[None] + z @ chol.T))
        return out

    def table(self) -> list[dict[str, Any]]:
        """One row per component: label, pooled diplotypes, prior and posterior weight."""
        return [
            {
                "genotype": g.label,
                "pooled": g.pooled,
                "prior": float(self.prior[k]),
                "posterior": float(self.weights[k]),
            }
            for k, g in enumerate(self.groups)
        ]

    def describe(self, *, smallest: float = 0.01) -> str:
        """The averaging in plain words, with the weights of components ≥ ``smallest``."""
        genes = " and ".join(c.upper() for c in self.genes)
        ancestry = self.ancestry.replace("_", " ").title()
        order = sorted(range(len(self.groups)), key=lambda k: -self.weights[k])
        shown = [
            f"{self.groups[k].label.split(' ', 1)[1] if len(self.genes) == 1 else self.groups[k].label}"
            f" {100 * self.weights[k]:.0f} %"
            for k in order
            if self.weights[k] >= smallest
        ]
        hidden = len(order) - len(shown)
        source = "; ".join(
            GENES[c.upper()].citation.split("frequencies: ")[-1].rstrip(".") for c in self.genes
        )
        if self.log_evidence is None:
            how = "weighted by their frequency (no levels measured)"
        else:
            how = (
                f"weighted by their frequency and how well each explains the "
                f"{self.observations} measured level(s) (Laplace approximation of each "
                "genotype's marginal likelihood at its MAP)"
            )
        text = (
            f"{genes} not tested: the prediction averages over the genotypes of {ancestry} "
            f"ancestry (Hardy–Weinberg frequencies from {source}), {how}: "
            f"{', '.join(shown)}"
        )
        if hidden:
            text += f" ({hidden} rarer genotype group(s) below {100 * smallest:g} % not listed)"
        lost = {c: p for c, p in self.dropped.items() if p > 0}
        if lost:
            text += "; left out (no model level): " + ", ".join(
                f"{100 * p:.2g} % of {c.upper()} diplotypes" for c, p in lost.items()
            )
        return text + ". Genotyping would remove this uncertainty."


def mixture_weights(
    prior: np.ndarray, components: Sequence[TwinPosterior], with_data: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Posterior weights ∝ prior × Laplace marginal likelihood (see the module docstring)."""
    prior = np.asarray(prior, np.float64)
    if not with_data:
        return prior / prior.sum(), None
    log_evidence = np.array(
        [
            -float(p.diagnostics["neg_log_posterior"])
            + 0.5 * float(np.linalg.slogdet(p.covariance)[1])
            for p in components
        ]
    )
    log_post = np.log(prior) + log_evidence
    finite = np.isfinite(log_post)
    if not finite.any():
        raise PatientTwinError(
            "no genotype explains the measured levels (every marginal likelihood failed); "
            "check the levels, their times and units, or give the genotype"
        )
    log_post = np.where(finite, log_post, -np.inf)
    weights = np.exp(log_post - log_post.max())
    return weights / weights.sum(), log_evidence
