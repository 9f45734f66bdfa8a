"""Malformed requests fail early with messages that name the field and the value received;
a subject whose solve fails is reported by its status without spoiling the others.

Structure errors (shapes, times, compartments, the method) raise
:class:`twinsim.simulators.SimulationError` in Python before anything is traced; invalid
dosing records raise :class:`twinsim.simulators.EventError` when the table is built. Both
subclass ``ValueError``. Every test checks the message with ``pytest.raises(match=...)``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from twinsim.priors import ODEModel
from twinsim.simulators import (
    Dose,
    DosingEvents,
    EventError,
    SimulationError,
    SolveStatus,
    simulate,
)


def _mm_rhs(t, y, p):
    return {"central": -p.vmax * (y.central / p.v) / (p.km + y.central / p.v)}


MICHAELIS_MENTEN = ODEModel(
    name="test_mm_iv",
    states=("central",),
    parameters=("vmax", "km", "v"),
    rhs=_mm_rhs,
    outputs={"conc": lambda y, p: y.central / p.v},
)


@pytest.fixture
def setup(linear_models, grid):
    regimen = grid["regimens"]["bolus"]
    return linear_models[2], regimen.params(2), regimen.events(), grid["times"]


def test_errors_are_value_errors():
    """Callers may catch ValueError for any malformed request."""
    assert issubclass(SimulationError, ValueError)
    assert issubclass(EventError, ValueError)


# --------------------------------------------------------------------------- structure


def test_params_with_the_wrong_number_of_parameters(setup):
    model, params, events, times = setup
    with pytest.raises(
        SimulationError, match=r"`params` must have shape \(subject, 7\).*got \(3, 6\)"
    ):
        simulate(model, params[:, :6], events, times)


def test_params_rows_not_matching_the_cohort(setup):
    model, params, events, times = setup
    with pytest.raises(SimulationError, match=r"`params` has 2 rows but there are 3 subjects"):
        simulate(model, params[:2], events, times)


def test_times_with_the_wrong_shape(setup):
    model, params, events, times = setup
    with pytest.raises(SimulationError, match=r"`times` must have shape .*got \(2, 21\)"):
        simulate(model, params, events, np.stack([times, times]))


def test_unsorted_times_name_the_offending_value(setup):
    """The message names the field and the value that breaks the order (STYLE.md: what was
    expected, what was received)."""
    model, params, events, times = setup
    bad = times.copy()
    bad[5] = 30.5  # between 1.0 and 2.0 in the grid
    with pytest.raises(SimulationError, match=r"`times` must be sorted.*30\.5"):
        simulate(model, params, events, bad)


def test_negative_times_name_the_offending_value(setup):
    model, params, events, times = setup
    bad = times.copy()
    bad[0] = -1.5
    with pytest.raises(SimulationError, match=r"`times` must be .*≥ 0 h.*-1\.5"):
        simulate(model, params, events, bad)


def test_dose_compartment_out_of_range(setup):
    model, params, _, times = setup
    events = DosingEvents.from_doses([[Dose(0.0, 100.0, compartment=5)]] * 3, pad_to=8)
    with pytest.raises(
        SimulationError, match=r"compartment 5 \(0-based\) is outside model 'test_pk2'.*0\.\.2"
    ):
        simulate(model, params, events, times)


def test_linear_method_on_a_nonlinear_model(grid):
    events = DosingEvents.from_doses([[Dose(0.0, 100.0, compartment=0)]] * 3, pad_to=8)
    with pytest.raises(
        SimulationError, match=r"`method` 'linear' needs a linear model.*'test_mm_iv'.*linear=False"
    ):
        simulate(
            MICHAELIS_MENTEN, np.array([10.0, 2.0, 20.0]), events, grid["times"], method="linear"
        )


def test_unknown_method(setup):
    model, params, events, times = setup
    with pytest.raises(
        SimulationError,
        match=r"`method` must be 'auto', 'linear', 'ode', 'split' or 'semilinear', got 'exact'",
    ):
        simulate(model, params, events, times, method="exact")


def test_unknown_solver(setup):
    model, params, events, times = setup
    with pytest.raises(SimulationError, match=r"`solver` must be one of .*got 'euler'"):
        simulate(model, params, events, times, method="ode", solver="euler")


@pytest.mark.parametrize("method", ["linear", "ode"])
def test_unknown_at_dose(setup, method):
    """A misspelt ``at_dose`` must not silently select one of the conventions."""
    model, params, events, times = setup
    with pytest.raises(SimulationError, match=r"`at_dose` must be 'pre' or 'post', got 'after'"):
        simulate(model, params, events, times, method=method, at_dose="after")


# --------------------------------------------------------------------------- dosing records


def test_negative_dose():
    with pytest.raises(
        EventError, match=re.escape("`subject[1].doses[0].amount` must be ≥ 0 mg, got -50.0")
    ):
        DosingEvents.from_doses(
            [[Dose(0.0, 100.0, compartment=1)], [Dose(0.0, -50.0, compartment=1)]]
        )


def test_rate_and_duration_both_given():
    with pytest.raises(
        EventError,
        match=r"`subject\[0\]\.doses\[1\]\.duration` must be 0 when `rate` is given, got 2\.0",
    ):
        DosingEvents.from_doses(
            [
                [
                    Dose(0.0, 100.0, compartment=1),
                    Dose(12.0, 100.0, compartment=1, rate=50.0, duration=2.0),
                ]
            ]
        )


@pytest.mark.parametrize(
    ("dose", "infusion_h"),
    [(Dose(0.0, 100.0, compartment=1, duration=14.0, steady_state=True, interval=12.0), "14.0"),
     (Dose(0.0, 100.0, compartment=1, rate=5.0, steady_state=True, interval=12.0), "20.0")],
    ids=["by_duration", "by_rate"],
)  # fmt: skip
def test_steady_state_infusion_longer_than_the_interval(dose, infusion_h):
    with pytest.raises(
        EventError,
        match=rf"`subject\[0\]\.doses\[0\]\.duration`.*interval 12\.0 h.*got {infusion_h}",
    ):
        DosingEvents.from_doses([[dose]])


def test_steady_state_without_interval():
    with pytest.raises(
        EventError, match=r"`subject\[0\]\.doses\[0\]\.interval` must be > 0 h.*got 0\.0"
    ):
        DosingEvents.from_doses([[Dose(0.0, 100.0, compartment=1, steady_state=True)]])


def test_negative_dose_time():
    with pytest.raises(
        EventError, match=r"`subject\[0\]\.doses\[0\]\.time` must be ≥ 0 h, got -2\.0"
    ):
        DosingEvents.from_doses([[Dose(-2.0, 100.0, compartment=1)]])


# --------------------------------------------------------------------------- per-subject failures


def _check_isolated(sol, failed: int, expected_others: np.ndarray, statuses=None):
    status = np.asarray(sol.status)
    others = [i for i in range(status.shape[0]) if i != failed]
    assert status[failed] != SolveStatus.SUCCESS
    if statuses is not None:
        assert SolveStatus(int(status[failed])) in statuses
    np.testing.assert_array_equal(status[others], 0)
    assert np.all(np.isnan(np.asarray(sol.outputs[failed])))
    np.testing.assert_allclose(
        np.asarray(sol.outputs[others, :, 0]), expected_others[others], rtol=1e-6, atol=1e-9
    )
    failures = sol.failures()
    assert list(failures) == [failed]
    assert failures[failed] == SolveStatus(int(status[failed])).describe()


def test_ode_failure_of_one_subject_nan_parameter(linear_models, grid):
    """A NaN clearance for subject 1 of a 3-subject ODE cohort: status != 0 and NaN outputs
    for subject 1 only; subjects 0 and 2 equal the closed form (rtol 1e-6, atol 1e-9
    mg/L); ``Solution.failures()`` names subject 1 only."""
    regimen = grid["regimens"]["repeated"]
    params = regimen.params(2)
    params[1, 0] = np.nan
    sol = simulate(linear_models[2], params, regimen.events(), grid["times"], method="ode")
    _check_isolated(sol, 1, regimen.reference(2))


def test_ode_failure_of_one_stiff_subject_max_steps(linear_models, grid):
    """Subject 2 has an elimination rate constant of 5000 /h (CL 5e4 L/h, V 10 L): the
    explicit solver's stability limit needs far more than ``max_steps=200`` steps per
    segment, so subject 2 reports MAX_STEPS; subjects 0 and 1 (a few dozen steps per
    segment) equal the closed form (rtol 1e-6, atol 1e-9 mg/L)."""
    regimen = grid["regimens"]["infusion_duration"]
    params = regimen.params(2)
    params[2, 0] = 5e4
    sol = simulate(
        linear_models[2], params, regimen.events(), grid["times"], method="ode", max_steps=200
    )
    _check_isolated(sol, 2, regimen.reference(2), statuses={SolveStatus.MAX_STEPS})


@pytest.mark.parametrize("method", ["linear", "ode"])
def test_steady_state_that_does_not_exist_fails_one_subject(linear_models, grid, method):
    """SS=1 dosing of a subject without elimination (CL = 0) has no steady state: that
    subject reports STEADY_STATE_FAILED with NaN outputs, instead of huge finite numbers;
    the others equal the closed form (rtol 1e-6, atol 1e-9 mg/L)."""
    regimen = grid["regimens"]["ss_bolus"]
    params = regimen.params(2)
    params[1, 0] = 0.0
    sol = simulate(linear_models[2], params, regimen.events(), grid["times"], method=method)
    _check_isolated(sol, 1, regimen.reference(2), statuses={SolveStatus.STEADY_STATE_FAILED})
