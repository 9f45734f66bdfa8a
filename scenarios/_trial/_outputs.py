"""Outputs of a trial run: summary, Zarr store, endpoint table, NONMEM CSV, HTML report."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._provenance import package_versions, write_text_atomic
from ._analysis import comparisons
from ._design import TrialDesign
from ._simulate import load_model

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go
    import xarray as xr

    from ._run import TrialResult

__all__ = ["endpoint_table", "summarise", "trial_dataset", "trial_nonmem", "trial_report_html"]


def summarise(design: TrialDesign, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Power with its Monte-Carlo error and the distribution of each effect estimate.

    Power is the share of replicates whose two-sided p-value is below the analysis's α
    (a replicate where the estimate is not available counts as not significant); its
    Monte-Carlo standard error is ``sqrt(p (1 − p) / R)``.
    """
    results = arrays["results"]
    n_rep = results.shape[0]
    arms = [a.name for a in design.arms]
    control = design.control_index
    analyses = []
    for a, analysis in enumerate(design.analyses):
        for c, k in enumerate(comparisons(design)):
            sizes = []
            for s, n in enumerate(design.sample_size):
                block = results[:, s, a, c]
                estimate, p_value = block[:, 0], block[:, 3]
                ok = np.isfinite(estimate)
                power = float(
                    np.mean(np.where(np.isfinite(p_value), p_value < analysis.alpha, False))
                )
                finite = estimate[ok]
                sizes.append(
                    {
                        "n_per_arm": dict(zip(arms, design.arm_sizes(n), strict=True)),
                        "n": n,
                        "power": power,
                        "power_mc_se": float(np.sqrt(power * (1 - power) / n_rep)),
                        "estimable_replicates": int(ok.sum()),
                        "estimate_mean": _f(finite.mean()) if finite.size else None,
                        "estimate_mc_se": _f(finite.std(ddof=1) / np.sqrt(finite.size))
                        if finite.size > 1
                        else None,
                        "estimate_sd": _f(finite.std(ddof=1)) if finite.size > 1 else None,
                        "estimate_quantiles": {
                            q: _f(np.quantile(finite, float(q) / 100))
                            for q in ("2.5", "25", "50", "75", "97.5")
                        }
                        if finite.size
                        else None,
                        "mean_std_error": _f(np.nanmean(block[:, 4])) if ok.any() else None,
                        "mean_ci": [_f(np.nanmean(block[:, 1])), _f(np.nanmean(block[:, 2]))]
                        if ok.any()
                        else None,
                    }
                )
            analyses.append(
                {
                    "analysis": analysis.label,
                    "endpoint": analysis.endpoint,
                    "method": analysis.method,
                    "alpha": analysis.alpha,
                    "comparison": f"{arms[k]} vs {arms[control]}",
                    "estimate": _estimate_kind(design, analysis),
                    "sizes": sizes,
                }
            )
    valid = arrays["valid"]
    by_arm: dict[str, Any] = {}
    for j, e in enumerate(design.endpoints):
        by_arm[e.name] = {}
        for k, name in enumerate(arms):
            v = arrays["endpoints"][:, k, :, j][valid[:, k]]
            v = v[np.isfinite(v)]
            by_arm[e.name][name] = {
                "mean": _f(v.mean()) if v.size else None,
                "sd": _f(v.std(ddof=1)) if v.size > 1 else None,
                "n": int(v.size),
            }
    status = arrays["status"][valid]
    return {
        "design": design.name,
        "drug": design.drug,
        "model": design.model_text(),
        "replicates": n_rep,
        "seed": design.seed,
        "arms": arms,
        "control": arms[control],
        "analyses": analyses,
        "endpoints_by_arm": by_arm,
        "failed_solves": int((status != 0).sum()),
        "subjects_simulated": int(valid.sum()),
        "screened_per_enrolled": _f(arrays["screened"].sum() / valid.sum()),
    }


