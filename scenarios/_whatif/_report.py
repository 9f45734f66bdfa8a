"""What a what-if answers and how it is shown: forecasts of each regimen with bands and
metrics (:class:`WhatIfResult`), the plotly figures and the self-contained HTML report."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

if TYPE_CHECKING:
    import pandas as pd

    from ...simulators import Dose
    from ...twin import Target
from ._spec import WhatIfSpec

__all__ = [
    "FORECAST_STEP_H",
    "METRIC_LABELS",
    "Metric",
    "RegimenForecast",
    "WhatIfResult",
    "target_figure",
    "whatif_figure",
    "whatif_html",
    "write_whatif_report",
]

# ---------------------------------------------------------------------------- results
#: Metric names → (label, how the value is shown: a unit or "%" for fractions).
METRIC_LABELS = {
    "auc24": "AUC24",
    "trough": "trough",
    "cmax": "peak",
    "average": "average",
    "time_in_range": "time in range",
}


#: Metrics shown for each kind of target (the target's own first).
_SHOWN_METRICS = {
    "auc24": ("auc24", "trough", "cmax"),
    "trough": ("trough", "auc24", "cmax"),
    "time_in_range": ("time_in_range", "trough", "cmax", "average"),
}


@dataclass(frozen=True)
class Metric:
    """One exposure metric of a forecast: median and 90 % interval (5th–95th percentile)."""

    median: float
    p5: float
    p95: float
    unit: str

    def compact(self) -> str:
        """``"512 (410–640)"``: median (90 % interval), no unit; fractions in %."""
        if self.unit == "fraction":
            return f"{100 * self.median:.0f} ({100 * self.p5:.0f}–{100 * self.p95:.0f})"
        return f"{_fmt(self.median)} ({_fmt(self.p5)}–{_fmt(self.p95)})"

    @property
    def display_unit(self) -> str:
        """The unit as shown: ``%`` for fractions, nothing for unitless values."""
        return {"fraction": "%", "1": ""}.get(self.unit, self.unit)

    def text(self) -> str:
        """``"512 mg·h/L (90 % 410–640)"``; fractions as percentages."""
        if self.unit == "fraction":
            return f"{100 * self.median:.0f} % (90 % {100 * self.p5:.0f}–{100 * self.p95:.0f} %)"
        unit = "" if self.unit in ("", "1") else f" {self.unit}"
        return f"{_fmt(self.median)}{unit} (90 % {_fmt(self.p5)}–{_fmt(self.p95)})"


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


@dataclass(frozen=True)
class RegimenForecast:
    """The forecast of one regimen: bands over time, metrics and the PTA.

    Parameters
    ----------
    name
        Label (the candidate's name, or the recommended regimen's description).
    source
        ``"candidate"`` (from the spec) or ``"recommended"`` (from the search).
    doses
        The regimen's doses (absolute times, h); the history is not repeated here.
    times
        Forecast times, h (history and forecast period).
    bands
        ``{output: array[3, time]}``: 5th percentile, median, 95th percentile.
    metrics
        ``{name: Metric}`` (``auc24``, ``trough``, ``cmax``, ``time_in_range``, ...).
    pta
        Probability of target attainment, 0–1.
    why
        Why this regimen (recommendations).
    p_unsafe
        Probability of the drug's safety threshold (NaN without one).
    safety_note
        Why the regimen would not be recommended (above the safety limit), or ``""``.
    """

    name: str
    source: str
    doses: tuple[Any, ...]
    times: np.ndarray
    bands: Mapping[str, np.ndarray]
    metrics: Mapping[str, Metric]
    pta: float
    why: str = ""
    p_unsafe: float = float("nan")
    safety_note: str = ""


@dataclass(frozen=True)
class WhatIfResult:
    """What :func:`run_whatif` returns: forecasts, the recommendation and the fit.

    Attributes
    ----------
    spec
        The what-if spec.
    target
        The target the regimens are judged against.
    forecasts
        Candidates first (spec order), then the recommended regimens (best first).
    fit
        ``{"method", "seconds", "parameters": {name: {"typical", "individual", "unit"}},
        "diagnostics": {...}}``.
    output_units
        ``{output: unit}`` of the drug model.
    provenance
        JSON-ready record (versions, model, command, spec).
    objective_text
        What the recommendation maximised, in plain words.
    safety_text
        The safety threshold and its limit, in plain words.
    excluded
        ``(regimen, reason)`` of the regimens the search excluded (label, safety).
    notes
        What the twin assumed beyond the data, in words (:attr:`twinsim.twin.Prediction.notes`):
        e.g. that an untested genotype was averaged over the genotypes of the patient's
        ancestry, with the weights.
    """

    spec: WhatIfSpec
    target: Target
    forecasts: tuple[RegimenForecast, ...]
    fit: Mapping[str, Any]
    output_units: Mapping[str, str]
    provenance: Mapping[str, Any] = field(default_factory=dict)
    objective_text: str = ""
    safety_text: str = ""
    excluded: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def model_text(self) -> str:
        """Which model answered: the published drug model, or the trained latent model's
        folder, prior and parameter hash (:meth:`WhatIfSpec.model_text`)."""
        return self.spec.model_text()

    @property
    def recommendation(self) -> RegimenForecast:
        """The regimen to recommend: the best of the search, else the candidate with the
        highest PTA (ties: the first in the spec)."""
        found = [f for f in self.forecasts if f.source == "recommended"]
        if found:
            return found[0]
        return max(self.forecasts, key=lambda f: f.pta)

    def recommendation_text(self) -> str:
        """One paragraph: the regimen, its PTA, the target metric and why."""
        best = self.recommendation
        key = self.target.key_metric
        metric = best.metrics.get(key)
        if best.why:  # the twin's own reasoning names the PTA, the metric and the runner-up
            return f"{best.name} (PTA {100 * best.pta:.0f} %). {best.why}"
        if self.safety_text and best.safety_note:
            return (
                f"No regimen is recommended: every candidate is above the safety limit "
                f"({self.safety_text}); the best by PTA, {best.name}, {best.safety_note}."
            )
        text = (
            f"{best.name}: probability of target attainment {100 * best.pta:.0f} % "
            f"(target {self.target.describe()})"
        )
        if metric is not None:
            text += f"; {METRIC_LABELS.get(key, key)} {metric.text()}"
        return text + "."

    def table(self) -> pd.DataFrame:
        """One row per regimen: source, PTA and each metric's median and 90 % interval.

        Columns: ``regimen``, ``source``, ``pta``, ``p_unsafe`` (probability of the safety
        threshold), then ``<metric>``, ``<metric>_p5``,
        ``<metric>_p95`` per metric; units in ``DataFrame.attrs["units"]``.
        """
        import pandas as pd

        rows, units = [], {}
        for forecast in self.forecasts:
            row: dict[str, Any] = {
                "regimen": forecast.name,
                "source": forecast.source,
                "pta": forecast.pta,
                "p_unsafe": forecast.p_unsafe,
            }
            for name, metric in forecast.metrics.items():
                row[name], row[f"{name}_p5"], row[f"{name}_p95"] = (
                    metric.median,
                    metric.p5,
                    metric.p95,
                )
                units[name] = metric.unit
            rows.append(row)
        frame = pd.DataFrame(rows)
        frame.attrs["units"] = units
        return frame


# ---------------------------------------------------------------------------- report
_COLOURS = (
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
    (188, 189, 34),
    (127, 127, 127),
)


def _time_scale(result: WhatIfResult) -> tuple[float, str]:
    """Divisor and unit of the time axis: days for forecasts of 5 days or more."""
    return (24.0, "d") if result.spec.end >= 120.0 else (1.0, "h")


def _axis_label(output: str, unit: str) -> str:
    names = {"conc": "concentration", "inr": "INR"}
    return names.get(output, output) + ("" if unit in ("", "1") else f" ({unit})")


def _output_order(result: WhatIfResult) -> list[str]:
    outputs = list(result.forecasts[0].bands) if result.forecasts else []
    return sorted(outputs, key=lambda o: o != result.target.output)


def whatif_figure(result: WhatIfResult):
    """Median and 90 % band of each regimen over time, one panel per output.

    The target output's panel comes first; its therapeutic window is shaded when the
    target is a level (trough, concentration, INR, time in range). Measured values are
    black points; values below the limit of quantification open triangles at the limit.
    A dotted line marks when the candidate regimens start.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    scale, time_unit = _time_scale(result)
    outputs = _output_order(result)
    units = result.output_units
    figure = make_subplots(
        rows=len(outputs),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=[_axis_label(o, units.get(o, "")) for o in outputs],
    )
    for k, forecast in enumerate(result.forecasts):
        r, g, b = _COLOURS[k % len(_COLOURS)]
        dash = "solid" if forecast.source == "candidate" else "dash"
        x = forecast.times / scale
        for row, output in enumerate(outputs, start=1):
            low, median, high = forecast.bands[output]
            group = f"regimen{k}"
            figure.add_trace(
                go.Scatter(
                    x=np.concatenate([x, x[::-1]]),
                    y=np.concatenate([high, low[::-1]]),
                    fill="toself",
                    fillcolor=f"rgba({r},{g},{b},0.15)",
                    line={"width": 0},
                    hoverinfo="skip",
                    legendgroup=group,
                    showlegend=False,
                    name=f"{forecast.name}: 90 % band",
                ),
                row=row,
                col=1,
            )
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=median,
                    mode="lines",
                    line={"color": f"rgb({r},{g},{b})", "dash": dash},
                    legendgroup=group,
                    showlegend=row == 1,
                    name=f"{forecast.name} (PTA {100 * forecast.pta:.0f} %)",
                    hovertemplate=f"{forecast.name}<br>%{{x:.3g}} {time_unit}: %{{y:.3g}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
    for row, output in enumerate(outputs, start=1):
        measured = [o for o in result.spec.observations if o.output == output]
        quantified = [o for o in measured if not o.below_lloq]
        censored = [o for o in measured if o.below_lloq]
        if quantified:
            figure.add_trace(
                go.Scatter(
                    x=[o.time / scale for o in quantified],
                    y=[o.value for o in quantified],
                    mode="markers",
                    marker={"color": "black", "size": 9},
                    name=f"measured {output}",
                ),
                row=row,
                col=1,
            )
        if censored:
            figure.add_trace(
                go.Scatter(
                    x=[o.time / scale for o in censored],
                    y=[o.lloq for o in censored],
                    mode="markers",
                    marker={"color": "black", "size": 10, "symbol": "triangle-down-open"},
                    name=f"{output} below LLOQ",
                ),
                row=row,
                col=1,
            )
        if output == result.target.output and result.target.metric != "auc24":
            figure.add_hrect(
                y0=result.target.low,
                y1=result.target.high,
                fillcolor="rgba(44,160,44,0.12)",
                line_width=0,
                row=row,
                col=1,
                annotation_text=f"target {result.target.low:g}–{result.target.high:g}",
                annotation_position="top left",
            )
        figure.add_vline(
            x=result.spec.candidate_start / scale,
            line={"dash": "dot", "color": "grey"},
            row=row,
            col=1,
            **({"annotation_text": "regimens start"} if row == 1 else {}),
        )
    figure.update_xaxes(title_text=f"time ({time_unit})", row=len(outputs), col=1)
    figure.update_layout(
        title=result.spec.title or f"What-if: {result.spec.drug}",
        template="plotly_white",
        height=320 + 260 * len(outputs),
        legend={"orientation": "h", "yanchor": "top", "y": -0.12},
    )
    return figure


