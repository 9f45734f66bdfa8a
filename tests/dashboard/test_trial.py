"""The trial-designer page: its functions, and the page in a real headless Chromium.

The browser test is one test on one page (pytest-xdist keeps it whole): a bad design shows
its problems by field and line, another library example is chosen, a small design (1,000
replicates × 4–6 subjects per arm, the shipped vancomycin design's 3-day horizon, 20
chunks) is uploaded, started, cancelled after a chunk, started again (it resumes from the
saved chunks) and run to completion; the power plot is drawn and the downloads are the
run's files. Screenshots go to ``$TWINSIM_SCREENSHOTS`` (default: a pytest temporary
folder; docs/screenshots/ holds the ones looked at for the docs)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
import pytest
from dash import no_update

from twinsim.dashboard._trial import (
    QUICK,
    _split,
    check_design,
    example_text,
    line_of,
    load_run,
    read_upload,
    results_view,
    run_folder,
    run_job,
)
from twinsim.scenarios import TrialError, load_trial, trial_examples

#: replicates of the design the browser test runs, cancels and resumes
REPLICATES = 1000


def _tiny(replicates: int = 2, sizes: str = "[4, 6]") -> str:
    """The shipped vancomycin design (two adaptive arms, four analyses), tiny."""
    text = example_text("vancomycin_auc_vs_trough")
    text = text.replace(f"replicates: {QUICK['replicates']}", f"replicates: {replicates}")
    return text.replace("sample_size: [10, 20, 30]", f"sample_size: {sizes}")


def test_quick_examples_are_the_shipped_designs_with_fewer_replicates():
    """Each quick example is the shipped design except for replicates and sample sizes."""
    for name, path in trial_examples().items():
        shipped = load_trial(path)
        check = check_design(example_text(name))
        assert check.ok, check.problems
        assert check.design.replicates == QUICK["replicates"]
        assert check.design.sample_size == QUICK["sample_size"]
        update = {"replicates": shipped.replicates, "sample_size": shipped.sample_size}
        assert check.design.model_copy(update=update) == shipped
        assert check_design(example_text(name, quick=False)).design == shipped


def test_problems_name_the_field_and_its_line():
    """Design-level, nested and unknown-field problems, YAML errors and an empty text:
    each message is the design's own, placed by field path and the line that holds it."""
    text = _tiny()
    lines = text.splitlines()

    def line(prefix: str, start: int = 0) -> int:
        return next(i for i, x in enumerate(lines) if i >= start and x.startswith(prefix)) + 1

    bad = text.replace("duration: 3 d", "duration: -3 d").replace(
        "  - {endpoint: auc24_day3, method: procova}", "  - {endpoint: auc24, method: procova}"
    )
    problems = check_design(bad).problems
    by_field = {p["field"]: p for p in problems}
    assert by_field["duration"]["line"] == line("duration:")
    assert by_field["duration"]["message"] == "must be > 0 h, got -72.0"
    assert by_field["visits"]["line"] == line("visits:")
    assert (
        "analyses[3].endpoint" in by_field
        and "got 'auc24'" in (by_field["analyses[3].endpoint"]["message"])
    )
    assert by_field["analyses[3].endpoint"]["line"] == line(
        "  - {endpoint: auc24_day3, method: procova}"
    )
    # a nested field: the second arm's titration (an AUC rule needs its peak sample time)
    nested = text.replace("      peak_after: 2\n", "")
    (problem,) = check_design(nested).problems
    assert problem["field"] == "arms[1].titration" and "peak_after" in problem["message"]
    assert problem["line"] == line("    titration:", line("  - name: AUC-guided"))
    # an unknown field is named with the fields known there
    typo = text.replace("seed: 2018", "sed: 2018")
    (problem,) = check_design(typo).problems
    assert problem["field"] == "sed" and "did you mean `seed`" in problem["message"]
    missing = "\n".join(x for x in lines if not x.startswith("drug:"))
    (problem,) = check_design(missing).problems
    assert problem == {
        "field": "drug",
        "line": None,
        "message": "is required but missing; add it to the spec",
    }
    (problem,) = check_design("drug: [vancomycin\n").problems
    assert (
        problem["field"] == "" and problem["line"] == 2 and "not valid YAML" in problem["message"]
    )
    assert "mapping" in check_design("- 1\n").problems[0]["message"]
    assert "empty" in check_design("  ").problems[0]["message"]


