"""The semilinear engine (a linear PK part exact, driving a part linear in its own states by
an exponential integrator on a uniform grid) against a closed form and an independent
adaptive solve, the structure it finds, the grids it takes, and per-subject independence.

References and tolerances:
- closed form: a one-compartment IV bolus whose squared concentration drives a first-order
  compartment, ``dE/dt = ke0 · (C² − E)``, ``C = C0 e^{−kt}``:
  ``E(t) = ke0 · C0² / (ke0 − 2k) · (e^{−2kt} − e^{−ke0·t})`` (variation of constants):
  1e-10 relative (the engine's only approximation is a Gauss quadrature of a smooth
  integrand);
- warfarin (Hamberg 2007 structure: 2-compartment S-warfarin PK → Emax inhibition with Hill
  exponent 0.424 → two transit chains → INR): the walking ODE engine (tsit5) at rtol 1e-10,
  atol 1e-12, an adaptive solve of the full system with its own error control. Issue 12
  asks for 1e-6 relative; measured 2.4e-8 on INR over 8 weeks at a 0.5 h grid; asserted
  1e-7 (concentrations 1e-9: the PK is exact). The walking engine at its default
  tolerance (rtol 1e-8) is itself 2.7e-7 away from the same reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from warfarin_subjects import warfarin_subjects

from twinsim.priors import one_compartment, with_indirect_response
from twinsim.simulators import (
    Dose,
    DosingEvents,
    ODEModel,
    SimulationError,
    SolveStatus,
    semilinear_grid,
    semilinear_outputs,
    semilinear_partition,
    simulate,
)


@pytest.fixture(scope="module")
def warfarin():
    return warfarin_subjects(4, seed=11)


def _warfarin_doses(model, n=4, days=21):
    depot = model.route_compartment("oral")
    # own amounts per subject, a dose change after a week, one subject's doses at 06:00
    return DosingEvents.from_doses(
        [
            [
                Dose(24.0 * k + (6.0 if i == 3 else 0.0), (5.0 + i) * (1.5 if k >= 7 else 1.0),
                     compartment=depot)
                for k in range(days)
            ]
            for i in range(n)
        ]
    )  # fmt: skip


def test_warfarin_parts_are_found_from_the_right_hand_side(warfarin):
    model, _ = warfarin
    part = semilinear_partition(model)
    name = lambda idx: [model.states[i] for i in idx]  # noqa: E731
    assert name(part.linear) == ["depot", "central", "peripheral1"]
    assert name(part.driven) == [*(f"inr_chain1_{i}" for i in range(1, 7)), "inr_chain2"]
    # the inhibition enters the first compartment of each chain and reads the central amount
    assert name(part.driven[i] for i in part.inputs) == ["inr_chain1_1", "inr_chain2"]
    assert name(part.linear[i] for i in part.feeds) == ["central"]


def test_structure_the_engine_cannot_take_is_refused():
    """Indirect response I (inhibited kin: linear in R) has parts; II (inhibited kout: the
    coefficient of R depends on C) and a linear model have none."""
    pk = one_compartment(absorption="first_order")
    assert semilinear_partition(with_indirect_response(pk, "I")) is not None
    assert semilinear_partition(with_indirect_response(pk, "II")) is None
    assert semilinear_partition(pk) is None


@pytest.mark.parametrize("at_dose", ["pre", "post"])
def test_warfarin_matches_a_tight_adaptive_solve(warfarin, at_dose):
    model, params = warfarin
    events = _warfarin_doses(model)
    times = jnp.arange(0.0, 24.0 * 21 + 0.25, 0.5)
    assert semilinear_grid(model, events, times) == (0.5, 1008)
    semi = simulate(model, params, events, times, method="semilinear", at_dose=at_dose)
    ref = simulate(
        model, params, events, times, method="ode", at_dose=at_dose, rtol=1e-10, atol=1e-12,
        max_steps=100_000,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(semi.status), 0)
    np.testing.assert_array_equal(np.asarray(ref.status), 0)
    conc, inr = model.output_names.index("conc"), model.output_names.index("inr")
    got, want = np.asarray(semi.outputs), np.asarray(ref.outputs)
    np.testing.assert_allclose(got[..., inr], want[..., inr], rtol=1e-7, atol=0)
    np.testing.assert_allclose(got[..., conc], want[..., conc], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(semi.states), np.asarray(ref.states), 1e-7, 1e-12)
    # the INR moved: the comparison is not of two flat lines
    assert got[..., inr].max() > 1.5


def test_a_nonlinear_drive_matches_its_closed_form():
    k_el, ke0, v, dose = 0.2, 0.7, 30.0, 120.0
    model = ODEModel(
        name="iv1_squared_drive",
        states=("central", "effect"),
        parameters=("cl", "v", "ke0"),
        rhs=lambda t, y, p: {
            "central": -p.cl / p.v * y.central,
            "effect": p.ke0 * ((y.central / p.v) ** 2 - y.effect),
        },
        outputs={"effect": lambda y, p: y.effect},
    )
    assert semilinear_partition(model)[:2] == ((0,), (1,))
    times = jnp.arange(0.0, 48.25, 0.25)
    sol = simulate(
        model, jnp.array([k_el * v, v, ke0]),
        DosingEvents.from_doses([[Dose(0.0, dose, compartment=0)]]),
        times, method="semilinear",
    )  # fmt: skip
    t = np.asarray(times)
    c0 = dose / v
    exact = ke0 * c0**2 / (ke0 - 2 * k_el) * (np.exp(-2 * k_el * t) - np.exp(-ke0 * t))
    np.testing.assert_allclose(np.asarray(sol.outputs)[0, :, 0], exact, rtol=1e-10, atol=1e-14)


def test_a_subject_gets_the_same_bits_alone_and_in_a_batch(warfarin):
    model, params = warfarin
    events = _warfarin_doses(model, n=1, days=7)
    times = jnp.arange(0.0, 24.0 * 7 + 0.25, 1.0)
    many = np.repeat(params[:1], 300, axis=0) * np.linspace(0.8, 1.2, 300)[:, None]
    many[137] = params[0]
    alone = simulate(model, params[:1], events, times, method="semilinear")
    batch = simulate(model, many, events.broadcast(300), times, method="semilinear")
    np.testing.assert_array_equal(np.asarray(batch.outputs)[137], np.asarray(alone.outputs)[0])


def test_grids_it_does_not_take(warfarin):
    model, params = warfarin
    depot = model.route_compartment("oral")
    daily = DosingEvents.from_doses([[Dose(24.0 * k, 5.0, compartment=depot) for k in range(3)]])
    assert semilinear_grid(model, daily, [0.0, 24.0, 72.0]) == (0.5, 144)
    # a time off every 1-second grid, an infusion, a model that has no parts
    assert semilinear_grid(model, daily, [0.0, 1.0 / 7200.0]) is None
    infusion = DosingEvents.from_doses([[Dose(0.0, 5.0, compartment=depot, duration=2.0)]])
    assert semilinear_grid(model, infusion, [0.0, 24.0]) is None
    assert semilinear_grid(one_compartment(), daily, [0.0, 24.0]) is None
    with pytest.raises(SimulationError, match="grid of at least 1 s"):
        simulate(model, params[:1], daily, jnp.array([0.0, 1.0 / 7200.0]), method="semilinear")
    with pytest.raises(SimulationError, match="inside a compiled program needs `grid"):
        jax.jit(lambda p: simulate(model, p, daily, jnp.array([0.0, 24.0]), method="semilinear"))(
            jnp.asarray(params[:1])
        )
    with pytest.raises(SimulationError, match="has none; use method='ode'"):
        simulate(one_compartment(), jnp.array([5.0, 50.0]), daily, jnp.array([1.0]),
                 method="semilinear")  # fmt: skip


def test_a_dose_off_the_grid_fails_that_subject_only(warfarin):
    """Inside ``jit`` the grid is given, not checked on the host: a subject whose dose is
    not on it is reported (UNSUPPORTED_DOSE, NaN outputs); the others are untouched."""
    model, params = warfarin
    depot = model.route_compartment("oral")
    events = DosingEvents.from_doses(
        [[Dose(0.0, 5.0, compartment=depot)], [Dose(0.3, 5.0, compartment=depot)]]
    )
    times = jnp.arange(0.0, 48.5, 0.5)
    run = jax.jit(lambda p: simulate(model, p, events, times, method="semilinear", grid=(0.5, 96)))
    sol = run(jnp.asarray(params[:2]))
    assert list(np.asarray(sol.status)) == [SolveStatus.SUCCESS, SolveStatus.UNSUPPORTED_DOSE]
    assert np.all(np.isfinite(np.asarray(sol.outputs)[0]))
    assert np.all(np.isnan(np.asarray(sol.outputs)[1]))


@pytest.mark.parametrize("forward_only", [False, True])
@pytest.mark.parametrize("scale", [1e-3, 0.7, 6.0, 50.0])
def test_matrix_exponential_matches_scipy(scale, forward_only):
    """The engine's own ``e^A`` (Taylor series after scaling, then squaring — a fixed loop,
    or with ``forward_only`` a ``while`` loop of the squarings needed; no LAPACK, no
    thread pool) against ``scipy.linalg.expm`` (Padé 13, Al-Mohy & Higham 2009): random
    matrices and a transit chain (a Jordan block) at norms from 1e-3 to 50; 1e-12 relative
    to the result's norm. Its forward-mode derivative (the twin's fits) against scipy's
    Fréchet derivative ``expm_frechet``, 1e-10."""
    import scipy.linalg

    from twinsim.simulators._semilinear import _expm

    rng = np.random.default_rng(3)
    chain = -np.eye(7) + np.eye(7, k=-1)
    for a in [rng.normal(size=(3, 3)), rng.normal(size=(7, 7)), chain]:
        a = a * scale / np.abs(a).sum(axis=1).max()
        want = scipy.linalg.expm(a)
        got = np.asarray(_expm(jnp.asarray(a), forward_only=forward_only))
        assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
        e = rng.normal(size=a.shape)
        _, frechet = scipy.linalg.expm_frechet(a, e)
        _, tangent = jax.jvp(
            lambda x: _expm(x, forward_only=forward_only), (jnp.asarray(a),), (jnp.asarray(e),)
        )
        assert np.abs(np.asarray(tangent) - frechet).max() <= 1e-10 * np.abs(frechet).max()


def test_both_modes_differentiate_the_recorded_run(warfarin):
    """``simulate(method="semilinear")`` (the recorded ``scan``, a fixed squaring loop)
    differentiates in reverse mode as in forward mode: the gradient of the day-7 INRs'
    sum with respect to every parameter of a subject, ``jax.grad`` against ``jax.jacfwd``,
    1e-9 relative; and the run to the last output (``semilinear_outputs``, forward mode
    only) gives the forward derivative of the same INRs to 1e-9."""
    model, params = warfarin
    events = _warfarin_doses(model, n=1, days=7)
    times = jnp.arange(0.0, 24.0 * 7 + 0.25, 0.5)
    inr = model.output_names.index("inr")

    def recorded(p):
        out = simulate(model, p[None], events, times, method="semilinear", grid=(0.5, 336))
        return jnp.sum(out.outputs[0, -48:, inr])

    def to_last(p):
        out = semilinear_outputs(model, p[None], events, times[None, -48:], step=0.5)
        return jnp.sum(out[0, :, inr])

    p = jnp.asarray(params[0])
    reverse = np.asarray(jax.grad(recorded)(p))
    forward = np.asarray(jax.jacfwd(recorded)(p))
    direct = np.asarray(jax.jacfwd(to_last)(p))
    scale = np.abs(forward).max()
    assert np.all(np.isfinite(reverse)) and scale > 0
    assert np.abs(reverse - forward).max() <= 1e-9 * scale
    assert np.abs(direct - forward).max() <= 1e-9 * scale


def test_a_run_to_the_last_output_time(warfarin):
    """``grid=(step, None)`` steps to the last output time only (the trial's runs up to
    each titration visit): the recorded scan's numbers to 1e-12 relative, a subject's
    bits the same alone and in a batch of 300 (padded in blocks as the scan is), and no
    states to keep."""
    model, params = warfarin
    events = _warfarin_doses(model, n=1, days=7)
    times = jnp.arange(0.0, 24.0 * 5 + 0.25, 6.0)

    def run(p, ev, grid):
        out = simulate(model, p, ev, times, method="semilinear", grid=grid, keep_states=False)
        return out.outputs

    to_last = run(params[:1], events, (0.5, None))
    recorded = run(params[:1], events, (0.5, 24 * 7 * 2))
    np.testing.assert_allclose(to_last, recorded, rtol=1e-12)
    many = np.repeat(params[:1], 300, axis=0) * np.linspace(0.8, 1.2, 300)[:, None]
    many[137] = params[0]
    batch = run(many, events.broadcast(300), (0.5, None))
    np.testing.assert_array_equal(np.asarray(batch)[137], np.asarray(to_last)[0])
    with pytest.raises(SimulationError, match=r"keeps no states"):
        simulate(model, params[:1], events, times, method="semilinear", grid=(0.5, None))


def test_pieces_with_doses_decided_along_the_way_equal_one_run(warfarin):
    """A titrated trial runs in pieces (``semilinear_segment``): up to a visit, a dose
    decision from the INR seen there, on from the carried state. With every later dose
    changed at each stop, the pieces give the outputs of one run from 0 with the doses as
    finally given (``semilinear_outputs``) to 1e-13 relative, and a piece leaves the
    outputs outside it NaN, reads no dose before its start and reports success."""
    from twinsim.simulators import semilinear_segment

    model, params = warfarin
    depot = model.route_compartment("oral")
    n, days = params.shape[0], 10
    times = np.arange(0.0, 24.0 * days + 0.1, 6.0)
    stops = [72.0, 120.0, 168.0]
    amounts = np.tile(np.linspace(4.0, 7.0, n)[:, None], (1, days))

    def events(a):
        return DosingEvents.from_doses(
            [[Dose(24.0 * k, a[i, k], compartment=depot) for k in range(days)] for i in range(n)]
        )

    step = 0.5
    piece = jax.jit(
        lambda p, ev, t, stop, start: semilinear_segment(
            model, p, ev, t, step=step, stop=stop, start=start
        )
    )
    dose_times = 24.0 * np.arange(days)
    state, pieces = None, np.full((n, times.size, len(model.output_names)), np.nan)
    for j, stop in enumerate([*stops, times[-1]]):
        first = 0.0 if j == 0 else stops[j - 1]
        fed = amounts.copy()
        fed[:, dose_times < first] = 1e6  # doses before the piece's start: never read
        out, status, state = piece(
            params, events(fed), jnp.asarray(np.tile(times, (n, 1))),
            jnp.full(n, round(stop / step)), state,
        )  # fmt: skip
        out = np.asarray(out)
        assert np.all(np.asarray(status) == 0)
        inside = (times >= first) & (times <= stop)
        assert np.all(np.isfinite(out[:, inside])) and np.all(np.isnan(out[:, ~inside]))
        pieces[:, inside] = out[:, inside]
        if j < len(stops):  # the decision: every dose from the stop on changes
            amounts[:, dose_times >= stop] *= 1.0 + 0.1 * (j + 1)
    whole = semilinear_outputs(
        model, params, events(amounts), jnp.asarray(np.tile(times, (n, 1))), step=step
    )
    np.testing.assert_allclose(pieces, np.asarray(whole), rtol=1e-13)
