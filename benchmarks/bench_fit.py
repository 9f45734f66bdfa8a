"""Population fit of the theophylline data (12 subjects): NUTS, SVI and Laplace times.

Model: one compartment with first-order absorption (``twinsim fit --model
one_compartment_oral``), log-normal BSV on CL, V and ka, additive error. NUTS: 4 chains ×
1,000 draws after 1,000 (and after 500) warm-up iterations (vectorised chains, dense mass
matrix). Each method runs
twice with JAX's persistent compilation cache on: the first run compiles, the second
loads the compiled programs from the cache, so its time is the fit "after compilation"
(tracing and the sampling itself). Load averages and the process's CPU time are recorded:
on a shared machine the wall times are indicative, the CPU time says what the run needed.

Run: ``nice .venv/bin/python benchmarks/bench_fit.py`` (writes ``results/fit.json``).
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
            rows.append((i, t, round(conc * np.exp(rng.normal(0, 0.1)), 3), 0.0, 0, 1, round(wt, 2)))
        # EVID 1 marks doses; sorted so that a dose comes before a level at the same time
    frame = pd.DataFrame(rows, columns=["ID", "TIME", "DV", "AMT", "EVID", "CMT", "WT"])
    return frame.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000, help="kept draws per chain")
    parser.add_argument(
        "--warmups", default="1000,500", help="NUTS warm-up lengths to time (comma-separated)"
    )
    parser.add_argument("--methods", default="nuts,svi,laplace")
    parser.add_argument("--out", type=Path, default=common.RESULTS / "fit.json")
    args = parser.parse_args()

    import jax

    cache = tempfile.mkdtemp(prefix="twinsim-jax-cache-")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    from twinsim.scenarios import read_nonmem
    from twinsim.scenarios._fit import fit_data, fit_model
    from twinsim.twin import fit_population

    model = fit_model("one_compartment_oral")
    data = fit_data(read_nonmem(DATA), model)
    record = {"machine": common.machine(), "data": str(DATA.name), "runs": {}}
    configurations = []
    for method in args.methods.split(","):
        if method == "nuts":
            for warmup in args.warmups.split(","):
                options = dict(
                    num_chains=args.chains, num_warmup=int(warmup), num_samples=args.draws
                )
                configurations.append((f"nuts_warmup{warmup}", method, options))
        else:
            configurations.append((method, method, {}))
    for label, method, options in configurations:
        runs = []
        for attempt in ("first (compiles)", "second (compiled programs cached)"):
            load = os.getloadavg()
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            fit = fit_population(model, data, method=method, seed=1, **options)
            seconds = time.perf_counter() - start
            used = resource.getrusage(resource.RUSAGE_SELF)
            cpu_seconds = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
            runs.append(
                {
                    "run": attempt,
                    "seconds": round(seconds, 2),
                    "cpu_seconds": round(cpu_seconds, 2),
                    "load_average_before": [round(x, 2) for x in load],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                }
            )
            print(
                f"{label} {attempt}: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU "
                f"(load {load[0]:.1f})",
                flush=True,
            )
        estimates = {row["name"]: round(row["median"], 4) for row in fit.summary}
        record["runs"][label] = {
            "options": options,
            "runs": runs,
            "estimates_median": estimates,
            "diagnostics": {
                k: (None if isinstance(v, float) and v != v else v)  # NaN is not JSON
                for k, v in fit.diagnostics.items()
                if isinstance(v, (int, float, str, bool))
            },
        }
    common.write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
