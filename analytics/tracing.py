"""Chat turns and tool calls as context managers, linked the way PostHog's LLM analytics expects.

    with telemetry.chat_turn(model="gpt-4o", provider="openai") as turn:
        with turn.tool_call("read_file"):          # or telemetry.tool_call(...): same turn
            ...
        turn.set(prompt_length=120, response_length=900, input_tokens=1000, output_tokens=400)

The turn is the trace (``$ai_trace_id`` = turn id); each tool call is a span whose parent is the
turn. Durations are measured; an exception marks the span or turn as an error and is re-raised.
Both work with ``with`` and ``async with``; the current turn follows the context (threads and
asyncio tasks each see their own).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from analytics import events as ev

# The guarded ``Analytics.emit`` in its name-and-payload form: validation happens there, so a bad
# field counts as an invalid event (or raises in strict mode) instead of raising in the app's block.
Emit = Callable[[str, dict[str, Any]], None]

_current_turn: ContextVar[ChatTurnRecorder | None] = ContextVar("analytics_current_turn", default=None)


def current_turn_id() -> str | None:
    turn = _current_turn.get()
    return turn.turn_id if turn is not None else None


class ToolCallSpan:
    """Times one tool call and emits a ToolCall when it ends."""

    def __init__(self, emit: Emit, tool_name: str, turn_id: str | None) -> None:
        self._emit = emit
        self.tool_name = tool_name
        self.turn_id = turn_id
        self.span_id = str(uuid.uuid4())
        self._started = 0.0

    def __enter__(self) -> ToolCallSpan:
        self._started = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        payload: dict[str, Any] = {
            "tool_name": self.tool_name,
            "duration_ms": (time.perf_counter() - self._started) * 1000,
            "success": exc_type is None,
            "span_id": self.span_id,
        }
        if exc_type is not None:
            payload["error_type"] = exc_type.__name__
        if self.turn_id is not None:
            payload["turn_id"] = self.turn_id
        self._emit(ev.ToolCall.event_name(), payload)

    async def __aenter__(self) -> ToolCallSpan:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class ChatTurnRecorder:
    """Measures one chat turn and emits it when it ends: ChatTurn, or ChatTurnFull when the text
    was given with ``set(prompt=..., response=...)`` (kept only with full content enabled)."""

    def __init__(
        self, emit: Emit, *, model: str, provider: str | None = None, turn_id: str | None = None
    ) -> None:
        self._emit = emit
        self.turn_id = turn_id or str(uuid.uuid4())
        self._fields: dict[str, Any] = {
            "model": model,
            "provider": provider,
            "prompt_length": 0,
            "response_length": 0,
        }
        self._started = 0.0
        self._token: Token[ChatTurnRecorder | None] | None = None

    def set(self, **fields: Any) -> None:
        """Record what is known about the turn: lengths, tokens, latency_ms (else measured), text."""
        self._fields.update(fields)

    def tool_call(self, tool_name: str) -> ToolCallSpan:
        return ToolCallSpan(self._emit, tool_name, self.turn_id)

    def __enter__(self) -> ChatTurnRecorder:
        self._started = time.perf_counter()
        self._token = _current_turn.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _current_turn.reset(self._token)
            self._token = None
        fields = dict(self._fields)
        fields.setdefault("latency_ms", (time.perf_counter() - self._started) * 1000)
        fields["turn_id"] = self.turn_id
        fields["is_error"] = fields.get("is_error", False) or exc_type is not None
        fields = {key: value for key, value in fields.items() if value is not None}
        model = ev.ChatTurnFull if "prompt" in fields or "response" in fields else ev.ChatTurn
        if model is ev.ChatTurnFull:
            fields.setdefault("prompt", "")
            fields.setdefault("response", "")
        self._emit(model.event_name(), fields)

    async def __aenter__(self) -> ChatTurnRecorder:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)