def test_split_and_line_of():
    assert _split("`arms[1].loading` `dose` must be ≥ 0 mg, got -5.0") == [
        ("arms[1].loading.dose", "must be ≥ 0 mg, got -5.0")
    ]
    assert _split("no field here") == [("", "no field here")]
    text = "drug: warfarin\narms:\n  - name: A\n    dose: 5\n  - {name: B, dose: 6}\n"
    assert line_of(text, "arms[1].dose") == 5  # a flow mapping: its item's line
    assert line_of(text, "arms[3]") == 2  # past the end: the enclosing field
    assert line_of(text, "visits") is None
    assert line_of("a: [", "a") is None


def test_upload_reads_text_and_refuses_binary_and_large_files():
    def url(raw: bytes) -> str:
        return "data:application/x-yaml;base64," + base64.b64encode(raw).decode()

    text, message = read_upload(url(b"drug: warfarin\n"), "d.yaml")
    assert text == "drug: warfarin\n" and message == "Read d.yaml (1 lines)."
    assert read_upload(url(b"\xff\xfe\x00"), "d.yaml")[0] is None
    text, message = read_upload(url(b"#" * 300_000), "big.yaml")
    assert text is None and "larger than 200 kB" in message
    assert read_upload(None, None) == (None, "design.yaml: nothing was uploaded")


def test_run_key_names_only_a_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TWINSIM_TRIAL_RUNS", str(tmp_path))
    with pytest.raises(
        TrialError, match=r"`run` must be a run key \(16 hex digits\), got '\.\./x'"
    ):
        run_folder("../x")
    with pytest.raises(TrialError, match="has not finished"):
        load_run("0123456789abcdef")


def test_run_job_streams_progress_and_results_read_back(tmp_path, monkeypatch):
    """The background job run in this process: progress after each chunk ending at 100 %,
    the outputs in the run's folder, and the page's view of the run read back from its
    chunks (power per sample size with its Monte-Carlo error, one row per analysis and
    size, dose paths for the adaptive arms). A second run of the design reads the saved
    chunks instead of simulating (same key)."""
    monkeypatch.setenv("TWINSIM_TRIAL_RUNS", str(tmp_path))
    seen: list[tuple[float, str]] = []
    key, status = run_job(seen.append, 1, _tiny())
    assert [label for _, label in seen] == [f"{i}/2 replicates done" for i in range(3)]
    assert seen[-1][0] == 100
    assert "Ran 2 replicates" in str(status)
    folder = run_folder(key)
    for name in ("report.html", "endpoints.csv", "nonmem_replicate0.csv", "summary.json"):
        assert (folder / name).is_file()
    table = pd.read_csv(io.StringIO((folder / "endpoints.csv").read_text()))
    assert len(table) == 2 * 12  # 2 replicates × 6 subjects × 2 arms
    view = results_view(load_run(key))
    summary = view["summary"]
    assert len(view["rows"]) == 4 * 2  # 4 analyses × 2 sample sizes
    assert "comparison" not in view["columns"]  # one comparison: in the power plot's title
    power = view["power"]
    assert len(power.data) == 4
    for trace, entry in zip(power.data, summary["analyses"], strict=True):
        assert list(trace.x) == [4, 6]
        expected = [1.96 * s["power_mc_se"] for s in entry["sizes"]]
        assert list(trace.error_y.array) == pytest.approx(expected)
    assert view["doses"] is not None and len(view["doses"].data) > 0
    again, status = run_job(lambda _: None, 2, _tiny())
    assert again == key and "2 of 2 chunks from an earlier run" in str(status)
    not_run, status = run_job(lambda _: None, 3, _tiny().replace("duration: 3 d", "duration: 0"))
    assert not_run is no_update and "fix the fields" in str(status).lower()
    # a run that lost a chunk is not read back (that would simulate in the server)
    next((folder / "chunks").glob("chunk_*.npz")).unlink()
    with pytest.raises(TrialError, match=r"has 1 of its 2 chunks .* run the design again"):
        load_run(key)


