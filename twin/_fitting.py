"""Population fits: FOCE-I, Laplace, NUTS and SVI on a :class:`~twinsim.priors.PopulationModel`.

:func:`fit_population` runs one of

- ``"focei"``: FOCE with interaction — maximum likelihood with η integrated out per
  subject by the Laplace approximation around its conditional mode, the Hessian in η
  approximated by first derivatives (Almquist, Leander & Jirstrand 2015);
- ``"laplace"``: the same with the exact Hessian in η (NONMEM's LAPLACIAN; handles
  M3-censored observations);
- ``"nuts"``: NumPyro's No-U-Turn sampler on the model's own NumPyro definition
  (:meth:`~twinsim.priors.PopulationModel.population_model`: θ, Ω, σ and η per subject
  random), ``num_chains`` chains run one after another through one compiled program
  (``chain_method="sequential"``: a vectorised step waits for the slowest chain's tree and
  costs more than the chains' steps one by one on a CPU), started at the FOCE-I optimum,
  non-centred η for sparse data, a dense mass matrix when the warm-up can estimate one
  (``dense_mass="auto"``) and a target acceptance of 0.9 (hierarchical posteriors
  diverge at the default 0.8 of single-level models);
- ``"svi"``: stochastic variational inference with a full-rank Gaussian guide in the
  unconstrained space (``AutoMultivariateNormal``, or ``AutoNormal`` with
  ``guide="diagonal"``) and optax Adam.

The conditional methods (FOCE-I, Laplace) minimise the objective with L-BFGS-B (gradient
by central differences, all points in one compiled call), estimate positive structural
parameters on the log scale and every other theta (covariate effects, exponents) on its
own scale, accept starting values and bounds, and report the optimum as the estimate with
standard errors from the covariance step. The OFV is on NONMEM's scale (−2 log L without
N·log 2π).

The result (:class:`PopulationFit`) holds draws of the population parameters and η (the
posterior for NUTS/SVI; the asymptotic normal distribution of the estimates for
FOCE-I/Laplace), a summary table (estimate, SE, 90 % interval; R-hat and bulk/tail ESS
from ArviZ for NUTS), η-shrinkage, diagnostics and timings, and — in
``diagnostics["success"]`` and ``["failure_reasons"]`` — whether the fit can be trusted:
a fit whose optimiser or covariance step failed, whose estimates are implausible (a
between-subject SD above 2 on the log scale), at a bound or with zero-width intervals, or
whose chains do not mix (R-hat ≥ 1.01, divergences, saturated trees) is reported as
failed, with why. :meth:`PopulationFit.fitted_model` is the model at the estimates.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..priors._population import (
    InferencePriors,
    ObservationData,
    PopulationModel,
    PopulationModelError,
)
from ._intervals import draw_quantiles

__all__ = [
    "FitError",
    "PopulationFit",
    "fit_population",
    "objective_function_value",
    "with_initial",
]

Method = Literal["nuts", "svi", "laplace", "focei"]
_METHODS = ("nuts", "svi", "laplace", "focei")
_QUANTILES = (0.05, 0.5, 0.95)
_INNER_MAX_STEPS = 50  # Newton steps per inner mode search, warm-started from the last modes
_INNER_TOL = 1e-9  # largest change of any η̂ that ends the inner search
_FD_STEP = 1e-5  # on the packed (log for positive) scale of θ, ω, σ
_HESS_STEP = 1e-3
_LOG_2PI = math.log(2.0 * math.pi)
#: a between-subject SD above this (log scale; CV ≈ 730 %) is reported as implausible
MAX_PLAUSIBLE_OMEGA_SD = 2.0
#: NUTS is reported as failed above this R-hat or above this share of saturated trees
MAX_R_HAT = 1.01
MAX_SATURATED_SHARE = 0.01
_CONDITIONAL = ("laplace", "focei")
_COMPILED: dict[tuple, tuple] = {}  # a few compiled conditional objectives, newest last
_METHOD_TEXT = {
    "laplace": (
        "Laplace approximation of the marginal likelihood (NONMEM LAPLACIAN): η integrated "
        "out per subject around its conditional mode with the exact Hessian in η; maximum "
        "likelihood, no priors"
    ),
    "focei": (
        "FOCE with interaction: Laplace approximation with the first-order Hessian "
        "Σ ∇f∇fᵀ/V + ½ ∇V∇Vᵀ/V² + Ω⁻¹ at the conditional modes (Almquist et al. 2015); "
        "maximum likelihood, no priors"
    ),
}


class FitError(PopulationModelError):
    """A population fit was requested with invalid options."""


@dataclass(frozen=True, eq=False)
class PopulationFit:
    """A fitted population model.

    Attributes
    ----------
    method
        ``"nuts"``, ``"svi"``, ``"laplace"`` or ``"focei"``.
    model
        The population model that was fitted (its values were the starting point, and the
        priors' centres for NUTS and SVI).
    data
        The observations.
    draws
        Draws ``{name: array[chain, draw, ...]}`` of the reported quantities:
        ``theta_<name>``, ``omega_sd_<effect>`` (log-scale SD), ``omega_corr_<a>_<b>``
        (full Ω), ``occasion_sd_<effect>``, ``sigma_<output>_<kind>``, and ``eta``
        ``[chain, draw, subject, effect]``. NUTS: the posterior. SVI: its approximation.
        Laplace and FOCE-I: the asymptotic normal distribution of the estimates (from the
        covariance step; draw 0 is the optimum), for intervals only.
    summary
        One row per scalar quantity: ``name, kind, unit, estimate`` (Laplace/FOCE-I: the
        maximum-likelihood optimum; NUTS/SVI: the posterior median), ``se`` (Laplace/
        FOCE-I: standard error from the covariance step, delta method on the log scale of
        positive quantities; NUTS/SVI: posterior SD), ``rse_percent``, ``mean, median, sd,
        q05, q95`` of the draws, ``cv_percent`` (for BSV SDs at the estimate:
        ``100·sqrt(exp(ω²) − 1)``), ``r_hat``, ``ess_bulk``, ``ess_tail`` (NaN except NUTS).
    shrinkage
        η-shrinkage per random effect, ``1 − SD(η̂)/ω`` with η̂ the subjects' posterior
        means (Laplace/FOCE-I: the empirical Bayes estimates), SD over subjects with
        divisor n, and ω the estimate.
    diagnostics
        ``success`` (bool) and ``failure_reasons`` (why the fit is not to be trusted: the
        optimiser did not converge, the covariance step failed, implausible estimates, an
        estimate at a bound, zero-width intervals, NUTS not mixing), ``divergences``,
        ``max_r_hat``, ``min_ess_bulk``, ``saturated_trees``, ``num_chains``,
        ``num_draws``, ``seconds`` (wall time, compilation included); for Laplace/FOCE-I
        ``objective_function_value`` (NONMEM's scale, see ``ofv_definition``),
        ``minus_2_log_likelihood`` (all constants), ``covariance_ok``, ``optimum``,
        ``standard_errors``, ``at_bound``, ``compile_seconds``, ``optimise_seconds``.
    inference_data
        The ArviZ ``InferenceData`` of the draws (NUTS only; ``None`` otherwise).
    """

    method: str
    model: PopulationModel
    data: ObservationData
    draws: dict[str, np.ndarray]
    summary: list[dict[str, Any]]
    shrinkage: dict[str, float]
    diagnostics: dict[str, Any]
    inference_data: Any = field(default=None, repr=False)

    @property
    def success(self) -> bool:
        """Whether the fit passed every check (see ``diagnostics["failure_reasons"]``)."""
        return bool(self.diagnostics.get("success", False))

    def estimate(self, name: str, statistic: str = "estimate") -> float:
        """One summary value, e.g. ``fit.estimate("theta_ka")`` (the point estimate: the
        optimum for Laplace/FOCE-I, the posterior median for NUTS/SVI), or another column
        (``"median"``, ``"q05"``, ``"se"`` …)."""
        for row in self.summary:
            if row["name"] == name:
                return float(row[statistic])
        raise FitError(
            f"no quantity {name!r} in the fit; known: {[row['name'] for row in self.summary]}"
        )

    def fitted_model(self) -> PopulationModel:
        """The model with θ, Ω (BSV and BOV) and σ at their estimates: the optimum for
        Laplace/FOCE-I; the posterior medians for NUTS/SVI (a full Ω at its posterior mean)."""
        pm = self.model
        if self.method in _CONDITIONAL:
            return self._model_at_draw(0)
        theta = dict(pm.theta)
        for name in theta:
            if f"theta_{name}" in self.draws:
                theta[name] = float(np.median(self.draws[f"theta_{name}"]))
        changes: dict[str, Any] = {"theta": theta}
        if pm.random_effects:
            if any(k.startswith("omega_corr_") for k in self.draws):
                # a mean of covariance matrices stays positive semi-definite; a median may not
                changes["omega"] = self.draws["omega"].reshape(-1, *pm.omega.shape).mean(axis=0)
            else:
                sd = [np.median(self.draws[f"omega_sd_{e}"]) for e in pm.random_effects]
                changes["omega"] = np.diag(np.square(sd))
        if pm.occasion_effects:
            sd = np.array([np.median(self.draws[f"occasion_sd_{e}"]) for e in pm.occasion_effects])
            changes["occasion_omega"] = np.diag(sd**2)
        residual = {}
        for out, err in pm.residual.items():
            values = {s: float(np.median(self.draws[f"sigma_{out}_{s}"])) for s in err.sigma_names}
            residual[out] = dataclasses.replace(err, **values)
        changes["residual"] = residual
        return pm.replace(**changes)

    def _model_at_draw(self, index: int) -> PopulationModel:
        pm = self.model
        theta = dict(pm.theta)
        for name in theta:
            if f"theta_{name}" in self.draws:
                theta[name] = float(self.draws[f"theta_{name}"][0, index])
        changes: dict[str, Any] = {"theta": theta, "omega": self.draws["omega"][0, index]}
        residual = {}
        for out, err in pm.residual.items():
            values = {s: float(self.draws[f"sigma_{out}_{s}"][0, index]) for s in err.sigma_names}
            residual[out] = dataclasses.replace(err, **values)
        changes["residual"] = residual
        return pm.replace(**changes)

    def individual_parameters(self) -> np.ndarray:
        """Posterior-median individual parameters ``[subject, P]`` (structural order);
        ``[subject, segment, P]`` for a model with time-varying covariates."""
        return np.median(
            self.draws["parameters"].reshape(-1, *self.draws["parameters"].shape[2:]), axis=0
        )


def fit_population(
    model: PopulationModel,
    data: ObservationData,
    *,
    method: Method = "nuts",
    seed: int = 0,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    chain_method: Literal["vectorized", "sequential", "parallel"] = "sequential",
    target_accept_prob: float = 0.9,
    max_tree_depth: int = 10,
    dense_mass: bool | Literal["auto"] = "auto",
    svi_steps: int = 4000,
    svi_learning_rate: float = 0.01,
    guide: Literal["multivariate", "diagonal"] = "multivariate",
    num_approx_draws: int = 2000,
    priors: InferencePriors | None = None,
    omega_structure: Literal["auto", "full", "diagonal"] = "auto",
    parameterization: Literal["auto", "centered", "noncentered"] = "auto",
    progress_bar: bool = False,
    initial: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
    nuts_init: Literal["focei", "laplace", "prior"] = "focei",
) -> PopulationFit:
    """Fit a population model to observations.

    Parameters
    ----------
    model
        The population model; its ``theta``, ``omega`` and residual SDs are the starting
        values of Laplace/FOCE-I and centre the weakly informative priors of NUTS/SVI
        (:class:`~twinsim.priors.InferencePriors`).
    data
        Observations (:meth:`~twinsim.priors.ObservationData.build`, or
        :func:`twinsim.scenarios.fit_data` from a NONMEM file).
    method
        ``"nuts"``, ``"svi"``, ``"laplace"`` or ``"focei"`` (see the module docstring).
    seed
        Root seed of the run.
    num_chains, num_warmup, num_samples, chain_method, target_accept_prob, max_tree_depth
        NUTS settings (per chain).
    dense_mass
        Adapt a dense mass matrix (NUTS): typical values and η are correlated in the
        centred parameterisation, and a dense metric lets the sampler take long steps.
        ``"auto"``: dense for at most :data:`DENSE_MASS_MAX_SIZE` unconstrained parameters,
        diagonal above. NumPyro estimates the dense matrix in warm-up windows of 25, 50,
        100, … draws and shrinks the directions those draws leave unexplored to a variance
        of ~1e-3, which in many dimensions forces trees of ~1,000 leapfrog steps for most
        of the warm-up. Measured (4 × (1,000 + 1,000), 2-core CPU): theophylline, 43
        parameters, dense: least bulk ESS ≈ 2,600 vs ≈ 800 diagonal; 59 neonates × 2 η,
        123 parameters: ≈ 440,000 leapfrog steps in a chain's warm-up dense, ≈ 94,000
        diagonal (``benchmarks/bench_fit.py``).
    svi_steps, svi_learning_rate, guide
        SVI settings.
    num_approx_draws
        Draws taken from the SVI/Laplace approximation.
    priors, omega_structure
        Passed to :meth:`~twinsim.priors.PopulationModel.population_model`.
    parameterization
        Of η for NUTS/SVI: ``"centered"``, ``"noncentered"`` or ``"auto"`` (non-centred
        when the median subject has fewer than 5 observations: sparse data tell little
        about each η and the centred posterior is a funnel).
    progress_bar
        Show NumPyro's progress bar.
    initial
        Starting values replacing the model's: ``{theta name or "theta_<name>":
        value, "omega_sd_<effect>": SD (log scale), "sigma_<output>_<kind>": SD}``
        (:func:`with_initial`).
    bounds
        ``{name: (lower, upper)}`` on the natural scale (``None``: open) for
        Laplace/FOCE-I, same names as ``initial``. An estimate that ends at a bound is
        reported as a failure.
    nuts_init
        NUTS starts at the optimum of a ``"focei"`` (default) or ``"laplace"`` fit (every
        chain, η at the empirical Bayes estimates), or at ``"prior"`` medians.

    Returns
    -------
    PopulationFit
        ``fit.success`` is False, with ``fit.diagnostics["failure_reasons"]``, when the
        optimiser did not converge, the covariance step failed (Hessian of the objective
        not positive definite or near singular), a between-subject SD exceeds
        :data:`MAX_PLAUSIBLE_OMEGA_SD` on the log scale, an estimate sits at a bound or
        has a zero-width interval, or (NUTS) R-hat ≥ :data:`MAX_R_HAT`, divergent
        transitions, or more than :data:`MAX_SATURATED_SHARE` of trees at the depth limit.

    Raises
    ------
    FitError
        For an unknown method or invalid sizes.

    Examples
    --------
    >>> import numpy as np
    >>> from twinsim.priors import ObservationData, PopulationModel, ResidualError, one_compartment
    >>> from twinsim.simulators import DosingEvents
    >>> pm = PopulationModel(name="iv", structural=one_compartment(), theta={"cl": 4.0, "v": 40.0},
    ...     random_effects=("cl",), omega=[0.1], residual={"conc": ResidualError(proportional=0.1)})
    >>> sim = pm.simulate(1, None, DosingEvents.repeated(100.0, 24.0, 1, compartment=0), np.array([1.0, 4.0, 12.0]),
    ...                   ids=range(8))
    >>> data = ObservationData.build(DosingEvents.repeated(100.0, 24.0, 1, n_subjects=8, compartment=0),
    ...                              [[1.0, 4.0, 12.0]] * 8, np.asarray(sim.observed[..., 0]))
    >>> fit = fit_population(pm, data, method="focei")
    >>> 3.0 < fit.estimate("theta_cl") < 6.0, fit.success
    (True, True)
    """
    if method not in _METHODS:
        raise FitError(f"`method` must be one of {list(_METHODS)}, got {method!r}")
    if nuts_init not in ("focei", "laplace", "prior"):
        raise FitError(f"`nuts_init` must be 'focei', 'laplace' or 'prior', got {nuts_init!r}")
    for name, value in (
        ("num_chains", num_chains),
        ("num_warmup", num_warmup),
        ("num_samples", num_samples),
        ("svi_steps", svi_steps),
        ("num_approx_draws", num_approx_draws),
    ):
        if int(value) != value or value < (0 if name == "num_warmup" else 1):
            raise FitError(f"`{name}` must be a whole number ≥ 1, got {value!r}")
    if initial:
        model = with_initial(model, initial)
    full_omega = _full_omega(model, omega_structure)
    if parameterization == "auto":
        per_subject = np.asarray(data.mask).sum(axis=1)
        parameterization = "noncentered" if np.median(per_subject) < 5 else "centered"
    key = jax.random.key(int(seed))
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if method == "nuts":
        numpyro_model = model.population_model(
            data, priors=priors, omega_structure=omega_structure, parameterization=parameterization
        )
        start_values, start_fit = None, None
        if nuts_init != "prior":
            start_fit = fit_population(
                model, data, method=nuts_init, seed=seed, omega_structure=omega_structure,
                bounds=bounds, num_approx_draws=2,
            )  # fmt: skip
            start_values = _nuts_start(start_fit, parameterization, full_omega)
        if dense_mass == "auto":
            dense_mass = _unconstrained_size(model, data, full_omega) <= DENSE_MASS_MAX_SIZE
        raw, extra = _run_nuts(
            numpyro_model,
            key,
            start_values=start_values,
            num_chains=num_chains,
            num_warmup=num_warmup,
            num_samples=num_samples,
            chain_method=chain_method,
            target_accept_prob=target_accept_prob,
            max_tree_depth=max_tree_depth,
            dense_mass=dense_mass,
            progress_bar=progress_bar,
        )
        if start_fit is not None:
            extra["start"] = {
                "method": nuts_init,
                "success": start_fit.success,
                "failure_reasons": start_fit.diagnostics["failure_reasons"],
                "objective_function_value": start_fit.diagnostics["objective_function_value"],
            }
        extra["parameterization"] = parameterization
        extra["dense_mass"] = bool(dense_mass)
    elif method in _CONDITIONAL:
        raw, extra = _run_conditional(
            model, data, key, method=method, num_draws=num_approx_draws, full_omega=full_omega,
            bounds=bounds,
        )  # fmt: skip
    else:
        numpyro_model = model.population_model(
            data, priors=priors, omega_structure=omega_structure, parameterization=parameterization
        )
        raw, extra = _run_svi(
            numpyro_model,
            key,
            steps=svi_steps,
            learning_rate=svi_learning_rate,
            guide_kind=guide,
            num_draws=num_approx_draws,
        )
    seconds = time.perf_counter() - start
    draws = _reported_draws(model, data, raw)
    summary, idata = _summarise(model, draws, method, extra.get("diverging"), extra)
    shrinkage = _shrinkage(model, draws, method)
    finite = [row["r_hat"] for row in summary if np.isfinite(row["r_hat"])]
    ess = [row["ess_bulk"] for row in summary if np.isfinite(row["ess_bulk"])]
    diagnostics = {
        "method": method,
        "num_chains": int(draws["eta"].shape[0]),
        "num_draws": int(draws["eta"].shape[1]),
        "divergences": int(np.sum(extra["diverging"])) if "diverging" in extra else 0,
        "max_r_hat": float(max(finite)) if finite else float("nan"),
        "min_ess_bulk": float(min(ess)) if ess else float("nan"),
        "seconds": seconds,
        "n_subjects": data.n_subjects,
        "n_observations": data.n_observations,
        **{k: v for k, v in extra.items() if k != "diverging"},
    }
    reasons = _failure_reasons(method, summary, diagnostics)
    diagnostics["success"] = not reasons
    diagnostics["failure_reasons"] = reasons
    return PopulationFit(method, model, data, draws, summary, shrinkage, diagnostics, idata)


def with_initial(model: PopulationModel, initial: Mapping[str, float]) -> PopulationModel:
    """``model`` with new starting values: ``{theta name or "theta_<name>": value,
    "omega_sd_<effect>": SD on the log scale, "sigma_<output>_<kind>": SD}``.

    Examples
    --------
    >>> from twinsim.priors import PopulationModel, ResidualError, one_compartment
    >>> pm = PopulationModel(name="iv", structural=one_compartment(), theta={"cl": 1.0, "v": 20.0},
    ...     random_effects=("cl",), omega=[0.1], residual={"conc": ResidualError(proportional=0.2)})
    >>> new = with_initial(pm, {"cl": 0.006, "omega_sd_cl": 0.3, "sigma_conc_proportional": 0.1})
    >>> new.theta["cl"], round(float(new.omega[0, 0]), 4), new.residual["conc"].proportional
    (0.006, 0.09, 0.1)
    """
    theta = dict(model.theta)
    omega = np.array(model.omega, dtype=np.float64)
    residual = dict(model.residual)
    known = [*theta, *(f"omega_sd_{e}" for e in model.random_effects)]
    known += [f"sigma_{o}_{s}" for o, e in residual.items() for s in e.sigma_names]
    for key, value in initial.items():
        name = key[len("theta_") :] if key.startswith("theta_") else key
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise FitError(f"initial value of {key!r} must be a number, got {value!r}") from None
        if not math.isfinite(value):
            raise FitError(f"initial value of {key!r} must be finite, got {value!r}")
        if name in theta:
            theta[name] = value
        elif name.startswith("omega_sd_") and name[9:] in model.random_effects:
            if value <= 0:
                raise FitError(f"initial `{key}` must be an SD > 0, got {value}")
            j = model.random_effects.index(name[9:])
            old = math.sqrt(omega[j, j]) if omega[j, j] > 0 else 1.0
            omega[j, :] *= value / old
            omega[:, j] *= value / old
            omega[j, j] = value**2
        elif name in known:  # a residual SD
            out, kind = next(
                (o, s) for o, e in residual.items() for s in e.sigma_names
                if name == f"sigma_{o}_{s}"
            )  # fmt: skip
            if value <= 0:
                raise FitError(f"initial `{key}` must be an SD > 0, got {value}")
            residual[out] = dataclasses.replace(residual[out], **{kind: value})
        else:
            raise FitError(f"initial value for unknown parameter {key!r}; known: {known}")
    return model.replace(theta=theta, omega=omega, residual=residual)


def _failure_reasons(method: str, summary, diagnostics) -> list[str]:
    """Why a fit is not to be trusted (empty when it passes every check)."""
    reasons = []
    if method in _CONDITIONAL:
        if not diagnostics["optimizer_converged"]:
            reasons.append(f"the optimiser did not converge: {diagnostics['optimizer_message']}")
        if not math.isfinite(diagnostics["objective_function_value"]):
            reasons.append("the objective function value is not finite")
        if not diagnostics["covariance_ok"]:
            reasons.append(f"covariance step failed: {diagnostics['covariance_problem']}")
        for name in diagnostics["at_bound"]:
            reasons.append(f"{name} is at a bound ({diagnostics['optimum'][name]:.4g})")
    for row in summary:
        if row["kind"] == "bsv" and row["estimate"] > MAX_PLAUSIBLE_OMEGA_SD:
            reasons.append(
                f"implausible between-subject variability: {row['name']} = {row['estimate']:.3g} "
                f"on the log scale (CV {row['cv_percent']:.3g} %; above "
                f"{MAX_PLAUSIBLE_OMEGA_SD:g}, CV > 700 %): the model or its starting values do "
                "not fit the data"
            )
        if method in _CONDITIONAL and diagnostics["covariance_ok"]:
            if not row["se"] > 1e-8 * max(abs(row["estimate"]), 1e-300):
                reasons.append(f"{row['name']} has a zero-width interval (SE {row['se']:.3g})")
    if method == "nuts":
        if not diagnostics["max_r_hat"] < MAX_R_HAT:
            reasons.append(
                f"chains do not mix: max R-hat {diagnostics['max_r_hat']:.3f} ≥ {MAX_R_HAT}"
            )
        if diagnostics["divergences"]:
            reasons.append(f"{diagnostics['divergences']} divergent transitions")
        share = diagnostics.get("saturated_share", 0.0)
        if share > MAX_SATURATED_SHARE:
            reasons.append(
                f"{100 * share:.1f} % of trees reached the depth limit (max_tree_depth): the "
                "sampler is struggling (reparameterise or start closer to the optimum)"
            )
    return reasons


def _nuts_start(fit: PopulationFit, parameterization: str, full_omega: bool) -> dict[str, Any]:
    """Initial values of the NumPyro sites at a conditional fit's optimum."""
    values: dict[str, Any] = {}
    for row in fit.summary:
        if row["kind"] in ("theta", "residual"):
            values[row["name"]] = row["estimate"]
    pm = fit.model
    sd = np.array([fit.estimate(f"omega_sd_{e}") for e in pm.random_effects])
    values["omega_sd"] = sd
    omega = fit.draws["omega"][0, 0]
    factor = np.linalg.cholesky(omega + 1e-12 * np.eye(len(sd)))
    if full_omega and len(sd) > 1:
        values["omega_corr"] = factor / sd[:, None]
    eta = fit.draws["eta"][0, 0]
    if parameterization == "noncentered":
        values["eta_z"] = np.linalg.solve(factor, eta.T).T
    else:
        values["eta"] = eta
    return {k: jnp.asarray(v) for k, v in values.items()}


#: ``dense_mass="auto"`` adapts a dense mass matrix up to this many unconstrained parameters
DENSE_MASS_MAX_SIZE = 100


def _unconstrained_size(model: PopulationModel, data: ObservationData, full_omega: bool) -> int:
    """Number of unconstrained parameters NUTS samples (the sites of ``population_model``)."""
    r, rb = len(model.random_effects), len(model.occasion_effects)
    sigmas = sum(len(err.sigma_names) for err in model.residual.values())
    size = len(model._estimated_thetas()) + r + sigmas + rb
    size += r * (r - 1) // 2 if full_omega and r > 1 else 0
    size += data.n_subjects * r
    if rb:
        size += data.n_subjects * model._n_occasions(data) * rb
    return size


def _run_nuts(
    numpyro_model, key, *, num_chains, chain_method, progress_bar, start_values, **options
):
    from numpyro.infer import MCMC, NUTS, init_to_median, init_to_value

    depth = options.pop("max_tree_depth")
    kernel = NUTS(
        numpyro_model,
        init_strategy=(
            init_to_median(num_samples=15)
            if start_values is None
            else init_to_value(values=start_values)
        ),
        target_accept_prob=options.pop("target_accept_prob"),
        max_tree_depth=depth,
        dense_mass=options.pop("dense_mass"),
    )
    mcmc = MCMC(
        kernel,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress_bar,
        **options,
    )
    mcmc.run(key, extra_fields=("diverging", "num_steps"))
    samples = mcmc.get_samples(group_by_chain=True)
    fields = mcmc.get_extra_fields(group_by_chain=True)
    steps = np.asarray(fields["num_steps"])
    saturated = int(np.sum(steps >= 2**depth - 1))
    extra = {
        "diverging": np.asarray(fields["diverging"]),
        "mean_leapfrog_steps": float(np.mean(steps)),
        "saturated_trees": saturated,
        "saturated_share": saturated / max(steps.size, 1),
    }
    return {k: np.asarray(v) for k, v in samples.items()}, extra


def _run_svi(numpyro_model, key, *, steps, learning_rate, guide_kind, num_draws):
    import optax
    from numpyro.infer import SVI, Predictive, Trace_ELBO, init_to_median
    from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

    if guide_kind not in ("multivariate", "diagonal"):
        raise FitError(f"`guide` must be 'multivariate' or 'diagonal', got {guide_kind!r}")
    fit_key, draw_key = jax.random.split(key)
    guide_cls = AutoMultivariateNormal if guide_kind == "multivariate" else AutoNormal
    guide = guide_cls(numpyro_model, init_loc_fn=init_to_median(num_samples=15))
    optimizer = optax.chain(
        optax.clip_by_global_norm(10.0),
        optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05)),
    )
    svi = SVI(numpyro_model, guide, optimizer, Trace_ELBO(num_particles=4))
    result = svi.run(fit_key, steps, progress_bar=False)
    losses = np.asarray(result.losses)
    extra: dict[str, Any] = {"final_loss": float(np.mean(losses[-100:])), "svi_steps": int(steps)}
    predictive = Predictive(
        numpyro_model,
        guide=guide,
        params=result.params,
        num_samples=num_draws,
        return_sites=_latent_and_deterministic_sites(numpyro_model),
    )
    samples = {k: np.asarray(v)[None] for k, v in predictive(draw_key).items()}
    return samples, extra


