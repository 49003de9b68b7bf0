"""The end-to-end check a team runs after ``docker compose up``: one marked session goes through the
adapter, then PostHog's query API is asked until the event is visible. It says how long ingestion
took, or which hop failed:

    capture (POST /batch/) -> ingestion (Kafka, plugin server) -> ClickHouse -> query API (HogQL)

The marked session is real telemetry sent through :class:`analytics.Analytics`, from a throw-away
state folder, as ``analytics-e2e-check`` with ``environment = 'e2e-check'``, so a dashboard can
leave it out. Nothing of the app's own queue is touched.

>>> api = QueryApi("https://posthog.example.com", "@current", "phx_...")   # doctest: +SKIP
>>> report = run_end_to_end(TelemetryConfig.from_env(), api)               # doctest: +SKIP
>>> report.ingestion_seconds                                               # doctest: +SKIP
4.2
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from analytics.config import TelemetryConfig, mask_secret

CAPTURE = "capture"
INGESTION = "ingestion"
CLICKHOUSE = "ClickHouse"
QUERY_API = "query API"

MARK_ENVIRONMENT = "e2e-check"
MARK_DISTINCT_ID = "analytics-e2e-check"

# The marked event, found by the session id only this run knows. The time bound keeps ClickHouse to
# recent partitions; PostHog moves a skewed client clock back to its own with sent_at.
FIND_EVENT = (
    "SELECT timestamp, event FROM events WHERE event = 'session_started' "
    "AND properties.$session_id = {session_id} AND timestamp > now() - INTERVAL 2 DAY LIMIT 1"
)
RECENT_EVENTS = "SELECT count() FROM events WHERE timestamp > now() - INTERVAL 1 HOUR"


@dataclass(frozen=True)
class Hop:
    """One line of the report: a hop of the pipeline and how it went (ok, fail, info)."""

    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class EndToEndReport:
    hops: list[Hop] = field(default_factory=list)
    session_id: str | None = None
    capture_seconds: float | None = None
    ingestion_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return all(hop.status != "fail" for hop in self.hops)

    @property
    def failed_hop(self) -> str | None:
        return next((hop.name for hop in self.hops if hop.status == "fail"), None)


class QueryApiError(Exception):
    """The query API did not answer the query; ``hop`` names where the trouble is."""

    def __init__(self, hop: str, detail: str, fix: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.hop, self.detail, self.fix, self.retry_after = hop, detail, fix, retry_after


# (json body) -> (status, parsed answer or None, Retry-After header or None)
Transport = Callable[[dict[str, Any]], tuple[int, Any, str | None]]


class QueryApi:
    """``POST /api/projects/<project>/query/`` with a HogQLQuery and a personal API key (scope
    ``query:read``). ``project`` is the project's id, or ``@current`` for the key's current project."""

    def __init__(self, host: str, project: str, personal_api_key: str, *, timeout: float = 30.0) -> None:
        self.host = host.rstrip("/")
        self.project = project
        self._key = personal_api_key
        self._timeout = timeout
        self.url = f"{self.host}/api/projects/{project}/query/"

    def hogql(self, query: str, values: dict[str, Any] | None = None) -> list[list[Any]]:
        """The result rows of ``query``; raises :class:`QueryApiError` naming the failing hop."""
        body: dict[str, Any] = {
            "query": {"kind": "HogQLQuery", "query": query, **({"values": values} if values else {})},
            "refresh": "force_blocking",  # never a cached "not there yet"
            "name": "analytics end-to-end check",
        }
        status, answer, retry_after = self._post(body)
        detail = answer.get("detail") if isinstance(answer, dict) else None
        rows = answer.get("results") if isinstance(answer, dict) else None
        if status == 200 and isinstance(rows, list):
            return rows
        raise _query_error(status, detail, self, retry_after)

    def _post(self, body: dict[str, Any]) -> tuple[int, Any, str | None]:
        import requests

        try:
            response = requests.post(
                self.url,
                data=json.dumps(body),
                headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise QueryApiError(
                QUERY_API,
                f"cannot reach PostHog's query API at {self.host}: {type(exc).__name__}",
                "check POSTHOG_HOST (default: TELEMETRY_ENDPOINT) and that PostHog's web service runs",
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        return response.status_code, answer, response.headers.get("Retry-After")

    @property
    def masked_key(self) -> str:
        return mask_secret(self._key)


def _query_error(status: int, detail: Any, api: QueryApi, retry_after: str | None) -> QueryApiError:
    said = f" ({detail})" if detail else ""
    if status in (401, 403):
        return QueryApiError(
            QUERY_API,
            f"PostHog refused the personal API key {api.masked_key} (HTTP {status}){said}",
            "create a personal API key with the query:read scope and set POSTHOG_PERSONAL_API_KEY",
        )
    if status == 404:
        return QueryApiError(
            QUERY_API,
            f"PostHog has no project {api.project} at {api.host} (HTTP 404){said}",
            "set POSTHOG_PROJECT_ID to the project's id (Settings > Project)",
        )
    if status == 429:
        return QueryApiError(
            QUERY_API, f"PostHog throttled the query (HTTP 429){said}", "", retry_after=_seconds(retry_after)
        )
    if status >= 500 and "clickhouse" in str(detail).lower():
        return QueryApiError(
            CLICKHOUSE,
            f"PostHog could not query ClickHouse (HTTP {status}){said}",
            "docker compose ps clickhouse; docker compose logs --tail 100 clickhouse",
        )
    if status in (502, 503, 504):
        return QueryApiError(
            QUERY_API,
            f"PostHog's web service is not answering (HTTP {status} from the proxy)",
            "docker compose ps web; docker compose logs --tail 100 web",
        )
    if status == 200:
        return QueryApiError(QUERY_API, "the query API answered without results", "is this a PostHog host?")
    return QueryApiError(
        QUERY_API,
        f"PostHog answered the query with HTTP {status}{said}",
        "docker compose logs --tail 100 web" if status >= 500 else "is PostHog older than its query API?",
    )


def _seconds(header: str | None) -> float | None:
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None


def app_host(endpoint: str) -> str:
    """PostHog's app host for a capture endpoint: the same host when self-hosted, and
    ``https://eu.posthog.com`` for PostHog Cloud's ``https://eu.i.posthog.com``."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if host.endswith(".i.posthog.com"):
        netloc = parts.netloc.replace(".i.posthog.com", ".posthog.com")
        return urlunsplit((parts.scheme, netloc, "", "", ""))
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def run_end_to_end(
    config: TelemetryConfig,
    api: QueryApi,
    *,
    capture_timeout: float = 30.0,
    ingestion_timeout: float = 120.0,
    poll_interval: float = 1.0,
) -> EndToEndReport:
    """Send one marked session with ``config``'s endpoint and token, then wait until ``api`` shows it.

    The query API is asked first, so a wrong personal key or project fails before anything is sent.
    """
    report = EndToEndReport()
    try:
        before = _count(api.hogql(RECENT_EVENTS))
    except QueryApiError as exc:
        report.hops.append(Hop(exc.hop, "fail", exc.detail, exc.fix))
        report.hops.append(Hop(CAPTURE, "info", "no event sent: the query API must answer first"))
        return report
    report.hops.append(Hop(QUERY_API, "ok", f"{api.url} answers ({before:,} events in the last hour)"))
    captured_at = _capture(config, report, capture_timeout)
    if captured_at is None:
        return report
    _wait_for_event(api, report, captured_at, before, ingestion_timeout, poll_interval)
    return report


