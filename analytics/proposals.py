"""ProposalClock: when each open proposal was created, so its decision can report the review time,
even when the app restarted in between. Entries expire after a TTL (30 days by default): a
proposal nobody decided on must not be kept forever.

The clock is a convenience, never a reason to lose the event it annotates: a store that is locked
by another process, or cannot be opened, costs the review time at worst. Creation times it cannot
write yet are kept in memory (so a decision in this process still finds them) and written later.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Final

import diskcache

from analytics.forksafe import sqlite_section
from analytics.queue.bounded_open import BoundedOpen
from analytics.queue.disk import DB_NAME, STORE_ERRORS
from analytics.state import make_private_dir, precreate_private_file

logger = logging.getLogger(__name__)

# SQLite's busy timeout: this runs on emit()'s path, which never waits on another process.
LOCK_WAIT_SECONDS: Final = 0.005
MAX_UNWRITTEN: Final = 10_000


class ProposalClock:
    def __init__(self, directory: Path, ttl_seconds: float) -> None:
        def open_store() -> diskcache.Cache:
            make_private_dir(directory)
            precreate_private_file(directory / DB_NAME)
            # diskcache's own expiry does the forgetting; culling runs on each set, a few rows at a time.
            return diskcache.Cache(str(directory), timeout=LOCK_WAIT_SECONDS, eviction_policy="none")

        self._opening: BoundedOpen[diskcache.Cache] | None = BoundedOpen(open_store, "proposals")
        self._cache: diskcache.Cache | None = None
        self._ttl = ttl_seconds
        self._unwritten: dict[str, float] = {}

    def _store(self) -> diskcache.Cache | None:
        opening = self._opening
        if opening is not None and opening.ready:
            self._opening = None
            self._cache = opening.result()
            if opening.error is not None:
                logger.warning("proposal review times kept in memory only: %s", opening.error)
        return self._cache

    def created(self, proposal_id: str, at: float) -> None:
        self._unwritten[proposal_id] = at
        if len(self._unwritten) > MAX_UNWRITTEN:
            self._unwritten.pop(next(iter(self._unwritten)))
        self._write_unwritten()

    def _write_unwritten(self) -> None:
        cache = self._store()
        if cache is None:
            return
        for proposal_id, at in list(self._unwritten.items()):
            try:
                with sqlite_section:
                    cache.set(proposal_id, at, expire=self._ttl)
            except STORE_ERRORS as exc:
                logger.debug("proposal creation time not written yet: %s", exc)
                return
            self._unwritten.pop(proposal_id, None)

    def review_duration_ms(self, proposal_id: str, decided_at: float) -> int | None:
        """Milliseconds since the proposal was created (None if unknown or expired); forgets it."""
        created_at: Any = self._unwritten.pop(proposal_id, None)
        cache = self._store()
        if cache is not None:
            try:
                with sqlite_section:
                    stored = cache.pop(proposal_id, default=None)
            except STORE_ERRORS as exc:
                logger.debug("proposal creation time unreadable now: %s", exc)
            else:
                created_at = stored if created_at is None else created_at
        try:
            created = float(created_at)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(created):
            return None
        # diskcache expires by the wall clock; the decision's own time is the one that counts.
        if decided_at - created > self._ttl:
            return None
        return max(0, int((decided_at - created) * 1000))

    def close(self) -> None:
        if self._opening is not None and self._unwritten:
            self._opening.wait(0.5)
        self._write_unwritten()
        cache, self._cache, self._opening = self._store(), None, None
        if cache is not None:
            with sqlite_section:
                cache.close()
