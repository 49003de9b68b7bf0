"""The ASGI middleware under a real FastAPI app (TestClient), with what arrives checked at the
loopback capture server and, for the joined-Sentry case, at the loopback Sentry stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.testclient import TestClient
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.dedupe import DedupeIntegration
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration
from starlette.routing import Mount

from analytics import Analytics, TelemetryConfig
from analytics.integrations.asgi import TelemetryMiddleware
from analytics.testing import CaptureServer
from tests.sentry_server import SentryServer

TOKEN = "phc_asgi_middleware"
SECRET_QUERY = "api_key=sk-live-query-value"


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer(api_key=TOKEN) as capture:
        yield capture


@pytest.fixture(autouse=True)
def fresh_sentry() -> Iterator[None]:
    """sentry-sdk is process-global: every test ends without a client. (Reset without sentry-sdk's
    default integrations: once set up, they patch the process for good.)"""
    yield
    sentry_sdk.get_client().close(timeout=1)
    sentry_sdk.get_global_scope().clear()
    sentry_sdk.init(default_integrations=False)


def telemetry_for(server: CaptureServer, state_dir: Path, **overrides: Any) -> Analytics:
    config = TelemetryConfig.from_env(
        {}, endpoint=server.url, token=TOKEN, state_dir=state_dir, strict=True, **overrides
    )
    return Analytics(config)


def failing_app(telemetry: Analytics) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)

    @app.get("/proposals/{proposal_id}")
    async def show(proposal_id: str) -> dict[str, str]:
        raise RuntimeError(f"proposal store unavailable for {proposal_id}")

    @app.get("/healthy")
    async def healthy() -> dict[str, str]:
        return {"ok": "yes"}

    @app.websocket("/ws/rooms/{room}")
    async def room(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise ValueError("chat handler broke")

    return app


def chat_once(client: TestClient, path: str) -> None:
    with client.websocket_connect(path) as websocket:
        websocket.send_text("hello")
        websocket.receive_text()


def exceptions(server: CaptureServer) -> list[dict[str, Any]]:
    return [e for e in server.events if e["event"] == "$exception"]


def test_a_failing_route_and_websocket_report_one_exception_each_with_the_template(
    server: CaptureServer, tmp_path: Path
) -> None:
    telemetry = telemetry_for(server, tmp_path / "state")
    telemetry.start()
    app = failing_app(telemetry)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/healthy").status_code == 200
        response = client.get(f"/proposals/p-9931?{SECRET_QUERY}", headers={"X-Secret": "hdr-value"})
        assert response.status_code == 500
        with pytest.raises(ValueError, match="chat handler broke"):
            chat_once(client, f"/ws/rooms/lobby-7?{SECRET_QUERY}")
    telemetry.shutdown(timeout=5)

    http_error, ws_error = exceptions(server)
    assert http_error["properties"]["error_type"] == "RuntimeError"
    assert http_error["properties"]["context"] == {
        "transport": "http",
        "route": "/proposals/{proposal_id}",
        "method": "GET",
        "status": 500,
    }
    assert ws_error["properties"]["error_type"] == "ValueError"
    assert ws_error["properties"]["context"] == {
        "transport": "websocket",
        "route": "/ws/rooms/{room}",
        "status": 1011,
    }
    sent = json.dumps(server.events)
    for leaked in ("sk-live-query-value", "api_key=", "hdr-value", "testclient", "lobby-7?"):
        assert leaked not in sent, f"{leaked!r} reached PostHog"
    [ended] = [e for e in server.events if e["event"] == "session_ended"]
    assert ended["properties"]["errors"] == 2


def test_a_route_in_a_mounted_app_keeps_the_mount_prefix(server: CaptureServer, tmp_path: Path) -> None:
    telemetry = telemetry_for(server, tmp_path / "state")
    telemetry.start()
    inner = APIRouter()

    @inner.post("/items/{item_id}")
    async def update(item_id: int) -> None:
        raise KeyError("missing")

    sub = FastAPI()
    sub.include_router(inner)
    app = FastAPI(routes=[Mount("/api/v2", app=sub)])
    app.add_middleware(TelemetryMiddleware, telemetry=lambda: telemetry)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/api/v2/items/42").status_code == 500
    telemetry.shutdown(timeout=5)
    [error] = exceptions(server)
    assert error["properties"]["context"]["route"] == "/api/v2/items/{item_id}"
    assert error["properties"]["context"]["method"] == "POST"


def test_an_exception_the_app_reported_itself_is_not_reported_again(
    server: CaptureServer, tmp_path: Path
) -> None:
    telemetry = telemetry_for(server, tmp_path / "state")
    telemetry.start()
    app = FastAPI()
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)

    @app.get("/sync")
    async def sync() -> None:
        try:
            raise ConnectionError("sync server gone")
        except ConnectionError as exc:
            telemetry.capture_exception(exc, context={"step": "sync"})
            raise

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/sync").status_code == 500
    telemetry.shutdown(timeout=5)
    [error] = exceptions(server)
    assert error["properties"]["context"] == {"step": "sync"}


def test_nothing_is_reported_before_the_app_has_its_telemetry(server: CaptureServer, tmp_path: Path) -> None:
    app = FastAPI()
    app.add_middleware(TelemetryMiddleware, telemetry=lambda: None)

    @app.get("/early")
    async def early() -> None:
        raise RuntimeError("before start")

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/early").status_code == 500  # the app's own 500, unchanged


@pytest.mark.parametrize("dedupe", [True, False], ids=["sentry-dedupe-on", "sentry-dedupe-off"])
def test_with_the_apps_own_sentry_starlette_integration_sentry_gets_one_event(
    server: CaptureServer, tmp_path: Path, dedupe: bool
) -> None:
    with SentryServer() as sentry:
        # The app's own client with sentry-sdk's Starlette and FastAPI integrations, which capture
        # route errors on their own. Without sentry-sdk's dedupe they would send the exception a
        # second time after ours. (Only these: sentry-sdk's integrations patch the process for
        # good, and its threading one would then race our hooks in other tests.)
        integrations: list[Integration] = [StarletteIntegration(), FastApiIntegration()]
        if dedupe:
            integrations.append(DedupeIntegration())
        sentry_sdk.init(dsn=sentry.dsn, default_integrations=False, integrations=integrations)
        client_integrations = sentry_sdk.get_client().integrations
        assert "starlette" in client_integrations
        telemetry = telemetry_for(server, tmp_path / "state")
        telemetry.start()
        app = failing_app(telemetry)
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/proposals/p-1").status_code == 500
        telemetry.shutdown(timeout=5)
        sentry_sdk.flush(timeout=5)
        sentry_events = [e for e in sentry.events() if e.get("exception")]

    [error] = exceptions(server)
    [sentry_event] = sentry_events
    assert error["properties"]["$sentry_event_id"] == sentry_event["event_id"]
    assert sentry_event["exception"]["values"][-1]["type"] == "RuntimeError"
