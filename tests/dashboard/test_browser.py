"""The clinician page in a real headless Chromium, driven by clicking and typing.

The server is ``twinsim dashboard`` in a subprocess on a free port; the browser is
Debian's ``chromium`` (installed by ``make test``) driven by Playwright. One test runs
the steps in order on one page (so pytest-xdist cannot split them): change the genotype,
add a level, compare regimens (timing each update), accept the recommendation, upload
levels, make the fit fail, download the report, fill the doses from text. Screenshots go to ``$TWINSIM_SCREENSHOTS`` (default: a pytest
temporary folder). No timing is asserted: the update latencies are printed and written
to ``latency.json`` next to the screenshots.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)

from twinsim.dashboard._browser import (
    VIEWPORT,
    DashboardServer,
    chromium_path,
    graph_trace_names,
    launch_chromium,
    set_field,
    summarise,
    time_regimen_change,
    wait_ready,
)

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="no Chromium at /usr/bin/chromium: install Debian's chromium and chromium-driver "
    "(make test does) or set TWINSIM_CHROMIUM",
)

TIMEOUT_MS = 180_000


def _text(page, selector: str) -> str:
    return page.inner_text(selector).strip()


def _wait_text(page, selector: str, needle: str) -> None:
    page.wait_for_function(
        "([s, n]) => { const e = document.querySelector(s); return !!e && e.innerText.includes(n); }",
        arg=[selector, needle],
    )


def _measured_points(page) -> int:
    return page.evaluate(
        "() => { const g = document.querySelector('#cl-graph .js-plotly-plot');"
        " const t = (g.data || []).find(t => (t.name || '').startsWith('measured'));"
        " return t ? t.x.length : 0; }"
    )


def _page_opens_with_the_example_forecast(page, shots: Path) -> None:
    """Navigation bar, the example's four regimens and the recommendation with units."""
    assert "Clinician" in _text(page, ".navbar")
    links = page.locator(".navbar .nav-link")
    assert links.all_inner_texts() == ["Clinician", "Educator", "Trial designer"]
    names = graph_trace_names(page)
    for regimen in ("1000 mg over 1 h q12h", "750 mg over 1 h q12h", "1250 mg over 90 min q24h"):
        assert any(n.startswith(regimen + " (PTA") for n in names), names
    assert _measured_points(page) == 2
    card = _text(page, "#cl-recommendation")
    assert "PTA" in card and "%" in card and "mg*h/L" in card and "mg/L" in card
    header = _text(page, "#cl-table thead")
    assert "AUC24 (mg*h/L)" in header and "trough (mg/L)" in header and "PTA (%)" in header
    page.screenshot(path=shots / "clinician.png", full_page=True)
    page.screenshot(path=shots / "clinician_laptop.png")


def _genotype_change_and_invalid_genotype_message(page, shots: Path) -> None:
    """A typed diplotype shows its phenotype; an unknown allele shows the spec's message."""
    set_field(page, "gene_CYP2C9", "*3/*1")
    _wait_text(page, "#cl-gene_CYP2C9-help", "*1/*3: intermediate metabolizer")
    set_field(page, "gene_CYP2C9", "*1/*99")
    _wait_text(page, "#cl-gene_CYP2C9-feedback", "not a known CYP2C9 allele")
    assert "is-invalid" in page.get_attribute("#cl-gene_CYP2C9", "class")
    # the message instead of "not tested" (the note has its own callback: wait for it)
    page.wait_for_function(
        "() => document.querySelector('#cl-gene_CYP2C9-help').innerText.trim() === ''"
    )
    _wait_text(page, "#cl-status", "Fix the highlighted fields")
    page.locator("#cl-gene_CYP2C9").scroll_into_view_if_needed()
    page.screenshot(path=shots / "clinician_invalid_field.png")
    set_field(page, "gene_CYP2C9", "")
    page.wait_for_function(
        "() => document.querySelector('#cl-gene_CYP2C9-feedback').innerText.trim() === ''"
    )
    page.wait_for_function("() => document.querySelector('#cl-status').innerText.trim() === ''")


def _edit_cell(page, table: str, row: int, column: str, text: str) -> None:
    cell = page.locator(f'#cl-{table} td[data-dash-row="{row}"][data-dash-column="{column}"]')
    cell.click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def _add_a_level_refits_the_twin(page, shots: Path) -> None:
    """A third level typed into the table is drawn and used by the fit."""
    page.click("#cl-add-level")
    page.wait_for_selector('#cl-levels td[data-dash-row="2"][data-dash-column="time"]')
    _edit_cell(page, "levels", 2, "time", "23.5")
    _edit_cell(page, "levels", 2, "value", "17.2")
    page.wait_for_function(
        "() => { const g = document.querySelector('#cl-graph .js-plotly-plot');"
        " const t = (g.data || []).find(t => (t.name || '').startsWith('measured'));"
        " return t && t.x.length === 3; }"
    )
    assert "3 level(s)" in _text(page, "#cl-recommendation")


def _compare_regimens_side_by_side_and_time_updates(page, shots: Path) -> None:
    """Each regimen typed in a slot is forecast; the update latency is measured."""
    regimens = [
        "1500 mg over 2 h q24h",
        "1250 mg over 1 h q24h",
        "500 mg over 1 h q12h",
        "1000 mg over 1 h q36h",
        "1750 mg over 2 h q24h",
        "750 mg over 1 h q24h",
        "1250 mg over 90 min q12h",
        "1500 mg over 2 h q36h",
        "1000 mg over 2 h q24h",
    ]
    time_regimen_change(page, 1, "2000 mg over 2 h q24h")  # warm: not timed
    latencies = [time_regimen_change(page, 1, text) for text in regimens]
    names = graph_trace_names(page)
    assert any(n.startswith("1000 mg over 2 h q24h (PTA") for n in names)
    assert not any(n.startswith("750 mg over 1 h q12h (PTA") for n in names)  # replaced
    summary = summarise(latencies)
    (shots / "latency.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwhat-if update latency in the browser: {summary}")
    page.screenshot(path=shots / "clinician_compare.png", full_page=True)


