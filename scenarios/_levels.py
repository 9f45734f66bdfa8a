"""Measured levels of one patient from a file: a plain CSV or a NONMEM data set.

A what-if's ``observations`` are usually typed in; a lab export or a NONMEM data set can
give them instead. :func:`read_levels` reads either layout, checks every row with the
same validation as the spec (:class:`~twinsim.scenarios.ObservationSpec`) and returns the
levels — and, from a NONMEM data set, the doses given — ready for a
:class:`~twinsim.scenarios.WhatIfSpec`.

Plain CSV (header on the first line, any case; comma, semicolon or tab separated; units
in the cells or the defaults)::

    time,value,output,lloq
    38 h,28.0,conc,
    47.5,<2 mg/L,conc,

``time`` (alias ``TIME``; h unless the cell says ``d``/``min``), ``value`` (aliases
``dv``, ``level``, ``concentration``; mg/L unless the cell gives a unit; ``<LLOQ``,
``<2 mg/L`` or ``BLQ`` below the limit of quantification), optional ``output`` (alias
``kind``: ``conc`` or ``inr``) and ``lloq``.

NONMEM layout: a file with an ``AMT``, ``EVID`` or ``MDV`` column is read with
:func:`~twinsim.scenarios.read_nonmem`; observation records (``EVID`` 0, ``MDV`` 0) are
the levels (``DV`` in mg/L) and dose records the doses given, one per administration
(``ADDL``/``II`` expanded, ``RATE`` turned into an infusion duration).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._regimen import SpecError
from ._whatif._spec import ObservationSpec

__all__ = ["MAX_LEVELS_BYTES", "LevelsData", "LevelsError", "read_levels"]

#: Largest levels file accepted, bytes (a patient's levels are a few hundred bytes).
MAX_LEVELS_BYTES = 1_000_000

_NONMEM_MARKERS = {"AMT", "EVID", "MDV"}
_COLUMNS = {
    "time": "time",
    "value": "value",
    "dv": "value",
    "level": "value",
    "conc": "value",
    "concentration": "value",
    "output": "output",
    "kind": "output",
    "lloq": "lloq",
}


class LevelsError(ValueError):
    """A levels file cannot be read; the message names the line and the column."""


@dataclass(frozen=True)
class LevelsData:
    """Levels (and doses) read from a file.

    Attributes
    ----------
    observations
        One validated :class:`~twinsim.scenarios.ObservationSpec` per level, by time.
    doses
        Dose records ``{"time", "amount", "duration"}`` (h, mg, h), one per
        administration, from a NONMEM data set; empty for a plain CSV.
    layout
        ``"csv"`` or ``"nonmem"``.
    subject
        The NONMEM ``ID`` read (``None`` for a plain CSV).
    """

    observations: tuple[ObservationSpec, ...]
    doses: tuple[dict[str, float], ...]
    layout: Literal["csv", "nonmem"]
    subject: Any = None


def _text(source: str | bytes | os.PathLike[str], name: str) -> tuple[str, str]:
    if isinstance(source, os.PathLike):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as error:
            raise LevelsError(f"cannot read {str(path)!r}: {error.strerror or error}") from None
        if size > MAX_LEVELS_BYTES:
            raise _too_large(path.name, size)
        return path.read_bytes().decode("utf-8-sig", errors="strict"), path.name
    data = source.encode() if isinstance(source, str) else bytes(source)
    if len(data) > MAX_LEVELS_BYTES:
        raise _too_large(name, len(data))
    try:
        return data.decode("utf-8-sig"), name
    except UnicodeDecodeError:
        raise LevelsError(
            f"{name} is not UTF-8 text; export the levels as a CSV file (UTF-8)"
        ) from None


def _too_large(name: str, size: int) -> LevelsError:
    return LevelsError(
        f"{name} is {size / 1e6:.1f} MB; levels files are limited to "
        f"{MAX_LEVELS_BYTES / 1e6:g} MB (one patient's levels are a few kB)"
    )


def read_levels(
    source: str | bytes | os.PathLike[str],
    *,
    name: str = "levels.csv",
    subject: Any = None,
    output: str = "conc",
) -> LevelsData:
    """Read one patient's measured levels from CSV text/bytes or a file path.

    Parameters
    ----------
    source
        File content (``str`` or ``bytes``, e.g. an upload) or a path (``pathlib.Path``).
    name
        The file's name, for messages.
    subject
        The ``ID`` to read from a NONMEM data set with several subjects.
    output
        The model output of NONMEM ``DV`` values (``conc``, or ``inr`` for INR data).

    Returns
    -------
    LevelsData

    Raises
    ------
    LevelsError
        A file over :data:`MAX_LEVELS_BYTES`, not UTF-8, without a header or the needed
        columns, a bad cell (line and column named, with the spec's message), or a NONMEM
        data set with several subjects and no ``subject``.

    Examples
    --------
    >>> data = read_levels("time,value\\n38,28.0\\n47.5 h,<2 mg/L\\n")
    >>> [(o.time, o.value, o.below_lloq, o.lloq) for o in data.observations]
    [(38.0, 28.0, False, None), (47.5, None, True, 2.0)]
    >>> nm = read_levels("ID,TIME,AMT,RATE,DV,EVID\\n1,0,1000,1000,0,1\\n1,11.5,0,0,9.1,0\\n")
    >>> nm.layout, nm.doses, [o.value for o in nm.observations]
    ('nonmem', ({'time': 0.0, 'amount': 1000.0, 'duration': 1.0},), [9.1])
    """
    text, name = _text(source, name)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise LevelsError(f"{name} is empty; give a header (time,value) and one line per level")
    header = {c.strip().strip('"').upper() for c in re.split(r"[,\s]+", lines[0].lstrip("#"))}
    if header & _NONMEM_MARKERS:
        return _read_nonmem(text, name, subject, output)
    return _read_csv(text, name)


def _read_csv(text: str, name: str) -> LevelsData:
    # lab exports use commas, semicolons or tabs; the header line tells which
    header_line = next(line for line in text.splitlines() if line.strip())
    delimiter = max(",;\t", key=header_line.count)
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True))
    numbered = [(n, row) for n, row in enumerate(rows, start=1) if any(c.strip() for c in row)]
    (header_line, header), records = numbered[0], numbered[1:]
    columns: dict[int, str] = {}
    for j, raw in enumerate(header):
        key = re.sub(r"\s*\(.*\)\s*$", "", raw.strip().lstrip("#")).strip().lower()
        if key in _COLUMNS:
            columns[j] = _COLUMNS[key]
    missing = [c for c in ("time", "value") if c not in columns.values()]
    if missing:
        raise LevelsError(
            f"{name} line {header_line}: no `{'` or `'.join(missing)}` column; the header must "
            f"name time and value (e.g. 'time,value'), got {', '.join(header)!r}; "
            "a NONMEM data set needs AMT, EVID or MDV columns"
        )
    levels, problems = [], []
    for n, row in records:
        record = {
            columns[j]: cell.strip() for j, cell in enumerate(row) if j in columns and cell.strip()
        }
        try:
            levels.append(ObservationSpec.model_validate(record))
        except SpecError as error:
            problems += [f"line {n}: {p}" for p in error.problems]
    if problems:
        raise LevelsError(f"{name}: " + "; ".join(problems))
    return LevelsData(tuple(sorted(levels, key=lambda o: o.time)), (), "csv")


def _read_nonmem(text: str, name: str, subject: Any, output: str) -> LevelsData:
    from ._nonmem import NonmemError, read_nonmem

    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name) or "levels.csv"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / safe
        path.write_text(text, encoding="utf-8")
        try:
            data = read_nonmem(path)
        except NonmemError as error:
            raise LevelsError(str(error)) from None
    ids = list(data.ids)
    if subject is None:
        if len(ids) != 1:
            raise LevelsError(
                f"{name} holds {len(ids)} subjects (ID {', '.join(map(str, ids[:10]))}); "
                "choose one (subject=...) or upload one patient's records"
            )
        index = 0
    else:
        matches = [i for i, x in enumerate(ids) if str(x) == str(subject)]
        if not matches:
            raise LevelsError(
                f"`subject` {subject!r} is not an ID of {name}; its IDs: {', '.join(map(str, ids))}"
            )
        index = matches[0]
    records = data.observations_of(ids[index])
    levels, problems = [], []
    for _, row in records.iterrows():
        if int(row["EVID"]) != 0 or int(row["MDV"]) != 0 or math.isnan(float(row["DV"])):
            continue
        try:
            levels.append(
                ObservationSpec(time=float(row["TIME"]), value=float(row["DV"]), output=output)
            )
        except SpecError as error:
            problems += [f"TIME {float(row['TIME']):g}: {p}" for p in error.problems]
    if problems:
        raise LevelsError(f"{name}: " + "; ".join(problems))
    return LevelsData(
        tuple(sorted(levels, key=lambda o: o.time)),
        tuple(_administrations(data.doses[index])),
        "nonmem",
        ids[index],
    )


def _administrations(doses: Sequence[Any]) -> list[dict[str, float]]:
    """One record per administration (ADDL expanded; RATE as a duration)."""
    out = []
    for dose in doses:
        duration = dose.duration or (dose.amount / dose.rate if dose.rate > 0 else 0.0)
        for k in range(int(dose.additional) + 1):
            out.append(
                {
                    "time": float(dose.time + k * dose.interval),
                    "amount": float(dose.amount),
                    "duration": float(duration),
                }
            )
    return sorted(out, key=lambda d: d["time"])
