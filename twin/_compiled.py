"""The compiled engine behind every twin of one population model: log likelihood and
prior of the random effects, the posterior mode (BFGS for linear models, bounded
L-BFGS-B on forward sensitivities for ODE models), predictions and the NUTS chain.

One :class:`_Engine` per model (cached), whose compiled functions take padded doses and
observations as arguments, so refits of the same shape compile nothing.

Twins whose dosing history holds a steady-state (``SS=1``) record get a second engine of
the same model (``_engine(model, steady_state=True)``):

- a linear model's fit normally predicts the levels by superposition (no event walk,
  exact Hessian inside one compiled BFGS), which cannot express an SS=1 record; its
  steady-state engine predicts with the simulators' exact linear event walk (steady
  state solved exactly, ``x = Φ(τ) x + cycle``) and searches the mode as for an ODE
  model (forward sensitivities, bounded L-BFGS-B on the host, Hessian by central
  differences of the gradient);
- an ODE model's event walk finds the steady state by Newton's method, but its forward
  sensitivities through that root are not finite (NaN, measured on theophylline); its
  steady-state engine differentiates the solves in reverse mode (checkpointed adjoint:
  slower to compile and run, correct).

Twins without an SS=1 record keep the default engine."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..priors._population import PopulationModel
from ..simulators import (
    DosingEvents,
    predict_outputs,
    semilinear_grid,
    semilinear_outputs,
    semilinear_partition,
)
from ._clinical import PatientTwinError

__all__ = []

# ODE models: the MAP search and its Hessian (central differences of the gradient, steps
# in prior SDs of η) on solves to rtol 1e-7 — far below any assay's error, and the
# gradient is smooth to ~1e-7 relative, so the Hessian is good to ~1e-4
_FD_STEP = 1e-3


_FIT_RTOL, _FIT_ATOL = 1e-7, 1e-9


# NUTS needs no differences of gradients: solves to rtol 1e-5 move warfarin's potential by
# < 1e-5 and halve the cost of a gradient (67 → 33 ms, measured)
_SAMPLE_RTOL, _SAMPLE_ATOL = 1e-5, 1e-7

# the semilinear engine's largest step: for fits 0.5 h (warfarin's INR within 2.5e-9 of a
# solve to rtol 1e-11), for NUTS 2 h (7.4e-7; the ODE engine's sampling solves: rtol
# 1e-5), a quarter of the steps (tests/twin/test_semilinear_twin.py)
_FIT_MAX_STEP, _SAMPLE_MAX_STEP = 0.5, 2.0


_MODE_BOUND_SD = 10.0  # the search stays within 10 prior SDs of the population


def _cholesky(omega: np.ndarray) -> np.ndarray:
    if omega.size == 0:
        return np.zeros((0, 0))
    try:
        return np.linalg.cholesky(omega)
    except np.linalg.LinAlgError:
        raise PatientTwinError(
            "the population model's Ω must be positive definite for a patient twin (every "
            "random effect with a variance > 0)"
        ) from None


class _Engine:
    """Compiled functions of one population model, shared by all twins of that model.

    Every function takes the patient's (padded) data as arguments, never as constants,
    so new data of the same bucket sizes reuse the compilation.
    """

    def __init__(self, model: PopulationModel, steady_state: bool = False):
        self.model = model
        structural = model.structural
        # ``linear``: superposition and the compiled BFGS (no SS=1 records); otherwise the
        # engine's event walk — exact for a linear model, the ODE solver for the others
        self.steady_state = bool(steady_state)
        self.linear = bool(structural.linear) and not self.steady_state
        if self.linear:
            self.method = "superposition"
        else:
            self.method = "linear" if structural.linear else "auto"
        # a linear PK part driving a part linear in itself (warfarin): the semilinear
        # engine, for every patient whose doses and observation times it can take
        self.semilinear = (
            not structural.linear
            and not self.steady_state
            and semilinear_partition(structural) is not None
        )
        # forward sensitivities of an ODE steady state are NaN: reverse mode there
        self.sensitivity = "reverse" if steady_state and not structural.linear else "forward"
        self.outputs = structural.output_names
        self.errors = [
            (j, model.residual[o]) for j, o in enumerate(self.outputs) if o in model.residual
        ]
        self.n_effects = len(model.random_effects)
        self.chol = jnp.asarray(_cholesky(model.omega))
        self.prior_sd = np.sqrt(np.diag(np.asarray(model.omega)))
        self._observed = self._observed_predictions
        self._sampled = functools.partial(
            self._observed_predictions, rtol=_SAMPLE_RTOL, atol=_SAMPLE_ATOL, grid="sample_grid"
        )
        if not self.linear and self.sensitivity == "forward":
            self._observed = _forward_mode_jacobian(self._observed_predictions)
            self._sampled = _forward_mode_jacobian(self._sampled)
        self.map = jax.jit(self._map)
        self.value_and_grad = jax.jit(jax.value_and_grad(self._objective))
        self.predict = jax.jit(self._predict, static_argnames="grid")
        self.prior_draws = jax.jit(self._prior_draws, static_argnums=2)
        self.log_posteriors = jax.jit(self._log_posteriors)
        self._nuts: dict[tuple, Any] = {}
        self._drug_free: frozenset[str] | None = None

    def zero_without_drug(self, covariates: Mapping[str, Any]) -> frozenset[str]:
        """Outputs that are 0 without drug (levels), as opposed to baselines (INR): a
        property of the structural model, evaluated once (an eager evaluation per new
        twin compiled a program each time)."""
        if self._drug_free is None:
            structural = self.model.structural
            typical = jnp.atleast_2d(jnp.asarray(self.model.typical_parameters(covariates)))[0]
            # what every engine gives at t = 0 before any dose: the initial state observed
            # (one small program; a solve with a zero dose compiled an engine for it)
            out = jax.jit(lambda p: structural.observe(structural.initial_state(p), p))(typical)
            self._drug_free = frozenset(
                name for name, v in zip(self.outputs, np.asarray(out), strict=True) if v == 0
            )
        return self._drug_free

    def grid(
        self, events: DosingEvents, times: np.ndarray, *, max_step: float = _FIT_MAX_STEP
    ) -> Array | None:
        """The semilinear engine's step for one patient's (concrete) doses and observation
        times, or ``None`` (the model's own engine serves them). The step is data, not
        part of the program: a new history compiles nothing."""
        if not self.semilinear:
            return None
        found = semilinear_grid(self.model.structural, events, times, max_step=max_step)
        return None if found is None else jnp.asarray(found[0], float)

    # ---- the posterior of η
    def _params(self, typical: Array, eta: Array) -> Array:
        """Individual parameters ``[n, P]`` from typical ``[P]`` and η ``[n, R]``."""
        return self.model._apply(jnp.broadcast_to(typical, (eta.shape[0], typical.shape[-1])), eta)

    def _observed_predictions(
        self,
        eta: Array,
        batch: Mapping[str, Any],
        rtol=_FIT_RTOL,
        atol=_FIT_ATOL,
        grid: str = "grid",
    ) -> Array:
        """The model's prediction for each (padded) observation row (``grid``: the batch's
        semilinear step to use, if it has one: ``"grid"`` or ``"sample_grid"``)."""
        params = self._params(batch["typical"], eta[None])
        step = batch.get(grid)
        if step is not None:  # the semilinear engine (see _FIT_MAX_STEP)
            prediction = semilinear_outputs(
                self.model.structural, params, batch["events"], batch["times"][None], step=step
            )[0]
        else:
            prediction = predict_outputs(
                self.model.structural, params, batch["events"], batch["times"][None],
                method=self.method, rtol=rtol, atol=atol, sensitivity=self.sensitivity,
            )[0]  # fmt: skip
        return jnp.take_along_axis(prediction, batch["output"][:, None], axis=-1)[:, 0]

    def log_likelihood(
        self, eta: Array, batch: Mapping[str, Any], *, sampling: bool = False
    ) -> Array:
        """log p(data | η); ``sampling``: the solves NUTS uses (looser, for ODE models)."""
        f = (self._sampled if sampling else self._observed)(eta, batch)
        total = jnp.zeros(())
        for j, err in self.errors:
            ll = err.log_likelihood(
                batch["observed"], f, censored=batch["censored"], lloq=batch["lloq"]
            )
            total = total + jnp.sum(jnp.where(batch["mask"] & (batch["output"] == j), ll, 0.0))
        return total

    def log_prior(self, eta: Array, prior_weight: Array) -> Array:
        """``w · log N(η; 0, Ω)`` without the constant in w (what a weighted prior adds)."""
        white = jax.scipy.linalg.solve_triangular(self.chol, eta, lower=True)
        return -0.5 * prior_weight * jnp.sum(white**2)

    def _objective(self, eta: Array, batch: Mapping[str, Any]) -> Array:
        return -(self.log_prior(eta, batch["prior_weight"]) + self.log_likelihood(eta, batch))

    def _log_posteriors(self, eta: Array, batch: Mapping[str, Any]) -> Array:
        """``log p(η | data)`` up to a constant at each row of ``eta`` ``[n, R]`` (the fit's
        solves; NaN where a solve failed). Rows are vectorised 64 at a time, or one after
        another on a steady-state ODE engine (whose vectorised event walk would run both
        sides of every branch)."""
        size = 1 if self.steady_state and not self.linear else 64
        return jax.lax.map(lambda e: -self._objective(e, batch), eta, batch_size=size)

    def _map(self, batch: Mapping[str, Any], eta0: Array):
        """Linear models: mode by BFGS and the exact Hessian, in one compiled call."""
        import optimistix as optx

        solver = optx.BFGS(rtol=1e-9, atol=1e-9)
        sol = optx.minimise(self._objective, solver, eta0, args=batch, max_steps=500, throw=False)
        eta = sol.value
        h = jax.hessian(self._objective)(eta, batch)
        return (
            eta,
            0.5 * (h + h.T),
            self._objective(eta, batch),
            sol.result == optx.RESULTS.successful,
            sol.stats["num_steps"],
        )

    def mode(self, batch: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, float, bool, int]:
        """The posterior mode of η, the Hessian of the negative log posterior there, its
        value, whether the optimiser converged and its iterations.

        Linear models run :meth:`_map` (compiled BFGS). ODE models are driven from the host:
        one compiled value-and-gradient (forward sensitivities) serves a bounded L-BFGS-B
        search in prior-whitened coordinates and central differences of the gradient for
        the Hessian. An ODE solve can fail far from the mode (extreme parameters); such a
        point is scored as very improbable instead of poisoning the search with NaN.
        """
        r = self.n_effects
        if self.linear:
            eta, hess, value, ok, steps = self.map(batch, jnp.zeros(r))
            return np.asarray(eta), np.asarray(hess), float(value), bool(ok), int(steps)
        from scipy.optimize import minimize

        scale = np.asarray(self.chol) / math.sqrt(float(batch["prior_weight"]))

        def value_and_grad(eta: np.ndarray) -> tuple[float, np.ndarray]:
            v, g = self.value_and_grad(jnp.asarray(eta), batch)
            return float(v), np.asarray(g)

        def whitened(z: np.ndarray) -> tuple[float, np.ndarray]:
            v, g = value_and_grad(scale @ z)
            if not (np.isfinite(v) and np.all(np.isfinite(g))):
                # a failed solve: far worse than any point seen, sloping back to the prior
                return 1e12 * (1.0 + float(z @ z)), 2e12 * z
            return v, scale.T @ g

        bound = _MODE_BOUND_SD
        sol = minimize(
            whitened, np.zeros(r), jac=True, method="L-BFGS-B", bounds=[(-bound, bound)] * r,
            options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-7},
        )  # fmt: skip
        eta = scale @ sol.x
        steps = _FD_STEP * self.prior_sd
        columns = [
            (value_and_grad(eta + h * e)[1] - value_and_grad(eta - h * e)[1]) / (2 * h)
            for h, e in zip(steps, np.eye(r), strict=True)
        ]
        hess = np.stack(columns, axis=1)
        # a failed solve at the search's end (scored 1e12) is no mode, even if "converged"
        ok = bool(sol.success) and bool(np.all(np.abs(sol.x) < bound)) and sol.fun < 1e12
        return eta, 0.5 * (hess + hess.T), float(sol.fun), ok, int(sol.nit)

    def _prior_draws(self, key: Array, prior_weight: Array, n: int) -> Array:
        z = jax.random.normal(key, (n, self.n_effects), jnp.float64)
        return z @ self.chol.T / jnp.sqrt(prior_weight)

    # ---- predictions
    def _predict(
        self, typical: Array, eta: Array, events: DosingEvents, times: Array, grid=None
    ) -> Array:
        """Outputs ``[regimen, draw, time, output]`` for every regimen (row of ``events``)
        and draw of η, in one engine call (the exact event walk for linear models: its
        cost grows with times + doses, not their product; ``grid``: the semilinear
        engine's ``(step, n_steps)``, see :func:`~twinsim.simulators.semilinear_grid`)."""
        from ..simulators import simulate

        n_draws, n_regimens = eta.shape[0], events.n_subjects
        params = jnp.tile(self._params(typical, eta), (n_regimens, 1))
        table = DosingEvents(
            **{
                f: jnp.repeat(getattr(events, f), n_draws, axis=0)
                for f in events.__dataclass_fields__
            }
        )
        method = "auto" if grid is None else "semilinear"
        out = simulate(
            self.model.structural, params, table, times, keep_states=False, method=method,
            grid=grid,
        ).outputs  # fmt: skip
        return out.reshape(n_regimens, n_draws, times.shape[-1], -1)

    # ---- NUTS
    def potential(self, z: Array, batch: Mapping[str, Any]) -> Array:
        """The negative log posterior NUTS samples, in whitened coordinates, up to a
        constant: z ~ N(0, I), η = L z / √w (the prior N(0, Ω/w), as in
        :meth:`~twinsim.priors.PopulationModel.individual_model`), with the solves of
        ``log_likelihood(..., sampling=True)``."""
        eta = self.chol @ z / jnp.sqrt(batch["prior_weight"])
        return 0.5 * jnp.sum(z**2) - self.log_likelihood(eta, batch, sampling=True)

    def _chain(self, num_warmup: int, num_samples: int, rng: Array, z0: Array, batch):
        """One NUTS chain (NumPyro's kernel: dense mass matrix and step size adapted over
        the warm-up, target acceptance 0.85) → draws, divergences, leapfrog steps."""
        from numpyro.infer.hmc import hmc

        init_kernel, sample_kernel = hmc(
            potential_fn=lambda z: self.potential(z, batch), algo="NUTS"
        )
        state = init_kernel(z0, num_warmup, dense_mass=True, target_accept_prob=0.85, rng_key=rng)

        def step(state, _):
            state = sample_kernel(state)
            return state, (state.z, state.diverging, state.num_steps)

        _, (z, diverging, steps) = jax.lax.scan(step, state, None, length=num_warmup + num_samples)
        return z[num_warmup:], diverging[num_warmup:], steps[num_warmup:]

    def nuts(
        self, num_warmup: int, num_samples: int, *, many: bool = False, vectorised: bool = False
    ):
        """The compiled NUTS run, one per (warm-up, draws, ``many``, ``vectorised``) and
        data shapes: ``(keys [chain], z0 [chain, R], batch)`` → ``(z [chain, draw, R],
        diverging, leapfrog steps)``; with ``many`` (linear models and patients on the
        semilinear engine), every argument and result has a leading patient axis (see
        :func:`fit_nuts_many`). ``vectorised``: the chains run side by side (linear models
        and the semilinear engine) rather than one after another.

        The whole run (adaptation included) is one compiled program, so a new patient or
        one more observation of the same bucket sizes compiles nothing. (NumPyro's
        ``MCMC`` recompiled its sampling loop on every ``run`` and each compilation kept
        its code mapped: a warfarin study ran out of memory mappings.) A linear model's
        chains are vectorised; an ODE model's run one after another inside the program,
        because a vectorised ODE event walk runs both sides of every data-dependent
        branch (a steady-state Newton solve at every entry; 40x per gradient, measured).
        The semilinear engine has no branch: its chains are vectorised too.
        """
        key = (int(num_warmup), int(num_samples), bool(many), bool(vectorised or self.linear))
        if key not in self._nuts:
            chain = functools.partial(self._chain, key[0], key[1])
            if key[3]:
                chains = jax.vmap(chain, in_axes=(0, 0, None))
            else:

                def chains(keys, z0, batch):
                    return jax.lax.map(lambda kz: chain(kz[0], kz[1], batch), (keys, z0))

            self._nuts[key] = jax.jit(jax.vmap(chains) if many else chains)
        return self._nuts[key]


def _forward_mode_jacobian(predict):
    """``predict(eta, batch)`` differentiated in forward mode behind any transformation.

    An ODE solve's reverse-mode derivative checkpoints every step (slow to compile and to
    run); with a few random effects, pushing one tangent per effect forward is cheaper. The
    JVP rule computes the Jacobian ``∂f/∂η`` by :func:`jax.jacfwd` and returns ``J · η̇``,
    a product that reverse mode (``jax.grad``, NUTS) transposes directly. The data in
    ``batch`` are held constant.
    """

    @jax.custom_jvp
    def predicted(eta, batch):
        return predict(eta, batch)

    @predicted.defjvp
    def _jvp(primals, tangents):
        eta, batch = primals
        jac, value = jax.jacfwd(lambda e: (lambda f: (f, f))(predict(e, batch)), has_aux=True)(eta)
        return value, jac @ tangents[0]

    return predicted


def _engine(model: PopulationModel, steady_state: bool = False) -> _Engine:
    """The model's engine; ``steady_state``: the one for histories with ``SS=1`` records
    (see the module docstring)."""
    return _cached_engine(model, bool(steady_state))


@functools.lru_cache(maxsize=32)
def _cached_engine(model: PopulationModel, steady_state: bool) -> _Engine:
    return _Engine(model, steady_state)


def _inverse_pd(hess: np.ndarray) -> tuple[np.ndarray, bool]:
    """Inverse of a symmetric Hessian; eigenvalues floored if it is not positive definite."""
    if hess.size == 0:
        return hess, True
    values, vectors = np.linalg.eigh(0.5 * (hess + hess.T))
    pd = bool(np.all(values > 0) and np.all(np.isfinite(values)))
    values = np.maximum(np.nan_to_num(values, nan=1e-6), 1e-6)
    return (vectors / values) @ vectors.T, pd