def test_trial_page_driven_in_chromium(chromium, shots: Path, tmp_path, monkeypatch) -> None:
    from twinsim.dashboard._browser import VIEWPORT, DashboardServer, launch_chromium

    monkeypatch.setenv("TWINSIM_TRIAL_RUNS", str(tmp_path / "runs"))
    timeout = 180_000
    with (
        DashboardServer(warm_up=False, log=shots / "trial-server.log") as server,
        launch_chromium() as browser,
    ):
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(timeout)
        page.goto(server.url)
        page.click(".navbar a:has-text('Trial designer')")
        page.wait_for_selector("#tr-text")
        assert "Trial designer" in page.inner_text(".navbar .nav-link.active")
        assert "replicates: 20" in page.input_value("#tr-text")
        assert "Valid design" in page.inner_text("#tr-problems")

        def set_design(text: str) -> None:
            page.fill("#tr-text", text)
            page.press("#tr-text", "Tab")  # the text area commits on blur

        def wait_text(selector: str, needle: str) -> None:
            page.wait_for_function(
                "([s, n]) => { const e = document.querySelector(s);"
                " return !!e && e.innerText.includes(n); }",
                arg=[selector, needle],
            )

        # a bad design: the field, its line and the design's message
        set_design(_tiny().replace("duration: 3 d", "duration: -3 d"))
        wait_text("#tr-problems", "must be > 0 h, got -72.0")
        problems = page.inner_text("#tr-problems")
        assert "duration" in problems and "line 22" in problems
        assert "is-invalid" in page.get_attribute("#tr-text", "class")
        page.evaluate("() => { document.querySelector('#tr-text').scrollTop = 230; }")
        page.screenshot(path=str(shots / "trial-invalid.png"), full_page=True)

        # another library example, as shipped
        page.select_option("#tr-example", "warfarin_genotype_guided")
        page.wait_for_function(
            "() => document.querySelector('#tr-text').value.includes('replicates: 200')"
        )
        assert "drug: warfarin" in page.input_value("#tr-text")
        # a small design, uploaded: start, cancel after the first chunk, start again
        # (resumes). 1,000 replicates in 20 chunks: a chunk of 4–6 subjects per arm takes
        # ~25 ms once compiled, so 6 replicates ran out before the page saw a partial count
        tiny = _tiny(replicates=REPLICATES, sizes="[4, 6]")
        page.set_input_files(
            "#tr-upload input[type=file]",
            files=[{"name": "tiny.yaml", "mimeType": "text/yaml", "buffer": tiny.encode()}],
        )
        wait_text("#tr-upload-feedback", "Read tiny.yaml")
        wait_text("#tr-problems", "Valid design")
        assert page.input_value("#tr-text") == tiny
        assert page.input_value("#tr-example") == "uploaded"  # no longer the example chosen
        page.click("#tr-run")
        page.wait_for_selector("#tr-cancel:not([disabled])")
        page.wait_for_function(
            "() => /^[1-9][0-9]{0,2}\\/1000 replicates/.test("
            "document.querySelector('#tr-progress-text').innerText)"
        )
        page.screenshot(path=str(shots / "trial-running.png"), full_page=True)
        page.click("#tr-cancel")
        wait_text("#tr-status", "Cancelled")
        page.wait_for_selector("#tr-run:not([disabled])")
        page.click("#tr-run")
        wait_text("#tr-status", f"Ran {REPLICATES} replicates")
        assert "chunks from an earlier run" in page.inner_text("#tr-status")
        page.wait_for_function(
            "() => { const g = document.querySelector('#tr-power .js-plotly-plot');"
            " return g && g.data && g.data.length === 4; }"
        )
        wait_text("#tr-progress-text", f"{REPLICATES}/{REPLICATES} replicates done")
        assert page.get_attribute("#tr-progress .progress-bar", "aria-valuenow") == "100"
        names = page.evaluate(
            "() => document.querySelector('#tr-trajectories .js-plotly-plot').data"
            ".map(t => t.name || '')"
        )
        assert "AUC-guided median" in names and "trough-guided median" in names
        page.wait_for_selector("#tr-doses .js-plotly-plot")
        assert "power ± MC SE" not in page.inner_text("#tr-table")  # the table's own header
        assert "auc24_day3:procova" in page.inner_text("#tr-table")
        title = page.evaluate(
            "() => document.querySelector('#tr-power .js-plotly-plot').layout.title.text"
        )
        assert f"{REPLICATES} replicates" in title and "AUC-guided vs trough-guided" in title
        page.screenshot(path=str(shots / "trial-results.png"), full_page=True)
        page.screenshot(path=str(shots / "trial-laptop.png"))

        # downloads: the run's report and endpoint table
        with page.expect_download() as download:
            page.click("#tr-dl-report")
        html = Path(download.value.path()).read_text(encoding="utf-8")
        assert download.value.suggested_filename.endswith("-report.html")
        assert "Power (share of replicates" in html and f"{REPLICATES} replicates" in html
        with page.expect_download() as download:
            page.click("#tr-dl-endpoints")
        table = pd.read_csv(download.value.path())
        assert len(table) == REPLICATES * 12 and set(table["arm"]) == {
            "trough-guided",
            "AUC-guided",
        }
        context.close()
