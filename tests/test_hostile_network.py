"""The network half of "never harm the host, never lose silently" (issue 11), as a standing suite.

Every server here lives on 127.0.0.1 and misbehaves on purpose: it trickles, never ends its body,
redirects, answers JSON that is not PostHog's acceptance, swallows requests, refuses everything
with 413, resets connections. Against each of them ``flush(t)`` and ``shutdown(t)`` return within
t + 1 s (a behavioural bound with a generous t, not a benchmark), memory stays flat, and the
accounting holds: emitted = delivered + counted drops + dead letters + still queued.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from analytics import Analytics, ConfigError, TelemetryConfig, events
from analytics.delivery.retry import RetryPolicy
from analytics.endpoint import (
    ingestion_endpoint,
    is_loopback_host,
    mask_url_credentials,
    parse_endpoint,
)
from analytics.sinks.base import Outcome
from analytics.sinks.posthog import classify
from analytics.testing import CaptureServer
from analytics_cli.main import app
from tests import hostile_servers as hs
from tests.conftest import queued_messages, run_python

TOKEN = "phc_hostile_network_test"
FAST = RetryPolicy(base=0.02, cap=0.2, jitter=False, paused_delay=60.0)
T = 2.0  # the deadline given to flush() and shutdown()
SLACK = 1.0  # what they may take beyond it
EVENTS = 20


def tool(n: int) -> events.ToolCall:
    return events.ToolCall(tool_name=f"n{n}", duration_ms=n, success=True)


@pytest.fixture
def telemetry_for(state_dir: Path) -> Iterator[Any]:
    made: list[Analytics] = []

    def make(url: str, **config: Any) -> Analytics:
        settings = TelemetryConfig.from_env({}, state_dir=state_dir, endpoint=url, token=TOKEN, **config)
        telemetry = Analytics(settings, retry_policy=FAST, upload_interval=0.05)
        made.append(telemetry)
        return telemetry

    yield make
    for telemetry in made:
        telemetry.shutdown(timeout=0.5)


def accounted(telemetry: Analytics, delivered: int) -> int:
    """delivered + counted drops + dead letters + still queued: must equal what was emitted."""
    report = telemetry.status()
    return delivered + sum(report.drops.values()) + report.dead_letters + report.queue_depth


def run_session(telemetry: Analytics, *, thread: bool = True) -> tuple[bool, float, float]:
    """EVENTS events, then flush(T) and shutdown(T), each timed.

    ``thread``: start() first (SessionStart; shutdown adds SessionEnd: EVENTS + 2 emitted), so the
    uploader thread is in the middle of a request when flush and shutdown come. Without it, flush
    and shutdown make the requests themselves, in the caller's thread (EVENTS emitted).
    """
    if thread:
        telemetry.start()
    for n in range(EVENTS):
        telemetry.emit(tool(n))
    began = time.monotonic()
    flushed = telemetry.flush(timeout=T)
    flush_took = time.monotonic() - began
    began = time.monotonic()
    telemetry.shutdown(timeout=T)
    shutdown_took = time.monotonic() - began
    return flushed, flush_took, shutdown_took


HOSTILE = {
    "trickled header": hs.trickle(0.1),
    "trickled body": hs.trickle_body(0.1),
    "endless chunked body": hs.endless_chunked,
    "endless body without a length": hs.endless_body,
    "10 GB Content-Length": hs.huge_length,
    "blackhole": hs.blackhole,
    "connection reset": hs.reset,
    "413 on every batch": hs.answer(413, b"payload too large"),
    "503 on every batch": hs.answer(503, b"transient error, please retry"),
    "HTML 200 (captive portal)": hs.answer(200, b"<html>Hotel Wi-Fi</html>", {"Content-Type": "text/html"}),
    "301 redirect": hs.redirect(301, "http://127.0.0.1:9/batch/"),
    "308 redirect": hs.redirect(308, "http://127.0.0.1:9/batch/"),
    "503 with Retry-After a day": hs.answer(503, b"busy", {"Retry-After": "86400"}),
    "endless 100 Continue": hs.endless_interim,
    "endless header lines": hs.endless_headers,
}


@pytest.mark.parametrize("thread", [False, True], ids=["caller sends", "thread sends"])
@pytest.mark.parametrize("behaviour", list(HOSTILE.values()), ids=list(HOSTILE))
def test_deadlines_hold_and_every_event_is_accounted_for(
    telemetry_for: Any, behaviour: hs.Behaviour, thread: bool
) -> None:
    with hs.RawServer(behaviour) as server:
        telemetry = telemetry_for(server.url)
        flushed, flush_took, shutdown_took = run_session(telemetry, thread=thread)
    assert flush_took < T + SLACK, f"flush({T}) took {flush_took:.1f}s"
    assert shutdown_took < T + SLACK, f"shutdown({T}) took {shutdown_took:.1f}s"
    assert not flushed
    assert accounted(telemetry, delivered=0) == EVENTS + (2 if thread else 0)


def test_a_server_that_never_accepts_is_bounded_too(telemetry_for: Any) -> None:
    with hs.RawServer(None, accept=False) as server:
        telemetry = telemetry_for(server.url)
        flushed, flush_took, shutdown_took = run_session(telemetry)
    assert flush_took < T + SLACK
    assert shutdown_took < T + SLACK
    assert not flushed
    assert accounted(telemetry, delivered=0) == EVENTS + 2


def test_413_on_every_batch_stops_splitting_at_the_deadline(telemetry_for: Any, state_dir: Path) -> None:
    with hs.RawServer(hs.answer(413, b"payload too large")) as server:
        telemetry = telemetry_for(server.url)
        for n in range(400):
            telemetry.emit(tool(n))
        began = time.monotonic()
        flushed = telemetry.flush(timeout=T)
        took = time.monotonic() - began
        requests = len(server.requests)
    assert took < T + SLACK
    assert not flushed
    # Whatever was split down to one event and still refused is a dead letter; the rest waits.
    assert accounted(telemetry, delivered=0) == 400
    assert requests > 1  # it did split


MEMORY_SCRIPT = """
import json, os, resource, sys, threading, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a runaway read fails, not the machine

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

