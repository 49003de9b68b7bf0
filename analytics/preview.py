"""The "see what we send" preview: the newest messages waiting in the queue and the newest already
delivered to the local archive, exactly as they are (or were) sent. Read only; nothing moves."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analytics.queue import OfflineQueue


@dataclass(frozen=True)
class RecentMessages:
    """Newest last in each list. ``archived`` is empty when delivery goes to PostHog: what it
    acknowledged is no longer on this machine."""

    queued: list[dict[str, Any]] = field(default_factory=list)
    archived: list[dict[str, Any]] = field(default_factory=list)


def recent_messages(queue: OfflineQueue | None, archive_dir: Path, limit: int) -> RecentMessages:
    queued = [_decoded(record) for record in queue.newest(limit)] if queue is not None else []
    return RecentMessages(
        queued=[m for m in queued if m is not None],
        archived=newest_archived(archive_dir, limit),
    )


def newest_archived(folder: Path, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` archived messages, reading day files newest first and stopping as soon
    as there are enough (a 90-day archive is never read whole for a preview)."""
    if limit <= 0 or not folder.is_dir():
        return []
    found: deque[dict[str, Any]] = deque()
    for path in sorted(folder.glob("*.jsonl"), reverse=True):
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue  # pruned or unreadable meanwhile: the preview shows what it can
        day = [m for m in (_decoded(line) for line in lines) if m is not None]
        found.extendleft(reversed(day[-(limit - len(found)) :]))
        if len(found) >= limit:
            break
    return list(found)


def _decoded(record: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(record)
    except ValueError:
        return None  # a line cut by a crash mid-write: the queue still holds that event
    return message if isinstance(message, dict) else None
