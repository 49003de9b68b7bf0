"""The domain events the app emits: one pydantic model each, and the catalog they form.

The models are the single source of truth: validation, the PostHog event name, the CLI's
``analytics events`` table and its JSON Schema export all read them.

>>> from analytics import events
>>> events.ToolCall(tool_name="read_file", duration_ms=12, success=True).tool_name
'read_file'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, ValidationError

SCHEMA_VERSION = 1

Id = Annotated[str, Field(min_length=1, max_length=200)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(max_length=10_000_000)]
Url = Annotated[str, Field(max_length=2_000)]
Count = NonNegativeInt
HttpStatus = Annotated[int, Field(ge=0, le=999)]


class DomainEvent(BaseModel):
    """Base of every catalog event. Unknown fields are refused: nothing leaves unannounced."""

    # Validators are built on first use, not at `import analytics` (SPEC 10: import <= 150 ms).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    posthog_event: ClassVar[str]
    trigger: ClassVar[str]
    full_content: ClassVar[bool] = False
    automatic: ClassVar[bool] = False

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if not _undecodable_text(exc):
                raise
            # Text that came from the file system with bytes that are not UTF-8 (os.fsdecode's
            # lone surrogates): what a decoder would show, U+FFFD, rather than an error in the
            # app's own code or an event lost.
            super().__init__(**without_surrogates(data))

    # Only a direct construction (``ChatTurn(...)`` in the app's code) needs this __init__:
    # parse_event() catches the error itself. Marked as pydantic's own, pydantic's validation of
    # a payload does not call it (a Python call and a second validator entry per emit, ~1.5 µs);
    # the test suite holds both paths to replacing lone surrogates.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def event_name(cls) -> str:
        return cls.__name__


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(value: Any) -> Any:
    """``value`` with every lone surrogate in its text (keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_surrogates(item) for item in value]
    return value


def _undecodable_text(exc: ValidationError) -> bool:
    return any(err["type"] == "string_unicode" for err in exc.errors())


class SessionStart(DomainEvent):
    """The app started; the adapter fills every field itself."""

    posthog_event: ClassVar[str] = "session_started"
    trigger: ClassVar[str] = "start()"
    automatic: ClassVar[bool] = True

    app_version: str = Field(description="The host app's version.")
    os: str = Field(description="Operating system family, e.g. Linux, Darwin, Windows.")
    os_version: str = Field(description="Operating system release.")
    arch: str = Field(description="CPU architecture, e.g. x86_64, arm64.")
    python_version: str = Field(description="Python version of the backend.")
    machine_id: str | None = Field(None, description="Keyed hash of the machine id (never the raw id).")


class SessionEnd(DomainEvent):
    """The session ended: at shutdown, or found unfinished at the next start (a crash)."""

    posthog_event: ClassVar[str] = "session_ended"
    trigger: ClassVar[str] = "shutdown(), or found unfinished at next start"
    automatic: ClassVar[bool] = True

    duration_ms: Count = Field(description="Session length in milliseconds.")
    proposals_created: Count = 0
    proposals_approved: Count = 0
    proposals_rejected: Count = 0
    chat_turns: Count = 0
    tool_calls: Count = 0
    errors: Count = 0
    end_reason: Literal["shutdown", "crash"] = Field(description="shutdown, or crash when found unfinished.")


class WorkspaceSelected(DomainEvent):
    """The user picked a folder to work in."""

    posthog_event: ClassVar[str] = "workspace_selected"
    trigger: ClassVar[str] = "user picks a folder"

    workspace_path: Text = Field(description="The folder; never sent, only its keyed hash (workspace_hash).")
    is_git_repo: bool = Field(description="Whether the folder is a git repository.")


class ChatTurn(DomainEvent):
    """A user message was answered by the model."""

    posthog_event: ClassVar[str] = "$ai_generation"
    trigger: ClassVar[str] = "user message answered"

    prompt_length: Count = Field(description="Characters in the user's message.")
    response_length: Count = Field(description="Characters in the answer.")
    model: Name = Field(description="Model name, sent as $ai_model.")
    latency_ms: NonNegativeFloat = Field(description="Time to answer; sent as $ai_latency in seconds.")
    token_count: Count | None = Field(None, description="Total tokens, when only a total is known.")
    input_tokens: Count | None = Field(None, description="Prompt tokens ($ai_input_tokens).")
    output_tokens: Count | None = Field(None, description="Completion tokens ($ai_output_tokens).")
    provider: Name | None = Field(None, description="Model provider ($ai_provider), e.g. openai.")
    turn_id: Id | None = Field(None, description="Links the turn's tool calls ($ai_trace_id).")
    is_error: bool = Field(False, description="The model call failed ($ai_is_error).")
    error: Text | None = Field(None, description="Why it failed ($ai_error, scrubbed).")
    http_status: HttpStatus | None = Field(None, description="The model API's HTTP status ($ai_http_status).")
    base_url: Url | None = Field(None, description="The model API's base URL ($ai_base_url, scrubbed).")
    stop_reason: Name | None = Field(None, description="Why the model stopped ($ai_stop_reason), e.g. stop.")
    tools_called: list[Name] | None = Field(
        None, max_length=1_000, description="Tools used in the turn, in call order ($ai_tools_called)."
    )
    model_parameters: dict[str, Any] | None = Field(
        None, description="Request parameters such as temperature ($ai_model_parameters)."
    )
    usage: dict[str, Any] | None = Field(None, description="The provider's own usage report ($ai_usage).")


