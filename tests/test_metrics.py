"""The PM metrics: every HogQL query parses with PostHog's own parser and carries a LIMIT, `analytics
report` on a synthetic archive gives exactly the numbers worked out by hand below, and the report and
the HogQL put events near midnight in the same UTC day and week whatever the project's time zone."""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from analytics.metrics import (
    COUNT,
    METRICS,
    METRICS_BY_KEY,
    MILLISECONDS,
    RATIO,
    SECONDS,
    Format,
    Metric,
    quantile,
)
from analytics_cli.main import app
from tests.hogql import aliased, evaluate_time, events_select, parse_select, selects
from tests.test_dashboards import VALUE_COLUMNS

runner = CliRunner()


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.key)
def test_every_metric_query_parses_with_posthogs_parser(metric: Metric) -> None:
    ast = parse_select(metric.hogql)
    assert ast["node"] == "SelectQuery"
    assert len(ast["select"]) == len(metric.columns)  # one column per column the report shows


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.key)
def test_every_query_carries_a_limit_that_fits_its_chart(metric: Metric) -> None:
    """PostHog cuts an unlimited query at 100 rows, and with no date range those are the oldest."""
    ast = parse_select(metric.hogql)
    assert ast["limit"] == {**ast["limit"], "node": "Constant", "value": metric.limit}
    assert metric.limit <= 100
    for select in selects(ast):
        if select.get("order_by"):
            assert select["limit"]["value"] == metric.limit  # every ordered cut is the same size
    if metric.latest:  # a time series keeps its latest buckets, shown oldest first
        inner = events_select(ast)
        assert [o["order"] for o in inner["order_by"]] == ["DESC"]
        assert [o["order"] for o in ast["order_by"]] == ["ASC"]
        assert inner["order_by"][0]["expr"]["chain"] == [metric.x]


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.key)
def test_every_query_reads_time_in_utc(metric: Metric) -> None:
    """``timestamp`` is in the project's time zone in HogQL: each use is converted to UTC first."""
    text = re.sub(r"toTimeZone\(timestamp, 'UTC'\)", "", metric.hogql)
    assert "timestamp" not in text


def test_the_parser_check_is_not_vacuous() -> None:
    with pytest.raises(ValueError, match="SyntaxError"):
        parse_select("SELECT countIf(event = 'x' FROM events")


def test_metric_keys_and_columns_are_unique() -> None:
    assert len({m.key for m in METRICS}) == len(METRICS) == 9
    for metric in METRICS:
        assert len(set(metric.columns)) == len(metric.columns)
        assert metric.x in metric.columns
        assert set(metric.y) <= set(metric.columns)


@pytest.mark.parametrize(
    ("values", "level", "expected"),
    [([1, 2, 3, 4], 0.5, 2.5), ([1000, 2000, 4000, 9000], 0.9, 7500), ([5], 0.95, 5), ([], 0.5, None)],
)
def test_quantile_interpolates_like_clickhouse(
    values: list[float], level: float, expected: float | None
) -> None:
    assert quantile(values, level) == (None if expected is None else pytest.approx(expected))


# -- a synthetic archive with known answers ---------------------------------------------------------

A, B = "install-a", "install-b"


def message(event: str, when: str, distinct_id: str = A, **properties: Any) -> dict[str, Any]:
    return {
        "event": event,
        "distinct_id": distinct_id,
        "uuid": str(uuid.uuid4()),
        "timestamp": f"{when}+00:00",
        "properties": properties,
    }


