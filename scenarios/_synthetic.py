"""Are a latent model's synthetic patients useful and private? Fidelity and privacy report.

Each patient is one row: the covariate columns the model uses and the *exposure metrics*
— the observed levels at the design's sampling positions, ``<output>_1 … <output>_K``
(the k-th measured level of the patient, by time). Synthetic patients borrow the design
of a training patient (:func:`~twinsim.twin.synthesize_patients`), so the k-th level of
real and synthetic patients is taken at the same mixture of sampling times and the two
columns compare like with like. Dosing and sampling times are not compared (they are
copied from training patients by construction: a regimen, not a patient trait).

Fidelity (the metric definitions of SDMetrics, computed here with scipy/scikit-learn):

- column shapes: ``KSComplement`` (1 − Kolmogorov–Smirnov D) for numbers,
  ``TVComplement`` (1 − total variation distance) for categories;
- column pair trends: ``CorrelationSimilarity`` (1 − |ρ_real − ρ_synthetic| / 2,
  Pearson) for two numbers, ``ContingencySimilarity`` (1 − total variation distance of
  the two-way table; numbers in 10 equal-width bins of the real values) otherwise;
- detection: ``LogisticDetection`` — a logistic regression (mean imputation, robust
  scaling, one-hot categories) tells real from synthetic rows in 3-fold stratified
  cross-validation; score 1 − (2·max(AUC, 0.5) − 1).

Privacy, against real patients the model never saw (the holdout):

- distance to the closest record (DCR, SDMetrics' Gower-type distance: numbers
  |a − b| / range of the reference capped at 1, categories 0/1, mean over columns) of
  each synthetic patient to the training set, against the same for each holdout patient
  (the baseline: how close a new real patient is by chance); and SDMetrics'
  ``DCROverfittingProtection`` (share of synthetic rows closer to the training set than
  to an equally large holdout set; 50 % is ideal);
- a membership-inference attack: the attacker scores each real patient by its distance
  to the closest synthetic patient and guesses "was in training" when it is small; the
  ROC AUC of training members against holdout non-members is 0.5 when the synthetic data
  give nothing away (a copy of the training set gives 1).

SDMetrics itself is not a dependency: it requires ``copulas`` (Business Source License
1.1, not an open-source licence) and pins ``pandas < 3``, and its detection metric draws
its folds from an unseeded generator (the same data give another score each run). The
definitions above are SDMetrics 0.32's; ``tests/scenarios/test_synthetic_report.py``
checks the numbers against values computed with it.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..twin import LatentData, LatentModelError, covariate_kind, synthesize_patients
from ._provenance import package_versions, write_text_atomic

__all__ = [
    "SyntheticReport",
    "closest_record_distance",
    "compare_synthetic",
    "patient_table",
    "synthetic_html",
    "synthetic_report",
    "synthetic_report_from_files",
    "write_synthetic_report",
]

_VERSIONS = ("twinsim", "jax", "flax", "numpy", "scipy", "pandas", "scikit-learn")
_CHUNK = 1024


def patient_table(model: Any, data: LatentData, *, n_levels: int | None = None) -> pd.DataFrame:
    """One row per patient: the model's covariate columns and the observed levels.

    Parameters
    ----------
    model
        The :class:`~twinsim.twin.LatentModel` (its covariate columns and outputs).
    data
        Real or synthetic patients (:class:`~twinsim.twin.LatentData`).
    n_levels
        Level columns per output (default: the most levels any patient has).

    Returns
    -------
    pandas.DataFrame
        Covariate columns, then ``<output>_<k>`` (k-th level by time; NaN where a
        patient has fewer).
    """
    table = {c: np.asarray(v) for c, v in model.features.select(data.covariates).items()}
    for j, name in enumerate(model.outputs):
        chosen = data.mask & (data.output == j)
        if not chosen.any():
            continue
        k = int(chosen.sum(axis=1).max()) if n_levels is None else n_levels
        levels = np.full((data.n_subjects, k), np.nan)
        for i in range(data.n_subjects):
            values = data.observed[i][chosen[i]][:k]
            levels[i, : values.size] = values
        for m in range(k):
            table[f"{name}_{m + 1}"] = levels[:, m]
    return pd.DataFrame(table)


@dataclass(frozen=True)
class SyntheticReport:
    """Fidelity and privacy of synthetic patients (see the module doc); :meth:`to_dict`
    is what ``report.json`` holds.

    Attributes
    ----------
    sizes
        ``{"training", "holdout", "synthetic"}`` patient counts.
    columns
        ``{column: "numerical" | "categorical"}``.
    fidelity
        ``column_shapes`` ({column: {metric, score}}), ``column_pairs`` (list of
        {columns, metric, score, real, synthetic}), ``detection`` ({metric, auc,
        score}), ``column_shapes_score``, ``column_pair_trends_score``, ``quality_score``.
    privacy
        ``dcr`` (medians and 5th percentiles of synthetic→training and
        holdout→training, their ratio, shares of exact copies, ``closer_than_holdout``:
        P(a synthetic patient is closer to the training set than a holdout patient) and
        ``passed``), ``overfitting``
        (DCROverfittingProtection), ``membership_inference`` ({auc, se, threshold,
        passed}).
    settings
        Seed, thresholds and anything the workflow adds (model, data files, provenance).
    """

    sizes: dict[str, int]
    columns: dict[str, str]
    fidelity: dict[str, Any]
    privacy: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Privacy checks passed: attack AUC and P(synthetic closer than holdout) ≤ their maxima."""
        return bool(
            self.privacy["membership_inference"]["passed"] and self.privacy["dcr"]["passed"]
        )

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self) | {"passed": self.passed})

    def summary(self) -> list[tuple[str, str, str]]:
        """``(measure, value, what it means)`` rows for tables (HTML, terminal)."""
        f, p = self.fidelity, self.privacy
        dcr, mia = p["dcr"], p["membership_inference"]
        return [
            ("column shapes", f"{f['column_shapes_score']:.3f}", "KS/TV complement, mean; 1 = same marginals"),
            ("column pair trends", f"{f['column_pair_trends_score']:.3f}",
             "correlation/contingency similarity, mean; 1 = same pairwise relations"),
            ("detection AUC", f"{f['detection']['auc']:.3f}",
             "logistic regression real vs synthetic; 0.5 = indistinguishable"),
            ("DCR synthetic→training (median)", f"{dcr['synthetic_median']:.4f}", "Gower-type distance"),
            ("DCR holdout→training (median)", f"{dcr['holdout_median']:.4f}", "baseline: new real patients"),
            ("DCR ratio of medians", f"{dcr['ratio']:.3f}", "synthetic / holdout; 1 = as far as new patients"),
            ("synthetic closer than holdout", f"{dcr['closer_than_holdout']:.3f}",
             f"P(DCR synthetic < DCR holdout); 0.5 ideal, ≤ {dcr['closer_max']:g} required"),
            ("exact copies", f"{dcr['synthetic_copies']:.1%}", "synthetic rows at distance 0 from a training row"),
            ("closer to training than holdout", f"{p['overfitting']['closer_to_training']:.1%}",
             "DCROverfittingProtection; 50 % ideal"),
            ("membership-inference AUC", f"{mia['auc']:.3f} ± {mia['se']:.3f}",
             f"attack by distance to synthetic; 0.5 ideal, ≤ {mia['threshold']:g} required"),
        ]  # fmt: skip


