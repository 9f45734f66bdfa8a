"""Theophylline: one-compartment oral PK with tobacco smoking as a lifestyle covariate.

Structure and typical values
----------------------------
One compartment, first-order absorption and elimination, fitted to the Boeckmann, Sheiner
& Beal theophylline study (12 adults, single oral dose of about 320 mg; R's ``Theoph``)
by Pinheiro & Bates (2000, §6.2, model ``fm2Theo.nlme``: random effects on log ka and
log CL, diagonal):

=================  ======================  ==========================================
quantity           value                   note
=================  ======================  ==========================================
CL                 0.0397 L/h/kg · WT      exp(−3.2272); per kg because the dose was
                                           given per kg in the fit
V                  0.462 L/kg · WT         CL / ke, ke = exp(−2.4547) = 0.0859 /h
ka                 1.59 /h                 exp(0.4657)
ω(log ka)          0.644 (SD)              variance 0.415
ω(log CL)          0.167 (SD)              variance 0.0279
residual           0.709 mg/L additive SD
=================  ======================  ==========================================

The fit gives apparent values (CL/F, V/F); with ``F = 1`` (immediate-release theophylline
is completely absorbed, Hendeles & Weinberger 1983) they are used as CL and V.

Smoking
-------
Polycyclic aromatic hydrocarbons in tobacco smoke induce CYP1A2, the main route of
theophylline metabolism. The multiplier on clearance in smokers is 1.575, the ratio of
mean clearances in heavy smokers and non-smokers of Powell et al. (1977: 0.063 vs
0.040 L/h/kg, healthy adults, single oral dose, volume unaffected). Other primary studies
agree on the range: Grygiel & Birkett (1981) 0.053/0.032 = 1.66; Hunt, Jusko & Yurchak
(1976) 100/45 mL/min/1.73 m² = 2.2 in 1–2 packs/day smokers; Gardner et al. (1983) +40 %
in women who smoked.

After quitting, the induction wears off exponentially:

    CL(t) = CL_ns · (1 + (f_smoke − 1) · d(t)),   d(t) = 1 for t < t_quit,
    d(t) = exp(−ln 2 · (t − t_quit) / t½)          for t ≥ t_quit,

with ``t½ = 38.6 h``, the apparent half-life of the decline of CYP1A2 activity (caffeine
clearance) after sudden cessation in heavy smokers (Faber & Fuhr 2004; 95 % CI
27.4–54.4 h; a new steady state ~1 week later, 36.1 % below the smoking value, i.e. a
smoker/non-smoker ratio of 1/(1 − 0.361) = 1.57, consistent with Powell et al.).
Assumptions (stated in the model's metadata): theophylline clearance follows caffeine's
CYP1A2 time course; the reference fit describes non-smokers (its CL 0.0397 L/h/kg equals
Powell's non-smokers' 0.040); the multiplier is that of heavy smokers (≥ 20 cigarettes a
day) and does not scale with the number of cigarettes. Hunt et al. (1976) saw no
normalisation 3–4 months after quitting in 4 subjects; Faber & Fuhr (2004), with
abstinence confirmed, found the fast decline modelled here.

Values were checked against the abstracts of the cited papers (Powell et al.: the abstract
of the 28-subject study; its journal details are as usually cited).
"""

from __future__ import annotations

import math

import numpy as np

from ..simulators._model import Named, ODEModel
from ._covariates import smoking_induction
from ._pk import MAMMILLARY_CITATION, one_compartment
from ._population import Covariate, PopulationModel, ResidualError

__all__ = [
    "THEOPHYLLINE_CITATION",
    "THEOPHYLLINE_METADATA",
    "THEOPHYLLINE_THETA",
    "theophylline_model",
    "theophylline_structural",
]

