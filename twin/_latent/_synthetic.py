"""Synthetic patients from a latent model: covariates that are not copies of training rows,
a training patient's dosing and sampling design, and the model's own trajectories.

Covariates come from a Gaussian copula fitted on the training covariate table
(:class:`CovariateCopula`): each number column keeps its empirical distribution, smoothed
— the empirical CDF interpolated linearly between order statistics and extended by a
Silverman bandwidth beyond the extremes — so that a drawn value equals a training value
with probability 0; each category column (flags, genotype diplotypes, ancestry; missing
is a category of its own) keeps its frequencies; the dependence between columns is the
correlation of the rows' normal scores (categories as intervals of [0, 1] ordered by
frequency, the rdt/SDV ``UniformEncoder`` construction). Nothing else of a training row
survives: a synthetic patient's row is assembled column by column from one draw of a
multivariate normal.

Each synthetic patient then takes the design (dose times, infusion rates, sampling times
and outputs) of one training patient drawn at random, with the doses scaled by the ratio
of the two weights where the regimen is weight-based, and gets one trajectory of the
latent model, ``z ~ p(z | x)``, with the drug's residual error
(:meth:`~twinsim.twin.LatentModel.sample_patients`). Patient ``i``'s covariates, design
and trajectory depend only on ``(seed, i)``: the first patients of a larger draw are the
patients of a smaller one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ...priors import COVARIATE_COLUMNS
from ...simulators import DosingEvents
from ._data import LatentData
from ._features import LatentModelError

__all__ = ["CovariateCopula", "covariate_kind", "synthesize_patients"]

# keys of a category column's values: missing values (None, NaN, "") are one category
_MISSING = ""


def covariate_kind(column: str, values: Any) -> str:
    """``"number"`` or ``"category"``: a standard column's declared kind (flags and text are
    categories), otherwise numbers for a numeric array and categories for anything else.

    Examples
    --------
    >>> covariate_kind("female", [0.0, 1.0]), covariate_kind("weight", [70.0]), covariate_kind("site", ["a"])
    ('category', 'number', 'category')
    """
    if column in COVARIATE_COLUMNS:
        return "number" if COVARIATE_COLUMNS[column].kind == "number" else "category"
    return "number" if np.asarray(values).dtype.kind in "iuf" else "category"


def _key(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return _MISSING
    return str(value).strip()


def _numbers(column: str, values: Any) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise LatentModelError(
            f"covariate `{column}` must be numeric, got values like {list(values)[:3]!r}"
        ) from None


@dataclass(frozen=True)
class _Numbers:
    """A number column: knots of the smoothed empirical CDF and the share missing."""

    knots: np.ndarray  # values, non-decreasing
    levels: np.ndarray  # CDF at the knots, 0 … 1
    missing: float

    @classmethod
    def fit(cls, column: str, values: Any) -> _Numbers:
        x = _numbers(column, values)
        finite = np.sort(x[np.isfinite(x)])
        if finite.size == 0:
            raise LatentModelError(
                f"covariate `{column}` has no value in the training table; drop the column or "
                "give values"
            )
        m = finite.size
        bandwidth = 1.06 * float(finite.std()) * m ** (-0.2)
        low = finite[0] - bandwidth
        if finite[0] >= 0.0:  # a non-negative quantity (weight, age, CrCL) stays so
            low = max(low, 0.0)
        knots = np.concatenate([[low], finite, [finite[-1] + bandwidth]])
        levels = np.concatenate([[0.0], (np.arange(m) + 0.5) / m, [1.0]])
        return cls(knots, levels, float(np.mean(~np.isfinite(x))))

    def scores(self, values: Any, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(values, np.float64)
        u = np.full(x.shape, 0.5)
        finite = np.isfinite(x)
        u[finite] = (stats.rankdata(x[finite]) - 0.5) / finite.sum()
        return u

    def values(self, u: np.ndarray, missing_draw: np.ndarray) -> np.ndarray:
        out = np.interp(u, self.levels, self.knots)
        return np.where(missing_draw < self.missing, np.nan, out)


@dataclass(frozen=True)
class _Categories:
    """A category column: values in order of frequency and their cumulative shares."""

    values_: tuple[Any, ...]
    edges: np.ndarray  # [0, c1, …, 1]

    @classmethod
    def fit(cls, column: str, values: Any) -> _Categories:
        keys = [_key(v) for v in values]
        first: dict[str, Any] = {}
        counts: dict[str, int] = {}
        for k, v in zip(keys, values, strict=True):
            first.setdefault(k, v)
            counts[k] = counts.get(k, 0) + 1
        order = sorted(counts, key=lambda k: (-counts[k], k))
        shares = np.array([counts[k] for k in order], float) / len(keys)
        kept = tuple(np.nan if k == _MISSING and not isinstance(first[k], str) else first[k]
                     for k in order)  # fmt: skip
        return cls(kept, np.concatenate([[0.0], np.cumsum(shares)]))

    def scores(self, values: Any, rng: np.random.Generator) -> np.ndarray:
        index = {_key(v): i for i, v in enumerate(self.values_)}
        where = np.array([index[_key(v)] for v in values])
        low, high = self.edges[where], self.edges[where + 1]
        return low + (high - low) * rng.random(where.size)

    def values(self, u: np.ndarray, missing_draw: np.ndarray) -> np.ndarray:
        where = np.clip(np.searchsorted(self.edges, u, side="right") - 1, 0, len(self.values_) - 1)
        out = np.empty(u.shape, dtype=object)
        out[:] = [self.values_[i] for i in where]
        if all(isinstance(v, float | int | np.number) for v in self.values_):
            return out.astype(np.float64)
        return out


@dataclass(frozen=True)
class CovariateCopula:
    """A Gaussian copula of a covariate table (see the module doc); fit with :meth:`fit`.

    Attributes
    ----------
    columns
        The covariate columns, in table order.
    kinds
        ``"number"`` or ``"category"`` per column (:func:`covariate_kind`).
    correlation
        Correlation of the normal scores ``[column, column]`` (positive definite).

    Examples
    --------
    >>> table = {"weight": [60.0, 75.0, 90.0, 82.0], "female": [1.0, 0.0, 0.0, 1.0],
    ...          "cyp3a5": ["*3/*3", "*1/*3", "*3/*3", "*3/*3"]}
    >>> copula = CovariateCopula.fit(table)
    >>> new = copula.sample(3, seed=0)
    >>> sorted(new), new["weight"].shape, set(new["cyp3a5"]) <= {"*3/*3", "*1/*3"}
    (['cyp3a5', 'female', 'weight'], (3,), True)
    >>> bool(np.isin(new["weight"], table["weight"]).any())  # no training value comes back
    False
    """

    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    marginals: tuple[_Numbers | _Categories, ...]
    correlation: np.ndarray

    @classmethod
    def fit(cls, table: Mapping[str, Any], *, seed: int = 0) -> CovariateCopula:
        """Fit the marginals and the normal scores' correlation on ``table``.

        Parameters
        ----------
        table
            ``{column: values per patient}`` (the training covariates).
        seed
            Seed of the uniform positions of categories inside their intervals.

        Raises
        ------
        LatentModelError
            For an empty table, columns of unequal length, fewer than 2 patients, or a
            number column with no value or a non-numeric value.
        """
        if not table:
            raise LatentModelError(
                "the covariate table is empty; give {column: values per patient}"
            )
        lengths = {c: len(v) for c, v in table.items()}
        n = max(lengths.values())
        if min(lengths.values()) != n:
            raise LatentModelError(
                f"covariate columns must have one value per patient, got lengths {lengths}"
            )
        if n < 2:
            raise LatentModelError(
                f"a covariate copula needs at least 2 training patients, got {n}"
            )
        rng = np.random.default_rng([seed, 0x5EED])
        columns = tuple(table)
        kinds = tuple(covariate_kind(c, table[c]) for c in columns)
        marginals = tuple(
            (_Numbers if kind == "number" else _Categories).fit(c, table[c])
            for c, kind in zip(columns, kinds, strict=True)
        )
        scores = np.stack(
            [m.scores(table[c], rng) for c, m in zip(columns, marginals, strict=True)], axis=1
        )
        normal = stats.norm.ppf(np.clip(scores, 1e-9, 1 - 1e-9))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(normal, rowvar=False).reshape(len(columns), len(columns))
        corr = np.where(np.isfinite(corr), corr, 0.0)
        np.fill_diagonal(corr, 1.0)
        # nearest positive-definite correlation: clip eigenvalues, rescale to a unit diagonal
        w, v = np.linalg.eigh(corr)
        corr = (v * np.maximum(w, 1e-6)) @ v.T
        d = np.sqrt(np.diag(corr))
        return cls(columns, kinds, marginals, corr / np.outer(d, d))

    def sample(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """``n`` new covariate rows; row ``i`` depends only on ``(seed, i)``.

        Returns
        -------
        dict
            ``{column: values [n]}`` (float64 for numbers and numeric flags, objects for text).
        """
        if not (isinstance(n, int | np.integer) and n >= 1):
            raise LatentModelError(f"`n` must be an integer ≥ 1, got {n!r}")
        chol = np.linalg.cholesky(self.correlation)
        k = len(self.columns)
        draws = np.stack([_patient_rng(seed, i).standard_normal(2 * k) for i in range(int(n))])
        u = stats.norm.cdf(draws[:, :k] @ chol.T)
        missing = stats.norm.cdf(draws[:, k:])
        return {
            c: m.values(u[:, j], missing[:, j])
            for j, (c, m) in enumerate(zip(self.columns, self.marginals, strict=True))
        }


def _patient_rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(i), 0xC0])


def _scaled_events(events: DosingEvents, rows: np.ndarray, factor: np.ndarray) -> DosingEvents:
    """Rows ``rows`` of ``events`` with amounts and rates × ``factor`` (durations kept)."""
    fields = {f: np.asarray(getattr(events, f))[rows] for f in events.__dataclass_fields__}
    fields["amount"] = fields["amount"] * factor[:, None]
    fields["rate"] = fields["rate"] * factor[:, None]
    return DosingEvents(**fields)


def synthesize_patients(
    model: Any,
    training: LatentData,
    n: int,
    seed: int,
    *,
    weight_based_doses: bool = False,
) -> LatentData:
    """``n`` synthetic patients of a latent model, shaped like its training data.

    Parameters
    ----------
    model
        The (trained or untrained) :class:`~twinsim.twin.LatentModel`.
    training
        The training patients (:class:`~twinsim.twin.LatentData`): their covariates fit
        the :class:`CovariateCopula`, their designs are drawn for the new patients.
    n, seed
        How many patients; root seed (patient ``i`` depends only on ``(seed, i)``).
    weight_based_doses
        Scale each borrowed regimen's amounts and rates by synthetic weight / donor weight
        (for mg/kg regimens); otherwise the donor's doses are kept as they are.

    Returns
    -------
    LatentData
        The synthetic patients: copula covariates (the model's covariate columns), the
        donors' designs, and one latent-model trajectory each with residual error as
        ``observed`` (censored below the training data's limit of quantification).

    Raises
    ------
    LatentModelError
        When the training data lacks a covariate column the model uses, or has no
        ``weight`` column while ``weight_based_doses`` is set.
    """
    table = model.features.select(training.covariates)
    if weight_based_doses and "weight" not in training.covariates:
        raise LatentModelError(
            "`weight_based_doses` needs a `weight` column in the training data; give weights "
            "or keep the donors' doses (weight_based_doses=False)"
        )
    copula = CovariateCopula.fit(table, seed=seed)
    covariates = copula.sample(n, seed)
    donors = np.array([_patient_rng(seed, i).integers(training.n_subjects) for i in range(int(n))])
    factor = np.ones(int(n))
    if weight_based_doses:
        donor_weight = np.asarray(training.covariates["weight"], float)[donors]
        factor = np.asarray(covariates["weight"], float) / donor_weight
    events = _scaled_events(training.events, donors, factor)
    times, mask = training.times[donors], training.mask[donors]
    output = training.output[donors]
    levels = model.sample_patients(covariates, events, times, seed, residual=True)
    observed = np.take_along_axis(levels, output[..., None], axis=-1)[..., 0]
    limits = training.lloq[np.isfinite(training.lloq)]
    observations = [list(zip(times[i][mask[i]], observed[i][mask[i]], strict=True))
                    for i in range(int(n))]  # fmt: skip
    return LatentData.build(
        model, covariates, events, observations,
        outputs=[output[i][mask[i]] for i in range(int(n))],
        lloq=float(limits.min()) if limits.size else None,
        ids=tuple(range(int(n))), n_observations=training.times.shape[1],
    )  # fmt: skip
