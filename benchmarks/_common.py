"""The benchmark scenario and its peers, shared by the benchmark scripts.

Scenario (the same in every script): two-compartment model with first-order oral
absorption (ka 1 /h, CL 5 L/h, V1 50 L, Q 10 L/h, V2 100 L, F 1), 30 % log-normal
between-subject variability on CL, V1 and ka, 100 mg every 12 h for 14 days (28 doses),
concentration every hour from 0 to 336 h (337 points, observed before the dose at dose
times). Subject i's parameters come from ``lognormal_parameters(SEED, [i], ...)``, so every
engine sees exactly the same subjects.

Peers run one subject at a time on one core:

- scipy ``solve_ivp`` (LSODA, rtol 1e-8, atol 1e-10, analytic Jacobian), integrated
  piecewise between doses with the bolus added to the depot at each dose;
- libroadrunner (CVODE, same tolerances) on an SBML model written here, with one SBML event
  per dose; one ``RoadRunner`` instance per process, ``reset()`` and new parameters per
  subject.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20240601
PARAMETERS = ("cl", "v1", "q", "v2", "ka", "f_oral")
TYPICAL = np.array([5.0, 50.0, 10.0, 100.0, 1.0, 1.0])  # L/h, L, L/h, L, 1/h, fraction
CV = np.array([0.3, 0.3, 0.0, 0.0, 0.3, 0.0])  # 30 % on CL, V1, ka
DOSE_MG, INTERVAL_H, N_DOSES = 100.0, 12.0, 28
TIMES_H = np.arange(0.0, 337.0)  # hourly, 0..336 h
DOSE_TIMES_H = INTERVAL_H * np.arange(N_DOSES)
RTOL, ATOL = 1e-8, 1e-10
RESULTS = Path(__file__).parent / "results"


def scenario() -> dict[str, Any]:
    """The scenario as a record for the results files."""
    return {
        "model": "two-compartment, first-order oral absorption (twinsim.priors.two_compartment)",
        "typical": dict(zip(PARAMETERS, TYPICAL.tolist(), strict=True)),
        "units": {"cl": "L/h", "v1": "L", "q": "L/h", "v2": "L", "ka": "1/h", "f_oral": "1"},
        "variability": "log-normal, CV 30 % on cl, v1, ka (omega^2 = log(1 + 0.3^2) = 0.0862), independent",
        "regimen": f"{DOSE_MG:g} mg oral every {INTERVAL_H:g} h, {N_DOSES} doses (14 days)",
        "outputs": "conc (mg/L) hourly 0..336 h, 337 points, pre-dose at dose times",
        "seed": SEED,
        "tolerances": {"rtol": RTOL, "atol": ATOL},
    }


@functools.cache
def model_and_inputs():
    """twinsim model, ``params_fn``, shared events and times for the scenario (built once:
    compiled functions are cached per model object, so every engine run reuses them)."""
    import jax.numpy as jnp

    from twinsim.priors import two_compartment
    from twinsim.simulators import DosingEvents, lognormal_parameters, omega_from_cv

    model = two_compartment(absorption="first_order")
    assert model.parameters == PARAMETERS, model.parameters
    omega = omega_from_cv(CV)

    def params_fn(ids):
        return lognormal_parameters(SEED, ids, TYPICAL, omega)

    events = DosingEvents.repeated(
        DOSE_MG, INTERVAL_H, N_DOSES, compartment=model.route_compartment("oral")
    )
    return model, params_fn, events, jnp.asarray(TIMES_H)


# --------------------------------------------------------------------------- scipy peer


def scipy_lsoda(params: np.ndarray) -> np.ndarray:
    """Concentrations ``[subject, time]`` with scipy LSODA, one subject at a time."""
    from scipy.integrate import solve_ivp

    out = np.zeros((params.shape[0], TIMES_H.size))
    edges = np.append(DOSE_TIMES_H, TIMES_H[-1])
    for i, (cl, v1, q, v2, ka, f) in enumerate(params):
        a = np.array(
            [
                [-ka, 0.0, 0.0],
                [ka, -(cl + q) / v1, q / v2],
                [0.0, q / v1, -q / v2],
            ]
        )
        y = np.zeros(3)
        for t0, t1 in itertools.pairwise(edges):
            y = y + np.array([DOSE_MG * f, 0.0, 0.0])  # bolus into the depot
            keep = (TIMES_H > t0) & (TIMES_H <= t1)  # the dose-time point was recorded pre-dose
            sol = solve_ivp(
                lambda t, x, a=a: a @ x, (t0, t1), y, method="LSODA", t_eval=TIMES_H[keep],
                rtol=RTOL, atol=ATOL, jac=lambda t, x, a=a: a,
            )  # fmt: skip
            out[i, keep] = sol.y[1] / v1
            y = sol.y[:, -1]
    return out


# --------------------------------------------------------------------------- libroadrunner peer


def _math(expr: str) -> str:
    return f'<math xmlns="http://www.w3.org/1998/Math/MathML">{expr}</math>'


def _apply(op: str, *args: str) -> str:
    return f"<apply><{op}/>{''.join(args)}</apply>"


def _ci(name: str) -> str:
    return f"<ci>{name}</ci>"


_TIME = (
    '<csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/time">time</csymbol>'
)


def sbml_model() -> str:
    """SBML L3V1 of the scenario: amounts as rate-rule parameters, one event per dose."""
    constants = {**dict(zip(PARAMETERS, TYPICAL.tolist(), strict=True)), "dose": DOSE_MG}
    parameters = "".join(
        f'<parameter id="{k}" value="{v!r}" constant="true"/>' for k, v in constants.items()
    )
    parameters += "".join(
        f'<parameter id="{k}" value="0" constant="false"/>'
        for k in ("depot", "central", "periph", "conc")
    )
    depot = _apply("times", "<cn>-1</cn>", _ci("ka"), _ci("depot"))
    central = _apply(
        "minus",
        _apply("plus", _apply("times", _ci("ka"), _ci("depot")), _apply("times", _apply("divide", _ci("q"), _ci("v2")), _ci("periph"))),
        _apply("times", _apply("divide", _apply("plus", _ci("cl"), _ci("q")), _ci("v1")), _ci("central")),
    )  # fmt: skip
    periph = _apply(
        "minus",
        _apply("times", _apply("divide", _ci("q"), _ci("v1")), _ci("central")),
        _apply("times", _apply("divide", _ci("q"), _ci("v2")), _ci("periph")),
    )
    rules = (
        f'<rateRule variable="depot">{_math(depot)}</rateRule>'
        f'<rateRule variable="central">{_math(central)}</rateRule>'
        f'<rateRule variable="periph">{_math(periph)}</rateRule>'
        f'<assignmentRule variable="conc">{_math(_apply("divide", _ci("central"), _ci("v1")))}</assignmentRule>'
    )
    bolus = _math(_apply("plus", _ci("depot"), _apply("times", _ci("dose"), _ci("f_oral"))))
    events = "".join(
        f'<event id="dose{k}" useValuesFromTriggerTime="true">'
        # initialValue false: the t = 0 dose fires at the start of the run
        f'<trigger initialValue="false" persistent="true">{_math(_apply("geq", _TIME, f"<cn>{t!r}</cn>"))}</trigger>'
        f'<listOfEventAssignments><eventAssignment variable="depot">{bolus}</eventAssignment>'
        f"</listOfEventAssignments></event>"
        for k, t in enumerate(DOSE_TIMES_H.tolist())
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<sbml xmlns="http://www.sbml.org/sbml/level3/version1/core" level="3" version="1">'
        f'<model id="pk_2cmt_oral"><listOfParameters>{parameters}</listOfParameters>'
        f"<listOfRules>{rules}</listOfRules><listOfEvents>{events}</listOfEvents></model></sbml>"
    )


class RoadRunnerPeer:
    """One libroadrunner instance (CVODE), reused for every subject of the process."""

    def __init__(self):
        import roadrunner

        start = time.perf_counter()
        self.rr = roadrunner.RoadRunner(sbml_model())
        self.rr.integrator.relative_tolerance = RTOL
        self.rr.integrator.absolute_tolerance = ATOL
        self.rr.timeCourseSelections = ["conc"]
        self.load_s = time.perf_counter() - start
        self.version = roadrunner.__version__

    def run(self, params: np.ndarray) -> np.ndarray:
        """Concentrations ``[subject, time]``; outputs at dose times are pre-dose (events fire after)."""
        out = np.empty((params.shape[0], TIMES_H.size))
        rr = self.rr
        for i, row in enumerate(params):
            rr.reset()
            for name, value in zip(PARAMETERS, row.tolist(), strict=True):
                rr[name] = value
            out[i] = rr.simulate(float(TIMES_H[0]), float(TIMES_H[-1]), TIMES_H.size)[:, 0]
        return out


# --------------------------------------------------------------------------- reporting


def max_relative_difference(values: np.ndarray, reference: np.ndarray) -> float:
    """max |x − ref| / |ref| over the points where the reference is not zero (t = 0 is 0 mg/L)."""
    nonzero = reference != 0
    return float(np.max(np.abs(values[nonzero] - reference[nonzero]) / np.abs(reference[nonzero])))


def machine() -> dict[str, Any]:
    """Where the numbers were taken."""
    import jax

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "jax": jax.__version__,
    }
    for name in ("scipy", "diffrax", "roadrunner", "zarr"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "load_average_at_start": list(os.getloadavg()),
        "versions": versions,
        "note": "shared machine: other processes were running, timings are indicative",
    }


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, record: dict[str, Any]) -> None:
    write_atomically(path, json.dumps(record, indent=2, sort_keys=False) + "\n")
