"""Errors to Sentry and PostHog: the real sentry-sdk against an envelope endpoint on loopback."""

from __future__ import annotations

import asyncio
import builtins
import gc
import getpass
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk

from analytics import Analytics, TelemetryConfig
from analytics.errors.sentry import event_url
from analytics.privacy.scrubber import Scrubber
from tests.conftest import archived_messages, run_python
from tests.sentry_server import SentryServer

HOME = str(Path.home())
USER = getpass.getuser()
HOST = socket.gethostname()
EMAIL = "jane.doe@example.com"
TOKEN_VALUE = "tok3n-v4lue-99"
API_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123"


@pytest.fixture(autouse=True)
def fresh_sentry() -> Iterator[None]:
    """sentry-sdk is process-global: every test starts and ends without a client or global tags."""
    yield
    sentry_sdk.get_client().close(timeout=1)
    sentry_sdk.get_global_scope().clear()
    sentry_sdk.init()  # an inactive client, as if never initialised


@pytest.fixture
def sentry() -> Iterator[SentryServer]:
    with SentryServer() as server:
        yield server


def make(state_dir: Path, dsn: str | None, **overrides: Any) -> Analytics:
    settings: dict[str, Any] = {"state_dir": state_dir, "app_version": "4.2.0", "environment": "staging"}
    if dsn:
        settings["sentry_dsn"] = dsn
    settings.update(overrides)
    return Analytics(TelemetryConfig.from_env({}, strict=True, **settings))


def planted_failure() -> None:
    api_key = API_KEY  # noqa: F841 - a local Sentry captures with the frame: it must arrive scrubbed
    secret_file = f"{HOME}/clients/acme/secrets.env"
    raise RuntimeError(f"upload by {EMAIL} of {secret_file} on {HOST} failed with token={TOKEN_VALUE}")


def word(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9.-]){re.escape(text)}(?![A-Za-z0-9-])")


def exceptions_in(state_dir: Path) -> list[dict[str, Any]]:
    return [m for m in archived_messages(state_dir) if m["event"] == "$exception"]


def test_sentry_gets_a_tagged_scrubbed_event_and_posthog_links_to_it(
    sentry: SentryServer, state_dir: Path
) -> None:
    # Sentry set up before start() returns: a breadcrumb logged right after it must be recorded
    # (in the default background set-up, what is logged before Sentry is ready has no breadcrumb).
    telemetry = make(state_dir, sentry.dsn, sentry_background_init=False)
    telemetry.start()
    logging.getLogger("app.sync").warning("retrying upload for %s with token=%s", EMAIL, TOKEN_VALUE)
    try:
        planted_failure()
    except RuntimeError as exc:
        event_id = telemetry.capture_exception(
            exc, context={"workspace": f"{HOME}/clients/acme", "user": EMAIL}
        )
    session_id, distinct_id = telemetry.session_id, telemetry.distinct_id
    telemetry.shutdown(timeout=5)

    [event] = sentry.events()
    assert event["event_id"] == event_id
    assert event["release"] == "4.2.0"
    assert event["environment"] == "staging"
    assert event["tags"]["session_id"] == session_id
    assert event["tags"]["distinct_id"] == distinct_id
    assert event["tags"]["app_version"] == "4.2.0"
    assert "server_name" not in event
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert any(frame.get("vars") for frame in frames)  # locals were sent, and scrubbed
    crumbs = event["breadcrumbs"]["values"]
    assert any("retrying upload for <email> with token=<secret>" in str(c.get("message")) for c in crumbs)
    envelope_text = b"".join(e.raw for e in sentry.envelopes).decode()
    for leaked in (HOME + "/", EMAIL, TOKEN_VALUE, API_KEY):
        assert leaked not in envelope_text, f"{leaked!r} reached Sentry"
    assert not word(USER).search(envelope_text), "the user name reached Sentry"
    assert not word(HOST).search(envelope_text), "the host name reached Sentry"

    [posthog] = exceptions_in(state_dir)
    props = posthog["properties"]
    assert props["$sentry_event_id"] == event_id
    assert props["$sentry_url"] == event_url(sentry.dsn, event_id)
    assert props["error_type"] == "RuntimeError"
    [exception] = props["$exception_list"]
    assert exception["mechanism"] == {
        "type": "generic",
        "handled": True,
        "exception_id": 0,
        "synthetic": False,
    }
    assert props["$exception_level"] == "error"
    assert "$exception_source" not in props
    frames = exception["stacktrace"]["frames"]
    assert [f["function"] for f in frames] == [
        "test_sentry_gets_a_tagged_scrubbed_event_and_posthog_links_to_it",
        "planted_failure",
    ]
    assert {f["filename"] for f in frames} == {"tests/test_errors.py"}  # relative to its import root
    assert {f["module"] for f in frames} == {"tests.test_errors"}
    assert frames[-1]["context_line"].strip().startswith("raise RuntimeError(")
    posthog_text = json.dumps(posthog)
    for leaked in (HOME + "/", EMAIL, TOKEN_VALUE, API_KEY):
        assert leaked not in posthog_text


