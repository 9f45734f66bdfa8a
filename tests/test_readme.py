"""The README's examples work: its Python blocks run and its YAML spec validates and simulates."""

import re
from pathlib import Path

import numpy as np
import yaml

from twinsim.scenarios import SimulationSpec, run_simulation

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_readme_python_runs():
    blocks = _blocks("python")
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    solution = namespace["solution"]
    assert int(solution.status[0]) == 0
    assert np.all(np.isfinite(np.asarray(solution.outputs)))


def test_readme_spec_simulates():
    (block,) = _blocks("yaml")
    spec = SimulationSpec.model_validate(yaml.safe_load(block))
    small = spec.model_copy(update={"n_subjects": 4})
    dataset = run_simulation(small)
    assert dataset.sizes["subject"] == 4
    assert dataset.sizes["time"] == 14 * 24 + 1
    assert (dataset["status"] == 0).all()
