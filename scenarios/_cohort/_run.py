"""Workflows: run a :class:`~twinsim.scenarios.SimulationSpec` end to end.

:func:`run_simulation` turns a spec into individual parameters, dosing events and output
times, simulates the cohort chunk by chunk (:func:`~twinsim.simulators.simulate_cohort`),
labels the result (:func:`~twinsim.scenarios.to_dataset`) and writes it with a provenance
record next to it. The cohort is laid out as

- subjects ``0 … N·P − 1`` for ``N = spec.n_subjects`` virtual subjects of each of the
  ``P`` patients (``P = 1`` when the spec gives none): subject ``i`` belongs to patient
  ``i // N`` and receives that patient's doses (``mg/kg`` doses resolved with the patient's
  weight);
- subject ``i``'s parameters are ``θ_typ · exp(η_i)`` with ``η_i`` drawn from the key
  ``fold_in(key(spec.seed), i)`` (:func:`~twinsim.simulators.lognormal_parameters`), so a
  result never depends on the chunk size;
- with a trained model folder as ``model``, subject ``i``'s covariates are its patient's
  (or, without patients, virtual subject ``i``'s of ``spec.population``, drawn by
  :func:`~twinsim.twin.generate_population`) and its parameters are the trained model's
  population model's for those covariates and its latent draw
  (:meth:`~twinsim.priors.PopulationModel.sample_parameters`, keyed by ``(seed, i)``):
  the individual dynamics are the trained model's;
- individual parameters and the patients' covariates are coordinates on ``subject``.

Small cohorts are written to NetCDF at once; large ones (or a path ending in ``.zarr``)
stream to a Zarr store chunk by chunk, which a rerun resumes. Subjects whose solve failed
keep NaN outputs and a ``status`` saying why, and are listed in a
:class:`FailedSubjectsWarning` and in the provenance record.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from ...simulators import SimulationError, SolveStatus, lognormal_parameters, simulate_cohort
from .._nonmem import NonmemData
from .._outputs import (
    RESERVED_NAMES,
    OutputError,
    ZarrCohortWriter,
    metrics_table,
    to_dataset,
    write_netcdf,
)
from .._patient import PatientSpec
from .._provenance import provenance_path, provenance_record, write_provenance
from ._spec import SimulationSpec

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LARGE_COHORT_VALUES",
    "FailedSubjectsWarning",
    "LargeCohortWarning",
    "WorkflowWarning",
    "cohort_size",
    "concentration_band_figure",
    "exposure_summary",
    "output_target",
    "read_provenance",
    "run_simulation",
    "simulated_nonmem",
]

#: Subjects simulated per chunk by default (one compiled batch size for the whole cohort).
DEFAULT_CHUNK_SIZE = 1024

#: Output values (subjects × times × outputs) above which ``file_format="auto"`` streams
#: to Zarr instead of holding the cohort in memory for NetCDF: 25 million float64 values
#: are 200 MB.
LARGE_COHORT_VALUES = 25_000_000

FileFormat = Literal["auto", "netcdf", "zarr"]

#: Patient fields written as covariate coordinates, with their names (units in the name).
_PATIENT_COVARIATES = (
    ("age", "age_y"),
    ("sex", "sex"),
    ("weight", "weight_kg"),
    ("height", "height_cm"),
    ("serum_creatinine", "serum_creatinine_mg_dl"),
)


class WorkflowWarning(UserWarning):
    """Something about a run the user should know; the run itself completed."""


class FailedSubjectsWarning(WorkflowWarning):
    """Some subjects' solves failed: their outputs are NaN and their ``status`` says why."""


class LargeCohortWarning(WorkflowWarning):
    """A cohort too large for NetCDF in memory was streamed to a Zarr store instead."""


