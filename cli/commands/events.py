"""``analytics events``: the event catalog, as a table, JSON, or JSON Schema."""

from __future__ import annotations

from typing import Annotated

import typer

from analytics import catalog

from ..options import JsonOption
from ..output import emit_json, emit_table


def events(
    json_output: JsonOption = False,
    json_schema: Annotated[
        bool, typer.Option("--json-schema", help="Print the catalog as a JSON Schema document.")
    ] = False,
) -> None:
    """List every domain event, its PostHog name and its fields."""
    if json_schema:
        emit_json(catalog.json_schema())
        return
    entries = catalog.describe()
    if json_output:
        emit_json({"events": entries, "common_properties": catalog.COMMON_PROPERTIES})
        return
    rows = []
    for entry in entries:
        label = f"{entry['event']}{' (full content)' if entry['full_content_only'] else ''}"
        for index, field in enumerate(entry["fields"]):
            head = (label, entry["posthog_event"]) if index == 0 else ("", "")
            optional = "" if field["required"] else " (optional)"
            rows.append((*head, field["name"], field["type"] + optional, field["description"]))
    emit_table("Event catalog", ["domain event", "PostHog event", "field", "type", "meaning"], rows)
    emit_table("Common properties (every event)", ["property", "meaning"], catalog.COMMON_PROPERTIES.items())
