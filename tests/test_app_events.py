"""Any app, not just the seed's: app-defined events, identity, consent levels, debug mode and
archive retention, end to end against the loopback capture server."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from analytics import Analytics, AppEvent, Content, Hashed, TelemetryConfig, Text
from analytics.app_events import EventRegistrationError
from analytics.delivery.uploader import MAX_BATCH_EVENTS
from analytics.privacy.identity import load_or_create_identity
from analytics.sinks.archive import ArchiveRetention, ArchiveSink
from analytics.sinks.base import ExportResult
from analytics.testing import CaptureServer, InMemorySink
from cli.commands.demo import SimulatedClock, simulate_session
from tests.conftest import queued_messages, wait_until

TOKEN = "phc_app_events_test"


class FileOpened(AppEvent):
    """The user opened a file in the app's editor."""

    posthog_event = "file_opened"
    path: Hashed
    size_bytes: int


class FeedbackGiven(AppEvent):
    """The user wrote feedback."""

    posthog_event = "feedback_given"
    comment: Text
    transcript: Content | None = None
    note: str | None = None  # no marker: treated as Text (scrubbed)


class NotRegistered(AppEvent):
    posthog_event = "not_registered"
    value: int


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer(api_key=TOKEN) as server:
        yield server


def make(
    state_dir: Path, capture: CaptureServer, clock: Callable[[], float] = time.time, **overrides: object
) -> Analytics:
    config = TelemetryConfig.from_env({}, state_dir=state_dir, endpoint=capture.url, token=TOKEN, **overrides)
    return Analytics(config, clock=clock, events=[FileOpened, FeedbackGiven])


def by_event(server: CaptureServer, name: str) -> list[dict[str, object]]:
    return [e for e in server.events if e["event"] == name]


def test_app_events_arrive_hashed_and_scrubbed_and_unregistered_ones_are_counted(
    state_dir: Path, capture: CaptureServer
) -> None:
    telemetry = make(state_dir, capture)
    home_file = os.path.expanduser("~/clients/acme/contract.docx")
    telemetry.emit(FileOpened(path=home_file, size_bytes=4096))
    telemetry.emit(
        "FeedbackGiven",
        {
            "comment": "mail me at jane.doe@example.com, key sk-proj-abcdefghijklmnopqrstuvwx1234",
            "note": home_file,
        },
    )
    telemetry.emit(NotRegistered(value=1))
    telemetry.emit("NotRegistered", {"value": 1})
    assert telemetry.flush(5.0)

    opened = by_event(capture, "file_opened")
    feedback = by_event(capture, "feedback_given")
    assert len(opened) == 1
    assert len(feedback) == 1
    identity = load_or_create_identity(state_dir)
    assert opened[0]["properties"]["path"] == identity.keyed_hash(home_file)  # type: ignore[index]
    assert opened[0]["properties"]["size_bytes"] == 4096  # type: ignore[index]
    raw = json.dumps(capture.events)
    # The path is only a hash where it is Hashed; as free text (note) it is scrubbed of the home folder.
    assert raw.count("contract.docx") == 1
    assert os.path.expanduser("~") not in raw
    assert "jane.doe@example.com" not in raw
    assert "sk-proj-abc" not in raw
    comment = feedback[0]["properties"]["comment"]  # type: ignore[index]
    assert comment == "mail me at <email>, key <secret>"  # scrubbed with placeholders, not dropped
    assert "transcript" not in feedback[0]["properties"]  # type: ignore[operator]  # content: level full only
    assert not by_event(capture, "not_registered")
    assert telemetry.status().drops["unknown_event"] == 2
    telemetry.shutdown()


def test_content_fields_are_kept_only_at_level_full(state_dir: Path, capture: CaptureServer) -> None:
    telemetry = make(state_dir, capture, level="full")
    telemetry.emit(FeedbackGiven(comment="ok", transcript="the whole chat"))
    assert telemetry.flush(5.0)
    assert by_event(capture, "feedback_given")[0]["properties"]["transcript"] == "the whole chat"  # type: ignore[index]
    telemetry.shutdown()


def test_registration_refuses_reserved_or_taken_names() -> None:
    class Dollar(AppEvent):
        posthog_event = "$pageview"

    class Clash(AppEvent):
        posthog_event = "session_started"

    telemetry = Analytics(TelemetryConfig(enabled=False))
    with pytest.raises(EventRegistrationError, match="reserves"):
        telemetry.register_events(Dollar)
    with pytest.raises(EventRegistrationError, match="already"):
        telemetry.register_events(Clash)


