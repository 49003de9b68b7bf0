"""Journal: the cheap durable step of ``emit()``, one ``write()`` per event to a file of this process.

Why: an insert into diskcache's ``Cache`` table (its indexes, its counting triggers, SQLite's
locking, the write-ahead log growing and being checkpointed) costs tens of microseconds and, on a
real disk, an occasional millisecond stall. Surviving ``kill -9`` needs only the bytes in the page
cache, which one ``os.write()`` to an open file gives in about a microsecond. So ``emit()`` appends
a framed record to a segment file, and a background step (:class:`analytics.queue.OfflineQueue`)
moves whole segments into the diskcache queue in one transaction each.

Segments: ``<state>/journal/<pid>-<8 hex>.seg``, one writer each (this process, this instance),
created 0600 and held under an exclusive ``flock`` for as long as the owner has it open. A segment
whose lock is free belongs to nobody alive (the owner died, even by ``kill -9``): any process may
adopt it, read it back and remove it. A forked child never writes into its parent's segment; it
opens its own at its first append.

Framing: the file starts with :data:`MAGIC`; each record is ``<u32 length><u32 crc32>`` then the
bytes. A record cut short (the process died inside ``write()``, the disk filled) or whose checksum
does not match ends the readable part of the segment: it is skipped and counted, never raised.

Appends take a re-entrant lock around one ``os.write()`` only: a signal handler that emits while
its own thread is inside ``append()`` writes its record and returns, and a rotation (the
background step swapping in a new segment) never races a write into a segment being read back.
While an append is under way, nothing is moved and no descriptor is closed: a signal handler in
that thread that moves or closes the journal (``shutdown()`` from a SIGTERM handler) moves nothing,
and its close is finished by the interrupted append once its write is done. The background step
never waits on the lock for long: an append interrupted by a handler holds it until the handler
returns.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from analytics.filelock import try_lock
from analytics.forksafe import after_fork_in_child
from analytics.queue.shorthand import unpack

MAGIC: Final = b"AJ1\n"
_FRAME: Final = struct.Struct("<II")
SEGMENT_NAME: Final = re.compile(r"\d+-[0-9a-f]{8}\.seg")
# A segment being made (locked, then renamed to its .seg name); one whose maker died stays empty.
MAKING_NAME: Final = re.compile(r"\d+-[0-9a-f]{8}\.new")
# A segment this big asks the background step to move it now rather than at its next round
# (one transaction per segment: a few thousand typical events).
ROTATE_BYTES: Final = 1024 * 1024
# Records parsed between two offers of the GIL to other threads (~50 µs of work).
_YIELD_EVERY: Final = 64
# Retired segments whose records are also kept in memory (about a MiB each).
_MIRRORED_SEGMENTS: Final = 8
# How long the background step waits for an append to finish before trying again at its next round.
_RETIRE_WAIT_SECONDS: Final = 0.05
_OPEN_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)


@dataclass(eq=False)  # a segment is itself: two are never "equal"
class Segment:
    """One segment file, open (and locked) by this process."""

    path: Path
    fd: int
    size: int = len(MAGIC)
    count: int = 0
    opened: float = field(default_factory=time.monotonic)
    # What this process wrote into it, kept until it moves: the move then reads no file and parses
    # no frame (work that would hold the GIL beside an app that emits). None: read the file.
    records: list[bytes] | None = field(default_factory=list)
    # The descriptor while open. A move that outlives close() (the background thread, past its
    # join) and close() itself may both let go of a segment: the one that takes it from here
    # closes it, once (a second close could hit another file that reused the number).
    _open: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._open.append(self.fd)

    def close_fd(self) -> None:
        try:
            fd = self._open.pop()  # atomic: only one caller gets it
        except IndexError:
            return
        with contextlib.suppress(OSError):
            os.close(fd)


@dataclass(frozen=True)
class ReadBack:
    """What a segment held: whole records, oldest first, and how many were cut short or damaged."""

    records: list[bytes]
    torn: int


def frame(record: bytes) -> bytes:
    return _FRAME.pack(len(record), zlib.crc32(record)) + record


def parse(data: bytes, *, polite: bool = False) -> ReadBack:
    """The records of a segment's bytes. Stops at the first record that is cut short or fails its
    checksum: nothing after it can be trusted to start where a record starts. ``polite``: offer the
    GIL now and then (the background thread, beside an app that emits)."""
    if not data.startswith(MAGIC):
        return ReadBack([], 1 if data else 0)
    records: list[bytes] = []
    offset, end = len(MAGIC), len(data)
    unpack_from, header = _FRAME.unpack_from, _FRAME.size
    while offset < end:
        if polite and len(records) % _YIELD_EVERY == _YIELD_EVERY - 1:
            # A segment holds thousands of records: let an emit waiting for the GIL have it now,
            # not after the whole segment (each offer costs this thread up to the interpreter's
            # switch interval, so only the background thread makes them).
            time.sleep(0)
        if offset + header > end:
            return ReadBack(records, 1)
        length, crc = unpack_from(data, offset)
        start = offset + header
        record = data[start : start + length]
        if len(record) != length or zlib.crc32(record) != crc:
            return ReadBack(records, 1)
        records.append(record)
        offset = start + length
    return ReadBack(records, 0)


def read_fd(fd: int) -> bytes:
    """The whole file behind ``fd`` (read by position: the file may already be unlinked)."""
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def segment_paths(directory: Path) -> list[Path]:
    """The segment files in ``directory``, least recently written first (their records' order)."""
    found: list[tuple[int, str]] = []
    try:
        for entry in os.scandir(directory):
            if SEGMENT_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
    except OSError:
        return []
    return [directory / name for _mtime, name in sorted(found)]


def adopt_orphans(
    directory: Path,
    put_batch: Callable[[list[bytes]], None],
    *,
    skip: Callable[[Path], bool] = lambda _: False,
    polite: bool = False,
) -> tuple[int, int]:
    """Move the segments of processes that died into the queue with ``put_batch`` (one call per
    segment), removing each once it is in; returns (records moved, records torn). A segment whose
    ``put_batch`` raises stays for a later try, and the exception goes to the caller."""
    _remove_unfinished(directory)
    moved = torn = 0
    for path in segment_paths(directory):
        if skip(path):
            continue
        orphan = Orphan.adopt(path)
        if orphan is None:
            continue
        try:
            found = orphan.read(polite=polite)
            put_batch(found.records)
        except BaseException:
            orphan.release()
            raise
        orphan.remove()
        moved += len(found.records)
        torn += found.torn
    return moved, torn


def _remove_unfinished(directory: Path) -> None:
    """Remove segments whose maker died before naming them (they never held a record)."""
    try:
        names = [entry.name for entry in os.scandir(directory) if MAKING_NAME.fullmatch(entry.name)]
    except OSError:
        return
    for name in names:
        orphan = Orphan.adopt(directory / name)
        if orphan is not None:
            orphan.remove()


def read_all(directory: Path) -> list[bytes]:
    """Every whole record in every segment of ``directory``, live or orphaned, as plain messages,
    without taking or changing anything (for ``analytics queue peek`` and ``status`` beside a
    running app)."""
    records: list[bytes] = []
    for path in segment_paths(directory):
        with contextlib.suppress(OSError):
            records.extend(map(unpack, parse(path.read_bytes()).records))
    return records


class Journal:
    """This process's segment of a journal folder. Thread-safe; see the module docstring."""

    def __init__(self, directory: Path, *, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.directory = directory
        self.rotate_bytes = rotate_bytes
        self._lock = threading.RLock()
        self._current: Segment | None = None
        self._retired: list[Segment] = []
        # Appends under way (in one thread: a signal handler's append nests in the one it
        # interrupted); segments a close() during one left for the outermost to let go of.
        self._appending = 0
        self._closed = False
        self._left_open: list[Segment] = []
        self._pid = os.getpid()
        self._last_append = 0.0
        after_fork_in_child(self, Journal._after_fork)

    def _after_fork(self) -> None:
        # The descriptors are the parent's (closing our copies keeps the parent's locks: a flock
        # belongs to the open file, which the parent still holds); so is every record in them.
        for segment in [*self._retired, *([self._current] if self._current else [])]:
            segment.close_fd()
        self._lock = threading.RLock()
        self._current = None
        self._retired = []
        self._appending = 0
        self._left_open = []
        self._pid = os.getpid()

    @property
    def pending(self) -> int:
        """Records this process journaled and has not moved into the queue yet."""
        current = self._current
        return (current.count if current else 0) + sum(segment.count for segment in self._retired)

    def has_retired(self) -> bool:
        return bool(self._retired)

    @property
    def pending_bytes(self) -> int:
        # Asked on every emit: the usual case (nothing retired) costs no generator.
        current = self._current
        size = current.size if current else 0
        if self._retired:
            size += sum(segment.size for segment in self._retired)
        return size

    def may_wait(self, *, quiet_seconds: float, longest_seconds: float, most_bytes: int) -> bool:
        """Whether the move may wait for a quiet moment: the app appended within ``quiet_seconds``,
        and the journal holds less than ``most_bytes``, none of it older than ``longest_seconds``."""
        now = time.monotonic()
        if now - self._last_append >= quiet_seconds or self.pending_bytes >= most_bytes:
            return False
        retired, current = self._retired, self._current
        oldest = retired[0] if retired else current
        return oldest is None or now - oldest.opened < longest_seconds

    def append(self, records: Iterable[bytes]) -> bool:
        """Write the records in one ``write()``; durable against ``kill -9`` on return.

        Returns True when the segment has grown past ``rotate_bytes`` (time to move it). Raises
        ``OSError`` when the folder cannot take it; nothing of it is then left in the segment.
        """
        records = records if isinstance(records, (list, tuple)) else list(records)
        data = frame(records[0]) if len(records) == 1 else b"".join(map(frame, records))
        with self._lock:
            self._appending += 1
            try:
                if self._closed:
                    raise OSError(errno.EBADF, "journal closed")
                segment = self._current
                if segment is None:
                    segment = self._current = self._open_segment()
                self._write(segment, data, len(records))
                self._last_append = time.monotonic()
                if segment.records is not None:
                    segment.records += records
                if segment.size < self.rotate_bytes or segment is not self._current:
                    return False
                # Full: retire it now, so a move behind a fast producer reads ~1 MiB at a time.
                self._retire(segment)
                self._current = None
                return True
            finally:
                self._appending -= 1
                if not self._appending and self._left_open:
                    # close() ran in a signal handler while this append was under way: let go
                    # now. What the segments hold stays for the next start to adopt.
                    left, self._left_open = self._left_open, []
                    _let_go(left)

    @staticmethod
    def _write(segment: Segment, data: bytes, count: int) -> None:
        written = os.write(segment.fd, data)
        if written != len(data):
            # A short write (a full disk): cut the partial record off again, so that what
            # follows it stays readable, and let the caller keep the event elsewhere.
            with contextlib.suppress(OSError):
                os.ftruncate(segment.fd, segment.size)
            raise OSError(errno.ENOSPC, "journal write cut short")
        segment.size += written
        segment.count += count

    def _open_segment(self) -> Segment:
        try:
            return self._create_segment()
        except FileNotFoundError:
            # The folder was removed under us (the queue notices and recreates the rest).
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            return self._create_segment()

    def _create_segment(self) -> Segment:
        # Made under a name no reader looks at, and given its segment name only once locked: a
        # file that had its name before its lock could be taken for a dead process's segment (by
        # a signal handler of this very thread, between the two steps) and removed under us.
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        making, path = self.directory / f"{name}.new", self.directory / f"{name}.seg"
        fd = os.open(making, _OPEN_FLAGS, 0o600)
        try:
            if not try_lock(fd):
                raise OSError(errno.EAGAIN, f"cannot lock new journal segment {name}")
            os.write(fd, MAGIC)
            os.rename(making, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(making)
            raise
        return Segment(path, fd)

    def retire(self) -> list[Segment]:
        """Close the current segment to new appends and return every segment waiting to move.

        The next append opens a fresh segment. The caller moves each returned segment and then
        calls :meth:`moved` (or leaves it retired, to be tried again). A segment an append is
        writing into is never returned; nor is anything while an append holds the lock for more
        than a moment (a signal handler interrupted it): the next round tries again.
        """
        if not self._lock.acquire(timeout=_RETIRE_WAIT_SECONDS):
            return []
        try:
            if self._appending:
                return []  # a signal handler, inside an append of its own thread
            current = self._current
            if current is not None and current.count:
                self._retire(current)
                self._current = None
            return list(self._retired)
        finally:
            self._lock.release()

    def _retire(self, segment: Segment) -> None:
        if len(self._retired) >= _MIRRORED_SEGMENTS:
            # Moves are failing (the queue is unusable): what waits is on disk; memory stays bounded.
            segment.records = None
        self._retired.append(segment)

    def moved(self, segment: Segment) -> None:
        """The segment's records are in the queue: remove the file, then release its lock.

        In that order: a process that takes the lock afterwards finds the file gone and cannot
        read the records back a second time. No lock: a list's remove is atomic, and a retired
        segment takes no more appends.
        """
        with contextlib.suppress(ValueError):
            self._retired.remove(segment)
        with contextlib.suppress(OSError):
            os.unlink(segment.path)
        segment.close_fd()

    def close(self) -> None:
        """Let go of this process's segments. An empty one is removed; one still holding records
        stays, unlocked, for the next process (or the next start) to adopt. A segment an append is
        writing into (this is a signal handler that interrupted it) is let go by that append."""
        with self._lock:
            self._closed = True
            segments = [*self._retired, *([self._current] if self._current else [])]
            self._current, self._retired = None, []
            if self._pid != os.getpid():
                return
            if self._appending:
                self._left_open.extend(segments)
                return
        _let_go(segments)

    def own(self, path: Path) -> bool:
        with self._lock:
            current = self._current
            return (current is not None and current.path == path) or any(
                segment.path == path for segment in self._retired
            )


def _let_go(segments: list[Segment]) -> None:
    """Close segments: an empty one is removed, one holding records stays (unlocked) to be adopted."""
    for segment in segments:
        if not segment.count:
            with contextlib.suppress(OSError):
                os.unlink(segment.path)
        segment.close_fd()


class Orphan:
    """A segment whose owner is gone, locked by us while it is read back and removed."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def adopt(cls, path: Path) -> Orphan | None:
        """Lock ``path`` if nobody holds it and it is still there; None otherwise."""
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            # Locked: its owner lives. Gone or replaced since we opened it: its owner (or another
            # adopter) moved it and removed it before letting go of the lock.
            if try_lock(fd) and os.fstat(fd).st_ino == os.stat(path).st_ino:
                return cls(path, fd)
        except OSError:
            pass
        os.close(fd)
        return None

    def read(self, *, polite: bool = False) -> ReadBack:
        return parse(read_fd(self.fd), polite=polite)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.release()

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
