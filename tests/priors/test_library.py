"""The drug library: registry, metadata and each model's documented behaviour.

Sources of the reference values are given in each test's docstring (see
``/priors/_theophylline.py``, ``_warfarin.py``, ``_vancomycin.py`` for the full citations).
Every simulation uses typical subjects (no random draws) unless a test says otherwise;
cohorts are small so each model compiles once or twice.
"""

import itertools
import math
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from twinsim.priors import (
    DRUG_LIBRARY,
    CovariateRangeWarning,
    DrugLibraryError,
    PopulationModel,
    PopulationModelError,
    cockcroft_gault,
    drug_metadata,
    drug_model,
    parse_diplotype,
    smoking_status,
)
from twinsim.simulators import Dose, DosingEvents, auc_tau, simulate

DRUGS = ("theophylline", "warfarin", "vancomycin")


# --------------------------------------------------------------------------- registry


def test_library_lists_the_three_drugs_as_population_models():
    assert tuple(DRUG_LIBRARY) == DRUGS
    for name, model in DRUG_LIBRARY.items():
        assert isinstance(model, PopulationModel)
        assert model.name == name
        assert drug_model(name.upper()).name == name  # names are case-insensitive


def test_unknown_drug_lists_the_known_ones():
    with pytest.raises(DrugLibraryError, match=r"'vancomicin'.*did you mean 'vancomycin'.*known"):
        drug_model("vancomicin")
    with pytest.raises(
        DrugLibraryError, match="known drugs: 'theophylline', 'warfarin', 'vancomycin'"
    ):
        drug_metadata("aspirin")
    with pytest.raises(DrugLibraryError, match="must be a drug name"):
        drug_model(3)


def test_wrong_option_names_the_drug_and_the_option():
    with pytest.raises(
        DrugLibraryError, match=r"'warfarin' does not take the option\(s\) \['cessation'\]"
    ):
        drug_model("warfarin", cessation=False)


@pytest.mark.parametrize("name", DRUGS)
def test_every_model_documents_its_source_units_ranges_and_target(name):
    """Citation, theta units, residual error per output, covariate ranges or levels,
    therapeutic target, dosing facts, IIV convention and the source of each number."""
    model, meta = DRUG_LIBRARY[name], drug_metadata(name)
    assert model.citation and (
        "2007" in model.citation or "2018" in model.citation or name == "theophylline"
    )
    assert set(model.theta_units) == set(model.theta)
    assert set(model.residual) == set(model.structural.output_names)
    assert dict(model.structural.parameter_units).keys() == set(model.structural.parameters)
    for covariate in model.covariates:
        assert (
            covariate.range is not None
            or covariate.levels is not None
            or covariate.name == "smoking_quit_time"
        )
        assert covariate.description
    target = meta["therapeutic_target"]
    assert target["output"] in model.structural.output_names
    assert target["low"] < target["high"] and target["source"]
    assert meta["dosing"]["route"] in dict(model.structural.routes)
    assert 0 < meta["dosing"]["bioavailability"] <= 1
    assert meta["iiv_convention"].startswith(("variance", "coefficient of variation"))
    assert meta["sources"] and meta["population"]
    assert meta["drug"] in model.notes  # the summary travels with the model
    with pytest.raises(TypeError):
        meta["drug"] = "other"  # read-only


def test_targets_for_issue_4():
    """Vancomycin AUC24 400–600 mg·h/L (Rybak 2020); warfarin INR 2–3 (CPIC 2011);
    theophylline 10–20 mg/L (Mitenko & Ogilvie 1973)."""
    got = {
        name: tuple(drug_metadata(name)["therapeutic_target"][k] for k in ("metric", "low", "high"))
        for name in DRUGS
    }
    assert got == {
        "vancomycin": ("auc24", 400.0, 600.0),
        "warfarin": ("inr", 2.0, 3.0),
        "theophylline": ("concentration", 10.0, 20.0),
    }


# --------------------------------------------------------------------------- vancomycin