def _full_omega(model: PopulationModel, omega_structure: str) -> bool:
    if omega_structure == "auto":
        return bool(np.any(model.omega - np.diag(np.diag(model.omega)) != 0))
    if omega_structure not in ("full", "diagonal"):
        raise FitError(
            f"`omega_structure` must be 'full', 'diagonal' or 'auto', got {omega_structure!r}"
        )
    return omega_structure == "full"


class _Packing:
    """The conditional fits' unconstrained vector: θ (log θ for a positive structural
    parameter; covariate effects, exponents and other thetas on their own scale so that
    they may take either sign), log ω SDs, the correlation's unconstrained coordinates
    (full Ω), log σ. ``bounds`` (natural scale) become box bounds on these coordinates."""

    def __init__(
        self,
        model: PopulationModel,
        full: bool,
        bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
    ):
        from numpyro.distributions import constraints
        from numpyro.distributions.transforms import biject_to

        self.model, self.full = model, full
        self.thetas = [k for k in model.theta if k not in model.fixed]
        self.log_theta = np.array([_log_scale(model, k) for k in self.thetas], dtype=bool)
        self.r = len(model.random_effects)
        self.n_corr = self.r * (self.r - 1) // 2 if full else 0
        self.sigmas = [(o, s) for o, e in model.residual.items() for s in e.sigma_names]
        self.corr_transform = biject_to(constraints.corr_cholesky)
        self.names = (
            [f"theta_{k}" for k in self.thetas]
            + [f"omega_sd_{e}" for e in model.random_effects]
            + [f"omega_corr_{j}" for j in range(self.n_corr)]
            + [f"sigma_{o}_{s}" for o, s in self.sigmas]
        )
        self.bounds = _packed_bounds(self, dict(bounds or {}))

    def initial(self) -> np.ndarray:
        m = self.model
        theta = np.array([m.theta[k] for k in self.thetas], dtype=np.float64)
        theta = np.where(self.log_theta, np.log(np.where(self.log_theta, theta, 1.0)), theta)
        sd = np.sqrt(np.clip(np.diag(m.omega), 1e-4, None))
        corr = np.zeros(self.n_corr)
        sigma = np.array([getattr(m.residual[o], s) for o, s in self.sigmas])
        x0 = np.concatenate([theta, np.log(sd), corr, np.log(sigma)])
        lo = np.array([-np.inf if b[0] is None else b[0] for b in self.bounds])
        hi = np.array([np.inf if b[1] is None else b[1] for b in self.bounds])
        return np.clip(x0, lo, hi)

    def unpack(self, x):
        i = len(self.thetas)
        raw = x[:i]
        theta_est = jnp.where(jnp.asarray(self.log_theta), jnp.exp(raw), raw)
        values = dict(zip(self.thetas, theta_est, strict=True))
        theta = jnp.stack(
            [values[k] if k in values else jnp.asarray(v) for k, v in self.model.theta.items()]
        )
        sd = jnp.exp(x[i : i + self.r])
        i += self.r
        corr = self.corr_transform(x[i : i + self.n_corr]) if self.n_corr else jnp.eye(self.r)
        i += self.n_corr
        sigma_values = jnp.exp(x[i:])
        sigmas: dict[str, dict[str, Array]] = {}
        for (o, s), v in zip(self.sigmas, sigma_values, strict=True):
            sigmas.setdefault(o, {})[s] = v
        return theta, values, sd, corr, sigmas

    def natural(self, x: np.ndarray) -> np.ndarray:
        """Each coordinate on its reported scale (θ, ω SD, σ; correlations stay packed)."""
        out = np.array(x, dtype=np.float64)
        k = len(self.thetas)
        out[:k] = np.where(self.log_theta, np.exp(out[:k]), out[:k])
        out[k : k + self.r] = np.exp(out[k : k + self.r])
        out[k + self.r + self.n_corr :] = np.exp(out[k + self.r + self.n_corr :])
        return out

    def logged(self) -> np.ndarray:
        """Whether each coordinate is a log of the reported value."""
        return np.concatenate(
            [self.log_theta, np.ones(self.r, bool), np.zeros(self.n_corr, bool),
             np.ones(len(self.sigmas), bool)]
        )  # fmt: skip


