"""MetaStore: the queue's bookkeeping (drop counts by reason, delivery facts) beside the queue.

Kept in its own diskcache folder so the queue holds nothing but events. When the disk cannot be
used, counts are kept in memory and written out once it can. Nothing here waits on another
process: the store opens in the background (:mod:`analytics.queue.bounded_open`), and a write that
finds the store locked leaves its count pending for the next one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Final

import diskcache

from analytics.forksafe import after_fork_in_child, sqlite_section
from analytics.queue.bounded_open import OPEN_WAIT_SECONDS, BoundedOpen
from analytics.queue.disk import DB_NAME, STORE_ERRORS
from analytics.state import make_private_dir, precreate_private_file

logger = logging.getLogger(__name__)

DROP_PREFIX: Final = "drops."

# Every reason an event can be lost or refused, so `status` can list them all, zeros included.
DROP_REASONS: Final = (
    "queue_full",  # over the event-count bound: the oldest were dropped
    "queue_bytes",  # over the byte bound: the oldest were dropped
    "too_old",  # older than the age bound
    "oversize",  # one event larger than the per-event cap even after truncation
    "invalid_event",  # payload failed validation
    "unknown_event",  # name not in the catalog
    "full_content_disabled",  # a full-content event while full content is off
    "disk_unavailable",  # disk unusable and the memory fallback full
    "queue_corrupted",  # events a damaged queue file lost (what it still held was read back)
    "internal_error",  # a bug of ours stopped an accepted event on its way to the queue
    "purged",  # deleted on purpose by `analytics queue purge`
)
# SQLite's busy timeout for every operation: a locked store is retried later, never waited for.
LOCK_WAIT_SECONDS: Final = 0.01


# How long close() waits for another thread writing the counts, so that its own are written too.
CLOSE_WRITE_WAIT_SECONDS: Final = 1.0


class MetaStore:
    """Counters and small facts, persisted when possible."""

    def __init__(self, directory: Path | None, *, open_budget: float = OPEN_WAIT_SECONDS) -> None:
        self._open_budget = open_budget
        self._pending: Counter[str] = Counter()
        # One writer of the pending counts at a time: two that both took the same snapshot would
        # both add it (a drop counted twice). A caller that finds another at it leaves its counts
        # pending for the next write (a signal handler must not wait for its own thread).
        self._writing = threading.Lock()
        after_fork_in_child(self, MetaStore._after_fork)
        self._facts: dict[str, Any] = {}
        self._unwritten_facts: dict[str, Any] = {}
        self._opening: BoundedOpen[Any] | None = None
        self._cache: Any = None
        if directory is not None:
            self._open(directory)

    def _open(self, directory: Path) -> None:
        def open_store() -> Any:
            make_private_dir(directory)
            precreate_private_file(directory / DB_NAME)
            return diskcache.Cache(
                str(directory), timeout=LOCK_WAIT_SECONDS, eviction_policy="none", cull_limit=0
            )

        self._opening = BoundedOpen(open_store, "meta", self._open_budget)
        self._store()

    def _store(self) -> Any:
        """The open store, or None (still opening, or unusable: counts wait in memory)."""
        opening = self._opening
        if self._cache is None and opening is not None and opening.ready:
            self._opening = None
            self._cache = opening.result()
            if opening.error is not None:
                logger.warning("telemetry counters kept in memory: %s", opening.error)
        return self._cache

    def wait_open(self, seconds: float) -> None:
        """Give a store still opening up to ``seconds`` (only off the app's usual path)."""
        if self._opening is not None:
            self._opening.wait(seconds)

    def count_drop(self, reason: str, count: int = 1) -> None:
        if count <= 0:
            return
        self._pending[reason] += count
        self._write_pending()

    def _after_fork(self) -> None:
        self._writing = threading.Lock()  # a thread of the parent's may have held it

    def _write_pending(self, wait: float = 0.0) -> None:
        taken = self._writing.acquire(timeout=wait) if wait else self._writing.acquire(blocking=False)
        if not taken:
            return
        try:
            self._write_pending_now()
        finally:
            self._writing.release()

    def _write_pending_now(self) -> None:
        cache = self._store()
        if cache is None:
            return
        for key, value in list(self._unwritten_facts.items()):
            try:
                with sqlite_section:
                    cache.set("fact." + key, value)
            except STORE_ERRORS as exc:
                logger.debug("fact %s kept in memory: %s", key, exc)
                break
            if self._unwritten_facts.get(key) is value:
                del self._unwritten_facts[key]
        if not self._pending:
            return
        pending = dict(self._pending)
        try:
            with sqlite_section, cache.transact():
                for reason, count in pending.items():
                    cache.incr(DROP_PREFIX + reason, count)
        except STORE_ERRORS as exc:
            logger.debug("drop counts not written yet: %s", exc)
            return
        self._pending.subtract(pending)
        self._pending = +self._pending  # keeps only what arrived meanwhile

    def drops(self) -> dict[str, int]:
        """Drop counts by reason: what is on disk plus what is waiting to be written."""
        counts: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
        self._write_pending()
        cache = self._store()
        if cache is not None:
            stored: Counter[str] = Counter()
            try:
                with sqlite_section:
                    for key in cache.iterkeys():
                        if isinstance(key, str) and key.startswith(DROP_PREFIX):
                            stored[key.removeprefix(DROP_PREFIX)] += int(cache.get(key, 0))
            except STORE_ERRORS as exc:
                logger.debug("drop counts unreadable: %s", exc)
            else:
                counts.update(stored)
        counts.update(self._pending)
        return dict(counts)

    def set_fact(self, key: str, value: Any) -> None:
        self._facts[key] = value
        self._unwritten_facts[key] = value
        self._write_pending()

    def fact(self, key: str, default: Any = None) -> Any:
        if key in self._unwritten_facts:
            return self._unwritten_facts[key]
        cache = self._store()
        if cache is not None:
            try:
                with sqlite_section:
                    return cache.get("fact." + key, self._facts.get(key, default))
            except STORE_ERRORS:
                pass
        return self._facts.get(key, default)

    def reopen(self, directory: Path) -> None:
        self.close()
        self._open(directory)
        self._write_pending()

    def close(self) -> None:
        if self._opening is not None and (self._pending or self._unwritten_facts):
            self._opening.wait(0.5)  # counts still waiting for the store: give it a moment
        self._write_pending(wait=CLOSE_WRITE_WAIT_SECONDS)  # another writer may be at it: wait
        cache, self._cache, self._opening = self._store(), None, None
        if cache is not None:
            with contextlib.suppress(*STORE_ERRORS), sqlite_section:
                cache.close()
