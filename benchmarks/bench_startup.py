"""Cold and warm starts: what JAX's persistent compilation cache saves a new process.

Run: ``nice .venv/bin/python benchmarks/bench_startup.py`` (writes
``benchmarks/results/startup.json``). Every measurement is a fresh process with
``TWINSIM_CACHE_DIR`` pointing at one new, empty folder: the first start of a command
("cold") compiles and fills it, the second ("warm") loads its programs from it; ``off``
runs without the persistent cache for reference.

- ``simulate``: the wall time and the CPU time (user + system, less sensitive to the
  machine's load) of ``twinsim simulate SPEC`` (start of the process to the
  files written), for the example cohort (``two_compartment_oral_cohort.yaml``, 200
  subjects, closed-form linear engine) and the same spec on the Michaelis–Menten model
  (``pk_1cmt_mm_oral``: the diffrax ODE engine).
- ``dashboard`` (needs Debian's chromium and playwright): ``twinsim dashboard`` is started
  and the clinician page opened in headless Chromium; the time from the server's start
  to the first what-if drawn in the page (the warm-up's vancomycin forecast), then the
  first regimen typed into the page (new to it) until its curve is drawn.

The machine load (``os.getloadavg()``) is recorded before and after every run: on the
shared 2-core machine the numbers move with it.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import _common as common

EXAMPLES = Path(__file__).resolve().parents[1] / "scenarios" / "examples"
RESULTS = common.RESULTS / "startup.json"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of the finished child processes so far: unlike the wall
    time, it hardly moves with the other work on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _simulate(spec: Path, out_dir: Path, cache: str) -> dict[str, Any]:
    env = {**os.environ, "TWINSIM_CACHE_DIR": cache}
    load = _load()
    cpu = _children_cpu_s()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "twinsim", "simulate", str(spec), "--quiet", "--overwrite",
         "-o", str(out_dir / f"{spec.stem}.nc")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(_children_cpu_s() - cpu, 2),
        "load_before": load,
        "load_after": _load(),
    }


_ODE_SPEC = """\
# the example cohort's regimen and grid on a Michaelis-Menten model (diffrax ODE engine)
model: pk_1cmt_mm_oral
parameters: {vmax: 20 mg/h, km: 2 mg/L, v: 40 L, ka: 1.2 1/h, f_oral: 0.8}
variability: {vmax: 30%, v: 30%, ka: 30%}
n_subjects: 200
seed: 20240601
regimen: 100 mg q12h x 7 d
times: {start: 0 h, stop: 7 d, step: 30 min}
"""


def _ode_spec(folder: Path) -> Path:
    path = folder / "mm_oral_cohort.yaml"
    path.write_text(_ODE_SPEC)
    return path


def _dashboard(cache: str, log: Path) -> dict[str, Any]:
    from twinsim.dashboard._browser import (
        VIEWPORT,
        DashboardServer,
        launch_chromium,
        time_regimen_change,
        wait_ready,
    )

    os.environ["TWINSIM_CACHE_DIR"] = cache  # the server subprocess inherits it
    load = _load()
    cpu = _children_cpu_s()
    started = time.perf_counter()
    with DashboardServer(log=log) as server, launch_chromium() as browser:
        answered = time.perf_counter() - started
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(900_000)
        page.goto(server.url)
        page.wait_for_selector("#app-ready.bg-success, #app-ready.bg-danger")
        if page.query_selector("#app-ready.bg-danger") is not None:
            raise RuntimeError(f"the dashboard's warm-up failed; see {log}")
        wait_ready(page, timeout_s=900)
        first = time.perf_counter() - started
        change = time_regimen_change(page, 1, "1250 mg over 2 h q12h", timeout_s=900)
        server.stop(timeout=120)
        server_cpu = _children_cpu_s() - cpu  # the server is reaped; the browser is not yet
    return {
        "server_cpu_s": round(server_cpu, 2),
        "server_answers_s": round(answered, 2),
        "first_whatif_drawn_s": round(first, 2),
        "first_regimen_change_s": round(change, 2),
        "load_before": load,
        "load_after": _load(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-dashboard", action="store_true", help="skip the browser runs")
    parser.add_argument("--no-simulate", action="store_true", help="skip the simulate runs")
    args = parser.parse_args(argv)

    record: dict[str, Any] = {"machine": common.machine(), "simulate": {}, "dashboard": {}}
    # kept when a run fails (the server logs are in it), removed after a complete run
    tmp = tempfile.mkdtemp(prefix="twinsim-startup-")
    print(f"working folder {tmp}", flush=True)
    folder = Path(tmp)
    cache = str(folder / "cache")
    specs = {
        "two_compartment_oral_cohort (linear, closed form)": EXAMPLES
        / "two_compartment_oral_cohort.yaml",
        "mm_oral_cohort (Michaelis-Menten, diffrax ODE)": _ode_spec(folder),
    }
    for name, spec in specs.items() if not args.no_simulate else ():
        runs = {
            "off": _simulate(spec, folder, "off"),
            "cold": _simulate(spec, folder, cache),
            "warm": _simulate(spec, folder, cache),
        }
        record["simulate"][name] = runs
        print(name, {k: (v["wall_s"], v["cpu_s"]) for k, v in runs.items()}, flush=True)
    if not args.no_dashboard:
        for run in ("cold", "warm"):
            record["dashboard"][run] = _dashboard(cache, folder / f"server-{run}.log")
            print("dashboard", run, record["dashboard"][run], flush=True)
    entries = list(Path(cache).glob("*-cache"))
    record["cache"] = {
        "entries": len(entries),
        "megabytes": round(sum(p.stat().st_size for p in entries) / 1e6, 1),
    }
    shutil.rmtree(tmp)
    record["machine"]["load_average_at_end"] = _load()
    common.write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
