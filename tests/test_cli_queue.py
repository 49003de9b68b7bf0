"""`analytics queue`, `replay`, `dead-letters` and `doctor` with CliRunner, on real folders and a
real loopback capture server."""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from analytics import Analytics, TelemetryConfig, events
from analytics.delivery.lease import UploadLease
from analytics.queue.dead_letters import DeadLetterStore
from analytics.state import StateFolder
from analytics.testing import CaptureServer
from analytics_cli.main import app
from tests.conftest import archived_messages, queued_messages

runner = CliRunner()
TOKEN = "phc_cli_test_token"


def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})}, input=input)


@pytest.fixture
def backlog(state_dir: Path) -> int:
    """A queue of 1,200 events left by an app that could not deliver them."""
    telemetry = Analytics(
        TelemetryConfig.from_env({}, state_dir=state_dir, endpoint="http://127.0.0.1:9", token="x")
    )
    for n in range(1200):
        telemetry.emit(events.ToolCall(tool_name=f"n{n}", duration_ms=n, success=True))
    telemetry.shutdown(timeout=0)  # nothing reachable: what is left stays queued
    return 1200


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer(api_key=TOKEN) as capture:
        yield capture


# -- queue ------------------------------------------------------------------------------------------


def test_queue_peek_shows_exactly_what_will_be_sent(backlog: int, state_dir: Path) -> None:
    result = invoke("queue", "peek", "-n", "3", "--json", "--state-dir", str(state_dir))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == queued_messages(state_dir)[:3]
    table = invoke("queue", "peek", "--count", "2", "--state-dir", str(state_dir))
    assert table.exit_code == 0
    assert "$ai_span" in table.stdout
    assert "n1" in table.stdout


def test_queue_peek_on_an_empty_machine(tmp_path: Path) -> None:
    result = invoke("queue", "peek", "--json", "--state-dir", str(tmp_path / "none"))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("name", ["backlog.jsonl", "backlog.jsonl.gz"])
def test_queue_export_writes_jsonl_and_gzips_when_asked(
    backlog: int, state_dir: Path, tmp_path: Path, name: str
) -> None:
    target = tmp_path / name
    result = invoke("queue", "export", str(target), "--json", "--state-dir", str(state_dir))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"file": str(target), "events": backlog}
    raw = gzip.decompress(target.read_bytes()) if name.endswith(".gz") else target.read_bytes()
    assert [json.loads(line) for line in raw.splitlines()] == queued_messages(state_dir)
    assert len(queued_messages(state_dir)) == backlog  # export leaves the queue alone


def test_queue_export_to_an_unwritable_place_is_one_line(
    backlog: int, state_dir: Path, tmp_path: Path
) -> None:
    result = invoke(
        "queue", "export", str(tmp_path / "no" / "such" / "dir.jsonl"), "--state-dir", str(state_dir)
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("analytics: error: cannot write")
    assert result.stderr.count("\n") == 1


def test_queue_purge_asks_first(backlog: int, state_dir: Path) -> None:
    declined = invoke("queue", "purge", "--state-dir", str(state_dir), input="n\n")
    assert declined.exit_code == 1
    assert len(queued_messages(state_dir)) == backlog
    accepted = invoke("queue", "purge", "--state-dir", str(state_dir), input="y\n")
    assert accepted.exit_code == 0
    assert f"purged {backlog:,} events" in accepted.stdout
    assert queued_messages(state_dir) == []
    status = json.loads(invoke("status", "--json", "--state-dir", str(state_dir)).stdout)
    assert status["drops"]["purged"] == backlog


def test_queue_purge_with_yes(backlog: int, state_dir: Path) -> None:
    result = invoke("queue", "purge", "--yes", "--json", "--state-dir", str(state_dir))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"purged": backlog}


# -- replay -----------------------------------------------------------------------------------------


def test_replay_delivers_the_backlog_with_progress_to_100_percent(
    backlog: int, state_dir: Path, server: CaptureServer
) -> None:
    result = invoke("replay", "--host", server.url, "--token", TOKEN, "--state-dir", str(state_dir))
    assert result.exit_code == 0, result.output
    assert f"delivered {backlog:,} of {backlog:,} events" in result.stdout
    assert "(100%)" in result.stdout
    assert len(server.events) == backlog
    assert len({e["uuid"] for e in server.events}) == backlog
    assert queued_messages(state_dir) == []