def target_figure(result: WhatIfResult):
    """The target metric of each regimen: median with 90 % interval, window shaded.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    target = result.target
    key = target.key_metric
    label = METRIC_LABELS.get(key, key)
    rows = [(f, f.metrics[key]) for f in result.forecasts if key in f.metrics]
    percent = key == "time_in_range"
    factor = 100.0 if percent else 1.0
    names = [f"{f.name} (PTA {100 * f.pta:.0f} %)" for f, _ in rows]
    figure = go.Figure(
        go.Scatter(
            x=[m.median * factor for _, m in rows],
            y=names,
            mode="markers",
            marker={
                "size": 11,
                "color": [f"rgb{_COLOURS[k % len(_COLOURS)]}" for k in range(len(rows))],
            },
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [(m.p95 - m.median) * factor for _, m in rows],
                "arrayminus": [(m.median - m.p5) * factor for _, m in rows],
            },
            name=label,
        )
    )
    # the region of the metric that attains the target
    low, high = (100 * target.required_fraction, 100.0) if percent else (target.low, target.high)
    figure.add_vrect(x0=low, x1=high, fillcolor="rgba(44,160,44,0.15)", line_width=0)
    unit = "%" if percent else target.unit
    figure.update_layout(
        title=f"Target: {target.describe()} — median and 90 % interval per regimen",
        xaxis_title=f"{label} ({unit})",
        yaxis={"autorange": "reversed"},
        template="plotly_white",
        height=160 + 50 * len(rows),
        showlegend=False,
    )
    return figure


def _html_table(result: WhatIfResult) -> str:
    import html

    metric_names: list[str] = []
    for forecast in result.forecasts:
        metric_names += [m for m in forecast.metrics if m not in metric_names]
    head = "".join(f"<th>{html.escape(METRIC_LABELS.get(m, m))}</th>" for m in metric_names)
    lines = [
        "<table><thead><tr><th>regimen</th><th>source</th><th>PTA</th>"
        f"<th>safety risk</th>{head}</tr></thead><tbody>"
    ]
    best = result.recommendation
    for forecast in result.forecasts:
        cells = "".join(
            f"<td>{html.escape(forecast.metrics[m].text()) if m in forecast.metrics else '–'}</td>"
            for m in metric_names
        )
        mark = ' class="best"' if forecast is best else ""
        risk = "–" if math.isnan(forecast.p_unsafe) else f"{100 * forecast.p_unsafe:.0f} %"
        if forecast.safety_note:
            risk += f" ({html.escape(forecast.safety_note)})"
        lines.append(
            f"<tr{mark}><td>{html.escape(forecast.name)}</td><td>{forecast.source}</td>"
            f"<td>{100 * forecast.pta:.0f} %</td><td>{risk}</td>{cells}</tr>"
        )
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _explanation(result: WhatIfResult) -> str:
    """The objective and the safety rule in plain words, and the excluded regimens."""
    import html

    parts = []
    if result.objective_text:
        parts.append(
            f'<p class="note" id="objective">How regimens are ranked: by '
            f"{html.escape(result.objective_text)}; only regimens within the drug's label "
            "limits are searched.</p>"
        )
    if result.safety_text:
        parts.append(f'<p class="note" id="safety">Safety: {html.escape(result.safety_text)}.</p>')
    if result.excluded:
        items = "".join(
            f"<li>{html.escape(name)}: {html.escape(reason)}</li>"
            for name, reason in result.excluded[:12]
        )
        more = len(result.excluded) - 12
        extra = f"<li>… and {more} more</li>" if more > 0 else ""
        parts.append(f'<details id="excluded"><summary>Excluded regimens</summary><ul>{items}'
                     f"{extra}</ul></details>")  # fmt: skip
    return "\n".join(parts)


def _notes(result: WhatIfResult) -> str:
    """What the twin assumed beyond the data (an untested genotype averaged over)."""
    import html

    return "\n".join(
        f'<p class="assumption" id="twin-note-{i}"><strong>Assumption:</strong> '
        f"{html.escape(note)}</p>"
        for i, note in enumerate(result.notes)
    )


def _genotype_table(result: WhatIfResult) -> str:
    """The untested genotypes averaged over: prior and posterior weight of each group."""
    import html

    rows = result.fit.get("genotypes") or []
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(r['genotype'])}</td><td>{html.escape(r['pooled'])}</td>"
        f"<td>{100 * r['prior']:.1f} %</td><td>{100 * r['posterior']:.1f} %</td></tr>"
        for r in rows
    )
    return (
        '<p class="note">Parameters above are those of the most probable genotype; '
        "forecasts average over these genotype groups:</p>"
        '<table id="genotypes"><thead><tr><th>genotype group</th><th>diplotypes pooled</th>'
        "<th>population frequency</th><th>weight given the levels</th></tr></thead><tbody>"
        + body
        + "</tbody></table>"
    )


def _fit_table(result: WhatIfResult) -> str:
    import html

    rows = [
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(p['typical'])}</td>"
        f"<td>{_fmt(p['individual'])}</td><td>{html.escape(str(p.get('unit', '')))}</td></tr>"
        for name, p in result.fit.get("parameters", {}).items()
    ]
    return (
        "<table><thead><tr><th>parameter</th><th>population (typical for the covariates)</th>"
        "<th>this patient (twin)</th><th>unit</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f2f2f2; }
tr.best td { background: #e8f5e9; font-weight: 600; }
.recommendation { border-left: 5px solid #2ca02c; background: #f3faf3; padding: 0.8em 1em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
.assumption { border-left: 5px solid #ff7f0e; background: #fff6ec; padding: 0.5em 1em; }
"""


