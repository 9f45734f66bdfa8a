"""A spec's ``model:`` may name a user model in a Python file (``file.py:object``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twinsim.scenarios import SpecError, load_spec, run_simulation

MODEL_FILE = """
from twinsim.simulators import ODEModel

def one_compartment_iv():
    return ODEModel(
        name="user_1cmt_iv", states=("central",), parameters=("cl", "v"),
        rhs=lambda t, y, p: {"central": -p.cl / p.v * y.central},
        outputs={"conc": lambda y, p: y.central / p.v}, output_units={"conc": "mg/L"},
        parameter_units={"cl": "L/h", "v": "L"}, routes={"iv": "central"}, linear=True,
    )

NOT_A_MODEL = 3
"""

SPEC = """\
model: {model}
parameters: {{cl: 5 L/h, v: 50 L}}
n_subjects: 2
regimen: 1 g once
times: [0, 2, 4]
"""


def _write(folder: Path, model: str) -> Path:
    (folder / "models").mkdir(exist_ok=True)
    (folder / "models" / "mine.py").write_text(MODEL_FILE)
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(model=model))
    return spec


def test_a_spec_simulates_a_user_model_found_next_to_it(tmp_path: Path, monkeypatch) -> None:
    """The path is relative to the spec file (not the working directory); the numbers are
    the closed form of a 1 g IV bolus, C = 1000/50 · exp(−0.1 t) (rtol 1e-10), with the
    output at the dose time taken before the dose (0 mg/L)."""
    spec_file = _write(tmp_path, "models/mine.py:one_compartment_iv")
    monkeypatch.chdir(Path(tmp_path.anchor))
    spec = load_spec(spec_file)
    dataset = run_simulation(spec)
    conc = dataset["conc"].values if "conc" in dataset else dataset.to_array().values
    np.testing.assert_allclose(
        np.asarray(conc).reshape(2, 3)[0],
        [0.0, *(20.0 * np.exp(-0.1 * np.array([2.0, 4.0])))],
        rtol=1e-10,
    )


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("models/missing.py:one_compartment_iv", r"no file '.*missing\.py'"),
        (
            "models/mine.py:two_compartment",
            r"has no 'two_compartment'; it defines \['one_compartment_iv'\]",
        ),
        (
            "models/mine.py:NOT_A_MODEL",
            r"must be an ODEModel \(or a function returning one\), got int",
        ),
    ],
)
def test_a_bad_model_file_is_a_spec_error(tmp_path: Path, model: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, model))


# ---------------------------------------------------------------------------- pd: block

PD_SPEC = {
    "model": "pk_1cmt_iv",
    "pd": [{"indirect_response": {"kind": "I"}}],
    "parameters": {"cl": "5 L/h", "v": "50 L", "kin": "10 1/h", "kout": "0.1 1/h",
                   "imax": 0.9, "ic50": "2 mg/L"},
    "regimen": "100 mg once",
    "times": [0, 24, 1000],
}  # fmt: skip


def test_a_spec_appends_pd_building_blocks() -> None:
    """An indirect response (type I) on a PK model, from the spec alone: the response
    starts at its baseline kin/kout = 100, is inhibited after the dose, and returns to
    100 once the drug is gone (at 1000 h the concentration is ~1e-42 mg/L; rtol 1e-6)."""
    from twinsim.scenarios import SimulationSpec

    spec = SimulationSpec.model_validate(PD_SPEC)
    model = spec.model_definition()
    assert model.parameters == ("cl", "v", "kin", "kout", "imax", "ic50")
    response = run_simulation(spec)["response"].values.reshape(-1)
    np.testing.assert_allclose(response[[0, 2]], [100.0, 100.0], rtol=1e-6)
    assert response[1] < 100.0

    chained = {
        **PD_SPEC,
        "pd": [{"effect_compartment": {}}, {"emax": {"driver": "ce", "hill": False}}],
        "parameters": {"cl": 5, "v": 50, "ke0": 0.5, "e0": 1, "emax": 2, "ec50": 1},
    }
    model = SimulationSpec.model_validate(chained).model_definition()
    assert model.output_names == ("conc", "ce", "effect")


@pytest.mark.parametrize(
    ("pd", "message"),
    [
        ([{"emax": {"drver": "conc"}}], r"`pd` item 0 \(emax\): .*unexpected keyword argument 'drver'.*accepted: .*driver='conc'"),
        ([{"emax": {}, "effect_compartment": {}}], r"names one building block .*got \['effect_compartment', 'emax'\]"),
        ([{"indirect_response": {}}], r"item 0 \(indirect_response\): needs `kind` \(I, II, III or IV\)"),
    ],
)  # fmt: skip
def test_a_bad_pd_block_is_a_spec_error_naming_it(pd, message) -> None:
    from twinsim.scenarios import SimulationSpec

    with pytest.raises(SpecError, match=message):
        SimulationSpec.model_validate({**PD_SPEC, "pd": pd})