def test_replay_limit_and_json(backlog: int, state_dir: Path, server: CaptureServer) -> None:
    result = invoke(
        "replay",
        "--limit",
        "500",
        "--json",
        "--host",
        server.url,
        "--token",
        TOKEN,
        "--state-dir",
        str(state_dir),
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == {
        "queued": backlog,
        "target": 500,
        "delivered": 500,
        "destination": server.url,
        "dry_run": False,
        "complete": True,
    }
    assert len(server.events) == 500
    assert len(queued_messages(state_dir)) == backlog - 500
    # the oldest went first
    assert [e["properties"]["$ai_span_name"] for e in server.events][:3] == ["n0", "n1", "n2"]


def test_replay_dry_run_sends_nothing(backlog: int, state_dir: Path, server: CaptureServer) -> None:
    result = invoke(
        "replay", "--dry-run", "--host", server.url, "--token", TOKEN, "--state-dir", str(state_dir)
    )
    assert result.exit_code == 0
    assert f"would send {backlog:,} of {backlog:,}" in result.stdout
    assert server.requests == []


def test_replay_without_a_host_fills_the_local_archive(backlog: int, state_dir: Path) -> None:
    # The environment that made the backlog named no real host: replay delivers to the archive.
    result = invoke("replay", "--json", "--state-dir", str(state_dir))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["destination"] == "local archive"
    assert len(archived_messages(state_dir)) == backlog


def test_replay_respects_a_running_apps_lease(backlog: int, state_dir: Path, server: CaptureServer) -> None:
    lease = UploadLease(StateFolder(state_dir).lease_path, owner="pid 4242 (agent-backend)")
    with lease.hold() as ours:
        assert ours
        refused = invoke("replay", "--host", server.url, "--token", TOKEN, "--state-dir", str(state_dir))
    assert refused.exit_code == 1
    assert "pid 4242 (agent-backend)" in refused.stderr
    assert "--wait" in refused.stderr
    assert server.requests == []


def test_replay_wait_waits_for_the_lease(backlog: int, state_dir: Path, server: CaptureServer) -> None:
    lease = UploadLease(StateFolder(state_dir).lease_path, owner="the app")
    held = threading.Event()

    def hold_briefly() -> None:
        with lease.hold():
            held.set()
            time.sleep(0.5)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    held.wait(5)
    result = invoke("replay", "--wait", "--host", server.url, "--token", TOKEN, "--state-dir", str(state_dir))
    holder.join()
    assert result.exit_code == 0, result.output
    assert len(server.events) == backlog


def test_replay_with_a_refused_token_fails_and_keeps_everything(
    backlog: int, state_dir: Path, server: CaptureServer
) -> None:
    result = invoke("replay", "--host", server.url, "--token", "phc_wrong", "--state-dir", str(state_dir))
    assert result.exit_code == 1
    assert "check the token" in result.stderr
    assert len(queued_messages(state_dir)) == backlog


def test_replay_on_an_empty_machine(tmp_path: Path) -> None:
    result = invoke("replay", "--json", "--state-dir", str(tmp_path / "none"))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["delivered"] == 0


# -- dead letters ---------------------------------------------------------------------------------------


@pytest.fixture
def dead_letters(state_dir: Path) -> list[bytes]:
    records = [
        json.dumps(
            {"event": "x", "uuid": f"01a2102b-0000-7000-8000-00000000000{n}", "distinct_id": "null"}
        ).encode()
        for n in range(3)
    ]
    store = DeadLetterStore(StateFolder(state_dir).dead_letter_dir)
    for record in records:
        store.add(record, reason="HTTP 400: event 0: distinct_id refused", status=400)
    store.close()
    return records


def test_dead_letters_list(dead_letters: list[bytes], state_dir: Path) -> None:
    result = invoke("dead-letters", "list", "--json", "--state-dir", str(state_dir))
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [json.dumps(r["message"]).encode() for r in rows] == dead_letters
    assert all("distinct_id refused" in r["reason"] and r["status"] == 400 for r in rows)
    table = invoke("dead-letters", "list", "--state-dir", str(state_dir))
    assert "3 dead letters" in table.stdout


def test_dead_letters_requeue_some_then_all(dead_letters: list[bytes], state_dir: Path) -> None:
    keys = [
        r["key"]
        for r in json.loads(invoke("dead-letters", "list", "--json", "--state-dir", str(state_dir)).stdout)
    ]
    first = invoke("dead-letters", "requeue", str(keys[0]), "--json", "--state-dir", str(state_dir))
    assert json.loads(first.stdout) == {"requeued": 1}
    assert [m["uuid"] for m in queued_messages(state_dir)] == [json.loads(dead_letters[0])["uuid"]]
    rest = invoke("dead-letters", "requeue", "--state-dir", str(state_dir))
    assert "requeued 2 events" in rest.stdout
    assert len(queued_messages(state_dir)) == 3
    missing = invoke("dead-letters", "requeue", "999", "--state-dir", str(state_dir))
    assert missing.exit_code == 1
    assert "no dead letter with key 999" in missing.stderr


def test_dead_letters_purge(dead_letters: list[bytes], state_dir: Path) -> None:
    declined = invoke("dead-letters", "purge", "--state-dir", str(state_dir), input="n\n")
    assert declined.exit_code == 1
    result = invoke("dead-letters", "purge", "--yes", "--json", "--state-dir", str(state_dir))
    assert json.loads(result.stdout) == {"purged": 3}
    assert json.loads(invoke("dead-letters", "list", "--json", "--state-dir", str(state_dir)).stdout) == []


# -- doctor ------------------------------------------------------------------------------------------------


def doctor(state_dir: Path, env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]], str]:
    result = invoke("doctor", "--json", "--state-dir", str(state_dir), env=env)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    return result.exit_code, checks, result.stdout