def test_identify_then_reset(state_dir: Path, capture: CaptureServer) -> None:
    telemetry = make(state_dir, capture)
    telemetry.start()
    assert telemetry.user_id is None  # (asking waits for start()'s thread, which makes the folder)
    install_id = load_or_create_identity(state_dir).install_id
    telemetry.emit(FileOpened(path="/tmp/a", size_bytes=1))
    telemetry.identify("user-42", {"plan": "pro", "contact": "jane@example.com"})
    assert telemetry.user_id == "user-42"
    telemetry.emit(FileOpened(path="/tmp/b", size_bytes=2))
    telemetry.reset()
    telemetry.emit(FileOpened(path="/tmp/c", size_bytes=3))
    telemetry.shutdown()

    events = capture.events
    identify = by_event(capture, "$identify")
    assert len(identify) == 1
    props = identify[0]["properties"]
    assert identify[0]["distinct_id"] == "user-42"
    assert props["$anon_distinct_id"] == install_id  # type: ignore[index]
    assert props["$set"]["plan"] == "pro"  # type: ignore[index]
    assert "jane@example.com" not in json.dumps(props)  # the app's person properties are scrubbed too
    assert props["$set"]["app_version"] == "unknown"
    assert props["$set"]["os"]
    assert props["$set_once"]["first_os"] == props["$set"]["os"]  # type: ignore[index]
    assert "$process_person_profile" not in props  # type: ignore[operator]
    opened = by_event(capture, "file_opened")
    assert [e["distinct_id"] for e in opened][:2] == [install_id, "user-42"]
    assert opened[0]["properties"]["$process_person_profile"] is False  # type: ignore[index]
    assert "$process_person_profile" not in opened[1]["properties"]  # type: ignore[operator]
    fresh = opened[2]["distinct_id"]
    assert fresh not in (install_id, "user-42")
    assert load_or_create_identity(state_dir).install_id == fresh  # the new anonymous id is kept
    assert telemetry.user_id is None
    # The session that started anonymous ends as the fresh anonymous id; nothing else is sent.
    assert {e["event"] for e in events} == {"session_started", "file_opened", "$identify", "session_ended"}


def test_an_identified_user_is_kept_across_restarts_and_gets_person_properties(
    state_dir: Path, capture: CaptureServer
) -> None:
    first = make(state_dir, capture)
    first.identify("user-7")
    first.shutdown()
    second = make(state_dir, capture, app_version="2.0.0")
    second.start()
    second.shutdown()
    start = by_event(capture, "session_started")[-1]
    assert start["distinct_id"] == "user-7"
    props = start["properties"]
    assert props["$set"]["app_version"] == "2.0.0"  # type: ignore[index]
    assert props["$set_once"]["first_app_version"] == "2.0.0"  # type: ignore[index]  # PostHog keeps the first
    assert "$process_person_profile" not in props  # type: ignore[operator]
    assert len(by_event(capture, "$identify")) == 1


def test_an_illegal_user_id_is_ignored(state_dir: Path, capture: CaptureServer) -> None:
    telemetry = make(state_dir, capture)
    telemetry.identify("anonymous")
    assert telemetry.user_id is None
    with pytest.raises(ValueError, match="reserved"):
        make(state_dir, capture, strict=True).identify("null")


def test_a_user_id_that_is_not_utf_8_is_ignored_as_the_environments_would_be(
    state_dir: Path, capture: CaptureServer
) -> None:
    """An id read from the file system (os.fsdecode's lone surrogate) cannot be kept in the state
    folder nor sent as PostHog knows it: refused, as TELEMETRY_USER_ID refuses it, not taken for
    this run only with its ``$identify`` lost (and no error of ours for the guard to swallow)."""
    user_id = os.fsdecode(b"user-\xe9")
    telemetry = make(state_dir, capture)
    telemetry.identify(user_id)
    assert telemetry.user_id is None
    telemetry.emit(FileOpened(path="/tmp/a", size_bytes=1))
    telemetry.shutdown()
    assert by_event(capture, "$identify") == []
    assert {e["distinct_id"] for e in by_event(capture, "file_opened")} == {
        load_or_create_identity(state_dir).install_id
    }
    with pytest.raises(ValueError, match="UTF-8"):
        make(state_dir, capture, strict=True).identify(user_id)


# -- consent levels ----------------------------------------------------------------------------

SESSION_EVENTS = {
    "session_started",
    "workspace_selected",
    "$ai_generation",
    "$ai_span",
    "$ai_trace",
    "proposal_created",
    "proposal_decided",
    "$exception",
    "session_ended",
    "file_opened",
}


