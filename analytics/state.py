"""The state folder: where the queue, the identity and the counters live on the user's disk.

Created 0700 with files 0600: other accounts on a shared machine must not read what is waiting.
Nothing here is touched while telemetry is disabled.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

OPT_OUT_MARKER: Final = "opted-out"


class StateFolder:
    """Paths inside one state folder, and the few operations on the folder as a whole."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.queue_dir = root / "queue"
        self.meta_dir = root / "meta"
        self.dead_letter_dir = root / "dead-letters"
        self.archive_dir = root / "archive"
        self.lease_path = root / "upload.lock"
        self.sessions_dir = root / "sessions"
        self.proposals_dir = root / "proposals"
        self.opt_out_marker = root / OPT_OUT_MARKER

    def ensure(self) -> None:
        """Create the folder (0700) if needed; an existing folder keeps its owner's choice."""
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)  # mkdir's mode is filtered by the umask

    def exists(self) -> bool:
        return self.root.is_dir()

    @property
    def opted_out(self) -> bool:
        return self.opt_out_marker.exists()

    def purge(self, *, keep_opt_out: bool = True) -> None:
        """Delete everything we stored; keep only the marker that keeps telemetry off."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if keep_opt_out and entry == self.opt_out_marker:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def write_opt_out(self, reason: str) -> None:
        self.ensure()
        write_private(self.opt_out_marker, reason.encode())


def make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def precreate_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists.

    SQLite gives its -wal and -shm files the database file's mode, so creating the database file
    ourselves first is what keeps all three private.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


def write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
