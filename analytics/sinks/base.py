"""The exporter contract, shaped like OpenTelemetry's: ``export`` reports an outcome, and the
uploader (which owns the thread and the clock) decides what to do with it."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Outcome(enum.Enum):
    SUCCESS = "success"  # accepted: the records may leave the queue
    RETRY = "retry"  # not now (offline, 5xx, 429, an answer we cannot read): keep, back off
    SPLIT = "split"  # too large (413): send the batch in halves
    REJECTED = "rejected"  # the batch holds something the server refuses (400): bisect it
    UNAUTHORIZED = "unauthorized"  # the token was refused (401/403): keep everything, pause


@dataclass(frozen=True)
class ExportResult:
    outcome: Outcome
    status: int | None = None
    retry_after: float | None = None
    detail: str = ""


class Sink(Protocol):
    """Where batches of encoded messages go. Sinks do I/O; they never sleep or retry."""

    name: str

    def export(self, batch: Sequence[bytes], timeout: float) -> ExportResult: ...

    def shutdown(self) -> None: ...
