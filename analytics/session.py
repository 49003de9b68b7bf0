"""One app session: its id, its start, the counters its SessionEnd reports, and the marker that
lets the next start report a session that crashed."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analytics import events as ev
from analytics.filelock import try_lock, unlock
from analytics.ids import uuid7
from analytics.state import OWNED_FOLDERS


@dataclass
class SessionCounters:
    proposals_created: int = 0
    proposals_approved: int = 0
    proposals_rejected: int = 0
    chat_turns: int = 0
    tool_calls: int = 0
    errors: int = 0

    def record(self, event: ev.DomainEvent) -> bool:
        """Count ``event`` towards the session's totals; True when a counter changed."""
        if isinstance(event, ev.ChatTurn):
            self.chat_turns += 1
        elif isinstance(event, ev.ToolCall):
            self.tool_calls += 1
        elif isinstance(event, ev.ProposalCreated):
            self.proposals_created += 1
        elif isinstance(event, ev.ProposalDecision):
            if event.decision == "approved":
                self.proposals_approved += 1
            else:
                self.proposals_rejected += 1
        elif isinstance(event, ev.Error):
            self.errors += 1
        else:
            return False
        return True


@dataclass
class Session:
    """The running session. ``id`` is a UUIDv7, PostHog's expected ``$session_id`` format."""

    id: str = field(default_factory=uuid7)
    started_monotonic: float = field(default_factory=time.monotonic)
    # Set by start() from the app's clock: the duration is then measured on the same clock as the
    # events' timestamps (a demo's simulated clock, a test's), not the process's monotonic one.
    started_at: float | None = None
    # Set once start()'s thread begins it (SessionStart): a shutdown that stopped that thread
    # before then has no session to end, and must not send a SessionEnd without its start.
    began: bool = False
    counters: SessionCounters = field(default_factory=SessionCounters)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    marker: SessionMarker | None = field(default=None, repr=False)

    def record(self, event: ev.DomainEvent, now: float) -> None:
        with self.lock:
            if self.counters.record(event) and self.marker is not None:
                self.marker.write(self.counters, now)

    def duration_ms(self, now: float | None = None) -> int:
        if now is not None and self.started_at is not None:
            return max(0, int((now - self.started_at) * 1000))
        return int((time.monotonic() - self.started_monotonic) * 1000)

    def end_event(self, end_reason: str, now: float | None = None) -> ev.SessionEnd:
        with self.lock:
            return ev.SessionEnd(
                duration_ms=self.duration_ms(now),
                end_reason="crash" if end_reason == "crash" else "shutdown",
                **asdict(self.counters),
            )


def session_start_event(app_version: str, hashed_machine_id: str | None) -> ev.SessionStart:
    """SessionStart with the facts the adapter finds itself."""
    return ev.SessionStart(
        app_version=app_version,
        os=platform.system() or "unknown",
        os_version=platform.release() or "unknown",
        arch=platform.machine() or "unknown",
        python_version=platform.python_version(),
        machine_id=hashed_machine_id,
    )


@dataclass(frozen=True)
class EndedSession:
    """A session found unfinished at start: what its marker last said."""

    session_id: str
    started_at: float
    last_seen: float
    counters: SessionCounters

    def end_event(self) -> ev.SessionEnd:
        duration = max(0, int((self.last_seen - self.started_at) * 1000))
        return ev.SessionEnd(duration_ms=duration, end_reason="crash", **asdict(self.counters))


