"""The diffrax ODE engine against the exact linear engine on the same models and doses.

Both engines take the same model definition (``conftest.make_linear_model``) and dosing
table; the linear engine is itself checked against the textbook closed forms in
``test_closed_form.py``. Grid: 1-, 2- and 3-compartment models × every case of
``conftest.REGIMENS``, plus per-subject regimens of different lengths in one padded batch,
doses into a peripheral compartment, and the ``at_dose`` convention at a bolus time.

Tolerance (the issue's requirement): rtol 1e-6 on states and outputs, with atol 1e-9
(mg or mg/L) for values that are ~0. ODE engine at its defaults (tsit5, rtol 1e-8,
atol 1e-10).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from closed_form import Administration

from twinsim.simulators import Dose, DosingEvents, simulate

RTOL, ATOL = 1e-6, 1e-9


def _both(model, params, events, times, **kwargs):
    linear = simulate(model, params, events, times, method="linear", **kwargs)
    ode = simulate(model, params, events, times, method="ode", **kwargs)
    assert (linear.method, ode.method) == ("linear", "ode")
    np.testing.assert_array_equal(np.asarray(linear.status), 0)
    np.testing.assert_array_equal(np.asarray(ode.status), 0)
    return linear, ode


def _assert_close(ode, linear):
    np.testing.assert_allclose(
        np.asarray(ode.states), np.asarray(linear.states), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        np.asarray(ode.outputs), np.asarray(linear.outputs), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("n_cmt", [1, 2, 3])
def test_ode_engine_matches_linear_engine(n_cmt, dosing_case, linear_models, grid):
    """ODE = linear engine for every model × dosing case, all states and the concentration
    (rtol 1e-6, atol 1e-9)."""
    linear, ode = _both(
        linear_models[n_cmt], dosing_case.params(n_cmt), dosing_case.events(), grid["times"]
    )
    _assert_close(ode, linear)


def _mixed_regimens():
    """Three subjects, 1, 8 and 5 dose rows: a single bolus; a loading infusion and an
    oral q6h course; an SS infusion followed by oral and iv doses."""
    A = Administration
    return (
        (A(2.0, 100.0, "iv"),),
        (A(0.0, 500.0, "iv", duration=0.5), A(6.0, 200.0, "oral", interval=6.0, additional=6)),
        (
            A(0.0, 40.0, "iv", rate=8.0, steady_state=True, interval=12.0),
            A(12.0, 60.0, "oral", interval=12.0, additional=2),
            A(30.0, 20.0, "iv"),
        ),
    )


@pytest.mark.parametrize("n_cmt", [1, 3])
def test_per_subject_regimens_of_different_lengths_in_one_batch(n_cmt, linear_models, grid):
    """Regimens of 1, 8 and 5 doses padded to one table: each subject's linear result equals
    its own closed form (rtol 1e-9, atol 1e-12 mg/L: padding rows change nothing) and the
    ODE engine equals the linear one (rtol 1e-6, atol 1e-9)."""
    regimen = grid["Regimen"](_mixed_regimens(), f=(1.0, 0.8, 0.6), tlag=(0.0, 0.5, 0.3))
    events = regimen.events()
    assert np.asarray(events.mask).sum(axis=1).tolist() == [1, 8, 5]
    linear, ode = _both(linear_models[n_cmt], regimen.params(n_cmt), events, grid["times"])
    np.testing.assert_allclose(
        np.asarray(linear.outputs[..., 0]), regimen.reference(n_cmt), rtol=1e-9, atol=1e-12
    )
    _assert_close(ode, linear)


def test_masked_rows_are_ignored_whatever_they_hold(linear_models, grid):
    """Padding rows (mask False) filled with large doses at early times, infusions and SS
    flags change nothing: both engines give bit-for-bit the same result as with zero
    padding (exact comparison: masked rows must not enter the computation)."""
    model = linear_models[2]
    regimen = grid["regimens"]["repeated"]
    clean = regimen.events()
    mask = np.asarray(clean.mask)
    junk = lambda a, value: jnp.where(mask, a, value)  # noqa: E731
    dirty = DosingEvents(
        time=junk(clean.time, 1.0),
        amount=junk(clean.amount, 1e6),
        compartment=jnp.where(mask, clean.compartment, grid["central"]),
        rate=junk(clean.rate, 5.0),
        duration=clean.duration,
        steady_state=jnp.where(mask, clean.steady_state, True),
        interval=junk(clean.interval, 12.0),
        mask=clean.mask,
    )
    for method in ("linear", "ode"):
        a = simulate(model, regimen.params(2), clean, grid["times"], method=method)
        b = simulate(model, regimen.params(2), dirty, grid["times"], method=method)
        np.testing.assert_array_equal(np.asarray(b.states), np.asarray(a.states))
        np.testing.assert_array_equal(np.asarray(b.status), 0)


@pytest.mark.parametrize("n_cmt", [2, 3])
def test_doses_into_a_peripheral_compartment(n_cmt, linear_models, grid):
    """Bolus, infusion and SS doses into ``peripheral1`` (and ``peripheral2``): ODE = linear
    (rtol 1e-6, atol 1e-9)."""
    last = grid["peripheral1"] + n_cmt - 2
    doses = [
        [
            Dose(0.0, 100.0, compartment=grid["peripheral1"]),
            Dose(12.0, 50.0, compartment=last, duration=4.0),
        ],
        [Dose(1.0, 80.0, compartment=last, rate=20.0, interval=12.0, additional=2)],
        [
            Dose(
                0.0,
                30.0,
                compartment=grid["peripheral1"],
                steady_state=True,
                interval=8.0,
                additional=3,
            )
        ],
    ]
    events = DosingEvents.from_doses(doses, pad_to=grid["pad_to"])
    params = grid["regimens"]["bolus"].params(n_cmt)
    linear, ode = _both(linear_models[n_cmt], params, events, grid["times"])
    _assert_close(ode, linear)
    # the drug reaches the central compartment only through the intercompartmental flow
    assert float(linear.states[0, 1, grid["central"]]) > 0.0


def test_output_at_a_bolus_time_is_pre_or_post_dose(linear_models, grid):
    """At an output time equal to an IV bolus time, ``at_dose="pre"`` excludes the bolus and
    ``"post"`` includes it: post - pre = D / V in the central concentration, exactly up to
    rounding (rtol 1e-12), in both engines; away from dose times both conventions agree
    (rtol 1e-12); ODE = linear for "post" (rtol 1e-6, atol 1e-9)."""
    model = linear_models[2]
    regimen = grid["regimens"]["repeated"]  # subject 1: 250 mg iv q8h at 0, 8, 16, 24, 32 h
    times = grid["times"]
    params = regimen.params(2)
    pre_lin, pre_ode = _both(model, params, regimen.events(), times, at_dose="pre")
    post_lin, post_ode = _both(model, params, regimen.events(), times, at_dose="post")
    _assert_close(post_ode, post_lin)
    v = grid["subjects"][1]["v"]
    at_dose = np.isin(times, [0.0, 8.0, 16.0, 24.0])
    for pre, post in ((pre_lin, post_lin), (pre_ode, post_ode)):
        jump = np.asarray(post.outputs[1, :, 0] - pre.outputs[1, :, 0])
        np.testing.assert_allclose(jump[at_dose], 250.0 / v, rtol=1e-12)
        np.testing.assert_allclose(
            np.asarray(post.outputs[1, ~at_dose, 0]),
            np.asarray(pre.outputs[1, ~at_dose, 0]),
            rtol=1e-12,
        )
    assert float(pre_lin.outputs[1, 0, 0]) == 0.0  # nothing in the body before the first dose


def test_entries_one_ulp_before_an_output_time(linear_models, grid):
    """An infusion end, a bolus or an oral dose one ulp before an output time that is a power
    of two (1, 2, 8, 16 h) and is followed by more output times must not fail the ODE
    solve (times computed by arithmetic land there): status 0 and ODE = linear (rtol
    1e-6, atol 1e-9).

    Regression: the sub-ulp segment's step size was carried into the next segment as its
    first step; below a power of two one ulp is half an ulp above it, so that step could
    not advance t (t + dt == t) and the solve hit max_steps."""
    below = lambda t: float(np.nextafter(t, 0.0))  # noqa: E731
    doses = [
        [Dose(0.0, 100.0, compartment=grid["central"], duration=below(8.0))],
        [Dose(below(16.0), 250.0, compartment=grid["central"])],
        [
            Dose(below(2.0), 40.0, compartment=grid["depot"]),
            Dose(0.5, 40.0, compartment=grid["central"], duration=below(0.5)),
        ],
    ]
    events = DosingEvents.from_doses(doses, pad_to=grid["pad_to"])
    linear, ode = _both(
        linear_models[2], grid["regimens"]["bolus"].params(2), events, grid["times"]
    )
    _assert_close(ode, linear)


@pytest.mark.parametrize("solver", ["tsit5", "dopri8"])
def test_batched_state_strategy_matches_linear_engine(solver, dosing_case, linear_models, grid):
    """The batched-state strategy integrates each event interval of the shared grid in one
    solve that steps onto its outputs; it too equals the linear engine for every dosing case
    (2-compartment model, rtol 1e-6, atol 1e-9), with either explicit solver."""
    model = linear_models[2]
    params, events = dosing_case.params(2), dosing_case.events()
    linear = simulate(model, params, events, grid["times"], method="linear")
    batch = simulate(
        model, params, events, grid["times"], method="ode", ode_strategy="batch", solver=solver
    )
    np.testing.assert_array_equal(np.asarray(batch.status), 0)
    _assert_close(batch, linear)


@pytest.mark.parametrize("method", ["linear", "ode"])
def test_keep_states_false_returns_the_same_outputs_without_states(method, linear_models, grid):
    """``keep_states=False`` leaves the outputs bitwise unchanged and returns no states."""
    model = linear_models[2]
    params = next(iter(grid["regimens"].values())).params(2)
    events = DosingEvents.repeated(100.0, 12.0, 3, compartment=grid["depot"])
    both = simulate(model, params, events, grid["times"], method=method)
    outputs_only = simulate(model, params, events, grid["times"], method=method, keep_states=False)
    assert outputs_only.states is None
    np.testing.assert_array_equal(np.asarray(outputs_only.outputs), np.asarray(both.outputs))
    np.testing.assert_array_equal(np.asarray(outputs_only.status), np.asarray(both.status))