# ---------------------------------------------------------------------------- layout
def cohort_size(spec: SimulationSpec) -> int:
    """Subjects a run of ``spec`` simulates: ``n_subjects`` per patient (at least one patient).

    Examples
    --------
    >>> spec = SimulationSpec(model="pk_1cmt_iv", parameters={"cl": 5, "v": 50},
    ...     regimen="100 mg once", times=[1, 2], n_subjects=4, patients=[{"id": "A"}, {"id": "B"}])
    >>> cohort_size(spec)
    8
    """
    return spec.n_subjects * max(1, len(spec.patients))


def output_target(
    spec: SimulationSpec, out: str | os.PathLike[str], file_format: FileFormat = "auto"
) -> tuple[Path, Literal["netcdf", "zarr"]]:
    """Where and how :func:`run_simulation` writes the run of ``spec`` asked for at ``out``.

    ``"auto"`` writes NetCDF, or a Zarr store when ``out`` ends in ``.zarr`` or the cohort
    has more than :data:`LARGE_COHORT_VALUES` output values; a large cohort asked for at a
    NetCDF path then goes to the same path with the suffix ``.zarr``.

    Raises
    ------
    OutputError
        For an unknown ``file_format``.

    Examples
    --------
    >>> spec = SimulationSpec(model="pk_1cmt_iv", parameters={"cl": 5, "v": 50},
    ...                       regimen="100 mg once", times=[1, 2])
    >>> [(p.name, f) for p, f in (output_target(spec, "a.nc"), output_target(spec, "b.zarr"))]
    [('a.nc', 'netcdf'), ('b.zarr', 'zarr')]
    """
    path = Path(out)
    if file_format not in ("auto", "netcdf", "zarr"):
        raise OutputError(f"`file_format` must be 'auto', 'netcdf' or 'zarr', got {file_format!r}")
    if file_format != "auto":
        return path, file_format
    if path.suffix.lower() == ".zarr":
        return path, "zarr"
    if _n_values(spec) > LARGE_COHORT_VALUES:
        return path.with_suffix(".zarr"), "zarr"
    return path, "netcdf"


def _n_values(spec: SimulationSpec) -> int:
    return cohort_size(spec) * len(spec.times) * len(spec.model_definition().output_names)


def _omega(spec: SimulationSpec) -> np.ndarray:
    """Log-scale variances ω² in the model's parameter order (0: no variability)."""
    return np.array(
        [
            spec.variability[name].omega_squared if name in spec.variability else 0.0
            for name in spec.model_definition().parameters
        ]
    )