def _estimate_kind(design: TrialDesign, analysis) -> str:
    endpoint = design.endpoint(analysis.endpoint)
    if analysis.method == "cox":
        return "log hazard ratio"
    if endpoint.binary and analysis.method == "difference":
        return "difference in proportions"
    return "difference in means"


def _f(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


# ---------------------------------------------------------------------------- data
def trial_dataset(result: TrialResult) -> xr.Dataset:
    """The run as an ``xarray.Dataset``: dims ``replicate × arm × subject × time`` (and
    ``dose``), covariates and the arm as coordinates, one variable per output (noise-free
    ``NAME`` and measured ``NAME_measured``), per endpoint and for the doses taken."""
    import xarray as xr

    design, arrays = result.design, result.arrays
    model = load_model(design)
    outputs = model.structural.output_names
    units = dict(model.structural.output_units) if model.structural.output_units else {}
    dims = ("replicate", "arm", "subject")
    data: dict[str, Any] = {}
    for o, name in enumerate(outputs):
        attrs = {"units": units.get(name, "")}
        data[name] = ((*dims, "time"), arrays["predicted"][..., o], attrs)
        data[f"{name}_measured"] = (
            (*dims, "time"),
            arrays["measured"][..., o],
            {**attrs, "description": "with assay (residual) error, at visits; NaN elsewhere"},
        )
    data["dose_amount"] = ((*dims, "dose"), arrays["doses"], {"units": "mg"})
    for j, e in enumerate(design.endpoints):
        data[f"endpoint_{e.name}"] = (dims, arrays["endpoints"][..., j], {"kind": e.kind})
        if e.kind == "time_to_event":
            data[f"event_{e.name}"] = (dims, arrays["events"][..., j])
        if np.isfinite(arrays["scores"][..., j]).any():
            data[f"prognostic_{e.name}"] = (
                dims,
                arrays["scores"][..., j],
                {"description": "baseline twin's predicted control outcome (PROCOVA score)"},
            )
    data["status"] = (dims, arrays["status"])
    data["dropout_time"] = (dims, arrays["dropout"], {"units": "h"})
    coords: dict[str, Any] = {
        "replicate": arrays["replicates"],
        "arm": [a.name for a in design.arms],
        "subject": np.arange(arrays["valid"].shape[2]),
        "time": ("time", arrays["times"], {"units": "h"}),
        "dose": np.arange(arrays["doses"].shape[-1]),
        "dose_time": (("arm", "dose"), arrays["dose_times"], {"units": "h"}),
        "enrolled": (dims, arrays["valid"]),
        "candidate_id": (dims, arrays["ids"]),
        "measured_time": ("time", arrays["measured_mask"]),
    }
    for key, value in arrays.items():
        if key.startswith("cov:"):
            # text as variable-length strings (Zarr v3 has no fixed-width unicode type)
            coords[key[4:]] = (dims, value.astype(object) if value.dtype.kind == "U" else value)
    coords["arm"] = np.array(coords["arm"], dtype=object)
    return xr.Dataset(
        data,
        coords=coords,
        attrs={"design": design.model_dump_json(), "drug": design.drug, "seed": design.seed},
    )


def endpoint_table(result: TrialResult) -> pd.DataFrame:
    """One row per enrolled subject and replicate: arm, covariates, endpoints."""
    import pandas as pd

    design, arrays = result.design, result.arrays
    valid = arrays["valid"]
    r, a, s = np.nonzero(valid)
    frame: dict[str, Any] = {
        "replicate": arrays["replicates"][r],
        "arm": np.array([x.name for x in design.arms])[a],
        "subject": s,
        "candidate_id": arrays["ids"][r, a, s],
    }
    for key, value in arrays.items():
        if key.startswith("cov:"):
            frame[key[4:]] = value[r, a, s]
    for j, e in enumerate(design.endpoints):
        frame[e.name] = arrays["endpoints"][r, a, s, j]
        if e.kind == "time_to_event":
            frame[f"{e.name}_event"] = arrays["events"][r, a, s, j]
        scores = arrays["scores"][r, a, s, j]
        if np.isfinite(scores).any():
            frame[f"{e.name}_prognostic"] = scores
    frame["dropout_time"] = arrays["dropout"][r, a, s]
    frame["status"] = arrays["status"][r, a, s]
    return pd.DataFrame(frame)


def trial_nonmem(result: TrialResult, replicate: int = 0):
    """One replicate's simulated observations as NONMEM data (doses taken and measured
    values of the first endpoint's output at the visits, with assay error)."""
    import pandas as pd

    from ...simulators import Dose
    from .._nonmem import NonmemData

    design, arrays = result.design, result.arrays
    model = load_model(design)
    structural = model.structural
    routes = dict(structural.routes)
    output = design.endpoints[0].output
    o = structural.output_names.index(output)
    r = int(np.flatnonzero(arrays["replicates"] == replicate)[0])
    times, mask = arrays["times"], arrays["measured_mask"]
    doses, rows, covariates = [], [], {"ARM": [], "AGE": [], "SEX": [], "WT": []}
    cmt = structural.state_index("central") + 1 if "central" in structural.states else 0
    subject_id = 0
    for k, arm in enumerate(design.arms):
        compartment = structural.state_index(routes[arm.route or next(iter(routes))])
        for s in np.flatnonzero(arrays["valid"][r, k]):
            subject_id += 1
            amounts = arrays["doses"][r, k, s]
            dose_times = arrays["dose_times"][k]
            doses.append(
                [
                    Dose(float(t), float(x), compartment=compartment, duration=arm.infusion)
                    for t, x in zip(dose_times, amounts, strict=True)
                    if np.isfinite(t) and np.isfinite(x) and x > 0
                ]
            )
            dv = arrays["measured"][r, k, s, mask, o]
            rows.append(pd.DataFrame({"ID": subject_id, "TIME": times[mask], "DV": dv, "CMT": cmt}))
            covariates["ARM"].append(k + 1)
            covariates["AGE"].append(float(arrays["cov:age"][r, k, s]))
            covariates["SEX"].append(float(arrays["cov:female"][r, k, s]))
            covariates["WT"].append(float(arrays["cov:weight"][r, k, s]))
    observations = pd.concat(rows, ignore_index=True)
    observations["MDV"] = np.where(np.isfinite(observations["DV"]), 0, 1)
    observations["EVID"] = 0
    return NonmemData.from_doses(
        doses, observations=observations, covariates=covariates, ids=range(1, subject_id + 1)
    )


# ---------------------------------------------------------------------------- figures
def power_figure(summary: dict[str, Any]) -> go.Figure:
    """Power against the sample size per arm (control arm), ±1.96 Monte-Carlo SE."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for entry in summary["analyses"]:
        n = [s["n"] for s in entry["sizes"]]
        power = [s["power"] for s in entry["sizes"]]
        err = [1.96 * s["power_mc_se"] for s in entry["sizes"]]
        fig.add_trace(
            go.Scatter(
                x=n,
                y=power,
                error_y={"type": "data", "array": err},
                mode="lines+markers",
                name=f"{entry['analysis']} ({entry['comparison']})",
            )
        )
    fig.update_layout(
        title="Power (share of replicates with p < α) vs sample size",
        xaxis_title=f"subjects per arm ({summary['control']})",
        yaxis_title="power",
        yaxis_range=[0, 1.02],
        template="plotly_white",
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def trajectory_figure(result: TrialResult, output: str | None = None) -> go.Figure:
    """Median and 5–95 % of the noise-free output by arm (all replicates), with the
    measured values of the first replicate as points."""
    import plotly.graph_objects as go

    design, arrays = result.design, result.arrays
    model = load_model(design)
    output = output or design.endpoints[0].output
    o = model.structural.output_names.index(output)
    times = arrays["times"]
    fig = go.Figure()
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    for k, arm in enumerate(design.arms):
        values = arrays["predicted"][:, k, :, :, o][arrays["valid"][:, k]]
        colour = colours[k % len(colours)]
        with np.errstate(all="ignore"):
            lo, med, hi = np.nanquantile(values, [0.05, 0.5, 0.95], axis=0)
        fig.add_trace(
            go.Scatter(x=times, y=hi, line={"width": 0}, showlegend=False, hoverinfo="skip")
        )
        fig.add_trace(
            go.Scatter(
                x=times, y=lo, fill="tonexty", line={"width": 0}, opacity=0.2,
                fillcolor=_rgba(colour, 0.2), name=f"{arm.name} 5–95 %",
            )
        )  # fmt: skip
        fig.add_trace(go.Scatter(x=times, y=med, line={"color": colour}, name=f"{arm.name} median"))
    fig.update_layout(
        title=f"{output} by arm (noise-free, all replicates)",
        xaxis_title="time (h)",
        yaxis_title=output,
        template="plotly_white",
    )
    return fig


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def endpoint_figure(result: TrialResult) -> go.Figure:
    """Box plots of each endpoint by arm (all replicates)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    design, arrays = result.design, result.arrays
    fig = make_subplots(
        rows=1, cols=len(design.endpoints), subplot_titles=[e.name for e in design.endpoints]
    )
    for j, e in enumerate(design.endpoints):
        for k, arm in enumerate(design.arms):
            v = arrays["endpoints"][:, k, :, j][arrays["valid"][:, k]]
            v = v[np.isfinite(v)]
            if e.binary:
                fig.add_trace(
                    go.Bar(
                        x=[arm.name],
                        y=[v.mean() if v.size else np.nan],
                        name=arm.name,
                        showlegend=False,
                    ),
                    row=1,
                    col=j + 1,
                )
            else:
                fig.add_trace(
                    go.Box(y=v, name=arm.name, showlegend=False, boxpoints=False), row=1, col=j + 1
                )
    fig.update_layout(
        title="Endpoints by arm (bars: share with the event)", template="plotly_white"
    )
    return fig


def dose_path_figure(result: TrialResult, n_subjects: int = 15) -> go.Figure:
    """Doses taken by the first subjects of the first replicate in each adaptive arm."""
    import plotly.graph_objects as go

    design, arrays = result.design, result.arrays
    fig = go.Figure()
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    for k, arm in enumerate(design.arms):
        t = arrays["dose_times"][k]
        for s in range(min(n_subjects, int(arrays["valid"][0, k].sum()))):
            fig.add_trace(
                go.Scatter(
                    x=t, y=arrays["doses"][0, k, s], mode="lines", line={"shape": "hv", "color": colours[k % 5], "width": 1},
                    opacity=0.6, name=arm.name, legendgroup=arm.name, showlegend=s == 0,
                )
            )  # fmt: skip
    fig.update_layout(
        title="Dose paths (first replicate; 0 = missed or withheld dose)",
        xaxis_title="time (h)",
        yaxis_title="dose (mg)",
        template="plotly_white",
    )
    return fig


def estimate_figure(result: TrialResult, summary: dict[str, Any]) -> go.Figure:
    """Distribution of each effect estimate over replicates at the largest sample size,
    one panel per analysis and comparison (their units differ)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    entries = summary["analyses"]
    fig = make_subplots(
        rows=1,
        cols=len(entries),
        subplot_titles=[f"{e['analysis']}<br>{e['estimate']}" for e in entries],
    )
    results = result.arrays["results"]
    n_comp = len(comparisons(result.design))
    for i, entry in enumerate(entries):
        a, c = divmod(i, n_comp)
        estimate = results[:, -1, a, c, 0]
        fig.add_trace(
            go.Histogram(
                x=estimate[np.isfinite(estimate)], name=entry["analysis"], showlegend=False
            ),
            row=1,
            col=i + 1,
        )
    fig.update_annotations(font_size=10)
    fig.update_layout(
        title=f"Effect estimates over replicates (n = {result.design.n_max} per arm)",
        template="plotly_white",
    )
    return fig


def trial_report_html(result: TrialResult, summary: dict[str, Any] | None = None) -> str:
    """A self-contained HTML report: design, power table and curve, trajectories,
    endpoints by arm, dose paths and the distribution of the estimates."""
    import html

    summary = summary or result.summary()
    design = result.design
    rows = []
    for entry in summary["analyses"]:
        for s in entry["sizes"]:
            q = s["estimate_quantiles"] or {}
            rows.append(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(str(x))}</td>"
                    for x in (
                        entry["analysis"],
                        entry["comparison"],
                        s["n"],
                        f"{s['power']:.3f} ± {s['power_mc_se']:.3f}",
                        _fmt(s["estimate_mean"]),
                        f"[{_fmt(q.get('2.5'))}, {_fmt(q.get('97.5'))}]",
                        entry["estimate"],
                    )
                )
                + "</tr>"
            )
    figures = [
        power_figure(summary),
        trajectory_figure(result),
        endpoint_figure(result),
        dose_path_figure(result),
        estimate_figure(result, summary),
    ]
    plots = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)
    ]
    refs = "".join(f"<li>{html.escape(r)}</li>" for r in design.references)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(design.name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>"
        f"</head><body><h1>{html.escape(design.name)}</h1>"
        f"<p>Drug {html.escape(design.drug)}; {summary['replicates']} replicates; seed "
        f"{design.seed}; {summary['subjects_simulated']} subjects simulated "
        f"({summary['failed_solves']} failed solves).</p>"
        f"<p id='model'>Model: {html.escape(design.model_text())}.</p>"
        "<h2>Power and effect estimates</h2><table><tr><th>analysis</th><th>comparison</th>"
        "<th>n per arm</th><th>power ± MC SE</th><th>mean estimate</th>"
        "<th>95 % of estimates</th><th>estimate</th></tr>"
        + "".join(rows)
        + "</table>"
        + "".join(plots)
        + (f"<h2>References</h2><ul>{refs}</ul>" if refs else "")
        + "<h2>Design</h2><pre>"
        + html.escape(json.dumps(json.loads(design.model_dump_json()), indent=1))
        + "</pre></body></html>"
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


# ---------------------------------------------------------------------------- files
def _write_zarr_atomic(dataset: xr.Dataset, path: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        dataset.to_zarr(staging / "store.zarr", mode="w", consolidated=False, zarr_format=3)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(staging / "store.zarr", path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_outputs(result: TrialResult, out: Path) -> dict[str, Path]:
    """Write every output of a run into ``out`` (each file atomically)."""
    from .._nonmem import write_nonmem

    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    files = {
        "zarr": out / "trial.zarr",
        "endpoints": out / "endpoints.csv",
        "nonmem": out / "nonmem_replicate0.csv",
        "summary": out / "summary.json",
        "report": out / "report.html",
        "provenance": out / "provenance.json",
    }
    _write_zarr_atomic(trial_dataset(result), files["zarr"])
    write_text_atomic(files["endpoints"], endpoint_table(result).to_csv(index=False))
    write_nonmem(trial_nonmem(result, int(result.arrays["replicates"][0])), files["nonmem"])
    write_text_atomic(files["summary"], json.dumps(summary, indent=1))
    write_text_atomic(files["report"], trial_report_html(result, summary))
    model = load_model(result.design)
    record = {
        "format": "twinsim-trial-provenance/1",
        "design": json.loads(result.design.model_dump_json()),
        "seed": result.design.seed,
        "model": {"name": model.name, "citation": model.citation},
        **({"trained_model": t.record()} if (t := result.design.trained_model()) else {}),
        "versions": package_versions(),
        "outputs": {k: str(v.name) for k, v in files.items() if k != "provenance"},
    }
    write_text_atomic(files["provenance"], json.dumps(record, indent=1, default=str))
    return files
