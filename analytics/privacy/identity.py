"""Who the events are from, without saying who anyone is.

The install id is a random UUID created once per state folder; the salt is 32 random bytes that
never leave the machine and key every hash we send (paths, machine ids). Both files are written
atomically (write a temp file, then ``os.link``), so two processes starting together agree on one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# PostHog's ingestion refuses to merge persons on these ids (plugin-server person-utils): some in
# any casing, some only exactly as written, and both sets also when wrapped in quotes.
_ILLEGAL_ANY_CASE: Final = frozenset(
    {
        "anonymous",
        "guest",
        "distinctid",
        "distinct_id",
        "id",
        "not_authenticated",
        "email",
        "undefined",
        "true",
        "false",
    }
)
_ILLEGAL_EXACT: Final = frozenset({"[object Object]", "NaN", "None", "none", "null", "0", "undefined"})
MAX_DISTINCT_ID_LENGTH: Final = 200
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def illegal_distinct_id_reason(candidate: str) -> str | None:
    """Why PostHog would refuse ``candidate`` as a distinct_id, or None when it is fine."""
    text = candidate.strip()
    if not text:
        return "an empty id"
    if len(text) > MAX_DISTINCT_ID_LENGTH:
        return f"longer than {MAX_DISTINCT_ID_LENGTH} characters"
    if _SURROGATE.search(text):
        # os.fsdecode's stand-in for a byte that is not UTF-8: it can be neither kept in the state
        # folder nor sent as it is (TELEMETRY_USER_ID refuses it too).
        return "holds bytes that are not UTF-8 text"
    bare = text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text
    if bare.lower() in _ILLEGAL_ANY_CASE or bare in _ILLEGAL_EXACT:
        return f"{text!r} is one of PostHog's reserved ids"
    return None


@dataclass(frozen=True)
class InstallIdentity:
    """The install id and the hashing salt of one state folder."""

    install_id: str
    salt: bytes

    def keyed_hash(self, value: str) -> str:
        """HMAC-SHA256 of ``value`` under this install's salt, hex-encoded."""
        return hmac.new(self.salt, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def hash_path(self, path: str) -> str:
        """Hash a file or folder path; spellings of the same path hash the same."""
        normal = os.path.normcase(os.path.normpath(os.path.expanduser(path)))
        return self.keyed_hash(normal)


INSTALL_ID_FILE: Final = "install_id"
SALT_FILE: Final = "salt"


def load_or_create_identity(folder: Path) -> InstallIdentity:
    """Read the identity files in ``folder``, creating them (0600) the first time.

    A damaged file is replaced on its own: a damaged salt gets a fresh salt (hashing with a
    guessable key is worse than hashes that no longer match old ones) and keeps the install id,
    whose history in PostHog is worth keeping; a damaged install id gets a fresh one.
    """
    install_id = _read_valid(folder / INSTALL_ID_FILE, _install_id_or_none, lambda: str(uuid.uuid4()))
    salt_hex = _read_valid(folder / SALT_FILE, _salt_or_none, lambda: secrets.token_hex(32))
    return InstallIdentity(install_id=install_id, salt=bytes.fromhex(salt_hex))


def _install_id_or_none(text: str) -> str | None:
    try:
        return str(uuid.UUID(text)) if len(text) == 36 else None
    except ValueError:
        return None


def _salt_or_none(text: str) -> str | None:
    try:
        return text if len(bytes.fromhex(text)) >= 16 else None
    except ValueError:
        return None


def _read_valid(path: Path, valid: Callable[[str], str | None], make: Callable[[], str]) -> str:
    content = _read_or_create(path, lambda: make().encode())
    value = valid(content.decode("ascii", "replace"))
    if value is not None:
        return value
    # Damaged: replace it atomically, so a process reading it meanwhile sees the old or the new.
    fresh = make()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, fresh.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return fresh


def restore_identity(folder: Path, identity: InstallIdentity) -> None:
    """Write ``identity`` back if its files vanished (the state folder was deleted under us)."""
    _read_or_create(folder / INSTALL_ID_FILE, lambda: identity.install_id.encode())
    _read_or_create(folder / SALT_FILE, lambda: identity.salt.hex().encode())


def _read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    content = make()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and refuses to replace a file another process made first
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


def replace_install_id(folder: Path, identity: InstallIdentity) -> InstallIdentity:
    """A fresh install id (``reset()``: the next events are a new anonymous visitor); the salt is kept.

    Written atomically; a folder that refuses keeps the new id for this process only.
    """
    fresh = InstallIdentity(install_id=str(uuid.uuid4()), salt=identity.salt)
    tmp = folder / f".{INSTALL_ID_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, fresh.install_id.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / INSTALL_ID_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return fresh
