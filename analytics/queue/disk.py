"""DiskQueue: the events waiting on the user's disk, in a diskcache ``Cache``.

Records are the final PostHog messages as UTF-8 JSON bytes, pushed with integer keys in emit
order. A record leaves only through :meth:`DiskQueue.ack` (after the sink accepted it) or
:meth:`DiskQueue.drop_oldest` (a bound was hit, and the caller counts it): there is no pop.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (diskcache's defaults): a committed append
survives the process being killed at any instant; only a power cut may lose the last commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import diskcache

from analytics.state import make_private_dir, precreate_private_file

DB_NAME: Final = "cache.db"
# diskcache's own errors plus SQLite's and the file system's: all mean "this disk store is unwell".
STORE_ERRORS: Final = (sqlite3.Error, OSError, diskcache.Timeout)


class DiskQueue:
    """An append-only queue of encoded messages, safe across threads and processes."""

    def __init__(self, directory: Path, *, timeout: float = 2.0) -> None:
        self.directory = directory
        make_private_dir(directory)
        precreate_private_file(directory / DB_NAME)
        self._cache = diskcache.Cache(
            str(directory),
            timeout=timeout,
            eviction_policy="none",  # we drop by our own bounds, and count every drop
            cull_limit=0,  # no expiry scan on every append
            statistics=False,
            size_limit=2**62,
        )
        # Touch the table now, so a damaged file is found at open rather than on the first emit.
        len(self._cache)

    @property
    def db_path(self) -> Path:
        return self.directory / DB_NAME

    def put(self, record: bytes) -> int:
        key: int = self._cache.push(record)
        return key

    def put_many(self, records: Iterable[bytes]) -> None:
        with self._cache.transact():
            for record in records:
                self._cache.push(record)

    def keys(self, limit: int | None = None) -> list[int]:
        """The first ``limit`` keys, oldest first."""
        result: list[int] = []
        for key in self._cache.iterkeys():
            if limit is not None and len(result) >= limit:
                break
            result.append(key)
        return result

    def peek(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest ``limit`` records, left in place."""
        batch: list[tuple[int, bytes]] = []
        for key in self.keys(limit):
            value = self._cache.get(key)
            if value is not None:  # acknowledged by another process since we listed it
                batch.append((key, bytes(value)))
        return batch

    def newest(self, count: int) -> list[tuple[int, bytes]]:
        """The newest ``count`` records, oldest of them first."""
        batch: list[tuple[int, bytes]] = []
        for key in self._cache.iterkeys(reverse=True):
            if len(batch) >= count:
                break
            value = self._cache.get(key)
            if value is not None:
                batch.append((key, bytes(value)))
        return batch[::-1]

    def iter_all(self) -> Iterator[tuple[int, bytes]]:
        for key in self._cache.iterkeys():
            value = self._cache.get(key)
            if value is not None:
                yield key, bytes(value)

    def ack(self, keys: Iterable[int]) -> int:
        """Delete delivered records in one transaction; returns how many were still there."""
        removed = 0
        with self._cache.transact():
            for key in keys:
                removed += bool(self._cache.delete(key))
        return removed

    def drop_oldest(self, count: int) -> int:
        """Remove up to ``count`` of the oldest records (a bound was hit)."""
        return self.ack(self.keys(count)) if count > 0 else 0

    def __len__(self) -> int:
        return len(self._cache)

    def volume(self) -> int:
        """Bytes the queue takes on disk."""
        return int(self._cache.volume())

    def oldest_timestamp(self) -> float | None:
        """Emit time (epoch seconds) of the oldest record, or None when empty."""
        for _key, record in self.peek(1):
            return record_timestamp(record)
        return None

    def close(self) -> None:
        self._cache.close()


def record_timestamp(record: bytes) -> float | None:
    """The emit time of an encoded message, or None when it cannot be read."""
    try:
        message: Any = json.loads(record)
        return datetime.fromisoformat(str(message["timestamp"]).replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError):
        return None
