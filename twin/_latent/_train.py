"""Training a latent model: the ELBO with optax on fixed-shape mini-batches, a validation
split with early stopping and orbax checkpoints that resume after a kill.

Reproducibility: the split, each epoch's batch order and each step's draw of z derive
from ``(seed, epoch)`` and ``(seed, step)`` only, and a checkpoint holds everything the
loop carries (parameters, optimiser state, best parameters, position, history), so a run
killed at any point and resumed ends with exactly the parameters of an uninterrupted run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._data import LatentData
from ._features import LatentModelError
from ._model import LatentModel

__all__ = ["TrainingResult", "TrainingSettings", "train_latent"]


@dataclass(frozen=True)
class TrainingSettings:
    """Settings of :func:`train_latent` (saved with the model).

    Parameters
    ----------
    epochs
        Most passes over the training subjects.
    batch_size
        Subjects per step (the last batch of an epoch is padded with zero-weight rows).
    learning_rate
        Adam's step size.
    validation_fraction
        Share of subjects held out for early stopping (0: none, train all epochs).
    patience
        Epochs without a better validation loss before stopping.
    checkpoint_every
        Steps between checkpoints (and one at every epoch end).
    seed
        Root seed of the split, the batch order and the draws of z.
    weight_decay
        Decoupled weight decay (AdamW) of the *model's* networks — the prior's mean, the
        covariate shift ``b(x)``, the ODE correction and the neural decoder's readout; never
        the encoder (inference, not model) nor ``A``. Each step pulls those weights towards
        0 by ``learning_rate · weight_decay · w``, i.e. back to the published model, so a
        direction the data do not consistently push (a covariate "effect" fitted to the
        noise of a few hundred patients) decays while a consistent one stays. Measured on
        1,000 virtual patients of the published model (``benchmarks/latent_study.py``,
        batch 16, 30 epochs; the truth is a shift of 0 for everyone): the learned shift of
        log CL over 400 new patients had mean −0.10 and SD 0.10 without decay, −0.016 and
        0.035 with 0.3, −0.003 and 0.009 with 1.0; but 1.0 also shrank a real effect (a
        hidden ×1.6 clearance in CYP3A5 expressers: ratio of the expressers' to the
        non-expressers' mean learned shift ×1.22 after 30 epochs, ×1.27 with 0.3 or 0.1; the
        study's 60-epoch model with 0.3 learned ×1.48 for ``*1/*1`` vs ``*3/*3``).
    """

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 3e-3
    validation_fraction: float = 0.2
    patience: int = 5
    checkpoint_every: int = 20
    seed: int = 0
    weight_decay: float = 0.3

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "checkpoint_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise LatentModelError(
                    f"`TrainingSettings.{name}` must be an integer ≥ 1, got {value!r}"
                )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise LatentModelError(f"`learning_rate` must be > 0, got {self.learning_rate!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise LatentModelError(
                f"`TrainingSettings.weight_decay` must be ≥ 0, got {self.weight_decay!r}; use 0 "
                "to turn it off"
            )
        if not 0 <= self.validation_fraction < 1:
            raise LatentModelError(
                f"`validation_fraction` must be in [0, 1), got {self.validation_fraction!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TrainingResult:
    """The trained model (best validation parameters) and the loss history per epoch."""

    model: LatentModel
    history: list[dict[str, float]]
    stopped_early: bool
    train_ids: tuple
    validation_ids: tuple


def _split(n: int, settings: TrainingSettings) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng([settings.seed, 0]).permutation(n)
    n_val = round(settings.validation_fraction * n)
    if settings.validation_fraction > 0 and n - n_val < 1:
        raise LatentModelError(f"{n} subjects leave none to train on after the validation split")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _batches(index: np.ndarray, size: int, rng: np.random.Generator | None):
    """Fixed-size batches ``(rows, weights)``; the last padded with weight-0 repeats."""
    order = index if rng is None else rng.permutation(index)
    out = []
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        weights = np.ones(size)
        if len(rows) < size:
            weights[len(rows) :] = 0.0
            rows = np.concatenate([rows, np.full(size - len(rows), order[0])])
        out.append((rows, weights))
    return out


class _Loop:
    """The compiled pieces, built once per (model, settings)."""

    def __init__(self, model: LatentModel, settings: TrainingSettings):
        self.model = model
        self.optimizer = optax.adamw(
            settings.learning_rate, weight_decay=settings.weight_decay, mask=_decayed
        )

        def loss(params, batch, weights, key):
            elbo = model.elbo(params, batch, key)
            # a failed solve for one subject must not poison the batch: it scores -inf
            elbo = jnp.where(jnp.isfinite(elbo), elbo, -1e6)
            return -jnp.sum(weights * elbo) / jnp.maximum(jnp.sum(weights), 1.0)

        grad = jax.value_and_grad(loss)

        def step(params, opt_state, batch, weights, key):
            value, g = grad(params, batch, weights, key)
            updates, opt_state = self.optimizer.update(g, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        self.step = jax.jit(step)
        # the validation loss takes the value-and-gradient program and drops the
        # gradient: a value-only program would be a second (slow) ODE compilation
        self.value = jax.jit(grad)


# the networks that are part of the generative model (see TrainingSettings.weight_decay)
_MODEL_NETWORKS = frozenset({"prior", "covariate", "correction", "readout"})


def _decayed(params):
    """``True`` for the weights that weight decay pulls back to the published model."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[0], "key", None) in _MODEL_NETWORKS, params
    )


