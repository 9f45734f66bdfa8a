"""Labels at the edge: engine arrays to ``xarray``/``pandas``, NetCDF and streamed Zarr stores.

The engines return raw arrays (:class:`twinsim.simulators.Solution`); this module is the one
adapter that names them. A dataset has dims ``subject``, ``time`` and ``output``:

- ``value [subject, time, output]`` and one variable per output (``conc [subject, time]``),
  each with its unit (``attrs["units"]``, and the ``unit`` coordinate on ``output``);
- ``status [subject]`` (solver result code, 0 = success) and ``status_name [subject]``;
- covariates as coordinates on ``subject``;
- a ``time`` coordinate in h when all subjects share their times, else a 2-D
  ``time_h [subject, time]`` coordinate;
- provenance in ``attrs``: model name, citation, engine method, twinsim version.

Files are written so that a crash never leaves a half-written result: NetCDF through a
temporary file renamed into place, Zarr cohorts chunk by chunk with a per-chunk completion
marker, so that a restarted run skips finished chunks and ends with the same store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from ..priors import ODEModel
from ..simulators._engine import SolveStatus
from ..simulators._metrics import AUCMethod, exposure_metrics

__all__ = [
    "OutputError",
    "SolutionLike",
    "ZarrCohortWriter",
    "metrics_table",
    "open_zarr_cohort",
    "to_dataset",
    "to_frame",
    "write_netcdf",
    "write_zarr_chunk",
]

#: Names the dataset uses itself; outputs and covariates must not take them.
RESERVED_NAMES = frozenset(
    {
        "subject",
        "time",
        "output",
        "value",
        "unit",
        "status",
        "status_name",
        "time_h",
        "chunk",
        "chunk_complete",
    }
)
#: Status of subjects in a Zarr cohort whose chunk has not been written yet.
NOT_COMPUTED = -1
_STORE_KEY = "twinsim_cohort"
_STORE_FORMAT = 1


class OutputError(ValueError):
    """Simulation results could not be labelled, written or read as asked."""


class SolutionLike(Protocol):
    """What :func:`to_dataset` reads from a solution (:class:`twinsim.simulators.Solution`)."""

    times: Any  # [subject, time], h
    outputs: Any  # [subject, time, output]
    status: Any  # [subject], int


# --------------------------------------------------------------------------- labelling


def _status_names(status: np.ndarray) -> np.ndarray:
    names = {int(s): s.name.lower() for s in SolveStatus}
    names[NOT_COMPUTED] = "not_computed"
    return np.array([names.get(int(s), f"unknown_{int(s)}") for s in status], dtype=str)


def _status_attrs() -> dict[str, Any]:
    return {
        "long_name": "solver status per subject (0 = success)",
        "flag_values": [int(s) for s in SolveStatus],
        "flag_meanings": " ".join(s.name.lower() for s in SolveStatus),
    }


def _output_units(model: ODEModel) -> list[str]:
    units = dict(model.output_units)
    return [units.get(name, "") for name in model.output_names]


def _provenance(model: ODEModel, method: str, attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    from .. import __version__

    record: dict[str, Any] = {
        "model": model.name,
        "citation": model.citation,
        "simulation_method": method,
        "twinsim_version": __version__,
        "time_units": "h",
    }
    record.update(dict(attrs or {}))
    return record


def _solution_arrays(
    solution: SolutionLike, model: ODEModel
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for field in ("times", "outputs", "status"):
        if not hasattr(solution, field):
            raise OutputError(
                f"`solution` has no `{field}`; pass the Solution returned by twinsim.simulators.simulate"
            )
    outputs = np.asarray(solution.outputs, dtype=np.float64)
    times = np.asarray(solution.times, dtype=np.float64)
    status = np.asarray(solution.status).astype(np.int64)
    names = tuple(getattr(solution, "output_names", model.output_names))
    if names != model.output_names:
        raise OutputError(
            f"`solution` has outputs {list(names)} but model {model.name!r} has {list(model.output_names)}; "
            "label a solution with the model that produced it"
        )
    if outputs.ndim != 3 or outputs.shape[2] != len(model.output_names):
        raise OutputError(
            f"`solution.outputs` must have shape (subject, time, {len(model.output_names)}), "
            f"got {outputs.shape}"
        )
    n, n_time = outputs.shape[:2]
    if times.ndim == 1:
        times = np.broadcast_to(times, (n, times.shape[0]))
    if times.shape != (n, n_time):
        raise OutputError(
            f"`solution.times` must have shape ({n}, {n_time}) like the outputs, got {times.shape}"
        )
    if status.shape != (n,):
        raise OutputError(
            f"`solution.status` must have shape ({n},), one code per subject, got {status.shape}"
        )
    return times, outputs, status


def _subject_ids(subject_ids: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray:
    if subject_ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(subject_ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise OutputError(
            f"`subject_ids` must list one id per subject ({n}), got shape {ids.shape}"
        )
    if len(np.unique(ids)) != n:
        values, counts = np.unique(ids, return_counts=True)
        raise OutputError(
            f"`subject_ids` must be unique; repeated: {values[counts > 1][:5].tolist()}"
        )
    return ids


def _covariates(
    covariates: Mapping[str, Any] | pd.DataFrame | None, n: int, taken: set[str]
) -> dict[str, np.ndarray]:
    if covariates is None:
        return {}
    if isinstance(covariates, pd.DataFrame):
        covariates = {str(name): covariates[name].to_numpy() for name in covariates.columns}
    result = {}
    for name, values in covariates.items():
        if name in RESERVED_NAMES or name in taken:
            raise OutputError(
                f"covariate {name!r} clashes with a dataset name ({sorted(RESERVED_NAMES | taken)}); rename it"
            )
        array = np.asarray(values)
        if array.dtype == object:
            array = array.astype(str) if all(isinstance(v, str) for v in array) else array
        if array.ndim != 1 or array.shape[0] != n:
            raise OutputError(
                f"covariate {name!r} must have one value per subject ({n}), got shape {array.shape}"
            )
        result[name] = array
    return result


def _check_output_names(model: ODEModel) -> None:
    clash = sorted(set(model.output_names) & RESERVED_NAMES)
    if clash:
        raise OutputError(
            f"model {model.name!r} names outputs {clash}, which the dataset uses itself "
            f"({sorted(RESERVED_NAMES)}); rename those outputs"
        )


def _shared_times(times: np.ndarray) -> np.ndarray | None:
    """The common time grid when every subject has the same times, else ``None``."""
    return times[0] if np.all(times == times[:1]) else None


_TIME_ATTRS = {"units": "h", "long_name": "time since the start"}
_TIME_H_ATTRS = {"units": "h", "long_name": "time since the start, per subject"}


def _time_coords(times: np.ndarray) -> dict[str, Any]:
    shared = _shared_times(times)
    if shared is not None:
        return {"time": ("time", shared, dict(_TIME_ATTRS))}
    return {"time_h": (("subject", "time"), times, dict(_TIME_H_ATTRS))}


def to_dataset(
    solution: SolutionLike,
    *,
    model: ODEModel,
    subject_ids: Sequence[Any] | np.ndarray | None = None,
    covariates: Mapping[str, Any] | pd.DataFrame | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Label a solution: dims ``subject``, ``time``, ``output``; units and provenance in attrs.

    Parameters
    ----------
    solution
        A :class:`twinsim.simulators.Solution` (or anything with ``times [subject, time]``,
        ``outputs [subject, time, output]`` and ``status [subject]``).
    model
        The model that produced it: output names, their units and the citation.
    subject_ids
        One id per subject (default ``0 .. n-1``); unique.
    covariates
        ``{name: values}`` or a DataFrame, one value per subject; become coordinates on
        ``subject``.
    attrs
        Extra provenance (spec, seed, ...) added to the dataset's attrs.

    Returns
    -------
    xarray.Dataset
        ``value [subject, time, output]``, one ``[subject, time]`` variable per output,
        ``status`` and ``status_name [subject]``; ``time`` (shared) or ``time_h [subject, time]``
        (per subject) in h.

    Raises
    ------
    OutputError
        For shapes that do not match, outputs other than the model's, repeated subject ids,
        covariates of the wrong length, or names that clash with the dataset's own.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from twinsim.priors import ODEModel
    >>> from twinsim.simulators import DosingEvents, simulate
    >>> model = ODEModel(name="iv1", states=("central",), parameters=("cl", "v"),
    ...     rhs=lambda t, y, p: {"central": -p.cl / p.v * y.central},
    ...     outputs={"conc": lambda y, p: y.central / p.v}, output_units={"conc": "mg/L"},
    ...     linear=True)
    >>> sol = simulate(model, jnp.array([[5.0, 50.0], [4.0, 40.0]]),
    ...                DosingEvents.repeated(100.0, 12.0, 1, compartment=0), jnp.array([1.0, 2.0]))
    >>> ds = to_dataset(sol, model=model, covariates={"weight_kg": [70.0, 56.0]})
    >>> dict(ds["conc"].sizes), ds["conc"].attrs["units"], ds["status_name"].values.tolist()
    ({'subject': 2, 'time': 2}, 'mg/L', ['success', 'success'])
    """
    _check_output_names(model)
    times, outputs, status = _solution_arrays(solution, model)
    n = outputs.shape[0]
    units = _output_units(model)
    ids = _subject_ids(subject_ids, n)
    covs = _covariates(covariates, n, set(model.output_names))
    data_vars: dict[str, Any] = {
        "value": (
            ("subject", "time", "output"),
            outputs,
            {"long_name": "model outputs (units in the `unit` coordinate)"},
        ),
    }
    for k, (name, unit) in enumerate(zip(model.output_names, units, strict=True)):
        data_vars[name] = (
            ("subject", "time"),
            outputs[:, :, k],
            {"long_name": name, "units": unit} if unit else {"long_name": name},
        )
    data_vars["status"] = ("subject", status, _status_attrs())
    data_vars["status_name"] = ("subject", _status_names(status), {"long_name": "solver status"})
    coords: dict[str, Any] = {
        "subject": ("subject", ids),
        "output": ("output", np.array(model.output_names, dtype=str)),
        "unit": ("output", np.array(units, dtype=str)),
        **_time_coords(times),
        **{name: ("subject", values) for name, values in covs.items()},
    }
    method = getattr(solution, "method", "unknown")
    return xr.Dataset(data_vars, coords=coords, attrs=_provenance(model, method, attrs))


