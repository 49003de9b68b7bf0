"""The FastAPI router behind a desktop app's telemetry settings, and its frontend's events.

    from analytics.integrations.fastapi import telemetry_router
    app.include_router(telemetry_router(telemetry))

=============================  ===============================================================
``GET /telemetry``             what a settings page shows: on or off and why, the consent level,
                               full content, where events go (token masked), whether a user id is
                               set, queue depth and the last delivery
``PUT /telemetry``             change ``enabled`` / ``level`` / ``full_content`` / ``user_id``
                               (null: back to anonymous); opting out purges the queue
``GET /telemetry/preview``     the newest queued and archived messages, exactly as sent
``POST /telemetry/events``     one frontend event, validated against the app's own events, into
                               the same durable, scrubbed queue as the backend's
=============================  ===============================================================

Local only by default: a request from a client address that is not loopback gets 403 (pass
``allow_remote=True`` when something trusted in front of the app decides instead). A browser page
on another site could still reach a loopback server, so requests carrying an ``Origin`` other than
this server's own are refused too, and writes must be JSON (a cross-site form cannot send that
without the browser asking first). Needs the ``fastapi`` extra.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

try:
    from fastapi import APIRouter, Depends, HTTPException, Query, Request
except ImportError as missing:  # an optional extra: say which
    raise ImportError(
        "analytics.integrations.fastapi needs FastAPI: pip install 'analytics-telemetry[fastapi]'"
    ) from missing
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analytics.app_events import AppEvent
from analytics.client import Analytics
from analytics.config import mask_secret
from analytics.privacy.identity import illegal_distinct_id_reason

Level = Literal["off", "crash", "error", "usage", "full"]


class TelemetrySettings(BaseModel):
    """What ``GET /telemetry`` answers."""

    enabled: bool
    disabled_reason: str | None
    level: Level
    full_content: bool
    destination: str
    endpoint: str | None = Field(description="The PostHog host; None when events go to the local archive.")
    token: str | None = Field(description="The project token, masked: its first characters only.")
    user_id_set: bool
    queue_depth: int
    last_delivery: dict[str, Any] | None
    drops: dict[str, int]


class TelemetryUpdate(BaseModel):
    """``PUT /telemetry``: only the fields given change. ``user_id: null`` is ``reset()``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    level: Level | None = None
    full_content: bool | None = None
    user_id: str | None = None


class FrontendEvent(BaseModel):
    """``POST /telemetry/events``: an app event by its PostHog name (or class name)."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class Preview(BaseModel):
    queued: list[dict[str, Any]]
    archived: list[dict[str, Any]]


def telemetry_router(
    telemetry: Analytics | Callable[[], Analytics],
    *,
    allow_remote: bool = False,
    frontend_events: list[type[AppEvent]] | None = None,
    prefix: str = "/telemetry",
) -> APIRouter:
    """The settings and frontend-events routes for ``telemetry``.

    ``telemetry`` is the app's instance or a callable returning it (for one made in the lifespan).
    ``frontend_events`` limits what ``POST /telemetry/events`` accepts; by default every event the
    app registered (never the built-in ones: a session or an error is the backend's to report).
    """

    def current() -> Analytics:
        return telemetry if isinstance(telemetry, Analytics) else telemetry()

    router = APIRouter(prefix=prefix, tags=["telemetry"], dependencies=[Depends(_local_only(allow_remote))])

    @router.get("")
    def read_settings() -> TelemetrySettings:
        return settings_of(current())

    @router.put("")
    def change_settings(update: TelemetryUpdate) -> TelemetrySettings:
        return apply(current(), update)

    @router.get("/preview")
    def preview(limit: int = Query(20, ge=1, le=500)) -> Preview:
        found = current().recent_messages(limit)
        return Preview(queued=found.queued, archived=found.archived)

    @router.post("/events", status_code=202)
    def frontend_event(sent: FrontendEvent) -> dict[str, str]:
        analytics = current()
        model = _accepted(analytics, frontend_events).get(sent.event)
        if model is None:
            raise HTTPException(404, f"{sent.event!r} is not one of this app's frontend events")
        try:
            event = model.model_validate(sent.properties)
        except ValidationError as exc:
            raise HTTPException(422, _problems(exc)) from None
        analytics.emit(event)
        return {"event": model.posthog_event, "status": "queued" if analytics.enabled else "telemetry off"}

    return router


def settings_of(telemetry: Analytics) -> TelemetrySettings:
    status = telemetry.status()
    token = telemetry.config.token
    return TelemetrySettings(
        enabled=telemetry.enabled,
        disabled_reason=telemetry.disabled_reason,
        level=telemetry.level,
        full_content=telemetry.level == "full",
        destination=status.destination,
        endpoint=status.posthog_host,
        token=mask_secret(token.get_secret_value()) if token is not None and status.posthog_host else None,
        user_id_set=telemetry.user_id is not None,
        queue_depth=status.queue_depth,
        last_delivery=status.last_delivery,
        drops=status.drops,
    )


def apply(telemetry: Analytics, update: TelemetryUpdate) -> TelemetrySettings:
    """Each change through the public API, opting out first (it purges; nothing after it counts)."""
    given = update.model_fields_set
    if "user_id" in given and update.user_id is not None:
        problem = illegal_distinct_id_reason(update.user_id)
        if problem is not None:
            raise HTTPException(422, f"user_id: {problem}")
    if update.enabled is False or update.level == "off":
        telemetry.set_enabled(False)
        return settings_of(telemetry)
    was_enabled = telemetry.enabled
    if update.enabled:
        telemetry.set_enabled(True)
    if update.level is not None:
        telemetry.set_level(update.level)
    if update.full_content is not None and telemetry.enabled:
        if update.full_content:
            telemetry.set_level("full")
        elif telemetry.level == "full":
            telemetry.set_level("usage")
    if not was_enabled and telemetry.enabled:
        telemetry.start()  # opted back in: a new session, and its delivery
    if "user_id" in given:
        if update.user_id is None:
            telemetry.reset()
        else:
            telemetry.identify(update.user_id)
    return settings_of(telemetry)


def _accepted(telemetry: Analytics, only: list[type[AppEvent]] | None) -> dict[str, type[AppEvent]]:
    models = only if only is not None else telemetry.events.app_events()
    by_name: dict[str, type[AppEvent]] = {}
    for model in models:
        by_name[model.__name__] = model
        by_name[model.posthog_event] = model
    return by_name


def _problems(exc: ValidationError) -> str:
    # Field names and what is wrong; never the value, which may be what the user typed.
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'properties'}: {error['msg']}"
        for error in exc.errors(include_input=False)
    )


def _local_only(allow_remote: bool) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        if not allow_remote and not is_loopback_client(request.client.host if request.client else None):
            raise HTTPException(403, "telemetry settings are only served to this machine")
        origin = request.headers.get("origin")
        if origin is not None and not _same_origin(origin, request.headers.get("host")):
            raise HTTPException(403, "telemetry settings refuse requests from other sites")
        if request.method in {"PUT", "POST"}:
            media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                raise HTTPException(415, "send JSON (Content-Type: application/json)")

    return check


def is_loopback_client(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _same_origin(origin: str, host: str | None) -> bool:
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()
