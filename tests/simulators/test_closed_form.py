"""The exact linear engine against textbook closed forms.

Reference: ``closed_form.py`` next to this file, plain numpy superposition of single-dose
solutions (Gibaldi & Perrier, *Pharmacokinetics*, 2nd ed., 1982; Rowland & Tozer,
*Clinical Pharmacokinetics and Pharmacodynamics*, 4th ed., 2011; NONMEM ADVAN1-4/11/12),
sharing no code with twinsim. Grid: 1-, 2- and 3-compartment models (conftest.py) × every
dosing case of ``conftest.REGIMENS`` (IV bolus, infusion by rate and by duration, oral,
oral with lag and F, zero-order input into the depot, repeated dosing with ADDL/II,
steady state of bolus, infusion and oral doses, SS reset).

Tolerance of every engine comparison: rtol 1e-9 with atol 1e-12 mg/L (the engine is
exact up to the matrix exponential's rounding; the atol covers concentrations that have
decayed to ~0, and the zeros before the first dose).
"""

from __future__ import annotations

import closed_form as cf
import numpy as np
import pytest

from twinsim.simulators import simulate

RTOL, ATOL = 1e-9, 1e-12


def _system_matrix(cl, v, ka, peripherals):
    """Hand-written matrix of (depot, central, peripherals...) for the reference checks."""
    n = 2 + len(peripherals)
    a = np.zeros((n, n))
    a[0, 0], a[1, 0], a[1, 1] = -ka, ka, -cl / v
    for j, (q, vj) in enumerate(peripherals, start=2):
        a[1, 1] -= q / v
        a[1, j], a[j, 1], a[j, j] = q / vj, q / v, -q / vj
    return a


@pytest.mark.parametrize("n_cmt", [1, 2, 3])
def test_reference_macro_constants_are_the_eigenvalues(n_cmt, grid):
    """The reference itself: the macro constants (quadratic and cubic formulas) are minus the
    eigenvalues of the system matrix and the coefficients sum to 1 (g(0) = unit dose).
    numpy.linalg.eigvals is the independent check; rtol 1e-10."""
    for subject in grid["subjects"]:
        peripherals = [(subject["q"], subject["v2"]), (subject["q3"], subject["v3"])][: n_cmt - 1]
        c, lam = cf.disposition(subject["cl"], subject["v"], peripherals)
        a = _system_matrix(subject["cl"], subject["v"], subject["ka"], peripherals)[1:, 1:]
        np.testing.assert_allclose(np.sort(lam), np.sort(-np.linalg.eigvals(a).real), rtol=1e-10)
        np.testing.assert_allclose(c.sum(), 1.0, rtol=1e-12)


def test_reference_single_oral_dose_matches_matrix_exponential(grid):
    """The reference itself: a lagged oral dose in the 3-compartment model equals
    ``e^{A(t - tlag)} F D e_depot`` from scipy.linalg.expm on the hand-written matrix;
    rtol 1e-10, atol 1e-14 mg/L."""
    from scipy.linalg import expm

    s = grid["subjects"][0]
    peripherals = [(s["q"], s["v2"]), (s["q3"], s["v3"])]
    a = _system_matrix(s["cl"], s["v"], s["ka"], peripherals)
    f, tlag, dose = 0.7, 0.6, 100.0
    times = grid["times"]
    expected = np.array(
        [(expm(a * max(t - tlag, 0.0)) @ np.array([f * dose, 0, 0, 0]))[1] / s["v"] for t in times]
    )
    got = cf.concentration(
        times,
        [cf.Administration(0.0, dose, "oral")],
        **{k: s[k] for k in ("cl", "v", "q", "v2", "q3", "v3", "ka")},
        f=f,
        tlag=tlag,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("n_cmt", [1, 2, 3])
def test_linear_engine_matches_closed_form(n_cmt, dosing_case, linear_models, grid):
    """Linear engine = closed-form superposition for every model × dosing case
    (rtol 1e-9, atol 1e-12 mg/L; reference: closed_form.concentration)."""
    sol = simulate(
        linear_models[n_cmt],
        dosing_case.params(n_cmt),
        dosing_case.events(),
        grid["times"],
        method="linear",
    )
    assert sol.method == "linear"
    np.testing.assert_array_equal(np.asarray(sol.status), 0)
    np.testing.assert_allclose(
        np.asarray(sol.outputs[..., 0]), dosing_case.reference(n_cmt), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("case", ["bolus", "repeated", "ss_bolus", "ss_reset"])
def test_linear_engine_post_dose_outputs_match_closed_form(case, linear_models, grid):
    """``at_dose="post"``: an output at a bolus time includes that bolus (the closed form
    with the dose counted at u = 0); 2-compartment model, rtol 1e-9, atol 1e-12 mg/L."""
    regimen = grid["regimens"][case]
    sol = simulate(
        linear_models[2],
        regimen.params(2),
        regimen.events(),
        grid["times"],
        method="linear",
        at_dose="post",
    )
    np.testing.assert_allclose(
        np.asarray(sol.outputs[..., 0]), regimen.reference(2, at_dose="post"), rtol=RTOL, atol=ATOL
    )