def whatif_html(result: WhatIfResult) -> str:
    """The what-if report as one self-contained HTML page (plotly.js inlined).

    Sections: the recommendation (regimen, PTA, target metric with its 90 % interval and
    why), the forecast plot, the target-metric plot, the table of every regimen, the
    twin's parameters against the population's, the spec (YAML) and the provenance.
    """
    import html

    spec = result.spec
    title = spec.title or f"What-if: {spec.drug}"
    plot = whatif_figure(result).to_html(full_html=False, include_plotlyjs=True)
    target_plot = target_figure(result).to_html(full_html=False, include_plotlyjs=False)
    spec_yaml = yaml.safe_dump(
        spec.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True
    )
    provenance = json.dumps(result.provenance, indent=2, ensure_ascii=False, default=str)
    fit = result.fit
    observed = len(spec.observations)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note" id="model">Model: {html.escape(result.model_text)}.
Twin fitted by {html.escape(str(fit.get("method", "")).upper())} to {observed} measured value{"s" * (observed != 1)};
forecasts are medians and 90 % bands (5th–95th percentiles) over the twin's posterior.
Times count from the first dose (t = 0); the candidate regimens start at {spec.candidate_start:g} h.</p>
<h2>Recommendation</h2>
<div class="recommendation" id="recommendation">{html.escape(result.recommendation_text())}</div>
<p class="note">Target: {html.escape(result.target.describe())} — {html.escape(result.target.source)}</p>
{_notes(result)}
{_explanation(result)}
<h2>Forecast</h2>
{plot}
{target_plot}
<h2>Regimens</h2>
{_html_table(result)}
<h2>Twin</h2>
{_fit_table(result)}
{_genotype_table(result)}
<h2>Spec</h2>
<pre>{html.escape(spec_yaml)}</pre>
<h2>Provenance</h2>
<pre>{html.escape(provenance)}</pre>
</body></html>
"""


def write_whatif_report(
    result: WhatIfResult,
    out: str | os.PathLike[str],
    *,
    table: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Write the HTML report (and the table as CSV), atomically, with a provenance record.

    Parameters
    ----------
    result
        From :func:`run_whatif`.
    out
        The HTML file; ``<out>.provenance.json`` is written next to it.
    table
        Optional CSV file for :meth:`WhatIfResult.table`.

    Returns
    -------
    dict
        ``{"report": path, "provenance": path}`` and ``"table"`` when written.
    """
    from .._provenance import write_provenance, write_text_atomic

    out = Path(out)
    write_text_atomic(out, whatif_html(result))
    paths = {"report": out, "provenance": write_provenance(result.provenance, out)}
    if table is not None:
        table = Path(table)
        write_text_atomic(table, result.table().to_csv(index=False))
        paths["table"] = table
    return paths


