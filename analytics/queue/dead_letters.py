"""DeadLetterStore: events PostHog refused (400 on the event alone, or too large even alone).

They leave the queue so the rest can flow, but they are kept with the reason, for a developer to
read, fix or requeue (``analytics dead-letters``). Nothing refused is ever silently deleted.
Stored in a DiskQueue of its own: one JSON header line (reason, status, time), then the message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analytics.queue.disk import DiskQueue


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
        self._queue = DiskQueue(directory, put_timeout=2.0)  # off the app's path: it may wait

    def add(self, record: bytes, *, reason: str, status: int | None, now: float | None = None) -> None:
        header = {"reason": reason, "status": status, "dead_at": now if now is not None else time.time()}
        self._queue.put(json.dumps(header).encode() + b"\n" + record)

    def __iter__(self) -> Iterator[DeadLetter]:
        for key, value in self._queue.iter_all():
            header, _, record = value.partition(b"\n")
            entry = json.loads(header)
            yield DeadLetter(key, record, entry["reason"], entry["status"], entry["dead_at"])

    def __len__(self) -> int:
        return len(self._queue)

    def remove(self, keys: list[int]) -> int:
        return self._queue.ack(keys)

    def close(self) -> None:
        self._queue.close()
