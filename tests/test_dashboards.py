"""Dashboards as code against a loopback PostHog API as strict as the real one: queries validated
against PostHog's schema shape, stored queries upgraded to ``version`` 2, ``dashboards`` only when
asked for, unstable list order, scopes and projects enforced."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from analytics.dashboards import (
    DASHBOARD_MARKER,
    MAX_PASSES,
    DashboardApiError,
    PostHogApi,
    apply,
    covers,
    export_payloads,
    insight_marker,
    insight_payload,
    normalise,
)
from analytics.metrics import METRICS, METRICS_BY_KEY
from analytics_cli.main import app
from tests.hogql import parse_select
from tests.posthog_api_server import DATA_VISUALIZATION_NODE, PostHogApiServer, schema_problem

KEY = "phx_personal_key_for_tests"
PROJECT = 7
runner = CliRunner()


@pytest.fixture
def api_server() -> Iterator[PostHogApiServer]:
    with PostHogApiServer(key=KEY, project_id=PROJECT, page_size=4) as server:
        yield server


def cli_apply(server: PostHogApiServer, key: str = KEY, project: int = PROJECT) -> Any:
    return runner.invoke(
        app,
        ["dashboards", "apply", "--host", server.url, "--project-id", str(project), "--json"],
        env={"POSTHOG_PERSONAL_API_KEY": key},
    )


def ours(server: PostHogApiServer, metric_key: str) -> int:
    marker = insight_marker(METRICS_BY_KEY[metric_key])
    [insight_id] = [i for i, v in server.state.insights.items() if marker in v["description"]]
    return insight_id


def dashboard_id(server: PostHogApiServer) -> int:
    [found] = [i for i, d in server.state.dashboards.items() if DASHBOARD_MARKER in d["description"]]
    return found


# -- idempotency against what PostHog returns ---------------------------------------------------------


def test_apply_creates_once_then_a_second_and_third_apply_send_nothing(api_server: PostHogApiServer) -> None:
    first = cli_apply(api_server)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["created"] == ["dashboard", *[m.key for m in METRICS]]
    assert len(api_server.state.mutations) == 1 + len(METRICS)
    ours_id = dashboard_id(api_server)
    assert all(api_server.state.dashboards_of(i) == [ours_id] for i in api_server.state.insights)
    for insight in api_server.state.insights.values():
        assert insight["query"]["version"] == 2  # what PostHog stores is not what we sent
        parse_select(insight["query"]["source"]["query"])

    for _ in range(2):
        again = cli_apply(api_server)
        assert again.exit_code == 0, again.output
        result = json.loads(again.stdout)
        assert (result["created"], result["updated"]) == ([], [])
        assert len(result["unchanged"]) == 1 + len(METRICS)
    assert len(api_server.state.mutations) == 1 + len(METRICS)  # no POST or PATCH after the first run
    assert len(api_server.state.insights) == len(METRICS)


def test_the_listing_asks_for_dashboards_a_stable_order_and_only_our_insights(
    api_server: PostHogApiServer,
) -> None:
    apply(PostHogApi(api_server.url, PROJECT, KEY))
    listings = [
        path for method, path in api_server.state.requests if method == "GET" and "/insights/" in path
    ]
    assert listings
    assert all("include_dashboards=true" in p and "order=id" in p and "search=" in p for p in listings)


def test_what_posthog_returns_differs_from_what_we_send(api_server: PostHogApiServer) -> None:
    """Without normalising, every apply would PATCH: the server adds ``version`` and other keys."""
    apply(PostHogApi(api_server.url, PROJECT, KEY))
    metric = METRICS[0]
    returned = api_server.state.insight_view(ours(api_server, metric.key), include_dashboards=False)
    sent = insight_payload(metric)["query"]
    assert returned["query"] != sent
    assert "dashboards" not in returned  # not asked for
    assert covers(normalise(returned["query"]), sent)


def test_covers_ignores_server_keys_but_not_ours() -> None:
    sent = {"a": 1, "b": [{"c": True}], "d": {"e": "x"}}
    assert covers({"a": 1, "b": [{"c": True, "extra": 1}], "d": {"e": "x"}, "version": 2}, sent)
    assert not covers({"a": 1, "b": [{"c": 1}], "d": {"e": "x"}}, sent)  # True is not 1
    assert not covers({"a": 1, "b": [], "d": {"e": "x"}}, sent)
    assert not covers({"a": 1, "b": [{"c": True}], "d": {}}, sent)
    assert normalise({"version": 2, "x": [{"version": 1, "y": 0}]}) == {"x": [{"y": 0}]}


def test_apply_puts_back_what_someone_edited(api_server: PostHogApiServer) -> None:
    api = PostHogApi(api_server.url, PROJECT, KEY)
    apply(api)
    metric = METRICS_BY_KEY["tool_failure_rate"]
    edited = api_server.state.insights[ours(api_server, metric.key)]
    edited["name"] = "renamed in the UI"
    edited["query"]["chartSettings"]["yAxis"] = [{"column": "calls"}]
    report = apply(api)
    assert report.updated == [metric.key]
    assert edited["name"] == metric.title
    assert edited["query"]["chartSettings"]["yAxis"][0]["column"] == "failure_rate"
    assert apply(api).updated == []


def test_an_insight_a_user_added_to_another_dashboard_stays_there(api_server: PostHogApiServer) -> None:
    api = PostHogApi(api_server.url, PROJECT, KEY)
    apply(api)
    ours_id = dashboard_id(api_server)
    theirs = api_server.state.add_dashboard("Team weekly review")
    renamed, moved = ours(api_server, "sessions_per_day"), ours(api_server, "errors_by_type")
    api_server.state.attach(renamed, theirs)
    api_server.state.insights[renamed]["name"] = "a new name"  # so apply must PATCH it
    api_server.state.attach(moved, theirs)
    api_server.state.detach(moved, ours_id)  # so apply must put it back on ours
    before = len(api_server.state.mutations)

    report = apply(api)

    assert sorted(report.updated) == ["errors_by_type", "sessions_per_day"]
    assert len(api_server.state.mutations) == before + 2
    assert api_server.state.dashboards_of(renamed) == sorted([ours_id, theirs])
    assert api_server.state.dashboards_of(moved) == sorted([ours_id, theirs])
    assert apply(api).updated == []


def test_a_duplicated_insight_is_left_alone(api_server: PostHogApiServer) -> None:
    """Duplicating an insight in PostHog copies its description, marker included."""
    api = PostHogApi(api_server.url, PROJECT, KEY)
    apply(api)
    original = ours(api_server, "review_time")
    copy_id = api_server.state.add_insight(
        "Proposal review time (copy)", api_server.state.insights[original]["description"]
    )
    before = len(api_server.state.mutations)
    assert apply(api).updated == []
    assert len(api_server.state.mutations) == before
    assert api_server.state.insights[copy_id]["name"] == "Proposal review time (copy)"


def test_of_two_marked_dashboards_the_oldest_is_managed(api_server: PostHogApiServer) -> None:
    api = PostHogApi(api_server.url, PROJECT, KEY)
    apply(api)
    first = dashboard_id(api_server)
    api_server.state.add_dashboard("A copy", api_server.state.dashboards[first]["description"])
    for _ in range(3):  # the list comes back in a different order each time
        assert apply(api).dashboard_id == first


@pytest.mark.parametrize("page_size", [4, 100])
def test_250_existing_insights_produce_no_duplicate(page_size: int) -> None:
    with PostHogApiServer(key=KEY, project_id=PROJECT, page_size=page_size, seed=page_size) as server:
        for n in range(125):
            server.state.add_insight(f"someone's insight {n}", f"about thing {n}")
        api = PostHogApi(server.url, PROJECT, KEY)
        apply(api)
        for n in range(125, 250):
            server.state.add_insight(f"someone's insight {n}", f"about thing {n}")
        before = len(server.state.mutations)
        for _ in range(3):
            report = apply(api)
            assert report.created == []
            assert report.updated == []
        assert len(server.state.mutations) == before
        assert len(server.state.insights) == 250 + len(METRICS)


def test_listings_without_a_stable_order_are_read_until_complete() -> None:
    with PostHogApiServer(key=KEY, project_id=PROJECT, page_size=4, seed=3) as server:
        for n in range(30):
            server.state.add_dashboard(f"dashboard {n}")
        api = PostHogApi(server.url, PROJECT, KEY)
        # One pass of offset pages over a shifting order misses some and repeats others...
        seen: list[int] = []
        page = api.call("GET", "/dashboards/?limit=4")
        while True:
            seen += [d["id"] for d in page["results"]]
            if not page["next"]:
                break
            page = api.call("GET", "/dashboards/?" + page["next"].split("?", 1)[1])
        assert len(set(seen)) < 30
        # ...so list_all reads again until it has every one, each once.
        listed = api.list_all("/dashboards/")
        assert sorted(d["id"] for d in listed) == sorted(server.state.dashboards)


# -- hostile or odd servers -------------------------------------------------------------------------------


def test_a_listing_that_never_completes_is_an_error_not_a_duplicate() -> None:
    calls: list[tuple[str, str]] = []

    def transport(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        calls.append((method, path))
        return 200, {"count": 5, "next": None, "results": [{"id": 1, "description": DASHBOARD_MARKER}]}

    with pytest.raises(DashboardApiError, match="kept changing"):
        apply(PostHogApi("http://127.0.0.1:9", PROJECT, KEY, transport=transport))
    assert len(calls) == MAX_PASSES
    assert all(method == "GET" for method, _ in calls)


def test_a_next_link_that_repeats_is_an_error_not_a_hang() -> None:
    def transport(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        return 200, {"count": 99, "next": "http://elsewhere.invalid/x/?offset=4&limit=4", "results": []}

    with pytest.raises(DashboardApiError, match="never ends"):
        PostHogApi("http://127.0.0.1:9", PROJECT, KEY, transport=transport).list_all("/dashboards/")


@pytest.mark.parametrize("answer", [None, [], {"results": "nope"}, "text"])
def test_a_listing_that_is_not_a_page_is_one_line(answer: Any) -> None:
    def transport(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        return 200, answer

    with pytest.raises(DashboardApiError, match="not a paginated list"):
        PostHogApi("http://127.0.0.1:9", PROJECT, KEY, transport=transport).list_all("/insights/")


def test_insight_membership_comes_from_tiles_when_dashboards_is_left_out() -> None:
    """An older server may ignore include_dashboards: the live tiles still say where an insight is."""
    patches: list[dict[str, Any]] = []
    wanted = {m.key: insight_payload(m) for m in METRICS}

    def transport(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if method == "PATCH":
            assert body is not None
            patches.append(body)
            return 200, {}
        if path.startswith("/dashboards/"):
            return 200, {"count": 1, "next": None, "results": [{"id": 5, **_dashboard()}]}
        results = [
            {
                "id": 10 + n,
                **payload,
                "dashboard_tiles": [
                    {"dashboard_id": 8, "deleted": False},
                    {"dashboard_id": 5, "deleted": True},
                ],
            }
            for n, payload in enumerate(wanted.values())
        ]
        return 200, {"count": len(results), "next": None, "results": results}

    apply(PostHogApi("http://127.0.0.1:9", PROJECT, KEY, transport=transport))
    assert patches == [{"dashboards": [5, 8]}] * len(METRICS)


def test_insight_without_any_membership_is_not_patched_blind() -> None:
    def transport(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        assert method == "GET"
        if path.startswith("/dashboards/"):
            return 200, {"count": 1, "next": None, "results": [{"id": 5, **_dashboard()}]}
        result = {"id": 10, **insight_payload(METRICS[0])}
        return 200, {"count": 1, "next": None, "results": [result]}

    with pytest.raises(DashboardApiError, match="refusing to change its dashboards blind"):
        apply(PostHogApi("http://127.0.0.1:9", PROJECT, KEY, transport=transport))


def _dashboard() -> dict[str, Any]:
    return dict(export_payloads()["dashboard"])


def test_the_fake_refuses_what_posthog_refuses(api_server: PostHogApiServer) -> None:
    api = PostHogApi(api_server.url, PROJECT, KEY)
    apply(api)
    payload = insight_payload(METRICS[0])
    payload["query"]["chartSettings"]["xAxis"]["colour"] = "red"
    with pytest.raises(DashboardApiError) as refused:
        api.call("POST", "/insights/", payload)
    assert str(refused.value) == (
        "PostHog answered HTTP 400 to POST /insights/: "
        "query.chartSettings.xAxis.colour: Extra inputs are not permitted"
    )
    assert "\n" not in str(refused.value)


def test_every_exported_query_fits_posthogs_schema() -> None:
    for insight in export_payloads()["insights"]:
        assert schema_problem(insight["query"], DATA_VISUALIZATION_NODE) is None
    assert (
        schema_problem({"kind": "DataVisualizationNode"}, DATA_VISUALIZATION_NODE)
        == "query.source: Field required"
    )


# -- what the CLI says ----------------------------------------------------------------------------------


def test_a_refused_key_is_one_line(api_server: PostHogApiServer) -> None:
    result = cli_apply(api_server, key="phx_wrong")
    assert result.exit_code == 1
    assert result.stderr.startswith("analytics: error: PostHog refused the personal API key (HTTP 401)")
    assert result.stderr.count("\n") == 1
    assert api_server.state.mutations == []


@pytest.mark.parametrize(
    ("scopes", "missing"),
    [
        ({"dashboard:read", "insight:read"}, "dashboard:write"),
        ({"dashboard:write", "insight:read"}, "insight:write"),
        ({"insight:write"}, "dashboard:read"),
    ],
)
def test_a_missing_scope_is_named_in_one_line(scopes: set[str], missing: str) -> None:
    with PostHogApiServer(key=KEY, project_id=PROJECT, scopes=scopes) as server:
        result = cli_apply(server)
    assert result.exit_code == 1
    assert result.stderr == (
        f"analytics: error: the personal API key lacks the scope {missing} (HTTP 403): "
        "add it to the key in PostHog's personal API key settings\n"
    )
    assert "refused the personal API key" not in result.stderr


def test_a_project_the_key_may_not_use_is_one_line() -> None:
    with PostHogApiServer(key=KEY, project_id=PROJECT, other_projects=[8], key_projects=[8]) as server:
        result = cli_apply(server)
        assert server.state.mutations == []
    assert result.exit_code == 1
    assert result.stderr == (
        f"analytics: error: the personal API key has no access to project {PROJECT} (HTTP 403): "
        "allow this project for the key, or check --project-id\n"
    )


def test_a_hostile_403_detail_stays_one_short_line() -> None:
    def transport(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        return 403, {"detail": "nope\n\x1b[31mred\x1b[0m\r\n" + "x" * 5000}

    with pytest.raises(DashboardApiError) as refused:
        PostHogApi("http://127.0.0.1:9", PROJECT, KEY, transport=transport).call("GET", "/dashboards/")
    message = str(refused.value)
    assert message.startswith("PostHog forbade the request (HTTP 403): nope [31mred")
    assert "\n" not in message
    assert "\x1b" not in message
    assert len(message) < 300


def test_a_wrong_project_is_one_line(api_server: PostHogApiServer) -> None:
    result = cli_apply(api_server, project=999)
    assert result.exit_code == 1
    assert "check --project-id" in result.stderr
    assert result.stderr.count("\n") == 1


def test_apply_without_a_key_says_which_variable(api_server: PostHogApiServer) -> None:
    result = cli_apply(api_server, key="")
    assert result.exit_code == 1
    assert "POSTHOG_PERSONAL_API_KEY" in result.stderr


# -- what is exported ---------------------------------------------------------------------------------


def test_export_prints_every_payload() -> None:
    result = runner.invoke(app, ["dashboards", "export"])
    assert result.exit_code == 0
    exported = json.loads(result.stdout)
    assert exported == json.loads(json.dumps(export_payloads()))
    assert [i["query"]["source"]["query"] for i in exported["insights"]] == [m.hogql for m in METRICS]


def test_every_exported_insight_names_its_axes() -> None:
    exported = export_payloads()["insights"]
    for metric, insight in zip(METRICS, exported, strict=True):
        settings = insight["query"]["chartSettings"]
        assert settings["xAxis"]["column"] == metric.x
        assert metric.x in metric.columns
        series = [axis["column"] for axis in settings["yAxis"]]
        assert series[0] == metric.value, metric.key  # the metric's value is its first y series
        assert series == list(metric.y)
        assert metric.x not in series
        for axis in settings["yAxis"]:
            assert axis["settings"]["display"]["label"] == metric.column(axis["column"]).label
            assert axis["settings"]["formatting"] == metric.column(axis["column"]).fmt.to_posthog()
        table = [c["column"] for c in insight["query"]["tableSettings"]["columns"]]
        assert table == list(metric.columns)
    # the insight the issue caught plotting `calls`
    assert exported[[m.key for m in METRICS].index("tool_failure_rate")]["query"]["chartSettings"]["yAxis"][
        0
    ] == {
        "column": "failure_rate",
        "settings": {
            "display": {"label": "Failure rate"},
            "formatting": {"style": "number", "decimalPlaces": 3},
        },
    }


# What each chart is about, written from the metric's title rather than read back from the code:
# the first y series PostHog plots must be this column, and the query must select it.
VALUE_COLUMNS = {
    "sessions_per_day": "sessions",
    "sessions_per_week": "sessions",
    "proposal_outcomes": "approval_rate",
    "review_time": "p50_ms",
    "chat_latency_by_model": "p50_s",
    "tool_failure_rate": "failure_rate",
    "errors_by_type": "errors",
    "crash_free_sessions": "crash_free_rate",
    "weekly_active_installs": "installs",
}


def test_each_charts_first_y_series_is_the_metrics_own_value() -> None:
    exported = export_payloads()["insights"]
    assert {m.key for m in METRICS} == set(VALUE_COLUMNS)
    for metric, insight in zip(METRICS, exported, strict=True):
        expected = VALUE_COLUMNS[metric.key]
        assert insight["query"]["chartSettings"]["yAxis"][0]["column"] == expected, metric.key
        assert re.search(rf"\bAS {expected}\b", insight["query"]["source"]["query"]), metric.key