def _check_dataset(dataset: xr.Dataset) -> None:
    if "value" not in dataset or dataset["value"].dims != ("subject", "time", "output"):
        raise OutputError(
            "`dataset` must have a `value` variable with dims (subject, time, output); "
            "make it with twinsim.scenarios.to_dataset"
        )


def _times_of(dataset: xr.Dataset) -> np.ndarray:
    """Times as [subject, time], h."""
    n, n_time = dataset.sizes["subject"], dataset.sizes["time"]
    if "time_h" in dataset.variables:
        return np.asarray(dataset["time_h"].transpose("subject", "time").values, dtype=np.float64)
    if "time" in dataset.variables:
        return np.broadcast_to(np.asarray(dataset["time"].values, dtype=np.float64), (n, n_time))
    raise OutputError("`dataset` has neither a `time` coordinate nor a `time_h` variable")


def _covariate_names(dataset: xr.Dataset) -> list[str]:
    return [
        str(name)
        for name, coord in dataset.coords.items()
        if coord.dims == ("subject",) and name != "subject"
    ]


def to_frame(dataset: xr.Dataset) -> pd.DataFrame:
    """Tidy table: one row per subject, time and output.

    Parameters
    ----------
    dataset
        A dataset from :func:`to_dataset` or :func:`open_zarr_cohort`.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject, time, output, value, unit`` and then one per covariate; rows
        ordered by subject, time, output.

    Raises
    ------
    OutputError
        When ``dataset`` lacks ``value [subject, time, output]`` or a time coordinate.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"value": (("subject", "time", "output"), np.ones((1, 2, 1)))},
    ...     coords={"subject": [7], "time": [0.0, 1.0], "output": ["conc"], "unit": ("output", ["mg/L"])})
    >>> to_frame(ds).to_dict("list")
    {'subject': [7, 7], 'time': [0.0, 1.0], 'output': ['conc', 'conc'], 'value': [1.0, 1.0], 'unit': ['mg/L', 'mg/L']}
    """
    _check_dataset(dataset)
    value = np.asarray(dataset["value"].values)
    n, n_time, n_out = value.shape
    outputs = np.asarray(dataset["output"].values).astype(str)
    units = (
        np.asarray(dataset["unit"].values).astype(str)
        if "unit" in dataset.coords
        else np.full(n_out, "")
    )
    frame = pd.DataFrame(
        {
            "subject": np.repeat(np.asarray(dataset["subject"].values), n_time * n_out),
            "time": np.repeat(_times_of(dataset).reshape(-1), n_out),
            "output": np.tile(outputs, n * n_time),
            "value": value.reshape(-1),
            "unit": np.tile(units, n * n_time),
        }
    )
    for name in _covariate_names(dataset):
        frame[name] = np.repeat(np.asarray(dataset[name].values), n_time * n_out)
    return frame


