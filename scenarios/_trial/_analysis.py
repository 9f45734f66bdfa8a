"""Subject-level endpoints and the between-arm analyses (statsmodels estimators)."""

from __future__ import annotations

import warnings

import numpy as np

from ._design import AnalysisSpec, EndpointSpec, TrialDesign

__all__ = ["RESULT_FIELDS", "analyse", "endpoint_values", "rosendaal"]

#: Per analysis and comparison: estimate, CI low, CI high, p-value, standard error.
RESULT_FIELDS = ("estimate", "ci_low", "ci_high", "p_value", "std_error")


def rosendaal(times: np.ndarray, values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Share of time in ``[low, high]`` by linear interpolation between measurements.

    Rosendaal et al., Thromb Haemost 1993;69:236-239. ``values`` is ``[subject, time]``;
    NaN marks a missing measurement (pairs with a NaN end are left out). NaN when a
    subject has no complete pair.

    Examples
    --------
    >>> rosendaal(np.array([0.0, 10.0]), np.array([[1.0, 3.0]]), 2.0, 3.0).tolist()
    [0.5]
    >>> rosendaal(np.array([0.0, 10.0, 20.0]), np.array([[2.5, 2.5, 3.5]]), 2.0, 3.0).tolist()
    [0.75]
    """
    y0, y1 = values[:, :-1], values[:, 1:]
    dt = np.diff(times)[None, :]
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    overlap = np.clip(np.minimum(hi, high) - np.maximum(lo, low), 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        flat = (y0 >= low) & (y0 <= high)
        fraction = np.where(hi > lo, overlap / (hi - lo), flat.astype(float))
    ok = np.isfinite(y0) & np.isfinite(y1)
    weight = np.where(ok, dt, 0.0)
    total = weight.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            total > 0, (np.where(ok, fraction, 0.0) * weight).sum(axis=1) / total, np.nan
        )


def _trapezoid_auc(times, predicted, window, dropout):
    inside = (times >= window[0] - 1e-9) & (times <= window[1] + 1e-9)
    t, y = times[inside], predicted[:, inside]
    auc = np.sum(np.diff(t)[None, :] * (y[:, 1:] + y[:, :-1]) / 2, axis=1)
    return np.where(dropout >= window[1], auc, np.nan)


def endpoint_values(
    endpoint: EndpointSpec,
    times: np.ndarray,
    measured_mask: np.ndarray,
    predicted: np.ndarray,
    measured: np.ndarray,
    dropout: np.ndarray,
    output_index: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(value, event)`` per subject; ``event`` is 1/0 for time-to-event endpoints (else 1).

    ``predicted``/``measured`` are ``[subject, time]`` of the endpoint's output; NaN means
    the value is missing (dropout before it was measured).
    """
    n = predicted.shape[0]
    event = np.ones(n)
    meas = measured[:, :, output_index]
    pred = predicted[:, :, output_index]
    visit = measured_mask
    if endpoint.auc:
        value = _trapezoid_auc(times, pred, endpoint.window, dropout)
        if endpoint.kind == "in_range":
            value = _flag(value, (value >= endpoint.low) & (value <= endpoint.high))
        elif endpoint.kind == "event":
            crossed = (
                value > endpoint.above if endpoint.above is not None else value < endpoint.below
            )
            value = _flag(value, crossed)
        return value, event
    if endpoint.kind in ("value", "change", "in_range"):
        value = meas[:, np.flatnonzero(np.isclose(times, endpoint.at) & visit)[0]]
        if endpoint.kind == "change":
            value = value - meas[:, 0]
        elif endpoint.kind == "in_range":
            value = _flag(value, (value >= endpoint.low) & (value <= endpoint.high))
        return value, event
    start, end = endpoint.window
    cols = np.flatnonzero(visit & (times >= start - 1e-9) & (times <= end + 1e-9))
    t, y = times[cols], meas[:, cols]
    if endpoint.kind == "time_in_range":
        return rosendaal(t, y, endpoint.low, endpoint.high), event
    crossed = y > endpoint.above if endpoint.above is not None else y < endpoint.below
    seen = np.isfinite(y)
    if endpoint.kind == "event":
        return np.where(seen.any(axis=1), crossed.any(axis=1).astype(float), np.nan), event
    # time to event: first crossing, else censored at the last visit attended
    first = np.where(crossed.any(axis=1), t[np.argmax(crossed, axis=1)], np.nan)
    last = np.where(
        seen.any(axis=1), t[seen.shape[1] - 1 - np.argmax(seen[:, ::-1], axis=1)], np.nan
    )
    event = crossed.any(axis=1).astype(float)
    return np.where(event == 1, first, last), event


def _flag(value: np.ndarray, condition: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(value), condition.astype(float), np.nan)


# ---------------------------------------------------------------------------- analyses
def _design_matrix(columns: list[np.ndarray]) -> np.ndarray:
    return np.column_stack([np.ones(len(columns[0])), *columns])


def _covariate_columns(covariates: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    """Numeric columns as they are; text columns (genotypes, ancestry) as 0/1 indicators of
    every level but the first (sorted)."""
    out: list[np.ndarray] = []
    for name in names:
        column = np.asarray(covariates[name])
        if column.dtype.kind in "fiub":
            out.append(column.astype(float))
        else:
            for level in sorted(set(column.tolist()))[1:]:
                out.append((column == level).astype(float))
    return out


def analyse(
    analysis: AnalysisSpec,
    endpoint: EndpointSpec,
    y: np.ndarray,
    event: np.ndarray,
    treated: np.ndarray,
    covariates: dict[str, np.ndarray],
    score: np.ndarray | None,
) -> np.ndarray:
    """One comparison (``treated`` 1 vs 0): :data:`RESULT_FIELDS` (NaN when not estimable).

    Continuous endpoints: OLS (statsmodels) of the endpoint on the arm (and covariates, or
    the prognostic score); the estimate is the arm's coefficient, with its t-based
    confidence interval and p-value. Binary endpoints with ``difference``: difference in
    proportions, Wald confidence interval and score test
    (``statsmodels.stats.proportion``). Time to event: Cox model (``PHReg``), log hazard
    ratio.
    """
    import statsmodels.api as sm
    from statsmodels.stats.proportion import (
        confint_proportions_2indep,
        test_proportions_2indep,
    )

    keep = np.isfinite(y)
    extra: list[np.ndarray] = []
    if analysis.method == "ancova":
        extra = _covariate_columns(covariates, analysis.covariates)
    elif analysis.method == "procova":
        extra = [score]
    for column in extra:
        keep &= np.isfinite(column)
    y, x, event = y[keep], treated[keep].astype(float), event[keep]
    extra = [c[keep] for c in extra]
    if x.sum() < 2 or (1 - x).sum() < 2:
        return np.full(len(RESULT_FIELDS), np.nan)
    alpha = analysis.alpha
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # perfect fits, separation: reported as NaN
        if analysis.method == "cox":
            # Efron: visits make many tied event times; Breslow is then conservative
            model = sm.PHReg(y, x[:, None], status=event, ties="efron").fit()
            low, high = model.conf_int(alpha=alpha)[0]
            return np.array([model.params[0], low, high, model.pvalues[0], model.bse[0]])
        if endpoint.binary and analysis.method == "difference":
            c1, n1 = y[x == 1].sum(), (x == 1).sum()
            c0, n0 = y[x == 0].sum(), (x == 0).sum()
            diff = c1 / n1 - c0 / n0
            low, high = confint_proportions_2indep(
                c1, n1, c0, n0, method="wald", compare="diff", alpha=alpha
            )
            test = test_proportions_2indep(c1, n1, c0, n0, method="score", compare="diff")
            p1, p0 = c1 / n1, c0 / n0
            se = np.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
            p_value = test.pvalue if np.isfinite(test.pvalue) else 1.0
            return np.array([diff, low, high, p_value, se])
        fit = sm.OLS(y, _design_matrix([x, *extra])).fit()
        low, high = fit.conf_int(alpha=alpha)[1]
        p_value = fit.pvalues[1] if np.isfinite(fit.pvalues[1]) else 1.0
        return np.array([fit.params[1], low, high, p_value, fit.bse[1]])


def comparisons(design: TrialDesign) -> list[int]:
    """Arms compared with the control, in arm order."""
    return [k for k in range(len(design.arms)) if k != design.control_index]
