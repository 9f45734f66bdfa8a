"""One million virtual subjects streamed to Zarr in chunks, with bounded memory, resumably.

Run by hand from the repository root::

    .venv/bin/python benchmarks/bench_million.py                  # 1,000,000 subjects
    .venv/bin/python benchmarks/bench_million.py --n-subjects 50000 --store /tmp/small.zarr

The scenario is the one of ``bench_engines.py`` (``benchmarks/_common.py``). Chunks of
``--chunk-size`` subjects are simulated by ``simulate_cohort`` and written by
``twinsim.scenarios._outputs.ZarrCohortWriter`` (outputs as float64, status per subject, a
completion marker per chunk). Kill the process at any point and run the same command
again: finished chunks are skipped and the run continues (``--fresh`` starts over).

Writes ``benchmarks/results/million.json`` (atomically): one entry per invocation with its
wall time, throughput and peak resident memory (``getrusage`` ``ru_maxrss``, and psutil's
RSS sampled after every chunk), and a spot check of stored subjects against a direct
``simulate`` call of just those subjects (bitwise).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _common as common

RSS_LIMIT_MB = 2048


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-subjects", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--method", choices=("linear", "ode"), default="linear")
    parser.add_argument("--store", type=Path, default=common.RESULTS / "million.zarr")
    parser.add_argument("--results", type=Path, default=common.RESULTS / "million.json")
    parser.add_argument("--fresh", action="store_true", help="delete the store and start over")
    return parser.parse_args(argv)


def _previous_runs(path: Path, settings: dict, fresh: bool) -> list[dict]:
    """Earlier invocations on the same store and settings (a resumed run continues the record)."""
    if fresh or not path.exists():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return old.get("invocations", []) if old.get("settings") == settings else []


def main(argv=None) -> dict:
    args = parse_args(argv)
    import psutil
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from twinsim.scenarios._outputs import ZarrCohortWriter, open_zarr_cohort
    from twinsim.simulators import simulate, simulate_cohort

    console = Console(stderr=True, width=140)
    model, params_fn, events, times = common.model_and_inputs()
    settings = {
        "n_subjects": args.n_subjects,
        "chunk_size": args.chunk_size,
        "method": args.method,
        "store": str(args.store),
        "dtype": "float64",
    }
    invocations = _previous_runs(args.results, settings, args.fresh)
    for earlier in invocations:
        if earlier.get("status") == "running":  # that process died without a word (SIGKILL)
            earlier["status"] = "killed"
    args.store.parent.mkdir(parents=True, exist_ok=True)
    writer = ZarrCohortWriter(
        args.store, model=model, n_subjects=args.n_subjects, chunk_size=args.chunk_size, times=np.asarray(times),
        method=args.method, attrs={"benchmark": "bench_million", "seed": common.SEED}, overwrite=args.fresh,
    )  # fmt: skip
    done = set(writer.completed())
    console.log(
        f"store {args.store}: {len(done)} of {writer.n_chunks} chunks already written"
        + ("; resuming" if done else "")
    )
    invocation = {
        "started": common.machine()["date"],
        "status": "running",
        "chunks_complete_at_start": len(done),
    }
    invocations.append(invocation)
    record = {
        "benchmark": "million",
        "machine": common.machine(),
        "scenario": common.scenario(),
        "settings": settings,
        "invocations": invocations,
        "complete": writer.complete,
    }
    common.write_json(args.results, record)  # a killed run leaves "running" behind

    process = psutil.Process()
    rss_samples = [process.memory_info().rss]
    chunk_seconds, chunk_subjects, failed = [], [], []
    last = [time.perf_counter()]

    def on_chunk(start, stop, solution):
        writer.write_chunk(start // args.chunk_size, solution)
        now = time.perf_counter()
        chunk_seconds.append(now - last[0])
        chunk_subjects.append(stop - start)
        failed.append(int(np.sum(np.asarray(solution.status) != 0)))
        last[0] = now
        rss_samples.append(process.memory_info().rss)

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("subjects"), TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    start = time.perf_counter()
    try:
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(f"{args.method} engine → Zarr", total=args.n_subjects)
            simulate_cohort(
                model, args.n_subjects, params_fn, lambda ids: events, times, chunk_size=args.chunk_size,
                on_chunk=on_chunk, skip_chunk=lambda a, b: a // args.chunk_size in done, method=args.method,
                keep_states=False,
                progress=lambda n: bar.update(task, advance=n),
            )  # fmt: skip
        invocation["status"] = "finished"
    except KeyboardInterrupt:
        invocation["status"] = "interrupted"
    wall = time.perf_counter() - start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    simulated = sum(chunk_subjects)
    steady = slice(1, None)  # the first chunk includes compilation
    invocation.update(
        {
            "ended": common.machine()["date"],
            "chunks_run": len(chunk_seconds),
            "chunks_skipped": len(done),
            "subjects_simulated": simulated,
            "failed_subjects": sum(failed),
            "wall_s": wall,
            "subjects_per_s": simulated / wall if simulated else None,
            "first_chunk_s_incl_compile": chunk_seconds[0] if chunk_seconds else None,
            "steady_subjects_per_s": (
                sum(chunk_subjects[steady]) / sum(chunk_seconds[steady])
                if len(chunk_seconds) > 1
                else None
            ),
            "peak_rss_mb_getrusage": peak_rss_mb,
            "peak_rss_mb_psutil_sampled": max(rss_samples) / 2**20,
            "rss_limit_mb": RSS_LIMIT_MB,
            "rss_below_limit": peak_rss_mb < RSS_LIMIT_MB,
            "load_average_at_end": list(os.getloadavg()),
        }
    )
    console.log(
        f"{invocation['status']}: {len(chunk_seconds)} chunks run, {len(done)} skipped in {wall:.1f} s; "
        f"peak RSS {peak_rss_mb:.0f} MB (limit {RSS_LIMIT_MB} MB)"
    )
    record["complete"] = writer.complete
    if invocation["status"] == "interrupted":
        common.write_json(args.results, record)
        console.log(f"wrote {args.results}; run the same command again to resume")
        raise SystemExit(130)
    if writer.complete:
        dataset = open_zarr_cohort(args.store)
        status = np.asarray(dataset["status"].values)
        picks = np.unique(
            np.array([0, args.chunk_size - 1, args.n_subjects // 2 + 7, args.n_subjects - 1])
        )
        picks = picks[(picks >= 0) & (picks < args.n_subjects)]
        stored = np.asarray(dataset["value"].isel(subject=picks).values)
        direct = np.asarray(
            simulate(model, params_fn(picks), events, times, method=args.method).outputs
        )
        store_bytes = sum(p.stat().st_size for p in args.store.rglob("*") if p.is_file())
        total_wall = sum(i.get("wall_s", 0.0) for i in invocations)  # a killed run left none
        record["result"] = {
            "subjects_ok": int(np.sum(status == 0)),
            "subjects_failed": int(np.sum(status != 0)),
            "store_gb_on_disk": store_bytes / 1e9,
            "values_dtype": str(dataset["value"].dtype),
            "spot_check_subjects": picks.tolist(),
            "spot_check_bitwise_equal_to_direct_simulate": bool(np.array_equal(stored, direct)),
            "spot_check_max_abs_diff": float(np.max(np.abs(stored - direct))),
            "total_wall_s_all_invocations": total_wall,
            "invocations": len(invocations),
            "subjects_per_s_all_invocations": args.n_subjects / total_wall,
            "max_peak_rss_mb": max(i.get("peak_rss_mb_getrusage", 0.0) for i in invocations),
        }
        console.log(f"complete: {json.dumps(record['result'])}")
    common.write_json(args.results, record)
    console.log(f"wrote {args.results}")
    return record


if __name__ == "__main__":
    main()
