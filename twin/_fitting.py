"""Population fits: NUTS, SVI and Laplace on a :class:`~twinsim.priors.PopulationModel`.

:func:`fit_population` builds the NumPyro model from the population model's own
definition (:meth:`~twinsim.priors.PopulationModel.population_model`: θ, Ω, σ and η per
subject random) and runs one of

- ``"nuts"``: NumPyro's No-U-Turn sampler, ``num_chains`` chains (``chain_method=
  "vectorized"`` by default: one compiled program advances all chains, which suits a
  machine with few cores);
- ``"svi"``: stochastic variational inference with a full-rank Gaussian guide in the
  unconstrained space (``AutoMultivariateNormal``, or ``AutoNormal`` with
  ``guide="diagonal"``) and optax Adam;
- ``"laplace"``: the Laplace approximation of the joint posterior: its mode (BFGS) and a
  Gaussian with the inverse Hessian there, in the unconstrained space
  (``AutoLaplaceApproximation``).

The result (:class:`PopulationFit`) holds posterior draws of the population parameters
and η, a summary table (mean, median, SD, 90 % interval; R-hat and bulk/tail ESS from
ArviZ for NUTS), η-shrinkage, divergences and timings, and the model with its population
parameters replaced by their posterior medians (:meth:`PopulationFit.fitted_model`).
"""

from __future__ import annotations

import dataclasses
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

__all__ = ["FitError", "PopulationFit", "fit_population"]

Method = Literal["nuts", "svi", "laplace"]
_QUANTILES = (0.05, 0.5, 0.95)
_NEWTON_STEPS = 12  # per objective evaluation, warm-started from the previous modes
_FD_STEP = 1e-5  # on the log scale of θ, ω, σ
_HESS_STEP = 1e-3


class FitError(PopulationModelError):
    """A population fit was requested with invalid options."""


