"""The ``model`` field shared by the specs a trained latent model can answer (what-if files,
trial designs): a folder written by ``twinsim train`` whose mechanistic prior is the
spec's ``drug``, or nothing for the library's published model.

The trained-model machinery (flax, orbax) is imported only when a spec names a folder, so
reading a spec of a published model stays light.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import field_validator

from ..priors import PopulationModel, drug_model
from ._regimen import SpecModel

if TYPE_CHECKING:
    from ._train import TrainedModel

__all__ = ["TrainedModelSpec", "library_model", "resolve_model_field"]


@functools.lru_cache(maxsize=16)
def library_model(drug: str) -> PopulationModel:
    """The library's population model of ``drug``, one object per drug and process (so
    every run and chunk on it reuses the programs compiled for it)."""
    return drug_model(drug)


def _model_folder_value(value: Any) -> Any:
    """``model`` as given (pydantic "before" validation): a folder holding a saved latent
    model → its absolute path; blank → ``None`` (the library's published model); anything
    else is left to the field's type check. Loads the model (flax) only for a folder.

    Raises
    ------
    ValueError
        Not a model folder, or one that cannot be loaded (the message says how to fix it).
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    from ..twin import LatentModelError
    from ._train import is_model_folder, trained_model

    if not is_model_folder(value):
        raise ValueError(
            f"{value!r} is not a trained model folder (no model.json there); give the folder "
            "written by `twinsim train DATA.csv --prior DRUG --out MODEL_DIR`, or leave "
            "`model` out for the library's published model"
        )
    try:
        trained_model(value)
    except LatentModelError as error:
        raise ValueError(f"{value!r} cannot be loaded: {error}") from None
    return str(Path(value).expanduser().absolute())


def resolve_model_field(data: dict, path: Any, model: Any) -> dict:
    """A spec file's mapping with ``model`` set from the command line (``model``, when
    given) or, when the file's own ``model`` is relative, counted from the file's folder."""
    if model is not None:
        return {**data, "model": os.fspath(model)}
    given = data.get("model")
    if isinstance(given, str) and given.strip():
        folder = Path(given).expanduser()
        if not folder.is_absolute():
            return {**data, "model": str(Path(path).parent / folder)}
    return data


class TrainedModelSpec(SpecModel):
    """A spec with ``drug`` and an optional trained model folder ``model`` (see the module
    doc). Subclasses check the prior against ``drug`` with :meth:`prior_problem`."""

    drug: str
    model: str | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _model_folder(cls, value: Any) -> Any:
        return _model_folder_value(value)

    def prior_problem(self) -> str | None:
        """The ``model`` field's message when the trained model's prior is not ``drug``."""
        trained = self.trained_model()
        if trained is None or trained.prior == self.drug:
            return None
        return (
            f"is the trained model {trained.name!r}, whose mechanistic prior is "
            f"{trained.prior!r}, but `drug` is {self.drug!r}; give a model trained with "
            f"--prior {self.drug}, or set drug: {trained.prior}"
        )

    def trained_model(self) -> TrainedModel | None:
        """The trained latent model of ``model`` (loaded once per folder), or ``None``."""
        if self.model is None:
            return None
        from ._train import trained_model

        return trained_model(self.model)

    def population_model(self) -> PopulationModel:
        """The :class:`~twinsim.priors.PopulationModel` the spec runs on: the drug's from
        the library, or the trained latent model's (:meth:`LatentModel.population_model`)."""
        trained = self.trained_model()
        return library_model(self.drug) if trained is None else trained.population_model()

    def model_text(self) -> str:
        """Which model answers, in words (for reports and the command line)."""
        trained = self.trained_model()
        if trained is None:
            return f"published {self.drug} model: {library_model(self.drug).citation}"
        return trained.describe()
