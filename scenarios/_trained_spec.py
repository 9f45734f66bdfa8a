"""The ``model`` field shared by the specs a trained latent model can answer (what-if files,
trial designs): a folder written by ``twinsim train`` whose mechanistic prior is the
spec's ``drug``, or nothing for the library's published model.

The trained-model machinery (flax, orbax) is imported only when a spec names a folder, so
reading a spec of a published model stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import field_validator

from ..priors import PopulationModel, drug_model
from ._regimen import SpecModel

if TYPE_CHECKING:
    from ._train import TrainedModel

__all__ = ["TrainedModelSpec"]


class TrainedModelSpec(SpecModel):
    """A spec with ``drug`` and an optional trained model folder ``model`` (see the module
    doc). Subclasses check the prior against ``drug`` with :meth:`prior_problem`."""

    drug: str
    model: str | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _model_folder(cls, value: Any) -> Any:
        from ._train import model_folder_value

        return model_folder_value(value)

    def prior_problem(self) -> str | None:
        """The ``model`` field's message when the trained model's prior is not ``drug``."""
        from ._train import prior_mismatch

        return prior_mismatch(self.trained_model(), self.drug)

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
        return drug_model(self.drug) if trained is None else trained.population_model()

    def model_text(self) -> str:
        """Which model answers, in words (for reports and the command line)."""
        trained = self.trained_model()
        if trained is None:
            return f"published {self.drug} model: {drug_model(self.drug).citation}"
        return trained.describe()