def _steady_state_auc24(model, params, amount, interval, infusion_h):
    """AUC over 24 h at steady state through the engine (SS=1 record plus the next doses)."""
    n_per_day = round(24.0 / interval)
    dose = Dose(
        0.0,
        amount,
        compartment=0,
        duration=infusion_h,
        steady_state=True,
        interval=interval,
        additional=n_per_day - 1,
    )
    events = DosingEvents.from_doses([[dose]]).broadcast(params.shape[0])
    times = jnp.linspace(0.0, 24.0, 193)
    sol = simulate(model, params, events, times)
    assert sol.method == "linear" and bool(sol.ok.all())
    return np.asarray(auc_tau(times, sol.outputs[:, :, 0], 0.0, 24.0))


def test_vancomycin_steady_state_auc24_is_444_at_crcl_120():
    """Goti 2018 (REFERENCES.md check): 1000 mg q12h (1-h infusions) at CrCL 120 mL/min,
    70 kg, no dialysis: AUC24 = 2000 / 4.5 = 444 mg·h/L, ±1 %. Other covariates: AUC24 =
    daily dose / CL with CL = 4.5 · (CrCL/120)^0.8 · 0.7^DIAL, ±1 %."""
    model = drug_model("vancomycin")
    covariates = {
        "weight": np.array([70.0, 70.0, 110.0, 55.0]),
        "crcl": np.array([120.0, 60.0, 150.0, 10.0]),
        "dialysis": np.array([0.0, 0.0, 0.0, 1.0]),
    }
    params = model.typical_parameters(covariates)
    auc24 = _steady_state_auc24(model.structural, params, 1000.0, 12.0, 1.0)
    assert auc24[0] == pytest.approx(444.4, rel=0.01)
    clearance = 4.5 * (covariates["crcl"] / 120.0) ** 0.8 * 0.7 ** covariates["dialysis"]
    np.testing.assert_allclose(auc24, 2000.0 / clearance, rtol=0.01)
    # the typical 70-kg patient at CrCL 120 is inside the consensus target
    target = drug_metadata("vancomycin")["therapeutic_target"]
    assert target["low"] <= auc24[0] <= target["high"]


#: Matzke GR, McGory RW, Halstenson CE, Keane WF. Pharmacokinetics of vancomycin in patients
#: with various degrees of renal function. Antimicrob Agents Chemother 1984;25(4):433-437
#: (abstract): 56 patients, CLCR from < 10 to > 60 mL/min, CL_vanco = 3.66 + 0.689 · CLCR
#: (mL/min, r = 0.88).
MATZKE_1984 = (3.66, 0.689)


def test_vancomycin_auc24_by_dose_and_renal_function_matches_matzke_1984():
    """External check by renal function (issue 13, item 3): steady-state AUC24 through the
    engine (q12h, 1-h infusions, 70 kg, no dialysis) for 1, 2 and 3 g/day at CrCL 10, 30,
    60, 90 and 120 mL/min against daily dose / CL of the Matzke 1984 regression, measured
    in patients independent of Goti 2018's. Stated tolerance: every cell within ±20 % (the
    published regression explains 78 % of the variance of CL; measured ratio model/Matzke
    0.98 at CrCL 30 … 1.15 at CrCL 120: the model's CL rises less steeply at high renal
    function, so it predicts up to 15 % more exposure there). The table is in the README
    ("External checks")."""
    model = drug_model("vancomycin")
    crcl = np.array([10.0, 30.0, 60.0, 90.0, 120.0])
    params = model.typical_parameters(
        {"weight": np.full(5, 70.0), "crcl": crcl, "dialysis": np.zeros(5)}
    )
    intercept, slope = MATZKE_1984
    matzke_cl = (intercept + slope * crcl) * 60.0 / 1000.0  # mL/min → L/h
    for daily in (1000.0, 2000.0, 3000.0):
        auc24 = _steady_state_auc24(model.structural, params, daily / 2.0, 12.0, 1.0)
        ratio = auc24 / (daily / matzke_cl)
        assert np.all((ratio > 0.8) & (ratio < 1.2)), (daily, ratio.round(3))
        np.testing.assert_allclose(ratio, [1.027, 0.983, 1.045, 1.102, 1.151], atol=0.005)


