"""Delivery against a strict PostHog capture server on loopback: every fault of SPEC 5 ends with
every good event delivered once and every bad one kept as a dead letter."""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from analytics import Analytics, TelemetryConfig, events
from analytics.delivery.lease import UploadLease
from analytics.delivery.retry import RetryPolicy, parse_retry_after
from analytics.queue import DiskQueue
from analytics.queue.dead_letters import DeadLetterStore
from analytics.sinks.base import ExportResult, Outcome
from analytics.sinks.posthog import PostHogSink, classify
from analytics.state import StateFolder
from analytics.testing import CaptureServer, Fault, InMemorySink
from tests.conftest import archived_messages, queued_messages

TOKEN = "phc_test_token_0123456789"
FAST = RetryPolicy(base=0.02, cap=0.2, jitter=False, paused_delay=60.0)


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer(api_key=TOKEN) as capture:
        yield capture


@pytest.fixture
def telemetry_for(state_dir: Path) -> Iterator[Any]:
    made: list[Analytics] = []

    def make(url: str, *, token: str = TOKEN, **kwargs: Any) -> Analytics:
        config = TelemetryConfig.from_env({}, state_dir=state_dir, endpoint=url, token=token, strict=True)
        kwargs.setdefault("retry_policy", FAST)
        kwargs.setdefault("upload_interval", 0.05)
        telemetry = Analytics(config, **kwargs)
        made.append(telemetry)
        return telemetry

    yield make
    for telemetry in made:
        telemetry.shutdown(timeout=1.0)


def tool(n: int) -> events.ToolCall:
    return events.ToolCall(tool_name=f"n{n}", duration_ms=n, success=True)


def span_numbers(messages: Sequence[dict[str, Any]]) -> list[int]:
    return [int(m["properties"]["$ai_span_name"][1:]) for m in messages if m["event"] == "$ai_span"]


# -- the happy path and what the wire carries ------------------------------------------------------


def test_events_reach_posthog_once_with_their_original_ids(
    server: CaptureServer, telemetry_for: Any, state_dir: Path
) -> None:
    telemetry = telemetry_for(server.url)
    for n in range(30):
        telemetry.emit(tool(n))
    queued = {m["uuid"]: m for m in queued_messages(state_dir)}
    assert telemetry.flush(timeout=10)
    assert queued_messages(state_dir) == []
    received = {e["uuid"]: e for e in server.events}
    assert received == queued  # byte for byte what was queued: same uuid, timestamp, properties
    [request] = server.requests
    assert request.status == 200
    assert request.gzipped
    assert request.sent_at is not None


def test_an_event_queued_yesterday_keeps_its_time_and_gets_a_fresh_sent_at(
    server: CaptureServer, telemetry_for: Any
) -> None:
    yesterday = time.time() - 86_400
    telemetry = telemetry_for(server.url, clock=lambda: yesterday)
    telemetry.emit(tool(1))
    assert telemetry.flush(timeout=10)
    [event] = server.events
    assert abs(datetime.fromisoformat(event["timestamp"]).timestamp() - yesterday) < 0.001
    [request] = server.requests
    assert request.sent_at is not None
    sent_at = datetime.fromisoformat(request.sent_at).timestamp()
    assert abs(sent_at - time.time()) < 60  # the real send time, so PostHog can correct skew


# -- the fault matrix ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        [Fault(500)],
        [Fault(502), Fault(503), Fault(504)],
        [Fault(408)],
        [Fault(429, retry_after="0")],
        [Fault(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")],  # a date in the past: no wait
        [Fault(drop_connection=True)],
        [Fault(200, body=b"<html><body>Welcome to Hotel Wi-Fi</body></html>")],  # a captive portal
        [Fault(200, body=b"")],
        [Fault(404)],
    ],
    ids=["500", "502-503-504", "408", "429", "429-date", "dropped", "captive-portal", "empty-200", "404"],
)
def test_transient_faults_end_with_everything_delivered_once(
    server: CaptureServer, telemetry_for: Any, state_dir: Path, faults: list[Fault]
) -> None:
    server.add_faults(*faults)
    telemetry = telemetry_for(server.url)
    for n in range(20):
        telemetry.emit(tool(n))
    emitted = [m["uuid"] for m in queued_messages(state_dir)]
    assert telemetry.flush(timeout=15)
    assert sorted(e["uuid"] for e in server.events) == sorted(emitted)  # each once
    failed = [r for r in server.requests if r.detail == "scripted fault"]
    assert len(failed) == len(faults)
    for request in failed:
        if request.uuids:  # the retry re-sent exactly the same events
            assert request.uuids == emitted


