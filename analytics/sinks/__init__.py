"""Sinks own the I/O of delivery: PostHog's capture API, or the embedded local archive."""

from analytics.sinks.base import ExportResult, Outcome, Sink

__all__ = ["ExportResult", "Outcome", "Sink"]
