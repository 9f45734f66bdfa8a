"""The covariate vector ``x`` the latent model sees, from the standard covariate table.

Numbers and flags of :data:`~twinsim.priors.COVARIATE_COLUMNS` are standardised with the
training set's mean and SD (a missing number becomes the training mean, i.e. 0);
genotypes (diplotype text) become CPIC activity scores, standardised the same way;
ancestry becomes one indicator per known group. The transform is fitted once on the
training table and saved with the model, so a patient is encoded the same way forever.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...priors import ANCESTRIES, COVARIATE_COLUMNS, GENES

__all__ = ["CovariateFeatures", "LatentModelError"]


class LatentModelError(ValueError):
    """A latent model, its settings or its inputs are inconsistent."""


# columns whose defaults are infinite (a time of quitting) carry no usable number
_SKIPPED = frozenset({"smoking_quit_time"})
_GENE_OF_COLUMN = {gene.column: name for name, gene in GENES.items()}


def _activity(gene: str, value: Any) -> float:
    if not isinstance(value, str) or not value.strip():
        return math.nan
    try:
        return float(GENES[gene].activity_score(value))
    except ValueError as error:
        raise LatentModelError(f"covariate `{GENES[gene].column}`: {error}") from None


@dataclass(frozen=True)
class CovariateFeatures:
    """The fitted map from covariate columns to the feature vector ``x``.

    Attributes
    ----------
    columns
        Covariate columns used, in feature order (numbers, flags, genotypes; then
        ``ancestry`` as one indicator per group when present).
    mean, scale
        Training mean and SD of each numeric/genotype column (SD 1 where constant).
    ancestry
        Whether ancestry indicators are appended.

    Examples
    --------
    >>> f = CovariateFeatures.fit({"weight": [60.0, 80.0], "cyp3a5": ["*1/*3", "*3/*3"]})
    >>> f.names
    ('weight', 'cyp3a5')
    >>> f.transform({"weight": [70.0], "cyp3a5": ["*1/*1"]}).round(3).tolist()
    [[0.0, 3.0]]
    """

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    ancestry: bool

    @property
    def names(self) -> tuple[str, ...]:
        extra = tuple(f"ancestry_{a}" for a in ANCESTRIES) if self.ancestry else ()
        return self.columns + extra

    @property
    def size(self) -> int:
        return len(self.names)

    @staticmethod
    def _raw(table: Mapping[str, Any], column: str) -> np.ndarray:
        values = table[column]
        if column in _GENE_OF_COLUMN:
            return np.array([_activity(_GENE_OF_COLUMN[column], v) for v in values], float)
        try:
            return np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise LatentModelError(
                f"covariate `{column}` must be numeric ({COVARIATE_COLUMNS[column].unit or 'no unit'}),"
                f" got values like {list(values)[:3]!r}"
            ) from None

    @classmethod
    def fit(
        cls, table: Mapping[str, Any], columns: Sequence[str] | None = None
    ) -> CovariateFeatures:
        """Choose the standard columns present in ``table`` (or ``columns``) and fit scales."""
        if columns is None:
            columns = [c for c in COVARIATE_COLUMNS if c in table and c not in _SKIPPED]
        unknown = [c for c in columns if c not in COVARIATE_COLUMNS]
        if unknown:
            raise LatentModelError(
                f"`covariates` {unknown} are not standard covariate columns; known: "
                f"{', '.join(COVARIATE_COLUMNS)}"
            )
        missing = [c for c in columns if c not in table]
        if missing:
            raise LatentModelError(
                f"covariate columns {missing} are missing from the data; got {sorted(table)}"
            )
        numeric = tuple(c for c in columns if c != "ancestry")
        means, scales = [], []
        for c in numeric:
            raw = cls._raw(table, c)
            finite = raw[np.isfinite(raw)]
            mean = float(finite.mean()) if finite.size else 0.0
            sd = float(finite.std()) if finite.size > 1 else 0.0
            means.append(mean)
            scales.append(sd if sd > 1e-12 else 1.0)
        return cls(numeric, tuple(means), tuple(scales), "ancestry" in columns)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The covariate table's columns the transform reads (``ancestry`` once)."""
        return (*self.columns, *(("ancestry",) if self.ancestry else ()))

    def select(self, table: Mapping[str, Any]) -> dict[str, Any]:
        """The columns of ``table`` the transform reads (:attr:`inputs`), by name."""
        missing = [c for c in self.inputs if c not in table]
        if missing:
            raise LatentModelError(
                f"the latent model needs covariate columns {missing}; got {sorted(table)}"
            )
        return {c: table[c] for c in self.inputs}

    def transform(self, table: Mapping[str, Any]) -> np.ndarray:
        """Features ``[subject, size]`` (float64) of a covariate table."""
        self.select(table)
        parts = []
        for c, m, s in zip(self.columns, self.mean, self.scale, strict=True):
            raw = (self._raw(table, c) - m) / s
            parts.append(np.where(np.isfinite(raw), raw, 0.0))
        if self.ancestry:
            groups = [str(a).strip().lower() for a in table["ancestry"]]
            parts.extend(np.array([g == a for g in groups], float) for a in ANCESTRIES)
        n = len(next(iter(table.values()))) if table else 0
        return np.stack(parts, axis=1) if parts else np.zeros((n, 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "ancestry": self.ancestry,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CovariateFeatures:
        return cls(tuple(d["columns"]), tuple(d["mean"]), tuple(d["scale"]), bool(d["ancestry"]))
