"""The Dash app: navigation bar, pages, the shared what-if session and its warm-up.

Pages are registered explicitly (the package is flat, there is no ``pages/`` folder):
:func:`create_app` registers the clinician page at ``/``, the educator page at
``/educator`` and the trial-designer page at ``/trial``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, dcc, html

from ..scenarios import WhatIfSession

__all__ = ["DashboardState", "create_app", "serve", "trained_models"]

log = logging.getLogger(__name__)

#: Largest request the server accepts, bytes (an upload is capped lower, see the page).
MAX_REQUEST_BYTES = 4_000_000

#: Pages to come, shown disabled in the navigation bar (none: every page exists).
COMING_PAGES: tuple[str, ...] = ()


@dataclass
class DashboardState:
    """What the app's callbacks share: the what-if session, the trained models offered on
    the clinician page and the warm-up's progress.

    Attributes
    ----------
    models
        Trained latent model folders (``twinsim train --out``) the clinician page offers
        besides the published models: absolute paths, checked by :func:`create_app`.
    """

    session: WhatIfSession = field(default_factory=WhatIfSession)
    models: tuple[str, ...] = ()
    ready: threading.Event = field(default_factory=threading.Event)
    warm_up_seconds: float | None = None
    warm_up_error: str | None = None

    def warm_up(self) -> None:
        """Compile the fit, the regimen search and the forecast shapes the page uses.

        Runs the vancomycin example with one and with four regimens (with the three
        recommended regimens that makes the two regimen-count buckets the forecasts
        use), so the first what-if a user asks is answered at warm speed. Errors are
        kept (and shown on the page), never raised.
        """
        from ._form import N_REGIMENS, check_form, example_form

        started = time.perf_counter()
        try:
            form = example_form("whatif_vancomycin_renal")
            regimens = form["regimens"]
            for count in (N_REGIMENS, 1):
                chosen = regimens[:count] + [""] * (N_REGIMENS - count)
                check = check_form({**form, "regimens": chosen})
                if check.spec is not None:
                    from ..scenarios import whatif_figure

                    whatif_figure(self.session.run(check.spec))
        except Exception as error:  # the page says so; the app still serves
            self.warm_up_error = f"{type(error).__name__}: {error}"
            log.exception("dashboard warm-up failed")
        finally:
            self.warm_up_seconds = time.perf_counter() - started
            self.ready.set()

    def start_warm_up(self) -> threading.Thread:
        """Warm up in a background thread (the server answers meanwhile)."""
        thread = threading.Thread(target=self.warm_up, name="twinsim-warm-up", daemon=True)
        thread.start()
        return thread


def _navbar() -> dbc.Navbar:
    items = [
        dbc.NavItem(dbc.NavLink("Clinician", href="/", active="exact")),
        dbc.NavItem(dbc.NavLink("Educator", href="/educator", active="exact")),
        dbc.NavItem(dbc.NavLink("Trial designer", href="/trial", active="exact")),
    ]
    items += [
        dbc.NavItem(
            dbc.NavLink(
                [
                    name,
                    dbc.Badge("coming", color="light", text_color="secondary", className="ms-1"),
                ],
                disabled=True,
                href="#",
            )
        )
        for name in COMING_PAGES
    ]
    return dbc.Navbar(
        dbc.Container(
            [
                dbc.NavbarBrand(
                    [html.Span("twinsim", className="fw-bold"), " · digital-twin dosing"],
                    href="/",
                ),
                dbc.Nav(items, navbar=True, className="me-auto"),
                html.Span(
                    dbc.Badge("warming up the models…", color="warning", id="app-ready"),
                    role="status",
                    **{"aria-live": "polite"},
                ),
            ],
            fluid=True,
        ),
        color="dark",
        dark=True,
        className="mb-3 py-1",
    )


def trained_models(folders: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    """The trained model folders as absolute paths, each loaded once to check it.

    Raises
    ------
    SpecError
        A folder that is not a trained latent model (``twinsim train --out``), named.
    """
    from ..scenarios import SpecError, is_model_folder, trained_model
    from ..twin import LatentModelError

    out: list[str] = []
    problems: list[str] = []
    for i, folder in enumerate(folders):
        if not is_model_folder(folder):
            problems.append(
                f"`models[{i}]` {os.fspath(folder)!r} is not a trained model folder (no "
                "model.json); give a folder written by `twinsim train DATA.csv --prior DRUG "
                "--out MODEL_DIR`"
            )
            continue
        try:
            out.append(str(trained_model(folder).folder))
        except LatentModelError as error:
            problems.append(f"`models[{i}]` {os.fspath(folder)!r} cannot be loaded: {error}")
    if problems:
        raise SpecError(problems, title="invalid trained model")
    return tuple(dict.fromkeys(out))


def create_app(
    state: DashboardState | None = None,
    *,
    warm_up: bool = True,
    models: Sequence[str | os.PathLike[str]] = (),
) -> dash.Dash:
    """The dashboard as a Dash app (call ``.run(...)`` or use :func:`serve`).

    Parameters
    ----------
    state
        Shared state (a fresh :class:`DashboardState` by default).
    warm_up
        Start the background warm-up (:meth:`DashboardState.warm_up`); without it the
        app is ready at once and the first what-if compiles.
    models
        Trained latent model folders the clinician page's *Model* menu offers besides
        the published model (added to ``state.models``). The warm-up compiles the
        published models only: the first what-if on a trained model compiles its engine.

    Returns
    -------
    dash.Dash

    Raises
    ------
    SpecError
        A folder of ``models`` that is not a trained model.
    """
    from . import _clinician, _educator, _trial

    state = state or DashboardState()
    if models:
        state.models = tuple(dict.fromkeys([*state.models, *trained_models(models)]))
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder="",
        # Bootstrap's CSS is served from assets/ (a clinic network may have no internet)
        suppress_callback_exceptions=True,
        title="twinsim",
        update_title=None,
    )
    app.server.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    for module, path, name, title, page in (
        ("clinician", "/", "Clinician", "clinician what-if", _clinician),
        ("educator", "/educator", "Educator", "educator teaching cases", _educator),
        ("trial", "/trial", "Trial designer", "trial designer", _trial),
    ):
        dash.register_page(
            f"twinsim.dashboard.{module}",
            path=path,
            name=name,
            title=f"twinsim · {title}",
            # the pages that need it read the shared state (the clinician's model menu)
            layout=functools.partial(page.layout, state=state),
        )
    app.layout = html.Div(
        [
            _navbar(),
            dcc.Interval(id="app-ready-poll", interval=1000),
            dash.page_container,
        ]
    )
    _clinician.register(app, state)
    _educator.register(app, state)
    _trial.register(app, state)

    @app.callback(
        Output("app-ready", "children"),
        Output("app-ready", "color"),
        Output("app-ready-poll", "disabled"),
        Input("app-ready-poll", "n_intervals"),
    )
    def _ready(_: Any) -> tuple[str, str, bool]:
        if not state.ready.is_set():
            return "warming up the models…", "warning", False
        if state.warm_up_error:
            return "warm-up failed (first what-if compiles)", "danger", True
        if state.warm_up_seconds is None:  # started with warm_up=False: nothing was compiled
            return "ready", "success", True
        return f"ready (warmed up in {state.warm_up_seconds:.0f} s)", "success", True

    if warm_up:
        state.start_warm_up()
    else:
        state.ready.set()
    return app


#: Worker threads of the WSGI server: a page's callbacks run side by side (a forecast is
#: computed under the what-if session's lock, one at a time, the rest are quick).
SERVER_THREADS = 4


def _stop_on_ctrl_c() -> None:
    """Make Ctrl+C (SIGINT) stop the server whatever the process inherited: a parent that
    ignored or blocked SIGINT (a job runner, ``nohup``, a test worker) passes that on to
    the child, whose Python then never raises KeyboardInterrupt."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def serve(
    host: str = "127.0.0.1",
    port: int = 8050,
    *,
    warm_up: bool = True,
    debug: bool = False,
    threads: int = SERVER_THREADS,
    models: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Serve the dashboard on ``host:port`` until interrupted (Ctrl+C).

    The server is waitress, a production WSGI server (Flask's development server warns
    against use beyond development); ``debug=True`` serves with Dash's development
    server instead, for its in-page error reports.

    Parameters
    ----------
    host
        Address to listen on; the default serves this machine only.
    port
        TCP port.
    warm_up
        Compile the models in the background at start (see :func:`create_app`).
    debug
        Dash's debug mode on its development server (reloader off: the warm-up would run
        twice).
    threads
        Worker threads of the waitress server.
    models
        Trained latent model folders offered on the clinician page (see :func:`create_app`).

    Examples
    --------
    >>> from twinsim.dashboard import serve
    >>> serve(port=8050)  # doctest: +SKIP
    """
    _stop_on_ctrl_c()
    app = create_app(warm_up=warm_up, models=models)
    if debug:
        app.run(host=host, port=port, debug=True, use_reloader=False)
        return
    import waitress

    try:
        waitress.serve(
            app.server,
            host=host,
            port=port,
            threads=threads,
            # the server refuses larger bodies before Flask sees them
            max_request_body_size=MAX_REQUEST_BYTES,
            ident="waitress",
        )
    except KeyboardInterrupt:  # Ctrl+C is how the command line stops the server
        pass
