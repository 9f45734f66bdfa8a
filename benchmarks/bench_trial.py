"""Benchmark: replicate warfarin trials (4 weeks, INR-guided titration, INR at each visit).

The scenario is the shipped design ``warfarin_genotype_guided`` (two arms, INR measured at
7 visits with assay error, the nomogram applied at 6 of them, 5 % missed doses, 5 %
dropout, five analyses including PROCOVA, whose prognostic score costs a second, noise-free
simulation of every subject) with 100 subjects per arm (200 per replicate). The issue's
target is 1,000 replicates in under 5 minutes on the 2-core machine; ``--replicates``
runs fewer and reports the rate, from which the full size's time is extrapolated (the
work is linear in replicates once compiled: chunks of one shape).

Each configuration is timed twice: the first run includes compilation, the second
(another set of replicates, same shapes) is the steady rate.

    nice python benchmarks/bench_trial.py --replicates 10 --chunk-size 5

``--once`` times one run, compilation included — the issue's full size, 1,000 replicates,
measured rather than extrapolated:

    nice python benchmarks/bench_trial.py --replicates 1000 --chunk-size 5 --once \
        --out benchmarks/results/trial_full.json

Results go to ``benchmarks/results/trial.json`` with the machine load (``os.getloadavg``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _design(replicates: int, offset_seed: int):
    from twinsim.scenarios import load_trial, trial_examples

    design = load_trial(trial_examples()["warfarin_genotype_guided"])
    return design.model_copy(
        update={"replicates": replicates, "sample_size": [100], "seed": design.seed + offset_seed}
    )


def _timed(replicates: int, chunk_size: int, scheduler=None, attempts: int = 2) -> dict:
    from twinsim.scenarios import run_trial

    runs = []
    for attempt in range(attempts):
        design = _design(replicates, attempt)
        start = time.perf_counter()
        result = run_trial(design, chunk_size=chunk_size, scheduler=scheduler)
        seconds = time.perf_counter() - start
        subjects = int(result.arrays["valid"].sum())
        runs.append(
            {
                "seconds": round(seconds, 2),
                "subjects": subjects,
                "subjects_per_second": round(subjects / seconds, 2),
                "includes_compilation": attempt == 0,
                "load_after": [round(x, 2) for x in os.getloadavg()],
            }
        )
    steady = runs[-1]["subjects_per_second"]
    return {
        "runs": runs,
        "steady_subjects_per_second": steady,
        "extrapolated_seconds_1000x200": round(1000 * 200 / steady, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=5)
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument(
        "--once",
        action="store_true",
        help="one timed run, compilation included (the full size: --replicates 1000)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "trial.json")
    args = parser.parse_args()
    record = {
        "benchmark": "bench_trial",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "scenario": "warfarin_genotype_guided, 100 per arm (200 subjects per replicate), "
        "4 weeks, INR at 7 visits, nomogram at 6, PROCOVA twin simulation included",
        "replicates_per_run": args.replicates,
        "chunk_size": args.chunk_size,
        "target": "1,000 replicates x 200 subjects in < 300 s",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": [round(x, 2) for x in os.getloadavg()],
        },
    }
    attempts = 1 if args.once else 2
    record["in_process"] = _timed(args.replicates, args.chunk_size, attempts=attempts)
    if not args.no_dask:
        from dask.distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            record["dask_local_2_workers"] = _timed(
                args.replicates, args.chunk_size, client, attempts=attempts
            )
    record["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")  # written atomically
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(args.out)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