def test_vancomycin_covariate_model():
    """Goti 2018: Vc = 58.4·(WT/70)·0.5^DIAL, Vp = 38.4·(WT/70), Q = 6.5; CrCL capped at 150."""
    model = drug_model("vancomycin")
    p = np.asarray(
        model.typical_parameters(
            {
                "weight": [140.0, 70.0, 70.0],
                "crcl": [150.0, 200.0, 90.0],
                "dialysis": [0.0, 0.0, 1.0],
            }
        )
    )
    cl, v1, q, v2 = p.T
    assert cl[1] == pytest.approx(cl[0])  # 200 mL/min is used as 150
    np.testing.assert_allclose(v1, [116.8, 58.4, 29.2])
    np.testing.assert_allclose(v2, [76.8, 38.4, 38.4])
    np.testing.assert_allclose(q, 6.5)
    np.testing.assert_allclose(cl[2], 4.5 * 0.75**0.8 * 0.7)
    # IIV reported as CV: omega = ln(1 + CV^2)
    np.testing.assert_allclose(np.diag(model.omega), np.log1p(np.array([0.398, 0.816, 0.571]) ** 2))


def test_vancomycin_crcl_options_reproduce_the_papers_cockcroft_gault():
    """Goti 2018: SCr below 1 mg/dL set to 1 over 60 y, result capped at 150 mL/min."""
    from twinsim.priors import VANCOMYCIN_CRCL_OPTIONS

    crcl = cockcroft_gault(
        np.array([70.0, 25.0]),
        np.array([80.0, 120.0]),
        np.array([0.6, 0.5]),
        np.array([0.0, 0.0]),
        **VANCOMYCIN_CRCL_OPTIONS,
    )
    np.testing.assert_allclose(crcl, [70.0 * 80.0 / 72.0, 150.0])


def test_outside_the_estimated_ranges_warns():
    """A 300-kg patient and CrCL 200 mL/min lie outside Goti's data (33–255 kg, 4–150)."""
    model = drug_model("vancomycin")
    covariates = {
        "weight": np.array([70.0, 300.0]),
        "crcl": np.array([200.0, 100.0]),
        "dialysis": np.array([0.0, 0.0]),
    }
    events = DosingEvents.repeated(1000.0, 12.0, 2, duration=1.0, compartment=0)
    with pytest.warns(CovariateRangeWarning) as record:
        sim = model.simulate(0, covariates, events, jnp.array([1.0, 12.0, 24.0]))
    messages = " ".join(str(w.message) for w in record)
    assert "`weight`" in messages and "300" in messages and "`crcl`" in messages
    assert sim.observed.shape == (2, 3, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CovariateRangeWarning)  # in range: silent
        assert model.check_covariates({"weight": [70.0], "crcl": [100.0], "dialysis": [1.0]}) == []


# --------------------------------------------------------------------------- warfarin

CYP2C9_BY_EXPOSURE = ("*1/*1", "*1/*2", "*1/*3", "*2/*3", "*2/*2", "*3/*3")


@pytest.fixture(scope="module")
def warfarin_steady_state():
    """Typical 71-year-olds on 5 mg racemic warfarin daily, at steady state (SS=1, ODE)."""
    model = drug_model("warfarin")
    cyp2c9 = [*CYP2C9_BY_EXPOSURE, "*1/*1", "*1/*1"]
    vkorc1 = ["G/A"] * 6 + ["G/G", "A/A"]
    params = model.typical_parameters(
        {"age": np.full(8, 71.0), "cyp2c9": np.array(cyp2c9), "vkorc1": np.array(vkorc1)}
    )
    dose = Dose(0.0, 5.0, compartment=0, steady_state=True, interval=24.0, additional=1)
    events = DosingEvents.from_doses([[dose]]).broadcast(8)
    times = jnp.linspace(0.0, 24.0, 49)
    sol = simulate(model.structural, params, events, times, method="ode")
    assert bool(sol.ok.all())
    average_conc = np.asarray(auc_tau(times, sol.outputs[:, :, 0], 0.0, 24.0)) / 24.0
    trough_inr = np.asarray(sol.outputs[:, 0, 1])
    return model, np.asarray(params), average_conc, trough_inr


