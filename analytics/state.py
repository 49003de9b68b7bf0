"""The state folder: where the queue, the identity and the counters live on the user's disk.

Created 0700 with files 0600: other accounts on a shared machine must not read what is waiting.
Nothing here is touched while telemetry is disabled.

``TELEMETRY_DIR`` may point at a folder that also holds the user's own files (a home folder, a
project folder), so nothing here ever deletes by walking a folder: :meth:`StateFolder.purge` removes
only entries whose names match what this library creates (:data:`OWNED`), never follows a symbolic
link, and removes a folder only once it is empty.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from pathlib import Path
from typing import Final

OPT_OUT_MARKER: Final = "opted-out"

# What the library creates, by name. Folders map to the pattern of the files it puts in them.
_HEX: Final = "[0-9a-f]"
_SQLITE_FILES: Final = r"cache\.db(?:-wal|-shm|-journal)?"
# diskcache keeps a large value in <2 hex>/<2 hex>/<28 hex>.val beside its database.
DISKCACHE_FILES: Final = re.compile(rf"{_SQLITE_FILES}|{_HEX}{{2}}(?:/{_HEX}{{2}}(?:/{_HEX}{{28}}\.val)?)?")
_UUID: Final = rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
OWNED_FOLDERS: Final[dict[str, re.Pattern[str]]] = {
    "queue": DISKCACHE_FILES,
    "meta": DISKCACHE_FILES,
    "dead-letters": DISKCACHE_FILES,
    "proposals": DISKCACHE_FILES,
    "archive": re.compile(r"\d{4}-\d{2}-\d{2}\.jsonl|undated\.jsonl"),
    "sessions": re.compile(rf"{_UUID}\.json"),
    "journal": re.compile(r"\d+-[0-9a-f]{8}\.(?:seg|new)"),
}
# A damaged queue set aside: queue.corrupt-<time>-<pid>, laid out like queue/.
_CORRUPT_QUEUE: Final = re.compile(r"queue\.corrupt-\d+-\d+")
# consent-level and identified-user: the app's run-time choices (analytics.consent, analytics.identity).
OWNED_FILES: Final = re.compile(
    r"install_id|salt|upload\.lock|consent-level|identified-user"
    r"|\.(?:install_id|salt)\.\d+\.[0-9a-f]{8}|\.(?:consent-level|identified-user)\.\d+"
)


class StateFolder:
    """Paths inside one state folder, and the few operations on the folder as a whole."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.queue_dir = root / "queue"
        self.meta_dir = root / "meta"
        self.journal_dir = root / "journal"
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
        try:
            return stat.S_ISDIR(os.stat(self.root).st_mode)
        except (OSError, ValueError):
            return False

    @property
    def opted_out(self) -> bool:
        return self.opt_out_reason() is not None

    def opt_out_reason(self) -> str | None:
        """Why this folder says telemetry must stay off, or None.

        A folder we may not look into (another account's, behind a 0700 folder) cannot tell us
        whether the user opted out: that fails closed, as an unreadable consent setting does.
        A path that cannot exist (too long, a file in the way) holds no marker.
        """
        try:
            os.stat(self.opt_out_marker)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                return f"state folder not accessible, so the opt-out cannot be checked ({exc.strerror})"
            return None
        except ValueError:  # a NUL byte in the path
            return None
        return "opted out (set_enabled(False))"

    def purge(self, *, keep_opt_out: bool = True) -> None:
        """Delete everything this library stored; keep only the marker that keeps telemetry off.

        Only names this library creates are touched (see the module docstring); anything else in
        the folder, and anything a symbolic link points at, is left exactly as it was.
        """
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if entry.is_symlink():
                continue
            if name == OPT_OUT_MARKER:
                if not keep_opt_out:
                    _unlink_quietly(entry.path)
            elif OWNED_FILES.fullmatch(name) and entry.is_file(follow_symlinks=False):
                _unlink_quietly(entry.path)
            elif name in OWNED_FOLDERS and entry.is_dir(follow_symlinks=False):
                purge_folder(Path(entry.path), OWNED_FOLDERS[name])
            elif _CORRUPT_QUEUE.fullmatch(name) and entry.is_dir(follow_symlinks=False):
                purge_folder(Path(entry.path), DISKCACHE_FILES)

    def damaged_queues(self) -> list[Path]:
        """Damaged queues set aside (``queue.corrupt-*``) whose events have not been read back."""
        try:
            names = [entry.name for entry in os.scandir(self.root) if entry.is_dir(follow_symlinks=False)]
        except OSError:
            return []
        return sorted(self.root / name for name in names if _CORRUPT_QUEUE.fullmatch(name))

    def clear_opt_out(self) -> None:
        """Remove the opt-out marker (opting back in); a folder that refuses is left as it is."""
        with contextlib.suppress(OSError):
            os.unlink(self.opt_out_marker)

    def write_opt_out(self, reason: str) -> None:
        self.ensure()
        write_private(self.opt_out_marker, reason.encode())


def purge_folder(folder: Path, owned: re.Pattern[str], relative: str = "") -> None:
    """Remove the files under ``folder`` whose relative path matches ``owned``, then the folder
    itself if nothing else is left in it."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        path = f"{relative}{entry.name}"
        if entry.is_symlink() or not owned.fullmatch(path):
            continue
        if entry.is_dir(follow_symlinks=False):
            purge_folder(Path(entry.path), owned, f"{path}/")
        elif entry.is_file(follow_symlinks=False):
            _unlink_quietly(entry.path)
    with contextlib.suppress(OSError):
        os.rmdir(folder)  # fails, harmlessly, while anything that is not ours is inside


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


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


def replace_private(path: Path, content: bytes) -> None:
    """Write ``path`` (0600) whole or not at all: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    write_private(tmp, content)
    os.replace(tmp, path)
