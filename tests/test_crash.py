"""Real processes, real kills: nothing an app was told was queued is ever lost.

A producer emits numbered events and prints each number only after ``emit()`` returned; it is
killed with SIGKILL at random instants while its uploader runs. After the last kill, a clean start
delivers the rest. Every printed number must reach the capture server; duplicates are bounded by
the batches that were in flight when a kill landed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from analytics.delivery.uploader import MAX_BATCH_EVENTS
from analytics.testing import CaptureServer
from tests.conftest import PROJECT_ROOT, run_python

TOKEN = "phc_crash_test"

PRODUCER = Path(__file__).with_name("crash_producer.py")


def spawn_producer(state: Path, url: str, first: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMETRY_", "SENTRY_"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.Popen(
        [sys.executable, str(PRODUCER), str(state), url, str(first), TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def run_and_kill(state: Path, url: str, first: int, rng: random.Random) -> list[int]:
    """Start a producer, let it emit a random number of events, SIGKILL it; return what it acknowledged."""
    producer = spawn_producer(state, url, first)
    assert producer.stdout is not None
    target = rng.randint(5, 400)
    acknowledged: list[int] = []
    for line in producer.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) >= target:
            break
    time.sleep(rng.uniform(0, 0.03))  # land the kill at a random instant: mid-append, mid-upload, ...
    producer.send_signal(signal.SIGKILL)
    rest, _ = producer.communicate(timeout=30)
    acknowledged.extend(int(line) for line in rest.split())
    assert producer.returncode == -signal.SIGKILL
    return acknowledged


def test_kill_9_at_random_instants_loses_no_acknowledged_emit(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    state = tmp_path / "state"
    kills = 12
    with CaptureServer(api_key=TOKEN) as server:
        acknowledged: list[int] = []
        for _ in range(kills):
            acknowledged.extend(
                run_and_kill(state, server.url, len(acknowledged) and acknowledged[-1] + 1, rng)
            )
        final = run_python(
            f"""
            from analytics import Analytics, TelemetryConfig
            state, url, token = {str(state)!r}, {server.url!r}, {TOKEN!r}
            t = Analytics(TelemetryConfig.from_env(state_dir=state, endpoint=url, token=token))
            assert t.flush(timeout=30), "the backlog was not delivered"
            print(t.status().queue_depth)
            """
        )
        assert final.returncode == 0, final.stderr
        assert final.stdout.strip() == "0"
        delivered = server.events

    spans = [e for e in delivered if e["event"] == "$ai_span"]
    numbers = {int(e["properties"]["$ai_span_name"][1:]) for e in spans}
    missing = sorted(set(acknowledged) - numbers)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:10]}"
    duplicates = sum(count - 1 for count in Counter(e["uuid"] for e in delivered).values() if count > 1)
    assert duplicates <= kills * MAX_BATCH_EVENTS
    assert len(acknowledged) > kills * 5


SHARER = """
import sys
from analytics import Analytics, TelemetryConfig, events
from analytics.delivery.retry import RetryPolicy

state, url, prefix, token = sys.argv[1:5]
config = TelemetryConfig.from_env(state_dir=state, endpoint=url, token=token)
policy = RetryPolicy(base=0.02, cap=0.1, jitter=False)
telemetry = Analytics(config, retry_policy=policy, upload_interval=0.005)
telemetry.start()
for n in range(400):
    telemetry.emit(events.ToolCall(tool_name=f"{prefix}{n}", duration_ms=1, success=True))
assert telemetry.flush(timeout=30)
telemetry.shutdown(timeout=10)
"""


def test_two_processes_sharing_a_queue_never_send_an_event_twice(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMETRY_", "SENTRY_"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    with CaptureServer(api_key=TOKEN) as server:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", SHARER, str(state), server.url, prefix, TOKEN], env=env, text=True
            )
            for prefix in ("app-", "replay-")
        ]
        for process in processes:
            assert process.wait(timeout=120) == 0
        delivered = server.events
    uuids = Counter(e["uuid"] for e in delivered)
    assert max(uuids.values()) == 1, "an event was sent twice"
    names = {e["properties"]["$ai_span_name"] for e in delivered if e["event"] == "$ai_span"}
    assert names == {f"{prefix}{n}" for prefix in ("app-", "replay-") for n in range(400)}
    assert [e["event"] for e in delivered].count("session_started") == 2


def test_an_app_that_just_exits_is_flushed_at_exit(tmp_path: Path) -> None:
    with CaptureServer(api_key=TOKEN) as server:
        app = run_python(
            f"""
            from analytics import Analytics, TelemetryConfig, events
            state, url, token = {str(tmp_path / "state")!r}, {server.url!r}, {TOKEN!r}
            config = TelemetryConfig.from_env(state_dir=state, endpoint=url, token=token)
            t = Analytics(config, upload_interval=60)
            t.start()
            for n in range(10):
                t.emit(events.ToolCall(tool_name=f"n{{n}}", duration_ms=1, success=True))
            # no shutdown(): the interpreter exits and the atexit hook ends the session and flushes
            """
        )
        assert app.returncode == 0, app.stderr
        names = [e["event"] for e in server.events]
    assert names.count("$ai_span") == 10
    assert names[0] == "session_started"
    assert names[-1] == "session_ended"