def _log_scale(model: PopulationModel, name: str) -> bool:
    """A theta is estimated on the log scale only when it is a positive structural
    parameter (a clearance, volume, rate, bioavailability, lag): covariate effects,
    exponents and other thetas keep their own scale, so they may take either sign."""
    return name in model.structural.parameters and model.theta[name] > 0


def _packed_bounds(pack: _Packing, bounds: dict) -> list[tuple[float | None, float | None]]:
    known = {n[len("theta_") :]: n for n in pack.names if n.startswith("theta_")}
    known.update({n: n for n in pack.names})
    unknown = [k for k in bounds if k not in known]
    if unknown:
        raise FitError(
            f"`bounds` names unknown parameters {unknown}; estimated: "
            f"{[n for n in pack.names if not n.startswith('omega_corr_')]}"
        )
    logged = pack.logged()
    out: list[tuple[float | None, float | None]] = [(None, None)] * len(pack.names)
    for key, pair in bounds.items():
        j = pack.names.index(known[key])
        try:
            lo, hi = (None if v is None else float(v) for v in pair)
        except (TypeError, ValueError):
            raise FitError(
                f"`bounds[{key!r}]` must be (lower, upper) numbers or None, got {pair!r}"
            ) from None
        if lo is not None and hi is not None and not lo < hi:
            raise FitError(f"`bounds[{key!r}]` needs lower < upper, got ({lo}, {hi})")
        if logged[j]:
            if hi is not None and hi <= 0:
                raise FitError(f"`bounds[{key!r}]` upper bound {hi} must be > 0: {key} is positive")
            lo = None if lo is None or lo <= 0 else math.log(lo)
            hi = None if hi is None else math.log(hi)
        out[j] = (lo, hi)
    return out


