"""The clinician page's functions (what its callbacks call), the app and the CLI command."""

from __future__ import annotations

import base64

import pytest
from typer.testing import CliRunner

from twinsim.cli import app as cli
from twinsim.dashboard import create_app
from twinsim.dashboard._clinician import (
    accept,
    compute,
    history_from_text,
    report,
    upload_levels,
)
from twinsim.dashboard._form import example_form
from twinsim.scenarios._whatif._session import WhatIfSession


@pytest.fixture(scope="module")
def session() -> WhatIfSession:
    return WhatIfSession()


@pytest.fixture
def form() -> dict:
    return example_form("whatif_vancomycin_renal")


def _data_url(content: bytes) -> str:
    return "data:text/csv;base64," + base64.b64encode(content).decode()


def test_compute_forecasts_and_reuses_the_fit_on_a_regimen_change(session, form) -> None:
    out = compute(form, session)
    assert out["status"] is None and out["result"] is not None
    names = [f.name for f in out["result"].forecasts]
    assert names[:4] == form["regimens"]
    assert any(f.source.endswith("recommended") for f in out["result"].forecasts)
    changed = compute({**form, "regimens": ["1500 mg over 2 h q24h", "", "", ""]}, session)
    assert changed["timings"]["fit_cached"] and changed["timings"]["search_cached"]
    assert changed["result"].forecasts[0].name == "1500 mg over 2 h q24h"


def test_invalid_field_shows_its_message_and_computes_nothing(session, form) -> None:
    out = compute({**form, "weight": "-3"}, session)
    assert out["result"] is None
    assert out["status"][0] == "warning" and "Fix the highlighted fields" in out["status"][1]
    assert "must be between 0.3 and 400 kg, got -3 kg" in out["check"].errors["weight"]


def test_a_fit_that_fails_says_why(session, form) -> None:
    """A drug level before any dose: the twin refuses it and the page shows the reason."""
    levels = [{"time": 0, "value": "5", "output": "conc"}, *form["levels"]]
    out = compute({**form, "levels": levels}, session)
    assert out["result"] is None
    colour, text = out["status"]
    assert colour == "danger"
    assert text.startswith("The twin could not be fitted (PatientTwinError)")
    assert "is before any dose" in text


def test_report_is_the_library_report_of_the_spec_on_screen(session, form) -> None:
    data = compute(form, session)["check"].data
    name, html = report(data, session)
    assert name == "twinsim-whatif-vancomycin-V-01.html"
    assert html.startswith("<!DOCTYPE html>") and "<h2>Recommendation</h2>" in html
    assert "1250 mg over 90 min q24h" in html and "id: V-01" in html
    with pytest.raises(ValueError, match="no valid what-if on screen"):
        report(None, session)


def test_upload_reads_csv_and_nonmem_and_refuses_bad_files() -> None:
    csv = upload_levels(_data_url(b"time,value\n11.5,9.1\n23.5,<2 mg/L\n"), "lab.csv", "vancomycin")
    assert csv["ok"] and csv["history"] is None
    assert csv["levels"] == [
        {"time": 11.5, "value": "9.1", "output": "conc", "lloq": None},
        {"time": 23.5, "value": "<LLOQ", "output": "conc", "lloq": 2.0},
    ]
    assert csv["message"] == "Read 2 level(s) from lab.csv (CSV)."
    nonmem = (
        b"ID,TIME,AMT,DUR,EVID,MDV,DV\n1,0,1000,1,1,1,.\n1,12,1000,1,1,1,.\n1,23.5,0,0,0,0,9.9\n"
    )
    got = upload_levels(_data_url(nonmem), "nm.csv", "vancomycin")
    assert (
        got["ok"]
        and got["message"] == "Read 1 level(s) and 2 dose(s) from nm.csv (NONMEM data set)."
    )
    assert got["history"] == [
        {"time": 0.0, "amount": 1000.0, "duration": 1.0},
        {"time": 12.0, "amount": 1000.0, "duration": 1.0},
    ]
    inr = upload_levels(_data_url(b"ID,TIME,AMT,DV\n1,0,5,.\n1,72,0,1.4\n"), "inr.csv", "warfarin")
    assert inr["levels"][0]["output"] == "inr"
    big = upload_levels(_data_url(b"x" * 1_100_000), "big.csv", "vancomycin")
    assert not big["ok"] and "larger than 1 MB" in big["message"]
    broken = upload_levels("data:text/csv;base64,@@@", "x.csv", "vancomycin")
    assert not broken["ok"] and broken["levels"] is None
    bad = upload_levels(_data_url(b"time,value\n1,abc\n"), "bad.csv", "vancomycin")
    assert not bad["ok"] and "line 2: `value` could not read 'abc'" in bad["message"]
    assert not upload_levels(None, None, None)["ok"]


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00binary",
        b"time,value\n",
        b"ID,TIME,AMT,DV\n",
        b"ID,TIME,AMT,DV\n1,0,100\n",
        b"ID,TIME,AMT,DV,EVID\n1,0,100,.,4\n",
        b"ID,TIME,AMT,DV\n1,1e999,100,.\n1,2,0,nan\n",
        b'"time","value"\n"1,2\n',
        b"time;value\n1;2\n",
        "time,value\n1 h,5 µg/mL\n2 h,ça\n".encode(),
        b"ID TIME AMT DV\n1 0 -100 .\n1 1 0 -3\n",
    ],
)
def test_upload_of_odd_files_never_raises(content: bytes) -> None:
    got = upload_levels(_data_url(content), "odd.csv", "vancomycin")
    assert isinstance(got["message"], str) and got["message"]
    if got["ok"]:  # what was read is valid for the spec
        assert all(row["time"] >= 0 for row in got["levels"])


