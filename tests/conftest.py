"""Shared test setup: float64 everywhere, fixed seeds, a small hypothesis profile, and a
compilation cache of the repository's own (never the user's ``~/.cache``)."""

import os
from pathlib import Path

# Before twinsim is imported (it opens the cache at import): the suite's compiled programs
# go to <repo>/.jax-cache (git-ignored), shared by the xdist workers and the subprocesses
# the tests start, and kept between runs (a warm suite is faster). TWINSIM_CACHE_DIR set
# by the caller wins (`off` runs the suite cold).
os.environ.setdefault("TWINSIM_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".jax-cache"))

import jax
import numpy as np
import pytest
from hypothesis import settings

jax.config.update("jax_enable_x64", True)

# Few examples and no deadline: JAX compiles on first call, and the machine is shared.
# derandomize makes every run draw the same examples (a fixed seed for hypothesis).
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("ci")

SEED = 20240601


@pytest.fixture(autouse=True)
def _fixed_numpy_seed():
    """Reset numpy's global RNG before every test so legacy ``np.random`` calls repeat."""
    np.random.seed(SEED)  # noqa: NPY002 (the legacy global RNG is what this fixture pins)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, fixed-seed numpy generator for the test."""
    return np.random.default_rng(SEED)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every XLA CPU executable keeps ~6 memory mappings; a long-lived pytest-xdist worker
    that compiles thousands of programs reaches the kernel's ``vm.max_map_count`` (65,530)
    and the next compilation aborts the process ("Fatal Python error: Aborted" in
    ``backend_compile_and_load``; a worker had 60,745 maps when seen). Clearing the
    caches releases them (300 programs: 2,300 → 525 maps); later modules recompile.
    """
    yield
    import gc

    jax.clear_caches()
    gc.collect()


def _study_csv(cohort, path):
    """Write a cohort of ``twin._latent._study.simulate_patients`` as a NONMEM-layout CSV
    (levels as DV, covariates as columns, WT and CRCL by their NONMEM names)."""
    import pandas as pd

    from twinsim.scenarios import NonmemData, write_nonmem
    from twinsim.twin._latent._study import latent_covariates

    n = len(cohort["doses"])
    rows = [{"ID": i + 1, "TIME": t, "DV": v} for i in range(n)
            for t, v in zip(cohort["times"][i], cohort["observed"][i], strict=True)]  # fmt: skip
    cov = latent_covariates(cohort)
    cov["WT"], cov["CRCL"] = cov.pop("weight"), cov.pop("crcl")
    data = NonmemData.from_doses(cohort["doses"], observations=pd.DataFrame(rows), covariates=cov)
    return write_nonmem(data, path)


@pytest.fixture
def study_csv():
    """``study_csv(cohort, path) -> path``: a simulated latent-study cohort as a NONMEM CSV."""
    return _study_csv


#: Covariates of the tiny latent models the workflow tests make (the feature columns a
#: trained model would read: CYP3A5 and ancestry besides vancomycin's own).
LATENT_TRAINING = {
    "weight": [55.0, 70.0, 90.0, 120.0],
    "crcl": [25.0, 60.0, 100.0, 140.0],
    "dialysis": [0.0, 0.0, 0.0, 0.0],
    "age": [30.0, 50.0, 70.0, 80.0],
    "female": [1.0, 0.0, 1.0, 0.0],
    "cyp3a5": ["*1/*1", "*1/*3", "*3/*3", "*3/*3"],
    "ancestry": ["european", "african", "east_asian", "european"],
}


@pytest.fixture(scope="session")
def latent_training() -> dict:
    """Covariates a tiny latent model's feature transform is fitted on (its columns)."""
    return {k: list(v) for k, v in LATENT_TRAINING.items()}


@pytest.fixture(scope="session")
def latent_model_dir(tmp_path_factory) -> Path:
    """A saved, untrained tiny latent model over vancomycin (what `twinsim train` writes):
    untrained, it is the published model with η = L ε, so its numbers are the library's."""
    from twinsim.priors import vancomycin_model
    from twinsim.scenarios import save_latent_model
    from twinsim.twin import CovariateFeatures, LatentConfig, LatentModel

    config = LatentConfig(latent_dim=4, hidden=8, correction_hidden=4)
    model = LatentModel.create(
        vancomycin_model(), CovariateFeatures.fit(LATENT_TRAINING), config, seed=0
    )
    folder = tmp_path_factory.mktemp("models") / "vanco-latent"
    save_latent_model(model, folder, {"note": "untrained test model"})
    return folder