@dataclass(frozen=True, eq=False)
class PopulationFit:
    """A fitted population model.

    Attributes
    ----------
    method
        ``"nuts"``, ``"svi"`` or ``"laplace"``.
    model
        The population model that was fitted (its values were the priors' centres).
    data
        The observations.
    draws
        Posterior draws ``{name: array[chain, draw, ...]}`` of the reported quantities:
        ``theta_<name>``, ``omega_sd_<effect>`` (log-scale SD), ``omega_corr_<a>_<b>``
        (full Ω), ``occasion_sd_<effect>``, ``sigma_<output>_<kind>``, and ``eta``
        ``[chain, draw, subject, effect]``. SVI and Laplace give one "chain" of draws from
        the approximate posterior.
    summary
        One row per scalar quantity: ``name, kind, unit, mean, median, sd, q05, q95``,
        ``cv_percent`` (for BSV SDs: ``100·sqrt(exp(ω²) − 1)``), ``r_hat``,
        ``ess_bulk``, ``ess_tail`` (NaN for SVI and Laplace).
    shrinkage
        η-shrinkage per random effect, ``1 − SD(η̂)/ω`` with η̂ the subjects' posterior
        means (Laplace: the empirical Bayes estimates), SD over subjects with divisor n,
        and ω the posterior median SD.
    diagnostics
        ``divergences``, ``max_r_hat``, ``min_ess_bulk``, ``num_chains``, ``num_draws``,
        ``seconds`` (wall time of the run, compilation included), and for SVI the final
        loss, for Laplace the mode's log density.
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

    def estimate(self, name: str, statistic: str = "median") -> float:
        """One summary value, e.g. ``fit.estimate("theta_ka")``."""
        for row in self.summary:
            if row["name"] == name:
                return float(row[statistic])
        raise FitError(
            f"no quantity {name!r} in the fit; known: {[row['name'] for row in self.summary]}"
        )

    def fitted_model(self) -> PopulationModel:
        """The model with θ, Ω (BSV and BOV) and σ at their posterior medians (a full Ω at
        its posterior mean)."""
        pm = self.model
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

    def individual_parameters(self) -> np.ndarray:
        """Posterior-median individual parameters ``[subject, P]`` (structural order)."""
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
    chain_method: Literal["vectorized", "sequential", "parallel"] = "vectorized",
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = True,
    svi_steps: int = 4000,
    svi_learning_rate: float = 0.01,
    guide: Literal["multivariate", "diagonal"] = "multivariate",
    num_approx_draws: int = 2000,
    priors: InferencePriors | None = None,
    omega_structure: Literal["auto", "full", "diagonal"] = "auto",
    parameterization: Literal["centered", "noncentered"] = "centered",
    progress_bar: bool = False,
) -> PopulationFit:
    """Fit a population model to observations.

    Parameters
    ----------
    model
        The population model; its ``theta``, ``omega`` and residual SDs centre the
        weakly informative priors (:class:`~twinsim.priors.InferencePriors`).
    data
        Observations (:meth:`~twinsim.priors.ObservationData.build`, or
        :func:`twinsim.scenarios.fit_data` from a NONMEM file).
    method
        ``"nuts"``, ``"svi"`` or ``"laplace"`` (see the module docstring).
    seed
        Root seed of the run.
    num_chains, num_warmup, num_samples, chain_method, target_accept_prob, max_tree_depth
        NUTS settings (per chain).
    dense_mass
        Adapt a dense mass matrix (NUTS): typical values and η are correlated in the
        centred parameterisation, and a dense metric lets the sampler take long steps.
    svi_steps, svi_learning_rate, guide
        SVI settings.
    num_approx_draws
        Draws taken from the SVI/Laplace approximation.
    priors, omega_structure, parameterization
        Passed to :meth:`~twinsim.priors.PopulationModel.population_model`.
    progress_bar
        Show NumPyro's progress bar.

    Returns
    -------
    PopulationFit

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
    >>> fit = fit_population(pm, data, method="laplace")
    >>> 3.0 < fit.estimate("theta_cl") < 6.0
    True
    """
    if method not in ("nuts", "svi", "laplace"):
        raise FitError(f"`method` must be 'nuts', 'svi' or 'laplace', got {method!r}")
    for name, value in (
        ("num_chains", num_chains),
        ("num_warmup", num_warmup),
        ("num_samples", num_samples),
        ("svi_steps", svi_steps),
        ("num_approx_draws", num_approx_draws),
    ):
        if int(value) != value or value < (0 if name == "num_warmup" else 1):
            raise FitError(f"`{name}` must be a whole number ≥ 1, got {value!r}")
    numpyro_model = model.population_model(
        data, priors=priors, omega_structure=omega_structure, parameterization=parameterization
    )
    key = jax.random.key(int(seed))
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if method == "nuts":
        raw, extra = _run_nuts(
            numpyro_model,
            key,
            num_chains=num_chains,
            num_warmup=num_warmup,
            num_samples=num_samples,
            chain_method=chain_method,
            target_accept_prob=target_accept_prob,
            max_tree_depth=max_tree_depth,
            dense_mass=dense_mass,
            progress_bar=progress_bar,
        )
    elif method == "laplace":
        raw, extra = _run_laplace(
            model,
            data,
            key,
            num_draws=num_approx_draws,
            full_omega=_full_omega(model, omega_structure),
        )
    else:
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
    summary, idata = _summarise(model, draws, method, extra.get("diverging"))
    shrinkage = _shrinkage(model, draws)
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
    return PopulationFit(method, model, data, draws, summary, shrinkage, diagnostics, idata)


def _run_nuts(numpyro_model, key, *, num_chains, chain_method, progress_bar, **options):
    from numpyro.infer import MCMC, NUTS, init_to_median

    kernel = NUTS(
        numpyro_model,
        init_strategy=init_to_median(num_samples=15),
        target_accept_prob=options.pop("target_accept_prob"),
        max_tree_depth=options.pop("max_tree_depth"),
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
    extra = {
        "diverging": np.asarray(fields["diverging"]),
        "mean_leapfrog_steps": float(np.mean(np.asarray(fields["num_steps"]))),
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
    """The Laplace fit's unconstrained vector: log θ (θ > 0) or θ, log ω SDs, the
    correlation's unconstrained coordinates (full Ω), log σ."""

    def __init__(self, model: PopulationModel, full: bool):
        from numpyro.distributions import constraints
        from numpyro.distributions.transforms import biject_to

        self.model, self.full = model, full
        self.thetas = [k for k in model.theta if k not in model.fixed]
        self.log_theta = np.array([model.theta[k] > 0 for k in self.thetas], dtype=bool)
        self.r = len(model.random_effects)
        self.n_corr = self.r * (self.r - 1) // 2 if full else 0
        self.sigmas = [(o, s) for o, e in model.residual.items() for s in e.sigma_names]
        self.corr_transform = biject_to(constraints.corr_cholesky)

    def initial(self) -> np.ndarray:
        m = self.model
        theta = np.array([m.theta[k] for k in self.thetas], dtype=np.float64)
        theta = np.where(self.log_theta, np.log(np.abs(theta) + (theta == 0)), theta)
        sd = np.sqrt(np.clip(np.diag(m.omega), 1e-4, None))
        corr = np.zeros(self.n_corr)
        sigma = np.array([getattr(m.residual[o], s) for o, s in self.sigmas])
        return np.concatenate([theta, np.log(sd), corr, np.log(sigma)])

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


