"""When to try again: a small immutable policy and a pure ``Retry-After`` parser.

The uploader sleeps; these only compute. ``now`` and the random source are parameters, so tests
can pin them and nothing here reads a clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Retry-After is HTTP parsing: it lives beside the sinks; re-exported here, where the policy uses it.
from analytics.sinks.retry_after import MAX_RETRY_AFTER_SECONDS, parse_retry_after

__all__ = ["MAX_RETRY_AFTER_SECONDS", "RetryPolicy", "parse_retry_after"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, and ``Retry-After`` as a floor.

    >>> policy = RetryPolicy(base=1.0, cap=60.0, jitter=False)
    >>> [policy.next_delay(n) for n in range(1, 5)]
    [1.0, 2.0, 4.0, 8.0]
    >>> policy.next_delay(1, retry_after=30.0)
    30.0
    """

    base: float = 1.0
    cap: float = 300.0
    multiplier: float = 2.0
    jitter: bool = True
    # After a rejected token (401/403) we keep the events and ask again rarely.
    paused_delay: float = 900.0

    def next_delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        exponent = max(0, attempt - 1)
        try:
            ceiling = min(self.cap, self.base * self.multiplier**exponent)
        except OverflowError:  # a laptop offline for days counts thousands of attempts: 2.0 ** 1100
            ceiling = self.cap
        # "Equal jitter": at least half the backoff, so retries spread out but never collapse to zero.
        delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2) if self.jitter else ceiling
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        return delay
