"""Drive the dashboard in a real headless Chromium (browser tests and the benchmark).

The server runs as a subprocess (``twinsim dashboard`` on a free port) so the browser
talks to it over HTTP exactly as a user's would; the browser is the system's Chromium
(Debian's ``chromium`` package, :data:`CHROMIUM`) driven by Playwright — no browser is
downloaded. Used by ``tests/dashboard/test_browser.py`` and
``benchmarks/bench_dashboard.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CHROMIUM",
    "DashboardServer",
    "chromium_path",
    "free_port",
    "graph_trace_names",
    "last_request_ms",
    "launch_chromium",
    "set_field",
    "summarise",
    "time_regimen_change",
    "wait_ready",
]

#: Where Debian's ``chromium`` package puts the browser (``TWINSIM_CHROMIUM`` overrides).
CHROMIUM = "/usr/bin/chromium"

#: A laptop screen.
VIEWPORT = {"width": 1366, "height": 768}


def chromium_path() -> str | None:
    """The Chromium to drive: ``$TWINSIM_CHROMIUM``, else :data:`CHROMIUM` if installed."""
    path = os.environ.get("TWINSIM_CHROMIUM", CHROMIUM)
    return path if Path(path).is_file() and os.access(path, os.X_OK) else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DashboardServer:
    """``twinsim dashboard`` in a subprocess on a free port (a context manager).

    Parameters
    ----------
    port
        TCP port (default: a free one).
    warm_up
        Start the server's background warm-up.
    log
        File for the server's output (default: discarded).
    models
        Trained model folders offered on the clinician page (``--model``).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        warm_up: bool = True,
        log: Path | None = None,
        models: Sequence[str | Path] = (),
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.warm_up = warm_up
        self.log = log
        self.models = tuple(str(m) for m in models)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> DashboardServer:
        """Start the server and wait until it answers HTTP."""
        command = [
            sys.executable,
            "-m",
            "twinsim",
            "dashboard",
            "--port",
            str(self.port),
            "--warm-up" if self.warm_up else "--no-warm-up",
            *(word for folder in self.models for word in ("--model", folder)),
        ]
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        # a server that does not stop is aborted: its threads' stacks go to the log
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the dashboard server exited with code {self.process.returncode}"
                    + (f"; see {self.log}" if self.log else "")
                )
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"the dashboard did not answer on {self.url} within {timeout:g} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGINT; after ``timeout`` s SIGABRT, which writes every
        thread's Python stack to the log; then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless :data:`CHROMIUM` browser driven by Playwright (yields the browser)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise FileNotFoundError(
            f"no Chromium at {CHROMIUM}; install Debian's chromium (make test does) or set "
            "TWINSIM_CHROMIUM"
        )
    with sync_playwright() as playwright:
        # Chromium's sandbox needs user namespaces, which CI containers (often root) lack;
        # the browser only opens our own page on 127.0.0.1
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


def wait_ready(page: Any, timeout_s: float = 300.0) -> None:
    """Wait until the server's warm-up is over and the first forecast is drawn."""
    page.wait_for_selector("#app-ready.bg-success", timeout=timeout_s * 1000)
    page.wait_for_function(
        "() => { const g = document.querySelector('#cl-graph .js-plotly-plot');"
        " return g && g.data && g.data.length > 0; }",
        timeout=timeout_s * 1000,
    )


def graph_trace_names(page: Any, graph: str = "cl-graph") -> list[str]:
    """Names of the traces drawn in a plotly graph of the page."""
    return page.evaluate(
        "id => { const g = document.querySelector('#' + id + ' .js-plotly-plot');"
        " return g && g.data ? g.data.map(t => t.name || '') : []; }",
        graph,
    )


def set_field(page: Any, field: str, text: str) -> None:
    """Type ``text`` into a form field (``cl-<field>``) and commit it with Enter."""
    selector = f"#cl-{field}"
    page.fill(selector, text)
    page.press(selector, "Enter")


_DRAWN = (
    "name => { const g = document.querySelector('#cl-graph .js-plotly-plot');"
    " return !!(g && g.data && g.data.some(t => (t.name || '').startsWith(name + ' (PTA'))); }"
)


def time_regimen_change(page: Any, slot: int, text: str, timeout_s: float = 120.0) -> float:
    """Seconds from committing regimen ``text`` in ``slot`` to its curve drawn in the plot."""
    selector = f"#cl-regimen_{slot}"
    if page.evaluate(_DRAWN, text):
        raise ValueError(f"{text!r} is already in the plot; time a regimen new to the page")
    page.fill(selector, text)
    page.evaluate("() => performance.clearResourceTimings()")
    started = time.perf_counter()
    page.press(selector, "Enter")
    page.wait_for_function(_DRAWN, arg=text, polling="raf", timeout=timeout_s * 1000)
    return time.perf_counter() - started


def last_request_ms(page: Any) -> float | None:
    """The longest callback request (POST to the server, answer received) since the last
    :func:`time_regimen_change`, ms: the server's work plus the transfer."""
    return page.evaluate(
        "() => { const r = performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('_dash-update-component'));"
        " return r.length ? Math.max(...r.map(e => e.responseEnd - e.startTime)) : null; }"
    )


def summarise(seconds: Sequence[float]) -> dict[str, float]:
    """Median, 90th percentile, min and max of latencies, ms."""
    ms = sorted(1000.0 * s for s in seconds)
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p90_ms": p90,
        "min_ms": ms[0],
        "max_ms": ms[-1],
    }
