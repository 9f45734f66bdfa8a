"""The educator page: generate a set of teaching cases, browse them, try a dose, reveal
the key, export.

The work is the library's (:func:`~twinsim.scenarios.generate_cases`,
:func:`~twinsim.scenarios.try_dose`, the exports); the callbacks are thin and call the
plain functions of this module (``generate``, ``case_view``, ``tried``), which the tests
call directly. Generated sets are kept in a small in-process cache keyed by the spec
(generation is deterministic, so a cached set is the set the spec gives).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import Input, Output, State, dash_table, dcc, html, no_update

from ..scenarios import (
    CaseSpec,
    SpecError,
    builtin_templates,
    case_figure,
    case_html,
    case_markdown,
    fhir_bundle,
    generate_cases,
    try_dose,
)

__all__ = ["case_view", "generate", "layout", "register", "tried"]

_P = "ed-"


def _id(key: str) -> str:
    return _P + key


@functools.lru_cache(maxsize=8)
def _case_set(spec_json: str):
    return generate_cases(CaseSpec.model_validate_json(spec_json))


def generate(template: str, n_cases: Any, seed: Any, difficulty: str = "intermediate"):
    """The case set for the form's values, or the spec's error message.

    Returns
    -------
    tuple
        ``(case_set, None)`` or ``(None, message)``.
    """
    try:
        spec = CaseSpec.model_validate(
            {"template": template, "n_cases": n_cases, "seed": seed, "difficulty": difficulty}
        )
    except SpecError as error:
        return None, str(error)
    return _case_set(spec.model_dump_json()), None


def case_view(case: Mapping[str, Any], *, key: bool) -> dict[str, Any]:
    """What the page shows of one case: Markdown text, labs table rows, the figure."""
    labs = [
        {
            "hour": f"{lab['time_h']:g}",
            "test": lab["name"],
            "value": f"{lab['value']:g} {lab['unit']}",
        }
        for lab in case["labs"]
    ]
    unit = "" if case["monitoring"]["unit"] == "1" else f" {case['monitoring']['unit']}"
    labs += [
        {
            "hour": f"{m['time_h']:g}",
            "test": "INR" if case["monitoring"]["output"] == "inr" else f"{case['drug']} level",
            "value": f"{m['value']:.1f}{unit}",
        }
        for m in case["monitoring"]["values"]
    ]
    # the page's cards are narrow: headings two levels smaller than in the exported text
    text = "\n".join(
        "##" + line if line.startswith("#") and line.count("#", 0, 5) <= 4 else line
        for line in case_markdown(case, key=key).splitlines()
    )
    # the page shows labs in its own table and the questions in their own card
    vignette = text.split("#### Labs and levels")[0]
    questions = text.split("#### Questions", 1)[1]
    return {
        "vignette": vignette,
        "questions": questions,
        "labs": labs,
        "figure": case_figure(case, key=key),
    }


def tried(template, case: Mapping[str, Any], dose: Any) -> tuple[go.Figure, str]:
    """The patient's simulated response to a student's dose: the figure and a sentence."""
    result = try_dose(template, case, float(dose))
    figure = case_figure(case, key=False)
    figure.add_trace(
        go.Scatter(
            x=[t / 24 for t in result["time_h"]],
            y=result["value"],
            mode="lines",
            name=f"your dose: {result['dose_mg']:g} mg from hour "
            f"{template.questions.decision_time:g}",
            line={"color": "#e67e22"},
        )
    )
    target = result["target"]
    unit = "" if target["unit"] == "1" else f" {target['unit']}"
    verdict = "within" if result["meets"] else "outside"
    sentence = (
        f"With {result['dose_mg']:g} mg every {template.regimen.interval:g} h from hour "
        f"{template.questions.decision_time:g}, this patient's {result['metric_name']} is "
        f"{result['metric']:.1f}{unit}: {verdict} the target {target['low']:g}–"
        f"{target['high']:g}{unit}."
    )
    return figure, sentence


def layout(**_: Any) -> dbc.Container:
    """The page: the set form, the case browser, try-a-dose, key and export."""
    templates = list(builtin_templates())
    form = dbc.Card(
        dbc.CardBody(
            [
                dbc.Row(
                    [
                        dbc.Col(
                            [
                                dbc.Label("Template", html_for=_id("template")),
                                dbc.Select(
                                    id=_id("template"),
                                    value="theophylline_smoking_cessation",
                                    options=[
                                        {"label": t.replace("_", " "), "value": t}
                                        for t in templates
                                    ],
                                ),
                            ],
                            md=5,
                        ),
                        dbc.Col(
                            [
                                dbc.Label("Cases", html_for=_id("n")),
                                dbc.Input(id=_id("n"), type="number", value=2, min=1, max=20),
                            ],
                            md=2,
                        ),
                        dbc.Col(
                            [
                                dbc.Label("Seed", html_for=_id("seed")),
                                dbc.Input(id=_id("seed"), type="number", value=11, min=0),
                            ],
                            md=2,
                        ),
                        dbc.Col(
                            [
                                dbc.Label("\u00a0"),
                                dbc.Button(
                                    "Generate set",
                                    id=_id("generate"),
                                    color="primary",
                                    className="d-block w-100",
                                ),
                            ],
                            md=3,
                        ),
                    ]
                ),
                html.Div(id=_id("message"), className="text-danger small mt-2", role="alert"),
            ]
        ),
        className="mb-3",
    )
    browser = dbc.Card(
        dbc.CardBody(
            [
                dbc.Row(
                    [
                        dbc.Col(
                            [
                                dbc.Label("Case"),
                                dbc.RadioItems(id=_id("case"), options=[], inline=True),
                            ],
                            md=6,
                        ),
                        dbc.Col(
                            dbc.Checklist(
                                id=_id("key"),
                                options=[{"label": " Reveal the key (instructor)", "value": "key"}],
                                value=[],
                                switch=True,
                                className="mt-4",
                            ),
                            md=6,
                        ),
                    ]
                ),
                dcc.Markdown(id=_id("vignette"), className="mt-3"),
                dcc.Graph(id=_id("graph"), config={"displaylogo": False}),
                dash_table.DataTable(
                    id=_id("labs"),
                    columns=[{"name": c, "id": c} for c in ("hour", "test", "value")],
                    data=[],
                    style_cell={"textAlign": "left", "fontSize": "0.85rem"},
                    page_size=12,
                ),
            ]
        ),
        className="mb-3",
    )
    try_card = dbc.Card(
        dbc.CardBody(
            [
                html.H5("Try a dose"),
                dbc.Row(
                    [
                        dbc.Col(
                            [
                                dbc.Label("Dose from the decision time (mg)", html_for=_id("dose")),
                                dbc.Input(id=_id("dose"), type="number", min=0, step="any"),
                            ],
                            md=5,
                        ),
                        dbc.Col(
                            [
                                dbc.Label("\u00a0"),
                                dbc.Button(
                                    "Simulate this patient",
                                    id=_id("try"),
                                    color="secondary",
                                    className="d-block w-100",
                                ),
                            ],
                            md=4,
                        ),
                    ]
                ),
                html.Div(id=_id("tried"), className="mt-2 fw-semibold", role="status"),
            ]
        ),
        className="mb-3",
    )
    questions = dbc.Card(dbc.CardBody(dcc.Markdown(id=_id("questions"))), className="mb-3")
    export = dbc.Card(
        dbc.CardBody(
            [
                html.H5("Export"),
                dbc.ButtonGroup(
                    [
                        dbc.Button(
                            "Student HTML", id=_id("export-student"), outline=True, color="primary"
                        ),
                        dbc.Button(
                            "Instructor HTML",
                            id=_id("export-instructor"),
                            outline=True,
                            color="primary",
                        ),
                        dbc.Button(
                            "FHIR bundle", id=_id("export-fhir"), outline=True, color="primary"
                        ),
                    ]
                ),
                dcc.Download(id=_id("download")),
            ]
        ),
        className="mb-3",
    )
    return dbc.Container(
        [
            html.H4("Educator · teaching cases from digital twins"),
            html.P(
                "Each case's story, labs, time course and answer key come from one virtual "
                "patient's twin; the same template, number and seed give the same cases.",
                className="text-muted",
            ),
            form,
            dbc.Row([dbc.Col([browser], lg=7), dbc.Col([questions, try_card, export], lg=5)]),
            dcc.Store(id=_id("spec")),
        ],
        fluid=True,
    )


def _lookup(spec: Mapping[str, Any] | None, case_id: str | None):
    if not spec or not case_id:
        return None, None
    case_set, _ = generate(spec["template"], spec["n_cases"], spec["seed"])
    case = next((c for c in case_set.cases if c["id"] == case_id), None)
    return case_set, case


def register(app: Any, state: Any = None) -> None:
    """The page's callbacks."""

    @app.callback(
        Output(_id("spec"), "data"),
        Output(_id("case"), "options"),
        Output(_id("case"), "value"),
        Output(_id("message"), "children"),
        Input(_id("generate"), "n_clicks"),
        State(_id("template"), "value"),
        State(_id("n"), "value"),
        State(_id("seed"), "value"),
        prevent_initial_call=True,
    )
    def _generate(_: Any, template: str, n: Any, seed: Any):
        case_set, error = generate(template, n, seed)
        if error:
            return no_update, no_update, no_update, error
        options = [
            {
                "label": f"Case {n}: {c['patient']['age_y']} y {c['patient']['sex']}",
                "value": c["id"],
            }
            for n, c in enumerate(case_set.cases, 1)
        ]
        spec = {"template": template, "n_cases": n, "seed": seed}
        summary = case_set.summary
        message = f"{summary['n']} cases generated."
        return spec, options, options[0]["value"], html.Span(message, className="text-success")

    @app.callback(
        Output(_id("vignette"), "children"),
        Output(_id("questions"), "children"),
        Output(_id("labs"), "data"),
        Output(_id("graph"), "figure"),
        Output(_id("dose"), "value"),
        Output(_id("tried"), "children"),
        Input(_id("case"), "value"),
        Input(_id("key"), "value"),
        State(_id("spec"), "data"),
        prevent_initial_call=True,
    )
    def _show(case_id: str | None, key: list[str], spec: Mapping[str, Any] | None):
        _, case = _lookup(spec, case_id)
        if case is None:
            return no_update, no_update, no_update, no_update, no_update, no_update
        view = case_view(case, key="key" in (key or []))
        return (
            view["vignette"],
            view["questions"],
            view["labs"],
            view["figure"],
            case["regimen"]["dose_mg"],
            "",
        )

    @app.callback(
        Output(_id("graph"), "figure", allow_duplicate=True),
        Output(_id("tried"), "children", allow_duplicate=True),
        Input(_id("try"), "n_clicks"),
        State(_id("dose"), "value"),
        State(_id("case"), "value"),
        State(_id("spec"), "data"),
        prevent_initial_call=True,
    )
    def _try(_: Any, dose: Any, case_id: str | None, spec: Mapping[str, Any] | None):
        case_set, case = _lookup(spec, case_id)
        if case is None:
            return no_update, "Generate a set and choose a case first."
        if dose is None or float(dose) < 0:
            return no_update, f"`dose` must be a number of mg ≥ 0, got {dose!r}"
        return tried(case_set.template, case, dose)

    @app.callback(
        Output(_id("download"), "data"),
        Input(_id("export-student"), "n_clicks"),
        Input(_id("export-instructor"), "n_clicks"),
        Input(_id("export-fhir"), "n_clicks"),
        State(_id("case"), "value"),
        State(_id("spec"), "data"),
        prevent_initial_call=True,
    )
    def _export(s: Any, i: Any, f: Any, case_id: str | None, spec: Mapping[str, Any] | None):
        from dash import ctx

        _, case = _lookup(spec, case_id)
        if case is None:
            return no_update
        which = ctx.triggered_id
        if which == _id("export-fhir"):
            text = json.dumps(fhir_bundle(case), indent=2, sort_keys=True, ensure_ascii=False)
            return {"content": text, "filename": f"{case['id']}.fhir.json"}
        key = which == _id("export-instructor")
        version = "instructor" if key else "student"
        return {"content": case_html(case, key=key), "filename": f"{case['id']}.{version}.html"}
