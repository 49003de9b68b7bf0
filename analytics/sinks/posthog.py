"""PostHogSink: batches to PostHog's ``/batch/`` endpoint through the posthog package's own
request layer (gzip, user agent, ``sent_at`` stamped at send time).

The session we hand it has urllib3's retries off: the uploader's policy is the only one deciding
when to try again, so a retry can never happen behind its back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from analytics.delivery.retry import parse_retry_after
from analytics.sinks.base import ExportResult, Outcome

if TYPE_CHECKING:
    import requests

BATCH_PATH = "/batch/"


class PostHogSink:
    name = "posthog"

    def __init__(
        self, host: str, token: str, *, gzip: bool = True, now: Callable[[], float] = time.time
    ) -> None:
        self.host = host
        self._token = token
        self._gzip = gzip
        self._now = now
        self._session: requests.Session | None = None

    def export(self, batch: Sequence[bytes], timeout: float) -> ExportResult:
        # Imported here, not at module load: `import analytics` must stay cheap for the host app.
        import requests
        from posthog import request as posthog_request

        if self._session is None:
            self._session = _session_without_retries()
        messages = [json.loads(record) for record in batch]
        try:
            response = posthog_request.post(
                self._token,
                self.host,
                BATCH_PATH,
                self._gzip,
                max(0.5, timeout),
                session=self._session,
                batch=messages,
            )
        except requests.RequestException as exc:
            return ExportResult(Outcome.RETRY, detail=f"network: {type(exc).__name__}")
        return classify(
            response.status_code, response.headers.get("Retry-After"), response.content, self._now()
        )

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
