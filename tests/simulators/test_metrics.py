"""Exposure metrics against closed-form PK (Gibaldi & Perrier, *Pharmacokinetics*, 2nd ed., 1982).

Concentration profiles are built from the closed forms with numpy, so these tests do not
depend on the engine; one test at the end runs :func:`twinsim.simulators.simulate`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinsim.simulators._metrics import (
    MetricsError,
    auc,
    auc_interval,
    auc_tau,
    cmax,
    cmin,
    exposure_metrics,
    half_life,
    tmax,
    trough,
)

# 1-cmt IV bolus: D = 100 mg, V = 20 L, CL = 5 L/h -> k = 0.25 /h
DOSE, V, CL = 100.0, 20.0, 5.0
K = CL / V
# 1-cmt oral (theophylline-like, nlmixr2 fit in REFERENCES.md): ka 1.57 /h, CL 2.76 L/h, V 31.5 L
F_ORAL, DOSE_ORAL, KA, CL_ORAL, V_ORAL = 0.9, 320.0, 1.57, 2.76, 31.5
K_ORAL = CL_ORAL / V_ORAL


def iv_bolus(t):
    return DOSE / V * np.exp(-K * np.asarray(t))


def bateman(t, dose=DOSE_ORAL):
    t = np.asarray(t)
    return F_ORAL * dose * KA / (V_ORAL * (KA - K_ORAL)) * (np.exp(-K_ORAL * t) - np.exp(-KA * t))


IRREGULAR = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0])


# --------------------------------------------------------------------------- IV bolus


def test_iv_bolus_log_down_is_exact():
    """C = D/V e^{-kt}: log-down trapezoid AUC_last = D/(V k) (1 - e^{-k t_last}) exactly,
    AUC_inf = D/CL, t½ = ln2/k, r² = 1 (closed forms; rtol 1e-12 = rounding only)."""
    conc = iv_bolus(IRREGULAR)
    m = exposure_metrics(IRREGULAR, conc)
    np.testing.assert_allclose(m.auc_last, DOSE / (V * K) * (1 - math.exp(-K * 24.0)), rtol=1e-12)
    np.testing.assert_allclose(m.auc_inf, DOSE / CL, rtol=1e-12)
    np.testing.assert_allclose(m.half_life, math.log(2) / K, rtol=1e-12)
    np.testing.assert_allclose(m.lambda_z, K, rtol=1e-12)
    np.testing.assert_allclose(m.r_squared, 1.0, rtol=1e-12)
    assert bool(m.half_life_estimable)
    assert float(m.cmax) == DOSE / V and float(m.tmax) == 0.0
    np.testing.assert_allclose(m.cmin, iv_bolus(24.0), rtol=1e-15)
    assert m.auc_tau is None and m.trough is None
    np.testing.assert_allclose(auc(IRREGULAR, conc), m.auc_last, rtol=1e-15)


def test_linear_trapezoid_overestimates_a_decline_and_is_exact_for_lines():
    """The plain trapezoid overestimates a convex decline (AUC_last exact value as above) and
    is exact for a piecewise-linear profile, as is the default rule on a rising one (rtol 1e-14)."""
    exact = DOSE / (V * K) * (1 - math.exp(-K * 24.0))
    linear = float(auc(IRREGULAR, iv_bolus(IRREGULAR), method="linear"))
    assert linear > exact * 1.01
    rising = 2.0 + 0.5 * IRREGULAR
    expected = 2.0 * 24.0 + 0.25 * 24.0**2
    np.testing.assert_allclose(auc(IRREGULAR, rising, method="linear"), expected, rtol=1e-14)
    np.testing.assert_allclose(auc(IRREGULAR, rising), expected, rtol=1e-14)


def test_partial_auc_interpolates_at_the_ends_by_the_rule():
    """Off-grid limits: ∫_a^b D/V e^{-kt} dt = D/(Vk)(e^{-ka} - e^{-kb}) exactly (log interpolation
    of an exponential is exact) and ∫ of a line is exact with linear-up (rtol 1e-12)."""
    a, b = 1.3, 7.1
    expected = DOSE / (V * K) * (math.exp(-K * a) - math.exp(-K * b))
    np.testing.assert_allclose(
        auc_interval(IRREGULAR, iv_bolus(IRREGULAR), a, b), expected, rtol=1e-12
    )
    rising = 2.0 + 0.5 * IRREGULAR
    expected_line = 2.0 * (b - a) + 0.25 * (b**2 - a**2)
    np.testing.assert_allclose(auc_interval(IRREGULAR, rising, a, b), expected_line, rtol=1e-12)
    # a zero-width interval has no area; the full range equals AUC_last
    assert float(auc_interval(IRREGULAR, iv_bolus(IRREGULAR), 5.0, 5.0)) == 0.0
    np.testing.assert_allclose(
        auc_interval(IRREGULAR, iv_bolus(IRREGULAR), 0.0, 24.0),
        auc(IRREGULAR, iv_bolus(IRREGULAR)),
        rtol=1e-13,
    )


def test_trough_off_grid_interpolates_consistently():
    """The value between samples follows the segment's rule: exact for an exponential decline
    and for a line (rtol 1e-13)."""
    np.testing.assert_allclose(
        trough(IRREGULAR, iv_bolus(IRREGULAR), 5.0), iv_bolus(5.0), rtol=1e-13
    )
    np.testing.assert_allclose(trough(IRREGULAR, 1.0 + IRREGULAR, 5.0), 6.0, rtol=1e-13)


def test_repeated_iv_bolus_pre_and_post_dose_samples():
    """Three 100 mg IV boluses q12h sampled with both pre- and post-dose values at 12 and 24 h.

    Trough at a dose time is the pre-dose sample; AUC over [12, 24] is the exact integral
    Σ_j D/(Vk)(e^{-k(12-t_j)} - e^{-k(24-t_j)}) over doses t_j ≤ 12 (superposition, rtol 1e-12).
    """
    doses = np.array([0.0, 12.0, 24.0])
    grid = np.unique(np.concatenate([np.linspace(0, 36, 19), [1.7, 13.3]]))
    # duplicate the dose times: (pre, post) in that order
    times = np.sort(np.concatenate([grid, [12.0, 24.0]]), kind="stable")
    conc = np.zeros_like(times)
    for i, t in enumerate(times):
        post = i > 0 and times[i - 1] == t  # second of a duplicated time is post-dose
        given_doses = doses[(doses < t) | ((doses == t) & (post or t == 0.0))]
        conc[i] = np.sum(DOSE / V * np.exp(-K * (t - given_doses)))
    pre_12 = DOSE / V * math.exp(-K * 12.0)
    np.testing.assert_allclose(trough(times, conc, 12.0), pre_12, rtol=1e-13)
    expected = sum(
        DOSE / (V * K) * (math.exp(-K * (12.0 - tj)) - math.exp(-K * (24.0 - tj)))
        for tj in (0.0, 12.0)
    )
    np.testing.assert_allclose(auc_tau(times, conc, 12.0, 12.0), expected, rtol=1e-12)
    m = exposure_metrics(times, conc, tau=12.0, start=12.0)
    np.testing.assert_allclose(m.auc_tau, expected, rtol=1e-12)
    np.testing.assert_allclose(m.trough, trough(times, conc, 24.0), rtol=1e-15)
    # window [12, 18]: both samples at 12 h count (pre and post), the post-dose one is larger
    np.testing.assert_allclose(
        cmax(times, conc, start=12.0, end=18.0), pre_12 + DOSE / V, rtol=1e-13
    )
    assert float(tmax(times, conc, start=12.0, end=18.0)) == 12.0
    # ... and the pre-dose sample at 12 h is the smallest
    np.testing.assert_allclose(cmin(times, conc, start=12.0, end=18.0), pre_12, rtol=1e-15)


# --------------------------------------------------------------------------- oral (Bateman)


def test_oral_bateman_on_a_fine_grid():
    """1-cmt oral, closed forms: Tmax = ln(ka/k)/(ka-k), Cmax = (F D/V)(ka/k)^{-k/(ka-k)},
    AUC_0-∞ = F D/CL, t½ = ln2/k (Gibaldi & Perrier ch. 1).

    Grid 0-96 h every 0.01 h. Tolerances: |ΔTmax| ≤ dt/2 (grid spacing); Cmax rtol 1e-6
    (quadratic peak error |C''| (dt/2)² / 2 / Cmax ≈ 2e-7); AUC: twice the leading error of
    the linear-up trapezoid, (dt²/12)(C'(0) - C'(Tmax)) = dt² F D ka / (12 V) ≈ 1.2e-6
    relative (the log-down decline is nearly exact); t½ rtol 1e-9 (e^{-ka t} ≈ 1e-65 at the
    last points).
    """
    dt = 0.01
    t = np.linspace(0.0, 96.0, 9601)
    m = exposure_metrics(t, bateman(t))
    t_max = math.log(KA / K_ORAL) / (KA - K_ORAL)
    c_max = F_ORAL * DOSE_ORAL / V_ORAL * (KA / K_ORAL) ** (-K_ORAL / (KA - K_ORAL))
    assert abs(float(m.tmax) - t_max) <= dt / 2
    np.testing.assert_allclose(m.cmax, c_max, rtol=1e-6)
    exact_auc = F_ORAL * DOSE_ORAL / CL_ORAL
    rising_error = dt**2 * F_ORAL * DOSE_ORAL * KA / (12 * V_ORAL) / exact_auc
    np.testing.assert_allclose(m.auc_inf, exact_auc, rtol=2 * rising_error)
    assert float(m.auc_inf) < exact_auc  # linear-up underestimates the concave rise
    np.testing.assert_allclose(m.half_life, math.log(2) / K_ORAL, rtol=1e-9)
    assert float(m.cmin) == 0.0  # pre-absorption sample at t = 0


def test_oral_steady_state_auc_tau_equals_f_dose_over_cl():
    """Steady state by superposition of 40 doses q12h (accumulation e^{-40·12k} ≈ 1e-19):
    AUC_τ = F D/CL and C_trough = F D ka/(V(ka-k)) (e^{-kτ}/(1-e^{-kτ}) - e^{-ka τ}/(1-e^{-ka τ}))
    (Gibaldi & Perrier ch. 3). Grid every 0.02 h; AUC within twice the leading linear-up
    error dt² F D ka / (12 V) (≈ 4.6e-6 relative, as in the single-dose test); trough rtol 1e-10
    (closed form, the last interval's accumulation is complete to 1e-19)."""
    tau, n_doses, dt = 12.0, 40, 0.02
    t = np.linspace(0.0, tau * n_doses, int(tau * n_doses / dt) + 1)
    conc = np.zeros_like(t)
    for j in range(n_doses):
        after = t > j * tau  # pre-dose at the dose time; the Bateman term is 0 there anyway
        conc[after] += bateman(t[after] - j * tau)
    start = tau * (n_doses - 1)
    expected_trough = (
        F_ORAL * DOSE_ORAL * KA / (V_ORAL * (KA - K_ORAL))
        * (math.exp(-K_ORAL * tau) / (1 - math.exp(-K_ORAL * tau)) - math.exp(-KA * tau) / (1 - math.exp(-KA * tau)))
    )  # fmt: skip
    m = exposure_metrics(t, conc, tau=tau)  # default: the last interval
    exact_auc = F_ORAL * DOSE_ORAL / CL_ORAL
    rising_error = dt**2 * F_ORAL * DOSE_ORAL * KA / (12 * V_ORAL) / exact_auc
    np.testing.assert_allclose(m.auc_tau, exact_auc, rtol=2 * rising_error)
    np.testing.assert_allclose(auc_tau(t, conc, start, tau), m.auc_tau, rtol=1e-12)
    np.testing.assert_allclose(m.trough, expected_trough, rtol=1e-10)
    np.testing.assert_allclose(trough(t, conc, start), expected_trough, rtol=1e-10)


# --------------------------------------------------------------------------- half-life edge cases


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param([1.0, 2.0, 3.0], id="rising"),
        pytest.param([1.0, 1.0, 1.0], id="flat"),
        pytest.param([2.0, 1.0, 0.0], id="zero"),
        pytest.param([2.0, -1.0, 0.5], id="negative"),
        pytest.param([2.0, np.nan, 0.5], id="nan"),
        pytest.param([2.0, np.inf, 0.5], id="inf"),
    ],
)
def test_half_life_not_estimable_is_flagged_not_nan(tail):
    """No terminal decline of positive, finite values: every output finite (0) and the flag False."""
    t = np.array([0.0, 1.0, 2.0, 4.0, 8.0])
    conc = np.concatenate([[0.0, 5.0], tail])
    hl = half_life(t, conc)
    assert not bool(hl.estimable)
    assert (float(hl.half_life), float(hl.lambda_z), float(hl.r_squared)) == (0.0, 0.0, 0.0)
    m = exposure_metrics(t, conc)
    assert not bool(m.half_life_estimable)
    assert float(m.half_life) == 0.0 and float(m.auc_inf) == 0.0


