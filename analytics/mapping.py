"""Domain event -> PostHog message, as a pipeline of small pure steps.

    properties_of(event)  the event's own properties, in PostHog's vocabulary ($ai_* for LLM events)
    Cleaner.clean         scrub every free-text value, then cap it
    with_common           uuid, timestamp, distinct_id, $session_id, app_version, schema_version, $lib
    fit_to_budget         stay under PostHog's event size limit (cutting structure, never a type), or refuse

``$exception_list`` skips the generic cleaner (whose list cap would keep the outermost frames): it
has its own scrubbing step, which scrubs every string in it and keeps its shape.

Person profiles: an anonymous install (no ``TELEMETRY_USER_ID``) sends ``$process_person_profile:
false``, PostHog's guidance for anonymous events: no person profile is made, the event costs less,
and PostHog still gives it a person id derived from the distinct id, so unique-user counts (weekly
active installs among them) count each install once.

The result is the exact message that will leave the machine; it is what the queue stores.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

import orjson

from analytics import events as ev
from analytics._version import __version__
from analytics.app_events import AppEvent, Privacy, content_fields, privacy_rules
from analytics.ids import uuid4, uuid7
from analytics.privacy.caps import TRUNCATION_MARK, Cleaner, GeneratedId, encode, fit_to_budget
from analytics.privacy.scrubber import Scrubber
from analytics.queue.shorthand import STORED_PREFIX, pack, shorten

LIB_NAME: Final = "analytics-telemetry"
# Envelopes kept per context: the running session's, and a few crashed sessions' ends at start.
_ENVELOPES_KEPT: Final = 8
DEFAULT_ENVIRONMENT: Final = "production"
_LLM_EVENTS: Final = frozenset({"$ai_generation", "$ai_span", "$ai_trace"})
# A tuple, not a union: isinstance() with `A | B` builds the union on every call.
_TRACE_CHILDREN: Final = (ev.ChatTurn, ev.ToolCall)

# Properties whose values may be long by nature: they get the full-content cap, not the short one.
LONG_PROPERTIES: Final = frozenset(
    {
        "$ai_input",
        "$ai_output_choices",
        "$ai_input_state",
        "$ai_output_state",
        "diff",
        "before",
        "after",
        "$exception_list",
        "stack_trace",
        "context",
    }
)


@dataclass(frozen=True)
class MappingContext:
    """What the mapping needs to know beyond the event itself."""

    distinct_id: str
    session_id: str
    app_version: str
    environment: str
    full_content: bool
    geoip_disable: bool
    hash_path: Callable[[str], str]
    scrubber: Scrubber
    max_value_chars: int
    max_content_chars: int
    max_event_bytes: int
    # True when the distinct id is a person the app named (TELEMETRY_USER_ID): PostHog keeps a
    # person profile for it. An anonymous install's events are sent without one.
    person_profiles: bool = False
    # Keyed hash of an exact value (app events' ``Hashed`` fields); paths use ``hash_path``.
    hash_value: Callable[[str], str] | None = None
    # Each session's Envelope, made at its first event (a crashed session's end has its own). Not
    # an init field: a context replaced with another distinct id or level starts with none.
    envelopes: dict[str, Envelope] = field(default_factory=dict, init=False, compare=False, repr=False)

    def envelope(self, session_id: str) -> Envelope:
        found = self.envelopes.get(session_id)
        if found is None:
            if len(self.envelopes) >= _ENVELOPES_KEPT:
                self.envelopes.clear()
            found = self.envelopes[session_id] = Envelope(self, session_id)
        return found


class EventRefused(Exception):
    """The event cannot be sent as it is; ``reason`` is the drop counter it goes to."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


def to_posthog_message(
    event: ev.DomainEvent, context: MappingContext, *, at: float, session_id: str | None = None
) -> bytes:
    """The final, scrubbed, encoded PostHog message for ``event`` emitted at epoch second ``at``.

    Raises :class:`EventRefused` when it cannot be sent (full content off, or too large).
    """
    return _message(event, context, at, session_id, stored=False)


def to_stored_message(
    event: ev.DomainEvent, context: MappingContext, *, at: float, session_id: str | None = None
) -> bytes:
    """The same message in the queue's stored form (:mod:`analytics.queue.shorthand`): what
    ``emit()`` journals. Built from the session's :class:`Envelope`, never by scanning the message."""
    return _message(event, context, at, session_id, stored=True)


