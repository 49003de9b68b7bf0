"""``analytics queue peek | export | purge``: what is waiting on this machine, exactly as it will
leave it (already scrubbed)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Protocol

import typer

from analytics.queue import DiskQueue, journal
from analytics.queue.disk import STORE_ERRORS
from analytics.queue.meta import MetaStore
from analytics.state import StateFolder

from ..options import JsonOption, StateDirOption, YesOption, state_of
from ..output import emit_json, emit_table, fail

queue_app = typer.Typer(help="Inspect, export or purge the queued events.", no_args_is_help=True)


@contextmanager
def open_queue(state: StateFolder) -> Iterator[DiskQueue | None]:
    """The queue of ``state``, or None when it was never created (opening never creates it).

    Journal segments left by processes that died are moved into it first; those of running apps
    stay theirs to move (see :func:`live_journal`)."""
    if not state.queue_dir.is_dir():
        yield None
        return
    try:
        disk = DiskQueue(state.queue_dir, put_timeout=5.0)  # a command line may wait
    except Exception as exc:
        fail(f"cannot open the queue in {state.queue_dir}: {exc}")
    try:
        _moved, torn = journal.adopt_orphans(state.journal_dir, disk.put_batch)
        if torn:
            meta = MetaStore(state.meta_dir, open_budget=5.0)
            meta.count_drop("journal_torn", torn)
            meta.close()
    except STORE_ERRORS as exc:
        disk.close()
        fail(f"cannot move the journal into the queue in {state.queue_dir}: {exc}")
    try:
        yield disk
    finally:
        disk.close()


def live_journal(state: StateFolder) -> list[bytes]:
    """Events a running app journaled and has not moved into the queue yet (it will, within a
    second): shown and exported after the queue's, so nothing waiting is missing from the view."""
    return journal.read_all(state.journal_dir)


@queue_app.command()
def peek(
    count: Annotated[int, typer.Option("-n", "--count", min=1, help="How many of the oldest events.")] = 10,
    json_output: JsonOption = False,
    state_dir: StateDirOption = None,
) -> None:
    """Show the oldest queued events exactly as they will be sent."""
    with open_queue(state_of(state_dir)) as disk:
        records = [record for _key, record in disk.peek(count)] if disk else []
        records += live_journal(state_of(state_dir))[: count - len(records)]
        messages = [json.loads(record) for record in records]
    if json_output:
        emit_json(messages)
        return
    emit_table(
        f"Oldest {len(messages)} queued events",
        ["timestamp", "event", "message"],
        [
            (m.get("timestamp"), m.get("event"), json.dumps(m.get("properties"), ensure_ascii=False))
            for m in messages
        ],
    )


@queue_app.command()
def export(
    file: Annotated[Path, typer.Argument(help="Where to write JSONL; a name ending in .gz is gzipped.")],
    json_output: JsonOption = False,
    state_dir: StateDirOption = None,
) -> None:
    """Write every queued event to FILE, one JSON message per line (the queue is left as it is)."""
    written = 0
    with open_queue(state_of(state_dir)) as disk, _open_for_writing(file) as out:
        if disk is not None:
            for _key, record in disk.iter_all():
                out.write(record + b"\n")
                written += 1
            for record in live_journal(state_of(state_dir)):
                out.write(record + b"\n")
                written += 1
    if json_output:
        emit_json({"file": str(file), "events": written})
    else:
        typer.echo(f"exported {written:,} events to {file}")


class _Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


@contextmanager
def _open_for_writing(file: Path) -> Iterator[_Writer]:
    try:
        if file.name.endswith(".gz"):
            with gzip.open(file, "wb") as zipped:
                yield zipped
        else:
            with file.open("wb") as plain:
                yield plain
    except OSError as exc:
        fail(f"cannot write {file}: {exc.strerror or exc}")


@queue_app.command()
def purge(yes: YesOption = False, json_output: JsonOption = False, state_dir: StateDirOption = None) -> None:
    """Delete every queued event (counted as `purged` in status)."""
    state = state_of(state_dir)
    with open_queue(state) as disk:
        keys = disk.keys() if disk else []
        if keys and not yes and not typer.confirm(f"Delete {len(keys):,} queued events from {state.root}?"):
            fail("nothing deleted")
        removed = disk.ack(keys) if disk and keys else 0
    if removed:
        meta = MetaStore(state.meta_dir, open_budget=5.0)
        meta.count_drop("purged", removed)
        meta.close()
    if json_output:
        emit_json({"purged": removed})
    else:
        typer.echo(f"purged {removed:,} events")
