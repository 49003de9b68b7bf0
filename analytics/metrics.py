"""The product manager's metrics, each defined once: its HogQL (a PostHog insight) and the same
computation over the local archive (``analytics report``), side by side, so they cannot drift apart
unnoticed.

Both sides follow ClickHouse's semantics where it matters: weeks start on Monday
(``toStartOfWeek(t, 1)``), days are UTC, and quantiles interpolate linearly between the two nearest
values, as ClickHouse's ``quantile`` does below its 8,192-value reservoir. ``{filters}`` lets a
dashboard's date range apply to every insight.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

Message = dict[str, Any]
Row = tuple[Any, ...]


@dataclass(frozen=True)
class MetricResult:
    key: str
    title: str
    columns: tuple[str, ...]
    rows: list[Row]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    description: str
    columns: tuple[str, ...]
    hogql: str
    compute: Callable[[Sequence[Message]], list[Row]]
    display: str = "ActionsTable"  # how PostHog draws it: ActionsTable, ActionsLineGraph, ActionsBar

    def run(self, messages: Sequence[Message]) -> MetricResult:
        return MetricResult(self.key, self.title, self.columns, self.compute(messages))


# -- shared helpers, the Python side of the ClickHouse functions used ---------------------------------


def _props(message: Message) -> dict[str, Any]:
    properties = message.get("properties")
    return properties if isinstance(properties, dict) else {}


def _of(messages: Iterable[Message], *names: str) -> list[Message]:
    return [m for m in messages if m.get("event") in names]


def _when(message: Message) -> datetime:
    return datetime.fromisoformat(str(message["timestamp"]).replace("Z", "+00:00")).astimezone(timezone.utc)


def _day(message: Message) -> date:
    return _when(message).date()


def _week(message: Message) -> date:
    """``toStartOfWeek(timestamp, 1)``: the Monday of the event's UTC week."""
    day = _day(message)
    return day - timedelta(days=day.weekday())


def quantile(values: Sequence[float], level: float) -> float | None:
    """ClickHouse ``quantile(level)`` for up to 8,192 values: linear interpolation at level * (n - 1)."""
    if not values:
        return None
    ordered = sorted(values)
    position = level * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _numbers(messages: Iterable[Message], key: str) -> list[float]:
    values = []
    for message in messages:
        value = _props(message).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            values.append(float(value))
    return values


# -- the metrics ----------------------------------------------------------------------------------------


def _sessions_per_day(messages: Sequence[Message]) -> list[Row]:
    sessions: dict[date, set[str]] = defaultdict(set)
    for m in _of(messages, "session_started"):
        sessions[_day(m)].add(str(_props(m).get("$session_id")))
    return [(day.isoformat(), len(ids)) for day, ids in sorted(sessions.items())]


def _sessions_per_week(messages: Sequence[Message]) -> list[Row]:
    sessions: dict[date, set[str]] = defaultdict(set)
    for m in _of(messages, "session_started"):
        sessions[_week(m)].add(str(_props(m).get("$session_id")))
    return [(week.isoformat(), len(ids)) for week, ids in sorted(sessions.items())]


def _proposal_outcomes(messages: Sequence[Message]) -> list[Row]:
    created = len(_of(messages, "proposal_created"))
    decisions = Counter(_props(m).get("decision") for m in _of(messages, "proposal_decided"))
    approved, rejected = decisions["approved"], decisions["rejected"]
    return [(created, approved, rejected, _ratio(approved, created), _ratio(approved, approved + rejected))]


def _review_time(messages: Sequence[Message]) -> list[Row]:
    values = _numbers(_of(messages, "proposal_decided"), "review_duration_ms")
    mean = sum(values) / len(values) if values else None
    return [(len(values), mean, quantile(values, 0.5), quantile(values, 0.9))]


def _chat_latency_by_model(messages: Sequence[Message]) -> list[Row]:
    by_model: dict[str, list[float]] = defaultdict(list)
    for m in _of(messages, "$ai_generation"):
        latency = _props(m).get("$ai_latency")
        if isinstance(latency, int | float) and not isinstance(latency, bool):
            by_model[str(_props(m).get("$ai_model"))].append(float(latency))
    rows = [(model, len(v), quantile(v, 0.5), quantile(v, 0.95)) for model, v in by_model.items()]
    return sorted(rows, key=lambda row: (-row[1], row[0]))


def _tool_failure_rate(messages: Sequence[Message]) -> list[Row]:
    calls: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for m in _of(messages, "$ai_span"):
        tool = str(_props(m).get("$ai_span_name"))
        calls[tool] += 1
        failures[tool] += _props(m).get("$ai_is_error") is True
    rows = [(tool, calls[tool], failures[tool], failures[tool] / calls[tool]) for tool in calls]
    return sorted(rows, key=lambda row: (-row[3], -row[1], row[0]))


def _errors_by_type(messages: Sequence[Message]) -> list[Row]:
    counts = Counter(str(_props(m).get("error_type")) for m in _of(messages, "$exception"))
    return sorted(counts.items(), key=lambda row: (-row[1], row[0]))


def _crash_free_sessions(messages: Sequence[Message]) -> list[Row]:
    ended = _of(messages, "session_ended")
    crashed = sum(1 for m in ended if _props(m).get("end_reason") == "crash")
    return [(len(ended), crashed, _ratio(len(ended) - crashed, len(ended)))]


