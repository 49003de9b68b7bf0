"""Fakes for your own tests: an in-memory sink and a strict PostHog capture server on loopback.

>>> from analytics import Analytics, TelemetryConfig, events
>>> from analytics.testing import InMemorySink
>>> sink = InMemorySink()
>>> telemetry = Analytics(TelemetryConfig(state_dir="/tmp/t"), sink=sink)   # doctest: +SKIP
>>> telemetry.emit(events.ToolCall(tool_name="grep", duration_ms=3, success=True))   # doctest: +SKIP
>>> telemetry.flush()   # doctest: +SKIP
True
>>> sink.events("$ai_span")[0]["properties"]["$ai_span_name"]   # doctest: +SKIP
'grep'
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from analytics.sinks.base import ExportResult, Outcome
from analytics.testing.capture_server import CaptureServer, Fault, RequestRecord


class InMemorySink:
    """A sink that keeps every delivered message in memory (thread-safe)."""

    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []

    def export(self, batch: Sequence[bytes], timeout: float) -> ExportResult:
        decoded = [json.loads(record) for record in batch]
        with self._lock:
            self.messages.extend(decoded)
        return ExportResult(Outcome.SUCCESS)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Delivered messages, optionally only those with PostHog event name ``name``."""
        with self._lock:
            return [m for m in self.messages if name is None or m["event"] == name]

    def shutdown(self) -> None:
        return None


__all__ = ["CaptureServer", "Fault", "InMemorySink", "RequestRecord"]
