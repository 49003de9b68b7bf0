"""The uploader: peek a batch, export it, acknowledge what was accepted. Nothing leaves the queue
before the sink accepted it; a retry re-sends the very same bytes (same uuid, event, timestamp).

One cycle runs under the cross-process lease and an in-process lock, whether the background
thread runs it or ``flush()`` does in the caller's thread, so no event is sent twice in normal
operation. The thread sleeps on an Event: while offline it wakes only when the backoff says so.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from analytics.delivery.lease import UploadLease
from analytics.delivery.retry import RetryPolicy
from analytics.queue import OfflineQueue
from analytics.queue.dead_letters import DeadLetterStore
from analytics.queue.disk import LARGE_CHUNK, record_timestamp
from analytics.queue.offline import MOVE_INTERVAL_SECONDS
from analytics.sinks.base import ExportResult, Outcome, Sink

logger = logging.getLogger(__name__)

MAX_BATCH_EVENTS = 500
# The background thread's share of the time while it works through a backlog. Its Python work
# (decoding a batch, the HTTP client) competes with the app's threads for the GIL, and an emit()
# that loses the GIL to it waits; so after each batch it rests nineteen times as long as the batch took.
# The queue is durable: a burst drains a little later. An explicit flush() never rests.
BACKGROUND_DUTY = 0.05
MIN_BURST_PAUSE_SECONDS = 0.025
# PostHog accepts 20 MB a request; staying well under it leaves room for JSON framing and keeps
# a retry cheap on a slow link.
MAX_BATCH_BYTES = 4 * 1024 * 1024


class Step(enum.Enum):
    SENT = "sent"  # a batch went out; there may be more
    EMPTY = "empty"  # nothing to send
    BACKOFF = "backoff"  # the sink said "not now"
    PAUSED = "paused"  # the token was refused; waiting a long while
    BUSY = "busy"  # another process holds the upload lease


@dataclass(frozen=True)
class CycleResult:
    step: Step
    delay: float = 0.0


class Uploader:
    def __init__(
        self,
        queue: OfflineQueue,
        sink: Sink | None,
        *,
        lease: UploadLease,
        dead_letters: Callable[[], DeadLetterStore],
        policy: RetryPolicy | None = None,
        max_age_seconds: float = 30 * 86_400,
        interval: float = 1.0,
        request_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        unavailable_reason: str | None = None,
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._lease = lease
        self._dead_letters_factory = dead_letters
        self._dead_letters: DeadLetterStore | None = None
        self._policy = policy or RetryPolicy()
        self._max_age = max_age_seconds
        self._interval = interval
        self._request_timeout = request_timeout
        self._clock = clock
        self._unavailable_reason = unavailable_reason
        self._cycle_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._attempt = 0
        self._not_before = 0.0  # monotonic time before which the sink is not asked again
        self._dead_lettered = 0  # events this process set aside as dead letters
        self._pid = os.getpid()
        _forget_thread_in_child(self)

    # -- the thread ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="analytics-uploader", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                result = self.run_cycle(self._request_timeout, background=True)
            except Exception:  # the thread must outlive any bug; the guard's log says what happened
                logger.exception("telemetry upload cycle failed")
                result = CycleResult(Step.BACKOFF, self._policy.cap)
            if result.step is Step.SENT:
                busy = time.monotonic() - began
                self._wake.wait(max(MIN_BURST_PAUSE_SECONDS, busy * (1 / BACKGROUND_DUTY - 1)))
                self._wake.clear()
                continue
            # Checkpoints and upkeep happen here, in this thread, when the queue is quiet: never
            # inside an app's emit(), and not between the batches of a burst.
            self._queue.checkpoint()
            self._queue.maintain(background=True)
            wait = self._interval if result.step in (Step.EMPTY, Step.BUSY) else result.delay
            if result.step is Step.EMPTY and self._queue.journaled():
                # Events wait in the journal for the app to pause (see MoveDeferral): look again
                # as soon as the background step may have moved them, not a whole interval later.
                wait = min(wait, MOVE_INTERVAL_SECONDS)
            self._wake.wait(wait)
            self._wake.clear()

    # -- flush and shutdown ----------------------------------------------------------------------

    @contextlib.contextmanager
    def holding_back(self, timeout: float) -> Iterator[None]:
        """No batch leaves this process, or another sharing the queue, while the block runs (a
        consent purge: a cycle starting meanwhile could send what is about to be purged). A cycle
        already under way is waited for, up to ``timeout``; the block runs either way."""
        locked = self._cycle_lock.acquire(timeout=max(0.0, timeout))
        try:
            with self._lease.hold():
                yield
        finally:
            if locked:
                self._cycle_lock.release()

    def flush(self, timeout: float) -> bool:
        """Deliver what is queued now, within ``timeout`` seconds. True when the queue is empty and
        every event went to PostHog: one set aside as a dead letter meanwhile was not delivered."""
        deadline = time.monotonic() + max(0.0, timeout)
        self._not_before = 0.0  # an explicit flush tries now, whatever the backoff said
        self._queue.maintain()
        dead_before = self._dead_lettered
        read_back = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return len(self._queue) == 0 and self._dead_lettered == dead_before
            result = self.run_cycle(min(self._request_timeout, remaining))
            if result.step is Step.EMPTY:
                if self._queue.damage_waiting and not read_back:
                    # This flush's own moves found the queue file damaged: what it still holds
                    # is read back now and delivered in this flush, not at the next upkeep.
                    read_back = True
                    self._queue.maintain()
                    continue
                return self._dead_lettered == dead_before
            if result.step is Step.SENT:
                continue
            pause = min(result.delay if result.step is not Step.BUSY else 0.05, deadline - time.monotonic())
            if pause > 0:
                time.sleep(pause)

    def stop(self, timeout: float) -> None:
        """Stop the thread, waiting up to ``timeout`` for a cycle in flight to finish."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, timeout))
        self._thread = None

    def close(self) -> None:
        """Release the sink and the dead-letter store (after stop or shutdown)."""
        if self._sink is not None:
            self._sink.shutdown()
        if self._dead_letters is not None:
            self._dead_letters.close()
            self._dead_letters = None

    def shutdown(self, timeout: float) -> bool:
        """Stop the thread and flush what is left within ``timeout``; the rest stays on disk."""
        deadline = time.monotonic() + max(0.0, timeout)
        self.stop(timeout)
        delivered = self.flush(max(0.0, deadline - time.monotonic()))
        self.close()
        return delivered

    # -- one cycle -----------------------------------------------------------------------------

    def run_cycle(
        self, timeout: float, max_events: int = MAX_BATCH_EVENTS, *, background: bool = False
    ) -> CycleResult:
        """Send at most one batch (of at most ``max_events``). Safe from any thread and any process.

        ``background``: the thread's own cycles yield to the app (they leave the journal be while
        it emits); an explicit flush or replay goes as fast as it can. Either deletes a delivered
        batch in one transaction: no emit() waits for SQLite's lock (it appends to the journal).
        """
        now = time.monotonic()
        deadline = now + max(0.0, timeout)
        if now < self._not_before:
            step = Step.PAUSED if self._queue.meta.fact("paused") else Step.BACKOFF
            return CycleResult(step, self._not_before - now) if len(self._queue) else CycleResult(Step.EMPTY)
        if self._sink is None:
            if len(self._queue) == 0:
                return CycleResult(Step.EMPTY)
            if not self._queue.meta.fact("paused"):
                paused = {"at": self._clock(), "status": None, "reason": self._unavailable_reason}
                self._queue.meta.set_fact("paused", paused)
            return CycleResult(Step.PAUSED, self._policy.paused_delay)
        # Another thread of ours may be mid-request: wait for it no longer than the caller allows.
        if not self._cycle_lock.acquire(timeout=max(0.0, timeout)):
            return CycleResult(Step.BUSY)
        try:
            with self._lease.hold() as ours:
                if ours is False:
                    return CycleResult(Step.BUSY)
                # No usable lease file means no usable folder: send what this process holds in
                # memory (no other process can see it), or it would be lost at exit.
                batch = self._next_batch(max_events, memory_only=ours is None, background=background)
                if not batch:
                    return CycleResult(Step.EMPTY)
                return self._deliver(batch, deadline)
        finally:
            self._cycle_lock.release()

    def _next_batch(
        self, max_events: int, *, memory_only: bool = False, background: bool = False
    ) -> list[tuple[int, bytes]]:
        batch: list[tuple[int, bytes]] = []
        size = 0
        stale: list[int] = []
        cutoff = self._clock() - self._max_age
        records = self._queue.peek(
            min(max_events, MAX_BATCH_EVENTS), memory_only=memory_only, background=background
        )
        # Records come oldest first: when the oldest is young enough, so is the rest of the batch.
        oldest = record_timestamp(records[0][1]) if records else None
        check_each = oldest is not None and oldest < cutoff
        for key, record in records:
            stamp = record_timestamp(record) if check_each else None
            if stamp is not None and stamp < cutoff:
                stale.append(key)
                continue
            if batch and size + len(record) > MAX_BATCH_BYTES:
                break
            batch.append((key, record))
            size += len(record)
        if stale:
            self._queue.meta.count_drop("too_old", self._queue.ack(stale))
        return batch

    def _deliver(self, batch: list[tuple[int, bytes]], deadline: float) -> CycleResult:
        """Export ``batch``, splitting it on 413 and bisecting it on 400, all before ``deadline``:
        every request gets only the time left, and when none is left the rest stays queued."""
        assert self._sink is not None
        result = self._sink.export([record for _key, record in batch], deadline - time.monotonic())
        outcome = result.outcome
        if outcome is Outcome.SUCCESS:
            self._queue.ack([key for key, _record in batch], chunk=LARGE_CHUNK)
            self._succeeded(len(batch))
            return CycleResult(Step.SENT)
        if outcome in (Outcome.SPLIT, Outcome.REJECTED):
            if len(batch) == 1:
                self._dead_letter(batch[0], result)
                return CycleResult(Step.SENT)
            middle = len(batch) // 2
            # Halves go one after the other; if either must wait, what is left stays queued.
            for half in (batch[:middle], batch[middle:]):
                if time.monotonic() >= deadline:
                    return CycleResult(Step.SENT)  # out of time: the caller decides whether to go on
                step = self._deliver(half, deadline)
                if step.step is not Step.SENT:
                    return step
            return CycleResult(Step.SENT)
        if outcome is Outcome.UNAUTHORIZED:
            return self._pause(result)
        return self._back_off(result)

    def _succeeded(self, count: int) -> None:
        self._attempt = 0
        meta = self._queue.meta
        if meta.fact("paused") or meta.fact("last_error"):
            meta.set_fact("paused", None)
            meta.set_fact("last_error", None)
        meta.set_fact("last_delivery", {"at": self._clock(), "events": count})

    def _back_off(self, result: ExportResult) -> CycleResult:
        self._attempt += 1
        delay = self._policy.next_delay(self._attempt, result.retry_after)
        self._not_before = time.monotonic() + delay
        self._queue.meta.set_fact(
            "last_error",
            {"at": self._clock(), "status": result.status, "detail": result.detail, "retry_in": delay},
        )
        logger.debug("telemetry delivery deferred %.1fs: %s", delay, result.detail or result.status)
        return CycleResult(Step.BACKOFF, delay)

    def _pause(self, result: ExportResult) -> CycleResult:
        delay = self._policy.paused_delay
        self._not_before = time.monotonic() + delay
        paused = {"at": self._clock(), "status": result.status, "reason": result.detail}
        if not self._queue.meta.fact("paused"):
            logger.warning(
                "telemetry delivery paused: PostHog answered %s (%s)", result.status, result.detail
            )
        self._queue.meta.set_fact("paused", paused)
        return CycleResult(Step.PAUSED, delay)

    def _dead_letter(self, item: tuple[int, bytes], result: ExportResult) -> None:
        key, record = item
        if self._dead_letters is None:
            self._dead_letters = self._dead_letters_factory()
        reason = f"HTTP {result.status}: {result.detail}" if result.status else result.detail
        self._dead_letters.add(record, reason=reason, status=result.status, now=self._clock())
        self._queue.ack([key])
        self._dead_lettered += 1
        logger.warning("telemetry event refused by PostHog and kept as a dead letter: %s", reason)


def _forget_thread_in_child(uploader: Uploader) -> None:
    """A forked child inherits the uploader object but not its thread: mark it stopped, with fresh
    locks (one held by the parent's thread at fork time would otherwise never be released)."""
    ref = weakref.ref(uploader)

    def reset() -> None:
        target = ref()
        if target is not None and target._pid != os.getpid():
            target._pid = os.getpid()
            target._thread = None
            target._cycle_lock = threading.Lock()
            target._wake = threading.Event()
            target._stop = threading.Event()

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=reset)
