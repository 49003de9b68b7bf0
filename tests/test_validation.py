"""Unknown names and invalid payloads: refused loudly in strict mode, counted quietly otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from analytics import events
from tests.conftest import MakeTelemetry, queued_messages


@pytest.mark.parametrize(
    ("name", "payload", "fragment"),
    [
        ("ToolCall", {"tool_name": "read_file", "duration_ms": 12}, "success: Field required"),
        ("ToolCall", {"tool_name": "x", "duration_ms": -1, "success": True}, "duration_ms"),
        (
            "ChatTurn",
            {"prompt_length": "lots", "response_length": 1, "model": "m", "latency_ms": 1},
            "prompt_length",
        ),
        ("ProposalDecision", {"proposal_id": "p", "decision": "maybe"}, "'approved' or 'rejected'"),
        (
            "ToolCall",
            {"tool_name": "x", "duration_ms": 1, "success": True, "user_email": "a@b.c"},
            "user_email",
        ),
    ],
)
def test_strict_mode_refuses_invalid_payloads_with_a_clear_message(
    make_telemetry: MakeTelemetry, state_dir: Path, name: str, payload: dict[str, object], fragment: str
) -> None:
    telemetry = make_telemetry(strict=True)
    with pytest.raises(events.InvalidEvent) as caught:
        telemetry.emit(name, payload)
    assert caught.value.reason == "invalid_event"
    assert name in str(caught.value)
    assert fragment in str(caught.value)
    assert queued_messages(state_dir) == []


def test_strict_mode_refuses_unknown_names(make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry(strict=True)
    with pytest.raises(events.InvalidEvent, match="not in the event catalog") as caught:
        telemetry.emit("ChatTurnz", {})
    assert caught.value.reason == "unknown_event"
    assert "ChatTurn" in str(caught.value)  # the message lists what is known


def test_lenient_mode_counts_and_logs_once_per_kind(
    make_telemetry: MakeTelemetry, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = make_telemetry()
    with caplog.at_level(logging.WARNING, logger="analytics"):
        for _ in range(3):
            telemetry.emit("ToolCall", {"tool_name": "x"})
            telemetry.emit("NoSuchEvent", {})
        telemetry.emit("ToolCall", {"tool_name": "x", "duration_ms": 1, "success": True})
    drops = telemetry.status().drops
    assert drops["invalid_event"] == 3
    assert drops["unknown_event"] == 3
    assert len(queued_messages(state_dir)) == 1
    not_sent = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert len(not_sent) == 2  # once per (reason, event name), not once per event


def test_payload_with_an_event_object_is_refused(make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry(strict=True)
    with pytest.raises(events.InvalidEvent, match="payload given"):
        telemetry.emit(events.ToolCall(tool_name="x", duration_ms=1, success=True), {"extra": 1})


@pytest.mark.parametrize("bad", [None, 42, ["ToolCall"]])
def test_non_string_names_are_counted_not_raised(make_telemetry: MakeTelemetry, bad: object) -> None:
    telemetry = make_telemetry()
    telemetry.emit(bad)  # type: ignore[arg-type]
    assert telemetry.status().drops["unknown_event"] == 1


def test_drop_counts_persist_for_the_cli(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    from analytics import TelemetryConfig
    from analytics.status import build_status

    telemetry = make_telemetry()
    telemetry.emit("Nope", {})
    telemetry.shutdown()
    report = build_status(TelemetryConfig.from_env({}, state_dir=state_dir), disabled_reason=None)
    assert report.drops["unknown_event"] == 1
