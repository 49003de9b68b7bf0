"""What telemetry adds to an app's startup, with a Sentry DSN set (SPEC 10: start() <= 50 ms).

Two figures, each the median of fresh interpreters (state folder on the user data folder's file
system, never tmpfs):

- ``start()``: the call itself, in a process that already imported FastAPI (as the backend has
  when its lifespan runs), without a DSN, with one (Sentry set up in the background, the
  default), and with one set up in the caller's thread (TELEMETRY_SENTRY_BACKGROUND_INIT=0).
  The configurations are interleaved, so a machine busy with something else slows all alike.
- ready to serve: from spawning the example backend under uvicorn to its first answered request,
  telemetry off vs on with a DSN; the difference is what the user waits for.

    python bench/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A DSN whose host is a closed loopback port: set-up cost only, nothing is sent during the run.
DSN = "http://0123456789abcdef0123456789abcdef@127.0.0.1:9/1"

START_SCRIPT = """
import json, sys, time
import fastapi  # what the backend has imported by the time its lifespan calls start()
from analytics import Analytics, TelemetryConfig
telemetry = Analytics(TelemetryConfig.from_env())
began = time.perf_counter()
telemetry.start()
took = time.perf_counter() - began
print(json.dumps({"start_ms": took * 1000}))
telemetry.shutdown(timeout=5)
"""


def state_parent() -> Path:
    """A folder on the file system of the platform's user data folder (not /tmp, often tmpfs)."""
    from platformdirs import user_data_dir

    parent = Path(user_data_dir("analytics-bench"))
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMETRY_", "SENTRY_"))}
    env["PYTHONPATH"] = str(ROOT)
    # An installed app runs from compiled bytecode (pip and PyInstaller compile it); a shell with
    # PYTHONDONTWRITEBYTECODE would make every run compile every module from source instead.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def start_ms(**env: str) -> float:
    folder = Path(tempfile.mkdtemp(dir=state_parent()))
    try:
        result = subprocess.run(
            [sys.executable, "-c", START_SCRIPT],
            env=clean_env(TELEMETRY_DIR=str(folder), **env),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        figure: float = json.loads(result.stdout.strip().splitlines()[-1])["start_ms"]
        return figure
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def ready_ms(**env: str) -> float:
    folder = Path(tempfile.mkdtemp(dir=state_parent()))
    port = free_port()
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.fastapi_backend.serve", "--port", str(port)],
        cwd=ROOT,
        env=clean_env(TELEMETRY_DIR=str(folder), **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/settings", timeout=5):
                    return (time.perf_counter() - began) * 1000
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError("the example backend exited") from None
                time.sleep(0.005)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def medians(runs: int, configurations: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each configuration once per round, interleaved, so a busy machine slows all alike; the
    first round writes the bytecode caches and is not counted."""
    figures: dict[str, list[float]] = {name: [] for name in configurations}
    for round_ in range(runs + 1):
        for name, measure in configurations.items():
            figure = measure()
            if round_:
                figures[name].append(figure)
    return {name: statistics.median(values) for name, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="telemetry's cost on app startup")
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    start = medians(
        runs,
        {
            "no DSN": lambda: start_ms(),
            "DSN, Sentry set up in the background": lambda: start_ms(SENTRY_DSN=DSN),
            "DSN, Sentry set up in start()": lambda: start_ms(
                SENTRY_DSN=DSN, TELEMETRY_SENTRY_BACKGROUND_INIT="0"
            ),
        },
    )
    print(f"startup: start() itself, median of {runs} fresh processes (FastAPI imported)")
    for name, figure in start.items():
        bar = "   (bar: <= 50 ms)" if "background" in name else ""
        print(f"  {name:<42} {figure:8.1f} ms{bar}")
    ready = medians(
        runs,
        {
            "telemetry off": lambda: ready_ms(TELEMETRY_ENABLED="0"),
            "telemetry on, no DSN": lambda: ready_ms(),
            "telemetry on, DSN set": lambda: ready_ms(SENTRY_DSN=DSN),
        },
    )
    off = ready["telemetry off"]
    print(f"startup: example backend, spawn to first answered request, median of {runs}")
    for name, figure in ready.items():
        added = f"   (added: {figure - off:+.1f} ms)" if figure is not off else ""
        print(f"  {name:<42} {figure:8.1f} ms{added}")


if __name__ == "__main__":
    main()
