"""Training workflow of the latent twin: a NONMEM data set in, a model folder out.

``MODEL_DIR`` holds ``model.json`` (settings, covariate transform, provenance: data hash,
prior, training settings, history, package versions), ``params/`` (the networks'
parameters, an orbax checkpoint) and ``checkpoints/`` (the run's state: rerunning the
same command after a kill resumes where it stopped).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..priors import PopulationModel, drug_model
from ..twin import (
    CovariateFeatures,
    LatentConfig,
    LatentData,
    LatentModel,
    LatentModelError,
    TrainingResult,
    TrainingSettings,
    train_latent,
)
from ._fit import fit_data
from ._nonmem import read_nonmem
from ._provenance import package_versions, write_text_atomic

__all__ = [
    "TrainedModel",
    "is_model_folder",
    "load_latent_model",
    "save_latent_model",
    "train_from_nonmem",
    "trained_model",
]

_VERSIONS = ("twinsim", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "diffrax", "numpy")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (the data set a model was trained on)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_latent_model(
    model: LatentModel, directory: str | os.PathLike[str], provenance: dict[str, Any] | None = None
) -> Path:
    """Write a model folder (``model.json`` + orbax ``params/``); returns ``model.json``.

    The parameters are float64 arrays written by orbax, so :func:`load_latent_model` gives
    them back bit for bit.

    Examples
    --------
    >>> import tempfile
    >>> from twinsim.priors import vancomycin_model
    >>> f = CovariateFeatures.fit({"weight": [60.0, 90.0], "crcl": [50.0, 110.0], "dialysis": [0, 0]})
    >>> m = LatentModel.create(vancomycin_model(), f, seed=0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = save_latent_model(m, d)
    ...     back = load_latent_model(d)
    >>> back.features == m.features
    True
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    settings, arrays = model.to_record()
    record = dict(settings, provenance=dict(provenance or {}))
    record["provenance"].setdefault("versions", package_versions(_VERSIONS))
    record["provenance"].setdefault(
        "created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    )
    params_dir = directory / "params"
    # orbax writes into a temporary folder and renames it: a kill leaves the old one
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(params_dir, arrays, force=True)
    checkpointer.wait_until_finished()
    record["provenance"]["params_sha256"] = _arrays_hash(arrays)
    return write_text_atomic(directory / "model.json", json.dumps(record, indent=2, default=str))


def _arrays_hash(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key], dtype=np.float64).tobytes())
    return digest.hexdigest()


def load_latent_model(directory: str | os.PathLike[str]) -> LatentModel:
    """Load a model folder written by :func:`save_latent_model` (or ``twinsim train``).

    Raises
    ------
    LatentModelError
        When the folder has no ``model.json``/``params`` or the parameters do not match
        their recorded hash.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    path = directory / "model.json"
    if not path.is_file() or not (directory / "params").is_dir():
        raise LatentModelError(
            f"`{directory}` is not a latent model folder (needs model.json and params/); "
            "write one with `twinsim train DATA.csv --prior DRUG --out DIR`"
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    arrays = ocp.StandardCheckpointer().restore(directory / "params")
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    expected = record.get("provenance", {}).get("params_sha256")
    if expected is not None and _arrays_hash(arrays) != expected:
        raise LatentModelError(
            f"the parameters in `{directory / 'params'}` do not match the hash in model.json "
            "(a damaged or mixed-up folder); retrain or restore it"
        )
    return LatentModel.from_record(record, arrays)


def is_model_folder(path: Any) -> bool:
    """Whether ``path`` names a folder holding a saved latent model (``model.json``)."""
    if not isinstance(path, str | os.PathLike) or (isinstance(path, str) and not path.strip()):
        return False
    return (Path(path).expanduser() / "model.json").is_file()


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A saved latent model loaded from its folder, with what identifies it.

    One instance per folder and version of ``model.json`` (:func:`trained_model` caches
    it), so every what-if, dashboard request and cohort run on the same folder shares one
    :class:`~twinsim.twin.LatentModel` and hence one set of compiled programs.

    Attributes
    ----------
    folder
        The model folder (absolute).
    model
        The :class:`~twinsim.twin.LatentModel`.
    prior
        The drug of its mechanistic prior (``"vancomycin"``): the twin's targets, label
        limits and safety thresholds are that drug's.
    params_sha256
        Hash of the network parameters (recorded in ``model.json`` when saved).
    model_json_sha256
        Hash of the ``model.json`` file (settings, covariate transform, provenance).
    created
        When it was saved (UTC, ISO 8601), if recorded.
    """

    folder: Path
    model: LatentModel
    prior: str
    params_sha256: str
    model_json_sha256: str
    created: str | None = None

    @property
    def name(self) -> str:
        """The folder's name (how pages and reports call the model)."""
        return self.folder.name

    def population_model(self) -> PopulationModel:
        """The latent model as a :class:`~twinsim.priors.PopulationModel` (one per model)."""
        return self.model.population_model()

    def describe(self) -> str:
        """One line: ``trained latent model NAME (prior DRUG, parameters sha256 …)``.

        Examples
        --------
        >>> from pathlib import Path
        >>> TrainedModel(Path("/m/vanco-icu"), None, "vancomycin", "ab" * 32, "cd" * 32).describe()
        'trained latent model vanco-icu (prior vancomycin, parameters sha256 abababababab)'
        """
        return (
            f"trained latent model {self.name} (prior {self.prior}, parameters sha256 "
            f"{self.params_sha256[:12]})"
        )

    def record(self) -> dict[str, Any]:
        """What a provenance record says of the model."""
        return {
            "kind": "latent",
            "folder": str(self.folder),
            "prior": self.prior,
            "params_sha256": self.params_sha256,
            "model_json_sha256": self.model_json_sha256,
            "created": self.created,
            "latent_dim": self.model.config.latent_dim,
        }


