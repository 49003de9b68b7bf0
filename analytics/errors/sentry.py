"""Sentry, on our terms: initialised from ``SENTRY_DSN`` (or the app's own client reused), every
event scrubbed by the same scrubber as PostHog's, no host name, no IP, no default PII.

sentry-sdk is imported only when a DSN is configured or the app already imported it: a backend
without Sentry never pays for it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from analytics.privacy.scrubber import Scrubber

logger = logging.getLogger(__name__)

# Keys whose values say who or where the machine is; removed outright rather than scrubbed.
_DROPPED_KEYS = frozenset(
    {"server_name", "ip_address", "REMOTE_ADDR", "remote_addr", "host_name", "hostname"}
)


# Set on an exception once reported (by ErrorReporter), so an exception caught, reported, re-raised
# and then seen again (by an uncaught-exception hook, or by sentry-sdk's own framework integration
# in a joined client) is not reported a second time.
REPORTED_MARK = "__analytics_reported__"


@dataclass(frozen=True)
class SentryLink:
    """What the PostHog side needs to point at the Sentry event."""

    event_id: str | None
    url: str | None


class SentryBridge:
    """Owns our use of sentry-sdk: set-up, tags, scrubbing, capture."""

    def __init__(self, scrubber: Scrubber, dsn: str | None) -> None:
        self._scrubber = scrubber
        self._dsn = dsn
        self._active = False
        self._owns_client = False
        self._host_tags: dict[str, str] = {}

    @property
    def active(self) -> bool:
        return self._active

    @property
    def owns_client(self) -> bool:
        return self._owns_client

    def start(self, *, release: str, environment: str, tags: Mapping[str, str]) -> None:
        """Initialise Sentry from the DSN, or join the client the app already set up."""
        existing = _existing_client()
        if existing is not None:
            self._join(existing, tags)
            return
        if not self._dsn:
            return
        import sentry_sdk
        from sentry_sdk.integrations.excepthook import ExcepthookIntegration
        from sentry_sdk.integrations.threading import ThreadingIntegration

        sentry_sdk.init(
            dsn=self._dsn,
            release=release,
            environment=environment,
            # No PII option: sentry-sdk's default sends none (send_default_pii is deprecated in
            # newer releases, and absent is the same as off in every 2.x). before_send scrubs the rest.
            server_name="",
            include_local_variables=True,
            before_send=self._before_send,
            before_breadcrumb=self._before_breadcrumb,
            # Our hooks report uncaught exceptions to Sentry and PostHog at once, with one event id;
            # Sentry's own would send a second event PostHog cannot link to.
            disabled_integrations=[ExcepthookIntegration(), ThreadingIntegration()],
        )
        self._set_tags(tags)
        self._active = True
        self._owns_client = True

    def _join(self, client: Any, tags: Mapping[str, str]) -> None:
        import sentry_sdk

        # The app's options stay as they are; our scrubbing runs as an event processor before its
        # own before_send, on every event of the process.
        sentry_sdk.get_global_scope().add_event_processor(self._process_event)
        self._set_tags(tags)
        self._active = True
        logger.debug("telemetry joins the app's Sentry client (%s)", type(client).__name__)

    def _set_tags(self, tags: Mapping[str, str]) -> None:
        import sentry_sdk

        scope = sentry_sdk.get_global_scope()
        for key, value in tags.items():
            scope.set_tag(key, value)

    def capture(self, exc: BaseException, context: Mapping[str, Any] | None) -> SentryLink:
        """Send ``exc`` to Sentry (non-blocking: sentry-sdk's worker does the I/O)."""
        if not self._active:
            return SentryLink(None, None)
        import sentry_sdk

        with sentry_sdk.new_scope() as scope:
            if context:
                scope.set_context("analytics", dict(context))
            event_id = sentry_sdk.capture_exception(exc)
        return SentryLink(event_id, event_url(self._dsn, event_id))

    def flush(self, timeout: float) -> None:
        if self._active:
            import sentry_sdk

            sentry_sdk.flush(timeout=timeout)

    def close(self, timeout: float) -> None:
        if self._owns_client:
            import sentry_sdk

            sentry_sdk.get_client().close(timeout=timeout)
        self._active = False
        self._owns_client = False

    # -- scrubbing -----------------------------------------------------------------------------

    # sentry-sdk's Event is a TypedDict; we treat it as the plain dict it is on the wire.
    def _before_send(self, event: Any, hint: dict[str, Any]) -> Any:
        return self._process_event(event, hint)

    def _process_event(self, event: Any, hint: dict[str, Any] | None = None) -> Any:
        if _already_reported(hint):
            # Ours went out first (with the id PostHog links to); this is a framework
            # integration's second capture of the same exception (Starlette's, say).
            return None
        scrubbed = self._scrub(event)
        assert isinstance(scrubbed, dict)
        user = scrubbed.get("user")
        if isinstance(user, dict):
            user.pop("ip_address", None)
            user.pop("email", None)
            user.pop("username", None)
        return scrubbed

    def _before_breadcrumb(self, crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        result = self._scrub(crumb)
        return result if isinstance(result, dict) else None

    def _scrub(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self._scrubber.scrub_text(value)
        if depth > 20:
            return value
        if isinstance(value, dict):
            return {
                (self._scrubber.scrub_text(k) if isinstance(k, str) else k): self._scrub(v, depth + 1)
                for k, v in value.items()
                if k not in _DROPPED_KEYS
            }
        if isinstance(value, list | tuple):
            return [self._scrub(item, depth + 1) for item in value]
        return value


def _already_reported(hint: dict[str, Any] | None) -> bool:
    exc_info = (hint or {}).get("exc_info")
    exc = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None
    return exc is not None and hasattr(exc, REPORTED_MARK)


def _existing_client() -> Any:
    """The app's active Sentry client, without importing sentry-sdk if the app did not."""
    if "sentry_sdk" not in sys.modules:
        return None
    import sentry_sdk

    client = sentry_sdk.get_client()
    # A client initialised without a DSN is "active" but sends nothing: not one to join.
    return client if client.is_active() and client.options.get("dsn") else None


def event_url(dsn: str | None, event_id: str | None) -> str | None:
    """A link to the event in Sentry's web app, where the DSN tells enough to build one.

    Sentry's SaaS DSNs (``o<org>.ingest.<region>.sentry.io``) have a stable search URL; a
    self-hosted DSN names its host and project, whose issue search takes the event id too.
    """
    if not dsn or not event_id:
        return None
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    project = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if not project.isdigit():
        return None
    if host.endswith(".sentry.io"):
        return f"https://sentry.io/issues/?project={project}&query={event_id}"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/issues/?project={project}&query={event_id}"


OnError = Callable[[BaseException], None]