def test_warfarin_steady_state_concentration_is_dose_rate_over_clearance(warfarin_steady_state):
    """CL = 0.314 · f_CYP2C9 L/h at 71 y, f the IWPC-calibrated clearance fraction
    (priors/_warfarin.py); with F·S-fraction = 0.45 the average S-warfarin concentration at
    steady state is 0.45 · 5 mg / 24 h / CL (±1 %)."""
    model, params, average_conc, _ = warfarin_steady_state
    cl = params[:, model.structural.parameters.index("cl")]
    fraction = np.array([1.0, 0.84247, 0.72678, 0.48619, 0.69334, 0.40012, 1.0, 1.0])
    np.testing.assert_allclose(cl, 0.314 * fraction, rtol=1e-4)
    np.testing.assert_allclose(average_conc, 0.45 * 5.0 / 24.0 / cl, rtol=0.01)


def test_warfarin_exposure_and_inr_ordered_by_cyp2c9(warfarin_steady_state):
    """With the IWPC-calibrated effects, at one VKORC1 genotype, S-warfarin exposure and INR
    are ordered *1/*1 < *1/*2 < *1/*3 < *2/*2 < *2/*3 < *3/*3 (*3/*3 highest)."""
    _, _, average_conc, trough_inr = warfarin_steady_state
    order = [0, 1, 2, 4, 3, 5]  # fixture order *1/*1 *1/*2 *1/*3 *2/*3 *2/*2 *3/*3
    assert np.all(np.diff(average_conc[order]) > 0)
    assert np.all(np.diff(trough_inr[order]) > 0)
    assert np.argmax(average_conc) == 5 and np.argmax(trough_inr) == 5


def test_warfarin_inr_ordered_by_vkorc1_with_equal_exposure(warfarin_steady_state):
    """EC50 G/G > G/A > A/A (IWPC ratios 0.745, 0.536 of the calibrated G/G 2.84 mg/L), no
    PK effect: at equal S-warfarin concentration the INR is G/G < G/A < A/A; the typical
    71-year-old *1/*1 G/A patient on 5 mg/day (IWPC-typical dose 4.3 mg/day at 65 y) is
    in the 2–3 target range."""
    _, _, average_conc, trough_inr = warfarin_steady_state
    gg, ga, aa = trough_inr[6], trough_inr[0], trough_inr[7]
    assert gg < ga < aa
    np.testing.assert_allclose(average_conc[[6, 7]], average_conc[0], rtol=1e-9)
    assert 2.0 <= ga <= 3.0


def test_warfarin_inr_starts_at_baseline_and_rises_with_the_transit_delay():
    """Hamberg 2007: all chain amounts start at 1 (INR = BASE); the INR response lags the
    concentration (chains with MTT 11.6 h and 120 h); doses are racemic mg."""
    model = drug_model("warfarin")
    params = model.typical_parameters({"age": [71.0], "cyp2c9": ["*1/*1"], "vkorc1": ["G/A"]})
    events = DosingEvents.repeated(5.0, 24.0, 7, compartment=0)
    times = jnp.array([0.0, 6.0, 24.0, 72.0, 168.0])
    sol = simulate(model.structural, params, events, times, method="ode")
    conc, inr = np.asarray(sol.outputs[0, :, 0]), np.asarray(sol.outputs[0, :, 1])
    assert inr[0] == pytest.approx(1.0) and conc[0] == 0.0
    assert conc[1] > 0.1 and inr[1] < 1.01  # drug present after 6 h, INR barely moved
    assert np.all(np.diff(inr) > 0)


def test_warfarin_age_comedication_and_genotypes():
    """Hamberg 2007: CL · (1 − 0.0091 · (age − 71)). CYP2C9 *5, *8, *11 take *2's effect and
    *6, *13 *3's (CPIC function class, assumed); amiodarone and enzyme inducers multiply CL by
    IWPC's dose ratios 0.834 and 1.407 and default to 0 when absent. An allele outside the
    gene table is refused with the known levels."""
    model = drug_model("warfarin")
    p = model.typical_parameters(
        {"age": [51.0, 91.0], "cyp2c9": ["*1/*1"] * 2, "vkorc1": ["G/G"] * 2}
    )
    np.testing.assert_allclose(p[:, 0], 0.314 * np.array([1.182, 0.818]))
    cl = model.typical_parameters(
        {
            "age": [71.0] * 5,
            "cyp2c9": [
                parse_diplotype("CYP2C9", d) for d in ("*5/*1", "*1/*2", "*6/*1", "*1/*3", "*1/*1")
            ],
            "vkorc1": ["G/G"] * 5,
            "amiodarone": [0, 0, 0, 0, 1],
            "enzyme_inducer": [0, 0, 0, 0, 0],
        }
    )[:, 0]
    assert cl[0] == pytest.approx(cl[1]) and cl[2] == pytest.approx(cl[3])
    assert cl[4] == pytest.approx(0.314 * 0.83405, rel=1e-4)
    with pytest.raises(PopulationModelError, match=r"unknown levels \['\*1/\*4'\]"):
        model.typical_parameters({"age": [60.0], "cyp2c9": ["*1/*4"], "vkorc1": ["G/G"]})