def test_half_life_needs_distinct_times():
    """Repeated last times give no slope: not estimable, no NaN."""
    hl = half_life([0.0, 1.0, 2.0, 2.0], [5.0, 4.0, 3.0, 2.0], n_points=2)
    assert not bool(hl.estimable) and float(hl.half_life) == 0.0


def test_half_life_uses_only_the_last_points():
    """Bi-exponential C = 10e^{-t} + e^{-0.1t}: with the last 3 of 0..72 h samples (fast phase
    ≈ e^{-48} ≈ 1e-21 of the slow) t½ = ln2/0.1 (rtol 1e-9); with all points it is shorter."""
    t = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 48.0, 60.0, 72.0])
    conc = 10 * np.exp(-t) + np.exp(-0.1 * t)
    np.testing.assert_allclose(half_life(t, conc).half_life, math.log(2) / 0.1, rtol=1e-9)
    assert float(half_life(t, conc, n_points=9).half_life) < math.log(2) / 0.1 * 0.99
    np.testing.assert_allclose(half_life(t, conc, n_points=2).lambda_z, 0.1, rtol=1e-9)


def test_failed_profile_gives_nan_exposure():
    """A failed subject (NaN outputs) has NaN AUC, Cmax and Tmax; the half-life stays finite."""
    conc = np.array([[1.0, 0.5, 0.25, 0.125], [np.nan] * 4])
    m = exposure_metrics([0.0, 1.0, 2.0, 3.0], conc)
    assert np.isfinite(m.auc_last[0]) and np.isnan(m.auc_last[1])
    assert np.isnan(m.cmax[1]) and np.isnan(m.tmax[1]) and np.isnan(m.cmin[1])
    assert np.isnan(tmax([0.0, 1.0, 2.0, 3.0], conc)[1])
    assert float(m.half_life[1]) == 0.0 and not bool(m.half_life_estimable[1])
    np.testing.assert_allclose(m.half_life[0], 1.0, rtol=1e-12)


