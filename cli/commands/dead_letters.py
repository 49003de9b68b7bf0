"""``analytics dead-letters list | requeue | purge``: the events PostHog refused, with why."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Annotated

import typer

from analytics.queue import DiskQueue
from analytics.queue.dead_letters import DeadLetterStore
from analytics.state import StateFolder

from ..options import JsonOption, StateDirOption, YesOption, state_of
from ..output import emit_json, emit_table, fail

dead_letters_app = typer.Typer(
    help="List, requeue or purge the events PostHog refused.", no_args_is_help=True
)

KeysArgument = Annotated[
    list[int] | None,
    typer.Argument(help="Keys from `list` (default: every dead letter).", show_default=False),
]


@contextmanager
def open_store(state: StateFolder) -> Iterator[DeadLetterStore | None]:
    if not state.dead_letter_dir.is_dir():
        yield None
        return
    store = DeadLetterStore(state.dead_letter_dir)
    try:
        yield store
    finally:
        store.close()


@dead_letters_app.command("list")
def list_(json_output: JsonOption = False, state_dir: StateDirOption = None) -> None:
    """Show each dead letter: when, why, and the event."""
    with open_store(state_of(state_dir)) as store:
        letters = list(store) if store else []
    rows = [
        {
            "key": d.key,
            "dead_at": datetime.fromtimestamp(d.dead_at, timezone.utc).isoformat(timespec="seconds"),
            "reason": d.reason,
            "status": d.status,
            "message": d.message(),
        }
        for d in letters
    ]
    if json_output:
        emit_json(rows)
        return
    emit_table(
        f"{len(rows)} dead letters",
        ["key", "dead at", "reason", "event", "uuid"],
        [(r["key"], r["dead_at"], r["reason"], _field(r, "event"), _field(r, "uuid")) for r in rows],
    )


def _field(row: dict[str, object], name: str) -> object:
    message = row["message"]
    return message.get(name) if isinstance(message, dict) else None


@dead_letters_app.command()
def requeue(
    keys: KeysArgument = None, json_output: JsonOption = False, state_dir: StateDirOption = None
) -> None:
    """Put dead letters back in the queue (after fixing what PostHog refused, or to try again)."""
    state = state_of(state_dir)
    with open_store(state) as store:
        letters = [d for d in (store or []) if not keys or d.key in keys]
        missing = set(keys or []) - {d.key for d in letters}
        if missing:
            fail(f"no dead letter with key {', '.join(map(str, sorted(missing)))}")
        if letters and store is not None:
            queue = DiskQueue(state.queue_dir, put_timeout=5.0)  # a command line may wait
            try:
                queue.put_many(d.record for d in letters)
            finally:
                queue.close()
            store.remove([d.key for d in letters])
    if json_output:
        emit_json({"requeued": len(letters)})
    else:
        typer.echo(f"requeued {len(letters):,} events")


@dead_letters_app.command()
def purge(
    keys: KeysArgument = None,
    yes: YesOption = False,
    json_output: JsonOption = False,
    state_dir: StateDirOption = None,
) -> None:
    """Delete dead letters for good."""
    with open_store(state_of(state_dir)) as store:
        letters = [d for d in (store or []) if not keys or d.key in keys]
        if letters and not yes and not typer.confirm(f"Delete {len(letters):,} dead letters?"):
            fail("nothing deleted")
        removed = store.remove([d.key for d in letters]) if store and letters else 0
    if json_output:
        emit_json({"purged": removed})
    else:
        typer.echo(f"purged {removed:,} dead letters")