def test_a_retry_resends_identical_uuids_and_timestamps(server: CaptureServer, telemetry_for: Any) -> None:
    server.add_faults(Fault(503), Fault(503))
    telemetry = telemetry_for(server.url)
    for n in range(5):
        telemetry.emit(tool(n))
    assert telemetry.flush(timeout=10)
    attempts = [r.uuids for r in server.requests]
    assert len(attempts) == 3
    assert attempts[0] == attempts[1] == attempts[2]
    assert len(set(attempts[0])) == 5


def test_retry_after_is_honoured_as_a_floor(
    server: CaptureServer, telemetry_for: Any, state_dir: Path
) -> None:
    server.add_faults(Fault(429, retry_after="30"))
    telemetry = telemetry_for(server.url)
    telemetry.start()
    telemetry.emit(tool(1))
    telemetry.flush(timeout=0)  # nudge: the first try happens now
    deadline = time.monotonic() + 5
    while len(server.requests) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # with a 0.02 s backoff the thread would have retried many times by now
    assert len(server.requests) == 1
    assert telemetry.status().last_error is not None
    assert telemetry.status().last_error["retry_in"] >= 30


def test_413_splits_the_batch_and_delivers_all(
    server: CaptureServer, telemetry_for: Any, state_dir: Path
) -> None:
    server.add_faults(Fault(413), Fault(413))
    telemetry = telemetry_for(server.url)
    for n in range(40):
        telemetry.emit(tool(n))
    assert telemetry.flush(timeout=10)
    assert sorted(span_numbers(server.events)) == list(range(40))
    sizes = [len(r.uuids) for r in server.requests]
    assert sizes[:3] == [40, 20, 10]  # halved, then halved again, then the rest in order
    assert sum(len(r.uuids) for r in server.requests if r.status == 200) == 40


def test_400_isolates_the_bad_events_in_dead_letters(
    server: CaptureServer, telemetry_for: Any, state_dir: Path
) -> None:
    telemetry = telemetry_for(server.url)
    for n in range(10):
        telemetry.emit(tool(n))
    # Records an older, buggy version left behind: PostHog refuses them, and the batches they are in.
    queue = DiskQueue(StateFolder(state_dir).queue_dir)
    good = queued_messages(state_dir)[0]
    queue.put(
        json.dumps({**good, "uuid": "01a2102b-0000-7000-8000-000000000001", "distinct_id": "null"}).encode()
    )
    queue.put(
        json.dumps(
            {**good, "uuid": "01a2102b-0000-7000-8000-000000000002", "timestamp": "yesterday"}
        ).encode()
    )
    queue.close()
    for n in range(10, 20):
        telemetry.emit(tool(n))
    # Two events went to dead letters, not to PostHog: flush does not claim everything was delivered.
    assert not telemetry.flush(timeout=10)
    assert queued_messages(state_dir) == []
    assert sorted(span_numbers(server.events)) == list(range(20))
    assert len(server.events) == 20  # nothing twice
    store = DeadLetterStore(StateFolder(state_dir).dead_letter_dir)
    letters = list(store)
    store.close()
    assert sorted(json.loads(d.record)["uuid"][-1] for d in letters) == ["1", "2"]
    reasons = " ".join(d.reason for d in letters)
    assert "distinct_id" in reasons
    assert "timestamp" in reasons
    assert all(d.status == 400 for d in letters)
    assert telemetry.status().dead_letters == 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_keeps_the_events_and_pauses(
    server: CaptureServer, telemetry_for: Any, state_dir: Path, status: int
) -> None:
    if status == 403:
        server.add_faults(*[Fault(403)] * 5)  # a refused token stays refused
        telemetry = telemetry_for(server.url)
    else:
        telemetry = telemetry_for(server.url, token="phc_not_the_right_one")
    telemetry.start()
    for n in range(10):
        telemetry.emit(tool(n))
    assert not telemetry.flush(timeout=1)
    time.sleep(0.3)  # a busy loop would show up as many more requests
    assert len(server.requests) <= 2
    report = telemetry.status()
    assert report.paused is not None
    assert report.paused["status"] == status
    assert report.queue_depth == 11  # SessionStart and the ten: all kept
    assert server.events == []


