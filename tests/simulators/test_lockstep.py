"""The ODE engine's lockstep strategy (``simulators/_lockstep.py``, the default for concrete
inputs): every subject its own adaptive Runge–Kutta steps, all subjects in one loop.

References and tolerances:

- exact solutions: the linear engine (matrix exponential) for a two-compartment oral model
  and for the library's linear drugs (vancomycin: 1 h infusions; theophylline: oral) —
  lockstep at rtol 1e-8 within 1e-6 relative (issue 12's agreement tolerance), atol 1e-9;
- an independent solver: scipy's ``solve_ivp`` (DOP853, rtol 1e-12, atol 1e-14) on the
  Michaelis–Menten model, piecewise between doses — within 1e-6 relative;
- the walking engine's ``vmap`` strategy (diffrax per subject) on warfarin, the nonlinear
  library drug — within 1e-6 relative on every output and state;
- batch invariance: a subject's outputs alone and in a batch of 300 others with their own
  parameters, dose times and output times, bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from warfarin_subjects import warfarin_subjects

from twinsim.priors import drug_model, michaelis_menten, two_compartment
from twinsim.simulators import Dose, DosingEvents, SimulationError, SolveStatus, simulate

RTOL, ATOL = 1e-6, 1e-9


def _mm_cohort(n, seed=3):
    """Michaelis–Menten oral subjects, each with its own dose times, amounts and outputs."""
    model = michaelis_menten(absorption="first_order")
    rng = np.random.default_rng(seed)
    typical = {"vmax": 20.0, "km": 2.0, "v": 40.0, "ka": 1.2, "f_oral": 0.8}
    params = np.array([[typical[name] for name in model.parameters]] * n)
    params *= np.exp(0.3 * rng.normal(size=params.shape))
    params[:, model.parameters.index("f_oral")] = 0.8
    depot = model.route_compartment("oral")
    events = DosingEvents.from_doses(
        [
            [Dose(12.0 * k + rng.uniform(0, 3), rng.uniform(50, 200), compartment=depot)
             for k in range(int(rng.integers(2, 6)))]
            for _ in range(n)
        ]
    )  # fmt: skip
    times = np.sort(rng.uniform(0.0, 72.0, size=(n, 15)), axis=1)
    return model, params, events, times


def test_lockstep_is_the_default_for_concrete_inputs_and_vmap_under_jit():
    model, params, events, times = _mm_cohort(4)
    auto = simulate(model, params, events, times)
    lock = simulate(model, params, events, times, ode_strategy="lockstep")
    vmap = simulate(model, params, events, times, ode_strategy="vmap")
    np.testing.assert_array_equal(np.asarray(auto.outputs), np.asarray(lock.outputs))
    assert not np.array_equal(np.asarray(auto.outputs), np.asarray(vmap.outputs))
    np.testing.assert_allclose(np.asarray(lock.outputs), np.asarray(vmap.outputs), RTOL, ATOL)
    # traced inputs (jit, and so grad: test_gradients.py) take the reverse-differentiable
    # per-subject diffrax solves
    jitted = jax.jit(lambda p: simulate(model, p, events, times).outputs)(jnp.asarray(params))
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(vmap.outputs))


def test_a_subjects_numbers_do_not_depend_on_the_batch():
    """Subject 7 alone, with the first 50 and in a batch of 300 (two blocks of 256, padded):
    its outputs and states are equal bit for bit."""
    model, params, events, times = _mm_cohort(300)
    whole = simulate(model, params, events, times, ode_strategy="lockstep")
    rows = lambda k: jax.tree.map(lambda a: a[k], events)  # noqa: E731
    some = simulate(model, params[:50], rows(slice(50)), times[:50], ode_strategy="lockstep")
    alone = simulate(model, params[7:8], rows(slice(7, 8)), times[7:8], ode_strategy="lockstep")
    assert np.all(np.asarray(whole.status) == 0)
    for part, k in ((some, 7), (alone, 0)):
        np.testing.assert_array_equal(np.asarray(part.outputs[k]), np.asarray(whole.outputs[7]))
        np.testing.assert_array_equal(np.asarray(part.states[k]), np.asarray(whole.states[7]))


def _dop853(model, p, doses, times):
    """One subject by scipy's DOP853, stopping at every dose (bolus into the depot, taken
    before an output at the same time: ``at_dose="post"``)."""
    names = model.parameters
    vmax, km, v, ka, f = (p[names.index(k)] for k in ("vmax", "km", "v", "ka", "f_oral"))

    def rhs(_t, y):
        c = y[1] / v
        return [-ka * y[0], ka * y[0] - vmax * c / (km + c)]

    def advance(y, t0, t1):
        if t1 <= t0:
            return y
        return solve_ivp(rhs, (t0, t1), y, method="DOP853", rtol=1e-12, atol=1e-14).y[:, -1]

    y, t, pending, out = np.zeros(2), 0.0, sorted(doses, key=lambda d: d.time), []
    for ti in times:
        while pending and pending[0].time <= ti:
            dose = pending.pop(0)
            y, t = advance(y, t, dose.time), dose.time
            y = y + np.array([dose.amount * f, 0.0])
        y, t = advance(y, t, ti), ti
        out.append(y[1] / v)
    return np.array(out)


def test_michaelis_menten_matches_scipy_dop853():
    model, params, events, times = _mm_cohort(6, seed=11)
    sol = simulate(model, params, events, times, ode_strategy="lockstep", at_dose="post")
    depot = model.route_compartment("oral")
    for i in range(6):
        amount = np.asarray(events.amount[i])
        t_dose = np.asarray(events.time[i])
        mask = np.asarray(events.mask[i])
        doses = [
            Dose(float(t), float(a), compartment=depot)
            for t, a, m in zip(t_dose, amount, mask, strict=True)
            if m
        ]
        expected = _dop853(model, params[i], doses, times[i])
        np.testing.assert_allclose(np.asarray(sol.outputs[i, :, 0]), expected, RTOL, ATOL)


@pytest.mark.parametrize("solver", ["tsit5", "dopri8"])
def test_two_compartment_oral_matches_the_exact_linear_engine(solver):
    """The engines benchmark's scenario (100 mg q12h × 28, hourly outputs, 30 % BSV)."""
    model = two_compartment(absorption="first_order")
    rng = np.random.default_rng(5)
    typical = np.array([5.0, 50.0, 10.0, 100.0, 1.0, 1.0])
    params = typical * np.exp(0.3 * rng.normal(size=(40, 6)) * np.array([1, 1, 0, 0, 1, 0]))
    events = DosingEvents.repeated(100.0, 12.0, 28, compartment=model.route_compartment("oral"))
    times = jnp.arange(0.0, 337.0)
    exact = simulate(model, params, events, times, method="linear", keep_states=False)
    lock = simulate(model, params, events, times, method="ode", solver=solver, keep_states=False)
    np.testing.assert_allclose(np.asarray(lock.outputs), np.asarray(exact.outputs), RTOL, ATOL)