def test_doctor_says_the_token_is_wrong(state_dir: Path, server: CaptureServer) -> None:
    code, checks, text = doctor(
        state_dir, {"TELEMETRY_ENDPOINT": server.url, "TELEMETRY_TOKEN": "phc_not_the_key"}
    )
    assert code == 1
    assert checks["posthog token"]["status"] == "fail"
    assert "was refused" in checks["posthog token"]["detail"]
    assert "Project API key" in checks["posthog token"]["fix"]
    assert "phc_not_the_key" not in text  # masked
    assert server.events == []  # the check leaves nothing behind


def test_doctor_passes_with_the_right_token(state_dir: Path, server: CaptureServer) -> None:
    code, checks, _ = doctor(state_dir, {"TELEMETRY_ENDPOINT": server.url, "TELEMETRY_TOKEN": TOKEN})
    assert code == 0
    assert checks["posthog"]["status"] == "ok"
    assert checks["clock"]["status"] == "ok"
    assert checks["configuration"]["status"] == "ok"
    human = invoke(
        "doctor",
        "--state-dir",
        str(state_dir),
        env={"TELEMETRY_ENDPOINT": server.url, "TELEMETRY_TOKEN": TOKEN},
    )
    assert "posthog" in human.stdout


def test_doctor_finds_bad_settings_open_folders_and_an_unreachable_sentry(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o755)
    os.chmod(state_dir, 0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    env = {"TELEMETRY_ENVIRONMENT": "not valid", "SENTRY_DSN": f"http://{'k' * 32}@127.0.0.1:{closed}/1"}
    code, checks, text = doctor(state_dir, env)
    assert code == 1
    assert "TELEMETRY_ENVIRONMENT" in checks["configuration"]["detail"]
    assert checks["state folder"]["fix"] == f"chmod 700 {state_dir}"
    assert checks["sentry"]["status"] == "fail"
    assert "k" * 32 not in text
    assert checks["posthog"]["status"] == "info"


def test_doctor_reports_a_paused_delivery(state_dir: Path, server: CaptureServer) -> None:
    config = TelemetryConfig.from_env({}, state_dir=state_dir, endpoint=server.url, token="phc_wrong")
    telemetry = Analytics(config)
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    assert not telemetry.flush(timeout=1)
    code, checks, _ = doctor(state_dir, {})
    assert code == 1
    assert checks["delivery"]["status"] == "fail"
    assert "paused" in checks["delivery"]["detail"]
    telemetry.shutdown(timeout=0)


def test_replay_gives_up_after_its_timeout_and_keeps_everything(backlog: int, state_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    result = invoke(
        "replay",
        "--timeout",
        "1",
        "--host",
        f"http://127.0.0.1:{closed}",
        "--token",
        TOKEN,
        "--state-dir",
        str(state_dir),
    )
    assert result.exit_code == 1
    assert "timed out after 1 s" in result.stderr
    assert len(queued_messages(state_dir)) == backlog
