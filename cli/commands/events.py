"""``analytics events``: the event catalog, as a table, JSON, or JSON Schema."""

from __future__ import annotations

from typing import Annotated

import typer

from analytics import catalog
from analytics.app_events import EventRegistrationError

from ..options import JsonOption
from ..output import EXIT_USAGE, emit_json, emit_table, fail


def events(
    json_output: JsonOption = False,
    json_schema: Annotated[
        bool, typer.Option("--json-schema", help="Print the catalog as a JSON Schema document.")
    ] = False,
    app_catalog: Annotated[
        str | None,
        typer.Option(
            "--catalog",
            metavar="MODULE:OBJECT",
            help="Include the app's own events: an EventCatalog, an Analytics, or a list of AppEvent models.",
        ),
    ] = None,
) -> None:
    """List every domain event (the app's own too, with --catalog), its PostHog name and its fields."""
    events_catalog = None
    if app_catalog is not None:
        try:
            events_catalog = catalog.load_catalog(app_catalog)
        except (catalog.CatalogNotFound, EventRegistrationError) as exc:
            fail(f"--catalog: {exc}", EXIT_USAGE)
    if json_schema:
        emit_json(catalog.json_schema(events_catalog))
        return
    entries = catalog.describe(events_catalog)
    if json_output:
        emit_json({"events": entries, "common_properties": catalog.COMMON_PROPERTIES})
        return
    rows = []
    for entry in entries:
        label = f"{entry['event']}{' (full content)' if entry['full_content_only'] else ''}"
        for index, field in enumerate(entry["fields"]):
            head = (label, entry["posthog_event"]) if index == 0 else ("", "")
            optional = "" if field["required"] else " (optional)"
            privacy = f" [{field['privacy']}]" if "privacy" in field else ""
            rows.append((*head, field["name"], field["type"] + optional + privacy, field["description"]))
    emit_table("Event catalog", ["domain event", "PostHog event", "field", "type", "meaning"], rows)
    emit_table("Common properties (every event)", ["property", "meaning"], catalog.COMMON_PROPERTIES.items())
