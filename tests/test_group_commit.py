"""Group commit: emit() returns before the write, and the stated window is kept, even across kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from analytics import Analytics, TelemetryConfig, events
from tests.conftest import PROJECT_ROOT, archived_messages, queued_messages


def tool(n: int) -> events.ToolCall:
    return events.ToolCall(tool_name=f"n{n}", duration_ms=n, success=True)


def test_flush_commits_what_was_handed_over(state_dir: Path) -> None:
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, group_commit_ms=5000))
    for n in range(100):
        telemetry.emit(tool(n))
    assert telemetry.flush(timeout=5)
    names = [m["properties"]["$ai_span_name"] for m in archived_messages(state_dir)]
    assert names == [f"n{n}" for n in range(100)]
    telemetry.shutdown(timeout=1)


def test_shutdown_commits_before_the_session_ends(state_dir: Path) -> None:
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, group_commit_ms=5000))
    telemetry.start()
    for n in range(10):
        telemetry.emit(tool(n))
    telemetry.shutdown(timeout=5)
    messages = archived_messages(state_dir)
    assert [m["event"] for m in messages] == ["session_started", *["$ai_span"] * 10, "session_ended"]
    assert messages[-1]["properties"]["tool_calls"] == 10  # counted when committed


def test_opting_out_throws_pending_events_away_unwritten(state_dir: Path) -> None:
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, group_commit_ms=5000))
    telemetry.emit(tool(1))  # opens the state folder; the event itself is still pending
    telemetry.set_enabled(False)
    assert sorted(p.name for p in state_dir.iterdir()) == ["opted-out"]


PRODUCER = """
import sys, time
from analytics import Analytics, TelemetryConfig, events
telemetry = Analytics(TelemetryConfig.from_env(state_dir=sys.argv[1], group_commit_ms=50))
for n in range(2000):
    telemetry.emit(events.ToolCall(tool_name=f"n{n}", duration_ms=1, success=True))
time.sleep(0.5)  # ten windows: the promise says all of them are on disk now
print("committed", flush=True)
time.sleep(60)
"""


def test_events_are_on_disk_within_the_window_even_if_killed(state_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    with subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(state_dir)], stdout=subprocess.PIPE, text=True, env=env
    ) as producer:
        assert producer.stdout is not None
        assert producer.stdout.readline().strip() == "committed"
        producer.send_signal(signal.SIGKILL)
        producer.wait(timeout=30)
    names = {m["properties"]["$ai_span_name"] for m in queued_messages(state_dir)}
    assert names == {f"n{n}" for n in range(2000)}
