"""``analytics status``: is telemetry on, where is its state, what is waiting."""

from __future__ import annotations

import time
from typing import Any

from analytics.status import build_status

from ..options import JsonOption, StateDirOption, load_config
from ..output import emit_fields, emit_json, emit_table


def status(json_output: JsonOption = False, state_dir: StateDirOption = None) -> None:
    """Show whether telemetry is enabled (and why not), the state folder, and the queue."""
    config = load_config(state_dir)
    report = build_status(config, disabled_reason=config.disabled_reason, check_integrity=True)
    if json_output:
        emit_json(report.to_dict())
        return
    age = report.oldest_event_age_seconds
    emit_fields(
        "Telemetry status",
        [
            ("enabled", report.enabled if report.enabled else f"no ({report.disabled_reason})"),
            ("level", report.level),
            ("state folder", report.state_dir + ("" if report.state_dir_exists else " (not created yet)")),
            ("destination", report.posthog_host or "local archive (no TELEMETRY_ENDPOINT)"),
            ("queued events", report.queue_depth),
            ("queue size on disk", f"{report.queue_bytes:,} bytes"),
            ("oldest queued event", "-" if age is None else f"{age:,.0f} s ago"),
            ("storage", report.storage),
            ("last delivery", _when(report.last_delivery)),
            ("last error", _error(report.last_error)),
            ("paused", _paused(report.paused)),
            ("dead letters", report.dead_letters),
            ("archived events", report.archived_events if report.destination == "archive" else "-"),
            ("archive retention", _retention(report.archive_retention, report.archive_pruned)),
        ]
        + ([("problem", report.problem)] if report.problem else []),
    )
    emit_table("Dropped events", ["reason", "count"], sorted(report.drops.items()))


def _retention(bounds: dict[str, Any] | None, pruned: dict[str, Any] | None) -> str:
    limits = f"{bounds['days']:g} days, {bounds['max_bytes']:,} bytes" if bounds else "-"
    if not pruned:
        return f"{limits}; nothing deleted yet"
    deleted = f"{pruned['files']} day files ({pruned['events']:,} events, {pruned['bytes']:,} bytes)"
    return f"{limits}; deleted {deleted}"


def _when(delivery: dict[str, Any] | None) -> str:
    if not delivery:
        return "never"
    return f"{_ago(delivery['at'])} ({delivery['events']} events)"


def _error(error: dict[str, Any] | None) -> str:
    if not error:
        return "-"
    status = f"HTTP {error['status']}" if error.get("status") else "no answer"
    return f"{status}: {error.get('detail') or ''} ({_ago(error['at'])})"


def _paused(paused: dict[str, Any] | None) -> str:
    if not paused:
        return "no"
    return f"yes: {paused.get('reason') or paused.get('status')} (since {_ago(paused['at'])})"


def _ago(at: float) -> str:
    return f"{max(0.0, time.time() - at):,.0f} s ago"
