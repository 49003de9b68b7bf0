"""Chat turns, model calls and tool calls as context managers, linked the way PostHog's LLM
analytics expects.

    with telemetry.chat_turn(model="gpt-4o", provider="openai") as turn:
        with turn.tool_call("read_file"):          # or telemetry.tool_call(...): same turn
            ...
        with turn.generation():                    # the model call itself: its latency
            answer = llm(prompt)
        turn.set(prompt_length=120, response_length=900, input_tokens=1000, output_tokens=400)

One turn sends three kinds of event, all with the turn id as ``$ai_trace_id``:

- ``$ai_trace`` (ChatTrace): the turn as a whole, with its name, session and wall time
  (``turn_latency``: PostHog's traces list adds a trace's own ``$ai_latency`` to its children's);
- ``$ai_generation`` (ChatTurn): the model's part. Its ``$ai_latency`` is the time spent inside
  ``turn.generation()`` blocks, or ``latency_ms`` when given, or else the turn's time minus its
  tool calls, never the whole turn: PostHog adds up a trace's children, so counting the tools in
  the generation too would count them twice. It names the turn's tools (``$ai_tools_called``);
- ``$ai_span`` (ToolCall) per tool call, a child of the trace.

An exception marks the span, generation or turn as an error, with its message as ``$ai_error``
(scrubbed like all text), and is re-raised. Everything works with ``with`` and ``async with``;
the current turn follows the context (threads and asyncio tasks each see their own).
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

DEFAULT_TRACE_NAME = "chat_turn"

_current_turn: ContextVar[ChatTurnRecorder | None] = ContextVar("analytics_current_turn", default=None)


def current_turn_id() -> str | None:
    turn = _current_turn.get()
    return turn.turn_id if turn is not None else None


def describe_error(exc: BaseException) -> str:
    """``$ai_error``: the last line Python prints for ``exc`` (``TimeoutError: read timed out``)."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception:
        message = ""
    return f"{name}: {message}" if message else name


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status an API client's exception carries (OpenAI's and Anthropic's ``status_code``,
    google-genai's ``code``), as posthog-ai reads it."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 0 <= status <= 999:
        return status
    code = getattr(exc, "code", None)
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        return code
    return None


