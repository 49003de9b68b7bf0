"""CaptureServer: a PostHog-compatible ``/batch/`` endpoint on loopback, as strict as the real one.

It checks what PostHog's capture service checks: a 20 MB request limit, gzip bodies, an
``api_key``, a ``sent_at``, and for every event a non-empty name of at most 200 characters, a
non-empty ``distinct_id`` of at most 200 characters that is not one of PostHog's reserved ids, a
valid uuid unique within the batch and an RFC 3339 ``timestamp``. A bad event fails the whole batch
with 400, as PostHog does. Scripted faults (status codes, ``Retry-After``, redirects, delays,
dropped connections, answers that are not PostHog's) are served first, in order.

It answers as the capture service (``rust/capture``) does: an accepted batch is 200 with
``{"status":"Ok"}`` (its ``CaptureResponse``), a refusal is the status code with the error's text
as a plain-text body (``CaptureError``'s ``IntoResponse``).

>>> with CaptureServer() as server:            # doctest: +SKIP
...     telemetry = Analytics(TelemetryConfig(endpoint=server.url, token="phc_test"))
"""

from __future__ import annotations

import gzip
import http
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from analytics.privacy.identity import illegal_distinct_id_reason

MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_NAME_LENGTH = 200
# serde_json's rendering of CaptureResponse { status: CaptureResponseCode::Ok, quota_limited: None }.
ACCEPTED = b'{"status":"Ok"}'


@dataclass(frozen=True)
class Fault:
    """One scripted answer. ``drop_connection`` closes the socket without a word; ``location``
    makes it a redirect (with ``status`` 301, 302, 307 or 308); ``body`` defaults to the status's
    reason phrase."""

    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    drop_connection: bool = False
    body: bytes | None = None
    location: str | None = None


@dataclass(frozen=True)
class RequestRecord:
    status: int
    uuids: list[str]
    sent_at: str | None
    gzipped: bool
    size: int
    detail: str = ""


@dataclass
class _State:
    api_key: str | None
    faults: deque[Fault] = field(default_factory=deque)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