class ToolCall(DomainEvent):
    """The agent used a tool."""

    posthog_event: ClassVar[str] = "$ai_span"
    trigger: ClassVar[str] = "agent uses a tool"

    tool_name: Name = Field(description="Tool name ($ai_span_name).")
    duration_ms: NonNegativeFloat = Field(description="Time the tool took; sent as $ai_latency in seconds.")
    success: bool = Field(description="False when the tool raised ($ai_is_error).")
    error_type: Name | None = Field(None, description="Exception type when it failed ($ai_error).")
    turn_id: Id | None = Field(None, description="The chat turn it belongs to ($ai_trace_id, $ai_parent_id).")
    span_id: Id | None = Field(None, description="This call's span id ($ai_span_id); generated when omitted.")
    error: Text | None = Field(None, description="Why it failed ($ai_error, scrubbed); else error_type.")
    input_state: Any = Field(None, description="The tool's input ($ai_input_state), full content only.")
    output_state: Any = Field(None, description="The tool's result ($ai_output_state), full content only.")


class ProposalCreated(DomainEvent):
    """The agent proposed a change to the user's files."""

    posthog_event: ClassVar[str] = "proposal_created"
    trigger: ClassVar[str] = "agent proposes a change"

    proposal_id: Id
    file_count: Count
    total_lines_changed: Count
    operation: Name = Field(description="What the change does, e.g. write_file, edit_file, delete_file.")


class ProposalDecision(DomainEvent):
    """The user approved or rejected a proposal."""

    posthog_event: ClassVar[str] = "proposal_decided"
    trigger: ClassVar[str] = "user approves / rejects"

    proposal_id: Id
    decision: Literal["approved", "rejected"]
    files_approved: Count | None = None
    review_duration_ms: Count | None = Field(
        None, description="Time from creation to decision; computed from the stored creation time if omitted."
    )


class Error(DomainEvent):
    """An exception, captured or uncaught."""

    posthog_event: ClassVar[str] = "$exception"
    trigger: ClassVar[str] = "uncaught or captured exception"

    error_type: Name = Field(description="Exception class name.")
    message: Text = Field("", description="Exception message (scrubbed).")
    stack_trace: Text | None = Field(None, description="Formatted traceback (scrubbed, paths relative).")
    context: dict[str, Any] = Field(default_factory=dict, description="Extra facts (scrubbed).")
    handled: bool = Field(True, description="False for uncaught exceptions.")
    exception_list: list[dict[str, Any]] | None = Field(
        None,
        description="PostHog's $exception_list as posthog-python builds it (every string scrubbed when "
        "sent); built by capture_exception() and the hooks. Without it, frames come from stack_trace.",
    )
    level: Literal["fatal", "error", "warning", "info", "debug"] = Field(
        "error", description="$exception_level: fatal when the exception ended the process."
    )
    source: Name | None = Field(None, description="The hook that caught it ($exception_source).")
    sentry_event_id: Id | None = Field(None, description="The Sentry event of the same exception.")
    sentry_url: Text | None = Field(None, description="Link to that Sentry event, when derivable.")


class ChatTrace(DomainEvent):
    """A chat turn as a whole: PostHog's trace, parent of the turn's generation and tool spans.
    ``chat_turn()`` emits it when the turn ends."""

    posthog_event: ClassVar[str] = "$ai_trace"
    trigger: ClassVar[str] = "a chat turn ends (chat_turn())"

    trace_id: Id = Field(description="The turn id ($ai_trace_id).")
    name: Name = Field("chat_turn", description="The trace's name in PostHog's traces list ($ai_span_name).")
    latency_ms: NonNegativeFloat = Field(description="The whole turn, tools included (turn_latency, in s).")
    is_error: bool = Field(False, description="The turn failed ($ai_is_error).")
    error: Text | None = Field(None, description="Why it failed ($ai_error, scrubbed).")
    input_state: Any = Field(None, description="The turn's input ($ai_input_state), full content only.")
    output_state: Any = Field(None, description="The turn's output ($ai_output_state), full content only.")