def test_warfarin_variability_is_read_as_cvs():
    """Secondary IIV values 0.310, 0.262, 0.991, 0.141, 1.020, 0.409 are read as CVs:
    ω² = ln(1 + CV²) (see priors/_warfarin.py for why)."""
    model = drug_model("warfarin")
    assert model.random_effects == ("cl", "v1", "v2", "mtt1", "mtt2", "ec50")
    cvs = np.array([0.310, 0.262, 0.991, 0.141, 1.020, 0.409])
    np.testing.assert_allclose(np.diag(model.omega), np.log1p(cvs**2))
    assert model.residual["inr"].proportional == pytest.approx(math.sqrt(0.0325))
    assert drug_metadata("warfarin")["iiv_convention"].startswith("coefficient of variation")


# --------------------------------------------------------------------------- theophylline

THEO_DOSES = [Dose(0.0, 200.0, compartment=0, interval=12.0, additional=9)]  # 200 mg q12h, 5 days
THEO_TIMES = np.array(
    [0.0, 1.0, 3.0, 12.0, 24.0, 30.0, 31.5, 36.0, 48.0, 60.0, 84.0, 96.0, 108.0, 120.0]
)


def _theophylline_subjects():
    """Non-smoker, smoker, smoker quitting at 30 h, former smoker who quit 20 h before t = 0."""
    rows = [
        smoking_status("never"),
        smoking_status("current"),
        smoking_status("current", 30.0),
        smoking_status("former", -20.0),
    ]
    return {
        "weight": np.array([70.0, 70.0, 60.0, 80.0]),
        "smoking": np.array([r[0] for r in rows]),
        "smoking_quit_time": np.array([r[1] for r in rows]),
    }


def _scipy_theophylline(p, dose_times, amount, times):
    """The theophylline smoking model written out again and solved with LSODA, piecewise
    between doses and the quit time (the induction has a kink there). Outputs at a dose
    time are taken before the dose, as the engine does by default."""
    cl, v, ka, f, smoking, fold, quit, half_life = p

    def rhs(t, y):
        induction = smoking * math.exp(-math.log(2.0) * max(t - quit, 0.0) / half_life)
        clearance = cl * (1.0 + (fold - 1.0) * induction)
        return [-ka * y[0], ka * y[0] - clearance * y[1] / v]

    end = float(times[-1])
    breaks = sorted({0.0, *dose_times, end, *([quit] if 0.0 < quit < end else [])})
    y, out = np.zeros(2), {0.0: 0.0}
    for t0, t1 in itertools.pairwise(breaks):
        if t0 in dose_times:
            y = y + np.array([f * amount, 0.0])
        inside = [float(t) for t in times if t0 < t <= t1]
        sol = solve_ivp(
            rhs, (t0, t1), y, method="LSODA", rtol=1e-10, atol=1e-12, t_eval=sorted({*inside, t1})
        )
        out.update({t: c / v for t, c in zip(sol.t, sol.y[1], strict=True)})
        y = sol.y[:, -1]
    return np.array([out[float(t)] for t in times])


