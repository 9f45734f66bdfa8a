"""Building-block models through the ODE engine against an independent scipy solution.

Reference: ``scipy.integrate.solve_ivp`` (LSODA, rtol 1e-10, atol 1e-12) integrating the
model equations *written out again here by hand* from the cited papers, piecewise
between doses (boluses added between segments, infusions as a constant input over their
segment), so a wrong equation in ``twinsim.priors`` or a wrong dose in the engine both
show. Engine: ``simulate(..., method="ode", rtol=1e-10, atol=1e-12)``.
Tolerance of every comparison: rtol 1e-6, atol 1e-8 (mg, mg/L or response units; the
atol covers states that decay to ~0, such as the depot long after a dose).

One cohort of 3 subjects (different parameters and dose amounts) and one set of output
times serve every model, so each model compiles once.
"""

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from twinsim.priors import (
    michaelis_menten,
    one_compartment,
    transit_compartment,
    two_compartment,
    with_effect_compartment,
    with_emax,
    with_indirect_response,
)
from twinsim.simulators import Dose, DosingEvents, simulate

RTOL, ATOL = 1e-6, 1e-8
# Includes the dose times 0, 12, 24, 36 h (observed pre-dose) and points inside every interval.
TIMES = np.array(
    [
        0.0,
        0.25,
        0.5,
        1.0,
        2.0,
        3.5,
        6.0,
        12.0,
        12.75,
        14.0,
        18.0,
        24.0,
        30.0,
        36.0,
        37.0,
        40.0,
        48.0,
        60.0,
    ]
)
AMOUNTS = (100.0, 200.0, 50.0)  # mg, one per subject
INTERVAL, N_DOSES = 12.0, 4


def _regimen(compartment: int, duration: float = 0.0) -> DosingEvents:
    return DosingEvents.from_doses(
        [
            [
                Dose(
                    0.0,
                    amount,
                    compartment=compartment,
                    duration=duration,
                    interval=INTERVAL,
                    additional=N_DOSES - 1,
                )
            ]
            for amount in AMOUNTS
        ]
    )


def _reference(rhs, y0, compartment, amount, *, f=1.0, lag=0.0, duration=0.0):
    """States at ``TIMES`` by LSODA, piecewise between dose events (pre-dose at a dose time)."""
    starts = [lag + k * INTERVAL for k in range(N_DOSES)]
    bolus = duration == 0.0
    ends = [] if bolus else [s + duration for s in starts]
    breaks = sorted({0.0, *starts, *ends, float(TIMES[-1])})
    y = np.asarray(y0, dtype=float)
    out = np.empty((len(TIMES), len(y)))
    out[TIMES == 0.0] = y
    for a, b in itertools.pairwise(breaks):
        if bolus and a in starts:
            y = y.copy()
            y[compartment] += f * amount
        rate = np.zeros_like(y)
        if not bolus and any(s <= a < e for s, e in zip(starts, ends, strict=True)):
            rate[compartment] = f * amount / duration
        inside = (TIMES > a) & (TIMES <= b)
        t_eval = np.unique(np.append(TIMES[inside], b))
        sol = solve_ivp(
            lambda t, x, rate=rate: np.asarray(rhs(x)) + rate,
            (a, b),
            y,
            method="LSODA",
            rtol=1e-10,
            atol=1e-12,
            t_eval=t_eval,
        )
        assert sol.success, sol.message
        out[inside] = sol.y[:, np.searchsorted(t_eval, TIMES[inside])].T
        y = sol.y[:, -1]
    return out


def _engine(model, params, events):
    sol = simulate(
        model, jnp.asarray(params), events, jnp.asarray(TIMES), method="ode", rtol=1e-10, atol=1e-12
    )
    assert sol.failures() == {}
    return np.asarray(sol.states), np.asarray(sol.outputs)