def run_demo_session(telemetry: Analytics, clock: SimulatedClock) -> None:
    simulate_session(telemetry, clock, seed=3)
    telemetry.emit(FileOpened(path="/tmp/x", size_bytes=1))
    telemetry.emit(FeedbackGiven(comment="nice", transcript="full text"))


def crashed_session(state_dir: Path) -> None:
    """Leave a crashed session's marker behind, as a killed process would."""
    from analytics.session import SessionCounters, SessionMarker

    marker = SessionMarker(state_dir / "sessions", "01900000-0000-7000-8000-000000000001", time.time() - 60)
    marker.write(SessionCounters(chat_turns=1), time.time() - 30)
    marker.forget()  # the process "dies": the lock goes with its descriptor


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("crash", Counter({"session_ended:crash": 1, "$exception:unhandled": 1})),
        ("error", Counter({"session_ended:crash": 1, "$exception:unhandled": 1, "$exception:handled": 1})),
        ("usage", None),
        ("full", None),
    ],
)
def test_each_level_sends_exactly_its_events(
    state_dir: Path, capture: CaptureServer, level: str, expected: Counter[str] | None
) -> None:
    state_dir.mkdir(parents=True)
    crashed_session(state_dir)
    clock = SimulatedClock()  # the demo's story moves on its own clock
    telemetry = make(state_dir, capture, clock, level=level)
    assert telemetry.level == level
    run_demo_session(telemetry, clock)
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)  # the installed hook, as for an uncaught one
    telemetry.shutdown(timeout=10.0)

    def kind(event: dict[str, object]) -> str:
        props = event["properties"]
        assert isinstance(props, dict)
        if event["event"] == "session_ended":
            return f"session_ended:{props['end_reason']}"
        if event["event"] == "$exception":
            handled = props["$exception_list"][0]["mechanism"]["handled"]
            return f"$exception:{'handled' if handled else 'unhandled'}"
        return str(event["event"])

    sent = Counter(kind(e) for e in capture.events)
    full_content = [
        e for e in capture.events if "transcript" in e["properties"] or "$ai_input" in e["properties"]
    ]
    if expected is not None:
        assert sent == expected
        assert telemetry.status().drops["level_filtered"] > 0
    else:
        assert {name.split(":")[0] for name in sent} == SESSION_EVENTS | {"feedback_given"}
        assert sent["session_ended:crash"] == 1
        assert sent["session_ended:shutdown"] == 1
        assert sent["$exception:handled"] == 1
        assert sent["$exception:unhandled"] == 1
        assert bool(full_content) == (level == "full")


def test_lowering_the_level_purges_what_is_queued_above_it(state_dir: Path, capture: CaptureServer) -> None:
    capture.add_faults(*[capture_fault()] * 50)  # offline: everything stays queued
    telemetry = make(state_dir, capture, level="full")
    telemetry.emit(FeedbackGiven(comment="a", transcript="secret chat"))  # full
    telemetry.emit(FileOpened(path="/tmp/x", size_bytes=1))  # usage
    telemetry.emit("Error", {"error_type": "ValueError", "message": "handled"})  # error
    telemetry.emit("Error", {"error_type": "OSError", "handled": False})  # crash
    assert len(queued_messages(state_dir)) == 4

    telemetry.set_level("usage")
    assert [m["event"] for m in queued_messages(state_dir)] == ["file_opened", "$exception", "$exception"]
    telemetry.set_level("crash")
    remaining = queued_messages(state_dir)
    assert len(remaining) == 1
    assert remaining[0]["properties"]["error_type"] == "OSError"
    assert telemetry.status().drops["level_lowered"] == 3
    assert telemetry.status().level == "crash"
    telemetry.shutdown(timeout=0.5)

    # The choice is kept for the next start, and shown by the CLI.
    again = make(state_dir, capture)
    assert again.level == "crash"
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["status", "--json", "--state-dir", str(state_dir)])
    assert json.loads(result.stdout)["level"] == "crash"


def capture_fault() -> object:
    from analytics.testing import Fault

    return Fault(status=503)


def test_set_level_off_opts_out_and_bad_names_are_refused(state_dir: Path, capture: CaptureServer) -> None:
    telemetry = make(state_dir, capture)
    telemetry.emit(FileOpened(path="/tmp/x", size_bytes=1))
    with pytest.raises(ValueError, match="off, crash, error, usage, full"):
        telemetry.set_level("verbose")
    telemetry.set_level("off")
    assert not telemetry.enabled
    assert telemetry.level == "off"
    assert queued_messages(state_dir) == []
    assert (state_dir / "opted-out").exists()
    telemetry.set_level("error")
    assert telemetry.enabled
    assert telemetry.level == "error"