# --------------------------------------------------------------------------- batching, jit, vmap, grad


def test_batched_per_subject_times_match_one_by_one():
    """[subject, time] with one grid per subject equals the metrics of each profile alone (rtol 1e-14)."""
    times = np.stack([IRREGULAR, IRREGULAR * 1.5, IRREGULAR + 0.5])
    scale = np.array([[1.0], [0.5], [2.0]])
    conc = scale * iv_bolus(times)
    batched = exposure_metrics(times, conc, tau=6.0, start=2.0)
    for i in range(3):
        alone = exposure_metrics(times[i], conc[i], tau=6.0, start=2.0)
        for name, value in alone._asdict().items():
            np.testing.assert_allclose(getattr(batched, name)[i], value, rtol=1e-14, err_msg=name)


def test_jit_and_vmap_agree_with_eager():
    """Under jit and vmap the metrics equal the eager ones (rtol 1e-14); a traced interval
    limit outside the samples gives NaN instead of raising."""
    t = jnp.asarray(IRREGULAR)
    conc = jnp.stack([iv_bolus(IRREGULAR), bateman(IRREGULAR)])
    eager = exposure_metrics(t, conc, tau=12.0)
    jitted = jax.jit(lambda c: exposure_metrics(t, c, tau=12.0))(conc)
    mapped = jax.vmap(lambda c: exposure_metrics(t, c, tau=12.0))(conc)
    for name, value in eager._asdict().items():
        np.testing.assert_allclose(getattr(jitted, name), value, rtol=1e-14, err_msg=name)
        np.testing.assert_allclose(getattr(mapped, name), value, rtol=1e-14, err_msg=name)
    outside = jax.jit(lambda end: auc_interval(t, conc, 0.0, end))(30.0)
    assert np.all(np.isnan(outside))
    inside = jax.jit(lambda start: auc_interval(t, conc, start, 12.0))(2.0)
    np.testing.assert_allclose(inside, auc_interval(t, conc, 2.0, 12.0), rtol=1e-14)


