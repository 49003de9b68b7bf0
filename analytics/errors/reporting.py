"""One exception, reported once: to Sentry first (for its event id), then to PostHog as an
``Error`` domain event carrying that id, so each side links to the other."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from analytics import events as ev
from analytics.errors.sentry import SentryBridge, SentryLink

logger = logging.getLogger(__name__)

# Set on an exception once reported, so an exception caught, reported, re-raised and then seen
# by an uncaught-exception hook is not reported a second time.
_REPORTED = "__analytics_reported__"


class ErrorReporter:
    def __init__(self, bridge: SentryBridge, emit: Callable[[ev.Error], None]) -> None:
        self._bridge = bridge
        self._emit = emit

    def report(
        self, exc: BaseException, context: Mapping[str, Any] | None = None, *, handled: bool = True
    ) -> str | None:
        """Report ``exc``; returns the Sentry event id (None without Sentry). Idempotent per exception."""
        if hasattr(exc, _REPORTED):
            previous: str | None = getattr(exc, _REPORTED) or None
            return previous
        try:
            link = self._bridge.capture(exc, context)
        except Exception as sentry_failure:  # Sentry's trouble must not cost us the PostHog side
            logger.warning("Sentry capture failed: %s", sentry_failure)
            link = SentryLink(None, None)
        self._emit(error_event(exc, context, handled=handled, link=link))
        # An exception type that refuses attributes may be reported twice: the lesser harm.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _REPORTED, link.event_id or "")
        return link.event_id


def error_event(
    exc: BaseException, context: Mapping[str, Any] | None, *, handled: bool, link: SentryLink
) -> ev.Error:
    return ev.Error(
        error_type=type(exc).__qualname__,
        message=_message(exc),
        stack_trace=relative_traceback(exc),
        context=dict(context or {}),
        handled=handled,
        sentry_event_id=link.event_id,
        sentry_url=link.url,
    )


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def relative_traceback(exc: BaseException) -> str:
    """The formatted traceback with each file shown relative to its import root (as Sentry does):
    ``site-packages/requests/api.py`` becomes ``requests/api.py``, app files lose the app's folder."""
    summary = traceback.TracebackException.from_exception(exc)
    roots = _import_roots()
    _relativize(summary, roots, set())
    return "".join(summary.format())


def _relativize(summary: traceback.TracebackException, roots: list[str], seen: set[int]) -> None:
    if id(summary) in seen:
        return
    seen.add(id(summary))
    for frame in summary.stack:
        frame.filename = _relative(frame.filename, roots)
    for chained in (summary.__cause__, summary.__context__):
        if chained is not None:
            _relativize(chained, roots, seen)


def _import_roots() -> list[str]:
    roots = {os.path.abspath(p) for p in sys.path if p} | {os.getcwd()}
    return sorted((root.rstrip(os.sep) + os.sep for root in roots), key=len, reverse=True)


def _relative(filename: str, roots: list[str]) -> str:
    if not os.path.isabs(filename):
        return filename
    for root in roots:
        if filename.startswith(root):
            return filename[len(root) :]
    return filename