from analytics import Analytics, TelemetryConfig, events
from analytics.delivery.retry import RetryPolicy

config = TelemetryConfig.from_env({}, state_dir=sys.argv[1], endpoint=sys.argv[2], token="phc_memory")
telemetry = Analytics(config, retry_policy=RetryPolicy(base=0.02, cap=0.2, jitter=False))
for n in range(20):
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=n, success=True))
telemetry.flush(timeout=0.01)  # everything imported and opened before the baseline
before = rss_mb()
samples = [before]
done = threading.Event()

def sample():  # the resident set while flush and shutdown run, every 5 ms
    while not done.wait(0.005):
        samples.append(rss_mb())

sampler = threading.Thread(target=sample)
sampler.start()
began = time.monotonic()
flushed = telemetry.flush(timeout=2.0)
flush_took = time.monotonic() - began
began = time.monotonic()
telemetry.shutdown(timeout=2.0)
shutdown_took = time.monotonic() - began
done.set()
sampler.join()
print(json.dumps({"flushed": flushed, "flush_took": flush_took, "shutdown_took": shutdown_took,
                  "growth_mb": max(samples) - before, "samples": len(samples),
                  "queued": telemetry.status().queue_depth}))
"""


@pytest.mark.parametrize(
    "behaviour",
    [hs.endless_chunked, hs.endless_body, hs.huge_length, hs.endless_headers, hs.endless_interim],
    ids=hs.describe,
)
def test_an_endless_answer_neither_holds_the_deadline_nor_grows_memory(
    tmp_path: Path, behaviour: hs.Behaviour
) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the resident set size from /proc")
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)
    with hs.RawServer(behaviour) as server:
        result = run_python(
            f"import runpy, sys; sys.argv = ['m', {str(tmp_path / 'state')!r}, {server.url!r}]; "
            f"runpy.run_path({str(script)!r}, run_name='__main__')",
            timeout=60,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["flush_took"] < 2.0 + SLACK
    assert figures["shutdown_took"] < 2.0 + SLACK
    assert figures["growth_mb"] < 64, json.dumps(figures)
    assert not figures["flushed"]
    assert figures["queued"] == 20


# -- redirects (finding 7) ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_the_events_stay(
    telemetry_for: Any, state_dir: Path, status: int
) -> None:
    with hs.RawServer(hs.recorder) as target:
        location = f"http://alice:s3cret-pass@127.0.0.1:{target.port}/batch/?token=leaky"
        with hs.RawServer(hs.redirect(status, location)) as server:
            telemetry = telemetry_for(server.url)
            flushed, flush_took, shutdown_took = run_session(telemetry)
            redirects_served = len(server.requests)
        assert target.connections == 0  # not one byte went there
        assert target.received == 0
    assert redirects_served >= 1
    assert not flushed
    assert flush_took < T + SLACK
    assert shutdown_took < T + SLACK
    assert len(queued_messages(state_dir)) == EVENTS + 2  # kept, every one
    assert accounted(telemetry, delivered=0) == EVENTS + 2
    error = telemetry.status().last_error
    assert error is not None
    assert "redirect" in error["detail"]
    assert f"127.0.0.1:{target.port}/batch/" in error["detail"]  # where it points, to fix the setting
    assert "s3cret-pass" not in json.dumps(error)
    assert "leaky" not in json.dumps(error)


def test_status_and_doctor_say_the_host_redirects(state_dir: Path, telemetry_for: Any) -> None:
    with hs.RawServer(hs.redirect(308, "https://elsewhere.example/batch/")) as server:
        telemetry = telemetry_for(server.url)
        telemetry.emit(tool(1))
        assert not telemetry.flush(timeout=1.0)
        env = {"TELEMETRY_ENDPOINT": server.url, "TELEMETRY_TOKEN": TOKEN}
        result = CliRunner().invoke(app, ["doctor", "--json", "--state-dir", str(state_dir)], env=env)
        status = CliRunner().invoke(app, ["status", "--json", "--state-dir", str(state_dir)], env=env)
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    assert checks["posthog"]["status"] == "fail"
    assert "redirects (HTTP 308) to https://elsewhere.example/batch/" in checks["posthog"]["detail"]
    assert "redirect" in checks["delivery"]["detail"]
    assert "redirect" in json.loads(status.stdout)["last_error"]["detail"]


# -- only PostHog's acceptance is an ack (finding 13) ---------------------------------------------------

NOT_ACKS = {
    "empty list": b"[]",
    "empty object": b"{}",
    "quota exceeded": b'{"status":0,"error":"quota exceeded"}',
    "status true": b'{"status":true}',
    "status lower-case ok": b'{"status":"ok"}',
    "status 1.0": b'{"status":1.0}',
    "a bare string": b'"Ok"',
    "null": b"null",
    "an error object": b'{"type":"validation_error","code":"invalid_payload"}',
}


@pytest.mark.parametrize("body", list(NOT_ACKS.values()), ids=list(NOT_ACKS))
def test_json_that_is_not_posthogs_acceptance_acknowledges_nothing(
    telemetry_for: Any, state_dir: Path, body: bytes
) -> None:
    with hs.RawServer(hs.answer(200, body)) as server:
        telemetry = telemetry_for(server.url)
        for n in range(EVENTS):
            telemetry.emit(tool(n))
        assert not telemetry.flush(timeout=1.0)
        assert len(server.requests) >= 1
    assert len(queued_messages(state_dir)) == EVENTS
    error = telemetry.status().last_error
    assert error is not None
    assert "not PostHog's acceptance" in error["detail"]


@pytest.mark.parametrize(
    "body", [b'{"status":"Ok"}', b'{"status": 1}', b'{"status":"Ok","quota_limited":[]}']
)
def test_posthogs_acceptance_is_an_ack(body: bytes) -> None:
    assert classify(200, None, body, now=0.0).outcome is Outcome.SUCCESS


@pytest.mark.parametrize("status", [201, 202, 204])
def test_another_2xx_is_not_an_ack(status: int) -> None:
    assert classify(status, None, b'{"status":"Ok"}', now=0.0).outcome is Outcome.RETRY


def test_the_capture_server_answers_what_capture_answers(state_dir: Path) -> None:
    import urllib.request

    with CaptureServer(api_key=TOKEN) as server:
        body = json.dumps({"api_key": TOKEN, "batch": [], "sent_at": "2026-01-01T00:00:00Z"}).encode()
        request = urllib.request.Request(f"{server.url}/batch/", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 400
        assert refused.value.headers["Content-Type"].startswith("text/plain")
        assert refused.value.read() == b"request holds no event"
        telemetry = Analytics(
            TelemetryConfig.from_env({}, state_dir=state_dir, endpoint=server.url, token=TOKEN)
        )
        telemetry.emit(tool(1))
        assert telemetry.flush(timeout=5)
        telemetry.shutdown(timeout=1)
        assert classify(200, None, b'{"status":"Ok"}', now=0.0).outcome is Outcome.SUCCESS


def test_flush_is_false_when_every_event_went_to_dead_letters(telemetry_for: Any, state_dir: Path) -> None:
    with hs.RawServer(hs.answer(400, b"invalid event could not be processed")) as server:
        telemetry = telemetry_for(server.url)
        for n in range(8):
            telemetry.emit(tool(n))
        assert not telemetry.flush(timeout=5)
    report = telemetry.status()
    assert report.queue_depth == 0
    assert report.dead_letters == 8
    assert accounted(telemetry, delivered=0) == 8


# -- the endpoint that is validated is the one reached (finding 15) -----------------------------------


def test_a_backslash_cannot_smuggle_another_host_past_the_loopback_check(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with hs.RawServer(hs.recorder) as elsewhere, CaptureServer(api_key=TOKEN) as capture:
        # urlsplit reads the host as 127.0.0.1 (the capture server); an HTTP client may read it as
        # the part before the backslash. Either way one parser must decide, and it refuses.
        tricky = f"http://127.0.0.1:{elsewhere.port}\\@127.0.0.1:{capture.port}"
        with pytest.raises(ConfigError, match="backslash"):
            TelemetryConfig.from_env({"TELEMETRY_ENDPOINT": tricky}, strict=True)
        with caplog.at_level(logging.WARNING):
            config = TelemetryConfig.from_env(
                {"TELEMETRY_ENDPOINT": tricky, "TELEMETRY_TOKEN": TOKEN}, state_dir=state_dir
            )
        assert config.endpoint is None  # the default: the local archive, nothing on the network
        telemetry = Analytics(config)
        telemetry.emit(tool(1))
        telemetry.flush(timeout=2)
        telemetry.shutdown(timeout=1)
        assert elsewhere.connections == 0
        assert capture.requests == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("http://10.1.2.3:8000\\@127.0.0.1:8000", "backslash"),
        ("http://alice:hunter2@127.0.0.1:8000", "credentials"),
        ("http://localhost@10.1.2.3", "credentials"),
        ("http://10.1.2.3#@127.0.0.1", "credentials"),
        ("http://10.1.2.3?@127.0.0.1", "credentials"),
        ("http://127.0.0.1%2f@10.1.2.3", "credentials"),
        ("http://127.0.0.1\t.evil.example", "control"),
        ("http://127.0.0.1\x00.evil.example", "control"),
        ("http://127.0.0.1\u200b.evil.example", "control"),
        ("http://127.1:8000", "IPv4"),
        ("http://2130706433:8000", "IPv4"),
        ("http://0x7f.1:8000", "IPv4"),
        ("http://[::1%25eth0]:8000", "zone"),
        ("http://127.0.0.1:99999", "port"),
        ("http://127.0.0.1:80:80", "IPv6"),
        ("https://eu.i.posthog.com /batch", "spaces"),
        ("https://eu.i.posthog.com/batch?x=1", "query"),
        ("https://eu.i.posthog.com/#x", "fragment"),
        ("https://eu.i.posthog.com/i/../batch?x", "query"),
        ("ftp://127.0.0.1", "expected a URL"),
        ("http://evil.example", "https://"),
    ],
)
def test_ambiguous_or_unsafe_endpoints_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as refused:
        TelemetryConfig.from_env({"TELEMETRY_ENDPOINT": text}, strict=True)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://EU.PostHog.com/", "https://eu.posthog.com"),
        ("https://eu.i.posthog.com:443", "https://eu.i.posthog.com"),
        ("http://localhost:8000/ingest/", "http://localhost:8000/ingest"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("  https://eu.i.posthog.com\n", "https://eu.i.posthog.com"),
    ],
)
def test_good_endpoints_are_kept_in_one_canonical_form(text: str, shown: str) -> None:
    assert TelemetryConfig.from_env({"TELEMETRY_ENDPOINT": text}, strict=True).endpoint == shown


def test_loopback_means_loopback() -> None:
    assert parse_endpoint("http://localhost:1").is_loopback
    assert parse_endpoint("http://127.255.0.1:1").is_loopback
    assert parse_endpoint("http://[::1]:1").is_loopback
    assert not parse_endpoint("https://127.0.0.1.nip.io").is_loopback
    assert not is_loopback_host("localhost.evil.example")


def test_the_ingestion_table_matches_posthogs_own() -> None:
    from posthog.request import determine_server_host

    for host in [
        "https://app.posthog.com",
        "https://us.posthog.com",
        "https://eu.posthog.com",
        "https://eu.posthog.com/",
        "https://us.i.posthog.com",
        "https://eu.i.posthog.com",
        "https://posthog.example.com",
        "http://localhost:8000",
    ]:
        ours = str(ingestion_endpoint(parse_endpoint(host)))
        assert ours == determine_server_host(host).rstrip("/"), host


# -- credentials in an endpoint are never printed (finding 17) ----------------------------------------


def test_endpoint_credentials_are_masked_in_warnings_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    for text in ["http://alice:hunter2@127.0.0.1:8000", "ftp://alice:hunter2@example.com", "alice:hunter2@x"]:
        with pytest.raises(ConfigError) as refused:
            TelemetryConfig.from_env({"TELEMETRY_ENDPOINT": text}, strict=True)
        assert "hunter2" not in str(refused.value)
        assert "****" in str(refused.value)
        with caplog.at_level(logging.WARNING):
            TelemetryConfig.from_env({"TELEMETRY_ENDPOINT": text})
        assert "hunter2" not in caplog.text
        with pytest.raises(ValueError, match="endpoint") as direct:
            TelemetryConfig(endpoint=text)
        assert "hunter2" not in str(direct.value)


def test_doctor_never_prints_endpoint_credentials(state_dir: Path) -> None:
    env = {"TELEMETRY_ENDPOINT": "http://alice:hunter2pw@127.0.0.1:9", "TELEMETRY_TOKEN": TOKEN}
    result = CliRunner().invoke(app, ["doctor", "--json", "--state-dir", str(state_dir)], env=env)
    assert "hunter2pw" not in result.stdout + result.stderr
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    assert checks["configuration"]["status"] == "fail"
    assert "credentials" in checks["configuration"]["detail"]


def test_doctor_reports_an_unreachable_host_within_its_deadline(state_dir: Path) -> None:
    with hs.RawServer(hs.trickle(0.1)) as server:
        env = {"TELEMETRY_ENDPOINT": server.url, "TELEMETRY_TOKEN": TOKEN}
        began = time.monotonic()
        result = CliRunner().invoke(app, ["doctor", "--json", "--state-dir", str(state_dir)], env=env)
        took = time.monotonic() - began
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    assert checks["posthog"]["status"] == "fail"
    assert "timed out" in checks["posthog"]["detail"]
    assert took < 5.0 + 3.0  # the probe's 5 s deadline, and the rest of the checks


def test_masking_hides_whatever_precedes_the_at_sign() -> None:
    assert mask_url_credentials("http://alice:hunter2@host:1/p") == "http://****@host:1/p"
    assert mask_url_credentials("alice:hunter2@host") == "****@host"
    assert mask_url_credentials("http://host/p@x") == "http://host/p@x"
    assert mask_url_credentials("https://eu.i.posthog.com") == "https://eu.i.posthog.com"


# -- fork right after start() (finding 4, its network part) --------------------------------------------

FORK_SCRIPT = """
import json, os, sys, time
from analytics import Analytics, TelemetryConfig, events

