"""The event catalog as data: what ``analytics events`` prints and exports as JSON Schema."""

from __future__ import annotations

from typing import Any

from analytics import events as ev
from analytics.mapping import LIB_NAME

COMMON_PROPERTIES: dict[str, str] = {
    "uuid": "Event id, fixed at emit; a retry re-sends the same one (top level).",
    "timestamp": "Emit time, UTC, RFC 3339 (top level).",
    "distinct_id": "TELEMETRY_USER_ID, or the random install id (top level).",
    "$session_id": "UUIDv7 of the app session.",
    "app_version": "The host app's version.",
    "environment": "Deployment environment, when not 'production' (absent means production).",
    "schema_version": f"Version of this catalog ({ev.SCHEMA_VERSION}).",
    "$lib": f"Always {LIB_NAME!r}.",
    "$lib_version": "This library's version.",
    "$geoip_disable": "true unless GeoIP is enabled.",
    "truncated_properties": "Names of values that were cut to the size caps (only when any were).",
}


def describe() -> list[dict[str, Any]]:
    """One entry per domain event: names, trigger, and its fields with types and descriptions."""
    entries = []
    for name, model in ev.CATALOG.items():
        schema = model.model_json_schema()
        required = set(schema.get("required", []))
        fields = [
            {
                "name": field_name,
                "type": _type_name(field_schema),
                "required": field_name in required,
                "description": model.model_fields[field_name].description or "",
            }
            for field_name, field_schema in schema.get("properties", {}).items()
        ]
        entries.append(
            {
                "event": name,
                "posthog_event": model.posthog_event,
                "trigger": model.trigger,
                "full_content_only": model.full_content,
                "automatic": model.automatic,
                "description": (model.__doc__ or "").strip().splitlines()[0],
                "fields": fields,
            }
        )
    return entries


def json_schema() -> dict[str, Any]:
    """A JSON Schema document (2020-12) with one definition per domain event."""
    definitions: dict[str, Any] = {}
    for name, model in ev.CATALOG.items():
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        for nested_name, nested in schema.pop("$defs", {}).items():
            definitions.setdefault(nested_name, nested)
        schema["x-posthog-event"] = model.posthog_event
        schema["x-trigger"] = model.trigger
        schema["x-full-content-only"] = model.full_content
        definitions[name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "analytics-telemetry/events",
        "title": "analytics event catalog",
        "x-schema-version": ev.SCHEMA_VERSION,
        "x-common-properties": COMMON_PROPERTIES,
        "oneOf": [{"$ref": f"#/$defs/{name}"} for name in ev.CATALOG],
        "$defs": definitions,
    }


def _type_name(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " | ".join(_type_name(option) for option in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(repr(value) for value in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    return str(schema.get("type", "any"))
