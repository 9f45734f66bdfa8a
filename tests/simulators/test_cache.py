"""JAX's persistent compilation cache as twinsim sets it up (``simulators/_cache.py``).

Each check runs in a fresh Python process: the cache is configured when
``twinsim.simulators`` is imported, once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


def _env(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)  # the same `twinsim` (PYTHONPATH or installed) as this process
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _run(code: str, **env: str | None) -> dict:
    """Run ``code`` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


_SETTINGS = """
    import json, jax
    import twinsim.simulators as ts
    folder = ts.compilation_cache_dir()
    print(json.dumps({
        "dir": None if folder is None else str(folder),
        "jax_dir": jax.config.jax_compilation_cache_dir,
        "min_time": jax.config.jax_persistent_cache_min_compile_time_secs,
        "min_size": jax.config.jax_persistent_cache_min_entry_size_bytes,
        "max_size": jax.config.jax_compilation_cache_max_size,
    }))
"""


def test_cache_folder_default_override_and_off(tmp_path: Path) -> None:
    """Default: ``$XDG_CACHE_HOME/twinsim/jax`` (platformdirs on Linux) with twinsim's
    thresholds; ``TWINSIM_CACHE_DIR`` moves it; ``off`` disables it; a folder configured
    for JAX itself (``JAX_COMPILATION_CACHE_DIR``) wins."""
    from twinsim.simulators._cache import MAX_SIZE_BYTES, MIN_COMPILE_TIME_S

    if sys.platform.startswith("linux"):
        default = _run(_SETTINGS, TWINSIM_CACHE_DIR=None, XDG_CACHE_HOME=str(tmp_path / "xdg"))
        assert default["dir"] == str(tmp_path / "xdg" / "twinsim" / "jax")
        assert (tmp_path / "xdg" / "twinsim" / "jax").is_dir()
        assert default["min_time"] == MIN_COMPILE_TIME_S
        assert default["min_size"] == -1  # every size is written
        assert default["max_size"] == MAX_SIZE_BYTES  # bounded, so JAX locks the folder

    moved = _run(_SETTINGS, TWINSIM_CACHE_DIR=str(tmp_path / "mine"))
    assert moved["dir"] == moved["jax_dir"] == str(tmp_path / "mine")

    for off in ("off", "OFF", "0", "false"):
        disabled = _run(_SETTINGS, TWINSIM_CACHE_DIR=off)
        assert disabled["dir"] is None and disabled["jax_dir"] is None, off

    jax_own = _run(
        _SETTINGS,
        TWINSIM_CACHE_DIR=str(tmp_path / "ignored"),
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-own"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="3",
    )
    assert jax_own["dir"] == str(tmp_path / "jax-own")
    assert jax_own["min_time"] == 3.0  # the user's JAX setting is kept
    assert not (tmp_path / "ignored").exists()


def test_unwritable_cache_folder_warns_and_runs_uncached(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import twinsim.simulators as ts; print(ts.compilation_cache_dir())",
        ],
        env=_env(TWINSIM_CACHE_DIR=str(blocker / "jax")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
    assert "cannot create the compilation cache folder" in done.stderr
    assert "TWINSIM_CACHE_DIR" in done.stderr


# One ODE model through the diffrax engine and a few small programs of distinct shapes;
# prints the results, the XLA programs obtained (compiled or loaded: JAX reports both as
# backend compilations), the persistent-cache hits and any cache warning.
_COMPILE = """
    import json, os, sys, time, warnings
    from pathlib import Path
    import jax, jax.numpy as jnp, numpy as np
    import twinsim.simulators as ts

    events = {"programs": 0, "hits": 0}
    def on_duration(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            events["programs"] += 1
    def on_event(event, **kw):
        if event == "/jax/compilation_cache/cache_hits":
            events["hits"] += 1
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)

    start = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    while start is not None and not start.exists():  # both processes compile at once
        time.sleep(0.01)
    model = ts.ODEModel(
        name="cache_test_1cmt_mm", states=("central",), parameters=("vmax", "km", "v"),
        rhs=lambda t, y, p: {"central": -p.vmax * (y.central / p.v) / (p.km + y.central / p.v)},
        outputs={"conc": lambda y, p: y.central / p.v},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        solution = ts.simulate(
            model, np.array([[10.0, 2.0, 20.0], [5.0, 1.0, 30.0]]),
            ts.DosingEvents.repeated(100.0, 12.0, 2, compartment=0), jnp.linspace(0.0, 24.0, 7),
        )
        sums = [float(jnp.sum(jnp.cumsum(jnp.arange(float(n)) ** 2))) for n in range(3, 13)]
    print(json.dumps({
        "conc": np.asarray(solution.outputs).tolist(), "sums": sums, **events,
        "cache_warnings": [str(w.message) for w in caught if "cache" in str(w.message).lower()],
        "folder": str(ts.compilation_cache_dir()),
    }))
"""


def test_two_processes_share_one_cache_and_a_third_loads_everything(tmp_path: Path) -> None:
    """Two processes compile the same programs at the same moment into one empty cache
    folder (JAX's ``filelock`` lock around reads and writes, see ``_cache.py``): both get
    the right numbers and no cache warning (no half-written entry is read). A third
    process then loads every program it needs from the folder (cache hits equal the
    programs obtained: nothing compiled) and computes the same numbers bitwise.
    The threshold is lowered to 0 s here so every program is written whatever the load.
    """
    folder = tmp_path / "shared-cache"
    go = tmp_path / "go"
    env = _env(TWINSIM_CACHE_DIR=str(folder), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    script = textwrap.dedent(_COMPILE)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(3.0)  # both import twinsim first, then start compiling together
    go.touch()
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=600)
        assert racer.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    first, second = results
    assert first["folder"] == second["folder"] == str(folder)
    assert first["cache_warnings"] == second["cache_warnings"] == []
    assert first["conc"] == second["conc"] and first["sums"] == second["sums"]
    assert first["sums"][0] == 6.0  # cumsum of (0, 1, 4) is (0, 1, 5)
    entries = list(folder.glob("*-cache"))
    assert len(entries) >= 10, sorted(p.name for p in entries)

    third = _run(
        _COMPILE, TWINSIM_CACHE_DIR=str(folder), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"
    )
    assert third["programs"] > 0
    assert third["hits"] == third["programs"], third
    assert third["cache_warnings"] == []
    assert third["conc"] == first["conc"] and third["sums"] == first["sums"]


@pytest.mark.parametrize("setting", ["off"])
def test_off_writes_nothing(tmp_path: Path, setting: str) -> None:
    """``TWINSIM_CACHE_DIR=off``: compiled programs are not written anywhere."""
    result = _run(_COMPILE, TWINSIM_CACHE_DIR=setting, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert result["folder"] == "None"
    assert result["hits"] == 0
    assert not (tmp_path / "xdg" / "twinsim").exists()
