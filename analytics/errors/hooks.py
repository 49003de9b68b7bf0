"""The uncaught-exception hooks: ``sys.excepthook``, ``threading.excepthook`` and an asyncio loop's
exception handler. Each reports, then hands over to whatever hook was there before; uninstalling
restores the previous hook only if ours is still the one in place.

Each report names its hook (``$exception_source``) and a level (``$exception_level``), as
posthog-python's own hooks do: ``fatal`` when the exception ends the process (``sys.excepthook``),
``error`` when the process carries on (a thread or an asyncio task died).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import asyncio


@dataclass(frozen=True)
class Hook:
    """Where an uncaught exception was caught: ``source`` and ``level`` as PostHog names them."""

    source: str
    level: str


SYS_EXCEPTHOOK: Final = Hook("python.sys_excepthook", "fatal")
THREADING_EXCEPTHOOK: Final = Hook("python.threading_excepthook", "error")
ASYNCIO_HANDLER: Final = Hook("python.asyncio_exception_handler", "error")
# The mechanism type posthog-python gives what its hooks catch.
UNCAUGHT_MECHANISM: Final = "onuncaughtexception"

Report = Callable[[BaseException, Hook], None]

# Not errors: the process was asked to stop.
_NOT_ERRORS = (KeyboardInterrupt, SystemExit, GeneratorExit)


class UncaughtHooks:
    def __init__(self, report: Report) -> None:
        self._report = report
        self._previous_sys: Any = None
        self._previous_threading: Any = None
        self._loops: list[tuple[asyncio.AbstractEventLoop, Any]] = []
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        self._previous_sys = sys.excepthook
        self._previous_threading = threading.excepthook
        sys.excepthook = self._sys_hook
        threading.excepthook = self._threading_hook
        self._installed = True

    def install_asyncio(self, loop: asyncio.AbstractEventLoop) -> None:
        if any(known is loop for known, _ in self._loops):
            return
        self._loops.append((loop, loop.get_exception_handler()))
        loop.set_exception_handler(self._asyncio_handler)

    def uninstall(self) -> None:
        if self._installed:
            if sys.excepthook == self._sys_hook:
                sys.excepthook = self._previous_sys
            if threading.excepthook == self._threading_hook:
                threading.excepthook = self._previous_threading
            self._installed = False
        for loop, previous in self._loops:
            if loop.get_exception_handler() == self._asyncio_handler:
                loop.set_exception_handler(previous)
        self._loops.clear()

    def _sys_hook(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if not isinstance(exc, _NOT_ERRORS):
            self._safely_report(exc, SYS_EXCEPTHOOK)
        (self._previous_sys or sys.__excepthook__)(exc_type, exc, tb)

    def _threading_hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and not isinstance(args.exc_value, _NOT_ERRORS):
            self._safely_report(args.exc_value, THREADING_EXCEPTHOOK)
        (self._previous_threading or threading.__excepthook__)(args)

    def _asyncio_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, BaseException) and not isinstance(exc, _NOT_ERRORS):
            self._safely_report(exc, ASYNCIO_HANDLER)
        previous = next((prev for known, prev in self._loops if known is loop), None)
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def _safely_report(self, exc: BaseException, hook: Hook) -> None:
        # A hook that raises would hide the app's own error: never.
        with contextlib.suppress(Exception):
            self._report(exc, hook)
