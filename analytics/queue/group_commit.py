"""GroupCommitter: an optional mode for high-rate producers (``TELEMETRY_GROUP_COMMIT_MS``).

``emit()`` validates the event and hands it over; this thread maps, scrubs and writes everything
handed over in the last window in one transaction. The promise is stated, not implied: an event is
on disk within the window (default 50 ms) of ``emit()`` returning, ``flush()`` and ``shutdown()``
commit first, and a process killed outright loses at most the events of the last window. Nothing
reaches the disk unscrubbed: mapping happens here, before the write.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
MAX_PENDING = 5_000


class GroupCommitter(Generic[Item]):
    def __init__(self, commit: Callable[[list[Item]], None], window_seconds: float) -> None:
        self._commit = commit
        self._window = window_seconds
        self._pending: deque[Item] = deque()
        # Re-entrant: a signal handler that shuts down while this thread commits must not deadlock.
        self._commit_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _forget_in_child(self)

    def submit(self, item: Item) -> None:
        """Hand over one item (deque.append is atomic: no lock on the caller's path).

        A producer faster than the disk commits in its own thread once MAX_PENDING items wait:
        backpressure, so memory stays bounded and nothing is dropped.
        """
        self._pending.append(item)
        if self._thread is None:
            self._start()
        if len(self._pending) >= MAX_PENDING:
            self.commit_pending()

    def _start(self) -> None:
        with self._commit_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="analytics-group-commit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._window)
            self._wake.clear()
            self.commit_pending()

    def commit_pending(self) -> int:
        """Write everything handed over so far; returns how many items were committed."""
        with self._commit_lock:
            items: list[Item] = []
            while True:
                try:
                    items.append(self._pending.popleft())
                except IndexError:
                    break
            if items:
                self._commit(items)
            return len(items)

    def stop(self, *, commit: bool = True) -> None:
        """Stop the thread; commit what is pending, or (opting out) throw it away unwritten."""
        self._stop.set()
        if not commit:
            self._pending.clear()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        if commit:
            self.commit_pending()
        else:
            self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)


def _forget_in_child(committer: GroupCommitter[Any]) -> None:
    """A forked child must not commit its parent's pending events a second time, nor wait on a
    thread it did not inherit."""
    ref = weakref.ref(committer)

    def reset() -> None:
        target = ref()
        if target is not None:
            target._pending = deque()
            target._thread = None
            target._commit_lock = threading.RLock()
            target._wake = threading.Event()

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=reset)
