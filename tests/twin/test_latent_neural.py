"""The neural-only latent ODE baseline (``LatentConfig(decoder="neural")``): doses exact
through the simulators' event engine, positive outputs, training lowers the validation
−ELBO, records round-trip (and records saved before the option load as the hybrid), the
command line trains one, and bad settings name their field.

One cohort of 40 simulated vancomycin patients and tiny networks; the training step
compiles once for the module (the command line reuses it in-process)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from twinsim.cli import app
from twinsim.priors import vancomycin_model
from twinsim.scenarios import NonmemData, load_latent_model, save_latent_model, write_nonmem
from twinsim.simulators import Dose, simulate
from twinsim.twin import (
    CovariateFeatures,
    LatentConfig,
    LatentData,
    LatentModel,
    LatentModelError,
    TrainingSettings,
    train_latent,
)
from twinsim.twin._latent import _train
from twinsim.twin._latent._study import latent_covariates, observation_lists, simulate_patients

pytestmark = pytest.mark.isolated  # large ODE compilations (see pyproject.toml)

CONFIG = LatentConfig(decoder="neural", latent_dim=2, hidden=8, correction_hidden=4)
SETTINGS = TrainingSettings(epochs=3, batch_size=16, learning_rate=1e-2, validation_fraction=0.25,
                            seed=3)  # fmt: skip
N = 40


@pytest.fixture(scope="module")
def cohort():
    return simulate_patients("published", N, seed=0)


@pytest.fixture(scope="module")
def model_and_data(cohort):
    cov = latent_covariates(cohort)
    model = LatentModel.create(vancomycin_model(), CovariateFeatures.fit(cov), CONFIG, seed=0)
    data = LatentData.build(model, cov, cohort["doses"], observation_lists(cohort),
                            ids=tuple(range(1, N + 1)))  # fmt: skip
    return model, data


@pytest.fixture(scope="module")
def trained(model_and_data):
    model, data = model_and_data
    return train_latent(model, data, SETTINGS)


def _rows(model, params, data, index, typical_factor=1.0):
    """Decoder rows of subjects ``index`` at z = the prior mean, and their batch."""
    batch = data.batch(np.asarray(index))
    z, _ = model.prior(params, batch["x"])
    rows = model.parameters(params, typical_factor * batch["typical"], batch["x"], z)
    return rows, batch


def _with_flow_bias(params, bias):
    """``params`` with the flow network's output bias replaced by ``bias(old)``."""

    def one(path, a):
        keys = [getattr(k, "key", None) for k in path]
        return bias(a) if keys[:4] == ["correction", "layers", 1, "bias"] else a

    return jax.tree_util.tree_map_with_path(one, params)


def test_doses_are_exact_and_outputs_positive(model_and_data):
    """Random network weights: concentrations on the 15 mg/kg q12h vancomycin regimen
    (1 h infusions) are finite and > 0. With elimination switched off (the diagonal
    rates' bias −1000: sigmoid underflows to 0) the learned transfers only move amount
    between states, so the total is the amount infused so far — mid-infusion, at the end
    of the first infusion, 5 h and 10.9 h later and after the second — to 1e-8 relative;
    with every flow off the dosing state holds it all and the other stays 0. The typical
    (published) parameters do not enter the rows."""
    model, data = model_and_data
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: a + 0.3 * rng.standard_normal(np.shape(a)), model.params)
    index = np.arange(4)
    rows, batch = _rows(model, params, data, index)
    doubled, _ = _rows(model, params, data, index, typical_factor=2.0)
    np.testing.assert_array_equal(np.asarray(doubled), np.asarray(rows))
    times = jnp.tile(jnp.array([0.5, 1.0, 6.0, 11.9, 13.0, 30.0, 71.5]), (len(index), 1))

    def solve(rows):
        return simulate(model.ode_model, rows, batch["events"], times, method="ode", rtol=1e-10,
                        atol=1e-10)  # fmt: skip

    sol = solve(rows)
    conc = np.asarray(sol.outputs[..., 0])
    assert np.all(np.asarray(sol.status) == 0)
    assert np.all(np.isfinite(conc)) and np.all(conc > 0), conc

    amount = np.asarray(batch["events"].amount)[:, :1]  # every dose of a patient is the same
    infused = amount * np.array([0.5, 1.0, 1.0, 1.0, 2.0])
    diagonal = np.eye(model.n_states).reshape(-1).astype(bool)
    states = np.asarray(solve(_rows(model, _with_flow_bias(params, lambda b: jnp.where(
        diagonal, -1000.0, b)), data, index)[0]).states)  # fmt: skip
    np.testing.assert_allclose(states[:, :5].sum(axis=-1), infused, rtol=1e-8)
    assert np.all(states[:, 2:5, 1] > 1.0)  # the transfers moved amount (mg) to state 1
    states = np.asarray(solve(_rows(model, _with_flow_bias(params, lambda b: jnp.full_like(
        b, -1000.0)), data, index)[0]).states)  # fmt: skip
    np.testing.assert_allclose(states[:, :5, 0], infused, rtol=1e-8)
    assert np.all(states[..., 1] == 0.0)


