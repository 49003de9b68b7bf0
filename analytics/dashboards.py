"""Dashboards as code: one PostHog dashboard with one HogQL insight per metric, applied through
PostHog's REST API (``/api/projects/<id>/dashboards/`` and ``.../insights/``) with a personal API key.

Each insight is a ``DataVisualizationNode`` that names its chart explicitly: the x axis, the y series
(the metric's value first) with their labels and number formats, and the table's column formats.
Without them PostHog's front end plots the first date column against the first numeric one.

Applying is idempotent against the real server, not only against an echo:

- Each object we manage carries a stable marker in its description (PostHog's tags need a paid plan,
  descriptions do not), so a later apply finds what an earlier one made; insights are listed with
  ``search`` on the marker and a stable ``order``, and every listing is checked against its ``count``.
- Only the fields we own are compared, the way PostHog returns them: the query's ``version`` (added by
  PostHog's schema migrations) and any key the server added are ignored.
- Dashboard membership only ever grows: an insight someone also put on another dashboard stays there,
  because ``dashboards`` is sent as what the insight is on now plus ours, and only when ours is missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from analytics.metrics import METRICS, Metric

DASHBOARD_NAME = "Agent app: usage, proposals, quality"
DASHBOARD_MARKER = "[analytics-telemetry:dashboard]"
INSIGHT_MARKER_PREFIX = "[analytics-telemetry:metric:"
PAGE_SIZE = 100
MAX_PAGES = 1000  # a listing longer than this is a server that never says "no next page"
MAX_PASSES = 10  # re-reads of a listing whose order shifted under us before we give up


def insight_marker(metric: Metric) -> str:
    return f"{INSIGHT_MARKER_PREFIX}{metric.key}]"


def dashboard_payload() -> dict[str, Any]:
    return {
        "name": DASHBOARD_NAME,
        "description": f"Managed by `analytics dashboards apply`; edits here are overwritten. "
        f"{DASHBOARD_MARKER}",
        "pinned": True,
    }


def chart_settings(metric: Metric) -> dict[str, Any]:
    """PostHog's ``ChartSettings``: which column is x, which are the y series and how they read."""
    series = []
    for name in metric.y:
        column = metric.column(name)
        series.append(
            {
                "column": name,
                "settings": {"display": {"label": column.label}, "formatting": column.fmt.to_posthog()},
            }
        )
    return {
        "xAxis": {"column": metric.x},
        "yAxis": series,
        "showLegend": len(series) > 1,
        "leftYAxisSettings": {"startAtZero": True},
    }


def table_settings(metric: Metric) -> dict[str, Any]:
    """PostHog's ``TableSettings``: every column in order, with its number format."""
    return {
        "columns": [
            {"column": column.name, "settings": {"formatting": column.fmt.to_posthog()}}
            for column in metric.fields
        ]
    }


def insight_query(metric: Metric) -> dict[str, Any]:
    # No "version": PostHog treats an unversioned node as version 1 and upgrades it; its migrations
    # are no-ops on a query already in the current shape, which this is.
    return {
        "kind": "DataVisualizationNode",
        "source": {"kind": "HogQLQuery", "query": metric.hogql},
        "display": metric.display,
        "chartSettings": chart_settings(metric),
        "tableSettings": table_settings(metric),
    }


def insight_payload(metric: Metric) -> dict[str, Any]:
    return {
        "name": metric.title,
        "description": f"{metric.description} {insight_marker(metric)}",
        "query": insight_query(metric),
        "saved": True,
    }


def export_payloads() -> dict[str, Any]:
    """Everything ``apply`` would send, for review or for another tool."""
    return {"dashboard": dashboard_payload(), "insights": [insight_payload(m) for m in METRICS]}


class DashboardApiError(Exception):
    """PostHog's API refused or failed; the message is one line for the CLI."""


@dataclass
class ApplyReport:
    dashboard_id: int | None = None
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dashboard_id": self.dashboard_id,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
        }


# (method, path with query string, json body or None) -> (status, parsed body)
Transport = Callable[[str, str, dict[str, Any] | None], tuple[int, Any]]