def _auc_unit(unit: str) -> str:
    if not unit:
        return ""  # the output's unit is not declared: do not guess the area's
    if unit.count("/") == 1:
        numerator, denominator = unit.split("/")
        return f"{numerator}·h/{denominator}"
    return f"{unit}·h"


def metrics_table(
    dataset: xr.Dataset,
    output: str = "conc",
    *,
    tau: float | None = None,
    start: float | None = None,
    trough_at: float | None = None,
    n_points: int = 3,
    method: AUCMethod = "linear-up/log-down",
) -> pd.DataFrame:
    """Exposure metrics of one output, one row per subject.

    Parameters
    ----------
    dataset
        A dataset from :func:`to_dataset` or :func:`open_zarr_cohort`.
    output
        Output to summarise (default ``"conc"``).
    tau, start, trough_at, n_points, method
        As in :func:`twinsim.simulators.exposure_metrics`: with ``tau`` the table adds
        ``auc_tau`` over ``[start, start + tau]`` (default: the last ``tau`` h) and ``trough``.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject, status, auc_last, auc_inf, cmax, tmax, cmin, half_life,
        lambda_z, r_squared, half_life_estimable`` (+ ``auc_tau, trough``) and the
        covariates. Where the half-life is not estimable, ``auc_inf``, ``half_life``,
        ``lambda_z`` and ``r_squared`` are missing (NaN). Units in ``frame.attrs["units"]``.

    Raises
    ------
    OutputError
        For an unknown output or a dataset without the expected layout.
    twinsim.simulators.MetricsError
        For intervals outside the simulated times.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> t = np.array([0.0, 1.0, 2.0, 3.0])
    >>> ds = xr.Dataset({"value": (("subject", "time", "output"), 8 * 0.5 ** t[None, :, None])},
    ...     coords={"subject": [1], "time": t, "output": ["conc"], "unit": ("output", ["mg/L"])})
    >>> table = metrics_table(ds)
    >>> float(table["half_life"].iloc[0]), table.attrs["units"]["auc_inf"]
    (1.0, 'mg·h/L')
    """
    _check_dataset(dataset)
    outputs = [str(o) for o in np.asarray(dataset["output"].values)]
    if output not in outputs:
        raise OutputError(f"`output` {output!r} is not in the dataset; known outputs: {outputs}")
    k = outputs.index(output)
    conc = np.asarray(dataset["value"].values[:, :, k], dtype=np.float64)
    times = _times_of(dataset)
    metrics = exposure_metrics(
        times, conc, tau=tau, start=start, trough_at=trough_at, n_points=n_points, method=method
    )
    estimable = np.asarray(metrics.half_life_estimable)
    columns: dict[str, Any] = {"subject": np.asarray(dataset["subject"].values)}
    if "status" in dataset:
        columns["status"] = _status_names(np.asarray(dataset["status"].values))
    for name, values in metrics._asdict().items():
        if values is None:
            continue
        values = np.asarray(values)
        if name in ("auc_inf", "half_life", "lambda_z", "r_squared"):
            values = np.where(estimable, values, np.nan)
        columns[name] = values
    for name in _covariate_names(dataset):
        columns[name] = np.asarray(dataset[name].values)
    frame = pd.DataFrame(columns)
    unit = str(np.asarray(dataset["unit"].values)[k]) if "unit" in dataset.coords else ""
    auc_unit = _auc_unit(unit)
    frame.attrs["output"] = output
    frame.attrs["units"] = {
        "auc_last": auc_unit,
        "auc_inf": auc_unit,
        "auc_tau": auc_unit,
        "cmax": unit,
        "cmin": unit,
        "trough": unit,
        "tmax": "h",
        "half_life": "h",
        "lambda_z": "1/h",
        "r_squared": "1",
    }
    return frame