def test_michaelis_menten_oral_with_lag():
    """1-cmt, first-order absorption with F and lag, Michaelis–Menten elimination.

    dDepot/dt = −ka·Depot; dA/dt = ka·Depot − vmax·C/(km + C), C = A/V; oral doses are
    F·AMT at t + ALAG. Peak C ≈ km, so elimination is in its nonlinear range. Tolerance
    and reference: module docstring.
    """
    model = michaelis_menten(absorption=True, lag=True)
    assert model.parameters == ("vmax", "km", "v", "ka", "f_oral", "lag_oral")
    assert model.states == ("depot", "central")
    # vmax mg/h, km mg/L, v L, ka 1/h, F, lag h
    params = np.array(
        [
            [20.0, 2.0, 40.0, 1.2, 0.8, 0.4],
            [35.0, 4.0, 60.0, 0.7, 1.0, 0.75],
            [8.0, 1.0, 25.0, 2.5, 0.6, 0.1],
        ]
    )
    states, outputs = _engine(model, params, _regimen(model.route_compartment("oral")))
    for i, (vmax, km, v, ka, f, lag) in enumerate(params):

        def rhs(x, vmax=vmax, km=km, v=v, ka=ka):
            c = x[1] / v
            return [-ka * x[0], ka * x[0] - vmax * c / (km + c)]

        ref = _reference(rhs, [0.0, 0.0], 0, AMOUNTS[i], f=f, lag=lag)
        np.testing.assert_allclose(states[i], ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(outputs[i, :, 0], ref[:, 1] / v, rtol=RTOL, atol=ATOL)


def test_transit_absorption_matches_savic():
    """Transit absorption, n = 3 (Savic et al. 2007), 1-cmt linear disposition.

    Chain transit0..transit3 each emptied at ktr = (n + 1)/MTT into the depot (ka), then
    central (CL, V). Two references: LSODA on the hand-written chain, and Savic's eq. 3 for
    the last transit compartment, A_n(t) = Σ_doses F·D·(ktr·τ)^n/n!·e^{−ktr·τ} (τ = time
    since dose; superposition holds as the chain is linear). Tolerance: module docstring.
    """
    n = 3
    model = transit_compartment(n)
    assert model.states == ("transit0", "transit1", "transit2", "transit3", "depot", "central")
    assert model.parameters == ("cl", "v", "mtt", "ka", "f_oral")
    params = np.array(
        [[4.0, 30.0, 1.5, 1.0, 0.9], [2.0, 50.0, 3.0, 0.5, 0.7], [8.0, 20.0, 0.8, 2.0, 1.0]]
    )
    states, outputs = _engine(model, params, _regimen(model.route_compartment("oral")))
    for i, (cl, v, mtt, ka, f) in enumerate(params):
        ktr = (n + 1) / mtt

        def rhs(x, cl=cl, v=v, ka=ka, ktr=ktr):
            chain = [-ktr * x[0]] + [ktr * (x[k - 1] - x[k]) for k in range(1, n + 1)]
            return [*chain, ktr * x[n] - ka * x[n + 1], ka * x[n + 1] - cl / v * x[n + 2]]

        ref = _reference(rhs, np.zeros(n + 3), 0, AMOUNTS[i], f=f)
        np.testing.assert_allclose(states[i], ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(outputs[i, :, 0], ref[:, -1] / v, rtol=RTOL, atol=ATOL)

        savic = np.zeros(len(TIMES))
        for k in range(N_DOSES):
            tau = TIMES - k * INTERVAL
            on = tau > 0  # pre-dose at the dose time itself
            savic[on] += (
                f * AMOUNTS[i] * (ktr * tau[on]) ** n / math.factorial(n) * np.exp(-ktr * tau[on])
            )
        np.testing.assert_allclose(states[i, :, n], savic, rtol=RTOL, atol=ATOL)


def test_effect_compartment_on_two_compartment_oral():
    """Effect compartment (Sheiner et al. 1979) driven by a 2-cmt oral model.

    dCe/dt = ke0·(A1/V1 − Ce) appended to depot → central ⇄ peripheral1 with CL, Q.
    Tolerance and reference: module docstring.
    """
    model = with_effect_compartment(two_compartment(absorption=True))
    assert model.states == ("depot", "central", "peripheral1", "effect_site")
    assert model.output_names == ("conc", "ce")
    # cl, v1, q, v2, ka, f_oral, ke0
    params = np.array(
        [
            [5.0, 20.0, 3.0, 40.0, 1.5, 1.0, 0.3],
            [2.0, 35.0, 8.0, 15.0, 0.6, 0.75, 1.2],
            [9.0, 12.0, 1.0, 60.0, 3.0, 0.5, 0.05],
        ]
    )
    states, outputs = _engine(model, params, _regimen(model.route_compartment("oral")))
    for i, (cl, v1, q, v2, ka, f, ke0) in enumerate(params):

        def rhs(x, cl=cl, v1=v1, q=q, v2=v2, ka=ka, ke0=ke0):
            c, cp = x[1] / v1, x[2] / v2
            return [-ka * x[0], ka * x[0] - cl * c - q * (c - cp), q * (c - cp), ke0 * (c - x[3])]

        ref = _reference(rhs, np.zeros(4), 0, AMOUNTS[i], f=f)
        np.testing.assert_allclose(states[i], ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(
            outputs[i], np.stack([ref[:, 1] / v1, ref[:, 3]], axis=1), rtol=RTOL, atol=ATOL
        )


def test_sigmoid_emax_on_effect_site_after_infusions():
    """Sigmoid Emax (Holford & Sheiner 1981) on Ce, 1-cmt IV, 1-h infusions.

    E = E0 + Emax·Ce^γ/(EC50^γ + Ce^γ), dCe/dt = ke0·(A/V − Ce), dA/dt = −CL/V·A + R(t).
    Non-integer γ. Tolerance and reference: module docstring.
    """
    model = with_emax(with_effect_compartment(one_compartment()), driver="ce")
    assert model.parameters == ("cl", "v", "ke0", "e0", "emax", "ec50", "gamma")
    assert model.output_names == ("conc", "ce", "effect")
    params = np.array(
        [
            [5.0, 50.0, 0.5, 80.0, -30.0, 1.5, 2.5],
            [3.0, 30.0, 2.0, 10.0, 50.0, 4.0, 0.7],
            [12.0, 70.0, 0.1, 0.0, 100.0, 0.5, 1.0],
        ]
    )
    states, outputs = _engine(model, params, _regimen(model.route_compartment("iv"), duration=1.0))
    for i, (cl, v, ke0, e0, emax, ec50, gamma) in enumerate(params):

        def rhs(x, cl=cl, v=v, ke0=ke0):
            return [-cl / v * x[0], ke0 * (x[0] / v - x[1])]

        ref = _reference(rhs, np.zeros(2), 0, AMOUNTS[i], duration=1.0)
        ce = ref[:, 1]
        effect = e0 + emax * ce**gamma / (ec50**gamma + ce**gamma)
        np.testing.assert_allclose(states[i], ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(
            outputs[i], np.stack([ref[:, 0] / v, ce, effect], axis=1), rtol=RTOL, atol=ATOL
        )


@pytest.mark.parametrize(("kind", "hill"), [(1, False), (2, True), (3, False), (4, True)])
def test_indirect_response(kind, hill):
    """Indirect response models I–IV (Dayneka, Garg & Jusko 1993, eqs. 1–4), oral 1-cmt PK.

    I:  dR/dt = kin·(1 − Imax·H) − kout·R     II: dR/dt = kin − kout·(1 − Imax·H)·R
    III: dR/dt = kin·(1 + Emax·H) − kout·R    IV: dR/dt = kin − kout·(1 + Emax·H)·R
    with H = C^γ/(C50^γ + C^γ) (γ = 1 without Hill) and R(0) = kin/kout. Kinds II and IV
    use a Hill coefficient. Tolerance and reference: module docstring.
    """
    model = with_indirect_response(one_compartment(absorption=True), kind, hill=hill)
    drug = ("imax", "ic50") if kind <= 2 else ("emax", "ec50")
    assert model.parameters == (
        "cl",
        "v",
        "ka",
        "f_oral",
        "kin",
        "kout",
        *drug,
        *(("gamma",) if hill else ()),
    )
    assert model.states == ("depot", "central", "response")
    # cl, v, ka, f_oral, kin, kout, imax|emax, ic50|ec50, gamma
    params = np.array(
        [
            [5.0, 50.0, 1.0, 0.9, 10.0, 0.5, 0.8, 1.0, 1.8],
            [2.0, 30.0, 0.4, 1.0, 3.0, 0.1, 0.95, 3.0, 0.6],
            [10.0, 80.0, 2.0, 0.7, 40.0, 2.0, 0.5, 0.3, 3.0],
        ]
    )
    if kind > 2:
        params[:, 6] *= 4.0  # stimulation: fold increase, not a fraction
    if not hill:
        params = params[:, :-1]
    states, outputs = _engine(model, params, _regimen(model.route_compartment("oral")))
    for i, row in enumerate(params):
        cl, v, ka, f, kin, kout, magnitude, c50 = row[:8]
        gamma = row[8] if hill else 1.0

        def rhs(
            x, cl=cl, v=v, ka=ka, kin=kin, kout=kout, magnitude=magnitude, c50=c50, gamma=gamma
        ):
            c = x[1] / v
            h = max(c, 0.0) ** gamma / (c50**gamma + max(c, 0.0) ** gamma)
            dr = {
                1: kin * (1 - magnitude * h) - kout * x[2],
                2: kin - kout * (1 - magnitude * h) * x[2],
                3: kin * (1 + magnitude * h) - kout * x[2],
                4: kin - kout * (1 + magnitude * h) * x[2],
            }[kind]
            return [-ka * x[0], ka * x[0] - cl * c, dr]

        ref = _reference(rhs, [0.0, 0.0, kin / kout], 0, AMOUNTS[i], f=f)
        np.testing.assert_allclose(states[i], ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(
            outputs[i], np.stack([ref[:, 1] / v, ref[:, 2]], axis=1), rtol=RTOL, atol=ATOL
        )
        # The drug moved the response away from baseline, in the direction of its kind.
        moved = ref[TIMES == 14.0, 2][0] - kin / kout
        assert (moved < 0) if kind in (1, 4) else (moved > 0)