def test_gradient_matches_finite_differences():
    """∂AUC(1.3, 7.1)/∂C_i by jax.grad vs central differences (h = 1e-6, rtol 1e-6), on a
    profile with rising, log-down and level segments (away from C = 0, where the rule
    switches between log and linear and the area is not differentiable)."""
    t = jnp.array([0.0, 1.0, 2.0, 4.0, 6.0, 8.0])
    conc = jnp.array([0.0, 4.0, 3.0, 1.5, 1.5, 0.5])

    def area(c):
        return auc_interval(t, c, 1.3, 7.1)

    grad = np.asarray(jax.grad(area)(conc))
    h = 1e-6
    numeric = [
        (float(area(conc.at[i].add(h))) - float(area(conc.at[i].add(-h)))) / (2 * h)
        for i in range(conc.size)
    ]
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_exposure_metrics_compiles_once_per_shape():
    """Repeated calls with new values of the same shape reuse one compilation."""
    from twinsim.simulators._metrics import _exposure_core

    t = np.linspace(0.0, 10.0, 7)
    exposure_metrics(t, np.exp(-t) + 0.1, tau=2.0)
    before = _exposure_core._cache_size()
    for scale in (2.0, 3.0, 4.0):
        exposure_metrics(t, scale * np.exp(-t), tau=2.0)
    assert _exposure_core._cache_size() == before


