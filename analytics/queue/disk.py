"""DiskQueue: the events waiting on the user's disk, in a diskcache ``Cache``.

Records are the final PostHog messages as UTF-8 JSON bytes. A record leaves only through
:meth:`DiskQueue.ack` (after the sink accepted it) or :meth:`DiskQueue.drop_oldest` (a bound was
hit, and the caller counts it): there is no pop.

diskcache creates the database, its schema, indexes and counting triggers, and serves the
occasional operations (size, volume, transactions). The three operations on the hot paths (append,
peek a batch, delete a batch) are one SQL statement each on the same ``Cache`` table, in diskcache's
own row format (``raw`` integer keys, ``MODE_RAW`` blobs), so diskcache reads what we write and the
other way round. ``Cache.push`` would cost four statements and a transaction per event; SPEC 10's
hot-path budget is 50 µs.

Keys are microseconds since the epoch at insertion (made unique by the table's unique index),
so they sort in emit order across processes.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (diskcache's defaults): a committed append
survives the process being killed at any instant; only a power cut may lose the last commits.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import diskcache

from analytics.forksafe import sqlite_section
from analytics.queue.shorthand import pack, unpack, unpack_many
from analytics.state import make_private_dir, precreate_private_file

DB_NAME: Final = "cache.db"
# diskcache's own errors plus SQLite's and the file system's: all mean "this disk store is unwell".
STORE_ERRORS: Final = (sqlite3.Error, OSError, diskcache.Timeout)

_MODE_RAW: Final = 1  # diskcache.core.MODE_RAW: the value column holds the bytes themselves


@functools.cache
def _insert_rows_sql(rows: int) -> str:
    return _INSERT_INTO + ",".join([_VALUES_ROW] * rows)


# store_time and access_time are 0: nothing reads them (no eviction policy, the key holds the
# insertion time), and SQLite stores an integer 0 in no bytes at all.
_INSERT_INTO: Final = (
    "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count, tag, size, mode,"
    " filename, value) VALUES "
)
_VALUES_ROW: Final = "(?, 1, 0, NULL, 0, 0, NULL, 0, 1, NULL, ?)"
_INSERT: Final = _INSERT_INTO + _VALUES_ROW
# Rows per INSERT when a batch goes in: one statement (one GIL release around SQLite's work) per
# chunk rather than one per row. With an app thread busy, every release costs a wait of up to the
# interpreter's switch interval to get the GIL back: per row, a 10,000-record segment took seconds.
_ROWS_PER_INSERT: Final = 400
_PEEK: Final = "SELECT key, mode, value FROM Cache WHERE raw = 1 ORDER BY key LIMIT ?"
_YIELD_EVERY: Final = 50
_MAX_KEY: Final = "SELECT max(key) FROM Cache"
# Bound drops: the key ``OFFSET`` rows in (the last of a chunk), then everything up to it.
_NTH_KEY: Final = "SELECT key FROM Cache WHERE raw = 1 ORDER BY key LIMIT 1 OFFSET ?"
_FILES_UP_TO: Final = "SELECT filename FROM Cache WHERE raw = 1 AND key <= ? AND filename IS NOT NULL"
_DELETE_UP_TO: Final = "DELETE FROM Cache WHERE raw = 1 AND key <= ?"
# Rows per drop transaction: ~4 µs each (diskcache's counting triggers), so another process's
# writer waits at most a few milliseconds for the lock.
DROP_CHUNK: Final = 500
_DROP_PAUSE_SECONDS: Final = 0.0002
_NEWEST: Final = "SELECT key, mode, value FROM Cache WHERE raw = 1 ORDER BY key DESC LIMIT ?"
# Keys per delete transaction. Each deleted row fires diskcache's two counting triggers, so a chunk
# holds SQLite's write lock for ~4 µs a key, and an emit() in another thread may be waiting: the
# background uploader deletes 20 at a time (~90 µs); an explicit flush or replay 500.
SMALL_CHUNK: Final = 20
LARGE_CHUNK: Final = 500
# How often a writer asks again for SQLite's write lock. SQLite's own busy handler sleeps 1 ms and
# more between tries, which is what an emit() would then wait; asking every 50 µs keeps a brief
# collision with the uploader's acknowledgement brief.
_BUSY_POLL_SECONDS: Final = 0.00005

PAGE_SIZE: Final = 4096
# How long an append waits for SQLite's write lock before the record goes to the memory buffer
# instead (SPEC 5: the app never waits on another process's lock for more than a few milliseconds).
PUT_WAIT_SECONDS: Final = 0.01

_HAS_CACHE_TABLE: Final = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'Cache'"
_COUNT: Final = "SELECT value FROM Settings WHERE key = 'count'"


class StoreBusy(sqlite3.OperationalError):
    """Another connection held SQLite's write lock for longer than this caller may wait."""