class CaptureServer:
    """Start with ``with CaptureServer() as server:`` or ``start()``/``stop()``; ``url`` is the host."""

    def __init__(self, *, api_key: str | None = None, port: int = 0) -> None:
        self._state = _State(api_key=api_key)
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> CaptureServer:
        state = self._state

        class Handler(_CaptureHandler):
            server_state = state

        self._httpd = _QuietServer(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="capture-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; ``start()`` again listens on the same port (a server that was down)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests read and script ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._state.changed:
            return list(self._state.events)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._state.changed:
            return list(self._state.requests)

    def add_faults(self, *faults: Fault) -> None:
        with self._state.changed:
            self._state.faults.extend(faults)

    def wait_for_events(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` events were accepted, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._state.changed:
            while len(self._state.events) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._state.changed.wait(remaining)
            return True


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished mid-request (killed, timed out) is part of what we test: not news.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _CaptureHandler(BaseHTTPRequestHandler):
    server_state: _State
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep test output clean

    def do_GET(self) -> None:
        self._refuse(405, "")

    def do_POST(self) -> None:
        state = self.server_state
        with state.changed:
            fault = state.faults.popleft() if state.faults else None
        length = int(self.headers.get("Content-Length") or 0)
        if fault is not None:
            self._serve_fault(fault, length)
            return
        if self.path.split("?")[0].rstrip("/") != "/batch":
            self._skip(length)
            self._record(404, [], None, False, length, "unknown path")
            self._refuse(404, "")
            return
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._record(413, [], None, False, length, "too large")
            self._refuse(413, "failed to decode request: payload too large")
            return
        raw = self.rfile.read(length)
        gzipped = self.headers.get("Content-Encoding", "").lower() == "gzip"
        status, detail, body = self._validate(raw, gzipped)
        uuids = [str(e.get("uuid")) for e in body.get("batch", []) if isinstance(e, dict)] if body else []
        with state.changed:
            if status == 200:
                state.events.extend(body["batch"])
            state.requests.append(
                RequestRecord(status, uuids, body.get("sent_at") if body else None, gzipped, length, detail)
            )
            state.changed.notify_all()
        if status == 200:
            self._send(200, ACCEPTED, {"Content-Type": "application/json"})
        else:
            self._refuse(status, detail)

    def _validate(self, raw: bytes, gzipped: bool) -> tuple[int, str, dict[str, Any]]:
        try:
            text = gzip.decompress(raw) if gzipped else raw
            body = json.loads(text)
        except (OSError, EOFError, ValueError):
            return 400, "failed to decode request: body is not valid (gzipped) JSON", {}
        if not isinstance(body, dict):
            return 400, "failed to parse request: body must be a JSON object", {}
        api_key = body.get("api_key")
        expected = self.server_state.api_key
        if not isinstance(api_key, str) or not api_key:
            return 401, "event submitted without an api_key", body
        if expected is not None and api_key != expected:
            return 401, "API key is not valid: not this project's key", body
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            return 400, "request holds no event", body
        if not _is_rfc3339(body.get("sent_at")):
            return 400, "failed to parse request: sent_at missing or not RFC 3339", body
        seen: set[str] = set()
        for index, event in enumerate(batch):
            problem = _event_problem(event, seen)
            if problem:
                return 400, f"invalid event could not be processed: event {index}: {problem}", body
        return 200, "", body

    def _serve_fault(self, fault: Fault, length: int) -> None:
        raw = self.rfile.read(length) if length else b""
        gzipped = self.headers.get("Content-Encoding", "").lower() == "gzip"
        _status, _detail, body = self._validate(raw, gzipped)
        uuids = [str(e.get("uuid")) for e in body.get("batch", []) if isinstance(e, dict)] if body else []
        if fault.delay:
            time.sleep(fault.delay)
        self._record(
            fault.status, uuids, body.get("sent_at") if body else None, gzipped, length, "scripted fault"
        )
        if fault.drop_connection:
            self.close_connection = True
            self.connection.close()
            return
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        if fault.location is not None:
            headers["Location"] = fault.location
        answer = fault.body if fault.body is not None else _phrase(fault.status).encode()
        self._send(fault.status, answer, headers)

    def _skip(self, length: int) -> None:
        if length:
            self.rfile.read(length)

    def _record(
        self, status: int, uuids: list[str], sent_at: str | None, gz: bool, size: int, detail: str
    ) -> None:
        with self.server_state.changed:
            self.server_state.requests.append(RequestRecord(status, uuids, sent_at, gz, size, detail))
            self.server_state.changed.notify_all()

    def _refuse(self, status: int, text: str) -> None:
        # Capture's errors are (StatusCode, String) responses: the error's text, as text/plain.
        self._send(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _event_problem(event: Any, seen: set[str]) -> str | None:
    if not isinstance(event, dict):
        return "not an object"
    name = event.get("event")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        return "event name must be 1 to 200 characters"
    distinct_id = event.get("distinct_id")
    if isinstance(distinct_id, int | float) and not isinstance(distinct_id, bool):
        distinct_id = str(distinct_id)
    if not isinstance(distinct_id, str):
        return "distinct_id missing"
    reason = illegal_distinct_id_reason(distinct_id)
    if reason:
        return f"distinct_id refused: {reason}"
    raw_uuid = event.get("uuid")
    try:
        parsed = str(uuid.UUID(str(raw_uuid)))
    except ValueError:
        return "uuid missing or not valid"
    if parsed in seen:
        return "uuid repeated within the batch"
    seen.add(parsed)
    if not _is_rfc3339(event.get("timestamp")):
        return "timestamp missing or not RFC 3339"
    if "properties" in event and not isinstance(event["properties"], dict):
        return "properties must be an object"
    return None


def _is_rfc3339(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None