def test_uncaught_exception_in_a_thread_is_reported_once_and_the_old_hook_runs(
    sentry: SentryServer, state_dir: Path
) -> None:
    seen_by_previous: list[BaseException | None] = []
    original = threading.excepthook
    threading.excepthook = lambda args: seen_by_previous.append(args.exc_value)
    try:
        telemetry = make(state_dir, sentry.dsn)
        telemetry.start()
        worker = threading.Thread(target=planted_failure)
        worker.start()
        worker.join()
        telemetry.shutdown(timeout=5)
        assert threading.excepthook is not original  # our hook is gone, the app's is back
    finally:
        threading.excepthook = original
    assert len(seen_by_previous) == 1
    [event] = sentry.events()
    [posthog] = exceptions_in(state_dir)
    assert posthog["properties"]["$sentry_event_id"] == event["event_id"]
    mechanism = posthog["properties"]["$exception_list"][0]["mechanism"]
    assert (mechanism["type"], mechanism["handled"]) == ("onuncaughtexception", False)
    # A thread died, the process lives on: an error, as posthog-python's own hook reports it.
    assert posthog["properties"]["$exception_level"] == "error"
    assert posthog["properties"]["$exception_source"] == "python.threading_excepthook"


def test_unretrieved_asyncio_task_exception_is_reported_once_and_the_old_handler_runs(
    sentry: SentryServer, state_dir: Path
) -> None:
    seen_by_previous: list[dict[str, Any]] = []

    async def fails() -> None:
        planted_failure()

    async def app() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: seen_by_previous.append(context))
        telemetry = make(state_dir, sentry.dsn)
        telemetry.start()  # from inside the loop: its handler is installed
        task = asyncio.ensure_future(fails())
        await asyncio.sleep(0.01)
        del task  # never awaited: the loop reports it when the task is collected
        gc.collect()
        await asyncio.sleep(0)
        telemetry.shutdown(timeout=5)

    asyncio.run(app())
    assert len(seen_by_previous) == 1
    assert isinstance(seen_by_previous[0]["exception"], RuntimeError)
    [event] = sentry.events()
    [posthog] = exceptions_in(state_dir)
    assert posthog["properties"]["$sentry_event_id"] == event["event_id"]
    assert posthog["properties"]["$exception_source"] == "python.asyncio_exception_handler"
    assert posthog["properties"]["$exception_list"][0]["mechanism"]["handled"] is False


def test_an_exception_reported_and_reraised_is_not_reported_twice(
    sentry: SentryServer, state_dir: Path
) -> None:
    telemetry = make(state_dir, sentry.dsn)
    telemetry.start()

    def work() -> None:
        try:
            planted_failure()
        except RuntimeError as exc:
            telemetry.capture_exception(exc)
            raise

    original = threading.excepthook
    threading.excepthook = lambda args: None
    try:
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    finally:
        telemetry.shutdown(timeout=5)
        threading.excepthook = original
    assert len(sentry.events()) == 1
    assert len(exceptions_in(state_dir)) == 1


def test_uncaught_exception_at_top_level_reaches_both_and_still_prints(
    sentry: SentryServer, state_dir: Path
) -> None:
    result = run_python(
        f"""
        from analytics import Analytics, TelemetryConfig
        config = TelemetryConfig.from_env(state_dir={str(state_dir)!r}, sentry_dsn={sentry.dsn!r})
        telemetry = Analytics(config)
        telemetry.start()
        raise LookupError("no proposal p-7")
        """
    )
    assert result.returncode == 1
    assert "LookupError: no proposal p-7" in result.stderr  # the previous excepthook still printed it
    [event] = sentry.events()
    [posthog] = exceptions_in(state_dir)
    assert posthog["properties"]["$sentry_event_id"] == event["event_id"]
    assert posthog["properties"]["error_type"] == "LookupError"
    # The process ends with it: fatal, unhandled, and which hook caught it.
    assert posthog["properties"]["$exception_level"] == "fatal"
    assert posthog["properties"]["$exception_source"] == "python.sys_excepthook"
    [exception] = posthog["properties"]["$exception_list"]
    assert (exception["mechanism"]["type"], exception["mechanism"]["handled"]) == (
        "onuncaughtexception",
        False,
    )
    assert exception["stacktrace"]["frames"][-1]["module"] == "__main__"