def test_theophylline_smoking_model_matches_scipy():
    """ODE engine (rtol 1e-10) vs scipy LSODA on the hand-written equations, including the
    exponential loss of induction after quitting (Faber & Fuhr 2004 t½ 38.6 h):
    rtol 1e-6, atol 1e-8 mg/L."""
    model = drug_model("theophylline")
    covariates = _theophylline_subjects()
    params = np.asarray(model.typical_parameters(covariates))
    sol = simulate(
        model.structural,
        params,
        DosingEvents.from_doses([THEO_DOSES]).broadcast(4),
        jnp.asarray(THEO_TIMES),
        method="ode",
        rtol=1e-10,
        atol=1e-12,
    )
    assert bool(sol.ok.all())
    for i in range(4):
        expected = _scipy_theophylline(params[i], [12.0 * k for k in range(10)], 200.0, THEO_TIMES)
        np.testing.assert_allclose(sol.outputs[i, :, 0], expected, rtol=1e-6, atol=1e-8)


def test_smoking_raises_theophylline_clearance_and_the_effect_decays_after_quitting():
    """Powell 1977: CL in smokers 1.575× non-smokers, so the steady-state AUC over a dosing
    interval is 1/1.575 of a non-smoker's (±1 %). Faber & Fuhr 2004: after quitting the
    induction decays with t½ 38.6 h — troughs rise monotonically towards the non-smoker's,
    reaching it within 2 % after 10 days (6.2 half-lives)."""
    model = drug_model("theophylline")
    covariates = {
        "weight": np.full(3, 70.0),
        "smoking": np.array([0.0, 1.0, 1.0]),
        "smoking_quit_time": np.array([math.inf, math.inf, 0.0]),
    }
    params = model.typical_parameters(covariates)
    n_doses = 30  # 15 days of 200 mg q12h
    times = jnp.concatenate(
        [
            jnp.arange(0.0, 12.0 * n_doses, 12.0),
            jnp.linspace(12.0 * (n_doses - 1), 12.0 * n_doses, 49)[1:],
        ]
    )
    events = DosingEvents.repeated(200.0, 12.0, n_doses, n_subjects=3, compartment=0)
    sol = simulate(model.structural, params, events, times, method="ode")
    conc = np.asarray(sol.outputs[:, :, 0])
    last = slice(n_doses - 1, None)
    last_times = np.concatenate([[12.0 * (n_doses - 1)], np.asarray(times[n_doses:])])
    auc_last = np.asarray(
        auc_tau(jnp.asarray(last_times), jnp.asarray(conc[:, last]), last_times[0], 12.0)
    )
    assert auc_last[1] == pytest.approx(auc_last[0] / 1.575, rel=0.01)
    assert auc_last[0] == pytest.approx(200.0 / float(params[0, 0]), rel=0.01)  # dose / CL
    troughs = conc[:, 1:n_doses]  # pre-dose levels from 12 h on
    assert np.all(troughs[1] < troughs[0])  # a smoker stays below
    quitter = troughs[2]
    assert np.all(np.diff(quitter[4:]) > 0)  # rises after quitting (past the first days' build-up)
    assert quitter[-1] == pytest.approx(troughs[0, -1], rel=0.02)
    assert quitter[3] < 0.85 * troughs[0, 3]  # 48 h after quitting, most induction remains


def test_linear_theophylline_equals_the_cessation_model_without_quitting():
    """With nobody quitting, the linear model (exact engine, induction folded into CL)
    and the time-varying model (ODE engine) give the same concentrations (rtol 1e-6)."""
    covariates = {
        "weight": np.array([60.0, 85.0]),
        "smoking": np.array([0.0, 1.0]),
        "smoking_quit_time": np.array([math.inf, math.inf]),
    }
    events = DosingEvents.from_doses([THEO_DOSES]).broadcast(2)
    times = jnp.asarray(THEO_TIMES)
    linear = drug_model("theophylline", cessation=False)
    varying = drug_model("theophylline")
    a = simulate(linear.structural, linear.typical_parameters(covariates), events, times)
    b = simulate(
        varying.structural,
        varying.typical_parameters(covariates),
        events,
        times,
        method="ode",
        rtol=1e-10,
        atol=1e-12,
    )
    assert a.method == "linear"
    np.testing.assert_allclose(a.outputs, b.outputs, rtol=1e-6, atol=1e-9)


