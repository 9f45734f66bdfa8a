"""Latent twin study: the hybrid against the mechanistic twin (MAP/Laplace) on virtual
vancomycin patients from three true processes (published, hidden genomic effect,
clearance falling over days; see ``twinsim.twin._latent._study``).

For each truth: train the hybrid on ``--train`` patients (15 mg/kg every 12 h, 4 sparse
levels, published residual error); then for held-out patients on the training regimen
and on a held-out regimen (25 mg/kg every 24 h, never seen in training), forecast the
true AUC over 48–72 h from the first 0, 1, 2 and 4 levels with each twin, and report the
median absolute percentage error (MdAPE) and the 90 % interval coverage overall, by sex
and by ancestry. The hybrid's posterior is its amortised encoder q(z | x, levels); the
mechanistic twin's is PatientTwin.fit("laplace") on the published model. The issue's
pass/fail checks are evaluated and written as they come out.

Not (yet) in this study: the neural-only latent ODE baseline, NUTS for the mechanistic
twin, the NLL of held-out levels, the recovered size of the genomic effect.

Run: ``nice .venv/bin/python benchmarks/latent_study.py`` (1,000 training patients per
truth, 100 held-out per regimen); writes ``benchmarks/results/latent_study.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from twinsim.priors import vancomycin_model  # noqa: E402
from twinsim.simulators import DosingEvents, predict_outputs  # noqa: E402
from twinsim.twin import (  # noqa: E402
    CovariateFeatures,
    LatentConfig,
    LatentData,
    LatentModel,
    Observation,
    PatientTwin,
    TrainingSettings,
    train_latent,
)
from twinsim.twin._latent._study import (  # noqa: E402
    KINDS,
    latent_covariates,
    observation_lists,
    simulate_patients,
)

LEVELS = (0, 1, 2, 4)
GRID = np.linspace(48.0, 72.0, 49)


def _auc(curves: np.ndarray) -> np.ndarray:
    return np.trapezoid(curves, GRID, axis=-1)


def hybrid_aucs(model: LatentModel, cohort, k: int, n_draws: int) -> np.ndarray:
    """AUC draws ``[patient, draw]`` of the hybrid from the first k levels."""
    cov = latent_covariates(cohort)
    data = LatentData.build(model, cov, cohort["doses"], observation_lists(cohort, k),
                            n_observations=4)  # fmt: skip
    out = []
    for i in range(len(cohort["doses"])):
        post = model.encode(data, i)
        f = model.forecast(latent_covariates(cohort, [i]), post, [cohort["doses"][i]], GRID,
                           n_draws=n_draws, seed=i)  # fmt: skip
        out.append(_auc(f["draws"][0, :, :, 0]))
    return np.stack(out)


def mechanistic_aucs(cohort, k: int, n_draws: int) -> np.ndarray:
    pm = vancomycin_model()
    out = []
    for i in range(len(cohort["doses"])):
        cov = {c: float(cohort["covariates"][c][i]) for c in pm.covariate_names}
        obs = [Observation(float(t), float(v)) for t, v in observation_lists(cohort, k)[i]]
        twin = PatientTwin.create("vancomycin", cov, cohort["doses"][i], obs)
        post = twin.fit("laplace" if k else "prior")
        eta = post.eta_draws(n_draws, seed=i)
        params = pm.individual_parameters({c: np.full(n_draws, v) for c, v in cov.items()}, eta)
        events = DosingEvents.from_doses([cohort["doses"][i]]).broadcast(n_draws)
        out.append(_auc(np.asarray(predict_outputs(pm.structural, params, events, GRID))[..., 0]))
    return np.stack(out)


def summarise(draws: np.ndarray, truth: np.ndarray, cohort) -> dict:
    median = np.median(draws, axis=1)
    low, high = np.quantile(draws, [0.05, 0.95], axis=1)
    inside = (truth >= low) & (truth <= high)
    cov = cohort["covariates"]
    groups = {"female": cov["female"] == 1, "male": cov["female"] == 0}
    groups.update({a: cov["ancestry"] == a for a in np.unique(cov["ancestry"])})
    return {
        "mdape_percent": float(100 * np.median(np.abs(median - truth) / truth)),
        "coverage90": float(inside.mean()),
        "coverage90_by_group": {g: float(inside[m].mean()) for g, m in groups.items() if m.any()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "latent_study.json")
    )
    args = parser.parse_args()
    result: dict = {"load_before": os.getloadavg(), "args": vars(args), "truths": {}}
    for kind in args.kinds.split(","):
        t0 = time.perf_counter()
        train = simulate_patients(kind, args.train, seed=0)
        cov = latent_covariates(train)
        model = LatentModel.create(
            vancomycin_model(), CovariateFeatures.fit(cov), LatentConfig(), seed=0
        )
        data = LatentData.build(model, cov, train["doses"], observation_lists(train))
        settings = TrainingSettings(epochs=args.epochs, batch_size=64, patience=3, seed=0)
        trained = train_latent(model, data, settings)
        entry: dict = {"train_seconds": time.perf_counter() - t0, "history": trained.history}
        for regimen in ("train", "heldout"):
            test = simulate_patients(kind, args.test, seed=1000, regimen=regimen)
            truth = test["auc24"]
            rows = {}
            for k in LEVELS:
                hyb = summarise(hybrid_aucs(trained.model, test, k, args.draws), truth, test)
                mech = summarise(mechanistic_aucs(test, k, args.draws), truth, test)
                rows[str(k)] = {"hybrid": hyb, "mechanistic_laplace": mech}
                print(kind, regimen, k, "hybrid", hyb["mdape_percent"], hyb["coverage90"],
                      "mech", mech["mdape_percent"], mech["coverage90"], flush=True)  # fmt: skip
            entry[regimen] = rows
        result["truths"][kind] = entry
        checks = {}
        for regimen in ("train", "heldout"):
            h = np.mean([entry[regimen][str(k)]["hybrid"]["mdape_percent"] for k in LEVELS])
            m = np.mean(
                [entry[regimen][str(k)]["mechanistic_laplace"]["mdape_percent"] for k in LEVELS]
            )
            ratio = float(h / m)
            if kind == "published":
                checks[f"{regimen}: hybrid error within 5 % of mechanistic"] = bool(ratio <= 1.05)
            else:
                checks[f"{regimen}: hybrid error ≥ 25 % lower than mechanistic"] = bool(
                    ratio <= 0.75
                )
            checks[f"{regimen}: hybrid/mechanistic mean MdAPE ratio"] = ratio
            covs = [entry[regimen][str(k)]["hybrid"]["coverage90"] for k in LEVELS]
            checks[f"{regimen}: hybrid coverage 85-95 % at every k"] = bool(
                all(0.85 <= c <= 0.95 for c in covs)
            )
        entry["checks"] = checks
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        result["load_after"] = os.getloadavg()
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v["checks"] for k, v in result["truths"].items()}, indent=2))


if __name__ == "__main__":
    main()