class SessionMarker:
    """``<state>/sessions/<session id>.json``: the running session's last known counters.

    The file is locked while its session lives, and the OS drops the lock when the process dies
    however it dies; so at start, a marker we can lock belongs to a session that crashed. It is
    rewritten in place on each counted event with one ``pwrite`` (into the page cache, which
    outlives a killed process). Not through a shared memory map, though it would save the system
    call: a write into a map faults (SIGBUS, the end of the host app) once the file under it is
    cut short by another program, or when a copy-on-write file system (btrfs, APFS) is full.
    """

    def __init__(self, folder: Path, session_id: str, started_at: float) -> None:
        self.path = folder / f"{session_id}.json"
        self._head = f'{{"session_id":"{session_id}","started_at":{started_at!r},"last_seen":'.encode()
        self._fd: int | None = None
        # A write under way, and a close() that came during it (a signal handler): the descriptor
        # is closed by the write once it is done, never under it (its number could be reused).
        self._writing = 0
        self._close_when_written = False
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not try_lock(fd):
            os.close(fd)
            raise OSError(f"session marker {self.path.name} is held by another process")
        self._fd = fd

    def write(self, counters: SessionCounters, now: float) -> None:
        self._writing += 1
        try:
            fd = self._fd
            if fd is not None:
                self._write(fd, counters, now)
        finally:
            self._writing -= 1
            if not self._writing and self._close_when_written:
                self._close_when_written = False
                self.close()

    def _write(self, fd: int, counters: SessionCounters, now: float) -> None:
        # Formatted by hand: this runs on emit()'s path, and asdict() + json.dumps cost ~9 us there,
        # an f-string with two float reprs ~2 us, this 0.7 us. Every value is a number or our own
        # UUID, so the JSON is valid by construction; the last moment is kept to the millisecond.
        c = counters
        data = self._head + _MARKER_TAIL % (
            now,
            c.proposals_created,
            c.proposals_approved,
            c.proposals_rejected,
            c.chat_turns,
            c.tool_calls,
            c.errors,
        )
        # Padded to a fixed size, so a shorter write never leaves a tail of the previous one. A
        # full disk costs the crash report its latest counters, never the event being counted.
        with contextlib.suppress(OSError):
            if hasattr(os, "pwrite"):
                os.pwrite(fd, data.ljust(MARKER_BYTES), 0)
            else:  # pragma: no cover - Windows has no pwrite
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, data.ljust(MARKER_BYTES))

    def forget(self) -> None:
        """In a forked child: let go of the inherited descriptor without touching the lock, which
        the parent still holds through its own copy (an unlock here would release it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """The session ended normally: release and remove the marker."""
        if self._writing:
            self._close_when_written = True  # a signal handler, inside a write of its own thread
            return
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            self.path.unlink()
        unlock(fd)
        os.close(fd)


MARKER_BYTES = 512
_MARKER_TAIL = (
    b'%.3f,"counters":{"proposals_created":%d,"proposals_approved":%d,"proposals_rejected":%d,'
    b'"chat_turns":%d,"tool_calls":%d,"errors":%d}}'
)


def collect_crashed_sessions(folder: Path) -> list[EndedSession]:
    """Markers whose process is gone, read and removed (oldest first). Live sessions are left alone."""
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return []  # no folder (or none we can read): no crashed session we could report
    ended: list[EndedSession] = []
    for path in paths:
        if not OWNED_FOLDERS["sessions"].fullmatch(path.name):
            continue  # not a marker of ours: never read, never removed
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            if not try_lock(fd):
                continue  # its session is alive, in another process
            try:
                found = _read_marker(path)
                if found is not None:
                    ended.append(found)
            finally:
                with contextlib.suppress(OSError):
                    path.unlink()  # read or unreadable, it is never looked at again
                unlock(fd)
        finally:
            os.close(fd)
    return sorted(ended, key=lambda s: s.started_at)


# A counter beyond this in one session is damage, not use.
MAX_COUNTER = 10**9


def _read_marker(path: Path) -> EndedSession | None:
    """What a crashed session's marker says, or None when it cannot be trusted (cut short by the
    crash, or damaged: a counter of 1e400 or -5 reports nothing rather than something false)."""
    try:
        data: Any = json.loads(path.read_bytes().strip() or b"null")
        counters = SessionCounters(**{k: _counter(v) for k, v in data["counters"].items()})
        started_at, last_seen = _moment(data["started_at"]), _moment(data["last_seen"])
        session_id = str(uuid.UUID(str(data["session_id"])))
    except (ValueError, KeyError, TypeError, AttributeError, OSError, OverflowError, RecursionError):
        return None
    return EndedSession(session_id, started_at, max(started_at, last_seen), counters)


def _counter(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNTER:
        raise ValueError(f"not a session counter: {value!r}")
    return value


def _moment(value: Any) -> float:
    if type(value) not in (int, float) or not 0 < value < 2**33:  # epoch seconds, before year 2242
        raise ValueError(f"not a time: {value!r}")
    return float(value)