def _plain(value: Any) -> Any:
    """numpy scalars and arrays, NaN → JSON-ready values (NaN → None)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# ----------------------------------------------------------------------------- columns
def _kinds(table: pd.DataFrame) -> dict[str, str]:
    return {
        c: "numerical" if covariate_kind(c, table[c].to_numpy()) == "number" else "categorical"
        for c in table.columns
    }


def _category_keys(values: pd.Series) -> np.ndarray:
    """Comparable keys of a category column (missing: one key of its own)."""
    return np.array(
        ["\0missing" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
         for v in values],
        dtype=object,
    )  # fmt: skip


def _check_tables(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    names = list(tables)
    first = tables[names[0]]
    for name in names:
        table = tables[name]
        if not isinstance(table, pd.DataFrame):
            raise LatentModelError(
                f"`{name}` must be a pandas DataFrame of patients (one row each), got "
                f"{type(table).__name__}"
            )
        if len(table) < 2:
            raise LatentModelError(
                f"`{name}` must have at least 2 patients, got {len(table)}; a report on fewer "
                "says nothing"
            )
        missing = [c for c in first.columns if c not in table.columns]
        if missing:
            raise LatentModelError(
                f"`{name}` lacks columns {missing} that `{names[0]}` has; give every table the "
                f"same columns (got {list(table.columns)})"
            )
    return list(first.columns)


# ----------------------------------------------------------------------------- fidelity
def _ks_complement(real: pd.Series, synthetic: pd.Series) -> float:
    a, b = real.dropna().to_numpy(float), synthetic.dropna().to_numpy(float)
    if a.size == 0 or b.size == 0:
        return float("nan")
    return 1.0 - float(stats.ks_2samp(a, b).statistic)


def _tv_complement(real: Any, synthetic: Any) -> float:
    """1 − total variation distance of two category columns (key arrays, or tuples of keys)."""
    a = pd.Series(list(real)).value_counts(normalize=True)
    b = pd.Series(list(synthetic)).value_counts(normalize=True)
    both = a.index.union(b.index)
    return 1.0 - 0.5 * float(
        np.abs(a.reindex(both, fill_value=0) - b.reindex(both, fill_value=0)).sum()
    )


def _binned(real: pd.Series, synthetic: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """SDMetrics' discretisation: 10 equal-width bins of the real values, open outer bins."""
    edges = np.histogram_bin_edges(real.dropna().to_numpy(float), bins=10)
    edges[0], edges[-1] = -np.inf, np.inf
    return np.digitize(real.to_numpy(float), edges), np.digitize(synthetic.to_numpy(float), edges)