PINHEIRO_BATES = (
    "Pinheiro JC, Bates DM. Mixed-Effects Models in S and S-PLUS. Springer; 2000, §6.2 "
    "(theophylline, model fm2Theo.nlme), fitted to Boeckmann AJ, Sheiner LB, Beal SL. "
    "NONMEM Users Guide, Part V. NONMEM Project Group, UCSF; 1994"
)
POWELL_1977 = (
    "Powell JR, Thiercelin JF, Vozeh S, Sansom L, Riegelman S. The influence of cigarette "
    "smoking and sex on theophylline disposition. Am Rev Respir Dis. 1977;116(1):17-23"
)
GRYGIEL_1981 = (
    "Grygiel JJ, Birkett DJ. Cigarette smoking and theophylline clearance and metabolism. "
    "Clin Pharmacol Ther. 1981;30(4):491-496"
)
HUNT_1976 = (
    "Hunt SN, Jusko WJ, Yurchak AM. Effect of smoking on theophylline disposition. "
    "Clin Pharmacol Ther. 1976;19(5 Pt 1):546-551"
)
FABER_FUHR_2004 = (
    "Faber MS, Fuhr U. Time response of cytochrome P450 1A2 activity on cessation of heavy "
    "smoking. Clin Pharmacol Ther. 2004;76(2):178-184"
)
GARDNER_1983 = (
    "Gardner MJ, Tornatore KM, Jusko WJ, Kanarkowski R. Effects of tobacco smoking and oral "
    "contraceptive use on theophylline disposition. Br J Clin Pharmacol. 1983;16(3):271-280"
)
HENDELES_1983 = (
    "Hendeles L, Weinberger M. Theophylline. A 'state of the art' review. Pharmacotherapy. "
    "1983;3(1):2-44"
)
MITENKO_1973 = (
    "Mitenko PA, Ogilvie RI. Rational intravenous doses of theophylline. N Engl J Med. "
    "1973;289(12):600-603"
)

THEOPHYLLINE_CITATION = "; ".join(
    (PINHEIRO_BATES, POWELL_1977, FABER_FUHR_2004, GRYGIEL_1981, HUNT_1976, GARDNER_1983)
)

#: Fixed effects (typical values) with their units and sources.
THEOPHYLLINE_THETA: dict[str, tuple[float, str, str]] = {
    "cl_per_kg": (math.exp(-3.2272), "L/h/kg", "Pinheiro & Bates 2000: exp(log CL)"),
    "v_per_kg": (
        math.exp(-3.2272) / math.exp(-2.4547),
        "L/kg",
        "Pinheiro & Bates 2000: CL / ke, ke = exp(log ke)",
    ),
    "ka": (math.exp(0.4657), "1/h", "Pinheiro & Bates 2000: exp(log ka)"),
    "f_oral": (1.0, "1", "assumed: complete absorption (Hendeles & Weinberger 1983)"),
    "smoking_factor": (
        0.063 / 0.040,
        "1",
        "Powell et al. 1977: CL smokers / non-smokers 0.063 / 0.040 L/h/kg",
    ),
    "induction_half_life": (
        38.6,
        "h",
        "Faber & Fuhr 2004: half-life of CYP1A2 activity decline after quitting",
    ),
}

