"""The PM metrics: every HogQL query parses with PostHog's own parser, and `analytics report` on a
synthetic archive gives exactly the numbers worked out by hand below."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from analytics.metrics import METRICS, Metric, quantile
from analytics_cli.main import app
from tests.hogql import parse_select

runner = CliRunner()


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.key)
def test_every_metric_query_parses_with_posthogs_parser(metric: Metric) -> None:
    ast = parse_select(metric.hogql)
    assert ast["node"] == "SelectQuery"
    assert len(ast["select"]) == len(metric.columns)  # one column per column the report shows


def test_the_parser_check_is_not_vacuous() -> None:
    with pytest.raises(ValueError, match="SyntaxError"):
        parse_select("SELECT countIf(event = 'x' FROM events")


def test_metric_keys_and_columns_are_unique() -> None:
    assert len({m.key for m in METRICS}) == len(METRICS) == 9


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
    lines.insert(10, lines[9])
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