# --------------------------------------------------------------------------- NetCDF


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_netcdf(
    dataset: xr.Dataset, path: str | os.PathLike[str], *, engine: str | None = None
) -> Path:
    """Write ``dataset`` to NetCDF atomically: the file at ``path`` is complete or untouched.

    The data go to a temporary file in the same directory, which is flushed to disk and
    then renamed over ``path`` (``os.replace``, atomic on POSIX and Windows). On any error
    the temporary file is removed and a previous file at ``path`` is left as it was.

    Parameters
    ----------
    dataset
        The dataset to write.
    path
        Destination file; its directory must exist.
    engine
        xarray NetCDF engine (``"netcdf4"``, ``"h5netcdf"`` with h5py, ...); default: xarray's choice.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputError
        When the directory of ``path`` does not exist. Errors of the NetCDF writer propagate
        unchanged (after the clean-up).

    Examples
    --------
    >>> import tempfile, xarray as xr
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     out = write_netcdf(xr.Dataset({"x": ("t", [1.0, 2.0])}), f"{folder}/run.nc")
    ...     xr.open_dataset(out)["x"].values.tolist()
    [1.0, 2.0]
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(
            f"cannot write {str(path)!r}: directory {str(directory)!r} does not exist; create it first"
        )
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        dataset.to_netcdf(temporary, engine=engine)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)
    return path


# --------------------------------------------------------------------------- Zarr cohorts


def _digest(*parts: Any) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            if part.dtype.kind in "OUST":
                data = "\x1f".join(str(v) for v in part.reshape(-1)).encode()
            else:
                data = np.ascontiguousarray(part).tobytes()
            hasher.update(f"{part.dtype.kind}{part.shape}".encode())
            hasher.update(data)
        else:
            hasher.update(json.dumps(part, sort_keys=True, default=str).encode())
        hasher.update(b"\x1e")
    return hasher.hexdigest()


def _create_array(
    group: zarr.Group,
    name: str,
    values: np.ndarray | None,
    *,
    shape,
    chunks,
    dtype,
    dims,
    fill_value=None,
    attrs=None,
):
    kind = np.dtype(dtype).kind if dtype is not str else "U"
    array = group.create_array(
        name,
        shape=shape,
        chunks=chunks,
        dtype=str if kind in "UOST" else dtype,
        fill_value=fill_value,
        dimension_names=dims,
        # every chunk is stored even when it equals the fill value (an all-failed chunk
        # is NaN): a rewrite after a restart then always replaces what an interrupted run left
        config={"write_empty_chunks": True},
    )
    if attrs:
        array.attrs.update(attrs)
    if values is not None:
        array[...] = values.astype(str) if kind in "UOST" else values
    return array


class ZarrCohortWriter:
    """Stream a cohort to a Zarr store chunk by chunk, resumably.

    The store is laid out for the whole cohort when first created (subject ids, times,
    covariates, units, provenance); outputs and status are then written one chunk of
    ``chunk_size`` subjects at a time. After a chunk's data, its entry of the
    ``chunk_complete [chunk]`` marker array is set: a restarted run opens the same store,
    skips the chunks marked complete and rewrites any chunk it was writing when it stopped,
    so the final store is the same as that of an uninterrupted run. Each cohort chunk
    maps to its own Zarr chunks, so different processes may write different chunks at once.

    Parameters
    ----------
    path
        Directory of the Zarr store (format 3).
    model
        The model simulated: output names, units, citation.
    n_subjects
        Size of the cohort.
    chunk_size
        Subjects per chunk (the last chunk may be smaller).
    times
        Output times in h: ``[time]`` shared by every subject or ``[n_subjects, time]``.
    subject_ids
        One id per subject (default ``0 .. n_subjects-1``).
    covariates
        ``{name: values}`` or a DataFrame, one value per subject (coordinates on ``subject``).
    attrs
        Extra provenance for the store's attrs.
    method
        Engine method the chunks are simulated with (``"auto"`` resolves as the engine does);
        every chunk must match.
    overwrite
        Replace an existing store at ``path`` instead of resuming it.

    Raises
    ------
    OutputError
        When ``path`` holds a store made for a different cohort (and ``overwrite`` is off),
        or for inconsistent sizes.

    Examples
    --------
    >>> import tempfile, jax.numpy as jnp
    >>> from twinsim.priors import ODEModel
    >>> from twinsim.simulators import DosingEvents, simulate
    >>> model = ODEModel(name="iv1", states=("central",), parameters=("cl", "v"),
    ...     rhs=lambda t, y, p: {"central": -p.cl / p.v * y.central},
    ...     outputs={"conc": lambda y, p: y.central / p.v}, linear=True)
    >>> params, times = jnp.linspace(4.0, 6.0, 5)[:, None] * jnp.array([1.0, 10.0]), jnp.array([1.0, 2.0])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     writer = ZarrCohortWriter(f"{folder}/cohort.zarr", model=model, n_subjects=5,
    ...                               chunk_size=2, times=times)
    ...     done = writer.fill(lambda s: simulate(model, params[s], DosingEvents.repeated(100.0, 12.0, 1, compartment=0), times))
    ...     ds = open_zarr_cohort(f"{folder}/cohort.zarr")
    ...     done, dict(ds.sizes)
    ([0, 1, 2], {'subject': 5, 'time': 2, 'output': 1})
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        model: ODEModel,
        n_subjects: int,
        chunk_size: int,
        times: Any,
        subject_ids: Sequence[Any] | np.ndarray | None = None,
        covariates: Mapping[str, Any] | pd.DataFrame | None = None,
        attrs: Mapping[str, Any] | None = None,
        method: str = "auto",
        overwrite: bool = False,
    ):
        _check_output_names(model)
        if int(n_subjects) != n_subjects or n_subjects < 1:
            raise OutputError(f"`n_subjects` must be a whole number ≥ 1, got {n_subjects!r}")
        if int(chunk_size) != chunk_size or chunk_size < 1:
            raise OutputError(
                f"`chunk_size` must be a whole number ≥ 1 (subjects per chunk), got {chunk_size!r}"
            )
        n_subjects, chunk_size = int(n_subjects), int(chunk_size)
        if method == "auto":
            method = "linear" if model.linear else "ode"
        times = np.asarray(times, dtype=np.float64)
        if (
            times.ndim not in (1, 2)
            or (times.ndim == 2 and times.shape[0] != n_subjects)
            or times.shape[-1] == 0
        ):
            raise OutputError(
                f"`times` must have shape (time,) or ({n_subjects}, time) in h, got {times.shape}"
            )
        ids = _subject_ids(subject_ids, n_subjects)
        covs = _covariates(covariates, n_subjects, set(model.output_names))
        units = _output_units(model)
        provenance = _provenance(model, method, attrs)
        n_chunks = -(-n_subjects // chunk_size)
        fingerprint = _digest(
            model.name, list(model.output_names), units, method, n_subjects, chunk_size, times, ids,
            sorted(covs), *[covs[k] for k in sorted(covs)], provenance,
        )  # fmt: skip
        self.path = Path(path)
        meta = {
            "format": _STORE_FORMAT,
            "n_subjects": n_subjects,
            "chunk_size": chunk_size,
            "n_chunks": n_chunks,
            "output_names": list(model.output_names),
            "method": method,
            "shared_times": times.ndim == 1,
            "fingerprint": fingerprint,
        }
        if self.path.exists() and overwrite:
            shutil.rmtree(self.path)
        if self.path.exists():
            existing = _read_meta(self.path)
            if existing.get("fingerprint") != fingerprint:
                differ = [k for k in meta if existing.get(k) != meta[k] and k != "fingerprint"]
                detail = (
                    f"differs in {differ}"
                    if differ
                    else "differs in times, subject ids, covariates or attrs"
                )
                raise OutputError(
                    f"Zarr store {str(self.path)!r} was created for a different cohort ({detail}); "
                    "pass overwrite=True to replace it, or write to another path"
                )
        else:
            self._create(times, ids, covs, units, provenance, meta)
        self._attach(meta)

    # ------------------------------------------------------------------ creation
    def _create(self, times, ids, covs, units, provenance, meta) -> None:
        n, chunk = meta["n_subjects"], meta["chunk_size"]
        n_time, n_out = times.shape[-1], len(meta["output_names"])
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise OutputError(
                f"cannot create {str(self.path)!r}: directory {str(parent)!r} does not exist; create it first"
            )
        # lay the store out in a temporary directory and rename it into place: a crash
        # during creation leaves no half-made store behind
        staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent))
        try:
            os.chmod(staging, 0o755)  # mkdtemp makes it private; the store is an ordinary directory
            group = zarr.open_group(staging, mode="w", zarr_format=3)
            _create_array(
                group, "subject", ids, shape=(n,), chunks=(n,), dtype=ids.dtype, dims=("subject",)
            )
            _create_array(
                group, "output", np.array(meta["output_names"], dtype=str), shape=(n_out,), chunks=(n_out,),
                dtype=str, dims=("output",),
            )  # fmt: skip
            _create_array(
                group,
                "unit",
                np.array(units, dtype=str),
                shape=(n_out,),
                chunks=(n_out,),
                dtype=str,
                dims=("output",),
            )
            coordinates = ["unit"]
            if times.ndim == 1:
                _create_array(
                    group, "time", times, shape=(n_time,), chunks=(n_time,), dtype=np.float64, dims=("time",),
                    attrs=_TIME_ATTRS,
                )  # fmt: skip
            else:
                _create_array(
                    group, "time_h", times, shape=(n, n_time), chunks=(chunk, n_time), dtype=np.float64,
                    dims=("subject", "time"), attrs=_TIME_H_ATTRS,
                )  # fmt: skip
                coordinates.append("time_h")
            for name, values in covs.items():
                _create_array(
                    group,
                    name,
                    values,
                    shape=(n,),
                    chunks=(n,),
                    dtype=values.dtype,
                    dims=("subject",),
                )
                coordinates.append(name)
            _create_array(
                group, "value", None, shape=(n, n_time, n_out), chunks=(chunk, n_time, n_out), dtype=np.float64,
                dims=("subject", "time", "output"), fill_value=np.nan,
                attrs={"long_name": "model outputs (units in the `unit` coordinate)"},
            )  # fmt: skip
            _create_array(
                group, "status", None, shape=(n,), chunks=(chunk,), dtype=np.int64, dims=("subject",),
                fill_value=NOT_COMPUTED,
                attrs=_status_attrs(),
            )  # fmt: skip
            _create_array(
                group, "chunk_complete", None, shape=(meta["n_chunks"],), chunks=(1,), dtype=np.uint8,
                dims=("chunk",), fill_value=0,
            )  # fmt: skip
            group.attrs.update(
                {
                    **provenance,
                    "coordinates": " ".join(coordinates),
                    _STORE_KEY: {**meta, "units": units},
                }
            )
            if self.path.exists():  # another process created it meanwhile
                raise OutputError(
                    f"Zarr store {str(self.path)!r} appeared while being created; retry to resume it"
                )
            os.replace(staging, self.path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _attach(self, meta: Mapping[str, Any]) -> None:
        self._meta = dict(meta)
        self._group = zarr.open_group(self.path, mode="r+", zarr_format=3)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ZarrCohortWriter:
        """Attach to an existing cohort store (e.g. in a worker process) to write chunks.

        Raises
        ------
        OutputError
            When ``path`` is not a cohort store made by :class:`ZarrCohortWriter`.
        """
        writer = cls.__new__(cls)
        writer.path = Path(path)
        writer._attach(_read_meta(writer.path))
        return writer

    # ------------------------------------------------------------------ chunks
    @property
    def n_chunks(self) -> int:
        return int(self._meta["n_chunks"])

    @property
    def n_subjects(self) -> int:
        return int(self._meta["n_subjects"])

    @property
    def chunk_size(self) -> int:
        return int(self._meta["chunk_size"])

    def chunk_slice(self, index: int) -> slice:
        """Subjects of chunk ``index``."""
        if isinstance(index, bool) or int(index) != index or not 0 <= index < self.n_chunks:
            raise OutputError(
                f"chunk index must be a whole number in 0..{self.n_chunks - 1}, got {index!r}"
            )
        start = int(index) * self.chunk_size
        return slice(start, min(start + self.chunk_size, self.n_subjects))

    def completed(self) -> list[int]:
        """Indices of the chunks already written."""
        return np.flatnonzero(np.asarray(self._group["chunk_complete"][...])).tolist()

    def pending(self) -> list[int]:
        """Indices of the chunks still to write, in order."""
        return np.flatnonzero(np.asarray(self._group["chunk_complete"][...]) == 0).tolist()

    @property
    def complete(self) -> bool:
        return not self.pending()

    def write_chunk(self, index: int, solution: SolutionLike) -> None:
        """Write the outputs of chunk ``index`` and then mark it complete.

        Parameters
        ----------
        index
            Chunk index; its subjects are :meth:`chunk_slice`.
        solution
            Solution for exactly those subjects, at the store's times.

        Raises
        ------
        OutputError
            When the solution's subjects, times, outputs or method differ from the store's.
        """
        where = self.chunk_slice(index)
        n = where.stop - where.start
        names = tuple(self._meta["output_names"])
        if tuple(getattr(solution, "output_names", names)) != names:
            raise OutputError(
                f"chunk {index}: solution has outputs {list(solution.output_names)}, the store {list(names)}"
            )
        method = getattr(solution, "method", self._meta["method"])
        if method != self._meta["method"]:
            raise OutputError(
                f"chunk {index}: solution was computed with method {method!r}, the store with "
                f"{self._meta['method']!r}; simulate every chunk the same way"
            )
        outputs = np.asarray(solution.outputs, dtype=np.float64)
        times = np.asarray(solution.times, dtype=np.float64)
        status = np.asarray(solution.status).astype(np.int64)
        expected = (n, *self._group["value"].shape[1:])
        if outputs.shape != expected or status.shape != (n,):
            raise OutputError(
                f"chunk {index} holds subjects {where.start}..{where.stop - 1}: expected outputs of shape "
                f"{expected} and status of shape ({n},), got {outputs.shape} and {status.shape}"
            )
        if self._meta["shared_times"]:
            reference = np.broadcast_to(np.asarray(self._group["time"][...]), (n, expected[1]))
        else:
            reference = np.asarray(self._group["time_h"][where])
        if times.shape != reference.shape or not np.array_equal(times, reference):
            raise OutputError(
                f"chunk {index}: solution times differ from the store's times (h); simulate the chunk "
                "at the times the writer was created with"
            )
        self._group["value"][where] = outputs
        self._group["status"][where] = status
        self._group["chunk_complete"][int(index)] = 1  # last: the chunk counts only once written

    def fill(self, simulate_chunk: Callable[[slice], SolutionLike]) -> list[int]:
        """Write every pending chunk: ``simulate_chunk(subjects)`` returns its solution.

        Returns
        -------
        list of int
            The chunks written by this call (already complete ones are skipped).
        """
        written = []
        for index in self.pending():
            self.write_chunk(index, simulate_chunk(self.chunk_slice(index)))
            written.append(index)
        return written

    def to_dataset(self, *, require_complete: bool = True) -> xr.Dataset:
        """The store as a dataset, see :func:`open_zarr_cohort`."""
        return open_zarr_cohort(self.path, require_complete=require_complete)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        group = zarr.open_group(path, mode="r", zarr_format=3)
        meta = dict(group.attrs[_STORE_KEY])
    except (
        FileNotFoundError,
        KeyError,
        zarr.errors.GroupNotFoundError,
        zarr.errors.NodeTypeValidationError,
    ) as error:
        raise OutputError(
            f"{str(path)!r} is not a twinsim cohort store ({type(error).__name__}); create it with "
            "ZarrCohortWriter, or remove it (overwrite=True)"
        ) from None
    if meta.get("format") != _STORE_FORMAT:
        raise OutputError(
            f"cohort store {str(path)!r} has format {meta.get('format')!r}; this twinsim reads format {_STORE_FORMAT}"
        )
    return meta


def write_zarr_chunk(path: str | os.PathLike[str], index: int, solution: SolutionLike) -> None:
    """Write chunk ``index`` of an existing cohort store (see :class:`ZarrCohortWriter`).

    For worker processes: the store carries everything needed to check the chunk.

    Raises
    ------
    OutputError
        As :meth:`ZarrCohortWriter.write_chunk`, or when ``path`` is not a cohort store.
    """
    ZarrCohortWriter.open(path).write_chunk(index, solution)


def _plain_strings(values: np.ndarray) -> np.ndarray:
    return np.array(values.tolist(), dtype=str) if values.dtype.kind not in "biufcmM" else values


def open_zarr_cohort(path: str | os.PathLike[str], *, require_complete: bool = True) -> xr.Dataset:
    """Open a cohort store as a dataset laid out like :func:`to_dataset`'s.

    Outputs are loaded lazily; ``status_name`` and the per-output variables are derived
    from ``status`` and ``value``.

    Parameters
    ----------
    path
        Store written by :class:`ZarrCohortWriter`.
    require_complete
        Raise if some chunk has not been written (default). With ``False`` such subjects
        have NaN outputs and status ``-1`` (``"not_computed"``).

    Raises
    ------
    OutputError
        When ``path`` is not a cohort store, or chunks are missing and ``require_complete``.
    """
    meta = _read_meta(Path(path))
    dataset = xr.open_zarr(path, consolidated=False, zarr_format=3)
    complete = np.asarray(dataset["chunk_complete"].values).astype(bool)
    if require_complete and not complete.all():
        missing = np.flatnonzero(~complete)
        raise OutputError(
            f"cohort store {str(path)!r} has {missing.size} of {complete.size} chunks not written "
            f"(first: {missing[:5].tolist()}); resume the run with ZarrCohortWriter on the same path, "
            "or pass require_complete=False"
        )
    dataset = dataset.drop_vars("chunk_complete")
    dataset.attrs.pop(_STORE_KEY, None)
    for name in list(dataset.variables):
        values = dataset[name]
        if values.dtype.kind not in "biufcmM":
            dataset = dataset.assign_coords(
                {name: (values.dims, _plain_strings(np.asarray(values.values)), values.attrs)}
            )
    status = np.asarray(dataset["status"].values)
    dataset["status"] = dataset["status"].copy(data=status)
    if not complete.all():
        dataset["status"].attrs["not_computed"] = (
            f"{NOT_COMPUTED}: the subject's chunk is not written yet"
        )
    dataset["status_name"] = ("subject", _status_names(status), {"long_name": "solver status"})
    units = dict(zip(meta["output_names"], meta["units"], strict=True))
    for name in meta["output_names"]:
        unit = units[name]
        variable = dataset["value"].sel(output=name).drop_vars(["output", "unit"])
        variable.attrs = {"long_name": name, "units": unit} if unit else {"long_name": name}
        dataset[name] = variable
    ordered = ["value", *meta["output_names"], "status", "status_name"]
    return dataset[ordered]