def _weekly_active_installs(messages: Sequence[Message]) -> list[Row]:
    installs: dict[date, set[str]] = defaultdict(set)
    for m in _of(messages, "session_started"):
        installs[_week(m)].add(str(m.get("distinct_id")))
    return [(week.isoformat(), len(ids)) for week, ids in sorted(installs.items())]


METRICS: tuple[Metric, ...] = (
    Metric(
        "sessions_per_day",
        "Sessions per day",
        "App sessions started each day (UTC).",
        ("day", "sessions"),
        "SELECT toStartOfDay(timestamp) AS day, count(DISTINCT properties.$session_id) AS sessions\n"
        "FROM events WHERE event = 'session_started' AND {filters}\nGROUP BY day ORDER BY day",
        _sessions_per_day,
        "ActionsLineGraph",
    ),
    Metric(
        "sessions_per_week",
        "Sessions per week",
        "App sessions started each week (weeks start on Monday, UTC).",
        ("week", "sessions"),
        "SELECT toStartOfWeek(timestamp, 1) AS week, count(DISTINCT properties.$session_id) AS sessions\n"
        "FROM events WHERE event = 'session_started' AND {filters}\nGROUP BY week ORDER BY week",
        _sessions_per_week,
        "ActionsBar",
    ),
    Metric(
        "proposal_outcomes",
        "Proposals: created, approved, rejected",
        "How many proposed changes users approve: per proposal created, and per decision taken.",
        ("created", "approved", "rejected", "approved_per_created", "approval_rate"),
        "SELECT countIf(event = 'proposal_created') AS created,\n"
        "    countIf(event = 'proposal_decided' AND properties.decision = 'approved') AS approved,\n"
        "    countIf(event = 'proposal_decided' AND properties.decision = 'rejected') AS rejected,\n"
        "    approved / nullIf(created, 0) AS approved_per_created,\n"
        "    approved / nullIf(approved + rejected, 0) AS approval_rate\n"
        "FROM events WHERE event IN ('proposal_created', 'proposal_decided') AND {filters}",
        _proposal_outcomes,
    ),
    Metric(
        "review_time",
        "Proposal review time",
        "Time from a proposal to the user's decision, in milliseconds.",
        ("decisions", "mean_ms", "p50_ms", "p90_ms"),
        "SELECT count() AS decisions, avg(toFloat(properties.review_duration_ms)) AS mean_ms,\n"
        "    quantile(0.5)(toFloat(properties.review_duration_ms)) AS p50_ms,\n"
        "    quantile(0.9)(toFloat(properties.review_duration_ms)) AS p90_ms\n"
        "FROM events WHERE event = 'proposal_decided'\n"
        "    AND isNotNull(properties.review_duration_ms) AND {filters}",
        _review_time,
    ),
    Metric(
        "chat_latency_by_model",
        "Chat latency by model",
        "Seconds from a user's message to the model's answer, by model.",
        ("model", "turns", "p50_s", "p95_s"),
        "SELECT properties.$ai_model AS model, count() AS turns,\n"
        "    quantile(0.5)(toFloat(properties.$ai_latency)) AS p50_s,\n"
        "    quantile(0.95)(toFloat(properties.$ai_latency)) AS p95_s\n"
        "FROM events WHERE event = '$ai_generation' AND {filters}\nGROUP BY model ORDER BY turns DESC, model",
        _chat_latency_by_model,
    ),
    Metric(
        "tool_failure_rate",
        "Tool failure rate",
        "Share of each tool's calls that failed.",
        ("tool", "calls", "failures", "failure_rate"),
        "SELECT properties.$ai_span_name AS tool, count() AS calls,\n"
        "    countIf(toString(properties.$ai_is_error) = 'true') AS failures,\n"
        "    failures / calls AS failure_rate\n"
        "FROM events WHERE event = '$ai_span' AND {filters}\n"
        "GROUP BY tool ORDER BY failure_rate DESC, calls DESC, tool",
        _tool_failure_rate,
        "ActionsBar",
    ),
    Metric(
        "errors_by_type",
        "Errors by type",
        "Exceptions reported, by exception type.",
        ("error_type", "errors"),
        "SELECT properties.error_type AS error_type, count() AS errors\n"
        "FROM events WHERE event = '$exception' AND {filters}\n"
        "GROUP BY error_type ORDER BY errors DESC, error_type",
        _errors_by_type,
        "ActionsBar",
    ),
    Metric(
        "crash_free_sessions",
        "Crash-free sessions",
        "Share of ended sessions that did not end in a crash.",
        ("sessions", "crashed", "crash_free_rate"),
        "SELECT count() AS sessions, countIf(properties.end_reason = 'crash') AS crashed,\n"
        "    (sessions - crashed) / nullIf(sessions, 0) AS crash_free_rate\n"
        "FROM events WHERE event = 'session_ended' AND {filters}",
        _crash_free_sessions,
    ),
    Metric(
        "weekly_active_installs",
        "Weekly active installs",
        "Installs (distinct ids) that started at least one session in the week.",
        ("week", "installs"),
        "SELECT toStartOfWeek(timestamp, 1) AS week, count(DISTINCT distinct_id) AS installs\n"
        "FROM events WHERE event = 'session_started' AND {filters}\nGROUP BY week ORDER BY week",
        _weekly_active_installs,
        "ActionsLineGraph",
    ),
)


def compute_all(messages: Sequence[Message]) -> list[MetricResult]:
    return [metric.run(messages) for metric in METRICS]
