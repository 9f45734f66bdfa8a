"""A user population model with a time-varying covariate, for ``twinsim fit DATA.csv
--model popfit_crcl_model.py``.

One compartment, IV doses; clearance follows creatinine clearance (column ``CRCL``, mL/min)
by a power model with an estimated exponent, ``CL = θ_CL · (CrCL / 80)^θ_CRCL``, and
``crcl`` is declared ``time_varying=True``: the CRCL on every record of the data set is
kept, and a subject's clearance changes at the records where its CRCL changes (the value
recorded at a time holds from that time on). Log-normal BSV on CL and V, proportional
error. Starting values are neutral (CL 3 L/h, V 30 L, exponent 0.5).
"""

from twinsim.priors import Covariate, PopulationModel, ResidualError, one_compartment

model = PopulationModel(
    name="crcl_time_varying",
    structural=one_compartment(),
    theta={"cl": 3.0, "v": 30.0, "cl_crcl": 0.5},
    parameters=lambda th, cov: {"cl": th.cl * (cov["crcl"] / 80.0) ** th.cl_crcl},
    random_effects=("cl", "v"),
    omega=[0.1, 0.1],
    residual={"conc": ResidualError(proportional=0.2)},
    covariates=(Covariate("crcl", "mL/min", 80.0, range=(10.0, 200.0), time_varying=True),),
)
