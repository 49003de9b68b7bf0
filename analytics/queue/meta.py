"""MetaStore: the queue's bookkeeping (drop counts by reason, delivery facts) beside the queue.

Kept in its own diskcache folder so the queue holds nothing but events. When the disk cannot be
used, counts are kept in memory and written out once it can.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Final

import diskcache

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
    "queue_corrupted",  # a damaged queue file was set aside (its content kept, not read)
    "purged",  # deleted on purpose by `analytics queue purge`
)


class MetaStore:
    """Counters and small facts, persisted when possible."""

    def __init__(self, directory: Path | None) -> None:
        self._pending: Counter[str] = Counter()
        self._facts: dict[str, Any] = {}
        self._cache: Any = None
        if directory is not None:
            self._open(directory)

    def _open(self, directory: Path) -> None:
        try:
            make_private_dir(directory)
            precreate_private_file(directory / DB_NAME)
            self._cache = diskcache.Cache(str(directory), timeout=2.0, eviction_policy="none", cull_limit=0)
        except STORE_ERRORS as exc:
            logger.warning("telemetry counters kept in memory: %s", exc)
            self._cache = None

    def count_drop(self, reason: str, count: int = 1) -> None:
        if count <= 0:
            return
        self._pending[reason] += count
        self._write_pending()

    def _write_pending(self) -> None:
        if self._cache is None or not self._pending:
            return
        try:
            with self._cache.transact():
                for reason, count in self._pending.items():
                    self._cache.incr(DROP_PREFIX + reason, count)
            self._pending.clear()
        except STORE_ERRORS as exc:
            logger.debug("drop counts not written yet: %s", exc)

    def drops(self) -> dict[str, int]:
        """Drop counts by reason: what is on disk plus what is waiting to be written."""
        counts: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
        if self._cache is not None:
            try:
                for key in self._cache.iterkeys():
                    if isinstance(key, str) and key.startswith(DROP_PREFIX):
                        counts[key.removeprefix(DROP_PREFIX)] += int(self._cache.get(key, 0))
            except STORE_ERRORS as exc:
                logger.debug("drop counts unreadable: %s", exc)
        counts.update(self._pending)
        return dict(counts)

    def set_fact(self, key: str, value: Any) -> None:
        self._facts[key] = value
        if self._cache is not None:
            try:
                self._cache.set("fact." + key, value)
            except STORE_ERRORS as exc:
                logger.debug("fact %s kept in memory: %s", key, exc)

    def fact(self, key: str, default: Any = None) -> Any:
        if self._cache is not None:
            try:
                return self._cache.get("fact." + key, self._facts.get(key, default))
            except STORE_ERRORS:
                pass
        return self._facts.get(key, default)

    def reopen(self, directory: Path) -> None:
        self.close()
        self._open(directory)
        self._write_pending()

    def close(self) -> None:
        if self._cache is not None:
            with contextlib.suppress(*STORE_ERRORS):
                self._cache.close()
            self._cache = None
