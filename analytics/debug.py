"""Debug mode (``TELEMETRY_DEBUG=1``): every message is written to stderr as it is queued.

The line is the queued message itself, byte for byte (read back from the queue's stored form),
then a newline: exactly what will leave the machine (the uploader sends these bytes inside
PostHog's ``/batch/`` envelope). Debug mode still queues and sends: what a developer sees is what
PostHog gets, and turning debugging on never changes what arrives. (Next.js's
``NEXT_TELEMETRY_DEBUG`` prints instead of sending; to look without sending here, leave
``TELEMETRY_ENDPOINT`` unset: messages then go to the local archive.)
"""

from __future__ import annotations

import contextlib
import sys
import threading

from analytics.queue import OfflineQueue
from analytics.queue.shorthand import unpack

_write_lock = threading.Lock()


def echo(record: bytes) -> None:
    """Write ``record`` and a newline to stderr in one piece; a closed or broken stderr is ignored."""
    stream = getattr(sys.stderr, "buffer", None)
    with _write_lock, contextlib.suppress(OSError, ValueError, AttributeError):
        if stream is not None:
            stream.write(unpack(record) + b"\n")
            stream.flush()
        else:  # a stderr replaced by a text-only stream (an IDE, pytest's capture)
            sys.stderr.write(unpack(record).decode("utf-8", "replace") + "\n")
            sys.stderr.flush()


class EchoingQueue(OfflineQueue):
    """The offline queue, echoing each record to stderr once it is queued."""

    def put(self, record: bytes) -> None:
        super().put(record)
        echo(record)

    def put_many(self, records: list[bytes]) -> None:
        super().put_many(records)
        for record in records:
            echo(record)
