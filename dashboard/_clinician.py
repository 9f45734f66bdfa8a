"""The clinician page: one patient, the doses given and levels measured → what-if regimens.

The form (patient, drug, dosing history, levels, up to four regimens) is turned into a
:class:`~twinsim.scenarios.WhatIfSpec` by :func:`~twinsim.dashboard._form.check_form`;
the spec's own messages are shown next to the fields. The what-if is answered by the
shared :class:`~twinsim.scenarios.WhatIfSession` (the fit and the regimen
search are reused while the patient, doses and levels stay the same, so a regimen change
only forecasts), drawn with the library's :func:`~twinsim.scenarios.whatif_figure` and
:func:`~twinsim.scenarios.target_figure`, and downloaded with
:func:`~twinsim.scenarios.whatif_html`.

The callbacks are thin: each calls a plain function of this module (``compute``,
``upload_levels``, ``accept``, ...) that the tests call directly.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dash_bootstrap_components as dbc
from dash import Input, Output, State, ctx, dash_table, dcc, html, no_update

from ._form import (
    FIELDS,
    GENES_SHOWN,
    HISTORY_COLUMNS,
    N_REGIMENS,
    FormCheck,
    check_form,
    example_form,
    genotype_choices,
    genotype_note,
)

__all__ = [
    "accept",
    "compute",
    "layout",
    "model_options",
    "register",
    "report",
    "upload_levels",
]

#: Files larger than this are not sent by the browser at all, bytes (base64 adds a third,
#: staying under the server's request limit); smaller ones over the levels limit (1 MB)
#: reach the server and are refused with a message.
UPLOAD_BROWSER_LIMIT = 2_900_000

#: The example shown when the page opens.
DEFAULT_EXAMPLE = "whatif_vancomycin_renal"

#: Keys of FIELDS that are plain text/select inputs (they have an `invalid` property).
_INPUTS = [k for k in FIELDS if k not in ("dialysis", "comedications")]
_REGIMEN_LETTERS = "ABCD"
_HOURS = {"type": "numeric"}


def _id(key: str) -> str:
    return f"cl-{key}"


# ---------------------------------------------------------------------------- layout
def _feedback(key: str) -> html.Div:
    return html.Div(
        id=_id(key) + "-feedback", className="invalid-feedback d-block", **{"aria-live": "polite"}
    )


def _input(
    key: str,
    label: str,
    value: Any,
    *,
    unit: str | None = None,
    placeholder: str = "",
    help: str | None = None,
    width: int = 6,
    choices: Sequence[str] = (),
) -> dbc.Col:
    # `choices`: offered in a datalist (the browser's suggestions), any text may be typed
    suggest = {"list": _id(key) + "-choices"} if choices else {}
    children: list[Any] = [
        dbc.Label(
            [label, html.Span(f" ({unit})", className="text-muted") if unit else None],
            html_for=_id(key),
            className="form-label-sm mb-0",
        ),
        dbc.Input(
            id=_id(key),
            value=value,
            type="text",
            debounce=True,
            size="sm",
            placeholder=placeholder,
            autoComplete="off",
            **suggest,
        ),
        _feedback(key),
    ]
    if choices:
        children.append(
            html.Datalist([html.Option(value=c) for c in choices], id=_id(key) + "-choices")
        )
    if help is not None:
        children.append(dbc.FormText(help, id=_id(key) + "-help", className="small"))
    return dbc.Col(children, xs=12, md=width, className="mb-2")


def _select(
    key: str, label: str, value: Any, options: Sequence[tuple[str, str]], *, width: int = 6
) -> dbc.Col:
    return dbc.Col(
        [
            dbc.Label(label, html_for=_id(key), className="form-label-sm mb-0"),
            dbc.Select(
                id=_id(key),
                value=value,
                options=[{"label": text, "value": v} for v, text in options],
                size="sm",
            ),
            _feedback(key),
        ],
        xs=12,
        md=width,
        className="mb-2",
    )


def _table(key: str, columns: list[dict[str, Any]], rows: list[dict], label: str) -> html.Div:
    return html.Div(
        [
            dash_table.DataTable(
                id=_id(key),
                columns=columns,
                data=rows,
                editable=True,
                row_deletable=True,
                style_table={"overflowX": "auto"},
                style_cell={"fontSize": "0.85rem", "padding": "2px 6px", "textAlign": "right"},
                style_header={"fontWeight": "600", "backgroundColor": "#f1f3f5"},
                css=[{"selector": ".dash-spreadsheet-menu", "rule": "display: none"}],
                dropdown={
                    "output": {"options": [{"label": o, "value": o} for o in ("conc", "inr")]}
                },
            ),
            html.Div(
                id=_id(key) + "-feedback",
                className="invalid-feedback d-block",
                role="status",
                **{"aria-live": "polite", "aria-label": label + " messages"},
            ),
        ],
        **{"aria-label": label},
        role="group",
    )


def _card(title: str, body: list[Any], *, extra: Any = None, class_name: str = "mb-3") -> dbc.Card:
    header = [html.H2(title, className="h6 mb-0 d-inline")]
    if extra is not None:
        header.append(html.Span(extra, className="float-end"))
    return dbc.Card(
        [dbc.CardHeader(header, className="py-1"), dbc.CardBody(body, className="py-2")],
        className=class_name,
    )


def model_options(folders: Sequence[str]) -> list[tuple[str, str]]:
    """``(value, label)`` of the *Model* menu: the published model, then each trained one.

    Examples
    --------
    >>> model_options([])
    [('', 'published (drug library)')]
    """
    from ..scenarios import trained_model

    options = [("", "published (drug library)")]
    for folder in folders:
        trained = trained_model(folder)
        options.append((str(trained.folder), f"trained: {trained.name} ({trained.prior})"))
    return options


def layout(state: Any = None, **_: Any) -> dbc.Container:
    """The page, filled with the vancomycin example (``state.models``: the trained models
    offered in the *Model* menu)."""
    from ..priors import ANCESTRIES, COMEDICATIONS, DRUG_LIBRARY
    from ..scenarios import whatif_examples

    form = example_form(DEFAULT_EXAMPLE)
    examples = [
        (name, name.removeprefix("whatif_").replace("_", " ")) for name in whatif_examples()
    ]
    genes = [
        _input(
            f"gene_{g}",
            g,
            form[f"gene_{g}"],
            placeholder={"VKORC1": "e.g. G/A"}.get(g, "e.g. *1/*3") + ", not tested",
            help=genotype_note(g, form[f"gene_{g}"]),
            width=4,
            choices=genotype_choices(g),
        )
        for g in GENES_SHOWN
    ]
    patient = _card(
        "Patient",
        [
            dbc.Row(
                [
                    _select("drug", "Drug", form["drug"], [(d, d) for d in DRUG_LIBRARY], width=4),
                    _select(
                        "model",
                        "Model",
                        form["model"],
                        model_options(getattr(state, "models", ())),
                        width=8,  # a trained model's name and drug: wider than a drug
                    ),
                    _input("patient_id", "Patient ID", form["patient_id"], width=4),
                    _input("age", "Age", form["age"], unit="y", width=4),
                    _select(
                        "sex",
                        "Sex",
                        form["sex"],
                        [("", "—"), ("female", "female"), ("male", "male")],
                        width=4,
                    ),
                    _input("weight", "Weight", form["weight"], unit="kg", width=4),
                    _input("height", "Height", form["height"], unit="cm", width=4),
                    _input(
                        "scr",
                        "Serum creatinine",
                        form["scr"],
                        unit="mg/dL",
                        width=4,
                        placeholder="or '80 µmol/L'",
                    ),
                    _input(
                        "crcl",
                        "Measured CrCL",
                        form["crcl"],
                        unit="mL/min",
                        width=4,
                        placeholder="Cockcroft–Gault",
                    ),
                    _select(
                        "ancestry",
                        "Ancestry",
                        form["ancestry"],
                        [("", "—"), *((a, a.replace("_", " ")) for a in ANCESTRIES)],
                        width=6,
                    ),
                    dbc.Col(
                        dbc.Switch(
                            id=_id("dialysis"),
                            label="On haemodialysis",
                            value=form["dialysis"],
                            className="mt-4",
                        ),
                        xs=12,
                        md=6,
                    ),
                    _feedback("dialysis"),
                ],
                className="g-2",
            )
        ],
    )
    genotype = _card(
        "Genotype, comedications, lifestyle",
        [
            dbc.Row(genes, className="g-2"),
            dbc.Label(
                "Comedications", html_for=_id("comedications"), className="form-label-sm mb-0"
            ),
            dcc.Dropdown(
                id=_id("comedications"),
                options=[{"label": c.replace("_", " "), "value": c} for c in COMEDICATIONS],
                value=form["comedications"],
                multi=True,
                placeholder="none",
                className="mb-1 small",
            ),
            _feedback("comedications"),
            dbc.Row(
                [
                    _select(
                        "smoking",
                        "Smoking",
                        form["smoking"],
                        [
                            ("", "—"),
                            ("never", "never"),
                            ("current", "current"),
                            ("former", "former"),
                        ],
                        width=4,
                    ),
                    _input("quit", "Quit", form["quit"], placeholder="e.g. 3 d ago", width=4),
                    _input("cigarettes", "Cigarettes", form["cigarettes"], unit="/day", width=4),
                    _input("alcohol", "Alcohol", form["alcohol"], unit="units/wk", width=4),
                    _input("vitamin_k", "Vitamin K", form["vitamin_k"], unit="µg/day", width=4),
                    _input(
                        "adherence", "Adherence", form["adherence"], placeholder="e.g. 90%", width=4
                    ),
                ],
                className="g-2 mt-1",
            ),
        ],
    )
    history = _card(
        "Doses given",
        [
            _table(
                "history",
                [
                    {"name": "time (h)", "id": "time", **_HOURS},
                    {"name": "amount (mg)", "id": "amount", "type": "numeric"},
                    {"name": "infusion (h)", "id": "duration", **_HOURS},
                ],
                form["history"],
                "Doses given",
            ),
            dbc.Label(
                "Doses given as text", html_for=_id("history-text"), className="visually-hidden"
            ),
            dbc.InputGroup(
                [
                    dbc.Input(
                        id=_id("history-text"),
                        placeholder="e.g. 1 g over 1 h q12h x 4 doses",
                        size="sm",
                    ),
                    dbc.Button(
                        "Fill", id=_id("history-fill"), size="sm", color="secondary", outline=True
                    ),
                    dbc.Button(
                        "Add dose", id=_id("add-dose"), size="sm", color="secondary", outline=True
                    ),
                ],
                size="sm",
                className="mt-2",
            ),
        ],
        extra=html.Small("times from the first dose, t = 0", className="text-muted"),
    )
    levels = _card(
        "Measured levels",
        [
            _table(
                "levels",
                [
                    {"name": "time (h)", "id": "time", **_HOURS},
                    {"name": "value", "id": "value", "type": "text"},
                    {"name": "output", "id": "output", "presentation": "dropdown"},
                    {"name": "LLOQ", "id": "lloq", "type": "numeric"},
                ],
                form["levels"],
                "Measured levels",
            ),
            dbc.Row(
                [
                    dbc.Col(
                        dbc.Button(
                            "Add level",
                            id=_id("add-level"),
                            size="sm",
                            color="secondary",
                            outline=True,
                        ),
                        width="auto",
                    ),
                    dbc.Col(
                        dcc.Upload(
                            id=_id("upload"),
                            children=html.Span(
                                [
                                    "Upload CSV / NONMEM file ",
                                    html.Small("(≤ 1 MB)", className="text-muted"),
                                ]
                            ),
                            className="upload-zone small",
                            multiple=False,
                            # larger files reach the server to be told the limit; beyond
                            # this the browser drops them (the request limit is 4 MB)
                            max_size=UPLOAD_BROWSER_LIMIT,
                        ),
                    ),
                ],
                className="g-2 mt-2 align-items-center",
            ),
            html.Div(
                id=_id("upload-feedback"),
                className="small mt-1",
                role="status",
                **{"aria-live": "polite"},
            ),
        ],
        extra=html.Small("mg/L (INR unitless); '<2 mg/L' below the limit", className="text-muted"),
    )
    regimens = _card(
        "Regimens to compare",
        [
            dbc.Row(
                [
                    _input(
                        f"regimen_{i}",
                        f"Regimen {_REGIMEN_LETTERS[i]}",
                        form["regimens"][i],
                        placeholder="e.g. 1250 mg over 90 min q12h",
                        width=6,
                    )
                    for i in range(N_REGIMENS)
                ],
                className="g-2",
            ),
            dbc.Row(
                [
                    _input("start", "Regimens start at", form["start"], unit="h", width=3),
                    _input(
                        "horizon",
                        "Forecast horizon",
                        form["horizon"],
                        placeholder="e.g. 4 d",
                        width=3,
                    ),
                    _select(
                        "fit",
                        "Twin fit",
                        form["fit"],
                        [
                            ("map", "MAP (fast)"),
                            ("laplace", "Laplace (fast, uncertainty)"),
                            ("importance", "Laplace + importance sampling (calibrated bands)"),
                            ("nuts", "NUTS (full posterior, ~30 s)"),
                        ],
                        width=3,
                    ),
                    dbc.Col(
                        [
                            dbc.Label(
                                "Example patient",
                                html_for=_id("example"),
                                className="form-label-sm mb-0",
                            ),
                            dbc.InputGroup(
                                [
                                    dbc.Select(
                                        id=_id("example"),
                                        value=DEFAULT_EXAMPLE,
                                        size="sm",
                                        options=[{"label": t, "value": v} for v, t in examples],
                                    ),
                                    dbc.Button(
                                        "Load",
                                        id=_id("load-example"),
                                        size="sm",
                                        color="secondary",
                                        outline=True,
                                    ),
                                ],
                                size="sm",
                            ),
                        ],
                        xs=12,
                        md=3,
                        className="mb-2",
                    ),
                ],
                className="g-2",
            ),
            html.Div(
                id=_id("regimens-feedback"),
                className="invalid-feedback d-block",
                **{"aria-live": "polite"},
            ),
        ],
        extra=html.Small(
            "up to 4 side by side · Enter or Tab updates · times in h from the first dose",
            className="text-muted",
        ),
    )
    forecast = _card(
        "Forecast",
        [
            html.Div(id=_id("status"), role="status", **{"aria-live": "polite"}),
            dcc.Loading(
                dcc.Graph(
                    id=_id("graph"),
                    # the figure's own height (one or two panels) sizes the graph
                    config={"displaylogo": False},
                    style={"minHeight": "470px"},
                ),
                type="circle",
                delay_show=800,
            ),
            html.Small(id=_id("timing"), className="text-muted"),
        ],
        extra=dbc.Button(
            "Download report (HTML)",
            id=_id("download-button"),
            size="sm",
            color="primary",
            outline=True,
        ),
    )
    recommendation = _card(
        "Recommendation",
        [html.Div(id=_id("recommendation"))],
        extra=dbc.Button(
            "Accept into regimens", id=_id("accept"), size="sm", color="success", disabled=True
        ),
    )
    compared = _card(
        "Regimens compared",
        [
            html.Div(id=_id("table")),
            dcc.Graph(
                id=_id("target-graph"), config={"displaylogo": False}, style={"height": "250px"}
            ),
        ],
    )
    return dbc.Container(
        [
            dcc.Store(id=_id("spec")),
            dcc.Store(id=_id("recommended")),
            dcc.Download(id=_id("download")),
            dbc.Row(
                [
                    dbc.Col([patient, genotype, history, levels], xs=12, lg=4),
                    dbc.Col(
                        [
                            regimens,
                            forecast,
                            dbc.Row(
                                [
                                    dbc.Col(recommendation, xs=12, xl=5),
                                    dbc.Col(compared, xs=12, xl=7),
                                ],
                                className="g-3",
                            ),
                        ],
                        xs=12,
                        lg=8,
                    ),
                ]
            ),
        ],
        fluid=True,
        className="pb-4",
    )


# ---------------------------------------------------------------------------- pure functions
def _cell_styles(errors: Mapping[tuple[int, str | None], str]) -> list[dict[str, Any]]:
    styles = []
    for row, column in errors:
        if row < 0:
            continue
        rule: dict[str, Any] = {"if": {"row_index": row}, "backgroundColor": "#f8d7da"}
        if column is not None:
            rule["if"]["column_id"] = column
        styles.append(rule)
    return styles


def _table_messages(errors: Mapping[tuple[int, str | None], str]) -> list[Any]:
    items = []
    for (row, column), message in sorted(errors.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        where = "" if row < 0 else f"row {row + 1}" + (f", {column}" if column else "")
        items.append(html.Div(f"{where}: {message}" if where else message))
    return items


def _metric_rows(result: Any) -> list[Any]:
    from ..scenarios import METRIC_LABELS

    names: list[str] = []
    for forecast in result.forecasts:
        names += [m for m in forecast.metrics if m not in names]
    units = {}
    for forecast in result.forecasts:
        for name, metric in forecast.metrics.items():
            units.setdefault(name, metric.display_unit)
    head = html.Thead(
        html.Tr(
            [
                html.Th("regimen", scope="col"),
                html.Th("PTA (%)", scope="col"),
                html.Th("safety risk (%)", scope="col"),
            ]
            + [
                html.Th(
                    f"{METRIC_LABELS.get(m, m)}" + (f" ({units[m]})" if units[m] else ""),
                    scope="col",
                )
                for m in names
            ]
        )
    )
    best = result.recommendation
    body = []
    for forecast in result.forecasts:
        tag = {"recommended": " ★", "candidate, recommended": " ★"}.get(forecast.source, "")
        cells = [
            html.Td([forecast.name, html.Span(tag, className="text-success", title="recommended")]),
            html.Td(f"{100 * forecast.pta:.0f}"),
            html.Td(
                "–"
                if forecast.p_unsafe != forecast.p_unsafe  # NaN: no safety threshold
                else f"{100 * forecast.p_unsafe:.0f}",
                title=forecast.safety_note or None,
                className="text-danger" if forecast.safety_note else None,
            ),
        ]
        cells += [
            html.Td(forecast.metrics[m].compact() if m in forecast.metrics else "–") for m in names
        ]
        body.append(html.Tr(cells, className="table-success" if forecast is best else None))
    return [
        dbc.Table(
            [head, html.Tbody(body)],
            size="sm",
            bordered=False,
            hover=True,
            className="mb-1 small",
            responsive=True,
        ),
        html.Small(
            "Median (90 % interval) over the twin's posterior; PTA: probability of target "
            "attainment; safety risk: probability of "
            + (result.safety_text or "the drug's safety threshold")
            + " (red: above the limit, never recommended); ★ recommended by the search.",
            className="text-muted",
        ),
    ]


def _recommendation(result: Any) -> list[Any]:
    from ..scenarios import METRIC_LABELS
    from ..twin import PARETO_K_LIMIT

    best = result.recommendation
    target = result.target
    metrics = [
        html.Li([html.Span(METRIC_LABELS.get(k, k) + ": ", className="text-muted"), m.text()])
        for k, m in best.metrics.items()
    ]
    fit = result.fit
    diagnostics = fit.get("diagnostics", {})
    warning = None
    if diagnostics.get("converged") is False:
        warning = dbc.Alert(
            "The twin's optimiser did not converge; treat this forecast with caution.",
            color="warning",
            className="py-1 small",
        )
    elif diagnostics.get("pareto_k", 0.0) >= PARETO_K_LIMIT:
        warning = dbc.Alert(
            f"Importance sampling could not correct the Laplace posterior for this patient "
            f"(Pareto k = {diagnostics['pareto_k']:.2f}); its bands may be too narrow. "
            "Choose NUTS for a full posterior.",
            color="warning",
            className="py-1 small",
            id=_id("importance-warning"),
        )
    return [
        html.Div(best.name, className="h5 mb-1", id=_id("recommended-name")),
        html.Div(
            [
                dbc.Badge(f"PTA {100 * best.pta:.0f} %", color="success", className="me-2"),
                dbc.Badge(
                    "safety risk –"
                    if best.p_unsafe != best.p_unsafe
                    else f"safety risk {100 * best.p_unsafe:.0f} %",
                    color="secondary",
                    className="me-2",
                    id=_id("safety-risk"),
                ),
                html.Span(f"target: {target.describe()}", className="small"),
            ],
            className="mb-2",
        ),
        html.Ul(metrics, className="small mb-2 ps-3"),
        html.P(best.why or result.recommendation_text(), className="small mb-1"),
        html.P(
            f"How regimens are ranked: by {result.objective_text}. Only regimens within the "
            f"drug's label limits are searched; safety: {result.safety_text}.",
            className="small mb-1",
            id=_id("objective"),
        )
        if result.objective_text
        else None,
        html.Details(
            [
                html.Summary(f"{len(result.excluded)} regimen(s) excluded, and why"),
                html.Ul(
                    [html.Li(f"{name}: {reason}") for name, reason in result.excluded[:15]],
                    className="small",
                ),
            ],
            className="small mb-1",
        )
        if result.excluded
        else None,
        html.P(
            f"Twin: {str(fit.get('method', '')).upper()} on {len(result.spec.observations)} "
            f"level(s); target source: {target.source}.",
            className="small text-muted mb-0",
        ),
        html.P(
            f"Model: {result.model_text}.", className="small text-muted mb-0", id=_id("model-used")
        ),
        # what the twin assumed beyond the data (an untested genotype averaged over)
        dbc.Alert(
            [html.Div(note) for note in result.notes],
            color="info",
            className="py-1 small mt-2 mb-0",
            id=_id("twin-notes"),
        )
        if getattr(result, "notes", ())
        else None,
        warning,
    ]


def _figure(result: Any):
    from ..scenarios import whatif_figure

    figure = whatif_figure(result)
    n_outputs = len(result.forecasts[0].bands) if result.forecasts else 1
    figure.update_layout(
        title=None,
        height=470 if n_outputs == 1 else 600,
        margin={"l": 60, "r": 20, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.14, "x": 0, "font": {"size": 11}},
        uirevision="whatif",  # keep the user's zoom across regimen changes
    )
    return figure


def _target_figure(result: Any):
    from ..scenarios import target_figure

    figure = target_figure(result)
    figure.update_traces(error_x={"color": "#495057"})  # one colour: plotly takes no list here
    figure.update_layout(
        margin={"l": 10, "r": 20, "t": 40, "b": 40}, height=250, title={"font": {"size": 12}}
    )
    return figure


def _empty_figure(message: str):
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.update_layout(
        template="plotly_white",
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[{"text": message, "showarrow": False, "font": {"size": 14}}],
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )
    return figure


def compute(form: Mapping[str, Any], session: Any) -> dict[str, Any]:
    """Everything the page shows for a form: field messages, forecast, recommendation.

    Never raises: invalid fields come back as messages by field, a twin that cannot be
    fitted as a status message saying why.

    Returns
    -------
    dict
        ``check`` (:class:`~twinsim.dashboard._form.FormCheck`), ``result`` (the
        :class:`~twinsim.scenarios.WhatIfResult` or ``None``), ``status`` (``None`` or
        ``(colour, text)``), ``seconds`` and ``timings`` (the session's).
    """
    started = time.perf_counter()
    try:
        check = check_form(form)
    except Exception as error:  # a bug in a validator must not take the page down
        check = FormCheck(spec=None, data={}, general=[f"{type(error).__name__}: {error}"])
    out: dict[str, Any] = {"check": check, "result": None, "status": None, "timings": {}}
    if check.spec is None:
        out["status"] = (
            "warning",
            "Fix the highlighted fields; the forecast below is for the last valid inputs.",
        )
    else:
        try:
            out["result"] = session.run(check.spec, command="twinsim dashboard")
            out["timings"] = dict(session.last)
        except Exception as error:  # the fit failed: say why on the page
            name = type(error).__name__
            text = str(error).strip().splitlines()
            reason = " ".join(text[:6]) if text else name
            out["status"] = ("danger", f"The twin could not be fitted ({name}): {reason}")
    out["seconds"] = time.perf_counter() - started
    return out


def upload_levels(contents: str | None, filename: str | None, drug: str | None) -> dict[str, Any]:
    """An uploaded file (a ``data:`` URL from ``dcc.Upload``) → levels and doses rows.

    Returns
    -------
    dict
        ``levels`` and ``history`` (table rows, ``None`` when the file gives none),
        ``message`` and ``ok``.
    """
    from ..scenarios import MAX_LEVELS_BYTES, LevelsError, read_levels

    name = filename or "upload.csv"
    if not contents or "," not in contents:
        return {
            "ok": False,
            "message": f"{name}: nothing was uploaded",
            "levels": None,
            "history": None,
        }
    encoded = contents.split(",", 1)[1]
    # base64 is 4/3 of the bytes: refuse before decoding a large upload
    if len(encoded) * 3 // 4 > MAX_LEVELS_BYTES + 3:
        return {
            "ok": False,
            "levels": None,
            "history": None,
            "message": f"{name} is larger than {MAX_LEVELS_BYTES / 1e6:g} MB; upload one patient's levels",
        }
    try:
        raw = base64.b64decode(encoded, validate=True)
        output = "inr" if drug == "warfarin" else "conc"
        data = read_levels(raw, name=name, output=output)
    except (LevelsError, binascii.Error, ValueError) as error:
        return {"ok": False, "message": str(error), "levels": None, "history": None}
    except Exception as error:  # a reader bug must not cost the page: say what happened
        return {
            "ok": False,
            "levels": None,
            "history": None,
            "message": f"{name} could not be read ({type(error).__name__}: {error})",
        }
    levels = [
        {
            "time": o.time,
            "value": "<LLOQ" if o.below_lloq else f"{o.value:g}",
            "output": o.output,
            "lloq": o.lloq,
        }
        for o in data.observations
    ]
    history = [
        {"time": d["time"], "amount": d["amount"], "duration": d["duration"] or None}
        for d in data.doses
    ]
    what = f"{len(levels)} level(s)" + (f" and {len(history)} dose(s)" if history else "")
    layout = "NONMEM data set" if data.layout == "nonmem" else "CSV"
    return {
        "ok": True,
        "levels": levels,
        "history": history or None,
        "message": f"Read {what} from {name} ({layout}).",
    }


def accept(recommended: str | None, regimens: Sequence[str | None]) -> list[str]:
    """The regimen slots after accepting the recommended regimen.

    It goes into the first empty slot (the last slot when all are used); a regimen
    already in a slot is not added twice.

    Examples
    --------
    >>> accept("750 mg every 24 h", ["1 g q12h", "", "", ""])
    ['1 g q12h', '750 mg every 24 h', '', '']
    >>> accept("750 mg every 24 h", ["a", "b", "c", "d"])
    ['a', 'b', 'c', '750 mg every 24 h']
    """
    slots = [r or "" for r in regimens]
    if not recommended or recommended in [s.strip() for s in slots]:
        return slots
    empty = [i for i, s in enumerate(slots) if not s.strip()]
    slots[empty[0] if empty else len(slots) - 1] = recommended
    return slots


def report(data: Mapping[str, Any] | None, session: Any) -> tuple[str, str]:
    """``(file name, HTML)`` of the report of what is on screen (the last valid spec)."""
    from ..scenarios import WhatIfSpec, whatif_html

    if not data:
        raise ValueError("there is no valid what-if on screen to report; fix the fields first")
    spec = WhatIfSpec.model_validate(data)
    result = session.run(spec, command="twinsim dashboard")
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in spec.patient.id)
    return f"twinsim-whatif-{spec.drug}-{stem}.html", whatif_html(result)


# ---------------------------------------------------------------------------- callbacks
_FORM_KEYS = [k for k in FIELDS if not k.startswith("regimen_")]


def _form(values: Sequence[Any], history: Any, levels: Any) -> dict[str, Any]:
    form = dict(zip(_FORM_KEYS, values[: len(_FORM_KEYS)], strict=True))
    form["regimens"] = list(values[len(_FORM_KEYS) :])
    form["history"] = history or []
    form["levels"] = levels or []
    return form


def register(app: Any, state: Any) -> None:
    """Attach the page's callbacks to ``app`` (sharing ``state.session``)."""
    field_inputs = [Input(_id(k), "value") for k in _FORM_KEYS] + [
        Input(_id(f"regimen_{i}"), "value") for i in range(N_REGIMENS)
    ]

    @app.callback(
        Output(_id("graph"), "figure"),
        Output(_id("target-graph"), "figure"),
        Output(_id("recommendation"), "children"),
        Output(_id("table"), "children"),
        Output(_id("status"), "children"),
        Output(_id("timing"), "children"),
        Output(_id("spec"), "data"),
        Output(_id("recommended"), "data"),
        Output(_id("accept"), "disabled"),
        *[Output(_id(k), "invalid") for k in _INPUTS],
        *[Output(_id(k) + "-feedback", "children") for k in FIELDS],
        Output(_id("history"), "style_data_conditional"),
        Output(_id("history") + "-feedback", "children"),
        Output(_id("levels"), "style_data_conditional"),
        Output(_id("levels") + "-feedback", "children"),
        Output(_id("regimens-feedback"), "children"),
        *field_inputs,
        Input(_id("history"), "data"),
        Input(_id("levels"), "data"),
    )
    def _compute(*args: Any):
        values, history, levels = args[:-2], args[-2], args[-1]
        out = compute(_form(values, history, levels), state.session)
        check, result = out["check"], out["result"]
        status = None
        if out["status"] is not None:
            colour, text = out["status"]
            status = dbc.Alert(text, color=colour, className="py-1 small mb-2")
        invalid = [k in check.errors for k in _INPUTS]
        feedback = [check.errors.get(k, "") for k in FIELDS]
        general = [html.Div(m) for m in check.general]
        tables = (
            _cell_styles(check.history_errors),
            _table_messages(check.history_errors),
            _cell_styles(check.level_errors),
            _table_messages(check.level_errors),
            general,
        )
        if result is None:
            failed = out["status"] is not None and out["status"][0] == "danger"
            figure = (
                _empty_figure("No forecast: the twin could not be fitted") if failed else no_update
            )
            # a failed fit clears what was shown (and the report: nothing is on screen);
            # invalid fields keep the last valid forecast, marked so by the status line
            cleared = html.P("No forecast.", className="small text-muted")
            return (
                figure,
                _empty_figure("") if failed else no_update,
                cleared if failed else no_update,
                cleared if failed else no_update,
                status,
                "",
                None if failed else no_update,
                None if failed else no_update,
                True,
                *invalid,
                *feedback,
                *tables,
            )
        t = out["timings"]
        reused = [n for n in ("fit", "search") if t.get(f"{n}_cached")]
        parts = [f"forecast {1000 * t.get('forecast_s', 0):.0f} ms"]
        parts += [f"{n} {t[n + '_s']:.1f} s" for n in ("fit", "search") if n not in reused]
        if reused:
            parts.append(f"{' and '.join(reused)} reused")
        if t.get("wait_s", 0) > 0.5:
            parts.append(f"waited {t['wait_s']:.0f} s behind the warm-up or another what-if")
        timing = f"Updated in {1000 * out['seconds']:.0f} ms ({'; '.join(parts)})."
        return (
            _figure(result),
            _target_figure(result),
            _recommendation(result),
            _metric_rows(result),
            status,
            timing,
            check.data,
            result.recommendation.name,
            False,
            *invalid,
            *feedback,
            *tables,
        )

    @app.callback(
        *[Output(_id(f"gene_{g}") + "-help", "children") for g in GENES_SHOWN],
        *[Input(_id(f"gene_{g}"), "value") for g in GENES_SHOWN],
    )
    def _genotype_notes(*values: Any):
        return tuple(genotype_note(g, v) for g, v in zip(GENES_SHOWN, values, strict=True))

    @app.callback(
        *[Output(_id(k), "value", allow_duplicate=True) for k in _FORM_KEYS],
        *[Output(_id(f"regimen_{i}"), "value", allow_duplicate=True) for i in range(N_REGIMENS)],
        Output(_id("history"), "data", allow_duplicate=True),
        Output(_id("levels"), "data", allow_duplicate=True),
        Input(_id("load-example"), "n_clicks"),
        State(_id("example"), "value"),
        prevent_initial_call=True,
    )
    def _load_example(_: Any, name: str):
        try:
            form = example_form(name)
        except KeyError:
            return (no_update,) * (len(_FORM_KEYS) + N_REGIMENS + 2)
        # an example is a patient: the model chosen stays
        return (
            *[no_update if k == "model" else form[k] for k in _FORM_KEYS],
            *form["regimens"],
            form["history"],
            form["levels"],
        )

    @app.callback(
        *[Output(_id(f"regimen_{i}"), "value", allow_duplicate=True) for i in range(N_REGIMENS)],
        Input(_id("accept"), "n_clicks"),
        State(_id("recommended"), "data"),
        *[State(_id(f"regimen_{i}"), "value") for i in range(N_REGIMENS)],
        prevent_initial_call=True,
    )
    def _accept(_: Any, recommended: str | None, *regimens: str):
        return tuple(accept(recommended, regimens))

    @app.callback(
        Output(_id("levels"), "data", allow_duplicate=True),
        Output(_id("history"), "data", allow_duplicate=True),
        Output(_id("upload-feedback"), "children"),
        Output(_id("upload-feedback"), "className"),
        Input(_id("upload"), "contents"),
        State(_id("upload"), "filename"),
        State(_id("drug"), "value"),
        prevent_initial_call=True,
    )
    def _upload(contents: str | None, filename: str | None, drug: str | None):
        got = upload_levels(contents, filename, drug)
        css = "small mt-1 " + ("text-success" if got["ok"] else "text-danger")
        levels = got["levels"] if got["levels"] is not None else no_update
        history = got["history"] if got["history"] is not None else no_update
        return levels, history, got["message"], css

    @app.callback(
        Output(_id("levels"), "data", allow_duplicate=True),
        Input(_id("add-level"), "n_clicks"),
        State(_id("levels"), "data"),
        State(_id("drug"), "value"),
        prevent_initial_call=True,
    )
    def _add_level(_: Any, rows: list[dict] | None, drug: str | None):
        output = "inr" if drug == "warfarin" else "conc"
        return [*(rows or []), {"time": None, "value": "", "output": output, "lloq": None}]

    @app.callback(
        Output(_id("history"), "data", allow_duplicate=True),
        Output(_id("history") + "-feedback", "children", allow_duplicate=True),
        Input(_id("add-dose"), "n_clicks"),
        Input(_id("history-fill"), "n_clicks"),
        State(_id("history"), "data"),
        State(_id("history-text"), "value"),
        State(_id("drug"), "value"),
        State(_id("weight"), "value"),
        prevent_initial_call=True,
    )
    def _history(
        _: Any,
        __: Any,
        rows: list[dict] | None,
        text: str | None,
        drug: str | None,
        weight: str | None,
    ):
        if ctx.triggered_id == _id("add-dose"):
            last = (rows or [{}])[-1]
            return [*(rows or []), {k: last.get(k) for k in HISTORY_COLUMNS}], no_update
        filled = history_from_text(text, drug, weight)
        if isinstance(filled, str):
            return no_update, filled
        return filled, ""

    @app.callback(
        Output(_id("download"), "data"),
        Output(_id("status"), "children", allow_duplicate=True),
        Input(_id("download-button"), "n_clicks"),
        State(_id("spec"), "data"),
        prevent_initial_call=True,
    )
    def _download(_: Any, data: dict | None):
        try:
            name, text = report(data, state.session)
        except Exception as error:
            return no_update, dbc.Alert(
                f"No report: {error}", color="warning", className="py-1 small"
            )
        return dcc.send_string(text, name), no_update


def history_from_text(text: str | None, drug: str | None, weight: str | None) -> list[dict] | str:
    """Dose rows from regimen text (``"1 g over 1 h q12h x 4 doses"``), or the spec's message.

    Examples
    --------
    >>> rows = history_from_text("1 g over 1 h q12h x 2 doses", "vancomycin", "80")
    >>> [(r["time"], r["amount"], r["duration"]) for r in rows]
    [(0.0, 1000.0, 1.0), (12.0, 1000.0, 1.0)]
    >>> print(history_from_text("1 g q12h", "vancomycin", None))  # doctest: +ELLIPSIS
    cannot build the doses of the regimen (1 problem):
      - `regimen.doses[0]` repeats every 12 h to the end of the simulation; ...
    """
    from ..scenarios import PatientSpec, RegimenSpec, SpecError

    if not text or not text.strip():
        return "Type the doses given as text first, e.g. '1 g over 1 h q12h x 4 doses'."
    try:
        from ..priors import drug_model

        regimen = RegimenSpec.model_validate(text)
        patient = PatientSpec(weight=weight) if weight and str(weight).strip() else PatientSpec()
        doses = regimen.to_doses(drug_model(drug or "").structural, patient.weight)
    except (SpecError, ValueError) as error:
        return str(error)
    except Exception as error:  # never raised into the page
        return f"{type(error).__name__}: {error}"
    return [{"time": d.time, "amount": d.amount, "duration": d.duration or None} for d in doses]
