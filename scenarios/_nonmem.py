"""NONMEM-format data sets: read them into dosing events and observations, write them back.

The NONMEM data layout (one record per row: ``ID, TIME, AMT, EVID, CMT, RATE, II, ADDL,
SS, DV, MDV`` and covariate columns) is what every pharmacometrics tool reads and writes.
:func:`read_nonmem` turns a file (or a :class:`pandas.DataFrame`) into a
:class:`NonmemData`: one list of :class:`~twinsim.simulators.Dose` per subject (CMT
1-based in the file, 0-based in ``Dose.compartment``), an observation table, one row
of covariates per subject (the first record's) and every record's covariate values
(``covariate_records``, for time-varying covariates). :func:`write_nonmem` writes the
standard column set back, atomically (one covariate row per subject).

Supported records: ``EVID`` 0 (observation), 1 (dose), 2 (other: an output time without a
measurement), and 101 (a dose, as in data sets written by nlme/nlmixr, e.g. R's
theophylline data). Resets (``EVID`` 3 and 4), modelled rates and durations (``RATE`` −1
and −2) and ``SS=2``/``SS=3`` are not supported and are reported with the line they are on.
An optional ``DUR`` column (h, as in nlmixr and mrgsolve) gives infusion durations.
Missing cells may be empty or ``.`` (NONMEM's convention); lines starting with ``#`` are
comments (NONMEM's default ``IGNORE=#``), and a header starting with ``#`` is accepted.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..simulators import Dose, DosingEvents
from ._units import UnitError, parse_quantity

__all__ = ["STANDARD_COLUMNS", "NonmemData", "NonmemError", "read_nonmem", "write_nonmem"]


class NonmemError(ValueError):
    """A NONMEM data set cannot be read or written; the message names line and column."""


#: Columns written by :func:`write_nonmem`, in order (``DUR`` is added when some dose has
#: an infusion duration, then the covariates).
STANDARD_COLUMNS = ("ID", "TIME", "AMT", "EVID", "CMT", "RATE", "II", "ADDL", "SS", "DV", "MDV")
_KNOWN = (*STANDARD_COLUMNS, "DUR")
_REQUIRED = ("ID", "TIME", "AMT")
_OBSERVATION_COLUMNS = ("ID", "TIME", "DV", "MDV", "CMT", "EVID")
_DOSE_EVIDS = (1, 101)
_MAX_LISTED = 10


@dataclass(frozen=True, eq=False)
class NonmemData:
    """A NONMEM data set as dosing records, observations and covariates.

    Attributes
    ----------
    ids
        Subject IDs in file order; ``doses[i]`` and the covariates row ``ids[i]`` belong to
        subject ``ids[i]``.
    doses
        One tuple of :class:`~twinsim.simulators.Dose` per subject, in file order (sorted
        by time): amounts mg, times h, 0-based compartments; ``ADDL`` is kept as
        ``additional`` (expanded by :meth:`events`).
    observations
        Records with ``EVID`` 0 (observation) or 2 (other), columns ``ID, TIME, DV, MDV,
        CMT, EVID``; ``CMT`` is NONMEM's 1-based compartment, as in the file (0: the
        model's default observation compartment); ``DV`` is as in the file (its unit is
        the data set's), NaN where missing.
    covariates
        One row per subject (index ``ID``, in ``ids`` order) with the other columns'
        values on the subject's first record.
    covariate_records
        Every record's covariate values, in file order: columns ``ID``, ``TIME`` (h) and
        the covariate columns (``.`` read as NaN); what time-varying covariates are taken
        from (:func:`~twinsim.scenarios.fit_data`). ``None`` for a data set built with
        :meth:`from_doses`.
    """

    ids: tuple[Any, ...]
    doses: tuple[tuple[Dose, ...], ...]
    observations: pd.DataFrame
    covariates: pd.DataFrame
    covariate_records: pd.DataFrame | None = None

    @property
    def n_subjects(self) -> int:
        return len(self.ids)

    def events(self, *, pad_to: int | None = None) -> DosingEvents:
        """The dosing records as :class:`~twinsim.simulators.DosingEvents` (one row per subject)."""
        return DosingEvents.from_doses([list(d) for d in self.doses], pad_to=pad_to)

    def observations_of(self, subject_id: Any) -> pd.DataFrame:
        """The observation records of one subject."""
        return self.observations[self.observations["ID"] == subject_id]

    def equals(self, other: NonmemData) -> bool:
        """Same subjects, doses, observations and covariates (exact comparison)."""
        return (
            self.ids == other.ids
            and self.doses == other.doses
            and self.observations.equals(other.observations)
            and self.covariates.equals(other.covariates)
        )

    @classmethod
    def from_doses(
        cls,
        doses: Sequence[Sequence[Dose]],
        *,
        observations: pd.DataFrame | None = None,
        covariates: pd.DataFrame | Mapping[str, Sequence[Any]] | None = None,
        ids: Sequence[Any] | None = None,
    ) -> NonmemData:
        """Build a data set from dose lists (e.g. simulated subjects), to write with :func:`write_nonmem`.

        Parameters
        ----------
        doses
            One list of :class:`~twinsim.simulators.Dose` per subject.
        observations
            Optional table with columns ``ID, TIME`` and any of ``DV, MDV, CMT, EVID``
            (defaults: DV NaN, MDV 1 where DV is NaN else 0, CMT 0, EVID 0).
        covariates
            Optional per-subject values: a frame with one row per subject (in ``ids``
            order) or ``{column: values}``.
        ids
            Subject IDs; 1, 2, ... by default.

        Examples
        --------
        >>> from twinsim.simulators import Dose
        >>> data = NonmemData.from_doses([[Dose(0.0, 100.0, compartment=0)], [Dose(0.0, 200.0, compartment=0)]])
        >>> data.ids, data.doses[1][0].amount
        ((1, 2), 200.0)
        """
        ids = tuple(range(1, len(doses) + 1)) if ids is None else tuple(ids)
        if len(ids) != len(doses):
            raise NonmemError(
                f"`ids` has {len(ids)} entries but `doses` has {len(doses)} subjects; give one id per subject"
            )
        if len(set(ids)) != len(ids):
            raise NonmemError(
                f"`ids` repeats some ids: {sorted(i for i in set(ids) if ids.count(i) > 1)}"
            )
        sorted_doses = tuple(tuple(sorted(subject, key=lambda d: d.time)) for subject in doses)
        obs = _default_observations(observations, ids)
        if covariates is None:
            cov = pd.DataFrame(index=pd.Index(ids, name="ID"))
        else:
            cov = pd.DataFrame(covariates).reset_index(drop=True)
            if len(cov) != len(ids):
                raise NonmemError(
                    f"`covariates` has {len(cov)} rows for {len(ids)} subjects; give one row per subject"
                )
            cov.index = pd.Index(ids, name="ID")
        return cls(ids=ids, doses=sorted_doses, observations=obs, covariates=cov)


def _default_observations(observations: pd.DataFrame | None, ids: tuple[Any, ...]) -> pd.DataFrame:
    if observations is None:
        frame = pd.DataFrame({c: [] for c in _OBSERVATION_COLUMNS})
    else:
        frame = pd.DataFrame(observations).copy()
        unknown = set(frame.columns) - set(_OBSERVATION_COLUMNS)
        if unknown or not {"ID", "TIME"} <= set(frame.columns):
            raise NonmemError(
                f"`observations` must have columns ID, TIME and any of DV, MDV, CMT, EVID; got {list(frame.columns)}"
            )
        missing_ids = set(frame["ID"]) - set(ids)
        if missing_ids:
            raise NonmemError(
                f"`observations` has IDs {sorted(missing_ids)} that are not among the subjects {list(ids)}"
            )
    if "DV" not in frame:
        frame["DV"] = np.nan
    if "MDV" not in frame:
        frame["MDV"] = frame["DV"].isna().astype(int)
    frame["CMT"] = frame["CMT"] if "CMT" in frame else 0
    frame["EVID"] = frame["EVID"] if "EVID" in frame else 0
    order = {subject: k for k, subject in enumerate(ids)}
    frame = frame.assign(_order=frame["ID"].map(order)).sort_values(
        ["_order", "TIME"], kind="stable"
    )
    return _typed_observations(frame.drop(columns="_order"))


def _typed_observations(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "ID": _id_values(frame["ID"]),
            "TIME": frame["TIME"].astype(float).to_numpy(),
            "DV": frame["DV"].astype(float).to_numpy(),
            "MDV": frame["MDV"].astype(np.int64).to_numpy(),
            "CMT": frame["CMT"].astype(np.int64).to_numpy(),
            "EVID": frame["EVID"].astype(np.int64).to_numpy(),
        }
    )
    return out


def _id_values(values: pd.Series) -> np.ndarray:
    array = values.to_numpy()
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    return array


# ---------------------------------------------------------------------------- reading
def read_nonmem(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    time_unit: str = "h",
    amount_unit: str = "mg",
) -> NonmemData:
    """Read a NONMEM data set.

    Parameters
    ----------
    source
        A CSV file (comma- or whitespace-separated, header on the first line; headers in
        any case) or a :class:`pandas.DataFrame` with the same columns.
    time_unit, amount_unit
        Units of ``TIME``/``II``/``DUR`` and of ``AMT`` in the data set; converted to h
        and mg (``RATE`` is in ``amount_unit`` per ``time_unit``). ``DV`` is kept as is.

    Returns
    -------
    NonmemData

    Raises
    ------
    NonmemError
        Missing ``ID``/``TIME``/``AMT`` columns, non-numeric cells (line and column),
        times decreasing within a subject, a subject's records split by other subjects,
        and unsupported records (EVID 3/4, RATE −1/−2, SS 2/3), each with its line.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame(
    ...     {"id": [1, 1, 1], "time": [0, 1, 2], "amt": [100, 0, 0], "dv": [0, 2.5, 1.9], "cmt": [1, 2, 2]}
    ... )
    >>> data = read_nonmem(frame)
    >>> data.doses[0][0].compartment, list(data.observations["DV"])
    (0, [2.5, 1.9])
    """
    try:
        to_hours = parse_quantity(f"1 {time_unit}", "time")
        to_mg = parse_quantity(f"1 {amount_unit}", "amount")
    except UnitError as error:
        raise NonmemError(f"`time_unit`/`amount_unit`: {error}") from None
    if isinstance(source, pd.DataFrame):
        table = source.reset_index(drop=True).astype(object)
        where = [f"row {i}" for i in range(len(table))]
    else:
        table, where = _read_file(Path(source))
    return _parse_table(table, where, to_hours, to_mg)


def _read_file(path: Path) -> tuple[pd.DataFrame, list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise NonmemError(
            f"cannot read NONMEM data {str(path)!r}: {error.strerror or error}"
        ) from None
    lines = text.splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise NonmemError(
            f"{path.name} is empty; a NONMEM data set has a header line and one line per record"
        )
    header_line, header = numbered[0]
    header = header.lstrip().removeprefix("#")
    records = [(n, line) for n, line in numbered[1:] if not line.lstrip().startswith("#")]
    comma = "," in header
    rows: list[list[str]] = []
    if comma:
        parsed = list(csv.reader([header, *(line for _, line in records)], skipinitialspace=True))
    else:
        parsed = [header.split(), *(line.split() for _, line in records)]
    columns = [c.strip() for c in parsed[0]]
    for (n, _), cells in zip(records, parsed[1:], strict=True):
        if len(cells) != len(columns):
            raise NonmemError(
                f"{path.name} line {n} has {len(cells)} cells but the header (line {header_line}) has "
                f"{len(columns)} columns; check the separators and quoting on that line"
            )
        rows.append([c.strip() for c in cells])
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    return frame, [f"line {n}" for n, _ in records]


def _parse_table(
    table: pd.DataFrame, where: list[str], to_hours: float, to_mg: float
) -> NonmemData:
    names: dict[str, str] = {}
    for column in table.columns:
        key = str(column).strip().upper()
        if key in _KNOWN:
            if key in names:
                raise NonmemError(
                    f"columns {names[key]!r} and {column!r} are both {key}; keep one of them"
                )
            names[key] = column
    missing = [c for c in _REQUIRED if c not in names]
    if missing:
        raise NonmemError(
            f"the data set has no {', '.join(missing)} column{'s' * (len(missing) > 1)}; required: "
            f"{', '.join(_REQUIRED)} (found: {', '.join(map(str, table.columns))})"
        )
    numbers = {key: _numeric(table[column], key, where) for key, column in names.items()}
    n = len(table)
    col = {key: numbers.get(key, np.full(n, np.nan)) for key in _KNOWN}
    covariate_columns = [c for c in table.columns if str(c).strip().upper() not in _KNOWN]

    problems: list[str] = []
    for key in ("ID", "TIME"):
        for i in np.flatnonzero(np.isnan(col[key]))[:_MAX_LISTED]:
            problems.append(f"{where[i]}: {key} is missing; every record needs an {key}")
    _stop(problems)

    amt = np.nan_to_num(col["AMT"])
    mdv_given = col["MDV"]
    evid = col["EVID"].copy()
    # without EVID, NONMEM reads a record with AMT > 0 as a dose, else MDV decides
    inferred = np.where(amt > 0, 1.0, np.where(np.nan_to_num(mdv_given) == 1, 2.0, 0.0))
    evid = np.where(np.isnan(evid), inferred, evid)

    ids = _id_values(pd.Series(col["ID"]))
    subjects = _subject_order(ids, where)
    _check_times(ids, col["TIME"], where)

    dose_rows: dict[Any, list[Dose]] = {s: [] for s in subjects}
    obs_index: list[int] = []
    for i in range(n):
        code = evid[i]
        if code in _DOSE_EVIDS:
            dose_rows[ids[i]].append(_dose(i, col, where, to_hours, to_mg, problems))
        elif code in (0, 2):
            obs_index.append(i)
        elif code in (3, 4):
            problems.append(
                f"{where[i]}: EVID={int(code)} ({'reset' if code == 3 else 'reset and dose'}) is not supported; "
                "split the subject at the reset into two IDs (each starting from zero)"
            )
        else:
            problems.append(
                f"{where[i]}: EVID={code:g} is not supported; use 0 (observation), 1 (dose), "
                "2 (other) or 101 (dose)"
            )
        if len(problems) >= _MAX_LISTED:
            break
    _stop(problems)

    obs = pd.DataFrame(
        {
            "ID": ids[obs_index],
            "TIME": col["TIME"][obs_index] * to_hours,
            "DV": col["DV"][obs_index],
            "MDV": _mdv(col["MDV"][obs_index], col["DV"][obs_index], evid[obs_index]),
            "CMT": np.nan_to_num(col["CMT"][obs_index]),
            "EVID": evid[obs_index],
        }
    )
    for i, position in enumerate(obs_index):
        if obs["MDV"].iloc[i] == 0 and math.isnan(obs["DV"].iloc[i]):
            problems.append(
                f"{where[position]}: observation (EVID 0, MDV 0) without DV; give DV or set MDV=1"
            )
        if obs["CMT"].iloc[i] < 0 or obs["CMT"].iloc[i] != int(obs["CMT"].iloc[i]):
            problems.append(
                f"{where[position]}: CMT={obs['CMT'].iloc[i]:g} must be a whole number ≥ 0"
            )
        if len(problems) >= _MAX_LISTED:
            break
    _stop(problems)

    covariates, records = _covariates(table, covariate_columns, ids, subjects)
    records.insert(0, "TIME", col["TIME"] * to_hours)
    records.insert(0, "ID", ids)
    return NonmemData(
        ids=subjects,
        doses=tuple(tuple(dose_rows[s]) for s in subjects),
        observations=_typed_observations(obs),
        covariates=covariates,
        covariate_records=records,
    )


def _stop(problems: list[str]) -> None:
    if problems:
        more = " (first ones listed)" if len(problems) >= _MAX_LISTED else ""
        raise NonmemError(
            f"cannot read the NONMEM data set ({len(problems)} problem{'s' * (len(problems) > 1)}{more}):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def _numeric(values: pd.Series, key: str, where: list[str]) -> np.ndarray:
    out = np.full(len(values), np.nan)
    problems = []
    for i, raw in enumerate(values.tolist()):
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            continue
        if isinstance(raw, int | float | np.integer | np.floating) and not isinstance(raw, bool):
            out[i] = float(raw)
            continue
        text = str(raw).strip()
        if text in ("", "."):
            continue
        try:
            out[i] = float(text)
        except ValueError:
            problems.append(
                f"{where[i]}, column {key}: {text!r} is not a number; NONMEM data are numeric ('.' = missing)"
            )
        else:
            if not math.isfinite(out[i]):
                problems.append(f"{where[i]}, column {key}: {text!r} is not a finite number")
        if len(problems) >= _MAX_LISTED:
            break
    _stop(problems)
    return out


def _subject_order(ids: np.ndarray, where: list[str]) -> tuple[Any, ...]:
    order: list[Any] = []
    seen: set[Any] = set()
    for i, subject in enumerate(ids.tolist()):
        if order and subject == order[-1]:
            continue
        if subject in seen:
            first = next(j for j, s in enumerate(ids.tolist()) if s == subject)
            raise NonmemError(
                f"{where[i]}: ID {subject} appears again after other subjects (first at {where[first]}); "
                "NONMEM would read a new subject here: keep each subject's records together, sorted by TIME"
            )
        seen.add(subject)
        order.append(subject)
    return tuple(order)


def _check_times(ids: np.ndarray, times: np.ndarray, where: list[str]) -> None:
    for i in range(1, len(ids)):
        if ids[i] == ids[i - 1] and times[i] < times[i - 1]:
            raise NonmemError(
                f"{where[i]}: TIME {times[i]:g} is before the previous record's TIME {times[i - 1]:g} "
                f"({where[i - 1]}) for ID {ids[i]}; sort each subject's records by TIME"
            )
    negative = np.flatnonzero(times < 0)
    if negative.size:
        i = int(negative[0])
        raise NonmemError(
            f"{where[i]}: TIME {times[i]:g} is negative; shift the time origin so that TIME ≥ 0"
        )


def _mdv(mdv: np.ndarray, dv: np.ndarray, evid: np.ndarray) -> np.ndarray:
    default = np.where((evid == 0) & ~np.isnan(dv), 0, 1)
    return np.where(np.isnan(mdv), default, mdv)


def _dose(
    i: int,
    col: dict[str, np.ndarray],
    where: list[str],
    to_hours: float,
    to_mg: float,
    problems: list[str],
) -> Dose:
    def value(key: str) -> float:
        v = col[key][i]
        return 0.0 if math.isnan(v) else float(v)

    amount, rate, ss, interval, additional = (
        value("AMT"),
        value("RATE"),
        value("SS"),
        value("II"),
        value("ADDL"),
    )
    duration, cmt = value("DUR"), value("CMT")
    at = where[i]
    if amount < 0:
        problems.append(f"{at}: AMT={amount:g} must be ≥ 0 (mg)")
    if rate == -1:
        problems.append(
            f"{at}: RATE=-1 (modelled rate) is not supported; give the infusion rate in RATE"
        )
    elif rate == -2:
        problems.append(
            f"{at}: RATE=-2 (modelled duration) not supported; give the duration (h) in a DUR column "
            "or the rate in RATE"
        )
    elif rate < 0:
        problems.append(f"{at}: RATE={rate:g} must be ≥ 0 (0 = bolus, > 0 = infusion rate)")
    if duration < 0:
        problems.append(f"{at}: DUR={duration:g} must be ≥ 0 h")
    if rate > 0 and duration > 0:
        problems.append(
            f"{at}: RATE={rate:g} and DUR={duration:g} are both given; give one of them"
        )
    if ss not in (0, 1):
        problems.append(f"{at}: SS={ss:g} is not supported; use 0 or 1 (steady state)")
    if interval < 0:
        problems.append(f"{at}: II={interval:g} must be ≥ 0")
    if additional < 0 or additional != int(additional):
        problems.append(f"{at}: ADDL={additional:g} must be a whole number ≥ 0")
    if (additional > 0 or ss == 1) and interval <= 0:
        problems.append(
            f"{at}: {'ADDL > 0' if additional > 0 else 'SS=1'} needs the dosing interval II > 0"
        )
    if cmt < 0 or cmt != int(cmt):
        problems.append(
            f"{at}: CMT={cmt:g} must be a whole number ≥ 1 on a dose (turning compartments off is not supported)"
        )
    infusion_h = duration if duration > 0 else (amount / rate if rate > 0 else 0.0)
    if ss == 1 and interval > 0 and infusion_h > interval:
        problems.append(
            f"{at}: the infusion lasts {infusion_h:g} h, longer than II={interval:g} at steady state"
        )
    compartment = (
        max(int(cmt), 1) - 1 if cmt == int(cmt) else 0
    )  # CMT 0 or missing: first compartment
    return Dose(
        time=float(col["TIME"][i]) * to_hours,
        amount=amount * to_mg,
        compartment=compartment,
        rate=rate * to_mg / to_hours if rate > 0 else 0.0,
        duration=duration * to_hours,
        steady_state=ss == 1,
        interval=interval * to_hours,
        additional=int(additional) if additional == int(additional) else 0,
    )


def _covariates(
    table: pd.DataFrame, columns: list[Any], ids: np.ndarray, subjects: tuple[Any, ...]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    first = {s: int(np.flatnonzero(ids == s)[0]) for s in subjects}
    out: dict[Any, Any] = {}
    records: dict[Any, Any] = {}
    varying = []
    for column in columns:
        values = table[column]
        numeric = _maybe_numeric(values)
        records[column] = numeric.to_numpy()
        out[column] = numeric.iloc[[first[s] for s in subjects]].to_numpy()
        per_subject = (
            pd.DataFrame({"id": ids, "v": numeric})
            .groupby("id", sort=False)["v"]
            .nunique(dropna=False)
        )
        if (per_subject > 1).any():
            varying.append(str(column))
    if varying:
        warnings.warn(
            f"covariates {', '.join(varying)} change within subjects; `covariates` keeps the value on "
            "each subject's first record, `covariate_records` every record's (a model covariate "
            "declared Covariate(..., time_varying=True) uses them when fitted)",
            UserWarning,
            stacklevel=3,
        )
    frame = pd.DataFrame(out, index=pd.Index(list(subjects), name="ID"))
    return frame, pd.DataFrame(records, index=pd.RangeIndex(len(table)))


def _maybe_numeric(values: pd.Series) -> pd.Series:
    cleaned = values.map(lambda v: np.nan if isinstance(v, str) and v.strip() in ("", ".") else v)
    try:
        return pd.to_numeric(cleaned)
    except (ValueError, TypeError):
        return values.astype(object)


# ---------------------------------------------------------------------------- writing
def _cell(value: Any, *, compact: bool = True) -> str:
    """One cell: '.' for missing; whole floats as integers when ``compact`` (standard columns)."""
    if value is None:
        return "."
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return "."
        if compact and number.is_integer() and abs(number) < 2**53:
            return str(int(number))
        return repr(number)
    text = str(value)
    return "." if text == "" else text


def write_nonmem(data: NonmemData, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as a NONMEM CSV file, atomically (a temporary file, then a rename).

    Columns: :data:`STANDARD_COLUMNS`, ``DUR`` when some dose has an infusion duration,
    then the covariates. Each subject's records are sorted by time; at equal times
    observations come before doses (pre-dose, as :func:`twinsim.simulators.simulate`
    reads them). Missing values are written as ``.``; CMT is 1-based.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    NonmemError
        Non-numeric IDs (NONMEM needs numbers), or a covariate column named like a
        standard column.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from twinsim.simulators import Dose
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "data.csv"
    >>> _ = write_nonmem(NonmemData.from_doses([[Dose(0.0, 100.0, compartment=0, interval=12.0, additional=3)]]), path)
    >>> path.read_text().splitlines()
    ['ID,TIME,AMT,EVID,CMT,RATE,II,ADDL,SS,DV,MDV', '1,0,100,1,1,0,12,3,0,.,1']
    """
    path = Path(path)
    for subject in data.ids:
        if not isinstance(subject, int | float | np.integer | np.floating) or isinstance(
            subject, bool
        ):
            raise NonmemError(
                f"ID {subject!r} is not a number; NONMEM needs numeric IDs: map them, e.g. "
                "NonmemData.from_doses(..., ids=range(1, n + 1))"
            )
    clash = [c for c in data.covariates.columns if str(c).strip().upper() in _KNOWN]
    if clash:
        raise NonmemError(
            f"covariate columns {clash} clash with standard NONMEM columns; rename them"
        )
    with_duration = any(d.duration > 0 for subject in data.doses for d in subject)
    columns = [
        *STANDARD_COLUMNS,
        *(["DUR"] if with_duration else []),
        *map(str, data.covariates.columns),
    ]

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    observations = data.observations
    covariates = data.covariates
    empty = [
        s
        for s, d in zip(data.ids, data.doses, strict=True)
        if not d and not (observations["ID"] == s).any()
    ]
    if empty:
        raise NonmemError(
            f"subjects {empty} have no dose and no observation record; a NONMEM data set cannot hold them: "
            "give each subject at least one record (e.g. an EVID=2 output time)"
        )
    for subject, doses in zip(data.ids, data.doses, strict=True):
        # column by column: a row of mixed dtypes would turn integers into floats
        covariate_cells = [
            _cell(covariates[c].loc[subject], compact=False) for c in covariates.columns
        ]
        rows: list[tuple[float, int, list[str]]] = []
        for record in observations[observations["ID"] == subject].itertuples(index=False):
            cells = [
                record.ID,
                record.TIME,
                0,
                record.EVID,
                record.CMT,
                0,
                0,
                0,
                0,
                record.DV,
                record.MDV,
            ]
            rows.append(
                (
                    float(record.TIME),
                    0,
                    [_cell(c) for c in cells] + ([_cell(0)] if with_duration else []),
                )
            )
        for d in doses:
            cells = [
                subject,
                d.time,
                d.amount,
                1,
                d.compartment + 1,
                d.rate,
                d.interval,
                d.additional,
                int(d.steady_state),
                None,
                1,
            ]
            rows.append(
                (
                    float(d.time),
                    1,
                    [_cell(c) for c in cells] + ([_cell(d.duration)] if with_duration else []),
                )
            )
        rows.sort(
            key=lambda r: (r[0], r[1])
        )  # stable: same-time records of a kind keep their order
        for _, _, cells in rows:
            writer.writerow(cells + covariate_cells)

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(buffer.getvalue())
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path
