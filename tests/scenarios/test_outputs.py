"""The outputs adapter: labelled datasets, tidy frames, atomic NetCDF, resumable Zarr cohorts."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from twinsim.priors import ODEModel
from twinsim.scenarios._outputs import (
    OutputError,
    ZarrCohortWriter,
    metrics_table,
    open_zarr_cohort,
    to_dataset,
    to_frame,
    write_netcdf,
    write_zarr_chunk,
)
from twinsim.simulators import DosingEvents, SolveStatus, simulate
from twinsim.simulators._metrics import exposure_metrics

CITATION = "Gibaldi M, Perrier D. Pharmacokinetics, 2nd ed. Marcel Dekker, 1982."


def _iv_model(**overrides) -> ODEModel:
    spec = dict(
        name="iv_1cmt",
        states=("central",),
        parameters=("cl", "v"),
        rhs=lambda t, y, p: {"central": -p.cl / p.v * y.central},
        outputs={"conc": lambda y, p: y.central / p.v, "amount": lambda y, p: y.central},
        output_units={"conc": "mg/L", "amount": "mg"},
        linear=True,
        citation=CITATION,
    )
    spec.update(overrides)
    return ODEModel(**spec)


MODEL = _iv_model()
TIMES = jnp.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0])
PARAMS = jnp.stack([jnp.linspace(3.0, 7.0, 5), jnp.linspace(15.0, 40.0, 5)], axis=1)  # CL L/h, V L
COVARIATES = {
    "weight_kg": np.array([55.0, 62.5, 70.0, 81.0, 96.0]),
    "sex": np.array(["F", "M", "F", "M", "M"]),
    "smoker": np.array([False, True, False, False, True]),
}


@pytest.fixture(scope="module")
def solution():
    """Five subjects, one 100 mg IV bolus at 0 h, shared output times (one engine compile)."""
    return simulate(MODEL, PARAMS, DosingEvents.repeated(100.0, 24.0, 1, compartment=0), TIMES)


@dataclasses.dataclass
class FakeSolution:
    """Solution-like arrays for results the engine is not asked to produce here."""

    times: np.ndarray
    outputs: np.ndarray
    status: np.ndarray
    method: str = "linear"
    output_names: tuple[str, ...] = ("conc", "amount")


def _chunk(solution, subjects: slice):
    """The engine's solution for a subset of subjects (static fields are not pytree leaves)."""
    return jax.tree.map(lambda a: a[subjects], solution)


# --------------------------------------------------------------------------- to_dataset


def test_to_dataset_labels_dims_units_covariates_and_provenance(solution):
    """Closed form: C = 100/V e^{-CL/V t}; the labelled values are the engine's, and the engine
    matches the closed form (rtol 1e-10)."""
    ds = to_dataset(
        solution,
        model=MODEL,
        subject_ids=[101, 102, 103, 104, 105],
        covariates=COVARIATES,
        attrs={"seed": 7},
    )
    assert dict(ds.sizes) == {"subject": 5, "time": 6, "output": 2}
    assert ds["value"].dims == ("subject", "time", "output")
    assert ds["conc"].dims == ("subject", "time") and ds["amount"].dims == ("subject", "time")
    np.testing.assert_array_equal(ds["value"].values, np.asarray(solution.outputs))
    np.testing.assert_array_equal(ds["conc"].values, np.asarray(solution.outputs[..., 0]))
    cl, v = np.asarray(PARAMS).T
    expected = 100.0 / v[:, None] * np.exp(-(cl / v)[:, None] * np.asarray(TIMES))
    np.testing.assert_allclose(ds["conc"].sel(subject=103).values, expected[2], rtol=1e-10)
    assert ds["conc"].attrs["units"] == "mg/L" and ds["amount"].attrs["units"] == "mg"
    assert ds["unit"].values.tolist() == ["mg/L", "mg"]
    assert ds["output"].values.tolist() == ["conc", "amount"]
    assert ds["time"].attrs["units"] == "h" and "time_h" not in ds.variables
    np.testing.assert_array_equal(ds["time"].values, np.asarray(TIMES))
    for name, values in COVARIATES.items():
        assert name in ds.coords and ds[name].dims == ("subject",)
        np.testing.assert_array_equal(ds[name].values, values)
    assert ds["status"].values.tolist() == [0] * 5
    assert ds["status_name"].values.tolist() == ["success"] * 5
    assert ds["status"].attrs["flag_meanings"].split()[:2] == ["success", "max_steps"]
    assert ds.attrs["model"] == "iv_1cmt" and ds.attrs["citation"] == CITATION
    assert ds.attrs["simulation_method"] == "linear" and ds.attrs["seed"] == 7
    assert ds.attrs["twinsim_version"] and ds.attrs["time_units"] == "h"