class ToolCallSpan:
    """Times one tool call and emits a ToolCall (``$ai_span``) when it ends.

    ``span.set(input_state=..., output_state=...)`` records what went in and came out, sent only
    with full content enabled.
    """

    def __init__(
        self, emit: Emit, tool_name: str, turn_id: str | None, *, turn: ChatTurnRecorder | None = None
    ) -> None:
        self._emit = emit
        self.tool_name = tool_name
        self.turn_id = turn_id
        self.span_id = str(uuid.uuid4())
        if turn is None:
            current = _current_turn.get()
            if current is not None and current.turn_id == turn_id:
                turn = current
        self._turn = turn
        self._fields: dict[str, Any] = {}
        self._started = 0.0

    def set(self, **fields: Any) -> None:
        """Record more about the call: ``input_state``, ``output_state`` (full content only), ``error``."""
        self._fields.update(fields)

    def __enter__(self) -> ToolCallSpan:
        self._started = time.perf_counter()
        if self._turn is not None:
            self._turn._tool_started(self.tool_name)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ended = time.perf_counter()
        if self._turn is not None:
            self._turn._tool_ended(self._started, ended)
        payload: dict[str, Any] = {
            **self._fields,
            "tool_name": self.tool_name,
            "duration_ms": (ended - self._started) * 1000,
            "success": exc_type is None,
            "span_id": self.span_id,
        }
        if exc_type is not None:
            payload["error_type"] = exc_type.__name__
            if exc is not None:
                payload.setdefault("error", describe_error(exc))
        if self.turn_id is not None:
            payload["turn_id"] = self.turn_id
        self._emit(ev.ToolCall.event_name(), payload)

    async def __aenter__(self) -> ToolCallSpan:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class ModelCall:
    """Times one call to the model inside a turn: ``with turn.generation(): answer = llm(prompt)``.

    The turn's ``$ai_latency`` is the sum of its model calls. An exception marks the turn as failed
    (message, and the HTTP status the client's exception carries) and is re-raised.
    """

    def __init__(self, turn: ChatTurnRecorder) -> None:
        self._turn = turn
        self._started = 0.0

    def __enter__(self) -> ModelCall:
        self._started = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._turn._model_call_ended(time.perf_counter() - self._started, exc)

    async def __aenter__(self) -> ModelCall:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class ChatTurnRecorder:
    """Measures one chat turn and emits it when it ends: ChatTurn (or ChatTurnFull when the text
    was given with ``set(prompt=..., response=...)``, kept only with full content enabled), then
    the turn's ChatTrace."""

    def __init__(
        self,
        emit: Emit,
        *,
        model: str,
        provider: str | None = None,
        turn_id: str | None = None,
        name: str | None = None,
    ) -> None:
        self._emit = emit
        self.turn_id = turn_id or str(uuid.uuid4())
        self.name = name or DEFAULT_TRACE_NAME
        self._fields: dict[str, Any] = {
            "model": model,
            "provider": provider,
            "prompt_length": 0,
            "response_length": 0,
        }
        self._started = 0.0
        self._token: Token[ChatTurnRecorder | None] | None = None
        self._tools: list[str] = []
        self._tool_spans: list[tuple[float, float]] = []
        self._model_seconds = 0.0
        self._model_calls = 0
        self._failure: BaseException | None = None

    def set(self, **fields: Any) -> None:
        """Record what is known about the turn: lengths, tokens (``input_tokens`` / ``output_tokens``:
        PostHog's cost needs them), ``stop_reason``, ``http_status``, ``base_url``,
        ``model_parameters``, ``latency_ms`` (else measured), the text (``prompt``, ``response``)."""
        self._fields.update(fields)

    def tool_call(self, tool_name: str) -> ToolCallSpan:
        return ToolCallSpan(self._emit, tool_name, self.turn_id, turn=self)

    def generation(self) -> ModelCall:
        """Time the model call: ``with turn.generation(): ...`` (also ``async with``)."""
        return ModelCall(self)

    # -- what the turn's spans and model calls report ------------------------------------------

    def _tool_started(self, tool_name: str) -> None:
        self._tools.append(tool_name)

    def _tool_ended(self, started: float, ended: float) -> None:
        self._tool_spans.append((started, ended))

    def _model_call_ended(self, seconds: float, exc: BaseException | None) -> None:
        self._model_seconds += seconds
        self._model_calls += 1
        if exc is not None:
            self._failure = exc

    # -- the turn itself ----------------------------------------------------------------------

    def __enter__(self) -> ChatTurnRecorder:
        self._started = time.perf_counter()
        self._token = _current_turn.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ended = time.perf_counter()
        if self._token is not None:
            _current_turn.reset(self._token)
            self._token = None
        failure = exc if exc is not None else self._failure
        fields = dict(self._fields)
        fields.setdefault("latency_ms", self._model_latency_ms(ended))
        if self._tools:
            fields.setdefault("tools_called", list(self._tools))
        if failure is not None:
            fields["is_error"] = True
            fields.setdefault("error", describe_error(failure))
            status = http_status_of(failure)
            if status is not None:
                fields.setdefault("http_status", status)
        fields["turn_id"] = self.turn_id
        fields["is_error"] = bool(fields.get("is_error", False))
        fields = {key: value for key, value in fields.items() if value is not None}
        model = ev.ChatTurnFull if "prompt" in fields or "response" in fields else ev.ChatTurn
        if model is ev.ChatTurnFull:
            fields.setdefault("prompt", "")
            fields.setdefault("response", "")
        self._emit(model.event_name(), fields)
        self._emit(ev.ChatTrace.event_name(), self._trace(fields, (ended - self._started) * 1000))

    def _model_latency_ms(self, ended: float) -> float:
        if self._model_calls:
            return self._model_seconds * 1000
        turn = ended - self._started
        return max(0.0, turn - _covered(self._tool_spans, self._started, ended)) * 1000

    def _trace(self, fields: dict[str, Any], latency_ms: float) -> dict[str, Any]:
        trace: dict[str, Any] = {"trace_id": self.turn_id, "name": self.name, "latency_ms": latency_ms}
        if fields.get("is_error"):
            trace["is_error"] = True
            if fields.get("error") is not None:
                trace["error"] = fields["error"]
        if isinstance(fields.get("prompt"), str):
            trace["input_state"] = [{"role": "user", "content": fields["prompt"]}]
        if isinstance(fields.get("response"), str):
            trace["output_state"] = [{"role": "assistant", "content": fields["response"]}]
        return trace

    async def __aenter__(self) -> ChatTurnRecorder:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _covered(spans: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] inside at least one span (concurrent tool calls count once)."""
    covered = 0.0
    reach = start
    for span_start, span_end in sorted(spans):
        low, high = max(span_start, reach), min(span_end, end)
        if high > low:
            covered += high - low
            reach = high
    return covered
