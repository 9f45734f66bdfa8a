"""Engines side by side on one population PK scenario: twinsim linear and ODE vs scipy and libroadrunner.

Run by hand from the repository root::

    .venv/bin/python benchmarks/bench_engines.py                      # N = 1,000 / 10,000 / 100,000
    .venv/bin/python benchmarks/bench_engines.py --sizes 1000,10000   # quicker

Writes ``benchmarks/results/engines.json`` and ``engines.md`` (atomically). The scenario is
described in ``benchmarks/_common.py``. Every engine simulates the same sampled subjects.

- twinsim engines run the whole cohort in chunks (``simulate_cohort``, ``--chunk-size``);
  compile time is reported apart: the first call of a chunk shape minus the second call;
  a cohort run shorter than a second is repeated to about a second and the median reported.
- scipy and libroadrunner run one subject at a time; they are timed on the first
  ``--scipy-subjects`` / ``--roadrunner-subjects`` subjects and their throughput is
  extrapolated to N (their cost per subject does not depend on N).
- Agreement: the max relative difference of each engine's concentrations from the twinsim
  linear engine (exact matrix exponential) on the first ``--check-subjects`` subjects.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _common as common

#: twinsim engines: label and options of ``simulate``
JAX_ENGINES = {
    "linear": ("twinsim linear", {"method": "linear", "keep_states": False}),
    # simulate's defaults for an ODE: each subject its own steps (lockstep strategy,
    # Dopri8 at this rtol), a subject's numbers the same in any batch
    "ode-default": (
        "twinsim ode (default: lockstep, Dopri8)",
        {"method": "ode", "keep_states": False},
    ),
    "ode": (
        "twinsim ode (batched state, Dopri8)",
        {"method": "ode", "ode_strategy": "batch", "solver": "dopri8", "keep_states": False},
    ),
    "ode-tsit5": (
        "twinsim ode (batched state, Tsit5)",
        {"method": "ode", "ode_strategy": "batch", "solver": "tsit5", "keep_states": False},
    ),
    "ode-vmap": (
        "twinsim ode (vmap, Dopri8)",
        {"method": "ode", "ode_strategy": "vmap", "solver": "dopri8", "keep_states": False},
    ),
    # the depot in closed form, central and peripheral integrated (one solve per 32
    # outputs, per subject): what simulate picks for a nonlinear model dosed into a depot
    "ode-split": (
        "twinsim split ODE (depot exact, Tsit5, per subject)",
        {"method": "split", "solver": "tsit5", "keep_states": False},
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="1000,10000,100000", help="cohort sizes N, comma-separated"
    )
    parser.add_argument("--chunk-size", type=int, default=10_000, help="subjects per JAX chunk")
    parser.add_argument(
        "--engines",
        default=",".join([*JAX_ENGINES, "scipy", "roadrunner"]),
        help=f"engines to run, from {', '.join(JAX_ENGINES)}, scipy, roadrunner",
    )
    parser.add_argument(
        "--scipy-subjects", type=int, default=200, help="subjects timed with scipy LSODA"
    )
    parser.add_argument(
        "--roadrunner-subjects", type=int, default=1000, help="subjects timed with libroadrunner"
    )
    parser.add_argument(
        "--check-subjects", type=int, default=200, help="subjects compared across engines"
    )
    parser.add_argument("--output-dir", type=Path, default=common.RESULTS)
    args = parser.parse_args(argv)
    args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(args.engines) - {*JAX_ENGINES, "scipy", "roadrunner"}
    if unknown:
        parser.error(
            f"unknown engines {sorted(unknown)}; choose from {', '.join(JAX_ENGINES)}, scipy, roadrunner"
        )
    if any(n < 1 for n in args.sizes):
        parser.error(f"--sizes must be ≥ 1, got {args.sizes}")
    return args


def time_jax_engine(engine, n_subjects, chunk_size, n_check, compiled, log):
    """Throughput of one twinsim engine at one N; compile time measured once per chunk shape."""
    import jax

    from twinsim.simulators import simulate, simulate_cohort

    label, options = JAX_ENGINES[engine]
    model, params_fn, events, times = common.model_and_inputs()
    chunk = min(n_subjects, chunk_size)
    if chunk not in compiled:
        params = params_fn(np.arange(chunk))
        start = time.perf_counter()
        jax.block_until_ready(simulate(model, params, events, times, **options).outputs)
        first = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(simulate(model, params, events, times, **options).outputs)
        second = time.perf_counter() - start
        compiled[chunk] = {
            "compile_s": first - second,
            "first_call_s": first,
            "second_call_s": second,
        }
        log(f"  {label}: chunk {chunk:,}: first call {first:.2f} s, second {second:.2f} s")
    kept = {}

    def on_chunk(start, stop, solution):
        conc = np.asarray(solution.outputs)[:, :, 0]  # to the host first, as a writer would
        if start == 0:
            kept["conc"] = conc[:n_check].copy()

    def run():
        start, cpu = time.perf_counter(), time.process_time()
        report = simulate_cohort(
            model,
            n_subjects,
            params_fn,
            lambda ids: events,
            times,
            chunk_size=chunk,
            on_chunk=on_chunk,
            **options,
        )
        cpus.append(time.process_time() - cpu)
        return time.perf_counter() - start, report

    # a run shorter than a second is repeated (to about a second in all) and the median
    # taken: one run of a few milliseconds says more about the scheduler than the engine
    walls, cpus, report = [], [], None
    while not walls or (sum(walls) < 1.0 and len(walls) < 50):
        wall, report = run()
        walls.append(wall)
    wall = float(np.median(walls))
    log(
        f"  {label}: N={n_subjects:,}: {wall:.3f} s (median of {len(walls)}), "
        f"{n_subjects / wall:,.0f} subjects/s, failed {report.n_failed}"
    )
    return {
        "engine": label,
        "n_subjects": n_subjects,
        "measured_subjects": n_subjects,
        "extrapolated": False,
        "chunk_size": chunk,
        "wall_s": wall,
        "runs": len(walls),
        "subjects_per_s": n_subjects / wall,
        "cpu_s": float(np.median(cpus)),
        "subjects_per_cpu_s": n_subjects / float(np.median(cpus)),
        "compile_s": compiled[chunk]["compile_s"],
        "compile_note": f"first minus second call of a {chunk:,}-subject chunk (measured once per chunk shape)",
        "failed_subjects": report.n_failed,
    }, kept["conc"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    from rich.console import Console

    console = Console(stderr=True, width=140)
    log = console.log
    record = {
        "benchmark": "engines",
        "machine": common.machine(),
        "scenario": common.scenario(),
        "settings": {
            "sizes": args.sizes,
            "chunk_size": args.chunk_size,
            "scipy_subjects": args.scipy_subjects,
            "roadrunner_subjects": args.roadrunner_subjects,
            "check_subjects": args.check_subjects,
        },
        "rows": [],
        "agreement_vs_linear": {},
    }
    _, params_fn, _, _ = common.model_and_inputs()
    n_check = min(args.check_subjects, max(args.sizes))
    log(f"sampling parameters; comparing engines on the first {n_check} subjects")
    reference = None
    peer_rates = {}

    # one-subject-at-a-time peers: timed on a subset, extrapolated
    if "scipy" in args.engines:
        n = args.scipy_subjects
        params = np.asarray(params_fn(np.arange(n)))
        start = time.perf_counter()
        conc = common.scipy_lsoda(params)
        wall = time.perf_counter() - start
        peer_rates["scipy LSODA"] = (n, wall, conc, {})
        log(f"scipy LSODA: {n} subjects in {wall:.2f} s ({n / wall:,.1f} subjects/s)")
    if "roadrunner" in args.engines:
        peer = common.RoadRunnerPeer()
        n = args.roadrunner_subjects
        params = np.asarray(params_fn(np.arange(n)))
        start, cpu = time.perf_counter(), time.process_time()
        conc = peer.run(params)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        peer_rates["libroadrunner CVODE"] = (
            n, wall, conc, {"sbml_load_s": peer.load_s, "cpu_s_measured": cpu}
        )  # fmt: skip
        log(
            f"libroadrunner: {n} subjects in {wall:.2f} s ({n / wall:,.1f} subjects/s), load {peer.load_s:.2f} s"
        )

    jax_conc = {}
    for engine in JAX_ENGINES:
        if engine not in args.engines:
            continue
        compiled = {}
        for n_subjects in args.sizes:
            row, conc = time_jax_engine(engine, n_subjects, args.chunk_size, n_check, compiled, log)
            record["rows"].append(row)
            if conc.shape[0] > jax_conc.get(engine, np.zeros((0,))).shape[0]:
                jax_conc[engine] = conc
    for name, (n, wall, _, extra) in peer_rates.items():
        for n_subjects in args.sizes:
            record["rows"].append(
                {
                    "engine": name,
                    "n_subjects": n_subjects,
                    "measured_subjects": n,
                    "extrapolated": n != n_subjects,
                    "wall_s": n_subjects * wall / n,
                    "subjects_per_s": n / wall,
                    "compile_s": 0.0,
                    "compile_note": "no compilation"
                    if name.startswith("scipy")
                    else "SBML load and JIT, see sbml_load_s",
                    **extra,
                }
            )

    # agreement with the exact linear engine, on the same subjects
    if "linear" in jax_conc:
        reference = jax_conc["linear"]
        others = {
            JAX_ENGINES[e][0]: jax_conc.get(e)
            for e in ("ode-default", "ode", "ode-vmap", "ode-split")
        }
        others.update({name: conc for name, (_, _, conc, _) in peer_rates.items()})
        for name, conc in others.items():
            if conc is None:
                continue
            k = min(conc.shape[0], reference.shape[0])
            diff = common.max_relative_difference(conc[:k], reference[:k])
            record["agreement_vs_linear"][name] = {"subjects": k, "max_relative_difference": diff}
            log(f"agreement: {name} vs twinsim linear on {k} subjects: max rel diff {diff:.2e}")

    rr_rate = peer_rates.get("libroadrunner CVODE")
    for row in record["rows"]:
        row["ratio_vs_roadrunner"] = (
            row["subjects_per_s"] / (rr_rate[0] / rr_rate[1]) if rr_rate else None
        )
        # per CPU second: what the ratio is on a machine shared with other work
        if rr_rate and "subjects_per_cpu_s" in row:
            row["ratio_vs_roadrunner_cpu"] = row["subjects_per_cpu_s"] / (
                rr_rate[0] / rr_rate[3]["cpu_s_measured"]
            )
    record["machine"]["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.output_dir.mkdir(parents=True, exist_ok=True)
    common.write_json(args.output_dir / "engines.json", record)
    common.write_atomically(args.output_dir / "engines.md", to_markdown(record))
    log(f"wrote {args.output_dir / 'engines.json'} and engines.md")
    print(to_markdown(record))
    return record


def to_markdown(record: dict) -> str:
    m = record["machine"]
    lines = [
        f"# Engines benchmark ({m['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; JAX {m['versions']['jax']} "
        f"({m['jax_backend']}), load average at start {', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}. "
        f"{m['note']}.",
        "",
        f"Scenario: {record['scenario']['model']}; {record['scenario']['variability']}; "
        f"{record['scenario']['regimen']}; {record['scenario']['outputs']}.",
        "",
        "| engine | N | subjects/s | wall (s) | compile (s) | × libroadrunner | measured on |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in sorted(record["rows"], key=lambda r: (r["n_subjects"], -r["subjects_per_s"])):
        ratio = f"{row['ratio_vs_roadrunner']:.1f}" if row.get("ratio_vs_roadrunner") else "–"
        if "chunk_size" in row:
            measured = f"all, chunks of {row['chunk_size']:,}"
        else:
            measured = f"{row['measured_subjects']:,} subjects one at a time" + (
                ", extrapolated" if row["extrapolated"] else ""
            )
        compile_s = f"{row['compile_s']:.1f}" if row["compile_s"] else "–"
        lines.append(
            f"| {row['engine']} | {row['n_subjects']:,} | {row['subjects_per_s']:,.0f} | {row['wall_s']:,.1f} | "
            f"{compile_s} | {ratio} | {measured} |"
        )
    lines += ["", "Agreement with the twinsim linear engine (exact), same subjects:", ""]
    for name, a in record["agreement_vs_linear"].items():
        lines.append(
            f"- {name}: max relative difference {a['max_relative_difference']:.1e} ({a['subjects']} subjects)"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