def test_to_dataset_defaults_and_dataframe_covariates(solution):
    """Without ids the subjects are 0..n-1; a DataFrame of covariates works like a mapping."""
    import pandas as pd

    ds = to_dataset(solution, model=MODEL, covariates=pd.DataFrame(COVARIATES))
    assert ds["subject"].values.tolist() == [0, 1, 2, 3, 4]
    assert ds["sex"].values.tolist() == COVARIATES["sex"].tolist()


def test_per_subject_times_become_a_2d_time_h():
    """Different grids per subject: no shared `time` coordinate, `time_h [subject, time]` in h."""
    times = np.array([[0.0, 1.0, 2.0], [0.0, 1.5, 3.0]])
    fake = FakeSolution(times, np.ones((2, 3, 2)), np.zeros(2, dtype=int))
    ds = to_dataset(fake, model=MODEL)
    assert "time" not in ds.coords and ds["time_h"].dims == ("subject", "time")
    np.testing.assert_array_equal(ds["time_h"].values, times)
    assert ds["time_h"].attrs["units"] == "h"


def test_failed_subjects_get_readable_status_names():
    """Each SolveStatus code maps to its lower-case name."""
    status = np.array([0, 1, 2, 3, 4, 5])
    outputs = np.ones((6, 2, 2))
    outputs[1:] = np.nan
    ds = to_dataset(FakeSolution(np.array([0.0, 1.0]), outputs, status), model=MODEL)
    assert ds["status_name"].values.tolist() == [
        "success",
        "max_steps",
        "nonfinite",
        "solver_failed",
        "steady_state_failed",
        "unsupported_dose",
    ]
    assert ds["status"].values.tolist() == [int(s) for s in SolveStatus]


def test_to_dataset_errors_name_the_field(solution):
    with pytest.raises(
        OutputError,
        match=r"`solution` has outputs \['conc', 'amount'\] but model 'other' has \['conc'\]",
    ):
        to_dataset(
            solution, model=_iv_model(name="other", outputs={"conc": lambda y, p: y.central / p.v})
        )
    with pytest.raises(
        OutputError, match=r"`subject_ids` must list one id per subject \(5\), got shape \(2,\)"
    ):
        to_dataset(solution, model=MODEL, subject_ids=[1, 2])
    with pytest.raises(OutputError, match=r"`subject_ids` must be unique; repeated: \[3\]"):
        to_dataset(solution, model=MODEL, subject_ids=[1, 2, 3, 3, 4])
    with pytest.raises(
        OutputError,
        match=r"covariate 'age' must have one value per subject \(5\), got shape \(3,\)",
    ):
        to_dataset(solution, model=MODEL, covariates={"age": [1, 2, 3]})
    with pytest.raises(OutputError, match=r"covariate 'conc' clashes with a dataset name"):
        to_dataset(solution, model=MODEL, covariates={"conc": np.zeros(5)})
    clash = _iv_model(outputs={"value": lambda y, p: y.central})
    with pytest.raises(
        OutputError, match=r"names outputs \['value'\], which the dataset uses itself"
    ):
        to_dataset(solution, model=clash)
    with pytest.raises(OutputError, match=r"`solution` has no `times`"):
        to_dataset(object(), model=MODEL)


# --------------------------------------------------------------------------- to_frame