THEOPHYLLINE_METADATA: dict[str, object] = {
    "drug": "theophylline",
    "dosing": {
        "route": "oral",
        "dose_unit": "mg of anhydrous theophylline",
        "bioavailability": 1.0,
        "bioavailability_source": "assumption (complete absorption of immediate-release "
        "theophylline, Hendeles & Weinberger 1983); the reference fit is of apparent CL/F, V/F",
        "typical_regimen": "300-400 mg/day in 2 divided doses (immediate release), adjusted "
        "to serum concentrations",
    },
    "therapeutic_target": {
        "output": "conc",
        "metric": "concentration",
        "low": 10.0,
        "high": 20.0,
        "unit": "mg/L",
        "source": MITENKO_1973 + "; " + HENDELES_1983 + " (later asthma guidance often uses "
        "5-15 mg/L)",
    },
    "iiv_convention": "variance of eta on the log scale; Pinheiro & Bates report SDs "
    "0.644 (log ka) and 0.167 (log CL), squared here",
    "residual": "additive, SD 0.709 mg/L (Pinheiro & Bates 2000)",
    "population": "12 healthy adults, weight 54.6-86.4 kg, single oral dose 3.1-5.86 mg/kg "
    "(about 320 mg); smoking status not recorded",
    "label": {
        "source": "Theophylline prescribing information (e.g. THEO-24 / Elixophyllin, "
        "US labels): adults start 300 mg/day, titrate to 400 then 600 mg/day; above 600 "
        "mg/day only guided by serum concentrations; immediate-release tablets 100, 200, 300 "
        "mg (scored). The 900 mg/day cap and the 600 mg single-dose cap are assumptions of "
        "this library (label: doses guided by levels)",
        "tablet_strengths_mg": (100.0, 200.0, 300.0),
        "loading_allowed": False,
        "max_single_mg": 600.0,
        "max_daily_mg": 900.0,
        "initiation_mg_day": (300.0, 400.0),
    },
    "safety": {
        "output": "conc",
        "conditions": (("peak", 20.0),),
        "limit": 0.2,
        "describe": "a theophylline concentration above 20 mg/L",
        "source": "label: toxicity (nausea, arrhythmia, seizures) becomes frequent above 20 "
        "mg/L; the limit (20 % of draws) is this library's choice",
    },
    "sources": {
        "cl_per_kg, v_per_kg, ka, omega, residual": "primary (Pinheiro & Bates 2000 fit of "
        "the Boeckmann data; values as given in REFERENCES.md, R nlme)",
        "smoking_factor": "primary: " + POWELL_1977,
        "induction_half_life": "primary: " + FABER_FUHR_2004 + " (measured with caffeine)",
        "f_oral": "assumed",
    },
    "assumptions": (
        "the reference fit describes non-smokers",
        "theophylline clearance follows the CYP1A2 (caffeine) time course after quitting",
        "the smoking multiplier is that of heavy smokers and does not scale with "
        "cigarettes per day",
        "clearance and volume proportional to weight (the fit is per kg)",
    ),
}


def theophylline_structural(*, cessation: bool = True) -> ODEModel:
    """Structural model of theophylline: one compartment, first-order absorption.

    Parameters
    ----------
    cessation
        ``True``: clearance changes over time after quitting smoking (time-varying, so
        the ODE engine is used). ``False``: the plain linear one-compartment model, for
        cohorts whose smoking status does not change during the simulation (exact
        linear engine); the smoking multiplier is then folded into ``cl``.

    Returns
    -------
    ODEModel
        With ``cessation``: parameters ``cl`` (clearance without tobacco induction, L/h),
        ``v`` (L), ``ka`` (1/h), ``f_oral``, ``smoking`` (1 smokes at t = 0 or carries
        induction from recent quitting, else 0), ``smoking_factor`` (fold increase of
        clearance with full induction), ``smoking_quit_time`` (h; ``inf`` = not quitting,
        negative = quit before t = 0) and ``induction_half_life`` (h);
        ``CL(t) = cl · (1 + (smoking_factor − 1) · smoking_induction(t, ...))``
        (:func:`~twinsim.priors.smoking_induction`). States ``depot``, ``central``; output
        ``conc`` (mg/L); routes ``oral`` → ``depot``, ``iv`` → ``central``.
        Without: ``one_compartment(absorption="first_order")``.

    Examples
    --------
    >>> model = theophylline_structural()
    >>> model.parameters[4:], model.linear
    (('smoking', 'smoking_factor', 'smoking_quit_time', 'induction_half_life'), False)
    >>> theophylline_structural(cessation=False).linear
    True
    """
    base = one_compartment(absorption="first_order")
    if not cessation:
        return base

    def rhs(t, y: Named, p: Named) -> dict:
        induction = smoking_induction(t, p.smoking, p.smoking_quit_time, p.induction_half_life)
        clearance = p.cl * (1.0 + (p.smoking_factor - 1.0) * induction)
        absorbed = p.ka * y.depot
        return {"depot": -absorbed, "central": absorbed - clearance * y.central / p.v}

    added_units = {
        "smoking": "1",
        "smoking_factor": "1",
        "smoking_quit_time": "h",
        "induction_half_life": "h",
    }
    return ODEModel(
        name="theophylline_1cmt_oral_smoking",
        states=base.states,
        parameters=(*base.parameters, *added_units),
        rhs=rhs,
        outputs=dict(base.outputs),
        output_units=dict(base.output_units),
        parameter_units={**dict(base.parameter_units), **added_units},
        linear=False,
        bioavailability=dict(base.bioavailability),
        routes=dict(base.routes),
        citation=MAMMILLARY_CITATION + "; " + THEOPHYLLINE_CITATION,
    )


