"""Population fits: FOCE-I, Laplace and NUTS on theophylline (12 subjects) and on 59
simulated neonates; wall and CPU time with the machine load.

Data: ``tests/data/theophylline_nonmem.csv`` (one compartment with first-order
absorption, ``twinsim fit --model one_compartment_oral``: BSV on CL, V, ka, additive
error) and ``tests/data/neonate_simulated.csv`` (``--model one_compartment_iv --error
proportional``, started at adult values CL 1 L/h, V 20 L: see :func:`neonate_frame`).
Each configuration runs twice in one process: the first run compiles; the second reuses
the compiled programs (the conditional fits' objective is cached per model and data;
NUTS through JAX's persistent compilation cache), so its time is the fit "after
compilation". Load averages and the process's CPU time are recorded: on a shared machine
the wall times are indicative, the CPU time says what the run needed.

Run: ``nice .venv/bin/python benchmarks/bench_fit.py`` (writes ``results/fit.json``);
``--write-neonate PATH`` writes the simulated neonate data set and stops.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common as common

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "theophylline_nonmem.csv"
NEONATE = Path(__file__).resolve().parents[1] / "tests" / "data" / "neonate_simulated.csv"


def neonate_frame(n_subjects: int = 59, seed: int = 7):
    """Simulated phenobarbital-like neonatal data (NONMEM layout), the failure case.

    One compartment, IV boluses: a 20 mg/kg loading dose, then 4 mg/kg every 12 h (4–11
    doses); 1–4 levels per infant between 1 and 150 h. Weight log-normal around 1.3 kg
    (0.5–3.8 kg); CL = 0.0047 L/h/kg · WT · e^η (ω 0.3), V = 0.96 L/kg · WT · e^η (ω 0.15)
    — the per-kg values of phenobarbital in neonates (Grasela & Donn, Dev Pharmacol Ther
    1985;8:374), so a typical infant has CL ≈ 0.006 L/h and V ≈ 1.25 L; proportional
    error 10 %. Written to ``tests/data/neonate_simulated.csv`` by ``--write-neonate``.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n_subjects + 1):
        wt = float(np.clip(rng.lognormal(np.log(1.3), 0.4), 0.5, 3.8))
        cl = 0.0047 * wt * np.exp(rng.normal(0, 0.3))
        v = 0.96 * wt * np.exp(rng.normal(0, 0.15))
        n_maintenance = int(rng.integers(4, 12))
        doses = [(0.0, 20.0 * wt)] + [(12.0 * j, 4.0 * wt) for j in range(1, 1 + n_maintenance)]
        times = np.sort(rng.uniform(1.0, 150.0, int(rng.integers(1, 5)))).round(1)
        for t, amount in doses:
            rows.append((i, t, 0.0, round(amount, 3), 1, 1, round(wt, 2)))
        for t in times:
            conc = sum(a / v * np.exp(-cl / v * (t - td)) for td, a in doses if td <= t)
            rows.append(
                (i, t, round(conc * np.exp(rng.normal(0, 0.1)), 3), 0.0, 0, 1, round(wt, 2))
            )
        # EVID 1 marks doses; sorted so that a dose comes before a level at the same time
    frame = pd.DataFrame(rows, columns=["ID", "TIME", "DV", "AMT", "EVID", "CMT", "WT"])
    return frame.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable")


def _timed(run, *args, **kwargs):
    load = os.getloadavg()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    fit = run(*args, **kwargs)
    seconds = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    return fit, {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument(
        "--draws", type=int, default=1000, help="NUTS draws (and warm-up) per chain"
    )
    parser.add_argument("--methods", default="focei,laplace,nuts")
    parser.add_argument("--data", default="theophylline,neonate")
    parser.add_argument("--out", type=Path, default=common.RESULTS / "fit.json")
    parser.add_argument("--write-neonate", type=Path, default=None)
    parser.add_argument(
        "--once", action="store_true", help="one run per configuration (compilation included)"
    )
    args = parser.parse_args()
    if args.write_neonate is not None:
        neonate_frame().to_csv(args.write_neonate, index=False)
        print(f"wrote {args.write_neonate}")
        return

    import jax

    cache = tempfile.mkdtemp(prefix="twinsim-jax-cache-")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    from twinsim.scenarios import read_nonmem
    from twinsim.scenarios._fit import fit_data, fit_model
    from twinsim.twin import fit_population

    sets = {
        "theophylline": (DATA, "one_compartment_oral", "additive"),
        "neonate": (NEONATE, "one_compartment_iv", "proportional"),
    }
    record = {"machine": common.machine(), "runs": {}}
    for data_name in args.data.split(","):
        path, model_name, error = sets[data_name]
        model = fit_model(model_name, error=error)
        data = fit_data(read_nonmem(path), model)
        for method in args.methods.split(","):
            options = {}
            if method == "nuts":
                options = dict(
                    num_chains=args.chains, num_warmup=args.draws, num_samples=args.draws
                )
            label = f"{data_name}_{method}"
            runs = []
            attempts = ("first (compiles)", "second (compiled)")
            for attempt in attempts[:1] if args.once else attempts:
                fit, timing = _timed(fit_population, model, data, method=method, seed=1, **options)
                d = fit.diagnostics
                for key in ("compile_seconds", "optimise_seconds"):
                    if key in d:
                        timing[key] = round(d[key], 2)
                runs.append({"run": attempt, **timing})
                print(f"{label} {attempt}: {timing}", flush=True)
            d = fit.diagnostics
            record["runs"][label] = {
                "data": path.name,
                "n_subjects": data.n_subjects,
                "n_observations": data.n_observations,
                "options": options,
                "runs": runs,
                "success": fit.success,
                "failure_reasons": d["failure_reasons"],
                "estimates": {row["name"]: round(row["estimate"], 5) for row in fit.summary},
                "diagnostics": {
                    k: (None if isinstance(v, float) and v != v else v)  # NaN is not JSON
                    for k, v in d.items()
                    if isinstance(v, (int, float, str, bool))
                },
            }
            print(f"{label}: success {fit.success} {d['failure_reasons']}", flush=True)
    common.write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
