"""Running trial designs: chunk and worker invariance (in process and on Dask), resume after
a kill, the written outputs and the ``twinsim trial`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

from twinsim.cli import app
from twinsim.scenarios import TrialDesign, load_trial, read_nonmem, run_trial, trial_examples

runner = CliRunner()


def _small_design(replicates: int = 5) -> TrialDesign:
    """The shipped vancomycin design (AUC rule, trough rule, PROCOVA), 6 per arm."""
    design = load_trial(trial_examples()["vancomycin_auc_vs_trough"])
    return design.model_copy(update={"replicates": replicates, "sample_size": [4, 6], "seed": 7})


def _assert_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].dtype.kind == "f":
            assert np.array_equal(a[key], b[key], equal_nan=True), key
        else:
            assert np.array_equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference():
    """All replicates in one chunk, in this process."""
    return run_trial(_small_design(), chunk_size=5).arrays


@pytest.mark.parametrize("chunk_size", [1, 2])
def test_results_do_not_depend_on_the_chunk_size(reference, chunk_size):
    """Bit-identical arrays (simulations, endpoints, analyses) for chunks of 1, 2 and 5."""
    _assert_identical(run_trial(_small_design(), chunk_size=chunk_size).arrays, reference)


def test_dask_cluster_gives_bit_identical_results(reference):
    """A LocalCluster on loopback (2 workers, threads) reached through its tcp:// address:
    the same arrays as in process, for chunk sizes 2 and 3. Then two trials one after the
    other through one ``Client``: the second gets its own results, not the first's (its
    chunks once had the same task keys, and Dask handed back the first run's results)."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        for chunk_size in (2, 3):
            result = run_trial(_small_design(), chunk_size=chunk_size, scheduler=address)
            _assert_identical(result.arrays, reference)
        other = _small_design().model_copy(update={"seed": 8})
        with Client(cluster) as client:
            first = run_trial(_small_design(), chunk_size=5, scheduler=client)
            second = run_trial(other, chunk_size=5, scheduler=client)
        _assert_identical(first.arrays, reference)
        _assert_identical(second.arrays, run_trial(other, chunk_size=5).arrays)


def test_killed_run_resumes_from_its_completed_chunks(tmp_path, reference):
    """``twinsim trial`` in a subprocess is killed (SIGKILL) once some chunks are saved;
    running again computes only the missing chunks, leaves the saved ones untouched
    (same bytes and modification time), and gives the uninterrupted run's results."""
    design_path = tmp_path / "design.yaml"
    design_path.write_text(
        yaml.safe_dump(json.loads(_small_design(12).model_dump_json()), sort_keys=False)
    )
    out = tmp_path / "run"
    chunks = out / "chunks"
    process = subprocess.Popen(
        [sys.executable, "-m", "twinsim", "trial", str(design_path), "--out", str(out),
         "--chunk-size", "1", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            if len(list(chunks.glob("chunk_*.npz"))) >= 2:
                break
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    saved = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in chunks.glob("chunk_*.npz")}
    assert 2 <= len(saved) < 12
    assert not (out / "summary.json").exists()

    result = run_trial(_small_design(12), out, chunk_size=1)
    names = sorted(p.name for p in chunks.glob("chunk_*.npz"))
    assert len(names) == 12
    assert len(result.computed_chunks) == 12 - len(saved)
    for name, (mtime, content) in saved.items():
        path = chunks / name
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content
    first_five = {
        k: (v if k in ("times", "measured_mask", "dose_times") else v[:5])
        for k, v in result.arrays.items()
    }
    _assert_identical(first_five, reference)


def test_outputs_and_the_command_line(tmp_path):
    """``twinsim trial``: progress to stderr, a power table, the Zarr store
    (replicate × arm × subject × time, covariates and arm as coordinates), the endpoint
    table, a NONMEM CSV that read_nonmem reads back, the summary and the HTML report."""
    design_path = tmp_path / "design.yaml"
    design_path.write_text(
        yaml.safe_dump(json.loads(_small_design(3).model_dump_json()), sort_keys=False)
    )
    out = tmp_path / "out"
    run = runner.invoke(app, ["trial", str(design_path), "--out", str(out), "--chunk-size", "2"])
    assert run.exit_code == 0, run.output
    assert "3/3 replicates" in run.output and "power" in run.output and "wrote" in run.output
    store = xr.open_zarr(out / "trial.zarr", consolidated=False)
    assert store["conc"].dims == ("replicate", "arm", "subject", "time")
    assert store.sizes["replicate"] == 3 and list(store["arm"].values) == [
        "trough-guided",
        "AUC-guided",
    ]
    for name in ("weight", "crcl", "ancestry", "enrolled"):
        assert store[name].dims == ("replicate", "arm", "subject")
    assert store["dose_amount"].dims == ("replicate", "arm", "subject", "dose")
    import pandas as pd

    table = pd.read_csv(out / "endpoints.csv")
    assert len(table) == 3 * 12 and {"auc_400_600", "auc24_day3_prognostic"} <= set(table)
    nonmem = read_nonmem(out / "nonmem_replicate0.csv")
    assert nonmem.n_subjects == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replicates"] == 3 and len(summary["analyses"]) == 4
    report = (out / "report.html").read_text()
    assert "Power (share of replicates" in report and "Dose paths" in report
    assert "Neely" in report  # the design's references
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["seed"] == 7


def test_command_line_reports_a_bad_design_by_field(tmp_path):
    path = tmp_path / "bad.yaml"
    design = json.loads(_small_design().model_dump_json())
    design["arms"][1]["titration"]["peak_after"] = None
    path.write_text(yaml.safe_dump(design, sort_keys=False))
    run = runner.invoke(app, ["trial", str(path), "--out", str(tmp_path / "o")])
    assert run.exit_code == 2
    assert "`arms.1.titration`" in run.output or "`arms[1].titration`" in run.output
    assert "peak_after" in run.output and "Traceback" not in run.output


def test_examples_command_lists_trial_designs():
    run = runner.invoke(app, ["examples"])
    assert run.exit_code == 0
    assert "warfarin_genotype_guided: trial design, warfarin" in run.output
