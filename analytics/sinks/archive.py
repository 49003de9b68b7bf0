"""ArchiveSink: the embedded default when no PostHog host is configured.

Date-partitioned JSONL files in ``<state>/archive`` (``2026-11-25.jsonl``, by the event's UTC
date), one message per line, exactly as it would have been sent. Delivery is at-least-once, so a
crash between writing and acknowledging may repeat a line; readers deduplicate by ``uuid``.

Retention (as the seed's collector "purges after a configurable period"): day files older than
``TELEMETRY_ARCHIVE_DAYS`` (90) are deleted, then the oldest ones while the archive is larger than
``TELEMETRY_ARCHIVE_MAX_BYTES`` (256 MiB); the file being written to is always kept. The uploader's
thread does it, through this sink, on its first export and then at most hourly; each deletion is
counted (files, events, bytes) and ``analytics status`` shows the total.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from analytics.sinks.base import ExportResult, Outcome
from analytics.state import make_private_dir

# The timestamp is the first date-like value in our compact encoding; reading it by position
# avoids parsing every message just to find its file.
_TIMESTAMP_KEY = b'"timestamp":"'


_DAY_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.jsonl")
# Retention runs at the first export, then at most this often: a day file ages by days, not seconds.
PRUNE_EVERY_SECONDS = 3600.0


@dataclass(frozen=True)
class ArchiveRetention:
    days: float = 90.0
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class Pruned:
    """Day files deleted by one retention pass."""

    files: int
    events: int
    bytes: int


class ArchiveSink:
    name = "archive"

    def __init__(
        self,
        folder: Path,
        *,
        retention: ArchiveRetention | None = None,
        now: Callable[[], float] = time.time,
        on_pruned: Callable[[Pruned], None] | None = None,
    ) -> None:
        self.folder = folder
        self.retention = retention or ArchiveRetention()
        self._now = now
        self._on_pruned = on_pruned
        self._next_prune = 0.0  # monotonic

    def export(self, batch: Sequence[bytes], timeout: float) -> ExportResult:
        by_day: dict[str, list[bytes]] = defaultdict(list)
        for record in batch:
            by_day[_day_of(record)].append(record)
        try:
            make_private_dir(self.folder)
            for day, records in by_day.items():
                _append(self.folder / f"{day}.jsonl", records)
        except OSError as exc:
            return ExportResult(Outcome.RETRY, detail=f"archive not writable: {exc.strerror or exc}")
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
            self.prune()
        return ExportResult(Outcome.SUCCESS)

    def prune(self) -> Pruned:
        """Apply the retention now; the deletions are reported to ``on_pruned`` (when any)."""
        pruned = prune_archive(self.folder, self.retention, self._now())
        if pruned.files and self._on_pruned is not None:
            self._on_pruned(pruned)
        return pruned

    def shutdown(self) -> None:
        return None


def _day_of(record: bytes) -> str:
    start = record.find(_TIMESTAMP_KEY)
    if start < 0:
        return "undated"
    day = record[start + len(_TIMESTAMP_KEY) : start + len(_TIMESTAMP_KEY) + 10]
    text = day.decode("ascii", "replace")
    return text if len(text) == 10 and text[4] == "-" and text[7] == "-" else "undated"


def _append(path: Path, records: list[bytes]) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # A crash mid-write can leave a last line without its newline; appended to as it is, it
        # would swallow the next record. Ending it first keeps the damage to that one line (which
        # readers skip, and whose event the queue still holds).
        size = os.fstat(fd).st_size
        lead = b""
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)  # O_APPEND writes still go to the end
            lead = b"" if os.read(fd, 1) == b"\n" else b"\n"
        data = memoryview(lead + b"".join(record.rstrip(b"\n") + b"\n" for record in records))
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)  # the queue forgets these records next: they must be on disk first
    finally:
        os.close(fd)


def read_archive(folder: Path) -> Iterator[dict[str, Any]]:
    """Every archived message, oldest file first, each uuid once (delivery is at-least-once)."""
    if not folder.is_dir():
        return
    seen: set[str] = set()
    for path in sorted(folder.glob("*.jsonl")):
        with path.open("rb") as handle:
            for line in handle:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash mid-write: the queue still has that event
                uuid = message.get("uuid") if isinstance(message, dict) else None
                if isinstance(uuid, str) and uuid not in seen:
                    seen.add(uuid)
                    yield message


def prune_archive(folder: Path, retention: ArchiveRetention, now: float) -> Pruned:
    """Delete day files past ``retention`` (by their date, against ``now``), then the oldest while
    the rest is over the byte bound. Only our own ``YYYY-MM-DD.jsonl`` files are ever touched."""
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file(follow_symlinks=False))
    except OSError:
        return Pruned(0, 0, 0)
    days = [name for name in names if _DAY_FILE.fullmatch(name)]
    cutoff = (datetime.fromtimestamp(now, timezone.utc) - timedelta(days=retention.days)).date().isoformat()
    sizes = {name: _size(folder / name) for name in days}
    doomed = [name for name in days[:-1] if name[:10] < cutoff]
    if days and days[-1][:10] < cutoff:
        doomed.append(days[-1])  # even the newest, when the app has not run for the whole period
    total = sum(size for name, size in sizes.items() if name not in doomed)
    for name in days[:-1]:
        if total <= retention.max_bytes:
            break
        if name not in doomed:
            doomed.append(name)
            total -= sizes[name]
    files = events = size = 0
    for name in doomed:
        path = folder / name
        lines = _count_lines(path)
        try:
            path.unlink()
        except OSError:
            continue
        files, events, size = files + 1, events + lines, size + sizes[name]
    return Pruned(files, events, size)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


class FactStore(Protocol):
    def fact(self, key: str, default: Any = None) -> Any: ...

    def set_fact(self, key: str, value: Any) -> None: ...


def record_pruned(facts: FactStore, pruned: Pruned) -> None:
    """Add one retention pass to the running total ``analytics status`` shows."""
    total = facts.fact("archive_pruned")
    total = total if isinstance(total, dict) else {}
    facts.set_fact(
        "archive_pruned",
        {
            "files": int(total.get("files", 0)) + pruned.files,
            "events": int(total.get("events", 0)) + pruned.events,
            "bytes": int(total.get("bytes", 0)) + pruned.bytes,
            "at": time.time(),
        },
    )
