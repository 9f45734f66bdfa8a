"""``twinsim dashboard`` serves with waitress (a production WSGI server), not Flask's own."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from twinsim.dashboard._browser import DashboardServer


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_the_dashboard_command_serves_with_waitress(tmp_path, inherited) -> None:
    """The real command in a subprocess: the HTTP ``Server`` header is waitress's (Flask's
    development server answers ``Werkzeug/...``), the page is served, and Ctrl+C (SIGINT)
    stops it cleanly — also when started by a process that ignores SIGINT (the child
    inherits that; without resetting it the server never stopped and was killed)."""
    log = tmp_path / "server.log"
    previous = signal.getsignal(signal.SIGINT)
    if inherited == "ignored":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        server = DashboardServer(warm_up=False, log=log).start()
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        with urllib.request.urlopen(server.url, timeout=30) as response:
            assert response.status == 200
            assert response.headers["Server"] == "waitress"
            assert b"twinsim" in response.read()
    finally:
        # the interpreter's exit after Ctrl+C took 3-6 s on the loaded 2-core machine
        server.stop(timeout=120)
    assert server.process is not None and server.process.returncode == 0, log.read_text()
    assert "Werkzeug" not in log.read_text() and "development server" not in log.read_text()


def test_serve_passes_the_app_to_waitress_and_debug_uses_dash(monkeypatch) -> None:
    import dash
    import waitress

    from twinsim.dashboard import _app

    served = []
    monkeypatch.setattr(waitress, "serve", lambda app, **kw: served.append((app, kw)))
    ran = []
    monkeypatch.setattr(dash.Dash, "run", lambda self, **kw: ran.append(kw))
    _app.serve("127.0.0.1", 8123, warm_up=False)
    ((wsgi, options),) = served
    assert options["host"] == "127.0.0.1" and options["port"] == 8123
    assert options["max_request_body_size"] == _app.MAX_REQUEST_BYTES
    assert wsgi.name.startswith("twinsim.dashboard")  # the Dash app's Flask server
    assert ran == []
    _app.serve("127.0.0.1", 8124, warm_up=False, debug=True)
    assert ran == [{"host": "127.0.0.1", "port": 8124, "debug": True, "use_reloader": False}]
    assert len(served) == 1
