"""Tools of the hostile-input suite: another account, another process holding a lock, a hard
timeout around code that might hang, and the accounting every fault must balance."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT

# Linux capabilities that let root ignore file modes: DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER.
_FILE_MODE_OVERRIDES = (1, 2, 3)
_PR_CAPBSET_DROP = 24


def _without_file_mode_overrides() -> None:
    """In the child, before exec: drop the capabilities that let root ignore file modes, so a
    0o000 folder or a 0o555 one means to this process what it means to any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in _FILE_MODE_OVERRIDES:
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_elsewhere(
    code: str,
    *,
    env: dict[str, str] | None = None,
    file_modes_apply: bool = False,
    read_only: Path | None = None,
    small_disk: tuple[Path, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with a hard timeout.

    ``file_modes_apply``: even when the suite runs as root, the child obeys file modes as an
    ordinary user would. ``read_only``: the child sees that folder on a read-only mount.
    ``small_disk``: the child sees (folder, size) as an empty file system of that size. Mounts are
    made in a mount namespace of the child's own, so nothing outside it changes.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMETRY_", "SENTRY_"))}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(PROJECT_ROOT)
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    drop = file_modes_apply and os.getuid() == 0
    mounts = []
    if read_only is not None:
        mounts.append(f"mount --bind '{read_only}' '{read_only}' && mount -o remount,bind,ro '{read_only}'")
    if small_disk is not None:
        folder, size = small_disk
        mounts.append(f"mount -t tmpfs -o size={size},mode=0700 tmpfs '{folder}'")
    wrapper = []
    if mounts:
        prelude = " && ".join(mounts) + ' && exec "$@"'
        wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", prelude, "sh"]
    return subprocess.run(
        [*wrapper, sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=_without_file_mode_overrides if drop else None,
    )


def require_mounts(tmp_path: Path) -> None:
    """Skip (saying why) where this machine cannot give a child a mount of its own."""
    probe = tmp_path / "mount-probe"
    probe.mkdir()
    try:
        result = run_elsewhere("print('ok')", small_disk=(probe, "1m"))
    except OSError as exc:
        pytest.skip(f"no unshare here ({exc}): read-only and full-disk faults untestable")
    if result.stdout.strip() != "ok":
        pytest.skip(f"cannot mount in a private namespace here: {result.stderr.strip()[:200]}")


def require_file_modes(tmp_path: Path) -> None:
    """Skip (saying why) where this machine cannot make a process obey file modes."""
    probe = tmp_path / "mode-probe"
    probe.mkdir(mode=0o000)
    os.chmod(probe, 0o000)
    try:
        result = run_elsewhere(f"import os; os.listdir({str(probe)!r})", file_modes_apply=True)
    except OSError as exc:
        pytest.skip(
            f"cannot drop root's file-mode override here ({exc}): folder permission faults untestable"
        )
    finally:
        os.chmod(probe, 0o700)
    if "PermissionError" not in result.stderr:
        pytest.skip("file modes do not bind a process on this machine: folder permission faults untestable")


@contextmanager
def write_lock_held(db: Path, seconds: float = 30.0) -> Iterator[subprocess.Popen[str]]:
    """Another process holding SQLite's write lock on ``db`` (BEGIN IMMEDIATE, then sleep)."""
    code = f"""
        import sqlite3, sys, time
        con = sqlite3.connect({str(db)!r}, isolation_level=None, timeout=5)
        con.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
        time.sleep({seconds})
    """
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=10)


def balance(emitted: int, delivered: int, drops: dict[str, int], queued: int, dead: int = 0) -> str:
    """The accounting every fault must keep (SPEC 5): a readable line for the assertion message."""
    counted = sum(drops.values())
    return (
        f"emitted {emitted} = delivered {delivered} + dropped {counted} {drops}"
        f" + queued {queued} + dead {dead}"
    )


def nonzero(drops: dict[str, Any]) -> dict[str, int]:
    return {reason: count for reason, count in drops.items() if count}
