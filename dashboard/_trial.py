"""The trial-designer page: edit or upload a design, run it in the background, read the power.

The design is the YAML a ``twinsim trial`` file holds (:class:`~twinsim.scenarios.TrialDesign`);
the page has no validation of its own: each problem the design reports is shown with the
field it names and the line of the text that holds it. A run is a Dash background callback
(:func:`run_job`) on a :class:`SpawnDiskcacheManager`: the trial runs in its own process,
streams its progress chunk by chunk (``run_trial``'s ``progress`` hook) and can be
cancelled. Each design runs in its own folder under :func:`runs_root` (named by the
design's hash), where ``run_trial`` saves finished chunks and writes the outputs
atomically; running a cancelled design again resumes from its finished chunks, running a
finished one reads it back. The plain functions (``check_design``, ``example_text``,
``load_run``, ``results_view``, ``read_upload``) are what the tests call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dash_bootstrap_components as dbc
import yaml
from dash import DiskcacheManager, Input, Output, State, dash_table, dcc, html, no_update

from ..scenarios import (
    SpecError,
    TrialDesign,
    TrialError,
    TrialResult,
    run_trial,
    trial_examples,
    write_text_atomic,
)
from ..scenarios._trial import dose_path_figure, endpoint_figure, power_figure, trajectory_figure

__all__ = [
    "DesignCheck",
    "SpawnDiskcacheManager",
    "check_design",
    "chunk_size_for",
    "example_text",
    "layout",
    "line_of",
    "load_run",
    "read_upload",
    "register",
    "results_view",
    "run_folder",
    "run_job",
    "runs_root",
]

_P = "tr-"

#: Environment variable naming the folder of the page's runs (default: the user cache).
RUNS_ENV = "TWINSIM_TRIAL_RUNS"

#: The library example the page opens with, in its quick form (:data:`QUICK`).
DEFAULT_EXAMPLE = "vancomycin_auc_vs_trough"

#: The quick form of a library example: fewer replicates and subjects, same design.
QUICK = {"replicates": 20, "sample_size": [10, 20, 30]}

#: The example menu's value while the text area holds an uploaded design.
UPLOADED = "uploaded"

#: Largest design file accepted from an upload, bytes.
MAX_UPLOAD_BYTES = 200_000

#: A run reports its progress this many times at most (one chunk of replicates each).
PROGRESS_STEPS = 20

#: Files a run offers for download: button key → (file in the run folder, suffix).
DOWNLOADS = {
    "report": ("report.html", "report.html"),
    "endpoints": ("endpoints.csv", "endpoints.csv"),
    "nonmem": ("nonmem_replicate0.csv", "nonmem_replicate0.csv"),
}

#: Columns of the power table.
TABLE_COLUMNS = ("analysis", "comparison", "n per arm", "power", "mean estimate", "estimate")

#: The arms' colours in the library's trajectory and dose-path figures.
ARM_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")

_RUN_KEY = re.compile(r"[0-9a-f]{16}")
_PROBLEM = re.compile(r"`([^`\s]+)`:?\s*(.*)", re.DOTALL)
# a design-level check joins its problems with "; ", each starting with the field it names
_SPLIT = re.compile(r";\s+(?=`[\w.\[\]]+`)")


def _id(key: str) -> str:
    return _P + key


# ---------------------------------------------------------------------------- design text
def example_text(name: str, *, quick: bool = True) -> str:
    """A library example's YAML text (:func:`~twinsim.scenarios.trial_examples`), its
    comments kept; ``quick`` lowers ``replicates`` and ``sample_size`` to :data:`QUICK`
    (a run of a minute or less on a laptop) and says so in a first comment line.

    Raises
    ------
    KeyError
        Not an example name.

    Examples
    --------
    >>> text = example_text("vancomycin_auc_vs_trough")
    >>> "replicates: 20" in text and "sample_size: [10, 20, 30]" in text
    True
    """
    text = trial_examples()[name].read_text(encoding="utf-8")
    if not quick:
        return text
    replicates, sizes = QUICK["replicates"], QUICK["sample_size"]
    text = re.sub(r"(?m)^replicates:.*$", f"replicates: {replicates}", text, count=1)
    text = re.sub(
        r"(?m)^sample_size:.*$", f"sample_size: [{', '.join(map(str, sizes))}]", text, count=1
    )
    note = (
        f"# Quick version of the library example {name!r}: {replicates} replicates and "
        f"sample sizes {sizes}\n# (the shipped design has more; choose it as shipped "
        "for the full run).\n"
    )
    return note + text


def _parts(path: str) -> list[str | int]:
    return [int(i) if i else name for name, i in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)]


def line_of(text: str, path: str) -> int | None:
    """The line (from 1) of ``text`` holding the field ``path`` (``arms[1].titration.at``),
    or of its nearest enclosing field; ``None`` when not even the first part is there.

    Examples
    --------
    >>> line_of("drug: warfarin\\narms:\\n  - name: A\\n    dose: 5\\n", "arms[0].dose")
    4
    """
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in _parts(path):
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next(
                (
                    (k, v)
                    for k, v in node.value
                    if isinstance(k, yaml.ScalarNode) and str(k.value) == part
                ),
                None,
            )
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


@dataclass
class DesignCheck:
    """What :func:`check_design` found.

    Attributes
    ----------
    design
        The validated design, or ``None``.
    problems
        One ``{"field", "line", "message"}`` per problem: the field's dotted path (``""``
        for the text as a whole), its line in the text (``None`` when the field is
        missing), and the design's message.
    """

    design: TrialDesign | None
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.design is not None


def _split(problem: str) -> list[tuple[str, str]]:
    """``(field path, message)`` of each problem in one of the design's lines.

    A line is ``"`path` message"`` (pydantic's location, then the message), where the
    message may name a field inside ``path`` first (``"`arms[1]` `dose` must be ≥ 0 mg"``);
    the design-level check joins several ``"`field` message"`` with ``"; "``.

    Examples
    --------
    >>> _split("`duration` must be > 0 h, got -1; `visits` must be increasing")
    [('duration', 'must be > 0 h, got -1'), ('visits', 'must be increasing')]
    >>> _split("`arms[1].loading` `dose` must be ≥ 0 mg, got -5.0")
    [('arms[1].loading.dose', 'must be ≥ 0 mg, got -5.0')]
    """
    parts = _SPLIT.split(problem)
    if len(parts) > 1:  # the design-level check: each part names its own field
        out = []
        for part in parts:
            match = _PROBLEM.match(part)
            out.append((match.group(1), match.group(2).strip()) if match else ("", part))
        return out
    match = _PROBLEM.match(problem)
    if match is None:
        return [("", problem)]
    path, message = match.group(1), match.group(2).strip()
    inner = _PROBLEM.match(message)
    if inner is not None and message.startswith("`") and "." not in inner.group(1):
        return [(f"{path}.{inner.group(1)}", inner.group(2).strip())]
    return [(path, message)]


def check_design(text: str | None) -> DesignCheck:
    """Validate a design's YAML (or JSON) text; every problem placed by its field and line.

    Examples
    --------
    >>> check_design(example_text("warfarin_genotype_guided")).ok
    True
    >>> bad = example_text("vancomycin_auc_vs_trough").replace("duration: 3 d", "duration: -3 d")
    >>> [(p["field"], p["line"]) for p in check_design(bad).problems][:1]
    [('duration', 22)]
    """
    if text is None or not text.strip():
        return DesignCheck(
            None, [{"field": "", "line": None, "message": "the design is empty; choose an example"}]
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        return DesignCheck(
            None,
            [
                {
                    "field": "",
                    "line": mark.line + 1 if mark is not None else None,
                    "message": f"not valid YAML: {getattr(error, 'problem', None) or error}",
                }
            ],
        )
    if not isinstance(data, dict):
        return DesignCheck(
            None,
            [
                {
                    "field": "",
                    "line": 1,
                    "message": "the design must be a mapping of design fields (drug, arms, "
                    f"endpoints, ...), got {type(data).__name__}",
                }
            ],
        )
    try:
        design = TrialDesign.model_validate(data)
    except SpecError as error:
        problems = [
            {"field": path, "line": line_of(text, path) if path else None, "message": message}
            for problem in error.problems
            for path, message in _split(problem)
        ]
        return DesignCheck(None, problems)
    except ValueError as error:  # a library check outside pydantic: shown, never raised
        return DesignCheck(None, [{"field": "", "line": None, "message": str(error)}])
    return DesignCheck(design)


def read_upload(contents: str | None, filename: str | None) -> tuple[str | None, str]:
    """An uploaded design (a ``data:`` URL from ``dcc.Upload``) → ``(text, message)``;
    ``text`` is ``None`` when the file cannot be used (the message says why)."""
    name = filename or "design.yaml"
    if not contents or "," not in contents:
        return None, f"{name}: nothing was uploaded"
    encoded = contents.split(",", 1)[1]
    if len(encoded) * 3 // 4 > MAX_UPLOAD_BYTES + 3:
        return None, (
            f"{name} is larger than {MAX_UPLOAD_BYTES // 1000} kB; a design is a short YAML file"
        )
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None, f"{name} is not a UTF-8 text file; upload the design's YAML or JSON"
    return text, f"Read {name} ({len(text.splitlines())} lines)."


# ---------------------------------------------------------------------------- runs
def runs_root() -> Path:
    """Folder of the page's runs: ``$TWINSIM_TRIAL_RUNS``, else ``<user cache>/twinsim/trials``."""
    folder = os.environ.get(RUNS_ENV)
    if folder:
        return Path(folder)
    import platformdirs

    return Path(platformdirs.user_cache_dir("twinsim", appauthor=False)) / "trials"


def chunk_size_for(design: TrialDesign) -> int:
    """Replicates per chunk: at most :data:`PROGRESS_STEPS` progress steps per run."""
    return max(1, math.ceil(design.replicates / PROGRESS_STEPS))


def _n_chunks(design: TrialDesign) -> int:
    return math.ceil(design.replicates / chunk_size_for(design))


def run_key(design: TrialDesign) -> str:
    """The run folder's name: a hash of the design and the chunk size."""
    text = f"{design.model_dump_json()}|chunk={chunk_size_for(design)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_folder(key: str) -> Path:
    """The folder of run ``key`` (refuses anything but a run key: it names a path)."""
    if not isinstance(key, str) or not _RUN_KEY.fullmatch(key):
        raise TrialError(f"`run` must be a run key (16 hex digits), got {key!r}")
    return runs_root() / key


def run_job(set_progress: Any, _clicks: Any, text: str | None) -> tuple[Any, Any]:
    """The background callback: validate, run in the design's folder with progress, report.

    Module level, without a closure, so the spawned process imports it by name.
    ``set_progress`` receives ``(percent, label)`` after each chunk (the last one, 100 %,
    before the outputs are written, so the page reads it with the result).

    Returns
    -------
    tuple
        The run key (``no_update`` when the design is invalid or the run failed) and the
        status to show.
    """
    started = time.perf_counter()
    check = check_design(text)
    if check.design is None:
        return no_update, dbc.Alert(
            "The design has problems; fix the fields listed under the editor.", color="danger"
        )
    design = check.design
    key = run_key(design)
    folder = run_folder(key)
    total = design.replicates

    def progress(done: int, of: int) -> None:
        set_progress((100 * done / of, f"{done}/{of} replicates done"))

    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "design.yaml", text or "")
        result = run_trial(design, folder, chunk_size=chunk_size_for(design), progress=progress)
    except (TrialError, SpecError) as error:
        return no_update, dbc.Alert(str(error), color="danger")
    except Exception as error:  # a library failure is reported on the page, not lost
        return no_update, dbc.Alert(
            f"The run failed ({type(error).__name__}: {error}); the finished chunks are kept.",
            color="danger",
        )
    chunks = _n_chunks(design)
    reused = chunks - len(result.computed_chunks)
    note = f" ({reused} of {chunks} chunks from an earlier run)" if reused else ""
    message = (
        f"Ran {total} replicates of “{design.name}” in {time.perf_counter() - started:.0f} s"
        f"{note}; seed {design.seed}."
    )
    return key, dbc.Alert(message, color="success")


