"""DeadLetterStore: events PostHog refused (400 on the event alone, or too large even alone).

They leave the queue so the rest can flow, but they are kept with the reason, for a developer to
read, fix or requeue (``analytics dead-letters``). Nothing refused is ever silently deleted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache

from analytics.queue.disk import DB_NAME
from analytics.state import make_private_dir, precreate_private_file


@dataclass(frozen=True)
class DeadLetter:
    key: int
    record: bytes
    reason: str
    status: int | None
    dead_at: float

    def message(self) -> Any:
        try:
            return json.loads(self.record)
        except ValueError:
            return self.record.decode("utf-8", "replace")


class DeadLetterStore:
    def __init__(self, directory: Path) -> None:
        make_private_dir(directory)
        precreate_private_file(directory / DB_NAME)
        self._cache = diskcache.Cache(str(directory), timeout=2.0, eviction_policy="none", cull_limit=0)

    def add(self, record: bytes, *, reason: str, status: int | None, now: float | None = None) -> None:
        entry = {"reason": reason, "status": status, "dead_at": now if now is not None else time.time()}
        self._cache.push(json.dumps(entry).encode() + b"\n" + record)

    def __iter__(self) -> Iterator[DeadLetter]:
        for key in self._cache.iterkeys():
            value = self._cache.get(key)
            if value is None:
                continue
            header, _, record = bytes(value).partition(b"\n")
            entry = json.loads(header)
            yield DeadLetter(key, record, entry["reason"], entry["status"], entry["dead_at"])

    def __len__(self) -> int:
        return len(self._cache)

    def remove(self, keys: list[int]) -> int:
        removed = 0
        with self._cache.transact():
            for key in keys:
                removed += bool(self._cache.delete(key))
        return removed

    def close(self) -> None:
        self._cache.close()
