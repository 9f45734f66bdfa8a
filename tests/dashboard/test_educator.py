"""The educator page: its functions, and the page in a real headless Chromium.

The browser test is one test on one page (pytest-xdist keeps it whole): generate a set,
browse to the second case, try a dose, reveal the key, export. Screenshots go to
``$TWINSIM_SCREENSHOTS`` (default: a pytest temporary folder; docs/screenshots/ holds the
ones looked at for the docs).
"""

from __future__ import annotations

from pathlib import Path

from twinsim.dashboard._educator import case_view, generate, tried


def test_generate_reports_bad_input_and_tried_dose_matches_the_key():
    """A bad form value gives the spec's message; the dose keyed as correct, tried, lands
    within the target (the same simulation as the key)."""
    case_set, error = generate("theophylline_smoking_cessation", 0, 11)
    assert case_set is None and "`n_cases`" in error
    case_set, error = generate("theophylline_smoking_cessation", 1, 11)
    assert error is None
    case = case_set.cases[0]
    choose = case["questions"][0]
    key = next(o for o in choose["options"] if o["correct"])
    figure, sentence = tried(case_set.template, case, key["value"])
    assert ("within the target" in sentence) == ("within" in choose["criterion"])
    assert any(t.name.startswith("your dose") for t in figure.data)
    student, instructor = case_view(case, key=False), case_view(case, key=True)
    assert "Answer:" not in student["questions"] and "Answer:" in instructor["questions"]


def test_educator_page_driven_in_chromium(chromium, shots: Path) -> None:
    from twinsim.dashboard._browser import VIEWPORT, DashboardServer, launch_chromium

    timeout = 240_000
    with (
        DashboardServer(warm_up=False, log=shots / "educator-server.log") as server,
        launch_chromium() as browser,
    ):
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(timeout)
        page.goto(server.url + "educator")
        page.wait_for_selector("#app-ready.bg-success")
        page.wait_for_selector("#ed-generate")
        assert "Educator" in page.inner_text(".navbar .nav-link.active")
        page.fill("#ed-n", "2")
        page.fill("#ed-seed", "11")
        page.click("#ed-generate")
        page.wait_for_function(
            "() => document.querySelector('#ed-message').innerText.includes('2 cases generated')"
        )
        page.wait_for_function(
            "() => { const g = document.querySelector('#ed-graph .js-plotly-plot');"
            " return g && g.data && g.data.length >= 2; }"
        )
        page.wait_for_function(
            "() => document.querySelector('#ed-vignette').innerText.includes('year-old')"
        )
        assert "Answer:" not in page.inner_text("#ed-questions")
        page.screenshot(path=str(shots / "educator-case.png"), full_page=True)
        # the second case of the set
        second = "theophylline_smoking_cessation-11-002"
        page.click("#ed-case label:has-text('Case 2')")
        page.wait_for_function(
            "id => document.querySelector('#ed-vignette').innerText.includes(id)", arg=second
        )
        # try a dose: the patient's response is drawn with a verdict
        page.fill("#ed-dose", "150")
        page.click("#ed-try")
        page.wait_for_function(
            "() => document.querySelector('#ed-tried').innerText.includes('150 mg')"
        )
        text = page.inner_text("#ed-tried")
        assert "the target 10–20 mg/L" in text and ("within" in text or "outside" in text)
        names = page.evaluate(
            "() => document.querySelector('#ed-graph .js-plotly-plot').data.map(t => t.name)"
        )
        assert any(n.startswith("your dose: 150 mg") for n in names), names
        page.screenshot(path=str(shots / "educator-try-dose.png"), full_page=True)
        # reveal the key
        page.check("#ed-key input")
        page.wait_for_function(
            "() => document.querySelector('#ed-questions').innerText.includes('Answer:')"
        )
        page.screenshot(path=str(shots / "educator-key.png"), full_page=True)
        # export the instructor version
        with page.expect_download() as download:
            page.click("#ed-export-instructor")
        path = download.value.path()
        html = Path(path).read_text(encoding="utf-8")
        assert "Answer:" in html and "Plotly.newPlot" in html
        context.close()