def load_run(key: str) -> TrialResult:
    """A finished run read back from its folder (its saved chunks; nothing is computed).

    Raises
    ------
    TrialError
        Not a run key, or the run has not finished.
    """
    folder = run_folder(key)
    if not (folder / "summary.json").is_file() or not (folder / "design.yaml").is_file():
        raise TrialError(f"run {key} has not finished (no summary in {str(folder)!r}); run it")
    design = TrialDesign.model_validate(yaml.safe_load((folder / "design.yaml").read_text()))
    saved = len(list((folder / "chunks").glob("chunk_*.npz")))
    if saved != _n_chunks(design):  # reading it back would compute here, in the server
        raise TrialError(
            f"run {key} has {saved} of its {_n_chunks(design)} chunks in {str(folder)!r}; "
            "run the design again to compute the missing ones"
        )
    return run_trial(design, folder, chunk_size=chunk_size_for(design), write=False)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def results_view(result: TrialResult) -> dict[str, Any]:
    """What the page shows of a finished run: figures and the power table's rows.

    Returns
    -------
    dict
        ``power``, ``trajectories``, ``endpoints`` (figures), ``doses`` (figure, or
        ``None`` when no arm has an adaptive rule), ``rows`` (power table), ``columns``
        (its columns: the comparison only when the design has several) and ``summary``.
    """
    summary = result.summary()
    design = result.design
    power = power_figure(summary)
    power.update_layout(
        title=f"Power vs sample size ({summary['replicates']} replicates, ±1.96 MC SE)",
        height=460,
        margin={"t": 70, "b": 10, "l": 50, "r": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "font": {"size": 11}},
    )
    power.update_xaxes(tickmode="array", tickvals=list(design.sample_size))
    trajectories = trajectory_figure(result)
    trajectories.update_layout(height=360, margin={"t": 50, "b": 40, "l": 50, "r": 10})
    endpoints = endpoint_figure(result)
    endpoints.update_layout(height=330, margin={"t": 70, "b": 30, "l": 50, "r": 10})
    # each arm in its colour of the trajectories and dose paths
    colours = {arm.name: ARM_COLOURS[k % len(ARM_COLOURS)] for k, arm in enumerate(design.arms)}
    for trace in endpoints.data:
        colour = colours.get(trace.x[0] if trace.type == "bar" else trace.name)
        if colour is not None:
            trace.marker.color = colour
    doses = None
    if any(arm.titration is not None for arm in design.arms):
        doses = dose_path_figure(result)
        doses.update_layout(height=330, margin={"t": 50, "b": 40, "l": 50, "r": 10})
    single = len({entry["comparison"] for entry in summary["analyses"]}) == 1
    if single:  # one comparison: named once, in the title, not in every legend entry
        for trace, entry in zip(power.data, summary["analyses"], strict=True):
            trace.name = entry["analysis"]
        comparison = summary["analyses"][0]["comparison"]
        power.update_layout(title=f"{power.layout.title.text}<br><sup>{comparison}</sup>")
    rows = [
        {
            "analysis": entry["analysis"],
            "comparison": entry["comparison"],
            "n per arm": size["n"],
            "power": f"{size['power']:.2f} ± {size['power_mc_se']:.2f}",
            "mean estimate": _fmt(size["estimate_mean"]),
            "estimate": entry["estimate"],
        }
        for entry in summary["analyses"]
        for size in entry["sizes"]
    ]
    return {
        "power": power,
        "trajectories": trajectories,
        "endpoints": endpoints,
        "doses": doses,
        "rows": rows,
        "columns": [c for c in TABLE_COLUMNS if not (single and c == "comparison")],
        "summary": summary,
    }


