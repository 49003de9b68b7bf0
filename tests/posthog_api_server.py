"""PostHog's dashboards and insights REST endpoints on loopback, as strict as the real ones where
our client touches them: bearer auth, the project in the path, the payload's shape, and paginated
lists (``limit``/``offset`` with a ``next`` URL)."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DASHBOARD_FIELDS = {"name", "description", "pinned", "tags"}
INSIGHT_FIELDS = {"name", "description", "query", "saved", "dashboards", "tags"}


@dataclass
class _State:
    key: str
    project_id: int
    page_size: int
    dashboards: dict[int, dict[str, Any]] = field(default_factory=dict)
    insights: dict[int, dict[str, Any]] = field(default_factory=dict)
    mutations: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)


class PostHogApiServer:
    def __init__(self, *, key: str, project_id: int, page_size: int = 4) -> None:
        self.state = _State(key, project_id, page_size)
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PATCH(self) -> None:
                self._route("PATCH")

            def _route(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.headers.get("Authorization") != f"Bearer {state.key}":
                    return self._send(
                        401, {"type": "authentication_error", "detail": "Invalid personal API key."}
                    )
                parts = urlsplit(self.path)
                match = re.fullmatch(r"/api/projects/(\d+)/(dashboards|insights)/(?:(\d+)/)?", parts.path)
                if match is None:
                    return self._send(404, {"detail": "Not found."})
                if int(match[1]) != state.project_id:
                    return self._send(404, {"detail": "Project not found."})
                kind, object_id = match[2], match[3]
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._send(400, {"detail": "JSON parse error"})
                with state.lock:
                    status, answer = self._handle(method, kind, object_id, body, parse_qs(parts.query))
                self._send(status, answer)

            def _handle(
                self, method: str, kind: str, object_id: str | None, body: Any, query: dict[str, list[str]]
            ) -> tuple[int, Any]:
                table = state.dashboards if kind == "dashboards" else state.insights
                if method == "GET" and object_id is None:
                    limit = int(query.get("limit", ["100"])[0])
                    offset = int(query.get("offset", ["0"])[0])
                    page_size = min(limit, state.page_size)
                    rows = [table[k] for k in sorted(table)]
                    page = rows[offset : offset + page_size]
                    more = offset + page_size < len(rows)
                    base = f"http://{self.headers['Host']}/api/projects/{state.project_id}/{kind}/"
                    following = f"{base}?limit={limit}&offset={offset + page_size}" if more else None
                    return 200, {"count": len(rows), "next": following, "previous": None, "results": page}
                problem = _invalid(kind, body, state, creating=method == "POST")
                if problem:
                    return 400, {"type": "validation_error", "detail": problem}
                if method == "POST" and object_id is None:
                    state.next_id += 1
                    created = {"id": state.next_id, "description": "", **body}
                    if kind == "insights":
                        created["dashboards"] = list(body.get("dashboards", []))
                    table[state.next_id] = created
                    state.mutations.append((method, kind))
                    return 201, created
                if method == "PATCH" and object_id is not None and int(object_id) in table:
                    table[int(object_id)].update(body)
                    state.mutations.append((method, kind))
                    return 200, table[int(object_id)]
                return 404, {"detail": "Not found."}

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> PostHogApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _invalid(kind: str, body: Any, state: _State, *, creating: bool) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    allowed = DASHBOARD_FIELDS if kind == "dashboards" else INSIGHT_FIELDS
    unknown = set(body) - allowed
    if unknown:
        return f"unknown fields: {sorted(unknown)}"
    if creating and not isinstance(body.get("name"), str):
        return "name is required"
    if "name" in body and (not isinstance(body["name"], str) or not body["name"].strip()):
        return "name must be a non-empty string"
    if kind == "insights":
        query = body.get("query")
        if creating or query is not None:
            if not isinstance(query, dict) or query.get("kind") != "DataVisualizationNode":
                return "query must be a DataVisualizationNode"
            source = query.get("source")
            if (
                not isinstance(source, dict)
                or source.get("kind") != "HogQLQuery"
                or not isinstance(source.get("query"), str)
            ):
                return "query.source must be a HogQLQuery with a query string"
        for dashboard in body.get("dashboards", []):
            if dashboard not in state.dashboards:
                return f"dashboard {dashboard} does not exist"
    return None
