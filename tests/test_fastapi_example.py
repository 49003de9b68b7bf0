"""The FastAPI example under its own tests: TestClient (lifespan, WebSocket chat, proposal routes),
with every event checked where it lands, at the loopback capture server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics.testing import CaptureServer
from examples.fastapi_backend.app import MODEL, create_app

TOKEN = "phc_fastapi_example"


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer(api_key=TOKEN) as capture:
        yield capture


def events_named(server: CaptureServer, name: str) -> list[dict[str, Any]]:
    return [e for e in server.events if e["event"] == name]


def test_a_session_of_the_example_arrives_with_the_documented_fields(
    server: CaptureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the Electron shell would pass.
    monkeypatch.setenv("TELEMETRY_ENDPOINT", server.url)
    monkeypatch.setenv("TELEMETRY_TOKEN", TOKEN)
    monkeypatch.setenv("TELEMETRY_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TELEMETRY_APP_VERSION", "0.9.1")
    workspace = tmp_path / "shop"
    (workspace / ".git").mkdir(parents=True)
    (workspace / "main.py").write_text("print('hi')\n")

    with TestClient(create_app()) as client:
        assert client.post("/workspace", json={"path": str(workspace)}).status_code == 200
        with client.websocket_connect("/ws/chat") as chat:
            chat.send_text("explain main.py")
            first = chat.receive_json()
            chat.send_text("please fail the tests")
            second = chat.receive_json()
        approve = client.post("/proposals", json={"files": ["main.py"], "lines_changed": 4}).json()["id"]
        reject = client.post("/proposals", json={"files": ["a.py", "b.py"], "lines_changed": 9}).json()["id"]
        assert client.post(f"/proposals/{approve}/approve").json()["decision"] == "approved"
        assert client.post(f"/proposals/{reject}/reject").json()["decision"] == "rejected"
        assert client.post("/proposals/nope/approve").status_code == 404
    # Leaving the TestClient ran the lifespan's shutdown: SessionEnd, and a flush.

    assert "main.py" in first["answer"]
    [start] = events_named(server, "session_started")
    assert start["properties"]["app_version"] == "0.9.1"
    session_id = start["properties"]["$session_id"]
    assert {e["properties"]["$session_id"] for e in server.events} == {session_id}

    [workspace_event] = events_named(server, "workspace_selected")
    assert workspace_event["properties"]["is_git_repo"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", workspace_event["properties"]["workspace_hash"])
    assert str(workspace) not in str(server.events)

    generations = events_named(server, "$ai_generation")
    assert [g["properties"]["$ai_trace_id"] for g in generations] == [first["turn_id"], second["turn_id"]]
    for generation in generations:
        props = generation["properties"]
        assert props["$ai_model"] == MODEL
        assert props["$ai_provider"] == "local"
        assert props["$ai_latency"] > 0
        assert props["prompt_length"] > 0
        assert props["$ai_input_tokens"] > 0
    spans = events_named(server, "$ai_span")
    by_turn = {
        turn: [s for s in spans if s["properties"]["$ai_trace_id"] == turn]
        for turn in generation_ids(first, second)
    }
    assert [s["properties"]["$ai_span_name"] for s in by_turn[first["turn_id"]]] == ["list_dir"]
    failing = {s["properties"]["$ai_span_name"]: s["properties"] for s in by_turn[second["turn_id"]]}
    assert failing["run_tests"]["$ai_is_error"] is True
    assert failing["run_tests"]["$ai_error"].startswith("TimeoutError")
    assert all(s["properties"]["$ai_parent_id"] == s["properties"]["$ai_trace_id"] for s in spans)

    created = events_named(server, "proposal_created")
    assert sorted(e["properties"]["file_count"] for e in created) == [1, 2]
    decided = {
        e["properties"]["proposal_id"]: e["properties"] for e in events_named(server, "proposal_decided")
    }
    assert decided[approve]["decision"] == "approved"
    assert decided[approve]["files_approved"] == 1
    assert decided[reject]["decision"] == "rejected"
    assert all(d["review_duration_ms"] >= 0 for d in decided.values())  # computed by the adapter

    [end] = events_named(server, "session_ended")
    props = end["properties"]
    assert props["end_reason"] == "shutdown"
    assert (props["chat_turns"], props["tool_calls"]) == (2, 3)
    assert (props["proposals_created"], props["proposals_approved"], props["proposals_rejected"]) == (2, 1, 1)


def generation_ids(*answers: dict[str, Any]) -> list[str]:
    return [answer["turn_id"] for answer in answers]


def test_telemetry_off_in_the_environment_means_nothing_leaves(
    server: CaptureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("TELEMETRY_ENDPOINT", server.url)
    monkeypatch.setenv("TELEMETRY_TOKEN", TOKEN)
    monkeypatch.setenv("TELEMETRY_DIR", str(tmp_path / "state"))
    with TestClient(create_app()) as client, client.websocket_connect("/ws/chat") as chat:
        chat.send_text("hello")
        assert "hello" in chat.receive_json()["answer"]
    assert server.requests == []
    assert not (tmp_path / "state").exists()