def _pair(real: pd.DataFrame, synthetic: pd.DataFrame, a: str, b: str, kinds) -> dict[str, Any]:
    if kinds[a] == kinds[b] == "numerical":
        r, s = real[[a, b]].dropna(), synthetic[[a, b]].dropna()
        with np.errstate(invalid="ignore", divide="ignore"):
            rho_r = np.corrcoef(r[a], r[b])[0, 1] if len(r) > 1 else np.nan
            rho_s = np.corrcoef(s[a], s[b])[0, 1] if len(s) > 1 else np.nan
        score = 1.0 - abs(rho_r - rho_s) / 2.0
        return {"columns": [a, b], "metric": "CorrelationSimilarity", "score": score,
                "real": rho_r, "synthetic": rho_s}  # fmt: skip
    keys_real, keys_synthetic = [], []
    for c in (a, b):
        if kinds[c] == "numerical":
            r, s = _binned(real[c], synthetic[c])
        else:
            r, s = _category_keys(real[c]), _category_keys(synthetic[c])
        keys_real.append(r)
        keys_synthetic.append(s)
    score = _tv_complement(
        list(zip(*keys_real, strict=True)), list(zip(*keys_synthetic, strict=True))
    )
    return {"columns": [a, b], "metric": "ContingencySimilarity", "score": score}


def _design_matrices(
    real: pd.DataFrame, synthetic: pd.DataFrame, kinds
) -> tuple[np.ndarray, np.ndarray]:
    """Numbers (missing → the real mean) and one-hot categories of the real table's values;
    like SDMetrics' HyperTransformer, a category column of numbers (a 0/1 flag) is a number."""
    parts_r, parts_s = [], []
    for c, kind in kinds.items():
        if kind == "numerical" or pd.api.types.is_numeric_dtype(real[c]):
            mean = real[c].mean()
            parts_r.append(real[c].fillna(mean).to_numpy(float)[:, None])
            parts_s.append(synthetic[c].fillna(mean).to_numpy(float)[:, None])
        else:
            r, s = _category_keys(real[c]), _category_keys(synthetic[c])
            levels = np.unique(r)
            parts_r.append((r[:, None] == levels[None, :]).astype(float))
            parts_s.append((s[:, None] == levels[None, :]).astype(float))
    return np.hstack(parts_r), np.hstack(parts_s)


