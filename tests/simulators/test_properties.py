"""Invariants of the engines on random linear models and regimens (hypothesis).

Every example of a test has the same shapes (3 subjects, a dose table padded to 8 rows,
21 output times), so hypothesis draws values, never shapes, and each engine compiles
once per model. The model for the conservation tests is a 2-compartment oral model with
an extra state ``eliminated`` (d eliminated/dt = CL · C), which makes the mass balance
exact: depot + central + peripheral1 + eliminated = amount dosed so far.

Tolerances are stated per test; the seed is fixed by the ``ci`` profile (derandomize).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinsim.priors import ODEModel
from twinsim.simulators import Dose, DosingEvents, simulate

N_SUBJECTS, PAD_TO = 3, 8
TIMES = np.array(
    [
        0.0,
        0.5,
        1.0,
        2.0,
        3.0,
        4.0,
        6.0,
        8.0,
        10.0,
        12.0,
        14.0,
        16.0,
        20.0,
        24.0,
        28.0,
        32.0,
        36.0,
        42.0,
        48.0,
        60.0,
        72.0,
    ]
)
DEPOT, CENTRAL, PERIPHERAL, ELIMINATED = 0, 1, 2, 3
PARAMETERS = ("cl", "v", "q", "v2", "ka", "f")


def _rhs(t, y, p):
    conc = y.central / p.v
    to_peripheral = p.q * (conc - y.peripheral1 / p.v2)
    return {
        "depot": -p.ka * y.depot,
        "central": p.ka * y.depot - p.cl * conc - to_peripheral,
        "peripheral1": to_peripheral,
        "eliminated": p.cl * conc,
    }


MODEL = ODEModel(
    name="test_pk2_mass_balance",
    states=("depot", "central", "peripheral1", "eliminated"),
    parameters=PARAMETERS,
    rhs=_rhs,
    outputs={"conc": lambda y, p: y.central / p.v},
    linear=True,
    bioavailability={"depot": "f"},
)


def _log_uniform(lo: float, hi: float):
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


subject_params = st.tuples(
    _log_uniform(0.5, 50.0),  # cl, L/h
    _log_uniform(5.0, 200.0),  # v, L
    _log_uniform(0.5, 50.0),  # q, L/h
    _log_uniform(5.0, 500.0),  # v2, L
    _log_uniform(0.1, 5.0),  # ka, 1/h
    st.floats(0.2, 1.0),  # f
)


@st.composite
def doses(draw, compartments=(DEPOT, CENTRAL, PERIPHERAL)) -> Dose:
    """A bolus, an infusion by duration or an infusion by rate, at 0-48 h."""
    time = draw(st.sampled_from([0.0, 2.0, 12.0, 24.0]) | st.floats(0.0, 48.0))
    amount = draw(_log_uniform(1.0, 1000.0))
    compartment = draw(st.sampled_from(compartments))
    kind = draw(st.sampled_from(["bolus", "duration", "rate"]))
    if kind == "duration":
        return Dose(time, amount, compartment=compartment, duration=draw(st.floats(0.1, 8.0)))
    if kind == "rate":
        return Dose(time, amount, compartment=compartment, rate=amount / draw(st.floats(0.1, 8.0)))
    return Dose(time, amount, compartment=compartment)


def cohorts(n_subjects: int = N_SUBJECTS, max_doses: int = PAD_TO):
    return st.tuples(
        st.lists(subject_params, min_size=n_subjects, max_size=n_subjects),
        st.lists(
            st.lists(doses(), min_size=1, max_size=max_doses),
            min_size=n_subjects,
            max_size=n_subjects,
        ),
    )


def _events(regimens) -> DosingEvents:
    return DosingEvents.from_doses(regimens, pad_to=PAD_TO)


def _dosed_by(times: np.ndarray, regimen: list[Dose], f: float) -> np.ndarray:
    """Amount (mg, after F for depot doses) that has entered the body by each time; a bolus
    at exactly an output time is not yet in (at_dose="pre")."""
    total = np.zeros_like(times)
    for d in regimen:
        amount = d.amount * (f if d.compartment == DEPOT else 1.0)
        if d.rate > 0:
            total += d.rate * np.clip(times - d.time, 0.0, amount / d.rate)
        elif d.duration > 0:
            total += amount / d.duration * np.clip(times - d.time, 0.0, d.duration)
        else:
            total += np.where(times > d.time, amount, 0.0)
    return total


@settings(max_examples=12)
@given(cohorts())
def test_mass_balance_and_non_negativity(cohort):
    """Amount dosed = depot + central + peripheral + eliminated at every output time, in both
    engines (rtol 1e-9 of the total dose: the linear engine is exact, and Runge-Kutta
    methods conserve linear invariants up to rounding), and no amount is negative
    (tolerance 1e-9 of the total dose for rounding around 0)."""
    params, regimens = cohort
    params = np.array(params)
    for method in ("linear", "ode"):
        sol = simulate(MODEL, params, _events(regimens), TIMES, method=method)
        np.testing.assert_array_equal(np.asarray(sol.status), 0)
        states = np.asarray(sol.states)
        for i, regimen in enumerate(regimens):
            scale = sum(d.amount for d in regimen)
            np.testing.assert_allclose(
                states[i].sum(axis=-1),
                _dosed_by(TIMES, regimen, params[i, 5]),
                rtol=1e-9,
                atol=1e-9 * scale,
            )
            assert states[i].min() >= -1e-9 * scale, (method, i, states[i].min())


def _scaled(regimen: list[Dose], factor: float) -> list[Dose]:
    return [d.replace(amount=d.amount * factor, rate=d.rate * factor) for d in regimen]


@settings(max_examples=10)
@given(cohorts())
def test_dose_linearity(cohort):
    """Doubling every dose (amount, and the rate of rate-defined infusions, so durations stay)
    doubles every state and the concentration; linear engine, rtol 1e-13 (a factor of 2 is
    exact in binary floating point, only summation order could differ)."""
    params, regimens = cohort
    once = simulate(MODEL, np.array(params), _events(regimens), TIMES, method="linear")
    twice = simulate(
        MODEL,
        np.array(params),
        _events([_scaled(r, 2.0) for r in regimens]),
        TIMES,
        method="linear",
    )
    np.testing.assert_allclose(
        np.asarray(twice.states), 2.0 * np.asarray(once.states), rtol=1e-13, atol=0.0
    )
    np.testing.assert_allclose(
        np.asarray(twice.outputs), 2.0 * np.asarray(once.outputs), rtol=1e-13, atol=0.0
    )


@settings(max_examples=10)
@given(
    cohorts(max_doses=PAD_TO // 2),
    st.lists(st.lists(doses(), min_size=1, max_size=PAD_TO // 2), min_size=3, max_size=3),
)
def test_superposition(cohort, more):
    """Regimen A + regimen B (one table holding both) = A alone + B alone, every state;
    linear engine, rtol 1e-10 with atol 1e-12 of the total dose (rounding)."""
    params, first = cohort
    params = np.array(params)
    both = simulate(
        MODEL,
        params,
        _events([a + b for a, b in zip(first, more, strict=True)]),
        TIMES,
        method="linear",
    )
    a = simulate(MODEL, params, _events(first), TIMES, method="linear")
    b = simulate(MODEL, params, _events(more), TIMES, method="linear")
    scale = max(sum(d.amount for d in r) for r in first + more)
    np.testing.assert_allclose(
        np.asarray(both.states),
        np.asarray(a.states) + np.asarray(b.states),
        rtol=1e-10,
        atol=1e-12 * scale,
    )


@settings(max_examples=10)
@given(
    st.lists(subject_params, min_size=3, max_size=3),
    st.lists(
        st.tuples(
            _log_uniform(1.0, 1000.0),
            st.sampled_from(["bolus", "oral", "infusion"]),
            st.floats(0.05, 0.9),
        ),
        min_size=3,
        max_size=3,
    ),
)
def test_steady_state_is_the_limit_of_repeated_dosing(linear_models, params, doses_):
    """An SS=1 dose at 7τ equals 8 doses every τ from 0 (at 20 times in [7τ, 8τ)), with τ =
    2.5 / (slowest rate constant), so the missing doses before 0 contribute < e^{-20}:
    linear engine, rtol 1e-6 (the issue's requirement; atol 1e-12 of the dose for states
    that are 0 up to rounding, the empty depot of IV regimens); 2-compartment model of
    conftest (F, no lag)."""
    model = linear_models[2]
    rows, ss_doses, repeated = [], [], []
    for (cl, v, q, v2, ka, f), (amount, kind, infusion_fraction) in zip(
        params, doses_, strict=True
    ):
        k10, k12, k21 = cl / v, q / v, q / v2
        s = k10 + k12 + k21
        beta = 0.5 * (s - math.sqrt(s * s - 4.0 * k21 * k10))
        tau = 2.5 / min(beta, ka)
        cmt = DEPOT if kind == "oral" else CENTRAL
        duration = infusion_fraction * tau if kind == "infusion" else 0.0
        rows.append([cl, v, q, v2, ka, f, 0.0])
        ss_doses.append(
            [
                Dose(
                    7.0 * tau,
                    amount,
                    compartment=cmt,
                    duration=duration,
                    steady_state=True,
                    interval=tau,
                )
            ]
        )
        repeated.append(
            [Dose(0.0, amount, compartment=cmt, duration=duration, interval=tau, additional=7)]
        )
    taus = np.array([d[0].interval for d in ss_doses])
    times = 7.0 * taus[:, None] + taus[:, None] * np.arange(len(TIMES))[None, :] / len(TIMES)
    ss = simulate(model, np.array(rows), _events(ss_doses), times, method="linear")
    rep = simulate(model, np.array(rows), _events(repeated), times, method="linear")
    np.testing.assert_array_equal(np.asarray(ss.status), 0)
    np.testing.assert_allclose(np.asarray(ss.outputs), np.asarray(rep.outputs), rtol=1e-6)
    scale = max(d[0] for d in doses_)
    np.testing.assert_allclose(
        np.asarray(ss.states), np.asarray(rep.states), rtol=1e-6, atol=1e-12 * scale
    )


def _chunks_match(params, regimens, method):
    events = _events(regimens)
    whole = simulate(MODEL, params, events, TIMES, method=method)
    parts = [
        simulate(MODEL, params[k : k + 3], events.subset(slice(k, k + 3)), TIMES, method=method)
        for k in (0, 3)
    ]
    for field in ("states", "outputs", "status"):
        joined = np.concatenate([np.asarray(getattr(p, field)) for p in parts])
        np.testing.assert_array_equal(np.asarray(getattr(whole, field)), joined)


@settings(max_examples=8)
@given(cohorts(n_subjects=6))
def test_chunking_invariance_linear(cohort):
    """6 subjects at once = 2 chunks of 3, bit for bit (exact comparison), linear engine."""
    params, regimens = cohort
    _chunks_match(np.array(params), regimens, "linear")


@pytest.mark.parametrize("shared_grid", [False, True], ids=["own_dose_times", "shared_dose_times"])
def test_chunking_invariance_ode(shared_grid):
    """6 subjects at once = 2 chunks of 3, bit for bit (exact comparison), ODE engine at its
    defaults: a subject's adaptive steps must not depend on the other subjects in its
    chunk, whether the subjects have their own dose times or share them (a cohort on one
    regimen with different parameters and amounts: the common case)."""
    rng = np.random.default_rng(7)
    params = np.column_stack(
        [rng.uniform(1, 20, 6), rng.uniform(10, 100, 6), rng.uniform(1, 20, 6), rng.uniform(20, 200, 6),
         rng.uniform(0.2, 3, 6), rng.uniform(0.5, 1, 6)]
    )  # fmt: skip
    if shared_grid:
        regimens = [
            [
                Dose(0.0, float(amount), compartment=DEPOT, interval=12.0, additional=3),
                Dose(30.0, float(amount), compartment=CENTRAL, duration=2.0),
            ]
            for amount in rng.uniform(10, 500, 6)
        ]
    else:
        regimens = [
            [Dose(float(rng.uniform(0, 24)), float(rng.uniform(10, 500)), compartment=int(rng.integers(0, 3)), duration=d)
             for d in rng.choice([0.0, 1.5], size=int(rng.integers(1, 6)))]
            for _ in range(6)
        ]  # fmt: skip
    _chunks_match(params, regimens, "ode")
