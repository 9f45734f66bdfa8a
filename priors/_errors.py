"""Errors shared by the population-model modules (kept apart so that they import no cycle)."""

from __future__ import annotations

from ..simulators._model import ModelDefinitionError

__all__ = ["PopulationModelError"]


class PopulationModelError(ModelDefinitionError):
    """A population model or its inputs are inconsistent (names, shapes, values)."""
