"""The first warfarin what-if of a fresh process, compilation included: cold and warm cache.

Run: ``nice .venv/bin/python benchmarks/bench_first_whatif.py`` (writes
``benchmarks/results/first_whatif.json``). The dashboard's warfarin example (65 y, CYP2C9
*1/*3, VKORC1 A/A, 5 mg daily × 4, INRs on days 2–4) with the horizon set to 8 weeks,
answered as the clinician page answers it (``WhatIfSession.run`` of the page's form):
MAP fit, search of practical regimens (15 candidates × 500 draws), forecast of the 4
candidates and the 3 recommended (500 draws, every 0.5 h). Each run is a fresh Python
process that imports twinsim and answers the what-if once:

- ``cold``: an empty compilation cache (a new temporary folder as ``TWINSIM_CACHE_DIR``):
  everything compiles, as on a machine's first start;
- ``warm``: the same folder again (a second start: compiled programs are loaded).

Recorded per run: the import, the what-if's wall time and its stages (fit, search,
forecast) as the session times them, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common as common

RESULTS = Path(__file__).parent / "results" / "first_whatif.json"

_CHILD = textwrap.dedent(
    """
    import json, os, time
    started = time.perf_counter()
    from twinsim.dashboard._form import example_form
    from twinsim.dashboard._clinician import compute
    from twinsim.scenarios import WhatIfSession
    imported = time.perf_counter() - started
    form = {**example_form("whatif_warfarin_cyp2c9_vkorc1"), "horizon": "56 d"}
    session = WhatIfSession()
    load = os.getloadavg()
    started = time.perf_counter()
    out = compute(form, session)
    seconds = time.perf_counter() - started
    assert out["result"] is not None, out["status"]
    stages = {k: round(v, 2) for k, v in session.last.items() if k.endswith("_s")}
    print(json.dumps({"import_s": round(imported, 2), "whatif_s": round(seconds, 2),
                      "stages": stages, "regimens": len(out["result"].forecasts),
                      "load_before": load}))
    """
)


def _run(cache: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env={**os.environ, "TWINSIM_CACHE_DIR": cache},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report: dict = {
        "what": "first warfarin what-if (8 weeks, 7 regimens × 500 draws, regimen search) of a "
        "fresh process, through the clinician page's compute()",
        "machine": common.machine(),
    }
    with tempfile.TemporaryDirectory(prefix="twinsim-cache-") as cache:
        for name in ("cold", "warm"):
            report[name] = _run(cache)
            print(name, json.dumps(report[name]), flush=True)
    report["target"] = "< 20 s including compilation (issue 12)"
    common.write_atomically(args.out, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
