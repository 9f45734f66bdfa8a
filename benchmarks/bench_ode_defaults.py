"""What ``simulate`` does by default on an ODE, measured: solver, strategy, cores used.

Run: ``nice .venv/bin/python benchmarks/bench_ode_defaults.py`` (writes
``benchmarks/results/ode_defaults.json``; libroadrunner from the ``bench`` extra). On the
engines scenario (``_common.py``: two-compartment oral, 30 % BSV, 100 mg q12h × 28,
hourly to 336 h) it times ``simulate(..., method="ode")`` with its defaults (read from its
signature) and with the other solver and strategy, on ``--subjects`` subjects after a
warm-up call, and libroadrunner one subject at a time in the same run (so the ratios are
taken at the same machine load). Which of the process's threads spent the CPU time of
each JAX call says how many cores it can use (the CPU/wall ratio only says so on an idle
machine).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _common as common

CONFIGURATIONS = {
    "default": {},
    "vmap, dopri8": {"ode_strategy": "vmap", "solver": "dopri8"},
    "batch, tsit5": {"ode_strategy": "batch", "solver": "tsit5"},
    "batch, dopri8": {"ode_strategy": "batch", "solver": "dopri8"},
}


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) of each thread of this process (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[task.name] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=500)
    parser.add_argument("--roadrunner-subjects", type=int, default=200)
    parser.add_argument("--out", type=Path, default=common.RESULTS / "ode_defaults.json")
    args = parser.parse_args(argv)

    import jax

    from twinsim.simulators import simulate

    signature = inspect.signature(simulate).parameters
    defaults = {name: signature[name].default for name in ("solver", "ode_strategy")}
    model, params_fn, events, times = common.model_and_inputs()
    params = params_fn(np.arange(args.subjects))
    record = {"machine": common.machine(), "scenario": common.scenario(),
              "simulate_defaults": defaults, "subjects": args.subjects, "runs": {}}  # fmt: skip
    for name, options in CONFIGURATIONS.items():
        options = {"method": "ode", "keep_states": False, **options}

        def call(options=options):
            return jax.block_until_ready(simulate(model, params, events, times, **options).outputs)

        call()  # compile
        load = [round(x, 2) for x in os.getloadavg()]
        threads = _thread_cpu_s()
        cpu, wall = time.process_time(), time.perf_counter()
        call()
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        # which threads did the work: a load-independent answer to "how many cores" (the
        # CPU/wall ratio is not, on a loaded machine)
        spent = {k: v - threads.get(k, 0.0) for k, v in _thread_cpu_s().items()}
        busiest = max(spent.values())
        record["runs"][name] = {
            "options": {**defaults, **options} if name == "default" else options,
            "wall_s": round(wall, 3),
            "subjects_per_s": round(args.subjects / wall, 1),
            "cpu_s": round(cpu, 3),
            "subjects_per_cpu_s": round(args.subjects / cpu, 1),
            "cores_busy": round(cpu / wall, 2),
            "busiest_thread_share_of_cpu": round(busiest / max(cpu, 1e-9), 2),
            "threads_above_10pct_of_cpu": sum(v > 0.1 * cpu for v in spent.values()),
            "load_before": [float(x) for x in load],
        }
        print(name, record["runs"][name], flush=True)
    try:
        peer = common.RoadRunnerPeer()
    except ImportError:
        peer = None
    if peer is not None:
        rr_params = params[: args.roadrunner_subjects]
        cpu, start = time.process_time(), time.perf_counter()
        peer.run(np.asarray(rr_params))
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        rate = args.roadrunner_subjects / wall
        per_cpu = args.roadrunner_subjects / cpu
        record["roadrunner"] = {
            "version": peer.version,
            "subjects_per_s": round(rate, 1),
            "subjects_per_cpu_s": round(per_cpu, 1),
        }
        for run in record["runs"].values():
            run["x_roadrunner"] = round(run["subjects_per_s"] / rate, 2)
            # per CPU second: the comparison the machine's load moves least
            run["x_roadrunner_per_cpu_s"] = round(run["subjects_per_cpu_s"] / per_cpu, 2)
        print("roadrunner", record["roadrunner"], flush=True)
    record["machine"]["load_average_at_end"] = list(os.getloadavg())
    common.write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
