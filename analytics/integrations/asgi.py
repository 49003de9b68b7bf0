"""Unhandled route and WebSocket errors of an ASGI app, reported through ``capture_exception``.

Starlette (and so FastAPI) and uvicorn catch an exception that escapes a route before any hook of
ours sees it: the HTTP side answers 500, the WebSocket side closes with 1011, and uvicorn logs it.
This middleware sits inside them and reports it on the way out, once, with only what names the
failing place: the route *template* (``/proposals/{proposal_id}``), the method and the status.
Never the query string, the body, the headers or the client address.

    app = FastAPI()
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)

Pure ASGI (no Starlette import), so it works for any ASGI app; the route template comes from the
``route`` that Starlette's router records in the scope, and is absent for other frameworks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from analytics.client import Analytics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What the server answers once the exception has left the app: Starlette's ServerErrorMiddleware
# sends 500; an ASGI server closes a WebSocket with 1011 (internal error).
_HTTP_STATUS_AFTER_ERROR = 500
_WEBSOCKET_CLOSE_AFTER_ERROR = 1011


class TelemetryMiddleware:
    """Reports exceptions escaping HTTP routes and WebSocket handlers, then re-raises them.

    ``telemetry`` is the app's :class:`~analytics.Analytics`, or a callable returning it (for an app
    that creates it in its lifespan); None from the callable means "not yet": nothing is reported.
    The report is ``capture_exception`` (Sentry and PostHog, linked), so it counts in
    ``session_ended.errors``, and an exception already reported (by the app, or by us in an inner
    mounted app) is not reported again.
    """

    def __init__(self, app: ASGIApp, telemetry: Analytics | Callable[[], Analytics | None]) -> None:
        self.app = app
        self._telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        outcome = _Outcome(kind)

        async def observed_send(message: Message) -> None:
            outcome.observe(message)
            await send(message)

        entry_root_path = str(scope.get("root_path", ""))
        try:
            await self.app(scope, receive, observed_send)
        except Exception as exc:
            self._report(exc, request_context(scope, entry_root_path, outcome.status))
            raise

    def _report(self, exc: BaseException, context: dict[str, Any]) -> None:
        telemetry: Analytics | None
        if isinstance(self._telemetry, Analytics):
            telemetry = self._telemetry
        else:
            try:
                telemetry = self._telemetry()
            except Exception:  # the app's lookup failing must not replace its own exception
                return
        if telemetry is not None:
            telemetry.capture_exception(exc, context=context)  # never raises


class _Outcome:
    """The status the client got (or will get) for this request or WebSocket."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sent_status: int | None = None

    def observe(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            self.sent_status = int(message.get("status", 0))
        elif kind == "websocket.close":
            self.sent_status = int(message.get("code", 1000))
        elif kind == "websocket.http.response.start":  # a WebSocket refused with an HTTP answer
            self.sent_status = int(message.get("status", 0))

    @property
    def status(self) -> int:
        if self.sent_status is not None:
            return self.sent_status
        return _HTTP_STATUS_AFTER_ERROR if self.kind == "http" else _WEBSOCKET_CLOSE_AFTER_ERROR


def request_context(scope: Scope, entry_root_path: str, status: int) -> dict[str, Any]:
    """Where it failed: transport, route template, method, status. Nothing the user typed or sent."""
    context: dict[str, Any] = {"transport": scope.get("type"), "status": status}
    route = route_template(scope, entry_root_path)
    if route is not None:
        context["route"] = route
    if scope.get("type") == "http":
        context["method"] = str(scope.get("method", ""))
    return context


def route_template(scope: Scope, entry_root_path: str = "") -> str | None:
    """The matched route's template, as Starlette's router left it in the scope after routing.

    Inside a ``Mount`` the route's own template is relative: the mount's prefix is what the router
    added to ``root_path`` on the way in. None when no route matched (or the framework records none):
    the raw path could carry ids, so it is never a fallback.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    root_path = str(scope.get("root_path", ""))
    prefix = root_path[len(entry_root_path) :] if root_path.startswith(entry_root_path) else ""
    return prefix + template