class ChatTurnFull(ChatTurn):
    """A chat turn with its text. Emit it instead of ChatTurn when the text is at hand: the text is
    kept only with full content enabled; otherwise it is dropped and the turn is sent as ChatTurn."""

    trigger: ClassVar[str] = "user message answered (full content only)"
    full_content: ClassVar[bool] = True

    prompt: Text = Field(description="The user's message ($ai_input).")
    response: Text = Field(description="The model's answer ($ai_output_choices).")


class ProposalDiff(DomainEvent):
    """The unified diff of a proposal (full content only)."""

    posthog_event: ClassVar[str] = "proposal_diff"
    trigger: ClassVar[str] = "agent proposes a change (full content only)"
    full_content: ClassVar[bool] = True

    proposal_id: Id
    diff: Text = Field(description="Unified diff (scrubbed, capped).")


class FileSnapshot(DomainEvent):
    """A file's content before and after a change (full content only)."""

    posthog_event: ClassVar[str] = "file_snapshot"
    trigger: ClassVar[str] = "a proposal touches a file (full content only)"
    full_content: ClassVar[bool] = True

    file_path: Text = Field(description="Never sent, only its keyed hash (file_hash).")
    before: Text | None = Field(None, description="Content before the change.")
    after: Text | None = Field(None, description="Content after the change.")
    proposal_id: Id | None = None


CATALOG: dict[str, type[DomainEvent]] = {
    model.event_name(): model
    for model in (
        SessionStart,
        SessionEnd,
        WorkspaceSelected,
        ChatTurn,
        ToolCall,
        ProposalCreated,
        ProposalDecision,
        Error,
        ChatTurnFull,
        ProposalDiff,
        FileSnapshot,
        ChatTrace,
    )
}

__all__ = [
    "CATALOG",
    "SCHEMA_VERSION",
    "ChatTrace",
    "ChatTurn",
    "ChatTurnFull",
    "DomainEvent",
    "Error",
    "FileSnapshot",
    "InvalidEvent",
    "ProposalCreated",
    "ProposalDecision",
    "ProposalDiff",
    "SessionEnd",
    "SessionStart",
    "ToolCall",
    "WorkspaceSelected",
    "parse_event",
]


class InvalidEvent(ValueError):
    """An event that is not in the catalog or does not match its model.

    ``reason`` is the drop counter it is counted under (``unknown_event`` or ``invalid_event``).
    Raised by ``emit()`` only in strict mode; otherwise the event is counted and logged once.
    """

    def __init__(self, reason: str, event_name: str, detail: str) -> None:
        self.reason = reason
        self.event_name = event_name
        super().__init__(f"{event_name}: {detail}")


def parse_event(
    event: DomainEvent | str,
    payload: Mapping[str, Any] | None = None,
    catalog: Mapping[str, type[DomainEvent]] | None = None,
) -> DomainEvent:
    """A validated catalog event from either form the app may use.

    ``catalog`` is the app's (built-in events plus its registered app events); default: the
    built-in catalog. An event object of a model the catalog does not hold is ``unknown_event``.

    >>> parse_event("ToolCall", {"tool_name": "read_file", "duration_ms": 12, "success": True}).success
    True
    """
    models = CATALOG if catalog is None else catalog
    if isinstance(event, DomainEvent):
        if payload:
            raise InvalidEvent("invalid_event", event.event_name(), "payload given with an event object")
        if models.get(event.event_name()) is not type(event):
            raise InvalidEvent("unknown_event", event.event_name(), "not registered in the event catalog")
        return event
    if not isinstance(event, str):
        raise InvalidEvent("unknown_event", type(event).__name__, "expected an event name or a catalog event")
    model = models.get(event)
    if model is None:
        known = ", ".join(models)
        name = event if _FIELD_NAME.fullmatch(event) else "<name withheld>"
        raise InvalidEvent("unknown_event", name, f"not in the event catalog (known: {known})")
    if payload is not None and not isinstance(payload, Mapping):
        raise InvalidEvent("invalid_event", event, f"payload must be a mapping, not {type(payload).__name__}")
    try:
        try:
            return model.model_validate(dict(payload or {}))
        except ValidationError as exc:
            if not _undecodable_text(exc):
                raise
            return model.model_validate(without_surrogates(dict(payload or {})))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(_shown_key(part, model) for part in err['loc']) or 'payload'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidEvent("invalid_event", event, problems) from None


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def _shown_key(part: str | int, model: type[DomainEvent]) -> str:
    """A payload key as an error message may show it. The app's own keys can hold anything (a
    key can be a secret pasted in the wrong place): only the model's field names and short
    identifier-like words are shown, anything else is withheld."""
    text = str(part)
    if isinstance(part, int) or text in model.model_fields:
        return text
    if _FIELD_NAME.fullmatch(text) and not any(ch.isdigit() for ch in text):
        return text
    return "<key withheld>"
