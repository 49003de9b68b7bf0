"""`analytics doctor --end-to-end`: one marked session through the real adapter to a strict capture
server, then PostHog's query API (the strict fake, answering HogQL over what capture accepted) until
the event is visible, or the name of the hop that failed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analytics import TelemetryConfig
from analytics.end_to_end import (
    CAPTURE,
    CLICKHOUSE,
    INGESTION,
    QUERY_API,
    EndToEndReport,
    QueryApi,
    app_host,
    run_end_to_end,
)
from analytics.testing import CaptureServer, Fault
from tests.conftest import PROJECT_ROOT
from tests.posthog_api_server import PostHogApiServer

TOKEN = "phc_e2e_project_token"
KEY = "phx_e2e_personal_key"
PROJECT = 7
CLICKHOUSE_DOWN = (
    500,
    {"type": "server_error", "detail": "ClickHouse error while executing query.", "attr": None},
)


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer(api_key=TOKEN) as server:
        yield server


@pytest.fixture
def posthog(capture: CaptureServer) -> Iterator[PostHogApiServer]:
    with PostHogApiServer(
        key=KEY, project_id=PROJECT, events=lambda: capture.events, ingestion_delay=0.3
    ) as server:
        yield server


def check(
    endpoint: str,
    api: PostHogApiServer,
    tmp_path: Path,
    *,
    key: str = KEY,
    project: str = str(PROJECT),
    token: str = TOKEN,
    ingestion_timeout: float = 10.0,
    **config: Any,
) -> EndToEndReport:
    telemetry = TelemetryConfig(endpoint=endpoint, token=token, state_dir=tmp_path / "app-state", **config)
    return run_end_to_end(
        telemetry,
        QueryApi(api.url, project, key),
        capture_timeout=3.0,
        ingestion_timeout=ingestion_timeout,
        poll_interval=0.1,
    )


def hops(report: EndToEndReport) -> list[tuple[str, str]]:
    return [(hop.name, hop.status) for hop in report.hops]


def test_the_marked_event_is_found_and_ingestion_is_timed(
    capture: CaptureServer, posthog: PostHogApiServer, tmp_path: Path
) -> None:
    report = check(capture.url, posthog, tmp_path)
    assert hops(report) == [(QUERY_API, "ok"), (CAPTURE, "ok"), (INGESTION, "ok")], report.hops
    assert report.ok
    assert report.ingestion_seconds is not None
    assert report.ingestion_seconds >= 0.3  # the fake's ingestion delay: it waited for it
    assert "in PostHog" in report.hops[-1].detail
    # The event went through the adapter, marked so dashboards can leave it out.
    started = [e for e in capture.events if e["event"] == "session_started"]
    assert len(started) == 1
    assert started[0]["properties"]["$session_id"] == report.session_id
    assert started[0]["properties"]["environment"] == "e2e-check"
    assert started[0]["distinct_id"] == "analytics-e2e-check"
    # It was looked up by its session id, through a placeholder, never pasted into the HogQL.
    lookups = [q for q in posthog.query.queries if "session_id" in json.dumps(q)]
    assert lookups
    assert lookups[0]["query"]["values"] == {"session_id": report.session_id}
    assert report.session_id not in lookups[0]["query"]["query"]
    assert not (tmp_path / "app-state").exists()  # the app's own queue is never touched


def test_the_current_project_is_the_default(
    capture: CaptureServer, posthog: PostHogApiServer, tmp_path: Path
) -> None:
    assert check(capture.url, posthog, tmp_path, project="@current").ok


def test_a_refused_personal_key_fails_before_anything_is_sent(
    capture: CaptureServer, posthog: PostHogApiServer, tmp_path: Path
) -> None:
    report = check(capture.url, posthog, tmp_path, key="phx_wrong_key_0000")
    assert hops(report) == [(QUERY_API, "fail"), (CAPTURE, "info")]
    assert "refused the personal API key phx_****" in report.hops[0].detail
    assert "query:read" in report.hops[0].fix
    assert capture.events == []


def test_an_unknown_project_is_named(
    capture: CaptureServer, posthog: PostHogApiServer, tmp_path: Path
) -> None:
    report = check(capture.url, posthog, tmp_path, project="999")
    assert report.failed_hop == QUERY_API
    assert "no project 999" in report.hops[0].detail
    assert "POSTHOG_PROJECT_ID" in report.hops[0].fix


def test_clickhouse_down_is_named_and_nothing_is_sent(
    capture: CaptureServer, posthog: PostHogApiServer, tmp_path: Path
) -> None:
    posthog.query.fault = CLICKHOUSE_DOWN
    report = check(capture.url, posthog, tmp_path)
    assert hops(report) == [(CLICKHOUSE, "fail"), (CAPTURE, "info")]
    assert "ClickHouse error while executing query" in report.hops[0].detail
    assert capture.events == []


def test_clickhouse_failing_after_capture_is_named(capture: CaptureServer, tmp_path: Path) -> None:
    calls = 0

    def events() -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first query answers; ClickHouse falls over before the second
            server.query.fault = CLICKHOUSE_DOWN
        return capture.events

    with PostHogApiServer(key=KEY, project_id=PROJECT, events=events) as server:
        report = check(capture.url, server, tmp_path)
    assert hops(report) == [(QUERY_API, "ok"), (CAPTURE, "ok"), (CLICKHOUSE, "fail")]


def test_the_web_service_down_is_named(
    capture: CaptureServer, posthog: PostHogApiServer, tmp_path: Path
) -> None:
    posthog.query.fault = (502, None)
    report = check(capture.url, posthog, tmp_path)
    assert report.failed_hop == QUERY_API
    assert "web service is not answering (HTTP 502" in report.hops[0].detail


def test_capture_refusing_the_token_names_capture(posthog: PostHogApiServer, tmp_path: Path) -> None:
    with CaptureServer(api_key="phc_another_project") as strict:
        report = check(strict.url, posthog, tmp_path)
    assert hops(report) == [(QUERY_API, "ok"), (CAPTURE, "fail")]
    assert "capture refused the project API key" in report.hops[1].detail
    assert "TELEMETRY_TOKEN" in report.hops[1].fix


def test_capture_refusing_the_event_names_capture(
    capture: CaptureServer, posthog: PostHogApiServer, tmp_path: Path
) -> None:
    capture.add_faults(Fault(status=400, body=b'{"type": "validation_error", "detail": "no"}'))
    report = check(capture.url, posthog, tmp_path)
    assert report.failed_hop == CAPTURE
    assert "capture refused the event (HTTP 400" in report.hops[1].detail


def test_capture_that_does_not_answer_names_capture(posthog: PostHogApiServer, tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    report = check(f"http://127.0.0.1:{port}", posthog, tmp_path)
    assert report.failed_hop == CAPTURE
    assert "did not take the event" in report.hops[1].detail
    assert "capture" in report.hops[1].fix


def test_an_event_that_never_appears_names_ingestion(capture: CaptureServer, tmp_path: Path) -> None:
    with PostHogApiServer(
        key=KEY, project_id=PROJECT, events=lambda: capture.events, ingestion_delay=None
    ) as stalled:
        report = check(capture.url, stalled, tmp_path, ingestion_timeout=1.0)
    assert hops(report) == [(QUERY_API, "ok"), (CAPTURE, "ok"), (INGESTION, "fail")]
    assert "capture took the event, but after 1 s" in report.hops[2].detail
    assert "no other event arrived either" in report.hops[2].detail
    assert "ingestion-general" in report.hops[2].fix


def test_other_events_arriving_point_at_the_token(capture: CaptureServer, tmp_path: Path) -> None:
    # Another app's events reach this project, ours do not: the token is another project's.
    others: list[dict[str, Any]] = []

    def events() -> list[dict[str, Any]]:
        seen = list(others)
        others.append(
            {
                "event": "pageview",
                "uuid": f"00000000-0000-4000-8000-{len(others):012d}",
                "timestamp": "2099-01-01T00:00:00Z",
                "properties": {},
            }
        )
        return seen

    with PostHogApiServer(key=KEY, project_id=PROJECT, events=events, ingestion_delay=0.0) as elsewhere:
        report = check(capture.url, elsewhere, tmp_path, ingestion_timeout=1.0)
    assert report.failed_hop == INGESTION
    assert f"other events do arrive in project {PROJECT}" in report.hops[2].detail
    assert "TELEMETRY_TOKEN may be the key of another project" in report.hops[2].fix


def test_telemetry_turned_off_sends_nothing(
    capture: CaptureServer, posthog: PostHogApiServer, tmp_path: Path
) -> None:
    report = check(capture.url, posthog, tmp_path, do_not_track=True)
    assert report.failed_hop == CAPTURE
    assert "telemetry is off here" in report.hops[1].detail
    assert capture.events == []


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        ("https://eu.i.posthog.com", "https://eu.posthog.com"),
        ("https://us.i.posthog.com/", "https://us.posthog.com"),
        ("https://posthog.example.com", "https://posthog.example.com"),
        ("http://127.0.0.1:8000/ingest", "http://127.0.0.1:8000"),
    ],
)
def test_the_app_host_follows_the_capture_endpoint(endpoint: str, host: str) -> None:
    assert app_host(endpoint) == host


# -- the command users run ------------------------------------------------------------------------


def doctor(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEMETRY_", "SENTRY_", "POSTHOG_", "ANALYTICS_")) and k != "DO_NOT_TRACK"
    }
    base.update(TELEMETRY_DIR=str(tmp_path / "state"), COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-m", "analytics_cli.main", "doctor", "--end-to-end", "--json"],
        capture_output=True,
        text=True,
        env=base,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )


def test_doctor_end_to_end_reports_how_long_ingestion_took(
    capture: CaptureServer, posthog: PostHogApiServer, tmp_path: Path
) -> None:
    result = doctor(
        tmp_path,
        TELEMETRY_ENDPOINT=capture.url,
        TELEMETRY_TOKEN=TOKEN,
        POSTHOG_PERSONAL_API_KEY=KEY,
        POSTHOG_PROJECT_ID=str(PROJECT),
        POSTHOG_HOST=posthog.url,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {check["name"]: check for check in json.loads(result.stdout)}
    assert lines["end-to-end: capture"]["status"] == "ok"
    assert lines["end-to-end: ingestion"]["status"] == "ok"
    assert "s after capture took it" in lines["end-to-end: ingestion"]["detail"]


def test_doctor_end_to_end_names_the_failing_hop(capture: CaptureServer, tmp_path: Path) -> None:
    with PostHogApiServer(
        key=KEY, project_id=PROJECT, events=lambda: capture.events, ingestion_delay=None
    ) as stalled:
        result = doctor(
            tmp_path,
            TELEMETRY_ENDPOINT=capture.url,
            TELEMETRY_TOKEN=TOKEN,
            POSTHOG_PERSONAL_API_KEY=KEY,
            POSTHOG_HOST=stalled.url,
            ANALYTICS_E2E_TIMEOUT="1",
        )
    assert result.returncode == 1
    lines = {check["name"]: check for check in json.loads(result.stdout)}
    assert lines["end-to-end: capture"]["status"] == "ok"
    assert lines["end-to-end: ingestion"]["status"] == "fail"
    assert stalled.query.queries  # it asked PostHog: the default project is @current


def test_doctor_end_to_end_needs_a_personal_key(capture: CaptureServer, tmp_path: Path) -> None:
    result = doctor(tmp_path, TELEMETRY_ENDPOINT=capture.url, TELEMETRY_TOKEN=TOKEN)
    assert result.returncode == 1
    lines = {check["name"]: check for check in json.loads(result.stdout)}
    assert lines["end-to-end"]["detail"] == "POSTHOG_PERSONAL_API_KEY is not set"
    assert capture.events == []
