"""The one never-raise boundary around every public entry point.

Telemetry must never take the host app down. Every public method runs inside :func:`guard`, which
logs an unexpected exception once per place to this library's logger and carries on.

Swallowing hides bugs, so observers can be registered: the test suite registers one (autouse) and
fails any test in which the guard swallowed something.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

logger = logging.getLogger("analytics")

Observer = Callable[[str, BaseException], None]
_observers: list[Observer] = []
_logged_places: set[str] = set()


@contextlib.contextmanager
def guard(place: str) -> Iterator[None]:
    """Run the block; an unexpected ``Exception`` is logged (once per place) and swallowed."""
    try:
        yield
    except Exception as exc:
        if place not in _logged_places:
            _logged_places.add(place)
            logger.error("internal error in %s (telemetry continues)", place, exc_info=exc)
        for observer in list(_observers):
            observer(place, exc)


def add_observer(observer: Observer) -> None:
    """Be told of every exception the guard swallows (for test suites)."""
    _observers.append(observer)


def remove_observer(observer: Observer) -> None:
    if observer in _observers:
        _observers.remove(observer)
