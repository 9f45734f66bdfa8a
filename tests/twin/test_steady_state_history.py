"""Steady-state (NONMEM ``SS=1``) dose records in a twin's dosing history (issue 13).

A clinician often knows only "300 mg every 12 h for weeks": one ``Dose(...,
steady_state=True, interval=12)`` record (ADDL for the doses after it). The twin fits,
predicts and recommends from it:

- **linear model (vancomycin, 1 g over 1 h every 12 h)**: the twin's predictions equal the
  closed-form periodic steady state of the two-compartment model within 1e-8 relative
  (matrix exponentials with scipy: the pre-dose state solves
  ``(I − e^{Aτ}) x = e^{A(τ−d)} A⁻¹(e^{Ad} − I) r``), and its MAP equals a scipy MAP of
  the same posterior written with that closed form (η within 1e-4; scipy's BFGS
  gradient is by finite differences), the Laplace covariance its finite-difference
  Hessian's inverse within 2 %. The SS=1 history runs on the model's second engine
  (the exact linear event walk; superposition has no steady state), see
  ``twin/_compiled.py``; the recommendation searches from it.
- **ODE model (theophylline, non-smoker: one compartment with first-order absorption)**:
  predictions at fixed η equal the closed-form steady state
  ``F·D·ka/(V(ka−k)) · (e^{−kt}/(1−e^{−kτ}) − e^{−ka·t}/(1−e^{−ka·τ}))`` within 1e-5
  relative (the engine finds the steady state by Newton's method, solves to rtol 1e-8),
  and the MAP equals a scipy MAP of the same posterior written with that closed form
  within 1e-4 in η (the fit's solves are at rtol 1e-7). The ODE engine's forward
  sensitivities through the steady state are NaN, so such twins fit on a reverse-mode
  engine (a failed gradient used to leave the search at η = 0, reported as converged).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize

from twinsim.simulators import Dose
from twinsim.twin import Observation, PatientTwin
from twinsim.twin._compiled import _engine

VANCO = {"weight": 80.0, "crcl": 60.0, "dialysis": 0.0}
THEO = {"weight": 70.0, "smoking": 0.0, "smoking_quit_time": math.inf}


def _vancomycin_closed_form(typical, names, effects, eta, times):
    """Central concentration at ``times`` (h after the SS dose) of the periodic steady
    state of 1 g over 1 h every 12 h, two compartments, with numpy/scipy."""
    import scipy.linalg

    p = np.array(typical, dtype=np.float64)
    p[effects] = p[effects] * np.exp(eta)
    cl, v1, q, v2 = (p[names.index(n)] for n in ("cl", "v1", "q", "v2"))
    a = np.array([[-(cl + q) / v1, q / v2], [q / v1, -q / v2]])
    tau, d, rate = 12.0, 1.0, np.array([1000.0, 0.0])

    def after(x0, s):
        on = min(s, d)
        x = (
            scipy.linalg.expm(a * on) @ x0
            + np.linalg.solve(a, scipy.linalg.expm(a * on) - np.eye(2)) @ rate
        )
        return scipy.linalg.expm(a * (s - on)) @ x

    phi = scipy.linalg.expm(a * tau)
    x_ss = np.linalg.solve(np.eye(2) - phi, after(np.zeros(2), tau))
    return np.array([after(x_ss, float(t) % tau)[0] / v1 for t in times])


def test_linear_ss_history_predicts_the_closed_form_and_fits_like_scipy():
    """See the module docstring (vancomycin)."""
    twin = PatientTwin.create("vancomycin", VANCO)
    twin = twin.with_doses(
        Dose(0.0, 1000.0, compartment=0, duration=1.0, steady_state=True, interval=12.0,
             additional=2)
    )  # fmt: skip
    levels = [(11.5, 17.0), (13.5, 38.0), (30.0, 24.0)]
    twin = twin.with_observations(*[Observation(t, v) for t, v in levels])
    assert twin.doses[0].steady_state and len(twin.doses) == 3
    model = twin.model
    names = model.structural.parameters
    typical = np.asarray(model.typical_parameters(twin.covariates))[0]
    effects = [names.index(r) for r in model.random_effects]

    post = twin.fit("laplace")
    assert post.diagnostics["converged"] and post.diagnostics["hessian_positive_definite"]
    # on the steady-state engine, not the default (superposition) one
    assert _engine(model, steady_state=True).value_and_grad._cache_size() >= 1

    # predictions of the history alone at fixed η against the closed form
    eta = np.array([0.2, -0.1, 0.3])
    times = np.linspace(0.5, 35.5, 36)
    pred = post.predict({"none": []}, times=times, eta=eta)
    closed = _vancomycin_closed_form(typical, names, effects, eta, times)
    np.testing.assert_allclose(pred.band("none")["median"], closed, rtol=1e-8)

    # the MAP and Laplace covariance against scipy on the closed form
    err = model.residual["conc"]
    omega = np.asarray(model.omega)
    t_obs = np.array([t for t, _ in levels])
    y = np.array([v for _, v in levels])

    def objective(e):
        f = _vancomycin_closed_form(typical, names, effects, e, t_obs)
        sd = np.sqrt(err.additive**2 + (err.proportional * f) ** 2)
        return 0.5 * e @ np.linalg.solve(omega, e) + np.sum(0.5 * ((y - f) / sd) ** 2 + np.log(sd))

    ref = scipy.optimize.minimize(objective, np.zeros(3), method="BFGS", options={"gtol": 1e-8})
    np.testing.assert_allclose(post.eta_mode, ref.x, atol=1e-4)
    h, hess = 1e-3, np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            ei, ej = h * np.eye(3)[i], h * np.eye(3)[j]
            hess[i, j] = (
                objective(ref.x + ei + ej) - objective(ref.x + ei - ej)
                - objective(ref.x - ei + ej) + objective(ref.x - ei - ej)
            ) / (4 * h * h)  # fmt: skip
    np.testing.assert_allclose(post.covariance, np.linalg.inv(hess), rtol=0.02, atol=1e-6)

    rec = post.recommend(
        strengths_mg=[750.0, 1000.0, 1250.0], intervals_h=[12.0], loading=False, n_draws=100
    )
    assert rec and 0.0 <= rec[0].pta <= 1.0 and rec[0].doses[0].time == 36.0


def _theophylline_ss(ka, cl, v, f, dose, tau, t):
    k = cl / v
    tt = np.mod(t, tau)
    return (
        f
        * dose
        * ka
        / (v * (ka - k))
        * (np.exp(-k * tt) / (1 - np.exp(-k * tau)) - np.exp(-ka * tt) / (1 - np.exp(-ka * tau)))
    )


_THEO_LEVELS = [(2.0, 11.0), (11.5, 6.5), (26.0, 10.0)]


def _theophylline_ss_twin():
    """A theophylline twin at steady state (300 mg q12h) with three levels, and its
    concentrations in closed form ``closed_form(eta, times)``."""
    twin = PatientTwin.create("theophylline", THEO)
    depot = twin.model.structural.states.index("depot")
    twin = twin.with_doses(
        Dose(0.0, 300.0, compartment=depot, steady_state=True, interval=12.0, additional=2)
    )
    twin = twin.with_observations(*[Observation(t, v) for t, v in _THEO_LEVELS])
    names = twin.model.structural.parameters
    typical = np.asarray(twin.model.typical_parameters(twin.covariates))[0]
    effects = [names.index(r) for r in twin.model.random_effects]  # ka, cl

    def closed_form(eta, times):
        p = typical.copy()
        p[effects] = p[effects] * np.exp(eta)
        ka, cl, v, f = (p[names.index(n)] for n in ("ka", "cl", "v", "f_oral"))
        return _theophylline_ss(ka, cl, v, f, 300.0, 12.0, np.asarray(times))

    return twin, closed_form


def _theophylline_objective(twin, closed_form):
    """½ ηᵀΩ⁻¹η + ½ Σ ((y − f(η)) / σ)², f in closed form (additive error 0.709 mg/L)."""
    omega = np.asarray(twin.model.omega)
    sd = twin.model.residual["conc"].additive
    t_obs = np.array([t for t, _ in _THEO_LEVELS])
    y = np.array([v for _, v in _THEO_LEVELS])

    def objective(e):
        f = closed_form(e, t_obs)
        return 0.5 * e @ np.linalg.solve(omega, e) + 0.5 * np.sum(((y - f) / sd) ** 2)

    return objective


@pytest.mark.isolated
def test_ode_ss_history_predicts_the_closed_form_and_fits_like_scipy():
    """See the module docstring (theophylline)."""
    twin, closed_form = _theophylline_ss_twin()

    # predictions at a fixed η against the closed form (no new doses: the history's)
    eta = np.array([0.2, -0.3])
    times = np.linspace(0.5, 35.5, 36)
    post = twin.fit("map")
    pred = post.predict({"none": []}, times=times, eta=eta)
    np.testing.assert_allclose(pred.band("none")["median"], closed_form(eta, times), rtol=1e-5)

    # the MAP against scipy on the closed form (additive error 0.709 mg/L)
    objective = _theophylline_objective(twin, closed_form)
    ref = scipy.optimize.minimize(objective, np.zeros(2), method="BFGS", options={"gtol": 1e-9})
    assert post.diagnostics["converged"]
    np.testing.assert_allclose(post.eta_mode, ref.x, atol=1e-4)


@pytest.mark.isolated
def test_ode_ss_importance_posterior_matches_the_closed_form_posterior():
    """``fit("importance")`` on the steady-state ODE engine (proposals solved one after
    another, 85 ms each: 512 solves for 100 draws): its posterior mean and SD of η (ka, cl)
    equal those of the closed-form posterior ``exp(−objective)`` integrated on a 161² grid
    over ±8 Laplace SDs, to 0.1 in the mean and 25 % in the SD (Monte Carlo SE of 100
    draws ≈ 0.1 SD and 7 %)."""
    twin, closed_form = _theophylline_ss_twin()
    objective = _theophylline_objective(twin, closed_form)
    post = twin.fit("importance", num_samples=100, seed=2)
    mode, sd = post.eta_mode, np.sqrt(np.diag(post.covariance))
    axes = [np.linspace(m - 8 * s, m + 8 * s, 161) for m, s in zip(mode, sd, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    log_p = -np.array([objective(e) for e in grid])
    w = np.exp(log_p - log_p.max())
    w /= w.sum()
    mean = w @ grid
    np.testing.assert_allclose(post.samples.mean(0), mean, atol=0.1)
    np.testing.assert_allclose(post.samples.std(0), np.sqrt(w @ (grid - mean) ** 2), rtol=0.25)
    assert post.diagnostics["pareto_k"] < 0.7 and post.diagnostics["failed_solves"] == 0
