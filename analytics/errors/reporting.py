"""One exception, reported once: to Sentry first (for its event id), then to PostHog as an
``Error`` domain event carrying that id, so each side links to the other."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from analytics import events as ev
from analytics.errors.exception_list import build_exception_list
from analytics.errors.hooks import UNCAUGHT_MECHANISM, Hook
from analytics.errors.sentry import REPORTED_MARK, SentryBridge, SentryLink

logger = logging.getLogger(__name__)

_REPORTED = REPORTED_MARK


class ErrorReporter:
    """``project_root`` decides which frames are the app's own (``in_app``); by default the working
    directory when the reporter is made, as posthog-python's client decides it."""

    def __init__(
        self, bridge: SentryBridge, emit: Callable[[ev.Error], None], *, project_root: str | None = None
    ) -> None:
        self._bridge = bridge
        self._emit = emit
        self._project_root = project_root if project_root is not None else working_directory()

    def report(
        self,
        exc: BaseException,
        context: Mapping[str, Any] | None = None,
        *,
        handled: bool = True,
        hook: Hook | None = None,
    ) -> str | None:
        """Report ``exc``; returns the Sentry event id (None without Sentry). Idempotent per exception.

        ``hook`` names the uncaught-exception hook that caught it (``handled`` is then False).
        """
        if hasattr(exc, _REPORTED):
            previous: str | None = getattr(exc, _REPORTED) or None
            return previous
        try:
            link = self._bridge.capture(exc, context)
        except Exception as sentry_failure:  # Sentry's trouble must not cost us the PostHog side
            logger.warning("Sentry capture failed: %s", sentry_failure)
            link = SentryLink(None, None)
        self._emit(
            error_event(exc, context, handled=handled, link=link, hook=hook, project_root=self._project_root)
        )
        # An exception type that refuses attributes may be reported twice: the lesser harm.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _REPORTED, link.event_id or "")
        return link.event_id


def error_event(
    exc: BaseException,
    context: Mapping[str, Any] | None,
    *,
    handled: bool,
    link: SentryLink,
    hook: Hook | None = None,
    project_root: str | None = None,
) -> ev.Error:
    """The ``Error`` domain event for ``exc``: its ``$exception_list`` built as posthog-python builds
    it; from an uncaught-exception hook, that hook's level and name and an unhandled mechanism."""
    return ev.Error(
        error_type=type(exc).__qualname__,
        message=_message(exc),
        exception_list=_exception_list(exc, handled=handled, hook=hook, project_root=project_root),
        context=dict(context or {}),
        handled=handled,
        level=hook.level if hook is not None else "error",
        source=hook.source if hook is not None else None,
        sentry_event_id=link.event_id,
        sentry_url=link.url,
    )


def _exception_list(
    exc: BaseException, *, handled: bool, hook: Hook | None, project_root: str | None
) -> list[dict[str, Any]]:
    mechanism_type = UNCAUGHT_MECHANISM if hook is not None else "generic"
    try:
        return build_exception_list(
            exc, handled=handled, mechanism_type=mechanism_type, project_root=project_root
        )
    except Exception as failure:  # a hostile exception object must not cost us the report
        logger.warning("exception details unavailable (%s): sending type and message only", failure)
        mechanism = {"type": mechanism_type, "handled": handled, "exception_id": 0, "synthetic": False}
        return [{"mechanism": mechanism, "type": type(exc).__qualname__, "value": _message(exc)}]


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def working_directory() -> str | None:
    """The project root posthog-python uses for ``in_app``: the process's working directory."""
    try:
        return os.getcwd()
    except OSError:  # deleted under us
        return None