# --------------------------------------------------------------------------- properties

_profile = st.lists(st.floats(0.0, 100.0), min_size=8, max_size=8)
_steps = st.lists(st.floats(0.0, 5.0), min_size=7, max_size=7)


@given(_profile, _steps, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_partial_areas_add_up_and_are_bounded(conc, steps, u, v):
    """AUC(a, m) + AUC(m, b) = AUC(a, b) (rtol 1e-9, atol 1e-9) and min·(b-a) ≤ AUC ≤ max·(b-a),
    for any non-negative profile, including repeated times."""
    t = np.concatenate([[0.0], np.cumsum(steps)])
    conc = np.asarray(conc)
    a, b = sorted((u * t[-1], v * t[-1]))
    m = 0.5 * (a + b)
    whole = float(auc_interval(t, conc, a, b))
    parts = float(auc_interval(t, conc, a, m)) + float(auc_interval(t, conc, m, b))
    np.testing.assert_allclose(parts, whole, rtol=1e-9, atol=1e-9)
    slack = 1e-9 * (1 + conc.max() * (b - a))
    assert conc.min() * (b - a) - slack <= whole <= conc.max() * (b - a) + slack
    assert float(auc(t, conc)) <= float(auc(t, conc, method="linear")) + 1e-9 * (
        1 + conc.max() * t[-1]
    )


# --------------------------------------------------------------------------- errors


def test_errors_name_the_problem():
    t = np.array([0.0, 1.0, 2.0])
    c = np.array([3.0, 2.0, 1.0])
    with pytest.raises(MetricsError, match=r"`times` has 2 samples but `conc` has 3"):
        auc(t[:2], c)
    with pytest.raises(MetricsError, match=r"sorted in increasing order.*next time 0.5 h"):
        auc([0.0, 1.0, 0.5], c)
    with pytest.raises(MetricsError, match=r"needs at least 2"):
        auc([0.0], [1.0])
    with pytest.raises(
        MetricsError, match=r"`end` = 5.0 h lies outside the sampled times \[0.0, 2.0\] h"
    ):
        auc_interval(t, c, 0.0, 5.0)
    with pytest.raises(MetricsError, match=r"`end` must be ≥ `start`"):
        auc_interval(t, c, 1.5, 0.5)
    with pytest.raises(MetricsError, match=r"`tau` \(dosing interval\) must be > 0 h, got \[0.0\]"):
        auc_tau(t, c, 0.0, 0.0)
    with pytest.raises(MetricsError, match=r"`n_points` = 4 exceeds the 3 samples"):
        half_life(t, c, n_points=4)
    with pytest.raises(MetricsError, match=r"whole number ≥ 2, got 1"):
        half_life(t, c, n_points=1)
    with pytest.raises(MetricsError, match=r"`method` must be one of .*got 'log'"):
        auc(t, c, method="log")
    with pytest.raises(MetricsError, match=r"`start` \(of the dosing interval\) needs `tau`"):
        exposure_metrics(t, c, start=0.0)
    with pytest.raises(MetricsError, match=r"`start \+ tau` = 3.0 h lies outside"):
        exposure_metrics(t, c, tau=2.0, start=1.0)
    with pytest.raises(MetricsError, match=r"`at` = -1.0 h lies outside"):
        trough(t, c, -1.0)
    with pytest.raises(MetricsError, match=r"window \[`start`, `end`\] contains no sample"):
        cmax(t, c, start=1.2, end=1.8)
    with pytest.raises(MetricsError, match=r"does not broadcast"):
        auc(np.zeros((2, 3)), np.zeros((3, 3)))


# --------------------------------------------------------------------------- with the engine


def test_two_compartment_iv_steady_state_auc_tau_is_dose_over_cl():
    """2-cmt IV, 1000 mg over 1 h q12h at steady state (SS=1), simulated by the exact linear
    engine: AUC_τ = dose/CL (mass balance at steady state; vancomycin-like parameters of
    Goti et al. 2018 and a second subject). Grid every 0.05 h; rtol 1e-5 (trapezoid error
    O(dt²), observed ~1e-6)."""
    from twinsim.priors import ODEModel
    from twinsim.simulators import Dose, DosingEvents, simulate

    model = ODEModel(
        name="iv_2cmt",
        states=("central", "peripheral"),
        parameters=("cl", "v1", "q", "v2"),
        rhs=lambda t, y, p: {
            "central": -(p.cl + p.q) / p.v1 * y.central + p.q / p.v2 * y.peripheral,
            "peripheral": p.q / p.v1 * y.central - p.q / p.v2 * y.peripheral,
        },
        outputs={"conc": lambda y, p: y.central / p.v1},
        output_units={"conc": "mg/L"},
        linear=True,
    )
    params = jnp.array([[4.5, 58.4, 6.5, 38.4], [2.0, 30.0, 3.0, 50.0]])
    events = DosingEvents.from_doses(
        [[Dose(0.0, 1000.0, compartment=0, duration=1.0, steady_state=True, interval=12.0)]]
    )
    times = jnp.linspace(0.0, 12.0, 241)
    solution = simulate(model, params, events, times)
    assert np.all(np.asarray(solution.status) == 0)
    area = auc_tau(solution.times, solution.outputs[..., 0], 0.0, 12.0)
    np.testing.assert_allclose(area, 1000.0 / np.asarray(params[:, 0]), rtol=1e-5)
    # steady state: the trough before the next dose equals the pre-dose value at 0 h (rtol 1e-9)
    conc = solution.outputs[..., 0]
    np.testing.assert_allclose(trough(solution.times, conc, 12.0), conc[:, 0], rtol=1e-9)