def _laplace_objective(model: PopulationModel, data: ObservationData, pack: _Packing):
    """``(x, η₀) -> (−log marginal likelihood, η̂)`` with η integrated out by Laplace per
    subject (NONMEM's LAPLACIAN): Newton steps from η₀ to each subject's mode η̂, then
    ``−log p(y|η̂) − log p(η̂) + ½ log det H``."""
    encoded = model.encode_covariates(data.covariates)
    n, r = data.n_subjects, pack.r
    unit = jnp.eye(r)

    def subject_terms(x, eta):
        theta, _, sd, corr, sigmas = pack.unpack(x)
        factor = sd[:, None] * corr
        typical = model._typical(theta, encoded, n)
        ll = model.log_likelihood(data, model._apply(typical, eta), sigmas)
        white = jax.scipy.linalg.solve_triangular(factor, eta.T, lower=True).T
        logdet_omega = 2.0 * jnp.sum(jnp.log(jnp.diag(factor)))
        return -ll + 0.5 * jnp.sum(white**2, axis=1) + 0.5 * logdet_omega  # [subject]

    def grad_eta(x, eta):
        return jax.grad(lambda e: subject_terms(x, e).sum())(eta)

    def hessians(x, eta):
        # block diagonal: one forward pass per effect gives every subject's column
        columns = [
            jax.jvp(lambda e: grad_eta(x, e), (eta,), (jnp.broadcast_to(unit[j], eta.shape),))[1]
            for j in range(r)
        ]
        h = jnp.stack(columns, axis=-1)
        return 0.5 * (h + jnp.swapaxes(h, -1, -2))

    def newton(x, eta):
        g, h = grad_eta(x, eta), hessians(x, eta)
        lowest = jnp.linalg.eigvalsh(h)[:, :1]
        h = h + jnp.maximum(0.0, 1e-6 - lowest)[..., None] * jnp.eye(r)
        step = jnp.linalg.solve(h, g[..., None])[..., 0]
        norm = jnp.linalg.norm(step, axis=-1, keepdims=True)
        return eta - step * jnp.minimum(1.0, 1.0 / jnp.maximum(norm, 1e-300))

    def objective(x, eta0):
        eta = jax.lax.fori_loop(0, _NEWTON_STEPS, lambda _, e: newton(x, e), eta0)
        value = subject_terms(x, eta) + 0.5 * jnp.linalg.slogdet(hessians(x, eta))[1]
        return value.sum(), eta

    return objective


