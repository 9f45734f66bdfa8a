"""Patient-twin speed: MAP/Laplace fit + recommendation, NUTS 4 × 1000, no recompilation.

Run: ``nice .venv/bin/python benchmarks/bench_twin.py`` (writes
``benchmarks/results/twin.json``). One vancomycin patient (80 kg, CrCL 60 mL/min, 1 g
every 12 h, a peak and a trough). Every timed run uses new levels (so nothing is cached
but the compilation); times are the median of ``--repeats`` runs after one warm-up run.
The XLA compilations during each timed NUTS fit are counted (JAX's own events): 0 means
the sampler was reused whole.

``--warfarin`` times the ODE twin instead (writes ``benchmarks/results/twin_warfarin.json``):
warfarin, 62 y, 78 kg, CYP2C9 *1/*3, VKORC1 A/A, 5 mg daily, INRs on days 3 and 5 (each
run perturbs them); MAP fit, and NUTS ``--nuts-chains`` × (``--nuts-samples`` warm-up +
as many draws; 4 × (1000 + 1000) by default) against the Laplace fit (NUTS mean − mode
and NUTS SD / Laplace SD, per random effect), with wall and CPU seconds and the load.
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

from twinsim.simulators._compilations import recorded_compilations
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


def _warfarin(rng: np.random.Generator) -> PatientTwin:
    twin = PatientTwin.create(
        "warfarin",
        {"age": 62.0, "weight": 78.0, "female": 1, "cyp2c9": "*1/*3", "vkorc1": "A/A"},
    )
    twin = twin.with_doses(*[twin.dose(24.0 * k, 5.0) for k in range(7)])
    inrs = [(72.0, 1.9), (120.0, 2.8)]
    return twin.with_observations(
        *[Observation(t, v * np.exp(0.05 * rng.normal()), output="inr") for t, v in inrs]
    )


def _bench_warfarin(rng: np.random.Generator, repeats: int, samples: int, chains: int) -> dict:
    report: dict = {"patient": "warfarin, 62 y, 78 kg, female, CYP2C9 *1/*3, VKORC1 A/A, "
                    "5 mg daily x7, INRs day 3 and 5"}  # fmt: skip
    start = time.perf_counter()
    _warfarin(rng).fit("map")
    report["map_first_call_s"] = time.perf_counter() - start
    median, runs = _timed(lambda: _warfarin(rng).fit("map"), repeats)
    report["map_fit_s"] = {"median": median, "runs": runs}
    settings = {"num_warmup": samples, "num_samples": samples, "num_chains": chains}
    for label, seed in (("nuts_first_call", 0), ("nuts", 1)):
        twin = _warfarin(rng)
        start, cpu = time.perf_counter(), time.process_time()
        with recorded_compilations() as compiled:
            post = twin.fit("nuts", seed=seed, **settings)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        laplace = twin.fit("laplace")
        sd = np.sqrt(np.diag(laplace.covariance))
        report[label] = {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "load_average_after": os.getloadavg(),
            "xla_compilations": len(compiled),
            "settings": settings,
            "mean_leapfrog_steps": post.diagnostics["mean_leapfrog_steps"],
            "divergences": post.diagnostics["divergences"],
            "max_r_hat": post.diagnostics["max_r_hat"],
            "min_ess": post.diagnostics["min_ess"],
            "nuts_mean_minus_mode_in_laplace_sd": list(
                (post.samples.mean(axis=0) - laplace.eta_mode) / sd
            ),
            "nuts_sd_over_laplace_sd": list(post.samples.std(axis=0) / sd),
        }
    return report


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
    parser.add_argument(
        "--nuts-samples", type=int, default=1000, help="NUTS warm-up and draws per chain"
    )
    parser.add_argument("--nuts-chains", type=int, default=4)
    parser.add_argument("--warfarin", action="store_true", help="time the ODE (warfarin) twin")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    machine = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
    }
    if args.warfarin:
        report = {
            "machine": machine,
            **_bench_warfarin(rng, args.repeats, args.nuts_samples, args.nuts_chains),
        }
        out = RESULTS.with_name("twin_warfarin.json")
        out.write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(json.dumps(report, indent=2, default=float))
        return
    report: dict = {
        "machine": machine,
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
    with recorded_compilations() as compiled:
        post = _twin(rng).fit("nuts", seed=1, **nuts_kwargs)
    report["nuts_s"] = time.perf_counter() - start
    report["nuts_xla_compilations"] = len(compiled)
    report["nuts_settings"] = nuts_kwargs
    report["nuts_diagnostics"] = {
        k: v for k, v in post.diagnostics.items() if k in ("divergences", "max_r_hat", "min_ess")
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
