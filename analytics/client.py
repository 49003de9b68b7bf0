"""Analytics: the facade the app holds. Thin on purpose: it wires the pipeline and guards it.

    domain event -> parse_event -> to_stored_message (privacy) -> OfflineQueue.put

Every public method is wrapped by the never-raise guard; only strict mode lets validation errors
through. Nothing is opened, written or started until the first use, and never while disabled.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from analytics import consent
from analytics import events as ev
from analytics._guard import guard
from analytics.app_events import AppEvent, EventCatalog
from analytics.config import TelemetryConfig
from analytics.forksafe import after_fork_in_child
from analytics.session import Session, collect_crashed_sessions, session_start_event
from analytics.state import StateFolder

# Everything below is loaded when first needed (the mapping, the scrubber's rules and the queue at
# the first emit or start(), delivery and Sentry support at start()), so `import analytics` stays
# within SPEC 10's 150 ms and an app with telemetry switched off never loads them.
if TYPE_CHECKING:
    import asyncio

    from analytics.delivery.retry import RetryPolicy
    from analytics.delivery.uploader import Uploader
    from analytics.errors.hooks import Hook, UncaughtHooks
    from analytics.errors.reporting import ErrorReporter
    from analytics.errors.sentry import SentryBridge
    from analytics.mapping import EventRefused, MappingContext
    from analytics.preview import RecentMessages
    from analytics.privacy.identity import InstallIdentity
    from analytics.proposals import ProposalClock
    from analytics.queue import OfflineQueue
    from analytics.queue.group_commit import GroupCommitter
    from analytics.queue.meta import MetaStore
    from analytics.sinks.base import Sink
    from analytics.status import StatusReport
    from analytics.tracing import ChatTurnRecorder, ToolCallSpan

logger = logging.getLogger(__name__)

# Longer than one upload request may take, so opting out waits for the request in flight.
OPT_OUT_STOP_TIMEOUT = 15.0
# How long shutdown(), flush() and an opt-out wait for start()'s thread (its work takes tens of
# milliseconds; a slow disk, more), and how long a fork does.
START_WAIT_SECONDS = 5.0
FORK_START_WAIT_SECONDS = 1.0
# How long lowering the level waits for a batch already on its way before purging.
PURGE_WAIT_SECONDS = 5.0


@dataclass
class _Runtime:
    """What exists once telemetry is in use: the folder, the identity, the queue."""

    state: StateFolder
    identity: InstallIdentity
    queue: OfflineQueue
    context: MappingContext
    # The mapping's entry point (the queue's stored form) and its refusal, loaded with the
    # runtime rather than at import.
    to_message: Callable[..., bytes]
    refused: type[EventRefused]
    proposals: ProposalClock | None


class Analytics:
    """Offline-safe telemetry for one app process.

    ``sink`` replaces the destination the config names (for tests: ``analytics.testing.InMemorySink``);
    ``retry_policy`` and ``upload_interval`` tune delivery.

    >>> telemetry = Analytics(TelemetryConfig(enabled=False))
    >>> telemetry.emit("ToolCall", {"tool_name": "read_file", "duration_ms": 12, "success": True})
    >>> telemetry.enabled
    False
    """

    def __init__(
        self,
        config: TelemetryConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        retry_policy: RetryPolicy | None = None,
        upload_interval: float = 1.0,
        sink: Sink | None = None,
        events: Iterable[type[AppEvent]] = (),
    ) -> None:
        # Strict mode's ConfigError is meant for the developer; anything else must not reach the app.
        self.config = config if config is not None else TelemetryConfig.from_env()
        self._clock = clock
        self._retry_policy = retry_policy
        self._upload_interval = upload_interval
        self._sink_override = sink
        self._lock = threading.RLock()
        self._runtime: _Runtime | None = None
        self._uploader: Uploader | None = None
        self._errors: ErrorReporter | None = None
        self._sentry: SentryBridge | None = None
        self._hooks: UncaughtHooks | None = None
        self._session = Session()
        self._started = False
        self._starter: threading.Thread | None = None  # start()'s work, on a thread of its own
        # Set once start()'s thread has queued SessionStart (or given up): until then the app's
        # first emit waits for it, so that its events come after SessionStart in the queue too.
        self._session_begun = threading.Event()
        self._logged_refusals: set[tuple[str, str]] = set()
        self._committer: GroupCommitter[tuple[ev.DomainEvent, float]] | None = None
        self._pid = os.getpid()
        self._disabled_reason: str | None = "telemetry could not be set up (see the log)"
        self._enabled = False
        self._catalog = EventCatalog()
        self._event_models = self._catalog.as_mapping()
        self._level = "off"
        # The user the app identified (``identify()``), read from the state folder with the runtime.
        self._identified: str | None = None
        if events:
            # An app event that cannot be registered is the developer's mistake: loud, like a bad
            # argument, rather than events silently counted as unknown for ever.
            self.register_events(*events)
        with guard("Analytics()"):
            if self.config.group_commit_ms:
                from analytics.queue.group_commit import GroupCommitter

                self._committer = GroupCommitter(self._append_many, self.config.group_commit_ms / 1000)
            reason = self.config.disabled_reason
            if reason is None:
                reason = StateFolder(self.config.resolved_state_dir).opt_out_reason()
            self._disabled_reason = reason
            self._enabled = reason is None
            if self._enabled:
                saved = consent.read_saved_level(self.config.resolved_state_dir)
                self._level = consent.effective_level(self.config.telemetry_level, saved)
        after_fork_in_child(self, Analytics._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: the session, its marker and its threads are the parent's. The child
        may emit (into the same queue) and flush, but it never ends the parent's session."""
        self._lock = threading.RLock()
        self._session.lock = threading.RLock()
        marker, self._session.marker = self._session.marker, None
        if marker is not None:
            marker.forget()  # closes the inherited descriptor without releasing the parent's lock
        self._started = False
        self._starter = None

    @classmethod
    def from_env(cls, **overrides: Any) -> Analytics:
        """``Analytics(TelemetryConfig.from_env(**overrides))``."""
        return cls(TelemetryConfig.from_env(**overrides))

    # -- properties ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def disabled_reason(self) -> str | None:
        return self._disabled_reason

    @property
    def session_id(self) -> str:
        return self._session.id

    @property
    def distinct_id(self) -> str | None:
        runtime = self._runtime
        return runtime.context.distinct_id if runtime is not None else None

    @property
    def user_id(self) -> str | None:
        """The user ``identify()`` named (this run or an earlier one, until ``reset()``), or None."""
        with guard("user_id"):
            if self._enabled:
                self._runtime or self._ensure_runtime()
        return self._identified if self._enabled else None

    @property
    def level(self) -> str:
        """The consent level in force: ``off``, ``crash``, ``error``, ``usage`` or ``full``."""
        return self._level if self._enabled else "off"

    @property
    def events(self) -> EventCatalog:
        """The events this instance accepts: the built-in catalog and the app's registered ones."""
        return self._catalog

    def register_events(self, *models: type[AppEvent]) -> None:
        """Accept the app's own events (``AppEvent`` subclasses) by their class name.

        Raises :class:`analytics.app_events.EventRegistrationError` for a model without a PostHog
        name or whose name is taken: that is the app's code, and it should fail where it is written.
        """
        self._catalog.register(*models)
        self._event_models = self._catalog.as_mapping()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Begin the session: SessionStart with the automatic fields, the uploader thread, the
        error hooks.

        Returns at once: the work (loading the mapping, opening the queue, writing SessionStart,
        starting the uploader and Sentry) runs on a thread of its own, off the app's startup path.
        SessionStart keeps the time of this call. Anything that needs it done waits for it:
        an emit for the queue, ``flush()``, ``shutdown()``, an opt-out and a ``fork()``.
        """
        if not self._enabled or os.getpid() != self._pid:
            return  # a forked child shares its parent's session, and never starts its own
        with guard("start"):
            with self._lock:
                if self._started:
                    return
                self._started = True
                self._session.started_at = self._clock()
            atexit.register(self._at_exit)
        with guard("start: error hooks"):
            # Here, not on the thread: an exception uncaught a moment after start() is reported.
            hooks = self._uncaught_hooks()
            hooks.install()
            loop = _running_loop()  # the caller's thread runs it
            if loop is not None:
                hooks.install_asyncio(loop)
        if not self.config.sentry_background_init:
            self._finish_start()  # asked for: Sentry (and so the rest) set up before start() returns
            return
        with guard("start"):
            _wait_for_start_before_fork(self)
            starter = threading.Thread(target=self._finish_start, name="analytics-start", daemon=True)
            with self._lock:  # a waiter sees no thread, or a started one
                self._session_begun.clear()
                self._starter = starter
                starter.start()

    def _finish_start(self) -> None:
        try:
            self._start_session()
        finally:
            self._session_begun.set()
        self._start_delivery()

    def _start_session(self) -> None:
        # Each step on its own: a damaged marker must not cost the session, nor a failed Sentry
        # set-up the uploader. shutdown() or an opt-out meanwhile waits for this thread.
        with guard("start"), self._lock:
            if not self._still_starting():
                return
            self._session.began = True
            if self._runtime is not None:  # the app emitted before start()
                self._begin_session(self._runtime)
            else:
                # Made and its session begun before anyone else can use it (an emit meanwhile
                # waits for _session_begun): the app's first events come after SessionStart.
                runtime = self._build_runtime()
                self._begin_session(runtime)
                self._runtime = runtime

    def _start_delivery(self) -> None:
        # Each check and its step under the lock, which shutdown() and an opt-out take to stop
        # the session: one that ran between the two would find an uploader made but not started
        # (and started after it had stopped it), or Sentry set up after it had closed it.
        with guard("start: uploader"), self._lock:
            if not self._still_starting():
                return
            self._ensure_uploader().start()
        with guard("start: errors"), self._lock:
            if self._still_starting():
                self._ensure_errors()

    def _begin_session(self, runtime: _Runtime) -> None:
        with guard("start: crashed sessions"):
            # A session still marked as running belongs to a process that died: end it first.
            for ended in collect_crashed_sessions(runtime.state.sessions_dir):
                self._append(
                    ended.end_event(), session_id=ended.session_id, at=ended.last_seen, runtime=runtime
                )
        with guard("start: session"):
            machine_id = self.config.machine_id
            hashed = runtime.identity.keyed_hash(machine_id.get_secret_value()) if machine_id else None
            started_at = self._session.started_at or self._clock()
            self._append(session_start_event(self.config.app_version, hashed), at=started_at, runtime=runtime)
            self._open_marker(runtime)

    def _still_starting(self) -> bool:
        # shutdown() or an opt-out that gave up waiting for this thread: it stops here.
        return self._started and self._enabled

    def _wait_started(self, timeout: float = START_WAIT_SECONDS) -> None:
        """Wait (at most ``timeout``) for start()'s thread, unless this is that thread."""
        # Under the lock start() holds while it sets and starts the thread (a waiter then sees
        # none, or a started one); not for longer than the wait itself.
        locked = self._lock.acquire(timeout=timeout)
        starter = self._starter
        if locked:
            self._lock.release()
        if starter is not None and starter is not threading.current_thread() and starter.ident is not None:
            starter.join(timeout)

    def chat_turn(
        self,
        *,
        model: str,
        provider: str | None = None,
        turn_id: str | None = None,
        name: str | None = None,
    ) -> ChatTurnRecorder:
        """A chat turn, measured: ``with telemetry.chat_turn(model="gpt-4o") as turn: ...``.

        Tool calls inside it (``turn.tool_call(...)`` or ``telemetry.tool_call(...)``) share its
        trace id; ``with turn.generation(): ...`` times the model call. Set lengths and tokens with
        ``turn.set(...)``. ``name`` names the trace in PostHog (default ``chat_turn``).
        """
        from analytics.tracing import ChatTurnRecorder

        return ChatTurnRecorder(self.emit, model=model, provider=provider, turn_id=turn_id, name=name)

    def tool_call(self, tool_name: str, *, turn_id: str | None = None) -> ToolCallSpan:
        """Time a tool call: ``with telemetry.tool_call("read_file"): ...`` (also ``async with``).

        Success and error type come from the exception, which is re-raised. Inside a chat turn the
        span joins that turn's trace.
        """
        from analytics.tracing import ToolCallSpan, current_turn_id

        return ToolCallSpan(self.emit, tool_name, turn_id or current_turn_id())

    def capture_exception(self, exc: BaseException, context: Mapping[str, Any] | None = None) -> str | None:
        """Report ``exc`` to Sentry (when configured) and to PostHog as ``$exception``, linked by
        the Sentry event id, which is returned. Never raises; reporting one exception twice is a no-op.
        """
        if not self._enabled or consent.RANK[self._level] < consent.ERROR:
            return None  # at level crash only uncaught exceptions are reported, to Sentry neither
        event_id: str | None = None
        with guard("capture_exception"):
            event_id = self._ensure_errors().report(exc, context, handled=True)
        return event_id

    def install_asyncio_handler(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Report exceptions nobody retrieved from this loop's tasks (``start()`` does it for the loop
        it runs in; call this for another loop)."""
        if not self._enabled:
            return
        with guard("install_asyncio_handler"):
            import asyncio

            self._uncaught_hooks().install_asyncio(loop or asyncio.get_running_loop())

    def _uncaught_hooks(self) -> UncaughtHooks:
        if self._hooks is None:
            from analytics.errors.hooks import UncaughtHooks

            self._hooks = UncaughtHooks(self._report_uncaught)
        return self._hooks

    def _report_uncaught(self, exc: BaseException, hook: Hook) -> None:
        if self._enabled:
            with guard("uncaught hook"):
                self._ensure_errors().report(exc, None, handled=False, hook=hook)

    def flush(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued, waiting at most ``timeout`` seconds; True when nothing is left.

        Blocks the calling thread (from async code, run it in a thread: ``asyncio.to_thread``).
        """
        if not self._enabled:
            return True
        delivered = False
        with guard("flush"):
            deadline = time.monotonic() + timeout
            self._wait_started(min(timeout, START_WAIT_SECONDS))  # SessionStart is part of "queued"
            self._commit_pending()
            delivered = self._ensure_uploader().flush(max(0.0, deadline - time.monotonic()))
        return delivered

    def shutdown(self, timeout: float = 3.0) -> None:
        """End the session (SessionEnd), flush within ``timeout``, stop the thread; what is not
        delivered by then stays on disk for the next start."""
        if not self._enabled:
            return
        with guard("shutdown"):
            started_by = time.monotonic()
            self._wait_started(min(timeout, START_WAIT_SECONDS))  # SessionStart before SessionEnd
            timeout = max(0.0, timeout - (time.monotonic() - started_by))
            if self._committer is not None:
                self._committer.stop()  # what was handed over is written before SessionEnd
            with self._lock:  # start()'s thread begins the session under it, or never will
                started, self._started = self._started, False
                began = self._session.began
            if started and os.getpid() == self._pid:
                if began:
                    self._append(self._session.end_event("shutdown", self._clock()))
                self._close_marker()
                atexit.unregister(self._at_exit)
            if self._hooks is not None:
                self._hooks.uninstall()
            deadline = time.monotonic() + timeout
            # Deliver what is queued even if start() never ran (an app that only emitted).
            if self._runtime is not None:
                self._ensure_uploader()
            uploader, self._uploader = self._uploader, None
            if uploader is not None:
                uploader.shutdown(timeout)
            self._close_sentry(max(0.0, deadline - time.monotonic()))
            self._close()

    def _at_exit(self) -> None:
        if os.getpid() != self._pid:
            # A forked child exiting: its events are on disk (the parent's uploader sends them);
            # the session is the parent's to end.
            with guard("at exit (forked child)"):
                self._commit_pending()
                self._close()
            return
        # The interpreter is going away: a short, bounded flush, then everything else waits on disk.
        self.shutdown(timeout=2.0)

    def set_enabled(self, enabled: bool) -> None:
        """Opt in or out at run time. Opting out deletes the queue and the state, keeping only the
        marker that keeps telemetry off at the next start."""
        with guard("set_enabled"):
            state = StateFolder(self.config.resolved_state_dir)
            if not enabled:
                self._wait_started()  # nothing of start()'s may be written after the purge
                with self._lock:
                    self._enabled = False
                    self._disabled_reason = "opted out (set_enabled(False))"
                    self._started = False
                    if self._committer is not None:
                        self._committer.stop(commit=False)  # opted out: nothing more is written
                    self._close_marker()
                    if self._hooks is not None:
                        self._hooks.uninstall()
                    self._close_sentry(0.0)
                    uploader, self._uploader = self._uploader, None
                    if uploader is not None:
                        # Let a cycle in flight finish first: nothing may be written after the purge.
                        uploader.stop(timeout=OPT_OUT_STOP_TIMEOUT)
                        uploader.close()
                    self._close(discard=True)
                    state.purge()
                    try:
                        state.write_opt_out("set_enabled(False)\n")
                    except OSError as exc:
                        # Off for this run regardless; the next start cannot read this folder either.
                        logger.warning("telemetry opt-out not recorded in the state folder: %s", exc)
                return
            with self._lock:
                if self._enabled:
                    # Already on: a new Session would orphan the running one (its counts, its
                    # marker, which the next run would then report as a crash).
                    return
                state.clear_opt_out()
                self._disabled_reason = self.config.disabled_reason
                self._enabled = self._disabled_reason is None
                if self._enabled:
                    self._session = Session()
                    saved = consent.read_saved_level(state.root)
                    self._level = consent.effective_level(self.config.telemetry_level, saved)

    # -- consent level and identity (analytics.consent, analytics.identity) ---------------------

    def set_level(self, level: str) -> None:
        """Change the consent level at run time; kept in the state folder for the next start.

        ``off`` is ``set_enabled(False)``; a level above ``off`` while off opts back in (unless the
        environment says off). Lowering it deletes the queued events above the new level, counted
        as ``level_lowered``. A name that is not a level raises ``ValueError`` (an explicit call
        with a wrong value is the app's bug, not the user's environment).
        """
        name = consent.parse_level(level)
        with guard("set_level"):
            if name == "off":
                self.set_enabled(False)
                return
            if not self._enabled:
                self.set_enabled(True)
                if not self._enabled:
                    return  # TELEMETRY_ENABLED=0 or DO_NOT_TRACK: the environment's off wins
            self._apply_level(name)

    def identify(self, user_id: str, properties: Mapping[str, Any] | None = None) -> None:
        """From now on, events are ``user_id``'s; PostHog merges the install's anonymous history
        into that person (``$identify`` with ``$anon_distinct_id``). ``properties`` are set on the
        person (``$set``), scrubbed like any value. Kept across restarts until :meth:`reset`.

        An id PostHog would refuse (empty, ``anonymous``, ``null``...) is ignored with a warning
        (raises ``ValueError`` in strict mode).
        """
        from analytics.privacy.identity import illegal_distinct_id_reason

        problem = illegal_distinct_id_reason(user_id) if isinstance(user_id, str) else "not a string"
        if problem is not None and self.config.strict:
            raise ValueError(f"identify(): {problem}")
        if not self._enabled:
            return
        with guard("identify"):
            if problem is not None:
                logger.warning("telemetry identify() ignored: %s", problem)
                return
            self._switch_user(user_id.strip(), properties)

    def reset(self) -> None:
        """Forget the identified user and start over as a fresh anonymous install id."""
        if not self._enabled:
            return
        with guard("reset"):
            self._reset_identity()

    def _apply_level(self, name: str) -> None:
        runtime = self._runtime or self._ensure_runtime()
        with self._lock:
            before, self._level = self._level, name
            runtime.context = dataclasses.replace(runtime.context, full_content=name == "full")
        consent.save_level(runtime.state.root, name)
        if consent.RANK[name] < consent.RANK[before]:
            self._commit_pending()
            uploader = self._uploader
            # Nothing is sent while the purge runs: a batch peeked meanwhile could hold what the
            # user just withdrew consent for.
            holding = uploader.holding_back(PURGE_WAIT_SECONDS) if uploader else contextlib.nullcontext()
            with holding:
                purged = consent.purge_above(runtime.queue, consent.RANK[name], self._catalog)
            runtime.queue.meta.count_drop(consent.LOWERED_REASON, purged)

    def _switch_user(self, user_id: str, properties: Mapping[str, Any] | None) -> None:
        from analytics.identity import identify_message, save_identified
        from analytics.mapping import person_properties

        runtime = self._runtime or self._ensure_runtime()
        with self._lock:
            if user_id == runtime.context.distinct_id and properties is None:
                return  # already this user: nothing to merge, nothing to set
            self._identified = user_id
            runtime.context = dataclasses.replace(runtime.context, distinct_id=user_id, person_profiles=True)
        try:
            save_identified(runtime.state.root, user_id)
        except OSError as exc:
            logger.warning("telemetry identified user kept for this run only: %s", exc)
        if consent.RANK[self._level] < consent.USAGE:
            return  # merging people is usage analytics; at crash / error only the id changes
        self._commit_pending()
        now = self._clock()
        person = person_properties(session_start_event(self.config.app_version, None))
        message = identify_message(
            runtime.context,
            anon_distinct_id=runtime.identity.install_id,
            properties=properties,
            person=person,
            at=now,
        )
        if message is None:
            runtime.queue.meta.count_drop("oversize")
            return
        runtime.queue.put(message)

    def _reset_identity(self) -> None:
        from analytics.identity import forget_identified
        from analytics.privacy.identity import InstallIdentity, replace_install_id

        runtime = self._runtime or self._ensure_runtime()
        self._commit_pending()  # what was emitted before reset() stays the old id's
        try:
            identity = replace_install_id(runtime.state.root, runtime.identity)
        except OSError as exc:
            import uuid

            logger.warning("telemetry new anonymous id kept for this run only: %s", exc)
            identity = InstallIdentity(install_id=str(uuid.uuid4()), salt=runtime.identity.salt)
        forget_identified(runtime.state.root)
        with self._lock:
            self._identified = None
            runtime.identity = identity
            runtime.context = dataclasses.replace(
                runtime.context, distinct_id=identity.install_id, person_profiles=False
            )

    # -- emitting ------------------------------------------------------------------------------

    def emit(self, event: ev.DomainEvent | str, payload: Mapping[str, Any] | None = None, /) -> None:
        """Queue one event durably and return; never touches the network, never raises.

        ``event`` is a catalog model (``events.ChatTurn(...)``) or its name with a payload dict.
        In strict mode an unknown name or invalid payload raises :class:`analytics.events.InvalidEvent`.
        """
        if not self._enabled:
            return
        rejected: ev.InvalidEvent | None = None
        with guard("emit"):
            try:
                domain_event = ev.parse_event(event, payload, self._event_models)
            except ev.InvalidEvent as exc:
                if self.config.strict:
                    rejected = exc
                else:
                    self._refuse(exc.reason, exc.event_name, str(exc))
            else:
                committer = self._committer
                if committer is not None:
                    committer.submit((domain_event, self._clock()))
                else:
                    self._append(domain_event)
        if rejected is not None:
            raise rejected

    def _append(
        self,
        domain_event: ev.DomainEvent,
        *,
        session_id: str | None = None,
        at: float | None = None,
        runtime: _Runtime | None = None,
    ) -> None:
        runtime = runtime or self._runtime_to_write()
        if runtime is None:
            return
        when = self._clock() if at is None else at
        record = self._map(runtime, domain_event, when, session_id)
        if record is not None:
            runtime.queue.put(record)
            self._session.record(domain_event, when)

    def _map(
        self, runtime: _Runtime, domain_event: ev.DomainEvent, at: float, session_id: str | None = None
    ) -> bytes | None:
        """The event's final message, or None when it is refused. Every refusal is counted, and so
        is a bug of ours on the way (``internal_error``), before the guard reports it."""
        if consent.event_rank(domain_event) > consent.RANK[self._level]:
            runtime.queue.meta.count_drop(consent.FILTERED_REASON)
            return None
        try:
            domain_event = self._with_review_time(runtime, domain_event, at)
            return runtime.to_message(domain_event, runtime.context, at=at, session_id=session_id)
        except runtime.refused as exc:
            self._refuse(exc.reason, domain_event.event_name(), str(exc))
            return None
        except Exception:
            runtime.queue.meta.count_drop("internal_error")
            raise

    def _append_many(self, items: list[tuple[ev.DomainEvent, float]]) -> None:
        """Group commit: map every handed-over event, then write them in one transaction. One event
        that cannot be mapped costs only itself, never its window."""
        with guard("group commit"):
            runtime = self._runtime_to_write()
            if runtime is not None:
                self._append_window(runtime, items)

    def _append_window(self, runtime: _Runtime, items: list[tuple[ev.DomainEvent, float]]) -> None:
        records: list[bytes] = []
        mapped: list[tuple[ev.DomainEvent, float]] = []
        for domain_event, at in items:
            with guard("group commit"):
                record = self._map(runtime, domain_event, at)
                if record is not None:
                    records.append(record)
                    mapped.append((domain_event, at))
        runtime.queue.put_many(records)
        for domain_event, at in mapped:
            self._session.record(domain_event, at)

    def _commit_pending(self) -> None:
        if self._committer is not None:
            self._committer.commit_pending()

    def _with_review_time(self, runtime: _Runtime, event: ev.DomainEvent, at: float) -> ev.DomainEvent:
        """Remember when proposals are created; fill a decision's review time from that memory."""
        if runtime.proposals is None:
            return event
        if isinstance(event, ev.ProposalCreated):
            runtime.proposals.created(event.proposal_id, at)
        elif isinstance(event, ev.ProposalDecision):
            elapsed = runtime.proposals.review_duration_ms(event.proposal_id, at)
            if event.review_duration_ms is None and elapsed is not None:
                return event.model_copy(update={"review_duration_ms": elapsed})
        return event

    def _refuse(self, reason: str, event_name: str, detail: str) -> None:
        runtime = self._runtime_to_write()
        if runtime is not None:
            runtime.queue.meta.count_drop(reason)
        if (reason, event_name) not in self._logged_refusals:
            self._logged_refusals.add((reason, event_name))
            logger.warning("telemetry event not sent (%s): %s", reason, detail)

    # -- state ---------------------------------------------------------------------------------

    def status(self) -> StatusReport:
        """Enabled or not and why, where the state is, and what the queue holds."""
        from analytics.status import build_status

        # Outside the guard on purpose: build_status reports what it cannot read, it does not raise.
        # While start()'s thread opens the queue, a second opener in this process would race it.
        self._wait_started()
        runtime = self._runtime
        return build_status(
            self.config,
            disabled_reason=self._disabled_reason,
            queue=runtime.queue if runtime is not None else None,
            level=self.level,
        )

    def recent_messages(self, limit: int = 20) -> RecentMessages:
        """The newest ``limit`` queued and archived messages, exactly as sent (a settings page's
        "see what we send"). Empty while telemetry is off: opting out deleted them."""
        from analytics.preview import RecentMessages, recent_messages

        found = RecentMessages()
        if self._enabled:
            with guard("recent_messages"):
                runtime = self._runtime or self._ensure_runtime()
                found = recent_messages(runtime.queue, runtime.state.archive_dir, limit)
        return found

    def _ensure_runtime(self) -> _Runtime:
        runtime = self._runtime_to_write(opted_out_too=True)
        assert runtime is not None
        return runtime

    def _runtime_to_write(self, *, opted_out_too: bool = False) -> _Runtime | None:
        """The runtime, built on first use; None for an emit that an opt-out overtook (it checked
        ``enabled`` before the purge): a runtime built after the purge would bring back the
        identity, the queue and this very event, to be sent the day the user opts back in."""
        runtime = self._runtime
        if runtime is not None:
            return runtime
        starter = self._starter
        if starter is not None and starter is not threading.current_thread():
            self._session_begun.wait(START_WAIT_SECONDS)  # start() just returned: SessionStart first
        with self._lock:  # set_enabled(False) turns off and purges under it
            if self._runtime is None:
                if not (self._enabled or opted_out_too):
                    return None
                self._runtime = self._build_runtime()
            return self._runtime

    def _build_runtime(self) -> _Runtime:
        from analytics import mapping
        from analytics.privacy.scrubber import Scrubber
        from analytics.queue import OfflineQueue, QueueBounds

        with self._lock:
            config = self.config
            state = StateFolder(config.resolved_state_dir)
            identity = _identity_or_ephemeral(state)
            from analytics.identity import read_identified

            self._identified = read_identified(state.root)
            queue_type = OfflineQueue
            if config.debug:
                from analytics.debug import EchoingQueue

                queue_type = EchoingQueue
            queue = queue_type(
                state,
                QueueBounds(config.max_queue_events, config.max_queue_bytes, config.max_event_age_seconds),
                clock=self._clock,
                on_recreated=lambda: _restore_quietly(state, identity),
            )
            context = mapping.MappingContext(
                distinct_id=self._identified or config.user_id or identity.install_id,
                session_id=self._session.id,
                app_version=config.app_version,
                environment=config.environment,
                full_content=self._level == "full",
                geoip_disable=not config.geoip,
                hash_path=identity.hash_path,
                scrubber=Scrubber.for_this_machine(),
                max_value_chars=config.max_value_chars,
                max_content_chars=config.max_content_chars,
                max_event_bytes=config.max_event_bytes,
                person_profiles=(self._identified or config.user_id) is not None,
                hash_value=identity.keyed_hash,
            )
            return _Runtime(
                state,
                identity,
                queue,
                context,
                mapping.to_stored_message,
                mapping.EventRefused,
                _proposal_clock(state, config),
            )

    def _open_marker(self, runtime: _Runtime) -> None:
        from analytics.session import SessionMarker

        try:
            marker = SessionMarker(runtime.state.sessions_dir, self._session.id, self._clock())
        except OSError as exc:
            logger.warning("telemetry session marker not written (crashes will not be reported): %s", exc)
            return
        self._session.marker = marker
        marker.write(self._session.counters, self._clock())

    def _close_marker(self) -> None:
        marker, self._session.marker = self._session.marker, None
        if marker is not None:
            marker.close()

    def _ensure_uploader(self) -> Uploader:
        from analytics.delivery.lease import UploadLease
        from analytics.delivery.retry import RetryPolicy
        from analytics.delivery.uploader import Uploader
        from analytics.queue.dead_letters import DeadLetterStore

        # Before the lock: the runtime may wait for start()'s thread, which needs that lock.
        runtime = self._runtime or self._ensure_runtime()
        with self._lock:
            if self._uploader is not None:
                return self._uploader
            state = runtime.state
            sink, unavailable = (
                (self._sink_override, None)
                if self._sink_override is not None
                else _make_sink(self.config, state, self._clock, runtime.queue.meta)
            )
            if sink is not None:
                _clear_config_pause(runtime.queue.meta)
            self._uploader = Uploader(
                runtime.queue,
                sink,
                lease=UploadLease(state.lease_path),
                dead_letters=lambda: DeadLetterStore(state.dead_letter_dir),
                policy=self._retry_policy or RetryPolicy(),
                max_age_seconds=self.config.max_event_age_seconds,
                interval=self._upload_interval,
                clock=self._clock,
                unavailable_reason=unavailable,
            )
            return self._uploader

    def _ensure_errors(self) -> ErrorReporter:
        from analytics.errors.reporting import ErrorReporter
        from analytics.errors.sentry import SentryBridge

        # Before the lock: the runtime may wait for start()'s thread, which needs that lock.
        runtime = self._runtime or self._ensure_runtime()
        with self._lock:
            if self._errors is not None:
                return self._errors
            dsn = self.config.sentry_dsn.get_secret_value() if self.config.sentry_dsn else None
            bridge = SentryBridge(runtime.context.scrubber, dsn)
            bridge.start(
                release=self.config.app_version,
                environment=self.config.environment,
                # Off the app's startup path: sentry-sdk's set-up costs it 0.5-1 s otherwise.
                background=self.config.sentry_background_init,
                tags={
                    "session_id": self._session.id,
                    "distinct_id": runtime.context.distinct_id,
                    "app_version": self.config.app_version,
                },
            )
            self._sentry = bridge
            self._errors = ErrorReporter(bridge, self._append)
            return self._errors

    def _close_sentry(self, timeout: float) -> None:
        with self._lock:
            bridge, self._sentry, self._errors = self._sentry, None, None
        if bridge is not None:
            bridge.flush(timeout)
            bridge.close(timeout)

    def _close(self, *, discard: bool = False) -> None:
        with self._lock:
            runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.queue.close(discard=discard)
            if runtime.proposals is not None:
                runtime.proposals.close()