def synthetic_archive() -> list[dict[str, Any]]:
    events = [
        # Sessions: A on Mon 2 March and Tue 3 March; B on Tue 3 March and Mon 9 March (the next week).
        message("session_started", "2026-03-02T10:00:00", A, **{"$session_id": "s1"}),
        message("session_started", "2026-03-03T09:00:00", A, **{"$session_id": "s2"}),
        message("session_started", "2026-03-03T18:00:00", B, **{"$session_id": "s3"}),
        message("session_started", "2026-03-09T08:00:00", B, **{"$session_id": "s4"}),
        message("session_ended", "2026-03-02T11:00:00", A, end_reason="shutdown"),
        message("session_ended", "2026-03-03T10:00:00", A, end_reason="crash"),
        message("session_ended", "2026-03-03T19:00:00", B, end_reason="shutdown"),
        message("session_ended", "2026-03-09T09:00:00", B, end_reason="shutdown"),
        # Proposals: five created; approved after 1 s, 2 s and 9 s, rejected after 4 s; one undecided.
        *[message("proposal_created", "2026-03-02T10:05:00", proposal_id=f"p{n}") for n in range(5)],
        message("proposal_decided", "2026-03-02T10:06:00", decision="approved", review_duration_ms=1000),
        message("proposal_decided", "2026-03-02T10:07:00", decision="approved", review_duration_ms=2000),
        message("proposal_decided", "2026-03-02T10:08:00", decision="approved", review_duration_ms=9000),
        message("proposal_decided", "2026-03-02T10:09:00", decision="rejected", review_duration_ms=4000),
        # Chat: gpt-4o answered in 1, 2, 3 and 10 s; claude once in 0.5 s.
        *[
            message("$ai_generation", "2026-03-03T09:10:00", **{"$ai_model": "gpt-4o", "$ai_latency": s})
            for s in (1.0, 2.0, 3.0, 10.0)
        ],
        message(
            "$ai_generation", "2026-03-03T09:11:00", **{"$ai_model": "claude-sonnet-4", "$ai_latency": 0.5}
        ),
        # Tools: read_file 4 calls (1 failed), run_tests 2 (both failed), grep 1 (fine).
        *[
            message(
                "$ai_span", "2026-03-03T09:12:00", **{"$ai_span_name": "read_file", "$ai_is_error": failed}
            )
            for failed in (False, False, True, False)
        ],
        *[
            message("$ai_span", "2026-03-03T09:13:00", **{"$ai_span_name": "run_tests", "$ai_is_error": True})
            for _ in range(2)
        ],
        message("$ai_span", "2026-03-03T09:14:00", **{"$ai_span_name": "grep", "$ai_is_error": False}),
        # Errors: two ValueErrors, one TimeoutError.
        message("$exception", "2026-03-03T09:15:00", error_type="ValueError"),
        message("$exception", "2026-03-03T09:16:00", error_type="ValueError"),
        message("$exception", "2026-03-03T09:17:00", error_type="TimeoutError"),
    ]
    return events


EXPECTED = {
    "sessions_per_day": [
        {"day": "2026-03-02", "sessions": 1},
        {"day": "2026-03-03", "sessions": 2},
        {"day": "2026-03-09", "sessions": 1},
    ],
    "sessions_per_week": [{"week": "2026-03-02", "sessions": 3}, {"week": "2026-03-09", "sessions": 1}],
    "proposal_outcomes": [
        {"created": 5, "approved": 3, "rejected": 1, "approved_per_created": 0.6, "approval_rate": 0.75}
    ],
    # mean (1000+2000+4000+9000)/4 = 4000; p50 at 1.5 -> 2000 + 0.5*2000 = 3000; p90 at 2.7 -> 4000 + 0.7*5000
    "review_time": [{"decisions": 4, "mean_ms": 4000.0, "p50_ms": 3000.0, "p90_ms": pytest.approx(7500.0)}],
    # gpt-4o: p50 at 1.5 -> 2.5; p95 at 2.85 -> 3 + 0.85*7 = 8.95
    "chat_latency_by_model": [
        {"model": "gpt-4o", "turns": 4, "p50_s": 2.5, "p95_s": pytest.approx(8.95)},
        {"model": "claude-sonnet-4", "turns": 1, "p50_s": 0.5, "p95_s": 0.5},
    ],
    "tool_failure_rate": [
        {"tool": "run_tests", "calls": 2, "failures": 2, "failure_rate": 1.0},
        {"tool": "read_file", "calls": 4, "failures": 1, "failure_rate": 0.25},
        {"tool": "grep", "calls": 1, "failures": 0, "failure_rate": 0.0},
    ],
    "errors_by_type": [
        {"error_type": "ValueError", "errors": 2},
        {"error_type": "TimeoutError", "errors": 1},
    ],
    "crash_free_sessions": [{"sessions": 4, "crashed": 1, "crash_free_rate": 0.75}],
    "weekly_active_installs": [{"week": "2026-03-02", "installs": 2}, {"week": "2026-03-09", "installs": 1}],
}


