"""Who the events are from at run time: ``identify()`` and ``reset()``, and person properties.

The distinct id is, first match wins: the user the app identified (kept in the state folder, so a
restart keeps it until ``reset()``), ``TELEMETRY_USER_ID``, the random install id.

``identify(user_id)`` sends PostHog's ``$identify`` as posthog-js does: ``distinct_id`` is the user,
``$anon_distinct_id`` the install id, so PostHog merges the install's anonymous history into the
person. Person properties ride on ``$set`` / ``$set_once`` inside the event's properties (where
PostHog's ingestion reads them; posthog-python's ``set()`` puts ``$set`` on the message itself,
which ingestion reads the same way). Ours are never personal: the app's version, the OS family,
release and CPU architecture (``$set``: current ones; ``$set_once``: the first seen). They go on
``$identify`` and on every SessionStart of an identified person; an anonymous install sends no
person properties and no person profile (``$process_person_profile: false``).

``reset()`` forgets the user and makes a fresh install id: the next events are a new anonymous
visitor, as posthog-js's ``reset()``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from analytics.ids import uuid7
from analytics.mapping import MappingContext, iso_timestamp, with_common
from analytics.privacy.caps import Cleaner, fit_to_budget

IDENTIFIED_FILE: Final = "identified-user"
IDENTIFY_EVENT: Final = "$identify"


def identify_message(
    context: MappingContext,
    *,
    anon_distinct_id: str,
    properties: Mapping[str, Any] | None,
    person: tuple[dict[str, Any], dict[str, Any]],
    at: float,
) -> bytes | None:
    """The ``$identify`` message for ``context.distinct_id`` (already the identified user).

    The app's ``properties`` join ``$set``, scrubbed and capped like any other value; ours win on
    a name clash only where the app gave none. None when it cannot fit PostHog's size limit.
    """
    current, first = person
    cleaner = Cleaner(context.scrubber, context.max_value_chars, context.max_content_chars)
    app_properties = cleaner.clean(dict(properties or {}), frozenset())
    event_properties: dict[str, Any] = {
        "$anon_distinct_id": anon_distinct_id,
        "$set": {**current, **app_properties},
        "$set_once": first,
    }
    message: dict[str, Any] = {
        "event": IDENTIFY_EVENT,
        "distinct_id": context.distinct_id,
        "uuid": uuid7(int(at * 1000)),
        "timestamp": iso_timestamp(at),
        "properties": with_common(event_properties, context, context.session_id),
    }
    if cleaner.truncated:
        event_properties["truncated_properties"] = sorted(cleaner.truncated)
    return fit_to_budget(message, context.max_event_bytes, cleaner.truncated)


def read_identified(root: Path) -> str | None:
    """The user the app identified in an earlier run, or None."""
    from analytics.privacy.identity import illegal_distinct_id_reason

    try:
        text = (root / IDENTIFIED_FILE).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    return text if text and illegal_distinct_id_reason(text) is None else None


def save_identified(root: Path, user_id: str) -> None:
    from analytics.state import replace_private

    replace_private(root / IDENTIFIED_FILE, user_id.encode("utf-8"))


def forget_identified(root: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(root / IDENTIFIED_FILE)
