"""Consent levels: which events may leave the machine, as VS Code's telemetry levels.

=========  ==================================================================================
``off``    nothing: no file written, no connection, no thread (``set_enabled(False)``)
``crash``  crash SessionEnds and uncaught exceptions
``error``  those, plus every captured exception (``capture_exception``)
``usage``  everything except full content (the default)
``full``   everything, full content included (prompts, responses, diffs, ``Content`` fields)
=========  ==================================================================================

Where the level comes from, first match wins:

1. ``TELEMETRY_ENABLED=0`` or ``DO_NOT_TRACK``: ``off``, whatever else says;
2. the level the app set at run time (``set_level``), kept in the state folder across restarts;
3. ``TELEMETRY_LEVEL``;
4. ``TELEMETRY_FULL_CONTENT=1``: ``full``; otherwise ``usage``.

The pure part (ranks, classifying an event or a queued message) touches nothing; the few helpers
at the end read and write the one small file that remembers the app's choice.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from analytics import events as ev

LEVELS: Final = ("off", "crash", "error", "usage", "full")
RANK: Final[dict[str, int]] = {name: rank for rank, name in enumerate(LEVELS)}
OFF, CRASH, ERROR, USAGE, FULL = range(5)
DEFAULT_LEVEL: Final = "usage"
LEVEL_FILE: Final = "consent-level"

# Drop reasons: emitted above the level in force; queued, then purged because the level went down.
FILTERED_REASON: Final = "level_filtered"
LOWERED_REASON: Final = "level_lowered"

# Properties that only full content puts into a message (mapping.py's ChatTurnFull, tool states).
FULL_CONTENT_PROPERTIES: Final = frozenset(
    {"$ai_input", "$ai_output_choices", "$ai_input_state", "$ai_output_state"}
)
FULL_CONTENT_EVENTS: Final = frozenset({"proposal_diff", "file_snapshot"})


def parse_level(value: object) -> str:
    """``value`` as a level name; a clear ``ValueError`` naming the accepted values otherwise."""
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in RANK:
        raise ValueError(f"telemetry level {value!r} is not one of {', '.join(LEVELS)}")
    assert isinstance(text, str)
    return text


def event_rank(event: ev.DomainEvent) -> int:
    """The lowest level at which ``event`` is sent. Full content inside an event is not judged
    here: the mapping drops it below ``full`` (the event itself goes at ``usage``)."""
    kind = type(event)
    rank = _RANK_OF_TYPE.get(kind)
    if rank is not None:
        return rank
    if isinstance(event, ev.SessionEnd):
        return CRASH if event.end_reason == "crash" else USAGE
    if isinstance(event, ev.Error):
        return ERROR if event.handled else CRASH
    # An attribute a catalog event lacks costs pydantic's metaclass an exception: asked once a type.
    level = getattr(kind, "consent_level", None)
    rank = RANK[level] if isinstance(level, str) and level in RANK else USAGE
    _RANK_OF_TYPE[kind] = rank
    return rank


# The rank of each event type whose rank does not depend on the event (all but two), once known.
_RANK_OF_TYPE: dict[type[ev.DomainEvent], int] = {}


def message_rank(
    message: Mapping[str, Any],
    content_fields: Mapping[str, frozenset[str]],
    app_ranks: Mapping[str, int],
) -> int:
    """The lowest level at which a queued PostHog ``message`` may be sent.

    ``content_fields`` and ``app_ranks``: for each app event's PostHog name, its ``Content``
    fields and the rank of its ``consent_level``.
    """
    name = message.get("event")
    properties = message.get("properties")
    if not isinstance(properties, Mapping):
        properties = {}
    if name == "session_ended":
        return CRASH if properties.get("end_reason") == "crash" else USAGE
    if name == "$exception":
        return CRASH if _unhandled(properties) else ERROR
    if name in FULL_CONTENT_EVENTS or not FULL_CONTENT_PROPERTIES.isdisjoint(properties):
        return FULL
    fields = content_fields.get(str(name))
    if fields and not fields.isdisjoint(properties):
        return FULL
    return app_ranks.get(str(name), USAGE)


def _unhandled(properties: Mapping[str, Any]) -> bool:
    entries = properties.get("$exception_list")
    if isinstance(entries, list):
        for entry in entries:
            mechanism = entry.get("mechanism") if isinstance(entry, Mapping) else None
            if isinstance(mechanism, Mapping) and mechanism.get("handled") is False:
                return True
    return properties.get("$exception_level") == "fatal"


# -- the app's choice, kept in the state folder ------------------------------------------------


def read_saved_level(root: Path) -> str | None:
    """The level the app set at run time, or None (never set, or unreadable: the config decides)."""
    try:
        text = (root / LEVEL_FILE).read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    return text if text in RANK and text != "off" else None


def save_level(root: Path, level: str) -> None:
    from analytics.state import replace_private

    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    replace_private(root / LEVEL_FILE, level.encode("ascii"))


def forget_level(root: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(root / LEVEL_FILE)


def effective_level(config_level: str, saved: str | None) -> str:
    """The level in force: ``off`` from the config always wins; then the app's saved choice."""
    if config_level == "off":
        return "off"
    return saved or config_level


# -- lowering the level: what is queued above it goes ----------------------------------------

if TYPE_CHECKING:
    from analytics.app_events import EventCatalog
    from analytics.queue import OfflineQueue

# Records read at a time while looking for what to purge: bounds memory on a large backlog.
PURGE_CHUNK: Final = 5_000


# How long a purge may spend moving the journal into the queue before it reads the queue.
PURGE_MOVE_SECONDS: Final = 10.0


def purge_above(queue: OfflineQueue, rank: int, catalog: EventCatalog) -> int:
    """Delete the queued messages that need a level above ``rank``; returns how many went.

    Runs when the app lowers the level (rare, and the user is waiting for it to take effect), so
    it reads the whole queue. A message it cannot decode is left for delivery to judge.
    """
    from analytics.app_events import content_fields

    apps = catalog.app_events()
    fields = {model.posthog_event: content_fields(model) for model in apps}
    ranks = {model.posthog_event: RANK[model.consent_level] for model in apps}
    removed = 0
    kept = 0  # records already judged and kept: they stay at the head of the queue
    # Everything this process journaled goes into the queue first, whatever a move's usual
    # budget: an event left in the journal would escape the purge.
    queue.move_journal(budget=PURGE_MOVE_SECONDS)
    while True:
        records = queue.peek(kept + PURGE_CHUNK)
        chunk = records[kept:]
        doomed = [key for key, record in chunk if _above(record, rank, fields, ranks)]
        if doomed:
            removed += queue.ack(doomed)
        if len(records) < kept + PURGE_CHUNK:
            return removed
        kept += len(chunk) - len(doomed)


def _above(record: bytes, rank: int, fields: Mapping[str, frozenset[str]], ranks: Mapping[str, int]) -> bool:
    try:
        message = json.loads(record)
    except ValueError:
        return False
    return isinstance(message, Mapping) and message_rank(message, fields, ranks) > rank