def _observation_moments(model: PopulationModel, data: ObservationData, params, sigmas):
    """Per observation ``[subject, obs]``: the location (prediction, or its log for
    exponential error) and the log SD of the residual error."""
    prediction = model.predict(
        params, data.events, data.times, data.occasion, covariate_times=data.covariate_times
    )
    f = jnp.take_along_axis(prediction, data.output[..., None], axis=-1)[..., 0]
    names = model.structural.output_names
    loc = jnp.zeros_like(f)
    log_sd = jnp.zeros_like(f)
    for j in model._observed_outputs(data):
        err = model.residual[names[j]]
        sd = err.sd(f, **sigmas.get(names[j], {}))
        here = data.output == j
        value = jnp.log(jnp.maximum(f, jnp.finfo(jnp.float64).tiny)) if err.exponential else f
        loc = jnp.where(here, value, loc)
        log_sd = jnp.where(here, jnp.log(sd), log_sd)
    return loc, log_sd


def _conditional_objective(model: PopulationModel, data: ObservationData, pack: _Packing, method):
    """``(x, η₀) -> (−log L(x), η̂)``: −log of the marginal likelihood with η integrated
    out per subject around its conditional mode η̂ (found by damped Newton steps from
    η₀), ``Σᵢ gᵢ(η̂ᵢ) + ½ log det Hᵢ`` with ``gᵢ = −log p(yᵢ|η) + ½ ηᵀΩ⁻¹η + ½ log det Ω``.

    ``method="laplace"``: ``H`` is the exact Hessian of ``g`` in η (NONMEM's LAPLACIAN).
    ``method="focei"``: ``H`` is its first-order approximation with interaction,
    ``Σⱼ [∇fⱼ∇fⱼᵀ/Vⱼ + ½ ∇Vⱼ∇Vⱼᵀ/Vⱼ²] + Ω⁻¹`` (f the prediction, V the residual variance,
    both depending on η): FOCE with interaction as the Laplace approximation with that
    Hessian (Almquist, Leander & Jirstrand, J Pharmacokinet Pharmacodyn 2015;42:191).
    """
    encoded = model.encode_covariates(data.covariates)
    n, r = data.n_subjects, pack.r
    unit = jnp.eye(r)
    mask = data.mask.astype(jnp.float64)

    def setup(x):
        theta, _, sd, corr, sigmas = pack.unpack(x)
        factor = sd[:, None] * corr
        return model._typical(theta, encoded, n), factor, sigmas

    def subject_terms(x, eta):
        typical, factor, sigmas = setup(x)
        ll = model.log_likelihood(data, model._apply(typical, eta), sigmas)
        white = jax.scipy.linalg.solve_triangular(factor, eta.T, lower=True).T
        logdet_omega = 2.0 * jnp.sum(jnp.log(jnp.diag(factor)))
        return -ll + 0.5 * jnp.sum(white**2, axis=1) + 0.5 * logdet_omega  # [subject]

    def grad_eta(x, eta):
        return jax.grad(lambda e: subject_terms(x, e).sum())(eta)

    def exact_hessians(x, eta):
        # block diagonal: one forward pass per effect gives every subject's column
        columns = [
            jax.jvp(lambda e: grad_eta(x, e), (eta,), (jnp.broadcast_to(unit[j], eta.shape),))[1]
            for j in range(r)
        ]
        h = jnp.stack(columns, axis=-1)
        return 0.5 * (h + jnp.swapaxes(h, -1, -2))

    def focei_hessians(x, eta):
        typical, factor, sigmas = setup(x)

        def moments(e):
            return _observation_moments(model, data, model._apply(typical, e), sigmas)

        passes = [
            jax.jvp(moments, (eta,), (jnp.broadcast_to(unit[j], eta.shape),)) for j in range(r)
        ]
        log_sd = passes[0][0][1]
        tangents = [tangent for _, tangent in passes]
        d_loc = jnp.stack([t[0] for t in tangents], axis=-1)  # [n, obs, r]
        d_log_sd = jnp.stack([t[1] for t in tangents], axis=-1)
        weight = mask * jnp.exp(-2.0 * log_sd)
        h = jnp.einsum("noj,nok,no->njk", d_loc, d_loc, weight)
        # ½ ∇V∇Vᵀ/V² = 2 ∇log σ ∇log σᵀ
        h = h + 2.0 * jnp.einsum("noj,nok,no->njk", d_log_sd, d_log_sd, mask)
        omega_inv = jax.scipy.linalg.cho_solve((factor, True), jnp.eye(r))
        return h + omega_inv

    hessians = exact_hessians if method == "laplace" else focei_hessians

    def newton(x, eta):
        g, h = grad_eta(x, eta), hessians(x, eta)
        lowest = jnp.linalg.eigvalsh(h)[:, :1]
        h = h + jnp.maximum(0.0, 1e-6 - lowest)[..., None] * jnp.eye(r)
        step = jnp.linalg.solve(h, g[..., None])[..., 0]
        norm = jnp.linalg.norm(step, axis=-1, keepdims=True)
        step = step * jnp.minimum(1.0, 1.0 / jnp.maximum(norm, 1e-300))
        # halve the step (per subject) while it does not decrease g
        now = subject_terms(x, eta)
        best, best_value = eta, now
        for scale in (1.0, 0.5, 0.25, 0.125):
            trial = eta - scale * step
            value = subject_terms(x, trial)
            better = jnp.isfinite(value) & (value < best_value) & (best_value == now)
            best = jnp.where(better[:, None], trial, best)
            best_value = jnp.where(better, value, best_value)
        change = jnp.max(jnp.abs(best - eta))
        return best, change

    def objective(x, eta0):
        def cond(state):
            i, _, change = state
            return (i < _INNER_MAX_STEPS) & (change > _INNER_TOL)

        def body(state):
            i, eta, _ = state
            eta, change = newton(x, eta)
            return i + 1, eta, change

        _, eta, _ = jax.lax.while_loop(cond, body, (0, eta0, jnp.inf))
        value = subject_terms(x, eta) + 0.5 * jnp.linalg.slogdet(hessians(x, eta))[1]
        return value.sum(), eta

    return objective