def _population_subjects(
    spec: SimulationSpec, ids: np.ndarray, patient_of: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Parameters ``[subject, parameter]`` and covariate columns of a trained model's cohort.

    Covariates: each subject's patient's, or virtual subject ``i``'s of ``spec.population``
    (seeded by ``(seed, "population")``, the first ``n`` candidates meeting its criteria).
    Parameters: the population model's for those covariates, subject ``i``'s latent draw
    from ``(seed, i)``: nothing depends on how the cohort is cut into chunks.
    """
    from ...twin import generate_population
    from .._population import PopulationSpec, sub_seed

    model = spec.population_model()
    assert model is not None
    if spec.patients:
        table = PatientSpec.covariate_table(spec.patients)
        table = {k: np.asarray(v)[patient_of] for k, v in table.items()}
    else:
        population = spec.population or PopulationSpec()
        drawn = generate_population(
            population.config(), int(ids.size), sub_seed(spec.seed, "population")
        )
        table = {k: np.asarray(v) for k, v in drawn.covariates.items() if k != "id"}
    columns = model.covariate_columns(table)
    sample = model.sample_parameters(spec.seed, columns, ids)
    return np.asarray(sample.parameters[:, 0]), columns


def _covariates(
    spec: SimulationSpec,
    patient_of: np.ndarray,
    parameters: np.ndarray,
    model_covariates: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Coordinates on ``subject``: patient id and covariates (with a trained model, the
    columns it reads), then individual parameters."""
    model = spec.model_definition()
    covariates: dict[str, np.ndarray] = {}
    if spec.patients:
        covariates["patient"] = np.array([p.id for p in spec.patients], dtype=str)[patient_of]
        for field, name in _PATIENT_COVARIATES:
            values = [getattr(p, field) for p in spec.patients]
            if all(v is None for v in values):
                continue
            if field == "sex":
                column = np.array([v or "" for v in values], dtype=str)
            else:
                column = np.array([np.nan if v is None else v for v in values], dtype=float)
            covariates[name] = column[patient_of]
    for name, column in (model_covariates or {}).items():
        covariates.setdefault(name, np.asarray(column))
    taken = RESERVED_NAMES | set(model.output_names) | set(covariates)
    for k, name in enumerate(model.parameters):
        covariates[name if name not in taken else f"parameter_{name}"] = parameters[:, k]
    return covariates


class _Collected(NamedTuple):
    """A whole cohort gathered from its chunks, laid out like a ``Solution``."""

    times: np.ndarray
    outputs: np.ndarray
    status: np.ndarray
    method: str
    output_names: tuple[str, ...]


# ---------------------------------------------------------------------------- running
def run_simulation(
    spec: SimulationSpec,
    *,
    out: str | os.PathLike[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int, int], None] | None = None,
    file_format: FileFormat = "auto",
    overwrite: bool = False,
    command: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    method: Literal["auto", "linear", "ode"] = "auto",
    **simulate_options: Any,
) -> xr.Dataset:
    """Simulate ``spec``'s cohort and write it, with its provenance record, to ``out``.

    Parameters
    ----------
    spec
        The validated spec.
    out
        Output path, or ``None`` to only return the dataset. NetCDF is written atomically;
        a Zarr store (``.zarr``, or a large cohort, see :func:`output_target`) is written
        chunk by chunk and a rerun with the same spec and chunk size resumes it. The
        provenance record goes to ``<out>.provenance.json``. Missing directories are made.
    chunk_size
        Subjects per chunk: the compiled batch size, and the unit of progress and of
        resumption. Results do not depend on it.
    progress
        ``progress(done, total)`` after each chunk, in subjects.
    file_format
        ``"auto"``, ``"netcdf"`` or ``"zarr"``.
    overwrite
        Start a Zarr store afresh instead of resuming it.
    command
        Command line for the provenance record (default: this process's ``sys.argv``).
    provenance
        More keys for the provenance record (e.g. ``{"spec_file": ...}``).
    method
        Engine, as in :func:`~twinsim.simulators.simulate`.
    **simulate_options
        ``rtol``, ``atol``, ``max_steps``, ``solver``, ``at_dose``, as in
        :func:`~twinsim.simulators.simulate`.

    Returns
    -------
    xarray.Dataset
        As :func:`~twinsim.scenarios.to_dataset`, with the individual parameters and the
        patients' covariates (``patient``, ``weight_kg``, ...) as coordinates on ``subject``
        and the spec (JSON) and seed in ``attrs``. A Zarr run returns the store opened lazily.

    Raises
    ------
    SpecError
        When the doses cannot be built (e.g. an infusion longer than its interval).
    OutputError
        When ``out`` holds a Zarr store of a different cohort (pass ``overwrite=True``).
    SimulationError
        For an invalid ``chunk_size`` or simulation option.

    Warns
    -----
    FailedSubjectsWarning
        When some subjects' solves failed; the message lists their ids and why.
    LargeCohortWarning
        When ``file_format="auto"`` streams a large cohort to Zarr instead of ``out``.

    Examples
    --------
    >>> spec = SimulationSpec(model="pk_1cmt_iv", parameters={"cl": 5, "v": 50},
    ...     variability={"cl": "30%"}, n_subjects=3, seed=1, regimen="100 mg once",
    ...     times=[1, 2, 4])
    >>> ds = run_simulation(spec)
    >>> dict(ds["conc"].sizes), ds["status_name"].values.tolist()
    ({'subject': 3, 'time': 3}, ['success', 'success', 'success'])
    """
    started = time.perf_counter()
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int | np.integer)
        or chunk_size < 1
    ):
        raise SimulationError(
            f"`chunk_size` must be a whole number ≥ 1 (subjects per chunk), got {chunk_size!r}; "
            f"e.g. {DEFAULT_CHUNK_SIZE}"
        )
    model = spec.model_definition()
    n_total = cohort_size(spec)
    n_per_patient = spec.n_subjects
    ids = np.arange(n_total, dtype=np.int64)
    patient_of = ids // n_per_patient
    model_covariates = None
    if spec.population_model() is not None:  # a trained model: its own individual dynamics
        parameters, model_covariates = _population_subjects(spec, ids, patient_of)
    else:
        parameters = np.asarray(
            lognormal_parameters(spec.seed, ids, spec.parameter_vector(), _omega(spec))
        )
    # one row per patient, padded to one width: every chunk compiles to the same shape
    events = spec.dosing_events()
    times = np.asarray(spec.times, dtype=np.float64)
    covariates = _covariates(spec, patient_of, parameters, model_covariates)
    attrs = {
        "spec": json.dumps(spec.model_dump(mode="json"), ensure_ascii=False),
        "seed": spec.seed,
        "n_patients": max(1, len(spec.patients)),
        "subjects_per_patient": n_per_patient,
        "parameter_units": json.dumps(dict(model.parameter_units), ensure_ascii=False),
    }

    def params_fn(chunk_ids: np.ndarray) -> np.ndarray:
        return parameters[chunk_ids]

    def events_fn(chunk_ids: np.ndarray):
        return events if events.n_subjects == 1 else events.subset(patient_of[chunk_ids])

    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, n_total)

    target, kind = (None, "memory") if out is None else output_target(spec, out, file_format)
    if target is not None and out is not None and target != Path(out):
        warnings.warn(
            LargeCohortWarning(
                f"the cohort has {_n_values(spec):,} output values, more than "
                f"{LARGE_COHORT_VALUES:,} to hold in memory for NetCDF; streaming it to the Zarr "
                f"store {str(target)!r} instead of {str(out)!r} (pass file_format='netcdf' to force NetCDF)"
            ),
            stacklevel=2,
        )
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)

    # outputs are all a run keeps: skipping the states saves memory and time
    options = {"method": method, "keep_states": False, **simulate_options}
    if kind == "zarr":
        assert target is not None
        effective_chunk = _effective_chunk(chunk_size, n_total)
        writer = ZarrCohortWriter(
            target, model=model, n_subjects=n_total, chunk_size=effective_chunk, times=times,
            subject_ids=ids, covariates=covariates, attrs=attrs, method=method,
            overwrite=overwrite,
        )  # fmt: skip
        already = set(writer.completed())
        simulate_cohort(
            model, n_total, params_fn, events_fn, times, chunk_size=effective_chunk,
            on_chunk=lambda start, stop, sol: writer.write_chunk(start // effective_chunk, sol),
            skip_chunk=lambda start, stop: start // effective_chunk in already,
            progress=advance, **options,
        )  # fmt: skip
        dataset = writer.to_dataset()
        chunks_resumed = len(already)
    else:
        n_outputs = len(model.output_names)
        collected = {
            "outputs": np.empty((n_total, times.shape[0], n_outputs)),
            "status": np.empty(n_total, dtype=np.int64),
            "method": "",
        }

        def keep(start: int, stop: int, solution) -> None:
            collected["outputs"][start:stop] = np.asarray(solution.outputs)
            collected["status"][start:stop] = np.asarray(solution.status)
            collected["method"] = solution.method

        simulate_cohort(
            model, n_total, params_fn, events_fn, times, chunk_size=chunk_size,
            on_chunk=keep, progress=advance, **options,
        )  # fmt: skip
        solution = _Collected(
            times=np.broadcast_to(times, (n_total, times.shape[0])),
            outputs=collected["outputs"],
            status=collected["status"],
            method=collected["method"],
            output_names=model.output_names,
        )
        dataset = to_dataset(
            solution, model=model, subject_ids=ids, covariates=covariates, attrs=attrs
        )
        if target is not None:
            write_netcdf(dataset, target)
        chunks_resumed = 0

    failures = _failures(np.asarray(dataset["status"].values), ids)
    if failures:
        warnings.warn(FailedSubjectsWarning(_failure_message(failures, n_total)), stacklevel=2)
    if target is not None:
        record = provenance_record(
            spec,
            command=command,
            outputs={
                "path": str(target),
                "format": kind,
                "n_subjects": n_total,
                "n_patients": max(1, len(spec.patients)),
                "subjects_per_patient": n_per_patient,
                "n_times": int(times.shape[0]),
                "output_names": list(model.output_names),
                "method": str(dataset.attrs.get("simulation_method", method)),
                "chunk_size": _effective_chunk(chunk_size, n_total),
                "chunks_resumed": chunks_resumed,
                "n_failed": sum(len(v) for v in failures.values()),
                "failed_subjects": {
                    SolveStatus(code).name.lower(): subjects
                    for code, subjects in sorted(failures.items())
                },
                "elapsed_s": round(time.perf_counter() - started, 3),
            },
            extra={
                **(
                    {"trained_model": trained.record()} if (trained := spec.trained_model()) else {}
                ),
                **dict(provenance or {}),
            },
        )
        write_provenance(record, target)
    return dataset


def _effective_chunk(chunk_size: int, n_total: int) -> int:
    """The batch size simulate_cohort compiles: ``chunk_size``, at most the cohort."""
    return min(int(chunk_size), n_total)


def _failures(status: np.ndarray, ids: np.ndarray) -> dict[int, list[int]]:
    """``{status code: [subject ids]}`` of the subjects that did not solve."""
    return {
        int(code): ids[status == code].tolist() for code in np.unique(status[status != 0]).tolist()
    }


def _failure_message(failures: Mapping[int, list[int]], n_total: int, listed: int = 20) -> str:
    n_failed = sum(len(v) for v in failures.values())
    lines = [
        f"{n_failed} of {n_total} subjects failed to solve; their outputs are NaN and the "
        "dataset's `status`/`status_name` say why:"
    ]
    for code, subjects in sorted(failures.items()):
        try:
            status = SolveStatus(code)
            name, reason = status.name.lower(), status.describe()
        except ValueError:
            name, reason = f"status {code}", "unknown status code"
        shown = ", ".join(map(str, subjects[:listed]))
        more = f" and {len(subjects) - listed} more" if len(subjects) > listed else ""
        lines.append(f"  - {name}: subjects {shown}{more} ({reason})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- summaries
_SUMMARY_METRICS = ("cmax", "tmax", "auc_last", "cmin")


def exposure_summary(
    dataset: xr.Dataset,
    output: str = "conc",
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    lower: float = 5.0,
    upper: float = 95.0,
) -> pd.DataFrame:
    """Cohort summary of exposure metrics over the subjects that solved.

    Metrics come from :func:`~twinsim.scenarios.metrics_table`, computed ``chunk_size``
    subjects at a time so that a large (lazily opened Zarr) cohort is never loaded whole.

    Parameters
    ----------
    dataset
        From :func:`run_simulation`.
    output
        The output to summarise.
    chunk_size
        Subjects per block.
    lower, upper
        Percentiles of the interval reported.

    Returns
    -------
    pandas.DataFrame
        Index ``cmax, tmax, auc_last, cmin``; columns ``unit, n, median, p<lower>, p<upper>,
        mean``. Empty when fewer than two output times exist (no AUC).

    Examples
    --------
    >>> spec = SimulationSpec(model="pk_1cmt_iv", parameters={"cl": 5, "v": 50},
    ...                       regimen="100 mg once", times=[0.5, 1, 2])
    >>> summary = exposure_summary(run_simulation(spec))
    >>> round(float(summary.loc["cmax", "median"]), 4), summary.loc["cmax", "unit"]
    (1.9025, 'mg/L')
    """
    if dataset.sizes.get("time", 0) < 2:
        return pd.DataFrame(columns=["unit", "n", "median", f"p{lower:g}", f"p{upper:g}", "mean"])
    n = dataset.sizes["subject"]
    parts, units = [], {}
    for start in range(0, n, max(1, int(chunk_size))):
        block = dataset.isel(subject=slice(start, start + chunk_size))
        table = metrics_table(block, output)
        units = table.attrs["units"]
        if "status" in block:
            table = table[np.asarray(block["status"].values) == 0]
        parts.append(table[list(_SUMMARY_METRICS)])
    values = pd.concat(parts, ignore_index=True)
    rows = {}
    for name in _SUMMARY_METRICS:
        column = values[name].to_numpy(dtype=float)
        finite = column[np.isfinite(column)]
        empty = finite.size == 0
        rows[name] = {
            "unit": units.get(name, ""),
            "n": int(finite.size),
            "median": math.nan if empty else float(np.median(finite)),
            f"p{lower:g}": math.nan if empty else float(np.percentile(finite, lower)),
            f"p{upper:g}": math.nan if empty else float(np.percentile(finite, upper)),
            "mean": math.nan if empty else float(np.mean(finite)),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def concentration_band_figure(
    dataset: xr.Dataset,
    output: str = "conc",
    *,
    lower: float = 5.0,
    upper: float = 95.0,
    title: str | None = None,
):
    """A plotly figure of the cohort's median and ``lower``–``upper`` percentile band.

    Only subjects that solved (``status == 0``) are summarised.

    Returns
    -------
    plotly.graph_objects.Figure
        Three traces: the upper and lower percentiles (a filled band) and the median.

    Raises
    ------
    OutputError
        For an unknown output, per-subject output times, or a cohort with no solved subject.

    Examples
    --------
    >>> spec = SimulationSpec(model="pk_1cmt_iv", parameters={"cl": 5, "v": 50},
    ...     variability={"cl": "30%"}, n_subjects=5, regimen="100 mg once", times=[1, 2, 4])
    >>> [trace.name for trace in concentration_band_figure(run_simulation(spec)).data]
    ['95th percentile', '5th percentile', 'median']
    """
    import plotly.graph_objects as go

    names = [str(o) for o in np.asarray(dataset["output"].values)]
    if output not in names:
        raise OutputError(f"`output` {output!r} is not in the dataset; known outputs: {names}")
    if "time" not in dataset.coords:
        raise OutputError(
            "the dataset has per-subject output times (`time_h`); a percentile band needs one "
            "shared time grid"
        )
    values = np.asarray(dataset[output].values, dtype=float)
    if "status" in dataset:
        values = values[np.asarray(dataset["status"].values) == 0]
    if values.shape[0] == 0:
        raise OutputError("no subject solved (every `status` is non-zero); nothing to plot")
    times = np.asarray(dataset["time"].values, dtype=float)
    band = np.percentile(values, [lower, 50.0, upper], axis=0)
    unit = str(dataset[output].attrs.get("units", ""))
    label = f"{output} ({unit})" if unit else output
    figure = go.Figure(
        [
            go.Scatter(
                x=times, y=band[2], name=f"{upper:g}th percentile", mode="lines",
                line={"width": 0, "color": "rgba(31, 119, 180, 0.3)"},
            ),
            go.Scatter(
                x=times, y=band[0], name=f"{lower:g}th percentile", mode="lines", fill="tonexty",
                fillcolor="rgba(31, 119, 180, 0.25)", line={"width": 0, "color": "rgba(31, 119, 180, 0.3)"},
            ),
            go.Scatter(
                x=times, y=band[1], name="median", mode="lines", line={"color": "rgb(31, 119, 180)"}
            ),
        ]
    )  # fmt: skip
    model = dataset.attrs.get("model", "")
    figure.update_layout(
        title=title
        or f"{model}: median and {lower:g}–{upper:g} % band of {values.shape[0]} subjects",
        xaxis_title="time (h)",
        yaxis_title=label,
        template="plotly_white",
        hovermode="x unified",
    )
    return figure


# ---------------------------------------------------------------------------- NONMEM
#: NONMEM column of each covariate coordinate written by :func:`simulated_nonmem`.
_NONMEM_COVARIATES = {
    "age_y": "AGE",
    "sex": "SEX",
    "weight_kg": "WT",
    "height_cm": "HT",
    "serum_creatinine_mg_dl": "SCR",
}


def simulated_nonmem(
    spec: SimulationSpec, dataset: xr.Dataset, *, output: str = "conc"
) -> NonmemData:
    """The simulated cohort as a NONMEM data set: doses, and ``DV`` = the simulated ``output``.

    Subject ``i`` of the dataset is ``ID = i + 1``. Its dose records are its patient's
    (``mg/kg`` resolved); each output time is an observation record (``EVID 0``) in the
    compartment the output is read from (the model's ``central`` state, 1-based, else 0)
    with ``DV`` the simulated value, noise-free; a subject whose solve failed has ``DV``
    missing and ``MDV 1``. Covariates: ``PAT`` (1-based patient number) and ``AGE``,
    ``SEX`` (1 = female, 0 = male), ``WT``, ``HT``, ``SCR`` where the spec gives them.

    Raises
    ------
    OutputError
        For an unknown output, or a dataset that is not a run of ``spec``.

    Examples
    --------
    >>> spec = SimulationSpec(model="pk_1cmt_iv", parameters={"cl": 5, "v": 50},
    ...                       regimen="100 mg q12h x 1 d", times=[1, 13])
    >>> data = simulated_nonmem(spec, run_simulation(spec))
    >>> data.ids, len(data.doses[0]), data.observations["DV"].round(4).tolist()
    ((1,), 2, [1.8097, 2.3547])
    """
    model = spec.model_definition()
    names = [str(o) for o in np.asarray(dataset["output"].values)]
    if output not in names:
        raise OutputError(f"`output` {output!r} is not in the dataset; known outputs: {names}")
    n_total = cohort_size(spec)
    if dataset.sizes["subject"] != n_total or dataset.sizes["time"] != len(spec.times):
        raise OutputError(
            f"the dataset has {dataset.sizes['subject']} subjects × {dataset.sizes['time']} times, "
            f"but spec gives {n_total} × {len(spec.times)}; pass the dataset run from this spec"
        )
    values = np.asarray(dataset[output].values, dtype=float)
    times = np.asarray(dataset["time"].values, dtype=float)
    ids = np.arange(1, n_total + 1)
    patient_of = np.arange(n_total) // spec.n_subjects
    per_patient = spec.doses()
    cmt = model.state_index("central") + 1 if "central" in model.states else 0
    n_time = times.shape[0]
    dv = values.reshape(-1)
    observations = pd.DataFrame(
        {
            "ID": np.repeat(ids, n_time),
            "TIME": np.tile(times, n_total),
            "DV": dv,
            "MDV": np.where(np.isfinite(dv), 0, 1),
            "CMT": cmt,
            "EVID": 0,
        }
    )
    covariates: dict[str, Any] = {}
    if spec.patients:
        covariates["PAT"] = patient_of + 1
        for name, column in _NONMEM_COVARIATES.items():
            if name in dataset.coords:
                raw = np.asarray(dataset[name].values)
                if name == "sex":
                    raw = np.select([raw == "female", raw == "male"], [1.0, 0.0], np.nan)
                covariates[column] = raw
    return NonmemData.from_doses(
        [per_patient[p] for p in patient_of],
        observations=observations,
        covariates=covariates or None,
        ids=ids.tolist(),
    )


def read_provenance(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record written next to ``out``.

    Raises
    ------
    OutputError
        When there is none.
    """
    path = provenance_path(out)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputError(
            f"no provenance record {str(path)!r}; it is written by run_simulation next to its output"
        ) from None