def _detection(real: pd.DataFrame, synthetic: pd.DataFrame, kinds, seed: int) -> dict[str, Any]:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import RobustScaler

    xr, xs = _design_matrices(real, synthetic, kinds)
    x = np.concatenate([xr, xs])
    y = np.concatenate([np.ones(len(xr)), np.zeros(len(xs))])
    aucs = []
    for fit_rows, test_rows in StratifiedKFold(3, shuffle=True, random_state=seed).split(x, y):
        model = Pipeline([("imputer", SimpleImputer()), ("scaler", RobustScaler()),
                          ("classifier", LogisticRegression(solver="lbfgs"))])  # fmt: skip
        model.fit(x[fit_rows], y[fit_rows])
        aucs.append(roc_auc_score(y[test_rows], model.predict_proba(x[test_rows])[:, 1]))
    score = 1.0 - float(np.mean([max(0.5, a) * 2 - 1 for a in aucs]))
    return {"metric": "LogisticDetection", "auc": float(np.mean(aucs)), "fold_auc": aucs,
            "score": score}  # fmt: skip


# ----------------------------------------------------------------------------- privacy
def _encoded(table: pd.DataFrame, kinds) -> list[np.ndarray]:
    return [
        table[c].to_numpy(float) if kind == "numerical" else _category_keys(table[c])
        for c, kind in kinds.items()
    ]


def closest_record_distance(
    rows: pd.DataFrame, reference: pd.DataFrame, kinds: Mapping[str, str]
) -> np.ndarray:
    """Distance of each row to its closest reference row (SDMetrics' DCR).

    Per column: numbers ``min(|a − b| / range, 1)`` with the reference's range (0/1 when
    the range is 0; 1 when one value is missing, 0 when both are), categories 0 if equal
    else 1; the distance is the mean over columns.
    """
    a, b = _encoded(rows, kinds), _encoded(reference, kinds)
    ranges = [
        float(np.nanmax(col) - np.nanmin(col)) if kind == "numerical" and np.isfinite(col).any()
        else 0.0
        for col, kind in zip(b, kinds.values(), strict=True)
    ]  # fmt: skip
    out = np.empty(len(rows))
    for start in range(0, len(rows), _CHUNK):
        stop = min(start + _CHUNK, len(rows))
        total = np.zeros((stop - start, len(reference)))
        for x, y, kind, spread in zip(a, b, kinds.values(), ranges, strict=True):
            x = x[start:stop, None]
            if kind == "numerical":
                diff = np.abs(x - y[None, :])
                diff = (diff > 0).astype(float) if spread == 0 else np.minimum(diff / spread, 1.0)
                nan_x, nan_y = np.isnan(x), np.isnan(y)[None, :]
                diff = np.where(nan_x & nan_y, 0.0, np.where(nan_x | nan_y, 1.0, diff))
            else:
                diff = (x != y[None, :]).astype(float)
            total += diff
        out[start:stop] = total.min(axis=1) / len(kinds)
    return out


def _auc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an ROC AUC."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
        n_pos * n_neg
    )
    return float(np.sqrt(max(var, 0.0)))