def test_to_frame_is_tidy_with_units_and_covariates(solution):
    ds = to_dataset(
        solution, model=MODEL, subject_ids=[101, 102, 103, 104, 105], covariates=COVARIATES
    )
    frame = to_frame(ds)
    assert list(frame.columns) == [
        "subject",
        "time",
        "output",
        "value",
        "unit",
        "weight_kg",
        "sex",
        "smoker",
    ]
    assert len(frame) == 5 * 6 * 2
    row = frame[(frame.subject == 104) & (frame.time == 2.0) & (frame.output == "amount")]
    assert len(row) == 1
    assert float(row["value"].iloc[0]) == float(ds["amount"].sel(subject=104, time=2.0))
    assert (
        row["unit"].iloc[0] == "mg"
        and row["sex"].iloc[0] == "M"
        and float(row["weight_kg"].iloc[0]) == 81.0
    )
    assert set(frame[frame.output == "conc"]["unit"]) == {"mg/L"}


def test_to_frame_with_per_subject_times():
    times = np.array([[0.0, 1.0], [0.0, 1.5]])
    outputs = np.arange(8.0).reshape(2, 2, 2)
    frame = to_frame(to_dataset(FakeSolution(times, outputs, np.zeros(2, dtype=int)), model=MODEL))
    assert frame["time"].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.5, 1.5]
    assert frame["value"].tolist() == list(np.arange(8.0))
    with pytest.raises(
        OutputError, match=r"must have a `value` variable with dims \(subject, time, output\)"
    ):
        to_frame(xr.Dataset({"x": ("t", [1.0])}))


# --------------------------------------------------------------------------- metrics_table


def test_metrics_table_against_closed_forms():
    """IV bolus C = D/V e^{-kt} sampled 0-24 h: AUC_0-∞ = D/CL, t½ = ln2/k, AUC over [12, 24]
    = D/(Vk)(e^{-12k} - e^{-24k}) (closed forms; log-down is exact, rtol 1e-12). A failed
    subject's row is NaN with its status; a rising profile's half-life is missing."""
    t = np.array([0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 18.0, 24.0])
    cl, v = np.array([5.0, 2.0, 1.0]), np.array([20.0, 40.0, 1.0])
    k = cl / v
    conc = 100.0 / v[:, None] * np.exp(-k[:, None] * t)
    conc[1] = np.nan  # subject 2 failed
    conc[2] = t  # rising: no terminal phase
    outputs = np.stack([conc, conc * v[:, None]], axis=-1)
    ds = to_dataset(
        FakeSolution(t, outputs, np.array([0, 2, 0])), model=MODEL, subject_ids=["a", "b", "c"],
        covariates={"weight_kg": [60.0, 70.0, 80.0]},
    )  # fmt: skip
    table = metrics_table(ds, tau=12.0)
    assert table["subject"].tolist() == ["a", "b", "c"]
    assert table["status"].tolist() == ["success", "nonfinite", "success"]
    np.testing.assert_allclose(table["auc_inf"].iloc[0], 100.0 / 5.0, rtol=1e-12)
    np.testing.assert_allclose(table["half_life"].iloc[0], math.log(2) / 0.25, rtol=1e-12)
    np.testing.assert_allclose(
        table["auc_tau"].iloc[0],
        100.0 / (20.0 * 0.25) * (math.exp(-3.0) - math.exp(-6.0)),
        rtol=1e-12,
    )
    np.testing.assert_allclose(table["trough"].iloc[0], 5.0 * math.exp(-6.0), rtol=1e-12)
    assert table.loc[1, ["auc_last", "cmax", "tmax", "auc_tau"]].isna().all()
    assert not table["half_life_estimable"].iloc[2] and np.isnan(table["half_life"].iloc[2])
    assert np.isnan(table["auc_inf"].iloc[2]) and table["cmax"].iloc[2] == 24.0
    assert table["weight_kg"].tolist() == [60.0, 70.0, 80.0]
    assert table.attrs["units"]["auc_inf"] == "mg·h/L" and table.attrs["units"]["cmax"] == "mg/L"
    amount = metrics_table(ds, "amount")
    assert amount.attrs["units"]["auc_last"] == "mg·h" and "auc_tau" not in amount.columns
    direct = exposure_metrics(t, outputs[..., 1])
    np.testing.assert_allclose(amount["auc_last"].iloc[0], direct.auc_last[0], rtol=1e-15)
    with pytest.raises(
        OutputError,
        match=r"`output` 'effect' is not in the dataset; known outputs: \['conc', 'amount'\]",
    ):
        metrics_table(ds, "effect")


# --------------------------------------------------------------------------- NetCDF


