"""Training the latent twin: same seed → same model, a run stopped mid-epoch resumes from
its orbax checkpoint to exactly the uninterrupted run's parameters, and the command line
writes a model folder with provenance that loads back (hash-checked).

One tiny cohort (16 patients, 4 levels each, networks of width 8/4); the training step
compiles once for the module (the command line reuses it in-process)."""

import json

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from twinsim.cli import app
from twinsim.priors import vancomycin_model
from twinsim.scenarios import load_latent_model
from twinsim.twin import (
    CovariateFeatures,
    LatentConfig,
    LatentData,
    LatentModel,
    TrainingSettings,
    train_latent,
)
from twinsim.twin._latent._study import latent_covariates, observation_lists, simulate_patients

pytestmark = pytest.mark.isolated  # large ODE compilations (see pyproject.toml)

CONFIG = LatentConfig(latent_dim=4, hidden=8, correction_hidden=4)
SETTINGS = TrainingSettings(epochs=2, batch_size=8, validation_fraction=0.25, checkpoint_every=1,
                            seed=7)  # fmt: skip


@pytest.fixture(scope="module")
def cohort():
    return simulate_patients("published", 16, seed=1)


def _model_and_data(cohort):
    """What `twinsim train` builds from the CSV, built here from the arrays."""
    cov = latent_covariates(cohort)
    features = CovariateFeatures.fit(cov)
    model = LatentModel.create(vancomycin_model(), features, CONFIG, seed=SETTINGS.seed)
    data = LatentData.build(model, cov, cohort["doses"], observation_lists(cohort),
                            ids=tuple(range(1, 17)))  # fmt: skip
    return model, data


class _Stop(Exception):
    pass


def _same(a, b) -> bool:
    return all(
        np.asarray(x).tobytes() == np.asarray(y).tobytes()
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def reference(cohort):
    model, data = _model_and_data(cohort)
    return train_latent(model, data, SETTINGS)


def test_training_is_deterministic_and_resumes_with_nothing_lost(cohort, reference, tmp_path):
    """A run stopped abruptly after its 3rd step (mid-epoch 2; only orbax checkpoints
    survive) and restarted on the same folder ends with the uninterrupted run's
    parameters and loss history bit for bit; the validation split holds out 4 of 16."""
    model, data = _model_and_data(cohort)
    assert len(reference.validation_ids) == 4 and len(reference.history) == 2
    assert all(np.isfinite(h["train"]) and np.isfinite(h["validation"]) for h in reference.history)
    steps = []

    def stop_at_three(info):
        steps.append(info["step"])
        if len(steps) == 3:
            raise _Stop

    with pytest.raises(_Stop):
        train_latent(model, data, SETTINGS, checkpoint_dir=tmp_path / "ck", progress=stop_at_three)
    resumed = train_latent(model, data, SETTINGS, checkpoint_dir=tmp_path / "ck")
    assert _same(resumed.model.params, reference.model.params)
    assert resumed.history == reference.history
    # the trained parameters moved away from the initial (population) model
    assert not _same(resumed.model.params, model.params)


def test_training_keeps_the_published_variability(cohort, reference):
    """By default (``LatentConfig.learn_variability=False``) training moves the prior's
    mean, the covariate shift, the correction and the encoder, but the between-patient
    variability stays Goti 2018's: ``A`` is still chol Ω bit for bit and the prior's SD is
    1, so the implied covariance of η is Ω (see LatentConfig for why)."""
    model, _ = _model_and_data(cohort)
    trained = reference.model
    before, after = model.networks(), trained.networks()
    np.testing.assert_array_equal(after.effect.get_value(), before.effect.get_value())
    x = trained.features.transform(latent_covariates(cohort))
    mean, sd = trained.prior(trained.params, x)
    np.testing.assert_array_equal(np.asarray(sd), 1.0)
    assert not np.allclose(np.asarray(mean), 0.0)  # the mean is learned
    chol = np.asarray(after.effect.get_value())[:, :3]
    np.testing.assert_allclose(chol @ chol.T, np.asarray(vancomycin_model().omega), rtol=1e-12)


def test_train_command_writes_a_model_with_provenance(cohort, reference, tmp_path, study_csv):
    """`twinsim train DATA.csv --prior vancomycin --out DIR` trains the model the library
    call trains (same data, seed, settings → the same parameters to 1e-6 relative after
    the CSV round trip), records the data's SHA-256, prior, settings and versions, and
    loads back with the recorded parameter hash (bit-identical loading is
    test_latent.py::test_record_round_trip_is_bit_identical)."""
    import hashlib

    csv = study_csv(cohort, tmp_path / "data.csv")
    args = ["train", str(csv), "--prior", "vancomycin", "--out", str(tmp_path / "m"),
            "--epochs", "2", "--batch-size", "8", "--validation-fraction", "0.25",
            "--checkpoint-every", "1", "--seed", "7", "--hidden", "8", "--correction-hidden", "4",
            "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "m" / "model.json").read_text())
    prov = record["provenance"]
    assert prov["data_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert record["prior"] == "vancomycin" and prov["settings"]["seed"] == 7
    assert {"flax", "jax", "optax", "orbax-checkpoint"} <= set(prov["versions"])
    loaded = load_latent_model(tmp_path / "m")  # checks the recorded parameter hash
    # the covariates went through the CSV as text: the feature scaling (and so the
    # trained parameters) agree with the in-memory run to rounding, not bit for bit
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(reference.model.params),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
    bad = CliRunner().invoke(
        app, ["train", str(csv), "--prior", "aspirin", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "aspirin" in bad.output


def test_weight_decay_pulls_the_model_networks_back_not_the_encoder(cohort):
    """``TrainingSettings.weight_decay`` (AdamW) moves the prior's, the covariate shift's
    and the correction's weights towards 0 — the published model — by ``lr · wd · w`` per
    step when the data do not push them (a zero gradient), and leaves the encoder (the
    amortised inference, not the model) and ``A`` alone; negative values are refused."""
    from twinsim.twin._latent._train import _Loop

    model, _ = _model_and_data(cohort)
    params = jax.tree.map(lambda w: w + 0.5, model.params)  # every weight non-zero
    settings = TrainingSettings(learning_rate=0.1, weight_decay=0.5)
    optimizer = _Loop(model, settings).optimizer
    zero = jax.tree.map(np.zeros_like, params)
    updates, _ = optimizer.update(zero, optimizer.init(params), params)
    for name in ("prior", "covariate", "correction"):
        for u, w in zip(jax.tree.leaves(updates[name]), jax.tree.leaves(params[name]), strict=True):
            np.testing.assert_allclose(np.asarray(u), -0.1 * 0.5 * np.asarray(w), rtol=1e-12)
    for name in ("encoder", "effect"):
        assert all(not np.asarray(u).any() for u in jax.tree.leaves(updates[name]))
    with pytest.raises(ValueError, match="weight_decay"):
        TrainingSettings(weight_decay=-1.0)