def _conditional_setup(model, data, method, full_omega, bounds):
    if model.occasion_effects:
        raise FitError(
            f"method={method!r} does not integrate between-occasion effects; use method='nuts' "
            "or 'svi' for a model with `occasion_effects`"
        )
    if not model.random_effects:
        raise FitError(f"method={method!r} needs random effects; the model has none")
    if method == "focei" and bool(np.any(np.asarray(data.censored))):
        raise FitError(
            "method='focei' does not handle censored (below-LLOQ, M3) observations; use "
            "method='laplace' (exact second derivatives of the censored terms) or drop `lloq`"
        )
    pack = _Packing(model, full_omega, bounds)
    # the compiled objective depends on the model, the data and the method, not on the
    # starting values' place or the bounds: refits (other bounds, starts of the same
    # model object) reuse the compiled program
    key = (id(model), id(data), method, full_omega)
    cached = _COMPILED.get(key)
    if cached is not None and cached[0] is model and cached[1] is data:
        return pack, cached[2]
    objective = jax.jit(
        lambda xs, eta: jax.lax.map(
            lambda x: _conditional_objective(model, data, pack, method)(x, eta), xs
        )
    )
    _COMPILED[key] = (model, data, objective)
    while len(_COMPILED) > 4:
        _COMPILED.pop(next(iter(_COMPILED)))
    return pack, objective