def test_endpoint_without_token_keeps_everything_and_says_why(state_dir: Path) -> None:
    config = TelemetryConfig.from_env({}, state_dir=state_dir, endpoint="http://127.0.0.1:9")
    telemetry = Analytics(config, retry_policy=FAST)
    telemetry.emit(tool(1))
    assert not telemetry.flush(timeout=0.2)
    report = telemetry.status()
    assert report.queue_depth == 1
    assert report.paused is not None
    assert "TELEMETRY_TOKEN" in report.paused["reason"]
    telemetry.shutdown(timeout=0)


class CountingSink:
    """Wraps a real sink and counts the attempts (a fake of ours, not a mock)."""

    name = "counting"

    def __init__(self, inner: PostHogSink) -> None:
        self.inner = inner
        self.attempts = 0

    def export(self, batch: Sequence[bytes], timeout: float) -> ExportResult:
        self.attempts += 1
        return self.inner.export(batch, timeout)

    def shutdown(self) -> None:
        self.inner.shutdown()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_offline_is_quiet_and_delivery_resumes_by_itself(state_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sink = CountingSink(PostHogSink(url, TOKEN))
    config = TelemetryConfig.from_env({}, state_dir=state_dir, endpoint=url, token=TOKEN)
    telemetry = Analytics(config, retry_policy=RetryPolicy(base=0.05, cap=0.2, jitter=False), sink=sink)
    telemetry.start()
    for n in range(25):
        telemetry.emit(tool(n))
    time.sleep(1.0)
    # Backoff 0.05, 0.1, 0.2, 0.2, ...: a handful of attempts a second, not a busy loop.
    assert 1 <= sink.attempts <= 12
    with CaptureServer(api_key=TOKEN, port=port) as server:
        assert server.wait_for_events(26, timeout=10)  # no flush: the thread found the server again
        telemetry.shutdown(timeout=5)
        assert sorted(span_numbers(server.events)) == list(range(25))
        assert [e["event"] for e in server.events].count("session_ended") == 1


def test_flush_respects_its_deadline_and_keeps_what_it_could_not_send(
    server: CaptureServer, telemetry_for: Any, state_dir: Path
) -> None:
    server.add_faults(Fault(200, delay=3.0))
    telemetry = telemetry_for(server.url)
    telemetry.emit(tool(1))
    assert not telemetry.flush(timeout=0.5)
    assert len(queued_messages(state_dir)) == 1


# -- the embedded default: the local archive ----------------------------------------------------------


def test_without_a_host_events_go_to_a_date_partitioned_archive(state_dir: Path) -> None:
    day = 86_400.0
    now = [1_790_000_000.0]
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir), clock=lambda: now[0])
    telemetry.start()
    for n in range(30):
        telemetry.emit(tool(n))
    now[0] += day
    for n in range(30, 50):
        telemetry.emit(tool(n))
    telemetry.shutdown(timeout=5)
    files = sorted(p.name for p in StateFolder(state_dir).archive_dir.iterdir())
    assert files == ["2026-09-21.jsonl", "2026-09-22.jsonl"]
    archived = archived_messages(state_dir)  # every line parses as JSON
    assert sorted(span_numbers(archived)) == list(range(50))
    assert [m["event"] for m in archived].count("session_started") == 1
    assert queued_messages(state_dir) == []