config = TelemetryConfig.from_env({}, state_dir=sys.argv[1], endpoint=sys.argv[2], token="phc_fork")
telemetry = Analytics(config)
telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
telemetry.start()  # the uploader's first cycle begins at once: this is when it used to import requests
children = []
for _ in range(int(sys.argv[3])):
    pid = os.fork()
    if pid == 0:
        telemetry.emit(events.ToolCall(tool_name="child", duration_ms=2, success=True))
        telemetry.flush(timeout=1.0)  # it has something to send; whatever it returns, it must return
        os._exit(0)
    children.append(pid)
    time.sleep(0.01)  # spread over the first cycle, which used to import requests and posthog
hung = 0
deadline = time.monotonic() + 15
for pid in children:
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            hung += 1
            break
        time.sleep(0.01)
telemetry.shutdown(timeout=1.0)
print(json.dumps({"hung": hung}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_children_forked_right_after_start_never_hang(tmp_path: Path) -> None:
    script = tmp_path / "fork.py"
    script.write_text(FORK_SCRIPT)
    hung = 0
    with CaptureServer() as server:
        for run in range(3):
            result = run_python(
                f"import runpy, sys; sys.argv = ['f', {str(tmp_path / str(run))!r}, {server.url!r}, '16']; "
                f"runpy.run_path({str(script)!r}, run_name='__main__')",
                timeout=60,
            )
            assert result.returncode == 0, result.stderr[-2000:]
            hung += json.loads(result.stdout.strip().splitlines()[-1])["hung"]
    assert hung == 0, f"{hung} of 48 forked children hung in flush()"


def test_the_uploader_thread_imports_nothing(tmp_path: Path) -> None:
    """Whatever delivery needs is imported when the sink is built, in the caller's thread."""
    with CaptureServer() as server:
        result = run_python(
            f"""
            import sys, threading
            from analytics import Analytics, TelemetryConfig, events
            config = TelemetryConfig.from_env(
                {{}}, state_dir={str(tmp_path)!r}, endpoint={server.url!r}, token="phc_x"
            )
            telemetry = Analytics(config)
            telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
            telemetry.start()
            imported = []
            def audit(event, args):
                # start()'s own thread imports what the session needs, by design (a fork waits
                # for it); the threads that stay, uploader and journal, import nothing.
                name = threading.current_thread().name
                if event == "import" and name.startswith("analytics-") and name != "analytics-start":
                    imported.append(args[0])
            sys.addaudithook(audit)
            telemetry.flush(timeout=5)
            telemetry.emit(events.ToolCall(tool_name="t", duration_ms=2, success=True))
            import time; time.sleep(1.5)  # the thread delivers this one by itself
            telemetry.shutdown(timeout=2)
            print(sorted(set(imported)))
            """,
            timeout=60,
        )
        delivered = len(server.events)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", result.stdout
    assert delivered >= 3


def test_import_analytics_does_not_import_the_network_stack() -> None:
    result = run_python(
        "import sys, analytics; "
        "print(sorted(m for m in ('requests', 'posthog', 'ssl', 'analytics.sinks.http') if m in sys.modules))"
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