def _run_conditional(model, data, key, *, method, num_draws, full_omega, bounds):
    import scipy.optimize

    pack, batched = _conditional_setup(model, data, method, full_omega, bounds)
    n, r = data.n_subjects, pack.r
    x0 = pack.initial()
    size = x0.size
    # the gradient by central differences, all 2P + 1 points in one compiled call: exact
    # gradients of a Laplace objective need third derivatives of the predictions (second
    # for FOCE-I) through the inner mode search, whose compilation costs far more than
    # the extra evaluations
    offsets = np.concatenate([np.zeros((1, size)), np.eye(size), -np.eye(size)]) * _FD_STEP
    state = {"eta": jnp.zeros((n, r)), "calls": 0}

    def fun(x):
        values, etas = batched(jnp.asarray(x[None, :] + offsets), state["eta"])
        values = np.asarray(values, dtype=np.float64)
        state["calls"] += 1
        if not np.all(np.isfinite(values)):
            return np.inf, np.zeros(size)
        state["eta"] = etas[0]  # warm start the next inner solves
        grad = (values[1 : size + 1] - values[size + 1 :]) / (2 * _FD_STEP)
        return float(values[0]), grad

    first = time.perf_counter()
    fun(x0)  # compiles, and settles the warm start from η = 0
    compile_seconds = time.perf_counter() - first
    start = time.perf_counter()
    result = scipy.optimize.minimize(
        fun, x0, jac=True, method="L-BFGS-B", bounds=pack.bounds,
        options={"maxiter": 1000, "maxfun": 3000, "ftol": 1e-12, "gtol": 1e-6},
    )  # fmt: skip
    optimise_seconds = time.perf_counter() - start
    x_hat = np.asarray(result.x, dtype=np.float64)
    value_hat, _ = fun(x_hat)
    eta_hat = np.asarray(state["eta"])
    # covariance of the estimates: inverse Hessian of −log L, central differences of the
    # gradient
    hess = np.zeros((size, size))
    for j in range(size):
        step = _HESS_STEP * np.eye(size)[j]
        hess[:, j] = (fun(x_hat + step)[1] - fun(x_hat - step)[1]) / (2 * _HESS_STEP)
    fun(x_hat)
    hess = 0.5 * (hess + hess.T)
    n_normal = int(np.count_nonzero(np.asarray(data.mask) & ~np.asarray(data.censored)))
    minus2ll = 2.0 * float(value_hat)
    extra: dict[str, Any] = {
        "estimation": _METHOD_TEXT[method],
        "optimizer_converged": bool(result.success),
        "optimizer_message": str(result.message),
        "optimizer_iterations": int(result.nit),
        "objective_evaluations": int(state["calls"]),
        "compile_seconds": compile_seconds,
        "optimise_seconds": optimise_seconds,
        "minus_2_log_likelihood": minus2ll,
        "objective_function_value": minus2ll - n_normal * _LOG_2PI,
        "ofv_definition": (
            "NONMEM's scale: −2 log L without the constant N·log(2π) of the "
            f"{n_normal} uncensored normal observations"
        ),
        "log_likelihood": -float(value_hat),
    }
    cov, cov_problem = _covariance(hess)
    extra["covariance_ok"] = cov_problem is None
    if cov_problem:
        extra["covariance_problem"] = cov_problem
    natural = pack.natural(x_hat)
    se = np.full(size, np.nan)
    if cov is not None:
        se_packed = np.sqrt(np.diag(cov))
        se = np.where(pack.logged(), natural * se_packed, se_packed)  # delta method
    extra["optimum"] = dict(zip(pack.names, natural.tolist(), strict=True))
    extra["standard_errors"] = dict(zip(pack.names, se.tolist(), strict=True))
    extra["at_bound"] = [
        pack.names[j]
        for j, (lo, hi) in enumerate(pack.bounds)
        if (lo is not None and x_hat[j] - lo <= 1e-6 * max(1.0, abs(lo)))
        or (hi is not None and hi - x_hat[j] <= 1e-6 * max(1.0, abs(hi)))
    ]
    if cov is not None:
        draws_x = np.asarray(
            jax.random.multivariate_normal(key, jnp.asarray(x_hat), jnp.asarray(cov), (num_draws,))
        )
    else:
        draws_x = np.repeat(x_hat[None], num_draws, axis=0)
    draws_x = np.array(draws_x)
    draws_x[0] = x_hat
    _, values, sd, corr, sigmas = jax.vmap(pack.unpack)(jnp.asarray(draws_x))
    raw: dict[str, np.ndarray] = {f"theta_{k}": np.asarray(v)[None] for k, v in values.items()}
    factor = np.asarray(sd)[..., :, None] * np.asarray(corr)
    raw["omega_sd"] = np.asarray(sd)[None]
    raw["omega"] = np.einsum("dij,dkj->dik", factor, factor)[None]
    if pack.n_corr:
        raw["omega_corr"] = np.asarray(corr)[None]
    for o, group in sigmas.items():
        for s_name, v in group.items():
            raw[f"sigma_{o}_{s_name}"] = np.asarray(v)[None]
    # empirical Bayes estimates (η̂ at the estimates), the same for every draw
    raw["eta"] = np.broadcast_to(eta_hat, (1, num_draws, n, r)).copy()
    return raw, extra


