"""PostHogSink: batches to PostHog's ``/batch/`` endpoint.

The queue already holds each message exactly as PostHog wants it, so the request body is spliced
from those bytes (``{"api_key":…,"batch":[…],"sent_at":…}``) and gzipped at level 1. Routing the
batch through ``posthog.request.post`` instead decodes and re-encodes every message, walks every
float, and gzips at level 9: about 28 µs an event, which alone would cap a drain near 35k events/s
(SPEC 10 asks for 40k). An app host such as https://eu.posthog.com is sent to its ingestion host,
as posthog-python's ``determine_server_host`` does (``analytics.endpoint.ingestion_endpoint``).

The request goes through our own :class:`~analytics.sinks.http.HttpClient`: the whole exchange
ends by the caller's deadline, the answer's body is capped, redirects are never followed, and it
never retries behind the uploader's back (the uploader's policy alone decides when to try again).
Only PostHog's acceptance answer is an ack (:func:`classify`).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Final

from analytics._version import __version__
from analytics.endpoint import describe_location, ingestion_endpoint, parse_endpoint
from analytics.sinks.base import ExportResult, Outcome
from analytics.sinks.http import HttpClient, TransportError
from analytics.sinks.retry_after import parse_retry_after

BATCH_PATH: Final = "/batch/"
USER_AGENT: Final = f"analytics-telemetry/{__version__}"
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class PostHogSink:
    """Sends batches to PostHog. Built in the caller's thread: everything the uploader thread will
    need is imported and parsed here (``host`` was validated by the config, with the same parser)."""

    name = "posthog"

    def __init__(
        self, host: str, token: str, *, gzip: bool = True, now: Callable[[], float] = time.time
    ) -> None:
        self.host = host
        self.endpoint = ingestion_endpoint(parse_endpoint(host))
        self._token = json.dumps(token).encode()
        self._gzip = gzip
        self._now = now
        self._client = HttpClient(self.endpoint, user_agent=USER_AGENT)

    def export(self, batch: Sequence[bytes], timeout: float) -> ExportResult:
        deadline = time.monotonic() + max(0.0, timeout)
        body, headers = self._body(batch)
        try:
            response = self._client.request("POST", BATCH_PATH, body, headers, deadline=deadline)
        except TransportError as exc:
            return ExportResult(Outcome.RETRY, detail=f"network: {exc.reason}")
        return classify(
            response.status,
            response.header("Retry-After"),
            response.body,
            self._now(),
            location=response.header("Location"),
        )

    def _body(self, batch: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
        # sent_at is the real send time: PostHog corrects the events' clock skew with it.
        sent_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").encode()
        body = b'{"api_key":%s,"batch":[%s],"sent_at":"%s"}' % (self._token, b",".join(batch), sent_at)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._gzip:
            compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip member
            body = compressor.compress(body) + compressor.flush()
            headers["Content-Encoding"] = "gzip"
        return body, headers

    def shutdown(self) -> None:
        self._client.close()


def classify(
    status: int, retry_after: str | None, body: bytes, now: float, *, location: str | None = None
) -> ExportResult:
    """What PostHog's answer means for the batch (SPEC 5). Pure: no I/O, ``now`` injected."""
    delay = parse_retry_after(retry_after, now)
    if 200 <= status < 300:
        if is_acceptance(status, body):
            return ExportResult(Outcome.SUCCESS, status)
        # A captive portal's web page, a proxy's empty 204, a JSON error dressed as a 200: the
        # events were not taken. Keep them and say what came back.
        return ExportResult(
            Outcome.RETRY, status, delay, f"HTTP {status} that is not PostHog's acceptance: {_short(body)}"
        )
    if status in REDIRECTS:
        # Never followed: a 301/302 would turn the POST into a GET (and "succeed"), a 307/308 would
        # carry the key and the events to wherever it points. A misconfigured host: keep, retry, say so.
        target = f" to {describe_location(location)}" if location else ""
        return ExportResult(
            Outcome.RETRY,
            status,
            delay,
            f"the host redirects (HTTP {status}){target}; redirects are not followed: "
            "set TELEMETRY_ENDPOINT to the address that answers",
        )
    if status == 413:
        return ExportResult(Outcome.SPLIT, status, detail="payload too large")
    if status == 400:
        return ExportResult(Outcome.REJECTED, status, detail=_short(body))
    if status in (401, 403):
        return ExportResult(Outcome.UNAUTHORIZED, status, detail="the project API key was refused")
    return ExportResult(Outcome.RETRY, status, delay, f"HTTP {status}")


def is_acceptance(status: int, body: bytes) -> bool:
    """PostHog's "accepted": 200 with ``{"status": "Ok"}`` (the Rust capture service, its
    ``CaptureResponse`` with ``CaptureResponseCode::Ok``) or ``{"status": 1}`` (the older Django
    capture endpoint). ``quota_limited`` may ride along. Nothing else is an ack: not ``[]``, not
    ``{}``, not ``{"status": 0, "error": "quota exceeded"}``, not an empty 204."""
    if status != 200:
        return False
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):  # "[[[[…" nested past the parser's depth is not an ack either
        return False
    if not isinstance(parsed, dict):
        return False
    code = parsed.get("status")
    return code == "Ok" or (type(code) is int and code == 1)


def _short(body: bytes, limit: int = 200) -> str:
    """A server's words, safe to show in ``analytics status``: no control characters, capped."""
    text = body[: limit * 4].decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    if not text:
        return "(empty body)"
    return text if len(text) <= limit else text[: limit - 1] + "…"
