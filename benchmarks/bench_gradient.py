"""Value and gradient of a batch log likelihood through warfarin solves (latent training's shape).

Run: ``nice .venv/bin/python benchmarks/bench_gradient.py`` (writes
``benchmarks/results/gradient.json``). ``--subjects`` warfarin patients (typical values times
log-normal noise), each with daily doses of 3–8 mg for 4 weeks and INR measured on 8 days;
the loss is the Gaussian log likelihood of log INR (SD 0.18) summed over the batch, and its
gradient is taken with respect to every subject's parameters (``[subject, parameter]``, as a
latent model's decoder produces them) in reverse mode (``sensitivity="reverse"``) and in
forward mode (``"forward"``, one tangent per parameter column). Engines: the split engine and
the walking ODE engine (``method="ode"``) as the peer in the same run. Times: first call
(compilation) and the median of ``--repeats`` later calls, wall and CPU seconds, with the load.
"""

from __future__ import annotations

import argparse
import json
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

from twinsim.priors import warfarin_model
from twinsim.simulators import Dose, DosingEvents, simulate

RESULTS = Path(__file__).parent / "results" / "gradient.json"
COVARIATES = {"age": 62.0, "weight": 78.0, "female": 1, "cyp2c9": "*1/*3", "vkorc1": "A/A"}


def _inputs(n: int):
    pm = warfarin_model()
    model = pm.structural
    rng = np.random.default_rng(0)
    typical = np.asarray(pm.typical_parameters(COVARIATES))[0]
    log_params = np.log(typical) + 0.2 * rng.normal(size=(n, typical.size))
    depot = model.route_compartment("oral")
    amounts = rng.uniform(3.0, 8.0, n)
    events = DosingEvents.from_doses(
        [[Dose(24.0 * k, a, compartment=depot) for k in range(28)] for a in amounts]
    )
    times = jnp.asarray(24.0 * np.array([2, 4, 7, 10, 14, 18, 22, 27]) + 12.0)
    inr = simulate(model, np.exp(log_params), events, times).outputs[:, :, 1]
    observed = np.asarray(inr) * np.exp(0.18 * rng.normal(size=inr.shape))
    return model, jnp.asarray(log_params), events, times, jnp.asarray(observed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default="split,ode")
    args = parser.parse_args()
    model, log_params, events, times, observed = _inputs(args.subjects)
    report: dict = {
        "machine": common.machine(),
        "load_before": os.getloadavg(),
        "settings": {"subjects": args.subjects, "doses": 28, "observations": int(times.size)},
        "rows": [],
    }
    values = {}
    for method in args.engines.split(","):
        for sensitivity in ("reverse", "forward"):

            def loss(lp, method=method, sensitivity=sensitivity):
                inr = simulate(
                    model, jnp.exp(lp), events, times, method=method,
                    sensitivity=sensitivity, keep_states=False,
                ).outputs[:, :, 1]  # fmt: skip
                return -0.5 * jnp.sum(((jnp.log(observed) - jnp.log(inr)) / 0.18) ** 2)

            grad = (
                jax.value_and_grad(loss)
                if sensitivity == "reverse"
                else lambda lp, loss=loss: (loss(lp), jax.jacfwd(loss)(lp))
            )
            fn = jax.jit(grad)
            wall, cpu = time.perf_counter(), time.process_time()
            value, gradient = jax.block_until_ready(fn(log_params))
            first = (time.perf_counter() - wall, time.process_time() - cpu)
            runs = []
            for _ in range(args.repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                jax.block_until_ready(fn(log_params))
                runs.append((time.perf_counter() - wall, time.process_time() - cpu))
            values[method, sensitivity] = (float(value), np.asarray(gradient))
            report["rows"].append(
                {
                    "engine": method,
                    "sensitivity": sensitivity,
                    "first_call_wall_s": first[0],
                    "first_call_cpu_s": first[1],
                    "wall_s": statistics.median(r[0] for r in runs),
                    "cpu_s": statistics.median(r[1] for r in runs),
                    "value": float(value),
                    "finite_gradient": bool(np.all(np.isfinite(gradient))),
                }
            )
            print(json.dumps(report["rows"][-1]), flush=True)
    reference = values.get(("ode", "reverse"))
    if reference is not None:
        for key, (value, gradient) in values.items():
            scale = np.maximum(np.abs(reference[1]), 1e-6 * np.abs(reference[1]).max())
            report.setdefault("agreement_vs_ode_reverse", {})["/".join(key)] = {
                "value_rel": abs(value - reference[0]) / abs(reference[0]),
                "gradient_max_rel": float(np.max(np.abs(gradient - reference[1]) / scale)),
            }
    report["load_after"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    common.write_atomically(RESULTS, json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
