"""Warfarin: S-warfarin PK by CYP2C9, age and co-medication, INR by VKORC1 — the Hamberg
et al. 2007 model, openly calibrated to the IWPC pharmacogenetic algorithm.

Provenance, value by value (*primary* = checked against the paper here; *secondary* =
read from third-party implementations citing it; *calibrated* = set by this library)
-----------------------------------------------------------------------------------------
The primary tables of Hamberg 2007 (Clin Pharmacol Ther 81:529, Table 2/3) and of its
update Hamberg 2010 (Clin Pharmacol Ther 87:727) were **not accessible** to the authors of
this module: every Hamberg value below is *secondary* (third-party code citing the papers;
for 2010, the parameter file of DavAug/mipd-warfarin, whose allele-additive S-warfarin CL
0.174/0.0879/0.0422 L/h per *1/*2/*3 allele, 0.571 %/y age effect and EC50 2.05/0.96 mg/L per
VKORC1 G/A allele agree with each other). No value is marked primary.

Implemented as the secondary 2007 values read, the model is mis-calibrated against real
patients (issue 13): its typical steady-state dose for INR 2.5 is 9.33 mg/day for a 65-year-old
*1/*1 G/G patient (IWPC: 5.75), and its CYP2C9 effects are steeper than observed
(*3/*3 0.15× of *1/*1; IWPC 0.40×). It is therefore **calibrated openly**:

- CYP2C9: the fraction of *1/*1 S-warfarin clearance of each diplotype is the IWPC dose
  ratio at the reference patient (65 y, 170 cm, 75 kg, European, G/G): *1/*2 0.842, *1/*3
  0.727, *2/*2 0.694, *2/*3 0.487, *3/*3 0.400 (:data:`CYP2C9_CLEARANCE_FRACTION`;
  ``((s0 + c) / s0)²`` with IWPC's coefficient ``c`` and ``s0`` = √(reference weekly dose)).
  Alleles *5, *8, *11 (decreased function, CPIC) take *2's effect, *6 and *13 (no function)
  *3's: an assumption (CPIC 2017: they lower dose requirements; nobody estimated them
  within this model).
- VKORC1: EC50 of G/A and A/A are G/G's times IWPC's dose ratios 0.745 and 0.536.
- Dose level: the G/G EC50 (4.61 mg/L, Hamberg 2007) is multiplied by
  :data:`EC50_CALIBRATION` = 0.6163, so that the reference patient's typical steady-state
  dose for INR 2.5 is IWPC's 40.2 mg/week (5.75 mg/day). The S-warfarin PK (and so the
  concentrations) keep the published values; the rescaling is on potency.
- Amiodarone and enzyme inducers (carbamazepine, phenytoin, rifampin): S-warfarin CL ×
  0.834 and × 1.407, IWPC's dose ratios at the reference patient.
- IIV: the published values 0.310 (CL), 0.262 (V1), 0.991 (V2), 0.141 (MTT1), 1.020 (MTT2),
  0.409 (EC50) are read as **CVs** (ω² = ln(1 + CV²)). The paper could not be checked;
  read as variances (as the third-party code did) the 90 % interval of the typical *1/*1 G/A
  maintenance dose is 0.25–4.0× its median, wider than genotype-stratified observed doses;
  read as CVs it is 0.44–2.3×. This is a judgement, not settled from the paper.

The checks: tests/priors/test_warfarin_calibration.py (label Table 5 of the FDA warfarin
label by genotype, IWPC ratios, the 90 % interval of *1/*1 G/A).

PK (S-warfarin, two compartments, first-order absorption)
---------------------------------------------------------
``CL = 0.314 L/h · (1 − 0.0091 · (age − 71)) · f_CYP2C9 · 0.834^amiodarone ·
1.407^enzyme_inducer``; ``V1 = 13.8 L``, ``Q = 0.131 L/h``, ``V2 = 6.59 L``, ``ka = 2.0 /h``
(secondary). Doses are the racemic warfarin amount (what is prescribed). S-warfarin is half
of it and the bioavailability ``F = 0.9`` is an assumption of this implementation (the
paper does not estimate it), so ``f_oral = 0.5 · 0.9 = 0.45`` of each dose reaches the
S-warfarin depot.

PD (INR, transit compartments)
------------------------------
S-warfarin inhibits the synthesis of vitamin K dependent clotting factors:

    I(t) = 1 − Emax · C^γ / (EC50^γ + C^γ),  Emax = 1, γ = 0.424,
    EC50 = 2.841 (VKORC1 −1639 G/G), 2.119 (G/A), 1.523 (A/A) mg/L (calibrated).

Two transit chains driven by ``I(t)``, every amount starting at 1 (no drug): six
compartments at rate ``6 / MTT1`` (``MTT1 = 11.6 h``) and one at ``1 / MTT2``
(``MTT2 = 120 h``):

    dA1/dt = ktr1 · (I − A1),  dAi/dt = ktr1 · (A(i−1) − Ai) (i = 2..6),
    dA7/dt = ktr2 · (I − A7),
    INR = BASE + INRmax · (1 − A6 · A7)^λ,  INRmax = 20, λ = 3.61, BASE = measured
    baseline INR (1.0 by default).

Residual error: 0.0908 (S-warfarin, single dose), 0.301 (steady state), 0.0325 (INR),
secondary; 0.301 = √0.0908, so the S-warfarin value is used as the log-scale SD 0.301 and
the INR value as a variance (SD 0.180).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..simulators._model import Named, ODEModel
from ._pd import _occupancy, extend_model
from ._pk import two_compartment
from ._population import Covariate, PopulationModel, ResidualError

__all__ = [
    "CYP2C9_CLEARANCE_FRACTION",
    "CYP2C9_CLEARANCE_REDUCTION",
    "IWPC_COEFFICIENTS",
    "VKORC1_EC50",
    "WARFARIN_CITATION",
    "WARFARIN_METADATA",
    "WARFARIN_THETA",
    "iwpc_dose_ratio",
    "maintenance_dose",
    "steady_state_inr",
    "steady_state_inr_at_average",
    "warfarin_model",
    "warfarin_structural",
]

HAMBERG_2007 = (
    "Hamberg AK, Dahl ML, Barban M, Scordo MG, Wadelius M, Pengo V, Padrini R, Jonsson EN. "
    "A PK-PD model for predicting the impact of age, CYP2C9, and VKORC1 genotype on "
    "individualization of warfarin therapy. Clin Pharmacol Ther. 2007;81(4):529-538"
)
CPIC_WARFARIN = (
    "Johnson JA, Gong L, Whirl-Carrillo M, et al. Clinical Pharmacogenetics Implementation "
    "Consortium guidelines for CYP2C9 and VKORC1 genotypes and warfarin dosing. Clin "
    "Pharmacol Ther. 2011;90(4):625-629 (INR 2-3 for most indications)"
)
IWPC_2009 = (
    "International Warfarin Pharmacogenetics Consortium. Estimation of the warfarin dose with "
    "clinical and pharmacogenetic data. N Engl J Med 2009;360:753-764 (pharmacogenetic "
    "algorithm, Supplementary Appendix; 4,043 patients in the derivation cohort)"
)
FDA_LABEL_2017 = (
    "COUMADIN (warfarin sodium) prescribing information, Bristol-Myers Squibb, revised 2017, "
    "Table 5: Range of Expected Therapeutic Warfarin Doses Based on CYP2C9 and VKORC1 Genotypes"
)

WARFARIN_CITATION = HAMBERG_2007

#: Fixed effects (typical values) with units and sources.
WARFARIN_THETA: dict[str, tuple[float, str, str]] = {
    "cl": (0.314, "L/h", "Hamberg 2007: S-warfarin CL, CYP2C9 *1/*1, age 71"),
    "age_slope": (0.0091, "1/y", "Hamberg 2007: CL · (1 − 0.0091 · (age − 71))"),
    "v1": (13.8, "L", "Hamberg 2007"),
    "q": (0.131, "L/h", "Hamberg 2007"),
    "v2": (6.59, "L", "Hamberg 2007"),
    "ka": (2.0, "1/h", "Hamberg 2007"),
    "s_fraction": (0.5, "1", "S-warfarin is half of racemic warfarin"),
    "bioavailability": (0.9, "1", "assumption of this implementation, not of the paper"),
    "emax": (1.0, "1", "Hamberg 2007"),
    "gamma": (0.424, "1", "Hamberg 2007"),
    "mtt1": (11.6, "h", "Hamberg 2007: 6-compartment chain"),
    "mtt2": (120.0, "h", "Hamberg 2007: 1-compartment chain"),
    "inr_max": (20.0, "1", "Hamberg 2007"),
    "inr_lambda": (3.61, "1", "Hamberg 2007"),
    "inr_base": (1.0, "1", "Hamberg 2007 uses the measured baseline INR; 1.0 by default"),
}

WARFARIN_METADATA: dict[str, object] = {
    "drug": "warfarin",
    "dosing": {
        "route": "oral",
        "dose_unit": "mg of racemic warfarin sodium",
        "bioavailability": 0.9,
        "s_fraction": 0.5,
        "f_oral": 0.45,
        "bioavailability_source": "assumption of the implementation (F 0.9), times 0.5 for "
        "the S-enantiomer; the paper models S-warfarin only",
        "typical_regimen": "2-10 mg once daily, adjusted to INR",
    },
    "therapeutic_target": {
        "output": "inr",
        "metric": "inr",
        "low": 2.0,
        "high": 3.0,
        "unit": "1",
        "source": CPIC_WARFARIN,
    },
    "iiv_convention": "coefficient of variation: published values read as CVs (omega^2 = "
    "ln(1 + CV^2)): 0.310 CL, 0.262 "
    "V1, 0.991 V2, 0.141 MTT1, 1.020 MTT2, 0.409 EC50 (secondary values; the convention is a "
    "judgement, not checked against the paper — see the module docstring)",
    "residual": "exponential (log-scale) error: S-warfarin SD 0.301 (variance 0.0908), INR "
    "SD sqrt(0.0325) = 0.180 (secondary values read as variances)",
    "population": "adult patients starting or on warfarin (Swedish and Italian cohorts); "
    "CYP2C9 *1/*2/*3 diplotypes and VKORC1 -1639 genotypes; other CYP2C9 alleles by function "
    "class (assumed); age range assumed 18-95 y (the paper's exact range was not available)",
    "calibration": {
        "what": "CYP2C9 clearance fractions, VKORC1 EC50 ratios, the EC50 level (x 0.6163) "
        "and the amiodarone / enzyme-inducer clearance factors",
        "data_source": IWPC_2009,
        "reference_patient": "65 y, 170 cm, 75 kg, European ancestry, CYP2C9 *1/*1, VKORC1 "
        "G/G: IWPC 40.2 mg/week = 5.75 mg/day",
        "uncalibrated_reference_dose_mg_day": 9.33,
        "checked_against": FDA_LABEL_2017,
        "why": "as read from secondary sources the Hamberg 2007 model overestimates the "
        "maintenance dose of *1/*1 G/G patients by ~1.6x and its CYP2C9 effects are steeper "
        "than observed (issue 13); the primary tables were not accessible",
    },
    "sources": {
        "PK/PD structure, CL, age slope, V1, Q, V2, ka, gamma, MTT1, MTT2, INRmax, lambda, "
        "IIV": "secondary: third-party implementations citing " + HAMBERG_2007,
        "Hamberg 2010 allele effects (compared, not used)": "secondary: DavAug/mipd-warfarin "
        "models/hamberg_warfarin_inr_model_parameters.csv citing Hamberg AK et al. Clin "
        "Pharmacol Ther 2010;87:727-734",
        "genotype effects, EC50 level, amiodarone, enzyme inducers": "calibrated to "
        + IWPC_2009
        + " (coefficients secondary: read from third-party implementations)",
        "CYP2C9 *5 *6 *8 *11 *13": "assumed: effect of *2 (decreased function) or *3 (no "
        "function) by CPIC function class (Theken 2020; Johnson 2017 CPIC warfarin update)",
        "bioavailability 0.9": "assumed",
        "inr_base 1.0": "assumed (the paper uses each patient's measured baseline)",
        "covariate ranges": "genotype levels as above; age range assumed",
        "label dose table": FDA_LABEL_2017,
    },
    "label": {
        "source": FDA_LABEL_2017 + "; tablet strengths from the label's HOW SUPPLIED",
        "tablet_strengths_mg": (1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5, 10.0),
        "initiation_mg_day": (2.0, 5.0),
        "initiation_note": "label: select the starting dose from the expected maintenance "
        "dose; routine loading doses are not recommended (initial 2-5 mg/day is usual)",
        "loading_allowed": False,
        "max_single_mg": 10.0,
        "max_daily_mg": 10.0,
        "maintenance_mg_day": (0.5, 10.0),
        "maintenance_note": "label: usual maintenance 2-10 mg/day; higher only under INR "
        "monitoring by a specialist (not recommended by this library)",
        "pharmacogenomic_table_mg_day": {
            "G/G": {
                "*1/*1": (5, 7),
                "*1/*2": (5, 7),
                "*1/*3": (3, 4),
                "*2/*2": (3, 4),
                "*2/*3": (3, 4),
                "*3/*3": (0.5, 2),
            },
            "G/A": {
                "*1/*1": (5, 7),
                "*1/*2": (3, 4),
                "*1/*3": (3, 4),
                "*2/*2": (3, 4),
                "*2/*3": (0.5, 2),
                "*3/*3": (0.5, 2),
            },
            "A/A": {
                "*1/*1": (3, 4),
                "*1/*2": (3, 4),
                "*1/*3": (0.5, 2),
                "*2/*2": (0.5, 2),
                "*2/*3": (0.5, 2),
                "*3/*3": (0.5, 2),
            },
        },
    },
    "safety": {
        "output": "inr",
        "conditions": (("peak", 4.0), ("steady_state", 4.0)),
        "limit": 0.2,
        "describe": "INR above 4 at any time over initiation, or at steady state",
        "source": "INR > 4 roughly doubles-to-quadruples major bleeding risk (Hylek EM et al. "
        "Ann Intern Med 1994;120:897; Chest guidelines on VKA therapy); the limit (20 % of "
        "draws) is this library's choice",
    },
}

_CHAIN1 = tuple(f"inr_chain1_{i}" for i in range(1, 7))
_CHAIN2 = "inr_chain2"


def _inr(y: Named, p: Named) -> jax.Array:
    """``BASE + INRmax · (1 − A6·A7)^λ``, with the base clipped at 0."""
    deficit = 1.0 - y[_CHAIN1[-1]] * y[_CHAIN2]
    positive = deficit > 0.0
    # The double where keeps value and gradients finite where the base is 0 (no drug).
    safe = jnp.where(positive, deficit, 1.0)
    power = jnp.where(positive, jnp.exp(p.inr_lambda * jnp.log(safe)), 0.0)
    return p.inr_base + p.inr_max * power


def warfarin_structural() -> ODEModel:
    """Structural model of warfarin: S-warfarin 2-compartment PK and the INR transit model.

    Returns
    -------
    ODEModel
        States ``depot``, ``central``, ``peripheral1`` (S-warfarin, mg),
        ``inr_chain1_1`` … ``inr_chain1_6`` and ``inr_chain2`` (relative clotting-factor
        activity, 1 at baseline). Parameters ``cl``, ``v1``, ``q``, ``v2``, ``ka``,
        ``f_oral`` (fraction of a racemic dose reaching the S-warfarin depot), ``emax``,
        ``ec50`` (mg/L), ``gamma``, ``mtt1``, ``mtt2`` (h), ``inr_max``, ``inr_lambda``,
        ``inr_base``. Outputs ``conc`` (S-warfarin, mg/L) and ``inr``. Nonlinear.

    Examples
    --------
    >>> model = warfarin_structural()
    >>> model.output_names, model.linear, len(model.states)
    (('conc', 'inr'), False, 10)
    """
    pk = two_compartment(absorption="first_order")

    def rhs(t, y: Named, p: Named) -> dict:
        inhibition = 1.0 - p.emax * _occupancy(y.central / p.v1, p.ec50, p.gamma)
        ktr1 = len(_CHAIN1) / p.mtt1
        out = {}
        upstream = inhibition
        for state in _CHAIN1:
            out[state] = ktr1 * (upstream - y[state])
            upstream = y[state]
        out[_CHAIN2] = (inhibition - y[_CHAIN2]) / p.mtt2
        return out

    return extend_model(
        pk,
        name="warfarin_hamberg2007",
        states=[*_CHAIN1, _CHAIN2],
        parameters=["emax", "ec50", "gamma", "mtt1", "mtt2", "inr_max", "inr_lambda", "inr_base"],
        rhs=rhs,
        outputs={"inr": _inr},
        output_units={"inr": "1"},
        parameter_units={
            "emax": "1",
            "ec50": "mg/L",
            "gamma": "1",
            "mtt1": "h",
            "mtt2": "h",
            "inr_max": "1",
            "inr_lambda": "1",
            "inr_base": "1",
        },
        initial=lambda p: {state: 1.0 for state in (*_CHAIN1, _CHAIN2)},
        linear=False,
        citation=HAMBERG_2007,
    )


#: Reference age of the clearance model, y (Hamberg 2007: CL · (1 − 0.0091 · (age − 71))).
AGE_REFERENCE = 71.0
#: Age range the library warns outside (assumed: adults; the paper's range was not available).
AGE_RANGE = (18.0, 95.0)

#: IWPC pharmacogenetic algorithm (``sqrt(weekly dose, mg) = Σ coefficient · x``), the
#: coefficients the calibration uses (*secondary*: read from third-party implementations of
#: :data:`IWPC_2009`; they agree with each other).
IWPC_COEFFICIENTS: dict[str, float] = {
    "intercept": 5.6044,
    "age_decades": -0.2614,
    "height_cm": 0.0087,
    "weight_kg": 0.0128,
    "vkorc1_G/A": -0.8677,
    "vkorc1_A/A": -1.6974,
    "cyp2c9_*1/*2": -0.5211,
    "cyp2c9_*1/*3": -0.9357,
    "cyp2c9_*2/*2": -1.0616,
    "cyp2c9_*2/*3": -1.9206,
    "cyp2c9_*3/*3": -2.3312,
    "enzyme_inducer": 1.1816,
    "amiodarone": -0.5503,
}

#: The reference patient of the calibration: 65 y, 170 cm, 75 kg, European ancestry, CYP2C9
#: *1/*1, VKORC1 G/G, no amiodarone or enzyme inducer.
IWPC_REFERENCE = {"age": 65.0, "height_cm": 170.0, "weight_kg": 75.0}


def _iwpc_sqrt_reference() -> float:
    c = IWPC_COEFFICIENTS
    return (
        c["intercept"]
        + c["age_decades"] * IWPC_REFERENCE["age"] / 10.0
        + c["height_cm"] * IWPC_REFERENCE["height_cm"]
        + c["weight_kg"] * IWPC_REFERENCE["weight_kg"]
    )


def iwpc_dose_ratio(term: str) -> float:
    """Dose ratio of one IWPC term at the reference patient: ``((s0 + c) / s0)²``.

    Examples
    --------
    >>> round(iwpc_dose_ratio("cyp2c9_*3/*3"), 3), round(iwpc_dose_ratio("vkorc1_A/A"), 3)
    (0.4, 0.536)
    """
    s0 = _iwpc_sqrt_reference()
    return ((s0 + IWPC_COEFFICIENTS[term]) / s0) ** 2


#: Typical maintenance dose of the reference patient by IWPC, mg/day (40.2 mg/week).
IWPC_REFERENCE_DOSE_MG_DAY = _iwpc_sqrt_reference() ** 2 / 7.0

# CPIC function class of each CYP2C9 allele the gene table knows (Theken 2020): the
# warfarin model gives decreased-function alleles (*2, *5, *8, *11) the effect IWPC
# estimated for *2 and no-function alleles (*3, *6, *13) that of *3 — an assumption:
# CPIC's 2017 warfarin update (Johnson JA et al., Clin Pharmacol Ther 2017;102:397) states
# *5, *6, *8 and *11 decrease dose requirements, but neither Hamberg nor IWPC estimated them.
_ALLELE_CLASS = {
    "*1": "1",
    "*2": "2",
    "*5": "2",
    "*8": "2",
    "*11": "2",
    "*3": "3",
    "*6": "3",
    "*13": "3",
}
_ALLELE_ORDER = ("*1", "*2", "*3", "*5", "*6", "*8", "*11", "*13")


def _diplotypes() -> tuple[str, ...]:
    """The six Hamberg/IWPC diplotypes first (their codes unchanged), then the rest."""
    first = ("*1/*1", "*1/*2", "*1/*3", "*2/*2", "*2/*3", "*3/*3")
    rest = []
    for i, a in enumerate(_ALLELE_ORDER):
        for b in _ALLELE_ORDER[i:]:
            d = f"{a}/{b}"
            if d not in first:
                rest.append(d)
    return first + tuple(rest)


CYP2C9_DIPLOTYPES = _diplotypes()


def _class_pair(diplotype: str) -> str:
    a, b = diplotype.split("/")
    return "".join(sorted(_ALLELE_CLASS[a] + _ALLELE_CLASS[b]))


#: Fraction of *1/*1 S-warfarin clearance by CYP2C9 class pair (calibrated to IWPC).
CYP2C9_CLEARANCE_FRACTION: dict[str, float] = {
    "11": 1.0,
    **{
        pair: iwpc_dose_ratio(f"cyp2c9_*{pair[0]}/*{pair[1]}")
        for pair in ("12", "13", "22", "23", "33")
    },
}
#: Fractional reduction of S-warfarin clearance by diplotype (1 − fraction), all diplotypes.
CYP2C9_CLEARANCE_REDUCTION: dict[str, float] = {
    d: 1.0 - CYP2C9_CLEARANCE_FRACTION[_class_pair(d)] for d in CYP2C9_DIPLOTYPES
}

#: Published Hamberg 2007 EC50 of S-warfarin, mg/L (*secondary*), before calibration.
VKORC1_EC50_HAMBERG: dict[str, float] = {"G/G": 4.61, "G/A": 3.02, "A/A": 2.20}
#: Open calibration of EC50 (see the module docstring): the published G/G value times
#: this factor makes the typical steady-state dose of the IWPC reference patient (65 y,
#: *1/*1, G/G) for INR 2.5 equal IWPC's 5.75 mg/day (40.2 mg/week); the uncalibrated model
#: gives 9.33 mg/day (measured by root finding on the SS=1 INR, tests/priors/
#: test_warfarin_calibration.py).
EC50_CALIBRATION = 0.6163
#: EC50 by VKORC1 genotype after calibration, mg/L: G/G · IWPC dose ratio of the genotype.
VKORC1_EC50: dict[str, float] = {
    "G/G": 4.61 * EC50_CALIBRATION,
    "G/A": 4.61 * EC50_CALIBRATION * iwpc_dose_ratio("vkorc1_G/A"),
    "A/A": 4.61 * EC50_CALIBRATION * iwpc_dose_ratio("vkorc1_A/A"),
}
#: S-warfarin clearance multipliers of co-medication (IWPC dose ratios at the reference).
AMIODARONE_CL_FACTOR = iwpc_dose_ratio("amiodarone")
ENZYME_INDUCER_CL_FACTOR = iwpc_dose_ratio("enzyme_inducer")

_CLASS_THETA = {
    "11": None,
    "12": "cl_reduction_12",
    "13": "cl_reduction_13",
    "22": "cl_reduction_22",
    "23": "cl_reduction_23",
    "33": "cl_reduction_33",
}
_CYP2C9_THETA = {d: _CLASS_THETA[_class_pair(d)] for d in CYP2C9_DIPLOTYPES}
_VKORC1_THETA = {"G/G": "ec50_gg", "G/A": "ec50_ga", "A/A": "ec50_aa"}

#: Published IIV values (Hamberg 2007, *secondary*), read as CVs: ω² = ln(1 + CV²).
WARFARIN_IIV_CV: dict[str, float] = {
    "cl": 0.310,
    "v1": 0.262,
    "v2": 0.991,
    "mtt1": 0.141,
    "mtt2": 1.020,
    "ec50": 0.409,
}
#: IIV as variances of log-normal η (ω²).
WARFARIN_OMEGA: dict[str, float] = {k: math.log1p(cv**2) for k, cv in WARFARIN_IIV_CV.items()}


def warfarin_model() -> PopulationModel:
    """Population model of warfarin: S-warfarin PK by CYP2C9, age and co-medication, INR by
    VKORC1 — Hamberg et al. 2007 structure, genotype effects and dose level calibrated
    openly to the IWPC pharmacogenetic algorithm (see the module docstring).

    Doses are mg of racemic warfarin into the ``oral`` route; ``f_oral = s_fraction ·
    bioavailability`` (0.5 · 0.9, both ``fixed``).

    Returns
    -------
    PopulationModel
        Covariates ``age`` (y), ``cyp2c9`` (every diplotype of *1, *2, *3, *5, *6, *8, *11,
        *13, the six Hamberg ones first), ``vkorc1`` (``G/G``, ``G/A``, ``A/A``),
        ``amiodarone`` and ``enzyme_inducer`` (0/1, default 0), canonical spellings as
        :func:`~twinsim.priors.parse_diplotype` gives them. Random effects on ``cl``,
        ``v1``, ``v2``, ``mtt1``, ``mtt2``, ``ec50``; exponential residual error on ``conc``
        (S-warfarin) and ``inr``.

    Examples
    --------
    >>> pm = warfarin_model()
    >>> cov = {"age": [71.0, 71.0], "cyp2c9": ["*1/*1", "*3/*3"], "vkorc1": ["G/G", "A/A"]}
    >>> p = pm.typical_parameters(cov)
    >>> names = pm.structural.parameters
    >>> [round(float(c), 4) for c in p[:, names.index("cl")]]
    [0.314, 0.1256]
    >>> [round(float(e), 3) for e in p[:, names.index("ec50")]]
    [2.841, 1.523]
    """
    theta = {name: value for name, (value, _, _) in WARFARIN_THETA.items()}
    theta_units = {name: unit for name, (_, unit, _) in WARFARIN_THETA.items()}
    for pair, name in _CLASS_THETA.items():
        if name is not None:
            theta[name] = 1.0 - CYP2C9_CLEARANCE_FRACTION[pair]
            theta_units[name] = "1"
    for genotype, name in _VKORC1_THETA.items():
        theta[name] = VKORC1_EC50[genotype]
        theta_units[name] = "mg/L"
    theta["amiodarone_cl"] = AMIODARONE_CL_FACTOR
    theta["inducer_cl"] = ENZYME_INDUCER_CL_FACTOR
    theta_units["amiodarone_cl"] = theta_units["inducer_cl"] = "1"
    theta.pop("ec50", None)

    def parameters(th: Named, cov) -> dict:
        reduction = jnp.stack(
            [jnp.zeros(()) if name is None else th[name] for name in _CYP2C9_THETA.values()]
        )[cov["cyp2c9"]]
        age_factor = 1.0 - th.age_slope * (cov["age"] - AGE_REFERENCE)
        comedication = (
            th.amiodarone_cl ** cov["amiodarone"] * th.inducer_cl ** cov["enzyme_inducer"]
        )
        ec50 = jnp.stack([th[name] for name in _VKORC1_THETA.values()])[cov["vkorc1"]]
        return {
            "cl": th.cl * age_factor * (1.0 - reduction) * comedication,
            "f_oral": th.s_fraction * th.bioavailability,
            "ec50": ec50,
        }

    return PopulationModel(
        name="warfarin",
        structural=warfarin_structural(),
        theta=theta,
        theta_units=theta_units,
        parameters=parameters,
        random_effects=tuple(WARFARIN_OMEGA),
        omega=np.diag(list(WARFARIN_OMEGA.values())),
        residual={
            "conc": ResidualError(proportional=0.301, exponential=True),
            "inr": ResidualError(proportional=math.sqrt(0.0325), exponential=True),
        },
        covariates=(
            Covariate(
                "age",
                "y",
                AGE_REFERENCE,
                range=AGE_RANGE,
                description="S-warfarin CL · (1 − 0.0091 · (age − 71)); range assumed (adults)",
            ),
            Covariate(
                "cyp2c9",
                "",
                "*1/*1",
                levels=CYP2C9_DIPLOTYPES,
                description="CYP2C9 diplotype; CL fraction by allele function class, "
                "calibrated to IWPC 2009 (*5, *8, *11 as *2; *6, *13 as *3: assumed)",
            ),
            Covariate(
                "vkorc1",
                "",
                "G/G",
                levels=tuple(_VKORC1_THETA),
                description="VKORC1 -1639G>A (rs9923231) genotype",
            ),
            Covariate(
                "amiodarone",
                "",
                0.0,
                range=(0.0, 1.0),
                default=0.0,
                description="taking amiodarone (0/1): S-warfarin CL × "
                f"{AMIODARONE_CL_FACTOR:.3f} (IWPC 2009 dose effect)",
            ),
            Covariate(
                "enzyme_inducer",
                "",
                0.0,
                range=(0.0, 1.0),
                default=0.0,
                description="taking carbamazepine, phenytoin or rifampin (0/1): S-warfarin CL × "
                f"{ENZYME_INDUCER_CL_FACTOR:.3f} (IWPC 2009 dose effect)",
            ),
        ),
        fixed=(
            "s_fraction",
            "bioavailability",
            "emax",
            "inr_max",
            "inr_base",
            "amiodarone_cl",
            "inducer_cl",
        ),
        citation=WARFARIN_CITATION,
    )


@functools.cache
def _structural() -> ODEModel:
    # one instance: the engine's compilations are cached per model object
    return warfarin_structural()


def steady_state_inr(parameters: Any, daily_dose_mg: Any) -> np.ndarray:
    """Average INR over a dosing day at steady state of ``daily_dose_mg`` once daily.

    The SS=1 dose record puts the whole system (S-warfarin and both transit chains) at its
    periodic steady state (the engine's fixed point), then the INR is averaged over 0–24 h.

    Parameters
    ----------
    parameters
        Structural parameters of the warfarin model ``[subject, P]``.
    daily_dose_mg
        Racemic dose per subject, mg (``[subject]`` or a scalar).

    Returns
    -------
    numpy.ndarray
        ``[subject]`` average INR (NaN where the solve failed).
    """
    from ..simulators import Dose, DosingEvents, simulate

    params = jnp.asarray(parameters, jnp.float64)
    n = params.shape[0]
    doses = np.broadcast_to(np.asarray(daily_dose_mg, np.float64), (n,))
    events = DosingEvents.from_doses(
        [[Dose(0.0, float(d), compartment=0, steady_state=True, interval=24.0)] for d in doses]
    )
    times = jnp.linspace(0.0, 24.0, 25)
    sol = simulate(_structural(), params, events, times, method="ode")
    inr = np.asarray(sol.outputs[:, :, 1])
    # trapezoid average over the day
    average = 0.5 * (inr[:, 1:] + inr[:, :-1]).mean(axis=1)
    return np.where(np.asarray(sol.ok).reshape(n, -1).all(axis=1), average, np.nan)


def maintenance_dose(
    parameters: Any, target_inr: float = 2.5, *, low_mg: float = 0.05, high_mg: float = 60.0
) -> np.ndarray:
    """Daily racemic dose giving an average steady-state INR of ``target_inr``, mg/day.

    Bisection on log dose of :func:`steady_state_inr` (monotone in dose), all subjects at
    once; 14 halvings of the bracket ``[low_mg, high_mg]`` (precision 0.05 %).

    Parameters
    ----------
    parameters
        Structural parameters ``[subject, P]`` (typical or individual).
    target_inr
        The steady-state INR aimed at (2.5: the middle of 2–3).
    low_mg, high_mg
        Bracket, mg/day; a subject whose dose lies outside gets the bound.

    Returns
    -------
    numpy.ndarray
        ``[subject]`` dose, mg/day.

    Examples
    --------
    >>> pm = warfarin_model()
    >>> p = pm.typical_parameters({"age": [65.0], "cyp2c9": ["*1/*1"], "vkorc1": ["G/G"]})
    >>> round(float(maintenance_dose(p)[0]), 1)
    5.7
    """
    params = jnp.asarray(parameters, jnp.float64)
    lo = np.full(params.shape[0], math.log(low_mg))
    hi = np.full(params.shape[0], math.log(high_mg))
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        above = steady_state_inr(params, np.exp(mid)) > target_inr
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return np.exp(0.5 * (lo + hi))


def steady_state_inr_at_average(parameters: Any, daily_dose_mg: Any, names: Any) -> np.ndarray:
    """Steady-state INR at the *average* S-warfarin concentration of a daily dose.

    ``C = f_oral · dose / (24 h · CL)`` (exact for linear PK); both transit chains then sit
    at ``I = 1 − Emax·C^γ/(EC50^γ + C^γ)`` and ``INR = BASE + INRmax·(1 − I²)^λ``. It
    ignores the within-day swing of C (a 24 h interval against an S-warfarin half-life of
    ~2 days): against :func:`steady_state_inr` the dose for INR 2.5 differs by ≈ 1.5 %.
    Cheap and vectorised, for scoring many draws × candidates.

    Parameters
    ----------
    parameters
        Structural parameters ``[..., P]``.
    daily_dose_mg
        Racemic daily dose, broadcast against ``parameters[..., 0]``.
    names
        ``structural.parameters`` (the column order).

    Examples
    --------
    >>> pm = warfarin_model()
    >>> p = np.asarray(pm.typical_parameters({"age": [65.0], "cyp2c9": ["*1/*1"],
    ...                                       "vkorc1": ["G/G"]}))
    >>> round(float(steady_state_inr_at_average(p, 5.75, pm.structural.parameters)[0]), 2)
    2.52
    """
    p = np.asarray(parameters, np.float64)
    col = {name: p[..., list(names).index(name)] for name in names}
    conc = col["f_oral"] * np.asarray(daily_dose_mg, np.float64) / (24.0 * col["cl"])
    ratio = (conc / col["ec50"]) ** col["gamma"]
    inhibition = 1.0 - col["emax"] * ratio / (1.0 + ratio)
    deficit = np.clip(1.0 - inhibition**2, 0.0, None)
    return col["inr_base"] + col["inr_max"] * deficit ** col["inr_lambda"]
