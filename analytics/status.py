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
    last_delivery: dict[str, Any] | None = None
    last_error: dict[str, Any] | None = None
    paused: dict[str, Any] | None = None
    dead_letters: int = 0
    archived_events: int = 0
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
        facts = _facts(queue.meta)
    else:
        stats, facts, problem = read_queue_stats(state)
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
        last_delivery=facts.get("last_delivery"),
        last_error=facts.get("last_error"),
        paused=facts.get("paused"),
        dead_letters=_count_dead_letters(state),
        archived_events=count_archived(state),
        problem=problem,
    )


def _facts(meta: MetaStore) -> dict[str, Any]:
    return {key: meta.fact(key) for key in ("last_delivery", "last_error", "paused")}


def _count_dead_letters(state: StateFolder) -> int:
    if not state.dead_letter_dir.is_dir():
        return 0
    from analytics.queue.dead_letters import DeadLetterStore

    try:
        store = DeadLetterStore(state.dead_letter_dir)
    except STORE_ERRORS:
        return 0
    try:
        return len(store)
    finally:
        store.close()


def count_archived(state: StateFolder) -> int:
    """Events in the local archive (lines of its JSONL files)."""
    if not state.archive_dir.is_dir():
        return 0
    total = 0
    for path in state.archive_dir.glob("*.jsonl"):
        with path.open("rb") as handle:
            total += sum(1 for _ in handle)
    return total


def read_queue_stats(state: StateFolder) -> tuple[QueueStats, dict[str, Any], str | None]:
    """Stats of a queue folder without a running app; ``(stats, delivery facts, problem)``."""
    from analytics.queue import QueueStats

    # A command line may wait for the counters; an app's emit() never does.
    meta = MetaStore(state.meta_dir if state.meta_dir.is_dir() else None, open_budget=5.0)
    drops, facts = meta.drops(), _facts(meta)
    meta.close()
    if not state.queue_dir.is_dir():
        return QueueStats(0, 0, None, "disk", drops), facts, None
    try:
        disk = DiskQueue(state.queue_dir)
    except STORE_ERRORS as exc:
        return QueueStats(0, 0, None, "unreadable", drops), facts, f"queue unreadable: {exc}"
    try:
        oldest = disk.oldest_timestamp()
        age = None if oldest is None else max(0.0, time.time() - oldest)
        return QueueStats(len(disk), disk.volume(), age, "disk", drops), facts, None
    finally:
        disk.close()


def _host_only(endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