# ---------------------------------------------------------------------------- workflow
#: Spacing of the forecast curves, h (at most; the grid ends exactly at the horizon).
FORECAST_STEP_H = 0.5


def _forecast(
    prediction: Any,
    i: int,
    source: str,
    doses: Sequence[Dose],
    why: str,
    units: Mapping[str, str],
    p_unsafe: float | None = None,
) -> RegimenForecast:
    """Regimen ``i`` of a twin's :class:`~twinsim.twin.Prediction` as a forecast."""
    target = prediction.target
    unit = units.get(target.output, "")
    metric_units = {
        "auc24": "mg*h/L" if unit == "mg/L" else f"{unit}*h",
        "time_in_range": "fraction",
    }
    shown = _SHOWN_METRICS[target.key_metric]
    if target.output == "inr":  # an INR has no AUC or trough worth showing
        shown = ("time_in_range", "average", "cmax")
    stats = prediction.metrics[i]
    metrics = {
        name: Metric(
            stats[name]["median"], stats[name]["q05"], stats[name]["q95"],
            metric_units.get(name, unit),
        )
        for name in shown
        if name in stats
    }  # fmt: skip
    safety = getattr(prediction, "safety", None)
    risk = float(prediction.p_unsafe[i]) if p_unsafe is None else float(p_unsafe)
    note = ""
    if safety is not None and risk > safety.limit:
        note = f"above the safety limit of {100 * safety.limit:.0f} %: would not be recommended"
    bands = {
        output: np.stack(
            [prediction.lower[i, :, j], prediction.median[i, :, j], prediction.upper[i, :, j]]
        )
        for j, output in enumerate(prediction.output_names)
    }
    return RegimenForecast(
        name=prediction.names[i],
        source=source,
        doses=tuple(doses),
        times=np.asarray(prediction.times),
        bands=bands,
        metrics=metrics,
        pta=float(prediction.pta[i]),
        why=why,
        p_unsafe=risk,
        safety_note=note,
    )


