"""A user population model for ``twinsim fit DATA.csv --model popfit_theo_model.py``.

Theophylline (Boeckmann, Sheiner & Beal 1994; ``twinsim/scenarios/examples/
theophylline_nonmem.csv``): one compartment with first-order absorption, allometric
weight effects on CL and V with estimated exponents (either sign), log-normal BSV on CL,
V and ka, additive error. ``f_oral`` is fixed at 1 (apparent CL/F and V/F). The contract
(:func:`twinsim.scenarios.load_model_file`): ``model`` is required; ``initial`` and
``bounds`` are optional. Starting values are deliberately neutral (CL 1 L/h, V 20 L).
"""

from twinsim.priors import Covariate, PopulationModel, ResidualError, one_compartment

model = PopulationModel(
    name="theo_allometric",
    structural=one_compartment(absorption=True),
    theta={"cl": 1.0, "v": 20.0, "ka": 1.0, "f_oral": 1.0, "cl_wt": 0.75, "v_wt": 1.0},
    parameters=lambda th, cov: {
        "cl": th.cl * (cov["weight"] / 70.0) ** th.cl_wt,
        "v": th.v * (cov["weight"] / 70.0) ** th.v_wt,
    },
    random_effects=("cl", "v", "ka"),
    omega=[0.1, 0.1, 0.1],
    residual={"conc": ResidualError(additive=1.0)},
    covariates=(Covariate("weight", "kg", 70.0),),
    fixed=("f_oral",),
)
initial = {"ka": 1.5}
bounds = {"cl": (0.01, 100.0)}
