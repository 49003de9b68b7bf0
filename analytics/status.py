"""The status report: one structure behind ``Analytics.status()`` and ``analytics status``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from analytics.queue import journal
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
    level: str = "usage"  # the consent level in force (analytics.consent)
    # Archive retention: day files deleted so far (files, events, bytes, at) and the bounds.
    archive_pruned: dict[str, Any] | None = None
    archive_retention: dict[str, Any] | None = None
    problem: str | None = None  # every problem below, in one line
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# A queue whose oldest event is this old while delivery keeps failing is stalled, not just slow.
STALLED_AFTER_SECONDS = 3600.0


def build_status(
    config: TelemetryConfig,
    *,
    disabled_reason: str | None,
    queue: OfflineQueue | None = None,
    check_integrity: bool = False,
    level: str | None = None,
) -> StatusReport:
    """Report on ``config``'s state folder, through a live ``queue`` or by opening it to read.

    Reading never creates the folder: a machine where telemetry never ran reports an empty queue.
    Nothing here raises for a folder that cannot be read: that is reported as a problem.
    ``check_integrity`` reads every page of the queue file (a command line can afford it).
    """
    from analytics.queue import QueueStats

    state = StateFolder(config.resolved_state_dir)
    if disabled_reason is None:
        disabled_reason = state.opt_out_reason()
    if disabled_reason is not None:
        level = "off"
    elif level is None:
        from analytics.consent import effective_level, read_saved_level

        level = effective_level(config.telemetry_level, read_saved_level(state.root))
    problems: list[str] = []
    try:
        if queue is not None:
            stats = queue.stats()
            facts = _facts(queue.meta)
        else:
            stats, facts, problem = read_queue_stats(state, check_integrity=check_integrity)
            if problem:
                problems.append(problem)
    except STORE_ERRORS as exc:
        stats, facts = QueueStats(0, 0, None, "unreadable", {}), {}
        problems.append(f"state folder unreadable: {getattr(exc, 'strerror', None) or exc}")
    problems.extend(stats.problems)
    facts["paused"] = _current_pause(facts.get("paused"), config)
    stalled = _stalled(stats.depth, stats.oldest_age_seconds, facts)
    if stalled:
        problems.append(stalled)
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
        dead_letters=_quietly(_count_dead_letters, state),
        archived_events=_quietly(count_archived, state),
        level=level,
        archive_pruned=facts.get("archive_pruned"),
        archive_retention={"days": config.archive_days, "max_bytes": config.archive_max_bytes},
        problem="; ".join(problems) or None,
        problems=tuple(problems),
    )


def _current_pause(paused: Any, config: TelemetryConfig) -> dict[str, Any] | None:
    """The pause record, unless the configuration that caused it has been fixed since.

    A pause without an HTTP status was ours (a host without a token): it is recorded when a cycle
    finds no usable sink and only cleared by a delivery, so once the token is set (or the host
    unset) it would otherwise be reported until the app runs again and delivers something.
    """
    if not isinstance(paused, dict):
        return None
    if paused.get("status") is None and (config.token is not None or not config.endpoint):
        return None
    return paused


def _stalled(depth: int, oldest_age: float | None, facts: dict[str, Any]) -> str | None:
    failing = facts.get("paused") or facts.get("last_error")
    if not depth or oldest_age is None or oldest_age < STALLED_AFTER_SECONDS or not failing:
        return None
    return f"delivery stalled: {depth:,} events waiting, the oldest {oldest_age / 3600:,.1f} h old"


def _quietly(count: Callable[[StateFolder], int], state: StateFolder) -> int:
    try:
        return count(state)
    except STORE_ERRORS:
        return 0


def _facts(meta: MetaStore) -> dict[str, Any]:
    return {key: meta.fact(key) for key in ("last_delivery", "last_error", "paused", "archive_pruned")}


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


def read_queue_stats(
    state: StateFolder, *, check_integrity: bool = False
) -> tuple[QueueStats, dict[str, Any], str | None]:
    """Stats of a queue folder without a running app; ``(stats, delivery facts, problem)``."""
    from analytics.queue import QueueStats

    # A command line may wait for the counters; an app's emit() never does.
    meta = MetaStore(state.meta_dir if _is_dir(state.meta_dir) else None, open_budget=5.0)
    drops, facts = meta.drops(), _facts(meta)
    damage = meta.fact("last_damage")
    meta.close()
    problems = []
    if isinstance(damage, dict) and damage.get("lost"):
        problems.append(
            f"the queue file was damaged: {damage.get('recovered', 0)} events recovered, "
            f"{damage['lost']} lost (counted as queue_corrupted)"
        )
    aside = state.damaged_queues()
    if aside:
        problems.append(f"{len(aside)} damaged queue file(s) set aside, read back at the app's next start")
    if not _is_dir(state.queue_dir):
        return QueueStats(0, 0, None, "disk", drops), facts, "; ".join(problems) or None
    try:
        disk = DiskQueue(state.queue_dir)
    except STORE_ERRORS as exc:
        problems.append(f"queue damaged or unreadable: {exc}")
        return QueueStats(0, 0, None, "unreadable", drops), facts, "; ".join(problems)
    try:
        if check_integrity:
            verdict = disk.integrity()
            if verdict != "ok":
                problems.append(f"queue damaged: {verdict}")
        oldest = disk.oldest_timestamp()
        age = None if oldest is None else max(0.0, time.time() - oldest)
        # Events a running app journaled and has not moved yet are waiting too.
        journaled = len(journal.read_all(state.journal_dir))
        stats = QueueStats(len(disk) + journaled, disk.volume(), age, "disk", drops)
    except STORE_ERRORS as exc:
        problems.append(f"queue damaged or unreadable: {exc}")
        stats = QueueStats(0, 0, None, "unreadable", drops)
    finally:
        disk.close()
    return stats, facts, "; ".join(problems) or None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _host_only(endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
