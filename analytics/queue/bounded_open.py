"""Opening a diskcache store without letting the caller wait on another process.

``diskcache.Cache()`` writes its settings on every open and, when another process holds the
database's write lock, retries for up to 60 seconds whatever timeout it was given. An app's
``emit()`` must never wait that long, so the open runs in a short-lived thread: the caller waits a
few milliseconds at most, and a store that opens later is handed over when it is ready.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from analytics.forksafe import sqlite_section

logger = logging.getLogger(__name__)

T = TypeVar("T")
OPEN_WAIT_SECONDS: Final = 0.05


class BoundedOpen(Generic[T]):
    """``factory()`` in a thread; :meth:`result` answers without waiting once the budget is spent."""

    def __init__(self, factory: Callable[[], T], name: str, budget: float = OPEN_WAIT_SECONDS) -> None:
        self._factory = factory
        self._done = threading.Event()
        self._value: T | None = None
        self.error: BaseException | None = None
        thread = threading.Thread(target=self._run, name=f"analytics-open-{name}", daemon=True)
        thread.start()
        self._done.wait(budget)

    def _run(self) -> None:
        try:
            with sqlite_section:
                self._value = self._factory()
        except Exception as exc:  # reported through .error; the caller decides what it means
            self.error = exc
        finally:
            self._done.set()

    def wait(self, seconds: float) -> bool:
        return self._done.wait(seconds)

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def result(self) -> T | None:
        """The opened store, or None while it is still opening (or when it failed: see ``error``)."""
        return self._value if self._done.is_set() else None