def test_in_memory_sink_for_users_tests(state_dir: Path) -> None:
    sink = InMemorySink()
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir), sink=sink)
    telemetry.emit(tool(7))
    assert telemetry.flush()
    assert span_numbers(sink.events("$ai_span")) == [7]


# -- one uploader at a time ----------------------------------------------------------------------------


def test_the_lease_keeps_a_second_uploader_out(
    server: CaptureServer, telemetry_for: Any, state_dir: Path
) -> None:
    telemetry = telemetry_for(server.url)
    telemetry.emit(tool(1))
    lease = UploadLease(StateFolder(state_dir).lease_path, owner="analytics replay (test)")
    with lease.hold() as ours:
        assert ours
        assert not telemetry.flush(timeout=0.3)
        assert server.requests == []
        assert "analytics replay (test)" in (UploadLease(lease.path).holder() or "")
    assert UploadLease(lease.path).holder() is None
    assert telemetry.flush(timeout=5)
    assert len(server.events) == 1


def test_a_forked_child_does_not_inherit_a_running_uploader(
    server: CaptureServer, telemetry_for: Any
) -> None:
    telemetry = telemetry_for(server.url)
    telemetry.start()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether an uploader thread runs here, then leave at once
        uploader = telemetry._uploader
        os.write(write_end, b"running" if uploader is not None and uploader.running else b"stopped")
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert answer == b"stopped"
    assert telemetry._uploader is not None
    assert telemetry._uploader.running


# -- pure parts -------------------------------------------------------------------------------------------


def test_retry_policy_backs_off_exponentially_to_its_cap() -> None:
    policy = RetryPolicy(base=1, cap=10, jitter=False)
    assert [policy.next_delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    # Offline for days: at the 5-minute cap, 1,100 attempts take about four days.
    assert policy.next_delay(1_100) == 10
    assert RetryPolicy(base=1, cap=10).next_delay(100_000) <= 10


def test_retry_policy_jitter_stays_within_half_and_full_backoff() -> None:
    import random

    policy = RetryPolicy(base=1, cap=100)
    rng = random.Random(3)
    for attempt in range(1, 8):
        ceiling = min(100, 2 ** (attempt - 1))
        delay = policy.next_delay(attempt, rng=rng)
        assert ceiling / 2 <= delay <= ceiling


def test_retry_after_is_a_clamped_floor() -> None:
    policy = RetryPolicy(base=1, cap=10, jitter=False)
    assert policy.next_delay(1, retry_after=30) == 30
    assert policy.next_delay(4, retry_after=2) == 8
    assert policy.next_delay(1, retry_after=10**9) == 3600


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("0", 0.0), ("-5", 0.0), ("soon", None), (None, None), ("", None), ("1e9", 3600.0)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=0.0) == expected


def test_parse_retry_after_http_date_uses_the_injected_now() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0).timestamp()
    header = "Thu, 01 Jan 2026 12:01:30 GMT"
    from email.utils import parsedate_to_datetime

    expected = parsedate_to_datetime(header).timestamp() - now
    assert parse_retry_after(header, now=now) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, b'{"status": 1}', Outcome.SUCCESS),
        (200, b"<html>", Outcome.RETRY),
        (204, b"", Outcome.RETRY),
        (400, b"{}", Outcome.REJECTED),
        (401, b"{}", Outcome.UNAUTHORIZED),
        (403, b"{}", Outcome.UNAUTHORIZED),
        (408, b"{}", Outcome.RETRY),
        (413, b"{}", Outcome.SPLIT),
        (429, b"{}", Outcome.RETRY),
        (500, b"{}", Outcome.RETRY),
        (503, b"oops", Outcome.RETRY),
    ],
)
def test_classify_answers(status: int, body: bytes, outcome: Outcome) -> None:
    assert classify(status, None, body, now=0.0).outcome is outcome


def test_every_drop_reason_appears_in_status(telemetry_for: Any, server: CaptureServer) -> None:
    report = telemetry_for(server.url).status()
    assert set(report.drops) >= {"queue_full", "queue_bytes", "too_old", "oversize", "invalid_event"}
    assert Counter(report.drops.values())[0] == len(report.drops)