def test_theophylline_reference_fit_values():
    """Pinheiro & Bates 2000 (fm2Theo.nlme): CL 0.0397 L/h/kg, V 0.462 L/kg, ka 1.59 /h,
    SD(η log ka) 0.644, SD(η log CL) 0.167, residual SD 0.709 mg/L; estimated on 54.6–86.4 kg."""
    model = drug_model("theophylline")
    p = np.asarray(
        model.typical_parameters(
            {"weight": [70.0], "smoking": [0.0], "smoking_quit_time": [math.inf]}
        )
    )
    names = model.structural.parameters
    assert p[0, names.index("cl")] == pytest.approx(0.0397 * 70, rel=1e-3)
    assert p[0, names.index("v")] == pytest.approx(0.462 * 70, rel=1e-3)
    assert p[0, names.index("ka")] == pytest.approx(1.59, rel=1e-2)
    np.testing.assert_allclose(np.sqrt(np.diag(model.omega)), [0.644, 0.167])
    assert model.residual["conc"].additive == 0.709
    with pytest.warns(CovariateRangeWarning, match="`weight`.*54.6"):
        model.check_covariates(
            {"weight": [120.0], "smoking": [0.0], "smoking_quit_time": [math.inf]}
        )


@pytest.mark.parametrize(
    ("name", "covariates", "expected_variance"),
    [
        (
            "warfarin",
            {
                "age": np.full(4000, 71.0),
                "cyp2c9": np.full(4000, "*1/*1"),
                "vkorc1": np.full(4000, "G/A"),
            },
            {"cl": math.log1p(0.310**2), "v2": math.log1p(0.991**2), "ec50": math.log1p(0.409**2)},
        ),
        (
            "vancomycin",
            {
                "weight": np.full(4000, 70.0),
                "crcl": np.full(4000, 120.0),
                "dialysis": np.zeros(4000),
            },
            {"cl": math.log1p(0.398**2), "v1": math.log1p(0.816**2)},
        ),
    ],
)
def test_sampled_variability_has_the_published_spread(name, covariates, expected_variance):
    """Draws of 4000 subjects (seed 7): the variance of log(p_i / p_typ) matches ω² —
    both drugs' CVs converted by ln(1 + CV²) —
    within 10 % (≈ 4.5 standard errors: failure rate < 1e-5 for a random seed)."""
    model = drug_model(name)
    sample = model.sample_parameters(7, covariates)
    log_ratio = np.log(np.asarray(sample.parameters[:, 0, :]) / np.asarray(sample.typical))
    for parameter, variance in expected_variance.items():
        index = model.structural.parameters.index(parameter)
        assert np.var(log_ratio[:, index]) == pytest.approx(variance, rel=0.10)


def test_theophylline_typical_predictions_are_unbiased_on_the_data_of_the_fit():
    """Boeckmann data (tests/data/theophylline_nonmem.csv, 12 subjects, 11 samples each,
    total-mg doses, weights): the typical (η = 0) predictions of the Pinheiro & Bates fit
    leave a mean residual near 0 (measured −0.11 mg/L; bound 0.5 mg/L, against ~8 mg/L
    peaks), which a per-kg/total-mg mix-up or a wrong exp() of the log estimates breaks."""
    import pathlib

    table = np.genfromtxt(
        pathlib.Path(__file__).parents[1] / "data" / "theophylline_nonmem.csv",
        delimiter=",",
        names=True,
    )
    ids = np.unique(table["ID"])
    doses = table[table["EVID"] == 101]
    observed = table[table["EVID"] == 0]
    weight = np.array([doses["WT"][doses["ID"] == i][0] for i in ids])
    amount = np.array([doses["AMT"][doses["ID"] == i][0] for i in ids])
    times = np.stack([observed["TIME"][observed["ID"] == i] for i in ids])
    conc = np.stack([observed["DV"][observed["ID"] == i] for i in ids])
    model = drug_model("theophylline", cessation=False)
    params = model.typical_parameters(
        {"weight": weight, "smoking": np.zeros(12), "smoking_quit_time": np.full(12, math.inf)}
    )
    events = DosingEvents.from_doses([[Dose(0.0, float(a), compartment=0)] for a in amount])
    sol = simulate(model.structural, params, events, jnp.asarray(times), at_dose="post")
    residual = conc - np.asarray(sol.outputs[:, :, 0])
    assert abs(residual.mean()) < 0.5
    assert np.sqrt(np.mean(residual**2)) < 2.0  # measured 1.47 mg/L (η = 0, no BSV)
