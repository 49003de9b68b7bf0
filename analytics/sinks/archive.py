"""ArchiveSink: the embedded default when no PostHog host is configured.

Date-partitioned JSONL files in ``<state>/archive`` (``2026-11-25.jsonl``, by the event's UTC
date), one message per line, exactly as it would have been sent. Delivery is at-least-once, so a
crash between writing and acknowledging may repeat a line; readers deduplicate by ``uuid``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from analytics.sinks.base import ExportResult, Outcome
from analytics.state import make_private_dir

# The timestamp is the first date-like value in our compact encoding; reading it by position
# avoids parsing every message just to find its file.
_TIMESTAMP_KEY = b'"timestamp":"'


class ArchiveSink:
    name = "archive"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

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
        return ExportResult(Outcome.SUCCESS)

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
