"""posthog-python itself is the reference: for the same exception object, our ``$exception`` must
carry what ``posthog.Client.capture_exception()`` sends (entries, types, mechanism links, and per
frame the function, module, in_app, file name and line), with every string scrubbed; for the same
model call, our ``$ai_generation`` carries the ``$ai_*`` names, types and units of posthog.ai's
OpenAI wrapper. Both libraries deliver to one strict capture server on loopback; the model is a
fake OpenAI server on loopback.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import openai
import posthog
import pytest
import requests
from posthog.ai.openai import OpenAI as WrappedOpenAI

from analytics import Analytics, TelemetryConfig, events
from analytics.metrics import METRICS
from analytics.privacy.caps import TRUNCATION_MARK, encode, fit_to_budget
from analytics.privacy.scrubber import Scrubber
from analytics.testing import CaptureServer
from tests.conftest import archived_messages, run_python
from tests.loopback import LoopbackServer, send_json

HOME = str(Path.home())
API_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123"  # planted in messages and in source lines below
EMAIL = "jane.doe@example.com"
POSTHOG_EVENT_LIMIT = 900 * 1024  # PostHog's capture drops larger events
SCRUB = Scrubber.for_this_machine().scrub_text


# -- the libraries side by side -------------------------------------------------------------------


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
def reference(capture: CaptureServer) -> Iterator[posthog.Client]:
    client = posthog.Client("phc_reference", host=capture.url, sync_mode=True)
    yield client
    client.shutdown()


def ours(capture: CaptureServer, state_dir: Path, **config: Any) -> Analytics:
    settings: dict[str, Any] = {"state_dir": state_dir, "endpoint": capture.url, "token": "phc_ours"}
    settings.update(config)
    return Analytics(TelemetryConfig.from_env({}, strict=True, **settings))


def sent_by(capture: CaptureServer, lib: str, event: str) -> list[dict[str, Any]]:
    return [e for e in capture.events if e["event"] == event and e["properties"].get("$lib") == lib]


# -- exceptions, each raised for real -------------------------------------------------------------


def plain() -> BaseException:
    api_key = API_KEY  # noqa: F841 - a source line with a secret: it reaches the context lines
    try:
        raise ValueError(f"upload by {EMAIL} rejected for key {API_KEY}")
    except ValueError as exc:
        return exc


def _parse_settings(text: str) -> Any:
    return json.loads(text)


def from_chained() -> BaseException:
    try:
        try:
            _parse_settings("{broken")
        except ValueError as cause:
            raise RuntimeError("settings unreadable") from cause
    except RuntimeError as exc:
        return exc


def implicitly_chained() -> BaseException:
    try:
        try:
            {}["workspace"]
        except KeyError:
            raise LookupError("no workspace selected")  # noqa: B904 - implicitly chained, on purpose
    except LookupError as exc:
        return exc


def suppressed_context() -> BaseException:
    try:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            raise OverflowError("ratio out of range") from None
    except OverflowError as exc:
        return exc


def _fail(kind: type[Exception], text: str) -> None:
    raise kind(text)


# ExceptionGroup is Python 3.11+ (the package supports 3.10, where this case cannot occur).
GROUP: Any = getattr(builtins, "ExceptionGroup", None)


def exception_group() -> BaseException:
    members: list[Exception] = []
    for kind, text in ((ValueError, "bad diff"), (PermissionError, "read-only file")):
        try:
            _fail(kind, text)
        except Exception as exc:
            members.append(exc)
    try:
        raise GROUP("proposal failed", [*members, GROUP("nested", [TypeError("t")])])
    except GROUP as exc:
        return exc
    raise AssertionError("unreachable")


def inside_json() -> BaseException:
    try:
        _parse_settings('{"token": ')
    except ValueError as exc:
        return exc


def inside_requests() -> BaseException:
    try:
        requests.get("not a url", timeout=1)
    except requests.RequestException as exc:
        return exc
    raise AssertionError("requests accepted a URL without a scheme")


def _recurse(depth: int) -> None:
    if depth == 0:
        raise RecursionError(f"too deep for {EMAIL}")
    _recurse(depth - 1)


def deep_recursion(depth: int = 2_000) -> BaseException:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 500)
    try:
        _recurse(depth)
    except RecursionError as exc:
        return exc
    finally:
        sys.setrecursionlimit(limit)
    raise AssertionError("unreachable")


def with_errno() -> BaseException:
    try:
        open(os.path.join(os.sep, "no", "such", "folder", "notes.txt"))  # noqa: SIM115
    except OSError as exc:
        return exc
    raise AssertionError("unreachable")


CASES: dict[str, Callable[[], BaseException]] = {
    "plain": plain,
    "from-chained": from_chained,
    "implicitly-chained": implicitly_chained,
    "suppressed-context": suppressed_context,
    **({"exception-group": exception_group} if GROUP is not None else {}),
    "inside-json": inside_json,
    "inside-requests": inside_requests,
    "deep-recursion": deep_recursion,
    "errno": with_errno,
    "never-raised": lambda: ValueError(f"never raised, key {API_KEY}"),
}

FRAME_FIELDS = ("function", "module", "in_app", "filename", "lineno", "abs_path", "context_line")


def scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return SCRUB(value)
    if isinstance(value, list):
        return [scrubbed(item) for item in value]
    return value


def assert_same_exception_list(mine: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert isinstance(mine, list)
    assert len(mine) == len(theirs)
    for ours_entry, their_entry in zip(mine, theirs, strict=True):
        assert ours_entry["type"] == their_entry["type"]
        assert ours_entry["module"] == their_entry["module"]
        assert ours_entry["mechanism"] == their_entry["mechanism"]  # ids, parent links, source, handled
        assert ours_entry["value"] == SCRUB(their_entry["value"])
        our_frames = ours_entry.get("stacktrace", {}).get("frames", [])
        their_frames = their_entry.get("stacktrace", {}).get("frames", [])
        assert len(our_frames) == len(their_frames)
        assert ("stacktrace" in ours_entry) is ("stacktrace" in their_entry)
        for our_frame, their_frame in zip(our_frames, their_frames, strict=True):
            for name in FRAME_FIELDS:
                assert our_frame.get(name, "absent") == scrubbed(their_frame.get(name, "absent")), name
            for name in ("pre_context", "post_context"):
                assert our_frame.get(name, []) == scrubbed(their_frame.get(name, [])), name


@pytest.mark.parametrize("case", list(CASES))
def test_exception_list_matches_posthog_python(
    case: str, capture: CaptureServer, reference: posthog.Client, state_dir: Path
) -> None:
    # A budget no exception here reaches: this compares structure; the size cut is tested below.
    telemetry = ours(capture, state_dir, max_event_bytes=16 * 1024 * 1024)
    exc = CASES[case]()
    # Both on one line: an exception never raised is reported where it was captured, by both.
    telemetry.capture_exception(exc), reference.capture_exception(exc)
    assert telemetry.flush(timeout=10)
    telemetry.shutdown(timeout=5)

    [mine] = sent_by(capture, "analytics-telemetry", "$exception")
    [theirs] = sent_by(capture, "posthog-python", "$exception")
    assert_same_exception_list(mine["properties"]["$exception_list"], theirs["properties"]["$exception_list"])
    assert mine["properties"]["$exception_level"] == theirs["properties"]["$exception_level"] == "error"
    their_text = json.dumps(theirs)
    our_text = json.dumps(mine)
    assert API_KEY not in our_text
    assert EMAIL not in our_text
    assert HOME + os.sep not in our_text
    if case in ("plain", "deep-recursion", "never-raised"):
        assert API_KEY in their_text or EMAIL in their_text  # the reference shows what was at stake


def test_the_cases_cover_what_the_issue_names() -> None:
    """Each case really is what it claims (so a comparison above cannot pass vacuously)."""
    chained = CASES["from-chained"]()
    assert chained.__cause__ is not None
    assert chained.__suppress_context__
    implicit = CASES["implicitly-chained"]()
    assert implicit.__context__ is not None
    assert not implicit.__suppress_context__
    suppressed = CASES["suppressed-context"]()
    assert suppressed.__context__ is not None
    assert suppressed.__suppress_context__
    assert suppressed.__cause__ is None
    if GROUP is not None:
        group = exception_group()
        assert isinstance(group, GROUP)
        assert len(group.exceptions) == 3
    in_json = CASES["inside-json"]()
    assert in_json.__traceback__ is not None
    frames = []
    tb = in_json.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_globals["__name__"])
        tb = tb.tb_next
    assert frames[-1].startswith("json.")
    in_requests = CASES["inside-requests"]()
    tb = in_requests.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    assert tb is not None
    assert "site-packages" in tb.tb_frame.f_code.co_filename


def test_library_frames_are_not_in_app_and_name_their_package(
    capture: CaptureServer, reference: posthog.Client, state_dir: Path
) -> None:
    telemetry = ours(capture, state_dir)
    telemetry.capture_exception(inside_requests())
    telemetry.shutdown(timeout=5)
    [mine] = sent_by(capture, "analytics-telemetry", "$exception")
    frames = mine["properties"]["$exception_list"][0]["stacktrace"]["frames"]
    library = [f for f in frames if "site-packages" in f["abs_path"]]
    assert library, "requests raised from its own files"
    assert all(f["in_app"] is False for f in library)
    assert "requests/models.py" in {f["filename"] for f in library}
    assert all(f["module"] and f["context_line"] for f in frames)
    own = [f for f in frames if f["module"] == __name__]
    assert own
    assert all(f["filename"] == "tests/test_posthog_fidelity.py" for f in own)


# -- uncaught exceptions: as posthog-python's own hooks report them --------------------------------

UNCAUGHT_APP = """
import sys, threading, posthog
from analytics import Analytics, TelemetryConfig

