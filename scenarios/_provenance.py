"""Provenance records: what was run, with which software, so that a result can be reproduced.

Every run writes ``<output>.provenance.json`` next to its output file: the spec (as JSON, in
core units, enough to run it again with :func:`~twinsim.scenarios.load_spec`), the root
seed, the versions of twinsim and of the numerical stack, the model's name and citation, a
UTC timestamp and the command that produced it. The record is written atomically (a
temporary file, then a rename), like the outputs themselves.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cohort._spec import SimulationSpec

__all__ = [
    "PROVENANCE_SUFFIX",
    "package_versions",
    "provenance_path",
    "provenance_record",
    "write_provenance",
]

#: Appended to an output's file name: ``result.nc`` → ``result.nc.provenance.json``.
PROVENANCE_SUFFIX = ".provenance.json"

#: Distributions whose versions decide the numbers a run produces.
_PACKAGES = ("twinsim", "jax", "jaxlib", "diffrax", "equinox", "numpy", "scipy", "xarray")

#: Version of the record's layout (bumped when keys change meaning).
RECORD_FORMAT = 1


def package_versions(packages: tuple[str, ...] = _PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (``"not installed"`` for a missing one) and Python.

    Examples
    --------
    >>> sorted(package_versions(("numpy",)))
    ['numpy', 'python']
    """
    versions: dict[str, str] = {}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def provenance_path(output: str | os.PathLike[str]) -> Path:
    """Where the provenance record of ``output`` goes: ``<output>.provenance.json``.

    Examples
    --------
    >>> provenance_path("runs/result.nc").as_posix()
    'runs/result.nc.provenance.json'
    """
    output = Path(output)
    return output.with_name(output.name + PROVENANCE_SUFFIX)


def provenance_record(
    spec: SimulationSpec,
    *,
    command: str | None = None,
    outputs: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-ready record of a run of ``spec``.

    Parameters
    ----------
    spec
        The validated spec that was run.
    command
        The command line that ran it; default: this process's ``sys.argv``.
    outputs
        What the run produced (paths, format, subject counts, failures, ...).
    extra
        More keys for the record (e.g. ``spec_file``).

    Returns
    -------
    dict
        Keys ``format``, ``created``, ``command``, ``spec``, ``seed``, ``model`` (name and
        citation), ``versions``, ``platform``, ``outputs`` and those of ``extra``.

    Examples
    --------
    >>> from twinsim.scenarios import SimulationSpec
    >>> spec = SimulationSpec(model="pk_1cmt_iv", parameters={"cl": 5, "v": 50},
    ...                       regimen="100 mg once", times=[1, 2], seed=3)
    >>> record = provenance_record(spec, command="twinsim simulate spec.yaml")
    >>> record["seed"], record["model"]["name"], record["spec"]["regimen"]["doses"][0]["amount"]
    (3, 'pk_1cmt_iv', 100.0)
    """
    model = spec.model_definition()
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join(sys.argv),
        "spec": spec.model_dump(mode="json"),
        "seed": spec.seed,
        "model": {"name": model.name, "citation": model.citation},
        "versions": package_versions(),
        "platform": platform.platform(),
        "outputs": dict(outputs or {}),
    }
    record.update(dict(extra or {}))
    return record


def write_provenance(record: Mapping[str, Any], output: str | os.PathLike[str]) -> Path:
    """Write ``record`` as ``<output>.provenance.json``, atomically.

    Parameters
    ----------
    record
        From :func:`provenance_record` (anything JSON-serialisable; numpy scalars and paths
        are written as numbers and text).
    output
        The output the record describes; the record goes next to it.

    Returns
    -------
    pathlib.Path
        The record's path.

    Examples
    --------
    >>> import tempfile, json
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_provenance({"seed": 1}, f"{folder}/run.nc")
    ...     path.name, json.loads(path.read_text())
    ('run.nc.provenance.json', {'seed': 1})
    """
    path = provenance_path(output)
    text = json.dumps(record, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    return write_text_atomic(path, text)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: a temporary file in the same folder,
    synced, then renamed over ``path``; nothing is left behind if writing fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays and paths in a record: plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"provenance value {value!r} ({type(value).__name__}) is not JSON-serialisable")