def _capture(config: TelemetryConfig, report: EndToEndReport, timeout: float) -> float | None:
    problem = _capture_config_problem(config)
    if problem:
        report.hops.append(Hop(CAPTURE, "fail", *problem))
        return None
    from analytics.client import Analytics

    with tempfile.TemporaryDirectory(prefix="analytics-e2e-") as folder:
        marked = config.model_copy(
            update={
                "state_dir": Path(folder),
                "environment": MARK_ENVIRONMENT,
                "user_id": MARK_DISTINCT_ID,
                "sentry_dsn": None,
                "group_commit_ms": None,
            }
        )
        telemetry = Analytics(marked)
        started = time.monotonic()
        outcome: tuple[str, str] | None = ("the adapter stopped", "")
        try:
            telemetry.start()  # queues session_started, marked by this session's id
            report.session_id = telemetry.session_id
            outcome = _deliver(telemetry, started + timeout)
        finally:
            # session_ended follows when capture works; no point waiting on one that does not.
            telemetry.shutdown(timeout=2.0 if outcome is None else 0.1)
    elapsed = time.monotonic() - started
    if outcome is not None:
        report.hops.append(Hop(CAPTURE, "fail", *outcome))
        return None
    report.capture_seconds = elapsed
    report.hops.append(
        Hop(CAPTURE, "ok", f"{config.endpoint} accepted session {report.session_id} in {elapsed:.1f} s")
    )
    return time.monotonic()