class SpawnDiskcacheManager(DiskcacheManager):
    """Dash's diskcache manager, its jobs started as fresh (spawned) processes.

    The default start method on Linux forks the server, whose JAX runtime (threads
    started by the clinician page's warm-up) a forked child cannot use safely; a spawned
    process imports twinsim afresh.
    """

    def call_job_fn(self, key, job_fn, args, context):
        import multiprocess

        # daemon: a server stopped mid-run ends its trials instead of waiting for them
        process = multiprocess.get_context("spawn").Process(
            target=job_fn, args=(key, self._make_progress_key(key), args, context), daemon=True
        )
        process.start()
        return process.pid


def background_manager() -> SpawnDiskcacheManager:
    """The page's background-callback manager, its cache in ``runs_root()/_callbacks``."""
    import diskcache

    folder = runs_root() / "_callbacks"
    folder.mkdir(parents=True, exist_ok=True)
    return SpawnDiskcacheManager(diskcache.Cache(str(folder)), expire=3600)


# ---------------------------------------------------------------------------- layout
def _problems_view(check: DesignCheck) -> Any:
    if check.ok:
        design = check.design
        subjects = design.replicates * sum(design.arm_sizes(design.n_max))
        return html.Span(
            f"Valid design: {len(design.arms)} arms, sample sizes {design.sample_size} per "
            f"arm, {design.replicates} replicates ({subjects:,} virtual subjects).",
            className="text-success",
        )
    items = [
        html.Li(
            [
                dbc.Badge(
                    f"line {p['line']}" if p["line"] else "missing" if p["field"] else "design",
                    color="light",
                    text_color="dark",
                    className="me-1",
                ),
                html.Code(p["field"], className="me-1 fw-semibold") if p["field"] else None,
                p["message"],
            ],
            className="mb-1",
        )
        for p in check.problems
    ]
    return html.Div(
        [html.Div("Fix these fields:", className="fw-semibold"), html.Ul(items, className="mb-0")],
        className="text-danger",
    )


