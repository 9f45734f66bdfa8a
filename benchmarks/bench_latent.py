"""Speed of the latent twin on this machine: training on virtual vancomycin patients,
encoding a patient and forecasting four regimens with 90 % bands, sampling 10,000
virtual trajectories. First calls (which compile) and repeat calls are timed apart; the
machine's load average is recorded before and after (the box is shared: other agents'
jobs run at the same time, so the times are upper bounds of an idle machine's).

Run: ``nice .venv/bin/python benchmarks/bench_latent.py [--patients 1000 --epochs 10]``;
``--model DIR`` skips training and times a trained model folder (e.g. one of
``benchmarks/latent_study.py``'s), adding the twin's path: ``PatientTwin`` on the latent
model, Laplace fit to two levels and four regimens with 90 % bands (200 draws). Writes
``benchmarks/results/latent_speed.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from twinsim.priors import vancomycin_model  # noqa: E402
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
    LLOQ,
    latent_covariates,
    observation_lists,
    regimen_doses,
    simulate_patients,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--kind", default="structural")
    parser.add_argument("--model", default=None, help="a trained model folder: no training")
    parser.add_argument(
        "--sample-only",
        action="store_true",
        help="time sampling 10,000 trajectories with an untrained model (same program and cost)",
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "latent_speed.json")
    )
    args = parser.parse_args()
    result: dict = {"load_before": os.getloadavg(), "cpus": os.cpu_count(), "args": vars(args)}
    if args.sample_only:
        args.patients = 64
    cohort = simulate_patients(args.kind, args.patients, seed=0)
    cov = latent_covariates(cohort)
    model = LatentModel.create(
        vancomycin_model(), CovariateFeatures.fit(cov), LatentConfig(), seed=0
    )
    data = LatentData.build(model, cov, cohort["doses"], observation_lists(cohort))
    if args.sample_only:
        pcov = latent_covariates(cohort, [0])
        grid = np.linspace(0.5, 72.0, 24)
        doses = regimen_doses("train", float(pcov["weight"][0]))
        for label in ("sample_10000_first_s", "sample_10000_s"):
            t = time.perf_counter()
            traj = model.sample(pcov, doses, grid, 10_000, seed=1)
            result[label] = time.perf_counter() - t
        result["sample_shape"] = list(traj.shape)
        result["load_after"] = os.getloadavg()
        print(json.dumps(result, indent=2))
        Path(args.out).write_text(json.dumps(result, indent=2))
        return
    if args.model:
        from twinsim.scenarios import load_latent_model

        model = load_latent_model(args.model)
    else:
        model = _train(model, data, args, result)

    patient = simulate_patients(args.kind, 2, seed=99)
    pcov = latent_covariates(patient, [0])
    pdata = LatentData.build(model, pcov, patient["doses"][:1], observation_lists(patient)[:1])
    weight = float(pcov["weight"][0])
    regimens = [regimen_doses("train", weight), regimen_doses("heldout", weight),
                regimen_doses("train", weight * 1.3), regimen_doses("heldout", weight * 0.7)]  # fmt: skip
    grid = np.linspace(0.5, 72.0, 144)
    for label in ("encode_forecast_first_s", "encode_forecast_s"):
        t = time.perf_counter()
        post = model.encode(pdata)
        bands = model.forecast(pcov, post, regimens, grid, n_draws=200, seed=0)
        result[label] = time.perf_counter() - t
    result["forecast_band_width_day3_mg_per_l"] = float(np.median(bands["high"] - bands["low"]))
    twin = PatientTwin.create(model, {c: v[0] for c, v in pcov.items()}, patient["doses"][0][:2],
                              [Observation(float(t), float(v), lloq=LLOQ)
                               for t, v in observation_lists(patient, 2)[0]])  # fmt: skip
    start = twin.next_dose_time
    named = {f"regimen {i}": [dataclasses.replace(d, time=d.time + start) for d in r] for i, r in
             enumerate(regimens)}  # fmt: skip
    for label in ("twin_fit_predict_4_first_s", "twin_fit_predict_4_s"):
        t = time.perf_counter()
        prediction = twin.fit("laplace").predict(named, horizon_h=72.0, n_draws=200)
        result[label] = time.perf_counter() - t
    result["twin_auc24_median"] = [float(m["auc24"]["median"]) for m in prediction.metrics]
    for label in ("sample_10000_first_s", "sample_10000_s"):
        t = time.perf_counter()
        traj = model.sample(pcov, regimens[0], grid[::6], 10_000, seed=1)
        result[label] = time.perf_counter() - t
    result["sample_shape"] = list(traj.shape)
    result["load_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "train_epochs"}, indent=2))


def _train(model, data, args, result):
    settings = TrainingSettings(epochs=args.epochs, batch_size=args.batch_size, patience=3, seed=0)
    t0 = time.perf_counter()
    epochs_done = []

    def progress(info):
        if "validation" in info:
            epochs_done.append((time.perf_counter() - t0, info["loss"], info["validation"]))
            print(f"epoch {info['epoch'] + 1}: {epochs_done[-1]}", flush=True)

    trained = train_latent(model, data, settings, progress=progress)
    result["train_seconds"] = time.perf_counter() - t0
    result["train_epochs"] = [dict(seconds=s, train=a, validation=b) for s, a, b in epochs_done]
    result["stopped_early"] = trained.stopped_early
    return trained.model


if __name__ == "__main__":
    main()
