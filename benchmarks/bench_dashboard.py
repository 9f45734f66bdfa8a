"""Dashboard responsiveness: a what-if update measured in a real browser.

Run: ``nice .venv/bin/python benchmarks/bench_dashboard.py`` (writes
``benchmarks/results/dashboard.json``; needs Debian's chromium and playwright, see
``make test``). It starts ``twinsim dashboard`` on a free port, opens the clinician page
in headless Chromium at laptop size (1366×768), waits for the warm-up and the first
forecast (the vancomycin example: 72 y, 80 kg, SCr 1.9 mg/dL, 1 g q12h × 4, a peak and a
trough; four regimens plus the three the twin recommends, 500 posterior draws), then
types ``--changes`` different regimens into one slot, one after another. Each latency is
the time from pressing Enter in the regimen field to the new regimen's curve being in
the plot (polled every animation frame); the first change is not timed (warm). The
server's own time for each update (form validation + forecast, shown on the page) is
recorded too, so the browser's share (transfer, figure and rendering) can be read off.

``--example whatif_warfarin_cyp2c9_vkorc1 --horizon "56 d"`` loads the warfarin example
from the page's example list instead (65 y, CYP2C9 *1/*3, VKORC1 A/A, 5 mg daily × 4, INRs
on days 2–4; four candidates plus the three recommended, 500 draws) and sets the forecast
horizon (8 weeks: issue 12's warfarin what-if), recording how long that first what-if
took in the browser, then types warfarin regimens
(``0.5``…``10 mg q24h``) into slot B.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from twinsim.dashboard._browser import (
    _DRAWN,
    VIEWPORT,
    DashboardServer,
    last_request_ms,
    launch_chromium,
    set_field,
    summarise,
    time_regimen_change,
    wait_ready,
)
from twinsim.dashboard._form import example_form

RESULTS = Path(__file__).parent / "results" / "dashboard.json"

#: The example's regimens (slots A, C and D keep theirs).
_ON_PAGE = {"1000 mg over 1 h q12h", "750 mg over 1 h q12h", "1000 mg over 1 h q24h"}

#: Regimens typed into slot B, in turn (all new to the page, so each one is forecast).
REGIMENS = [
    text
    for interval in (12, 24, 36)
    for amount in (500, 750, 1000, 1250, 1500, 1750, 2000)
    for hours in (1, 2)
    if (text := f"{amount} mg over {hours} h q{interval}h") not in _ON_PAGE
]


#: Warfarin regimens typed into slot B (the example's candidates are 5, 3, 2 and 1 mg q24h).
WARFARIN_REGIMENS = [
    f"{mg:g} mg q24h" for mg in np.arange(0.5, 10.01, 0.5) if mg not in (1.0, 2.0, 3.0, 5.0)
]
DEFAULT_EXAMPLE = "whatif_vancomycin_renal"


def _load_example(page, example: str, horizon: str | None) -> dict[str, float]:
    """Choose ``example`` in the page's list, load it and wait for its forecast; then set
    the horizon (and wait for that forecast). Returns the seconds each took in the browser
    (the example's first what-if: fit, regimen search, forecast, compilation included)."""
    form = example_form(example)
    first = next(r for r in form["regimens"] if r)
    page.select_option("#cl-example", example)
    started = time.perf_counter()
    page.click("#cl-load-example")
    page.wait_for_function(_DRAWN, arg=first, polling="raf", timeout=600_000)
    seconds = {"example_s": round(time.perf_counter() - started, 2)}
    if horizon:
        started = time.perf_counter()
        before = _server_ms(page)
        set_field(page, "horizon", horizon)
        page.wait_for_function(
            "before => { const m = document.querySelector('#cl-timing').innerText"
            ".match(/Updated in (\\d+) ms/); return m && Number(m[1]) !== before; }",
            arg=before, polling="raf", timeout=600_000,
        )  # fmt: skip
        seconds["horizon_s"] = round(time.perf_counter() - started, 2)
    return seconds


def _server_ms(page) -> float | None:
    match = re.search(r"Updated in (\d+) ms", page.inner_text("#cl-timing"))
    return float(match.group(1)) if match else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20, help="timed regimen changes")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/dashboard.json "
        "(results/dashboard_warfarin.json for a warfarin example)",
    )  # fmt: skip
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the final page")
    parser.add_argument("--example", default=DEFAULT_EXAMPLE, help="what-if example to load")
    parser.add_argument("--horizon", default=None, help='forecast horizon to set, e.g. "56 d"')
    args = parser.parse_args(argv)
    warfarin = "warfarin" in args.example
    if args.out is None:
        args.out = RESULTS.with_name("dashboard_warfarin.json") if warfarin else RESULTS
    regimens = WARFARIN_REGIMENS if warfarin else REGIMENS
    if args.changes + 1 > len(regimens):
        parser.error(f"--changes must be at most {len(regimens) - 1}")

    started = time.perf_counter()
    with DashboardServer() as server, launch_chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(300_000)
        page.goto(server.url)
        wait_ready(page)
        ready_s = time.perf_counter() - started
        first_whatif = None
        if args.example != DEFAULT_EXAMPLE or args.horizon:
            first_whatif = _load_example(page, args.example, args.horizon)
        time_regimen_change(page, 1, regimens[0])  # warm, not timed
        browser_s, server_ms, request_ms = [], [], []
        for text in regimens[1 : args.changes + 1]:
            browser_s.append(time_regimen_change(page, 1, text))
            server_ms.append(_server_ms(page))
            request_ms.append(last_request_ms(page))
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
    summary = summarise(browser_s)
    measured = [m for m in server_ms if m is not None]
    requests = [r for r in request_ms if r is not None]
    record = {
        "what": "clinician page: time from Enter in a regimen field to the new curve drawn",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "browser": "Debian chromium, headless, 1366x768 (Playwright)",
        },
        "case": (
            f"{args.example} (horizon {args.horizon or 'of the example'}): 4 regimens + 3 "
            "recommended, 500 draws, a forecast time every 0.5 h; fit and regimen search reused"
        ),
        "update_latency_ms": summary,
        "runs_ms": [round(1000 * s, 1) for s in browser_s],
        "server_ms": {
            "what": "form validation + forecast, as shown on the page ('Updated in ...')",
            "median": statistics.median(measured) if measured else None,
            "runs": measured,
        },
        "request_ms": {
            "what": "the callback's HTTP request in the browser (server work, figures, JSON, transfer)",
            "median": statistics.median(requests) if requests else None,
            "runs": [round(r, 1) for r in requests],
        },
        "time_to_ready_s": round(ready_s, 1),
        "first_whatif": first_whatif
        and {
            "what": "the example's first what-if in the browser, from the click on 'load' to its "
            "curve drawn (fit, regimen search, forecast; compilation included unless cached), "
            "then the horizon set (forecast and search again)",
            **first_whatif,
            "compilation_cache": os.environ.get("TWINSIM_CACHE_DIR", "default"),
        },
        "target": "< 1 s after warm-up (issue 12, warfarin, 8 weeks)"
        if warfarin
        else "< 500 ms after warm-up (issue 5)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["update_latency_ms"], indent=2))
    print(
        f"server median {record['server_ms']['median']} ms, request median "
        f"{record['request_ms']['median']} ms; wrote {args.out}"
    )
    return record


if __name__ == "__main__":
    main()
