"""Warfarin subjects shared by the split and semilinear engine tests (importable like
``closed_form``: ``conftest.py`` puts this folder on ``sys.path``)."""

from __future__ import annotations

import numpy as np

#: The warfarin patient of the split and semilinear engine tests.
WARFARIN_COVARIATES = {"age": 62.0, "weight": 78.0, "female": 1, "cyp2c9": "*1/*3", "vkorc1": "A/A"}


def warfarin_subjects(n: int, seed: int):
    """Warfarin's structural model and ``n`` subjects' parameters: the typical values for
    :data:`WARFARIN_COVARIATES`, each scaled by a log-normal factor (SD 0.3)."""
    from twinsim.priors import warfarin_model

    pm = warfarin_model()
    typical = np.asarray(pm.typical_parameters(WARFARIN_COVARIATES))[0]
    rng = np.random.default_rng(seed)
    return pm.structural, typical * np.exp(0.3 * rng.normal(size=(n, typical.size)))