_LOOPS: dict[tuple, _Loop] = {}


def _loop(model: LatentModel, settings: TrainingSettings) -> _Loop:
    """The compiled step of models of one structure (a new model of the same drug,
    settings and covariate columns reuses it: its feature scaling is in the data)."""
    pm = model.population
    key = (pm.name, pm.structural.name, tuple(np.asarray(pm.theta_vector()).tolist()),
           model.config, model.features.names, settings.learning_rate,
           settings.weight_decay)  # fmt: skip
    if key not in _LOOPS:
        if len(_LOOPS) >= 4:
            _LOOPS.pop(next(iter(_LOOPS)))
        _LOOPS[key] = _Loop(model, settings)
    return _LOOPS[key]


def _leaves(tree) -> dict[str, np.ndarray]:
    """A pytree's leaves under zero-padded keys (orbax keeps dicts; the order survives)."""
    return {f"{i:05d}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(tree))}


def _unleaves(template, stored: dict[str, Any]):
    leaves = [stored[k] for k in sorted(stored)]
    ref = jax.tree.leaves(template)
    if len(leaves) != len(ref):
        raise LatentModelError(
            f"the checkpoint holds {len(leaves)} arrays, this model and optimiser {len(ref)}: it "
            "was written by another model or settings; use a new `checkpoint_dir`"
        )
    leaves = [jnp.asarray(v, dtype=jnp.asarray(r).dtype) for v, r in zip(leaves, ref, strict=True)]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def train_latent(
    model: LatentModel,
    data: LatentData,
    settings: TrainingSettings | None = None,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainingResult:
    """Fit a latent model's networks to data by maximising the ELBO.

    Parameters
    ----------
    model
        The model to start from (usually :meth:`LatentModel.create`).
    data
        The subjects (:meth:`LatentData.build`).
    settings
        :class:`TrainingSettings`.
    checkpoint_dir
        Where orbax keeps the run's state; a run finding a checkpoint there resumes from
        it (same settings and data required), ending exactly where an uninterrupted run
        would.
    progress
        Called after every step with ``{"epoch", "step", "steps_per_epoch", "loss",
        "validation", "best"}`` (the command line draws a progress bar from it).

    Returns
    -------
    TrainingResult
        The model with the parameters of the best validation loss.
    """
    import orbax.checkpoint as ocp

    settings = settings or TrainingSettings()
    train_idx, val_idx = _split(data.n_subjects, settings)
    loop = _loop(model, settings)
    params = model.params
    opt_state = loop.optimizer.init(params)
    best = params
    meta = dict(epoch=0, batch=0, step=0, best_val=np.inf, bad=0, stopped=0)
    history: list[dict[str, float]] = []
    manager = None
    if checkpoint_dir is not None:
        manager = ocp.CheckpointManager(
            Path(checkpoint_dir).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
        )
        latest = manager.latest_step()
        if latest is not None:
            restored = manager.restore(latest, args=ocp.args.StandardRestore())
            params, opt_state, best = _unleaves((params, opt_state, best), restored["state"])
            meta = {k: np.asarray(restored["meta"][k]).item() for k in meta}
            history = [
                dict(zip(("epoch", "train", "validation"), map(float, row), strict=True))
                for row in np.asarray(restored["history"]).reshape(-1, 3)[1:]
            ]

    def save() -> None:
        if manager is None:
            return
        tree: dict[str, Any] = {
            "state": _leaves((params, opt_state, best)),
            "meta": {k: np.asarray(v) for k, v in meta.items()},
        }
        # a leading row of NaN: orbax refuses zero-size arrays (no epoch finished yet)
        rows = [[math.nan] * 3] + [[h["epoch"], h["train"], h["validation"]] for h in history]
        tree["history"] = np.array(rows, float)
        manager.save(int(meta["step"]), args=ocp.args.StandardSave(tree), force=True)
        manager.wait_until_finished()

    root = jax.random.key(settings.seed)
    val_batches = _batches(val_idx, settings.batch_size, None) if len(val_idx) else []
    while meta["epoch"] < settings.epochs and not meta["stopped"]:
        epoch = int(meta["epoch"])
        batches = _batches(
            train_idx, settings.batch_size, np.random.default_rng([settings.seed, 1, epoch])
        )
        for b in range(int(meta["batch"]), len(batches)):
            rows, weights = batches[b]
            key = jax.random.fold_in(root, int(meta["step"]))
            params, opt_state, value = loop.step(params, opt_state, data.batch(rows),
                                                 jnp.asarray(weights), key)  # fmt: skip
            meta["step"] += 1
            meta["batch"] = b + 1
            if progress is not None:
                progress(dict(epoch=epoch, step=b + 1, steps_per_epoch=len(batches),
                              loss=float(value), best=float(meta["best_val"])))  # fmt: skip
            if meta["step"] % settings.checkpoint_every == 0 and meta["batch"] < len(batches):
                save()
        # the epoch's training loss: the mean of the ELBO at the epoch's end (not the
        # running mean, which a resumed epoch would only partly see)
        train_loss = _mean_loss(
            loop, params, data, _batches(train_idx, settings.batch_size, None), root
        )
        val_loss = _mean_loss(loop, params, data, val_batches, root) if val_batches else train_loss
        history.append(dict(epoch=float(epoch), train=train_loss, validation=val_loss))
        if val_loss < meta["best_val"]:
            meta["best_val"], meta["bad"], best = val_loss, 0, params
        else:
            meta["bad"] += 1
            if meta["bad"] >= settings.patience:
                meta["stopped"] = 1
        meta["epoch"], meta["batch"] = epoch + 1, 0
        if progress is not None:
            progress(dict(epoch=epoch, step=len(batches), steps_per_epoch=len(batches),
                          loss=train_loss, validation=val_loss, best=float(meta["best_val"])))  # fmt: skip
        save()
    return TrainingResult(
        model=model.with_params(best),
        history=history,
        stopped_early=bool(meta["stopped"]),
        train_ids=tuple(data.ids[i] for i in train_idx),
        validation_ids=tuple(data.ids[i] for i in val_idx),
    )


def _mean_loss(loop: _Loop, params, data: LatentData, batches, root) -> float:
    """Mean negative ELBO per subject, with fixed draws (comparable across epochs)."""
    total, count = 0.0, 0.0
    key = jax.random.fold_in(root, 2**31 - 1)  # a stream no training step uses
    for rows, weights in batches:
        value, _ = loop.value(params, data.batch(rows), jnp.asarray(weights), key)
        total += float(value) * float(weights.sum())
        count += float(weights.sum())
    return total / max(count, 1.0)
