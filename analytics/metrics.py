"""The product manager's metrics, each defined once: its HogQL (a PostHog insight), how PostHog should
draw it, and the same computation over the local archive (``analytics report``), side by side, so they
cannot drift apart unnoticed.

Both sides follow ClickHouse's semantics where it matters:

- Days and weeks are UTC, whatever the PostHog project's time zone. HogQL reads ``timestamp`` in the
  project's zone, so every query converts it first (``toTimeZone(timestamp, 'UTC')``); the report
  converts each archived timestamp to UTC. Weeks start on Monday (``toStartOfWeek(t, 1)``).
- Quantiles interpolate linearly between the two nearest values, as ClickHouse's ``quantile`` does below
  its 8,192-value reservoir.
- Every query ends in a LIMIT that fits its chart (PostHog would otherwise cut at 100 rows, keeping
  the *oldest* days): a time series keeps its latest ``limit`` buckets, a ranking its top ``limit``
  rows, and the report keeps the same rows.

``{filters}`` lets a dashboard's date range apply to every insight; without one it means all time.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

Message = dict[str, Any]
Row = tuple[Any, ...]

# The HogQL of a UTC day and of a UTC week starting on Monday. ``toTimeZone`` with an explicit zone is
# the only time-zone-aware function here, so PostHog adds no project zone behind our back.
DAY_UTC = "toDate(toTimeZone(timestamp, 'UTC'))"
WEEK_UTC = "toStartOfWeek(toTimeZone(timestamp, 'UTC'), 1)"

Style = Literal["none", "number", "short", "percent"]


@dataclass(frozen=True)
class Format:
    """How a value is shown: PostHog's ``ChartSettingsFormatting``, rendered the same way locally."""

    style: Style = "none"
    decimals: int | None = None
    prefix: str = ""
    suffix: str = ""

    def to_posthog(self) -> dict[str, Any]:
        formatting: dict[str, Any] = {"style": self.style}
        if self.decimals is not None:
            formatting["decimalPlaces"] = self.decimals
        if self.prefix:
            formatting["prefix"] = self.prefix
        if self.suffix:
            formatting["suffix"] = self.suffix
        return formatting

    def render(self, value: Any) -> str:
        """As PostHog's data-visualization front end formats a cell (``formatDataWithSettings``), for
        the en-US locale: ``number`` groups thousands and drops trailing zeros. (``short``, which no
        metric uses, is shown like ``none``.)"""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        text = str(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            if self.decimals is not None:
                text = f"{_rounded(value, self.decimals):f}"
            if self.style in ("number", "percent"):
                digits = 3 if self.decimals is None else self.decimals
                text = f"{_rounded(value, digits):,f}"
                if "." in text:
                    text = text.rstrip("0").rstrip(".")
                if self.style == "percent":
                    text += "%"
        return f"{self.prefix}{text}{self.suffix}"


def _rounded(value: float, digits: int) -> Decimal:
    """Rounded as JavaScript's ``toFixed`` and ``Intl.NumberFormat`` do: half away from zero, on the
    float's exact value."""
    return Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


TEXT = Format()
COUNT = Format("number", 0)
RATIO = Format("number", 3)
MILLISECONDS = Format("number", 0, suffix=" ms")
SECONDS = Format("number", 2, suffix=" s")


@dataclass(frozen=True)
class Column:
    name: str
    label: str
    fmt: Format = TEXT


@dataclass(frozen=True)
class Metric:
    """One PM metric. ``x`` is the chart's x axis; ``y`` the plotted series, the first of which is the
    metric's ``value``. ``limit`` bounds the rows: the latest ones for a time series (``latest``),
    the first ones of a ranking otherwise."""

    key: str
    title: str
    description: str
    fields: tuple[Column, ...]
    hogql: str
    compute: Callable[[Sequence[Message]], list[Row]]
    x: str
    y: tuple[str, ...]
    limit: int
    display: str = "ActionsTable"  # how PostHog draws it: ActionsTable, ActionsLineGraph, ActionsBar
    latest: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.fields)

    @property
    def value(self) -> str:
        """The column that carries the metric itself (the first y series)."""
        return self.y[0]

    def column(self, name: str) -> Column:
        return next(column for column in self.fields if column.name == name)

    def run(self, messages: Sequence[Message]) -> MetricResult:
        rows = self.compute(messages)
        kept = rows[-self.limit :] if self.latest else rows[: self.limit]
        return MetricResult(self.key, self.title, self.columns, kept, self)


@dataclass(frozen=True)
class MetricResult:
    key: str
    title: str
    columns: tuple[str, ...]
    rows: list[Row]
    metric: Metric

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def _latest(inner: str, x: str, columns: Sequence[str], limit: int) -> str:
    """The latest ``limit`` buckets of a time series, oldest first (a chart reads left to right)."""
    return (
        f"SELECT {', '.join(columns)} FROM (\n{inner}\nORDER BY {x} DESC LIMIT {limit}\n)\n"
        f"ORDER BY {x} LIMIT {limit}"
    )


