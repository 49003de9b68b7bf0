"""Every catalog event becomes the documented PostHog message, as stored in a real queue folder."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from analytics import __version__, events
from analytics.app_events import AppEvent
from analytics.mapping import uuid7
from analytics.privacy.caps import encode
from analytics.queue import journal, shorthand
from analytics.queue.disk import DB_NAME
from analytics.state import StateFolder
from tests.conftest import MakeTelemetry, queued_messages

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
FIXED_NOW = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=timezone.utc).timestamp()


def emit_one(make_telemetry: MakeTelemetry, state_dir: Path, event: Any, **config: Any) -> dict[str, Any]:
    telemetry = make_telemetry(clock=lambda: FIXED_NOW, strict=True, app_version="2.4.0", **config)
    telemetry.emit(event)
    [message] = queued_messages(state_dir)
    assert_common(message, telemetry.session_id)
    assert message["distinct_id"] == telemetry.distinct_id
    return message


def assert_common(message: dict[str, Any], session_id: str) -> None:
    assert UUID_RE.match(message["uuid"]), message["uuid"]
    assert message["timestamp"] == "2026-03-14T15:09:26.535Z"
    props = message["properties"]
    assert props["$session_id"] == session_id
    assert UUID_RE.match(props["$session_id"])
    assert props["app_version"] == "2.4.0"
    assert props["schema_version"] == events.SCHEMA_VERSION
    assert props["$lib"] == "analytics-telemetry"
    assert props["$lib_version"] == __version__
    assert props["$geoip_disable"] is True
    assert props["$process_person_profile"] is False  # an anonymous install: no person profile
    assert "environment" not in props  # the default is implied


def test_session_start(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    event = events.SessionStart(
        app_version="2.4.0",
        os="Linux",
        os_version="6.1",
        arch="x86_64",
        python_version="3.11.7",
        machine_id="ab12",
    )
    message = emit_one(make_telemetry, state_dir, event)
    assert message["event"] == "session_started"
    props = message["properties"]
    assert (props["os"], props["os_version"], props["arch"]) == ("Linux", "6.1", "x86_64")
    assert (props["python_version"], props["machine_id"]) == ("3.11.7", "ab12")


def test_session_end(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    event = events.SessionEnd(
        duration_ms=61_000,
        proposals_created=3,
        proposals_approved=2,
        proposals_rejected=1,
        chat_turns=5,
        tool_calls=9,
        errors=1,
        end_reason="crash",
    )
    message = emit_one(make_telemetry, state_dir, event)
    assert message["event"] == "session_ended"
    props = message["properties"]
    expected = {
        "duration_ms": 61_000,
        "proposals_created": 3,
        "proposals_approved": 2,
        "proposals_rejected": 1,
        "chat_turns": 5,
        "tool_calls": 9,
        "errors": 1,
        "end_reason": "crash",
    }
    assert {key: props[key] for key in expected} == expected


def test_workspace_selected_sends_only_a_keyed_hash(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    message = emit_one(
        make_telemetry,
        state_dir,
        events.WorkspaceSelected(workspace_path="/srv/acme/payroll", is_git_repo=True),
    )
    assert message["event"] == "workspace_selected"
    props = message["properties"]
    assert props["is_git_repo"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", props["workspace_hash"])
    assert "workspace_path" not in props
    assert "payroll" not in str(message)


def test_chat_turn_uses_posthog_llm_analytics_schema(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    event = events.ChatTurn(
        prompt_length=120,
        response_length=900,
        model="gpt-4o",
        latency_ms=812,
        token_count=1400,
        input_tokens=1000,
        output_tokens=400,
        provider="openai",
        turn_id="turn-1",
    )
    message = emit_one(make_telemetry, state_dir, event)
    assert message["event"] == "$ai_generation"
    props = message["properties"]
    assert props["$ai_model"] == "gpt-4o"
    assert props["$ai_provider"] == "openai"
    assert props["$ai_latency"] == pytest.approx(0.812)
    assert (props["$ai_input_tokens"], props["$ai_output_tokens"]) == (1000, 400)
    assert props["$ai_trace_id"] == props["$ai_parent_id"] == "turn-1"  # a child of its turn's trace
    assert "$ai_session_id" not in props  # the turn's $ai_trace carries it, once per trace
    assert "$ai_is_error" not in props  # only sent when the turn failed
    assert (props["prompt_length"], props["response_length"]) == (120, 900)
    assert props["$ai_total_tokens"] == 1400  # the seed's token_count, under PostHog's name
    assert "token_count" not in props
    assert props["$ai_tokens_source"] == "sdk"
    assert (props["$ai_lib"], props["$ai_lib_version"]) == ("analytics-telemetry", __version__)
    assert "$ai_input" not in props


def test_chat_turn_with_what_the_app_knows_of_the_call(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    event = events.ChatTurn(
        prompt_length=1,
        response_length=0,
        model="gpt-4o",
        latency_ms=2500,
        turn_id="t2",
        is_error=True,
        error="RateLimitError: rate limit reached for token=abc123secret",
        http_status=429,
        base_url="https://user:hunter2@llm.example.com/v1",
        stop_reason="length",
        tools_called=["read_file", "grep", "read_file"],
        model_parameters={"temperature": 0.2},
    )
    props = emit_one(make_telemetry, state_dir, event)["properties"]
    assert props["$ai_is_error"] is True
    assert props["$ai_error"] == "RateLimitError: rate limit reached for token=<secret>"
    assert props["$ai_http_status"] == 429
    assert "hunter2" not in props["$ai_base_url"]
    assert props["$ai_stop_reason"] == "length"
    assert props["$ai_tools_called"] == "read_file,grep,read_file"
    assert props["$ai_tool_call_count"] == 3
    assert props["$ai_model_parameters"] == {"temperature": 0.2}
    assert "$ai_input_tokens" not in props
    assert "$ai_tokens_source" not in props  # no counts given, no claim about where they came from


def test_chat_trace_is_the_turn_as_a_whole(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    event = events.ChatTrace(
        trace_id="t3",
        name="answer_question",
        latency_ms=1500,
        is_error=True,
        error="TimeoutError",
        input_state=[{"role": "user", "content": "hello"}],
        output_state=[{"role": "assistant", "content": "hi"}],
    )
    message = emit_one(make_telemetry, state_dir, event)
    assert message["event"] == "$ai_trace"
    props = message["properties"]
    assert props["$ai_trace_id"] == "t3"
    assert props["$ai_span_name"] == props["$ai_trace_name"] == "answer_question"
    # PostHog's traces list adds the trace's own $ai_latency to its children's: the turn's time is
    # sent under another name, and the children (model and tools) add up to it.
    assert props["turn_latency"] == pytest.approx(1.5)
    assert "$ai_latency" not in props
    assert props["$ai_session_id"] == props["$session_id"]  # LLM analytics' Sessions tab
    assert (props["$ai_is_error"], props["$ai_error"]) == (True, "TimeoutError")
    assert "$ai_input_state" not in props  # content: full content only
    assert "hello" not in json.dumps(message)


def test_trace_and_span_state_is_sent_with_full_content(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    telemetry = make_telemetry(full_content=True, strict=True)
    telemetry.emit(
        events.ChatTrace(trace_id="t", latency_ms=1, input_state={"q": "hello"}, output_state="hi")
    )
    telemetry.emit(
        events.ToolCall(tool_name="grep", duration_ms=1, success=True, input_state=["TODO"], output_state=3)
    )
    trace, span = queued_messages(state_dir)
    assert trace["properties"]["$ai_span_name"] == "chat_turn"  # the default name
    assert (trace["properties"]["$ai_input_state"], trace["properties"]["$ai_output_state"]) == (
        {"q": "hello"},
        "hi",
    )
    assert (span["properties"]["$ai_input_state"], span["properties"]["$ai_output_state"]) == (["TODO"], 3)


def test_tool_call_is_an_ai_span_of_its_turn(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    event = events.ToolCall(
        tool_name="run_tests", duration_ms=1500, success=False, error_type="TimeoutError", turn_id="t9"
    )
    message = emit_one(make_telemetry, state_dir, event)
    assert message["event"] == "$ai_span"
    props = message["properties"]
    assert props["$ai_span_name"] == "run_tests"
    assert props["$ai_trace_id"] == props["$ai_parent_id"] == "t9"
    assert uuid.UUID(props["$ai_span_id"])
    assert props["$ai_latency"] == pytest.approx(1.5)
    assert props["$ai_is_error"] is True
    assert props["$ai_error"] == "TimeoutError"  # no message given: the type
    assert props["$ai_span_type"] == "tool"
    assert "$ai_session_id" not in props  # its turn's trace carries it


def test_a_generation_or_tool_call_outside_a_turn_is_its_own_trace_in_the_session(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    telemetry = make_telemetry(strict=True)
    telemetry.emit(events.ChatTurn(prompt_length=1, response_length=1, model="m", latency_ms=1))
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    generation, span = queued_messages(state_dir)
    for message in (generation, span):
        props = message["properties"]
        assert props["$ai_session_id"] == props["$session_id"] == telemetry.session_id
        assert uuid.UUID(props["$ai_trace_id"])
    assert "$ai_parent_id" not in generation["properties"]  # no trace event to hang from


def test_a_tool_calls_error_message_is_sent_scrubbed(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    event = events.ToolCall(
        tool_name="read_file",
        duration_ms=3,
        success=False,
        error_type="FileNotFoundError",
        error=f"FileNotFoundError: {Path.home()}/secrets/notes.txt (owner jane.doe@example.com)",
    )
    props = emit_one(make_telemetry, state_dir, event)["properties"]
    assert props["$ai_error"] == "FileNotFoundError: <home>/secrets/notes.txt (owner <email>)"


def test_proposal_created(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    event = events.ProposalCreated(
        proposal_id="p-1", file_count=3, total_lines_changed=42, operation="edit_file"
    )
    message = emit_one(make_telemetry, state_dir, event)
    assert message["event"] == "proposal_created"
    props = message["properties"]
    assert (props["proposal_id"], props["file_count"], props["total_lines_changed"]) == ("p-1", 3, 42)
    assert props["operation"] == "edit_file"


def test_proposal_decision(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    event = events.ProposalDecision(
        proposal_id="p-1", decision="rejected", files_approved=0, review_duration_ms=4200
    )
    message = emit_one(make_telemetry, state_dir, event)
    assert message["event"] == "proposal_decided"
    props = message["properties"]
    assert (props["proposal_id"], props["decision"]) == ("p-1", "rejected")
    assert (props["files_approved"], props["review_duration_ms"]) == (0, 4200)


def test_error_becomes_a_posthog_exception(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    trace = (
        "Traceback (most recent call last):\n"
        '  File "/opt/app/server.py", line 12, in handle\n'
        "    apply()\n"
        '  File "/opt/app/proposals.py", line 40, in apply\n'
        "    requests.post(url)\n"
        '  File "/opt/venv/lib/python3.11/site-packages/requests/models.py", line 9, in prepare\n'
        "    raise ValueError('bad diff')\n"
        "ValueError: bad diff"
    )
    event = events.Error(
        error_type="ValueError",
        message="bad diff",
        stack_trace=trace,
        context={"route": "/apply"},
        handled=False,
    )
    message = emit_one(make_telemetry, state_dir, event)
    assert message["event"] == "$exception"
    props = message["properties"]
    [exception] = props["$exception_list"]
    assert (exception["type"], exception["value"]) == ("ValueError", "bad diff")
    assert exception["mechanism"]["handled"] is False
    frames = exception["stacktrace"]["frames"]
    assert [(f["filename"], f["function"], f["lineno"]) for f in frames] == [
        ("server.py", "handle", 12),
        ("proposals.py", "apply", 40),
        ("requests/models.py", "prepare", 9),
    ]
    # A library's frame is not the app's; for the others PostHog decides, as for posthog-python's.
    assert [f.get("in_app") for f in frames] == [None, None, False]
    assert props["error_type"] == "ValueError"
    assert props["$exception_level"] == "error"
    assert props["context"] == {"route": "/apply"}


def test_an_exception_list_keeps_its_shape_and_every_string_is_scrubbed(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    home = str(Path.home())
    frames = [
        {
            "platform": "python",
            "filename": "app/sync.py",
            "abs_path": f"{home}/app/sync.py",
            "function": "upload",
            "module": "app.sync",
            "lineno": line,
            "in_app": True,
            "pre_context": ["token = 'ghp_" + "a" * 36 + "'"],
            "context_line": "send(to='jane.doe@example.com')",
            "post_context": [],
        }
        for line in range(1, 401)  # more frames than any generic list cap
    ]
    entries = [
        {
            "mechanism": {"type": "generic", "handled": True, "exception_id": 0, "synthetic": False},
            "module": None,
            "type": "RuntimeError",
            "value": "failed for jane.doe@example.com",
            "stacktrace": {"type": "raw", "frames": frames},
        }
    ]
    event = events.Error(
        error_type="RuntimeError", exception_list=entries, level="fatal", source="python.sys_excepthook"
    )
    props = emit_one(make_telemetry, state_dir, event)["properties"]
    [entry] = props["$exception_list"]
    sent = entry["stacktrace"]["frames"]
    assert len(sent) == 400
    assert [f["lineno"] for f in sent] == list(range(1, 401))
    assert sent[-1]["abs_path"] == "<home>/app/sync.py"
    assert sent[-1]["context_line"] == "send(to='<email>')"
    assert "ghp_" not in json.dumps(props)
    assert entry["value"] == "failed for <email>"
    assert entry["module"] is None
    assert (props["$exception_level"], props["$exception_source"]) == ("fatal", "python.sys_excepthook")


def test_a_named_user_keeps_person_profiles(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(user_id="user-42")
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    [message] = queued_messages(state_dir)
    assert message["distinct_id"] == "user-42"
    assert "$process_person_profile" not in message["properties"]


def test_chat_turn_full_carries_text_only_with_full_content(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    event = events.ChatTurnFull(
        prompt_length=5,
        response_length=6,
        model="gpt-4o",
        latency_ms=10,
        turn_id="t1",
        prompt="hello",
        response="world!",
    )
    message = emit_one(make_telemetry, state_dir, event, full_content=True)
    assert message["event"] == "$ai_generation"
    props = message["properties"]
    assert props["$ai_input"] == [{"role": "user", "content": "hello"}]
    assert props["$ai_output_choices"] == [{"role": "assistant", "content": "world!"}]
    assert props["$ai_trace_id"] == "t1"


def test_chat_turn_full_without_full_content_drops_the_text_before_the_disk(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    event = events.ChatTurnFull(
        prompt_length=5, response_length=6, model="gpt-4o", latency_ms=10, prompt="hello", response="world!"
    )
    message = emit_one(make_telemetry, state_dir, event)
    assert message["event"] == "$ai_generation"
    assert "$ai_input" not in message["properties"]
    raw = b"".join(p.read_bytes() for p in (state_dir / "queue").iterdir() if p.is_file())
    assert b"world!" not in raw


def test_proposal_diff(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    diff = "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n"
    message = emit_one(
        make_telemetry, state_dir, events.ProposalDiff(proposal_id="p-7", diff=diff), full_content=True
    )
    assert message["event"] == "proposal_diff"
    assert message["properties"]["proposal_id"] == "p-7"
    assert message["properties"]["diff"] == diff


def test_file_snapshot_hashes_the_path(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    event = events.FileSnapshot(
        file_path="/srv/acme/payroll.py", before="a = 1\n", after="a = 2\n", proposal_id="p-7"
    )
    message = emit_one(make_telemetry, state_dir, event, full_content=True)
    assert message["event"] == "file_snapshot"
    props = message["properties"]
    assert (props["before"], props["after"], props["proposal_id"]) == ("a = 1\n", "a = 2\n", "p-7")
    assert re.fullmatch(r"[0-9a-f]{64}", props["file_hash"])
    assert "payroll" not in str(message)


@pytest.mark.parametrize(
    "event",
    [
        events.ProposalDiff(proposal_id="p", diff="x"),
        events.FileSnapshot(file_path="/a", before="x", after="y"),
    ],
)
def test_full_content_events_are_dropped_and_counted_when_off(
    make_telemetry: MakeTelemetry, state_dir: Path, event: events.DomainEvent
) -> None:
    telemetry = make_telemetry()
    telemetry.emit(event)
    assert queued_messages(state_dir) == []
    assert telemetry.status().drops["full_content_disabled"] == 1


def test_seed_string_form_maps_like_the_model(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(strict=True)
    telemetry.emit("ToolCall", {"tool_name": "read_file", "duration_ms": 12, "success": True})
    [message] = queued_messages(state_dir)
    assert message["event"] == "$ai_span"
    assert message["properties"]["$ai_span_name"] == "read_file"


def test_same_path_spelled_differently_hashes_the_same(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    telemetry = make_telemetry(strict=True)
    telemetry.emit(events.WorkspaceSelected(workspace_path="/srv/acme/", is_git_repo=False))
    telemetry.emit(events.WorkspaceSelected(workspace_path="/srv/./acme", is_git_repo=False))
    first, second = queued_messages(state_dir)
    assert first["properties"]["workspace_hash"] == second["properties"]["workspace_hash"]


def test_uuid7_is_time_ordered_and_versioned() -> None:
    earlier, later = uuid7(1_700_000_000_000), uuid7(1_700_000_000_001)
    assert UUID_RE.match(earlier)
    assert UUID_RE.match(later)
    assert earlier < later
    assert int(earlier.replace("-", "")[:12], 16) == 1_700_000_000_000


def test_uuid4_is_random_and_versioned() -> None:
    from analytics.ids import uuid4

    made = [uuid.UUID(uuid4()) for _ in range(2000)]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in made)
    assert len(set(made)) == len(made)
    assert all(str(u) == str(u).lower() for u in made)


def test_a_non_default_environment_is_sent(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(environment="development")
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    [message] = queued_messages(state_dir)
    assert message["properties"]["environment"] == "development"


class Preferences(AppEvent):
    """An app event whose own fields are named like properties every message carries."""

    posthog_event = "preferences_saved"
    environment: str
    app_version: str
    theme: str


def stored_records(state_dir: Path) -> list[bytes]:
    """The records as the queue folder holds them (the stored form), in the queue and journaled."""
    folder = StateFolder(state_dir)
    stored: list[bytes] = []
    if (folder.queue_dir / DB_NAME).exists():
        with sqlite3.connect(folder.queue_dir / DB_NAME) as db:
            stored += [bytes(value) for (value,) in db.execute("SELECT value FROM Cache WHERE raw = 1")]
    for path in sorted(folder.journal_dir.glob("*.seg")):
        stored += journal.parse(path.read_bytes()).records
    return stored


@pytest.mark.parametrize(
    "config",
    [{}, {"environment": "staging", "geoip": False}, {"user_id": "user-42"}],
    ids=["anonymous", "staging-geoip-on", "named-user"],
)
def test_each_message_is_built_as_encoding_the_whole_message_would_be(
    make_telemetry: MakeTelemetry, state_dir: Path, config: dict[str, Any]
) -> None:
    """emit() builds a message from a session's constant parts and its event's properties. The
    result must be the one compact encoding of the message, with no key twice, and stored in the
    short form scanning the message for its runs would give."""
    telemetry = make_telemetry(strict=True, full_content=True, **config)
    telemetry.register_events(Preferences)
    telemetry.emit(events.ChatTurn(prompt_length=1, response_length=2, model="m", latency_ms=3))
    telemetry.emit(events.ToolCall(tool_name="read_file", duration_ms=4, success=False, error="boom"))
    telemetry.emit(events.ChatTrace(trace_id="t-1", name="turn", latency_ms=9))
    telemetry.emit(
        events.ProposalCreated(proposal_id="p", file_count=1, total_lines_changed=2, operation="edit_file")
    )
    telemetry.emit(events.Error(error_type="ValueError", message="bad value", handled=True))
    telemetry.emit(Preferences(environment="mine", app_version="9.9", theme="dark"))
    telemetry.emit(
        events.ProposalDiff(proposal_id="p", diff="+" * 300_000)
    )  # over the content cap: truncated

    records = [shorthand.unpack(record) for record in stored_records(state_dir)]
    assert len(records) == 7
    for record in records:
        assert record == encode(json.loads(record))  # compact, no key twice, nothing else
    for stored in stored_records(state_dir):
        assert stored.startswith(shorthand.STORED_PREFIX)
        assert stored == shorthand.STORED_PREFIX + shorthand.shorten(shorthand.unpack(stored))
    by_event = {message["event"]: message for message in map(json.loads, records)}
    assert by_event["preferences_saved"]["properties"]["theme"] == "dark"
    assert by_event["proposal_diff"]["properties"]["truncated_properties"] == ["diff"]
    assert by_event["$ai_generation"]["properties"]["$ai_lib"] == "analytics-telemetry"


def test_a_message_over_the_size_budget_is_cut_to_fit_it(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    telemetry = make_telemetry(strict=True, full_content=True, max_event_bytes=4096)
    telemetry.emit(events.ProposalDiff(proposal_id="p", diff="+" * 5000))  # under the content cap
    [message] = queued_messages(state_dir)
    [record] = [shorthand.unpack(stored) for stored in stored_records(state_dir)]
    assert len(record) <= 4096
    assert message["properties"]["truncated_properties"] == ["diff"]
    assert 3000 < len(message["properties"]["diff"]) < 4096


@pytest.mark.parametrize(
    "at", [0.0, 1.9995, 1773500966.535897, 1773500966.9999, 1773500967.0001, 4102444799.999, 1e9 + 0.5]
)
def test_the_timestamp_is_the_uuids_millisecond_in_rfc_3339(at: float) -> None:
    """The second's text is kept from one call to the next: a new second must never reuse it."""
    from analytics.mapping import iso_timestamp

    for moment in (at, at + 1.0, at):
        expected = datetime.fromtimestamp(int(moment * 1000) / 1000, timezone.utc).isoformat(
            timespec="milliseconds"
        )
        assert iso_timestamp(moment) == expected.replace("+00:00", "Z")


class Undecodable(AppEvent):
    """An app event named from text that was not UTF-8 (os.fsdecode's lone surrogate)."""

    posthog_event = "opened_caf\udce9"
    seconds: float


def test_a_message_encoded_whole_by_the_standard_library_is_built_as_it_would_be(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    """A lone surrogate outside the properties (here the event's name) sends the whole message to
    the standard library's encoder, whose floats read differently from orjson's (1e-05, not
    0.00001): the message built from the session's parts must still be that whole encoding."""
    telemetry = make_telemetry(strict=True)
    telemetry.register_events(Undecodable)
    telemetry.emit(Undecodable(seconds=0.00001))
    [record] = [shorthand.unpack(stored) for stored in stored_records(state_dir)]
    message = json.loads(record)
    assert message["event"] == "opened_caf\ufffd"
    message["event"] = Undecodable.posthog_event  # the message as the mapping holds it, encoded whole
    assert record == encode(message)
    assert b'"seconds":1e-05' in record