def write_archive(state_dir: Path, messages: list[dict[str, Any]]) -> None:
    archive = state_dir / "archive"
    archive.mkdir(parents=True)
    lines = [json.dumps(m, separators=(",", ":")) for m in messages]
    # At-least-once delivery can repeat a line; and a crash can leave half of one.
    lines.insert(min(10, len(lines)), lines[min(9, len(lines) - 1)])
    (archive / "2026-03-02.jsonl").write_text("\n".join(lines) + "\n" + '{"event": "cut sh')


def test_report_gives_the_hand_computed_numbers(state_dir: Path) -> None:
    write_archive(state_dir, synthetic_archive())
    result = runner.invoke(app, ["report", "--json", "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == EXPECTED


def test_report_table_and_html_chart(state_dir: Path, tmp_path: Path) -> None:
    write_archive(state_dir, synthetic_archive())
    page = tmp_path / "report.html"
    result = runner.invoke(
        app, ["report", "--html", str(page), "--state-dir", str(state_dir)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "Chat latency by model" in result.stdout
    assert "run_tests" in result.stdout
    text = page.read_text()
    assert text.startswith("<!doctype html>")
    assert text.count("<svg") >= 5  # a chart for each metric with more than one row
    assert "<script" not in text


def test_report_on_an_empty_machine(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "--json", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["sessions_per_day"] == []
    assert data["proposal_outcomes"] == [
        {"created": 0, "approved": 0, "rejected": 0, "approved_per_created": None, "approval_rate": None}
    ]


def test_report_reads_what_the_demo_delivered(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    assert runner.invoke(app, ["demo", "--json", "--state-dir", str(state)]).exit_code == 0
    data = json.loads(runner.invoke(app, ["report", "--json", "--state-dir", str(state)]).stdout)
    assert data["sessions_per_day"][0]["sessions"] == 1
    assert data["proposal_outcomes"][0]["created"] == 4
    assert data["review_time"][0]["decisions"] == 4
    assert sum(row["turns"] for row in data["chat_latency_by_model"]) == 4
    assert data["crash_free_sessions"] == [{"sessions": 1, "crashed": 0, "crash_free_rate": 1.0}]


def test_each_metrics_y_series_is_its_value_column_and_numeric(state_dir: Path) -> None:
    write_archive(state_dir, synthetic_archive())
    data = json.loads(runner.invoke(app, ["report", "--json", "--state-dir", str(state_dir)]).stdout)
    assert {m.key: m.value for m in METRICS} == VALUE_COLUMNS
    for metric in METRICS:
        assert metric.y[0] == metric.value
        assert data[metric.key], metric.key
        for row in data[metric.key]:
            for column in metric.y:
                assert isinstance(row[column], int | float), (metric.key, column)
                assert not isinstance(row[column], bool), (metric.key, column)


def test_the_html_charts_plot_the_insights_series(state_dir: Path, tmp_path: Path) -> None:
    write_archive(state_dir, synthetic_archive())
    page = tmp_path / "report.html"
    assert runner.invoke(app, ["report", "--html", str(page), "--state-dir", str(state_dir)]).exit_code == 0
    text = page.read_text()
    charted = re.findall(r'<svg role="img" aria-label="([^"]*)" data-column="([^"]*)"', text)
    expected = [
        (m.column(c).label, c) for m in METRICS if m.display != "ActionsTable" for c in m.y
    ]  # the same series, in the same order, as the PostHog insights
    assert charted == expected
    assert "0.25" in text
    assert "8.95 s" in text
    assert "7,500 ms" in text


@pytest.mark.parametrize(
    ("fmt", "value", "shown"),
    [
        (COUNT, 1234, "1,234"),
        (COUNT, 1234.5, "1,235"),  # half away from zero, as the browser rounds (Python would say 1,234)
        (RATIO, 0.0005, "0.001"),
        (RATIO, 1.0005, "1"),  # 1.0005 is 1.000499999... as a float
        (COUNT, -2.5, "-3"),
        (RATIO, 0.25, "0.25"),
        (RATIO, 1.0, "1"),
        (RATIO, 2 / 3, "0.667"),
        (MILLISECONDS, 7500.0, "7,500 ms"),
        (SECONDS, 8.95, "8.95 s"),
        (SECONDS, None, "-"),
        (Format("percent", 1), 12.34, "12.3%"),
        (Format("none", 2, prefix="$"), 3.14159, "$3.14"),
        (Format(), "gpt-4o", "gpt-4o"),
    ],
)
def test_formats_render_as_posthog_shows_them(fmt: Format, value: Any, shown: str) -> None:
    assert fmt.render(value) == shown


def test_reports_keep_the_rows_the_queries_keep() -> None:
    start = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    days = [
        message(
            "session_started",
            (start + timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%S"),
            **{"$session_id": f"s{n}"},
        )
        for n in range(120)
    ]
    tools = [
        message(
            "$ai_span", "2026-03-03T09:12:00", **{"$ai_span_name": f"tool{n:02d}", "$ai_is_error": n % 2 == 0}
        )
        for n in range(40)
    ]
    per_day = METRICS_BY_KEY["sessions_per_day"].run(days + tools)
    assert len(per_day.rows) == 90
    assert per_day.rows[0][0] == (start + timedelta(days=30)).date().isoformat()  # the latest 90 days
    assert per_day.rows[-1][0] == (start + timedelta(days=119)).date().isoformat()
    per_tool = METRICS_BY_KEY["tool_failure_rate"].run(days + tools)
    assert len(per_tool.rows) == 25
    assert all(row[3] == 1.0 for row in per_tool.rows[:20])  # the worst first


# -- time zones: the report and the HogQL agree on day and week boundaries ------------------------------

# Instants around the UTC midnight between Sunday 8 and Monday 9 March 2026 (a US DST switch day too),
# and around the UTC midnight between Saturday 7 and Sunday 8.
NEAR_MIDNIGHT = [
    datetime(2026, 3, 7, 23, 59, 59, tzinfo=timezone.utc),
    datetime(2026, 3, 8, 0, 0, 0, tzinfo=timezone.utc),
    datetime(2026, 3, 8, 0, 30, 0, tzinfo=timezone.utc),
    datetime(2026, 3, 8, 23, 30, 0, tzinfo=timezone.utc),
    datetime(2026, 3, 8, 23, 59, 59, tzinfo=timezone.utc),
    datetime(2026, 3, 9, 0, 0, 0, tzinfo=timezone.utc),
    datetime(2026, 3, 9, 0, 0, 1, tzinfo=timezone.utc),
    datetime(2026, 3, 9, 7, 30, 0, tzinfo=timezone.utc),
]
TIME_ZONES = ["America/Los_Angeles", "Asia/Kolkata", "Pacific/Kiritimati", "UTC"]
TIME_SERIES = [m for m in METRICS if m.latest]


def near_midnight_archive(project_tz: str) -> list[dict[str, Any]]:
    """Session starts stamped by clients in the project's zone (the offset is in the timestamp)."""
    events = []
    for n, when in enumerate(NEAR_MIDNIGHT):
        local = when.astimezone(ZoneInfo(project_tz)).isoformat()
        event = message("session_started", "x", f"install-{n % 3}", **{"$session_id": f"s{n}"})
        event["timestamp"] = local
        events.append(event)
    return events


def hogql_buckets(metric: Metric, project_tz: str) -> list[dict[str, Any]]:
    """The metric's rows as its HogQL would compute them in a project in ``project_tz``: the time
    bucket evaluated from the parsed query, then the distinct count the query takes."""
    bucket = aliased(events_select(parse_select(metric.hogql)), metric.x)
    counted: dict[date, set[str]] = defaultdict(set)
    for n, when in enumerate(NEAR_MIDNIGHT):
        key = evaluate_time(bucket, when, project_tz)
        counted[key].add(f"install-{n % 3}" if metric.key == "weekly_active_installs" else f"s{n}")
    return [{metric.x: key.isoformat(), metric.value: len(ids)} for key, ids in sorted(counted.items())]


@pytest.mark.parametrize("project_tz", TIME_ZONES)
def test_report_and_hogql_agree_on_days_and_weeks_near_midnight(project_tz: str, state_dir: Path) -> None:
    write_archive(state_dir, near_midnight_archive(project_tz))
    data = json.loads(runner.invoke(app, ["report", "--json", "--state-dir", str(state_dir)]).stdout)
    for metric in TIME_SERIES:
        assert data[metric.key] == hogql_buckets(metric, project_tz), (metric.key, project_tz)
    # the UTC answer, worked out by hand: Sat 7, Sun 8 (four), Mon 9 (three); weeks from Mon 2 and Mon 9
    assert [row["sessions"] for row in data["sessions_per_day"]] == [1, 4, 3]
    assert data["sessions_per_week"] == [
        {"week": "2026-03-02", "sessions": 5},
        {"week": "2026-03-09", "sessions": 3},
    ]


def test_the_time_zone_check_is_not_vacuous() -> None:
    """Evaluated the way the queries read before (the project's zone), the buckets move."""
    local_day = parse_select("SELECT toStartOfDay(timestamp) AS day FROM events")["select"][0]["expr"]
    local_week = parse_select("SELECT toStartOfWeek(timestamp, 1) AS week FROM events")["select"][0]["expr"]
    monday_utc = datetime(2026, 3, 9, 0, 30, tzinfo=timezone.utc)
    assert evaluate_time(local_day, monday_utc, "America/Los_Angeles").date() == date(2026, 3, 8)
    assert evaluate_time(local_week, monday_utc, "America/Los_Angeles") == date(2026, 3, 2)
    sunday_start = parse_select("SELECT toStartOfWeek(timestamp) AS week FROM events")["select"][0]["expr"]
    assert evaluate_time(sunday_start, monday_utc, "UTC") == date(2026, 3, 8)
    with pytest.raises(NotImplementedError):
        evaluate_time(
            parse_select("SELECT toStartOfMonth(timestamp) FROM events")["select"][0], monday_utc, "UTC"
        )


def test_events_without_a_readable_timestamp_have_no_day(state_dir: Path) -> None:
    events = [
        message("session_started", "2026-03-08T23:30:00", A, **{"$session_id": "s1"}),
        message("session_started", "2026-03-08T23:40:00", B, **{"$session_id": "s2"}),
        message("session_ended", "2026-03-08T23:50:00", A, end_reason="crash"),
    ]
    events[0]["timestamp"] = "2026-03-08T23:30:00"  # no offset: UTC, as PostHog reads it
    events[1]["timestamp"] = "yesterday-ish"
    del events[2]["timestamp"]
    write_archive(state_dir, events)
    result = runner.invoke(app, ["report", "--json", "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["sessions_per_day"] == [{"day": "2026-03-08", "sessions": 1}]
    assert data["weekly_active_installs"] == [{"week": "2026-03-02", "installs": 1}]
    assert data["crash_free_sessions"] == [{"sessions": 1, "crashed": 1, "crash_free_rate": 0.0}]


def test_hostile_labels_are_escaped_in_the_html(state_dir: Path, tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script>'
    events = [
        message("$ai_generation", "2026-03-03T09:10:00", **{"$ai_model": hostile, "$ai_latency": 1.0}),
        message("$ai_generation", "2026-03-03T09:10:00", **{"$ai_model": "ok", "$ai_latency": 2.0}),
        message("$exception", "2026-03-03T09:15:00", error_type='"><img src=x onerror=alert(1)>'),
    ]
    write_archive(state_dir, events)
    page = tmp_path / "report.html"
    assert runner.invoke(app, ["report", "--html", str(page), "--state-dir", str(state_dir)]).exit_code == 0
    text = page.read_text()
    assert "<script" not in text
    assert "<img" not in text
    assert "&lt;script&gt;" in text
