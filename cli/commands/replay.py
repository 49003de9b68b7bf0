"""``analytics replay``: drain the queue now, with a progress bar, through the same uploader the
app uses (same lease, same retries, same acknowledgements)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from analytics.delivery.lease import UploadLease
from analytics.delivery.retry import RetryPolicy
from analytics.delivery.uploader import Step, Uploader
from analytics.queue import OfflineQueue, QueueBounds
from analytics.queue.dead_letters import DeadLetterStore
from analytics.sinks.archive import ArchiveSink
from analytics.sinks.base import Sink
from analytics.sinks.posthog import PostHogSink
from analytics.state import StateFolder

from ..options import JsonOption, StateDirOption, load_config
from ..output import console, emit_json, fail

LEASE_OWNER = "analytics replay"


def replay(
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Deliver at most this many events.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be sent, send nothing.")] = False,
    host: Annotated[
        str | None, typer.Option("--host", help="PostHog host (overrides TELEMETRY_ENDPOINT).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Project API key (overrides TELEMETRY_TOKEN).", show_default=False),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for a running app's upload to finish first.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Give up after this many seconds.")
    ] = 120.0,
    json_output: JsonOption = False,
    state_dir: StateDirOption = None,
) -> None:
    """Deliver the queued events now (to PostHog, or to the local archive without a host)."""
    config = load_config(state_dir, endpoint=host, token=token)
    state = StateFolder(config.resolved_state_dir)
    if not state.queue_dir.is_dir():
        _report(json_output, queued=0, target=0, delivered=0, destination=_destination(config.endpoint))
        return
    queue = OfflineQueue(
        state, QueueBounds(config.max_queue_events, config.max_queue_bytes, config.max_event_age_seconds)
    )
    try:
        queue.maintain()  # segments journaled by apps that died are moved into the queue first
        queued = len(queue)
        target = min(queued, limit) if limit else queued
        destination = _destination(config.endpoint)
        if dry_run:
            _report(
                json_output, queued=queued, target=target, delivered=0, destination=destination, dry_run=True
            )
            return
        if config.endpoint and config.token is None:
            fail("a PostHog host is set but no token: pass --token or set TELEMETRY_TOKEN")
        lease = UploadLease(state.lease_path, owner=LEASE_OWNER)
        _wait_for_lease(lease, wait, timeout)
        sink: Sink = (
            PostHogSink(config.endpoint, config.token.get_secret_value())
            if config.endpoint and config.token
            else ArchiveSink(state.archive_dir)
        )
        uploader = Uploader(
            queue,
            sink,
            lease=lease,
            dead_letters=lambda: DeadLetterStore(state.dead_letter_dir),
            policy=RetryPolicy(base=0.5, cap=10.0),
            max_age_seconds=config.max_event_age_seconds,
        )
        delivered, problem = _drain(uploader, queue, target, timeout, show_progress=not json_output)
        uploader.close()
        _report(json_output, queued=queued, target=target, delivered=delivered, destination=destination)
        if problem:
            fail(problem)
    finally:
        queue.close()


def _drain(
    uploader: Uploader, queue: OfflineQueue, target: int, timeout: float, *, show_progress: bool
) -> tuple[int, str | None]:
    deadline = time.monotonic() + timeout
    delivered = 0
    columns = (
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]:>8} ev/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console(), disable=not show_progress) as progress:
        task = progress.add_task("replay", total=target, rate="-")
        started = time.monotonic()
        while delivered < target:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return delivered, f"timed out after {timeout:.0f} s with {target - delivered:,} events left"
            before = len(queue)
            result = uploader.run_cycle(min(10.0, remaining), max_events=target - delivered)
            delivered += max(0, before - len(queue))
            elapsed = max(time.monotonic() - started, 1e-6)
            progress.update(task, completed=min(delivered, target), rate=f"{delivered / elapsed:,.0f}")
            if result.step is Step.EMPTY:
                break
            if result.step is Step.PAUSED:
                detail = queue.meta.fact("paused") or {}
                return (
                    delivered,
                    f"delivery refused: {detail.get('reason') or detail.get('status')} (check the token)",
                )
            if result.step in (Step.BACKOFF, Step.BUSY):
                time.sleep(min(result.delay or 0.2, max(0.0, deadline - time.monotonic())))
    return delivered, None


def _wait_for_lease(lease: UploadLease, wait: bool, timeout: float) -> None:
    holder = lease.holder()
    if holder is None:
        return
    if not wait:
        fail(f"another process is delivering this queue ({holder}); use --wait to wait for it")
    deadline = time.monotonic() + timeout
    while lease.holder() is not None:
        if time.monotonic() > deadline:
            fail(f"the upload lease is still held ({holder})")
        time.sleep(0.1)


def _destination(endpoint: str | None) -> str:
    return endpoint or "local archive"


def _report(
    json_output: bool, *, queued: int, target: int, delivered: int, destination: str, dry_run: bool = False
) -> None:
    summary = {"queued": queued, "target": target, "delivered": delivered, "destination": destination}
    if json_output:
        emit_json({**summary, "dry_run": dry_run, "complete": delivered >= target and not dry_run})
    elif dry_run:
        typer.echo(f"dry run: would send {target:,} of {queued:,} queued events to {destination}")
    else:
        share = 100 if target == 0 else round(100 * delivered / target)
        typer.echo(f"delivered {delivered:,} of {target:,} events to {destination} ({share}%)")