def _message(
    event: ev.DomainEvent, context: MappingContext, at: float, session_id: str | None, *, stored: bool
) -> bytes:
    session = session_id or context.session_id
    properties, truncated = _sent_properties(event, context, session)
    llm = event.posthog_event in _LLM_EVENTS
    uuid, timestamp = uuid7(int(at * 1000)), iso_timestamp(at)
    if not truncated and properties and _ENVELOPE_KEYS.isdisjoint(properties):
        data = context.envelope(session).wrap(event.posthog_event, uuid, timestamp, properties, llm, stored)
        if data is not None:
            return data
    # The general path: a truncated event (its note goes last), a property named like one of the
    # envelope's, or one over the size budget, which fit_to_budget cuts.
    if llm:
        properties.update(_LIB_PROPERTIES)
    message: dict[str, Any] = {
        "event": event.posthog_event,
        "distinct_id": context.distinct_id,
        "uuid": uuid,
        "timestamp": timestamp,
        "properties": with_common(properties, context, session),
    }
    if truncated:
        properties["truncated_properties"] = sorted(truncated)
    data = fit_to_budget(message, context.max_event_bytes, truncated)
    if data is None:
        raise EventRefused("oversize", f"{event.event_name()} is larger than {context.max_event_bytes} bytes")
    return pack(data) if stored else data


def _sent_properties(
    event: ev.DomainEvent, context: MappingContext, session: str
) -> tuple[dict[str, Any], list[str]]:
    """The event's own properties as they will be sent (scrubbed, capped), and the names of those
    that were cut."""
    properties = properties_of(event, context)
    exception_list = properties.pop("$exception_list", None)
    cleaner = Cleaner(context.scrubber, context.max_value_chars, context.max_content_chars)
    long_keys = (
        LONG_PROPERTIES if not isinstance(event, AppEvent) else LONG_PROPERTIES | content_fields(type(event))
    )
    properties = cleaner.clean(properties, long_keys)
    if exception_list is not None:
        # Loaded with the first error, not at `import analytics`.
        from analytics.errors.exception_list import scrub_exception_list

        entries, cut = scrub_exception_list(
            exception_list, context.scrubber.scrub_text, context.max_value_chars, TRUNCATION_MARK
        )
        properties["$exception_list"] = entries
        if cut:
            cleaner.truncated.append("$exception_list")
    if _heads_a_trace(event):
        # LLM analytics' Sessions tab: a trace belongs to the app session it ran in. PostHog takes a
        # trace's session from any of its events, so one per trace is enough.
        properties["$ai_session_id"] = session
    return properties, cleaner.truncated


class Envelope:
    """The bytes of a message around its event's own properties, for one context and session.

    Everything in a message but the event's properties, uuid and timestamp is the same for every
    event of a session: the envelope's keys, the event name, the distinct id, the common
    properties. They are encoded once, in the plain form and in the queue's stored form, so that
    an emit encodes only its properties and joins a few byte strings. The result is byte for byte
    what encoding the whole message gives (tests hold the two paths to each other).
    """

    def __init__(self, context: MappingContext, session_id: str) -> None:
        self._distinct_id = encode(context.distinct_id)
        # A part orjson refuses (a lone surrogate in the distinct id) sends the whole message to
        # the standard library, whose floats read differently (1e-05, not 0.00001): such a
        # context's messages are encoded whole, as the general path does.
        common_parts = with_common({}, context, session_id)
        self._exact = _orjson_takes((context.distinct_id, common_parts))
        self._max_bytes = context.max_event_bytes
        common = encode(common_parts)[1:]  # '"$session_id":...}' (no brace)
        self._tails: dict[bool, tuple[bytes, bytes]] = {}
        for llm in (False, True):
            lib = encode(_LIB_PROPERTIES)[1:-1] + b"," if llm else b""
            tail = b"," + lib + common + b"}"
            self._tails[llm] = (tail, shorten(tail))
        self._heads: dict[str, tuple[bytes, bytes]] = {}

    def _head(self, name: str) -> tuple[bytes, bytes] | None:
        if not _orjson_takes(name):  # an app event's name with a lone surrogate (see __init__)
            return None
        raw = b'{"event":' + encode(name) + b',"distinct_id":' + self._distinct_id + b',"uuid":"'
        self._heads[name] = head = (raw, STORED_PREFIX + shorten(raw))
        return head

    def wrap(
        self, name: str, uuid: str, timestamp: str, properties: dict[str, Any], llm: bool, stored: bool
    ) -> bytes | None:
        """The message, or None when it is over the size budget (the caller cuts it to fit) or
        must be encoded whole (see __init__)."""
        head = self._heads.get(name) or self._head(name)
        if head is None or not self._exact:
            return None
        head_raw, head_stored = head
        inner = encode(properties)[1:-1]
        tail_raw, tail_stored = self._tails[llm]
        size = len(head_raw) + len(inner) + len(tail_raw) + len(uuid) + len(timestamp) + _KEYS_SIZE
        if size > self._max_bytes:
            return None
        if stored:
            middle = (_TIMESTAMP_STORED, timestamp.encode(), _PROPERTIES_STORED, inner, tail_stored)
            return b"".join((head_stored, uuid.encode(), *middle))
        middle = (_TIMESTAMP_KEY, timestamp.encode(), _PROPERTIES_KEY, inner, tail_raw)
        return b"".join((head_raw, uuid.encode(), *middle))


