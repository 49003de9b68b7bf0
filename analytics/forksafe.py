"""Surviving ``fork()``: what a child inherits from a parent whose threads were busy.

A child gets a copy of every lock exactly as it was at the instant of the fork, held or not, and
only the thread that forked. Two kinds of lock matter to us:

- Our own Python locks. A lock another thread held at fork time is held forever in the child.
  Objects that own locks register a reset with :func:`after_fork_in_child`, which gives them fresh
  ones (``os.register_at_fork``, as OpenTelemetry does).
- SQLite's C mutexes. A thread inside SQLite at fork time leaves its mutexes locked in the child,
  and the child then hangs in ``sqlite3.connect`` or in the garbage collection of a connection it
  inherited. No reset can fix a C mutex, so the fork waits instead: every use of SQLite by this
  library runs inside :data:`sqlite_section`, and just before a fork the gate closes and waits
  (briefly) for the threads inside to come out. If one does not come out in time, the child is
  told SQLite is not safe for it (:func:`sqlite_is_safe`) and keeps its events in memory.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

# How long a fork waits for our threads to leave SQLite. A statement takes microseconds; only a
# write waiting for another process's lock takes longer, and that wait is itself bounded.
FORK_WAIT_SECONDS: Final = 1.0


class _SqliteGate:
    """Counts the threads inside SQLite; a fork waits for the count to reach zero.

    Re-entrant per thread (a transaction holds it across its statements), and cheap when no fork
    is in progress: one lock round-trip on the way in and one on the way out.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._depth = threading.local()
        self._inside = 0
        self._forking = False
        self.safe = True

    def __enter__(self) -> None:
        depth: int = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._cond:
                while self._forking:
                    self._cond.wait()
                self._inside += 1
        self._depth.n = depth + 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        depth: int = self._depth.n - 1
        self._depth.n = depth
        if depth == 0:
            with self._cond:
                self._inside -= 1
                if self._inside == 0:
                    self._cond.notify_all()

    def before_fork(self) -> None:
        # The forking thread may itself be inside (a signal handler that forks): it is not in C
        # code while it runs this, so only the other threads are waited for.
        mine = 1 if getattr(self._depth, "n", 0) else 0
        with self._cond:
            self._forking = True
            self._clean = self._cond.wait_for(lambda: self._inside <= mine, timeout=FORK_WAIT_SECONDS)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        clean = getattr(self, "_clean", True)
        mine = getattr(self._depth, "n", 0)
        self._cond = threading.Condition(threading.RLock())
        self._inside = 1 if mine else 0
        self._forking = False
        self.safe = self.safe and clean


sqlite_section: Final = _SqliteGate()


def sqlite_is_safe() -> bool:
    """False in a child forked while another thread was inside SQLite: it must not use SQLite."""
    return sqlite_section.safe


_resets: list[tuple[weakref.ref[Any], Callable[[Any], None]]] = []
_resets_lock = threading.Lock()


def after_fork_in_child(owner: object, reset: Callable[[Any], None]) -> None:
    """Call ``reset(owner)`` in every forked child while ``owner`` is alive (held weakly)."""
    with _resets_lock:
        _resets[:] = [(ref, fn) for ref, fn in _resets if ref() is not None]
        _resets.append((weakref.ref(owner), reset))


def _run_child_resets() -> None:
    global _resets_lock
    _resets_lock = threading.Lock()  # the parent may have held it
    sqlite_section.after_fork_in_child()
    for ref, reset in list(_resets):
        owner = ref()
        if owner is not None:
            reset(owner)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=sqlite_section.before_fork,
        after_in_parent=sqlite_section.after_fork_in_parent,
        after_in_child=_run_child_resets,
    )
