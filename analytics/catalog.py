"""The event catalog as data: what ``analytics events`` prints and exports as JSON Schema."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

from analytics import events as ev
from analytics.app_events import AppEvent, EventCatalog, Privacy, privacy_rules
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


def describe(catalog: EventCatalog | None = None) -> list[dict[str, Any]]:
    """One entry per domain event: names, trigger, and its fields with types and descriptions.

    ``catalog``: the app's (built-in events plus its own); default: the built-in catalog. An app
    event's fields also say what privacy does with them (``privacy``: hashed, text, content, plain).
    """
    entries = []
    for name, model in _models(catalog).items():
        rules = privacy_rules(model) if issubclass(model, AppEvent) else {}
        schema = model.model_json_schema()
        required = set(schema.get("required", []))
        fields = [
            {
                "name": field_name,
                "type": _type_name(field_schema),
                "required": field_name in required,
                "description": model.model_fields[field_name].description or "",
                **({"privacy": rules[field_name].value} if field_name in rules else {}),
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
                "app_event": issubclass(model, AppEvent),
                "description": (model.__doc__ or "").strip().splitlines()[0],
                "fields": fields,
            }
        )
    return entries


def json_schema(catalog: EventCatalog | None = None) -> dict[str, Any]:
    """A JSON Schema document (2020-12) with one definition per domain event."""
    definitions: dict[str, Any] = {}
    models = _models(catalog)
    for name, model in models.items():
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        for nested_name, nested in schema.pop("$defs", {}).items():
            definitions.setdefault(nested_name, nested)
        schema["x-posthog-event"] = model.posthog_event
        schema["x-trigger"] = model.trigger
        schema["x-full-content-only"] = model.full_content
        if issubclass(model, AppEvent):
            schema["x-app-event"] = True
            schema["x-consent-level"] = model.consent_level
            for field_name, rule in privacy_rules(model).items():
                prop = schema.get("properties", {}).get(field_name)
                if prop is not None:
                    prop["x-privacy"] = rule.value
                    if rule in (Privacy.HASHED, Privacy.HASHED_PATH):
                        prop["x-sent-as"] = "keyed hash (HMAC-SHA256, hex)"
        definitions[name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "analytics-telemetry/events",
        "title": "analytics event catalog",
        "x-schema-version": ev.SCHEMA_VERSION,
        "x-common-properties": COMMON_PROPERTIES,
        "oneOf": [{"$ref": f"#/$defs/{name}"} for name in models],
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


def _models(catalog: EventCatalog | None) -> dict[str, type[ev.DomainEvent]]:
    return dict(ev.CATALOG) if catalog is None else dict(catalog.as_mapping())


class CatalogNotFound(ValueError):
    """``--catalog module:object`` does not name an event catalog."""


def load_catalog(spec: str) -> EventCatalog:
    """The catalog ``module:object`` names: an ``EventCatalog``, an ``Analytics`` (its events),
    an ``AppEvent`` subclass, or an iterable of them.

    >>> load_catalog("analytics.events:CATALOG")  # doctest: +SKIP
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CatalogNotFound(f"{spec!r}: expected module:object, e.g. myapp.telemetry:EVENTS")
    # As uvicorn does for its app argument: the app's module is found from the current folder.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CatalogNotFound(f"cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CatalogNotFound(f"{module_name!r} has no {attribute!r}") from None
    return as_catalog(target, spec)


def as_catalog(target: Any, spec: str = "catalog") -> EventCatalog:
    if isinstance(target, EventCatalog):
        return target
    events = getattr(target, "events", None)
    if isinstance(events, EventCatalog):  # an Analytics instance
        return events
    if isinstance(target, type) and issubclass(target, AppEvent):
        return EventCatalog([target])
    if isinstance(target, dict):
        target = target.values()
    if isinstance(target, Iterable) and not isinstance(target, str | bytes):
        models = [m for m in target if not (isinstance(m, type) and m in ev.CATALOG.values())]
        return EventCatalog(models)
    raise CatalogNotFound(f"{spec}: not an EventCatalog, an Analytics, or a list of AppEvent models")