_LIB_PROPERTIES: Final = {"$ai_lib": LIB_NAME, "$ai_lib_version": __version__}
# Properties the envelope writes: an event's own property of one of these names takes the general path.
_ENVELOPE_KEYS: Final = frozenset(
    {*_LIB_PROPERTIES, "$process_person_profile", "$session_id", "app_version", "environment"}
    | {"schema_version", "$lib", "$lib_version", "$geoip_disable", "truncated_properties"}
)
_TIMESTAMP_KEY: Final = b'","timestamp":"'
_PROPERTIES_KEY: Final = b'","properties":{'
_TIMESTAMP_STORED: Final = shorten(_TIMESTAMP_KEY)
_PROPERTIES_STORED: Final = shorten(_PROPERTIES_KEY)
_KEYS_SIZE: Final = len(_TIMESTAMP_KEY) + len(_PROPERTIES_KEY)


def _orjson_takes(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return False
    return True


def _heads_a_trace(event: ev.DomainEvent) -> bool:
    """The event that speaks for its trace: a ChatTrace, or a generation or tool call outside a turn."""
    if isinstance(event, ev.ChatTrace):
        return True
    return isinstance(event, _TRACE_CHILDREN) and event.turn_id is None


def iso_timestamp(at: float) -> str:
    """RFC 3339, UTC, milliseconds (the uuid7 beside it holds the same millisecond, ``int(at *
    1000)``): 2026-03-14T15:09:26.535Z. The part up to the second is formatted once per second."""
    global _second_formatted
    seconds, millis = divmod(int(at * 1000), 1000)
    formatted, prefix = _second_formatted
    if seconds != formatted:
        prefix = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        _second_formatted = (seconds, prefix)  # one tuple: a thread never reads half of it
    return f"{prefix}{millis:03d}Z"


# The last second iso_timestamp formatted, and its text.
_second_formatted: tuple[int | None, str] = (None, "")


def with_common(properties: dict[str, Any], context: MappingContext, session_id: str) -> dict[str, Any]:
    if not context.person_profiles:
        properties["$process_person_profile"] = False
    properties["$session_id"] = session_id
    properties["app_version"] = context.app_version
    # Every byte is stored once per queued event (SPEC 10: <= 600 bytes on disk): the default
    # environment is implied by its absence.
    if context.environment != DEFAULT_ENVIRONMENT:
        properties["environment"] = context.environment
    properties["schema_version"] = ev.SCHEMA_VERSION
    properties["$lib"] = LIB_NAME
    properties["$lib_version"] = __version__
    if context.geoip_disable:
        properties["$geoip_disable"] = True
    return properties


def properties_of(event: ev.DomainEvent, context: MappingContext) -> dict[str, Any]:
    """The event's own properties under their PostHog names (before scrubbing)."""
    mapper = _MAPPERS.get(type(event))
    if mapper is None:
        if isinstance(event, AppEvent):
            return app_event_properties(event, context)
        raise EventRefused("unknown_event", f"{event.event_name()} is not in the event catalog")
    return mapper(event, context)


def app_event_properties(event: AppEvent, context: MappingContext) -> dict[str, Any]:
    """An app event's fields by their privacy rule: hashed ones as their keyed hash (under the
    field's own name), content only at full content; text is scrubbed by the cleaner after this."""
    dumped = event.model_dump(mode="json", exclude_none=True)
    properties: dict[str, Any] = {}
    for name, rule in privacy_rules(type(event)).items():
        if name not in dumped:
            continue
        value = dumped[name]
        if rule is Privacy.HASHED or rule is Privacy.HASHED_PATH:
            hash_value = context.hash_value if rule is Privacy.HASHED else context.hash_path
            if hash_value is None:  # without a keyed hash the field cannot be sent at all
                continue
            properties[name] = hash_value(value if isinstance(value, str) else str(value))
        elif rule is Privacy.CONTENT:
            if context.full_content:
                properties[name] = value
        else:
            properties[name] = value
    return properties


# -- one small function per event ----------------------------------------------------------------


def _plain(event: ev.DomainEvent, _: MappingContext) -> dict[str, Any]:
    return event.model_dump(exclude_none=True)


def _session_started(event: ev.SessionStart, context: MappingContext) -> dict[str, Any]:
    properties = event.model_dump(exclude_none=True)
    if context.person_profiles:
        # An identified person's profile follows the app (analytics.identity documents these).
        properties["$set"], properties["$set_once"] = person_properties(event)
    return properties


def person_properties(start: ev.SessionStart) -> tuple[dict[str, Any], dict[str, Any]]:
    """``($set, $set_once)`` for a session's start: the current facts and the first-seen ones.
    Nothing personal: versions, OS family and release, CPU architecture."""
    current = {
        "app_version": start.app_version,
        "os": start.os,
        "os_version": start.os_version,
        "arch": start.arch,
    }
    first = {
        "first_app_version": start.app_version,
        "first_os": start.os,
        "first_os_version": start.os_version,
    }
    return current, first


def _workspace_selected(event: ev.WorkspaceSelected, context: MappingContext) -> dict[str, Any]:
    return {"workspace_hash": context.hash_path(event.workspace_path), "is_git_repo": event.is_git_repo}


def _chat_turn(event: ev.ChatTurn, context: MappingContext) -> dict[str, Any]:
    trace_id = event.turn_id or GeneratedId(uuid4())
    properties: dict[str, Any] = {"$ai_trace_id": trace_id}
    if event.turn_id is not None:
        properties["$ai_parent_id"] = trace_id  # a child of the turn's $ai_trace, in its timeline
    properties |= {
        "$ai_model": event.model,
        "$ai_latency": event.latency_ms / 1000.0,
        "prompt_length": event.prompt_length,
        "response_length": event.response_length,
    }
    if event.is_error:  # absent means "no error" to PostHog; the flag is sent only when set
        properties["$ai_is_error"] = True
        _put(properties, "$ai_error", event.error)
    # PostHog prices a generation from its input and output tokens; a bare total is kept as such.
    optional = (
        ("$ai_provider", event.provider),
        ("$ai_input_tokens", event.input_tokens),
        ("$ai_output_tokens", event.output_tokens),
        ("$ai_total_tokens", event.token_count),
        ("$ai_http_status", event.http_status),
        ("$ai_base_url", event.base_url),
        ("$ai_stop_reason", event.stop_reason),
        ("$ai_model_parameters", event.model_parameters),
        ("$ai_usage", event.usage),
    )
    for key, value in optional:  # one loop, not a call per property: this is on emit()'s path
        if value is not None:
            properties[key] = value
    if event.input_tokens is not None or event.output_tokens is not None:
        properties["$ai_tokens_source"] = "sdk"  # posthog-ai's value for counts given through its fields
    if event.tools_called:
        # PostHog's Tools tab reads a comma-separated list in call order.
        properties["$ai_tools_called"] = ",".join(name.replace(",", " ") for name in event.tools_called)
        properties["$ai_tool_call_count"] = len(event.tools_called)
    if isinstance(event, ev.ChatTurnFull) and context.full_content:
        properties["$ai_input"] = [{"role": "user", "content": event.prompt}]
        properties["$ai_output_choices"] = [{"role": "assistant", "content": event.response}]
    return properties


def _tool_call(event: ev.ToolCall, context: MappingContext) -> dict[str, Any]:
    trace_id = event.turn_id or GeneratedId(uuid4())
    properties: dict[str, Any] = {
        "$ai_trace_id": trace_id,
        "$ai_parent_id": trace_id,
        "$ai_span_id": event.span_id or GeneratedId(uuid4()),
        "$ai_span_name": event.tool_name,
        "$ai_span_type": "tool",
        "$ai_latency": event.duration_ms / 1000.0,
    }
    if not event.success:
        properties["$ai_is_error"] = True
    _put(properties, "$ai_error", event.error or event.error_type)
    _full_content_state(properties, event.input_state, event.output_state, context)
    return properties


def _chat_trace(event: ev.ChatTrace, context: MappingContext) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "$ai_trace_id": event.trace_id,
        # PostHog's docs name a trace with $ai_span_name; its newer SDKs send $ai_trace_name.
        "$ai_span_name": event.name,
        "$ai_trace_name": event.name,
        # Not $ai_latency: PostHog's traces list adds up the $ai_latency of a trace's event and of
        # its direct children, so the turn's time there would count the turn twice. The children
        # (the model's latency and each tool's) add up to the turn; its own wall time is this.
        "turn_latency": event.latency_ms / 1000.0,
    }
    if event.is_error:
        properties["$ai_is_error"] = True
        _put(properties, "$ai_error", event.error)
    _full_content_state(properties, event.input_state, event.output_state, context)
    return properties