def _privacy(training, synthetic, holdout, kinds, seed, mia_max, closer_max) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    to_training = closest_record_distance(synthetic, training, kinds)
    baseline = closest_record_distance(holdout, training, kinds)
    ratio = (
        float(np.median(to_training) / np.median(baseline)) if np.median(baseline) > 0 else np.nan
    )
    # P(a synthetic patient is closer to the training set than a holdout patient), ties ½
    closer_than_holdout = float(roc_auc_score(
        np.concatenate([np.ones(len(to_training)), np.zeros(len(baseline))]),
        -np.concatenate([to_training, baseline]),
    ))  # fmt: skip
    # DCROverfittingProtection compares with equally large reference sets
    rng = np.random.default_rng([seed, 1])
    m = min(len(training), len(holdout))
    train_part = training.iloc[np.sort(rng.choice(len(training), m, replace=False))]
    hold_part = holdout.iloc[np.sort(rng.choice(len(holdout), m, replace=False))]
    closer = float(np.mean(closest_record_distance(synthetic, train_part, kinds)
                           < closest_record_distance(synthetic, hold_part, kinds)))  # fmt: skip
    members = closest_record_distance(training, synthetic, kinds)
    outsiders = closest_record_distance(holdout, synthetic, kinds)
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(outsiders))])
    auc = float(roc_auc_score(labels, -np.concatenate([members, outsiders])))
    return {
        "dcr": {
            "synthetic_median": float(np.median(to_training)),
            "holdout_median": float(np.median(baseline)),
            "synthetic_q05": float(np.quantile(to_training, 0.05)),
            "holdout_q05": float(np.quantile(baseline, 0.05)),
            "synthetic_copies": float(np.mean(to_training < 1e-12)),
            "holdout_copies": float(np.mean(baseline < 1e-12)),
            "ratio": ratio,
            "closer_than_holdout": closer_than_holdout,
            "closer_max": closer_max,
            "passed": bool(closer_than_holdout <= closer_max),
        },
        "overfitting": {
            "metric": "DCROverfittingProtection",
            "closer_to_training": closer,
            "score": min((1.0 - closer) * 2.0, 1.0),
        },
        "membership_inference": {
            "auc": auc,
            "se": _auc_se(auc, len(members), len(outsiders)),
            "threshold": mia_max,
            "passed": bool(auc <= mia_max),
        },
    }


def compare_synthetic(
    training: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    seed: int = 0,
    mia_max: float = 0.6,
    dcr_closer_max: float = 0.6,
    columns: Mapping[str, str] | None = None,
) -> SyntheticReport:
    """Fidelity of ``synthetic`` to ``training`` and its privacy against ``holdout``.

    Parameters
    ----------
    training
        The real patients the generator was fitted on (one row each).
    synthetic
        The generated patients, same columns.
    holdout
        Real patients of the same population the generator never saw, same columns.
    seed
        Seed of the detection classifier's folds and of the overfitting subsample.
    mia_max
        Largest acceptable membership-inference AUC.
    dcr_closer_max
        Largest acceptable probability that a synthetic patient is closer to the
        training set than a holdout patient is (0.5: no closer than new real patients;
        copies: 1). The ratio of the median DCRs is reported too, but at a few hundred
        patients it varies by ±30 % between draws of the same process.
    columns
        ``{column: "numerical" | "categorical"}``; default from the standard covariate
        table's kinds, numbers for other numeric columns.

    Returns
    -------
    SyntheticReport

    Raises
    ------
    LatentModelError
        For a table that is not a DataFrame, has fewer than 2 rows or lacks columns, or
        an unknown column kind.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> def cohort(n):
    ...     return pd.DataFrame({"weight": rng.normal(75, 12, n), "female": rng.integers(0, 2, n) * 1.0})
    >>> train, holdout, synthetic = cohort(100), cohort(100), cohort(100)
    >>> report = compare_synthetic(train, synthetic, holdout)
    >>> report.fidelity["column_shapes_score"] > 0.8, report.passed
    (True, True)
    >>> copied = compare_synthetic(train, train, holdout)
    >>> copied.privacy["dcr"]["synthetic_copies"], copied.passed
    (1.0, False)
    """
    names = _check_tables({"training": training, "synthetic": synthetic, "holdout": holdout})
    kinds = _kinds(training[names]) if columns is None else dict(columns)
    bad = {c: k for c, k in kinds.items() if k not in ("numerical", "categorical")}
    unknown = [c for c in kinds if c not in names]
    if bad or unknown:
        raise LatentModelError(
            f"`columns` must map table columns to 'numerical' or 'categorical', got "
            f"{bad or {c: kinds[c] for c in unknown}}"
            + (f" (columns not in the tables: {unknown})" if unknown else "")
        )
    for name, table in (("training", training), ("synthetic", synthetic), ("holdout", holdout)):
        for c, kind in kinds.items():
            if kind == "numerical" and not pd.api.types.is_numeric_dtype(table[c]):
                raise LatentModelError(
                    f"`{name}` column `{c}` must be numeric (it is compared as a number), got "
                    f"values like {table[c].head(3).tolist()!r}; fix the data or declare it "
                    "categorical in `columns`"
                )
    training, synthetic, holdout = (t[list(kinds)].reset_index(drop=True)
                                    for t in (training, synthetic, holdout))  # fmt: skip
    shapes = {}
    for c, kind in kinds.items():
        if kind == "numerical":
            shapes[c] = {
                "metric": "KSComplement",
                "score": _ks_complement(training[c], synthetic[c]),
            }
        else:
            score = _tv_complement(_category_keys(training[c].dropna()),
                                   _category_keys(synthetic[c].dropna()))  # fmt: skip
            shapes[c] = {"metric": "TVComplement", "score": score}
    cols = list(kinds)
    pairs = [_pair(training, synthetic, a, b, kinds)
             for i, a in enumerate(cols) for b in cols[i + 1 :]]  # fmt: skip
    shape_score = float(np.nanmean([s["score"] for s in shapes.values()]))
    pair_scores = [p["score"] for p in pairs if np.isfinite(p["score"])]
    pair_score = float(np.mean(pair_scores)) if pair_scores else float("nan")
    fidelity = {
        "column_shapes": shapes,
        "column_pairs": pairs,
        "detection": _detection(training, synthetic, kinds, seed),
        "column_shapes_score": shape_score,
        "column_pair_trends_score": pair_score,
        "quality_score": float(np.nanmean([shape_score, pair_score])),
    }
    privacy = _privacy(training, synthetic, holdout, kinds, seed, mia_max, dcr_closer_max)
    sizes = {"training": len(training), "holdout": len(holdout), "synthetic": len(synthetic)}
    settings = {"seed": seed, "mia_max": mia_max, "dcr_closer_max": dcr_closer_max}
    return SyntheticReport(sizes, kinds, fidelity, privacy, settings)