def _make_sink(
    config: TelemetryConfig, state: StateFolder, clock: Callable[[], float], meta: MetaStore
) -> tuple[Sink | None, str | None]:
    """PostHog when a host is configured, else the local archive; (None, why) when it cannot work."""
    from analytics.sinks.archive import ArchiveRetention, ArchiveSink, record_pruned
    from analytics.sinks.posthog import PostHogSink

    if config.endpoint:
        if config.token is None:
            return None, "TELEMETRY_ENDPOINT is set but TELEMETRY_TOKEN is not"
        return PostHogSink(config.endpoint, config.token.get_secret_value(), now=clock), None
    retention = ArchiveRetention(config.archive_days, config.archive_max_bytes)
    return ArchiveSink(
        state.archive_dir,
        retention=retention,
        now=clock,
        on_pruned=lambda pruned: record_pruned(meta, pruned),
    ), None


def _clear_config_pause(meta: MetaStore) -> None:
    """A pause without an HTTP status was caused by the configuration (a host without a token);
    with a usable sink now, it no longer holds (``analytics doctor`` would keep reporting it)."""
    paused = meta.fact("paused")
    if isinstance(paused, dict) and paused.get("status") is None:
        meta.set_fact("paused", None)


def _proposal_clock(state: StateFolder, config: TelemetryConfig) -> ProposalClock | None:
    from analytics.proposals import ProposalClock

    try:
        return ProposalClock(state.proposals_dir, config.proposal_ttl_days * 86_400)
    except (OSError, sqlite3.Error) as exc:
        logger.warning("proposal review times unavailable: %s", exc)
        return None


