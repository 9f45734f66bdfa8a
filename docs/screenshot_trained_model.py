"""Screenshot of the clinician page answering on a trained latent model.

Makes a model folder (an untrained tiny latent model over vancomycin: what
``twinsim train`` writes, with the published model's numbers), serves
``twinsim dashboard --model FOLDER`` on a free port, picks the model in the page's
*Model* menu, gives the covariates it reads (CYP3A5, ancestry) and saves
``docs/screenshots/clinician_trained_model.png`` once the forecast is drawn. Needs
Playwright and Debian's chromium (``make chromium``)::

    .venv/bin/python docs/screenshot_trained_model.py

The first what-if on the model compiles its ODE engine (minutes on a shared machine).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from twinsim.dashboard._browser import DashboardServer, launch_chromium, set_field
from twinsim.priors import vancomycin_model
from twinsim.scenarios import save_latent_model
from twinsim.twin import CovariateFeatures, LatentConfig, LatentModel

OUT = Path(__file__).resolve().parent / "screenshots" / "clinician_trained_model.png"
TRAINING = {
    "weight": [55.0, 70.0, 90.0, 120.0], "crcl": [25.0, 60.0, 100.0, 140.0],
    "dialysis": [0.0] * 4, "age": [30.0, 50.0, 70.0, 80.0], "female": [1.0, 0.0, 1.0, 0.0],
    "cyp3a5": ["*1/*1", "*1/*3", "*3/*3", "*3/*3"],
    "ancestry": ["european", "african", "east_asian", "european"],
}  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vanco-icu-latent"
        config = LatentConfig(latent_dim=4, hidden=8, correction_hidden=4)
        model = LatentModel.create(vancomycin_model(), CovariateFeatures.fit(TRAINING), config)
        save_latent_model(model, folder, {"note": "untrained demonstration model"})
        log = Path(tmp) / "server.log"
        with DashboardServer(warm_up=False, log=log, models=[folder]) as server:
            with launch_chromium() as browser:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(900_000)
                page.goto(server.url)
                page.wait_for_selector("#cl-model")
                page.select_option("#cl-model", str(folder))
                set_field(page, "gene_CYP3A5", "*3/*3")
                page.select_option("#cl-ancestry", "european")
                page.wait_for_function(
                    "() => { const e = document.querySelector('#cl-model-used');"
                    " return !!e && e.innerText.includes('trained latent model'); }"
                )
                page.wait_for_timeout(1500)  # the plot's transition
                OUT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(OUT), full_page=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
