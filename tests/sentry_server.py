"""A Sentry envelope endpoint on loopback: receives what the real sentry-sdk sends and parses it.

DSN: ``http://<key>@127.0.0.1:<port>/<project>``. Envelopes are newline-separated JSON: a header,
then items, each an item header (with an optional ``length``) and its payload.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.loopback import LoopbackServer, send_json

PUBLIC_KEY = "0123456789abcdef0123456789abcdef"


@dataclass
class Envelope:
    header: dict[str, Any]
    items: list[tuple[dict[str, Any], bytes]]
    raw: bytes
    auth: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(payload) for head, payload in self.items if head.get("type") == "event"]


def parse_envelope(body: bytes, auth: str = "") -> Envelope:
    lines = body.split(b"\n", 1)
    header = json.loads(lines[0])
    rest = lines[1] if len(lines) > 1 else b""
    items: list[tuple[dict[str, Any], bytes]] = []
    while rest.strip():
        head_line, _, rest = rest.partition(b"\n")
        if not head_line.strip():
            continue
        item_header = json.loads(head_line)
        length = item_header.get("length")
        if length is not None:
            payload, rest = rest[:length], rest[length:]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((item_header, payload))
    return Envelope(header, items, body, auth)


@dataclass
class _Store:
    envelopes: list[Envelope] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


class SentryServer(LoopbackServer):
    def __init__(self, project: int = 1) -> None:
        self.project = project
        self._store = _Store()
        store = self._store

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                auth = self.headers.get("X-Sentry-Auth", "")
                ok = self.path.startswith(f"/api/{project}/envelope") and f"sentry_key={PUBLIC_KEY}" in auth
                if ok:
                    with store.changed:
                        store.envelopes.append(parse_envelope(body, auth))
                        store.changed.notify_all()
                send_json(self, 200 if ok else 403, {} if ok else {"detail": "bad project or key"})

        super().__init__(Handler)

    @property
    def dsn(self) -> str:
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self.port}/{self.project}"

    @property
    def envelopes(self) -> list[Envelope]:
        with self._store.changed:
            return list(self._store.envelopes)

    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes for event in envelope.events()]
