"""Dashboards as code against a strict loopback PostHog API: created once, unchanged the second time."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from analytics.dashboards import DASHBOARD_MARKER, PostHogApi, apply, export_payloads, insight_marker
from analytics.metrics import METRICS
from analytics_cli.main import app
from tests.hogql import parse_select
from tests.posthog_api_server import PostHogApiServer

KEY = "phx_personal_key_for_tests"
PROJECT = 7
runner = CliRunner()


@pytest.fixture
def api_server() -> Iterator[PostHogApiServer]:
    with PostHogApiServer(key=KEY, project_id=PROJECT, page_size=4) as server:
        yield server


def cli_apply(server: PostHogApiServer, key: str = KEY, project: int = PROJECT) -> object:
    return runner.invoke(
        app,
        ["dashboards", "apply", "--host", server.url, "--project-id", str(project), "--json"],
        env={"POSTHOG_PERSONAL_API_KEY": key},
    )


def test_apply_twice_creates_once_and_then_changes_nothing(api_server: PostHogApiServer) -> None:
    first = cli_apply(api_server)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["created"] == ["dashboard", *[m.key for m in METRICS]]
    assert len(api_server.state.mutations) == 1 + len(METRICS)
    [dashboard] = api_server.state.dashboards.values()
    assert DASHBOARD_MARKER in dashboard["description"]
    assert all(i["dashboards"] == [dashboard["id"]] for i in api_server.state.insights.values())
    for insight in api_server.state.insights.values():  # what PostHog stored is valid HogQL
        parse_select(insight["query"]["source"]["query"])

    second = cli_apply(api_server)
    assert second.exit_code == 0
    again = json.loads(second.stdout)
    assert again["created"] == []
    assert again["updated"] == []
    assert len(again["unchanged"]) == 1 + len(METRICS)
    assert len(api_server.state.mutations) == 1 + len(METRICS)  # the second run sent no POST or PATCH
    assert len(api_server.state.insights) == len(METRICS)


def test_apply_puts_back_what_someone_edited(api_server: PostHogApiServer) -> None:
    api = PostHogApi(api_server.url, PROJECT, KEY)
    apply(api)
    edited = next(
        i for i in api_server.state.insights.values() if insight_marker(METRICS[3]) in i["description"]
    )
    edited["name"] = "renamed in the UI"
    edited["query"]["source"]["query"] = "SELECT 1"
    report = apply(api)
    assert report.updated == [METRICS[3].key]
    assert edited["name"] == METRICS[3].title
    assert edited["query"]["source"]["query"] == METRICS[3].hogql


def test_a_refused_key_is_one_line(api_server: PostHogApiServer) -> None:
    result = cli_apply(api_server, key="phx_wrong")
    assert result.exit_code == 1
    assert result.stderr.startswith("analytics: error: PostHog refused the personal API key (HTTP 401)")
    assert result.stderr.count("\n") == 1
    assert api_server.state.mutations == []


def test_a_wrong_project_is_one_line(api_server: PostHogApiServer) -> None:
    result = cli_apply(api_server, project=999)
    assert result.exit_code == 1
    assert "check --project-id" in result.stderr


def test_apply_without_a_key_says_which_variable(api_server: PostHogApiServer) -> None:
    result = cli_apply(api_server, key="")
    assert result.exit_code == 1
    assert "POSTHOG_PERSONAL_API_KEY" in result.stderr


def test_export_prints_every_payload() -> None:
    result = runner.invoke(app, ["dashboards", "export"])
    assert result.exit_code == 0
    exported = json.loads(result.stdout)
    assert exported == json.loads(json.dumps(export_payloads()))
    assert [i["query"]["source"]["query"] for i in exported["insights"]] == [m.hogql for m in METRICS]
