"""Warfarin what-if speed from Python: 4 regimens × 200 draws, 90 % bands, 8 weeks at 0.5 h.

Run: ``nice .venv/bin/python benchmarks/bench_whatif.py`` (writes
``benchmarks/results/whatif.json``). The patient of ``bench_twin.py --warfarin`` (62 y,
78 kg, CYP2C9 *1/*3, VKORC1 A/A, 5 mg daily for a week, INRs on days 3 and 5), MAP fit;
then ``posterior.predict`` of four candidate regimens (daily doses for 8 weeks after the
history) with 200 draws on the dashboard's forecast grid (every 0.5 h, 3,025 times).

- ``first_whatif``: the first prediction, compilation included (wall and CPU seconds);
- ``update``: later predictions with other amounts (nothing compiles), median of
  ``--repeats``;
- ``engine_call``: the engine call alone (800 trajectories) on the semilinear engine (what
  the twin uses: exact PK, exponential integrator on the 0.5 h grid), the split engine and
  the walking ODE engine (``method="ode"``, the twin's engine before) in the same run, so
  their ratios hold whatever the load; with the largest relative difference of each from
  the walking engine.

The machine is shared: the load average before and after, wall and CPU (process) time
are recorded; CPU time is what the run itself used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _common as common

from twinsim.simulators import DosingEvents, predict_outputs, semilinear_grid
from twinsim.twin import Observation, PatientTwin
from twinsim.twin._compiled import _engine

RESULTS = Path(__file__).parent / "results" / "whatif.json"
HISTORY_H, WEEKS, STEP_H = 168.0, 8, 0.5


def _twin() -> PatientTwin:
    twin = PatientTwin.create(
        "warfarin",
        {"age": 62.0, "weight": 78.0, "female": 1, "cyp2c9": "*1/*3", "vkorc1": "A/A"},
    )
    twin = twin.with_doses(*[twin.dose(24.0 * k, 5.0) for k in range(7)])
    return twin.with_observations(
        Observation(72.0, 1.9, output="inr"), Observation(120.0, 2.8, output="inr")
    )


def _regimens(twin: PatientTwin, lowest_mg: float) -> dict:
    return {
        f"{mg:g} mg daily": [twin.dose(HISTORY_H + 24.0 * k, mg) for k in range(7 * WEEKS)]
        for mg in lowest_mg + np.arange(4.0)
    }


def _clock(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"  {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)  # progress on a slow machine
    return out, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--no-peer", action="store_true", help="skip the walking-engine peer")
    args = parser.parse_args()
    report: dict = {"machine": common.machine(), "load_before": os.getloadavg()}
    twin = _twin()
    post, wall, cpu = _clock(lambda: twin.fit("map"))
    report["map_fit_first_call"] = {"wall_s": wall, "cpu_s": cpu}
    end = HISTORY_H + 7 * 24.0 * WEEKS
    times = np.linspace(0.0, end, math.ceil(end / STEP_H) + 1)
    report["settings"] = {
        "regimens": 4, "draws": args.draws, "horizon_h": 7 * 24.0 * WEEKS,
        "output_times": times.size, "bands": "5 %, 50 %, 95 %",
    }  # fmt: skip

    def whatif(lowest_mg: float, seed: int):
        return post.predict(
            _regimens(twin, lowest_mg), horizon_h=7 * 24.0 * WEEKS, times=times,
            n_draws=args.draws, seed=seed,
        )  # fmt: skip

    pred, wall, cpu = _clock(lambda: whatif(2.0, 0))
    assert np.all(np.isfinite(pred.median)) and np.all(pred.lower <= pred.upper)
    report["first_whatif"] = {"wall_s": wall, "cpu_s": cpu}
    runs = [_clock(lambda i=i: whatif(3.0 + i, i + 1))[1:] for i in range(args.repeats)]
    report["update"] = {
        "wall_s": statistics.median(r[0] for r in runs),
        "cpu_s": statistics.median(r[1] for r in runs),
        "runs": runs,
        # the engine the twin's forecast took
        "engine": "semilinear"
        if semilinear_grid(
            twin.model.structural,
            DosingEvents.from_doses([[*twin.doses, *d] for d in _regimens(twin, 2.0).values()]),
            times,
        )
        else "ode",
    }
    if not args.no_peer:
        # the engine call alone, split vs walking, on the same draws and tables
        engine = _engine(twin.model)
        typical = jnp.asarray(twin.model.typical_parameters(twin.covariates)[0])
        eta = jnp.asarray(
            np.random.default_rng(0).multivariate_normal(
                post.eta_mode, post.covariance, size=args.draws
            )
        )
        tables = [[*twin.doses, *d] for d in _regimens(twin, 2.0).values()]
        # every (regimen, draw) pair as one subject, as the twin's forecast evaluates them
        events = DosingEvents.from_doses([t for t in tables for _ in range(args.draws)])
        grid = jnp.asarray(times)
        params = jnp.tile(engine._params(typical, eta), (len(tables), 1))
        structural = twin.model.structural
        semi = semilinear_grid(structural, events, times)
        fn = jax.jit(
            lambda p, e, g, method, grid: predict_outputs(
                structural, p, e, g[None], method=method, grid=grid
            ),
            static_argnames=("method", "grid"),
        )
        values = {}
        calls = report.setdefault("engine_call", {"subjects": int(params.shape[0])})
        for method in ("semilinear", "split", "ode"):
            run = lambda m=method: np.asarray(  # noqa: E731
                fn(params, events, grid, method=m, grid=semi if m == "semilinear" else None)
            )
            _, wall_first, cpu_first = _clock(run)
            values[method], wall, cpu = _clock(run)
            calls[method] = {
                "first_wall_s": wall_first, "first_cpu_s": cpu_first,
                "wall_s": wall, "cpu_s": cpu,
            }  # fmt: skip
        for method in ("semilinear", "split"):
            difference = np.abs(values[method] - values["ode"])
            calls[method]["max_relative_difference_from_ode"] = float(
                np.max(difference / np.maximum(np.abs(values["ode"]), 1e-12))
            )
            calls[f"cpu_ratio_walking_over_{method}"] = (
                calls["ode"]["cpu_s"] / calls[method]["cpu_s"]
            )
    report["load_after"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    common.write_atomically(RESULTS, json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
