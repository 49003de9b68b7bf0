"""The status report: one structure behind ``Analytics.status()`` and ``analytics status``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from analytics.queue.disk import STORE_ERRORS, DiskQueue
from analytics.queue.meta import MetaStore
from analytics.state import StateFolder

if TYPE_CHECKING:
    from analytics.config import TelemetryConfig
    from analytics.queue import OfflineQueue, QueueStats


@dataclass(frozen=True)
class StatusReport:
    enabled: bool
    disabled_reason: str | None
    state_dir: str
    state_dir_exists: bool
    destination: str
    posthog_host: str | None
    queue_depth: int
    queue_bytes: int
    oldest_event_age_seconds: float | None
    storage: str
    drops: dict[str, int]
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_status(
    config: TelemetryConfig, *, disabled_reason: str | None, queue: OfflineQueue | None = None
) -> StatusReport:
    """Report on ``config``'s state folder, through a live ``queue`` or by opening it to read.

    Reading never creates the folder: a machine where telemetry never ran reports an empty queue.
    """
    state = StateFolder(config.resolved_state_dir)
    if disabled_reason is None and state.opted_out:
        disabled_reason = "opted out (set_enabled(False))"
    problem = None
    if queue is not None:
        stats = queue.stats()
    else:
        stats, problem = read_queue_stats(state)
    return StatusReport(
        enabled=disabled_reason is None,
        disabled_reason=disabled_reason,
        state_dir=str(state.root),
        state_dir_exists=state.exists(),
        destination=config.destination,
        posthog_host=_host_only(config.endpoint),
        queue_depth=stats.depth,
        queue_bytes=stats.bytes_on_disk,
        oldest_event_age_seconds=stats.oldest_age_seconds,
        storage=stats.storage,
        drops=stats.drops,
        problem=problem,
    )


def read_queue_stats(state: StateFolder) -> tuple[QueueStats, str | None]:
    """Stats of a queue folder without a running app; ``(stats, problem)``."""
    from analytics.queue import QueueStats

    meta = MetaStore(state.meta_dir if state.meta_dir.is_dir() else None)
    drops = meta.drops()
    meta.close()
    if not state.queue_dir.is_dir():
        return QueueStats(0, 0, None, "disk", drops), None
    try:
        disk = DiskQueue(state.queue_dir)
    except STORE_ERRORS as exc:
        return QueueStats(0, 0, None, "unreadable", drops), f"queue unreadable: {exc}"
    try:
        oldest = disk.oldest_timestamp()
        age = None if oldest is None else max(0.0, time.time() - oldest)
        return QueueStats(len(disk), disk.volume(), age, "disk", drops), None
    finally:
        disk.close()


def _host_only(endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