@pytest.mark.parametrize(
    ("env", "level"),
    [
        ({}, "usage"),
        ({"TELEMETRY_FULL_CONTENT": "1"}, "full"),
        ({"TELEMETRY_LEVEL": "error", "TELEMETRY_FULL_CONTENT": "1"}, "error"),
        ({"TELEMETRY_ENABLED": "0", "TELEMETRY_LEVEL": "full"}, "off"),
        ({"DO_NOT_TRACK": "1"}, "off"),
        ({"TELEMETRY_LEVEL": "Crash"}, "crash"),
        ({"TELEMETRY_LEVEL": "loud"}, "off"),  # unreadable consent means none
    ],
)
def test_environment_maps_onto_levels(env: dict[str, str], level: str) -> None:
    assert TelemetryConfig.from_env(env).telemetry_level == level


# -- debug mode ----------------------------------------------------------------------------------


def test_debug_mode_writes_each_queued_message_byte_for_byte(
    state_dir: Path, capture: CaptureServer, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    telemetry = make(state_dir, capture, debug=True)
    telemetry.emit(FileOpened(path="/tmp/x", size_bytes=1))
    telemetry.emit(FeedbackGiven(comment="café ünïcode"))
    telemetry.identify("user-1")
    from analytics.queue import DiskQueue, journal
    from analytics.state import StateFolder

    disk = DiskQueue(StateFolder(state_dir).queue_dir)
    try:
        queued = [record for _key, record in disk.iter_all()]
    finally:
        disk.close()
    queued += journal.read_all(StateFolder(state_dir).journal_dir)  # emitted, not moved yet
    printed = capfdbinary.readouterr().err
    assert printed == b"".join(record + b"\n" for record in queued)
    assert len(queued) == 3
    assert telemetry.flush(5.0)  # and it is still sent
    assert len(capture.events) == 3


# -- archive retention ---------------------------------------------------------------------------


def test_archive_day_files_past_retention_are_removed_and_counted(state_dir: Path) -> None:
    archive = state_dir / "archive"
    archive.mkdir(parents=True)
    now = time.time()
    day = 86_400
    old = [time.strftime("%Y-%m-%d", time.gmtime(now - n * day)) for n in (200, 120, 91)]
    young = [time.strftime("%Y-%m-%d", time.gmtime(now - n * day)) for n in (89, 3)]
    for name in old + young:
        (archive / f"{name}.jsonl").write_bytes(b'{"uuid":"x"}\n' * 2)
    (archive / "notes.txt").write_text("the user's own file")
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir))
    telemetry.emit("ToolCall", {"tool_name": "grep", "duration_ms": 1, "success": True})
    assert telemetry.flush(5.0)  # the uploader's export applies the retention
    left = sorted(p.name for p in archive.iterdir())
    assert [n for n in left if n.endswith(".jsonl") and n[:10] in old] == []
    assert {f"{n}.jsonl" for n in young} <= set(left)
    assert "notes.txt" in left
    report = telemetry.status()
    assert report.archive_pruned is not None
    assert report.archive_pruned["files"] == 3
    assert report.archive_pruned["events"] == 6
    telemetry.shutdown()


def test_archive_byte_bound_deletes_the_oldest_days_first(tmp_path: Path) -> None:
    now = time.time()
    names = [time.strftime("%Y-%m-%d", time.gmtime(now - n * 86_400)) for n in (3, 2, 1)]
    for name in names:
        (tmp_path / f"{name}.jsonl").write_bytes(b"x" * 1000 + b"\n")
    sink = ArchiveSink(tmp_path, retention=ArchiveRetention(days=90, max_bytes=2500), now=lambda: now)
    pruned = sink.prune()
    assert pruned.files == 1
    assert sorted(p.name[:10] for p in tmp_path.iterdir()) == names[1:]


# -- fixes on the way ----------------------------------------------------------------------------


def test_a_fixed_token_clears_the_stale_pause(state_dir: Path, capture: CaptureServer) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    no_token = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, endpoint=capture.url))
    no_token.emit("ToolCall", {"tool_name": "grep", "duration_ms": 1, "success": True})
    assert not no_token.flush(0.5)
    assert no_token.status().paused is not None
    no_token.shutdown(timeout=0.2)

    env = {"TELEMETRY_ENDPOINT": capture.url, "TELEMETRY_TOKEN": TOKEN}
    result = CliRunner().invoke(app, ["status", "--json", "--state-dir", str(state_dir)], env=env)
    assert json.loads(result.stdout)["paused"] is None
    fixed = make(state_dir, capture)
    assert fixed.flush(5.0)
    assert fixed.status().paused is None