@pytest.mark.parametrize("drug", ["vancomycin", "theophylline"])
def test_linear_library_drugs_match_their_exact_solution(drug):
    """Vancomycin (1 h infusions into the central compartment) and theophylline (oral) by
    the ODE engine's lockstep strategy against their exact linear solution."""
    pm = drug_model(drug, **({"cessation": False} if drug == "theophylline" else {}))
    model = pm.structural
    covariates = {
        "vancomycin": {"weight": 70.0, "crcl": 90.0, "dialysis": 0},
        "theophylline": {"weight": 70.0, "smoking": 0, "smoking_quit_time": np.inf},
    }[drug]
    params = np.asarray(pm.typical_parameters(covariates))[0] * np.exp(
        0.2 * np.random.default_rng(1).normal(size=(5, len(model.parameters)))
    )
    if drug == "vancomycin":
        events = DosingEvents.repeated(
            1000.0, 12.0, 6, duration=1.0, compartment=model.route_compartment("iv")
        )
    else:
        events = DosingEvents.repeated(300.0, 12.0, 6, compartment=model.route_compartment("oral"))
    times = jnp.linspace(0.0, 80.0, 161)
    exact = simulate(model, params, events, times, method="linear")
    lock = simulate(model, params, events, times, method="ode", ode_strategy="lockstep")
    np.testing.assert_array_equal(np.asarray(lock.status), 0)
    np.testing.assert_allclose(np.asarray(lock.outputs), np.asarray(exact.outputs), RTOL, ATOL)


def test_warfarin_matches_the_per_subject_diffrax_solves():
    model, params = warfarin_subjects(4, seed=2)
    depot = model.route_compartment("oral")
    events = DosingEvents.from_doses(
        [[Dose(24.0 * k + 3.0 * i, 4.0 + i, compartment=depot) for k in range(8)] for i in range(4)]
    )
    times = jnp.concatenate([jnp.arange(0.0, 240.0, 6.0), jnp.array([240.5, 400.0])])
    lock = simulate(model, params, events, times, method="ode", ode_strategy="lockstep")
    vmap = simulate(model, params, events, times, method="ode", ode_strategy="vmap")
    np.testing.assert_array_equal(np.asarray(lock.status), 0)
    np.testing.assert_allclose(np.asarray(lock.outputs), np.asarray(vmap.outputs), RTOL, ATOL)
    np.testing.assert_allclose(np.asarray(lock.states), np.asarray(vmap.states), RTOL, ATOL)


def test_a_failed_subject_is_reported_for_that_subject_only():
    model, params, events, times = _mm_cohort(5)
    bad = params.copy()
    bad[2, model.parameters.index("km")] = np.nan
    sol = simulate(model, bad, events, times, ode_strategy="lockstep")
    status = np.asarray(sol.status)
    assert status[2] == SolveStatus.NONFINITE and np.all(np.delete(status, 2) == 0)
    assert np.all(np.isnan(np.asarray(sol.outputs[2])))
    ok = simulate(model, params, events, times, ode_strategy="lockstep")
    np.testing.assert_array_equal(np.asarray(sol.outputs[3]), np.asarray(ok.outputs[3]))
    few = simulate(model, params, events, times, ode_strategy="lockstep", max_steps=2)
    assert np.all(np.asarray(few.status) == SolveStatus.MAX_STEPS)


def test_lockstep_needs_an_explicit_solver():
    model, params, events, times = _mm_cohort(2)
    with pytest.raises(SimulationError, match=r"'lockstep' takes an explicit solver .*kvaerno5"):
        simulate(model, params, events, times, ode_strategy="lockstep", solver="kvaerno5")
    # the stiff solver under "auto" takes the per-subject diffrax solves, and agrees
    stiff = simulate(model, params, events, times, solver="kvaerno5", keep_states=False)
    lock = simulate(model, params, events, times, keep_states=False)
    assert np.all(np.asarray(stiff.status) == 0)
    np.testing.assert_allclose(np.asarray(stiff.outputs), np.asarray(lock.outputs), 1e-5, ATOL)