def _fit_summary(posterior: Any) -> dict[str, Any]:
    """Typical against individual parameters, η and the fit's diagnostics."""
    twin = posterior.twin
    model = twin.model
    mixture = getattr(posterior, "mixture", None)
    if mixture is not None:  # untested genes: the most probable genotype's parameters
        twin = mixture.components[mixture.most_probable].twin
    typical = np.asarray(model.typical_parameters(twin.covariates))[0]
    individual = posterior.individual_parameters()
    units = dict(model.structural.parameter_units)
    if model.reported is not None:
        # a trained latent model: its mechanistic parameters, not latent_k
        row = np.array([individual[name] for name in model.structural.parameters])
        values = model.reported(np.stack([typical, row]))
        pairs = {name: np.asarray(v) for name, v in values.items()}
    else:
        index = model.structural.parameters.index
        names = model.random_effects  # the parameters the patient's data can move
        pairs = {name: np.array([typical[index(name)], individual[name]]) for name in names}
    parameters = {
        name: {"typical": float(v[0]), "individual": float(v[1]), "unit": units.get(name, "")}
        for name, v in pairs.items()
    }
    diagnostics = {
        k: v for k, v in posterior.diagnostics.items() if isinstance(v, bool | int | float | str)
    }
    summary = {"parameters": parameters, "eta": posterior.eta_summary(), "diagnostics": diagnostics}
    if mixture is not None:
        summary["genotypes"] = mixture.table()
    return summary