def _accept_recommendation_puts_it_in_a_regimen_slot(page, shots: Path) -> None:
    """The recommended regimen goes into a slot and is forecast as a candidate."""
    page.wait_for_selector("#cl-accept:not([disabled])")
    recommended = _text(page, "#cl-recommended-name")
    set_field(page, "regimen_3", "")
    page.wait_for_function("() => document.querySelector('#cl-regimen_3').value === ''")
    page.click("#cl-accept")
    page.wait_for_function(
        "name => [0, 1, 2, 3].some(i => document.querySelector('#cl-regimen_' + i).value === name)",
        arg=recommended,
    )
    # now a candidate the search also finds: one row (marked ★), one curve
    page.wait_for_function(
        "name => [...document.querySelectorAll('#cl-table tbody tr')].filter("
        " r => r.cells[0].innerText.startsWith(name)).length === 1 && document.querySelector("
        "'#cl-regimen_3').value === name",
        arg=recommended,
    )
    names = [n for n in graph_trace_names(page) if n.startswith(recommended + " (PTA")]
    assert len(names) == 1


def _upload_levels_csv_and_bad_file(page, shots: Path) -> None:
    """A CSV of levels fills the table; a bad file shows its line and column."""
    upload = "#cl-upload input[type=file]"
    good = b"time,value\n37.5 h,27.1\n47.5,23.9 mg/L\n"
    page.set_input_files(
        upload, files=[{"name": "levels.csv", "mimeType": "text/csv", "buffer": good}]
    )
    _wait_text(page, "#cl-upload-feedback", "Read 2 level(s) from levels.csv (CSV)")
    page.wait_for_function(
        "() => document.querySelectorAll('#cl-levels td[data-dash-column=\"time\"]').length === 2"
    )
    big = b"time,value\n" + b"1,2\n" * 300_000  # 1.2 MB
    page.set_input_files(upload, files=[{"name": "big.csv", "mimeType": "text/csv", "buffer": big}])
    _wait_text(page, "#cl-upload-feedback", "big.csv is larger than 1 MB")
    bad = b"time,value\n12,abc\n"
    page.set_input_files(upload, files=[{"name": "bad.csv", "mimeType": "text/csv", "buffer": bad}])
    _wait_text(page, "#cl-upload-feedback", "line 2: `value` could not read 'abc'")


def _failed_fit_says_why_on_the_page(page, shots: Path) -> None:
    """A level before any dose cannot be fitted: the page says why and recovers."""
    page.click("#cl-add-level")
    page.wait_for_selector('#cl-levels td[data-dash-row="2"][data-dash-column="time"]')
    _edit_cell(page, "levels", 2, "time", "0")
    _edit_cell(page, "levels", 2, "value", "5")
    _wait_text(page, "#cl-status", "could not be fitted")
    assert "before any dose" in _text(page, "#cl-status")
    _wait_text(page, "#cl-table", "No forecast.")  # nothing stale is left on screen
    page.screenshot(path=shots / "clinician_failed_fit.png", full_page=True)
    row = page.locator("#cl-levels tr").filter(has=page.locator('td[data-dash-row="2"]'))
    row.locator("td.dash-delete-cell").click()
    page.wait_for_function("() => document.querySelector('#cl-status').innerText.trim() === ''")
    _wait_text(page, "#cl-table", "PTA (%)")


def _download_report_of_what_is_on_screen(page, shots: Path) -> None:
    """The HTML report is the library's what-if report of the spec on screen."""
    recommended = _text(page, "#cl-recommended-name")
    with page.expect_download() as download:
        page.click("#cl-download-button")
    path = shots / download.value.suggested_filename
    download.value.save_as(path)
    html = path.read_text(encoding="utf-8")
    assert path.name.startswith("twinsim-whatif-vancomycin-V-01")
    assert "<h2>Recommendation</h2>" in html and recommended in html
    assert "id: V-01" in html  # the spec on screen, as YAML


def _doses_given_filled_from_regimen_text(page, shots: Path) -> None:
    """Regimen text fills the dosing table; text the parser refuses shows its message."""
    page.fill("#cl-history-text", "1000 mg over 1 h q12h x 3 doses")
    page.click("#cl-history-fill")
    page.wait_for_function(
        "() => document.querySelectorAll('#cl-history td[data-dash-column=\"time\"]').length === 3"
    )
    page.fill("#cl-history-text", "1 g q12h")
    page.click("#cl-history-fill")
    _wait_text(page, "#cl-history-feedback", "repeats every 12 h to the end")


#: The steps, in order: each starts from the page the one before left.
STEPS = (
    _page_opens_with_the_example_forecast,
    _genotype_change_and_invalid_genotype_message,
    _add_a_level_refits_the_twin,
    _compare_regimens_side_by_side_and_time_updates,
    _accept_recommendation_puts_it_in_a_regimen_slot,
    _upload_levels_csv_and_bad_file,
    _failed_fit_says_why_on_the_page,
    _download_report_of_what_is_on_screen,
    _doses_given_filled_from_regimen_text,
)


def test_clinician_page_driven_in_chromium(shots: Path) -> None:
    """One server, one page, the steps in order (one test: xdist keeps it whole)."""
    with DashboardServer(log=shots / "server.log") as server, launch_chromium() as browser:
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url)
        wait_ready(page)
        for step in STEPS:
            step(page, shots)
        context.close()