def test_training_lowers_the_validation_elbo(model_and_data, trained):
    """Three epochs (6 Adam steps, 30 training and 10 validation patients) lower the
    validation −ELBO per patient below the untrained model's (same fixed draws of z, the
    training loop's own compiled program)."""
    model, data = model_and_data
    _, val_idx = _train._split(data.n_subjects, SETTINGS)
    batches = _train._batches(val_idx, SETTINGS.batch_size, None)
    untrained = _train._mean_loss(_train._loop(model, SETTINGS), model.params, data, batches,
                                  jax.random.key(SETTINGS.seed))  # fmt: skip
    best = min(h["validation"] for h in trained.history)
    assert len(trained.validation_ids) == 10 and np.isfinite(untrained)
    assert best < untrained - 1.0, (untrained, trained.history)


def test_record_round_trip_and_old_records(cohort, trained, tmp_path):
    """save → load gives the neural config and bit-identical predictions (sample on the
    held-out-style regimen); a record written before the option existed (no decoder
    fields in its config) loads as the hybrid with the same parameters."""
    saved = trained.model
    back = load_latent_model(save_latent_model(saved, tmp_path / "m").parent)
    assert back.config == CONFIG and back.config.decoder == "neural"
    assert LatentConfig.from_dict(json.loads(json.dumps(CONFIG.to_dict()))) == CONFIG
    cov = {k: v[:1] for k, v in latent_covariates(cohort).items()}
    doses = [Dose(t, 1750.0, compartment=0, rate=875.0) for t in (0.0, 24.0, 48.0)]
    times = np.array([1.0, 2.5, 23.5, 50.0, 71.5])
    a = saved.sample(cov, doses, times, 2, seed=4)
    b = back.sample(cov, doses, times, 2, seed=4)
    assert a.tobytes() == b.tobytes() and np.all(a > 0)

    hybrid = LatentModel.create(vancomycin_model(), saved.features, LatentConfig(hidden=8), seed=1)
    settings, arrays = hybrid.to_record()
    for field in ("decoder", "neural_states", "neural_max_rate", "neural_volume"):
        del settings["config"][field]
    old = LatentModel.from_record(settings, arrays)
    assert old.config == hybrid.config and old.config.decoder == "hybrid"
    assert old.ode_model.parameters == hybrid.ode_model.parameters
    for x, y in zip(jax.tree.leaves(old.params), jax.tree.leaves(hybrid.params), strict=True):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_train_command_trains_a_neural_model(cohort, trained, tmp_path):
    """`twinsim train ... --decoder neural` writes a neural model (its record says so and
    it loads back as one); `--decoder` with an unknown value is a usage error naming it."""
    rows = [{"ID": i + 1, "TIME": t, "DV": v} for i in range(N)
            for t, v in zip(cohort["times"][i], cohort["observed"][i], strict=True)]  # fmt: skip
    cov = latent_covariates(cohort)
    cov["WT"], cov["CRCL"] = cov.pop("weight"), cov.pop("crcl")
    csv = write_nonmem(NonmemData.from_doses(cohort["doses"], observations=pd.DataFrame(rows),
                                             covariates=cov), tmp_path / "data.csv")  # fmt: skip
    args = ["train", str(csv), "--prior", "vancomycin", "--out", str(tmp_path / "m"),
            "--decoder", "neural", "--epochs", "1", "--batch-size", "16", "--learning-rate",
            "0.01", "--validation-fraction", "0.25", "--seed", "3", "--latent-dim", "2",
            "--hidden", "8", "--correction-hidden", "4", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "m" / "model.json").read_text())
    assert record["config"]["decoder"] == "neural"
    assert load_latent_model(tmp_path / "m").config == CONFIG
    bad = CliRunner().invoke(app, [*args[:6], "--decoder", "mlp", "--quiet"])
    assert bad.exit_code == 2 and "`LatentConfig.decoder` must be one of" in bad.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"decoder": "mlp"}, r"`LatentConfig.decoder` must be one of \['hybrid', 'neural'\], got 'mlp'"),
        ({"decoder": "neural", "neural_states": 0}, r"`LatentConfig.neural_states` must be an integer ≥ 1, got 0"),
        ({"decoder": "neural", "neural_states": 2.5}, r"`LatentConfig.neural_states` must be an integer ≥ 1, got 2.5"),
        ({"neural_max_rate": -1.0}, r"`LatentConfig.neural_max_rate` must be > 0, got -1.0"),
        ({"neural_max_rate": 0.05}, r"`LatentConfig.neural_max_rate` must be > 0.1 /h \(the untrained"),
        ({"neural_volume": "big"}, r"`LatentConfig.neural_volume` must be > 0, got 'big'"),
        ({"decoder": "neural", "correction": False}, r"`LatentConfig.correction` must be True with decoder 'neural'"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_field(options, message):
    with pytest.raises(LatentModelError, match=message):
        LatentConfig(**options)


def test_more_states_than_the_drug_model():
    """``neural_states=3`` on vancomycin (2 states): the drug's names, then ``h2``; its
    route ``iv`` still enters ``central``; readout names follow the states."""
    f = CovariateFeatures.fit({"weight": [60.0, 90.0], "crcl": [50.0, 110.0], "dialysis": [0, 0]})
    m = LatentModel.create(vancomycin_model(), f, LatentConfig(decoder="neural", neural_states=3))
    assert m.ode_model.states == ("central", "peripheral1", "h2")
    assert m.ode_model.route_compartment("iv") == 0
    assert m.ode_model.parameters[:4] == ("_log_v_conc", "_read_conc_central",
                                          "_read_conc_peripheral1", "_read_conc_h2")  # fmt: skip