def _covariance(hess: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Inverse of the objective's Hessian, or why there is none (NONMEM's covariance step)."""
    if not np.all(np.isfinite(hess)):
        return None, "the Hessian of the objective has non-finite entries"
    eigen = np.linalg.eigvalsh(hess)
    if eigen[0] <= 0:
        return None, (
            f"the Hessian of the objective is not positive definite (smallest eigenvalue "
            f"{eigen[0]:.3g}): the estimates are not a well-determined minimum"
        )
    if eigen[-1] / eigen[0] > 1e12:
        return None, (
            f"the Hessian of the objective is near singular (condition number "
            f"{eigen[-1] / eigen[0]:.3g}): some parameters are not identifiable from the data"
        )
    return np.linalg.inv(hess), None


def objective_function_value(
    model: PopulationModel,
    data: ObservationData,
    *,
    method: Literal["laplace", "focei"] = "focei",
) -> float:
    """NONMEM-scale OFV of ``data`` at the model's own θ, Ω and σ (no estimation).

    ``−2 log L`` with η integrated out per subject (``method`` as in
    :func:`fit_population`), without the constant ``N·log(2π)`` of the uncensored
    observations — the number NONMEM prints with ``MAXEVAL=0``.

    Examples
    --------
    >>> import numpy as np
    >>> from twinsim.priors import ObservationData, PopulationModel, ResidualError, one_compartment
    >>> from twinsim.simulators import DosingEvents
    >>> pm = PopulationModel(name="iv", structural=one_compartment(), theta={"cl": 4.0, "v": 40.0},
    ...     random_effects=("cl",), omega=[0.1], residual={"conc": ResidualError(proportional=0.1)})
    >>> data = ObservationData.build(DosingEvents.repeated(100.0, 24.0, 1, n_subjects=2, compartment=0),
    ...                              [[1.0, 4.0]] * 2, [[2.4, 2.0], [2.3, 1.8]])
    >>> round(objective_function_value(pm, data), 3)
    -9.359
    """
    pack, batched = _conditional_setup(model, data, method, _full_omega(model, "auto"), None)
    values, _ = batched(jnp.asarray(pack.initial())[None], jnp.zeros((data.n_subjects, pack.r)))
    value = values[0]
    n_normal = int(np.count_nonzero(np.asarray(data.mask) & ~np.asarray(data.censored)))
    return 2.0 * float(value) - n_normal * _LOG_2PI


def _latent_and_deterministic_sites(numpyro_model) -> list[str]:
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(numpyro_model, 0)).get_trace()
    return [
        name
        for name, site in trace.items()
        if site["type"] == "deterministic"
        or (site["type"] == "sample" and not site.get("is_observed", False))
    ]


def _reported_draws(
    model: PopulationModel, data: ObservationData, raw: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Named population quantities and η, each ``[chain, draw, ...]``."""
    draws: dict[str, np.ndarray] = {}
    for name in model.theta:
        if f"theta_{name}" in raw:
            draws[f"theta_{name}"] = np.asarray(raw[f"theta_{name}"])
    chains, n_draws = next(iter(raw.values())).shape[:2]
    if model.random_effects:
        sd = np.asarray(raw["omega_sd"])
        for j, effect in enumerate(model.random_effects):
            draws[f"omega_sd_{effect}"] = sd[..., j]
        omega = np.asarray(raw["omega"])
        draws["omega"] = omega
        r = len(model.random_effects)
        if "omega_corr" in raw:
            corr = omega / np.sqrt(
                np.einsum("...ii->...i", omega)[..., :, None]
                * np.einsum("...ii->...i", omega)[..., None, :]
            )
            for a in range(r):
                for b in range(a):
                    ea, eb = model.random_effects[a], model.random_effects[b]
                    draws[f"omega_corr_{eb}_{ea}"] = corr[..., a, b]
        draws["eta"] = np.asarray(raw["eta"])
    else:
        draws["eta"] = np.zeros((chains, n_draws, data.n_subjects, 0))
    if model.occasion_effects:
        sd = np.asarray(raw["occasion_sd"])
        for j, effect in enumerate(model.occasion_effects):
            draws[f"occasion_sd_{effect}"] = sd[..., j]
    for out, err in model.residual.items():
        for s in err.sigma_names:
            if f"sigma_{out}_{s}" in raw:
                draws[f"sigma_{out}_{s}"] = np.asarray(raw[f"sigma_{out}_{s}"])
    draws["parameters"] = _individual_draws(model, data, draws)
    return draws


