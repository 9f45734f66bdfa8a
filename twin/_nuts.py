"""NUTS for patient twins: one compiled sampler per configuration (NumPyro's HMC kernel
under our own scan), for one twin or many (:func:`fit_nuts_many`)."""

from __future__ import annotations

import math
import time as _time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._clinical import PatientTwinError
from ._compiled import _engine
from ._posterior import TwinPosterior

if TYPE_CHECKING:
    from ._compiled import _Engine
    from ._patient import PatientTwin

__all__ = ["fit_nuts_many"]


def fit_nuts_many(
    twins: Sequence[PatientTwin],
    *,
    prior_weight: float = 1.0,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    seed: int = 0,
    block: int = 128,
) -> list[TwinPosterior]:
    """NUTS posteriors of many twins of one drug model, sampled together.

    For linear models every chain of every patient is one lane of a single compiled
    program (NumPyro's NUTS kernel, vectorised over patients and chains): for a cohort
    this costs about as much as a few single fits. So are patients whose histories the
    semilinear engine takes (warfarin: boluses and observations on a grid of whole
    seconds), in groups of equal padded sizes. Other ODE histories are sampled patient
    by patient with one compiled program (a vectorised ODE event walk runs both sides of
    its data-dependent branches). Each chain adapts its own step size and dense mass
    matrix, as :meth:`PatientTwin.fit` does with ``"nuts"``, and starts near the
    patient's MAP.

    Parameters
    ----------
    twins
        Twins of the same drug model (with observations).
    prior_weight, num_warmup, num_samples, num_chains
        As in :meth:`PatientTwin.fit`.
    seed
        Patient ``i``'s chains use ``fold_in(key(seed), i)`` (``fit("nuts", seed=s)``
        uses ``key(s)``).
    block
        Patients per compiled call of a linear model (memory bound; the last block is
        padded).

    Returns
    -------
    list[TwinPosterior]
        One ``"nuts"`` posterior per twin, in order, with divergences, R-hat and ESS.

    Examples
    --------
    >>> from twinsim.twin import Observation, PatientTwin, fit_nuts_many
    >>> twin = PatientTwin.create("vancomycin", {"weight": 80.0, "crcl": 60.0, "dialysis": 0})
    >>> twin = twin.with_doses(twin.dose(0.0, 1000.0))
    >>> twins = [twin.with_observations(Observation(11.5, c)) for c in (7.0, 9.0, 12.0)]
    >>> posts = fit_nuts_many(twins, num_warmup=100, num_samples=100)
    >>> [p.samples.shape for p in posts]
    [(200, 3), (200, 3), (200, 3)]
    """
    twins = list(twins)
    if not twins:
        return []
    model = twins[0].model
    if any(t.model is not model for t in twins):
        raise PatientTwinError("`twins` must all use the same drug model; fit each model apart")
    for name, v in (
        ("num_warmup", num_warmup),
        ("num_samples", num_samples),
        ("num_chains", num_chains),
        ("block", block),
    ):
        if int(v) < 1:
            raise PatientTwinError(f"`{name}` must be ≥ 1, got {v!r}")
    untested = [i for i, t in enumerate(twins) if t.untested_genes]
    if untested:
        raise PatientTwinError(
            f"twins {untested[:5]} have untested genes {twins[untested[0]].untested_genes}; "
            "fit them one by one with twin.fit('nuts') (a mixture over genotypes), or give "
            "the genotypes"
        )
    engine = _engine(model, steady_state=any(t._has_steady_state for t in twins))
    start = _time.perf_counter()
    modes = [t.fit("map", prior_weight=prior_weight) for t in twins]
    root = jax.random.PRNGKey(seed)
    sampled = _sample_nuts(
        engine, [t._batch(prior_weight) for t in twins], [m.eta_mode for m in modes],
        [jax.random.fold_in(root, i) for i in range(len(twins))], prior_weight,
        num_warmup, num_samples, num_chains, block=block,
    )  # fmt: skip
    seconds = (_time.perf_counter() - start) / len(twins)
    return [
        TwinPosterior(
            post.twin,
            "nuts",
            prior_weight,
            post.eta_mode,
            post.covariance,
            draws,
            {**post.diagnostics, **extra, "seconds": seconds},
        )
        for post, (draws, extra) in zip(modes, sampled, strict=True)
    ]


