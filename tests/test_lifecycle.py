"""start(), shutdown() and set_enabled(): the session's bookends and the run-time opt-out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

from analytics import Analytics, TelemetryConfig, events
from tests.conftest import MakeTelemetry, archived_messages, queued_messages, wait_until


def test_start_and_shutdown_bracket_the_session(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(app_version="3.1.0", machine_id="raw-machine-id-123", strict=True)
    telemetry.start()
    telemetry.start()  # a second start is a no-op
    telemetry.emit(events.ChatTurn(prompt_length=1, response_length=1, model="m", latency_ms=1))
    telemetry.emit(
        events.ProposalCreated(proposal_id="p", file_count=1, total_lines_changed=1, operation="edit")
    )
    telemetry.emit(events.ProposalDecision(proposal_id="p", decision="approved"))
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    telemetry.shutdown()
    assert queued_messages(state_dir) == []  # shutdown delivered everything to the local archive
    messages = archived_messages(state_dir)
    assert [m["event"] for m in messages] == [
        "session_started",
        "$ai_generation",
        "proposal_created",
        "proposal_decided",
        "$ai_span",
        "session_ended",
    ]
    start, end = messages[0]["properties"], messages[-1]["properties"]
    assert start["app_version"] == "3.1.0"
    assert start["machine_id"] != "raw-machine-id-123"
    assert len(start["machine_id"]) == 64
    assert "raw-machine-id-123" not in str(messages)
    assert end["end_reason"] == "shutdown"
    assert (end["chat_turns"], end["tool_calls"], end["proposals_created"], end["proposals_approved"]) == (
        1,
        1,
        1,
        1,
    )
    assert {m["properties"]["$session_id"] for m in messages} == {telemetry.session_id}


def test_start_leaves_its_work_to_a_thread_and_the_session_keeps_starts_time(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    # start() returns at once (the mapping, the queue, SessionStart, the uploader and Sentry are
    # set up on "analytics-start"); SessionStart is stamped with the time of the call and is
    # queued before anything the app emits once start() has returned.
    telemetry = make_telemetry()
    before = time.time()
    telemetry.start()
    after = time.time()
    telemetry.emit(events.ToolCall(tool_name="first", duration_ms=1, success=True))
    telemetry.shutdown()
    messages = archived_messages(state_dir)
    assert [m["event"] for m in messages] == ["session_started", "$ai_span", "session_ended"]
    started = datetime.fromisoformat(messages[0]["timestamp"].replace("Z", "+00:00")).timestamp()
    assert before - 0.001 <= started <= after + 0.001


def test_opting_out_right_after_start_leaves_nothing_behind(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    # The opt-out waits for start()'s thread: nothing it would have written lands after the purge.
    telemetry = make_telemetry()
    before = set(threading.enumerate())

    def ours_running() -> list[threading.Thread]:
        return [t for t in set(threading.enumerate()) - before if t.name.startswith("analytics-")]

    telemetry.start()
    telemetry.set_enabled(False)
    assert wait_until(lambda: not ours_running()), ours_running()
    assert sorted(p.name for p in state_dir.iterdir()) == ["opted-out"]


def test_a_shutdown_that_gives_up_on_start_s_thread_leaves_no_uploader_running(tmp_path: Path) -> None:
    # shutdown(timeout=0) right after start(): start()'s thread may be between making the uploader
    # and starting it. The shutdown must not trip over an uploader not started yet, nor leave one
    # running that the thread starts after it (it would read and deliver from a closed queue).
    before = set(threading.enumerate())

    def uploaders_running() -> list[threading.Thread]:
        return [t for t in set(threading.enumerate()) - before if t.name == "analytics-uploader"]

    for attempt in range(25):  # the race is hit at some delays and not others: walk across them
        state = tmp_path / f"state-{attempt}"
        telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state))
        telemetry.start()
        time.sleep(attempt * 0.0002)
        telemetry.shutdown(timeout=0)
        assert wait_until(lambda: not uploaders_running(), timeout=5), (attempt, uploaders_running())


def test_set_enabled_false_purges_and_stays_off(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry()
    telemetry.start()
    for _ in range(10):
        telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    telemetry.set_enabled(False)
    assert not telemetry.enabled
    assert sorted(p.name for p in state_dir.iterdir()) == ["opted-out"]  # queue, identity, counters gone
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    assert sorted(p.name for p in state_dir.iterdir()) == ["opted-out"]

    # The next start of the app stays off, and says why.
    again = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir))
    assert not again.enabled
    assert again.disabled_reason == "opted out (set_enabled(False))"
    again.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    assert sorted(p.name for p in state_dir.iterdir()) == ["opted-out"]


def test_opting_back_in_starts_a_fresh_identity(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry()
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    old_id = (state_dir / "install_id").read_text()
    telemetry.set_enabled(False)
    telemetry.set_enabled(True)
    assert telemetry.enabled
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    [message] = queued_messages(state_dir)
    assert message["distinct_id"] != old_id
    assert not (state_dir / "opted-out").exists()


def test_set_enabled_true_does_not_override_the_environment(state_dir: Path) -> None:
    telemetry = Analytics(TelemetryConfig.from_env({"DO_NOT_TRACK": "1"}, state_dir=state_dir))
    telemetry.set_enabled(True)
    assert not telemetry.enabled
    assert telemetry.disabled_reason == "DO_NOT_TRACK=1"
    assert not state_dir.exists()


def test_set_enabled_true_while_on_keeps_the_running_session(state_dir: Path) -> None:
    # A settings page that saves "on" again (or an app that calls set_enabled(True) at launch,
    # after start()) must not swap the session: the running one would lose its counts and its
    # marker, and the next run would report it as crashed although it was shut down.
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir))
    telemetry.start()
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    telemetry.set_enabled(True)
    telemetry.shutdown()
    assert not list((state_dir / "sessions").iterdir())  # the marker went with the shutdown

    next_run = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir))
    next_run.start()
    next_run.shutdown()
    ended = [m for m in archived_messages(state_dir) if m["event"] == "session_ended"]
    first = [m["properties"] for m in ended if m["properties"]["$session_id"] == telemetry.session_id]
    assert [(p["end_reason"], p["tool_calls"]) for p in first] == [("shutdown", 1)]


def test_a_shutdown_before_start_s_thread_began_the_session_does_not_end_it(tmp_path: Path) -> None:
    # shutdown(timeout=0) right after start() can stop start()'s thread before it queues
    # SessionStart; a SessionEnd for that session would then arrive without its start.
    for attempt in range(8):
        state = tmp_path / f"state-{attempt}"
        telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state))
        telemetry.start()
        telemetry.shutdown(timeout=0)
        # The uploader, stopped at once, may have archived a message it had no time to remove.
        found = {(m["uuid"], m["event"]) for m in archived_messages(state) + queued_messages(state)}
        names = sorted(name for _uuid, name in found)
        assert names.count("session_ended") == names.count("session_started") <= 1, (attempt, names)


def test_an_emit_that_an_opt_out_overtakes_writes_nothing_after_the_purge(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    # An emit checks that telemetry is on, then validates its payload, then appends. An opt-out
    # from another thread that lands in between has closed the queue and purged the folder: the
    # emit must not build a fresh queue (identity, queue file, journal) and store its event there,
    # to be sent the day the user opts back in.
    telemetry = make_telemetry()
    telemetry.emit(events.ToolCall(tool_name="before", duration_ms=1, success=True))

    fields = {"tool_name": "raced", "duration_ms": 1, "success": True}

    class OptOutWhileRead(Mapping[str, object]):
        def __iter__(self) -> Iterator[str]:  # the payload is being read: another thread opts out
            opting_out = threading.Thread(target=telemetry.set_enabled, args=(False,))
            opting_out.start()
            opting_out.join()
            return iter(fields)

        def __getitem__(self, key: str) -> object:
            return fields[key]

        def __len__(self) -> int:
            return len(fields)

    payload = OptOutWhileRead()
    telemetry.emit("ToolCall", payload)
    assert not telemetry.enabled
    assert sorted(p.name for p in state_dir.iterdir()) == ["opted-out"]
