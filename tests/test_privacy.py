"""Nothing personal leaves: a planted corpus through every event type, opt-out audited, emit fuzzed."""

from __future__ import annotations

import getpass
import json
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics import Analytics, TelemetryConfig, events
from analytics.privacy.scrubber import Scrubber
from analytics.privacy.secret_rules import SYSTEM_ACCOUNTS
from tests.conftest import MakeTelemetry, queued_messages

HOME = str(Path.home())
# The user name planted is a person's: on a machine whose account is a role (root in a
# container, runner in CI) that name is not personal and is left alone, so the test gives the
# process a personal login name through the environment, where getpass.getuser() reads it.
USER = getpass.getuser() if getpass.getuser() not in SYSTEM_ACCOUNTS else "margaret.o"


@pytest.fixture(autouse=True)
def personal_login_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", USER)


# Each entry: (what it is, the text planted, the part that must never appear in what is queued).
CORPUS: list[tuple[str, str, str]] = [
    ("home path", f"{HOME}/projects/acme-secret/main.py", HOME),
    ("user name", f"build by {USER} failed", USER),
    ("other home", "/Users/margaret/Documents/plan.txt", "margaret"),
    ("windows home", r"C:\Users\dmitri\AppData\app.log", "dmitri"),
    ("e-mail", "contact jane.doe+test@example.co.uk now", "jane.doe+test@example.co.uk"),
    ("openai key", "key sk-proj-Abc123Def456Ghi789Jkl012Mno345", "sk-proj-Abc123Def456Ghi789Jkl012Mno345"),
    (
        "anthropic key",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123",
    ),
    ("aws key id", "AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
    ("google key", "AIzaSyA1234567890abcdefghijklmnopqrstu", "AIzaSyA1234567890abcdefghijklmnopqrstu"),
    ("stripe key", "sk_live_51HabcdefghijklmnopQRST", "sk_live_51HabcdefghijklmnopQRST"),
    ("github token", "ghp_0123456789abcdefghijklmnopqrstuvwxyz", "ghp_0123456789abcdefghijklmnopqrstuvwxyz"),
    (
        "github pat",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    ),
    (
        "slack token",
        "xoxb-123456789012-123456789012-abcdefghijkl",
        "xoxb-123456789012-123456789012-abcdefghijkl",
    ),
    ("slack webhook", "https://hooks.slack.com/services/T000/B000/XXXXXXXX", "T000/B000/XXXXXXXX"),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("bearer header", "Authorization: Bearer tok_live_9f8e7d6c5b4a", "tok_live_9f8e7d6c5b4a"),
    ("bare bearer", "sent Bearer abcdef0123456789xyz", "abcdef0123456789xyz"),
    ("url password", "https://admin:hunter2pass@db.internal:5432/x", "hunter2pass"),
    ("password pair", "login failed password=Tr0ub4dor&3", "Tr0ub4dor"),
    ("token pair", "retry with token: 8c1f9a7e55", "8c1f9a7e55"),
    ("api_key json", '{"api_key": "zz-secret-value-99"}', "zz-secret-value-99"),
    (
        "private key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEA",
    ),
]
PLANTED = "\n".join(text for _, text, _ in CORPUS)


def corpus_events() -> Iterator[events.DomainEvent]:
    """Every catalog event, with the corpus in every free-text field it has."""
    yield events.SessionStart(
        app_version="1.0",
        os=PLANTED,
        os_version=PLANTED,
        arch="x86_64",
        python_version="3.11",
        machine_id=PLANTED,
    )
    yield events.SessionEnd(duration_ms=1, end_reason="shutdown")
    yield events.WorkspaceSelected(workspace_path=PLANTED, is_git_repo=True)
    yield events.ChatTurn(
        prompt_length=1,
        response_length=1,
        model=PLANTED[:200],
        latency_ms=1,
        provider=PLANTED[:200],
        turn_id=USER,
    )
    yield events.ToolCall(
        tool_name=PLANTED[:200], duration_ms=1, success=False, error_type=PLANTED[:200], turn_id=PLANTED[:200]
    )
    yield events.ProposalCreated(
        proposal_id=PLANTED[:200], file_count=1, total_lines_changed=1, operation=PLANTED[:200]
    )
    yield events.ProposalDecision(proposal_id=PLANTED[:200], decision="approved")
    yield events.Error(
        error_type=PLANTED[:200],
        message=PLANTED,
        stack_trace=f'Traceback (most recent call last):\n  File "{HOME}/app/x.py", line 1, in f\n{PLANTED}',
        context={"note": PLANTED, PLANTED[:40]: [PLANTED, {"deep": PLANTED}]},
    )
    yield events.ChatTurnFull(
        prompt_length=1, response_length=1, model="m", latency_ms=1, prompt=PLANTED, response=PLANTED
    )
    yield events.ProposalDiff(proposal_id="p", diff=PLANTED)
    yield events.FileSnapshot(file_path=PLANTED, before=PLANTED, after=PLANTED, proposal_id="p")
    yield events.ChatTrace(
        trace_id=PLANTED[:200],
        name=PLANTED[:200],
        latency_ms=1,
        is_error=True,
        error=PLANTED,
        input_state=[{"role": "user", "content": PLANTED}],
        output_state={"tool": [PLANTED]},
    )


def test_corpus_covers_every_catalog_event() -> None:
    assert {type(e).__name__ for e in corpus_events()} == set(events.CATALOG)


@pytest.mark.parametrize("event", list(corpus_events()), ids=lambda e: type(e).__name__)
def test_planted_secrets_never_reach_the_queue(
    make_telemetry: MakeTelemetry, state_dir: Path, event: events.DomainEvent
) -> None:
    telemetry = make_telemetry(full_content=True, strict=True)
    telemetry.emit(event)
    raw = json.dumps(queued_messages(state_dir), ensure_ascii=False)
    assert raw != "[]"
    for label, _text, secret in CORPUS:
        assert secret not in raw, f"{label} leaked from {type(event).__name__}"
    assert not re.search(rf"(?<![A-Za-z0-9]){re.escape(USER)}(?![A-Za-z0-9])", raw), "user name leaked"


def test_scrubber_leaves_ordinary_text_alone() -> None:
    scrubber = Scrubber(home="/home/alice", user_name="alice")
    for text in [
        "gpt-4o",
        "read_file",
        "missing key: id",
        "ValueError: invalid literal for int()",
        "p50 = 12ms",
    ]:
        assert scrubber.scrub_text(text) == text


def test_values_are_capped_and_marked(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(max_value_chars=100)
    telemetry.emit(events.Error(error_type="E" * 150, message="m" * 5000))
    [message] = queued_messages(state_dir)
    props = message["properties"]
    assert len(props["error_type"]) == 100
    assert props["error_type"].endswith("…[truncated]")
    assert "error_type" in props["truncated_properties"]


def test_oversized_events_are_cut_to_the_event_budget(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(full_content=True, max_event_bytes=8192, max_content_chars=1_000_000)
    telemetry.emit(events.ProposalDiff(proposal_id="p", diff="+ line\n" * 20_000))
    [message] = queued_messages(state_dir)
    assert len(json.dumps(message).encode()) <= 8192
    assert message["properties"]["diff"].endswith("…[truncated]")
    assert "diff" in message["properties"]["truncated_properties"]


# -- opt-out: no socket, no file, no thread ---------------------------------------------------------

_AUDIT: dict[str, Any] = {"active": False, "events": []}


_NETWORK_OR_WRITE = {
    "socket.connect",
    "socket.getaddrinfo",
    "socket.__new__",
    "os.mkdir",
    "os.rename",
    "os.remove",
}


def _opens_for_writing(event: str, args: tuple[Any, ...]) -> bool:
    return (
        event == "open" and len(args) >= 2 and isinstance(args[1], str) and bool(set(args[1]) & set("wax+"))
    )


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if _AUDIT["active"] and (event in _NETWORK_OR_WRITE or _opens_for_writing(event, args)):
        _AUDIT["events"].append((event, args))


sys.addaudithook(_audit_hook)  # audit hooks cannot be removed; the flag above scopes this one


@pytest.mark.parametrize("env", [{"TELEMETRY_ENABLED": "0"}, {"DO_NOT_TRACK": "1"}])
def test_disabled_means_no_socket_no_file_no_thread(tmp_path: Path, env: dict[str, str]) -> None:
    state = tmp_path / "state"
    threads_before = set(threading.enumerate())
    _AUDIT["events"] = []
    _AUDIT["active"] = True
    try:
        telemetry = Analytics(
            TelemetryConfig.from_env(
                {**env, "TELEMETRY_ENDPOINT": "http://127.0.0.1:9", "TELEMETRY_TOKEN": "phc_x"},
                state_dir=state,
            )
        )
        telemetry.start()
        for event in corpus_events():
            telemetry.emit(event)
        telemetry.emit("ToolCall", {"tool_name": "x", "duration_ms": 1, "success": True})
        telemetry.shutdown()
    finally:
        _AUDIT["active"] = False
    assert not telemetry.enabled
    assert _AUDIT["events"] == []
    assert not state.exists()
    assert list(tmp_path.iterdir()) == []
    assert set(threading.enumerate()) == threads_before


def test_the_audit_would_see_a_write(tmp_path: Path) -> None:
    """The audit above is not vacuous: an enabled instance does trip it."""
    _AUDIT["events"] = []
    _AUDIT["active"] = True
    try:
        telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=tmp_path / "state"))
        telemetry.emit("ToolCall", {"tool_name": "x", "duration_ms": 1, "success": True})
        telemetry.shutdown()
    finally:
        _AUDIT["active"] = False
    assert _AUDIT["events"]


# -- fuzz: emit never raises outside strict mode ------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def payloads(draw: st.DrawFn) -> tuple[Any, Any]:
    name = draw(
        st.sampled_from([*events.CATALOG, "Unknown", ""]) | st.text(max_size=20) | st.none() | st.integers()
    )
    model = events.CATALOG.get(name) if isinstance(name, str) else None
    keys = list(model.model_fields) if model else []
    payload = draw(
        st.dictionaries(
            st.sampled_from(keys) if keys else st.text(max_size=10), json_values, max_size=len(keys) + 1
        )
        | json_values
    )
    return name, payload


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads())
def test_emit_never_raises_on_arbitrary_input(make_telemetry: MakeTelemetry, case: tuple[Any, Any]) -> None:
    telemetry = _fuzz_target(make_telemetry)
    name, payload = case
    telemetry.emit(name, payload)


