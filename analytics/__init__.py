"""Offline-safe product telemetry for local-first Python apps.

>>> from analytics import Analytics, TelemetryConfig, events
>>> telemetry = Analytics(TelemetryConfig.from_env())          # doctest: +SKIP
>>> telemetry.start()                                          # doctest: +SKIP
>>> telemetry.emit(events.ToolCall(tool_name="read_file", duration_ms=12, success=True))  # doctest: +SKIP
"""

from analytics import events
from analytics._version import __version__
from analytics.app_events import AppEvent, Content, EventCatalog, Hashed, HashedPath, Text
from analytics.client import Analytics
from analytics.config import ConfigError, TelemetryConfig

__all__ = [
    "Analytics",
    "AppEvent",
    "ConfigError",
    "Content",
    "EventCatalog",
    "Hashed",
    "HashedPath",
    "TelemetryConfig",
    "Text",
    "__version__",
    "events",
]