def _individual_draws(model: PopulationModel, data: ObservationData, draws) -> np.ndarray:
    """Individual parameters ``[chain, draw, subject, P]`` (without BOV) per draw."""
    chains, n_draws, n, r = draws["eta"].shape
    theta = np.stack(
        [
            np.asarray(draws[f"theta_{k}"]) if f"theta_{k}" in draws
            else np.full((chains, n_draws), model.theta[k])
            for k in model.theta
        ],
        axis=-1,
    ).reshape(chains * n_draws, -1)  # fmt: skip
    encoded = model.encode_covariates(data.covariates)
    individual = jax.jit(
        jax.vmap(lambda th, eta: model._apply(model._typical(th, encoded, n), eta))
    )(jnp.asarray(theta), jnp.asarray(draws["eta"]).reshape(chains * n_draws, n, r))
    # [subject, P], or [subject, segment, P] with time-varying covariates
    return np.asarray(individual).reshape(chains, n_draws, *individual.shape[1:])


def _summarise(model, draws, method, diverging, extra):
    import arviz as az

    scalars = {
        k: v
        for k, v in draws.items()
        if k not in ("eta", "omega", "parameters") and np.ndim(v) == 2
    }
    idata = None
    stats: dict[str, dict[str, float]] = {}
    if method == "nuts":
        sample_stats = {"diverging": diverging} if diverging is not None else None
        idata = az.from_dict(posterior=scalars, sample_stats=sample_stats)
        # unrounded: arviz rounds to 2 decimals by default, and an R-hat of 1.005 would
        # then read 1.01 and fail the check against MAX_R_HAT
        table = az.summary(idata, kind="diagnostics", round_to="none")
        for name in scalars:
            stats[name] = {
                "r_hat": float(table.loc[name, "r_hat"]),
                "ess_bulk": float(table.loc[name, "ess_bulk"]),
                "ess_tail": float(table.loc[name, "ess_tail"]),
            }
    units = dict(model.theta_units)
    units.update(dict(model.structural.parameter_units))
    output_units = dict(model.structural.output_units)
    rows = []
    for name, values in scalars.items():
        flat = np.asarray(values).ravel()
        q05, q50, q95 = draw_quantiles(flat, _QUANTILES)
        sd = float(flat.std(ddof=1)) if flat.size > 1 else 0.0
        if method in _CONDITIONAL:
            point = float(flat[0])  # draw 0 is the optimum
            se = float(extra["standard_errors"].get(name, sd if extra["covariance_ok"] else np.nan))
        else:
            point, se = float(q50), sd
        kind, unit, cv = "theta", "", float("nan")
        if name.startswith("theta_"):
            unit = units.get(name[len("theta_") :], "")
        elif name.startswith(("omega_sd_", "occasion_sd_")):
            kind, unit = ("bsv" if name.startswith("omega") else "bov"), "log-scale SD"
            cv = float(100 * np.sqrt(np.expm1(point**2)))
        elif name.startswith("omega_corr_"):
            kind, unit = "correlation", ""
        elif name.startswith("sigma_"):
            kind = "residual"
            out = next((o for o in model.residual if name.startswith(f"sigma_{o}_")), "")
            unit = "fraction" if name.endswith("_proportional") else output_units.get(out, "")
        row = {
            "name": name,
            "kind": kind,
            "unit": unit,
            "estimate": point,
            "se": se,
            "rse_percent": 100 * se / abs(point) if point != 0 else float("nan"),
            "mean": float(flat.mean()),
            "median": float(q50),
            "sd": sd,
            "q05": float(q05),
            "q95": float(q95),
            "cv_percent": cv,
            **stats.get(
                name, {"r_hat": float("nan"), "ess_bulk": float("nan"), "ess_tail": float("nan")}
            ),
        }
        rows.append(row)
    return rows, idata


def _shrinkage(model, draws, method) -> dict[str, float]:
    eta = np.asarray(draws["eta"])
    if eta.size == 0:
        return {}
    eta_hat = eta.reshape(-1, *eta.shape[2:]).mean(axis=0)  # [subject, effect]
    out = {}
    for j, effect in enumerate(model.random_effects):
        values = np.asarray(draws[f"omega_sd_{effect}"])
        omega_sd = float(values[0, 0] if method in _CONDITIONAL else np.median(values))
        spread = float(np.std(eta_hat[:, j]))  # SD over subjects (ddof 0), as NONMEM's
        out[effect] = 1.0 - spread / omega_sd if omega_sd > 0 else float("nan")
    return out
