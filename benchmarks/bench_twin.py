"""Patient-twin speed: MAP/Laplace fit + recommendation, NUTS 4 × 1000, no recompilation.

Run: ``nice .venv/bin/python benchmarks/bench_twin.py`` (writes
``benchmarks/results/twin.json``). One vancomycin patient (80 kg, CrCL 60 mL/min, 1 g
every 12 h, a peak and a trough). Every timed run uses new levels (so nothing is cached
but the compilation); times are the median of ``--repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from twinsim.twin import Observation, PatientTwin

RESULTS = Path(__file__).parent / "results" / "twin.json"
COVARIATES = {"weight": 80.0, "crcl": 60.0, "dialysis": 0.0}


def _twin(rng: np.random.Generator, extra: int = 0) -> PatientTwin:
    twin = PatientTwin.create("vancomycin", COVARIATES)
    twin = twin.with_doses(*[twin.dose(12.0 * k, 1000.0) for k in range(4)])
    peak, trough = 30.0 * np.exp(0.2 * rng.normal()), 12.0 * np.exp(0.2 * rng.normal())
    obs = [Observation(37.0, peak), Observation(47.5, trough)]
    obs += [Observation(25.0 + k, 20.0 * np.exp(0.2 * rng.normal())) for k in range(extra)]
    return twin.with_observations(*obs)


def _timed(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nuts-samples", type=int, default=1000)
    parser.add_argument("--nuts-chains", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    report: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
        },
        "patient": "vancomycin, 80 kg, CrCL 60 mL/min, 1 g q12h x4 (1 h infusions), peak + trough",
    }

    def map_and_recommend():
        post = _twin(rng).fit("map")
        return post.recommend(top=3, n_draws=200)

    start = time.perf_counter()
    recs = map_and_recommend()
    report["map_recommend_first_call_s"] = time.perf_counter() - start
    median, runs = _timed(map_and_recommend, args.repeats)
    report["map_recommend_s"] = {"median": median, "runs": runs, "candidates": "default grid"}
    report["example_recommendation"] = {"description": recs[0].description, "pta": recs[0].pta}
    fit_median, fit_runs = _timed(lambda: _twin(rng).fit("laplace"), args.repeats)
    report["laplace_fit_s"] = {"median": fit_median, "runs": fit_runs}

    # the same forecast for 2 levels first, so only the added level could compile anything
    _twin(rng).fit("map").predict({"stop": []}, n_draws=200)
    before = PatientTwin.compilations("vancomycin")
    _twin(rng, extra=1).fit("map").predict({"stop": []}, n_draws=200)
    report["compilations_before_after_one_more_level"] = [
        before,
        PatientTwin.compilations("vancomycin"),
    ]

    nuts_kwargs = {
        "num_warmup": args.nuts_samples,
        "num_samples": args.nuts_samples,
        "num_chains": args.nuts_chains,
    }
    start = time.perf_counter()
    _twin(rng).fit("nuts", **nuts_kwargs)
    report["nuts_first_call_s"] = time.perf_counter() - start
    start = time.perf_counter()
    post = _twin(rng).fit("nuts", seed=1, **nuts_kwargs)
    report["nuts_s"] = time.perf_counter() - start
    report["nuts_settings"] = nuts_kwargs
    report["nuts_diagnostics"] = {
        k: v for k, v in post.diagnostics.items() if k in ("divergences", "max_r_hat", "min_ess")
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