def test_unreachable_sentry_costs_nothing_and_posthog_still_gets_the_error(state_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    telemetry = make(state_dir, f"http://{'a' * 32}@127.0.0.1:{closed_port}/1")
    telemetry.start()
    started = time.monotonic()
    try:
        planted_failure()
    except RuntimeError as exc:
        event_id = telemetry.capture_exception(exc)
    # A hang check, not a benchmark: the call hands the event to sentry-sdk's worker and returns.
    assert time.monotonic() - started < 2.0
    telemetry.shutdown(timeout=2)
    [posthog] = exceptions_in(state_dir)
    assert event_id is not None
    assert posthog["properties"]["$sentry_event_id"] == event_id


def test_without_a_dsn_errors_go_to_posthog_only(state_dir: Path) -> None:
    telemetry = make(state_dir, None)
    with pytest.raises(RuntimeError) as caught:
        planted_failure()
    assert telemetry.capture_exception(caught.value) is None
    telemetry.shutdown(timeout=2)
    [posthog] = exceptions_in(state_dir)
    assert "$sentry_event_id" not in posthog["properties"]
    assert not sentry_sdk.get_client().options.get("dsn")  # no Sentry client was set up


def test_an_apps_own_sentry_client_is_joined_not_replaced(sentry: SentryServer, state_dir: Path) -> None:
    app_saw: list[str] = []

    def apps_before_send(event: Any, hint: Any) -> Any:
        app_saw.append(json.dumps(event))
        return event

    sentry_sdk.init(dsn=sentry.dsn, release="app-own-release", before_send=apps_before_send)
    client = sentry_sdk.get_client()
    telemetry = make(state_dir, None)
    telemetry.start()
    try:
        planted_failure()
    except RuntimeError as exc:
        event_id = telemetry.capture_exception(exc)
    telemetry.shutdown(timeout=2)
    sentry_sdk.flush(timeout=5)
    assert sentry_sdk.get_client() is client
    assert client.options["release"] == "app-own-release"
    assert client.options["before_send"] is apps_before_send
    [event] = sentry.events()
    assert event["event_id"] == event_id
    assert event["tags"]["session_id"] == telemetry.session_id
    assert EMAIL not in app_saw[0]  # our scrubbing ran before the app's own before_send
    assert TOKEN_VALUE not in b"".join(e.raw for e in sentry.envelopes).decode()


def test_host_names_are_scrubbed() -> None:
    scrubber = Scrubber(host_name="build-box-7.corp.example")
    assert (
        scrubber.scrub_text("cannot reach build-box-7 or build-box-7.corp.example")
        == "cannot reach <host> or <host>"
    )
    assert scrubber.scrub_text("build-box-70 is another machine") == "build-box-70 is another machine"


def test_an_exception_naming_an_undecodable_file_still_arrives(state_dir: Path) -> None:
    telemetry = make(state_dir, None)
    try:
        raise FileNotFoundError("cannot open " + os.fsdecode(b"notes-\xff.txt"))
    except FileNotFoundError as exc:
        telemetry.capture_exception(exc)
    telemetry.shutdown(timeout=2)
    [posthog] = exceptions_in(state_dir)
    assert posthog["properties"]["$exception_list"][0]["value"] == "cannot open notes-\ufffd.txt"


def test_a_hostile_exception_still_reaches_posthog(state_dir: Path) -> None:
    class Hostile(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

        @property
        def __traceback__(self) -> Any:  # type: ignore[override]
            raise RuntimeError("no traceback either")

    telemetry = make(state_dir, None)
    telemetry.capture_exception(Hostile())
    telemetry.shutdown(timeout=2)
    [posthog] = exceptions_in(state_dir)
    [exception] = posthog["properties"]["$exception_list"]
    assert exception["type"].endswith("Hostile")
    assert exception["value"] == "<unprintable Hostile>"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is Python 3.11+")
def test_chained_exceptions_and_groups_keep_every_member(state_dir: Path) -> None:
    group_type: Any = getattr(builtins, "ExceptionGroup")  # noqa: B009 - a 3.11 name, for 3.10's linters
    telemetry = make(state_dir, None)
    try:
        try:
            {}["proposal"]
        except KeyError as missing:
            raise group_type("apply failed", [ValueError("bad diff"), missing]) from missing
    except group_type as group:
        telemetry.capture_exception(group)
    telemetry.shutdown(timeout=2)
    [posthog] = exceptions_in(state_dir)
    entries = posthog["properties"]["$exception_list"]
    assert [(e["type"], e["mechanism"].get("source")) for e in entries] == [
        ("ExceptionGroup", None),
        ("KeyError", "cause"),
        ("ValueError", "member"),
    ]  # the KeyError is both the cause and a member: reported once, as posthog-python does
    assert entries[0]["mechanism"]["is_exception_group"] is True
    assert [e["mechanism"].get("parent_id") for e in entries] == [None, 0, 0]
    assert "stacktrace" in entries[0]
    assert "stacktrace" in entries[1]
    assert "stacktrace" not in entries[2]  # never raised on its own


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("https://k@o123.ingest.us.sentry.io/456", "https://sentry.io/issues/?project=456&query=abc"),
        ("https://k@glitchtip.example.com/7", "https://glitchtip.example.com/issues/?project=7&query=abc"),
        ("http://k@127.0.0.1:9000/1", "http://127.0.0.1:9000/issues/?project=1&query=abc"),
        ("https://k@host/not-a-project", None),
        (None, None),
    ],
)
def test_sentry_url_from_the_dsn(dsn: str | None, expected: str | None) -> None:
    assert event_url(dsn, "abc") == expected
