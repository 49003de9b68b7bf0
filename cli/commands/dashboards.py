"""``analytics dashboards export | apply``: the PM dashboard as code."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from analytics.dashboards import DashboardApiError, PostHogApi, export_payloads
from analytics.dashboards import apply as apply_dashboards

from ..options import JsonOption
from ..output import emit_json, emit_table, fail

dashboards_app = typer.Typer(
    help="Export or apply the PostHog dashboard of the metrics.", no_args_is_help=True
)

KEY_VARIABLE = "POSTHOG_PERSONAL_API_KEY"


@dashboards_app.command()
def export(json_output: JsonOption = False) -> None:
    """Print the dashboard and insight payloads `apply` would send (JSON either way)."""
    emit_json(export_payloads())


@dashboards_app.command("apply")
def apply_command(
    host: Annotated[str, typer.Option("--host", help="PostHog app URL, e.g. https://eu.posthog.com.")],
    project_id: Annotated[int, typer.Option("--project-id", min=1, help="The PostHog project's id.")],
    json_output: JsonOption = False,
) -> None:
    """Create or update the dashboard and its insights (needs POSTHOG_PERSONAL_API_KEY with the scopes
    dashboard:write and insight:write). A second run changes nothing."""
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if not key:
        fail(f"set {KEY_VARIABLE} to a personal API key with the scopes dashboard:write and insight:write")
    try:
        result = apply_dashboards(PostHogApi(host, project_id, key))
    except DashboardApiError as exc:
        fail(str(exc))
    if json_output:
        emit_json(result.to_dict())
        return
    emit_table(
        f"Dashboard {result.dashboard_id} on {host}",
        ["created", "updated", "unchanged"],
        [(len(result.created), len(result.updated), len(result.unchanged))],
    )