def trained_model(directory: str | os.PathLike[str]) -> TrainedModel:
    """The model folder ``directory`` loaded (cached while its ``model.json`` is unchanged).

    Raises
    ------
    LatentModelError
        When the folder is not a saved latent model or its parameters are damaged
        (:func:`load_latent_model`).
    """
    folder = Path(directory).expanduser().absolute()
    try:
        stat = (folder / "model.json").stat()
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = None
    return _trained_model(folder, version)


@functools.lru_cache(maxsize=8)
def _trained_model(folder: Path, version: Any) -> TrainedModel:
    model = load_latent_model(folder)
    text = (folder / "model.json").read_bytes()
    provenance = json.loads(text).get("provenance", {})
    return TrainedModel(
        folder=folder,
        model=model,
        prior=model.population.name.lower(),
        params_sha256=provenance.get("params_sha256") or _arrays_hash(model.to_record()[1]),
        model_json_sha256=hashlib.sha256(text).hexdigest(),
        created=provenance.get("created"),
    )


def train_from_nonmem(
    data_file: str | os.PathLike[str],
    prior: str,
    out: str | os.PathLike[str],
    *,
    settings: TrainingSettings | None = None,
    config: LatentConfig | None = None,
    lloq: float | None = None,
    command: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[TrainingResult, Path]:
    """Train a latent model on a NONMEM-layout CSV with covariate columns.

    Parameters
    ----------
    data_file
        The data set (``ID, TIME, AMT, RATE, DV, MDV, EVID, CMT`` and covariates such as
        ``WT``, ``CRCL``, ``SEX``, ``AGE``, genotype columns named as in the standard
        covariate table).
    prior
        A drug of the library (``"vancomycin"``, ``"theophylline"``, ``"warfarin"``).
    out
        The model folder; an unfinished run's checkpoints there are resumed.
    settings, config
        Training and model settings (defaults :class:`TrainingSettings`,
        :class:`LatentConfig`).
    lloq
        Limit of quantification of the levels (censored below, M3).
    command
        The command line, for provenance.
    progress
        Per-step callback (see :func:`~twinsim.twin.train_latent`).

    Returns
    -------
    (TrainingResult, Path)
        The result and the written ``model.json``.
    """
    settings = settings or TrainingSettings()
    config = config or LatentConfig()
    population = drug_model(prior)
    nonmem = read_nonmem(data_file)
    observations = fit_data(nonmem, population, lloq=lloq)
    features = CovariateFeatures.fit(dict(observations.covariates))
    model = LatentModel.create(population, features, config, seed=settings.seed)
    data = LatentData.from_observation_data(model, observations)
    out = Path(out)
    result = train_latent(
        model, data, settings, checkpoint_dir=out / "checkpoints", progress=progress
    )
    provenance = {
        "data_file": str(data_file),
        "data_sha256": file_sha256(data_file),
        "n_subjects": data.n_subjects,
        "n_observations": int(data.mask.sum()),
        "prior": {"name": population.name, "citation": population.citation},
        "settings": settings.to_dict(),
        "lloq": lloq,
        "history": result.history,
        "stopped_early": result.stopped_early,
        "validation_ids": [str(i) for i in result.validation_ids],
        "command": command if command is not None else shlex.join(sys.argv),
    }
    return result, save_latent_model(result.model, out, provenance)
