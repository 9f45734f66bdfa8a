"""The drug library: published population models, ready to simulate.

=============  ==============================================  ===========================
name           model                                            covariates
=============  ==============================================  ===========================
theophylline   1-cmt oral (Pinheiro & Bates 2000 fit of the     weight, smoking,
               Boeckmann data) with tobacco induction of CL     smoking_quit_time
               that wears off after quitting (Powell 1977,
               Faber & Fuhr 2004)
warfarin       S-warfarin 2-cmt oral PK and INR through two     age, cyp2c9, vkorc1
               transit chains (Hamberg et al. 2007)
vancomycin     2-cmt IV (Goti et al. 2018)                      weight, crcl, dialysis
=============  ==============================================  ===========================

Each entry is a :class:`~twinsim.priors.PopulationModel` carrying its citation, fixed
effects with units, the variability (variances of η on the log scale), the residual error
and the covariate ranges it was estimated on (simulating outside them warns
:class:`~twinsim.priors.CovariateRangeWarning`). :func:`drug_metadata` gives the facts
that are not numerics: route and bioavailability, the therapeutic target, how the
published variability was reported (variance or CV), the population, and which numbers
are primary, secondary or assumed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from ._population import PopulationModel
from ._theophylline import THEOPHYLLINE_METADATA, theophylline_model
from ._vancomycin import VANCOMYCIN_METADATA, vancomycin_model
from ._warfarin import WARFARIN_METADATA, warfarin_model

__all__ = ["DRUG_LIBRARY", "DrugLibraryError", "drug_metadata", "drug_model"]


class DrugLibraryError(ValueError):
    """A drug is not in the library, or an option does not apply to it."""


def _frozen(value: Any) -> Any:
    """Read-only copy of nested dicts (metadata must not change under its users)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


_BUILDERS: Mapping[str, tuple[Callable[..., PopulationModel], Mapping[str, Any]]] = {
    "theophylline": (theophylline_model, THEOPHYLLINE_METADATA),
    "warfarin": (warfarin_model, WARFARIN_METADATA),
    "vancomycin": (vancomycin_model, VANCOMYCIN_METADATA),
}

#: Non-numeric facts of each drug model (dosing, therapeutic target, sources), read-only.
DRUG_METADATA: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {name: _frozen(metadata) for name, (_, metadata) in _BUILDERS.items()}
)


def _summary(metadata: Mapping[str, Any]) -> str:
    """One paragraph of the metadata for ``PopulationModel.notes`` (provenance records)."""
    target, dosing = metadata["therapeutic_target"], metadata["dosing"]
    return (
        f"{metadata['drug']}: route {dosing['route']}, bioavailability "
        f"{dosing['bioavailability']:g}, doses in {dosing['dose_unit']}; "
        f"therapeutic target {target['metric']} {target['low']:g}-{target['high']:g} "
        f"{target['unit']}; IIV: {metadata['iiv_convention']}; residual: "
        f"{metadata['residual']}; population: {metadata['population']}"
    )


def _known() -> str:
    return ", ".join(repr(name) for name in _BUILDERS)


def _key(name: str) -> str:
    if not isinstance(name, str):
        raise DrugLibraryError(
            f"`name` must be a drug name (str), got {type(name).__name__} {name!r}; "
            f"known drugs: {_known()}"
        )
    key = name.strip().lower()
    if key not in _BUILDERS:
        close = difflib.get_close_matches(key, list(_BUILDERS), n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        raise DrugLibraryError(
            f"drug {name!r} is not in the library{hint}; known drugs: {_known()}"
        )
    return key


def drug_model(name: str, **options: Any) -> PopulationModel:
    """The population model of a drug in the library.

    Parameters
    ----------
    name
        Drug name, case-insensitive: ``"theophylline"``, ``"warfarin"``, ``"vancomycin"``.
    **options
        Options of the drug's builder, e.g. ``cessation=False`` for theophylline (the
        linear model for cohorts nobody in which quits smoking during the simulation).

    Returns
    -------
    PopulationModel
        With the drug's citation, and a summary of :func:`drug_metadata` as ``notes``.

    Raises
    ------
    DrugLibraryError
        For an unknown drug (the message lists the known ones) or an option the drug's
        builder does not take.

    Examples
    --------
    >>> drug_model("Vancomycin").covariate_names
    ('weight', 'crcl', 'dialysis')
    >>> drug_model("theophylline", cessation=False).structural.linear
    True
    """
    key = _key(name)
    builder, metadata = _BUILDERS[key]
    try:
        model = builder(**options)
    except TypeError as error:
        raise DrugLibraryError(
            f"drug {key!r} does not take the option(s) {sorted(options)}: {error}; see "
            f"help(twinsim.priors.{builder.__name__})"
        ) from None
    return model.replace(notes=_summary(metadata))


def drug_metadata(name: str) -> Mapping[str, Any]:
    """Dosing facts, therapeutic target and sources of a drug model (read-only mapping).

    Keys: ``drug``, ``dosing`` (``route``, ``bioavailability``, ...),
    ``therapeutic_target`` (``output``, ``metric`` — ``"concentration"``, ``"auc24"`` or
    ``"inr"`` —, ``low``, ``high``, ``unit``, ``source``), ``iiv_convention``,
    ``residual``, ``population``, ``sources`` (which numbers are primary, secondary or
    assumed) and, where there are any, ``assumptions``.

    Raises
    ------
    DrugLibraryError
        For an unknown drug (the message lists the known ones).

    Examples
    --------
    >>> target = drug_metadata("vancomycin")["therapeutic_target"]
    >>> target["metric"], target["low"], target["high"], target["unit"]
    ('auc24', 400.0, 600.0, 'mg*h/L')
    """
    return DRUG_METADATA[_key(name)]


#: Every drug model with its default options, by name.
DRUG_LIBRARY: Mapping[str, PopulationModel] = MappingProxyType(
    {name: drug_model(name) for name in _BUILDERS}
)
