"""run_simulation: chunk-size invariance, per-patient doses, provenance, failures, Zarr resume.

Every run here uses one small layout (6 subjects × 13 output times, dose tables of width 4)
so that the engine compiles few shapes; the chunk sizes used are 6 and 4.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from importlib.metadata import version

import numpy as np
import pytest
import xarray as xr

from twinsim.scenarios import SimulationSpec, metrics_table, open_zarr_cohort
from twinsim.scenarios._cohort._run import (
    FailedSubjectsWarning,
    LargeCohortWarning,
    concentration_band_figure,
    exposure_summary,
    read_provenance,
    run_simulation,
)
from twinsim.scenarios._outputs import NOT_COMPUTED, OutputError
from twinsim.scenarios._provenance import provenance_path
from twinsim.simulators import SimulationError, lognormal_parameters, omega_from_cv

TIMES = {"start": "0 h", "stop": "36 h", "step": "3 h"}  # 13 output times


def cohort_spec(**changes) -> SimulationSpec:
    """Two patients (60 and 100 kg), 3 virtual subjects each, per-kg loading then maintenance."""
    fields = {
        "model": "pk_1cmt_iv",
        "parameters": {"cl": "5 L/h", "v": "50 L"},
        "variability": {"cl": "30%", "v": "20%"},
        "n_subjects": 3,
        "seed": 11,
        "regimen": "loading 25 mg/kg then 15 mg/kg q12h x 1 d",
        "times": TIMES,
        "patients": [
            {"id": "light", "weight": "60 kg", "sex": "female"},
            {"id": "heavy", "weight": "100 kg"},
        ],
    }
    fields.update(changes)
    return SimulationSpec.model_validate(fields)


def test_chunk_size_does_not_change_results():
    """Chunks of 6 (one chunk) and 4 (a full chunk and a padded one) give the same cohort.

    Tolerance: exact. Subject i's parameters come from the key fold_in(key(seed), i) alone
    and each subject's solve is independent of the others in its batch (DESIGN.md,
    "Randomness"), so the numbers must agree bit for bit.
    """
    spec = cohort_spec()
    whole = run_simulation(spec, chunk_size=6)
    chunked = run_simulation(spec, chunk_size=4)
    np.testing.assert_array_equal(whole["value"].values, chunked["value"].values)
    np.testing.assert_array_equal(whole["status"].values, chunked["status"].values)
    for name in ("cl", "v"):
        np.testing.assert_array_equal(whole[name].values, chunked[name].values)
    assert np.all(whole["status"].values == 0)
    assert np.all(np.isfinite(whole["conc"].values))


def test_parameters_are_keyed_by_subject_and_spec_seed():
    """Subject i's parameters equal lognormal_parameters(seed, [i], θ_typ, ω²(CV)) drawn alone.

    Tolerance: exact (the same draw from the same key); ω² = log(1 + CV²) is computed
    independently here with omega_from_cv.
    """
    spec = cohort_spec()
    dataset = run_simulation(spec, chunk_size=6)
    omega = omega_from_cv([0.3, 0.2])
    for subject in range(6):
        alone = np.asarray(lognormal_parameters(11, [subject], [5.0, 50.0], omega))[0]
        np.testing.assert_array_equal(
            [dataset["cl"].values[subject], dataset["v"].values[subject]], alone
        )
    assert dataset["patient"].values.tolist() == ["light"] * 3 + ["heavy"] * 3
    assert dataset["weight_kg"].values.tolist() == [60.0] * 3 + [100.0] * 3
    assert dataset["sex"].values.tolist() == ["female"] * 3 + [""] * 3
    assert json.loads(dataset.attrs["spec"]) == spec.model_dump(mode="json")
    assert dataset.attrs["seed"] == 11


def test_weight_based_doses_are_resolved_per_patient():
    """Without variability, the 100 kg patient's profile is 100/60 times the 60 kg patient's.

    Source: dose linearity of a linear model (all doses are mg/kg, the parameters are the
    same). Tolerance: rtol 1e-12 (two exact solutions scaled in floating point).
    """
    dataset = run_simulation(cohort_spec(variability={}), chunk_size=6)
    conc = dataset["conc"].values
    positive = dataset["time"].values > 0
    np.testing.assert_allclose(
        conc[3:, positive], conc[:3, positive] * (100.0 / 60.0), rtol=1e-12, atol=0
    )
    # every virtual subject of one patient is the typical one when there is no variability
    np.testing.assert_array_equal(conc[0], conc[2])


def test_provenance_record_describes_the_run(tmp_path):
    """The record next to the NetCDF holds the spec (re-loadable), seed, versions, model, time."""
    spec = cohort_spec()
    out = tmp_path / "runs" / "result.nc"  # the missing folder is created
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    dataset = run_simulation(
        spec, out=out, chunk_size=6, command="twinsim simulate spec.yaml --out result.nc"
    )
    after = dt.datetime.now(dt.UTC)
    record = json.loads(provenance_path(out).read_text())
    assert provenance_path(out).name == "result.nc.provenance.json"
    assert record == read_provenance(out)

    assert SimulationSpec.model_validate(record["spec"]) == spec
    assert record["seed"] == 11
    model = spec.model_definition()
    assert record["model"] == {"name": "pk_1cmt_iv", "citation": model.citation}
    for package in ("twinsim", "jax", "diffrax", "numpy"):
        assert record["versions"][package] == version(package)
    created = dt.datetime.fromisoformat(record["created"])
    assert before <= created <= after
    assert record["command"] == "twinsim simulate spec.yaml --out result.nc"
    outputs = record["outputs"]
    assert outputs["path"] == str(out)
    assert outputs["format"] == "netcdf"
    assert (outputs["n_subjects"], outputs["n_times"], outputs["n_failed"]) == (6, 13, 0)
    assert outputs["failed_subjects"] == {}

    with xr.open_dataset(out) as written:
        np.testing.assert_array_equal(written["conc"].values, dataset["conc"].values)
        np.testing.assert_array_equal(written["cl"].values, dataset["cl"].values)
        assert written["conc"].attrs["units"] == "mg/L"
        assert json.loads(written.attrs["spec"]) == record["spec"]


def test_failed_subjects_are_reported_not_silently_nan(tmp_path):
    """Subjects whose clearance overflows fail with status 'nonfinite' and are listed by id.

    ω² = 10⁶ (η standard deviation 1000) makes some clearances exp(η) overflow to inf, which
    no solver can integrate: those subjects must fail, be named in the warning and in the
    provenance record, and keep a status; the others (ordinary clearances) must succeed.
    """
    spec = SimulationSpec.model_validate(
        {
            "model": "pk_1cmt_iv",
            "parameters": {"cl": 5, "v": 50},
            "variability": {"cl": {"omega": 1e6}},
            "n_subjects": 6,
            "seed": 2,
            "regimen": "100 mg once",
            "times": TIMES,
        }
    )
    out = tmp_path / "failing.nc"
    with pytest.warns(FailedSubjectsWarning) as caught:
        dataset = run_simulation(spec, out=out, chunk_size=6)
    status = dataset["status"].values
    failed = np.flatnonzero(status != 0).tolist()
    clearance = dataset["cl"].values
    assert set(np.flatnonzero(np.isinf(clearance))) <= set(failed)
    assert not set(np.flatnonzero(clearance < 1e3)) & set(failed)
    assert 0 < len(failed) < 6

    message = str(caught[0].message)
    assert message.startswith(f"{len(failed)} of 6 subjects failed to solve")
    listed = re.search(r"nonfinite: subjects ([\d, ]+) \(", message)
    assert listed is not None, message
    assert [int(s) for s in listed.group(1).split(",")] == failed
    assert set(dataset["status_name"].values[failed]) == {"nonfinite"}
    assert np.all(np.isnan(dataset["conc"].values[failed]))
    ok = status == 0
    assert np.all(np.isfinite(dataset["conc"].values[ok]))

    outputs = read_provenance(out)["outputs"]
    assert outputs["n_failed"] == len(failed)
    assert outputs["failed_subjects"] == {"nonfinite": failed}
    with xr.open_dataset(out) as written:
        np.testing.assert_array_equal(written["status"].values, status)


def test_zarr_store_resumes_after_an_interruption(tmp_path):
    """A run stopped after its first chunk resumes from the store and equals an uninterrupted run.

    Tolerance: exact (same subjects, same keys, same chunk shape).
    """
    spec = cohort_spec()
    out = tmp_path / "cohort.zarr"

    def stop_after_first_chunk(done: int, total: int) -> None:
        raise KeyboardInterrupt(f"stopped at {done}/{total}")

    with pytest.raises(KeyboardInterrupt, match="stopped at 4/6"):
        run_simulation(spec, out=out, chunk_size=4, progress=stop_after_first_chunk)
    partial = open_zarr_cohort(out, require_complete=False)
    assert partial["status"].values.tolist() == [0, 0, 0, 0, NOT_COMPUTED, NOT_COMPUTED]

    seen: list[tuple[int, int]] = []
    resumed = run_simulation(
        spec, out=out, chunk_size=4, progress=lambda done, total: seen.append((done, total))
    )
    assert seen == [(4, 6), (6, 6)]  # the finished chunk is skipped, not simulated again
    assert read_provenance(out)["outputs"]["chunks_resumed"] == 1
    assert read_provenance(out)["outputs"]["format"] == "zarr"
    reference = run_simulation(spec, chunk_size=4)
    np.testing.assert_array_equal(resumed["value"].values, reference["value"].values)
    np.testing.assert_array_equal(resumed["cl"].values, reference["cl"].values)
    assert resumed["patient"].values.tolist() == reference["patient"].values.tolist()

    with pytest.raises(OutputError, match="different cohort"):
        run_simulation(cohort_spec(seed=12), out=out, chunk_size=4)
    restarted = run_simulation(cohort_spec(seed=12), out=out, chunk_size=4, overwrite=True)
    assert restarted.attrs["seed"] == 12


def test_large_cohort_streams_to_zarr_instead_of_netcdf(tmp_path, monkeypatch):
    """Above LARGE_COHORT_VALUES a NetCDF path becomes a Zarr store next to it, with a warning."""
    from twinsim.scenarios._cohort import _run

    monkeypatch.setattr(_run, "LARGE_COHORT_VALUES", 6 * 13 - 1)
    with pytest.warns(LargeCohortWarning, match=r"78 output values.*big\.zarr"):
        dataset = run_simulation(cohort_spec(), out=tmp_path / "big.nc", chunk_size=4)
    assert not (tmp_path / "big.nc").exists()
    assert (tmp_path / "big.zarr").is_dir()
    assert read_provenance(tmp_path / "big.zarr")["outputs"]["format"] == "zarr"
    assert dict(dataset["conc"].sizes) == {"subject": 6, "time": 13}
    forced = run_simulation(
        cohort_spec(), out=tmp_path / "forced.nc", chunk_size=4, file_format="netcdf"
    )
    np.testing.assert_array_equal(forced["value"].values, dataset["value"].values)


def test_invalid_options_name_the_field():
    spec = cohort_spec()
    with pytest.raises(SimulationError, match=r"`chunk_size` must be a whole number ≥ 1.*got 0"):
        run_simulation(spec, chunk_size=0)
    with pytest.raises(OutputError, match=r"`file_format` must be 'auto', 'netcdf' or 'zarr'"):
        run_simulation(spec, out="x.h5", file_format="hdf5")  # type: ignore[arg-type]


def test_exposure_summary_and_band_match_direct_computation():
    """Block-wise summary and the plotted band equal whole-cohort numpy statistics.

    Tolerance: rtol 1e-12 (the same numbers, gathered in blocks of 4 subjects).
    """
    dataset = run_simulation(cohort_spec(), chunk_size=6)
    table = metrics_table(dataset)
    summary = exposure_summary(dataset, chunk_size=4)
    for name in ("cmax", "auc_last"):
        values = table[name].to_numpy()
        np.testing.assert_allclose(summary.loc[name, "median"], np.median(values), rtol=1e-12)
        np.testing.assert_allclose(summary.loc[name, "p95"], np.percentile(values, 95), rtol=1e-12)
        assert summary.loc[name, "n"] == 6
    assert summary.loc["auc_last", "unit"] == "mg·h/L"

    figure = concentration_band_figure(dataset)
    upper, lower, median = (np.asarray(trace.y) for trace in figure.data)
    conc = dataset["conc"].values
    np.testing.assert_allclose(median, np.median(conc, axis=0), rtol=1e-12)
    np.testing.assert_allclose(lower, np.percentile(conc, 5, axis=0), rtol=1e-12)
    np.testing.assert_allclose(upper, np.percentile(conc, 95, axis=0), rtol=1e-12)
    assert figure.layout.yaxis.title.text == "conc (mg/L)"