#: Weight range of the Boeckmann study the reference fit was estimated on, kg.
WEIGHT_RANGE = (54.6, 86.4)


def theophylline_model(*, cessation: bool = True) -> PopulationModel:
    """Population model of theophylline with smoking (Pinheiro & Bates fit; Powell, Faber & Fuhr).

    Parameters
    ----------
    cessation
        ``True`` (default): quitting during the simulation lowers clearance over time
        (ODE engine). ``False``: linear model (exact engine) with the induction held at
        its level at t = 0 (``smoking_induction(0, smoking, smoking_quit_time, t½)``); use
        it when nobody quits during the simulated period.

    Returns
    -------
    PopulationModel
        Covariates ``weight`` (kg; estimated on 54.6–86.4 kg), ``smoking`` (0/1) and
        ``smoking_quit_time`` (h relative to t = 0; ``inf`` not quitting, ``-inf`` long
        ago). Random effects on ``ka`` and ``cl`` (variances 0.644², 0.167²); additive
        residual error 0.709 mg/L. Doses are mg of theophylline into the ``oral`` route.
        ``fixed``: ``f_oral``, ``smoking_factor`` and ``induction_half_life`` (from other
        studies than the data of the fit).

    Examples
    --------
    >>> import numpy as np
    >>> pm = theophylline_model()
    >>> cov = {"weight": np.array([70.0, 70.0]), "smoking": np.array([0.0, 1.0]),
    ...        "smoking_quit_time": np.array([np.inf, np.inf])}
    >>> typical = pm.typical_parameters(cov)
    >>> [round(float(c), 3) for c in typical[:, 0]]  # cl without induction, L/h
    [2.777, 2.777]
    >>> round(float(typical[1, 5]), 3)  # smoking_factor
    1.575
    """
    structural = theophylline_structural(cessation=cessation)
    theta = {name: value for name, (value, _, _) in THEOPHYLLINE_THETA.items()}

    def parameters(th: Named, cov) -> dict:
        weight = cov["weight"]
        values = {"cl": th.cl_per_kg * weight, "v": th.v_per_kg * weight}
        if cessation:
            values["smoking"] = cov["smoking"]
            values["smoking_quit_time"] = cov["smoking_quit_time"]
        else:
            induction = smoking_induction(
                0.0, cov["smoking"], cov["smoking_quit_time"], th.induction_half_life
            )
            values["cl"] = values["cl"] * (1.0 + (th.smoking_factor - 1.0) * induction)
        return values

    return PopulationModel(
        name="theophylline" if cessation else "theophylline_linear",
        structural=structural,
        theta=theta,
        theta_units={name: unit for name, (_, unit, _) in THEOPHYLLINE_THETA.items()},
        parameters=parameters,
        random_effects=("ka", "cl"),
        omega=np.diag([0.644**2, 0.167**2]),
        residual={"conc": ResidualError(additive=0.709)},
        covariates=(
            Covariate(
                "weight",
                "kg",
                70.0,
                range=WEIGHT_RANGE,
                description="total body weight; CL and V proportional to it (per-kg fit)",
            ),
            Covariate(
                "smoking",
                "1",
                0.0,
                range=(0.0, 1.0),
                description="1 smokes at t = 0 (or quit recently, see smoking_quit_time)",
            ),
            Covariate(
                "smoking_quit_time",
                "h",
                math.inf,
                description="quitting time relative to t = 0 (inf: not quitting, -inf: long ago)",
            ),
        ),
        fixed=("f_oral", "smoking_factor", "induction_half_life"),
        citation=THEOPHYLLINE_CITATION,
    )