# -- shared helpers, the Python side of the ClickHouse functions used ---------------------------------


def _props(message: Message) -> dict[str, Any]:
    properties = message.get("properties")
    return properties if isinstance(properties, dict) else {}


def _of(messages: Iterable[Message], *names: str) -> list[Message]:
    return [m for m in messages if m.get("event") in names]


def _when(message: Message) -> datetime | None:
    """The event's instant in UTC; a timestamp without an offset is read as UTC, as PostHog does.
    None when there is no readable timestamp (such an event has no day or week)."""
    try:
        moment = datetime.fromisoformat(str(message["timestamp"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _day(message: Message) -> date | None:
    """``toDate(toTimeZone(timestamp, 'UTC'))``: the event's UTC day."""
    moment = _when(message)
    return None if moment is None else moment.date()


def _week(message: Message) -> date | None:
    """``toStartOfWeek(toTimeZone(timestamp, 'UTC'), 1)``: the Monday of the event's UTC week."""
    day = _day(message)
    return None if day is None else day - timedelta(days=day.weekday())


def _by(
    bucket: Callable[[Message], date | None], messages: Iterable[Message], key: Callable[[Message], str]
) -> list[Row]:
    """Distinct ``key`` values per time bucket, oldest bucket first."""
    buckets: dict[date, set[str]] = defaultdict(set)
    for message in messages:
        when = bucket(message)
        if when is not None:
            buckets[when].add(key(message))
    return [(when.isoformat(), len(keys)) for when, keys in sorted(buckets.items())]


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
    return _by(_day, _of(messages, "session_started"), lambda m: str(_props(m).get("$session_id")))


def _sessions_per_week(messages: Sequence[Message]) -> list[Row]:
    return _by(_week, _of(messages, "session_started"), lambda m: str(_props(m).get("$session_id")))


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
    return _by(_week, _of(messages, "session_started"), lambda m: str(m.get("distinct_id")))


_SESSIONS = Column("sessions", "Sessions", COUNT)

METRICS: tuple[Metric, ...] = (
    Metric(
        "sessions_per_day",
        "Sessions per day",
        "App sessions started each day (UTC days), the latest 90.",
        (Column("day", "Day (UTC)"), _SESSIONS),
        _latest(
            f"SELECT {DAY_UTC} AS day, count(DISTINCT properties.$session_id) AS sessions\n"
            "FROM events WHERE event = 'session_started' AND {filters}\nGROUP BY day",
            "day",
            ("day", "sessions"),
            90,
        ),
        _sessions_per_day,
        x="day",
        y=("sessions",),
        limit=90,
        display="ActionsLineGraph",
        latest=True,
    ),
    Metric(
        "sessions_per_week",
        "Sessions per week",
        "App sessions started each week (UTC weeks starting on Monday), the latest 52.",
        (Column("week", "Week (UTC, from Monday)"), _SESSIONS),
        _latest(
            f"SELECT {WEEK_UTC} AS week, count(DISTINCT properties.$session_id) AS sessions\n"
            "FROM events WHERE event = 'session_started' AND {filters}\nGROUP BY week",
            "week",
            ("week", "sessions"),
            52,
        ),
        _sessions_per_week,
        x="week",
        y=("sessions",),
        limit=52,
        display="ActionsBar",
        latest=True,
    ),
    Metric(
        "proposal_outcomes",
        "Proposals: created, approved, rejected",
        "How many proposed changes users approve: per proposal created, and per decision taken.",
        (
            Column("created", "Created", COUNT),
            Column("approved", "Approved", COUNT),
            Column("rejected", "Rejected", COUNT),
            Column("approved_per_created", "Approved per created", RATIO),
            Column("approval_rate", "Approval rate", RATIO),
        ),
        "SELECT countIf(event = 'proposal_created') AS created,\n"
        "    countIf(event = 'proposal_decided' AND properties.decision = 'approved') AS approved,\n"
        "    countIf(event = 'proposal_decided' AND properties.decision = 'rejected') AS rejected,\n"
        "    approved / nullIf(created, 0) AS approved_per_created,\n"
        "    approved / nullIf(approved + rejected, 0) AS approval_rate\n"
        "FROM events WHERE event IN ('proposal_created', 'proposal_decided') AND {filters}\nLIMIT 1",
        _proposal_outcomes,
        x="created",
        y=("approval_rate", "approved_per_created"),
        limit=1,
    ),
    Metric(
        "review_time",
        "Proposal review time",
        "Time from a proposal to the user's decision, in milliseconds.",
        (
            Column("decisions", "Decisions", COUNT),
            Column("mean_ms", "Mean", MILLISECONDS),
            Column("p50_ms", "Median (p50)", MILLISECONDS),
            Column("p90_ms", "p90", MILLISECONDS),
        ),
        "SELECT count() AS decisions, avg(toFloat(properties.review_duration_ms)) AS mean_ms,\n"
        "    quantile(0.5)(toFloat(properties.review_duration_ms)) AS p50_ms,\n"
        "    quantile(0.9)(toFloat(properties.review_duration_ms)) AS p90_ms\n"
        "FROM events WHERE event = 'proposal_decided'\n"
        "    AND isNotNull(properties.review_duration_ms) AND {filters}\nLIMIT 1",
        _review_time,
        x="decisions",
        y=("p50_ms", "p90_ms", "mean_ms"),
        limit=1,
    ),
    Metric(
        "chat_latency_by_model",
        "Chat latency by model",
        "Seconds from a user's message to the model's answer, by model (the 20 busiest).",
        (
            Column("model", "Model"),
            Column("turns", "Turns", COUNT),
            Column("p50_s", "Median (p50)", SECONDS),
            Column("p95_s", "p95", SECONDS),
        ),
        "SELECT properties.$ai_model AS model, count() AS turns,\n"
        "    quantile(0.5)(toFloat(properties.$ai_latency)) AS p50_s,\n"
        "    quantile(0.95)(toFloat(properties.$ai_latency)) AS p95_s\n"
        "FROM events WHERE event = '$ai_generation' AND {filters}\n"
        "GROUP BY model ORDER BY turns DESC, model LIMIT 20",
        _chat_latency_by_model,
        x="model",
        y=("p50_s", "p95_s"),
        limit=20,
        display="ActionsBar",
    ),
    Metric(
        "tool_failure_rate",
        "Tool failure rate",
        "Share of each tool's calls that failed (the 25 worst).",
        (
            Column("tool", "Tool"),
            Column("calls", "Calls", COUNT),
            Column("failures", "Failures", COUNT),
            Column("failure_rate", "Failure rate", RATIO),
        ),
        "SELECT properties.$ai_span_name AS tool, count() AS calls,\n"
        "    countIf(toString(properties.$ai_is_error) = 'true') AS failures,\n"
        "    failures / calls AS failure_rate\n"
        "FROM events WHERE event = '$ai_span' AND {filters}\n"
        "GROUP BY tool ORDER BY failure_rate DESC, calls DESC, tool LIMIT 25",
        _tool_failure_rate,
        x="tool",
        y=("failure_rate",),
        limit=25,
        display="ActionsBar",
    ),
    Metric(
        "errors_by_type",
        "Errors by type",
        "Exceptions reported, by exception type (the 25 most frequent).",
        (Column("error_type", "Exception type"), Column("errors", "Errors", COUNT)),
        "SELECT properties.error_type AS error_type, count() AS errors\n"
        "FROM events WHERE event = '$exception' AND {filters}\n"
        "GROUP BY error_type ORDER BY errors DESC, error_type LIMIT 25",
        _errors_by_type,
        x="error_type",
        y=("errors",),
        limit=25,
        display="ActionsBar",
    ),
    Metric(
        "crash_free_sessions",
        "Crash-free sessions",
        "Share of ended sessions that did not end in a crash.",
        (
            Column("sessions", "Sessions", COUNT),
            Column("crashed", "Crashed", COUNT),
            Column("crash_free_rate", "Crash-free rate", RATIO),
        ),
        "SELECT count() AS sessions, countIf(properties.end_reason = 'crash') AS crashed,\n"
        "    (sessions - crashed) / nullIf(sessions, 0) AS crash_free_rate\n"
        "FROM events WHERE event = 'session_ended' AND {filters}\nLIMIT 1",
        _crash_free_sessions,
        x="sessions",
        y=("crash_free_rate",),
        limit=1,
    ),
    Metric(
        "weekly_active_installs",
        "Weekly active installs",
        "Installs (distinct ids) that started at least one session in the week (UTC, from Monday).",
        (Column("week", "Week (UTC, from Monday)"), Column("installs", "Installs", COUNT)),
        _latest(
            f"SELECT {WEEK_UTC} AS week, count(DISTINCT distinct_id) AS installs\n"
            "FROM events WHERE event = 'session_started' AND {filters}\nGROUP BY week",
            "week",
            ("week", "installs"),
            52,
        ),
        _weekly_active_installs,
        x="week",
        y=("installs",),
        limit=52,
        display="ActionsLineGraph",
        latest=True,
    ),
)

METRICS_BY_KEY: Mapping[str, Metric] = {metric.key: metric for metric in METRICS}


def compute_all(messages: Sequence[Message]) -> list[MetricResult]:
    return [metric.run(messages) for metric in METRICS]