def _wait_for_start_before_fork(telemetry: Analytics) -> None:
    """Before a fork, let start()'s thread finish (bounded): a child forked while that thread
    imports a module inherits the module's import lock held by a thread it does not have, and its
    own first import of that module would wait for ever."""
    ref = weakref.ref(telemetry)

    def before_fork() -> None:
        target = ref()
        if target is not None:
            target._wait_started(FORK_START_WAIT_SECONDS)

    if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
        os.register_at_fork(before=before_fork)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    # No loop can run in a process that never imported asyncio; importing it just to ask costs 15 ms.
    module = sys.modules.get("asyncio")
    if module is None:
        return None
    try:
        loop: asyncio.AbstractEventLoop = module.get_running_loop()
    except RuntimeError:
        return None
    return loop


def _identity_or_ephemeral(state: StateFolder) -> InstallIdentity:
    """The install's identity; if the folder cannot hold one, a fresh one for this process only."""
    from analytics.privacy.identity import InstallIdentity, load_or_create_identity

    try:
        state.ensure()
        return load_or_create_identity(state.root)
    except OSError as exc:
        import secrets
        import uuid

        logger.warning("telemetry identity not persisted (%s); using one for this run", exc)
        return InstallIdentity(install_id=str(uuid.uuid4()), salt=secrets.token_bytes(32))


def _restore_quietly(state: StateFolder, identity: InstallIdentity) -> None:
    from analytics.privacy.identity import restore_identity

    try:
        state.ensure()
        restore_identity(state.root, identity)
    except OSError as exc:
        logger.warning("telemetry identity not restored: %s", exc)
