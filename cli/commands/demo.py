"""``analytics demo``: a realistic app session through the real adapter, delivered for real."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from analytics import Analytics, events
from analytics.sinks.archive import read_archive
from analytics.state import StateFolder
from analytics.status import build_status

from ..options import JsonOption, StateDirOption, load_config
from ..output import emit_fields, emit_json, emit_table, fail


def demo(json_output: JsonOption = False, state_dir: StateDirOption = None) -> None:
    """Simulate a session (chat turns, tool calls, proposals, an error), deliver it, show the result."""
    config = load_config(state_dir)
    if not config.is_enabled:
        fail(f"telemetry is disabled ({config.disabled_reason}); unset it to run the demo")
    before = build_status(config, disabled_reason=None)
    clock = SimulatedClock()
    telemetry = Analytics(config, clock=clock)
    emitted = simulate_session(telemetry, clock, seed=7) + 2  # plus SessionStart and SessionEnd
    # The story ends now: the session lasted the quarter of an hour the clock simulated (its
    # SessionEnd says so), and the delivery that follows is stamped with the real time.
    clock.catch_up()
    session_id = telemetry.session_id
    telemetry.shutdown(timeout=10.0)  # SessionEnd, then delivery within 10 s
    report = build_status(config, disabled_reason=None)
    destination = report.posthog_host or "local archive"
    summary: dict[str, Any] = {
        "emitted": emitted,
        # Everything that left the queue: this session, plus any backlog an earlier run left.
        "delivered": before.queue_depth + emitted - report.queue_depth,
        "queued_now": report.queue_depth,
        "destination": destination,
        "state_dir": report.state_dir,
        "archived_events": report.archived_events - before.archived_events,
        "sample": _session_sample(StateFolder(config.resolved_state_dir), session_id, 3),
    }
    if json_output:
        emit_json(summary)
        return
    emit_fields(
        "analytics demo",
        [
            ("events emitted", emitted),
            ("delivered to", f"{destination} ({summary['delivered']} events)"),
            ("still queued", report.queue_depth),
            ("state folder", report.state_dir),
        ],
    )
    if summary["sample"]:
        rows = [(json.dumps(message),) for message in summary["sample"]]
        emit_table("Last archived messages (exactly what was sent)", ["message"], rows)


class SimulatedClock:
    """Demo time: starts a quarter of an hour ago and moves only when the story says so, so the
    session looks like one a person had (review times, latencies) and ends by now."""

    def __init__(self) -> None:
        self.now = time.time() - 15 * 60

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def catch_up(self) -> None:
        """Jump to the real time (never back)."""
        self.now = max(self.now, time.time())


def simulate_session(telemetry: Analytics, clock: SimulatedClock, *, seed: int) -> int:
    """Drive a plausible session through the real adapter; returns how many events the app emitted
    (SessionStart and SessionEnd excluded)."""
    rng = random.Random(seed)
    telemetry.start()
    count = 0
    telemetry.emit(events.WorkspaceSelected(workspace_path="~/projects/shop", is_git_repo=True))
    count += 1
    for turn_number in range(4):
        clock.advance(rng.uniform(20, 90))  # the user types
        model = rng.choice(["gpt-4o", "claude-sonnet-4"])
        with telemetry.chat_turn(
            model=model, provider="openai" if model.startswith("gpt") else "anthropic"
        ) as turn:
            for tool in rng.sample(["read_file", "list_dir", "grep", "run_tests"], k=2):
                ok = rng.random() > 0.2
                telemetry.emit(
                    events.ToolCall(
                        tool_name=tool,
                        duration_ms=rng.uniform(3, 400),
                        success=ok,
                        error_type=None if ok else "TimeoutError",
                        turn_id=turn.turn_id,
                    )
                )
                count += 1
            latency = rng.uniform(400, 4000)
            clock.advance(latency / 1000)
            turn.set(
                prompt_length=rng.randint(20, 400),
                response_length=rng.randint(200, 3000),
                latency_ms=latency,
                input_tokens=rng.randint(100, 2000),
                output_tokens=rng.randint(50, 800),
            )
        count += 2  # the turn's $ai_generation and its $ai_trace
        proposal = f"p-{turn_number}"
        telemetry.emit(
            events.ProposalCreated(
                proposal_id=proposal, file_count=2, total_lines_changed=40, operation="edit_file"
            )
        )
        clock.advance(rng.uniform(2, 90))  # the user reads the diff; the adapter measures it
        telemetry.emit(
            events.ProposalDecision(
                proposal_id=proposal,
                decision="approved" if rng.random() > 0.3 else "rejected",
                files_approved=2,
            )
        )
        count += 2
    try:
        raise PermissionError("cannot write ~/projects/shop/.env (token=demo-not-a-secret)")
    except PermissionError as exc:
        telemetry.capture_exception(exc, context={"route": "/proposals/apply"})
    return count + 1


def _session_sample(state: StateFolder, session_id: str, count: int) -> list[Any]:
    mine = [
        m for m in read_archive(state.archive_dir) if m.get("properties", {}).get("$session_id") == session_id
    ]
    return mine[-count:]
