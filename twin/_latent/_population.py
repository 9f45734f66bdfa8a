"""A trained latent model as a population model, so that every twin workflow runs on it.

The latent model's generative story (see :mod:`._model`) is a mixed-effects model in the
standardised latent variable ``ε``::

    ε ~ N(0, I)                       (the random effects; Ω = I)
    z = μ_p(x) + σ_p(x) ⊙ ε           (the conditional prior p(z | x))
    η = A z + b(x),   θ = θ_pop(covariates) · exp(η)
    dy/dt = f_mech(y, θ ⊙ m(y, z, x, t), t)

:func:`latent_population_model` writes it as an ordinary
:class:`~twinsim.priors.PopulationModel`: its structural model's parameter vector is
``[θ_pop | exp(ε) | μ_p | σ_p | b | x]`` (what depends on the patient, computed from the
covariates by the model's ``parameters`` function) and its random effects are the
``latent_k = exp(ε_k)`` entries, log-normal with Ω = I exactly as the library's models
carry η. The network weights and ``A`` are constants of the right-hand side. So
:class:`~twinsim.twin.PatientTwin` (MAP, Laplace and NUTS over ``ε``, i.e. over ``z``;
predictions with bands, exposure metrics, PTA; recommendations), cohort simulation
(``PopulationModel.simulate``) and the virtual-trial engine take a trained model where
they take a published one, with nothing written twice.

The covariates it declares are the published model's plus the latent model's feature
columns (numbers not in the published model default to the training mean, as the
feature transform treats a missing number; genotypes as diplotype levels, read as CPIC
activity scores; ancestry as a level), so the transform is evaluated inside the
compiled programs and an untested genotype is averaged over by the twin like any other.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ...priors import ANCESTRIES, COVARIATE_COLUMNS, GENES, Covariate, PopulationModel
from ...simulators import ODEModel
from ...simulators._model import Named
from ._features import _GENE_OF_COLUMN, LatentModelError

__all__ = ["latent_population_model"]


def _latent_covariates(model: Any) -> tuple[tuple[Covariate, ...], dict[str, Any]]:
    """Declared covariates (the published model's first) and, per feature column, how the
    encoded value becomes the feature: ``("number", mean, scale)``, ``("gene", table,
    mean, scale)`` or ``("ancestry",)``."""
    pm, features = model.population, model.features
    declared = {c.name: c for c in pm.covariates}
    extra: list[Covariate] = []
    how: dict[str, Any] = {}
    for column, mean, scale in zip(features.columns, features.mean, features.scale, strict=True):
        if column in _GENE_OF_COLUMN:
            gene = GENES[_GENE_OF_COLUMN[column]]
            covariate = declared.get(column)
            if covariate is None or not covariate.categorical:
                covariate = Covariate(column, levels=gene.diplotypes(),
                                      description=f"{gene.name} diplotype")  # fmt: skip
                extra.append(covariate)
            table = np.array([gene.activity_score(level) for level in covariate.levels])
            how[column] = ("gene", table, mean, scale)
            continue
        if column not in declared:
            standard = COVARIATE_COLUMNS[column]
            extra.append(Covariate(column, standard.unit, default=float(mean),
                                   description=f"{standard.description} (absent: training mean)"))  # fmt: skip
        how[column] = ("number", mean, scale)
    if features.ancestry:
        if "ancestry" not in declared:
            extra.append(Covariate("ancestry", levels=ANCESTRIES, description="genetic ancestry"))
        elif declared["ancestry"].levels != tuple(ANCESTRIES):
            raise LatentModelError(
                f"the published model {pm.name!r} declares `ancestry` with levels "
                f"{declared['ancestry'].levels}; the latent model needs {tuple(ANCESTRIES)}: "
                "declare the prior's `ancestry` with those levels, or train without ancestry"
            )
    return (*pm.covariates, *extra), how


def _feature_vector(model: Any, how: dict[str, Any], covariates: Any, n: int):
    """The feature transform ``x`` ``[n, size]`` on encoded covariates (traceable)."""
    parts = []
    for column in model.features.columns:
        value = covariates[column]
        if how[column][0] == "gene":
            _, table, mean, scale = how[column]
            raw = jnp.asarray(table)[jnp.asarray(value).astype(jnp.int32)]
        else:
            _, mean, scale = how[column]
            raw = jnp.asarray(value, jnp.float64)
        z = (raw - mean) / scale
        parts.append(jnp.broadcast_to(jnp.where(jnp.isfinite(z), z, 0.0), (n,)))
    if model.features.ancestry:
        code = jnp.broadcast_to(jnp.asarray(covariates["ancestry"]).astype(jnp.int32), (n,))
        parts.extend(jnp.where(code == k, 1.0, 0.0) for k in range(len(ANCESTRIES)))
    return jnp.stack(parts, axis=-1) if parts else jnp.zeros((n, 0))


def _n_rows(covariates: Any, names: tuple[str, ...]) -> int:
    sizes = [int(np.shape(covariates[c])[0]) for c in names if np.ndim(covariates[c]) >= 1]
    return max(sizes, default=1)


def latent_population_model(model: Any) -> PopulationModel:
    """The :class:`~twinsim.priors.PopulationModel` of a latent model (see the module doc).

    Parameters
    ----------
    model
        A :class:`~twinsim.twin.LatentModel` (trained or not).

    Returns
    -------
    PopulationModel
        Named ``"<drug>_latent"``; random effects ``latent_0 … latent_{d-1}`` with Ω = I;
        the published model's residual error. Untrained, its predictions for ``ε`` equal
        the published model's for ``η = L ε`` (``L`` = chol Ω).

    Raises
    ------
    LatentModelError
        A neural-only decoder (no mechanistic model to individualise), or the drug's bioavailability or lag time is a parameter with between-subject
        variability (this representation reads those before the latent shift).
    """
    pm, config = model.population, model.config
    if config.decoder != "hybrid":
        raise LatentModelError(
            f"a twin needs the hybrid decoder (the mechanistic model inside); this model's "
            f"`LatentConfig.decoder` is {config.decoder!r}: use its encoder "
            "(`LatentModel.encode`/`forecast`) or train a hybrid"
        )
    s, hybrid = pm.structural, model.ode_model
    n_p, d, n_x = len(s.parameters), config.latent_dim, model.features.size
    n_r = len(model.effects)
    dosing = {p for _, p in (*s.bioavailability, *s.lag_time)}
    varying = sorted(dosing & set(pm.random_effects))
    if varying:
        raise LatentModelError(
            f"{pm.name!r}: dosing parameters {varying} have between-subject variability; a "
            "latent twin of this model is not supported (their value is read before the shift)"
        )
    covariates, how = _latent_covariates(model)
    nets = model.networks()
    effect = jnp.asarray(nets.effect.get_value())  # A [R, d]
    weights = ravel_pytree(model.params["correction"])[0]
    latent = tuple(f"latent_{k}" for k in range(d))
    names = (
        *s.parameters, *latent,
        *(f"prior_mean_{k}" for k in range(d)), *(f"prior_sd_{k}" for k in range(d)),
        *(f"shift_{r}" for r in range(n_r)), *(f"feature_{i}" for i in range(n_x)),
    )  # fmt: skip
    cuts = np.cumsum([n_p, d, d, d, n_r, n_x])

    def hybrid_row(p):
        """``[…, θ | z | x | w]`` of the hybrid from the latent model's row."""
        a = p._array
        theta_pop, e, mean, sd, shift, x = jnp.split(a, cuts[:-1], axis=-1)
        z = mean + sd * jnp.log(e)
        eta = z @ effect.T + shift
        lead = a.shape[:-1]
        theta = pm._apply(theta_pop.reshape(-1, n_p), eta.reshape(-1, n_r)).reshape(*lead, n_p)
        w = jnp.broadcast_to(weights, (*lead, weights.size))
        return Named(hybrid.parameters, jnp.concatenate([theta, z, x, w], axis=-1))

    def rhs(t, y, p):
        return hybrid.rhs(t, y, hybrid_row(p))

    def output(fn):
        return lambda y, p: fn(y, hybrid_row(p))

    structural = ODEModel(
        name=f"{s.name}_latent_twin", states=s.states, parameters=names, rhs=rhs,
        outputs={name: output(fn) for name, fn in hybrid.outputs},
        output_units=dict(s.output_units), parameter_units=dict(s.parameter_units),
        linear=False,
        initial=(lambda p: hybrid.initial(hybrid_row(p))) if hybrid.initial else None,
        bioavailability=dict(s.bioavailability), lag_time=dict(s.lag_time),
        routes=dict(s.routes), citation=s.citation,
    )  # fmt: skip
    own = tuple(c.name for c in covariates)
    params = model.params

    def parameters(view, cov):
        n = _n_rows(cov, own)
        theta_pop = pm._typical_at(view._array, cov, n)
        x = _feature_vector(model, how, cov, n)
        mean, sd = model.prior(params, x)
        shift = model.eta(params, x, jnp.zeros((n, d)))  # b(x): η at z = 0
        columns = jnp.concatenate([theta_pop, jnp.ones((n, d)), mean, sd, shift, x], axis=-1)
        return {name: columns[:, i] for i, name in enumerate(names)}

    def reported(rows):
        # what a fit summary shows: the mechanistic model's parameters θ(z, x) of each row
        # (the learned correction acts on top of them over time)
        theta = hybrid_row(Named(names, jnp.asarray(rows)))._array[..., :n_p]
        return {name: theta[..., i] for i, name in enumerate(s.parameters)}

    return PopulationModel(
        name=f"{pm.name}_latent",
        structural=structural,
        theta=pm.theta,
        parameters=parameters,
        random_effects=latent,
        omega=np.eye(d),
        residual=pm.residual,
        covariates=covariates,
        fixed=tuple(pm.theta),
        theta_units=pm.theta_units,
        citation=f"latent hybrid twin over {pm.name}: {pm.citation}",
        notes=(
            "Random effects latent_k = exp(ε_k), ε ~ N(0, I): the standardised latent "
            "variable of the trained model (z = μ_p(x) + σ_p(x) ε)."
        ),
        reported=reported,
    )