_fuzz_cache: dict[int, Analytics] = {}


def _fuzz_target(make_telemetry: MakeTelemetry) -> Analytics:
    # One instance per test run (hypothesis calls the test many times with the same fixture).
    key = id(make_telemetry)
    if key not in _fuzz_cache:
        _fuzz_cache.clear()
        _fuzz_cache[key] = make_telemetry(full_content=True)
    return _fuzz_cache[key]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_scrubbing_is_idempotent(text: str) -> None:
    scrubber = Scrubber(home="/home/alice", user_name="alice")
    once = scrubber.scrub_text(text)
    assert scrubber.scrub_text(once) == once


@pytest.mark.parametrize("home", ["//", "\\\\", "/\\", "///"])
def test_a_home_of_separators_alone_is_no_home(home: str) -> None:
    # HOME=// left an empty spelling: the scrubber raised at construction (telemetry would not
    # start), and before that it put <home> between every two characters. Found by a helper.
    scrubber = Scrubber(home=home, user_name="alice")
    assert scrubber.scrub_text("x /home/bob/notes y") == "x <home>/notes y"
    assert scrubber.scrub_text("plain words") == "plain words"


# -- structured context: keys that name a secret redact their values, at any depth -----------------


def test_secret_named_keys_are_redacted_at_any_depth(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(strict=True)
    context = {
        "password": "plain words no scanner would flag",
        "api_key": 12345,
        "db": {"pass": "x", "host": "db.internal", "port": 5432},
        "credentials": {"user": "svc", "token": ["a1", "b2"], "expires_in": 60},
        "X-Api-Key": "k",
        "headers": [{"Authorization": "Bearer abc"}, {"Accept": "application/json"}],
        "token_count": 1400,
        "has_password": True,
        "secret": None,
        "empty_password": "",
    }
    telemetry.emit(events.Error(error_type="E", message="m", context=context))
    [message] = [m for m in queued_messages(state_dir) if m["event"] == "$exception"]
    sent = message["properties"]["context"]
    assert sent["password"] == "<secret>"
    assert sent["api_key"] == "<secret>"
    assert sent["db"] == {"pass": "<secret>", "host": "db.internal", "port": 5432}
    assert sent["credentials"] == {
        "user": "<secret>",
        "token": ["<secret>", "<secret>"],
        "expires_in": "<secret>",
    }
    assert sent["X-Api-Key"] == "<secret>"
    assert sent["headers"] == [{"Authorization": "<secret>"}, {"Accept": "application/json"}]
    assert sent["token_count"] == 1400
    assert sent["has_password"] is True
    assert sent["secret"] is None
    assert sent["empty_password"] == ""
