"""One app session: its id, its start, and the counters its SessionEnd reports."""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import asdict, dataclass, field

from analytics import events as ev
from analytics.mapping import uuid7


@dataclass
class SessionCounters:
    proposals_created: int = 0
    proposals_approved: int = 0
    proposals_rejected: int = 0
    chat_turns: int = 0
    tool_calls: int = 0
    errors: int = 0

    def record(self, event: ev.DomainEvent) -> None:
        """Count ``event`` towards the session's totals (called for each event that was queued)."""
        if isinstance(event, ev.ChatTurn):
            self.chat_turns += 1
        elif isinstance(event, ev.ToolCall):
            self.tool_calls += 1
        elif isinstance(event, ev.ProposalCreated):
            self.proposals_created += 1
        elif isinstance(event, ev.ProposalDecision):
            if event.decision == "approved":
                self.proposals_approved += 1
            else:
                self.proposals_rejected += 1
        elif isinstance(event, ev.Error):
            self.errors += 1


@dataclass
class Session:
    """The running session. ``id`` is a UUIDv7, PostHog's expected ``$session_id`` format."""

    id: str = field(default_factory=uuid7)
    started_monotonic: float = field(default_factory=time.monotonic)
    counters: SessionCounters = field(default_factory=SessionCounters)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, event: ev.DomainEvent) -> None:
        with self.lock:
            self.counters.record(event)

    def duration_ms(self) -> int:
        return int((time.monotonic() - self.started_monotonic) * 1000)

    def end_event(self, end_reason: str) -> ev.SessionEnd:
        with self.lock:
            return ev.SessionEnd(
                duration_ms=self.duration_ms(),
                end_reason="crash" if end_reason == "crash" else "shutdown",
                **asdict(self.counters),
            )


def session_start_event(app_version: str, hashed_machine_id: str | None) -> ev.SessionStart:
    """SessionStart with the facts the adapter finds itself."""
    return ev.SessionStart(
        app_version=app_version,
        os=platform.system() or "unknown",
        os_version=platform.release() or "unknown",
        arch=platform.machine() or "unknown",
        python_version=platform.python_version(),
        machine_id=hashed_machine_id,
    )