def _full_content_state(
    properties: dict[str, Any], input_state: Any, output_state: Any, context: MappingContext
) -> None:
    # Inputs and outputs are content: sent only with full content on, else dropped before the disk.
    if context.full_content:
        _put(properties, "$ai_input_state", input_state)
        _put(properties, "$ai_output_state", output_state)


def _error(event: ev.Error, _: MappingContext) -> dict[str, Any]:
    exception_list = event.exception_list if event.exception_list is not None else _entries_from_text(event)
    properties: dict[str, Any] = {
        "$exception_list": exception_list,
        "$exception_level": event.level,
        "error_type": event.error_type,
        "context": event.context,
    }
    _put(properties, "$exception_source", event.source)
    _put(properties, "$sentry_event_id", event.sentry_event_id)
    _put(properties, "$sentry_url", event.sentry_url)
    return properties


def _entries_from_text(event: ev.Error) -> list[dict[str, Any]]:
    """One ``$exception_list`` entry from an Error the app built by hand (type, message, traceback text)."""
    exception: dict[str, Any] = {
        "type": event.error_type,
        "value": event.message,
        "mechanism": {"handled": event.handled, "synthetic": False, "type": "generic", "exception_id": 0},
    }
    frames = frames_from_traceback(event.stack_trace) if event.stack_trace else []
    if frames:
        exception["stacktrace"] = {"type": "raw", "frames": frames}
    return [exception]