class DamagedStore(sqlite3.DatabaseError):
    """The database file is damaged in a way SQLite itself would not notice (and would paper over)."""


def _create_database(path: Path) -> None:
    """Create the database file (mode 0600) before diskcache adds its schema.

    4 KiB pages: a stored (deflated) event is a ~240-byte row, sixteen to a page, and a commit writes
    one page; 8 KiB pages measured 3 µs slower per append. Incremental auto-vacuum: free pages are
    given back by checkpoint(), off the app's path, not inside every delete. (An existing file keeps
    the settings it was made with.)

    An empty database file beside a non-empty write-ahead log is damage (the file was truncated):
    SQLite would treat it as a new database and throw the log, and the events in it, away.
    """
    precreate_private_file(path)
    if path.stat().st_size:
        return
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        raise DamagedStore(f"{path.name} is empty but its write-ahead log holds {wal.stat().st_size} bytes")
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        con.execute("PRAGMA auto_vacuum = INCREMENTAL")
        con.execute("PRAGMA journal_mode = WAL")  # writes the header: the page size is now fixed
    finally:
        con.close()


class DiskQueue:
    """An append-only queue of encoded messages, safe across threads, processes and forks.

    Every SQLite call runs inside :data:`~analytics.forksafe.sqlite_section`, so a fork never
    happens while one of our threads is inside SQLite (see :mod:`analytics.forksafe`).
    """

    def __init__(
        self, directory: Path, *, timeout: float = 2.0, put_timeout: float = PUT_WAIT_SECONDS
    ) -> None:
        self.directory = directory
        self._timeout = timeout
        self._put_timeout = put_timeout
        self._local = threading.local()
        self._last_key = 0
        self._cache_object: diskcache.Cache | None = None
        make_private_dir(directory)
        with sqlite_section:
            _create_database(directory / DB_NAME)
            # diskcache writes its settings on every open, retrying a locked database for 60 s;
            # so it is asked only to create the schema, which happens once per queue.
            self.created = not self._execute(_HAS_CACHE_TABLE).fetchone()[0]
            if self.created:
                self._cache.close()
            # Touch the table now, so a damaged file is found at open rather than on the first emit.
            len(self)

    @property
    def db_path(self) -> Path:
        return self.directory / DB_NAME

    @property
    def _cache(self) -> diskcache.Cache:
        """diskcache's own view of the folder: creates the schema, and reads or removes the rare
        record it kept in a file of its own."""
        if self._cache_object is None:
            self._cache_object = diskcache.Cache(
                str(self.directory),
                timeout=self._timeout,
                eviction_policy="none",  # we drop by our own bounds, and count every drop
                cull_limit=0,  # no expiry scan on every write
                statistics=False,
                size_limit=2**62,
            )
        return self._cache_object

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own, as diskcache does)."""
        local = self._local
        con: sqlite3.Connection | None = getattr(local, "con", None)
        if con is None or local.pid != os.getpid():
            con = sqlite3.connect(self.db_path, timeout=0, isolation_level=None)  # see _execute
            con.execute("PRAGMA synchronous = NORMAL")
            # No checkpoint inside an append: it would stall that emit() for milliseconds. The
            # uploader thread checkpoints (see checkpoint()), off the app's path.
            con.execute("PRAGMA wal_autocheckpoint = 0")
            local.con, local.pid = con, os.getpid()
        return con

    def _execute(self, sql: str, params: Any = (), *, timeout: float | None = None) -> sqlite3.Cursor:
        """Run one statement, waiting for the write lock in short steps, up to the timeout.

        The wait happens outside the fork gate (unless a transaction holds it), so a fork never
        waits for another process's lock.
        """
        limit = self._timeout if timeout is None else timeout
        deadline = 0.0
        while True:
            with sqlite_section:
                try:
                    return self._connection().execute(sql, params)
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    busy = exc
            now = time.monotonic()
            if not deadline:
                deadline = now + limit
            if now >= deadline:
                raise StoreBusy(f"the queue was locked by another writer for {limit:.3f} s") from busy
            time.sleep(_BUSY_POLL_SECONDS)

    @contextlib.contextmanager
    def _transaction(self, *, timeout: float | None = None) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error, inside the fork gate throughout."""
        limit = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            sqlite_section.__enter__()
            try:
                self._connection().execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                sqlite_section.__exit__(None, None, None)
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise StoreBusy(f"the queue was locked by another writer for {limit:.3f} s") from exc
                time.sleep(_BUSY_POLL_SECONDS)
            except BaseException:
                sqlite_section.__exit__(None, None, None)
                raise
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._connection().execute("ROLLBACK")
            raise
        else:
            self._connection().execute("COMMIT")
        finally:
            sqlite_section.__exit__(None, None, None)

    # -- writing -------------------------------------------------------------------------------

    def put(self, record: bytes) -> int:
        """Append one record, committed when this returns; returns its key.

        Raises :class:`StoreBusy` when another writer holds the lock for more than ``put_timeout``.
        """
        return self._insert(pack(record), self._put_timeout)

    def _insert(self, stored: bytes, timeout: float) -> int:
        key = max(self._last_key + 1, int(time.time() * 1_000_000))
        for _ in range(1000):
            try:
                self._execute(_INSERT, (key, stored), timeout=timeout)
            except sqlite3.IntegrityError:
                key += 1  # another process (or thread) took this microsecond
                continue
            self._last_key = key
            return key
        raise sqlite3.IntegrityError("no free queue key after 1000 tries")

    def put_many(self, records: Iterable[bytes], *, timeout: float | None = None) -> None:
        """Append records in one transaction."""
        with self._transaction(timeout=self._put_timeout if timeout is None else timeout):
            for record in records:
                self._insert(pack(record), self._timeout)

    def put_batch(self, records: list[bytes], *, timeout: float | None = None, polite: bool = False) -> None:
        """Append many records in one transaction, one ``executemany`` (a journal segment moving
        into the queue). Keys follow the newest key in the table: the transaction holds the
        write lock, so no other writer can take one of them meanwhile."""
        if not records:
            return
        stored = []
        packed = 0
        for record in records:
            if not record.startswith(b"\x00"):  # plain JSON (a journal an older version wrote)
                packed += 1
                if polite and packed % _YIELD_EVERY == 0:
                    time.sleep(0)  # an app thread waiting for the GIL gets it: this is the background
                record = pack(record)
            stored.append(record)
        with self._transaction(timeout=timeout):
            newest = self._execute(_MAX_KEY).fetchone()[0]
            first = max(self._last_key + 1, int(time.time() * 1_000_000), (newest or 0) + 1)
            self._insert_rows(first, stored)
            self._last_key = first + len(stored) - 1

    def _insert_rows(self, first: int, stored: list[bytes]) -> None:
        """Insert ``stored`` under consecutive keys from ``first``, many rows per statement."""
        connection = self._connection()
        for start in range(0, len(stored), _ROWS_PER_INSERT):
            chunk = stored[start : start + _ROWS_PER_INSERT]
            params: list[int | bytes] = []
            for key, value in enumerate(chunk, first + start):
                params += (key, value)
            with sqlite_section:
                connection.execute(_insert_rows_sql(len(chunk)), params)

    def put_stored(self, stored: Iterable[bytes]) -> None:
        """Append records already in their stored form (read back from a damaged queue)."""
        with self._transaction():
            for record in stored:
                self._insert(record, self._timeout)

    # -- reading -------------------------------------------------------------------------------

    def peek(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest ``limit`` records, left in place."""
        return self._rows(_PEEK, limit)

    def newest(self, count: int) -> list[tuple[int, bytes]]:
        """The newest ``count`` records, oldest of them first."""
        return self._rows(_NEWEST, count)[::-1]

    def _rows(self, query: str, limit: int) -> list[tuple[int, bytes]]:
        with sqlite_section:
            rows = self._execute(query, (limit,)).fetchall()
        keys: list[int] = []
        values: list[bytes] = []
        for key, mode, value in rows:
            if mode != _MODE_RAW or value is None:
                value = self._file_value(key)  # a large record diskcache stored in a file
                if value is None:
                    continue
            keys.append(key)
            values.append(bytes(value))
        return list(zip(keys, unpack_many(values), strict=True))

    def _file_value(self, key: int) -> Any:
        with sqlite_section:
            return self._cache.get(key)

    def keys(self, limit: int | None = None) -> list[int]:
        """The first ``limit`` keys, oldest first."""
        query = "SELECT key FROM Cache WHERE raw = 1 ORDER BY key" + (" LIMIT ?" if limit is not None else "")
        params: tuple[Any, ...] = (limit,) if limit is not None else ()
        with sqlite_section:
            return [key for (key,) in self._execute(query, params).fetchall()]

    def iter_all(self) -> Iterator[tuple[int, bytes]]:
        after = -1
        while True:
            with sqlite_section:
                rows = self._execute(
                    "SELECT key, mode, value FROM Cache WHERE raw = 1 AND key > ? ORDER BY key LIMIT 1000",
                    (after,),
                ).fetchall()
            if not rows:
                return
            for key, mode, value in rows:
                if mode != _MODE_RAW or value is None:
                    value = self._file_value(key)
                if value is not None:
                    yield key, unpack(bytes(value))
            after = rows[-1][0]

    # -- deleting ------------------------------------------------------------------------------

    def ack(self, keys: Iterable[int], *, chunk: int = SMALL_CHUNK) -> int:
        """Delete delivered records; returns how many were still there.

        One transaction a chunk of keys: a record is gone whole or not at all, and the write lock
        is never held for long (an emit() in another thread or process may be waiting for it).
        """
        keys = list(keys)
        removed = 0
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            marks = ",".join("?" * len(part))
            with self._transaction():
                files = self._execute(
                    f"SELECT filename FROM Cache WHERE raw = 1 AND filename IS NOT NULL AND key IN ({marks})",
                    part,
                ).fetchall()
                removed += self._execute(
                    f"DELETE FROM Cache WHERE raw = 1 AND key IN ({marks})", part
                ).rowcount
            for (filename,) in files:
                self._cache.disk.remove(filename)
        return removed

    def drop_oldest(self, count: int, *, chunk: int = DROP_CHUNK) -> int:
        """Remove up to ``count`` of the oldest records (a bound was hit); returns how many went.

        Runs in the background (the journal's mover), and no emit() waits for SQLite's write
        lock any more: each transaction deletes a key range, ``chunk`` rows, in one statement,
        which SQLite runs with the GIL released, so an app thread is not kept waiting for it
        the way a Python loop over single keys would (one transaction per 20 keys cost emit()
        at the byte bound 2.6 times its usual time).
        """
        if count <= 0:
            return 0
        with sqlite_section:
            row = self._execute(_NTH_KEY, (count - 1,)).fetchone() or self._execute(_MAX_KEY).fetchone()
        if row is None or row[0] is None:
            return 0
        # Fixed before the first delete: a second dropper that chose the same records (another
        # thread or process) then finds them gone instead of dropping the next ones too.
        boundary = int(row[0])
        removed = 0
        while removed < count:
            with self._transaction():
                row = self._execute(_NTH_KEY, (min(chunk, count - removed) - 1,)).fetchone()
                last = min(boundary, int(row[0])) if row is not None else boundary
                files = self._execute(_FILES_UP_TO, (last,)).fetchall()
                gone = self._execute(_DELETE_UP_TO, (last,)).rowcount
            for (filename,) in files:
                self._cache.disk.remove(filename)
            removed += max(0, gone)
            if last == boundary or gone <= 0:
                break
            time.sleep(_DROP_PAUSE_SECONDS)  # a real pause: a thread waiting for the GIL gets it now
        return removed

    def checkpoint(self) -> None:
        """Give free pages back to the file system, then move the write-ahead log into the database
        without waiting on readers or writers."""
        with sqlite_section:
            free_pages = self._execute("PRAGMA freelist_count").fetchone()[0]
            if free_pages > 256:  # a vacuum takes the write lock: only when there is 1 MiB to give back
                self._execute("PRAGMA incremental_vacuum").fetchall()
            self._execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.db_path}-wal").st_size
        except OSError:
            return 0

    # -- sizes ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        # diskcache's triggers keep the count in Settings: no table scan.
        with sqlite_section:
            row = self._execute(_COUNT).fetchone()
        return int(row[0]) if row else 0

    def volume(self) -> int:
        """Bytes the queue's records occupy on disk: pages in use (free pages, which the next
        incremental vacuum gives back, are not counted) plus any record diskcache kept in a file."""
        with sqlite_section:
            page_count = self._execute("PRAGMA page_count").fetchone()[0]
            free_pages = self._execute("PRAGMA freelist_count").fetchone()[0]
            page_size = self._execute("PRAGMA page_size").fetchone()[0]
            # diskcache's triggers keep the total size of file-stored values in Settings (no table scan).
            files = self._execute("SELECT value FROM Settings WHERE key = 'size'").fetchone()[0]
        return int((page_count - free_pages) * page_size + files)

    def integrity(self) -> str:
        """SQLite's own check of every page: "ok", or what is wrong (reads the whole file)."""
        with sqlite_section:
            rows = self._execute("PRAGMA quick_check(5)").fetchall()
        return "; ".join(str(row[0]) for row in rows)

    def oldest_timestamp(self) -> float | None:
        """Emit time (epoch seconds) of the oldest record, or None when empty."""
        for _key, record in self.peek(1):
            return record_timestamp(record)
        return None

    def close(self) -> None:
        with sqlite_section:
            con = getattr(self._local, "con", None)
            if con is not None and self._local.pid == os.getpid():
                con.close()
            self._local = threading.local()
            if self._cache_object is not None:
                self._cache_object.close()


_TIMESTAMP_KEY: Final = b'"timestamp":"'


def record_timestamp(record: bytes) -> float | None:
    """The emit time of an encoded message, or None when it cannot be read.

    Our encoder writes ``"timestamp":"..."`` compactly, so it is found by position without decoding
    the whole message; anything else (a record from elsewhere) is decoded the slow way.
    """
    start = record.find(_TIMESTAMP_KEY)
    if start >= 0:
        start += len(_TIMESTAMP_KEY)
        end = record.find(b'"', start)
        try:
            return datetime.fromisoformat(record[start:end].decode().replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    try:
        message: Any = json.loads(record)
        return datetime.fromisoformat(str(message["timestamp"]).replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError):
        return None
