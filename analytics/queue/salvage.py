"""Reading back what a damaged queue file still holds.

A queue file can be cut short (a full disk, a copy interrupted, a sync tool) or scribbled over.
SQLite then fails every statement that touches a damaged page, which used to stall delivery for
good or throw every event away. Here the table is read a window of row ids at a time, and a window
that fails is read row by row, so every record on an intact page is recovered; the count diskcache
keeps in its ``Settings`` table (when that page survived) says how many could not be.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from analytics.forksafe import sqlite_section

WINDOW: Final = 256
# Row ids past the last one that could be read before giving up, when the table's end is unreadable.
GIVE_UP_AFTER: Final = 64 * WINDOW
TIME_BUDGET_SECONDS: Final = 10.0
_MODE_RAW: Final = 1


@dataclass(frozen=True)
class Salvage:
    records: list[bytes]  # stored form, oldest first
    known_count: int | None  # how many the file said it held, if that could be read

    @property
    def lost(self) -> int | None:
        return None if self.known_count is None else max(0, self.known_count - len(self.records))


def salvage(db_path: Path) -> Salvage:
    """Every record of the damaged queue database at ``db_path`` that can still be read."""
    try:
        with sqlite_section:
            con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return Salvage([], None)
    try:
        with sqlite_section:
            # A file shorter than its header says is "malformed" to SQLite before any page is
            # read; with writable_schema it reads the pages that are there (nothing is written:
            # the connection is read-only).
            con.execute("PRAGMA writable_schema = ON")
            return _read(con)
    finally:
        with sqlite_section:
            con.close()


def _one(con: sqlite3.Connection, sql: str, params: tuple[int, ...] = ()) -> int | None:
    try:
        row = con.execute(sql, params).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None or row[0] is None else int(row[0])


def _read(con: sqlite3.Connection) -> Salvage:
    known = _one(con, "SELECT value FROM Settings WHERE key = 'count'")
    low = _one(con, "SELECT min(rowid) FROM Cache") or 1
    high = _one(con, "SELECT max(rowid) FROM Cache")
    found: list[tuple[int, int, bytes]] = []
    started = time.monotonic()
    last_seen = low
    start = low
    while time.monotonic() - started < TIME_BUDGET_SECONDS:
        if high is not None and start > high:
            break
        if high is None and start > last_seen + GIVE_UP_AFTER:
            break
        if known is not None and len(found) >= known:
            break
        rows = _window(con, start, start + WINDOW)
        if rows:
            last_seen = max(rowid for rowid, _key, _value in rows)
            found.extend(rows)
        start += WINDOW
    found.sort(key=lambda row: row[1])  # keys are emit times: the queue's order
    return Salvage([value for _rowid, _key, value in found], known)


def _window(con: sqlite3.Connection, start: int, stop: int) -> list[tuple[int, int, bytes]]:
    """(rowid, key, stored record) of the readable records with row ids in [start, stop)."""
    sql = "SELECT rowid, key, mode, value FROM Cache WHERE raw = 1 AND rowid >= ? AND rowid < ?"
    try:
        rows = con.execute(sql, (start, stop)).fetchall()
    except sqlite3.Error:
        rows = []
        for rowid in range(start, stop):
            try:
                rows.extend(con.execute(sql, (rowid, rowid + 1)).fetchall())
            except sqlite3.Error:
                continue
    return [
        (rowid, key, bytes(value))
        for rowid, key, mode, value in rows
        if mode == _MODE_RAW and value is not None
    ]
