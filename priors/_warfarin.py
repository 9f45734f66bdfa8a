"""Warfarin: S-warfarin PK by CYP2C9 and age, INR by VKORC1 (Hamberg et al. 2007).

PK (S-warfarin, two compartments, first-order absorption)
---------------------------------------------------------
``CL = 0.314 L/h · (1 − 0.0091 · (age − 71)) · (1 − r_CYP2C9)`` with ``r`` = 0 (*1/*1),
0.315 (*1/*2), 0.453 (*1/*3), 0.722 (*2/*2), 0.690 (*2/*3), 0.852 (*3/*3);
``V1 = 13.8 L``, ``Q = 0.131 L/h``, ``V2 = 6.59 L``, ``ka = 2.0 /h``.

Doses are the racemic warfarin amount (what is prescribed). S-warfarin is half of it and
the bioavailability ``F = 0.9`` is an assumption of this implementation (the paper does not
estimate it), so ``f_oral = 0.5 · 0.9 = 0.45`` of each dose reaches the S-warfarin depot.

PD (INR, transit compartments)
------------------------------
S-warfarin inhibits the synthesis of vitamin K dependent clotting factors:

    I(t) = 1 − Emax · C^γ / (EC50^γ + C^γ),  Emax = 1, γ = 0.424,
    EC50 = 4.61 (VKORC1 −1639 G/G), 3.02 (G/A), 2.20 (A/A) mg/L.

Two transit chains driven by ``I(t)``, every amount starting at 1 (no drug): six
compartments at rate ``6 / MTT1`` (``MTT1 = 11.6 h``) and one at ``1 / MTT2``
(``MTT2 = 120 h``):

    dA1/dt = ktr1 · (I − A1),  dAi/dt = ktr1 · (A(i−1) − Ai) (i = 2..6),
    dA7/dt = ktr2 · (I − A7),
    INR = BASE + INRmax · (1 − A6 · A7)^λ,  INRmax = 20, λ = 3.61, BASE = measured
    baseline INR (1.0 by default).

Variability and residual error (read as variances — see the metadata)
---------------------------------------------------------------------
IIV 0.310 (CL), 0.262 (V1), 0.991 (V2), 0.141 (MTT1), 1.020 (MTT2), 0.409 (EC50); residual
0.0908 (S-warfarin, single dose), 0.301 (steady state), 0.0325 (INR). These numbers are
*secondary* (read from third-party implementations citing the paper). They are taken
here as variances of log-normal η (ω²), as the third-party implementation we checked
does (``sqrt(0.31)`` as the SD of log CL); the residual values are read likewise as
variances of an exponential (log-scale) error. Note that 0.301 = √0.0908: the two
S-warfarin residual values are probably one variance and its SD; the steady-state one
is used here as the log-scale SD (0.301), the same as the single-dose variance.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..simulators._model import Named, ODEModel
from ._pd import _occupancy, extend_model
from ._pk import two_compartment
from ._population import Covariate, PopulationModel, ResidualError

__all__ = [
    "CYP2C9_CLEARANCE_REDUCTION",
    "VKORC1_EC50",
    "WARFARIN_CITATION",
    "WARFARIN_METADATA",
    "WARFARIN_THETA",
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
WARFARIN_CITATION = HAMBERG_2007

#: Fractional reduction ``r`` of S-warfarin clearance by CYP2C9 diplotype (Hamberg 2007).
CYP2C9_CLEARANCE_REDUCTION: dict[str, float] = {
    "*1/*1": 0.0,
    "*1/*2": 0.315,
    "*1/*3": 0.453,
    "*2/*2": 0.722,
    "*2/*3": 0.690,
    "*3/*3": 0.852,
}

#: EC50 of S-warfarin on clotting-factor synthesis by VKORC1 −1639G>A genotype, mg/L.
VKORC1_EC50: dict[str, float] = {"G/G": 4.61, "G/A": 3.02, "A/A": 2.20}

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
    "iiv_convention": "variance of eta on the log scale (omega^2): 0.310 CL, 0.262 V1, "
    "0.991 V2, 0.141 MTT1, 1.020 MTT2, 0.409 EC50 (secondary values; read as variances as "
    "the third-party implementation does)",
    "residual": "exponential (log-scale) error: S-warfarin SD 0.301 (variance 0.0908), INR "
    "SD sqrt(0.0325) = 0.180 (secondary values read as variances)",
    "population": "adult patients starting or on warfarin (Swedish and Italian cohorts); "
    "all six CYP2C9 *1/*2/*3 diplotypes and all three VKORC1 -1639 genotypes; age range "
    "assumed 18-95 y (the paper's exact range was not available here)",
    "sources": {
        "all PK/PD typical values and IIV": "secondary: REFERENCES.md, read from third-party "
        "implementations citing " + HAMBERG_2007,
        "bioavailability 0.9": "assumed",
        "inr_base 1.0": "assumed (the paper uses each patient's measured baseline)",
        "covariate ranges": "genotype levels as in the paper; age range assumed",
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

# theta names of the genotype effects, in the order of the covariate levels
_CYP2C9_THETA = {
    "*1/*1": None,
    "*1/*2": "cl_reduction_12",
    "*1/*3": "cl_reduction_13",
    "*2/*2": "cl_reduction_22",
    "*2/*3": "cl_reduction_23",
    "*3/*3": "cl_reduction_33",
}
_VKORC1_THETA = {"G/G": "ec50_gg", "G/A": "ec50_ga", "A/A": "ec50_aa"}

#: IIV as variances of log-normal η (ω²) — *secondary* values read as variances.
WARFARIN_OMEGA: dict[str, float] = {
    "cl": 0.310,
    "v1": 0.262,
    "v2": 0.991,
    "mtt1": 0.141,
    "mtt2": 1.020,
    "ec50": 0.409,
}


def warfarin_model() -> PopulationModel:
    """Population model of warfarin: S-warfarin PK by CYP2C9 and age, INR by VKORC1.

    Hamberg et al. 2007 (values *secondary*; see the module docstring). Doses are mg of
    racemic warfarin into the ``oral`` route; ``f_oral = s_fraction · bioavailability``
    (0.5 · 0.9, both ``fixed``).

    Returns
    -------
    PopulationModel
        Covariates ``age`` (y), ``cyp2c9`` (levels ``*1/*1``, ``*1/*2``, ``*1/*3``,
        ``*2/*2``, ``*2/*3``, ``*3/*3``) and ``vkorc1`` (``G/G``, ``G/A``, ``A/A``),
        canonical spellings as :func:`~twinsim.priors.parse_diplotype` gives them. Random
        effects on ``cl``, ``v1``, ``v2``, ``mtt1``, ``mtt2``, ``ec50``; exponential
        residual error on ``conc`` (S-warfarin) and ``inr``.

    Examples
    --------
    >>> pm = warfarin_model()
    >>> cov = {"age": [71.0, 71.0], "cyp2c9": ["*1/*1", "*3/*3"], "vkorc1": ["G/G", "A/A"]}
    >>> p = pm.typical_parameters(cov)
    >>> names = pm.structural.parameters
    >>> [round(float(c), 4) for c in p[:, names.index("cl")]]
    [0.314, 0.0465]
    >>> [float(e) for e in p[:, names.index("ec50")]]
    [4.61, 2.2]
    """
    theta = {name: value for name, (value, _, _) in WARFARIN_THETA.items()}
    theta_units = {name: unit for name, (_, unit, _) in WARFARIN_THETA.items()}
    for diplotype, name in _CYP2C9_THETA.items():
        if name is not None:
            theta[name] = CYP2C9_CLEARANCE_REDUCTION[diplotype]
            theta_units[name] = "1"
    for genotype, name in _VKORC1_THETA.items():
        theta[name] = VKORC1_EC50[genotype]
        theta_units[name] = "mg/L"
    theta.pop("ec50", None)

    def parameters(th: Named, cov) -> dict:
        reduction = jnp.stack(
            [jnp.zeros(()) if name is None else th[name] for name in _CYP2C9_THETA.values()]
        )[cov["cyp2c9"]]
        age_factor = 1.0 - th.age_slope * (cov["age"] - AGE_REFERENCE)
        ec50 = jnp.stack([th[name] for name in _VKORC1_THETA.values()])[cov["vkorc1"]]
        return {
            "cl": th.cl * age_factor * (1.0 - reduction),
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
                levels=tuple(_CYP2C9_THETA),
                description="CYP2C9 diplotype of the *1, *2, *3 alleles (Hamberg 2007)",
            ),
            Covariate(
                "vkorc1",
                "",
                "G/G",
                levels=tuple(_VKORC1_THETA),
                description="VKORC1 -1639G>A (rs9923231) genotype",
            ),
        ),
        fixed=("s_fraction", "bioavailability", "emax", "inr_max", "inr_base"),
        citation=WARFARIN_CITATION,
    )