class PostHogApi:
    """The few REST calls we need, over a transport (requests by default). Paths are relative to the
    project; a server's ``next`` link contributes only its query string, so the key never leaves for
    another host."""

    def __init__(
        self, host: str, project_id: int, personal_api_key: str, transport: Transport | None = None
    ) -> None:
        self._base = f"{host.rstrip('/')}/api/projects/{project_id}"
        self._project_id = project_id
        self._key = personal_api_key
        self._transport = transport or self._requests

    def _requests(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        import requests

        try:
            response = requests.request(
                method,
                f"{self._base}{path}",
                headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"},
                data=json.dumps(body) if body is not None else None,
                timeout=20,
            )
        except requests.RequestException as exc:
            raise DashboardApiError(f"cannot reach PostHog: {type(exc).__name__}") from None
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, data = self._transport(method, path, body)
        detail = _detail(data)
        if status == 401:
            raise DashboardApiError(
                "PostHog refused the personal API key (HTTP 401): check POSTHOG_PERSONAL_API_KEY"
            )
        if status == 403:
            raise DashboardApiError(_forbidden(detail, self._project_id))
        if status == 404:
            raise DashboardApiError(
                f"PostHog does not know {path.split('?', 1)[0]} in project {self._project_id} "
                "(HTTP 404): check --project-id"
            )
        if not 200 <= status < 300:
            raise DashboardApiError(
                f"PostHog answered HTTP {status} to {method} {path.split('?', 1)[0]}: {detail or 'no detail'}"
            )
        return data

    def list_all(self, path: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every object of a paginated listing, each once, ordered by id.

        Offset pages over an order that shifts between requests can skip or repeat objects, so a
        listing that reports a ``count`` is read again (results merged by id) until all were seen."""
        seen: dict[int, dict[str, Any]] = {}
        expected: int | None = None
        for _ in range(MAX_PASSES):
            expected = self._one_pass(path, dict(params or {}), seen)
            if expected is None or len(seen) >= expected:
                return [seen[key] for key in sorted(seen)]
        raise DashboardApiError(
            f"PostHog's list of {path.strip('/')} kept changing while it was read "
            f"({len(seen)} of {expected} seen): try again"
        )

    def _one_pass(self, path: str, params: dict[str, str], seen: dict[int, dict[str, Any]]) -> int | None:
        query = urlencode({**params, "limit": str(PAGE_SIZE)})
        visited = {query}
        while True:
            page = self.call("GET", f"{path}?{query}")
            results = page.get("results") if isinstance(page, dict) else None
            if not isinstance(results, list):
                raise DashboardApiError(f"PostHog's list of {path.strip('/')} is not a paginated list")
            for item in results:
                if isinstance(item, dict) and isinstance(item.get("id"), int):
                    seen[item["id"]] = item
            count = page.get("count")
            following = page.get("next")
            if not following:
                return count if isinstance(count, int) and not isinstance(count, bool) else None
            query = urlsplit(str(following)).query
            if query in visited or len(visited) >= MAX_PAGES:
                raise DashboardApiError(
                    f"PostHog's list of {path.strip('/')} never ends (its next page repeats)"
                )
            visited.add(query)


def _detail(data: Any) -> str:
    """The server's error detail, flattened to one short printable line."""
    detail = data.get("detail") if isinstance(data, dict) else None
    if not isinstance(detail, str):
        return ""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in detail).split())
    return text[:200]


_SCOPE = re.compile(r"scope[s()]*\W+([a-z_]+:(?:read|write))", re.IGNORECASE)


def _forbidden(detail: str, project_id: int) -> str:
    """A 403 is not a bad key: say which permission the key lacks."""
    scope = _SCOPE.search(detail)
    if scope:
        return (
            f"the personal API key lacks the scope {scope[1]} (HTTP 403): "
            "add it to the key in PostHog's personal API key settings"
        )
    if re.search(r"project|team|environment|organi[sz]ation", detail, re.IGNORECASE):
        return (
            f"the personal API key has no access to project {project_id} (HTTP 403): "
            "allow this project for the key, or check --project-id"
        )
    return f"PostHog forbade the request (HTTP 403): {detail or 'no detail'}"