def test_demo_session_duration_follows_its_clock(state_dir: Path) -> None:
    from typer.testing import CliRunner

    from analytics.sinks.archive import read_archive
    from cli.main import app

    result = CliRunner().invoke(app, ["demo", "--json", "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    ended = [m for m in read_archive(state_dir / "archive") if m["event"] == "session_ended"]
    assert 14 * 60_000 <= ended[0]["properties"]["duration_ms"] <= 16 * 60_000
    status = CliRunner().invoke(app, ["status", "--json", "--state-dir", str(state_dir)])
    assert time.time() - json.loads(status.stdout)["last_delivery"]["at"] < 60


def test_the_cli_lists_the_apps_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent))
    runner = CliRunner()
    listed = runner.invoke(app, ["events", "--json", "--catalog", "tests.test_app_events:APP_EVENTS"])
    assert listed.exit_code == 0, listed.output
    entries = {e["event"]: e for e in json.loads(listed.stdout)["events"]}
    assert entries["FileOpened"]["posthog_event"] == "file_opened"
    assert {f["name"]: f["privacy"] for f in entries["FileOpened"]["fields"]}["path"] == "hashed"
    assert "SessionStart" in entries
    schema = runner.invoke(app, ["events", "--json-schema", "--catalog", "tests.test_app_events:APP_EVENTS"])
    defs = json.loads(schema.stdout)["$defs"]
    assert defs["FeedbackGiven"]["properties"]["transcript"]["x-privacy"] == "content"
    bad = runner.invoke(app, ["events", "--catalog", "tests.test_app_events:nothing"])
    assert bad.exit_code == 2


APP_EVENTS = [FileOpened, FeedbackGiven]


class SyncFailed(AppEvent):
    """An app event the app wants even from users who share only errors."""

    posthog_event = "sync_failed"
    consent_level = "error"
    reason: Text


def test_an_app_events_own_consent_level_decides_where_it_is_sent(
    state_dir: Path, capture: CaptureServer
) -> None:
    for level, sent in (
        ("crash", set()),
        ("error", {"sync_failed"}),
        ("usage", {"sync_failed", "file_opened"}),
    ):
        seen = len(capture.events)
        telemetry = make(state_dir / level, capture, level=level)
        telemetry.register_events(SyncFailed)
        for _ in range(2):  # the second time, the type's rank is already known
            telemetry.emit(SyncFailed(reason="disk full"))
            telemetry.emit(FileOpened(path="/tmp/a", size_bytes=1))
        assert telemetry.flush(timeout=10)
        names = [e["event"] for e in capture.events[seen:] if e["event"] in {"sync_failed", "file_opened"}]
        assert set(names) == sent, level
        assert len(names) == 2 * len(sent), level
        telemetry.shutdown(timeout=5)


class SlowSink(InMemorySink):
    """Delivers in memory; a request takes a moment, as over a network."""

    def export(self, batch: Sequence[bytes], timeout: float) -> ExportResult:
        time.sleep(0.01)
        return super().export(batch, timeout)


def test_lowering_the_level_sends_nothing_while_it_purges(state_dir: Path) -> None:
    """The purge reads the whole queue (a second or more after a burst) while the app may be
    flushing from another thread: a batch that left meanwhile could hold what the user has just
    withdrawn consent for. Only the batch already on its way when the level changed may go."""
    sink = SlowSink()
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir), sink=sink, events=[FileOpened])
    telemetry.start()
    for n in range(60_000):
        telemetry.emit(FileOpened(path=f"/tmp/{n}", size_bytes=n))
    stop = threading.Event()

    def flush_all_the_time() -> None:
        while not stop.is_set():
            telemetry.flush(timeout=0.5)

    flusher = threading.Thread(target=flush_all_the_time)
    flusher.start()
    try:
        assert wait_until(lambda: len(sink.events("file_opened")) > 0)  # delivery is under way
        sent_before = len(sink.events("file_opened"))
        telemetry.set_level("error")
        sent_meanwhile = len(sink.events("file_opened")) - sent_before
    finally:
        stop.set()
        flusher.join()
    assert sent_meanwhile <= MAX_BATCH_EVENTS
    telemetry.shutdown(timeout=5)
    assert len(sink.events("file_opened")) == sent_before + sent_meanwhile  # the rest was purged
    assert telemetry.status().drops["level_lowered"] > 0
