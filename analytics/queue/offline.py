"""OfflineQueue: the DiskQueue with its bounds and its safety nets.

- Bounds (events, bytes, age): the oldest go first, and every one is counted by reason.
- A damaged queue file is set aside and a fresh queue started at once; later, off the app's path
  (:meth:`OfflineQueue.maintain`), what the damaged file still holds is read back into the queue
  and what it lost is counted, by event (``queue_corrupted``).
- A queue that cannot be written (read-only folder, full disk, another process holding the write
  lock for more than a few milliseconds) puts the record in a bounded memory buffer, which is
  written to disk as soon as the disk works again and can be delivered from memory meanwhile.
  Whatever is still only in memory when the queue closes is counted (``disk_unavailable``).
- A state folder deleted under a running app is noticed, recreated, and what the old (unlinked)
  database still held is copied into the new one.
- ``put`` appends to this process's journal (:mod:`analytics.queue.journal`): one ``write()``,
  durable against ``kill -9``. A background thread (:class:`JournalMover`) moves the journal into
  the diskcache queue a segment at a time and enforces the bounds there, off the app's path; the
  uploader moves it too before it reads a batch, and segments left by dead processes are adopted.
- A forked child keeps no copy of its parent's memory buffer (the parent delivers it), and does
  not touch SQLite at all if the fork caught one of our threads inside it.

``put`` never raises for any of these, and never waits long: the host app must not notice.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from analytics.forksafe import after_fork_in_child, sqlite_is_safe
from analytics.queue.disk import (
    PUT_WAIT_SECONDS,
    SMALL_CHUNK,
    STORE_ERRORS,
    DiskQueue,
    StoreBusy,
    record_timestamp,
)
from analytics.queue.journal import (
    Journal,
    ReadBack,
    Segment,
    adopt_orphans,
    parse,
    read_fd,
    segment_paths,
)
from analytics.queue.meta import MetaStore
from analytics.queue.salvage import salvage
from analytics.queue.shorthand import unpack
from analytics.state import DISKCACHE_FILES, StateFolder, purge_folder

logger = logging.getLogger(__name__)

# How many appends may pass between two bound checks when the queue is far from its limit.
MAX_PUTS_BETWEEN_CHECKS: Final = 256
DROP_CHUNK: Final = 500
WAL_CHECKPOINT_BYTES: Final = 8 * 1024 * 1024
# Memory records written back to disk at a time, on an app's put (the uploader writes the rest).
DRAIN_ON_PUT: Final = 100
# How far the journal may run ahead of the byte bound while the background step catches up.
JOURNAL_SLACK_BYTES: Final = 16 * 1024 * 1024
# How often the background thread moves the journal into the queue when nobody asks sooner.
MOVE_INTERVAL_SECONDS: Final = 0.2
# While the app emits (an append within the last QUIET), the background thread leaves the journal
# be: moving it is SQLite work, which beside a busy app takes the GIL and a CPU from it, and the
# journaled events are already durable. It moves anyway once the journal holds the slack's worth
# of bytes or has held an event for DEFER_LONGEST: a stream that never pauses is still delivered.
MOVE_QUIET_SECONDS: Final = 0.05
MOVE_DEFER_LONGEST_SECONDS: Final = 2.0
# How often it looks for segments left by processes that died.
ADOPT_INTERVAL_SECONDS: Final = 5.0
# How long a move waits for SQLite's write lock (it runs in the background: it may wait).
MOVE_WAIT_SECONDS: Final = 1.0
# How long one move may go on. Segments move one transaction each; behind a producer that never
# pauses there is always another, so a move stops at this budget (between segments) and the rest
# stays journaled, durable, for the next round: flush() and shutdown() keep their deadlines, and
# the background thread notices it was asked to stop.
MOVE_BUDGET_SECONDS: Final = 0.25
# A close moves less: shutdown(timeout) returns within its timeout and a second.
CLOSE_MOVE_BUDGET_SECONDS: Final = 0.1


@dataclass(frozen=True)
class QueueBounds:
    max_events: int
    max_bytes: int
    max_age_seconds: float


@dataclass(frozen=True)
class MoveDeferral:
    """When the background thread may leave the journal be (see MOVE_QUIET_SECONDS)."""

    quiet_seconds: float = MOVE_QUIET_SECONDS
    longest_seconds: float = MOVE_DEFER_LONGEST_SECONDS
    most_bytes: int = JOURNAL_SLACK_BYTES


@dataclass(frozen=True)
class QueueStats:
    depth: int
    bytes_on_disk: int
    oldest_age_seconds: float | None
    storage: str  # "disk", or "memory" while the disk cannot be used
    drops: dict[str, int]
    in_memory: int = 0  # records only in the memory buffer (lost if the process ends now)
    problems: tuple[str, ...] = ()  # what is wrong with the queue, for status and doctor


class OfflineQueue:
    """Where ``emit()`` leaves its message. Thread-safe; several processes may share the folder."""

    def __init__(
        self,
        state: StateFolder,
        bounds: QueueBounds,
        *,
        clock: Callable[[], float] = time.time,
        memory_limit: int = 10_000,
        health_interval: float = 1.0,
        retry_interval: float = 5.0,
        on_recreated: Callable[[], None] | None = None,
        move_deferral: MoveDeferral = MoveDeferral(),
    ) -> None:
        self._state = state
        self._move_deferral = move_deferral
        self._bounds = bounds
        self._clock = clock
        self._memory_limit = memory_limit
        self._health_interval = health_interval
        self._retry_interval = retry_interval
        self._on_recreated = on_recreated
        self._lock = threading.RLock()
        self._memory: deque[tuple[int, bytes]] = deque()
        self._memory_key = 0
        self._in_flight: set[int] = set()  # memory keys peeked for a send not yet acknowledged
        self._puts_until_check = 0
        self._bytes_until_check = 0
        self._next_health = 0.0
        self._next_retry = 0.0
        self._identity: tuple[int, int] | None = None
        self._disk_problem: str | None = None
        self._closed = False
        self._closing = False
        self._discarded = False
        usable = sqlite_is_safe() and self._ensure_folder()
        self.meta = MetaStore(state.meta_dir if usable else None)
        self._damaged: list[Path] = state.damaged_queues() if usable else []
        self._disk: DiskQueue | None = self._open_disk() if usable else None
        self._journal: Journal | None = Journal(state.journal_dir) if usable else None
        self._journal_retry = 0.0
        self._mover: JournalMover | None = None
        self._move_lock = threading.RLock()
        self._bounds_lock = threading.Lock()
        self._moving = False
        self._next_adopt = 0.0
        if self._disk is not None:
            self.enforce_bounds()
        after_fork_in_child(self, OfflineQueue._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.RLock()
        self._move_lock = threading.RLock()
        self._bounds_lock = threading.Lock()
        self._moving = False
        self._mover = None  # the parent's thread did not come along
        # The parent still holds (and will deliver) what its memory buffer held.
        self._memory = deque()
        self._in_flight = set()
        if not sqlite_is_safe():
            self._disk = None
            self._next_retry = float("inf")
            self._disk_problem = "forked while SQLite was in use: this process keeps events in memory"

    # -- appending -----------------------------------------------------------------------------

    def put(self, record: bytes) -> None:
        """Append one encoded message. Never raises, never waits more than a few milliseconds."""
        if self._journal_append((record,)):
            return
        self._put_disk(record)

    def _journal_append(self, records: tuple[bytes, ...] | list[bytes]) -> bool:
        """Journal the records (the usual path); False when the journal cannot take them now."""
        journal = self._journal
        if journal is None or journal.pending_bytes > self._bounds.max_bytes + JOURNAL_SLACK_BYTES:
            # A journal that cannot be moved (the queue is unusable) is bounded too: the direct
            # path then keeps the event in memory and counts what it must drop.
            return False
        if self._journal_retry and time.monotonic() < self._journal_retry:
            return False
        try:
            full = journal.append(records)
        except OSError as exc:
            logger.debug("journal unavailable, writing to the queue directly: %s", exc)
            self._journal_retry = time.monotonic() + self._retry_interval
            return False
        mover = self._mover or self._start_mover()
        if full and mover is not None:
            mover.wake()
        return True

    def _start_mover(self) -> JournalMover | None:
        with self._lock:
            if self._mover is None and not self._closing:
                self._mover = JournalMover(self)
                self._mover.start()
                _move_at_exit(self)
            return self._mover

    def _put_disk(self, record: bytes) -> None:
        # Two tries: a damaged file is replaced by _disk_failed, and the second try writes to that.
        for _ in range(2):
            disk = self._usable_disk()
            if disk is None:
                break
            try:
                if self._memory:
                    self._drain_memory(disk, DRAIN_ON_PUT)
                disk.put(record)
            except StoreBusy:
                break  # another writer holds the lock: keep it in memory, write it back later
            except STORE_ERRORS as exc:
                self._disk_failed(disk, exc)
                continue
            self._written(disk, 1, len(record))
            return
        self._put_memory(record)

    def put_many(self, records: list[bytes]) -> None:
        """Append several records in one write (group commit). Never raises."""
        if not records or self._journal_append(records):
            return
        disk = self._usable_disk()
        if disk is not None:
            try:
                disk.put_many(records)
            except StoreBusy:
                pass
            except STORE_ERRORS as exc:
                self._disk_failed(disk, exc)
            else:
                self._written(disk, len(records), sum(len(r) for r in records))
                return
        for record in records:
            self._put_disk(record)  # one by one: each finds the disk, or the memory buffer

    def _written(self, disk: DiskQueue, count: int, size: int) -> None:
        """Count down to the next bound check; check the folder and the bounds when it is due."""
        self._puts_until_check -= count
        self._bytes_until_check -= size
        if self._puts_until_check <= 0 or self._bytes_until_check <= 0:
            self._check_folder(disk)
            self.enforce_bounds()

    def _put_memory(self, record: bytes) -> None:
        record = unpack(record)  # what the buffer holds is read as plain messages
        with self._lock:
            if self._closed:
                self._put_after_close(record)
                return
            self._memory_key -= 1
            self._memory.append((self._memory_key, record))
            if len(self._memory) > self._memory_limit:
                key, _record = self._memory.popleft()
                self._in_flight.discard(key)
                self.meta.count_drop("disk_unavailable")

    def _put_after_close(self, record: bytes) -> None:
        """An emit that raced with shutdown: it held this queue when close() ran (or waited on the
        lock while close() emptied the buffer). No one would ever read this buffer again, so the
        record goes straight to the queue file, where the next start finds it."""
        if self._discarded:
            return  # opted out: the folder is being purged, and this event goes with it
        disk: DiskQueue | None = None
        try:
            disk = DiskQueue(self._state.queue_dir)
            disk.put(record)
        except STORE_ERRORS as exc:
            logger.warning("telemetry: an event emitted during shutdown could not be stored: %s", exc)
        finally:
            if disk is not None:
                _close_quietly(disk)

    def _drain_memory(self, disk: DiskQueue, limit: int, timeout: float = PUT_WAIT_SECONDS) -> None:
        """Write up to ``limit`` memory records to disk, oldest first (not those being sent now).

        Raises what the disk raises; the records stay in memory then.
        """
        with self._lock:
            moving = [item for item in self._memory if item[0] not in self._in_flight][:limit]
            if not moving:
                return
            disk.put_many((record for _key, record in moving), timeout=timeout)
            gone = {key for key, _record in moving}
            self._memory = deque(item for item in self._memory if item[0] not in gone)

    def _usable_disk(self) -> DiskQueue | None:
        now = time.monotonic()
        disk = self._disk
        if disk is None:
            if now < self._next_retry:
                return None
            with self._lock:
                if self._disk is None:
                    self._next_retry = now + self._retry_interval
                    self._disk = self._open_disk()
                    if self._disk is not None:
                        # The memory buffer goes back to disk a little at a time (put, maintain).
                        self.meta.reopen(self._state.meta_dir)
                return self._disk
        if now >= self._next_health:
            self._next_health = now + self._health_interval
            disk = self._check_folder(disk)
        return disk

    # -- reading and acknowledging -------------------------------------------------------------

    def peek(
        self, limit: int, *, memory_only: bool = False, background: bool = False
    ) -> list[tuple[int, bytes]]:
        """The oldest ``limit`` records, left in place (disk first, then any held in memory).

        ``memory_only``: just this process's memory buffer, which needs no upload lease (no other
        process can see it), for when the lease itself cannot be taken (an unusable folder).
        ``background``: the uploader's thread, whose move of the journal waits while the app emits.
        """
        batch: list[tuple[int, bytes]] = []
        disk = None if memory_only else self._usable_disk()
        if disk is not None:
            try:
                batch = disk.peek(limit)
                # This process's journal holds only records newer than the queue's: move it
                # only when the queue alone cannot fill the batch.
                if len(batch) < limit and self.move_journal(polite=background):
                    batch = disk.peek(limit)
            except STORE_ERRORS as exc:
                self._disk_failed(disk, exc)
        with self._lock:
            from_memory = list(self._memory)[: max(0, limit - len(batch))]
            self._in_flight = {key for key, _record in from_memory}
        return batch + from_memory

    def newest(self, limit: int) -> list[bytes]:
        """The newest ``limit`` records, oldest of them first, left in place (for a preview: no
        upload lease needed, nothing is marked in flight)."""
        self.move_journal()  # what this process emitted a moment ago is part of "newest"
        records: list[bytes] = []
        disk = self._usable_disk()
        if disk is not None:
            try:
                records = [record for _key, record in disk.newest(limit)]
            except STORE_ERRORS as exc:
                self._disk_failed(disk, exc)
        with self._lock:
            records.extend(record for _key, record in self._memory)
        return records[-limit:] if limit > 0 else []

    def ack(self, keys: Iterable[int], *, chunk: int = SMALL_CHUNK) -> int:
        """Remove delivered records. Disk keys are positive, memory keys negative."""
        keys = list(keys)
        removed = 0
        memory_keys = {key for key in keys if key < 0}
        if memory_keys:
            with self._lock:
                kept = deque(item for item in self._memory if item[0] not in memory_keys)
                removed += len(self._memory) - len(kept)
                self._memory = kept
                self._in_flight -= memory_keys
        disk_keys = [key for key in keys if key >= 0]
        disk = self._disk
        if disk_keys and disk is not None:
            try:
                removed += disk.ack(disk_keys, chunk=chunk)
            except STORE_ERRORS as exc:
                # A damaged file is set aside here too; what it still holds, these records
                # included, is read back later (they may then be sent twice: PostHog keeps one
                # event per uuid). Left as it was, it would resend the same batch forever.
                self._disk_failed(disk, exc)
        return removed

    @property
    def damage_waiting(self) -> bool:
        """A damaged queue file is set aside and not yet read back (:meth:`maintain` does it)."""
        return bool(self._damaged)

    def maintain(self, *, background: bool = False) -> None:
        """Upkeep (the uploader's thread, ``background``, or flush()): read back damaged queues,
        write the memory buffer to disk, remember the depth. Never raises."""
        disk = self._usable_disk()
        if disk is None:
            return
        # The moves first: writing the journal into a damaged file is how damage is found now
        # (emit() no longer touches SQLite), and what they set aside is read back just below.
        self.adopt_orphans()
        self.move_journal(polite=background)
        for aside in list(self._damaged):  # once each: one that fails stays for the next upkeep
            if self._disk is None:
                break
            self._damaged.remove(aside)
            self._read_back(aside)
        try:
            while self._memory and len(self._memory) > len(self._in_flight):
                before = len(self._memory)
                self._drain_memory(disk, 500, timeout=1.0)
                if len(self._memory) == before:
                    break
        except STORE_ERRORS as exc:
            logger.debug("memory buffer stays in memory: %s", exc)
        self._remember_depth()

    # -- the journal ---------------------------------------------------------------------------

    def move_journal(
        self, *, enforce: bool = False, budget: float = MOVE_BUDGET_SECONDS, polite: bool = False
    ) -> int:
        """Move this process's journaled records into the queue, a segment per transaction;
        returns how many moved. Never raises. ``enforce``: check the bounds after. ``polite``: a
        background thread's move, which waits while the app emits (:class:`MoveDeferral`) and
        offers the GIL to the app now and then.

        A segment that cannot be moved now stays (on disk, durable) and is tried again, and so do
        the segments left when ``budget`` seconds have gone.
        """
        journal = self._journal
        if polite and journal is not None and self._journal_may_wait(journal):
            return 0  # the app is emitting: the bounds are kept after the move that follows
        disk = self._checked_disk() if journal is not None and journal.pending else self._disk
        if journal is None or disk is None or not journal.pending:
            if enforce and disk is not None:
                self.enforce_bounds()
            return 0
        deadline = time.monotonic() + budget
        if not self._move_lock.acquire(timeout=min(budget, MOVE_WAIT_SECONDS)):
            return 0
        moved = 0
        try:
            if self._moving:
                return 0  # re-entered (a signal handler in this very thread): the outer move goes on
            self._moving = True
            for segment in journal.retire():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                moved += self._move_segment(
                    journal, disk, segment, wait=min(remaining, MOVE_WAIT_SECONDS), polite=polite
                )
        finally:
            self._moving = False
            self._move_lock.release()
        if moved or enforce:
            self.enforce_bounds()
        return moved

    def journaled(self) -> int:
        """Records this process journaled and has not moved into the queue yet."""
        journal = self._journal
        return journal.pending if journal is not None else 0

    def _journal_may_wait(self, journal: Journal) -> bool:
        deferral = self._move_deferral
        return journal.may_wait(
            quiet_seconds=deferral.quiet_seconds,
            longest_seconds=deferral.longest_seconds,
            most_bytes=deferral.most_bytes,
        )

    def _move_segment(
        self, journal: Journal, disk: DiskQueue, segment: Segment, *, wait: float, polite: bool
    ) -> int:
        try:
            kept = segment.records
            found = ReadBack(kept, 0) if kept is not None else parse(read_fd(segment.fd), polite=polite)
            disk.put_batch(found.records, timeout=wait, polite=polite)
        except STORE_ERRORS as exc:
            if not isinstance(exc, StoreBusy):
                self._disk_failed(disk, exc)
            return 0
        segment.count = 0  # in the queue now: counted there, no longer here
        if found.torn:
            self.meta.count_drop("journal_torn", found.torn)
        journal.moved(segment)
        return len(found.records)

    def adopt_orphans(self, *, polite: bool = False) -> int:
        """Read back the segments of processes that died (their lock is free) into the queue,
        counting each record that was cut short or damaged (``journal_torn``). Never raises."""
        journal, disk = self._journal, self._checked_disk()
        if journal is None or disk is None:
            return 0
        self._next_adopt = time.monotonic() + ADOPT_INTERVAL_SECONDS
        # Under the move lock, as moves are: stats() counts nothing twice (in the queue and still
        # in its segment) while an adoption is between its insert and its unlink.
        if not self._move_lock.acquire(timeout=MOVE_WAIT_SECONDS):
            return 0
        try:
            adopted, torn = adopt_orphans(
                journal.directory,
                lambda records: disk.put_batch(records, timeout=MOVE_WAIT_SECONDS, polite=polite),
                skip=journal.own,
                polite=polite,
            )
        except STORE_ERRORS as exc:
            logger.debug("journal segments not read back yet: %s", exc)
            return 0
        finally:
            self._move_lock.release()
        if torn:
            logger.warning("telemetry journal: %d damaged or cut-short records skipped (counted)", torn)
            self.meta.count_drop("journal_torn", torn)
        if adopted:
            self.enforce_bounds()
        return adopted

    def _checked_disk(self) -> DiskQueue | None:
        """The disk, its folder checked now (one stat): a move is rare enough to always look, and
        writing into a queue whose folder was deleted would lose the move."""
        disk = self._usable_disk()
        return self._check_folder(disk) if disk is not None else None

    def adopt_due(self) -> bool:
        return time.monotonic() >= self._next_adopt

    def journal_backlog(self) -> bool:
        """Whether a whole retired segment waits to move (more than one round's worth may)."""
        journal = self._journal
        return journal is not None and journal.has_retired()

    def journaled_elsewhere(self) -> int:
        """Records in segments of other live processes (not ours to move): counted for status."""
        journal = self._journal
        if journal is None:
            return 0
        count = 0
        for path in segment_paths(journal.directory):
            if not journal.own(path):
                with contextlib.suppress(OSError):
                    count += len(parse(path.read_bytes()).records)
        return count

    def _remember_depth(self) -> None:
        """Keep the queue's depth beside it: if the queue file is later lost whole, this is how
        many events went with it (counted, not guessed at zero)."""
        disk = self._disk
        if disk is not None:
            with contextlib.suppress(*STORE_ERRORS):
                self.meta.set_fact("queue_depth", len(disk))

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database (called from the uploader's thread)."""
        disk = self._disk
        if disk is not None:
            try:
                disk.checkpoint()
            except STORE_ERRORS as exc:
                logger.debug("checkpoint skipped: %s", exc)

    def __len__(self) -> int:
        disk = self._disk
        journal = self._journal
        depth = len(self._memory) + (journal.pending if journal is not None else 0)
        if disk is not None:
            with contextlib.suppress(*STORE_ERRORS):
                depth += len(disk)
        return depth

    def stats(self) -> QueueStats:
        disk = self._usable_disk()
        volume = 0
        oldest: float | None = None
        if disk is not None:
            try:
                volume = disk.volume()
                oldest = disk.oldest_timestamp()
            except STORE_ERRORS as exc:
                logger.debug("queue stats unavailable: %s", exc)
        if oldest is None and self._memory:
            oldest = record_timestamp(self._memory[0][1])
        age = None if oldest is None else max(0.0, self._clock() - oldest)
        # Counted between moves: one under way has its records in the queue and in its segment.
        counted = self._move_lock.acquire(timeout=MOVE_WAIT_SECONDS)
        try:
            depth = len(self) + self.journaled_elsewhere()
        finally:
            if counted:
                self._move_lock.release()
        return QueueStats(
            depth=depth,
            bytes_on_disk=volume,
            oldest_age_seconds=age,
            storage="disk" if self._disk is not None else "memory",
            drops=self.meta.drops(),
            in_memory=len(self._memory),
            problems=tuple(self.problems()),
        )

    def problems(self) -> list[str]:
        """What is wrong with the queue right now, in words for ``status`` and ``doctor``."""
        found = []
        if self._disk is None:
            why = self._disk_problem or "the state folder cannot be written"
            found.append(f"queue not on disk ({why}): {len(self._memory)} events held in memory only")
        if self._damaged:
            found.append(f"{len(self._damaged)} damaged queue file(s) set aside, not yet read back")
        damage = self.meta.fact("last_damage")
        if isinstance(damage, dict) and damage.get("lost"):
            found.append(
                f"the queue file was damaged: {damage.get('recovered', 0)} events recovered, "
                f"{damage['lost']} lost (counted as queue_corrupted)"
            )
        return found

    # -- bounds --------------------------------------------------------------------------------

    def enforce_bounds(self) -> None:
        """Drop the oldest records over any bound, counting each by reason.

        One thread at a time, and a thread that finds another at it leaves it to that one: two
        measuring the excess at once would both drop it.
        """
        if not self._bounds_lock.acquire(blocking=False):
            return
        try:
            self._enforce_bounds()
        finally:
            self._bounds_lock.release()

    def _enforce_bounds(self) -> None:
        disk = self._disk
        if disk is None:
            return
        try:
            self._drop_too_old(disk)
            over = len(disk) - self._bounds.max_events
            if over > 0:
                # A full queue under a steady stream would otherwise drop one event per append, in
                # its own transaction: drop a hundredth of the bound at a time.
                over = max(over, self._bounds.max_events // 100)
                self.meta.count_drop("queue_full", disk.drop_oldest(over))
            volume = self._drop_over_bytes(disk)
            headroom = self._bounds.max_events - len(disk)
            # The uploader thread checkpoints; without one (an app that never called start()),
            # the log would only grow, so it is folded in here, rarely.
            if disk.wal_bytes() > WAL_CHECKPOINT_BYTES:
                disk.checkpoint()
        except STORE_ERRORS as exc:
            self._disk_failed(disk, exc)
            return
        # Check on every append near a bound, rarely when far from both.
        self._puts_until_check = max(1, min(MAX_PUTS_BETWEEN_CHECKS, headroom))
        self._bytes_until_check = max(1, self._bounds.max_bytes - volume)

    def _drop_too_old(self, disk: DiskQueue) -> None:
        cutoff = self._clock() - self._bounds.max_age_seconds
        oldest = disk.oldest_timestamp()
        if oldest is None or oldest >= cutoff:
            return  # the usual case, answered by one record instead of a batch
        while True:
            batch = disk.peek(DROP_CHUNK)
            stale = []
            for key, record in batch:
                stamp = record_timestamp(record)
                if stamp is None or stamp >= cutoff:
                    break
                stale.append(key)
            if not stale:
                return
            self.meta.count_drop("too_old", disk.ack(stale))
            if len(stale) < len(batch):
                return

    def _drop_over_bytes(self, disk: DiskQueue) -> int:
        """Drop the oldest until the queue fits its byte bound; returns the volume left."""
        volume = disk.volume()
        for _ in range(64):
            depth = len(disk)
            if volume <= self._bounds.max_bytes or depth == 0:
                break
            # Drop in proportion to the excess, a little more so the file's free pages are reused.
            share = (volume - self._bounds.max_bytes) / volume
            count = max(1, int(depth * share * 1.1))
            self.meta.count_drop("queue_bytes", disk.drop_oldest(count))
            volume = disk.volume()
        return volume

    # -- failures ------------------------------------------------------------------------------

    def _ensure_folder(self) -> bool:
        try:
            self._state.ensure()
            return True
        except OSError as exc:
            logger.warning("telemetry state folder unusable, events kept in memory: %s", exc)
            return False

    def _open_disk(self) -> DiskQueue | None:
        if not self._ensure_folder():
            return None
        disk: DiskQueue | None
        emptied = False
        try:
            disk = DiskQueue(self._state.queue_dir)
            emptied = disk.created
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                self._disk_problem = str(exc)
                logger.warning("telemetry queue unusable, events kept in memory: %s", exc)
                return None
            disk = self._replace_corrupt(exc)  # read back and counted later, by _read_back
        except STORE_ERRORS as exc:
            self._disk_problem = str(exc)
            logger.warning("telemetry queue unusable, events kept in memory: %s", exc)
            return None
        if disk is not None:
            self._disk_problem = None
            self._identity = _file_identity(disk)
            self._next_health = time.monotonic() + self._health_interval
            if emptied:
                self._lost_while_closed()
        return disk

    def _lost_while_closed(self) -> None:
        """A new, empty queue where the depth remembered beside it says events were waiting: the
        queue file was emptied or removed while no app had it open. Count what went with it."""
        self.meta.wait_open(0.5)
        remembered = self.meta.fact("queue_depth")
        if isinstance(remembered, int) and remembered > 0:
            logger.warning("telemetry queue was emptied or removed while closed: %d events lost", remembered)
            self.meta.count_drop("queue_corrupted", remembered)
            self.meta.set_fact("last_damage", {"at": self._clock(), "recovered": 0, "lost": remembered})
            self.meta.set_fact("queue_depth", 0)

    def _replace_corrupt(self, exc: Exception) -> DiskQueue | None:
        """Set the damaged queue aside and start an empty one; :meth:`maintain` reads it back."""
        aside = self._state.queue_dir.with_name(f"queue.corrupt-{int(self._clock())}-{os.getpid()}")
        logger.warning("telemetry queue damaged (%s); moved to %s to be read back", exc, aside.name)
        try:
            os.replace(self._state.queue_dir, aside)
            self._damaged.append(aside)
            fresh = DiskQueue(self._state.queue_dir)
        except STORE_ERRORS as exc2:
            self._disk_problem = f"damaged and could not be replaced: {exc2}"
            logger.warning("telemetry queue could not be replaced, events kept in memory: %s", exc2)
            return None
        # The fresh file is ours: without this, the next folder check would take it for a folder
        # deleted under us and "recreate" it.
        self._identity = _file_identity(fresh)
        return fresh

    def _read_back(self, aside: Path) -> None:
        """Move what a damaged queue still holds into the queue; count what it lost, by event."""
        found = salvage(aside / "cache.db")
        # A record read from a damaged page may itself be damaged: only whole messages go back.
        records = [stored for stored in found.records if _is_message(unpack(stored))]
        known = found.known_count
        if known is None:
            # The file could not even say how many it held: the depth remembered beside it can.
            remembered = self.meta.fact("queue_depth")
            known = remembered if isinstance(remembered, int) else len(records)
        lost = max(0, known - len(records))
        disk = self._disk
        if disk is None:
            self._damaged.insert(0, aside)
            return
        try:
            for start in range(0, len(records), 500):
                disk.put_stored(records[start : start + 500])
        except STORE_ERRORS as exc:
            logger.warning("damaged queue not read back yet: %s", exc)
            self._damaged.insert(0, aside)
            return
        self.meta.count_drop("queue_corrupted", lost)
        self.meta.set_fact("last_damage", {"at": self._clock(), "recovered": len(records), "lost": lost})
        logger.warning("telemetry queue damage: %d events recovered, %d lost (counted)", len(records), lost)
        purge_folder(aside, DISKCACHE_FILES)

    def _disk_failed(self, disk: DiskQueue, exc: Exception) -> None:
        with self._lock:
            if self._disk is not disk:
                return  # another thread already dealt with it
            logger.warning("telemetry queue write failed (%s): %s", type(exc).__name__, exc)
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
                _close_quietly(disk)
                self._disk = self._replace_corrupt(exc)
            else:
                _close_quietly(disk)
                self._disk = None
                self._disk_problem = f"{type(exc).__name__}: {exc}"
                self._next_retry = time.monotonic() + self._retry_interval

    def _check_folder(self, disk: DiskQueue) -> DiskQueue | None:
        """Notice a queue file deleted or replaced under us, and recover what it held."""
        if _file_identity(disk) == self._identity:
            return disk
        with self._lock:
            if self._disk is not disk:
                return self._disk
            logger.warning("telemetry state folder was removed; recreating it")
            salvaged: list[bytes] = []
            try:
                salvaged = [record for _key, record in disk.iter_all()]
            except STORE_ERRORS as exc:
                logger.warning("could not read back the removed queue: %s", exc)
            _close_quietly(disk)
            self._disk = self._open_disk()
            if self._disk is None:
                self._memory.extend((self._next_memory_key(), record) for record in salvaged)
                return None
            self.meta.reopen(self._state.meta_dir)
            if self._on_recreated is not None:
                self._on_recreated()
            try:
                self._disk.put_many(salvaged, timeout=2.0)  # rare, and losing them is worse than waiting
            except STORE_ERRORS as exc:
                logger.warning("could not restore the removed queue: %s", exc)
                self._memory.extend((self._next_memory_key(), record) for record in salvaged)
            return self._disk

    def _next_memory_key(self) -> int:
        self._memory_key -= 1
        return self._memory_key

    def close(self, *, discard: bool = False) -> None:
        """Move the journal and the memory buffer to disk if at all possible; count whatever
        cannot be (a journal segment that cannot be moved stays on disk for the next start).

        ``discard``: the user opted out and the folder is about to be purged. An emit racing this
        close then keeps nothing: written after the purge, it would recreate the queue it deleted.
        """
        with self._lock:
            self._discarded = discard
            self._closing = True  # an emit racing this close must not start another mover
            mover, self._mover = self._mover, None
        if mover is not None:
            mover.stop()
        # What does not move now stays journaled, durable and counted, for the next start.
        self.move_journal(budget=CLOSE_MOVE_BUDGET_SECONDS)
        journal, self._journal = self._journal, None
        if journal is not None:
            journal.close()
        with self._lock:
            self._closed = True
            disk, self._disk = self._disk, None
            if disk is not None:
                try:
                    self._in_flight = set()
                    self._drain_memory(disk, len(self._memory), timeout=1.0)
                except STORE_ERRORS as exc:
                    logger.debug("memory buffer not written at close: %s", exc)
                self._disk = disk
                self._remember_depth()
                self._disk = None
                _close_quietly(disk)
            if self._memory:
                logger.warning(
                    "telemetry: %d events could neither be stored nor delivered and are lost (counted)",
                    len(self._memory),
                )
                self.meta.count_drop("disk_unavailable", len(self._memory))
                self._memory.clear()
            self.meta.close()
            self._next_retry = float("inf")


def _is_message(record: bytes) -> bool:
    try:
        message = orjson.loads(record)
    except orjson.JSONDecodeError:
        return False
    return isinstance(message, dict) and isinstance(message.get("uuid"), str)


def _file_identity(disk: DiskQueue) -> tuple[int, int] | None:
    try:
        st = os.stat(disk.db_path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _close_quietly(disk: DiskQueue) -> None:
    with contextlib.suppress(*STORE_ERRORS):
        disk.close()


class JournalMover:
    """The background thread that moves the journal into the queue and keeps the bounds, so
    neither happens on ``emit()``'s path (SPEC 10: the cost of an emit must not grow with the queue)."""

    def __init__(self, queue: OfflineQueue, interval: float = MOVE_INTERVAL_SECONDS) -> None:
        self._queue = queue
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="analytics-journal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._queue.adopt_due():
                    self._queue.adopt_orphans(polite=True)
                # Waits while the app emits: the next round (or a full segment) looks again.
                moved = self._queue.move_journal(enforce=True, polite=True)
                if moved and self._queue.journal_backlog():
                    self._wake.set()  # a round's budget ran out behind a fast producer: go on
            except Exception:  # the thread must outlive any bug; what stays journaled is durable
                logger.exception("telemetry journal move failed")

    def stop(self) -> None:
        """Ask the thread to stop and wait for its current round (bounded by the move budget)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join(MOVE_BUDGET_SECONDS + MOVE_WAIT_SECONDS)


def _move_at_exit(queue: OfflineQueue) -> None:
    """At interpreter exit, move what is journaled into the queue (an app that never called
    ``shutdown()``): ``analytics queue`` then shows it at once. Were this skipped (``os._exit``,
    ``kill -9``), the segment would wait, durable, for the next process to adopt it."""
    ref = weakref.ref(queue)

    def move() -> None:
        target = ref()
        if target is not None:
            mover, target._mover = target._mover, None
            if mover is not None:
                mover.stop()
            target.move_journal()

    atexit.register(move)
