"""UploadLease: at most one process uploads from a queue at a time.

An advisory lock on ``<state>/upload.lock`` (see ``analytics.filelock``), taken for one upload
cycle (peek, send, acknowledge) and released after. The operating system drops it when its holder
dies, even by ``kill -9``, so a crashed app never blocks the next one. The file names the holder,
so ``analytics replay`` can say who has it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from analytics.filelock import try_lock, unlock


class UploadLease:
    def __init__(self, path: Path, *, owner: str | None = None) -> None:
        self.path = path
        self._owner = owner or f"pid {os.getpid()} ({os.path.basename(sys.argv[0]) or 'python'})"

    @contextlib.contextmanager
    def hold(self) -> Iterator[bool | None]:
        """Try to take the lease without waiting; yields whether it is ours for the block, or None
        when the lease file cannot be used at all (an unusable state folder: there is no shared
        queue to protect then, only this process's memory buffer)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield None
            return
        try:
            if not try_lock(fd):
                yield False
                return
            try:
                _write_owner(fd, f"{self._owner} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
                yield True
            finally:
                unlock(fd)
        finally:
            os.close(fd)

    def holder(self) -> str | None:
        """Who holds the lease now, or None when it is free."""
        with self.hold() as ours:
            if ours is not False:
                return None
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"


def _write_owner(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0) if hasattr(os, "pwrite") else os.write(fd, text.encode())
