"""Event and session ids: UUIDv7 and UUIDv4 strings, built without ``uuid.UUID`` (emit()'s path).

A module of its own so that the session (made by ``Analytics()``) needs neither the mapping nor
the scrubber, which load at the first emit or ``start()`` instead of at ``import analytics``.
"""

from __future__ import annotations

import os
import time


def uuid7(unix_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so the queue and ClickHouse keep emit order."""
    ms = unix_ms if unix_ms is not None else time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return _dashed(f"{value:032x}")


def uuid4() -> str:
    """A random UUIDv4."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return _dashed(raw.hex())


def _dashed(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"