def _run_laplace(model, data, key, *, num_draws, full_omega):
    import scipy.optimize

    if model.occasion_effects:
        raise FitError(
            "method='laplace' does not integrate between-occasion effects; use method='nuts' "
            "or 'svi' for a model with `occasion_effects`"
        )
    if not model.random_effects:
        raise FitError("method='laplace' needs random effects; the model has none")
    pack = _Packing(model, full_omega)
    objective = _laplace_objective(model, data, pack)
    n, r = data.n_subjects, pack.r
    x0 = pack.initial()
    size = x0.size
    # the gradient by central differences, all 2P + 1 points in one batched call: exact
    # gradients of a Laplace objective need third derivatives of the predictions, whose
    # compilation costs far more than the extra evaluations
    offsets = np.concatenate([np.zeros((1, size)), np.eye(size), -np.eye(size)]) * _FD_STEP
    batched = jax.jit(jax.vmap(objective, in_axes=(0, None)))
    state = {"eta": jnp.zeros((n, r))}

    def evaluate(points):
        values, etas = batched(jnp.asarray(points), state["eta"])
        return np.asarray(values, dtype=np.float64), etas

    def fun(x):
        values, etas = evaluate(x[None, :] + offsets)
        if np.isfinite(values[0]):
            state["eta"] = etas[0]  # warm start the next inner solves
        grad = (values[1 : size + 1] - values[size + 1 :]) / (2 * _FD_STEP)
        return float(values[0]), grad

    fun(x0)  # a first pass from η = 0 to settle the warm start
    result = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    x_hat = result.x
    fun(x_hat)
    # covariance of the estimates: inverse Hessian of −log L, central differences of the
    # gradient
    hess = np.zeros((size, size))
    for j in range(size):
        hess[:, j] = (
            fun(x_hat + _HESS_STEP * np.eye(size)[j])[1]
            - fun(x_hat - _HESS_STEP * np.eye(size)[j])[1]
        ) / (2 * _HESS_STEP)
    fun(x_hat)
    hess = 0.5 * (hess + hess.T)
    extra: dict[str, Any] = {
        "converged": bool(result.success),
        "optimizer_message": str(result.message),
        "objective_function_value": 2.0 * float(result.fun),  # −2 log L (+ const), NONMEM's OFV
        "log_likelihood": -float(result.fun),  # Laplace approximation, constants included
    }
    try:
        cov = np.linalg.inv(hess)
        eigen = np.linalg.eigvalsh(cov)
        ok = bool(np.all(eigen > 0) and np.all(np.isfinite(cov)))
    except np.linalg.LinAlgError:
        ok = False
    extra["covariance_ok"] = ok
    if ok:
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
    raw["eta"] = np.broadcast_to(np.asarray(state["eta"]), (1, num_draws, n, r)).copy()
    return raw, extra


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
    return np.asarray(individual).reshape(chains, n_draws, n, -1)


def _summarise(model, draws, method, diverging):
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
        table = az.summary(idata, kind="diagnostics")
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
        q05, q50, q95 = np.quantile(flat, _QUANTILES)
        kind, unit, cv = "theta", "", float("nan")
        if name.startswith("theta_"):
            unit = units.get(name[len("theta_") :], "")
        elif name.startswith(("omega_sd_", "occasion_sd_")):
            kind, unit = ("bsv" if name.startswith("omega") else "bov"), "log-scale SD"
            cv = float(100 * np.sqrt(np.expm1(q50**2)))
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
            "mean": float(flat.mean()),
            "median": float(q50),
            "sd": float(flat.std(ddof=1)) if flat.size > 1 else 0.0,
            "q05": float(q05),
            "q95": float(q95),
            "cv_percent": cv,
            **stats.get(
                name, {"r_hat": float("nan"), "ess_bulk": float("nan"), "ess_tail": float("nan")}
            ),
        }
        rows.append(row)
    return rows, idata


def _shrinkage(model, draws) -> dict[str, float]:
    eta = np.asarray(draws["eta"])
    if eta.size == 0:
        return {}
    eta_hat = eta.reshape(-1, *eta.shape[2:]).mean(axis=0)  # [subject, effect]
    out = {}
    for j, effect in enumerate(model.random_effects):
        omega_sd = float(np.median(draws[f"omega_sd_{effect}"]))
        spread = float(np.std(eta_hat[:, j]))  # SD over subjects (ddof 0), as NONMEM's
        out[effect] = 1.0 - spread / omega_sd if omega_sd > 0 else float("nan")
    return out
