"""Shared fixtures: real state folders under tmp_path, and no swallowed bugs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from analytics import Analytics, TelemetryConfig, _guard
from analytics.queue import DiskQueue, journal
from analytics.state import StateFolder

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Figures the scrubber corpus tests measure (tests/test_scrubber_corpus.py), shown at the end.
CORPUS_FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if CORPUS_FIGURES:
        terminalreporter.section("scrubber corpus")
        for line in CORPUS_FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def no_swallowed_errors() -> Iterator[list[tuple[str, BaseException]]]:
    """The never-raise guard hides errors from the app; in tests it must not hide them from us."""
    swallowed: list[tuple[str, BaseException]] = []

    def observe(place: str, exc: BaseException) -> None:
        swallowed.append((place, exc))

    _guard.add_observer(observe)
    yield swallowed
    _guard.remove_observer(observe)
    if swallowed:
        place, exc = swallowed[0]
        raise AssertionError(f"the guard swallowed an error in {place}: {exc!r}") from exc


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit a developer's telemetry settings."""
    for name in list(os.environ):
        if name.startswith(("TELEMETRY_", "SENTRY_")) or name == "DO_NOT_TRACK":
            monkeypatch.delenv(name)


MakeTelemetry = Callable[..., Analytics]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make_telemetry(state_dir: Path) -> Iterator[MakeTelemetry]:
    """Build real Analytics instances over ``state_dir``; all are shut down at the end."""
    made: list[Analytics] = []

    def make(*, clock: Callable[[], float] | None = None, **overrides: Any) -> Analytics:
        overrides.setdefault("state_dir", state_dir)
        config = TelemetryConfig.from_env({}, **overrides)
        telemetry = Analytics(config, clock=clock) if clock else Analytics(config)
        made.append(telemetry)
        return telemetry

    yield make
    for telemetry in made:
        telemetry.shutdown()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """True as soon as ``condition()`` holds (polled), False if it still does not after ``timeout``:
    for what the library does in the background (moving the journal, keeping the bounds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def queued_messages(state_dir: Path) -> list[dict[str, Any]]:
    """Every message in the queue folder, oldest first, read through a fresh DiskQueue."""
    queue_dir = StateFolder(state_dir).queue_dir
    if not queue_dir.is_dir():
        return []
    disk = DiskQueue(queue_dir)
    try:
        records = [record for _key, record in disk.iter_all()]
    finally:
        disk.close()
    # What an app journaled and has not moved into the queue yet is queued too (oldest last).
    records += journal.read_all(StateFolder(state_dir).journal_dir)
    return [json.loads(record) for record in records]


def archived_messages(state_dir: Path) -> list[dict[str, Any]]:
    """Every message in the local archive, in file order."""
    folder = StateFolder(state_dir).archive_dir
    if not folder.is_dir():
        return []
    return [
        json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()
    ]


def run_python(
    code: str, *, env: dict[str, str] | None = None, wrapper: list[str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (behind ``wrapper``, a command prefix), returning its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMETRY_", "SENTRY_"))}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.run(
        [*(wrapper or []), sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