def _graph(key: str) -> dcc.Graph:
    return dcc.Graph(id=_id(key), config={"displaylogo": False}, style={"display": "none"})


def layout(**_: Any) -> dbc.Container:
    """The page: the design editor, run and cancel with progress, the results."""
    examples = list(trial_examples())
    options = []
    for name in examples:
        options.append({"label": f"{name} (quick)", "value": f"{name}:quick"})
        options.append({"label": f"{name} (as shipped)", "value": name})
    options.append({"label": "an uploaded design", "value": UPLOADED, "disabled": True})
    text = example_text(DEFAULT_EXAMPLE)
    check = check_design(text)
    editor = dbc.Card(
        dbc.CardBody(
            [
                dbc.Label("Library example", html_for=_id("example")),
                dbc.Row(
                    [
                        dbc.Col(
                            dbc.Select(
                                id=_id("example"),
                                options=options,
                                value=f"{DEFAULT_EXAMPLE}:quick",
                            ),
                            md=8,
                        ),
                        dbc.Col(
                            dcc.Upload(
                                id=_id("upload"),
                                children=html.Span("Upload YAML/JSON"),
                                className="upload-zone small",
                                multiple=False,
                            ),
                            md=4,
                            className="align-self-center",
                        ),
                    ],
                    className="g-2",
                ),
                html.Div(id=_id("upload-feedback"), className="small mt-1", role="status"),
                dbc.Label("Design (YAML)", html_for=_id("text"), className="mt-2"),
                dbc.Textarea(
                    id=_id("text"),
                    value=text,
                    rows=22,
                    spellCheck=False,
                    debounce=True,
                    className="font-monospace small",
                    style={"fontSize": "0.76rem", "whiteSpace": "pre"},
                ),
                html.Div(
                    _problems_view(check), id=_id("problems"), className="small mt-2", role="alert"
                ),
            ]
        ),
        className="mb-3",
    )
    runner = dbc.Card(
        dbc.CardBody(
            [
                dbc.Row(
                    [
                        dbc.Col(
                            dbc.Button(
                                "Run trial", id=_id("run"), color="primary", className="w-100"
                            ),
                            width=4,
                        ),
                        dbc.Col(
                            dbc.Button(
                                "Cancel",
                                id=_id("cancel"),
                                color="secondary",
                                outline=True,
                                disabled=True,
                                className="w-100",
                            ),
                            width=3,
                        ),
                        dbc.Col(
                            dbc.Progress(id=_id("progress"), value=0, style={"height": "1.4rem"}),
                            width=5,
                            className="align-self-center",
                        ),
                    ],
                    className="g-2",
                ),
                html.Div(id=_id("progress-text"), className="small text-muted mt-1"),
                html.Div(id=_id("status"), className="small mt-2", role="status"),
            ]
        ),
        className="mb-3",
    )
    downloads = html.Div(
        [
            dbc.ButtonGroup(
                [
                    dbc.Button("HTML report", id=_id("dl-report"), outline=True, color="primary"),
                    dbc.Button(
                        "Endpoint table (CSV)",
                        id=_id("dl-endpoints"),
                        outline=True,
                        color="primary",
                    ),
                    dbc.Button(
                        "NONMEM data (CSV)", id=_id("dl-nonmem"), outline=True, color="primary"
                    ),
                ],
                size="sm",
            ),
            dcc.Download(id=_id("download")),
        ],
        id=_id("downloads"),
        style={"display": "none"},
        className="mb-2",
    )
    results = dbc.Card(
        dbc.CardBody(
            [
                html.H5("Results"),
                html.Div(
                    "Run the design to see power against the sample size, the trajectories "
                    "and endpoints by arm, and the adaptive rule's dose paths.",
                    id=_id("placeholder"),
                    className="text-muted",
                ),
                downloads,
                _graph("power"),
                html.Div(
                    dash_table.DataTable(
                        id=_id("table"),
                        columns=[{"name": c, "id": c} for c in TABLE_COLUMNS],
                        data=[],
                        style_table={"overflowX": "auto"},
                        style_cell={
                            "textAlign": "left",
                            "fontSize": "0.78rem",
                            "whiteSpace": "normal",
                            "height": "auto",
                        },
                        style_header={"fontWeight": "600"},
                        style_cell_conditional=[
                            {"if": {"column_id": c}, "whiteSpace": "nowrap"}
                            for c in ("power", "n per arm")
                        ],
                        page_size=12,
                    ),
                    id=_id("table-wrap"),
                    style={"display": "none"},
                    className="mb-2",
                ),
                _graph("trajectories"),
                _graph("endpoints"),
                _graph("doses"),
            ]
        ),
        className="mb-3",
    )
    return dbc.Container(
        [
            html.H4("Trial designer · virtual trials of digital twins"),
            html.P(
                "Edit a design (the YAML of `twinsim trial`), run its replicates in the "
                "background and read the power for each sample size; the same design and "
                "seed give the same numbers.",
                className="text-muted",
            ),
            dbc.Row([dbc.Col([runner, editor], lg=5), dbc.Col([results], lg=7)]),
            dcc.Store(id=_id("run-key")),
        ],
        fluid=True,
    )


