"""Event and session ids: UUIDv7 and UUIDv4 strings, built without ``uuid.UUID`` (emit()'s path).

A module of its own so that the session (made by ``Analytics()``) needs neither the mapping nor
the scrubber, which load at the first emit or ``start()`` instead of at ``import analytics``.

The random bits come from a generator of our own, seeded from ``os.urandom`` once per process
(and again in a forked child, so parent and child never draw the same ids). An id must be unique,
not secret, and ``os.urandom`` is a system call per id: two per emit cost ~20 µs where system
calls are slow (sandboxed or virtualised hosts), more than the rest of the mapping. Our own
instance, not the ``random`` module's: an app that seeds ``random`` for its own reasons must not
make our ids repeat.
"""

from __future__ import annotations

import os
import random
import time

_bits = random.Random()  # seeded from os.urandom
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_bits.seed)


def uuid7(unix_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so the queue and ClickHouse keep emit order."""
    ms = unix_ms if unix_ms is not None else time.time_ns() // 1_000_000
    rand = _bits.getrandbits(80)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return _dashed(f"{value:032x}")


def uuid4() -> str:
    """A random UUIDv4."""
    value = _bits.getrandbits(128) & _V4_CLEAR | _V4_SET
    return _dashed(f"{value:032x}")


# Version 4 in bits 76-79, variant 0b10 in bits 62-63 (RFC 9562), set on 128 random bits.
_V4_SET = 0x4 << 76 | 0b10 << 62
_V4_CLEAR = ~(0xF << 76 | 0b11 << 62)


def _dashed(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"
