"""The latent model: conditional prior, set encoder and a mechanistic decoder with
a learned correction (or, as a baseline, a neural ODE), as flax NNX modules staged
through ``nnx.split``/``nnx.merge``.

Generative story for a patient with covariate features ``x`` and doses ``u``::

    z ~ p(z | x) = N(μ_p(x), diag σ_p(x)²)
    η = A z + b(x)                              (log-scale shifts of the random effects)
    θ = θ_pop(covariates) · exp(η)              (the published covariate model; PopulationModel._apply)
    dy/dt = f_mech(y, θ ⊙ m(y, z, x, t), t)     m = exp(B · tanh(g_nn(y, z, x, t) / B))
    y jumps / infuses by the doses              (the simulators' event handling, exact)
    obs ~ ResidualError of the drug (M3 below the LLOQ)

The correction ``m`` multiplies the *rates* the mechanism uses (by default the
parameters with between-subject variability that are not volumes), so amounts stay
non-negative wherever the mechanism keeps them so, doses are never learned, and the
outputs read the unmodulated θ (a volume change in the rates does not relabel the
concentrations). Its last layer
starts at zero, ``A`` at the Cholesky factor of Ω and ``b``, ``μ_p``, ``log σ_p`` at 0:
the untrained model *is* the published population model (η = L z, z ~ N(0, I)).

The encoder ``q(z | x, history)`` is a product of Gaussian experts: the prior's
precision plus one non-negative precision (and precision-weighted mean) per observation,
each from a network of (time, value, log ratio to the typical patient's prediction,
output, censored flag, x). Sums over masked, padded observations make it permutation-
invariant and exact for any number of observations — with none, q is the prior.

The neural-only baseline (``LatentConfig(decoder="neural")``) keeps that prior and
encoder and replaces the mechanism by a latent neural ODE with no published parameter::

    h ∈ R^K (amount-like states, mg; K = ``neural_states``, default the drug's states)
    dh_i/dt = Σ_j r_ji h_j − h_i Σ_j r_ij    r = R · sigmoid(g_nn(h, z, x, t) + c)   (1/h)
    h jumps / infuses by the doses              (the same event engine; dose state k = h_k)
    c_j = Σ_i softmax(ρ_j(z, x))_i h_i / exp(log V_j(z, x))      (output j, e.g. mg/L)

``r_ij`` (``i ≠ j``) moves amount from state ``i`` to ``j`` and ``r_ii`` eliminates it.
The choice of a mass-balance flow network over a free ``dh/dt = g_nn(...)``: amounts
stay non-negative and never grow between doses (the flows are linear in ``h`` with rates
bounded by ``R = neural_max_rate``, so no solve can blow up), doses enter exactly as the
simulators give them (amounts, boluses and infusions, ``F = 1`` and no lag time: the
drug's bioavailability and lag are published values), and the outputs are positive.
Nothing of the published model enters the decoder or the encoder: it starts from
generic scales only (every rate ``_NEURAL_INITIAL_RATE`` = 0.1 /h, volume
``neural_volume``, a uniform readout of the states), it ignores the typical parameters
given to :meth:`LatentModel.parameters`, and its encoder sees 0 for the log ratio to the
typical patient's prediction (the published model's). Its outputs are amounts over
volumes, zero before the first dose: an output with a baseline (warfarin's INR) is
outside its reach.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from ...priors import PopulationModel
from ...simulators import DosingEvents, ODEModel, predict_outputs
from ...simulators._model import Named
from .._intervals import draw_quantiles
from ._features import CovariateFeatures, LatentModelError

__all__ = ["LatentConfig", "LatentModel"]

_LOG_2PI = math.log(2.0 * math.pi)
DECODERS = ("hybrid", "neural")
# every rate of an untrained neural decoder, 1/h (a half-life of ~7 h: a generic scale)
_NEURAL_INITIAL_RATE = 0.1


@dataclass(frozen=True)
class LatentConfig:
    """Settings of a latent model (saved with it).

    Parameters
    ----------
    latent_dim
        Size of ``z`` (≥ the number of random effects keeps the population model inside).
    hidden
        Width of the prior, encoder and covariate networks.
    correction_hidden
        Width of the correction network ``g_nn`` (evaluated at every ODE step: keep small).
    correction_bound
        ``B``: the correction multiplies a rate by at most ``e^B`` (or divides by it).
    modulated
        Structural parameters the correction multiplies. Default: the parameters with
        between-subject variability, less the volumes unless ``modulate_volumes``.
    correction
        ``False``: no correction (the mechanistic model with a learned θ(z, x) only).
        Hybrid decoder only: the neural decoder *is* its network.
    decoder
        ``"hybrid"`` (the drug's mechanistic model with a learned correction) or
        ``"neural"`` (a latent neural ODE without the published model; see the module doc).
    neural_states
        Neural decoder: number of states ``K`` (``None``: the drug model's number, so that
        doses into compartment ``k`` enter state ``k`` as in the drug model).
    neural_max_rate
        Neural decoder: the largest rate of a flow, 1/h (bounds the ODE's stiffness).
    neural_volume
        Neural decoder: the untrained volume of every output, L (a body-size scale, not a
        drug's estimate; training moves it).
    correction_sees_z
        Hybrid decoder: whether ``z`` is an input of the correction ``g_nn``. ``False``
        (default): ``g_nn(y, x, t)`` — the correction learns what the mechanism misses for
        everyone with these covariates (a clearance falling over days, a saturable
        process), while a patient's own deviation stays in ``θ(z, x)`` where the published
        Ω puts it. Measured with ``True`` (1,000 virtual patients of the published model,
        ``benchmarks/latent_study.py``): the correction learned to undo the latent's
        effect on clearance (±2 SD of the clearance latent moved CL ×1.8 instead of the
        published ×4.6), and the 90 % bands after one level covered 58–60 % of new
        patients.
    correction_sees_state
        Hybrid decoder: whether the amounts ``y`` are inputs of the correction (``True``:
        ``g_nn(y, x, t)``, which can express a saturable process; ``False``: ``g_nn(x, t)``,
        a change over time for everyone with these covariates, which cannot re-shape a
        patient's own deviation through the amounts it causes).
    modulate_volumes
        Whether the default ``modulated`` keeps the random effects that are volumes
        (parameter units L, mL, dL, L/kg or mL/kg). ``False`` (default): the correction changes the
        clearances and other rates over time, not the volumes (which it could only change
        as rate constants: the outputs read the unmodulated volume). Measured on the
        structural truth of ``benchmarks/latent_study.py`` (vancomycin clearance falling
        over days; 1,000 training patients, 120 + 120 held out): with ``True`` the hybrid's
        90 % intervals after 1–4 levels covered 76–86 % (the oracle's 83–90 %) — the
        learned volume dynamics made early levels say too much about later exposure — and
        with ``False`` 83–88 %, its error unchanged (24 % below the mechanistic twin's).
        A record saved before this setting existed used ``True``.
    learn_variability
        ``False`` (default): the between-patient variability stays the published model's —
        the prior's SD is 1 and ``A`` stays chol Ω — while the prior's mean, the covariate
        shift ``b(x)``, the correction and the encoder are learned. ``True`` learns the
        prior's SD and ``A`` too. Measured on 1,000 virtual vancomycin patients of the
        published model (``benchmarks/latent_study.py``, 10 epochs): with ``True`` the
        ELBO's amortisation gap shrank the implied variance of log CL from Ω's 0.147 to
        0.012 (the prior narrows while the encoder is still learning) and the 90 % bands
        covered the truth for 63 % of new patients without levels.
    time_scale
        Hours per unit of the networks' time input.
    rtol, atol
        ODE tolerances of the decoder.
    """

    latent_dim: int = 4
    hidden: int = 32
    correction_hidden: int = 16
    correction_bound: float = 2.0
    modulated: tuple[str, ...] | None = None
    modulate_volumes: bool = False
    correction: bool = True
    decoder: str = "hybrid"
    neural_states: int | None = None
    neural_max_rate: float = 5.0
    neural_volume: float = 50.0
    correction_sees_z: bool = False
    correction_sees_state: bool = True
    learn_variability: bool = False
    time_scale: float = 24.0
    rtol: float = 1e-6
    atol: float = 1e-8

    def __post_init__(self) -> None:
        integers = ("latent_dim", "hidden", "correction_hidden")
        for name in (*integers, *(("neural_states",) if self.neural_states is not None else ())):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise LatentModelError(
                    f"`LatentConfig.{name}` must be an integer ≥ 1, got {value!r}"
                )
        positive = ("correction_bound", "neural_max_rate", "neural_volume", "time_scale", "rtol",
                    "atol")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and np.isfinite(value) and value > 0):
                raise LatentModelError(f"`LatentConfig.{name}` must be > 0, got {value!r}")
        if self.neural_max_rate <= _NEURAL_INITIAL_RATE:
            raise LatentModelError(
                f"`LatentConfig.neural_max_rate` must be > {_NEURAL_INITIAL_RATE} /h (the "
                f"untrained decoder's rate), got {self.neural_max_rate!r}"
            )
        bools = ("modulate_volumes", "correction_sees_z", "correction_sees_state",
                 "learn_variability")  # fmt: skip
        for name in bools:
            if not isinstance(getattr(self, name), bool):
                raise LatentModelError(
                    f"`LatentConfig.{name}` must be True or False, got {getattr(self, name)!r}"
                )
        if self.decoder not in DECODERS:
            raise LatentModelError(
                f"`LatentConfig.decoder` must be one of {list(DECODERS)}, got {self.decoder!r}"
            )
        if self.decoder == "neural" and not self.correction:
            raise LatentModelError(
                "`LatentConfig.correction` must be True with decoder 'neural' (its network is "
                "the whole decoder), got False; use decoder='hybrid' for the mechanistic model "
                "without a correction"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["modulated"] = None if self.modulated is None else list(self.modulated)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatentConfig:
        """The config of :meth:`to_dict` (a record without ``decoder``, saved before the
        neural decoder existed, is a hybrid: the defaults of the new fields; one without
        ``learn_variability`` learned it; one without ``modulate_volumes`` modulated every
        random effect)."""
        d = dict(d)
        d.setdefault("learn_variability", True)
        d.setdefault("modulate_volumes", True)
        d.setdefault("correction_sees_z", True)
        if d.get("modulated") is not None:
            d["modulated"] = tuple(d["modulated"])
        return cls(**d)


_VOLUME_UNITS = frozenset({"L", "mL", "dL", "L/kg", "mL/kg"})


def _modulated(population: PopulationModel, config: LatentConfig) -> tuple[str, ...]:
    """The structural parameters the correction multiplies (see ``LatentConfig.modulated``)."""
    structural = population.structural
    if config.modulated is not None:
        unknown = [m for m in config.modulated if m not in structural.parameters]
        if unknown:
            raise LatentModelError(
                f"`LatentConfig.modulated` names {unknown}, which are not parameters of "
                f"{structural.name!r}; known: {list(structural.parameters)}"
            )
        return tuple(config.modulated)
    effects = tuple(population.random_effects)
    if config.modulate_volumes:
        return effects
    units = dict(structural.parameter_units)
    rates = tuple(e for e in effects if units.get(e) not in _VOLUME_UNITS)
    return rates or effects


class _MLP(nnx.Module):
    """tanh MLP; ``zero_last`` starts the output layer at exactly 0."""

    def __init__(self, sizes: list[int], *, rngs: nnx.Rngs, zero_last: bool = False):
        layers = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            last = i == len(sizes) - 2
            init = (
                nnx.initializers.zeros_init()
                if (last and zero_last)
                else nnx.initializers.lecun_normal()
            )
            layers.append(nnx.Linear(a, b, kernel_init=init, param_dtype=jnp.float64, rngs=rngs))
        self.layers = nnx.List(layers)

    def __call__(self, h):
        for layer in self.layers[:-1]:
            h = jnp.tanh(layer(h))
        return self.layers[-1](h)


# per-observation inputs of the encoder: time, log1p(value), log ratio to typical, censored
_OBS_FEATURES = 4


class _Networks(nnx.Module):
    """The prior, the encoder and the decoder's networks; ``correction`` is the one inside
    the ODE (its weights travel in the parameter rows): the hybrid's rate multipliers or
    the neural decoder's ``K × K`` flows, which also has ``readout`` (volumes and readout
    weights from z, x)."""

    def __init__(self, n_x: int, n_effects: int, n_states: int, n_outputs: int, n_modulated: int,
                 chol: np.ndarray, config: LatentConfig, *, rngs: nnx.Rngs):  # fmt: skip
        d, h = config.latent_dim, config.hidden
        self.prior = _MLP([n_x + 1, h, 2 * d], rngs=rngs, zero_last=True)
        self.encoder = _MLP(
            [_OBS_FEATURES + n_outputs + n_x + 1, h, h, 2 * d], rngs=rngs, zero_last=True
        )
        if config.decoder == "neural":
            n_flows = n_states * n_states
            self.readout = _MLP(
                [d + n_x + 1, h, n_outputs * (1 + n_states)], rngs=rngs, zero_last=True
            )
        else:
            n_flows = max(n_modulated, 1)
            effect = np.zeros((n_effects, d))
            k = min(n_effects, d)
            effect[:, :k] = chol[:, :k]
            self.effect = nnx.Param(jnp.asarray(effect))
            self.covariate = _MLP([n_x + 1, h, max(n_effects, 1)], rngs=rngs, zero_last=True)
        self.correction = _MLP(
            [n_states + d + n_x + 2, config.correction_hidden, n_flows], rngs=rngs, zero_last=True
        )


def _gaussian_kl(mq, sq, mp, sp):
    return jnp.sum(jnp.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5, axis=-1)


class LatentModel:
    """A trained (or freshly initialised) latent model of one drug: hybrid or neural-only.

    Build with :meth:`create`; train with :func:`~twinsim.twin.train_latent`; save and
    load with :meth:`save` / :meth:`load`. Immutable: :meth:`with_params` returns a new one.

    Parameters
    ----------
    population
        The drug's published :class:`~twinsim.priors.PopulationModel` (the prior).
    features
        The fitted covariate transform.
    config
        :class:`LatentConfig`.
    params
        The networks' parameters (an ``nnx.State``); ``None``: initialise from ``seed``.
    seed
        Initialisation seed.

    Examples
    --------
    >>> from twinsim.priors import vancomycin_model
    >>> from twinsim.twin import CovariateFeatures, LatentModel
    >>> f = CovariateFeatures.fit({"weight": [60.0, 90.0], "crcl": [50.0, 110.0], "dialysis": [0, 0]})
    >>> m = LatentModel.create(vancomycin_model(), f, seed=0)
    >>> m.ode_model.parameters[:4], m.config.latent_dim
    (('cl', 'v1', 'q', 'v2'), 4)
    >>> n = LatentModel.create(vancomycin_model(), f, LatentConfig(decoder="neural"), seed=0)
    >>> n.ode_model.states, n.ode_model.parameters[:3]
    (('central', 'peripheral1'), ('_log_v_conc', '_read_conc_central', '_read_conc_peripheral1'))
    """

    def __init__(self, population: PopulationModel, features: CovariateFeatures,
                 config: LatentConfig, graphdef, params):  # fmt: skip
        self.population = population
        self.features = features
        self.config = config
        self.graphdef = graphdef
        self.params = params
        structural = population.structural
        self.effects = tuple(population.random_effects)
        self.modulated = _modulated(population, config)
        self.n_states = config.neural_states or structural.n_states
        self.outputs = structural.output_names
        self.errors = tuple(
            (j, population.residual[o])
            for j, o in enumerate(self.outputs)
            if o in population.residual
        )
        _, self._unravel = ravel_pytree(params["correction"])
        self.n_weights = int(ravel_pytree(params["correction"])[0].size)
        self.ode_model = self._decoder_model()

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, population: PopulationModel, features: CovariateFeatures,
               config: LatentConfig | None = None, *, seed: int = 0) -> LatentModel:  # fmt: skip
        """A new model whose untrained state is the population model (see the module doc)."""
        config = config or LatentConfig()
        structural = population.structural
        omega = np.asarray(population.omega, float)
        chol = np.linalg.cholesky(omega) if omega.size else np.zeros((0, 0))
        modulated = _modulated(population, config)
        n_states = config.neural_states or structural.n_states
        nets = _Networks(
            features.size, len(population.random_effects), n_states,
            len(structural.output_names), len(modulated), chol, config, rngs=nnx.Rngs(seed),
        )  # fmt: skip
        graphdef, params = nnx.split(nets, nnx.Param)
        return cls(population, features, config, graphdef, params)

    def with_params(self, params) -> LatentModel:
        return LatentModel(self.population, self.features, self.config, self.graphdef, params)

    def population_model(self) -> PopulationModel:
        """This model as a :class:`~twinsim.priors.PopulationModel` over the standardised
        latent variable (one instance per model, so its compiled programs are shared):
        what :class:`~twinsim.twin.PatientTwin`, cohort simulation and trials run on. See
        :mod:`twinsim.twin._latent._population`."""
        cached = self.__dict__.get("_population_model")
        if cached is None:
            from ._population import latent_population_model

            cached = self.__dict__["_population_model"] = latent_population_model(self)
        return cached

    def networks(self, params=None) -> _Networks:
        return nnx.merge(self.graphdef, self.params if params is None else params)

    def _decoder_model(self) -> ODEModel:
        """The decoder as an ``ODEModel`` whose parameter vector is [per-subject parameters,
        z, x, ODE network weights], so that the simulators' engine (events, infusions,
        steady state, per-subject status) runs it unchanged: the hybrid's per-subject
        parameters are θ, the neural decoder's its log-volumes and readout logits."""
        s = self.population.structural
        neural = self.config.decoder == "neural"
        lead = self._lead_names()
        n_p, d, n_x = len(lead), self.config.latent_dim, self.features.size
        names = (
            *lead,
            *(f"_z{i}" for i in range(d)),
            *(f"_x{i}" for i in range(n_x)),
            *(f"_w{i}" for i in range(self.n_weights)),
        )
        time_scale = self.config.time_scale
        graphdef = nnx.split(self.networks().correction)[0]
        unravel = self._unravel
        state_scale = self._state_scale()

        def network(t, y, z, x, w):
            """``g_nn(y, z, x, t)`` (raw outputs) for the weights ``w`` of the row."""
            y_feature = jnp.log1p(jnp.maximum(y, 0.0) / state_scale)
            inputs = jnp.concatenate([y_feature, z, x, jnp.array([t / time_scale, 1.0])])
            return nnx.merge(graphdef, unravel(w))(inputs)

        def split(p):
            return p[:n_p], p[n_p : n_p + d], p[n_p + d : n_p + d + n_x], p[n_p + d + n_x :]

        common = dict(
            name=f"{s.name}_{'neural' if neural else 'latent'}", parameters=names,
            output_units=dict(s.output_units), linear=False, citation=s.citation,
        )  # fmt: skip
        if neural:
            return self._neural_model(network, split, common)
        mod_index = np.array([s.parameters.index(m) for m in self.modulated], dtype=np.int64)
        bound, use_correction = self.config.correction_bound, self.config.correction

        sees_z, sees_state = self.config.correction_sees_z, self.config.correction_sees_state

        def rhs(t, y, p):
            theta, z, x, w = split(p._array)
            if use_correction:
                z_in = z if sees_z else jnp.zeros_like(z)  # see LatentConfig.correction_sees_z
                y_in = y._array if sees_state else jnp.zeros_like(y._array)
                log_m = bound * jnp.tanh(network(t, y_in, z_in, x, w)[: len(mod_index)] / bound)
                # a dense multiplier (scatter-multiply has no derivative for repeated indices)
                theta = theta * jnp.ones_like(theta).at[mod_index].set(jnp.exp(log_m))
            return s.rhs(t, y, Named(s.parameters, theta))

        def output_fn(fn):
            return lambda y, p: fn(y, Named(s.parameters, p._array[..., :n_p]))

        def initial(p):
            return s.initial(Named(s.parameters, p._array[..., :n_p])) if s.initial else {}

        return ODEModel(
            states=s.states,
            rhs=rhs,
            outputs={name: output_fn(fn) for name, fn in s.outputs},
            parameter_units=dict(s.parameter_units),
            initial=initial if s.initial else None,
            bioavailability=dict(s.bioavailability),
            lag_time=dict(s.lag_time),
            routes=dict(s.routes),
            **common,
        )

    def _neural_model(self, network, split, common) -> ODEModel:
        """The neural decoder's ODE (mass-balance flows; see the module doc)."""
        s = self.population.structural
        k = self.n_states
        states = self._neural_states()
        max_rate = self.config.neural_max_rate
        # the network's raw output 0 gives _NEURAL_INITIAL_RATE
        offset = math.log(_NEURAL_INITIAL_RATE / (max_rate - _NEURAL_INITIAL_RATE))
        transfer = 1.0 - np.eye(k)

        def rhs(t, y, p):
            _, z, x, w = split(p._array)
            h = y._array
            rates = max_rate * jax.nn.sigmoid(network(t, h, z, x, w).reshape(k, k) + offset)
            # rates[i, j]: state i → state j (i ≠ j) or out of the body (i = j)
            return (rates * transfer).T @ h - h * jnp.sum(rates, axis=1)

        n_out = len(self.outputs)

        def output_fn(j):
            def concentration(y, p):
                a = p._array
                weights = jax.nn.softmax(a[..., n_out + j * k : n_out + (j + 1) * k], axis=-1)
                return jnp.sum(weights * y._array, axis=-1) / jnp.exp(a[..., j])

            return concentration

        return ODEModel(
            states=states,
            rhs=rhs,
            outputs={name: output_fn(j) for j, name in enumerate(self.outputs)},
            routes={r: state for r, state in s.routes if state in states},
            **common,
        )

    def _lead_names(self) -> tuple[str, ...]:
        """Names of the per-subject parameters at the head of a decoder row."""
        if self.config.decoder == "hybrid":
            return self.population.structural.parameters
        return (
            *(f"_log_v_{o}" for o in self.outputs),
            *(f"_read_{o}_{state}" for o in self.outputs for state in self._neural_states()),
        )

    def _neural_states(self) -> tuple[str, ...]:
        """The drug model's state names (so its routes still apply), then ``h<i>``."""
        s = self.population.structural
        return (*s.states[: self.n_states], *(f"h{i}" for i in range(s.n_states, self.n_states)))

    def _state_scale(self) -> np.ndarray:
        """A typical amount per state (mg) so that the ODE network sees O(1) inputs."""
        return np.full(self.n_states, 1000.0)

    # ------------------------------------------------------------------ pieces
    def typical(self, covariates: Mapping[str, Any]) -> np.ndarray:
        """Published typical parameters ``[subject, P]`` (the covariate model)."""
        return np.asarray(self.population.typical_parameters(covariates), float)

    @staticmethod
    def _with_one(x):
        return jnp.concatenate([x, jnp.ones((*x.shape[:-1], 1))], axis=-1)

    def prior(self, params, x):
        """``p(z | x)``: mean and SD ``[subject, d]``."""
        nets = nnx.merge(self.graphdef, params)
        out = nets.prior(self._with_one(x))
        d = self.config.latent_dim
        if not self.config.learn_variability:
            return out[..., :d], jnp.ones_like(out[..., :d])
        return out[..., :d], jnp.exp(out[..., d:])

    def posterior(self, params, x, obs: Mapping[str, Any]):
        """``q(z | x, history)``: mean and SD ``[subject, d]`` (the prior without data)."""
        nets = nnx.merge(self.graphdef, params)
        mp, sp = self.prior(params, x)
        d = self.config.latent_dim
        value = jnp.maximum(obs["observed"], 0.0)
        ratio = jnp.log(jnp.maximum(value, 1e-3) / jnp.maximum(obs["typical_prediction"], 1e-3))
        ratio = jnp.where(obs["censored"], 0.0, jnp.clip(ratio, -5.0, 5.0))
        if self.config.decoder == "neural":
            ratio = jnp.zeros_like(ratio)  # the typical prediction is the published model's
        one_hot = jax.nn.one_hot(obs["output"], len(self.outputs))
        xs = jnp.broadcast_to(x[:, None, :], (*obs["times"].shape, x.shape[-1]))
        features = jnp.concatenate(
            [
                (obs["times"] / self.config.time_scale)[..., None],
                jnp.log1p(jnp.where(obs["censored"], 0.0, value))[..., None],
                ratio[..., None],
                obs["censored"].astype(jnp.float64)[..., None],
                one_hot,
                xs,
            ],
            axis=-1,
        )
        out = nets.encoder(self._with_one(features))
        mask = obs["mask"][..., None]
        precision = jnp.sum(jnp.where(mask, jax.nn.softplus(out[..., :d]), 0.0), axis=1)
        shift = jnp.sum(jnp.where(mask, out[..., d:], 0.0), axis=1)
        prec_q = 1.0 / sp**2 + precision
        mean_q = (mp / sp**2 + shift) / prec_q
        return mean_q, 1.0 / jnp.sqrt(prec_q)

    def eta(self, params, x, z):
        """Hybrid decoder: the log-scale shifts ``η = A z + b(x)`` ``[n, R]`` of the random
        effects (``A`` held at chol Ω unless ``learn_variability``)."""
        nets = nnx.merge(self.graphdef, params)
        effect = nets.effect.get_value()
        if not self.config.learn_variability:
            effect = jax.lax.stop_gradient(effect)  # A stays chol Ω (see LatentConfig)
        return z @ effect.T + nets.covariate(self._with_one(x))[..., : len(self.effects)]

    def parameters(self, params, typical, x, z):
        """Decoder rows ``[n, lead | z | x | w]`` for latent draws ``z [n, d]``.

        ``lead``: the hybrid's θ (the published covariate model ``typical [.., P]``
        shifted by ``A z + b(x)``) or the neural decoder's log-volumes and readout logits
        from ``(z, x)`` (``typical`` ignored); ``w``: the ODE network's weights.
        """
        nets = nnx.merge(self.graphdef, params)
        n = z.shape[0]
        xs = jnp.broadcast_to(x, (n, x.shape[-1]))
        if self.config.decoder == "neural":
            out = nets.readout(self._with_one(jnp.concatenate([z, xs], axis=-1)))
            n_out = len(self.outputs)
            lead = jnp.concatenate(
                [out[:, :n_out] + math.log(self.config.neural_volume), out[:, n_out:]], axis=-1
            )
        else:
            eta = self.eta(params, x, z)
            lead = self.population._apply(jnp.broadcast_to(typical, (n, typical.shape[-1])), eta)
        w = ravel_pytree(params["correction"])[0]
        return jnp.concatenate([lead, z, xs, jnp.broadcast_to(w, (n, w.size))], axis=-1)

    def decode(self, params, typical, x, z, events: DosingEvents, times, *, sensitivity="reverse"):
        """Outputs ``[n, time, output]`` of the decoder's ODE for each row of z/events."""
        rows = self.parameters(params, typical, x, z)
        return predict_outputs(
            self.ode_model, rows, events, times, method="ode",
            rtol=self.config.rtol, atol=self.config.atol, sensitivity=sensitivity,
        )  # fmt: skip

    def log_likelihood(self, prediction, obs: Mapping[str, Any]):
        """``[subject]`` log-likelihood of the observations given predicted ``[subject, obs]``."""
        total = jnp.zeros(prediction.shape[0])
        lloq = jnp.where(jnp.isfinite(obs["lloq"]), obs["lloq"], 0.0)
        for j, err in self.errors:
            ll = err.log_likelihood(
                obs["observed"], prediction, censored=obs["censored"], lloq=lloq
            )
            total = total + jnp.sum(jnp.where(obs["mask"] & (obs["output"] == j), ll, 0.0), axis=-1)
        return total

    def elbo(self, params, batch: Mapping[str, Any], key):
        """Per-subject ELBO ``[subject]`` with one reparameterised draw of z."""
        x = batch["x"]
        mp, sp = self.prior(params, x)
        mq, sq = self.posterior(params, x, batch)
        z = mq + sq * jax.random.normal(key, mq.shape, jnp.float64)
        out = self.decode(params, batch["typical"], x, z, batch["events"], batch["times"])
        prediction = jnp.take_along_axis(out, batch["output"][..., None], axis=-1)[..., 0]
        return self.log_likelihood(prediction, batch) - _gaussian_kl(mq, sq, mp, sp)

    # ------------------------------------------------------------------ records
    def to_record(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What a saved model is: settings (JSON-able) and parameter arrays by key.

        The prior is named (a drug of the library); :meth:`from_record` rebuilds the
        identical model from the two parts.
        """
        settings = {
            "format": "twinsim-latent/1",
            "prior": self.population.name,
            "config": self.config.to_dict(),
            "features": self.features.to_dict(),
        }
        arrays = {f"{i:05d}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(self.params))}
        return settings, arrays

    @classmethod
    def from_record(
        cls, settings: Mapping[str, Any], arrays: Mapping[str, Any],
        population: PopulationModel | None = None,
    ) -> LatentModel:  # fmt: skip
        """Rebuild a model saved by :meth:`to_record` (``population``: for a user prior)."""
        from ...priors import drug_model

        if settings.get("format") != "twinsim-latent/1":
            raise LatentModelError(
                f"not a twinsim latent model record: format {settings.get('format')!r}, "
                "expected 'twinsim-latent/1'"
            )
        population = population or drug_model(settings["prior"])
        fresh = cls.create(
            population,
            CovariateFeatures.from_dict(settings["features"]),
            LatentConfig.from_dict(settings["config"]),
        )
        template = jax.tree.leaves(fresh.params)
        stored = [arrays[k] for k in sorted(arrays)]
        if len(stored) != len(template) or any(
            np.shape(a) != np.shape(b) for a, b in zip(stored, template, strict=False)
        ):
            raise LatentModelError(
                "the saved parameters do not fit the saved settings (another version or a "
                "damaged file); retrain or restore the model folder"
            )
        params = jax.tree.unflatten(
            jax.tree.structure(fresh.params), [jnp.asarray(a, jnp.float64) for a in stored]
        )
        return fresh.with_params(params)

    # ------------------------------------------------------------------ generating and forecasting
    def sample(
        self,
        covariates: Mapping[str, Any],
        doses: Any,
        times: Any,
        n: int,
        seed: int,
        *,
        residual: bool = False,
    ) -> np.ndarray:
        """Trajectories of ``n`` new virtual patients like ``covariates`` (one row) on ``doses``.

        Draw ``z ~ p(z | x)`` per patient (key from ``(seed, patient index)``, so a
        patient's trajectory does not depend on ``n``) and solve the decoder's ODE.

        Parameters
        ----------
        covariates
            One patient's covariate columns (each a length-1 sequence).
        doses
            A list of :class:`~twinsim.simulators.Dose`.
        times
            Output times, h (sorted).
        n, seed
            How many patients; root seed.
        residual
            Add the drug's residual error (simulated levels) instead of true values.

        Returns
        -------
        numpy.ndarray
            ``[n, time, output]``.
        """
        from ...simulators import subject_keys

        if not (isinstance(n, int) and n >= 1):
            raise LatentModelError(f"`n` must be an integer ≥ 1, got {n!r}")
        x = jnp.asarray(self.features.transform(covariates))
        if x.shape[0] != 1:
            raise LatentModelError(f"`covariates` must describe one patient, got {x.shape[0]} rows")
        keys = subject_keys(seed, np.arange(n))
        z = self._prior_draws(x, keys)
        return self._trajectories(covariates, z, [list(doses)], times, keys if residual else None)[
            0
        ]

    def sample_patients(
        self,
        covariates: Mapping[str, Any],
        events: DosingEvents,
        times: Any,
        seed: int,
        *,
        residual: bool = False,
    ) -> np.ndarray:
        """One trajectory for each of ``n`` different patients (row ``i`` of every input).

        Patient ``i`` draws ``z ~ p(z | x_i)`` (and its residual error) with the key of
        ``(seed, i)``, as :meth:`sample` draws its ``i``-th patient: a patient given the
        same covariates and doses gets the same trajectory from either.

        Parameters
        ----------
        covariates
            ``{column: values [n]}``.
        events
            The patients' doses, :class:`~twinsim.simulators.DosingEvents` ``[n, event]``.
        times
            Output times ``[n, time]``, h (sorted per patient).
        seed
            Root seed.
        residual
            Add the drug's residual error (simulated levels) instead of true values.

        Returns
        -------
        numpy.ndarray
            ``[n, time, output]``.
        """
        from ...simulators import subject_keys

        x = jnp.asarray(self.features.transform(covariates))
        times = jnp.asarray(times, jnp.float64)
        n = x.shape[0]
        if events.n_subjects != n or times.ndim != 2 or times.shape[0] != n:
            raise LatentModelError(
                f"`events` and `times` must have one row per patient ({n} from `covariates`), "
                f"got {events.n_subjects} and shape {tuple(times.shape)}"
            )
        keys = subject_keys(seed, np.arange(n))
        z = self._prior_draws(x, keys)
        typical = jnp.asarray(self.typical(covariates))
        out = np.asarray(self.decode(self.params, typical, x, z, events, times))
        return self._with_residual(out, keys) if residual else out

    def _prior_draws(self, x, keys):
        """``z ~ p(z | x)``, one draw per key (``x``: one row, or one row per key)."""
        mean, sd = self.prior(self.params, x)
        eps = jax.vmap(lambda k: jax.random.normal(k, (self.config.latent_dim,), jnp.float64))(keys)
        return mean + sd * eps

    def _with_residual(self, out: np.ndarray, keys) -> np.ndarray:
        """Levels ``[m, time, output]`` with the drug's residual error, draw ``i`` by ``keys[i]``."""
        out = np.array(out)
        for j, err in self.errors:
            noise = jax.vmap(lambda k, f, e=err: e.sample(jax.random.fold_in(k, 2), f))
            out[..., j] = np.asarray(noise(keys, jnp.asarray(out[..., j])))
        return out

    def _trajectories(self, covariates, z, regimens, times, keys=None) -> np.ndarray:
        """``[regimen, draw, time, output]`` for draws z ``[S, d]`` of one patient."""
        typical = self.typical(covariates)
        x = jnp.asarray(self.features.transform(covariates))
        times = jnp.asarray(times, jnp.float64)
        s, r = z.shape[0], len(regimens)
        events = DosingEvents.from_doses([list(d) for d in regimens for _ in range(s)])
        all_times = jnp.broadcast_to(times, (r * s, times.shape[-1]))
        out = np.asarray(
            self.decode(
                self.params, jnp.asarray(typical), x, jnp.tile(z, (r, 1)), events, all_times
            )
        )
        if keys is not None:
            out = self._with_residual(out, jnp.tile(keys, r))
        return out.reshape(r, s, times.shape[-1], -1)

    def encode(self, data: Any, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``q(z | x, history)`` of subject ``index`` of a :class:`LatentData`: mean, SD."""
        batch = data.batch(np.array([index]))
        mean, sd = self.posterior(self.params, batch["x"], batch)
        return np.asarray(mean[0]), np.asarray(sd[0])

    def forecast(
        self,
        covariates: Mapping[str, Any],
        posterior: tuple[np.ndarray, np.ndarray],
        regimens: list,
        times: Any,
        *,
        n_draws: int = 200,
        seed: int = 0,
        level: float = 0.9,
    ) -> dict[str, np.ndarray]:
        """Median and central ``level`` band of each regimen's outputs under ``posterior``.

        Returns ``{"draws": [regimen, draw, time, output], "median", "low", "high":
        [regimen, time, output]}`` (true concentrations; the band is over z).
        """
        mean, sd = (np.asarray(a) for a in posterior)
        eps = np.random.default_rng(seed).standard_normal((n_draws, mean.size))
        draws = self._trajectories(covariates, jnp.asarray(mean + sd * eps), regimens, times)
        q = (1 - level) / 2
        low, high = draw_quantiles(draws, [q, 1 - q], axis=1)  # one partition for both ends
        return {"draws": draws, "median": np.median(draws, axis=1), "low": low, "high": high}