def _full_content_only(
    mapper: Callable[[Any, MappingContext], dict[str, Any]],
) -> Callable[[Any, MappingContext], dict[str, Any]]:
    def guarded(event: ev.DomainEvent, context: MappingContext) -> dict[str, Any]:
        if not context.full_content:
            # Dropped here, before the disk: full content off means the text never lands anywhere.
            raise EventRefused(
                "full_content_disabled", f"{event.event_name()} needs TELEMETRY_FULL_CONTENT=1"
            )
        return mapper(event, context)

    return guarded


def _proposal_diff(event: ev.ProposalDiff, _: MappingContext) -> dict[str, Any]:
    return {"proposal_id": event.proposal_id, "diff": event.diff}


def _file_snapshot(event: ev.FileSnapshot, context: MappingContext) -> dict[str, Any]:
    properties: dict[str, Any] = {"file_hash": context.hash_path(event.file_path)}
    _put(properties, "before", event.before)
    _put(properties, "after", event.after)
    _put(properties, "proposal_id", event.proposal_id)
    return properties


def _put(properties: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        properties[key] = value


_MAPPERS: Final[dict[type[ev.DomainEvent], Callable[[Any, MappingContext], dict[str, Any]]]] = {
    ev.SessionStart: _session_started,
    ev.SessionEnd: _plain,
    ev.WorkspaceSelected: _workspace_selected,
    ev.ChatTurn: _chat_turn,
    ev.ToolCall: _tool_call,
    ev.ProposalCreated: _plain,
    ev.ProposalDecision: _plain,
    ev.Error: _error,
    ev.ChatTurnFull: _chat_turn,
    ev.ProposalDiff: _full_content_only(_proposal_diff),
    ev.FileSnapshot: _full_content_only(_file_snapshot),
    ev.ChatTrace: _chat_trace,
}

_FRAME_RE: Final = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
_PACKAGES_DIR: Final = re.compile(r"[\\/](?:dist|site)-packages[\\/]")


def frames_from_traceback(text: str) -> list[dict[str, Any]]:
    """PostHog ``$exception_list`` frames from a formatted Python traceback (outermost first).

    A file under ``site-packages`` is named from its package (``requests/models.py``) and is not
    the app's own (``in_app: false``); for any other file PostHog decides, as for posthog-python's.
    """
    frames = []
    for line in text.splitlines():
        match = _FRAME_RE.match(line)
        if match:
            path = match["path"]
            frame: dict[str, Any] = {
                "platform": "python",
                "filename": _frame_filename(path),
                "abs_path": path,
                "function": match["func"].strip(),
                "lineno": int(match["line"]),
            }
            if _PACKAGES_DIR.search(path):
                frame["in_app"] = False
            frames.append(frame)
    return frames


def _frame_filename(path: str) -> str:
    found = list(_PACKAGES_DIR.finditer(path))
    if found:
        return path[found[-1].end() :]
    return os.path.basename(path) if os.path.isabs(path) or "\\" in path else path