# ----------------------------------------------------------------------------- workflows
def synthetic_report(
    model: Any,
    training: LatentData,
    holdout: LatentData,
    *,
    n: int | None = None,
    seed: int = 0,
    weight_based_doses: bool = False,
    mia_max: float = 0.6,
    dcr_closer_max: float = 0.6,
) -> SyntheticReport:
    """Generate ``n`` synthetic patients of ``model`` and report on them.

    Parameters
    ----------
    model
        The :class:`~twinsim.twin.LatentModel`.
    training
        The patients it was trained on (:class:`~twinsim.twin.LatentData`).
    holdout
        Real patients it never saw (the privacy baseline).
    n
        Synthetic patients; default as many as the training patients.
    seed
        Root seed: the same seed gives the same report.
    weight_based_doses, mia_max, dcr_closer_max
        See :func:`~twinsim.twin.synthesize_patients` and :func:`compare_synthetic`.
    """
    n = training.n_subjects if n is None else n
    synthetic = synthesize_patients(model, training, n, seed, weight_based_doses=weight_based_doses)
    k = int(max(d.mask.sum(axis=1).max() for d in (training, holdout, synthetic)))
    tables = [patient_table(model, d, n_levels=k) for d in (training, synthetic, holdout)]
    report = compare_synthetic(*tables, seed=seed, mia_max=mia_max, dcr_closer_max=dcr_closer_max)
    settings = dict(report.settings, n=n, weight_based_doses=weight_based_doses,
                    model={"prior": model.population.name, "citation": model.population.citation,
                           "config": model.config.to_dict()})  # fmt: skip
    return SyntheticReport(report.sizes, report.columns, report.fidelity, report.privacy, settings)


