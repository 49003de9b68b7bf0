"""The one never-raise boundary around every public entry point.

Telemetry must never take the host app down. Every public method runs inside :func:`guard`, which
logs an unexpected exception once per place to this library's logger and carries on.

Swallowing hides bugs, so observers can be registered: the test suite registers one (autouse) and
fails any test in which the guard swallowed something.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

logger = logging.getLogger("analytics")

Observer = Callable[[str, BaseException], None]
_observers: list[Observer] = []
_logged_places: set[str] = set()


class guard:  # noqa: N801 - used like a function: `with guard("emit"):`
    """Run the block; an unexpected ``Exception`` is logged (once per place) and swallowed.

    A class rather than a ``@contextmanager`` generator: it wraps every ``emit()``, and the
    generator form costs a microsecond more per call.
    """

    __slots__ = ("place",)

    def __init__(self, place: str) -> None:
        self.place = place

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # nothing raised, or KeyboardInterrupt / SystemExit: not ours to stop
        if self.place not in _logged_places:
            _logged_places.add(self.place)
            logger.error("internal error in %s (telemetry continues)", self.place, exc_info=exc)
        for observer in list(_observers):
            observer(self.place, exc)
        return True


def add_observer(observer: Observer) -> None:
    """Be told of every exception the guard swallows (for test suites)."""
    _observers.append(observer)


def remove_observer(observer: Observer) -> None:
    if observer in _observers:
        _observers.remove(observer)
