"""Sessions with crash detection, chat turns with their tool spans, and proposal review times."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from analytics import Analytics, TelemetryConfig, events
from analytics.testing import InMemorySink
from tests.conftest import PROJECT_ROOT, MakeTelemetry, archived_messages, run_python

DAY = 86_400.0


def by_event(messages: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["event"] == name]


# -- sessions ----------------------------------------------------------------------------------------

CRASHING_APP = """
import sys, time
from analytics import Analytics, TelemetryConfig, events

telemetry = Analytics(TelemetryConfig.from_env(state_dir=sys.argv[1]))
telemetry.start()
with telemetry.chat_turn(model="gpt-4o") as turn:
    with turn.tool_call("read_file"):
        pass
    with turn.tool_call("grep"):
        pass
    turn.set(prompt_length=10, response_length=20)
with telemetry.chat_turn(model="gpt-4o"):
    with telemetry.tool_call("run_tests"):
        pass
for proposal in ("p1", "p2"):
    created = {"proposal_id": proposal, "file_count": 1, "total_lines_changed": 3, "operation": "edit"}
    telemetry.emit("ProposalCreated", created)
telemetry.emit(events.ProposalDecision(proposal_id="p1", decision="approved"))
telemetry.emit(events.ProposalDecision(proposal_id="p2", decision="rejected"))
telemetry.capture_exception(ValueError("boom"))
print(telemetry.session_id, flush=True)
time.sleep(60)  # killed long before this ends
"""


def test_a_killed_session_is_ended_as_a_crash_at_the_next_start(state_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    command = [sys.executable, "-c", CRASHING_APP, str(state_dir)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as app:
        assert app.stdout is not None
        crashed_session = app.stdout.readline().strip()
        app.send_signal(signal.SIGKILL)
        app.wait(timeout=30)
    assert crashed_session

    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir))
    telemetry.start()
    telemetry.shutdown(timeout=5)

    messages = archived_messages(state_dir)
    ends = by_event(messages, "session_ended")
    crash = next(m for m in ends if m["properties"]["end_reason"] == "crash")
    props = crash["properties"]
    assert props["$session_id"] == crashed_session
    counters = {
        k: props[k]
        for k in (
            "chat_turns",
            "tool_calls",
            "proposals_created",
            "proposals_approved",
            "proposals_rejected",
            "errors",
        )
    }
    assert counters == {
        "chat_turns": 2,
        "tool_calls": 3,
        "proposals_created": 2,
        "proposals_approved": 1,
        "proposals_rejected": 1,
        "errors": 1,
    }
    assert props["duration_ms"] >= 0
    # The crash report comes before the new session starts, and the new session ends normally.
    order = [(m["event"], m["properties"]["$session_id"]) for m in messages]
    assert order.index(("session_ended", crashed_session)) < order.index(
        ("session_started", telemetry.session_id)
    )
    assert [
        m["properties"]["end_reason"] for m in ends if m["properties"]["$session_id"] == telemetry.session_id
    ] == ["shutdown"]
    assert list((state_dir / "sessions").iterdir()) == []  # both markers are gone


def test_a_session_running_in_another_process_is_not_taken_for_a_crash(state_dir: Path) -> None:
    first = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir))
    first.start()
    result = run_python(
        f"""
        from analytics import Analytics, TelemetryConfig
        t = Analytics(TelemetryConfig.from_env(state_dir={str(state_dir)!r}))
        t.start()
        t.shutdown(timeout=5)
        """
    )
    assert result.returncode == 0, result.stderr
    first.shutdown(timeout=5)
    reasons = [m["properties"]["end_reason"] for m in by_event(archived_messages(state_dir), "session_ended")]
    assert reasons == ["shutdown", "shutdown"]


def test_a_clean_shutdown_leaves_no_crash_behind(state_dir: Path) -> None:
    for _ in range(2):
        telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir))
        telemetry.start()
        telemetry.shutdown(timeout=5)
    ends = by_event(archived_messages(state_dir), "session_ended")
    assert [m["properties"]["end_reason"] for m in ends] == ["shutdown", "shutdown"]


# -- chat turns and tool spans ------------------------------------------------------------------------


def test_tool_spans_inside_a_turn_carry_its_trace_id(state_dir: Path) -> None:
    sink = InMemorySink()
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, strict=True), sink=sink)
    with telemetry.chat_turn(model="gpt-4o", provider="openai") as turn:
        with turn.tool_call("read_file"):
            pass
        with telemetry.tool_call("grep"):  # the facade's form finds the current turn itself
            pass
        turn.set(prompt_length=120, response_length=900, input_tokens=1000, output_tokens=400)
    with telemetry.tool_call("outside"):
        pass
    assert telemetry.flush()
    [generation] = sink.events("$ai_generation")
    spans = sink.events("$ai_span")
    trace_id = generation["properties"]["$ai_trace_id"]
    assert trace_id == turn.turn_id
    inside = [s for s in spans if s["properties"]["$ai_span_name"] in {"read_file", "grep"}]
    assert len(inside) == 2
    for span in inside:
        assert span["properties"]["$ai_trace_id"] == trace_id
        assert span["properties"]["$ai_parent_id"] == trace_id
    assert len({s["properties"]["$ai_span_id"] for s in spans}) == 3
    [outside] = [s for s in spans if s["properties"]["$ai_span_name"] == "outside"]
    assert outside["properties"]["$ai_trace_id"] != trace_id
    props = generation["properties"]
    assert (props["$ai_model"], props["$ai_provider"]) == ("gpt-4o", "openai")
    assert (props["$ai_input_tokens"], props["$ai_output_tokens"]) == (1000, 400)
    assert props["$ai_latency"] >= 0
    assert "$ai_is_error" not in props  # PostHog reads a missing flag as "no error"


def test_an_exception_in_a_tool_call_is_recorded_and_reraised(state_dir: Path) -> None:
    sink = InMemorySink()
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, strict=True), sink=sink)
    with pytest.raises(FileNotFoundError), telemetry.chat_turn(model="m"), telemetry.tool_call("read_file"):
        raise FileNotFoundError("notes.txt")
    assert telemetry.flush()
    [span] = sink.events("$ai_span")
    assert span["properties"]["$ai_is_error"] is True
    assert (
        span["properties"]["$ai_error"] == "FileNotFoundError: notes.txt"
    )  # PostHog's Errors tab groups by it
    [generation] = sink.events("$ai_generation")
    assert generation["properties"]["$ai_is_error"] is True
    assert generation["properties"]["$ai_error"] == "FileNotFoundError: notes.txt"
    [trace] = sink.events("$ai_trace")
    assert (trace["properties"]["$ai_is_error"], trace["properties"]["$ai_error"]) == (
        True,
        "FileNotFoundError: notes.txt",
    )


def test_one_trace_per_turn_with_its_name_session_and_the_whole_turns_latency(state_dir: Path) -> None:
    sink = InMemorySink()
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, strict=True), sink=sink)
    with telemetry.chat_turn(model="m", name="fix_failing_test") as turn:
        with turn.tool_call("run_tests"):
            time.sleep(0.05)
        with turn.tool_call("read_file"):
            pass
        with turn.generation():
            time.sleep(0.02)
    with telemetry.chat_turn(model="m"):
        pass
    assert telemetry.flush()
    traces = sink.events("$ai_trace")
    assert [t["properties"]["$ai_span_name"] for t in traces] == ["fix_failing_test", "chat_turn"]
    [trace, _] = traces
    props = trace["properties"]
    assert props["$ai_trace_id"] == turn.turn_id
    assert props["$ai_session_id"] == telemetry.session_id
    [generation, _] = sink.events("$ai_generation")
    gen = generation["properties"]
    assert (gen["$ai_tools_called"], gen["$ai_tool_call_count"]) == ("run_tests,read_file", 2)
    spans = [s["properties"]["$ai_latency"] for s in sink.events("$ai_span")]
    # The model's latency is the generation() block, the turn's includes the tools: children add up.
    assert gen["$ai_latency"] >= 0.02
    assert props["turn_latency"] >= gen["$ai_latency"] + sum(spans)
    assert "$ai_latency" not in props  # PostHog's traces list would add it to the children's
    assert all(s["properties"]["$ai_span_type"] == "tool" for s in sink.events("$ai_span"))


def test_without_generation_the_models_latency_is_the_turn_less_its_tools(state_dir: Path) -> None:
    sink = InMemorySink()
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, strict=True), sink=sink)
    with telemetry.chat_turn(model="m") as turn, turn.tool_call("grep"):
        time.sleep(0.05)
    assert telemetry.flush()
    [span] = sink.events("$ai_span")
    [generation] = sink.events("$ai_generation")
    [trace] = sink.events("$ai_trace")
    model = generation["properties"]["$ai_latency"]
    assert model == pytest.approx(
        trace["properties"]["turn_latency"] - span["properties"]["$ai_latency"], abs=1e-4
    )


def test_concurrent_tool_calls_are_taken_out_of_the_models_latency_once(state_dir: Path) -> None:
    sink = InMemorySink()
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, strict=True), sink=sink)

    async def tool(name: str) -> None:
        async with telemetry.tool_call(name):
            await asyncio.sleep(0.1)

    async def main() -> None:
        async with telemetry.chat_turn(model="m"):
            await asyncio.gather(tool("a"), tool("b"))

    asyncio.run(main())
    assert telemetry.flush()
    spans = [s["properties"]["$ai_latency"] for s in sink.events("$ai_span")]
    [generation] = sink.events("$ai_generation")
    [trace] = sink.events("$ai_trace")
    model, turn = generation["properties"]["$ai_latency"], trace["properties"]["turn_latency"]
    assert model <= turn - max(spans) + 1e-4  # at least the longest tool is taken out
    assert model > turn - sum(spans)  # but overlapping time only once
    assert generation["properties"]["$ai_tool_call_count"] == 2


def test_a_failed_model_call_the_app_recovers_from_still_marks_the_generation(state_dir: Path) -> None:
    class RateLimited(Exception):
        status_code = 429

    sink = InMemorySink()
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, strict=True), sink=sink)
    with telemetry.chat_turn(model="m") as turn:
        try:
            with turn.generation():
                raise RateLimited("slow down")
        except RateLimited:
            pass  # the app shows a retry button; the turn itself ends normally
    assert telemetry.flush()
    [generation] = sink.events("$ai_generation")
    props = generation["properties"]
    assert (props["$ai_is_error"], props["$ai_http_status"]) == (True, 429)
    assert props["$ai_error"] == "RateLimited: slow down"


def test_given_latency_and_fields_win_over_measurement(state_dir: Path) -> None:
    sink = InMemorySink()
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, strict=True), sink=sink)
    with telemetry.chat_turn(model="m") as turn:
        with turn.tool_call("a"):
            pass
        with turn.generation():
            pass
        turn.set(latency_ms=1234, tools_called=["search"], error="given", is_error=True)
    assert telemetry.flush()
    [generation] = sink.events("$ai_generation")
    props = generation["properties"]
    assert props["$ai_latency"] == pytest.approx(1.234)
    assert (props["$ai_tools_called"], props["$ai_error"]) == ("search", "given")


def test_async_with_works_and_each_task_has_its_own_turn(state_dir: Path) -> None:
    sink = InMemorySink()
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir, strict=True), sink=sink)

    async def conversation(name: str) -> str:
        async with telemetry.chat_turn(model=name) as turn:
            for _ in range(3):
                async with telemetry.tool_call(f"{name}-tool"):
                    await asyncio.sleep(0.001)
            return turn.turn_id

    async def main() -> list[str]:
        return await asyncio.gather(conversation("a"), conversation("b"))

    turn_a, turn_b = asyncio.run(main())
    assert telemetry.flush()
    for name, turn_id in (("a", turn_a), ("b", turn_b)):
        spans = [s for s in sink.events("$ai_span") if s["properties"]["$ai_span_name"] == f"{name}-tool"]
        assert len(spans) == 3
        assert {s["properties"]["$ai_trace_id"] for s in spans} == {turn_id}


def test_a_turn_with_its_text_is_sent_in_full_only_with_full_content(tmp_path: Path) -> None:
    for full_content in (False, True):
        sink = InMemorySink()
        config = TelemetryConfig.from_env(
            {}, state_dir=tmp_path / str(full_content), full_content=full_content
        )
        telemetry = Analytics(config, sink=sink)
        with telemetry.chat_turn(model="m") as turn:
            turn.set(prompt="what is 2+2?", response="4", prompt_length=12, response_length=1, latency_ms=50)
        assert telemetry.flush()
        [generation] = sink.events("$ai_generation")
        assert generation["properties"]["$ai_latency"] == pytest.approx(0.05)
        assert ("$ai_input" in generation["properties"]) is full_content
        assert ("what is 2+2?" in json.dumps(generation)) is full_content
        [trace] = sink.events("$ai_trace")
        assert ("$ai_input_state" in trace["properties"]) is full_content
        assert ("what is 2+2?" in json.dumps(trace)) is full_content


def test_a_bad_field_in_a_turn_never_raises_into_the_app(state_dir: Path) -> None:
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir))
    with telemetry.chat_turn(model="m") as turn:
        turn.set(prompt_length=-5)
    assert telemetry.status().drops["invalid_event"] == 1
    telemetry.shutdown(timeout=1)


# -- proposals ------------------------------------------------------------------------------------------


def test_review_time_survives_a_restart(state_dir: Path) -> None:
    created_at = 1_800_000_000.0
    before = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir), clock=lambda: created_at)
    before.emit(
        events.ProposalCreated(proposal_id="p-9", file_count=2, total_lines_changed=8, operation="edit")
    )
    before.shutdown(timeout=5)

    after = Analytics(TelemetryConfig.from_env({}, state_dir=state_dir), clock=lambda: created_at + 42.5)
    after.emit(events.ProposalDecision(proposal_id="p-9", decision="approved", files_approved=2))
    after.shutdown(timeout=5)
    [decision] = by_event(archived_messages(state_dir), "proposal_decided")
    assert decision["properties"]["review_duration_ms"] == 42_500


def test_review_time_across_real_processes(state_dir: Path) -> None:
    created = {"proposal_id": "p", "file_count": 1, "total_lines_changed": 1, "operation": "delete_file"}
    for step in (
        f"t.emit('ProposalCreated', {created!r})",
        "time.sleep(0.2); t.emit('ProposalDecision', {'proposal_id': 'p', 'decision': 'rejected'})",
    ):
        result = run_python(
            f"""
            import time
            from analytics import Analytics, TelemetryConfig
            t = Analytics(TelemetryConfig.from_env(state_dir={str(state_dir)!r}))
            {step}
            t.shutdown(timeout=5)
            """
        )
        assert result.returncode == 0, result.stderr
    [decision] = by_event(archived_messages(state_dir), "proposal_decided")
    assert 200 <= decision["properties"]["review_duration_ms"] < 60_000


def test_a_given_review_time_is_kept(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry()
    telemetry.emit(
        events.ProposalCreated(proposal_id="p", file_count=1, total_lines_changed=1, operation="edit")
    )
    telemetry.emit(events.ProposalDecision(proposal_id="p", decision="approved", review_duration_ms=7))
    telemetry.shutdown(timeout=5)
    [decision] = by_event(archived_messages(state_dir), "proposal_decided")
    assert decision["properties"]["review_duration_ms"] == 7


def test_stale_proposals_expire(state_dir: Path) -> None:
    now = [1_800_000_000.0]
    telemetry = Analytics(
        TelemetryConfig.from_env({}, state_dir=state_dir, proposal_ttl_days=30), clock=lambda: now[0]
    )
    telemetry.emit(
        events.ProposalCreated(proposal_id="old", file_count=1, total_lines_changed=1, operation="edit")
    )
    now[0] += 31 * DAY
    telemetry.emit(events.ProposalDecision(proposal_id="old", decision="approved"))
    telemetry.shutdown(timeout=5)
    [decision] = by_event(archived_messages(state_dir), "proposal_decided")
    assert "review_duration_ms" not in decision["properties"]
