"""Sentry, on our terms: initialised from ``SENTRY_DSN`` (or the app's own client reused), every
event scrubbed by the same scrubber as PostHog's, no host name, no IP, no default PII.

sentry-sdk is imported only when a DSN is configured or the app already imported it: a backend
without Sentry never pays for it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
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


# Exceptions held while Sentry initialises in the background; past this, only PostHog gets them.
MAX_PENDING = 100


class SentryBridge:
    """Owns our use of sentry-sdk: set-up, tags, scrubbing, capture.

    Initialising sentry-sdk costs ~0.1 s (its import; 0.5-1 s with the integrations it would
    auto-enable, which we leave off), so ``start(background=True)`` does it in a thread.
    Exceptions captured meanwhile get their Sentry event id at once (PostHog's ``$exception``
    links to it) and are sent to Sentry with that id when the client is ready.
    """

    def __init__(self, scrubber: Scrubber, dsn: str | None) -> None:
        self._scrubber = scrubber
        self._dsn = dsn
        self._active = False
        self._owns_client = False
        self._host_tags: dict[str, str] = {}
        self._lock = threading.Lock()
        self._initialising: threading.Thread | None = None
        self._pending: list[tuple[BaseException, Mapping[str, Any] | None, str]] = []
        self._closed = False

    @property
    def active(self) -> bool:
        return self._active

    @property
    def owns_client(self) -> bool:
        return self._owns_client

    def start(
        self, *, release: str, environment: str, tags: Mapping[str, str], background: bool = False
    ) -> None:
        """Initialise Sentry from the DSN, or join the client the app already set up (at once:
        joining costs nothing). ``background``: initialise in a thread, see the class."""
        existing = _existing_client()
        if existing is not None:
            self._join(existing, tags)
            return
        if not self._dsn:
            return
        if not background:
            self._init(release, environment, tags)
            return
        # sentry-sdk imports concurrent.futures' thread pool, which registers an exit hook that the
        # interpreter refuses once it is shutting down: imported here, a process that ends during
        # the set-up still completes it (a few ms; asyncio apps have it loaded already).
        import concurrent.futures.thread  # noqa: F401

        thread = threading.Thread(
            target=self._init_in_background, args=(release, environment, tags), name="analytics-sentry-init"
        )
        # Not a daemon: a process ending during the set-up (an uncaught exception right after
        # start()) waits for it before the interpreter shuts down, when sentry-sdk could no longer
        # register its exit hook, so what was held still reaches Sentry. The wait is bounded by
        # the set-up itself, the cost start() would otherwise have paid up front.
        thread.daemon = False
        self._initialising = thread
        thread.start()

    def _init_in_background(self, release: str, environment: str, tags: Mapping[str, str]) -> None:
        try:
            self._init(release, environment, tags)
        except Exception as failure:  # the guard of start() is not on this thread
            logger.warning("Sentry not initialised (%s): errors go to PostHog only", failure)
        with self._lock:
            pending, self._pending = self._pending, []
            closed = self._closed
        if closed:  # close() gave up waiting for us: leave no client running behind it
            self._close_client(timeout=1.0)
            return
        for held, context, event_id in pending:
            try:
                self._send(held, context, event_id)
            except Exception as failure:
                logger.warning("Sentry capture failed: %s", failure)

    def _init(self, release: str, environment: str, tags: Mapping[str, str]) -> None:
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
            # Not the framework and library integrations sentry-sdk would switch on because their
            # packages are installed (Starlette, FastAPI, httpx, OpenAI...): they attach request
            # URLs with their query strings and headers, which analytics.integrations.asgi
            # deliberately never sends, and importing them is 0.4-0.5 s of the set-up. An app that
            # wants them initialises Sentry itself; we join its client.
            auto_enabling_integrations=False,
        )
        self._set_tags(tags)
        with self._lock:
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
        """Send ``exc`` to Sentry (non-blocking: sentry-sdk's worker does the I/O); while Sentry
        is still initialising, hold it and name the event id it will be sent with."""
        with self._lock:
            if not self._active:
                if self._initialising is None or self._closed or len(self._pending) >= MAX_PENDING:
                    return SentryLink(None, None)
                event_id = uuid.uuid4().hex
                self._pending.append((exc, context, event_id))
                return SentryLink(event_id, event_url(self._dsn, event_id))
        return self._link(self._send(exc, context))

    def _link(self, event_id: str | None) -> SentryLink:
        return SentryLink(event_id, event_url(self._dsn, event_id))

    def _send(
        self, exc: BaseException, context: Mapping[str, Any] | None, event_id: str | None = None
    ) -> str | None:
        import sentry_sdk
        from sentry_sdk.utils import event_from_exception

        with sentry_sdk.new_scope() as scope:
            if context:
                scope.set_context("analytics", dict(context))
            if event_id is None:
                return sentry_sdk.capture_exception(exc)
            # Built as capture_exception builds it, with the id PostHog already links to.
            event, hint = event_from_exception(exc, client_options=sentry_sdk.get_client().options)
            event["event_id"] = event_id
            return sentry_sdk.capture_event(event, hint=hint)

    def wait_until_initialised(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) for a background set-up; True when none is running."""
        thread = self._initialising
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.wait_until_initialised(timeout)  # held exceptions are sent when it ends
        if self._active:
            import sentry_sdk

            sentry_sdk.flush(timeout=max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float) -> None:
        finished = self.wait_until_initialised(timeout)
        with self._lock:
            self._closed = True
            if not finished:
                return  # the set-up thread closes its client itself when it ends
        self._close_client(timeout)

    def _close_client(self, timeout: float) -> None:
        with self._lock:
            owned, self._owns_client, self._active = self._owns_client, False, False
        if owned:
            import sentry_sdk

            sentry_sdk.get_client().close(timeout=timeout)

    # -- scrubbing -----------------------------------------------------------------------------

    # sentry-sdk's Event is a TypedDict; we treat it as the plain dict it is on the wire.
    def _before_send(self, event: Any, hint: dict[str, Any]) -> Any:
        return self._process_event(event, hint)

    def _process_event(self, event: Any, hint: dict[str, Any] | None = None) -> Any:
        if _reported_as_another_event(event, hint):
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


def _reported_as_another_event(event: Any, hint: dict[str, Any] | None) -> bool:
    """True for an exception we reported already under another event id (a held exception sent
    once Sentry is ready carries the id it was reported with, and goes through)."""
    exc_info = (hint or {}).get("exc_info")
    exc = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None
    if exc is None or not hasattr(exc, REPORTED_MARK):
        return False
    return bool(getattr(exc, REPORTED_MARK, "") != event.get("event_id"))


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
