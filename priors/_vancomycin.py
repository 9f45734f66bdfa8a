"""Vancomycin: two-compartment IV PK by renal function, weight and haemodialysis (Goti 2018).

Model (Goti et al. 2018, Table 2; *secondary* reading, see the metadata)
------------------------------------------------------------------------
    CL = 4.5 L/h · (CrCL / 120)^0.8 · 0.7^DIAL
    Vc = 58.4 L · (WT / 70) · 0.5^DIAL
    Vp = 38.4 L · (WT / 70)
    Q  = 6.5 L/h

``CrCL`` is the Cockcroft–Gault creatinine clearance (mL/min) with total body weight,
capped at 150 mL/min; for patients over 60, a serum creatinine below 1 mg/dL is set to 1
before computing it (the rules of the paper's data set). ``DIAL`` = 1 on intermittent
haemodialysis.

IIV: CV 39.8 % (CL), 81.6 % (Vc), 57.1 % (Vp), log-normal, converted to variances with
``ω² = ln(1 + CV²)``. Residual: 3.4 mg/L additive + 22.7 % proportional.

At steady state the AUC over 24 h is the daily dose over CL: 1000 mg every 12 h at
CrCL 120 mL/min without dialysis gives 2000 / 4.5 = 444 mg·h/L, inside the 400–600
mg·h/L target (AUC24/MIC with MIC 1 mg/L; Rybak et al. 2020).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from ..simulators._model import Named, ODEModel
from ._pd import extend_model
from ._pk import two_compartment
from ._population import Covariate, PopulationModel, ResidualError

__all__ = [
    "VANCOMYCIN_CITATION",
    "VANCOMYCIN_CRCL_OPTIONS",
    "VANCOMYCIN_METADATA",
    "VANCOMYCIN_THETA",
    "vancomycin_model",
    "vancomycin_structural",
]

GOTI_2018 = (
    "Goti V, Chaturvedula A, Fossler MJ, Mok S, Jacob JT. Hospitalized patients with and "
    "without hemodialysis have markedly different vancomycin pharmacokinetics: a population "
    "pharmacokinetic model-based analysis. Ther Drug Monit. 2018;40(2):212-221"
)
RYBAK_2020 = (
    "Rybak MJ, Le J, Lodise TP, et al. Therapeutic monitoring of vancomycin for serious "
    "methicillin-resistant Staphylococcus aureus infections: a revised consensus guideline "
    "and review by the ASHP, IDSA, PIDS and SIDP. Am J Health Syst Pharm. "
    "2020;77(11):835-864"
)
COCKCROFT_GAULT_1976 = (
    "Cockcroft DW, Gault MH. Prediction of creatinine clearance from serum creatinine. "
    "Nephron. 1976;16(1):31-41"
)
VANCOMYCIN_CITATION = GOTI_2018

#: Fixed effects (typical values) with units and sources.
VANCOMYCIN_THETA: dict[str, tuple[float, str, str]] = {
    "cl": (4.5, "L/h", "Goti 2018: CL at CrCL 120 mL/min, no dialysis"),
    "cl_crcl_exponent": (0.8, "1", "Goti 2018: (CrCL / 120)^0.8"),
    "cl_dialysis_factor": (0.7, "1", "Goti 2018: 0.7^DIAL on CL"),
    "v1": (58.4, "L", "Goti 2018: Vc at 70 kg, no dialysis"),
    "v1_dialysis_factor": (0.5, "1", "Goti 2018: 0.5^DIAL on Vc"),
    "q": (6.5, "L/h", "Goti 2018"),
    "v2": (38.4, "L", "Goti 2018: Vp at 70 kg"),
}

#: Reference values of the covariate model (Goti 2018).
CRCL_REFERENCE, WEIGHT_REFERENCE = 120.0, 70.0

#: The paper's Cockcroft–Gault rules, as keywords of ``cockcroft_gault`` and
#: ``covariate_table(..., crcl_options=...)``.
VANCOMYCIN_CRCL_OPTIONS: dict[str, float] = {"cap": 150.0, "min_creatinine_over_60": 1.0}

#: Between-subject variability, coefficient of variation of the log-normal parameter.
VANCOMYCIN_IIV_CV: dict[str, float] = {"cl": 0.398, "v1": 0.816, "v2": 0.571}

VANCOMYCIN_METADATA: dict[str, object] = {
    "drug": "vancomycin",
    "dosing": {
        "route": "iv",
        "dose_unit": "mg of vancomycin",
        "administration": "intermittent IV infusion, typically 1 h per 1 g (at most ~10-15 mg/min)",
        "bioavailability": 1.0,
        "typical_regimen": "15-20 mg/kg every 8-12 h (actual body weight), adjusted to AUC24",
    },
    "therapeutic_target": {
        "output": "conc",
        "metric": "auc24",
        "low": 400.0,
        "high": 600.0,
        "unit": "mg*h/L",
        "mic": 1.0,
        "source": RYBAK_2020 + " (AUC24/MIC 400-600 assuming MIC 1 mg/L)",
    },
    "iiv_convention": "coefficient of variation of the log-normal parameter (CV 39.8 % CL, "
    "81.6 % Vc, 57.1 % Vp); omega^2 = ln(1 + CV^2)",
    "residual": "combined: additive SD 3.4 mg/L + proportional 22.7 %",
    "population": "1812 hospitalised adults (two academic centres, Atlanta, 2011-2012), 336 "
    "on intermittent haemodialysis; age 17-101 y, weight 33-255 kg, Cockcroft-Gault CrCL "
    "4-150 mL/min (after truncation at 150)",
    "label": {
        "source": "Rybak MJ et al. Therapeutic monitoring of vancomycin for serious MRSA "
        "infections: a revised consensus guideline (ASHP/IDSA/PIDS/SIDP). Am J Health Syst "
        "Pharm 2020;77:835-864: loading 20-35 mg/kg (actual weight), maximum 3000 mg; "
        "maintenance 15-20 mg/kg every 8-12 h; the 4500 mg/day cap is an assumption of this "
        "library (daily doses >= 4 g carry a higher nephrotoxicity risk, Lodise 2008)",
        "vial_strengths_mg": (500.0, 750.0, 1000.0, 1250.0, 1500.0, 1750.0, 2000.0),
        "loading_allowed": True,
        "max_loading_mg": 3000.0,
        "max_single_mg": 2000.0,
        "max_daily_mg": 4500.0,
        "initiation_note": "a loading dose of 20-35 mg/kg may be given in the critically ill",
    },
    "safety": {
        "output": "conc",
        "conditions": (("auc24", 650.0), ("trough", 20.0)),
        "limit": 0.25,
        "describe": "AUC24 above 650 mg*h/L or trough above 20 mg/L",
        "source": "Rybak 2020: AUC24 > 650-1300 mg*h/L and troughs > 15-20 mg/L increase "
        "acute kidney injury; the limit (25 % of draws) is this library's choice",
    },
    "sources": {
        "typical values, IIV, residual": "secondary: REFERENCES.md, read from third-party "
        "implementations citing " + GOTI_2018,
        "population ranges": "secondary: nlmixr2lib's Goti_2018_vancomycin model page, "
        "citing Goti 2018 Table 1",
        "CrCL rules (cap 150, SCr floor 1 mg/dL over 60 y)": "secondary: REFERENCES.md",
        "Cockcroft-Gault": COCKCROFT_GAULT_1976,
    },
}


def vancomycin_structural() -> ODEModel:
    """Structural model of vancomycin: two compartments, IV (Goti et al. 2018).

    Returns
    -------
    ODEModel
        :func:`~twinsim.priors.two_compartment` (IV) named ``vancomycin_goti2018``:
        parameters ``cl``, ``v1``, ``q`` (L/h), ``v2`` (L); states ``central``,
        ``peripheral1``; output ``conc`` (mg/L); linear (exact engine); route ``iv``.

    Examples
    --------
    >>> model = vancomycin_structural()
    >>> model.parameters, model.linear, dict(model.routes)
    (('cl', 'v1', 'q', 'v2'), True, {'iv': 'central'})
    """
    return extend_model(
        two_compartment(),
        name="vancomycin_goti2018",
        citation=GOTI_2018,
    )


def vancomycin_model() -> PopulationModel:
    """Population model of vancomycin (Goti et al. 2018): CrCL, weight, haemodialysis.

    Returns
    -------
    PopulationModel
        Covariates ``weight`` (kg; estimated on 33–255), ``crcl`` (Cockcroft–Gault with
        total body weight, mL/min; estimated on 4–150; values above 150 are capped at
        150 as in the paper — compute it with ``cockcroft_gault(...,
        **VANCOMYCIN_CRCL_OPTIONS)``) and ``dialysis`` (0/1, intermittent haemodialysis).
        Random effects on ``cl``, ``v1``, ``v2`` (CV 39.8, 81.6, 57.1 %); combined
        residual error 3.4 mg/L + 22.7 %. Doses are mg into the ``iv`` route, usually
        as infusions.

    Examples
    --------
    >>> pm = vancomycin_model()
    >>> p = pm.typical_parameters({"weight": [70.0, 70.0], "crcl": [120.0, 60.0],
    ...                            "dialysis": [0.0, 1.0]})
    >>> [round(float(c), 3) for c in p[:, 0]]  # CL, L/h: 4.5 and 4.5 · 0.5^0.8 · 0.7
    [4.5, 1.809]
    """
    theta = {name: value for name, (value, _, _) in VANCOMYCIN_THETA.items()}

    def parameters(th: Named, cov) -> dict:
        crcl = jnp.minimum(cov["crcl"], VANCOMYCIN_CRCL_OPTIONS["cap"])
        dialysis = cov["dialysis"]
        size = cov["weight"] / WEIGHT_REFERENCE
        return {
            "cl": th.cl
            * (crcl / CRCL_REFERENCE) ** th.cl_crcl_exponent
            * th.cl_dialysis_factor**dialysis,
            "v1": th.v1 * size * th.v1_dialysis_factor**dialysis,
            "v2": th.v2 * size,
        }

    return PopulationModel(
        name="vancomycin",
        structural=vancomycin_structural(),
        theta=theta,
        theta_units={name: unit for name, (_, unit, _) in VANCOMYCIN_THETA.items()},
        parameters=parameters,
        random_effects=tuple(VANCOMYCIN_IIV_CV),
        omega=np.diag([math.log1p(cv**2) for cv in VANCOMYCIN_IIV_CV.values()]),
        residual={"conc": ResidualError(additive=3.4, proportional=0.227)},
        covariates=(
            Covariate(
                "weight",
                "kg",
                WEIGHT_REFERENCE,
                range=(33.0, 255.0),
                description="total body weight; volumes proportional to it",
            ),
            Covariate(
                "crcl",
                "mL/min",
                CRCL_REFERENCE,
                range=(4.0, 150.0),
                description="Cockcroft-Gault CrCL (total body weight), capped at 150; "
                "serum creatinine below 1 mg/dL raised to 1 over 60 y",
            ),
            Covariate(
                "dialysis",
                "1",
                0.0,
                range=(0.0, 1.0),
                description="1 on intermittent haemodialysis",
            ),
        ),
        citation=VANCOMYCIN_CITATION,
    )
