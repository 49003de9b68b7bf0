"""ProposalClock: when each open proposal was created, so its decision can report the review time,
even when the app restarted in between. Entries expire after a TTL (30 days by default): a
proposal nobody decided on must not be kept forever."""

from __future__ import annotations

from pathlib import Path

import diskcache

from analytics.queue.disk import DB_NAME
from analytics.state import make_private_dir, precreate_private_file


class ProposalClock:
    def __init__(self, directory: Path, ttl_seconds: float) -> None:
        make_private_dir(directory)
        precreate_private_file(directory / DB_NAME)
        # diskcache's own expiry does the forgetting; culling runs on each set, a few rows at a time.
        self._cache = diskcache.Cache(str(directory), timeout=2.0, eviction_policy="none")
        self._ttl = ttl_seconds

    def created(self, proposal_id: str, at: float) -> None:
        self._cache.set(proposal_id, at, expire=self._ttl)

    def review_duration_ms(self, proposal_id: str, decided_at: float) -> int | None:
        """Milliseconds since the proposal was created (None if unknown or expired); forgets it."""
        created_at = self._cache.pop(proposal_id, default=None)
        # diskcache expires by the wall clock; the decision's own time is the one that counts.
        if created_at is None or decided_at - float(created_at) > self._ttl:
            return None
        return max(0, int((decided_at - float(created_at)) * 1000))

    def close(self) -> None:
        self._cache.close()
