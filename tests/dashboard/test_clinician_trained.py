"""The clinician page on a trained latent model: ``twinsim dashboard --model MODEL_DIR``
offers it in the page's *Model* menu and the page's what-if (fit, forecasts,
recommendation) runs on it. The model is the untrained tiny one of ``tests/conftest.py``;
only the last test compiles (marked ``isolated``)."""

from __future__ import annotations

from pathlib import Path

import dash
import pytest
from typer.testing import CliRunner

from twinsim.cli import app as cli
from twinsim.dashboard import DashboardState, create_app
from twinsim.dashboard._clinician import compute, model_options
from twinsim.dashboard._form import check_form, example_form
from twinsim.scenarios import SpecError, trained_model
from twinsim.scenarios._whatif._session import WhatIfSession


def _form(model_dir: Path | str) -> dict:
    """The vancomycin example plus what the trained model reads (CYP3A5, ancestry)."""
    form = example_form("whatif_vancomycin_renal")
    return {**form, "model": str(model_dir), "gene_CYP3A5": "*3/*3", "ancestry": "european"}


def test_app_offers_the_trained_model_in_the_model_menu(latent_model_dir, find_component) -> None:
    state = DashboardState()
    create_app(state, warm_up=False, models=[latent_model_dir, latent_model_dir])
    folder = str(trained_model(latent_model_dir).folder)
    assert state.models == (folder,)  # once, as an absolute path
    page = next(p for p in dash.page_registry.values() if p["path"] == "/")
    select = find_component(page["layout"](), "cl-model")
    assert [(o["value"], o["label"]) for o in select.options] == [
        ("", "published (drug library)"),
        (folder, "trained: vanco-latent (vancomycin)"),
    ]
    assert select.value == ""  # the published model until the user picks one
    assert model_options([]) == [("", "published (drug library)")]


def test_create_app_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"`models\[0\]`.*is not a trained model folder"):
        create_app(warm_up=False, models=[tmp_path])


def test_form_sends_the_model_and_places_its_errors(latent_model_dir: Path) -> None:
    check = check_form(_form(latent_model_dir))
    assert check.ok and check.spec.trained_model().name == "vanco-latent"
    assert check.data["model"] == str(latent_model_dir)
    published = check_form({**_form(latent_model_dir), "model": ""})
    assert published.ok and published.spec.model is None and "model" not in published.data
    # a warfarin patient on the vancomycin model: said next to the Model menu
    warfarin = {**example_form("whatif_warfarin_cyp2c9_vkorc1"), "model": str(latent_model_dir)}
    check = check_form(warfarin)
    assert not check.ok
    assert "prior is 'vancomycin', but `drug` is 'warfarin'" in check.errors["model"]
    # what the trained model reads but the form leaves blank: said next to that field
    blank = check_form({**_form(latent_model_dir), "gene_CYP3A5": ""})
    assert "trained model 'vanco-latent'" in blank.errors["gene_CYP3A5"]


def test_cli_dashboard_passes_the_models_to_the_server(monkeypatch, latent_model_dir) -> None:
    import twinsim.dashboard as dashboard

    calls = []
    monkeypatch.setattr(dashboard, "serve", lambda *a, **k: calls.append((a, k)))
    runner = CliRunner()
    result = runner.invoke(cli, ["dashboard", "--no-warm-up", "--model", str(latent_model_dir)])
    assert result.exit_code == 0, result.output
    assert calls[-1][1]["models"] == (str(trained_model(latent_model_dir).folder),)
    assert "trained model offered:" in result.output
    bad = runner.invoke(cli, ["dashboard", "--model", str(latent_model_dir.parent)])
    assert bad.exit_code == 2 and "is not a trained model folder" in bad.output


@pytest.mark.isolated  # ODE engine compilation (~60-90 s)
def test_page_what_if_runs_on_the_trained_model(latent_model_dir: Path) -> None:
    """What the page's callback computes: the fit, forecasts and recommendation come from
    the trained model, and the recommendation card says which model answered."""
    from twinsim.dashboard._clinician import _recommendation

    form = {
        **_form(latent_model_dir),
        "fit": "map",
        "regimens": ["1000 mg over 1 h q12h"] + [""] * 3,
    }
    out = compute(form, WhatIfSession())
    assert out["status"] is None, out["status"]
    result = out["result"]
    assert result.spec.trained_model().name == "vanco-latent"
    assert result.provenance["trained_model"]["prior"] == "vancomycin"
    card = str(_recommendation(result))
    assert "Model: trained latent model vanco-latent (prior vancomycin" in card
