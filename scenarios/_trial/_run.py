"""Running a trial design: chunks of replicates (in process or on Dask), resume, outputs.

A run is split into chunks of ``chunk_size`` replicates. Each chunk is a pure function of
the design and its replicate numbers (:func:`run_chunk`), so chunks may run in any order,
in this process or on the workers of a ``dask.distributed`` cluster, and give the same
numbers. With an output folder every finished chunk is saved at once (a temporary file
renamed into place) under ``DIR/chunks/``; a run that was stopped resumes from the chunks
it finished, computing only the missing ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._analysis import RESULT_FIELDS, analyse, comparisons, endpoint_values
from ._design import TrialDesign, TrialError
from ._simulate import enrol, load_model, simulate_chunk

__all__ = ["TrialResult", "chunk_ranges", "run_chunk", "run_trial"]

#: Covariate columns kept with the results (plus the drug model's, the stratification's
#: and the analyses').
_KEPT = (
    "age",
    "female",
    "weight",
    "height",
    "serum_creatinine",
    "crcl",
    "dialysis",
    "ancestry",
    "cyp2c9",
    "vkorc1",
)


def _kept_columns(design: TrialDesign) -> list[str]:
    model = load_model(design)
    names = [*_KEPT, *model.covariate_names, *design.randomisation.stratify]
    for a in design.analyses:
        names += a.covariates
    return list(dict.fromkeys(names))


def chunk_ranges(replicates: int, chunk_size: int) -> list[list[int]]:
    """Replicate numbers of each chunk.

    Examples
    --------
    >>> chunk_ranges(5, 2)
    [[0, 1], [2, 3], [4]]
    """
    return [
        list(range(s, min(s + chunk_size, replicates))) for s in range(0, replicates, chunk_size)
    ]


def run_chunk(design: TrialDesign | str, replicates: list[int]) -> dict[str, np.ndarray]:
    """Simulate and analyse replicates ``replicates`` of ``design`` (a design or its JSON).

    Returns
    -------
    dict
        Arrays with a leading ``replicate`` axis: ``valid``, ``ids``, covariates
        (``cov:NAME``), ``predicted``/``measured`` ``[rep, arm, subject, time, output]``,
        ``doses`` ``[rep, arm, subject, dose]``, ``endpoints``/``events``/``scores``
        ``[rep, arm, subject, endpoint]``, ``status``, ``dropout``, ``screened`` and
        ``results`` ``[rep, size, analysis, comparison, field]``; and ``times``,
        ``measured_mask``, ``dose_times`` (shared).
    """
    if isinstance(design, str):
        design = TrialDesign.model_validate_json(design)
    model = load_model(design)
    outputs = model.structural.output_names
    enrolments = enrol(design, replicates)
    columns = _kept_columns(design)
    covariates = {
        k: np.concatenate([e.covariates[k] for e in enrolments]) for k in enrolments[0].covariates
    }
    ids = np.concatenate([e.ids for e in enrolments])
    arm = np.concatenate([e.arm for e in enrolments])
    position = np.concatenate([e.position for e in enrolments])
    rep = np.concatenate([np.full(len(e.ids), i) for i, e in enumerate(enrolments)])
    sim = simulate_chunk(design, model, covariates, ids, arm)
    twin = None
    if any(a.method == "procova" for a in design.analyses):
        twin = simulate_chunk(
            design, model, covariates, ids, arm, typical=True, only_arm=design.control_index
        )
    n_end = len(design.endpoints)
    values = np.full((len(ids), n_end), np.nan)
    events = np.ones((len(ids), n_end))
    scores = np.full((len(ids), n_end), np.nan)
    for j, e in enumerate(design.endpoints):
        o = outputs.index(e.output)
        values[:, j], events[:, j] = endpoint_values(
            e, sim.times, sim.measured_mask, sim.predicted, sim.measured, sim.dropout, o
        )
        if twin is not None:
            scores[:, j], _ = endpoint_values(
                e, twin.times, twin.measured_mask, twin.predicted, twin.predicted, twin.dropout, o
            )
    failed = sim.status != 0
    values[failed] = np.nan  # a failed solve is reported (status), not analysed

    n_arms, n_sub = len(design.arms), max(design.arm_sizes(design.n_max))
    n_rep = len(replicates)

    def grid(values_, fill, dtype=float):
        out = np.full((n_rep, n_arms, n_sub, *values_.shape[1:]), fill, dtype=dtype)
        out[rep, arm, position] = values_
        return out

    packed: dict[str, np.ndarray] = {
        "replicates": np.asarray(replicates),
        "times": sim.times,
        "measured_mask": sim.measured_mask,
        "valid": grid(np.ones(len(ids), bool), False, bool),
        "ids": grid(ids, -1, np.int64),
        "predicted": grid(sim.predicted, np.nan),
        "measured": grid(sim.measured, np.nan),
        "doses": grid(sim.doses, np.nan),
        "dose_times": _arm_dose_times(design, sim, arm),
        "endpoints": grid(values, np.nan),
        "events": grid(events, np.nan),
        "scores": grid(scores, np.nan),
        "status": grid(sim.status, -1, np.int64),
        "dropout": grid(sim.dropout, np.nan),
        "screened": np.array([e.screened for e in enrolments]),
    }
    for name in columns:
        column = covariates[name]
        fill: Any = "" if column.dtype.kind == "U" else np.nan
        packed[f"cov:{name}"] = grid(column, fill, column.dtype if fill == "" else float)
    packed["results"] = _analyse_chunk(design, packed)
    return packed


def _picker(r: int, control: int, k: int, sizes: list[int]):
    """Rows of replicate ``r``: the first ``sizes`` subjects of the control arm, then arm ``k``."""

    def pick(values: np.ndarray) -> np.ndarray:
        return np.concatenate([values[r, control, : sizes[control]], values[r, k, : sizes[k]]])

    return pick


def _arm_dose_times(design, sim, arm) -> np.ndarray:
    out = np.full((len(design.arms), sim.dose_times.shape[1]), np.nan)
    for k in range(len(design.arms)):
        rows = np.flatnonzero(arm == k)
        if rows.size:
            out[k] = sim.dose_times[rows[0]]
    return out


def _analyse_chunk(design: TrialDesign, packed: dict[str, np.ndarray]) -> np.ndarray:
    """``[replicate, size, analysis, comparison, field]`` for the nested sample sizes: size
    ``n`` uses the first ``n · ratio`` subjects enrolled in each arm."""
    arms = comparisons(design)
    control = design.control_index
    names = [e.name for e in design.endpoints]
    n_rep = packed["valid"].shape[0]
    out = np.full(
        (n_rep, len(design.sample_size), len(design.analyses), len(arms), len(RESULT_FIELDS)),
        np.nan,
    )
    covs = {k[4:]: v for k, v in packed.items() if k.startswith("cov:")}
    for r in range(n_rep):
        for s, n in enumerate(design.sample_size):
            sizes = design.arm_sizes(n)
            for a, analysis in enumerate(design.analyses):
                j = names.index(analysis.endpoint)
                endpoint = design.endpoints[j]
                for c, k in enumerate(arms):
                    pick = _picker(r, control, k, sizes)
                    treated = np.r_[np.zeros(sizes[control]), np.ones(sizes[k])]
                    out[r, s, a, c] = analyse(
                        analysis,
                        endpoint,
                        pick(packed["endpoints"][..., j]),
                        pick(packed["events"][..., j]),
                        treated,
                        {name: pick(v) for name, v in covs.items()},
                        pick(packed["scores"][..., j]),
                    )
    return out


# ---------------------------------------------------------------------------- chunk store
def _design_hash(design: TrialDesign) -> str:
    # a chunk depends on the design and its replicate numbers, not on how many replicates
    # the run has: a finished run can be extended with more replicates
    text = design.model_dump_json(exclude={"replicates"})
    trained = design.trained_model()
    if trained is not None:  # a model retrained in the same folder is another run
        text += trained.params_sha256 + trained.model_json_sha256
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _chunk_path(folder: Path, replicates: list[int]) -> Path:
    return folder / f"chunk_{replicates[0]:06d}_{replicates[-1]:06d}.npz"


def _save_chunk(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _load_chunk(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _prepare_folder(out: Path, design: TrialDesign, chunk_size: int) -> Path:
    folder = out / "chunks"
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"design_hash": _design_hash(design), "chunk_size": chunk_size}
    meta_path = folder / "run.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old != meta:
            raise TrialError(
                f"{str(folder)!r} holds chunks of another run ({old}), this run is {meta}; "
                "use another --out folder, or delete the old chunks to start again"
            )
    else:
        from .._provenance import write_text_atomic

        write_text_atomic(meta_path, json.dumps(meta))
    return folder


# ---------------------------------------------------------------------------- run
@dataclass
class TrialResult:
    """What a run of a design gives: the raw arrays, the summary and the written files."""

    design: TrialDesign
    arrays: dict[str, np.ndarray]
    computed_chunks: list[int] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def results(self) -> np.ndarray:
        """``[replicate, size, analysis, comparison, field]`` (:data:`RESULT_FIELDS`)."""
        return self.arrays["results"]

    def summary(self) -> dict[str, Any]:
        """Power (share of replicates with p < α) with its Monte-Carlo standard error, and
        the distribution of the effect estimate, per analysis, comparison and sample size."""
        from ._outputs import summarise

        return summarise(self.design, self.arrays)


def run_trial(
    design: TrialDesign,
    out: str | os.PathLike[str] | None = None,
    *,
    chunk_size: int = 10,
    scheduler: str | Any | None = None,
    progress: Callable[[int, int], None] | None = None,
    write: bool = True,
) -> TrialResult:
    """Run every replicate of ``design``; with ``out``, save chunks as they finish and write
    the outputs (Zarr store, endpoint table, NONMEM CSV, summary, HTML report).

    Parameters
    ----------
    design
        The trial design.
    out
        Output folder (created). A folder holding chunks of the same design and chunk size
        is resumed: finished chunks are read, not recomputed (a design that differs only
        in ``replicates`` reuses them too, extending or shortening the run).
    chunk_size
        Replicates per chunk (memory and granularity; not results).
    scheduler
        ``None`` (this process), a ``dask.distributed.Client``, or the address of a
        scheduler (``"tcp://HOST:PORT"``): chunks are sent to the cluster's workers.
    progress
        Called with ``(replicates done, replicates in all)`` after each chunk.
    write
        Write the output files (with ``out``); ``False`` keeps only the chunks.

    Returns
    -------
    TrialResult

    Examples
    --------
    >>> from twinsim.scenarios import TrialDesign
    >>> design = TrialDesign.model_validate({
    ...     "drug": "vancomycin", "duration": 24, "visits": [12], "replicates": 2,
    ...     "sample_size": 4, "arms": [{"name": "A", "dose": 1000, "interval": 12},
    ...                                 {"name": "B", "dose": 1500, "interval": 12}],
    ...     "endpoints": [{"name": "c12", "kind": "value", "output": "conc", "at": 12}],
    ...     "analyses": [{"endpoint": "c12"}]})
    >>> result = run_trial(design)
    >>> result.results.shape  # replicate, size, analysis, comparison, field
    (2, 1, 1, 1, 5)
    """
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise TrialError(f"`chunk_size` must be a whole number ≥ 1, got {chunk_size!r}")
    chunks = chunk_ranges(design.replicates, chunk_size)
    folder = _prepare_folder(Path(out), design, chunk_size) if out is not None else None
    done: dict[int, dict[str, np.ndarray]] = {}
    if folder is not None:
        for i, reps in enumerate(chunks):
            path = _chunk_path(folder, reps)
            if path.exists():
                done[i] = _load_chunk(path)
    pending = [i for i in range(len(chunks)) if i not in done]
    computed: list[int] = []
    total = design.replicates

    def finished(i: int, arrays: dict[str, np.ndarray]) -> None:
        if folder is not None:
            _save_chunk(_chunk_path(folder, chunks[i]), arrays)
        done[i] = arrays
        computed.append(i)
        if progress is not None:
            progress(sum(len(chunks[k]) for k in done), total)

    if progress is not None:
        progress(sum(len(chunks[k]) for k in done), total)
    if scheduler is None:
        for i in pending:
            finished(i, run_chunk(design, chunks[i]))
    else:
        _run_on_dask(design, chunks, pending, scheduler, finished)
    arrays = _concatenate([done[i] for i in range(len(chunks))])
    result = TrialResult(design, arrays, computed_chunks=sorted(computed))
    if out is not None and write:
        from ._outputs import write_outputs

        result.files = write_outputs(result, Path(out))
    return result


def _run_on_dask(design, chunks, pending, scheduler, finished) -> None:
    from dask.distributed import Client, as_completed

    own = not hasattr(scheduler, "submit")
    client = Client(scheduler) if own else scheduler
    try:
        # the design object itself (pickled): its JSON would turn ±inf bounds into null
        payload = design
        # a key of this run's own: a key Dask still holds returns that task's result, so
        # a second trial through the same client once got the first one's chunks
        run_id = uuid.uuid4().hex
        futures = {
            client.submit(
                run_chunk, payload, chunks[i], pure=False, key=f"twinsim-trial-{run_id}-{i}"
            ): i
            for i in pending
        }
        for future in as_completed(futures):
            finished(futures[future], future.result())
    finally:
        if own:
            client.close()


def _concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    shared = ("times", "measured_mask", "dose_times")
    out = {k: parts[0][k] for k in shared}
    for k in parts[0]:
        if k not in shared:
            out[k] = np.concatenate([p[k] for p in parts])
    return out


def remove_chunks(out: str | os.PathLike[str]) -> None:
    """Delete the saved chunks of a finished run (the outputs keep everything)."""
    shutil.rmtree(Path(out) / "chunks", ignore_errors=True)