def test_write_netcdf_round_trip(tmp_path, solution):
    ds = to_dataset(solution, model=MODEL, covariates=COVARIATES, attrs={"seed": 7})
    out = write_netcdf(ds, tmp_path / "run.nc")
    assert out == tmp_path / "run.nc" and sorted(os.listdir(tmp_path)) == ["run.nc"]
    with xr.open_dataset(out) as back:
        xr.testing.assert_identical(back.load(), ds)


def test_write_netcdf_failure_mid_write_keeps_the_previous_file(tmp_path, solution, monkeypatch):
    """A writer that dies after writing part of the file: the previous file is byte-for-byte
    intact and no temporary file is left behind."""
    path = tmp_path / "run.nc"
    write_netcdf(to_dataset(solution, model=MODEL), path)
    before = path.read_bytes()

    def dies_halfway(self, target, *args, **kwargs):
        Path(target).write_bytes(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        write_netcdf(to_dataset(solution, model=MODEL, attrs={"run": 2}), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["run.nc"]


def test_write_netcdf_real_serialisation_error_keeps_the_previous_file(tmp_path, solution):
    """NetCDF cannot store a dict attribute: the library's own error, and nothing changes."""
    path = tmp_path / "run.nc"
    write_netcdf(to_dataset(solution, model=MODEL), path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="Invalid value for attr"):
        write_netcdf(to_dataset(solution, model=MODEL, attrs={"spec": {"dose": 100}}), path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["run.nc"]
    with pytest.raises(OutputError, match=r"directory .*missing.* does not exist; create it first"):
        write_netcdf(to_dataset(solution, model=MODEL), tmp_path / "missing" / "run.nc")


# --------------------------------------------------------------------------- Zarr cohorts


def _writer(path, **overrides):
    spec = dict(
        model=MODEL, n_subjects=5, chunk_size=2, times=TIMES, subject_ids=[101, 102, 103, 104, 105],
        covariates=COVARIATES, attrs={"seed": 7},
    )  # fmt: skip
    spec.update(overrides)
    return ZarrCohortWriter(path, **spec)


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_zarr_cohort_equals_the_in_memory_dataset(tmp_path, solution):
    """Chunks of 2, 2 and 1 subjects streamed to Zarr read back as to_dataset of the whole cohort."""
    writer = _writer(tmp_path / "cohort.zarr")
    assert writer.n_chunks == 3 and writer.pending() == [0, 1, 2]
    assert writer.chunk_slice(2) == slice(4, 5)
    assert writer.fill(lambda subjects: _chunk(solution, subjects)) == [0, 1, 2]
    assert writer.complete and writer.completed() == [0, 1, 2]
    expected = to_dataset(
        solution,
        model=MODEL,
        subject_ids=[101, 102, 103, 104, 105],
        covariates=COVARIATES,
        attrs={"seed": 7},
    )
    xr.testing.assert_identical(open_zarr_cohort(tmp_path / "cohort.zarr").load(), expected)


def test_zarr_resume_after_a_crash_gives_the_same_store(tmp_path, solution):
    """Uninterrupted run vs a run killed while writing chunk 1 (its data half written, no
    marker) and stopped by an error at chunk 2, then restarted: the restart writes only
    chunks 1 and 2, and both stores are identical file by file."""
    simulate_chunk = lambda subjects: _chunk(solution, subjects)  # noqa: E731
    _writer(tmp_path / "a.zarr").fill(simulate_chunk)

    first = _writer(tmp_path / "b.zarr")
    first.write_chunk(0, simulate_chunk(first.chunk_slice(0)))
    first._group["value"][first.chunk_slice(1)] = -1.0  # killed mid-write of chunk 1

    def crashes_at_chunk_2(subjects):
        if subjects.start == 4:
            raise RuntimeError("worker lost")
        return simulate_chunk(subjects)

    with pytest.raises(RuntimeError, match="worker lost"):
        first.fill(crashes_at_chunk_2)  # rewrites chunk 1, then fails on chunk 2
    # simulate the kill again: chunk 1 complete now, so corrupt chunk 2's data only
    first._group["value"][first.chunk_slice(2)] = -1.0
    assert first.pending() == [2]

    restarted = _writer(tmp_path / "b.zarr")
    assert restarted.pending() == [2]
    assert restarted.fill(simulate_chunk) == [2]
    assert _tree(tmp_path / "a.zarr") == _tree(tmp_path / "b.zarr")
    xr.testing.assert_identical(
        open_zarr_cohort(tmp_path / "a.zarr").load(), open_zarr_cohort(tmp_path / "b.zarr").load()
    )


def test_zarr_incomplete_store_and_worker_writes(tmp_path, solution):
    """A store with chunks missing refuses to open unless asked; missing subjects are NaN with
    status 'not_computed'. A worker attaching by path writes a chunk."""
    path = tmp_path / "cohort.zarr"
    writer = _writer(path)
    writer.write_chunk(1, _chunk(solution, writer.chunk_slice(1)))
    with pytest.raises(OutputError, match=r"has 2 of 3 chunks not written \(first: \[0, 2\]\)"):
        open_zarr_cohort(path)
    partial = open_zarr_cohort(path, require_complete=False)
    assert partial["status_name"].values.tolist() == ["not_computed"] * 2 + ["success"] * 2 + [
        "not_computed"
    ]
    assert np.isnan(partial["conc"].sel(subject=101).values).all()
    np.testing.assert_array_equal(
        partial["conc"].sel(subject=103).values, np.asarray(solution.outputs[2, :, 0])
    )
    write_zarr_chunk(path, 0, _chunk(solution, slice(0, 2)))
    assert ZarrCohortWriter.open(path).pending() == [2]


def test_zarr_per_subject_times(tmp_path):
    times = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])
    outputs = np.arange(12.0).reshape(3, 2, 2)
    writer = _writer(
        tmp_path / "c.zarr", n_subjects=3, times=times, subject_ids=None, covariates=None
    )
    writer.fill(lambda s: FakeSolution(times[s], outputs[s], np.zeros(s.stop - s.start, dtype=int)))
    expected = to_dataset(
        FakeSolution(times, outputs, np.zeros(3, dtype=int)), model=MODEL, attrs={"seed": 7}
    )
    xr.testing.assert_identical(open_zarr_cohort(tmp_path / "c.zarr").load(), expected)
    with pytest.raises(OutputError, match=r"chunk 0: solution times differ from the store's times"):
        writer.write_chunk(0, FakeSolution(times[:2] + 1, outputs[:2], np.zeros(2, dtype=int)))


def test_zarr_errors_name_the_problem(tmp_path, solution):
    path = tmp_path / "cohort.zarr"
    writer = _writer(path)
    with pytest.raises(
        OutputError,
        match=r"was created for a different cohort \(differs in \['chunk_size', 'n_chunks'\]\)",
    ):
        _writer(path, chunk_size=3)
    with pytest.raises(OutputError, match=r"differs in times, subject ids, covariates or attrs"):
        _writer(path, attrs={"seed": 8})
    assert _writer(path, chunk_size=3, overwrite=True).n_chunks == 2
    writer = _writer(path, overwrite=True)
    with pytest.raises(
        OutputError, match=r"chunk 0 holds subjects 0..1: expected outputs of shape \(2, 6, 2\)"
    ):
        writer.write_chunk(0, _chunk(solution, slice(0, 3)))
    with pytest.raises(OutputError, match=r"chunk index must be a whole number in 0..2, got 3"):
        writer.chunk_slice(3)
    ode = dataclasses.replace(
        FakeSolution(np.asarray(TIMES), np.ones((2, 6, 2)), np.zeros(2, dtype=int)), method="ode"
    )
    with pytest.raises(OutputError, match=r"computed with method 'ode', the store with 'linear'"):
        writer.write_chunk(0, ode)
    (tmp_path / "plain").mkdir()
    with pytest.raises(OutputError, match=r"is not a twinsim cohort store"):
        ZarrCohortWriter.open(tmp_path / "plain")
    with pytest.raises(OutputError, match=r"`chunk_size` must be a whole number ≥ 1"):
        _writer(tmp_path / "x.zarr", chunk_size=0)
    with pytest.raises(OutputError, match=r"`times` must have shape \(time,\) or \(5, time\)"):
        _writer(tmp_path / "x.zarr", times=np.zeros((2, 3)))
    assert not (tmp_path / "x.zarr").exists()