# ---------------------------------------------------------------------------- callbacks
def register(app: Any, state: Any = None) -> None:
    """The page's callbacks (the run is a background callback on its own manager)."""
    from dash import ctx

    @app.callback(
        Output(_id("text"), "value"),
        Input(_id("example"), "value"),
        prevent_initial_call=True,
    )
    def _example(value: str | None):
        if not value or value == UPLOADED:
            return no_update
        name, _, quick = value.partition(":")
        return example_text(name, quick=quick == "quick")

    @app.callback(
        Output(_id("text"), "value", allow_duplicate=True),
        Output(_id("upload-feedback"), "children"),
        Output(_id("example"), "value"),
        Input(_id("upload"), "contents"),
        State(_id("upload"), "filename"),
        prevent_initial_call=True,
    )
    def _upload(contents: str | None, filename: str | None):
        text, message = read_upload(contents, filename)
        if text is None:
            return no_update, html.Span(message, className="text-danger"), no_update
        return text, html.Span(message, className="text-success"), UPLOADED

    @app.callback(
        Output(_id("problems"), "children"),
        Output(_id("text"), "invalid"),
        Input(_id("text"), "value"),
        prevent_initial_call=True,
    )
    def _check(text: str | None):
        check = check_design(text)
        return _problems_view(check), not check.ok

    app.callback(
        Output(_id("run-key"), "data"),
        Output(_id("status"), "children"),
        Input(_id("run"), "n_clicks"),
        State(_id("text"), "value"),
        background=True,
        manager=background_manager(),
        interval=500,
        running=[
            (Output(_id("run"), "disabled"), True, False),
            (Output(_id("cancel"), "disabled"), False, True),
            (Output(_id("progress"), "animated"), True, False),
            (Output(_id("progress"), "striped"), True, False),
        ],
        progress=[Output(_id("progress"), "value"), Output(_id("progress-text"), "children")],
        cancel=[Input(_id("cancel"), "n_clicks")],
        prevent_initial_call=True,
    )(run_job)

    @app.callback(
        Output(_id("status"), "children", allow_duplicate=True),
        Input(_id("run"), "n_clicks"),
        prevent_initial_call=True,
    )
    def _started(_: Any):
        return ""  # the last run's status is not this run's

    @app.callback(
        Output(_id("status"), "children", allow_duplicate=True),
        Input(_id("cancel"), "n_clicks"),
        prevent_initial_call=True,
    )
    def _cancelled(_: Any):
        return dbc.Alert(
            "Cancelled. The finished chunks are kept: running the same design again resumes "
            "from them.",
            color="warning",
        )

    hidden, shown = {"display": "none"}, {"display": "block"}

    @app.callback(
        Output(_id("power"), "figure"),
        Output(_id("power"), "style"),
        Output(_id("trajectories"), "figure"),
        Output(_id("trajectories"), "style"),
        Output(_id("endpoints"), "figure"),
        Output(_id("endpoints"), "style"),
        Output(_id("doses"), "figure"),
        Output(_id("doses"), "style"),
        Output(_id("table"), "data"),
        Output(_id("table"), "columns"),
        Output(_id("table-wrap"), "style"),
        Output(_id("downloads"), "style"),
        Output(_id("placeholder"), "children"),
        Input(_id("run-key"), "data"),
        prevent_initial_call=True,
    )
    def _results(key: str | None):
        try:
            view = results_view(load_run(key or ""))
        except TrialError as error:
            return (*([no_update] * 12), html.Span(str(error), className="text-danger"))
        doses = view["doses"]
        return (
            view["power"],
            shown,
            view["trajectories"],
            shown,
            view["endpoints"],
            shown,
            doses if doses is not None else {},
            shown if doses is not None else hidden,
            view["rows"],
            [{"name": c, "id": c} for c in view["columns"]],
            shown,
            shown,
            "",
        )

    @app.callback(
        Output(_id("download"), "data"),
        *(Input(_id(f"dl-{k}"), "n_clicks") for k in DOWNLOADS),
        State(_id("run-key"), "data"),
        prevent_initial_call=True,
    )
    def _download(*args: Any):
        key = args[-1]
        which = str(ctx.triggered_id or "").removeprefix(_id("dl-"))
        if which not in DOWNLOADS or not key:
            return no_update
        try:
            folder = run_folder(key)
        except TrialError:
            return no_update
        name, suffix = DOWNLOADS[which]
        path = folder / name
        if not path.is_file():
            return no_update
        return dcc.send_file(str(path), filename=f"twinsim-trial-{key}-{suffix}")
