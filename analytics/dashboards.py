"""Dashboards as code: one PostHog dashboard with one HogQL insight per metric, applied through
PostHog's REST API (``/api/projects/<id>/dashboards/`` and ``.../insights/``) with a personal API key.

Applying is idempotent. Each object we manage carries a stable marker in its description
(PostHog's tags need a paid plan, descriptions do not), so a second apply finds what the first made
and changes nothing unless a definition changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from analytics.metrics import METRICS, Metric

DASHBOARD_NAME = "Agent app: usage, proposals, quality"
DASHBOARD_MARKER = "[analytics-telemetry:dashboard]"


def insight_marker(metric: Metric) -> str:
    return f"[analytics-telemetry:metric:{metric.key}]"


def dashboard_payload() -> dict[str, Any]:
    return {
        "name": DASHBOARD_NAME,
        "description": f"Managed by `analytics dashboards apply`; edits here are overwritten. "
        f"{DASHBOARD_MARKER}",
        "pinned": True,
    }


def insight_payload(metric: Metric) -> dict[str, Any]:
    return {
        "name": metric.title,
        "description": f"{metric.description} {insight_marker(metric)}",
        "query": {
            "kind": "DataVisualizationNode",
            "source": {"kind": "HogQLQuery", "query": metric.hogql},
            "display": metric.display,
        },
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


# (method, path, json body or None) -> (status, parsed body)
Transport = Callable[[str, str, dict[str, Any] | None], tuple[int, Any]]


class PostHogApi:
    """The few REST calls we need, over a transport (requests by default)."""

    def __init__(
        self, host: str, project_id: int, personal_api_key: str, transport: Transport | None = None
    ) -> None:
        self._base = f"{host.rstrip('/')}/api/projects/{project_id}"
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
        if status in (401, 403):
            raise DashboardApiError(
                f"PostHog refused the personal API key (HTTP {status}): "
                "check POSTHOG_PERSONAL_API_KEY and its scopes"
            )
        if status == 404:
            raise DashboardApiError("PostHog does not know this project (HTTP 404): check --project-id")
        if not 200 <= status < 300:
            detail = data.get("detail") if isinstance(data, dict) else None
            raise DashboardApiError(
                f"PostHog answered HTTP {status} to {method} {path}: {detail or 'no detail'}"
            )
        return data

    def list_all(self, path: str) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        page = self.call("GET", f"{path}?limit=200")
        while True:
            results.extend(page.get("results", []))
            following = page.get("next")
            if not following:
                return results
            page = self.call("GET", f"{path}?{following.split('?', 1)[1]}")


def apply(api: PostHogApi) -> ApplyReport:
    """Create or update the dashboard and its insights; a second run changes nothing."""
    report = ApplyReport()
    dashboards = [d for d in api.list_all("/dashboards/") if DASHBOARD_MARKER in (d.get("description") or "")]
    wanted = dashboard_payload()
    if dashboards:
        dashboard = dashboards[0]
        changes = _changes(dashboard, wanted)
        if changes:
            api.call("PATCH", f"/dashboards/{dashboard['id']}/", changes)
            report.updated.append("dashboard")
        else:
            report.unchanged.append("dashboard")
    else:
        dashboard = api.call("POST", "/dashboards/", wanted)
        report.created.append("dashboard")
    dashboard_id = int(dashboard["id"])
    report.dashboard_id = dashboard_id

    insights = api.list_all("/insights/")
    for metric in METRICS:
        marker = insight_marker(metric)
        existing = next((i for i in insights if marker in (i.get("description") or "")), None)
        desired = {**insight_payload(metric), "dashboards": [dashboard_id]}
        if existing is None:
            api.call("POST", "/insights/", desired)
            report.created.append(metric.key)
            continue
        changes = _changes(existing, desired)
        if changes:
            api.call("PATCH", f"/insights/{existing['id']}/", changes)
            report.updated.append(metric.key)
        else:
            report.unchanged.append(metric.key)
    return report


def _changes(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    changes = {}
    for key, value in desired.items():
        have = current.get(key)
        if key == "dashboards":
            have = sorted(int(d["id"] if isinstance(d, dict) else d) for d in (have or []))
            if have != sorted(value):
                changes[key] = value
        elif have != value:
            changes[key] = value
    return changes