def apply(api: PostHogApi) -> ApplyReport:
    """Create or update the dashboard and its insights; a second run sends no POST or PATCH."""
    report = ApplyReport()
    dashboard_id = _apply_dashboard(api, report)
    report.dashboard_id = dashboard_id

    # ``order`` makes PostHog's pages stable (its default order ties on a mostly empty column) and
    # ``search`` keeps the listing to our own insights; ``include_dashboards`` asks for membership.
    insights = api.list_all(
        "/insights/",
        {"search": INSIGHT_MARKER_PREFIX, "order": "id", "include_dashboards": "true"},
    )
    for metric in METRICS:
        marker = insight_marker(metric)
        candidates = [i for i in insights if marker in str(i.get("description") or "")]
        existing = _pick(candidates, dashboard_id)
        if existing is None:
            api.call("POST", "/insights/", {**insight_payload(metric), "dashboards": [dashboard_id]})
            report.created.append(metric.key)
            continue
        changes = _changes(existing, insight_payload(metric), owned=("name", "description", "query"))
        on = _dashboard_ids(existing)
        if dashboard_id not in on:
            changes["dashboards"] = sorted(on | {dashboard_id})
        if changes:
            api.call("PATCH", f"/insights/{existing['id']}/", changes)
            report.updated.append(metric.key)
        else:
            report.unchanged.append(metric.key)
    return report


def _apply_dashboard(api: PostHogApi, report: ApplyReport) -> int:
    ours = [d for d in api.list_all("/dashboards/") if DASHBOARD_MARKER in str(d.get("description") or "")]
    wanted = dashboard_payload()
    if not ours:
        created = api.call("POST", "/dashboards/", wanted)
        report.created.append("dashboard")
        return _id_of(created, "dashboard")
    dashboard = min(ours, key=lambda d: int(d["id"]))  # the oldest, if someone duplicated it
    changes = _changes(dashboard, wanted, owned=("name", "description", "pinned"))
    if changes:
        api.call("PATCH", f"/dashboards/{dashboard['id']}/", changes)
        report.updated.append("dashboard")
    else:
        report.unchanged.append("dashboard")
    return int(dashboard["id"])


def _id_of(created: Any, what: str) -> int:
    if isinstance(created, dict) and isinstance(created.get("id"), int):
        return int(created["id"])
    raise DashboardApiError(f"PostHog created the {what} but did not answer with its id")


def _pick(candidates: list[dict[str, Any]], dashboard_id: int) -> dict[str, Any] | None:
    """The insight to manage among those with our marker (duplicating an insight copies its
    description): the oldest one already on our dashboard, else the oldest."""
    if not candidates:
        return None
    on_ours = [c for c in candidates if dashboard_id in _dashboard_ids(c)]
    return min(on_ours or candidates, key=lambda c: int(c["id"]))


def _dashboard_ids(insight: dict[str, Any]) -> set[int]:
    """The dashboards an insight is on: ``dashboards`` when PostHog sends it, else its live tiles."""
    dashboards = insight.get("dashboards")
    if isinstance(dashboards, list):
        return {int(d["id"] if isinstance(d, dict) else d) for d in dashboards}
    tiles = insight.get("dashboard_tiles")
    if isinstance(tiles, list):
        return {
            int(t["dashboard_id"])
            for t in tiles
            if isinstance(t, dict) and t.get("dashboard_id") is not None and not t.get("deleted")
        }
    raise DashboardApiError(
        f"PostHog did not say which dashboards insight {insight.get('id')} is on; "
        "refusing to change its dashboards blind"
    )


def normalise(value: Any) -> Any:
    """A query as we compare it: without the ``version`` stamps PostHog's schema migrations add."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if k != "version"}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def covers(current: Any, desired: Any) -> bool:
    """Whether ``current`` says everything ``desired`` says; keys only the server has are ignored."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(covers(current.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(covers(c, d) for c, d in zip(current, desired, strict=True))
        )
    if isinstance(desired, bool) or isinstance(current, bool):
        return current is desired
    return bool(current == desired)


def _changes(current: dict[str, Any], desired: dict[str, Any], *, owned: tuple[str, ...]) -> dict[str, Any]:
    return {key: desired[key] for key in owned if not covers(normalise(current.get(key)), desired[key])}
