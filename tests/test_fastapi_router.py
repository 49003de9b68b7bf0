"""The settings router under a real FastAPI app: changes go through the public API and are checked
where they land (the queue folder on disk, the loopback capture server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from analytics import AppEvent, Hashed, Text
from analytics.client import Analytics
from analytics.config import TelemetryConfig
from analytics.integrations.fastapi import telemetry_router
from analytics.testing import CaptureServer
from tests.conftest import queued_messages

TOKEN = "phc_router_settings_token"
LOCAL = ("127.0.0.1", 50123)
HOME = str(Path.home())


class SettingsOpened(AppEvent):
    posthog_event = "settings_opened"
    section: str


class ModelSwitched(AppEvent):
    posthog_event = "model_switched"
    from_model: str
    to_model: str
    note: Text = ""
    project: Hashed = ""


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer(api_key=TOKEN) as capture:
        yield capture


@pytest.fixture
def telemetry(server: CaptureServer, state_dir: Path) -> Iterator[Analytics]:
    config = TelemetryConfig.from_env({}, endpoint=server.url, token=TOKEN, state_dir=state_dir)
    # A long upload interval: what is queued stays queued until the test flushes.
    made = Analytics(config, events=[SettingsOpened, ModelSwitched], upload_interval=3600)
    yield made
    made.shutdown(timeout=3)


def client_for(telemetry: Analytics, *, client: tuple[str, int] = LOCAL, **options: Any) -> TestClient:
    app = FastAPI()
    app.include_router(telemetry_router(telemetry, **options))
    return TestClient(app, client=client)


def test_get_reports_what_the_settings_page_shows_with_the_token_masked(
    telemetry: Analytics, server: CaptureServer
) -> None:
    telemetry.emit(SettingsOpened(section="privacy"))
    with client_for(telemetry) as client:
        body = client.get("/telemetry").json()
    assert body["enabled"] is True
    assert body["disabled_reason"] is None
    assert body["level"] == "usage"
    assert body["full_content"] is False
    assert body["endpoint"] == server.url
    assert body["token"] == "phc_****"
    assert TOKEN not in json.dumps(body)
    assert body["user_id_set"] is False
    assert body["queue_depth"] == 1
    assert body["last_delivery"] is None


def test_opting_out_purges_the_queue_on_disk(telemetry: Analytics, state_dir: Path) -> None:
    telemetry.start()
    telemetry.emit(SettingsOpened(section="privacy"))
    assert "settings_opened" in [m["event"] for m in queued_messages(state_dir)]
    with client_for(telemetry) as client:
        body = client.put("/telemetry", json={"enabled": False}).json()
        assert body["enabled"] is False
        assert body["level"] == "off"
        assert body["queue_depth"] == 0
        assert client.get("/telemetry/preview").json() == {"queued": [], "archived": []}
    assert queued_messages(state_dir) == []
    telemetry.emit(SettingsOpened(section="after"))
    assert queued_messages(state_dir) == []


def test_opting_back_in_starts_a_new_session_that_is_delivered(
    telemetry: Analytics, server: CaptureServer
) -> None:
    telemetry.start()
    first_session = telemetry.session_id
    with client_for(telemetry) as client:
        client.put("/telemetry", json={"enabled": False})
        body = client.put("/telemetry", json={"enabled": True, "level": "usage"}).json()
        assert (body["enabled"], body["level"]) == (True, "usage")
        event = {"event": "settings_opened", "properties": {"section": "x"}}
        assert client.post("/telemetry/events", json=event).status_code == 202
    assert telemetry.flush(timeout=10)
    after = [e for e in server.events if e["properties"]["$session_id"] != first_session]
    assert [e["event"] for e in after] == ["session_started", "settings_opened"]
    assert {e["properties"]["$session_id"] for e in after} == {telemetry.session_id}


def test_level_and_full_content_change_through_the_api_and_lowering_purges(
    telemetry: Analytics, state_dir: Path
) -> None:
    telemetry.emit(SettingsOpened(section="privacy"))
    with client_for(telemetry) as client:
        assert client.put("/telemetry", json={"full_content": True}).json()["level"] == "full"
        body = client.put("/telemetry", json={"full_content": False}).json()
        assert (body["level"], body["full_content"]) == ("usage", False)
        body = client.put("/telemetry", json={"level": "error"}).json()
        assert body["level"] == "error"
        assert body["drops"]["level_lowered"] == 1
        assert client.put("/telemetry", json={"level": "everything"}).status_code == 422
    assert queued_messages(state_dir) == []
    assert telemetry.level == "error"


def test_user_id_identifies_and_null_resets(telemetry: Analytics, state_dir: Path) -> None:
    with client_for(telemetry) as client:
        assert client.put("/telemetry", json={"user_id": "user-42"}).json()["user_id_set"] is True
        assert telemetry.distinct_id == "user-42"
        refused = client.put("/telemetry", json={"user_id": "anonymous"})
        assert refused.status_code == 422
        assert "reserved" in refused.json()["detail"]
        assert client.put("/telemetry", json={"user_id": None}).json()["user_id_set"] is False
    assert telemetry.distinct_id not in (None, "user-42")
    [identify] = [m for m in queued_messages(state_dir) if m["event"] == "$identify"]
    assert identify["distinct_id"] == "user-42"


def test_frontend_events_are_validated_and_queued_scrubbed(
    telemetry: Analytics, server: CaptureServer, state_dir: Path
) -> None:
    project = f"{HOME}/clients/acme"
    with client_for(telemetry) as client:
        ok = client.post(
            "/telemetry/events",
            json={
                "event": "model_switched",
                "properties": {
                    "from_model": "a",
                    "to_model": "b",
                    "note": f"mail jane.doe@example.com about {project}",
                    "project": project,
                },
            },
        )
        assert ok.status_code == 202
        by_class_name = client.post(
            "/telemetry/events", json={"event": "SettingsOpened", "properties": {"section": "general"}}
        )
        assert by_class_name.status_code == 202
        unknown = client.post("/telemetry/events", json={"event": "session_ended", "properties": {}})
        assert unknown.status_code == 404
        invalid = client.post(
            "/telemetry/events",
            json={"event": "model_switched", "properties": {"from_model": "sk-secretvalue"}},
        )
        assert invalid.status_code == 422
        assert "to_model" in invalid.json()["detail"]
        assert "sk-secretvalue" not in invalid.text
        preview = client.get("/telemetry/preview", params={"limit": 5}).json()
    assert [m["event"] for m in preview["queued"]] == ["model_switched", "settings_opened"]
    assert preview["queued"] == queued_messages(state_dir)  # exactly what waits to be sent
    assert telemetry.flush(timeout=10)
    [switched] = [e for e in server.events if e["event"] == "model_switched"]
    sent = json.dumps(switched)
    assert project not in sent
    assert "jane.doe@example.com" not in sent
    assert switched["properties"]["from_model"] == "a"


def test_remote_clients_other_sites_and_non_json_writes_are_refused(telemetry: Analytics) -> None:
    with client_for(telemetry, client=("192.168.1.20", 40000)) as remote:
        assert remote.get("/telemetry").status_code == 403
        assert remote.put("/telemetry", json={"enabled": False}).status_code == 403
    assert telemetry.enabled
    with client_for(telemetry) as local:
        cross_site = local.put(
            "/telemetry", json={"enabled": False}, headers={"Origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403
        form = local.put("/telemetry", content=b'{"enabled": false}', headers={"Content-Type": "text/plain"})
        assert form.status_code == 415
        same_site = local.get("/telemetry", headers={"Origin": "http://testserver"})
        assert same_site.status_code == 200
    assert telemetry.enabled
    with client_for(telemetry, client=("192.168.1.20", 40000), allow_remote=True) as trusted:
        assert trusted.get("/telemetry").status_code == 200