def _capture_config_problem(config: TelemetryConfig) -> tuple[str, str] | None:
    if not config.is_enabled:
        return (
            f"telemetry is off here ({config.disabled_reason}), so no event is sent",
            "the check sends one real event: run it where telemetry is on",
        )
    if not config.endpoint:
        return "TELEMETRY_ENDPOINT is not set", "set it to your PostHog, e.g. https://posthog.example.com"
    if config.token is None:
        return "TELEMETRY_TOKEN is not set", "set it to the project API key (phc_...)"
    return None


def _deliver(telemetry: Any, deadline: float) -> tuple[str, str] | None:
    """Flush until capture took the event; the reason and the fix when it did not."""
    while True:
        delivered = telemetry.flush(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
        status = telemetry.status()
        if status.dead_letters:
            return (
                f"PostHog's capture refused the event ({_dead_letter_reason(telemetry.config)})",
                "docker compose logs --tail 100 capture says why PostHog refused it",
            )
        if status.paused:
            reason = status.paused.get("reason") or f"HTTP {status.paused.get('status')}"
            return (
                f"capture refused the project API key: {reason}",
                "copy the Project API key from PostHog (Settings > Project) into TELEMETRY_TOKEN",
            )
        if delivered:
            return None
        if time.monotonic() >= deadline:
            error = status.last_error or {}
            said = error.get("detail") or (f"HTTP {error['status']}" if error.get("status") else "no answer")
            return (
                f"capture did not take the event within the time allowed: {said}",
                "docker compose ps capture proxy; docker compose logs --tail 100 capture",
            )


def _dead_letter_reason(config: TelemetryConfig) -> str:
    from analytics.queue.dead_letters import DeadLetterStore
    from analytics.state import StateFolder

    store = DeadLetterStore(StateFolder(config.resolved_state_dir).dead_letter_dir)
    try:
        return next((letter.reason for letter in store), "no reason kept")
    finally:
        store.close()


def _wait_for_event(
    api: QueryApi,
    report: EndToEndReport,
    captured_at: float,
    before: int,
    timeout: float,
    poll_interval: float,
) -> None:
    deadline = captured_at + timeout
    values = {"session_id": report.session_id}
    while True:
        pause = poll_interval
        try:
            if api.hogql(FIND_EVENT, values):
                report.ingestion_seconds = time.monotonic() - captured_at
                report.hops.append(
                    Hop(
                        INGESTION,
                        "ok",
                        f"the event is in PostHog {report.ingestion_seconds:.1f} s after capture took it",
                    )
                )
                return
        except QueryApiError as exc:
            if exc.retry_after is None:
                report.hops.append(Hop(exc.hop, "fail", exc.detail, exc.fix))
                return
            pause = max(pause, exc.retry_after)
        if time.monotonic() + pause > deadline:
            break
        time.sleep(pause)
    report.hops.append(Hop(INGESTION, "fail", *_diagnose(api, before, timeout)))


def _diagnose(api: QueryApi, before: int, waited: float) -> tuple[str, str]:
    """Capture took the event, the query API answers, the event never showed: what arrives at all?"""
    lead = f"capture took the event, but after {waited:.0f} s PostHog's query API still does not show it"
    try:
        recent = _count(api.hogql(RECENT_EVENTS))
    except QueryApiError:
        recent = 0
    if recent > before:
        return (
            f"{lead}; other events do arrive in project {api.project}",
            "TELEMETRY_TOKEN may be the key of another project than POSTHOG_PROJECT_ID",
        )
    return (
        f"{lead}, and no other event arrived either: events stop between capture and ClickHouse",
        "docker compose logs --tail 100 ingestion-general plugins kafka clickhouse",
    )


def _count(rows: list[list[Any]]) -> int:
    try:
        return int(rows[0][0])
    except (IndexError, TypeError, ValueError):
        return 0
