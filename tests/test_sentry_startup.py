"""Sentry initialised off the app's startup path: what happens to errors raised before it is ready.

Each case runs in a fresh interpreter, where sentry-sdk's set-up takes hundreds of milliseconds,
so an exception captured right after start() is certainly captured before Sentry is ready; the
script records that it was. Checked where it lands: the loopback Sentry stand-in and the archive.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analytics.sinks.archive import read_archive
from tests.conftest import run_python
from tests.sentry_server import SentryServer

HOME = str(Path.home())


@pytest.fixture
def sentry() -> Iterator[SentryServer]:
    with SentryServer() as server:
        yield server


def exceptions_in(state_dir: Path) -> list[dict[str, Any]]:
    return [m for m in read_archive(state_dir / "archive") if m["event"] == "$exception"]


def run_app(state_dir: Path, dsn: str, body: str) -> dict[str, Any]:
    result = run_python(
        f"""
        import json, sys, threading
        from analytics import Analytics, TelemetryConfig
        config = TelemetryConfig.from_env(state_dir={str(state_dir)!r}, sentry_dsn={dsn!r}, strict=True)
        telemetry = Analytics(config)

        def sentry_ready():
            # Not while our set-up thread runs (sentry_sdk may be half imported then).
            if any(t.name == "analytics-sentry-init" for t in threading.enumerate()):
                return False
            sdk = sys.modules.get("sentry_sdk")
            return bool(sdk is not None and sdk.get_client().is_active())

        out = {{}}
        telemetry.start()
        {body}
        print(json.dumps(out))
        """
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def test_an_error_before_sentry_is_ready_reaches_both_linked_by_one_id(
    sentry: SentryServer, state_dir: Path
) -> None:
    out = run_app(
        state_dir,
        sentry.dsn,
        f"""
        try:
            raise RuntimeError("sync of {HOME}/clients/acme failed")
        except RuntimeError as exc:
            out["event_id"] = telemetry.capture_exception(exc, context={{"step": "sync"}})
        out["ready_at_capture"] = sentry_ready()
        out["session_id"] = telemetry.session_id
        telemetry.shutdown(timeout=10)
        """,
    )
    assert out["ready_at_capture"] is False  # start() returned before Sentry was set up
    [event] = sentry.events()
    assert event["event_id"] == out["event_id"]
    assert event["tags"]["session_id"] == out["session_id"]
    assert event["contexts"]["analytics"] == {"step": "sync"}
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert HOME + "/" not in json.dumps(event)  # scrubbed like any other
    [posthog] = exceptions_in(state_dir)
    assert posthog["properties"]["$sentry_event_id"] == out["event_id"]


def test_sentry_set_up_in_the_background_sends_later_errors_directly(
    sentry: SentryServer, state_dir: Path
) -> None:
    out = run_app(
        state_dir,
        sentry.dsn,
        """
        import time
        deadline = time.monotonic() + 20
        while not sentry_ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        out["ready"] = sentry_ready()
        try:
            raise KeyError("late")
        except KeyError as exc:
            out["event_id"] = telemetry.capture_exception(exc)
        telemetry.shutdown(timeout=10)
        """,
    )
    assert out["ready"] is True
    [event] = sentry.events()
    assert event["event_id"] == out["event_id"]
    [posthog] = exceptions_in(state_dir)
    assert posthog["properties"]["$sentry_event_id"] == out["event_id"]


def test_opting_out_while_sentry_initialises_leaves_no_client_and_sends_nothing(
    sentry: SentryServer, state_dir: Path
) -> None:
    out = run_app(
        state_dir,
        sentry.dsn,
        """
        try:
            raise ValueError("held, then opted out")
        except ValueError as exc:
            telemetry.capture_exception(exc)
        telemetry.set_enabled(False)
        for thread in threading.enumerate():
            if thread.name == "analytics-sentry-init":
                thread.join(20)
        import sentry_sdk
        # Whatever still calls Sentry in this process finds no client of ours sending.
        sentry_sdk.capture_exception(ValueError("after the opt-out"))
        sentry_sdk.flush(timeout=2)
        out["transport"] = sentry_sdk.get_client().transport is not None
        """,
    )
    assert out["transport"] is False
    assert sentry.envelopes == []
    assert exceptions_in(state_dir) == []  # the opt-out purged the PostHog side too
