"""Virtual-population settings shared by the specs that draw subjects (trials, cohorts).

The settings are those of :class:`~twinsim.twin.VirtualPopulationConfig` that a spec file
gives (ancestry mix, ages, share of women, comedications, dialysis, alleles, inclusion
criteria); :meth:`PopulationSpec.config` makes the config the generator draws from.
"""

from __future__ import annotations

import zlib

import numpy as np
from pydantic import Field, model_validator

from ..priors import CovariateError
from ..twin import VirtualPopulationConfig
from ._regimen import SpecModel

__all__ = ["PopulationSpec", "sub_seed"]


def sub_seed(seed: int, stream: str) -> int:
    """A seed for one kind of draw (``stream``), a function of the root seed and the name.

    Examples
    --------
    >>> sub_seed(0, "population") == sub_seed(0, "population") != sub_seed(0, "parameters")
    True
    """
    state = np.random.SeedSequence([int(seed), zlib.crc32(stream.encode())]).generate_state(1)
    return int(state[0])


class PopulationSpec(SpecModel):
    """Who is screened: :class:`~twinsim.twin.VirtualPopulationConfig` settings and criteria.

    ``criteria`` are inclusion/exclusion expressions over the covariate columns
    (``"age >= 18 and crcl >= 30"``, ``'cyp2c9 != "*3/*3"'``); all must hold.
    """

    ancestry: dict[str, float] = Field(default_factory=lambda: {"european": 1.0})
    age_range: tuple[float, float] = (18.0, 85.0)
    age_mean: float | None = None
    age_sd: float | None = None
    female_fraction: float = 0.5
    comedications: dict[str, float] = Field(default_factory=dict)
    dialysis: float = 0.0
    alleles: dict[str, list[str]] = Field(default_factory=dict)
    criteria: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> PopulationSpec:
        try:
            self.config()
        except CovariateError as error:
            raise ValueError(
                f"{error} (a virtual-population setting; see twinsim.twin.VirtualPopulationConfig)"
            ) from None
        return self

    def config(self, drug: str | None = None) -> VirtualPopulationConfig:
        """The :class:`~twinsim.twin.VirtualPopulationConfig` of these settings.

        For warfarin (Hamberg 2007 knows CYP2C9 ``*1``, ``*2``, ``*3`` only) the other
        CYP2C9 alleles are left out unless ``alleles`` says otherwise.
        """
        alleles = {k: tuple(v) for k, v in self.alleles.items()}
        if drug == "warfarin":
            alleles.setdefault("CYP2C9", ("*1", "*2", "*3"))
        return VirtualPopulationConfig(
            ancestry=self.ancestry,
            age_range=self.age_range,
            age_mean=self.age_mean,
            age_sd=self.age_sd,
            female_fraction=self.female_fraction,
            comedications=self.comedications,
            dialysis=self.dialysis,
            alleles=alleles,
            criteria=tuple(self.criteria),
        )
