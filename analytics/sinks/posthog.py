"""PostHogSink: batches to PostHog's ``/batch/`` endpoint.

The queue already holds each message exactly as PostHog wants it, so the request body is spliced
from those bytes (``{"api_key":…,"batch":[…],"sent_at":…}``) and gzipped at level 1. Routing the
batch through ``posthog.request.post`` instead decodes and re-encodes every message, walks every
float, and gzips at level 9: about 28 µs an event, which alone would cap a drain near 35k events/s
(SPEC 10 asks for 40k). The posthog package still decides where to send (``determine_server_host``
maps an app URL such as https://eu.posthog.com to its ingestion host).

The requests session has urllib3's retries off: the uploader's policy is the only one deciding when
to try again, so a retry never happens behind its back.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from analytics._version import __version__
from analytics.delivery.retry import parse_retry_after
from analytics.sinks.base import ExportResult, Outcome

if TYPE_CHECKING:
    import requests

BATCH_PATH = "/batch/"
USER_AGENT = f"analytics-telemetry/{__version__}"


class PostHogSink:
    name = "posthog"

    def __init__(
        self, host: str, token: str, *, gzip: bool = True, now: Callable[[], float] = time.time
    ) -> None:
        self.host = host
        self._token = json.dumps(token).encode()
        self._gzip = gzip
        self._now = now
        self._url: str | None = None
        self._session: requests.Session | None = None

    def export(self, batch: Sequence[bytes], timeout: float) -> ExportResult:
        # Imported here, not at module load: `import analytics` must stay cheap for the host app.
        import requests

        if self._session is None:
            from posthog.request import determine_server_host

            self._url = determine_server_host(self.host).rstrip("/") + BATCH_PATH
            self._session = _session_without_retries()
        body, headers = self._body(batch)
        try:
            response = self._session.post(self._url, data=body, headers=headers, timeout=max(0.5, timeout))  # type: ignore[arg-type]
        except requests.RequestException as exc:
            return ExportResult(Outcome.RETRY, detail=f"network: {type(exc).__name__}")
        return classify(
            response.status_code, response.headers.get("Retry-After"), response.content, self._now()
        )

    def _body(self, batch: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
        # sent_at is the real send time: PostHog corrects the events' clock skew with it.
        sent_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").encode()
        body = b'{"api_key":%s,"batch":[%s],"sent_at":"%s"}' % (self._token, b",".join(batch), sent_at)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self._gzip:
            compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip member
            body = compressor.compress(body) + compressor.flush()
            headers["Content-Encoding"] = "gzip"
        return body, headers

    def shutdown(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def classify(status: int, retry_after: str | None, body: bytes, now: float) -> ExportResult:
    """What PostHog's answer means for the batch (SPEC 5). Pure: no I/O, ``now`` injected."""
    delay = parse_retry_after(retry_after, now)
    if 200 <= status < 300:
        # A captive portal answers 200 with a web page: only PostHog's JSON answer is an ack.
        if _is_json(body):
            return ExportResult(Outcome.SUCCESS, status)
        return ExportResult(Outcome.RETRY, status, delay, "2xx answer that is not PostHog's JSON")
    if status == 413:
        return ExportResult(Outcome.SPLIT, status, detail="payload too large")
    if status == 400:
        return ExportResult(Outcome.REJECTED, status, detail=_short(body))
    if status in (401, 403):
        return ExportResult(Outcome.UNAUTHORIZED, status, detail="the project API key was refused")
    return ExportResult(Outcome.RETRY, status, delay, f"HTTP {status}")


def _is_json(body: bytes) -> bool:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict | list)


def _short(body: bytes) -> str:
    return body[:300].decode("utf-8", "replace")


def _session_without_retries() -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