url, state = sys.argv[1], sys.argv[2]
reference = posthog.Client("phc_reference", host=url, sync_mode=True, enable_exception_autocapture=True)
telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state, endpoint=url, token="phc_ours"))
telemetry.start()  # our hooks go in front of posthog's and hand over to them
worker = threading.Thread(target=lambda: 1 / 0)
worker.start()
worker.join()
raise LookupError("no proposal p-7")
"""


def test_uncaught_exceptions_carry_posthogs_level_source_and_mechanism(
    capture: CaptureServer, state_dir: Path
) -> None:
    result = run_python(
        f"import sys; sys.argv = ['app', {capture.url!r}, {str(state_dir)!r}]\n{UNCAUGHT_APP}"
    )
    assert result.returncode == 1
    assert "LookupError: no proposal p-7" in result.stderr
    assert capture.wait_for_events(4, timeout=10)
    mine = sent_by(capture, "analytics-telemetry", "$exception")
    theirs = sent_by(capture, "posthog-python", "$exception")
    assert len(mine) == len(theirs) == 2
    for kind in ("ZeroDivisionError", "LookupError"):
        [our_event] = [e for e in mine if e["properties"]["$exception_list"][0]["type"] == kind]
        [their_event] = [e for e in theirs if e["properties"]["$exception_list"][0]["type"] == kind]
        for name in ("$exception_level", "$exception_source"):
            assert our_event["properties"][name] == their_event["properties"][name], name
        our_mechanism = our_event["properties"]["$exception_list"][0]["mechanism"]
        their_mechanism = their_event["properties"]["$exception_list"][0]["mechanism"]
        assert our_mechanism == their_mechanism
        assert our_mechanism["handled"] is False
    levels = {
        e["properties"]["$exception_list"][0]["type"]: e["properties"]["$exception_level"] for e in mine
    }
    assert levels == {"LookupError": "fatal", "ZeroDivisionError": "error"}


# -- the size budget: cut structure, never a type --------------------------------------------------


def test_an_oversized_exception_arrives_as_a_list_with_its_innermost_frames(
    capture: CaptureServer, reference: posthog.Client, state_dir: Path
) -> None:
    telemetry = ours(capture, state_dir)  # the default budget: 512 KiB
    exc = deep_recursion(3_000)
    telemetry.capture_exception(exc)
    reference.capture_exception(exc)
    assert telemetry.flush(timeout=10)
    telemetry.shutdown(timeout=5)

    [mine] = sent_by(capture, "analytics-telemetry", "$exception")
    [theirs] = sent_by(capture, "posthog-python", "$exception")
    assert len(json.dumps(theirs)) > POSTHOG_EVENT_LIMIT  # posthog-python sends what PostHog drops
    assert len(encode(mine)) <= 512 * 1024 < POSTHOG_EVENT_LIMIT
    props = mine["properties"]
    [entry] = props["$exception_list"]
    assert isinstance(entry["stacktrace"]["frames"], list)
    our_frames = entry["stacktrace"]["frames"]
    their_frames = theirs["properties"]["$exception_list"][0]["stacktrace"]["frames"]
    assert 1_000 < len(our_frames) < len(their_frames)
    # What is left is the innermost end of the same stack, frame for frame.
    tail = their_frames[-len(our_frames) :]
    for our_frame, their_frame in zip(our_frames, tail, strict=True):
        for name in ("function", "module", "filename", "lineno", "in_app"):
            assert our_frame.get(name) == scrubbed(their_frame.get(name)), name
    assert our_frames[-1]["function"] == "_recurse"
    assert our_frames[-1]["context_line"] == SCRUB(
        their_frames[-1]["context_line"]
    )  # the crash site keeps its source
    assert "$exception_list" in props["truncated_properties"]
    cut = props["truncation"]["$exception_list"]
    assert cut["frames"] == len(their_frames) - len(our_frames)
    assert cut["context_lines"] > 0


def test_an_oversized_full_content_turn_keeps_its_lists(capture: CaptureServer, state_dir: Path) -> None:
    telemetry = ours(capture, state_dir, full_content=True)
    prompt = "说明" * 100_000  # 200,000 characters, 600,000 bytes
    answer = "答案" * 100_000
    with telemetry.chat_turn(model="gpt-4o", provider="openai") as turn:
        with turn.tool_call("read_file") as span:
            span.set(input_state={"path": "notes.txt"}, output_state=prompt)
        turn.set(prompt=prompt, response=answer, prompt_length=len(prompt), response_length=len(answer))
    assert telemetry.flush(timeout=10)
    telemetry.shutdown(timeout=5)

    for event in ("$ai_generation", "$ai_trace", "$ai_span"):
        [message] = sent_by(capture, "analytics-telemetry", event)
        assert len(encode(message)) <= 512 * 1024, event
    [generation] = sent_by(capture, "analytics-telemetry", "$ai_generation")
    props = generation["properties"]
    for name, role in (("$ai_input", "user"), ("$ai_output_choices", "assistant")):
        [message] = props[name]
        assert message["role"] == role
        assert isinstance(message["content"], str)
    assert any(
        m["content"].endswith(TRUNCATION_MARK) for m in (*props["$ai_input"], *props["$ai_output_choices"])
    )
    assert {"$ai_input", "$ai_output_choices"} & set(props["truncated_properties"])
    [trace] = sent_by(capture, "analytics-telemetry", "$ai_trace")
    assert isinstance(trace["properties"]["$ai_input_state"], list)
    assert isinstance(trace["properties"]["$ai_output_state"], list)
    [span_event] = sent_by(capture, "analytics-telemetry", "$ai_span")
    assert span_event["properties"]["$ai_input_state"] == {"path": "notes.txt"}
    assert isinstance(span_event["properties"]["$ai_output_state"], str)


def _frame(function: str, lineno: int, *, in_app: bool | None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "platform": "python",
        "filename": "app/x.py",
        "abs_path": "/srv/app/x.py",
        "function": function,
        "module": "app.x",
        "lineno": lineno,
        "pre_context": ["a = 1"] * 5,
        "context_line": "b = 2",
        "post_context": ["c = 3"] * 5,
    }
    if in_app is not None:
        frame["in_app"] = in_app
    return frame


def _chain(entries: int, depth: int) -> list[dict[str, Any]]:
    chain = []
    for index in range(entries):
        mechanism: dict[str, Any] = {"exception_id": index, "type": "generic", "handled": True}
        if index:
            mechanism = {
                "exception_id": index,
                "parent_id": index - 1,
                "type": "chained",
                "source": "context",
            }
        frames = [_frame(f"f{i}", i + 1, in_app=i % 2 == 0 or None) for i in range(depth)]
        chain.append(
            {
                "type": "E",
                "value": "v",
                "mechanism": mechanism,
                "stacktrace": {"type": "raw", "frames": frames},
            }
        )
    return chain


def _message(exception_list: list[dict[str, Any]]) -> dict[str, Any]:
    return {"event": "$exception", "properties": {"$exception_list": exception_list, "error_type": "E"}}


def test_the_cut_takes_context_lines_first_then_outer_frames_then_chained_exceptions() -> None:
    whole = len(encode(_message(_chain(3, 200))))
    without_context = _chain(3, 200)
    for entry in without_context:
        for frame in entry["stacktrace"]["frames"][:-1]:
            for name in ("pre_context", "post_context", "context_line"):
                frame.pop(name)
    context_free = len(encode(_message(without_context)))

    # Just over the budget: context lines go, every frame stays.
    message = _message(_chain(3, 200))
    truncated: list[str] = []
    data = fit_to_budget(message, (whole + context_free) // 2, truncated)
    assert data is not None
    assert len(data) <= (whole + context_free) // 2
    entries = message["properties"]["$exception_list"]
    assert [len(e["stacktrace"]["frames"]) for e in entries] == [200, 200, 200]
    assert all("context_line" in e["stacktrace"]["frames"][-1] for e in entries)  # innermost keep theirs
    assert message["properties"]["truncation"]["$exception_list"].keys() == {"context_lines"}

    # Tighter: outermost frames go, the innermost stay, and every exception is still there.
    message = _message(_chain(3, 200))
    assert fit_to_budget(message, context_free // 2, []) is not None
    entries = message["properties"]["$exception_list"]
    assert len(entries) == 3
    for entry in entries:
        frames = entry["stacktrace"]["frames"]
        assert 0 < len(frames) < 200
        assert frames[-1]["function"] == "f199"
        assert [f["lineno"] for f in frames] == list(range(201 - len(frames), 201))
    assert message["properties"]["truncation"]["$exception_list"]["frames"] > 0

    # Tighter still: one frame each is not small enough, so the last chained exceptions go.
    message = _message(_chain(40, 3))
    single = len(encode(_message(_chain(1, 1))))
    assert fit_to_budget(message, single + 2_000, []) is not None
    entries = message["properties"]["$exception_list"]
    assert 1 <= len(entries) < 40
    assert [e["mechanism"]["exception_id"] for e in entries] == list(range(len(entries)))
    assert message["properties"]["truncation"]["$exception_list"]["exceptions"] == 40 - len(entries)


def test_the_cut_keeps_every_property_type() -> None:
    big = "x" * 50_000
    message = {
        "event": "e",
        "properties": {
            "context": {"a": big, "b": [big, big], "n": 7},
            "$ai_input": [{"role": "user", "content": big}] * 4,
            "note": big,
            "count": 3,
        },
    }
    data = fit_to_budget(message, 20_000, [])
    assert data is not None
    assert len(data) <= 20_000
    props = message["properties"]
    assert isinstance(props["context"], dict)
    assert isinstance(props["$ai_input"], list)
    assert isinstance(props["note"], str)
    assert props["count"] == 3
    assert props["$ai_input"]
    assert props["$ai_input"][-1]["role"] == "user"
    assert json.loads(data)["properties"]["truncated_properties"] == sorted(props["truncated_properties"])


def test_an_event_that_cannot_fit_is_refused_not_mangled() -> None:
    message = {"event": "e", "properties": {f"k{i}": i for i in range(2_000)}}
    assert fit_to_budget(message, 4_096, []) is None


# -- LLM analytics: the same call through posthog.ai's OpenAI wrapper ----------------------------------

MODEL_DELAY = 0.05


class FakeOpenAI(LoopbackServer):
    """Chat completions on loopback: a fixed answer after MODEL_DELAY; model ``rate-limited`` gets a 429."""

    def __init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                time.sleep(MODEL_DELAY)
                if body["model"] == "rate-limited":
                    self._answer(429, {"error": {"message": "Rate limit reached", "type": "requests"}})
                    return
                self._answer(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 1_800_000_000,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "4"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
                    },
                )

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                send_json(self, status, payload)

        self.requests = 0
        super().__init__(Handler)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


@pytest.fixture
def model_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


MESSAGES = [{"role": "user", "content": "what is 2+2?"}]


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}[type(value)]


def ai_properties(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event["properties"].items() if k.startswith("$ai_")}


def assert_same_ai_shape(mine: dict[str, Any], theirs: dict[str, Any]) -> None:
    missing = set(theirs) - set(mine)
    assert not missing, f"posthog.ai sends {sorted(missing)} and we do not"
    for name, value in theirs.items():
        assert json_type(mine[name]) == json_type(value), name


def test_a_generation_matches_posthog_ai_openai_wrapper(
    capture: CaptureServer, reference: posthog.Client, state_dir: Path, model_server: FakeOpenAI
) -> None:
    wrapped = WrappedOpenAI(
        api_key="sk-test", base_url=model_server.base_url, posthog_client=reference, max_retries=0
    )
    wrapped.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2)

    telemetry = ours(capture, state_dir, full_content=True)
    client = openai.OpenAI(api_key="sk-test", base_url=model_server.base_url, max_retries=0)
    with telemetry.chat_turn(model="gpt-4o-mini", provider="openai", name="answer_question") as turn:
        with turn.tool_call("read_file"):
            time.sleep(0.02)
        with turn.generation():
            response = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                temperature=0.2,
            )
        assert response.usage is not None
        answer = response.choices[0].message.content or ""
        turn.set(
            prompt=MESSAGES[0]["content"],
            response=answer,
            prompt_length=len(MESSAGES[0]["content"]),
            response_length=len(answer),
            input_tokens=response.usage.prompt_tokens,
            output_tokens=response.usage.completion_tokens,
            stop_reason=response.choices[0].finish_reason,
            http_status=200,
            base_url=str(client.base_url),
            model_parameters={"temperature": 0.2},
            usage=response.usage.model_dump(),
        )
    assert telemetry.flush(timeout=10)
    telemetry.shutdown(timeout=5)

    [theirs] = sent_by(capture, "posthog-python", "$ai_generation")
    [mine] = sent_by(capture, "analytics-telemetry", "$ai_generation")
    their_ai, our_ai = ai_properties(theirs), ai_properties(mine)
    assert_same_ai_shape(our_ai, their_ai)
    # Units: seconds, whole tokens, the same counts.
    for props in (our_ai, their_ai):
        assert MODEL_DELAY <= props["$ai_latency"] < 5
        assert (props["$ai_input_tokens"], props["$ai_output_tokens"]) == (12, 1)
        assert props["$ai_http_status"] == 200
        assert props["$ai_stop_reason"] == "stop"
        assert props["$ai_model_parameters"] == {"temperature": 0.2}
    # Ours also knows the turn: its tools, its trace and session.
    assert our_ai["$ai_tools_called"] == "read_file"
    assert our_ai["$ai_tool_call_count"] == 1
    assert our_ai["$ai_trace_id"] == turn.turn_id
    [trace] = sent_by(capture, "analytics-telemetry", "$ai_trace")
    trace_props = trace["properties"]
    assert trace_props["$ai_trace_id"] == turn.turn_id
    assert trace_props["$ai_span_name"] == "answer_question"
    assert trace_props["$ai_session_id"] == telemetry.session_id
    assert our_ai["$ai_parent_id"] == turn.turn_id  # in the trace's timeline
    [span] = sent_by(capture, "analytics-telemetry", "$ai_span")
    # The model's latency is its own: the turn's is longer by at least the tool call.
    turn_latency = trace_props["turn_latency"]
    assert turn_latency >= our_ai["$ai_latency"] + span["properties"]["$ai_latency"]
    # PostHog's traces list: the sum of the $ai_latency of the trace's event and its direct children.
    listed = sum(
        e["properties"].get("$ai_latency", 0.0)
        for e in (trace, mine, span)
        if e["properties"].get("$ai_parent_id") in (None, turn.turn_id)
    )
    # The model call and the tool, each counted once, never the turn on top of them. (Not a bound
    # from below: the turn also pays for opening the queue on its first emit, which a busy machine
    # can make longer than the model call.)
    children = our_ai["$ai_latency"] + span["properties"]["$ai_latency"]
    assert listed == pytest.approx(children)
    assert listed <= turn_latency


def test_a_failed_generation_matches_posthog_ai_openai_wrapper(
    capture: CaptureServer, reference: posthog.Client, state_dir: Path, model_server: FakeOpenAI
) -> None:
    wrapped = WrappedOpenAI(
        api_key="sk-test", base_url=model_server.base_url, posthog_client=reference, max_retries=0
    )
    with pytest.raises(openai.RateLimitError):
        wrapped.chat.completions.create(model="rate-limited", messages=MESSAGES, temperature=0.2)

    telemetry = ours(capture, state_dir, full_content=True)
    client = openai.OpenAI(api_key="sk-test", base_url=model_server.base_url, max_retries=0)
    with telemetry.chat_turn(model="rate-limited", provider="openai") as turn:
        turn.set(
            prompt=MESSAGES[0]["content"],
            base_url=str(client.base_url),
            model_parameters={"temperature": 0.2},
        )
        with pytest.raises(openai.RateLimitError), turn.generation():
            client.chat.completions.create(model="rate-limited", messages=MESSAGES, temperature=0.2)
    assert telemetry.flush(timeout=10)
    telemetry.shutdown(timeout=5)

    [theirs] = sent_by(capture, "posthog-python", "$ai_generation")
    [mine] = sent_by(capture, "analytics-telemetry", "$ai_generation")
    their_ai, our_ai = ai_properties(theirs), ai_properties(mine)
    # posthog.ai reports token counts it parsed itself; a failed call has none, and we send none.
    assert_same_ai_shape(our_ai, {k: v for k, v in their_ai.items() if k != "$ai_tokens_source"})
    for props in (our_ai, their_ai):
        assert props["$ai_is_error"] is True
        assert props["$ai_http_status"] == 429
        assert "Rate limit reached" in props["$ai_error"]
    [trace] = sent_by(capture, "analytics-telemetry", "$ai_trace")
    assert trace["properties"]["$ai_is_error"] is True
    assert trace["properties"]["$ai_error"] == our_ai["$ai_error"]


# -- person profiles ----------------------------------------------------------------------------------


def test_anonymous_installs_send_no_person_profile_as_posthog_python_does(
    capture: CaptureServer, reference: posthog.Client, state_dir: Path
) -> None:
    reference.capture("session_started")  # posthog-python without a distinct id: anonymous
    telemetry = ours(capture, state_dir)
    telemetry.start()
    telemetry.emit(events.ToolCall(tool_name="read_file", duration_ms=1, success=True))
    telemetry.shutdown(timeout=5)
    [their_event] = sent_by(capture, "posthog-python", "session_started")
    assert their_event["properties"]["$process_person_profile"] is False
    mine = [e for e in capture.events if e["properties"].get("$lib") == "analytics-telemetry"]
    assert len(mine) == 3
    assert all(e["properties"]["$process_person_profile"] is False for e in mine)


def test_a_named_user_keeps_a_person_profile(capture: CaptureServer, state_dir: Path) -> None:
    telemetry = ours(capture, state_dir, user_id="user-42")
    telemetry.emit(events.ToolCall(tool_name="read_file", duration_ms=1, success=True))
    telemetry.shutdown(timeout=5)
    [mine] = sent_by(capture, "analytics-telemetry", "$ai_span")
    assert mine["distinct_id"] == "user-42"
    assert "$process_person_profile" not in mine["properties"]


def test_weekly_active_installs_still_count_anonymous_installs(tmp_path: Path) -> None:
    for install in ("a", "b"):
        telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=tmp_path / install))
        telemetry.start()
        telemetry.shutdown(timeout=5)
    messages = archived_messages(tmp_path / "a") + archived_messages(tmp_path / "b")
    assert all(m["properties"]["$process_person_profile"] is False for m in messages)
    weekly = next(metric for metric in METRICS if metric.key == "weekly_active_installs")
    rows = weekly.run(messages).rows
    assert sum(installs for _week, installs in rows) == 2  # (one row, unless a week ended in between)