def _sample_nuts(
    engine: _Engine,
    batches: Sequence[Mapping[str, Any]],
    eta_modes: Sequence[np.ndarray],
    keys: Sequence[Array],
    prior_weight: float,
    num_warmup: int,
    num_samples: int,
    num_chains: int,
    *,
    block: int = 128,
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """NUTS draws of η ``[chain × draw, R]`` and diagnostics for each patient.

    Patient ``i``'s chains start at its mode in whitened coordinates, each jittered by
    0.1 SD (``keys[i]``), and sample with ``split(fold_in(keys[i], 1), num_chains)``.
    Linear models run patients of equal data shapes together, in blocks of ``block``
    (the last padded); ODE models one patient per call (see :meth:`_Engine.nuts`).
    """
    chol = np.asarray(engine.chol)
    starts, chain_keys = [], []  # per patient: [chain, R] and [chain, key]
    for key, eta in zip(keys, eta_modes, strict=True):
        z_mode = np.linalg.solve(chol, eta) * math.sqrt(prior_weight)
        jitter = np.asarray(jax.random.normal(key, (num_chains, z_mode.size)))
        starts.append(z_mode[None] + 0.1 * jitter)
        chain_keys.append(np.asarray(jax.random.split(jax.random.fold_in(key, 1), num_chains)))
    # patients of a linear model, or all on the semilinear engine, of equal data shapes
    # run together, in blocks of one size (each group's first); otherwise one patient per
    # call, without a patient axis
    semilinear = all(b.get("sample_grid") is not None for b in batches)
    many = (engine.linear or semilinear) and len(batches) > 1
    calls: list[tuple[list[int], int]] = [([i], 1) for i in range(len(batches))]
    if many:
        groups: dict[tuple, list[int]] = {}
        for i, b in enumerate(batches):
            shape = (b["times"].shape[0], b["events"].n_events, b.get("grid") is None)
            groups.setdefault(shape, []).append(i)
        calls = [
            (members[lo : lo + block], min(block, len(members)))
            for members in groups.values()
            for lo in range(0, len(members), block)
        ]
    run = engine.nuts(num_warmup, num_samples, many=many, vectorised=semilinear)
    out: list[Any] = [None] * len(batches)
    for chunk, size in calls:
        padded = chunk + [chunk[-1]] * (size - len(chunk))
        try:
            if many:
                stacked = run(
                    np.stack([chain_keys[i] for i in padded]),
                    np.stack([starts[i] for i in padded]),
                    jax.tree.map(lambda *xs: jnp.stack(xs), *[batches[i] for i in padded]),
                )
            else:
                (i,) = chunk
                stacked = [np.asarray(a)[None] for a in run(chain_keys[i], starts[i], batches[i])]
        except RuntimeError as error:  # a runtime check raised inside the compiled sampler
            raise PatientTwinError(
                f"NUTS stopped for the {engine.model.name!r} twin(s) at position(s) {chunk} "
                f"of this call: {str(error).splitlines()[-1][:200]}. fit('laplace') gives "
                "the posterior's normal approximation meanwhile."
            ) from None
        z_all, diverging_all, steps_all = (np.asarray(a) for a in stacked)
        result = zip(z_all, diverging_all, steps_all, strict=False)  # padding dropped
        for i, (z, diverging, steps) in zip(chunk, result, strict=False):
            eta = z @ chol.T / math.sqrt(prior_weight)  # [chain, draw, R]
            extra = {
                "divergences": int(np.sum(diverging)),
                "mean_leapfrog_steps": float(np.mean(steps)),
                "num_chains": int(num_chains),
                "num_samples": int(num_samples),
            }
            extra.update(_chain_diagnostics(eta))
            out[i] = (eta.reshape(-1, eta.shape[-1]), extra)
    return out


def _chain_diagnostics(eta: np.ndarray) -> dict[str, float]:
    """Split R-hat and ESS (worst over η) of draws ``[chain, draw, R]``; needs two chains."""
    if eta.shape[0] < 2 or eta.shape[1] < 4:
        return {}
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    return {
        "max_r_hat": float(np.max(split_gelman_rubin(eta))),
        "min_ess": float(np.min(effective_sample_size(eta))),
    }