def test_accept_fills_a_free_slot_once() -> None:
    assert accept("750 mg every 24 h", ["750 mg every 24 h", "", "", ""]) == [
        "750 mg every 24 h",
        "",
        "",
        "",
    ]
    assert accept(None, ["a", None, "", ""]) == ["a", "", "", ""]


def test_history_from_text_uses_the_regimen_parser() -> None:
    rows = history_from_text(
        "loading 2 g over 2 h then 1 g over 1 h q12h x 2 doses", "vancomycin", "80"
    )
    assert [(r["time"], r["amount"], r["duration"]) for r in rows] == [
        (0.0, 2000.0, 2.0),
        (12.0, 1000.0, 1.0),
        (24.0, 1000.0, 1.0),
    ]
    assert "give a count" in history_from_text("1 g q12h", "vancomycin", None)
    assert "15 mg/kg" in history_from_text("15 mg/kg q12h x 2 doses", "vancomycin", "")
    assert "Type the doses" in history_from_text(" ", "vancomycin", None)


def test_app_has_the_three_pages_in_its_navigation() -> None:
    import dash

    app = create_app(warm_up=False)
    pages = list(dash.page_registry.values())
    assert [(p["path"], p["name"]) for p in pages] == [
        ("/", "Clinician"),
        ("/educator", "Educator"),
        ("/trial", "Trial designer"),
    ]
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    layout = client.get("/_dash-layout").get_json()
    text = str(layout)
    assert "'href': '/trial'" in text and "'href': '/educator'" in text
    assert "'disabled': True" not in text  # no page is announced as coming any more
    assert client.get("/educator").status_code == 200
    assert client.get("/trial").status_code == 200
    assert client.get("/assets/bootstrap.min.css").status_code == 200
    assert app.server.config["MAX_CONTENT_LENGTH"] == 4_000_000


def test_cli_serves_locally_by_default_and_warns_for_other_addresses(monkeypatch) -> None:
    import twinsim.dashboard as dashboard

    calls = []
    monkeypatch.setattr(dashboard, "serve", lambda *a, **k: calls.append((a, k)))
    runner = CliRunner()
    result = runner.invoke(cli, ["dashboard", "--no-warm-up"])
    assert result.exit_code == 0, result.output
    assert calls[-1] == (("127.0.0.1", 8050), {"warm_up": False, "models": ()})
    assert "http://127.0.0.1:8050/" in result.output and "warning" not in result.output
    result = runner.invoke(cli, ["dashboard", "--host", "0.0.0.0", "--port", "9000"])
    assert result.exit_code == 0 and calls[-1][0] == ("0.0.0.0", 9000)
    assert "warning: serving on 0.0.0.0" in result.output
    bad = runner.invoke(cli, ["dashboard", "--port", "0"])
    assert bad.exit_code == 2


def test_a_failed_warm_up_is_kept_and_the_app_is_ready_anyway() -> None:
    from twinsim.dashboard import DashboardState

    class Broken:
        def run(self, spec, **_):
            raise RuntimeError("no compiler today")

    state = DashboardState(session=Broken())
    state.warm_up()
    assert state.ready.is_set()
    assert state.warm_up_error == "RuntimeError: no compiler today"
    assert state.warm_up_seconds is not None


def test_the_importance_fit_is_offered_and_an_untrusted_correction_is_flagged(session, form):
    """The page fits by importance sampling when chosen; a Pareto k ≥ 0.7 (weights that
    cannot correct the Laplace posterior) puts a warning naming NUTS beside the advice."""
    import dataclasses

    from twinsim.dashboard._clinician import _id, _recommendation, layout

    assert "importance" in str(layout())
    out = compute({**form, "fit": "importance"}, session)
    assert out["status"] is None and out["result"].fit["method"] == "importance"
    shown = str(_recommendation(out["result"]))
    assert "IMPORTANCE" in shown and _id("importance-warning") not in shown
    fit = out["result"].fit
    untrusted = dataclasses.replace(
        out["result"], fit={**fit, "diagnostics": {**fit["diagnostics"], "pareto_k": 0.93}}
    )
    shown = str(_recommendation(untrusted))
    assert _id("importance-warning") in shown and "Pareto k = 0.93" in shown and "NUTS" in shown