def synthetic_report_from_files(
    model_dir: str | os.PathLike[str],
    data_file: str | os.PathLike[str],
    holdout_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    n: int | None = None,
    seed: int = 0,
    weight_based_doses: bool = False,
    lloq: float | None = None,
    mia_max: float = 0.6,
    dcr_closer_max: float = 0.6,
    command: str | None = None,
) -> tuple[SyntheticReport, dict[str, Path]]:
    """``twinsim synth-report``: a model folder, its training data and a holdout data set
    (NONMEM-layout CSVs) in; ``report.json`` and ``report.html`` in ``out``.

    Returns
    -------
    (SyntheticReport, dict)
        The report and ``{"json": path, "html": path}``.
    """
    from ._fit import fit_data
    from ._nonmem import read_nonmem
    from ._train import file_sha256, load_latent_model

    model = load_latent_model(model_dir)
    data = {}
    for name, path in (("training", data_file), ("holdout", holdout_file)):
        observations = fit_data(read_nonmem(path), model.population, lloq=lloq)
        data[name] = LatentData.from_observation_data(model, observations)
    report = synthetic_report(
        model, data["training"], data["holdout"], n=n, seed=seed,
        weight_based_doses=weight_based_doses, mia_max=mia_max, dcr_closer_max=dcr_closer_max,
    )  # fmt: skip
    settings = dict(
        report.settings,
        model_dir=str(model_dir),
        data_file=str(data_file), data_sha256=file_sha256(data_file),
        holdout_file=str(holdout_file), holdout_sha256=file_sha256(holdout_file),
        lloq=lloq,
        command=command if command is not None else shlex.join(sys.argv),
    )  # fmt: skip
    report = SyntheticReport(
        report.sizes, report.columns, report.fidelity, report.privacy, settings
    )
    return report, write_synthetic_report(report, out)


# ----------------------------------------------------------------------------- files
_STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:left}th{background:#f3f3f3}.pass{color:#17692b;font-weight:600}
.fail{color:#a11;font-weight:600}.note{color:#555}"""


def _rows(rows) -> str:
    return "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )


def synthetic_html(report: SyntheticReport) -> str:
    """The report as one self-contained HTML page (tables only)."""
    verdict = (
        ("pass", "Privacy checks passed") if report.passed else ("fail", "Privacy checks FAILED")
    )
    sizes = report.sizes
    shapes = sorted(report.fidelity["column_shapes"].items(), key=lambda kv: kv[1]["score"])
    pairs = sorted(report.fidelity["column_pairs"], key=lambda p: p["score"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Synthetic patients: fidelity and privacy</title>
<style>{_STYLE}</style></head><body>
<h1>Synthetic patients: fidelity and privacy</h1>
<p class="note">{sizes["synthetic"]} synthetic patients compared with {sizes["training"]} training
patients; privacy baseline: {sizes["holdout"]} holdout patients the model never saw. Exposure
metrics are the observed levels at the design's sampling positions (column <em>output_k</em>:
the k-th level by time). Metric definitions: SDMetrics 0.32.</p>
<p class="{verdict[0]}" id="verdict">{verdict[1]}</p>
<h2>Summary</h2>
<table><tr><th>measure</th><th>value</th><th>meaning</th></tr>{_rows(report.summary())}</table>
<h2>Column shapes</h2>
<table><tr><th>column</th><th>kind</th><th>metric</th><th>score</th></tr>
{_rows((c, report.columns[c], s["metric"], f"{s['score']:.3f}") for c, s in shapes)}</table>
<h2>Column pair trends (lowest first)</h2>
<table><tr><th>columns</th><th>metric</th><th>score</th></tr>
{_rows((" × ".join(p["columns"]), p["metric"], f"{p['score']:.3f}") for p in pairs)}</table>
<h2>Settings and provenance</h2>
<pre>{html.escape(json.dumps(_plain(report.settings), indent=2, default=str))}</pre>
</body></html>
"""


def write_synthetic_report(report: SyntheticReport, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` into the folder ``out``, atomically.

    Returns
    -------
    dict
        ``{"json": path, "html": path}``.
    """
    out = Path(out)
    record = report.to_dict()
    record["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    record["versions"] = package_versions(_VERSIONS)
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    return {
        "json": write_text_atomic(out / "report.json", text),
        "html": write_text_atomic(out / "report.html", synthetic_html(report)),
    }
