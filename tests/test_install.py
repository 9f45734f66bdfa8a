"""A non-editable install of the wheel in a fresh venv gives a working ``twinsim`` CLI.

What this proves (DESIGN.md, "Layout"): the folders ``priors/``, ``simulators/``, ...
install as ``twinsim.priors``, ``twinsim.simulators``, ... and never as bare top-level
packages that would collide in a user's environment; the example specs ship as package
data; the ``twinsim`` console script works from any directory.

How: the wheel is built (``pip wheel --no-deps``) from a clean copy of the source tree in a
temporary folder (so no ``build/`` or ``*.egg-info`` leftovers in the checkout can leak into
it, and the checkout is left untouched), a fresh venv is made with ``python -m venv``, and
the wheel is installed there with ``--no-deps --no-index``.

Why dependencies come from a ``.pth`` file: installing twinsim's dependencies (JAX, jaxlib,
scipy, dash, ...) into the fresh venv would download about 600 MB on every CI run. Instead a
``.pth`` file in the new venv's site-packages appends the project venv's site-packages to
``sys.path``, *after* the new venv's own site-packages. Only dependencies are found there: the
project venv's editable install of twinsim is activated by its own ``.pth`` file, which
Python does not process in a directory added this way, and the wheel's twinsim comes first on
the path anyway. The test asserts that ``twinsim.__file__`` lies in the new venv, so the code
under test is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN_TOP_LEVEL = ("dashboard", "scenarios", "priors", "simulators", "twin", "tests")
_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".hypothesis", "demo-output", "notebooks", "benchmarks", "*.nc", "*.zarr",
)  # fmt: skip


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages")) + sorted(venv.glob("Lib/site-packages"))
    assert found, f"no site-packages under {venv}"
    return found[0]


def _venv_bin(venv: Path, name: str) -> Path:
    folder = venv / ("Scripts" if os.name == "nt" else "bin")
    return folder / (f"{name}.exe" if os.name == "nt" else name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the twinsim wheel installed (dependencies via a .pth file)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_IGNORED)
    wheels = root / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), "."],
        cwd=source,
    )
    (wheel,) = wheels.glob("twinsim-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    python = _venv_bin(venv, "python")
    site = _site_packages(venv)
    (site / "twinsim_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
            "--no-index", "--quiet", str(wheel),
        ],
        cwd=root,
    )  # fmt: skip
    return venv


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{_venv_bin(venv, 'python').parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def test_wheel_holds_only_the_twinsim_package(installed):
    """Top-level names in the wheel and the venv: ``twinsim`` only, never bare folders."""
    site = _site_packages(installed)
    for name in FORBIDDEN_TOP_LEVEL:
        assert not (site / name).exists(), f"bare top-level package {name!r} was installed"
        assert not (site / f"{name}.py").exists()
    (dist_info,) = site.glob("twinsim-*.dist-info")
    assert (dist_info / "top_level.txt").read_text().split() == ["twinsim"]
    assert (
        site / "twinsim" / "scenarios" / "examples" / "two_compartment_oral_cohort.yaml"
    ).is_file()
    wheel = next((installed.parent / "wheels").glob("twinsim-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert tops == {"twinsim", dist_info.name}


def test_installed_cli_runs_from_a_foreign_directory(installed, tmp_path):
    """``twinsim --help`` and ``twinsim simulate <shipped example>`` work outside the repo."""
    site = _site_packages(installed)
    env = _clean_env(installed)
    python = _venv_bin(installed, "python")
    where = _run(
        [str(python), "-c", "import twinsim, twinsim.scenarios; print(twinsim.__file__)"],
        cwd=tmp_path,
        env=env,
    )
    assert Path(where.stdout.strip()).resolve().is_relative_to(site.resolve()), where.stdout

    cli = _venv_bin(installed, "twinsim")
    help_text = _run([str(cli), "--help"], cwd=tmp_path, env=env).stdout
    assert "simulate" in help_text and "demo" in help_text

    # a small run of the shipped loading-dose example (the installed copy of it)
    example = site / "twinsim" / "scenarios" / "examples" / "loading_dose_per_kg.yaml"
    result = _run(
        [str(cli), "simulate", str(example), "--out", "x.nc", "--quiet"], cwd=tmp_path, env=env
    )
    assert "wrote x.nc" in result.stdout
    with xr.open_dataset(tmp_path / "x.nc") as dataset:
        assert dict(dataset["conc"].sizes) == {"subject": 40, "time": 289}
        assert (dataset["status"].values == 0).all()
        assert dataset.attrs["model"] == "pk_2cmt_iv"
    assert (tmp_path / "x.nc.provenance.json").is_file()
    assert not (tmp_path / "build").exists()
